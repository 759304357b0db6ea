//! Test fixtures shared by the manager's unit tests.

use shoal_raft_store::{InProcessRouter, Store, StoreConfig};

use crate::objects::ObjectStore;

/// A directory removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An object store on a fresh one-member in-process raft-store that is leader.
pub(crate) async fn store(tag: &str) -> (ObjectStore, TempDir) {
    let dir = std::env::temp_dir().join(format!("shoal-manager-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let router = InProcessRouter::new(1);
    // Durability is raft-store's to test; here an fsync stalled by a loaded CI disk would only
    // turn into spurious "not committed" timeouts.
    let mut config = StoreConfig::new(1, "mem://m1", &dir);
    config.fsync = false;
    let store = Store::open(config, router.transport()).await.expect("open store");
    router.register(&store);
    store.bootstrap().await.expect("bootstrap");
    store.wait_for_leader(std::time::Duration::from_secs(5)).await.expect("leader");
    (ObjectStore::new(store), TempDir(dir))
}

/// A leader and a learner that follows it, on one in-process router: (leader, follower, their
/// directories). Both stores are stopped when the last handle drops.
pub(crate) async fn leader_and_follower(tag: &str) -> (ObjectStore, ObjectStore, [TempDir; 2]) {
    let router = InProcessRouter::new(1);
    let dirs = [1, 2]
        .map(|id| TempDir(std::env::temp_dir().join(format!("shoal-manager-{tag}-m{id}-{}", std::process::id()))));
    let mut stores = Vec::new();
    for (id, dir) in [1u64, 2].into_iter().zip(&dirs) {
        let _ = std::fs::remove_dir_all(&dir.0);
        let mut config = StoreConfig::new(id, format!("mem://m{id}"), &dir.0);
        config.fsync = false;
        let store = Store::open(config, router.transport()).await.expect("open store");
        router.register(&store);
        stores.push(store);
    }
    let (leader, follower) = (stores[0].clone(), stores[1].clone());
    leader.bootstrap().await.expect("bootstrap");
    leader.wait_for_leader(std::time::Duration::from_secs(5)).await.expect("leader");
    leader.add_learner(2, "mem://m2").await.expect("add learner");
    follower.wait_for_leader(std::time::Duration::from_secs(5)).await.expect("the follower hears the leader");
    (ObjectStore::new(leader), ObjectStore::new(follower), dirs)
}

/// The fixed "now" of the orchestrators' table tests.
pub(crate) fn now() -> std::time::SystemTime {
    std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000)
}

/// [`now`] moved by `secs` (negative: earlier).
pub(crate) fn at(secs: i64) -> std::time::SystemTime {
    let by = std::time::Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 { now() + by } else { now() - by }
}

/// A restart policy of `condition`, delay, max attempts and window (seconds).
pub(crate) fn policy(
    condition: shoal_api::v1::restart_policy::Condition,
    delay_s: u64,
    max_attempts: u64,
    window_s: u64,
) -> Option<shoal_api::v1::RestartPolicy> {
    Some(shoal_api::v1::RestartPolicy {
        condition: condition as i32,
        delay: Some(shoal_api::to_duration(std::time::Duration::from_secs(delay_s))),
        max_attempts,
        window: Some(shoal_api::to_duration(std::time::Duration::from_secs(window_s))),
    })
}

/// A node: `spec` is "ID [down] [drain] [pause] [zone=VALUE]"; Ready and Active unless told.
pub(crate) fn node_line(spec: &str) -> shoal_api::v1::Node {
    use shoal_api::v1;
    let words: Vec<&str> = spec.split_whitespace().collect();
    let has = |w: &str| words[1..].contains(&w);
    let availability = if has("drain") {
        v1::NodeAvailability::Drain
    } else if has("pause") {
        v1::NodeAvailability::Pause
    } else {
        v1::NodeAvailability::Active
    };
    let labels = words[1..]
        .iter()
        .filter_map(|w| w.strip_prefix("zone="))
        .map(|zone| ("zone".to_owned(), zone.to_owned()))
        .collect();
    v1::Node {
        id: words[0].into(),
        spec: Some(v1::NodeSpec {
            availability: availability as i32,
            annotations: Some(v1::Annotations { name: String::new(), labels }),
            ..Default::default()
        }),
        status: Some(v1::NodeStatus {
            state: if has("down") { v1::node_status::State::Down } else { v1::node_status::State::Ready } as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A task of service `svc`: `spec` is "ID SLOT NODE STATE [DESIRED] [exit=N] [age=SECONDS]
/// [iter=N]"; NODE `-` is none, DESIRED defaults to running, the job iteration to 0.
pub(crate) fn task_line(spec: &str) -> shoal_api::v1::Task {
    use shoal_api::v1::{self, TaskState};
    let words: Vec<&str> = spec.split_whitespace().collect();
    let parse_state = |w: &str| TaskState::from_str_name(&format!("TASK_STATE_{}", w.to_ascii_uppercase())).expect(w);
    let mut desired = TaskState::Running;
    let (mut exit, mut age, mut job_iteration) = (0, 0, 0);
    for w in &words[4..] {
        if let Some(code) = w.strip_prefix("exit=") {
            exit = code.parse().expect("exit");
        } else if let Some(secs) = w.strip_prefix("age=") {
            age = secs.parse().expect("age");
        } else if let Some(n) = w.strip_prefix("iter=") {
            job_iteration = n.parse().expect("iter");
        } else {
            desired = parse_state(w);
        }
    }
    v1::Task {
        id: words[0].into(),
        service_id: "svc".into(),
        slot: words[1].parse().expect("slot"),
        node_id: if words[2] == "-" { String::new() } else { words[2].into() },
        desired_state: desired as i32,
        job_iteration,
        status: Some(v1::TaskStatus {
            state: parse_state(words[3]) as i32,
            timestamp: Some(shoal_api::to_timestamp(now() - std::time::Duration::from_secs(age))),
            container: Some(v1::ContainerStatus { exit_code: exit, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

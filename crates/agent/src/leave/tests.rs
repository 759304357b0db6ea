//! The data-directory lock, and leaving on a directory made by hand with the simulated runtime.

use std::collections::BTreeMap;

use shoal_runtime::{ContainerSpec, ContainerState, ImageSource, SimBehavior, Simulated};

use super::*;

/// A fresh directory for one test, removed when dropped (even when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("shoal-agent-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_second_lock_on_a_data_dir_fails_until_the_first_is_dropped() {
    let dir = TempDir::new("lock");
    let data = dir.0.join("data");
    let first = DataDirLock::acquire(&data).expect("the first lock (the directory is made)");
    let err = DataDirLock::acquire(&data).expect_err("a second lock");
    let pid = std::process::id();
    assert!(matches!(err, LockError::InUse { pid: Some(p), .. } if p == pid), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("{} is in use by another shoal process (pid {pid}); stop it first", data.display())
    );
    drop(first);
    let again = DataDirLock::acquire(&data).expect("released when dropped");
    assert_eq!(again.data_dir(), data);
}

/// A worker's data directory as `join` and a run leave it: record, certificates, a task's files,
/// runtime files and a volume.
fn worker_dir(data: &Path) {
    std::fs::create_dir_all(data.join("certs")).expect("certs");
    std::fs::write(data.join("certs/node.key"), b"key").expect("key");
    std::fs::write(data.join("agent.json"), br#"{"node_id":"n1","managers":["192.0.2.11:2377"]}"#).expect("record");
    std::fs::create_dir_all(data.join("tasks/t1/files")).expect("task files");
    std::fs::write(data.join("tasks/t1/files/secret-0"), b"s").expect("secret");
    std::fs::create_dir_all(data.join("runtime/t1")).expect("runtime");
    std::fs::create_dir_all(data.join("volumes/v1")).expect("volume");
    std::fs::write(data.join("volumes/v1/data"), b"kept").expect("volume data");
}

async fn container(sim: &Simulated, id: &str, node: Option<&str>) {
    let source = ImageSource::Registry { reference: "shoal-test/sleeper".into(), credentials: None };
    let image = sim.ensure_image(&source).await.expect("image");
    let labels: BTreeMap<String, String> =
        node.map(|n| (crate::labels::NODE.to_owned(), n.to_owned())).into_iter().collect();
    let spec = ContainerSpec { id: id.into(), image, labels, ..ContainerSpec::default() };
    sim.create(&spec).await.expect("create");
    sim.start(id).await.expect("start");
}

#[tokio::test]
async fn leaving_removes_the_nodes_containers_and_state_and_keeps_its_volumes() {
    let dir = TempDir::new("leave");
    let data = dir.0.join("data");
    worker_dir(&data);
    let sim = Simulated::new();
    sim.add_image("shoal-test/sleeper", SimBehavior::RunUntilStopped);
    tracing::info!("--- two tasks of n1, one of another node sharing the namespace, one not Shoal's");
    container(&sim, "t1", Some("n1")).await;
    container(&sim, "t2", Some("n1")).await;
    container(&sim, "t9", Some("n2")).await;
    container(&sim, "other", None).await;
    let netns = dir.0.join("netns");
    std::fs::create_dir_all(&netns).expect("netns dir");
    std::fs::write(netns.join("someone-else-t1"), b"").expect("another prefix's namespace");

    let lock = lock_for_leave(&data, "shoal-agent").expect("not running");
    let namespaces = Namespaces { dir: &netns, prefix: "shoaltest-" };
    let left = leave(&lock, Some(&sim), Some(namespaces)).await.expect("leave");

    assert_eq!(
        left,
        Left { node_id: Some("n1".into()), containers: vec!["t1".into(), "t2".into()], namespaces: vec![] }
    );
    let remaining: Vec<String> = sim.list(&[]).await.expect("list").into_iter().map(|c| c.id).collect();
    assert_eq!(remaining, ["other", "t9"]);
    assert!(sim.list(&[]).await.expect("list").iter().all(|c| c.state == ContainerState::Running));
    for gone in ["agent.json", "certs", "tasks", "runtime"] {
        assert!(!data.join(gone).exists(), "{gone} is removed");
    }
    assert_eq!(std::fs::read(data.join("volumes/v1/data")).expect("the volume is kept"), b"kept");
    assert!(netns.join("someone-else-t1").exists(), "another prefix's namespace is kept");

    tracing::info!("--- leaving again: nothing to leave");
    drop(lock);
    let err = lock_for_leave(&data, "shoal-agent").expect_err("no node");
    assert_eq!(err.to_string(), format!("{} holds no joined node; nothing to leave", data.display()));
}

#[tokio::test]
async fn a_running_node_or_an_empty_directory_is_refused() {
    let dir = TempDir::new("leave-running");
    let data = dir.0.join("data");
    worker_dir(&data);
    tracing::info!("--- the agent runs: it holds the lock");
    let running = DataDirLock::acquire(&data).expect("the agent's lock");
    let err = lock_for_leave(&data, "shoal-agent").expect_err("running");
    assert_eq!(
        err.to_string(),
        format!(
            "the shoal-agent using {} is running: stop it first (systemctl stop shoal-agent, or its process)",
            data.display()
        )
    );
    drop(running);
    assert!(data.join("agent.json").exists(), "nothing was removed");

    tracing::info!("--- a directory that never held a node, and one that does not exist");
    let empty = dir.0.join("empty");
    std::fs::create_dir_all(&empty).expect("empty dir");
    let err = lock_for_leave(&empty, "shoal-agent").expect_err("no node");
    assert!(matches!(err, LeaveError::NoNode { .. }), "{err:?}");
    let missing = dir.0.join("missing");
    let err = lock_for_leave(&missing, "shoal-agent").expect_err("no node");
    assert!(matches!(err, LeaveError::NoNode { .. }), "{err:?}");
    assert!(!missing.exists(), "a missing directory is not made");
}

//! Output tables, checked cell for cell.

use std::time::Duration;

use super::*;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

#[test]
fn ago_reads_like_docker() {
    let cases = [
        (0, "Less than a second ago"),
        (5, "5 seconds ago"),
        (90, "About a minute ago"),
        (600, "10 minutes ago"),
        (4000, "About an hour ago"),
        (36_000, "10 hours ago"),
        (400_000, "4 days ago"),
    ];
    for (secs, expected) in cases {
        assert_eq!(ago(Some(now() - Duration::from_secs(secs)), now()), expected);
    }
    assert_eq!(ago(None, now()), "");
}

#[test]
fn node_ls() {
    let node = |id: &str, host: &str, state: v1::node_status::State, manager: Option<(bool, &str)>| v1::Node {
        id: id.into(),
        description: Some(v1::NodeDescription {
            hostname: host.into(),
            engine: Some(v1::EngineDescription { engine_version: "0.1.0".into(), ..Default::default() }),
            ..Default::default()
        }),
        status: Some(v1::NodeStatus { state: state as i32, ..Default::default() }),
        manager_status: manager.map(|(leader, addr)| v1::ManagerStatus {
            leader,
            addr: addr.into(),
            reachability: v1::manager_status::Reachability::Reachable as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let out = nodes(
        &[
            node("w1id", "w1", v1::node_status::State::Down, None),
            node("m1id", "m1", v1::node_status::State::Ready, Some((true, "192.0.2.11:2377"))),
            node("m2id", "m2", v1::node_status::State::Ready, Some((false, "192.0.2.12:2377"))),
        ],
        "192.0.2.11:2377",
    );
    assert_eq!(
        out,
        "ID       HOSTNAME   STATUS   AVAILABILITY   MANAGER STATUS   ENGINE VERSION\n\
         m1id *   m1         Ready    Active         Leader           0.1.0\n\
         m2id     m2         Ready    Active         Reachable        0.1.0\n\
         w1id     w1         Down     Active                          0.1.0\n"
    );
}

fn task(id: &str, slot: u64, node: &str, state: TaskState, desired: TaskState, secs_ago: u64, err: &str) -> v1::Task {
    v1::Task {
        id: id.into(),
        service_id: "svc".into(),
        service_name: "web".into(),
        slot,
        node_id: node.into(),
        annotations: Some(v1::Annotations { name: format!("web.{slot}"), ..Default::default() }),
        spec: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec { image: "web:v1".into(), ..Default::default() }),
            ..Default::default()
        }),
        desired_state: desired as i32,
        status: Some(v1::TaskStatus {
            state: state as i32,
            timestamp: Some(shoal_api::to_timestamp(now() - Duration::from_secs(secs_ago))),
            err: err.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn service_ps_shows_history_under_the_current_task() {
    let nodes = [v1::Node {
        id: "n1".into(),
        description: Some(v1::NodeDescription { hostname: "w1".into(), ..Default::default() }),
        ..Default::default()
    }];
    let tasks = [
        task("old-task-id-xyz", 1, "n1", TaskState::Failed, TaskState::Shutdown, 60, "task: non-zero exit (137)"),
        task("new-task-id-abc", 1, "n1", TaskState::Running, TaskState::Running, 5, ""),
        task(
            "other-task-idd",
            2,
            "",
            TaskState::Pending,
            TaskState::Running,
            2,
            "no suitable node (1 node not available)",
        ),
    ];
    let out = super::tasks(&tasks, &nodes, now());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(
        lines[1].starts_with("new-task-id-   web.1      web:v1   w1     Running         Running 5 seconds ago"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with(r"old-task-id-   \_ web.1   web:v1   w1     Shutdown        Failed About a minute ago"),
        "{}",
        lines[2]
    );
    assert!(lines[2].contains("\"task: non-zero exit (137)\""), "{}", lines[2]);
    assert!(lines[3].contains("Pending 2 seconds ago") && lines[3].contains("\"no suitable node"), "{}", lines[3]);
}

#[test]
fn service_ls_counts_running_against_desired() {
    let svc = v1::Service {
        id: "0123456789abcdefghijklmno".into(),
        spec: Some(v1::ServiceSpec {
            annotations: Some(v1::Annotations { name: "web".into(), ..Default::default() }),
            mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 3 })),
            task: Some(v1::TaskSpec {
                container: Some(v1::ContainerSpec { image: "web:v1".into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut tasks = vec![
        task("a", 1, "n1", TaskState::Running, TaskState::Running, 1, ""),
        task("b", 2, "n1", TaskState::Starting, TaskState::Running, 1, ""),
    ];
    for t in &mut tasks {
        t.service_id = svc.id.clone();
    }
    assert_eq!(
        services(&[svc], &tasks),
        "ID             NAME   MODE         REPLICAS   IMAGE    PORTS\n0123456789ab   web    replicated   1/3        web:v1\n"
    );
}

#[test]
fn progress_bars_like_docker() {
    let task = |slot: u64, node: &str, state: TaskState, err: &str| v1::Task {
        slot,
        node_id: node.into(),
        status: Some(v1::TaskStatus { state: state as i32, err: err.into(), ..Default::default() }),
        ..Default::default()
    };
    let tasks = [
        task(1, "n1", TaskState::Running, ""),
        task(2, "n2", TaskState::Preparing, ""),
        task(3, "n3", TaskState::Rejected, "image not found: docker.io/x:1"),
    ];
    let live: Vec<&v1::Task> = tasks.iter().collect();
    let full = format!("[{}>]", "=".repeat(50));
    let four_of_seven = format!("[{}>{}]", "=".repeat(28), " ".repeat(22));
    assert_eq!(
        progress(&live, 4, false),
        format!(
            "overall progress: 1 out of 4 tasks\n1/4: running   {full}\n2/4: preparing {four_of_seven}\n\
             3/4: image not found: docker.io/x:1\n4/4: \n"
        )
    );
    let global = progress(&live[..2], 2, true);
    assert!(global.starts_with("overall progress: 1 out of 2 tasks\nn1: running   [="), "{global}");
}

#[test]
fn admin_cert_ls() {
    let meta = |secs: u64| {
        Some(v1::Meta {
            created_at: Some(shoal_api::to_timestamp(now() - Duration::from_secs(secs))),
            ..Default::default()
        })
    };
    let listed = v1::ListAdminCertificatesResponse {
        certificates: vec![
            v1::AdminCertificate { id: "admin-b".into(), meta: meta(600), issued_by: "admin-a".into() },
            v1::AdminCertificate { id: "admin-a".into(), meta: meta(400_000), issued_by: "init".into() },
        ],
        revoked: vec![v1::Revocation { id: "admin-c".into(), meta: meta(5), ..Default::default() }],
        caller: "admin-b".into(),
    };
    assert_eq!(
        admin_certs(&listed, now()),
        "ID          STATUS    ISSUED BY   SINCE\n\
         admin-a     Active    init        4 days ago\n\
         admin-b *   Active    admin-a     10 minutes ago\n\
         admin-c     Revoked               5 seconds ago\n"
    );
}

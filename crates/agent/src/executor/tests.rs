//! The executor on the simulated runtime.

use super::*;
use shoal_runtime::{SimBehavior, Simulated};

fn task(id: &str, desired: TaskState) -> v1::Task {
    v1::Task {
        id: id.into(),
        node_id: "n1".into(),
        desired_state: desired as i32,
        spec: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec { image: "shoal-test/sleeper".into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Waits for the report that `task_id` reached `state`.
async fn reported(reports: &mut mpsc::UnboundedReceiver<(String, v1::TaskStatus)>, task_id: &str, state: TaskState) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some((id, status)) = reports.recv().await {
            if id == task_id && status.state == state as i32 {
                return;
            }
        }
        panic!("reports ended before {task_id} was {}", state.label());
    })
    .await
    .unwrap_or_else(|_| panic!("{task_id} not {} within 5 s", state.label()));
}

/// Waits for every (task, state) report in `expected`, in any order.
async fn reported_all(
    reports: &mut mpsc::UnboundedReceiver<(String, v1::TaskStatus)>,
    mut expected: Vec<(&str, TaskState)>,
) {
    let wait = async {
        while let Some((id, status)) = reports.recv().await {
            expected.retain(|(task, state)| !(id == *task && status.state == *state as i32));
            if expected.is_empty() {
                return;
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), wait).await.is_err() {
        panic!("not reported within 5 s: {expected:?}");
    }
}

async fn running(sim: &Simulated) -> Vec<String> {
    let all = sim.list(&[]).await.expect("list");
    all.into_iter().filter(|c| c.state == ContainerState::Running).map(|c| c.id).collect()
}

#[tokio::test]
async fn an_agent_that_stops_leaves_its_containers_running() {
    let sim = Simulated::new();
    sim.add_image("shoal-test/sleeper", SimBehavior::RunUntilStopped);
    let (tx, mut reports) = mpsc::unbounded_channel();
    let mut executor = Executor::new(Arc::new(sim.clone()), "n1".into(), std::env::temp_dir(), tx, None);
    executor.set_complete(vec![task("t1", TaskState::Running)]);
    reported(&mut reports, "t1", TaskState::Running).await;

    tracing::info!("--- the agent stops: its executor is dropped");
    drop(executor);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(running(&sim).await, ["t1"], "the container outlives the agent");

    tracing::info!("--- a new agent adopts it; a task no longer assigned is stopped and removed");
    let (tx, mut reports) = mpsc::unbounded_channel();
    let mut executor = Executor::new(Arc::new(sim.clone()), "n1".into(), std::env::temp_dir(), tx, None);
    executor.discover().await.expect("discover");
    executor.set_complete(vec![task("t1", TaskState::Running)]);
    executor.remove("t1");
    reported(&mut reports, "t1", TaskState::Shutdown).await;
    // Removed too, not only stopped: nothing of t1 stays in the runtime.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !sim.list(&[]).await.expect("list").is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "t1's container is still there");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn adopted_containers_follow_their_tasks_desired_state() {
    let sim = Simulated::new();
    sim.add_image("shoal-test/sleeper", SimBehavior::RunUntilStopped);
    let (tx, mut reports) = mpsc::unbounded_channel();
    let mut executor = Executor::new(Arc::new(sim.clone()), "n1".into(), std::env::temp_dir(), tx, None);
    let ids = ["keeps", "scaled-down", "exited"];
    executor.set_complete(ids.iter().map(|id| task(id, TaskState::Running)).collect());
    reported_all(&mut reports, ids.iter().map(|id| (*id, TaskState::Running)).collect()).await;
    drop(executor);

    tracing::info!("--- while the agent is away one task is scaled down and another's container exits");
    sim.kill_externally("exited", 3, false).expect("kill");
    let (tx, mut reports) = mpsc::unbounded_channel();
    let mut executor = Executor::new(Arc::new(sim.clone()), "n1".into(), std::env::temp_dir(), tx, None);
    executor.discover().await.expect("discover");
    executor.set_complete(vec![
        task("keeps", TaskState::Running),
        task("scaled-down", TaskState::Shutdown),
        task("exited", TaskState::Running),
    ]);
    reported_all(
        &mut reports,
        vec![("keeps", TaskState::Running), ("scaled-down", TaskState::Shutdown), ("exited", TaskState::Failed)],
    )
    .await;
    assert_eq!(running(&sim).await, ["keeps"], "only the task that should run still runs");
}

#[tokio::test]
async fn a_missing_bind_source_rejects_the_task_and_a_named_volume_is_made_on_first_use() {
    let dir = std::env::temp_dir().join(format!("shoal-agent-volumes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sim = Simulated::new();
    sim.add_image("shoal-test/sleeper", SimBehavior::RunUntilStopped);
    let (tx, mut reports) = mpsc::unbounded_channel();
    let mut executor = Executor::new(Arc::new(sim.clone()), "n1".into(), dir.join("volumes"), tx, None);
    let with_mount = |id: &str, kind: v1::mount::Type, source: &str| {
        let mut t = task(id, TaskState::Running);
        if let Some(container) = t.spec.as_mut().and_then(|s| s.container.as_mut()) {
            container.mounts = vec![v1::Mount {
                r#type: kind as i32,
                source: source.into(),
                target: "/data".into(),
                ..Default::default()
            }];
        }
        t
    };
    executor.set_complete(vec![
        with_mount("bind", v1::mount::Type::Bind, "/nonexistent/shoal"),
        with_mount("volume", v1::mount::Type::Volume, "db-data"),
        with_mount("escape", v1::mount::Type::Volume, "../../etc"),
    ]);
    // The three tasks report in any order: keep each one's first status in the state looked for.
    let wanted = [("bind", TaskState::Rejected), ("escape", TaskState::Rejected), ("volume", TaskState::Running)];
    let mut seen: std::collections::BTreeMap<String, v1::TaskStatus> = Default::default();
    tokio::time::timeout(Duration::from_secs(5), async {
        while seen.len() < wanted.len() {
            let Some((id, status)) = reports.recv().await else { break };
            if wanted.iter().any(|(task, state)| id == *task && status.state == *state as i32) {
                seen.entry(id).or_insert(status);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not all reported within 5 s: {seen:?}"));
    assert_eq!(
        seen["bind"].err,
        "invalid mount config for type \"bind\": bind source path does not exist: /nonexistent/shoal"
    );
    assert!(seen["escape"].err.starts_with("invalid volume name \"../../etc\""), "{}", seen["escape"].err);
    let made = dir.join("volumes/db-data").is_dir();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(made, "the named volume's directory is made on first use");
}

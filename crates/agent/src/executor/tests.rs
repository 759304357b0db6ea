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
    let mut executor = Executor::new(Arc::new(sim.clone()), "n1".into(), std::env::temp_dir(), tx);
    executor.set_complete(vec![task("t1", TaskState::Running)]);
    reported(&mut reports, "t1", TaskState::Running).await;

    tracing::info!("--- the agent stops: its executor is dropped");
    drop(executor);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(running(&sim).await, ["t1"], "the container outlives the agent");

    tracing::info!("--- a new agent adopts it; a task no longer assigned is stopped and removed");
    let (tx, mut reports) = mpsc::unbounded_channel();
    let mut executor = Executor::new(Arc::new(sim.clone()), "n1".into(), std::env::temp_dir(), tx);
    executor.discover().await.expect("discover");
    executor.set_complete(vec![task("t1", TaskState::Running)]);
    executor.remove("t1");
    reported(&mut reports, "t1", TaskState::Shutdown).await;
}

#[tokio::test]
async fn adopted_containers_follow_their_tasks_desired_state() {
    let sim = Simulated::new();
    sim.add_image("shoal-test/sleeper", SimBehavior::RunUntilStopped);
    let (tx, mut reports) = mpsc::unbounded_channel();
    let mut executor = Executor::new(Arc::new(sim.clone()), "n1".into(), std::env::temp_dir(), tx);
    let ids = ["keeps", "scaled-down", "exited"];
    executor.set_complete(ids.iter().map(|id| task(id, TaskState::Running)).collect());
    reported_all(&mut reports, ids.iter().map(|id| (*id, TaskState::Running)).collect()).await;
    drop(executor);

    tracing::info!("--- while the agent is away one task is scaled down and another's container exits");
    sim.kill_externally("exited", 3, false).expect("kill");
    let (tx, mut reports) = mpsc::unbounded_channel();
    let mut executor = Executor::new(Arc::new(sim.clone()), "n1".into(), std::env::temp_dir(), tx);
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

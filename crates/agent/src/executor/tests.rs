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

/// An executor for node `n1` on `sim`, reporting to `tx`, its volumes in `volumes` (none of
/// these tests writes a task's files: the simulated runtime reads none).
fn executor_with(sim: &Simulated, tx: Reports, volumes: PathBuf) -> Executor {
    Executor::new(Arc::new(sim.clone()), "n1".into(), &NodeDirs { volumes, task_files: None }, tx, None)
}

/// [`executor_with`] for tests that make no volume.
fn sim_executor(sim: &Simulated, tx: Reports) -> Executor {
    executor_with(sim, tx, std::env::temp_dir().join("shoal-agent-no-volumes"))
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
    let mut executor = sim_executor(&sim, tx);
    executor.set_complete(vec![task("t1", TaskState::Running)]);
    reported(&mut reports, "t1", TaskState::Running).await;

    tracing::info!("--- the agent stops: its executor is dropped");
    drop(executor);
    // The reports close once the executor and every task it ran are gone: nothing left could
    // stop the container.
    let closed = tokio::time::timeout(Duration::from_secs(5), async { while reports.recv().await.is_some() {} }).await;
    assert!(closed.is_ok(), "the executor's tasks still run 5 s after it was dropped");
    assert_eq!(running(&sim).await, ["t1"], "the container outlives the agent");

    tracing::info!("--- a new agent adopts it; a task no longer assigned is stopped and removed");
    let (tx, mut reports) = mpsc::unbounded_channel();
    let mut executor = sim_executor(&sim, tx);
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
    let mut executor = sim_executor(&sim, tx);
    let ids = ["keeps", "scaled-down", "exited"];
    executor.set_complete(ids.iter().map(|id| task(id, TaskState::Running)).collect());
    reported_all(&mut reports, ids.iter().map(|id| (*id, TaskState::Running)).collect()).await;
    drop(executor);

    tracing::info!("--- while the agent is away one task is scaled down and another's container exits");
    sim.kill_externally("exited", 3, false).expect("kill");
    let (tx, mut reports) = mpsc::unbounded_channel();
    let mut executor = sim_executor(&sim, tx);
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
    let mut executor = executor_with(&sim, tx, dir.join("volumes"));
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
    let made = dir.join("volumes/db-data/_data").is_dir();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(made, "the named volume's directory is made on first use");
}

// ----- health checks (paused time: probes, start periods and timeouts happen in virtual time) -----

const PROBE: &[&str] = &["/bin/sh", "-c", "probe"];

/// The simulated image `sim/health:1` whose config has `CMD-SHELL probe` (interval, timeout,
/// start period in seconds, retries).
fn health_image(sim: &Simulated, interval: u64, timeout: u64, start_period: u64, retries: u32) {
    sim.add_image("sim/health:1", SimBehavior::RunUntilStopped);
    sim.set_image_healthcheck(
        "sim/health:1",
        Some(shoal_runtime::Healthcheck {
            test: vec!["CMD-SHELL".into(), "probe".into()],
            interval: Duration::from_secs(interval),
            timeout: Duration::from_secs(timeout),
            start_period: Duration::from_secs(start_period),
            retries,
        }),
    );
}

fn health_task(id: &str, healthcheck: Option<v1::HealthConfig>) -> v1::Task {
    let mut task = task(id, TaskState::Running);
    if let Some(container) = task.spec.as_mut().and_then(|s| s.container.as_mut()) {
        container.image = "sim/health:1".into();
        container.healthcheck = healthcheck;
    }
    task
}

/// The reports of an executor, with the virtual time each came at.
struct Seen {
    rx: mpsc::UnboundedReceiver<(String, v1::TaskStatus)>,
    t0: tokio::time::Instant,
    all: Vec<(String, TaskState, Duration, v1::TaskStatus)>,
}

impl Seen {
    fn new(rx: mpsc::UnboundedReceiver<(String, v1::TaskStatus)>) -> Self {
        Self { rx, t0: tokio::time::Instant::now(), all: Vec::new() }
    }

    /// Waits (at most an hour of virtual time) until `task_id` reports `state`; returns that
    /// report and when it came.
    async fn until(&mut self, task_id: &str, state: TaskState) -> (Duration, v1::TaskStatus) {
        let wait = async {
            while let Some((id, status)) = self.rx.recv().await {
                let at = self.t0.elapsed();
                self.all.push((id.clone(), status.state(), at, status.clone()));
                if id == task_id && status.state == state as i32 {
                    return (at, status);
                }
            }
            panic!("reports ended before {task_id} was {}", state.label());
        };
        match tokio::time::timeout(Duration::from_secs(3600), wait).await {
            Ok(found) => found,
            Err(_) => panic!("{task_id} not {} within an hour; reports: {:?}", state.label(), self.states(task_id)),
        }
    }

    /// Every state `task_id` reported so far, in order.
    fn states(&self, task_id: &str) -> Vec<TaskState> {
        self.all.iter().filter(|(id, ..)| id == task_id).map(|(_, state, ..)| *state).collect()
    }
}

fn new_executor(sim: &Simulated) -> (Executor, Seen) {
    let (tx, rx) = mpsc::unbounded_channel();
    (sim_executor(sim, tx), Seen::new(rx))
}

async fn state_of(sim: &Simulated, id: &str) -> Option<ContainerState> {
    sim.list(&[]).await.expect("list").into_iter().find(|c| c.id == id).map(|c| c.state)
}

#[tokio::test(start_paused = true)]
async fn a_task_with_a_health_check_runs_once_a_probe_passes_and_fails_when_unhealthy() {
    let sim = Simulated::new();
    health_image(&sim, 5, 1, 0, 2);
    let (mut executor, mut seen) = new_executor(&sim);
    executor.set_complete(vec![health_task("t1", None)]);

    tracing::info!("--- STARTING until the first probe, one interval after start, passes");
    let (starting, status) = seen.until("t1", TaskState::Starting).await;
    assert_eq!(starting, Duration::ZERO);
    assert_eq!(status.message, "starting");
    let (waiting, status) = seen.until("t1", TaskState::Starting).await;
    assert_eq!((waiting, status.message.as_str()), (Duration::ZERO, "started; waiting for its health check"));
    let (running, _) = seen.until("t1", TaskState::Running).await;
    assert!(running >= Duration::from_secs(5) && running < Duration::from_millis(5_100), "RUNNING at {running:?}");
    assert_eq!(sim.exec_count("t1"), 1, "one probe");

    tracing::info!("--- checks go on while RUNNING: two failures in a row stop the task");
    sim.set_exec_result(PROBE, 1, "database unreachable\n");
    let (failed, status) = seen.until("t1", TaskState::Failed).await;
    assert!(failed >= Duration::from_secs(15) && failed < Duration::from_millis(15_100), "FAILED at {failed:?}");
    assert_eq!(status.err, "task: unhealthy container");
    assert_eq!(status.message, "unhealthy: database unreachable");
    assert_eq!(sim.exec_count("t1"), 3);
    assert_eq!(state_of(&sim, "t1").await, Some(ContainerState::Stopped), "the container was stopped");
    assert_eq!(
        seen.states("t1"),
        [
            TaskState::Accepted,
            TaskState::Preparing,
            TaskState::Ready,
            TaskState::Starting,
            TaskState::Starting,
            TaskState::Running,
            TaskState::Failed
        ]
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(sim.exec_count("t1"), 3, "no probe after the task failed");
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_task_never_runs_and_failures_in_the_start_period_do_not_count() {
    let sim = Simulated::new();
    health_image(&sim, 1, 1, 10, 1);
    sim.set_exec_result(PROBE, 1, "");
    let (mut executor, mut seen) = new_executor(&sim);
    executor.set_complete(vec![health_task("t1", None)]);
    let (failed, status) = seen.until("t1", TaskState::Failed).await;
    assert!(failed >= Duration::from_secs(10) && failed < Duration::from_millis(10_100), "FAILED at {failed:?}");
    assert_eq!(status.err, "task: unhealthy container");
    assert_eq!(status.message, "unhealthy: health check exited 1 with no output");
    assert!(!seen.states("t1").contains(&TaskState::Running), "never RUNNING: {:?}", seen.states("t1"));
    assert_eq!(sim.exec_count("t1"), 10, "nine failures ignored in the start period, the tenth counted");
}

#[tokio::test(start_paused = true)]
async fn a_passing_probe_ends_the_start_period() {
    let sim = Simulated::new();
    health_image(&sim, 1, 1, 100, 2);
    let (mut executor, mut seen) = new_executor(&sim);
    executor.set_complete(vec![health_task("t1", None)]);
    seen.until("t1", TaskState::Running).await;
    sim.set_exec_result(PROBE, 1, "gone bad");
    let (failed, _) = seen.until("t1", TaskState::Failed).await;
    assert!(failed < Duration::from_millis(3_100), "failures count at once after a pass: FAILED at {failed:?}");
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_outlives_its_timeout_fails() {
    let sim = Simulated::new();
    health_image(&sim, 1, 2, 0, 2);
    sim.set_exec_hangs(PROBE);
    let (mut executor, mut seen) = new_executor(&sim);
    executor.set_complete(vec![health_task("t1", None)]);
    // Probes at 1 s (ends at 3 s) and 4 s (ends at 6 s).
    let (failed, status) = seen.until("t1", TaskState::Failed).await;
    assert!(failed >= Duration::from_secs(6) && failed < Duration::from_millis(6_100), "FAILED at {failed:?}");
    assert_eq!(status.message, "unhealthy: Health check exceeded timeout (2s)");
}

#[tokio::test(start_paused = true)]
async fn the_service_check_merges_over_the_image_and_none_turns_it_off() {
    let sim = Simulated::new();
    health_image(&sim, 30, 1, 0, 3);

    tracing::info!("--- --no-healthcheck: RUNNING at start, no probe");
    let (mut executor, mut seen) = new_executor(&sim);
    let none = v1::HealthConfig { test: vec!["NONE".into()], ..Default::default() };
    executor.set_complete(vec![health_task("off", Some(none))]);
    let (running, status) = seen.until("off", TaskState::Running).await;
    assert_eq!((running, status.message.as_str()), (Duration::ZERO, "started"));
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(sim.exec_count("off"), 0);

    tracing::info!("--- --health-interval 2s over the image's test");
    let (mut executor, mut seen) = new_executor(&sim);
    let interval =
        v1::HealthConfig { interval: Some(shoal_api::to_duration(Duration::from_secs(2))), ..Default::default() };
    executor.set_complete(vec![health_task("merged", Some(interval))]);
    let (running, _) = seen.until("merged", TaskState::Running).await;
    assert!(running >= Duration::from_secs(2) && running < Duration::from_millis(2_100), "RUNNING at {running:?}");
}

#[tokio::test(start_paused = true)]
async fn a_task_told_to_stop_while_starting_stops_its_checks() {
    let sim = Simulated::new();
    health_image(&sim, 1, 1, 0, 100);
    sim.set_exec_result(PROBE, 1, "not yet");
    let (mut executor, mut seen) = new_executor(&sim);
    executor.set_complete(vec![health_task("t1", None)]);
    seen.until("t1", TaskState::Starting).await;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(sim.exec_count("t1"), 3);
    let mut stopping = health_task("t1", None);
    stopping.desired_state = TaskState::Shutdown as i32;
    executor.update(stopping);
    seen.until("t1", TaskState::Shutdown).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(sim.exec_count("t1"), 3, "no probe after the stop");
    assert!(!seen.states("t1").contains(&TaskState::Running));
}

#[tokio::test(start_paused = true)]
async fn an_invalid_health_check_rejects_the_task() {
    let sim = Simulated::new();
    sim.add_image("sim/health:1", SimBehavior::RunUntilStopped);
    let http = shoal_runtime::Healthcheck { test: vec!["HTTP".into(), "/".into()], ..Default::default() };
    sim.set_image_healthcheck("sim/health:1", Some(http));
    let (mut executor, mut seen) = new_executor(&sim);
    executor.set_complete(vec![health_task("t1", None)]);
    let (_, status) = seen.until("t1", TaskState::Rejected).await;
    assert_eq!(
        status.err,
        r#"image docker.io/sim/health:1: invalid health check ["HTTP", "/"]: unknown type "HTTP" (expected CMD, CMD-SHELL or NONE)"#
    );
    assert_eq!(state_of(&sim, "t1").await, None, "no container made");
}

#[tokio::test(start_paused = true)]
async fn adopted_tasks_keep_their_checks_and_their_states_only_move_forward() {
    let sim = Simulated::new();
    health_image(&sim, 1, 1, 0, 2);
    let (mut executor, mut seen) = new_executor(&sim);
    executor.set_complete(vec![health_task("healthy", None)]);
    seen.until("healthy", TaskState::Running).await;
    // A second task whose checks have not passed yet when the agent stops.
    let (second, _) = executor_for_starting(&sim).await;
    drop(executor);
    drop(second);

    tracing::info!("--- a new agent adopts both: RUNNING stays RUNNING, STARTING waits for a pass");
    let (mut executor, mut seen) = new_executor(&sim);
    executor.discover().await.expect("discover");
    let mut healthy = health_task("healthy", None);
    healthy.status = Some(v1::TaskStatus { state: TaskState::Running as i32, ..Default::default() });
    let mut starting = health_task("starting", Some(slow_check()));
    starting.status = Some(v1::TaskStatus { state: TaskState::Starting as i32, ..Default::default() });
    sim.set_exec_result(&["slow"], 0, "");
    executor.set_complete(vec![healthy, starting]);
    let (adopted, status) = seen.until("healthy", TaskState::Running).await;
    assert_eq!((adopted, status.message.as_str()), (Duration::ZERO, "running (adopted after an agent restart)"));
    let (at, status) = seen.until("starting", TaskState::Starting).await;
    assert_eq!(at, Duration::ZERO);
    assert_eq!(status.message, "starting (adopted after an agent restart; waiting for its health check)");
    let (running, _) = seen.until("starting", TaskState::Running).await;
    assert!(running >= Duration::from_secs(1) && running < Duration::from_millis(1_100), "RUNNING at {running:?}");

    tracing::info!("--- the adopted checks still stop an unhealthy task");
    sim.set_exec_result(PROBE, 1, "sick");
    let (_, status) = seen.until("healthy", TaskState::Failed).await;
    assert_eq!((status.err.as_str(), status.message.as_str()), ("task: unhealthy container", "unhealthy: sick"));
    assert!(!seen.states("healthy").contains(&TaskState::Starting), "{:?}", seen.states("healthy"));
}

/// `--health-cmd` as exec arguments: `CMD slow`.
fn slow_check() -> v1::HealthConfig {
    v1::HealthConfig { test: vec!["CMD".into(), "slow".into()], ..Default::default() }
}

/// An executor whose task `starting` (check `CMD slow`, failing so far) has started and is
/// STARTING, before its first probe.
async fn executor_for_starting(sim: &Simulated) -> (Executor, Seen) {
    sim.set_exec_result(&["slow"], 1, "");
    let (mut executor, mut seen) = new_executor(sim);
    executor.set_complete(vec![health_task("starting", Some(slow_check()))]);
    seen.until("starting", TaskState::Starting).await;
    let (_, status) = seen.until("starting", TaskState::Starting).await;
    assert_eq!(status.message, "started; waiting for its health check");
    (executor, seen)
}

//! The output of following an update, from snapshots of a service and its tasks: what is
//! printed at each look and when the command ends.

use std::time::Duration;

use super::*;

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn task_spec(image: &str) -> v1::TaskSpec {
    v1::TaskSpec {
        container: Some(v1::ContainerSpec { image: image.into(), ..Default::default() }),
        ..Default::default()
    }
}

fn service(image: &str, replicas: u64, status: Option<(UpdateState, &str)>) -> v1::Service {
    v1::Service {
        id: "svc".into(),
        spec: Some(v1::ServiceSpec {
            annotations: Some(v1::Annotations { name: "web".into(), ..Default::default() }),
            mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas })),
            task: Some(task_spec(image)),
            ..Default::default()
        }),
        update_status: status.map(|(state, message)| v1::UpdateStatus {
            state: state as i32,
            started_at: Some(shoal_api::to_timestamp(t0())),
            completed_at: None,
            message: message.into(),
        }),
        ..Default::default()
    }
}

fn task(slot: u64, image: &str, state: TaskState, desired: TaskState, version: u64) -> v1::Task {
    v1::Task {
        id: format!("task-{slot}-{image}"),
        meta: Some(v1::Meta { version, ..Default::default() }),
        service_id: "svc".into(),
        slot,
        spec: Some(task_spec(image)),
        desired_state: desired as i32,
        status: Some(v1::TaskStatus { state: state as i32, ..Default::default() }),
        ..Default::default()
    }
}

const RUNNING: TaskState = TaskState::Running;
const BAR: &str = "[==================================================>]";

#[test]
fn a_block_counts_only_tasks_of_the_current_spec() {
    let web = service("web:v2", 3, Some((UpdateState::Updating, "update in progress")));
    let tasks = [
        task(1, "web:v2", RUNNING, RUNNING, 10),
        task(1, "web:v1", TaskState::Shutdown, TaskState::Shutdown, 5),
        task(2, "web:v1", RUNNING, RUNNING, 6),
        task(3, "web:v2", TaskState::Preparing, RUNNING, 11),
        task(3, "web:v1", RUNNING, TaskState::Shutdown, 7),
    ];
    let half = format!("[{}>{}]", "=".repeat(28), " ".repeat(22));
    assert_eq!(
        update_block(&web, &tasks, false),
        format!("overall progress: 1 out of 3 tasks\n1/3: running   {BAR}\n2/3: \n3/3: preparing {half}\n")
    );
    assert!(!is_converged(&web, &tasks));
    assert!(update_block(&web, &tasks, true).starts_with("overall progress: rolling back update: 1 out of 3 tasks\n"));
}

#[test]
fn an_update_is_followed_to_its_end() {
    let mut before = service("web:v1", 2, Some((UpdateState::Completed, "update completed")));
    if let Some(status) = before.update_status.as_mut() {
        status.started_at = Some(shoal_api::to_timestamp(t0() - Duration::from_secs(3600)));
    }
    let mut watch = UpdateWatch::new(Kind::Update, before.update_status.clone());
    let updating = service("web:v2", 2, Some((UpdateState::Updating, "update in progress")));
    let old = [task(1, "web:v1", RUNNING, RUNNING, 1), task(2, "web:v1", RUNNING, RUNNING, 2)];

    let step = watch.step(&updating, &old, t0());
    assert_eq!(step, Step { output: "overall progress: 0 out of 2 tasks\n1/2: \n2/2: \n".into(), end: None });
    assert_eq!(watch.step(&updating, &old, t0()).output, "", "nothing moved, nothing printed");

    let half = [task(1, "web:v2", RUNNING, RUNNING, 3), task(2, "web:v1", RUNNING, RUNNING, 2)];
    let step = watch.step(&updating, &half, t0());
    assert_eq!(step.output, format!("overall progress: 1 out of 2 tasks\n1/2: running   {BAR}\n2/2: \n"));

    let new = [task(1, "web:v2", RUNNING, RUNNING, 3), task(2, "web:v2", RUNNING, RUNNING, 4)];
    let step = watch.step(&updating, &new, t0());
    assert_eq!(step.end, None, "converged, but the leader still watches the new tasks");
    let done = service("web:v2", 2, Some((UpdateState::Completed, "update completed")));
    let step = watch.step(&done, &new, t0() + Duration::from_secs(6));
    assert_eq!(step.output, "verify: Service converged\n");
    assert_eq!(step.end, Some(Ok(())));
}

#[test]
fn a_converged_update_ends_after_its_monitor_period_even_without_a_status() {
    let mut watch = UpdateWatch::new(Kind::Update, None);
    let updating = service("web:v2", 1, Some((UpdateState::Updating, "update in progress")));
    let new = [task(1, "web:v2", RUNNING, RUNNING, 3)];
    assert_eq!(watch.step(&updating, &new, t0()).end, None);
    assert_eq!(watch.step(&updating, &new, t0() + Duration::from_secs(9)).end, None);
    let step = watch.step(&updating, &new, t0() + Duration::from_secs(10));
    assert_eq!(step, Step { output: "verify: Service converged\n".into(), end: Some(Ok(())) });
}

#[test]
fn an_automatic_rollback_is_announced_and_fails_the_update() {
    let mut watch = UpdateWatch::new(Kind::Update, None);
    let message = "update rolled back due to failure or early termination of task task-1-web:v2";
    let rolling = service("web:v1", 1, Some((UpdateState::RollbackStarted, message)));
    let tasks = [
        task(1, "web:v2", TaskState::Failed, TaskState::Shutdown, 3),
        task(1, "web:v1", TaskState::Starting, RUNNING, 4),
    ];
    let step = watch.step(&rolling, &tasks, t0());
    assert!(
        step.output
            .starts_with(&format!("rollback: {message}\noverall progress: rolling back update: 0 out of 1 tasks\n")),
        "{}",
        step.output
    );
    assert_eq!(step.end, None);
    assert!(!watch.step(&rolling, &tasks, t0()).output.contains("rollback:"), "announced once");
    let done = service("web:v1", 1, Some((UpdateState::RollbackCompleted, "rollback completed")));
    let back = [task(1, "web:v1", RUNNING, RUNNING, 4)];
    let step = watch.step(&done, &back, t0());
    assert_eq!(step.end, Some(Err("service rolled back: rollback completed".into())));
}

#[test]
fn a_rollback_command_succeeds_when_the_rollback_completes() {
    let mut watch = UpdateWatch::new(Kind::Rollback, None);
    let started = service("web:v1", 1, Some((UpdateState::RollbackStarted, "manually requested rollback")));
    let tasks = [task(1, "web:v2", RUNNING, TaskState::Shutdown, 3)];
    let step = watch.step(&started, &tasks, t0());
    assert!(step.output.starts_with("rollback: manually requested rollback\n"), "{}", step.output);
    let done = service("web:v1", 1, Some((UpdateState::RollbackCompleted, "rollback completed")));
    let back = [task(1, "web:v1", RUNNING, RUNNING, 4)];
    let step = watch.step(&done, &back, t0());
    assert_eq!(step.end, Some(Ok(())));
    assert!(step.output.ends_with("verify: Service converged\n"), "{}", step.output);
}

#[test]
fn a_pause_ends_the_command_with_its_message_unless_it_was_there_before() {
    let message = "update paused due to failure or early termination of task task-1-web:v2";
    let paused = service("web:v2", 1, Some((UpdateState::Paused, message)));
    let tasks = [task(1, "web:v2", TaskState::Failed, TaskState::Shutdown, 3)];
    let mut watch = UpdateWatch::new(Kind::Update, None);
    let end = watch.step(&paused, &tasks, t0()).end.expect("ends").expect_err("fails");
    assert!(end.starts_with(&format!("service update paused: {message}; see shoal service ps web")), "{end}");

    // `service update` on a paused service continues it: the old pause is not news.
    let mut watch = UpdateWatch::new(Kind::Update, paused.update_status.clone());
    assert_eq!(watch.step(&paused, &tasks, t0()).end, None);

    let rollback_paused = service("web:v1", 1, Some((UpdateState::RollbackPaused, "rollback paused due to failure")));
    let mut watch = UpdateWatch::new(Kind::Rollback, None);
    let end = watch.step(&rollback_paused, &tasks, t0()).end.expect("ends").expect_err("fails");
    assert_eq!(end, "service rollback paused: rollback paused due to failure; see shoal service ps web");
}

#[test]
fn an_update_that_completed_with_failing_tasks_ends_with_their_error() {
    // Every task had ended when the update was written: nothing to replace, completed at once.
    let mut done = service("web:v2", 1, Some((UpdateState::Completed, "update completed")));
    if let Some(status) = done.update_status.as_mut() {
        status.completed_at = Some(shoal_api::to_timestamp(t0()));
    }
    let mut watch = UpdateWatch::new(Kind::Update, None);
    let starting = [task(1, "web:v2", TaskState::Pending, RUNNING, 3)];
    assert_eq!(watch.step(&done, &starting, t0()).end, None, "its tasks may still come up");
    let mut failed = task(1, "web:v2", TaskState::Failed, TaskState::Shutdown, 3);
    if let Some(status) = failed.status.as_mut() {
        status.err = "task: non-zero exit (1)".into();
        status.timestamp = Some(shoal_api::to_timestamp(t0() + Duration::from_secs(1)));
    }
    let end = watch.step(&done, &[failed], t0()).end;
    assert_eq!(
        end,
        Some(Err("service web: the update completed but its task task-1-web:v2 failed: task: non-zero exit (1); \
                  see shoal service ps web"
            .into()))
    );
}

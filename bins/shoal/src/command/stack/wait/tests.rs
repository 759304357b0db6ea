//! Tests of `wait`: what a look at a service says for each goal — `depends_on` conditions
//! (started, healthy, completed) and the end of a deploy — from its tasks' states, its update
//! status and its allocation, as a table.

use std::time::SystemTime;

use shoal_api::v1::{self, TaskState, update_status::UpdateState};
use shoal_compose::Condition;

use super::*;

fn service(mode: v1::service_spec::Mode, restart: v1::restart_policy::Condition) -> v1::Service {
    let task = v1::TaskSpec {
        container: Some(v1::ContainerSpec { image: "web:v1".into(), ..Default::default() }),
        restart: Some(v1::RestartPolicy { condition: restart as i32, ..Default::default() }),
        ..Default::default()
    };
    let spec = v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: "shop_web".into(), ..Default::default() }),
        task: Some(task),
        mode: Some(mode),
        ..Default::default()
    };
    v1::Service { id: "svc".into(), spec: Some(spec), spec_version: 1, ..Default::default() }
}

fn replicated(replicas: u64) -> v1::Service {
    service(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas }), v1::restart_policy::Condition::Any)
}

/// A task of `service`'s current spec (or of an older one), on node `n1`, in `state`.
fn task(service: &v1::Service, slot: u64, state: TaskState, current: bool, message: &str) -> v1::Task {
    let mut spec = service.spec.as_ref().and_then(|s| s.task.clone());
    if !current && let Some(container) = spec.as_mut().and_then(|s| s.container.as_mut()) {
        container.image = "web:v0".into();
    }
    let (err, message) = if state >= TaskState::Failed { (message, "") } else { ("", message) };
    v1::Task {
        id: format!("t{slot}"),
        service_id: service.id.clone(),
        slot,
        node_id: "n1".into(),
        spec,
        desired_state: if state.is_terminal() && state != TaskState::Complete {
            TaskState::Shutdown as i32
        } else {
            TaskState::Running as i32
        },
        status: Some(v1::TaskStatus {
            state: state as i32,
            message: message.into(),
            err: err.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn status(state: UpdateState, message: &str) -> v1::UpdateStatus {
    v1::UpdateStatus { state: state as i32, message: message.into(), ..Default::default() }
}

fn ready(word: &str) -> Readiness {
    Readiness::Ready(word.to_owned())
}

fn waiting(how: &str) -> Readiness {
    Readiness::Waiting(how.to_owned())
}

struct Case {
    name: &'static str,
    goal: Goal,
    service: v1::Service,
    tasks: Vec<v1::Task>,
    baseline: Option<v1::UpdateStatus>,
    expected: Readiness,
}

#[test]
fn what_a_look_says() {
    use Condition::*;
    use TaskState::*;
    let web = replicated(2);
    let with_status = |s: v1::UpdateStatus| {
        let mut service = replicated(2);
        service.update_status = Some(s);
        service
    };
    let blocked = {
        let mut service = replicated(2);
        service.allocation_error = "port 8080/tcp is published by service blog_web".into();
        service
    };
    let job = service(
        v1::service_spec::Mode::ReplicatedJob(v1::ReplicatedJob { max_concurrent: 1, total_completions: 1 }),
        v1::restart_policy::Condition::None,
    );
    let one_shot = service(
        v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 1 }),
        v1::restart_policy::Condition::None,
    );
    let paused = status(UpdateState::Paused, "update paused due to failure or early termination of task t1");
    let rolled_back = status(UpdateState::RollbackCompleted, "rollback completed");
    let cases = vec![
        Case {
            name: "started: every task starting or running",
            goal: Goal::Dependency(Started),
            tasks: vec![task(&web, 1, Starting, true, "starting"), task(&web, 2, Running, true, "")],
            service: web.clone(),
            baseline: None,
            expected: ready("started"),
        },
        Case {
            name: "healthy: a task still starting (its health check has not passed) is not enough",
            goal: Goal::Dependency(Healthy),
            tasks: vec![task(&web, 1, Starting, true, "starting"), task(&web, 2, Running, true, "")],
            service: web.clone(),
            baseline: None,
            expected: waiting("1/2 running (starting)"),
        },
        Case {
            name: "healthy: every task running (healthy, for a task with a check)",
            goal: Goal::Dependency(Healthy),
            tasks: vec![task(&web, 1, Running, true, ""), task(&web, 2, Running, true, "")],
            service: web.clone(),
            baseline: None,
            expected: ready("healthy"),
        },
        Case {
            name: "no task yet",
            goal: Goal::Dependency(Started),
            tasks: vec![],
            service: web.clone(),
            baseline: None,
            expected: waiting("0/2 running"),
        },
        Case {
            name: "why a task waits is said",
            goal: Goal::Converged,
            tasks: vec![
                task(&web, 1, Pending, true, "no suitable node (1 node not available for new tasks)"),
                task(&web, 2, Running, true, ""),
            ],
            service: web.clone(),
            baseline: None,
            expected: waiting("1/2 running (no suitable node (1 node not available for new tasks))"),
        },
        Case {
            name: "converged: every task of the current spec running, no other left",
            goal: Goal::Converged,
            tasks: vec![task(&web, 1, Running, true, ""), task(&web, 2, Running, true, "")],
            service: web.clone(),
            baseline: None,
            expected: ready("converged"),
        },
        Case {
            name: "not converged while a task of the old spec runs",
            goal: Goal::Converged,
            tasks: vec![
                task(&web, 1, Running, true, ""),
                task(&web, 2, Running, true, ""),
                task(&web, 3, Running, false, ""),
            ],
            service: web.clone(),
            baseline: None,
            expected: waiting("2/2 running"),
        },
        Case {
            name: "an update in progress is not converged",
            goal: Goal::Converged,
            tasks: vec![task(&web, 1, Running, true, ""), task(&web, 2, Running, true, "")],
            service: with_status(status(UpdateState::Updating, "update in progress")),
            baseline: None,
            expected: waiting("updating, 2/2 running"),
        },
        Case {
            name: "a paused update fails the wait",
            goal: Goal::Converged,
            tasks: vec![task(&web, 1, Failed, true, "task: non-zero exit (1)")],
            service: with_status(paused.clone()),
            baseline: None,
            expected: Readiness::Failed(
                "service shop_web: update paused: update paused due to failure or early termination of task t1; see \
                 shoal service ps shop_web, then deploy again or run shoal service rollback shop_web"
                    .into(),
            ),
        },
        Case {
            name: "a pause is news even when it was there before",
            goal: Goal::Dependency(Started),
            tasks: vec![],
            service: with_status(paused.clone()),
            baseline: Some(paused),
            expected: Readiness::Failed(
                "service shop_web: update paused: update paused due to failure or early termination of task t1; see \
                 shoal service ps shop_web, then deploy again or run shoal service rollback shop_web"
                    .into(),
            ),
        },
        Case {
            name: "a rollback this deploy caused fails it",
            goal: Goal::Converged,
            tasks: vec![task(&web, 1, Running, true, ""), task(&web, 2, Running, true, "")],
            service: with_status(rolled_back.clone()),
            baseline: None,
            expected: Readiness::Failed(
                "service shop_web rolled back: rollback completed; see shoal service ps shop_web".into(),
            ),
        },
        Case {
            name: "an earlier deploy's rollback is old news",
            goal: Goal::Converged,
            tasks: vec![task(&web, 1, Running, true, ""), task(&web, 2, Running, true, "")],
            service: with_status(rolled_back.clone()),
            baseline: Some(rolled_back),
            expected: ready("converged"),
        },
        Case {
            name: "a blocked service fails at once",
            goal: Goal::Dependency(Started),
            tasks: vec![],
            service: blocked,
            baseline: None,
            expected: Readiness::Failed(
                "service shop_web is blocked: port 8080/tcp is published by service blog_web (see shoal service \
                 inspect shop_web)"
                    .into(),
            ),
        },
        Case {
            name: "a job has started",
            goal: Goal::Dependency(Started),
            tasks: vec![task(&job, 1, Running, true, "")],
            service: job.clone(),
            baseline: None,
            expected: ready("started"),
        },
        Case {
            name: "a job completes",
            goal: Goal::Dependency(CompletedSuccessfully),
            tasks: vec![task(&job, 1, Complete, true, "")],
            service: job.clone(),
            baseline: None,
            expected: ready("complete"),
        },
        Case {
            name: "a running job is not complete",
            goal: Goal::Dependency(CompletedSuccessfully),
            tasks: vec![task(&job, 1, Running, true, "")],
            service: job.clone(),
            baseline: None,
            expected: waiting("0 out of 1 complete"),
        },
        Case {
            name: "a job whose task failed with no retry fails the wait",
            goal: Goal::Dependency(CompletedSuccessfully),
            tasks: vec![task(&job, 1, Failed, true, "task: non-zero exit (3)")],
            service: job,
            baseline: None,
            expected: Readiness::Failed(
                "job shop_web: 1 of 1 tasks failed and will not be retried; see shoal service ps shop_web".into(),
            ),
        },
        Case {
            name: "a service whose tasks end: complete when every task exited 0",
            goal: Goal::Dependency(CompletedSuccessfully),
            tasks: vec![task(&one_shot, 1, Complete, true, "")],
            service: one_shot.clone(),
            baseline: None,
            expected: ready("complete"),
        },
        Case {
            name: "a service whose tasks end: one that failed, never restarted, fails the wait",
            goal: Goal::Dependency(CompletedSuccessfully),
            tasks: vec![task(&one_shot, 1, Failed, true, "task: non-zero exit (2)")],
            service: one_shot,
            baseline: None,
            expected: Readiness::Failed(
                "service shop_web: task t1 failed and is not restarted: task: non-zero exit (2); see shoal service \
                 ps shop_web"
                    .into(),
            ),
        },
    ];
    let now = SystemTime::now();
    for case in cases {
        let got = readiness(case.goal, &case.service, &case.tasks, &[], case.baseline.as_ref(), now);
        assert_eq!(got, case.expected, "{}", case.name);
    }
}

//! Table tests of the rolling update's plan: lanes, delay, order, monitor, failure actions.

use super::*;
use crate::testutil::{at, now, task_line};

fn image(tag: &str) -> Option<v1::TaskSpec> {
    let container = v1::ContainerSpec { image: format!("web:{tag}"), ..Default::default() };
    Some(v1::TaskSpec { container: Some(container), ..Default::default() })
}

/// A service of `replicas` running web:v2 after web:v1, updating since 100 s ago.
fn service(config: v1::UpdateConfig) -> v1::Service {
    let spec = |tag: &str| v1::ServiceSpec {
        task: image(tag),
        mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 4 })),
        update: Some(config),
        rollback: Some(v1::UpdateConfig { failure_action: FailureAction::Pause as i32, ..config }),
        ..Default::default()
    };
    v1::Service {
        id: "svc".into(),
        spec: Some(spec("v2")),
        previous_spec: Some(spec("v1")),
        update_status: Some(status(UpdateState::Updating, "update in progress", at(-100))),
        ..Default::default()
    }
}

fn config(parallelism: u64, delay_s: u64, order: Order, action: FailureAction) -> v1::UpdateConfig {
    v1::UpdateConfig {
        parallelism,
        delay: Some(shoal_api::to_duration(Duration::from_secs(delay_s))),
        order: order as i32,
        failure_action: action as i32,
        ..Default::default()
    }
}

/// A task: "ID SLOT NODE STATE [DESIRED] TAG made=SECS [ran=SECS]", times relative to now.
fn task(line: &str) -> v1::Task {
    let words: Vec<&str> = line.split_whitespace().collect();
    let base: Vec<&str> = words.iter().copied().filter(|w| !w.contains('=') && !w.starts_with('v')).collect();
    let mut task = task_line(&base.join(" "));
    for word in &words {
        if word.starts_with('v') && word.len() == 2 {
            task.spec = image(word);
        } else if let Some(secs) = word.strip_prefix("made=") {
            let made = at(secs.parse().expect("made"));
            task.meta = Some(v1::Meta { created_at: Some(shoal_api::to_timestamp(made)), ..Default::default() });
        } else if let Some(secs) = word.strip_prefix("ran=") {
            task.running_since = Some(shoal_api::to_timestamp(at(secs.parse().expect("ran"))));
        } else if let Some(secs) = word.strip_prefix("ended=") {
            let ended = shoal_api::to_timestamp(at(secs.parse().expect("ended")));
            if let Some(status) = task.status.as_mut() {
                status.timestamp = Some(ended);
            }
        }
    }
    task
}

fn plan(service: &v1::Service, lines: &[&str]) -> UpdatePlan<u64> {
    let tasks: Vec<v1::Task> = lines.iter().map(|l| task(l)).collect();
    let mut units: BTreeMap<u64, Vec<&v1::Task>> = BTreeMap::new();
    for task in &tasks {
        units.entry(task.slot).or_default().push(task);
    }
    // What the orchestrator would say: units whose newest task is stopping or ended wait for
    // their next one.
    let waiting: BTreeSet<u64> = units
        .iter()
        .filter(|(_, history)| !history.iter().any(|t| current_task(t) && !t.observed_state().is_terminal()))
        .map(|(slot, _)| *slot)
        .collect();
    plan_update(service, &units, 4, &waiting, |_| false, now())
}

const OLD: [&str; 4] = [
    "a 1 n1 running v1 made=-500 ran=-490",
    "b 2 n1 running v1 made=-500 ran=-490",
    "c 3 n1 running v1 made=-500 ran=-490",
    "d 4 n1 running v1 made=-500 ran=-490",
];

#[test]
fn stop_first_stops_as_many_old_tasks_as_lanes_allow_in_slot_order() {
    let svc = service(config(2, 0, Order::StopFirst, FailureAction::Pause));
    let plan = plan(&svc, &OLD);
    assert_eq!((plan.shutdown, plan.create, plan.status), (vec!["a".into(), "b".into()], vec![], None));
    let svc = service(config(0, 0, Order::StopFirst, FailureAction::Pause));
    assert_eq!(super::tests::plan(&svc, &OLD).shutdown.len(), 4, "parallelism 0 updates every slot at once");
}

#[test]
fn start_first_adds_the_new_task_beside_the_old_one() {
    let svc = service(config(1, 0, Order::StartFirst, FailureAction::Pause));
    let plan = plan(&svc, &OLD);
    assert_eq!((plan.shutdown, plan.create), (vec![], vec![1]));
}

#[test]
fn busy_lanes_hold_the_next_slots() {
    let svc = service(config(2, 0, Order::StopFirst, FailureAction::Pause));
    // Slot 1: the old task stops; slot 2: its replacement starts. Both lanes are busy.
    let lines = [
        "a 1 n1 running shutdown v1 made=-500 ran=-490",
        "b 2 n1 shutdown shutdown v1 made=-500 ran=-490",
        "b2 2 n1 starting v2 made=-2",
        OLD[2],
        OLD[3],
    ];
    let plan = plan(&svc, &lines);
    assert_eq!((plan.shutdown, plan.status), (vec![], None));
    // Once both run, the next two go.
    let lines = [
        "a 1 n1 shutdown shutdown v1 made=-500 ran=-490",
        "a2 1 n1 running v2 made=-40 ran=-30",
        "b 2 n1 shutdown shutdown v1 made=-500 ran=-490",
        "b2 2 n1 running v2 made=-40 ran=-30",
        OLD[2],
        OLD[3],
    ];
    assert_eq!(super::tests::plan(&svc, &lines).shutdown, vec!["c".to_owned(), "d".to_owned()]);
}

#[test]
fn the_delay_keeps_a_lane_busy_after_its_task_runs() {
    let mut update = config(1, 10, Order::StopFirst, FailureAction::Pause);
    update.monitor = Some(shoal_api::to_duration(Duration::ZERO));
    let svc = service(update);
    let lines = ["a 1 n1 shutdown shutdown v1 made=-500", "a2 1 n1 running v2 made=-8 ran=-4", OLD[1]];
    let plan = plan(&svc, &lines);
    assert_eq!((plan.shutdown.len(), plan.due), (0, Some(at(6))), "due when the delay ends");
    let lines = ["a 1 n1 shutdown shutdown v1 made=-500", "a2 1 n1 running v2 made=-20 ran=-11", OLD[1]];
    assert_eq!(super::tests::plan(&svc, &lines).shutdown, vec!["b".to_owned()]);
}

#[test]
fn a_task_that_fails_within_the_monitor_period_pauses_the_update() {
    let svc = service(config(1, 0, Order::StopFirst, FailureAction::Pause));
    let lines = ["a 1 n1 shutdown shutdown v1 made=-500", "a2 1 n1 failed v2 made=-8 ran=-6 ended=-3", OLD[1]];
    let plan = plan(&svc, &lines);
    let status = plan.status.expect("paused");
    assert_eq!(status.state, UpdateState::Paused as i32);
    assert_eq!(status.message, "update paused due to failure or early termination of task a2");
    assert_eq!(status.started_at, Some(shoal_api::to_timestamp(at(-100))), "the update keeps its start");
    assert!(plan.shutdown.is_empty() && plan.create.is_empty());
    // Never ran at all: a failure too (rejected, image missing…).
    let lines = ["a 1 n1 shutdown shutdown v1 made=-500", "a2 1 n1 rejected v2 made=-8 ended=-3", OLD[1]];
    assert!(super::tests::plan(&svc, &lines).status.is_some());
}

#[test]
fn a_failure_after_the_monitor_period_or_before_the_update_does_not_count() {
    let svc = service(config(1, 0, Order::StopFirst, FailureAction::Pause));
    // Failed 30 s after it ran (monitor 5 s): the restart policy's business, not the update's.
    let lines = ["a2 1 n1 failed v2 made=-60 ran=-50 ended=-20", "a3 1 n1 running v2 made=-19 ran=-18", OLD[1]];
    let plan = plan(&svc, &lines);
    assert_eq!((plan.status, plan.shutdown), (None, vec!["b".to_owned()]));
    // A task of the new spec from before this update started (an update back and forth).
    let lines = ["a2 1 n1 failed v2 made=-300 ran=-299 ended=-298", OLD[1]];
    assert_eq!(super::tests::plan(&svc, &lines).status, None);
}

#[test]
fn the_failure_ratio_tolerates_that_many_failures() {
    let mut update = config(1, 0, Order::StopFirst, FailureAction::Pause);
    update.max_failure_ratio = 0.3;
    let svc = service(update);
    let lines = ["a2 1 n1 failed v2 made=-8 ran=-6 ended=-3", "a3 1 n1 running v2 made=-2 ran=-1", OLD[1]];
    assert_eq!(plan(&svc, &lines).status, None, "1 failure out of 4 slots is under 0.3");
    let lines = ["a2 1 n1 failed v2 made=-8 ran=-6 ended=-3", "b2 2 n1 failed v2 made=-8 ran=-6 ended=-3", OLD[2]];
    assert!(plan(&svc, &lines).status.is_some(), "2 out of 4 is over it");
}

#[test]
fn failure_action_rollback_rolls_back_and_continue_carries_on() {
    let svc = service(config(1, 0, Order::StopFirst, FailureAction::Rollback));
    let lines = ["a2 1 n1 failed v2 made=-8 ran=-6 ended=-3", OLD[1]];
    let plan = plan(&svc, &lines);
    assert!(plan.rollback);
    let status = plan.status.expect("rollback started");
    assert_eq!(status.state, UpdateState::RollbackStarted as i32);
    assert_eq!(status.message, "update rolled back due to failure or early termination of task a2");
    assert_eq!(status.started_at, Some(shoal_api::to_timestamp(now())));

    // Slot 1 waits for its restart (a busy lane): the second lane takes slot 2.
    let svc = service(config(2, 0, Order::StopFirst, FailureAction::Continue));
    let lines = ["a2 1 n1 failed v2 made=-8 ran=-6 ended=-3", OLD[1]];
    let plan = super::tests::plan(&svc, &lines);
    assert_eq!((plan.status, plan.rollback, plan.shutdown), (None, false, vec!["b".to_owned()]));
}

#[test]
fn a_failing_rollback_pauses() {
    let mut svc = service(config(1, 0, Order::StopFirst, FailureAction::Rollback));
    // Rolling back to v2 from a failed v1 (the spec is the previous one now).
    svc.update_status = Some(status(UpdateState::RollbackStarted, "manually requested rollback", at(-100)));
    let lines = ["a2 1 n1 failed v2 made=-8 ran=-6 ended=-3", OLD[1]];
    let plan = plan(&svc, &lines);
    let status = plan.status.expect("paused");
    assert_eq!(status.state, UpdateState::RollbackPaused as i32);
    assert_eq!(status.message, "rollback paused due to failure or early termination of task a2");
    assert!(!plan.rollback);
}

#[test]
fn the_update_completes_after_its_last_tasks_were_watched() {
    let svc = service(config(1, 0, Order::StopFirst, FailureAction::Pause));
    let lines = ["a2 1 n1 running v2 made=-9 ran=-2", "b2 2 n1 running v2 made=-30 ran=-29"];
    let plan = plan(&svc, &lines);
    assert_eq!((plan.status, plan.due), (None, Some(at(3))), "a2 is watched for 5 s after it ran");
    let lines = ["a2 1 n1 running v2 made=-9 ran=-6", "b2 2 n1 running v2 made=-30 ran=-29"];
    let status = super::tests::plan(&svc, &lines).status.expect("completed");
    assert_eq!((status.state, status.message.as_str()), (UpdateState::Completed as i32, "update completed"));
    assert_eq!(status.completed_at, Some(shoal_api::to_timestamp(now())));
}

#[test]
fn nothing_happens_unless_an_update_runs() {
    for state in [UpdateState::Paused, UpdateState::Completed, UpdateState::RollbackPaused, UpdateState::Unknown] {
        let mut svc = service(config(1, 0, Order::StopFirst, FailureAction::Pause));
        svc.update_status = Some(status(state, "", at(-100)));
        assert_eq!(plan(&svc, &OLD), UpdatePlan::default(), "{state:?}");
    }
    let mut svc = service(config(1, 0, Order::StopFirst, FailureAction::Pause));
    svc.update_status = None;
    assert_eq!(plan(&svc, &OLD), UpdatePlan::default());
}

#[test]
fn dirty_means_a_different_task_spec_network_or_endpoint_but_not_constraints() {
    let svc = service(config(1, 0, Order::StopFirst, FailureAction::Pause));
    let mut t = task("a 1 n1 running v2 made=-1");
    assert!(!task_dirty(&svc, &t));
    t.spec = image("v1");
    assert!(task_dirty(&svc, &t));
    t.spec = image("v2");
    if let Some(spec) = t.spec.as_mut() {
        spec.placement = Some(v1::Placement { constraints: vec!["node.role==worker".into()], ..Default::default() });
    }
    assert!(!task_dirty(&svc, &t), "constraints alone");
    if let Some(spec) = t.spec.as_mut() {
        spec.force_update = 1;
    }
    assert!(task_dirty(&svc, &t), "--force");
    let mut t = task("a 1 n1 running v2 made=-1");
    let mut with_net = svc.clone();
    if let Some(spec) = with_net.spec.as_mut() {
        spec.networks = vec![v1::NetworkAttachmentConfig { target: "net1".into(), ..Default::default() }];
    }
    assert!(task_dirty(&with_net, &t), "a network added");
    t.networks = vec![v1::NetworkAttachment {
        network: Some(v1::Network { id: "net1".into(), ..Default::default() }),
        ..Default::default()
    }];
    assert!(!task_dirty(&with_net, &t));
    let mut published = with_net.clone();
    published.endpoint = Some(v1::Endpoint {
        spec: Some(v1::EndpointSpec {
            ports: vec![v1::PortConfig { target_port: 80, published_port: 8080, ..Default::default() }],
            ..Default::default()
        }),
        ..Default::default()
    });
    assert!(task_dirty(&published, &t), "a port published");
}

#[test]
fn the_update_does_not_complete_while_a_slot_waits_for_its_next_task() {
    let svc = service(config(1, 0, Order::StopFirst, FailureAction::Pause));
    // Slot 1's task of the new spec failed long after its monitor period: the restart policy
    // refills it, and until its new task runs the update is not complete.
    let lines = ["a2 1 n1 failed v2 made=-60 ran=-50 ended=-20", "b2 2 n1 running v2 made=-60 ran=-50"];
    assert_eq!(plan(&svc, &lines).status, None);
    let lines = ["b2 2 n1 running v2 made=-60 ran=-50"];
    assert_eq!(plan(&svc, &lines).status.map(|s| s.state), Some(UpdateState::Completed as i32));
}

#[test]
fn a_service_without_an_update_config_updates_one_task_at_a_time() {
    let mut svc = service(config(0, 0, Order::StopFirst, FailureAction::Pause));
    if let Some(spec) = svc.spec.as_mut() {
        spec.update = None;
    }
    assert_eq!(plan(&svc, &OLD).shutdown, vec!["a".to_owned()], "Swarm's default parallelism is 1");
}

#[test]
fn a_failed_start_first_replacement_is_tried_again_after_the_restart_delay() {
    let svc = service(config(1, 0, Order::StartFirst, FailureAction::Continue));
    // Slot 1's new task failed 2 s ago beside the old one (default restart delay 5 s).
    let lines = ["a 1 n1 running v1 made=-500 ran=-490", "a2 1 n1 failed v2 made=-8 ran=-6 ended=-2"];
    let plan = plan(&svc, &lines);
    assert_eq!((plan.create, plan.due, plan.status), (vec![], Some(at(3)), None));
    let lines = ["a 1 n1 running v1 made=-500 ran=-490", "a2 1 n1 failed v2 made=-20 ran=-18 ended=-6"];
    assert_eq!(super::tests::plan(&svc, &lines).create, vec![1]);
}

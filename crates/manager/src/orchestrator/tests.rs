//! Table tests of the replicated reconcile step.

use super::*;
use crate::testutil::{at, node_line, now, policy, task_line as task};

fn service(replicas: u64, restart: Option<v1::RestartPolicy>) -> v1::Service {
    v1::Service {
        id: "svc".into(),
        spec: Some(v1::ServiceSpec {
            mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas })),
            task: Some(v1::TaskSpec { restart, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(id: &str, down: bool, drain: bool) -> v1::Node {
    node_line(&format!("{id}{}{}", if down { " down" } else { "" }, if drain { " drain" } else { "" }))
}

fn plan(creates: &[(u64, u64)], shutdown: &[&str]) -> ReplicatedPlan {
    ReplicatedPlan {
        create: creates.iter().map(|(slot, secs)| (*slot, now() + Duration::from_secs(*secs))).collect(),
        shutdown: shutdown.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

#[test]
fn reconcile_table() {
    let nodes =
        [node("n1", false, false), node("n2", false, false), node("down", true, false), node("drained", false, true)];
    let any5 = policy(Condition::Any, 5, 0, 0);
    // (what, service, tasks, expected)
    let cases: Vec<(&str, v1::Service, Vec<&str>, ReplicatedPlan)> = vec![
        ("a new service fills every slot at once", service(3, None), vec![], plan(&[(1, 0), (2, 0), (3, 0)], &[])),
        (
            "a converged service needs nothing",
            service(2, None),
            vec!["t1 1 n1 running", "t2 2 n2 running"],
            plan(&[], &[]),
        ),
        (
            "pending and starting tasks occupy their slots",
            service(2, None),
            vec!["t1 1 - pending", "t2 2 n1 starting"],
            plan(&[], &[]),
        ),
        (
            "scale 5 -> 2 shuts down the highest slots",
            service(2, None),
            vec!["t1 1 n1 running", "t2 2 n2 running", "t3 3 n1 running", "t4 4 n2 running", "t5 5 n1 running"],
            plan(&[], &["t3", "t4", "t5"]),
        ),
        ("scale up adds the missing slots", service(3, None), vec!["t1 1 n1 running"], plan(&[(2, 0), (3, 0)], &[])),
        (
            "a failed task is replaced after the restart delay",
            service(1, any5),
            vec!["t1 1 n1 failed exit=137"],
            plan(&[(1, 5)], &["t1"]),
        ),
        (
            "the replacement is planned once: history with a current task needs nothing",
            service(1, any5),
            vec!["t1 1 n1 failed shutdown exit=137", "t2 1 n2 running"],
            plan(&[], &[]),
        ),
        (
            "a task on a down node is replaced at once, without delay",
            service(2, any5),
            vec!["t1 1 down running", "t2 2 n1 running"],
            plan(&[(1, 0)], &["t1"]),
        ),
        ("draining moves tasks", service(1, any5), vec!["t1 1 drained running"], plan(&[(1, 0)], &["t1"])),
        (
            "on-failure does not restart a clean exit",
            service(1, policy(Condition::OnFailure, 5, 0, 0)),
            vec!["t1 1 n1 complete exit=0"],
            plan(&[], &["t1"]),
        ),
        (
            "on-failure restarts a non-zero exit",
            service(1, policy(Condition::OnFailure, 2, 0, 0)),
            vec!["t1 1 n1 failed exit=1"],
            plan(&[(1, 2)], &["t1"]),
        ),
        (
            "condition none never restarts",
            service(1, policy(Condition::None, 5, 0, 0)),
            vec!["t1 1 n1 failed exit=1"],
            plan(&[], &["t1"]),
        ),
        (
            "condition none: a stopped slot stays empty on later passes",
            service(1, policy(Condition::None, 5, 0, 0)),
            vec!["t1 1 n1 failed shutdown exit=1"],
            plan(&[], &[]),
        ),
        (
            "max attempts: two restarts allowed, the third failure ends it",
            service(1, policy(Condition::Any, 0, 2, 0)),
            vec!["t1 1 n1 failed shutdown", "t2 1 n1 failed shutdown", "t3 1 n1 failed"],
            plan(&[], &["t3"]),
        ),
        (
            "max attempts counts only failures inside the window",
            service(1, policy(Condition::Any, 0, 1, 60)),
            vec!["t1 1 n1 failed shutdown age=600", "t2 1 n1 failed shutdown age=300", "t3 1 n1 failed"],
            plan(&[(1, 0)], &["t3"]),
        ),
        (
            "a slot emptied by a scale-down is refilled at once on scale-up",
            service(2, any5),
            vec!["t1 1 n1 running", "t2 2 n1 shutdown shutdown"],
            plan(&[(2, 0)], &[]),
        ),
        (
            "two current tasks in one slot: the older is shut down",
            service(1, None),
            vec!["t1 1 n1 running", "t2 1 n2 running"],
            plan(&[], &["t1"]),
        ),
    ];
    for (what, svc, tasks, expected) in cases {
        let mut tasks: Vec<v1::Task> = tasks.into_iter().map(task).collect();
        for (i, t) in tasks.iter_mut().enumerate() {
            t.meta = Some(v1::Meta { version: i as u64 + 1, ..Default::default() });
        }
        assert_eq!(reconcile_replicated(&svc, &tasks, &nodes, now()), expected, "{what}");
    }
}

#[test]
fn other_services_and_modes_are_ignored() {
    let mut other = task("x1 1 n1 running");
    other.service_id = "other".into();
    let global = v1::Service {
        id: "svc".into(),
        spec: Some(v1::ServiceSpec {
            mode: Some(v1::service_spec::Mode::Global(v1::GlobalService {})),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(reconcile_replicated(&global, &[], &[], now()), ReplicatedPlan::default());
    assert_eq!(reconcile_replicated(&service(1, None), &[other], &[], now()), plan(&[(1, 0)], &[]));
}

fn global(restart: Option<v1::RestartPolicy>, constraints: &[&str]) -> v1::Service {
    v1::Service {
        id: "svc".into(),
        spec: Some(v1::ServiceSpec {
            mode: Some(v1::service_spec::Mode::Global(v1::GlobalService {})),
            task: Some(v1::TaskSpec {
                restart,
                placement: Some(v1::Placement {
                    constraints: constraints.iter().map(|c| (*c).to_owned()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A global plan: (node, seconds from now, negative: earlier) to create, task IDs to shut down.
fn on_nodes(creates: &[(&str, i64)], shutdown: &[&str]) -> GlobalPlan {
    GlobalPlan {
        create: creates.iter().map(|(node, secs)| ((*node).to_owned(), at(*secs))).collect(),
        shutdown: shutdown.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

/// (what, service, node lines, task lines, expected)
type GlobalCase = (&'static str, v1::Service, Vec<&'static str>, Vec<&'static str>, GlobalPlan);

#[test]
fn global_table() {
    let two = vec!["n1", "n2"];
    let any5 = policy(Condition::Any, 5, 0, 0);
    let cases: Vec<GlobalCase> = vec![
        (
            "one task per eligible node; down and draining nodes get none",
            global(None, &[]),
            vec!["n1", "n2", "off down", "out drain"],
            vec![],
            on_nodes(&[("n1", 0), ("n2", 0)], &[]),
        ),
        (
            "a converged service needs nothing",
            global(None, &[]),
            two.clone(),
            vec!["t1 0 n1 running", "t2 0 n2 starting"],
            on_nodes(&[], &[]),
        ),
        (
            "a failed task is shut down and replaced on its node after the delay",
            global(any5, &[]),
            two.clone(),
            vec!["t1 0 n1 failed exit=1 age=1", "t2 0 n2 running"],
            on_nodes(&[("n1", 4)], &["t1"]),
        ),
        (
            "the replacement is planned the same on later passes, from the failure's time",
            global(any5, &[]),
            two.clone(),
            vec!["t1 0 n1 failed shutdown exit=1 age=7", "t2 0 n2 running"],
            on_nodes(&[("n1", -2)], &[]),
        ),
        (
            "no restart policy: Swarm's 5 s delay, a rejected task included",
            global(None, &[]),
            two.clone(),
            vec!["t1 0 n1 rejected", "t2 0 n2 running"],
            on_nodes(&[("n1", 5)], &["t1"]),
        ),
        (
            "condition any restarts a clean exit after the delay",
            global(any5, &[]),
            two.clone(),
            vec!["t1 0 n1 complete exit=0", "t2 0 n2 running"],
            on_nodes(&[("n1", 5)], &["t1"]),
        ),
        (
            "on-failure leaves a clean exit stopped",
            global(policy(Condition::OnFailure, 5, 0, 0), &[]),
            two.clone(),
            vec!["t1 0 n1 complete exit=0", "t2 0 n2 complete shutdown exit=0"],
            on_nodes(&[], &["t1"]),
        ),
        (
            "condition none never restarts, on later passes either",
            global(policy(Condition::None, 5, 0, 0), &[]),
            two.clone(),
            vec!["t1 0 n1 failed exit=1", "t2 0 n2 failed shutdown exit=1"],
            on_nodes(&[], &["t1"]),
        ),
        (
            "max attempts applies per node",
            global(policy(Condition::Any, 0, 1, 0), &[]),
            two.clone(),
            vec!["t1 0 n1 failed shutdown", "t2 0 n1 failed", "t3 0 n2 failed"],
            on_nodes(&[("n2", 0)], &["t2", "t3"]),
        ),
        (
            "max attempts counts only failures inside the window",
            global(policy(Condition::Any, 0, 1, 60), &[]),
            vec!["n1"],
            vec!["t1 0 n1 failed shutdown age=600", "t2 0 n1 failed shutdown age=300", "t3 0 n1 failed"],
            on_nodes(&[("n1", 0)], &["t3"]),
        ),
        (
            "a drained node's task is shut down and the node gets none",
            global(None, &[]),
            vec!["n1", "n2 drain"],
            vec!["t1 0 n1 running", "t2 0 n2 running"],
            on_nodes(&[], &["t2"]),
        ),
        (
            "a down node's task is shut down; back up, the node gets a new one once it stopped it",
            global(any5, &[]),
            vec!["n1 down", "n2"],
            vec!["t1 0 n1 running", "t2 0 n2 shutdown shutdown"],
            on_nodes(&[("n2", 0)], &["t1"]),
        ),
        (
            "a task that failed on a node now drained gets no replacement",
            global(any5, &[]),
            vec!["n1 drain"],
            vec!["t1 0 n1 failed exit=1 age=60"],
            on_nodes(&[], &["t1"]),
        ),
        (
            "a paused node keeps its task and gets no new one",
            global(None, &[]),
            vec!["n1 pause", "n2 pause"],
            vec!["t1 0 n1 running"],
            on_nodes(&[], &[]),
        ),
        (
            "a paused node's failed task is shut down and not replaced while paused",
            global(any5, &[]),
            vec!["n1 pause"],
            vec!["t1 0 n1 failed exit=1"],
            on_nodes(&[], &["t1"]),
        ),
        (
            "constraints pick the nodes; a task on a node that stopped matching is shut down",
            global(None, &["node.labels.zone==a"]),
            vec!["n1 zone=a", "n2 zone=b", "n3 zone=a"],
            vec!["t2 0 n2 running", "t3 0 n3 running"],
            on_nodes(&[("n1", 0)], &["t2"]),
        ),
        (
            "a task without a node is shut down",
            global(None, &[]),
            vec!["n1"],
            vec!["t0 0 - pending", "t1 0 n1 running"],
            on_nodes(&[], &["t0"]),
        ),
        (
            "two current tasks on one node: the older is shut down",
            global(None, &[]),
            vec!["n1"],
            vec!["t1 0 n1 running", "t2 0 n1 running"],
            on_nodes(&[], &["t1"]),
        ),
    ];
    for (what, svc, node_lines, lines, expected) in cases {
        let nodes: Vec<v1::Node> = node_lines.into_iter().map(node_line).collect();
        let mut tasks: Vec<v1::Task> = lines.into_iter().map(task).collect();
        for (i, t) in tasks.iter_mut().enumerate() {
            t.meta = Some(v1::Meta { version: i as u64 + 1, ..Default::default() });
        }
        assert_eq!(reconcile_global(&svc, &tasks, &nodes, now()), expected, "{what}");
    }
}

/// A restart delay or a status timestamp too large to add (stored before validation capped
/// them, or reported by a faulty agent) gives the latest representable time, not a panic.
#[test]
fn huge_delays_and_timestamps_saturate() {
    let latest = SystemTime::UNIX_EPOCH + LATEST_TIMESTAMP;
    let huge = Some(v1::RestartPolicy { delay: Some(shoal_api::to_duration(Duration::MAX)), ..Default::default() });
    let failed = |line: &str| {
        let mut t = task(line);
        t.meta = Some(v1::Meta { version: 1, ..Default::default() });
        t
    };
    let nodes = [node("n1", false, false)];
    let slot_1 = ReplicatedPlan { create: vec![(1, latest)], shutdown: vec!["t1".into()], ..Default::default() };
    assert_eq!(reconcile_replicated(&service(1, huge), &[failed("t1 1 n1 failed")], &nodes, now()), slot_1);

    let mut far = failed("t1 1 n1 failed");
    if let Some(ts) = far.status.as_mut().and_then(|s| s.timestamp.as_mut()) {
        (ts.seconds, ts.nanos) = (i64::MAX, i32::MAX);
    }
    let five = policy(Condition::Any, 5, 0, 0);
    assert_eq!(reconcile_replicated(&service(1, five), &[far], &nodes, now()), slot_1, "a timestamp past year 9999");

    let on_n1 = GlobalPlan { create: vec![("n1".into(), latest)], shutdown: vec!["t1".into()], ..Default::default() };
    assert_eq!(reconcile_global(&global(huge, &[]), &[failed("t1 0 n1 failed")], &nodes, now()), on_n1);

    let mut job = service(1, huge);
    if let Some(spec) = job.spec.as_mut() {
        let mode = v1::ReplicatedJob { max_concurrent: 1, total_completions: 1 };
        spec.mode = Some(v1::service_spec::Mode::ReplicatedJob(mode));
    }
    let plan = crate::jobs::reconcile_job(&job, &[failed("t1 1 n1 failed")], &nodes, now());
    assert_eq!((plan.create_slots, plan.shutdown), (vec![(1, latest)], vec!["t1".to_owned()]));
}

/// A task of `line` made `secs` after [`now`] (its creation orders a slot's tasks).
fn made(line: &str, secs: i64) -> v1::Task {
    let mut t = task(line);
    t.meta = Some(v1::Meta { created_at: Some(shoal_api::to_timestamp(at(secs))), ..Default::default() });
    t
}

/// Start-first hands a slot over: the old task runs until its replacement runs, then stops.
#[test]
fn start_first_keeps_the_old_task_until_the_new_one_runs() {
    let nodes = [node("n1", false, false)];
    let svc = service(1, None);
    let starting = [made("old 1 n1 running", -60), made("new 1 n1 starting", -1)];
    assert_eq!(reconcile_replicated(&svc, &starting, &nodes, now()), plan(&[], &[]));
    let running = [made("old 1 n1 running", -60), made("new 1 n1 running", -1)];
    assert_eq!(reconcile_replicated(&svc, &running, &nodes, now()), plan(&[], &["old"]));
    // Two older tasks (a leftover): only the newest of them waits for the hand-over.
    let three = [made("a 1 n1 running", -90), made("b 1 n1 running", -60), made("c 1 n1 preparing", -1)];
    assert_eq!(reconcile_replicated(&svc, &three, &nodes, now()), plan(&[], &["a"]));
    // A replacement that failed leaves the slot to the old task: nothing is refilled.
    let failed = [made("old 1 n1 running", -60), made("new 1 n1 failed", -1)];
    assert_eq!(reconcile_replicated(&svc, &failed, &nodes, now()), plan(&[], &["new"]));
}

/// A task told to stop is replaced only once it stopped (or cannot report any more), so a slot
/// never runs two tasks: what a stop-first update relies on.
#[test]
fn a_slot_is_refilled_only_once_its_stopped_task_is_gone() {
    let nodes = [node("n1", false, false), node("down", true, false)];
    let svc = service(1, None);
    let stopping = [made("t1 1 n1 running shutdown", -5)];
    assert_eq!(reconcile_replicated(&svc, &stopping, &nodes, now()), plan(&[], &[]));
    let stopped = [made("t1 1 n1 shutdown shutdown", -5)];
    assert_eq!(reconcile_replicated(&svc, &stopped, &nodes, now()), plan(&[(1, 0)], &[]));
    let on_down_node = [made("t1 1 down running shutdown", -5)];
    assert_eq!(reconcile_replicated(&svc, &on_down_node, &nodes, now()), plan(&[(1, 0)], &[]));
    // After a start-first hand-over the older task ended last, but the newer one is what the
    // slot waits for.
    let mut handed_over = made("old 1 n1 shutdown shutdown", -60);
    handed_over.status.as_mut().expect("status").timestamp = Some(shoal_api::to_timestamp(at(-1)));
    let after_hand_over = [handed_over, made("new 1 n1 running shutdown", -30)];
    assert_eq!(reconcile_replicated(&svc, &after_hand_over, &nodes, now()), plan(&[], &[]));
    let never_placed = [made("t1 1 - pending shutdown", -5)];
    assert_eq!(reconcile_replicated(&svc, &never_placed, &nodes, now()), plan(&[(1, 0)], &[]));
}

/// Constraint enforcement: a running task whose node no longer meets the constraints moves.
#[test]
fn tasks_on_nodes_that_no_longer_meet_the_constraints_move() {
    let nodes = [node_line("n1 zone=a"), node_line("n2 zone=b")];
    let mut svc = service(2, None);
    if let Some(task) = svc.spec.as_mut().and_then(|s| s.task.as_mut()) {
        task.placement = Some(v1::Placement { constraints: vec!["node.labels.zone==a".into()], ..Default::default() });
    }
    let tasks = [made("t1 1 n1 running", -5), made("t2 2 n2 running", -5)];
    assert_eq!(reconcile_replicated(&svc, &tasks, &nodes, now()), plan(&[(2, 0)], &["t2"]));
    let no_constraints = service(2, None);
    assert_eq!(reconcile_replicated(&no_constraints, &tasks, &nodes, now()), plan(&[], &[]));
}

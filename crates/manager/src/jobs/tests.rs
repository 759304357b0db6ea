//! Table tests of the jobs reconcile step, and a replicated job driven pass by pass to the end.

use super::*;
use shoal_api::v1::{TaskState, restart_policy::Condition};
use std::time::Duration;

use crate::testutil::{at, node_line as node, now, policy, task_line as task};

fn job(mode: v1::service_spec::Mode, restart: Option<v1::RestartPolicy>, constraints: &[&str]) -> v1::Service {
    v1::Service {
        id: "svc".into(),
        spec: Some(v1::ServiceSpec {
            mode: Some(mode),
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

fn replicated_job(max_concurrent: u64, total_completions: u64, restart: Option<v1::RestartPolicy>) -> v1::Service {
    let mode = v1::service_spec::Mode::ReplicatedJob(v1::ReplicatedJob { max_concurrent, total_completions });
    job(mode, restart, &[])
}

fn global_job(restart: Option<v1::RestartPolicy>, constraints: &[&str]) -> v1::Service {
    job(v1::service_spec::Mode::GlobalJob(v1::GlobalJob {}), restart, constraints)
}

fn iteration(mut service: v1::Service, job_iteration: u64) -> v1::Service {
    service.job_status = Some(v1::JobStatus { job_iteration, last_execution: None });
    service
}

/// Task lines as tasks, versioned in the order given (later lines are newer).
fn tasks(lines: &[&str]) -> Vec<v1::Task> {
    let mut tasks: Vec<v1::Task> = lines.iter().map(|l| task(l)).collect();
    for (i, t) in tasks.iter_mut().enumerate() {
        t.meta = Some(v1::Meta { version: i as u64 + 1, ..Default::default() });
    }
    tasks
}

/// A replicated job's plan: (slot, seconds from now) to create, task IDs to shut down.
fn slots(creates: &[(u64, i64)], shutdown: &[&str]) -> JobPlan {
    JobPlan {
        create_slots: creates.iter().map(|(slot, secs)| (*slot, at(*secs))).collect(),
        shutdown: shutdown.iter().map(|s| (*s).to_owned()).collect(),
        ..JobPlan::default()
    }
}

/// A global job's plan: (node, seconds from now) to create, task IDs to shut down.
fn on_nodes(creates: &[(&str, i64)], shutdown: &[&str]) -> JobPlan {
    JobPlan {
        create_nodes: creates.iter().map(|(node, secs)| ((*node).to_owned(), at(*secs))).collect(),
        shutdown: shutdown.iter().map(|s| (*s).to_owned()).collect(),
        ..JobPlan::default()
    }
}

#[test]
fn replicated_job_table() {
    let nodes: Vec<v1::Node> = ["n1", "n2", "gone down", "off drain"].into_iter().map(node).collect();
    let failure5 = policy(Condition::OnFailure, 5, 0, 0);
    // (what, service, tasks, expected)
    let cases: Vec<(&str, v1::Service, Vec<&str>, JobPlan)> = vec![
        ("a fresh job starts max_concurrent tasks", replicated_job(2, 5, None), vec![], slots(&[(1, 0), (2, 0)], &[])),
        (
            "max_concurrent 0 means total_completions",
            replicated_job(0, 3, None),
            vec![],
            slots(&[(1, 0), (2, 0), (3, 0)], &[]),
        ),
        (
            "max_concurrent above total_completions starts only the total",
            replicated_job(10, 2, None),
            vec![],
            slots(&[(1, 0), (2, 0)], &[]),
        ),
        (
            "pending and running tasks fill the concurrency",
            replicated_job(2, 5, None),
            vec!["t1 1 - pending", "t2 2 n1 running"],
            slots(&[], &[]),
        ),
        (
            "a completion frees room: the next fresh slot starts, the completed task stays",
            replicated_job(2, 5, None),
            vec!["t1 1 n1 complete", "t2 2 n2 running"],
            slots(&[(3, 0)], &[]),
        ),
        (
            "completed slots are not reused: fresh slots come after every used one",
            replicated_job(3, 5, None),
            vec!["t1 1 n1 complete", "t2 2 n1 complete", "t3 3 n2 running"],
            slots(&[(4, 0), (5, 0)], &[]),
        ),
        (
            "near the end only the completions still needed start",
            replicated_job(3, 4, None),
            vec!["t1 1 n1 complete", "t2 2 n1 complete", "t3 3 n2 running"],
            slots(&[(4, 0)], &[]),
        ),
        (
            "a finished job creates nothing and stops nothing",
            replicated_job(2, 3, None),
            vec!["t1 1 n1 complete", "t2 2 n2 complete", "t3 3 n1 complete"],
            slots(&[], &[]),
        ),
        (
            "a failed task is retried in its slot after the delay, counted against the concurrency",
            replicated_job(2, 4, failure5),
            vec!["t1 1 n1 failed exit=1 age=2", "t2 2 n2 running"],
            slots(&[(1, 3)], &["t1"]),
        ),
        (
            "the retry is planned the same on later passes, from the failure's time",
            replicated_job(2, 4, failure5),
            vec!["t1 1 n1 failed shutdown exit=1 age=7", "t2 2 n2 running"],
            slots(&[(1, -2)], &[]),
        ),
        (
            "once the retry exists nothing more is needed",
            replicated_job(1, 1, failure5),
            vec!["t1 1 n1 failed shutdown exit=1", "t2 1 n2 running"],
            slots(&[], &[]),
        ),
        (
            "no restart policy: on-failure with Swarm's 5 s delay",
            replicated_job(1, 1, None),
            vec!["t1 1 n1 failed exit=137"],
            slots(&[(1, 5)], &["t1"]),
        ),
        (
            "a rejected task is a failure too",
            replicated_job(1, 1, failure5),
            vec!["t1 1 n1 rejected"],
            slots(&[(1, 5)], &["t1"]),
        ),
        (
            "condition any does not rerun a completion",
            replicated_job(1, 1, policy(Condition::Any, 0, 0, 0)),
            vec!["t1 1 n1 complete"],
            slots(&[], &[]),
        ),
        (
            "condition any retries a failure like on-failure",
            replicated_job(1, 1, policy(Condition::Any, 1, 0, 0)),
            vec!["t1 1 n1 failed exit=2"],
            slots(&[(1, 1)], &["t1"]),
        ),
        (
            "condition none: the failed slot is given up, the other completions still run",
            replicated_job(1, 2, policy(Condition::None, 5, 0, 0)),
            vec!["t1 1 n1 failed exit=1"],
            slots(&[(2, 0)], &["t1"]),
        ),
        (
            "condition none: a given-up slot stays empty on later passes",
            replicated_job(1, 1, policy(Condition::None, 5, 0, 0)),
            vec!["t1 1 n1 failed shutdown exit=1"],
            slots(&[], &[]),
        ),
        (
            "max attempts 2: two retries after two failures",
            replicated_job(1, 1, policy(Condition::OnFailure, 0, 2, 0)),
            vec!["t1 1 n1 failed shutdown", "t2 1 n1 failed"],
            slots(&[(1, 0)], &["t2"]),
        ),
        (
            "max attempts 2: the third failure gives the slot up",
            replicated_job(1, 1, policy(Condition::OnFailure, 0, 2, 0)),
            vec!["t1 1 n1 failed shutdown", "t2 1 n1 failed shutdown", "t3 1 n1 failed"],
            slots(&[], &["t3"]),
        ),
        (
            "max attempts counts only failures inside the window",
            replicated_job(1, 1, policy(Condition::OnFailure, 0, 1, 60)),
            vec!["t1 1 n1 failed shutdown age=600", "t2 1 n1 failed shutdown age=300", "t3 1 n1 failed"],
            slots(&[(1, 0)], &["t3"]),
        ),
        (
            "a task on a down node is shut down and its slot retried at once",
            replicated_job(2, 2, failure5),
            vec!["t1 1 gone running", "t2 2 n1 running"],
            slots(&[(1, 0)], &["t1"]),
        ),
        (
            "a task on a draining node is shut down and its slot retried at once",
            replicated_job(1, 1, failure5),
            vec!["t1 1 off running"],
            slots(&[(1, 0)], &["t1"]),
        ),
        (
            "a task on a node no longer in the cluster is retried at once",
            replicated_job(1, 1, failure5),
            vec!["t1 1 removed running"],
            slots(&[(1, 0)], &["t1"]),
        ),
        (
            "a lost node is not an attempt: max attempts 1 is used up by the failure, not the loss",
            replicated_job(1, 1, policy(Condition::OnFailure, 5, 1, 0)),
            vec!["t1 1 n1 failed shutdown age=60", "t2 1 gone running"],
            slots(&[(1, 0)], &["t2"]),
        ),
        (
            "after a node loss the slot is retried at once on later passes too",
            replicated_job(1, 1, failure5),
            vec!["t1 1 gone running shutdown"],
            slots(&[(1, 0)], &[]),
        ),
        (
            "a completed task on a node that went down stays completed",
            replicated_job(1, 2, failure5),
            vec!["t1 1 gone complete", "t2 2 off complete"],
            slots(&[], &[]),
        ),
        (
            "a non-zero exit reported as complete is a failure",
            replicated_job(1, 1, failure5),
            vec!["t1 1 n1 complete exit=3"],
            slots(&[(1, 5)], &["t1"]),
        ),
        (
            "a slot that completed stops a second task in it",
            replicated_job(1, 1, None),
            vec!["t1 1 n1 complete", "t2 1 n2 running"],
            slots(&[], &["t2"]),
        ),
        (
            "two current tasks in one slot: the older is shut down",
            replicated_job(2, 2, None),
            vec!["t1 1 n1 running", "t2 1 n2 running", "t3 2 n1 running"],
            slots(&[], &["t1"]),
        ),
        (
            "a task without a slot is shut down",
            replicated_job(1, 1, None),
            vec!["t1 0 n1 running", "t2 1 n1 running"],
            slots(&[], &["t1"]),
        ),
    ];
    for (what, svc, lines, expected) in cases {
        assert_eq!(reconcile_job(&svc, &tasks(&lines), &nodes, now()), expected, "{what}");
    }
}

#[test]
fn only_the_current_iteration_counts() {
    let nodes = [node("n1")];
    let svc = iteration(replicated_job(2, 2, None), 3);
    let lines = [
        "old1 1 n1 complete iter=2",
        "old2 2 n1 running iter=2",
        "old3 3 n1 failed iter=2",
        "old4 4 n1 complete shutdown iter=2",
    ];
    let expected = JobPlan { iteration: 3, ..slots(&[(1, 0), (2, 0)], &["old2", "old3"]) };
    assert_eq!(reconcile_job(&svc, &tasks(&lines), &nodes, now()), expected);

    let lines = ["old1 1 n1 complete iter=2", "t1 1 n1 complete iter=3", "t2 2 n1 running iter=3"];
    let expected = JobPlan { iteration: 3, ..slots(&[], &[]) };
    assert_eq!(reconcile_job(&svc, &tasks(&lines), &nodes, now()), expected);
}

/// (what, service, node lines, task lines, expected)
type GlobalCase = (&'static str, v1::Service, Vec<&'static str>, Vec<&'static str>, JobPlan);

#[test]
fn global_job_table() {
    let three = ["n1", "n2", "n3"];
    let none5 = policy(Condition::None, 5, 0, 0);
    let cases: Vec<GlobalCase> = vec![
        (
            "a fresh global job starts one task per node",
            global_job(None, &[]),
            three.to_vec(),
            vec![],
            on_nodes(&[("n1", 0), ("n2", 0), ("n3", 0)], &[]),
        ),
        (
            "a node that completed gets nothing new, running ones are left alone",
            global_job(None, &[]),
            three.to_vec(),
            vec!["t1 0 n1 complete", "t2 0 n2 running", "t3 0 n3 complete"],
            on_nodes(&[], &[]),
        ),
        (
            "a node that joins later gets one",
            global_job(None, &[]),
            vec!["n1", "n2", "n3", "n4"],
            vec!["t1 0 n1 complete", "t2 0 n2 complete", "t3 0 n3 complete"],
            on_nodes(&[("n4", 0)], &[]),
        ),
        (
            "a drained node's task is shut down and the node gets none",
            global_job(None, &[]),
            vec!["n1", "n2 drain"],
            vec!["t1 0 n1 running", "t2 0 n2 running"],
            on_nodes(&[], &["t2"]),
        ),
        (
            "a drained node gets no task to begin with",
            global_job(None, &[]),
            vec!["n1", "n2 drain"],
            vec![],
            on_nodes(&[("n1", 0)], &[]),
        ),
        (
            "a down node's task is shut down and nothing replaces it while it is down",
            global_job(None, &[]),
            vec!["n1", "n2 down"],
            vec!["t1 0 n1 running", "t2 0 n2 running"],
            on_nodes(&[], &["t2"]),
        ),
        (
            "a node back from down first stops the task it was told to stop",
            global_job(None, &[]),
            vec!["n1", "n2"],
            vec!["t1 0 n1 complete", "t2 0 n2 running shutdown"],
            on_nodes(&[], &[]),
        ),
        (
            "then it gets a new task at once",
            global_job(None, &[]),
            vec!["n1", "n2"],
            vec!["t1 0 n1 complete", "t2 0 n2 shutdown shutdown"],
            on_nodes(&[("n2", 0)], &[]),
        ),
        (
            "a completed task on a node that went down stays completed",
            global_job(None, &[]),
            vec!["n1 down", "n2 drain"],
            vec!["t1 0 n1 complete", "t2 0 n2 complete"],
            on_nodes(&[], &[]),
        ),
        (
            "a failed task is retried on its node after the delay",
            global_job(policy(Condition::OnFailure, 5, 0, 0), &[]),
            vec!["n1", "n2"],
            vec!["t1 0 n1 failed exit=1 age=1", "t2 0 n2 complete"],
            on_nodes(&[("n1", 4)], &["t1"]),
        ),
        (
            "condition none: a failed node is given up",
            global_job(none5, &[]),
            vec!["n1", "n2"],
            vec!["t1 0 n1 failed exit=1", "t2 0 n2 failed shutdown exit=1"],
            on_nodes(&[], &["t1"]),
        ),
        (
            "max attempts applies per node",
            global_job(policy(Condition::OnFailure, 0, 1, 0), &[]),
            vec!["n1", "n2"],
            vec!["t1 0 n1 failed shutdown", "t2 0 n1 failed", "t3 0 n2 failed"],
            on_nodes(&[("n2", 0)], &["t2", "t3"]),
        ),
        (
            "a failed task's node that was drained gets no retry",
            global_job(None, &[]),
            vec!["n1 drain"],
            vec!["t1 0 n1 failed exit=1 age=60"],
            on_nodes(&[], &["t1"]),
        ),
        (
            "a paused node keeps its task and gets no new one",
            global_job(None, &[]),
            vec!["n1 pause", "n2 pause"],
            vec!["t1 0 n1 running"],
            on_nodes(&[], &[]),
        ),
        (
            "constraints pick the nodes, and a task on a node that stopped matching is shut down",
            global_job(None, &["node.labels.zone==a"]),
            vec!["n1 zone=a", "n2 zone=b", "n3 zone=a"],
            vec!["t2 0 n2 running", "t3 0 n3 running"],
            on_nodes(&[("n1", 0)], &["t2"]),
        ),
        (
            "a task without a node is shut down",
            global_job(None, &[]),
            vec!["n1"],
            vec!["t0 0 - pending", "t1 0 n1 running"],
            on_nodes(&[], &["t0"]),
        ),
    ];
    for (what, svc, node_lines, lines, expected) in cases {
        let nodes: Vec<v1::Node> = node_lines.into_iter().map(node).collect();
        assert_eq!(reconcile_job(&svc, &tasks(&lines), &nodes, now()), expected, "{what}");
    }
}

#[test]
fn global_job_new_iteration_runs_again_everywhere() {
    let nodes = [node("n1"), node("n2")];
    let svc = iteration(global_job(None, &[]), 1);
    let lines = ["t1 0 n1 complete iter=0", "t2 0 n2 running iter=0"];
    let expected = JobPlan { iteration: 1, ..on_nodes(&[("n1", 0), ("n2", 0)], &["t2"]) };
    assert_eq!(reconcile_job(&svc, &tasks(&lines), &nodes, now()), expected);
}

#[test]
fn progress_table() {
    let nodes: Vec<v1::Node> = ["n1", "n2", "n3", "gone down"].into_iter().map(node).collect();
    let none = policy(Condition::None, 5, 0, 0);
    let progress = |running, completed, failed, total| JobProgress { running, completed, failed, total };
    // (what, service, tasks, expected, finished)
    let cases: Vec<(&str, v1::Service, Vec<&str>, JobProgress, bool)> = vec![
        ("a fresh replicated job", replicated_job(2, 5, None), vec![], progress(0, 0, 0, 5), false),
        (
            "running and completed slots; history of a retried slot counts once",
            replicated_job(2, 5, None),
            vec!["t1 1 n1 complete", "t2 2 n1 failed shutdown", "t3 2 n2 running", "t4 3 n3 starting"],
            progress(2, 1, 0, 5),
            false,
        ),
        (
            "a slot waiting for its retry is not finished",
            replicated_job(1, 1, None),
            vec!["t1 1 n1 failed shutdown"],
            progress(0, 0, 0, 1),
            false,
        ),
        (
            "all completed",
            replicated_job(2, 2, None),
            vec!["t1 1 n1 complete", "t2 2 gone complete"],
            progress(0, 2, 0, 2),
            true,
        ),
        (
            "finished with a slot given up",
            replicated_job(2, 2, none),
            vec!["t1 1 n1 complete", "t2 2 n2 failed shutdown"],
            progress(0, 1, 1, 2),
            true,
        ),
        (
            "a global job: eligible nodes plus a down node that completed",
            global_job(None, &[]),
            vec!["t1 0 n1 complete", "t2 0 n2 running", "t4 0 gone complete"],
            progress(1, 2, 0, 4),
            false,
        ),
        (
            "a global job: a node that went down mid-task leaves the count until it is back",
            global_job(None, &[]),
            vec!["t1 0 n1 complete", "t2 0 n2 complete", "t3 0 n3 complete", "t4 0 gone running"],
            progress(0, 3, 0, 3),
            true,
        ),
        (
            "a global job done everywhere, one node given up",
            global_job(none, &[]),
            vec!["t1 0 n1 complete", "t2 0 n2 complete", "t3 0 n3 failed"],
            progress(0, 2, 1, 3),
            true,
        ),
    ];
    for (what, svc, lines, expected, finished) in cases {
        let got = job_progress(&svc, &tasks(&lines), &nodes, now());
        assert_eq!(got, Some(expected), "{what}");
        assert_eq!(expected.finished(), finished, "{what}: finished");
    }
}

#[test]
fn other_services_and_modes_are_ignored() {
    let nodes = [node("n1")];
    let mut other = task("x1 1 n1 running");
    other.service_id = "other".into();
    let replicated = job(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 1 }), None, &[]);
    let global = job(v1::service_spec::Mode::Global(v1::GlobalService {}), None, &[]);
    for service in [&replicated, &global] {
        assert_eq!(reconcile_job(service, &[], &nodes, now()), JobPlan::default());
        assert_eq!(job_progress(service, &[], &nodes, now()), None);
    }
    let svc = replicated_job(1, 1, None);
    assert_eq!(reconcile_job(&svc, &[other], &nodes, now()), slots(&[(1, 0)], &[]));
}

/// A replicated job run pass by pass the way the leader applies plans: tasks start when their
/// time comes, run for a pass and complete, except slot 2's first task, which fails. The
/// concurrency limit holds at every pass, every slot completes once, and then nothing more.
#[test]
fn a_replicated_job_runs_to_the_end() {
    let nodes = [node("n1")];
    let svc = replicated_job(2, 5, policy(Condition::OnFailure, 3, 0, 0));
    let mut tasks: Vec<v1::Task> = Vec::new();
    let mut clock = now();
    for pass in 0..30 {
        let plan = reconcile_job(&svc, &tasks, &nodes, clock);
        for t in tasks.iter_mut().filter(|t| plan.shutdown.contains(&t.id)) {
            t.desired_state = TaskState::Shutdown as i32;
        }
        for &(slot, _) in plan.create_slots.iter().filter(|(_, not_before)| *not_before <= clock) {
            let id = format!("p{pass}s{slot}");
            let mut t = task(&format!("{id} {slot} n1 pending"));
            t.meta = Some(v1::Meta { version: tasks.len() as u64 + 1, ..Default::default() });
            t.status.get_or_insert_default().timestamp = Some(shoal_api::to_timestamp(clock));
            tasks.push(t);
        }
        let live = tasks.iter().filter(|t| current(t) && !t.observed_state().is_terminal()).count();
        assert!(live <= 2, "pass {pass}: {live} tasks in flight, max_concurrent is 2");
        // Everything that was running ends; everything pending starts running.
        clock += Duration::from_secs(1);
        let first_of_slot_2 = tasks.iter().position(|t| t.slot == 2);
        for (i, t) in tasks.iter_mut().enumerate() {
            if !current(t) || t.observed_state().is_terminal() {
                continue;
            }
            let status = t.status.get_or_insert_default();
            status.timestamp = Some(shoal_api::to_timestamp(clock));
            if status.state == TaskState::Running as i32 {
                let fails = Some(i) == first_of_slot_2;
                status.state = if fails { TaskState::Failed } else { TaskState::Complete } as i32;
                status.container.get_or_insert_default().exit_code = i32::from(fails);
            } else {
                status.state = TaskState::Running as i32;
            }
        }
    }
    let progress = job_progress(&svc, &tasks, &nodes, clock);
    assert_eq!(progress, Some(JobProgress { running: 0, completed: 5, failed: 0, total: 5 }));
    let mut completed: Vec<u64> = tasks.iter().filter(|t| succeeded(t)).map(|t| t.slot).collect();
    completed.sort_unstable();
    assert_eq!(completed, [1, 2, 3, 4, 5]);
    // Slot 2 ran twice, the other slots once.
    assert_eq!(tasks.len(), 6);
    assert_eq!(reconcile_job(&svc, &tasks, &nodes, clock), JobPlan::default());
}

//! The leader's passes on a one-member store: the control-plane scenarios without
//! agents (task states are advanced by hand where an agent would report them).

use super::*;
use crate::orchestrator::live;
use crate::testutil::store;

fn node(id: &str, labels: &[(&str, &str)]) -> v1::Node {
    v1::Node {
        id: id.into(),
        role: v1::NodeRole::Worker as i32,
        spec: Some(v1::NodeSpec {
            annotations: Some(v1::Annotations {
                name: String::new(),
                labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            }),
            ..Default::default()
        }),
        description: Some(v1::NodeDescription {
            hostname: id.into(),
            platform: Some(v1::Platform { architecture: "amd64".into(), os: "linux".into() }),
            resources: Some(v1::Resources { nano_cpus: 2_000_000_000, memory_bytes: 8 << 30, ..Default::default() }),
            ..Default::default()
        }),
        status: Some(v1::NodeStatus { state: v1::node_status::State::Ready as i32, ..Default::default() }),
        ..Default::default()
    }
}

fn service(name: &str, mode: v1::service_spec::Mode, constraints: &[&str], restart_delay_s: u64) -> v1::Service {
    v1::Service {
        id: format!("id-{name}"),
        spec_version: 1,
        spec: Some(v1::ServiceSpec {
            annotations: Some(v1::Annotations { name: name.into(), ..Default::default() }),
            mode: Some(mode),
            task: Some(v1::TaskSpec {
                container: Some(v1::ContainerSpec { image: "shoal-test/sleeper".into(), ..Default::default() }),
                placement: Some(v1::Placement {
                    constraints: constraints.iter().map(|c| (*c).to_owned()).collect(),
                    ..Default::default()
                }),
                restart: Some(v1::RestartPolicy {
                    delay: Some(shoal_api::to_duration(Duration::from_secs(restart_delay_s))),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn replicated(n: u64) -> v1::service_spec::Mode {
    v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: n })
}

async fn leader(tag: &str, nodes: &[v1::Node]) -> (Leader, ObjectStore, crate::testutil::TempDir) {
    let (objects, dir) = store(tag).await;
    for n in nodes {
        objects.create(n.clone()).await.expect("node");
    }
    let leader =
        Leader::new(objects.clone(), Dispatcher::new(objects.clone(), Duration::from_secs(1)), DEFAULT_TASK_HISTORY);
    (leader, objects, dir)
}

async fn live_tasks(objects: &ObjectStore, service: &str) -> Vec<v1::Task> {
    let mut tasks: Vec<v1::Task> = objects
        .list::<v1::Task>()
        .await
        .expect("tasks")
        .into_iter()
        .filter(|t| t.service_id == service && live(t))
        .collect();
    tasks.sort_by_key(|t| t.slot);
    tasks
}

fn per_node(tasks: &[v1::Task]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for t in tasks {
        *counts.entry(t.node_id.clone()).or_insert(0) += 1;
    }
    counts
}

async fn set_replicas(objects: &ObjectStore, id: &str, n: u64) {
    let mut svc: v1::Service = objects.get(id).await.expect("service");
    svc.spec.as_mut().expect("spec").mode = Some(replicated(n));
    objects.update(svc).await.expect("scale");
}

#[tokio::test]
async fn replicas_spread_scale_and_move_off_lost_nodes() {
    let nodes: Vec<v1::Node> = (1..=5).map(|i| node(&format!("n{i}"), &[])).collect();
    let (leader, objects, _dir) = leader("leader-spread", &nodes).await;
    objects.create(service("web", replicated(10), &[], 5)).await.expect("service");
    let now = SystemTime::now();

    tracing::info!("--- 10 replicas on 5 nodes: 2 each");
    let report = leader.pass(now).await.expect("pass");
    assert_eq!((report.created, report.assigned), (10, 10));
    let tasks = live_tasks(&objects, "id-web").await;
    assert_eq!(per_node(&tasks).values().copied().collect::<Vec<_>>(), [2, 2, 2, 2, 2]);
    assert_eq!(tasks[0].annotations.as_ref().map(|a| a.name.as_str()), Some("web.1"));
    assert_eq!(leader.pass(now).await.expect("second pass"), PassReport::default(), "converged: nothing to do");

    tracing::info!("--- scale 10 -> 3 keeps slots 1-3");
    set_replicas(&objects, "id-web", 3).await;
    let report = leader.pass(now).await.expect("pass");
    assert_eq!(report.stopped, 7);
    let slots: Vec<u64> = live_tasks(&objects, "id-web").await.iter().map(|t| t.slot).collect();
    assert_eq!(slots, [1, 2, 3]);

    tracing::info!("--- a node goes down: its tasks run elsewhere at once");
    let before = live_tasks(&objects, "id-web").await;
    let victim = before[0].node_id.clone();
    let on_victim = before.iter().filter(|t| t.node_id == victim).count();
    let mut down: v1::Node = objects.get(&victim).await.expect("node");
    down.status.as_mut().expect("status").state = v1::node_status::State::Down as i32;
    objects.update(down).await.expect("down");
    let report = leader.pass(now).await.expect("pass");
    assert_eq!((report.stopped, report.created, report.assigned), (on_victim, on_victim, on_victim));
    let tasks = live_tasks(&objects, "id-web").await;
    assert_eq!(tasks.len(), 3);
    assert!(tasks.iter().all(|t| t.node_id != victim), "nothing left on the lost node");
}

#[tokio::test]
async fn failed_tasks_wait_for_the_restart_delay_and_history_is_reaped() {
    let (leader, objects, _dir) = leader("leader-restart", &[node("n1", &[])]).await;
    objects.create(service("job", replicated(1), &[], 5)).await.expect("service");
    let t0 = SystemTime::now();
    leader.pass(t0).await.expect("pass");

    for round in 0..7u64 {
        let mut task = live_tasks(&objects, "id-job").await.pop().expect("a live task");
        let failed_at = t0 + Duration::from_secs(10 * round);
        task.status = Some(v1::TaskStatus {
            state: TaskState::Failed as i32,
            err: "task: non-zero exit (137)".into(),
            timestamp: Some(shoal_api::to_timestamp(failed_at)),
            ..Default::default()
        });
        objects.update(task).await.expect("fail");
        let report = leader.pass(failed_at + Duration::from_secs(1)).await.expect("pass within the delay");
        assert_eq!((report.stopped, report.created), (1, 0), "round {round}: shut down, not yet replaced");
        let report = leader.pass(failed_at + Duration::from_secs(6)).await.expect("pass after the delay");
        assert_eq!(report.created, 1, "round {round}: replaced after 5 s");
    }
    let all = objects.list::<v1::Task>().await.expect("tasks");
    let finished = all.iter().filter(|t| t.observed_state().is_terminal()).count();
    assert_eq!(finished, DEFAULT_TASK_HISTORY, "history beyond 5 tasks per slot is reaped");
    let failed = all.iter().find(|t| t.observed_state() == TaskState::Failed).expect("a failed task");
    assert_eq!(failed.status.as_ref().map(|s| s.err.as_str()), Some("task: non-zero exit (137)"));
}

/// Fails the service's one live task at `at`, as its agent would report it.
async fn fail_live_task(objects: &ObjectStore, service: &str, at: SystemTime) {
    let task = live_tasks(objects, service).await.pop().expect("a live task");
    report(objects, &task, TaskState::Failed, at).await;
}

#[tokio::test]
async fn max_attempts_beyond_the_history_limit_still_end_the_restarts() {
    let (leader, objects, _dir) = leader("leader-attempts", &[node("n1", &[])]).await;
    let mut svc = service("flaky", replicated(1), &[], 5);
    let max_attempts = DEFAULT_TASK_HISTORY as u64 + 2;
    if let Some(restart) = svc.spec.as_mut().and_then(|s| s.task.as_mut()).and_then(|t| t.restart.as_mut()) {
        restart.max_attempts = max_attempts;
    }
    objects.create(svc).await.expect("service");
    let t0 = SystemTime::now();
    leader.pass(t0).await.expect("pass");

    tracing::info!("--- the first run and {max_attempts} restarts fail; history is reaped meanwhile");
    let mut clock = t0;
    for run in 0..=max_attempts {
        clock += Duration::from_secs(10);
        fail_live_task(&objects, "id-flaky", clock).await;
        leader.pass(clock).await.expect("pass: shut down");
        let report = leader.pass(clock + Duration::from_secs(6)).await.expect("pass after the delay");
        let expected = usize::from(run < max_attempts);
        assert_eq!(report.created, expected, "run {run}: restarted while attempts are left");
    }
    tracing::info!("--- attempts used up: no restart on later passes, though reaping ran");
    for later in 1..=3 {
        let report = leader.pass(clock + Duration::from_secs(60 * later)).await.expect("pass");
        assert_eq!(report.created, 0, "pass {later}: the slot stays given up");
    }
    let finished = objects.list::<v1::Task>().await.expect("tasks").len();
    assert_eq!(finished, max_attempts as usize + 1, "every counted attempt is kept, beyond the 5-task limit");
}

#[tokio::test]
async fn impossible_constraints_leave_tasks_pending_with_the_reason() {
    let (leader, objects, _dir) = leader("leader-pending", &[node("n1", &[]), node("n2", &[])]).await;
    objects.create(service("nowhere", replicated(1), &["node.labels.zone==mars"], 5)).await.expect("service");
    let report = leader.pass(SystemTime::now()).await.expect("pass");
    assert_eq!((report.created, report.unplaced), (1, 1));
    let task = live_tasks(&objects, "id-nowhere").await.pop().expect("task");
    assert_eq!(task.node_id, "");
    assert_eq!(task.status.as_ref().map(|s| s.state), Some(TaskState::Pending as i32));
    let err = task.status.map(|s| s.err).unwrap_or_default();
    assert_eq!(err, "no suitable node (scheduling constraints not satisfied on 2 nodes)");
}

#[tokio::test]
async fn global_services_follow_nodes() {
    let (leader, objects, _dir) = leader("leader-global", &[node("n1", &[]), node("n2", &[])]).await;
    objects.create(service("agent", v1::service_spec::Mode::Global(v1::GlobalService {}), &[], 5)).await.expect("svc");
    let now = SystemTime::now();
    assert_eq!(leader.pass(now).await.expect("pass").created, 2);
    let on: Vec<String> = live_tasks(&objects, "id-agent").await.iter().map(|t| t.node_id.clone()).collect();
    assert_eq!(on.iter().collect::<HashSet<_>>(), ["n1".to_owned(), "n2".to_owned()].iter().collect());

    tracing::info!("--- a node joins later, another is drained");
    objects.create(node("n3", &[])).await.expect("n3");
    let mut n1: v1::Node = objects.get("n1").await.expect("n1");
    n1.spec.as_mut().expect("spec").availability = v1::NodeAvailability::Drain as i32;
    objects.update(n1).await.expect("drain");
    let report = leader.pass(now).await.expect("pass");
    assert_eq!((report.created, report.stopped), (1, 1));
    let mut on: Vec<String> = live_tasks(&objects, "id-agent").await.iter().map(|t| t.node_id.clone()).collect();
    on.sort();
    assert_eq!(on, ["n2", "n3"]);
}

#[tokio::test]
async fn global_tasks_that_end_follow_the_restart_policy() {
    let (leader, objects, _dir) = leader("leader-global-restart", &[node("n1", &[]), node("n2", &[])]).await;
    let mut svc = service("agent", v1::service_spec::Mode::Global(v1::GlobalService {}), &[], 5);
    if let Some(restart) = svc.spec.as_mut().and_then(|s| s.task.as_mut()).and_then(|t| t.restart.as_mut()) {
        restart.condition = v1::restart_policy::Condition::OnFailure as i32;
    }
    objects.create(svc).await.expect("service");
    let now = SystemTime::now();
    assert_eq!(leader.pass(now).await.expect("pass").created, 2);
    let tasks = live_tasks(&objects, "id-agent").await;
    let (on_n1, on_n2): (Vec<_>, Vec<_>) = tasks.iter().partition(|t| t.node_id == "n1");

    tracing::info!("--- n1's task exits 0: on-failure stops it and starts no other, now or later");
    report(&objects, on_n1[0], TaskState::Complete, now).await;
    let report_1 = leader.pass(now).await.expect("pass");
    assert_eq!((report_1.stopped, report_1.created), (1, 0));
    let done: v1::Task = objects.get(&on_n1[0].id).await.expect("task");
    assert_eq!(done.desired(), TaskState::Shutdown, "the agent is told to forget it");
    let later = now + Duration::from_secs(60);
    assert_eq!(leader.pass(later).await.expect("pass"), PassReport::default(), "nothing more for n1");

    tracing::info!("--- n2's task fails: stopped, and replaced on n2 after the restart delay");
    report(&objects, on_n2[0], TaskState::Failed, later).await;
    let held = leader.pass(later).await.expect("pass");
    assert_eq!((held.stopped, held.created, held.next_due), (1, 0, Some(later + Duration::from_secs(5))));
    let replaced = leader.pass(later + Duration::from_secs(6)).await.expect("pass");
    assert_eq!(replaced.created, 1);
    let on: Vec<String> = live_tasks(&objects, "id-agent").await.iter().map(|t| t.node_id.clone()).collect();
    assert_eq!(on, ["n2"]);
}

#[tokio::test]
async fn removed_services_take_their_tasks_and_pause_places_nothing_new() {
    let (leader, objects, _dir) = leader("leader-remove", &[node("n1", &[]), node("n2", &[])]).await;
    let svc = objects.create(service("web", replicated(2), &[], 5)).await.expect("service");
    let now = SystemTime::now();
    leader.pass(now).await.expect("pass");

    tracing::info!("--- pause n2: existing tasks stay, new ones go to n1");
    let mut n2: v1::Node = objects.get("n2").await.expect("n2");
    n2.spec.as_mut().expect("spec").availability = v1::NodeAvailability::Pause as i32;
    objects.update(n2).await.expect("pause");
    set_replicas(&objects, "id-web", 4).await;
    leader.pass(now).await.expect("pass");
    let counts = per_node(&live_tasks(&objects, "id-web").await);
    assert_eq!(counts.get("n2"), Some(&1), "the paused node keeps its task and gets no new one");
    assert_eq!(counts.get("n1"), Some(&3));

    tracing::info!("--- remove the service: its tasks are removed, then reaped once stopped");
    let current: v1::Service = objects.get(&svc.id).await.expect("service");
    objects.delete::<v1::Service>(&svc.id, current.version()).await.expect("delete");
    let report = leader.pass(now).await.expect("pass");
    assert_eq!(report.stopped, 4);
    for mut task in objects.list::<v1::Task>().await.expect("tasks") {
        task.status = Some(v1::TaskStatus { state: TaskState::Shutdown as i32, ..Default::default() });
        objects.update(task).await.expect("agent reports shutdown");
    }
    assert_eq!(leader.pass(now).await.expect("pass").reaped, 4);
    assert!(objects.list::<v1::Task>().await.expect("tasks").is_empty());
}

/// Sets a task's observed state as its agent would report it.
async fn report(objects: &ObjectStore, task: &v1::Task, state: TaskState, at: SystemTime) {
    let mut task: v1::Task = objects.get(&task.id).await.expect("task");
    task.status = Some(v1::TaskStatus {
        state: state as i32,
        timestamp: Some(shoal_api::to_timestamp(at)),
        ..Default::default()
    });
    objects.update(task).await.expect("report");
}

#[tokio::test]
async fn jobs_run_to_completion_within_their_concurrency() {
    let nodes: Vec<v1::Node> = (1..=3).map(|i| node(&format!("n{i}"), &[])).collect();
    let (leader, objects, _dir) = leader("leader-jobs", &nodes).await;
    let job = v1::service_spec::Mode::ReplicatedJob(v1::ReplicatedJob { max_concurrent: 2, total_completions: 3 });
    objects.create(service("batch", job, &[], 5)).await.expect("job");
    let now = SystemTime::now();

    tracing::info!("--- 3 completions, 2 at a time: two tasks start");
    let report_1 = leader.pass(now).await.expect("pass");
    assert_eq!((report_1.created, report_1.assigned), (2, 2));
    let first = live_tasks(&objects, "id-batch").await;
    assert_eq!(first.iter().map(|t| t.slot).collect::<Vec<_>>(), [1, 2]);

    tracing::info!("--- one completes: it is told to stop (its node forgets it) and the third starts");
    report(&objects, &first[0], TaskState::Complete, now).await;
    let report_2 = leader.pass(now).await.expect("pass");
    assert_eq!((report_2.stopped, report_2.created), (1, 1));
    let done: v1::Task = objects.get(&first[0].id).await.expect("done");
    assert_eq!((done.observed_state(), done.desired()), (TaskState::Complete, TaskState::Shutdown));

    tracing::info!("--- one fails: retried in its slot after the delay, then everything completes");
    report(&objects, &first[1], TaskState::Failed, now).await;
    let held = leader.pass(now).await.expect("pass");
    assert_eq!((held.stopped, held.created), (1, 0));
    assert_eq!(held.next_due, Some(now + Duration::from_secs(5)), "the loop knows when to come back");
    let later = now + Duration::from_secs(6);
    let retried = leader.pass(later).await.expect("pass");
    assert_eq!(retried.created, 1);
    for task in live_tasks(&objects, "id-batch").await {
        report(&objects, &task, TaskState::Complete, later).await;
    }
    leader.pass(later).await.expect("pass");
    let finished = leader.pass(later).await.expect("pass");
    assert_eq!(finished, PassReport::default(), "done: nothing more to run");
    let all: Vec<v1::Task> = objects.list().await.expect("tasks");
    let mut completed: Vec<u64> =
        all.iter().filter(|t| t.observed_state() == TaskState::Complete).map(|t| t.slot).collect();
    completed.sort_unstable();
    assert_eq!(completed, [1, 2, 3]);

    tracing::info!("--- a global job runs once on every node");
    objects.create(service("once", v1::service_spec::Mode::GlobalJob(v1::GlobalJob {}), &[], 5)).await.expect("job");
    let report_g = leader.pass(later).await.expect("pass");
    assert_eq!(report_g.created, 3);
    for task in live_tasks(&objects, "id-once").await {
        report(&objects, &task, TaskState::Complete, later).await;
    }
    leader.pass(later).await.expect("pass");
    assert_eq!(leader.pass(later).await.expect("pass").created, 0, "completed nodes get no other");
}

#[tokio::test]
async fn roles_follow_promotions_and_demotions() {
    let mut promoted = node("p", &[]);
    promoted.spec.get_or_insert_with(Default::default).desired_role = v1::NodeRole::Manager as i32;
    let mut demoted = node("d", &[]);
    demoted.role = v1::NodeRole::Manager as i32;
    // A manager whose Raft member is already gone (its removal committed before a failover).
    demoted.manager_status =
        Some(v1::ManagerStatus { raft_id: 999, addr: "192.0.2.19:2377".into(), ..Default::default() });
    // The leader itself, demoted, alone: it cannot hand over, stays a manager, and the nodes
    // listed after it still have their roles changed.
    let mut own = node("a-leader", &[]);
    own.role = v1::NodeRole::Manager as i32;
    let (leader, objects, _dir) = leader("leader-roles", &[own, promoted, demoted, node("w", &[])]).await;
    let raft_id = objects.store().id();
    let mut own: v1::Node = objects.get("a-leader").await.expect("own node");
    own.manager_status = Some(v1::ManagerStatus { raft_id, addr: "mem://m1".into(), ..Default::default() });
    objects.update(own).await.expect("own manager status");

    leader.reconcile_roles().await.expect("reconcile");
    let own: v1::Node = objects.get("a-leader").await.expect("own node");
    assert_eq!(own.role, v1::NodeRole::Manager as i32, "no other manager to hand over to");
    assert!(objects.store().is_leader());
    let p: v1::Node = objects.get("p").await.expect("p");
    assert_eq!(p.role, v1::NodeRole::Manager as i32, "promoted: the CA now issues it a manager certificate");
    let d: v1::Node = objects.get("d").await.expect("d");
    assert_eq!((d.role, d.manager_status), (v1::NodeRole::Worker as i32, None), "demoted: a worker, no manager status");
    let w: v1::Node = objects.get("w").await.expect("w");
    assert_eq!(w.role, v1::NodeRole::Worker as i32);
    let before = objects.store().revision();
    leader.reconcile_roles().await.expect("reconcile again");
    assert_eq!(objects.store().revision(), before, "nothing more to change while the leader cannot hand over");
}

fn overlay(name: &str, subnet: &str, ingress: bool) -> v1::Network {
    v1::Network {
        id: format!("id-{name}"),
        spec: Some(v1::NetworkSpec {
            annotations: Some(v1::Annotations { name: name.into(), ..Default::default() }),
            driver: "overlay".into(),
            ingress,
            ipam: Some(v1::IpamConfig { subnet: subnet.into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn networks_services_nodes_and_tasks_are_allocated_before_tasks_are_scheduled() {
    let nodes: Vec<v1::Node> = (1..=2).map(|i| node(&format!("n{i}"), &[])).collect();
    let (leader, objects, _dir) = leader("leader-alloc", &nodes).await;
    objects.create(overlay("ingress", "198.18.0.0/24", true)).await.expect("ingress");
    objects.create(overlay("front", "", false)).await.expect("front");
    let mut web = service("web", replicated(2), &[], 0);
    if let Some(spec) = web.spec.as_mut() {
        spec.networks = vec![v1::NetworkAttachmentConfig { target: "id-front".into(), aliases: vec![] }];
        spec.endpoint = Some(v1::EndpointSpec {
            ports: vec![v1::PortConfig { target_port: 80, published_port: 8080, ..Default::default() }],
            ..Default::default()
        });
    }
    objects.create(web).await.expect("service");

    let report = leader.pass(SystemTime::now()).await.expect("pass");
    assert_eq!((report.created, report.assigned), (2, 2));
    let front: v1::Network = objects.get("id-front").await.expect("front");
    let allocation = front.allocation.expect("front allocated");
    // Swarm's default pool: the first /24 of 10.0.0.0/8, VNI after ingress's.
    assert_eq!((allocation.subnet.as_str(), allocation.vni), ("10.0.0.0/24", 4097));
    let service: v1::Service = objects.get("id-web").await.expect("service");
    let endpoint = service.endpoint.expect("endpoint");
    let vips: Vec<&str> = endpoint.virtual_ips.iter().map(|v| v.addr.as_str()).collect();
    // Services are allocated before nodes' ingress sandboxes, and those before tasks.
    assert_eq!(vips, ["10.0.0.2/24", "198.18.0.2/24"]);
    for n in ["n1", "n2"] {
        let node: v1::Node = objects.get(n).await.expect("node");
        assert!(node.ingress.is_some(), "{n} has an ingress sandbox address");
    }
    let tasks = live_tasks(&objects, "id-web").await;
    for task in &tasks {
        assert!(!task.node_id.is_empty(), "scheduled in the same pass");
        let nets: Vec<&str> = task.networks.iter().filter_map(|a| a.network.as_ref()).map(|n| n.id.as_str()).collect();
        assert_eq!(nets, ["id-front", "id-ingress"]);
        assert_eq!(task.endpoint.as_ref().map(|e| e.ports[0].published_port), Some(8080));
    }
    let mut all: Vec<String> = tasks.iter().flat_map(|t| t.networks.iter().flat_map(|a| a.addresses.clone())).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "no address twice");
    assert_eq!(leader.pass(SystemTime::now()).await.expect("again"), PassReport::default(), "converged");
}

#[tokio::test]
async fn a_task_that_cannot_get_an_address_stays_pending_with_the_reason() {
    let nodes = vec![node("n1", &[])];
    let (leader, objects, _dir) = leader("leader-alloc-full", &nodes).await;
    // A /30 has two usable addresses after the gateway: one VIP and one task.
    objects.create(overlay("tiny", "198.18.0.0/30", false)).await.expect("tiny");
    let mut svc = service("web", replicated(2), &[], 0);
    if let Some(spec) = svc.spec.as_mut() {
        spec.networks = vec![v1::NetworkAttachmentConfig { target: "id-tiny".into(), aliases: vec![] }];
    }
    objects.create(svc).await.expect("service");
    let report = leader.pass(SystemTime::now()).await.expect("pass");
    assert_eq!((report.created, report.assigned), (2, 0));
    let tasks = live_tasks(&objects, "id-web").await;
    let errors: Vec<&str> = tasks.iter().map(|t| t.status.as_ref().map_or("", |s| s.err.as_str())).collect();
    assert!(
        errors.iter().all(|e| e.starts_with("network allocation failed: network tiny has no free address left in 198.18.0.0/30")),
        "{errors:?}"
    );
    // (The VIP took .2: no task address is left at all in this /30.)
    assert!(tasks.iter().all(|t| t.node_id.is_empty() && t.observed_state() == TaskState::Pending));
}

#[tokio::test]
async fn a_deposed_leader_cannot_write_what_it_decided() {
    let nodes = vec![node("n1", &[])];
    let (leader, objects, _dir) = leader("leader-fence", &nodes).await;
    leader.take_office().await.expect("office");
    objects.create(service("web", replicated(1), &[], 0)).await.expect("service");
    // Another leader takes office (the fence key moves) while this one still runs passes.
    let other = Leader::new(objects.clone(), Dispatcher::new(objects.clone(), Duration::from_secs(1)), 5);
    other.take_office().await.expect("other's office");
    let err = leader.pass(SystemTime::now()).await.expect_err("fenced");
    assert!(matches!(err, ObjectError::Fenced { .. }), "{err}");
    assert!(live_tasks(&objects, "id-web").await.is_empty(), "nothing written");
    let report = other.pass(SystemTime::now()).await.expect("the new leader decides");
    assert_eq!(report.created, 1);
}

#[tokio::test]
async fn global_tasks_get_addresses_too_and_wait_on_their_node_without_them() {
    let nodes: Vec<v1::Node> = (1..=2).map(|i| node(&format!("n{i}"), &[])).collect();
    let (leader, objects, _dir) = leader("leader-alloc-global", &nodes).await;
    objects.create(overlay("front", "198.18.1.0/24", false)).await.expect("front");
    // /29: five host addresses after the gateway, .2–.6.
    objects.create(overlay("small", "198.18.2.0/29", false)).await.expect("small");
    let on = |name: &str, network: &str| {
        let mut s = service(name, v1::service_spec::Mode::Global(v1::GlobalService {}), &[], 0);
        if let Some(spec) = s.spec.as_mut() {
            spec.networks = vec![v1::NetworkAttachmentConfig { target: format!("id-{network}"), aliases: vec![] }];
        }
        s
    };
    objects.create(on("probe", "front")).await.expect("probe");
    leader.pass(SystemTime::now()).await.expect("pass");
    let probes = live_tasks(&objects, "id-probe").await;
    assert_eq!(probes.len(), 2);
    for task in &probes {
        assert_eq!(task.observed_state(), TaskState::Assigned, "made on its node");
        assert_eq!(task.networks.len(), 1, "a global task has its address before it reaches its node");
    }
    // Three services of two tasks each on small: not all of them get an address.
    for name in ["a", "b", "c"] {
        objects.create(on(name, "small")).await.expect("service");
    }
    leader.pass(SystemTime::now()).await.expect("pass");
    let mut waiting = 0;
    for name in ["a", "b", "c"] {
        for task in live_tasks(&objects, &format!("id-{name}")).await {
            if task.networks.is_empty() {
                waiting += 1;
                assert_eq!(task.observed_state(), TaskState::Pending, "held back, on its node");
                assert!(!task.node_id.is_empty());
                let err = task.status.as_ref().map(|s| s.err.clone()).unwrap_or_default();
                assert!(err.contains("has no free address left"), "{err}");
            }
        }
    }
    // Three VIPs took .2–.4 of small's five host addresses: two are left for six tasks.
    assert_eq!(waiting, 4);
}

#[tokio::test]
async fn two_tasks_needing_one_host_port_never_share_a_node() {
    let nodes: Vec<v1::Node> = (1..=2).map(|i| node(&format!("n{i}"), &[])).collect();
    let (leader, objects, _dir) = leader("leader-host-ports", &nodes).await;
    let mut pinned = service("pinned", replicated(3), &[], 0);
    if let Some(spec) = pinned.spec.as_mut() {
        spec.endpoint = Some(v1::EndpointSpec {
            ports: vec![v1::PortConfig {
                published_port: 8080,
                target_port: 80,
                publish_mode: v1::port_config::PublishMode::Host as i32,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    objects.create(pinned).await.expect("service");
    let report = leader.pass(SystemTime::now()).await.expect("pass");
    assert_eq!((report.created, report.assigned, report.unplaced), (3, 2, 1));
    let tasks = live_tasks(&objects, "id-pinned").await;
    assert_eq!(per_node(&tasks).get(""), Some(&1), "the third has nowhere to go");
    assert!(per_node(&tasks).iter().filter(|(n, _)| !n.is_empty()).all(|(_, c)| *c == 1), "one per node");
    let waiting = tasks.iter().find(|t| t.node_id.is_empty()).expect("a pending task");
    let err = waiting.status.as_ref().map(|s| s.err.clone()).unwrap_or_default();
    assert!(err.contains("host-mode port already in use"), "{err}");
}

//! Rolling updates on the control plane in one process (`shoal-local-cluster`: three managers,
//! two workers on the simulated runtime): stop-first never runs two tasks in a slot, start-first
//! never leaves a slot without a running task, a failing update pauses or rolls back by itself,
//! a paused update goes on with the next `service update`, a manual rollback, and an update that
//! carries on across the loss of its leader. Every check is made on the sequence of task changes
//! the store applied (a watch from revision 0), not on samples.

// Tests narrate their steps on stderr, which nextest shows when one fails.
#![allow(clippy::print_stderr)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::v1::{self, TaskState, control_client::ControlClient, update_status::UpdateState};
use shoal_local_cluster::{LocalCluster, LocalOptions, eventually};
use shoal_runtime::SimBehavior;
use tonic::transport::Channel;

const V1: &str = "shoal-test/sleeper:v1";
const V2: &str = "shoal-test/sleeper:v2";
const CRASHER: &str = "shoal-test/crasher:latest";

fn seconds(secs: f64) -> Option<prost_types::Duration> {
    Some(shoal_api::to_duration(Duration::from_secs_f64(secs)))
}

fn spec(replicas: u64) -> v1::ServiceSpec {
    v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: "web".into(), ..Default::default() }),
        mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas })),
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec {
                image: V1.into(),
                stop_grace_period: seconds(0.7),
                ..Default::default()
            }),
            restart: Some(v1::RestartPolicy { delay: seconds(0.2), ..Default::default() }),
            ..Default::default()
        }),
        update: Some(v1::UpdateConfig { parallelism: 2, monitor: seconds(1.0), ..Default::default() }),
        rollback: Some(v1::UpdateConfig { parallelism: 0, monitor: seconds(1.0), ..Default::default() }),
        ..Default::default()
    }
}

fn image(task: &v1::Task) -> &str {
    task.spec.as_ref().and_then(|s| s.container.as_ref()).map_or("", |c| c.image.as_str())
}

fn state(task: &v1::Task) -> TaskState {
    task.observed_state()
}

/// Every task change in the order the store applied it.
#[derive(Clone, Default)]
struct History(Arc<Mutex<Vec<v1::Task>>>);

impl History {
    fn record(objects: &shoal_manager::ObjectStore) -> Self {
        let history = Self::default();
        let mut watch = objects.store().watch(<v1::Task as shoal_manager::Object>::PREFIX, 0).expect("watch");
        let seen = history.0.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = watch.next().await {
                if let Ok(task) = <v1::Task as prost::Message>::decode(event.kv.value.as_slice()) {
                    seen.lock().expect("history").push(task);
                }
            }
        });
        history
    }

    /// Replays the changes; `check` sees each change, whether it made the task, and the state
    /// of every other task of its slot just before it.
    fn check(&self, mut check: impl FnMut(&v1::Task, bool, &[v1::Task])) {
        let changes = self.0.lock().expect("history").clone();
        let mut latest: HashMap<String, v1::Task> = HashMap::new();
        for change in changes {
            let slot: Vec<v1::Task> =
                latest.values().filter(|t| t.slot == change.slot && t.id != change.id).cloned().collect();
            check(&change, !latest.contains_key(&change.id), &slot);
            latest.insert(change.id.clone(), change);
        }
    }
}

async fn try_service(control: &mut ControlClient<Channel>) -> Option<v1::Service> {
    let request = v1::GetServiceRequest { service: "web".into() };
    control.get_service(request).await.ok()?.into_inner().service
}

async fn service(control: &mut ControlClient<Channel>) -> v1::Service {
    try_service(control).await.expect("service web")
}

/// `service update` as the CLI sends it: the spec read, edited, with the versions read.
async fn update(control: &mut ControlClient<Channel>, edit: impl FnOnce(&mut v1::ServiceSpec)) -> v1::Service {
    let read = service(control).await;
    let mut next = read.spec.clone().expect("spec");
    edit(&mut next);
    let request = v1::UpdateServiceRequest {
        service: read.id.clone(),
        version: read.meta.as_ref().map_or(0, |m| m.version),
        spec: Some(next),
        rollback: false,
        spec_version: read.spec_version,
    };
    control.update_service(request).await.expect("update").into_inner().service.expect("service")
}

fn set_image(spec: &mut v1::ServiceSpec, image: &str) {
    if let Some(container) = spec.task.as_mut().and_then(|t| t.container.as_mut()) {
        container.image = image.into();
    }
}

async fn wait_state(control: &mut ControlClient<Channel>, wanted: UpdateState, secs: u64) -> v1::UpdateStatus {
    eventually(&format!("update state {wanted:?}"), secs, async || {
        // A new leader may still be taking office: errors are retried.
        let status = try_service(control).await?.update_status?;
        (status.state == wanted as i32).then_some(status)
    })
    .await
    .expect("update state")
}

/// The service's running tasks' images, once `replicas` run and nothing else is wanted.
async fn converged(control: &mut ControlClient<Channel>, replicas: usize, image: &str) {
    let id = eventually("the service", 30, async || try_service(control).await).await.expect("service").id;
    eventually(&format!("{replicas} tasks of {image} running"), 30, async || {
        let request = v1::ListTasksRequest { service_ids: vec![id.clone()], ..Default::default() };
        let tasks = control.list_tasks(request).await.ok()?.into_inner().tasks;
        let wanted: Vec<&v1::Task> = tasks.iter().filter(|t| t.desired() == TaskState::Running).collect();
        let done = wanted.len() == replicas
            && wanted.iter().all(|t| state(t) == TaskState::Running && crate::image(t).ends_with(image));
        done.then_some(())
    })
    .await
    .expect("converged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_updates_roll_back_pause_and_survive_the_leader() {
    let images = vec![
        // v1 takes its whole stop grace period to stop: a slot refilled too early would show.
        (V1.to_owned(), SimBehavior::IgnoreStopSignal),
        (V2.to_owned(), SimBehavior::RunUntilStopped),
        (CRASHER.to_owned(), SimBehavior::ExitAfter { code: 1, after: Duration::from_millis(300) }),
    ];
    let options = LocalOptions { managers: 3, workers: 2, images, ..Default::default() };
    let mut cluster = LocalCluster::start(options).await.expect("cluster");
    let mut control = cluster.control().await.expect("admin client");
    for worker in cluster.workers() {
        // Containers take a moment to start: a slot left empty too early would show.
        worker.sim.set_start_latency(Duration::from_millis(400));
    }

    eprintln!("--- 4 replicas of v1");
    let request = v1::CreateServiceRequest { spec: Some(spec(4)) };
    control.create_service(request).await.expect("create");
    converged(&mut control, 4, "sleeper:v1").await;

    eprintln!("--- stop-first to v2, 2 at a time: no slot ever runs two tasks");
    let history = History::record(cluster.objects(0).expect("manager 0"));
    let updated = update(&mut control, |s| set_image(s, V2)).await;
    assert_eq!(updated.update_status.as_ref().map(|s| s.state), Some(UpdateState::Updating as i32));
    let done = wait_state(&mut control, UpdateState::Completed, 30).await;
    assert_eq!(done.message, "update completed");
    converged(&mut control, 4, "sleeper:v2").await;
    let mut created = 0;
    history.check(|change, new, slot| {
        if new && image(change) == V2 {
            created += 1;
            let live: Vec<&String> = slot.iter().filter(|t| !state(t).is_terminal()).map(|t| &t.id).collect();
            assert!(live.is_empty(), "slot {} got v2 task {} while {live:?} still ran", change.slot, change.id);
        }
    });
    assert!(created >= 4, "{created} v2 tasks made");

    eprintln!("--- start-first back to v1: no slot is ever without a running task");
    let history = History::record(cluster.objects(0).expect("manager 0"));
    update(&mut control, |s| {
        set_image(s, V1);
        if let Some(update) = s.update.as_mut() {
            update.order = v1::update_config::Order::StartFirst as i32;
        }
    })
    .await;
    wait_state(&mut control, UpdateState::Completed, 30).await;
    converged(&mut control, 4, "sleeper:v1").await;
    history.check(|change, _, slot| {
        if image(change) == V2 && state(change) == TaskState::Shutdown {
            let replacement = slot.iter().any(|t| image(t) == V1 && state(t) == TaskState::Running);
            assert!(replacement, "slot {}: v2 task {} stopped before its replacement ran", change.slot, change.id);
        }
    });

    eprintln!("--- an update to a crashing image rolls back by itself");
    update(&mut control, |s| {
        set_image(s, CRASHER);
        if let Some(update) = s.update.as_mut() {
            update.failure_action = v1::update_config::FailureAction::Rollback as i32;
        }
    })
    .await;
    let rolled = wait_state(&mut control, UpdateState::RollbackCompleted, 60).await;
    assert_eq!(rolled.message, "rollback completed");
    converged(&mut control, 4, "sleeper:v1").await;
    let svc = service(&mut control).await;
    assert_eq!(
        svc.spec.as_ref().and_then(|s| s.task.as_ref()).and_then(|t| t.container.as_ref()).map(|c| c.image.as_str()),
        Some(V1)
    );

    eprintln!("--- with failure action pause it pauses; the next update goes on");
    update(&mut control, |s| {
        set_image(s, CRASHER);
        if let Some(update) = s.update.as_mut() {
            update.failure_action = v1::update_config::FailureAction::Pause as i32;
        }
    })
    .await;
    let paused = wait_state(&mut control, UpdateState::Paused, 60).await;
    assert!(
        paused.message.starts_with("update paused due to failure or early termination of task "),
        "{}",
        paused.message
    );
    update(&mut control, |s| set_image(s, V2)).await;
    wait_state(&mut control, UpdateState::Completed, 60).await;
    converged(&mut control, 4, "sleeper:v2").await;

    eprintln!("--- a manual rollback (after an update to v1, back to v2)");
    update(&mut control, |s| set_image(s, V1)).await;
    wait_state(&mut control, UpdateState::Completed, 60).await;
    converged(&mut control, 4, "sleeper:v1").await;
    let read = service(&mut control).await;
    let request = v1::UpdateServiceRequest {
        service: read.id.clone(),
        version: read.meta.as_ref().map_or(0, |m| m.version),
        spec: None,
        rollback: true,
        spec_version: read.spec_version,
    };
    let rolled = control.update_service(request).await.expect("rollback").into_inner().service.expect("service");
    assert_eq!(rolled.update_status.map(|s| s.message), Some("manually requested rollback".to_owned()));
    wait_state(&mut control, UpdateState::RollbackCompleted, 30).await;
    converged(&mut control, 4, "sleeper:v2").await;

    eprintln!("--- the leader is lost mid-update: the next leader completes it");
    let nodes = control.list_nodes(v1::ListNodesRequest::default()).await.expect("nodes").into_inner().nodes;
    let leader =
        nodes.iter().find(|n| n.manager_status.as_ref().is_some_and(|m| m.leader)).expect("a leader").id.clone();
    let index =
        cluster.manager_ids().iter().position(|id| id.as_deref() == Some(leader.as_str())).expect("leader index");
    let survivor = (index + 1) % 3;
    let history = History::record(cluster.objects(survivor).expect("a survivor"));
    let before: std::collections::HashSet<String> =
        history.0.lock().expect("history").iter().map(|t| t.id.clone()).collect();
    update(&mut control, |s| {
        set_image(s, V1);
        if let Some(update) = s.update.as_mut() {
            update.order = v1::update_config::Order::StopFirst as i32;
            update.parallelism = 1;
            update.delay = seconds(0.5);
        }
    })
    .await;
    eventually("the first slot updated", 30, async || {
        let tasks = history.0.lock().expect("history").clone();
        let fresh = |t: &&v1::Task| !before.contains(&t.id);
        tasks.iter().filter(fresh).any(|t| image(t) == V1 && state(t) == TaskState::Running).then_some(())
    })
    .await
    .expect("first slot");
    cluster.kill_manager(index).await;
    let mut control = cluster.control_at(cluster.manager_addrs()[survivor]).await.expect("a surviving manager");
    wait_state(&mut control, UpdateState::Completed, 60).await;
    converged(&mut control, 4, "sleeper:v1").await;
    history.check(|change, new, slot| {
        if new && image(change) == V1 {
            let live: Vec<String> = slot
                .iter()
                .filter(|t| image(t) == V2 && !state(t).is_terminal())
                .map(|t| format!("{} {:?} desired {:?} on {}", t.id, state(t), t.desired(), t.node_id))
                .collect();
            assert!(live.is_empty(), "slot {} got v1 task {} while {live:?} still ran", change.slot, change.id);
        }
    });
    cluster.shutdown().await;
}

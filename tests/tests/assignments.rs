//! A node with many tasks (`shoal-local-cluster`): 1,500 replicas with 4 KiB of environment
//! each on one worker — 6 MiB of assignments, over gRPC's default 4 MiB message limit — reach
//! RUNNING over one session, and a restarted agent gets its whole set again, in parts, also
//! over one session. Before the assignment stream was cut by size, the node could never
//! decode its set and opened session after session.

// Tests narrate their steps on stderr, which nextest shows when one fails.
#![allow(clippy::print_stderr)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_agent::{Agent, AgentConfig};
use shoal_api::v1::{self, TaskState, control_client::ControlClient};
use shoal_local_cluster::{LocalCluster, LocalOptions, eventually};
use shoal_runtime::Simulated;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

const REPLICAS: u64 = 1500;

/// An agent run by the test itself, so that the test can ask it how many sessions it started.
struct Running {
    agent: Arc<Agent>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    fn start(config: &AgentConfig, sim: &Simulated) -> Self {
        let agent = Arc::new(Agent::new(config.clone(), Arc::new(sim.clone())));
        let (stop, stopped) = oneshot::channel::<()>();
        let runner = agent.clone();
        let task = tokio::spawn(async move {
            let until = async {
                let _ = stopped.await;
            };
            runner.run(until).await.expect("the agent runs");
        });
        Self { agent, stop, task }
    }

    /// Stops the agent as a restart would: its containers keep running.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the agent stops");
    }
}

async fn tasks(control: &mut ControlClient<Channel>, service: &str) -> Vec<v1::Task> {
    let request = v1::ListTasksRequest { service_ids: vec![service.to_owned()], ..Default::default() };
    control.list_tasks(request).await.map(|r| r.into_inner().tasks).unwrap_or_default()
}

/// Tasks that should run and do, on `node`.
fn running_on(tasks: &[v1::Task], node: &str) -> usize {
    tasks
        .iter()
        .filter(|t| t.node_id == node && t.desired_state == TaskState::Running as i32)
        .filter(|t| t.status.as_ref().is_some_and(|s| s.state == TaskState::Running as i32))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_1500_tasks_of_4_kib_gets_them_all_over_one_session() {
    eprintln!("--- one manager, one worker whose agent the test runs");
    // A 2 s heartbeat: the agent's restart below stays well within the three periods after
    // which the node would be Down and its tasks replaced.
    let options = LocalOptions { heartbeat_period: Duration::from_secs(2), ..Default::default() };
    let cluster = LocalCluster::start(options).await.expect("cluster");
    let config = cluster.join_worker_config("big").await.expect("join");
    let node = config.node_id.clone();
    let sim = Simulated::new();
    sim.add_image("shoal-test/sleeper", shoal_runtime::SimBehavior::RunUntilStopped);
    let first = Running::start(&config, &sim);
    cluster.wait_ready(1, 30).await.expect("the worker is Ready");
    let mut control = cluster.control().await.expect("admin client");

    eprintln!("--- {REPLICAS} replicas with one 4 KiB variable each: about 6 MiB of assignments for one node");
    let mut spec = v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: "wide".into(), ..Default::default() }),
        mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: REPLICAS })),
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec {
                image: "shoal-test/sleeper".into(),
                env: vec![format!("PAYLOAD={}", "x".repeat(4096))],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = Instant::now();
    let service = control
        .create_service(v1::CreateServiceRequest { spec: Some(spec.clone()) })
        .await
        .expect("create")
        .into_inner()
        .service
        .expect("service");
    eventually("1,500 tasks RUNNING on the worker", 180, async || {
        (running_on(&tasks(&mut control, &service.id).await, &node) == REPLICAS as usize).then_some(())
    })
    .await
    .expect("all running");
    eprintln!("    all {REPLICAS} RUNNING {:?} after the service was created", created.elapsed());
    assert_eq!(first.agent.sessions_started(), 1, "the session did not start over");

    eprintln!("--- the agent restarts while the service scales down to 1,400: its complete set comes in parts");
    first.stop().await;
    let stored = control
        .get_service(v1::GetServiceRequest { service: service.id.clone() })
        .await
        .expect("get")
        .into_inner()
        .service
        .expect("service");
    spec.mode = Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: REPLICAS - 100 }));
    let version = stored.meta.map(|m| m.version).unwrap_or_default();
    let request = v1::UpdateServiceRequest {
        service: service.id.clone(),
        version,
        spec: Some(spec),
        rollback: false,
        spec_version: 0,
    };
    control.update_service(request).await.expect("scale down");
    eventually("100 tasks told to stop", 20, async || {
        let all = tasks(&mut control, &service.id).await;
        (all.iter().filter(|t| t.desired_state != TaskState::Running as i32).count() == 100).then_some(())
    })
    .await
    .expect("scaled down");
    let restarted = Instant::now();
    let second = Running::start(&config, &sim);
    // Only the new agent can stop the 100: the change reaches it in its complete set alone.
    eventually("1,400 RUNNING and the 100 stopped", 60, async || {
        let all = tasks(&mut control, &service.id).await;
        let stopped = all
            .iter()
            .filter(|t| t.desired_state != TaskState::Running as i32)
            .filter(|t| {
                t.status.as_ref().is_some_and(|s| TaskState::try_from(s.state).is_ok_and(TaskState::is_terminal))
            })
            .count();
        (running_on(&all, &node) == (REPLICAS - 100) as usize && stopped == 100).then_some(())
    })
    .await
    .expect("the restarted agent applied its complete set");
    eprintln!("    the restarted agent applied its complete set {:?} after it started", restarted.elapsed());
    assert_eq!(second.agent.sessions_started(), 1, "the restarted agent's session did not start over");
    second.stop().await;
    cluster.shutdown().await;
}

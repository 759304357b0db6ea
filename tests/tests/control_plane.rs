//! The control plane with in-process agents on the simulated runtime: a manager on loopback,
//! three workers joined with the worker token, and the scenarios — spread, a crashed
//! container replaced with its exit code in the history, a lost worker's tasks moved, a missing
//! image rejected.

// Tests narrate their steps on stderr, which nextest shows when one fails.
#![allow(clippy::print_stderr)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_agent::{Agent, AgentConfig};
use shoal_api::v1::{self, TaskState, control_client::ControlClient};
use shoal_runtime::{SimBehavior, Simulated};
use tonic::transport::Channel;

struct Worker {
    sim: Simulated,
    node_id: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn worker(addr: SocketAddr, token: &str, dir: &std::path::Path, name: &str) -> Worker {
    let (credentials, trust) = shoal_agent::join(&addr.to_string(), token, &dir.join(name)).await.expect("join");
    let sim = Simulated::new();
    sim.add_image("shoal-test/sleeper", SimBehavior::RunUntilStopped);
    let node_id = credentials.identity().node_id.clone();
    let config = AgentConfig {
        managers: vec![addr.to_string()],
        tls: shoal_ca_pki::client_config(&credentials, &trust).expect("tls"),
        node_id: node_id.clone(),
        description: v1::NodeDescription {
            hostname: name.to_owned(),
            platform: Some(v1::Platform { architecture: "amd64".into(), os: "linux".into() }),
            resources: Some(v1::Resources { nano_cpus: 2_000_000_000, memory_bytes: 4 << 30, ..Default::default() }),
            ..Default::default()
        },
        volumes_dir: dir.join(name).join("volumes"),
    };
    let agent = Agent::new(config, Arc::new(sim.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = agent
            .run(async {
                let _ = stopped.await;
            })
            .await;
    });
    Worker { sim, node_id, stop: Some(stop) }
}

async fn tasks(control: &mut ControlClient<Channel>, service: &str) -> Vec<v1::Task> {
    let request = v1::ListTasksRequest { service_ids: vec![service.to_owned()], ..Default::default() };
    control.list_tasks(request).await.expect("list tasks").into_inner().tasks
}

fn running(tasks: &[v1::Task]) -> Vec<&v1::Task> {
    tasks
        .iter()
        .filter(|t| t.desired_state == TaskState::Running as i32)
        .filter(|t| t.status.as_ref().is_some_and(|s| s.state == TaskState::Running as i32))
        .collect()
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `secs`.
async fn eventually<T>(what: &str, secs: u64, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spec(name: &str, image: &str, replicas: u64) -> v1::ServiceSpec {
    v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: name.into(), ..Default::default() }),
        mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas })),
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec { image: image.into(), ..Default::default() }),
            restart: Some(v1::RestartPolicy {
                delay: Some(shoal_api::to_duration(Duration::ZERO)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_run_tasks_and_the_cluster_heals() {
    let dir = std::env::temp_dir().join(format!("shoal-control-plane-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port");
    let mut config = shoal_manager::ManagerConfig::new(dir.join("m1"), addr, addr);
    config.heartbeat_period = Duration::from_millis(300);
    let (manager, outcome) = shoal_manager::init(&config).await.expect("init");
    let mut control = ControlClient::new(
        shoal_manager::connect_with_bundle(&addr.to_string(), &outcome.admin_bundle).await.expect("admin"),
    );

    eprintln!("--- three workers join with the worker token and become Ready");
    let mut workers = Vec::new();
    for name in ["w1", "w2", "w3"] {
        workers.push(worker(addr, &outcome.worker_token, &dir, name).await);
    }
    eventually("3 Ready workers", 10, async || {
        let nodes = control.list_nodes(v1::ListNodesRequest::default()).await.ok()?.into_inner().nodes;
        let ready = nodes
            .iter()
            .filter(|n| n.status.as_ref().is_some_and(|s| s.state == v1::node_status::State::Ready as i32))
            .count();
        (ready == 3).then_some(())
    })
    .await;

    eprintln!("--- 6 replicas run, 2 per worker");
    let service = control
        .create_service(v1::CreateServiceRequest { spec: Some(spec("sleep", "shoal-test/sleeper", 6)) })
        .await
        .expect("create")
        .into_inner()
        .service
        .expect("service");
    let placed = eventually("6 running tasks", 15, async || {
        let all = tasks(&mut control, &service.id).await;
        (running(&all).len() == 6).then_some(all)
    })
    .await;
    for w in &workers {
        let on = running(&placed).iter().filter(|t| t.node_id == w.node_id).count();
        assert_eq!(on, 2, "worker {} runs 2", w.node_id);
        assert_eq!(w.sim.container_count(), 2);
    }

    eprintln!("--- a container is killed (exit 137): a new task replaces it, the history keeps the exit code");
    let victim = running(&placed).into_iter().find(|t| t.node_id == workers[0].node_id).expect("a task on w1").clone();
    workers[0].sim.kill_externally(&victim.id, 137, false).expect("kill");
    let history = eventually("the killed task replaced", 15, async || {
        let all = tasks(&mut control, &service.id).await;
        let failed = all
            .iter()
            .find(|t| t.id == victim.id && t.status.as_ref().is_some_and(|s| s.state == TaskState::Failed as i32))?;
        (running(&all).len() == 6).then(|| failed.clone())
    })
    .await;
    assert_eq!(history.status.map(|s| s.err), Some("task: non-zero exit (137)".to_owned()));
    assert_eq!(history.desired_state, TaskState::Shutdown as i32);

    eprintln!("--- a worker stops heartbeating: Down within three periods, its tasks run elsewhere");
    let lost = workers.pop().expect("w3");
    let lost_at = Instant::now();
    drop(lost.stop);
    eventually("the lost worker Down", 10, async || {
        let node = control.get_node(v1::GetNodeRequest { node: lost.node_id.clone() }).await.ok()?.into_inner().node?;
        (node.status?.state == v1::node_status::State::Down as i32).then_some(())
    })
    .await;
    eprintln!("    down after {:?}", lost_at.elapsed());
    let moved = eventually("6 running on the other two", 15, async || {
        let all = tasks(&mut control, &service.id).await;
        let live = running(&all);
        (live.len() == 6 && live.iter().all(|t| t.node_id != lost.node_id)).then_some(())
    })
    .await;
    let () = moved;
    eprintln!("    tasks running elsewhere {:?} after the agent stopped", lost_at.elapsed());
    assert!(lost_at.elapsed() < Duration::from_secs(6), "replaced within 6 s with a 300 ms heartbeat");

    eprintln!("--- an image that does not exist: the task is rejected with `image not found`");
    let missing = control
        .create_service(v1::CreateServiceRequest { spec: Some(spec("ghost", "shoal-test/nonexistent:1", 1)) })
        .await
        .expect("create")
        .into_inner()
        .service
        .expect("service");
    let rejected = eventually("a rejected task", 15, async || {
        tasks(&mut control, &missing.id)
            .await
            .into_iter()
            .find(|t| t.status.as_ref().is_some_and(|s| s.state == TaskState::Rejected as i32))
    })
    .await;
    assert_eq!(rejected.status.map(|s| s.err), Some("image not found: docker.io/shoal-test/nonexistent:1".to_owned()));

    for mut w in workers {
        if let Some(stop) = w.stop.take() {
            let _ = stop.send(());
        }
    }
    manager.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

//! `cargo xtask bench control-plane`: one manager, then three, with 1,000 simulated agents in
//! one process (a process per case), one service of 100,000 replicas. Prints the time from `service create` until every task is
//! RUNNING, placements per second through Raft (tasks ASSIGNED per second, each a replicated
//! write), and the process's peak RSS (manager and all agents together, so an upper bound for
//! the manager). Targets from the issue: ≥ 20,000 placements/s, converge ≤ 10 s, RSS ≤ 2 GB.
//! Then the root CA is rotated under the running service: how long until every node holds a
//! certificate from the new root, and until every node trusts it alone (no task replaced).
//! Scale with SHOAL_BENCH_AGENTS and SHOAL_BENCH_REPLICAS.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use shoal_api::v1::{self, TaskState};
use shoal_local_cluster::{LocalCluster, LocalOptions};
use shoal_manager::Object as _;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Set in the child processes: how many managers this one runs.
const MANAGERS_VAR: &str = "SHOAL_BENCH_MANAGERS";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(managers) = std::env::var(MANAGERS_VAR).ok().and_then(|v| v.parse().ok()) {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        return runtime.block_on(bench(managers));
    }
    // One process per case, so that each peak RSS is its own: one manager (no replication), then
    // three (every write replicated, the HA setup people deploy).
    let me = std::env::current_exe()?;
    for managers in [1, 3] {
        let status = std::process::Command::new(&me)
            .args(std::env::args_os().skip(1))
            .env(MANAGERS_VAR, managers.to_string())
            .status()?;
        if !status.success() {
            return Err(format!("the case with {managers} manager(s) failed ({status})").into());
        }
    }
    Ok(())
}

async fn bench(managers: usize) -> Result<(), Box<dyn std::error::Error>> {
    let agents = env_or("SHOAL_BENCH_AGENTS", 1_000) as usize;
    let replicas = env_or("SHOAL_BENCH_REPLICAS", 100_000);
    println!(
        "\ncontrol plane: {managers} manager(s), {agents} simulated agents in one process, one service of {replicas} replicas"
    );

    let started = Instant::now();
    let options = LocalOptions { managers, heartbeat_period: Duration::from_secs(1), ..Default::default() };
    let mut cluster = LocalCluster::start(options).await?;
    cluster.add_workers("w", agents, 50).await?;
    cluster.wait_ready(agents, 120).await?;
    println!(
        "  {agents} agents joined and Ready in {:.1} s; RSS {} MiB",
        started.elapsed().as_secs_f64(),
        rss_kib("VmRSS:") / 1024
    );

    let objects = cluster.objects(0).ok_or("the manager is gone")?.clone();
    let mut control = cluster.control().await?;
    let spec = v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: "bench".into(), ..Default::default() }),
        mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas })),
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec { image: "shoal-test/sleeper".into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut watch = objects.store().watch(v1::Task::PREFIX, 0)?;
    // Nodes marked Down while the service converges: each is a false failure (every agent here
    // runs), and its tasks are replaced on other nodes.
    let mut node_watch = objects.store().watch(v1::Node::PREFIX, 0)?;
    let down = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<String, String>::new()));
    let marked_down = {
        let down = down.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = node_watch.next().await {
                let Ok(node) = <v1::Node as prost::Message>::decode(event.kv.value.as_slice()) else { continue };
                if let Some(status) = node.status.filter(|s| s.state == v1::node_status::State::Down as i32) {
                    down.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(node.id, status.message);
                }
            }
        })
    };
    let created = Instant::now();
    control.create_service(v1::CreateServiceRequest { spec: Some(spec) }).await?;

    // Counted from the manager's own watch of the task prefix (each change decoded once, as
    // the dispatcher does), not by listing: observing costs the manager little.
    let mut nodes: std::collections::HashMap<Vec<u8>, (bool, bool)> = std::collections::HashMap::new();
    let (mut assigned, mut running) = (0u64, 0u64);
    let mut assigned_at = None;
    let mut running_at = None;
    let mut last_print = Instant::now();
    let deadline = created + Duration::from_secs(300);
    while running_at.is_none() {
        let Ok(Some(event)) = tokio::time::timeout_at(deadline.into(), watch.next()).await else { break };
        let event = event?;
        let was = nodes.get(&event.kv.key).copied().unwrap_or_default();
        let now = if event.kind == shoal_raft_store::EventKind::Delete {
            (false, false)
        } else {
            let task = <v1::Task as prost::Message>::decode(event.kv.value.as_slice())?;
            (!task.node_id.is_empty(), task.observed_state() == TaskState::Running)
        };
        assigned = assigned + u64::from(now.0) - u64::from(was.0);
        running = running + u64::from(now.1) - u64::from(was.1);
        nodes.insert(event.kv.key, now);
        if assigned_at.is_none() && assigned >= replicas {
            assigned_at = Some(created.elapsed());
        }
        if running >= replicas {
            running_at = Some(created.elapsed());
        }
        if last_print.elapsed() >= Duration::from_millis(500) {
            last_print = Instant::now();
            eprintln!("  {:>6.2} s: {assigned} assigned, {running} running", created.elapsed().as_secs_f64());
        }
    }
    let peak = rss_kib("VmHWM:") / 1024;
    let tasks_made = nodes.len() as u64;
    let rotation =
        if running_at.is_some() { Some(rotate_root(&mut control, &objects, managers + agents).await?) } else { None };
    cluster.shutdown().await;
    marked_down.abort();
    let down = down.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let (Some(assigned), Some(running)) = (assigned_at, running_at) else {
        return Err("not converged within 300 s".into());
    };
    let placements = replicas as f64 / assigned.as_secs_f64();
    println!(
        "  all {replicas} assigned after {:.2} s: {placements:.0} placements/s through Raft (target ≥ 20,000)",
        assigned.as_secs_f64()
    );
    println!("  all {replicas} RUNNING after {:.2} s (target ≤ 10 s)", running.as_secs_f64());
    let mut reasons: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for message in down.values() {
        *reasons.entry(message.as_str()).or_default() += 1;
    }
    println!(
        "  tasks replaced: {} (target 0); nodes marked Down meanwhile: {} {reasons:?}",
        tasks_made.saturating_sub(replicas),
        down.len()
    );
    println!(
        "  peak RSS of the whole process ({managers} manager(s) + {agents} agents): {peak} MiB (target for a manager ≤ 2,048 MiB)"
    );
    if let Some(rotation) = rotation {
        println!(
            "  root CA rotation with the service running: every node's certificate from the new root after {:.2} s, \
             the old root dropped everywhere after {:.2} s; tasks replaced meanwhile: {} (target 0)",
            rotation.completed.as_secs_f64(),
            rotation.converged.as_secs_f64(),
            rotation.tasks_after.saturating_sub(tasks_made),
        );
    }
    Ok(())
}

/// What a root CA rotation of the converged cluster took.
struct Rotation {
    /// Until every node held a certificate from the new root (the rotation completed).
    completed: Duration,
    /// Until every node trusted the new root alone.
    converged: Duration,
    /// Tasks in the store afterwards (a replaced task would add one).
    tasks_after: u64,
}

/// Rotates the root CA under the running service and times the nodes' move to it.
async fn rotate_root(
    control: &mut v1::control_client::ControlClient<tonic::transport::Channel>,
    objects: &shoal_manager::ObjectStore,
    nodes: usize,
) -> Result<Rotation, Box<dyn std::error::Error>> {
    let began = Instant::now();
    control.rotate_root_ca(v1::RotateRootCaRequest::default()).await?;
    let mut completed = None;
    loop {
        let status = control.get_root_ca_status(v1::GetRootCaStatusRequest {}).await?.into_inner();
        if completed.is_none() && !status.rotating {
            completed = Some(began.elapsed());
        }
        if let Some(completed) = completed
            && status.trust_rotated as usize >= nodes
        {
            let tasks_after = objects.list::<v1::Task>().await?.len() as u64;
            return Ok(Rotation { completed, converged: began.elapsed(), tasks_after });
        }
        if began.elapsed() > Duration::from_secs(300) {
            return Err(format!(
                "the root CA rotation did not converge within 300 s: {} of {nodes} certificates, {} trusting the new root",
                status.certificates_rotated, status.trust_rotated
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

//! An in-process Shoal cluster: real managers (Raft, mTLS gRPC, dispatcher, orchestrators) on
//! loopback ports and real agents (sessions, executors) on the simulated container runtime, all
//! in one tokio runtime. It tests and measures the control plane without kernels, namespaces or
//! containerd: scale (a thousand agents fit in one process), failures (stop an agent, kill a
//! manager) and the API, exactly as the binaries compose it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), shoal_local_cluster::LocalError> {
//! use shoal_local_cluster::{LocalCluster, LocalOptions};
//! let mut cluster = LocalCluster::start(LocalOptions { managers: 3, workers: 2, ..Default::default() }).await?;
//! let mut control = cluster.control().await?; // admin client of the first live manager
//! cluster.stop_worker(0);                      // its agent stops: no more heartbeats
//! cluster.kill_manager(0).await;               // a manager goes away; the others carry on
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_agent::{Agent, AgentConfig};
use shoal_api::v1::{self, control_client::ControlClient};
use shoal_manager::{ManagerConfig, RunningManager};
/// What a simulated image's containers do ([`LocalOptions::images`]), re-exported so that tests
/// outside the agent's layer (the CLI's) can script them.
pub use shoal_runtime::SimBehavior;
use shoal_runtime::Simulated;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// How to build a [`LocalCluster`].
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Managers (at least 1). Each is a node, but runs no worker role (no agent of its own), so
    /// it is never Ready and tasks go to the workers only.
    pub managers: usize,
    /// Worker agents started with the cluster (more with [`LocalCluster::add_worker`]).
    pub workers: usize,
    /// The dispatcher's heartbeat period.
    pub heartbeat_period: Duration,
    /// Images every simulated runtime knows, with what their containers do.
    pub images: Vec<(String, SimBehavior)>,
    /// Where the cluster's state lives; a fresh directory under the system's temp dir if `None`.
    pub dir: Option<PathBuf>,
    /// How long the certificates the managers issue are valid (90 days; tests of renewal use
    /// seconds).
    pub cert_validity: Duration,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            managers: 1,
            workers: 0,
            heartbeat_period: Duration::from_millis(300),
            images: vec![("shoal-test/sleeper".to_owned(), SimBehavior::RunUntilStopped)],
            dir: None,
            cert_validity: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// Building or using a local cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A file or directory could not be made.
    #[error("{path}: {source}")]
    Io {
        /// What.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A manager could not init, join or start.
    #[error("manager {index}: {source}")]
    Manager {
        /// Which (0 is the one that made the cluster).
        index: usize,
        /// Why.
        source: shoal_manager::StartError,
    },
    /// A worker could not join.
    #[error("worker {name}: {source}")]
    Join {
        /// Its hostname.
        name: String,
        /// Why.
        source: shoal_agent::JoinError,
    },
    /// A worker's TLS configuration could not be made from its certificate.
    #[error("worker {name}: {reason}")]
    Tls {
        /// Its hostname.
        name: String,
        /// Why.
        reason: String,
    },
    /// No manager accepted an admin connection.
    #[error("no live manager accepts the admin client: {0}")]
    Connect(String),
    /// A condition did not come true in time.
    #[error("{what}: not within {secs} s")]
    Timeout {
        /// What was awaited.
        what: String,
        /// For how long.
        secs: u64,
    },
}

/// A worker agent of the cluster, on its own simulated runtime.
#[derive(Debug)]
pub struct LocalWorker {
    /// Its hostname.
    pub name: String,
    /// Its node ID.
    pub node_id: String,
    /// Its containers: inspect them, kill them "externally", make pulls fail.
    pub sim: Simulated,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl LocalWorker {
    /// Whether its agent runs.
    pub fn is_running(&self) -> bool {
        self.stop.is_some()
    }
}

/// Managers on loopback and simulated agents in this process. Dropping it stops the agents
/// (tasks abort); [`LocalCluster::shutdown`] also stops the managers cleanly and removes the
/// directory it made.
#[derive(Debug)]
pub struct LocalCluster {
    dir: PathBuf,
    owns_dir: bool,
    options: LocalOptions,
    managers: Vec<Option<RunningManager>>,
    manager_addrs: Vec<SocketAddr>,
    admin_bundle: PathBuf,
    worker_token: String,
    manager_token: String,
    workers: Vec<LocalWorker>,
}

/// A free loopback port. (Freed before the manager binds it: fine for tests on one machine.)
fn free_port() -> Result<SocketAddr, LocalError> {
    let io = |source| LocalError::Io { path: PathBuf::from("127.0.0.1:0"), source };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io)?;
    listener.local_addr().map_err(io)
}

impl LocalCluster {
    /// Creates the cluster: the first manager inits, the others join with the manager token,
    /// then the workers join with the worker token and start their agents. Returns once every
    /// worker is Ready.
    pub async fn start(options: LocalOptions) -> Result<Self, LocalError> {
        let (dir, owns_dir) = match &options.dir {
            Some(dir) => (dir.clone(), false),
            None => {
                let unique = format!("shoal-local-{}-{}", std::process::id(), nonce());
                (std::env::temp_dir().join(unique), true)
            }
        };
        std::fs::create_dir_all(&dir).map_err(|source| LocalError::Io { path: dir.clone(), source })?;
        let managers = options.managers.max(1);
        let addr = free_port()?;
        let mut config = ManagerConfig::new(dir.join("m0"), addr, addr);
        config.heartbeat_period = options.heartbeat_period;
        config.cert_validity = options.cert_validity;
        let (first, outcome) =
            shoal_manager::init(&config).await.map_err(|source| LocalError::Manager { index: 0, source })?;
        let mut cluster = Self {
            dir,
            owns_dir,
            options,
            managers: vec![Some(first)],
            manager_addrs: vec![addr],
            admin_bundle: outcome.admin_bundle,
            worker_token: outcome.worker_token,
            manager_token: outcome.manager_token,
            workers: Vec::new(),
        };
        for index in 1..managers {
            let addr = free_port()?;
            let mut config = ManagerConfig::new(cluster.dir.join(format!("m{index}")), addr, addr);
            config.heartbeat_period = cluster.options.heartbeat_period;
            config.cert_validity = cluster.options.cert_validity;
            let manager = shoal_manager::join(&config, &cluster.manager_addrs[0].to_string(), &cluster.manager_token)
                .await
                .map_err(|source| LocalError::Manager { index, source })?;
            cluster.managers.push(Some(manager));
            cluster.manager_addrs.push(addr);
        }
        for index in 0..cluster.options.workers {
            cluster.add_worker(&format!("w{}", index + 1)).await?;
        }
        // Managers here run no worker role, so their nodes never report Ready.
        cluster.wait_ready(cluster.options.workers, 30).await?;
        Ok(cluster)
    }

    /// Waits until `count` nodes are Ready.
    pub async fn wait_ready(&self, count: usize, secs: u64) -> Result<(), LocalError> {
        let what = format!("{count} Ready nodes");
        eventually(&what, secs, async || {
            let mut control = self.control().await.ok()?;
            let nodes = control.list_nodes(v1::ListNodesRequest::default()).await.ok()?.into_inner().nodes;
            let ready = nodes
                .iter()
                .filter(|n| n.status.as_ref().is_some_and(|s| s.state == v1::node_status::State::Ready as i32))
                .count();
            (ready >= count).then_some(())
        })
        .await
    }

    /// Joins a worker named `name` and starts its agent (not waiting for it to be Ready).
    pub async fn add_worker(&mut self, name: &str) -> Result<&LocalWorker, LocalError> {
        let worker = self.spawn_worker(name).await?;
        self.workers.push(worker);
        Ok(&self.workers[self.workers.len() - 1])
    }

    /// Joins `count` workers named `{prefix}{n}`, `concurrency` joins at a time (a join signs a
    /// certificate and writes the node through Raft).
    pub async fn add_workers(&mut self, prefix: &str, count: usize, concurrency: usize) -> Result<(), LocalError> {
        let names: Vec<String> = (1..=count).map(|n| format!("{prefix}{n}")).collect();
        for chunk in names.chunks(concurrency.max(1)) {
            let joins = chunk.iter().map(|name| self.spawn_worker(name));
            let joined: Vec<Result<LocalWorker, LocalError>> = futures::future::join_all(joins).await;
            for worker in joined {
                self.workers.push(worker?);
            }
        }
        Ok(())
    }

    /// Joins a worker named `name` (its certificates under `DIR/workers/NAME`) and returns the
    /// configuration its agent runs with, as every worker of the cluster has: for tests that run
    /// an agent themselves (to stop and restart it, or to look at it while it runs).
    pub async fn join_worker_config(&self, name: &str) -> Result<AgentConfig, LocalError> {
        let dir = self.dir.join("workers").join(name);
        let remote = self.manager_addrs[self.first_live().unwrap_or(0)].to_string();
        let (credentials, _) = shoal_agent::join(&remote, &self.worker_token, &dir)
            .await
            .map_err(|source| LocalError::Join { name: name.to_owned(), source })?;
        let tls_error = |e: &dyn std::fmt::Display| LocalError::Tls { name: name.to_owned(), reason: e.to_string() };
        let live = shoal_ca_pki::LiveCredentials::load(&dir).map_err(|e| tls_error(&e))?;
        let tls = shoal_ca_pki::live_client_config(&live).map_err(|e| tls_error(&e))?;
        Ok(AgentConfig {
            managers: self.manager_addrs.iter().map(ToString::to_string).collect(),
            tls,
            node_id: credentials.identity().node_id.clone(),
            description: v1::NodeDescription {
                hostname: name.to_owned(),
                platform: Some(v1::Platform { architecture: "amd64".into(), os: "linux".into() }),
                resources: Some(v1::Resources {
                    nano_cpus: 4_000_000_000,
                    memory_bytes: 16 << 30,
                    ..Default::default()
                }),
                ..Default::default()
            },
            // The simulated runtime's containers read no files: no tmpfs for their secrets.
            dirs: shoal_agent::NodeDirs { volumes: dir.join("volumes"), task_files: None },
            role: v1::NodeRole::Worker,
            certificate_role: v1::NodeRole::Worker,
            // In-process workers cannot become managers: promotion needs a process that runs one.
            certs_dir: None,
            credentials: Some(live),
            // The simulated runtime has no network namespaces.
            network: None,
            metrics: None,
        })
    }

    async fn spawn_worker(&self, name: &str) -> Result<LocalWorker, LocalError> {
        let config = self.join_worker_config(name).await?;
        let node_id = config.node_id.clone();
        let sim = Simulated::new();
        for (image, behavior) in &self.options.images {
            sim.add_image(image, behavior.clone());
        }
        let agent = Agent::new(config, Arc::new(sim.clone()));
        let (stop, stopped) = oneshot::channel::<()>();
        let worker = name.to_owned();
        let task = tokio::spawn(async move {
            let until = async {
                let _ = stopped.await;
            };
            if let Err(err) = agent.run(until).await {
                tracing::warn!(worker, error = %err, "local agent ended");
            }
        });
        Ok(LocalWorker { name: name.to_owned(), node_id, sim, stop: Some(stop), task: Some(task) })
    }

    /// The workers, in the order they joined.
    pub fn workers(&self) -> &[LocalWorker] {
        &self.workers
    }

    /// Stops worker `index`'s agent, as if its process died: no more heartbeats or reports.
    /// Its simulated containers stay as they were.
    pub fn stop_worker(&mut self, index: usize) {
        if let Some(worker) = self.workers.get_mut(index) {
            worker.stop.take();
            if let Some(task) = worker.task.take() {
                task.abort();
            }
        }
    }

    /// The managers' node IDs (`None` for one that was killed).
    pub fn manager_ids(&self) -> Vec<Option<String>> {
        self.managers.iter().map(|m| m.as_ref().map(|m| m.node_id.clone())).collect()
    }

    /// The manager addresses, killed ones included.
    pub fn manager_addrs(&self) -> &[SocketAddr] {
        &self.manager_addrs
    }

    /// Stops manager `index` (its port closes, its Raft member goes silent).
    pub async fn kill_manager(&mut self, index: usize) {
        if let Some(manager) = self.managers.get_mut(index).and_then(Option::take) {
            manager.shutdown().await;
        }
    }

    /// The cluster state as manager `index` holds it (for white-box checks and benchmarks).
    pub fn objects(&self, index: usize) -> Option<&shoal_manager::ObjectStore> {
        self.managers.get(index).and_then(Option::as_ref).map(RunningManager::objects)
    }

    fn first_live(&self) -> Option<usize> {
        self.managers.iter().position(Option::is_some)
    }

    /// An admin client of the first live manager that accepts one.
    pub async fn control(&self) -> Result<ControlClient<Channel>, LocalError> {
        let mut last = String::from("every manager was killed");
        for (index, addr) in self.manager_addrs.iter().enumerate() {
            if self.managers[index].is_none() {
                continue;
            }
            match self.control_at(*addr).await {
                Ok(client) => return Ok(client),
                Err(err) => last = err.to_string(),
            }
        }
        Err(LocalError::Connect(last))
    }

    /// An admin client of the manager at `addr`.
    pub async fn control_at(&self, addr: SocketAddr) -> Result<ControlClient<Channel>, LocalError> {
        let channel = shoal_manager::connect_with_bundle(&addr.to_string(), &self.admin_bundle)
            .await
            .map_err(|e| LocalError::Connect(format!("{addr}: {e}")))?;
        Ok(ControlClient::new(channel).max_decoding_message_size(256 << 20))
    }

    /// The join tokens: (worker, manager).
    pub fn tokens(&self) -> (&str, &str) {
        (&self.worker_token, &self.manager_token)
    }

    /// The directory the cluster's state lives in: `m0`, `m1`, … for the managers' data
    /// directories, `workers/NAME` for each worker's certificates.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The admin client bundle's directory.
    pub fn admin_bundle(&self) -> &Path {
        &self.admin_bundle
    }

    /// Stops the agents, then the managers, and removes the directory if it made it.
    pub async fn shutdown(mut self) {
        for index in 0..self.workers.len() {
            self.stop_worker(index);
        }
        for manager in self.managers.iter_mut().filter_map(Option::take) {
            manager.shutdown().await;
        }
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            if let Some(task) = worker.task.take() {
                task.abort();
            }
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `secs` seconds.
pub async fn eventually<T>(what: &str, secs: u64, mut check: impl AsyncFnMut() -> Option<T>) -> Result<T, LocalError> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(LocalError::Timeout { what: what.to_owned(), secs });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A number that differs between clusters made by one process.
fn nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

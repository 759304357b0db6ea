//! A manager's life on disk: `init` creates a cluster (root CA, this manager's certificate, the
//! first Raft member, the cluster object with its join tokens, an admin client bundle) and runs;
//! `start` resumes from the same data directory after a restart, without joining again.
//!
//! Data directory layout:
//!
//! ```text
//! DATA/manager.json   cluster ID, node ID, Raft ID, advertised address
//! DATA/certs/         this node's key and certificate chain, the trusted roots
//! DATA/ca/            the cluster CA (root key and certificate; cross-signed state during rotation)
//! DATA/raft/          raft-store's log and snapshots
//! DATA/admin/         a client bundle for the CLI (key, certificate, roots), mode 0600 keys
//! DATA/raft.key       the Raft log's data key
//! DATA/locked/        with autolock: the certificate a restarted, locked manager serves
//!                     `Unlock` with, and the other managers' addresses (`autolock.rs`)
//! ```
//!
//! With autolock, `certs/node.key`, the CA's keys and `raft.key` are encrypted with the
//! cluster's unlock key; `start` then waits for it (`lock.rs`) before anything else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_api::v1;
use shoal_ca_pki::{
    ClusterCa, JoinTokens, KeyEncryption, LiveCredentials, NodeCredentials, NodeIdentity, NodeKey, RemovedNodes, Role,
    RootCa, TrustBundle, UnlockKey, client_config, live_client_config, live_join_server_config,
};
use shoal_raft_store::{Store, StoreConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::ca_service::CaService;
use crate::dispatcher::Dispatcher;
use crate::ids::new_id;
use crate::leader::{DEFAULT_TASK_HISTORY, Leader};
use crate::objects::{ObjectError, ObjectStore};
use crate::server::{Services, serve};

/// How a manager runs.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Where its state lives.
    pub data_dir: PathBuf,
    /// Where it listens (e.g. `0.0.0.0:2377`).
    pub listen_addr: SocketAddr,
    /// Where other nodes reach it (e.g. `192.0.2.11:2377`).
    pub advertise_addr: SocketAddr,
    /// How often nodes send heartbeats (Shoal's default: 1 s).
    pub heartbeat_period: Duration,
    /// How long node certificates are valid.
    pub cert_validity: Duration,
    /// For `init`: where overlay subnets come from (`--default-addr-pool`, CIDRs); empty:
    /// Swarm's 10.0.0.0/8.
    pub default_addr_pool: Vec<String>,
    /// For `init`: the prefix length of those subnets (`--default-addr-pool-mask-length`);
    /// 0: Swarm's 24.
    pub subnet_size: u32,
    /// For `init`: terminated tasks kept per slot (`--task-history-limit`; -1: all).
    pub task_history_limit: i64,
    /// For `init`: encrypt the managers' keys at rest with an unlock key (`--autolock`).
    pub autolock: bool,
    /// For `start` of a manager whose keys are locked (autolock): the unlock key, known already
    /// (`shoal-manager restore` was given it); `None`: it waits for `shoal cluster unlock`.
    pub unlock_key: Option<UnlockKey>,
    /// For `start` (`shoal-manager run --force-new-cluster`): the other managers are lost for
    /// good; this one becomes the only member of a new Raft group with the state it had.
    pub force_new_cluster: bool,
    /// Who answers the control API's `ResolveImage` (shoal-manager: its agent's registry
    /// client); `None`: that call says this manager cannot.
    pub image_resolver: Option<Arc<dyn crate::ImageResolver>>,
    /// Where the manager reports its metrics (Raft, store, tasks, leader passes, sessions);
    /// `None`: it keeps none.
    pub metrics: Option<crate::ManagerMetrics>,
}

impl ManagerConfig {
    /// Defaults for everything but the data directory and addresses.
    pub fn new(data_dir: impl Into<PathBuf>, listen_addr: SocketAddr, advertise_addr: SocketAddr) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen_addr,
            advertise_addr,
            heartbeat_period: Duration::from_secs(1),
            cert_validity: Duration::from_secs(90 * 24 * 3600),
            default_addr_pool: Vec::new(),
            subnet_size: 0,
            task_history_limit: DEFAULT_TASK_HISTORY as i64,
            autolock: false,
            unlock_key: None,
            force_new_cluster: false,
            image_resolver: None,
            metrics: None,
        }
    }
}

/// The cluster settings `init` stores, from its flags.
fn initial_spec(config: &ManagerConfig) -> v1::ClusterSpec {
    v1::ClusterSpec {
        annotations: Some(v1::Annotations { name: "default".into(), ..Default::default() }),
        task_history_retention_limit: config.task_history_limit,
        heartbeat_period: Some(shoal_api::to_duration(config.heartbeat_period)),
        node_cert_expiry: Some(shoal_api::to_duration(config.cert_validity)),
        autolock_managers: config.autolock,
        // The default (10,000 entries) until `cluster update --snapshot-interval`.
        snapshot_interval: 0,
        // Swarm's 12 h until `cluster update --network-key-rotation`.
        network_key_rotation: None,
    }
}

/// Checks the settings `init` stores, `--default-addr-pool` and `--default-addr-pool-mask-length` before anything is made.
fn check_pools(config: &ManagerConfig) -> Result<(), StartError> {
    let bad = |reason: String| StartError::DataDir { path: config.data_dir.clone(), reason };
    // The certificate lifetime's floor is for operators (the binaries' --cert-expiry and
    // `cluster update` keep it); an embedding program or a test may issue shorter ones.
    let spec = v1::ClusterSpec { node_cert_expiry: None, ..initial_spec(config) };
    crate::settings::validate(&spec).map_err(|status| bad(status.message().to_owned()))?;
    let size =
        if config.subnet_size == 0 { u32::from(crate::allocator::DEFAULT_SUBNET_SIZE) } else { config.subnet_size };
    if !(8..=29).contains(&size) {
        return Err(bad(format!("--default-addr-pool-mask-length {size} must be between 8 and 29")));
    }
    let mut pools: Vec<crate::allocator::Cidr> = Vec::new();
    for pool in &config.default_addr_pool {
        let cidr: crate::allocator::Cidr = pool.parse().map_err(|e| bad(format!("--default-addr-pool {pool}: {e}")))?;
        if cidr.prefix_len() > size as u8 {
            return Err(bad(format!(
                "--default-addr-pool {pool} is smaller than one subnet of /{size}; give a larger pool or a longer --default-addr-pool-mask-length"
            )));
        }
        if let Some(other) = pools.iter().find(|p| p.overlaps(&cidr)) {
            return Err(bad(format!("--default-addr-pool {pool} overlaps {other}")));
        }
        pools.push(cidr);
    }
    Ok(())
}

/// What a manager remembers about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) cluster_id: String,
    pub(crate) node_id: String,
    pub(crate) raft_id: u64,
    pub(crate) advertise_addr: String,
}

/// Creating or resuming a manager failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory already holds a cluster (for `init`) or holds none (for `start`).
    #[error("{path}: {reason}")]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A file of the data directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Certificates or keys could not be made, loaded or used.
    #[error("certificates: {0}")]
    Pki(String),
    /// The replicated store could not be opened or bootstrapped.
    #[error("raft store in {path}: {reason}")]
    Store {
        /// Its directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source} (is another manager running, or is the port taken?)")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// The first objects could not be written.
    #[error("cannot write the cluster's first objects: {0}")]
    Objects(#[from] ObjectError),
    /// Joining through the manager at `remote` failed.
    #[error("join through {remote}: {reason}")]
    Join {
        /// The manager asked.
        remote: String,
        /// What went wrong and what to do.
        reason: String,
    },
}

/// What `init` made, for printing the join commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOutcome {
    /// The new cluster's ID.
    pub cluster_id: String,
    /// This manager's node ID.
    pub node_id: String,
    /// `SHTKN-1-…` for workers.
    pub worker_token: String,
    /// `SHTKN-1-…` for managers.
    pub manager_token: String,
    /// The admin client bundle's directory.
    pub admin_bundle: PathBuf,
    /// With `--autolock`: the unlock key (`SHKEY-1-…`), to keep safe.
    pub unlock_key: Option<String>,
}

/// A running manager: its port, its store, its leader loop.
#[derive(Debug)]
pub struct RunningManager {
    /// This node's ID.
    pub node_id: String,
    /// The address it listens on (the bound port when 0 was asked).
    pub local_addr: SocketAddr,
    objects: ObjectStore,
    stop: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
    metrics: Option<crate::ManagerMetrics>,
    key_encryption: KeyEncryption,
}

impl RunningManager {
    /// The cluster state, for embedding and tests.
    pub fn objects(&self) -> &ObjectStore {
        &self.objects
    }

    /// The unlock key this manager writes its key files with (autolock), shared with a worker
    /// role in the same process (`WorkerConfig::key_encryption`).
    pub fn key_encryption(&self) -> &KeyEncryption {
        &self.key_encryption
    }

    /// Stops serving and leading, and closes the store. Open connections get a moment to finish
    /// their calls; long-lived streams (sessions, other managers' channels) are then cut.
    pub async fn shutdown(mut self) {
        if let Some(metrics) = self.metrics.take() {
            metrics.detach();
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for mut task in self.tasks.drain(..) {
            if tokio::time::timeout(Duration::from_secs(1), &mut task).await.is_err() {
                task.abort();
            }
        }
        self.objects.store().shutdown().await;
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StartError + use<> {
    let path = path.to_owned();
    move |source| StartError::Io { path: path.clone(), source }
}

fn pki(err: impl std::fmt::Display) -> StartError {
    StartError::Pki(err.to_string())
}

fn random_u64() -> u64 {
    let id = new_id();
    // An ID is 25 base36 digits of 128 random bits; its first 12 digits fit a u64 with room.
    u64::from_str_radix(&id[..12], 36).unwrap_or(1).max(1)
}

/// Creates a new cluster in `config.data_dir` (which must not hold one) and runs its first manager.
pub async fn init(config: &ManagerConfig) -> Result<(RunningManager, InitOutcome), StartError> {
    let data = &config.data_dir;
    check_pools(config)?;
    if data.join("manager.json").exists() {
        return Err(StartError::DataDir {
            path: data.clone(),
            reason: "already holds a cluster; start the manager without `init` to resume it, or use another --data-dir"
                .to_owned(),
        });
    }
    // manager.json is written last: without it, a Raft log or CA here is what an `init` or `join`
    // that did not finish left behind, and belongs to no cluster.
    forget_manager(data)?;
    for dir in [data.clone(), data.join("ca"), data.join("certs"), data.join("admin")] {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    }
    let now = time::OffsetDateTime::now_utc();
    let ca = ClusterCa::new(RootCa::generate(now).map_err(pki)?);
    let identity = Identity {
        cluster_id: new_id(),
        node_id: new_id(),
        raft_id: random_u64(),
        advertise_addr: config.advertise_addr.to_string(),
    };
    ca.save(&data.join("ca"), None).map_err(pki)?;
    let credentials = issue(&ca, &identity.node_id, Role::Manager, &identity.cluster_id, config.cert_validity)?;
    credentials.save(&data.join("certs"), None).map_err(pki)?;
    ca.trust_bundle().save(&data.join("certs")).map_err(pki)?;
    let admin_id = format!("{}{}", crate::tls::ADMIN_PREFIX, new_id());
    let admin = issue(&ca, &admin_id, Role::Manager, &identity.cluster_id, config.cert_validity)?;
    admin.save(&data.join("admin"), None).map_err(pki)?;
    ca.trust_bundle().save(&data.join("admin")).map_err(pki)?;

    let trust = ca.trust_bundle();
    let running = run(config, &identity, ca, Begin::Bootstrap, None, None).await?;
    match first_records(config, &identity, &trust, &admin_id, &running).await {
        Ok((join_tokens, unlock_key)) => {
            write_identity(data, &identity)?;
            tracing::info!(cluster.id = %identity.cluster_id, node.id = %identity.node_id, addr = %config.advertise_addr, "cluster initialised");
            let outcome = InitOutcome {
                cluster_id: identity.cluster_id,
                node_id: identity.node_id,
                worker_token: join_tokens.worker,
                manager_token: join_tokens.manager,
                admin_bundle: data.join("admin"),
                unlock_key,
            };
            Ok((running, outcome))
        }
        Err(err) => {
            running.shutdown().await;
            Err(err)
        }
    }
}

/// Writes the node's identity (`manager.json`) atomically: the last step of `init` and `join`.
pub(crate) fn write_identity(data: &Path, identity: &Identity) -> Result<(), StartError> {
    let json = serde_json::to_vec_pretty(identity).map_err(|e| pki(format!("encode manager.json: {e}")))?;
    let path = data.join("manager.json");
    let tmp = data.join("manager.json.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, &json)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data)?.sync_all()
    };
    write().map_err(io(&path))
}

/// A new cluster's first records: its join tokens (returned) and CA, the first manager's node,
/// the admin bundle `admin_id`, and with `--autolock` the unlock key (returned).
async fn first_records(
    config: &ManagerConfig,
    identity: &Identity,
    trust: &TrustBundle,
    admin_id: &str,
    running: &RunningManager,
) -> Result<(v1::JoinTokens, Option<String>), StartError> {
    let tokens = JoinTokens::generate(trust).map_err(pki)?;
    let join_tokens = v1::JoinTokens {
        worker: tokens.token(Role::Worker).to_string(),
        manager: tokens.token(Role::Manager).to_string(),
    };
    let cluster = v1::Cluster {
        id: identity.cluster_id.clone(),
        spec: Some(initial_spec(config)),
        longest_node_cert_expiry: Some(shoal_api::to_duration(config.cert_validity)),
        join_tokens: Some(join_tokens.clone()),
        root_ca_cert: trust.pem().as_bytes().to_vec(),
        root_ca_digest: join_tokens.worker.split('-').nth(2).unwrap_or_default().to_owned(),
        default_addr_pool: config.default_addr_pool.clone(),
        subnet_size: config.subnet_size,
        meta: None,
    };
    running.objects.create(cluster).await?;
    // The routing mesh's network, as Swarm makes it at init (its subnet comes from the pool).
    let ingress = v1::Network {
        id: crate::ids::new_id(),
        spec: Some(v1::NetworkSpec {
            annotations: Some(v1::Annotations { name: "ingress".into(), ..Default::default() }),
            driver: "overlay".into(),
            ingress: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    running.objects.create(ingress).await?;
    let node = v1::Node {
        id: identity.node_id.clone(),
        role: v1::NodeRole::Manager as i32,
        spec: Some(v1::NodeSpec { desired_role: v1::NodeRole::Manager as i32, ..Default::default() }),
        manager_status: Some(v1::ManagerStatus {
            raft_id: identity.raft_id,
            addr: identity.advertise_addr.clone(),
            leader: true,
            reachability: v1::manager_status::Reachability::Reachable as i32,
        }),
        ..Default::default()
    };
    running.objects.create(node).await?;
    let admin = v1::AdminCertificate { id: admin_id.to_owned(), issued_by: "init".into(), ..Default::default() };
    match running.objects.create(admin).await {
        // The renewal loop, already running, may have recorded the bundle first (a short
        // certificate validity renews it within a second).
        Ok(_) | Err(ObjectError::Exists { .. }) => {}
        Err(err) => return Err(err.into()),
    }
    let unlock_key = if config.autolock {
        let (keys, key) = crate::autolock::new_keys().map_err(|s| pki(s.message()))?;
        running.objects.create(keys).await?;
        Some(key.to_string())
    } else {
        None
    };
    Ok((join_tokens, unlock_key))
}

/// Joins the cluster of the manager at `remote` as a manager, with a manager join token, and runs.
///
/// The node first fetches the root CA over an unverified connection and checks it against the
/// token's digest, so nothing secret (the token, the CSR) is sent to an impostor; then it gets
/// its certificate, the cluster CA, starts its port and joins the Raft group as a voter.
pub async fn join(config: &ManagerConfig, remote: &str, token: &str) -> Result<RunningManager, StartError> {
    match join_node(config, remote, token).await? {
        Joined::Manager(running) => Ok(running),
        Joined::Worker { .. } => Err(StartError::Join {
            remote: remote.to_owned(),
            reason: "that is a worker token: join workers with `shoal-agent join`, or get the manager token with \
                     `shoal join-token manager`"
                .to_owned(),
        }),
    }
}

/// What [`join_node`] made of this node.
#[derive(Debug)]
pub enum Joined {
    /// A manager token: a Raft voter, running.
    Manager(RunningManager),
    /// A worker token: the node's worker certificate and the cluster's roots are in
    /// `DATA/certs`; the caller runs it as a worker, which `shoal node promote` can make a manager.
    Worker {
        /// The node's ID.
        node_id: String,
    },
}

/// Joins the cluster of the manager at `remote` with either token: as a manager (like [`join`])
/// or, with a worker token, as a worker whose process can later be promoted.
pub async fn join_node(config: &ManagerConfig, remote: &str, token: &str) -> Result<Joined, StartError> {
    use shoal_api::v1::ca_client::CaClient;
    let data = &config.data_dir;
    let failed = |reason: String| StartError::Join { remote: remote.to_owned(), reason };
    if data.join("manager.json").exists() {
        return Err(StartError::DataDir {
            path: data.clone(),
            reason: "already holds a cluster; start the manager without `join` to resume it, or use another --data-dir"
                .to_owned(),
        });
    }
    let token: shoal_ca_pki::JoinToken = token.parse().map_err(|e| failed(format!("invalid join token: {e}")))?;
    let status = |what: &str| {
        let what = what.to_owned();
        move |s: tonic::Status| StartError::Join {
            remote: remote.to_owned(),
            reason: format!("{what}: {}", s.message()),
        }
    };
    let connect = async |tls: rustls::ClientConfig| {
        shoal_api::connect(remote, tls)
            .await
            .map_err(|e| failed(format!("cannot connect: {e}; check the address and port")))
    };

    let unverified = shoal_ca_pki::bootstrap_client_config().map_err(pki)?;
    let served = CaClient::new(connect(unverified).await?)
        .get_root_ca_certificate(v1::GetRootCaCertificateRequest {})
        .await
        .map_err(status("fetch the root CA"))?
        .into_inner();
    let served =
        String::from_utf8(served.certificate).map_err(|_| failed("the served root CA is not PEM text".into()))?;
    let trust = token.verify_root_ca(&served).map_err(|e| {
        failed(format!("the root CA it serves does not match the token ({e}); check the address and the token"))
    })?;

    let key = NodeKey::generate().map_err(pki)?;
    let request = v1::IssueNodeCertificateRequest {
        csr: key.csr_pem().map_err(pki)?.into_bytes(),
        token: token.to_string(),
        availability: v1::NodeAvailability::Active as i32,
        worker_only: false,
    };
    let issued = CaClient::new(connect(shoal_ca_pki::join_client_config(&trust).map_err(pki)?).await?)
        .issue_node_certificate(request)
        .await
        .map_err(status("get a certificate"))?
        .into_inner();
    let chain =
        String::from_utf8(issued.certificate_chain).map_err(|_| failed("the certificate is not PEM text".into()))?;
    let credentials = NodeCredentials::new(&chain, key).map_err(pki)?;
    if issued.role != v1::NodeRole::Manager as i32 {
        let certs = data.join("certs");
        std::fs::create_dir_all(&certs).map_err(io(&certs))?;
        credentials.save(&certs, None).map_err(pki)?;
        trust.save(&certs).map_err(pki)?;
        tracing::info!(node.id = %issued.node_id, "joined the cluster as a worker");
        return Ok(Joined::Worker { node_id: issued.node_id });
    }
    become_manager(config, remote, credentials, trust, issued.cluster_id, issued.node_id, true)
        .await
        .map(Joined::Manager)
}

/// Turns a node that runs as a worker into a manager, after `shoal node promote`: its agent
/// renewed the certificate in `DATA/certs` (now a manager's) and handed over the managers it knew;
/// this fetches the cluster CA, joins the Raft group and starts the manager, as `join` does.
pub async fn promote(config: &ManagerConfig, managers: &[String]) -> Result<RunningManager, StartError> {
    let certs = config.data_dir.join("certs");
    let credentials = NodeCredentials::load(&certs, None).map_err(pki)?;
    let trust = TrustBundle::load(&certs).map_err(pki)?;
    let identity = credentials.identity().clone();
    if identity.role != Role::Manager {
        return Err(StartError::DataDir {
            path: certs,
            reason: "holds a worker certificate; a node is promoted with `shoal node promote`, which renews it".into(),
        });
    }
    let mut last = StartError::Join { remote: String::new(), reason: "no manager address known".into() };
    for remote in managers {
        let credentials = NodeCredentials::load(&certs, None).map_err(pki)?;
        let (cluster_id, node_id) = (identity.cluster_id.clone(), identity.node_id.clone());
        match become_manager(config, remote, credentials, trust.clone(), cluster_id, node_id, false).await {
            Ok(running) => return Ok(running),
            Err(err) => {
                tracing::warn!(manager = %remote, error = %err, "cannot become a manager through this one");
                last = err;
            }
        }
    }
    Err(last)
}

/// Removes the manager's state from `data_dir` after a demotion (the Raft group already let it
/// go): its identity, Raft log and snapshots, and the cluster CA's key. The node's certificate
/// stays (renewed as a worker's).
pub fn forget_manager(data_dir: &std::path::Path) -> Result<(), StartError> {
    let identity = data_dir.join("manager.json");
    match std::fs::remove_file(&identity) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&identity)(e)),
    }
    let key = data_dir.join(crate::data_key::FILE);
    match std::fs::remove_file(&key) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&key)(e)),
    }
    for dir in [data_dir.join("raft"), data_dir.join("ca"), data_dir.join(crate::autolock::LOCKED_DIR)] {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&dir)(e)),
        }
    }
    Ok(())
}

/// Whether `data_dir` holds a manager (made by `init`, `join` or `promote`).
pub fn holds_manager(data_dir: &std::path::Path) -> bool {
    data_dir.join("manager.json").is_file()
}

/// The address the manager in `data_dir` advertises (recorded by `init`, `join` or `promote`).
pub fn recorded_advertise_addr(data_dir: &std::path::Path) -> Result<String, StartError> {
    Ok(read_identity(data_dir)?.advertise_addr)
}

/// How many times a joining manager asks for `JoinRaft` before it gives up.
const JOIN_RAFT_ATTEMPTS: u32 = 5;

/// Whether a refused call may succeed when made again unchanged.
fn is_transient(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
            | Code::ResourceExhausted
    )
}

/// The second half of joining as a manager, with a manager certificate in hand: the cluster CA
/// from the manager at `remote`, this member's Raft store and port, then `JoinRaft`.
async fn become_manager(
    config: &ManagerConfig,
    remote: &str,
    credentials: NodeCredentials,
    trust: TrustBundle,
    cluster_id: String,
    node_id: String,
    fresh: bool,
) -> Result<RunningManager, StartError> {
    let result = become_manager_steps(config, remote, credentials, trust, cluster_id, node_id).await;
    if result.is_err() {
        // Nothing of a join that failed stays behind to block the next attempt: the Raft log, the
        // cluster CA and, for a node that had no certificate before (`join`, not `promote`), its
        // certificate.
        let data = &config.data_dir;
        let certs = data.join("certs");
        let cleaned = forget_manager(data).and_then(|()| match fresh {
            true => std::fs::remove_dir_all(&certs).or_else(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(io(&certs)(e)),
            }),
            false => Ok(()),
        });
        if let Err(err) = cleaned {
            tracing::warn!(error = %err, data_dir = %data.display(), "cannot remove what the failed join left; remove it by hand");
        }
    }
    result
}

/// A test hook: a join into one of these data directories fails right after the Raft group
/// admitted it, before it is recorded, as a crash or a full disk would make it.
#[cfg(test)]
pub(crate) static FAIL_JOIN_AFTER_RAFT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Asks the leader (through `control`, following its `shoal-leader` answers) to take this
/// manager's Raft member `raft_id` and node record back out after its join failed. Best effort:
/// what it cannot undo is logged with what to do.
async fn abandon_join(
    control: &mut shoal_api::v1::control_client::ControlClient<tonic::transport::Channel>,
    tls: &rustls::ClientConfig,
    raft_id: u64,
) {
    for _ in 0..JOIN_RAFT_ATTEMPTS {
        match control.abandon_join(v1::AbandonJoinRequest { raft_id }).await {
            Ok(_) => {
                tracing::info!(raft_id, "the failed join was undone on the leader");
                return;
            }
            Err(s) if is_transient(&s) => follow_leader(&s, control, tls).await,
            Err(s) => {
                tracing::warn!(raft_id, error = %s.message(), "cannot undo the failed join");
                return;
            }
        }
    }
    tracing::warn!(
        raft_id,
        "cannot undo the failed join: the cluster may count Raft member {raft_id} that never runs; \
         check `shoal node ls` and remove the node this join left"
    );
}

/// After a passing refusal `status`: when it names the Raft leader (a follower's answer),
/// points `control` at the leader for the next attempt; otherwise, or when the leader cannot be
/// reached, waits a second first.
async fn follow_leader(
    status: &tonic::Status,
    control: &mut shoal_api::v1::control_client::ControlClient<tonic::transport::Channel>,
    tls: &rustls::ClientConfig,
) {
    use shoal_api::v1::control_client::ControlClient;
    let leader = status.metadata().get(shoal_api::LEADER_METADATA).and_then(|v| v.to_str().ok());
    if let Some(leader) = leader {
        match shoal_api::connect(leader, tls.clone()).await {
            Ok(channel) => {
                tracing::info!(%leader, "asking the Raft leader");
                *control = ControlClient::new(channel);
                return;
            }
            Err(err) => tracing::warn!(%leader, error = %err, "cannot reach the Raft leader"),
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn become_manager_steps(
    config: &ManagerConfig,
    remote: &str,
    credentials: NodeCredentials,
    trust: TrustBundle,
    cluster_id: String,
    node_id: String,
) -> Result<RunningManager, StartError> {
    use shoal_api::v1::control_client::ControlClient;
    let data = &config.data_dir;
    let failed = |reason: String| StartError::Join { remote: remote.to_owned(), reason };
    let status = |what: &str| {
        let what = what.to_owned();
        move |s: tonic::Status| StartError::Join {
            remote: remote.to_owned(),
            reason: format!("{what}: {}", s.message()),
        }
    };
    let tls = client_config(&credentials, &trust).map_err(pki)?;
    let channel = shoal_api::connect(remote, tls.clone())
        .await
        .map_err(|e| failed(format!("cannot connect: {e}; check the address and port")))?;
    let mut control = ControlClient::new(channel);
    let ca =
        control.get_cluster_ca(v1::GetClusterCaRequest {}).await.map_err(status("get the cluster CA"))?.into_inner();
    let cert = String::from_utf8(ca.ca_cert).map_err(|_| failed("the CA certificate is not PEM text".into()))?;
    let ca_key = String::from_utf8(ca.ca_key).map_err(|_| failed("the CA key is not PEM text".into()))?;
    let ca = ClusterCa::new(RootCa::from_pem(&cert, &ca_key).map_err(pki)?);

    for dir in [data.clone(), data.join("ca"), data.join("certs")] {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    }
    ca.save(&data.join("ca"), None).map_err(pki)?;
    credentials.save(&data.join("certs"), None).map_err(pki)?;
    trust.save(&data.join("certs")).map_err(pki)?;
    let identity =
        Identity { cluster_id, node_id, raft_id: random_u64(), advertise_addr: config.advertise_addr.to_string() };
    let running = run(config, &identity, ca, Begin::Join, None, None).await?;
    // `JoinRaft` is idempotent: a lost answer or a passing failure (a leader change, a
    // conflicting write) is retried, since the leader may already count this node as a voter.
    // Only the leader adds members: a follower's refusal names it, and the node asks it next.
    let request = v1::JoinRaftRequest { raft_id: identity.raft_id, addr: identity.advertise_addr.clone() };
    let mut attempt = 1;
    let joined = loop {
        match control.join_raft(request.clone()).await {
            Ok(_) => break Ok(()),
            Err(s) if attempt < JOIN_RAFT_ATTEMPTS && is_transient(&s) => {
                tracing::info!(attempt, error = %s.message(), "joining the Raft group: asking again");
                follow_leader(&s, &mut control, &tls).await;
                attempt += 1;
            }
            Err(s) => break Err(status("join the Raft group")(s)),
        }
    };
    if let Err(err) = joined {
        // An attempt whose answer was lost may have made it a voter all the same.
        abandon_join(&mut control, &tls, identity.raft_id).await;
        running.shutdown().await;
        return Err(err);
    }
    #[cfg(test)]
    if FAIL_JOIN_AFTER_RAFT.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(data) {
        abandon_join(&mut control, &tls, identity.raft_id).await;
        running.shutdown().await;
        return Err(StartError::Join { remote: remote.to_owned(), reason: "failed on purpose (test)".into() });
    }
    // Only now is the node a member for good: a crash before this line leaves nothing to resume.
    if let Err(err) = write_identity(data, &identity) {
        abandon_join(&mut control, &tls, identity.raft_id).await;
        running.shutdown().await;
        return Err(err);
    }
    tracing::info!(node.id = %identity.node_id, raft_id = identity.raft_id, "joined the cluster as a manager");
    Ok(running)
}

/// Resumes the manager whose state is in `config.data_dir`.
pub async fn start(config: &ManagerConfig) -> Result<RunningManager, StartError> {
    let data = &config.data_dir;
    let identity = read_identity(data)?;
    let locked = crate::autolock::is_locked(data).map_err(pki)?;
    let (kek, listener) = match (locked, &config.unlock_key) {
        (false, _) => (None, None),
        (true, Some(key)) => {
            crate::autolock::unlock_files(data, std::slice::from_ref(key)).map_err(|e| StartError::DataDir {
                path: data.clone(),
                reason: format!("the unlock key given does not open this manager's keys: {e}"),
            })?;
            (Some(key.clone()), None)
        }
        (true, None) => {
            let (key, listener) = crate::lock::wait_for_unlock(data, config.listen_addr, &identity.node_id).await?;
            (Some(key), Some(listener))
        }
    };
    let ca = ClusterCa::load(&data.join("ca"), kek.as_ref()).map_err(pki)?;
    let certs = data.join("certs");
    let credentials = NodeCredentials::load(&certs, kek.as_ref()).map_err(pki)?;
    // A manager holds the cluster CA: a certificate that expired while it was down (or is about
    // to) is renewed here, before anything needs it. Its role is the certificate's: the store is
    // not open yet, and a role change since is followed as always, through the worker role.
    let now = time::OffsetDateTime::now_utc();
    if credentials.not_after() <= now + time::Duration::minutes(1) {
        let id = &credentials.identity().node_id;
        let renewed = issue(&ca, id, credentials.identity().role, &identity.cluster_id, config.cert_validity)?;
        renewed.save(&certs, kek.as_ref()).map_err(pki)?;
        tracing::warn!(
            node.id = %id,
            expired = %credentials.not_after(),
            not_after = %renewed.not_after(),
            "this manager's certificate expired while it was down; renewed it from the cluster CA"
        );
    }
    if config.force_new_cluster {
        crate::recovery::force_new_cluster(store_config_for(data, &identity, kek.as_ref())?).await?;
    }
    run(config, &identity, ca, Begin::Resume, kek, listener).await
}

/// The replicated store's configuration of the manager of `identity` in `data_dir` (its data
/// key, opened with `kek` under autolock, made if it has none yet).
pub(crate) fn store_config_for(
    data_dir: &Path,
    identity: &Identity,
    kek: Option<&UnlockKey>,
) -> Result<StoreConfig, StartError> {
    let raft_dir = data_dir.join("raft");
    let mut store_config = StoreConfig::new(identity.raft_id, identity.advertise_addr.clone(), &raft_dir);
    store_config.encryption_key = crate::data_key::load_or_create(data_dir, &raft_dir, kek)?;
    Ok(store_config)
}

/// Writes the node's key in the clear again after a demotion: a worker's key is not locked
/// (`kek` opens it; a key already in the clear is left as it is).
pub fn release_node_key(data_dir: &Path, kek: Option<&UnlockKey>) -> Result<(), StartError> {
    let path = data_dir.join("certs").join("node.key");
    match shoal_ca_pki::key_file_is_encrypted(&path) {
        Ok(true) => shoal_ca_pki::rekey_key_file(&path, kek, None).map_err(pki),
        Ok(false) => Ok(()),
        Err(shoal_ca_pki::KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(pki(err)),
    }
}

/// The identity (`manager.json`) of the manager in `data`.
pub(crate) fn read_identity(data: &Path) -> Result<Identity, StartError> {
    let identity_path = data.join("manager.json");
    let bytes = std::fs::read(&identity_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StartError::DataDir {
            path: data.to_path_buf(),
            reason: "holds no cluster; run `shoal-manager init` or `shoal-manager join` first".to_owned(),
        },
        _ => io(&identity_path)(e),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| StartError::DataDir {
        path: identity_path.clone(),
        reason: format!("is not a valid manager identity ({e}); restore it from a backup"),
    })
}

/// How a manager's Raft member begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Begin {
    /// The first member of a new cluster.
    Bootstrap,
    /// A member resuming from its data directory: it waits (up to 10 s) to hear a leader.
    Resume,
    /// A member about to ask for admission (`JoinRaft`): it hears no leader before that.
    Join,
}

fn issue(
    ca: &ClusterCa,
    node_id: &str,
    role: Role,
    cluster_id: &str,
    validity: Duration,
) -> Result<NodeCredentials, StartError> {
    let key = NodeKey::generate().map_err(pki)?;
    let identity = NodeIdentity { node_id: node_id.to_owned(), role, cluster_id: cluster_id.to_owned() };
    let validity = time::Duration::try_from(validity).map_err(pki)?;
    let chain =
        ca.issue(&key.csr_pem().map_err(pki)?, &identity, validity, time::OffsetDateTime::now_utc()).map_err(pki)?;
    NodeCredentials::new(&chain, key).map_err(pki)
}

/// Runs the manager of `identity`, whose certificate is saved in `DATA/certs` (its key and the
/// other key files encrypted with `kek` under autolock), on `listener` if it is given (a locked
/// manager's port), else on a new socket bound to the listen address.
async fn run(
    config: &ManagerConfig,
    identity: &Identity,
    ca: ClusterCa,
    begin: Begin,
    kek: Option<UnlockKey>,
    listener: Option<std::net::TcpListener>,
) -> Result<RunningManager, StartError> {
    let raft_dir = config.data_dir.join("raft");
    let store_err = |reason: String| StartError::Store { path: raft_dir.clone(), reason };
    // Every TLS config of the manager reads the certificate at each handshake, so renewals (by
    // the loop below, or the worker role after a role change) need no restart.
    let certs_dir = config.data_dir.join("certs");
    let key_encryption = KeyEncryption::new(kek.clone());
    let live = LiveCredentials::load_encrypted(&certs_dir, key_encryption.clone()).map_err(pki)?;
    let admin_dir = config.data_dir.join("admin");
    let admin =
        if admin_dir.join("node.crt").is_file() { Some(LiveCredentials::load(&admin_dir).map_err(pki)?) } else { None };
    let client = live_client_config(&live).map_err(pki)?;
    let transport = shoal_raft_store::grpc::GrpcTransport::new(Arc::new(client.clone()), "shoal-manager")
        .map_err(|e| store_err(e.to_string()))?
        .into_transport();
    let store = Store::open(store_config_for(&config.data_dir, identity, kek.as_ref())?, transport)
        .await
        .map_err(|e| store_err(e.to_string()))?;
    let listen = |source| StartError::Listen { addr: config.listen_addr, source };
    let listener = match listener {
        Some(listener) => TcpListener::from_std(listener).map_err(listen)?,
        None => TcpListener::bind(config.listen_addr).await.map_err(listen)?,
    };
    let local_addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.listen_addr, source })?;
    let removed = RemovedNodes::new();
    let tls = live_join_server_config(&live, &removed).map_err(pki)?;
    let objects = ObjectStore::new(store.clone());
    // The revocations this member holds are refused before the port serves anyone (after a
    // restart too); later ones as the store applies them (`revocation::follow`, below).
    let revocations = crate::revocation::load(&objects, &removed)
        .await
        .inspect_err(|reason| tracing::warn!(%reason, "cannot read the revocations yet"))
        .ok();
    let dispatcher = Dispatcher::new(objects.clone(), config.heartbeat_period);
    let ca = Arc::new(Mutex::new(ca));
    let services = Services {
        objects: objects.clone(),
        removed: removed.clone(),
        ca: ca.clone(),
        cluster_id: identity.cluster_id.clone(),
        cert_validity: config.cert_validity,
        dispatcher: dispatcher.clone(),
        client_tls: Some(client),
        image_resolver: config.image_resolver.clone(),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let stopped = futures::future::FutureExt::shared(async move {
        let _ = stopped.await;
    });
    let renewer = CaService::new(objects.clone(), ca.clone(), identity.cluster_id.clone(), config.cert_validity);
    let keeper = crate::autolock::Keeper {
        data_dir: config.data_dir.clone(),
        node_id: identity.node_id.clone(),
        cluster_id: identity.cluster_id.clone(),
        live: live.clone(),
        ca: ca.clone(),
        objects: objects.clone(),
        validity: config.cert_validity,
    };
    let keeping = tokio::spawn(keeper.run(stopped.clone()));
    let root_follower = crate::root_ca::Follower {
        data_dir: config.data_dir.clone(),
        node_id: identity.node_id.clone(),
        ca,
        objects: objects.clone(),
        renewer: renewer.clone(),
        key_encryption: key_encryption.clone(),
        node: live.clone(),
        admin: admin.clone(),
        trust_root: dispatcher.trust_root(),
    };
    let following_root = tokio::spawn(root_follower.run(stopped.clone()));
    let snapshots = tokio::spawn(crate::settings::follow_snapshot_interval(
        objects.clone(),
        identity.cluster_id.clone(),
        stopped.clone(),
    ));
    let mut renewing = vec![tokio::spawn(crate::renewal::keep_renewed(renewer.clone(), live, "node", stopped.clone()))];
    if let Some(admin) = admin {
        renewing.push(tokio::spawn(crate::renewal::keep_renewed(renewer, admin, "admin bundle", stopped.clone())));
    }
    let following = tokio::spawn(crate::revocation::follow(objects.clone(), removed, revocations, stopped.clone()));
    let serving = {
        let stopped = stopped.clone();
        tokio::spawn(async move {
            if let Err(err) = serve(listener, tls, services, stopped).await {
                tracing::error!(error = %err, "manager port stopped");
            }
        })
    };
    if begin == Begin::Bootstrap {
        store.bootstrap().await.map_err(|e| store_err(e.to_string()))?;
    }
    if begin != Begin::Join && store.wait_for_leader(Duration::from_secs(10)).await.is_none() {
        tracing::warn!("no Raft leader yet; requests fail with `no quorum` until enough managers are back");
    }
    if let Some(metrics) = &config.metrics {
        metrics.attach(&store, &dispatcher);
    }
    let leader = Leader::new(objects.clone(), dispatcher, DEFAULT_TASK_HISTORY).with_metrics(config.metrics.clone());
    let leading = tokio::spawn(async move { leader.run(Duration::from_millis(100), stopped).await });
    tracing::info!(node.id = %identity.node_id, addr = %local_addr, "manager running");
    Ok(RunningManager {
        node_id: identity.node_id.clone(),
        local_addr,
        objects,
        stop: Some(stop),
        tasks: [serving, leading, following, keeping, following_root, snapshots].into_iter().chain(renewing).collect(),
        metrics: config.metrics.clone(),
        key_encryption,
    })
}

#[cfg(test)]
mod tests;

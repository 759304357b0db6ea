//! The agent's session with a manager: open a session (the node is Ready), send heartbeats at
//! the period the manager asks, apply the assignment stream to the executor, and report task
//! status in batches. When the session breaks, tasks keep running; the agent tries the next
//! manager it knows (the leader first, when a manager that is not the leader named it), backing
//! off from 100 ms to 8 s (from 100 ms again after a session that had started), and the new
//! session's complete assignment set reconciles what changed meanwhile. A heartbeat unanswered
//! for three periods ends the session, as the manager would. The session also carries the
//! manager's log subscriptions (`logs.rs`), which end with it.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_api::v1::{self, dispatcher_client::DispatcherClient};
use shoal_runtime::ContainerRuntime;
use tokio::sync::{Mutex, mpsc};
use tonic::transport::Channel;

use crate::executor::Executor;
use crate::logs::{SessionLogs, next_subscriptions};
use crate::managers::ManagerRecord;
use crate::network::{Networking, ViewStream};

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Managers to reach (HOST:PORT), tried in turn.
    pub managers: Vec<String>,
    /// TLS with the node's certificate (ca-pki's `client_config`).
    pub tls: rustls::ClientConfig,
    /// This node's ID (its certificate's common name).
    pub node_id: String,
    /// What the node says of itself (hostname, platform, resources, engine labels).
    pub description: v1::NodeDescription,
    /// Where named volumes and the tasks' secret files live.
    pub dirs: crate::NodeDirs,
    /// The role the embedding process runs the node as (a worker, or a manager with its worker
    /// role).
    pub role: v1::NodeRole,
    /// The role of the node's certificate (the two differ only while a role change is under way).
    pub certificate_role: v1::NodeRole,
    /// Where the node's key and certificate live. With it, when the role the cluster gives the
    /// node (`shoal node promote|demote`) differs from the process's or the certificate's, the
    /// agent renews its certificate there and [`Agent::run`] returns
    /// [`AgentExit::RoleChanged`]; without it, role changes are logged and otherwise ignored.
    pub certs_dir: Option<PathBuf>,
    /// The node's credentials, as the TLS config in `tls` reads them (ca-pki's
    /// `live_client_config`). With them, an agent running as a worker renews its certificate at a
    /// random point between 50 % and 80 % of its lifetime through the CA of the manager it has a
    /// session with, and the next connection presents the new one (a manager renews its own
    /// certificate from the CA it holds).
    pub credentials: Option<shoal_ca_pki::LiveCredentials>,
    /// Networking: each task in a namespace of its own wired into its networks (overlay,
    /// egress, DNS, VIPs, routing mesh), following the manager's `Networks` stream. `None`: tasks
    /// get a fresh namespace with loopback only (the simulated runtime has no namespaces).
    pub network: Option<crate::NetworkConfig>,
    /// Where the agent counts its tasks by state and times container starts and image pulls;
    /// `None`: it keeps no metrics.
    pub metrics: Option<crate::AgentMetrics>,
}

/// Why [`Agent::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentExit {
    /// Its shutdown future resolved.
    Stopped,
    /// The cluster gives the node `role`, and its certificate in `certs_dir` now carries it: the
    /// embedder starts or stops the node's manager as needed and runs the agent again.
    RoleChanged {
        /// The new role.
        role: v1::NodeRole,
        /// The managers the agent knew of, to reach the cluster from the new role.
        managers: Vec<String>,
    },
}

/// The agent could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No manager address was given.
    #[error("no manager address to connect to; pass at least one HOST:PORT")]
    NoManagers,
    /// The runtime could not list this node's containers at start.
    #[error("cannot list this node's containers: {0}")]
    Runtime(#[from] shoal_runtime::ContainerError),
    /// Networking could not start.
    #[error(transparent)]
    Network(#[from] crate::NetworkError),
}

/// A worker: session, heartbeats, executor.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    runtime: Arc<dyn ContainerRuntime>,
    /// Sessions started since the agent was made (see [`Agent::sessions_started`]).
    sessions_started: AtomicU64,
    /// Where the embedder keeps the managers the agent knows, if anywhere.
    record: Option<ManagerRecord>,
}

/// Why a session ended.
#[derive(Debug, PartialEq, Eq)]
enum SessionEnd {
    Shutdown,
    /// The certificate was renewed with this role.
    RoleChanged(v1::NodeRole),
    Broken {
        /// What failed, for the log.
        reason: String,
        /// Whether the session had started (then the next attempt starts over from a short wait).
        established: bool,
        /// The leader's address, when a manager that is not the leader named it.
        leader: Option<String>,
    },
}

/// Heartbeat periods without an answer after which the agent gives up on a manager (the
/// manager marks the node Down after as many).
const MISSED_HEARTBEATS: u32 = 3;

/// Which manager to try next, and how long to wait first.
#[derive(Debug)]
struct Failover {
    managers: Vec<String>,
    next: usize,
    backoff: Duration,
    /// Managers that failed without starting a session since the last session started: a
    /// refusal naming one of them as the leader (a follower that has not heard of the leader's
    /// loss yet) does not send the next attempt back there.
    unreachable: Vec<String>,
    /// The heartbeat period the last session asked for: once known, the wait between attempts
    /// never exceeds it, so that after a leader change the new leader hears from this node
    /// within the three periods it waits before marking nodes Down.
    heartbeat: Option<Duration>,
}

impl Failover {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(8);

    fn new(managers: Vec<String>) -> Self {
        Self { managers, next: 0, backoff: Self::FIRST, unreachable: Vec::new(), heartbeat: None }
    }

    /// The manager to try now.
    fn pick(&mut self) -> String {
        let addr = self.managers[self.next % self.managers.len()].clone();
        self.next = (self.next + 1) % self.managers.len();
        addr
    }

    /// A session with `addr` started and named the cluster's managers: `addr` goes first and the
    /// list follows the cluster's (`managers::after_session`); the next manager tried after this
    /// session is the one after `addr`.
    fn started(&mut self, addr: &str, named: &[String]) {
        self.managers = crate::managers::after_session(&self.managers, addr, named);
        self.next = 1 % self.managers.len();
        self.unreachable.clear();
    }

    /// Adds managers not known yet (the leader a refusal named).
    fn learn(&mut self, addrs: impl IntoIterator<Item = String>) {
        for addr in addrs {
            if !addr.is_empty() && !self.managers.contains(&addr) {
                self.managers.push(addr);
            }
        }
    }

    /// How long to wait after a session broke: a session that had started starts over from the
    /// shortest wait, repeated failures double it up to 8 s (up to the heartbeat period once a
    /// session named it); a refusal that named the leader
    /// makes the leader the next manager tried.
    fn after_broken(&mut self, addr: &str, established: bool, leader: Option<String>) -> Duration {
        if !established && leader.is_none() && !self.unreachable.iter().any(|a| a == addr) {
            self.unreachable.push(addr.to_owned());
        }
        if let Some(leader) = leader.filter(|l| !self.unreachable.contains(l)) {
            self.learn([leader.clone()]);
            self.next = self.managers.iter().position(|m| *m == leader).unwrap_or(self.next);
        }
        if established {
            self.backoff = Self::FIRST;
        }
        let max = self.heartbeat.map_or(Self::MAX, |period| period.clamp(Self::FIRST, Self::MAX));
        let wait = self.backoff.min(max);
        self.backoff = (self.backoff * 2).min(max);
        wait
    }
}

impl Agent {
    /// An agent running tasks through `runtime`.
    pub fn new(config: AgentConfig, runtime: Arc<dyn ContainerRuntime>) -> Self {
        Self { config, runtime, record: None, sessions_started: AtomicU64::new(0) }
    }

    /// How many sessions the agent has started (with a manager that accepted it and opened its
    /// assignment stream). A healthy agent starts one and keeps it until a manager goes away;
    /// one whose sessions keep breaking (say, on an assignment message it cannot decode) starts
    /// one after another, which this shows.
    pub fn sessions_started(&self) -> u64 {
        self.sessions_started.load(Ordering::Relaxed)
    }

    /// Has the agent call `save` with the managers it knows whenever a session that starts
    /// changes them: the session's manager first (the one most recently known to work), then the
    /// others the cluster still lists, then new ones; never empty. `save` is called on the
    /// blocking pool and only when the list differs from the one saved last (at first, the
    /// `managers` the agent was given, which the embedder read from where it saves); a failure
    /// is logged and retried at the next session. `run_worker` saves them in `agent.json`.
    pub fn saving_managers(
        mut self,
        save: impl Fn(&[String]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send + Sync + 'static,
    ) -> Self {
        self.record = Some(ManagerRecord::new(Arc::new(save), self.config.managers.clone()));
        self
    }

    /// Runs until `shutdown` resolves. Containers keep running after it returns; an agent started
    /// again adopts them.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<AgentExit, AgentError> {
        if self.config.managers.is_empty() {
            return Err(AgentError::NoManagers);
        }
        let (reports, mut reported) = mpsc::unbounded_channel();
        let network = match &self.config.network {
            Some(config) => Some(Networking::start(config.clone(), self.config.node_id.clone()).await?),
            None => None,
        };
        let mut description = self.config.description.clone();
        if let Some(network) = &network {
            network.describe(&mut description);
        }
        let mut executor = Executor::new(
            self.runtime.clone(),
            self.config.node_id.clone(),
            &self.config.dirs,
            reports,
            network.clone(),
        );
        executor.set_node_hostname(&description.hostname);
        executor.set_metrics(self.config.metrics.clone());
        let found = executor.discover().await?;
        if let Some(network) = &network {
            // Their namespaces stay until their controllers adopt or release them.
            network.protect(found);
        }
        let context = SessionContext { description, network };
        // The latest status of each task not yet delivered, kept across sessions.
        let pending: Arc<Mutex<BTreeMap<String, v1::TaskStatus>>> = Arc::default();
        let collector = {
            let pending = pending.clone();
            tokio::spawn(async move {
                while let Some((task, status)) = reported.recv().await {
                    pending.lock().await.insert(task, status);
                }
            })
        };
        tokio::pin!(shutdown);
        let mut failover = Failover::new(self.config.managers.clone());
        loop {
            let addr = failover.pick();
            let end = tokio::select! {
                () = &mut shutdown => SessionEnd::Shutdown,
                end = self.session(&addr, &context, &mut executor, &pending, &mut failover) => end,
            };
            let (reason, established, leader) = match end {
                SessionEnd::Shutdown => break,
                SessionEnd::RoleChanged(role) => {
                    collector.abort();
                    return Ok(AgentExit::RoleChanged { role, managers: failover.managers.clone() });
                }
                SessionEnd::Broken { reason, established, leader } => (reason, established, leader),
            };
            let wait = failover.after_broken(&addr, established, leader);
            tracing::warn!(manager = %addr, %reason, retry_in_ms = wait.as_millis() as u64, "session ended");
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(wait) => {}
            }
        }
        collector.abort();
        Ok(AgentExit::Stopped)
    }

    /// Asks the CA of the manager behind `channel` for a new certificate for a new key (the CA
    /// keeps the node's ID and gives the role the cluster has for it); returns the key and chain.
    async fn request_certificate(
        channel: tonic::transport::Channel,
    ) -> Result<(shoal_ca_pki::NodeKey, String), String> {
        use shoal_api::v1::ca_client::CaClient;
        let key = shoal_ca_pki::NodeKey::generate().map_err(|e| e.to_string())?;
        let csr = key.csr_pem().map_err(|e| e.to_string())?.into_bytes();
        let renewed = CaClient::new(channel)
            .renew_node_certificate(v1::RenewNodeCertificateRequest { csr })
            .await
            .map_err(|s| format!("renew the certificate: {}", s.message()))?
            .into_inner();
        let chain =
            String::from_utf8(renewed.certificate_chain).map_err(|_| "the certificate is not PEM text".to_owned())?;
        Ok((key, chain))
    }

    /// Renews the node's certificate for its new role through the CA of the manager at `addr`
    /// and saves it in `certs_dir` (key and certificate replaced together).
    async fn renew_for_role(
        &self,
        channel: tonic::transport::Channel,
        certs_dir: &std::path::Path,
    ) -> Result<(), String> {
        let (key, chain) = Self::request_certificate(channel).await?;
        let credentials = shoal_ca_pki::NodeCredentials::new(&chain, key).map_err(|e| e.to_string())?;
        // Encrypted as the manager in this process keeps it (autolock), if there is one.
        let kek = self.config.credentials.as_ref().and_then(|live| live.key_encryption().get());
        credentials
            .save(certs_dir, kek.as_ref())
            .map_err(|e| format!("save the certificate in {}: {e}", certs_dir.display()))
    }

    /// The node's certificate issuer and trusted roots, as it reports them.
    fn tls_info(&self) -> Option<v1::NodeTlsInfo> {
        let (cert_issuer, trust_root) = self.config.credentials.as_ref()?.tls_fingerprints();
        Some(v1::NodeTlsInfo { cert_issuer, trust_root })
    }

    /// Follows a root CA rotation on a worker: when the cluster's roots (fingerprint `wanted`)
    /// are not the ones the node trusts, fetches them over this session's channel (verified with
    /// the roots trusted now), trusts them, and renews the certificate at once if the newest root
    /// did not sign it. Returns whether it renewed. A manager in this process does this itself.
    async fn follow_trust_root(&self, channel: Channel, wanted: &str, limit: Duration) -> Result<bool, String> {
        use shoal_api::v1::ca_client::CaClient;
        let Some(live) = self.config.credentials.as_ref().filter(|_| self.config.role == v1::NodeRole::Worker) else {
            return Ok(false);
        };
        if live.trust().fingerprint() != wanted {
            let served = tokio::time::timeout(
                limit,
                CaClient::new(channel.clone()).get_root_ca_certificate(v1::GetRootCaCertificateRequest {}),
            )
            .await
            .map_err(|_| format!("no root CA bundle within {} ms", limit.as_millis()))?
            .map_err(|s| format!("fetch the root CA bundle: {}", s.message()))?
            .into_inner();
            let pem =
                String::from_utf8(served.certificate).map_err(|_| "the root CA bundle is not PEM text".to_owned())?;
            let bundle = shoal_ca_pki::TrustBundle::from_pem(&pem).map_err(|e| e.to_string())?;
            if bundle.fingerprint() != wanted {
                // This manager has not taken up the cluster's roots yet: asked again next beat.
                return Ok(false);
            }
            live.set_trust(&bundle).map_err(|e| format!("trust the cluster's root CA bundle: {e}"))?;
            tracing::info!(trust_root = %wanted, "trusting the cluster's root CA bundle");
        }
        if live.issued_by_newest_root() {
            return Ok(false);
        }
        let (key, chain) = tokio::time::timeout(limit, Self::request_certificate(channel))
            .await
            .map_err(|_| format!("no certificate within {} ms", limit.as_millis()))??;
        let renewed = live.renew(&chain, key).map_err(|e| e.to_string())?;
        tracing::info!(not_after = %renewed.not_after(), "certificate renewed from the cluster's new root CA");
        Ok(true)
    }

    /// When the worker's certificate is next due for renewal (never, without live credentials or
    /// when a manager in this process renews it).
    fn renewal_due(&self) -> Option<tokio::time::Instant> {
        let live = self.config.credentials.as_ref().filter(|_| self.config.role == v1::NodeRole::Worker)?;
        Some(tokio::time::Instant::now() + live.until_renewal())
    }

    /// Renews the worker's certificate through the manager behind `channel`; returns when to try
    /// next (the next renewal point, or sooner after a failure).
    async fn renew_when_due(&self, channel: Channel, limit: Duration) -> Option<tokio::time::Instant> {
        let live = self.config.credentials.as_ref()?;
        let result = match tokio::time::timeout(limit, Self::request_certificate(channel)).await {
            Ok(Ok((key, chain))) => live.renew(&chain, key).map_err(|e| e.to_string()),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(format!("no answer within {} ms", limit.as_millis())),
        };
        match result {
            Ok(renewed) => {
                tracing::info!(not_after = %renewed.not_after(), "certificate renewed");
                self.renewal_due()
            }
            Err(reason) => {
                let not_after = live.current().not_after();
                let wait = live.retry_wait();
                tracing::warn!(%not_after, %reason, retry_in_ms = wait.as_millis() as u64, "certificate renewal failed");
                Some(tokio::time::Instant::now() + wait)
            }
        }
    }

    async fn session(
        &self,
        addr: &str,
        context: &SessionContext,
        executor: &mut Executor,
        pending: &Mutex<BTreeMap<String, v1::TaskStatus>>,
        failover: &mut Failover,
    ) -> SessionEnd {
        let refused = |what: &str, e: &dyn std::fmt::Display| SessionEnd::Broken {
            reason: format!("{what}: {e}"),
            established: false,
            leader: None,
        };
        // A refusal by a manager that is not the leader names the leader, to be tried next.
        let refused_by = |what: &str, status: &tonic::Status, established: bool| SessionEnd::Broken {
            reason: format!("{what}: {}", status.message()),
            established,
            leader: status.metadata().get(shoal_api::LEADER_METADATA).and_then(|v| v.to_str().ok()).map(str::to_owned),
        };
        let channel: Channel = match shoal_api::connect(addr, self.config.tls.clone()).await {
            Ok(channel) => channel,
            Err(err) if shoal_ca_pki::refused_as_revoked(&err) => {
                // Retrying changes nothing: say what to do, then keep trying (the node may be
                // rejoined under the same data directory by its operator meanwhile).
                tracing::error!(
                    manager = %addr,
                    node.id = %self.config.node_id,
                    "the managers refuse this node's certificate: it was removed from the cluster; empty the \
                     data directory and join again with a token"
                );
                return refused("connect", &"the node's certificate was revoked (the node was removed)");
            }
            Err(err) => return refused("connect", &err),
        };
        // Assignment messages are cut at 1 MiB by the manager; this accepts up to 4 MiB.
        let mut dispatcher = DispatcherClient::new(channel.clone()).max_decoding_message_size(MAX_ASSIGNMENT_BYTES);
        let mut told_role_change = false;
        // The volume report the manager has from this session.
        let mut reported_volumes: Option<v1::VolumeReport> = None;
        let mut reported_tls: Option<v1::NodeTlsInfo> = None;
        // Heartbeats in a row that said this manager is outside the Raft group.
        let mut outside_raft = 0;
        let request = v1::SessionRequest { description: Some(context.description.clone()), session_id: String::new() };
        let mut session = match dispatcher.session(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return refused_by("open session", &status, false),
        };
        let first = match session.message().await {
            Ok(Some(first)) => first,
            Ok(None) => return refused("session", &"closed at once"),
            Err(status) => return refused_by("session", &status, false),
        };
        let session_id = first.session_id;
        if let (Some(network), Some(node)) = (&context.network, &first.node) {
            network.set_node(node);
        }
        let named: Vec<String> = first.managers.into_iter().map(|peer| peer.addr).collect();
        failover.started(addr, &named);
        if let Some(record) = &self.record {
            record.save(&failover.managers).await;
        }
        let request = v1::AssignmentsRequest { session_id: session_id.clone() };
        let mut assignments = match dispatcher.assignments(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return refused_by("assignments", &status, false),
        };
        // The networks stream, beside the assignments, when networking is on. A manager without
        // it (an older one) leaves the node's networks as they are.
        let mut networks = match &context.network {
            Some(_) => {
                let request = v1::NetworksRequest { session_id: session_id.clone() };
                match dispatcher.networks(request).await {
                    Ok(response) => Some(response.into_inner()),
                    Err(status) if status.code() == tonic::Code::Unimplemented => {
                        tracing::warn!(manager = %addr, "the manager has no networks stream: task networks are not followed");
                        None
                    }
                    Err(status) => return refused_by("networks", &status, false),
                }
            }
            None => None,
        };
        // The log subscriptions for this node's tasks (`shoal service logs`). A manager without
        // them (an older one) gets no logs from this node.
        let request = v1::LogSubscriptionsRequest { session_id: session_id.clone() };
        let mut log_subscriptions = match dispatcher.log_subscriptions(request).await {
            Ok(response) => Some(response.into_inner()),
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                tracing::warn!(manager = %addr, "the manager has no log subscriptions: task logs are not served");
                None
            }
            Err(status) => return refused_by("log subscriptions", &status, false),
        };
        let mut logs =
            SessionLogs::new(self.runtime.clone(), DispatcherClient::new(channel.clone()), session_id.clone());
        let mut view_stream = ViewStream::default();
        tracing::info!(manager = %addr, "session started");
        self.sessions_started.fetch_add(1, Ordering::Relaxed);
        let mut received = AssignmentState::default();
        let broken = |what: &str, e: &dyn std::fmt::Display| SessionEnd::Broken {
            reason: format!("{what}: {e}"),
            established: true,
            leader: None,
        };
        let mut period = Duration::from_secs(1);
        let mut heartbeat = tokio::time::interval(period);
        let mut flush_tick = tokio::time::interval(Duration::from_millis(50));
        let mut renew_at = self.renewal_due();
        loop {
            let renewal = async {
                match renew_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = renewal => {
                    renew_at = self.renew_when_due(channel.clone(), period * MISSED_HEARTBEATS).await;
                }
                _ = heartbeat.tick() => {
                    // The node's volumes, when they changed since the session last said (and
                    // with its first heartbeat).
                    let report = volume_report(executor);
                    let volumes = (reported_volumes.as_ref() != Some(&report)).then(|| report.clone());
                    // What its certificate and trust are, when that changed (a root CA rotation
                    // waits for every node to say it holds the new root's).
                    let tls = self.tls_info();
                    let tls_info = (reported_tls != tls).then(|| tls.clone()).flatten();
                    let beat = dispatcher.heartbeat(v1::HeartbeatRequest { session_id: session_id.clone(), volumes, tls_info });
                    // A manager cut off by a partition never answers; a TCP keep-alive would
                    // notice only after tens of seconds.
                    match tokio::time::timeout(period * MISSED_HEARTBEATS, beat).await {
                        Err(_) => return broken("heartbeat", &format!("no answer within {} ms", (period * MISSED_HEARTBEATS).as_millis())),
                        Ok(Ok(response)) => {
                            let response = response.into_inner();
                            reported_volumes = Some(report);
                            reported_tls = tls;
                            remove_volumes(executor, &response.remove_volumes).await;
                            if !response.trust_root.is_empty() {
                                match self.follow_trust_root(channel.clone(), &response.trust_root, period * MISSED_HEARTBEATS).await {
                                    Ok(true) => renew_at = self.renewal_due(),
                                    Ok(false) => {}
                                    Err(reason) => tracing::warn!(%reason, trust_root = %response.trust_root, "cannot follow the cluster's root CA yet"),
                                }
                            }
                            let role = v1::NodeRole::try_from(response.role).unwrap_or(self.config.role);
                            // A manager removed from the Raft group whose role is manager again
                            // (demoted, then promoted before it heard): it restarts as a worker,
                            // and the promotion brings it back in. Twice in a row, so that a
                            // record written a moment late is not taken for a removal.
                            let manager = v1::NodeRole::Manager;
                            outside_raft = if self.config.role == manager && role == manager && !response.raft_member {
                                outside_raft + 1
                            } else {
                                0
                            };
                            if outside_raft >= 2 && self.config.certs_dir.is_some() {
                                tracing::warn!("this manager is no longer in the Raft group: it restarts as a worker to join again");
                                return SessionEnd::RoleChanged(v1::NodeRole::Worker);
                            }
                            if role != self.config.role || role != self.config.certificate_role {
                                match &self.config.certs_dir {
                                    Some(dir) => match tokio::time::timeout(period * MISSED_HEARTBEATS, self.renew_for_role(channel.clone(), dir)).await {
                                        Ok(Ok(())) => {
                                            tracing::info!(role = role.as_str_name(), "the cluster changed this node's role; certificate renewed");
                                            // What the tasks reported last goes out before the agent stops.
                                            if let Err(err) = flush(&mut dispatcher, &session_id, pending, period * MISSED_HEARTBEATS).await {
                                                tracing::warn!(error = %err, "could not deliver the last task states before the role change");
                                            }
                                            return SessionEnd::RoleChanged(role);
                                        }
                                        Ok(Err(err)) => return broken("change role", &err),
                                        Err(_) => return broken("change role", &format!("no answer within {} ms", (period * MISSED_HEARTBEATS).as_millis())),
                                    },
                                    None if !told_role_change => {
                                        told_role_change = true;
                                        tracing::warn!(role = role.as_str_name(), "the cluster changed this node's role, which this agent cannot follow");
                                    }
                                    None => {}
                                }
                            }
                            let asked = shoal_api::from_duration(response.period.as_ref()).unwrap_or(period);
                            if asked != period && !asked.is_zero() {
                                period = asked;
                                heartbeat = tokio::time::interval(period);
                                heartbeat.tick().await;
                            }
                            failover.heartbeat = Some(period);
                        }
                        Ok(Err(status)) => return refused_by("heartbeat", &status, true),
                    }
                }
                _ = flush_tick.tick() => {
                    if let Err(err) = flush(&mut dispatcher, &session_id, pending, period * MISSED_HEARTBEATS).await {
                        return broken("report task status", &err);
                    }
                }
                message = assignments.message() => match message {
                    Ok(Some(message)) => {
                        if let Err(reason) = apply(executor, &mut received, message) {
                            return broken("assignments", &reason);
                        }
                    }
                    Ok(None) => return broken("assignments", &"stream ended"),
                    Err(status) => return broken("assignments", &status.message()),
                },
                message = next_networks(&mut networks) => match message {
                    Ok(Some(message)) => {
                        match view_stream.receive(message) {
                            Ok(update) => {
                                if let Some(network) = &context.network {
                                    network.update_view(update);
                                }
                            }
                            Err(reason) => return broken("networks", &reason),
                        }
                    }
                    Ok(None) => return broken("networks", &"stream ended"),
                    Err(status) => return broken("networks", &status.message()),
                },
                message = next_subscriptions(&mut log_subscriptions) => match message {
                    Ok(Some(message)) => logs.apply(message),
                    Ok(None) => return broken("log subscriptions", &"stream ended"),
                    Err(status) => return broken("log subscriptions", &status.message()),
                },
                message = session.message() => match message {
                    Ok(Some(message)) => {
                        if let (Some(network), Some(node)) = (&context.network, &message.node) {
                            network.set_node(node);
                        }
                    }
                    Ok(None) => return broken("session", &"the manager ended it"),
                    Err(status) => return broken("session", &status.message()),
                },
            }
        }
    }
}

/// What every session of one run shares.
#[derive(Debug)]
struct SessionContext {
    /// The node's description, with what networking adds.
    description: v1::NodeDescription,
    network: Option<Arc<Networking>>,
}

/// The next message of the networks stream; never, without one.
async fn next_networks(
    stream: &mut Option<tonic::Streaming<v1::NetworksMessage>>,
) -> Result<Option<v1::NetworksMessage>, tonic::Status> {
    match stream {
        Some(stream) => stream.message().await,
        None => std::future::pending().await,
    }
}

/// The most task states one report carries. A status is a few hundred bytes (its error message
/// is the longest part, and the manager bounds nothing else in it), so 500 stay far below the
/// manager's 4 MiB message limit.
const STATUS_BATCH: usize = 500;

/// Sends the pending task states in one batch, waiting at most `limit` for the answer, and
/// forgets what was delivered (unless a newer state arrived meanwhile).
async fn flush(
    dispatcher: &mut DispatcherClient<Channel>,
    session_id: &str,
    pending: &Mutex<BTreeMap<String, v1::TaskStatus>>,
    limit: Duration,
) -> Result<(), String> {
    // At most STATUS_BATCH per request, so that a node with tens of thousands of tasks never
    // sends a report over the manager's message limit; the rest go with the next flush.
    let batch: Vec<v1::TaskStatusUpdate> = pending
        .lock()
        .await
        .iter()
        .take(STATUS_BATCH)
        .map(|(task_id, status)| v1::TaskStatusUpdate { task_id: task_id.clone(), status: Some(status.clone()) })
        .collect();
    if batch.is_empty() {
        return Ok(());
    }
    let sent: Vec<(String, Option<i32>)> =
        batch.iter().map(|u| (u.task_id.clone(), u.status.as_ref().map(|s| s.state))).collect();
    let request = v1::UpdateTaskStatusRequest { session_id: session_id.to_owned(), updates: batch };
    match tokio::time::timeout(limit, dispatcher.update_task_status(request)).await {
        Err(_) => return Err(format!("no answer within {} ms", limit.as_millis())),
        Ok(Err(status)) => return Err(status.message().to_owned()),
        Ok(Ok(_)) => {}
    }
    let mut pending = pending.lock().await;
    for (task_id, state) in sent {
        if pending.get(&task_id).map(|s| Some(s.state)) == Some(state) {
            pending.remove(&task_id);
        }
    }
    Ok(())
}

/// The largest assignment message the agent accepts (its decode limit on the dispatcher's
/// answers), set explicitly because both ends depend on it: the manager keeps each message at
/// most 1 MiB and sends a larger one only for a single change, never over this (its
/// `ASSIGNMENT_MAX_BYTES`, in `crates/manager/src/dispatcher.rs`); task specs are refused over
/// 512 KiB. Four chunks of headroom: a message over it would fail to decode, break the session,
/// and come again in the next one.
const MAX_ASSIGNMENT_BYTES: usize = 4 << 20;

/// The assignment stream of one session as the agent follows it: the parts of a complete set
/// gathered until the last one arrives, then increments checked against the set they apply to
/// (see `AssignmentsMessage` in `proto/shoal/v1/dispatcher.proto`).
#[derive(Debug, Default)]
struct AssignmentState {
    /// The complete set being received: the set it results in, its tasks and its secrets and
    /// configs so far.
    partial: Option<(u64, Vec<v1::Task>, Vec<v1::AssignmentChange>)>,
    /// The set the node holds (what the last applied message resulted in); none before the
    /// first complete set.
    current: Option<u64>,
}

/// What a message asks of the executor.
#[derive(Debug, PartialEq)]
enum Assigned {
    /// Nothing yet: a part of a complete set, more parts to come.
    Wait,
    /// The node's whole set: tasks not in it are no longer the node's; with the secrets and
    /// configs they use.
    Complete(Vec<v1::Task>, Vec<v1::AssignmentChange>),
    /// Changes to apply in order.
    Changes(Vec<v1::AssignmentChange>),
}

impl AssignmentState {
    /// Takes the next message of the stream; an error is a stream out of order, which ends
    /// the session (the next one starts with a complete set).
    fn receive(&mut self, message: v1::AssignmentsMessage) -> Result<Assigned, String> {
        use v1::assignments_message::Type;
        match Type::try_from(message.r#type) {
            Ok(Type::Complete) => {
                let (results_in, mut tasks, mut payloads) =
                    self.partial.take().unwrap_or((message.results_in, Vec::new(), Vec::new()));
                if results_in != message.results_in {
                    return Err(format!(
                        "a part of complete set {} arrived before the last part of complete set {results_in}",
                        message.results_in
                    ));
                }
                for change in message.changes {
                    match change.task {
                        Some(task) => tasks.push(task),
                        None => payloads.push(change),
                    }
                }
                if message.more {
                    self.partial = Some((results_in, tasks, payloads));
                    return Ok(Assigned::Wait);
                }
                self.current = Some(results_in);
                Ok(Assigned::Complete(tasks, payloads))
            }
            Ok(Type::Incremental) => {
                if let Some((results_in, ..)) = &self.partial {
                    return Err(format!("an increment arrived before the last part of complete set {results_in}"));
                }
                if message.more {
                    return Err(format!(
                        "increment {} says more parts follow; only complete sets have parts",
                        message.applies_to
                    ));
                }
                if self.current != Some(message.applies_to) {
                    let held = self.current.map_or_else(|| "none yet".to_owned(), |c| c.to_string());
                    return Err(format!(
                        "an increment applies to set {}, this node holds set {held}",
                        message.applies_to
                    ));
                }
                self.current = Some(message.results_in);
                Ok(Assigned::Changes(message.changes))
            }
            Err(_) => Err(format!("unknown assignment message type {}", message.r#type)),
        }
    }
}

/// The node's named volumes as the manager records them: each with the tasks here that use it.
fn volume_report(executor: &Executor) -> v1::VolumeReport {
    let volumes = match executor.volumes().list() {
        Ok(volumes) => volumes,
        Err(err) => {
            tracing::warn!(error = %err, "cannot list the node's volumes");
            return v1::VolumeReport::default();
        }
    };
    let mut users = executor.volume_users();
    let volumes = volumes
        .into_iter()
        .map(|v| v1::NodeVolume {
            task_ids: users.remove(&v.name).unwrap_or_default(),
            name: v.name,
            driver: "local".to_owned(),
            options: v.options.into_iter().collect(),
            labels: v.labels.into_iter().collect(),
            created_at: Some(shoal_api::to_timestamp(v.created_at)),
            mountpoint: v.mountpoint.display().to_string(),
        })
        .collect();
    v1::VolumeReport { volumes }
}

/// Removes the volumes the manager asks to (`shoal volume rm|prune`), unless a task here uses
/// one (the manager checked; a task may have come since): it stays, and the next report says so.
async fn remove_volumes(executor: &Executor, names: &[String]) {
    if names.is_empty() {
        return;
    }
    let users = executor.volume_users();
    for name in names {
        if let Some(tasks) = users.get(name) {
            tracing::warn!(volume = %name, tasks = ?tasks, "volume removal asked while a task here uses it: kept");
            continue;
        }
        let (volumes, volume) = (executor.volumes().clone(), name.clone());
        // Unmounting a network filesystem may take a while: off the runtime's threads.
        match tokio::task::spawn_blocking(move || volumes.remove(&volume)).await {
            Ok(Ok(())) => tracing::info!(volume = %name, "volume removed"),
            Ok(Err(shoal_runtime::VolumeError::NotFound { .. })) => {}
            Ok(Err(err)) => tracing::warn!(volume = %name, error = %err, "could not remove a volume"),
            Err(err) => tracing::warn!(volume = %name, error = %err, "could not remove a volume"),
        }
    }
}

/// Applies a message of the assignment stream to the executor, once it makes sense: a complete
/// set when its last part arrives. Secrets and configs go to the node's payloads (before the
/// tasks that use them, in the order the manager sent them).
fn apply(executor: &mut Executor, state: &mut AssignmentState, message: v1::AssignmentsMessage) -> Result<(), String> {
    match state.receive(message)? {
        Assigned::Wait => {}
        Assigned::Complete(tasks, payloads) => {
            executor.payloads().lock().unwrap_or_else(std::sync::PoisonError::into_inner).set_complete(&payloads);
            executor.set_complete(tasks);
        }
        Assigned::Changes(changes) => {
            for change in changes {
                if executor.payloads().lock().unwrap_or_else(std::sync::PoisonError::into_inner).apply(&change) {
                    continue;
                }
                let Some(task) = change.task else { continue };
                if change.action == v1::assignment_change::Action::Remove as i32 {
                    executor.remove(&task.id);
                } else {
                    executor.update(task);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

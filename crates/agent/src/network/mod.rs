//! The agent's networking: it wires each task into Shoal's networks. From the manager's
//! `Networks` stream ([`view`]), the tasks wired here and the node's ingress attachment, pure
//! code ([`plan`]) computes what the node needs — overlay endpoints and peers, egress, VIP load
//! balancers in every task namespace, the ingress sandbox and its balancer, published ports,
//! return routes, DNS records — and one thread ([`apply`]) carries it out, the latest plan
//! first. DNS records change at once (an in-memory table); the rest within one pass.
//!
//! A task gets a namespace `<prefix>t<task id>` before its container starts (the runtime joins
//! it), an `/etc/hosts` and an `/etc/resolv.conf` naming the embedded DNS server at 127.0.0.11;
//! it is released when its container has stopped. After an agent restart, the namespaces of
//! running tasks are kept and adopted (every dataplane call adopts what is there by name), and
//! their egress addresses are read back from them.

mod apply;
mod egress;
mod netns;
mod plan;
mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use shoal_api::v1;
use shoal_embedded_dns::{ContainerResolvConf, DnsConfig, DnsServer, HostResolvConf, RecordTable};
use shoal_overlay::{Cidr, GatewayBridge};

use self::apply::{Dataplane, Driver, Job};
use self::egress::EgressPool;
/// The node's namespaces (`leave` removes them): named ones in a directory, by prefix.
pub(crate) use self::netns::{delete as delete_namespace, list as list_namespaces};
use self::plan::{INGRESS_SANDBOX, LocalTask, Names, NetworkRecords, PlanInput};
use self::view::NetworkView;
pub(crate) use self::view::{ViewStream, ViewUpdate};

/// How the agent wires its tasks into networks. `AgentConfig::network: None` leaves tasks in a
/// namespace of their own with loopback only (the simulated runtime, control-plane tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Prefix of the namespaces the agent makes: tasks are `<prefix>t<task id>`, the ingress
    /// sandbox `<prefix>ingress-sbox`, overlay sandboxes `<prefix>ov-<network id>`. Namespaces
    /// named `<prefix>t…` that no task needs are removed, so the prefix must be the agent's
    /// alone (tests use the harness's `shoaltest-<run>-…`).
    pub netns_prefix: String,
    /// Where named namespaces live.
    pub netns_dir: PathBuf,
    /// The node's namespace (underlay, gateway bridge, published ports); `None`: the agent's own.
    /// Tests that run several agents in one process give each a harness node namespace.
    pub node_netns: Option<PathBuf>,
    /// The node-local subnet of the gateway bridge (Swarm's docker_gwbridge), from which the
    /// agent gives tasks and the ingress sandbox their egress addresses.
    pub gateway_subnet: Cidr,
    /// The node's resolver configuration: upstream servers of the embedded DNS server, and the
    /// search domains and options of the tasks' resolv.conf.
    pub resolv_conf: PathBuf,
    /// The underlay address other nodes send this node's overlay traffic to (`--data-path-addr`);
    /// `None`: the manager uses the address the session comes from.
    pub data_addr: Option<String>,
    /// The load balancer of VIPs and the routing mesh (`--lb-backend`); `None`: IPVS where the
    /// kernel has it, nftables otherwise.
    pub lb_backend: Option<LbBackend>,
}

/// The load balancers an agent can drive.
pub use shoal_ipvs_lb::BackendKind as LbBackend;

/// Parses `--lb-backend`: `auto` (IPVS where the kernel has it, else nftables), `ipvs` or
/// `nftables`.
pub fn parse_lb_backend(value: &str) -> Result<Option<LbBackend>, String> {
    match value {
        "auto" => Ok(None),
        "ipvs" => Ok(Some(LbBackend::Ipvs)),
        "nftables" => Ok(Some(LbBackend::Nftables)),
        other => Err(format!("{other:?} is not a load balancer: use auto, ipvs or nftables")),
    }
}

impl NetworkConfig {
    /// docker_gwbridge's default subnet.
    pub const DEFAULT_GATEWAY_SUBNET: &str = "172.18.0.0/16";
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            netns_prefix: "shoal-".to_owned(),
            netns_dir: PathBuf::from("/run/netns"),
            node_netns: None,
            gateway_subnet: Cidr { addr: std::net::IpAddr::V4(Ipv4Addr::new(172, 18, 0, 0)), prefix_len: 16 },
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            data_addr: None,
            lb_backend: None,
        }
    }
}

/// Networking could not start, or a task could not be wired.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The gateway subnet cannot hold egress addresses.
    #[error("gateway subnet {subnet}: must be an IPv4 subnet of at most /30")]
    GatewaySubnet {
        /// The subnet.
        subnet: Cidr,
    },
    /// The embedded DNS server could not start.
    #[error("start the embedded dns server: {0}")]
    Dns(#[from] shoal_embedded_dns::StartError),
    /// `--lb-backend ipvs` on a kernel without IPVS.
    #[error("--lb-backend ipvs: {0}; use --lb-backend auto or nftables on this kernel")]
    NoIpvs(shoal_ipvs_lb::OpenError),
    /// The netlink dataplane could not be made.
    #[error("start the overlay dataplane: {0}")]
    Kernel(#[from] shoal_overlay::KernelError),
    /// The dataplane thread could not start.
    #[error("start the network thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A task could not be wired.
    #[error("task {task}: network setup in namespace {netns}: {reason}")]
    Task {
        /// The task.
        task: String,
        /// Its namespace.
        netns: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// What a task's container needs from its networking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskNetwork {
    /// The namespace the container joins.
    pub netns: PathBuf,
    /// Its `/etc/hosts`.
    pub hosts: String,
    /// Its `/etc/resolv.conf`.
    pub resolv_conf: String,
}

#[derive(Debug)]
struct State {
    view: NetworkView,
    tasks: BTreeMap<String, LocalTask>,
    ingress: Option<v1::NetworkAttachment>,
    /// This node's ID, from its record (the first session message).
    node_id: Option<String>,
    pool: EgressPool,
    /// Tasks whose namespaces stay until their controllers adopt or release them.
    protected: BTreeSet<String>,
    /// The DNS records applied, per network.
    dns: BTreeMap<String, NetworkRecords>,
    generation: u64,
    /// Whether the dataplane may be changed: not between an agent restart that found running
    /// containers and the first complete assignment set, which says which tasks they run (a
    /// pass before would take their endpoints away).
    ready: bool,
    /// After a restart: whether the first complete assignment set, and the first complete
    /// network view, have come in. Both are needed before the dataplane may change: with the
    /// tasks but not yet the view, the ingress sandbox would look unneeded and be removed.
    assignments_in: bool,
    view_in: bool,
}

/// How long a task waits for its wiring before it is rejected.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(60);

/// The node's networking, shared by the session (view, node) and the executor (tasks). The agent
/// makes one when `AgentConfig::network` is set; tests drive it alone, as a session and an
/// executor would.
#[derive(Debug)]
pub struct Networking {
    node_id: String,
    names: Names,
    gateway: GatewayBridge,
    dns: DnsServer,
    resolv_conf: String,
    load_balancer: &'static str,
    data_addr: Option<String>,
    /// Whether the kernel has ESP (encrypted networks).
    esp: bool,
    state: Mutex<State>,
    driver: Driver,
}

impl Networking {
    /// Starts the node's networking: the DNS server, the dataplane thread, and the egress
    /// addresses the existing namespaces hold.
    pub async fn start(config: NetworkConfig, node_id: String) -> Result<Arc<Self>, NetworkError> {
        let mut pool = EgressPool::new(config.gateway_subnet)
            .ok_or(NetworkError::GatewaySubnet { subnet: config.gateway_subnet })?;
        let host = match HostResolvConf::read(&config.resolv_conf) {
            Ok(host) => host,
            Err(err) => {
                tracing::warn!(path = %config.resolv_conf.display(), error = %err, "no upstream resolvers: names outside the cluster will not resolve");
                HostResolvConf::parse("")
            }
        };
        let dns_config = DnsConfig {
            upstreams: host.upstreams(),
            upstream_netns: config.node_netns.clone(),
            ..DnsConfig::default()
        };
        let resolv_conf = ContainerResolvConf::from_host(&host, dns_config.cluster_domain.as_deref()).render();
        let dns = DnsServer::new(dns_config, RecordTable::new())?;
        let names = Names { prefix: config.netns_prefix.clone(), netns_dir: config.netns_dir.clone() };
        let gateway = GatewayBridge { subnet: pool.subnet(), address: pool.gateway(), mtu: 1500 };
        let (node_netns, dataplane_names, lb_backend) = (config.node_netns.clone(), names.clone(), config.lb_backend);
        let started = tokio::task::spawn_blocking(move || {
            let mut dataplane = Dataplane::new(dataplane_names, node_netns.clone(), lb_backend)?;
            let found = dataplane.observe_addresses();
            let esp = dataplane.esp_available();
            let lb_netns = node_netns.map_or(shoal_ipvs_lb::Netns::Current, shoal_ipvs_lb::Netns::Path);
            let load_balancer = match (lb_backend, shoal_ipvs_lb::IpvsBalancer::open(&lb_netns)) {
                (Some(LbBackend::Nftables), _) => "nftables",
                (Some(LbBackend::Ipvs), Err(err)) => return Err(NetworkError::NoIpvs(err)),
                (_, Ok(_)) => "ipvs",
                (None, Err(_)) => "nftables",
            };
            Ok::<_, NetworkError>((dataplane, found, load_balancer, esp))
        })
        .await
        .map_err(|e| NetworkError::Thread(std::io::Error::other(e)))?;
        let (dataplane, found, load_balancer, esp) = started?;
        for (owner, addrs) in found {
            if addrs.iter().any(|a| pool.seed(&owner, *a)) {
                tracing::debug!(owner = %owner, egress = ?pool.get(&owner), "egress address kept from before the restart");
            }
        }
        let driver = Driver::start(dataplane).map_err(NetworkError::Thread)?;
        tracing::info!(load_balancer, esp, gateway = %gateway.subnet, prefix = %names.prefix, "networking started");
        Ok(Arc::new(Self {
            node_id,
            names,
            gateway,
            dns,
            resolv_conf,
            load_balancer,
            data_addr: config.data_addr,
            esp,
            state: Mutex::new(State {
                view: NetworkView::default(),
                tasks: BTreeMap::new(),
                ingress: None,
                node_id: None,
                pool,
                protected: BTreeSet::new(),
                dns: BTreeMap::new(),
                generation: 0,
                ready: true,
                assignments_in: false,
                view_in: false,
            }),
            driver,
        }))
    }

    /// Fills what the node says of its networking in its description.
    pub fn describe(&self, description: &mut v1::NodeDescription) {
        description.load_balancer = self.load_balancer.to_owned();
        if let Some(addr) = &self.data_addr {
            description.data_addr = addr.clone();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// After a restart: keeps the namespaces of these tasks (their containers were found at
    /// start) until they are adopted ([`Networking::prepare`]) or released, and the dataplane as
    /// it is until [`Networking::ready`].
    pub fn protect(&self, tasks: Vec<String>) {
        if tasks.is_empty() {
            return;
        }
        let mut state = self.lock();
        state.protected.extend(tasks);
        state.ready = false;
    }

    /// Takes over a task whose container was found running after a restart, before its
    /// controller runs: the first pass then keeps its wiring.
    pub fn adopt(&self, task: &v1::Task) {
        let mut state = self.lock();
        let egress = if plan::needs_egress(task) { state.pool.allocate(&task.id).ok() } else { None };
        state.tasks.insert(task.id.clone(), LocalTask { task: task.clone(), egress });
    }

    /// The first complete assignment set was taken in (the running tasks adopted): the
    /// dataplane follows the node's state from now on, once the first complete network view is
    /// in too.
    pub fn ready(&self) {
        let mut state = self.lock();
        state.assignments_in = true;
        self.become_ready(&mut state);
    }

    /// Lets the dataplane follow the node's state once both the assignments and the network view
    /// have been taken in whole (after a restart; at once otherwise).
    fn become_ready(&self, state: &mut State) {
        if !state.ready && state.assignments_in && state.view_in {
            state.ready = true;
            self.changed(state);
        }
    }

    /// A message of the networks stream, as the session's [`ViewStream`] made sense of it.
    pub(crate) fn update_view(&self, update: ViewUpdate) {
        match update {
            ViewUpdate::Wait => {}
            ViewUpdate::Complete(changes) => self.set_view(changes),
            ViewUpdate::Changes(changes) => self.change_view(changes),
        }
    }

    /// The node's whole network view (a complete set of the networks stream): networks, peers
    /// and services not in it are forgotten.
    pub fn set_view(&self, changes: Vec<v1::NetworkChange>) {
        let mut state = self.lock();
        state.view.set_complete(changes);
        state.view_in = true;
        self.follow_sandbox_peer(&mut state);
        self.changed(&mut state);
        self.become_ready(&mut state);
    }

    /// Changes to the node's network view (an increment of the networks stream), in order.
    pub fn change_view(&self, changes: Vec<v1::NetworkChange>) {
        let mut state = self.lock();
        state.view.apply(changes);
        self.follow_sandbox_peer(&mut state);
        self.changed(&mut state);
    }

    /// This node's ingress attachment as the view says it: its own sandbox among the ingress
    /// network's peers (`ingress-sbox.NODE`). The record in the session's first message may
    /// predate the attachment (the leader allocates it after the node joined), and the view
    /// follows the store, so the view wins once it names one.
    fn follow_sandbox_peer(&self, state: &mut State) {
        let Some(node_id) = state.node_id.clone() else { return };
        let own = format!("{}{node_id}", plan::INGRESS_SANDBOX_PEER);
        let from_view = state.view.ingress().and_then(|network| {
            let peer = state.view.peers_on(&network.id).find(|p| p.id == own)?;
            Some(v1::NetworkAttachment {
                network: Some(network.clone()),
                addresses: vec![peer.address.clone()],
                aliases: Vec::new(),
            })
        });
        // No ingress network in the view at all: none (removed); else what the view says.
        let wanted = if state.view.ingress().is_none() { None } else { from_view };
        if wanted.is_some() || state.view.ingress().is_none() {
            Self::set_ingress(state, wanted);
        }
    }

    fn set_ingress(state: &mut State, ingress: Option<v1::NetworkAttachment>) {
        if state.ingress == ingress {
            return;
        }
        match &ingress {
            Some(attachment) => {
                tracing::info!(addresses = ?attachment.addresses, "this node has an ingress attachment");
                if let Err(err) = state.pool.allocate(INGRESS_SANDBOX) {
                    tracing::error!(error = %err, "no egress address for the ingress sandbox");
                }
            }
            None => state.pool.release(INGRESS_SANDBOX),
        }
        state.ingress = ingress;
    }

    /// The load balancer the node's kernel offers: `ipvs` or `nftables`.
    pub fn load_balancer(&self) -> &'static str {
        self.load_balancer
    }

    /// The node's record, from the session: its ingress attachment.
    pub fn set_node(&self, node: &v1::Node) {
        let mut state = self.lock();
        state.node_id = Some(node.id.clone());
        let before = state.ingress.clone();
        let ingress = node.ingress.clone().filter(|a| a.network.is_some() && !a.addresses.is_empty());
        Self::set_ingress(&mut state, ingress);
        // The view, when it already names this node's sandbox, is the fresher of the two.
        self.follow_sandbox_peer(&mut state);
        if state.ingress != before {
            self.changed(&mut state);
        }
    }

    /// Recomputes the plan after a change: DNS records at once, the rest to the thread.
    fn changed(&self, state: &mut State) {
        state.generation += 1;
        let records = plan::dns_records(&state.view);
        for (network, deltas) in plan::dns_deltas(&state.dns, &records) {
            match self.dns.records().apply(deltas) {
                Ok(()) => match records.get(&network) {
                    Some(applied) => {
                        state.dns.insert(network, applied.clone());
                    }
                    None => {
                        state.dns.remove(&network);
                    }
                },
                Err(err) => tracing::warn!(network = %network, error = %err, "dns records of the network refused"),
            }
        }
        if !state.ready {
            return;
        }
        let plan = plan::plan(PlanInput {
            node_id: &self.node_id,
            view: &state.view,
            tasks: &state.tasks,
            ingress: state.ingress.as_ref(),
            sandbox_egress: state.pool.get(INGRESS_SANDBOX),
            gateway: &self.gateway,
            names: &self.names,
            esp: self.esp,
            data_addr: self.data_addr.as_deref().and_then(plan::parse_v4),
        });
        self.driver.submit(Job {
            generation: state.generation,
            plan: Arc::new(plan),
            protected: state.protected.clone(),
        });
    }

    /// Wires `task` before its container starts: its namespace, endpoints, egress, load
    /// balancers and resolver; returns what the container needs. Waits for the pass that
    /// includes it.
    pub async fn prepare(&self, task: &v1::Task, hostname: &str) -> Result<TaskNetwork, NetworkError> {
        let netns = self.names.task_netns(&task.id);
        let fail = |reason: String| NetworkError::Task { task: task.id.clone(), netns: netns.clone(), reason };
        let generation = {
            let mut state = self.lock();
            let egress = if plan::needs_egress(task) {
                Some(state.pool.allocate(&task.id).map_err(|e| fail(e.to_string()))?)
            } else {
                None
            };
            state.tasks.insert(task.id.clone(), LocalTask { task: task.clone(), egress });
            state.protected.remove(&task.id);
            self.changed(&mut state);
            state.generation
        };
        let mut outcomes = self.driver.outcomes();
        // A task on an encrypted network whose keys have not come yet waits for a pass that
        // has them (each change of the view brings one).
        let waited = tokio::time::timeout(PREPARE_TIMEOUT, async {
            let mut after = generation;
            loop {
                let outcome = outcomes.wait_for(|o| o.generation >= after).await.map(|outcome| outcome.clone())?;
                match outcome.failed.get(&task.id) {
                    Some(reason) if reason.starts_with(plan::KEYS_PENDING) => after = outcome.generation + 1,
                    _ => return Ok::<_, tokio::sync::watch::error::RecvError>(outcome),
                }
            }
        })
        .await;
        let outcome = match waited {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => return Err(fail("the network thread stopped".to_owned())),
            Err(_) => return Err(fail(format!("not wired within {} s", PREPARE_TIMEOUT.as_secs()))),
        };
        if let Some(reason) = outcome.failed.get(&task.id) {
            return Err(fail(reason.clone()));
        }
        if let Some(error) = &outcome.error {
            return Err(fail(error.clone()));
        }
        if !self.dns.containers().contains(&task.id) {
            let networks = plan::dns_networks(task);
            if let Err(err) = self.dns.attach(&task.id, &netns, networks).await {
                return Err(fail(err.to_string()));
            }
        }
        Ok(TaskNetwork { netns, hosts: plan::hosts_file(task, hostname), resolv_conf: self.resolv_conf.clone() })
    }

    /// Forgets a task whose container has stopped: its resolver, namespace, links and egress
    /// address go.
    pub fn release(&self, task_id: &str) {
        self.dns.detach(task_id);
        let mut state = self.lock();
        let known = state.tasks.remove(task_id).is_some();
        let protected = state.protected.remove(task_id);
        state.pool.release(task_id);
        if known || protected {
            tracing::debug!(task.id = %task_id, "task networking released");
            self.changed(&mut state);
        }
    }

    /// The namespace a task's container joins.
    pub fn task_netns(&self, task_id: &str) -> PathBuf {
        self.names.task_netns(task_id)
    }
}

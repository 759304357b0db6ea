//! `shoal-manager`: creates a cluster (`init`), joins one as a manager (`join`), or resumes from
//! its data directory (`run`), then serves until SIGINT or SIGTERM. The work is in the
//! `shoal-manager` library; this is flags and printing.

// A command-line program: printing is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use shoal_manager::{ManagerConfig, RunningManager};

mod leave;
mod metrics;
use metrics::Metrics;

/// The manager port's default, as Swarm's.
const DEFAULT_PORT: u16 = 2377;

#[derive(Debug, Parser)]
#[command(name = "shoal-manager", version, about = "A Shoal node that can hold the manager role")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Common {
    /// Where the node keeps its state (Raft log, certificates, CA).
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "/var/lib/shoal")]
    data_dir: PathBuf,
    /// Address and port to listen on.
    #[arg(long, env = "SHOAL_LISTEN_ADDR", default_value = "0.0.0.0:2377")]
    listen_addr: SocketAddr,
    /// Seconds between node heartbeats; a node missing three is Down.
    #[arg(long, env = "SHOAL_HEARTBEAT_PERIOD", default_value_t = 1.0)]
    heartbeat_period: f64,
    /// Do not run tasks on this node (no worker role, no containerd needed).
    #[arg(long, env = "SHOAL_NO_WORKER")]
    no_worker: bool,
    /// containerd's socket, for the worker role.
    #[arg(long, env = "SHOAL_CONTAINERD_SOCKET", default_value = "/run/containerd/containerd.sock")]
    containerd_socket: PathBuf,
    /// The containerd namespace for this node's containers.
    #[arg(long, env = "SHOAL_CONTAINERD_NAMESPACE", default_value = "shoal")]
    containerd_namespace: String,
    /// The shoal-runtime-logger executable (default: next to shoal-manager).
    #[arg(long, env = "SHOAL_RUNTIME_LOGGER")]
    logger: Option<PathBuf>,
    /// A registry (HOST:PORT) to reach over plain HTTP (repeatable).
    #[arg(long = "insecure-registry", env = "SHOAL_INSECURE_REGISTRIES", value_delimiter = ',')]
    insecure_registries: Vec<String>,
    /// The hostname this node reports (default: the machine's).
    #[arg(long, env = "SHOAL_HOSTNAME")]
    hostname: Option<String>,
    /// The node-local subnet of the worker role's gateway bridge, from which tasks get their
    /// egress addresses (Swarm's docker_gwbridge).
    #[arg(long, env = "SHOAL_GATEWAY_SUBNET", default_value = shoal_agent::NetworkConfig::DEFAULT_GATEWAY_SUBNET)]
    gateway_subnet: shoal_agent::Cidr,
    /// The underlay address other nodes send this node's overlay (VXLAN) traffic to (default:
    /// the address the manager sees the node's session come from).
    #[arg(long, env = "SHOAL_DATA_PATH_ADDR")]
    data_path_addr: Option<std::net::IpAddr>,
    /// The load balancer of VIPs and the routing mesh: auto (IPVS where the kernel has it,
    /// nftables otherwise), ipvs, or nftables. `node inspect` shows which one a node uses.
    #[arg(long, env = "SHOAL_LB_BACKEND", default_value = "auto", value_parser = ["auto", "ipvs", "nftables"])]
    lb_backend: String,
    /// Prefix of the network namespaces the worker role makes (`PREFIX` + `t<task id>`, …); each
    /// node on a machine needs its own (the test harness runs several).
    #[arg(long, env = "SHOAL_NETNS_PREFIX", default_value = "shoal-")]
    netns_prefix: String,
    /// The resolver configuration whose nameservers the tasks' embedded DNS forwards other
    /// names to, and whose search domains and options their resolv.conf keeps.
    #[arg(long, env = "SHOAL_RESOLV_CONF", default_value = "/etc/resolv.conf")]
    resolv_conf: std::path::PathBuf,
    /// Serve Prometheus metrics (the manager's and its worker role's) over plain HTTP at IP:PORT,
    /// as `GET /metrics`; off unless given. It has no authentication: prefer a loopback address
    /// (e.g. 127.0.0.1:9323) or a management network.
    #[arg(long, env = "SHOAL_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// The series the metrics endpoint serves, made once per process (see [`Metrics::start`]).
    #[arg(skip)]
    metrics: Option<Metrics>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new cluster with this node as its first manager, and run.
    Init {
        /// Address other nodes reach this one at (IP, or IP:PORT; the port defaults to the listen port).
        #[arg(long, env = "SHOAL_ADVERTISE_ADDR")]
        advertise_addr: String,
        /// Where overlay network subnets come from (CIDR, repeatable; default 10.0.0.0/8).
        #[arg(long = "default-addr-pool", env = "SHOAL_DEFAULT_ADDR_POOL", value_delimiter = ',')]
        default_addr_pool: Vec<String>,
        /// The prefix length of each overlay subnet taken from the pools (default 24).
        #[arg(
            long = "default-addr-pool-mask-length",
            env = "SHOAL_DEFAULT_ADDR_POOL_MASK_LENGTH",
            default_value_t = 24
        )]
        default_addr_pool_mask_length: u32,
        /// How long node certificates last (1h to 87600h: ten years; default 2160h, 90 days);
        /// `shoal cluster update --cert-expiry` changes it later.
        #[arg(long, env = "SHOAL_CERT_EXPIRY", default_value = "2160h", value_parser = shoal_api::parse_duration)]
        cert_expiry: Duration,
        /// Terminated tasks kept per slot (0 to 1000; -1 keeps them all).
        #[arg(long, env = "SHOAL_TASK_HISTORY_LIMIT", default_value_t = 5, allow_negative_numbers = true)]
        task_history_limit: i64,
        /// Encrypt the managers' keys at rest with an unlock key (printed once): a restarted
        /// manager serves nothing until `shoal cluster unlock` gives it the key.
        #[arg(long)]
        autolock: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Join an existing cluster: as a manager with a manager token, or as a worker that can later
    /// be promoted with a worker token; then run.
    Join {
        /// The join token (`shoal join-token manager|worker`).
        #[arg(long, env = "SHOAL_JOIN_TOKEN")]
        token: String,
        /// Address other nodes reach this one at (IP, or IP:PORT).
        #[arg(long, env = "SHOAL_ADVERTISE_ADDR")]
        advertise_addr: String,
        /// A manager of the cluster, HOST:PORT.
        remote: String,
        #[command(flatten)]
        common: Common,
    },
    /// Resume from the data directory (after a restart), and run.
    /// Write a backup of the running manager of --data-dir to a file: the cluster's whole state
    /// (consistent at one revision, asked of the manager itself), the CA, this manager's
    /// identity and certificates. Keep it as safe as the data directory: it holds every secret.
    /// With autolock, the unlock key is read from standard input and the file is sealed with it.
    Backup {
        /// Where to write it (mode 0600).
        #[arg(long, short)]
        output: PathBuf,
        /// The manager's data directory.
        #[arg(long, env = "SHOAL_DATA_DIR", default_value = "/var/lib/shoal")]
        data_dir: PathBuf,
    },
    /// Start a new single-manager cluster from a backup in an empty --data-dir, with every
    /// service, network, secret, config and node it held, and run (the nodes reconnect). A
    /// backup sealed with the unlock key (autolock) asks for it on standard input.
    Restore {
        /// The backup file (`shoal-manager backup`).
        #[arg(long, short)]
        input: PathBuf,
        /// Address other nodes reach this one at; defaults to the one the backup recorded.
        #[arg(long, env = "SHOAL_ADVERTISE_ADDR")]
        advertise_addr: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    Run {
        /// Address other nodes reach this one at; defaults to the one recorded at init/join.
        #[arg(long, env = "SHOAL_ADVERTISE_ADDR")]
        advertise_addr: Option<String>,
        /// The other managers are lost for good (no quorum): keep this manager's state and make
        /// it the only manager of the cluster, which others can then join again. Its old Raft
        /// directory is kept aside as raft.before-force-new-cluster-TIME.
        #[arg(long)]
        force_new_cluster: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Leave the cluster: stop and remove the node's containers and network namespaces, and
    /// remove its state (identity, certificates, Raft log, CA, admin bundle; its volumes are
    /// kept). Stop the node first. A manager must be demoted first, unless --force.
    Leave {
        /// Leave even though this node is a manager: the remaining managers count it as lost.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        common: Common,
    },
}

fn advertise(addr: &str, listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    if let Ok(full) = addr.parse::<SocketAddr>() {
        return Ok(full);
    }
    let ip: IpAddr = addr.parse().with_context(|| {
        format!("--advertise-addr {addr:?} is neither an IP address nor IP:PORT (e.g. 192.0.2.11 or 192.0.2.11:2377)")
    })?;
    Ok(SocketAddr::new(ip, listen.port()))
}

fn config(common: &Common, advertise_addr: SocketAddr) -> anyhow::Result<ManagerConfig> {
    let (shortest, longest) = shoal_manager::HEARTBEAT_RANGE;
    anyhow::ensure!(
        common.heartbeat_period >= shortest.as_secs_f64() && common.heartbeat_period <= longest.as_secs_f64(),
        "--heartbeat-period {} must be between {} and {} seconds",
        common.heartbeat_period,
        shortest.as_secs_f64(),
        longest.as_secs_f64()
    );
    let mut config = ManagerConfig::new(&common.data_dir, common.listen_addr, advertise_addr);
    config.heartbeat_period = Duration::from_secs_f64(common.heartbeat_period);
    let registry = shoal_agent::Registry::new(common.insecure_registries.clone());
    config.image_resolver = Some(std::sync::Arc::new(Registries(registry)));
    config.metrics = common.metrics.as_ref().map(|m| m.manager.clone());
    Ok(config)
}

/// Answers the control API's `ResolveImage` from this host, with the registry client (and the
/// `--insecure-registry` list) its worker pulls with.
#[derive(Debug)]
struct Registries(shoal_agent::Registry);

impl shoal_manager::ImageResolver for Registries {
    fn digest<'a>(&'a self, image: &'a str) -> shoal_manager::Resolving<'a> {
        Box::pin(async move {
            let reference = shoal_agent::Reference::parse(image).map_err(|e| e.to_string())?;
            self.0.digest(&reference, None).await.map_err(|e| e.to_string())
        })
    }
}

/// What this node is right now.
enum NodeState {
    /// A manager (with its worker role unless `--no-worker`).
    Manager(RunningManager),
    /// A worker that can be promoted: joined with a worker token, or demoted.
    Worker,
}

/// How one role's run ended.
enum RoleEnd {
    /// SIGINT or SIGTERM: the process exits.
    Signal,
    /// The cluster changed the node's role (`shoal node promote|demote`); its certificate
    /// already carries the new one.
    Changed { role: shoal_api::v1::NodeRole, managers: Vec<String> },
}

fn worker_config(common: &Common) -> anyhow::Result<shoal_agent::WorkerConfig> {
    let logger = shoal_agent::find_logger(common.logger.as_deref(), "shoal-manager")?;
    Ok(shoal_agent::WorkerConfig {
        data_dir: common.data_dir.clone(),
        containerd_socket: common.containerd_socket.clone(),
        containerd_namespace: common.containerd_namespace.clone(),
        logger,
        insecure_registries: common.insecure_registries.clone(),
        hostname: common.hostname.clone(),
        can_manage: true,
        // Networking on, with the same flags as shoal-agent's.
        network: Some(shoal_agent::NetworkConfig {
            netns_prefix: common.netns_prefix.clone(),
            resolv_conf: common.resolv_conf.clone(),
            gateway_subnet: common.gateway_subnet,
            data_addr: common.data_path_addr.map(|a| a.to_string()),
            lb_backend: shoal_agent::parse_lb_backend(&common.lb_backend).map_err(anyhow::Error::msg)?,
            ..shoal_agent::NetworkConfig::default()
        }),
        metrics: common.metrics.as_ref().map(|m| m.agent.clone()),
        // A manager's own (`serve_manager`) when one runs in this process.
        key_encryption: Default::default(),
    })
}

/// Serves the node until SIGINT or SIGTERM, following role changes: a promoted worker starts a
/// manager (Raft member, port) beside its worker role, a demoted manager stops its manager and
/// forgets its state. Tasks' containers keep running throughout; the next start adopts them.
async fn serve_node(mut state: NodeState, common: &Common, advertised: SocketAddr) -> anyhow::Result<()> {
    let config = config(common, advertised)?;
    loop {
        state = match state {
            NodeState::Manager(manager) => {
                let node_id = manager.node_id.clone();
                let keys = manager.key_encryption().clone();
                match serve_manager(manager, common, advertised).await? {
                    RoleEnd::Signal => return Ok(()),
                    RoleEnd::Changed { role: shoal_api::v1::NodeRole::Worker, managers } => {
                        // A worker's key is not locked (autolock is the managers').
                        shoal_manager::release_node_key(&common.data_dir, keys.get().as_ref())?;
                        shoal_manager::forget_manager(&common.data_dir)?;
                        shoal_agent::record_worker(
                            &common.data_dir,
                            &node_id,
                            managers,
                            Some(&advertised.to_string()),
                        )?;
                        if common.no_worker {
                            println!("This node was demoted to a worker; it runs no tasks (--no-worker), so it stops.");
                            return Ok(());
                        }
                        println!("This node was demoted: it is a worker now.");
                        NodeState::Worker
                    }
                    // The certificate was renewed for the role the node already has: resume.
                    RoleEnd::Changed { .. } => NodeState::Manager(shoal_manager::start(&config).await?),
                }
            }
            NodeState::Worker => match serve_worker(common).await? {
                RoleEnd::Signal => return Ok(()),
                // A certificate left from before a demotion, renewed: a worker still.
                RoleEnd::Changed { role: shoal_api::v1::NodeRole::Worker, .. } => NodeState::Worker,
                RoleEnd::Changed { managers, .. } => match shoal_manager::promote(&config, &managers).await {
                    Ok(manager) => {
                        shoal_agent::forget_worker(&common.data_dir)?;
                        println!("This node was promoted: it is a manager now ({advertised}).");
                        NodeState::Manager(manager)
                    }
                    // No leader to join through right now, say: stay a worker, whose next
                    // heartbeat asks again, without the half-made manager state.
                    Err(err) => {
                        tracing::warn!(error = %err, "promotion failed; retrying as the cluster asks again");
                        shoal_manager::forget_manager(&common.data_dir)?;
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        NodeState::Worker
                    }
                },
            },
        };
    }
}

fn signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
}

/// A worker that can be promoted, until a signal or a role change.
async fn serve_worker(common: &Common) -> anyhow::Result<RoleEnd> {
    let signal = signals()?;
    let config = worker_config(common)?;
    match shoal_agent::run_worker(&config, signal).await? {
        shoal_agent::AgentExit::Stopped => Ok(RoleEnd::Signal),
        shoal_agent::AgentExit::RoleChanged { role, managers } => Ok(RoleEnd::Changed { role, managers }),
    }
}

/// The manager, and (unless `--no-worker`) the worker role that runs tasks on this node, until a
/// signal or a role change; the manager is shut down when it returns.
async fn serve_manager(manager: RunningManager, common: &Common, advertised: SocketAddr) -> anyhow::Result<RoleEnd> {
    let signal = signals()?;
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = if common.no_worker {
        None
    } else {
        let mut config = worker_config(common)?;
        // The node's key file is the manager's: encrypted as it keeps it.
        config.key_encryption = manager.key_encryption().clone();
        let certs = common.data_dir.join("certs");
        let node_id = manager.node_id.clone();
        Some(tokio::spawn(async move {
            let stopped = async {
                let _ = worker_stopped.await;
            };
            let managers = vec![advertised.to_string()];
            shoal_agent::run_node(&config, &certs, node_id, managers, shoal_api::v1::NodeRole::Manager, stopped).await
        }))
    };
    // A demotion removes this member from the Raft group first: seen here (twice in a row, so
    // that a member still catching up on its own admission is not mistaken), it ends the manager
    // role even when no worker role hears of it (--no-worker), or when the leader went away
    // before recording the demotion, or when the node was promoted again before its worker
    // role heard of the demotion. The leader's view is asked: a removed member may never
    // receive the configuration that leaves it out.
    let removed = {
        let store = manager.objects().store().clone();
        async move {
            let mut seen = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let status = store.status().await;
                let member = status.members.iter().any(|m| m.id == store.id());
                seen = if status.leader.is_some() && !member { seen + 1 } else { 0 };
                if seen >= 2 {
                    let others: Vec<String> = status.members.iter().map(|m| m.addr.clone()).collect();
                    return others;
                }
            }
        }
    };
    let worker_ended = async {
        match worker {
            Some(handle) => match handle.await {
                Ok(Ok(shoal_agent::AgentExit::RoleChanged { role, managers })) => {
                    Ok(RoleEnd::Changed { role, managers })
                }
                Ok(Ok(shoal_agent::AgentExit::Stopped)) => std::future::pending().await,
                Ok(Err(err)) => {
                    Err(anyhow::anyhow!("worker role: {err} (pass --no-worker to run a manager that runs no tasks)"))
                }
                Err(err) => Err(anyhow::anyhow!("worker role stopped: {err}")),
            },
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        () = signal => Ok(RoleEnd::Signal),
        end = worker_ended => end,
        managers = removed => {
            tracing::info!("this manager was removed from the Raft group: it runs as a worker now");
            Ok(RoleEnd::Changed { role: shoal_api::v1::NodeRole::Worker, managers })
        }
    };
    tracing::info!("stopping the manager");
    let _ = stop_worker.send(());
    manager.shutdown().await;
    result
}

/// What `init --autolock` (and `shoal cluster update --autolock=true`) print, as docker does.
fn print_unlock_key(key: &str) {
    println!("To unlock a manager after it restarts, run `shoal cluster unlock` and give it this key:");
    println!();
    println!("    {key}");
    println!();
    println!("Keep it in a password manager: without it, a restarted manager cannot be unlocked.");
}

async fn run(mut cli: Cli) -> anyhow::Result<()> {
    let restoring = matches!(cli.command, Command::Restore { .. });
    let common = match &mut cli.command {
        Command::Init { common, .. }
        | Command::Join { common, .. }
        | Command::Run { common, .. }
        | Command::Restore { common, .. } => common,
        Command::Backup { output, data_dir } => {
            let kek = match shoal_manager::backup_needs_unlock_key(data_dir)? {
                true => Some(shoal_manager::read_unlock_key("This manager is autolocked. Unlock key: ")?),
                false => None,
            };
            let backup = shoal_manager::take_backup(data_dir, kek.as_ref()).await?;
            shoal_manager::write_backup(&backup, output, kek.as_ref())?;
            println!(
                "Backup of cluster {} written to {} (revision {}, {} keys, {} files); it holds the CA key and every \
                 secret: keep it safe{}.",
                backup.header.cluster_id,
                output.display(),
                backup.header.revision,
                backup.kvs.len(),
                backup.files.len(),
                if kek.is_some() { " (it is sealed with the unlock key, which restoring it needs)" } else { "" }
            );
            return Ok(());
        }
        Command::Leave { force, common } => {
            let containerd = (!common.no_worker).then(|| leave::Containerd {
                socket: &common.containerd_socket,
                namespace: &common.containerd_namespace,
            });
            let netns_dir = shoal_agent::NetworkConfig::default().netns_dir;
            let namespaces = shoal_agent::Namespaces { dir: &netns_dir, prefix: &common.netns_prefix };
            leave::leave(&common.data_dir, *force, containerd, Some(namespaces)).await?;
            println!("Node left the cluster.");
            println!(
                "Its volumes are kept in {}; on a manager, `shoal node rm NODE` removes it from the list.",
                common.data_dir.join("volumes").display()
            );
            return Ok(());
        }
    };
    // Held for the life of the process: one process per data directory. A restore takes it
    // once it has filled the directory, which must be empty before.
    let mut _lock = if restoring { None } else { Some(shoal_agent::DataDirLock::acquire(&common.data_dir)?) };
    if let Some(addr) = common.metrics_addr {
        common.metrics = Some(Metrics::start(addr).await?);
    }
    match cli.command {
        Command::Init {
            advertise_addr,
            default_addr_pool,
            default_addr_pool_mask_length,
            cert_expiry,
            task_history_limit,
            autolock,
            common,
        } => {
            let advertised = advertise(&advertise_addr, common.listen_addr)?;
            let mut config = config(&common, advertised)?;
            config.default_addr_pool = default_addr_pool;
            config.subnet_size = default_addr_pool_mask_length;
            anyhow::ensure!(
                (shoal_manager::MIN_CERT_EXPIRY..=shoal_manager::MAX_CERT_EXPIRY).contains(&cert_expiry),
                "--cert-expiry {cert_expiry:?} is out of range: certificates must last between 1h and 87600h"
            );
            config.cert_validity = cert_expiry;
            config.task_history_limit = task_history_limit;
            config.autolock = autolock;
            let (manager, outcome) = shoal_manager::init(&config).await?;
            println!("Cluster initialized: current node ({}) is now a manager.", outcome.node_id);
            println!();
            println!("To add a worker to this cluster, run the following command:");
            println!();
            println!("    shoal-agent join --token {} {advertised}", outcome.worker_token);
            println!();
            println!("To add a manager to this cluster, run 'shoal join-token manager' and follow the instructions.");
            println!();
            println!("To use the CLI from another host, copy {} and run:", outcome.admin_bundle.display());
            println!("    export SHOAL_HOST={advertised} SHOAL_CERT_PATH={}", outcome.admin_bundle.display());
            if let Some(key) = &outcome.unlock_key {
                println!();
                print_unlock_key(key);
            }
            serve_node(NodeState::Manager(manager), &common, advertised).await
        }
        Command::Join { token, advertise_addr, remote, common } => {
            let advertised = advertise(&advertise_addr, common.listen_addr)?;
            let remote = if remote.contains(':') { remote } else { format!("{remote}:{DEFAULT_PORT}") };
            match shoal_manager::join_node(&config(&common, advertised)?, &remote, &token).await? {
                shoal_manager::Joined::Manager(manager) => {
                    println!("This node joined a cluster as a manager ({}).", manager.node_id);
                    serve_node(NodeState::Manager(manager), &common, advertised).await
                }
                shoal_manager::Joined::Worker { node_id } => {
                    shoal_agent::record_worker(
                        &common.data_dir,
                        &node_id,
                        vec![remote],
                        Some(&advertised.to_string()),
                    )?;
                    println!(
                        "This node joined a cluster as a worker ({node_id}); `shoal node promote` can make it a manager."
                    );
                    serve_node(NodeState::Worker, &common, advertised).await
                }
            }
        }
        Command::Backup { .. } => Ok(()),
        Command::Restore { input, advertise_addr, common } => {
            let bytes = std::fs::read(&input).with_context(|| format!("cannot read the backup {}", input.display()))?;
            let kek = match shoal_manager::backup_is_sealed(&bytes) {
                true => Some(shoal_manager::read_unlock_key("This backup is sealed (autolock). Unlock key: ")?),
                false => None,
            };
            let backup =
                shoal_manager::open_backup(&bytes, kek.as_ref()).with_context(|| format!("{}", input.display()))?;
            let addr = advertise_addr.map(|a| advertise(&a, common.listen_addr)).transpose()?;
            std::fs::create_dir_all(&common.data_dir)
                .with_context(|| format!("cannot make {}", common.data_dir.display()))?;
            shoal_manager::restore(&backup, &common.data_dir, addr.map(|a| a.to_string()), kek.as_ref()).await?;
            _lock = Some(shoal_agent::DataDirLock::acquire(&common.data_dir)?);
            let advertised = advertise(&shoal_manager::recorded_advertise_addr(&common.data_dir)?, common.listen_addr)?;
            let mut config = config(&common, advertised)?;
            config.unlock_key = kek;
            let manager = shoal_manager::start(&config).await?;
            println!(
                "Restored cluster {} from its backup (revision {}): this node ({}) is its only manager. Demote or \
                 remove the managers that are gone (shoal node demote|rm), then join managers again.",
                backup.header.cluster_id, backup.header.revision, manager.node_id
            );
            serve_node(NodeState::Manager(manager), &common, advertised).await
        }
        Command::Run { advertise_addr, force_new_cluster, common } => {
            anyhow::ensure!(
                !force_new_cluster || shoal_manager::holds_manager(&common.data_dir),
                "--force-new-cluster recovers a manager's state, and {} holds no manager (a worker has no copy of \
                 the cluster's state); run it on a surviving manager",
                common.data_dir.display()
            );
            let advertised = match advertise_addr {
                Some(addr) => advertise(&addr, common.listen_addr)?,
                None if shoal_manager::holds_manager(&common.data_dir) => {
                    advertise(&shoal_manager::recorded_advertise_addr(&common.data_dir)?, common.listen_addr)?
                }
                None => match shoal_agent::worker_advertise_addr(&common.data_dir).ok().flatten() {
                    Some(recorded) => advertise(&recorded, common.listen_addr)?,
                    None => {
                        // A worker that may be promoted must tell the managers where to reach it.
                        anyhow::ensure!(
                            !common.listen_addr.ip().is_unspecified(),
                            "give --advertise-addr: this node listens on {} and records no address other nodes can reach it at",
                            common.listen_addr
                        );
                        common.listen_addr
                    }
                },
            };
            if !shoal_manager::holds_manager(&common.data_dir) && shoal_agent::holds_worker(&common.data_dir) {
                return serve_node(NodeState::Worker, &common, advertised).await;
            }
            let mut config = config(&common, advertised)?;
            config.force_new_cluster = force_new_cluster;
            let manager = shoal_manager::start(&config).await?;
            if force_new_cluster {
                println!(
                    "Forced a new cluster: this node ({}) is its only manager, with the state it had. Demote or \
                     remove the lost managers (shoal node demote|rm), then join managers again.",
                    manager.node_id
                );
            }
            serve_node(NodeState::Manager(manager), &common, advertised).await
        }
        Command::Leave { .. } => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // openraft warns on every failed heartbeat to an unreachable member; Shoal reports
                // reachability itself (MANAGER STATUS), so only openraft's errors are shown.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("shoal-manager: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("shoal-manager: {err:#}");
            ExitCode::FAILURE
        }
    }
}

//! `shoal-agent`: a worker-only node. `join` once with a worker token, then `run` (also after a
//! restart). The work is in the `shoal-agent` library; this is flags and printing.

// A command-line program: printing is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use shoal_agent::WorkerConfig;

#[derive(Debug, Parser)]
#[command(name = "shoal-agent", version, about = "A worker-only Shoal node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Common {
    /// Where the node keeps its state.
    #[arg(long, env = "SHOAL_DATA_DIR", default_value = "/var/lib/shoal-agent")]
    data_dir: PathBuf,
    /// containerd's socket.
    #[arg(long, env = "SHOAL_CONTAINERD_SOCKET", default_value = "/run/containerd/containerd.sock")]
    containerd_socket: PathBuf,
    /// The containerd namespace for this node's containers.
    #[arg(long, env = "SHOAL_CONTAINERD_NAMESPACE", default_value = "shoal")]
    containerd_namespace: String,
    /// The shoal-runtime-logger executable (default: next to shoal-agent).
    #[arg(long, env = "SHOAL_RUNTIME_LOGGER")]
    logger: Option<PathBuf>,
    /// A registry (HOST:PORT) to reach over plain HTTP (repeatable).
    #[arg(long = "insecure-registry", env = "SHOAL_INSECURE_REGISTRIES", value_delimiter = ',')]
    insecure_registries: Vec<String>,
    /// The hostname this node reports (default: the machine's).
    #[arg(long, env = "SHOAL_HOSTNAME")]
    hostname: Option<String>,
    /// The node-local subnet of the gateway bridge, from which tasks get their egress addresses
    /// (Swarm's docker_gwbridge).
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
    /// Prefix of the network namespaces the agent makes (`PREFIX` + `t<task id>`, …); each agent
    /// on a machine needs its own (the test harness runs several).
    #[arg(long, env = "SHOAL_NETNS_PREFIX", default_value = "shoal-")]
    netns_prefix: String,
    /// The resolver configuration whose nameservers the tasks' embedded DNS forwards other
    /// names to, and whose search domains and options their resolv.conf keeps.
    #[arg(long, env = "SHOAL_RESOLV_CONF", default_value = "/etc/resolv.conf")]
    resolv_conf: std::path::PathBuf,
    /// Serve Prometheus metrics over plain HTTP at IP:PORT, as `GET /metrics`; off unless given.
    /// It has no authentication: prefer a loopback address (e.g. 127.0.0.1:9323) or a
    /// management network.
    #[arg(long, env = "SHOAL_METRICS_ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join a cluster with a worker token, then run.
    Join {
        /// The worker join token (`shoal join-token worker`).
        #[arg(long, env = "SHOAL_JOIN_TOKEN")]
        token: String,
        /// A manager, HOST:PORT.
        remote: String,
        #[command(flatten)]
        common: Common,
    },
    /// Resume from the data directory, and run.
    Run {
        #[command(flatten)]
        common: Common,
    },
    /// Leave the cluster: stop and remove the node's containers and network namespaces, and
    /// remove its state (its volumes are kept). Stop the agent first. The managers then see the
    /// node Down; `shoal node rm NODE` removes it from their list.
    Leave {
        #[command(flatten)]
        common: Common,
    },
}

/// Binds `--metrics-addr` and serves the worker's series there for the life of the process.
async fn serve_metrics(addr: std::net::SocketAddr) -> anyhow::Result<shoal_agent::AgentMetrics> {
    let metrics = shoal_agent::AgentMetrics::new();
    let listener = shoal_agent::metrics::bind(addr)
        .await
        .map_err(|err| anyhow::anyhow!("--metrics-addr {addr}: cannot listen: {err}"))?;
    let series = metrics.clone();
    let render = shoal_agent::metrics::render(move || {
        let series = series.clone();
        async move {
            let mut out = String::new();
            // Writing to a String cannot fail.
            let _ = series.encode(&mut out);
            shoal_agent::metrics::end(&mut out);
            out
        }
    });
    tokio::spawn(shoal_agent::metrics::serve(listener, render, std::future::pending()));
    Ok(metrics)
}

async fn worker_config(common: Common) -> anyhow::Result<WorkerConfig> {
    let metrics = match common.metrics_addr {
        Some(addr) => Some(serve_metrics(addr).await?),
        None => None,
    };
    let logger = shoal_agent::find_logger(common.logger.as_deref(), "shoal-agent")?;
    let network = shoal_agent::NetworkConfig {
        netns_prefix: common.netns_prefix,
        resolv_conf: common.resolv_conf,
        gateway_subnet: common.gateway_subnet,
        data_addr: common.data_path_addr.map(|a| a.to_string()),
        lb_backend: shoal_agent::parse_lb_backend(&common.lb_backend).map_err(anyhow::Error::msg)?,
        ..shoal_agent::NetworkConfig::default()
    };
    Ok(WorkerConfig {
        data_dir: common.data_dir,
        containerd_socket: common.containerd_socket,
        containerd_namespace: common.containerd_namespace,
        logger,
        insecure_registries: common.insecure_registries,
        hostname: common.hostname,
        // shoal-agent has no manager in it: such a node is not promotable.
        can_manage: false,
        network: Some(network),
        metrics,
        key_encryption: Default::default(),
    })
}

async fn until_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Join { token, remote, common } => {
            // Held for the life of the process: one process per data directory.
            let _lock = shoal_agent::DataDirLock::acquire(&common.data_dir)?;
            let config = worker_config(common).await?;
            let remote = if remote.contains(':') { remote } else { format!("{remote}:2377") };
            let node_id = shoal_agent::join_worker(&config.data_dir, &remote, &token).await?;
            println!("This node joined a cluster as a worker ({node_id}).");
            shoal_agent::run_worker(&config, until_signal()).await?;
        }
        Command::Run { common } => {
            let _lock = shoal_agent::DataDirLock::acquire(&common.data_dir)?;
            let config = worker_config(common).await?;
            shoal_agent::run_worker(&config, until_signal()).await?;
        }
        Command::Leave { common } => {
            let lock = shoal_agent::lock_for_leave(&common.data_dir, "shoal-agent")?;
            // shoal-agent knows nothing of a manager's state: leaving one is shoal-manager's.
            anyhow::ensure!(
                !common.data_dir.join("manager.json").exists(),
                "{} holds a manager: use `shoal-manager leave` (after demoting it)",
                common.data_dir.display()
            );
            let runtime = shoal_agent::connect_containerd(
                &common.data_dir,
                &common.containerd_socket,
                &common.containerd_namespace,
            )
            .await?;
            let netns_dir = shoal_agent::NetworkConfig::default().netns_dir;
            let namespaces = shoal_agent::Namespaces { dir: &netns_dir, prefix: &common.netns_prefix };
            shoal_agent::leave(&lock, Some(&runtime), Some(namespaces)).await?;
            println!("Node left the cluster.");
            println!(
                "Its volumes are kept in {}; on a manager, `shoal node rm NODE` removes it from the list.",
                common.data_dir.join("volumes").display()
            );
        }
    }
    Ok(())
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
            eprintln!("shoal-agent: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("shoal-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

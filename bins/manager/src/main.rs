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
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new cluster with this node as its first manager, and run.
    Init {
        /// Address other nodes reach this one at (IP, or IP:PORT; the port defaults to the listen port).
        #[arg(long, env = "SHOAL_ADVERTISE_ADDR")]
        advertise_addr: String,
        #[command(flatten)]
        common: Common,
    },
    /// Join an existing cluster as a manager (with a manager join token), and run.
    Join {
        /// The manager join token (`shoal join-token manager`).
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
    Run {
        /// Address other nodes reach this one at; defaults to the one recorded at init/join.
        #[arg(long, env = "SHOAL_ADVERTISE_ADDR")]
        advertise_addr: Option<String>,
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
    anyhow::ensure!(
        common.heartbeat_period > 0.0 && common.heartbeat_period <= 3600.0,
        "--heartbeat-period {} must be between 0 and 3600 seconds",
        common.heartbeat_period
    );
    let mut config = ManagerConfig::new(&common.data_dir, common.listen_addr, advertise_addr);
    config.heartbeat_period = Duration::from_secs_f64(common.heartbeat_period);
    Ok(config)
}

/// Runs the manager, and (unless `--no-worker`) the worker role that runs tasks on this node,
/// until SIGINT or SIGTERM. Tasks' containers keep running; the next start adopts them.
async fn serve_until_signal(manager: RunningManager, common: &Common, advertised: SocketAddr) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = if common.no_worker {
        None
    } else {
        let logger = match &common.logger {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .context("cannot find this executable to locate shoal-runtime-logger; pass --logger")?
                .with_file_name("shoal-runtime-logger"),
        };
        let config = shoal_agent::WorkerConfig {
            data_dir: common.data_dir.clone(),
            containerd_socket: common.containerd_socket.clone(),
            containerd_namespace: common.containerd_namespace.clone(),
            logger,
            insecure_registries: common.insecure_registries.clone(),
            hostname: common.hostname.clone(),
        };
        let certs = common.data_dir.join("certs");
        let node_id = manager.node_id.clone();
        Some(tokio::spawn(async move {
            let stopped = async {
                let _ = worker_stopped.await;
            };
            shoal_agent::run_node(&config, &certs, node_id, vec![advertised.to_string()], stopped).await
        }))
    };
    let worker_failed = async {
        match worker {
            Some(handle) => match handle.await {
                Ok(Ok(())) => std::future::pending().await,
                Ok(Err(err)) => {
                    anyhow::anyhow!("worker role: {err} (pass --no-worker to run a manager that runs no tasks)")
                }
                Err(err) => anyhow::anyhow!("worker role stopped: {err}"),
            },
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
        err = worker_failed => Err(err),
    };
    tracing::info!("shutting down");
    let _ = stop_worker.send(());
    manager.shutdown().await;
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { advertise_addr, common } => {
            let advertised = advertise(&advertise_addr, common.listen_addr)?;
            let (manager, outcome) = shoal_manager::init(&config(&common, advertised)?).await?;
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
            serve_until_signal(manager, &common, advertised).await
        }
        Command::Join { token, advertise_addr, remote, common } => {
            let advertised = advertise(&advertise_addr, common.listen_addr)?;
            let remote = if remote.contains(':') { remote } else { format!("{remote}:{DEFAULT_PORT}") };
            let manager = shoal_manager::join(&config(&common, advertised)?, &remote, &token).await?;
            println!("This node joined a cluster as a manager ({}).", manager.node_id);
            serve_until_signal(manager, &common, advertised).await
        }
        Command::Run { advertise_addr, common } => {
            let advertised = match advertise_addr {
                Some(addr) => advertise(&addr, common.listen_addr)?,
                None => common.listen_addr,
            };
            let manager = shoal_manager::start(&config(&common, advertised)?).await?;
            serve_until_signal(manager, &common, advertised).await
        }
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

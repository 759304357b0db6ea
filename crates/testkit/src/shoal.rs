//! Shoal's own binaries on the harness: start managers and workers with the flags a node needs
//! (its data dir, its containerd, the test registry, its hostname), on the netns harness
//! ([`ShoalCluster`]) or on any [`Testbed`] ([`BedCluster`]), and run the `shoal` CLI against a
//! manager. Used by the end-to-end tests and `cargo xtask demo`; it only runs executables, so it
//! knows no Shoal crate.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cmd::{self, CommandError};
use crate::netns::{Cluster, HarnessError, Node, Process};
use crate::node::{NetnsNode, NodeLayout, NodeProcess, TestNode, Testbed};

/// Where the harness's clusters take overlay subnets from.
pub const OVERLAY_POOL: &str = "198.18.0.0/16";

/// The subnet of each node's gateway bridge (egress), inside the test range.
pub const GATEWAY_SUBNET: &str = "198.19.0.0/24";

/// The argv that runs `busybox ARGS…` inside the container of task `task_id` on a node with
/// `layout` (through its containerd's `ctr`, so in the container's own namespaces); `exec_id`
/// names the process and must be unique among the container's running execs.
pub fn task_exec_argv(layout: &NodeLayout, task_id: &str, exec_id: &str, args: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "ctr".into(),
        "--address".into(),
        layout.containerd_socket.to_string_lossy().into_owned(),
        "--namespace".into(),
        layout.containerd_namespace.clone(),
        "tasks".into(),
        "exec".into(),
        "--exec-id".into(),
        exec_id.into(),
        task_id.into(),
        crate::images::BUSYBOX.into(),
    ];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    argv
}

/// Runs `busybox ARGS…` in the container of task `task_id` on `node` to completion: (success,
/// standard output and error together).
pub fn task_exec(node: &dyn TestNode, task_id: &str, args: &[&str]) -> Result<(bool, String), HarnessError> {
    static EXECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let exec_id = format!("probe{}", EXECS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let argv = task_exec_argv(node.layout(), task_id, &exec_id, args);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = node.exec(&argv)?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// The executables a Shoal cluster needs.
pub const BINARIES: [&str; 4] = ["shoal-manager", "shoal-agent", "shoal", "shoal-runtime-logger"];

/// Where `cargo build` put the workspace's binaries, for tests that run them: `SHOAL_BIN_DIR`
/// when set, else the directory above the running test binary's (tests run from
/// `TARGET/debug/deps`, wherever `CARGO_TARGET_DIR` put it), else the workspace's `target/debug`.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("SHOAL_BIN_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.to_owned())
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/debug"))
}

/// The container log writer `shoal-runtime-logger` that containerd's shim starts, when it is
/// built next to the test binaries; otherwise `None`, after [`crate::privileged::skip`] said why
/// for `test` (a failure under `CI=true`).
pub fn runtime_logger(test: &str) -> Option<PathBuf> {
    let logger = bin_dir().join("shoal-runtime-logger");
    if logger.is_file() {
        return Some(logger);
    }
    crate::privileged::skip(&format!(
        "{test}: skipped: {} is not built (cargo build -p shoal-runtime --bins)",
        logger.display()
    ));
    None
}

/// The binaries that are missing from `dir`.
pub fn missing_binaries(dir: &Path) -> Vec<&'static str> {
    BINARIES.iter().filter(|b| !dir.join(b).is_file()).copied().collect()
}

/// A Shoal cluster's processes on a harness cluster.
#[derive(Debug)]
pub struct ShoalCluster<'a> {
    cluster: &'a Cluster,
    bins: PathBuf,
    containerd_socket: PathBuf,
    registry: String,
    heartbeat: String,
}

impl<'a> ShoalCluster<'a> {
    /// Nodes of `cluster` run the executables in `bins`, on the containerd at `containerd_socket`,
    /// pulling from `registry` (HOST:PORT, plain HTTP), with a `heartbeat` period in seconds.
    pub fn new(cluster: &'a Cluster, bins: &Path, containerd_socket: &Path, registry: &str, heartbeat: &str) -> Self {
        Self {
            cluster,
            bins: bins.to_owned(),
            containerd_socket: containerd_socket.to_owned(),
            registry: registry.to_owned(),
            heartbeat: heartbeat.to_owned(),
        }
    }

    /// Where `node` keeps things: the cluster's directory, the private containerd, namespaces
    /// under the run's prefix.
    pub fn layout(&self, node: &Node) -> NodeLayout {
        NodeLayout {
            bin_dir: self.bins.clone(),
            data_dir: self.data_dir(node),
            containerd_socket: self.containerd_socket.clone(),
            containerd_namespace: self.containerd_namespace(node),
            netns_prefix: self.netns_prefix(node),
            resolv_conf: Some(self.resolv_conf()),
        }
    }

    /// `node` as a [`TestNode`], for the scenarios written against [`Testbed`].
    pub fn test_node(&self, node: &Node) -> NetnsNode {
        NetnsNode::new(self.cluster, node, self.layout(node))
    }

    /// The flags every node process takes.
    pub fn node_flags(&self, node: &Node) -> Vec<String> {
        node_flags(&self.layout(node), &self.registry, &node.name)
    }

    /// The resolver configuration the nodes' agents read: `nameserver 192.0.2.1` (the underlay
    /// namespace, where a test may run an upstream DNS server), written on first use.
    pub fn resolv_conf(&self) -> PathBuf {
        let path = self.cluster.dir().join("resolv.conf");
        if !path.exists() {
            // The harness directory exists as long as the cluster; failing to write it leaves the
            // agents without upstreams, which the tests that need one notice.
            let _ = std::fs::write(&path, format!("nameserver {}\noptions ndots:0\n", crate::UNDERLAY_GATEWAY));
        }
        path
    }

    /// The prefix of the network namespaces the node's agent makes (tasks are `<prefix>t<task
    /// ID>`, its ingress sandbox `<prefix>ingress-sbox`): under the run's prefix, so that the
    /// harness's sweep removes them.
    pub fn netns_prefix(&self, node: &Node) -> String {
        format!("{}-{}-", self.cluster.prefix(), node.name)
    }

    /// The node's data directory.
    pub fn data_dir(&self, node: &Node) -> PathBuf {
        self.cluster.dir().join(&node.name)
    }

    /// The containerd namespace of the node's containers.
    pub fn containerd_namespace(&self, node: &Node) -> String {
        format!("{}-{}", self.cluster.prefix(), node.name)
    }

    fn spawn(&self, node: &Node, binary: &str, mut args: Vec<String>) -> Result<Process, HarnessError> {
        args.extend(self.node_flags(node));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cluster.spawn(node, binary, &self.bins.join(binary).to_string_lossy(), &args)
    }

    fn manager_args(&self, verb: &str, node: &Node) -> Vec<String> {
        manager_args(verb, node.addr, &self.heartbeat)
    }

    /// `shoal-manager init` on `node`; returns the process and the worker join token it printed.
    pub fn init(&self, node: &Node) -> Result<(Process, String), HarnessError> {
        let mut args = self.manager_args("init", node);
        args.extend(init_args());
        let process = self.spawn(node, "shoal-manager", args)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(process.log()).unwrap_or_default();
            if let Some(token) = printed_token(&log) {
                return Ok((process, token.to_owned()));
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout {
                    what: format!("`shoal-manager init` on {} to print a join token", node.name),
                    log: process.log().to_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `shoal-manager join` on `node` with a manager `token`, through the manager on `leader`.
    pub fn join_manager(&self, node: &Node, token: &str, leader: &Node) -> Result<Process, HarnessError> {
        let mut args = self.manager_args("join", node);
        args.extend(["--token".into(), token.into(), format!("{}:2377", leader.addr)]);
        self.spawn(node, "shoal-manager", args)
    }

    /// `shoal-manager run` on `node` (a restart from its data dir).
    pub fn restart_manager(&self, node: &Node) -> Result<Process, HarnessError> {
        self.restart_manager_with(node, &[])
    }

    /// `shoal-manager run EXTRA…` on `node` (e.g. `--force-new-cluster`).
    pub fn restart_manager_with(&self, node: &Node, extra: &[&str]) -> Result<Process, HarnessError> {
        let mut args = self.manager_args("run", node);
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        self.spawn(node, "shoal-manager", args)
    }

    /// `shoal-manager restore --input BACKUP` on `node`, into its (empty) data directory, then run.
    pub fn restore_manager(&self, node: &Node, backup: &Path) -> Result<Process, HarnessError> {
        let mut args = self.manager_args("restore", node);
        args.extend(["--input".into(), backup.to_string_lossy().into_owned()]);
        self.spawn(node, "shoal-manager", args)
    }

    /// `shoal-manager backup --output BACKUP` of the running manager on `node` (from inside its
    /// namespace, where its address answers): (success, stdout, stderr).
    pub fn backup_manager(&self, node: &Node, backup: &Path) -> Result<(bool, String, String), CommandError> {
        let manager = self.bins.join("shoal-manager");
        let mut command = Cluster::command_in(&node.netns, &manager.to_string_lossy());
        command.arg("backup").arg("--output").arg(backup).arg("--data-dir").arg(self.data_dir(node));
        let out = cmd::output(&mut command)?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// `shoal-agent join` on `node` with a worker `token`, through the manager on `manager`.
    pub fn join_worker(&self, node: &Node, token: &str, manager: &Node) -> Result<Process, HarnessError> {
        self.spawn(
            node,
            "shoal-agent",
            vec!["join".into(), "--token".into(), token.into(), format!("{}:2377", manager.addr)],
        )
    }

    /// The CLI as run inside `via`'s namespace against its manager, with `bundle_of`'s admin bundle.
    pub fn cli(&self, via: &Node, bundle_of: &Node) -> Cli {
        Cli {
            netns: Some(via.netns.clone()),
            host: format!("{}:2377", via.addr),
            shoal: self.bins.join("shoal"),
            bundle: self.data_dir(bundle_of).join("admin"),
        }
    }
}

/// The `shoal` CLI aimed at one manager, from inside a namespace of this host or from the host.
#[derive(Debug, Clone)]
pub struct Cli {
    netns: Option<String>,
    host: String,
    shoal: PathBuf,
    bundle: PathBuf,
}

impl Cli {
    /// `shoal ARGS…` as a command to spawn (for output that streams, such as `service logs -f`).
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let shoal = self.shoal.to_string_lossy();
        let mut command = match &self.netns {
            Some(netns) => Cluster::command_in(netns, &shoal),
            None => std::process::Command::new(&*shoal),
        };
        command.args(["--host", &self.host]).arg("--cert-path").arg(&self.bundle).args(args);
        command
    }

    /// Runs `shoal ARGS…`; returns (success, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> Result<(bool, String, String), CommandError> {
        let mut command = self.command(args);
        let out = cmd::output(&mut command)?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Runs `shoal ARGS…` with `input` on its standard input; returns (success, stdout, stderr).
    pub fn run_with_input(&self, args: &[&str], input: &str) -> Result<(bool, String, String), CommandError> {
        use std::io::Write as _;
        let mut command = self.command(args);
        command.stdin(std::process::Stdio::piped());
        command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let spawn_error = |source: std::io::Error| CommandError::Spawn { command: "shoal".into(), source };
        let mut child = command.spawn().map_err(spawn_error)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).map_err(spawn_error)?;
        }
        let out = child.wait_with_output().map_err(spawn_error)?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// A POSIX shell script that runs this CLI from the host's shell: it enters the node's
    /// namespace with `ip netns exec` (when it runs in one) and aims at the same manager with the
    /// same bundle (the `SHOAL_HOST` and `SHOAL_CERT_PATH` environment variables override both).
    pub fn wrapper_script(&self) -> String {
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let (checks, enter) = match &self.netns {
            Some(netns) => (
                format!(
                    "if [ \"$(id -u)\" != 0 ]; then\n\
                     \x20   echo 'shoal: the cluster runs in network namespaces: run this as root' >&2; exit 1\n\
                     fi\n\
                     if [ ! -e /run/netns/{netns} ]; then\n\
                     \x20   echo 'shoal: network namespace {netns} is gone: the cluster is not running' >&2; exit 1\n\
                     fi\n"
                ),
                format!("ip netns exec {netns} "),
            ),
            None => (String::new(), String::new()),
        };
        format!(
            "#!/bin/sh\n\
             # The shoal CLI against a test cluster, from the host's shell.\n\
             {checks}\
             if [ -z \"${{SHOAL_HOST:-}}\" ]; then SHOAL_HOST={host}; fi\n\
             if [ -z \"${{SHOAL_CERT_PATH:-}}\" ]; then SHOAL_CERT_PATH={bundle}; fi\n\
             export SHOAL_HOST SHOAL_CERT_PATH\n\
             exec {enter}{shoal} \"$@\"\n",
            host = quote(&self.host),
            bundle = quote(&self.bundle.to_string_lossy()),
            shoal = quote(&self.shoal.to_string_lossy()),
        )
    }

    /// The command line a person would type to do what this does, for instructions.
    pub fn command_line(&self) -> String {
        let enter = self.netns.as_ref().map(|n| format!("ip netns exec {n} ")).unwrap_or_default();
        format!("{enter}{} --host {} --cert-path {}", self.shoal.display(), self.host, self.bundle.display())
    }
}

/// The flags every node process takes, from the node's layout.
fn node_flags(layout: &NodeLayout, registry: &str, hostname: &str) -> Vec<String> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let mut flags = vec![
        "--data-dir".into(),
        path(&layout.data_dir),
        "--containerd-socket".into(),
        path(&layout.containerd_socket),
        "--containerd-namespace".into(),
        layout.containerd_namespace.clone(),
        "--logger".into(),
        path(&layout.bin_dir.join("shoal-runtime-logger")),
        "--insecure-registry".into(),
        registry.to_owned(),
        "--hostname".into(),
        hostname.to_owned(),
        "--netns-prefix".into(),
        layout.netns_prefix.clone(),
        "--gateway-subnet".into(),
        GATEWAY_SUBNET.into(),
    ];
    if let Some(resolv_conf) = &layout.resolv_conf {
        flags.extend(["--resolv-conf".into(), path(resolv_conf)]);
    }
    flags
}

/// The arguments of `shoal-manager VERB` on a node at `addr`.
fn manager_args(verb: &str, addr: Ipv4Addr, heartbeat: &str) -> Vec<String> {
    vec![
        verb.into(),
        "--advertise-addr".into(),
        addr.to_string(),
        "--listen-addr".into(),
        format!("{addr}:2377"),
        "--heartbeat-period".into(),
        heartbeat.into(),
    ]
}

/// `init`'s extra arguments: overlay subnets inside the test range (198.18.0.0/15), never
/// Swarm's 10.0.0.0/8.
fn init_args() -> [String; 4] {
    ["--default-addr-pool".into(), OVERLAY_POOL.into(), "--default-addr-pool-mask-length".into(), "24".into()]
}

/// The worker join token `shoal-manager init` printed in `log`, once it has.
fn printed_token(log: &str) -> Option<&str> {
    log.split_whitespace().skip_while(|w| *w != "--token").nth(1).filter(|t| t.starts_with("SHTKN-1-"))
}

/// Shoal on a [`Testbed`]'s nodes: managers and agents started with the flags each node's layout
/// asks for, and the CLI of this host aimed at a manager with its admin bundle (copied over).
#[derive(Debug)]
pub struct BedCluster<'a> {
    bed: &'a dyn Testbed,
    args: Vec<String>,
}

impl<'a> BedCluster<'a> {
    /// Shoal on `bed`.
    pub fn new(bed: &'a dyn Testbed) -> Self {
        Self { bed, args: Vec::new() }
    }

    /// Shoal on `bed`, every manager and agent started with `args` too (e.g. `--lb-backend`).
    pub fn with_args(bed: &'a dyn Testbed, args: &[&str]) -> Self {
        Self { bed, args: args.iter().map(|a| (*a).to_owned()).collect() }
    }

    fn spawn(
        &self,
        node: &dyn TestNode,
        binary: &str,
        mut args: Vec<String>,
    ) -> Result<Box<dyn NodeProcess>, HarnessError> {
        args.extend(node_flags(node.layout(), self.bed.registry(), node.name()));
        args.extend(self.args.iter().cloned());
        let mut argv = vec![node.layout().bin_dir.join(binary).to_string_lossy().into_owned()];
        argv.extend(args);
        let name = binary.strip_prefix("shoal-").unwrap_or(binary);
        node.spawn(name, &argv)
    }

    /// `shoal-manager init` on `node`; returns the process and the worker join token it printed.
    pub fn init(&self, node: &dyn TestNode) -> Result<(Box<dyn NodeProcess>, String), HarnessError> {
        let mut args = manager_args("init", node.addr(), self.bed.heartbeat());
        args.extend(init_args());
        let process = self.spawn(node, "shoal-manager", args)?;
        let limit = Duration::from_secs(30 * u64::from(self.bed.timescale()));
        let deadline = Instant::now() + limit;
        loop {
            let log = process.log().unwrap_or_default();
            if let Some(token) = printed_token(&log) {
                return Ok((process, token.to_owned()));
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Timeout {
                    what: format!("`shoal-manager init` on {} to print a join token (it printed: {log})", node.name()),
                    log: PathBuf::from(format!("{}:/var/log/shoal/manager.log", node.name())),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `shoal-agent join` on `node` with a worker `token`, through the manager on `manager`.
    pub fn join_worker(
        &self,
        node: &dyn TestNode,
        token: &str,
        manager: &dyn TestNode,
    ) -> Result<Box<dyn NodeProcess>, HarnessError> {
        let args = vec!["join".into(), "--token".into(), token.into(), format!("{}:2377", manager.addr())];
        self.spawn(node, "shoal-agent", args)
    }

    /// `shoal-manager join` on `node` with a manager `token`, through the manager on `leader`.
    pub fn join_manager(
        &self,
        node: &dyn TestNode,
        token: &str,
        leader: &dyn TestNode,
    ) -> Result<Box<dyn NodeProcess>, HarnessError> {
        let mut args = manager_args("join", node.addr(), self.bed.heartbeat());
        args.extend(["--token".into(), token.into(), format!("{}:2377", leader.addr())]);
        self.spawn(node, "shoal-manager", args)
    }

    /// The CLI of this host, run in the testbed's client namespace, against the manager on
    /// `manager` with its admin bundle (copied into the testbed's work directory).
    pub fn cli(&self, manager: &dyn TestNode) -> Result<Cli, HarnessError> {
        let remote = manager.layout().data_dir.join("admin");
        let out = manager.exec(&["tar", "-C", &remote.to_string_lossy(), "-cf", "-", "."])?;
        if !out.status.success() {
            return Err(HarnessError::Missing {
                what: format!("the admin bundle {} on {}", remote.display(), manager.name()),
                hint: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        let archive = out.stdout;
        let bundle = self.bed.work_dir().join(format!("{}-admin", manager.name()));
        let _ = std::fs::remove_dir_all(&bundle);
        tar::Archive::new(archive.as_slice()).unpack(&bundle).map_err(|source| HarnessError::Io {
            action: "unpack the admin bundle",
            path: bundle.clone(),
            source,
        })?;
        Ok(Cli {
            netns: self.bed.client_netns().map(str::to_owned),
            host: format!("{}:2377", manager.addr()),
            shoal: self.bed.cli_binary().to_owned(),
            bundle,
        })
    }
}

//! One harness over several kinds of machines: what an end-to-end scenario needs from a node
//! (run a command, start a long-running process, read a file) and from the testbed around the
//! nodes (where the CLI and outside clients run, the registry, what the kernels offer).
//!
//! Three backends implement it: [`NetnsNode`] (a network namespace of this host, next to the
//! others on the underlay bridge), [`crate::ssh::SshNode`] (a machine reached over SSH, real or
//! one of [`crate::vm::VmCluster`]'s qemu VMs) and whatever a test writes. Scenarios are written
//! once against [`Testbed`] and [`TestNode`].

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::cmd;
use crate::netns::{Cluster, HarnessError, Node, Process};

/// Where a Shoal node keeps things on its machine: the flags its processes get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLayout {
    /// The directory holding `shoal-manager`, `shoal-agent`, `shoal` and `shoal-runtime-logger`.
    pub bin_dir: PathBuf,
    /// The node's data directory (`--data-dir`).
    pub data_dir: PathBuf,
    /// containerd's socket.
    pub containerd_socket: PathBuf,
    /// The containerd namespace of the node's containers.
    pub containerd_namespace: String,
    /// The prefix of the network namespaces the agent makes.
    pub netns_prefix: String,
    /// The resolver configuration the agent reads its upstreams from (`None`: the machine's own).
    pub resolv_conf: Option<PathBuf>,
}

/// A machine of the testbed.
pub trait TestNode: fmt::Debug + Send + Sync {
    /// Its short name, also the hostname Shoal registers (`node1`, `vm2`, …).
    fn name(&self) -> &str;

    /// Its address on the underlay: what it advertises and what clients reach.
    fn addr(&self) -> Ipv4Addr;

    /// Where Shoal keeps its binaries, data and containers there.
    fn layout(&self) -> &NodeLayout;

    /// Runs `argv` there to completion and returns its output, whatever its exit status.
    fn exec(&self, argv: &[&str]) -> Result<Output, HarnessError>;

    /// Starts `argv` there in the background, its output in a log named after `name`.
    fn spawn(&self, name: &str, argv: &[String]) -> Result<Box<dyn NodeProcess>, HarnessError>;

    /// The contents of the file at `path` there.
    fn read_file(&self, path: &Path) -> Result<Vec<u8>, HarnessError>;

    /// Runs `argv` there; fails unless it exits 0. Returns its standard output.
    fn run(&self, argv: &[&str]) -> Result<String, HarnessError> {
        let output = self.exec(argv)?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        Err(HarnessError::Command {
            action: format!("run on {}", self.name()),
            source: cmd::CommandError::Failed {
                command: argv.join(" "),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            },
        })
    }
}

/// A process a [`TestNode`] started. Killed when dropped.
pub trait NodeProcess: fmt::Debug + Send {
    /// Sends SIGKILL, as a crashed machine would, and returns once it is gone.
    fn kill(&mut self) -> Result<(), HarnessError>;

    /// Whether it is still running.
    fn is_running(&mut self) -> bool;

    /// What it printed so far (standard output and error).
    fn log(&self) -> Result<String, HarnessError>;
}

impl NodeProcess for Process {
    fn kill(&mut self) -> Result<(), HarnessError> {
        Process::kill(self)
    }

    fn is_running(&mut self) -> bool {
        Process::is_running(self)
    }

    fn log(&self) -> Result<String, HarnessError> {
        let path = Process::log(self);
        std::fs::read_to_string(path).map_err(|source| HarnessError::Io {
            action: "read log",
            path: path.to_owned(),
            source,
        })
    }
}

/// What the kernels of a testbed's nodes offer, so that a scenario checks what it should see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// The load balancer the agents pick: `"ipvs"` where the kernel has IPVS, else `"nftables"`.
    pub load_balancer: &'static str,
    /// A machine exporting `/srv/nfs` over NFSv4 to the nodes, whose kernels mount NFS.
    pub nfs_server: Option<Ipv4Addr>,
    /// The nodes' kernels have ESP with AES-GCM: encrypted overlays work (else their tasks are
    /// refused with the reason).
    pub esp: bool,
}

/// The machines a scenario runs on and what surrounds them.
pub trait Testbed: fmt::Debug {
    /// The nodes, the first one the manager.
    fn nodes(&self) -> Vec<&dyn TestNode>;

    /// The network namespace of this host where the `shoal` CLI and the clients "outside the
    /// cluster" run (on the underlay, like any machine of the network); `None`: this host's own.
    fn client_netns(&self) -> Option<&str>;

    /// The plain-HTTP registry holding the test images (`HOST:PORT`), reachable from the nodes.
    fn registry(&self) -> &str;

    /// What the nodes' kernels offer.
    fn features(&self) -> Features;

    /// How much slower than a netns node a node runs: 1 on this host, more under emulation.
    /// Scenarios multiply their deadlines by it.
    fn timescale(&self) -> u32;

    /// The period of the agents' heartbeats, in seconds (`--heartbeat-period`).
    fn heartbeat(&self) -> &str;

    /// A directory of this host for files the scenario keeps (the admin bundle it copies).
    fn work_dir(&self) -> &Path;

    /// The `shoal` CLI of this host.
    fn cli_binary(&self) -> &Path;
}

/// A node of the netns harness seen through [`TestNode`]: commands run in its namespace with the
/// host's file system, so files are read directly.
#[derive(Debug, Clone)]
pub struct NetnsNode {
    node: Node,
    log_dir: PathBuf,
    layout: NodeLayout,
}

impl NetnsNode {
    /// `node` of `cluster`, laid out as `layout` says.
    pub fn new(cluster: &Cluster, node: &Node, layout: NodeLayout) -> Self {
        Self { node: node.clone(), log_dir: cluster.dir().join("logs"), layout }
    }

    /// The harness node.
    pub fn node(&self) -> &Node {
        &self.node
    }
}

impl TestNode for NetnsNode {
    fn name(&self) -> &str {
        &self.node.name
    }

    fn addr(&self) -> Ipv4Addr {
        self.node.addr
    }

    fn layout(&self) -> &NodeLayout {
        &self.layout
    }

    fn exec(&self, argv: &[&str]) -> Result<Output, HarnessError> {
        let (program, args) = argv.split_first().ok_or_else(|| HarnessError::Missing {
            what: format!("a command to run on {}", self.node.name),
            hint: "pass at least the program".into(),
        })?;
        let mut command = Cluster::command_in(&self.node.netns, program);
        command.args(args);
        cmd::output(&mut command)
            .map_err(|source| HarnessError::Command { action: format!("run on {}", self.node.name), source })
    }

    fn spawn(&self, name: &str, argv: &[String]) -> Result<Box<dyn NodeProcess>, HarnessError> {
        let (program, args) = argv.split_first().ok_or_else(|| HarnessError::Missing {
            what: format!("a command to start on {}", self.node.name),
            hint: "pass at least the program".into(),
        })?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let name = format!("{}-{name}", self.node.name);
        let process = crate::netns::spawn_in(&self.log_dir, &self.node.netns, &name, program, &args)?;
        Ok(Box::new(process))
    }

    fn read_file(&self, path: &Path) -> Result<Vec<u8>, HarnessError> {
        std::fs::read(path).map_err(|source| HarnessError::Io { action: "read", path: path.to_owned(), source })
    }
}

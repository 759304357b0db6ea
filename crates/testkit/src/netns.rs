//! The cluster harness: an underlay bridge in a namespace of its own and N node namespaces joined
//! to it by veth pairs, processes run inside nodes with their own log files, and faults (kill a
//! process, take a link down, partition two nodes with nftables drops).
//!
//! Address plan: the underlay bridge is 192.0.2.1/24 (the registry listens there); node `i`
//! (1-based) is 192.0.2.(10+i)/24 on its `eth0`. No namespace has a default route, so nothing the
//! tests send can leave the sandbox.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::RUN_PREFIX_ROOT;
use crate::cmd::{self, CommandError};

/// The most nodes a cluster can have: node `i` is 192.0.2.(10+i).
const MAX_NODES: usize = 244;

/// The underlay bridge's address in its namespace.
pub const UNDERLAY_GATEWAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// Building or driving the harness failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A command that sets up or changes the harness failed.
    #[error("harness {action}: {source}")]
    Command {
        /// What the harness was doing, e.g. `create namespace shoaltest-ab12cd-n1`.
        action: String,
        /// The failed command.
        source: CommandError,
    },
    /// A file or directory of the harness could not be made.
    #[error("harness {action} {path}: {source}")]
    Io {
        /// What the harness was doing.
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Signalling or reaping a process the harness started failed.
    #[error("harness {action}: {source}")]
    Process {
        /// What the harness was doing, e.g. `kill process node1-manager (4242)`.
        action: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A node index that has no underlay address.
    #[error("node index {index} is out of range: nodes are numbered 1 to 244 (192.0.2.11 to 192.0.2.254)")]
    NodeIndex {
        /// The index asked for.
        index: usize,
    },
    /// Something the harness waits for did not happen in time.
    #[error("harness: {what} did not happen in time; see {log}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The log to look at.
        log: PathBuf,
    },
    /// Something the harness needs is not there (a tool, a module, a file on a node).
    #[error("{what} is missing: {hint}")]
    Missing {
        /// What is missing.
        what: String,
        /// What to do about it, or what was found instead.
        hint: String,
    },
    /// A piece of a testbed (the test images, a registry, a containerd) could not be set up.
    #[error("harness: cannot set up {what}: {detail}")]
    Setup {
        /// What was being set up.
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// An inventory file of `cargo xtask e2e --hosts` is not valid.
    #[error("inventory {path}: {message}")]
    Inventory {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        message: String,
    },
    /// A node index outside `1..=N`.
    #[error("no node {index} in a cluster of {count} nodes (nodes are numbered from 1)")]
    NoSuchNode {
        /// The index asked for.
        index: usize,
        /// How many nodes there are.
        count: usize,
    },
}

/// One node of the harness: a network namespace with an address on the underlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// 1-based index.
    pub index: usize,
    /// Short name, `node1`, `node2`, …
    pub name: String,
    /// The network namespace (`ip netns` name).
    pub netns: String,
    /// Address on the underlay.
    pub addr: Ipv4Addr,
    /// The veth end on the underlay bridge (inside the underlay namespace).
    link: String,
}

/// A process started by the harness. Killed when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file that receives its standard output and error.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGKILL and reaps it, as a crashed machine would. Returns once it is gone.
    pub fn kill(&mut self) -> Result<(), HarnessError> {
        let action = format!("kill process {} ({})", self.name, self.child.id());
        match self.child.kill() {
            Ok(()) => {}
            // Already exited: nothing to kill, still reap below.
            Err(err) if err.kind() == std::io::ErrorKind::InvalidInput => {}
            Err(source) => return Err(process_error(action, source)),
        }
        self.child.wait().map(drop).map_err(|source| process_error(action, source))
    }

    /// Waits for it to exit by itself and returns its exit code (`None` when killed by a signal).
    pub fn wait(&mut self) -> Result<Option<i32>, HarnessError> {
        let name = self.name.clone();
        self.child
            .wait()
            .map(|status| status.code())
            .map_err(|source| process_error(format!("wait for process {name}"), source))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Maps an I/O error of `action` on `path` to a [`HarnessError::Io`].
pub(crate) fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> HarnessError + use<> {
    let path = path.to_owned();
    move |source| HarnessError::Io { action, path, source }
}

fn process_error(action: String, source: std::io::Error) -> HarnessError {
    HarnessError::Process { action, source }
}

/// A harness cluster. Dropping it kills every process in its namespaces, deletes the namespaces
/// (and with them every link and nftables rule inside) and removes its directory.
#[derive(Debug)]
pub struct Cluster {
    prefix: String,
    underlay: String,
    nodes: Vec<Node>,
    dir: PathBuf,
    keep_dir: bool,
}

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

/// A run ID unique across concurrent test processes: the process ID and a per-process counter,
/// mixed with the clock so that a recycled PID does not reuse the names of a leftover run.
pub(crate) fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
    let mixed = (std::process::id().wrapping_mul(2_654_435_761)) ^ nanos ^ (n << 24);
    format!("{:06x}", mixed & 0xff_ffff)
}

impl Cluster {
    /// Builds an underlay and `nodes` node namespaces on it, under a fresh per-run prefix.
    pub fn new(nodes: usize) -> Result<Self, HarnessError> {
        Self::with_run_id(&run_id(), nodes)
    }

    /// Like [`Cluster::new`] with a chosen run ID (names become `shoaltest-<run_id>-…`), for a
    /// cluster that outlives its creator, such as `cargo xtask demo`'s.
    pub fn with_run_id(run_id: &str, nodes: usize) -> Result<Self, HarnessError> {
        let prefix = format!("{RUN_PREFIX_ROOT}{run_id}");
        let dir = std::env::temp_dir().join(&prefix);
        std::fs::create_dir_all(dir.join("logs")).map_err(|source| HarnessError::Io {
            action: "create directory",
            path: dir.clone(),
            source,
        })?;
        let mut cluster = Self { underlay: format!("{prefix}-u"), prefix, nodes: Vec::new(), dir, keep_dir: false };
        // From here on `cluster` cleans up after itself if a step fails.
        cluster.build_underlay()?;
        for index in 1..=nodes {
            cluster.add_node(index)?;
        }
        narrate(&format!("cluster {} up with {nodes} nodes", cluster.prefix));
        Ok(cluster)
    }

    /// The per-run prefix every name of this cluster starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The cluster's directory (logs, data dirs of the processes it runs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The namespace that holds the underlay bridge.
    pub fn underlay_netns(&self) -> &str {
        &self.underlay
    }

    /// All nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Node `index` (1-based).
    pub fn node(&self, index: usize) -> Result<&Node, HarnessError> {
        index
            .checked_sub(1)
            .and_then(|i| self.nodes.get(i))
            .ok_or(HarnessError::NoSuchNode { index, count: self.nodes.len() })
    }

    /// Adds one more node to a running cluster (as a machine joining later would).
    pub fn add_node(&mut self, index: usize) -> Result<&Node, HarnessError> {
        // Nodes are 192.0.2.11 to 192.0.2.254: .255 is the underlay's broadcast address.
        let last_octet = u8::try_from(10 + index)
            .ok()
            .filter(|_| (1..=MAX_NODES).contains(&index))
            .ok_or(HarnessError::NodeIndex { index })?;
        let node = Node {
            index,
            name: format!("node{index}"),
            netns: format!("{}-n{index}", self.prefix),
            addr: Ipv4Addr::new(192, 0, 2, last_octet),
            link: format!("n{index}"),
        };
        self.ip(&format!("create namespace {}", node.netns), &["netns", "add", &node.netns])?;
        self.nodes.push(node.clone());
        let ns = node.netns.as_str();
        let u = self.underlay.clone();
        self.ip_in(
            &u,
            "create veth",
            &["link", "add", &node.link, "type", "veth", "peer", "name", "eth0", "netns", ns],
        )?;
        self.ip_in(&u, "attach veth", &["link", "set", &node.link, "master", "br0", "up"])?;
        self.ip_in(ns, "address eth0", &["addr", "add", &format!("{}/24", node.addr), "dev", "eth0"])?;
        self.ip_in(ns, "bring up eth0", &["link", "set", "eth0", "up"])?;
        self.ip_in(ns, "bring up lo", &["link", "set", "lo", "up"])?;
        Ok(&self.nodes[self.nodes.len() - 1])
    }

    fn build_underlay(&mut self) -> Result<(), HarnessError> {
        let u = self.underlay.clone();
        self.ip(&format!("create namespace {u}"), &["netns", "add", &u])?;
        self.ip_in(&u, "bring up lo", &["link", "set", "lo", "up"])?;
        self.ip_in(&u, "create bridge", &["link", "add", "br0", "type", "bridge"])?;
        self.ip_in(&u, "address bridge", &["addr", "add", &format!("{UNDERLAY_GATEWAY}/24"), "dev", "br0"])?;
        self.ip_in(&u, "bring up bridge", &["link", "set", "br0", "up"])?;
        Ok(())
    }

    fn ip(&self, action: &str, args: &[&str]) -> Result<String, HarnessError> {
        cmd::run(Command::new("ip").args(args))
            .map_err(|source| HarnessError::Command { action: action.to_owned(), source })
    }

    fn ip_in(&self, netns: &str, action: &str, args: &[&str]) -> Result<String, HarnessError> {
        cmd::run(Command::new("ip").arg("-n").arg(netns).args(args))
            .map_err(|source| HarnessError::Command { action: format!("{action} in {netns}"), source })
    }

    /// A command that runs `program` inside `netns` (with `/sys` of that namespace).
    pub fn command_in(netns: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns, program]);
        command
    }

    /// Starts `program args…` in `node`, with standard output and error in `logs/NODE-NAME.log`.
    pub fn spawn(&self, node: &Node, name: &str, program: &str, args: &[&str]) -> Result<Process, HarnessError> {
        self.spawn_in(&node.netns, &format!("{}-{name}", node.name), program, args)
    }

    /// Like [`Cluster::spawn`], in any namespace of this cluster (the underlay's included).
    pub fn spawn_in(&self, netns: &str, name: &str, program: &str, args: &[&str]) -> Result<Process, HarnessError> {
        spawn_in(&self.dir.join("logs"), netns, name, program, args)
    }

    /// Runs `program args…` to completion in `node`; fails unless it exits 0.
    pub fn exec(&self, node: &Node, program: &str, args: &[&str]) -> Result<String, HarnessError> {
        cmd::run(Self::command_in(&node.netns, program).args(args))
            .map_err(|source| HarnessError::Command { action: format!("run {program} in {}", node.name), source })
    }

    /// Whether `from` gets an ICMP echo reply from `to` within one second.
    pub fn can_reach(&self, from: &Node, to: Ipv4Addr) -> bool {
        let mut ping = Self::command_in(&from.netns, crate::images::BUSYBOX);
        ping.args(["ping", "-c", "1", "-W", "1", &to.to_string()]);
        cmd::output(&mut ping).is_ok_and(|output| output.status.success())
    }

    /// Takes `node`'s underlay link down (the cable is pulled).
    pub fn link_down(&self, node: &Node) -> Result<(), HarnessError> {
        self.ip_in(&self.underlay, &format!("take {} down", node.name), &["link", "set", &node.link, "down"]).map(drop)
    }

    /// Brings `node`'s underlay link back up.
    pub fn link_up(&self, node: &Node) -> Result<(), HarnessError> {
        self.ip_in(&self.underlay, &format!("bring {} up", node.name), &["link", "set", &node.link, "up"]).map(drop)
    }

    /// Drops all traffic between `a` and `b`, in both directions, with nftables rules in both nodes.
    pub fn partition(&self, a: &Node, b: &Node) -> Result<(), HarnessError> {
        self.drop_peer(a, b)?;
        self.drop_peer(b, a)
    }

    /// Removes the partition between `a` and `b` (the rules on both sides).
    pub fn heal(&self, a: &Node, b: &Node) -> Result<(), HarnessError> {
        for (node, peer) in [(a, b), (b, a)] {
            let rule_set = format!("delete table inet {}\n", partition_table(peer));
            self.nft(node, &format!("heal {} from {}", node.name, peer.name), &rule_set)?;
        }
        Ok(())
    }

    /// Heals every partition in the cluster.
    pub fn heal_all(&self) -> Result<(), HarnessError> {
        for node in &self.nodes {
            let tables = self.nft_list(node)?;
            for table in tables.lines().filter_map(|l| l.strip_prefix("table inet ")) {
                if table.starts_with("shoaltest_drop_") {
                    self.nft(node, &format!("heal {}", node.name), &format!("delete table inet {table}\n"))?;
                }
            }
        }
        Ok(())
    }

    fn drop_peer(&self, node: &Node, peer: &Node) -> Result<(), HarnessError> {
        let table = partition_table(peer);
        let addr = peer.addr;
        let rule_set = format!(
            "table inet {table} {{\n\
             \tchain input {{ type filter hook input priority -10; policy accept; ip saddr {addr} drop; }}\n\
             \tchain output {{ type filter hook output priority -10; policy accept; ip daddr {addr} drop; }}\n\
             }}\n"
        );
        self.nft(node, &format!("partition {} from {}", node.name, peer.name), &rule_set)
    }

    fn nft(&self, node: &Node, action: &str, rule_set: &str) -> Result<(), HarnessError> {
        let path = self.dir.join(format!("nft-{}.rules", node.name));
        std::fs::write(&path, rule_set).map_err(|source| HarnessError::Io {
            action: "write nft rules",
            path: path.clone(),
            source,
        })?;
        let mut nft = Self::command_in(&node.netns, "nft");
        nft.arg("-f").arg(&path);
        cmd::run(&mut nft).map(drop).map_err(|source| HarnessError::Command { action: action.to_owned(), source })
    }

    fn nft_list(&self, node: &Node) -> Result<String, HarnessError> {
        let mut nft = Self::command_in(&node.netns, "nft");
        nft.args(["list", "tables"]);
        cmd::run(&mut nft)
            .map_err(|source| HarnessError::Command { action: format!("list nft tables in {}", node.name), source })
    }

    /// Keeps the directory (logs) after the cluster is dropped, for a failing test to inspect.
    pub fn keep_dir(&mut self) {
        self.keep_dir = true;
    }
}

/// Starts `program args…` in `netns` (its network namespace only), with standard output and
/// error in `log_dir/NAME.log`.
pub(crate) fn spawn_in(
    log_dir: &Path,
    netns: &str,
    name: &str,
    program: &str,
    args: &[&str],
) -> Result<Process, HarnessError> {
    let log = log_dir.join(format!("{name}.log"));
    let io_err = |source| HarnessError::Io { action: "create log", path: log.clone(), source };
    let out = File::create(&log).map_err(io_err)?;
    let err = out.try_clone().map_err(io_err)?;
    // In the node's network namespace only, with the host's mount namespace, as a node's
    // processes run on a machine of their own: mounts an agent makes (its tasks' secret
    // tmpfs mounts, typed volumes) are seen by containerd and runc. (`ip netns exec` would
    // give each a private mount namespace.) nsenter execs the program, so the child's PID is
    // the program's.
    let mut command = Command::new("nsenter");
    command.arg(format!("--net=/run/netns/{netns}")).arg("--").arg(program);
    command.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    let child = command.spawn().map_err(|source| HarnessError::Command {
        action: format!("start {name} in {netns}"),
        source: CommandError::Spawn { command: cmd::render(&command), source },
    })?;
    Ok(Process { name: name.to_owned(), child, log })
}

fn partition_table(peer: &Node) -> String {
    format!("shoaltest_drop_{}", peer.name)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The nodes' own namespaces, the underlay, and whatever the processes in them made under
        // the run's prefix (an agent's task namespaces and sandboxes, which outlive a killed agent).
        let listed = cmd::run(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
        let made: Vec<String> = listed
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&format!("{}-", self.prefix)))
            .filter(|n| *n != self.underlay && !self.nodes.iter().any(|node| node.netns == *n))
            .map(str::to_owned)
            .collect();
        let namespaces =
            made.into_iter().chain(self.nodes.iter().map(|n| n.netns.clone())).chain([self.underlay.clone()]);
        for netns in namespaces {
            kill_netns_processes(&netns);
            // Drop cannot fail, but a namespace left behind must not go unnoticed.
            if let Err(err) = cmd::run(Command::new("ip").args(["netns", "delete", &netns])) {
                narrate(&format!("could not delete namespace {netns} ({err}); `cargo xtask clean` removes it"));
            }
        }
        // Mounts the agents made under the run's directory (their tasks' secret tmpfs mounts,
        // typed volumes), left by a killed agent.
        crate::sweep::unmount_under(&self.dir);
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        // containerd namespaces named after the run leave their (empty) parent cgroups behind.
        crate::sweep::remove_cgroups(Path::new("/sys/fs/cgroup"), &self.prefix);
    }
}

/// SIGKILLs every process in `netns` and waits (up to 5 s) until none is left.
pub(crate) fn kill_netns_processes(netns: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = cmd::run(Command::new("ip").args(["netns", "pids", netns])).unwrap_or_default();
        let pids: Vec<i32> = pids.split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `f` on a thread that has entered `netns` (sockets it opens belong to that namespace).
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, HarnessError> {
    let path = PathBuf::from("/run/netns").join(netns);
    let file = File::open(&path).map_err(|source| HarnessError::Io {
        action: "open namespace",
        path: path.clone(),
        source,
    })?;
    let joined =
        std::thread::spawn(move || nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map(|()| f())).join();
    match joined {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(errno)) => Err(HarnessError::Io { action: "enter namespace", path, source: errno.into() }),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Prints a progress line of the harness on standard error, where a failing test's output shows it.
pub(crate) fn narrate(message: &str) {
    // Test support: narrate the harness's steps next to the test's own output.
    #[allow(clippy::print_stderr)]
    {
        eprintln!("--- {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_indexes_without_an_address_are_refused() {
        // No namespace is made: the index is checked first. Dropping the cluster finds nothing to delete.
        let mut cluster = Cluster {
            prefix: "shoaltest-unit".into(),
            underlay: "shoaltest-unit-none".into(),
            nodes: Vec::new(),
            dir: std::env::temp_dir().join("shoaltest-unit-none"),
            keep_dir: true,
        };
        for index in [0, MAX_NODES + 1, 1000] {
            let err = cluster.add_node(index).expect_err("no address");
            assert!(matches!(err, HarnessError::NodeIndex { index: i } if i == index), "{err}");
        }
        assert!(cluster.nodes.is_empty());
    }
}

//! Shared fixtures of the privileged tests: a harness cluster with one overlay per node, container
//! namespaces, and guards that remove everything a test made, also when it panics.

// Test support: narrate steps on stderr, where a failing test's output shows them.
#![allow(clippy::print_stderr, dead_code)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;

use shoal_overlay::{Cidr, ContainerSpec, Kernel, KernelConfig, LocalEndpoint, Naming, NetworkSpec, Overlay};
use shoal_testkit::{Cluster, Node, images};

/// Deletes every named namespace that starts with a prefix (sandboxes and containers of a test)
/// when dropped. Declared after the cluster so it runs first.
pub(crate) struct NetnsSweep(pub(crate) String);

impl Drop for NetnsSweep {
    fn drop(&mut self) {
        let names = netns_with_prefix(&self.0);
        let batch: String = names.iter().map(|n| format!("netns delete {n}\n")).collect();
        ip_batch(&batch);
    }
}

/// Runs `ip -force -batch -` with `commands` on standard input (one process for many commands).
pub(crate) fn ip_batch(commands: &str) -> bool {
    use std::io::Write as _;
    let Ok(mut child) = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
    else {
        return false;
    };
    let written = child.stdin.take().is_some_and(|mut stdin| stdin.write_all(commands.as_bytes()).is_ok());
    child.wait().is_ok_and(|s| s.success()) && written
}

/// Named namespaces whose names start with `prefix`.
pub(crate) fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// A test world: the harness cluster, and a sweep of everything under its prefix.
pub(crate) struct World {
    pub(crate) cluster: Cluster,
    _sweep: NetnsSweep,
}

impl World {
    pub(crate) fn new(nodes: usize) -> Self {
        let cluster = Cluster::new(nodes).expect("build cluster");
        let sweep = NetnsSweep(cluster.prefix().to_owned());
        Self { cluster, _sweep: sweep }
    }

    pub(crate) fn node(&self, index: usize) -> Node {
        self.cluster.node(index).expect("node").clone()
    }

    /// The overlay of `node`, naming its sandboxes `{prefix}-{node}-{network}`.
    pub(crate) fn overlay(&self, node: &Node) -> Overlay<Kernel> {
        let config = KernelConfig {
            node_netns: Some(PathBuf::from("/run/netns").join(&node.netns)),
            netns_dir: PathBuf::from("/run/netns"),
        };
        let naming = Naming {
            netns_prefix: format!("{}-{}-", self.cluster.prefix(), node.name),
            nft_table: "shoal_overlay".into(),
            esp_table: "shoal_esp".into(),
        };
        Overlay::new(Kernel::new(config).expect("kernel"), naming)
    }

    /// Creates a container namespace `{prefix}-{name}`; removed with the world.
    pub(crate) fn container_netns(&self, name: &str) -> (String, PathBuf) {
        let netns = format!("{}-{name}", self.cluster.prefix());
        let out = Command::new("ip").args(["netns", "add", &netns]).output().expect("ip netns add");
        assert!(out.status.success(), "ip netns add {netns}: {}", String::from_utf8_lossy(&out.stderr));
        let path = PathBuf::from("/run/netns").join(&netns);
        (netns, path)
    }

    /// Creates `count` container namespaces `{prefix}-{stem}{i}` with one `ip` process.
    pub(crate) fn container_netns_many(&self, stem: &str, count: usize) -> Vec<PathBuf> {
        let names: Vec<String> = (0..count).map(|i| format!("{}-{stem}{i}", self.cluster.prefix())).collect();
        let batch: String = names.iter().map(|n| format!("netns add {n}\n")).collect();
        assert!(ip_batch(&batch), "ip -batch netns add");
        names.iter().map(|n| PathBuf::from("/run/netns").join(n)).collect()
    }

    /// A container with one endpoint per (network, address), named eth0, eth1, …
    pub(crate) fn container(&self, name: &str, attachments: &[(&str, Ipv4Addr)]) -> (String, ContainerSpec) {
        let (netns, path) = self.container_netns(name);
        let endpoints = attachments
            .iter()
            .enumerate()
            .map(|(i, (net, ip))| LocalEndpoint::new(*net, format!("eth{i}"), *ip))
            .collect();
        (netns, ContainerSpec { id: name.to_owned(), netns: path, endpoints, egress: None })
    }
}

/// A network `id` with VNI `vni` on 198.18.`third`.0/24, gateway .1.
pub(crate) fn network(id: &str, vni: u32, third: u8) -> NetworkSpec {
    let subnet: Cidr = format!("198.18.{third}.0/24").parse().expect("cidr");
    NetworkSpec::new(id, vni, subnet, IpAddr::V4(Ipv4Addr::new(198, 18, third, 1)))
}

/// Whether a ping from namespace `netns` to `to` is answered: up to three tries of a second
/// each, so that a loaded machine does not fail a test that expects a reply.
pub(crate) fn ping(netns: &str, to: impl ToString) -> bool {
    let to = to.to_string();
    (0..3).any(|_| ping_once(netns, &to))
}

/// Whether one ping from `netns` to `to` goes unanswered for a second (for paths that must be cut).
pub(crate) fn no_reply(netns: &str, to: impl ToString) -> bool {
    !ping_once(netns, &to.to_string())
}

fn ping_once(netns: &str, to: &str) -> bool {
    Cluster::command_in(netns, images::BUSYBOX)
        .args(["ping", "-c", "1", "-W", "1", to])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// An empty `netns` runs `ip ARGS` in the test's own namespace.
pub(crate) fn ip_in(netns: &str, args: &[&str]) -> String {
    let mut command = Command::new("ip");
    if !netns.is_empty() {
        command.arg("-n").arg(netns);
    }
    let out = command.args(args).output().expect("run ip");
    assert!(out.status.success(), "ip -n {netns} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn narrate(step: &str) {
    eprintln!("--- {step}");
}

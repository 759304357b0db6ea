//! Testbeds of machines reached over SSH, described by an inventory file (TOML), for
//! `cargo xtask e2e --hosts FILE`; `cargo xtask e2e --vm` writes one for its VMs and runs the same
//! way, so both paths are one.
//!
//! ```toml
//! registry = "192.0.2.1:5000"        # plain-HTTP registry the nodes pull the test images from
//! client_netns = "shoaltest-ab12cd-u" # optional: the netns of this host the CLI and clients use
//! ssh_key = "/root/.ssh/id_ed25519"   # optional: ssh's own choice otherwise
//! load_balancer = "ipvs"              # what the agents should pick: ipvs or nftables
//! timescale = 1                       # deadlines × this (slow machines, emulation)
//! heartbeat = "2"                     # agents' heartbeat period, seconds
//! nfs_server = "192.0.2.11"           # optional: exports /srv/nfs (NFSv4) to the nodes
//! esp = true                          # the kernels have ESP (encrypted overlays); default true
//!
//! [[node]]                            # the first node is the manager
//! name = "node1"
//! addr = "192.0.2.11"
//! ssh = "root@192.0.2.11"             # default root@ADDR
//! bin_dir = "/opt/shoal/bin"          # defaults shown
//! data_dir = "/var/lib/shoal"
//! containerd_socket = "/run/containerd/containerd.sock"
//! containerd_namespace = "shoal"
//! ```

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::netns::HarnessError;
use crate::node::{Features, NodeLayout, TestNode, Testbed};
use crate::ssh::{SshNode, SshTarget};

/// A parsed inventory file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// `HOST:PORT` of the registry with the test images.
    pub registry: String,
    /// The network namespace of this host that reaches the nodes (none: this host's own).
    #[serde(default)]
    pub client_netns: Option<String>,
    /// The SSH private key (none: ssh's own choice).
    #[serde(default)]
    pub ssh_key: Option<PathBuf>,
    /// `ipvs` or `nftables`: what the nodes' agents should pick.
    #[serde(default = "default_load_balancer")]
    pub load_balancer: String,
    /// Deadlines are multiplied by this.
    #[serde(default = "default_timescale")]
    pub timescale: u32,
    /// The agents' heartbeat period in seconds.
    #[serde(default = "default_heartbeat")]
    pub heartbeat: String,
    /// A machine exporting `/srv/nfs` over NFSv4 to the nodes (none: the NFS scenario is skipped).
    #[serde(default)]
    pub nfs_server: Option<Ipv4Addr>,
    /// Whether the nodes' kernels have ESP with AES-GCM (encrypted overlays work); production
    /// kernels do.
    #[serde(default = "default_esp")]
    pub esp: bool,
    /// The machines, the first one the manager.
    #[serde(rename = "node")]
    pub nodes: Vec<InventoryNode>,
}

/// One machine of an inventory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryNode {
    /// Its name, also its hostname in the cluster.
    pub name: String,
    /// Its address on the cluster's network.
    pub addr: Ipv4Addr,
    /// `USER@HOST` for ssh (default `root@ADDR`).
    #[serde(default)]
    pub ssh: Option<String>,
    /// Where Shoal's binaries are.
    #[serde(default = "default_bin_dir")]
    pub bin_dir: PathBuf,
    /// Shoal's data directory.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// containerd's socket.
    #[serde(default = "default_containerd_socket")]
    pub containerd_socket: PathBuf,
    /// The containerd namespace of Shoal's containers.
    #[serde(default = "default_containerd_namespace")]
    pub containerd_namespace: String,
}

fn default_load_balancer() -> String {
    "nftables".into()
}
fn default_esp() -> bool {
    true
}
fn default_timescale() -> u32 {
    1
}
fn default_heartbeat() -> String {
    "1".into()
}
fn default_bin_dir() -> PathBuf {
    "/opt/shoal/bin".into()
}
fn default_data_dir() -> PathBuf {
    "/var/lib/shoal".into()
}
fn default_containerd_socket() -> PathBuf {
    "/run/containerd/containerd.sock".into()
}
fn default_containerd_namespace() -> String {
    "shoal".into()
}

impl Inventory {
    /// Reads and checks the inventory at `path`.
    pub fn load(path: &Path) -> Result<Self, HarnessError> {
        let text = std::fs::read_to_string(path).map_err(|source| HarnessError::Io {
            action: "read inventory",
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| HarnessError::Inventory { path: path.to_owned(), message })
    }

    /// Parses and checks an inventory; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Self, String> {
        let inventory: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        if inventory.nodes.is_empty() {
            return Err("no [[node]]: the first node is the manager, so at least one is needed".into());
        }
        if !["ipvs", "nftables"].contains(&inventory.load_balancer.as_str()) {
            return Err(format!("load_balancer = {:?}: use \"ipvs\" or \"nftables\"", inventory.load_balancer));
        }
        if !(1..=100).contains(&inventory.timescale) {
            return Err(format!("timescale = {}: use 1 to 100", inventory.timescale));
        }
        if inventory.heartbeat.parse::<f64>().map_or(true, |h| !(h > 0.0 && h <= 60.0)) {
            return Err(format!("heartbeat = {:?}: seconds, more than 0 and at most 60", inventory.heartbeat));
        }
        if inventory.registry.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()) {
            return Err(format!("registry = {:?}: HOST:PORT", inventory.registry));
        }
        let mut names = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for node in &inventory.nodes {
            if node.name.is_empty() || !node.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(format!("node name {:?}: letters, digits and '-' only", node.name));
            }
            if !names.insert(&node.name) {
                return Err(format!("node name {:?} appears twice", node.name));
            }
            if !addrs.insert(node.addr) {
                return Err(format!("node address {} appears twice", node.addr));
            }
        }
        Ok(inventory)
    }

    /// The inventory as TOML (what [`Inventory::parse`] reads back).
    pub fn to_toml(&self) -> String {
        let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let path = |p: &Path| quote(&p.to_string_lossy());
        let mut out = String::from("# A Shoal e2e testbed (cargo xtask e2e --hosts FILE).\n");
        let _ = writeln!(out, "registry = {}", quote(&self.registry));
        if let Some(netns) = &self.client_netns {
            let _ = writeln!(out, "client_netns = {}", quote(netns));
        }
        if let Some(key) = &self.ssh_key {
            let _ = writeln!(out, "ssh_key = {}", path(key));
        }
        let _ = writeln!(out, "load_balancer = {}", quote(&self.load_balancer));
        let _ = writeln!(out, "timescale = {}", self.timescale);
        let _ = writeln!(out, "heartbeat = {}", quote(&self.heartbeat));
        if let Some(server) = self.nfs_server {
            let _ = writeln!(out, "nfs_server = \"{server}\"");
        }
        let _ = writeln!(out, "esp = {}", self.esp);
        for node in &self.nodes {
            let _ = writeln!(out, "\n[[node]]\nname = {}\naddr = \"{}\"", quote(&node.name), node.addr);
            if let Some(ssh) = &node.ssh {
                let _ = writeln!(out, "ssh = {}", quote(ssh));
            }
            let _ = writeln!(out, "bin_dir = {}\ndata_dir = {}", path(&node.bin_dir), path(&node.data_dir));
            let _ = writeln!(out, "containerd_socket = {}", path(&node.containerd_socket));
            let _ = writeln!(out, "containerd_namespace = {}", quote(&node.containerd_namespace));
        }
        out
    }
}

/// The machines of an inventory as a [`Testbed`]. Dropping it closes the SSH connections and
/// removes its work directory.
#[derive(Debug)]
pub struct SshBed {
    inventory: Inventory,
    nodes: Vec<SshNode>,
    work_dir: PathBuf,
    cli: PathBuf,
}

impl SshBed {
    /// The testbed `inventory` describes; the CLI that drives it is `cli` (on this host).
    pub fn new(inventory: Inventory, cli: &Path) -> Result<Self, HarnessError> {
        let work_dir = std::env::temp_dir().join(format!("{}bed-{}", crate::RUN_PREFIX_ROOT, crate::netns::run_id()));
        let control_dir = work_dir.join("ssh");
        std::fs::create_dir_all(&control_dir).map_err(|source| HarnessError::Io {
            action: "create directory",
            path: control_dir.clone(),
            source,
        })?;
        let nodes = inventory
            .nodes
            .iter()
            .map(|n| {
                let target = SshTarget {
                    destination: n.ssh.clone().unwrap_or_else(|| format!("root@{}", n.addr)),
                    key: inventory.ssh_key.clone(),
                    netns: inventory.client_netns.clone(),
                    control_dir: control_dir.clone(),
                };
                let layout = NodeLayout {
                    bin_dir: n.bin_dir.clone(),
                    data_dir: n.data_dir.clone(),
                    containerd_socket: n.containerd_socket.clone(),
                    containerd_namespace: n.containerd_namespace.clone(),
                    netns_prefix: "shoal-".into(),
                    resolv_conf: None,
                };
                SshNode::new(&n.name, n.addr, target, layout)
            })
            .collect();
        Ok(Self { inventory, nodes, work_dir, cli: cli.to_owned() })
    }

    /// The inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// The nodes, as SSH nodes.
    pub fn ssh_nodes(&self) -> &[SshNode] {
        &self.nodes
    }

    /// Checks that every node answers over SSH and has Shoal's binaries and containerd, and
    /// removes what an earlier run left (Shoal's processes, data directory, containers): the
    /// scenarios start from machines without a cluster.
    pub fn prepare(&self) -> Result<(), HarnessError> {
        for node in &self.nodes {
            let layout = node.layout();
            let mut check = String::from("set -e; ");
            for binary in crate::shoal::BINARIES {
                let path = layout.bin_dir.join(binary);
                let _ = write!(
                    check,
                    "test -x {p} || {{ echo 'missing {p}: install the binaries of this build there' >&2; exit 3; }}; ",
                    p = crate::ssh::shell_quote(&path.to_string_lossy())
                );
            }
            let _ = write!(
                check,
                "test -S {s} || {{ echo 'containerd is not running (no socket {s})' >&2; exit 3; }}; ",
                s = crate::ssh::shell_quote(&layout.containerd_socket.to_string_lossy())
            );
            node.run(&["sh", "-c", &check])?;
            // A clean slate: Shoal's own processes, then its state.
            // The pattern's first character in brackets: it does not match this shell's own
            // command line, which spells it out.
            let bin = layout.bin_dir.join("shoal-").to_string_lossy().into_owned();
            let (first, rest) = bin.split_at(bin.chars().next().map_or(0, char::len_utf8));
            let reset = format!(
                "pkill -9 -f {pattern} ; sleep 0.2; rm -rf {data}",
                pattern = crate::ssh::shell_quote(&format!("[{first}]{rest}")),
                data = crate::ssh::shell_quote(&layout.data_dir.to_string_lossy()),
            );
            node.run(&["sh", "-c", &reset])?;
        }
        Ok(())
    }
}

impl Drop for SshBed {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.disconnect();
        }
        let _ = std::fs::remove_dir_all(&self.work_dir);
    }
}

impl Testbed for SshBed {
    fn nodes(&self) -> Vec<&dyn TestNode> {
        self.nodes.iter().map(|n| n as &dyn TestNode).collect()
    }

    fn client_netns(&self) -> Option<&str> {
        self.inventory.client_netns.as_deref()
    }

    fn registry(&self) -> &str {
        &self.inventory.registry
    }

    fn features(&self) -> Features {
        Features {
            load_balancer: if self.inventory.load_balancer == "ipvs" { "ipvs" } else { "nftables" },
            nfs_server: self.inventory.nfs_server,
            esp: self.inventory.esp,
        }
    }

    fn timescale(&self) -> u32 {
        self.inventory.timescale
    }

    fn heartbeat(&self) -> &str {
        &self.inventory.heartbeat
    }

    fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    fn cli_binary(&self) -> &Path {
        &self.cli
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
registry = "192.0.2.1:5000"
client_netns = "shoaltest-ab12cd-u"
load_balancer = "ipvs"
timescale = 4
heartbeat = "2"
nfs_server = "192.0.2.11"
esp = false

[[node]]
name = "vm1"
addr = "192.0.2.11"

[[node]]
name = "vm2"
addr = "192.0.2.12"
ssh = "admin@vm2.example"
data_dir = "/srv/shoal"
"#;

    #[test]
    fn an_inventory_parses_with_defaults_and_round_trips() {
        let inventory = Inventory::parse(EXAMPLE).expect("parse");
        assert_eq!(inventory.nodes.len(), 2);
        assert!(!inventory.esp);
        assert!(Inventory::parse(&EXAMPLE.replace("esp = false\n", "")).expect("parse").esp, "ESP by default");
        assert_eq!(inventory.nodes[0].bin_dir, Path::new("/opt/shoal/bin"));
        assert_eq!(inventory.nodes[0].containerd_namespace, "shoal");
        assert_eq!(inventory.nodes[1].data_dir, Path::new("/srv/shoal"));
        assert_eq!(inventory.nodes[1].ssh.as_deref(), Some("admin@vm2.example"));
        assert_eq!(Inventory::parse(&inventory.to_toml()).expect("round trip"), inventory);
    }

    #[test]
    fn bad_inventories_say_what_is_wrong() {
        let cases = [
            (EXAMPLE.replace("\"ipvs\"", "\"bpf\""), "load_balancer = \"bpf\""),
            (EXAMPLE.replace("timescale = 4", "timescale = 0"), "timescale = 0"),
            (EXAMPLE.replace("192.0.2.12", "192.0.2.11"), "192.0.2.11 appears twice"),
            (EXAMPLE.replace("name = \"vm2\"", "name = \"vm1\""), "\"vm1\" appears twice"),
            (EXAMPLE.replace("192.0.2.1:5000", "registry.test"), "HOST:PORT"),
            (EXAMPLE.replace("heartbeat = \"2\"", "heartbeat = \"fast\""), "heartbeat"),
            (EXAMPLE.replace("data_dir", "datadir"), "unknown field `datadir`"),
            ("registry = \"r:1\"\nnode = []\n".to_owned(), "no [[node]]"),
        ];
        for (text, expected) in cases {
            let err = Inventory::parse(&text).expect_err(expected);
            assert!(err.contains(expected), "{expected:?} not in {err:?}");
        }
    }
}

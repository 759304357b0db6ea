//! The routing mesh's kernel primitives: published ports DNATed to the node's ingress sandbox,
//! forwarding in the sandbox, and return routes in tasks that keep the client's real address.
//!
//! Like Swarm's routing mesh, a published port on any node address is DNATed in the node
//! namespace ([`publish`]) to the ingress sandbox's address on the gateway bridge, and the
//! sandbox balances it (shoal-ipvs-lb, `source_nat: false`) over the tasks' addresses on the
//! `ingress` overlay network. Unlike Swarm, the sandbox does not masquerade, so a task sees the
//! client's own address (moby#25526). Its reply must then leave through the sandbox that took
//! the connection, not by the task's default route, or it is never un-NATed. [`return_routes`]
//! does that in the task's namespace:
//!
//! ```text
//! table ip shoal_mesh {
//!     map sandboxes { type ether_addr : mark; elements = { 02:42:c6:12:ff:02 : 0x5348ff02, … } }
//!     map udp_flows { type ipv4_addr . inet_service . inet_service : ipv4_addr; flags dynamic,timeout; timeout 2m }
//!     chain prerouting { type filter hook prerouting priority mangle;
//!         iifname "eth0" ct state new ct mark set ether saddr map @sandboxes    # which sandbox sent it
//!         ct mark & 0xffff0000 == 0x53480000 meta l4proto udp                   # a UDP flow: the address
//!             update @udp_flows { ip saddr . udp sport . udp dport : ip daddr } }  # the client wrote to
//!     chain output_source { type route hook output priority raw;              # before conntrack:
//!         meta l4proto udp ip saddr set ip daddr . udp dport . udp sport map @udp_flows }  # reply from it
//!     chain output { type route hook output priority mangle;                  # a reply: the mark, and
//!         ct mark & 0xffff0000 == 0x53480000 meta mark set ct mark }            # the route looked up again
//! }
//! ip rule add pref 10000 fwmark 0x5348ff02 lookup 1397292802                   # one per sandbox
//! ip route replace default via 198.18.255.2 dev eth0 table 1397292802
//! ```
//!
//! Sandboxes are told apart by the source MAC of the frames they forward, which crates/overlay
//! derives from their ingress address ([`endpoint_mac`]). Marks and table numbers are
//! [`route_number`]: [`NUMBER_BASE`] plus the low 16 bits of the sandbox's address, stable as
//! sandboxes come and go (a number taken from a list position would move established
//! connections to another sandbox's table). rp_filter is loose on the ingress interface: the
//! sources there are clients' addresses, which the task's main table routes elsewhere.
//!
//! UDP needs the `udp_flows` step: a server on an unconnected socket bound to 0.0.0.0 (most
//! of them) answers from the source address of the route the kernel picks before any mark
//! exists — the task's default route, i.e. its egress address — so the reply would not match
//! the connection and would get no mark. Recording where each flow's datagrams went, and
//! setting that source on the replies before conntrack sees them, fixes it without knowing the
//! task's address. A TCP reply always has the accepted socket's address. Replacing the table
//! (when the set of sandboxes changes) forgets the recorded flows: a UDP flow's replies go
//! astray until its client's next datagram records it again.
//!
//! A client in the node namespace reaches a published port at any of the node's addresses
//! except loopback ones: the output chain leaves 127.0.0.0/8 alone (DNAT of a loopback source
//! out of the node would need `route_localnet`, which also exposes the node's
//! loopback-bound services to its neighbours).
//!
//! Every call reads the kernel's state first and changes only what differs: an nftables table
//! is replaced (one transaction) only when the digest in its comment differs from what the
//! call renders; rules and routes are compared one by one. Nothing is kept in memory, so a
//! restarted agent adopts what is there. Calls block (they run `nft` and `ip`); async callers
//! use `spawn_blocking`, and calls for the same namespace must not run concurrently.

mod render;
mod routes;
mod sys;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

pub use routes::{NUMBER_BASE, RULE_PRIORITY, route_number};
pub use shoal_ipvs_lb::Protocol;

use render::Ruleset;

/// The nftables table (family `ip`) [`return_routes`] keeps in a task's namespace.
pub const TASK_TABLE: &str = "shoal_mesh";

/// A published port on this node: traffic for any local address of the node namespace at
/// `port`/`protocol` (prerouting, and output for local clients; `fib daddr type local`) is
/// DNATed to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Publish {
    /// The protocol.
    pub protocol: Protocol,
    /// The published port.
    pub port: u16,
    /// Where connections go: the ingress sandbox's address on the gateway bridge and a port.
    pub to: SocketAddrV4,
}

impl fmt::Display for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} -> {}", self.port, self.protocol, self.to)
    }
}

/// A routing-mesh primitive failed. Each variant names the namespace (a path, or `(current)`)
/// and the table, port, interface or address involved.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The namespace could not be opened or entered.
    #[error("cannot enter network namespace {netns}: {source}")]
    Netns {
        /// The namespace.
        netns: String,
        /// Why.
        source: std::io::Error,
    },
    /// `nft` or `ip` could not be started.
    #[error("cannot run {program} in network namespace {netns}: {source}")]
    Spawn {
        /// The namespace.
        netns: String,
        /// `nft` or `ip`.
        program: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// `nft` refused a ruleset or could not list a table.
    #[error("nftables table ip {table} in network namespace {netns}: {action}: {stderr}")]
    Nft {
        /// The namespace.
        netns: String,
        /// The table.
        table: String,
        /// What was being done (`replace`, `delete`, `list`).
        action: &'static str,
        /// What nft printed.
        stderr: String,
    },
    /// `ip` failed to list or change rules and routes.
    #[error("ip in network namespace {netns}: {action}: {stderr}")]
    Ip {
        /// The namespace.
        netns: String,
        /// The command(s) that failed.
        action: String,
        /// What ip printed.
        stderr: String,
    },
    /// `ip -j` printed something this module does not understand.
    #[error("cannot read ip's listing in network namespace {netns}: {detail}")]
    IpListing {
        /// The namespace.
        netns: String,
        /// What was wrong.
        detail: String,
    },
    /// A sysctl could not be read or written.
    #[error("cannot set {key} to {value} in network namespace {netns}: {source}")]
    Sysctl {
        /// The namespace.
        netns: String,
        /// The key under `/proc/sys`, e.g. `net/ipv4/ip_forward`.
        key: String,
        /// The value.
        value: String,
        /// Why.
        source: std::io::Error,
    },
    /// Two published ports with the same protocol and port.
    #[error(
        "nftables table ip {table} in network namespace {netns}: port {port}/{protocol} is published twice (to {first} and {second})"
    )]
    DuplicatePort {
        /// The namespace.
        netns: String,
        /// The table.
        table: String,
        /// The protocol.
        protocol: Protocol,
        /// The port.
        port: u16,
        /// One destination.
        first: SocketAddrV4,
        /// The other.
        second: SocketAddrV4,
    },
    /// A published port or destination port of 0.
    #[error("nftables table ip {table} in network namespace {netns}: cannot publish {publish}: port 0")]
    PortZero {
        /// The namespace.
        netns: String,
        /// The table.
        table: String,
        /// The entry.
        publish: Publish,
    },
    /// A table name this module will not write into a ruleset.
    #[error(
        "invalid nftables table name {name:?} for network namespace {netns}: expected [A-Za-z_][A-Za-z0-9_-]*, at most 64 bytes"
    )]
    TableName {
        /// The namespace.
        netns: String,
        /// The name.
        name: String,
    },
    /// An interface name this module will not write into a ruleset or command.
    #[error("invalid interface name {name:?} in network namespace {netns}: expected 1 to 15 of [A-Za-z0-9_.-]")]
    InterfaceName {
        /// The namespace.
        netns: String,
        /// The name.
        name: String,
    },
    /// A sandbox address that cannot be a next hop.
    #[error("ingress sandbox address {addr} in network namespace {netns} is not a unicast address")]
    SandboxAddress {
        /// The namespace.
        netns: String,
        /// The address.
        addr: Ipv4Addr,
    },
    /// Two sandboxes whose addresses share their low 16 bits, which number marks and tables.
    #[error(
        "ingress sandboxes {first} and {second} in network namespace {netns} would share mark and routing table \
         {number} (the low 16 bits of their addresses): an ingress subnet larger than a /16 is not supported"
    )]
    NumberClash {
        /// The namespace.
        netns: String,
        /// One sandbox.
        first: Ipv4Addr,
        /// The other.
        second: Ipv4Addr,
        /// The number they share.
        number: u32,
    },
}

/// Makes the node namespace (`node_netns`: `None` = the current namespace of the process,
/// `Some(path)` = e.g. `/run/netns/x` or `/proc/PID/ns/net`) publish exactly `ports`, in the
/// nftables table `ip <table>` (replaced atomically in one transaction; existing connections
/// are kept; an empty list deletes the table). Calling it again with the same list changes
/// nothing. Two entries with the same protocol+port are an error.
pub fn publish(node_netns: Option<&Path>, table: &str, ports: &[Publish]) -> Result<(), MeshError> {
    let netns = sys::describe(node_netns);
    if !render::valid_table_name(table) {
        return Err(MeshError::TableName { netns, name: table.to_owned() });
    }
    let mut by_port: BTreeMap<(Protocol, u16), Publish> = BTreeMap::new();
    for &entry in ports {
        if entry.port == 0 || entry.to.port() == 0 {
            return Err(MeshError::PortZero { netns, table: table.to_owned(), publish: entry });
        }
        if let Some(first) = by_port.insert((entry.protocol, entry.port), entry) {
            return Err(MeshError::DuplicatePort {
                netns,
                table: table.to_owned(),
                protocol: entry.protocol,
                port: entry.port,
                first: first.to,
                second: entry.to,
            });
        }
    }
    let sorted: Vec<Publish> = by_port.into_values().collect();
    let wanted = (!sorted.is_empty()).then(|| render::publish_ruleset(table, &sorted));
    sys::in_netns(node_netns, |netns| {
        if sync_table(netns, table, wanted.as_ref())? {
            tracing::info!(netns = %netns, table, ports = sorted.len(), "published ports changed");
        }
        Ok(())
    })
}

/// Turns on IPv4 forwarding in a namespace (the ingress sandbox), and rp_filter loose
/// (`net.ipv4.conf.all.rp_filter = 2`, which makes every interface at least loose).
pub fn enable_forwarding(netns: &Path) -> Result<(), MeshError> {
    sys::in_netns(Some(netns), |name| {
        let forwarding = sys::set_sysctl(name, "net/ipv4/ip_forward", "1")?;
        let loose = sys::set_sysctl(name, "net/ipv4/conf/all/rp_filter", "2")?;
        if forwarding || loose {
            tracing::info!(netns = %name, "ingress sandbox: forwarding on, rp_filter loose");
        }
        Ok(())
    })
}

/// In a task's namespace: replies of connections that came in on `ingress_if` from one of the
/// ingress sandboxes at `sandboxes` (their ingress-network addresses) leave through that same
/// sandbox. Exactly `sandboxes` are kept (rules, tables and map entries of others removed); an
/// empty list removes everything this made (rp_filter stays loose). Idempotent, adopts after a
/// restart.
///
/// nftables table `ip shoal_mesh` ([`TASK_TABLE`]); one rule `pref 10000 fwmark N lookup N` and
/// one table N per sandbox, N = [`route_number`] ([`NUMBER_BASE`] plus the low 16 bits of the
/// sandbox's address). Order: the wanted tables and rules first, then the marks, then what is
/// no longer wanted, so a connection is never marked for a table that is not there.
pub fn return_routes(task_netns: &Path, ingress_if: &str, sandboxes: &[Ipv4Addr]) -> Result<(), MeshError> {
    let netns = sys::describe(Some(task_netns));
    if !render::valid_interface_name(ingress_if) {
        return Err(MeshError::InterfaceName { netns, name: ingress_if.to_owned() });
    }
    if let Some(&addr) =
        sandboxes.iter().find(|a| a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback())
    {
        return Err(MeshError::SandboxAddress { netns, addr });
    }
    let wanted = routes::number(sandboxes).map_err(|(first, second)| MeshError::NumberClash {
        netns: netns.clone(),
        first,
        second,
        number: route_number(first),
    })?;
    let ruleset = (!wanted.is_empty()).then(|| render::return_ruleset(TASK_TABLE, ingress_if, &wanted));
    sys::in_netns(Some(task_netns), |netns| {
        let observed = observe_routes(netns)?;
        let plan = routes::plan(&wanted, ingress_if, &observed);
        ip_batch(netns, &plan.before)?;
        let loose =
            !wanted.is_empty() && sys::set_sysctl(netns, &format!("net/ipv4/conf/{ingress_if}/rp_filter"), "2")?;
        let marks = sync_table(netns, TASK_TABLE, ruleset.as_ref())?;
        ip_batch(netns, &plan.after)?;
        if loose || marks || !plan.is_empty() {
            tracing::info!(
                netns = %netns,
                ingress_if,
                sandboxes = wanted.len(),
                changes = plan.before.len() + plan.after.len(),
                marks_changed = marks,
                "mesh return routes changed"
            );
        }
        Ok(())
    })
}

/// The MAC crates/overlay gives an endpoint with this IPv4 address (`02:42:a.b.c.d`).
pub fn endpoint_mac(addr: Ipv4Addr) -> [u8; 6] {
    shoal_overlay::MacAddr::from_ipv4(addr).0
}

/// Makes table `ip <table>` in the calling thread's namespace `wanted` (absent for `None`),
/// unless its digest comment says it already is. Returns whether it changed anything.
fn sync_table(netns: &str, table: &str, wanted: Option<&Ruleset>) -> Result<bool, MeshError> {
    let nft_error =
        |action, stderr| MeshError::Nft { netns: netns.to_owned(), table: table.to_owned(), action, stderr };
    let listed = sys::run(netns, "nft", &["list", "table", "ip", table], None)?;
    let current = if listed.status.success() {
        Some(String::from_utf8_lossy(&listed.stdout).into_owned())
    } else {
        let stderr = sys::stderr_of(&listed);
        if !stderr.contains("No such file or directory") {
            return Err(nft_error("list", stderr));
        }
        None
    };
    let current_comment = current.as_deref().and_then(render::comment_of);
    let (script, action) = match wanted {
        Some(ruleset) if current_comment == Some(ruleset.comment.as_str()) => return Ok(false),
        Some(ruleset) => (ruleset.replace_script(table), "replace"),
        None if current.is_none() => return Ok(false),
        None => (render::delete_script(table), "delete"),
    };
    let applied = sys::run(netns, "nft", &["-f", "-"], Some(&script))?;
    if !applied.status.success() {
        return Err(nft_error(action, sys::stderr_of(&applied)));
    }
    Ok(true)
}

/// The mesh's rules and routes in the calling thread's namespace.
fn observe_routes(netns: &str) -> Result<routes::Observed, MeshError> {
    let list = |args: &[&str]| -> Result<String, MeshError> {
        let output = sys::run(netns, "ip", args, None)?;
        if !output.status.success() {
            return Err(MeshError::Ip {
                netns: netns.to_owned(),
                action: format!("ip {}", args.join(" ")),
                stderr: sys::stderr_of(&output),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let rules = list(&["-j", "-4", "rule", "show"])?;
    let routes = list(&["-j", "-4", "route", "show", "table", "all"])?;
    routes::parse_observed(&rules, &routes).map_err(|detail| MeshError::IpListing { netns: netns.to_owned(), detail })
}

/// Applies `ops` with one `ip -batch` process (it stops at the first failure, which it names).
fn ip_batch(netns: &str, ops: &[routes::Op]) -> Result<(), MeshError> {
    if ops.is_empty() {
        return Ok(());
    }
    let input = routes::batch(ops);
    let output = sys::run(netns, "ip", &["-4", "-batch", "-"], Some(&input))?;
    if !output.status.success() {
        return Err(MeshError::Ip {
            netns: netns.to_owned(),
            action: input.trim_end().replace('\n', "; "),
            stderr: sys::stderr_of(&output),
        });
    }
    Ok(())
}

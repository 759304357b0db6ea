//! The routing mesh's nftables rulesets as `nft -f` text, and the names they contain checked (pure).
//!
//! Each table carries a comment with a digest of its own text (`shoal-mesh <fnv1a64>`): reading
//! the comment back tells whether the kernel already has exactly this ruleset, so a call with
//! nothing to change runs one `nft list` and no transaction.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use shoal_overlay::MacAddr;

use super::Publish;

/// What every digest comment of this module starts with.
pub(crate) const COMMENT_PREFIX: &str = "shoal-mesh ";

/// A table to install: its text (with the digest comment) and the comment alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ruleset {
    /// The comment the table carries, `shoal-mesh <16 hex digits>`.
    pub(crate) comment: String,
    /// The `table ip NAME { … }` block.
    pub(crate) block: String,
}

impl Ruleset {
    /// Builds the block from its body lines (indented by one tab) with the digest comment first.
    fn new(table: &str, body: &str) -> Self {
        let comment = format!("{COMMENT_PREFIX}{:016x}", fnv1a64(&format!("{table}\n{body}")));
        let block = format!("table ip {table} {{\n\tcomment \"{comment}\"\n{body}}}\n");
        Self { comment, block }
    }

    /// The script that replaces table `table` with this block in one transaction (declaring
    /// the table first makes the deletion succeed when it does not exist yet).
    pub(crate) fn replace_script(&self, table: &str) -> String {
        format!("table ip {table}\ndelete table ip {table}\n{}", self.block)
    }
}

/// The script that deletes table `table`, whether it exists or not.
pub(crate) fn delete_script(table: &str) -> String {
    format!("table ip {table}\ndelete table ip {table}\n")
}

/// The published ports of a node: a map from protocol and port to the ingress sandbox's
/// address and port, used by a DNAT in prerouting (clients elsewhere) and output (clients in
/// the node namespace; loopback destinations excluded, see the module docs of `mesh`).
/// `ports` must be sorted and free of duplicate protocol+port (see [`super::publish`]).
pub(crate) fn publish_ruleset(table: &str, ports: &[Publish]) -> Ruleset {
    let mut body = String::new();
    body.push_str("\tmap ports {\n\t\ttype inet_proto . inet_service : ipv4_addr . inet_service\n");
    let elements: Vec<String> =
        ports.iter().map(|p| format!("{} . {} : {} . {}", p.protocol.name(), p.port, p.to.ip(), p.to.port())).collect();
    push_elements(&mut body, &elements);
    body.push_str("\t}\n");
    let dnat = "fib daddr type local dnat ip to meta l4proto . th dport map @ports";
    let _ = write!(
        body,
        "\tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\t{dnat}\n\t}}\n"
    );
    let _ = write!(
        body,
        "\tchain output {{\n\t\ttype nat hook output priority -100; policy accept;\n\t\tip daddr != 127.0.0.0/8 {dnat}\n\t}}\n"
    );
    Ruleset::new(table, &body)
}

/// How long a UDP flow through the mesh keeps its reply source after the client's last
/// datagram: conntrack's `nf_conntrack_udp_timeout_stream` default, after which the flow's
/// conntrack entry (and its mark) is gone anyway.
pub(crate) const UDP_FLOW_TIMEOUT: &str = "2m";

/// The task side: a connection arriving new on `ingress_if` from a sandbox's MAC gets the
/// sandbox's number as its conntrack mark; packets of marked connections leaving the task get
/// it as their packet mark in a `type route` chain, so the kernel looks their route up again
/// (and the `fwmark` rule sends them to the sandbox's table). `sandboxes` pairs each sandbox's
/// ingress address with its number ([`super::route_number`]), sorted.
///
/// UDP needs one more step: a server on an unconnected socket bound to 0.0.0.0 (most of them)
/// answers from the source address of the task's default route (its egress address), chosen
/// before any mark exists, so the reply does not match the connection and gets no mark. Each
/// datagram of a marked flow records `client . client port . task port : task address` in
/// `udp_flows`, and `output_source`, before conntrack (priority raw), gives a UDP packet to a
/// recorded client that address as its source.
pub(crate) fn return_ruleset(table: &str, ingress_if: &str, sandboxes: &[(Ipv4Addr, u32)]) -> Ruleset {
    let (mask, base) = (super::routes::NUMBER_MASK, super::routes::NUMBER_BASE);
    let mut body = String::new();
    body.push_str("\tmap sandboxes {\n\t\ttype ether_addr : mark\n");
    let elements: Vec<String> =
        sandboxes.iter().map(|(addr, number)| format!("{} : {number:#010x}", MacAddr::from_ipv4(*addr))).collect();
    push_elements(&mut body, &elements);
    body.push_str("\t}\n");
    let _ = write!(
        body,
        "\tmap udp_flows {{\n\t\ttype ipv4_addr . inet_service . inet_service : ipv4_addr\n\
         \t\tflags dynamic,timeout\n\t\ttimeout {UDP_FLOW_TIMEOUT}\n\t}}\n"
    );
    let _ = write!(
        body,
        "\tchain prerouting {{\n\t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tiifname \"{ingress_if}\" ct state new ct mark set ether saddr map @sandboxes\n\
         \t\tct mark & {mask:#010x} == {base:#010x} meta l4proto udp \
         update @udp_flows {{ ip saddr . udp sport . udp dport : ip daddr }}\n\t}}\n"
    );
    let _ = write!(
        body,
        "\tchain output_source {{\n\t\ttype route hook output priority raw; policy accept;\n\
         \t\tmeta l4proto udp ip saddr set ip daddr . udp dport . udp sport map @udp_flows\n\t}}\n"
    );
    let _ = write!(
        body,
        "\tchain output {{\n\t\ttype route hook output priority mangle; policy accept;\n\
         \t\tct mark & {mask:#010x} == {base:#010x} meta mark set ct mark\n\t}}\n"
    );
    Ruleset::new(table, &body)
}

/// `elements = { a, b }` (omitted when there are none: nft refuses an empty list).
fn push_elements(body: &mut String, elements: &[String]) {
    if !elements.is_empty() {
        let _ = writeln!(body, "\t\telements = {{ {} }}", elements.join(", "));
    }
}

/// The digest comment of a table as `nft list table` prints it, if it has one of ours.
pub(crate) fn comment_of(listing: &str) -> Option<&str> {
    // The table's own comment is the first line after `table ip NAME {`; comments of its
    // objects are indented deeper.
    let line = listing.lines().nth(1)?;
    let quoted = line.strip_prefix("\tcomment \"")?.strip_suffix('"')?;
    quoted.starts_with(COMMENT_PREFIX).then_some(quoted)
}

/// Whether `name` can be an nftables table name written into a ruleset unquoted:
/// `[A-Za-z_][A-Za-z0-9_-]*`, at most 64 bytes.
pub(crate) fn valid_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Whether `name` is a Linux interface name this module writes into rulesets, `ip` commands
/// and sysctl paths: 1 to 15 bytes of `[A-Za-z0-9_.-]`, not `.` or `..`.
pub(crate) fn valid_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// FNV-1a, 64 bits: stable across builds and Rust versions (unlike `DefaultHasher`), and a
/// digest of our own text needs no resistance to collisions made on purpose.
pub(crate) fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

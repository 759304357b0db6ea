//! The desired state a caller hands in: networks on this node, local containers with their
//! endpoints, remote endpoints on other nodes, and the node's gateway bridge.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

/// Default MTU of an overlay network: a 1500-byte underlay less 50 bytes of VXLAN headers.
pub const DEFAULT_MTU: u32 = 1450;
/// The IANA VXLAN port.
pub const DEFAULT_VXLAN_PORT: u16 = 4789;

/// An address with a prefix length, such as `198.18.0.0/24` or `fd00::1/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The address (a network address for subnets, a host address for interface addresses).
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix_len: u8,
}

/// A string that is not `ADDRESS/PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cidr {input:?}: expected ADDRESS/PREFIX with a prefix of at most 32 (IPv4) or 128 (IPv6)")]
pub struct CidrParseError {
    /// The rejected input.
    pub input: String,
}

impl Cidr {
    /// `addr/prefix_len`; `None` when the prefix is longer than the address.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(Self { addr, prefix_len })
    }

    /// The same prefix with `addr` as its address.
    pub fn with_addr(self, addr: IpAddr) -> Self {
        Self { addr, prefix_len: self.prefix_len }
    }

    /// Whether `ip` lies inside this prefix (same family, same leading bits).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix_len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix_len)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = CidrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrParseError { input: s.to_owned() };
        let (addr, len) = s.split_once('/').ok_or_else(err)?;
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let len: u8 = len.parse().map_err(|_| err())?;
        Self::new(addr, len).ok_or_else(err)
    }
}

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Docker's deterministic MAC for an IPv4 address: `02:42` followed by the four address bytes.
    pub fn from_ipv4(ip: Ipv4Addr) -> Self {
        let [a, b, c, d] = ip.octets();
        Self([0x02, 0x42, a, b, c, d])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// One subnet of a network with its gateway (the bridge's address in the sandbox).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// The subnet, e.g. `198.18.0.0/24`.
    pub cidr: Cidr,
    /// The gateway address inside it, e.g. `198.18.0.1`.
    pub gateway: IpAddr,
}

/// An overlay network as this node needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// The network ID. It names the sandbox namespace, so keep it short (`[A-Za-z0-9_-]`).
    pub id: String,
    /// The VXLAN network identifier (1..=16777215).
    pub vni: u32,
    /// Subnets: one IPv4 and optionally one IPv6 (dual stack).
    pub subnets: Vec<Subnet>,
    /// MTU of the bridge, the VXLAN device and every endpoint.
    pub mtu: u32,
    /// UDP port of the VXLAN device.
    pub vxlan_port: u16,
    /// An internal network gives its containers no egress through the gateway bridge.
    pub internal: bool,
    /// Its VXLAN datagrams leave the node only as ESP (see [`crate::esp`]); give it
    /// [`ENCRYPTED_MTU`](crate::esp::ENCRYPTED_MTU) unless the underlay's MTU is larger.
    pub encrypted: bool,
}

impl NetworkSpec {
    /// A network with one IPv4 subnet, MTU [`DEFAULT_MTU`] and port [`DEFAULT_VXLAN_PORT`].
    pub fn new(id: impl Into<String>, vni: u32, subnet: Cidr, gateway: IpAddr) -> Self {
        Self {
            id: id.into(),
            vni,
            subnets: vec![Subnet { cidr: subnet, gateway }],
            mtu: DEFAULT_MTU,
            vxlan_port: DEFAULT_VXLAN_PORT,
            internal: false,
            encrypted: false,
        }
    }

    /// Adds a second (usually IPv6) subnet.
    #[must_use]
    pub fn with_subnet(mut self, subnet: Cidr, gateway: IpAddr) -> Self {
        self.subnets.push(Subnet { cidr: subnet, gateway });
        self
    }

    /// Marks the network internal (no egress).
    #[must_use]
    pub fn internal(mut self) -> Self {
        self.internal = true;
        self
    }

    /// Marks the network encrypted, with [`ENCRYPTED_MTU`](crate::esp::ENCRYPTED_MTU).
    #[must_use]
    pub fn encrypted(mut self) -> Self {
        self.encrypted = true;
        self.mtu = crate::esp::ENCRYPTED_MTU;
        self
    }

    /// The subnet that contains `ip`.
    pub fn subnet_of(&self, ip: IpAddr) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.cidr.contains(ip))
    }
}

/// A container's attachment to one network: a veth whose container end is `ifname`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// The network ID.
    pub network: String,
    /// Interface name inside the container (`eth0`, `eth1`, …).
    pub ifname: String,
    /// Addresses (each inside one of the network's subnets).
    pub addresses: Vec<IpAddr>,
    /// MAC of the container end.
    pub mac: MacAddr,
}

impl LocalEndpoint {
    /// An endpoint with one IPv4 address and the deterministic MAC for it.
    pub fn new(network: impl Into<String>, ifname: impl Into<String>, address: Ipv4Addr) -> Self {
        Self {
            network: network.into(),
            ifname: ifname.into(),
            addresses: vec![IpAddr::V4(address)],
            mac: MacAddr::from_ipv4(address),
        }
    }

    /// Adds an IPv6 address.
    #[must_use]
    pub fn with_ipv6(mut self, address: Ipv6Addr) -> Self {
        self.addresses.push(IpAddr::V6(address));
        self
    }
}

/// A container's link to the node's gateway bridge, for egress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    /// Interface name inside the container (Docker puts it after the overlay ones).
    pub ifname: String,
    /// The container's address on the gateway bridge's subnet.
    pub address: Ipv4Addr,
}

/// A local container: its network namespace and its endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Container (task) ID; names the sandbox end of its veths, so it must be stable.
    pub id: String,
    /// Path of the container's network namespace, e.g. `/proc/PID/ns/net` or `/run/netns/NAME`.
    pub netns: PathBuf,
    /// One endpoint per attached network.
    pub endpoints: Vec<LocalEndpoint>,
    /// Egress through the gateway bridge; made when it is on no network or one of its networks
    /// is not internal.
    pub egress: Option<Egress>,
}

/// An endpoint on another node, programmed as FDB and neighbour entries in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemoteEndpoint {
    /// The network ID.
    pub network: String,
    /// Addresses of the endpoint.
    pub addresses: Vec<IpAddr>,
    /// Its MAC.
    pub mac: MacAddr,
    /// Underlay address of the node that hosts it (VXLAN destination).
    pub node: IpAddr,
}

impl RemoteEndpoint {
    /// A remote endpoint with one IPv4 address and the deterministic MAC for it.
    pub fn new(network: impl Into<String>, address: Ipv4Addr, node: IpAddr) -> Self {
        Self { network: network.into(), addresses: vec![IpAddr::V4(address)], mac: MacAddr::from_ipv4(address), node }
    }
}

/// The node's gateway bridge (Swarm's `docker_gwbridge`): egress with masquerade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayBridge {
    /// The bridge's subnet; traffic from it leaving by another interface is masqueraded.
    pub subnet: Cidr,
    /// The bridge's address, the containers' default gateway.
    pub address: Ipv4Addr,
    /// MTU of the bridge and the containers' egress links.
    pub mtu: u32,
}

/// Everything this node should have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Networks with a sandbox on this node.
    pub networks: Vec<NetworkSpec>,
    /// Local containers and their endpoints.
    pub containers: Vec<ContainerSpec>,
    /// Endpoints on other nodes.
    pub remotes: Vec<RemoteEndpoint>,
    /// The gateway bridge; `None` removes it.
    pub gateway: Option<GatewayBridge>,
    /// The node's address and the cluster's keys, for encrypted networks. Without it (or with
    /// an empty ring) an encrypted network's datagrams are blocked, never sent in the clear.
    pub encryption: Option<crate::esp::Encryption>,
}

/// Names of what this library creates. Sandbox namespaces are `{netns_prefix}{network id}`;
/// links it creates in the node namespace start with [`LINK_PREFIX`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    /// Prefix of sandbox namespace names under `/run/netns`.
    pub netns_prefix: String,
    /// nftables table (family `ip`) that holds the masquerade rule.
    pub nft_table: String,
    /// nftables table (family `ip`) that marks encrypted networks' VXLAN datagrams for ESP.
    pub esp_table: String,
}

impl Default for Naming {
    fn default() -> Self {
        Self {
            netns_prefix: "shoal-ov-".to_owned(),
            nft_table: "shoal_overlay".to_owned(),
            esp_table: "shoal_esp".to_owned(),
        }
    }
}

/// Prefix of every link this library names.
pub const LINK_PREFIX: &str = "shl-";
/// The bridge inside each sandbox.
pub const SANDBOX_BRIDGE: &str = "shl-br";
/// The gateway bridge in the node namespace.
pub const GATEWAY_BRIDGE: &str = "shl-gwbr";

impl Naming {
    /// The sandbox namespace of `network`.
    pub fn sandbox(&self, network: &str) -> String {
        format!("{}{network}", self.netns_prefix)
    }
}

/// The VXLAN device of a network (made in the node namespace, then moved into the sandbox).
pub(crate) fn vxlan_name(vni: u32) -> String {
    format!("{LINK_PREFIX}vx{vni}")
}

/// The sandbox end of a container's veth on a network.
pub(crate) fn endpoint_port(container: &str) -> String {
    format!("{LINK_PREFIX}ve{:08x}", fnv1a(container))
}

/// The node end of a container's egress veth.
pub(crate) fn egress_port(container: &str) -> String {
    format!("{LINK_PREFIX}eg{:08x}", fnv1a(container))
}

/// FNV-1a: stable across builds and Rust versions, unlike `DefaultHasher`.
fn fnv1a(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_contains() {
        let net: Cidr = "198.18.0.0/24".parse().expect("parse");
        assert!(net.contains("198.18.0.77".parse().expect("ip")));
        assert!(!net.contains("198.18.1.1".parse().expect("ip")));
        assert!(!net.contains("fd00::1".parse().expect("ip")));
        let v6: Cidr = "fd00:1::/64".parse().expect("parse");
        assert!(v6.contains("fd00:1::5".parse().expect("ip")));
        assert!("198.18.0.0/33".parse::<Cidr>().is_err());
        assert!("198.18.0.0".parse::<Cidr>().is_err());
        let zero: Cidr = "0.0.0.0/0".parse().expect("parse");
        assert!(zero.contains("203.0.113.9".parse().expect("ip")));
        assert_eq!(net.to_string(), "198.18.0.0/24");
    }

    #[test]
    fn mac_is_docker_style() {
        let mac = MacAddr::from_ipv4(Ipv4Addr::new(198, 18, 0, 2));
        assert_eq!(mac.to_string(), "02:42:c6:12:00:02");
    }

    #[test]
    fn names_fit_in_ifnamsiz() {
        assert!(endpoint_port("a-very-long-container-identifier-0123456789").len() <= 15);
        assert!(egress_port("x").len() <= 15);
        assert!(vxlan_name(16_777_215).len() <= 15);
        assert_eq!(endpoint_port("c1"), endpoint_port("c1"));
        assert_ne!(endpoint_port("c1"), endpoint_port("c2"));
    }
}

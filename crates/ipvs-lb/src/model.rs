//! The data both dataplanes share: services, their keys and their backends, and validation.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::ApplyError;

/// The largest backend weight accepted (IPVS takes an `int`; nftables keeps one map element per
/// unit of weight, so weights this large cost as many elements).
pub const MAX_WEIGHT: u32 = 65_535;

/// A transport protocol a virtual service listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }

    /// The protocol with this IP protocol number, if it is one of the three.
    pub fn from_number(number: u8) -> Option<Self> {
        match number {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            132 => Some(Self::Sctp),
            _ => None,
        }
    }

    /// The name nftables uses (`tcp`, `udp`, `sctp`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        [Self::Tcp, Self::Udp, Self::Sctp].into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What identifies a virtual service: the address clients connect to (a VIP or a node address),
/// the port and the protocol. Displayed as `198.18.0.10:80/tcp`.
///
/// Port 0 is an *any-port* service ([`ServiceKey::any_port`], displayed `198.18.0.10:*/tcp`):
/// every port of that protocol at that address, as a Swarm service VIP balances. Its backends
/// have port 0 too: a connection keeps the destination port the client used. A service of a
/// specific port at the same address and protocol may sit beside it and takes that port's
/// connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The virtual address.
    pub addr: Ipv4Addr,
    /// The port; 0 for every port (an any-port service).
    pub port: u16,
    /// The protocol.
    pub protocol: Protocol,
}

impl ServiceKey {
    /// A TCP service key.
    pub fn tcp(addr: Ipv4Addr, port: u16) -> Self {
        Self { addr, port, protocol: Protocol::Tcp }
    }

    /// A UDP service key.
    pub fn udp(addr: Ipv4Addr, port: u16) -> Self {
        Self { addr, port, protocol: Protocol::Udp }
    }

    /// Every port of `protocol` at `addr` (port 0): what a Swarm service VIP balances. Its
    /// backends have port 0 ([`Backend::any_port`]): connections keep the client's destination
    /// port. A specific-port service at the same address and protocol takes precedence for its
    /// port.
    pub fn any_port(addr: Ipv4Addr, protocol: Protocol) -> Self {
        Self { addr, port: 0, protocol }
    }

    /// Whether this is an any-port service (port 0).
    pub fn is_any_port(&self) -> bool {
        self.port == 0
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any_port() {
            write!(f, "{}:*/{}", self.addr, self.protocol)
        } else {
            write!(f, "{}:{}/{}", self.addr, self.port, self.protocol)
        }
    }
}

/// One backend of a service. Weight 0 means drained: no new connections, existing ones kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Backend {
    /// The backend's address (a task IP).
    pub addr: Ipv4Addr,
    /// The backend's port; 0 (only in an any-port service) keeps the client's destination port.
    pub port: u16,
    /// Relative share of new connections, `0..=MAX_WEIGHT`.
    pub weight: u32,
}

impl Backend {
    /// A backend of weight 1.
    pub fn new(addr: Ipv4Addr, port: u16) -> Self {
        Self { addr, port, weight: 1 }
    }

    /// A backend of an any-port service, weight 1: port 0, the client's destination port kept.
    pub fn any_port(addr: Ipv4Addr) -> Self {
        Self { addr, port: 0, weight: 1 }
    }

    /// The backend's address and port.
    pub fn socket_addr(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.addr, self.port)
    }
}

/// A virtual service and its backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// What clients connect to.
    pub key: ServiceKey,
    /// Where connections go. Order does not matter; [`LoadBalancer::list`](crate::LoadBalancer::list)
    /// returns them sorted.
    pub backends: Vec<Backend>,
    /// Masquerade connections to the backends (the routing mesh's source NAT); without it the
    /// backend sees the client's own address and must route replies back through this namespace.
    pub source_nat: bool,
}

impl Service {
    /// A service without source NAT.
    pub fn new(key: ServiceKey, backends: Vec<Backend>) -> Self {
        Self { key, backends, source_nat: false }
    }

    /// The same service with backends sorted by address and port, as `list` returns it.
    pub(crate) fn normalized(&self) -> Self {
        let mut copy = self.clone();
        copy.backends.sort_by_key(|b| (b.addr, b.port));
        copy
    }

    /// Checks ports (port 0 backends exactly in an any-port service), weights and duplicate
    /// backends.
    pub(crate) fn validate(&self) -> Result<(), ApplyError> {
        let invalid = |reason: String| ApplyError::Invalid { service: self.key, reason };
        let mut seen = std::collections::BTreeSet::new();
        for backend in &self.backends {
            if self.key.is_any_port() && backend.port != 0 {
                return Err(invalid(format!(
                    "backend {} has a port, but an any-port service's backends have port 0 \
                     (the client's destination port is kept)",
                    backend.socket_addr()
                )));
            }
            if !self.key.is_any_port() && backend.port == 0 {
                return Err(invalid(format!(
                    "backend {} has port 0, which only an any-port service's backends have",
                    backend.socket_addr()
                )));
            }
            if backend.weight > MAX_WEIGHT {
                return Err(invalid(format!(
                    "backend {} has weight {} (at most {MAX_WEIGHT})",
                    backend.socket_addr(),
                    backend.weight
                )));
            }
            if !seen.insert(backend.socket_addr()) {
                return Err(invalid(format!("backend {} is listed twice", backend.socket_addr())));
            }
        }
        Ok(())
    }
}

/// Which dataplane a [`LoadBalancer`](crate::LoadBalancer) drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// nftables: nf_tables netlink for changes, `nft` to create and list the table.
    Nftables,
    /// IPVS through generic netlink.
    Ipvs,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nftables => "nftables",
            Self::Ipvs => "ipvs",
        })
    }
}

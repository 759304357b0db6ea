//! The network allocator, pure: given what the store holds (networks, services, tasks, nodes),
//! it hands out overlay subnets from the cluster's default address pools, VNIs from 4096 up, a
//! VIP per service per network (endpoint mode vip), routing-mesh published ports (explicit, or
//! the lowest free one in 30000–32767), one address per task per network and one per node on the
//! ingress network (its ingress sandbox).
//!
//! Nothing here is remembered between passes: what is in use is read from the objects each time
//! ([`Allocator::new`]), so a new leader allocates exactly as the old one would have, and an
//! address is free again as soon as the task holding it has ended or its service, network or
//! node is gone. The leader writes allocations with a fence (see `Leader`), so two leaders
//! can never hand out the same address. The only state kept across passes is a cursor per
//! network ([`Cursors`]): addresses are handed out in turn, not lowest-first, so that a freed
//! address is not reused at once while DNS caches and ARP entries of other nodes may still name
//! its previous holder (as Swarm's serial allocation).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use shoal_api::v1::{self, TaskState};

#[cfg(test)]
mod tests;

/// The first VNI handed out (Swarm's).
pub(crate) const FIRST_VNI: u32 = 4096;
/// The largest VNI (24 bits).
pub(crate) const LAST_VNI: u32 = (1 << 24) - 1;
/// The routing mesh's range for published ports chosen by the cluster.
pub(crate) const DYNAMIC_PORTS: std::ops::RangeInclusive<u32> = 30000..=32767;
/// An overlay's MTU unless `--opt mtu=` says otherwise (VXLAN's 50 bytes under 1500).
pub(crate) const DEFAULT_MTU: u32 = 1450;
/// Swarm's default address pool and subnet size.
pub(crate) const DEFAULT_POOL: &str = "10.0.0.0/8";
/// Swarm's default subnet size (`--default-addr-pool-mask-length`).
pub(crate) const DEFAULT_SUBNET_SIZE: u8 = 24;

/// An IPv4 prefix: its network address and length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Cidr {
    network: u32,
    len: u8,
}

/// Why a CIDR or address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CidrError {
    /// Not `A.B.C.D/N` with N in 0..=32.
    #[error("{0:?} is not an IPv4 prefix such as 10.0.1.0/24")]
    Syntax(String),
    /// Host bits are set: the prefix is ambiguous.
    #[error("{given:?} has host bits set; did you mean {suggested}?")]
    HostBits {
        /// As given.
        given: String,
        /// The prefix with host bits cleared.
        suggested: Cidr,
    },
}

impl Cidr {
    /// The prefix `addr/len`; `None` if `len` > 32 or host bits are set.
    pub(crate) fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        if len > 32 {
            return None;
        }
        let network = u32::from(addr);
        (network & Self::mask_of(len) == network).then_some(Self { network, len })
    }

    fn mask_of(len: u8) -> u32 {
        if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) }
    }

    /// The network address.
    pub(crate) fn addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network)
    }

    /// The prefix length.
    pub(crate) fn prefix_len(&self) -> u8 {
        self.len
    }

    fn last(&self) -> u32 {
        self.network | !Self::mask_of(self.len)
    }

    /// Whether `ip` is inside.
    pub(crate) fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask_of(self.len) == self.network
    }

    /// Whether `other` lies wholly inside.
    pub(crate) fn covers(&self, other: &Cidr) -> bool {
        other.len >= self.len && self.contains(other.addr())
    }

    /// Whether the two share any address.
    pub(crate) fn overlaps(&self, other: &Cidr) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// `ip` in CIDR notation with this prefix's length (`10.0.1.5/24`).
    pub(crate) fn with_host(&self, ip: Ipv4Addr) -> String {
        format!("{ip}/{}", self.len)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr(), self.len)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || CidrError::Syntax(s.to_owned());
        let (addr, len) = s.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        let len: u8 = len.parse().ok().filter(|l| *l <= 32).ok_or_else(syntax)?;
        Cidr::new(addr, len).ok_or_else(|| CidrError::HostBits {
            given: s.to_owned(),
            suggested: Cidr { network: u32::from(addr) & Cidr::mask_of(len), len },
        })
    }
}

/// The address part of `10.0.1.5/24` (or of a bare address).
pub(crate) fn host_of(cidr: &str) -> Option<Ipv4Addr> {
    cidr.split('/').next()?.parse().ok()
}

/// Why something could not be allocated. Shown to users in `service ps`, `service inspect` and
/// `network inspect`, so each says what ran out and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AllocError {
    /// Every subnet of the default pools overlaps a network.
    #[error(
        "no free subnet of size /{size} is left in the default address pools ({pools}); remove unused networks (shoal network prune) or give --subnet"
    )]
    PoolExhausted {
        /// The pools, comma-separated.
        pools: String,
        /// The subnet size asked for.
        size: u8,
    },
    /// A requested subnet overlaps another network's.
    #[error("subnet {subnet} overlaps network {other}'s subnet {other_subnet}; choose another --subnet")]
    Overlap {
        /// The subnet asked for.
        subnet: String,
        /// The network holding the overlapping one.
        other: String,
        /// Its subnet.
        other_subnet: String,
    },
    /// The spec's IPAM settings do not hold together.
    #[error("{0}")]
    BadIpam(String),
    /// Every VNI is in use.
    #[error("no VXLAN network identifier is left (4096–16777215 are all in use)")]
    VnisExhausted,
    /// The network's range has no free address.
    #[error(
        "network {network} has no free address left in {range}; remove tasks or services from it, or create a larger network"
    )]
    AddressesExhausted {
        /// The network's name.
        network: String,
        /// The range addresses come from.
        range: String,
    },
    /// The network is not allocated yet (or could not be).
    #[error("network {0} has no subnet yet: {1}")]
    NetworkNotReady(String, String),
    /// The network is gone.
    #[error("network {0} does not exist; update the service's --network")]
    NoSuchNetwork(String),
    /// A published port is held by another service.
    #[error("port {port}/{protocol} is already published by service {holder}; choose another --publish port")]
    PortInUse {
        /// The port.
        port: u32,
        /// tcp, udp or sctp.
        protocol: &'static str,
        /// The service holding it.
        holder: String,
    },
    /// Every port of the dynamic range is published.
    #[error("every port of 30000-32767/{0} is published; give an explicit --publish port")]
    PortsExhausted(&'static str),
    /// The service publishes ports but there is no ingress network.
    #[error(
        "the service publishes ports through the routing mesh but no ingress network exists; create one with shoal network create --ingress"
    )]
    NoIngress,
}

/// The protocol's name as docker prints it.
pub(crate) fn protocol_name(protocol: i32) -> &'static str {
    match v1::port_config::Protocol::try_from(protocol) {
        Ok(v1::port_config::Protocol::Udp) => "udp",
        Ok(v1::port_config::Protocol::Sctp) => "sctp",
        _ => "tcp",
    }
}

/// Where a network's addresses come from and which it never hands out.
#[derive(Debug, Clone)]
struct Range {
    name: String,
    subnet: Cidr,
    range: Cidr,
    gateway: Ipv4Addr,
}

impl Range {
    fn of(network: &v1::Network) -> Result<Self, String> {
        let allocation = network.allocation.as_ref().ok_or_else(|| "not allocated yet".to_owned())?;
        let subnet: Cidr = allocation.subnet.parse().map_err(|e: CidrError| e.to_string())?;
        let range = if allocation.ip_range.is_empty() {
            subnet
        } else {
            allocation.ip_range.parse().map_err(|e: CidrError| e.to_string())?
        };
        let gateway: Ipv4Addr =
            allocation.gateway.parse().map_err(|_| format!("bad gateway {:?}", allocation.gateway))?;
        Ok(Self { name: network_name(network).to_owned(), subnet, range, gateway })
    }

    /// Whether `ip` may be handed out: in the range, not the subnet's network or broadcast
    /// address, not the gateway.
    fn usable(&self, ip: u32) -> bool {
        let (first, last) = (self.subnet.network, self.subnet.last());
        let edge = self.subnet.len < 31 && (ip == first || ip == last);
        self.range.contains(Ipv4Addr::from(ip)) && !edge && ip != u32::from(self.gateway)
    }
}

/// The network's name, or its ID when it has none.
pub(crate) fn network_name(network: &v1::Network) -> &str {
    network.spec.as_ref().and_then(|s| s.annotations.as_ref()).map_or(network.id.as_str(), |a| a.name.as_str())
}

/// Whether a network is the routing mesh's.
pub(crate) fn is_ingress(network: &v1::Network) -> bool {
    network.spec.as_ref().is_some_and(|s| s.ingress)
}

/// Whether a network's VXLAN traffic is encrypted (`--opt encrypted`).
pub(crate) fn is_encrypted(network: &v1::Network) -> bool {
    network.spec.as_ref().is_some_and(|s| s.options.contains_key(ENCRYPTED))
}

/// The option of encrypted networks (Docker's name).
pub(crate) const ENCRYPTED: &str = "encrypted";

/// The MTU of an encrypted network without an `mtu` option: [`DEFAULT_MTU`] less the 34 bytes
/// ESP adds (SPI, sequence number, IV, trailer and a 16-byte ICV), so that a full-sized frame's
/// ESP packet still fits a 1500-byte underlay.
pub(crate) const ENCRYPTED_MTU: u32 = DEFAULT_MTU - 34;

/// Whether a task still holds its addresses: until it has ended (a task on a Down node that may
/// still run keeps them), unless it was never scheduled and is told to stop (it never will run).
pub fn holds_addresses(task: &v1::Task) -> bool {
    let never_runs = task.node_id.is_empty() && task.desired() as i32 > TaskState::Running as i32;
    !task.observed_state().is_terminal() && !never_runs
}

/// The last address handed out per network, so that the next one comes after it.
pub(crate) type Cursors = HashMap<String, u32>;

/// What is in use, read from the objects, and the allocations made since.
#[derive(Debug)]
pub(crate) struct Allocator<'c> {
    pools: Vec<Cidr>,
    subnet_size: u8,
    networks: HashMap<String, v1::Network>,
    subnets: Vec<(Cidr, String)>,
    vnis: BTreeSet<u32>,
    /// Per network: the addresses in use.
    used: HashMap<String, HashSet<u32>>,
    /// (protocol, port) → the service holding it (ID, name).
    ports: BTreeMap<(i32, u32), (String, String)>,
    cursors: &'c mut Cursors,
}

impl<'c> Allocator<'c> {
    /// The allocator for a store holding these objects. `pools` and `subnet_size` come from the
    /// cluster object (empty: Swarm's defaults).
    pub(crate) fn new(
        pools: &[String],
        subnet_size: u32,
        networks: &[v1::Network],
        services: &[v1::Service],
        tasks: &[v1::Task],
        nodes: &[v1::Node],
        cursors: &'c mut Cursors,
    ) -> Self {
        let mut pools: Vec<Cidr> = pools.iter().filter_map(|p| p.parse().ok()).collect();
        if pools.is_empty() {
            pools = DEFAULT_POOL.parse().into_iter().collect();
        }
        let subnet_size =
            u8::try_from(subnet_size).ok().filter(|s| (1..=30).contains(s)).unwrap_or(DEFAULT_SUBNET_SIZE);
        let mut this = Self {
            pools,
            subnet_size,
            networks: networks.iter().map(|n| (n.id.clone(), n.clone())).collect(),
            subnets: Vec::new(),
            vnis: BTreeSet::new(),
            used: HashMap::new(),
            ports: BTreeMap::new(),
            cursors,
        };
        for network in networks {
            if let Some(allocation) = &network.allocation {
                if let Ok(subnet) = allocation.subnet.parse() {
                    this.subnets.push((subnet, network_name(network).to_owned()));
                }
                this.vnis.insert(allocation.vni);
            }
        }
        for service in services {
            let Some(endpoint) = &service.endpoint else { continue };
            for vip in &endpoint.virtual_ips {
                this.mark(&vip.network_id, &vip.addr);
            }
            for port in endpoint.ports.iter().filter(|p| is_ingress_port(p) && p.published_port != 0) {
                this.ports.insert((port.protocol, port.published_port), (service.id.clone(), service_label(service)));
            }
        }
        for task in tasks.iter().filter(|t| holds_addresses(t)) {
            for attachment in &task.networks {
                let id = attachment.network.as_ref().map(|n| n.id.as_str()).unwrap_or_default();
                for addr in &attachment.addresses {
                    this.mark(id, addr);
                }
            }
        }
        for node in nodes {
            if let Some(attachment) = &node.ingress {
                let id = attachment.network.as_ref().map(|n| n.id.as_str()).unwrap_or_default();
                for addr in &attachment.addresses {
                    this.mark(id, addr);
                }
            }
        }
        this
    }

    fn mark(&mut self, network_id: &str, cidr: &str) {
        if let Some(ip) = host_of(cidr)
            && self.networks.contains_key(network_id)
        {
            self.used.entry(network_id.to_owned()).or_default().insert(u32::from(ip));
        }
    }

    /// The network's allocation: its own subnet (refused if it overlaps another's) or the next
    /// free one of the pools, a gateway, and the lowest free VNI.
    pub(crate) fn allocate_network(&mut self, network: &v1::Network) -> Result<v1::NetworkAllocation, AllocError> {
        let spec = network.spec.clone().unwrap_or_default();
        let ipam = spec.ipam.clone().unwrap_or_default();
        let name = network_name(network).to_owned();
        let bad = |what: String| AllocError::BadIpam(format!("network {name}: {what}"));
        let subnet = if ipam.subnet.is_empty() {
            self.free_subnet()?
        } else {
            let subnet: Cidr = ipam.subnet.parse().map_err(|e: CidrError| bad(format!("--subnet: {e}")))?;
            if let Some((other_subnet, other)) = self.subnets.iter().find(|(s, _)| s.overlaps(&subnet)) {
                return Err(AllocError::Overlap {
                    subnet: subnet.to_string(),
                    other: other.clone(),
                    other_subnet: other_subnet.to_string(),
                });
            }
            subnet
        };
        if subnet.len > 30 {
            return Err(bad(format!("subnet {subnet} is too small for a gateway and tasks (at most /30)")));
        }
        let range = if ipam.ip_range.is_empty() {
            subnet
        } else {
            let range: Cidr = ipam.ip_range.parse().map_err(|e: CidrError| bad(format!("--ip-range: {e}")))?;
            if !subnet.covers(&range) {
                return Err(bad(format!("--ip-range {range} is not inside the subnet {subnet}")));
            }
            range
        };
        let gateway = if ipam.gateway.is_empty() {
            Ipv4Addr::from(subnet.network + 1)
        } else {
            let gateway: Ipv4Addr = ipam
                .gateway
                .parse()
                .map_err(|_| bad(format!("--gateway {:?} is not an IPv4 address", ipam.gateway)))?;
            let g = u32::from(gateway);
            if !subnet.contains(gateway) || g == subnet.network || g == subnet.last() {
                return Err(bad(format!("--gateway {gateway} is not a host address of the subnet {subnet}")));
            }
            gateway
        };
        let vni = (FIRST_VNI..=LAST_VNI).find(|v| !self.vnis.contains(v)).ok_or(AllocError::VnisExhausted)?;
        let mtu = match spec.options.get("mtu") {
            None if spec.options.contains_key(ENCRYPTED) => ENCRYPTED_MTU,
            None => DEFAULT_MTU,
            Some(mtu) => mtu
                .parse()
                .ok()
                .filter(|m| (576..=9000).contains(m))
                .ok_or_else(|| bad(format!("--opt mtu={mtu} is not a number in 576–9000")))?,
        };
        self.subnets.push((subnet, name));
        self.vnis.insert(vni);
        let allocation = v1::NetworkAllocation {
            subnet: subnet.to_string(),
            gateway: gateway.to_string(),
            ip_range: if range == subnet { String::new() } else { range.to_string() },
            vni,
            mtu,
        };
        let mut allocated = network.clone();
        allocated.allocation = Some(allocation.clone());
        self.networks.insert(network.id.clone(), allocated);
        Ok(allocation)
    }

    fn free_subnet(&self) -> Result<Cidr, AllocError> {
        let size = self.subnet_size;
        for pool in &self.pools {
            if pool.len > size {
                continue;
            }
            let step = 1u64 << (32 - u32::from(size));
            let mut at = u64::from(pool.network);
            let end = u64::from(pool.last());
            while at <= end {
                let candidate = Cidr { network: at as u32, len: size };
                match self.subnets.iter().find(|(s, _)| s.overlaps(&candidate)) {
                    None => return Ok(candidate),
                    // Skip past a larger overlapping subnet at once.
                    Some((s, _)) => at = (u64::from(s.last()) + 1).max(at + step),
                }
                // Keep to the subnet grid.
                at = at.div_ceil(step) * step;
            }
        }
        Err(AllocError::PoolExhausted {
            pools: self.pools.iter().map(Cidr::to_string).collect::<Vec<_>>().join(", "),
            size,
        })
    }

    /// The ingress network, if one exists.
    pub(crate) fn ingress(&self) -> Option<&v1::Network> {
        let mut ingress: Vec<&v1::Network> = self.networks.values().filter(|n| is_ingress(n)).collect();
        ingress.sort_by(|a, b| a.id.cmp(&b.id));
        ingress.into_iter().next()
    }

    /// One free address on `network_id`, marked in use: the next after the last handed out.
    pub(crate) fn allocate_address(&mut self, network_id: &str) -> Result<String, AllocError> {
        let network = self.networks.get(network_id).ok_or_else(|| AllocError::NoSuchNetwork(network_id.to_owned()))?;
        let range = Range::of(network).map_err(|why| {
            AllocError::NetworkNotReady(network_name(network).to_owned(), network.allocation_error.clone() + &why)
        })?;
        let used = self.used.entry(network_id.to_owned()).or_default();
        let (first, last) = (range.range.network, range.range.last());
        let size = u64::from(last - first) + 1;
        let start =
            self.cursors.get(network_id).copied().filter(|c| (first..=last).contains(c)).map_or(first, |c| c + 1);
        for i in 0..size {
            let ip = (u64::from(start) + i - u64::from(first)) % size + u64::from(first);
            let ip = ip as u32;
            if range.usable(ip) && !used.contains(&ip) {
                used.insert(ip);
                self.cursors.insert(network_id.to_owned(), ip);
                return Ok(range.subnet.with_host(Ipv4Addr::from(ip)));
            }
        }
        Err(AllocError::AddressesExhausted { network: range.name, range: range.range.to_string() })
    }

    /// Frees an address allocated in this pass whose write did not happen.
    pub(crate) fn release_address(&mut self, network_id: &str, cidr: &str) {
        if let (Some(used), Some(ip)) = (self.used.get_mut(network_id), host_of(cidr)) {
            used.remove(&u32::from(ip));
        }
    }

    /// The networks a service's tasks attach to: its own, plus ingress when it publishes ports
    /// through the routing mesh.
    pub(crate) fn service_networks(&self, spec: &v1::ServiceSpec) -> Result<Vec<String>, AllocError> {
        let mut ids: Vec<String> = spec.networks.iter().map(|n| n.target.clone()).collect();
        let ports = spec.endpoint.as_ref().map(|e| e.ports.as_slice()).unwrap_or_default();
        if ports.iter().any(is_ingress_port) {
            let ingress = self.ingress().ok_or(AllocError::NoIngress)?;
            if !ids.contains(&ingress.id) {
                ids.push(ingress.id.clone());
            }
        }
        Ok(ids)
    }

    /// Whether `service`'s stored endpoint matches its spec: nothing to allocate.
    pub(crate) fn service_allocated(&self, service: &v1::Service) -> bool {
        let Some(spec) = &service.spec else { return true };
        let Some(endpoint) = &service.endpoint else { return false };
        if endpoint.spec != spec.endpoint.clone().or_else(|| Some(v1::EndpointSpec::default())) {
            return false;
        }
        let Ok(wanted) = self.service_networks(spec) else { return false };
        let vip_mode = spec.endpoint.as_ref().is_none_or(|e| e.mode == v1::endpoint_spec::Mode::Vip as i32);
        let have: BTreeSet<&str> = endpoint.virtual_ips.iter().map(|v| v.network_id.as_str()).collect();
        let want: BTreeSet<&str> = if vip_mode { wanted.iter().map(String::as_str).collect() } else { BTreeSet::new() };
        have == want
    }

    /// A service's endpoint for its current spec: VIPs on its networks (mode vip; kept where it
    /// had one already), and published ports (kept if it published them already, else the
    /// asked-for one or the lowest free of the dynamic range). On error nothing is marked.
    pub(crate) fn allocate_service(&mut self, service: &v1::Service) -> Result<v1::Endpoint, AllocError> {
        let spec = service.spec.clone().unwrap_or_default();
        let endpoint_spec = spec.endpoint.clone().unwrap_or_default();
        let previous = service.endpoint.clone().unwrap_or_default();
        let id = service.id.clone();
        // Ports first: they can fail without side effects on addresses.
        let mine = |protocol: i32, port: u32, ports: &BTreeMap<(i32, u32), (String, String)>| {
            ports.get(&(protocol, port)).is_some_and(|holder| holder.0 == id)
        };
        let mut chosen: Vec<v1::PortConfig> = Vec::new();
        let mut taken: Vec<(i32, u32)> = Vec::new();
        for port in &endpoint_spec.ports {
            let mut port = port.clone();
            if is_ingress_port(&port) {
                if port.published_port == 0 {
                    // The port it had for the same target, if any.
                    let kept = previous.ports.iter().find(|p| {
                        p.protocol == port.protocol && p.target_port == port.target_port && is_ingress_port(p)
                    });
                    let kept = kept
                        .map(|p| p.published_port)
                        .filter(|p| mine(port.protocol, *p, &self.ports) && !taken.contains(&(port.protocol, *p)));
                    let free = || {
                        DYNAMIC_PORTS.clone().find(|p| {
                            !self.ports.contains_key(&(port.protocol, *p)) && !taken.contains(&(port.protocol, *p))
                        })
                    };
                    port.published_port =
                        kept.or_else(free).ok_or_else(|| AllocError::PortsExhausted(protocol_name(port.protocol)))?;
                } else if let Some(holder) = self.ports.get(&(port.protocol, port.published_port))
                    && holder.0 != id
                {
                    return Err(AllocError::PortInUse {
                        port: port.published_port,
                        protocol: protocol_name(port.protocol),
                        holder: holder.1.clone(),
                    });
                }
                taken.push((port.protocol, port.published_port));
            }
            chosen.push(port);
        }
        let networks = self.service_networks(&spec)?;
        let vip_mode = endpoint_spec.mode == v1::endpoint_spec::Mode::Vip as i32;
        let mut vips = Vec::new();
        if vip_mode {
            for id in &networks {
                if let Some(kept) = previous.virtual_ips.iter().find(|v| v.network_id == *id) {
                    vips.push(kept.clone());
                    continue;
                }
                match self.allocate_address(id) {
                    Ok(addr) => vips.push(v1::VirtualIp { network_id: id.clone(), addr }),
                    Err(err) => {
                        for vip in vips.iter().filter(|v| !previous.virtual_ips.contains(v)) {
                            self.release_address(&vip.network_id, &vip.addr);
                        }
                        return Err(err);
                    }
                }
            }
        }
        // VIPs it no longer needs are free again.
        for old in previous.virtual_ips.iter().filter(|v| !vips.contains(v)) {
            self.release_address(&old.network_id, &old.addr);
        }
        self.ports.retain(|_, holder| holder.0 != id);
        let holder = (id, service_label(service));
        for key in taken {
            self.ports.insert(key, holder.clone());
        }
        Ok(v1::Endpoint { spec: Some(endpoint_spec), ports: chosen, virtual_ips: vips })
    }

    /// A task's attachments: one address on each network of its service (with the service's
    /// aliases there). On error nothing is marked.
    pub(crate) fn allocate_task(&mut self, service: &v1::Service) -> Result<Vec<v1::NetworkAttachment>, AllocError> {
        let spec = service.spec.clone().unwrap_or_default();
        let networks = self.service_networks(&spec)?;
        let mut attachments: Vec<v1::NetworkAttachment> = Vec::new();
        for id in networks {
            match self.allocate_address(&id) {
                Ok(addr) => {
                    let aliases =
                        spec.networks.iter().find(|n| n.target == id).map(|n| n.aliases.clone()).unwrap_or_default();
                    let network = self.networks.get(&id).cloned();
                    attachments.push(v1::NetworkAttachment { network, addresses: vec![addr], aliases });
                }
                Err(err) => {
                    self.release_attachments(&attachments);
                    return Err(err);
                }
            }
        }
        Ok(attachments)
    }

    /// Frees the addresses of attachments made in this pass whose write did not happen.
    pub(crate) fn release_attachments(&mut self, attachments: &[v1::NetworkAttachment]) {
        for attachment in attachments {
            let id = attachment.network.as_ref().map(|n| n.id.clone()).unwrap_or_default();
            for addr in &attachment.addresses {
                self.release_address(&id, addr);
            }
        }
    }

    /// A node's ingress attachment: kept if it has one on the current ingress network, else a
    /// new address; `None` when there is no ingress network.
    pub(crate) fn allocate_node(&mut self, node: &v1::Node) -> Result<Option<v1::NetworkAttachment>, AllocError> {
        let Some(ingress) = self.ingress().cloned() else { return Ok(None) };
        if let Some(current) = &node.ingress
            && current.network.as_ref().is_some_and(|n| n.id == ingress.id)
        {
            return Ok(Some(current.clone()));
        }
        let addr = self.allocate_address(&ingress.id)?;
        Ok(Some(v1::NetworkAttachment { network: Some(ingress), addresses: vec![addr], aliases: Vec::new() }))
    }

    /// The service holding a published port, if any: (ID, name).
    pub(crate) fn port_holder(&self, protocol: i32, port: u32) -> Option<&(String, String)> {
        self.ports.get(&(protocol, port))
    }
}

/// Whether a task still waits for its addresses: its service attaches it to networks it has no
/// address on yet, and it was made in this pass (`new`: a global task is made assigned to its
/// node) or has not been sent to a node yet (PENDING).
pub(crate) fn wants_attachments(task: &v1::Task, networks: &[String], new: bool) -> bool {
    (new || task.observed_state() as i32 <= TaskState::Pending as i32)
        && networks.iter().any(|id| !task.networks.iter().any(|a| a.network.as_ref().is_some_and(|n| n.id == *id)))
}

/// Whether a port is published through the routing mesh (rather than on the task's node).
pub(crate) fn is_ingress_port(port: &v1::PortConfig) -> bool {
    port.publish_mode == v1::port_config::PublishMode::Ingress as i32
}

/// How a service is named in allocation errors: its name, else its ID.
fn service_label(service: &v1::Service) -> String {
    service
        .spec
        .as_ref()
        .and_then(|s| s.annotations.as_ref())
        .map(|a| a.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| service.id.clone())
}

//! The pure planner: desired state and observed kernel state in, operations out. No I/O.
//!
//! Each component is compared with what was observed and only the difference becomes an
//! operation, so planning against the state a previous apply produced yields no operations, and
//! planning after a crash half-way picks up where the last pass stopped.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use crate::xfrm::{Policy, Sa, SaId};
use std::path::PathBuf;

use crate::esp::EspState;
use crate::model::{
    Cidr, ContainerSpec, Desired, GATEWAY_BRIDGE, MacAddr, NetworkSpec, SANDBOX_BRIDGE, egress_port, endpoint_port,
    vxlan_name,
};

/// One link as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkState {
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// Its MAC, when it has one.
    pub mac: Option<MacAddr>,
    /// Name of the bridge it is attached to.
    pub controller: Option<String>,
    /// Addresses, link-local IPv6 left out (the kernel adds those by itself).
    pub addresses: BTreeSet<Cidr>,
    /// A bridge port that may not forward to other isolated ports (egress ports on the gateway
    /// bridge are, so that containers of different networks do not meet there).
    pub isolated: bool,
}

/// A VXLAN device as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanState {
    /// The link part.
    pub link: LinkState,
    /// VNI.
    pub vni: u32,
    /// UDP destination port.
    pub port: u16,
    /// Whether source-address learning is on (it must be off).
    pub learning: bool,
    /// Whether it answers ARP/ND from its neighbour table (it must be on).
    pub proxy: bool,
}

/// One sandbox namespace as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxState {
    /// The bridge, when present.
    pub bridge: Option<LinkState>,
    /// VXLAN devices by name.
    pub vxlans: BTreeMap<String, VxlanState>,
    /// Other links (the sandbox ends of endpoint veths) by name.
    pub ports: BTreeMap<String, LinkState>,
    /// Static FDB entries of the VXLAN device: MAC to remote node.
    pub fdb: BTreeMap<MacAddr, IpAddr>,
    /// Permanent neighbour entries of the VXLAN device: address to MAC.
    pub neighbours: BTreeMap<IpAddr, MacAddr>,
    /// The namespace file exists but cannot be entered (a crash before its mount): remake it.
    pub broken: bool,
}

/// A container namespace as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerState {
    /// Links by name.
    pub links: BTreeMap<String, LinkState>,
    /// Gateway of the IPv4 default route, when there is one.
    pub default_route: Option<IpAddr>,
}

/// The node namespace as observed (only what this library made).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    /// The gateway bridge.
    pub gateway: Option<LinkState>,
    /// Node ends of egress veths by name.
    pub ports: BTreeMap<String, LinkState>,
    /// Whether IPv4 forwarding is on.
    pub forwarding: bool,
    /// The comment of the masquerade rule, which records what it was made for.
    pub masquerade: Option<String>,
    /// Links of ours that have no business in the node namespace (a VXLAN device left there by
    /// a crash between creating it and moving it into its sandbox).
    pub stray: BTreeSet<String>,
    /// ESP: SAs, policies and the marking table.
    pub esp: EspState,
}

/// What is there: sandboxes found by name prefix, the desired containers' namespaces that exist,
/// and the node namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Sandboxes by network ID.
    pub sandboxes: BTreeMap<String, SandboxState>,
    /// Container namespaces by path.
    pub containers: BTreeMap<PathBuf, ContainerState>,
    /// The node namespace.
    pub node: NodeState,
}

/// Where a link lives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Place {
    /// The node namespace.
    Node,
    /// The sandbox of a network.
    Sandbox(String),
    /// A container namespace.
    Container(PathBuf),
}

/// One change to the kernel. Each names the network, namespace, device and address it touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Removes a network's sandbox and everything in it (its endpoints' veths too).
    DeleteSandbox {
        /// Network ID.
        network: String,
    },
    /// Creates the sandbox namespace of a network.
    CreateSandbox {
        /// Network ID.
        network: String,
    },
    /// Creates the sandbox bridge, up, with the gateway addresses.
    CreateBridge {
        /// Network ID.
        network: String,
        /// MTU.
        mtu: u32,
        /// Gateway addresses with the subnets' prefix lengths.
        addresses: Vec<Cidr>,
    },
    /// Creates a VXLAN device in the node namespace, moves it into the sandbox, attaches it to
    /// the bridge and brings it up.
    CreateVxlan {
        /// Network ID.
        network: String,
        /// Device name.
        name: String,
        /// VNI.
        vni: u32,
        /// UDP port.
        port: u16,
        /// MTU.
        mtu: u32,
    },
    /// Sets MTU and up, attaches to a bridge, adds and removes addresses of an existing link.
    ConfigureLink {
        /// Where the link is.
        place: Place,
        /// Its name.
        name: String,
        /// MTU.
        mtu: u32,
        /// Bridge to attach it to.
        controller: Option<String>,
        /// Addresses to add.
        add: Vec<Cidr>,
        /// Addresses to remove.
        remove: Vec<Cidr>,
    },
    /// Deletes a link (a veth takes its peer with it).
    DeleteLink {
        /// Where the link is.
        place: Place,
        /// Its name.
        name: String,
    },
    /// Creates a container's veth on a network: `port` on the sandbox bridge, `ifname` in the
    /// container with its MAC and addresses, both up.
    CreateEndpoint {
        /// Network ID.
        network: String,
        /// Container ID.
        container: String,
        /// Container namespace.
        netns: PathBuf,
        /// Sandbox end.
        port: String,
        /// Container end.
        ifname: String,
        /// MAC of the container end.
        mac: MacAddr,
        /// Addresses of the container end.
        addresses: Vec<Cidr>,
        /// MTU of both ends.
        mtu: u32,
    },
    /// Points a MAC at a remote node in the VXLAN device's FDB (replacing an older entry).
    SetFdb {
        /// Network ID.
        network: String,
        /// VXLAN device.
        vxlan: String,
        /// Remote endpoint's MAC.
        mac: MacAddr,
        /// Remote node's underlay address.
        node: IpAddr,
    },
    /// Removes a MAC from the VXLAN device's FDB.
    DeleteFdb {
        /// Network ID.
        network: String,
        /// VXLAN device.
        vxlan: String,
        /// MAC.
        mac: MacAddr,
        /// The node it pointed at.
        node: IpAddr,
    },
    /// Sets a permanent neighbour entry on the VXLAN device (answered by its ARP/ND proxy).
    SetNeighbour {
        /// Network ID.
        network: String,
        /// VXLAN device.
        vxlan: String,
        /// Remote endpoint's address.
        address: IpAddr,
        /// Its MAC.
        mac: MacAddr,
    },
    /// Removes a neighbour entry from the VXLAN device.
    DeleteNeighbour {
        /// Network ID.
        network: String,
        /// VXLAN device.
        vxlan: String,
        /// Address.
        address: IpAddr,
    },
    /// Creates the gateway bridge in the node namespace, up, with its address.
    CreateGatewayBridge {
        /// Address with the subnet's prefix length.
        address: Cidr,
        /// MTU.
        mtu: u32,
    },
    /// Turns on IPv4 forwarding in the node namespace.
    EnableForwarding,
    /// Replaces the masquerade rule: traffic from `subnet` leaving by another link than `bridge`.
    SetMasquerade {
        /// Gateway bridge subnet.
        subnet: Cidr,
        /// Gateway bridge name.
        bridge: String,
    },
    /// Removes the masquerade table.
    DeleteMasquerade,
    /// Creates a container's egress veth: `port` on the gateway bridge (an isolated port, so that
    /// containers of different networks cannot reach each other there), `ifname` in the container.
    CreateEgress {
        /// Container ID.
        container: String,
        /// Container namespace.
        netns: PathBuf,
        /// Node end.
        port: String,
        /// Container end.
        ifname: String,
        /// MAC of the container end.
        mac: MacAddr,
        /// Address of the container end.
        address: Cidr,
        /// MTU.
        mtu: u32,
    },
    /// Replaces the ESP marking table: outgoing VXLAN datagrams of these (port, VNI) pairs are
    /// marked for the xfrm policies, incoming ones that did not come through ESP are dropped.
    SetEspTable {
        /// (VXLAN port, VNI) of each encrypted network, sorted.
        rules: Vec<(u16, u32)>,
    },
    /// Removes the ESP marking table.
    DeleteEspTable,
    /// Adds an ESP SA in the node namespace.
    AddSa {
        /// The SA (its key stays out of logs).
        sa: Sa,
    },
    /// Deletes an ESP SA.
    DeleteSa {
        /// Which.
        id: SaId,
    },
    /// Adds an outbound policy, or switches the one with its selector in place (`update`).
    SetPolicy {
        /// The policy.
        policy: Policy,
        /// Whether one with this selector is there.
        update: bool,
    },
    /// Deletes an outbound policy.
    DeletePolicy {
        /// The policy.
        policy: Policy,
    },
    /// Sets (replaces) the container's IPv4 default route.
    SetDefaultRoute {
        /// Container namespace.
        netns: PathBuf,
        /// Egress link.
        ifname: String,
        /// Gateway.
        via: IpAddr,
    },
}

/// The desired state is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Two networks with one ID.
    #[error("network {network} is listed twice")]
    DuplicateNetwork {
        /// Network ID.
        network: String,
    },
    /// A network ID that cannot name a namespace.
    #[error("network id {network:?} must be 1-64 characters of [A-Za-z0-9_.-]")]
    BadNetworkId {
        /// Network ID.
        network: String,
    },
    /// Two networks with one VNI.
    #[error("networks {first} and {second} both use vni {vni}")]
    DuplicateVni {
        /// VNI.
        vni: u32,
        /// First network.
        first: String,
        /// Second network.
        second: String,
    },
    /// A VNI outside 1..=16777215.
    #[error("network {network}: vni {vni} is outside 1..=16777215")]
    BadVni {
        /// Network ID.
        network: String,
        /// VNI.
        vni: u32,
    },
    /// A gateway outside its subnet.
    #[error("network {network}: gateway {gateway} is outside subnet {subnet}")]
    GatewayOutsideSubnet {
        /// Network ID.
        network: String,
        /// Gateway.
        gateway: IpAddr,
        /// Subnet.
        subnet: Cidr,
    },
    /// An MTU below the IPv6 minimum.
    #[error("network {network}: mtu {mtu} is below 1280")]
    BadMtu {
        /// Network ID.
        network: String,
        /// MTU.
        mtu: u32,
    },
    /// Two containers with one ID.
    #[error("container {container} is listed twice")]
    DuplicateContainer {
        /// Container ID.
        container: String,
    },
    /// An endpoint on a network that is not in the desired networks.
    #[error("container {container}: endpoint {ifname} is on network {network}, which is not desired on this node")]
    UnknownNetwork {
        /// Container ID.
        container: String,
        /// Interface name.
        ifname: String,
        /// Network ID.
        network: String,
    },
    /// An endpoint address outside the network's subnets.
    #[error("container {container}: address {address} of {ifname} is outside the subnets of network {network}")]
    AddressOutsideNetwork {
        /// Container ID.
        container: String,
        /// Interface name.
        ifname: String,
        /// Address.
        address: IpAddr,
        /// Network ID.
        network: String,
    },
    /// An interface name that is empty, too long (15 bytes) or used twice in one container.
    #[error("container {container}: interface name {ifname:?} is empty, longer than 15 bytes or used twice")]
    BadIfname {
        /// Container ID.
        container: String,
        /// Interface name.
        ifname: String,
    },
    /// A container attached twice to one network.
    #[error("container {container} is attached to network {network} twice")]
    DuplicateAttachment {
        /// Container ID.
        container: String,
        /// Network ID.
        network: String,
    },
    /// Egress asked for without a gateway bridge, or with an address outside its subnet.
    #[error("container {container}: egress address {address} needs a gateway bridge whose subnet contains it")]
    BadEgress {
        /// Container ID.
        container: String,
        /// Address.
        address: IpAddr,
    },
    /// One MAC on a network pointing at two nodes.
    #[error("network {network}: remote mac {mac} is on two nodes, {first} and {second}")]
    ConflictingRemote {
        /// Network ID.
        network: String,
        /// MAC.
        mac: MacAddr,
        /// One node.
        first: IpAddr,
        /// The other node.
        second: IpAddr,
    },
    /// An encrypted network with a peer node reached over IPv6 (ESP here is IPv4 only).
    #[error(
        "network {network} is encrypted, but node {node} is reached over IPv6; encrypted overlays need an IPv4 underlay"
    )]
    EncryptedOverIpv6 {
        /// Network ID.
        network: String,
        /// The peer node's address.
        node: IpAddr,
    },
}

/// The masquerade rule's comment, which records what it was made for.
pub(crate) fn masquerade_comment(subnet: Cidr, bridge: &str) -> String {
    format!("shoal-overlay masquerade {subnet} not via {bridge}")
}

/// IDs of desired containers whose network namespace was not observed (it does not exist).
/// [`plan`] leaves them out, so that one vanished container does not hold up the others.
pub fn missing_namespaces(desired: &Desired, observed: &Observed) -> Vec<String> {
    desired.containers.iter().filter(|c| !observed.containers.contains_key(&c.netns)).map(|c| c.id.clone()).collect()
}

/// Computes the operations that take `observed` to `desired`. Remote endpoints on networks that
/// are not desired on this node are ignored (the node no longer has a sandbox for them), and so
/// are containers whose namespace was not observed (see [`missing_namespaces`]).
pub fn plan(desired: &Desired, observed: &Observed) -> Result<Vec<Op>, PlanError> {
    validate(desired)?;
    let mut ops = Vec::new();
    let networks: BTreeMap<&str, &NetworkSpec> = desired.networks.iter().map(|n| (n.id.as_str(), n)).collect();

    // 1. Leftovers in the node namespace, and sandboxes of networks this node no longer has.
    for name in &observed.node.stray {
        ops.push(Op::DeleteLink { place: Place::Node, name: name.clone() });
    }
    for (network, sandbox) in &observed.sandboxes {
        if sandbox.broken || !networks.contains_key(network.as_str()) {
            ops.push(Op::DeleteSandbox { network: network.clone() });
        }
    }

    // 2. ESP before any sandbox of an encrypted network (so that nothing leaves in the clear),
    //    and its removal after those sandboxes went.
    crate::esp::plan(desired, &observed.node.esp, &mut ops)?;

    // 3. Each network's sandbox, bridge, VXLAN device, stale ports and peer entries.
    let empty = SandboxState::default();
    for network in &desired.networks {
        let sandbox = observed.sandboxes.get(&network.id).filter(|s| !s.broken);
        if sandbox.is_none() {
            ops.push(Op::CreateSandbox { network: network.id.clone() });
        }
        let sandbox = sandbox.unwrap_or(&empty);
        plan_sandbox(network, sandbox, desired, &mut ops)?;
    }

    // 4. The gateway bridge, forwarding and masquerade.
    if let Some(gateway) = &desired.gateway {
        let address = gateway.subnet.with_addr(IpAddr::V4(gateway.address));
        match &observed.node.gateway {
            None => ops.push(Op::CreateGatewayBridge { address, mtu: gateway.mtu }),
            Some(link) => {
                if let Some(op) = configure(Place::Node, GATEWAY_BRIDGE, link, gateway.mtu, None, &[address]) {
                    ops.push(op);
                }
            }
        }
        if !observed.node.forwarding {
            ops.push(Op::EnableForwarding);
        }
        if observed.node.masquerade.as_deref() != Some(masquerade_comment(gateway.subnet, GATEWAY_BRIDGE).as_str()) {
            ops.push(Op::SetMasquerade { subnet: gateway.subnet, bridge: GATEWAY_BRIDGE.to_owned() });
        }
    }

    // 5. Containers: endpoints, egress, default route.
    let mut egress_ports = BTreeSet::new();
    for container in &desired.containers {
        plan_container(container, &networks, desired, observed, &mut ops, &mut egress_ports);
    }

    // 6. Egress veths of containers that are gone, then the gateway bridge if unwanted.
    for port in observed.node.ports.keys() {
        if !egress_ports.contains(port) {
            ops.push(Op::DeleteLink { place: Place::Node, name: port.clone() });
        }
    }
    if desired.gateway.is_none() {
        if observed.node.masquerade.is_some() {
            ops.push(Op::DeleteMasquerade);
        }
        if observed.node.gateway.is_some() {
            ops.push(Op::DeleteLink { place: Place::Node, name: GATEWAY_BRIDGE.to_owned() });
        }
    }
    Ok(ops)
}

fn plan_sandbox(
    network: &NetworkSpec,
    sandbox: &SandboxState,
    desired: &Desired,
    ops: &mut Vec<Op>,
) -> Result<(), PlanError> {
    let id = &network.id;
    let place = Place::Sandbox(id.clone());
    let gateways: Vec<Cidr> = network.subnets.iter().map(|s| s.cidr.with_addr(s.gateway)).collect();
    match &sandbox.bridge {
        None => ops.push(Op::CreateBridge { network: id.clone(), mtu: network.mtu, addresses: gateways }),
        Some(link) => ops.extend(configure(place.clone(), SANDBOX_BRIDGE, link, network.mtu, None, &gateways)),
    }

    // VXLAN: one device named after the VNI; anything else is stale.
    let vxlan = vxlan_name(network.vni);
    for name in sandbox.vxlans.keys().filter(|name| **name != vxlan) {
        ops.push(Op::DeleteLink { place: place.clone(), name: name.clone() });
    }
    let fresh = match sandbox.vxlans.get(&vxlan) {
        Some(state)
            if state.vni == network.vni && state.port == network.vxlan_port && !state.learning && state.proxy =>
        {
            let bridge = Some(SANDBOX_BRIDGE.to_owned());
            ops.extend(configure(place.clone(), &vxlan, &state.link, network.mtu, bridge, &[]));
            false
        }
        existing => {
            if existing.is_some() {
                ops.push(Op::DeleteLink { place: place.clone(), name: vxlan.clone() });
            }
            ops.push(Op::CreateVxlan {
                network: id.clone(),
                name: vxlan.clone(),
                vni: network.vni,
                port: network.vxlan_port,
                mtu: network.mtu,
            });
            true
        }
    };

    // Sandbox ends of veths of containers no longer on this network.
    let wanted: HashSet<String> = desired
        .containers
        .iter()
        .filter(|c| c.endpoints.iter().any(|e| e.network == *id))
        .map(|c| endpoint_port(&c.id))
        .collect();
    for port in sandbox.ports.keys().filter(|p| !wanted.contains(*p)) {
        ops.push(Op::DeleteLink { place: place.clone(), name: port.clone() });
    }

    // Peers: removals first, so that a MAC moving between nodes never points at both.
    let mut fdb: BTreeMap<MacAddr, IpAddr> = BTreeMap::new();
    let mut neighbours: BTreeMap<IpAddr, MacAddr> = BTreeMap::new();
    for remote in desired.remotes.iter().filter(|r| r.network == *id) {
        if let Some(first) = fdb.insert(remote.mac, remote.node)
            && first != remote.node
        {
            return Err(PlanError::ConflictingRemote {
                network: id.clone(),
                mac: remote.mac,
                first,
                second: remote.node,
            });
        }
        for address in &remote.addresses {
            neighbours.insert(*address, remote.mac);
        }
    }
    let (observed_fdb, observed_neighbours) =
        if fresh { (BTreeMap::new(), BTreeMap::new()) } else { (sandbox.fdb.clone(), sandbox.neighbours.clone()) };
    for (mac, node) in &observed_fdb {
        if !fdb.contains_key(mac) {
            ops.push(Op::DeleteFdb { network: id.clone(), vxlan: vxlan.clone(), mac: *mac, node: *node });
        }
    }
    for address in observed_neighbours.keys() {
        if !neighbours.contains_key(address) {
            ops.push(Op::DeleteNeighbour { network: id.clone(), vxlan: vxlan.clone(), address: *address });
        }
    }
    for (mac, node) in &fdb {
        if observed_fdb.get(mac) != Some(node) {
            ops.push(Op::SetFdb { network: id.clone(), vxlan: vxlan.clone(), mac: *mac, node: *node });
        }
    }
    for (address, mac) in &neighbours {
        if observed_neighbours.get(address) != Some(mac) {
            ops.push(Op::SetNeighbour { network: id.clone(), vxlan: vxlan.clone(), address: *address, mac: *mac });
        }
    }
    Ok(())
}

fn plan_container(
    container: &ContainerSpec,
    networks: &BTreeMap<&str, &NetworkSpec>,
    desired: &Desired,
    observed: &Observed,
    ops: &mut Vec<Op>,
    egress_ports: &mut BTreeSet<String>,
) {
    // A namespace that does not exist (the container is gone or not started) cannot be wired;
    // it is reported by `missing_namespaces` rather than failing the whole pass.
    let Some(state) = observed.containers.get(&container.netns) else { return };
    let port = endpoint_port(&container.id);
    let in_container = Place::Container(container.netns.clone());
    for endpoint in &container.endpoints {
        // Validated: every endpoint's network is desired.
        let Some(network) = networks.get(endpoint.network.as_str()) else { continue };
        let addresses: Vec<Cidr> =
            endpoint.addresses.iter().filter_map(|a| network.subnet_of(*a).map(|s| s.cidr.with_addr(*a))).collect();
        let sandbox_port = observed.sandboxes.get(&network.id).filter(|s| !s.broken).and_then(|s| s.ports.get(&port));
        let link = state.links.get(&endpoint.ifname);
        let link_ok = link.is_some_and(|l| matches_link(l, endpoint.mac, network.mtu, &addresses));
        let in_sandbox = Place::Sandbox(network.id.clone());
        match (link_ok, sandbox_port) {
            (true, Some(p)) => {
                ops.extend(configure(in_sandbox, &port, p, network.mtu, Some(SANDBOX_BRIDGE.to_owned()), &[]));
            }
            _ => {
                if sandbox_port.is_some() {
                    ops.push(Op::DeleteLink { place: in_sandbox, name: port.clone() });
                }
                if link.is_some() {
                    ops.push(Op::DeleteLink { place: in_container.clone(), name: endpoint.ifname.clone() });
                }
                ops.push(Op::CreateEndpoint {
                    network: network.id.clone(),
                    container: container.id.clone(),
                    netns: container.netns.clone(),
                    port: port.clone(),
                    ifname: endpoint.ifname.clone(),
                    mac: endpoint.mac,
                    addresses,
                    mtu: network.mtu,
                });
            }
        }
    }

    // A container on no network at all still reaches out (as Docker's); one on networks only
    // through them when one is not internal.
    let egress_wanted = container.endpoints.is_empty()
        || container.endpoints.iter().any(|e| networks.get(e.network.as_str()).is_some_and(|n| !n.internal));
    let (Some(egress), Some(gateway), true) = (&container.egress, &desired.gateway, egress_wanted) else { return };
    let node_port = egress_port(&container.id);
    egress_ports.insert(node_port.clone());
    let mac = MacAddr::from_ipv4(egress.address);
    let address = gateway.subnet.with_addr(IpAddr::V4(egress.address));
    let link = state.links.get(&egress.ifname);
    let link_ok = link.is_some_and(|l| matches_link(l, mac, gateway.mtu, &[address]));
    let existing = observed.node.ports.get(&node_port);
    let mut recreated = false;
    match (link_ok, existing) {
        (true, Some(p)) if p.isolated => {
            ops.extend(configure(Place::Node, &node_port, p, gateway.mtu, Some(GATEWAY_BRIDGE.to_owned()), &[]));
        }
        _ => {
            if existing.is_some() {
                ops.push(Op::DeleteLink { place: Place::Node, name: node_port.clone() });
            }
            if link.is_some() {
                ops.push(Op::DeleteLink { place: in_container, name: egress.ifname.clone() });
            }
            ops.push(Op::CreateEgress {
                container: container.id.clone(),
                netns: container.netns.clone(),
                port: node_port,
                ifname: egress.ifname.clone(),
                mac,
                address,
                mtu: gateway.mtu,
            });
            recreated = true;
        }
    }
    let via = IpAddr::V4(gateway.address);
    if recreated || state.default_route != Some(via) {
        ops.push(Op::SetDefaultRoute { netns: container.netns.clone(), ifname: egress.ifname.clone(), via });
    }
}

fn matches_link(link: &LinkState, mac: MacAddr, mtu: u32, addresses: &[Cidr]) -> bool {
    let wanted: BTreeSet<Cidr> = addresses.iter().copied().collect();
    link.mac == Some(mac) && link.mtu == mtu && link.up && link.addresses == wanted
}

/// A `ConfigureLink` when `link` differs from what is wanted, else nothing.
fn configure(
    place: Place,
    name: &str,
    link: &LinkState,
    mtu: u32,
    controller: Option<String>,
    addresses: &[Cidr],
) -> Option<Op> {
    let wanted: BTreeSet<Cidr> = addresses.iter().copied().collect();
    let add: Vec<Cidr> = wanted.difference(&link.addresses).copied().collect();
    let remove: Vec<Cidr> = link.addresses.difference(&wanted).copied().collect();
    let attached = controller.is_none() || link.controller == controller;
    (link.mtu != mtu || !link.up || !attached || !add.is_empty() || !remove.is_empty()).then(|| Op::ConfigureLink {
        place,
        name: name.to_owned(),
        mtu,
        controller,
        add,
        remove,
    })
}

fn validate(desired: &Desired) -> Result<(), PlanError> {
    let mut ids = HashSet::new();
    let mut vnis: BTreeMap<u32, &str> = BTreeMap::new();
    for network in &desired.networks {
        let id = &network.id;
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            && id != "."
            && id != "..";
        if !id_ok {
            return Err(PlanError::BadNetworkId { network: id.clone() });
        }
        if !ids.insert(id.as_str()) {
            return Err(PlanError::DuplicateNetwork { network: id.clone() });
        }
        if network.vni == 0 || network.vni > 0x00ff_ffff {
            return Err(PlanError::BadVni { network: id.clone(), vni: network.vni });
        }
        if let Some(first) = vnis.insert(network.vni, id) {
            return Err(PlanError::DuplicateVni { vni: network.vni, first: first.to_owned(), second: id.clone() });
        }
        if network.mtu < 1280 {
            return Err(PlanError::BadMtu { network: id.clone(), mtu: network.mtu });
        }
        for subnet in &network.subnets {
            if !subnet.cidr.contains(subnet.gateway) {
                return Err(PlanError::GatewayOutsideSubnet {
                    network: id.clone(),
                    gateway: subnet.gateway,
                    subnet: subnet.cidr,
                });
            }
        }
    }
    let mut containers = HashSet::new();
    for container in &desired.containers {
        let cid = &container.id;
        if !containers.insert(cid.as_str()) {
            return Err(PlanError::DuplicateContainer { container: cid.clone() });
        }
        let mut ifnames = HashSet::new();
        let mut attached = HashSet::new();
        let egress_ifname = container.egress.as_ref().map(|e| e.ifname.as_str());
        for ifname in container.endpoints.iter().map(|e| e.ifname.as_str()).chain(egress_ifname) {
            if ifname.is_empty() || ifname.len() > 15 || ifname.contains('/') || !ifnames.insert(ifname) {
                return Err(PlanError::BadIfname { container: cid.clone(), ifname: ifname.to_owned() });
            }
        }
        for endpoint in &container.endpoints {
            let Some(network) = desired.networks.iter().find(|n| n.id == endpoint.network) else {
                return Err(PlanError::UnknownNetwork {
                    container: cid.clone(),
                    ifname: endpoint.ifname.clone(),
                    network: endpoint.network.clone(),
                });
            };
            if !attached.insert(endpoint.network.as_str()) {
                return Err(PlanError::DuplicateAttachment { container: cid.clone(), network: network.id.clone() });
            }
            if let Some(address) = endpoint.addresses.iter().find(|a| network.subnet_of(**a).is_none()) {
                return Err(PlanError::AddressOutsideNetwork {
                    container: cid.clone(),
                    ifname: endpoint.ifname.clone(),
                    address: *address,
                    network: network.id.clone(),
                });
            }
        }
        if let Some(egress) = &container.egress {
            let address = IpAddr::V4(egress.address);
            if !desired.gateway.as_ref().is_some_and(|g| g.subnet.contains(address)) {
                return Err(PlanError::BadEgress { container: cid.clone(), address });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Node => f.write_str("the node namespace"),
            Self::Sandbox(network) => write!(f, "the sandbox of network {network}"),
            Self::Container(netns) => write!(f, "container namespace {}", netns.display()),
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |cidrs: &[Cidr]| cidrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        match self {
            Self::DeleteSandbox { network } => write!(f, "network {network}: delete sandbox"),
            Self::CreateSandbox { network } => write!(f, "network {network}: create sandbox"),
            Self::CreateBridge { network, mtu, addresses } => {
                write!(f, "network {network}: create bridge {SANDBOX_BRIDGE} mtu {mtu} addresses [{}]", list(addresses))
            }
            Self::CreateVxlan { network, name, vni, port, mtu } => {
                write!(f, "network {network}: create vxlan {name} vni {vni} port {port} mtu {mtu}")
            }
            Self::ConfigureLink { place, name, mtu, controller, add, remove } => {
                write!(f, "configure {name} in {place}: mtu {mtu}, up")?;
                if let Some(controller) = controller {
                    write!(f, ", on bridge {controller}")?;
                }
                write!(f, ", add [{}], remove [{}]", list(add), list(remove))
            }
            Self::DeleteLink { place, name } => write!(f, "delete link {name} in {place}"),
            Self::CreateEndpoint { network, container, netns, port, ifname, mac, addresses, .. } => write!(
                f,
                "network {network}: create endpoint {port} <-> {ifname} ({mac}, [{}]) of container {container} in {}",
                list(addresses),
                netns.display()
            ),
            Self::SetFdb { network, vxlan, mac, node } => {
                write!(f, "network {network}: fdb {mac} dst {node} on {vxlan}")
            }
            Self::DeleteFdb { network, vxlan, mac, node } => {
                write!(f, "network {network}: delete fdb {mac} dst {node} on {vxlan}")
            }
            Self::SetNeighbour { network, vxlan, address, mac } => {
                write!(f, "network {network}: neighbour {address} lladdr {mac} on {vxlan}")
            }
            Self::DeleteNeighbour { network, vxlan, address } => {
                write!(f, "network {network}: delete neighbour {address} on {vxlan}")
            }
            Self::CreateGatewayBridge { address, mtu } => {
                write!(f, "create gateway bridge {GATEWAY_BRIDGE} {address} mtu {mtu}")
            }
            Self::EnableForwarding => f.write_str("enable ipv4 forwarding in the node namespace"),
            Self::SetMasquerade { subnet, bridge } => {
                write!(f, "masquerade {subnet} leaving by other links than {bridge}")
            }
            Self::DeleteMasquerade => f.write_str("delete masquerade"),
            Self::CreateEgress { container, netns, port, ifname, address, .. } => write!(
                f,
                "create egress {port} <-> {ifname} ({address}) of container {container} in {}",
                netns.display()
            ),
            Self::SetEspTable { rules } => {
                let list: Vec<String> = rules.iter().map(|(port, vni)| format!("{port}:{vni}")).collect();
                write!(f, "esp: mark vxlan datagrams of [{}] in the node namespace", list.join(","))
            }
            Self::DeleteEspTable => f.write_str("esp: delete the marking table"),
            Self::AddSa { sa } => write!(f, "esp: add SA {} -> {} spi {:#010x}", sa.src, sa.dst, sa.spi),
            Self::DeleteSa { id } => write!(f, "esp: delete SA {} -> {} spi {:#010x}", id.src, id.dst, id.spi),
            Self::SetPolicy { policy, update } => {
                write!(f, "esp: {} policy {}", if *update { "switch" } else { "add" }, DisplayPolicy(policy))
            }
            Self::DeletePolicy { policy } => write!(f, "esp: delete policy {}", DisplayPolicy(policy)),
            Self::SetDefaultRoute { netns, ifname, via } => {
                write!(f, "default route via {via} dev {ifname} in {}", netns.display())
            }
        }
    }
}

/// A policy as operations name it.
struct DisplayPolicy<'a>(&'a Policy);

impl std::fmt::Display for DisplayPolicy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Policy { src, dst, dport, action, .. } = self.0;
        let any = |a: &Option<std::net::Ipv4Addr>| a.map_or_else(|| "any".to_owned(), |a| a.to_string());
        write!(f, "{} -> {} udp dport {dport}: ", any(src), any(dst))?;
        match action {
            crate::xfrm::PolicyAction::Encrypt { spi } => write!(f, "encrypt with spi {spi:#010x}"),
            crate::xfrm::PolicyAction::Block => f.write_str("block"),
        }
    }
}

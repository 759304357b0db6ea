//! What the node's dataplanes should hold, computed in pure code from the network view, the
//! tasks wired on this node and the node's ingress attachment: the overlay's desired state
//! (networks, the tasks' and the ingress sandbox's endpoints, remote peers, the gateway bridge),
//! the VIP load balancers of each task namespace, the ingress sandbox's balancer, the node's
//! published ports, the tasks' return routes through the ingress sandboxes, and the DNS records
//! per network. No I/O: `apply.rs` carries it out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;

use shoal_api::v1;
use shoal_embedded_dns::{Delta, Endpoint, ServiceRecord, TaskRecord};
use shoal_ipvs_lb::{Backend, Protocol, Service, ServiceKey};
use shoal_overlay::esp::{Encryption, NetworkKey as EspKey};
use shoal_overlay::{
    Cidr, ContainerSpec, Desired, Egress, GatewayBridge, LocalEndpoint, MacAddr, Naming, NetworkSpec, RemoteEndpoint,
};

use super::view::NetworkView;

/// The overlay container ID (and egress owner) of the node's ingress sandbox.
pub(crate) const INGRESS_SANDBOX: &str = "ingress-sbox";
/// Peer IDs of the nodes' ingress sandboxes start with this (`ingress-sbox.NODE`).
pub(crate) const INGRESS_SANDBOX_PEER: &str = "ingress-sbox.";

/// How this node names what it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    /// Prefix of every namespace the agent makes (`shoal-` by default).
    pub(crate) prefix: String,
    /// Directory of named namespaces (`/run/netns`).
    pub(crate) netns_dir: PathBuf,
}

impl Names {
    /// The name of a task's namespace: `<prefix>t<task id>`.
    pub(crate) fn task_netns_name(&self, task_id: &str) -> String {
        format!("{}t{task_id}", self.prefix)
    }

    /// The path of a task's namespace.
    pub(crate) fn task_netns(&self, task_id: &str) -> PathBuf {
        self.netns_dir.join(self.task_netns_name(task_id))
    }

    /// The path of the ingress sandbox.
    pub(crate) fn sandbox_netns(&self) -> PathBuf {
        self.netns_dir.join(format!("{}{INGRESS_SANDBOX}", self.prefix))
    }

    /// The task ID behind a namespace name of ours, if it is a task's.
    pub(crate) fn task_of(&self, netns_name: &str) -> Option<String> {
        netns_name.strip_prefix(&self.prefix)?.strip_prefix('t').filter(|id| !id.is_empty()).map(str::to_owned)
    }

    /// The overlay's names: sandboxes `<prefix>ov-<network>`.
    pub(crate) fn overlay(&self) -> Naming {
        Naming { netns_prefix: format!("{}ov-", self.prefix), ..Naming::default() }
    }
}

/// A task wired on this node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LocalTask {
    /// The task as assigned (its network attachments and endpoint are what matter).
    pub(crate) task: v1::Task,
    /// Its address on the gateway bridge, when it has egress.
    pub(crate) egress: Option<Ipv4Addr>,
}

/// A port the node namespace forwards (DNAT) to an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PublishEntry {
    /// The protocol.
    pub(crate) protocol: Protocol,
    /// The published port on the node.
    pub(crate) port: u16,
    /// Where it goes.
    pub(crate) to: SocketAddrV4,
}

/// Return routes of a task on the ingress network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReturnRoutes {
    /// Its interface on the ingress network.
    pub(crate) ifname: String,
    /// Every node's ingress sandbox address.
    pub(crate) sandboxes: Vec<Ipv4Addr>,
}

/// What the node's dataplanes should hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct NodePlan {
    /// The overlay's desired state.
    pub(crate) overlay: Desired,
    /// Namespaces that must exist, with their owner (a task ID or [`INGRESS_SANDBOX`]).
    pub(crate) netns: BTreeMap<PathBuf, String>,
    /// Load-balancer services per namespace (task namespaces: VIPs; the ingress sandbox:
    /// published ports).
    pub(crate) lb: BTreeMap<PathBuf, Vec<Service>>,
    /// The node namespace's published ports (ingress and host mode), by protocol and port.
    pub(crate) publish: Vec<PublishEntry>,
    /// Return routes per task namespace on the ingress network.
    pub(crate) return_routes: BTreeMap<PathBuf, ReturnRoutes>,
    /// The ingress sandbox, which forwards.
    pub(crate) forwarding: Option<PathBuf>,
    /// Owners that cannot be wired, and why (a task or the ingress sandbox).
    pub(crate) problems: BTreeMap<String, String>,
}

/// What the plan is computed from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlanInput<'a> {
    /// This node's ID.
    pub(crate) node_id: &'a str,
    /// The networks stream's view.
    pub(crate) view: &'a NetworkView,
    /// Tasks wired on this node, by ID.
    pub(crate) tasks: &'a BTreeMap<String, LocalTask>,
    /// The node's ingress attachment (`Node.ingress`).
    pub(crate) ingress: Option<&'a v1::NetworkAttachment>,
    /// The ingress sandbox's egress address.
    pub(crate) sandbox_egress: Option<Ipv4Addr>,
    /// The node's gateway bridge.
    pub(crate) gateway: &'a GatewayBridge,
    /// Names.
    pub(crate) names: &'a Names,
    /// Whether the node's kernel has ESP with AES-GCM (encrypted networks need it).
    pub(crate) esp: bool,
    /// The node's underlay address when set (`--data-path-addr`); otherwise the one the manager
    /// gives this node's peers.
    pub(crate) data_addr: Option<Ipv4Addr>,
}

/// How a task on an encrypted network that waits for the keys is told apart (it is wired at a
/// later pass, when the keys come).
pub(crate) const KEYS_PENDING: &str = "waiting for the keys of encrypted network";

/// An address in CIDR notation ("198.18.0.3/24") or bare.
pub(crate) fn parse_addr(text: &str) -> Option<IpAddr> {
    let addr = text.split_once('/').map_or(text, |(addr, _)| addr);
    addr.trim().parse().ok()
}

/// An IPv4 address in CIDR notation or bare; `None` for anything else.
pub(crate) fn parse_v4(text: &str) -> Option<Ipv4Addr> {
    match parse_addr(text)? {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

/// The overlay network a stored network describes.
pub(crate) fn network_spec(network: &v1::Network) -> Result<NetworkSpec, String> {
    let id = &network.id;
    let allocation = network.allocation.as_ref().ok_or_else(|| format!("network {id} is not allocated yet"))?;
    let subnet: Cidr =
        allocation.subnet.parse().map_err(|_| format!("network {id}: invalid subnet {:?}", allocation.subnet))?;
    let gateway = parse_addr(&allocation.gateway)
        .ok_or_else(|| format!("network {id}: invalid gateway {:?}", allocation.gateway))?;
    let mut spec = NetworkSpec::new(id.clone(), allocation.vni, subnet, gateway);
    if allocation.mtu != 0 {
        spec.mtu = allocation.mtu;
    }
    spec.internal = network.spec.as_ref().is_some_and(|s| s.internal);
    spec.encrypted = is_encrypted(network);
    Ok(spec)
}

/// Whether a stored network is encrypted (`--opt encrypted`).
pub(crate) fn is_encrypted(network: &v1::Network) -> bool {
    network.spec.as_ref().is_some_and(|s| s.options.contains_key("encrypted"))
}

/// The newest key ring the view holds (every encrypted network carries the same one; during a
/// rotation some may be a step behind), as the overlay takes it.
fn ring(view: &NetworkView) -> Vec<EspKey> {
    let newest = view.keys.values().max_by_key(|keys| keys.iter().map(|k| k.lamport_time).max().unwrap_or(0));
    newest
        .into_iter()
        .flatten()
        .filter_map(|k| Some(EspKey { tag: k.lamport_time, key: k.key.as_slice().try_into().ok()? }))
        .collect()
}

/// Whether a stored network is the ingress network.
pub(crate) fn is_ingress(network: &v1::Network) -> bool {
    network.spec.as_ref().is_some_and(|s| s.ingress)
}

/// The network of an attachment, as the view has it when it does (it is newer), else as the
/// attachment carries it.
fn attached_network<'a>(view: &'a NetworkView, attachment: &'a v1::NetworkAttachment) -> Option<&'a v1::Network> {
    let carried = attachment.network.as_ref()?;
    Some(view.networks.get(&carried.id).filter(|n| n.allocation.is_some()).unwrap_or(carried))
}

/// Whether a task gets egress: it is on no network, or one of its networks is not internal.
pub(crate) fn needs_egress(task: &v1::Task) -> bool {
    // As Docker: every container reaches out through the gateway bridge unless all of its
    // networks are internal; one on no network at all still does (and host-mode ports reach it
    // there).
    task.networks.is_empty()
        || task.networks.iter().filter_map(|a| a.network.as_ref()).any(|n| !n.spec.as_ref().is_some_and(|s| s.internal))
}

/// The networks a task's resolver answers from: its networks but ingress, in its order.
pub(crate) fn dns_networks(task: &v1::Task) -> Vec<String> {
    task.networks.iter().filter_map(|a| a.network.as_ref()).filter(|n| !is_ingress(n)).map(|n| n.id.clone()).collect()
}

/// The task's `/etc/hosts`: localhost, then its hostname at each of its addresses.
pub(crate) fn hosts_file(task: &v1::Task, hostname: &str) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let addresses = task.networks.iter().flat_map(|a| &a.addresses).filter_map(|a| parse_addr(a));
    let mut any = false;
    for addr in addresses {
        out.push_str(&format!("{addr}\t{hostname}\n"));
        any = true;
    }
    if !any {
        out.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    out
}

fn protocol(port: &v1::PortConfig) -> Protocol {
    match v1::port_config::Protocol::try_from(port.protocol) {
        Ok(v1::port_config::Protocol::Udp) => Protocol::Udp,
        Ok(v1::port_config::Protocol::Sctp) => Protocol::Sctp,
        _ => Protocol::Tcp,
    }
}

fn port16(port: u32) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

fn is_host_mode(port: &v1::PortConfig) -> bool {
    port.publish_mode == v1::port_config::PublishMode::Host as i32
}

/// One task's endpoints, checked against the networks the plan has.
struct Wiring {
    endpoints: Vec<LocalEndpoint>,
    /// (network ID, interface) of its ingress endpoint.
    ingress_if: Option<String>,
    /// Its non-ingress networks.
    networks: Vec<String>,
}

/// Computes the node's plan.
pub(crate) fn plan(input: PlanInput<'_>) -> NodePlan {
    let PlanInput { node_id, view, tasks, ingress, sandbox_egress, gateway, names, esp, data_addr } = input;
    // Encryption: the kernel must have ESP, and the node needs the keys and its own address.
    let keys = ring(view);
    let underlay =
        data_addr.or_else(|| view.peers.values().filter(|p| p.node_id == node_id).find_map(|p| parse_v4(&p.node_addr)));
    let encryption = match (esp, underlay) {
        (true, Some(local)) if !keys.is_empty() => Some(Encryption { local, keys }),
        _ => None,
    };
    // Why an owner on `network` cannot be wired, when the network is encrypted and that is so.
    let cannot_encrypt = |network: &NetworkSpec| -> Option<String> {
        let id = &network.id;
        match (network.encrypted, esp, &encryption) {
            (false, _, _) | (true, true, Some(_)) => None,
            (true, false, _) => Some(format!(
                "network {id} is encrypted, and this node's kernel has no ESP (esp4) or no rfc4106(gcm(aes)): \
                 its tasks cannot run here (load esp4, or constrain the service to nodes that have it)"
            )),
            (true, true, None) => Some(format!("{KEYS_PENDING} {id}")),
        }
    };
    let mut out = NodePlan::default();
    // Networks the node hosts: those of its tasks, and ingress with an ingress attachment.
    let mut networks: BTreeMap<String, NetworkSpec> = BTreeMap::new();
    let mut bad_networks: BTreeMap<String, String> = BTreeMap::new();
    let mut vnis: BTreeMap<u32, String> = BTreeMap::new();
    let mut ingress_id: Option<String> = ingress.and_then(|a| a.network.as_ref()).map(|n| n.id.clone());
    let mut add_network =
        |network: &v1::Network, networks: &mut BTreeMap<String, NetworkSpec>, bad: &mut BTreeMap<String, String>| {
            if networks.contains_key(&network.id) || bad.contains_key(&network.id) {
                return;
            }
            match network_spec(network) {
                Ok(spec) => match vnis.get(&spec.vni) {
                    Some(other) => {
                        bad.insert(
                            network.id.clone(),
                            format!("network {}: vni {} is used by network {other}", network.id, spec.vni),
                        );
                    }
                    None => {
                        vnis.insert(spec.vni, spec.id.clone());
                        networks.insert(spec.id.clone(), spec);
                    }
                },
                Err(reason) => {
                    bad.insert(network.id.clone(), reason);
                }
            }
        };
    if let Some(network) = ingress.and_then(|a| a.network.as_ref()) {
        let network = view.networks.get(&network.id).filter(|n| n.allocation.is_some()).unwrap_or(network);
        add_network(network, &mut networks, &mut bad_networks);
    }
    for local in tasks.values() {
        for attachment in &local.task.networks {
            if let Some(network) = attached_network(view, attachment) {
                if is_ingress(network) && ingress_id.is_none() {
                    ingress_id = Some(network.id.clone());
                }
                add_network(network, &mut networks, &mut bad_networks);
            }
        }
    }
    if ingress_id.is_none() {
        ingress_id = view.ingress().map(|n| n.id.clone());
    }

    // Every node's ingress sandbox, for the return routes.
    let mut sandboxes: BTreeSet<Ipv4Addr> = BTreeSet::new();
    if let Some(id) = &ingress_id {
        sandboxes.extend(
            view.peers_on(id).filter(|p| p.id.starts_with(INGRESS_SANDBOX_PEER)).filter_map(|p| parse_v4(&p.address)),
        );
    }
    let own_sandbox = ingress.and_then(|a| a.addresses.iter().find_map(|a| parse_v4(a)));
    sandboxes.extend(own_sandbox);
    let sandboxes: Vec<Ipv4Addr> = sandboxes.into_iter().collect();

    let mut publish: BTreeMap<(Protocol, u16), SocketAddrV4> = BTreeMap::new();
    let mut publish_conflicts = Vec::new();
    let mut add_publish = |entry: PublishEntry, owner: &str, conflicts: &mut Vec<String>| match publish
        .get(&(entry.protocol, entry.port))
    {
        Some(to) if *to != entry.to => {
            conflicts.push(format!("{owner}: port {}/{} is published already (to {to})", entry.port, entry.protocol))
        }
        _ => {
            publish.insert((entry.protocol, entry.port), entry.to);
        }
    };

    // The ingress sandbox.
    if let (Some(attachment), Some(id)) = (ingress, ingress_id.as_ref()) {
        let path = names.sandbox_netns();
        let encryption_problem = networks.get(id).and_then(cannot_encrypt);
        match (networks.get(id), own_sandbox, sandbox_egress) {
            (Some(_), _, _) if encryption_problem.is_some() => {
                out.problems.insert(INGRESS_SANDBOX.to_owned(), encryption_problem.unwrap_or_default());
            }
            (Some(spec), Some(addr), Some(egress)) if spec.subnet_of(IpAddr::V4(addr)).is_some() => {
                out.netns.insert(path.clone(), INGRESS_SANDBOX.to_owned());
                out.overlay.containers.push(ContainerSpec {
                    id: INGRESS_SANDBOX.to_owned(),
                    netns: path.clone(),
                    endpoints: vec![LocalEndpoint::new(id.clone(), "eth0", addr)],
                    egress: Some(Egress { ifname: "eth1".to_owned(), address: egress }),
                });
                out.forwarding = Some(path.clone());
                let mut services = Vec::new();
                for service in view.services_on(id) {
                    let backends: Vec<Ipv4Addr> = serving(view, id, &service.service_id);
                    for port in service.ports.iter().filter(|p| !is_host_mode(p)) {
                        let (Some(published), Some(target)) = (port16(port.published_port), port16(port.target_port))
                        else {
                            continue;
                        };
                        let key = ServiceKey { addr: egress, port: published, protocol: protocol(port) };
                        services.push(Service {
                            key,
                            backends: backends.iter().map(|a| Backend::new(*a, target)).collect(),
                            source_nat: false,
                        });
                        let entry = PublishEntry {
                            protocol: key.protocol,
                            port: published,
                            to: SocketAddrV4::new(egress, published),
                        };
                        add_publish(entry, &format!("service {}", service.name), &mut publish_conflicts);
                    }
                }
                services.sort_by_key(|s| s.key);
                services.dedup_by_key(|s| s.key);
                out.lb.insert(path, services);
            }
            (None, _, _) => {
                let why = bad_networks.get(id).cloned().unwrap_or_else(|| format!("ingress network {id} is unknown"));
                out.problems.insert(INGRESS_SANDBOX.to_owned(), why);
            }
            (Some(_), Some(addr), Some(_)) => {
                out.problems
                    .insert(INGRESS_SANDBOX.to_owned(), format!("ingress address {addr} is outside network {id}"));
            }
            (Some(_), None, _) => {
                out.problems.insert(
                    INGRESS_SANDBOX.to_owned(),
                    format!("ingress attachment {:?} has no IPv4 address in network {id}", attachment.addresses),
                );
            }
            (Some(_), Some(_), None) => {
                out.problems.insert(INGRESS_SANDBOX.to_owned(), "no egress address for the ingress sandbox".to_owned());
            }
        }
    }

    // The tasks.
    for (task_id, local) in tasks {
        let netns = names.task_netns(task_id);
        out.netns.insert(netns.clone(), task_id.clone());
        let wiring = match wire(task_id, local, view, &networks, &bad_networks, ingress_id.as_deref()) {
            Ok(wiring) => wiring,
            Err(why) => {
                out.problems.insert(task_id.clone(), why);
                continue;
            }
        };
        if let Some(why) = wiring.endpoints.iter().find_map(|e| networks.get(&e.network).and_then(cannot_encrypt)) {
            out.problems.insert(task_id.clone(), why);
            continue;
        }
        let egress = local.egress.map(|address| Egress { ifname: format!("eth{}", wiring.endpoints.len()), address });
        out.overlay.containers.push(ContainerSpec {
            id: task_id.clone(),
            netns: netns.clone(),
            endpoints: wiring.endpoints,
            egress,
        });
        // VIPs of the services on its networks, every port, TCP and UDP.
        let mut services: Vec<Service> = Vec::new();
        for network in &wiring.networks {
            for service in view.services_on(network) {
                if service.mode != v1::endpoint_spec::Mode::Vip as i32 {
                    continue;
                }
                let Some(vip) = parse_v4(&service.vip) else { continue };
                let backends: Vec<Backend> =
                    serving(view, network, &service.service_id).into_iter().map(Backend::any_port).collect();
                for protocol in [Protocol::Tcp, Protocol::Udp] {
                    services.push(Service {
                        key: ServiceKey::any_port(vip, protocol),
                        backends: backends.clone(),
                        source_nat: false,
                    });
                }
            }
        }
        services.sort_by_key(|s| s.key);
        services.dedup_by_key(|s| s.key);
        if !services.is_empty() {
            out.lb.insert(netns.clone(), services);
        }
        if let Some(ifname) = wiring.ingress_if {
            out.return_routes.insert(netns.clone(), ReturnRoutes { ifname, sandboxes: sandboxes.clone() });
        }
        // Host-mode ports: straight to the task's egress address.
        if let (Some(egress), Some(endpoint)) = (local.egress, local.task.endpoint.as_ref()) {
            for port in endpoint.ports.iter().filter(|p| is_host_mode(p)) {
                let (Some(published), Some(target)) = (port16(port.published_port), port16(port.target_port)) else {
                    continue;
                };
                let entry =
                    PublishEntry { protocol: protocol(port), port: published, to: SocketAddrV4::new(egress, target) };
                add_publish(entry, &format!("task {task_id}"), &mut publish_conflicts);
            }
        }
    }
    for conflict in publish_conflicts {
        tracing::warn!(conflict = %conflict, "published port left out");
    }
    out.publish = publish.into_iter().map(|((protocol, port), to)| PublishEntry { protocol, port, to }).collect();

    // Peers on other nodes, on the networks this node hosts; one MAC per address, so a peer
    // seen on two nodes (moving) keeps the first.
    let mut seen_macs: BTreeSet<(String, MacAddr)> = BTreeSet::new();
    for id in networks.keys() {
        for peer in view.peers_on(id) {
            if peer.node_id == node_id {
                continue;
            }
            let (Some(addr), Some(node)) = (parse_v4(&peer.address), parse_addr(&peer.node_addr)) else { continue };
            let remote = RemoteEndpoint::new(id.clone(), addr, node);
            if seen_macs.insert((id.clone(), remote.mac)) {
                out.overlay.remotes.push(remote);
            }
        }
    }
    out.overlay.remotes.sort();
    out.overlay.networks = networks.into_values().collect();
    out.overlay.gateway = Some(gateway.clone());
    out.overlay.encryption = encryption;
    out
}

/// The addresses of the serving tasks of `service` on `network`, sorted, once each.
fn serving(view: &NetworkView, network: &str, service: &str) -> Vec<Ipv4Addr> {
    let set: BTreeSet<Ipv4Addr> = view
        .peers_on(network)
        .filter(|p| p.serving && p.service_id == service)
        .filter_map(|p| parse_v4(&p.address))
        .collect();
    set.into_iter().collect()
}

/// A task's endpoints on the networks the plan has: `eth<i>` for its i-th attachment.
fn wire(
    task_id: &str,
    local: &LocalTask,
    view: &NetworkView,
    networks: &BTreeMap<String, NetworkSpec>,
    bad: &BTreeMap<String, String>,
    ingress_id: Option<&str>,
) -> Result<Wiring, String> {
    let mut wiring = Wiring { endpoints: Vec::new(), ingress_if: None, networks: Vec::new() };
    for (index, attachment) in local.task.networks.iter().enumerate() {
        let Some(network) = attached_network(view, attachment) else {
            return Err(format!("task {task_id}: attachment {index} names no network"));
        };
        let id = &network.id;
        let Some(spec) = networks.get(id) else {
            return Err(bad.get(id).cloned().unwrap_or_else(|| format!("network {id} is unknown")));
        };
        let addresses: Vec<IpAddr> = attachment.addresses.iter().filter_map(|a| parse_addr(a)).collect();
        let Some(IpAddr::V4(first)) = addresses.iter().find(|a| a.is_ipv4()).copied() else {
            return Err(format!("task {task_id}: no IPv4 address on network {id} (got {:?})", attachment.addresses));
        };
        if let Some(outside) = addresses.iter().find(|a| spec.subnet_of(**a).is_none()) {
            return Err(format!("task {task_id}: address {outside} is outside the subnets of network {id}"));
        }
        let ifname = format!("eth{index}");
        let mut endpoint = LocalEndpoint::new(id.clone(), ifname.clone(), first);
        endpoint.addresses = addresses;
        wiring.endpoints.push(endpoint);
        if Some(id.as_str()) == ingress_id || is_ingress(network) {
            wiring.ingress_if = Some(ifname);
        } else {
            wiring.networks.push(id.clone());
        }
    }
    Ok(wiring)
}

/// A network's DNS records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NetworkRecords {
    /// Services by ID.
    pub(crate) services: BTreeMap<String, ServiceRecord>,
    /// Tasks by ID.
    pub(crate) tasks: BTreeMap<String, TaskRecord>,
}

/// DNS records per network of the view (ingress has none: nothing resolves there).
pub(crate) fn dns_records(view: &NetworkView) -> BTreeMap<String, NetworkRecords> {
    let mut out: BTreeMap<String, NetworkRecords> = BTreeMap::new();
    let ingress: BTreeSet<&str> = view.networks.values().filter(|n| is_ingress(n)).map(|n| n.id.as_str()).collect();
    for service in view.services.values() {
        if ingress.contains(service.network_id.as_str()) || service.name.is_empty() {
            continue;
        }
        let endpoint = if service.mode == v1::endpoint_spec::Mode::Dnsrr as i32 {
            Endpoint::DnsRr
        } else {
            match parse_addr(&service.vip) {
                Some(vip) => Endpoint::Vip(vec![vip]),
                None => continue,
            }
        };
        let record = ServiceRecord {
            id: service.service_id.clone(),
            name: service.name.clone(),
            aliases: service.aliases.clone(),
            endpoint,
        };
        out.entry(service.network_id.clone()).or_default().services.insert(record.id.clone(), record);
    }
    for peer in view.peers.values() {
        if ingress.contains(peer.network_id.as_str())
            || peer.name.is_empty()
            || peer.id.starts_with(INGRESS_SANDBOX_PEER)
        {
            continue;
        }
        let Some(addr) = parse_addr(&peer.address) else { continue };
        let record = TaskRecord {
            id: peer.id.clone(),
            service_id: (!peer.service_id.is_empty()).then(|| peer.service_id.clone()),
            name: peer.name.clone(),
            hostname: None,
            aliases: peer.aliases.clone(),
            addresses: vec![addr],
            healthy: peer.serving,
        };
        out.entry(peer.network_id.clone()).or_default().tasks.insert(record.id.clone(), record);
    }
    out
}

/// The deltas that take the DNS table from `old` to `new`, per network (each network's batch
/// applies on its own, so that a bad name on one network does not hold up the others).
pub(crate) fn dns_deltas(
    old: &BTreeMap<String, NetworkRecords>,
    new: &BTreeMap<String, NetworkRecords>,
) -> Vec<(String, Vec<Delta>)> {
    let mut out = Vec::new();
    for network in old.keys().filter(|n| !new.contains_key(*n)) {
        out.push((network.clone(), vec![Delta::RemoveNetwork { network: network.clone() }]));
    }
    let empty = NetworkRecords::default();
    for (network, records) in new {
        let before = old.get(network).unwrap_or(&empty);
        let mut deltas = Vec::new();
        for id in before.services.keys().filter(|id| !records.services.contains_key(*id)) {
            deltas.push(Delta::RemoveService { network: network.clone(), service_id: id.clone() });
        }
        for id in before.tasks.keys().filter(|id| !records.tasks.contains_key(*id)) {
            deltas.push(Delta::RemoveTask { network: network.clone(), task_id: id.clone() });
        }
        for (id, service) in &records.services {
            if before.services.get(id) != Some(service) {
                deltas.push(Delta::UpsertService { network: network.clone(), service: service.clone() });
            }
        }
        for (id, task) in &records.tasks {
            if before.tasks.get(id) != Some(task) {
                deltas.push(Delta::UpsertTask { network: network.clone(), task: task.clone() });
            }
        }
        if !deltas.is_empty() {
            out.push((network.clone(), deltas));
        }
    }
    out
}

#[cfg(test)]
mod tests;

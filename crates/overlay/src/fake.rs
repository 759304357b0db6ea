//! An in-memory dataplane that applies operations to an [`Observed`] state, records them and can
//! be told to fail, for tests of the planner and of code that drives this crate.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::dataplane::{ApplyError, Dataplane, ObserveError};
use crate::esp::table_comment;
use crate::model::{Desired, GATEWAY_BRIDGE, MacAddr, Naming, SANDBOX_BRIDGE};
use crate::plan::{ContainerState, LinkState, Observed, Op, Place, SandboxState, VxlanState, masquerade_comment};
use crate::xfrm::{SaId, XfrmError};

/// A simulated kernel. Veth pairs die together, as in the kernel, and deleting a sandbox takes
/// the container ends of its veths with it.
#[derive(Debug, Clone, Default)]
pub struct FakeDataplane {
    /// The simulated state.
    pub state: Observed,
    /// Every operation applied, in order (failed ones included).
    pub log: Vec<Op>,
    /// Fail the operation with this index in [`FakeDataplane::log`] (a crash half-way).
    pub fail_at: Option<usize>,
    /// Container namespaces that do not exist; every other desired one does.
    pub missing_netns: std::collections::BTreeSet<PathBuf>,
    /// A kernel without ESP: adding an SA is refused as such a kernel refuses it.
    pub no_esp: bool,
    peers: BTreeMap<(Place, String), (Place, String)>,
    routes: BTreeMap<PathBuf, String>,
}

impl FakeDataplane {
    /// An empty node.
    pub fn new() -> Self {
        Self::default()
    }

    fn sandbox(&mut self, network: &str, op: &Op) -> Result<&mut SandboxState, ApplyError> {
        self.state.sandboxes.get_mut(network).ok_or_else(|| ApplyError::NotFound {
            op: op.to_string(),
            missing: format!("sandbox of network {network}"),
        })
    }

    fn link(&mut self, place: &Place, name: &str, op: &Op) -> Result<&mut LinkState, ApplyError> {
        let missing = || ApplyError::NotFound { op: op.to_string(), missing: format!("link {name} in {place}") };
        match place {
            Place::Node if name == GATEWAY_BRIDGE => self.state.node.gateway.as_mut().ok_or_else(missing),
            Place::Node => self.state.node.ports.get_mut(name).ok_or_else(missing),
            Place::Sandbox(network) => {
                let sandbox = self.state.sandboxes.get_mut(network).ok_or_else(missing)?;
                if name == SANDBOX_BRIDGE {
                    sandbox.bridge.as_mut().ok_or_else(missing)
                } else if let Some(vxlan) = sandbox.vxlans.get_mut(name) {
                    Ok(&mut vxlan.link)
                } else {
                    sandbox.ports.get_mut(name).ok_or_else(missing)
                }
            }
            Place::Container(netns) => {
                self.state.containers.get_mut(netns).and_then(|c| c.links.get_mut(name)).ok_or_else(missing)
            }
        }
    }

    fn remove_link(&mut self, place: &Place, name: &str) -> bool {
        let removed = match place {
            Place::Node if name == GATEWAY_BRIDGE => self.state.node.gateway.take().is_some(),
            Place::Node => self.state.node.ports.remove(name).is_some() || self.state.node.stray.remove(name),
            Place::Sandbox(network) => self.state.sandboxes.get_mut(network).is_some_and(|s| {
                if name == SANDBOX_BRIDGE {
                    s.bridge.take().is_some()
                } else if s.vxlans.remove(name).is_some() {
                    // FDB and neighbour entries live on the VXLAN device and go with it.
                    s.fdb.clear();
                    s.neighbours.clear();
                    true
                } else {
                    s.ports.remove(name).is_some()
                }
            }),
            Place::Container(netns) => {
                let removed = self.state.containers.get_mut(netns).is_some_and(|c| c.links.remove(name).is_some());
                if self.routes.get(netns).is_some_and(|dev| dev == name) {
                    self.routes.remove(netns);
                    if let Some(c) = self.state.containers.get_mut(netns) {
                        c.default_route = None;
                    }
                }
                removed
            }
        };
        if let Some(peer) = self.peers.remove(&(place.clone(), name.to_owned())) {
            self.peers.remove(&peer);
            self.remove_link(&peer.0, &peer.1);
        }
        removed
    }

    fn add_pair(&mut self, a: (Place, String), a_link: LinkState, b: (Place, String), b_link: LinkState) {
        self.put_link(&a, a_link);
        self.put_link(&b, b_link);
        self.peers.insert(a.clone(), b.clone());
        self.peers.insert(b, a);
    }

    fn put_link(&mut self, (place, name): &(Place, String), link: LinkState) {
        match place {
            Place::Node => {
                self.state.node.ports.insert(name.clone(), link);
            }
            Place::Sandbox(network) => {
                self.state.sandboxes.entry(network.clone()).or_default().ports.insert(name.clone(), link);
            }
            Place::Container(netns) => {
                self.state.containers.entry(netns.clone()).or_default().links.insert(name.clone(), link);
            }
        }
    }
}

fn up(mtu: u32, mac: Option<MacAddr>, controller: Option<&str>) -> LinkState {
    LinkState { mtu, up: true, mac, controller: controller.map(str::to_owned), ..LinkState::default() }
}

impl Dataplane for FakeDataplane {
    fn observe(&mut self, desired: &Desired, naming: &Naming) -> Result<Observed, ObserveError> {
        let _ = naming;
        let mut observed = self.state.clone();
        observed.containers.retain(|netns, _| desired.containers.iter().any(|c| c.netns == *netns));
        for container in &desired.containers {
            if self.missing_netns.contains(&container.netns) {
                observed.containers.remove(&container.netns);
            } else {
                observed.containers.entry(container.netns.clone()).or_default();
            }
        }
        Ok(observed)
    }

    fn apply(&mut self, op: &Op, _naming: &Naming) -> Result<(), ApplyError> {
        self.log.push(op.clone());
        if self.fail_at == Some(self.log.len() - 1) {
            return Err(ApplyError::Injected { op: op.to_string() });
        }
        match op {
            Op::DeleteSandbox { network } => {
                let place = Place::Sandbox(network.clone());
                let names: Vec<String> = self
                    .state
                    .sandboxes
                    .get(network)
                    .map_or_else(Vec::new, |s| s.ports.keys().chain(s.vxlans.keys()).cloned().collect());
                for name in names {
                    self.remove_link(&place, &name);
                }
                self.state.sandboxes.remove(network);
            }
            Op::CreateSandbox { network } => {
                self.state.sandboxes.insert(network.clone(), SandboxState::default());
            }
            Op::CreateBridge { network, mtu, addresses } => {
                let mut bridge = up(*mtu, Some(MacAddr([2, 0, 0, 0, 0, 1])), None);
                bridge.addresses = addresses.iter().copied().collect();
                self.sandbox(network, op)?.bridge = Some(bridge);
            }
            Op::CreateVxlan { network, name, vni, port, mtu } => {
                let link = up(*mtu, Some(MacAddr([2, 0, 0, 0, 0, 2])), Some(SANDBOX_BRIDGE));
                let vxlan = VxlanState { link, vni: *vni, port: *port, learning: false, proxy: true };
                self.sandbox(network, op)?.vxlans.insert(name.clone(), vxlan);
            }
            Op::ConfigureLink { place, name, mtu, controller, add, remove } => {
                let link = self.link(place, name, op)?;
                link.mtu = *mtu;
                link.up = true;
                if controller.is_some() {
                    link.controller.clone_from(controller);
                }
                link.addresses.extend(add.iter().copied());
                for cidr in remove {
                    link.addresses.remove(cidr);
                }
            }
            Op::DeleteLink { place, name } => {
                // As in the kernel dataplane, a link already gone (a veth whose peer was deleted)
                // is what was asked for.
                self.remove_link(place, name);
            }
            Op::CreateEndpoint { network, netns, port, ifname, mac, addresses, mtu, .. } => {
                self.sandbox(network, op)?;
                let mut inner = up(*mtu, Some(*mac), None);
                inner.addresses = addresses.iter().copied().collect();
                let outer = up(*mtu, Some(MacAddr([2, 0, 0, 0, 0, 3])), Some(SANDBOX_BRIDGE));
                self.add_pair(
                    (Place::Sandbox(network.clone()), port.clone()),
                    outer,
                    (Place::Container(netns.clone()), ifname.clone()),
                    inner,
                );
            }
            Op::SetFdb { network, mac, node, .. } => {
                self.sandbox(network, op)?.fdb.insert(*mac, *node);
            }
            Op::DeleteFdb { network, mac, .. } => {
                self.sandbox(network, op)?.fdb.remove(mac);
            }
            Op::SetNeighbour { network, address, mac, .. } => {
                self.sandbox(network, op)?.neighbours.insert(*address, *mac);
            }
            Op::DeleteNeighbour { network, address, .. } => {
                self.sandbox(network, op)?.neighbours.remove(address);
            }
            Op::CreateGatewayBridge { address, mtu } => {
                let mut bridge = up(*mtu, Some(MacAddr([2, 0, 0, 0, 0, 4])), None);
                bridge.addresses.insert(*address);
                self.state.node.gateway = Some(bridge);
            }
            Op::EnableForwarding => self.state.node.forwarding = true,
            Op::SetMasquerade { subnet, bridge } => {
                self.state.node.masquerade = Some(masquerade_comment(*subnet, bridge));
            }
            Op::DeleteMasquerade => self.state.node.masquerade = None,
            Op::CreateEgress { netns, port, ifname, mac, address, mtu, .. } => {
                let mut inner = up(*mtu, Some(*mac), None);
                inner.addresses.insert(*address);
                let mut outer = up(*mtu, Some(MacAddr([2, 0, 0, 0, 0, 5])), Some(GATEWAY_BRIDGE));
                outer.isolated = true;
                self.add_pair(
                    (Place::Node, port.clone()),
                    outer,
                    (Place::Container(netns.clone()), ifname.clone()),
                    inner,
                );
            }
            Op::SetEspTable { rules } => self.state.node.esp.table = Some(table_comment(rules)),
            Op::DeleteEspTable => self.state.node.esp.table = None,
            Op::AddSa { sa } => {
                if self.no_esp {
                    let errno = nix::errno::Errno::ENOENT as i32;
                    let source = XfrmError::Refused { op: format!("add SA {} -> {}", sa.src, sa.dst), errno };
                    return Err(ApplyError::Xfrm { op: op.to_string(), source });
                }
                self.state.node.esp.sas.insert(SaId { src: sa.src, dst: sa.dst, spi: sa.spi });
            }
            Op::DeleteSa { id } => {
                self.state.node.esp.sas.remove(id);
            }
            Op::SetPolicy { policy, .. } => {
                let policies = &mut self.state.node.esp.policies;
                policies.retain(|p| (p.src, p.dst, p.dport) != (policy.src, policy.dst, policy.dport));
                policies.push(*policy);
            }
            Op::DeletePolicy { policy } => {
                let policies = &mut self.state.node.esp.policies;
                policies.retain(|p| (p.src, p.dst, p.dport) != (policy.src, policy.dst, policy.dport));
            }
            Op::SetDefaultRoute { netns, ifname, via } => {
                let container: &mut ContainerState = self.state.containers.entry(netns.clone()).or_default();
                if !container.links.contains_key(ifname) {
                    return Err(ApplyError::NotFound {
                        op: op.to_string(),
                        missing: format!("link {ifname} in {}", netns.display()),
                    });
                }
                container.default_route = Some(*via);
                self.routes.insert(netns.clone(), ifname.clone());
            }
        }
        Ok(())
    }
}

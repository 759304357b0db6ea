//! The real dataplane: rtnetlink for links, addresses, routes, FDB and neighbour entries, named
//! namespaces for sandboxes, nftables for masquerade.
//!
//! A netlink socket belongs to the namespace of the thread that opened it, so each namespace's
//! socket is opened on a short-lived thread that entered it ([`netns::run_in`]) and is then driven
//! by one current-thread runtime owned by [`Kernel`]. Sockets into container namespaces are closed
//! after each operation; the rest at the end of each pass, so that a sandbox namespace is never
//! kept alive by this process after it has been deleted.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use futures::TryStreamExt as _;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};

use crate::dataplane::{ApplyError, Dataplane, ObserveError, nft_stderr};
use crate::esp::EspState;
use crate::model::{Cidr, Desired, GATEWAY_BRIDGE, MacAddr, Naming, SANDBOX_BRIDGE};
use crate::netns;
use crate::nft;
use crate::plan::{ContainerState, LinkState, NodeState, Observed, Op, Place, SandboxState, VxlanState};
use crate::xfrm::{XfrmError, XfrmSocket};
use nftables::helper::NftablesError;

const ENOENT: i32 = 2;
const EPROTONOSUPPORT: i32 = 93;
const ENODEV: i32 = 19;
/// Node ends of egress veths (see `model::egress_port`).
const EGRESS_PREFIX: &str = "shl-eg";

/// Where [`Kernel`] works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelConfig {
    /// The node namespace (where the underlay is, the VXLAN sockets live and the gateway bridge
    /// goes). `None`: the namespace of the thread that calls [`Kernel`].
    pub node_netns: Option<PathBuf>,
    /// Directory of named namespaces; sandboxes are bind mounts in it.
    pub netns_dir: PathBuf,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self { node_netns: None, netns_dir: PathBuf::from("/run/netns") }
    }
}

/// [`Kernel`] could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The runtime that drives netlink sockets could not be built.
    #[error("build the netlink runtime: {0}")]
    Runtime(#[source] io::Error),
}

struct Conn {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
}

/// The netlink/nftables dataplane. Blocking: call it from a thread that may block (in async code,
/// through `spawn_blocking`).
pub struct Kernel {
    config: KernelConfig,
    rt: tokio::runtime::Runtime,
    conns: HashMap<Option<PathBuf>, Conn>,
    /// The node namespace's xfrm socket, open for one pass.
    xfrm: Option<XfrmSocket>,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel").field("config", &self.config).field("open_sockets", &self.conns.len()).finish()
    }
}

impl Kernel {
    /// A dataplane working in the namespaces `config` names.
    pub fn new(config: KernelConfig) -> Result<Self, KernelError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(KernelError::Runtime)?;
        Ok(Self { config, rt, conns: HashMap::new(), xfrm: None })
    }

    /// The configuration.
    pub fn config(&self) -> &KernelConfig {
        &self.config
    }

    fn sandbox_path(&self, naming: &Naming, network: &str) -> PathBuf {
        self.config.netns_dir.join(naming.sandbox(network))
    }

    fn place_path(&self, naming: &Naming, place: &Place) -> Option<PathBuf> {
        match place {
            Place::Node => self.config.node_netns.clone(),
            Place::Sandbox(network) => Some(self.sandbox_path(naming, network)),
            Place::Container(path) => Some(path.clone()),
        }
    }

    fn conn(&mut self, netns: Option<&Path>) -> io::Result<Handle> {
        let key = netns.map(Path::to_path_buf);
        if let Some(conn) = self.conns.get(&key) {
            return Ok(conn.handle.clone());
        }
        let rt = self.rt.handle().clone();
        let (connection, handle) = netns::run_in(netns, move || {
            let _entered = rt.enter();
            rtnetlink::new_connection().map(|(connection, handle, _)| (connection, handle))
        })??;
        let task = self.rt.spawn(connection);
        self.conns.insert(key, Conn { handle: handle.clone(), task });
        Ok(handle)
    }

    fn close(&mut self, netns: Option<&Path>) {
        if let Some(conn) = self.conns.remove(&netns.map(Path::to_path_buf)) {
            drop(conn.handle);
            conn.task.abort();
            // The socket closes when the aborted task is dropped, which happens inside the runtime.
            let _ = self.rt.block_on(conn.task);
        }
    }

    fn node(&self) -> Option<PathBuf> {
        self.config.node_netns.clone()
    }

    /// The xfrm socket of the node namespace, opened on first use in a pass.
    fn xfrm(&mut self) -> Result<&mut XfrmSocket, XfrmError> {
        let socket = match self.xfrm.take() {
            Some(socket) => socket,
            None => netns::run_in(self.node().as_deref(), XfrmSocket::open)??,
        };
        Ok(self.xfrm.insert(socket))
    }

    /// Whether the node namespace's kernel can make ESP SAs with AES-GCM (what encrypted networks
    /// need): probed with a throw-away SA, which is deleted at once.
    pub fn esp_available(&mut self) -> Result<bool, XfrmError> {
        let probed = self.xfrm().and_then(XfrmSocket::probe_esp);
        self.xfrm = None;
        probed
    }

    /// Shoal's SAs and policies, and the ESP marking table, in the node namespace. A kernel
    /// without `NETLINK_XFRM` has none of them.
    fn observe_esp(&mut self, naming: &Naming, what: &str) -> Result<EspState, ObserveError> {
        let name = naming.esp_table.clone();
        let table = netns::run_in(self.node().as_deref(), move || nft::observe_text(&name))
            .map_err(|source| ObserveError::Io { what: format!("nftables in {what}"), source })?
            .map_err(|detail| ObserveError::NftText {
                what: format!("nftables table ip {} in {what}", naming.esp_table),
                detail,
            })?;
        let xfrm_err = |source| ObserveError::Xfrm { what: format!("ESP SAs and policies in {what}"), source };
        let socket = match self.xfrm() {
            Ok(socket) => socket,
            Err(XfrmError::Io(err)) if err.raw_os_error() == Some(EPROTONOSUPPORT) => {
                return Ok(EspState { table, ..EspState::default() });
            }
            Err(err) => return Err(xfrm_err(err)),
        };
        let sas = socket.sas().map_err(xfrm_err)?.into_iter().collect();
        let policies = socket.policies().map_err(xfrm_err)?;
        Ok(EspState { sas, policies, table })
    }

    fn observe_inner(&mut self, desired: &Desired, naming: &Naming) -> Result<Observed, ObserveError> {
        let mut observed = Observed::default();
        let io_err = |what: String| move |source| ObserveError::Io { what, source };
        let sandboxes = netns::list_named(&self.config.netns_dir, &naming.netns_prefix)
            .map_err(io_err(format!("sandboxes in {}", self.config.netns_dir.display())))?;
        for (network, path) in sandboxes {
            let what = format!("sandbox of network {network} ({})", path.display());
            let Ok(handle) = self.conn(Some(&path)) else {
                // A file that is not a namespace: a crash between creating it and mounting on it.
                tracing::warn!(network = %network, netns = %path.display(), "sandbox cannot be entered; remaking it");
                observed.sandboxes.insert(network, SandboxState { broken: true, ..SandboxState::default() });
                continue;
            };
            let sandbox = self
                .rt
                .block_on(observe_sandbox(&handle))
                .map_err(|source| ObserveError::Netlink { what: what.clone(), source })?;
            observed.sandboxes.insert(network, sandbox);
        }
        for container in &desired.containers {
            let path = container.netns.as_path();
            if !path.exists() {
                continue;
            }
            let what = format!("container {} namespace {}", container.id, path.display());
            let handle = self.conn(Some(path)).map_err(io_err(what.clone()))?;
            let state = self.rt.block_on(observe_container(&handle));
            self.close(Some(path));
            let state = state.map_err(|source| ObserveError::Netlink { what, source })?;
            observed.containers.insert(container.netns.clone(), state);
        }
        let node = self.node();
        let what = match &node {
            Some(path) => format!("node namespace {}", path.display()),
            None => "node namespace".to_owned(),
        };
        let handle = self.conn(node.as_deref()).map_err(io_err(what.clone()))?;
        let mut state = self
            .rt
            .block_on(observe_node(&handle))
            .map_err(|source| ObserveError::Netlink { what: what.clone(), source })?;
        state.forwarding = netns::run_in(node.as_deref(), || std::fs::read_to_string(FORWARDING))
            .and_then(|read| read)
            .map_err(io_err(format!("{FORWARDING} in {what}")))?
            .trim()
            == "1";
        state.masquerade = observe_table(node.as_deref(), &naming.nft_table, &what)?;
        state.esp = self.observe_esp(naming, &what)?;
        observed.node = state;
        Ok(observed)
    }

    fn apply_inner(&mut self, op: &Op, naming: &Naming) -> Result<(), ApplyError> {
        let result = match op {
            Op::DeleteSandbox { network } => self.delete_sandbox(&self.sandbox_path(naming, network)),
            Op::CreateSandbox { network } => self.create_sandbox(&self.sandbox_path(naming, network)),
            Op::CreateBridge { network, mtu, addresses } => {
                let path = self.sandbox_path(naming, network);
                self.create_bridge(Some(&path), SANDBOX_BRIDGE, *mtu, addresses)
            }
            Op::CreateVxlan { network, name, vni, port, mtu } => {
                self.create_vxlan(&self.sandbox_path(naming, network), name, *vni, *port, *mtu)
            }
            Op::ConfigureLink { place, name, mtu, controller, add, remove } => {
                let path = self.place_path(naming, place);
                let result = self.configure_link(path.as_deref(), name, *mtu, controller.as_deref(), add, remove);
                self.close_container(place);
                result
            }
            Op::DeleteLink { place, name } => {
                let path = self.place_path(naming, place);
                let result = self.delete_link(path.as_deref(), name);
                self.close_container(place);
                result
            }
            Op::CreateEndpoint { network, netns, port, ifname, mac, addresses, mtu, .. } => {
                let veth = Veth { port, ifname, mac: *mac, mtu: *mtu, container: netns };
                self.create_veth(Some(&self.sandbox_path(naming, network)), SANDBOX_BRIDGE, &veth, false, addresses)
            }
            Op::CreateEgress { netns, port, ifname, mac, address, mtu, .. } => {
                let veth = Veth { port, ifname, mac: *mac, mtu: *mtu, container: netns };
                let node = self.node();
                self.create_veth(node.as_deref(), GATEWAY_BRIDGE, &veth, true, std::slice::from_ref(address))
            }
            Op::SetFdb { network, vxlan, mac, node } => {
                self.neighbour(&self.sandbox_path(naming, network), vxlan, Neighbour::SetFdb(*mac, *node))
            }
            Op::DeleteFdb { network, vxlan, mac, node } => {
                self.neighbour(&self.sandbox_path(naming, network), vxlan, Neighbour::DeleteFdb(*mac, *node))
            }
            Op::SetNeighbour { network, vxlan, address, mac } => {
                self.neighbour(&self.sandbox_path(naming, network), vxlan, Neighbour::Set(*address, *mac))
            }
            Op::DeleteNeighbour { network, vxlan, address } => {
                self.neighbour(&self.sandbox_path(naming, network), vxlan, Neighbour::Delete(*address))
            }
            Op::CreateGatewayBridge { address, mtu } => {
                let node = self.node();
                self.create_bridge(node.as_deref(), GATEWAY_BRIDGE, *mtu, std::slice::from_ref(address))
            }
            Op::EnableForwarding => netns::run_in(self.node().as_deref(), || std::fs::write(FORWARDING, "1"))
                .and_then(|written| written)
                .map_err(io_step(format!("write {FORWARDING} in the node namespace"))),
            Op::SetMasquerade { subnet, bridge } => {
                let (table, subnet, bridge) = (naming.nft_table.clone(), *subnet, bridge.clone());
                let comment = crate::plan::masquerade_comment(subnet, &bridge);
                netns::run_in(self.node().as_deref(), move || nft::set(&table, subnet, &bridge, &comment))
                    .map_err(io_step("enter the node namespace"))
                    .and_then(|applied| applied.map_err(Step::Nft))
            }
            Op::DeleteMasquerade => {
                let table = naming.nft_table.clone();
                netns::run_in(self.node().as_deref(), move || nft::delete(&table))
                    .map_err(io_step("enter the node namespace"))
                    .and_then(|applied| applied.map_err(Step::Nft))
            }
            Op::SetEspTable { rules } => {
                let script = crate::esp::table_script(&naming.esp_table, rules);
                netns::run_in(self.node().as_deref(), move || nft_script(&script))
                    .map_err(io_step("enter the node namespace"))
                    .and_then(|applied| applied.map_err(Step::Script))
            }
            Op::DeleteEspTable => {
                let table = naming.esp_table.clone();
                netns::run_in(self.node().as_deref(), move || nft::delete(&table))
                    .map_err(io_step("enter the node namespace"))
                    .and_then(|applied| applied.map_err(Step::Nft))
            }
            Op::AddSa { sa } => self.xfrm().and_then(|x| x.add_sa(sa)).map_err(Step::Xfrm),
            Op::DeleteSa { id } => self.xfrm().and_then(|x| x.delete_sa(*id)).map_err(Step::Xfrm),
            Op::SetPolicy { policy, update } => {
                self.xfrm().and_then(|x| x.set_policy(policy, *update)).map_err(Step::Xfrm)
            }
            Op::DeletePolicy { policy } => self.xfrm().and_then(|x| x.delete_policy(policy)).map_err(Step::Xfrm),
            Op::SetDefaultRoute { netns, ifname, via } => {
                let result = self.set_default_route(netns, ifname, *via);
                self.close(Some(netns));
                result
            }
        };
        result.map_err(|step| step.into_apply(op))
    }

    /// A socket into `netns`, as a step of an operation.
    fn enter(&mut self, netns: Option<&Path>) -> Result<Handle, Step> {
        self.conn(netns).map_err(io_step(format!("enter {}", describe(netns))))
    }

    fn delete_sandbox(&mut self, path: &Path) -> Result<(), Step> {
        // A sandbox that cannot be entered has no links to delete first.
        if let Ok(handle) = self.conn(Some(path)) {
            let deleted = self.rt.block_on(delete_all_links(&handle));
            self.close(Some(path));
            deleted.map_err(nl_step(format!("delete links in {}", path.display())))?;
        }
        netns::delete_named(path).map_err(io_step(format!("delete namespace {}", path.display())))
    }

    fn create_sandbox(&mut self, path: &Path) -> Result<(), Step> {
        netns::create_named(path).map_err(io_step(format!("create namespace {}", path.display())))?;
        let handle = self.enter(Some(path))?;
        self.rt.block_on(set_up(&handle, "lo")).map_err(nl_step(format!("bring up lo in {}", path.display())))
    }

    fn create_bridge(&mut self, netns: Option<&Path>, name: &str, mtu: u32, addresses: &[Cidr]) -> Result<(), Step> {
        let handle = self.enter(netns)?;
        let at = describe(netns);
        self.rt.block_on(async {
            let message = LinkBridge::new(name).mtu(mtu).build();
            handle.link().add(message).execute().await.map_err(nl_step(format!("add bridge {name} in {at}")))?;
            let index = find(&handle, name, &at).await?;
            for cidr in addresses {
                add_address(&handle, index, *cidr).await.map_err(nl_step(format!("add {cidr} to {name} in {at}")))?;
            }
            Ok(())
        })
    }

    /// Makes the VXLAN device in the node namespace, where its UDP socket must live, then moves
    /// it into the sandbox and puts it on the bridge.
    fn create_vxlan(&mut self, sandbox: &Path, name: &str, vni: u32, port: u16, mtu: u32) -> Result<(), Step> {
        let node = self.node();
        let node_handle = self.enter(node.as_deref())?;
        let handle = self.enter(Some(sandbox))?;
        let file = File::open(sandbox).map_err(io_step(format!("open {}", sandbox.display())))?;
        let (at_node, at) = (describe(node.as_deref()), describe(Some(sandbox)));
        self.rt.block_on(async {
            // A crash between creating and moving leaves the device in the node namespace.
            if let Some(stale) =
                index_of(&node_handle, name).await.map_err(nl_step(format!("find {name} in {at_node}")))?
            {
                let deleted = node_handle.link().del(stale).execute().await;
                deleted.map_err(nl_step(format!("delete leftover {name} in {at_node}")))?;
            }
            let message = LinkVxlan::new(name, vni).port(port).learning(false).proxy(true).mtu(mtu).build();
            node_handle.link().add(message).execute().await.map_err(nl_step(format!("add {name} in {at_node}")))?;
            let index = find(&node_handle, name, &at_node).await?;
            let moved = LinkUnspec::new_with_index(index).setns_by_fd(file.as_raw_fd()).build();
            if let Err(err) = node_handle.link().set(moved).execute().await {
                let _ = node_handle.link().del(index).execute().await;
                return Err(nl_step(format!("move {name} into {at}"))(err));
            }
            attach(&handle, name, SANDBOX_BRIDGE, mtu, &at).await
        })
    }

    fn configure_link(
        &mut self,
        netns: Option<&Path>,
        name: &str,
        mtu: u32,
        controller: Option<&str>,
        add: &[Cidr],
        remove: &[Cidr],
    ) -> Result<(), Step> {
        let handle = self.enter(netns)?;
        let at = describe(netns);
        self.rt.block_on(async {
            let index = find(&handle, name, &at).await?;
            let mut message = LinkUnspec::new_with_index(index).mtu(mtu).up();
            if let Some(controller) = controller {
                message = message.controller(find(&handle, controller, &at).await?);
            }
            handle.link().set(message.build()).execute().await.map_err(nl_step(format!("set {name} in {at}")))?;
            for cidr in add {
                add_address(&handle, index, *cidr).await.map_err(nl_step(format!("add {cidr} to {name} in {at}")))?;
            }
            for cidr in remove {
                let removed = del_address(&handle, index, *cidr).await;
                removed.map_err(nl_step(format!("remove {cidr} from {name} in {at}")))?;
            }
            Ok(())
        })
    }

    fn delete_link(&mut self, netns: Option<&Path>, name: &str) -> Result<(), Step> {
        if netns.is_some_and(|p| !p.exists()) {
            return Ok(());
        }
        let handle = self.enter(netns)?;
        let at = describe(netns);
        self.rt.block_on(async {
            // Already gone (a veth whose peer was deleted) is what was asked for.
            if let Some(index) = index_of(&handle, name).await.map_err(nl_step(format!("find {name} in {at}")))? {
                let deleted = ignore_missing(handle.link().del(index).execute().await);
                deleted.map_err(nl_step(format!("delete {name} in {at}")))?;
            }
            Ok(())
        })
    }

    /// A veth whose `port` end goes on `bridge` here and whose other end is made directly inside
    /// the container with its name, MAC, MTU and `addresses`.
    fn create_veth(
        &mut self,
        netns: Option<&Path>,
        bridge: &str,
        veth: &Veth<'_>,
        isolated: bool,
        addresses: &[Cidr],
    ) -> Result<(), Step> {
        let handle = self.enter(netns)?;
        let at = describe(netns);
        let container = File::open(veth.container)
            .map_err(io_step(format!("open container namespace {}", veth.container.display())))?;
        let peer = LinkUnspec::new_with_name(veth.ifname)
            .address(veth.mac.0.to_vec())
            .mtu(veth.mtu)
            .setns_by_fd(container.as_raw_fd())
            .build();
        let message = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(veth.port)
            .mtu(veth.mtu)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        let port = veth.port;
        self.rt.block_on(async {
            handle.link().add(message).execute().await.map_err(nl_step(format!("add veth {port} in {at}")))?;
            attach(&handle, port, bridge, veth.mtu, &at).await?;
            if isolated {
                let index = find(&handle, port, &at).await?;
                let message = LinkBridgePort::new(index).isolated(true).build();
                let set = handle.link().set_port(message).execute().await;
                set.map_err(nl_step(format!("isolate bridge port {port} in {at}")))?;
            }
            Ok(())
        })?;
        // The namespace file had to stay open until the kernel had made the peer in it.
        drop(container);
        let result = self.configure_inner(veth.container, veth.ifname, addresses);
        self.close(Some(veth.container));
        result
    }

    /// Addresses and up for the container end of a new veth, then loopback up.
    fn configure_inner(&mut self, container: &Path, ifname: &str, addresses: &[Cidr]) -> Result<(), Step> {
        let handle = self.enter(Some(container))?;
        let at = describe(Some(container));
        self.rt.block_on(async {
            let index = find(&handle, ifname, &at).await?;
            for cidr in addresses {
                add_address(&handle, index, *cidr).await.map_err(nl_step(format!("add {cidr} to {ifname} in {at}")))?;
            }
            let up = LinkUnspec::new_with_index(index).up().build();
            handle.link().set(up).execute().await.map_err(nl_step(format!("bring up {ifname} in {at}")))?;
            set_up(&handle, "lo").await.map_err(nl_step(format!("bring up lo in {at}")))
        })
    }

    fn neighbour(&mut self, sandbox: &Path, vxlan: &str, change: Neighbour) -> Result<(), Step> {
        let handle = self.enter(Some(sandbox))?;
        let at = describe(Some(sandbox));
        self.rt.block_on(async {
            let index = find(&handle, vxlan, &at).await?;
            let neighbours = handle.neighbours();
            let (result, what) = match change {
                Neighbour::SetFdb(mac, node) => {
                    let request = neighbours.add_bridge(index, &mac.0).destination(node).flags(NeighbourFlags::Own);
                    (request.state(NeighbourState::Permanent).replace().execute().await, "bridge fdb replace")
                }
                Neighbour::DeleteFdb(mac, node) => {
                    let mut message = NeighbourMessage::default();
                    message.header.family = AddressFamily::Bridge;
                    message.header.ifindex = index;
                    message.header.flags = NeighbourFlags::Own;
                    message.header.state = NeighbourState::Permanent;
                    message.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
                    message.attributes.push(NeighbourAttribute::Destination(neighbour_address(node)));
                    (ignore_missing(neighbours.del(message).execute().await), "bridge fdb del")
                }
                Neighbour::Set(address, mac) => {
                    let request = neighbours.add(index, address).link_layer_address(&mac.0);
                    (request.state(NeighbourState::Permanent).replace().execute().await, "neighbour replace")
                }
                Neighbour::Delete(address) => {
                    let mut message = NeighbourMessage::default();
                    message.header.family = family(address);
                    message.header.ifindex = index;
                    message.attributes.push(NeighbourAttribute::Destination(neighbour_address(address)));
                    (ignore_missing(neighbours.del(message).execute().await), "neighbour del")
                }
            };
            result.map_err(nl_step(format!("{what} on {vxlan} in {at}")))
        })
    }

    fn set_default_route(&mut self, container: &Path, ifname: &str, via: IpAddr) -> Result<(), Step> {
        let handle = self.enter(Some(container))?;
        let at = describe(Some(container));
        self.rt.block_on(async {
            let index = find(&handle, ifname, &at).await?;
            let message = match via {
                IpAddr::V4(v4) => RouteMessageBuilder::<Ipv4Addr>::new().gateway(v4).output_interface(index).build(),
                IpAddr::V6(v6) => RouteMessageBuilder::<Ipv6Addr>::new().gateway(v6).output_interface(index).build(),
            };
            let replaced = handle.route().add(message).replace().execute().await;
            replaced.map_err(nl_step(format!("replace default route via {via} dev {ifname} in {at}")))
        })
    }

    fn close_container(&mut self, place: &Place) {
        if let Place::Container(path) = place {
            self.close(Some(path));
        }
    }
}

const FORWARDING: &str = "/proc/sys/net/ipv4/ip_forward";

/// The two ends of a container's veth.
struct Veth<'a> {
    port: &'a str,
    ifname: &'a str,
    mac: MacAddr,
    mtu: u32,
    container: &'a Path,
}

/// A change to one FDB or neighbour entry of a VXLAN device.
enum Neighbour {
    SetFdb(MacAddr, IpAddr),
    DeleteFdb(MacAddr, IpAddr),
    Set(IpAddr, MacAddr),
    Delete(IpAddr),
}

/// The step of an operation that failed, named with its namespace and device; the operation's
/// own description is added when it becomes an [`ApplyError`].
enum Step {
    Netlink(String, rtnetlink::Error),
    Io(String, io::Error),
    Missing(String),
    Nft(NftablesError),
    Xfrm(XfrmError),
    Script(String),
}

impl Step {
    fn into_apply(self, op: &Op) -> ApplyError {
        let op = op.to_string();
        match self {
            Self::Netlink(step, source) => ApplyError::Netlink { op, step, source },
            Self::Io(step, source) => ApplyError::Io { op, step, source },
            Self::Missing(missing) => ApplyError::NotFound { op, missing },
            Self::Nft(source) => ApplyError::Nft { op, stderr: nft_stderr(&source), source: Box::new(source) },
            Self::Xfrm(source) => ApplyError::Xfrm { op, source },
            Self::Script(detail) => ApplyError::NftScript { op, detail },
        }
    }
}

/// The comment of the first rule of nftables table `name` (family `ip`) in `netns`, or `None`
/// when the table is absent; `what` names the namespace.
fn observe_table(netns: Option<&Path>, name: &str, what: &str) -> Result<Option<String>, ObserveError> {
    let table = name.to_owned();
    let listed = netns::run_in(netns, move || nft::observe(&table))
        .map_err(|source| ObserveError::Io { what: format!("nftables in {what}"), source })?;
    match listed {
        Ok(comment) => Ok(comment),
        // Without `nft` there cannot be a table of ours; applying one will say what is missing.
        Err(NftablesError::NftExecution { inner, .. }) if inner.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ObserveError::Nft {
            what: format!("nftables table ip {name} in {what}"),
            stderr: nft_stderr(&source),
            source: Box::new(source),
        }),
    }
}

/// Runs `nft -f -` with `script` in the calling thread's namespace.
fn nft_script(script: &str) -> Result<(), String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|err| format!("run nft: {err} (install nftables)"))?;
    let written = child.stdin.take().map(|mut stdin| stdin.write_all(script.as_bytes()));
    let output = child.wait_with_output().map_err(|err| format!("wait for nft: {err}"))?;
    if let Some(Err(err)) = written {
        return Err(format!("write the rules to nft: {err}"));
    }
    if !output.status.success() {
        return Err(format!(
            "nft -f refused the rules ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

fn nl_step(step: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Step {
    let step = step.into();
    move |source| Step::Netlink(step, source)
}

fn io_step(step: impl Into<String>) -> impl FnOnce(io::Error) -> Step {
    let step = step.into();
    move |source| Step::Io(step, source)
}

/// How messages name a namespace.
fn describe(netns: Option<&Path>) -> String {
    match netns {
        Some(path) => format!("namespace {}", path.display()),
        None => "the node namespace".to_owned(),
    }
}

/// The index of link `name` in the namespace `at`, which must have it.
async fn find(handle: &Handle, name: &str, at: &str) -> Result<u32, Step> {
    index_of(handle, name)
        .await
        .map_err(nl_step(format!("find {name} in {at}")))?
        .ok_or_else(|| Step::Missing(format!("{name} in {at}")))
}

/// Puts `link` on `bridge`, sets its MTU and brings it up.
async fn attach(handle: &Handle, link: &str, bridge: &str, mtu: u32, at: &str) -> Result<(), Step> {
    let index = find(handle, link, at).await?;
    let controller = find(handle, bridge, at).await?;
    let message = LinkUnspec::new_with_index(index).controller(controller).mtu(mtu).up().build();
    handle.link().set(message).execute().await.map_err(nl_step(format!("attach {link} to {bridge} in {at}")))
}

fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

fn ignore_missing(result: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match result {
        Err(err) if matches!(errno(&err), Some(ENOENT | ENODEV)) => Ok(()),
        other => other,
    }
}

/// The index of link `name`, `None` when there is none.
async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>, rtnetlink::Error> {
    match handle.link().get().match_name(name.to_owned()).execute().try_next().await {
        Ok(found) => Ok(found.map(|m| m.header.index)),
        Err(err) if matches!(errno(&err), Some(ENODEV | ENOENT)) => Ok(None),
        Err(err) => Err(err),
    }
}

async fn set_up(handle: &Handle, name: &str) -> Result<(), rtnetlink::Error> {
    if let Some(index) = index_of(handle, name).await? {
        handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await?;
    }
    Ok(())
}

async fn add_address(handle: &Handle, index: u32, cidr: Cidr) -> Result<(), rtnetlink::Error> {
    let mut request = handle.address().add(index, cidr.addr, cidr.prefix_len).replace();
    if cidr.addr.is_ipv6() {
        // No duplicate address detection: the address is assigned, and DAD would delay it by seconds.
        request.message_mut().header.flags |= AddressHeaderFlags::Nodad;
    }
    request.execute().await
}

async fn del_address(handle: &Handle, index: u32, cidr: Cidr) -> Result<(), rtnetlink::Error> {
    let mut found = handle.address().get().set_link_index_filter(index).execute();
    while let Some(message) = found.try_next().await? {
        if address_of(&message) == Some(cidr) {
            return ignore_missing(handle.address().del(message).execute().await);
        }
    }
    Ok(())
}

fn address_of(message: &AddressMessage) -> Option<Cidr> {
    let addr = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) if ip.is_ipv4() => Some(*ip),
        _ => None,
    });
    let addr = addr.or_else(|| {
        message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    Cidr::new(addr, message.header.prefix_len)
}

fn is_link_local(cidr: &Cidr) -> bool {
    matches!(cidr.addr, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 }
}

fn neighbour_address(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }
}

/// One link of a dump, with what the planner compares.
struct Link {
    index: u32,
    name: String,
    kind: Option<InfoKind>,
    controller: Option<u32>,
    state: LinkState,
    vxlan: Option<VxlanState>,
}

async fn dump_links(handle: &Handle) -> Result<Vec<Link>, rtnetlink::Error> {
    let mut addresses: HashMap<u32, BTreeSet<Cidr>> = HashMap::new();
    let mut dump = handle.address().get().execute();
    while let Some(message) = dump.try_next().await? {
        if let Some(cidr) = address_of(&message).filter(|c| !is_link_local(c)) {
            addresses.entry(message.header.index).or_default().insert(cidr);
        }
    }
    let mut links = Vec::new();
    let mut dump = handle.link().get().execute();
    while let Some(message) = dump.try_next().await? {
        links.push(parse_link(&message, &mut addresses));
    }
    let names: HashMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
    for link in &mut links {
        link.state.controller = link.controller.and_then(|c| names.get(&c).cloned());
        if let Some(vxlan) = &mut link.vxlan {
            vxlan.link = link.state.clone();
        }
    }
    Ok(links)
}

fn parse_link(message: &LinkMessage, addresses: &mut HashMap<u32, BTreeSet<Cidr>>) -> Link {
    let index = message.header.index;
    let mut link = Link {
        index,
        name: String::new(),
        kind: None,
        controller: None,
        state: LinkState {
            up: message.header.flags.contains(LinkFlags::Up),
            addresses: addresses.remove(&index).unwrap_or_default(),
            ..LinkState::default()
        },
        vxlan: None,
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name.clone_from(name),
            LinkAttribute::Mtu(mtu) => link.state.mtu = *mtu,
            LinkAttribute::Address(mac) => {
                link.state.mac = <[u8; 6]>::try_from(mac.as_slice()).ok().map(MacAddr);
            }
            LinkAttribute::Controller(controller) => link.controller = Some(*controller),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(kind.clone()),
                        LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                            link.state.isolated = port.contains(&InfoBridgePort::Isolated(true));
                        }
                        LinkInfo::Data(InfoData::Vxlan(data)) => {
                            let mut vxlan = VxlanState::default();
                            for item in data {
                                match item {
                                    InfoVxlan::Id(vni) => vxlan.vni = *vni,
                                    InfoVxlan::Port(port) => vxlan.port = *port,
                                    InfoVxlan::Learning(on) => vxlan.learning = *on,
                                    InfoVxlan::Proxy(on) => vxlan.proxy = *on,
                                    _ => {}
                                }
                            }
                            link.vxlan = Some(vxlan);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

async fn observe_sandbox(handle: &Handle) -> Result<SandboxState, rtnetlink::Error> {
    let mut sandbox = SandboxState::default();
    let mut vxlan_indices = BTreeSet::new();
    for link in dump_links(handle).await? {
        if link.name == SANDBOX_BRIDGE {
            sandbox.bridge = Some(link.state);
        } else if let (Some(vxlan), Some(InfoKind::Vxlan)) = (link.vxlan, &link.kind) {
            vxlan_indices.insert(link.index);
            sandbox.vxlans.insert(link.name, vxlan);
        } else if link.name != "lo" {
            sandbox.ports.insert(link.name, link.state);
        }
    }
    if vxlan_indices.is_empty() {
        return Ok(sandbox);
    }
    let mut fdb = handle.neighbours().get().set_address_family(AddressFamily::Bridge).execute();
    while let Some(message) = fdb.try_next().await? {
        // Entries of the VXLAN device itself carry a destination; the bridge's entries for it do not.
        if !vxlan_indices.contains(&message.header.ifindex) {
            continue;
        }
        let (mac, dst) = neighbour_parts(&message);
        if let (Some(mac), Some(dst)) = (mac, dst)
            && !dst.is_unspecified()
        {
            sandbox.fdb.insert(mac, dst);
        }
    }
    let mut neighbours = handle.neighbours().get().execute();
    while let Some(message) = neighbours.try_next().await? {
        if !vxlan_indices.contains(&message.header.ifindex) || message.header.state != NeighbourState::Permanent {
            continue;
        }
        if let (Some(mac), Some(ip)) = neighbour_parts(&message) {
            sandbox.neighbours.insert(ip, mac);
        }
    }
    Ok(sandbox)
}

fn neighbour_parts(message: &NeighbourMessage) -> (Option<MacAddr>, Option<IpAddr>) {
    let mut mac = None;
    let mut ip = None;
    for attribute in &message.attributes {
        match attribute {
            NeighbourAttribute::LinkLayerAddress(bytes) => {
                mac = <[u8; 6]>::try_from(bytes.as_slice()).ok().map(MacAddr);
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => ip = Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => ip = Some(IpAddr::V6(*v6)),
            // FDB entries (family bridge) carry the remote as raw bytes.
            NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
                ip = <[u8; 4]>::try_from(bytes.as_slice())
                    .map(IpAddr::from)
                    .or_else(|_| <[u8; 16]>::try_from(bytes.as_slice()).map(IpAddr::from))
                    .ok();
            }
            _ => {}
        }
    }
    (mac, ip)
}

async fn observe_container(handle: &Handle) -> Result<ContainerState, rtnetlink::Error> {
    let mut state = ContainerState::default();
    for link in dump_links(handle).await? {
        if link.name != "lo" {
            state.links.insert(link.name, link.state);
        }
    }
    let mut routes = handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
    while let Some(route) = routes.try_next().await? {
        if route.header.destination_prefix_length == 0 && is_main_table(&route) {
            state.default_route = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                _ => None,
            });
        }
    }
    Ok(state)
}

fn is_main_table(route: &RouteMessage) -> bool {
    let table = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table));
    table == u32::from(netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN)
}

async fn observe_node(handle: &Handle) -> Result<NodeState, rtnetlink::Error> {
    let mut node = NodeState::default();
    for link in dump_links(handle).await? {
        if link.name == GATEWAY_BRIDGE {
            node.gateway = Some(link.state);
        } else if link.name.starts_with(EGRESS_PREFIX) {
            node.ports.insert(link.name, link.state);
        } else if link.name.starts_with(crate::model::LINK_PREFIX) && link.kind == Some(InfoKind::Vxlan) {
            // VXLAN devices belong in sandboxes; one here was left by a crash before the move.
            node.stray.insert(link.name);
        }
    }
    Ok(node)
}

/// Deletes every link in a sandbox but loopback: veths first (their peers leave the containers),
/// then the VXLAN device (releasing its VNI in the node namespace at once), then the bridge.
async fn delete_all_links(handle: &Handle) -> Result<(), rtnetlink::Error> {
    let mut links = dump_links(handle).await?;
    let rank = |link: &Link| match (&link.kind, link.name.as_str()) {
        (_, SANDBOX_BRIDGE) => 2,
        (Some(InfoKind::Vxlan), _) => 1,
        _ => 0,
    };
    links.sort_by_key(|l| rank(l));
    for link in links.iter().filter(|l| l.name != "lo") {
        ignore_missing(handle.link().del(link.index).execute().await)?;
    }
    Ok(())
}

impl Dataplane for Kernel {
    fn observe(&mut self, desired: &Desired, naming: &Naming) -> Result<Observed, ObserveError> {
        self.observe_inner(desired, naming)
    }

    fn apply(&mut self, op: &Op, naming: &Naming) -> Result<(), ApplyError> {
        self.apply_inner(op, naming)
    }

    fn finish(&mut self) {
        self.xfrm = None;
        let open: Vec<Option<PathBuf>> = self.conns.keys().cloned().collect();
        for key in open {
            self.close(key.as_deref());
        }
    }
}

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
use crate::model::{Cidr, Desired, GATEWAY_BRIDGE, MacAddr, Naming, SANDBOX_BRIDGE};
use crate::netns;
use crate::nft;
use crate::plan::{ContainerState, LinkState, NodeState, Observed, Op, Place, SandboxState, VxlanState};
use nftables::helper::NftablesError;

const ENOENT: i32 = 2;
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
        Ok(Self { config, rt, conns: HashMap::new() })
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
        let table = naming.nft_table.clone();
        state.masquerade = match netns::run_in(node.as_deref(), move || nft::observe(&table))
            .map_err(io_err(format!("nftables in {what}")))?
        {
            Ok(comment) => comment,
            // Without `nft` there cannot be a table of ours; applying one will say what is missing.
            Err(NftablesError::NftExecution { inner, .. }) if inner.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(ObserveError::Nft {
                    what: format!("nftables table ip {} in {what}", naming.nft_table),
                    stderr: nft_stderr(&source),
                    source: Box::new(source),
                });
            }
        };
        observed.node = state;
        Ok(observed)
    }

    fn apply_inner(&mut self, op: &Op, naming: &Naming) -> Result<(), ApplyError> {
        let name = op.to_string();
        let io_err = |step: String| {
            let op = name.clone();
            move |source| ApplyError::Io { op, step, source }
        };
        let nl = |step: String| {
            let op = name.clone();
            move |source| ApplyError::Netlink { op, step, source }
        };
        let not_found = |missing: String| ApplyError::NotFound { op: name.clone(), missing };
        match op {
            Op::DeleteSandbox { network } => {
                let path = self.sandbox_path(naming, network);
                // A sandbox that cannot be entered has no links to delete first.
                if let Ok(handle) = self.conn(Some(&path)) {
                    self.rt
                        .block_on(delete_all_links(&handle))
                        .map_err(nl(format!("delete links in {}", path.display())))?;
                    self.close(Some(&path));
                }
                netns::delete_named(&path).map_err(io_err(format!("delete namespace {}", path.display())))
            }
            Op::CreateSandbox { network } => {
                let path = self.sandbox_path(naming, network);
                netns::create_named(&path).map_err(io_err(format!("create namespace {}", path.display())))?;
                let handle = self.conn(Some(&path)).map_err(io_err(format!("enter {}", path.display())))?;
                self.rt.block_on(set_up(&handle, "lo")).map_err(nl(format!("bring up lo in {}", path.display())))
            }
            Op::CreateBridge { network, mtu, addresses } => {
                let path = self.sandbox_path(naming, network);
                let handle = self.conn(Some(&path)).map_err(io_err(format!("enter {}", path.display())))?;
                let at = path.display().to_string();
                self.rt.block_on(async {
                    let message = LinkBridge::new(SANDBOX_BRIDGE).mtu(*mtu).build();
                    handle.link().add(message).execute().await.map_err(nl(format!("add bridge in {at}")))?;
                    let index = index_of(&handle, SANDBOX_BRIDGE)
                        .await
                        .map_err(nl(format!("find bridge in {at}")))?
                        .ok_or_else(|| not_found(format!("bridge {SANDBOX_BRIDGE} in {at}")))?;
                    for cidr in addresses {
                        add_address(&handle, index, *cidr).await.map_err(nl(format!("add {cidr} in {at}")))?;
                    }
                    Ok(())
                })
            }
            Op::CreateVxlan { network, name: vxlan, vni, port, mtu } => {
                let path = self.sandbox_path(naming, network);
                let node = self.node();
                let node_handle = self.conn(node.as_deref()).map_err(io_err("enter the node namespace".to_owned()))?;
                let handle = self.conn(Some(&path)).map_err(io_err(format!("enter {}", path.display())))?;
                let sandbox = File::open(&path).map_err(io_err(format!("open {}", path.display())))?;
                let at = path.display().to_string();
                self.rt.block_on(async {
                    // A crash between creating and moving leaves the device in the node namespace.
                    if let Some(stale) = index_of(&node_handle, vxlan).await.map_err(nl("find leftover".to_owned()))? {
                        node_handle.link().del(stale).execute().await.map_err(nl("delete leftover".to_owned()))?;
                    }
                    let message = LinkVxlan::new(vxlan, *vni).port(*port).learning(false).proxy(true).mtu(*mtu).build();
                    node_handle
                        .link()
                        .add(message)
                        .execute()
                        .await
                        .map_err(nl("add in the node namespace".to_owned()))?;
                    let index = index_of(&node_handle, vxlan)
                        .await
                        .map_err(nl("find in the node namespace".to_owned()))?
                        .ok_or_else(|| not_found(format!("{vxlan} in the node namespace")))?;
                    let moved = LinkUnspec::new_with_index(index).setns_by_fd(sandbox.as_raw_fd()).build();
                    if let Err(err) = node_handle.link().set(moved).execute().await {
                        let _ = node_handle.link().del(index).execute().await;
                        return Err(nl(format!("move into {at}"))(err));
                    }
                    attach(&handle, vxlan, SANDBOX_BRIDGE, *mtu).await.map_err(|e| e.into_apply(&name, &at))
                })
            }
            Op::ConfigureLink { place, name: link, mtu, controller, add, remove } => {
                let path = self.place_path(naming, place);
                let handle = self.conn(path.as_deref()).map_err(io_err(format!("enter {place}")))?;
                let at = place.to_string();
                let result = self.rt.block_on(async {
                    let index = index_of(&handle, link)
                        .await
                        .map_err(nl(format!("find {link} in {at}")))?
                        .ok_or_else(|| not_found(format!("{link} in {at}")))?;
                    let mut message = LinkUnspec::new_with_index(index).mtu(*mtu).up();
                    if let Some(controller) = controller {
                        let bridge = index_of(&handle, controller)
                            .await
                            .map_err(nl(format!("find {controller} in {at}")))?
                            .ok_or_else(|| not_found(format!("{controller} in {at}")))?;
                        message = message.controller(bridge);
                    }
                    handle.link().set(message.build()).execute().await.map_err(nl(format!("set {link} in {at}")))?;
                    for cidr in add {
                        add_address(&handle, index, *cidr)
                            .await
                            .map_err(nl(format!("add {cidr} to {link} in {at}")))?;
                    }
                    for cidr in remove {
                        del_address(&handle, index, *cidr)
                            .await
                            .map_err(nl(format!("remove {cidr} from {link} in {at}")))?;
                    }
                    Ok(())
                });
                self.close_container(place);
                result
            }
            Op::DeleteLink { place, name: link } => {
                let path = self.place_path(naming, place);
                if path.as_ref().is_some_and(|p| !p.exists()) {
                    return Ok(());
                }
                let handle = self.conn(path.as_deref()).map_err(io_err(format!("enter {place}")))?;
                let at = place.to_string();
                let result = self.rt.block_on(async {
                    // Already gone (a veth whose peer was deleted) is what was asked for.
                    if let Some(index) = index_of(&handle, link).await.map_err(nl(format!("find {link} in {at}")))? {
                        ignore_missing(handle.link().del(index).execute().await)
                            .map_err(nl(format!("delete {link} in {at}")))?;
                    }
                    Ok(())
                });
                self.close_container(place);
                result
            }
            Op::CreateEndpoint { network, netns: container, port, ifname, mac, addresses, mtu, .. } => {
                let path = self.sandbox_path(naming, network);
                let handle = self.conn(Some(&path)).map_err(io_err(format!("enter {}", path.display())))?;
                let at = path.display().to_string();
                let (veth, inner) = veth_pair(port, ifname, *mac, *mtu, container)
                    .map_err(io_err(format!("open container namespace {}", container.display())))?;
                self.rt.block_on(async {
                    handle.link().add(veth).execute().await.map_err(nl(format!("add veth {port} in {at}")))?;
                    attach(&handle, port, SANDBOX_BRIDGE, *mtu).await.map_err(|e| e.into_apply(&name, &at))
                })?;
                drop(inner);
                self.configure_inner(&name, container, ifname, addresses)
            }
            Op::CreateEgress { netns: container, port, ifname, mac, address, mtu, .. } => {
                let node = self.node();
                let handle = self.conn(node.as_deref()).map_err(io_err("enter the node namespace".to_owned()))?;
                let at = "the node namespace".to_owned();
                let (veth, inner) = veth_pair(port, ifname, *mac, *mtu, container)
                    .map_err(io_err(format!("open container namespace {}", container.display())))?;
                self.rt.block_on(async {
                    handle.link().add(veth).execute().await.map_err(nl(format!("add veth {port} in {at}")))?;
                    attach(&handle, port, GATEWAY_BRIDGE, *mtu).await.map_err(|e| e.into_apply(&name, &at))?;
                    let index = index_of(&handle, port)
                        .await
                        .map_err(nl(format!("find {port} in {at}")))?
                        .ok_or_else(|| not_found(format!("{port} in {at}")))?;
                    let isolated = LinkBridgePort::new(index).isolated(true).build();
                    handle
                        .link()
                        .set_port(isolated)
                        .execute()
                        .await
                        .map_err(nl(format!("isolate bridge port {port} in {at}")))
                })?;
                drop(inner);
                self.configure_inner(&name, container, ifname, std::slice::from_ref(address))
            }
            Op::SetFdb { network, vxlan, mac, node } => {
                let handle = self.sandbox_conn(naming, network, &name)?;
                self.rt.block_on(async {
                    let index = self.vxlan_index(&handle, vxlan, &name).await?;
                    handle
                        .neighbours()
                        .add_bridge(index, &mac.0)
                        .destination(*node)
                        .flags(NeighbourFlags::Own)
                        .state(NeighbourState::Permanent)
                        .replace()
                        .execute()
                        .await
                        .map_err(nl(format!("bridge fdb replace on {vxlan}")))
                })
            }
            Op::DeleteFdb { network, vxlan, mac, node } => {
                let handle = self.sandbox_conn(naming, network, &name)?;
                self.rt.block_on(async {
                    let index = self.vxlan_index(&handle, vxlan, &name).await?;
                    let mut message = NeighbourMessage::default();
                    message.header.family = AddressFamily::Bridge;
                    message.header.ifindex = index;
                    message.header.flags = NeighbourFlags::Own;
                    message.header.state = NeighbourState::Permanent;
                    message.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
                    message.attributes.push(NeighbourAttribute::Destination(neighbour_address(*node)));
                    ignore_missing(handle.neighbours().del(message).execute().await)
                        .map_err(nl(format!("bridge fdb del on {vxlan}")))
                })
            }
            Op::SetNeighbour { network, vxlan, address, mac } => {
                let handle = self.sandbox_conn(naming, network, &name)?;
                self.rt.block_on(async {
                    let index = self.vxlan_index(&handle, vxlan, &name).await?;
                    handle
                        .neighbours()
                        .add(index, *address)
                        .link_layer_address(&mac.0)
                        .state(NeighbourState::Permanent)
                        .replace()
                        .execute()
                        .await
                        .map_err(nl(format!("neighbour replace on {vxlan}")))
                })
            }
            Op::DeleteNeighbour { network, vxlan, address } => {
                let handle = self.sandbox_conn(naming, network, &name)?;
                self.rt.block_on(async {
                    let index = self.vxlan_index(&handle, vxlan, &name).await?;
                    let mut message = NeighbourMessage::default();
                    message.header.family = family(*address);
                    message.header.ifindex = index;
                    message.attributes.push(NeighbourAttribute::Destination(neighbour_address(*address)));
                    ignore_missing(handle.neighbours().del(message).execute().await)
                        .map_err(nl(format!("neighbour del on {vxlan}")))
                })
            }
            Op::CreateGatewayBridge { address, mtu } => {
                let node = self.node();
                let handle = self.conn(node.as_deref()).map_err(io_err("enter the node namespace".to_owned()))?;
                self.rt.block_on(async {
                    let message = LinkBridge::new(GATEWAY_BRIDGE).mtu(*mtu).build();
                    handle.link().add(message).execute().await.map_err(nl("add bridge".to_owned()))?;
                    let index = index_of(&handle, GATEWAY_BRIDGE)
                        .await
                        .map_err(nl("find bridge".to_owned()))?
                        .ok_or_else(|| not_found(format!("{GATEWAY_BRIDGE} in the node namespace")))?;
                    add_address(&handle, index, *address).await.map_err(nl(format!("add {address}")))
                })
            }
            Op::EnableForwarding => netns::run_in(self.node().as_deref(), || std::fs::write(FORWARDING, "1"))
                .and_then(|written| written)
                .map_err(io_err(format!("write {FORWARDING} in the node namespace"))),
            Op::SetMasquerade { subnet, bridge } => {
                let (table, subnet, bridge) = (naming.nft_table.clone(), *subnet, bridge.clone());
                let comment = crate::plan::masquerade_comment(subnet, &bridge);
                netns::run_in(self.node().as_deref(), move || nft::set(&table, subnet, &bridge, &comment))
                    .map_err(io_err("enter the node namespace".to_owned()))?
                    .map_err(|source| ApplyError::Nft {
                        op: name.clone(),
                        stderr: nft_stderr(&source),
                        source: Box::new(source),
                    })
            }
            Op::DeleteMasquerade => {
                let table = naming.nft_table.clone();
                netns::run_in(self.node().as_deref(), move || nft::delete(&table))
                    .map_err(io_err("enter the node namespace".to_owned()))?
                    .map_err(|source| ApplyError::Nft {
                        op: name.clone(),
                        stderr: nft_stderr(&source),
                        source: Box::new(source),
                    })
            }
            Op::SetDefaultRoute { netns: container, ifname, via } => {
                let handle = self
                    .conn(Some(container))
                    .map_err(io_err(format!("enter container namespace {}", container.display())))?;
                let at = container.display().to_string();
                let result = self.rt.block_on(async {
                    let index = index_of(&handle, ifname)
                        .await
                        .map_err(nl(format!("find {ifname} in {at}")))?
                        .ok_or_else(|| not_found(format!("{ifname} in {at}")))?;
                    let message = match via {
                        IpAddr::V4(v4) => {
                            RouteMessageBuilder::<Ipv4Addr>::new().gateway(*v4).output_interface(index).build()
                        }
                        IpAddr::V6(v6) => {
                            RouteMessageBuilder::<Ipv6Addr>::new().gateway(*v6).output_interface(index).build()
                        }
                    };
                    handle
                        .route()
                        .add(message)
                        .replace()
                        .execute()
                        .await
                        .map_err(nl(format!("replace default route in {at}")))
                });
                self.close(Some(container));
                result
            }
        }
    }

    fn sandbox_conn(&mut self, naming: &Naming, network: &str, op: &str) -> Result<Handle, ApplyError> {
        let path = self.sandbox_path(naming, network);
        self.conn(Some(&path)).map_err(|source| ApplyError::Io {
            op: op.to_owned(),
            step: format!("enter {}", path.display()),
            source,
        })
    }

    async fn vxlan_index(&self, handle: &Handle, vxlan: &str, op: &str) -> Result<u32, ApplyError> {
        index_of(handle, vxlan)
            .await
            .map_err(|source| ApplyError::Netlink { op: op.to_owned(), step: format!("find {vxlan}"), source })?
            .ok_or_else(|| ApplyError::NotFound { op: op.to_owned(), missing: format!("vxlan device {vxlan}") })
    }

    /// Addresses and up for the container end of a new veth, then loopback up.
    fn configure_inner(
        &mut self,
        op: &str,
        container: &Path,
        ifname: &str,
        addresses: &[Cidr],
    ) -> Result<(), ApplyError> {
        let at = format!("container namespace {}", container.display());
        let handle = self.conn(Some(container)).map_err(|source| ApplyError::Io {
            op: op.to_owned(),
            step: format!("enter {at}"),
            source,
        })?;
        let nl = |step: String| move |source| ApplyError::Netlink { op: op.to_owned(), step, source };
        let result = self.rt.block_on(async {
            let index = index_of(&handle, ifname)
                .await
                .map_err(nl(format!("find {ifname} in {at}")))?
                .ok_or_else(|| ApplyError::NotFound { op: op.to_owned(), missing: format!("{ifname} in {at}") })?;
            for cidr in addresses {
                add_address(&handle, index, *cidr).await.map_err(nl(format!("add {cidr} to {ifname} in {at}")))?;
            }
            let up = LinkUnspec::new_with_index(index).up().build();
            handle.link().set(up).execute().await.map_err(nl(format!("bring up {ifname} in {at}")))?;
            set_up(&handle, "lo").await.map_err(nl(format!("bring up lo in {at}")))
        });
        self.close(Some(container));
        result
    }

    fn close_container(&mut self, place: &Place) {
        if let Place::Container(path) = place {
            self.close(Some(path));
        }
    }
}

const FORWARDING: &str = "/proc/sys/net/ipv4/ip_forward";

/// A veth `port` (here) whose peer `ifname` is made directly inside `container` with its MAC and
/// MTU. Returns the message and the open namespace file, which must stay open until it is sent.
fn veth_pair(port: &str, ifname: &str, mac: MacAddr, mtu: u32, container: &Path) -> io::Result<(LinkMessage, File)> {
    let file = File::open(container)?;
    let peer = LinkUnspec::new_with_name(ifname).address(mac.0.to_vec()).mtu(mtu).setns_by_fd(file.as_raw_fd()).build();
    let message = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(port)
        .mtu(mtu)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    Ok((message, file))
}

/// A failed step of attaching a link to a bridge.
enum AttachError {
    Netlink(String, rtnetlink::Error),
    Missing(String),
}

impl AttachError {
    fn into_apply(self, op: &str, at: &str) -> ApplyError {
        match self {
            Self::Netlink(step, source) => {
                ApplyError::Netlink { op: op.to_owned(), step: format!("{step} in {at}"), source }
            }
            Self::Missing(what) => ApplyError::NotFound { op: op.to_owned(), missing: format!("{what} in {at}") },
        }
    }
}

/// Puts `link` on `bridge`, sets its MTU and brings it up.
async fn attach(handle: &Handle, link: &str, bridge: &str, mtu: u32) -> Result<(), AttachError> {
    let find = |name: &str| {
        let name = name.to_owned();
        async move {
            index_of(handle, &name)
                .await
                .map_err(|e| AttachError::Netlink(format!("find {name}"), e))?
                .ok_or(AttachError::Missing(name))
        }
    };
    let index = find(link).await?;
    let controller = find(bridge).await?;
    let message = LinkUnspec::new_with_index(index).controller(controller).mtu(mtu).up().build();
    handle
        .link()
        .set(message)
        .execute()
        .await
        .map_err(|e| AttachError::Netlink(format!("attach {link} to {bridge}"), e))
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
        let open: Vec<Option<PathBuf>> = self.conns.keys().cloned().collect();
        for key in open {
            self.close(key.as_deref());
        }
    }
}

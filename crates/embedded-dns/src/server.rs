//! The server: per-container sockets at 127.0.0.11:53 (UDP and TCP) opened inside each
//! container's namespace, all served by the one runtime, with the container's networks deciding
//! what it may resolve.
//!
//! The UDP loop takes up to 32 datagrams per system call (`recvmmsg`), answers the local ones
//! inline — no task, no lock held across an await, so a slow upstream can never hold them up — and
//! sends those answers together (`sendmmsg`). Only forwarded queries become tasks, bounded per
//! container by a semaphore and owned by the loop, so that detaching a container ends them too.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd as _, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use tokio::io::Interest;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::forward::{Cache, Forwarder, Sockets};
use crate::handler::{self, Action, Handler, Transport};
use crate::netns::{self, NetnsFailure, NetnsWorker};
use crate::records::RecordTable;

/// Where every container's resolver listens, inside its own namespace.
pub const RESOLVER_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)), 53);

/// Receive buffer asked for on each UDP socket: room for thousands of queued queries, so that a
/// burst is queued rather than dropped while the loop catches up.
const UDP_RECV_BUFFER: usize = 8 << 20;

/// How long a TCP client may stay idle between queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Settings of a [`DnsServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Upstream servers for names that are not local, tried in order; at most 3 are used. Usually
    /// [`HostResolvConf::upstreams`](crate::HostResolvConf::upstreams) of the node.
    pub upstreams: Vec<SocketAddr>,
    /// The namespace upstream queries are sent from (a path such as `/run/netns/NAME`); `None`: the
    /// namespace of this process, the node's.
    pub upstream_netns: Option<PathBuf>,
    /// How long each upstream has to answer.
    pub upstream_timeout: Duration,
    /// TTL of local answers, in seconds: short, so that clients follow changes.
    pub ttl: u32,
    /// Names under this domain are local only (never forwarded); `NAME.DOMAIN` resolves as `NAME`.
    pub cluster_domain: Option<String>,
    /// The address each container's resolver listens on inside its namespace.
    pub listen: SocketAddr,
    /// Forwarded queries (and TCP connections) in flight per container; beyond it, SERVFAIL.
    pub max_in_flight: usize,
    /// Upstream answers kept in the cache.
    pub cache_entries: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            upstreams: Vec::new(),
            upstream_netns: None,
            upstream_timeout: Duration::from_secs(4),
            ttl: 5,
            cluster_domain: Some("shoal.internal".to_owned()),
            listen: RESOLVER_ADDR,
            max_in_flight: 4096,
            cache_entries: 10_000,
        }
    }
}

/// Starting a server failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The namespace for upstream queries could not be entered.
    #[error("enter upstream namespace {netns}: {source}")]
    UpstreamNamespace {
        /// The namespace path.
        netns: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Attaching a container failed; nothing of it was kept.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The container is already attached.
    #[error("container {container} is already attached to the dns server")]
    AlreadyAttached {
        /// The container ID.
        container: String,
    },
    /// The container's namespace could not be opened or entered.
    #[error("container {container}: enter namespace {netns}: {source}")]
    Namespace {
        /// The container ID.
        container: String,
        /// The namespace path.
        netns: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A socket could not be bound in the namespace.
    #[error("container {container}: bind {protocol} {addr} in namespace {netns}: {source}{hint}")]
    Bind {
        /// The container ID.
        container: String,
        /// The namespace path.
        netns: PathBuf,
        /// `udp` or `tcp`.
        protocol: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
        /// A hint for the usual cause, or empty.
        hint: &'static str,
    },
}

/// Changing a container's networks failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetNetworksError {
    /// No container with that ID is attached.
    #[error("container {container} is not attached to the dns server")]
    NotAttached {
        /// The container ID.
        container: String,
    },
}

/// What the sockets of one container share.
#[derive(Debug)]
struct Container {
    id: String,
    /// The networks it is attached to, in order of precedence.
    networks: RwLock<Arc<[String]>>,
    in_flight: Arc<Semaphore>,
}

impl Container {
    fn networks(&self) -> Arc<[String]> {
        self.networks.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[derive(Debug)]
struct Attached {
    container: Arc<Container>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        // Aborting the tasks drops their sockets: the container's resolver address is free again.
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

#[derive(Debug)]
struct Core {
    handler: Handler,
    forwarder: Forwarder,
}

/// The embedded DNS server of one node: a record table, and a resolver at 127.0.0.11:53 in each
/// attached container's namespace. Dropping it stops every container's resolver.
#[derive(Debug)]
pub struct DnsServer {
    core: Arc<Core>,
    config: DnsConfig,
    containers: Mutex<HashMap<String, Attached>>,
}

impl DnsServer {
    /// A server answering from `table`. Opens no socket until [`DnsServer::attach`].
    pub fn new(config: DnsConfig, table: RecordTable) -> Result<Self, StartError> {
        let sockets = match &config.upstream_netns {
            None => Sockets::Here,
            Some(path) => Sockets::Netns(
                NetnsWorker::start(path).map_err(|(netns, source)| StartError::UpstreamNamespace { netns, source })?,
            ),
        };
        let upstreams: Vec<SocketAddr> = config.upstreams.iter().take(crate::MAX_UPSTREAMS).copied().collect();
        let handler = Handler::new(
            table,
            Cache::new(config.cache_entries),
            config.cluster_domain.clone(),
            config.ttl,
            !upstreams.is_empty(),
        );
        let forwarder = Forwarder::new(upstreams, config.upstream_timeout, sockets);
        Ok(Self { core: Arc::new(Core { handler, forwarder }), config, containers: Mutex::new(HashMap::new()) })
    }

    /// The record table queries are answered from.
    pub fn records(&self) -> &RecordTable {
        &self.core.handler.table
    }

    /// The settings it was created with ([`DnsServer::set_upstreams`] does not change them).
    pub fn config(&self) -> &DnsConfig {
        &self.config
    }

    /// Opens the resolver sockets (UDP and TCP at [`DnsConfig::listen`]) inside the namespace at
    /// `netns` and serves `container` from `networks` (first match wins). Must be called within a
    /// tokio runtime, which then runs them.
    pub async fn attach(&self, container: &str, netns: &Path, networks: Vec<String>) -> Result<(), AttachError> {
        if self.lock().contains_key(container) {
            return Err(AttachError::AlreadyAttached { container: container.to_owned() });
        }
        let listen = self.config.listen;
        let opened = netns::run_in(netns, move || open_sockets(listen)).await;
        let ((udp, tcp), lo_up) = opened.map_err(|failure| {
            let container = container.to_owned();
            let netns = netns.to_owned();
            match failure {
                NetnsFailure::Open(source) => AttachError::Namespace { container, netns, source },
                NetnsFailure::Enter(errno) => AttachError::Namespace { container, netns, source: errno.into() },
                NetnsFailure::Lost => {
                    AttachError::Namespace { container, netns, source: io::Error::other("namespace thread panicked") }
                }
                NetnsFailure::Work((protocol, source)) => {
                    let hint = if source.kind() == io::ErrorKind::AddrNotAvailable {
                        " (is the loopback interface up in the namespace?)"
                    } else {
                        ""
                    };
                    AttachError::Bind { container, netns, protocol, addr: listen, source, hint }
                }
            }
        })?;
        let bind_err = |protocol, source| AttachError::Bind {
            container: container.to_owned(),
            netns: netns.to_owned(),
            protocol,
            addr: listen,
            source,
            hint: "",
        };
        if !lo_up {
            tracing::warn!(
                container,
                netns = %netns.display(),
                "loopback interface is down in the container's namespace: its resolver at 127.0.0.11 is unreachable until it is up"
            );
        }
        let udp = Arc::new(UdpSocket::from_std(udp).map_err(|e| bind_err("udp", e))?);
        let tcp = TcpListener::from_std(tcp).map_err(|e| bind_err("tcp", e))?;

        let state = Arc::new(Container {
            id: container.to_owned(),
            networks: RwLock::new(networks.into()),
            in_flight: Arc::new(Semaphore::new(self.config.max_in_flight)),
        });
        let tasks = vec![
            tokio::spawn(serve_udp(self.core.clone(), state.clone(), udp)),
            tokio::spawn(serve_tcp(self.core.clone(), state.clone(), tcp)),
        ];
        let mut containers = self.lock();
        if containers.contains_key(container) {
            // Attached concurrently by another caller: keep theirs, drop ours (aborting our tasks).
            drop(Attached { container: state, tasks });
            return Err(AttachError::AlreadyAttached { container: container.to_owned() });
        }
        tracing::debug!(container, netns = %netns.display(), addr = %listen, "dns resolver attached");
        containers.insert(container.to_owned(), Attached { container: state, tasks });
        Ok(())
    }

    /// Replaces the networks `container` resolves from (first match wins).
    pub fn set_networks(&self, container: &str, networks: Vec<String>) -> Result<(), SetNetworksError> {
        let containers = self.lock();
        let attached = containers
            .get(container)
            .ok_or_else(|| SetNetworksError::NotAttached { container: container.to_owned() })?;
        *attached.container.networks.write().unwrap_or_else(PoisonError::into_inner) = networks.into();
        Ok(())
    }

    /// Replaces the upstream servers (at most [`MAX_UPSTREAMS`](crate::MAX_UPSTREAMS) are used), for
    /// when the node's resolv.conf changes; an empty list turns forwarding off (SERVFAIL for
    /// outside names).
    pub fn set_upstreams(&self, upstreams: &[SocketAddr]) {
        let upstreams = &upstreams[..upstreams.len().min(crate::MAX_UPSTREAMS)];
        self.core.forwarder.set_upstreams(upstreams);
        self.core.handler.forwarding.store(!upstreams.is_empty(), std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(upstreams = ?upstreams, "dns upstreams replaced");
    }

    /// Stops serving `container` and closes its sockets. Returns whether it was attached.
    pub fn detach(&self, container: &str) -> bool {
        let removed = self.lock().remove(container);
        if removed.is_some() {
            tracing::debug!(container, "dns resolver detached");
        }
        removed.is_some()
    }

    /// The IDs of the attached containers, sorted.
    pub fn containers(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().keys().cloned().collect();
        ids.sort();
        ids
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Attached>> {
        self.containers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Opened = (std::net::UdpSocket, std::net::TcpListener);

/// Runs on a thread inside the container's namespace.
fn open_sockets(listen: SocketAddr) -> Result<(Opened, bool), (&'static str, io::Error)> {
    // 127.0.0.11 binds even while `lo` is down, but then nothing reaches it: tell the caller.
    let lo_up = nix::ifaddrs::getifaddrs().is_ok_and(|mut addrs| {
        addrs.any(|a| a.interface_name == "lo" && a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
    });
    open_bound(listen).map(|opened| (opened, lo_up))
}

fn open_bound(listen: SocketAddr) -> Result<Opened, (&'static str, io::Error)> {
    let udp = std::net::UdpSocket::bind(listen).map_err(|e| ("udp", e))?;
    enlarge_receive_buffer(&udp);
    udp.set_nonblocking(true).map_err(|e| ("udp", e))?;
    let tcp = std::net::TcpListener::bind(listen).map_err(|e| ("tcp", e))?;
    tcp.set_nonblocking(true).map_err(|e| ("tcp", e))?;
    Ok((udp, tcp))
}

fn enlarge_receive_buffer(socket: &std::net::UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    // Past net.core.rmem_max only with CAP_NET_ADMIN (RcvBufForce); without it, the plain option
    // gets as much as the sysctl allows.
    if setsockopt(socket, sockopt::RcvBufForce, &UDP_RECV_BUFFER).is_err()
        && let Err(err) = setsockopt(socket, sockopt::RcvBuf, &UDP_RECV_BUFFER)
    {
        tracing::debug!(error = %err, "cannot enlarge the dns socket's receive buffer");
    }
}

/// Datagrams taken from the kernel per system call (`recvmmsg`).
const BATCH: usize = 32;
/// The largest query read; a longer one is cut short, fails to parse and gets FORMERR.
const MAX_QUERY: usize = 4096;

async fn serve_udp(core: Arc<Core>, container: Arc<Container>, socket: Arc<UdpSocket>) {
    let mut bufs = vec![[0u8; MAX_QUERY]; BATCH];
    let mut received: Vec<(usize, SocketAddr)> = Vec::with_capacity(BATCH);
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
    // Forwarded queries live in this set: aborting this task (detach) aborts them too, and with
    // them the last references to the socket, so the address is free at once.
    let mut forwards = JoinSet::new();
    let fd = socket.as_raw_fd();
    loop {
        while forwards.try_join_next().is_some() {}
        received.clear();
        if let Err(err) = socket.async_io(Interest::READABLE, || receive_batch(fd, &mut bufs, &mut received)).await {
            tracing::warn!(container = %container.id, error = %err, "dns udp receive failed");
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let networks = container.networks();
        for (buf, &(n, peer)) in bufs.iter().zip(&received) {
            let forward = match core.handler.handle(&networks, &buf[..n], Transport::Udp) {
                Action::Reply(reply) => {
                    replies.push((reply, peer));
                    continue;
                }
                Action::Drop => continue,
                Action::Forward(forward) => forward,
            };
            let Ok(permit) = container.in_flight.clone().try_acquire_owned() else {
                tracing::warn!(container = %container.id, "too many dns queries in flight, answering SERVFAIL");
                let reply =
                    handler::respond(&forward.request, ResponseCode::ServFail, Vec::new(), false, forward.udp_limit);
                send(&socket, &container.id, &reply, peer).await;
                continue;
            };
            let core = core.clone();
            let socket = socket.clone();
            let id = container.id.clone();
            forwards.spawn(async move {
                let reply = core.forwarder.forward(&forward, &core.handler.cache).await;
                send(&socket, &id, &reply, peer).await;
                drop(permit);
            });
        }
        send_batch(&socket, &container.id, &replies).await;
        replies.clear();
    }
}

/// Sends the local answers of one batch, as many per system call as the socket takes.
async fn send_batch(socket: &UdpSocket, container: &str, replies: &[(Vec<u8>, SocketAddr)]) {
    let fd = socket.as_raw_fd();
    let mut start = 0;
    while start < replies.len() {
        match socket.async_io(Interest::WRITABLE, || send_many(fd, &replies[start..])).await {
            Ok(sent) => start += sent.max(1),
            Err(err) => {
                // The first pending answer failed (its peer is gone, say): skip it.
                let peer = replies[start].1;
                tracing::debug!(container, peer = %peer, error = %err, "dns udp send failed");
                start += 1;
            }
        }
    }
}

/// One `sendmmsg` call: how many of `replies` the kernel took.
fn send_many(fd: RawFd, replies: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
    use nix::libc;
    use nix::sys::socket::{SockaddrLike as _, SockaddrStorage};
    let addrs: Vec<SockaddrStorage> = replies.iter().map(|(_, peer)| SockaddrStorage::from(*peer)).collect();
    let mut iovs: Vec<libc::iovec> = replies
        .iter()
        .map(|(bytes, _)| libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .zip(&addrs)
        .map(|(iov, addr)| {
            // SAFETY: `mmsghdr` is plain old data, for which all zeroes is a valid (empty) value.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_name = addr.as_ptr().cast_mut().cast();
            header.msg_hdr.msg_namelen = addr.len();
            header.msg_hdr.msg_iov = iov;
            header.msg_hdr.msg_iovlen = 1;
            header
        })
        .collect();
    let count = u32::try_from(headers.len()).unwrap_or(u32::MAX);
    // SAFETY: every header points into `addrs`, `iovs` and `replies`, which outlive the call, and
    // `count` is at most the length of `headers`; the kernel only reads them.
    let sent = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), count, libc::MSG_DONTWAIT) };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

/// Reads up to [`BATCH`] datagrams in one system call; `WouldBlock` when there are none.
fn receive_batch(fd: RawFd, bufs: &mut [[u8; MAX_QUERY]], out: &mut Vec<(usize, SocketAddr)>) -> io::Result<()> {
    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(bufs.len(), None);
    let mut slices: Vec<[io::IoSliceMut<'_>; 1]> = bufs.iter_mut().map(|b| [io::IoSliceMut::new(b)]).collect();
    let messages = recvmmsg(fd, &mut headers, slices.iter_mut(), MsgFlags::MSG_DONTWAIT, None)?;
    for message in messages {
        let peer = message.address.as_ref().and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::from(*v4))
                .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6)))
        });
        // Every datagram keeps its slot, so that slot i of `out` is buffer i; one without a
        // usable source address gets length 0, which the handler drops as too short.
        match peer {
            Some(peer) => out.push((message.bytes, peer)),
            None => out.push((0, SocketAddr::from(([0, 0, 0, 0], 0)))),
        }
    }
    Ok(())
}

async fn send(socket: &UdpSocket, container: &str, reply: &[u8], peer: SocketAddr) {
    let sent = match socket.try_send_to(reply, peer) {
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => socket.send_to(reply, peer).await,
        other => other,
    };
    if let Err(err) = sent {
        tracing::debug!(container, peer = %peer, error = %err, "dns udp send failed");
    }
}

async fn serve_tcp(core: Arc<Core>, container: Arc<Container>, listener: TcpListener) {
    // Connections live in this set, so that detaching closes them too.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(container = %container.id, error = %err, "dns tcp accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = container.in_flight.clone().try_acquire_owned() else {
            tracing::warn!(container = %container.id, peer = %peer, "too many dns connections, closing one");
            continue;
        };
        let core = core.clone();
        let container = container.clone();
        connections.spawn(async move {
            if let Err(err) = serve_connection(core, &container, stream).await {
                tracing::debug!(container = %container.id, peer = %peer, error = %err, "dns tcp connection ended");
            }
            drop(permit);
        });
    }
}

/// Answers length-prefixed queries on one connection until the client closes it or stays idle too
/// long. Local answers go out at once; forwarded ones as they come back, so that a slow upstream
/// does not hold up the queries pipelined behind it (RFC 7766).
async fn serve_connection(core: Arc<Core>, container: &Container, stream: TcpStream) -> io::Result<()> {
    let (mut reader, writer) = stream.into_split();
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    let mut forwards = JoinSet::new();
    let result = loop {
        while forwards.try_join_next().is_some() {}
        let len = match tokio::time::timeout(TCP_IDLE, reader.read_u16()).await {
            Ok(Ok(len)) => len,
            Ok(Err(err)) if err.kind() == io::ErrorKind::UnexpectedEof => break Ok(()),
            Ok(Err(err)) => break Err(err),
            Err(_) => break Ok(()),
        };
        let mut query = vec![0u8; usize::from(len)];
        match tokio::time::timeout(TCP_IDLE, reader.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => break Err(err),
            Err(_) => break Err(io::Error::new(io::ErrorKind::TimedOut, "query not received in time")),
        }
        let networks = container.networks();
        match core.handler.handle(&networks, &query, Transport::Tcp) {
            Action::Reply(reply) => write_framed(&writer, &reply).await?,
            Action::Forward(forward) => {
                let (core, writer) = (core.clone(), writer.clone());
                forwards.spawn(async move {
                    let reply = core.forwarder.forward(&forward, &core.handler.cache).await;
                    write_framed(&writer, &reply).await
                });
            }
            Action::Drop => break Ok(()),
        }
    };
    // The client may close its side right after its last query: answer what is still pending.
    while let Some(done) = forwards.join_next().await {
        if let Ok(Err(err)) = done {
            return Err(err);
        }
    }
    result
}

async fn write_framed(writer: &tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>, reply: &[u8]) -> io::Result<()> {
    let len = u16::try_from(reply.len()).map_err(|_| io::Error::other("answer longer than 65535 bytes"))?;
    let mut framed = Vec::with_capacity(reply.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(reply);
    writer.lock().await.write_all(&framed).await
}

//! Fixtures of the namespace tests: container namespaces, a fake upstream resolver on the test
//! underlay, and DNS clients that ask from inside a container's namespace.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use shoal_embedded_dns::{DnsConfig, DnsServer, RecordTable};
use shoal_testkit::{Cluster, UNDERLAY_GATEWAY, in_netns};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A container's network namespace (just a namespace with `lo` up). Deleted when dropped.
#[derive(Debug)]
pub(crate) struct Netns {
    pub(crate) name: String,
}

impl Netns {
    pub(crate) fn new(name: String, lo_up: bool) -> Self {
        run(Command::new("ip").args(["netns", "add", &name]));
        let netns = Self { name };
        if lo_up {
            run(Command::new("ip").args(["-n", &netns.name, "link", "set", "lo", "up"]));
        }
        netns
    }

    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("spawn command");
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// The fake upstream at 192.0.2.1:53 (UDP and TCP) in the underlay namespace.
///
/// Under `example.test.`: `nx.*` is NXDOMAIN (with an SOA), `big.*` has 100 A records, names
/// starting with `slow` are answered after the delay, those starting with `held` only once the
/// test calls [`Upstream::release`], those starting with `lossy` only the second time they are
/// asked, anything else gets one A record 203.0.113.7 with TTL 60. Every question it sees is
/// recorded, and a test can wait for one to arrive ([`Upstream::received`]).
pub(crate) struct Upstream {
    seen: watch::Sender<Vec<String>>,
    released: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

pub(crate) const UPSTREAM: SocketAddr = SocketAddr::new(IpAddr::V4(UNDERLAY_GATEWAY), 53);

impl Upstream {
    pub(crate) fn start(netns: &str, delay: Duration) -> Self {
        let (udp, tcp) = in_netns(netns, || {
            let udp = std::net::UdpSocket::bind(UPSTREAM).expect("bind upstream udp");
            // Room for a burst of a thousand forwarded queries.
            nix::sys::socket::setsockopt(&udp, nix::sys::socket::sockopt::RcvBufForce, &(8usize << 20))
                .expect("receive buffer");
            udp.set_nonblocking(true).expect("nonblocking");
            let tcp = std::net::TcpListener::bind(UPSTREAM).expect("bind upstream tcp");
            tcp.set_nonblocking(true).expect("nonblocking");
            (udp, tcp)
        })
        .expect("enter underlay namespace");
        let udp = Arc::new(UdpSocket::from_std(udp).expect("register"));
        let tcp = tokio::net::TcpListener::from_std(tcp).expect("register");
        let (seen, _) = watch::channel(Vec::new());
        let (released, _) = watch::channel(false);
        let hold = Hold { seen: seen.clone(), released: released.subscribe(), delay };
        let udp_task = {
            let hold = hold.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                // Answers in flight belong to this task: stopping it closes the socket at once.
                let mut answers = tokio::task::JoinSet::new();
                loop {
                    while answers.try_join_next().is_some() {}
                    let Ok((n, peer)) = udp.recv_from(&mut buf).await else { continue };
                    let request = buf[..n].to_vec();
                    let (udp, hold) = (udp.clone(), hold.clone());
                    answers.spawn(async move {
                        if let Some(reply) = answer(&request, &hold, true).await {
                            let _ = udp.send_to(&reply, peer).await;
                        }
                    });
                }
            })
        };
        let tcp_task = {
            let hold = hold.clone();
            tokio::spawn(async move {
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    while connections.try_join_next().is_some() {}
                    let Ok((mut stream, _)) = tcp.accept().await else { continue };
                    let hold = hold.clone();
                    connections.spawn(async move {
                        while let Ok(len) = stream.read_u16().await {
                            let mut request = vec![0u8; usize::from(len)];
                            if stream.read_exact(&mut request).await.is_err() {
                                return;
                            }
                            let Some(reply) = answer(&request, &hold, false).await else { return };
                            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&reply);
                            if stream.write_all(&framed).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            })
        };
        Self { seen, released, tasks: vec![udp_task, tcp_task] }
    }

    /// The questions it has seen, lower case, without the trailing dot.
    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.borrow().clone()
    }

    /// Waits until the questions seen satisfy `done` (`what` names it), failing after 10 s.
    pub(crate) async fn received(&self, what: &str, done: impl FnMut(&Vec<String>) -> bool) {
        let mut seen = self.seen.subscribe();
        if tokio::time::timeout(Duration::from_secs(10), seen.wait_for(done)).await.is_err() {
            panic!("the upstream never received {what}: it saw {:?}", self.seen());
        }
    }

    /// Answers the `held` questions, those waiting and any asked later.
    pub(crate) fn release(&self) {
        self.released.send_replace(true);
    }

    /// Stops answering and closes its sockets: queries to it now meet "port unreachable".
    pub(crate) async fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Where [`BlackHole`] listens: on the underlay, next to the fake upstream.
pub(crate) const BLACK_HOLE: SocketAddr = SocketAddr::new(IpAddr::V4(UNDERLAY_GATEWAY), 5353);

/// An upstream that never answers, at [`BLACK_HOLE`] (UDP) in the underlay namespace: queries
/// to it vanish as to a dead server, and it records the questions, so a test sees which
/// queries tried it.
pub(crate) struct BlackHole {
    seen: Arc<std::sync::Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl BlackHole {
    pub(crate) fn start(netns: &str) -> Self {
        let socket = in_netns(netns, || {
            let socket = std::net::UdpSocket::bind(BLACK_HOLE).expect("bind the black hole");
            socket.set_nonblocking(true).expect("nonblocking");
            socket
        })
        .expect("enter underlay namespace");
        let socket = UdpSocket::from_std(socket).expect("register");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = socket.recv(&mut buf).await {
                    if let Some(query) = Message::from_vec(&buf[..n]).ok().and_then(|m| m.queries.first().cloned()) {
                        let name = query.name().to_ascii().to_ascii_lowercase();
                        seen.lock().expect("lock").push(name.trim_end_matches('.').to_owned());
                    }
                }
            }
        });
        Self { seen, task }
    }

    /// The questions sent to it, lower case, without the trailing dot.
    pub(crate) fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the upstream's answers share: the questions seen, and what holds answers back.
#[derive(Clone)]
struct Hold {
    seen: watch::Sender<Vec<String>>,
    released: watch::Receiver<bool>,
    delay: Duration,
}

async fn answer(request: &[u8], hold: &Hold, udp: bool) -> Option<Vec<u8>> {
    let request = Message::from_vec(request).ok()?;
    let query = request.queries.first()?.clone();
    let name = query.name().to_ascii().to_ascii_lowercase();
    let name = name.trim_end_matches('.').to_owned();
    let mut times_seen = 0;
    hold.seen.send_modify(|seen| {
        seen.push(name.clone());
        times_seen = seen.iter().filter(|n| **n == name).count();
    });
    if name.starts_with("lossy") && times_seen == 1 {
        // As if the first datagram were lost.
        return None;
    }
    if name.starts_with("slow") {
        tokio::time::sleep(hold.delay).await;
    }
    if name.starts_with("held") {
        let mut released = hold.released.clone();
        released.wait_for(|released| *released).await.ok()?;
    }
    let mut reply = Message::response(request.metadata.id, OpCode::Query);
    reply.metadata.recursion_available = true;
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.queries = request.queries.clone();
    let owner = query.name().clone();
    if name.starts_with("nx.") {
        reply.metadata.response_code = ResponseCode::NXDomain;
        let zone = Name::from_ascii("example.test.").ok()?;
        let soa = SOA::new(zone.clone(), zone.clone(), 1, 60, 60, 60, 30);
        reply.authorities.push(Record::from_rdata(zone, 60, RData::SOA(soa)));
    } else if name.starts_with("big.") {
        for i in 0..100u8 {
            reply.answers.push(Record::from_rdata(owner.clone(), 60, RData::A(A(Ipv4Addr::new(203, 0, 113, i)))));
        }
    } else if query.query_type() == RecordType::A {
        reply.answers.push(Record::from_rdata(owner, 60, RData::A(A(Ipv4Addr::new(203, 0, 113, 7)))));
    }
    let mut bytes = reply.to_vec().ok()?;
    if udp && bytes.len() > usize::from(request.max_payload()) {
        reply.answers.clear();
        reply.metadata.truncation = true;
        bytes = reply.to_vec().ok()?;
    }
    Some(bytes)
}

/// A test environment: one node namespace on the underlay, the fake upstream on the underlay's
/// bridge address, and a server that forwards from the node's namespace.
pub(crate) struct Env {
    // Dropped in this order: the server (and its thread in the node namespace), the upstream,
    // the container namespaces, and last the cluster.
    pub(crate) server: DnsServer,
    pub(crate) upstream: Upstream,
    containers: Vec<Netns>,
    pub(crate) cluster: Cluster,
}

impl Env {
    pub(crate) fn new(upstream_delay: Duration) -> Self {
        Self::with_upstreams(upstream_delay, vec![UPSTREAM], Duration::from_secs(4))
    }

    /// Like [`Env::new`] with other upstream addresses and timeout (the fake one is at [`UPSTREAM`]).
    pub(crate) fn with_upstreams(upstream_delay: Duration, upstreams: Vec<SocketAddr>, timeout: Duration) -> Self {
        let cluster = Cluster::new(1).expect("build cluster");
        let upstream = Upstream::start(cluster.underlay_netns(), upstream_delay);
        let node = cluster.node(1).expect("node1");
        let config = DnsConfig {
            upstreams,
            upstream_netns: Some(PathBuf::from("/run/netns").join(&node.netns)),
            upstream_timeout: timeout,
            ..DnsConfig::default()
        };
        let server = DnsServer::new(config, RecordTable::new()).expect("start server");
        Self { server, upstream, containers: Vec::new(), cluster }
    }

    /// A new container namespace attached to `networks`; returns its namespace name.
    pub(crate) async fn container(&mut self, id: &str, networks: &[&str]) -> String {
        let netns = Netns::new(format!("{}-{id}", self.cluster.prefix()), true);
        let networks = networks.iter().map(|s| (*s).to_owned()).collect();
        self.server.attach(id, &netns.path(), networks).await.expect("attach container");
        let name = netns.name.clone();
        self.containers.push(netns);
        name
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Close the sockets before their namespaces go.
        for id in self.server.containers() {
            self.server.detach(&id);
        }
    }
}

/// A UDP client socket inside `netns`, with room for a thousand queued answers.
pub(crate) fn udp_client(netns: &str) -> UdpSocket {
    let socket = in_netns(netns, || {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind client");
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &(8usize << 20))
            .expect("receive buffer");
        socket.set_nonblocking(true).expect("nonblocking");
        socket
    })
    .expect("enter container namespace");
    UdpSocket::from_std(socket).expect("register")
}

pub(crate) fn query(id: u16, name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        message.set_edns(e);
    }
    message.to_vec().expect("encode")
}

/// Asks the container's resolver over UDP and waits (at most 5 s) for the answer.
pub(crate) async fn ask_udp(netns: &str, name: &str, qtype: RecordType) -> Message {
    let socket = udp_client(netns);
    socket.send_to(&query(7, name, qtype, false), "127.0.0.11:53").await.expect("send");
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no answer for {name} {qtype} within 5 s"))
        .expect("receive");
    Message::from_vec(&buf[..n]).expect("decode")
}

/// Asks the container's resolver over TCP.
pub(crate) async fn ask_tcp(netns: &str, name: &str, qtype: RecordType) -> Message {
    let mut stream = tcp_client(netns);
    send_tcp(&mut stream, 8, name, qtype).await;
    read_tcp(&mut stream, Duration::from_secs(5)).await
}

/// A TCP connection to the container's resolver, from inside its namespace.
pub(crate) fn tcp_client(netns: &str) -> tokio::net::TcpStream {
    let stream = in_netns(netns, || {
        let stream = std::net::TcpStream::connect("127.0.0.11:53").expect("connect over tcp");
        stream.set_nonblocking(true).expect("nonblocking");
        stream
    })
    .expect("enter container namespace");
    tokio::net::TcpStream::from_std(stream).expect("register")
}

pub(crate) async fn send_tcp(stream: &mut tokio::net::TcpStream, id: u16, name: &str, qtype: RecordType) {
    let request = query(id, name, qtype, false);
    let mut framed = (request.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&request);
    stream.write_all(&framed).await.expect("write");
}

pub(crate) async fn read_tcp(stream: &mut tokio::net::TcpStream, within: Duration) -> Message {
    let read = async {
        let len = stream.read_u16().await.expect("read length");
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.expect("read answer");
        buf
    };
    let buf = tokio::time::timeout(within, read).await.unwrap_or_else(|_| panic!("no tcp answer within {within:?}"));
    Message::from_vec(&buf).expect("decode")
}

/// The addresses in an answer, as strings, sorted.
pub(crate) fn addresses(reply: &Message) -> Vec<String> {
    let mut out: Vec<String> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// Runs a command to success and returns its standard output.
pub(crate) fn run_output(command: &mut Command) -> String {
    let output = command.output().expect("spawn command");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{command:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

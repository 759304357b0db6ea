//! The conformance suite every load-balancer backend must pass, and the namespaces it runs in:
//! a balancer namespace (the harness's underlay) and three backend namespaces, each running a
//! TCP and a UDP echo on two ports each that answer with their name, the address they see the
//! client at and the port they were reached on.
//!
//! Shared by `tests/conformance.rs` (nftables, on this host) and `examples/vm_guest.rs` (IPVS,
//! inside the VM that `cargo xtask vm-test` boots).
#![allow(dead_code, unreachable_pub, clippy::print_stderr)] // Each including binary uses part of it; steps narrate on stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shoal_ipvs_lb::{ApplyError, Backend, LoadBalancer, Netns, Protocol, Service, ServiceKey};
use shoal_testkit::{Cluster, in_netns};

/// The VIP of the suite's services. 198.18.0.0/24 is local to the balancer namespace (an
/// AnyIP route), so clients there reach any VIP through the output hook.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
/// The VIP of the 10,000 bulk services (ports `BULK_PORT..`).
pub const BULK_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 20);
pub const BULK_PORT: u16 = 20_000;
/// The balancer namespace's address on the task subnet.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const TCP_PORT: u16 = 8080;
/// The address of the client outside the balancer.
pub const OUTSIDE_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 20);
pub const UDP_PORT: u16 = 5353;
/// The second ports the backends' echoes listen on, for any-port services.
pub const SECOND_TCP_PORT: u16 = 8081;
pub const SECOND_UDP_PORT: u16 = 5354;
const TIMEOUT: Duration = Duration::from_secs(3);

pub fn narrate(message: &str) {
    eprintln!("--- {message}");
}

/// Backend `i` (0-based) is `b{i+1}` at 198.18.1.(11+i).
pub fn backend_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 11 + u8::try_from(i).unwrap_or(0))
}

/// A TCP or UDP echo in a namespace, stopped on drop.
pub struct Echo {
    stop: Arc<AtomicBool>,
    netns: String,
    tcp: SocketAddrV4,
    udp: SocketAddrV4,
}

impl Echo {
    /// Starts both echoes in `netns` at `addr`, ports `tcp` and `udp`, answering
    /// `name PEER-ADDRESS PORT\n`.
    pub fn start(netns: &str, name: &str, addr: Ipv4Addr, tcp: u16, udp: u16) -> Echo {
        let tcp_addr = SocketAddrV4::new(addr, tcp);
        let udp_addr = SocketAddrV4::new(addr, udp);
        let (listener, udp) = in_netns(netns, move || {
            (TcpListener::bind(tcp_addr).expect("bind tcp echo"), UdpSocket::bind(udp_addr).expect("bind udp echo"))
        })
        .expect("enter backend namespace");
        let stop = Arc::new(AtomicBool::new(false));
        let (name_tcp, stop_tcp) = (name.to_owned(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop_tcp.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let name = name_tcp.clone();
                std::thread::spawn(move || {
                    let peer = conn.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
                    let _ = conn.set_nodelay(true);
                    if conn.write_all(format!("{name} {peer} {tcp}\n").as_bytes()).is_err() {
                        return;
                    }
                    let mut buf = [0; 512];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let (name_udp, stop_udp) = (name.to_owned(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0; 512];
            while let Ok((_, peer)) = udp.recv_from(&mut buf) {
                if stop_udp.load(Ordering::Relaxed) {
                    return;
                }
                let _ = udp.send_to(format!("{name_udp} {} {}\n", peer.ip(), udp_addr.port()).as_bytes(), peer);
            }
        });
        Echo { stop, netns: netns.to_owned(), tcp: tcp_addr, udp: udp_addr }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let (tcp, udp) = (self.tcp, self.udp);
        // Wake both loops so they see the flag.
        let _ = in_netns(&self.netns, move || {
            let _ = TcpStream::connect_timeout(&tcp.into(), Duration::from_millis(200));
            if let Ok(socket) = UdpSocket::bind("0.0.0.0:0") {
                let _ = socket.send_to(b"stop", udp);
            }
        });
    }
}

/// The namespaces of the suite.
pub struct Env {
    pub cluster: Cluster,
    /// The balancer namespace: clients connect from here.
    pub lb_netns: String,
    pub backends: Vec<String>,
    /// A client outside the balancer (at [`OUTSIDE_CLIENT`]), whose connections arrive on the
    /// balancer's bridge as the routing mesh's do.
    pub client_netns: String,
    _echoes: Vec<Echo>,
}

impl Env {
    /// Builds the balancer namespace and three backends with their echoes.
    pub fn new() -> Env {
        let cluster = Cluster::new(4).expect("build namespaces");
        let lb_netns = cluster.underlay_netns().to_owned();
        let ip = |netns: &str, args: &[&str]| {
            let out = std::process::Command::new("ip").arg("-n").arg(netns).args(args).output().expect("run ip");
            assert!(out.status.success(), "ip -n {netns} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        ip(&lb_netns, &["addr", "add", &format!("{GATEWAY}/24"), "dev", "br0"]);
        ip(&lb_netns, &["route", "add", "local", "198.18.0.0/24", "dev", "lo"]);
        // A routing-mesh node forwards what it balances for clients elsewhere.
        in_netns(&lb_netns, || std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
            .expect("enter balancer namespace")
            .expect("turn forwarding on in the balancer namespace");
        let mut backends = Vec::new();
        let mut echoes = Vec::new();
        let (nodes, client) = cluster.nodes().split_at(3);
        let client_netns = client.first().map(|n| n.netns.clone()).expect("a fourth namespace");
        ip(&client_netns, &["addr", "add", &format!("{OUTSIDE_CLIENT}/24"), "dev", "eth0"]);
        ip(&client_netns, &["route", "add", "198.18.0.0/24", "via", &GATEWAY.to_string()]);
        for (i, node) in nodes.iter().enumerate() {
            let addr = backend_addr(i);
            ip(&node.netns, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
            ip(&node.netns, &["route", "add", "198.18.0.0/24", "via", &GATEWAY.to_string()]);
            for (tcp, udp) in [(TCP_PORT, UDP_PORT), (SECOND_TCP_PORT, SECOND_UDP_PORT)] {
                echoes.push(Echo::start(&node.netns, &format!("b{}", i + 1), addr, tcp, udp));
            }
            backends.push(node.netns.clone());
        }
        Env { cluster, lb_netns, backends, client_netns, _echoes: echoes }
    }

    pub fn netns(&self) -> Netns {
        Netns::named(&self.lb_netns)
    }

    /// Opens `count` TCP connections to `to` from the balancer namespace, one after another;
    /// returns how many each backend name answered and the peer address each reported.
    pub fn tcp_tally(&self, to: SocketAddrV4, count: usize) -> (BTreeMap<String, usize>, Vec<String>) {
        let answers = in_netns(&self.lb_netns, move || {
            (0..count).map(|_| tcp_hello(to).map(|(_, line)| line)).collect::<Vec<_>>()
        })
        .expect("enter balancer namespace");
        tally(answers)
    }

    /// Like [`Env::tcp_tally`], from namespace `netns` (a client outside the balancer, whose
    /// packets arrive on its bridge).
    pub fn tcp_tally_from(
        &self,
        netns: &str,
        to: SocketAddrV4,
        count: usize,
    ) -> (BTreeMap<String, usize>, Vec<String>) {
        let answers =
            in_netns(netns, move || (0..count).map(|_| tcp_hello(to).map(|(_, line)| line)).collect::<Vec<_>>())
                .expect("enter client namespace");
        tally(answers)
    }

    /// Sends one datagram from each of `count` fresh sockets (fresh flows) to `to`.
    pub fn udp_tally(&self, to: SocketAddrV4, count: usize) -> (BTreeMap<String, usize>, Vec<String>) {
        let (names, peers, _) = self.udp_tally_ports(to, count);
        (names, peers)
    }

    /// Like [`Env::udp_tally`], and the ports the backends answered on.
    pub fn udp_tally_ports(
        &self,
        to: SocketAddrV4,
        count: usize,
    ) -> (BTreeMap<String, usize>, Vec<String>, BTreeSet<String>) {
        let answers = in_netns(&self.lb_netns, move || (0..count).map(|_| udp_hello(to)).collect::<Vec<_>>())
            .expect("enter balancer namespace");
        tally_ports(answers)
    }

    /// Like [`Env::tcp_tally_from`], and the ports the backends answered on.
    pub fn tcp_tally_ports(
        &self,
        netns: &str,
        to: SocketAddrV4,
        count: usize,
    ) -> (BTreeMap<String, usize>, Vec<String>, BTreeSet<String>) {
        let answers =
            in_netns(netns, move || (0..count).map(|_| tcp_hello(to).map(|(_, line)| line)).collect::<Vec<_>>())
                .expect("enter client namespace");
        tally_ports(answers)
    }

    /// A long-lived connection to `to` (opened in the balancer namespace) and the backend's name.
    pub fn open_conn(&self, to: SocketAddrV4) -> (TcpStream, String) {
        let (stream, line) = in_netns(&self.lb_netns, move || tcp_hello(to))
            .expect("enter balancer namespace")
            .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
        (stream, line.split(' ').next().unwrap_or_default().to_owned())
    }
}

fn tally(answers: Vec<Result<String, String>>) -> (BTreeMap<String, usize>, Vec<String>) {
    let (names, peers, _) = tally_ports(answers);
    (names, peers)
}

/// How many answers each backend name gave, the peer address each reported, and the ports
/// they answered on.
fn tally_ports(answers: Vec<Result<String, String>>) -> (BTreeMap<String, usize>, Vec<String>, BTreeSet<String>) {
    let mut names = BTreeMap::new();
    let mut peers = Vec::new();
    let mut ports = BTreeSet::new();
    for answer in answers {
        let line = answer.unwrap_or_else(|e| format!("error {e}"));
        let mut parts = line.split(' ');
        *names.entry(parts.next().unwrap_or_default().to_owned()).or_insert(0) += 1;
        peers.push(parts.next().unwrap_or_default().to_owned());
        ports.insert(parts.next().unwrap_or_default().to_owned());
    }
    (names, peers, ports)
}

/// Connects and reads the greeting line.
pub fn tcp_hello(to: SocketAddrV4) -> Result<(TcpStream, String), String> {
    let stream = TcpStream::connect_timeout(&SocketAddr::V4(to), TIMEOUT).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).map_err(|e| e.to_string())?;
    Ok((stream, line.trim().to_owned()))
}

fn udp_hello(to: SocketAddrV4) -> Result<String, String> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    socket.send_to(b"hello", to).map_err(|e| e.to_string())?;
    let mut buf = [0; 512];
    let n = socket.recv(&mut buf).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
}

/// Whether a long-lived connection still echoes.
pub fn still_echoes(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"ping\n").is_err() {
        return false;
    }
    let mut buf = [0; 5];
    stream.read_exact(&mut buf).is_ok() && &buf == b"ping\n"
}

fn three(port: u16) -> Vec<Backend> {
    (0..3).map(|i| Backend::new(backend_addr(i), port)).collect()
}

fn assert_even(names: &BTreeMap<String, usize>, expected: &[&str], total: usize, what: &str) {
    let share = total / expected.len();
    let slack = share * 15 / 100;
    for name in expected {
        let got = names.get(*name).copied().unwrap_or(0);
        assert!(got.abs_diff(share) <= slack, "{what}: {name} got {got} of {total}, want {share} ± 15 %: {names:?}");
    }
    let others: usize = names.iter().filter(|(n, _)| !expected.contains(&n.as_str())).map(|(_, c)| c).sum();
    assert_eq!(others, 0, "{what}: answers from outside {expected:?}: {names:?}");
}

/// The conformance cases, by name, each taking a fresh balancer in a fresh environment.
/// One conformance case.
pub type Case = fn(&Env, &mut dyn LoadBalancer);

pub const CASES: &[(&str, Case)] = &[
    ("distribution", distribution),
    ("drain", drain),
    ("removal", removal),
    ("udp", udp),
    ("source_nat", source_nat),
    ("replace_all_and_list", replace_all_and_list),
    ("update_among_10000", update_among_10000),
    ("any_port", any_port),
];

/// 300 connections split evenly (within ±15 %) over three backends.
pub fn distribution(env: &Env, lb: &mut dyn LoadBalancer) {
    let key = ServiceKey::tcp(VIP, 80);
    lb.set(&[Service::new(key, three(TCP_PORT))]).expect("set service");
    narrate("300 connections through the VIP");
    let (names, peers) = env.tcp_tally(SocketAddrV4::new(VIP, 80), 300);
    assert_even(&names, &["b1", "b2", "b3"], 300, "distribution");
    narrate("without source NAT the backend sees the client's address");
    assert!(peers.iter().all(|p| p == &VIP.to_string()), "peers: {:?}", &peers[..3]);
}

/// Weight 0: no new connections, the existing one kept; list shows the weight.
pub fn drain(env: &Env, lb: &mut dyn LoadBalancer) {
    let key = ServiceKey::tcp(VIP, 80);
    lb.set(&[Service::new(key, three(TCP_PORT))]).expect("set service");
    narrate("open connections until one lands on b3");
    let mut on_b3 = None;
    for _ in 0..6 {
        let (stream, name) = env.open_conn(SocketAddrV4::new(VIP, 80));
        if name == "b3" {
            on_b3 = Some(stream);
            break;
        }
    }
    let mut on_b3 = on_b3.expect("a connection on b3");
    narrate("drain b3");
    lb.drain(&key, SocketAddrV4::new(backend_addr(2), TCP_PORT)).expect("drain");
    let listed = lb.list().expect("list");
    let weights: Vec<u32> = listed.iter().flat_map(|s| s.backends.iter().map(|b| b.weight)).collect();
    assert_eq!(weights, [1, 1, 0], "listed: {listed:?}");
    let (names, _) = env.tcp_tally(SocketAddrV4::new(VIP, 80), 60);
    assert_even(&names, &["b1", "b2"], 60, "after drain");
    assert!(still_echoes(&mut on_b3), "the drained backend's existing connection must keep working");
    let err = lb.drain(&key, SocketAddrV4::new(backend_addr(0), 9)).expect_err("unknown backend");
    assert!(matches!(err, ApplyError::NoSuchBackend { .. }), "{err}");
    assert!(err.to_string().contains("198.18.1.11:9"), "{err}");
}

/// A removed backend gets nothing; a removed service is gone.
pub fn removal(env: &Env, lb: &mut dyn LoadBalancer) {
    let key = ServiceKey::tcp(VIP, 80);
    lb.set(&[Service::new(key, three(TCP_PORT))]).expect("set service");
    narrate("remove b3 from the service");
    lb.set(&[Service::new(key, three(TCP_PORT)[..2].to_vec())]).expect("update service");
    let (names, _) = env.tcp_tally(SocketAddrV4::new(VIP, 80), 60);
    assert_even(&names, &["b1", "b2"], 60, "after removal");
    narrate("remove the service");
    lb.remove(&[key]).expect("remove");
    assert!(lb.list().expect("list").is_empty());
    let refused = in_netns(&env.lb_netns, || tcp_hello(SocketAddrV4::new(VIP, 80)).is_err()).expect("netns");
    assert!(refused, "nothing answers a removed service");
    lb.remove(&[key]).expect("removing again is a no-op");
}

/// A UDP service: every fresh flow balanced.
pub fn udp(env: &Env, lb: &mut dyn LoadBalancer) {
    let key = ServiceKey::udp(VIP, 53);
    lb.set(&[Service::new(key, three(UDP_PORT))]).expect("set service");
    let (names, _) = env.udp_tally(SocketAddrV4::new(VIP, 53), 60);
    assert_even(&names, &["b1", "b2", "b3"], 60, "udp");
}

/// With source NAT the backends see the balancer's address, not the client's; `list` reads the
/// option back; turned off, the client's address is kept again; a removed service leaves
/// nothing behind.
pub fn source_nat(env: &Env, lb: &mut dyn LoadBalancer) {
    let key = ServiceKey::tcp(VIP, 81);
    let plain = Service::new(ServiceKey::tcp(VIP, 80), three(TCP_PORT));
    let service = Service { key, backends: three(TCP_PORT), source_nat: true };
    lb.set(&[service.clone(), plain.clone()]).expect("set services");
    assert_eq!(lb.list().expect("list"), vec![plain.clone(), service.clone()]);
    narrate("30 connections to the source-NAT service");
    let (names, peers) = env.tcp_tally(SocketAddrV4::new(VIP, 81), 30);
    assert_even(&names, &["b1", "b2", "b3"], 30, "source NAT");
    assert!(peers.iter().all(|p| p == &GATEWAY.to_string()), "masqueraded to the balancer's address: {peers:?}");
    narrate("30 from a client outside the balancer, as the routing mesh's arrive");
    let (names, peers) = env.tcp_tally_from(&env.client_netns, SocketAddrV4::new(VIP, 81), 30);
    assert_even(&names, &["b1", "b2", "b3"], 30, "source NAT, clients outside");
    assert!(peers.iter().all(|p| p == &GATEWAY.to_string()), "masqueraded: {peers:?}");
    narrate("the service beside it keeps the client's address");
    let (_, peers) = env.tcp_tally(SocketAddrV4::new(VIP, 80), 6);
    assert!(peers.iter().all(|p| p == &VIP.to_string()), "not masqueraded: {peers:?}");

    narrate("source NAT off");
    let kept = Service { source_nat: false, ..service.clone() };
    lb.set(std::slice::from_ref(&kept)).expect("turn source NAT off");
    assert_eq!(lb.list().expect("list"), vec![plain.clone(), kept.clone()]);
    let (names, peers) = env.tcp_tally(SocketAddrV4::new(VIP, 81), 6);
    assert_eq!(names.values().sum::<usize>(), 6, "{names:?}");
    assert!(peers.iter().all(|p| p == &VIP.to_string()), "the client's address again: {peers:?}");

    narrate("on again, then removed");
    lb.set(std::slice::from_ref(&service)).expect("turn source NAT on again");
    assert_eq!(lb.list().expect("list"), vec![plain.clone(), service]);
    lb.remove(&[key]).expect("remove");
    assert_eq!(lb.list().expect("list"), vec![plain.clone()]);
    narrate("added back without source NAT: nothing of the old one is left");
    lb.set(std::slice::from_ref(&kept)).expect("add it back");
    assert_eq!(lb.list().expect("list"), vec![plain, kept]);
}

/// replace_all makes the set exact; list reads it back sorted.
pub fn replace_all_and_list(_env: &Env, lb: &mut dyn LoadBalancer) {
    let a = Service::new(ServiceKey::tcp(VIP, 80), three(TCP_PORT));
    let b = Service::new(ServiceKey::udp(VIP, 53), vec![Backend { weight: 3, ..Backend::new(backend_addr(1), 53) }]);
    let c = Service::new(ServiceKey::tcp(BULK_VIP, 80), vec![Backend::new(backend_addr(0), TCP_PORT)]);
    lb.replace_all(&[a.clone(), b.clone()]).expect("replace all");
    assert_eq!(lb.list().expect("list"), vec![b.clone(), a.clone()], "sorted by address, port, protocol");
    lb.replace_all(&[c.clone(), a.clone()]).expect("replace all");
    assert_eq!(lb.list().expect("list"), vec![a, c]);
    lb.replace_all(&[]).expect("replace all with nothing");
    assert!(lb.list().expect("list").is_empty());
    let bad = Service::new(ServiceKey::tcp(VIP, 80), three(0));
    let err = lb.set(&[bad]).expect_err("backends of port 0 in a specific-port service");
    assert!(matches!(err, ApplyError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("198.18.0.10:80/tcp"), "{err}");
    let bad = Service::new(ServiceKey::any_port(VIP, Protocol::Tcp), three(TCP_PORT));
    let err = lb.set(&[bad]).expect_err("backends with a port in an any-port service");
    assert!(err.to_string().contains("198.18.0.10:*/tcp"), "{err}");
    assert!(lb.list().expect("list").is_empty(), "nothing of a refused change is applied");
}

/// 10,000 services; one changes; connections of others keep working and their split is intact.
pub fn update_among_10000(env: &Env, lb: &mut dyn LoadBalancer) {
    let services: Vec<Service> = (0..10_000u16)
        .map(|i| {
            let key = ServiceKey::tcp(BULK_VIP, BULK_PORT + i);
            Service::new(key, vec![Backend::new(backend_addr(usize::from(i % 3)), TCP_PORT)])
        })
        .chain([Service::new(ServiceKey::tcp(VIP, 80), three(TCP_PORT))])
        .collect();
    narrate("set 10,001 services");
    let started = Instant::now();
    lb.replace_all(&services).expect("set 10,001 services");
    narrate(&format!("set in {:?}", started.elapsed()));
    let mut held: Vec<(TcpStream, String)> =
        (0..6).map(|i| env.open_conn(SocketAddrV4::new(BULK_VIP, BULK_PORT + i * 1000))).collect();
    held.push(env.open_conn(SocketAddrV4::new(VIP, 80)));
    narrate("change one service among them");
    let changed = Service::new(ServiceKey::tcp(BULK_VIP, BULK_PORT + 5000), three(TCP_PORT));
    let started = Instant::now();
    lb.set(&[changed]).expect("change one");
    narrate(&format!("changed in {:?}", started.elapsed()));
    for (stream, name) in &mut held {
        assert!(still_echoes(stream), "connection to {name} disturbed by another service's change");
    }
    let (names, _) = env.tcp_tally(SocketAddrV4::new(BULK_VIP, BULK_PORT + 5000), 30);
    assert_even(&names, &["b1", "b2", "b3"], 30, "changed service");
    let (names, _) = env.tcp_tally(SocketAddrV4::new(BULK_VIP, BULK_PORT + 7000), 5);
    assert_eq!(names.keys().collect::<Vec<_>>(), ["b2"], "untouched service keeps its backend");
    let (names, _) = env.tcp_tally(SocketAddrV4::new(VIP, 80), 30);
    assert_even(&names, &["b1", "b2", "b3"], 30, "untouched three-backend service");
    // (No full `list` here: with IPVS it is one dump per service, 20 s under the VM's emulation;
    // `replace_all_and_list` covers reading back.)
}

/// Any-port services (a Swarm VIP): every TCP and every UDP port of the VIP balanced over the
/// three backends, each connection reaching the port the client used; a specific-port service
/// on the same VIP takes its port; drain, source NAT and removal as for any service.
pub fn any_port(env: &Env, lb: &mut dyn LoadBalancer) {
    let tcp = ServiceKey::any_port(VIP, Protocol::Tcp);
    let udp = ServiceKey::any_port(VIP, Protocol::Udp);
    let backends: Vec<Backend> = (0..3).map(|i| Backend::any_port(backend_addr(i))).collect();
    let tcp_service = Service::new(tcp, backends.clone());
    let udp_service = Service::new(udp, backends.clone());
    lb.set(&[tcp_service.clone(), udp_service.clone()]).expect("set any-port services");
    assert_eq!(lb.list().expect("list"), vec![tcp_service.clone(), udp_service.clone()]);

    for port in [TCP_PORT, SECOND_TCP_PORT] {
        narrate(&format!("90 TCP connections to port {port} of the VIP"));
        let (names, peers, ports) = env.tcp_tally_ports(&env.lb_netns, SocketAddrV4::new(VIP, port), 90);
        assert_even(&names, &["b1", "b2", "b3"], 90, &format!("any port, tcp/{port}"));
        assert_eq!(ports, BTreeSet::from([port.to_string()]), "the backends are reached on the client's port");
        assert!(peers.iter().all(|p| p == &VIP.to_string()), "the client's address kept: {:?}", &peers[..3]);
    }
    for port in [UDP_PORT, SECOND_UDP_PORT] {
        narrate(&format!("60 UDP flows to port {port} of the VIP"));
        let (names, _, ports) = env.udp_tally_ports(SocketAddrV4::new(VIP, port), 60);
        assert_even(&names, &["b1", "b2", "b3"], 60, &format!("any port, udp/{port}"));
        assert_eq!(ports, BTreeSet::from([port.to_string()]), "the backends are reached on the client's port");
    }

    narrate("a specific-port service on the same VIP takes its port");
    let specific =
        Service::new(ServiceKey::tcp(VIP, SECOND_TCP_PORT), vec![Backend::new(backend_addr(0), SECOND_TCP_PORT)]);
    lb.set(std::slice::from_ref(&specific)).expect("set the specific-port service");
    let (names, _, _) = env.tcp_tally_ports(&env.lb_netns, SocketAddrV4::new(VIP, SECOND_TCP_PORT), 9);
    assert_eq!(names, BTreeMap::from([("b1".to_owned(), 9)]), "the specific-port service's one backend");
    let (names, _, ports) = env.tcp_tally_ports(&env.lb_netns, SocketAddrV4::new(VIP, TCP_PORT), 30);
    assert_even(&names, &["b1", "b2", "b3"], 30, "the other ports stay any-port");
    assert_eq!(ports, BTreeSet::from([TCP_PORT.to_string()]));

    narrate("drain b3 of the TCP any-port service");
    let mut on_b3 = None;
    for _ in 0..6 {
        let (stream, name) = env.open_conn(SocketAddrV4::new(VIP, TCP_PORT));
        if name == "b3" {
            on_b3 = Some(stream);
            break;
        }
    }
    let mut on_b3 = on_b3.expect("a connection on b3");
    lb.drain(&tcp, SocketAddrV4::new(backend_addr(2), 0)).expect("drain");
    let listed = lb.list().expect("list");
    let drained = listed.iter().find(|s| s.key == tcp).map(|s| s.backends.iter().map(|b| b.weight).collect::<Vec<_>>());
    assert_eq!(drained, Some(vec![1, 1, 0]), "listed: {listed:?}");
    let (names, _, _) = env.tcp_tally_ports(&env.lb_netns, SocketAddrV4::new(VIP, TCP_PORT), 60);
    assert_even(&names, &["b1", "b2"], 60, "any port after drain");
    assert!(still_echoes(&mut on_b3), "the drained backend's existing connection must keep working");
    drop(on_b3);

    // Clients outside the balancer need source NAT (without it the backends answer them
    // directly, past the balancer): the routing mesh's case, whose packets arrive through
    // prerouting rather than output.
    narrate("source NAT on the TCP any-port service; 30 connections from a client outside the balancer");
    let masqueraded = Service { key: tcp, backends: backends.clone(), source_nat: true };
    lb.set(std::slice::from_ref(&masqueraded)).expect("turn source NAT on");
    assert_eq!(lb.list().expect("list"), vec![masqueraded.clone(), udp_service.clone(), specific.clone()]);
    let (names, peers, ports) = env.tcp_tally_ports(&env.client_netns, SocketAddrV4::new(VIP, TCP_PORT), 30);
    assert_even(&names, &["b1", "b2", "b3"], 30, "any port with source NAT");
    assert_eq!(ports, BTreeSet::from([TCP_PORT.to_string()]));
    assert!(peers.iter().all(|p| p == &GATEWAY.to_string()), "masqueraded: {peers:?}");
    let (_, peers, _) = env.tcp_tally_ports(&env.lb_netns, SocketAddrV4::new(VIP, SECOND_TCP_PORT), 6);
    assert!(peers.iter().all(|p| p == &VIP.to_string()), "the specific-port service beside it is not: {peers:?}");
    narrate("the specific-port service takes its port for clients outside too");
    let specific = Service { source_nat: true, ..specific };
    lb.set(std::slice::from_ref(&specific)).expect("source NAT on the specific-port service");
    let (names, peers, ports) = env.tcp_tally_ports(&env.client_netns, SocketAddrV4::new(VIP, SECOND_TCP_PORT), 9);
    assert_eq!(names, BTreeMap::from([("b1".to_owned(), 9)]), "the specific-port service's one backend");
    assert_eq!(ports, BTreeSet::from([SECOND_TCP_PORT.to_string()]));
    assert!(peers.iter().all(|p| p == &GATEWAY.to_string()), "masqueraded: {peers:?}");

    narrate("remove the TCP any-port service");
    lb.remove(&[tcp]).expect("remove");
    assert_eq!(lb.list().expect("list"), vec![udp_service.clone(), specific.clone()]);
    let refused = in_netns(&env.lb_netns, || tcp_hello(SocketAddrV4::new(VIP, TCP_PORT)).is_err()).expect("netns");
    assert!(refused, "nothing answers the removed service's ports");
    let (names, _, _) = env.tcp_tally_ports(&env.lb_netns, SocketAddrV4::new(VIP, SECOND_TCP_PORT), 3);
    assert_eq!(names, BTreeMap::from([("b1".to_owned(), 3)]), "the specific-port service stays");
    let (names, _, _) = env.udp_tally_ports(SocketAddrV4::new(VIP, SECOND_UDP_PORT), 30);
    assert_even(&names, &["b1", "b2", "b3"], 30, "the UDP any-port service stays");
    lb.remove(&[udp, specific.key]).expect("remove the rest");
    assert!(lb.list().expect("list").is_empty());
}

//! Privileged tests of the routing mesh's primitives on the real topology: two node namespaces
//! on the harness underlay, the `ingress` overlay (shoal-overlay) with an ingress sandbox on each
//! node, a backend task on node 2 only, balancing in the sandboxes (shoal-ipvs-lb, no source
//! NAT), and a client on the underlay that must be seen by the task with its own address.

// Tests narrate their steps and print timings on stderr.
#![allow(clippy::print_stderr)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shoal_agent::mesh::{self, MeshError, Protocol, Publish};
use shoal_ipvs_lb::{Backend, LoadBalancer as _, Netns, NftBalancer, Service, ServiceKey};
use shoal_overlay::{
    Cidr, ContainerSpec, Desired, Egress, GatewayBridge, Kernel, KernelConfig, LocalEndpoint, Naming, NetworkSpec,
    Overlay, RemoteEndpoint,
};
use shoal_testkit::{Cluster, Node, in_netns, privileged};

const INGRESS_VNI: u32 = 4096;
const PUBLISHED: u16 = 8080;
const TASK_PORT: u16 = 80;
const PUBLISH_TABLE: &str = "shoal_publish";
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
/// Each node's ingress sandbox on its own gateway bridge (198.19.0.0/24 on every node).
const SANDBOX_EGRESS: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const TASK_EGRESS: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 3);
const TASK: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 10);
const TIMEOUT: Duration = Duration::from_secs(2);

fn sandbox_addr(node: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 255, 1 + u8::try_from(node).expect("small"))
}

fn narrate(step: &str) {
    eprintln!("--- {step}");
}

/// Removes every namespace of the run (sandboxes, tasks, overlay sandboxes) when dropped, also
/// on panic; the cluster removes its own node namespaces.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        shoal_testkit::sweep_prefix(&self.0);
    }
}

struct World {
    cluster: Cluster,
    _sweep: Sweep,
}

impl World {
    fn new(nodes: usize) -> Self {
        let cluster = Cluster::new(nodes).expect("build cluster");
        let sweep = Sweep(format!("{}-", cluster.prefix()));
        Self { cluster, _sweep: sweep }
    }

    fn node(&self, index: usize) -> Node {
        self.cluster.node(index).expect("node").clone()
    }

    /// A new named namespace `{prefix}-{name}` (loopback up) and its path.
    fn netns(&self, name: &str) -> (String, PathBuf) {
        let netns = format!("{}-{name}", self.cluster.prefix());
        run("ip", &["netns", "add", &netns]);
        run("ip", &["-n", &netns, "link", "set", "lo", "up"]);
        (netns.clone(), PathBuf::from("/run/netns").join(netns))
    }

    fn overlay(&self, node: &Node) -> Overlay<Kernel> {
        let config = KernelConfig {
            node_netns: Some(PathBuf::from("/run/netns").join(&node.netns)),
            netns_dir: PathBuf::from("/run/netns"),
        };
        let naming = Naming {
            netns_prefix: format!("{}-{}-", self.cluster.prefix(), node.name),
            nft_table: "shoal_overlay".into(),
            esp_table: "shoal_esp".into(),
        };
        Overlay::new(Kernel::new(config).expect("overlay kernel"), naming)
    }
}

/// Runs a command to success and returns its standard output.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nft -a list table ip TABLE` in `netns` (handles included: a replaced table gets new ones),
/// or `None` when there is no such table. Elements with a timeout (the UDP flows the task's
/// table records as they pass) are left out: their remaining time changes from one listing
/// to the next.
fn nft_table(netns: &str, table: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-a", "list", "table", "ip", table])
        .output()
        .expect("run nft");
    let listing = String::from_utf8_lossy(&out.stdout);
    out.status
        .success()
        .then(|| listing.lines().filter(|l| !l.contains(" expires ")).map(|l| format!("{l}\n")).collect())
}

/// The mesh's rules (priority 10000) and the routes of its tables in `netns`, sorted.
fn mesh_routing(netns: &str) -> String {
    let rules = run("ip", &["-n", netns, "-4", "rule", "show", "pref", &mesh::RULE_PRIORITY.to_string()]);
    let routes = run("ip", &["-n", netns, "-4", "route", "show", "table", "all"]);
    // Sorted: a rule added again is listed after the others of its priority.
    let mut lines: Vec<&str> = rules.lines().chain(routes.lines().filter(|l| l.contains("table 13972"))).collect();
    lines.sort_unstable();
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn sysctl(netns: &str, key: &str) -> String {
    let path = Path::new("/proc/sys").join(key);
    in_netns(netns, move || std::fs::read_to_string(path).expect("read sysctl")).expect("enter").trim().to_owned()
}

fn set_sysctl(netns: &str, key: &str, value: &'static str) {
    let path = Path::new("/proc/sys").join(key);
    in_netns(netns, move || std::fs::write(path, value).expect("write sysctl")).expect("enter");
}

/// A TCP server in a namespace that greets every connection with the peer address it sees,
/// then echoes, and a UDP server on the same port that answers each datagram with the peer
/// address; stopped on drop.
struct Echo {
    stop: Arc<AtomicBool>,
    netns: String,
    port: u16,
}

impl Echo {
    fn start(netns: &str, port: u16) -> Echo {
        let listener = in_netns(netns, move || TcpListener::bind(("0.0.0.0", port)))
            .expect("enter task namespace")
            .expect("bind echo");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let peer = conn.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
                    let _ = conn.set_nodelay(true);
                    if conn.write_all(format!("{peer}\n").as_bytes()).is_err() {
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
        let udp = in_netns(netns, move || UdpSocket::bind(("0.0.0.0", port))).expect("enter").expect("bind udp echo");
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0; 512];
            while let Ok((_, peer)) = udp.recv_from(&mut buf) {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let _ = udp.send_to(format!("{}\n", peer.ip()).as_bytes(), peer);
            }
        });
        Echo { stop, netns: netns.to_owned(), port }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let port = self.port;
        let _ = in_netns(&self.netns, move || {
            let _ = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(200));
            if let Ok(socket) = UdpSocket::bind("127.0.0.1:0") {
                let _ = socket.send_to(b"stop", ("127.0.0.1", port));
            }
        });
    }
}

/// Connects to `to` from `netns` and returns the connection and the peer address the task saw.
fn hello(netns: &str, to: SocketAddrV4) -> Result<(TcpStream, String), String> {
    in_netns(netns, move || {
        let stream = TcpStream::connect_timeout(&SocketAddr::V4(to), TIMEOUT).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).map_err(|e| e.to_string())?;
        Ok((stream, line.trim().to_owned()))
    })
    .expect("enter client namespace")
}

/// Sends one datagram from a fresh socket in `netns` to `to`; the peer address the task saw.
fn udp_seen_by_task(netns: &str, to: SocketAddrV4) -> Result<String, String> {
    in_netns(netns, move || {
        let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        socket.set_read_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
        socket.connect(to).map_err(|e| e.to_string())?;
        socket.send(b"hello").map_err(|e| e.to_string())?;
        let mut buf = [0; 512];
        let n = socket.recv(&mut buf).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
    })
    .expect("enter client namespace")
}

fn seen_by_task(netns: &str, to: SocketAddrV4) -> Result<String, String> {
    hello(netns, to).map(|(_, peer)| peer)
}

fn still_echoes(stream: &mut TcpStream) -> bool {
    let mut buf = [0; 5];
    stream.write_all(b"ping\n").is_ok() && stream.read_exact(&mut buf).is_ok() && &buf == b"ping\n"
}

/// The median of `count` connect-and-greet round trips from `netns` to `to`.
fn median_hello(netns: &str, to: SocketAddrV4, count: usize) -> Duration {
    let mut samples: Vec<Duration> = (0..count)
        .map(|_| {
            let started = Instant::now();
            seen_by_task(netns, to).unwrap_or_else(|e| panic!("connect to {to} from {netns}: {e}"));
            started.elapsed()
        })
        .collect();
    samples.sort();
    samples[count / 2]
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = f();
    eprintln!("timing: {what}: {:.2?}", started.elapsed());
    value
}

/// 8080/tcp and 8080/udp to the sandbox's address on the gateway bridge.
fn publish_to_sandbox() -> Vec<Publish> {
    let to = SocketAddrV4::new(SANDBOX_EGRESS, PUBLISHED);
    vec![
        Publish { protocol: Protocol::Tcp, port: PUBLISHED, to },
        Publish { protocol: Protocol::Udp, port: PUBLISHED, to },
    ]
}

/// The routing mesh of two nodes, with the task on node 2.
struct Mesh {
    // Stopped before the namespaces go (fields drop in order).
    _echo: Echo,
    _world: World,
    nodes: [Node; 2],
    client: String,
    /// Each node's ingress sandbox: (name, path).
    sandboxes: [(String, PathBuf); 2],
    task: (String, PathBuf),
}

impl Mesh {
    fn build() -> Mesh {
        let mut world = World::new(2);
        // Node index 10 is 192.0.2.20 on the underlay: a client that is no node of the mesh.
        let client = world.cluster.add_node(10).expect("client namespace").clone();
        assert_eq!(client.addr, CLIENT);
        let nodes = [world.node(1), world.node(2)];
        let ingress = NetworkSpec::new(
            "ingress",
            INGRESS_VNI,
            "198.18.255.0/24".parse().expect("cidr"),
            IpAddr::V4(Ipv4Addr::new(198, 18, 255, 1)),
        );
        let gateway = GatewayBridge {
            subnet: "198.19.0.0/24".parse::<Cidr>().expect("cidr"),
            address: Ipv4Addr::new(198, 19, 0, 1),
            mtu: 1500,
        };
        let sandboxes = [world.netns("sbx1"), world.netns("sbx2")];
        let task = world.netns("task");
        let container = |id: &str, path: &Path, addr: Ipv4Addr, egress: Ipv4Addr| ContainerSpec {
            id: id.to_owned(),
            netns: path.to_owned(),
            endpoints: vec![LocalEndpoint::new("ingress", "eth0", addr)],
            egress: Some(Egress { ifname: "eth1".into(), address: egress }),
        };
        let remote = |addr: Ipv4Addr, node: &Node| RemoteEndpoint::new("ingress", addr, IpAddr::V4(node.addr));
        let desired = [
            Desired {
                encryption: None,
                networks: vec![ingress.clone()],
                containers: vec![container("sbx1", &sandboxes[0].1, sandbox_addr(1), SANDBOX_EGRESS)],
                remotes: vec![remote(sandbox_addr(2), &nodes[1]), remote(TASK, &nodes[1])],
                gateway: Some(gateway.clone()),
            },
            Desired {
                encryption: None,
                networks: vec![ingress],
                containers: vec![
                    container("sbx2", &sandboxes[1].1, sandbox_addr(2), SANDBOX_EGRESS),
                    container("task", &task.1, TASK, TASK_EGRESS),
                ],
                remotes: vec![remote(sandbox_addr(1), &nodes[0])],
                gateway: Some(gateway),
            },
        ];
        narrate("overlay: the ingress network, a sandbox on each node, the task on node2");
        for (node, desired) in nodes.iter().zip(&desired) {
            world.overlay(node).reconcile(desired).expect("reconcile overlay");
        }
        // As many distributions set it: strict reverse-path filtering in the task. Clients'
        // addresses arrive on eth0 while the task's main table routes them by eth1.
        set_sysctl(&task.0, "net/ipv4/conf/all/rp_filter", "1");
        let echo = Echo::start(&task.0, TASK_PORT);
        Mesh { _echo: echo, _world: world, nodes, client: client.netns, sandboxes, task }
    }

    fn published(&self, node: usize) -> SocketAddrV4 {
        SocketAddrV4::new(self.nodes[node - 1].addr, PUBLISHED)
    }

    fn node_netns(&self, node: usize) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.nodes[node - 1].netns)
    }
}

#[test]
fn a_published_port_on_either_node_reaches_the_task_with_the_clients_address() {
    if !privileged::require("a_published_port_on_either_node_reaches_the_task", privileged::NETNS) {
        return;
    }
    let mesh = Mesh::build();
    let sandbox_addrs = [sandbox_addr(1), sandbox_addr(2)];

    narrate("publish 8080/tcp on both nodes to their sandbox; forwarding and a balancer in each sandbox");
    for node in 1..=2 {
        let netns = mesh.node_netns(node);
        timed(&format!("publish on node{node} (first)"), || {
            mesh::publish(Some(&netns), PUBLISH_TABLE, &publish_to_sandbox()).expect("publish")
        });
        let (name, path) = &mesh.sandboxes[node - 1];
        timed(&format!("enable_forwarding in sbx{node}"), || mesh::enable_forwarding(path).expect("forwarding"));
        assert_eq!(sysctl(name, "net/ipv4/ip_forward"), "1");
        assert_eq!(sysctl(name, "net/ipv4/conf/all/rp_filter"), "2");
        let mut lb = NftBalancer::open(&Netns::Path(path.clone()), "shoal_lb").expect("open balancer");
        let backends = vec![Backend::new(TASK, TASK_PORT)];
        let tcp = Service { key: ServiceKey::tcp(SANDBOX_EGRESS, PUBLISHED), backends, source_nat: false };
        let udp = Service { key: ServiceKey::udp(SANDBOX_EGRESS, PUBLISHED), ..tcp.clone() };
        lb.set(&[tcp, udp]).expect("balance to the task");
    }

    narrate("control: without return routes the task's replies take its default route, and nothing answers");
    let (via1, via2) = std::thread::scope(|s| {
        let one = s.spawn(|| seen_by_task(&mesh.client, mesh.published(1)));
        let two = s.spawn(|| seen_by_task(&mesh.client, mesh.published(2)));
        (one.join().expect("thread"), two.join().expect("thread"))
    });
    assert!(via1.is_err() && via2.is_err(), "no answer without return routes: {via1:?} {via2:?}");

    narrate("return routes in the task for both sandboxes");
    let task_path = &mesh.task.1;
    timed("return_routes (first)", || mesh::return_routes(task_path, "eth0", &sandbox_addrs).expect("return routes"));
    assert_eq!(sysctl(&mesh.task.0, "net/ipv4/conf/eth0/rp_filter"), "2");
    for node in 1..=2 {
        let seen = seen_by_task(&mesh.client, mesh.published(node))
            .unwrap_or_else(|e| panic!("client to node{node}:{PUBLISHED}: {e}"));
        assert_eq!(seen, CLIENT.to_string(), "the task sees the client's own address through node{node}");
    }
    narrate("udp too, from a server bound to 0.0.0.0: the reply's source is set from the recorded flow");
    for node in 1..=2 {
        let seen = udp_seen_by_task(&mesh.client, mesh.published(node))
            .unwrap_or_else(|e| panic!("client to node{node}:{PUBLISHED}/udp: {e}"));
        assert_eq!(seen, CLIENT.to_string(), "udp through node{node}");
    }

    narrate(
        "control: strict rp_filter on the task's eth0 drops the clients' packets; the next call makes it loose again",
    );
    set_sysctl(&mesh.task.0, "net/ipv4/conf/eth0/rp_filter", "1");
    let strict = seen_by_task(&mesh.client, mesh.published(2));
    assert!(strict.is_err(), "the client's address arrives on eth0, routed by eth1: {strict:?}");
    mesh::return_routes(task_path, "eth0", &sandbox_addrs).expect("repair rp_filter");
    assert_eq!(sysctl(&mesh.task.0, "net/ipv4/conf/eth0/rp_filter"), "2");
    assert_eq!(seen_by_task(&mesh.client, mesh.published(2)).as_deref(), Ok("192.0.2.20"));

    let cross = median_hello(&mesh.client, mesh.published(1), 40);
    let local = median_hello(&mesh.client, mesh.published(2), 40);
    eprintln!(
        "timing: connect + greeting, median of 40: via node1 (VXLAN to node2) {cross:.2?}, via node2 {local:.2?}"
    );

    narrate("clients inside the node namespaces: the node's own address works, 127.0.0.1 is not published");
    for node in 1..=2 {
        let netns = &mesh.nodes[node - 1].netns;
        let seen = seen_by_task(netns, mesh.published(node)).expect("a client on the node to its own address");
        assert_eq!(seen, mesh.nodes[node - 1].addr.to_string(), "node{node}");
        let loopback = seen_by_task(netns, SocketAddrV4::new(Ipv4Addr::LOCALHOST, PUBLISHED));
        assert!(loopback.is_err(), "127.0.0.1 is left alone: {loopback:?}");
    }

    narrate("calling everything again changes nothing");
    let before: Vec<Option<String>> = (0..2).map(|i| nft_table(&mesh.nodes[i].netns, PUBLISH_TABLE)).collect();
    let task_before = (nft_table(&mesh.task.0, mesh::TASK_TABLE), mesh_routing(&mesh.task.0));
    for node in 1..=2 {
        let netns = mesh.node_netns(node);
        timed(&format!("publish on node{node} (no change)"), || {
            mesh::publish(Some(&netns), PUBLISH_TABLE, &publish_to_sandbox()).expect("publish again")
        });
    }
    timed("return_routes (no change)", || mesh::return_routes(task_path, "eth0", &sandbox_addrs).expect("again"));
    let after: Vec<Option<String>> = (0..2).map(|i| nft_table(&mesh.nodes[i].netns, PUBLISH_TABLE)).collect();
    assert_eq!(before, after, "publish tables untouched (handles included)");
    assert_eq!(task_before, (nft_table(&mesh.task.0, mesh::TASK_TABLE), mesh_routing(&mesh.task.0)));
    let routing = &task_before.1;
    assert!(routing.contains("fwmark 0x5348ff02 lookup 1397292802"), "{routing}");
    assert!(routing.contains("default via 198.18.255.3 dev eth0 table 1397292803"), "{routing}");

    narrate("a connection through node1 held open across changes of the published ports and of the other sandbox");
    let (mut held, seen) = hello(&mesh.client, mesh.published(1)).expect("connect through node1");
    assert_eq!(seen, CLIENT.to_string());
    let more = [publish_to_sandbox(), vec![Publish { port: 9090, ..publish_to_sandbox()[0] }]].concat();
    assert_eq!(more.len(), 3);
    mesh::publish(Some(&mesh.node_netns(1)), PUBLISH_TABLE, &more).expect("publish two ports");
    assert_ne!(nft_table(&mesh.nodes[0].netns, PUBLISH_TABLE), before[0], "the table changed");

    narrate("sandbox2 removed from the return routes: its rule, table and mark go; node1's path and connection stay");
    timed("return_routes (one removed)", || {
        mesh::return_routes(task_path, "eth0", &sandbox_addrs[..1]).expect("only sandbox1")
    });
    let routing = mesh_routing(&mesh.task.0);
    assert!(!routing.contains("0x5348ff03") && !routing.contains("1397292803"), "sandbox2's rule and table: {routing}");
    assert!(routing.contains("fwmark 0x5348ff02 lookup 1397292802"), "{routing}");
    let marks = nft_table(&mesh.task.0, mesh::TASK_TABLE).expect("mark table");
    assert!(marks.contains("02:42:c6:12:ff:02") && !marks.contains("02:42:c6:12:ff:03"), "{marks}");
    assert!(still_echoes(&mut held), "the held connection through node1 still works");
    assert_eq!(seen_by_task(&mesh.client, mesh.published(1)).as_deref(), Ok("192.0.2.20"));
    let cut = seen_by_task(&mesh.client, mesh.published(2));
    assert!(cut.is_err(), "through node2 the reply no longer finds its sandbox: {cut:?}");

    narrate("and back");
    mesh::return_routes(task_path, "eth0", &sandbox_addrs).expect("both again");
    assert_eq!(seen_by_task(&mesh.client, mesh.published(2)).as_deref(), Ok("192.0.2.20"));
    assert_eq!(mesh_routing(&mesh.task.0), task_before.1, "the same rules and tables as before");

    narrate("empty lists remove everything");
    mesh::return_routes(task_path, "eth0", &[]).expect("none");
    assert_eq!(mesh_routing(&mesh.task.0), "", "no rule at the mesh's priority, no mesh table");
    assert_eq!(nft_table(&mesh.task.0, mesh::TASK_TABLE), None);
    for node in 1..=2 {
        mesh::publish(Some(&mesh.node_netns(node)), PUBLISH_TABLE, &[]).expect("unpublish");
        assert_eq!(nft_table(&mesh.nodes[node - 1].netns, PUBLISH_TABLE), None, "node{node}");
        mesh::publish(Some(&mesh.node_netns(node)), PUBLISH_TABLE, &[]).expect("unpublish again: nothing to do");
    }
    let gone = seen_by_task(&mesh.client, mesh.published(1));
    assert!(gone.is_err(), "nothing published: {gone:?}");
    drop(held);
}

#[test]
fn publish_replaces_its_table_only_when_the_list_changes() {
    if !privileged::require("publish_replaces_its_table_only_when_the_list_changes", privileged::NETNS) {
        return;
    }
    let world = World::new(1);
    let node = world.node(1);
    let to = |port| SocketAddrV4::new(SANDBOX_EGRESS, port);
    let a = Publish { protocol: Protocol::Tcp, port: 8080, to: to(8080) };
    let b = Publish { protocol: Protocol::Udp, port: 8080, to: to(53) };
    let c = Publish { protocol: Protocol::Sctp, port: 9000, to: to(9000) };
    // `None` is the caller's own namespace: call it from a thread inside the node's.
    let publish_here = |ports: Vec<Publish>| {
        in_netns(&node.netns, move || mesh::publish(None, PUBLISH_TABLE, &ports)).expect("enter node")
    };
    publish_here(vec![a, b]).expect("publish two");
    let first = nft_table(&node.netns, PUBLISH_TABLE).expect("table made");
    assert!(
        first.contains("tcp . 8080 : 198.19.0.2 . 8080") && first.contains("udp . 8080 : 198.19.0.2 . 53"),
        "{first}"
    );
    publish_here(vec![b, a]).expect("the same in another order");
    assert_eq!(nft_table(&node.netns, PUBLISH_TABLE).as_ref(), Some(&first), "untouched");
    publish_here(vec![a, b, c]).expect("three");
    let third = nft_table(&node.netns, PUBLISH_TABLE).expect("table");
    assert!(third.contains("sctp . 9000 : 198.19.0.2 . 9000"), "{third}");
    assert_eq!(third.matches("chain ").count(), 2, "replaced, not added to: {third}");
    let err = publish_here(vec![a, Publish { to: to(8081), ..a }]).expect_err("duplicate");
    assert!(err.to_string().contains("8080/tcp is published twice"), "{err}");
    assert_eq!(nft_table(&node.netns, PUBLISH_TABLE).as_ref(), Some(&third), "a refused list changes nothing");
    publish_here(vec![]).expect("none");
    assert_eq!(nft_table(&node.netns, PUBLISH_TABLE), None);

    narrate("errors name the namespace");
    let not_a_netns = world.cluster.dir().join("not-a-namespace");
    std::fs::write(&not_a_netns, "").expect("write file");
    let err = mesh::publish(Some(&not_a_netns), PUBLISH_TABLE, &[a]).expect_err("a plain file");
    assert!(matches!(err, MeshError::Netns { .. }), "{err}");
    assert!(err.to_string().contains(&not_a_netns.display().to_string()), "{err}");
}

#[test]
fn return_routes_keep_exactly_the_given_sandboxes_and_repair_damage() {
    if !privileged::require("return_routes_keep_exactly_the_given_sandboxes", privileged::NETNS) {
        return;
    }
    let world = World::new(1);
    let (name, path) = world.netns("task");
    run("ip", &["-n", &name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]);
    run("ip", &["-n", &name, "addr", "add", "198.18.255.10/24", "dev", "eth0"]);
    run("ip", &["-n", &name, "link", "set", "eth0", "up"]);
    run("ip", &["-n", &name, "link", "set", "peer0", "up"]);
    let three = [sandbox_addr(1), sandbox_addr(2), sandbox_addr(3)];
    mesh::return_routes(&path, "eth0", &three).expect("three sandboxes");
    let converged = (mesh_routing(&name), nft_table(&name, mesh::TASK_TABLE));
    assert_eq!(converged.0.matches("lookup 13972").count(), 3, "{}", converged.0);

    narrate("a restarted agent finds the same state and changes nothing");
    mesh::return_routes(&path, "eth0", &[sandbox_addr(3), sandbox_addr(1), sandbox_addr(2)]).expect("again");
    assert_eq!((mesh_routing(&name), nft_table(&name, mesh::TASK_TABLE)), converged);

    narrate("damage: a rule deleted, a stray rule at the mesh's priority, an extra route, a wrong gateway");
    run("ip", &["-n", &name, "rule", "del", "pref", "10000", "fwmark", "0x5348ff02", "lookup", "1397292802"]);
    run("ip", &["-n", &name, "rule", "add", "pref", "10000", "fwmark", "0x7", "lookup", "1397292999"]);
    run("ip", &["-n", &name, "route", "add", "198.19.7.0/24", "dev", "eth0", "table", "1397292803"]);
    run(
        "ip",
        &["-n", &name, "route", "replace", "default", "via", "198.18.255.9", "dev", "eth0", "table", "1397292804"],
    );
    run("ip", &["-n", &name, "route", "add", "default", "via", "198.18.255.9", "dev", "eth0", "table", "1397292999"]);
    mesh::return_routes(&path, "eth0", &three).expect("repair");
    assert_eq!((mesh_routing(&name), nft_table(&name, mesh::TASK_TABLE)), converged, "repaired exactly");

    narrate("one sandbox left, then none");
    mesh::return_routes(&path, "eth0", &three[1..2]).expect("one");
    let one = mesh_routing(&name);
    assert_eq!(one.matches("lookup 13972").count(), 1, "{one}");
    assert!(one.contains("fwmark 0x5348ff03 lookup 1397292803"), "{one}");
    mesh::return_routes(&path, "eth0", &[]).expect("none");
    assert_eq!(mesh_routing(&name), "");
    assert_eq!(nft_table(&name, mesh::TASK_TABLE), None);

    narrate("errors name the namespace and what failed");
    let err = mesh::return_routes(&path, "eth9", &three[..1]).expect_err("no such interface");
    let message = err.to_string();
    assert!(matches!(err, MeshError::Ip { .. }), "{message}");
    assert!(message.contains(&path.display().to_string()) && message.contains("dev eth9"), "{message}");
}

//! Privileged tests in namespaces made by the test: two nodes on an underlay, overlays between
//! them, and what the kernel ends up with.

// Tests print timings and narrate their steps on stderr.
#![allow(clippy::print_stderr)]

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Instant;

use shoal_overlay::{ContainerSpec, Dataplane as _, Desired, Egress, GatewayBridge, LocalEndpoint, Op, RemoteEndpoint};
use shoal_testkit::privileged;
use support::{World, ip_in, narrate, netns_with_prefix, network, no_reply, ping};

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

fn remote(network: &str, address: Ipv4Addr, node: Ipv4Addr) -> RemoteEndpoint {
    RemoteEndpoint::new(network, address, IpAddr::V4(node))
}

#[test]
fn containers_on_two_nodes_reach_each_other_and_teardown_leaves_nothing() {
    if !privileged::require("containers_on_two_nodes_reach_each_other", privileged::NETNS) {
        return;
    }
    let world = World::new(2);
    let (n1, n2) = (world.node(1), world.node(2));
    let v6 = |s: &str| -> std::net::Ipv6Addr { s.parse().expect("ipv6") };
    let net = network("blue", 4097, 0).with_subnet("fd00:18::/64".parse().expect("cidr"), IpAddr::V6(v6("fd00:18::1")));
    let (a1, a2) = (ip(198, 18, 0, 2), ip(198, 18, 0, 3));
    let (c1_ns, mut c1) = world.container("c1", &[("blue", a1)]);
    let (c2_ns, mut c2) = world.container("c2", &[("blue", a2)]);
    c1.endpoints[0] = c1.endpoints[0].clone().with_ipv6(v6("fd00:18::2"));
    c2.endpoints[0] = c2.endpoints[0].clone().with_ipv6(v6("fd00:18::3"));
    let dual = |address: Ipv4Addr, six: &str, node: Ipv4Addr| {
        let mut endpoint = remote("blue", address, node);
        endpoint.addresses.push(IpAddr::V6(v6(six)));
        endpoint
    };
    let desired1 = Desired {
        encryption: None,
        networks: vec![net.clone()],
        containers: vec![c1],
        remotes: vec![dual(a2, "fd00:18::3", n2.addr)],
        gateway: None,
    };
    let desired2 = Desired {
        encryption: None,
        networks: vec![net],
        containers: vec![c2],
        remotes: vec![dual(a1, "fd00:18::2", n1.addr)],
        gateway: None,
    };
    let mut o1 = world.overlay(&n1);
    let mut o2 = world.overlay(&n2);
    narrate("apply on both nodes");
    assert!(!o1.reconcile(&desired1).expect("reconcile node1").applied.is_empty());
    o2.reconcile(&desired2).expect("reconcile node2");

    narrate("what the kernel has: sandbox, VXLAN without learning, eth0 with the Docker MAC");
    let sandbox = format!("{}-node1-blue", world.cluster.prefix());
    let vxlan = ip_in(&sandbox, &["-d", "link", "show", "shl-vx4097"]);
    assert!(vxlan.contains("vxlan id 4097") && vxlan.contains("dstport 4789"), "{vxlan}");
    assert!(vxlan.contains("nolearning") && vxlan.contains("proxy") && vxlan.contains("mtu 1450"), "{vxlan}");
    assert!(vxlan.contains("master shl-br"), "{vxlan}");
    let eth0 = ip_in(&c1_ns, &["addr", "show", "eth0"]);
    assert!(
        eth0.contains("02:42:c6:12:00:02") && eth0.contains("198.18.0.2/24") && eth0.contains("mtu 1450"),
        "{eth0}"
    );
    let fdb = std::process::Command::new("bridge")
        .args(["-n", &sandbox, "fdb", "show", "dev", "shl-vx4097"])
        .output()
        .expect("bridge fdb");
    let fdb = String::from_utf8_lossy(&fdb.stdout);
    let entry = fdb.lines().find(|l| l.starts_with("02:42:c6:12:00:03 dst 192.0.2.12")).unwrap_or_default();
    assert!(entry.contains("self permanent"), "{fdb}");
    assert!(!fdb.contains("00:00:00:00:00:00"), "no default (flooding) entry: {fdb}");
    let details = vxlan.lines().find(|l| l.trim_start().starts_with("vxlan id")).unwrap_or_default();
    assert!(
        !details.contains("group") && !details.contains("remote"),
        "no multicast group, no default remote: {vxlan}"
    );

    narrate("c1 -> c2 and back over VXLAN");
    assert!(ping(&c1_ns, a2), "c1 reaches c2");
    assert!(ping(&c2_ns, a1), "c2 reaches c1");
    assert!(ping(&c1_ns, "198.18.0.1"), "c1 reaches its gateway");
    narrate("and over IPv6 (neighbour discovery answered by the VXLAN proxy)");
    assert!(ping(&c1_ns, "fd00:18::3"), "c1 reaches c2 over IPv6");
    narrate("applying again changes nothing");
    assert_eq!(o1.reconcile(&desired1).expect("reconcile again").applied, vec![], "second apply on node1");

    narrate("teardown of blue on node1");
    let report = o1.teardown("blue").expect("teardown");
    assert_eq!(report.applied, vec![Op::DeleteSandbox { network: "blue".into() }]);
    assert!(!netns_with_prefix(&sandbox).contains(&sandbox), "sandbox namespace removed");
    assert!(!ip_in(&c1_ns, &["link"]).contains("eth0"), "c1's eth0 left with the sandbox");
    assert!(!ip_in(&n1.netns, &["link"]).contains("shl-"), "nothing of ours is left in node1");
    assert!(no_reply(&c2_ns, a1), "c2 no longer reaches c1");
    narrate("teardown_all on node2");
    o2.teardown_all().expect("teardown all");
    assert!(netns_with_prefix(&format!("{}-node2-", world.cluster.prefix())).is_empty());
}

#[test]
fn three_networks_are_isolated_from_each_other() {
    if !privileged::require("three_networks_are_isolated_from_each_other", privileged::NETNS) {
        return;
    }
    let world = World::new(2);
    let (n1, n2) = (world.node(1), world.node(2));
    // The same subnet on all three: only the VNI and the sandbox keep them apart.
    let names = ["blue", "red", "green"];
    let nets: Vec<_> = names.iter().zip(4101..).map(|(name, vni)| network(name, vni, 0)).collect();
    let mut desired = [Desired::default(), Desired::default()];
    let mut containers = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let offset = u8::try_from(i * 2).expect("small");
        let (a1, a2) = (ip(198, 18, 0, 2 + offset), ip(198, 18, 0, 3 + offset));
        let (ns1, c1) = world.container(&format!("{name}1"), &[(name, a1)]);
        let (ns2, c2) = world.container(&format!("{name}2"), &[(name, a2)]);
        desired[0].containers.push(c1);
        desired[1].containers.push(c2);
        desired[0].remotes.push(remote(name, a2, n2.addr));
        desired[1].remotes.push(remote(name, a1, n1.addr));
        containers.push((ns1, ns2, a1, a2));
    }
    for (d, node) in desired.iter_mut().zip([&n1, &n2]) {
        d.networks = nets.clone();
        world.overlay(node).reconcile(d).expect("reconcile");
    }
    // Every container on node1 pings every container on node2 (and its neighbour on node1), at
    // once: the unanswered pings each wait out their timeout.
    let mut probes = Vec::new();
    for (i, (ns1, _, a1, _)) in containers.iter().enumerate() {
        for (j, (_, _, _, a2)) in containers.iter().enumerate() {
            probes.push((format!("{}1 -> {}2", names[i], names[j]), ns1.clone(), a2.to_string(), i == j));
        }
        for (j, (ns_other, _, _, _)) in containers.iter().enumerate().filter(|(j, _)| *j != i) {
            probes.push((
                format!("{}1 -> {}1 (same node)", names[j], names[i]),
                ns_other.clone(),
                a1.to_string(),
                false,
            ));
        }
    }
    for ((_, ns2, a1, _), name) in containers.iter().zip(names) {
        probes.push((format!("{name}2 -> {name}1"), ns2.clone(), a1.to_string(), true));
    }
    let results: Vec<(String, bool, bool)> = std::thread::scope(|scope| {
        let running: Vec<_> = probes
            .iter()
            .map(|(name, from, to, want)| {
                scope.spawn(move || (name.clone(), if *want { ping(from, to) } else { !no_reply(from, to) }, *want))
            })
            .collect();
        running.into_iter().map(|t| t.join().expect("ping thread")).collect()
    });
    for (name, reached, _) in &results {
        narrate(&format!("{name}: {}", if *reached { "reached" } else { "no reply" }));
    }
    let wrong: Vec<&String> = results.iter().filter(|(_, reached, want)| reached != want).map(|(n, ..)| n).collect();
    assert!(wrong.is_empty(), "unexpected reachability: {wrong:?}");
}

#[test]
fn removing_a_remote_endpoint_cuts_only_that_endpoint() {
    if !privileged::require("removing_a_remote_endpoint_cuts_only_that_endpoint", privileged::NETNS) {
        return;
    }
    let world = World::new(2);
    let (n1, n2) = (world.node(1), world.node(2));
    let net = network("blue", 4097, 0);
    let (a1, a2, a3) = (ip(198, 18, 0, 2), ip(198, 18, 0, 3), ip(198, 18, 0, 4));
    let (c1_ns, c1) = world.container("c1", &[("blue", a1)]);
    let (_, c2) = world.container("c2", &[("blue", a2)]);
    let (_, c3) = world.container("c3", &[("blue", a3)]);
    let mut desired1 = Desired {
        encryption: None,
        networks: vec![net.clone()],
        containers: vec![c1],
        remotes: vec![remote("blue", a2, n2.addr), remote("blue", a3, n2.addr)],
        gateway: None,
    };
    let desired2 = Desired {
        encryption: None,
        networks: vec![net],
        containers: vec![c2, c3],
        remotes: vec![remote("blue", a1, n1.addr)],
        gateway: None,
    };
    let mut o1 = world.overlay(&n1);
    o1.reconcile(&desired1).expect("reconcile node1");
    world.overlay(&n2).reconcile(&desired2).expect("reconcile node2");
    assert!(ping(&c1_ns, a2) && ping(&c1_ns, a3), "c1 reaches both");

    narrate("remove c3 from node1's remote endpoints");
    desired1.remotes.pop();
    let applied: Vec<String> =
        o1.reconcile(&desired1).expect("reconcile").applied.iter().map(|o| o.to_string()).collect();
    assert_eq!(
        applied,
        vec![
            "network blue: delete fdb 02:42:c6:12:00:04 dst 192.0.2.12 on shl-vx4097",
            "network blue: delete neighbour 198.18.0.4 on shl-vx4097",
        ],
        "only c3's entries are touched"
    );
    assert!(no_reply(&c1_ns, a3), "c3 is cut off");
    assert!(ping(&c1_ns, a2), "c2 still reachable");
}

#[test]
fn a_restarted_planner_adopts_existing_state_and_repairs_damage() {
    if !privileged::require("a_restarted_planner_adopts_existing_state", privileged::NETNS) {
        return;
    }
    let world = World::new(2);
    let (n1, n2) = (world.node(1), world.node(2));
    let gateway =
        GatewayBridge { subnet: "198.19.255.0/24".parse().expect("cidr"), address: ip(198, 19, 255, 1), mtu: 1500 };
    let net =
        network("blue", 4097, 0).with_subnet("fd00:18::/64".parse().expect("cidr"), "fd00:18::1".parse().expect("v6"));
    let (a1, a2) = (ip(198, 18, 0, 2), ip(198, 18, 0, 3));
    let (c1_ns, mut c1) = world.container("c1", &[("blue", a1)]);
    c1.endpoints[0] = c1.endpoints[0].clone().with_ipv6("fd00:18::2".parse().expect("v6"));
    c1.egress = Some(Egress { ifname: "eth1".into(), address: ip(198, 19, 255, 2) });
    let mut peer = remote("blue", a2, n2.addr);
    peer.addresses.push("fd00:18::3".parse().expect("v6"));
    let desired = Desired {
        encryption: None,
        networks: vec![net.clone()],
        containers: vec![c1],
        remotes: vec![peer],
        gateway: Some(gateway),
    };
    world.overlay(&n1).reconcile(&desired).expect("first reconcile");

    narrate("a new planner (as after an agent restart) finds nothing to do");
    let mut restarted = world.overlay(&n1);
    assert_eq!(restarted.plan(&desired).expect("plan"), vec![], "adopted, not recreated");
    assert!(ip_in(&c1_ns, &["-6", "addr", "show", "eth0"]).contains("fd00:18::2/64"), "IPv6 address on eth0");

    narrate("damage: c1's eth0 deleted, a neighbour entry deleted, forwarding off");
    let sandbox = format!("{}-node1-blue", world.cluster.prefix());
    ip_in(&c1_ns, &["link", "del", "eth0"]);
    ip_in(&sandbox, &["neigh", "del", "198.18.0.3", "dev", "shl-vx4097"]);
    let off = std::process::Command::new("ip")
        .args(["netns", "exec", &n1.netns, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"])
        .status()
        .expect("sysctl");
    assert!(off.success());
    let report = restarted.reconcile(&desired).expect("repair");
    let applied: Vec<String> = report.applied.iter().map(|o| o.to_string()).collect();
    // The veth's sandbox end died with eth0, so the endpoint is simply made again.
    assert_eq!(applied.len(), 3, "{applied:#?}");
    assert!(applied[0].contains("neighbour 198.18.0.3"), "{applied:#?}");
    assert!(applied[1].contains("forwarding"), "{applied:#?}");
    assert!(applied[2].contains("create endpoint"), "{applied:#?}");
    assert_eq!(restarted.plan(&desired).expect("plan"), vec![], "converged");

    narrate("a VXLAN device stranded in the node namespace (crash before the move) is removed");
    ip_in(&n1.netns, &["link", "add", "shl-vx4099", "type", "vxlan", "id", "4099", "dstport", "4789"]);
    let report = restarted.reconcile(&desired).expect("sweep stray");
    assert_eq!(report.applied.len(), 1, "{:?}", report.applied);
    assert!(!ip_in(&n1.netns, &["link"]).contains("shl-vx4099"));
}

#[test]
fn five_hundred_endpoints_on_one_network_apply_and_converge() {
    if !privileged::require("five_hundred_endpoints_on_one_network", privileged::NETNS) {
        return;
    }
    const LOCAL: usize = 500;
    let world = World::new(2);
    let (n1, n2) = (world.node(1), world.node(2));
    // A /22 holds 500 local and 500 remote endpoints.
    let mut net = network("big", 4200, 0);
    net.subnets[0].cidr = "198.18.0.0/22".parse().expect("cidr");
    let address = |i: usize| {
        let n = u32::from(ip(198, 18, 0, 10)) + u32::try_from(i).expect("small");
        Ipv4Addr::from(n)
    };
    let paths = world.container_netns_many("e", LOCAL);
    let containers: Vec<ContainerSpec> = paths
        .iter()
        .enumerate()
        .map(|(i, path)| ContainerSpec {
            id: format!("e{i}"),
            netns: path.clone(),
            endpoints: vec![LocalEndpoint::new("big", "eth0", address(i))],
            egress: None,
        })
        .collect();
    let remotes: Vec<RemoteEndpoint> = (LOCAL..LOCAL * 2).map(|i| remote("big", address(i), n2.addr)).collect();
    let desired = Desired { encryption: None, networks: vec![net], containers, remotes, gateway: None };
    let mut o1 = world.overlay(&n1);
    let start = Instant::now();
    let report = o1.reconcile(&desired).expect("reconcile");
    let first = start.elapsed();
    let start = Instant::now();
    let again = o1.reconcile(&desired).expect("reconcile again");
    let second = start.elapsed();
    eprintln!(
        "{LOCAL} local endpoints + {LOCAL} remote endpoints on one network: first apply {} ops in {first:.2?}, \
         no-change pass in {second:.2?}",
        report.applied.len()
    );
    // The times are printed, not checked: speed is for the overlay bench to measure.
    assert_eq!(again.applied, vec![]);
    let first_ns = paths[0].file_name().and_then(|n| n.to_str()).expect("name").to_owned();
    assert!(ping(&first_ns, address(LOCAL - 1)), "first local endpoint reaches the last");
}

#[test]
fn internal_networks_have_no_egress_and_normal_ones_masquerade_out() {
    if !privileged::require("internal_networks_have_no_egress", privileged::NETNS) {
        return;
    }
    let world = World::new(1);
    let n1 = world.node(1);
    narrate("a fake outside: its own namespace at 203.0.113.1, on a link from node1, with no route back");
    let (outside, _) = world.container_netns("out");
    ip_in(&n1.netns, &["link", "add", "out0", "type", "veth", "peer", "name", "eth0", "netns", &outside]);
    ip_in(&n1.netns, &["addr", "add", "203.0.113.2/24", "dev", "out0"]);
    ip_in(&n1.netns, &["link", "set", "out0", "up"]);
    ip_in(&outside, &["addr", "add", "203.0.113.1/24", "dev", "eth0"]);
    ip_in(&outside, &["link", "set", "eth0", "up"]);

    let gateway =
        GatewayBridge { subnet: "198.19.255.0/24".parse().expect("cidr"), address: ip(198, 19, 255, 1), mtu: 1500 };
    let (open_ns, mut open) = world.container("open", &[("blue", ip(198, 18, 0, 2))]);
    open.egress = Some(Egress { ifname: "eth1".into(), address: ip(198, 19, 255, 2) });
    let (closed_ns, mut closed) = world.container("closed", &[("vault", ip(198, 18, 1, 2))]);
    closed.egress = Some(Egress { ifname: "eth1".into(), address: ip(198, 19, 255, 3) });
    let (other_ns, mut other) = world.container("other", &[("green", ip(198, 18, 2, 2))]);
    other.egress = Some(Egress { ifname: "eth1".into(), address: ip(198, 19, 255, 4) });
    let desired = Desired {
        encryption: None,
        networks: vec![network("blue", 4301, 0), network("vault", 4302, 1).internal(), network("green", 4303, 2)],
        containers: vec![open, closed, other],
        remotes: vec![],
        gateway: Some(gateway),
    };
    let mut overlay = world.overlay(&n1);
    overlay.reconcile(&desired).expect("reconcile");

    narrate("the normal network's container reaches the outside through masquerade");
    assert!(ping(&open_ns, "203.0.113.1"), "egress through the gateway bridge");
    assert!(ip_in(&open_ns, &["route", "show", "default"]).contains("via 198.19.255.1 dev eth1"));
    assert!(ping(&open_ns, "198.19.255.1"), "the gateway answers");
    narrate("the internal network's container has no route out");
    assert_eq!(ip_in(&closed_ns, &["route", "show", "default"]).trim(), "", "no default route");
    assert!(!ip_in(&closed_ns, &["link"]).contains("eth1"), "no egress link");
    assert!(no_reply(&closed_ns, "203.0.113.1"), "internal: no egress");
    narrate("containers of different networks do not meet on the gateway bridge (isolated ports)");
    assert!(ping(&other_ns, "203.0.113.1"), "green has egress too");
    assert!(no_reply(&open_ns, "198.19.255.4"), "blue -> green's egress address");
    assert!(no_reply(&other_ns, "198.19.255.2"), "green -> blue's egress address");

    narrate("without the masquerade rule the outside cannot answer; reconcile puts it back");
    let nft = std::process::Command::new("ip")
        .args(["netns", "exec", &n1.netns, "nft", "delete", "table", "ip", "shoal_overlay"])
        .status()
        .expect("nft");
    assert!(nft.success());
    assert!(no_reply(&open_ns, "203.0.113.1"), "no masquerade, no reply");
    let repaired = overlay.reconcile(&desired).expect("repair");
    assert!(matches!(repaired.applied.as_slice(), [Op::SetMasquerade { .. }]), "{:?}", repaired.applied);
    assert!(ping(&open_ns, "203.0.113.1"), "egress again");

    narrate("teardown_all removes the gateway bridge, egress links and the table");
    overlay.teardown_all().expect("teardown all");
    assert!(!ip_in(&n1.netns, &["link"]).contains("shl-"), "no links of ours in node1");
    let tables = std::process::Command::new("ip")
        .args(["netns", "exec", &n1.netns, "nft", "list", "tables"])
        .output()
        .expect("nft");
    assert!(!String::from_utf8_lossy(&tables.stdout).contains("shoal_overlay"));
}

#[test]
fn missing_namespaces_are_reported_and_errors_name_what_failed() {
    if !privileged::require("missing_namespaces_are_reported", privileged::NETNS) {
        return;
    }
    let world = World::new(1);
    let n1 = world.node(1);
    let mut overlay = world.overlay(&n1);
    let desired = Desired {
        encryption: None,
        networks: vec![network("blue", 4097, 0)],
        containers: vec![],
        ..Default::default()
    };
    // A sandbox file without a namespace behind it (a crash before the mount) is remade.
    let sandbox = PathBuf::from(format!("/run/netns/{}-node1-blue", world.cluster.prefix()));
    std::fs::write(&sandbox, b"").expect("plant a broken sandbox");
    overlay.reconcile(&desired).expect("network alone");
    assert!(ip_in(sandbox.file_name().and_then(|n| n.to_str()).expect("name"), &["link"]).contains("shl-br"));

    narrate("a container whose namespace is gone is reported, the others are wired");
    let (_, mut gone) = world.container("gone", &[("blue", ip(198, 18, 0, 2))]);
    let (here_ns, here) = world.container("here", &[("blue", ip(198, 18, 0, 3))]);
    gone.netns = PathBuf::from(format!("/run/netns/{}-vanished", world.cluster.prefix()));
    let with_containers = Desired { encryption: None, containers: vec![gone, here], ..desired.clone() };
    let report = overlay.reconcile(&with_containers).expect("reconcile");
    assert_eq!(report.missing, vec!["gone".to_owned()]);
    assert!(ping(&here_ns, "198.18.0.1"), "the other container is wired");

    narrate("a namespace path that is not a namespace: the error names the container and the path");
    let not_netns = world.cluster.dir().join("not-a-netns");
    std::fs::write(&not_netns, b"").expect("write file");
    let (_, mut odd) = world.container("odd", &[("blue", ip(198, 18, 0, 4))]);
    odd.netns.clone_from(&not_netns);
    let err = overlay
        .reconcile(&Desired { encryption: None, containers: vec![odd], ..desired })
        .expect_err("not a namespace")
        .to_string();
    assert!(err.contains("container odd") && err.contains(&not_netns.display().to_string()), "{err}");
    eprintln!("error: {err}");

    narrate("an operation on a device that is not there names the network, device and namespace");
    let op = Op::SetFdb {
        network: "blue".into(),
        vxlan: "shl-vx9".into(),
        mac: shoal_overlay::MacAddr::from_ipv4(ip(198, 18, 0, 9)),
        node: IpAddr::V4(ip(192, 0, 2, 12)),
    };
    let naming = overlay.naming().clone();
    let err = overlay.dataplane_mut().apply(&op, &naming).expect_err("no such device").to_string();
    overlay.dataplane_mut().finish();
    assert!(
        err.contains("network blue") && err.contains("shl-vx9 in namespace") && err.contains("-node1-blue"),
        "{err}"
    );
    eprintln!("error: {err}");
}

/// `XfrmOutPolBlock` of `xfrm_stat` in namespace `netns`: datagrams a block policy dropped
/// (`/proc/net` is the main thread's namespace; `thread-self` is the one entered).
fn blocked_by_policy(netns: &str) -> u64 {
    let stat = shoal_testkit::in_netns(netns, || std::fs::read_to_string("/proc/thread-self/net/xfrm_stat"))
        .expect("enter the node namespace")
        .expect("read /proc/net/xfrm_stat");
    stat.lines()
        .find_map(|l| l.strip_prefix("XfrmOutPolBlock"))
        .and_then(|n| n.trim().parse().ok())
        .expect("XfrmOutPolBlock")
}

#[test]
fn an_encrypted_network_is_blocked_rather_than_sent_in_the_clear_on_a_kernel_without_esp() {
    if !privileged::require("an_encrypted_network_is_blocked_rather_than_sent_in_the_clear", privileged::NETNS) {
        return;
    }
    let world = World::new(2);
    let (n1, n2) = (world.node(1), world.node(2));
    let blue = network("blue", 4097, 0);
    let red = network("red", 4098, 1).encrypted();
    let (c1_ns, c1) = world.container("c1", &[("blue", ip(198, 18, 0, 2)), ("red", ip(198, 18, 1, 2))]);
    let (_, c2) = world.container("c2", &[("blue", ip(198, 18, 0, 3)), ("red", ip(198, 18, 1, 3))]);
    let desired = |container: ContainerSpec, peer: Ipv4Addr, n: u8| Desired {
        networks: vec![blue.clone(), red.clone()],
        containers: vec![container],
        remotes: vec![remote("blue", ip(198, 18, 0, n), peer), remote("red", ip(198, 18, 1, n), peer)],
        gateway: None,
        encryption: None,
    };
    let (mut d1, d2) = (desired(c1, n2.addr, 3), desired(c2, n1.addr, 2));
    let (mut o1, mut o2) = (world.overlay(&n1), world.overlay(&n2));

    narrate("no keys yet: the marking table and the block policy come before the sandboxes");
    let applied = o1.reconcile(&d1).expect("reconcile node1").applied;
    assert!(matches!(applied[..2], [Op::SetEspTable { .. }, Op::SetPolicy { .. }]), "{applied:#?}");
    o2.reconcile(&d2).expect("reconcile node2");
    let table = std::process::Command::new("ip")
        .args(["netns", "exec", &n1.netns, "nft", "list", "table", "ip", "shoal_esp"])
        .output()
        .expect("nft");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("@th,96,24 0x1002") && table.contains("meta mark set 0x45535000"), "{table}");
    assert!(!table.contains("0x1001") && !table.contains("4097"), "the plain network is not marked: {table}");
    let policies = ip_in(&n1.netns, &["xfrm", "policy"]);
    assert!(policies.contains("action block") && policies.contains("dport 4789"), "{policies}");
    assert_eq!(o1.reconcile(&d1).expect("again").applied, vec![], "adopted as it is");

    narrate("the plain network works; the encrypted one is dropped by the block policy");
    assert!(ping(&c1_ns, "198.18.0.3"), "blue is plain VXLAN");
    let before = blocked_by_policy(&n1.netns);
    assert!(no_reply(&c1_ns, "198.18.1.3"), "red must not get through without ESP");
    assert!(blocked_by_policy(&n1.netns) > before, "the block policy dropped red's datagrams");

    narrate("with keys, the SA is refused, with the reason; the block stays");
    d1.encryption = Some(shoal_overlay::esp::Encryption {
        local: n1.addr,
        keys: vec![shoal_overlay::esp::NetworkKey { tag: 7, key: [9; 16] }],
    });
    let err = o1.reconcile(&d1).expect_err("no ESP here");
    let shoal_overlay::ReconcileError::Apply { source, .. } = &err else { panic!("{err}") };
    assert!(source.no_esp(), "{err}");
    assert!(err.to_string().contains("this kernel has no ESP (esp4)"), "{err}");
    assert!(ip_in(&n1.netns, &["xfrm", "policy"]).contains("action block"));
    assert!(ip_in(&n1.netns, &["xfrm", "state"]).trim().is_empty(), "no SA half made");

    narrate("teardown removes the table and the policies");
    o1.teardown_all().expect("teardown");
    assert!(ip_in(&n1.netns, &["xfrm", "policy"]).trim().is_empty());
    let listed = std::process::Command::new("ip")
        .args(["netns", "exec", &n1.netns, "nft", "list", "tables"])
        .output()
        .expect("nft");
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("shoal_esp"));
    o2.teardown_all().expect("teardown node2");
}

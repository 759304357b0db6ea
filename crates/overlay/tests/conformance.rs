//! One suite for both dataplanes: the same sequence of desired states is reconciled by the kernel
//! dataplane (in namespaces made by the test) and by the fake, and after every step both must
//! have applied the same operations and observe the same state. This keeps the fake honest, so
//! that tests built on it say something about the kernel.

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use shoal_overlay::{
    Dataplane, Desired, Egress, FakeDataplane, GatewayBridge, Kernel, Observed, Overlay, RemoteEndpoint,
};
use shoal_testkit::privileged;
use support::{World, narrate, network};

fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("ipv4")
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("ipv6")
}

/// Drops what only the kernel decides (MACs of bridges, VXLAN devices and sandbox/node veth ends)
/// and container namespaces with nothing of ours in them.
fn normalize(mut observed: Observed) -> Observed {
    for sandbox in observed.sandboxes.values_mut() {
        if let Some(bridge) = &mut sandbox.bridge {
            bridge.mac = None;
        }
        for vxlan in sandbox.vxlans.values_mut() {
            vxlan.link.mac = None;
        }
        for port in sandbox.ports.values_mut() {
            port.mac = None;
        }
    }
    if let Some(gateway) = &mut observed.node.gateway {
        gateway.mac = None;
    }
    for port in observed.node.ports.values_mut() {
        port.mac = None;
    }
    observed.containers.retain(|_, c| !c.links.is_empty() || c.default_route.is_some());
    observed
}

fn step(name: &str, desired: &Desired, kernel: &mut Overlay<Kernel>, fake: &mut Overlay<FakeDataplane>) {
    narrate(name);
    let by_kernel: Vec<String> =
        kernel.reconcile(desired).expect("kernel reconcile").applied.iter().map(|o| o.to_string()).collect();
    let by_fake: Vec<String> =
        fake.reconcile(desired).expect("fake reconcile").applied.iter().map(|o| o.to_string()).collect();
    assert!(!by_kernel.is_empty(), "{name}: something to do");
    assert_eq!(by_kernel, by_fake, "{name}: the same operations");
    let naming = kernel.naming().clone();
    let seen_by_kernel = normalize(kernel.dataplane_mut().observe(desired, &naming).expect("kernel observe"));
    kernel.dataplane_mut().finish();
    let seen_by_fake = normalize(fake.dataplane_mut().observe(desired, &naming).expect("fake observe"));
    assert_eq!(seen_by_kernel, seen_by_fake, "{name}: the same state");
    assert_eq!(kernel.reconcile(desired).expect("kernel again").applied, vec![], "{name}: kernel converged");
    assert_eq!(fake.reconcile(desired).expect("fake again").applied, vec![], "{name}: fake converged");
}

#[test]
fn kernel_and_fake_dataplanes_agree_step_by_step() {
    if !privileged::require("kernel_and_fake_dataplanes_agree_step_by_step", privileged::NETNS) {
        return;
    }
    let world = World::new(1);
    let n1 = world.node(1);
    let mut kernel = world.overlay(&n1);
    let mut fake = Overlay::new(FakeDataplane::new(), kernel.naming().clone());

    let blue =
        network("blue", 4097, 0).with_subnet("fd00:18::/64".parse().expect("cidr"), IpAddr::V6(v6("fd00:18::1")));
    let red = network("red", 4098, 1).internal();
    let (_, mut c1) = world.container("c1", &[("blue", v4("198.18.0.2")), ("red", v4("198.18.1.2"))]);
    c1.endpoints[0] = c1.endpoints[0].clone().with_ipv6(v6("fd00:18::2"));
    c1.egress = Some(Egress { ifname: "eth2".into(), address: v4("198.19.255.2") });
    let (_, c2) = world.container("c2", &[("red", v4("198.18.1.3"))]);
    let mut peer = RemoteEndpoint::new("blue", v4("198.18.0.9"), IpAddr::V4(v4("192.0.2.12")));
    peer.addresses.push(IpAddr::V6(v6("fd00:18::9")));
    let mut desired = Desired {
        encryption: None,
        networks: vec![blue, red],
        containers: vec![c1, c2],
        remotes: vec![
            peer,
            RemoteEndpoint::new("blue", v4("198.18.0.10"), IpAddr::V4(v4("192.0.2.13"))),
            RemoteEndpoint::new("red", v4("198.18.1.9"), IpAddr::V4(v4("192.0.2.12"))),
        ],
        gateway: Some(GatewayBridge {
            subnet: "198.19.255.0/24".parse().expect("cidr"),
            address: v4("198.19.255.1"),
            mtu: 1500,
        }),
    };
    step("two networks, two containers, peers, egress", &desired, &mut kernel, &mut fake);

    desired.remotes.remove(1);
    desired.remotes[1].node = IpAddr::V4(v4("192.0.2.14"));
    desired.networks[1].vni = 5001;
    desired.containers[1].endpoints[0].addresses = vec![IpAddr::V4(v4("198.18.1.4"))];
    desired.containers[1].endpoints[0].mac = shoal_overlay::MacAddr::from_ipv4(v4("198.18.1.4"));
    step("a peer leaves, a peer moves, an endpoint changes address, red changes VNI", &desired, &mut kernel, &mut fake);

    desired.networks[0].mtu = 1400;
    desired.networks.truncate(1);
    desired.containers.truncate(1);
    desired.containers[0].endpoints.truncate(1);
    desired.remotes.truncate(1);
    step("red leaves the node, blue's MTU changes", &desired, &mut kernel, &mut fake);

    step("nothing left", &Desired::default(), &mut kernel, &mut fake);
}

#[test]
fn the_kernel_resumes_exactly_where_a_crashed_pass_stopped() {
    if !privileged::require("the_kernel_resumes_exactly_where_a_crashed_pass_stopped", privileged::NETNS) {
        return;
    }
    let world = World::new(1);
    let n1 = world.node(1);
    let mut kernel = world.overlay(&n1);
    let blue =
        network("blue", 4097, 0).with_subnet("fd00:18::/64".parse().expect("cidr"), IpAddr::V6(v6("fd00:18::1")));
    let (_, mut c1) = world.container("c1", &[("blue", v4("198.18.0.2"))]);
    c1.endpoints[0] = c1.endpoints[0].clone().with_ipv6(v6("fd00:18::2"));
    c1.egress = Some(Egress { ifname: "eth1".into(), address: v4("198.19.255.2") });
    let desired = Desired {
        encryption: None,
        networks: vec![blue],
        containers: vec![c1],
        remotes: vec![RemoteEndpoint::new("blue", v4("198.18.0.9"), IpAddr::V4(v4("192.0.2.12")))],
        gateway: Some(GatewayBridge {
            subnet: "198.19.255.0/24".parse().expect("cidr"),
            address: v4("198.19.255.1"),
            mtu: 1500,
        }),
    };
    // Forwarding stays on after a teardown; turn it on first so that every round plans the same.
    kernel.reconcile(&desired).expect("first pass");
    kernel.teardown_all().expect("teardown");
    let ops = kernel.plan(&desired).expect("plan");
    let naming = kernel.naming().clone();
    for crash in 0..ops.len() {
        narrate(&format!("crash after {crash} of {} operations", ops.len()));
        for op in &ops[..crash] {
            kernel.dataplane_mut().apply(op, &naming).expect("apply");
        }
        kernel.dataplane_mut().finish();
        let resumed = kernel.reconcile(&desired).expect("resume");
        assert_eq!(resumed.applied, ops[crash..], "after a crash at op {crash}, exactly the rest");
        assert_eq!(kernel.plan(&desired).expect("plan"), vec![], "converged after a crash at op {crash}");
        kernel.teardown_all().expect("teardown");
    }
}

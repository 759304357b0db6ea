//! Privileged tests in namespaces made by the test: two nodes on an underlay, overlays between
//! them, and what the kernel ends up with.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use shoal_overlay::{Desired, RemoteEndpoint};
use shoal_testkit::privileged;
use support::{World, narrate, network, ping};

fn ip(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

#[test]
fn containers_on_two_nodes_reach_each_other() {
    if !privileged::require("containers_on_two_nodes_reach_each_other", privileged::NETNS) {
        return;
    }
    let world = World::new(2);
    let (n1, n2) = (world.node(1), world.node(2));
    let net = network("blue", 4097, 0);
    let (a1, a2) = (ip(198, 18, 0, 2), ip(198, 18, 0, 3));
    let (c1_ns, c1) = world.container("c1", &[("blue", a1)]);
    let (c2_ns, c2) = world.container("c2", &[("blue", a2)]);
    let desired1 = Desired {
        networks: vec![net.clone()],
        containers: vec![c1],
        remotes: vec![RemoteEndpoint::new("blue", a2, IpAddr::V4(n2.addr))],
        gateway: None,
    };
    let desired2 = Desired {
        networks: vec![net],
        containers: vec![c2],
        remotes: vec![RemoteEndpoint::new("blue", a1, IpAddr::V4(n1.addr))],
        gateway: None,
    };
    let mut o1 = world.overlay(&n1);
    let mut o2 = world.overlay(&n2);
    narrate("apply on both nodes");
    let r1 = o1.reconcile(&desired1).expect("reconcile node1");
    o2.reconcile(&desired2).expect("reconcile node2");
    assert!(!r1.applied.is_empty());
    narrate("c1 -> c2 and back over VXLAN");
    assert!(ping(&c1_ns, a2), "c1 reaches c2");
    assert!(ping(&c2_ns, a1), "c2 reaches c1");
    assert!(ping(&c1_ns, "198.18.0.1"), "c1 reaches its gateway");
    narrate("applying again changes nothing");
    let again = o1.reconcile(&desired1).expect("reconcile again");
    assert_eq!(again.applied, vec![], "second apply on node1");
}

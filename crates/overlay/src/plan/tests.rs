//! Table tests of the planner, and convergence through the fake dataplane.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use crate::esp::{Encryption, NetworkKey};
use crate::fake::FakeDataplane;
use crate::model::{
    Cidr, ContainerSpec, Desired, Egress, GatewayBridge, LocalEndpoint, MacAddr, Naming, NetworkSpec, RemoteEndpoint,
};
use crate::plan::{Observed, Op, PlanError, plan};
use crate::xfrm::PolicyAction;
use crate::{Dataplane, Overlay};

fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("ipv4")
}

fn cidr(s: &str) -> Cidr {
    s.parse().expect("cidr")
}

fn net(id: &str, vni: u32, third: u8) -> NetworkSpec {
    NetworkSpec::new(id, vni, cidr(&format!("198.18.{third}.0/24")), IpAddr::V4(Ipv4Addr::new(198, 18, third, 1)))
}

fn container(id: &str, endpoints: Vec<LocalEndpoint>) -> ContainerSpec {
    ContainerSpec { id: id.to_owned(), netns: PathBuf::from(format!("/run/netns/{id}")), endpoints, egress: None }
}

fn remote(network: &str, ip: &str, node: &str) -> RemoteEndpoint {
    RemoteEndpoint::new(network, v4(ip), IpAddr::V4(v4(node)))
}

fn gateway() -> GatewayBridge {
    GatewayBridge { subnet: cidr("198.19.255.0/24"), address: v4("198.19.255.1"), mtu: 1500 }
}

/// What a node with nothing of ours but the desired containers' namespaces looks like.
fn bare(desired: &Desired) -> Observed {
    let mut observed = Observed::default();
    for container in &desired.containers {
        observed.containers.insert(container.netns.clone(), Default::default());
    }
    observed
}

/// The one place that calls the planner in table tests: ops rendered one per line.
fn check(desired: &Desired, observed: &Observed, expect: &str) {
    let ops = plan(desired, observed).expect("plan");
    let got: Vec<String> = ops.iter().map(ToString::to_string).collect();
    let want: Vec<&str> = expect.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert_eq!(got, want, "\nplanned:\n{}\n", got.join("\n"));
}

/// Applies `desired` to `fake` through the facade and returns the ops applied.
fn reconcile(fake: &mut Overlay<FakeDataplane>, desired: &Desired) -> Vec<Op> {
    fake.reconcile(desired).expect("reconcile").applied
}

fn one_network() -> Desired {
    Desired {
        networks: vec![net("blue", 4097, 0)],
        containers: vec![container("c1", vec![LocalEndpoint::new("blue", "eth0", v4("198.18.0.2"))])],
        remotes: vec![remote("blue", "198.18.0.3", "192.0.2.12")],
        gateway: None,
        encryption: None,
    }
}

#[test]
fn fresh_node_gets_sandbox_bridge_vxlan_endpoint_and_peer() {
    check(
        &one_network(),
        &bare(&one_network()),
        "network blue: create sandbox
         network blue: create bridge shl-br mtu 1450 addresses [198.18.0.1/24]
         network blue: create vxlan shl-vx4097 vni 4097 port 4789 mtu 1450
         network blue: fdb 02:42:c6:12:00:03 dst 192.0.2.12 on shl-vx4097
         network blue: neighbour 198.18.0.3 lladdr 02:42:c6:12:00:03 on shl-vx4097
         network blue: create endpoint shl-ve8829dfd9 <-> eth0 (02:42:c6:12:00:02, [198.18.0.2/24]) of container c1 in /run/netns/c1",
    );
}

#[test]
fn applying_twice_changes_nothing() {
    let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
    let mut desired = one_network();
    desired.networks.push(net("red", 4098, 1).with_subnet(cidr("fd00:1::/64"), "fd00:1::1".parse().expect("ip")));
    desired.containers[0]
        .endpoints
        .push(LocalEndpoint::new("red", "eth1", v4("198.18.1.2")).with_ipv6("fd00:1::2".parse().expect("ipv6")));
    desired.containers[0].egress = Some(Egress { ifname: "eth2".into(), address: v4("198.19.255.2") });
    desired.gateway = Some(gateway());
    assert!(!reconcile(&mut overlay, &desired).is_empty());
    assert_eq!(reconcile(&mut overlay, &desired), vec![]);
}

#[test]
fn a_crash_at_any_point_converges_on_the_next_pass() {
    let mut desired = one_network();
    desired.remotes.push(remote("blue", "198.18.0.4", "192.0.2.13"));
    desired.containers.push(container("c2", vec![LocalEndpoint::new("blue", "eth0", v4("198.18.0.5"))]));
    desired.containers[0].egress = Some(Egress { ifname: "eth1".into(), address: v4("198.19.255.2") });
    desired.gateway = Some(gateway());
    let total = plan(&desired, &bare(&desired)).expect("plan").len();
    for crash in 0..total {
        let mut fake = FakeDataplane::new();
        fake.fail_at = Some(crash);
        let mut overlay = Overlay::new(fake, Naming::default());
        assert!(overlay.reconcile(&desired).is_err(), "crash at {crash}");
        overlay.dataplane_mut().fail_at = None;
        let resumed = reconcile(&mut overlay, &desired);
        assert_eq!(resumed.len(), total - crash, "after a crash at op {crash}, only the rest is applied");
        assert_eq!(reconcile(&mut overlay, &desired), vec![], "converged after a crash at op {crash}");
    }
}

#[test]
fn removing_a_remote_endpoint_touches_only_its_entries() {
    let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
    let mut desired = one_network();
    desired.remotes.push(remote("blue", "198.18.0.4", "192.0.2.13"));
    reconcile(&mut overlay, &desired);
    desired.remotes.retain(|r| r.addresses[0] != IpAddr::V4(v4("198.18.0.3")));
    let ops: Vec<String> = reconcile(&mut overlay, &desired).iter().map(ToString::to_string).collect();
    assert_eq!(
        ops,
        vec![
            "network blue: delete fdb 02:42:c6:12:00:03 dst 192.0.2.12 on shl-vx4097",
            "network blue: delete neighbour 198.18.0.3 on shl-vx4097",
        ]
    );
}

#[test]
fn a_remote_endpoint_moving_to_another_node_replaces_its_fdb_entry() {
    let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
    let mut desired = one_network();
    reconcile(&mut overlay, &desired);
    desired.remotes[0].node = IpAddr::V4(v4("192.0.2.14"));
    let ops: Vec<String> = reconcile(&mut overlay, &desired).iter().map(ToString::to_string).collect();
    assert_eq!(ops, vec!["network blue: fdb 02:42:c6:12:00:03 dst 192.0.2.14 on shl-vx4097"]);
}

#[test]
fn a_network_leaving_the_node_is_torn_down_whole() {
    let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
    let mut desired = one_network();
    desired.networks.push(net("red", 4098, 1));
    desired.containers[0].endpoints.push(LocalEndpoint::new("red", "eth1", v4("198.18.1.2")));
    reconcile(&mut overlay, &desired);
    desired.networks.truncate(1);
    desired.containers[0].endpoints.truncate(1);
    let ops: Vec<String> = reconcile(&mut overlay, &desired).iter().map(ToString::to_string).collect();
    assert_eq!(ops, vec!["network red: delete sandbox"]);
    let state = &overlay.dataplane().state;
    let c1 = &state.containers[&PathBuf::from("/run/netns/c1")];
    assert_eq!(c1.links.keys().collect::<Vec<_>>(), vec!["eth0"], "the red veth left with the sandbox");
}

#[test]
fn a_container_that_left_loses_its_veths() {
    let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
    let mut desired = one_network();
    desired.gateway = Some(gateway());
    desired.containers[0].egress = Some(Egress { ifname: "eth1".into(), address: v4("198.19.255.2") });
    reconcile(&mut overlay, &desired);
    desired.containers.clear();
    let ops: Vec<String> = reconcile(&mut overlay, &desired).iter().map(ToString::to_string).collect();
    assert_eq!(
        ops,
        vec![
            "delete link shl-ve8829dfd9 in the sandbox of network blue",
            "delete link shl-eg8829dfd9 in the node namespace",
        ]
    );
}

#[test]
fn an_endpoint_with_a_wrong_address_is_recreated() {
    let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
    let desired = one_network();
    reconcile(&mut overlay, &desired);
    let netns = PathBuf::from("/run/netns/c1");
    let link = overlay.dataplane_mut().state.containers.get_mut(&netns).and_then(|c| c.links.get_mut("eth0"));
    link.expect("eth0").addresses = [cidr("198.18.0.99/24")].into();
    let ops: Vec<String> = reconcile(&mut overlay, &desired).iter().map(ToString::to_string).collect();
    assert_eq!(
        ops,
        vec![
            "delete link shl-ve8829dfd9 in the sandbox of network blue",
            "delete link eth0 in container namespace /run/netns/c1",
            "network blue: create endpoint shl-ve8829dfd9 <-> eth0 (02:42:c6:12:00:02, [198.18.0.2/24]) \
             of container c1 in /run/netns/c1",
        ]
    );
}

#[test]
fn a_changed_vni_replaces_the_vxlan_device_and_reprograms_peers() {
    let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
    let mut desired = one_network();
    reconcile(&mut overlay, &desired);
    desired.networks[0].vni = 5000;
    let ops: Vec<String> = reconcile(&mut overlay, &desired).iter().map(ToString::to_string).collect();
    assert_eq!(
        ops,
        vec![
            "delete link shl-vx4097 in the sandbox of network blue",
            "network blue: create vxlan shl-vx5000 vni 5000 port 4789 mtu 1450",
            "network blue: fdb 02:42:c6:12:00:03 dst 192.0.2.12 on shl-vx5000",
            "network blue: neighbour 198.18.0.3 lladdr 02:42:c6:12:00:03 on shl-vx5000",
        ]
    );
}

#[test]
fn egress_goes_through_the_gateway_bridge_unless_every_network_is_internal() {
    let mut desired = one_network();
    desired.remotes.clear();
    desired.gateway = Some(gateway());
    desired.containers[0].egress = Some(Egress { ifname: "eth1".into(), address: v4("198.19.255.2") });
    let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
    let ops: Vec<String> = reconcile(&mut overlay, &desired).iter().map(ToString::to_string).collect();
    let tail: Vec<&str> = ops.iter().skip(3).map(String::as_str).collect();
    assert_eq!(
        tail,
        vec![
            "create gateway bridge shl-gwbr 198.19.255.1/24 mtu 1500",
            "enable ipv4 forwarding in the node namespace",
            "masquerade 198.19.255.0/24 leaving by other links than shl-gwbr",
            "network blue: create endpoint shl-ve8829dfd9 <-> eth0 (02:42:c6:12:00:02, [198.18.0.2/24]) \
             of container c1 in /run/netns/c1",
            "create egress shl-eg8829dfd9 <-> eth1 (198.19.255.2/24) of container c1 in /run/netns/c1",
            "default route via 198.19.255.1 dev eth1 in /run/netns/c1",
        ]
    );
    desired.networks[0] = desired.networks[0].clone().internal();
    let ops: Vec<String> = reconcile(&mut overlay, &desired).iter().map(ToString::to_string).collect();
    assert_eq!(ops, vec!["delete link shl-eg8829dfd9 in the node namespace"], "internal: no egress");
    let c1 = &overlay.dataplane().state.containers[&PathBuf::from("/run/netns/c1")];
    assert_eq!(c1.default_route, None, "the default route left with the egress link");
    desired.gateway = None;
    desired.containers[0].egress = None;
    let ops: Vec<String> = reconcile(&mut overlay, &desired).iter().map(ToString::to_string).collect();
    assert_eq!(ops, vec!["delete masquerade", "delete link shl-gwbr in the node namespace"]);
}

#[test]
fn a_container_on_no_network_still_gets_egress() {
    let mut desired = one_network();
    desired.remotes.clear();
    desired.gateway = Some(gateway());
    desired.containers[0].endpoints.clear();
    desired.containers[0].egress = Some(Egress { ifname: "eth0".into(), address: v4("198.19.255.2") });
    let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
    let ops: Vec<String> = reconcile(&mut overlay, &desired).iter().map(ToString::to_string).collect();
    assert!(
        ops.contains(
            &"create egress shl-eg8829dfd9 <-> eth0 (198.19.255.2/24) of container c1 in /run/netns/c1".to_owned()
        ),
        "{ops:#?}"
    );
    assert!(ops.contains(&"default route via 198.19.255.1 dev eth0 in /run/netns/c1".to_owned()), "{ops:#?}");
}

#[test]
fn dual_stack_addresses_reach_bridge_endpoint_and_neighbours() {
    let v6 = |s: &str| -> Ipv6Addr { s.parse().expect("ipv6") };
    let blue = net("blue", 4097, 0).with_subnet(cidr("fd00:18::/64"), IpAddr::V6(v6("fd00:18::1")));
    let mut peer = remote("blue", "198.18.0.3", "192.0.2.12");
    peer.addresses.push(IpAddr::V6(v6("fd00:18::3")));
    let desired = Desired {
        networks: vec![blue],
        containers: vec![container(
            "c1",
            vec![LocalEndpoint::new("blue", "eth0", v4("198.18.0.2")).with_ipv6(v6("fd00:18::2"))],
        )],
        remotes: vec![peer],
        gateway: None,
        encryption: None,
    };
    check(
        &desired,
        &bare(&desired),
        "network blue: create sandbox
         network blue: create bridge shl-br mtu 1450 addresses [198.18.0.1/24,fd00:18::1/64]
         network blue: create vxlan shl-vx4097 vni 4097 port 4789 mtu 1450
         network blue: fdb 02:42:c6:12:00:03 dst 192.0.2.12 on shl-vx4097
         network blue: neighbour 198.18.0.3 lladdr 02:42:c6:12:00:03 on shl-vx4097
         network blue: neighbour fd00:18::3 lladdr 02:42:c6:12:00:03 on shl-vx4097
         network blue: create endpoint shl-ve8829dfd9 <-> eth0 (02:42:c6:12:00:02, [198.18.0.2/24,fd00:18::2/64]) of container c1 in /run/netns/c1",
    );
}

#[test]
fn remotes_of_networks_not_on_this_node_are_ignored() {
    let mut desired = one_network();
    desired.remotes = vec![remote("green", "198.18.9.3", "192.0.2.12")];
    let ops = plan(&desired, &Observed::default()).expect("plan");
    assert!(ops.iter().all(|op| !matches!(op, Op::SetFdb { .. } | Op::SetNeighbour { .. })));
}

#[test]
fn inconsistent_desired_states_are_refused_naming_the_culprit() {
    type Mutate = Box<dyn Fn(&mut Desired)>;
    let cases: Vec<(&str, Mutate, PlanError)> = vec![
        (
            "duplicate vni",
            Box::new(|d| d.networks.push(net("red", 4097, 1))),
            PlanError::DuplicateVni { vni: 4097, first: "blue".into(), second: "red".into() },
        ),
        (
            "unknown network",
            Box::new(|d| d.containers[0].endpoints[0].network = "green".into()),
            PlanError::UnknownNetwork { container: "c1".into(), ifname: "eth0".into(), network: "green".into() },
        ),
        (
            "address outside subnet",
            Box::new(|d| d.containers[0].endpoints[0].addresses = vec![IpAddr::V4(v4("198.18.7.2"))]),
            PlanError::AddressOutsideNetwork {
                container: "c1".into(),
                ifname: "eth0".into(),
                address: IpAddr::V4(v4("198.18.7.2")),
                network: "blue".into(),
            },
        ),
        (
            "long ifname",
            Box::new(|d| d.containers[0].endpoints[0].ifname = "a-very-long-name0".into()),
            PlanError::BadIfname { container: "c1".into(), ifname: "a-very-long-name0".into() },
        ),
        (
            "egress without gateway",
            Box::new(|d| d.containers[0].egress = Some(Egress { ifname: "eth1".into(), address: v4("198.19.255.2") })),
            PlanError::BadEgress { container: "c1".into(), address: IpAddr::V4(v4("198.19.255.2")) },
        ),
        (
            "one mac on two nodes",
            Box::new(|d| d.remotes.push(remote("blue", "198.18.0.3", "192.0.2.13"))),
            PlanError::ConflictingRemote {
                network: "blue".into(),
                mac: MacAddr::from_ipv4(v4("198.18.0.3")),
                first: IpAddr::V4(v4("192.0.2.12")),
                second: IpAddr::V4(v4("192.0.2.13")),
            },
        ),
        (
            "bad network id",
            Box::new(|d| d.networks[0].id = "../etc".into()),
            PlanError::BadNetworkId { network: "../etc".into() },
        ),
        ("vni zero", Box::new(|d| d.networks[0].vni = 0), PlanError::BadVni { network: "blue".into(), vni: 0 }),
    ];
    for (name, mutate, want) in cases {
        let mut desired = one_network();
        mutate(&mut desired);
        assert_eq!(plan(&desired, &Observed::default()), Err(want), "{name}");
    }
    let err = PlanError::AddressOutsideNetwork {
        container: "c1".into(),
        ifname: "eth0".into(),
        address: IpAddr::V4(v4("198.18.7.2")),
        network: "blue".into(),
    };
    assert_eq!(err.to_string(), "container c1: address 198.18.7.2 of eth0 is outside the subnets of network blue");
}

#[test]
fn teardown_removes_one_network() {
    let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
    let mut desired = one_network();
    desired.networks.push(net("red", 4098, 1));
    reconcile(&mut overlay, &desired);
    let report = overlay.teardown("blue").expect("teardown");
    assert_eq!(report.applied, vec![Op::DeleteSandbox { network: "blue".into() }]);
    assert_eq!(overlay.dataplane().state.sandboxes.keys().collect::<Vec<_>>(), vec!["red"]);
    assert_eq!(overlay.teardown("blue").expect("again").applied, vec![], "nothing left to remove");
    let observed = overlay.dataplane_mut().observe(&desired, &Naming::default()).expect("observe");
    assert!(
        !observed.containers.contains_key(&PathBuf::from("/run/netns/c1")) || {
            observed.containers[&PathBuf::from("/run/netns/c1")].links.is_empty()
        }
    );
}

#[test]
fn a_vxlan_device_stranded_in_the_node_namespace_is_removed() {
    let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
    let desired = one_network();
    reconcile(&mut overlay, &desired);
    overlay.dataplane_mut().state.node.stray.insert("shl-vx4097".into());
    let ops: Vec<String> = reconcile(&mut overlay, &desired).iter().map(ToString::to_string).collect();
    assert_eq!(ops, vec!["delete link shl-vx4097 in the node namespace"]);
    assert_eq!(reconcile(&mut overlay, &desired), vec![]);
}

#[test]
fn apply_errors_name_the_operation_and_what_is_missing() {
    let mut fake = FakeDataplane::new();
    let op = Op::SetFdb {
        network: "blue".into(),
        vxlan: "shl-vx4097".into(),
        mac: MacAddr::from_ipv4(v4("198.18.0.3")),
        node: IpAddr::V4(v4("192.0.2.12")),
    };
    let err = fake.apply(&op, &Naming::default()).expect_err("no sandbox");
    assert_eq!(
        err.to_string(),
        "network blue: fdb 02:42:c6:12:00:03 dst 192.0.2.12 on shl-vx4097: sandbox of network blue not found"
    );
}

#[test]
fn a_sandbox_that_cannot_be_entered_is_remade() {
    let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
    let desired = one_network();
    let broken = crate::plan::SandboxState { broken: true, ..Default::default() };
    overlay.dataplane_mut().state.sandboxes.insert("blue".into(), broken.clone());
    overlay.dataplane_mut().state.sandboxes.insert("old".into(), broken);
    let ops: Vec<String> = reconcile(&mut overlay, &desired).iter().map(ToString::to_string).collect();
    assert_eq!(
        ops[..3],
        ["network blue: delete sandbox", "network old: delete sandbox", "network blue: create sandbox"]
    );
    assert_eq!(reconcile(&mut overlay, &desired), vec![]);
}

#[test]
fn a_container_whose_namespace_is_gone_is_reported_not_fatal() {
    let mut fake = FakeDataplane::new();
    let mut desired = one_network();
    desired.containers.push(container("c2", vec![LocalEndpoint::new("blue", "eth0", v4("198.18.0.5"))]));
    fake.missing_netns.insert(PathBuf::from("/run/netns/c1"));
    let mut overlay = Overlay::new(fake, Naming::default());
    let report = overlay.reconcile(&desired).expect("reconcile");
    assert_eq!(report.missing, vec!["c1".to_owned()]);
    let endpoints: Vec<&Op> = report.applied.iter().filter(|o| matches!(o, Op::CreateEndpoint { .. })).collect();
    assert_eq!(endpoints.len(), 1, "c2 is wired regardless");
    overlay.dataplane_mut().missing_netns.clear();
    let ops = reconcile(&mut overlay, &desired);
    assert!(matches!(ops.as_slice(), [Op::CreateEndpoint { container, .. }] if container == "c1"), "{ops:?}");
}

#[test]
fn an_egress_port_that_is_not_isolated_is_remade() {
    let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
    let mut desired = one_network();
    desired.gateway = Some(gateway());
    desired.containers[0].egress = Some(Egress { ifname: "eth1".into(), address: v4("198.19.255.2") });
    reconcile(&mut overlay, &desired);
    let port = overlay.dataplane_mut().state.node.ports.get_mut("shl-eg8829dfd9").expect("egress port");
    port.isolated = false;
    let ops: Vec<String> = reconcile(&mut overlay, &desired).iter().map(ToString::to_string).collect();
    assert_eq!(
        ops,
        vec![
            "delete link shl-eg8829dfd9 in the node namespace",
            "delete link eth1 in container namespace /run/netns/c1",
            "create egress shl-eg8829dfd9 <-> eth1 (198.19.255.2/24) of container c1 in /run/netns/c1",
            "default route via 198.19.255.1 dev eth1 in /run/netns/c1",
        ]
    );
}

#[test]
fn the_kernel_overlay_can_move_to_a_blocking_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Overlay<crate::Kernel>>();
    assert_send::<Overlay<FakeDataplane>>();
}

// --- Encrypted networks ---------------------------------------------------------------------

const LOCAL: &str = "192.0.2.11";

fn ring(tags: &[u64]) -> Vec<NetworkKey> {
    tags.iter().map(|t| NetworkKey { tag: *t, key: [u8::try_from(*t % 251).unwrap_or(0); 16] }).collect()
}

/// One encrypted network on this node (192.0.2.11) with peers on .12 and .13, keys `tags`.
fn encrypted(tags: &[u64]) -> Desired {
    let mut desired = one_network();
    desired.networks[0] = net("blue", 4097, 0).encrypted();
    desired.remotes.push(remote("blue", "198.18.0.4", "192.0.2.13"));
    desired.encryption = Some(Encryption { local: v4(LOCAL), keys: ring(tags) });
    desired
}

/// The ESP ops of a plan, with SPIs named by the key they were derived from: `k11`.
fn esp_ops(ops: &[Op], tags: &[u64]) -> Vec<String> {
    let name = |src: Ipv4Addr, dst: Ipv4Addr, spi: u32| {
        let tag = ring(tags).into_iter().find(|k| crate::esp::sa(k, src, dst).spi == spi);
        format!("{src}->{dst} {}", tag.map_or_else(|| format!("{spi:#x}"), |k| format!("k{}", k.tag)))
    };
    ops.iter()
        .filter_map(|op| match op {
            Op::SetEspTable { rules } => Some(format!("table {rules:?}")),
            Op::DeleteEspTable => Some("delete table".to_owned()),
            Op::AddSa { sa } => Some(format!("add sa {}", name(sa.src, sa.dst, sa.spi))),
            Op::DeleteSa { id } => Some(format!("delete sa {}", name(id.src, id.dst, id.spi))),
            Op::SetPolicy { policy, update } => Some(match (policy.action, policy.dst) {
                (PolicyAction::Block, _) => format!("block port {}", policy.dport),
                (PolicyAction::Encrypt { spi }, Some(dst)) => {
                    format!("{} policy {}", if *update { "switch" } else { "add" }, name(v4(LOCAL), dst, spi))
                }
                (PolicyAction::Encrypt { spi }, None) => format!("policy to any {spi:#x}"),
            }),
            Op::DeletePolicy { policy } => Some(format!("delete policy to {:?}", policy.dst)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_encrypted_network_gets_its_esp_before_its_sandbox() {
    let desired = encrypted(&[10, 11, 12]);
    assert_eq!(desired.networks[0].mtu, 1416, "1450 less ESP's 34 bytes");
    let ops = plan(&desired, &bare(&desired)).expect("plan");
    let first_sandbox_op = ops.iter().position(|op| matches!(op, Op::CreateSandbox { .. })).expect("sandbox");
    assert!(ops[..first_sandbox_op].iter().all(|op| op.to_string().starts_with("esp: ")), "{ops:#?}");
    let mut want = vec!["table [(4789, 4097)]".to_owned(), "block port 4789".to_owned()];
    for peer in ["192.0.2.12", "192.0.2.13"] {
        for tag in [10, 11, 12] {
            want.push(format!("add sa {peer}->{LOCAL} k{tag}"));
        }
    }
    want.push(format!("add sa {LOCAL}->192.0.2.12 k11"));
    want.push(format!("add sa {LOCAL}->192.0.2.13 k11"));
    want.push(format!("add policy {LOCAL}->192.0.2.12 k11"));
    want.push(format!("add policy {LOCAL}->192.0.2.13 k11"));
    assert_eq!(esp_ops(&ops, &[10, 11, 12]), want);
}

#[test]
fn a_rotation_receives_first_switches_in_place_and_prunes_last() {
    let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
    let before = encrypted(&[10, 11, 12]);
    reconcile(&mut overlay, &before);
    let after = encrypted(&[11, 12, 13]);
    let ops = reconcile(&mut overlay, &after);
    let tags = [10, 11, 12, 13];
    // Swarm's order, derived from state: +rSA(new) → +fSA(primary) → switch fSP → −fSA(old) → −rSA(pruned).
    assert_eq!(
        esp_ops(&ops, &tags),
        [
            "add sa 192.0.2.12->192.0.2.11 k13",
            "add sa 192.0.2.13->192.0.2.11 k13",
            "add sa 192.0.2.11->192.0.2.12 k12",
            "add sa 192.0.2.11->192.0.2.13 k12",
            "switch policy 192.0.2.11->192.0.2.12 k12",
            "switch policy 192.0.2.11->192.0.2.13 k12",
            "delete sa 192.0.2.11->192.0.2.12 k11",
            "delete sa 192.0.2.11->192.0.2.13 k11",
            "delete sa 192.0.2.12->192.0.2.11 k10",
            "delete sa 192.0.2.13->192.0.2.11 k10",
        ]
    );
    assert_eq!(ops.len(), 10, "nothing but ESP changes: {ops:#?}");
    assert_eq!(reconcile(&mut overlay, &after), vec![]);
}

#[test]
fn every_step_of_a_rotation_keeps_sending_encrypted() {
    // Crash after each op of a rotation: whatever state is left, every peer policy sends
    // through an SA that is there, and the block policy and the marking table stay.
    let total = {
        let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
        reconcile(&mut overlay, &encrypted(&[10, 11, 12]));
        reconcile(&mut overlay, &encrypted(&[11, 12, 13])).len()
    };
    for crash in 0..total {
        let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
        reconcile(&mut overlay, &encrypted(&[10, 11, 12]));
        let done = overlay.dataplane().log.len();
        overlay.dataplane_mut().fail_at = Some(done + crash);
        assert!(overlay.reconcile(&encrypted(&[11, 12, 13])).is_err());
        let esp = &overlay.dataplane().state.node.esp;
        assert!(esp.table.is_some(), "crash at {crash}: the table stays");
        for policy in &esp.policies {
            match policy.action {
                PolicyAction::Block => {}
                PolicyAction::Encrypt { spi } => assert!(
                    esp.sas.iter().any(|sa| Some(sa.dst) == policy.dst && sa.spi == spi),
                    "crash at {crash}: policy {policy:?} points at a missing SA"
                ),
            }
        }
        assert!(esp.policies.iter().any(|p| p.action == PolicyAction::Block), "crash at {crash}");
        overlay.dataplane_mut().fail_at = None;
        reconcile(&mut overlay, &encrypted(&[11, 12, 13]));
        assert_eq!(reconcile(&mut overlay, &encrypted(&[11, 12, 13])), vec![], "converged after a crash at {crash}");
    }
}

#[test]
fn without_keys_an_encrypted_network_is_blocked_not_sent_in_the_clear() {
    let mut desired = encrypted(&[]);
    let ops = plan(&desired, &bare(&desired)).expect("plan");
    assert_eq!(esp_ops(&ops, &[]), ["table [(4789, 4097)]", "block port 4789"]);
    desired.encryption = None;
    assert_eq!(
        esp_ops(&plan(&desired, &bare(&desired)).expect("plan"), &[]),
        ["table [(4789, 4097)]", "block port 4789"]
    );
}

#[test]
fn the_last_encrypted_network_leaving_takes_all_esp_state_with_it() {
    let mut overlay = Overlay::new(FakeDataplane::new(), Naming::default());
    reconcile(&mut overlay, &encrypted(&[10, 11, 12]));
    // A peer goes: its SAs and policy go, the other's stay.
    let mut one_peer = encrypted(&[10, 11, 12]);
    one_peer.remotes.retain(|r| r.node != IpAddr::V4(v4("192.0.2.13")));
    let ops = reconcile(&mut overlay, &one_peer);
    let mut labels = esp_ops(&ops, &[10, 11, 12]);
    labels[2..].sort();
    assert_eq!(
        labels,
        [
            "delete policy to Some(192.0.2.13)",
            "delete sa 192.0.2.11->192.0.2.13 k11",
            "delete sa 192.0.2.13->192.0.2.11 k10",
            "delete sa 192.0.2.13->192.0.2.11 k11",
            "delete sa 192.0.2.13->192.0.2.11 k12",
        ]
    );
    let ops = reconcile(&mut overlay, &Desired::default());
    assert!(matches!(ops.first(), Some(Op::DeleteSandbox { .. })), "the sandbox goes first: {ops:#?}");
    assert_eq!(esp_ops(&ops, &[10, 11, 12]).last().map(String::as_str), Some("delete table"));
    assert_eq!(overlay.dataplane().state.node.esp, crate::esp::EspState::default());
}

#[test]
fn a_plain_network_has_no_esp_and_an_ipv6_peer_of_an_encrypted_one_is_refused() {
    let plain = one_network();
    assert!(esp_ops(&plan(&plain, &bare(&plain)).expect("plan"), &[]).is_empty());
    let mut v6 = encrypted(&[1]);
    v6.remotes.push(RemoteEndpoint::new("blue", v4("198.18.0.9"), "2001:db8::9".parse().expect("ipv6")));
    let err = plan(&v6, &bare(&v6)).expect_err("ipv6 underlay");
    assert_eq!(
        err.to_string(),
        "network blue is encrypted, but node 2001:db8::9 is reached over IPv6; encrypted overlays need an IPv4 underlay"
    );
}

#[test]
fn a_kernel_without_esp_fails_the_pass_with_a_reason_callers_can_tell() {
    let mut fake = FakeDataplane::new();
    fake.no_esp = true;
    let mut overlay = Overlay::new(fake, Naming::default());
    let err = overlay.reconcile(&encrypted(&[10, 11, 12])).expect_err("no ESP");
    let crate::ReconcileError::Apply { source, .. } = &err else { panic!("{err}") };
    assert!(source.no_esp(), "{err}");
    assert!(err.to_string().contains("this kernel has no ESP (esp4)"), "{err}");
}

//! Properties of reconciliation, through the fake dataplane (which `tests/conformance.rs` holds
//! to the kernel's behaviour): whatever state a node was left in by an earlier desired state, one
//! pass brings it to exactly the state a fresh node reaches, and a second pass does nothing.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use proptest::prelude::*;
use shoal_overlay::{
    Cidr, ContainerSpec, Dataplane, Desired, Egress, FakeDataplane, GatewayBridge, LocalEndpoint, Naming, NetworkSpec,
    Observed, Overlay, RemoteEndpoint,
};

const NETWORKS: [&str; 3] = ["blue", "red", "green"];

fn network(index: usize, vni_shift: u32, internal: bool, small_mtu: bool) -> NetworkSpec {
    let third = u8::try_from(index).unwrap_or(0);
    let subnet = Cidr::new(IpAddr::V4(Ipv4Addr::new(198, 18, third, 0)), 24)
        .unwrap_or(Cidr { addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED), prefix_len: 0 });
    let mut spec = NetworkSpec::new(
        NETWORKS[index],
        4097 + u32::from(third) + 100 * vni_shift,
        subnet,
        IpAddr::V4(Ipv4Addr::new(198, 18, third, 1)),
    );
    spec.internal = internal;
    if small_mtu {
        spec.mtu = 1400;
    }
    spec
}

/// A desired state drawn from small pools, so that two draws overlap in interesting ways.
fn desired() -> impl Strategy<Value = Desired> {
    let networks = proptest::collection::vec((any::<bool>(), 0u32..2, any::<bool>(), any::<bool>()), 3);
    let containers =
        proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<bool>(), 3), any::<bool>()), 3);
    let remotes = proptest::collection::vec((any::<bool>(), 0u8..2), 12);
    (networks, containers, remotes, any::<bool>()).prop_map(|(networks, containers, remotes, gateway)| {
        let present: Vec<usize> = (0..3).filter(|i| networks[*i].0).collect();
        let mut desired = Desired {
            networks: present.iter().map(|i| network(*i, networks[*i].1, networks[*i].2, networks[*i].3)).collect(),
            gateway: gateway.then(|| GatewayBridge {
                subnet: Cidr { addr: IpAddr::V4(Ipv4Addr::new(198, 19, 255, 0)), prefix_len: 24 },
                address: Ipv4Addr::new(198, 19, 255, 1),
                mtu: 1500,
            }),
            ..Desired::default()
        };
        for (c, (exists, attach, egress)) in containers.iter().enumerate() {
            let host = u8::try_from(10 + c).unwrap_or(10);
            let endpoints: Vec<LocalEndpoint> = present
                .iter()
                .filter(|i| attach[**i])
                .enumerate()
                .map(|(k, i)| {
                    let third = u8::try_from(*i).unwrap_or(0);
                    LocalEndpoint::new(NETWORKS[*i], format!("eth{k}"), Ipv4Addr::new(198, 18, third, host))
                })
                .collect();
            if !exists || endpoints.is_empty() {
                continue;
            }
            let egress = (*egress && gateway).then(|| Egress {
                ifname: format!("eth{}", endpoints.len()),
                address: Ipv4Addr::new(198, 19, 255, host),
            });
            desired.containers.push(ContainerSpec {
                id: format!("c{c}"),
                netns: PathBuf::from(format!("/run/netns/c{c}")),
                endpoints,
                egress,
            });
        }
        for (r, (wanted, node)) in remotes.iter().enumerate() {
            let index = r % 3;
            if *wanted && networks[index].0 {
                let third = u8::try_from(index).unwrap_or(0);
                let host = u8::try_from(100 + r).unwrap_or(100);
                let node = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 12 + node));
                desired.remotes.push(RemoteEndpoint::new(NETWORKS[index], Ipv4Addr::new(198, 18, third, host), node));
            }
        }
        desired
    })
}

/// The observed state, with IPv4 forwarding left out: once on it stays on (the node may need it
/// for other things), so it is the one trace history may leave.
fn observe(overlay: &mut Overlay<FakeDataplane>, desired: &Desired) -> Observed {
    let mut observed = overlay.dataplane_mut().observe(desired, &Naming::default()).unwrap_or_default();
    observed.node.forwarding = false;
    observed
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(1024) })]

    #[test]
    fn reconciling_from_any_earlier_state_matches_a_fresh_node(before in desired(), after in desired()) {
        let mut fresh = Overlay::new(FakeDataplane::new(), Naming::default());
        fresh.reconcile(&after).map_err(|e| TestCaseError::fail(e.to_string()))?;

        let mut used = Overlay::new(FakeDataplane::new(), Naming::default());
        used.reconcile(&before).map_err(|e| TestCaseError::fail(e.to_string()))?;
        used.reconcile(&after).map_err(|e| TestCaseError::fail(e.to_string()))?;

        let again = used.reconcile(&after).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again.applied, vec![], "a second pass does nothing");
        let (seen_fresh, seen_used) = (observe(&mut fresh, &after), observe(&mut used, &after));
        prop_assert_eq!(seen_used, seen_fresh, "history leaves no trace");
    }
}

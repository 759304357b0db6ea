//! The IPVS backend's nftables table: which elements a change sends before and after IPVS
//! changes (pure), and, against this host's kernel (nf_tables, no IPVS needed), that the kernel
//! takes the table, chains, rules and elements as encoded, `nft` shows the rules, and the sets
//! read back. (The sysctl, the marking and the masquerading themselves need IPVS: `cargo xtask
//! vm-test`.)

use std::net::Ipv4Addr;
use std::process::Command;

use shoal_testkit::{Cluster, privileged};

use super::*;
use crate::model::{Backend, Protocol};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

fn any() -> ServiceKey {
    ServiceKey::any_port(VIP, Protocol::Tcp)
}

fn tcp(port: u16) -> ServiceKey {
    ServiceKey::tcp(VIP, port)
}

fn services(list: &[(ServiceKey, bool)]) -> BTreeMap<ServiceKey, Service> {
    list.iter()
        .map(|(key, source_nat)| {
            let port = if key.is_any_port() { 0 } else { 8080 };
            let backends = vec![Backend::new(Ipv4Addr::new(198, 18, 1, 11), port)];
            (*key, Service { key: *key, backends, source_nat: *source_nat })
        })
        .collect()
}

/// What the whole table should hold for `services`.
fn wanted(services: &BTreeMap<ServiceKey, Service>, marks: &BTreeMap<ServiceKey, u32>) -> TableState {
    TableState::wanted(services.values(), |k| services.contains_key(k), |k| marks.get(k).copied())
}

/// A change's messages as text: (before IPVS, after IPVS).
fn change(from: &TableState, to: &TableState) -> (Vec<String>, Vec<String>) {
    let midway = from.midway(to);
    let text = |ops: Vec<Op>| ops.iter().map(Op::describe).collect::<Vec<_>>();
    (text(from.ops_to(&midway)), text(midway.ops_to(to)))
}

#[test]
fn wanted_marks_any_port_services_and_exempts_specific_ports_beside_them() {
    let marks = BTreeMap::from([(any(), 0x4c42_0000)]);
    let wanted = wanted(
        &services(&[(any(), true), (tcp(80), false), (tcp(81), true), (ServiceKey::udp(VIP, 53), false)]),
        &marks,
    );
    assert_eq!(wanted.marks, marks);
    assert_eq!(wanted.snat_any_port, BTreeSet::from([(any(), 0x4c42_0000)]));
    assert_eq!(wanted.snat_services, BTreeSet::from([tcp(81)]));
    assert_eq!(wanted.direct, BTreeSet::from([tcp(80), tcp(81)]), "udp/53 has no any-port service beside it");
}

#[test]
fn a_new_any_port_service_is_marked_with_its_neighbours_exempt_before_ipvs_has_it() {
    let marks = BTreeMap::from([(any(), 0x4c42_0000)]);
    let from = wanted(&services(&[(tcp(80), false)]), &BTreeMap::new());
    let to = wanted(&services(&[(tcp(80), false), (any(), true)]), &marks);
    let (before, after) = change(&from, &to);
    assert_eq!(
        before,
        [
            "add any_port_marks elements of service 198.18.0.10:*/tcp",
            "add direct_services elements of service 198.18.0.10:80/tcp",
            "add snat_any_port elements of service 198.18.0.10:*/tcp",
        ]
    );
    assert!(after.is_empty(), "{after:?}");
}

#[test]
fn a_new_specific_port_beside_an_any_port_service_is_exempt_once_ipvs_has_it() {
    let marks = BTreeMap::from([(any(), 0x4c42_0000)]);
    let from = wanted(&services(&[(any(), false)]), &marks);
    let to = wanted(&services(&[(any(), false), (tcp(80), true)]), &marks);
    let (before, after) = change(&from, &to);
    assert_eq!(before, ["add snat_services elements of service 198.18.0.10:80/tcp"], "source NAT first");
    assert_eq!(after, ["add direct_services elements of service 198.18.0.10:80/tcp"]);
    // Removed again: the any-port service takes the port back before IPVS loses the service,
    // and its source NAT goes after.
    let (before, after) = change(&to, &from);
    assert_eq!(before, ["delete direct_services elements of service 198.18.0.10:80/tcp"]);
    assert_eq!(after, ["delete snat_services elements of service 198.18.0.10:80/tcp"]);
}

#[test]
fn a_removed_any_port_service_stops_being_marked_before_ipvs_loses_it() {
    let marks = BTreeMap::from([(any(), 0x4c42_0000)]);
    let from = wanted(&services(&[(any(), true), (tcp(80), false)]), &marks);
    let to = wanted(&services(&[(tcp(80), false)]), &BTreeMap::new());
    let (before, after) = change(&from, &to);
    assert_eq!(
        before,
        [
            "delete any_port_marks elements of service 198.18.0.10:*/tcp",
            "delete direct_services elements of service 198.18.0.10:80/tcp",
        ]
    );
    assert_eq!(after, ["delete snat_any_port elements of service 198.18.0.10:*/tcp"]);
}

#[test]
fn an_unchanged_table_needs_nothing() {
    let marks = BTreeMap::from([(any(), 0x4c42_0000)]);
    let state = wanted(&services(&[(any(), true), (tcp(80), true)]), &marks);
    assert_eq!(change(&state, &state), (vec![], vec![]));
}

fn nft_list(netns: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "list", "table", "ip", TABLE])
        .output()
        .expect("run nft");
    assert!(out.status.success(), "nft list: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_kernel_takes_the_table_and_the_sets_read_back() {
    if !privileged::require("the_kernel_takes_the_table_and_the_sets_read_back", privileged::NETNS) {
        return;
    }
    let cluster = Cluster::new(0).expect("build a namespace");
    let name = cluster.underlay_netns().to_owned();
    let mut table = Table::open(&Netns::named(&name)).expect("open");
    assert_eq!(table.read().expect("no table yet"), TableState::default(), "no table: nothing in it");

    let a = ServiceKey::tcp(VIP, 81);
    let b = ServiceKey::udp(VIP, 53);
    let mark = 0x4c42_0001;
    table.send(&setup_ops()).expect("set up");
    table.send(&setup_ops()).expect("setting up again keeps the table and replaces the rules");
    let state = TableState {
        snat_services: BTreeSet::from([a, b]),
        snat_any_port: BTreeSet::from([(any(), mark)]),
        marks: BTreeMap::from([(any(), mark)]),
        direct: BTreeSet::from([a]),
    };
    table.send(&TableState::default().ops_to(&state)).expect("add");
    assert_eq!(table.read().expect("read"), state);

    let listing = nft_list(&name);
    for line in [
        "type nat hook postrouting priority srcnat; policy accept;",
        "ct original ip daddr . meta l4proto . ct original proto-dst @snat_services masquerade",
        "ct original ip daddr . meta l4proto . meta mark @snat_any_port masquerade",
        "type filter hook prerouting priority mangle; policy accept;",
        "type route hook output priority mangle; policy accept;",
        "ip daddr . meta l4proto . th dport @direct_services return",
        "meta mark set ip daddr . meta l4proto map @any_port_marks",
        "198.18.0.10 . tcp . 81",
        "198.18.0.10 . tcp : 0x4c420001",
        "198.18.0.10 . tcp . 0x4c420001",
    ] {
        assert!(listing.contains(line), "missing {line:?} in\n{listing}");
    }
    assert_eq!(listing.matches("masquerade").count(), 2, "two masquerade rules: {listing}");
    assert_eq!(listing.matches("map @any_port_marks").count(), 2, "prerouting and output: {listing}");

    let smaller = TableState { snat_services: BTreeSet::from([a]), ..state.clone() };
    table.send(&state.ops_to(&smaller)).expect("remove");
    assert_eq!(table.read().expect("read"), smaller);
    let err = table.send(&state.ops_to(&smaller)).expect_err("not in the set");
    assert!(err.contains("snat_services elements of service 198.18.0.10:53/udp"), "{err}");
}

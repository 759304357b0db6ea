//! Unit tests of the plan (what one service change sends) and of reading a listing back.

use serde_json::json;

use super::*;

fn backend(last: u8, weight: u32) -> Backend {
    Backend { addr: Ipv4Addr::new(198, 18, 1, last), port: 8080, weight }
}

fn svc() -> Service {
    Service {
        key: ServiceKey::tcp(Ipv4Addr::new(198, 18, 0, 10), 80),
        backends: vec![backend(12, 2), backend(11, 1), backend(13, 0)],
        source_nat: true,
    }
}

fn addr(last: u8) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, last), 8080)
}

const CHAIN: &str = "svc_198_18_0_10_tcp_80";

#[test]
fn chain_names_spell_the_key() {
    assert_eq!(chain_name(&svc().key), CHAIN);
}

#[test]
fn weights_become_slots_and_drained_backends_comments() {
    let service = svc().normalized();
    assert_eq!(service_rules(&service), [Rule::Drained(addr(13)), Rule::Mark(SNAT_MARK), Rule::Dnat { modulus: 3 }]);
    let slots: Vec<(u32, SocketAddrV4)> = service_slots(&service).into_iter().collect();
    assert_eq!(slots, [(0, addr(11)), (1, addr(12)), (2, addr(12))]);
}

#[test]
fn no_active_backend_drops() {
    let service = Service::new(svc().key, vec![backend(11, 0)]);
    assert_eq!(service_rules(&service), [Rule::Drained(addr(11)), Rule::Drop]);
    assert!(service_slots(&service).is_empty());
}

#[test]
fn a_new_service_is_a_chain_its_rules_its_slots_and_its_element() {
    let service = svc().normalized();
    let (key, chain) = (service.key, CHAIN.to_owned());
    let rule = |rule| Op::NewRule { service: key, chain: chain.clone(), rule };
    assert_eq!(
        plan(None, Some(&service)),
        [
            Op::NewChain { service: key, chain: chain.clone() },
            rule(Rule::Drained(addr(13))),
            rule(Rule::Mark(SNAT_MARK)),
            rule(Rule::Dnat { modulus: 3 }),
            Op::NewSlots { service: key, slots: vec![(0, addr(11)), (1, addr(12)), (2, addr(12))] },
            Op::NewService { service: key, chain: chain.clone() },
        ]
    );
}

#[test]
fn a_backend_replaced_at_the_same_weights_touches_only_its_slot() {
    let old = Service::new(svc().key, vec![backend(11, 1), backend(12, 1)]);
    let new = Service::new(svc().key, vec![backend(11, 1), backend(14, 1)]);
    assert_eq!(
        plan(Some(&old), Some(&new)),
        [
            Op::DelSlots { service: old.key, slots: vec![1] },
            Op::NewSlots { service: old.key, slots: vec![(1, addr(14))] }
        ]
    );
}

#[test]
fn a_weight_change_rewrites_the_chain_and_the_slots_that_moved() {
    let old = Service::new(svc().key, vec![backend(11, 1), backend(12, 1)]);
    let new = Service::new(svc().key, vec![backend(11, 1), backend(12, 1), backend(13, 1)]);
    let chain = CHAIN.to_owned();
    assert_eq!(
        plan(Some(&old), Some(&new)),
        [
            Op::FlushChain { service: old.key, chain: chain.clone() },
            Op::NewRule { service: old.key, chain, rule: Rule::Dnat { modulus: 3 } },
            Op::NewSlots { service: old.key, slots: vec![(2, addr(13))] },
        ]
    );
}

#[test]
fn a_removed_service_loses_its_element_chain_and_slots() {
    let old = svc().normalized();
    assert_eq!(
        plan(Some(&old), None),
        [
            Op::DelService { service: old.key },
            Op::DelChain { service: old.key, chain: CHAIN.to_owned() },
            Op::DelSlots { service: old.key, slots: vec![0, 1, 2] },
        ]
    );
}

#[test]
fn an_unchanged_service_needs_nothing() {
    let service = svc().normalized();
    assert_eq!(plan(Some(&service), Some(&service)), []);
}

/// The table as `nft -j list table` prints it (shapes taken from nft 1.0.6's output).
fn listing(modulus: u64, slots: &[(u64, &str)]) -> serde_json::Value {
    let elems: Vec<serde_json::Value> = slots
        .iter()
        .map(|(slot, to)| json!([{"concat": ["198.18.0.10", "tcp", 80, slot]}, {"concat": [to, 8080]}]))
        .collect();
    json!({"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"map": {"name": "services", "type": ["ipv4_addr", "inet_proto", "inet_service"], "map": "verdict",
                 "elem": [[{"concat": ["198.18.0.10", "tcp", 80]}, {"goto": {"target": CHAIN}}]]}},
        {"map": {"name": "backends_29", "type": ["ipv4_addr", "inet_proto", "inet_service", "integer"],
                 "map": "ipv4_addr . inet_service", "elem": elems}},
        {"chain": {"name": CHAIN}},
        {"rule": {"chain": CHAIN, "comment": "drained 198.18.1.13:8080", "expr": []}},
        {"rule": {"chain": CHAIN, "expr": [{"mangle": {"key": {"ct": {"key": "mark"}},
                  "value": {"|": [{"ct": {"key": "mark"}}, SNAT_MARK]}}}]}},
        {"rule": {"chain": CHAIN, "expr": [{"dnat": {"family": "ip", "addr": {"map": {
            "key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}},
                               {"payload": {"protocol": "th", "field": "dport"}},
                               {"numgen": {"mode": "inc", "mod": modulus, "offset": 0}}]},
            "data": "@backends_29"}}}}]}},
    ]})
}

#[test]
fn a_listing_reads_back_as_the_service() {
    let parsed = parse_table(&listing(3, &[(0, "198.18.1.11"), (1, "198.18.1.12"), (2, "198.18.1.12")]));
    assert_eq!(parsed, Ok(vec![svc().normalized()]));
}

#[test]
fn slots_that_disagree_with_the_modulus_are_an_error() {
    let err = parse_table(&listing(3, &[(0, "198.18.1.11"), (1, "198.18.1.12")])).expect_err("a slot missing");
    assert_eq!(err, format!("chain {CHAIN}: numgen modulus 3 but 2 backend slots"));
}

#[test]
fn invalid_services_name_the_service() {
    let mut service = svc();
    service.backends.push(service.backends[0]);
    let err = service.validate().expect_err("duplicate backend");
    assert_eq!(err.to_string(), "invalid service 198.18.0.10:80/tcp: backend 198.18.1.12:8080 is listed twice");
}

#[test]
fn sctp_and_udp_services_key_by_their_protocol() {
    for (protocol, name, number) in [(Protocol::Sctp, "sctp", 132), (Protocol::Udp, "udp", 17)] {
        let key = ServiceKey { addr: Ipv4Addr::new(198, 18, 0, 11), port: 3868, protocol };
        assert_eq!(wire::service_key_bytes(&key), [198, 18, 0, 11, number, 0, 0, 0, 0x0f, 0x1c, 0, 0]);
        assert_eq!(chain_name(&key), format!("svc_198_18_0_11_{name}_3868"));
    }
}

#[test]
fn the_base_script_declares_both_maps_and_the_hooks() {
    let script = base_script("lb");
    for line in [
        "add map ip lb services { type ipv4_addr . inet_proto . inet_service : verdict; }",
        "add map ip lb backends_00 { typeof ip daddr . meta l4proto . th dport . numgen inc mod 2 : ip daddr . th dport; }",
        "add map ip lb any_port_services { type ipv4_addr . inet_proto : verdict; }",
        "add map ip lb any_port_backends_00 { typeof ip daddr . meta l4proto . numgen inc mod 2 : ip daddr; }",
        "add rule ip lb prerouting ip daddr . meta l4proto . th dport vmap @services",
        "add rule ip lb output ip daddr . meta l4proto . th dport vmap @services",
        "add rule ip lb prerouting ip daddr . meta l4proto vmap @any_port_services",
        "add rule ip lb output ip daddr . meta l4proto vmap @any_port_services",
        "add rule ip lb postrouting ct mark & 0x20000000 == 0x20000000 masquerade",
    ] {
        assert!(script.lines().any(|l| l == line), "missing {line:?} in\n{script}");
    }
    assert_eq!(script.lines().filter(|l| l.starts_with("add map ip lb backends_")).count(), 64);
    assert_eq!(script.lines().filter(|l| l.starts_with("add map ip lb any_port_backends_")).count(), 64);
    assert!(script.contains("add map ip lb backends_63 {"), "{script}");
    // The port-specific lookup comes first: a specific-port service wins for its port.
    let position = |rule: &str| script.find(&format!("add rule ip lb prerouting {rule}")).expect("rule");
    assert!(position("ip daddr . meta l4proto . th dport") < position("ip daddr . meta l4proto vmap"));
}

fn any_backend(last: u8, weight: u32) -> Backend {
    Backend { addr: Ipv4Addr::new(198, 18, 1, last), port: 0, weight }
}

fn any_svc() -> Service {
    Service {
        key: ServiceKey::any_port(Ipv4Addr::new(198, 18, 0, 10), Protocol::Tcp),
        backends: vec![any_backend(12, 2), any_backend(11, 1), any_backend(13, 0)],
        source_nat: true,
    }
}

const ANY_CHAIN: &str = "svc_198_18_0_10_tcp_any";

#[test]
fn an_any_port_service_dnats_to_the_address_only() {
    let service = any_svc().normalized();
    assert_eq!(chain_name(&service.key), ANY_CHAIN);
    let drained = SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 13), 0);
    assert_eq!(
        service_rules(&service),
        [Rule::Drained(drained), Rule::Mark(SNAT_MARK), Rule::DnatKeepPort { modulus: 3 }]
    );
    let (key, chain) = (service.key, ANY_CHAIN.to_owned());
    let at = |last| SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, last), 0);
    let plan = plan(None, Some(&service));
    assert_eq!(plan.first(), Some(&Op::NewChain { service: key, chain: chain.clone() }));
    assert_eq!(plan.get(4), Some(&Op::NewSlots { service: key, slots: vec![(0, at(11)), (1, at(12)), (2, at(12))] }));
    assert_eq!(plan.last(), Some(&Op::NewService { service: key, chain }));
}

#[test]
fn an_any_port_listing_reads_back_as_the_service() {
    let slots = [(0, "198.18.1.11"), (1, "198.18.1.12"), (2, "198.18.1.12")];
    let elems: Vec<serde_json::Value> =
        slots.iter().map(|(slot, to)| json!([{"concat": ["198.18.0.10", "tcp", slot]}, to])).collect();
    // Shapes from nft 1.0.6's `nft -j list table` of such a table.
    let listing = json!({"nftables": [
        {"map": {"name": "any_port_services", "type": ["ipv4_addr", "inet_proto"], "map": "verdict",
                 "elem": [[{"concat": ["198.18.0.10", "tcp"]}, {"goto": {"target": ANY_CHAIN}}]]}},
        {"map": {"name": "any_port_backends_29", "type": ["ipv4_addr", "inet_proto", "integer"],
                 "map": "ipv4_addr", "elem": elems}},
        {"rule": {"chain": ANY_CHAIN, "comment": "drained 198.18.1.13:0", "expr": []}},
        {"rule": {"chain": ANY_CHAIN, "expr": [{"mangle": {"key": {"ct": {"key": "mark"}},
                  "value": {"|": [{"ct": {"key": "mark"}}, SNAT_MARK]}}}]}},
        {"rule": {"chain": ANY_CHAIN, "expr": [{"dnat": {"addr": {"map": {
            "key": {"concat": [{"payload": {"protocol": "ip", "field": "daddr"}}, {"meta": {"key": "l4proto"}},
                               {"numgen": {"mode": "inc", "mod": 3, "offset": 0}}]},
            "data": "@any_port_backends_29"}}}}]}},
    ]});
    assert_eq!(parse_table(&listing), Ok(vec![any_svc().normalized()]));
}

#[test]
fn any_port_services_need_port_0_backends_and_only_they_have_them() {
    let mut service = any_svc();
    service.backends.push(backend(14, 1));
    let err = service.validate().expect_err("a backend with a port");
    assert_eq!(
        err.to_string(),
        "invalid service 198.18.0.10:*/tcp: backend 198.18.1.14:8080 has a port, but an any-port service's \
         backends have port 0 (the client's destination port is kept)"
    );
    let mut service = svc();
    service.backends.push(any_backend(14, 1));
    let err = service.validate().expect_err("a port-0 backend");
    assert_eq!(
        err.to_string(),
        "invalid service 198.18.0.10:80/tcp: backend 198.18.1.14:0 has port 0, which only an any-port \
         service's backends have"
    );
    assert!(any_svc().validate().is_ok());
}

//! The IPVS plan: which requests turn one service into another.

use super::*;

fn svc(weights: &[u32]) -> Service {
    let backends = weights
        .iter()
        .enumerate()
        .map(|(i, w)| Backend { addr: Ipv4Addr::new(198, 18, 1, 11 + i as u8), port: 8080, weight: *w })
        .collect();
    Service::new(ServiceKey::tcp(Ipv4Addr::new(198, 18, 0, 10), 80), backends)
}

fn plan(old: Option<&Service>, new: &Service) -> Vec<String> {
    let mut out = Vec::new();
    let id = ServiceId::Addr { protocol: 6, addr: new.key.addr, port: new.key.port };
    diff(id, old, new, &mut out);
    out.iter()
        .map(|m| {
            let dest = m.dest.as_ref().map(|d| format!(" {}:{} w={:?}", d.addr, d.port, d.weight)).unwrap_or_default();
            let sched = m.service.as_ref().and_then(|s| s.sched.clone()).map(|s| format!(" {s}")).unwrap_or_default();
            format!("{:?}{sched}{dest}", m.cmd)
        })
        .collect()
}

#[test]
fn a_new_service_is_added_with_its_destinations() {
    assert_eq!(
        plan(None, &svc(&[1, 1])),
        ["NewService rr", "NewDest 198.18.1.11:8080 w=Some(1)", "NewDest 198.18.1.12:8080 w=Some(1)"]
    );
}

#[test]
fn drain_is_one_weight_edit_and_unequal_weights_switch_to_wrr() {
    assert_eq!(plan(Some(&svc(&[1, 1, 1])), &svc(&[1, 1, 0])), ["SetDest 198.18.1.13:8080 w=Some(0)"]);
    assert_eq!(plan(Some(&svc(&[1, 1])), &svc(&[1, 3])), ["SetService wrr", "SetDest 198.18.1.12:8080 w=Some(3)"]);
}

#[test]
fn removed_backends_are_deleted() {
    assert_eq!(
        plan(Some(&svc(&[1, 1, 1])), &svc(&[1])),
        ["DelDest 198.18.1.12:8080 w=None", "DelDest 198.18.1.13:8080 w=None"]
    );
}

#[test]
fn an_unchanged_service_needs_nothing() {
    assert!(plan(Some(&svc(&[2, 2])), &svc(&[2, 2])).is_empty());
}

#[test]
fn an_any_port_service_is_a_fwmark_service_with_port_0_destinations() {
    let any = ServiceKey::any_port(Ipv4Addr::new(198, 18, 0, 10), Protocol::Udp);
    let backends =
        vec![Backend::any_port(Ipv4Addr::new(198, 18, 1, 11)), Backend::any_port(Ipv4Addr::new(198, 18, 1, 12))];
    let service = Service::new(any, backends);
    let mut out = Vec::new();
    diff(ServiceId::Fwmark(0x4c42_0000), None, &service, &mut out);
    let ids: Vec<Option<ServiceId>> = out.iter().map(|m| m.service.as_ref().map(|s| s.id)).collect();
    assert_eq!(ids, [Some(ServiceId::Fwmark(0x4c42_0000)); 3]);
    let dests: Vec<(Ipv4Addr, u16)> = out.iter().filter_map(|m| m.dest.as_ref().map(|d| (d.addr, d.port))).collect();
    assert_eq!(dests, [(Ipv4Addr::new(198, 18, 1, 11), 0), (Ipv4Addr::new(198, 18, 1, 12), 0)]);
}

#[test]
fn a_refused_fwmark_request_names_its_any_port_service() {
    let any = ServiceKey::any_port(Ipv4Addr::new(198, 18, 0, 10), Protocol::Tcp);
    let message = IpvsMessage::new(Command::DelService, Some(ServiceAttrs::id(ServiceId::Fwmark(0x4c42_0002))), None);
    // nlmsghdr, genlmsghdr (DelService, version 1), the attributes: what an error answer quotes.
    let mut quoted = vec![0; 16];
    quoted.extend_from_slice(&[3, 1, 0, 0]);
    quoted.extend_from_slice(&message.encode());
    let marks = BTreeMap::from([(any, 0x4c42_0002)]);
    assert_eq!(describe_request(&quoted, &marks), "IPVS DelService of service 198.18.0.10:*/tcp (fwmark 0x4c420002)");
    assert_eq!(describe_request(&quoted, &BTreeMap::new()), "IPVS DelService of fwmark service 0x4c420002");
}

/// The table's part a change touches gives the same messages as comparing the whole table
/// before and after, and patching it gives the whole table after.
#[test]
fn a_change_touches_only_its_part_of_the_table() {
    use table::TableState;
    let vip = Ipv4Addr::new(198, 18, 0, 10);
    let any = |protocol| ServiceKey::any_port(vip, protocol);
    let service = |key: ServiceKey, source_nat: bool| {
        let port = if key.is_any_port() { 0 } else { 8080 };
        Service { key, backends: vec![Backend::new(Ipv4Addr::new(198, 18, 1, 11), port)], source_nat }
    };
    let marks = BTreeMap::from([(any(Protocol::Tcp), 0x4c42_0000), (any(Protocol::Udp), 0x4c42_0001)]);
    let whole = |services: &BTreeMap<ServiceKey, Service>| {
        TableState::wanted(services.values(), |k| services.contains_key(k), |k| marks.get(k).copied())
    };
    // Specific-port services on the VIP and on another address, one any-port service.
    let mut applied: BTreeMap<ServiceKey, Service> = BTreeMap::new();
    for (key, source_nat) in [
        (ServiceKey::tcp(vip, 80), false),
        (ServiceKey::tcp(vip, 81), true),
        (ServiceKey::udp(vip, 53), false),
        (ServiceKey::tcp(Ipv4Addr::new(198, 18, 0, 11), 80), true),
        (any(Protocol::Udp), true),
    ] {
        applied.insert(key, service(key, source_nat));
    }
    let cases: Vec<(&str, Vec<Service>, Vec<ServiceKey>)> = vec![
        ("an any-port service comes", vec![service(any(Protocol::Tcp), false)], vec![]),
        ("an any-port service goes", vec![], vec![any(Protocol::Udp)]),
        ("a specific port comes beside one", vec![service(ServiceKey::udp(vip, 54), true)], vec![]),
        ("a specific port goes beside one", vec![], vec![ServiceKey::udp(vip, 53)]),
        ("source NAT off", vec![service(any(Protocol::Udp), false), service(ServiceKey::tcp(vip, 81), false)], vec![]),
        (
            "both at once",
            vec![service(any(Protocol::Tcp), true), service(ServiceKey::tcp(vip, 82), false)],
            vec![any(Protocol::Udp)],
        ),
    ];
    for (what, upserts, removals) in cases {
        let upserts: BTreeMap<ServiceKey, Service> = upserts.into_iter().map(|s| (s.key, s)).collect();
        let removals: BTreeSet<ServiceKey> = removals.into_iter().collect();
        let change = Change { applied: &applied, upserts: &upserts, removals: &removals };
        let mut next = applied.clone();
        for key in &removals {
            next.remove(key);
        }
        next.extend(upserts.clone());
        let (before, after) = (whole(&applied), whole(&next));
        let part = change.table_part();
        let from = before.part(&part);
        let to = TableState::wanted(
            part.iter().filter_map(|k| change.after(k)),
            |k| change.after(k).is_some(),
            |k| marks.get(k).copied(),
        );
        assert_eq!(to, after.part(&part), "{what}: the part wanted");
        assert_eq!(from.ops_to(&to), before.ops_to(&after), "{what}: the same messages");
        let (midway, whole_midway) = (from.midway(&to), before.midway(&after));
        assert_eq!(from.ops_to(&midway), before.ops_to(&whole_midway), "{what}: before IPVS");
        assert_eq!(midway.ops_to(&to), whole_midway.ops_to(&after), "{what}: after IPVS");
        let mut patched = before.clone();
        patched.patch(&from, &to);
        assert_eq!(patched, after, "{what}: the whole table after");
    }
}

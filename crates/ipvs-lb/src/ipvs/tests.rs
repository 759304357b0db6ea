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
    diff(old, new, &mut out);
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
fn source_nat_goes_on_before_and_off_after_the_ipvs_change() {
    let key = |port| ServiceKey::tcp(Ipv4Addr::new(198, 18, 0, 10), port);
    let with = |port, source_nat| Service { key: key(port), source_nat, ..svc(&[1]) };
    let applied: BTreeMap<ServiceKey, Service> =
        [with(80, true), with(81, false), with(82, true)].into_iter().map(|s| (s.key, s)).collect();
    // 80 stays on (nothing), 81 turns on, 82 turns off, 83 is new with it, 84 new without.
    let upserts = [with(80, true), with(81, true), with(82, false), with(83, true), with(84, false)];
    assert_eq!(snat_changes(&applied, &upserts, &[]), (vec![key(81), key(83)], vec![key(82)]));
    // Removing a source-NAT service turns it off; removing a plain or unknown one does nothing.
    assert_eq!(snat_changes(&applied, &[], &[key(80), key(81), key(99)]), (vec![], vec![key(80)]));
}

//! Tests of the networks feed: what each node is sent as the store changes.

use super::*;

fn network(id: &str, ingress: bool) -> v1::Network {
    v1::Network {
        id: id.into(),
        spec: Some(v1::NetworkSpec {
            annotations: Some(v1::Annotations { name: id.into(), ..Default::default() }),
            ingress,
            ..Default::default()
        }),
        allocation: Some(v1::NetworkAllocation {
            subnet: "198.18.0.0/24".into(),
            gateway: "198.18.0.1".into(),
            vni: 4096,
            mtu: 1450,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(addr: &str, ingress: Option<&str>) -> NodeEntry {
    NodeEntry { addr: addr.into(), ingress: ingress.map(|a| ("ing".to_owned(), a.to_owned())) }
}

fn task(node_id: &str, addr: &str, state: TaskState) -> v1::Task {
    v1::Task {
        node_id: node_id.into(),
        service_id: "web".into(),
        annotations: Some(v1::Annotations { name: format!("web.{node_id}"), ..Default::default() }),
        desired_state: TaskState::Running as i32,
        status: Some(v1::TaskStatus { state: state as i32, ..Default::default() }),
        networks: vec![v1::NetworkAttachment {
            network: Some(network("front", false)),
            addresses: vec![addr.into()],
            aliases: vec![],
        }],
        ..Default::default()
    }
}

fn service() -> v1::Service {
    v1::Service {
        id: "web".into(),
        spec: Some(v1::ServiceSpec {
            annotations: Some(v1::Annotations { name: "web".into(), ..Default::default() }),
            networks: vec![v1::NetworkAttachmentConfig { target: "front".into(), aliases: vec!["www".into()] }],
            ..Default::default()
        }),
        endpoint: Some(v1::Endpoint {
            virtual_ips: vec![v1::VirtualIp { network_id: "front".into(), addr: "198.18.0.2/24".into() }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A readable form of a batch: `+net front`, `+peer front t1 198.18.0.3/24 serving`, `-peer front t2`, …
fn describe(batch: &[v1::NetworkChange]) -> Vec<String> {
    batch
        .iter()
        .map(|c| {
            let sign = if c.action == v1::network_change::Action::Remove as i32 { "-" } else { "+" };
            if let Some(n) = &c.network {
                format!("{sign}net {}", n.id)
            } else if let Some(p) = &c.peer {
                let serving = if p.serving { " serving" } else { "" };
                let at = if p.address.is_empty() { String::new() } else { format!(" {}@{}", p.address, p.node_addr) };
                format!("{sign}peer {} {}{at}{serving}", p.network_id, p.id)
            } else if let Some(s) = &c.service {
                format!("{sign}svc {} {} {} {:?}", s.network_id, s.name, s.vip, s.aliases)
            } else if let Some(k) = &c.keys {
                let times: Vec<u64> = k.keys.iter().map(|k| k.lamport_time).collect();
                format!("{sign}keys {} {times:?}", k.network_id)
            } else {
                "?".to_owned()
            }
        })
        .collect()
}

fn subscribe(feed: &mut Feed, node_id: &str) -> mpsc::Receiver<Vec<v1::NetworkChange>> {
    let (tx, rx) = mpsc::channel(16);
    feed.subscribe(Subscribe { node_id: node_id.into(), tx });
    rx
}

fn next(rx: &mut mpsc::Receiver<Vec<v1::NetworkChange>>) -> Vec<String> {
    rx.try_recv().map(|b| describe(&b)).unwrap_or_default()
}

fn change(feed: &mut Feed, f: impl FnOnce(&mut Index, &mut Dirty)) {
    let mut dirty = Dirty::default();
    f(&mut feed.index, &mut dirty);
    feed.publish(dirty);
}

#[test]
fn nodes_get_the_networks_they_host_and_then_only_what_changed() {
    let mut feed = Feed::default();
    let mut dirty = Dirty::default();
    feed.index.put_network("front", Some(network("front", false)), &mut dirty);
    feed.index.put_network("ing", Some(network("ing", true)), &mut dirty);
    feed.index.put_node("n1", Some(node("192.0.2.11", Some("198.18.0.11/24"))), &mut dirty);
    feed.index.put_node("n2", Some(node("192.0.2.12", None)), &mut dirty);
    feed.index.put_node("n3", Some(node("192.0.2.13", None)), &mut dirty);
    feed.index.put_service("web", Some(service()), &mut dirty);
    feed.index.put_task("t1", TaskEntry::of(&task("n1", "198.18.0.3/24", TaskState::Running)), &mut dirty);
    feed.index.put_task("t2", TaskEntry::of(&task("n2", "198.18.0.4/24", TaskState::Starting)), &mut dirty);

    let mut n1 = subscribe(&mut feed, "n1");
    let mut n2 = subscribe(&mut feed, "n2");
    let mut n3 = subscribe(&mut feed, "n3");
    assert_eq!(
        next(&mut n1),
        [
            "+net front",
            "+peer front t1 198.18.0.3/24@192.0.2.11 serving",
            "+peer front t2 198.18.0.4/24@192.0.2.12",
            "+svc front web 198.18.0.2/24 [\"www\"]",
            "+net ing",
            "+peer ing ingress-sbox.n1 198.18.0.11/24@192.0.2.11",
        ]
    );
    assert_eq!(next(&mut n2).len(), 4, "front only: n2 has no ingress sandbox");
    assert!(next(&mut n3).is_empty(), "n3 hosts nothing: its complete set is empty");

    // t2 starts running: both hosts of front learn it serves; n3 hears nothing.
    change(&mut feed, |i, d| i.put_task("t2", TaskEntry::of(&task("n2", "198.18.0.4/24", TaskState::Running)), d));
    assert_eq!(next(&mut n1), ["+peer front t2 198.18.0.4/24@192.0.2.12 serving"]);
    assert_eq!(next(&mut n2), ["+peer front t2 198.18.0.4/24@192.0.2.12 serving"]);
    assert!(next(&mut n3).is_empty());

    // t2 fails: n1 drops the peer; n2 no longer hosts front at all.
    change(&mut feed, |i, d| i.put_task("t2", TaskEntry::of(&task("n2", "198.18.0.4/24", TaskState::Failed)), d));
    assert_eq!(next(&mut n1), ["-peer front t2"]);
    assert_eq!(next(&mut n2), ["-net front"]);

    // A new task on n3: n3 gets front whole, n1 the new peer.
    change(&mut feed, |i, d| i.put_task("t3", TaskEntry::of(&task("n3", "198.18.0.5/24", TaskState::Assigned)), d));
    assert_eq!(next(&mut n1), ["+peer front t3 198.18.0.5/24@192.0.2.13"]);
    assert_eq!(
        next(&mut n3),
        [
            "+net front",
            "+peer front t1 198.18.0.3/24@192.0.2.11 serving",
            "+peer front t3 198.18.0.5/24@192.0.2.13",
            "+svc front web 198.18.0.2/24 [\"www\"]",
        ]
    );
    assert!(next(&mut n2).is_empty());

    // n2 gets an ingress sandbox: it hosts ingress now, and n1 learns the new sandbox.
    change(&mut feed, |i, d| i.put_node("n2", Some(node("192.0.2.12", Some("198.18.0.12/24"))), d));
    assert_eq!(
        next(&mut n2),
        [
            "+net ing",
            "+peer ing ingress-sbox.n1 198.18.0.11/24@192.0.2.11",
            "+peer ing ingress-sbox.n2 198.18.0.12/24@192.0.2.12"
        ]
    );
    assert_eq!(next(&mut n1), ["+peer ing ingress-sbox.n2 198.18.0.12/24@192.0.2.12"]);

    // The service goes: its table entry goes from every host of front.
    change(&mut feed, |i, d| i.put_service("web", None, d));
    assert_eq!(next(&mut n1), ["-svc front   []"]);
    assert_eq!(next(&mut n3), ["-svc front   []"]);
}

#[test]
fn a_node_that_falls_behind_is_dropped_so_that_it_starts_over() {
    let mut feed = Feed::default();
    let mut dirty = Dirty::default();
    feed.index.put_network("front", Some(network("front", false)), &mut dirty);
    feed.index.put_node("n1", Some(node("192.0.2.11", None)), &mut dirty);
    feed.index.put_task("t1", TaskEntry::of(&task("n1", "198.18.0.3/24", TaskState::Running)), &mut dirty);
    let (tx, mut rx) = mpsc::channel(1);
    feed.subscribe(Subscribe { node_id: "n1".into(), tx });
    assert_eq!(feed.subscribers.len(), 1);
    // The complete set fills its one slot; the next batch does not fit.
    change(&mut feed, |i, d| i.put_task("t2", TaskEntry::of(&task("n1", "198.18.0.4/24", TaskState::Running)), d));
    assert!(feed.subscribers.is_empty(), "dropped: its stream ends and the node opens a new one");
    assert!(rx.try_recv().is_ok());
}

fn ring(times: &[u64]) -> v1::NetworkKeyRing {
    v1::NetworkKeyRing {
        id: crate::leader::RING_ID.into(),
        keys: times
            .iter()
            .map(|t| v1::NetworkKey { key: vec![u8::try_from(*t).unwrap_or(0); 16], lamport_time: *t })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn keys_go_only_to_nodes_that_host_an_encrypted_network_and_follow_rotations() {
    let mut feed = Feed::default();
    let mut dirty = Dirty::default();
    let mut secure = network("secure", false);
    secure.spec.as_mut().expect("spec").options.insert("encrypted".into(), String::new());
    feed.index.put_network("front", Some(network("front", false)), &mut dirty);
    feed.index.put_network("secure", Some(secure), &mut dirty);
    feed.index.put_keys(Some(ring(&[10, 11, 12])), &mut dirty);
    feed.index.put_node("n1", Some(node("192.0.2.11", None)), &mut dirty);
    feed.index.put_node("n2", Some(node("192.0.2.12", None)), &mut dirty);
    let mut on_secure = task("n1", "198.18.0.3/24", TaskState::Running);
    on_secure.networks[0].network = Some(network("secure", false));
    feed.index.put_task("t1", TaskEntry::of(&on_secure), &mut dirty);
    feed.index.put_task("t2", TaskEntry::of(&task("n2", "198.18.0.4/24", TaskState::Running)), &mut dirty);

    let mut n1 = subscribe(&mut feed, "n1");
    let mut n2 = subscribe(&mut feed, "n2");
    assert_eq!(
        next(&mut n1),
        ["+net secure", "+keys secure [10, 11, 12]", "+peer secure t1 198.18.0.3/24@192.0.2.11 serving"]
    );
    let plain = next(&mut n2);
    assert!(!plain.iter().any(|c| c.contains("keys")), "a node on plain networks only gets no keys: {plain:?}");

    // A rotation: one update of the keys item, to the node that hosts the encrypted network.
    change(&mut feed, |index, dirty| index.put_keys(Some(ring(&[11, 12, 13])), dirty));
    assert_eq!(next(&mut n1), ["+keys secure [11, 12, 13]"]);
    assert_eq!(next(&mut n2), Vec::<String>::new());
    // The same ring again (another write of the object): nothing is sent.
    change(&mut feed, |index, dirty| index.put_keys(Some(ring(&[11, 12, 13])), dirty));
    assert_eq!(next(&mut n1), Vec::<String>::new());

    // n1 stops hosting it: the network goes, and its keys with it.
    change(&mut feed, |index, dirty| index.put_task("t1", None, dirty));
    assert_eq!(next(&mut n1), ["-net secure"]);
}

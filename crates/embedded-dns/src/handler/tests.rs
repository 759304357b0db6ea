//! The query rules, one query at a time, without sockets.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::{Action, Handler, Transport};
use crate::forward::Cache;
use crate::records::{Delta, Endpoint, RecordTable, ServiceRecord, TaskRecord};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn handler(forwarding: bool) -> Handler {
    let table = RecordTable::new();
    let mut deltas = vec![
        Delta::UpsertService {
            network: "front".into(),
            service: ServiceRecord {
                id: "s-web".into(),
                name: "web".into(),
                aliases: vec![],
                endpoint: Endpoint::Vip(vec![ip("198.18.0.2"), ip("fd00:18::2")]),
            },
        },
        Delta::UpsertService {
            network: "front".into(),
            service: ServiceRecord {
                id: "s-big".into(),
                name: "big".into(),
                aliases: vec![],
                endpoint: Endpoint::DnsRr,
            },
        },
        Delta::UpsertService {
            network: "back".into(),
            service: ServiceRecord {
                id: "s-db".into(),
                name: "db".into(),
                aliases: vec![],
                endpoint: Endpoint::Vip(vec![ip("198.19.0.2")]),
            },
        },
    ];
    for i in 0..100u8 {
        deltas.push(Delta::UpsertTask {
            network: "front".into(),
            task: TaskRecord {
                id: format!("t{i}"),
                service_id: Some("s-big".into()),
                name: format!("big.{i}"),
                hostname: None,
                aliases: vec![],
                addresses: vec![IpAddr::from([198, 18, 1, i])],
                healthy: true,
            },
        });
    }
    table.apply(deltas).expect("apply");
    Handler::new(table, Cache::new(100), Some("Shoal.Internal.".into()), 5, forwarding)
}

fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut message = Message::new(4242, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        message.set_edns(e);
    }
    message.to_vec().expect("encode")
}

fn ask(handler: &Handler, networks: &[&str], name: &str, qtype: RecordType, transport: Transport) -> Message {
    let networks: Vec<String> = networks.iter().map(|s| (*s).to_owned()).collect();
    match handler.handle(&networks, &query(name, qtype, false), transport) {
        Action::Reply(bytes) => Message::from_vec(&bytes).expect("decode reply"),
        other => panic!("{name} {qtype}: expected a reply, got {other:?}"),
    }
}

fn addresses(reply: &Message) -> Vec<String> {
    reply
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::A(a) => a.0.to_string(),
            RData::AAAA(a) => a.0.to_string(),
            RData::PTR(p) => p.0.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn answers_service_names_in_every_spelling() {
    let h = handler(true);
    let reply = ask(&h, &["front"], "WeB.", RecordType::A, Transport::Udp);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(reply.metadata.id, 4242);
    assert!(reply.metadata.authoritative && reply.metadata.recursion_available && reply.metadata.recursion_desired);
    assert_eq!(addresses(&reply), ["198.18.0.2"]);
    assert_eq!(reply.answers[0].ttl, 5);
    assert_eq!(reply.answers[0].name.to_ascii(), "WeB.", "the client's spelling is echoed");
    assert_eq!(
        addresses(&ask(&h, &["front"], "web.shoal.internal.", RecordType::AAAA, Transport::Udp)),
        ["fd00:18::2"]
    );
    assert_eq!(addresses(&ask(&h, &["front"], "web", RecordType::ANY, Transport::Tcp)), ["198.18.0.2", "fd00:18::2"]);
    let mx = ask(&h, &["front"], "web.", RecordType::MX, Transport::Udp);
    assert_eq!((mx.metadata.response_code, mx.answers.len()), (ResponseCode::NoError, 0), "the name exists");
}

#[test]
fn local_names_never_leave_the_node() {
    let h = handler(true);
    for name in ["nosuch.", "tasks.nosuch.", "web.other.shoal.internal.", "shoal.internal.", "db."] {
        let reply = ask(&h, &["front"], name, RecordType::A, Transport::Udp);
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain, "{name}");
    }
    assert_eq!(addresses(&ask(&h, &["back"], "db.", RecordType::A, Transport::Udp)), ["198.19.0.2"]);
    let networks = vec!["front".to_owned()];
    assert!(matches!(
        h.handle(&networks, &query("www.example.test.", RecordType::A, false), Transport::Udp),
        Action::Forward(_)
    ));
    let no_upstream = handler(false);
    let reply = ask(&no_upstream, &["front"], "www.example.test.", RecordType::A, Transport::Udp);
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
}

#[test]
fn large_answers_truncate_over_udp_only() {
    let h = handler(true);
    let udp = ask(&h, &["front"], "big.", RecordType::A, Transport::Udp);
    assert!(udp.metadata.truncation, "100 addresses do not fit 512 bytes");
    assert!(udp.answers.is_empty());
    let tcp = ask(&h, &["front"], "tasks.big.", RecordType::A, Transport::Tcp);
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 100);
    let networks = vec!["front".to_owned()];
    let Action::Reply(bytes) = h.handle(&networks, &query("big.", RecordType::A, true), Transport::Udp) else {
        panic!("expected a reply");
    };
    let edns = Message::from_vec(&bytes).expect("decode");
    assert_eq!(edns.answers.len(), 100, "an EDNS client with 4096 bytes gets them over UDP");
    assert!(edns.edns.is_some());
}

#[test]
fn dnsrr_answers_rotate() {
    let h = handler(true);
    let first = addresses(&ask(&h, &["front"], "big.", RecordType::A, Transport::Tcp));
    let second = addresses(&ask(&h, &["front"], "big.", RecordType::A, Transport::Tcp));
    assert_ne!(first, second);
    let (mut a, mut b) = (first, second);
    a.sort();
    b.sort();
    assert_eq!(a, b, "same set, other order");
}

#[test]
fn reverse_lookups_of_local_addresses() {
    let h = handler(true);
    assert_eq!(
        addresses(&ask(&h, &["front"], "7.1.18.198.in-addr.arpa.", RecordType::PTR, Transport::Udp)),
        ["big.7."]
    );
    assert_eq!(addresses(&ask(&h, &["front"], "2.0.18.198.in-addr.arpa.", RecordType::PTR, Transport::Udp)), ["web."]);
    let networks = vec!["back".to_owned()];
    assert!(
        matches!(
            h.handle(&networks, &query("7.1.18.198.in-addr.arpa.", RecordType::PTR, false), Transport::Udp),
            Action::Forward(_)
        ),
        "not on the asking container's networks"
    );
}

#[test]
fn malformed_queries() {
    let h = handler(true);
    let networks = vec!["front".to_owned()];
    assert!(matches!(h.handle(&networks, &[1, 2, 3], Transport::Udp), Action::Drop));
    let Action::Reply(bytes) = h.handle(&networks, &[0xab, 0xcd, 1, 0, 0, 9, 0, 0, 0, 0, 0, 0, 7], Transport::Udp)
    else {
        panic!("expected FORMERR");
    };
    let reply = Message::from_vec(&bytes).expect("decode");
    assert_eq!((reply.metadata.id, reply.metadata.response_code), (0xabcd, ResponseCode::FormErr));
}

#[test]
fn cached_upstream_answers_are_served_inline() {
    let h = handler(true);
    let networks = vec!["front".to_owned()];
    let Action::Forward(forward) =
        h.handle(&networks, &query("www.example.test.", RecordType::A, false), Transport::Udp)
    else {
        panic!("expected a forward");
    };
    let mut upstream = Message::response(1, OpCode::Query);
    upstream.queries = forward.request.queries.clone();
    let name = Name::from_ascii("www.example.test.").expect("name");
    upstream.answers.push(Record::from_rdata(name, 300, RData::A(A([203, 0, 113, 7].into()))));
    h.cache.insert(forward.key.clone(), &upstream);
    let reply = ask(&h, &["front"], "WWW.example.test.", RecordType::A, Transport::Udp);
    assert_eq!(reply.metadata.id, 4242);
    assert_eq!(addresses(&reply), ["203.0.113.7"]);
    assert_eq!(reply.queries[0].name().to_ascii(), "WWW.example.test.");
    assert!(reply.answers[0].ttl <= 300);

    // A negative answer is cached for the SOA's negative TTL; one without SOA is not cached.
    let mut nx = Message::response(1, OpCode::Query);
    nx.metadata.response_code = ResponseCode::NXDomain;
    let before = h.cache.len();
    h.cache.insert(crate::forward::CacheKey { name: "a.test".into(), qtype: 1, qclass: 1 }, &nx);
    assert_eq!(h.cache.len(), before);
    let zone = Name::from_ascii("test.").expect("name");
    let soa = SOA::new(zone.clone(), zone.clone(), 1, 60, 60, 60, 30);
    nx.authorities.push(Record::from_rdata(zone, 120, RData::SOA(soa)));
    h.cache.insert(crate::forward::CacheKey { name: "a.test".into(), qtype: 1, qclass: 1 }, &nx);
    assert_eq!(h.cache.len(), before + 1);
}

#[test]
fn the_fast_path_answers_as_the_general_path_does() {
    let h = handler(true);
    let networks = vec!["front".to_owned()];
    let mut cases = 0;
    for name in ["web.", "WEB.shoal.internal.", "Web.Shoal.Internal.", "big.7."] {
        for qtype in [RecordType::A, RecordType::AAAA] {
            for edns in [false, true] {
                for transport in [Transport::Udp, Transport::Tcp] {
                    let bytes = query(name, qtype, edns);
                    let fast = h.fast_local(&networks, &bytes, transport).expect("fast path takes it");
                    let Action::Reply(general) = h.handle_general(&networks, &bytes, transport) else {
                        panic!("expected a reply");
                    };
                    let fast = Message::from_vec(&fast).expect("decode fast");
                    let general = Message::from_vec(&general).expect("decode general");
                    assert_eq!(fast, general, "{name} {qtype} edns={edns} {transport:?}");
                    cases += 1;
                }
            }
        }
    }
    assert_eq!(cases, 32);
    for (name, qtype) in [("nosuch.", RecordType::A), ("web.", RecordType::MX), ("big.", RecordType::A)] {
        let bytes = query(name, qtype, false);
        assert!(h.fast_local(&networks, &bytes, Transport::Udp).is_none(), "{name} {qtype} takes the general path");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Whatever arrives, the handler answers, forwards or drops; it never panics.
    #[test]
    fn any_bytes_are_handled(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
        let h = handler(true);
        let networks = vec!["front".to_owned()];
        let _ = h.handle(&networks, &bytes, Transport::Udp);
        let _ = h.handle(&networks, &bytes, Transport::Tcp);
    }

    /// Queries that differ from the shapes the fast path knows in header bits, case, EDNS size and
    /// trailing bytes get the same answer from both paths.
    #[test]
    fn fast_and_general_paths_agree(
        name in proptest::sample::select(vec!["web", "WEB", "wEb.Shoal.Internal", "big.3", "big.77", "nosuch", "tasks.web"]),
        aaaa: bool,
        edns in proptest::option::of(0u16..5000),
        id: u16,
        flags: u8,
        trailing in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3),
    ) {
        let h = handler(true);
        let networks = vec!["front".to_owned()];
        let qtype = if aaaa { RecordType::AAAA } else { RecordType::A };
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = flags & 1 != 0;
        message.metadata.checking_disabled = flags & 2 != 0;
        message.add_query(Query::query(Name::from_ascii(format!("{name}.")).expect("name"), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            message.set_edns(e);
        }
        let mut bytes = message.to_vec().expect("encode");
        bytes.extend_from_slice(&trailing);
        for transport in [Transport::Udp, Transport::Tcp] {
            if let Some(fast) = h.fast_local(&networks, &bytes, transport) {
                let Action::Reply(general) = h.handle_general(&networks, &bytes, transport) else {
                    panic!("the general path must answer what the fast path answers");
                };
                let (fast, general) = (Message::from_vec(&fast).expect("fast"), Message::from_vec(&general).expect("general"));
                // DNS round robin rotates between the two calls: compare the sets.
                let sorted = |m: &Message| { let mut a = addresses(m); a.sort(); a };
                proptest::prop_assert_eq!(sorted(&fast), sorted(&general));
                let (mut f, mut g) = (fast.clone(), general.clone());
                f.answers.clear();
                g.answers.clear();
                proptest::prop_assert_eq!(f, g);
            }
        }
    }
}

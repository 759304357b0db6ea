//! Entry points for the fuzz tests (`tests/fuzz.rs`), hidden from the documentation and not part
//! of the API. The server's query rules and its handling of upstream answers take raw DNS
//! messages from the network, and both are private; a fuzz test has to reach them without
//! sockets or namespaces. This module is the narrowest door: the same query handler the server's
//! socket loops call, over a fixed record table, and the same steps the forwarder takes with an
//! upstream's answer, with valid messages encoded by hickory-proto (the crate's encoder) to start
//! from.
//!
//! Every reply either path produces is checked against the rules every reply keeps: it parses as
//! DNS, is a response, carries the asker's ID and, over UDP, fits 4096 bytes. A broken rule
//! panics, which the fuzz test reports with the input.

use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::forward::{self, Cache, CacheKey};
use crate::handler::{self, Action, Forward, Handler, Transport};
use crate::records::{Delta, Endpoint, RecordTable, ServiceRecord, TaskRecord};

/// The ID of the client whose query is forwarded in [`DnsFuzzer::upstream_answer`].
const CLIENT_ID: u16 = 0x5a5a;

/// What the server does with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It sends these bytes to the client.
    Reply(Vec<u8>),
    /// It asks the upstream servers.
    Forward,
    /// It sends nothing (for an upstream answer: it does not use it).
    Drop,
}

/// A valid message and a summary of what the server makes of it ([`summary`]).
#[derive(Debug, Clone)]
pub struct Seed {
    /// The message.
    pub bytes: Vec<u8>,
    /// Whether it arrives (or, for an upstream answer, the client asked) over TCP.
    pub tcp: bool,
    /// The summary of the outcome.
    pub outcome: String,
}

/// The server's query rules over a fixed record table, for a container attached to network
/// `front` (cluster domain `shoal.internal`, TTL 5 s, forwarding on): on `front`, `web` (VIPs
/// 198.18.0.2 and fd00:18::2) and `big` (DNS round robin over 100 tasks at 198.18.1.0–99); on
/// `back`, `db`.
#[derive(Debug)]
pub struct DnsFuzzer {
    handler: Handler,
    networks: Vec<String>,
}

impl Default for DnsFuzzer {
    fn default() -> Self {
        Self::new()
    }
}

impl DnsFuzzer {
    /// The handler over the table described on [`DnsFuzzer`].
    pub fn new() -> Self {
        let handler = Handler::new(table(), Cache::new(64), Some("shoal.internal".to_owned()), 5, true);
        Self { handler, networks: vec!["front".to_owned()] }
    }

    /// What the server does with `query` arriving over TCP (`tcp`) or UDP.
    pub fn query(&self, query: &[u8], tcp: bool) -> Outcome {
        let transport = if tcp { Transport::Tcp } else { Transport::Udp };
        match self.handler.handle(&self.networks, query, transport) {
            Action::Reply(reply) => {
                let id = query.get(..2).map(|id| u16::from_be_bytes([id[0], id[1]]));
                assert!(id.is_some(), "a reply to a message without an ID");
                check_reply(&reply, id.unwrap_or_default(), !tcp);
                Outcome::Reply(reply)
            }
            Action::Forward(_) => Outcome::Forward,
            Action::Drop => Outcome::Drop,
        }
    }

    /// What a client that asked over TCP (`tcp`) or UDP gets when an upstream server answers its
    /// forwarded query with `answer`; [`Outcome::Drop`] when the forwarder does not use the answer
    /// (not a response to that query, or SERVFAIL or REFUSED: the next upstream is asked). The
    /// client's question is taken from the answer, so that any answer with one question can match
    /// it. The answer is cached as the forwarder caches it, and the reply served from the cache is
    /// checked too.
    pub fn upstream_answer(&self, answer: &[u8], tcp: bool) -> Outcome {
        let Ok(parsed) = Message::from_vec(answer) else { return Outcome::Drop };
        let [question] = parsed.queries.as_slice() else { return Outcome::Drop };
        let mut request = Message::new(CLIENT_ID, MessageType::Query, OpCode::Query);
        request.metadata.recursion_desired = true;
        request.add_query(question.clone());
        // A question hickory cannot write again could not have come from a client either.
        let Ok(raw) = request.to_vec() else { return Outcome::Drop };
        let key = CacheKey {
            name: handler::lower_key(question.name()),
            qtype: u16::from(question.query_type()),
            qclass: u16::from(question.query_class()),
        };
        let forward = Forward { request, raw, key, udp_limit: (!tcp).then_some(512) };
        let Some(message) = forward::matching(answer, parsed.metadata.id, &forward) else { return Outcome::Drop };
        let cache = Cache::new(4);
        let Some(reply) = forward::client_answer(&forward, &cache, &message, answer.to_vec()) else {
            return Outcome::Drop;
        };
        check_reply(&reply, CLIENT_ID, !tcp);
        if let Some(cached) = cache.get(&forward.key) {
            check_reply(&handler::from_cache(&forward.request, cached, forward.udp_limit), CLIENT_ID, !tcp);
        }
        Outcome::Reply(reply)
    }
}

/// The response code, `TC` when truncated, and the answers' addresses or names, sorted; or
/// `forward` or `drop`.
pub fn summary(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Reply(bytes) => match Message::from_vec(bytes) {
            Ok(reply) => {
                let answers = reply
                    .answers
                    .iter()
                    .map(|r| match &r.data {
                        RData::A(a) => a.0.to_string(),
                        RData::AAAA(a) => a.0.to_string(),
                        RData::PTR(p) => p.0.to_string(),
                        other => format!("{other:?}"),
                    })
                    .collect();
                described(reply.metadata.response_code, reply.metadata.truncation, answers)
            }
            Err(e) => format!("a reply that does not parse: {e}"),
        },
        Outcome::Forward => "forward".to_owned(),
        Outcome::Drop => "drop".to_owned(),
    }
}

/// Valid queries over UDP and TCP, with the summary of the server's answer to each.
pub fn query_seeds() -> Vec<Seed> {
    let reply = |code: ResponseCode, truncated: bool, answers: &[&str]| {
        described(code, truncated, answers.iter().map(|a| (*a).to_owned()).collect())
    };
    let ok = |answers: &[&str]| reply(ResponseCode::NoError, false, answers);
    let seed = |bytes: Vec<u8>, tcp: bool, outcome: String| Seed { bytes, tcp, outcome };
    let mut seeds = vec![
        seed(query("web.", RecordType::A, None), false, ok(&["198.18.0.2"])),
        seed(query("WEB.Shoal.Internal.", RecordType::AAAA, None), true, ok(&["fd00:18::2"])),
        seed(query("web.", RecordType::ANY, Some(1232)), false, ok(&["198.18.0.2", "fd00:18::2"])),
        seed(query("web.", RecordType::MX, None), false, ok(&[])),
        // The fast path: one A question and an EDNS OPT record.
        seed(query("web.", RecordType::A, Some(4096)), false, ok(&["198.18.0.2"])),
        seed(query("tasks.big.", RecordType::A, None), false, reply(ResponseCode::NoError, true, &[])),
        seed(query("2.0.18.198.in-addr.arpa.", RecordType::PTR, None), false, ok(&["web."])),
        seed(query("7.1.18.198.in-addr.arpa.", RecordType::PTR, None), true, ok(&["big.7."])),
        seed(query("nosuch.", RecordType::A, None), false, reply(ResponseCode::NXDomain, false, &[])),
        seed(query("db.", RecordType::A, None), false, reply(ResponseCode::NXDomain, false, &[])),
        seed(query("www.example.org.", RecordType::A, None), false, "forward".to_owned()),
        seed(query("www.example.org.", RecordType::AAAA, Some(1232)), true, "forward".to_owned()),
        // A header, then a question the header promises nine of.
        seed(vec![0xab, 0xcd, 1, 0, 0, 9, 0, 0, 0, 0, 0, 0, 7], false, reply(ResponseCode::FormErr, false, &[])),
        seed(vec![1, 2, 3], false, "drop".to_owned()),
    ];
    let mut bigger = query("big.", RecordType::A, Some(4096));
    bigger[0] = 0x77;
    let mut all: Vec<String> = (0..100).map(|i| format!("198.18.1.{i}")).collect();
    all.sort();
    seeds.push(Seed { bytes: bigger, tcp: false, outcome: described(ResponseCode::NoError, false, all) });
    seeds
}

/// Valid upstream answers, with the summary of what the client gets.
pub fn upstream_answer_seeds() -> Vec<Seed> {
    let name = Name::from_ascii("www.example.org.").expect("a valid name");
    let a = |ip: Ipv4Addr, ttl: u32| Record::from_rdata(name.clone(), ttl, RData::A(A(ip)));
    let two = vec![a(Ipv4Addr::new(192, 0, 2, 80), 300), a(Ipv4Addr::new(192, 0, 2, 81), 60)];
    let sixty: Vec<Record> = (0..60).map(|i| a(Ipv4Addr::new(192, 0, 2, i), 300)).collect();
    let mut sixty_addresses: Vec<String> = (0..60).map(|i| format!("192.0.2.{i}")).collect();
    sixty_addresses.sort();
    let soa = Record::from_rdata(
        Name::from_ascii("example.org.").expect("a valid name"),
        600,
        RData::SOA(SOA::new(
            Name::from_ascii("ns.example.org.").expect("a valid name"),
            Name::from_ascii("hostmaster.example.org.").expect("a valid name"),
            2024,
            3600,
            600,
            86_400,
            300,
        )),
    );
    let answered = described(ResponseCode::NoError, false, vec!["192.0.2.80".to_owned(), "192.0.2.81".to_owned()]);
    let seed = |bytes: Vec<u8>, tcp: bool, outcome: String| Seed { bytes, tcp, outcome };
    vec![
        seed(response(0x1111, ResponseCode::NoError, false, two.clone(), Vec::new()), false, answered.clone()),
        seed(response(0x2222, ResponseCode::NoError, false, two.clone(), Vec::new()), true, answered),
        seed(
            response(0x3333, ResponseCode::NXDomain, false, Vec::new(), vec![soa]),
            false,
            described(ResponseCode::NXDomain, false, Vec::new()),
        ),
        seed(response(0x4444, ResponseCode::ServFail, false, Vec::new(), Vec::new()), false, "drop".to_owned()),
        // Too big for a UDP client: it gets the question with TC set, and asks again over TCP.
        seed(
            response(0x5555, ResponseCode::NoError, false, sixty.clone(), Vec::new()),
            false,
            described(ResponseCode::NoError, true, Vec::new()),
        ),
        seed(
            response(0x6666, ResponseCode::NoError, false, sixty, Vec::new()),
            true,
            described(ResponseCode::NoError, false, sixty_addresses),
        ),
        // An upstream's own truncated answer goes to a UDP client as it is.
        seed(
            response(0x7777, ResponseCode::NoError, true, two, Vec::new()),
            false,
            described(ResponseCode::NoError, true, vec!["192.0.2.80".to_owned(), "192.0.2.81".to_owned()]),
        ),
    ]
}

/// The rules every reply keeps: it parses, is a response, carries `id` and, over UDP, fits the
/// largest UDP answer the server sends.
fn check_reply(reply: &[u8], id: u16, udp: bool) {
    let message = Message::from_vec(reply).unwrap_or_else(|e| panic!("a reply does not parse as DNS: {e}"));
    assert_eq!(message.metadata.message_type, MessageType::Response, "a reply is not a response");
    assert_eq!(message.metadata.id, id, "a reply does not carry the asker's ID");
    if udp {
        assert!(reply.len() <= handler::MAX_UDP_ANSWER, "a UDP reply of {} bytes", reply.len());
    }
}

fn described(code: ResponseCode, truncated: bool, mut answers: Vec<String>) -> String {
    answers.sort();
    format!("{code:?}{} {answers:?}", if truncated { " TC" } else { "" })
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::new(4242, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).expect("a valid name"), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        message.set_edns(e);
    }
    message.to_vec().expect("a query encodes")
}

/// An upstream's answer to `www.example.org. A`.
fn response(id: u16, code: ResponseCode, truncated: bool, answers: Vec<Record>, authorities: Vec<Record>) -> Vec<u8> {
    let mut message = Message::response(id, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.metadata.recursion_available = true;
    message.metadata.response_code = code;
    message.metadata.truncation = truncated;
    message.add_query(Query::query(Name::from_ascii("www.example.org.").expect("a valid name"), RecordType::A));
    message.answers = answers;
    message.authorities = authorities;
    message.to_vec().expect("an answer encodes")
}

fn table() -> RecordTable {
    let ip = |s: &str| -> IpAddr { s.parse().expect("a valid address") };
    let service = |network: &str, id: &str, name: &str, endpoint: Endpoint| Delta::UpsertService {
        network: network.to_owned(),
        service: ServiceRecord { id: id.to_owned(), name: name.to_owned(), aliases: Vec::new(), endpoint },
    };
    let mut deltas = vec![
        service("front", "s-web", "web", Endpoint::Vip(vec![ip("198.18.0.2"), ip("fd00:18::2")])),
        service("front", "s-big", "big", Endpoint::DnsRr),
        service("back", "s-db", "db", Endpoint::Vip(vec![ip("198.19.0.2")])),
    ];
    for i in 0..100u8 {
        deltas.push(Delta::UpsertTask {
            network: "front".to_owned(),
            task: TaskRecord {
                id: format!("t{i}"),
                service_id: Some("s-big".to_owned()),
                name: format!("big.{i}"),
                hostname: None,
                aliases: Vec::new(),
                addresses: vec![IpAddr::from([198, 18, 1, i])],
                healthy: true,
            },
        });
    }
    let table = RecordTable::new();
    table.apply(deltas).expect("the fuzz table applies");
    table
}

//! Entry points for the fuzz tests (`tests/fuzz.rs`), hidden from the documentation and not part
//! of the API. The kernel's netlink answers are read by private decoders (the IPVS
//! generic-netlink codec, the nf_tables answer and set-element parsers), and a fuzz test has to
//! reach them without a socket or a kernel; this module is the narrowest door to them. Each comes
//! with valid inputs written by this crate's own encoders, so that mutations start from real
//! bytes.
//!
//! A `decode_*` returns what the balancer would make of its input, or the decoder's error as
//! text. It panics when an IPVS message written again does not read back the same, or a service
//! key does not survive its own encoding: codec bugs, which the fuzz test reports with the input.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::net::SocketAddrV4;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CAPPED, NLM_F_MULTIPART, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_generic::GenlMessage;

use crate::ipvs;
use crate::ipvs::codec::{Command, DestAttrs, IpvsMessage, ServiceAttrs, ServiceId};
use crate::model::{Protocol, ServiceKey};
use crate::nft::wire::{self, Answer, Batch, Dumped, Element, Op, Rule};

/// The generic-netlink family id the IPVS seeds carry (the kernel picks one when IPVS loads).
const FAMILY_ID: u16 = 0x25;
/// The fwmark of the any-port service the seeds name.
const FWMARK: u32 = 0x4c42_0000;

/// The any-port service whose fwmark is [`FWMARK`], as the balancer names it in errors.
fn any_port_marks() -> BTreeMap<ServiceKey, u32> {
    BTreeMap::from([(ServiceKey::any_port(Ipv4Addr::new(198, 18, 0, 10), Protocol::Tcp), FWMARK)])
}

/// What a decoder made of its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The decoded value, `{:?}`-formatted, or the answer as the balancer reads it.
    pub value: String,
    /// The value written again by this crate's encoder; empty where it has none (the kernel's
    /// error answers, nf_tables answers and dumps).
    pub encoded: Vec<u8>,
}

/// A valid input and what decoding it must give.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The input, written by this crate's encoders.
    pub bytes: Vec<u8>,
    /// What decoding it must give.
    pub decoded: Decoded,
}

/// Decodes `bytes` as one netlink message of the IPVS family, as the balancer's socket reads the
/// kernel's answers and dumps. An IPVS message gives its value and, as `encoded`, the message
/// written again with the same header fields; an error answer gives its code and the request it
/// quotes, named as the balancer names it in its errors.
pub fn decode_ipvs(bytes: &[u8]) -> Result<Decoded, String> {
    // The balancer names a failed request from the copy the kernel quotes: any bytes may be one.
    let _ = ipvs::describe_request(bytes, &any_port_marks());
    let message = NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(bytes).map_err(|e| e.to_string())?;
    let header = message.header;
    match message.payload {
        NetlinkPayload::InnerMessage(genl) => {
            let ipvs = genl.payload;
            let (family, flags, seq, port) =
                (header.message_type, header.flags, header.sequence_number, header.port_number);
            let encoded = whole_message(family, flags, seq, port, ipvs.clone());
            let again = NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(&encoded)
                .unwrap_or_else(|e| panic!("{ipvs:?} written again does not parse: {e}"))
                .payload;
            let NetlinkPayload::InnerMessage(again) = again else {
                panic!("{ipvs:?} written again is not an IPVS message");
            };
            // The kernel's connection counters are read, never written: compare what is written.
            assert_eq!(again.payload.encode(), ipvs.encode(), "{ipvs:?} written again reads back differently");
            Ok(Decoded { value: format!("{ipvs:?}"), encoded })
        }
        NetlinkPayload::Error(error) => Ok(Decoded {
            value: format!("error {:?} for {}", error.code, ipvs::describe_request(&error.header, &any_port_marks())),
            encoded: Vec::new(),
        }),
        _ => Ok(Decoded { value: "another netlink message".to_owned(), encoded: Vec::new() }),
    }
}

/// Reads `datagram` as the balancer reads the kernel's answers on its nf_tables socket: the
/// acknowledgements and errors of a batch, and the answer to a set-element dump whose sequence
/// number is the first message's, each element read as every set of the IPVS backend's table
/// would read it. Fails only when both readings fail.
pub fn decode_nft(datagram: &[u8]) -> Result<Decoded, String> {
    let answers = wire::parse_answers(datagram);
    let mut elements = Vec::new();
    let dump = wire::parse_set_elements(datagram, first_seq(datagram), &mut elements);
    let read: Vec<ReadElement> = elements.iter().map(read_element).collect();
    for element in &read {
        if let Some(key) = element.service {
            assert_eq!(wire::service_key_from_bytes(&wire::service_key_bytes(&key)), Some(key), "{key} read back");
        }
        if let Some((key, mark)) = element.marked {
            assert_eq!(wire::marked_from_bytes(&Element::marked(&key, mark).key), Some((key, mark)), "{key} read back");
        }
        if let Some((key, mark)) = element.mark_of {
            let again = Element::mark_of(&key, mark);
            let back =
                wire::any_port_key_from_bytes(&again.key).zip(again.data.as_deref().and_then(wire::mark_from_bytes));
            assert_eq!(back, Some((key, mark)), "{key} and its mark read back");
        }
    }
    if let (Err(answers), Err(dump)) = (&answers, &dump) {
        return Err(format!("as answers: {answers}; as a set-element dump: {dump}"));
    }
    Ok(Decoded { value: nft_value(&answers, &dump, &read), encoded: Vec::new() })
}

/// A dumped element read as each set of the IPVS backend's table reads its elements.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ReadElement {
    /// As a `snat_services` or `direct_services` element.
    service: Option<ServiceKey>,
    /// As a `snat_any_port` element.
    marked: Option<(ServiceKey, u32)>,
    /// As an `any_port_marks` element.
    mark_of: Option<(ServiceKey, u32)>,
}

fn read_element(element: &Dumped) -> ReadElement {
    ReadElement {
        service: wire::service_key_from_bytes(&element.key),
        marked: wire::marked_from_bytes(&element.key),
        mark_of: wire::any_port_key_from_bytes(&element.key)
            .zip(element.data.as_deref().and_then(wire::mark_from_bytes)),
    }
}

/// Valid IPVS messages: requests as the balancer sends them, a dump's answers as the kernel
/// sends them (without the counters the codec does not write), and an error answer.
pub fn ipvs_seeds() -> Vec<Seed> {
    let vip = Ipv4Addr::new(198, 18, 0, 10);
    let backend = Ipv4Addr::new(198, 18, 1, 11);
    let tcp80 = ServiceId::Addr { protocol: 6, addr: vip, port: 80 };
    let udp53 = ServiceId::Addr { protocol: 17, addr: vip, port: 53 };
    let any_port = ServiceId::Fwmark(FWMARK);
    let request = NLM_F_REQUEST | NLM_F_ACK;
    let messages = [
        (IpvsMessage::new(Command::NewService, Some(ServiceAttrs::full(tcp80, "rr")), None), request),
        (IpvsMessage::new(Command::SetService, Some(ServiceAttrs::full(tcp80, "wrr")), None), request),
        (
            IpvsMessage::new(Command::NewDest, Some(ServiceAttrs::id(tcp80)), Some(DestAttrs::masq(backend, 8080, 3))),
            request,
        ),
        (
            IpvsMessage::new(
                Command::DelDest,
                Some(ServiceAttrs::id(ServiceId::Fwmark(42))),
                Some(DestAttrs::id(backend, 8080)),
            ),
            request,
        ),
        (IpvsMessage::new(Command::DelService, Some(ServiceAttrs::id(tcp80)), None), request),
        (IpvsMessage::new(Command::NewService, Some(ServiceAttrs::full(any_port, "rr")), None), request),
        (
            IpvsMessage::new(Command::NewDest, Some(ServiceAttrs::id(any_port)), Some(DestAttrs::masq(backend, 0, 1))),
            request,
        ),
        (IpvsMessage::new(Command::NewService, Some(ServiceAttrs::full(any_port, "wrr")), None), NLM_F_MULTIPART),
        (IpvsMessage::new(Command::Flush, None, None), request),
        (IpvsMessage::new(Command::GetService, None, None), request),
        (IpvsMessage::new(Command::NewService, Some(ServiceAttrs::full(udp53, "rr")), None), NLM_F_MULTIPART),
        (IpvsMessage::new(Command::NewDest, None, Some(DestAttrs::masq(backend, 53, 0))), NLM_F_MULTIPART),
    ];
    let mut seeds = Vec::new();
    let (mut del_service, mut new_fwmark_service) = (Vec::new(), Vec::new());
    for (seq, (message, flags)) in (1u32..).zip(messages) {
        let bytes = whole_message(FAMILY_ID, flags, seq, 0, message.clone());
        if message.cmd == Command::DelService {
            del_service = bytes.clone();
        }
        if message.cmd == Command::NewService
            && flags == request
            && message.service.as_ref().map(|s| s.id) == Some(any_port)
        {
            new_fwmark_service = bytes.clone();
        }
        seeds.push(Seed { bytes: bytes.clone(), decoded: Decoded { value: format!("{message:?}"), encoded: bytes } });
    }
    // The kernel refusing the deletion (ENOENT) and the fwmark service (EEXIST): error answers
    // quoting the whole request, the fwmark service named by its any-port service.
    for (request, errno, value) in [
        (del_service, -2i32, format!("error Some(-2) for IPVS DelService of service {vip}:80/tcp")),
        (
            new_fwmark_service,
            -17,
            format!("error Some(-17) for IPVS NewService of service {vip}:*/tcp (fwmark {FWMARK:#x})"),
        ),
    ] {
        let mut error = netlink_header(16 + 4 + request.len(), NLMSG_ERROR, 0, 5);
        error.extend_from_slice(&errno.to_ne_bytes());
        error.extend_from_slice(&request);
        seeds.push(Seed { bytes: error, decoded: Decoded { value, encoded: Vec::new() } });
    }
    seeds
}

/// Valid nf_tables answers: a set-element dump and its end, the answers to a batch (an error and
/// the acknowledgement), a dump request, and an error answer to it.
pub fn nft_seeds() -> Vec<Seed> {
    let vip = Ipv4Addr::new(198, 18, 0, 10);
    let backend = |i: u8| SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 10 + i), 8080);
    let keys = [
        ServiceKey::tcp(vip, 80),
        ServiceKey::udp(Ipv4Addr::new(198, 18, 0, 11), 53),
        ServiceKey { addr: Ipv4Addr::new(198, 18, 0, 12), port: 9, protocol: Protocol::Sctp },
    ];
    let no_answers: Result<Vec<Answer>, String> = Ok(Vec::new());
    let mut seeds = Vec::new();

    // Set-element dump answers: the elements message (a batch's element add is the dump's
    // format) and the end of the dump, both with the dump's sequence number; of a set of
    // services, of any-port services and their marks, and of a map of marks.
    let any_port = ServiceKey::any_port(vip, Protocol::Udp);
    for (set, elements) in [
        ("snat_services", keys.iter().map(Element::service).collect::<Vec<_>>()),
        ("snat_any_port", vec![Element::marked(&any_port, FWMARK)]),
        (
            "any_port_marks",
            vec![
                Element::mark_of(&any_port, FWMARK),
                Element::mark_of(&ServiceKey::any_port(keys[2].addr, Protocol::Sctp), FWMARK + 1),
            ],
        ),
    ] {
        let mut batch = Batch::new("shoal_ipvs", 41);
        batch.push(&Op::NewElements { set: set.to_owned(), elements: elements.clone() });
        let encoded = batch.finish().expect("the batch encodes").expect("the batch is not empty");
        let mut dump = messages(&encoded.bytes)[1].to_vec();
        dump.extend_from_slice(&done(42));
        let read: Vec<ReadElement> =
            elements.iter().map(|e| read_element(&Dumped { key: e.key.clone(), data: e.data.clone() })).collect();
        seeds.push(nft_seed(dump, &no_answers, Ok(Some(0)), &read));
    }

    // The answers to a batch: the kernel refused its second message (EEXIST) and acknowledged the
    // last one.
    let service = keys[0];
    let chain = "svc_198_18_0_10_tcp_80".to_owned();
    let mut batch = Batch::new("shoal_lb", 100);
    for op in [
        Op::NewChain { service, chain: chain.clone() },
        Op::NewRule { service, chain: chain.clone(), rule: Rule::Dnat { modulus: 3 } },
        Op::NewRule { service, chain: chain.clone(), rule: Rule::Mark(0x2000_0000) },
        Op::NewRule { service, chain: chain.clone(), rule: Rule::Drained(backend(3)) },
        Op::NewService { service, chain: chain.clone() },
        Op::NewSlots { service, slots: vec![(0, backend(1)), (1, backend(2)), (2, backend(2))] },
        Op::FlushChain { service, chain: chain.clone() },
        Op::NewRule { service, chain, rule: Rule::Drop },
        Op::NewService { service: any_port, chain: "svc_198_18_0_10_udp_any".to_owned() },
        Op::NewRule {
            service: any_port,
            chain: "svc_198_18_0_10_udp_any".to_owned(),
            rule: Rule::DnatKeepPort { modulus: 2 },
        },
    ] {
        batch.push(&op);
    }
    let encoded = batch.finish().expect("the batch encodes").expect("the batch is not empty");
    let sent = messages(&encoded.bytes);
    let (refused, last) = (encoded.sent[1].0, encoded.last_seq);
    let mut answers = answer(refused, -17, sent[2]);
    answers.extend_from_slice(&answer(last, 0, sent[sent.len() - 2]));
    let read = Ok(vec![Answer { seq: refused, errno: 17 }, Answer { seq: last, errno: 0 }]);
    // Read as a dump answer with the first message's number, the error ends the dump.
    seeds.push(nft_seed(answers, &read, Ok(Some(17)), &[]));

    // A set-element dump request (the kernel never sends one; nothing in it is an answer), and
    // the kernel's error answer to it: no such table.
    let request = wire::set_elements_request("shoal_ipvs", "snat_services", 7);
    seeds.push(nft_seed(request.clone(), &no_answers, Ok(None), &[]));
    seeds.push(nft_seed(answer(7, -2, &request), &Ok(vec![Answer { seq: 7, errno: 2 }]), Ok(Some(2)), &[]));
    seeds
}

/// One IPVS netlink message: the family's id as its type, then these flags, sequence and port
/// numbers.
fn whole_message(family: u16, flags: u16, seq: u32, port: u32, payload: IpvsMessage) -> Vec<u8> {
    let mut genl = GenlMessage::from_payload(payload);
    genl.set_resolved_family_id(family);
    let mut message = NetlinkMessage::from(genl);
    message.header.flags = flags;
    message.header.sequence_number = seq;
    message.header.port_number = port;
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// A seed of [`decode_nft`]: `bytes`, which read as `answers`, as a set-element dump ending as
/// `dump`, holding `elements`.
fn nft_seed(
    bytes: Vec<u8>,
    answers: &Result<Vec<Answer>, String>,
    dump: Result<Option<i32>, String>,
    elements: &[ReadElement],
) -> Seed {
    let value = nft_value(answers, &dump, elements);
    Seed { bytes, decoded: Decoded { value, encoded: Vec::new() } }
}

fn nft_value(
    answers: &Result<Vec<Answer>, String>,
    dump: &Result<Option<i32>, String>,
    elements: &[ReadElement],
) -> String {
    format!("answers {answers:?}; set-element dump {dump:?}; elements {elements:?}")
}

/// The sequence number of the first message of a datagram (0 when it is too short for one).
fn first_seq(datagram: &[u8]) -> u32 {
    datagram.get(8..12).map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// The messages of a batch this crate encoded.
fn messages(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        out.push(&rest[..len]);
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    out
}

/// An `nlmsghdr` of a message of `len` bytes (port 0).
fn netlink_header(len: usize, kind: u16, flags: u16, seq: u32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len);
    bytes.extend_from_slice(&(len as u32).to_ne_bytes());
    bytes.extend_from_slice(&kind.to_ne_bytes());
    bytes.extend_from_slice(&flags.to_ne_bytes());
    bytes.extend_from_slice(&seq.to_ne_bytes());
    bytes.extend_from_slice(&0u32.to_ne_bytes());
    bytes
}

/// An `NLMSG_ERROR` answering `seq` with `error` (0: acknowledged), quoting only the header of
/// the request (`NLM_F_CAPPED`), as the kernel answers a batch.
fn answer(seq: u32, error: i32, request: &[u8]) -> Vec<u8> {
    let mut bytes = netlink_header(16 + 4 + 16, NLMSG_ERROR, NLM_F_CAPPED, seq);
    bytes.extend_from_slice(&error.to_ne_bytes());
    bytes.extend_from_slice(&request[..16]);
    bytes
}

/// The end of a dump: `NLMSG_DONE` with its error code 0.
fn done(seq: u32) -> Vec<u8> {
    let mut bytes = netlink_header(16 + 4, NLMSG_DONE, NLM_F_MULTIPART, seq);
    bytes.extend_from_slice(&0i32.to_ne_bytes());
    bytes
}

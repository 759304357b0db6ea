//! Byte-vector tests of the nf_tables messages, written from `nf_tables.h`/`nfnetlink.h`
//! (native-endian netlink headers, big-endian attribute values), and of reading answers.

use std::net::Ipv4Addr;

use super::*;

fn key() -> ServiceKey {
    ServiceKey::tcp(Ipv4Addr::new(198, 18, 0, 10), 80)
}

/// Every TCP port of the same address.
fn any() -> ServiceKey {
    ServiceKey::any_port(Ipv4Addr::new(198, 18, 0, 10), crate::model::Protocol::Tcp)
}

/// `nlmsghdr` + `nfgenmsg` of a message of `len` bytes.
fn header(len: u32, kind: u16, flags: u16, seq: u32, family: u8) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&len.to_ne_bytes());
    bytes.extend_from_slice(&kind.to_ne_bytes());
    bytes.extend_from_slice(&flags.to_ne_bytes());
    bytes.extend_from_slice(&seq.to_ne_bytes());
    bytes.extend_from_slice(&0u32.to_ne_bytes());
    bytes.extend_from_slice(&[family, 0, 0, 10]);
    bytes
}

fn attr(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&u16::try_from(4 + payload.len()).expect("short").to_ne_bytes());
    bytes.extend_from_slice(&kind.to_ne_bytes());
    bytes.extend_from_slice(payload);
    while bytes.len() % 4 != 0 {
        bytes.push(0);
    }
    bytes
}

fn nested(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
    attr(kind | 0x8000, &parts.concat())
}

#[test]
fn a_flush_is_a_batch_of_one_rule_deletion_naming_only_the_chain() {
    let mut batch = Batch::new("lb", 7);
    batch.push(&Op::FlushChain { service: key(), chain: "svc_x".to_owned() });
    let encoded = batch.finish().expect("encodes").expect("not empty");
    let body = [attr(1, b"lb\0"), attr(2, b"svc_x\0")].concat();
    let expected = [
        header(20, 0x10, 0x1, 7, 0),                // NFNL_MSG_BATCH_BEGIN, res_id NFTABLES
        header(40, (10 << 8) | 8, 0x1 | 0x4, 8, 2), // NFT_MSG_DELRULE, REQUEST|ACK, ip
        body,                                       // NFTA_RULE_TABLE, NFTA_RULE_CHAIN
        header(20, 0x11, 0x1, 9, 0),                // NFNL_MSG_BATCH_END
    ]
    .concat();
    assert_eq!(encoded.bytes, expected);
    assert_eq!((encoded.begin_seq, encoded.last_seq), (7, 8));
    assert_eq!(encoded.sent, vec![(8, "flush chain svc_x of service 198.18.0.10:80/tcp".to_owned())]);
}

#[test]
fn an_empty_batch_is_nothing_to_send() {
    assert!(Batch::new("lb", 1).finish().expect("encodes").is_none());
}

#[test]
fn only_the_last_message_asks_for_an_acknowledgement() {
    let mut batch = Batch::new("lb", 1);
    batch.push(&Op::NewChain { service: key(), chain: "svc_x".to_owned() });
    batch.push(&Op::DelService { service: key() });
    let encoded = batch.finish().expect("encodes").expect("not empty");
    let chain = [attr(1, b"lb\0"), attr(3, b"svc_x\0")].concat();
    let first = [header(40, (10 << 8) | 3, 0x1 | 0x400, 2, 2), chain].concat(); // NEWCHAIN, CREATE
    assert_eq!(&encoded.bytes[20..60], first.as_slice());
    let flags = u16::from_ne_bytes([encoded.bytes[60 + 6], encoded.bytes[60 + 7]]);
    assert_eq!(flags, 0x1 | 0x4, "the DELSETELEM message: REQUEST|ACK");
    assert_eq!(encoded.last_seq, 3);
}

#[test]
fn keys_and_values_are_registers_of_the_concatenation() {
    // 198.18.0.10 . tcp . 80 . slot 2 (host order) → 198.18.1.12 . 8080
    let mut expected = vec![198, 18, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0];
    assert_eq!(service_key_bytes(&key()), expected);
    expected.extend_from_slice(&2u32.to_ne_bytes());
    assert_eq!(slot_key_bytes(&key(), 2), expected);
    assert_eq!(
        backend_bytes(&key(), SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 12), 8080)),
        [198, 18, 1, 12, 0x1f, 0x90, 0, 0]
    );
}

#[test]
fn any_port_keys_and_values_leave_the_port_out() {
    // 198.18.0.10 . tcp (. slot 2) → 198.18.1.12, as `nft --debug=netlink` shows the elements
    // `element 0a0012c6 00000006 00000002 : 0c0112c6`.
    let mut expected = vec![198, 18, 0, 10, 6, 0, 0, 0];
    assert_eq!(lookup_key_bytes(&any()), expected);
    expected.extend_from_slice(&2u32.to_ne_bytes());
    assert_eq!(slot_key_bytes(&any(), 2), expected);
    assert_eq!(backend_bytes(&any(), SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 12), 0)), [198, 18, 1, 12]);
    assert_eq!(services_map(&any()), "any_port_services");
    assert_eq!(services_map(&key()), "services");
    assert_eq!(backends_map(&any()), "any_port_backends_29");
}

#[test]
fn backend_maps_are_a_stable_hash_of_the_key() {
    // FNV-1a of the key's bytes, modulo 64: a table written by one version is changed by the next.
    assert_eq!(backends_map(&key()), "backends_29");
    assert_eq!(backends_map(&ServiceKey::udp(Ipv4Addr::new(198, 18, 0, 20), 20_000)), "backends_10");
}

#[test]
fn a_slot_element_and_a_service_element() {
    let backend = SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 12), 8080);
    let mut batch = Batch::new("lb", 1);
    batch.push(&Op::NewSlots { service: key(), slots: vec![(2, backend)] });
    batch.push(&Op::NewService { service: key(), chain: "svc_x".to_owned() });
    let encoded = batch.finish().expect("encodes").expect("not empty");
    let slot = nested(
        1,
        &[
            nested(1, &[attr(1, &slot_key_bytes(&key(), 2))]), // NFTA_SET_ELEM_KEY { NFTA_DATA_VALUE }
            nested(2, &[attr(1, &backend_bytes(&key(), backend))]), // NFTA_SET_ELEM_DATA { NFTA_DATA_VALUE }
        ],
    );
    let slots = [attr(1, b"lb\0"), attr(2, b"backends_29\0"), nested(3, &[slot])].concat();
    let verdict = nested(2, &[attr(1, &(-4i32).to_be_bytes()), attr(2, b"svc_x\0")]); // NFT_GOTO svc_x
    let service = nested(1, &[nested(1, &[attr(1, &service_key_bytes(&key()))]), nested(2, &[verdict])]);
    let services = [attr(1, b"lb\0"), attr(2, b"services\0"), nested(3, &[service])].concat();
    let first_len = u32::try_from(20 + slots.len()).expect("short");
    let second_len = u32::try_from(20 + services.len()).expect("short");
    let expected = [
        header(20, 0x10, 0x1, 1, 0),
        header(first_len, (10 << 8) | 12, 0x1 | 0x400, 2, 2), // NEWSETELEM, CREATE
        slots,
        header(second_len, (10 << 8) | 12, 0x1 | 0x400 | 0x4, 3, 2),
        services,
        header(20, 0x11, 0x1, 4, 0),
    ]
    .concat();
    assert_eq!(encoded.bytes, expected);
}

#[test]
fn an_any_port_slot_element_and_service_element() {
    let backend = SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 12), 0);
    let mut batch = Batch::new("lb", 1);
    batch.push(&Op::NewSlots { service: any(), slots: vec![(1, backend)] });
    batch.push(&Op::NewService { service: any(), chain: "svc_y".to_owned() });
    batch.push(&Op::DelService { service: any() });
    let encoded = batch.finish().expect("encodes").expect("not empty");
    // 198.18.0.10 . tcp . 1 : 198.18.1.12 in any_port_backends_29.
    let slot = nested(
        1,
        &[nested(1, &[attr(1, &[198, 18, 0, 10, 6, 0, 0, 0, 1, 0, 0, 0])]), nested(2, &[attr(1, &[198, 18, 1, 12])])],
    );
    let slots = [attr(1, b"lb\0"), attr(2, b"any_port_backends_29\0"), nested(3, &[slot])].concat();
    // 198.18.0.10 . tcp : goto svc_y in any_port_services.
    let verdict = nested(2, &[attr(1, &(-4i32).to_be_bytes()), attr(2, b"svc_y\0")]);
    let service = nested(1, &[nested(1, &[attr(1, &[198, 18, 0, 10, 6, 0, 0, 0])]), nested(2, &[verdict])]);
    let services = [attr(1, b"lb\0"), attr(2, b"any_port_services\0"), nested(3, &[service])].concat();
    let deleted = nested(1, &[nested(1, &[attr(1, &[198, 18, 0, 10, 6, 0, 0, 0])])]);
    let deletion = [attr(1, b"lb\0"), attr(2, b"any_port_services\0"), nested(3, &[deleted])].concat();
    let len = |body: &[u8]| u32::try_from(20 + body.len()).expect("short");
    let expected = [
        header(20, 0x10, 0x1, 1, 0),
        header(len(&slots), (10 << 8) | 12, 0x1 | 0x400, 2, 2), // NEWSETELEM, CREATE
        slots.clone(),
        header(len(&services), (10 << 8) | 12, 0x1 | 0x400, 3, 2),
        services.clone(),
        header(len(&deletion), (10 << 8) | 14, 0x1 | 0x4, 4, 2), // DELSETELEM, ACK
        deletion,
        header(20, 0x11, 0x1, 5, 0),
    ]
    .concat();
    assert_eq!(encoded.bytes, expected);
    assert_eq!(encoded.sent[1].1, "add any_port_services element of service 198.18.0.10:*/tcp");
}

#[test]
fn many_slots_are_split_over_messages_under_the_attribute_limit() {
    let backend = SocketAddrV4::new(Ipv4Addr::new(198, 18, 1, 12), 8080);
    let mut batch = Batch::new("lb", 1);
    batch.push(&Op::NewSlots { service: key(), slots: (0..1200).map(|s| (s, backend)).collect() });
    let encoded = batch.finish().expect("encodes").expect("not empty");
    assert_eq!(encoded.sent.len(), 3, "500 + 500 + 200 elements");
}

/// The rule body (after `nlmsghdr`, `nfgenmsg`, table and chain) of a one-rule batch.
fn rule_body(rule: Rule) -> Vec<u8> {
    let mut batch = Batch::new("lb", 1);
    batch.push(&Op::NewRule { service: key(), chain: "c".to_owned(), rule });
    let encoded = batch.finish().expect("encodes").expect("not empty");
    let start = 20 + 20 + 8 + 8; // BATCH_BEGIN, headers, NFTA_RULE_TABLE "lb", NFTA_RULE_CHAIN "c"
    assert_eq!(&encoded.bytes[start - 16..start], [attr(1, b"lb\0"), attr(2, b"c\0")].concat().as_slice());
    encoded.bytes[start..encoded.bytes.len() - 20].to_vec()
}

fn expr(name: &[u8], data: &[Vec<u8>]) -> Vec<u8> {
    nested(1, &[attr(1, name), nested(2, data)])
}

fn be32(kind: u16, value: u32) -> Vec<u8> {
    attr(kind, &value.to_be_bytes())
}

#[test]
fn a_drained_backend_is_a_rule_with_only_a_comment() {
    // As nft stores `comment "drained 1.2.3.4:80"`: type 0, length with the NUL, the text.
    let mut udata = vec![0, 19];
    udata.extend_from_slice(b"drained 1.2.3.4:80\0");
    let rule = Rule::Drained(SocketAddrV4::new(Ipv4Addr::new(1, 2, 3, 4), 80));
    assert_eq!(rule_body(rule), attr(7, &udata));
}

#[test]
fn drop_is_an_immediate_verdict() {
    let verdict = nested(2, &[nested(2, &[be32(1, 0)])]); // NFTA_IMMEDIATE_DATA { VERDICT { CODE NF_DROP } }
    assert_eq!(rule_body(Rule::Drop), nested(4, &[expr(b"immediate\0", &[be32(1, 0), verdict])]));
}

#[test]
fn the_masquerade_mark_is_ct_load_bitwise_ct_set() {
    let mark = 0x2000_0000u32;
    let expected = nested(
        4,
        &[
            expr(b"ct\0", &[be32(1, 1), be32(2, 3)]), // dreg 1, key mark
            expr(
                b"bitwise\0",
                &[
                    be32(1, 1),
                    be32(2, 1),
                    be32(3, 4),
                    nested(4, &[attr(1, &(!mark).to_ne_bytes())]), // mask
                    nested(5, &[attr(1, &mark.to_ne_bytes())]),    // xor
                ],
            ),
            expr(b"ct\0", &[be32(2, 3), be32(4, 1)]), // key mark, sreg 1
        ],
    );
    assert_eq!(rule_body(Rule::Mark(mark)), expected);
}

#[test]
fn dnat_looks_the_slot_up_in_the_backends_map() {
    // What `nft --debug=netlink` shows for the same rule:
    // payload load 4b @ network header + 16 => reg 1; meta load l4proto => reg 9;
    // payload load 2b @ transport header + 2 => reg 10; numgen reg 11 = inc mod 3;
    // lookup reg 1 set backends_29 dreg 1; nat dnat ip addr_min reg 1 addr_max reg 1
    // proto_min reg 9 proto_max reg 9 flags 0x3
    let expected = nested(
        4,
        &[
            expr(b"payload\0", &[be32(1, 1), be32(2, 1), be32(3, 16), be32(4, 4)]),
            expr(b"meta\0", &[be32(1, 9), be32(2, 16)]),
            expr(b"payload\0", &[be32(1, 10), be32(2, 2), be32(3, 2), be32(4, 2)]),
            expr(b"numgen\0", &[be32(1, 11), be32(2, 3), be32(3, 0), be32(4, 0)]),
            expr(b"lookup\0", &[attr(1, b"backends_29\0"), be32(2, 1), be32(3, 1)]),
            expr(b"nat\0", &[be32(1, 1), be32(2, 2), be32(3, 1), be32(4, 1), be32(5, 9), be32(6, 9), be32(7, 3)]),
        ],
    );
    assert_eq!(rule_body(Rule::Dnat { modulus: 3 }), expected);
}

#[test]
fn an_any_port_dnat_maps_the_address_and_keeps_the_port() {
    // `dnat to ip daddr . meta l4proto . numgen inc mod 3 map @any_port_backends_29`, which
    // `nft --debug=netlink` shows as:
    // payload load 4b @ network header + 16 => reg 1; meta load l4proto => reg 9;
    // numgen reg 10 = inc mod 3; lookup reg 1 set any_port_backends_29 dreg 1;
    // nat dnat ip addr_min reg 1 (and `--debug=mnl`: NFTA_NAT_TYPE, _FAMILY, _REG_ADDR_MIN only)
    let mut batch = Batch::new("lb", 1);
    batch.push(&Op::NewRule { service: any(), chain: "c".to_owned(), rule: Rule::DnatKeepPort { modulus: 3 } });
    let encoded = batch.finish().expect("encodes").expect("not empty");
    let body = &encoded.bytes[20 + 20 + 8 + 8..encoded.bytes.len() - 20];
    let expected = nested(
        4,
        &[
            expr(b"payload\0", &[be32(1, 1), be32(2, 1), be32(3, 16), be32(4, 4)]),
            expr(b"meta\0", &[be32(1, 9), be32(2, 16)]),
            expr(b"numgen\0", &[be32(1, 10), be32(2, 3), be32(3, 0), be32(4, 0)]),
            expr(b"lookup\0", &[attr(1, b"any_port_backends_29\0"), be32(2, 1), be32(3, 1)]),
            expr(b"nat\0", &[be32(1, 1), be32(2, 2), be32(3, 1)]),
        ],
    );
    assert_eq!(body, expected.as_slice());
}

/// An `NLMSG_ERROR` answering `seq` with `error` (0 or a negative errno), capped.
fn answer(seq: u32, error: i32) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&36u32.to_ne_bytes());
    bytes.extend_from_slice(&2u16.to_ne_bytes());
    bytes.extend_from_slice(&0x100u16.to_ne_bytes()); // NLM_F_CAPPED
    bytes.extend_from_slice(&seq.to_ne_bytes());
    bytes.extend_from_slice(&1234u32.to_ne_bytes());
    bytes.extend_from_slice(&error.to_ne_bytes());
    bytes.extend_from_slice(&header(40, (10 << 8) | 12, 0x1, seq, 2)[..16]);
    bytes
}

#[test]
fn answers_are_read_with_their_sequence_numbers() {
    let datagram = [answer(5, -2), answer(9, 0)].concat();
    let answers = parse_answers(&datagram).expect("parses");
    assert_eq!(answers, vec![Answer { seq: 5, errno: 2 }, Answer { seq: 9, errno: 0 }]);
}

#[test]
fn truncated_answers_are_errors_not_panics() {
    let datagram = answer(5, -2);
    for cut in [17, 30, 35] {
        assert!(parse_answers(&datagram[..cut]).is_err(), "cut at {cut}");
    }
    let mut short = datagram.clone();
    short[..4].copy_from_slice(&20u32.to_ne_bytes());
    assert!(parse_answers(&short).is_err(), "an error message too short for its header");
}

/// The body (after `nlmsghdr` and `nfgenmsg`) of the only message of a one-op batch, and its
/// header's type and flags.
fn only_message(op: &Op) -> (u16, u16, Vec<u8>) {
    let mut batch = Batch::new("shoal_ipvs", 1);
    batch.push(op);
    let encoded = batch.finish().expect("encodes").expect("not empty");
    assert_eq!(encoded.sent.len(), 1, "one message");
    let message = &encoded.bytes[20..encoded.bytes.len() - 20];
    let kind = u16::from_ne_bytes([message[4], message[5]]);
    let flags = u16::from_ne_bytes([message[6], message[7]]);
    (kind, flags, message[20..].to_vec())
}

#[test]
fn the_ipvs_table_sets_and_map() {
    let table = attr(1, b"shoal_ipvs\0");
    assert_eq!(only_message(&Op::NewTable), ((10 << 8), 0x1 | 0x400 | 0x4, table.clone()));
    let set = [
        table.clone(),
        attr(2, b"snat_services\0"),
        be32(4, (7 << 12) | (12 << 6) | 13), // NFTA_SET_KEY_TYPE ipv4_addr . inet_proto . inet_service
        be32(5, 12),                         // NFTA_SET_KEY_LEN
        be32(10, 1),                         // NFTA_SET_ID
    ]
    .concat();
    let op = Op::NewSet { set: "snat_services".to_owned(), kind: SetKind::ServiceKeys };
    assert_eq!(only_message(&op), ((10 << 8) | 9, 0x405, set));
    let marked = [
        table.clone(),
        attr(2, b"snat_any_port\0"),
        be32(4, (7 << 12) | (12 << 6) | 19), // ipv4_addr . inet_proto . mark
        be32(5, 12),
        be32(10, 1),
    ]
    .concat();
    let op = Op::NewSet { set: "snat_any_port".to_owned(), kind: SetKind::MarkedServices };
    assert_eq!(only_message(&op), ((10 << 8) | 9, 0x405, marked));
    // As `nft --debug=mnl` sends `add map … { type ipv4_addr . inet_proto : mark; }`: flags
    // NFT_SET_MAP, key 0x1cc of 8 bytes, data TYPE_MARK of 4, and of its user data only the
    // data's byte order (NFTNL_UDATA_SET_DATABYTEORDER 1, 4 bytes, BYTEORDER_HOST_ENDIAN).
    let map = [
        table.clone(),
        attr(2, b"any_port_marks\0"),
        be32(3, 8),                                             // NFTA_SET_FLAGS NFT_SET_MAP
        be32(4, (7 << 6) | 12),                                 // NFTA_SET_KEY_TYPE ipv4_addr . inet_proto
        be32(5, 8),                                             // NFTA_SET_KEY_LEN
        be32(6, 19),                                            // NFTA_SET_DATA_TYPE mark
        be32(7, 4),                                             // NFTA_SET_DATA_LEN
        be32(10, 1),                                            // NFTA_SET_ID
        attr(13, &[&[1, 4][..], &1u32.to_ne_bytes()].concat()), // NFTA_SET_USERDATA
    ]
    .concat();
    let op = Op::NewSet { set: "any_port_marks".to_owned(), kind: SetKind::Marks };
    assert_eq!(only_message(&op), ((10 << 8) | 9, 0x405, map));
}

#[test]
fn sets_of_one_batch_get_their_own_ids() {
    let mut batch = Batch::new("t", 1);
    for set in ["a", "b"] {
        batch.push(&Op::NewSet { set: set.to_owned(), kind: SetKind::ServiceKeys });
    }
    let encoded = batch.finish().expect("encodes").expect("not empty");
    let id = |n: u32| be32(10, n);
    let bytes = &encoded.bytes;
    assert!(bytes.windows(8).any(|w| w == id(1).as_slice()) && bytes.windows(8).any(|w| w == id(2).as_slice()));
}

#[test]
fn the_ipvs_table_chains() {
    let table = attr(1, b"shoal_ipvs\0");
    for (hook, name, hooknum, priority, kind) in [
        (BaseHook::SourceNat, &b"postrouting\0"[..], 4, 100, &b"nat\0"[..]), // srcnat
        (BaseHook::ManglePrerouting, b"prerouting\0", 0, -150, b"filter\0"), // mangle
        (BaseHook::MangleOutput, b"output\0", 3, -150, b"route\0"),
    ] {
        let chain = [
            table.clone(),
            attr(3, name),
            nested(4, &[be32(1, hooknum), attr(2, &i32::to_be_bytes(priority))]), // NFTA_CHAIN_HOOK
            be32(5, 1),                                                           // NFTA_CHAIN_POLICY NF_ACCEPT
            attr(7, kind),                                                        // NFTA_CHAIN_TYPE
        ]
        .concat();
        let chain_name = String::from_utf8_lossy(&name[..name.len() - 1]).into_owned();
        assert_eq!(only_message(&Op::NewBaseChain { chain: chain_name, hook }), ((10 << 8) | 3, 0x405, chain));
    }
}

/// The expressions of a base rule as the only message of a batch.
fn base_rule(rule: BaseRule) -> Vec<u8> {
    let (kind, flags, body) = only_message(&Op::NewBaseRule { chain: "c".to_owned(), rule });
    assert_eq!((kind, flags), ((10 << 8) | 6, 0x1 | 0x400 | 0x800 | 0x4), "NEWRULE, CREATE|APPEND");
    let prefix = [attr(1, b"shoal_ipvs\0"), attr(2, b"c\0")].concat();
    assert_eq!(&body[..prefix.len()], prefix.as_slice());
    body[prefix.len()..].to_vec()
}

#[test]
fn the_masquerade_rules_look_up_the_original_destination() {
    let direction = attr(3, &[0]); // NFTA_CT_DIRECTION IP_CT_DIR_ORIGINAL (u8)
    let expressions = nested(
        4,
        &[
            expr(b"ct\0", &[be32(1, 1), be32(2, 20), direction.clone()]), // reg 1 = ct original ip daddr
            expr(b"meta\0", &[be32(1, 9), be32(2, 16)]),                  // reg 9 = meta l4proto
            expr(b"ct\0", &[be32(1, 10), be32(2, 12), direction.clone()]), // reg 10 = ct original proto-dst
            expr(b"lookup\0", &[attr(1, b"snat_services\0"), be32(2, 1)]), // @snat_services, sreg 1
            expr(b"masq\0", &[]),
        ],
    );
    assert_eq!(base_rule(BaseRule::MasqueradeServices { set: "snat_services".to_owned() }), expressions);
    // `… . meta mark @snat_any_port masquerade`: `meta load mark => reg 10` (key 3).
    let expressions = nested(
        4,
        &[
            expr(b"ct\0", &[be32(1, 1), be32(2, 20), direction]),
            expr(b"meta\0", &[be32(1, 9), be32(2, 16)]),
            expr(b"meta\0", &[be32(1, 10), be32(2, 3)]),
            expr(b"lookup\0", &[attr(1, b"snat_any_port\0"), be32(2, 1)]),
            expr(b"masq\0", &[]),
        ],
    );
    assert_eq!(base_rule(BaseRule::MasqueradeMarked { set: "snat_any_port".to_owned() }), expressions);
}

#[test]
fn the_marking_rules() {
    // `ip daddr . meta l4proto . th dport @direct_services return`, as `nft --debug=netlink`:
    // payload load 4b @ network header + 16 => reg 1; meta load l4proto => reg 9;
    // payload load 2b @ transport header + 2 => reg 10; lookup reg 1 set direct_services;
    // immediate reg 0 return
    let ret = nested(2, &[nested(2, &[attr(1, &(-5i32).to_be_bytes())])]); // DATA { VERDICT { CODE NFT_RETURN } }
    let expressions = nested(
        4,
        &[
            expr(b"payload\0", &[be32(1, 1), be32(2, 1), be32(3, 16), be32(4, 4)]),
            expr(b"meta\0", &[be32(1, 9), be32(2, 16)]),
            expr(b"payload\0", &[be32(1, 10), be32(2, 2), be32(3, 2), be32(4, 2)]),
            expr(b"lookup\0", &[attr(1, b"direct_services\0"), be32(2, 1)]),
            expr(b"immediate\0", &[be32(1, 0), ret]),
        ],
    );
    assert_eq!(base_rule(BaseRule::ReturnServices { set: "direct_services".to_owned() }), expressions);
    // `meta mark set ip daddr . meta l4proto map @any_port_marks`: … lookup reg 1 set
    // any_port_marks dreg 1; meta set mark with reg 1
    let expressions = nested(
        4,
        &[
            expr(b"payload\0", &[be32(1, 1), be32(2, 1), be32(3, 16), be32(4, 4)]),
            expr(b"meta\0", &[be32(1, 9), be32(2, 16)]),
            expr(b"lookup\0", &[attr(1, b"any_port_marks\0"), be32(2, 1), be32(3, 1)]),
            expr(b"meta\0", &[be32(2, 3), be32(3, 1)]), // NFTA_META_KEY mark, NFTA_META_SREG 1
        ],
    );
    assert_eq!(base_rule(BaseRule::SetMark { map: "any_port_marks".to_owned() }), expressions);
}

#[test]
fn service_keys_are_set_elements_without_data() {
    let keys = vec![key(), ServiceKey::udp(Ipv4Addr::new(198, 18, 0, 10), 53)];
    let elements = |keys: &[ServiceKey]| {
        let list: Vec<Vec<u8>> =
            keys.iter().map(|k| nested(1, &[nested(1, &[attr(1, &service_key_bytes(k))])])).collect();
        [attr(1, b"shoal_ipvs\0"), attr(2, b"snat_services\0"), nested(3, &list)].concat()
    };
    let add =
        Op::NewElements { set: "snat_services".to_owned(), elements: keys.iter().map(Element::service).collect() };
    assert_eq!(only_message(&add), ((10 << 8) | 12, 0x405, elements(&keys)));
    let del = Op::DelElements { set: "snat_services".to_owned(), elements: vec![Element::service(&keys[0])] };
    assert_eq!(only_message(&del), ((10 << 8) | 14, 0x5, elements(&keys[..1])));
    assert_eq!(
        del.describe(),
        "delete snat_services elements of service 198.18.0.10:80/tcp",
        "a refusal names the service"
    );
    let many: Vec<Element> =
        (1..=6).map(|p| Element::service(&ServiceKey::tcp(Ipv4Addr::new(198, 18, 0, 10), p))).collect();
    assert_eq!(
        Op::NewElements { set: "s".to_owned(), elements: many }.describe(),
        "add s elements of services 198.18.0.10:1/tcp, 198.18.0.10:2/tcp, 198.18.0.10:3/tcp, 198.18.0.10:4/tcp and 2 more"
    );
}

#[test]
fn marks_are_elements_in_host_order() {
    // As `nft --debug=netlink` shows `198.18.0.10 . tcp : 0x4c420001` and
    // `198.18.0.10 . tcp . 0x4c420001`: `element 0a0012c6 00000006 : 4c420001` (words read in
    // host order), `element 0a0012c6 00000006 4c420001`.
    let mark = 0x4c42_0001u32;
    let mapped = Element::mark_of(&any(), mark);
    assert_eq!(mapped.key, [198, 18, 0, 10, 6, 0, 0, 0]);
    assert_eq!(mapped.data, Some(mark.to_ne_bytes().to_vec()));
    let marked = Element::marked(&any(), mark);
    assert_eq!(marked.key, [&[198, 18, 0, 10, 6, 0, 0, 0][..], &mark.to_ne_bytes()].concat());
    assert_eq!(marked_from_bytes(&marked.key), Some((any(), mark)));
    let add = Op::NewElements { set: "any_port_marks".to_owned(), elements: vec![mapped.clone()] };
    let element = nested(1, &[nested(1, &[attr(1, &mapped.key)]), nested(2, &[attr(1, &mark.to_ne_bytes())])]);
    let body = [attr(1, b"shoal_ipvs\0"), attr(2, b"any_port_marks\0"), nested(3, &[element])].concat();
    assert_eq!(only_message(&add), ((10 << 8) | 12, 0x405, body));
    // A deletion names the key only.
    let del = Op::DelElements { set: "any_port_marks".to_owned(), elements: vec![mapped] };
    let element = nested(1, &[nested(1, &[attr(1, &[198, 18, 0, 10, 6, 0, 0, 0])])]);
    let body = [attr(1, b"shoal_ipvs\0"), attr(2, b"any_port_marks\0"), nested(3, &[element])].concat();
    assert_eq!(only_message(&del), ((10 << 8) | 14, 0x5, body));
    assert_eq!(del.describe(), "delete any_port_marks elements of service 198.18.0.10:*/tcp");
}

#[test]
fn a_service_key_reads_back_from_its_bytes() {
    assert_eq!(service_key_from_bytes(&service_key_bytes(&key())), Some(key()));
    assert_eq!(service_key_from_bytes(&[198, 18, 0, 10, 6, 0, 0, 0, 0, 80]), None, "too short");
    assert_eq!(service_key_from_bytes(&[198, 18, 0, 10, 1, 0, 0, 0, 0, 80, 0, 0]), None, "icmp is no service");
    assert_eq!(service_key_from_bytes(&[198, 18, 0, 10, 6, 0, 0, 0, 0, 0, 0, 0]), None, "port 0 has its own form");
    assert_eq!(any_port_key_from_bytes(&any_port_key_bytes(&any())), Some(any()));
    assert_eq!(any_port_key_from_bytes(&[198, 18, 0, 10, 6, 0, 0]), None, "too short");
    assert_eq!(mark_from_bytes(&[1, 2, 3]), None, "too short");
}

#[test]
fn a_set_element_dump_request_and_its_answer() {
    let request = set_elements_request("shoal_ipvs", "snat_services", 42);
    let body = [attr(1, b"shoal_ipvs\0"), attr(2, b"snat_services\0")].concat();
    let len = u32::try_from(20 + body.len()).expect("short");
    assert_eq!(request, [header(len, (10 << 8) | 13, 0x1 | 0x300, 42, 2), body].concat()); // GETSETELEM, DUMP

    // One NEWSETELEM message as the kernel dumps it (the element has flags too), then DONE;
    // a message of another request in between is skipped.
    let element = nested(1, &[nested(1, &[attr(1, &service_key_bytes(&key()))]), be32(3, 0)]);
    let body = [attr(1, b"shoal_ipvs\0"), attr(2, b"snat_services\0"), nested(3, &[element])].concat();
    let len = u32::try_from(20 + body.len()).expect("short");
    let mut datagram = [header(len, (10 << 8) | 12, 0x2, 42, 2), body.clone()].concat();
    datagram.extend([header(len, (10 << 8) | 12, 0x2, 41, 2), body].concat());
    let mut keys = Vec::new();
    assert_eq!(parse_set_elements(&datagram, 42, &mut keys), Ok(None), "more to come");
    assert_eq!(keys, vec![Dumped { key: service_key_bytes(&key()), data: None }]);
    let mut done = header(20, 3, 0x2, 42, 0); // NLMSG_DONE (its payload: the int 0)
    done.truncate(16);
    done.extend_from_slice(&0i32.to_ne_bytes());
    assert_eq!(parse_set_elements(&done, 42, &mut keys), Ok(Some(0)));

    // No such table: an NLMSG_ERROR with -ENOENT.
    let mut error = header(36, 2, 0, 42, 0);
    error.truncate(16);
    error.extend_from_slice(&(-2i32).to_ne_bytes());
    error.extend_from_slice(&header(len, (10 << 8) | 13, 0x301, 42, 2)[..16]);
    assert_eq!(parse_set_elements(&error, 42, &mut keys), Ok(Some(2)));
    assert!(parse_set_elements(&error[..30], 42, &mut keys).is_err(), "truncated");
}

#[test]
fn a_map_dump_gives_keys_and_values() {
    // One NEWSETELEM of any_port_marks as the kernel dumps it: key, data, flags.
    let mark = 0x4c42_0001u32;
    let element = nested(
        1,
        &[nested(1, &[attr(1, &[198, 18, 0, 10, 6, 0, 0, 0])]), nested(2, &[attr(1, &mark.to_ne_bytes())]), be32(3, 0)],
    );
    let body = [attr(1, b"shoal_ipvs\0"), attr(2, b"any_port_marks\0"), nested(3, &[element])].concat();
    let len = u32::try_from(20 + body.len()).expect("short");
    let datagram = [header(len, (10 << 8) | 12, 0x2, 7, 2), body].concat();
    let mut elements = Vec::new();
    assert_eq!(parse_set_elements(&datagram, 7, &mut elements), Ok(None));
    let dumped = Dumped { key: any_port_key_bytes(&any()), data: Some(mark.to_ne_bytes().to_vec()) };
    assert_eq!(elements, vec![dumped]);
}

//! The IPVS codec against byte vectors written out by hand from `include/uapi/linux/ip_vs.h`
//! (attribute headers and integers in host order, little-endian here; ports big-endian).

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;

use super::*;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

fn tcp80() -> ServiceId {
    ServiceId::Addr { protocol: 6, addr: VIP, port: 80 }
}

/// The service attributes of 198.18.0.10:80/tcp, round robin, as `ipvsadm -A -t … -s rr` sends them.
#[rustfmt::skip]
const NEW_SERVICE: &[u8] = &[
    0x54, 0x00, 0x01, 0x80,                          // IPVS_CMD_ATTR_SERVICE, nested, 84 bytes
    0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00,  // AF = AF_INET
    0x06, 0x00, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00,  // PROTOCOL = 6
    0x14, 0x00, 0x03, 0x00, 198, 18, 0, 10,          // ADDR (16 bytes: nf_inet_addr)
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0x06, 0x00, 0x04, 0x00, 0x00, 0x50, 0x00, 0x00,  // PORT = 80, network order
    0x07, 0x00, 0x06, 0x00, b'r', b'r', 0x00, 0x00,  // SCHED_NAME = "rr\0"
    0x0c, 0x00, 0x07, 0x00, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, // FLAGS {flags 0, mask ~0}
    0x08, 0x00, 0x08, 0x00, 0, 0, 0, 0,              // TIMEOUT = 0
    0x08, 0x00, 0x09, 0x00, 0xff, 0xff, 0xff, 0xff,  // NETMASK = 255.255.255.255
];

#[rustfmt::skip]
const NEW_DEST: &[u8] = &[
    0x14, 0x00, 0x01, 0x80,                          // SERVICE, nested, 20 bytes: the id only
    0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00,
    0x08, 0x00, 0x05, 0x00, 0x2a, 0x00, 0x00, 0x00,  // FWMARK = 42
    0x48, 0x00, 0x02, 0x80,                          // DEST, nested, 72 bytes
    0x14, 0x00, 0x01, 0x00, 198, 18, 1, 11,          // ADDR
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0x06, 0x00, 0x02, 0x00, 0x1f, 0x90, 0x00, 0x00,  // PORT = 8080
    0x08, 0x00, 0x03, 0x00, 0, 0, 0, 0,              // FWD_METHOD = MASQ
    0x08, 0x00, 0x04, 0x00, 3, 0, 0, 0,              // WEIGHT = 3
    0x08, 0x00, 0x05, 0x00, 0, 0, 0, 0,              // U_THRESH
    0x08, 0x00, 0x06, 0x00, 0, 0, 0, 0,              // L_THRESH
    0x06, 0x00, 0x0b, 0x00, 0x02, 0x00, 0x00, 0x00,  // ADDR_FAMILY = AF_INET
];

#[test]
#[cfg(target_endian = "little")]
fn new_service_encodes_as_ipvsadm_does() {
    let message = IpvsMessage::new(Command::NewService, Some(ServiceAttrs::full(tcp80(), "rr")), None);
    assert_eq!(message.encode(), NEW_SERVICE);
    assert_eq!(IpvsMessage::decode(1, NEW_SERVICE).expect("decode"), message);
}

#[test]
#[cfg(target_endian = "little")]
fn new_dest_of_a_fwmark_service() {
    let message = IpvsMessage::new(
        Command::NewDest,
        Some(ServiceAttrs::id(ServiceId::Fwmark(42))),
        Some(DestAttrs::masq(Ipv4Addr::new(198, 18, 1, 11), 8080, 3)),
    );
    assert_eq!(message.encode(), NEW_DEST);
    assert_eq!(IpvsMessage::decode(5, NEW_DEST).expect("decode"), message);
}

#[test]
#[cfg(target_endian = "little")]
fn whole_netlink_message_with_headers() {
    let payload = IpvsMessage::new(Command::DelService, Some(ServiceAttrs::id(tcp80())), None);
    let mut genl = GenlMessage::from_payload(payload);
    genl.set_resolved_family_id(0x25);
    let mut message = NetlinkMessage::from(genl);
    message.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    message.header.sequence_number = 7;
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    #[rustfmt::skip]
    let header: &[u8] = &[
        0x44, 0, 0, 0,    // nlmsg_len = 16 + 4 + 48
        0x25, 0,          // nlmsg_type = the resolved family
        0x05, 0,          // NLM_F_REQUEST | NLM_F_ACK
        7, 0, 0, 0,       // sequence
        0, 0, 0, 0,       // port
        3, 1, 0, 0,       // genl: IPVS_CMD_DEL_SERVICE, version 1, reserved
        0x30, 0x00, 0x01, 0x80, // SERVICE, nested, 48 bytes: AF, PROTOCOL, ADDR, PORT
    ];
    assert_eq!(&bytes[..header.len()], header);
    assert_eq!(bytes.len(), 0x44);
    let parsed = NetlinkMessage::<GenlMessage<IpvsMessage>>::deserialize(&bytes).expect("parse");
    let NetlinkPayload::InnerMessage(inner) = parsed.payload else { panic!("not an inner message") };
    assert_eq!(inner.payload, IpvsMessage::new(Command::DelService, Some(ServiceAttrs::id(tcp80())), None));
}

/// A destination as the kernel dumps it: with counters and a nested stats attribute this codec
/// skips.
#[test]
#[cfg(target_endian = "little")]
fn dumped_destination_decodes_and_skips_unknown_attributes() {
    #[rustfmt::skip]
    let dump: &[u8] = &[
        0x54, 0x00, 0x02, 0x80,                          // DEST, nested, 84 bytes
        0x14, 0x00, 0x01, 0x00, 198, 18, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x06, 0x00, 0x02, 0x00, 0x1f, 0x90, 0x00, 0x00,  // PORT 8080
        0x08, 0x00, 0x03, 0x00, 0, 0, 0, 0,              // FWD_METHOD MASQ
        0x08, 0x00, 0x04, 0x00, 0, 0, 0, 0,              // WEIGHT 0 (drained)
        0x08, 0x00, 0x07, 0x00, 2, 0, 0, 0,              // ACTIVE_CONNS 2
        0x08, 0x00, 0x08, 0x00, 5, 0, 0, 0,              // INACT_CONNS 5
        0x0c, 0x00, 0x0a, 0x80,                          // STATS, nested: skipped
        0x08, 0x00, 0x01, 0x00, 9, 0, 0, 0,
        0x06, 0x00, 0x0b, 0x00, 0x02, 0x00, 0x00, 0x00,  // ADDR_FAMILY
    ];
    let message = IpvsMessage::decode(5, dump).expect("decode");
    let dest = message.dest.expect("dest");
    assert_eq!((dest.addr, dest.port, dest.weight), (Ipv4Addr::new(198, 18, 1, 12), 8080, Some(0)));
    assert_eq!((dest.active_conns, dest.inactive_conns), (Some(2), Some(5)));
}

#[test]
fn truncated_attributes_are_errors_not_panics() {
    assert!(IpvsMessage::decode(1, &[0x54, 0x00, 0x01, 0x80, 0x06]).is_err());
    assert!(IpvsMessage::decode(1, &[0x02, 0x00, 0x01, 0x80]).is_err());
    assert!(IpvsMessage::decode(99, &[]).is_err());
    // A service without a way to name it.
    assert!(IpvsMessage::decode(1, &[0x0c, 0x00, 0x01, 0x80, 0x06, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00]).is_err());
}

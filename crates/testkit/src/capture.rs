//! Reading what `tcpdump -w` captured (classic pcap, microsecond or nanosecond, either byte
//! order; Ethernet, or Linux's cooked headers of `-i any`): the IPv4 packets, with what a test asks of them — which
//! protocol, between which addresses, which VXLAN network for UDP to 4789, and whether some
//! bytes appear anywhere in the frame.

use std::net::Ipv4Addr;

/// One IPv4 packet of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// The IP protocol (17 UDP, 50 ESP, …).
    pub protocol: u8,
    /// The VNI of a VXLAN datagram (UDP to port 4789).
    pub vni: Option<u32>,
    /// The whole frame as captured.
    pub frame: Vec<u8>,
}

impl Packet {
    /// Whether `needle` appears in the frame.
    pub fn contains(&self, needle: &[u8]) -> bool {
        !needle.is_empty() && self.frame.windows(needle.len()).any(|w| w == needle)
    }
}

/// The IPv4 packets of pcap file contents `data` (other frames are skipped), or what is wrong
/// with the file.
pub fn ipv4_packets(data: &[u8]) -> Result<Vec<Packet>, String> {
    let magic = data.get(..4).ok_or("not a pcap file: shorter than its magic number")?;
    let big_endian = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => false,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => true,
        other => return Err(format!("not a pcap file: magic number {other:02x?}")),
    };
    let u32_at = |at: usize| -> Option<u32> {
        let bytes: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if big_endian { u32::from_be_bytes(bytes) } else { u32::from_le_bytes(bytes) })
    };
    let link_type = u32_at(20).ok_or("a pcap header shorter than 24 bytes")?;
    // Where the EtherType is and where the network header starts.
    let (ethertype, network) = match link_type {
        ETHERNET => (12, 14),
        LINUX_SLL => (14, 16),
        LINUX_SLL2 => (0, 20),
        other => {
            return Err(format!("link type {other}: only Ethernet (1) and Linux cooked captures (113, 276) are read"));
        }
    };
    let mut packets = Vec::new();
    let mut at = 24;
    while at < data.len() {
        let captured = u32_at(at + 8).ok_or_else(|| format!("a record header cut short at byte {at}"))? as usize;
        let frame = data
            .get(at + 16..at + 16 + captured)
            .ok_or_else(|| format!("a record of {captured} bytes cut short at byte {at}"))?;
        at += 16 + captured;
        if let Some(packet) = parse_frame(frame, ethertype, network) {
            packets.push(packet);
        }
    }
    Ok(packets)
}

const ETHERNET: u32 = 1;
const LINUX_SLL: u32 = 113;
const LINUX_SLL2: u32 = 276;

fn parse_frame(frame: &[u8], ethertype: usize, network: usize) -> Option<Packet> {
    if frame.get(ethertype..ethertype + 2)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(network..)?;
    let header = usize::from(ip.first()? & 0x0f) * 4;
    if ip.first()? >> 4 != 4 || header < 20 {
        return None;
    }
    let octets =
        |at: usize| -> Option<Ipv4Addr> { Some(Ipv4Addr::new(ip[at], *ip.get(at + 1)?, ip[at + 2], ip[at + 3])) };
    let protocol = *ip.get(9)?;
    let (src, dst) = (octets(12)?, octets(16)?);
    let payload = ip.get(header..)?;
    let vni = (protocol == 17 && payload.get(2..4) == Some(&4789u16.to_be_bytes()[..]))
        .then(|| payload.get(12..15).map(|v| u32::from_be_bytes([0, v[0], v[1], v[2]])))
        .flatten();
    Some(Packet { src, dst, protocol, vni, frame: frame.to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian microsecond pcap with the given Ethernet frames.
    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&65535u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        for frame in frames {
            out.extend_from_slice(&[0; 8]);
            let len = u32::try_from(frame.len()).expect("len").to_le_bytes();
            out.extend_from_slice(&len);
            out.extend_from_slice(&len);
            out.extend_from_slice(frame);
        }
        out
    }

    fn frame(protocol: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0; 12];
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 0, 0, 0, 0, 0, 64, protocol, 0, 0]);
        f.extend_from_slice(&[192, 0, 2, 12, 192, 0, 2, 13]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn vxlan_esp_and_other_frames_are_told_apart() {
        let mut vxlan = vec![0x9c, 0x40, 0x12, 0xb5, 0, 30, 0, 0, 0x08, 0, 0, 0, 0x00, 0x10, 0x03, 0];
        vxlan.extend_from_slice(b"inner frame with SECRET-MARKER");
        let esp = [0, 0, 1, 0, 0, 0, 0, 1, 0xde, 0xad];
        let mut arp = vec![0; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 1]);
        let packets = ipv4_packets(&pcap(&[frame(17, &vxlan), arp, frame(50, &esp)])).expect("read");
        assert_eq!(packets.len(), 2, "the ARP frame is skipped");
        assert_eq!((packets[0].protocol, packets[0].vni), (17, Some(4099)));
        assert_eq!((packets[0].src, packets[0].dst), (Ipv4Addr::new(192, 0, 2, 12), Ipv4Addr::new(192, 0, 2, 13)));
        assert!(packets[0].contains(b"SECRET-MARKER"));
        assert_eq!((packets[1].protocol, packets[1].vni), (50, None));
        assert!(!packets[1].contains(b"SECRET-MARKER"));
    }

    #[test]
    fn cooked_captures_of_any_interface_are_read() {
        let mut out = pcap(&[]);
        out[20..24].copy_from_slice(&LINUX_SLL2.to_le_bytes());
        let ethernet = frame(50, &[0; 8]);
        let mut sll2 = vec![0x08, 0x00, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0];
        sll2.extend_from_slice(&ethernet[14..]);
        out.extend_from_slice(&[0; 8]);
        let len = u32::try_from(sll2.len()).expect("len").to_le_bytes();
        out.extend_from_slice(&len);
        out.extend_from_slice(&len);
        out.extend_from_slice(&sll2);
        let packets = ipv4_packets(&out).expect("read");
        assert_eq!(packets.len(), 1);
        assert_eq!((packets[0].protocol, packets[0].dst), (50, Ipv4Addr::new(192, 0, 2, 13)));
    }

    #[test]
    fn what_is_not_a_pcap_is_said() {
        assert!(ipv4_packets(b"hello world, no pcap").expect_err("magic").contains("not a pcap file"));
        let mut cut = pcap(&[frame(50, &[0; 8])]);
        cut.truncate(cut.len() - 3);
        assert!(ipv4_packets(&cut).expect_err("cut").contains("cut short"));
    }
}

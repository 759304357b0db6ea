//! Encrypted overlays: what a node needs in its namespace so that the VXLAN datagrams of its
//! encrypted networks leave it only as ESP, and how the planner gets there.
//!
//! The cluster holds a ring of keys ([`NetworkKey`]: 3 of them, each with a Lamport tag, rotated
//! by the manager). For every peer node `P` that hosts an endpoint of an encrypted network, a node
//! `L` has:
//!
//! - an inbound SA `P → L` per key of the ring, so that it can decrypt whatever key `P` sends
//!   with, the next primary one included;
//! - one outbound SA `L → P` with the *primary* key (the middle one by tag: the newest key is
//!   installed for receiving one rotation before anyone sends with it, so no packet is lost);
//! - one outbound policy `L → P, udp dport <vxlan port>, mark ESP_MARK` that sends through that SA;
//!   a rotation switches its SPI in place (`XFRM_MSG_UPDPOLICY`), the atomic moment;
//! - one catch-all *block* policy per VXLAN port for marked datagrams: a peer whose SA is not
//!   there yet is not reached, rather than reached in the clear;
//! - an nftables table (`ip shoal_esp`) that marks outgoing VXLAN datagrams of encrypted VNIs
//!   (a route chain, so that the new mark is seen by the xfrm lookup) and drops incoming ones of
//!   those VNIs that did not come through ESP (`meta secpath missing`).
//!
//! Each SA has its own key, salt and SPI, derived with HKDF-SHA256 from the ring key and the
//! direction (source, destination, tag): Swarm uses one key for every SA with salt = SPI, where a
//! 32-bit SPI collision would repeat a GCM nonce. Because the SPI depends on the key, a node that
//! finds an SA with the wanted SPI has the wanted key, and an agent restart adopts what it finds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ring::hmac;

use crate::model::{DEFAULT_MTU, Desired};
use crate::plan::{Op, PlanError};
use crate::xfrm::{Policy, PolicyAction, Sa, SaId};

/// Bytes ESP adds to each VXLAN datagram: SPI 4, sequence 4, IV 8, pad length 1, next header 1,
/// ICV 16 (the 0–3 bytes of padding come on top and are absorbed by rounding the MTU down).
pub const ESP_OVERHEAD: u32 = 34;

/// The MTU of an encrypted network that names none: [`DEFAULT_MTU`] less [`ESP_OVERHEAD`], a
/// multiple of 4, so that the ESP packet of a full-sized frame fits a 1500-byte underlay.
pub const ENCRYPTED_MTU: u32 = DEFAULT_MTU - ESP_OVERHEAD;

/// Priority of the policy towards one peer (lower wins).
pub const PEER_PRIORITY: u32 = 100;
/// Priority of the catch-all block policy.
pub const BLOCK_PRIORITY: u32 = 200;

/// HKDF's salt: names the derivation, so that its output means nothing elsewhere.
const KDF_SALT: &[u8] = b"shoal-esp-v1";

/// One key of the cluster's ring.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkKey {
    /// Its Lamport tag: newer keys have larger ones.
    pub tag: u64,
    /// The key (AES-128).
    pub key: [u8; 16],
}

impl std::fmt::Debug for NetworkKey {
    // Keys stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkKey").field("tag", &self.tag).finish_non_exhaustive()
    }
}

/// What a node encrypts with: its underlay address and the cluster's key ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encryption {
    /// The node's underlay address (the source of its VXLAN datagrams).
    pub local: Ipv4Addr,
    /// The ring; empty while the node has none yet (then encrypted networks reach no peer).
    pub keys: Vec<NetworkKey>,
}

/// The key that sends: the second newest of the ring by tag (the middle of three), or the only
/// one of a ring of one. `None` for an empty ring.
pub fn primary(keys: &[NetworkKey]) -> Option<&NetworkKey> {
    let mut sorted: Vec<&NetworkKey> = keys.iter().collect();
    sorted.sort_by_key(|k| std::cmp::Reverse(k.tag));
    sorted.get(1).or_else(|| sorted.first()).copied()
}

/// The SA that carries `key`'s traffic from `src` to `dst`: SPI, AES key and salt come from
/// HKDF-SHA256 (RFC 5869) with `key` as input keying material and `src ‖ dst ‖ tag` as info.
/// SPIs below 256 are reserved, so the SPI is at least 256.
pub fn sa(key: &NetworkKey, src: Ipv4Addr, dst: Ipv4Addr) -> Sa {
    // HKDF-Extract, then the first block of HKDF-Expand: 24 bytes fit in one SHA-256 block.
    let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, KDF_SALT), &key.key);
    let expand = hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref());
    let mut info = Vec::with_capacity(17);
    info.extend_from_slice(&src.octets());
    info.extend_from_slice(&dst.octets());
    info.extend_from_slice(&key.tag.to_be_bytes());
    info.push(1);
    let okm = hmac::sign(&expand, &info);
    let okm = okm.as_ref();
    let mut aes = [0u8; 16];
    aes.copy_from_slice(&okm[..16]);
    let mut salt = [0u8; 4];
    salt.copy_from_slice(&okm[16..20]);
    let spi = u32::from_be_bytes([okm[20], okm[21], okm[22], okm[23]]);
    Sa { src, dst, spi: if spi < 0x100 { spi | 0x100 } else { spi }, key: aes, salt }
}

/// What this library made for ESP in the node namespace, as observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EspState {
    /// SAs with Shoal's reqid.
    pub sas: BTreeSet<SaId>,
    /// Outbound policies with Shoal's mark.
    pub policies: Vec<Policy>,
    /// The comment of the marking table's rules (it records what they are for), `None` when the
    /// table is absent.
    pub table: Option<String>,
}

/// The comment of the marking table's rules for `rules` (VXLAN port, VNI).
pub(crate) fn table_comment(rules: &[(u16, u32)]) -> String {
    let list: Vec<String> = rules.iter().map(|(port, vni)| format!("{port}:{vni}")).collect();
    format!("shoal-overlay esp {}", list.join(","))
}

/// The `nft -f` script that replaces table `name` (family `ip`) with the marking and dropping
/// rules for `rules` (VXLAN port, VNI). The VNI is bits 96–119 of the transport header: the UDP
/// header's 8 bytes, then the VXLAN header's flags and reserved bytes.
pub(crate) fn table_script(name: &str, rules: &[(u16, u32)]) -> String {
    let comment = table_comment(rules);
    let mut script = format!("table ip {name} {{}}\nflush table ip {name}\ntable ip {name} {{\n");
    script.push_str("  chain out {\n    type route hook output priority mangle; policy accept;\n");
    for (port, vni) in rules {
        script.push_str(&format!(
            "    udp dport {port} @th,96,24 {vni} counter meta mark set {:#010x} comment \"{comment}\"\n",
            crate::xfrm::ESP_MARK
        ));
    }
    script.push_str("  }\n  chain in {\n    type filter hook input priority raw; policy accept;\n");
    for (port, vni) in rules {
        script.push_str(&format!(
            "    meta secpath missing udp dport {port} @th,96,24 {vni} counter drop comment \"{comment}\"\n"
        ));
    }
    script.push_str("  }\n}\n");
    script
}

/// Adds the ESP operations that take `observed` to what `desired` needs, in an order that never
/// lets a datagram of an encrypted network out in the clear and never drops one across a key
/// rotation: the marking table and block policies first, then inbound SAs, outbound SAs, the
/// policies towards peers (switched in place), and only then what is no longer wanted.
pub(crate) fn plan(desired: &Desired, observed: &EspState, ops: &mut Vec<Op>) -> Result<(), PlanError> {
    let encrypted: BTreeMap<&str, u16> =
        desired.networks.iter().filter(|n| n.encrypted).map(|n| (n.id.as_str(), n.vxlan_port)).collect();
    let mut rules: Vec<(u16, u32)> =
        desired.networks.iter().filter(|n| n.encrypted).map(|n| (n.vxlan_port, n.vni)).collect();
    rules.sort_unstable();
    let ports: BTreeSet<u16> = encrypted.values().copied().collect();

    // Peers by VXLAN port: the nodes that host an endpoint of an encrypted network.
    let mut peers: BTreeMap<u16, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for remote in &desired.remotes {
        let Some(port) = encrypted.get(remote.network.as_str()) else { continue };
        let IpAddr::V4(node) = remote.node else {
            return Err(PlanError::EncryptedOverIpv6 { network: remote.network.clone(), node: remote.node });
        };
        peers.entry(*port).or_default().insert(node);
    }

    // In the order they are added: per peer, inbound by tag, then outbound.
    let mut sas: Vec<Sa> = Vec::new();
    let mut policies: BTreeMap<(Option<Ipv4Addr>, Option<Ipv4Addr>, u16), Policy> = BTreeMap::new();
    for port in &ports {
        let block =
            Policy { src: None, dst: None, dport: *port, priority: BLOCK_PRIORITY, action: PolicyAction::Block };
        policies.insert((None, None, *port), block);
    }
    let keys = desired.encryption.as_ref().map(|e| (e.local, e.keys.as_slice()));
    if let Some((local, ring)) = keys
        && let Some(primary) = primary(ring)
    {
        for (port, nodes) in &peers {
            for peer in nodes.iter().filter(|p| **p != local) {
                let mut by_tag: Vec<&NetworkKey> = ring.iter().collect();
                by_tag.sort_by_key(|k| k.tag);
                sas.extend(by_tag.into_iter().map(|key| sa(key, *peer, local)));
                let outbound = sa(primary, local, *peer);
                let action = PolicyAction::Encrypt { spi: outbound.spi };
                sas.push(outbound);
                let policy =
                    Policy { src: Some(local), dst: Some(*peer), dport: *port, priority: PEER_PRIORITY, action };
                policies.insert((Some(local), Some(*peer), *port), policy);
            }
        }
    }

    if !rules.is_empty() && observed.table.as_deref() != Some(table_comment(&rules).as_str()) {
        ops.push(Op::SetEspTable { rules: rules.clone() });
    }
    let observed_policies: BTreeMap<_, &Policy> =
        observed.policies.iter().map(|p| ((p.src, p.dst, p.dport), p)).collect();
    let set = |ops: &mut Vec<Op>, blocks: bool| {
        for (key, policy) in policies.iter().filter(|(_, p)| (p.action == PolicyAction::Block) == blocks) {
            match observed_policies.get(key) {
                Some(current) if **current == *policy => {}
                current => ops.push(Op::SetPolicy { policy: *policy, update: current.is_some() }),
            }
        }
    };
    set(ops, true);
    let (inbound, outbound): (Vec<&Sa>, Vec<&Sa>) =
        sas.iter().partition(|sa| keys.is_some_and(|(local, _)| sa.dst == local));
    for sa in inbound.into_iter().chain(outbound) {
        if !observed.sas.contains(&id(sa)) {
            ops.push(Op::AddSa { sa: sa.clone() });
        }
    }
    set(ops, false);
    for (key, policy) in &observed_policies {
        if !policies.contains_key(key) {
            ops.push(Op::DeletePolicy { policy: **policy });
        }
    }
    // Outbound SAs that no longer send first, then inbound ones of pruned keys.
    let local = keys.map(|(local, _)| local);
    let wanted: BTreeSet<SaId> = sas.iter().map(id).collect();
    let (old_out, old_in): (Vec<&SaId>, Vec<&SaId>) =
        observed.sas.iter().filter(|s| !wanted.contains(s)).partition(|s| Some(s.src) == local);
    for stale in old_out.into_iter().chain(old_in) {
        ops.push(Op::DeleteSa { id: *stale });
    }
    if rules.is_empty() && observed.table.is_some() {
        ops.push(Op::DeleteEspTable);
    }
    Ok(())
}

fn id(sa: &Sa) -> SaId {
    SaId { src: sa.src, dst: sa.dst, spi: sa.spi }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tag: u64, byte: u8) -> NetworkKey {
        NetworkKey { tag, key: [byte; 16] }
    }

    #[test]
    fn the_primary_is_the_middle_key_by_tag() {
        assert_eq!(primary(&[]), None);
        assert_eq!(primary(&[key(7, 1)]).map(|k| k.tag), Some(7));
        assert_eq!(primary(&[key(7, 1), key(9, 2)]).map(|k| k.tag), Some(7));
        // In any order: the second newest.
        assert_eq!(primary(&[key(12, 3), key(10, 1), key(11, 2)]).map(|k| k.tag), Some(11));
    }

    #[test]
    fn each_direction_and_key_has_its_own_sa() {
        let (a, b) = (Ipv4Addr::new(192, 0, 2, 11), Ipv4Addr::new(192, 0, 2, 12));
        let k = key(10, 0x5a);
        let forward = sa(&k, a, b);
        assert_eq!(forward, sa(&k, a, b), "derivation is deterministic");
        let reverse = sa(&k, b, a);
        assert_ne!(forward.spi, reverse.spi);
        assert_ne!(forward.key, reverse.key);
        let next = sa(&key(11, 0x5a), a, b);
        assert_ne!(forward.spi, next.spi, "the tag is part of the derivation");
        let other = sa(&key(10, 0x5b), a, b);
        assert_ne!(forward.spi, other.spi, "so is the key: a new ring with the same tags is not adopted");
        assert!(forward.spi >= 0x100);
    }

    #[test]
    fn the_derivation_is_hkdf_sha256() {
        // RFC 5869: OKM = T(1) | … with T(1) = HMAC(PRK, info | 0x01), PRK = HMAC(salt, IKM).
        // Checked against ring's own HKDF.
        struct Len;
        impl ring::hkdf::KeyType for Len {
            fn len(&self) -> usize {
                24
            }
        }
        let (a, b) = (Ipv4Addr::new(192, 0, 2, 11), Ipv4Addr::new(192, 0, 2, 12));
        let k = key(0x0102_0304_0506_0708, 0x42);
        let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, KDF_SALT).extract(&k.key);
        let tag = k.tag.to_be_bytes();
        let info = [&a.octets()[..], &b.octets()[..], &tag[..]];
        let mut okm = [0u8; 24];
        prk.expand(&info, Len).expect("expand").fill(&mut okm).expect("fill");
        let derived = sa(&k, a, b);
        assert_eq!(derived.key[..], okm[..16]);
        assert_eq!(derived.salt[..], okm[16..20]);
        let spi = u32::from_be_bytes([okm[20], okm[21], okm[22], okm[23]]);
        assert_eq!(derived.spi, if spi < 0x100 { spi | 0x100 } else { spi });
    }

    #[test]
    fn the_script_marks_and_drops_each_encrypted_vni() {
        let script = table_script("shoal_esp", &[(4789, 4097), (4789, 4099)]);
        assert!(script.starts_with("table ip shoal_esp {}\nflush table ip shoal_esp\n"), "{script}");
        assert!(script.contains("type route hook output priority mangle"), "{script}");
        assert!(
            script.contains(
                "udp dport 4789 @th,96,24 4099 counter meta mark set 0x45535000 comment \"shoal-overlay esp 4789:4097,4789:4099\""
            ),
            "{script}"
        );
        assert!(script.contains("meta secpath missing udp dport 4789 @th,96,24 4097 counter drop"), "{script}");
    }
}

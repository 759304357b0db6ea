//! nf_tables netlink messages for service changes: a batch (one transaction) of chain, rule and
//! set-element messages, encoded from `include/uapi/linux/netfilter/nf_tables.h` and
//! `nfnetlink.h`, and the kernel's answers to it.
//!
//! `nft` 1.0.6 fills its cache with every chain and set of the table before it applies anything
//! (a dump whose cost grows with the number of services), and each short-lived `nft` process
//! waits, when it closes its socket, for the RCU grace period of the objects its transaction
//! released. Changes therefore go through a socket this crate keeps open and messages it builds
//! itself; `nft` still creates the table and reads it back.

use std::net::SocketAddrV4;

use crate::model::ServiceKey;

/// `NFPROTO_IPV4`: the family of the table.
const NFPROTO_IPV4: u8 = 2;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_ROOT | NLM_F_MATCH`.
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// The type bits of an attribute's kind (without `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`).
const NLA_TYPE_MASK: u16 = 0x3fff;

// Attribute numbers (enum nft_*_attributes).
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_META_SREG: u16 = 3;
const NFTA_NG_DREG: u16 = 1;
const NFTA_NG_MODULUS: u16 = 2;
const NFTA_NG_TYPE: u16 = 3;
const NFTA_NG_OFFSET: u16 = 4;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_ADDR_MAX: u16 = 4;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_REG_PROTO_MAX: u16 = 6;
const NFTA_NAT_FLAGS: u16 = 7;
const NFTA_CT_DREG: u16 = 1;
const NFTA_CT_KEY: u16 = 2;
const NFTA_CT_DIRECTION: u16 = 3;
const NFTA_CT_SREG: u16 = 4;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;

// Values.
const NFT_REG_VERDICT: u32 = 0;
/// `NFT_REG_1`, the same storage as the 32-bit registers 8..=11.
const NFT_REG_1: u32 = 1;
const NFT_REG32_01: u32 = 9;
const NFT_REG32_02: u32 = 10;
const NFT_REG32_03: u32 = 11;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_META_MARK: u32 = 3;
const NFT_META_L4PROTO: u32 = 16;
const NFT_NG_INCREMENTAL: u32 = 0;
const NFT_NAT_DNAT: u32 = 1;
const NF_NAT_RANGE_MAP_IPS_AND_PROTO: u32 = 0x3;
const NFT_CT_MARK: u32 = 3;
const NFT_CT_PROTO_DST: u32 = 12;
const NFT_CT_DST_IP: u32 = 20;
/// `IP_CT_DIR_ORIGINAL`: the tuple of the connection's first packet, before any NAT.
const IP_CT_DIR_ORIGINAL: u8 = 0;
const NF_INET_PRE_ROUTING: u32 = 0;
const NF_INET_LOCAL_OUT: u32 = 3;
const NF_INET_POST_ROUTING: u32 = 4;
const NF_ACCEPT: u32 = 1;
/// The `nat` chains' source-NAT priority (`srcnat`).
const NF_IP_PRI_NAT_SRC: i32 = 100;
/// The `mangle` priority: before IPVS (`NF_IP_PRI_NAT_DST + 2` on output, on input after
/// routing) and before the `nat` chains.
const NF_IP_PRI_MANGLE: i32 = -150;
/// `NFT_SET_MAP`: a set whose elements carry data.
const NFT_SET_MAP: u32 = 0x8;
// nft's data types (`TYPE_IPADDR` 7, `TYPE_INET_PROTOCOL` 12, `TYPE_INET_SERVICE` 13,
// `TYPE_MARK` 19), six bits each in a concatenation: the kernel only stores them, `nft list`
// shows the set with them.
const TYPE_MARK: u32 = 19;
/// `ipv4_addr . inet_proto . inet_service`.
const SERVICE_KEY_TYPE: u32 = (7 << 12) | (12 << 6) | 13;
/// `ipv4_addr . inet_proto . mark`.
const MARKED_KEY_TYPE: u32 = (7 << 12) | (12 << 6) | TYPE_MARK;
/// `ipv4_addr . inet_proto`.
const ANY_PORT_KEY_TYPE: u32 = (7 << 6) | 12;
/// `NF_DROP` as a verdict code.
const NF_DROP_VERDICT: i32 = 0;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;
/// `NFTNL_UDATA_SET_DATABYTEORDER` and `BYTEORDER_HOST_ENDIAN`: nft's hint (in a set's user
/// data) that a map's values are in host order, without which `nft list` prints a mark swapped.
const UDATA_SET_DATABYTEORDER: u8 = 1;
const BYTEORDER_HOST_ENDIAN: u32 = 1;
/// `NFTNL_UDATA_RULE_COMMENT`: the type of a rule comment in the rule's user data (how `nft`
/// stores and shows `comment "…"`).
const UDATA_RULE_COMMENT: u8 = 0;

/// Elements per set-element message: keeps each message's element list (a netlink attribute,
/// at most 64 KiB) well under its limit.
const ELEMENTS_PER_MESSAGE: usize = 500;

/// The map from (address, protocol, port) to the service's chain.
pub(crate) const SERVICES_MAP: &str = "services";
/// The map from (address, protocol) to an any-port service's chain, looked up when
/// [`SERVICES_MAP`] has no element for the packet's port.
pub(crate) const ANY_PORT_SERVICES_MAP: &str = "any_port_services";
/// The prefix of the maps from (address, protocol, port, `numgen` slot) to a backend's address
/// and port: `backends_00` … `backends_63`.
pub(crate) const BACKENDS_MAP: &str = "backends";
/// The prefix of the maps from (address, protocol, `numgen` slot) to an any-port service's
/// backend address: `any_port_backends_00` … `any_port_backends_63`.
pub(crate) const ANY_PORT_BACKENDS_MAP: &str = "any_port_backends";
/// How many backend maps the services are spread over. When a rule that looks a slot up is
/// added, the kernel checks the rule against every element of its map (`nf_tables_bind_set`),
/// so one shared map would make every rule change cost the slots of all services.
pub(crate) const BACKEND_SHARDS: u32 = 64;

/// The backend map of a service: a hash (FNV-1a) of its verdict-map key. Stable: a table
/// written by one version is changed by the next.
pub(crate) fn backends_map(key: &ServiceKey) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in lookup_key_bytes(key) {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    let prefix = if key.is_any_port() { ANY_PORT_BACKENDS_MAP } else { BACKENDS_MAP };
    format!("{prefix}_{:02}", hash % BACKEND_SHARDS)
}

/// The verdict map that sends a service's packets to its chain.
pub(crate) fn services_map(key: &ServiceKey) -> &'static str {
    if key.is_any_port() { ANY_PORT_SERVICES_MAP } else { SERVICES_MAP }
}

/// One rule of a service's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rule {
    /// No statement, only the comment `drained ADDR:PORT`: a weight-0 backend, kept so that
    /// the listing returns it.
    Drained(SocketAddrV4),
    /// `ct mark set ct mark | MARK`: asks the postrouting chain to masquerade.
    Mark(u32),
    /// `dnat to ip daddr . meta l4proto . th dport . numgen inc mod MODULUS map @backends_NN`.
    Dnat {
        /// The sum of the backends' weights: one slot per unit of weight.
        modulus: u32,
    },
    /// `dnat to ip daddr . meta l4proto . numgen inc mod MODULUS map @any_port_backends_NN`:
    /// an any-port service's, to the backend's address only (the destination port is kept).
    DnatKeepPort {
        /// The sum of the backends' weights: one slot per unit of weight.
        modulus: u32,
    },
    /// `drop`: no backend takes new connections.
    Drop,
}

/// One change of a batch, for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Creates the service's chain.
    NewChain { service: ServiceKey, chain: String },
    /// Deletes all rules of the service's chain.
    FlushChain { service: ServiceKey, chain: String },
    /// Deletes the service's (empty, unreferenced) chain.
    DelChain { service: ServiceKey, chain: String },
    /// Appends a rule to the service's chain.
    NewRule { service: ServiceKey, chain: String, rule: Rule },
    /// Adds the verdict-map element (`services`, or `any_port_services` for an any-port
    /// service) that sends the service's packets to its chain.
    NewService { service: ServiceKey, chain: String },
    /// Deletes the service's verdict-map element.
    DelService { service: ServiceKey },
    /// Adds backends-map elements: slot → backend.
    NewSlots { service: ServiceKey, slots: Vec<(u32, SocketAddrV4)> },
    /// Deletes backends-map elements by slot.
    DelSlots { service: ServiceKey, slots: Vec<u32> },
    /// Creates the table; an existing one is kept.
    NewTable,
    /// Creates a set or map; an existing one is kept.
    NewSet { set: String, kind: SetKind },
    /// Creates a base chain; an existing one is kept.
    NewBaseChain { chain: String, hook: BaseHook },
    /// Deletes all rules of a chain that belongs to no service.
    FlushBaseChain { chain: String },
    /// Appends a rule to a base chain.
    NewBaseRule { chain: String, rule: BaseRule },
    /// Adds elements to a set or map.
    NewElements { set: String, elements: Vec<Element> },
    /// Deletes elements (by key) from a set or map.
    DelElements { set: String, elements: Vec<Element> },
}

/// What a set of the IPVS backend's table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetKind {
    /// `type ipv4_addr . inet_proto . inet_service`: services of a specific port.
    ServiceKeys,
    /// `type ipv4_addr . inet_proto . mark`: any-port services and their packet mark.
    MarkedServices,
    /// A map `type ipv4_addr . inet_proto : mark`: the packet mark of each any-port service.
    Marks,
}

/// Where a base chain hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BaseHook {
    /// `type nat hook postrouting priority srcnat`.
    SourceNat,
    /// `type filter hook prerouting priority mangle`: before routing, so before IPVS.
    ManglePrerouting,
    /// `type route hook output priority mangle`: locally made packets, before IPVS.
    MangleOutput,
}

/// A rule of a base chain of the IPVS backend's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BaseRule {
    /// `ct original ip daddr . meta l4proto . ct original proto-dst @SET masquerade`:
    /// masquerades the connections whose first packet was addressed to a service in the set,
    /// whatever rewrote their destination since (IPVS, a `dnat`).
    MasqueradeServices { set: String },
    /// `ct original ip daddr . meta l4proto . meta mark @SET masquerade`: masquerades the
    /// connections of an any-port service in the set whose packets carry its mark (so not those
    /// a specific-port service beside it took).
    MasqueradeMarked { set: String },
    /// `ip daddr . meta l4proto . th dport @SET return`: leaves the packets of these services
    /// unmarked.
    ReturnServices { set: String },
    /// `meta mark set ip daddr . meta l4proto map @MAP`: marks an any-port service's packets.
    SetMark { map: String },
}

/// One element of a set or map of the IPVS backend's table, and the service it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Element {
    /// The service the element is for (named in errors).
    pub(crate) service: ServiceKey,
    pub(crate) key: Vec<u8>,
    /// The value of a map's element.
    pub(crate) data: Option<Vec<u8>>,
}

impl Element {
    /// A specific-port service in a [`SetKind::ServiceKeys`] set.
    pub(crate) fn service(key: &ServiceKey) -> Self {
        Self { service: *key, key: service_key_bytes(key), data: None }
    }

    /// An any-port service and its mark in a [`SetKind::MarkedServices`] set.
    pub(crate) fn marked(key: &ServiceKey, mark: u32) -> Self {
        let mut bytes = any_port_key_bytes(key);
        bytes.extend_from_slice(&mark.to_ne_bytes());
        Self { service: *key, key: bytes, data: None }
    }

    /// An any-port service's mark in a [`SetKind::Marks`] map.
    pub(crate) fn mark_of(key: &ServiceKey, mark: u32) -> Self {
        Self { service: *key, key: any_port_key_bytes(key), data: Some(mark.to_ne_bytes().to_vec()) }
    }
}

/// The services of a set-element message, for its description: the first few and a count.
fn keys_text<'a>(keys: impl ExactSizeIterator<Item = &'a ServiceKey>) -> String {
    const SHOWN: usize = 4;
    let count = keys.len();
    let mut text = keys.take(SHOWN).map(ToString::to_string).collect::<Vec<_>>().join(", ");
    if count > SHOWN {
        text.push_str(&format!(" and {} more", count - SHOWN));
    }
    let noun = if count == 1 { "service" } else { "services" };
    format!("{noun} {text}")
}

impl Op {
    /// What the operation does, for an error message that names the service.
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::NewChain { service, chain } => format!("add chain {chain} of service {service}"),
            Self::FlushChain { service, chain } => format!("flush chain {chain} of service {service}"),
            Self::DelChain { service, chain } => format!("delete chain {chain} of service {service}"),
            Self::NewRule { service, chain, rule } => {
                format!("add rule {rule:?} to chain {chain} of service {service}")
            }
            Self::NewService { service, .. } => format!("add {} element of service {service}", services_map(service)),
            Self::DelService { service } => format!("delete {} element of service {service}", services_map(service)),
            Self::NewSlots { service, .. } => format!("add {} elements of service {service}", backends_map(service)),
            Self::DelSlots { service, .. } => format!("delete {} elements of service {service}", backends_map(service)),
            Self::NewTable => "add the table".to_owned(),
            Self::NewSet { set, .. } => format!("add set {set}"),
            Self::NewBaseChain { chain, .. } => format!("add chain {chain}"),
            Self::FlushBaseChain { chain } => format!("flush chain {chain}"),
            Self::NewBaseRule { chain, rule } => format!("add rule {rule:?} to chain {chain}"),
            Self::NewElements { set, elements } => {
                format!("add {set} elements of {}", keys_text(elements.iter().map(|e| &e.service)))
            }
            Self::DelElements { set, elements } => {
                format!("delete {set} elements of {}", keys_text(elements.iter().map(|e| &e.service)))
            }
        }
    }
}

/// The services-map key: `ip daddr . meta l4proto . th dport`, each field in a 32-bit register
/// (address and port in network order, zero-padded).
pub(crate) fn service_key_bytes(key: &ServiceKey) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&key.addr.octets());
    bytes.extend_from_slice(&[key.protocol.number(), 0, 0, 0]);
    bytes.extend_from_slice(&key.port.to_be_bytes());
    bytes.extend_from_slice(&[0, 0]);
    bytes
}

/// The service key a set element's key holds ([`service_key_bytes`] read back); `None` when the
/// bytes are not one (port 0 included: an any-port service has its own form).
pub(crate) fn service_key_from_bytes(bytes: &[u8]) -> Option<ServiceKey> {
    let [a, b, c, d, protocol, 0, 0, 0, p, q, 0, 0] = *bytes else { return None };
    let protocol = crate::model::Protocol::from_number(protocol)?;
    let port = u16::from_be_bytes([p, q]);
    (port != 0).then(|| ServiceKey { addr: std::net::Ipv4Addr::new(a, b, c, d), port, protocol })
}

/// An any-port service's key: `ip daddr . meta l4proto`, each in a 32-bit register.
pub(crate) fn any_port_key_bytes(key: &ServiceKey) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8);
    bytes.extend_from_slice(&key.addr.octets());
    bytes.extend_from_slice(&[key.protocol.number(), 0, 0, 0]);
    bytes
}

/// [`any_port_key_bytes`] read back; `None` when the bytes are not one.
pub(crate) fn any_port_key_from_bytes(bytes: &[u8]) -> Option<ServiceKey> {
    let [a, b, c, d, protocol, 0, 0, 0] = *bytes else { return None };
    let protocol = crate::model::Protocol::from_number(protocol)?;
    Some(ServiceKey::any_port(std::net::Ipv4Addr::new(a, b, c, d), protocol))
}

/// An [`Element::marked`] key read back: the any-port service and its mark.
pub(crate) fn marked_from_bytes(bytes: &[u8]) -> Option<(ServiceKey, u32)> {
    let (key, mark) = bytes.split_at_checked(8)?;
    Some((any_port_key_from_bytes(key)?, mark_from_bytes(mark)?))
}

/// A packet mark as a set holds it (host order, as `meta mark` loads it).
pub(crate) fn mark_from_bytes(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

/// A service's key in its verdict map: [`service_key_bytes`], or for an any-port service
/// [`any_port_key_bytes`].
pub(crate) fn lookup_key_bytes(key: &ServiceKey) -> Vec<u8> {
    if key.is_any_port() { any_port_key_bytes(key) } else { service_key_bytes(key) }
}

/// The backends-map key: the service's verdict-map key and the `numgen` slot (host order, as
/// `numgen` writes it).
pub(crate) fn slot_key_bytes(key: &ServiceKey, slot: u32) -> Vec<u8> {
    let mut bytes = lookup_key_bytes(key);
    bytes.extend_from_slice(&slot.to_ne_bytes());
    bytes
}

/// The backends-map value: `ip daddr . th dport` of the backend, or for an any-port service's
/// backend only `ip daddr`.
pub(crate) fn backend_bytes(key: &ServiceKey, backend: SocketAddrV4) -> Vec<u8> {
    let mut bytes = backend.ip().octets().to_vec();
    if !key.is_any_port() {
        bytes.extend_from_slice(&backend.port().to_be_bytes());
        bytes.extend_from_slice(&[0, 0]);
    }
    bytes
}

/// A batch being built: `BATCH_BEGIN`, messages, `BATCH_END`. Only the last message asks for
/// an acknowledgement; the kernel reports failures of any message regardless, before that
/// acknowledgement.
#[derive(Debug)]
pub(crate) struct Batch {
    buf: Vec<u8>,
    table: String,
    seq: u32,
    /// (sequence number, description) of each message, to name the one the kernel rejected.
    sent: Vec<(u32, String)>,
    last_start: Option<usize>,
    /// An attribute grew past 64 KiB (cannot happen with the sizes used here; checked anyway).
    too_long: bool,
    /// The `NFTA_SET_ID` of the next set created in the batch (unique within it).
    set_id: u32,
}

/// An encoded batch: the bytes, and what each sequence number was.
#[derive(Debug)]
pub(crate) struct Encoded {
    /// The bytes to send in one `sendmsg`.
    pub(crate) bytes: Vec<u8>,
    /// The sequence number of `BATCH_BEGIN` (the kernel's answer when the whole batch fails).
    pub(crate) begin_seq: u32,
    /// The sequence number of the last message, the only one acknowledged on success.
    pub(crate) last_seq: u32,
    /// (sequence number, description) of each message.
    pub(crate) sent: Vec<(u32, String)>,
}

impl Batch {
    /// Starts a batch for `table` (family `ip`) whose first message has sequence number `seq`.
    pub(crate) fn new(table: &str, seq: u32) -> Self {
        let mut batch = Self {
            buf: Vec::new(),
            table: table.to_owned(),
            seq,
            sent: Vec::new(),
            last_start: None,
            too_long: false,
            set_id: 1,
        };
        batch.header(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0);
        batch.finish_message(0);
        batch
    }

    /// Appends the messages of `op`.
    pub(crate) fn push(&mut self, op: &Op) {
        let what = op.describe();
        match op {
            Op::NewChain { chain, .. } => self.message(NFT_MSG_NEWCHAIN, NLM_F_CREATE, what, |b| {
                b.put_str(NFTA_CHAIN_TABLE, &b.table.clone());
                b.put_str(NFTA_CHAIN_NAME, chain);
            }),
            Op::DelChain { chain, .. } => self.message(NFT_MSG_DELCHAIN, 0, what, |b| {
                b.put_str(NFTA_CHAIN_TABLE, &b.table.clone());
                b.put_str(NFTA_CHAIN_NAME, chain);
            }),
            // A rule deletion naming only the chain deletes all its rules.
            Op::FlushChain { chain, .. } => self.message(NFT_MSG_DELRULE, 0, what, |b| {
                b.put_str(NFTA_RULE_TABLE, &b.table.clone());
                b.put_str(NFTA_RULE_CHAIN, chain);
            }),
            Op::NewRule { service, chain, rule } => {
                self.message(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, what, |b| {
                    b.put_str(NFTA_RULE_TABLE, &b.table.clone());
                    b.put_str(NFTA_RULE_CHAIN, chain);
                    b.rule(service, rule);
                })
            }
            Op::NewService { service, chain } => self.message(NFT_MSG_NEWSETELEM, NLM_F_CREATE, what, |b| {
                b.elements(services_map(service), |b| {
                    b.nest(NFTA_LIST_ELEM, |b| {
                        b.nest(NFTA_SET_ELEM_KEY, |b| b.put(NFTA_DATA_VALUE, &lookup_key_bytes(service)));
                        b.nest(NFTA_SET_ELEM_DATA, |b| {
                            b.nest(NFTA_DATA_VERDICT, |b| {
                                b.put(NFTA_VERDICT_CODE, &NFT_GOTO.to_be_bytes());
                                b.put_str(NFTA_VERDICT_CHAIN, chain);
                            });
                        });
                    });
                });
            }),
            Op::DelService { service } => self.message(NFT_MSG_DELSETELEM, 0, what, |b| {
                b.elements(services_map(service), |b| {
                    b.nest(NFTA_LIST_ELEM, |b| {
                        b.nest(NFTA_SET_ELEM_KEY, |b| b.put(NFTA_DATA_VALUE, &lookup_key_bytes(service)));
                    });
                });
            }),
            Op::NewSlots { service, slots } => {
                for chunk in slots.chunks(ELEMENTS_PER_MESSAGE) {
                    self.message(NFT_MSG_NEWSETELEM, NLM_F_CREATE, what.clone(), |b| {
                        b.elements(&backends_map(service), |b| {
                            for (slot, backend) in chunk {
                                b.nest(NFTA_LIST_ELEM, |b| {
                                    b.nest(NFTA_SET_ELEM_KEY, |b| {
                                        b.put(NFTA_DATA_VALUE, &slot_key_bytes(service, *slot));
                                    });
                                    b.nest(NFTA_SET_ELEM_DATA, |b| {
                                        b.put(NFTA_DATA_VALUE, &backend_bytes(service, *backend));
                                    });
                                });
                            }
                        });
                    });
                }
            }
            Op::DelSlots { service, slots } => {
                for chunk in slots.chunks(ELEMENTS_PER_MESSAGE) {
                    self.message(NFT_MSG_DELSETELEM, 0, what.clone(), |b| {
                        b.elements(&backends_map(service), |b| {
                            for slot in chunk {
                                b.nest(NFTA_LIST_ELEM, |b| {
                                    b.nest(NFTA_SET_ELEM_KEY, |b| {
                                        b.put(NFTA_DATA_VALUE, &slot_key_bytes(service, *slot));
                                    });
                                });
                            }
                        });
                    });
                }
            }
            Op::NewTable => self.message(NFT_MSG_NEWTABLE, NLM_F_CREATE, what, |b| {
                b.put_str(NFTA_TABLE_NAME, &b.table.clone());
            }),
            Op::NewSet { set, kind } => {
                let id = self.set_id;
                self.set_id = self.set_id.wrapping_add(1);
                self.message(NFT_MSG_NEWSET, NLM_F_CREATE, what, |b| {
                    b.put_str(NFTA_SET_TABLE, &b.table.clone());
                    b.put_str(NFTA_SET_NAME, set);
                    match kind {
                        SetKind::ServiceKeys => {
                            b.put_be32(NFTA_SET_KEY_TYPE, SERVICE_KEY_TYPE);
                            b.put_be32(NFTA_SET_KEY_LEN, 12);
                        }
                        SetKind::MarkedServices => {
                            b.put_be32(NFTA_SET_KEY_TYPE, MARKED_KEY_TYPE);
                            b.put_be32(NFTA_SET_KEY_LEN, 12);
                        }
                        SetKind::Marks => {
                            b.put_be32(NFTA_SET_FLAGS, NFT_SET_MAP);
                            b.put_be32(NFTA_SET_KEY_TYPE, ANY_PORT_KEY_TYPE);
                            b.put_be32(NFTA_SET_KEY_LEN, 8);
                            b.put_be32(NFTA_SET_DATA_TYPE, TYPE_MARK);
                            b.put_be32(NFTA_SET_DATA_LEN, 4);
                        }
                    }
                    // Required; names the set to later messages of the same batch.
                    b.put_be32(NFTA_SET_ID, id);
                    if *kind == SetKind::Marks {
                        let mut udata = vec![UDATA_SET_DATABYTEORDER, 4];
                        udata.extend_from_slice(&BYTEORDER_HOST_ENDIAN.to_ne_bytes());
                        b.put(NFTA_SET_USERDATA, &udata);
                    }
                });
            }
            Op::NewBaseChain { chain, hook } => self.message(NFT_MSG_NEWCHAIN, NLM_F_CREATE, what, |b| {
                let (hooknum, priority, kind) = match hook {
                    BaseHook::SourceNat => (NF_INET_POST_ROUTING, NF_IP_PRI_NAT_SRC, "nat"),
                    BaseHook::ManglePrerouting => (NF_INET_PRE_ROUTING, NF_IP_PRI_MANGLE, "filter"),
                    BaseHook::MangleOutput => (NF_INET_LOCAL_OUT, NF_IP_PRI_MANGLE, "route"),
                };
                b.put_str(NFTA_CHAIN_TABLE, &b.table.clone());
                b.put_str(NFTA_CHAIN_NAME, chain);
                b.nest(NFTA_CHAIN_HOOK, |b| {
                    b.put_be32(NFTA_HOOK_HOOKNUM, hooknum);
                    b.put(NFTA_HOOK_PRIORITY, &priority.to_be_bytes());
                });
                b.put_be32(NFTA_CHAIN_POLICY, NF_ACCEPT);
                b.put_str(NFTA_CHAIN_TYPE, kind);
            }),
            Op::FlushBaseChain { chain } => self.message(NFT_MSG_DELRULE, 0, what, |b| {
                b.put_str(NFTA_RULE_TABLE, &b.table.clone());
                b.put_str(NFTA_RULE_CHAIN, chain);
            }),
            Op::NewBaseRule { chain, rule } => self.message(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, what, |b| {
                b.put_str(NFTA_RULE_TABLE, &b.table.clone());
                b.put_str(NFTA_RULE_CHAIN, chain);
                b.nest(NFTA_RULE_EXPRESSIONS, |b| b.base_rule(rule));
            }),
            Op::NewElements { set, elements } => self.set_elements(NFT_MSG_NEWSETELEM, set, elements),
            Op::DelElements { set, elements } => self.set_elements(NFT_MSG_DELSETELEM, set, elements),
        }
    }

    /// The expressions of a base-chain rule of the IPVS backend's table.
    fn base_rule(&mut self, rule: &BaseRule) {
        match rule {
            BaseRule::MasqueradeServices { set } => {
                // The service key as the client addressed it: the original direction's tuple,
                // which neither IPVS nor NAT rewrites.
                self.ct_original(NFT_REG_1, NFT_CT_DST_IP);
                self.meta_load(NFT_REG32_01, NFT_META_L4PROTO);
                self.ct_original(NFT_REG32_02, NFT_CT_PROTO_DST);
                self.lookup(set, None);
                self.expr("masq", |_| {});
            }
            BaseRule::MasqueradeMarked { set } => {
                self.ct_original(NFT_REG_1, NFT_CT_DST_IP);
                self.meta_load(NFT_REG32_01, NFT_META_L4PROTO);
                self.meta_load(NFT_REG32_02, NFT_META_MARK);
                self.lookup(set, None);
                self.expr("masq", |_| {});
            }
            BaseRule::ReturnServices { set } => {
                self.service_key_load(true);
                self.lookup(set, None);
                self.verdict(NFT_RETURN);
            }
            BaseRule::SetMark { map } => {
                self.service_key_load(false);
                self.lookup(map, Some(NFT_REG_1));
                self.expr("meta", |b| {
                    b.put_be32(NFTA_META_KEY, NFT_META_MARK);
                    b.put_be32(NFTA_META_SREG, NFT_REG_1);
                });
            }
        }
    }

    /// `ip daddr . meta l4proto [. th dport]` into registers 1, 9 (and 10).
    fn service_key_load(&mut self, with_port: bool) {
        self.expr("payload", |b| {
            b.put_be32(NFTA_PAYLOAD_DREG, NFT_REG_1);
            b.put_be32(NFTA_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
            b.put_be32(NFTA_PAYLOAD_OFFSET, 16);
            b.put_be32(NFTA_PAYLOAD_LEN, 4);
        });
        self.meta_load(NFT_REG32_01, NFT_META_L4PROTO);
        if with_port {
            self.expr("payload", |b| {
                b.put_be32(NFTA_PAYLOAD_DREG, NFT_REG32_02);
                b.put_be32(NFTA_PAYLOAD_BASE, NFT_PAYLOAD_TRANSPORT_HEADER);
                b.put_be32(NFTA_PAYLOAD_OFFSET, 2);
                b.put_be32(NFTA_PAYLOAD_LEN, 2);
            });
        }
    }

    fn meta_load(&mut self, dreg: u32, key: u32) {
        self.expr("meta", |b| {
            b.put_be32(NFTA_META_DREG, dreg);
            b.put_be32(NFTA_META_KEY, key);
        });
    }

    fn ct_original(&mut self, dreg: u32, key: u32) {
        self.expr("ct", |b| {
            b.put_be32(NFTA_CT_DREG, dreg);
            b.put_be32(NFTA_CT_KEY, key);
            b.put(NFTA_CT_DIRECTION, &[IP_CT_DIR_ORIGINAL]);
        });
    }

    /// A lookup of register 1 in `set`; with `dreg`, a map's value into that register.
    fn lookup(&mut self, set: &str, dreg: Option<u32>) {
        self.expr("lookup", |b| {
            b.put_str(NFTA_LOOKUP_SET, set);
            b.put_be32(NFTA_LOOKUP_SREG, NFT_REG_1);
            if let Some(dreg) = dreg {
                b.put_be32(NFTA_LOOKUP_DREG, dreg);
            }
        });
    }

    fn verdict(&mut self, code: i32) {
        self.expr("immediate", |b| {
            b.put_be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
            b.nest(NFTA_IMMEDIATE_DATA, |b| {
                b.nest(NFTA_DATA_VERDICT, |b| b.put(NFTA_VERDICT_CODE, &code.to_be_bytes()));
            });
        });
    }

    /// Appends the messages of a set-element change, `ELEMENTS_PER_MESSAGE` elements per
    /// message, each described by the services it carries. Deletions name keys only.
    fn set_elements(&mut self, kind: u16, set: &str, elements: &[Element]) {
        for chunk in elements.chunks(ELEMENTS_PER_MESSAGE) {
            let verb = if kind == NFT_MSG_NEWSETELEM { "add" } else { "delete" };
            let what = format!("{verb} {set} elements of {}", keys_text(chunk.iter().map(|e| &e.service)));
            let flags = if kind == NFT_MSG_NEWSETELEM { NLM_F_CREATE } else { 0 };
            self.message(kind, flags, what, |b| {
                b.elements(set, |b| {
                    for element in chunk {
                        b.nest(NFTA_LIST_ELEM, |b| {
                            b.nest(NFTA_SET_ELEM_KEY, |b| b.put(NFTA_DATA_VALUE, &element.key));
                            if kind == NFT_MSG_NEWSETELEM
                                && let Some(data) = &element.data
                            {
                                b.nest(NFTA_SET_ELEM_DATA, |b| b.put(NFTA_DATA_VALUE, data));
                            }
                        });
                    }
                });
            });
        }
    }

    /// Ends the batch. `None` when it holds no message.
    pub(crate) fn finish(mut self) -> Result<Option<Encoded>, String> {
        if self.too_long {
            return Err("a netlink attribute would exceed 64 KiB".to_owned());
        }
        let Some(last_start) = self.last_start else { return Ok(None) };
        // Ask for an acknowledgement of the last message only: it arrives after every error.
        let flags_at = last_start + 6;
        let flags = u16::from_ne_bytes([self.buf[flags_at], self.buf[flags_at + 1]]) | NLM_F_ACK;
        self.buf[flags_at..flags_at + 2].copy_from_slice(&flags.to_ne_bytes());
        let last_seq = self.seq.wrapping_sub(1);
        let end = self.buf.len();
        self.header(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0);
        self.finish_message(end);
        let begin_seq = self.sent.first().map_or(last_seq, |(seq, _)| seq.wrapping_sub(1));
        Ok(Some(Encoded { bytes: self.buf, begin_seq, last_seq, sent: self.sent }))
    }

    fn message(&mut self, kind: u16, flags: u16, what: String, body: impl FnOnce(&mut Self)) {
        let start = self.buf.len();
        self.header((NFNL_SUBSYS_NFTABLES << 8) | kind, NLM_F_REQUEST | flags, NFPROTO_IPV4);
        body(self);
        self.sent.push((self.seq, what));
        self.last_start = Some(start);
        self.finish_message(start);
    }

    /// `nlmsghdr` (length patched by `finish_message`) and `nfgenmsg`.
    fn header(&mut self, kind: u16, flags: u16, family: u8) {
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&NFNL_SUBSYS_NFTABLES.to_be_bytes());
    }

    fn finish_message(&mut self, start: usize) {
        let len = u32::try_from(self.buf.len() - start).unwrap_or(u32::MAX);
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        self.seq = self.seq.wrapping_add(1);
    }

    fn elements(&mut self, set: &str, list: impl FnOnce(&mut Self)) {
        self.put_str(NFTA_SET_ELEM_LIST_TABLE, &self.table.clone());
        self.put_str(NFTA_SET_ELEM_LIST_SET, set);
        self.nest(NFTA_SET_ELEM_LIST_ELEMENTS, list);
    }

    fn rule(&mut self, service: &ServiceKey, rule: &Rule) {
        match rule {
            Rule::Drained(backend) => {
                let comment = format!("drained {backend}");
                let mut udata = vec![UDATA_RULE_COMMENT, u8::try_from(comment.len() + 1).unwrap_or(u8::MAX)];
                udata.extend_from_slice(comment.as_bytes());
                udata.push(0);
                self.put(NFTA_RULE_USERDATA, &udata);
            }
            Rule::Mark(mark) => self.nest(NFTA_RULE_EXPRESSIONS, |b| {
                b.expr("ct", |b| {
                    b.put_be32(NFTA_CT_DREG, NFT_REG_1);
                    b.put_be32(NFTA_CT_KEY, NFT_CT_MARK);
                });
                b.expr("bitwise", |b| {
                    b.put_be32(NFTA_BITWISE_SREG, NFT_REG_1);
                    b.put_be32(NFTA_BITWISE_DREG, NFT_REG_1);
                    b.put_be32(NFTA_BITWISE_LEN, 4);
                    b.nest(NFTA_BITWISE_MASK, |b| b.put(NFTA_DATA_VALUE, &(!mark).to_ne_bytes()));
                    b.nest(NFTA_BITWISE_XOR, |b| b.put(NFTA_DATA_VALUE, &mark.to_ne_bytes()));
                });
                b.expr("ct", |b| {
                    b.put_be32(NFTA_CT_KEY, NFT_CT_MARK);
                    b.put_be32(NFTA_CT_SREG, NFT_REG_1);
                });
            }),
            Rule::Dnat { modulus } => self.nest(NFTA_RULE_EXPRESSIONS, |b| {
                b.service_key_load(true);
                b.numgen(NFT_REG32_03, *modulus);
                b.lookup(&backends_map(service), Some(NFT_REG_1));
                b.expr("nat", |b| {
                    b.put_be32(NFTA_NAT_TYPE, NFT_NAT_DNAT);
                    b.put_be32(NFTA_NAT_FAMILY, u32::from(NFPROTO_IPV4));
                    b.put_be32(NFTA_NAT_REG_ADDR_MIN, NFT_REG_1);
                    b.put_be32(NFTA_NAT_REG_ADDR_MAX, NFT_REG_1);
                    b.put_be32(NFTA_NAT_REG_PROTO_MIN, NFT_REG32_01);
                    b.put_be32(NFTA_NAT_REG_PROTO_MAX, NFT_REG32_01);
                    b.put_be32(NFTA_NAT_FLAGS, NF_NAT_RANGE_MAP_IPS_AND_PROTO);
                });
            }),
            // As nft sends it: an address register only (the kernel then maps the address and
            // leaves the port alone).
            Rule::DnatKeepPort { modulus } => self.nest(NFTA_RULE_EXPRESSIONS, |b| {
                b.service_key_load(false);
                b.numgen(NFT_REG32_02, *modulus);
                b.lookup(&backends_map(service), Some(NFT_REG_1));
                b.expr("nat", |b| {
                    b.put_be32(NFTA_NAT_TYPE, NFT_NAT_DNAT);
                    b.put_be32(NFTA_NAT_FAMILY, u32::from(NFPROTO_IPV4));
                    b.put_be32(NFTA_NAT_REG_ADDR_MIN, NFT_REG_1);
                });
            }),
            Rule::Drop => self.nest(NFTA_RULE_EXPRESSIONS, |b| b.verdict(NF_DROP_VERDICT)),
        }
    }

    /// `numgen inc mod MODULUS` into `dreg`.
    fn numgen(&mut self, dreg: u32, modulus: u32) {
        self.expr("numgen", |b| {
            b.put_be32(NFTA_NG_DREG, dreg);
            b.put_be32(NFTA_NG_MODULUS, modulus);
            b.put_be32(NFTA_NG_TYPE, NFT_NG_INCREMENTAL);
            b.put_be32(NFTA_NG_OFFSET, 0);
        });
    }

    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Self)) {
        self.nest(NFTA_LIST_ELEM, |b| {
            b.put_str(NFTA_EXPR_NAME, name);
            b.nest(NFTA_EXPR_DATA, data);
        });
    }

    fn put(&mut self, kind: u16, payload: &[u8]) {
        self.attr_header(kind, 4 + payload.len());
        self.buf.extend_from_slice(payload);
        self.pad();
    }

    fn put_str(&mut self, kind: u16, value: &str) {
        self.attr_header(kind, 4 + value.len() + 1);
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    fn put_be32(&mut self, kind: u16, value: u32) {
        self.put(kind, &value.to_be_bytes());
    }

    fn nest(&mut self, kind: u16, body: impl FnOnce(&mut Self)) {
        let start = self.buf.len();
        self.attr_header(kind | NLA_F_NESTED, 4);
        body(self);
        let len = self.buf.len() - start;
        let Ok(len) = u16::try_from(len) else {
            self.too_long = true;
            return;
        };
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn attr_header(&mut self, kind: u16, len: usize) {
        let len = u16::try_from(len).unwrap_or_else(|_| {
            self.too_long = true;
            u16::MAX
        });
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }
}

/// A dump request for the elements of set `set` of table `table` (family `ip`), sequence `seq`.
pub(crate) fn set_elements_request(table: &str, set: &str, seq: u32) -> Vec<u8> {
    let mut request = Batch {
        buf: Vec::new(),
        table: table.to_owned(),
        seq,
        sent: Vec::new(),
        last_start: None,
        too_long: false,
        set_id: 1,
    };
    request.message(NFT_MSG_GETSETELEM, NLM_F_DUMP, String::new(), |b| {
        b.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
        b.put_str(NFTA_SET_ELEM_LIST_SET, set);
    });
    request.buf
}

/// One element of a set-element dump: its key and, for a map, its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dumped {
    pub(crate) key: Vec<u8>,
    pub(crate) data: Option<Vec<u8>>,
}

/// Reads one datagram of the answer to [`set_elements_request`] number `seq`: appends the
/// elements to `elements`, and returns `Some(0)` at the end of the dump, `Some(errno)` when the
/// kernel refused it, `None` when more is to come. Messages of other requests are skipped.
pub(crate) fn parse_set_elements(datagram: &[u8], seq: u32, elements: &mut Vec<Dumped>) -> Result<Option<i32>, String> {
    let mut rest = datagram;
    while rest.len() >= 16 {
        let word = |at: usize| u32::from_ne_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
        let len = usize::try_from(word(0)).map_err(|_| "netlink message length overflows".to_owned())?;
        if len < 16 || len > rest.len() {
            return Err(format!("netlink message of length {len} in a datagram of {} bytes", rest.len()));
        }
        let (message, kind) = (&rest[..len], u16::from_ne_bytes([rest[4], rest[5]]));
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        if word(8) != seq {
            continue;
        }
        match kind {
            NLMSG_DONE => return Ok(Some(0)),
            NLMSG_ERROR => {
                let errno = message.get(16..20).ok_or("netlink error message is truncated")?;
                let errno = i32::from_ne_bytes([errno[0], errno[1], errno[2], errno[3]]);
                return Ok(Some(errno.saturating_neg()));
            }
            _ if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM => {
                let body = message.get(20..).ok_or("set-element message is truncated")?;
                for (kind, list) in attributes(body)? {
                    if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
                        continue;
                    }
                    for (_, element) in attributes(list)? {
                        let (mut key, mut data) = (None, None);
                        for (kind, value) in attributes(element)? {
                            let slot = match kind {
                                NFTA_SET_ELEM_KEY => &mut key,
                                NFTA_SET_ELEM_DATA => &mut data,
                                _ => continue,
                            };
                            *slot = attributes(value)?
                                .into_iter()
                                .find(|(k, _)| *k == NFTA_DATA_VALUE)
                                .map(|(_, v)| v.to_vec());
                        }
                        if let Some(key) = key {
                            elements.push(Dumped { key, data });
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

/// The attributes of a netlink message body or nested attribute: (type, payload).
fn attributes(mut bytes: &[u8]) -> Result<Vec<(u16, &[u8])>, String> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([bytes[0], bytes[1]]));
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > bytes.len() {
            return Err(format!("netlink attribute of length {len} in {} bytes", bytes.len()));
        }
        out.push((kind, &bytes[4..len]));
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
    }
    Ok(out)
}

/// One `NLMSG_ERROR` answer: the sequence number it answers and the errno (0: acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) seq: u32,
    pub(crate) errno: i32,
}

/// The `NLMSG_ERROR` answers in one datagram from the kernel; other message types are skipped.
pub(crate) fn parse_answers(datagram: &[u8]) -> Result<Vec<Answer>, String> {
    let mut answers = Vec::new();
    let mut rest = datagram;
    while rest.len() >= 16 {
        let word = |at: usize| u32::from_ne_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
        let len = usize::try_from(word(0)).map_err(|_| "netlink message length overflows".to_owned())?;
        if len < 16 || len > rest.len() {
            return Err(format!("netlink message of length {len} in a datagram of {} bytes", rest.len()));
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if kind == NLMSG_ERROR {
            // struct nlmsgerr: int error; struct nlmsghdr msg (the request's header, at least).
            if len < 16 + 4 + 16 {
                return Err(format!("netlink error message of length {len} is truncated"));
            }
            let errno = i32::from_ne_bytes([rest[16], rest[17], rest[18], rest[19]]);
            answers.push(Answer { seq: word(20 + 8), errno: errno.saturating_neg() });
        }
        let advance = len.next_multiple_of(4).min(rest.len());
        rest = &rest[advance..];
    }
    Ok(answers)
}

#[cfg(test)]
mod tests;

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
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ID: u16 = 10;
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
const NFT_META_L4PROTO: u32 = 16;
const NFT_NG_INCREMENTAL: u32 = 0;
const NFT_NAT_DNAT: u32 = 1;
const NF_NAT_RANGE_MAP_IPS_AND_PROTO: u32 = 0x3;
const NFT_CT_MARK: u32 = 3;
const NFT_CT_PROTO_DST: u32 = 12;
const NFT_CT_DST_IP: u32 = 20;
/// `IP_CT_DIR_ORIGINAL`: the tuple of the connection's first packet, before any NAT.
const IP_CT_DIR_ORIGINAL: u8 = 0;
const NF_INET_POST_ROUTING: u32 = 4;
const NF_ACCEPT: u32 = 1;
/// The `nat` chains' source-NAT priority (`srcnat`).
const NF_IP_PRI_NAT_SRC: i32 = 100;
/// nft's type of a service key, `ipv4_addr . inet_proto . inet_service` (`TYPE_IPADDR` 7,
/// `TYPE_INET_PROTOCOL` 12, `TYPE_INET_SERVICE` 13, six bits each): the kernel only stores it,
/// `nft list` shows the set with it.
const SERVICE_KEY_TYPE: u32 = (7 << 12) | (12 << 6) | 13;
const NF_DROP: u32 = 0;
const NFT_GOTO: i32 = -4;
/// `NFTNL_UDATA_RULE_COMMENT`: the type of a rule comment in the rule's user data (how `nft`
/// stores and shows `comment "…"`).
const UDATA_RULE_COMMENT: u8 = 0;

/// Elements per set-element message: keeps each message's element list (a netlink attribute,
/// at most 64 KiB) well under its limit.
const ELEMENTS_PER_MESSAGE: usize = 500;

/// The map from (address, protocol, port) to the service's chain.
pub(crate) const SERVICES_MAP: &str = "services";
/// The prefix of the maps from (address, protocol, port, `numgen` slot) to a backend's address
/// and port: `backends_00` … `backends_63`.
pub(crate) const BACKENDS_MAP: &str = "backends";
/// How many backend maps the services are spread over. When a rule that looks a slot up is
/// added, the kernel checks the rule against every element of its map (`nf_tables_bind_set`),
/// so one shared map would make every rule change cost the slots of all services.
pub(crate) const BACKEND_SHARDS: u32 = 64;

/// The backend map of a service: a hash (FNV-1a) of its key. Stable: a table written by one
/// version is changed by the next.
pub(crate) fn backends_map(key: &ServiceKey) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in service_key_bytes(key) {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    format!("{BACKENDS_MAP}_{:02}", hash % BACKEND_SHARDS)
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
    /// Adds the services-map element that sends the service's packets to its chain.
    NewService { service: ServiceKey, chain: String },
    /// Deletes the service's services-map element.
    DelService { service: ServiceKey },
    /// Adds backends-map elements: slot → backend.
    NewSlots { service: ServiceKey, slots: Vec<(u32, SocketAddrV4)> },
    /// Deletes backends-map elements by slot.
    DelSlots { service: ServiceKey, slots: Vec<u32> },
    /// Creates the table; an existing one is kept.
    NewTable,
    /// Creates a set of service keys (`ipv4_addr . inet_proto . inet_service`); an existing one
    /// is kept.
    NewKeySet { set: String },
    /// Creates a base chain `type nat hook postrouting priority srcnat; policy accept`; an
    /// existing one is kept.
    NewPostroutingChain { chain: String },
    /// Deletes all rules of a chain that belongs to no service.
    FlushBaseChain { chain: String },
    /// Appends `ct original ip daddr . meta l4proto . ct original proto-dst @SET masquerade`:
    /// masquerades the connections whose first packet was addressed to a service in the set,
    /// whatever rewrote their destination since (IPVS, a `dnat`).
    NewMasqueradeRule { chain: String, set: String },
    /// Adds service keys to a set.
    NewKeys { set: String, keys: Vec<ServiceKey> },
    /// Deletes service keys from a set.
    DelKeys { set: String, keys: Vec<ServiceKey> },
}

/// The services of a set-element message, for its description: the first few and a count.
fn keys_text(keys: &[ServiceKey]) -> String {
    const SHOWN: usize = 4;
    let mut text = keys.iter().take(SHOWN).map(ToString::to_string).collect::<Vec<_>>().join(", ");
    if keys.len() > SHOWN {
        text.push_str(&format!(" and {} more", keys.len() - SHOWN));
    }
    let noun = if keys.len() == 1 { "service" } else { "services" };
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
            Self::NewService { service, .. } => format!("add {SERVICES_MAP} element of service {service}"),
            Self::DelService { service } => format!("delete {SERVICES_MAP} element of service {service}"),
            Self::NewSlots { service, .. } => format!("add {} elements of service {service}", backends_map(service)),
            Self::DelSlots { service, .. } => format!("delete {} elements of service {service}", backends_map(service)),
            Self::NewTable => "add the table".to_owned(),
            Self::NewKeySet { set } => format!("add set {set}"),
            Self::NewPostroutingChain { chain } => format!("add chain {chain}"),
            Self::FlushBaseChain { chain } => format!("flush chain {chain}"),
            Self::NewMasqueradeRule { chain, set } => format!("add the masquerade rule for set {set} to chain {chain}"),
            Self::NewKeys { set, keys } => format!("add {set} elements of {}", keys_text(keys)),
            Self::DelKeys { set, keys } => format!("delete {set} elements of {}", keys_text(keys)),
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
/// bytes are not one.
pub(crate) fn service_key_from_bytes(bytes: &[u8]) -> Option<ServiceKey> {
    let [a, b, c, d, protocol, 0, 0, 0, p, q, 0, 0] = *bytes else { return None };
    let protocol = crate::model::Protocol::from_number(protocol)?;
    Some(ServiceKey { addr: std::net::Ipv4Addr::new(a, b, c, d), port: u16::from_be_bytes([p, q]), protocol })
}

/// The backends-map key: the service key and the `numgen` slot (host order, as `numgen` writes
/// it).
pub(crate) fn slot_key_bytes(key: &ServiceKey, slot: u32) -> Vec<u8> {
    let mut bytes = service_key_bytes(key);
    bytes.extend_from_slice(&slot.to_ne_bytes());
    bytes
}

/// The backends-map value: `ip daddr . th dport` of the backend.
pub(crate) fn backend_bytes(backend: SocketAddrV4) -> [u8; 8] {
    let [a, b, c, d] = backend.ip().octets();
    let [p, q] = backend.port().to_be_bytes();
    [a, b, c, d, p, q, 0, 0]
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
        let mut batch =
            Self { buf: Vec::new(), table: table.to_owned(), seq, sent: Vec::new(), last_start: None, too_long: false };
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
                b.elements(SERVICES_MAP, |b| {
                    b.nest(NFTA_LIST_ELEM, |b| {
                        b.nest(NFTA_SET_ELEM_KEY, |b| b.put(NFTA_DATA_VALUE, &service_key_bytes(service)));
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
                b.elements(SERVICES_MAP, |b| {
                    b.nest(NFTA_LIST_ELEM, |b| {
                        b.nest(NFTA_SET_ELEM_KEY, |b| b.put(NFTA_DATA_VALUE, &service_key_bytes(service)));
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
                                    b.nest(NFTA_SET_ELEM_DATA, |b| b.put(NFTA_DATA_VALUE, &backend_bytes(*backend)));
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
            Op::NewKeySet { set } => self.message(NFT_MSG_NEWSET, NLM_F_CREATE, what, |b| {
                b.put_str(NFTA_SET_TABLE, &b.table.clone());
                b.put_str(NFTA_SET_NAME, set);
                b.put_be32(NFTA_SET_KEY_TYPE, SERVICE_KEY_TYPE);
                b.put_be32(NFTA_SET_KEY_LEN, 12);
                // Required; names the set to later messages of the same batch.
                b.put_be32(NFTA_SET_ID, 1);
            }),
            Op::NewPostroutingChain { chain } => self.message(NFT_MSG_NEWCHAIN, NLM_F_CREATE, what, |b| {
                b.put_str(NFTA_CHAIN_TABLE, &b.table.clone());
                b.put_str(NFTA_CHAIN_NAME, chain);
                b.nest(NFTA_CHAIN_HOOK, |b| {
                    b.put_be32(NFTA_HOOK_HOOKNUM, NF_INET_POST_ROUTING);
                    b.put(NFTA_HOOK_PRIORITY, &NF_IP_PRI_NAT_SRC.to_be_bytes());
                });
                b.put_be32(NFTA_CHAIN_POLICY, NF_ACCEPT);
                b.put_str(NFTA_CHAIN_TYPE, "nat");
            }),
            Op::FlushBaseChain { chain } => self.message(NFT_MSG_DELRULE, 0, what, |b| {
                b.put_str(NFTA_RULE_TABLE, &b.table.clone());
                b.put_str(NFTA_RULE_CHAIN, chain);
            }),
            Op::NewMasqueradeRule { chain, set } => {
                self.message(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, what, |b| {
                    b.put_str(NFTA_RULE_TABLE, &b.table.clone());
                    b.put_str(NFTA_RULE_CHAIN, chain);
                    b.nest(NFTA_RULE_EXPRESSIONS, |b| {
                        // The service key as the client addressed it: the original direction's
                        // tuple, which neither IPVS nor NAT rewrites.
                        b.expr("ct", |b| {
                            b.put_be32(NFTA_CT_DREG, NFT_REG_1);
                            b.put_be32(NFTA_CT_KEY, NFT_CT_DST_IP);
                            b.put(NFTA_CT_DIRECTION, &[IP_CT_DIR_ORIGINAL]);
                        });
                        b.expr("meta", |b| {
                            b.put_be32(NFTA_META_DREG, NFT_REG32_01);
                            b.put_be32(NFTA_META_KEY, NFT_META_L4PROTO);
                        });
                        b.expr("ct", |b| {
                            b.put_be32(NFTA_CT_DREG, NFT_REG32_02);
                            b.put_be32(NFTA_CT_KEY, NFT_CT_PROTO_DST);
                            b.put(NFTA_CT_DIRECTION, &[IP_CT_DIR_ORIGINAL]);
                        });
                        b.expr("lookup", |b| {
                            b.put_str(NFTA_LOOKUP_SET, set);
                            b.put_be32(NFTA_LOOKUP_SREG, NFT_REG_1);
                        });
                        b.expr("masq", |_| {});
                    });
                })
            }
            Op::NewKeys { set, keys } => self.keys(NFT_MSG_NEWSETELEM, set, keys),
            Op::DelKeys { set, keys } => self.keys(NFT_MSG_DELSETELEM, set, keys),
        }
    }

    /// Appends the messages of a set-element change, `ELEMENTS_PER_MESSAGE` keys per message,
    /// each described by the services it carries.
    fn keys(&mut self, kind: u16, set: &str, keys: &[ServiceKey]) {
        for chunk in keys.chunks(ELEMENTS_PER_MESSAGE) {
            let verb = if kind == NFT_MSG_NEWSETELEM { "add" } else { "delete" };
            let what = format!("{verb} {set} elements of {}", keys_text(chunk));
            let flags = if kind == NFT_MSG_NEWSETELEM { NLM_F_CREATE } else { 0 };
            self.message(kind, flags, what, |b| {
                b.elements(set, |b| {
                    for key in chunk {
                        b.nest(NFTA_LIST_ELEM, |b| {
                            b.nest(NFTA_SET_ELEM_KEY, |b| b.put(NFTA_DATA_VALUE, &service_key_bytes(key)));
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
                b.expr("payload", |b| {
                    b.put_be32(NFTA_PAYLOAD_DREG, NFT_REG_1);
                    b.put_be32(NFTA_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
                    b.put_be32(NFTA_PAYLOAD_OFFSET, 16);
                    b.put_be32(NFTA_PAYLOAD_LEN, 4);
                });
                b.expr("meta", |b| {
                    b.put_be32(NFTA_META_DREG, NFT_REG32_01);
                    b.put_be32(NFTA_META_KEY, NFT_META_L4PROTO);
                });
                b.expr("payload", |b| {
                    b.put_be32(NFTA_PAYLOAD_DREG, NFT_REG32_02);
                    b.put_be32(NFTA_PAYLOAD_BASE, NFT_PAYLOAD_TRANSPORT_HEADER);
                    b.put_be32(NFTA_PAYLOAD_OFFSET, 2);
                    b.put_be32(NFTA_PAYLOAD_LEN, 2);
                });
                b.expr("numgen", |b| {
                    b.put_be32(NFTA_NG_DREG, NFT_REG32_03);
                    b.put_be32(NFTA_NG_MODULUS, *modulus);
                    b.put_be32(NFTA_NG_TYPE, NFT_NG_INCREMENTAL);
                    b.put_be32(NFTA_NG_OFFSET, 0);
                });
                b.expr("lookup", |b| {
                    b.put_str(NFTA_LOOKUP_SET, &backends_map(service));
                    b.put_be32(NFTA_LOOKUP_SREG, NFT_REG_1);
                    b.put_be32(NFTA_LOOKUP_DREG, NFT_REG_1);
                });
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
            Rule::Drop => self.nest(NFTA_RULE_EXPRESSIONS, |b| {
                b.expr("immediate", |b| {
                    b.put_be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
                    b.nest(NFTA_IMMEDIATE_DATA, |b| {
                        b.nest(NFTA_DATA_VERDICT, |b| b.put_be32(NFTA_VERDICT_CODE, NF_DROP));
                    });
                });
            }),
        }
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
    let mut request =
        Batch { buf: Vec::new(), table: table.to_owned(), seq, sent: Vec::new(), last_start: None, too_long: false };
    request.message(NFT_MSG_GETSETELEM, NLM_F_DUMP, String::new(), |b| {
        b.put_str(NFTA_SET_ELEM_LIST_TABLE, table);
        b.put_str(NFTA_SET_ELEM_LIST_SET, set);
    });
    request.buf
}

/// Reads one datagram of the answer to [`set_elements_request`] number `seq`: appends the
/// element keys to `keys`, and returns `Some(0)` at the end of the dump, `Some(errno)` when the
/// kernel refused it, `None` when more is to come. Messages of other requests are skipped.
pub(crate) fn parse_set_elements(datagram: &[u8], seq: u32, keys: &mut Vec<Vec<u8>>) -> Result<Option<i32>, String> {
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
                        for (kind, key) in attributes(element)? {
                            if kind != NFTA_SET_ELEM_KEY {
                                continue;
                            }
                            if let Some((_, value)) = attributes(key)?.into_iter().find(|(k, _)| *k == NFTA_DATA_VALUE)
                            {
                                keys.push(value.to_vec());
                            }
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

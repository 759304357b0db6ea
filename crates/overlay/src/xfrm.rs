//! IPsec ESP in transport mode over `NETLINK_XFRM`, for encrypted overlays: security
//! associations (`rfc4106(gcm(aes))`, a 128-bit key, a 32-bit salt and a 128-bit ICV) and
//! outbound policies that send a node's marked VXLAN datagrams through them, or block them.
//!
//! The messages are written and read by hand, as `ipvs-lb` does for nf_tables: no xfrm crate
//! builds on the netlink-packet-core this workspace uses. Struct layouts are those of
//! `include/uapi/linux/xfrm.h` on x86-64 (the unit tests pin every offset). Only what Shoal
//! makes is read back: SAs whose `reqid` and policies whose mark are [`ESP_MARK`].

use std::net::Ipv4Addr;

use nix::errno::Errno;

/// The mark of encrypted VXLAN datagrams, the `reqid` of Shoal's SAs and the mark of its
/// policies: how what Shoal made is told from what others made.
pub const ESP_MARK: u32 = 0x4553_5000;

/// The AEAD algorithm of every SA.
pub const AEAD: &str = "rfc4106(gcm(aes))";

const NETLINK_HEADER: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_EXCL: u16 = 0x200;

const XFRM_MSG_NEWSA: u16 = 0x10;
const XFRM_MSG_DELSA: u16 = 0x11;
const XFRM_MSG_GETSA: u16 = 0x12;
const XFRM_MSG_NEWPOLICY: u16 = 0x13;
const XFRM_MSG_DELPOLICY: u16 = 0x14;
const XFRM_MSG_GETPOLICY: u16 = 0x15;
const XFRM_MSG_UPDPOLICY: u16 = 0x19;

const XFRMA_TMPL: u16 = 5;
const XFRMA_SRCADDR: u16 = 13;
const XFRMA_ALG_AEAD: u16 = 18;
const XFRMA_MARK: u16 = 21;

const AF_INET: u16 = 2;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ESP: u8 = 50;
const XFRM_MODE_TRANSPORT: u8 = 0;
const XFRM_POLICY_OUT: u8 = 1;
const XFRM_POLICY_ALLOW: u8 = 0;
const XFRM_POLICY_BLOCK: u8 = 1;
/// `XFRM_INF`: no lifetime limit.
const INFINITE: u64 = u64::MAX;

/// `struct xfrm_selector`.
const SELECTOR: usize = 56;
/// `struct xfrm_usersa_info`.
const USERSA_INFO: usize = 224;
/// `struct xfrm_usersa_id`.
const USERSA_ID: usize = 24;
/// `struct xfrm_userpolicy_info`.
const USERPOLICY_INFO: usize = 168;
/// `struct xfrm_userpolicy_id`.
const USERPOLICY_ID: usize = 64;
/// `struct xfrm_user_tmpl`.
const USER_TMPL: usize = 64;
/// `struct xfrm_algo_aead` without its key.
const ALGO_AEAD: usize = 72;

/// One direction's ESP security association between two nodes.
#[derive(Clone, PartialEq, Eq)]
pub struct Sa {
    /// The sending node's underlay address.
    pub src: Ipv4Addr,
    /// The receiving node's.
    pub dst: Ipv4Addr,
    /// Its security parameter index.
    pub spi: u32,
    /// The AES-128 key.
    pub key: [u8; 16],
    /// The GCM salt (the nonce's fixed part).
    pub salt: [u8; 4],
}

impl std::fmt::Debug for Sa {
    // Keys stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sa")
            .field("src", &self.src)
            .field("dst", &self.dst)
            .field("spi", &format_args!("{:#010x}", self.spi))
            .finish_non_exhaustive()
    }
}

/// What identifies an SA: what a dump reports of Shoal's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SaId {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Security parameter index.
    pub spi: u32,
}

/// What an outbound policy does with the VXLAN datagrams it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyAction {
    /// Encrypt them with the SA of this SPI.
    Encrypt {
        /// The SA's SPI.
        spi: u32,
    },
    /// Drop them (no SA yet: fail closed, never send in the clear).
    Block,
}

/// An outbound policy for marked UDP datagrams to a port, from `src` to `dst` (`None`: any
/// address, as the catch-all block policy has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The local underlay address (`None`: any).
    pub src: Option<Ipv4Addr>,
    /// The remote node's (`None`: any).
    pub dst: Option<Ipv4Addr>,
    /// The UDP destination port (VXLAN's).
    pub dport: u16,
    /// Lower wins among matching policies.
    pub priority: u32,
    /// What it does.
    pub action: PolicyAction,
}

/// A message of a dump or an answer, as far as Shoal reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An SA with Shoal's reqid.
    Sa(SaId),
    /// A policy with Shoal's mark.
    Policy(Policy),
    /// An SA or policy that is not Shoal's.
    Foreign,
    /// The end of a dump.
    Done,
    /// An acknowledgement (0) or an error (a positive errno).
    Ack(i32),
}

/// A netlink message being written.
struct Message {
    bytes: Vec<u8>,
}

impl Message {
    fn new(kind: u16, flags: u16, seq: u32) -> Self {
        let mut bytes = vec![0u8; NETLINK_HEADER];
        bytes[4..6].copy_from_slice(&kind.to_ne_bytes());
        bytes[6..8].copy_from_slice(&flags.to_ne_bytes());
        bytes[8..12].copy_from_slice(&seq.to_ne_bytes());
        Self { bytes }
    }

    fn body(mut self, body: &[u8]) -> Self {
        self.bytes.extend_from_slice(body);
        self
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Self {
        let len = u16::try_from(4 + data.len()).unwrap_or(u16::MAX);
        self.bytes.extend_from_slice(&len.to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(data);
        self.bytes.resize(self.bytes.len().next_multiple_of(4), 0);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.bytes.len()).unwrap_or(u32::MAX);
        self.bytes[0..4].copy_from_slice(&len.to_ne_bytes());
        self.bytes
    }
}

/// `xfrm_address_t` of an IPv4 address: its four bytes, then zeros.
fn address(addr: Ipv4Addr) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&addr.octets());
    out
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// `struct xfrm_selector` for UDP from `src` to `dst`, port `dport` (0: any), `None` = any address.
fn selector(src: Option<Ipv4Addr>, dst: Option<Ipv4Addr>, dport: u16, proto: u8) -> [u8; SELECTOR] {
    let mut sel = [0u8; SELECTOR];
    put(&mut sel, 0, &address(dst.unwrap_or(Ipv4Addr::UNSPECIFIED)));
    put(&mut sel, 16, &address(src.unwrap_or(Ipv4Addr::UNSPECIFIED)));
    put(&mut sel, 32, &dport.to_be_bytes());
    put(&mut sel, 34, &(if dport == 0 { 0u16 } else { 0xffff }).to_be_bytes());
    put(&mut sel, 40, &AF_INET.to_ne_bytes());
    sel[42] = if dst.is_some() { 32 } else { 0 };
    sel[43] = if src.is_some() { 32 } else { 0 };
    sel[44] = proto;
    sel
}

/// `struct xfrm_lifetime_cfg` with no limits, at `at`.
fn no_limits(buf: &mut [u8], at: usize) {
    for i in 0..4 {
        put(buf, at + i * 8, &INFINITE.to_ne_bytes());
    }
}

/// `struct xfrm_mark {ESP_MARK, 0xffffffff}`.
fn mark() -> [u8; 8] {
    let mut m = [0u8; 8];
    put(&mut m, 0, &ESP_MARK.to_ne_bytes());
    put(&mut m, 4, &u32::MAX.to_ne_bytes());
    m
}

/// `XFRM_MSG_NEWSA` for `sa` (transport mode, reqid [`ESP_MARK`], replay window 32).
pub fn new_sa(sa: &Sa, seq: u32) -> Vec<u8> {
    let mut info = [0u8; USERSA_INFO];
    put(&mut info, 0, &selector(None, None, 0, 0));
    put(&mut info, 40, &AF_INET.to_ne_bytes());
    put(&mut info, 56, &address(sa.dst));
    put(&mut info, 72, &sa.spi.to_be_bytes());
    info[76] = IPPROTO_ESP;
    put(&mut info, 80, &address(sa.src));
    no_limits(&mut info, 96);
    put(&mut info, 208, &ESP_MARK.to_ne_bytes());
    put(&mut info, 212, &AF_INET.to_ne_bytes());
    info[214] = XFRM_MODE_TRANSPORT;
    info[215] = 32;
    let mut aead = vec![0u8; ALGO_AEAD];
    put(&mut aead, 0, AEAD.as_bytes());
    put(&mut aead, 64, &160u32.to_ne_bytes());
    put(&mut aead, 68, &128u32.to_ne_bytes());
    aead.extend_from_slice(&sa.key);
    aead.extend_from_slice(&sa.salt);
    Message::new(XFRM_MSG_NEWSA, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq)
        .body(&info)
        .attr(XFRMA_ALG_AEAD, &aead)
        .finish()
}

/// `XFRM_MSG_DELSA` of `id`.
pub fn delete_sa(id: SaId, seq: u32) -> Vec<u8> {
    let mut body = [0u8; USERSA_ID];
    put(&mut body, 0, &address(id.dst));
    put(&mut body, 16, &id.spi.to_be_bytes());
    put(&mut body, 20, &AF_INET.to_ne_bytes());
    body[22] = IPPROTO_ESP;
    Message::new(XFRM_MSG_DELSA, NLM_F_REQUEST | NLM_F_ACK, seq)
        .body(&body)
        .attr(XFRMA_SRCADDR, &address(id.src))
        .finish()
}

/// `XFRM_MSG_NEWPOLICY` (or `UPDPOLICY` when `update`: the atomic switch of a rotation) of an
/// outbound `policy` with Shoal's mark.
pub fn set_policy(policy: &Policy, update: bool, seq: u32) -> Vec<u8> {
    let mut info = [0u8; USERPOLICY_INFO];
    put(&mut info, 0, &selector(policy.src, policy.dst, policy.dport, IPPROTO_UDP));
    no_limits(&mut info, 56);
    put(&mut info, 152, &policy.priority.to_ne_bytes());
    info[160] = XFRM_POLICY_OUT;
    let kind = if update { XFRM_MSG_UPDPOLICY } else { XFRM_MSG_NEWPOLICY };
    let flags = if update { NLM_F_REQUEST | NLM_F_ACK } else { NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL };
    let message = match policy.action {
        PolicyAction::Block => {
            info[161] = XFRM_POLICY_BLOCK;
            Message::new(kind, flags, seq).body(&info)
        }
        PolicyAction::Encrypt { spi } => {
            info[161] = XFRM_POLICY_ALLOW;
            let mut tmpl = [0u8; USER_TMPL];
            put(&mut tmpl, 0, &address(policy.dst.unwrap_or(Ipv4Addr::UNSPECIFIED)));
            put(&mut tmpl, 16, &spi.to_be_bytes());
            tmpl[20] = IPPROTO_ESP;
            put(&mut tmpl, 24, &AF_INET.to_ne_bytes());
            put(&mut tmpl, 28, &address(policy.src.unwrap_or(Ipv4Addr::UNSPECIFIED)));
            put(&mut tmpl, 44, &ESP_MARK.to_ne_bytes());
            tmpl[48] = XFRM_MODE_TRANSPORT;
            // Any authentication, encryption and compression algorithm: the SA's.
            put(&mut tmpl, 52, &u32::MAX.to_ne_bytes());
            put(&mut tmpl, 56, &u32::MAX.to_ne_bytes());
            put(&mut tmpl, 60, &u32::MAX.to_ne_bytes());
            Message::new(kind, flags, seq).body(&info).attr(XFRMA_TMPL, &tmpl)
        }
    };
    message.attr(XFRMA_MARK, &mark()).finish()
}

/// `XFRM_MSG_DELPOLICY` of the outbound policy with `policy`'s selector and Shoal's mark.
pub fn delete_policy(policy: &Policy, seq: u32) -> Vec<u8> {
    let mut id = [0u8; USERPOLICY_ID];
    put(&mut id, 0, &selector(policy.src, policy.dst, policy.dport, IPPROTO_UDP));
    id[60] = XFRM_POLICY_OUT;
    Message::new(XFRM_MSG_DELPOLICY, NLM_F_REQUEST | NLM_F_ACK, seq).body(&id).attr(XFRMA_MARK, &mark()).finish()
}

/// A dump of every SA (`sas`) or every policy.
pub fn dump(sas: bool, seq: u32) -> Vec<u8> {
    let kind = if sas { XFRM_MSG_GETSA } else { XFRM_MSG_GETPOLICY };
    Message::new(kind, NLM_F_REQUEST | NLM_F_DUMP, seq).finish()
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn ipv4_at(buf: &[u8], at: usize) -> Option<Ipv4Addr> {
    let b = buf.get(at..at + 4)?;
    Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
}

/// The attributes after a fixed-size body: (type, data).
fn attributes(mut rest: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            break;
        }
        out.push((kind, &rest[4..len]));
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    out
}

fn parse_sa(body: &[u8]) -> Option<Reply> {
    if body.len() < USERSA_INFO {
        return None;
    }
    if u32_at(body, 208)? != ESP_MARK || body[76] != IPPROTO_ESP {
        return Some(Reply::Foreign);
    }
    let spi = u32::from_be_bytes(body.get(72..76)?.try_into().ok()?);
    Some(Reply::Sa(SaId { src: ipv4_at(body, 80)?, dst: ipv4_at(body, 56)?, spi }))
}

fn parse_policy(body: &[u8]) -> Option<Reply> {
    if body.len() < USERPOLICY_INFO {
        return None;
    }
    let attrs = attributes(&body[USERPOLICY_INFO..]);
    let ours = attrs.iter().any(|(kind, data)| *kind == XFRMA_MARK && u32_at(data, 0) == Some(ESP_MARK));
    if !ours || body[160] != XFRM_POLICY_OUT {
        return Some(Reply::Foreign);
    }
    let addr = |at: usize, prefix: u8| if prefix == 32 { ipv4_at(body, at) } else { None };
    let action = if body[161] == XFRM_POLICY_BLOCK {
        PolicyAction::Block
    } else {
        let tmpl = attrs.iter().find(|(kind, _)| *kind == XFRMA_TMPL).map(|(_, data)| *data)?;
        PolicyAction::Encrypt { spi: u32::from_be_bytes(tmpl.get(16..20)?.try_into().ok()?) }
    };
    Some(Reply::Policy(Policy {
        src: addr(16, body[43]),
        dst: addr(0, body[42]),
        dport: u16::from_be_bytes([body[32], body[33]]),
        priority: u32_at(body, 152)?,
        action,
    }))
}

/// The messages of a datagram from the kernel that answer sequence number `seq`.
pub fn parse(datagram: &[u8], seq: u32) -> Result<Vec<Reply>, String> {
    let mut replies = Vec::new();
    let mut rest = datagram;
    while rest.len() >= NETLINK_HEADER {
        let len = u32_at(rest, 0).map_or(0, |l| l as usize);
        if len < NETLINK_HEADER || len > rest.len() {
            return Err(format!("a netlink message of {len} bytes in a datagram of {}", rest.len()));
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let body = &rest[NETLINK_HEADER..len];
        if u32_at(rest, 8) == Some(seq) {
            let reply = match kind {
                NLMSG_DONE => Some(Reply::Done),
                NLMSG_ERROR => u32_at(body, 0).map(|e| Reply::Ack((e as i32).wrapping_neg())),
                XFRM_MSG_NEWSA => parse_sa(body),
                XFRM_MSG_NEWPOLICY => parse_policy(body),
                _ => Some(Reply::Foreign),
            };
            replies.push(reply.ok_or_else(|| format!("a short xfrm message (type {kind}, {} bytes)", body.len()))?);
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last netlink message", rest.len()));
    }
    Ok(replies)
}

/// An xfrm request the kernel refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum XfrmError {
    /// The socket could not be opened, or a message sent or read.
    #[error("xfrm netlink: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel refused a request.
    #[error("xfrm {op}: {}", describe(op, *errno))]
    Refused {
        /// What was asked (`add SA 192.0.2.11 -> 192.0.2.12 spi 0x…`).
        op: String,
        /// The kernel's errno.
        errno: i32,
    },
    /// The kernel's answer could not be read.
    #[error("xfrm netlink: {0}")]
    Protocol(String),
}

impl XfrmError {
    /// Whether the kernel said it has no ESP or no AES-GCM (an SA cannot be made here at all).
    pub fn no_esp(&self) -> bool {
        matches!(self, Self::Refused { op, errno } if op.starts_with(ADD_SA) && NO_ESP.contains(&Errno::from_raw(*errno)))
    }
}

/// What the kernel answers an SA it cannot make: no ESP type, no such algorithm.
const NO_ESP: [Errno; 3] = [Errno::ENOENT, Errno::ENOSYS, Errno::EPROTONOSUPPORT];

/// The SPI of [`XfrmSocket::probe_esp`]'s throw-away SA: below 256, which no real SA of ours has.
const PROBE_SPI: u32 = 0xfe;

/// How an SA's addition is named in errors.
const ADD_SA: &str = "add SA";

fn describe(op: &str, errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno);
    match Errno::from_raw(errno) {
        e if op.starts_with(ADD_SA) && NO_ESP.contains(&e) => {
            format!("{text}: this kernel has no ESP (esp4) or no {AEAD}; encrypted overlays need both")
        }
        _ => text.to_string(),
    }
}

/// A `NETLINK_XFRM` socket, in the namespace of the thread that opened it.
#[derive(Debug)]
pub struct XfrmSocket {
    socket: netlink_sys::Socket,
    seq: u32,
}

impl XfrmSocket {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, XfrmError> {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_XFRM)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(Self { socket, seq: 1 })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `request` and reads answers until the one that ends it (its ack or a dump's end).
    fn exchange(&mut self, op: impl FnOnce() -> String, request: &[u8], seq: u32) -> Result<Vec<Reply>, XfrmError> {
        self.socket.send(request, 0)?;
        let mut replies = Vec::new();
        loop {
            let (datagram, _) = self.socket.recv_from_full()?;
            for reply in parse(&datagram, seq).map_err(XfrmError::Protocol)? {
                match reply {
                    Reply::Ack(0) | Reply::Done => return Ok(replies),
                    Reply::Ack(errno) => return Err(XfrmError::Refused { op: op(), errno }),
                    other => replies.push(other),
                }
            }
        }
    }

    /// Adds `sa`.
    pub fn add_sa(&mut self, sa: &Sa) -> Result<(), XfrmError> {
        let seq = self.next_seq();
        let op = || format!("{ADD_SA} {} -> {} spi {:#010x}", sa.src, sa.dst, sa.spi);
        self.exchange(op, &new_sa(sa, seq), seq).map(drop)
    }

    /// Deletes the SA `id`.
    pub fn delete_sa(&mut self, id: SaId) -> Result<(), XfrmError> {
        let seq = self.next_seq();
        let op = || format!("delete SA {} -> {} spi {:#010x}", id.src, id.dst, id.spi);
        self.exchange(op, &delete_sa(id, seq), seq).map(drop)
    }

    /// Adds `policy`, or replaces the one with its selector when `update`.
    pub fn set_policy(&mut self, policy: &Policy, update: bool) -> Result<(), XfrmError> {
        let seq = self.next_seq();
        let op = || format!("{} policy {policy:?}", if update { "update" } else { "add" });
        self.exchange(op, &set_policy(policy, update, seq), seq).map(drop)
    }

    /// Deletes the policy with `policy`'s selector.
    pub fn delete_policy(&mut self, policy: &Policy) -> Result<(), XfrmError> {
        let seq = self.next_seq();
        let op = || format!("delete policy {policy:?}");
        self.exchange(op, &delete_policy(policy, seq), seq).map(drop)
    }

    /// Whether this kernel can make Shoal's SAs (ESP in transport mode with
    /// `rfc4106(gcm(aes))`): adds one between two loopback addresses with an SPI below the range
    /// Shoal's SAs use (see [`crate::esp::sa`]), then deletes it. `Err` for any other refusal.
    pub fn probe_esp(&mut self) -> Result<bool, XfrmError> {
        let probe = Sa {
            src: Ipv4Addr::new(127, 0, 0, 1),
            dst: Ipv4Addr::new(127, 0, 0, 2),
            spi: PROBE_SPI,
            key: [0; 16],
            salt: [0; 4],
        };
        match self.add_sa(&probe) {
            Ok(()) => {
                self.delete_sa(SaId { src: probe.src, dst: probe.dst, spi: probe.spi })?;
                Ok(true)
            }
            Err(err) if err.no_esp() => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Shoal's SAs.
    pub fn sas(&mut self) -> Result<Vec<SaId>, XfrmError> {
        let seq = self.next_seq();
        let replies = self.exchange(|| "dump SAs".into(), &dump(true, seq), seq)?;
        Ok(replies.into_iter().filter_map(|r| if let Reply::Sa(id) = r { Some(id) } else { None }).collect())
    }

    /// Shoal's outbound policies.
    pub fn policies(&mut self) -> Result<Vec<Policy>, XfrmError> {
        let seq = self.next_seq();
        let replies = self.exchange(|| "dump policies".into(), &dump(false, seq), seq)?;
        Ok(replies.into_iter().filter_map(|r| if let Reply::Policy(p) = r { Some(p) } else { None }).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa() -> Sa {
        Sa {
            src: Ipv4Addr::new(192, 0, 2, 11),
            dst: Ipv4Addr::new(192, 0, 2, 12),
            spi: 0x1234_5678,
            key: [7; 16],
            salt: [1, 2, 3, 4],
        }
    }

    #[test]
    fn a_new_sa_has_the_kernels_layout() {
        let m = new_sa(&sa(), 9);
        assert_eq!(u32_at(&m, 0), Some(m.len() as u32));
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), XFRM_MSG_NEWSA);
        assert_eq!(u32_at(&m, 8), Some(9));
        let info = &m[NETLINK_HEADER..NETLINK_HEADER + USERSA_INFO];
        assert_eq!(&info[56..60], &[192, 0, 2, 12], "id.daddr");
        assert_eq!(&info[72..76], &0x1234_5678u32.to_be_bytes(), "id.spi, big endian");
        assert_eq!(info[76], IPPROTO_ESP, "id.proto");
        assert_eq!(&info[80..84], &[192, 0, 2, 11], "saddr");
        assert_eq!(u32_at(info, 208), Some(ESP_MARK), "reqid");
        assert_eq!((info[212], info[214], info[215]), (2, XFRM_MODE_TRANSPORT, 32), "family, mode, replay window");
        let attrs = attributes(&m[NETLINK_HEADER + USERSA_INFO..]);
        let (kind, aead) = attrs[0];
        assert_eq!(kind, XFRMA_ALG_AEAD);
        assert!(aead.starts_with(b"rfc4106(gcm(aes))\0"));
        assert_eq!((u32_at(aead, 64), u32_at(aead, 68)), (Some(160), Some(128)), "key bits with salt, ICV bits");
        assert_eq!(&aead[72..], &[7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 1, 2, 3, 4]);
        assert!(!format!("{:?}", sa()).contains("key"), "no key in Debug");
    }

    #[test]
    fn an_sa_reads_back_and_others_are_foreign() {
        let m = new_sa(&sa(), 3);
        let replies = parse(&m, 3).expect("parse");
        assert_eq!(replies, [Reply::Sa(SaId { src: sa().src, dst: sa().dst, spi: sa().spi })]);
        let mut other = m.clone();
        other[NETLINK_HEADER + 208] ^= 1;
        assert_eq!(parse(&other, 3).expect("parse"), [Reply::Foreign]);
        assert!(parse(&m, 4).expect("parse").is_empty(), "another sequence number");
    }

    #[test]
    fn policies_read_back_with_their_template_or_block() {
        let encrypt = Policy {
            src: Some(Ipv4Addr::new(192, 0, 2, 11)),
            dst: Some(Ipv4Addr::new(192, 0, 2, 12)),
            dport: 4789,
            priority: 100,
            action: PolicyAction::Encrypt { spi: 0xabcd },
        };
        let block = Policy { src: None, dst: None, dport: 4789, priority: 200, action: PolicyAction::Block };
        for policy in [encrypt, block] {
            let m = set_policy(&policy, false, 5);
            assert_eq!(
                m.len(),
                NETLINK_HEADER + USERPOLICY_INFO + if policy == block { 0 } else { 4 + USER_TMPL } + 12
            );
            assert_eq!(parse(&m, 5).expect("parse"), [Reply::Policy(policy)]);
        }
        let update = set_policy(&encrypt, true, 6);
        assert_eq!(u16::from_ne_bytes([update[4], update[5]]), XFRM_MSG_UPDPOLICY);
        let delete = delete_policy(&encrypt, 7);
        assert_eq!(delete.len(), NETLINK_HEADER + USERPOLICY_ID + 12);
        assert_eq!(delete[NETLINK_HEADER + 60], XFRM_POLICY_OUT);
    }

    #[test]
    fn errors_and_dump_ends_are_read() {
        let mut ack = Message::new(NLMSG_ERROR, 0, 8).body(&(-17i32).to_ne_bytes()).finish();
        ack.extend(Message::new(NLMSG_DONE, 0, 8).body(&0i32.to_ne_bytes()).finish());
        assert_eq!(parse(&ack, 8).expect("parse"), [Reply::Ack(17), Reply::Done]);
        assert!(parse(&ack[..24], 8).is_err(), "a cut message");
        assert!(parse(&ack[..30], 8).is_err(), "a cut message");
    }

    proptest::proptest! {
        /// Whatever the kernel (or a corrupted buffer) sends, reading it never panics, and a
        /// message we wrote, cut anywhere, is an error or fewer replies, never a wrong one.
        #[test]
        fn reading_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600), seq in 0u32..4) {
            let _ = parse(&bytes, seq);
        }

        #[test]
        fn a_cut_message_is_not_misread(cut in 0usize..330) {
            let m = new_sa(&sa(), 1);
            let cut = cut.min(m.len());
            if let Ok(replies) = parse(&m[..cut], 1) {
                proptest::prop_assert!(replies.is_empty() || cut == m.len());
            }
        }
    }
}

//! The IPVS generic-netlink messages (`include/uapi/linux/ip_vs.h`): commands, the nested
//! service and destination attributes, their encoding and decoding.
//!
//! Only what this crate uses is modelled; attributes it does not know are skipped when decoding.

use std::net::Ipv4Addr;

use netlink_packet_core::{DecodeError, Emitable, ParseableParametrized};
use netlink_packet_generic::{GenlFamily, GenlHeader};

/// The family name the generic-netlink controller resolves.
pub(crate) const FAMILY: &str = "IPVS";
/// `IPVS_GENL_VERSION`.
const VERSION: u8 = 1;

const CMD_NEW_SERVICE: u8 = 1;
const CMD_SET_SERVICE: u8 = 2;
const CMD_DEL_SERVICE: u8 = 3;
const CMD_GET_SERVICE: u8 = 4;
const CMD_NEW_DEST: u8 = 5;
const CMD_SET_DEST: u8 = 6;
const CMD_DEL_DEST: u8 = 7;
const CMD_GET_DEST: u8 = 8;
const CMD_FLUSH: u8 = 17;

const ATTR_SERVICE: u16 = 1;
const ATTR_DEST: u16 = 2;

const SVC_AF: u16 = 1;
const SVC_PROTOCOL: u16 = 2;
const SVC_ADDR: u16 = 3;
const SVC_PORT: u16 = 4;
const SVC_FWMARK: u16 = 5;
const SVC_SCHED_NAME: u16 = 6;
const SVC_FLAGS: u16 = 7;
const SVC_TIMEOUT: u16 = 8;
const SVC_NETMASK: u16 = 9;

const DEST_ADDR: u16 = 1;
const DEST_PORT: u16 = 2;
const DEST_FWD_METHOD: u16 = 3;
const DEST_WEIGHT: u16 = 4;
const DEST_U_THRESH: u16 = 5;
const DEST_L_THRESH: u16 = 6;
const DEST_ACTIVE_CONNS: u16 = 7;
const DEST_INACT_CONNS: u16 = 8;
const DEST_ADDR_FAMILY: u16 = 11;

const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(1 << 15 | 1 << 14);

/// `AF_INET`.
pub(crate) const AF_INET: u16 = 2;
/// `IP_VS_CONN_F_MASQ`: NAT forwarding.
pub(crate) const FWD_MASQ: u32 = 0;

/// An IPVS command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    NewService,
    SetService,
    DelService,
    GetService,
    NewDest,
    SetDest,
    DelDest,
    GetDest,
    Flush,
}

impl Command {
    fn number(self) -> u8 {
        match self {
            Self::NewService => CMD_NEW_SERVICE,
            Self::SetService => CMD_SET_SERVICE,
            Self::DelService => CMD_DEL_SERVICE,
            Self::GetService => CMD_GET_SERVICE,
            Self::NewDest => CMD_NEW_DEST,
            Self::SetDest => CMD_SET_DEST,
            Self::DelDest => CMD_DEL_DEST,
            Self::GetDest => CMD_GET_DEST,
            Self::Flush => CMD_FLUSH,
        }
    }

    fn from_number(n: u8) -> Result<Self, DecodeError> {
        Ok(match n {
            CMD_NEW_SERVICE => Self::NewService,
            CMD_SET_SERVICE => Self::SetService,
            CMD_DEL_SERVICE => Self::DelService,
            CMD_GET_SERVICE => Self::GetService,
            CMD_NEW_DEST => Self::NewDest,
            CMD_SET_DEST => Self::SetDest,
            CMD_DEL_DEST => Self::DelDest,
            CMD_GET_DEST => Self::GetDest,
            CMD_FLUSH => Self::Flush,
            other => return Err(DecodeError::from(format!("unknown IPVS command {other}"))),
        })
    }
}

/// What identifies an IPVS service: address, port and protocol, or a firewall mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServiceId {
    /// `IPVS_SVC_ATTR_PROTOCOL`, `_ADDR`, `_PORT`.
    Addr { protocol: u8, addr: Ipv4Addr, port: u16 },
    /// `IPVS_SVC_ATTR_FWMARK`.
    Fwmark(u32),
}

/// The nested service attributes. `sched` and the rest are needed to add or edit a service and
/// absent when only naming one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceAttrs {
    pub(crate) id: ServiceId,
    pub(crate) sched: Option<String>,
    /// `struct ip_vs_flags { flags, mask }`.
    pub(crate) flags: Option<(u32, u32)>,
    pub(crate) timeout: Option<u32>,
    pub(crate) netmask: Option<u32>,
}

impl ServiceAttrs {
    /// Just the identity (for delete, and for naming the service of a destination).
    pub(crate) fn id(id: ServiceId) -> Self {
        Self { id, sched: None, flags: None, timeout: None, netmask: None }
    }

    /// Everything the kernel needs to add or edit a service.
    pub(crate) fn full(id: ServiceId, sched: &str) -> Self {
        Self {
            id,
            sched: Some(sched.to_owned()),
            flags: Some((0, u32::MAX)),
            timeout: Some(0),
            netmask: Some(u32::MAX),
        }
    }
}

/// The nested destination attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DestAttrs {
    pub(crate) addr: Ipv4Addr,
    pub(crate) port: u16,
    pub(crate) fwd_method: Option<u32>,
    pub(crate) weight: Option<u32>,
    pub(crate) u_thresh: Option<u32>,
    pub(crate) l_thresh: Option<u32>,
    pub(crate) active_conns: Option<u32>,
    pub(crate) inactive_conns: Option<u32>,
}

impl DestAttrs {
    /// Just the identity (for delete).
    pub(crate) fn id(addr: Ipv4Addr, port: u16) -> Self {
        Self {
            addr,
            port,
            fwd_method: None,
            weight: None,
            u_thresh: None,
            l_thresh: None,
            active_conns: None,
            inactive_conns: None,
        }
    }

    /// A NAT-forwarded destination of this weight, without connection thresholds.
    pub(crate) fn masq(addr: Ipv4Addr, port: u16, weight: u32) -> Self {
        Self {
            fwd_method: Some(FWD_MASQ),
            weight: Some(weight),
            u_thresh: Some(0),
            l_thresh: Some(0),
            ..Self::id(addr, port)
        }
    }
}

/// One IPVS generic-netlink message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpvsMessage {
    pub(crate) cmd: Command,
    pub(crate) service: Option<ServiceAttrs>,
    pub(crate) dest: Option<DestAttrs>,
}

impl IpvsMessage {
    pub(crate) fn new(cmd: Command, service: Option<ServiceAttrs>, dest: Option<DestAttrs>) -> Self {
        Self { cmd, service, dest }
    }

    /// The attributes, encoded (everything after the generic-netlink header).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(service) = &self.service {
            put_nested(&mut out, ATTR_SERVICE, &encode_service(service));
        }
        if let Some(dest) = &self.dest {
            put_nested(&mut out, ATTR_DEST, &encode_dest(dest));
        }
        out
    }

    /// Decodes the attributes of a message of command `cmd`.
    pub(crate) fn decode(cmd: u8, attrs: &[u8]) -> Result<Self, DecodeError> {
        let mut message = Self { cmd: Command::from_number(cmd)?, service: None, dest: None };
        for (kind, value) in attributes(attrs)? {
            match kind {
                ATTR_SERVICE => message.service = Some(decode_service(value)?),
                ATTR_DEST => message.dest = Some(decode_dest(value)?),
                _ => {}
            }
        }
        Ok(message)
    }
}

fn encode_service(s: &ServiceAttrs) -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, SVC_AF, &AF_INET.to_ne_bytes());
    match s.id {
        ServiceId::Addr { protocol, addr, port } => {
            put(&mut out, SVC_PROTOCOL, &u16::from(protocol).to_ne_bytes());
            put(&mut out, SVC_ADDR, &addr16(addr));
            put(&mut out, SVC_PORT, &port.to_be_bytes());
        }
        ServiceId::Fwmark(mark) => put(&mut out, SVC_FWMARK, &mark.to_ne_bytes()),
    }
    if let Some(sched) = &s.sched {
        let mut name = sched.as_bytes().to_vec();
        name.push(0);
        put(&mut out, SVC_SCHED_NAME, &name);
    }
    if let Some((flags, mask)) = s.flags {
        let mut value = flags.to_ne_bytes().to_vec();
        value.extend_from_slice(&mask.to_ne_bytes());
        put(&mut out, SVC_FLAGS, &value);
    }
    if let Some(timeout) = s.timeout {
        put(&mut out, SVC_TIMEOUT, &timeout.to_ne_bytes());
    }
    if let Some(netmask) = s.netmask {
        put(&mut out, SVC_NETMASK, &netmask.to_ne_bytes());
    }
    out
}

fn encode_dest(d: &DestAttrs) -> Vec<u8> {
    let mut out = Vec::new();
    put(&mut out, DEST_ADDR, &addr16(d.addr));
    put(&mut out, DEST_PORT, &d.port.to_be_bytes());
    for (kind, value) in [
        (DEST_FWD_METHOD, d.fwd_method),
        (DEST_WEIGHT, d.weight),
        (DEST_U_THRESH, d.u_thresh),
        (DEST_L_THRESH, d.l_thresh),
    ] {
        if let Some(value) = value {
            put(&mut out, kind, &value.to_ne_bytes());
        }
    }
    put(&mut out, DEST_ADDR_FAMILY, &AF_INET.to_ne_bytes());
    out
}

fn decode_service(buf: &[u8]) -> Result<ServiceAttrs, DecodeError> {
    let (mut af, mut protocol, mut addr, mut port, mut fwmark) = (None, None, None, None, None);
    let mut s = ServiceAttrs::id(ServiceId::Fwmark(0));
    for (kind, value) in attributes(buf)? {
        match kind {
            SVC_AF => af = Some(u16_ne(value)?),
            SVC_PROTOCOL => protocol = Some(u16_ne(value)?),
            SVC_ADDR => addr = Some(ipv4(value)?),
            SVC_PORT => port = Some(u16::from_be_bytes(array(value)?)),
            SVC_FWMARK => fwmark = Some(u32_ne(value)?),
            SVC_SCHED_NAME => s.sched = Some(cstring(value)),
            SVC_FLAGS => {
                let bytes: [u8; 8] = array(value)?;
                let (flags, mask) = bytes.split_at(4);
                s.flags = Some((u32_ne(flags)?, u32_ne(mask)?));
            }
            SVC_TIMEOUT => s.timeout = Some(u32_ne(value)?),
            SVC_NETMASK => s.netmask = Some(u32_ne(value)?),
            _ => {}
        }
    }
    if af.is_some_and(|af| af != AF_INET) {
        return Err(DecodeError::from(format!("IPVS service of address family {af:?} (only IPv4 is supported)")));
    }
    s.id = match (fwmark.filter(|m| *m != 0), protocol, addr, port) {
        (Some(mark), ..) => ServiceId::Fwmark(mark),
        (None, Some(protocol), Some(addr), Some(port)) => ServiceId::Addr {
            protocol: u8::try_from(protocol).map_err(|_| DecodeError::from(format!("IPVS protocol {protocol}")))?,
            addr,
            port,
        },
        _ => return Err(DecodeError::from("IPVS service without fwmark or protocol, address and port")),
    };
    Ok(s)
}

fn decode_dest(buf: &[u8]) -> Result<DestAttrs, DecodeError> {
    let (mut addr, mut port) = (None, None);
    let mut d = DestAttrs::id(Ipv4Addr::UNSPECIFIED, 0);
    for (kind, value) in attributes(buf)? {
        match kind {
            DEST_ADDR => addr = Some(ipv4(value)?),
            DEST_PORT => port = Some(u16::from_be_bytes(array(value)?)),
            DEST_FWD_METHOD => d.fwd_method = Some(u32_ne(value)?),
            DEST_WEIGHT => d.weight = Some(u32_ne(value)?),
            DEST_U_THRESH => d.u_thresh = Some(u32_ne(value)?),
            DEST_L_THRESH => d.l_thresh = Some(u32_ne(value)?),
            DEST_ACTIVE_CONNS => d.active_conns = Some(u32_ne(value)?),
            DEST_INACT_CONNS => d.inactive_conns = Some(u32_ne(value)?),
            _ => {}
        }
    }
    d.addr = addr.ok_or_else(|| DecodeError::from("IPVS destination without address"))?;
    d.port = port.ok_or_else(|| DecodeError::from("IPVS destination without port"))?;
    Ok(d)
}

/// `union nf_inet_addr` holding an IPv4 address: 4 bytes, then 12 zeros.
fn addr16(addr: Ipv4Addr) -> [u8; 16] {
    let mut out = [0; 16];
    out[..4].copy_from_slice(&addr.octets());
    out
}

fn put(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(4 + value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn put_nested(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    put(out, kind | NLA_F_NESTED, value);
}

/// Splits a run of netlink attributes into (type without flags, value).
fn attributes(mut buf: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return Err(DecodeError::from(format!("netlink attribute {kind} of length {len} in {} bytes", buf.len())));
        }
        out.push((kind, &buf[4..len]));
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(out)
}

fn array<const N: usize>(value: &[u8]) -> Result<[u8; N], DecodeError> {
    value
        .get(..N)
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| DecodeError::from(format!("netlink attribute of {} bytes, expected {N}", value.len())))
}

fn u16_ne(value: &[u8]) -> Result<u16, DecodeError> {
    array(value).map(u16::from_ne_bytes)
}

fn u32_ne(value: &[u8]) -> Result<u32, DecodeError> {
    array(value).map(u32::from_ne_bytes)
}

fn ipv4(value: &[u8]) -> Result<Ipv4Addr, DecodeError> {
    array::<4>(value).map(Ipv4Addr::from)
}

fn cstring(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        FAMILY
    }

    fn command(&self) -> u8 {
        self.cmd.number()
    }

    fn version(&self) -> u8 {
        VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.encode().len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        let encoded = self.encode();
        buffer[..encoded.len()].copy_from_slice(&encoded);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        Self::decode(header.cmd, buf)
    }
}

#[cfg(test)]
mod tests;

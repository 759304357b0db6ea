//! Deciding what to do with one query: answer it from the record table or the cache, refuse it,
//! or hand it to the forwarder. No I/O, so that every rule here is unit-tested.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::forward::{Cache, CacheKey};
use crate::records::RecordTable;

/// Our EDNS UDP payload size (the 2020 DNS flag day value).
const OUR_UDP_PAYLOAD: u16 = 1232;
/// The largest UDP answer we send, whatever a client advertises.
pub(crate) const MAX_UDP_ANSWER: usize = 4096;

/// Which way a query came in: UDP answers must fit the client's payload size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

/// What to do with a query.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Ask the upstream servers.
    Forward(Forward),
    /// Not worth an answer (not even a DNS header).
    Drop,
}

/// A query for the forwarder.
#[derive(Debug)]
pub(crate) struct Forward {
    pub(crate) request: Message,
    /// The query as received, forwarded with only its ID changed.
    pub(crate) raw: Vec<u8>,
    pub(crate) key: CacheKey,
    /// The answer size limit for a UDP client; `None` over TCP.
    pub(crate) udp_limit: Option<usize>,
}

/// The rules shared by every container's sockets.
#[derive(Debug)]
pub(crate) struct Handler {
    pub(crate) table: RecordTable,
    pub(crate) cache: Cache,
    /// Lower case, no leading or trailing dot.
    pub(crate) cluster_domain: Option<String>,
    pub(crate) ttl: u32,
    /// Whether there is any upstream to forward to; SERVFAIL for outside names otherwise.
    pub(crate) forwarding: AtomicBool,
    /// Rotates DNS round-robin answers.
    rotation: AtomicUsize,
}

impl Handler {
    pub(crate) fn new(
        table: RecordTable,
        cache: Cache,
        cluster_domain: Option<String>,
        ttl: u32,
        forwarding: bool,
    ) -> Self {
        let cluster_domain = cluster_domain.map(|d| d.trim_matches('.').to_ascii_lowercase()).filter(|d| !d.is_empty());
        Self {
            table,
            cache,
            cluster_domain,
            ttl,
            forwarding: AtomicBool::new(forwarding),
            rotation: AtomicUsize::new(0),
        }
    }

    pub(crate) fn handle(&self, networks: &[String], bytes: &[u8], transport: Transport) -> Action {
        match self.fast_local(networks, bytes, transport) {
            Some(reply) => Action::Reply(reply),
            None => self.handle_general(networks, bytes, transport),
        }
    }

    /// Every query, through hickory's `Message`.
    fn handle_general(&self, networks: &[String], bytes: &[u8], transport: Transport) -> Action {
        let request = match Message::from_vec(bytes) {
            Ok(request) => request,
            Err(_) if bytes.len() >= 12 => {
                let id = u16::from_be_bytes([bytes[0], bytes[1]]);
                return Action::Reply(encode(&Message::error_msg(id, OpCode::Query, ResponseCode::FormErr), None));
            }
            Err(_) => return Action::Drop,
        };
        if request.metadata.message_type != MessageType::Query {
            return Action::Drop;
        }
        let udp_limit = match transport {
            Transport::Udp => Some(usize::from(request.max_payload()).min(MAX_UDP_ANSWER)),
            Transport::Tcp => None,
        };
        if request.metadata.op_code != OpCode::Query {
            return Action::Reply(respond(&request, ResponseCode::NotImp, Vec::new(), false, udp_limit));
        }
        let [query] = request.queries.as_slice() else {
            return Action::Reply(respond(&request, ResponseCode::FormErr, Vec::new(), false, udp_limit));
        };
        let qname = query.name().clone();
        let qtype = query.query_type();
        let key = lower_key(&qname);

        if query.query_class() == DNSClass::IN
            && let Some(answers) = self.local(networks, &qname, &key, qtype)
        {
            return Action::Reply(respond(&request, ResponseCode::NoError, answers, true, udp_limit));
        }
        // Names of other networks are not forwarded either: internal names do not leak upstream.
        if self.is_ours(&key) || self.table.exists_anywhere(self.strip_cluster_domain(&key)) {
            return Action::Reply(respond(&request, ResponseCode::NXDomain, Vec::new(), true, udp_limit));
        }
        if !self.forwarding.load(Ordering::Relaxed) {
            return Action::Reply(respond(&request, ResponseCode::ServFail, Vec::new(), false, udp_limit));
        }
        let key = CacheKey { name: key, qtype: u16::from(qtype), qclass: u16::from(query.query_class()) };
        if let Some(cached) = self.cache.get(&key) {
            return Action::Reply(from_cache(&request, cached, udp_limit));
        }
        Action::Forward(Forward { request, raw: bytes.to_vec(), key, udp_limit })
    }

    /// Answers from the record table, or `None` when the name is not a local one.
    fn local(&self, networks: &[String], qname: &Name, key: &str, qtype: RecordType) -> Option<Vec<Record>> {
        if qtype == RecordType::PTR {
            let net = qname.parse_arpa_name().ok()?;
            let full = if net.addr().is_ipv4() { 32 } else { 128 };
            if net.prefix_len() != full {
                return None;
            }
            let owner = self.table.reverse(networks, &net.addr())?;
            let target = Name::from_ascii(format!("{owner}.")).ok()?;
            return Some(vec![Record::from_rdata(qname.clone(), self.ttl, RData::PTR(PTR(target)))]);
        }
        let base = self.strip_cluster_domain(key);
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        self.table.lookup(networks, base, |addrs| {
            let ttl = self.ttl;
            let mut out = Vec::new();
            if matches!(qtype, RecordType::A | RecordType::ANY) {
                out.extend(
                    rotated(&addrs.v4, rotation).map(|a| Record::from_rdata(qname.clone(), ttl, RData::A(A(*a)))),
                );
            }
            if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
                out.extend(
                    rotated(&addrs.v6, rotation).map(|a| Record::from_rdata(qname.clone(), ttl, RData::AAAA(AAAA(*a)))),
                );
            }
            // Other types of a local name: NOERROR with no answer (the name exists).
            out
        })
    }

    /// The common case without decoding into a `Message`: one A or AAAA question for a local
    /// name, no other records than an EDNS(0) OPT. The answer is written straight after a copy of
    /// the question, its names compressed to a pointer to it. Anything else returns `None` and takes
    /// the general path, which gives the same answer.
    fn fast_local(&self, networks: &[String], bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let header = bytes.get(..12)?;
        // QR=0, opcode QUERY, one question, no answer or authority records.
        if header[2] & 0xf8 != 0 || header[4..10] != [0, 1, 0, 0, 0, 0] {
            return None;
        }
        let additionals = u16::from_be_bytes([header[10], header[11]]);
        let mut key = String::with_capacity(64);
        let mut at = 12;
        loop {
            let len = usize::from(*bytes.get(at)?);
            at += 1;
            if len == 0 {
                break;
            }
            // No compression in a question; no dots inside a label (they would fake a boundary).
            let label = bytes.get(at..at + len).filter(|l| len < 64 && !l.contains(&b'.'))?;
            if !key.is_empty() {
                key.push('.');
            }
            key.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
            at += len;
        }
        let question_end = at + 4;
        let fixed = bytes.get(at..question_end)?;
        let qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        if fixed[2..4] != [0, 1] || (qtype != 1 && qtype != 28) {
            return None;
        }
        // Nothing, or exactly one OPT record (root owner, type 41, version 0, no options).
        let client_payload = match (additionals, bytes.get(question_end..)?) {
            (0, []) => None,
            (1, [0, 0, 41, p1, p2, _, 0, _, _, 0, 0]) => Some(u16::from_be_bytes([*p1, *p2])),
            _ => return None,
        };
        let limit = match transport {
            Transport::Udp => usize::from(client_payload.unwrap_or(512).max(512)).min(MAX_UDP_ANSWER),
            Transport::Tcp => usize::from(u16::MAX),
        };
        let base = self.strip_cluster_domain(&key);
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        let ttl = self.ttl.to_be_bytes();
        self.table.lookup(networks, base, |addrs| {
            let count = if qtype == 1 { addrs.v4.len() } else { addrs.v6.len() };
            let mut out = Vec::with_capacity(question_end + count * 28 + 11);
            out.extend_from_slice(&bytes[..question_end]);
            // QR, opcode 0, AA, RD copied; RA; NOERROR.
            out[2] = 0x84 | (bytes[2] & 0x01);
            out[3] = 0x80;
            let answers = u16::try_from(count).ok()?;
            out[6..8].copy_from_slice(&answers.to_be_bytes());
            out[10..12].copy_from_slice(&[0, u8::from(client_payload.is_some())]);
            let mut record = |rdata: &[u8]| {
                // Owner: a pointer to the question's name at offset 12; class IN.
                out.extend_from_slice(&[0xc0, 0x0c, 0, fixed[1], 0, 1]);
                out.extend_from_slice(&ttl);
                out.extend_from_slice(&[0, rdata.len() as u8]);
                out.extend_from_slice(rdata);
            };
            if qtype == 1 {
                rotated(&addrs.v4, rotation).for_each(|a| record(&a.octets()));
            } else {
                rotated(&addrs.v6, rotation).for_each(|a| record(&a.octets()));
            }
            if client_payload.is_some() {
                let [p1, p2] = OUR_UDP_PAYLOAD.to_be_bytes();
                out.extend_from_slice(&[0, 0, 41, p1, p2, 0, 0, 0, 0, 0, 0]);
            }
            // Too big for the client: the general path truncates.
            (out.len() <= limit).then_some(out)
        })?
    }

    fn strip_cluster_domain<'a>(&self, key: &'a str) -> &'a str {
        match &self.cluster_domain {
            Some(domain) => key
                .strip_suffix(domain.as_str())
                .and_then(|rest| rest.strip_suffix('.'))
                .filter(|rest| !rest.is_empty())
                .unwrap_or(key),
            None => key,
        }
    }

    /// Names that are never sent upstream: the cluster domain and everything under it, single
    /// labels (service names), and `tasks.X`.
    fn is_ours(&self, key: &str) -> bool {
        if let Some(domain) = &self.cluster_domain
            && (key == domain || key.strip_suffix(domain.as_str()).is_some_and(|rest| rest.ends_with('.')))
        {
            return true;
        }
        match key.split_once('.') {
            None => !key.is_empty(),
            Some((first, rest)) => first == "tasks" && !rest.contains('.'),
        }
    }
}

fn rotated<T>(items: &[T], by: usize) -> impl Iterator<Item = &T> {
    let start = if items.is_empty() { 0 } else { by % items.len() };
    items[start..].iter().chain(items[..start].iter())
}

/// The lower-case name without its trailing dot: the key of the record table and the cache.
pub(crate) fn lower_key(name: &Name) -> String {
    let mut key = name.to_ascii();
    key.make_ascii_lowercase();
    if key.ends_with('.') {
        key.pop();
    }
    key
}

/// Builds a response to `request`.
pub(crate) fn respond(
    request: &Message,
    code: ResponseCode,
    answers: Vec<Record>,
    authoritative: bool,
    udp_limit: Option<usize>,
) -> Vec<u8> {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = authoritative;
    response.metadata.response_code = code;
    response.queries = request.queries.clone();
    response.answers = answers;
    response.edns = request.edns.as_ref().map(|_| our_edns());
    encode(&response, udp_limit)
}

fn our_edns() -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(OUR_UDP_PAYLOAD);
    edns
}

/// A cached (or shared) upstream answer, re-addressed to `request`.
pub(crate) fn from_cache(request: &Message, mut cached: Message, udp_limit: Option<usize>) -> Vec<u8> {
    cached.metadata.id = request.metadata.id;
    cached.metadata.recursion_desired = request.metadata.recursion_desired;
    // Echo the client's spelling of the name (some resolvers check it, 0x20 randomisation).
    cached.queries = request.queries.clone();
    cached.edns = request.edns.as_ref().map(|_| our_edns());
    encode_upstream(&cached, udp_limit)
}

/// [`encode`] for a message that came from an upstream resolver, whose bytes we do not trust:
/// what hickory parsed from them it may not write back in a form that parses again, so the bytes
/// are parsed before a client gets them, and an answer that does not parse becomes SERVFAIL.
pub(crate) fn encode_upstream(message: &Message, udp_limit: Option<usize>) -> Vec<u8> {
    let bytes = encode(message, udp_limit);
    if let Err(err) = Message::from_vec(&bytes) {
        tracing::warn!(error = %err, id = message.metadata.id, "an upstream answer cannot be written back; answering SERVFAIL");
        return servfail_bytes(message.metadata.id);
    }
    bytes
}

/// Encodes `message`; when it does not fit `udp_limit`, sends the header and question with TC set
/// so that the client retries over TCP.
pub(crate) fn encode(message: &Message, udp_limit: Option<usize>) -> Vec<u8> {
    match message.to_vec() {
        Ok(bytes) if udp_limit.is_none_or(|limit| bytes.len() <= limit) => bytes,
        Ok(_) => message.truncate().to_vec().unwrap_or_else(|_| servfail_bytes(message.metadata.id)),
        Err(err) => {
            tracing::warn!(error = %err, id = message.metadata.id, "cannot encode dns response");
            servfail_bytes(message.metadata.id)
        }
    }
}

fn servfail_bytes(id: u16) -> Vec<u8> {
    // A bare header: ID, QR + RA, SERVFAIL, no sections.
    let [hi, lo] = id.to_be_bytes();
    vec![hi, lo, 0x80, 0x82, 0, 0, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests;

//! Forwarding names the record table does not own to the node's upstream servers, and caching
//! their answers for as long as their TTL says.
//!
//! Each forwarded query gets a fresh socket (a fresh source port, connected to the upstream so
//! that an ICMP "port unreachable" fails it at once) and a random ID. Upstreams are tried in order,
//! each for at most the configured timeout; SERVFAIL and REFUSED move on to the next one, and when
//! none answers the client gets SERVFAIL. A UDP answer with TC set is fetched again over TCP when
//! the client itself asked over TCP.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::RData;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

use crate::handler::{self, Forward};
use crate::netns::NetnsWorker;

/// Upstream answers are cached for at most this long, whatever their TTL.
const MAX_CACHE_TTL: u32 = 3600;

/// What the cache is keyed on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    /// Lower case, no trailing dot.
    pub(crate) name: String,
    pub(crate) qtype: u16,
    pub(crate) qclass: u16,
}

#[derive(Debug)]
struct Entry {
    message: Message,
    stored: Instant,
    ttl: u32,
}

/// Upstream answers by question, each kept for its TTL.
#[derive(Debug)]
pub(crate) struct Cache {
    entries: Mutex<HashMap<CacheKey, Entry>>,
    capacity: usize,
}

impl Cache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { entries: Mutex::new(HashMap::new()), capacity }
    }

    /// The cached answer with its TTLs counted down, if it has not expired.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Message> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(key)?;
        let elapsed = u32::try_from(entry.stored.elapsed().as_secs()).unwrap_or(u32::MAX);
        if elapsed >= entry.ttl {
            entries.remove(key);
            return None;
        }
        let mut message = entry.message.clone();
        drop(entries);
        for record in
            message.answers.iter_mut().chain(message.authorities.iter_mut()).chain(message.additionals.iter_mut())
        {
            record.ttl = record.ttl.saturating_sub(elapsed);
        }
        Some(message)
    }

    pub(crate) fn insert(&self, key: CacheKey, response: &Message) {
        let Some(ttl) = cache_ttl(response) else { return };
        let mut message = response.clone();
        // OPT records are hop-by-hop (RFC 6891): each answer gets our own.
        message.edns = None;
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity {
            entries.retain(|_, e| e.stored.elapsed().as_secs() < u64::from(e.ttl));
            if entries.len() >= self.capacity {
                return;
            }
        }
        entries.insert(key, Entry { message, stored: Instant::now(), ttl });
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// How long an upstream answer may be cached: the smallest answer TTL, or for a negative answer
/// the SOA's negative TTL (RFC 2308). `None`: do not cache.
fn cache_ttl(response: &Message) -> Option<u32> {
    if response.metadata.truncation
        || !matches!(response.metadata.response_code, ResponseCode::NoError | ResponseCode::NXDomain)
    {
        return None;
    }
    let ttl = if response.answers.is_empty() {
        response.authorities.iter().find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })?
    } else {
        response.answers.iter().map(|r| r.ttl).min()?
    };
    (ttl > 0).then_some(ttl.min(MAX_CACHE_TTL))
}

/// Where upstream sockets are opened.
#[derive(Debug)]
pub(crate) enum Sockets {
    /// In the namespace of the process.
    Here,
    /// In another namespace, through a thread that lives there.
    Netns(NetnsWorker),
}

impl Sockets {
    async fn udp(&self, upstream: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
        let make = move || {
            let any: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
            let socket = std::net::UdpSocket::bind(any)?;
            socket.connect(upstream)?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        };
        let socket = match self {
            Self::Here => make()?,
            Self::Netns(worker) => worker.run(make).await?,
        };
        tokio::net::UdpSocket::from_std(socket)
    }

    async fn tcp(&self, upstream: SocketAddr) -> io::Result<tokio::net::TcpStream> {
        let socket = match self {
            Self::Here if upstream.is_ipv4() => tokio::net::TcpSocket::new_v4()?,
            Self::Here => tokio::net::TcpSocket::new_v6()?,
            Self::Netns(worker) => {
                let stream = worker
                    .run(move || {
                        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
                        let family = if upstream.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
                        let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
                        let fd = socket(family, SockType::Stream, flags, None).map_err(io::Error::from)?;
                        Ok(std::net::TcpStream::from(fd))
                    })
                    .await?;
                tokio::net::TcpSocket::from_std_stream(stream)
            }
        };
        socket.connect(upstream).await
    }
}

/// A UDP query with no answer yet is sent again after this long.
const RESEND_AFTER: Duration = Duration::from_secs(1);

/// An upstream that failed or timed out is tried after the others for this long.
const SUSPECT_FOR: Duration = Duration::from_secs(30);

/// Identical questions in flight share one upstream query. TCP and UDP clients do not share: a
/// UDP answer may be truncated where a TCP client needs it whole.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FlightKey {
    key: CacheKey,
    tcp: bool,
}

/// What the first asker of a question hands to the others: the upstream's answer, or `None` when
/// no upstream answered.
type Shared = Option<Arc<Option<Message>>>;

/// Sends queries upstream.
#[derive(Debug)]
pub(crate) struct Forwarder {
    /// The upstreams, each with the time until which it goes last after a failure.
    upstreams: Mutex<Vec<(SocketAddr, Option<Instant>)>>,
    timeout: Duration,
    sockets: Sockets,
    flights: Mutex<HashMap<FlightKey, watch::Receiver<Shared>>>,
}

/// Removes a flight when its leader is done or dropped (a detached container's task is aborted):
/// followers then see the channel close and ask for themselves.
struct FlightGuard<'a> {
    flights: &'a Mutex<HashMap<FlightKey, watch::Receiver<Shared>>>,
    key: FlightKey,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key);
    }
}

static QUERY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// An unpredictable query ID: SipHash, keyed randomly per process, of a counter.
fn random_id() -> u16 {
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u64(QUERY_COUNTER.fetch_add(1, Ordering::Relaxed));
    (hasher.finish() & 0xffff) as u16
}

impl Forwarder {
    pub(crate) fn new(upstreams: Vec<SocketAddr>, timeout: Duration, sockets: Sockets) -> Self {
        let upstreams = Mutex::new(upstreams.into_iter().map(|u| (u, None)).collect());
        Self { upstreams, timeout, sockets, flights: Mutex::new(HashMap::new()) }
    }

    /// Replaces the upstreams (the node's resolv.conf changed); queries in flight finish with the
    /// old ones.
    pub(crate) fn set_upstreams(&self, upstreams: &[SocketAddr]) {
        let mut current = self.upstreams.lock().unwrap_or_else(PoisonError::into_inner);
        // Keep what is known about servers that stay.
        let kept: Vec<(SocketAddr, Option<Instant>)> = upstreams
            .iter()
            .map(|u| (*u, current.iter().find(|(c, _)| c == u).and_then(|(_, until)| *until)))
            .collect();
        *current = kept;
    }

    /// The upstreams in the order to try them: as configured, those that failed lately last (so a
    /// dead first server costs one timeout, not one per query).
    fn order(&self) -> Vec<SocketAddr> {
        let now = Instant::now();
        let mut order = self.upstreams.lock().unwrap_or_else(PoisonError::into_inner).clone();
        order.sort_by_key(|(_, until)| until.is_some_and(|until| until > now));
        order.into_iter().map(|(u, _)| u).collect()
    }

    fn mark(&self, upstream: SocketAddr, failed: bool) {
        let mut upstreams = self.upstreams.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, until)) = upstreams.iter_mut().find(|(u, _)| *u == upstream) {
            *until = failed.then(|| Instant::now() + SUSPECT_FOR);
        }
    }

    /// Resolves `forward` upstream and returns the bytes for the client (SERVFAIL when no
    /// upstream answered usefully). A question already in flight waits for that query's answer.
    pub(crate) async fn forward(&self, forward: &Forward, cache: &Cache) -> Vec<u8> {
        let key = FlightKey { key: forward.key.clone(), tcp: forward.udp_limit.is_none() };
        let leader = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            match flights.get(&key) {
                Some(receiver) => Err(receiver.clone()),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    flights.insert(key.clone(), receiver);
                    Ok(sender)
                }
            }
        };
        match leader {
            Ok(sender) => {
                let guard = FlightGuard { flights: &self.flights, key };
                let (bytes, answer) = self.forward_alone(forward, cache).await;
                let _ = sender.send(Some(Arc::new(answer)));
                drop(guard);
                bytes
            }
            Err(mut receiver) => {
                let shared = receiver.wait_for(Option::is_some).await.ok().and_then(|shared| shared.clone());
                match shared.as_deref() {
                    Some(Some(answer)) => handler::from_cache(&forward.request, answer.clone(), forward.udp_limit),
                    Some(None) => servfail(forward),
                    // The leader went away without an answer: ask ourselves.
                    None => self.forward_alone(forward, cache).await.0,
                }
            }
        }
    }

    /// One client's query, upstream after upstream: the bytes for the client and, when an
    /// upstream answered, its answer for others asking the same.
    async fn forward_alone(&self, forward: &Forward, cache: &Cache) -> (Vec<u8>, Option<Message>) {
        let mut query = forward.raw.clone();
        for upstream in self.order() {
            let id = random_id();
            query[..2].copy_from_slice(&id.to_be_bytes());
            let over_tcp = forward.udp_limit.is_none();
            let exchange = self.exchange(upstream, &query, id, forward, over_tcp);
            let answer = match tokio::time::timeout(self.timeout, exchange).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(err)) => {
                    tracing::debug!(upstream = %upstream, error = %err, "upstream dns query failed");
                    self.mark(upstream, true);
                    continue;
                }
                Err(_) => {
                    tracing::debug!(upstream = %upstream, timeout = ?self.timeout, "upstream dns query timed out");
                    self.mark(upstream, true);
                    continue;
                }
            };
            self.mark(upstream, false);
            let (message, bytes) = answer;
            let Some(reply) = client_answer(forward, cache, &message, bytes) else {
                tracing::debug!(upstream = %upstream, rcode = %message.metadata.response_code, "upstream refused, trying next");
                continue;
            };
            return (reply, Some(message));
        }
        tracing::debug!(name = %forward.key.name, "no upstream answered");
        (servfail(forward), None)
    }

    /// One query to one upstream: UDP, then TCP if the answer is truncated and the client can take
    /// a large one.
    async fn exchange(
        &self,
        upstream: SocketAddr,
        query: &[u8],
        id: u16,
        forward: &Forward,
        over_tcp: bool,
    ) -> io::Result<(Message, Vec<u8>)> {
        let (message, bytes) = self.exchange_udp(upstream, query, id, forward).await?;
        if message.metadata.truncation && over_tcp {
            return self.exchange_tcp(upstream, query, id, forward).await;
        }
        Ok((message, bytes))
    }

    async fn exchange_udp(
        &self,
        upstream: SocketAddr,
        query: &[u8],
        id: u16,
        forward: &Forward,
    ) -> io::Result<(Message, Vec<u8>)> {
        let socket = self.sockets.udp(upstream).await?;
        socket.send(query).await?;
        // A lost datagram is sent again every second until the caller's timeout: other askers of
        // the same question wait on this query rather than sending their own.
        let mut resend = tokio::time::interval_at(tokio::time::Instant::now() + RESEND_AFTER, RESEND_AFTER);
        let mut buf = vec![0u8; 65_535];
        loop {
            tokio::select! {
                // A connected socket: only the upstream's datagrams arrive, and ICMP errors
                // surface here.
                received = socket.recv(&mut buf) => {
                    let n = received?;
                    if let Some(message) = matching(&buf[..n], id, forward) {
                        buf.truncate(n);
                        return Ok((message, buf));
                    }
                }
                _ = resend.tick() => {
                    tracing::debug!(upstream = %upstream, "no answer yet, sending the query again");
                    socket.send(query).await?;
                }
            }
        }
    }

    async fn exchange_tcp(
        &self,
        upstream: SocketAddr,
        query: &[u8],
        id: u16,
        forward: &Forward,
    ) -> io::Result<(Message, Vec<u8>)> {
        let mut stream = self.sockets.tcp(upstream).await?;
        let len = u16::try_from(query.len()).map_err(|_| io::Error::other("query longer than 65535 bytes"))?;
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).await?;
        loop {
            let len = stream.read_u16().await?;
            let mut buf = vec![0u8; usize::from(len)];
            stream.read_exact(&mut buf).await?;
            if let Some(message) = matching(&buf, id, forward) {
                return Ok((message, buf));
            }
        }
    }
}

fn servfail(forward: &Forward) -> Vec<u8> {
    handler::respond(&forward.request, ResponseCode::ServFail, Vec::new(), false, forward.udp_limit)
}

/// What the client gets for an upstream's `message` (received as `bytes`) answering `forward`,
/// which is cached for the next asker; `None` for SERVFAIL and REFUSED, when the next upstream
/// is asked instead. No I/O, so the fuzz tests reach it ([`crate::fuzz`]).
pub(crate) fn client_answer(
    forward: &Forward,
    cache: &Cache,
    message: &Message,
    mut bytes: Vec<u8>,
) -> Option<Vec<u8>> {
    if matches!(message.metadata.response_code, ResponseCode::ServFail | ResponseCode::Refused) {
        return None;
    }
    cache.insert(forward.key.clone(), message);
    let client_id = forward.request.metadata.id;
    bytes[..2].copy_from_slice(&client_id.to_be_bytes());
    // A name compressed with a pointer into the header reads the ID as a label: with the
    // client's ID in place the same bytes may no longer parse (found by `fuzz_dns_upstream_answer`).
    // Such an answer is written anew from what was parsed.
    let reads_back = Message::from_vec(&bytes).is_ok();
    if !reads_back || forward.udp_limit.is_some_and(|limit| bytes.len() > limit) {
        let mut ours = message.clone();
        ours.metadata.id = client_id;
        return Some(handler::encode_upstream(&ours, forward.udp_limit));
    }
    Some(bytes)
}

/// The response if `bytes` answers our query (same ID, same question), else `None`.
pub(crate) fn matching(bytes: &[u8], id: u16, forward: &Forward) -> Option<Message> {
    let message = Message::from_vec(bytes).ok()?;
    (message.metadata.id == id
        && message.metadata.message_type == MessageType::Response
        && message.queries == forward.request.queries)
        .then_some(message)
}

//! The transport seam: a [`Transport`] moves opaque, already-encoded messages between members;
//! this module adapts it to openraft's network traits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::codec;
use crate::codec::Decode;
use crate::codec::DecodeError;
use crate::codec::Encode;
use crate::error::TransportError;
use crate::types::LogId;
use crate::types::NodeId;
use crate::types::SnapshotMeta;
use crate::types::TypeConfig;
use crate::types::Vote;
use futures::Stream;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::future::Either;
use futures::stream::BoxStream;
use futures::stream::FuturesOrdered;
use openraft::BasicNode;
use openraft::OptionalSend;
use openraft::RaftNetworkFactory;
use openraft::errors::NetworkError;
use openraft::errors::RPCError;
use openraft::errors::ReplicationClosed;
use openraft::errors::StreamingError;
use openraft::errors::Unreachable;
use openraft::network::RPCOption;
use openraft::network::v2::RaftNetworkV2;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::StreamAppendResult;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::TransferLeaderResponse;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;

/// The kind of a message between members; the payload's encoding is private to this crate, so a
/// transport only needs to carry `(kind, bytes)` and return the answer's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Raft log replication and heartbeats.
    AppendEntries,
    /// Raft election vote.
    Vote,
    /// Raft pre-vote (an election probe that does not disturb a healthy leader).
    PreVote,
    /// A whole snapshot for a member that fell behind the leader's log (may be large: transports
    /// should stream it in chunks).
    InstallSnapshot,
    /// A client write forwarded by a follower to the leader.
    ForwardWrite,
    /// A follower asks the leader for a read index to serve a linearizable read.
    ReadIndex,
    /// A member asks the leader for the cluster status (leader view of reachability).
    Status,
    /// The leader asks the voters to let one of them take over (it is stepping down).
    TransferLeader,
}

impl MessageKind {
    /// Every kind, for transports that map kinds to routes.
    pub const ALL: [MessageKind; 8] = [
        MessageKind::AppendEntries,
        MessageKind::Vote,
        MessageKind::PreVote,
        MessageKind::InstallSnapshot,
        MessageKind::ForwardWrite,
        MessageKind::ReadIndex,
        MessageKind::Status,
        MessageKind::TransferLeader,
    ];

    /// A stable lower-case name (used on the wire by the gRPC transport).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::AppendEntries => "append_entries",
            MessageKind::Vote => "vote",
            MessageKind::PreVote => "pre_vote",
            MessageKind::InstallSnapshot => "install_snapshot",
            MessageKind::ForwardWrite => "forward_write",
            MessageKind::ReadIndex => "read_index",
            MessageKind::Status => "status",
            MessageKind::TransferLeader => "transfer_leader",
        }
    }

    /// The kind named by [`MessageKind::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for MessageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Carries messages from this member to others. The receiving side hands each message to
/// [`crate::Store::handle`] on the target member and returns its answer.
///
/// Implementations: [`crate::InProcessRouter`] (tests, fault injection) and, with the `grpc`
/// feature, `grpc::GrpcTransport` (tonic over rustls).
pub trait Transport: Send + Sync + 'static {
    /// Sends `payload` of `kind` to member `target` at `addr` and waits for its answer.
    fn send(
        &self,
        from: NodeId,
        target: NodeId,
        addr: &str,
        kind: MessageKind,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>>;
}

/// Encodes a message to another member (see [`crate::codec`]).
pub(crate) fn encode<T: Encode>(value: &T) -> Vec<u8> {
    codec::message(value)
}

/// Decodes a message from another member.
pub(crate) fn decode<T: Decode>(bytes: &[u8]) -> Result<T, DecodeError> {
    codec::from_message(bytes)
}

/// Encodes a snapshot message: `[version][header len u32 LE][header: vote, meta][data]`.
pub(crate) fn encode_snapshot(vote: &Vote, meta: &SnapshotMeta, data: &[u8]) -> Vec<u8> {
    let mut header = Vec::with_capacity(64);
    vote.encode(&mut header);
    meta.encode(&mut header);
    let mut out = Vec::with_capacity(5 + header.len() + data.len());
    out.push(codec::MESSAGE_VERSION);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out
}

pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<(Vote, SnapshotMeta, Vec<u8>), String> {
    let Some((&version, bytes)) = bytes.split_first() else {
        return Err("snapshot message is empty".into());
    };
    if version != codec::MESSAGE_VERSION {
        return Err(format!("snapshot message encoding version {version} is not {}", codec::MESSAGE_VERSION));
    }
    if bytes.len() < 4 {
        return Err("snapshot message is too short".into());
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if bytes.len() < 4 + len {
        return Err("snapshot header is incomplete".into());
    }
    let mut r = codec::Reader::new(&bytes[4..4 + len]);
    let vote = Vote::decode(&mut r).map_err(|e| e.to_string())?;
    let meta = SnapshotMeta::decode(&mut r).map_err(|e| e.to_string())?;
    r.finish().map_err(|e| e.to_string())?;
    Ok((vote, meta, bytes[4 + len..].to_vec()))
}

/// The least time allowed for an append that carries entries.
const BATCH_TTL: Duration = Duration::from_secs(5);

/// openraft's network factory over a [`Transport`].
#[derive(Clone)]
pub(crate) struct NetworkFactory {
    pub(crate) node: NodeId,
    pub(crate) transport: Arc<dyn Transport>,
    /// The least time an RPC may take before it counts as lost (openraft's own deadline is the
    /// heartbeat interval, too tight for a loaded TLS connection).
    pub(crate) min_ttl: Duration,
}

pub(crate) struct Connection {
    node: NodeId,
    min_ttl: Duration,
    target: NodeId,
    addr: String,
    transport: Arc<dyn Transport>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Connection {
            node: self.node,
            min_ttl: self.min_ttl,
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
        }
    }
}

fn rpc_error(e: TransportError) -> RPCError<TypeConfig> {
    match e {
        TransportError::Unreachable { .. } | TransportError::NoAnswer { .. } => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        TransportError::Remote { .. } => RPCError::Network(NetworkError::new(&e)),
    }
}

impl Connection {
    async fn call<Req: Encode, Resp: Decode>(
        &self,
        kind: MessageKind,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<TypeConfig>> {
        send_call(
            self.transport.clone(),
            self.node,
            self.target,
            self.addr.clone(),
            kind,
            encode(req),
            ttl.max(self.min_ttl),
        )
        .await
    }

    /// One append sent on its own: the future owns what it needs, so several can be in flight.
    fn append_call(&self, rpc: &AppendEntriesRequest<TypeConfig>, option: &RPCOption) -> AppendCall {
        // openraft's deadline suits heartbeats; a batch of large entries needs longer to cross.
        let ttl = if rpc.entries.is_empty() { option.hard_ttl() } else { option.hard_ttl().max(BATCH_TTL) };
        let prev = rpc.prev_log_id;
        let last = rpc.entries.last().map(|e| e.log_id).or(prev);
        let answer = send_call(
            self.transport.clone(),
            self.node,
            self.target,
            self.addr.clone(),
            MessageKind::AppendEntries,
            encode(rpc),
            ttl.max(self.min_ttl),
        );
        Box::pin(async move { (prev, last, answer.await) })
    }
}

/// An append in flight: its range and, once answered, the follower's response.
type AppendCall =
    BoxFuture<'static, (Option<LogId>, Option<LogId>, Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>>)>;

/// How many appends without entries may be in flight ahead of the next request.
const MAX_PIPELINED: usize = 4;

async fn send_call<Resp: Decode>(
    transport: Arc<dyn Transport>,
    node: NodeId,
    target: NodeId,
    addr: String,
    kind: MessageKind,
    payload: Vec<u8>,
    ttl: Duration,
) -> Result<Resp, RPCError<TypeConfig>> {
    let fut = transport.send(node, target, &addr, kind, payload);
    let bytes = match tokio::time::timeout(ttl, fut).await {
        Ok(r) => r.map_err(rpc_error)?,
        Err(_) => {
            return Err(rpc_error(TransportError::NoAnswer {
                target,
                reason: format!("{kind} timed out after {ttl:?}"),
            }));
        }
    };
    decode(&bytes).map_err(|e| {
        RPCError::Network(NetworkError::new(&TransportError::Remote {
            target,
            reason: format!("undecodable {kind} answer: {e}"),
        }))
    })
}

/// The state of one replication stream (see [`Connection::stream_append`]).
struct AppendStream<S> {
    input: S,
    input_done: bool,
    stopped: bool,
    inflight: FuturesOrdered<AppendCall>,
    /// Whether an append carrying entries is among `inflight`.
    entries_inflight: usize,
}

impl<S> AppendStream<S>
where
    S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin,
{
    /// The next answer in request order, sending requests as they come while only entry-less
    /// appends are unanswered; `None` once the input ended and every answer was yielded, or
    /// after an error, a conflict or a partial success (as openraft's sequential stream does).
    async fn next(
        &mut self,
        conn: &Connection,
        option: &RPCOption,
    ) -> Option<Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>> {
        loop {
            if self.stopped || (self.input_done && self.inflight.is_empty()) {
                return None;
            }
            let may_send = !self.input_done && self.entries_inflight == 0 && self.inflight.len() < MAX_PIPELINED;
            let event = if may_send && !self.inflight.is_empty() {
                match futures::future::select(self.input.next(), self.inflight.next()).await {
                    Either::Left((req, _)) => Either::Left(req),
                    Either::Right((answer, _)) => Either::Right(answer),
                }
            } else if may_send {
                Either::Left(self.input.next().await)
            } else {
                Either::Right(self.inflight.next().await)
            };
            match event {
                Either::Left(None) => self.input_done = true,
                Either::Left(Some(req)) => {
                    if !req.entries.is_empty() {
                        self.entries_inflight += 1;
                    }
                    self.inflight.push_back(conn.append_call(&req, option));
                }
                Either::Right(None) => {}
                Either::Right(Some((prev, last, answer))) => {
                    if last != prev {
                        self.entries_inflight = self.entries_inflight.saturating_sub(1);
                    }
                    let resp = match answer {
                        Ok(resp) => resp,
                        Err(e) => {
                            self.stopped = true;
                            return Some(Err(e));
                        }
                    };
                    let partial = match &resp {
                        AppendEntriesResponse::PartialSuccess(m) => Some(*m),
                        _ => None,
                    };
                    if matches!(resp, AppendEntriesResponse::Conflict) && prev.is_none() {
                        // Nothing precedes the first entry, so nothing can conflict.
                        self.stopped = true;
                        return Some(Err(RPCError::Network(NetworkError::new(&TransportError::Remote {
                            target: conn.target,
                            reason: "conflict reported before the first log entry".into(),
                        }))));
                    }
                    let result = resp.into_stream_result(prev, last);
                    if result.is_err() || partial.is_some_and(|m| m != last) {
                        self.stopped = true;
                    }
                    return Some(Ok(result));
                }
            }
        }
    }
}

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.append_call(&rpc, &option).await.2
    }

    /// Replication as openraft streams it, with one change from its sequential default: a
    /// request is sent while the appends still unanswered carry no entries. Each commit makes
    /// openraft send an entry-less append to every follower, and the next write's entries used to
    /// wait for its round trip (and its tail); they go out at once now. An entry-less append and
    /// the one after it have the same previous log id, so the follower may take them in either
    /// order; appends with entries still go one at a time, in order. Answers come back in
    /// request order.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        let conn: &'s Connection = self;
        let state = AppendStream {
            input,
            input_done: false,
            stopped: false,
            inflight: FuturesOrdered::new(),
            entries_inflight: 0,
        };
        let stream = futures::stream::unfold(state, move |mut state| {
            let option = option.clone();
            async move {
                let item = state.next(conn, &option).await?;
                Some((item, state))
            }
        });
        Box::pin(async move { Ok(stream.boxed()) })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(MessageKind::Vote, &rpc, option.hard_ttl()).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(MessageKind::PreVote, &rpc, option.hard_ttl()).await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(MessageKind::TransferLeader, &req, option.hard_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let payload = encode_snapshot(&vote, &snapshot.meta, &snapshot.snapshot);
        tracing::info!(
            node.id = self.node,
            target.id = self.target,
            snapshot.last_log_id = ?snapshot.meta.last_log_id,
            snapshot.bytes = payload.len(),
            "sending snapshot"
        );
        let fut = self.transport.send(self.node, self.target, &self.addr, MessageKind::InstallSnapshot, payload);
        let ttl = option.hard_ttl().max(Duration::from_secs(10));
        let bytes = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = tokio::time::timeout(ttl, fut) => match r {
                Ok(r) => r.map_err(|e| StreamingError::from(rpc_error(e)))?,
                Err(_) => {
                    return Err(StreamingError::from(rpc_error(TransportError::NoAnswer {
                        target: self.target,
                        reason: format!("snapshot timed out after {ttl:?}"),
                    })));
                }
            },
        };
        decode(&bytes).map_err(|e| {
            StreamingError::Network(NetworkError::new(&TransportError::Remote {
                target: self.target,
                reason: format!("undecodable snapshot answer: {e}"),
            }))
        })
    }
}

#[cfg(test)]
mod tests;

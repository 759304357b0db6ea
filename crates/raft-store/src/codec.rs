//! The compact binary encoding of log records, snapshots and messages between members, written
//! for this crate's own types and the openraft types it carries.
//!
//! Integers are LEB128 varints, byte strings and lists are a varint length followed by their
//! bytes or elements, optional values and enums lead with a one-byte tag, booleans are one byte.
//! There are no field names and no schema evolution inside a value: the format as a whole is
//! versioned (segment and snapshot magic, [`MESSAGE_VERSION`] in front of every message), and a
//! change to any encoding below must bump those versions.
//!
//! Architecture invariant: decoding never panics and never allocates more than the input could
//! describe (a length is checked against the bytes that remain before anything is reserved, and
//! a list reserves at most [`MAX_PREALLOCATED`] elements ahead of decoding them), so a damaged
//! record or a hostile message yields a [`DecodeError`] naming the byte offset.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use openraft::BasicNode;
use openraft::EntryPayload;
use openraft::Membership;
use openraft::StoredMembership;
use openraft::impls::leader_id_adv::LeaderId;
use openraft::raft::AppendEntriesRequest;
use openraft::raft::AppendEntriesResponse;
use openraft::raft::SnapshotResponse;
use openraft::raft::TransferLeaderError;
use openraft::raft::TransferLeaderRequest;
use openraft::raft::VoteRequest;
use openraft::raft::VoteResponse;

use crate::types::Command;
use crate::types::Compare;
use crate::types::Entry;
use crate::types::KeyValue;
use crate::types::LogId;
use crate::types::NodeId;
use crate::types::Op;
use crate::types::SnapshotMeta;
use crate::types::Txn;
use crate::types::TxnOutcome;
use crate::types::TypeConfig;
use crate::types::Vote;

/// The first byte of every message between members. Version 1 was the JSON encoding, whose
/// messages start with `{`, `[` or `"` instead.
pub(crate) const MESSAGE_VERSION: u8 = 2;

/// A value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// The input ended inside a value.
    #[error("input ends at byte {at} inside {what}")]
    Truncated {
        /// Where the input ended.
        at: usize,
        /// What was being read.
        what: &'static str,
    },
    /// An enum or option tag has no meaning.
    #[error("unknown {what} tag {tag} at byte {at}")]
    Tag {
        /// Where the tag is.
        at: usize,
        /// What the tag selects.
        what: &'static str,
        /// The tag read.
        tag: u64,
    },
    /// A varint does not fit in 64 bits.
    #[error("varint at byte {at} is longer than 64 bits")]
    Varint {
        /// Where the varint starts.
        at: usize,
    },
    /// Bytes remain after the value.
    #[error("{count} bytes left over after the value ending at byte {at}")]
    Trailing {
        /// Where the value ended.
        at: usize,
        /// How many bytes follow it.
        count: usize,
    },
    /// The bytes decode but do not form a valid value.
    #[error("invalid {what} at byte {at}: {reason}")]
    Invalid {
        /// Where the value ends.
        at: usize,
        /// What was being read.
        what: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A message from a member that speaks another encoding version.
    #[error("message encoding version {found} is not {MESSAGE_VERSION}{hint}")]
    Version {
        /// The version byte read.
        found: u8,
        /// A hint at what sent it.
        hint: &'static str,
    },
}

/// Reads values from a byte slice, tracking the offset for errors.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, at: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.at).ok_or(DecodeError::Truncated { at: self.at, what })?;
        self.at += 1;
        Ok(b)
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let start = self.at;
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(DecodeError::Varint { at: start });
            }
            value |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Varint { at: start })
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        let at = self.at;
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::Tag { at, what, tag: u64::from(tag) }),
        }
    }

    /// A length that must not exceed the remaining input (every element takes at least a byte).
    fn len(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let at = self.at;
        let n = self.u64(what)?;
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() => Ok(n),
            _ => Err(DecodeError::Truncated { at, what }),
        }
    }

    fn slice(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.len(what)?;
        let out = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, DecodeError> {
        self.slice(what).map(<[u8]>::to_vec)
    }

    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let at = self.at;
        let raw = self.slice(what)?;
        String::from_utf8(raw.to_vec()).map_err(|e| DecodeError::Invalid { at, what, reason: e.to_string() })
    }

    fn tag(&mut self, what: &'static str) -> Result<(usize, u8), DecodeError> {
        let at = self.at;
        Ok((at, self.u8(what)?))
    }

    fn list<T: Decode>(&mut self, what: &'static str) -> Result<Vec<T>, DecodeError> {
        let n = self.len(what)?;
        let mut out = Vec::with_capacity(preallocate(n));
        for _ in 0..n {
            out.push(T::decode(self)?);
        }
        Ok(out)
    }

    fn option<T: Decode>(&mut self, what: &'static str) -> Result<Option<T>, DecodeError> {
        match self.tag(what)? {
            (_, 0) => Ok(None),
            (_, 1) => T::decode(self).map(Some),
            (at, tag) => Err(DecodeError::Tag { at, what, tag: u64::from(tag) }),
        }
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::Trailing { at: self.at, count }),
        }
    }
}

/// At most this many elements of a list are reserved before they are decoded.
const MAX_PREALLOCATED: usize = 1024;

/// How many elements to reserve for a list that claims `n`: a length is checked against the
/// bytes left, but one byte of input can stand for an element of a hundred bytes in memory, so a
/// crafted length could still reserve gigabytes. Longer lists grow as they decode.
fn preallocate(n: usize) -> usize {
    n.min(MAX_PREALLOCATED)
}

pub(crate) fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(u8::from(v));
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u64(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn put_list<T: Encode>(out: &mut Vec<u8>, items: &[T]) {
    put_u64(out, items.len() as u64);
    for item in items {
        item.encode(out);
    }
}

fn put_option<T: Encode>(out: &mut Vec<u8>, v: Option<&T>) {
    match v {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            v.encode(out);
        }
    }
}

/// A value with a binary encoding.
pub(crate) trait Encode {
    /// Appends the encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// About how many bytes the encoding takes (to reserve once for large values).
    fn size_hint(&self) -> usize {
        16
    }
}

/// A value that can be read back from its [`Encode`] encoding.
pub(crate) trait Decode: Sized {
    /// Reads one value.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

/// The encoding of `value` alone.
pub(crate) fn to_vec<T: Encode>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.size_hint());
    value.encode(&mut out);
    out
}

/// Decodes one value that must span all of `bytes`.
pub(crate) fn from_slice<T: Decode>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut r = Reader::new(bytes);
    let v = T::decode(&mut r)?;
    r.finish()?;
    Ok(v)
}

/// A message between members: [`MESSAGE_VERSION`], then the value.
pub(crate) fn message<T: Encode>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + value.size_hint());
    out.push(MESSAGE_VERSION);
    value.encode(&mut out);
    out
}

/// Reads a message written by [`message`].
pub(crate) fn from_message<T: Decode>(bytes: &[u8]) -> Result<T, DecodeError> {
    match bytes.first() {
        Some(&MESSAGE_VERSION) => from_slice(&bytes[1..]),
        Some(&found) => Err(DecodeError::Version {
            found,
            hint: if matches!(found, b'{' | b'[' | b'"') {
                " (JSON: the sender runs an older Shoal; upgrade every manager)"
            } else {
                ""
            },
        }),
        None => Err(DecodeError::Truncated { at: 0, what: "message version" }),
    }
}

impl Encode for u64 {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, *self);
    }
}

impl Decode for u64 {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.u64("integer")
    }
}

impl Encode for LeaderId<u64, NodeId> {
    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.term);
        put_u64(out, self.node_id);
    }
}

impl Decode for LeaderId<u64, NodeId> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(LeaderId { term: r.u64("leader term")?, node_id: r.u64("leader node id")? })
    }
}

impl Encode for LogId {
    fn encode(&self, out: &mut Vec<u8>) {
        self.leader_id.encode(out);
        put_u64(out, self.index);
    }
}

impl Decode for LogId {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let leader_id = LeaderId::decode(r)?;
        Ok(LogId::new(leader_id, r.u64("log index")?))
    }
}

impl Encode for Vote {
    fn encode(&self, out: &mut Vec<u8>) {
        self.leader_id.encode(out);
        put_bool(out, self.committed);
    }
}

impl Decode for Vote {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let leader_id = LeaderId::decode(r)?;
        let committed = r.bool("vote committed")?;
        let mut vote = Vote::new(leader_id.term, leader_id.node_id);
        vote.committed = committed;
        Ok(vote)
    }
}

impl Encode for Compare {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Compare::ModRevision { key, revision } => {
                out.push(0);
                put_bytes(out, key);
                put_u64(out, *revision);
            }
            Compare::Exists { key } => {
                out.push(1);
                put_bytes(out, key);
            }
            Compare::Missing { key } => {
                out.push(2);
                put_bytes(out, key);
            }
        }
    }
}

impl Decode for Compare {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.tag("compare")? {
            (_, 0) => Ok(Compare::ModRevision { key: r.bytes("compare key")?, revision: r.u64("compare revision")? }),
            (_, 1) => Ok(Compare::Exists { key: r.bytes("compare key")? }),
            (_, 2) => Ok(Compare::Missing { key: r.bytes("compare key")? }),
            (at, tag) => Err(DecodeError::Tag { at, what: "compare", tag: u64::from(tag) }),
        }
    }
}

impl Encode for Op {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::Put { key, value } => {
                out.push(0);
                put_bytes(out, key);
                put_bytes(out, value);
            }
            Op::Delete { key } => {
                out.push(1);
                put_bytes(out, key);
            }
        }
    }

    fn size_hint(&self) -> usize {
        match self {
            Op::Put { key, value } => 21 + key.len() + value.len(),
            Op::Delete { key } => 11 + key.len(),
        }
    }
}

impl Decode for Op {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.tag("op")? {
            (_, 0) => Ok(Op::Put { key: r.bytes("put key")?, value: r.bytes("put value")? }),
            (_, 1) => Ok(Op::Delete { key: r.bytes("delete key")? }),
            (at, tag) => Err(DecodeError::Tag { at, what: "op", tag: u64::from(tag) }),
        }
    }
}

impl Encode for Txn {
    fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.size_hint());
        put_list(out, &self.compares);
        put_list(out, &self.success);
        put_list(out, &self.failure);
    }

    fn size_hint(&self) -> usize {
        let ops = |ops: &[Op]| ops.iter().map(Encode::size_hint).sum::<usize>();
        30 + self.compares.len() * 32 + ops(&self.success) + ops(&self.failure)
    }
}

impl Decode for Txn {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Txn { compares: r.list("compares")?, success: r.list("success ops")?, failure: r.list("failure ops")? })
    }
}

impl Encode for Command {
    fn encode(&self, out: &mut Vec<u8>) {
        self.txn.encode(out);
    }

    fn size_hint(&self) -> usize {
        self.txn.size_hint()
    }
}

impl Decode for Command {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Command { txn: Txn::decode(r)? })
    }
}

impl Encode for Membership<NodeId, BasicNode> {
    fn encode(&self, out: &mut Vec<u8>) {
        let configs = self.get_joint_config();
        put_u64(out, configs.len() as u64);
        for config in configs {
            put_u64(out, config.len() as u64);
            for id in config {
                put_u64(out, *id);
            }
        }
        let nodes: Vec<(&NodeId, &BasicNode)> = self.nodes().collect();
        put_u64(out, nodes.len() as u64);
        for (id, node) in nodes {
            put_u64(out, *id);
            put_bytes(out, node.addr.as_bytes());
        }
    }
}

impl Decode for Membership<NodeId, BasicNode> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = r.len("membership configs")?;
        let mut configs = Vec::with_capacity(preallocate(n));
        for _ in 0..n {
            let ids: Vec<u64> = r.list("membership voters")?;
            configs.push(ids.into_iter().collect::<BTreeSet<NodeId>>());
        }
        let n = r.len("membership nodes")?;
        let mut nodes = BTreeMap::new();
        for _ in 0..n {
            let id = r.u64("member id")?;
            nodes.insert(id, BasicNode::new(r.string("member address")?));
        }
        let at = r.at;
        Membership::new(configs, nodes).map_err(|e| DecodeError::Invalid {
            at,
            what: "membership",
            reason: e.to_string(),
        })
    }
}

impl Encode for StoredMembership<LeaderId<u64, NodeId>, NodeId, BasicNode> {
    fn encode(&self, out: &mut Vec<u8>) {
        put_option(out, self.log_id().as_ref());
        self.membership().encode(out);
    }
}

impl Decode for StoredMembership<LeaderId<u64, NodeId>, NodeId, BasicNode> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let log_id = r.option("membership log id")?;
        Ok(StoredMembership::new(log_id, Membership::decode(r)?))
    }
}

impl Encode for SnapshotMeta {
    fn encode(&self, out: &mut Vec<u8>) {
        put_option(out, self.last_log_id.as_ref());
        self.last_membership.encode(out);
    }
}

impl Decode for SnapshotMeta {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SnapshotMeta {
            last_log_id: r.option("snapshot last log id")?,
            last_membership: StoredMembership::decode(r)?,
        })
    }
}

impl Encode for Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        self.log_id.encode(out);
        match &self.payload {
            EntryPayload::Blank => out.push(0),
            EntryPayload::Normal(cmd) => {
                out.push(1);
                cmd.encode(out);
            }
            EntryPayload::Membership(m) => {
                out.push(2);
                m.encode(out);
            }
        }
    }

    fn size_hint(&self) -> usize {
        match &self.payload {
            EntryPayload::Normal(cmd) => 24 + cmd.size_hint(),
            _ => 64,
        }
    }
}

impl Decode for Entry {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let log_id = LogId::decode(r)?;
        let payload = match r.tag("entry payload")? {
            (_, 0) => EntryPayload::Blank,
            (_, 1) => EntryPayload::Normal(Command::decode(r)?),
            (_, 2) => EntryPayload::Membership(Membership::decode(r)?),
            (at, tag) => return Err(DecodeError::Tag { at, what: "entry payload", tag: u64::from(tag) }),
        };
        Ok(Entry { log_id, payload })
    }
}

impl Encode for AppendEntriesRequest<TypeConfig> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.size_hint());
        self.vote.encode(out);
        put_option(out, self.prev_log_id.as_ref());
        put_list(out, &self.entries);
        put_option(out, self.leader_commit.as_ref());
    }

    fn size_hint(&self) -> usize {
        64 + self.entries.iter().map(Encode::size_hint).sum::<usize>()
    }
}

impl Decode for AppendEntriesRequest<TypeConfig> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(AppendEntriesRequest {
            vote: Vote::decode(r)?,
            prev_log_id: r.option("prev log id")?,
            entries: r.list("entries")?,
            leader_commit: r.option("leader commit")?,
        })
    }
}

impl Encode for AppendEntriesResponse<TypeConfig> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            AppendEntriesResponse::Success => out.push(0),
            AppendEntriesResponse::PartialSuccess(matched) => {
                out.push(1);
                put_option(out, matched.as_ref());
            }
            AppendEntriesResponse::Conflict => out.push(2),
            AppendEntriesResponse::HigherVote(vote) => {
                out.push(3);
                vote.encode(out);
            }
        }
    }
}

impl Decode for AppendEntriesResponse<TypeConfig> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.tag("append entries response")? {
            (_, 0) => Ok(AppendEntriesResponse::Success),
            (_, 1) => Ok(AppendEntriesResponse::PartialSuccess(r.option("matched log id")?)),
            (_, 2) => Ok(AppendEntriesResponse::Conflict),
            (_, 3) => Ok(AppendEntriesResponse::HigherVote(Vote::decode(r)?)),
            (at, tag) => Err(DecodeError::Tag { at, what: "append entries response", tag: u64::from(tag) }),
        }
    }
}

impl Encode for VoteRequest<TypeConfig> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.vote.encode(out);
        put_option(out, self.last_log_id.as_ref());
        put_bool(out, self.leadership_transfer);
    }
}

impl Decode for VoteRequest<TypeConfig> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let vote = Vote::decode(r)?;
        let last_log_id = r.option("last log id")?;
        let mut req = VoteRequest::new(vote, last_log_id);
        req.leadership_transfer = r.bool("leadership transfer")?;
        Ok(req)
    }
}

impl Encode for VoteResponse<TypeConfig> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.vote.encode(out);
        put_bool(out, self.vote_granted);
        put_option(out, self.last_log_id.as_ref());
    }
}

impl Decode for VoteResponse<TypeConfig> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let vote = Vote::decode(r)?;
        let granted = r.bool("vote granted")?;
        Ok(VoteResponse::new(vote, r.option("last log id")?, granted))
    }
}

impl Encode for TransferLeaderRequest<TypeConfig> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.from_leader().encode(out);
        put_u64(out, *self.to_node_id());
        put_option(out, self.last_log_id());
    }
}

impl Decode for TransferLeaderRequest<TypeConfig> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let from = Vote::decode(r)?;
        let to = r.u64("transfer target")?;
        Ok(TransferLeaderRequest::new(from, to, r.option("last log id")?))
    }
}

impl Encode for Result<(), TransferLeaderError<TypeConfig>> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Ok(()) => out.push(0),
            Err(TransferLeaderError::VoteChanged { expected, actual }) => {
                out.push(1);
                expected.encode(out);
                actual.encode(out);
            }
            Err(TransferLeaderError::LogNotFlushed { expected, actual }) => {
                out.push(2);
                put_option(out, expected.as_ref());
                put_option(out, actual.as_ref());
            }
        }
    }
}

impl Decode for Result<(), TransferLeaderError<TypeConfig>> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.tag("transfer leader response")? {
            (_, 0) => Ok(Ok(())),
            (_, 1) => {
                let expected = Vote::decode(r)?;
                Ok(Err(TransferLeaderError::VoteChanged { expected, actual: Vote::decode(r)? }))
            }
            (_, 2) => {
                let expected = r.option("expected log id")?;
                Ok(Err(TransferLeaderError::LogNotFlushed { expected, actual: r.option("flushed log id")? }))
            }
            (at, tag) => Err(DecodeError::Tag { at, what: "transfer leader response", tag: u64::from(tag) }),
        }
    }
}

impl Encode for SnapshotResponse<TypeConfig> {
    fn encode(&self, out: &mut Vec<u8>) {
        self.vote.encode(out);
    }
}

impl Decode for SnapshotResponse<TypeConfig> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SnapshotResponse::new(Vote::decode(r)?))
    }
}

impl Encode for TxnOutcome {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bool(out, self.succeeded);
        put_u64(out, self.revision);
        put_u64(out, self.deleted);
    }
}

impl Decode for TxnOutcome {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(TxnOutcome {
            succeeded: r.bool("outcome succeeded")?,
            revision: r.u64("outcome revision")?,
            deleted: r.u64("outcome deleted")?,
        })
    }
}

impl Encode for KeyValue {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, &self.key);
        put_bytes(out, &self.value);
        put_u64(out, self.create_revision);
        put_u64(out, self.mod_revision);
        put_u64(out, self.version);
    }

    fn size_hint(&self) -> usize {
        40 + self.key.len() + self.value.len()
    }
}

impl Decode for KeyValue {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(KeyValue {
            key: r.bytes("key")?,
            value: r.bytes("value")?,
            create_revision: r.u64("create revision")?,
            mod_revision: r.u64("mod revision")?,
            version: r.u64("version")?,
        })
    }
}

impl Encode for Option<NodeId> {
    fn encode(&self, out: &mut Vec<u8>) {
        put_option(out, self.as_ref());
    }
}

impl Decode for Option<NodeId> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.option("node id")
    }
}

impl Encode for String {
    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, self.as_bytes());
    }
}

impl Decode for String {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.string("text")
    }
}

/// Encodes a list of values (for types outside this module).
pub(crate) fn put_items<T: Encode>(out: &mut Vec<u8>, items: &[T]) {
    put_list(out, items);
}

/// Decodes a list written by [`put_items`].
pub(crate) fn get_items<T: Decode>(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<T>, DecodeError> {
    r.list(what)
}

/// Encodes one byte tag (for enums outside this module).
pub(crate) fn put_tag(out: &mut Vec<u8>, tag: u8) {
    out.push(tag);
}

/// Reads a one-byte tag, with its offset for an error.
pub(crate) fn get_tag(r: &mut Reader<'_>, what: &'static str) -> Result<(usize, u8), DecodeError> {
    r.tag(what)
}

/// Encodes a string (for types outside this module).
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// Reads a string written by [`put_str`].
pub(crate) fn get_string(r: &mut Reader<'_>, what: &'static str) -> Result<String, DecodeError> {
    r.string(what)
}

#[cfg(test)]
mod tests;

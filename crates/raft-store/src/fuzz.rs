//! Entry points for the fuzz tests (`tests/fuzz.rs`), hidden from the documentation and not part
//! of the API. The decoders of bytes that come from other members (messages) or from disk (log
//! records, segment files, snapshot files) are private to this crate, and a fuzz test has to call
//! them without a running store; this module is the narrowest door to them. Each decoder comes
//! with valid inputs written by this crate's own encoders, so that mutations start from real
//! bytes.
//!
//! Every `decode_*` returns the decoded value (`{:?}`) with its re-encoding, or the decoder's
//! error as text. It panics when the re-encoding does not decode to the same value or does not
//! encode to the same bytes again: a codec bug, which the fuzz test reports with the input.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt::Debug;

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

use crate::codec::Decode;
use crate::codec::Encode;
use crate::log_store;
use crate::network;
use crate::network::MessageKind;
use crate::state_machine;
use crate::state_machine::SnapshotBody;
use crate::store::ClusterStatus;
use crate::store::LeaderAnswer;
use crate::store::MemberStatus;
use crate::store::Reachability;
use crate::store::Role;
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

/// The index of the first record of every segment in [`log_segment_seeds`].
pub const SEGMENT_FIRST_INDEX: u64 = 1;

/// What a decoder made of its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The decoded value, `{:?}`-formatted.
    pub value: String,
    /// The value encoded again; for an input this crate's encoder wrote, the input itself.
    pub encoded: Vec<u8>,
}

/// A valid input of a decoder: bytes this crate's encoder wrote, and the value they hold.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The encoding.
    pub bytes: Vec<u8>,
    /// The value encoded, `{:?}`-formatted: what decoding the bytes must give back.
    pub value: String,
}

/// A valid message between members: which decoder reads it, and the seed.
#[derive(Debug, Clone)]
pub struct MessageSeed {
    /// The kind of message.
    pub kind: MessageKind,
    /// Whether it is the answer (read by the sender) rather than the request (read by
    /// [`crate::Store::handle`]).
    pub answer: bool,
    /// The bytes and the value.
    pub seed: Seed,
}

/// Decodes `bytes` as the message of `kind` that a member receives: the request
/// [`crate::Store::handle`] decodes (`answer == false`) or the answer the sender decodes
/// (`answer == true`).
pub fn decode_message(kind: MessageKind, answer: bool, bytes: &[u8]) -> Result<Decoded, String> {
    match (kind, answer) {
        (MessageKind::AppendEntries, false) => message::<AppendEntriesRequest<TypeConfig>>(bytes),
        (MessageKind::AppendEntries, true) => message::<AppendEntriesResponse<TypeConfig>>(bytes),
        (MessageKind::Vote | MessageKind::PreVote, false) => message::<VoteRequest<TypeConfig>>(bytes),
        (MessageKind::Vote | MessageKind::PreVote, true) => message::<VoteResponse<TypeConfig>>(bytes),
        (MessageKind::InstallSnapshot, false) => snapshot_message(bytes),
        (MessageKind::InstallSnapshot, true) => message::<SnapshotResponse<TypeConfig>>(bytes),
        (MessageKind::ForwardWrite, false) => message::<Txn>(bytes),
        (MessageKind::ForwardWrite, true) => message::<LeaderAnswer<TxnOutcome>>(bytes),
        // These requests carry nothing: the receiver does not read their bytes.
        (MessageKind::ReadIndex | MessageKind::Status, false) => {
            Ok(Decoded { value: String::new(), encoded: Vec::new() })
        }
        (MessageKind::ReadIndex, true) => message::<LeaderAnswer<u64>>(bytes),
        (MessageKind::Status, true) => message::<ClusterStatus>(bytes),
        (MessageKind::TransferLeader, false) => message::<TransferLeaderRequest<TypeConfig>>(bytes),
        (MessageKind::TransferLeader, true) => message::<Result<(), TransferLeaderError<TypeConfig>>>(bytes),
    }
}

/// Decodes `bytes` as the plain payload of one log record (an entry and the end mark), as a
/// member reads it from a segment once the record's checksum matched.
pub fn decode_log_record(bytes: &[u8]) -> Result<Decoded, String> {
    let entry = log_store::decode_record(bytes)?;
    Ok(settle(entry, record_bytes, log_store::decode_record))
}

/// Reads `bytes` as a whole plain (not encrypted) segment file whose first record has index
/// `first_index`, as a member does when it opens its log, without touching any file. With
/// `is_last` an incomplete record or zeros at the end are a torn tail to cut, not damage. The
/// value is the entries read and where a torn tail starts; `encoded` is the segment written again
/// from those entries.
pub fn decode_log_segment(bytes: &[u8], first_index: u64, is_last: bool) -> Result<Decoded, String> {
    let (entries, torn_at) = log_store::read_segment(bytes, first_index, is_last)?;
    let encoded = log_store::encode_segment(&entries);
    let (again, tail) = log_store::read_segment(&encoded, first_index, false)
        .unwrap_or_else(|e| panic!("the segment written again from {entries:?} does not read: {e}"));
    assert_eq!(tail, None, "the segment written again has a torn tail");
    assert_eq!(format!("{again:?}"), format!("{entries:?}"), "the segment written again holds other entries");
    Ok(Decoded { value: format!("{:?}", (&entries, torn_at)), encoded })
}

/// Reads `bytes` as a plain (not encrypted) snapshot file, its meta and its body, as a member does
/// when it opens, without touching any file.
pub fn decode_snapshot_file(bytes: &[u8]) -> Result<Decoded, String> {
    let value = state_machine::read_plain_snapshot_file(bytes)?;
    Ok(settle(
        value,
        |(meta, body)| state_machine::plain_snapshot_file(meta, body),
        state_machine::read_plain_snapshot_file,
    ))
}

/// Valid messages of every kind, requests and answers.
pub fn message_seeds() -> Vec<MessageSeed> {
    let mut seeds = Vec::new();
    let mut add = |kind: MessageKind, answer: bool, seed: Seed| seeds.push(MessageSeed { kind, answer, seed });
    add(
        MessageKind::AppendEntries,
        false,
        message_seed(&AppendEntriesRequest::<TypeConfig> {
            vote: committed_vote(3, 2),
            prev_log_id: Some(log_id(2, 9)),
            entries: entries(10),
            leader_commit: Some(log_id(2, 9)),
        }),
    );
    add(
        MessageKind::AppendEntries,
        false,
        message_seed(&AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new(1, 1),
            prev_log_id: None,
            entries: Vec::new(),
            leader_commit: None,
        }),
    );
    for response in [
        AppendEntriesResponse::<TypeConfig>::Success,
        AppendEntriesResponse::PartialSuccess(Some(log_id(3, 4))),
        AppendEntriesResponse::PartialSuccess(None),
        AppendEntriesResponse::Conflict,
        AppendEntriesResponse::HigherVote(Vote::new(9, 3)),
    ] {
        add(MessageKind::AppendEntries, true, message_seed(&response));
    }
    let mut transfer_vote = VoteRequest::<TypeConfig>::new(committed_vote(4, 1), Some(log_id(3, 7)));
    transfer_vote.leadership_transfer = true;
    for kind in [MessageKind::Vote, MessageKind::PreVote] {
        add(kind, false, message_seed(&VoteRequest::<TypeConfig>::new(Vote::new(4, 1), Some(log_id(3, 7)))));
        add(kind, false, message_seed(&transfer_vote));
        add(kind, true, message_seed(&VoteResponse::<TypeConfig>::new(committed_vote(4, 1), None, true)));
        add(kind, true, message_seed(&VoteResponse::<TypeConfig>::new(Vote::new(5, 2), Some(log_id(4, 2)), false)));
    }
    let snapshot = (committed_vote(5, 1), snapshot_meta(), snapshot_body().1);
    add(
        MessageKind::InstallSnapshot,
        false,
        Seed { bytes: network::encode_snapshot(&snapshot.0, &snapshot.1, &snapshot.2), value: format!("{snapshot:?}") },
    );
    add(MessageKind::InstallSnapshot, true, message_seed(&SnapshotResponse::<TypeConfig>::new(Vote::new(5, 1))));
    add(MessageKind::ForwardWrite, false, message_seed(&txn()));
    add(MessageKind::ForwardWrite, false, message_seed(&Txn::new()));
    for answer in [
        LeaderAnswer::Done(TxnOutcome { succeeded: true, revision: 1 << 40, deleted: 2 }),
        LeaderAnswer::NotLeader(Some(3)),
        LeaderAnswer::NotLeader(None),
        LeaderAnswer::Failed("no quorum".into()),
    ] {
        add(MessageKind::ForwardWrite, true, message_seed(&answer));
    }
    let empty = Seed { bytes: Vec::new(), value: String::new() };
    add(MessageKind::ReadIndex, false, empty.clone());
    add(MessageKind::ReadIndex, true, message_seed(&LeaderAnswer::Done(300u64)));
    add(MessageKind::ReadIndex, true, message_seed(&LeaderAnswer::<u64>::NotLeader(Some(2))));
    add(MessageKind::Status, false, empty);
    add(MessageKind::Status, true, message_seed(&cluster_status()));
    add(
        MessageKind::TransferLeader,
        false,
        message_seed(&TransferLeaderRequest::<TypeConfig>::new(committed_vote(6, 2), 3, Some(log_id(6, 40)))),
    );
    add(
        MessageKind::TransferLeader,
        false,
        message_seed(&TransferLeaderRequest::<TypeConfig>::new(Vote::new(6, 2), 3, None)),
    );
    for response in [
        Ok(()),
        Err(TransferLeaderError::<TypeConfig>::VoteChanged { expected: committed_vote(6, 2), actual: Vote::new(7, 3) }),
        Err(TransferLeaderError::LogNotFlushed { expected: Some(log_id(6, 40)), actual: None }),
    ] {
        add(MessageKind::TransferLeader, true, message_seed(&response));
    }
    seeds
}

/// Valid plain log record payloads: a blank entry, a membership change, transactions.
pub fn log_record_seeds() -> Vec<Seed> {
    let mut entries = entries(1);
    entries.push(Entry {
        log_id: LogId::new(leader(u64::MAX, u64::MAX), u64::MAX),
        payload: EntryPayload::Normal(Command { txn: Txn::new() }),
    });
    entries.iter().map(|entry| Seed { bytes: record_bytes(entry), value: format!("{entry:?}") }).collect()
}

/// Valid plain segment files whose first record has index [`SEGMENT_FIRST_INDEX`]: three
/// records, one record, and none (only the header).
pub fn log_segment_seeds() -> Vec<Seed> {
    let all = entries(SEGMENT_FIRST_INDEX);
    [&all[..], &all[..1], &all[..0]]
        .into_iter()
        .map(|entries| Seed {
            bytes: log_store::encode_segment(entries),
            value: format!("{:?}", (&entries.to_vec(), None::<usize>)),
        })
        .collect()
}

/// Valid plain snapshot files: a member's first (empty) snapshot and one with keys and a
/// membership.
pub fn snapshot_file_seeds() -> Vec<Seed> {
    let empty = (
        SnapshotMeta { last_log_id: None, last_membership: StoredMembership::default() },
        SnapshotBody { revision: 0, kvs: Vec::new() },
    );
    let (body, _) = snapshot_body();
    [empty, (snapshot_meta(), body)]
        .iter()
        .map(|(meta, body)| Seed {
            bytes: state_machine::plain_snapshot_file(meta, body),
            value: format!("{:?}", (meta, body)),
        })
        .collect()
}

/// `{:?}` of `value` with its re-encoding, once the re-encoding is checked to decode to the same
/// value and to encode to the same bytes again.
fn settle<T: Debug>(value: T, encode: impl Fn(&T) -> Vec<u8>, decode: impl Fn(&[u8]) -> Result<T, String>) -> Decoded {
    let encoded = encode(&value);
    let value = format!("{value:?}");
    let again = decode(&encoded).unwrap_or_else(|e| panic!("the re-encoding of {value} does not decode: {e}"));
    assert_eq!(format!("{again:?}"), value, "the re-encoding decodes to another value");
    assert_eq!(encode(&again), encoded, "encoding the value again gives other bytes");
    Decoded { value, encoded }
}

fn message<T: Encode + Decode + Debug>(bytes: &[u8]) -> Result<Decoded, String> {
    let value: T = network::decode(bytes).map_err(|e| e.to_string())?;
    Ok(settle(value, network::encode::<T>, |b| network::decode::<T>(b).map_err(|e| e.to_string())))
}

fn snapshot_message(bytes: &[u8]) -> Result<Decoded, String> {
    let value = network::decode_snapshot(bytes)?;
    Ok(settle(value, |(vote, meta, data)| network::encode_snapshot(vote, meta, data), network::decode_snapshot))
}

fn message_seed<T: Encode + Debug>(value: &T) -> Seed {
    Seed { bytes: network::encode(value), value: format!("{value:?}") }
}

fn record_bytes(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    log_store::encode_record(entry, &mut out);
    out
}

fn leader(term: u64, node_id: NodeId) -> LeaderId<u64, NodeId> {
    LeaderId { term, node_id }
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(leader(term, 2), index)
}

fn committed_vote(term: u64, node: NodeId) -> Vote {
    let mut vote = Vote::new(term, node);
    vote.committed = true;
    vote
}

fn membership() -> Membership<NodeId, BasicNode> {
    let nodes: BTreeMap<NodeId, BasicNode> =
        [(1, BasicNode::new("10.0.0.1:2377")), (2, BasicNode::new("10.0.0.2:2377")), (3, BasicNode::new("n3"))]
            .into_iter()
            .collect();
    Membership::new(vec![BTreeSet::from([1, 2]), BTreeSet::from([1, 2, 3])], nodes).expect("a valid membership")
}

fn txn() -> Txn {
    Txn::new()
        .when(Compare::mod_revision("/services/a", 300))
        .when(Compare::exists(vec![0u8, 255]))
        .when(Compare::missing(""))
        .and_then(Op::put("/services/a", vec![7u8; 40]))
        .and_then(Op::delete("/tasks/b"))
        .or_else(Op::put("", ""))
}

/// A blank entry, a membership change and a transaction, from index `first`.
fn entries(first: u64) -> Vec<Entry> {
    vec![
        Entry { log_id: log_id(1, first), payload: EntryPayload::Blank },
        Entry { log_id: log_id(1, first + 1), payload: EntryPayload::Membership(membership()) },
        Entry { log_id: log_id(2, first + 2), payload: EntryPayload::Normal(Command { txn: txn() }) },
    ]
}

fn snapshot_meta() -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(log_id(5, 100)),
        last_membership: StoredMembership::new(Some(log_id(1, 2)), membership()),
    }
}

/// A snapshot body and its encoding (what an install-snapshot message carries).
fn snapshot_body() -> (SnapshotBody, Vec<u8>) {
    let kv = |key: &str, value: &[u8], revision: u64| KeyValue {
        key: key.as_bytes().to_vec(),
        value: value.to_vec(),
        create_revision: revision,
        mod_revision: revision + 1,
        version: 2,
    };
    let body =
        SnapshotBody { revision: 42, kvs: vec![kv("/nodes/1", b"ready", 3), kv("/services/a", &[0, 255, 7], 9)] };
    let bytes = crate::codec::to_vec(&body);
    (body, bytes)
}

fn cluster_status() -> ClusterStatus {
    ClusterStatus {
        leader: Some(1),
        term: 7,
        members: vec![
            MemberStatus {
                id: 1,
                addr: "10.0.0.1:2377".into(),
                role: Role::Voter,
                reachability: Reachability::Reachable,
                matched_index: Some(42),
            },
            MemberStatus {
                id: 4,
                addr: "n4".into(),
                role: Role::Learner,
                reachability: Reachability::Unknown,
                matched_index: None,
            },
        ],
    }
}

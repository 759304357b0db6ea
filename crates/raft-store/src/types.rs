//! Data types of the key-value store: keys, values, revisions, transactions, watch events, and the
//! openraft type configuration that carries them.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

/// The identifier of a member of the replicated store; stable across restarts.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The openraft type configuration of the store: commands are transactions, responses are
    /// their outcomes, nodes carry a transport address.
    pub(crate) TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
);

/// The openraft handle specialised for this store.
pub(crate) type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachine>;
/// A Raft log entry of this store.
pub(crate) type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
/// A log id of this store.
pub(crate) type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// A vote of this store.
pub(crate) type Vote = <TypeConfig as openraft::RaftTypeConfig>::Vote;
/// Snapshot metadata of this store.
pub(crate) type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// The membership as stored in the log and in snapshots.
pub(crate) type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;

/// A key with its value and the revisions that describe its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    #[serde(with = "hexbytes")]
    pub key: Vec<u8>,
    /// The value.
    #[serde(with = "hexbytes")]
    pub value: Vec<u8>,
    /// The store revision at which the key was created (since its last deletion).
    pub create_revision: u64,
    /// The store revision of the last change to the key.
    pub mod_revision: u64,
    /// The number of changes since creation: 1 after the first put.
    pub version: u64,
}

/// What a [`Compare`] checks about a key before a transaction applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compare {
    /// The key's mod revision equals the given revision; 0 means the key does not exist.
    ModRevision {
        /// The key to check.
        #[serde(with = "hexbytes")]
        key: Vec<u8>,
        /// The expected mod revision.
        revision: u64,
    },
    /// The key exists.
    Exists {
        /// The key to check.
        #[serde(with = "hexbytes")]
        key: Vec<u8>,
    },
    /// The key does not exist.
    Missing {
        /// The key to check.
        #[serde(with = "hexbytes")]
        key: Vec<u8>,
    },
}

impl Compare {
    /// The key's mod revision must equal `revision` (0: the key must not exist).
    pub fn mod_revision(key: impl Into<Vec<u8>>, revision: u64) -> Self {
        Self::ModRevision { key: key.into(), revision }
    }

    /// The key must exist.
    pub fn exists(key: impl Into<Vec<u8>>) -> Self {
        Self::Exists { key: key.into() }
    }

    /// The key must not exist.
    pub fn missing(key: impl Into<Vec<u8>>) -> Self {
        Self::Missing { key: key.into() }
    }
}

/// One write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Set a key to a value.
    Put {
        /// The key.
        #[serde(with = "hexbytes")]
        key: Vec<u8>,
        /// The value.
        #[serde(with = "hexbytes")]
        value: Vec<u8>,
    },
    /// Remove a key (nothing happens when it does not exist).
    Delete {
        /// The key.
        #[serde(with = "hexbytes")]
        key: Vec<u8>,
    },
}

impl Op {
    /// A put of `value` under `key`.
    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self::Put { key: key.into(), value: value.into() }
    }

    /// A delete of `key`.
    pub fn delete(key: impl Into<Vec<u8>>) -> Self {
        Self::Delete { key: key.into() }
    }
}

/// An atomic transaction: when every compare holds, the `success` ops apply, otherwise the
/// `failure` ops; all ops of one transaction share one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    /// Conditions that must all hold.
    pub compares: Vec<Compare>,
    /// Ops applied when all compares hold.
    pub success: Vec<Op>,
    /// Ops applied when a compare fails.
    pub failure: Vec<Op>,
}

impl Txn {
    /// An empty transaction (no compares, no ops).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a condition.
    pub fn when(mut self, compare: Compare) -> Self {
        self.compares.push(compare);
        self
    }

    /// Adds an op applied when all conditions hold.
    pub fn and_then(mut self, op: Op) -> Self {
        self.success.push(op);
        self
    }

    /// Adds an op applied when a condition fails.
    pub fn or_else(mut self, op: Op) -> Self {
        self.failure.push(op);
        self
    }
}

/// The result of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOutcome {
    /// Whether the compares held (always true for plain puts and deletes).
    pub succeeded: bool,
    /// The store revision after the write; unchanged when nothing was modified.
    pub revision: u64,
    /// How many keys the applied ops deleted.
    pub deleted: u64,
}

/// The result of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResult {
    /// The matching keys in key order.
    pub kvs: Vec<KeyValue>,
    /// The store revision at which the read was served.
    pub revision: u64,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// The key was created or updated.
    Put,
    /// The key was deleted.
    Delete,
}

/// One change seen by a watch, in revision order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change; for a delete, the value is empty and `mod_revision` is the
    /// revision of the delete.
    pub kv: KeyValue,
}

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Linearizable: the leader confirms its leadership with a quorum (read index) and this member
    /// waits until it has applied up to that point.
    #[default]
    Linearizable,
    /// Whatever this member has applied, without contacting anyone; may be behind.
    Stale,
}

/// The replicated command: one transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Command {
    /// The transaction to apply.
    pub(crate) txn: Txn,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "txn(compares={}, success={}, failure={})",
            self.txn.compares.len(),
            self.txn.success.len(),
            self.txn.failure.len()
        )
    }
}

/// The state machine's answer to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CommandResult {
    pub(crate) outcome: TxnOutcome,
}

/// Serialises byte strings as lower-case hex in JSON (far denser than an array of numbers).
pub(crate) mod hexbytes {
    use serde::Deserialize;
    use serde::Deserializer;
    use serde::Serializer;

    const DIGITS: &[u8; 16] = b"0123456789abcdef";

    pub(crate) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
        s.serialize_str(&out)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: std::borrow::Cow<'de, str> = Deserialize::deserialize(d)?;
        decode(&text).ok_or_else(|| serde::de::Error::custom("invalid hex byte string"))
    }

    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }

    pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
        let raw = text.as_bytes();
        if !raw.len().is_multiple_of(2) {
            return None;
        }
        raw.chunks_exact(2).map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?)).collect()
    }
}

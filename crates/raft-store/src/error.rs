//! Error types, one per operation.

use std::io;
use std::path::PathBuf;

use crate::types::NodeId;

/// What to do about a damaged log, snapshot or meta file.
pub(crate) const CORRUPT_HINT: &str = "if other members hold the data, remove this member's data directory \
    and add the member to the cluster again, which copies the state from the leader";

/// Names the leader in a "not the leader" error, or says why there is none.
fn leader_hint(leader: &Option<NodeId>) -> String {
    match leader {
        Some(id) => format!("leader is node {id}"),
        None => "no leader yet (an election is in progress); retry shortly".into(),
    }
}

/// Opening a store failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A file or directory could not be read or written.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A log segment, snapshot or meta file is damaged in a way that is not a torn last write.
    #[error("corrupt data in {path} at offset {offset}: {reason}; {hint}", hint = CORRUPT_HINT)]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A log segment or snapshot was written in an on-disk format this version does not read
    /// (format 1 is the JSON records of earlier versions).
    #[error("{path} is in on-disk format {found}; this version reads format {supported} only: {hint}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The format version found in its header.
        found: u8,
        /// The format version this build reads and writes.
        supported: u8,
        /// What to do about it.
        hint: &'static str,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// openraft refused to start.
    #[error("raft failed to start on node {node}: {reason}")]
    Raft {
        /// This member.
        node: NodeId,
        /// openraft's reason.
        reason: String,
    },
}

/// A put, delete or transaction failed.
///
/// [`WriteError::NotLeader`] and [`WriteError::LeaderUnreachable`] guarantee that the write was
/// not applied; after the others it may or may not be applied (retry only what is idempotent or
/// guarded by a compare).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// This member is not the leader and could not hand the write to one: the leader is unknown
    /// (election in progress), or the member it forwarded to was no longer leader. Not applied.
    #[error("not the leader; {}", leader_hint(.leader))]
    NotLeader {
        /// The leader this member knows of, if any.
        leader: Option<NodeId>,
    },
    /// The leader could not be reached to forward the write to it. Not applied.
    #[error("leader {leader} is unreachable: {reason}")]
    LeaderUnreachable {
        /// The leader the write was meant for.
        leader: NodeId,
        /// The transport's error.
        reason: String,
    },
    /// The write was forwarded to the leader but no answer came back; it may or may not have
    /// been applied.
    #[error("forwarding to leader {leader} failed: {reason}")]
    Forward {
        /// The leader the write was sent to.
        leader: NodeId,
        /// The transport's error.
        reason: String,
    },
    /// The leader lost its quorum or stepped down before the write committed; it may or may not
    /// be applied later.
    #[error("write not confirmed on node {node}: {reason}")]
    Unconfirmed {
        /// The member that accepted the write.
        node: NodeId,
        /// Why it could not confirm.
        reason: String,
    },
    /// The store is shut down or stopped after a storage failure.
    #[error("store on node {node} is stopped: {reason}")]
    Stopped {
        /// This member.
        node: NodeId,
        /// Why.
        reason: String,
    },
}

/// A read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No leader is known, or the leader could not confirm its leadership with a quorum.
    #[error("no leader could confirm a linearizable read ({}): {reason}", leader_hint(.leader))]
    NoQuorum {
        /// The leader this member knows of, if any.
        leader: Option<NodeId>,
        /// Why.
        reason: String,
    },
    /// This member did not catch up with the read index in time.
    #[error("node {node} did not apply up to index {index} in time")]
    Timeout {
        /// This member.
        node: NodeId,
        /// The read index it waited for.
        index: u64,
    },
    /// The store is shut down.
    #[error("store on node {node} is stopped: {reason}")]
    Stopped {
        /// This member.
        node: NodeId,
        /// Why.
        reason: String,
    },
}

/// A watch could not start or had to end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchError {
    /// The requested start revision is older than the history this member keeps (compacted, or
    /// replaced by an installed snapshot); re-read with `range` and watch from `oldest`.
    #[error("revision {requested} is compacted; the oldest revision available is {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: u64,
        /// The oldest revision that can be watched from.
        oldest: u64,
    },
    /// The store is shut down.
    #[error("store on node {node} is stopped")]
    Stopped {
        /// This member.
        node: NodeId,
    },
}

/// A membership change failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Membership changes run on the leader; this member is not it.
    #[error("not the leader (membership changes run on the leader); {}", leader_hint(.leader))]
    NotLeader {
        /// The leader this member knows of, if any.
        leader: Option<NodeId>,
    },
    /// The cluster was already bootstrapped (or this member already has a log).
    #[error("node {node} is already initialized")]
    AlreadyInitialized {
        /// This member.
        node: NodeId,
    },
    /// openraft refused the change (unknown learner, change in progress, empty membership...).
    #[error("membership change refused on node {node}: {reason}")]
    Refused {
        /// This member.
        node: NodeId,
        /// openraft's reason.
        reason: String,
    },
    /// The store is shut down.
    #[error("store on node {node} is stopped: {reason}")]
    Stopped {
        /// This member.
        node: NodeId,
        /// Why.
        reason: String,
    },
}

/// A transport could not deliver a message or get its answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The message was not delivered: the target is down, partitioned away, or refused the
    /// connection. Transports must only use this when the target cannot have received it.
    #[error("node {target} at {addr} is unreachable: {reason}")]
    Unreachable {
        /// The target member.
        target: NodeId,
        /// Its address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The message may have been delivered, but no answer arrived (timeout, connection lost).
    #[error("no answer from node {target}: {reason}")]
    NoAnswer {
        /// The target member.
        target: NodeId,
        /// Why.
        reason: String,
    },
    /// The target answered with an error.
    #[error("node {target} failed the request: {reason}")]
    Remote {
        /// The target member.
        target: NodeId,
        /// Its error.
        reason: String,
    },
}

/// An incoming message from a transport could not be handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    /// The payload does not decode.
    #[error("malformed {kind} message: {reason}")]
    Malformed {
        /// The message kind.
        kind: &'static str,
        /// The decoder's error.
        reason: String,
    },
    /// The local Raft node failed the request.
    #[error("node {node} failed the {kind} request: {reason}")]
    Failed {
        /// This member.
        node: NodeId,
        /// The message kind.
        kind: &'static str,
        /// Why.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_leader_names_the_leader_or_says_an_election_is_on() {
        assert_eq!(WriteError::NotLeader { leader: Some(3) }.to_string(), "not the leader; leader is node 3");
        assert_eq!(
            WriteError::NotLeader { leader: None }.to_string(),
            "not the leader; no leader yet (an election is in progress); retry shortly"
        );
        let text = MembershipError::NotLeader { leader: Some(2) }.to_string();
        assert!(text.ends_with("leader is node 2") && !text.contains("Some"), "{text}");
        let text = ReadError::NoQuorum { leader: None, reason: "read index timed out".into() }.to_string();
        assert!(text.contains("no leader yet") && !text.contains("None"), "{text}");
    }

    #[test]
    fn corrupt_says_what_to_do() {
        let e =
            OpenError::Corrupt { path: "/d/log/1.log".into(), offset: 8, reason: "record checksum mismatch".into() };
        let text = e.to_string();
        assert!(text.starts_with("corrupt data in /d/log/1.log at offset 8: record checksum mismatch; "), "{text}");
        assert!(text.contains("remove this member's data directory and add the member to the cluster again"), "{text}");
    }
}

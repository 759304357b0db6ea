//! The [`Store`] handle: one per member; reads, writes, watches, membership, and the entry point
//! for messages from other members.
//!
//! Follower writes are **forwarded** to the leader over the same [`Transport`] (one hop: the
//! leader applies it or answers `NotLeader`; it never forwards again). A caller therefore gets
//! [`WriteError::NotLeader`] only when no leader is known (an election is in progress) or the
//! member it forwarded to had just lost leadership; retrying after a short pause is correct
//! for puts and for transactions guarded by a compare. Membership changes are not forwarded: they
//! run on the leader and answer [`MembershipError::NotLeader`] elsewhere.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use openraft::ChangeMembers;
use openraft::Instant as _;
use openraft::ReadPolicy;
use openraft::ServerState;
use openraft::SnapshotPolicy;
use openraft::async_runtime::WatchReceiver as _;
use openraft::errors::ChangeMembershipError;
use openraft::errors::ClientWriteError;
use openraft::errors::InitializeError;
use openraft::errors::LinearizableReadError;
use openraft::errors::RaftError;
use openraft::raft::TransferLeaderRequest;
use serde::Deserialize;
use serde::Serialize;

use crate::codec;
use crate::codec::Decode;
use crate::codec::DecodeError;
use crate::codec::Encode;
use crate::codec::Reader;
use crate::crypto::EncryptionKey;
use crate::crypto::Sealer;
use crate::error::HandleError;
use crate::error::MembershipError;
use crate::error::OpenError;
use crate::error::ReadError;
use crate::error::TransportError;
use crate::error::WatchError;
use crate::error::WriteError;
use crate::log_store::LogOptions;
use crate::log_store::LogStore;
use crate::network::MessageKind;
use crate::network::NetworkFactory;
use crate::network::Transport;
use crate::network::decode;
use crate::network::decode_snapshot;
use crate::network::encode;
use crate::state_machine::StateMachine;
use crate::state_machine::WatchStream;
use crate::types::Command;
use crate::types::Consistency;
use crate::types::KeyValue;
use crate::types::NodeId;
use crate::types::Op;
use crate::types::Raft;
use crate::types::RangeResult;
use crate::types::Txn;
use crate::types::TxnOutcome;

/// How a member stores data and paces Raft.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// This member's id; stable across restarts.
    pub node_id: NodeId,
    /// The address other members reach this one at (as the transport understands it).
    pub addr: String,
    /// The directory for the log (`log/`) and snapshots (`snapshot/`).
    pub data_dir: PathBuf,
    /// Build a snapshot and compact the log after this many entries (default 10,000); changed
    /// while the store runs with [`Store::set_snapshot_interval`].
    pub snapshot_after_entries: u64,
    /// Entries kept in the log behind a snapshot, so slightly lagging members catch up from the
    /// log instead of a snapshot (default 1,000).
    pub keep_entries_after_snapshot: u64,
    /// Leader heartbeat period (default 100 ms).
    pub heartbeat_interval: Duration,
    /// Election timeout range (default 400–800 ms): a follower that hears nothing from a leader
    /// for a random time in this range starts an election.
    pub election_timeout: (Duration, Duration),
    /// How long a write or linearizable read may wait before it fails (default 5 s).
    pub request_timeout: Duration,
    /// Encrypt log records and snapshots at rest with this key.
    pub encryption_key: Option<EncryptionKey>,
    /// fsync appended entries before acknowledging them (default true; turn off only to measure).
    pub fsync: bool,
    /// Start a new log segment file after this many bytes (default 64 MiB).
    pub segment_bytes: u64,
    /// How many recent events are kept for watches that start in the past (default 10,000).
    pub watch_history: usize,
    /// After each log write, how long the log's writer thread polls for the next one before it
    /// sleeps (default 2 ms; zero turns polling off). On virtual machines whose idle vCPUs halt,
    /// waking a sleeping thread can take milliseconds, and that was most of the 1-client p99.
    /// Polling yields to every runnable thread, so it costs CPU time that would otherwise be
    /// idle, and only while writes arrive closer together than this.
    pub log_writer_spin: Duration,
    /// Quorum recovery only (default false): every entry this member's log holds counts as
    /// committed when it opens, so its state machine applies all of them. The committed point
    /// a member keeps on disk is a lower bound (written lazily); a member that will never hear
    /// from its group again reads its whole state this way, then is bootstrapped anew.
    pub recover_whole_log: bool,
}

impl StoreConfig {
    /// A configuration with defaults for member `node_id` reachable at `addr`, storing under
    /// `data_dir`.
    pub fn new(node_id: NodeId, addr: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            node_id,
            addr: addr.into(),
            data_dir: data_dir.into(),
            snapshot_after_entries: 10_000,
            keep_entries_after_snapshot: 1_000,
            heartbeat_interval: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(400), Duration::from_millis(800)),
            request_timeout: Duration::from_secs(5),
            encryption_key: None,
            fsync: true,
            segment_bytes: 64 << 20,
            watch_history: 10_000,
            recover_whole_log: false,
            log_writer_spin: Duration::from_millis(2),
        }
    }
}

/// Whether a member votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Counts towards the quorum.
    Voter,
    /// Receives the log but does not vote (a member catching up before promotion).
    Learner,
}

/// Whether the leader currently hears from a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reachability {
    /// Acknowledged the leader within the election timeout.
    Reachable,
    /// Silent for longer than the election timeout.
    Unreachable,
    /// No leader could be asked.
    Unknown,
}

/// One member as seen by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The member's id.
    pub id: NodeId,
    /// Its transport address.
    pub addr: String,
    /// Voter or learner.
    pub role: Role,
    /// Whether the leader hears from it.
    pub reachability: Reachability,
    /// The highest log index known to be replicated to it.
    pub matched_index: Option<u64>,
}

/// The cluster as this member (or, when it can ask, the leader) sees it: for `node ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The current leader, if known.
    pub leader: Option<NodeId>,
    /// The current Raft term.
    pub term: u64,
    /// Every member, in id order.
    pub members: Vec<MemberStatus>,
}

/// This member's Raft and state machine figures, read without I/O (for metrics endpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreMetrics {
    /// The current Raft term.
    pub term: u64,
    /// The current leader, if known.
    pub leader: Option<NodeId>,
    /// Whether this member leads.
    pub is_leader: bool,
    /// The last log index appended here (0: none).
    pub last_log_index: u64,
    /// The last log index this member knows to be committed (0: none).
    pub committed_index: u64,
    /// The last log index applied to this member's state machine (0: none).
    pub applied_index: u64,
    /// The log index the last snapshot covers (0: none).
    pub snapshot_index: u64,
    /// How many keys the applied state holds.
    pub keys: u64,
    /// The store revision this member has applied.
    pub revision: u64,
}

/// Called with how long each write ([`Store::txn`]) took, and whether it succeeded.
pub type WriteObserver = Box<dyn Fn(Duration, bool) + Send + Sync>;

/// A leader's answer to a request another member sent it (a forwarded write, a read index).
#[derive(Debug)]
pub(crate) enum LeaderAnswer<T> {
    /// Done: the outcome of the write, or the read index.
    Done(T),
    /// The member asked is not the leader; it knows this one, if any.
    NotLeader(Option<NodeId>),
    /// The leader failed the request.
    Failed(String),
}

impl<T: Encode> Encode for LeaderAnswer<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            LeaderAnswer::Done(value) => {
                codec::put_tag(out, 0);
                value.encode(out);
            }
            LeaderAnswer::NotLeader(l) => {
                codec::put_tag(out, 1);
                l.encode(out);
            }
            LeaderAnswer::Failed(reason) => {
                codec::put_tag(out, 2);
                codec::put_str(out, reason);
            }
        }
    }
}

impl<T: Decode> Decode for LeaderAnswer<T> {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match codec::get_tag(r, "leader answer")? {
            (_, 0) => Ok(LeaderAnswer::Done(T::decode(r)?)),
            (_, 1) => Ok(LeaderAnswer::NotLeader(Option::decode(r)?)),
            (_, 2) => Ok(LeaderAnswer::Failed(codec::get_string(r, "leader failure")?)),
            (at, tag) => Err(DecodeError::Tag { at, what: "leader answer", tag: u64::from(tag) }),
        }
    }
}

/// Asking the leader got no answer (see [`Store::ask_leader`]).
#[derive(Debug, thiserror::Error)]
enum AskError {
    /// The leader is not in this member's membership view.
    #[error("address of leader {0} unknown")]
    NoAddress(NodeId),
    /// The transport failed.
    #[error("{0}")]
    Transport(TransportError),
    /// No answer came within the request timeout.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// The answer does not decode.
    #[error("undecodable answer: {0}")]
    Undecodable(DecodeError),
}

impl Encode for MemberStatus {
    fn encode(&self, out: &mut Vec<u8>) {
        self.id.encode(out);
        codec::put_str(out, &self.addr);
        codec::put_tag(out, matches!(self.role, Role::Learner).into());
        codec::put_tag(
            out,
            match self.reachability {
                Reachability::Reachable => 0,
                Reachability::Unreachable => 1,
                Reachability::Unknown => 2,
            },
        );
        self.matched_index.encode(out);
    }
}

impl Decode for MemberStatus {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = u64::decode(r)?;
        let addr = codec::get_string(r, "member address")?;
        let role = match codec::get_tag(r, "member role")? {
            (_, 0) => Role::Voter,
            (_, 1) => Role::Learner,
            (at, tag) => return Err(DecodeError::Tag { at, what: "member role", tag: u64::from(tag) }),
        };
        let reachability = match codec::get_tag(r, "member reachability")? {
            (_, 0) => Reachability::Reachable,
            (_, 1) => Reachability::Unreachable,
            (_, 2) => Reachability::Unknown,
            (at, tag) => return Err(DecodeError::Tag { at, what: "member reachability", tag: u64::from(tag) }),
        };
        Ok(MemberStatus { id, addr, role, reachability, matched_index: Option::decode(r)? })
    }
}

impl Encode for ClusterStatus {
    fn encode(&self, out: &mut Vec<u8>) {
        self.leader.encode(out);
        self.term.encode(out);
        codec::put_items(out, &self.members);
    }
}

impl Decode for ClusterStatus {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(ClusterStatus {
            leader: Option::decode(r)?,
            term: u64::decode(r)?,
            members: codec::get_items(r, "members")?,
        })
    }
}

/// A handle on one member of the replicated store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    addr: String,
    raft: Raft,
    sm: StateMachine,
    log: LogStore,
    transport: Arc<dyn Transport>,
    request_timeout: Duration,
    election_timeout_max: Duration,
    /// When [`Store::transfer_leadership`] was last called: for three election timeouts after
    /// it, writes here that find no leader wait for the successor rather than fail. Writes
    /// proposed as leader hold it for reading, so a transfer starts once they are done.
    handed_over_at: tokio::sync::RwLock<Option<tokio::time::Instant>>,
    /// Told how long each write took (see [`Store::observe_writes`]).
    write_observer: std::sync::OnceLock<WriteObserver>,
    /// Entries applied between two snapshots (see [`Store::set_snapshot_interval`]).
    snapshot_interval: Arc<std::sync::atomic::AtomicU64>,
}

/// Triggers a snapshot whenever `interval` entries were applied since the last one (or since
/// the last trigger, while that snapshot is being built); ends when Raft shuts down.
async fn snapshotter(raft: Raft, interval: Arc<std::sync::atomic::AtomicU64>) {
    let mut metrics = raft.metrics();
    let mut last_tried = 0u64;
    loop {
        let (applied, snapshot) = {
            let m = metrics.borrow_watched();
            (m.last_applied.as_ref().map_or(0, |l| l.index), m.snapshot.as_ref().map_or(0, |l| l.index))
        };
        let every = interval.load(std::sync::atomic::Ordering::Relaxed).max(1);
        if applied.saturating_sub(snapshot.max(last_tried)) >= every {
            last_tried = applied;
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: stop Raft's tasks rather than leave them running unowned.
        // (`Store::shutdown` does this and waits; here nothing can wait.)
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let raft = self.raft.clone();
            rt.spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("id", &self.inner.id).field("addr", &self.inner.addr).finish()
    }
}

/// A handle that does not keep the member alive (held by in-process routers).
#[derive(Clone)]
pub(crate) struct WeakStore(std::sync::Weak<Inner>);

impl WeakStore {
    pub(crate) fn upgrade(&self) -> Option<Store> {
        self.0.upgrade().map(|inner| Store { inner })
    }
}

fn write_stopped<E: std::fmt::Display>(node: NodeId, e: E) -> WriteError {
    WriteError::Stopped { node, reason: e.to_string() }
}

impl Store {
    /// Opens the member's data (or creates it) and starts Raft. A member with no log waits to be
    /// bootstrapped ([`Store::bootstrap`]) or added by a leader ([`Store::add_learner`]).
    ///
    /// After a restart the member serves its last snapshot plus the entries it knows were
    /// committed; [`Consistency::Stale`] reads may lag until the leader's next commit reaches it,
    /// linearizable reads wait for it. A damaged log or snapshot fails with
    /// [`OpenError::Corrupt`] naming the file and offset; a record torn by a crash at the end of
    /// the log is cut off (with a warning).
    pub async fn open(config: StoreConfig, transport: Arc<dyn Transport>) -> Result<Self, OpenError> {
        let id = config.node_id;
        let (emin, emax) = config.election_timeout;
        if emin.is_zero() || emax <= emin || config.heartbeat_interval >= emin {
            return Err(OpenError::Config(format!(
                "election timeout {emin:?}..{emax:?} must be a non-empty range above the heartbeat interval {:?}",
                config.heartbeat_interval
            )));
        }
        let sealer =
            Arc::new(Sealer::new(config.encryption_key.as_ref()).map_err(|e| OpenError::Config(e.to_string()))?);
        let log = LogStore::open(
            LogOptions {
                dir: config.data_dir.join("log"),
                segment_bytes: config.segment_bytes,
                fsync: config.fsync,
                spin: config.log_writer_spin,
                disk_full_after: None,
                whole_log_committed: config.recover_whole_log,
            },
            sealer.clone(),
        )?;
        let sm = StateMachine::open(id, config.data_dir.join("snapshot"), sealer, config.watch_history)?;
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let raft_config = openraft::Config {
            cluster_name: "shoal".into(),
            heartbeat_interval: millis(config.heartbeat_interval),
            election_timeout_min: millis(emin),
            election_timeout_max: millis(emax),
            install_snapshot_timeout: millis(config.request_timeout).max(1000),
            // Snapshots are triggered by this store (`snapshotter`), so the interval can change
            // while it runs (`shoal cluster update --snapshot-interval`).
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: config.keep_entries_after_snapshot,
            // The committed log id is persisted lazily, so a restarted leader must win an election
            // (and commit a new-term entry) before it serves reads.
            enable_leader_restore: Some(false),
            ..Default::default()
        }
        .validate()
        .map_err(|e| OpenError::Config(e.to_string()))?;
        let network = NetworkFactory { node: id, transport: transport.clone(), min_ttl: emin / 2 };
        let raft = Raft::new(id, Arc::new(raft_config), network, log.clone(), sm.clone())
            .await
            .map_err(|e| OpenError::Raft { node: id, reason: e.to_string() })?;
        tracing::info!(node.id = id, node.addr = %config.addr, "raft store opened");
        let snapshot_interval = Arc::new(std::sync::atomic::AtomicU64::new(config.snapshot_after_entries.max(1)));
        tokio::spawn(snapshotter(raft.clone(), snapshot_interval.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                id,
                addr: config.addr,
                raft,
                sm,
                log,
                transport,
                request_timeout: config.request_timeout,
                election_timeout_max: emax,
                handed_over_at: tokio::sync::RwLock::new(None),
                write_observer: std::sync::OnceLock::new(),
                snapshot_interval,
            }),
        })
    }

    /// Builds a snapshot (and compacts the log) once this many entries were applied since the
    /// last one, from now on (at least 1).
    pub fn set_snapshot_interval(&self, entries: u64) {
        let entries = entries.max(1);
        let before = self.inner.snapshot_interval.swap(entries, std::sync::atomic::Ordering::Relaxed);
        if before != entries {
            tracing::info!(node.id = self.inner.id, entries, "raft snapshot interval set");
        }
    }

    /// The entries applied between two snapshots.
    pub fn snapshot_interval(&self) -> u64 {
        self.inner.snapshot_interval.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn downgrade(&self) -> WeakStore {
        WeakStore(Arc::downgrade(&self.inner))
    }

    /// This member's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// This member's transport address.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Makes this member a one-member cluster (its own leader). Only for the first member of a
    /// new cluster; others join through [`Store::add_learner`] on the leader.
    pub async fn bootstrap(&self) -> Result<(), MembershipError> {
        let id = self.inner.id;
        let members = BTreeMap::from([(id, BasicNode::new(self.inner.addr.clone()))]);
        match self.inner.raft.initialize(members).await {
            Ok(()) => {
                // Return once this member leads and its first membership is committed, so the
                // next membership change is not refused as "in progress".
                let waited = self
                    .inner
                    .raft
                    .wait(Some(self.inner.request_timeout))
                    .metrics(
                        |m| {
                            m.state == ServerState::Leader
                                && m.last_applied.is_some()
                                && m.last_applied.as_ref().map(|l| l.index)
                                    >= m.membership_config.log_id().as_ref().map(|l| l.index)
                        },
                        "bootstrap",
                    )
                    .await;
                waited.map(|_| ()).map_err(|e| MembershipError::Refused { node: id, reason: e.to_string() })
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                Err(MembershipError::AlreadyInitialized { node: id })
            }
            Err(RaftError::APIError(e)) => Err(MembershipError::Refused { node: id, reason: e.to_string() }),
            Err(RaftError::Fatal(e)) => Err(MembershipError::Stopped { node: id, reason: e.to_string() }),
        }
    }

    /// The leader this member knows of.
    pub fn leader(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow_watched().current_leader
    }

    /// Whether this member is the leader right now (it may lose leadership at any time).
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    /// Waits until this member knows a leader, up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        let mut rx = self.inner.raft.metrics();
        let wait = async {
            loop {
                if let Some(l) = rx.borrow_and_update().current_leader {
                    return Some(l);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// The store revision this member has applied.
    pub fn revision(&self) -> u64 {
        self.inner.sm.revision()
    }

    /// Sets `key` to `value`.
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<TxnOutcome, WriteError> {
        self.txn(Txn::new().and_then(Op::put(key, value))).await
    }

    /// Deletes `key`; `deleted` in the outcome says whether it existed.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<TxnOutcome, WriteError> {
        self.txn(Txn::new().and_then(Op::delete(key))).await
    }

    /// Applies a transaction atomically; forwarded to the leader from a follower.
    ///
    /// The transaction is moved into the proposal, never copied: on the leader it is proposed as
    /// it is; elsewhere its encoding for the leader is made first, then it is offered to the
    /// local Raft (which may know of a leadership change its metrics do not show yet).
    ///
    /// While this leader hands leadership over ([`Store::transfer_leadership`]) its writes go to
    /// the successor, waiting for it to win its election if need be.
    pub async fn txn(&self, txn: Txn) -> Result<TxnOutcome, WriteError> {
        let Some(observer) = self.inner.write_observer.get() else {
            return self.propose(txn).await;
        };
        let started = std::time::Instant::now();
        let result = self.propose(txn).await;
        observer(started.elapsed(), result.is_ok());
        result
    }

    /// Has `observer` told how long each later write took, from the call to its outcome
    /// (forwarding to the leader included): for a proposal-latency metric. The first observer
    /// set stays; later calls return `false`.
    pub fn observe_writes(&self, observer: WriteObserver) -> bool {
        self.inner.write_observer.set(observer).is_ok()
    }

    /// This member's term, leader, log indexes and state size, as it sees them now.
    pub fn metrics(&self) -> StoreMetrics {
        let m = self.inner.raft.metrics().borrow_watched().clone();
        let index = |id: Option<&crate::types::LogId>| id.map_or(0, |id| id.index);
        let (keys, revision) = self.inner.sm.size();
        StoreMetrics {
            term: m.current_term,
            leader: m.current_leader,
            is_leader: m.state == ServerState::Leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: index(m.local_committed.as_ref()),
            applied_index: index(m.last_applied.as_ref()),
            snapshot_index: index(m.snapshot.as_ref()),
            keys,
            revision,
        }
    }

    async fn propose(&self, txn: Txn) -> Result<TxnOutcome, WriteError> {
        let handed_over_at = self.inner.handed_over_at.read().await;
        let handing_over = handed_over_at.is_some_and(|at| at.elapsed() < self.inner.election_timeout_max * 3);
        if self.is_leader() && !handing_over {
            let result = self.write_local(txn).await;
            drop(handed_over_at);
            return result;
        }
        drop(handed_over_at);
        let payload = encode(&txn);
        let again = handing_over.then(|| payload.clone());
        let result = match self.write_local(txn).await {
            Ok(outcome) => return Ok(outcome),
            Err(WriteError::NotLeader { leader: Some(leader) }) if leader != self.inner.id => {
                self.forward(leader, payload).await
            }
            other => other,
        };
        match (result, again) {
            // The successor named by this leader may not have won yet (and a leader stepping
            // down names none for a moment): once another member leads, the write goes there.
            (Err(WriteError::NotLeader { .. }), Some(payload)) => self.forward_to_successor(payload).await,
            (result, _) => result,
        }
    }

    /// Forwards a write made during a hand-over to the member that leads after this one. Right
    /// after its election the successor may refuse it as "not the leader" (seen in the cluster
    /// test about once in five runs): such a refusal comes before it proposes anything, so the
    /// write is offered again, until the request timeout. (A successor that took the write and
    /// then lost its leadership within these milliseconds would answer the same; the write could
    /// then apply twice, which a transaction guarded by a revision compare refuses.)
    async fn forward_to_successor(&self, payload: Vec<u8>) -> Result<TxnOutcome, WriteError> {
        let deadline = tokio::time::Instant::now() + self.inner.request_timeout;
        loop {
            let Some(leader) = self.successor().await else { return Err(WriteError::NotLeader { leader: None }) };
            match self.forward(leader, payload.clone()).await {
                Err(WriteError::NotLeader { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                result => return result,
            }
        }
    }

    /// Waits (up to three election timeouts) until a member other than this one leads, elected
    /// (its vote committed), not only standing as a candidate.
    async fn successor(&self) -> Option<NodeId> {
        let me = self.inner.id;
        let mut rx = self.inner.raft.metrics();
        let successor = async {
            loop {
                let leader = {
                    let m = rx.borrow_and_update();
                    // Only an elected leader: while a candidate's vote is still being granted,
                    // metrics may already name it, and it would refuse the write.
                    m.current_leader.filter(|l| *l != me && m.state != ServerState::Leader && m.vote.is_committed())
                };
                if leader.is_some() {
                    return leader;
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(self.inner.election_timeout_max * 3, successor).await.ok().flatten()
    }

    async fn write_local(&self, txn: Txn) -> Result<TxnOutcome, WriteError> {
        let id = self.inner.id;
        let fut = self.inner.raft.client_write(Command { txn });
        match tokio::time::timeout(self.inner.request_timeout, fut).await {
            Err(_) => Err(WriteError::Unconfirmed {
                node: id,
                reason: format!("not committed within {:?}", self.inner.request_timeout),
            }),
            Ok(Ok(resp)) => Ok(resp.data.outcome),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(WriteError::NotLeader { leader: f.leader_id })
            }
            Ok(Err(RaftError::APIError(e))) => Err(WriteError::Unconfirmed { node: id, reason: e.to_string() }),
            Ok(Err(RaftError::Fatal(e))) => Err(write_stopped(id, e)),
        }
    }

    fn leader_addr(&self, leader: NodeId) -> Option<String> {
        let m = self.inner.raft.metrics().borrow_watched().membership_config.clone();
        m.membership().get_node(&leader).map(|n| n.addr.clone())
    }

    /// Sends `payload` to `leader` and decodes its answer, within the request timeout.
    async fn ask_leader<T: Decode>(&self, leader: NodeId, kind: MessageKind, payload: Vec<u8>) -> Result<T, AskError> {
        let addr = self.leader_addr(leader).ok_or(AskError::NoAddress(leader))?;
        let limit = self.inner.request_timeout;
        let fut = self.inner.transport.send(self.inner.id, leader, &addr, kind, payload);
        let bytes = match tokio::time::timeout(limit, fut).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return Err(AskError::Transport(e)),
            Err(_) => return Err(AskError::TimedOut(limit)),
        };
        decode(&bytes).map_err(AskError::Undecodable)
    }

    /// Sends an encoded transaction to `leader` to apply.
    async fn forward(&self, leader: NodeId, payload: Vec<u8>) -> Result<TxnOutcome, WriteError> {
        tracing::debug!(node.id = self.inner.id, leader.id = leader, "forwarding write to leader");
        match self.ask_leader(leader, MessageKind::ForwardWrite, payload).await {
            Ok(LeaderAnswer::Done(outcome)) => Ok(outcome),
            Ok(LeaderAnswer::NotLeader(l)) => Err(WriteError::NotLeader { leader: l }),
            Ok(LeaderAnswer::Failed(reason)) => Err(WriteError::Unconfirmed { node: leader, reason }),
            // Nothing was sent in these two cases.
            Err(AskError::NoAddress(_)) => Err(WriteError::NotLeader { leader: Some(leader) }),
            Err(AskError::Transport(e @ TransportError::Unreachable { .. })) => {
                Err(WriteError::LeaderUnreachable { leader, reason: e.to_string() })
            }
            Err(e) => Err(WriteError::Forward { leader, reason: e.to_string() }),
        }
    }

    /// Makes the next local read linearizable: on the leader by read index, on a follower by
    /// asking the leader for its read index and waiting until this member has applied it.
    async fn linearize(&self) -> Result<(), ReadError> {
        let id = self.inner.id;
        let fut = self.inner.raft.ensure_linearizable(ReadPolicy::ReadIndex);
        let limit = self.inner.request_timeout;
        let leader = match tokio::time::timeout(limit, fut).await {
            Err(_) => {
                let reason = format!("read index not confirmed by a quorum within {limit:?}");
                return Err(ReadError::NoQuorum { leader: self.leader(), reason });
            }
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => f.leader_id,
            Ok(Err(RaftError::APIError(e))) => {
                return Err(ReadError::NoQuorum { leader: self.leader(), reason: e.to_string() });
            }
            Ok(Err(RaftError::Fatal(e))) => return Err(ReadError::Stopped { node: id, reason: e.to_string() }),
        };
        let Some(leader) = leader.filter(|l| *l != id) else {
            return Err(ReadError::NoQuorum { leader, reason: "no leader known".into() });
        };
        let index = match self.ask_leader(leader, MessageKind::ReadIndex, Vec::new()).await {
            Ok(LeaderAnswer::Done(index)) => index,
            Ok(LeaderAnswer::NotLeader(l)) => {
                return Err(ReadError::NoQuorum { leader: l, reason: format!("node {leader} is no longer leader") });
            }
            Ok(LeaderAnswer::Failed(reason)) => return Err(ReadError::NoQuorum { leader: Some(leader), reason }),
            Err(e) => return Err(ReadError::NoQuorum { leader: Some(leader), reason: e.to_string() }),
        };
        self.inner
            .raft
            .wait(Some(self.inner.request_timeout))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map(|_| ())
            .map_err(|_| ReadError::Timeout { node: id, index })
    }

    /// Reads one key (linearizable).
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<KeyValue>, ReadError> {
        self.get_with(key, Consistency::Linearizable).await
    }

    /// Reads one key with the given consistency.
    pub async fn get_with(
        &self,
        key: impl AsRef<[u8]>,
        consistency: Consistency,
    ) -> Result<Option<KeyValue>, ReadError> {
        if consistency == Consistency::Linearizable {
            self.linearize().await?;
        }
        Ok(self.inner.sm.get(key.as_ref()).0)
    }

    /// Reads every key starting with `prefix` (linearizable), in key order.
    pub async fn range(&self, prefix: impl AsRef<[u8]>) -> Result<RangeResult, ReadError> {
        self.range_with(prefix, Consistency::Linearizable).await
    }

    /// Reads every key starting with `prefix` with the given consistency.
    pub async fn range_with(
        &self,
        prefix: impl AsRef<[u8]>,
        consistency: Consistency,
    ) -> Result<RangeResult, ReadError> {
        if consistency == Consistency::Linearizable {
            self.linearize().await?;
        }
        let (kvs, revision) = self.inner.sm.range(prefix.as_ref());
        Ok(RangeResult { kvs, revision })
    }

    /// Streams every change under `prefix` with a revision of at least `from_revision`, as this
    /// member applies them (`0`: only changes after now). Fails with [`WatchError::Compacted`]
    /// when that revision is older than the history this member keeps.
    pub fn watch(&self, prefix: impl Into<Vec<u8>>, from_revision: u64) -> Result<WatchStream, WatchError> {
        self.inner.sm.watch(prefix.into(), from_revision)
    }

    fn mem_err(
        &self,
        e: RaftError<crate::types::TypeConfig, ClientWriteError<crate::types::TypeConfig>>,
    ) -> MembershipError {
        let node = self.inner.id;
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                MembershipError::NotLeader { leader: f.leader_id }
            }
            RaftError::APIError(e) => MembershipError::Refused { node, reason: e.to_string() },
            RaftError::Fatal(e) => MembershipError::Stopped { node, reason: e.to_string() },
        }
    }

    /// Runs a membership change, retrying while another one is still in progress.
    async fn change<F, Fut>(&self, what: &str, limit: Duration, mut f: F) -> Result<(), MembershipError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<
                Output = Result<
                    openraft::raft::ClientWriteResponse<crate::types::TypeConfig>,
                    RaftError<crate::types::TypeConfig, ClientWriteError<crate::types::TypeConfig>>,
                >,
            >,
    {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, f()).await {
                Err(_) => return Err(self.timed_out(what, limit)),
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    ChangeMembershipError::InProgress(p),
                )))) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(node.id = self.inner.id, change = what, in_progress = %p, "membership change waits");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Err(e)) => return Err(self.mem_err(e)),
            }
        }
    }

    fn timed_out(&self, what: &str, limit: Duration) -> MembershipError {
        MembershipError::Refused { node: self.inner.id, reason: format!("{what} timed out after {limit:?}") }
    }

    /// Adds member `id` at `addr` as a learner and waits until it has caught up (leader only).
    pub async fn add_learner(&self, id: NodeId, addr: impl Into<String>) -> Result<(), MembershipError> {
        let node = BasicNode::new(addr.into());
        // Blocking: returns once the learner has caught up, which may take a snapshot transfer.
        self.change("add learner", self.inner.request_timeout * 6, || {
            self.inner.raft.add_learner(id, node.clone(), true)
        })
        .await
    }

    /// Makes learner `id` a voter (leader only).
    pub async fn promote(&self, id: NodeId) -> Result<(), MembershipError> {
        self.change("promote", self.inner.request_timeout, || {
            self.inner.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        })
        .await
    }

    /// Removes member `id`, voter or learner (leader only).
    pub async fn remove(&self, id: NodeId) -> Result<(), MembershipError> {
        let is_voter = self.inner.raft.voter_ids().any(|v| v == id);
        if is_voter {
            self.change("remove voter", self.inner.request_timeout, || {
                self.inner.raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            })
            .await?;
        }
        let still_member = self.inner.raft.learner_ids().any(|l| l == id);
        if still_member {
            self.change("remove node", self.inner.request_timeout, || {
                self.inner.raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            })
            .await?;
        }
        Ok(())
    }

    /// Hands leadership to the most up-to-date voter this leader hears from, and waits until
    /// another member leads (leader only); returns the new leader. A leader about to leave the
    /// group calls this first, so the group elects its successor at once instead of after an
    /// election timeout. From the call on, this member proposes nothing more and stops sending
    /// heartbeats; if the chosen voter does not take over, the others elect a leader after
    /// their election timeout, as they would after a crash.
    pub async fn transfer_leadership(&self) -> Result<NodeId, MembershipError> {
        let me = self.inner.id;
        let status = self.local_status();
        if status.leader != Some(me) {
            return Err(MembershipError::NotLeader { leader: status.leader });
        }
        let target = status
            .members
            .iter()
            .filter(|m| m.id != me && m.role == Role::Voter && m.reachability == Reachability::Reachable)
            .max_by_key(|m| (m.matched_index, std::cmp::Reverse(m.id)))
            .map(|m| m.id)
            .ok_or_else(|| MembershipError::Refused {
                node: me,
                reason: "no other voter is reachable to take over leadership".into(),
            })?;
        tracing::info!(node.id = me, target.id = target, "transferring leadership");
        // Waits for writes proposed as leader to finish: later ones go to the successor.
        *self.inner.handed_over_at.write().await = Some(tokio::time::Instant::now());
        self.inner
            .raft
            .trigger()
            .transfer_leader(target)
            .await
            .map_err(|e| MembershipError::Stopped { node: me, reason: e.to_string() })?;
        self.successor().await.ok_or_else(|| MembershipError::Refused {
            node: me,
            reason: format!(
                "node {target} did not take over leadership within {:?}",
                self.inner.election_timeout_max * 3
            ),
        })
    }

    /// This member's own view: reachability is known only on the leader.
    pub fn local_status(&self) -> ClusterStatus {
        let m = self.inner.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let is_leader = m.state == ServerState::Leader;
        let limit = self.inner.election_timeout_max;
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let reachability = if !is_leader {
                    Reachability::Unknown
                } else if *id == m.id {
                    Reachability::Reachable
                } else {
                    match m.heartbeat.as_ref().and_then(|h| h.get(id).cloned().flatten()) {
                        Some(at) if at.elapsed() <= limit => Reachability::Reachable,
                        _ => Reachability::Unreachable,
                    }
                };
                let matched_index = if *id == m.id {
                    m.last_log_index
                } else {
                    m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index)
                };
                MemberStatus {
                    id: *id,
                    addr: node.addr.clone(),
                    role: if voters.contains(id) { Role::Voter } else { Role::Learner },
                    reachability,
                    matched_index,
                }
            })
            .collect();
        ClusterStatus { leader: m.current_leader, term: m.current_term, members }
    }

    /// The cluster's members with their roles and reachability, asked of the leader when this
    /// member is not it (falls back to the local view, with unknown reachability).
    pub async fn status(&self) -> ClusterStatus {
        let local = self.local_status();
        let Some(leader) = local.leader.filter(|l| *l != self.inner.id) else {
            return local;
        };
        match self.ask_leader::<ClusterStatus>(leader, MessageKind::Status, Vec::new()).await {
            Ok(s) if s.leader == Some(leader) => s,
            _ => local,
        }
    }

    /// Handles one message from another member (called by transports on the receiving side).
    pub async fn handle(&self, kind: MessageKind, payload: Vec<u8>) -> Result<Vec<u8>, HandleError> {
        let node = self.inner.id;
        let kname = kind.as_str();
        let malformed = |e: String| HandleError::Malformed { kind: kname, reason: e };
        let failed = |e: String| HandleError::Failed { node, kind: kname, reason: e };
        let raft = &self.inner.raft;
        match kind {
            MessageKind::AppendEntries => {
                let req = decode(&payload).map_err(|e| malformed(e.to_string()))?;
                raft.append_entries(req).await.map(|r| encode(&r)).map_err(|e| failed(e.to_string()))
            }
            MessageKind::Vote => {
                let req = decode(&payload).map_err(|e| malformed(e.to_string()))?;
                raft.vote(req).await.map(|r| encode(&r)).map_err(|e| failed(e.to_string()))
            }
            MessageKind::PreVote => {
                let req = decode(&payload).map_err(|e| malformed(e.to_string()))?;
                raft.pre_vote(req).await.map(|r| encode(&r)).map_err(|e| failed(e.to_string()))
            }
            MessageKind::InstallSnapshot => {
                let (vote, meta, data) = decode_snapshot(&payload).map_err(malformed)?;
                tracing::info!(node.id = node, snapshot.last_log_id = ?meta.last_log_id, "receiving snapshot");
                let snapshot =
                    openraft::alias::SnapshotOf::<crate::types::TypeConfig, Vec<u8>> { meta, snapshot: data };
                raft.install_full_snapshot(vote, snapshot).await.map(|r| encode(&r)).map_err(|e| failed(e.to_string()))
            }
            MessageKind::ForwardWrite => {
                let txn: Txn = decode(&payload).map_err(|e| malformed(e.to_string()))?;
                let answer = match self.write_local(txn).await {
                    Ok(o) => LeaderAnswer::Done(o),
                    Err(WriteError::NotLeader { leader }) => LeaderAnswer::NotLeader(leader),
                    Err(e) => LeaderAnswer::Failed(e.to_string()),
                };
                Ok(encode(&answer))
            }
            MessageKind::ReadIndex => {
                let fut = raft.get_read_linearizer(ReadPolicy::ReadIndex);
                let limit = self.inner.request_timeout;
                let answer = match tokio::time::timeout(limit, fut).await {
                    Ok(Ok(lin)) => LeaderAnswer::Done(lin.read_log_id().index()),
                    Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                        LeaderAnswer::NotLeader(f.leader_id)
                    }
                    Ok(Err(e)) => LeaderAnswer::Failed(e.to_string()),
                    Err(_) => LeaderAnswer::Failed(format!("read index not confirmed by a quorum within {limit:?}")),
                };
                Ok(encode(&answer))
            }
            MessageKind::Status => Ok(encode(&self.local_status())),
            MessageKind::TransferLeader => {
                let req: TransferLeaderRequest<crate::types::TypeConfig> =
                    decode(&payload).map_err(|e| malformed(e.to_string()))?;
                raft.handle_transfer_leader(req).await.map(|r| encode(&r)).map_err(|e| failed(e.to_string()))
            }
        }
    }

    /// Stops Raft, ends every watch and waits for the log to be closed; the data stays on disk
    /// for a later [`Store::open`] (which may follow at once). Dropping the last handle also
    /// stops Raft, without waiting.
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(node.id = self.inner.id, error = %e, "raft shutdown reported an error");
        }
        self.inner.sm.close_watchers();
        self.inner.log.close().await;
        tracing::info!(node.id = self.inner.id, "raft store stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Encode + Decode + std::fmt::Debug>(answer: LeaderAnswer<T>) -> Vec<u8> {
        let bytes = codec::to_vec(&answer);
        let back: LeaderAnswer<T> = codec::from_slice(&bytes).expect("decodes");
        assert_eq!(format!("{back:?}"), format!("{answer:?}"));
        bytes
    }

    #[test]
    fn leader_answers_round_trip_with_the_tags_members_already_send() {
        // The encoding of the former ForwardAnswer and ReadIndexAnswer, so members on either
        // build understand each other.
        assert_eq!(round_trip(LeaderAnswer::Done(300u64)), vec![0, 0xac, 0x02]);
        assert_eq!(round_trip(LeaderAnswer::<u64>::NotLeader(Some(3))), vec![1, 1, 3]);
        assert_eq!(round_trip(LeaderAnswer::<u64>::NotLeader(None)), vec![1, 0]);
        assert_eq!(round_trip(LeaderAnswer::<u64>::Failed("no".into())), vec![2, 2, b'n', b'o']);
        let outcome = TxnOutcome { succeeded: true, revision: 7, deleted: 1 };
        assert_eq!(round_trip(LeaderAnswer::Done(outcome))[0], 0);
        let err = codec::from_slice::<LeaderAnswer<u64>>(&[9]).expect_err("unknown tag");
        assert_eq!(err, DecodeError::Tag { at: 0, what: "leader answer", tag: 9 });
    }
}

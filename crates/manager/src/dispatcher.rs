//! The dispatcher (`shoal.v1.Dispatcher`): one session per node, heartbeats that keep the node
//! Ready, batched task status reports, and the stream of the node's assignments (one complete
//! set, then increments following the store's watch), cut into messages of at most
//! [`ASSIGNMENT_CHUNK_BYTES`] by [`split_assignments`].
//!
//! Liveness: [`Dispatcher::check_heartbeats`], called by the leader's loop, marks a node Down when
//! it has missed three heartbeat periods; the replicated orchestrator then replaces its tasks at
//! once. A node that comes back starts a new session and gets its assignments again; tasks that
//! were rescheduled meanwhile are no longer its own, so the agent stops them.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use shoal_api::v1::{self, TaskState, dispatcher_server::Dispatcher as DispatcherApi};
use shoal_raft_store::EventKind;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::ids::new_id;
use crate::objects::{Object, ObjectError, ObjectStore, Write, decode, kv_id};
use crate::tls::{PeerInfo, caller};

mod payloads;

/// Heartbeats missed before a node is Down.
const MISSED_HEARTBEATS: u32 = 3;

/// Reads and writes of one task status before the report is handed back as conflicting.
const STATUS_ATTEMPTS: u32 = 5;

#[derive(Debug)]
struct Session {
    id: String,
    last_heartbeat: Instant,
    /// Dropped with the session (expired, or replaced by a newer one), which ends its stream.
    _alive: Option<oneshot::Sender<()>>,
}

/// The dispatcher of a manager. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    objects: ObjectStore,
    /// The heartbeat period, in nanoseconds (the leader sets the cluster's).
    period: AtomicU64,
    sessions: Mutex<HashMap<String, Session>>,
    feed: Mutex<Feed>,
    /// Set when a node reported a task ending, for the leader's loop to react to.
    task_ended: AtomicBool,
    /// A node reported a task RUNNING since the leader last asked (a rolling update waits for
    /// that).
    task_running: AtomicBool,
    /// Status reports waiting for the status writer.
    reports: Mutex<ReportQueue>,
    /// The last task table read for new assignment streams (see [`Dispatcher::task_list`]).
    listing: tokio::sync::Mutex<Option<Listing>>,
    /// How many times the task table was read for assignment streams.
    lists_read: std::sync::atomic::AtomicU64,
    /// When the heartbeats were last checked (see [`Dispatcher::check_heartbeats`]).
    last_check: Mutex<Option<Instant>>,
    /// Subscriptions to the networks feed, while it runs (see `dispatcher/networks.rs`).
    networks_feed: Mutex<Option<mpsc::UnboundedSender<networks::Subscribe>>>,
    /// The log broker: the nodes' log subscription streams (see `logs.rs`).
    logs: crate::logs::LogBroker,
    /// The fingerprint of the roots nodes are to trust, told with every heartbeat.
    trust_root: crate::root_ca::TrustRoot,
}

/// The task table as read for new assignment streams: when the read began, the tasks and the
/// store revision they were read at.
#[derive(Debug)]
struct Listing {
    began: Instant,
    tasks: Arc<(Vec<v1::Task>, u64)>,
}

/// How long a task table read for assignment streams is kept for streams that open after it.
const LISTING_KEPT: Duration = Duration::from_secs(1);

/// How long the status writer lets reports gather before it writes them together. (Swarm's
/// dispatcher flushes every 100 ms; at 10 ms, a thousand nodes' reports still made enough small
/// Raft entries to slow the leader's own writes by a fifth in `cargo xtask bench control-plane`.)
const STATUS_GATHER: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct ReportQueue {
    pending: Vec<QueuedReport>,
    /// Whether a writer is running (it stops when the queue is empty).
    writing: bool,
}

/// One `UpdateTaskStatus` call waiting for the status writer.
#[derive(Debug)]
struct QueuedReport {
    node_id: String,
    updates: Vec<v1::TaskStatusUpdate>,
    reply: oneshot::Sender<Result<(), Status>>,
}

/// Most task changes queued for one node's assignment stream; a node that falls this far
/// behind has its stream ended and starts over with a complete set.
const FEED_BUFFER: usize = 8192;

/// The most bytes one assignment message carries, encoded, unless a single change alone is
/// larger. A node's complete set of 1,500 tasks with 4 KiB of environment each is 6 MiB, over
/// the decode limit of gRPC clients (4 MiB by default), and an increment may gather up to
/// [`FEED_BUFFER`] changes: both go out in parts of this size (see `dispatcher.proto`).
const ASSIGNMENT_CHUNK_BYTES: usize = 1 << 20;

/// The largest assignment message a node accepts: the agent's decode limit
/// (`crates/agent/src/session.rs`, `MAX_ASSIGNMENT_BYTES`), four chunks' worth, so that one
/// change larger than a chunk still goes out. A change that would not fit even alone is never
/// sent: the node would fail to decode it, start a new session and get it again, forever. Specs
/// are refused far below it ([`crate::validate::MAX_TASK_SPEC_BYTES`]).
const ASSIGNMENT_MAX_BYTES: usize = 4 << 20;

/// An upper bound of the encoded size of an assignment message without its changes: `type`,
/// `applies_to`, `results_in` (up to 10 bytes each as varints) and `more`, with their keys.
const ASSIGNMENT_HEADER_BYTES: usize = 32;

/// The bytes `change` adds to an assignment message: its key (field 4, one byte), its length
/// and itself.
fn change_bytes(change: &v1::AssignmentChange) -> usize {
    let len = prost::Message::encoded_len(change);
    1 + prost::length_delimiter_len(len) + len
}

/// Cuts `changes` into assignment messages of type `kind` of at most `limit` bytes encoded
/// each (a change larger than `limit` alone goes in a message of its own), in order: the
/// changes of the messages, one after the other, are `changes`. At least one message, even
/// for no changes (an empty complete set still tells the node it has no tasks).
///
/// A complete set is one set in parts: every message applies to `sequence` and results in
/// the next, `more` set on all but the last. Increments are independent: each message is an
/// increment of its own, the first applying to `sequence`, each next one to what the one
/// before resulted in — so the caller's sequence advances by the number of messages.
pub(crate) fn split_assignments(
    kind: v1::assignments_message::Type,
    sequence: u64,
    changes: Vec<v1::AssignmentChange>,
    limit: usize,
) -> Vec<v1::AssignmentsMessage> {
    sequenced(kind, sequence, parts(changes, limit), |r#type, applies_to, results_in, changes, more| {
        v1::AssignmentsMessage { r#type, applies_to, results_in, changes, more }
    })
}

/// `changes` in consecutive parts of at most `limit` bytes encoded each (with the message's
/// header), a change larger than `limit` alone in a part of its own; at least one part.
fn parts<C: prost::Message>(changes: Vec<C>, limit: usize) -> Vec<Vec<C>> {
    let mut parts: Vec<Vec<C>> = vec![Vec::new()];
    let mut size = ASSIGNMENT_HEADER_BYTES;
    for change in changes {
        let len = change.encoded_len();
        let bytes = 1 + prost::length_delimiter_len(len) + len;
        if parts.last().is_some_and(|p| !p.is_empty()) && size + bytes > limit {
            parts.push(Vec::new());
            size = ASSIGNMENT_HEADER_BYTES;
        }
        size += bytes;
        if let Some(last) = parts.last_mut() {
            last.push(change);
        }
    }
    parts
}

/// The messages of `parts` with their sequence numbers (see [`split_assignments`]): a complete
/// set's parts all apply to `sequence`, with `more` on all but the last; increments follow one
/// another. `make` builds a message from (type, applies_to, results_in, changes, more).
fn sequenced<C, M>(
    kind: v1::assignments_message::Type,
    sequence: u64,
    parts: Vec<Vec<C>>,
    make: impl Fn(i32, u64, u64, Vec<C>, bool) -> M,
) -> Vec<M> {
    let count = parts.len();
    let complete = kind == v1::assignments_message::Type::Complete;
    parts
        .into_iter()
        .enumerate()
        .map(|(index, changes)| {
            let applies_to = if complete { sequence } else { sequence + index as u64 };
            make(kind as i32, applies_to, applies_to + 1, changes, complete && index + 1 < count)
        })
        .collect()
}

/// The size of the message `change` would need alone, when that is over what a node accepts
/// ([`ASSIGNMENT_MAX_BYTES`]).
fn oversized(change: &v1::AssignmentChange) -> Option<usize> {
    let size = ASSIGNMENT_HEADER_BYTES + change_bytes(change);
    (size > ASSIGNMENT_MAX_BYTES).then_some(size)
}

/// A task change routed to the node it concerns, with the store revision it happened at.
#[derive(Debug)]
enum Routed {
    Put(u64, Box<v1::Task>),
    Delete(u64, String),
}

/// One watch of the task prefix for the whole dispatcher, decoding each change once and
/// routing it to the assignment streams of the node it concerns — rather than one watch per
/// node, which would decode every change once per node.
#[derive(Debug, Default)]
struct Feed {
    running: bool,
    subscribers: HashMap<String, Vec<mpsc::Sender<Routed>>>,
}

impl Dispatcher {
    /// How often nodes are asked for a heartbeat now.
    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.inner.period.load(Ordering::Relaxed))
    }

    /// Asks nodes for a heartbeat every `period` from their next heartbeat on (the cluster's
    /// setting, which the leader reads each pass).
    pub fn set_period(&self, period: Duration) {
        let old = self.inner.period.swap(nanos(period), Ordering::Relaxed);
        if old != nanos(period) {
            tracing::info!(period = ?period, "heartbeat period changed");
        }
    }

    /// A dispatcher asking nodes for a heartbeat every `period` (Shoal's default is 1 s).
    pub fn new(objects: ObjectStore, period: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                objects,
                period: AtomicU64::new(nanos(period)),
                sessions: Mutex::new(HashMap::new()),
                feed: Mutex::new(Feed::default()),
                task_ended: AtomicBool::new(false),
                task_running: AtomicBool::new(false),
                reports: Mutex::new(ReportQueue::default()),
                listing: tokio::sync::Mutex::new(None),
                lists_read: std::sync::atomic::AtomicU64::new(0),
                last_check: Mutex::new(None),
                networks_feed: Mutex::new(None),
                logs: crate::logs::LogBroker::default(),
                trust_root: crate::root_ca::TrustRoot::default(),
            }),
        }
    }

    /// Where the root CA follower puts the roots' fingerprint the heartbeats tell nodes.
    pub(crate) fn trust_root(&self) -> crate::root_ca::TrustRoot {
        self.inner.trust_root.clone()
    }

    /// The log broker, which the `Logs` service shares.
    pub(crate) fn log_broker(&self) -> &crate::logs::LogBroker {
        &self.inner.logs
    }

    /// How many nodes have a session open here (for the metrics).
    pub(crate) fn session_count(&self) -> usize {
        self.sessions().len()
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.inner.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a node reported a task ending (FAILED, COMPLETE, SHUTDOWN, REJECTED) since the
    /// last call: what the orchestrators act on, unlike reports of tasks starting.
    pub fn take_task_ended(&self) -> bool {
        self.inner.task_ended.swap(false, Ordering::AcqRel)
    }

    /// Whether a node reported a task RUNNING since the last call.
    pub fn take_task_running(&self) -> bool {
        self.inner.task_running.swap(false, Ordering::AcqRel)
    }

    fn note_state(&self, state: TaskState) {
        if state.is_terminal() {
            self.inner.task_ended.store(true, Ordering::Release);
        } else if state == TaskState::Running {
            self.inner.task_running.store(true, Ordering::Release);
        }
    }

    fn feed(&self) -> MutexGuard<'_, Feed> {
        self.inner.feed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Routes the task changes applied from now on to `node_id`'s receiver, starting the shared
    /// watch if it is not running.
    fn subscribe(&self, node_id: &str) -> Result<mpsc::Receiver<Routed>, Status> {
        let (tx, rx) = mpsc::channel(FEED_BUFFER);
        let mut feed = self.feed();
        if !feed.running {
            let watch = self
                .inner
                .objects
                .store()
                .watch(v1::Task::PREFIX, 0)
                .map_err(|e| Status::unavailable(format!("cannot follow task changes: {e}")))?;
            feed.running = true;
            let this = self.clone();
            tokio::spawn(async move { this.run_feed(watch).await });
        }
        feed.subscribers.entry(node_id.to_owned()).or_default().push(tx);
        Ok(rx)
    }

    /// The task table for an assignment stream whose feed subscription was in place at
    /// `subscribed`. A read that began after that instant saw every change the feed will not
    /// deliver to the stream, so streams that open together (every node, after a leader change)
    /// share one read and decode instead of one each; otherwise the table is read anew.
    async fn task_list(&self, subscribed: Instant) -> Result<Arc<(Vec<v1::Task>, u64)>, ObjectError> {
        let mut listing = self.inner.listing.lock().await;
        if let Some(last) = listing.as_ref().filter(|l| l.began > subscribed) {
            return Ok(last.tasks.clone());
        }
        let began = Instant::now();
        let tasks = Arc::new(self.inner.objects.list_at::<v1::Task>().await?);
        self.inner.lists_read.fetch_add(1, Ordering::Relaxed);
        *listing = Some(Listing { began, tasks: tasks.clone() });
        // Not kept for long: a large table costs memory, and streams that open later read anew.
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::time::sleep(LISTING_KEPT).await;
            if let Some(inner) = inner.upgrade() {
                let mut listing = inner.listing.lock().await;
                if listing.as_ref().is_some_and(|l| l.began == began) {
                    *listing = None;
                }
            }
        });
        Ok(tasks)
    }

    /// How many times the task table was read for assignment streams.
    #[cfg(test)]
    pub(crate) fn lists_read(&self) -> u64 {
        self.inner.lists_read.load(Ordering::Relaxed)
    }

    /// The shared watch: decodes each task change and hands it to the streams of its node. A
    /// delete names no node, so the node a task was last seen on is remembered; deletes of tasks
    /// not seen since the feed started go to every stream (each knows its own tasks). Stops
    /// when no stream is left, and ends every stream when the watch fails.
    async fn run_feed(&self, mut watch: shoal_raft_store::WatchStream) {
        let mut owner: HashMap<String, String> = HashMap::new();
        loop {
            let event = match watch.next().await {
                Some(Ok(event)) => event,
                end => {
                    tracing::warn!(?end, "task watch ended; assignment streams restart");
                    let mut feed = self.feed();
                    feed.running = false;
                    feed.subscribers.clear();
                    return;
                }
            };
            let id = kv_id::<v1::Task>(&event.kv.key);
            let revision = event.kv.mod_revision;
            let (node, routed) = match event.kind {
                EventKind::Put => match decode::<v1::Task>(&id, &event.kv.value, revision) {
                    Ok(task) => {
                        owner.insert(id, task.node_id.clone());
                        (Some(task.node_id.clone()), Routed::Put(revision, Box::new(task)))
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "undecodable task change skipped");
                        continue;
                    }
                },
                EventKind::Delete => (owner.remove(&id), Routed::Delete(revision, id)),
            };
            let mut feed = self.feed();
            match node {
                Some(node) if node.is_empty() => {}
                Some(node) => {
                    if let Some(senders) = feed.subscribers.get_mut(&node) {
                        deliver(senders, routed);
                    }
                }
                None => {
                    for senders in feed.subscribers.values_mut() {
                        let Routed::Delete(revision, id) = &routed else { break };
                        deliver(senders, Routed::Delete(*revision, id.clone()));
                    }
                }
            }
            feed.subscribers.retain(|_, senders| !senders.is_empty());
            if feed.subscribers.is_empty() {
                feed.running = false;
                return;
            }
        }
    }

    /// Refuses a call on a manager that is not the Raft leader: only the leader's loop checks
    /// heartbeats, so a session held anywhere else would leave a live node marked Down. The
    /// refusal carries the leader's address, when known, in the [`shoal_api::LEADER_METADATA`] header.
    fn require_leader(&self) -> Result<(), Status> {
        let store = self.inner.objects.store();
        if store.is_leader() {
            return Ok(());
        }
        let Some(leader) = crate::status::leader_addr(store) else {
            return Err(Status::unavailable(format!(
                "manager {} is not the leader and knows of none (no quorum?); try another manager",
                store.addr()
            )));
        };
        let mut status = Status::unavailable(format!(
            "manager {} is not the leader; open the session with the leader at {leader}",
            store.addr()
        ));
        if let Ok(value) = leader.parse() {
            status.metadata_mut().insert(shoal_api::LEADER_METADATA, value);
        }
        Err(status)
    }

    /// The managers a node may fail over to, from their stored records.
    async fn managers(&self) -> Result<Vec<v1::WeightedPeer>, ObjectError> {
        Ok(self
            .inner
            .objects
            .list::<v1::Node>()
            .await?
            .into_iter()
            .filter(|n| n.role == v1::NodeRole::Manager as i32)
            .filter_map(|n| {
                let addr = n.manager_status.map(|m| m.addr).filter(|a| !a.is_empty())?;
                Some(v1::WeightedPeer { node_id: n.id, addr, weight: 1 })
            })
            .collect())
    }

    /// The node of a request whose session is current, or why not.
    fn session_node<T>(&self, request: &Request<T>, session_id: &str) -> Result<String, Status> {
        let node_id = caller(request)?.node_id;
        match self.sessions().get(&node_id) {
            Some(session) if session.id == session_id => Ok(node_id),
            _ => Err(Status::not_found(format!(
                "session {session_id:?} of node {node_id} has ended; start a new session"
            ))),
        }
    }

    /// Starts the heartbeat clock for nodes that were Ready under a previous leader: unless they
    /// open a session with this dispatcher within three periods, they are marked Down.
    ///
    /// Sessions left from an earlier term of this manager's leadership went silent while it
    /// followed (a follower refuses heartbeats); they are dropped first, so that their old clocks
    /// do not mark nodes Down at once, without the grace.
    pub fn expect_nodes(&self, node_ids: impl IntoIterator<Item = String>) {
        let deadline = self.period() * MISSED_HEARTBEATS;
        let mut sessions = self.sessions();
        sessions.retain(|_, s| s.last_heartbeat.elapsed() <= deadline);
        for node_id in node_ids {
            // An empty session ID matches no request: the node has to start a new session.
            sessions.entry(node_id).or_insert_with(|| Session {
                id: String::new(),
                last_heartbeat: Instant::now(),
                _alive: None,
            });
        }
    }

    /// Marks Down every node with a session that missed three heartbeat periods, and ends
    /// its session. Returns the nodes it marked. The leader calls this every period.
    ///
    /// Time the leader itself was held up (the check came more than half a period late: a
    /// placement surge or a starved machine kept it, and the heartbeats waiting behind the same
    /// work, from running) is not counted against the nodes: their clocks move on by that much.
    /// A node is Down when it missed its heartbeats, not when the leader was too busy to hear
    /// them; marking healthy nodes Down under load would move their tasks and add to the load.
    pub async fn check_heartbeats(&self) -> Result<Vec<String>, ObjectError> {
        self.credit_stall();
        let expired = self.end_expired_sessions();
        let mut marked = Vec::with_capacity(expired.len());
        for (i, node_id) in expired.iter().enumerate() {
            match self.mark_down(node_id).await {
                Ok(true) => {
                    tracing::info!(node.id = %node_id, missed = MISSED_HEARTBEATS, "node missed its heartbeats: down");
                    marked.push(node_id.clone());
                }
                Ok(false) => {}
                Err(err) => {
                    // Not marked (no quorum, say): these nodes stay expired for the next check.
                    self.keep_expired(&expired[i..]);
                    return Err(err);
                }
            }
        }
        Ok(marked)
    }

    /// Moves every session's clock on by the time since the last check beyond one period, when
    /// that is more than half a period (see [`Dispatcher::check_heartbeats`]).
    fn credit_stall(&self) {
        let now = Instant::now();
        let previous = self.inner.last_check.lock().unwrap_or_else(std::sync::PoisonError::into_inner).replace(now);
        let Some(previous) = previous else { return };
        let late = now.saturating_duration_since(previous).saturating_sub(self.period());
        if late <= self.period() / 2 {
            return;
        }
        tracing::info!(
            held_up_ms = late.as_millis() as u64,
            "the leader's heartbeat check ran late; that time is not counted against the nodes"
        );
        for session in self.sessions().values_mut() {
            session.last_heartbeat = (session.last_heartbeat + late).min(now);
        }
    }

    /// Puts back nodes whose sessions ended but that are not marked Down yet, as sessions that
    /// have already missed their heartbeats (a node that started a new session keeps it).
    fn keep_expired(&self, node_ids: &[String]) {
        let missed = self.period() * MISSED_HEARTBEATS + Duration::from_millis(1);
        let long_ago = Instant::now().checked_sub(missed).unwrap_or_else(Instant::now);
        let mut sessions = self.sessions();
        for node_id in node_ids {
            sessions.entry(node_id.clone()).or_insert_with(|| Session {
                id: String::new(),
                last_heartbeat: long_ago,
                _alive: None,
            });
        }
    }

    /// Ends the sessions that missed three heartbeat periods; returns their nodes.
    fn end_expired_sessions(&self) -> Vec<String> {
        let deadline = self.period() * MISSED_HEARTBEATS;
        let mut sessions = self.sessions();
        let expired: Vec<String> =
            sessions.iter().filter(|(_, s)| s.last_heartbeat.elapsed() > deadline).map(|(id, _)| id.clone()).collect();
        for id in &expired {
            sessions.remove(id);
        }
        expired
    }

    /// Marks a node whose session expired Down, unless it has started a new session meanwhile
    /// (then it is Ready and stays so). Returns whether it was marked.
    ///
    /// The check sits between the read and the versioned write: a session registers itself
    /// before it writes Ready, so either this sees the session, or the session's Ready write
    /// comes after (and wins over) this one, or this write fails its version check and retries.
    async fn mark_down(&self, node_id: &str) -> Result<bool, ObjectError> {
        let marked = self.inner.objects.modify(node_id, |node: &mut v1::Node| {
            if self.sessions().contains_key(node_id) {
                return false;
            }
            let status = node.status.get_or_insert_with(Default::default);
            status.state = v1::node_status::State::Down as i32;
            status.message = "heartbeat failure".to_owned();
            true
        });
        match marked.await {
            Ok(marked) => Ok(marked.is_some()),
            // Removed meanwhile: nothing to mark.
            Err(ObjectError::NotFound { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Records a node that started a session as Ready, with its description and address.
    async fn set_ready(
        &self,
        node_id: &str,
        description: &v1::NodeDescription,
        addr: SocketAddr,
    ) -> Result<v1::Node, ObjectError> {
        // Retried on a concurrent change (a CLI update of the same node): last writer reads first.
        // Nothing is written when the node is already recorded so (a node reconnecting, or one
        // opening sessions in a loop, adds nothing to the Raft log).
        let mut unchanged = None;
        let ready = self.inner.objects.modify(node_id, |node: &mut v1::Node| {
            let status = node.status.get_or_insert_with(Default::default);
            let ready = v1::node_status::State::Ready as i32;
            let addr = addr.ip().to_string();
            if status.state == ready
                && status.message.is_empty()
                && status.addr == addr
                && node.description.as_ref() == Some(description)
            {
                unchanged = Some(node.clone());
                return false;
            }
            status.state = ready;
            status.message = String::new();
            status.addr = addr;
            node.description = Some(description.clone());
            true
        });
        let written = ready.await?;
        written.or(unchanged).ok_or_else(|| ObjectError::NotFound { kind: v1::Node::KIND, id: node_id.to_owned() })
    }

    /// Records one reported task status, reading the task again when a concurrent write (the
    /// leader's) changed it, up to `attempts` times. Ok when recorded or rightly ignored (a late
    /// report, a deleted task); after that many conflicts the caller is told to send it again,
    /// so that a report is never dropped unseen.
    async fn record_status(&self, node_id: &str, update: v1::TaskStatusUpdate, attempts: u32) -> Result<(), Status> {
        let Some(status) = update.status else { return Ok(()) };
        let next = TaskState::try_from(status.state).unwrap_or(TaskState::New);
        if !Self::observable(next) {
            // Ignored like a late report, rather than refusing the batch: a refused batch is
            // sent again as it was, and would end every session of the node.
            tracing::warn!(node.id = %node_id, task.id = %update.task_id, state = status.state, "ignored a task state that nodes do not report");
            return Ok(());
        }
        for _ in 0..attempts {
            let mut task: v1::Task = match self.inner.objects.get(&update.task_id).await {
                Ok(task) => task,
                // The task was deleted meanwhile: nothing to record.
                Err(ObjectError::NotFound { .. }) => return Ok(()),
                Err(err) => return Err(err.into()),
            };
            if task.node_id != node_id {
                return Err(Status::permission_denied(format!(
                    "task {} is not assigned to node {node_id}",
                    update.task_id
                )));
            }
            let current = task.observed_state();
            if !current.may_become(next) {
                return Ok(()); // states only move forward; a late or repeated report changes nothing
            }
            let mut status = status.clone();
            status.timestamp.get_or_insert_with(|| shoal_api::to_timestamp(SystemTime::now()));
            record_status(&mut task, status);
            match self.inner.objects.update(task).await {
                Ok(_) => {
                    self.note_state(next);
                    return Ok(());
                }
                Err(ObjectError::Conflict { .. }) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(Status::aborted(format!(
            "task {}: status not recorded in {attempts} attempts (the task kept changing); send the report again",
            update.task_id
        )))
    }

    /// Queues a node's batch of status reports for the status writer and waits for its
    /// verdict. The writer takes every batch queued meanwhile (from all nodes) and writes them
    /// together, as Swarm's dispatcher does: a thousand nodes reporting every few tens of
    /// milliseconds then cost a few Raft entries, not thousands.
    async fn record_statuses(&self, node_id: &str, updates: Vec<v1::TaskStatusUpdate>) -> Result<(), Status> {
        let (reply, verdict) = oneshot::channel();
        let start = {
            let mut queue = self.inner.reports.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.pending.push(QueuedReport { node_id: node_id.to_owned(), updates, reply });
            !std::mem::replace(&mut queue.writing, true)
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.write_reports().await });
        }
        verdict.await.unwrap_or_else(|_| Err(Status::unavailable("the status writer stopped; send the report again")))
    }

    /// The status writer: runs while reports are queued.
    async fn write_reports(&self) {
        loop {
            // Let the reports of a moment gather.
            tokio::time::sleep(STATUS_GATHER).await;
            let batch = {
                let mut queue = self.inner.reports.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if queue.pending.is_empty() {
                    queue.writing = false;
                    return;
                }
                std::mem::take(&mut queue.pending)
            };
            self.write_batch(batch).await;
        }
    }

    /// Writes queued reports: each task read as this member has it, all changes in batched
    /// writes ([`ObjectStore::write_all`]); a report whose write lost to a concurrent change, or
    /// whose task this member has not seen yet, goes through [`Self::record_status`] with fresh
    /// reads. Each queued report gets its own verdict.
    async fn write_batch(&self, batch: Vec<QueuedReport>) {
        let now = SystemTime::now();
        let mut writes = Vec::new();
        let mut owners = Vec::new();
        let mut again: Vec<Vec<v1::TaskStatusUpdate>> = batch.iter().map(|_| Vec::new()).collect();
        let mut verdicts: Vec<Result<(), Status>> = batch.iter().map(|_| Ok(())).collect();
        let mut written: HashSet<String> = HashSet::new();
        for (index, report) in batch.iter().enumerate() {
            match self.prepare_statuses(&report.node_id, &report.updates, now).await {
                Ok((ready, later)) => {
                    again[index] = later;
                    for (task, update) in ready {
                        // One write per task in a transaction batch; a second report waits.
                        if written.insert(task.id.clone()) {
                            writes.push(Write::Update(task));
                            owners.push((index, update));
                        } else {
                            again[index].push(update);
                        }
                    }
                }
                Err(status) => verdicts[index] = Err(status),
            }
        }
        match self.inner.objects.write_all(writes).await {
            Ok(outcomes) => {
                for ((index, update), outcome) in owners.into_iter().zip(outcomes) {
                    if outcome.is_err() {
                        again[index].push(update);
                    }
                }
            }
            Err(err) => {
                let status = Status::from(err);
                for verdict in verdicts.iter_mut().filter(|v| v.is_ok()) {
                    *verdict = Err(status.clone());
                }
            }
        }
        for ((report, later), mut verdict) in batch.into_iter().zip(again).zip(verdicts) {
            if verdict.is_ok() {
                for update in later {
                    if let Err(status) = self.record_status(&report.node_id, update, STATUS_ATTEMPTS).await {
                        verdict = Err(status);
                        break;
                    }
                }
            }
            let _ = report.reply.send(verdict);
        }
    }

    /// A node's reports turned into task writes (with the report each came from), and the
    /// reports that need the careful path; refused whole when the node reports a task that is
    /// not its own.
    async fn prepare_statuses(
        &self,
        node_id: &str,
        updates: &[v1::TaskStatusUpdate],
        now: SystemTime,
    ) -> Result<(Vec<(v1::Task, v1::TaskStatusUpdate)>, Vec<v1::TaskStatusUpdate>), Status> {
        let now = shoal_api::to_timestamp(now);
        let mut ready = Vec::with_capacity(updates.len());
        let mut again = Vec::new();
        // Of several reports of one task, the furthest counts.
        let mut latest: HashMap<&str, &v1::TaskStatusUpdate> = HashMap::new();
        for update in updates {
            let Some(status) = &update.status else { continue };
            match latest.get(update.task_id.as_str()).and_then(|u| u.status.as_ref()) {
                Some(seen) if seen.state >= status.state => {}
                _ => {
                    latest.insert(&update.task_id, update);
                }
            }
        }
        for (task_id, update) in latest {
            let Some(mut status) = update.status.clone() else { continue };
            let next = TaskState::try_from(status.state).unwrap_or(TaskState::New);
            if !Self::observable(next) {
                again.push(update.clone());
                continue;
            }
            let mut task: v1::Task = match self.inner.objects.get_local(task_id).await {
                Ok(task) => task,
                Err(ObjectError::NotFound { .. }) => {
                    again.push(update.clone());
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            if task.node_id != node_id {
                return Err(Status::permission_denied(format!("task {task_id} is not assigned to node {node_id}")));
            }
            if !task.observed_state().may_become(next) {
                continue; // a late or repeated report changes nothing
            }
            status.timestamp.get_or_insert(now);
            record_status(&mut task, status);
            self.note_state(next);
            ready.push((task, update.clone()));
        }
        Ok((ready, again))
    }

    /// Whether a node may report `state`: what it observes running the task, from ACCEPTED to
    /// REJECTED. The states before are the manager's scheduling, REMOVE and ORPHANED its verdicts.
    fn observable(state: TaskState) -> bool {
        (TaskState::Accepted as i32..=TaskState::Rejected as i32).contains(&(state as i32))
    }

    /// The node's tasks that the agent must know about: everything assigned to it that is not
    /// both finished and told to stop.
    fn relevant(task: &v1::Task, node_id: &str) -> bool {
        let state = task.observed_state();
        let desired = task.desired();
        // Not before ASSIGNED: a global task waiting for its network addresses is PENDING on
        // its node, and must not start there without them.
        task.node_id == node_id
            && state as i32 >= TaskState::Assigned as i32
            && !(state.is_terminal() && desired as i32 >= TaskState::Shutdown as i32)
    }
}

impl Dispatcher {
    /// Records the volumes a node reports in its record; a removal asked of it is done once the
    /// volume is no longer reported.
    async fn record_volumes(&self, node_id: &str, mut volumes: Vec<v1::NodeVolume>) -> Result<(), Status> {
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        self.inner
            .objects
            .modify(node_id, |node: &mut v1::Node| {
                let removals = node.volume_removals.len();
                node.volume_removals.retain(|name| volumes.iter().any(|v| &v.name == name));
                if node.volumes == volumes && node.volume_removals.len() == removals {
                    return false;
                }
                node.volumes = volumes.clone();
                true
            })
            .await?;
        Ok(())
    }
}

/// Records a node's report as the task's status, and when it first reached RUNNING (what a
/// rolling update's monitor period counts from).
fn record_status(task: &mut v1::Task, status: v1::TaskStatus) {
    if task.running_since.is_none() && status.state == TaskState::Running as i32 {
        task.running_since = status.timestamp;
    }
    task.status = Some(status);
}

type SessionStream = ReceiverStream<Result<v1::SessionMessage, Status>>;
type AssignmentStream = ReceiverStream<Result<v1::AssignmentsMessage, Status>>;
type NetworksStream = ReceiverStream<Result<v1::NetworksMessage, Status>>;

#[tonic::async_trait]
impl DispatcherApi for Dispatcher {
    type SessionStream = SessionStream;
    type AssignmentsStream = AssignmentStream;
    type NetworksStream = NetworksStream;
    type LogSubscriptionsStream = crate::logs::NodeSubscriptionStream;

    async fn log_subscriptions(
        &self,
        request: Request<v1::LogSubscriptionsRequest>,
    ) -> Result<Response<Self::LogSubscriptionsStream>, Status> {
        self.require_leader()?;
        let session_id = request.get_ref().session_id.clone();
        let node_id = self.session_node(&request, &session_id)?;
        // The stream ends with the session (expired, or replaced by a newer one).
        let (this, node) = (self.clone(), node_id.clone());
        let alive = move || this.sessions().get(&node).is_some_and(|s| s.id == session_id);
        Ok(Response::new(self.inner.logs.node_stream(node_id, alive)))
    }

    async fn publish_logs(
        &self,
        request: Request<tonic::Streaming<v1::PublishLogsMessage>>,
    ) -> Result<Response<v1::PublishLogsResponse>, Status> {
        let node_id = caller(&request)?.node_id;
        let mut stream = request.into_inner();
        let Some(first) = stream.message().await? else {
            return Ok(Response::new(v1::PublishLogsResponse {}));
        };
        let this = self.clone();
        let node = node_id.clone();
        let current = move |session_id: &str| this.sessions().get(&node).is_some_and(|s| s.id == session_id);
        if !current(&first.session_id) {
            return Err(Status::not_found(format!(
                "session {:?} of node {node_id} has ended; start a new session",
                first.session_id
            )));
        }
        self.inner.logs.publish(node_id, first, stream, current).await?;
        Ok(Response::new(v1::PublishLogsResponse {}))
    }

    async fn networks(&self, request: Request<v1::NetworksRequest>) -> Result<Response<NetworksStream>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let node_id = self.session_node(&request, &session_id)?;
        let (feed_tx, mut feed) = mpsc::channel(networks::NETWORK_FEED_BUFFER);
        self.subscribe_networks(networks::Subscribe { node_id, tx: feed_tx });
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            let mut sequence = 0u64;
            let mut kind = v1::assignments_message::Type::Complete;
            loop {
                let batch = tokio::select! {
                    () = tx.closed() => return,
                    batch = feed.recv() => batch,
                };
                let Some(changes) = batch else {
                    let message = "network changes fell behind or their watch ended; start a new session";
                    let _ = tx.send(Err(Status::unavailable(message))).await;
                    return;
                };
                let messages = split_networks(kind, sequence, changes, ASSIGNMENT_CHUNK_BYTES);
                sequence = messages.last().map_or(sequence, |m| m.results_in);
                kind = v1::assignments_message::Type::Incremental;
                for message in messages {
                    if tx.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn session(&self, request: Request<v1::SessionRequest>) -> Result<Response<SessionStream>, Status> {
        let identity = caller(&request)?;
        self.require_leader()?;
        let addr = request.extensions().get::<PeerInfo>().map(|p| p.addr).unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
        let description = request.into_inner().description.unwrap_or_default();
        crate::validate::validate_node_description(&description).map_err(Status::invalid_argument)?;
        // The session exists before the node is written Ready, so that a heartbeat check ending
        // the previous session meanwhile sees it and does not write Down over Ready.
        let session_id = new_id();
        let (alive, ended) = oneshot::channel::<()>();
        let session = Session { id: session_id.clone(), last_heartbeat: Instant::now(), _alive: Some(alive) };
        self.sessions().insert(identity.node_id.clone(), session);
        let node = match self.set_ready(&identity.node_id, &description, addr).await {
            Ok(node) => node,
            Err(err) => {
                let mut sessions = self.sessions();
                if sessions.get(&identity.node_id).is_some_and(|s| s.id == session_id) {
                    sessions.remove(&identity.node_id);
                }
                return Err(match err {
                    ObjectError::NotFound { .. } => Status::permission_denied(format!(
                        "node {} is not part of this cluster (was it removed?); join again with a token",
                        identity.node_id
                    )),
                    err => err.into(),
                });
            }
        };
        tracing::info!(node.id = %identity.node_id, peer = %addr, "node session started");
        let (tx, rx) = mpsc::channel(4);
        let managers = self.managers().await.unwrap_or_else(|err| {
            tracing::warn!(error = %err, "cannot list managers for the session; the node keeps the ones it knows");
            Vec::new()
        });
        let message = v1::SessionMessage { session_id, node: Some(node), managers };
        let _ = tx.send(Ok(message)).await;
        // The stream stays open while the session lives and ends with it, so that the node opens
        // a new one at once; the agent's end closing it is normal.
        tokio::spawn(async move {
            tokio::select! {
                () = tx.closed() => {}
                _ = ended => {}
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let session_id = request.get_ref().session_id.clone();
        // A deposed leader ends its sessions here, so that nodes move to the new leader.
        self.require_leader()?;
        let node_id = self.session_node(&request, &session_id)?;
        if let Some(session) = self.sessions().get_mut(&node_id) {
            session.last_heartbeat = Instant::now();
        }
        let request = request.into_inner();
        if let Some(report) = request.volumes {
            self.record_volumes(&node_id, report.volumes).await?;
        }
        if let Some(info) = request.tls_info {
            self.inner
                .objects
                .modify(&node_id, |node: &mut v1::Node| {
                    let changed = node.tls_info.as_ref() != Some(&info);
                    node.tls_info = Some(info.clone());
                    changed
                })
                .await?;
        }
        // The role as this member has it: a promotion or demotion reaches the node a beat later
        // at worst.
        let (role, raft_member, remove_volumes) = match self.inner.objects.get_local::<v1::Node>(&node_id).await {
            Ok(node) => (node.role, node.manager_status.is_some(), node.volume_removals),
            Err(ObjectError::NotFound { .. }) => {
                return Err(Status::permission_denied(format!("node {node_id} was removed from the cluster")));
            }
            Err(err) => return Err(err.into()),
        };
        let period = Some(shoal_api::to_duration(self.period()));
        let trust_root = self.inner.trust_root.get();
        Ok(Response::new(v1::HeartbeatResponse { period, role, raft_member, remove_volumes, trust_root }))
    }

    async fn update_task_status(
        &self,
        request: Request<v1::UpdateTaskStatusRequest>,
    ) -> Result<Response<v1::UpdateTaskStatusResponse>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let node_id = self.session_node(&request, &session_id)?;
        self.record_statuses(&node_id, request.into_inner().updates).await?;
        Ok(Response::new(v1::UpdateTaskStatusResponse {}))
    }

    async fn assignments(
        &self,
        request: Request<v1::AssignmentsRequest>,
    ) -> Result<Response<AssignmentStream>, Status> {
        let session_id = request.get_ref().session_id.clone();
        let node_id = self.session_node(&request, &session_id)?;
        // Subscribed before the list is read: every change after the list's revision arrives,
        // and the ones before it, also in the list, are skipped by revision.
        let mut feed = self.subscribe(&node_id)?;
        let listed = self.task_list(Instant::now()).await?;
        let (tasks, listed_at) = (&listed.0, listed.1);
        let mut known: HashMap<String, Told> = HashMap::new();
        let mut changes: Vec<v1::AssignmentChange> = tasks
            .iter()
            .filter(|t| Self::relevant(t, &node_id))
            .map(|task| v1::AssignmentChange {
                action: v1::assignment_change::Action::Update as i32,
                task: Some(task.clone()),
                ..Default::default()
            })
            .collect();
        drop(listed);
        changes.retain(|change| self.sendable(change, &node_id));
        for task in changes.iter().filter_map(|c| c.task.as_ref()) {
            known.insert(task.id.clone(), Told::of(task));
        }
        // The secrets and configs of the set go before the tasks that use them.
        let mut payloads = payloads::Told::default();
        let mut with_payloads = Vec::with_capacity(changes.len());
        for change in changes {
            with_payloads.extend(payloads.around(&self.inner.objects, change).await?);
        }
        let changes = with_payloads;
        let (tx, rx) = mpsc::channel(16);
        let this = self.clone();
        // The messages are sent from a task of their own: a complete set in more parts than the
        // channel holds would otherwise wait for a receiver that is not handed out yet.
        tokio::spawn(async move {
            let complete = v1::assignments_message::Type::Complete;
            for message in split_assignments(complete, 0, changes, ASSIGNMENT_CHUNK_BYTES) {
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            let mut sequence = 1u64;
            loop {
                let first = tokio::select! {
                    () = tx.closed() => return,
                    routed = feed.recv() => routed,
                };
                let Some(first) = first else {
                    let message = "task changes fell behind or their watch ended; start a new session";
                    let _ = tx.send(Err(Status::unavailable(message))).await;
                    return;
                };
                // Everything already queued goes out together, in as few messages as its size
                // allows.
                let mut changes = Vec::new();
                let mut next = Some(first);
                while let Some(routed) = next {
                    if let Some(change) = Self::assignment_change(routed, listed_at, &node_id, &mut known) {
                        if this.sendable(&change, &node_id) {
                            match payloads.around(&this.inner.objects, change).await {
                                Ok(around) => changes.extend(around),
                                Err(err) => {
                                    let message = format!("cannot read a secret or config for the node: {err}");
                                    let _ = tx.send(Err(Status::unavailable(message))).await;
                                    return;
                                }
                            }
                        } else if let Some(task) = &change.task {
                            known.remove(&task.id);
                        }
                    }
                    next = feed.try_recv().ok();
                }
                if changes.is_empty() {
                    continue;
                }
                let incremental = v1::assignments_message::Type::Incremental;
                let messages = split_assignments(incremental, sequence, changes, ASSIGNMENT_CHUNK_BYTES);
                sequence += messages.len() as u64;
                for message in messages {
                    if tx.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl Dispatcher {
    /// What a routed change means to a node's agent: an update of a task it must run or know
    /// about, the removal of one it knew, or nothing — already in the complete set, not its
    /// business, or a change of the status alone, which the node itself reported (as Swarm's
    /// dispatcher, it sends a known task again only when what the manager decides changed).
    fn assignment_change(
        routed: Routed,
        listed_at: u64,
        node_id: &str,
        known: &mut HashMap<String, Told>,
    ) -> Option<v1::AssignmentChange> {
        let (action, task) = match routed {
            Routed::Put(revision, _) | Routed::Delete(revision, _) if revision <= listed_at => return None,
            Routed::Put(_, task) if Self::relevant(&task, node_id) => {
                let told = Told::of(&task);
                if known.insert(task.id.clone(), told) == Some(told) {
                    return None;
                }
                (v1::assignment_change::Action::Update, *task)
            }
            // A removal names the task and nothing more: the node needs no spec to stop it.
            Routed::Put(_, task) if known.remove(&task.id).is_some() => {
                (v1::assignment_change::Action::Remove, v1::Task { id: task.id, ..Default::default() })
            }
            Routed::Delete(_, id) if known.remove(&id).is_some() => {
                (v1::assignment_change::Action::Remove, v1::Task { id, ..Default::default() })
            }
            Routed::Put(..) | Routed::Delete(..) => return None,
        };
        Some(v1::AssignmentChange { action: action as i32, task: Some(task), ..Default::default() })
    }
}

impl Dispatcher {
    /// Whether `change` fits in a message the node accepts. One that does not (a task stored
    /// before specs were bounded) is not sent, since the node would fail to decode it and start
    /// over forever; the task is set REJECTED with the reason instead, as a node refuses a task
    /// it cannot run, and the orchestrator handles it as any rejected task.
    fn sendable(&self, change: &v1::AssignmentChange, node_id: &str) -> bool {
        let Some(size) = oversized(change) else { return true };
        if change.task.as_ref().is_some_and(|t| t.observed_state().is_terminal()) {
            return false; // rejected when first seen (or ended otherwise): nothing to tell
        }
        let task_id = change.task.as_ref().map(|t| t.id.clone()).unwrap_or_default();
        let service_id = change.task.as_ref().map(|t| t.service_id.clone()).unwrap_or_default();
        tracing::error!(node.id = %node_id, task.id = %task_id, service.id = %service_id, size, limit = ASSIGNMENT_MAX_BYTES, "task too large to assign: rejected");
        let update = v1::TaskStatusUpdate {
            task_id,
            status: Some(v1::TaskStatus {
                state: TaskState::Rejected as i32,
                message: "rejected by the dispatcher".to_owned(),
                err: format!(
                    "task too large to assign: {size} bytes encoded, a node accepts at most {ASSIGNMENT_MAX_BYTES}"
                ),
                ..Default::default()
            }),
        };
        let (this, node_id) = (self.clone(), node_id.to_owned());
        tokio::spawn(async move {
            let task_id = update.task_id.clone();
            if let Err(status) = this.record_status(&node_id, update, STATUS_ATTEMPTS).await {
                tracing::warn!(task.id = %task_id, error = %status.message(), "could not reject a task too large to assign");
            }
        });
        false
    }
}

/// What a node was last told of a task: the parts the manager decides. A change of anything
/// else (the status the node reports) is not sent back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Told {
    desired_state: i32,
    spec_version: u64,
}

impl Told {
    fn of(task: &v1::Task) -> Self {
        Self { desired_state: task.desired_state, spec_version: task.spec_version }
    }
}

/// Queues `routed` to each live receiver of one node; a receiver that is gone, or that fell
/// [`FEED_BUFFER`] changes behind, is dropped (its stream then ends and the node starts over).
fn deliver(senders: &mut Vec<mpsc::Sender<Routed>>, routed: Routed) {
    senders.retain(|s| !s.is_closed());
    match senders.as_slice() {
        [] => {}
        [only] => {
            if only.try_send(routed).is_err() {
                senders.clear();
            }
        }
        // Rare: a node with two streams for a moment (a new session replacing the old).
        [..] => senders.retain(|s| {
            let copy = match &routed {
                Routed::Put(r, t) => Routed::Put(*r, t.clone()),
                Routed::Delete(r, id) => Routed::Delete(*r, id.clone()),
            };
            s.try_send(copy).is_ok()
        }),
    }
}

impl Dispatcher {
    /// Hands a node's networks stream to the feed, starting the feed if it is not running.
    fn subscribe_networks(&self, request: networks::Subscribe) {
        let mut slot = self.inner.networks_feed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let request = match slot.as_ref() {
            Some(tx) => match tx.send(request) {
                Ok(()) => return,
                Err(mpsc::error::SendError(request)) => request,
            },
            None => request,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = tx.send(request);
        *slot = Some(tx);
        tokio::spawn(networks::run(self.inner.objects.clone(), rx));
    }
}

/// Cuts network changes into messages as [`split_assignments`] does with assignments.
fn split_networks(
    kind: v1::assignments_message::Type,
    sequence: u64,
    changes: Vec<v1::NetworkChange>,
    limit: usize,
) -> Vec<v1::NetworksMessage> {
    sequenced(kind, sequence, parts(changes, limit), |r#type, applies_to, results_in, changes, more| {
        v1::NetworksMessage { r#type, applies_to, results_in, changes, more }
    })
}

mod networks;
#[cfg(test)]
mod tests;

/// `period` in nanoseconds (saturating: no period comes near 584 years).
fn nanos(period: Duration) -> u64 {
    u64::try_from(period.as_nanos()).unwrap_or(u64::MAX)
}

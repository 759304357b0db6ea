//! One log subscription's decisions, without I/O: which tasks are wanted from which node, what to
//! send each node, what a node's batch means for the caller, what to warn of, and when the
//! subscription is over. Events in (tasks seen, node streams opening and closing, batches), node
//! messages out ([`NodeMessage`]); `logs.rs` drives it and `logs/tests.rs` tables it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use shoal_api::v1::{self, TaskState};

/// A message for one node's log subscription stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeMessage {
    pub(crate) node_id: String,
    pub(crate) message: v1::NodeLogSubscription,
}

/// Most warnings kept for the caller between two messages; more are counted, not kept (a
/// cluster losing hundreds of nodes at once must not grow a subscription without bound).
const MAX_WARNINGS: usize = 100;

/// Where a node stands in the subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// It was sent the subscription and has not finished.
    Subscribed,
    /// It has no session with this manager, or lost it: its lines are missing (without follow)
    /// or stop until it is back (with follow).
    Gone,
    /// It sent everything it had (`close`).
    Closed,
}

#[derive(Debug)]
struct NodeState {
    link: Link,
    /// The newest stream of the node this subscription heard of (see [`Subscription::sent`]),
    /// and whether that stream ended: events of older streams arrive late and are ignored.
    stream: u64,
    stream_ended: bool,
    /// The newest line received from the node: after it comes back, reading resumes after it.
    last_line: Option<SystemTime>,
}

/// A task whose logs are wanted, on its node.
#[derive(Debug)]
struct Wanted {
    node_id: String,
    service_id: String,
    /// Its node said its log was read to the end.
    finished: bool,
}

/// A subscription's state. Made by [`Subscription::new`] with what the caller selected (already
/// resolved to IDs), then fed.
#[derive(Debug)]
pub(crate) struct Subscription {
    id: String,
    options: v1::LogSubscriptionOptions,
    /// Selected services (ID → name, for messages) still in the store.
    services: HashMap<String, String>,
    /// Tasks selected by ID.
    selected: HashSet<String>,
    /// Tasks selected by ID that were removed before their logs were wanted.
    vanished: HashSet<String>,
    tasks: HashMap<String, Wanted>,
    nodes: BTreeMap<String, NodeState>,
    /// Hostnames, for messages.
    names: HashMap<String, String>,
    warnings: Vec<String>,
    warnings_dropped: usize,
    /// Set once a selected service was removed and nothing else is followed.
    ended: bool,
}

/// The state from which a task's container exists on its node (created at READY), so that its
/// log can be read; tasks before it have nothing to read yet.
const READABLE_FROM: TaskState = TaskState::Ready;

impl Subscription {
    /// A subscription `id` to the logs of `services` (ID and name) and `tasks` (IDs), with
    /// `options`; `names` gives nodes' hostnames for messages.
    pub(crate) fn new(
        id: String,
        options: v1::LogSubscriptionOptions,
        services: HashMap<String, String>,
        tasks: HashSet<String>,
        names: HashMap<String, String>,
    ) -> Self {
        Self {
            id,
            options,
            services,
            selected: tasks,
            vanished: HashSet::new(),
            tasks: HashMap::new(),
            nodes: BTreeMap::new(),
            names,
            warnings: Vec::new(),
            warnings_dropped: 0,
            ended: false,
        }
    }

    fn follow(&self) -> bool {
        self.options.follow
    }

    /// The subscription's ID.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Whether the logs of `task` are wanted now: it is selected (by ID or service), on a node,
    /// and its container exists.
    fn wants(&self, task: &v1::Task) -> bool {
        (self.selected.contains(&task.id) || self.services.contains_key(&task.service_id))
            && !task.node_id.is_empty()
            && task.observed_state() as i32 >= READABLE_FROM as i32
    }

    /// Takes tasks as the store has them (all of them at the start, then each change while
    /// following): the ones newly wanted are sent to their nodes, one message per node.
    pub(crate) fn tasks_seen<'a>(&mut self, tasks: impl IntoIterator<Item = &'a v1::Task>) -> Vec<NodeMessage> {
        let mut added: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for task in tasks {
            if self.tasks.contains_key(&task.id) || !self.wants(task) {
                continue;
            }
            let wanted = Wanted { node_id: task.node_id.clone(), service_id: task.service_id.clone(), finished: false };
            self.tasks.insert(task.id.clone(), wanted);
            added.entry(task.node_id.clone()).or_default().push(task.id.clone());
        }
        let mut sends = Vec::with_capacity(added.len());
        for (node_id, task_ids) in added {
            let node = self.nodes.entry(node_id.clone()).or_insert(NodeState {
                link: Link::Subscribed,
                stream: 0,
                stream_ended: false,
                last_line: None,
            });
            // A node that had closed (every task it had ended) reads the new tasks; one that is
            // gone is tried too, with all it has not finished: it may have come back meanwhile
            // (if not, `unreachable` follows).
            let was = std::mem::replace(&mut node.link, Link::Subscribed);
            let message = if was == Link::Gone {
                self.resume_message(&node_id)
            } else {
                self.message(task_ids, self.options.clone())
            };
            sends.push(NodeMessage { node_id, message });
        }
        sends
    }

    /// A task was removed from the store: if it was selected by ID and never wanted, nothing
    /// will come of it.
    pub(crate) fn task_removed(&mut self, task_id: &str) {
        if self.selected.contains(task_id) && !self.tasks.contains_key(task_id) {
            self.vanished.insert(task_id.to_owned());
        }
    }

    /// A selected service was removed: its tasks go with it.
    pub(crate) fn service_removed(&mut self, service_id: &str) {
        if let Some(name) = self.services.remove(service_id) {
            self.warn(format!("service {name} was removed"));
            if self.services.is_empty() && self.selected.is_empty() {
                self.ended = true;
            }
        }
    }

    fn message(&self, task_ids: Vec<String>, options: v1::LogSubscriptionOptions) -> v1::NodeLogSubscription {
        v1::NodeLogSubscription {
            id: self.id.clone(),
            selector: Some(v1::LogSelector { service_ids: Vec::new(), task_ids }),
            options: Some(options),
            close: false,
        }
    }

    /// The message that cancels the subscription on a node.
    pub(crate) fn close_message(&self) -> v1::NodeLogSubscription {
        v1::NodeLogSubscription { id: self.id.clone(), close: true, ..Default::default() }
    }

    /// The nodes that were sent the subscription and have not finished: they are told to stop
    /// when it ends.
    pub(crate) fn subscribed_nodes(&self) -> Vec<String> {
        self.nodes.iter().filter(|(_, n)| n.link == Link::Subscribed).map(|(id, _)| id.clone()).collect()
    }

    /// A message went out on stream `stream` of `node_id`.
    pub(crate) fn sent(&mut self, node_id: &str, stream: u64) {
        if let Some(node) = self.nodes.get_mut(node_id)
            && stream > node.stream
        {
            node.stream = stream;
            node.stream_ended = false;
        }
    }

    /// A message for `node_id` could not go out: it has no session with this manager.
    pub(crate) fn unreachable(&mut self, node_id: &str) {
        let Some(node) = self.nodes.get_mut(node_id) else { return };
        if node.link != Link::Subscribed {
            return;
        }
        node.link = Link::Gone;
        let count = self.unfinished(node_id).len();
        let label = self.label(node_id);
        let what = if count == 1 { "1 task".to_owned() } else { format!("{count} tasks") };
        if self.follow() {
            self.warn(format!(
                "node {label} is down or has no session with the leader: the logs of its {what} follow when it is back"
            ));
        } else {
            self.warn(format!(
                "node {label} is down or has no session with the leader: the logs of its {what} are missing"
            ));
        }
    }

    /// Stream `stream` of `node_id` opened (its agent started a session): while following, a
    /// node that went away is sent the subscription again, reading after the last line it sent.
    pub(crate) fn node_connected(&mut self, node_id: &str, stream: u64) -> Option<NodeMessage> {
        let follow = self.follow();
        let unfinished = self.unfinished(node_id);
        let node = self.nodes.get_mut(node_id)?;
        if stream <= node.stream {
            return None; // heard of already, or older than one heard of
        }
        node.stream = stream;
        node.stream_ended = false;
        if !follow || node.link != Link::Gone || unfinished.is_empty() {
            return None;
        }
        node.link = Link::Subscribed;
        let label = self.label(node_id);
        self.warn(format!("node {label} is back: its logs continue"));
        Some(NodeMessage { node_id: node_id.to_owned(), message: self.resume_message(node_id) })
    }

    /// The subscription for a node that comes back: every task it has not finished, read after
    /// the last line it sent (its tail was sent already).
    fn resume_message(&self, node_id: &str) -> v1::NodeLogSubscription {
        let mut options = self.options.clone();
        if let Some(last) = self.nodes.get(node_id).and_then(|n| n.last_line) {
            // From the line after the last one, as far as the clock's resolution tells them apart.
            options.since = Some(shoal_api::to_timestamp(last + Duration::from_nanos(1)));
            options.tail = None;
        }
        self.message(self.unfinished(node_id), options)
    }

    /// Stream `stream` of `node_id` ended (its session did), or its publication of this
    /// subscription, begun during that stream, broke off: what it has not sent is missing, or
    /// comes when it is back. The end of a stream older than the newest one heard of (a session
    /// replaced meanwhile) changes nothing.
    pub(crate) fn node_gone(&mut self, node_id: &str, stream: u64, reason: &str) {
        let follow = self.follow();
        let Some(node) = self.nodes.get_mut(node_id) else { return };
        if stream < node.stream || (stream == node.stream && node.stream_ended) {
            return; // an older stream, or this one's end again
        }
        node.stream = stream;
        node.stream_ended = true;
        if node.link != Link::Subscribed {
            return;
        }
        node.link = Link::Gone;
        let label = self.label(node_id);
        if follow {
            self.warn(format!("node {label} went away ({reason}): its logs stop until it is back"));
        } else {
            self.warn(format!("node {label} went away ({reason}) before it sent all its logs"));
        }
    }

    /// A batch from `node_id`: its lines for the caller (context completed: node and service;
    /// lines of tasks this node was not asked for are dropped, and counted in the second
    /// value); its finished tasks and warnings recorded; its end marker closes the node.
    pub(crate) fn published(&mut self, node_id: &str, batch: v1::PublishLogsMessage) -> (Vec<v1::LogMessage>, usize) {
        if !self.nodes.contains_key(node_id) {
            let dropped = batch.messages.len();
            return (Vec::new(), dropped);
        }
        let mut lines = Vec::with_capacity(batch.messages.len());
        let mut dropped = 0;
        let mut newest: Option<SystemTime> = None;
        for mut line in batch.messages {
            let task_id = line.context.as_ref().map(|c| c.task_id.as_str()).unwrap_or_default();
            let Some(wanted) = self.tasks.get(task_id).filter(|w| w.node_id == node_id) else {
                dropped += 1;
                continue;
            };
            line.context = Some(v1::LogContext {
                service_id: wanted.service_id.clone(),
                node_id: node_id.to_owned(),
                task_id: task_id.to_owned(),
            });
            if let Some(at) = shoal_api::from_timestamp(line.timestamp.as_ref()) {
                newest = newest.max(Some(at));
            }
            lines.push(line);
        }
        for task_id in &batch.finished_task_ids {
            if let Some(wanted) = self.tasks.get_mut(task_id).filter(|w| w.node_id == node_id) {
                wanted.finished = true;
            }
        }
        let label = self.label(node_id);
        for warning in batch.warnings {
            self.warn(format!("node {label}: {warning}"));
        }
        if let Some(node) = self.nodes.get_mut(node_id) {
            node.last_line = node.last_line.max(newest);
            if batch.close && node.link == Link::Subscribed {
                node.link = Link::Closed;
            }
        }
        if batch.close {
            for wanted in self.tasks.values_mut().filter(|w| w.node_id == node_id) {
                wanted.finished = true;
            }
        }
        (lines, dropped)
    }

    /// Whether the subscription is over. Without follow: every node involved has finished or is
    /// gone. With follow: every selected service was removed, or only tasks were selected and
    /// each has ended (or its node is gone, or it was removed before it started).
    pub(crate) fn is_done(&self) -> bool {
        if !self.follow() {
            return self.nodes.values().all(|n| n.link != Link::Subscribed);
        }
        if self.ended {
            return true;
        }
        self.services.is_empty()
            && self.selected.iter().all(|id| {
                self.vanished.contains(id)
                    || self
                        .tasks
                        .get(id)
                        .is_some_and(|w| w.finished || self.nodes.get(&w.node_id).is_none_or(|n| n.link == Link::Gone))
            })
    }

    /// The warnings gathered since the last call.
    pub(crate) fn take_warnings(&mut self) -> Vec<String> {
        let mut warnings = std::mem::take(&mut self.warnings);
        if self.warnings_dropped > 0 {
            warnings.push(format!("{} more warnings left out", self.warnings_dropped));
            self.warnings_dropped = 0;
        }
        warnings
    }

    fn warn(&mut self, warning: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(warning);
        } else {
            self.warnings_dropped += 1;
        }
    }

    /// The node's wanted tasks that have not finished, in ID order.
    fn unfinished(&self, node_id: &str) -> Vec<String> {
        let mut ids: Vec<String> =
            self.tasks.iter().filter(|(_, w)| w.node_id == node_id && !w.finished).map(|(id, _)| id.clone()).collect();
        ids.sort();
        ids
    }

    /// `w2 (ID)`, or the ID alone when the hostname is not known.
    fn label(&self, node_id: &str) -> String {
        match self.names.get(node_id).filter(|n| !n.is_empty()) {
            Some(name) => format!("{name} ({node_id})"),
            None => node_id.to_owned(),
        }
    }
}

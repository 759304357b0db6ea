//! The events broker (`shoal events`, the `shoal.v1.Events` service): every manager watches its
//! own replica of the store, turns each change of a service, node, task, network, secret or
//! config into an event as docker's `events` shows them (`service update ID (name=web,
//! replicas.new=5, replicas.old=3)`), keeps the last [`HISTORY`] for `--since`, and fans them out
//! to the subscribers.
//!
//! The watch gives the new value of a key only, so the broker keeps the last value of each
//! object key it watches to know the old one. Turning (old, new) into an event is [`derive`],
//! a pure function tested as a table. Memory is bounded: the history is a ring, and a
//! subscriber that reads too slowly falls off the broadcast channel's end and is told how many
//! events it lost rather than the manager queueing for it. A secret's or config's payload never
//! enters an event (their events carry the name only).

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures::Stream;
use prost::Message as _;
use shoal_api::v1::{self, EventAction, EventType, events_server::Events};
use shoal_raft_store::{Consistency, EventKind, Store, WatchError};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::objects::Object;

/// Events kept for `--since`, and the most a subscriber may fall behind before it loses some.
pub(crate) const HISTORY: usize = 1024;

/// Messages queued for one caller's stream.
const CALLER_QUEUE: usize = 64;

/// The key prefixes whose objects have events, and their type.
const WATCHED: [(&str, EventType); 6] = [
    (v1::Service::PREFIX, EventType::Service),
    (v1::Node::PREFIX, EventType::Node),
    (v1::Task::PREFIX, EventType::Task),
    (v1::Network::PREFIX, EventType::Network),
    (v1::Secret::PREFIX, EventType::Secret),
    (v1::Config::PREFIX, EventType::Config),
];

/// One change of one object, before it is given its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) kind: EventType,
    pub(crate) action: EventAction,
    pub(crate) id: String,
    pub(crate) attributes: BTreeMap<String, String>,
}

/// The event of a change of the object stored at `key` from `old` to `new` (`None`: absent), or
/// `None` when the key is not an object with events, a value does not decode, or the change is
/// bookkeeping only (a version, a task's status message or heartbeat time).
pub(crate) fn derive(key: &str, old: Option<&[u8]>, new: Option<&[u8]>) -> Option<Change> {
    let (prefix, kind) = WATCHED.iter().find(|(prefix, _)| key.starts_with(prefix))?;
    let id = &key[prefix.len()..];
    if id.is_empty() || id.contains('/') {
        return None;
    }
    let (action, attributes) = match kind {
        EventType::Service => change::<v1::Service>(old, new, service_attributes)?,
        EventType::Node => change::<v1::Node>(old, new, node_attributes)?,
        EventType::Task => change::<v1::Task>(old, new, task_attributes)?,
        EventType::Network => change::<v1::Network>(old, new, |_, _| Some(BTreeMap::new()))?,
        EventType::Secret => change::<v1::Secret>(old, new, |_, _| Some(BTreeMap::new()))?,
        EventType::Config => change::<v1::Config>(old, new, |_, _| Some(BTreeMap::new()))?,
        EventType::Unknown => return None,
    };
    Some(Change { kind: *kind, action, id: id.to_owned(), attributes })
}

/// The action and attributes of a change of a `T`: `name` from the newest value, and for an
/// update what `updated` says changed (`None`: nothing worth an event).
fn change<T: Object + PartialEq>(
    old: Option<&[u8]>,
    new: Option<&[u8]>,
    updated: impl Fn(&T, &T) -> Option<BTreeMap<String, String>>,
) -> Option<(EventAction, BTreeMap<String, String>)> {
    let decode = |bytes: Option<&[u8]>| bytes.map(T::decode).transpose().ok();
    let (old, new) = (decode(old)?, decode(new)?);
    let (action, mut attributes) = match (&old, &new) {
        (None, Some(new)) => (EventAction::Create, updated(new, new).unwrap_or_default()),
        (Some(old), Some(new)) => {
            let (mut a, mut b) = (old.clone(), new.clone());
            a.meta_mut().clear();
            b.meta_mut().clear();
            if a == b {
                return None;
            }
            (EventAction::Update, updated(old, new)?)
        }
        (Some(old), None) => (EventAction::Remove, updated(old, old).unwrap_or_default()),
        (None, None) => return None,
    };
    if let Some(name) = new.as_ref().or(old.as_ref()).and_then(|o| o.name()).filter(|n| !n.is_empty()) {
        attributes.insert("name".to_owned(), name.to_owned());
    }
    Some((action, attributes))
}

/// `FIELD.old` and `FIELD.new` when they differ.
fn diff(attributes: &mut BTreeMap<String, String>, field: &str, old: String, new: String) {
    if old != new {
        attributes.insert(format!("{field}.old"), old);
        attributes.insert(format!("{field}.new"), new);
    }
}

/// A protobuf enum's name as docker spells it: `TASK_STATE_RUNNING` → `running`.
fn lower(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_ascii_lowercase()
}

fn service_attributes(old: &v1::Service, new: &v1::Service) -> Option<BTreeMap<String, String>> {
    let replicas = |s: &v1::Service| match s.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(v1::service_spec::Mode::Replicated(r)) => r.replicas.to_string(),
        Some(v1::service_spec::Mode::ReplicatedJob(_)) => "job".to_owned(),
        Some(v1::service_spec::Mode::Global(_) | v1::service_spec::Mode::GlobalJob(_)) => "global".to_owned(),
        None => String::new(),
    };
    let image = |s: &v1::Service| {
        s.spec
            .as_ref()
            .and_then(|s| s.task.as_ref())
            .and_then(|t| t.container.as_ref())
            .map_or(String::new(), |c| c.image.clone())
    };
    let update_state =
        |s: &v1::Service| s.update_status.as_ref().map_or(String::new(), |u| lower(u.state().as_str_name(), ""));
    let mut attributes = BTreeMap::new();
    diff(&mut attributes, "replicas", replicas(old), replicas(new));
    diff(&mut attributes, "image", image(old), image(new));
    diff(&mut attributes, "updatestate", update_state(old), update_state(new));
    Some(attributes)
}

fn node_attributes(old: &v1::Node, new: &v1::Node) -> Option<BTreeMap<String, String>> {
    let state = |n: &v1::Node| n.status.as_ref().map_or("unknown".to_owned(), |s| lower(s.state().as_str_name(), ""));
    let availability = |n: &v1::Node| {
        n.spec.as_ref().map_or("active".to_owned(), |s| lower(s.availability().as_str_name(), "NODE_AVAILABILITY_"))
    };
    let role = |n: &v1::Node| lower(n.role().as_str_name(), "NODE_ROLE_");
    let mut attributes = BTreeMap::new();
    diff(&mut attributes, "state", state(old), state(new));
    diff(&mut attributes, "availability", availability(old), availability(new));
    diff(&mut attributes, "role", role(old), role(new));
    Some(attributes)
}

/// A task's status changes at each step of its life, and its agent rewrites it more often than
/// that (messages, times): only a change of state, desired state or node is an event.
fn task_attributes(old: &v1::Task, new: &v1::Task) -> Option<BTreeMap<String, String>> {
    let state =
        |t: &v1::Task| lower(t.status.as_ref().map_or(v1::TaskState::New, |s| s.state()).as_str_name(), "TASK_STATE_");
    let desired = |t: &v1::Task| lower(t.desired_state().as_str_name(), "TASK_STATE_");
    let creating = std::ptr::eq(old, new);
    if !creating && state(old) == state(new) && desired(old) == desired(new) && old.node_id == new.node_id {
        return None;
    }
    let mut attributes = BTreeMap::new();
    if !creating {
        diff(&mut attributes, "state", state(old), state(new));
        diff(&mut attributes, "desiredstate", desired(old), desired(new));
    }
    attributes.insert("service".to_owned(), new.service_name.clone());
    attributes.insert("slot".to_owned(), new.slot.to_string());
    if !new.node_id.is_empty() {
        attributes.insert("node".to_owned(), new.node_id.clone());
    }
    Some(attributes)
}

/// The events a subscription wants: docker's `--filter` semantics (a key given twice matches
/// either value; different keys must all match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Filters(BTreeMap<String, Vec<String>>);

/// The filter keys [`Filters::parse`] takes.
const FILTER_KEYS: &[&str] =
    &["type", "event", "id", "name", "scope", "service", "node", "network", "secret", "config", "task"];

impl Filters {
    /// The request's filters, or why one is refused.
    pub(crate) fn parse(filters: &[v1::EventFilter]) -> Result<Self, String> {
        let mut parsed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for filter in filters {
            let (key, value) = (filter.key.as_str(), filter.value.as_str());
            if !FILTER_KEYS.contains(&key) {
                return Err(format!("invalid filter {key:?}: the keys are {}", FILTER_KEYS.join(", ")));
            }
            let allowed: Option<&[&str]> = match key {
                "type" => Some(&["service", "node", "task", "network", "secret", "config"]),
                "event" => Some(&["create", "update", "remove"]),
                "scope" => Some(&["swarm", "local"]),
                _ => None,
            };
            if let Some(allowed) = allowed.filter(|a| !a.contains(&value)) {
                return Err(format!("invalid filter {key}={value:?}: it is one of {}", allowed.join(", ")));
            }
            parsed.entry(key.to_owned()).or_default().push(value.to_owned());
        }
        Ok(Self(parsed))
    }

    /// Whether `event` passes every key.
    pub(crate) fn matches(&self, event: &v1::Event) -> bool {
        let kind = type_name(event.r#type());
        let name = event.attributes.get("name").map(String::as_str);
        self.0.iter().all(|(key, values)| {
            values.iter().any(|value| match key.as_str() {
                "type" => kind == value,
                "event" => action_name(event.action()) == value,
                "id" => event.id == *value,
                "name" => name == Some(value.as_str()),
                "scope" => value == "swarm",
                object => {
                    let itself = kind == object && (event.id == *value || name == Some(value.as_str()));
                    let task_of = event.r#type() == EventType::Task
                        && matches!(object, "service" | "node")
                        && event.attributes.get(object) == Some(value);
                    itself || task_of
                }
            })
        })
    }
}

/// `service`, `node` … as docker's `Type`.
pub(crate) fn type_name(kind: EventType) -> &'static str {
    match kind {
        EventType::Service => "service",
        EventType::Node => "node",
        EventType::Task => "task",
        EventType::Network => "network",
        EventType::Secret => "secret",
        EventType::Config => "config",
        EventType::Unknown => "unknown",
    }
}

/// `create`, `update`, `remove` as docker's `Action`.
pub(crate) fn action_name(action: EventAction) -> &'static str {
    match action {
        EventAction::Create => "create",
        EventAction::Update => "update",
        EventAction::Remove => "remove",
        EventAction::Unknown => "unknown",
    }
}

/// The broker of one manager: its history and its subscribers. Cheap to clone; the watching
/// task stops when the last clone is dropped or the store stops.
#[derive(Debug, Clone)]
pub(crate) struct EventBroker {
    shared: Arc<Shared>,
    _task: Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct Shared {
    /// The last [`HISTORY`] events; new events are pushed and sent under this lock, so that a
    /// subscriber's replay and live events neither overlap nor leave a gap.
    history: Mutex<VecDeque<v1::Event>>,
    live: broadcast::Sender<v1::Event>,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Shared {
    fn history(&self) -> MutexGuard<'_, VecDeque<v1::Event>> {
        self.history.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn publish(&self, change: Change, at: SystemTime) {
        let event = v1::Event {
            time: Some(shoal_api::to_timestamp(at)),
            r#type: change.kind as i32,
            action: change.action as i32,
            id: change.id,
            attributes: change.attributes.into_iter().collect(),
        };
        let mut history = self.history();
        if history.len() == HISTORY {
            history.pop_front();
        }
        history.push_back(event.clone());
        // No subscriber is not an error.
        let _ = self.live.send(event);
    }
}

impl EventBroker {
    /// Starts watching `store` (its applied state, whether leader or not).
    pub(crate) fn start(store: Store) -> Self {
        let (live, _) = broadcast::channel(HISTORY);
        let shared = Arc::new(Shared { history: Mutex::new(VecDeque::with_capacity(HISTORY)), live });
        let task = tokio::spawn(watch(store, shared.clone()));
        Self { shared, _task: Arc::new(AbortOnDrop(task)) }
    }

    /// The kept events at or after `since` (none without it) that pass `filters`, and the
    /// receiver of the events after them.
    fn subscribe(
        &self,
        since: Option<SystemTime>,
        filters: &Filters,
    ) -> (Vec<v1::Event>, broadcast::Receiver<v1::Event>) {
        let history = self.shared.history();
        let replay = since.map_or_else(Vec::new, |since| {
            history
                .iter()
                .filter(|e| shoal_api::from_timestamp(e.time.as_ref()).is_some_and(|at| at >= since))
                .filter(|e| filters.matches(e))
                .cloned()
                .collect()
        });
        (replay, self.shared.live.subscribe())
    }
}

/// Follows the store from now on, keeping the last value of every watched key; after a gap in
/// the watch (this member installed a snapshot), the differences between the values kept and
/// the store's are the events.
async fn watch(store: Store, shared: Arc<Shared>) {
    let mut values: HashMap<String, Vec<u8>> = HashMap::new();
    let mut first = true;
    loop {
        let range = match store.range_with("/", Consistency::Stale).await {
            Ok(range) => range,
            Err(err) => {
                tracing::warn!(error = %err, "events: cannot read the store; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut now: HashMap<String, Vec<u8>> = HashMap::new();
        for kv in range.kvs {
            let Ok(key) = String::from_utf8(kv.key) else { continue };
            if WATCHED.iter().any(|(prefix, _)| key.starts_with(prefix)) {
                now.insert(key, kv.value);
            }
        }
        if !first {
            let at = SystemTime::now();
            for (key, old) in &values {
                if let Some(change) = derive(key, Some(old), now.get(key).map(Vec::as_slice)) {
                    shared.publish(change, at);
                }
            }
            for (key, new) in now.iter().filter(|(key, _)| !values.contains_key(*key)) {
                if let Some(change) = derive(key, None, Some(new)) {
                    shared.publish(change, at);
                }
            }
        }
        first = false;
        values = now;
        let mut stream = match store.watch("/", range.revision + 1) {
            Ok(stream) => stream,
            Err(WatchError::Compacted { .. }) => continue,
            Err(WatchError::Stopped { .. }) => return,
        };
        loop {
            match stream.next().await {
                Some(Ok(event)) => {
                    let Ok(key) = String::from_utf8(event.kv.key) else { continue };
                    if !WATCHED.iter().any(|(prefix, _)| key.starts_with(prefix)) {
                        continue;
                    }
                    let new = (event.kind == EventKind::Put).then_some(event.kv.value);
                    let old = match &new {
                        Some(new) => values.insert(key.clone(), new.clone()),
                        None => values.remove(&key),
                    };
                    if let Some(change) = derive(&key, old.as_deref(), new.as_deref()) {
                        shared.publish(change, SystemTime::now());
                    }
                }
                Some(Err(WatchError::Compacted { .. })) => break,
                Some(Err(WatchError::Stopped { .. })) | None => return,
            }
        }
        tracing::debug!("events: the watch fell behind the store's history; reading the store again");
    }
}

/// The caller's stream.
pub(crate) type EventStream = Pin<Box<dyn Stream<Item = Result<v1::SubscribeEventsMessage, Status>> + Send + 'static>>;

/// The `shoal.v1.Events` service of one manager.
#[derive(Debug, Clone)]
pub(crate) struct EventsService {
    broker: EventBroker,
}

impl EventsService {
    pub(crate) fn new(broker: EventBroker) -> Self {
        Self { broker }
    }

    /// The stream of a subscription: the replay, then the live events until `until` or until
    /// the caller goes away.
    pub(crate) fn open(&self, request: v1::SubscribeEventsRequest) -> Result<EventStream, Status> {
        let filters = Filters::parse(&request.filters).map_err(Status::invalid_argument)?;
        let since = shoal_api::from_timestamp(request.since.as_ref());
        let until = shoal_api::from_timestamp(request.until.as_ref());
        let (replay, mut live) = self.broker.subscribe(since, &filters);
        let (tx, rx) = mpsc::channel(CALLER_QUEUE);
        tokio::spawn(async move {
            let before_until = |e: &v1::Event| {
                until.is_none_or(|until| shoal_api::from_timestamp(e.time.as_ref()).is_some_and(|at| at <= until))
            };
            for event in replay.into_iter().filter(before_until) {
                if tx.send(Ok(v1::SubscribeEventsMessage { event: Some(event), lost: 0 })).await.is_err() {
                    return;
                }
            }
            let deadline = until.map(|until| {
                let left = until.duration_since(SystemTime::now()).unwrap_or_default();
                tokio::time::Instant::now() + left
            });
            loop {
                let next = tokio::select! {
                    next = live.recv() => next,
                    () = async {
                        match deadline {
                            Some(deadline) => tokio::time::sleep_until(deadline).await,
                            None => std::future::pending().await,
                        }
                    } => return,
                    () = tx.closed() => return,
                };
                let message = match next {
                    Ok(event) if filters.matches(&event) => v1::SubscribeEventsMessage { event: Some(event), lost: 0 },
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(lost)) => {
                        tracing::debug!(lost, "events: a subscriber fell behind");
                        v1::SubscribeEventsMessage { event: None, lost }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Box::pin(ReceiverStream::new(rx)))
    }
}

#[tonic::async_trait]
impl Events for EventsService {
    type SubscribeStream = EventStream;

    async fn subscribe(&self, request: Request<v1::SubscribeEventsRequest>) -> Result<Response<EventStream>, Status> {
        self.open(request.into_inner()).map(Response::new)
    }
}

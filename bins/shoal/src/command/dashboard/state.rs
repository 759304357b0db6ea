//! The dashboard's copy of the cluster and how it is kept current.
//!
//! [`Model`] holds the view of every node, service, task and network (see `view`) and the last
//! events; [`Hub`] shares it with the browsers: each one that connects gets the whole model as
//! one `reset` frame, then every change as a `delta` frame, in order, through a broadcast
//! channel written under the model's lock (so no change falls between a snapshot and the
//! deltas that follow it). A browser that reads too slowly is sent a fresh `reset`.
//!
//! [`watch`] keeps the model current from one manager: it subscribes to the cluster's events
//! first, then lists everything (so that nothing changes unseen in between), then reads again
//! only what the events name, gathered for [`BATCH`] — one `Get` per object, or the whole list
//! of a kind when more than [`RELIST_OVER`] changed at once (a service of thousands scaled).
//! Nodes are also listed every [`NODE_POLL`], since who leads and a manager's reachability
//! change without an event. When the manager goes away, the browsers are told, the model is
//! kept, and the watch starts again with backoff.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value, json};
use shoal_api::v1::{self, control_client::ControlClient, events_client::EventsClient};
use tokio::sync::{broadcast, mpsc};
use tonic::transport::Channel;

use super::view::{self, Kind};
use crate::command::MAX_ANSWER_BYTES;

/// How long changes are gathered before they are read and sent on.
pub(crate) const BATCH: Duration = Duration::from_millis(100);
/// More changed objects of one kind than this in a batch: the kind is listed whole.
pub(crate) const RELIST_OVER: usize = 64;
/// How often nodes are listed regardless of events.
pub(crate) const NODE_POLL: Duration = Duration::from_secs(2);
/// How many events the event page keeps.
pub(crate) const KEPT_EVENTS: usize = 500;
/// Frames a browser may fall behind before it is sent a fresh `reset`.
const FRAME_BACKLOG: usize = 256;

/// What changed in the model: the frame browsers are sent.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Change {
    pub(crate) upserts: BTreeMap<Kind, Vec<Value>>,
    pub(crate) removes: BTreeMap<Kind, Vec<String>>,
    pub(crate) events: Vec<Value>,
}

impl Change {
    pub(crate) fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removes.is_empty() && self.events.is_empty()
    }

    fn json(&self) -> Value {
        let upserts: Map<String, Value> =
            self.upserts.iter().map(|(kind, list)| (kind.plural().to_owned(), Value::from(list.clone()))).collect();
        let removes: Map<String, Value> =
            self.removes.iter().map(|(kind, ids)| (kind.plural().to_owned(), json!(ids))).collect();
        json!({ "upsert": upserts, "remove": removes, "events": self.events })
    }
}

/// Whether the dashboard is following a manager, as the page's header shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Link {
    pub(crate) manager: String,
    pub(crate) connected: bool,
    pub(crate) error: Option<String>,
}

/// The cluster as the page sees it.
#[derive(Debug)]
pub(crate) struct Model {
    objects: BTreeMap<Kind, HashMap<String, Value>>,
    events: VecDeque<Value>,
    link: Link,
}

impl Model {
    pub(crate) fn new(manager: &str) -> Self {
        Self {
            objects: Kind::ALL.into_iter().map(|kind| (kind, HashMap::new())).collect(),
            events: VecDeque::new(),
            link: Link { manager: manager.to_owned(), connected: false, error: None },
        }
    }

    fn of(&mut self, kind: Kind) -> &mut HashMap<String, Value> {
        self.objects.entry(kind).or_default()
    }

    /// Sets one object's view; returns whether it differs from what was there.
    pub(crate) fn upsert(&mut self, kind: Kind, id: String, value: Value, change: &mut Change) {
        let objects = self.of(kind);
        if objects.get(&id) != Some(&value) {
            objects.insert(id, value.clone());
            change.upserts.entry(kind).or_default().push(value);
        }
    }

    pub(crate) fn remove(&mut self, kind: Kind, id: &str, change: &mut Change) {
        if self.of(kind).remove(id).is_some() {
            change.removes.entry(kind).or_default().push(id.to_owned());
        }
    }

    /// Makes the objects of `kind` exactly `listed`, noting each difference in `change`.
    pub(crate) fn replace(&mut self, kind: Kind, listed: HashMap<String, Value>, change: &mut Change) {
        self.replace_where(kind, listed, |_| true, change);
    }

    /// Makes the objects of `kind` that `within` selects exactly `listed` (a list of part of
    /// them: the tasks of some services), noting each difference in `change`.
    pub(crate) fn replace_where(
        &mut self,
        kind: Kind,
        mut listed: HashMap<String, Value>,
        within: impl Fn(&Value) -> bool,
        change: &mut Change,
    ) {
        let gone: Vec<String> = self
            .of(kind)
            .iter()
            .filter(|(id, v)| within(v) && !listed.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove(kind, &id, change);
        }
        for (id, value) in listed.drain() {
            self.upsert(kind, id, value, change);
        }
    }

    /// Keeps `event` for the event page (the newest [`KEPT_EVENTS`]); a change carries no more
    /// than that either.
    pub(crate) fn record(&mut self, event: Value, change: &mut Change) {
        if self.events.len() == KEPT_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event.clone());
        if change.events.len() == KEPT_EVENTS {
            change.events.remove(0);
        }
        change.events.push(event);
    }

    /// The whole model as the page loads it: `GET /api/state` and each browser's first frame.
    /// Written straight from the views (no copy of the model as one JSON value).
    pub(crate) fn snapshot(&self) -> String {
        let mut out = String::from("{");
        for (kind, objects) in &self.objects {
            let mut list: Vec<(&String, &Value)> = objects.iter().collect();
            list.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push_str(&format!("\"{}\":[", kind.plural()));
            for (i, (_, value)) in list.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&value.to_string());
            }
            out.push_str("],");
        }
        out.push_str(&format!("\"events\":{},\"status\":{}}}", json!(self.events), self.status()));
        out
    }

    fn status(&self) -> Value {
        json!({ "manager": self.link.manager, "connected": self.link.connected, "error": self.link.error })
    }

    /// The services of the tasks `tasks` (each known to the model, or named by its event), or
    /// `None` if one cannot be told.
    pub(crate) fn services_of(&self, tasks: &HashMap<String, String>) -> Option<HashSet<String>> {
        let known = self.objects.get(&Kind::Task)?;
        let services = self.objects.get(&Kind::Service)?;
        let by_name: HashMap<&str, &str> =
            services.values().filter_map(|s| Some((s["name"].as_str()?, s["id"].as_str()?))).collect();
        tasks
            .iter()
            .map(|(id, service_name)| match known.get(id).and_then(|t| t["service"].as_str()) {
                Some(service) => Some(service.to_owned()),
                None => by_name.get(service_name.as_str()).map(|s| (*s).to_owned()),
            })
            .collect()
    }

    /// The number of objects of `kind`.
    #[cfg(test)]
    pub(crate) fn count(&self, kind: Kind) -> usize {
        self.objects.get(&kind).map_or(0, HashMap::len)
    }
}

/// One server-sent event: its name and one line of JSON.
pub(crate) fn frame(name: &str, data: &impl std::fmt::Display) -> Arc<str> {
    // serde_json's compact form has no newline: one `data:` line.
    format!("event: {name}\ndata: {data}\n\n").into()
}

/// The model and the browsers that follow it.
#[derive(Debug)]
pub(crate) struct Hub {
    model: Mutex<Model>,
    frames: broadcast::Sender<Arc<str>>,
}

impl Hub {
    pub(crate) fn new(manager: &str) -> Arc<Self> {
        let (frames, _) = broadcast::channel(FRAME_BACKLOG);
        Arc::new(Self { model: Mutex::new(Model::new(manager)), frames })
    }

    fn lock(&self) -> MutexGuard<'_, Model> {
        // A panic while the model was held leaves it as consistent as any single write: go on.
        self.model.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The model now, as JSON.
    pub(crate) fn snapshot(&self) -> String {
        self.lock().snapshot()
    }

    /// A `reset` frame with the model now, and the frames that follow it.
    pub(crate) fn follow(&self) -> (Arc<str>, broadcast::Receiver<Arc<str>>) {
        let model = self.lock();
        (frame("reset", &model.snapshot()), self.frames.subscribe())
    }

    /// Changes the model with `edit` and sends browsers what changed.
    pub(crate) fn apply(&self, edit: impl FnOnce(&mut Model, &mut Change)) {
        let mut model = self.lock();
        let mut change = Change::default();
        edit(&mut model, &mut change);
        if !change.is_empty() {
            // No receiver is no error: nobody has the page open.
            let _ = self.frames.send(frame("delta", &change.json()));
        }
    }

    /// Records whether the manager is followed, and tells the browsers when that changed.
    pub(crate) fn set_link(&self, connected: bool, error: Option<String>) {
        let mut model = self.lock();
        if model.link.connected == connected && model.link.error == error {
            return;
        }
        model.link.connected = connected;
        model.link.error = error;
        let _ = self.frames.send(frame("status", &model.status()));
    }

    /// Reads the model.
    pub(crate) fn read<T>(&self, read: impl FnOnce(&Model) -> T) -> T {
        read(&self.lock())
    }
}

/// Reads objects from the manager as views. It keeps the services it last read, since a task's
/// view says whether the task is up to date with its service (`shoal_manager::task_dirty`, what
/// an update replaces and what `service update` counts).
#[derive(Debug)]
struct Reader {
    control: ControlClient<Channel>,
    services: HashMap<String, v1::Service>,
}

impl Reader {
    fn task_view(&self, task: &v1::Task) -> Value {
        view::task(task, self.services.get(&task.service_id))
    }

    /// Every object of `kind`, as views keyed by ID.
    async fn list(&mut self, kind: Kind) -> Result<HashMap<String, Value>, tonic::Status> {
        let control = &mut self.control;
        Ok(match kind {
            Kind::Node => {
                let nodes = control.list_nodes(v1::ListNodesRequest::default()).await?.into_inner().nodes;
                view::keyed(&nodes, |n| &n.id, view::node)
            }
            Kind::Service => {
                let services = control.list_services(v1::ListServicesRequest::default()).await?.into_inner().services;
                self.services = services.iter().map(|s| (s.id.clone(), s.clone())).collect();
                view::keyed(&services, |s| &s.id, view::service)
            }
            Kind::Task => self.tasks(Vec::new()).await?,
            Kind::Network => {
                let networks = control.list_networks(v1::ListNetworksRequest::default()).await?.into_inner().networks;
                view::keyed(&networks, |n| &n.id, view::network)
            }
        })
    }

    /// The tasks of `services` (all tasks when empty), as views keyed by ID.
    async fn tasks(&mut self, services: Vec<String>) -> Result<HashMap<String, Value>, tonic::Status> {
        let request = v1::ListTasksRequest { service_ids: services, ..Default::default() };
        let tasks = self.control.list_tasks(request).await?.into_inner().tasks;
        Ok(tasks.iter().map(|t| (t.id.clone(), self.task_view(t))).collect())
    }

    /// One object's view, or `None` when it is gone.
    async fn get(&mut self, kind: Kind, id: &str) -> Result<Option<Value>, tonic::Status> {
        let id = id.to_owned();
        let control = &mut self.control;
        let read = match kind {
            Kind::Node => control
                .get_node(v1::GetNodeRequest { node: id })
                .await
                .map(|a| a.into_inner().node.map(|n| view::node(&n))),
            Kind::Service => {
                let read = control.get_service(v1::GetServiceRequest { service: id.clone() }).await;
                let read = read.map(|answer| answer.into_inner().service);
                // The services kept follow what was read: a task's view is made against them.
                match &read {
                    Ok(Some(service)) => {
                        self.services.insert(id, service.clone());
                    }
                    Ok(None) => {
                        self.services.remove(&id);
                    }
                    Err(status) if status.code() == tonic::Code::NotFound => {
                        self.services.remove(&id);
                    }
                    Err(_) => {}
                }
                read.map(|service| service.as_ref().map(view::service))
            }
            Kind::Task => {
                let read = control.get_task(v1::GetTaskRequest { task: id }).await;
                read.map(|answer| answer.into_inner().task.map(|t| self.task_view(&t)))
            }
            Kind::Network => control
                .get_network(v1::GetNetworkRequest { network: id })
                .await
                .map(|a| a.into_inner().network.map(|n| view::network(&n))),
        };
        match read {
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            other => other,
        }
    }
}

/// Follows the manager behind `channel` into `hub` until the process ends.
pub(crate) async fn watch(hub: Arc<Hub>, channel: Channel) {
    const FIRST: Duration = Duration::from_millis(250);
    let mut backoff = FIRST;
    loop {
        let error = follow(&hub, channel.clone()).await;
        // After a run that got through, the next try comes soon again; failed tries back off.
        if hub.read(|model| model.link.connected) {
            backoff = FIRST;
        }
        hub.set_link(false, Some(error));
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// One run of the watch: returns why it stopped.
async fn follow(hub: &Hub, channel: Channel) -> String {
    let control = ControlClient::new(channel.clone()).max_decoding_message_size(MAX_ANSWER_BYTES);
    let mut reader = Reader { control, services: HashMap::new() };
    let mut events = EventsClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES);
    let stream = match events.subscribe(v1::SubscribeEventsRequest::default()).await {
        Ok(answer) => answer.into_inner(),
        Err(status) => return format!("cannot follow the cluster's events: {}", status.message()),
    };
    // The stream is read by a task of its own: a channel's `recv` can be raced against a timer
    // without losing a message half read.
    let (messages_tx, mut messages) = mpsc::channel::<Result<v1::SubscribeEventsMessage, String>>(4096);
    let stream_reader = tokio::spawn(async move {
        let mut stream = stream;
        loop {
            let next = match stream.message().await {
                Ok(Some(message)) => Ok(message),
                Ok(None) => Err("the manager ended the event stream".to_owned()),
                Err(status) => Err(format!("the event stream broke: {}", status.message())),
            };
            let stop = next.is_err();
            if messages_tx.send(next).await.is_err() || stop {
                return;
            }
        }
    });
    let _stream_reader = AbortOnDrop(stream_reader);
    if let Err(status) = relist(hub, &mut reader, &Kind::ALL).await {
        return format!("cannot list the cluster: {}", status.message());
    }
    hub.set_link(true, None);
    let mut poll = tokio::time::interval(NODE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            message = messages.recv() => message,
            _ = poll.tick() => {
                if let Err(status) = relist(hub, &mut reader, &[Kind::Node]).await {
                    return format!("cannot list the nodes: {}", status.message());
                }
                continue;
            }
        };
        let mut batch = match first {
            Some(Ok(message)) => vec![message],
            Some(Err(error)) => return error,
            None => return "the event stream ended".to_owned(),
        };
        let deadline = tokio::time::Instant::now() + BATCH;
        while let Ok(Some(next)) = tokio::time::timeout_at(deadline, messages.recv()).await {
            match next {
                Ok(message) => batch.push(message),
                Err(error) => return error,
            }
        }
        if let Err(status) = catch_up(hub, &mut reader, batch).await {
            return format!("cannot read the changed objects: {}", status.message());
        }
    }
}

/// Drops the task it holds.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Lists `kinds` whole (in the order of [`Kind::ALL`]: services before their tasks) and makes
/// the model match.
async fn relist(hub: &Hub, reader: &mut Reader, kinds: &[Kind]) -> Result<(), tonic::Status> {
    let mut listed = Vec::new();
    for &kind in kinds {
        listed.push((kind, reader.list(kind).await?));
    }
    hub.apply(|model, change| {
        for (kind, objects) in listed {
            model.replace(kind, objects, change);
        }
    });
    Ok(())
}

/// What a batch of events asks to read again: per kind, the IDs changed and those removed.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Dirty {
    pub(crate) changed: BTreeMap<Kind, HashSet<String>>,
    pub(crate) removed: BTreeMap<Kind, HashSet<String>>,
    /// Events were lost: read everything.
    pub(crate) all: bool,
    /// The changed tasks and the names of their services, as their events say.
    pub(crate) task_services: HashMap<String, String>,
}

impl Dirty {
    pub(crate) fn of(batch: &[v1::SubscribeEventsMessage]) -> Self {
        let mut dirty = Dirty::default();
        for message in batch {
            dirty.all |= message.lost > 0;
            let Some(event) = &message.event else { continue };
            let Some(kind) = Kind::of_event(event.r#type()) else { continue };
            let (add, drop) = if event.action() == v1::EventAction::Remove {
                (&mut dirty.removed, &mut dirty.changed)
            } else {
                (&mut dirty.changed, &mut dirty.removed)
            };
            add.entry(kind).or_default().insert(event.id.clone());
            if let Some(ids) = drop.get_mut(&kind) {
                ids.remove(&event.id);
            }
            if kind == Kind::Task && event.action() != v1::EventAction::Remove {
                let service = event.attributes.get("service").cloned().unwrap_or_default();
                dirty.task_services.insert(event.id.clone(), service);
            } else if kind == Kind::Task {
                dirty.task_services.remove(&event.id);
            }
        }
        dirty
    }
}

/// Which tasks a batch reads again.
#[derive(Debug, PartialEq)]
pub(crate) enum TaskRead {
    /// Each changed task by itself.
    Each,
    /// The tasks of these services (and each other changed task by itself).
    Of(HashSet<String>),
    /// Every task.
    All,
}

/// Which tasks to read again for `dirty`: the tasks of every service whose spec may have changed
/// (whether each is up to date depends on it); when many tasks changed, the tasks of their
/// services — or every task, if a service of theirs cannot be told or services came or went in
/// the same batch (a name may now be another service's).
pub(crate) fn task_read(dirty: &Dirty, model: &Model) -> TaskRead {
    if dirty.all {
        return TaskRead::All;
    }
    let mut services: HashSet<String> = dirty.changed.get(&Kind::Service).cloned().unwrap_or_default();
    if dirty.changed.get(&Kind::Task).map_or(0, HashSet::len) > RELIST_OVER {
        let known = model.objects.get(&Kind::Service);
        let services_came_or_went = dirty.removed.get(&Kind::Service).is_some_and(|ids| !ids.is_empty())
            || services.iter().any(|id| !known.is_some_and(|k| k.contains_key(id)));
        match model.services_of(&dirty.task_services) {
            Some(of_tasks) if !services_came_or_went => services.extend(of_tasks),
            _ => return TaskRead::All,
        }
    }
    if services.is_empty() { TaskRead::Each } else { TaskRead::Of(services) }
}

/// Reads what `batch` names and sends browsers the difference with its events.
async fn catch_up(hub: &Hub, reader: &mut Reader, batch: Vec<v1::SubscribeEventsMessage>) -> Result<(), tonic::Status> {
    let dirty = Dirty::of(&batch);
    let plan = hub.read(|model| task_read(&dirty, model));
    let mut relisted = Vec::new();
    let mut partly: Option<(HashSet<String>, HashMap<String, Value>)> = None;
    let mut read = Vec::new();
    // In the order of Kind::ALL: services are read before the views of their tasks are made.
    for kind in Kind::ALL {
        let changed = dirty.changed.get(&kind).map_or(0, HashSet::len);
        let whole = match kind {
            Kind::Task => plan == TaskRead::All,
            _ => dirty.all || changed > RELIST_OVER,
        };
        if whole {
            relisted.push((kind, reader.list(kind).await?));
            continue;
        }
        if kind == Kind::Task
            && let TaskRead::Of(services) = &plan
        {
            let tasks = reader.tasks(services.iter().cloned().collect()).await?;
            partly = Some((services.clone(), tasks));
        }
        for id in dirty.changed.get(&kind).into_iter().flatten() {
            if partly.as_ref().is_some_and(|(_, listed)| listed.contains_key(id)) {
                continue;
            }
            read.push((kind, id.clone(), reader.get(kind, id).await?));
        }
    }
    hub.apply(|model, change| {
        let whole: HashSet<Kind> = relisted.iter().map(|(kind, _)| *kind).collect();
        for (kind, objects) in relisted {
            model.replace(kind, objects, change);
        }
        if let Some((services, tasks)) = partly {
            let of_those = |t: &Value| t["service"].as_str().is_some_and(|s| services.contains(s));
            model.replace_where(Kind::Task, tasks, of_those, change);
        }
        for (kind, ids) in &dirty.removed {
            if !whole.contains(kind) {
                ids.iter().for_each(|id| model.remove(*kind, id, change));
            }
        }
        for (kind, id, value) in read {
            match value {
                Some(value) => model.upsert(kind, id, value, change),
                None => model.remove(kind, &id, change),
            }
        }
        for event in batch.iter().filter_map(|m| m.event.as_ref()) {
            model.record(view::event(event), change);
        }
    });
    Ok(())
}

//! The log broker (`shoal service logs`), on the Raft leader, where the agents' sessions are: a
//! caller's subscription (the `shoal.v1.Logs` service) is resolved to tasks, sent to the nodes
//! that hold them over each node's `LogSubscriptions` stream, and the batches the nodes publish
//! (`PublishLogs`) are fanned into the caller's stream. While following, new tasks of the
//! selected services are subscribed on their nodes as they start, and a node that goes away is
//! reported and dropped (and sent the subscription again if it comes back) without ending the
//! stream — where Swarm's `service logs -f` hangs (moby#33183).
//!
//! Memory is bounded: every queue is a bounded channel (a node's subscription messages, a
//! subscription's batches, the caller's stream), and a batch is taken from the nodes only when
//! the caller's stream has room, so a slow reader holds back the agents' reads through gRPC flow
//! control rather than filling the manager. Lines are never logged.
//!
//! A manager that is not the leader relays the subscription to the leader over its own manager
//! channel (the leader checks the relaying manager's certificate as it would the caller's): the
//! CLI may ask any manager.

mod subscription;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use shoal_api::v1::{self, logs_server::Logs};
use shoal_raft_store::EventKind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use self::subscription::{NodeMessage, Subscription};
use crate::ids::new_id;
use crate::objects::{Object, ObjectStore, decode, kv_id};

/// The stream of log subscriptions a node's agent reads during its session.
pub(crate) type NodeSubscriptionStream = ReceiverStream<Result<v1::LogSubscriptionsMessage, Status>>;

/// The caller's stream of batches.
pub(crate) type LogStream = Pin<Box<dyn Stream<Item = Result<v1::SubscribeLogsMessage, Status>> + Send + 'static>>;

/// Subscription messages queued for one node. They are small and few (one per subscription and
/// change); a node whose queue is full is not reading, and is reported missing.
const NODE_QUEUE: usize = 256;

/// Batches queued for one subscription from all its nodes; past it, the nodes' publications
/// wait (gRPC flow control takes it back to their reads).
const SUBSCRIPTION_QUEUE: usize = 16;

/// Batches queued for the caller.
const CALLER_QUEUE: usize = 4;

/// How often a node's stream checks that its session is still the current one, and a
/// subscription that this manager is still the leader.
const LIVENESS_CHECK: Duration = Duration::from_secs(1);

/// The metadata key a manager sets on a subscription it relays to the leader, so that a
/// manager that is no longer the leader refuses it rather than relaying it on (no loops).
const RELAYED_METADATA: &str = "shoal-logs-relayed";

/// What reaches a subscription from the nodes.
#[derive(Debug)]
enum Event {
    /// A batch a node published.
    Published { node_id: String, batch: v1::PublishLogsMessage },
    /// A node's publication broke off before its end marker; `stream` is the node's
    /// subscription stream (its session) when the publication began.
    PublicationEnded { node_id: String, stream: u64, reason: String },
    /// A node opened its subscription stream `stream` (a new session).
    NodeConnected { node_id: String, stream: u64 },
    /// A node's subscription stream `stream` ended (its session did).
    NodeGone { node_id: String, stream: u64 },
}

/// The broker: the nodes' subscription streams and the live subscriptions. Cheap to clone; one
/// per dispatcher.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogBroker {
    state: Arc<Mutex<BrokerState>>,
}

#[derive(Debug, Default)]
struct BrokerState {
    /// Each node's current subscription stream: its number and its queue.
    nodes: HashMap<String, (u64, mpsc::Sender<Result<v1::LogSubscriptionsMessage, Status>>)>,
    /// Each live subscription's queue.
    subscriptions: HashMap<String, mpsc::Sender<Event>>,
    /// The number of the last node stream opened.
    streams: u64,
}

impl LogBroker {
    fn state(&self) -> MutexGuard<'_, BrokerState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens `node_id`'s subscription stream for a session, replacing the one it had. The stream
    /// ends when `alive` (checked every second) says the session is over or the agent closes
    /// it; every subscription hears of both ends.
    pub(crate) fn node_stream(
        &self,
        node_id: String,
        alive: impl Fn() -> bool + Send + 'static,
    ) -> NodeSubscriptionStream {
        let (tx, rx) = mpsc::channel(NODE_QUEUE);
        let stream = {
            let mut state = self.state();
            state.streams += 1;
            let stream = state.streams;
            state.nodes.insert(node_id.clone(), (stream, tx.clone()));
            stream
        };
        tracing::debug!(node.id = %node_id, stream, "log subscription stream opened");
        let broker = self.clone();
        tokio::spawn(async move {
            broker.tell_all(|| Event::NodeConnected { node_id: node_id.clone(), stream }).await;
            let mut check = tokio::time::interval(LIVENESS_CHECK);
            loop {
                tokio::select! {
                    () = tx.closed() => break,
                    _ = check.tick() => if !alive() { break },
                }
            }
            {
                let mut state = broker.state();
                if state.nodes.get(&node_id).is_some_and(|(s, _)| *s == stream) {
                    state.nodes.remove(&node_id);
                }
            }
            drop(tx);
            tracing::debug!(node.id = %node_id, stream, "log subscription stream closed");
            broker.tell_all(|| Event::NodeGone { node_id: node_id.clone(), stream }).await;
        });
        ReceiverStream::new(rx)
    }

    /// Hands an event to every live subscription, waiting for room in each queue (its own
    /// task, so nothing else waits).
    async fn tell_all(&self, event: impl Fn() -> Event) {
        let queues: Vec<mpsc::Sender<Event>> = self.state().subscriptions.values().cloned().collect();
        for queue in queues {
            let _ = queue.send(event()).await;
        }
    }

    /// Queues `message` for the node's current stream; the stream's number, or `None` when the
    /// node has none (no session here) or is not reading.
    fn send_to_node(&self, node_id: &str, message: v1::NodeLogSubscription) -> Option<u64> {
        let state = self.state();
        let (stream, tx) = state.nodes.get(node_id)?;
        let message = v1::LogSubscriptionsMessage { subscriptions: vec![message] };
        tx.try_send(Ok(message)).ok().map(|()| *stream)
    }

    fn register(&self, id: &str, events: mpsc::Sender<Event>) {
        self.state().subscriptions.insert(id.to_owned(), events);
    }

    fn unregister(&self, id: &str) {
        self.state().subscriptions.remove(id);
    }

    /// Takes a node's publication of one subscription: `first` (already read, naming the
    /// subscription) and the rest of `stream`, each batch handed to the subscription as it has
    /// room. Returns when the node sent its end marker, the stream broke, or the subscription
    /// ended (the node then stops). `current` says whether a session ID is the node's current one.
    pub(crate) async fn publish(
        &self,
        node_id: String,
        first: v1::PublishLogsMessage,
        mut stream: impl Stream<Item = Result<v1::PublishLogsMessage, Status>> + Unpin,
        current: impl Fn(&str) -> bool,
    ) -> Result<(), Status> {
        let subscription_id = first.subscription_id.clone();
        let (queue, stream_number) = {
            let state = self.state();
            let stream_number = state.nodes.get(&node_id).map_or(0, |(stream, _)| *stream);
            (state.subscriptions.get(&subscription_id).cloned(), stream_number)
        };
        let Some(queue) = queue else {
            return Err(Status::not_found(format!("log subscription {subscription_id} has ended; stop publishing it")));
        };
        let mut next = Some(first);
        loop {
            let batch = match next.take() {
                Some(batch) => batch,
                None => match tokio::select! {
                    next = stream.next() => next,
                    // The subscription ended (its caller went away): nothing more is wanted.
                    () = queue.closed() => return Ok(()),
                } {
                    Some(Ok(batch)) => batch,
                    None => {
                        let reason = "its publication broke off".to_owned();
                        let _ = queue.send(Event::PublicationEnded { node_id, stream: stream_number, reason }).await;
                        return Ok(());
                    }
                    Some(Err(status)) => {
                        let reason = format!("its publication broke off: {}", status.message());
                        let _ = queue.send(Event::PublicationEnded { node_id, stream: stream_number, reason }).await;
                        return Err(status);
                    }
                },
            };
            if batch.subscription_id != subscription_id || !current(&batch.session_id) {
                let reason = "its publication named another subscription or an old session".to_owned();
                let _ = queue.send(Event::PublicationEnded { node_id, stream: stream_number, reason }).await;
                return Err(Status::invalid_argument(format!(
                    "a publication carries one subscription ({subscription_id}) of the node's current session"
                )));
            }
            let close = batch.close;
            if queue.send(Event::Published { node_id: node_id.clone(), batch }).await.is_err() {
                return Ok(()); // the subscription ended: nothing more is wanted
            }
            if close {
                return Ok(());
            }
        }
    }
}

/// The `shoal.v1.Logs` service of one manager.
#[derive(Debug, Clone)]
pub(crate) struct LogsService {
    objects: ObjectStore,
    broker: LogBroker,
    /// This manager's client TLS, to relay subscriptions to the leader; without it, a manager
    /// that is not the leader refuses them, naming the leader.
    relay_tls: Option<rustls::ClientConfig>,
    /// The channel to the leader the last relay used (its address and the channel).
    relay: Arc<tokio::sync::Mutex<Option<(String, Channel)>>>,
}

impl LogsService {
    /// The service, answering from `broker` on the leader.
    pub(crate) fn new(objects: ObjectStore, broker: LogBroker, relay_tls: Option<rustls::ClientConfig>) -> Self {
        Self { objects, broker, relay_tls, relay: Arc::default() }
    }

    /// Resolves the selector, registers the subscription, sends it to the nodes and drives it
    /// on a task of its own; the caller reads the returned stream.
    async fn subscribe(&self, request: v1::SubscribeLogsRequest) -> Result<LogStream, Status> {
        let selector = request.selector.unwrap_or_default();
        if selector.service_ids.is_empty() && selector.task_ids.is_empty() {
            return Err(Status::invalid_argument("no service or task given: name at least one"));
        }
        let options = request.options.unwrap_or_default();
        for stream in &options.streams {
            if !matches!(v1::LogStream::try_from(*stream), Ok(v1::LogStream::Stdout | v1::LogStream::Stderr)) {
                return Err(Status::invalid_argument(format!(
                    "unknown log stream {stream}: ask for stdout ({}) or stderr ({})",
                    v1::LogStream::Stdout as i32,
                    v1::LogStream::Stderr as i32
                )));
            }
        }
        let (services, services_at) = self.objects.list_at::<v1::Service>().await?;
        let (tasks, tasks_at) = self.objects.list_at::<v1::Task>().await?;
        let nodes = self.objects.list::<v1::Node>().await?;
        let mut selected_services = HashMap::new();
        for reference in &selector.service_ids {
            let service = resolve(&services, reference)?;
            let name = service.name().unwrap_or(&service.id).to_owned();
            selected_services.insert(service.id.clone(), name);
        }
        let mut selected_tasks = HashSet::new();
        for reference in &selector.task_ids {
            selected_tasks.insert(resolve(&tasks, reference)?.id.clone());
        }
        let names = nodes
            .into_iter()
            .map(|n| (n.id, n.description.map(|d| d.hostname).unwrap_or_default()))
            .collect::<HashMap<_, _>>();
        let follow = options.follow;
        let id = new_id();
        let mut subscription = Subscription::new(id.clone(), options, selected_services, selected_tasks, names);
        // Changes after the reads: a follower misses none (a service removed after its read, a
        // task changed after its read).
        let watches: Option<Watches> = if follow {
            let store = self.objects.store();
            let watch = |prefix: &str, from: u64| {
                store
                    .watch(prefix, from + 1)
                    .map_err(|e| Status::unavailable(format!("cannot follow the store's changes: {e}; try again")))
            };
            Some((watch(v1::Task::PREFIX, tasks_at)?, watch(v1::Service::PREFIX, services_at)?))
        } else {
            None
        };
        let (events_tx, events) = mpsc::channel(SUBSCRIPTION_QUEUE);
        self.broker.register(&id, events_tx);
        let sends = subscription.tasks_seen(&tasks);
        drop(tasks);
        deliver(&self.broker, &mut subscription, sends);
        tracing::info!(subscription.id = %id, follow, "log subscription started");
        let (tx, rx) = mpsc::channel(CALLER_QUEUE);
        let core = Core { broker: self.broker.clone(), objects: self.objects.clone(), subscription };
        let driver = Driver { core, events, tx };
        tokio::spawn(driver.run(watches));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    /// Relays a subscription to the leader (this manager is not the leader) and its stream back.
    async fn relay(&self, request: Request<v1::SubscribeLogsRequest>) -> Result<LogStream, Status> {
        let store = self.objects.store();
        if request.metadata().contains_key(RELAYED_METADATA) {
            return Err(Status::unavailable(format!(
                "manager {} was relayed a log subscription but is not the leader (leadership is changing); try again",
                store.addr()
            )));
        }
        let Some(leader) = crate::status::leader_addr(store) else {
            return Err(Status::unavailable(format!(
                "manager {} is not the leader and knows of none: {}",
                store.addr(),
                crate::status::NO_QUORUM
            )));
        };
        let Some(tls) = self.relay_tls.clone() else {
            let mut status = Status::unavailable(format!(
                "manager {} is not the leader; ask the leader at {leader} for logs",
                store.addr()
            ));
            if let Ok(value) = leader.parse() {
                status.metadata_mut().insert(shoal_api::LEADER_METADATA, value);
            }
            return Err(status);
        };
        let channel = {
            let mut relay = self.relay.lock().await;
            match relay.as_ref().filter(|(addr, _)| *addr == leader) {
                Some((_, channel)) => channel.clone(),
                None => {
                    let channel = shoal_api::connect(&leader, tls).await.map_err(|e| {
                        Status::unavailable(format!("cannot reach the leader at {leader} to relay the logs: {e}"))
                    })?;
                    *relay = Some((leader.clone(), channel.clone()));
                    channel
                }
            }
        };
        let mut relayed = Request::new(request.into_inner());
        relayed.metadata_mut().insert(RELAYED_METADATA, tonic::metadata::MetadataValue::from_static("1"));
        tracing::debug!(leader = %leader, "log subscription relayed to the leader");
        let stream = v1::logs_client::LogsClient::new(channel).subscribe_logs(relayed).await?.into_inner();
        Ok(Box::pin(stream))
    }
}

#[tonic::async_trait]
impl Logs for LogsService {
    type SubscribeLogsStream = LogStream;

    async fn subscribe_logs(&self, request: Request<v1::SubscribeLogsRequest>) -> Result<Response<LogStream>, Status> {
        let stream = if self.objects.store().is_leader() {
            self.subscribe(request.into_inner()).await?
        } else {
            self.relay(request).await?
        };
        Ok(Response::new(stream))
    }
}

/// The object of `objects` that `reference` names: full ID, then name, then unique ID prefix.
fn resolve<'a, T: Object>(objects: &'a [T], reference: &str) -> Result<&'a T, Status> {
    if reference.is_empty() {
        return Err(Status::invalid_argument(format!("an empty {} name or ID", T::KIND)));
    }
    if let Some(object) = objects.iter().find(|o| o.id() == reference) {
        return Ok(object);
    }
    let by_name: Vec<&T> = objects.iter().filter(|o| o.name() == Some(reference)).collect();
    let candidates =
        if by_name.is_empty() { objects.iter().filter(|o| o.id().starts_with(reference)).collect() } else { by_name };
    match candidates.as_slice() {
        [one] => Ok(one),
        [] => Err(Status::not_found(format!("no such {}: {reference}", T::KIND))),
        many => Err(Status::failed_precondition(format!(
            "{kind} {reference:?} is ambiguous ({} {kind}s match); use a longer ID",
            many.len(),
            kind = T::KIND
        ))),
    }
}

/// Sends each message to its node; a node that cannot take it is reported missing.
fn deliver(broker: &LogBroker, subscription: &mut Subscription, sends: impl IntoIterator<Item = NodeMessage>) {
    for NodeMessage { node_id, message } in sends {
        match broker.send_to_node(&node_id, message) {
            Some(stream) => subscription.sent(&node_id, stream),
            None => subscription.unreachable(&node_id),
        }
    }
}

/// A subscription's task: feeds it the nodes' events and the store's changes, and hands its
/// lines and warnings to the caller.
struct Driver {
    core: Core,
    events: mpsc::Receiver<Event>,
    tx: mpsc::Sender<Result<v1::SubscribeLogsMessage, Status>>,
}

/// What the driver's event handlers work on.
struct Core {
    broker: LogBroker,
    objects: ObjectStore,
    subscription: Subscription,
}

/// The store watches a follower reads: tasks and services.
type Watches = (shoal_raft_store::WatchStream, shoal_raft_store::WatchStream);

/// What ended a subscription.
#[derive(Debug)]
enum End {
    /// Everything was sent (or the followed services are gone).
    Done,
    /// The caller went away.
    Cancelled,
    /// This manager cannot go on serving it; the caller gets the status.
    Failed(Status),
}

impl Driver {
    async fn run(mut self, watches: Option<Watches>) {
        let id = self.core.subscription.id().to_owned();
        let end = self.drive(watches).await;
        let core = &self.core;
        core.broker.unregister(&id);
        let close = core.subscription.close_message();
        for node_id in core.subscription.subscribed_nodes() {
            let _ = core.broker.send_to_node(&node_id, close.clone());
        }
        match end {
            End::Done => tracing::info!(subscription.id = %id, "log subscription complete"),
            End::Cancelled => tracing::info!(subscription.id = %id, "log subscription cancelled by its caller"),
            End::Failed(status) => {
                tracing::warn!(subscription.id = %id, error = %status.message(), "log subscription ended");
                let _ = self.tx.send(Err(status)).await;
            }
        }
    }

    async fn drive(&mut self, mut watches: Option<Watches>) -> End {
        let Self { core, events, tx } = self;
        let mut outgoing: Option<v1::SubscribeLogsMessage> = None;
        let mut leader_check = tokio::time::interval(LIVENESS_CHECK);
        loop {
            let warnings = core.subscription.take_warnings();
            if !warnings.is_empty() {
                outgoing.get_or_insert_with(Default::default).warnings.extend(warnings);
            }
            if outgoing.is_none() && core.subscription.is_done() {
                return End::Done;
            }
            let (tasks, services) = match watches.as_mut() {
                Some((tasks, services)) => (Some(tasks), Some(services)),
                None => (None, None),
            };
            tokio::select! {
                () = tx.closed() => return End::Cancelled,
                permit = tx.reserve(), if outgoing.is_some() => match permit {
                    Ok(permit) => permit.send(Ok(outgoing.take().unwrap_or_default())),
                    Err(_) => return End::Cancelled,
                },
                // Taken only when the caller has room: the nodes wait otherwise.
                event = events.recv(), if outgoing.is_none() => match event {
                    Some(event) => outgoing = core.on_event(event),
                    None => return End::Failed(Status::internal("the log broker dropped a live subscription")),
                },
                change = next_change(tasks) => match change {
                    Ok(event) => core.on_task_change(event),
                    Err(reason) => match core.rewatch_tasks(&reason).await {
                        Ok(watch) => if let Some((tasks, _)) = watches.as_mut() { *tasks = watch },
                        Err(status) => return End::Failed(status),
                    },
                },
                change = next_change(services) => match change {
                    Ok(event) if event.kind == EventKind::Delete => {
                        core.subscription.service_removed(&kv_id::<v1::Service>(&event.kv.key));
                    }
                    Ok(_) => {}
                    Err(reason) => return End::Failed(Status::unavailable(format!(
                        "following the services broke off ({reason}); run the command again"
                    ))),
                },
                _ = leader_check.tick() => {
                    let store = core.objects.store();
                    if !store.is_leader() {
                        return End::Failed(Status::unavailable(format!(
                            "manager {} is no longer the leader; run the command again",
                            store.addr()
                        )));
                    }
                }
            }
        }
    }
}

impl Core {
    /// Feeds a node's event to the subscription; a batch's lines become a message.
    fn on_event(&mut self, event: Event) -> Option<v1::SubscribeLogsMessage> {
        match event {
            Event::Published { node_id, batch } => {
                let (messages, dropped) = self.subscription.published(&node_id, batch);
                if dropped > 0 {
                    tracing::warn!(
                        subscription.id = %self.subscription.id(),
                        node.id = %node_id,
                        dropped,
                        "lines of tasks the node was not asked for were dropped"
                    );
                }
                (!messages.is_empty()).then(|| v1::SubscribeLogsMessage { messages, warnings: Vec::new() })
            }
            Event::PublicationEnded { node_id, stream, reason } => {
                self.subscription.node_gone(&node_id, stream, &reason);
                None
            }
            Event::NodeConnected { node_id, stream } => {
                let sends = self.subscription.node_connected(&node_id, stream);
                deliver(&self.broker, &mut self.subscription, sends);
                None
            }
            Event::NodeGone { node_id, stream } => {
                self.subscription.node_gone(&node_id, stream, "its session ended");
                None
            }
        }
    }

    fn on_task_change(&mut self, event: shoal_raft_store::Event) {
        let id = kv_id::<v1::Task>(&event.kv.key);
        match event.kind {
            EventKind::Put => match decode::<v1::Task>(&id, &event.kv.value, event.kv.mod_revision) {
                Ok(task) => {
                    let sends = self.subscription.tasks_seen([&task]);
                    deliver(&self.broker, &mut self.subscription, sends);
                }
                Err(err) => tracing::warn!(task.id = %id, error = %err, "undecodable task change skipped"),
            },
            EventKind::Delete => self.subscription.task_removed(&id),
        }
    }

    /// The task watch broke off (a snapshot replaced the history it followed): reads the tasks
    /// again, takes what changed, and watches from there.
    async fn rewatch_tasks(&mut self, reason: &str) -> Result<shoal_raft_store::WatchStream, Status> {
        tracing::info!(subscription.id = %self.subscription.id(), %reason, "task watch broke off; reading the tasks again");
        let (tasks, at) = self.objects.list_at::<v1::Task>().await.map_err(Status::from)?;
        let sends = self.subscription.tasks_seen(&tasks);
        deliver(&self.broker, &mut self.subscription, sends);
        self.objects
            .store()
            .watch(v1::Task::PREFIX, at + 1)
            .map_err(|e| Status::unavailable(format!("cannot follow the tasks again: {e}; run the command again")))
    }
}

/// The next change of a watch, or why it ended; never, without a watch.
async fn next_change(watch: Option<&mut shoal_raft_store::WatchStream>) -> Result<shoal_raft_store::Event, String> {
    match watch {
        Some(watch) => match watch.next().await {
            Some(Ok(event)) => Ok(event),
            Some(Err(err)) => Err(err.to_string()),
            None => Err("the store stopped".to_owned()),
        },
        None => std::future::pending().await,
    }
}

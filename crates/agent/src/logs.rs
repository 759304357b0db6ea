//! The agent's side of `shoal service logs`: during a session, the manager's log subscriptions
//! (the dispatcher's `LogSubscriptions` stream) name tasks of this node whose output is wanted;
//! for each subscription the agent reads those containers' logs through the runtime (since, tail,
//! follow) and publishes the lines in batches (`PublishLogs`, one call per subscription), marking
//! each task whose log was read to its end and, without follow, the subscription's end.
//!
//! Memory is bounded: lines wait in a bounded queue between the readers and the batcher, a batch
//! holds at most [`BATCH_LINES`] lines and [`BATCH_BYTES`] bytes, and a batch goes out only as
//! the manager takes it (gRPC flow control), so a slow caller at the other end slows the reads
//! rather than growing anything here. Without follow, at most [`CONCURRENT_READS`] logs are read
//! at once (the runtime reads a log's requested part into memory before it streams it; a log is
//! at most about 20 MiB). Lines are never logged.
//!
//! Everything stops when the manager closes a subscription or the session ends (dropping
//! [`SessionLogs`] aborts its tasks).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use shoal_api::v1::{self, dispatcher_client::DispatcherClient};
use shoal_runtime::logs::{LogLine, Stream};
use shoal_runtime::{ContainerError, ContainerRuntime, LogOptions};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tonic::transport::Channel;

/// Most lines in one published batch.
pub(crate) const BATCH_LINES: usize = 1000;

/// Most bytes of line data in one published batch (a line is at most 16 KiB: the runtime cuts
/// longer ones), well below the 4 MiB a gRPC message may have.
pub(crate) const BATCH_BYTES: usize = 256 << 10;

/// How long a line waits for others to join its batch.
const BATCH_WAIT: Duration = Duration::from_millis(50);

/// Lines queued between a subscription's readers and its batcher.
const LINE_QUEUE: usize = 256;

/// Task lists queued for a running subscription (the manager sends one per change).
const UPDATE_QUEUE: usize = 64;

/// Logs read at once without follow, per session.
pub(crate) const CONCURRENT_READS: usize = 4;

/// The log subscriptions of one session.
#[derive(Debug)]
pub(crate) struct SessionLogs {
    runtime: Arc<dyn ContainerRuntime>,
    dispatcher: DispatcherClient<Channel>,
    session_id: String,
    /// Each running subscription's queue of newly wanted tasks; dropping it cancels it.
    running: HashMap<String, mpsc::Sender<Vec<String>>>,
    tasks: JoinSet<()>,
    reads: Arc<Semaphore>,
}

impl SessionLogs {
    /// The subscriptions of session `session_id`, published through `dispatcher`.
    pub(crate) fn new(
        runtime: Arc<dyn ContainerRuntime>,
        dispatcher: DispatcherClient<Channel>,
        session_id: String,
    ) -> Self {
        Self {
            runtime,
            dispatcher,
            session_id,
            running: HashMap::new(),
            tasks: JoinSet::new(),
            reads: Arc::new(Semaphore::new(CONCURRENT_READS)),
        }
    }

    /// Takes a message of the subscription stream: starts, extends or cancels subscriptions.
    pub(crate) fn apply(&mut self, message: v1::LogSubscriptionsMessage) {
        // Subscriptions that ended on their own are forgotten.
        while self.tasks.try_join_next().is_some() {}
        self.running.retain(|_, queue| !queue.is_closed());
        for subscription in message.subscriptions {
            let id = subscription.id.clone();
            if subscription.close {
                if self.running.remove(&id).is_some() {
                    tracing::debug!(subscription.id = %id, "log subscription closed by the manager");
                }
                continue;
            }
            let task_ids = subscription.selector.map(|s| s.task_ids).unwrap_or_default();
            if let Some(queue) = self.running.get(&id) {
                if queue.try_send(task_ids).is_err() {
                    tracing::warn!(subscription.id = %id, "log subscription not keeping up with its changes: cancelled");
                    self.running.remove(&id);
                }
                continue;
            }
            let (queue, updates) = mpsc::channel(UPDATE_QUEUE);
            self.running.insert(id.clone(), queue);
            let publisher = Publisher {
                runtime: self.runtime.clone(),
                dispatcher: self.dispatcher.clone(),
                session_id: self.session_id.clone(),
                id,
                options: subscription.options.unwrap_or_default(),
                reads: self.reads.clone(),
            };
            self.tasks.spawn(publisher.run(task_ids, updates));
        }
    }
}

/// The next message of the log subscription stream; never, without one.
pub(crate) async fn next_subscriptions(
    stream: &mut Option<tonic::Streaming<v1::LogSubscriptionsMessage>>,
) -> Result<Option<v1::LogSubscriptionsMessage>, tonic::Status> {
    match stream {
        Some(stream) => stream.message().await,
        None => std::future::pending().await,
    }
}

/// One subscription: its readers and its publication.
struct Publisher {
    runtime: Arc<dyn ContainerRuntime>,
    dispatcher: DispatcherClient<Channel>,
    session_id: String,
    id: String,
    options: v1::LogSubscriptionOptions,
    reads: Arc<Semaphore>,
}

/// What a reader tells the batcher.
#[derive(Debug)]
enum Read {
    Line(String, LogLine),
    /// The task's log was read to its end; the warning says what went wrong, if anything did.
    Finished(String, Option<String>),
}

impl Publisher {
    /// Publishes the subscription through one `PublishLogs` call until it ends.
    async fn run(self, task_ids: Vec<String>, updates: mpsc::Receiver<Vec<String>>) {
        let (out, published) = mpsc::channel::<v1::PublishLogsMessage>(1);
        let mut dispatcher = self.dispatcher.clone();
        let call = tokio::spawn(async move {
            dispatcher.publish_logs(tokio_stream::wrappers::ReceiverStream::new(published)).await
        });
        let outcome = self.publish(task_ids, updates, out).await;
        match call.await {
            Ok(Err(status)) => {
                tracing::debug!(subscription.id = %self.id, outcome, error = %status.message(), "log publication refused");
            }
            Ok(Ok(_)) | Err(_) => tracing::debug!(subscription.id = %self.id, outcome, "log subscription ended"),
        }
    }

    /// Reads the tasks' logs (and those of tasks `updates` adds) and hands the batches to `out`,
    /// each as `out` has room; returns how it ended. Without follow, it ends once every task's
    /// log was read, with a batch marked `close`; with follow, when `updates` closes (the
    /// manager closed the subscription) or `out` does.
    async fn publish(
        &self,
        task_ids: Vec<String>,
        mut updates: mpsc::Receiver<Vec<String>>,
        out: mpsc::Sender<v1::PublishLogsMessage>,
    ) -> &'static str {
        let (line_tx, mut lines) = mpsc::channel::<Read>(LINE_QUEUE);
        // Dropped on return: the readers stop with it.
        let mut readers = JoinSet::new();
        let mut started: HashSet<String> = HashSet::new();
        let mut open = 0usize;
        self.start(&mut readers, &mut started, &mut open, task_ids, &line_tx);
        let mut batch = Batch::new(&self.session_id, &self.id);
        let mut deadline: Option<tokio::time::Instant> = None;
        let follow = self.options.follow;
        loop {
            if !follow && open == 0 {
                batch.message.close = true;
                return if out.send(batch.take()).await.is_ok() { "complete" } else { "the manager stopped taking it" };
            }
            let flush = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = lines.recv() => match read {
                    Some(Read::Line(task_id, line)) => {
                        // A line that would take the batch past its size goes in the next one.
                        if !batch.has_room(&line) && out.send(batch.take()).await.is_err() {
                            return "the manager stopped taking it";
                        }
                        batch.push(task_id, line);
                        deadline.get_or_insert_with(|| tokio::time::Instant::now() + BATCH_WAIT);
                    }
                    Some(Read::Finished(task_id, warning)) => {
                        open = open.saturating_sub(1);
                        batch.message.finished_task_ids.push(task_id);
                        batch.message.warnings.extend(warning);
                        deadline.get_or_insert_with(|| tokio::time::Instant::now() + BATCH_WAIT);
                    }
                    None => return "its readers stopped",
                },
                ids = updates.recv() => match ids {
                    Some(ids) => self.start(&mut readers, &mut started, &mut open, ids, &line_tx),
                    None => return "closed by the manager",
                },
                () = flush => {}
            }
            if batch.is_full() || deadline.is_some_and(|at| at <= tokio::time::Instant::now()) {
                deadline = None;
                if out.send(batch.take()).await.is_err() {
                    return "the manager stopped taking it";
                }
            }
        }
    }

    /// Starts a reader for each task not read yet.
    fn start(
        &self,
        readers: &mut JoinSet<()>,
        started: &mut HashSet<String>,
        open: &mut usize,
        task_ids: Vec<String>,
        lines: &mpsc::Sender<Read>,
    ) {
        let options = LogOptions {
            since: shoal_api::from_timestamp(self.options.since.as_ref()),
            tail: self.options.tail.map(|t| usize::try_from(t).unwrap_or(usize::MAX)),
            follow: self.options.follow,
        };
        let streams = wanted_streams(&self.options.streams);
        for task_id in task_ids {
            if !started.insert(task_id.clone()) {
                continue;
            }
            *open += 1;
            let reader = Reader {
                runtime: self.runtime.clone(),
                task_id,
                options,
                streams,
                lines: lines.clone(),
                // Following, every task's log stays open: a permit each would stall the rest.
                reads: (!self.options.follow).then(|| self.reads.clone()),
            };
            readers.spawn(reader.run());
        }
    }
}

/// Which streams are wanted: (stdout, stderr).
fn wanted_streams(streams: &[i32]) -> (bool, bool) {
    if streams.is_empty() {
        return (true, true);
    }
    let has = |s: v1::LogStream| streams.contains(&(s as i32));
    (has(v1::LogStream::Stdout), has(v1::LogStream::Stderr))
}

/// Reads one task's log.
struct Reader {
    runtime: Arc<dyn ContainerRuntime>,
    task_id: String,
    options: LogOptions,
    streams: (bool, bool),
    lines: mpsc::Sender<Read>,
    reads: Option<Arc<Semaphore>>,
}

impl Reader {
    async fn run(self) {
        let _permit = match &self.reads {
            Some(reads) => reads.clone().acquire_owned().await.ok(),
            None => None,
        };
        let warning = match self.runtime.logs(&self.task_id, &self.options).await {
            Ok(mut stream) => {
                while let Some(line) = stream.next().await {
                    let wanted = match line.stream {
                        Stream::Stdout => self.streams.0,
                        Stream::Stderr => self.streams.1,
                    };
                    if wanted && self.lines.send(Read::Line(self.task_id.clone(), line)).await.is_err() {
                        return;
                    }
                }
                None
            }
            // Its container was removed (an old task): nothing to read.
            Err(ContainerError::NotFound { .. }) => None,
            Err(err) => {
                tracing::warn!(task.id = %self.task_id, error = %err, "cannot read a task's log");
                Some(format!("task {}: cannot read its log: {err}", self.task_id))
            }
        };
        let _ = self.lines.send(Read::Finished(self.task_id, warning)).await;
    }
}

/// A batch being gathered.
#[derive(Debug)]
struct Batch {
    message: v1::PublishLogsMessage,
    bytes: usize,
}

impl Batch {
    fn new(session_id: &str, subscription_id: &str) -> Self {
        let message = v1::PublishLogsMessage {
            session_id: session_id.to_owned(),
            subscription_id: subscription_id.to_owned(),
            ..Default::default()
        };
        Self { message, bytes: 0 }
    }

    fn push(&mut self, task_id: String, line: LogLine) {
        let data = line.line.into_bytes();
        self.bytes += data.len();
        let stream = match line.stream {
            Stream::Stdout => v1::LogStream::Stdout,
            Stream::Stderr => v1::LogStream::Stderr,
        };
        self.message.messages.push(v1::LogMessage {
            context: Some(v1::LogContext { task_id, ..Default::default() }),
            timestamp: Some(shoal_api::to_timestamp(line.time)),
            stream: stream as i32,
            data,
        });
    }

    fn is_full(&self) -> bool {
        self.message.messages.len() >= BATCH_LINES || self.bytes >= BATCH_BYTES
    }

    /// Whether `line` fits in the batch (an empty batch takes any line).
    fn has_room(&self, line: &LogLine) -> bool {
        self.message.messages.is_empty() || self.bytes + line.line.len() <= BATCH_BYTES
    }

    /// The gathered batch; this one starts empty again.
    fn take(&mut self) -> v1::PublishLogsMessage {
        self.bytes = 0;
        let empty = v1::PublishLogsMessage {
            session_id: self.message.session_id.clone(),
            subscription_id: self.message.subscription_id.clone(),
            ..Default::default()
        };
        std::mem::replace(&mut self.message, empty)
    }
}

#[cfg(test)]
mod tests;

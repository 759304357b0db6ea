//! Prometheus metrics: the worker's series ([`AgentMetrics`]) and the small plain-HTTP endpoint
//! ([`serve`]) that both binaries run behind `--metrics-addr`, whatever series they put in it.
//!
//! The endpoint answers `GET /metrics` (one request per connection, then it closes) with the
//! OpenMetrics text a [`Render`] makes, and 404 elsewhere. It reads at most [`MAX_HEAD`] bytes
//! of request head within [`READ_TIMEOUT`], and serves at most [`MAX_CONNECTIONS`] at a time: a
//! scraper needs no more, and a stray client cannot hold more. It has no authentication and no
//! TLS: keep it on loopback or a management network.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use shoal_api::v1::TaskState;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Makes the text of one scrape: every series, ending with `# EOF`.
pub type Render = Arc<dyn Fn() -> BoxFuture<'static, String> + Send + Sync>;

/// The `Content-Type` of the answer: the format prometheus-client writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The largest request head (request line and headers) read; a longer one gets 431.
pub const MAX_HEAD: usize = 8 * 1024;

/// How long a client may take to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How many connections are served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 16;

/// How long writing an answer may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes a [`Render`] from an async closure.
pub fn render<F, Fut>(make: F) -> Render
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = String> + Send + 'static,
{
    Arc::new(move || Box::pin(make()))
}

/// Binds the endpoint's listener at `addr`, warning when it is reachable from other hosts: the
/// endpoint has no authentication.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            addr = %bound,
            "the metrics endpoint is plain HTTP with no authentication: anyone who can reach this \
             address can read the cluster's metrics"
        );
    }
    tracing::info!(addr = %bound, path = "/metrics", "serving metrics");
    Ok(listener)
}

/// Serves `GET /metrics` on `listener` with what `render` makes, until `shutdown` resolves.
pub async fn serve(listener: TcpListener, render: Render, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let render = render.clone();
                tokio::spawn(async move {
                    if let Err(err) = answer(stream, &render).await {
                        tracing::debug!(%peer, error = %err, "metrics request failed");
                    }
                    drop(permit);
                });
            }
            Err(err) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!(error = %err, "metrics listener cannot accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Metrics,
    NotFound,
    MethodNotAllowed,
    BadRequest,
    TooLarge,
}

/// Reads the request head (up to the blank line) and answers it.
async fn answer(mut stream: TcpStream, render: &Render) -> std::io::Result<()> {
    let asked = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => route(&head),
        Ok(Ok(None)) => Asked::TooLarge,
        Ok(Err(err)) => return Err(err),
        Err(_) => return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no request head in time")),
    };
    let (status, content_type, body) = match asked {
        Asked::Metrics => ("200 OK", CONTENT_TYPE, render().await),
        Asked::NotFound => ("404 Not Found", "text/plain; charset=utf-8", "not found: try /metrics\n".to_owned()),
        Asked::MethodNotAllowed => {
            ("405 Method Not Allowed", "text/plain; charset=utf-8", "only GET is served\n".to_owned())
        }
        Asked::BadRequest => ("400 Bad Request", "text/plain; charset=utf-8", "bad request\n".to_owned()),
        Asked::TooLarge => {
            ("431 Request Header Fields Too Large", "text/plain; charset=utf-8", "request head too large\n".to_owned())
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let write = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "answer not taken in time"))??;
    // Closing with unread request bytes (a refused oversized head) would reset the connection
    // and could lose the answer: read what is left, a little and briefly, first.
    let linger = async {
        let mut rest = [0u8; 1024];
        let mut left = 4 * MAX_HEAD;
        while left > 0 {
            match stream.read(&mut rest).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
    Ok(())
}

/// The request head, or `None` when it passes [`MAX_HEAD`] bytes.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed mid-request"));
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Ok((head.len() <= MAX_HEAD).then_some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

/// Routes a request head by its request line.
fn route(head: &[u8]) -> Asked {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Asked::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Asked::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Asked::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET", "/metrics") => Asked::Metrics,
        ("GET", _) => Asked::NotFound,
        _ => Asked::MethodNotAllowed,
    }
}

type StateFamily = Family<Vec<(String, String)>, Gauge>;

/// The worker's metrics: its tasks by state, container start and image pull times. Cheap to
/// clone (clones share the series).
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    tasks: StateFamily,
    /// Each task this node runs and the state it last reported, to move it between series.
    states: Mutex<HashMap<String, TaskState>>,
    starts: Histogram,
    pulls: Histogram,
}

/// Equal when they are the same series (clones of one another).
impl PartialEq for AgentMetrics {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for AgentMetrics {}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The `state` label of a task state: `docker service ps`'s word, lower-case.
fn state_labels(state: TaskState) -> Vec<(String, String)> {
    vec![("state".to_owned(), state.label().to_ascii_lowercase())]
}

impl AgentMetrics {
    /// The series, empty.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let tasks = StateFamily::default();
        registry.register(
            "shoal_agent_tasks",
            "Tasks on this node by the state the agent last reported",
            tasks.clone(),
        );
        let starts = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register_with_unit(
            "shoal_agent_container_start_duration",
            "Time from creating a task's container to its start returning",
            Unit::Seconds,
            starts.clone(),
        );
        let pulls = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register_with_unit(
            "shoal_agent_image_pull_duration",
            "Time to make a task's image present (a pull, or a check of an image already there)",
            Unit::Seconds,
            pulls.clone(),
        );
        Self { inner: Arc::new(Inner { registry, tasks, states: Mutex::new(HashMap::new()), starts, pulls }) }
    }

    /// Appends the series in the OpenMetrics text format, without the closing `# EOF` line
    /// ([`end`] adds it once every series is in).
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        prometheus_client::encoding::text::encode_registry(out, &self.inner.registry)
    }

    fn states(&self) -> std::sync::MutexGuard<'_, HashMap<String, TaskState>> {
        self.inner.states.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A task reported `state`.
    pub(crate) fn task_state(&self, task_id: &str, state: TaskState) {
        let previous = self.states().insert(task_id.to_owned(), state);
        if previous == Some(state) {
            return;
        }
        if let Some(previous) = previous {
            self.inner.tasks.get_or_create(&state_labels(previous)).dec();
        }
        self.inner.tasks.get_or_create(&state_labels(state)).inc();
    }

    /// A task left the node (its container removed).
    pub(crate) fn task_gone(&self, task_id: &str) {
        if let Some(previous) = self.states().remove(task_id) {
            self.inner.tasks.get_or_create(&state_labels(previous)).dec();
        }
    }

    /// A new executor starts from no tasks (the ones it adopts report again).
    pub(crate) fn reset(&self) {
        self.states().clear();
        self.inner.tasks.clear();
    }

    /// A container took `took` from create to started.
    pub(crate) fn observe_start(&self, took: Duration) {
        self.inner.starts.observe(took.as_secs_f64());
    }

    /// An image took `took` to be made present.
    pub(crate) fn observe_pull(&self, took: Duration) {
        self.inner.pulls.observe(took.as_secs_f64());
    }
}

/// Ends a scrape's text: the OpenMetrics `# EOF` line.
pub fn end(out: &mut String) {
    out.push_str("# EOF\n");
}

#[cfg(test)]
mod tests;

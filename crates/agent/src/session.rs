//! The agent's session with a manager: open a session (the node is Ready), send heartbeats at
//! the period the manager asks, apply the assignment stream to the executor, and report task
//! status in batches. When the session breaks, tasks keep running; the agent tries the next
//! manager it knows, backing off from 100 ms to 8 s, and the new session's complete assignment
//! set reconciles what changed meanwhile.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shoal_api::v1::{self, dispatcher_client::DispatcherClient};
use shoal_runtime::ContainerRuntime;
use tokio::sync::{Mutex, mpsc};
use tonic::transport::Channel;

use crate::executor::Executor;

/// How an agent runs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Managers to reach (HOST:PORT), tried in turn.
    pub managers: Vec<String>,
    /// TLS with the node's certificate (ca-pki's `client_config`).
    pub tls: rustls::ClientConfig,
    /// This node's ID (its certificate's common name).
    pub node_id: String,
    /// What the node says of itself (hostname, platform, resources, engine labels).
    pub description: v1::NodeDescription,
    /// Where named volumes live.
    pub volumes_dir: PathBuf,
}

/// The agent could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No manager address was given.
    #[error("no manager address to connect to; pass at least one HOST:PORT")]
    NoManagers,
    /// The runtime could not list this node's containers at start.
    #[error("cannot list this node's containers: {0}")]
    Runtime(#[from] shoal_runtime::ContainerError),
}

/// A worker: session, heartbeats, executor.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    runtime: Arc<dyn ContainerRuntime>,
}

/// Why a session ended.
#[derive(Debug)]
enum SessionEnd {
    Shutdown,
    Broken(String),
}

impl Agent {
    /// An agent running tasks through `runtime`.
    pub fn new(config: AgentConfig, runtime: Arc<dyn ContainerRuntime>) -> Self {
        Self { config, runtime }
    }

    /// Runs until `shutdown` resolves. Containers keep running after it returns; an agent started
    /// again adopts them.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
        if self.config.managers.is_empty() {
            return Err(AgentError::NoManagers);
        }
        let (reports, mut reported) = mpsc::unbounded_channel();
        let mut executor =
            Executor::new(self.runtime.clone(), self.config.node_id.clone(), self.config.volumes_dir.clone(), reports);
        executor.discover().await?;
        // The latest status of each task not yet delivered, kept across sessions.
        let pending: Arc<Mutex<BTreeMap<String, v1::TaskStatus>>> = Arc::default();
        let collector = {
            let pending = pending.clone();
            tokio::spawn(async move {
                while let Some((task, status)) = reported.recv().await {
                    pending.lock().await.insert(task, status);
                }
            })
        };
        tokio::pin!(shutdown);
        let mut managers = self.config.managers.clone();
        let mut backoff = Duration::from_millis(100);
        let mut next = 0;
        loop {
            let addr = managers[next % managers.len()].clone();
            next += 1;
            let end = tokio::select! {
                () = &mut shutdown => SessionEnd::Shutdown,
                end = self.session(&addr, &mut executor, &pending, &mut managers) => end,
            };
            match end {
                SessionEnd::Shutdown => break,
                SessionEnd::Broken(reason) => {
                    tracing::warn!(manager = %addr, %reason, retry_in_ms = backoff.as_millis() as u64, "session ended");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(8));
                }
            }
        }
        collector.abort();
        Ok(())
    }

    async fn session(
        &self,
        addr: &str,
        executor: &mut Executor,
        pending: &Mutex<BTreeMap<String, v1::TaskStatus>>,
        managers: &mut Vec<String>,
    ) -> SessionEnd {
        let broken = |what: &str, e: &dyn std::fmt::Display| SessionEnd::Broken(format!("{what}: {e}"));
        let channel: Channel = match shoal_api::connect(addr, self.config.tls.clone()).await {
            Ok(channel) => channel,
            Err(err) => return broken("connect", &err),
        };
        let mut dispatcher = DispatcherClient::new(channel);
        let request =
            v1::SessionRequest { description: Some(self.config.description.clone()), session_id: String::new() };
        let mut session = match dispatcher.session(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return broken("open session", &status.message()),
        };
        let first = match session.message().await {
            Ok(Some(first)) => first,
            Ok(None) => return SessionEnd::Broken("session closed at once".into()),
            Err(status) => return broken("session", &status.message()),
        };
        let session_id = first.session_id;
        for peer in first.managers {
            if !managers.contains(&peer.addr) && !peer.addr.is_empty() {
                managers.push(peer.addr);
            }
        }
        let request = v1::AssignmentsRequest { session_id: session_id.clone() };
        let mut assignments = match dispatcher.assignments(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return broken("assignments", &status.message()),
        };
        tracing::info!(manager = %addr, "session started");
        let mut period = Duration::from_secs(1);
        let mut heartbeat = tokio::time::interval(period);
        let mut flush = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    match dispatcher.heartbeat(v1::HeartbeatRequest { session_id: session_id.clone() }).await {
                        Ok(response) => {
                            let asked = shoal_api::from_duration(response.into_inner().period.as_ref()).unwrap_or(period);
                            if asked != period && !asked.is_zero() {
                                period = asked;
                                heartbeat = tokio::time::interval(period);
                                heartbeat.tick().await;
                            }
                        }
                        Err(status) => return broken("heartbeat", &status.message()),
                    }
                }
                _ = flush.tick() => {
                    let batch: Vec<v1::TaskStatusUpdate> = pending
                        .lock()
                        .await
                        .iter()
                        .map(|(task_id, status)| v1::TaskStatusUpdate { task_id: task_id.clone(), status: Some(status.clone()) })
                        .collect();
                    if batch.is_empty() {
                        continue;
                    }
                    let sent: Vec<(String, Option<i32>)> =
                        batch.iter().map(|u| (u.task_id.clone(), u.status.as_ref().map(|s| s.state))).collect();
                    let request = v1::UpdateTaskStatusRequest { session_id: session_id.clone(), updates: batch };
                    if let Err(status) = dispatcher.update_task_status(request).await {
                        return broken("report task status", &status.message());
                    }
                    // Forget what was delivered, unless a newer status arrived meanwhile.
                    let mut pending = pending.lock().await;
                    for (task_id, state) in sent {
                        if pending.get(&task_id).map(|s| Some(s.state)) == Some(state) {
                            pending.remove(&task_id);
                        }
                    }
                }
                message = assignments.message() => match message {
                    Ok(Some(message)) => apply(executor, message),
                    Ok(None) => return SessionEnd::Broken("assignment stream ended".into()),
                    Err(status) => return broken("assignments", &status.message()),
                },
                message = session.message() => match message {
                    Ok(Some(_)) => {}
                    Ok(None) => return SessionEnd::Broken("the manager ended the session".into()),
                    Err(status) => return broken("session", &status.message()),
                },
            }
        }
    }
}

fn apply(executor: &mut Executor, message: v1::AssignmentsMessage) {
    let complete = message.r#type == v1::assignments_message::Type::Complete as i32;
    if complete {
        executor.set_complete(message.changes.into_iter().filter_map(|c| c.task).collect());
        return;
    }
    for change in message.changes {
        let Some(task) = change.task else { continue };
        if change.action == v1::assignment_change::Action::Remove as i32 {
            executor.remove(&task.id);
        } else {
            executor.update(task);
        }
    }
}

//! The executor: one controller per assigned task, driving it through its states (ACCEPTED,
//! PREPARING, READY, STARTING, RUNNING, then COMPLETE, FAILED, REJECTED or SHUTDOWN) with the
//! container runtime, and reporting each state. Controllers follow their task's desired state;
//! a task that leaves the node's assignments is stopped and its container removed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_api::v1::{self, TaskState};
use shoal_runtime::{ContainerError, ContainerRuntime, ContainerSpec, ContainerState, ImageSource, Mount, Resources};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::labels;
use crate::network::Networking;

/// Where controllers send status changes: (task ID, status).
pub(crate) type Reports = mpsc::UnboundedSender<(String, v1::TaskStatus)>;

/// Docker's default stop grace period.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Controller {
    task: watch::Sender<v1::Task>,
    handle: JoinHandle<()>,
}

/// Runs the tasks of one node.
#[derive(Debug)]
pub(crate) struct Executor {
    runtime: Arc<dyn ContainerRuntime>,
    node_id: String,
    volumes: std::path::PathBuf,
    reports: Reports,
    /// The node's networking, when on.
    network: Option<Arc<Networking>>,
    controllers: HashMap<String, Controller>,
    /// Containers found at start (task ID → state), adopted by their tasks' controllers.
    found: HashMap<String, ContainerState>,
}

impl Executor {
    pub(crate) fn new(
        runtime: Arc<dyn ContainerRuntime>,
        node_id: String,
        volumes: std::path::PathBuf,
        reports: Reports,
        network: Option<Arc<Networking>>,
    ) -> Self {
        Self { runtime, node_id, volumes, reports, network, controllers: HashMap::new(), found: HashMap::new() }
    }

    /// Finds this node's containers (after an agent restart), to adopt them; returns their
    /// task IDs.
    pub(crate) async fn discover(&mut self) -> Result<Vec<String>, ContainerError> {
        let mine = self.runtime.list(&[(labels::NODE.to_owned(), self.node_id.clone())]).await?;
        self.found = mine.into_iter().map(|c| (c.id, c.state)).collect();
        tracing::info!(containers = self.found.len(), "found containers of this node");
        Ok(self.found.keys().cloned().collect())
    }

    /// The node's complete assignment set: start what is new, update what is known, and stop and
    /// remove everything else (tasks rescheduled elsewhere while this node was away).
    pub(crate) fn set_complete(&mut self, tasks: Vec<v1::Task>) {
        let assigned: std::collections::HashSet<String> = tasks.iter().map(|t| t.id.clone()).collect();
        let gone: Vec<String> = self.controllers.keys().filter(|id| !assigned.contains(*id)).cloned().collect();
        for id in gone {
            self.remove(&id);
        }
        // Containers found at start whose tasks are no longer ours.
        let strays: Vec<String> = self.found.keys().filter(|id| !assigned.contains(*id)).cloned().collect();
        for id in strays {
            self.found.remove(&id);
            let runtime = self.runtime.clone();
            let network = self.network.clone();
            tokio::spawn(async move {
                tracing::info!(task.id = %id, "stopping a container whose task is no longer assigned here");
                let _ = runtime.stop(&id, DEFAULT_GRACE).await;
                if let Some(network) = network {
                    network.release(&id);
                }
                if let Err(err) = runtime.remove(&id).await {
                    tracing::warn!(task.id = %id, error = %err, "could not remove a stale container");
                }
            });
        }
        if let Some(network) = &self.network {
            // Running containers found at start keep their wiring through the first pass.
            for task in tasks.iter().filter(|t| self.found.get(&t.id) == Some(&ContainerState::Running)) {
                network.adopt(task);
            }
            network.ready();
        }
        for task in tasks {
            self.update(task);
        }
    }

    /// A new or changed task.
    pub(crate) fn update(&mut self, task: v1::Task) {
        if let Some(controller) = self.controllers.get(&task.id) {
            controller.task.send_replace(task);
            return;
        }
        let adopted = self.found.remove(&task.id);
        let (sender, receiver) = watch::channel(task.clone());
        let ctx = Ctx {
            runtime: self.runtime.clone(),
            node_id: self.node_id.clone(),
            volumes: self.volumes.clone(),
            reports: self.reports.clone(),
            network: self.network.clone(),
        };
        let handle = tokio::spawn(async move { ctx.run(receiver, adopted).await });
        self.controllers.insert(task.id, Controller { task: sender, handle });
    }

    /// A task that is no longer assigned here: its controller stops and removes the container.
    pub(crate) fn remove(&mut self, task_id: &str) {
        // Dropping the sender tells the controller; it cleans up on its own task.
        if let Some(controller) = self.controllers.remove(task_id) {
            drop(controller.task);
            drop(controller.handle);
        }
    }
}

/// An agent that stops (or restarts) leaves its containers running, to be adopted by the next
/// agent: the controllers are cancelled before their task senders drop, since a dropped sender
/// means "no longer assigned here" and would stop and remove the container.
impl Drop for Executor {
    fn drop(&mut self) {
        for controller in self.controllers.values() {
            controller.handle.abort();
        }
    }
}

#[derive(Debug, Clone)]
struct Ctx {
    runtime: Arc<dyn ContainerRuntime>,
    node_id: String,
    volumes: std::path::PathBuf,
    reports: Reports,
    network: Option<Arc<Networking>>,
}

/// The hostname of a task's container: the one its spec asks for, or the first 12 characters of
/// its ID (as Docker takes the container ID's).
fn hostname(task: &v1::Task, container: &v1::ContainerSpec) -> String {
    if container.hostname.is_empty() { task.id.chars().take(12).collect() } else { container.hostname.clone() }
}

impl Ctx {
    fn report(&self, task_id: &str, state: TaskState, message: &str, err: &str, exit_code: Option<i32>) {
        let status = v1::TaskStatus {
            timestamp: Some(shoal_api::to_timestamp(SystemTime::now())),
            state: state as i32,
            message: message.to_owned(),
            err: err.to_owned(),
            container: Some(v1::ContainerStatus {
                container_id: task_id.to_owned(),
                pid: 0,
                exit_code: exit_code.unwrap_or(0),
            }),
        };
        if state.is_terminal() && !err.is_empty() {
            tracing::info!(task.id = %task_id, state = state.label(), error = %err, "task ended");
        } else {
            tracing::debug!(task.id = %task_id, state = state.label(), "task state");
        }
        let _ = self.reports.send((task_id.to_owned(), status));
    }

    async fn run(self, mut updates: watch::Receiver<v1::Task>, adopted: Option<ContainerState>) {
        let task = updates.borrow().clone();
        let id = task.id.clone();
        let started = match adopted {
            // Found after an agent restart: a running container is followed again (the
            // monitor stops it at once if its task should no longer run), one that exited
            // reports its exit through the monitor, one never started starts afresh.
            Some(ContainerState::Running) => {
                // Its namespace, links and balancers are there: the pass adopts them.
                if let Some(network) = &self.network {
                    let container = task.spec.as_ref().and_then(|s| s.container.clone()).unwrap_or_default();
                    if let Err(err) = network.prepare(&task, &hostname(&task, &container)).await {
                        tracing::warn!(task.id = %id, error = %err, "could not adopt the networking of a running task");
                    }
                }
                self.report(&id, TaskState::Running, "running (adopted after an agent restart)", "", None);
                true
            }
            Some(ContainerState::Stopped) => true,
            Some(ContainerState::Created) | None => self.start(&task).await,
        };
        if started {
            self.monitor(&id, &mut updates).await;
        }
        // The container has stopped (or never started): its networking goes.
        if let Some(network) = &self.network {
            network.release(&id);
        }
        // Keep the stopped container (for its logs) until the task is removed from the node.
        loop {
            if updates.borrow().desired() == TaskState::Remove || updates.changed().await.is_err() {
                break;
            }
        }
        match self.runtime.remove(&id).await {
            Ok(()) | Err(ContainerError::NotFound { .. }) => {}
            Err(err) => tracing::warn!(task.id = %id, error = %err, "could not remove the task's container"),
        }
    }

    /// Prepares and starts the task's container; returns whether it runs.
    async fn start(&self, task: &v1::Task) -> bool {
        let id = task.id.as_str();
        if task.desired() as i32 > TaskState::Running as i32 {
            self.report(id, TaskState::Shutdown, "shut down before it started", "", None);
            return false;
        }
        self.report(id, TaskState::Accepted, "accepted", "", None);
        self.report(id, TaskState::Preparing, "preparing", "", None);
        let container = task.spec.as_ref().and_then(|s| s.container.clone()).unwrap_or_default();
        let image = match self.runtime.ensure_image(&ImageSource::registry(&container.image)).await {
            Ok(image) => image,
            Err(err) => {
                self.report(id, TaskState::Rejected, "preparing failed", &err.to_string(), None);
                return false;
            }
        };
        if let Err(err) = self.prepare_mounts(&container) {
            self.report(id, TaskState::Rejected, "preparing failed", &err, None);
            return false;
        }
        let mut spec = self.container_spec(task, &container, image);
        if let Some(network) = &self.network {
            match network.prepare(task, &hostname(task, &container)).await {
                Ok(wired) => {
                    spec.netns = Some(wired.netns);
                    spec.hosts = Some(wired.hosts);
                    spec.resolv_conf = Some(wired.resolv_conf);
                }
                Err(err) => {
                    self.report(id, TaskState::Rejected, "network setup failed", &err.to_string(), None);
                    return false;
                }
            }
        }
        let mut created = self.runtime.create(&spec).await;
        if let Err(ContainerError::AlreadyExists { .. }) = created {
            // Left by an earlier attempt at this very task that died before starting it.
            let _ = self.runtime.remove(id).await;
            created = self.runtime.create(&spec).await;
        }
        if let Err(err) = created {
            self.report(id, TaskState::Rejected, "create failed", &err.to_string(), None);
            return false;
        }
        self.report(id, TaskState::Ready, "ready", "", None);
        self.report(id, TaskState::Starting, "starting", "", None);
        if let Err(err) = self.runtime.start(id).await {
            self.report(id, TaskState::Failed, "start failed", &err.to_string(), None);
            return false;
        }
        self.report(id, TaskState::Running, "started", "", None);
        true
    }

    /// Follows a running task until it exits or is told to stop (including by the desired state
    /// it already has when the monitor starts).
    async fn monitor(&self, id: &str, updates: &mut watch::Receiver<v1::Task>) {
        let mut assigned = true;
        loop {
            if !assigned || updates.borrow_and_update().desired() as i32 > TaskState::Running as i32 {
                let grace = updates
                    .borrow()
                    .spec
                    .as_ref()
                    .and_then(|s| s.container.as_ref())
                    .and_then(|c| shoal_api::from_duration(c.stop_grace_period.as_ref()))
                    .unwrap_or(DEFAULT_GRACE);
                match self.runtime.stop(id, grace).await {
                    Ok(status) => self.report(id, TaskState::Shutdown, "shutdown", "", Some(status.code)),
                    Err(err) => self.report(id, TaskState::Shutdown, "shutdown", &err.to_string(), None),
                }
                return;
            }
            tokio::select! {
                exit = self.runtime.wait(id) => {
                    match exit {
                        Ok(status) if status.code == 0 => self.report(id, TaskState::Complete, "finished", "", Some(0)),
                        Ok(status) => {
                            let oom = if status.oom_killed { ": OOM killed" } else { "" };
                            let err = format!("task: non-zero exit ({}){oom}", status.code);
                            self.report(id, TaskState::Failed, "failed", &err, Some(status.code));
                        }
                        Err(err) => self.report(id, TaskState::Failed, "lost track of the container", &err.to_string(), None),
                    }
                    return;
                }
                // A dropped sender: the task left this node's assignments.
                changed = updates.changed() => assigned = changed.is_ok(),
            }
        }
    }

    /// What the task's mounts need on this node before its container is made: a bind mount's
    /// source must exist (as Swarm rejects the task otherwise), and a named volume's directory
    /// under the volumes directory is made on first use (empty: the image's content is not copied
    /// into it) and kept for the tasks that come after, on this node.
    fn prepare_mounts(&self, container: &v1::ContainerSpec) -> Result<(), String> {
        for mount in &container.mounts {
            match v1::mount::Type::try_from(mount.r#type).unwrap_or(v1::mount::Type::Bind) {
                v1::mount::Type::Bind if !std::path::Path::new(&mount.source).exists() => {
                    return Err(format!(
                        "invalid mount config for type \"bind\": bind source path does not exist: {}",
                        mount.source
                    ));
                }
                v1::mount::Type::Volume => {
                    // The manager checks volume names; a name that could leave the directory is
                    // refused here all the same.
                    let name = &mount.source;
                    let plain = !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
                        && !name.starts_with('.');
                    if !plain {
                        return Err(format!("invalid volume name {name:?}: use letters, digits, '-', '_' and '.'"));
                    }
                    let dir = self.volumes.join(name);
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| format!("volume {name}: cannot create {}: {e}", dir.display()))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn container_spec(&self, task: &v1::Task, container: &v1::ContainerSpec, image: String) -> ContainerSpec {
        let mut labels: std::collections::BTreeMap<String, String> =
            container.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.insert(labels::TASK.to_owned(), task.id.clone());
        labels.insert(labels::NODE.to_owned(), self.node_id.clone());
        labels.insert(labels::SERVICE.to_owned(), task.service_id.clone());
        let limits =
            task.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.limits.clone()).unwrap_or_default();
        let positive = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
        let mounts = container
            .mounts
            .iter()
            .map(|m| match v1::mount::Type::try_from(m.r#type).unwrap_or(v1::mount::Type::Bind) {
                v1::mount::Type::Bind => {
                    Mount::Bind { source: m.source.clone().into(), target: m.target.clone(), read_only: m.read_only }
                }
                v1::mount::Type::Volume => Mount::Volume {
                    source: self.volumes.join(&m.source),
                    target: m.target.clone(),
                    read_only: m.read_only,
                },
                v1::mount::Type::Tmpfs => Mount::Tmpfs {
                    target: m.target.clone(),
                    size_bytes: u64::try_from(m.tmpfs_size_bytes).unwrap_or(0),
                    mode: if m.tmpfs_mode == 0 { 0o1777 } else { m.tmpfs_mode },
                },
            })
            .collect();
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        ContainerSpec {
            id: task.id.clone(),
            image,
            entrypoint: non_empty(&container.command),
            args: non_empty(&container.args),
            env: container.env.clone(),
            user: (!container.user.is_empty()).then(|| container.user.clone()),
            workdir: (!container.dir.is_empty()).then(|| container.dir.clone()),
            hostname: Some(hostname(task, container)),
            labels,
            netns: None,
            mounts,
            read_only_rootfs: container.read_only,
            resources: Resources {
                nano_cpus: positive(limits.nano_cpus),
                cpu_shares: None,
                memory_bytes: positive(limits.memory_bytes),
                pids: (limits.pids > 0).then_some(limits.pids),
            },
            stop_signal: (!container.stop_signal.is_empty()).then(|| container.stop_signal.clone()),
            hosts: None,
            resolv_conf: None,
            seccomp: if container.seccomp == v1::container_spec::Seccomp::Unconfined as i32 {
                shoal_runtime::Seccomp::Unconfined
            } else {
                shoal_runtime::Seccomp::Default
            },
        }
    }
}

#[cfg(test)]
mod tests;

//! The executor: one controller per assigned task, driving it through its states (ACCEPTED,
//! PREPARING, READY, STARTING, RUNNING, then COMPLETE, FAILED, REJECTED or SHUTDOWN) with the
//! container runtime, and reporting each state. Controllers follow their task's desired state;
//! a task that leaves the node's assignments is stopped and its container removed. A task with
//! a health check stays STARTING until a probe passes, and an unhealthy one is stopped and
//! FAILED (`task: unhealthy container`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_api::v1::{self, TaskState};
use shoal_runtime::{
    ContainerError, ContainerRuntime, ContainerSpec, ContainerState, ImageSource, LocalVolumes, Mount, Propagation,
    Resources, Ulimit,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::etc;
use crate::files::{Payloads, TaskFiles};
use crate::health::{self, Check, Prober, Verdict};
use crate::labels;
use crate::network::Networking;

/// Where controllers send status changes: (task ID, status).
pub(crate) type Reports = mpsc::UnboundedSender<(String, v1::TaskStatus)>;

/// Docker's default stop grace period.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// The error of a task whose health check found it unhealthy (Swarm's words).
const UNHEALTHY: &str = "task: unhealthy container";

/// How long a task that served traffic on a network keeps running after it was told to stop,
/// before its stop signal: the time for every node's load balancers and DNS to drop it (about
/// 0.2 s measured by `cargo xtask bench mesh`) and for requests in flight to finish.
const ENDPOINT_DRAIN: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Controller {
    task: watch::Sender<v1::Task>,
    handle: JoinHandle<()>,
}

/// The secrets and configs the node holds, shared by the session (which applies the
/// assignments) and the controllers (which write them for their tasks).
pub(crate) type SharedPayloads = Arc<std::sync::Mutex<Payloads>>;

/// Runs the tasks of one node.
#[derive(Debug)]
pub(crate) struct Executor {
    runtime: Arc<dyn ContainerRuntime>,
    node_id: String,
    volumes: Arc<LocalVolumes>,
    files: TaskFiles,
    payloads: SharedPayloads,
    /// The node's hostname, for hostname templates (`{{.Node.Hostname}}`).
    node_hostname: String,
    reports: Reports,
    /// The node's networking, when on.
    network: Option<Arc<Networking>>,
    controllers: HashMap<String, Controller>,
    /// Containers found at start (task ID → state), adopted by their tasks' controllers.
    found: HashMap<String, ContainerState>,
    /// Where task states and start times are counted, if anywhere.
    metrics: Option<crate::AgentMetrics>,
}

impl Executor {
    pub(crate) fn new(
        runtime: Arc<dyn ContainerRuntime>,
        node_id: String,
        dirs: &NodeDirs,
        reports: Reports,
        network: Option<Arc<Networking>>,
    ) -> Self {
        Self {
            runtime,
            node_id,
            volumes: Arc::new(LocalVolumes::new(dirs.volumes.clone())),
            files: TaskFiles::new(dirs.task_files.clone()),
            payloads: SharedPayloads::default(),
            node_hostname: String::new(),
            reports,
            network,
            controllers: HashMap::new(),
            found: HashMap::new(),
            metrics: None,
        }
    }

    /// Counts this executor's task states and container start times in `metrics` (which start
    /// from no tasks: the ones it adopts report again).
    pub(crate) fn set_metrics(&mut self, metrics: Option<crate::AgentMetrics>) {
        if let Some(metrics) = &metrics {
            metrics.reset();
        }
        self.metrics = metrics;
    }

    /// The node's hostname, for the tasks' hostname templates.
    pub(crate) fn set_node_hostname(&mut self, hostname: &str) {
        hostname.clone_into(&mut self.node_hostname);
    }

    /// The secrets and configs the node holds.
    pub(crate) fn payloads(&self) -> &SharedPayloads {
        &self.payloads
    }

    /// The node's named volumes.
    pub(crate) fn volumes(&self) -> &Arc<LocalVolumes> {
        &self.volumes
    }

    /// The tasks here (with a controller, so with a container, running or not) that mount each
    /// named volume.
    pub(crate) fn volume_users(&self) -> HashMap<String, Vec<String>> {
        let mut users: HashMap<String, Vec<String>> = HashMap::new();
        for (id, controller) in &self.controllers {
            let task = controller.task.borrow();
            let mounts = task.spec.as_ref().and_then(|s| s.container.as_ref()).map(|c| c.mounts.as_slice());
            for mount in mounts.unwrap_or_default() {
                if mount.r#type == v1::mount::Type::Volume as i32 {
                    users.entry(mount.source.clone()).or_default().push(id.clone());
                }
            }
        }
        for ids in users.values_mut() {
            ids.sort();
        }
        users
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
            files: self.files.clone(),
            payloads: self.payloads.clone(),
            reports: self.reports.clone(),
            network: self.network.clone(),
            node_hostname: self.node_hostname.clone(),
            metrics: self.metrics.clone(),
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

/// The executor without a session, for the integration tests (`tests/health.rs`): assignments
/// in, status reports out. Hidden, and not part of the API.
#[derive(Debug)]
pub struct Standalone {
    executor: Executor,
    reports: mpsc::UnboundedReceiver<(String, v1::TaskStatus)>,
}

impl Standalone {
    /// An executor for node `node_id` on `runtime`, without networking (each task gets a fresh
    /// network namespace with loopback only); named volumes and the tasks' secret files go
    /// where `dirs` says.
    pub fn new(runtime: Arc<dyn ContainerRuntime>, node_id: &str, dirs: &NodeDirs) -> Self {
        let (tx, reports) = mpsc::unbounded_channel();
        Self { executor: Executor::new(runtime, node_id.to_owned(), dirs, tx, None), reports }
    }

    /// A secret or config, as the assignments bring it.
    pub fn payload(&mut self, change: &v1::AssignmentChange) {
        self.executor.payloads.lock().unwrap_or_else(std::sync::PoisonError::into_inner).apply(change);
    }

    /// The node's complete assignment set, as a session's first message gives it.
    pub fn set_complete(&mut self, tasks: Vec<v1::Task>) {
        self.executor.set_complete(tasks);
    }

    /// A new or changed task.
    pub fn update(&mut self, task: v1::Task) {
        self.executor.update(task);
    }

    /// The next status report: (task ID, status).
    pub async fn report(&mut self) -> Option<(String, v1::TaskStatus)> {
        self.reports.recv().await
    }
}

/// Where a node keeps what its tasks use.
#[derive(Debug, Clone)]
pub struct NodeDirs {
    /// Named volumes (`DATA/volumes`).
    pub volumes: PathBuf,
    /// The tasks' secret and config files, each task's on a tmpfs of its own (`DATA/tasks`);
    /// `None` with the simulated runtime, whose containers read no files.
    pub task_files: Option<PathBuf>,
}

impl NodeDirs {
    /// The directories under a node's data directory.
    pub fn under(data_dir: &std::path::Path) -> Self {
        Self { volumes: data_dir.join("volumes"), task_files: Some(data_dir.join("tasks")) }
    }
}

#[derive(Debug, Clone)]
struct Ctx {
    runtime: Arc<dyn ContainerRuntime>,
    node_id: String,
    volumes: Arc<LocalVolumes>,
    files: TaskFiles,
    payloads: SharedPayloads,
    reports: Reports,
    network: Option<Arc<Networking>>,
    node_hostname: String,
    metrics: Option<crate::AgentMetrics>,
}

/// The hostname of a task's container: the one its spec asks for (docker's templates such as
/// `{{.Service.Name}}-{{.Task.Slot}}` expanded), or the first 12 characters of its ID (as Docker
/// takes the container ID's).
fn hostname(task: &v1::Task, container: &v1::ContainerSpec, node_hostname: &str) -> String {
    if container.hostname.is_empty() {
        task.id.chars().take(12).collect()
    } else {
        crate::etc::expand_hostname(&container.hostname, task, &task.node_id, node_hostname)
    }
}

/// The task's container spec (empty when it has none).
fn container_of(task: &v1::Task) -> v1::ContainerSpec {
    task.spec.as_ref().and_then(|s| s.container.clone()).unwrap_or_default()
}

/// How long the task's container may take to stop before it is killed.
fn stop_grace(task: &v1::Task) -> Duration {
    task.spec
        .as_ref()
        .and_then(|s| s.container.as_ref())
        .and_then(|c| shoal_api::from_duration(c.stop_grace_period.as_ref()))
        .unwrap_or(DEFAULT_GRACE)
}

/// A task's container that runs (or ran), for the monitor: its health check, if it has one, and
/// where its health stands.
#[derive(Debug)]
struct Watched {
    check: Option<Check>,
    health: health::Status,
}

impl Watched {
    /// A container followed without a health check.
    const PLAIN: Self = Self { check: None, health: health::Status::Healthy };
}

/// What the monitor woke for.
enum Event {
    Exited(Result<shoal_runtime::ExitStatus, ContainerError>),
    /// The task changed; `false`: it left this node's assignments.
    Changed(bool),
    Health(Verdict),
}

/// The next verdict of the health checks, if there are any.
async fn next_verdict(prober: Option<&mut Prober>) -> Verdict {
    match prober {
        Some(prober) => prober.next().await,
        None => std::future::pending().await,
    }
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
        if let Some(metrics) = &self.metrics {
            metrics.task_state(task_id, state);
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
            Some(ContainerState::Running) => Some(self.adopt(&task).await),
            Some(ContainerState::Stopped) => Some(Watched::PLAIN),
            Some(ContainerState::Created) | None => self.start(&task).await,
        };
        if let Some(watched) = started {
            self.monitor(&id, &mut updates, watched).await;
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
        self.files.release(&id);
        if let Some(metrics) = &self.metrics {
            metrics.task_gone(&id);
        }
    }

    /// A running container found after an agent restart: its networking is adopted, and its
    /// health checks go on. A task already RUNNING stays so (states only move forward); one
    /// with a health check that had not yet passed stays STARTING until a probe passes, and its
    /// start period begins again now.
    async fn adopt(&self, task: &v1::Task) -> Watched {
        let id = task.id.as_str();
        let container = container_of(task);
        // Its namespace, links and balancers are there: the pass adopts them.
        if let Some(network) = &self.network
            && let Err(err) = network.prepare(task, &hostname(task, &container, &self.node_hostname)).await
        {
            tracing::warn!(task.id = %id, error = %err, "could not adopt the networking of a running task");
        }
        let check = match self.health_check(&container, &container.image).await {
            Ok(check) => check,
            Err(err) => {
                tracing::warn!(task.id = %id, error = %err, "adopted without the image's health check");
                health::effective(container.healthcheck.as_ref(), None).ok().flatten()
            }
        };
        let running = task.observed_state() as i32 >= TaskState::Running as i32;
        if check.is_some() && !running {
            let message = "starting (adopted after an agent restart; waiting for its health check)";
            self.report(id, TaskState::Starting, message, "", None);
            return Watched { check, health: health::Status::Starting };
        }
        self.report(id, TaskState::Running, "running (adopted after an agent restart)", "", None);
        Watched { check, health: health::Status::Healthy }
    }

    /// The health check of a task whose image is `image` (present here): the spec's merged over
    /// the image's.
    async fn health_check(&self, container: &v1::ContainerSpec, image: &str) -> Result<Option<Check>, String> {
        let from_image = self.runtime.image_healthcheck(image).await.map_err(|e| e.to_string())?;
        health::effective(container.healthcheck.as_ref(), from_image.as_ref())
            .map_err(|e| format!("image {image}: {e}"))
    }

    /// Prepares and starts the task's container; returns what the monitor follows, or `None`
    /// when it does not run.
    async fn start(&self, task: &v1::Task) -> Option<Watched> {
        let id = task.id.as_str();
        if task.desired() as i32 > TaskState::Running as i32 {
            self.report(id, TaskState::Shutdown, "shut down before it started", "", None);
            return None;
        }
        self.report(id, TaskState::Accepted, "accepted", "", None);
        self.report(id, TaskState::Preparing, "preparing", "", None);
        let container = container_of(task);
        let pulling = std::time::Instant::now();
        let ensured = self.runtime.ensure_image(&ImageSource::registry(&container.image)).await;
        if let Some(metrics) = &self.metrics {
            metrics.observe_pull(pulling.elapsed());
        }
        let image = match ensured {
            Ok(image) => image,
            Err(err) => {
                self.report(id, TaskState::Rejected, "preparing failed", &err.to_string(), None);
                return None;
            }
        };
        let check = match self.health_check(&container, &image).await {
            Ok(check) => check,
            Err(err) => {
                self.report(id, TaskState::Rejected, "preparing failed", &err, None);
                return None;
            }
        };
        let mut mounts = match self.mounts(&container).await {
            Ok(mounts) => mounts,
            Err(err) => {
                self.report(id, TaskState::Rejected, "preparing failed", &err, None);
                return None;
            }
        };
        let files = {
            let payloads = self.payloads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.files.prepare(id, &container, &payloads)
        };
        match files {
            Ok(files) => mounts.extend(files),
            Err(err) => {
                self.report(id, TaskState::Rejected, "preparing failed", &err, None);
                return None;
            }
        }
        let hostname = hostname(task, &container, &self.node_hostname);
        let mut spec = self.container_spec(task, &container, image, mounts, &hostname);
        spec.hosts = Some(etc::hosts_file(&hostname, None, &container.hosts));
        spec.resolv_conf = Some(etc::resolv_conf(None, container.dns_config.as_ref()));
        if let Some(network) = &self.network {
            match network.prepare(task, &hostname).await {
                Ok(wired) => {
                    spec.netns = Some(wired.netns);
                    spec.hosts = Some(etc::hosts_file(&hostname, Some(&wired.hosts), &container.hosts));
                    spec.resolv_conf = Some(etc::resolv_conf(Some(&wired.resolv_conf), container.dns_config.as_ref()));
                }
                Err(err) => {
                    self.report(id, TaskState::Rejected, "network setup failed", &err.to_string(), None);
                    return None;
                }
            }
        }
        let creating = std::time::Instant::now();
        let mut created = self.runtime.create(&spec).await;
        if let Err(ContainerError::AlreadyExists { .. }) = created {
            // Left by an earlier attempt at this very task that died before starting it.
            let _ = self.runtime.remove(id).await;
            created = self.runtime.create(&spec).await;
        }
        if let Err(err) = created {
            self.report(id, TaskState::Rejected, "create failed", &err.to_string(), None);
            return None;
        }
        self.report(id, TaskState::Ready, "ready", "", None);
        self.report(id, TaskState::Starting, "starting", "", None);
        if let Err(err) = self.runtime.start(id).await {
            self.report(id, TaskState::Failed, "start failed", &err.to_string(), None);
            return None;
        }
        if let Some(metrics) = &self.metrics {
            metrics.observe_start(creating.elapsed());
        }
        if check.is_some() {
            // RUNNING (and with it VIP and DNS traffic) waits for the first passing probe.
            self.report(id, TaskState::Starting, "started; waiting for its health check", "", None);
            return Some(Watched { check, health: health::Status::Starting });
        }
        self.report(id, TaskState::Running, "started", "", None);
        Some(Watched::PLAIN)
    }

    /// Follows a running task until it exits, is told to stop (including by the desired state
    /// it already has when the monitor starts) or its health check finds it unhealthy. Health
    /// checks run all along: the first passing probe moves a starting task to RUNNING.
    async fn monitor(&self, id: &str, updates: &mut watch::Receiver<v1::Task>, watched: Watched) {
        let mut serving = watched.health == health::Status::Healthy;
        let mut prober =
            watched.check.map(|check| Prober::start(self.runtime.clone(), id.to_owned(), check, watched.health));
        let mut assigned = true;
        loop {
            if !assigned || updates.borrow_and_update().desired() as i32 > TaskState::Running as i32 {
                // No probe runs into the stop.
                drop(prober.take());
                let attached = !updates.borrow().networks.is_empty();
                if assigned && serving && attached {
                    // It took traffic: every node drops it from its load balancers and DNS as
                    // soon as the manager tells it to stop. Stopping it a moment later lets
                    // those changes land and requests in flight finish, so a rolling update or
                    // a scale-down loses no request; an exit meanwhile ends the wait.
                    tokio::select! {
                        () = tokio::time::sleep(ENDPOINT_DRAIN) => {}
                        _ = self.runtime.wait(id) => {}
                    }
                }
                let grace = stop_grace(&updates.borrow());
                match self.runtime.stop(id, grace).await {
                    Ok(status) => self.report(id, TaskState::Shutdown, "shutdown", "", Some(status.code)),
                    Err(err) => self.report(id, TaskState::Shutdown, "shutdown", &err.to_string(), None),
                }
                return;
            }
            let event = tokio::select! {
                exit = self.runtime.wait(id) => Event::Exited(exit),
                // A dropped sender: the task left this node's assignments.
                changed = updates.changed() => Event::Changed(changed.is_ok()),
                verdict = next_verdict(prober.as_mut()) => Event::Health(verdict),
            };
            match event {
                Event::Exited(exit) => {
                    match exit {
                        Ok(status) if status.code == 0 => {
                            self.report(id, TaskState::Complete, "finished", "", Some(0));
                        }
                        Ok(status) => {
                            let oom = if status.oom_killed { ": OOM killed" } else { "" };
                            let err = format!("task: non-zero exit ({}){oom}", status.code);
                            self.report(id, TaskState::Failed, "failed", &err, Some(status.code));
                        }
                        Err(err) => {
                            self.report(id, TaskState::Failed, "lost track of the container", &err.to_string(), None);
                        }
                    }
                    return;
                }
                Event::Changed(still_assigned) => assigned = still_assigned,
                Event::Health(Verdict::Healthy) => {
                    serving = true;
                    self.report(id, TaskState::Running, "started; healthy", "", None);
                }
                Event::Health(Verdict::Unhealthy { output }) => {
                    drop(prober.take());
                    let message = format!("unhealthy: {output}");
                    let grace = stop_grace(&updates.borrow());
                    match self.runtime.stop(id, grace).await {
                        Ok(status) => self.report(id, TaskState::Failed, &message, UNHEALTHY, Some(status.code)),
                        Err(err) => {
                            tracing::warn!(task.id = %id, error = %err, "could not stop an unhealthy container");
                            self.report(id, TaskState::Failed, &message, UNHEALTHY, None);
                        }
                    }
                    return;
                }
            }
        }
    }

    /// The task's mounts as the runtime takes them, with what they need on this node made
    /// first: a bind mount's source must exist (as Swarm rejects the task otherwise), and a
    /// named volume is created on first use (with its local driver options: an NFS export, a
    /// tmpfs…) and kept for the tasks that come after, on this node.
    async fn mounts(&self, container: &v1::ContainerSpec) -> Result<Vec<Mount>, String> {
        let mut mounts = Vec::with_capacity(container.mounts.len());
        for m in &container.mounts {
            mounts.push(match v1::mount::Type::try_from(m.r#type).unwrap_or(v1::mount::Type::Bind) {
                v1::mount::Type::Bind => {
                    if !std::path::Path::new(&m.source).exists() {
                        return Err(format!(
                            "invalid mount config for type \"bind\": bind source path does not exist: {}",
                            m.source
                        ));
                    }
                    let propagation = match m.bind_options.as_ref().map(|b| b.propagation()) {
                        Some(v1::mount::bind_options::Propagation::Private) => Propagation::Private,
                        Some(v1::mount::bind_options::Propagation::Rshared) => Propagation::Rshared,
                        Some(v1::mount::bind_options::Propagation::Shared) => Propagation::Shared,
                        Some(v1::mount::bind_options::Propagation::Rslave) => Propagation::Rslave,
                        Some(v1::mount::bind_options::Propagation::Slave) => Propagation::Slave,
                        Some(v1::mount::bind_options::Propagation::Rprivate) | None => Propagation::Rprivate,
                    };
                    Mount::Bind {
                        source: m.source.clone().into(),
                        target: m.target.clone(),
                        read_only: m.read_only,
                        propagation,
                    }
                }
                v1::mount::Type::Volume => {
                    let options = m.volume_options.clone().unwrap_or_default();
                    let driver_options = options.driver_options.into_iter().collect();
                    let labels = options.labels.into_iter().collect();
                    let (volumes, name) = (self.volumes.clone(), m.source.clone());
                    // A network filesystem's mount may take a while: off the runtime's threads.
                    let volume = tokio::task::spawn_blocking(move || volumes.ensure(&name, &driver_options, &labels))
                        .await
                        .map_err(|e| format!("volume {}: {e}", m.source))?
                        .map_err(|e| e.to_string())?;
                    Mount::Volume {
                        source: volume.mountpoint,
                        target: m.target.clone(),
                        read_only: m.read_only,
                        copy_image_content: !options.no_copy,
                    }
                }
                v1::mount::Type::Tmpfs => Mount::Tmpfs {
                    target: m.target.clone(),
                    size_bytes: u64::try_from(m.tmpfs_size_bytes).unwrap_or(0),
                    mode: if m.tmpfs_mode == 0 { 0o1777 } else { m.tmpfs_mode },
                },
            });
        }
        Ok(mounts)
    }

    fn container_spec(
        &self,
        task: &v1::Task,
        container: &v1::ContainerSpec,
        image: String,
        mounts: Vec<Mount>,
        hostname: &str,
    ) -> ContainerSpec {
        let mut labels: std::collections::BTreeMap<String, String> =
            container.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.insert(labels::TASK.to_owned(), task.id.clone());
        labels.insert(labels::NODE.to_owned(), self.node_id.clone());
        labels.insert(labels::SERVICE.to_owned(), task.service_id.clone());
        let limits =
            task.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.limits.clone()).unwrap_or_default();
        let positive = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
        // Docker's -1 is unlimited.
        let rlimit = |v: i64| u64::try_from(v).unwrap_or(u64::MAX);
        let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        ContainerSpec {
            id: task.id.clone(),
            image,
            entrypoint: non_empty(&container.command),
            args: non_empty(&container.args),
            env: container.env.clone(),
            user: (!container.user.is_empty()).then(|| container.user.clone()),
            workdir: (!container.dir.is_empty()).then(|| container.dir.clone()),
            hostname: Some(hostname.to_owned()),
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
            capability_add: container.capability_add.clone(),
            capability_drop: container.capability_drop.clone(),
            sysctls: container.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ulimits: container
                .ulimits
                .iter()
                .map(|u| Ulimit { name: u.name.clone(), soft: rlimit(u.soft), hard: rlimit(u.hard) })
                .collect(),
            init: container.init,
            groups: container.groups.clone(),
        }
    }
}

#[cfg(test)]
mod tests;

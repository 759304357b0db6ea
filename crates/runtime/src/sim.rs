//! A simulated runtime: containers are entries in memory whose "processes" follow a scripted
//! [`SimBehavior`], with a configurable start latency and injected failures. One process can host
//! hundreds of simulated agents for control-plane scale tests; it passes the same conformance
//! suite as the containerd runtime.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use tokio::sync::{broadcast, watch};

use crate::error::{ContainerError, ImageError};
use crate::logs::{LogLine, Stream};
use crate::reference::Reference;
use crate::spec::{
    ContainerInfo, ContainerSpec, ContainerState, ExecOutput, ExecSpec, ExitStatus, Healthcheck, ImageSource,
    LogOptions, RuntimeEvent,
};
use crate::{ContainerRuntime, EventStream, LogStream};

/// What a simulated image's process does once started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimBehavior {
    /// Runs until its stop signal, then exits 0.
    RunUntilStopped,
    /// Exits with `code` after `after`.
    ExitAfter {
        /// Exit code.
        code: i32,
        /// Run time.
        after: Duration,
    },
    /// Ignores its stop signal; only the SIGKILL after the grace period ends it (137).
    IgnoreStopSignal,
    /// Writes these lines, then exits 0.
    Print {
        /// Lines on standard output.
        stdout: Vec<String>,
        /// Lines on standard error.
        stderr: Vec<String>,
    },
    /// Writes these lines, then runs until its stop signal (a server that logs as it starts).
    PrintAndRun {
        /// Lines on standard output.
        stdout: Vec<String>,
        /// Lines on standard error.
        stderr: Vec<String>,
    },
}

/// What a simulated exec returns.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SimExec {
    Output(i32, String),
    Hang,
}

/// The simulated runtime. Clones share state, as two clients of one daemon do.
#[derive(Debug, Clone)]
pub struct Simulated {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    events: broadcast::Sender<RuntimeEvent>,
}

#[derive(Debug, Default)]
struct State {
    start_latency: Duration,
    /// Images a pull can find (normalised reference → behaviour).
    registry: HashMap<String, SimBehavior>,
    /// The health checks in the configs of images a pull can find.
    healthchecks: HashMap<String, Healthcheck>,
    /// Images present locally, as they were pulled.
    local: HashMap<String, LocalImage>,
    pull_failures: HashMap<String, String>,
    start_failures: HashMap<String, String>,
    exec_results: HashMap<Vec<String>, SimExec>,
    /// Execs run in each container (by ID), kept after the container is removed.
    exec_counts: HashMap<String, usize>,
    containers: BTreeMap<String, SimContainer>,
}

#[derive(Debug, Clone)]
struct LocalImage {
    behavior: SimBehavior,
    healthcheck: Option<Healthcheck>,
}

#[derive(Debug)]
struct SimContainer {
    spec: ContainerSpec,
    behavior: SimBehavior,
    /// `None` until started; then the exit, once known.
    started_at: Option<SystemTime>,
    exit_tx: watch::Sender<Option<ExitStatus>>,
    /// Set when the stop signal arrives, for behaviours that honour it.
    stop_tx: watch::Sender<bool>,
    logs: Vec<LogLine>,
}

impl Default for Simulated {
    fn default() -> Self {
        Self::new()
    }
}

impl Simulated {
    /// An empty runtime: no images, no latency.
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        Self { shared: Arc::new(Shared { state: Mutex::new(State::default()), events }) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.shared.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every start takes this long (as pulling and starting a real container would).
    pub fn set_start_latency(&self, latency: Duration) {
        self.state().start_latency = latency;
    }

    /// Makes `reference` pullable; its containers behave as `behavior`.
    pub fn add_image(&self, reference: &str, behavior: SimBehavior) {
        let name = normalise(reference);
        self.state().registry.insert(name, behavior);
    }

    /// Gives the image `reference` this health check in its config (`None`: none), from its next
    /// pull on.
    pub fn set_image_healthcheck(&self, reference: &str, healthcheck: Option<Healthcheck>) {
        let name = normalise(reference);
        let mut state = self.state();
        match healthcheck {
            Some(check) => state.healthchecks.insert(name, check),
            None => state.healthchecks.remove(&name),
        };
    }

    /// Pulls of `reference` fail with `reason` until [`Simulated::clear_failures`].
    pub fn fail_pull(&self, reference: &str, reason: &str) {
        self.state().pull_failures.insert(normalise(reference), reason.to_owned());
    }

    /// Starting container `id` fails with `reason`.
    pub fn fail_start(&self, id: &str, reason: &str) {
        self.state().start_failures.insert(id.to_owned(), reason.to_owned());
    }

    /// Removes every injected failure.
    pub fn clear_failures(&self) {
        let mut state = self.state();
        state.pull_failures.clear();
        state.start_failures.clear();
    }

    /// An exec of exactly `cmd` exits with `code` and prints `stdout`.
    pub fn set_exec_result(&self, cmd: &[&str], code: i32, stdout: &str) {
        let cmd = cmd.iter().map(|s| (*s).to_owned()).collect();
        self.state().exec_results.insert(cmd, SimExec::Output(code, stdout.to_owned()));
    }

    /// An exec of exactly `cmd` never finishes (it runs into its timeout).
    pub fn set_exec_hangs(&self, cmd: &[&str]) {
        let cmd = cmd.iter().map(|s| (*s).to_owned()).collect();
        self.state().exec_results.insert(cmd, SimExec::Hang);
    }

    /// How many execs container `id` has run (the health checks' probes among them).
    pub fn exec_count(&self, id: &str) -> usize {
        self.state().exec_counts.get(id).copied().unwrap_or(0)
    }

    /// Ends a running container's process from outside (a crash, an OOM kill, `kill -9`).
    pub fn kill_externally(&self, id: &str, code: i32, oom_killed: bool) -> Result<(), ContainerError> {
        self.finish(id, code, oom_killed)
    }

    /// How many containers exist (for scale tests).
    pub fn container_count(&self) -> usize {
        self.state().containers.len()
    }

    fn finish(&self, id: &str, code: i32, oom_killed: bool) -> Result<(), ContainerError> {
        let status = {
            let mut state = self.state();
            let container = state.containers.get_mut(id).ok_or_else(|| not_found(id))?;
            if container.exit_tx.borrow().is_some() {
                return Ok(());
            }
            let started_at = container.started_at.ok_or(ContainerError::WrongState {
                id: id.to_owned(),
                operation: "kill",
                state: "created (never started)",
            })?;
            let status = ExitStatus { code, oom_killed, started_at, finished_at: SystemTime::now() };
            container.exit_tx.send_replace(Some(status));
            status
        };
        // Nobody listening is fine: events are for whoever subscribed.
        let _ = self.shared.events.send(RuntimeEvent::Exited { id: id.to_owned(), status });
        Ok(())
    }

    fn run_process(&self, id: String, behavior: SimBehavior, mut stop_rx: watch::Receiver<bool>) {
        let this = self.clone();
        tokio::spawn(async move {
            match behavior {
                SimBehavior::RunUntilStopped | SimBehavior::PrintAndRun { .. } => {
                    if stop_rx.wait_for(|stopped| *stopped).await.is_ok() {
                        let _ = this.finish(&id, 0, false);
                    }
                }
                SimBehavior::ExitAfter { code, after } => {
                    tokio::select! {
                        () = tokio::time::sleep(after) => { let _ = this.finish(&id, code, false); }
                        // Like the crasher image's shell, it dies by the signal.
                        Ok(_) = stop_rx.wait_for(|stopped| *stopped) => { let _ = this.finish(&id, 143, false); }
                    }
                }
                SimBehavior::IgnoreStopSignal => {}
                SimBehavior::Print { .. } => {
                    let _ = this.finish(&id, 0, false);
                }
            }
        });
    }

    fn exit_receiver(&self, id: &str) -> Result<watch::Receiver<Option<ExitStatus>>, ContainerError> {
        let state = self.state();
        let container = state.containers.get(id).ok_or_else(|| not_found(id))?;
        if container.started_at.is_none() {
            return Err(ContainerError::WrongState {
                id: id.to_owned(),
                operation: "wait",
                state: "created (never started)",
            });
        }
        Ok(container.exit_tx.subscribe())
    }
}

fn normalise(reference: &str) -> String {
    Reference::parse(reference).map_or_else(|_| reference.to_owned(), |r| r.to_string())
}

/// Starting a container that has run: a container runs once.
fn already_started(id: &str, container: &SimContainer) -> ContainerError {
    let state = if container.exit_tx.borrow().is_some() { "exited (remove it and create it again)" } else { "running" };
    ContainerError::WrongState { id: id.to_owned(), operation: "start", state }
}

fn not_found(id: &str) -> ContainerError {
    ContainerError::NotFound { id: id.to_owned() }
}

async fn wait_exit(mut rx: watch::Receiver<Option<ExitStatus>>) -> Option<ExitStatus> {
    rx.wait_for(Option::is_some).await.ok().and_then(|status| *status)
}

#[async_trait::async_trait]
impl ContainerRuntime for Simulated {
    async fn ensure_image(&self, source: &ImageSource) -> Result<String, ImageError> {
        let reference = match source {
            ImageSource::Registry { reference, .. } => reference.clone(),
            ImageSource::Archive { path, reference } => reference.clone().ok_or_else(|| ImageError::Archive {
                path: path.clone(),
                reason: "the simulated runtime loads archives only by the reference given".to_owned(),
            })?,
        };
        let name = Reference::parse(&reference)?.to_string();
        let mut state = self.state();
        if let Some(reason) = state.pull_failures.get(&name) {
            return Err(ImageError::Registry {
                registry: "simulated".to_owned(),
                reference: name,
                reason: reason.clone(),
            });
        }
        let behavior = state.registry.get(&name).cloned().ok_or(ImageError::NotFound { reference: name.clone() })?;
        let healthcheck = state.healthchecks.get(&name).cloned();
        state.local.insert(name.clone(), LocalImage { behavior, healthcheck });
        Ok(name)
    }

    async fn image_healthcheck(&self, image: &str) -> Result<Option<Healthcheck>, ImageError> {
        let name = Reference::parse(image)?.to_string();
        let state = self.state();
        let local = state.local.get(&name).ok_or(ImageError::NotFound { reference: name.clone() })?;
        Ok(local.healthcheck.clone())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<(), ContainerError> {
        spec.check_id()?;
        let id = spec.id.clone();
        let image = Reference::parse(&spec.image)
            .map_err(|e| ContainerError::InvalidSpec { id: id.clone(), reason: e.to_string() })?
            .to_string();
        let mut state = self.state();
        if state.containers.contains_key(&id) {
            return Err(ContainerError::AlreadyExists { id });
        }
        let behavior = state
            .local
            .get(&image)
            .map(|local| local.behavior.clone())
            .ok_or(ContainerError::ImageNotFound { id: id.clone(), reference: image })?;
        let (exit_tx, _) = watch::channel(None);
        let (stop_tx, _) = watch::channel(false);
        let container =
            SimContainer { spec: spec.clone(), behavior, started_at: None, exit_tx, stop_tx, logs: Vec::new() };
        state.containers.insert(id, container);
        Ok(())
    }

    async fn start(&self, id: &str) -> Result<(), ContainerError> {
        let latency = {
            let state = self.state();
            let container = state.containers.get(id).ok_or_else(|| not_found(id))?;
            if container.started_at.is_some() {
                return Err(already_started(id, container));
            }
            if let Some(reason) = state.start_failures.get(id) {
                return Err(ContainerError::Injected { id: id.to_owned(), reason: reason.clone() });
            }
            state.start_latency
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let (behavior, stop_rx) = {
            let mut state = self.state();
            let container = state.containers.get_mut(id).ok_or_else(|| not_found(id))?;
            // Another start may have finished during the latency: only one of them runs it.
            if container.started_at.is_some() {
                return Err(already_started(id, container));
            }
            let now = SystemTime::now();
            container.started_at = Some(now);
            if let SimBehavior::Print { stdout, stderr } | SimBehavior::PrintAndRun { stdout, stderr } =
                &container.behavior
            {
                let lines =
                    stdout.iter().map(|l| (Stream::Stdout, l)).chain(stderr.iter().map(|l| (Stream::Stderr, l)));
                container.logs.extend(lines.map(|(stream, line)| LogLine { time: now, stream, line: line.clone() }));
            }
            (container.behavior.clone(), container.stop_tx.subscribe())
        };
        self.run_process(id.to_owned(), behavior, stop_rx);
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<ExitStatus, ContainerError> {
        let rx = self.exit_receiver(id)?;
        wait_exit(rx).await.ok_or_else(|| not_found(id))
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<ExitStatus, ContainerError> {
        let rx = self.exit_receiver(id).map_err(|err| match err {
            ContainerError::WrongState { id, state, .. } => ContainerError::WrongState { id, operation: "stop", state },
            other => other,
        })?;
        if let Some(status) = *rx.borrow() {
            return Ok(status);
        }
        if let Some(container) = self.state().containers.get(id) {
            container.stop_tx.send_replace(true);
        }
        match tokio::time::timeout(grace, wait_exit(rx.clone())).await {
            Ok(Some(status)) => Ok(status),
            _ => {
                self.finish(id, 137, false)?;
                wait_exit(rx).await.ok_or_else(|| not_found(id))
            }
        }
    }

    async fn remove(&self, id: &str) -> Result<(), ContainerError> {
        let mut state = self.state();
        let container = state.containers.get(id).ok_or_else(|| not_found(id))?;
        if container.started_at.is_some() && container.exit_tx.borrow().is_none() {
            return Err(ContainerError::WrongState {
                id: id.to_owned(),
                operation: "remove",
                state: "running (stop it first)",
            });
        }
        state.containers.remove(id);
        Ok(())
    }

    async fn exec(&self, id: &str, exec: &ExecSpec) -> Result<ExecOutput, ContainerError> {
        let result = {
            let mut state = self.state();
            let container = state.containers.get(id).ok_or_else(|| not_found(id))?;
            if container.started_at.is_none() || container.exit_tx.borrow().is_some() {
                return Err(ContainerError::WrongState { id: id.to_owned(), operation: "exec", state: "not running" });
            }
            *state.exec_counts.entry(id.to_owned()).or_default() += 1;
            state.exec_results.get(&exec.cmd).cloned().unwrap_or(SimExec::Output(0, String::new()))
        };
        match result {
            SimExec::Output(code, stdout) => Ok(ExecOutput { code, timed_out: false, stdout, stderr: String::new() }),
            SimExec::Hang => {
                tokio::time::sleep(exec.timeout).await;
                Ok(ExecOutput { code: 137, timed_out: true, stdout: String::new(), stderr: String::new() })
            }
        }
    }

    async fn logs(&self, id: &str, options: &LogOptions) -> Result<LogStream, ContainerError> {
        let (lines, rx) = {
            let state = self.state();
            let container = state.containers.get(id).ok_or_else(|| not_found(id))?;
            (container.logs.clone(), container.exit_tx.subscribe())
        };
        let lines = crate::logs::select(lines, options.since, options.tail);
        let head = futures::stream::iter(lines);
        if !options.follow {
            return Ok(head.boxed());
        }
        // Simulated processes write only at start, so following ends when the container exits.
        let end = futures::stream::once(wait_exit(rx)).filter_map(|_| async { None });
        Ok(head.chain(end).boxed())
    }

    async fn list(&self, labels: &[(String, String)]) -> Result<Vec<ContainerInfo>, ContainerError> {
        let state = self.state();
        Ok(state
            .containers
            .iter()
            .filter(|(_, c)| labels.iter().all(|(k, v)| c.spec.labels.get(k) == Some(v)))
            .map(|(id, c)| ContainerInfo {
                id: id.clone(),
                image: normalise(&c.spec.image),
                labels: c.spec.labels.clone(),
                state: match (c.started_at, c.exit_tx.borrow().is_some()) {
                    (None, _) => ContainerState::Created,
                    (Some(_), false) => ContainerState::Running,
                    (Some(_), true) => ContainerState::Stopped,
                },
            })
            .collect())
    }

    async fn events(&self) -> Result<EventStream, ContainerError> {
        let rx = self.shared.events.subscribe();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((event, rx)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "simulated event subscriber lagged; events were dropped");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(stream.boxed())
    }
}

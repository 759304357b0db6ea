//! Container health checks as Docker runs them: the effective check of a task (its spec's
//! `HealthConfig` merged field by field over the image's `HEALTHCHECK`), the decision on each
//! probe's result ([`Health`], pure), and the [`Prober`] that execs the check in the container
//! every interval and tells the executor when the container turns healthy or unhealthy.

use std::sync::Arc;
use std::time::Duration;

use shoal_api::v1;
use shoal_runtime::{ContainerError, ContainerRuntime, ExecOutput, ExecSpec, Healthcheck};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Docker's default interval, for a check whose spec and image set none.
pub(crate) const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// Docker's default probe timeout.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Docker's default number of failures in a row that make a container unhealthy.
pub(crate) const DEFAULT_RETRIES: u32 = 3;

/// How long past its timeout the prober waits for the runtime's answer to a probe before it
/// counts the probe as timed out itself (a runtime that hangs must not stop the checks).
const EXEC_SLACK: Duration = Duration::from_secs(5);

/// The check a task's container runs, every field settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    /// What to exec: a `CMD`'s arguments, or `/bin/sh -c` and a `CMD-SHELL`'s command.
    pub(crate) cmd: Vec<String>,
    /// From start to the first probe, and from the end of each probe to the next.
    pub(crate) interval: Duration,
    /// A probe running longer fails.
    pub(crate) timeout: Duration,
    /// After start, failures do not count for this long, unless a probe has passed.
    pub(crate) start_period: Duration,
    /// Failures in a row that make the container unhealthy (at least 1).
    pub(crate) retries: u32,
}

/// The merged health check cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CheckError {
    /// The test's first word is not a kind Docker knows.
    #[error("invalid health check {test:?}: unknown type {kind:?} (expected CMD, CMD-SHELL or NONE)")]
    UnknownType {
        /// The whole test.
        test: Vec<String>,
        /// Its first word.
        kind: String,
    },
    /// `CMD` or `CMD-SHELL` without a command.
    #[error("invalid health check {test:?}: no command")]
    NoCommand {
        /// The whole test.
        test: Vec<String>,
    },
}

/// The check a task runs: each field of the spec's `healthcheck`, or where it is empty or zero
/// the image's (Docker's merge), then Docker's defaults (interval 30 s, timeout 30 s, retries 3,
/// start period 0). `None` when neither has a test, or the test is `["NONE"]`.
pub(crate) fn effective(
    spec: Option<&v1::HealthConfig>,
    image: Option<&Healthcheck>,
) -> Result<Option<Check>, CheckError> {
    let spec = spec.cloned().unwrap_or_default();
    let image = image.cloned().unwrap_or_default();
    let first_set = |durations: [Duration; 3]| durations.into_iter().find(|d| !d.is_zero()).unwrap_or_default();
    let from_spec = |d: Option<&_>| shoal_api::from_duration(d).unwrap_or_default();
    let interval = first_set([from_spec(spec.interval.as_ref()), image.interval, DEFAULT_INTERVAL]);
    let timeout = first_set([from_spec(spec.timeout.as_ref()), image.timeout, DEFAULT_TIMEOUT]);
    let start_period = first_set([from_spec(spec.start_period.as_ref()), image.start_period, Duration::ZERO]);
    let retries = [spec.retries, image.retries].into_iter().find(|r| *r > 0).unwrap_or(DEFAULT_RETRIES);
    let test = if spec.test.is_empty() { image.test } else { spec.test };
    let Some((kind, command)) = test.split_first() else { return Ok(None) };
    let shell = ["/bin/sh", "-c"].map(str::to_owned);
    let cmd = match kind.as_str() {
        "NONE" => return Ok(None),
        "CMD" | "CMD-SHELL" if command.is_empty() => return Err(CheckError::NoCommand { test }),
        "CMD" => command.to_vec(),
        "CMD-SHELL" => shell.into_iter().chain(command.iter().cloned()).collect(),
        other => return Err(CheckError::UnknownType { kind: other.to_owned(), test }),
    };
    Ok(Some(Check { cmd, interval, timeout, start_period, retries }))
}

/// Where a container's health stands (Docker's statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// No probe has passed yet.
    Starting,
    /// The last probe passed, or fewer than `retries` have failed since.
    Healthy,
    /// `retries` probes in a row failed.
    Unhealthy,
}

/// The decisions of a health check, fed the probes' results: no I/O, no clock.
#[derive(Debug)]
pub(crate) struct Health {
    start_period: Duration,
    retries: u32,
    status: Status,
    failing_streak: u32,
}

impl Health {
    /// A check that starts at `status` (`Starting` for a new container).
    pub(crate) fn new(check: &Check, status: Status) -> Self {
        Self { start_period: check.start_period, retries: check.retries.max(1), status, failing_streak: 0 }
    }

    /// A probe that ended `since_start` after the container started passed or failed; returns
    /// the new status when it changed. As Docker: a pass makes the container healthy; a failure
    /// while it is still starting and within the start period does not count; `retries`
    /// failures in a row make it unhealthy.
    pub(crate) fn observe(&mut self, passed: bool, since_start: Duration) -> Option<Status> {
        let before = self.status;
        if passed {
            self.failing_streak = 0;
            self.status = Status::Healthy;
        } else if !(self.status == Status::Starting && since_start < self.start_period) {
            self.failing_streak = self.failing_streak.saturating_add(1);
            if self.failing_streak >= self.retries {
                self.status = Status::Unhealthy;
            }
        }
        (self.status != before).then_some(self.status)
    }
}

/// What the prober tells the executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A probe passed while the container was starting.
    Healthy,
    /// `retries` probes in a row failed; what the last one said (trimmed). The checks have
    /// stopped.
    Unhealthy {
        /// The last probe's output, or why it failed when it said nothing.
        output: String,
    },
}

/// The health checks of one container, run on their own tokio task (so that whatever the
/// executor waits on alongside never cancels a probe) until this is dropped.
#[derive(Debug)]
pub(crate) struct Prober {
    verdicts: mpsc::Receiver<Verdict>,
    task: JoinHandle<()>,
}

impl Prober {
    /// Starts checking container `id`, which has just started (or was adopted) in `status`:
    /// the first probe runs one interval from now.
    pub(crate) fn start(runtime: Arc<dyn ContainerRuntime>, id: String, check: Check, status: Status) -> Self {
        let (tx, verdicts) = mpsc::channel(2);
        let task = tokio::spawn(run(runtime, id, check, status, tx));
        Self { verdicts, task }
    }

    /// The next change of health. Never resolves once the checks have ended.
    pub(crate) async fn next(&mut self) -> Verdict {
        match self.verdicts.recv().await {
            Some(verdict) => verdict,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Probe {
    passed: bool,
    output: String,
}

async fn run(runtime: Arc<dyn ContainerRuntime>, id: String, check: Check, status: Status, tx: mpsc::Sender<Verdict>) {
    let started = Instant::now();
    let mut health = Health::new(&check, status);
    loop {
        tokio::time::sleep(check.interval).await;
        // A container that is not running has exited: the executor reports that, not this.
        let Some(probe) = probe(&*runtime, &id, &check).await else { continue };
        if !probe.passed {
            tracing::debug!(task.id = %id, output = %probe.output, "health check failed");
        }
        match health.observe(probe.passed, started.elapsed()) {
            Some(Status::Healthy) => {
                tracing::info!(task.id = %id, "container is healthy");
                if tx.send(Verdict::Healthy).await.is_err() {
                    return;
                }
            }
            Some(Status::Unhealthy) => {
                tracing::info!(task.id = %id, retries = check.retries, output = %probe.output, "container is unhealthy");
                let _ = tx.send(Verdict::Unhealthy { output: probe.output }).await;
                return;
            }
            Some(Status::Starting) | None => {}
        }
    }
}

/// Runs the check once; `None` when the container does not run (any more).
async fn probe(runtime: &dyn ContainerRuntime, id: &str, check: &Check) -> Option<Probe> {
    let exec = ExecSpec { cmd: check.cmd.clone(), timeout: check.timeout };
    // Docker's words, so that people find what they know.
    let timed_out = || Probe { passed: false, output: format!("Health check exceeded timeout ({:?})", check.timeout) };
    match tokio::time::timeout(check.timeout + EXEC_SLACK, runtime.exec(id, &exec)).await {
        Err(_) => Some(timed_out()),
        Ok(Ok(out)) if out.timed_out => Some(timed_out()),
        Ok(Ok(out)) => Some(Probe { passed: out.code == 0, output: output(&out) }),
        Ok(Err(ContainerError::NotFound { .. } | ContainerError::WrongState { .. })) => None,
        Ok(Err(err)) => Some(Probe { passed: false, output: err.to_string() }),
    }
}

/// A probe's standard output and error, trimmed; what its exit was when it printed nothing.
fn output(out: &ExecOutput) -> String {
    let parts: Vec<&str> = [out.stdout.trim(), out.stderr.trim()].into_iter().filter(|p| !p.is_empty()).collect();
    if parts.is_empty() { format!("health check exited {} with no output", out.code) } else { parts.join("\n") }
}

#[cfg(test)]
mod tests;

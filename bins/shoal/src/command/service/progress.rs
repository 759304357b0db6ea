//! Waiting for a service as docker's CLI does: [`converge`] after a create or a scale (tasks
//! running, jobs complete), and [`follow`] after an update or rollback that replaces tasks,
//! driven by the service's `update_status` as the leader advances it. What is printed is worked
//! out by [`UpdateWatch::step`] from a snapshot (service and tasks), so it is tested without a
//! cluster; the loops only fetch snapshots, print and sleep.

use std::time::{Duration, SystemTime};

use shoal_api::v1::{self, TaskState, control_client::ControlClient, update_status::UpdateState};
use tonic::transport::Channel;

use super::opts::DEFAULT_MONITOR;
use super::{blocked, get_service};
use crate::command::api;
use crate::render;

/// Between two looks at the cluster.
const POLL: Duration = Duration::from_millis(400);

/// How long after the update's monitor period a converged service is taken as done even if
/// its status never says so (a leader that has not written it yet).
const GRACE: Duration = Duration::from_secs(5);

/// What was written: `service update` or `service rollback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Update,
    Rollback,
}

fn is_job(service: &v1::Service) -> bool {
    matches!(
        service.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(v1::service_spec::Mode::ReplicatedJob(_) | v1::service_spec::Mode::GlobalJob(_))
    )
}

fn is_global(service: &v1::Service) -> bool {
    matches!(service.spec.as_ref().and_then(|s| s.mode.as_ref()), Some(v1::service_spec::Mode::Global(_)))
}

async fn service_tasks(control: &mut ControlClient<Channel>, service_id: &str) -> anyhow::Result<Vec<v1::Task>> {
    let request = v1::ListTasksRequest { service_ids: vec![service_id.to_owned()], ..Default::default() };
    Ok(control.list_tasks(request).await.map_err(api)?.into_inner().tasks)
}

/// After an update or rollback was written (`before` as read, `after` as the manager answered):
/// follows the rolling update it started, or, when it replaces no task (a scale, a label), waits
/// for convergence as `create` does.
pub(crate) async fn follow(
    control: &mut ControlClient<Channel>,
    before: &v1::Service,
    after: &v1::Service,
    kind: Kind,
    quiet: bool,
) -> anyhow::Result<()> {
    // The manager starts an update (a new status) only when tasks are to be replaced.
    let started = after.update_status.is_some() && after.update_status != before.update_status;
    if is_job(after) || !started {
        return converge(control, &after.id, quiet).await;
    }
    let mut watch = UpdateWatch::new(kind, before.update_status.clone());
    loop {
        let service = get_service(control, after.id.clone()).await?;
        anyhow::ensure!(service.allocation_error.is_empty(), "{}", blocked(&service));
        let tasks = service_tasks(control, &service.id).await?;
        let step = watch.step(&service, &tasks, SystemTime::now());
        if !quiet {
            print!("{}", step.output);
        }
        match step.end {
            None => tokio::time::sleep(POLL).await,
            Some(Ok(())) => return Ok(()),
            Some(Err(message)) => anyhow::bail!(message),
        }
    }
}

/// What one look at the cluster gave: lines to print, and whether the command ends (with an
/// error message when it fails).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) output: String,
    pub(crate) end: Option<Result<(), String>>,
}

/// The state of following an update or rollback from one snapshot to the next.
#[derive(Debug)]
pub(crate) struct UpdateWatch {
    kind: Kind,
    /// The status before the write: not news (a paused update being continued is not paused).
    before: Option<v1::UpdateStatus>,
    rolling_back: bool,
    last_block: String,
    converged_since: Option<SystemTime>,
}

impl UpdateWatch {
    pub(crate) fn new(kind: Kind, before: Option<v1::UpdateStatus>) -> Self {
        Self { kind, before, rolling_back: false, last_block: String::new(), converged_since: None }
    }

    pub(crate) fn step(&mut self, service: &v1::Service, tasks: &[v1::Task], now: SystemTime) -> Step {
        let mut output = String::new();
        let status = service.update_status.as_ref().filter(|s| Some(*s) != self.before.as_ref());
        let state = status.map(|s| UpdateState::try_from(s.state).unwrap_or(UpdateState::Unknown));
        let message = status.map(|s| s.message.as_str()).unwrap_or_default();
        match state {
            Some(UpdateState::RollbackStarted) if !self.rolling_back => {
                output.push_str(&format!("rollback: {message}\n"));
                self.rolling_back = true;
            }
            Some(UpdateState::RollbackPaused | UpdateState::RollbackCompleted) => self.rolling_back = true,
            _ => {}
        }
        let block = update_block(service, tasks, self.rolling_back);
        if block != self.last_block {
            output.push_str(&block);
            self.last_block = block;
        }
        let converged = is_converged(service, tasks);
        self.converged_since = if converged { Some(self.converged_since.unwrap_or(now)) } else { None };
        let name = render::service_name(service);
        let end = match state {
            Some(UpdateState::Paused) => Some(Err(format!(
                "service update paused: {message}; see shoal service ps {name}, then run shoal service update \
                 {name} to go on or shoal service rollback {name}"
            ))),
            Some(UpdateState::RollbackPaused) => {
                Some(Err(format!("service rollback paused: {message}; see shoal service ps {name}")))
            }
            // The update failed and the leader undid it: the command failed.
            Some(UpdateState::RollbackCompleted) if self.kind == Kind::Update => {
                Some(Err(format!("service rolled back: {message}")))
            }
            Some(UpdateState::Completed | UpdateState::RollbackCompleted) if converged => Some(Ok(())),
            // Nothing was left to replace (every task had ended), so the update completed at
            // once; the restart policy brings the new tasks. Waiting is right while they come
            // up, not while they keep failing.
            Some(UpdateState::Completed | UpdateState::RollbackCompleted) => {
                let since = status.and_then(|s| shoal_api::from_timestamp(s.completed_at.as_ref()));
                failed_since(service, tasks, since).map(|task| {
                    let err = task.status.as_ref().map(|s| s.err.as_str()).unwrap_or_default();
                    Err(format!(
                        "service {name}: the {} completed but its task {} failed: {err}; see shoal service ps {name}",
                        if self.rolling_back { "rollback" } else { "update" },
                        task.id
                    ))
                })
            }
            _ => {
                let waited = self.converged_since.and_then(|since| now.duration_since(since).ok());
                waited.is_some_and(|waited| waited >= monitor(service, self.rolling_back) + GRACE).then_some(Ok(()))
            }
        };
        if end == Some(Ok(())) {
            output.push_str("verify: Service converged\n");
        }
        Step { output, end }
    }
}

/// A task of the service's current spec that failed (or was rejected) at or after `since`.
fn failed_since<'a>(service: &v1::Service, tasks: &'a [v1::Task], since: Option<SystemTime>) -> Option<&'a v1::Task> {
    let since = since?;
    tasks.iter().find(|t| {
        let at = shoal_api::from_timestamp(t.status.as_ref().and_then(|s| s.timestamp.as_ref()));
        matches!(t.observed_state(), TaskState::Failed | TaskState::Rejected)
            && at.is_some_and(|at| at >= since)
            && !shoal_manager::task_dirty(service, t)
    })
}

/// The monitor period of the update (or rollback) config in force.
fn monitor(service: &v1::Service, rolling_back: bool) -> Duration {
    let spec = service.spec.as_ref();
    let config =
        if rolling_back { spec.and_then(|s| s.rollback.as_ref()) } else { spec.and_then(|s| s.update.as_ref()) };
    config.and_then(|c| shoal_api::from_duration(c.monitor.as_ref())).unwrap_or(DEFAULT_MONITOR)
}

/// Tasks that should run, those already on the service's current spec, and how many should.
fn tally<'a>(service: &v1::Service, tasks: &'a [v1::Task]) -> (Vec<&'a v1::Task>, Vec<&'a v1::Task>, usize) {
    let live: Vec<&v1::Task> = tasks.iter().filter(|t| t.desired_state <= TaskState::Running as i32).collect();
    let updated: Vec<&v1::Task> = live.iter().copied().filter(|t| !shoal_manager::task_dirty(service, t)).collect();
    let desired = match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(v1::service_spec::Mode::Replicated(r)) => r.replicas as usize,
        _ => {
            let nodes: std::collections::BTreeSet<&str> =
                live.iter().map(|t| t.node_id.as_str()).filter(|n| !n.is_empty()).collect();
            nodes.len().max(live.iter().filter(|t| t.node_id.is_empty()).count())
        }
    };
    (live, updated, desired)
}

/// Every slot (or node) runs a task of the current spec, and no other task is left.
pub(crate) fn is_converged(service: &v1::Service, tasks: &[v1::Task]) -> bool {
    let (live, updated, desired) = tally(service, tasks);
    let running = updated.iter().filter(|t| t.observed_state() == TaskState::Running).count();
    running == desired && live.len() == desired
}

/// The progress block of an update: only tasks of the current spec count and have a bar (a
/// slot still on the old spec shows an empty line), as docker shows `_up-to-date` tasks.
pub(crate) fn update_block(service: &v1::Service, tasks: &[v1::Task], rolling_back: bool) -> String {
    let (_, updated, desired) = tally(service, tasks);
    let block = render::progress(&updated, desired, is_global(service));
    match block.strip_prefix("overall progress: ") {
        Some(rest) if rolling_back => format!("overall progress: rolling back update: {rest}"),
        _ => block,
    }
}

/// Waits until the service's tasks run, printing progress as docker does; fails at once with
/// the reason when the service cannot be allocated (it would wait forever).
pub(crate) async fn converge(
    control: &mut ControlClient<Channel>,
    service_id: &str,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut last = String::new();
    let mut print = |line: String| {
        if line != last {
            if !quiet {
                print!("{line}");
            }
            last = line;
        }
    };
    loop {
        let service = get_service(control, service_id.to_owned()).await?;
        anyhow::ensure!(service.allocation_error.is_empty(), "{}", blocked(&service));
        let tasks = service_tasks(control, service_id).await?;
        let live: Vec<&v1::Task> = tasks.iter().filter(|t| t.desired_state <= TaskState::Running as i32).collect();
        let desired = match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
            Some(v1::service_spec::Mode::Replicated(r)) => r.replicas as usize,
            _ => live.len(),
        };
        let running = live.iter().filter(|t| t.observed_state() == TaskState::Running).count();
        // A job converges when its tasks have completed, not while they run; its progress is
        // judged as the leader judges it (the current iteration, exit codes, the restart policy).
        if is_job(&service) {
            let nodes = control.list_nodes(v1::ListNodesRequest::default()).await.map_err(api)?.into_inner().nodes;
            let progress = shoal_manager::job_progress(&service, &tasks, &nodes, SystemTime::now()).unwrap_or_default();
            let failed = if progress.failed > 0 { format!(", {} failed", progress.failed) } else { String::new() };
            print(format!(
                "job progress: {} out of {} complete, {} running{failed}\n",
                progress.completed, progress.total, progress.running
            ));
            if progress.finished() && progress.total > 0 {
                anyhow::ensure!(
                    progress.failed == 0,
                    "job {service_id}: {} of {} failed and will not be retried; see `shoal service ps {service_id}`",
                    progress.failed,
                    progress.total
                );
                print("verify: Job complete\n".to_owned());
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
            continue;
        }
        // Printed again whenever a task moved (not redrawn in place: the output may be a file).
        print(render::progress(&live, desired, is_global(&service)));
        if running == desired && live.len() == desired {
            print("verify: Service converged\n".to_owned());
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests;

//! Waiting on a stack's services: before a service that `depends_on` others is created, until
//! each of those is started, healthy or completed as its condition says (Swarm ignores
//! `depends_on`; Shoal honours it), and after the deploy until every service converged. What a
//! look at a service says is [`readiness`], a pure function of the service, its tasks and the
//! nodes, tested as a table; the loops only fetch, print what changed and sleep.

use std::time::{Duration, SystemTime};

use shoal_api::v1::{self, TaskState, control_client::ControlClient, update_status::UpdateState};
use shoal_compose::Condition;
use tonic::transport::Channel;

use crate::command::api;
use crate::command::service::{blocked, get_service};
use crate::render;

/// Between two looks at the cluster.
const POLL: Duration = Duration::from_millis(400);

/// What to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Goal {
    /// A `depends_on` condition.
    Dependency(Condition),
    /// The end of a deploy: every task of the current spec running (a job: complete), no
    /// other task left, and the update (if one was started) completed.
    Converged,
}

/// What one look at a service says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// The goal is reached: a word for it (`running`, `healthy`, `complete`, `converged`).
    Ready(String),
    /// Not yet: how far it is, and why a task is behind when it says.
    Waiting(String),
    /// It will not be reached without someone acting: why, and what to look at.
    Failed(String),
}

fn is_job(service: &v1::Service) -> bool {
    matches!(
        service.spec.as_ref().and_then(|s| s.mode.as_ref()),
        Some(v1::service_spec::Mode::ReplicatedJob(_) | v1::service_spec::Mode::GlobalJob(_))
    )
}

/// What `goal` says of `service` now. `baseline` is its update status before this deploy
/// wrote it (or, for a service left as it was, its status now): a status equal to it is old
/// news (the rollback of an earlier deploy), but for a pause, which needs someone to act.
pub(crate) fn readiness(
    goal: Goal,
    service: &v1::Service,
    tasks: &[v1::Task],
    nodes: &[v1::Node],
    baseline: Option<&v1::UpdateStatus>,
    now: SystemTime,
) -> Readiness {
    let name = render::service_name(service);
    if !service.allocation_error.is_empty() {
        return Readiness::Failed(blocked(service));
    }
    // A pause is news even when it was there before: the service will not converge by itself.
    let paused =
        |s: &v1::UpdateStatus| s.state == UpdateState::Paused as i32 || s.state == UpdateState::RollbackPaused as i32;
    let status = service.update_status.as_ref().filter(|s| Some(*s) != baseline || paused(s));
    let state = status.map(|s| UpdateState::try_from(s.state).unwrap_or(UpdateState::Unknown));
    let message = status.map(|s| s.message.as_str()).unwrap_or_default();
    match state {
        Some(UpdateState::Paused) => {
            return Readiness::Failed(format!(
                "service {name}: update paused: {message}; see shoal service ps {name}, then deploy again or run \
                 shoal service rollback {name}"
            ));
        }
        Some(UpdateState::RollbackPaused) => {
            return Readiness::Failed(format!(
                "service {name}: rollback paused: {message}; see shoal service ps {name}"
            ));
        }
        Some(UpdateState::RollbackStarted) => {
            return Readiness::Failed(format!(
                "service {name}: the update failed and is being rolled back: {message}; see shoal service ps {name}"
            ));
        }
        Some(UpdateState::RollbackCompleted) => {
            return Readiness::Failed(format!("service {name} rolled back: {message}; see shoal service ps {name}"));
        }
        _ => {}
    }
    let updating = state == Some(UpdateState::Updating);
    if is_job(service) {
        let progress = shoal_manager::job_progress(service, tasks, nodes, now).unwrap_or_default();
        if progress.finished() && progress.total > 0 {
            if progress.failed > 0 {
                return Readiness::Failed(format!(
                    "job {name}: {} of {} tasks failed and will not be retried; see shoal service ps {name}",
                    progress.failed, progress.total
                ));
            }
            return Readiness::Ready("complete".to_owned());
        }
        let iteration = service.job_status.as_ref().map_or(0, |s| s.job_iteration);
        let started = tasks.iter().any(|t| {
            t.job_iteration == iteration
                && matches!(t.observed_state(), TaskState::Starting | TaskState::Running | TaskState::Complete)
        });
        return match goal {
            Goal::Dependency(Condition::Started | Condition::Healthy) if started => {
                Readiness::Ready("started".to_owned())
            }
            _ => Readiness::Waiting(format!("{} out of {} complete", progress.completed, progress.total)),
        };
    }
    // Tasks that should run, and those of them made from the current spec.
    let live: Vec<&v1::Task> = tasks.iter().filter(|t| t.desired_state <= TaskState::Running as i32).collect();
    let current: Vec<&v1::Task> = live.iter().copied().filter(|t| !shoal_manager::task_dirty(service, t)).collect();
    let desired = match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(v1::service_spec::Mode::Replicated(r)) => usize::try_from(r.replicas).unwrap_or(usize::MAX),
        // Global: one per node the orchestrator gave a task to.
        _ => {
            let nodes: std::collections::BTreeSet<&str> = live.iter().map(|t| t.node_id.as_str()).collect();
            nodes.len()
        }
    };
    let is_global =
        !matches!(service.spec.as_ref().and_then(|s| s.mode.as_ref()), Some(v1::service_spec::Mode::Replicated(_)));
    let count = |states: &[TaskState]| current.iter().filter(|t| states.contains(&t.observed_state())).count();
    let running = count(&[TaskState::Running]);
    let started = count(&[TaskState::Starting, TaskState::Running]);
    let enough = |n: usize| n >= desired && (desired > 0 || !is_global);
    match goal {
        Goal::Dependency(Condition::Started) if enough(started) => return Readiness::Ready("started".to_owned()),
        Goal::Dependency(Condition::Healthy) if enough(running) => return Readiness::Ready("healthy".to_owned()),
        Goal::Dependency(Condition::CompletedSuccessfully) => return completion(service, tasks),
        Goal::Converged if !updating && enough(running) && live.len() == desired => {
            return Readiness::Ready("converged".to_owned());
        }
        _ => {}
    }
    // Why the first task that is behind is behind, when it says.
    let why = current
        .iter()
        .filter(|t| t.observed_state() != TaskState::Running)
        .find_map(|t| {
            let status = t.status.as_ref()?;
            let text = if status.err.is_empty() { &status.message } else { &status.err };
            (!text.is_empty()).then(|| format!(" ({text})"))
        })
        .unwrap_or_default();
    let what =
        if is_global && desired == 0 { "no task yet".to_owned() } else { format!("{running}/{desired} running") };
    let updating = if updating { "updating, " } else { "" };
    Readiness::Waiting(format!("{updating}{what}{why}"))
}

/// `service_completed_successfully` of a service that is not a job (the converter refused
/// those whose tasks restart whatever way they end): every current task ended with exit 0.
fn completion(service: &v1::Service, tasks: &[v1::Task]) -> Readiness {
    let name = render::service_name(service);
    let current: Vec<&v1::Task> = tasks.iter().filter(|t| !shoal_manager::task_dirty(service, t)).collect();
    let complete = current.iter().filter(|t| t.observed_state() == TaskState::Complete).count();
    let active = current
        .iter()
        .filter(|t| !t.observed_state().is_terminal() && t.desired_state <= TaskState::Running as i32)
        .count();
    let desired = match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(v1::service_spec::Mode::Replicated(r)) => usize::try_from(r.replicas).unwrap_or(usize::MAX),
        _ => current.iter().map(|t| t.node_id.as_str()).collect::<std::collections::BTreeSet<_>>().len(),
    };
    let restarts = service.spec.as_ref().and_then(|s| s.task.as_ref()).and_then(|t| t.restart.as_ref());
    let never_restarts = restarts.is_some_and(|r| r.condition == v1::restart_policy::Condition::None as i32);
    let failed = current.iter().find(|t| matches!(t.observed_state(), TaskState::Failed | TaskState::Rejected));
    if let (Some(failed), true) = (failed, never_restarts) {
        let err = failed.status.as_ref().map(|s| s.err.as_str()).unwrap_or_default();
        return Readiness::Failed(format!(
            "service {name}: task {} failed and is not restarted: {err}; see shoal service ps {name}",
            failed.id
        ));
    }
    if active == 0 && desired > 0 && complete >= desired {
        return Readiness::Ready("complete".to_owned());
    }
    let why = failed
        .and_then(|t| t.status.as_ref())
        .filter(|s| !s.err.is_empty())
        .map(|s| format!(" (a task failed: {})", s.err))
        .unwrap_or_default();
    Readiness::Waiting(format!("{complete}/{desired} complete{why}"))
}

/// One look at a service: fetches it, its tasks and (for jobs) the nodes.
async fn look(
    control: &mut ControlClient<Channel>,
    service: &str,
    goal: Goal,
    baseline: Option<&v1::UpdateStatus>,
) -> anyhow::Result<Readiness> {
    let service = get_service(control, service.to_owned()).await?;
    let request = v1::ListTasksRequest { service_ids: vec![service.id.clone()], ..Default::default() };
    let tasks = control.list_tasks(request).await.map_err(api)?.into_inner().tasks;
    let nodes = if is_job(&service) {
        control.list_nodes(v1::ListNodesRequest::default()).await.map_err(api)?.into_inner().nodes
    } else {
        Vec::new()
    };
    Ok(readiness(goal, &service, &tasks, &nodes, baseline, SystemTime::now()))
}

/// `--wait-timeout`: when waiting stops, and the limit as given (for the message).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub(crate) at: tokio::time::Instant,
    pub(crate) after: Duration,
}

impl Deadline {
    fn passed(deadline: Option<Self>) -> Option<Duration> {
        deadline.filter(|d| tokio::time::Instant::now() >= d.at).map(|d| d.after)
    }
}

/// Waits until `dependency` meets `condition` before `dependent` is deployed, printing how far
/// it is whenever that changes; `baseline` as for [`readiness`]; fails once `deadline` passed.
pub(crate) async fn dependency(
    control: &mut ControlClient<Channel>,
    dependent: &str,
    dependency: &str,
    condition: Condition,
    baseline: Option<&v1::UpdateStatus>,
    quiet: bool,
    deadline: Option<Deadline>,
) -> anyhow::Result<()> {
    let mut last = String::new();
    loop {
        if let Some(after) = Deadline::passed(deadline) {
            anyhow::bail!(
                "{dependent} is not deployed: it waited {} for {dependency} ({}), which is not there yet: {last}",
                crate::command::service::go_duration(after),
                condition.as_str()
            );
        }
        match look(control, dependency, Goal::Dependency(condition), baseline).await? {
            Readiness::Ready(_) => return Ok(()),
            Readiness::Failed(why) => {
                anyhow::bail!(
                    "{dependent} is not deployed: it waits for {dependency} ({}), but {why}",
                    condition.as_str()
                )
            }
            Readiness::Waiting(how) => {
                if how != last && !quiet {
                    println!("Waiting for {dependency} ({}): {how}", condition.as_str());
                }
                last = how;
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A service deploy waits for at its end, with its update status before the deploy wrote it.
#[derive(Debug, Clone)]
pub(crate) struct Watched {
    pub(crate) name: String,
    pub(crate) baseline: Option<v1::UpdateStatus>,
}

/// Waits until every service converged (jobs: completed), printing each one's progress when
/// it changes and `NAME: converged` as each gets there; fails at once naming a service that
/// cannot (blocked, update paused or rolled back, a job's tasks failed), or once `deadline`
/// passed naming those that are not there yet.
pub(crate) async fn converged(
    control: &mut ControlClient<Channel>,
    services: &[Watched],
    quiet: bool,
    deadline: Option<Deadline>,
) -> anyhow::Result<()> {
    let mut last: Vec<Option<Readiness>> = vec![None; services.len()];
    loop {
        if let Some(after) = Deadline::passed(deadline) {
            let behind: Vec<String> = services
                .iter()
                .zip(&last)
                .filter_map(|(watched, last)| match last {
                    Some(Readiness::Waiting(how)) => Some(format!("{}: {how}", watched.name)),
                    None => Some(watched.name.clone()),
                    _ => None,
                })
                .collect();
            anyhow::bail!(
                "the stack did not converge within {} (--wait-timeout); what was deployed stays. Not there yet: {}",
                crate::command::service::go_duration(after),
                behind.join("; ")
            );
        }
        let mut all = true;
        for (watched, last) in services.iter().zip(last.iter_mut()) {
            if matches!(last, Some(Readiness::Ready(_))) {
                continue;
            }
            let now = look(control, &watched.name, Goal::Converged, watched.baseline.as_ref()).await?;
            if let Readiness::Failed(why) = &now {
                anyhow::bail!("{why}");
            }
            if last.as_ref() != Some(&now) && !quiet {
                match &now {
                    Readiness::Ready(word) | Readiness::Waiting(word) => println!("{}: {word}", watched.name),
                    Readiness::Failed(_) => {}
                }
            }
            all &= matches!(now, Readiness::Ready(_));
            *last = Some(now);
        }
        if all {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests;

//! Rolling updates and rollbacks, as a pure function of stored state: which tasks run an older
//! spec ([`task_dirty`]), and the plan of one leader pass for a service being updated.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use shoal_api::v1::{self, TaskState, update_config::FailureAction, update_config::Order, update_status::UpdateState};

use crate::orchestrator::{
    DEFAULT_RESTART_DELAY, creation, current as current_task, ended_by_itself, later, status_time, version,
};

/// Whether `task` runs something other than what its `service` asks for now, so that an update
/// replaces it: its task spec (image, command, environment, resources, restart policy,
/// `--force`…), the networks it is attached to, or the service's endpoint (mode, published
/// ports). A difference in placement constraints alone does not make a task dirty (Swarm's rule): a task whose
/// node no longer meets the constraints is moved by constraint enforcement instead, and the others
/// stay where they are.
pub fn task_dirty(service: &v1::Service, task: &v1::Task) -> bool {
    let spec = service.spec.as_ref();
    let wanted = spec.and_then(|s| s.task.as_ref());
    let differs_beyond_placement = match (wanted, task.spec.as_ref()) {
        (Some(wanted), Some(has)) => without_constraints(wanted) != without_constraints(has),
        (wanted, has) => wanted.is_some() != has.is_some(),
    };
    if differs_beyond_placement {
        return true;
    }
    let wanted_networks: BTreeSet<&str> =
        spec.map(|s| s.networks.iter().map(|n| n.target.as_str()).collect()).unwrap_or_default();
    let has_networks: BTreeSet<&str> = task
        .networks
        .iter()
        .filter_map(|a| a.network.as_ref())
        .filter(|n| !n.spec.as_ref().is_some_and(|s| s.ingress))
        .map(|n| n.id.as_str())
        .collect();
    if wanted_networks != has_networks {
        return true;
    }
    let endpoint_spec = |e: Option<&v1::Endpoint>| e.and_then(|e| e.spec.clone()).unwrap_or_default();
    service.endpoint.is_some() && endpoint_spec(service.endpoint.as_ref()) != endpoint_spec(task.endpoint.as_ref())
}

/// Whether changing a service's spec from `old` to `new` replaces its tasks (what
/// [`task_dirty`] would say of a task made from `old`): the control API starts a rolling update
/// for such a change only.
pub(crate) fn changes_tasks(old: &v1::ServiceSpec, new: &v1::ServiceSpec) -> bool {
    let task = |s: &v1::ServiceSpec| s.task.as_ref().map(without_constraints);
    let networks = |s: &v1::ServiceSpec| s.networks.iter().map(|n| n.target.clone()).collect::<BTreeSet<_>>();
    task(old) != task(new) || networks(old) != networks(new) || old.endpoint != new.endpoint
}

/// A task spec without its placement constraints, which alone do not make a task dirty.
fn without_constraints(spec: &v1::TaskSpec) -> v1::TaskSpec {
    let mut spec = spec.clone();
    if let Some(placement) = spec.placement.as_mut() {
        placement.constraints.clear();
    }
    if spec.placement.as_ref().is_some_and(|p| *p == v1::Placement::default()) {
        spec.placement = None;
    }
    spec
}

/// Swarm's default monitor period: how long after it runs an updated task's failure still counts
/// against the update.
pub(crate) const DEFAULT_MONITOR: Duration = Duration::from_secs(5);

/// What the update of one service does in one leader pass. `K` names a unit: a replicated
/// service's slot, or a global service's node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpdatePlan<K> {
    /// Tasks of an older spec to stop now (stop-first: their units are refilled with the current
    /// spec once they stopped).
    pub(crate) shutdown: Vec<String>,
    /// Units that get a task of the current spec now, beside the old one (start-first: the old
    /// one stops once the new one runs).
    pub(crate) create: Vec<K>,
    /// The service's new update status, when it changes.
    pub(crate) status: Option<v1::UpdateStatus>,
    /// Roll the service back to its previous spec (the failure action `rollback` fired).
    pub(crate) rollback: bool,
    /// When the plan changes by itself (a delay or monitor period ends): the pass is due then.
    pub(crate) due: Option<SystemTime>,
}

impl<K> Default for UpdatePlan<K> {
    fn default() -> Self {
        Self { shutdown: Vec::new(), create: Vec::new(), status: None, rollback: false, due: None }
    }
}

impl<K> UpdatePlan<K> {
    fn due(&mut self, at: SystemTime) {
        self.due = Some(self.due.map_or(at, |due| due.min(at)));
    }
}

/// An update's state, with its message, started `now`.
pub(crate) fn status(state: UpdateState, message: &str, now: SystemTime) -> v1::UpdateStatus {
    v1::UpdateStatus {
        state: state as i32,
        started_at: Some(shoal_api::to_timestamp(now)),
        completed_at: None,
        message: message.to_owned(),
    }
}

/// Plans one pass of `service`'s rolling update (or rollback), while its update status says one
/// runs. `units` holds the history of the units the service should have (slots up to the
/// replica count, eligible nodes) that had tasks, `total` counts all it should have (for the
/// failure ratio), `waiting` the units the orchestrator is about to refill (a restart delay, a
/// task still stopping); `lost` says whether a task's node can no longer run it.
///
/// Rules (Swarm's updater, made a function of the stored state so that any leader carries on):
/// - The update's tasks are those of the current spec ([`task_dirty`] is false) made since the
///   update started. A *lane* is busy while one of them has not reached RUNNING, for `delay`
///   after it did, or while a unit waits for its next task (an older task stopping, a restart
///   delay); at most `parallelism` lanes
///   are busy (0: no limit). Free lanes take the dirty units in order: stop-first stops the old
///   task (the orchestrator refills the unit once it stopped), start-first adds the new task
///   beside it (the orchestrator stops the old one once the new one runs).
/// - An update's task that ends by itself (fails, is rejected or exits; an unhealthy task fails)
///   before it ran, or within `monitor` of running, is a failure. When failures exceed
///   `max_failure_ratio` of the units, the failure action applies: `pause` stops the update
///   (PAUSED, or ROLLBACK_PAUSED during a rollback), `rollback` rolls the service back (not
///   during a rollback, where it pauses), `continue` carries on.
/// - The update completes when no unit is dirty, no lane is busy and its last tasks have run for
///   `monitor`.
pub(crate) fn plan_update<K: Clone + Ord>(
    service: &v1::Service,
    units: &BTreeMap<K, Vec<&v1::Task>>,
    total: usize,
    waiting: &BTreeSet<K>,
    lost: impl Fn(&v1::Task) -> bool,
    now: SystemTime,
) -> UpdatePlan<K> {
    let mut plan = UpdatePlan::default();
    let Some(current) = service.update_status.as_ref() else { return plan };
    let rolling_back = match UpdateState::try_from(current.state) {
        Ok(UpdateState::Updating) => false,
        Ok(UpdateState::RollbackStarted) => true,
        _ => return plan,
    };
    let spec = service.spec.as_ref();
    // A service stored without one (made through the API, not the CLI) gets Swarm's defaults:
    // one task at a time, pause on failure, 5 s monitor, stop-first.
    let config = if rolling_back { spec.and_then(|s| s.rollback) } else { spec.and_then(|s| s.update) }
        .unwrap_or(v1::UpdateConfig { parallelism: 1, ..Default::default() });
    let started = shoal_api::from_timestamp(current.started_at.as_ref()).unwrap_or(SystemTime::UNIX_EPOCH);
    let delay = shoal_api::from_duration(config.delay.as_ref()).unwrap_or_default();
    let monitor = match config.monitor.as_ref() {
        Some(monitor) => shoal_api::from_duration(Some(monitor)).unwrap_or_default(),
        None => DEFAULT_MONITOR,
    };
    let restart_delay = spec
        .and_then(|s| s.task.as_ref())
        .and_then(|t| t.restart.as_ref())
        .and_then(|r| shoal_api::from_duration(r.delay.as_ref()))
        .unwrap_or(DEFAULT_RESTART_DELAY);
    let made_by_update = |t: &v1::Task| !task_dirty(service, t) && creation_time(t).is_some_and(|at| at >= started);

    let mut busy = 0usize;
    let mut watching = false;
    let mut failures: Vec<&v1::Task> = Vec::new();
    let mut dirty: Vec<(&K, &v1::Task)> = Vec::new();
    for (unit, history) in units {
        for task in history.iter().copied().filter(|t| made_by_update(t)) {
            let running_since = shoal_api::from_timestamp(task.running_since.as_ref());
            if ended_by_itself(task) {
                let ended = status_time(task).unwrap_or(now);
                if running_since.is_none_or(|since| ended <= later(since, monitor)) {
                    failures.push(task);
                }
            } else if let Some(since) = running_since
                && task.observed_state() == TaskState::Running
                && later(since, monitor) > now
            {
                watching = true;
                plan.due(later(since, monitor));
            }
        }
        let mut live: Vec<&v1::Task> = history
            .iter()
            .copied()
            .filter(|t| current_task(t) && !t.observed_state().is_terminal() && !lost(t))
            .collect();
        live.sort_by_key(|t| std::cmp::Reverse(creation(t)));
        match live.first() {
            Some(newest) if task_dirty(service, newest) => {
                // A start-first replacement that ended by itself beside the old task (under the
                // failure action `continue`) is tried again only after the restart delay, as
                // the orchestrator would refill the unit: no new task every pass.
                let retry_at = history
                    .iter()
                    .copied()
                    .filter(|t| made_by_update(t) && ended_by_itself(t))
                    .filter_map(status_time)
                    .max()
                    .map(|ended| later(ended, restart_delay));
                match retry_at {
                    Some(at) if at > now => {
                        busy += 1;
                        plan.due(at);
                    }
                    _ => dirty.push((unit, newest)),
                }
            }
            Some(newest) if made_by_update(newest) => {
                let running_since = shoal_api::from_timestamp(newest.running_since.as_ref());
                match running_since.filter(|_| newest.observed_state() == TaskState::Running) {
                    None => busy += 1,
                    Some(since) if later(since, delay) > now => {
                        busy += 1;
                        plan.due(later(since, delay));
                    }
                    Some(_) => {}
                }
            }
            Some(_) => {}
            // Its next task is not made yet (an old one still stopping, a restart delay): in
            // flight. A unit whose restart policy gave up is not.
            None => {
                if waiting.contains(unit) {
                    busy += 1;
                }
            }
        }
    }

    let total = total.max(units.len()).max(1);
    let ratio = failures.len() as f64 / total as f64;
    if !failures.is_empty() && ratio > f64::from(config.max_failure_ratio) {
        let last = failures.iter().max_by_key(|t| (status_time(t), version(t))).map_or("", |t| t.id.as_str());
        let action = FailureAction::try_from(config.failure_action).unwrap_or(FailureAction::Pause);
        match (action, rolling_back) {
            (FailureAction::Continue, _) => {}
            (FailureAction::Rollback, false) if service.previous_spec.is_some() => {
                let message = format!("update rolled back due to failure or early termination of task {last}");
                plan.status = Some(status(UpdateState::RollbackStarted, &message, now));
                plan.rollback = true;
                plan.due = None;
                return plan;
            }
            (_, rolling_back) => {
                let (state, what) = if rolling_back {
                    (UpdateState::RollbackPaused, "rollback")
                } else {
                    (UpdateState::Paused, "update")
                };
                let message = format!("{what} paused due to failure or early termination of task {last}");
                plan.status = Some(v1::UpdateStatus { state: state as i32, message, ..current.clone() });
                plan.due = None;
                return plan;
            }
        }
    }

    if dirty.is_empty() && busy == 0 {
        if watching {
            return plan;
        }
        let (state, message) = if rolling_back {
            (UpdateState::RollbackCompleted, "rollback completed")
        } else {
            (UpdateState::Completed, "update completed")
        };
        plan.status = Some(v1::UpdateStatus {
            state: state as i32,
            message: message.to_owned(),
            completed_at: Some(shoal_api::to_timestamp(now)),
            ..current.clone()
        });
        plan.due = None;
        return plan;
    }
    let free = match usize::try_from(config.parallelism) {
        Ok(0) => usize::MAX,
        Ok(parallelism) => parallelism.saturating_sub(busy),
        Err(_) => usize::MAX,
    };
    let start_first = config.order == Order::StartFirst as i32;
    for (unit, task) in dirty.into_iter().take(free) {
        if start_first {
            plan.create.push(unit.clone());
        } else {
            plan.shutdown.push(task.id.clone());
        }
    }
    plan
}

/// When a task was made (none before it is stored).
fn creation_time(task: &v1::Task) -> Option<SystemTime> {
    shoal_api::from_timestamp(task.meta.as_ref().and_then(|m| m.created_at.as_ref()))
}

#[cfg(test)]
mod tests;

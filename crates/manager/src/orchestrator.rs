//! The replicated orchestrator's reconcile step, as a pure function: a service, its tasks and the
//! nodes in; which slots need a new task and which tasks to shut down out. The leader's control
//! loop applies the plan through the object store; keeping the decision pure keeps it testable.
//!
//! Rules (Swarm's, with one deliberate difference noted):
//! - A slot is *occupied* by its current task (desired state RUNNING or earlier) while that task
//!   has not ended and its node is neither Down nor draining.
//! - A current task on a Down or draining node is shut down and its slot refilled at once: a lost
//!   node is not a task failure, so no restart delay and no restart-attempt count apply.
//! - A current task that ended by itself (COMPLETE, FAILED, REJECTED) is shut down (moved to
//!   history); its slot is refilled when the restart policy allows it: condition `any` always,
//!   `on-failure` unless it completed with exit 0, `none` never; at most `max_attempts` such
//!   restarts within `window`; the new task waits `delay` before it starts.
//! - Scaling down shuts down the occupied slots above the replica count, so the lowest slots
//!   stay. (Swarm also prefers non-running tasks and the busiest nodes; with dense slot numbers
//!   the slot number alone decides, which keeps `service ps` stable.)

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use shoal_api::v1::{self, TaskState, restart_policy::Condition};

/// Swarm's default restart delay.
const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(5);

/// What the orchestrator should do for one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicatedPlan {
    /// Slots that need a new task, each with the time before which it must not be created (the
    /// previous task's end plus the restart delay; `now` when there is nothing to wait for).
    pub create: Vec<(u64, SystemTime)>,
    /// Tasks whose desired state becomes SHUTDOWN.
    pub shutdown: Vec<String>,
}

/// Whether the node a task is on can no longer run it (Down, draining or gone; a task on no
/// node yet is not lost).
pub(crate) fn node_lost(task: &v1::Task, nodes: &HashMap<&str, &v1::Node>) -> bool {
    if task.node_id.is_empty() {
        return false;
    }
    let Some(node) = nodes.get(task.node_id.as_str()) else { return true };
    let down = node.status.as_ref().is_some_and(|s| s.state == v1::node_status::State::Down as i32);
    let draining = node.spec.as_ref().is_some_and(|s| s.availability == v1::NodeAvailability::Drain as i32);
    down || draining
}

fn ended_by_itself(task: &v1::Task) -> bool {
    matches!(task.observed_state(), TaskState::Complete | TaskState::Failed | TaskState::Rejected)
}

/// The exit code a task's container ended with (0 when none is known).
pub(crate) fn exit_code(task: &v1::Task) -> i32 {
    task.status.as_ref().and_then(|s| s.container.as_ref()).map_or(0, |c| c.exit_code)
}

/// When the task's status was last set.
pub(crate) fn status_time(task: &v1::Task) -> Option<SystemTime> {
    shoal_api::from_timestamp(task.status.as_ref().and_then(|s| s.timestamp.as_ref()))
}

/// Whether the restart policy lets a slot whose last task ended by itself get a new task.
fn restart_allowed(
    policy: Option<&v1::RestartPolicy>,
    history: &[&v1::Task],
    last: &v1::Task,
    now: SystemTime,
) -> bool {
    let condition = policy.and_then(|p| Condition::try_from(p.condition).ok()).unwrap_or(Condition::Any);
    let wanted = match condition {
        Condition::Any => true,
        Condition::OnFailure => !(last.observed_state() == TaskState::Complete && exit_code(last) == 0),
        Condition::None => false,
    };
    let max_attempts = policy.map_or(0, |p| p.max_attempts);
    if !wanted || max_attempts == 0 {
        return wanted;
    }
    let window = policy.and_then(|p| shoal_api::from_duration(p.window.as_ref())).unwrap_or_default();
    let attempts = history
        .iter()
        .filter(|t| ended_by_itself(t))
        .filter(|t| {
            window.is_zero() || status_time(t).is_some_and(|at| now.duration_since(at).unwrap_or_default() <= window)
        })
        .count() as u64;
    // The first run is not a restart: N attempts allow N restarts after it.
    attempts <= max_attempts
}

/// Plans the replicated `service`'s slots from its `tasks` and the cluster's `nodes`.
pub fn reconcile_replicated(
    service: &v1::Service,
    tasks: &[v1::Task],
    nodes: &[v1::Node],
    now: SystemTime,
) -> ReplicatedPlan {
    let spec = service.spec.as_ref();
    let Some(v1::service_spec::Mode::Replicated(mode)) = spec.and_then(|s| s.mode.as_ref()) else {
        return ReplicatedPlan::default();
    };
    let policy = spec.and_then(|s| s.task.as_ref()).and_then(|t| t.restart.as_ref());
    let delay = policy.and_then(|p| shoal_api::from_duration(p.delay.as_ref())).unwrap_or(DEFAULT_RESTART_DELAY);
    let nodes: HashMap<&str, &v1::Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();

    let mut slots: BTreeMap<u64, Vec<&v1::Task>> = BTreeMap::new();
    for task in tasks.iter().filter(|t| t.service_id == service.id && t.slot > 0) {
        slots.entry(task.slot).or_default().push(task);
    }
    let mut plan = ReplicatedPlan::default();
    let mut occupied = Vec::new();
    let mut refill = Vec::new();
    for (&slot, history) in &slots {
        let current: Vec<&&v1::Task> =
            history.iter().filter(|t| t.desired() as i32 <= TaskState::Running as i32).collect();
        if current.is_empty() {
            // Nothing runs here: refill only if the last task's end allows it (idempotent, as
            // the decision depends on the history alone).
            let last = history.iter().max_by_key(|t| (status_time(t), t.meta.as_ref().map_or(0, |m| m.version)));
            match last {
                Some(last) if ended_by_itself(last) => {
                    if restart_allowed(policy, history, last, now) {
                        refill.push((slot, status_time(last).unwrap_or(now) + delay));
                    }
                }
                _ => refill.push((slot, now)),
            }
            continue;
        }
        // Normally one current task; keep the newest, shut the others down.
        let newest = current.iter().max_by_key(|t| t.meta.as_ref().map_or(0, |m| m.version)).copied();
        for task in &current {
            if Some(*task) != newest {
                plan.shutdown.push(task.id.clone());
            }
        }
        let Some(task) = newest else { continue };
        if node_lost(task, &nodes) {
            plan.shutdown.push(task.id.clone());
            refill.push((slot, now));
        } else if task.observed_state() as i32 > TaskState::Running as i32 {
            plan.shutdown.push(task.id.clone());
            if ended_by_itself(task) && restart_allowed(policy, history, task, now) {
                refill.push((slot, status_time(task).unwrap_or(now) + delay));
            } else if !ended_by_itself(task) {
                refill.push((slot, now));
            }
        } else {
            occupied.push((slot, task.id.clone()));
        }
    }
    let replicas = mode.replicas;
    for (slot, id) in occupied.iter().filter(|(slot, _)| *slot > replicas) {
        tracing::debug!(service.id = %service.id, slot, task.id = %id, "scaling down");
        plan.shutdown.push(id.clone());
    }
    plan.create = refill.into_iter().filter(|(slot, _)| *slot <= replicas).collect();
    // Slots never used yet (scale-up, a new service) start at once; every used slot is
    // occupied, planned or waiting already.
    plan.create.extend((1..=replicas).filter(|slot| !slots.contains_key(slot)).map(|slot| (slot, now)));
    plan.create.sort_unstable();
    plan.shutdown.sort_unstable();
    plan.shutdown.dedup();
    plan
}

#[cfg(test)]
mod tests;

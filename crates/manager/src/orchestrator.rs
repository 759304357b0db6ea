//! The replicated and global orchestrators' reconcile steps, as pure functions: a service, its
//! tasks and the nodes in; which slots (or nodes) need a new task and which tasks to shut down
//! out. The leader's control loop applies the plans through the object store; keeping the
//! decision pure keeps it testable. The restart policy ([`Restarts`]) is applied here for every
//! orchestrator, jobs included.
//!
//! Rules (Swarm's, with one deliberate difference noted). A *unit* is a replicated service's
//! slot, or one node of a global service; its history is every task it ever had.
//! - A unit is *occupied* by its current task (desired state RUNNING or earlier) while that task
//!   has not ended and its node can still run it (replicated: not Down, draining or gone;
//!   global: eligible, or paused and Ready).
//! - A current task that ended by itself (COMPLETE, FAILED, REJECTED) is shut down (moved to
//!   history), wherever its node is now; its unit is refilled when the restart policy allows it:
//!   condition `any` always, `on-failure` unless it completed with exit 0, `none` never; at most
//!   `max_attempts` such restarts within `window`; the new task waits `delay` (default 5 s)
//!   after the end before it starts.
//! - A current task whose node can no longer run it is shut down and its unit refilled at once
//!   (a global service's node only once it is eligible again): a lost node is not a task
//!   failure, so no restart delay and no restart-attempt count apply. A unit whose last task was
//!   stopped without ending by itself is likewise refilled at once.
//! - Scaling down shuts down the occupied slots above the replica count, so the lowest slots
//!   stay. (Swarm also prefers non-running tasks and the busiest nodes; with dense slot numbers
//!   the slot number alone decides, which keeps `service ps` stable.)
//! - Global: every eligible node (`shoal_scheduler::eligible_nodes`: Ready, Active, meeting the
//!   constraints and platforms) without a unit gets a task at once; a task on no node is shut
//!   down.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use shoal_api::v1::{self, TaskState, restart_policy::Condition};

use crate::placement::{snapshot, task_spec};
use crate::updater::plan_update;

/// Swarm's default restart delay, for every orchestrator.
pub(crate) const DEFAULT_RESTART_DELAY: Duration = Duration::from_secs(5);

/// The latest time a protobuf timestamp can hold (9999-12-31T23:59:59.999999999Z), since 1970.
const LATEST_TIMESTAMP: Duration = Duration::new(253_402_300_799, 999_999_999);

/// What the orchestrator should do for one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicatedPlan {
    /// Slots that need a new task, each with the time before which it must not be created (the
    /// previous task's end plus the restart delay; `now` when there is nothing to wait for).
    pub create: Vec<(u64, SystemTime)>,
    /// Tasks whose desired state becomes SHUTDOWN.
    pub shutdown: Vec<String>,
    /// The rolling update's next status, when it changes (see `updater.rs`).
    pub update_status: Option<v1::UpdateStatus>,
    /// The update's failure action rolls the service back to its previous spec.
    pub rollback: bool,
    /// When an update's delay or monitor period ends: a pass is due then.
    pub due: Option<SystemTime>,
}

/// What the global orchestrator should do for one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalPlan {
    /// Nodes that need a new task (created on that node), each with the time before which it
    /// must not be created, as for slots. Sorted by node ID.
    pub create: Vec<(String, SystemTime)>,
    /// Tasks whose desired state becomes SHUTDOWN. Sorted, without duplicates.
    pub shutdown: Vec<String>,
    /// The rolling update's next status, when it changes (see `updater.rs`).
    pub update_status: Option<v1::UpdateStatus>,
    /// The update's failure action rolls the service back to its previous spec.
    pub rollback: bool,
    /// When an update's delay or monitor period ends: a pass is due then.
    pub due: Option<SystemTime>,
}

/// Whether a task is wanted (desired RUNNING or earlier) and has not ended: it holds its slot
/// or node, and its node's resources.
pub(crate) fn live(task: &v1::Task) -> bool {
    current(task) && !task.observed_state().is_terminal()
}

/// Whether a task is wanted: desired RUNNING or earlier.
pub(crate) fn current(task: &v1::Task) -> bool {
    task.desired() as i32 <= TaskState::Running as i32
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

/// Whether a task ended by itself (COMPLETE, FAILED, REJECTED) rather than being stopped.
pub(crate) fn ended_by_itself(task: &v1::Task) -> bool {
    matches!(task.observed_state(), TaskState::Complete | TaskState::Failed | TaskState::Rejected)
}

/// Whether a task completed successfully: COMPLETE with exit code 0.
pub(crate) fn succeeded(task: &v1::Task) -> bool {
    task.observed_state() == TaskState::Complete && exit_code(task) == 0
}

/// The exit code a task's container ended with (0 when none is known).
pub(crate) fn exit_code(task: &v1::Task) -> i32 {
    task.status.as_ref().and_then(|s| s.container.as_ref()).map_or(0, |c| c.exit_code)
}

/// When the task's status was last set.
pub(crate) fn status_time(task: &v1::Task) -> Option<SystemTime> {
    shoal_api::from_timestamp(task.status.as_ref().and_then(|s| s.timestamp.as_ref()))
}

/// The task's store version (0 before it is stored).
pub(crate) fn version(task: &v1::Task) -> u64 {
    task.meta.as_ref().map_or(0, |m| m.version)
}

/// `at + delay`, saturating at the latest time a protobuf timestamp holds: a delay read from a
/// stored spec must not panic the leader, and the result must still convert to a timestamp.
pub(crate) fn later(at: SystemTime, delay: Duration) -> SystemTime {
    let latest = SystemTime::UNIX_EPOCH.checked_add(LATEST_TIMESTAMP).unwrap_or(at).max(at);
    at.checked_add(delay).unwrap_or(latest).min(latest)
}

/// Where one unit (a slot, or a node of a global service or job) stands after its tasks were
/// judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Its current task runs (or is on its way to).
    Occupied,
    /// It needs a new task, not before this time.
    Refill(SystemTime),
    /// Its last task was told to stop and has not stopped yet: the next one waits for it, so a
    /// unit never runs two tasks (two versions, in a stop-first update) at once.
    Stopping,
    /// Its last task ended by itself and the restart policy allows no other.
    GiveUp,
}

/// The order in which a unit's tasks were made: by creation time, then store version.
pub(crate) fn creation(task: &v1::Task) -> (Option<SystemTime>, u64) {
    (shoal_api::from_timestamp(task.meta.as_ref().and_then(|m| m.created_at.as_ref())), version(task))
}

/// Whether a task that was told to stop is out of the way: it ended, never reached a node, or
/// its node can no longer run it (it will never report).
fn out_of_the_way(task: &v1::Task, lost: &impl Fn(&v1::Task) -> bool) -> bool {
    task.observed_state().is_terminal() || task.node_id.is_empty() || lost(task)
}

/// A service's restart policy as every orchestrator applies it, at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Restarts<'a> {
    policy: Option<&'a v1::RestartPolicy>,
    delay: Duration,
    window: Duration,
    /// The time of the pass.
    pub(crate) now: SystemTime,
}

impl<'a> Restarts<'a> {
    /// The restart policy of `spec` (Swarm's defaults where it has none) at `now`.
    pub(crate) fn new(spec: Option<&'a v1::ServiceSpec>, now: SystemTime) -> Self {
        let policy = spec.and_then(|s| s.task.as_ref()).and_then(|t| t.restart.as_ref());
        let delay = policy.and_then(|p| shoal_api::from_duration(p.delay.as_ref())).unwrap_or(DEFAULT_RESTART_DELAY);
        let window = policy.and_then(|p| shoal_api::from_duration(p.window.as_ref())).unwrap_or_default();
        Self { policy, delay, window, now }
    }

    fn max_attempts(&self) -> u64 {
        self.policy.map_or(0, |p| p.max_attempts)
    }

    /// Whether `task` counts toward `max_attempts` now: it ended by itself inside the window.
    pub(crate) fn is_attempt(&self, task: &v1::Task) -> bool {
        ended_by_itself(task)
            && (self.window.is_zero()
                || status_time(task).is_some_and(|at| self.now.duration_since(at).unwrap_or_default() <= self.window))
    }

    /// How many of a unit's newest attempts ([`Self::is_attempt`]) its history must keep for the
    /// policy to be judged: `max_attempts` + 1 (the run that used up the last attempt), or none
    /// when attempts are unlimited. History reaping keeps them, or a unit that gave up would
    /// start again once its count fell.
    pub(crate) fn attempts_to_keep(&self) -> usize {
        match self.max_attempts() {
            0 => 0,
            n => usize::try_from(n).map_or(usize::MAX, |n| n.saturating_add(1)),
        }
    }

    /// Whether a unit whose `last` task ended by itself may get a new task, given its `history`.
    fn allowed(&self, history: &[&v1::Task], last: &v1::Task) -> bool {
        let condition = self.policy.and_then(|p| Condition::try_from(p.condition).ok()).unwrap_or(Condition::Any);
        let wanted = match condition {
            Condition::Any => true,
            Condition::OnFailure => !succeeded(last),
            Condition::None => false,
        };
        let max_attempts = self.max_attempts();
        if !wanted || max_attempts == 0 {
            return wanted;
        }
        let attempts = history.iter().filter(|t| self.is_attempt(t)).count() as u64;
        // The first run is not a restart: N attempts allow N restarts after it.
        attempts <= max_attempts
    }

    /// What follows a unit's `last` task, which is no longer running (or no longer wanted).
    fn after(&self, last: &v1::Task, history: &[&v1::Task], lost: &impl Fn(&v1::Task) -> bool) -> Verdict {
        if !ended_by_itself(last) {
            // Stopped without ending by itself (its node was lost, or it was told to stop):
            // not the task's failure, so it is replaced at once — once it is out of the way.
            return if out_of_the_way(last, lost) { Verdict::Refill(self.now) } else { Verdict::Stopping };
        }
        if self.allowed(history, last) {
            Verdict::Refill(later(status_time(last).unwrap_or(self.now), self.delay))
        } else {
            Verdict::GiveUp
        }
    }

    /// Judges one unit's tasks (`history`, never empty); `lost` says whether a task's node can
    /// no longer run it. Tasks to stop go to `shutdown`.
    ///
    /// The newest current task that still runs (or is on its way to) occupies the unit; older
    /// ones are stopped — except one that runs while the newest starts (a start-first update
    /// starts the replacement before it stops the old task), which stops once the newest runs.
    pub(crate) fn judge(
        &self,
        history: &[&v1::Task],
        lost: impl Fn(&v1::Task) -> bool,
        shutdown: &mut Vec<String>,
    ) -> Verdict {
        let (mut live, gone): (Vec<&v1::Task>, Vec<&v1::Task>) =
            history.iter().copied().filter(|t| current(t)).partition(|t| !t.observed_state().is_terminal() && !lost(t));
        shutdown.extend(gone.iter().map(|t| t.id.clone()));
        live.sort_by_key(|t| std::cmp::Reverse(creation(t)));
        if let Some((newest, older)) = live.split_first() {
            let starting = (newest.observed_state() as i32) < TaskState::Running as i32;
            for (i, task) in older.iter().enumerate() {
                let hands_over = starting && i == 0 && task.observed_state() == TaskState::Running;
                if !hands_over {
                    shutdown.push(task.id.clone());
                }
            }
            return Verdict::Occupied;
        }
        if let Some(newest) = gone.iter().copied().max_by_key(|t| creation(t)) {
            if newest.observed_state().is_terminal() {
                return self.after(newest, history, &lost);
            }
            // Its node can no longer run it: a lost node is not a task failure.
            return Verdict::Refill(self.now);
        }
        // Nothing is wanted here: the decision depends on the history alone, so later passes
        // plan the same refill (idempotent). The last task is the one made last — not the one
        // whose status changed last: after a start-first hand-over the older task reports its
        // end after the newer one started, and the newer one, told to stop, is what the unit
        // waits for.
        let last = history.iter().copied().max_by_key(|t| (creation(t), status_time(t)));
        last.map_or(Verdict::Refill(self.now), |last| self.after(last, history, &lost))
    }
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
    let restarts = Restarts::new(spec, now);
    let unfit = unfit_nodes(spec, nodes, now);
    let nodes: HashMap<&str, &v1::Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let lost = |t: &v1::Task| node_lost(t, &nodes) || unfit.contains(t.node_id.as_str());

    let mut slots: BTreeMap<u64, Vec<&v1::Task>> = BTreeMap::new();
    for task in tasks.iter().filter(|t| t.service_id == service.id && t.slot > 0) {
        slots.entry(task.slot).or_default().push(task);
    }
    let replicas = mode.replicas;
    let mut plan = ReplicatedPlan::default();
    let mut waiting = BTreeSet::new();
    for (&slot, history) in &slots {
        let mut shutdown = Vec::new();
        let verdict = restarts.judge(history, lost, &mut shutdown);
        if matches!(verdict, Verdict::Refill(_) | Verdict::Stopping) {
            waiting.insert(slot);
        }
        match verdict {
            Verdict::Occupied if slot > replicas => {
                // Scaling down: the occupied slots above the replica count stop.
                for task in history.iter().filter(|t| current(t)) {
                    tracing::debug!(service.id = %service.id, slot, task.id = %task.id, "scaling down");
                    shutdown.push(task.id.clone());
                }
            }
            Verdict::Refill(at) if slot <= replicas => plan.create.push((slot, at)),
            Verdict::Occupied | Verdict::Refill(_) | Verdict::Stopping | Verdict::GiveUp => {}
        }
        plan.shutdown.extend(shutdown);
    }
    // Slots never used yet (scale-up, a new service) start at once; every used slot is
    // occupied, planned or given up already.
    plan.create.extend((1..=replicas).filter(|slot| !slots.contains_key(slot)).map(|slot| (slot, now)));
    slots.retain(|slot, _| *slot <= replicas);
    let update = plan_update(service, &slots, usize::try_from(replicas).unwrap_or(usize::MAX), &waiting, lost, now);
    plan.create.extend(update.create.into_iter().map(|slot| (slot, now)));
    plan.shutdown.extend(update.shutdown);
    (plan.update_status, plan.rollback, plan.due) = (update.status, update.rollback, update.due);
    plan.create.sort_unstable();
    plan.shutdown.sort_unstable();
    plan.shutdown.dedup();
    plan
}

/// The nodes that do not meet the service's placement constraints (now that a node's labels,
/// role or the constraints changed): their tasks are moved, as Swarm's constraint enforcer does.
fn unfit_nodes(spec: Option<&v1::ServiceSpec>, nodes: &[v1::Node], now: SystemTime) -> HashSet<String> {
    let Ok(task_spec) = task_spec(spec.and_then(|s| s.task.as_ref())) else { return HashSet::new() };
    if task_spec.constraints.is_empty() {
        return HashSet::new();
    }
    snapshot(nodes, &[], now)
        .into_iter()
        .filter(|n| !task_spec.constraints.iter().all(|c| c.matches(n)))
        .map(|n| n.id)
        .collect()
}

/// Plans the global `service`'s nodes from its `tasks` and the cluster's `nodes`: one task per
/// eligible node; nodes that are gone, down, draining or no longer match the constraints lose
/// theirs, paused nodes keep what they run.
pub fn reconcile_global(service: &v1::Service, tasks: &[v1::Task], nodes: &[v1::Node], now: SystemTime) -> GlobalPlan {
    let spec = service.spec.as_ref();
    if !matches!(spec.and_then(|s| s.mode.as_ref()), Some(v1::service_spec::Mode::Global(_))) {
        return GlobalPlan::default();
    }
    let task_spec = match task_spec(spec.and_then(|s| s.task.as_ref())) {
        Ok(task_spec) => task_spec,
        Err(reason) => {
            // Refused at create time; a spec that still does not parse places nothing new and
            // takes nothing away.
            tracing::warn!(service.id = %service.id, %reason, "global service cannot be placed");
            return GlobalPlan::default();
        }
    };
    let snapshot = snapshot(nodes, &[], now);
    let eligible: HashSet<&str> = shoal_scheduler::eligible_nodes(&snapshot, &task_spec).into_iter().collect();
    let keeps: HashSet<&str> = snapshot
        .iter()
        .filter(|n| {
            n.availability == shoal_scheduler::Availability::Pause && n.status == shoal_scheduler::NodeStatus::Ready
        })
        .map(|n| n.id.as_str())
        .collect();
    // A task on no node (global tasks are created on theirs) is lost too.
    let lost = |t: &v1::Task| !(eligible.contains(t.node_id.as_str()) || keeps.contains(t.node_id.as_str()));
    let restarts = Restarts::new(spec, now);

    let mut on_node: BTreeMap<&str, Vec<&v1::Task>> = BTreeMap::new();
    for task in tasks.iter().filter(|t| t.service_id == service.id) {
        on_node.entry(task.node_id.as_str()).or_default().push(task);
    }
    let mut plan = GlobalPlan::default();
    let mut waiting = BTreeSet::new();
    for (&node, history) in &on_node {
        let verdict = restarts.judge(history, lost, &mut plan.shutdown);
        if matches!(verdict, Verdict::Refill(_) | Verdict::Stopping) {
            waiting.insert(node);
        }
        if let Verdict::Refill(at) = verdict
            && eligible.contains(node)
        {
            plan.create.push((node.to_owned(), at));
        }
    }
    plan.create.extend(eligible.iter().filter(|n| !on_node.contains_key(*n)).map(|n| ((*n).to_owned(), now)));
    on_node.retain(|node, _| eligible.contains(node));
    let update = plan_update(service, &on_node, eligible.len(), &waiting, lost, now);
    plan.create.extend(update.create.into_iter().map(|node| (node.to_owned(), now)));
    plan.shutdown.extend(update.shutdown);
    (plan.update_status, plan.rollback, plan.due) = (update.status, update.rollback, update.due);
    plan.create.sort_unstable();
    plan.shutdown.sort_unstable();
    plan.shutdown.dedup();
    plan
}

#[cfg(test)]
mod tests;

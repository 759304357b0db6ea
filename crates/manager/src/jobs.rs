//! The jobs orchestrators' reconcile step, as a pure function: a replicated or global job, its
//! tasks and the nodes in; which slots (replicated job) or nodes (global job) need a new task,
//! and which tasks to shut down, out. A job runs each task once to completion instead of keeping
//! it running; the leader's control loop applies the plan through the object store, as it does
//! [`crate::reconcile_replicated`]'s.
//!
//! Rules (Swarm's `manager/orchestrator/jobs`, with the differences noted):
//! - Only tasks whose `job_iteration` equals the service's `job_status.job_iteration` (0 when the
//!   service has no job status yet) count. A task of an earlier iteration that is still wanted
//!   (desired RUNNING or earlier) and has not completed is shut down; completed ones stay as
//!   history. (Swarm marks every earlier-iteration task for removal; here the leader's history
//!   reaping removes them.)
//! - A job task is created wanting RUNNING, like any task: Shoal's agent stops a task whose
//!   desired state is past RUNNING, so Swarm's desired state COMPLETE is not used. A task is
//!   *current* while its desired state is RUNNING or earlier.
//! - A task *completed* when it is COMPLETE with exit code 0. Completed tasks are never shut down
//!   or rerun, whatever their node does later; a slot or node with a completed task is done, and
//!   any other current task there is shut down.
//! - A current task that FAILED or REJECTED (or is COMPLETE with a non-zero exit) is shut down
//!   and, when the restart policy allows it, replaced in the same slot (or on the same node) once
//!   `delay` (default 5 s) has passed since it ended. For a job, condition `any` behaves as
//!   `on-failure`, since rerunning a completed task defeats the job; `none` never retries. At most
//!   `max_attempts` retries (0: unlimited) follow failures inside `window` (zero: forever), as
//!   for replicated services. A slot or node whose failure is not retried is *given up*: it
//!   counts toward neither completions nor running tasks, it is not refilled, and the job ends
//!   with fewer completions than asked for. (Swarm frees such a slot and its reconciler refills
//!   it at once, which makes `none` and `max_attempts` ineffective for jobs; this is deliberate.)
//! - A current task whose node is Down, draining or gone is shut down and replaced at once: a
//!   lost node is not a task failure, so no delay applies and it is not counted as an attempt. A
//!   task told to stop for another reason (its last task shut down without ending by itself) is
//!   likewise replaced at once.
//! - Replicated job: `total_completions` tasks must complete; at most `max_concurrent` (0: as many
//!   as `total_completions`) are in flight at once, counting current tasks that have not ended and
//!   slots waiting for a retry. New slots fill up to min(`max_concurrent` − in flight,
//!   `total_completions` − completed − given up − in flight); each new slot is the lowest slot
//!   number (from 1) that no task of this iteration has used, so a completed slot is never reused,
//!   while a retry reuses its failed task's slot. A current task without a slot cannot be
//!   accounted for and is shut down.
//! - Global job: one task per eligible node (`shoal_scheduler::eligible_nodes` over the placement
//!   snapshot: Ready, Active, meeting the constraints and platforms). A node that completed its
//!   task gets no other; a node that joins later gets one; a retry waits for its node to be
//!   eligible again. A current task is shut down when its node is Down, draining, gone or no
//!   longer meets the constraints; a paused or disconnected node keeps what it runs. A current
//!   task without a node (global tasks are created on theirs) is shut down.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::SystemTime;

use shoal_api::v1;

use crate::orchestrator::{Restarts, Verdict, current, node_lost, succeeded};
use crate::placement::{snapshot, task_spec};

/// What the jobs orchestrator should do for one job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobPlan {
    /// The job iteration every new task must carry in `Task.job_iteration`.
    pub iteration: u64,
    /// Replicated job: slots that need a new task, each with the time before which it must not
    /// be created (the failed task's end plus the restart delay; `now` when there is nothing to
    /// wait for). Sorted by slot.
    pub create_slots: Vec<(u64, SystemTime)>,
    /// Global job: nodes that need a new task (created on that node), each with the time before
    /// which it must not be created, as for slots. Sorted by node ID.
    pub create_nodes: Vec<(String, SystemTime)>,
    /// Tasks whose desired state becomes SHUTDOWN. Sorted, without duplicates.
    pub shutdown: Vec<String>,
}

/// How far a job's current iteration has got, for `service ls`/`service ps` style displays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobProgress {
    /// Current tasks that have not ended (pending, assigned, running …), on nodes that can run
    /// them.
    pub running: u64,
    /// Slots or nodes whose task completed with exit 0.
    pub completed: u64,
    /// Slots or nodes given up on: their task failed and the restart policy allows no retry.
    pub failed: u64,
    /// Completions wanted: `total_completions` for a replicated job; for a global job, the
    /// eligible nodes plus the nodes that completed, are running or gave up (and have since
    /// stopped being eligible).
    pub total: u64,
}

impl JobProgress {
    /// Whether the iteration is over: nothing runs, and every wanted completion either happened
    /// or was given up on (so nothing waits for a retry or a first task either).
    pub fn finished(&self) -> bool {
        self.running == 0 && self.completed + self.failed >= self.total
    }
}

/// Where one slot or node stands after its tasks were judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Completed,
    Running,
    /// Needs a new task, not before this time.
    Retry(SystemTime),
    GaveUp,
}

/// Judges one slot's or node's tasks of the current iteration (`history`, never empty): a
/// completion ends the unit, anything else follows the restart policy ([`Restarts::judge`];
/// only failures reach it, so condition `any` acts as `on-failure`). `lost` says whether a
/// task's node can no longer run it. Tasks to stop go to `shutdown`.
fn judge(
    restarts: &Restarts<'_>,
    history: &[&v1::Task],
    lost: impl Fn(&v1::Task) -> bool,
    shutdown: &mut Vec<String>,
) -> Unit {
    if history.iter().any(|t| succeeded(t)) {
        for task in history.iter().filter(|t| current(t) && !succeeded(t)) {
            shutdown.push(task.id.clone());
        }
        return Unit::Completed;
    }
    match restarts.judge(history, lost, shutdown) {
        Verdict::Occupied | Verdict::Stopping => Unit::Running,
        Verdict::Refill(at) => Unit::Retry(at),
        Verdict::GiveUp => Unit::GaveUp,
    }
}

/// Plans the replicated or global job `service` from its `tasks` and the cluster's `nodes`.
/// Any other service, and tasks of other services, give an empty plan.
pub fn reconcile_job(service: &v1::Service, tasks: &[v1::Task], nodes: &[v1::Node], now: SystemTime) -> JobPlan {
    reconcile(service, tasks, nodes, now).map(|(plan, _)| plan).unwrap_or_default()
}

/// The job `service`'s progress in its current iteration, judged as [`reconcile_job`] judges it
/// (`now` matters for the restart window); `None` when the service is not a job.
pub fn job_progress(
    service: &v1::Service,
    tasks: &[v1::Task],
    nodes: &[v1::Node],
    now: SystemTime,
) -> Option<JobProgress> {
    reconcile(service, tasks, nodes, now).map(|(_, progress)| progress)
}

fn reconcile(
    service: &v1::Service,
    tasks: &[v1::Task],
    nodes: &[v1::Node],
    now: SystemTime,
) -> Option<(JobPlan, JobProgress)> {
    let spec = service.spec.as_ref()?;
    let replicated_job = match spec.mode.as_ref()? {
        v1::service_spec::Mode::ReplicatedJob(job) => Some(job),
        v1::service_spec::Mode::GlobalJob(_) => None,
        _ => return None,
    };
    let restarts = Restarts::new(Some(spec), now);
    let iteration = service.job_status.as_ref().map_or(0, |s| s.job_iteration);
    let mut plan = JobPlan { iteration, ..JobPlan::default() };
    let own = tasks.iter().filter(|t| t.service_id == service.id);
    // Earlier iterations are over: stop what still runs of them.
    for task in own.clone().filter(|t| t.job_iteration != iteration) {
        if current(task) && !succeeded(task) {
            tracing::debug!(service.id = %service.id, task.id = %task.id, task.job_iteration = task.job_iteration, "stopping a task of an earlier job iteration");
            plan.shutdown.push(task.id.clone());
        }
    }
    let this: Vec<&v1::Task> = own.filter(|t| t.job_iteration == iteration).collect();
    let progress = match replicated_job {
        Some(job) => replicated(service, job, &this, nodes, &restarts, &mut plan),
        None => global(service, &this, nodes, &restarts, &mut plan),
    };
    plan.shutdown.sort_unstable();
    plan.shutdown.dedup();
    Some((plan, progress))
}

fn replicated(
    service: &v1::Service,
    job: &v1::ReplicatedJob,
    tasks: &[&v1::Task],
    nodes: &[v1::Node],
    restarts: &Restarts<'_>,
    plan: &mut JobPlan,
) -> JobProgress {
    let nodes: HashMap<&str, &v1::Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    // A pending task has no node yet and cannot have lost it.
    let lost = |t: &v1::Task| node_lost(t, &nodes);
    let mut slots: BTreeMap<u64, Vec<&v1::Task>> = BTreeMap::new();
    for &task in tasks {
        if task.slot > 0 {
            slots.entry(task.slot).or_default().push(task);
        } else if current(task) && !succeeded(task) {
            tracing::debug!(service.id = %service.id, task.id = %task.id, "stopping a replicated job task without a slot");
            plan.shutdown.push(task.id.clone());
        }
    }
    let mut progress = JobProgress { total: job.total_completions, ..JobProgress::default() };
    let mut retries = Vec::new();
    for (&slot, history) in &slots {
        match judge(restarts, history, lost, &mut plan.shutdown) {
            Unit::Completed => progress.completed += 1,
            Unit::Running => progress.running += 1,
            Unit::Retry(at) => retries.push((slot, at)),
            Unit::GaveUp => {
                tracing::debug!(service.id = %service.id, slot, "restart policy allows no retry: slot given up");
                progress.failed += 1;
            }
        }
    }
    let max_concurrent = if job.max_concurrent == 0 { job.total_completions } else { job.max_concurrent };
    // Completions still to start, and room under the concurrency limit.
    let mut needed = job.total_completions.saturating_sub(progress.completed + progress.failed + progress.running);
    let mut room = max_concurrent.saturating_sub(progress.running);
    for (slot, at) in retries {
        if needed == 0 || room == 0 {
            break;
        }
        plan.create_slots.push((slot, at));
        needed -= 1;
        room -= 1;
    }
    let mut fresh = (1..).filter(|slot| !slots.contains_key(slot));
    for _ in 0..needed.min(room) {
        let Some(slot) = fresh.next() else { break };
        plan.create_slots.push((slot, restarts.now));
    }
    plan.create_slots.sort_unstable();
    progress
}

fn global(
    service: &v1::Service,
    tasks: &[&v1::Task],
    nodes: &[v1::Node],
    restarts: &Restarts<'_>,
    plan: &mut JobPlan,
) -> JobProgress {
    let snapshot = snapshot(nodes, &[], restarts.now);
    let (eligible, matching): (HashSet<String>, HashSet<String>) =
        match task_spec(service.spec.as_ref().and_then(|s| s.task.as_ref())) {
            Ok(spec) => {
                let eligible =
                    shoal_scheduler::eligible_nodes(&snapshot, &spec).into_iter().map(str::to_owned).collect();
                // The nodes that would be eligible if all were Ready and Active: those meeting
                // the constraints and platforms. A task anywhere else no longer belongs.
                let mut all = snapshot;
                for node in &mut all {
                    node.status = shoal_scheduler::NodeStatus::Ready;
                    node.availability = shoal_scheduler::Availability::Active;
                }
                let matching = shoal_scheduler::eligible_nodes(&all, &spec).into_iter().map(str::to_owned).collect();
                (eligible, matching)
            }
            Err(reason) => {
                // Refused at create time; a spec that still does not parse places nothing new
                // and takes nothing away.
                tracing::warn!(service.id = %service.id, %reason, "global job cannot be placed");
                (HashSet::new(), nodes.iter().map(|n| n.id.clone()).collect())
            }
        };
    let by_id: HashMap<&str, &v1::Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let lost = |t: &v1::Task| node_lost(t, &by_id) || !matching.contains(t.node_id.as_str());
    let mut on_node: BTreeMap<&str, Vec<&v1::Task>> = BTreeMap::new();
    for &task in tasks {
        if !task.node_id.is_empty() {
            on_node.entry(task.node_id.as_str()).or_default().push(task);
        } else if current(task) && !succeeded(task) {
            tracing::debug!(service.id = %service.id, task.id = %task.id, "stopping a global job task without a node");
            plan.shutdown.push(task.id.clone());
        }
    }
    let mut progress = JobProgress::default();
    for (&node, history) in &on_node {
        let counted = match judge(restarts, history, lost, &mut plan.shutdown) {
            Unit::Completed => {
                progress.completed += 1;
                true
            }
            Unit::Running => {
                progress.running += 1;
                true
            }
            Unit::GaveUp => {
                tracing::debug!(service.id = %service.id, node.id = %node, "restart policy allows no retry: node given up");
                progress.failed += 1;
                true
            }
            Unit::Retry(at) => {
                if eligible.contains(node) {
                    plan.create_nodes.push((node.to_owned(), at));
                }
                false
            }
        };
        if counted && !eligible.contains(node) {
            progress.total += 1;
        }
    }
    for node in eligible.iter().filter(|n| !on_node.contains_key(n.as_str())) {
        plan.create_nodes.push((node.clone(), restarts.now));
    }
    progress.total += eligible.len() as u64;
    plan.create_nodes.sort_unstable();
    progress
}

#[cfg(test)]
mod tests;

//! The leader's control loop: while this manager leads, every tick it orchestrates (services
//! into tasks: replicated slots and global nodes), schedules pending tasks, reaps old task
//! history, and every heartbeat period marks silent nodes Down. Each pass reads the current state
//! and writes only differences, so a pass interrupted by a leadership change is simply redone by
//! the next leader.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use shoal_api::v1::{self, TaskState, update_status::UpdateState};

use crate::allocator::{Allocator, Cursors};
use crate::dispatcher::Dispatcher;
use crate::ids::new_id;
use crate::jobs::reconcile_job;
use crate::objects::{Object, ObjectError, ObjectStore, Write};
use crate::orchestrator::{Restarts, current, reconcile_global, reconcile_replicated, status_time};
use crate::placement::place;

/// Swarm's default number of tasks kept per slot.
pub const DEFAULT_TASK_HISTORY: usize = 5;

/// What one pass changed (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Tasks created.
    pub created: usize,
    /// Tasks told to shut down (or be removed).
    pub stopped: usize,
    /// Tasks assigned to a node.
    pub assigned: usize,
    /// Tasks left pending with a reason.
    pub unplaced: usize,
    /// Old tasks deleted.
    pub reaped: usize,
    /// Networks, services and nodes given (or told why not) their allocations.
    pub allocated: usize,
    /// Services whose rolling update moved on (a new update status, or a rollback).
    pub updated: usize,
    /// The earliest time a task is due that this pass had to hold back (a restart delay): the
    /// loop runs a pass then even if nothing else happens.
    pub next_due: Option<SystemTime>,
    /// A service's rolling update (or rollback) is in progress: the loop also runs a pass when a
    /// task reaches RUNNING, which frees the update's next slot.
    pub updating: bool,
}

impl PassReport {
    /// Whether the pass wrote anything.
    pub fn changed(&self) -> bool {
        self.created + self.stopped + self.assigned + self.reaped + self.allocated + self.updated > 0
    }

    fn due(&mut self, at: SystemTime) {
        self.next_due = Some(self.next_due.map_or(at, |due| due.min(at)));
    }
}

/// Passes run when something they act on changed; with nothing to react to, still this often.
const IDLE_PASS: Duration = Duration::from_secs(10);

/// The leader's loops of one manager.
#[derive(Debug, Clone)]
pub struct Leader {
    objects: ObjectStore,
    dispatcher: Dispatcher,
    history: usize,
    seed: u64,
    /// The store fenced by this manager's term as leader ([`ObjectStore::fenced`]): what its
    /// passes write through. `None` until it takes office (tests call `pass` without).
    fenced: Arc<Mutex<Option<ObjectStore>>>,
    /// The network allocator's cursors (see [`crate::allocator`]).
    cursors: Arc<Mutex<Cursors>>,
    /// How many nodes the last pass could not give an ingress address (for its warning).
    without_ingress: Arc<std::sync::atomic::AtomicUsize>,
    /// Where passes and placements are timed, if anywhere.
    metrics: Option<crate::ManagerMetrics>,
}

/// The key a new leader writes when it takes office; its passes' writes require it unchanged.
pub(crate) const LEADER_FENCE: &str = "/leader/fence";

impl Leader {
    /// Loops over `objects`, with `dispatcher` for node liveness, keeping `history` tasks per slot.
    pub fn new(objects: ObjectStore, dispatcher: Dispatcher, history: usize) -> Self {
        Self {
            objects,
            dispatcher,
            history,
            seed: 0x5eed,
            fenced: Arc::new(Mutex::new(None)),
            cursors: Arc::new(Mutex::new(Cursors::new())),
            without_ingress: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            metrics: None,
        }
    }

    /// The same loops, timing their passes and placements into `metrics`.
    pub(crate) fn with_metrics(mut self, metrics: Option<crate::ManagerMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Writes the fence key and keeps the store fenced by it for this term's passes.
    async fn take_office(&self) -> Result<(), ObjectError> {
        let outcome = self.objects.store().put(LEADER_FENCE, Vec::new()).await?;
        let fenced = self.objects.fenced(LEADER_FENCE, outcome.revision);
        *self.fenced.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(fenced);
        Ok(())
    }

    /// What the passes write through: the fenced store once in office.
    fn writer(&self) -> ObjectStore {
        let fenced = self.fenced.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fenced.clone().unwrap_or_else(|| self.objects.clone())
    }

    /// Runs the loops until `shutdown` resolves: while this manager is the Raft leader, checks
    /// heartbeats every heartbeat period (the dispatcher's: the cluster's setting), and at most
    /// every `tick` runs a pass when something it acts on changed — a service, node or the
    /// cluster's settings (watched in the store), a task that ended (the dispatcher
    /// says so), its own previous pass's writes, or a restart delay that came due — and at least
    /// every ten seconds. Reports of tasks starting and running, the bulk of the traffic, wake
    /// it up not.
    pub async fn run(&self, tick: Duration, shutdown: impl std::future::Future<Output = ()>) {
        use futures::FutureExt as _;
        tokio::pin!(shutdown);
        let store = self.objects.store();
        let mut watches: Vec<(&str, Option<shoal_raft_store::WatchStream>)> =
            vec![(v1::Service::PREFIX, None), (v1::Node::PREFIX, None), (v1::Cluster::PREFIX, None)];
        let mut leading = false;
        let mut dirty = true;
        let mut updating = false;
        let mut due: Option<Instant> = None;
        let mut last_pass = Instant::now();
        let mut last_check = Instant::now();
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(tick) => {}
            }
            for (prefix, watch) in &mut watches {
                if watch.is_none() {
                    *watch = store.watch(*prefix, 0).ok();
                    dirty = true;
                }
                while let Some(event) = watch.as_mut().and_then(|w| w.next().now_or_never()) {
                    dirty = true;
                    if !matches!(event, Some(Ok(_))) {
                        *watch = None;
                        break;
                    }
                }
            }
            dirty |= self.dispatcher.take_task_ended();
            dirty |= self.dispatcher.take_task_running() && updating;
            if !store.is_leader() {
                leading = false;
                continue;
            }
            if !leading {
                if let Err(err) = self.take_office().await {
                    tracing::warn!(error = %err, "cannot write the leader fence; trying again next tick");
                    continue;
                }
                leading = true;
                dirty = true;
                // Nodes that were Ready under the previous leader get three periods to reach us.
                match self.objects.list::<v1::Node>().await {
                    Ok(nodes) => {
                        self.dispatcher.expect_nodes(nodes.iter().filter(|n| is_ready(n)).map(|n| n.id.clone()))
                    }
                    Err(err) => {
                        // Try again next tick: without it, nodes that never reconnect stay Ready.
                        tracing::warn!(error = %err, "cannot list nodes after becoming leader");
                        leading = false;
                        continue;
                    }
                }
                tracing::info!("became leader: control loops running");
            }
            // The cluster's heartbeat period once a pass has read it (`shoal cluster update
            // --dispatcher-heartbeat`), this manager's own until then.
            let period = self.dispatcher.period();
            if last_check.elapsed() >= period {
                last_check = Instant::now();
                match self.dispatcher.check_heartbeats().await {
                    Ok(down) => dirty |= !down.is_empty(),
                    Err(err) => tracing::warn!(error = %err, "heartbeat check failed"),
                }
                if let Err(err) = self.refresh_manager_status().await {
                    tracing::warn!(error = %err, "manager status refresh failed");
                }
                if let Err(err) = self.reconcile_roles().await {
                    tracing::warn!(error = %err, "role reconciliation failed");
                }
            }
            let timer = due.is_some_and(|due| Instant::now() >= due) || last_pass.elapsed() >= IDLE_PASS;
            if !(dirty || timer) {
                continue;
            }
            last_pass = Instant::now();
            let started = std::time::Instant::now();
            let passed = self.pass(SystemTime::now()).await;
            if let Some(metrics) = &self.metrics {
                metrics.observe_pass(started.elapsed());
            }
            match passed {
                Ok(report) => {
                    if report.changed() {
                        tracing::debug!(?report, "control loop pass");
                    }
                    // What it wrote may call for more (a node's tasks moved, say): look again.
                    dirty = report.changed();
                    updating = report.updating;
                    // A time too far ahead for the clock is never due: the idle pass covers it.
                    due = report.next_due.and_then(|at| {
                        Instant::now().checked_add(at.duration_since(SystemTime::now()).unwrap_or_default())
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "control loop pass failed; retrying next tick");
                    dirty = true;
                }
            }
        }
    }

    /// Makes each node's role follow its desired role (`shoal node promote|demote`). A promoted
    /// node's role becomes Manager at once: its next heartbeat tells it, it renews its
    /// certificate (the CA issues the stored role) and, with a manager certificate, joins the
    /// Raft group itself (`Control.JoinRaft`). A demoted node first leaves the Raft group, then
    /// its role becomes Worker and its manager status goes; its heartbeat tells it to renew and
    /// stop its manager. A demoted leader first hands leadership to another manager
    /// ([`shoal_raft_store::Store::transfer_leadership`]), which then removes it.
    pub async fn reconcile_roles(&self) -> Result<(), ObjectError> {
        let store = self.objects.store();
        for mut node in self.objects.list::<v1::Node>().await? {
            let desired = node.spec.as_ref().map_or(v1::NodeRole::Worker as i32, |s| s.desired_role);
            if desired == node.role {
                continue;
            }
            if desired == v1::NodeRole::Manager as i32 {
                tracing::info!(node.id = %node.id, "node promoted: it joins the Raft group with its next certificate");
                node.role = desired;
            } else {
                if let Some(raft_id) = node.manager_status.as_ref().map(|m| m.raft_id)
                    && store.status().await.members.iter().any(|m| m.id == raft_id)
                {
                    if raft_id == store.id() {
                        // This leader is demoted: it hands leadership over and the next leader
                        // removes it, so the group is not without a leader meanwhile.
                        match store.transfer_leadership().await {
                            Ok(next) => {
                                tracing::info!(node.id = %node.id, next, "demoted leader handed over leadership");
                                return Ok(());
                            }
                            // Still the leader: the other nodes' roles go on; this one is tried again.
                            Err(err) => {
                                tracing::warn!(node.id = %node.id, error = %err, "demoted leader cannot hand over leadership yet");
                                continue;
                            }
                        }
                    }
                    tracing::info!(node.id = %node.id, raft_id, "node demoted: removing it from the Raft group");
                    if let Err(err) = store.remove(raft_id).await {
                        tracing::warn!(node.id = %node.id, error = %err, "cannot remove a demoted manager from Raft yet");
                        continue;
                    }
                }
                node.role = desired;
                node.manager_status = None;
            }
            match self.objects.update(node).await {
                Ok(_) | Err(ObjectError::Conflict { .. } | ObjectError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Records in each manager's node which manager leads and which the leader can reach (the
    /// MANAGER STATUS column of `shoal node ls`), from the Raft group's own view.
    pub async fn refresh_manager_status(&self) -> Result<(), ObjectError> {
        use shoal_raft_store::Reachability;
        let status = self.objects.store().status().await;
        for mut node in self.objects.list::<v1::Node>().await? {
            let Some(current) = node.manager_status.clone() else { continue };
            let member = status.members.iter().find(|m| m.id == current.raft_id);
            let reachability = match member.map(|m| &m.reachability) {
                Some(Reachability::Reachable) => v1::manager_status::Reachability::Reachable,
                Some(Reachability::Unreachable) => v1::manager_status::Reachability::Unreachable,
                _ => v1::manager_status::Reachability::Unknown,
            } as i32;
            let leader = status.leader == Some(current.raft_id);
            if current.leader == leader && current.reachability == reachability {
                continue;
            }
            node.manager_status = Some(v1::ManagerStatus { leader, reachability, ..current });
            match self.objects.update(node).await {
                Ok(_) | Err(ObjectError::Conflict { .. } | ObjectError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// One pass: orchestrate, schedule, reap. It reads services, nodes and tasks once, decides
    /// in memory — new tasks are scheduled before they are first written, so a new task costs
    /// one write — and writes the differences in batches ([`ObjectStore::write_all`]).
    pub async fn pass(&self, now: SystemTime) -> Result<PassReport, ObjectError> {
        let objects = self.writer();
        let services = self.objects.list::<v1::Service>().await?;
        let nodes = self.objects.list::<v1::Node>().await?;
        let tasks = self.objects.list::<v1::Task>().await?;
        let networks = self.objects.list::<v1::Network>().await?;
        let cluster = self.objects.list::<v1::Cluster>().await?.into_iter().next().unwrap_or_default();
        let mut report = PassReport::default();
        let mut cursors = std::mem::take(&mut *self.cursors.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let mut allocator = Allocator::new(
            &cluster.default_addr_pool,
            cluster.subnet_size,
            &networks,
            &services,
            &tasks,
            &nodes,
            &mut cursors,
        );
        let allocated = self.allocate(&objects, &mut allocator, networks, services, &nodes, &mut report).await;
        let (services, blocked) = match allocated {
            Ok(done) => done,
            Err(err) => {
                drop(allocator);
                *self.cursors.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = cursors;
                return Err(err);
            }
        };
        // The key ring of encrypted overlays: made once, rotated when due (the loop wakes for a
        // rotation sooner than its idle pass would come).
        let rotation = crate::settings::network_key_rotation(Some(&cluster));
        match keys::ensure_network_keys(&objects, now, rotation).await {
            Ok((_, due)) if due < now + IDLE_PASS => report.due(due),
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, "network keys not made or rotated this pass; the next pass tries again")
            }
        }
        let history = crate::settings::task_history(Some(&cluster), self.history);
        self.dispatcher.set_period(crate::settings::heartbeat_period(Some(&cluster), self.dispatcher.period()));
        let reaped = self.reap(&services, &tasks, history, now);
        let mut work = Working::new(tasks);
        let mut updates = Vec::new();
        self.orchestrate(&services, &blocked, &nodes, &mut work, &mut updates, now, &mut report);
        let unattached = Self::attach(&mut allocator, &services, &mut work, now);
        drop(allocator);
        *self.cursors.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = cursors;
        self.schedule(&nodes, &unattached, &mut work, now, &mut report);
        let changed: HashSet<&str> = work.changed_ids().collect();
        let deletes: Vec<Write<v1::Task>> = reaped
            .into_iter()
            .filter(|(id, _)| !changed.contains(id.as_str()))
            .map(|(id, version)| Write::Delete { id, version })
            .collect();
        let reaping = deletes.len();
        let mut writes = work.into_writes();
        let creating = writes.len() - writes.iter().filter(|w| matches!(w, Write::Update(_))).count();
        writes.extend(deletes);
        let outcomes = objects.write_all(writes).await?;
        // A refused write (an agent's report came first) is redone from fresh state next pass.
        let refused = outcomes.iter().filter(|o| o.is_err()).count();
        if refused > 0 {
            tracing::debug!(refused, "some writes of this pass lost to concurrent changes; next pass redoes them");
        }
        report.created = creating;
        report.reaped = outcomes.iter().rev().take(reaping).filter(|o| o.is_ok()).count();
        // A rolling update's progress; one that lost to a user's change is judged again next pass.
        let updates = objects.write_all(updates.into_iter().map(Write::Update).collect()).await?;
        report.updated = updates.iter().filter(|o| o.is_ok()).count();
        Ok(report)
    }

    fn new_task(service: &v1::Service, slot: u64, node_id: &str, now: SystemTime) -> v1::Task {
        let name = service.name().unwrap_or(&service.id).to_owned();
        let task_name = if slot > 0 { format!("{name}.{slot}") } else { format!("{name}.{node_id}") };
        v1::Task {
            id: new_id(),
            service_id: service.id.clone(),
            slot,
            node_id: node_id.to_owned(),
            annotations: Some(v1::Annotations { name: task_name, ..Default::default() }),
            spec: service.spec.as_ref().and_then(|s| s.task.clone()),
            spec_version: service.spec_version,
            endpoint: service.endpoint.clone(),
            status: Some(v1::TaskStatus {
                timestamp: Some(shoal_api::to_timestamp(now)),
                state: if node_id.is_empty() { TaskState::Pending } else { TaskState::Assigned } as i32,
                message: if node_id.is_empty() { "pending task scheduling" } else { "assigned to its node" }.to_owned(),
                ..Default::default()
            }),
            desired_state: TaskState::Running as i32,
            service_name: name,
            ..Default::default()
        }
    }

    /// Orchestrates every service into `work`; services whose rolling update moved on (a new
    /// status, or a rollback) go to `updates`, to be written.
    #[allow(clippy::too_many_arguments)]
    fn orchestrate(
        &self,
        services: &[v1::Service],
        blocked: &HashSet<String>,
        nodes: &[v1::Node],
        work: &mut Working,
        updates: &mut Vec<v1::Service>,
        now: SystemTime,
        report: &mut PassReport,
    ) {
        let mut by_service: HashMap<String, Vec<v1::Task>> = HashMap::new();
        for task in &work.tasks {
            by_service.entry(task.service_id.clone()).or_default().push(task.clone());
        }
        let known: HashSet<&str> = services.iter().map(|s| s.id.as_str()).collect();
        // Tasks whose service is gone are removed.
        let orphans: Vec<String> =
            work.tasks.iter().filter(|t| !known.contains(t.service_id.as_str())).map(|t| t.id.clone()).collect();
        for id in orphans {
            if work.set_desired(&id, TaskState::Remove) {
                report.stopped += 1;
            }
        }
        // A service whose endpoint could not be allocated gets no tasks until it can be.
        for service in services.iter().filter(|s| !blocked.contains(&s.id)) {
            report.updating |= service.update_status.as_ref().is_some_and(|s| {
                s.state == UpdateState::Updating as i32 || s.state == UpdateState::RollbackStarted as i32
            });
            let own = by_service.get(service.id.as_str()).map(Vec::as_slice).unwrap_or_default();
            match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
                Some(v1::service_spec::Mode::Replicated(_)) => {
                    let plan = reconcile_replicated(service, own, nodes, now);
                    let create = plan.create.into_iter().map(|(slot, at)| (slot, String::new(), at));
                    Self::apply(service, &plan.shutdown, create, 0, work, now, report);
                    updates.extend(Self::update_progress(service, plan.update_status, plan.rollback));
                    if let Some(at) = plan.due {
                        report.due(at);
                    }
                }
                // One task per eligible node, created on that node.
                Some(v1::service_spec::Mode::Global(_)) => {
                    let plan = reconcile_global(service, own, nodes, now);
                    let create = plan.create.into_iter().map(|(node, at)| (0, node, at));
                    Self::apply(service, &plan.shutdown, create, 0, work, now, report);
                    updates.extend(Self::update_progress(service, plan.update_status, plan.rollback));
                    if let Some(at) = plan.due {
                        report.due(at);
                    }
                }
                Some(v1::service_spec::Mode::ReplicatedJob(_) | v1::service_spec::Mode::GlobalJob(_)) => {
                    Self::orchestrate_job(service, own, nodes, work, now, report)
                }
                None => {}
            }
        }
    }

    /// The service as its rolling update leaves it: with its new update `status`, and rolled back
    /// to its previous spec when `rollback` (the spec they swap, as `service rollback` does).
    fn update_progress(service: &v1::Service, status: Option<v1::UpdateStatus>, rollback: bool) -> Option<v1::Service> {
        let status = status?;
        let mut service = service.clone();
        if rollback {
            let previous = service.previous_spec.take()?;
            service.previous_spec = service.spec.replace(previous);
            service.spec_version += 1;
            tracing::warn!(service.id = %service.id, message = %status.message, "rolling back the update");
        } else {
            tracing::info!(service.id = %service.id, state = status.state, message = %status.message, "update status");
        }
        service.update_status = Some(status);
        Some(service)
    }

    /// Applies an orchestrator's decision to the pass's work: the `shutdown` tasks are told to
    /// stop, and each of `create` (slot, node, not before) becomes a new task of job iteration
    /// `iteration` once its time has come (until then, the pass is due again at that time).
    fn apply<'a>(
        service: &v1::Service,
        shutdown: impl IntoIterator<Item = &'a String>,
        create: impl IntoIterator<Item = (u64, String, SystemTime)>,
        iteration: u64,
        work: &mut Working,
        now: SystemTime,
        report: &mut PassReport,
    ) {
        for id in shutdown {
            if work.set_desired(id, TaskState::Shutdown) {
                report.stopped += 1;
            }
        }
        for (slot, node, not_before) in create {
            if not_before > now {
                report.due(not_before);
                continue;
            }
            let mut task = Self::new_task(service, slot, &node, now);
            task.job_iteration = iteration;
            work.add(task);
        }
    }

    /// A replicated or global job ([`reconcile_job`]): new tasks carry the job's iteration, and a
    /// task that completed is told to stop, so that its node forgets it (it stays COMPLETE in
    /// the history, where the job counts it).
    fn orchestrate_job(
        service: &v1::Service,
        tasks: &[v1::Task],
        nodes: &[v1::Node],
        work: &mut Working,
        now: SystemTime,
        report: &mut PassReport,
    ) {
        let plan = reconcile_job(service, tasks, nodes, now);
        let completed = tasks.iter().filter(|t| t.observed_state() == TaskState::Complete && current(t));
        let shutdown = plan.shutdown.iter().chain(completed.map(|t| &t.id));
        let slots = plan.create_slots.into_iter().map(|(slot, at)| (slot, String::new(), at));
        let nodes = plan.create_nodes.into_iter().map(|(node, at)| (0, node, at));
        Self::apply(service, shutdown, slots.chain(nodes), plan.iteration, work, now, report);
    }

    /// Places every pending task (those of earlier passes and the new ones) in one scheduler
    /// batch; tasks that fit nowhere stay PENDING with the scheduler's reason.
    fn schedule(
        &self,
        nodes: &[v1::Node],
        unattached: &HashSet<String>,
        work: &mut Working,
        now: SystemTime,
        report: &mut PassReport,
    ) {
        let pending: Vec<&v1::Task> = work
            .tasks
            .iter()
            .filter(|t| {
                t.node_id.is_empty()
                    && !unattached.contains(&t.id)
                    && t.desired() == TaskState::Running
                    && t.observed_state() as i32 <= TaskState::Pending as i32
            })
            .collect();
        if pending.is_empty() {
            return;
        }
        let started = std::time::Instant::now();
        let result = place(nodes, &work.tasks, &pending, now, self.seed);
        if let Some(metrics) = &self.metrics {
            metrics.observe_placement(started.elapsed());
        }
        for (task_id, node_id) in result.assigned {
            work.change(&task_id, |task| {
                task.node_id = node_id;
                task.status = Some(v1::TaskStatus {
                    timestamp: Some(shoal_api::to_timestamp(now)),
                    state: TaskState::Assigned as i32,
                    message: "scheduler assigned task to node".to_owned(),
                    ..Default::default()
                });
                true
            });
            report.assigned += 1;
        }
        for (task_id, reason) in result.unplaced {
            report.unplaced += 1;
            work.hold_pending(&task_id, reason, now);
        }
    }

    /// The finished tasks beyond the history limit of each slot (or node, for global
    /// services), and tasks marked for removal that no agent runs: (ID, version) to delete. A
    /// slot keeps, beyond the limit, the newest attempts its service's restart policy still
    /// counts ([`Restarts::attempts_to_keep`]): with fewer, a slot that used up `max_attempts`
    /// would look as if it had attempts left and start again.
    fn reap(&self, services: &[v1::Service], tasks: &[v1::Task], limit: usize, now: SystemTime) -> Vec<(String, u64)> {
        let restarts: HashMap<&str, Restarts<'_>> =
            services.iter().map(|s| (s.id.as_str(), Restarts::new(s.spec.as_ref(), now))).collect();
        let mut history: BTreeMap<(&str, u64, &str), Vec<&v1::Task>> = BTreeMap::new();
        let mut doomed: Vec<&v1::Task> = Vec::new();
        for task in tasks {
            let finished = task.observed_state().is_terminal() && task.desired() as i32 >= TaskState::Shutdown as i32;
            if task.desired() == TaskState::Remove && (finished || task.node_id.is_empty()) {
                doomed.push(task);
            } else if finished {
                let node = if task.slot == 0 { task.node_id.as_str() } else { "" };
                history.entry((task.service_id.as_str(), task.slot, node)).or_default().push(task);
            }
        }
        for ((service, _, _), mut finished) in history {
            if finished.len() <= limit {
                continue;
            }
            // Newest first: the attempts to keep are the newest ones.
            finished.sort_by_key(|t| std::cmp::Reverse((status_time(t), t.version())));
            let restarts = restarts.get(service);
            let mut attempts_to_keep = restarts.map_or(0, Restarts::attempts_to_keep);
            let mut kept = 0;
            for task in finished {
                let attempt = attempts_to_keep > 0 && restarts.is_some_and(|r| r.is_attempt(task));
                if attempt {
                    attempts_to_keep -= 1;
                }
                if attempt || kept < limit {
                    kept += 1;
                } else {
                    doomed.push(task);
                }
            }
        }
        doomed.into_iter().map(|t| (t.id.clone(), t.version())).collect()
    }
}

/// The tasks as one pass sees and changes them: those read at its start (flagged when
/// changed) followed by the ones it creates.
#[derive(Debug)]
struct Working {
    tasks: Vec<v1::Task>,
    stored: usize,
    changed: Vec<bool>,
    index: HashMap<String, usize>,
}

impl Working {
    fn new(tasks: Vec<v1::Task>) -> Self {
        let index = tasks.iter().enumerate().map(|(i, t)| (t.id.clone(), i)).collect();
        Self { stored: tasks.len(), changed: vec![false; tasks.len()], tasks, index }
    }

    fn add(&mut self, task: v1::Task) {
        self.index.insert(task.id.clone(), self.tasks.len());
        self.tasks.push(task);
        self.changed.push(true);
    }

    /// Applies `edit` to the task with `id`; it reports whether it changed anything.
    fn change(&mut self, id: &str, edit: impl FnOnce(&mut v1::Task) -> bool) -> bool {
        let Some(&i) = self.index.get(id) else { return false };
        let changed = edit(&mut self.tasks[i]);
        self.changed[i] |= changed;
        changed
    }

    /// Raises a task's desired state (it never goes back); whether it changed.
    fn set_desired(&mut self, id: &str, to: TaskState) -> bool {
        self.change(id, |task| {
            if task.desired() as i32 >= to as i32 {
                return false;
            }
            task.desired_state = to as i32;
            true
        })
    }

    /// Leaves a task PENDING with `reason` (written only when the reason is new).
    fn hold_pending(&mut self, id: &str, reason: String, now: SystemTime) {
        self.change(id, |task| {
            if task.status.as_ref().is_some_and(|s| s.err == reason) {
                return false;
            }
            let status = task.status.get_or_insert_with(Default::default);
            status.state = TaskState::Pending as i32;
            status.err = reason;
            status.timestamp = Some(shoal_api::to_timestamp(now));
            true
        });
    }

    fn changed_ids(&self) -> impl Iterator<Item = &str> {
        self.tasks.iter().zip(&self.changed).filter(|(_, c)| **c).map(|(t, _)| t.id.as_str())
    }

    /// The writes: creates for new tasks (first), updates for changed ones.
    fn into_writes(self) -> Vec<Write<v1::Task>> {
        let stored = self.stored;
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        for (i, (task, changed)) in self.tasks.into_iter().zip(self.changed).enumerate() {
            if i >= stored {
                creates.push(Write::Create(task));
            } else if changed {
                updates.push(Write::Update(task));
            }
        }
        creates.extend(updates);
        creates
    }
}

pub(crate) fn is_ready(node: &v1::Node) -> bool {
    node.status.as_ref().is_some_and(|s| s.state == v1::node_status::State::Ready as i32)
}

mod keys;
mod network;

pub(crate) use keys::RING_ID;
#[cfg(test)]
mod tests;

//! The leader's control loop: while this manager leads, every tick it orchestrates (services
//! into tasks: replicated slots and global nodes), schedules pending tasks, reaps old task
//! history, and every heartbeat period marks silent nodes Down. Each pass reads the current state
//! and writes only differences, so a pass interrupted by a leadership change is simply redone by
//! the next leader.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use shoal_api::v1::{self, TaskState};

use crate::dispatcher::Dispatcher;
use crate::ids::new_id;
use crate::objects::{Object, ObjectError, ObjectStore};
use crate::orchestrator::reconcile_replicated;
use crate::placement::{place, snapshot, task_spec};

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
}

/// The leader's loops of one manager.
#[derive(Debug, Clone)]
pub struct Leader {
    objects: ObjectStore,
    dispatcher: Dispatcher,
    history: usize,
    seed: u64,
}

fn live(task: &v1::Task) -> bool {
    task.desired() as i32 <= TaskState::Running as i32 && !task.observed_state().is_terminal()
}

impl Leader {
    /// Loops over `objects`, with `dispatcher` for node liveness, keeping `history` tasks per slot.
    pub fn new(objects: ObjectStore, dispatcher: Dispatcher, history: usize) -> Self {
        Self { objects, dispatcher, history, seed: 0x5eed }
    }

    /// Runs the loops until `shutdown` resolves: a pass every `tick` while this manager is the
    /// Raft leader, heartbeats checked every `period`.
    pub async fn run(&self, tick: Duration, period: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut leading = false;
        let mut last_check = Instant::now();
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(tick) => {}
            }
            if !self.objects.store().is_leader() {
                leading = false;
                continue;
            }
            if !leading {
                leading = true;
                // Nodes that were Ready under the previous leader get three periods to reach us.
                match self.objects.list::<v1::Node>().await {
                    Ok(nodes) => {
                        self.dispatcher.expect_nodes(nodes.iter().filter(|n| is_ready(n)).map(|n| n.id.clone()))
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot list nodes after becoming leader"),
                }
                tracing::info!("became leader: control loops running");
            }
            if last_check.elapsed() >= period {
                last_check = Instant::now();
                if let Err(err) = self.dispatcher.check_heartbeats().await {
                    tracing::warn!(error = %err, "heartbeat check failed");
                }
                if let Err(err) = self.refresh_manager_status().await {
                    tracing::warn!(error = %err, "manager status refresh failed");
                }
            }
            match self.pass(SystemTime::now()).await {
                Ok(report) if report != PassReport::default() => tracing::debug!(?report, "control loop pass"),
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "control loop pass failed; retrying next tick"),
            }
        }
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

    /// One pass: orchestrate, schedule, reap.
    pub async fn pass(&self, now: SystemTime) -> Result<PassReport, ObjectError> {
        let mut report = PassReport::default();
        self.orchestrate(now, &mut report).await?;
        self.schedule(now, &mut report).await?;
        self.reap(&mut report).await?;
        Ok(report)
    }

    async fn set_desired(&self, mut task: v1::Task, to: TaskState) -> Result<bool, ObjectError> {
        if task.desired() as i32 >= to as i32 {
            return Ok(false);
        }
        task.desired_state = to as i32;
        match self.objects.update(task).await {
            Ok(_) => Ok(true),
            // Someone (an agent's report) changed it: the next pass sees the new state.
            Err(ObjectError::Conflict { .. } | ObjectError::NotFound { .. }) => Ok(false),
            Err(err) => Err(err),
        }
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

    async fn orchestrate(&self, now: SystemTime, report: &mut PassReport) -> Result<(), ObjectError> {
        let services = self.objects.list::<v1::Service>().await?;
        let tasks = self.objects.list::<v1::Task>().await?;
        let nodes = self.objects.list::<v1::Node>().await?;
        let mut by_service: HashMap<&str, Vec<v1::Task>> = HashMap::new();
        for task in &tasks {
            by_service.entry(task.service_id.as_str()).or_default().push(task.clone());
        }
        let known: HashSet<&str> = services.iter().map(|s| s.id.as_str()).collect();
        // Tasks whose service is gone are removed.
        for task in tasks.iter().filter(|t| !known.contains(t.service_id.as_str())) {
            if self.set_desired(task.clone(), TaskState::Remove).await? {
                report.stopped += 1;
            }
        }
        for service in &services {
            let own = by_service.get(service.id.as_str()).map(Vec::as_slice).unwrap_or_default();
            match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
                Some(v1::service_spec::Mode::Replicated(_)) => {
                    let plan = reconcile_replicated(service, own, &nodes, now);
                    for id in &plan.shutdown {
                        if let Some(task) = own.iter().find(|t| &t.id == id)
                            && self.set_desired(task.clone(), TaskState::Shutdown).await?
                        {
                            report.stopped += 1;
                        }
                    }
                    for (slot, not_before) in plan.create {
                        if not_before <= now {
                            self.objects.create(Self::new_task(service, slot, "", now)).await?;
                            report.created += 1;
                        }
                    }
                }
                Some(v1::service_spec::Mode::Global(_)) => {
                    self.orchestrate_global(service, own, &nodes, now, report).await?
                }
                // Jobs come with their own orchestrator.
                _ => {}
            }
        }
        Ok(())
    }

    /// One task per eligible node: new nodes get one, nodes that are gone, down, draining or no
    /// longer match the constraints lose theirs. Paused nodes keep what they run.
    async fn orchestrate_global(
        &self,
        service: &v1::Service,
        tasks: &[v1::Task],
        nodes: &[v1::Node],
        now: SystemTime,
        report: &mut PassReport,
    ) -> Result<(), ObjectError> {
        let spec = match task_spec(service.spec.as_ref().and_then(|s| s.task.as_ref())) {
            Ok(spec) => spec,
            Err(reason) => {
                tracing::warn!(service.id = %service.id, %reason, "global service cannot be placed");
                return Ok(());
            }
        };
        let snapshot = snapshot(nodes, &[], now);
        let eligible: HashSet<&str> = shoal_scheduler::eligible_nodes(&snapshot, &spec).into_iter().collect();
        let keeps: HashSet<&str> = snapshot
            .iter()
            .filter(|n| {
                n.availability == shoal_scheduler::Availability::Pause && n.status == shoal_scheduler::NodeStatus::Ready
            })
            .map(|n| n.id.as_str())
            .collect();
        let mut covered = HashSet::new();
        for task in tasks.iter().filter(|t| live(t)) {
            let node = task.node_id.as_str();
            if eligible.contains(node) || keeps.contains(node) {
                covered.insert(node.to_owned());
            } else if self.set_desired(task.clone(), TaskState::Shutdown).await? {
                report.stopped += 1;
            }
        }
        // A node whose last task failed waits for its restart delay like a slot would.
        let delay = service
            .spec
            .as_ref()
            .and_then(|s| s.task.as_ref())
            .and_then(|t| t.restart.as_ref())
            .and_then(|r| shoal_api::from_duration(r.delay.as_ref()))
            .unwrap_or(Duration::from_secs(5));
        for node in eligible.iter().filter(|n| !covered.contains(**n)) {
            let last_end = tasks
                .iter()
                .filter(|t| t.node_id == *node && matches!(t.observed_state(), TaskState::Failed | TaskState::Rejected))
                .filter_map(|t| shoal_api::from_timestamp(t.status.as_ref().and_then(|s| s.timestamp.as_ref())))
                .max();
            if last_end.is_some_and(|end| end + delay > now) {
                continue;
            }
            self.objects.create(Self::new_task(service, 0, node, now)).await?;
            report.created += 1;
        }
        Ok(())
    }

    async fn schedule(&self, now: SystemTime, report: &mut PassReport) -> Result<(), ObjectError> {
        let tasks = self.objects.list::<v1::Task>().await?;
        let pending: Vec<v1::Task> = tasks
            .iter()
            .filter(|t| {
                t.node_id.is_empty()
                    && t.desired() == TaskState::Running
                    && t.observed_state() as i32 <= TaskState::Pending as i32
            })
            .cloned()
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let nodes = self.objects.list::<v1::Node>().await?;
        let result = place(&nodes, &tasks, &pending, now, self.seed);
        let by_id: HashMap<&str, &v1::Task> = pending.iter().map(|t| (t.id.as_str(), t)).collect();
        for (task_id, node_id) in result.assigned {
            let Some(task) = by_id.get(task_id.as_str()) else { continue };
            let mut task = (*task).clone();
            task.node_id = node_id;
            task.status = Some(v1::TaskStatus {
                timestamp: Some(shoal_api::to_timestamp(now)),
                state: TaskState::Assigned as i32,
                message: "scheduler assigned task to node".to_owned(),
                ..Default::default()
            });
            match self.objects.update(task).await {
                Ok(_) => report.assigned += 1,
                Err(ObjectError::Conflict { .. } | ObjectError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        for (task_id, reason) in result.unplaced {
            let Some(task) = by_id.get(task_id.as_str()) else { continue };
            report.unplaced += 1;
            if task.status.as_ref().is_some_and(|s| s.err == reason) {
                continue;
            }
            let mut task = (*task).clone();
            let status = task.status.get_or_insert_with(Default::default);
            status.state = TaskState::Pending as i32;
            status.err = reason;
            status.timestamp = Some(shoal_api::to_timestamp(now));
            match self.objects.update(task).await {
                Ok(_) | Err(ObjectError::Conflict { .. } | ObjectError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Deletes finished tasks beyond the history limit of each slot (or node, for global
    /// services), and tasks marked for removal that no agent runs.
    async fn reap(&self, report: &mut PassReport) -> Result<(), ObjectError> {
        let tasks = self.objects.list::<v1::Task>().await?;
        let mut history: BTreeMap<(String, u64, String), Vec<&v1::Task>> = BTreeMap::new();
        let mut doomed: Vec<&v1::Task> = Vec::new();
        for task in &tasks {
            let finished = task.observed_state().is_terminal() && task.desired() as i32 >= TaskState::Shutdown as i32;
            if task.desired() == TaskState::Remove && (finished || task.node_id.is_empty()) {
                doomed.push(task);
            } else if finished {
                let node = if task.slot == 0 { task.node_id.clone() } else { String::new() };
                history.entry((task.service_id.clone(), task.slot, node)).or_default().push(task);
            }
        }
        for (_, mut finished) in history {
            if finished.len() <= self.history {
                continue;
            }
            finished.sort_by_key(|t| {
                (shoal_api::from_timestamp(t.status.as_ref().and_then(|s| s.timestamp.as_ref())), t.version())
            });
            let excess = finished.len() - self.history;
            doomed.extend(finished.into_iter().take(excess));
        }
        for task in doomed {
            match self.objects.delete::<v1::Task>(&task.id, task.version()).await {
                Ok(()) => report.reaped += 1,
                Err(ObjectError::Conflict { .. } | ObjectError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

fn is_ready(node: &v1::Node) -> bool {
    node.status.as_ref().is_some_and(|s| s.state == v1::node_status::State::Ready as i32)
}

#[cfg(test)]
mod tests;

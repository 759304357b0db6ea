//! The allocation phase of a leader pass: networks get their subnet and VNI, services their
//! VIPs and published ports, nodes their ingress sandbox address, and new tasks an address on
//! each network of their service — all written (fenced) before a task that needs them can be
//! scheduled. A service whose endpoint cannot be allocated gets no new tasks, and says why in
//! `allocation_error`; a task that cannot get an address stays PENDING with the reason.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use shoal_api::v1::{self, TaskState};

use super::{Leader, PassReport, Working};
use crate::allocator::{Allocator, wants_attachments};
use crate::objects::{ObjectError, ObjectStore, Write};

impl Leader {
    /// Allocates what networks, services and nodes lack, and writes it. Returns the services
    /// as written and the IDs of those that must not get new tasks (not allocated).
    pub(super) async fn allocate(
        &self,
        objects: &ObjectStore,
        allocator: &mut Allocator<'_>,
        networks: Vec<v1::Network>,
        mut services: Vec<v1::Service>,
        nodes: &[v1::Node],
        report: &mut PassReport,
    ) -> Result<(Vec<v1::Service>, HashSet<String>), ObjectError> {
        // Networks first: services and tasks take addresses from them.
        let mut writes = Vec::new();
        // The ingress network first: at init it gets the first subnet and VNI, as in Swarm.
        let mut networks = networks;
        networks.sort_by_key(|n| !crate::allocator::is_ingress(n));
        for network in networks.iter().filter(|n| n.allocation.is_none()) {
            let mut written = network.clone();
            match allocator.allocate_network(network) {
                Ok(allocation) => {
                    written.allocation = Some(allocation);
                    written.allocation_error.clear();
                }
                Err(err) if err.to_string() == network.allocation_error => continue,
                Err(err) => {
                    tracing::warn!(network.id = %network.id, error = %err, "network not allocated");
                    written.allocation_error = err.to_string();
                }
            }
            writes.push(Write::Update(written));
        }
        report.allocated += count_written(objects.write_all(writes).await?)?;

        let mut blocked = HashSet::new();
        let mut writes = Vec::new();
        let mut indices = Vec::new();
        for (i, service) in services.iter().enumerate() {
            if allocator.service_allocated(service) {
                if !service.allocation_error.is_empty() {
                    let mut written = service.clone();
                    written.allocation_error.clear();
                    writes.push(Write::Update(written));
                    indices.push(i);
                }
                continue;
            }
            let mut written = service.clone();
            match allocator.allocate_service(service) {
                Ok(endpoint) => {
                    written.endpoint = Some(endpoint);
                    written.allocation_error.clear();
                }
                Err(err) => {
                    blocked.insert(service.id.clone());
                    if err.to_string() == service.allocation_error {
                        continue;
                    }
                    tracing::warn!(service.id = %service.id, error = %err, "service endpoint not allocated");
                    written.allocation_error = err.to_string();
                }
            }
            writes.push(Write::Update(written));
            indices.push(i);
        }
        let outcomes = objects.write_all(writes.clone()).await?;
        for ((i, write), outcome) in indices.into_iter().zip(writes).zip(outcomes) {
            match (outcome, write) {
                (Ok(()), Write::Update(mut written)) => {
                    report.allocated += 1;
                    // The version is stale now, but the pass only reads it.
                    written.meta = services[i].meta;
                    services[i] = written;
                }
                (Err(ObjectError::Fenced { key }), _) => return Err(ObjectError::Fenced { key }),
                // Changed meanwhile (a user's update): the next pass allocates again; no new
                // tasks from an endpoint that was not stored.
                _ => {
                    blocked.insert(services[i].id.clone());
                }
            }
        }

        let mut writes = Vec::new();
        let mut without = Vec::new();
        for node in nodes {
            let wanted = match allocator.allocate_node(node) {
                Ok(wanted) => wanted,
                Err(err) => {
                    without.push((node.id.clone(), err));
                    continue;
                }
            };
            if wanted != node.ingress {
                let mut written = node.clone();
                written.ingress = wanted;
                writes.push(Write::Update(written));
            }
        }
        report.allocated += count_written(objects.write_all(writes).await?)?;
        // Said once per change of the count, not on every pass: a cluster larger than its
        // ingress subnet (Swarm's default /24 holds 253) stays so until the network is replaced.
        let before = self.without_ingress.swap(without.len(), std::sync::atomic::Ordering::Relaxed);
        if let Some((node, err)) = without.first()
            && before != without.len()
        {
            tracing::warn!(nodes = without.len(), first = %node, error = %err,
                "nodes without an ingress sandbox address: the routing mesh does not answer on them; \
                 replace the ingress network by a larger one (shoal network rm ingress; shoal network create --ingress --subnet …)");
        }
        Ok((services, blocked))
    }

    /// Gives each task waiting for addresses one on every network of its service, or leaves it
    /// PENDING with the reason — a global task too, which keeps its node but is not sent there
    /// (the dispatcher sends tasks from ASSIGNED on). Returns the tasks that still lack
    /// addresses (not to schedule).
    pub(super) fn attach(
        allocator: &mut Allocator<'_>,
        services: &[v1::Service],
        work: &mut Working,
        now: SystemTime,
    ) -> HashSet<String> {
        let by_id: HashMap<&str, &v1::Service> = services.iter().map(|s| (s.id.as_str(), s)).collect();
        let mut unattached = HashSet::new();
        let stored = work.stored;
        let waiting: Vec<(String, String)> = work
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.desired() == TaskState::Running)
            .filter_map(|(i, t)| {
                let service = by_id.get(t.service_id.as_str())?;
                let spec = service.spec.as_ref()?;
                let networks = allocator.service_networks(spec).unwrap_or_default();
                wants_attachments(t, &networks, i >= stored).then(|| (t.id.clone(), t.service_id.clone()))
            })
            .collect();
        for (task_id, service_id) in waiting {
            let Some(service) = by_id.get(service_id.as_str()) else { continue };
            match allocator.allocate_task(service) {
                Ok(attachments) => {
                    work.change(&task_id, |task| {
                        task.networks = attachments;
                        task.endpoint = service.endpoint.clone();
                        // A global task held back for want of an address goes to its node now.
                        if !task.node_id.is_empty() && task.observed_state() == TaskState::Pending {
                            task.status = Some(v1::TaskStatus {
                                timestamp: Some(shoal_api::to_timestamp(now)),
                                state: TaskState::Assigned as i32,
                                message: "assigned to its node".to_owned(),
                                ..Default::default()
                            });
                        }
                        true
                    });
                }
                Err(err) => {
                    unattached.insert(task_id.clone());
                    work.hold_pending(&task_id, format!("network allocation failed: {err}"), now);
                }
            }
        }
        unattached
    }
}

/// How many writes succeeded; a fenced refusal ends the pass.
fn count_written(outcomes: Vec<Result<(), ObjectError>>) -> Result<usize, ObjectError> {
    let mut written = 0;
    for outcome in outcomes {
        match outcome {
            Ok(()) => written += 1,
            Err(ObjectError::Fenced { key }) => return Err(ObjectError::Fenced { key }),
            Err(_) => {}
        }
    }
    Ok(written)
}

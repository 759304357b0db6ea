//! The scheduler driver's translation: the cluster's nodes and tasks (api objects) become the
//! scheduler's snapshot, pending tasks become its batch, and its answer comes back as node IDs
//! for the tasks it placed and the explanation (`no suitable node (…)`) for those it could not.
//! Specs that fail to parse here were refused at create time; one that still does not parse
//! (written by an older version) leaves its task pending with the parse error as the reason.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_api::v1::{self, TaskState};
use shoal_scheduler as sched;

/// A failure of a service on a node counts against that node for this long.
const FAILURE_WINDOW: Duration = Duration::from_secs(5 * 60);

/// The scheduler's answer in api terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementResult {
    /// (task ID, node ID) for every placed task.
    pub assigned: Vec<(String, String)>,
    /// (task ID, why not) for every task left pending.
    pub unplaced: Vec<(String, String)>,
}

fn resources(r: Option<&v1::Resources>) -> sched::Resources {
    let Some(r) = r else { return sched::Resources::default() };
    let mut out =
        sched::Resources::new(u64::try_from(r.nano_cpus).unwrap_or(0), u64::try_from(r.memory_bytes).unwrap_or(0));
    for g in &r.generic {
        out = out.with_generic(g.kind.clone(), u64::try_from(g.value).unwrap_or(0));
    }
    out
}

fn add(into: &mut sched::Resources, r: &sched::Resources) {
    into.nano_cpus += r.nano_cpus;
    into.memory_bytes += r.memory_bytes;
    for (kind, n) in &r.generic {
        *into.generic.entry(kind.clone()).or_insert(0) += n;
    }
}

/// The scheduler's view of a task spec; `Err` carries the reason it cannot be scheduled.
pub(crate) fn task_spec(spec: Option<&v1::TaskSpec>) -> Result<sched::TaskSpec, String> {
    let Some(spec) = spec else { return Ok(sched::TaskSpec::default()) };
    let placement = spec.placement.clone().unwrap_or_default();
    Ok(sched::TaskSpec {
        reservations: resources(spec.resources.as_ref().and_then(|r| r.reservations.as_ref())),
        constraints: sched::parse_constraints(placement.constraints.iter().map(String::as_str))
            .map_err(|e| format!("invalid constraint: {e}"))?,
        preferences: placement
            .preferences
            .iter()
            .map(|p| sched::PlacementPreference::parse(p).map_err(|e| format!("invalid placement preference: {e}")))
            .collect::<Result<_, _>>()?,
        max_replicas: placement.max_replicas,
        host_ports: Vec::new(),
        platforms: placement.platforms.iter().map(|p| sched::Platform::new(&p.os, &p.architecture)).collect(),
    })
}

/// The host-mode ports a task publishes on its node.
fn host_ports(task: &v1::Task) -> Vec<sched::HostPort> {
    let ports = task.endpoint.as_ref().map(|e| e.ports.as_slice()).unwrap_or_default();
    ports
        .iter()
        .filter(|p| p.publish_mode == v1::port_config::PublishMode::Host as i32 && p.published_port != 0)
        .map(|p| sched::HostPort {
            protocol: match v1::port_config::Protocol::try_from(p.protocol) {
                Ok(v1::port_config::Protocol::Udp) => sched::Protocol::Udp,
                Ok(v1::port_config::Protocol::Sctp) => sched::Protocol::Sctp,
                _ => sched::Protocol::Tcp,
            },
            port: u16::try_from(p.published_port).unwrap_or(0),
        })
        .collect()
}

/// The scheduler's snapshot of `nodes`, counting the live tasks on each and recent failures.
pub(crate) fn snapshot(nodes: &[v1::Node], tasks: &[v1::Task], now: SystemTime) -> Vec<sched::Node> {
    let mut by_node: HashMap<&str, Vec<&v1::Task>> = HashMap::new();
    for task in tasks.iter().filter(|t| !t.node_id.is_empty()) {
        by_node.entry(task.node_id.as_str()).or_default().push(task);
    }
    nodes
        .iter()
        .map(|node| {
            let spec = node.spec.clone().unwrap_or_default();
            let description = node.description.clone().unwrap_or_default();
            let mut out = sched::Node::new(&node.id);
            out.hostname = description.hostname.clone();
            out.role =
                if node.role == v1::NodeRole::Manager as i32 { sched::Role::Manager } else { sched::Role::Worker };
            out.availability = match v1::NodeAvailability::try_from(spec.availability) {
                Ok(v1::NodeAvailability::Pause) => sched::Availability::Pause,
                Ok(v1::NodeAvailability::Drain) => sched::Availability::Drain,
                _ => sched::Availability::Active,
            };
            out.status = match node.status.as_ref().map(|s| v1::node_status::State::try_from(s.state)) {
                Some(Ok(v1::node_status::State::Ready)) => sched::NodeStatus::Ready,
                Some(Ok(v1::node_status::State::Down)) => sched::NodeStatus::Down,
                Some(Ok(v1::node_status::State::Disconnected)) => sched::NodeStatus::Disconnected,
                _ => sched::NodeStatus::Unknown,
            };
            let platform = description.platform.clone().unwrap_or_default();
            out.platform = sched::Platform::new(platform.os, platform.architecture);
            out.labels = spec.annotations.map(|a| a.labels.into_iter().collect()).unwrap_or_default();
            out.engine_labels = description.engine.map(|e| e.labels.into_iter().collect()).unwrap_or_default();
            if let Some(addr) = node.status.as_ref().and_then(|s| s.addr.split(':').next()?.parse().ok()) {
                out.addresses.push(addr);
            }
            out.total = resources(description.resources.as_ref());
            let mut failures: BTreeMap<String, u32> = BTreeMap::new();
            for task in by_node.get(node.id.as_str()).into_iter().flatten() {
                if crate::orchestrator::live(task) {
                    *out.tasks_by_service.entry(task.service_id.clone()).or_insert(0) += 1;
                    if let Ok(spec) = task_spec(task.spec.as_ref()) {
                        add(&mut out.reserved, &spec.reservations);
                    }
                } else if task.observed_state() == TaskState::Failed || task.observed_state() == TaskState::Rejected {
                    let at = shoal_api::from_timestamp(task.status.as_ref().and_then(|s| s.timestamp.as_ref()));
                    if at.is_some_and(|at| now.duration_since(at).unwrap_or_default() <= FAILURE_WINDOW) {
                        *failures.entry(task.service_id.clone()).or_insert(0) += 1;
                    }
                }
            }
            out.recent_failures = failures;
            out.host_ports = by_node
                .get(node.id.as_str())
                .into_iter()
                .flatten()
                .filter(|t| crate::orchestrator::live(t))
                .flat_map(|t| host_ports(t))
                .collect();
            out
        })
        .collect()
}

/// Places `pending` tasks (unassigned, desired RUNNING) onto `nodes`, given every task in the
/// cluster (for load, reservations and failures). Deterministic for a given `seed`.
pub fn place(
    nodes: &[v1::Node],
    tasks: &[v1::Task],
    pending: &[&v1::Task],
    now: SystemTime,
    seed: u64,
) -> PlacementResult {
    let snapshot = snapshot(nodes, tasks, now);
    let mut result = PlacementResult::default();
    let mut batch = Vec::with_capacity(pending.len());
    // Tasks of one service share a spec: parse it once.
    let mut specs: HashMap<(&str, u64), Result<Arc<sched::TaskSpec>, String>> = HashMap::new();
    for task in pending {
        let spec = specs
            .entry((task.service_id.as_str(), task.spec_version))
            .or_insert_with(|| {
                task_spec(task.spec.as_ref()).map(|mut spec| {
                    spec.host_ports = host_ports(task);
                    Arc::new(spec)
                })
            })
            .clone();
        match spec {
            Ok(spec) => batch.push(sched::Task::new(&task.id, &task.service_id, spec)),
            Err(reason) => result.unplaced.push((task.id.clone(), reason)),
        }
    }
    let placement = sched::schedule(&snapshot, &batch, seed);
    result.assigned = placement.assignments.into_iter().map(|a| (a.task_id, a.node_id)).collect();
    result.unplaced.extend(placement.unplaced.into_iter().map(|u| (u.task_id, u.explanation.to_string())));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, role: v1::NodeRole, labels: &[(&str, &str)], ready: bool) -> v1::Node {
        v1::Node {
            id: id.into(),
            role: role as i32,
            spec: Some(v1::NodeSpec {
                annotations: Some(v1::Annotations {
                    name: String::new(),
                    labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
                }),
                ..Default::default()
            }),
            description: Some(v1::NodeDescription {
                hostname: format!("host-{id}"),
                platform: Some(v1::Platform { architecture: "amd64".into(), os: "linux".into() }),
                resources: Some(v1::Resources {
                    nano_cpus: 2_000_000_000,
                    memory_bytes: 4 << 30,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(v1::NodeStatus {
                state: if ready { v1::node_status::State::Ready } else { v1::node_status::State::Down } as i32,
                addr: "192.0.2.11:40000".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn task(id: &str, service: &str, node: &str, placement: Option<v1::Placement>) -> v1::Task {
        v1::Task {
            id: id.into(),
            service_id: service.into(),
            node_id: node.into(),
            desired_state: TaskState::Running as i32,
            spec: Some(v1::TaskSpec { placement, ..Default::default() }),
            status: Some(v1::TaskStatus {
                state: if node.is_empty() { TaskState::Pending } else { TaskState::Running } as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn spreads_and_counts_existing_tasks() {
        let nodes = [node("n1", v1::NodeRole::Worker, &[], true), node("n2", v1::NodeRole::Worker, &[], true)];
        let existing = [task("e1", "web", "n1", None), task("e2", "web", "n1", None)];
        let pending: Vec<v1::Task> = (0..4).map(|i| task(&format!("p{i}"), "web", "", None)).collect();
        let all: Vec<v1::Task> = existing.iter().chain(&pending).cloned().collect();
        let result = place(&nodes, &all, &pending.iter().collect::<Vec<_>>(), SystemTime::now(), 7);
        let on_n2 = result.assigned.iter().filter(|(_, n)| n == "n2").count();
        assert_eq!(on_n2, 3, "the emptier node takes the first new tasks: {result:?}");
        assert!(result.unplaced.is_empty());
    }

    #[test]
    fn constraints_roles_labels_and_reasons() {
        let nodes = [
            node("m1", v1::NodeRole::Manager, &[("zone", "a")], true),
            node("w1", v1::NodeRole::Worker, &[("zone", "b")], true),
            node("w2", v1::NodeRole::Worker, &[("zone", "a")], false),
        ];
        let constrained = |id: &str, c: &str| {
            // One service per constraint: tasks of one service version share their spec.
            task(
                id,
                &format!("svc-{id}"),
                "",
                Some(v1::Placement { constraints: vec![c.to_owned()], ..Default::default() }),
            )
        };
        let pending = vec![
            constrained("t-worker", "node.role==worker"),
            constrained("t-zone-a", "node.labels.zone==a"),
            constrained("t-none", "node.hostname==nowhere"),
            constrained("t-bad", "node.role=worker"),
        ];
        let result = place(&nodes, &pending, &pending.iter().collect::<Vec<_>>(), SystemTime::now(), 1);
        let assigned: BTreeMap<_, _> = result.assigned.iter().cloned().collect();
        assert_eq!(assigned.get("t-worker").map(String::as_str), Some("w1"));
        assert_eq!(assigned.get("t-zone-a").map(String::as_str), Some("m1"), "w2 is down");
        let unplaced: BTreeMap<_, _> = result.unplaced.iter().cloned().collect();
        assert!(unplaced["t-none"].starts_with("no suitable node ("), "{}", unplaced["t-none"]);
        assert!(unplaced["t-bad"].starts_with("invalid constraint: "), "{}", unplaced["t-bad"]);
    }

    #[test]
    fn snapshot_counts_live_tasks_reservations_and_recent_failures() {
        let now = SystemTime::now();
        let mut reserved = task("r1", "db", "n1", None);
        reserved.spec = Some(v1::TaskSpec {
            resources: Some(v1::ResourceRequirements {
                reservations: Some(v1::Resources { memory_bytes: 1 << 30, ..Default::default() }),
                limits: None,
            }),
            ..Default::default()
        });
        let mut failed = task("f1", "web", "n1", None);
        failed.status = Some(v1::TaskStatus {
            state: TaskState::Failed as i32,
            timestamp: Some(shoal_api::to_timestamp(now - Duration::from_secs(30))),
            ..Default::default()
        });
        let mut old_failure = failed.clone();
        old_failure.id = "f0".into();
        old_failure.status.as_mut().expect("status").timestamp =
            Some(shoal_api::to_timestamp(now - Duration::from_secs(900)));
        let mut stopped = task("s1", "web", "n1", None);
        stopped.desired_state = TaskState::Shutdown as i32;
        let snap =
            snapshot(&[node("n1", v1::NodeRole::Worker, &[], true)], &[reserved, failed, old_failure, stopped], now);
        assert_eq!(snap[0].tasks_by_service, BTreeMap::from([("db".to_owned(), 1)]));
        assert_eq!(snap[0].reserved.memory_bytes, 1 << 30);
        assert_eq!(snap[0].recent_failures, BTreeMap::from([("web".to_owned(), 1)]));
        assert_eq!(snap[0].addresses, vec!["192.0.2.11".parse::<std::net::IpAddr>().expect("ip")]);
    }
}

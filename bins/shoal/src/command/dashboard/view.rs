//! What the page is sent of each object: the fields its views show, as plain JSON with short
//! lower-case words for enums and milliseconds since the epoch for times. Nothing secret is in a
//! view (no secret or config payload, no certificate, no environment variables).

use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use serde_json::{Value, json};
use shoal_api::v1::{self, TaskState};

use crate::render;

/// The four kinds of objects the page shows, as they are named in its JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Node,
    Service,
    Task,
    Network,
}

impl Kind {
    pub(crate) const ALL: [Kind; 4] = [Kind::Node, Kind::Service, Kind::Task, Kind::Network];

    /// The key of its list in the page's JSON.
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Kind::Node => "nodes",
            Kind::Service => "services",
            Kind::Task => "tasks",
            Kind::Network => "networks",
        }
    }

    /// The kind an event is about; secrets and configs are not shown.
    pub(crate) fn of_event(kind: v1::EventType) -> Option<Kind> {
        match kind {
            v1::EventType::Node => Some(Kind::Node),
            v1::EventType::Service => Some(Kind::Service),
            v1::EventType::Task => Some(Kind::Task),
            v1::EventType::Network => Some(Kind::Network),
            _ => None,
        }
    }
}

/// Milliseconds since the epoch, or null.
fn millis(at: Option<&prost_types::Timestamp>) -> Value {
    match shoal_api::from_timestamp(at) {
        Some(at) => json!(at.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64),
        None => Value::Null,
    }
}

/// `TaskState::Running` as `running`.
pub(crate) fn state_word(state: TaskState) -> String {
    state.label().to_ascii_lowercase()
}

pub(crate) fn node(node: &v1::Node) -> Value {
    let spec = node.spec.clone().unwrap_or_default();
    let description = node.description.clone().unwrap_or_default();
    let resources = description.resources.unwrap_or_default();
    let platform = description.platform.unwrap_or_default();
    let status = node.status.clone().unwrap_or_default();
    let manager = node.manager_status.as_ref();
    let availability = match v1::NodeAvailability::try_from(spec.availability) {
        Ok(v1::NodeAvailability::Active) => "active",
        Ok(v1::NodeAvailability::Pause) => "pause",
        Ok(v1::NodeAvailability::Drain) => "drain",
        Err(_) => "unknown",
    };
    let state = match v1::node_status::State::try_from(status.state) {
        Ok(v1::node_status::State::Ready) => "ready",
        Ok(v1::node_status::State::Down) => "down",
        Ok(v1::node_status::State::Disconnected) => "disconnected",
        _ => "unknown",
    };
    let reachability = manager.map(|m| match v1::manager_status::Reachability::try_from(m.reachability) {
        Ok(v1::manager_status::Reachability::Reachable) => "reachable",
        Ok(v1::manager_status::Reachability::Unreachable) => "unreachable",
        _ => "unknown",
    });
    // Its spec's name, else its hostname, else (a node that never reported one) its short ID.
    let name = [spec.annotations.as_ref().map_or("", |a| a.name.as_str()), description.hostname.as_str()]
        .into_iter()
        .find(|n| !n.is_empty())
        .unwrap_or(render::short(&node.id))
        .to_owned();
    json!({
        "id": node.id,
        "hostname": description.hostname,
        "name": name,
        "role": if node.role == v1::NodeRole::Manager as i32 { "manager" } else { "worker" },
        "availability": availability,
        "state": state,
        "message": status.message,
        "addr": status.addr,
        "leader": manager.is_some_and(|m| m.leader),
        "reachability": reachability,
        "cpus": resources.nano_cpus as f64 / 1e9,
        "memory": resources.memory_bytes,
        "platform": format!("{}/{}", platform.os, platform.architecture).trim_matches('/'),
        "engine": description.engine.map(|e| e.engine_version).unwrap_or_default(),
        "lb": description.load_balancer,
        "labels": spec.annotations.map(|a| a.labels).unwrap_or_default(),
    })
}

pub(crate) fn service(service: &v1::Service) -> Value {
    let spec = service.spec.clone().unwrap_or_default();
    let (mode, replicas) = match &spec.mode {
        Some(v1::service_spec::Mode::Replicated(r)) => ("replicated", json!(r.replicas)),
        Some(v1::service_spec::Mode::Global(_)) => ("global", Value::Null),
        Some(v1::service_spec::Mode::ReplicatedJob(j)) => ("replicated-job", json!(j.total_completions)),
        Some(v1::service_spec::Mode::GlobalJob(_)) => ("global-job", Value::Null),
        None => ("", Value::Null),
    };
    let image = spec.task.as_ref().and_then(|t| t.container.as_ref()).map(|c| c.image.as_str()).unwrap_or_default();
    let update = service.update_status.as_ref().map(|u| {
        let state = match v1::update_status::UpdateState::try_from(u.state) {
            Ok(v1::update_status::UpdateState::Updating) => "updating",
            Ok(v1::update_status::UpdateState::Paused) => "paused",
            Ok(v1::update_status::UpdateState::Completed) => "completed",
            Ok(v1::update_status::UpdateState::RollbackStarted) => "rollback_started",
            Ok(v1::update_status::UpdateState::RollbackPaused) => "rollback_paused",
            Ok(v1::update_status::UpdateState::RollbackCompleted) => "rollback_completed",
            _ => "unknown",
        };
        json!({
            "state": state,
            "message": u.message,
            "started": millis(u.started_at.as_ref()),
            "completed": millis(u.completed_at.as_ref()),
        })
    });
    let vips: Vec<Value> = service
        .endpoint
        .iter()
        .flat_map(|e| &e.virtual_ips)
        .map(|vip| json!({ "network": vip.network_id, "addr": vip.addr }))
        .collect();
    let labels = spec.annotations.as_ref().map(|a| a.labels.clone()).unwrap_or_default();
    json!({
        "id": service.id,
        "name": render::service_name(service),
        "mode": mode,
        "replicas": replicas,
        "image": render::display_image(image),
        "ports": render::ports(service),
        "networks": spec.networks.iter().map(|n| n.target.as_str()).collect::<Vec<_>>(),
        "vips": vips,
        "update": update,
        "specVersion": service.spec_version,
        "canRollback": service.previous_spec.is_some(),
        "error": service.allocation_error,
        "stack": labels.get("com.docker.stack.namespace"),
        "labels": labels,
        "created": millis(service.meta.as_ref().and_then(|m| m.created_at.as_ref())),
        "updated": millis(service.meta.as_ref().and_then(|m| m.updated_at.as_ref())),
    })
}

/// A task's view; with its service, whether it is up to date with it (what a rolling update
/// replaces, as `service update` counts it).
pub(crate) fn task(task: &v1::Task, service: Option<&v1::Service>) -> Value {
    let status = task.status.clone().unwrap_or_default();
    let name = task.annotations.as_ref().map(|a| a.name.as_str()).unwrap_or_default();
    let image = task.spec.as_ref().and_then(|t| t.container.as_ref()).map(|c| c.image.as_str()).unwrap_or_default();
    let networks: Vec<Value> = task
        .networks
        .iter()
        .map(|n| json!({ "network": n.network.as_ref().map(|n| n.id.as_str()), "addrs": n.addresses }))
        .collect();
    json!({
        "id": task.id,
        "name": name,
        "service": task.service_id,
        "slot": task.slot,
        "node": task.node_id,
        "state": state_word(task.observed_state()),
        "desired": state_word(task.desired()),
        "message": status.message,
        "error": status.err,
        "exitCode": status.container.map(|c| c.exit_code),
        "since": millis(status.timestamp.as_ref()),
        "image": render::display_image(image),
        "specVersion": task.spec_version,
        "current": service.map(|service| !shoal_manager::task_dirty(service, task)),
        "networks": networks,
    })
}

pub(crate) fn network(network: &v1::Network) -> Value {
    let spec = network.spec.clone().unwrap_or_default();
    let allocation = network.allocation.clone().unwrap_or_default();
    let annotations = spec.annotations.unwrap_or_default();
    json!({
        "id": network.id,
        "name": annotations.name,
        "driver": spec.driver,
        "subnet": allocation.subnet,
        "gateway": allocation.gateway,
        "vni": allocation.vni,
        "mtu": allocation.mtu,
        "ingress": spec.ingress,
        "internal": spec.internal,
        "attachable": spec.attachable,
        "error": network.allocation_error,
        "labels": annotations.labels,
        "created": millis(network.meta.as_ref().and_then(|m| m.created_at.as_ref())),
    })
}

/// One cluster event as the event page lists it.
pub(crate) fn event(event: &v1::Event) -> Value {
    let (kind, action) = crate::command::events::words(event);
    let attributes: std::collections::BTreeMap<&str, &str> =
        event.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    json!({
        "time": millis(event.time.as_ref()),
        "type": kind,
        "action": action,
        "id": event.id,
        "attributes": attributes,
    })
}

/// Each object's view keyed by ID.
pub(crate) fn keyed<T>(objects: &[T], id: impl Fn(&T) -> &str, view: impl Fn(&T) -> Value) -> HashMap<String, Value> {
    objects.iter().map(|o| (id(o).to_owned(), view(o))).collect()
}

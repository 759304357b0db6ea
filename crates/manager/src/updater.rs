//! Rolling updates and rollbacks, as a pure function of stored state: which tasks run an older
//! spec ([`task_dirty`]), and the plan of one leader pass for a service being updated.

use std::collections::BTreeSet;

use shoal_api::v1;

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

//! `--filter KEY=VALUE` on `node ls`, `service ls`, `service ps`, `node ps`, `network ls`,
//! `secret ls`, `config ls` and `volume ls`, with docker's keys and meaning: a key given twice
//! matches either value, different keys must all match. Names match a prefix of the name
//! (nodes: any part of the hostname; networks any part of the name and ID, volumes any part of
//! the name, as docker's), IDs a prefix, labels `KEY` or `KEY=VALUE`. Pure functions of api
//! objects.

use std::collections::{BTreeMap, HashMap};

use shoal_api::v1::{self, TaskState};

/// A key a list takes, and the values it allows (`None`: any).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    name: &'static str,
    values: Option<&'static [&'static str]>,
}

const fn key(name: &'static str, values: Option<&'static [&'static str]>) -> Key {
    Key { name, values }
}

pub(crate) const NODE_KEYS: &[Key] = &[
    key("name", None),
    key("id", None),
    key("label", None),
    key("role", Some(&["manager", "worker"])),
    key("membership", Some(&["accepted", "pending"])),
    key("availability", Some(&["active", "pause", "drain"])),
];

pub(crate) const SERVICE_KEYS: &[Key] = &[
    key("name", None),
    key("id", None),
    key("label", None),
    key("mode", Some(&["replicated", "global", "replicated-job", "global-job"])),
];

pub(crate) const TASK_KEYS: &[Key] = &[
    key("name", None),
    key("id", None),
    key("desired-state", Some(&["running", "shutdown", "accepted"])),
    key("node", None),
    key("service", None),
];

pub(crate) const NETWORK_KEYS: &[Key] = &[
    key("name", None),
    key("id", None),
    key("driver", None),
    key("label", None),
    key("scope", Some(&["swarm", "local", "global"])),
];

/// `secret ls` and `config ls`.
pub(crate) const PAYLOAD_KEYS: &[Key] = &[key("name", None), key("id", None), key("label", None)];

/// `volume ls`: `dangling=true` keeps the volumes no task uses.
pub(crate) const VOLUME_KEYS: &[Key] =
    &[key("name", None), key("driver", None), key("label", None), key("dangling", Some(&["true", "false", "1", "0"]))];

/// Parsed `--filter`s: each key with the values given for it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Filters(BTreeMap<&'static str, Vec<String>>);

fn words(list: &[&str]) -> String {
    match list {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

impl Filters {
    /// Parses `KEY=VALUE` values against the keys a list takes.
    pub(crate) fn parse(values: &[String], keys: &[Key]) -> Result<Self, String> {
        let mut filters = Self::default();
        for text in values {
            let names: Vec<&str> = keys.iter().map(|k| k.name).collect();
            let Some((name, value)) = text.split_once('=') else {
                return Err(format!("invalid filter {text:?}: expected KEY=VALUE with KEY one of {}", words(&names)));
            };
            let Some(key) = keys.iter().find(|k| k.name == name.trim()) else {
                return Err(format!("invalid filter {text:?}: {name:?} is not one of {}", words(&names)));
            };
            if let Some(allowed) = key.values
                && !allowed.contains(&value.trim().to_ascii_lowercase().as_str())
            {
                return Err(format!("invalid filter {text:?}: {} is {}", key.name, words(allowed)));
            }
            let value = if key.values.is_some() { value.trim().to_ascii_lowercase() } else { value.to_owned() };
            filters.0.entry(key.name).or_default().push(value);
        }
        Ok(filters)
    }

    /// Whether key `name` was not given, or one of its values passes `test`.
    fn pass(&self, name: &str, test: impl Fn(&str) -> bool) -> bool {
        self.0.get(name).is_none_or(|values| values.iter().any(|v| test(v)))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `label=KEY` or `label=KEY=VALUE` against `labels`.
fn label_matches(labels: &HashMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|l| l == v),
        None => labels.contains_key(filter),
    }
}

pub(crate) fn node_matches(node: &v1::Node, filters: &Filters) -> bool {
    let spec = node.spec.clone().unwrap_or_default();
    let hostname = node.description.as_ref().map(|d| d.hostname.as_str()).unwrap_or_default();
    let labels = spec.annotations.map(|a| a.labels).unwrap_or_default();
    let availability = match v1::NodeAvailability::try_from(spec.availability) {
        Ok(v1::NodeAvailability::Pause) => "pause",
        Ok(v1::NodeAvailability::Drain) => "drain",
        _ => "active",
    };
    let role = if node.role == v1::NodeRole::Manager as i32 { "manager" } else { "worker" };
    filters.pass("name", |v| hostname.contains(v))
        && filters.pass("id", |v| node.id.starts_with(v))
        && filters.pass("label", |v| label_matches(&labels, v))
        && filters.pass("role", |v| v == role)
        // A node is in the cluster once it joined: there are no pending nodes.
        && filters.pass("membership", |v| v == "accepted")
        && filters.pass("availability", |v| v == availability)
}

pub(crate) fn service_matches(service: &v1::Service, filters: &Filters) -> bool {
    let spec = service.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.unwrap_or_default();
    let mode = match spec.mode {
        Some(v1::service_spec::Mode::Replicated(_)) => "replicated",
        Some(v1::service_spec::Mode::Global(_)) => "global",
        Some(v1::service_spec::Mode::ReplicatedJob(_)) => "replicated-job",
        Some(v1::service_spec::Mode::GlobalJob(_)) => "global-job",
        None => "",
    };
    filters.pass("name", |v| annotations.name.starts_with(v))
        && filters.pass("id", |v| service.id.starts_with(v))
        && filters.pass("label", |v| label_matches(&annotations.labels, v))
        && filters.pass("mode", |v| v == mode)
}

/// Docker's network filters: name and ID match any part, the driver exactly; every network is
/// swarm-scoped.
pub(crate) fn network_matches(network: &v1::Network, filters: &Filters) -> bool {
    let spec = network.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.unwrap_or_default();
    filters.pass("name", |v| annotations.name.contains(v))
        && filters.pass("id", |v| network.id.contains(v))
        && filters.pass("driver", |v| spec.driver == v)
        && filters.pass("label", |v| label_matches(&annotations.labels, v))
        && filters.pass("scope", |v| v == "swarm")
}

/// A secret or config: name and ID match a prefix, as Swarm's.
pub(crate) fn payload_matches(id: &str, name: &str, labels: &HashMap<String, String>, filters: &Filters) -> bool {
    filters.pass("name", |v| name.starts_with(v))
        && filters.pass("id", |v| id.starts_with(v))
        && filters.pass("label", |v| label_matches(labels, v))
}

/// A node's volume, as docker's volume filters: the name matches any part, the driver exactly
/// (an empty one is local), dangling volumes are those no task uses.
pub(crate) fn volume_matches(volume: &v1::NodeVolume, filters: &Filters) -> bool {
    let driver = if volume.driver.is_empty() { "local" } else { volume.driver.as_str() };
    let dangling = volume.task_ids.is_empty();
    filters.pass("name", |v| volume.name.contains(v))
        && filters.pass("driver", |v| driver == v)
        && filters.pass("label", |v| label_matches(&volume.labels, v))
        && filters.pass("dangling", |v| dangling == matches!(v, "true" | "1"))
}

/// `hostnames` maps node IDs to hostnames (`node=` takes either); `services` service IDs to
/// names (`service=` takes either).
pub(crate) fn task_matches(
    task: &v1::Task,
    filters: &Filters,
    hostnames: &HashMap<&str, &str>,
    services: &HashMap<&str, &str>,
) -> bool {
    let name = task.annotations.as_ref().map(|a| a.name.as_str()).unwrap_or_default();
    let desired = TaskState::try_from(task.desired_state).unwrap_or(TaskState::New);
    let desired_matches = |v: &str| match v {
        "running" => desired <= TaskState::Running,
        "shutdown" => desired > TaskState::Running,
        "accepted" => desired == TaskState::Accepted,
        _ => false,
    };
    let hostname = hostnames.get(task.node_id.as_str()).copied().unwrap_or_default();
    let service = services.get(task.service_id.as_str()).copied().unwrap_or(task.service_name.as_str());
    filters.pass("name", |v| name.starts_with(v))
        && filters.pass("id", |v| task.id.starts_with(v))
        && filters.pass("desired-state", desired_matches)
        && filters.pass("node", |v| !task.node_id.is_empty() && (task.node_id.starts_with(v) || hostname == v))
        && filters.pass("service", |v| task.service_id.starts_with(v) || service == v)
}

#[cfg(test)]
mod tests;

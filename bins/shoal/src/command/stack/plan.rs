//! What a deploy does, worked out without I/O: the converted stack against what the cluster
//! has, to the networks, secrets and configs to create (or rotate), the services to prune, and
//! each service's step in `depends_on` order — create, update, or leave running untouched when
//! its spec is what the file says. Specs are compared in a normal form that ignores what the
//! manager fills in when it stores one (network and payload IDs, payload versions, the force
//! counter), so a redeploy of the same file changes nothing.

use std::collections::HashMap;

use anyhow::bail;
use shoal_api::v1;
use shoal_compose::Condition;

use super::convert::{self, Stack};
use super::{NAMESPACE_LABEL, in_stack};
use crate::command::payload::{Kind, Payload};
use crate::render;

/// What the cluster has (all of it: names must not clash with other stacks' objects).
#[derive(Debug, Clone, Default)]
pub(crate) struct Observed {
    pub(crate) networks: Vec<v1::Network>,
    pub(crate) secrets: Vec<Payload>,
    pub(crate) configs: Vec<Payload>,
    pub(crate) services: Vec<v1::Service>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// Networks to create.
    pub(crate) networks: Vec<v1::NetworkSpec>,
    /// Secrets, then configs, to create or update.
    pub(crate) payloads: Vec<PayloadStep>,
    /// The stack's services the file no longer has (only with `--prune`): name and ID.
    pub(crate) prune: Vec<(String, String)>,
    /// Every service of the file, dependencies first.
    pub(crate) services: Vec<ServiceStep>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PayloadStep {
    pub(crate) kind: Kind,
    pub(crate) name: String,
    pub(crate) action: PayloadAction,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PayloadAction {
    Create {
        labels: HashMap<String, String>,
        data: Vec<u8>,
    },
    /// Of the object as read: new labels (`None`: as they are) and a new payload (empty: as it
    /// is), which the manager stores as the next version, moving the services that use it.
    Update {
        read: Box<Payload>,
        labels: Option<HashMap<String, String>>,
        data: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceStep {
    pub(crate) name: String,
    pub(crate) action: ServiceAction,
    /// Services to wait for (with `--detach`, only their order is kept).
    pub(crate) waits_for: Vec<(String, Condition)>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ServiceAction {
    Create(Box<v1::ServiceSpec>),
    /// The service as read (its version and spec version go with the write) and its new spec.
    Update {
        read: Box<v1::Service>,
        spec: Box<v1::ServiceSpec>,
    },
    /// The stored spec is the file's: the service and its tasks are left as they are.
    Unchanged {
        read: Box<v1::Service>,
    },
}

/// SHA-256 of a payload, hex, as the manager reports a secret's or config's digest.
pub(crate) fn digest(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A spec without what the manager fills in when it stores it: network targets as names
/// (`network_names` maps IDs to names), secret and config references without IDs and payload
/// versions, and no force counter (deploy keeps the stored one).
pub(crate) fn normalised(spec: &v1::ServiceSpec, network_names: &HashMap<&str, &str>) -> v1::ServiceSpec {
    let mut spec = spec.clone();
    for attachment in &mut spec.networks {
        if let Some(name) = network_names.get(attachment.target.as_str()) {
            (*name).clone_into(&mut attachment.target);
        }
        attachment.aliases.sort();
    }
    spec.networks.sort_by(|a, b| a.target.cmp(&b.target));
    if let Some(task) = spec.task.as_mut() {
        task.force_update = 0;
        if let Some(container) = task.container.as_mut() {
            for secret in &mut container.secrets {
                secret.secret_id.clear();
                secret.data_version = 0;
            }
            for config in &mut container.configs {
                config.config_id.clear();
                config.data_version = 0;
            }
        }
    }
    spec
}

fn labels_of(spec: Option<&v1::Annotations>) -> HashMap<String, String> {
    spec.map(|a| a.labels.clone()).unwrap_or_default()
}

/// Whose an object is, for messages: `stack other` or `no stack`.
fn owner(labels: &HashMap<String, String>) -> String {
    labels.get(NAMESPACE_LABEL).map_or_else(|| "no stack".to_owned(), |s| format!("stack {s}"))
}

/// Works out the deploy of `stack` onto `observed`; refuses (before anything changes) external
/// objects that are missing, names taken by objects outside the stack, and mode changes.
pub(crate) fn plan(stack: &Stack, observed: &Observed, prune: bool) -> anyhow::Result<Plan> {
    let name = &stack.name;
    let mut networks = Vec::new();
    for network in &stack.networks {
        let existing = observed
            .networks
            .iter()
            .find(|n| n.spec.as_ref().and_then(|s| s.annotations.as_ref()).is_some_and(|a| a.name == network.name));
        match (&network.spec, existing) {
            (None, Some(_)) => {}
            (None, None) => bail!(
                "network {} is declared as external, but could not be found; create it first (shoal network create {})",
                network.name,
                network.name
            ),
            (Some(spec), None) => networks.push(spec.clone()),
            (Some(_), Some(existing)) => {
                let labels = labels_of(existing.spec.as_ref().and_then(|s| s.annotations.as_ref()));
                if !in_stack(&labels, name) {
                    bail!(
                        "network {} exists and belongs to {}, not to stack {name}; declare it external: true to use it, \
                         or give the stack's network another name",
                        network.name,
                        owner(&labels)
                    );
                }
            }
        }
    }
    let mut payloads = Vec::new();
    for (kind, wanted, stored) in
        [(Kind::Secret, &stack.secrets, &observed.secrets), (Kind::Config, &stack.configs, &observed.configs)]
    {
        for payload in wanted {
            if let Some(step) = payload_step(kind, name, payload, stored)? {
                payloads.push(step);
            }
        }
    }
    let network_names: HashMap<&str, &str> = observed
        .networks
        .iter()
        .filter_map(|n| Some((n.id.as_str(), n.spec.as_ref()?.annotations.as_ref()?.name.as_str())))
        .collect();
    let mut services = Vec::new();
    for service in &stack.services {
        let action = service_action(name, service, observed, &network_names)?;
        services.push(ServiceStep { name: service.name().to_owned(), action, waits_for: service.waits_for.clone() });
    }
    let mut pruned = Vec::new();
    if prune {
        for existing in &observed.services {
            let labels = labels_of(existing.spec.as_ref().and_then(|s| s.annotations.as_ref()));
            let existing_name = render::service_name(existing);
            if in_stack(&labels, name) && !stack.services.iter().any(|s| s.name() == existing_name) {
                pruned.push((existing_name.to_owned(), existing.id.clone()));
            }
        }
        pruned.sort();
    }
    Ok(Plan { networks, payloads, prune: pruned, services })
}

fn payload_step(
    kind: Kind,
    stack: &str,
    payload: &convert::Payload,
    stored: &[Payload],
) -> anyhow::Result<Option<PayloadStep>> {
    let noun = kind.noun();
    let existing = stored.iter().find(|p| p.name == payload.name);
    let step = |action| Some(PayloadStep { kind, name: payload.name.clone(), action });
    Ok(match (&payload.content, existing) {
        (None, Some(_)) => None,
        (None, None) => bail!(
            "{noun} {} is declared as external, but could not be found; create it first (shoal {noun} create {} FILE)",
            payload.name,
            payload.name
        ),
        (Some(content), None) => {
            step(PayloadAction::Create { labels: content.labels.clone(), data: content.data.clone() })
        }
        (Some(content), Some(existing)) => {
            if !in_stack(&existing.labels, stack) {
                bail!(
                    "{noun} {} exists and belongs to {}, not to stack {stack}; declare it external: true to use it, \
                     or give the stack's {noun} another name:",
                    payload.name,
                    owner(&existing.labels)
                );
            }
            let labels = (existing.labels != content.labels).then(|| content.labels.clone());
            let data = if existing.digest == digest(&content.data) { Vec::new() } else { content.data.clone() };
            if labels.is_none() && data.is_empty() {
                None
            } else {
                step(PayloadAction::Update { read: Box::new(existing.clone()), labels, data })
            }
        }
    })
}

fn service_action(
    stack: &str,
    service: &convert::Service,
    observed: &Observed,
    network_names: &HashMap<&str, &str>,
) -> anyhow::Result<ServiceAction> {
    let name = service.name();
    let Some(existing) = observed.services.iter().find(|s| render::service_name(s) == name) else {
        return Ok(ServiceAction::Create(Box::new(service.spec.clone())));
    };
    let stored = existing.spec.clone().unwrap_or_default();
    let labels = labels_of(stored.annotations.as_ref());
    if !in_stack(&labels, stack) {
        bail!(
            "service {name} exists and belongs to {}, not to stack {stack}; remove it (shoal service rm {name}) or \
             deploy the stack under another name",
            owner(&labels)
        );
    }
    let mode = |s: &v1::ServiceSpec| s.mode.as_ref().map(std::mem::discriminant);
    if mode(&stored) != mode(&service.spec) {
        bail!(
            "service {name}: its mode (replicated, global, job) cannot change in place; remove the service first \
             (shoal service rm {name}), then deploy again"
        );
    }
    if normalised(&stored, network_names) == normalised(&service.spec, network_names) {
        return Ok(ServiceAction::Unchanged { read: Box::new(existing.clone()) });
    }
    // Stack deploy has no --force: the counter stays, so only a changed spec replaces tasks.
    let mut spec = service.spec.clone();
    if let (Some(task), Some(stored_task)) = (spec.task.as_mut(), stored.task.as_ref()) {
        task.force_update = stored_task.force_update;
    }
    Ok(ServiceAction::Update { read: Box::new(existing.clone()), spec: Box::new(spec) })
}

#[cfg(test)]
mod tests;

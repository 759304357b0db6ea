//! `shoal service update SERVICE`: reads the service, lets the flags edit its spec (only what
//! they name changes) and writes it back with the version and spec version read (the manager
//! refuses a stale one), then follows the rolling update as docker prints it. Every flag is
//! checked before anything is sent: a bad one changes nothing.

use std::collections::HashMap;

use anyhow::Context as _;
use clap::Args;
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::endpoint::{EndpointEdit, EndpointUpdateArgs};
use super::opts::{
    ContainerEditArgs, SpecArgs, Words, edit_list, edit_map, missing, parse_count, parse_env, parse_label, parse_mount,
    parse_words, set_env,
};
use super::progress::{Kind, follow};
use super::{get_service, write_service};
use crate::command::api;

#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    /// The image the tasks run.
    #[arg(long)]
    image: Option<String>,
    /// The command's arguments, split as a shell would ("" for the image's).
    #[arg(long, value_parser = parse_words, allow_hyphen_values = true)]
    args: Option<Words>,
    /// Number of tasks (replicated mode); completions (replicated-job mode).
    #[arg(long, value_parser = parse_count, allow_hyphen_values = true)]
    replicas: Option<u64>,
    /// Job tasks run at once (replicated-job mode).
    #[arg(long = "max-concurrent", value_parser = parse_count, allow_hyphen_values = true)]
    max_concurrent: Option<u64>,
    /// Add or change an environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env-add", value_parser = parse_env)]
    env_add: Vec<String>,
    /// Remove an environment variable, by KEY (repeatable).
    #[arg(long = "env-rm")]
    env_rm: Vec<String>,
    /// Add or change a service label, KEY[=VALUE] (repeatable).
    #[arg(long = "label-add", value_parser = parse_label)]
    label_add: Vec<(String, String)>,
    /// Remove a service label, by KEY (repeatable).
    #[arg(long = "label-rm")]
    label_rm: Vec<String>,
    /// Add or change a container label, KEY[=VALUE] (repeatable).
    #[arg(long = "container-label-add", value_parser = parse_label)]
    container_label_add: Vec<(String, String)>,
    /// Remove a container label, by KEY (repeatable).
    #[arg(long = "container-label-rm")]
    container_label_rm: Vec<String>,
    /// Add a placement constraint, e.g. node.labels.zone==a (repeatable).
    #[arg(long = "constraint-add")]
    constraint_add: Vec<String>,
    /// Remove a placement constraint, as it was given (repeatable).
    #[arg(long = "constraint-rm")]
    constraint_rm: Vec<String>,
    /// Add a placement preference, spread=node.labels.KEY (repeatable).
    #[arg(long = "placement-pref-add")]
    placement_pref_add: Vec<String>,
    /// Remove a placement preference (repeatable).
    #[arg(long = "placement-pref-rm")]
    placement_pref_rm: Vec<String>,
    /// Add or replace (by target) a mount, as --mount of create (repeatable).
    #[arg(long = "mount-add", value_parser = parse_mount)]
    mount_add: Vec<v1::Mount>,
    /// Remove a mount, by its target path (repeatable).
    #[arg(long = "mount-rm")]
    mount_rm: Vec<String>,
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    container: ContainerEditArgs,
    #[command(flatten)]
    endpoint: EndpointUpdateArgs,
    /// Replace every task even if nothing else changes.
    #[arg(long)]
    force: bool,
    /// Return at once instead of following the update.
    #[arg(long, short)]
    detach: bool,
    /// Print no progress while following the update.
    #[arg(long, short)]
    quiet: bool,
    /// The service: its name, ID or a unique ID prefix.
    service: String,
}

/// Changes `spec` as the flags say (removals before additions, as docker's); `networks` maps
/// the networks the flags name to their IDs; `endpoint` is the networking flags, parsed.
pub(crate) fn edit_spec(
    args: &UpdateArgs,
    endpoint: &EndpointEdit,
    spec: &mut v1::ServiceSpec,
    networks: &HashMap<String, String>,
) -> Result<(), String> {
    match (&mut spec.mode, args.replicas, args.max_concurrent) {
        (_, None, None) => {}
        (Some(v1::service_spec::Mode::Replicated(r)), Some(replicas), None) => r.replicas = replicas,
        (Some(v1::service_spec::Mode::ReplicatedJob(j)), replicas, max_concurrent) => {
            j.total_completions = replicas.unwrap_or(j.total_completions);
            j.max_concurrent = max_concurrent.unwrap_or(j.max_concurrent);
        }
        (_, _, Some(_)) => return Err("--max-concurrent can only be used with replicated-job mode".to_owned()),
        (_, Some(_), _) => {
            return Err("--replicas can only be used with replicated and replicated-job modes".to_owned());
        }
    }
    let labels = &mut spec.annotations.get_or_insert_with(Default::default).labels;
    edit_map(labels, &args.label_rm, &args.label_add, "--label-rm", "label")?;
    args.spec.apply(spec)?;
    let task = spec.task.get_or_insert_with(Default::default);
    let container = task.container.get_or_insert_with(Default::default);
    if let Some(image) = &args.image {
        if image.trim().is_empty() {
            return Err("--image is empty: give an image reference, e.g. registry/web:v2".to_owned());
        }
        container.image = image.clone();
    }
    if let Some(Words(words)) = &args.args {
        container.args = words.clone();
    }
    for key in &args.env_rm {
        let key = key.split_once('=').map_or(key.as_str(), |(k, _)| k);
        let before = container.env.len();
        container.env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        if container.env.len() == before {
            return Err(missing("--env-rm", key, "environment variable"));
        }
    }
    for entry in &args.env_add {
        set_env(&mut container.env, entry);
    }
    edit_map(
        &mut container.labels,
        &args.container_label_rm,
        &args.container_label_add,
        "--container-label-rm",
        "container label",
    )?;
    for target in &args.mount_rm {
        let before = container.mounts.len();
        container.mounts.retain(|m| m.target != *target);
        if container.mounts.len() == before {
            return Err(missing("--mount-rm", target, "mount at"));
        }
    }
    for mount in &args.mount_add {
        match container.mounts.iter_mut().find(|m| m.target == mount.target) {
            Some(existing) => existing.clone_from(mount),
            None => container.mounts.push(mount.clone()),
        }
    }
    args.container.apply(container)?;
    let placement_flags =
        [&args.constraint_rm, &args.constraint_add, &args.placement_pref_rm, &args.placement_pref_add];
    if placement_flags.iter().any(|values| !values.is_empty()) {
        let placement = task.placement.get_or_insert_with(Default::default);
        edit_list(
            &mut placement.constraints,
            &args.constraint_rm,
            &args.constraint_add,
            "--constraint-rm",
            "constraint",
        )?;
        edit_list(
            &mut placement.preferences,
            &args.placement_pref_rm,
            &args.placement_pref_add,
            "--placement-pref-rm",
            "placement preference",
        )?;
    }
    if args.force {
        task.force_update = task.force_update.wrapping_add(1);
    }
    endpoint.apply(spec, networks)
}

/// The ID of each network the edits name (the spec holds IDs; names are resolved as the
/// manager resolves them).
async fn resolve_networks(
    control: &mut ControlClient<Channel>,
    edit: &EndpointEdit,
) -> anyhow::Result<HashMap<String, String>> {
    let mut ids = HashMap::new();
    for reference in edit.network_refs() {
        if ids.contains_key(reference) {
            continue;
        }
        let request = v1::GetNetworkRequest { network: reference.to_owned() };
        let network = match control.get_network(request).await {
            Ok(answer) => answer.into_inner().network.context("the manager answered without a network")?,
            Err(status) if status.code() == tonic::Code::NotFound => {
                anyhow::bail!("network {reference} not found; see shoal network ls")
            }
            Err(status) => return Err(api(status)),
        };
        ids.insert(reference.to_owned(), network.id);
    }
    Ok(ids)
}

pub(crate) async fn update(control: &mut ControlClient<Channel>, args: &UpdateArgs) -> anyhow::Result<()> {
    let endpoint = EndpointEdit::parse(&args.endpoint).map_err(anyhow::Error::msg)?;
    let service = get_service(control, args.service.clone()).await?;
    let networks = resolve_networks(control, &endpoint).await?;
    let mut spec = service.spec.clone().unwrap_or_default();
    edit_spec(args, &endpoint, &mut spec, &networks).map_err(anyhow::Error::msg)?;
    let updated = write_service(control, &service, Some(spec)).await?;
    println!("{}", args.service);
    if !args.detach {
        follow(control, &service, &updated, Kind::Update, args.quiet).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

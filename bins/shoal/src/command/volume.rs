//! `shoal volume …`: the named volumes on the nodes, as their agents report them — `ls` of every
//! node (or one, `--node`), `inspect`, and `rm` and `prune` on one node — with docker's output
//! and a NODE column, since a volume lives on one node (the same name on two nodes is two
//! volumes). The tables and JSON are pure functions of `ListVolumes`' answer.

use std::collections::BTreeMap;
use std::io::BufRead as _;

use clap::Subcommand;
use serde_json::json;
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::filter::{Filters, VOLUME_KEYS, volume_matches};
use super::network::confirmed;
use super::{ListArgs, api, reported};
use crate::format::{self, Column, Output, column};
use crate::render;

#[derive(Debug, Subcommand)]
pub(crate) enum VolumeCommand {
    /// List the volumes of every node, or of one.
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        list: ListArgs,
        /// Only the volumes of this node: its ID, a unique ID prefix or its hostname.
        #[arg(long)]
        node: Option<String>,
        /// Only volumes that match: name=PART, driver=local, label=KEY[=VALUE],
        /// dangling=true|false (no task uses it) (repeatable).
        #[arg(long, short)]
        filter: Vec<String>,
    },
    /// Show volumes in full (on every node that has one of the name, or on --node).
    Inspect {
        /// The node: its ID, a unique ID prefix or its hostname.
        #[arg(long)]
        node: Option<String>,
        /// Volume names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes from a node (refused for one a task there uses).
    #[command(alias = "remove")]
    Rm {
        /// The node: its ID, a unique ID prefix or its hostname.
        #[arg(long, required = true)]
        node: String,
        /// Volume names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove the volumes of a node that no task there uses.
    Prune {
        /// The node: its ID, a unique ID prefix or its hostname.
        #[arg(long, required = true)]
        node: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        force: bool,
    },
}

/// The placeholders of `volume ls --format`, in the order of [`volume_rows`]' cells.
pub(crate) const VOLUME_COLUMNS: &[Column] = &[
    column("Driver", "DRIVER"),
    column("Name", "VOLUME NAME"),
    column("Node", "NODE"),
    column("NodeID", "NODE ID"),
    column("Mountpoint", "MOUNTPOINT"),
    column("Labels", "LABELS"),
    column("Tasks", "TASKS"),
];

/// Each node's volumes with the node, by volume name and then hostname.
fn flatten(nodes: &[v1::NodeVolumes]) -> Vec<(&v1::NodeVolumes, &v1::NodeVolume)> {
    let mut pairs: Vec<(&v1::NodeVolumes, &v1::NodeVolume)> =
        nodes.iter().flat_map(|node| node.volumes.iter().map(move |volume| (node, volume))).collect();
    pairs.sort_by(|(a_node, a), (b_node, b)| {
        (a.name.as_str(), node_name(a_node)).cmp(&(b.name.as_str(), node_name(b_node)))
    });
    pairs
}

fn node_name(node: &v1::NodeVolumes) -> &str {
    if node.hostname.is_empty() { &node.node_id } else { &node.hostname }
}

fn driver(volume: &v1::NodeVolume) -> &str {
    if volume.driver.is_empty() { "local" } else { &volume.driver }
}

/// The volumes, each as its [`VOLUME_COLUMNS`] cells (labels `K=V` joined by commas, tasks by
/// commas too).
pub(crate) fn volume_rows(nodes: &[v1::NodeVolumes]) -> Vec<Vec<String>> {
    flatten(nodes)
        .into_iter()
        .map(|(node, volume)| {
            let labels: BTreeMap<&String, &String> = volume.labels.iter().collect();
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                driver(volume).to_owned(),
                volume.name.clone(),
                node_name(node).to_owned(),
                node.node_id.clone(),
                volume.mountpoint.clone(),
                labels.join(","),
                volume.task_ids.join(","),
            ]
        })
        .collect()
}

/// `volume ls`: docker's DRIVER and VOLUME NAME, and the NODE (its hostname).
pub(crate) fn volumes_table(nodes: &[v1::NodeVolumes]) -> String {
    let rows: Vec<Vec<String>> = volume_rows(nodes).into_iter().map(|row| row[..3].to_vec()).collect();
    render::table(&["DRIVER", "VOLUME NAME", "NODE"], &rows)
}

/// A volume as docker's `volume inspect` shows it, with its node and the tasks that use it.
pub(crate) fn volume_json(node: &v1::NodeVolumes, volume: &v1::NodeVolume) -> serde_json::Value {
    let created = shoal_api::from_timestamp(volume.created_at.as_ref()).map(render::rfc3339);
    json!({
        "CreatedAt": created,
        "Driver": driver(volume),
        "Labels": volume.labels.iter().collect::<BTreeMap<_, _>>(),
        "Mountpoint": volume.mountpoint,
        "Name": volume.name,
        "Options": volume.options.iter().collect::<BTreeMap<_, _>>(),
        "Scope": "local",
        "Node": node_name(node),
        "NodeID": node.node_id,
        "Tasks": volume.task_ids,
    })
}

/// What `volume prune` prints for the removed volumes (nothing when none was).
pub(crate) fn pruned(removed: &[String]) -> String {
    if removed.is_empty() {
        return String::new();
    }
    format!("Deleted Volumes:\n{}\n", removed.join("\n"))
}

async fn list(control: &mut ControlClient<Channel>, node: Option<&str>) -> anyhow::Result<Vec<v1::NodeVolumes>> {
    let request = v1::ListVolumesRequest { node: node.unwrap_or_default().to_owned() };
    Ok(control.list_volumes(request).await.map_err(api)?.into_inner().nodes)
}

pub(crate) async fn volume_command(control: &mut ControlClient<Channel>, command: VolumeCommand) -> anyhow::Result<()> {
    match command {
        VolumeCommand::Ls { list: args, node, filter } => {
            let output = args.output(VOLUME_COLUMNS)?;
            let filters = Filters::parse(&filter, VOLUME_KEYS).map_err(anyhow::Error::msg)?;
            let mut nodes = list(control, node.as_deref()).await?;
            for node in &mut nodes {
                node.volumes.retain(|v| volume_matches(v, &filters));
            }
            match (args.quiet, output) {
                (true, _) => volume_rows(&nodes).iter().for_each(|row| println!("{}", row[1])),
                (false, Output::Json) => {
                    let json = flatten(&nodes).into_iter().map(|(node, volume)| volume_json(node, volume)).collect();
                    println!("{}", serde_json::Value::Array(json));
                }
                (false, Output::Default) => print!("{}", volumes_table(&nodes)),
                (false, output) => print!("{}", format::render(&output, &volume_rows(&nodes))),
            }
        }
        VolumeCommand::Inspect { node, names } => {
            let nodes = list(control, node.as_deref()).await?;
            let volumes = flatten(&nodes);
            let mut found = Vec::new();
            let mut failed = 0;
            for name in &names {
                let before = found.len();
                found.extend(volumes.iter().filter(|(_, v)| v.name == *name).map(|(n, v)| volume_json(n, v)));
                if found.len() == before {
                    match &node {
                        Some(node) => eprintln!("Error: no such volume: {name} on node {node}"),
                        None => eprintln!("Error: no such volume: {name} (on no node)"),
                    }
                    failed += 1;
                }
            }
            if !found.is_empty() || failed == 0 {
                println!("{}", serde_json::to_string_pretty(&serde_json::Value::Array(found))?);
            }
            reported(failed)?;
        }
        VolumeCommand::Rm { node, names } => {
            // One request per volume, so that one refused does not keep the others (as docker).
            let mut failed = 0;
            for name in names {
                let request = v1::RemoveVolumesRequest { node: node.clone(), names: vec![name.clone()] };
                match control.remove_volumes(request).await {
                    Ok(_) => println!("{name}"),
                    Err(status) => {
                        eprintln!("Error: {}", status.message());
                        failed += 1;
                    }
                }
            }
            reported(failed)?;
        }
        VolumeCommand::Prune { node, force } => {
            if !force {
                print!(
                    "WARNING! This will remove all local volumes on node {node} not used by at least one container.\n\
                     Are you sure you want to continue? [y/N] "
                );
                std::io::Write::flush(&mut std::io::stdout())?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !confirmed(&answer) {
                    return Ok(());
                }
            }
            let request = v1::PruneVolumesRequest { node };
            let removed = control.prune_volumes(request).await.map_err(api)?.into_inner().removed;
            print!("{}", pruned(&removed));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

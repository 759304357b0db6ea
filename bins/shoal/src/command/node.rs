//! `shoal node …`: list, inspect, update, promote, demote, remove.

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::{Format, ListArgs, api};
use crate::render;

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// List nodes.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show a node in full.
    Inspect { node: String },
    /// Change a node's availability or labels.
    Update {
        /// active, pause or drain.
        #[arg(long, value_enum)]
        availability: Option<Availability>,
        /// Add or change a label, KEY=VALUE (repeatable).
        #[arg(long = "label-add")]
        label_add: Vec<String>,
        /// Remove a label (repeatable).
        #[arg(long = "label-rm")]
        label_rm: Vec<String>,
        node: String,
    },
    /// Make nodes managers (their process must be shoal-manager).
    Promote { nodes: Vec<String> },
    /// Make managers workers (refused for the last manager or when it would lose the quorum).
    Demote { nodes: Vec<String> },
    /// Remove a node from the cluster.
    #[command(alias = "remove")]
    Rm {
        /// Remove it even if it is still Ready.
        #[arg(long, short)]
        force: bool,
        nodes: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Availability {
    Active,
    Pause,
    Drain,
}

pub(crate) async fn get_node(control: &mut ControlClient<Channel>, node: String) -> anyhow::Result<v1::Node> {
    control
        .get_node(v1::GetNodeRequest { node })
        .await
        .map_err(api)?
        .into_inner()
        .node
        .context("the manager answered without a node")
}

pub(crate) async fn node_command(
    control: &mut ControlClient<Channel>,
    host: &str,
    command: NodeCommand,
) -> anyhow::Result<()> {
    match command {
        NodeCommand::Ls(list) => {
            let nodes = control.list_nodes(v1::ListNodesRequest::default()).await.map_err(api)?.into_inner().nodes;
            match (list.quiet, list.format) {
                (true, _) => nodes.iter().for_each(|n| println!("{}", n.id)),
                (false, Format::Json) => {
                    println!("{}", serde_json::Value::Array(nodes.iter().map(node_json).collect()))
                }
                (false, Format::Table) => print!("{}", render::nodes(&nodes, host)),
            }
        }
        NodeCommand::Inspect { node } => {
            let node = get_node(control, node).await?;
            println!("{}", serde_json::to_string_pretty(&node_json(&node))?);
        }
        NodeCommand::Update { availability, label_add, label_rm, node } => {
            let (id, _) = edit_node_spec(control, &node, |spec| {
                if let Some(a) = availability {
                    spec.availability = match a {
                        Availability::Active => v1::NodeAvailability::Active,
                        Availability::Pause => v1::NodeAvailability::Pause,
                        Availability::Drain => v1::NodeAvailability::Drain,
                    } as i32;
                }
                let labels = &mut spec.annotations.get_or_insert_with(Default::default).labels;
                for pair in &label_add {
                    let (k, v) = pair.split_once('=').unwrap_or((pair.as_str(), ""));
                    labels.insert(k.to_owned(), v.to_owned());
                }
                for key in &label_rm {
                    if labels.remove(key).is_none() {
                        bail!("key {key:?} doesn't exist in node's labels");
                    }
                }
                Ok(true)
            })
            .await?;
            println!("{id}");
        }
        NodeCommand::Promote { nodes } => set_roles(control, nodes, v1::NodeRole::Manager).await?,
        NodeCommand::Demote { nodes } => set_roles(control, nodes, v1::NodeRole::Worker).await?,
        NodeCommand::Rm { force, nodes } => {
            for node in nodes {
                control.remove_node(v1::RemoveNodeRequest { node: node.clone(), force }).await.map_err(api)?;
                println!("{node}");
            }
        }
    }
    Ok(())
}

/// Reads node `name`, lets `edit` change its spec (it returns whether anything is to be written)
/// and writes it back; returns the node's ID and whether it wrote. The managers update node
/// records too (status, manager status): a write that lost to one of theirs is read again and
/// edited again.
pub(crate) async fn edit_node_spec(
    control: &mut ControlClient<Channel>,
    name: &str,
    mut edit: impl FnMut(&mut v1::NodeSpec) -> anyhow::Result<bool>,
) -> anyhow::Result<(String, bool)> {
    let mut attempts = 0;
    loop {
        let mut node = get_node(control, name.to_owned()).await?;
        let mut spec = node.spec.take().unwrap_or_default();
        if !edit(&mut spec)? {
            return Ok((node.id, false));
        }
        let request = v1::UpdateNodeRequest {
            node: node.id.clone(),
            version: node.meta.as_ref().map_or(0, |m| m.version),
            spec: Some(spec),
        };
        match control.update_node(request).await {
            Ok(_) => return Ok((node.id, true)),
            Err(status) if status.code() == tonic::Code::Aborted && attempts < 5 => attempts += 1,
            Err(status) => return Err(api(status)),
        }
    }
}

/// `node promote|demote`: sets each node's desired role; the leader makes Raft membership and
/// the node's certificate follow.
pub(crate) async fn set_roles(
    control: &mut ControlClient<Channel>,
    nodes: Vec<String>,
    role: v1::NodeRole,
) -> anyhow::Result<()> {
    anyhow::ensure!(!nodes.is_empty(), "name at least one node");
    for name in nodes {
        let (_, changed) = edit_node_spec(control, &name, |spec| {
            let change = spec.desired_role != role as i32;
            spec.desired_role = role as i32;
            Ok(change)
        })
        .await?;
        if !changed {
            match role {
                v1::NodeRole::Manager => println!("Node {name} is already a manager."),
                v1::NodeRole::Worker => println!("Node {name} is already a worker."),
            }
            continue;
        }
        match role {
            v1::NodeRole::Manager => println!("Node {name} promoted to a manager in the cluster."),
            v1::NodeRole::Worker => println!("Manager {name} demoted in the cluster."),
        }
    }
    Ok(())
}

pub(crate) fn node_json(node: &v1::Node) -> serde_json::Value {
    let description = node.description.clone().unwrap_or_default();
    let spec = node.spec.clone().unwrap_or_default();
    serde_json::json!({
        "ID": node.id,
        "Hostname": description.hostname,
        "Status": node.status.as_ref().and_then(|s| v1::node_status::State::try_from(s.state).ok()).map(|s| s.as_str_name()),
        "Addr": node.status.as_ref().map(|s| s.addr.clone()),
        "Availability": v1::NodeAvailability::try_from(spec.availability).map(|a| a.as_str_name()).unwrap_or_default(),
        "Role": v1::NodeRole::try_from(node.role).map(|r| r.as_str_name()).unwrap_or_default(),
        "Labels": spec.annotations.map(|a| a.labels).unwrap_or_default(),
        "ManagerStatus": node.manager_status.as_ref().map(|m| serde_json::json!({"Leader": m.leader, "Addr": m.addr})),
        "Platform": description.platform.map(|p| serde_json::json!({"OS": p.os, "Architecture": p.architecture})),
    })
}

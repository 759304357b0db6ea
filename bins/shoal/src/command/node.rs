//! `shoal node …`: list, inspect, update, promote, demote, remove, and the tasks on nodes (`ps`).

use anyhow::{Context as _, bail};
use clap::{Subcommand, ValueEnum};
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::filter::{Filters, NODE_KEYS, node_matches};
use super::service::{TaskListArgs, print_tasks};
use super::{ListArgs, api};
use crate::format::{self, Output};
use crate::render;

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// List nodes.
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        list: ListArgs,
        /// Only nodes that match: name=PART-OF-HOSTNAME, id=PREFIX, label=KEY[=VALUE],
        /// role=manager|worker, membership=accepted|pending, availability=active|pause|drain
        /// (repeatable).
        #[arg(long, short)]
        filter: Vec<String>,
        /// Accepted for docker's sake: node IDs are never cut.
        #[arg(long = "no-trunc")]
        no_trunc: bool,
    },
    /// List the tasks on nodes (default: the node of the manager the CLI talks to, else the
    /// leader's; `self` names it too).
    Ps {
        #[command(flatten)]
        tasks: TaskListArgs,
        /// Nodes: IDs, unique ID prefixes, hostnames, or self.
        nodes: Vec<String>,
    },
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
        NodeCommand::Ls { list, filter, no_trunc: _ } => {
            let filters = Filters::parse(&filter, NODE_KEYS).map_err(anyhow::Error::msg)?;
            let output = list.output(render::NODE_COLUMNS)?;
            let mut nodes = control.list_nodes(v1::ListNodesRequest::default()).await.map_err(api)?.into_inner().nodes;
            nodes.retain(|n| node_matches(n, &filters));
            match (list.quiet, output) {
                (true, _) => render::node_rows(&nodes, host).iter().for_each(|row| println!("{}", row[0])),
                (false, Output::Json) => {
                    println!("{}", serde_json::Value::Array(nodes.iter().map(node_json).collect()))
                }
                (false, Output::Default) => print!("{}", render::nodes(&nodes, host)),
                (false, output) => print!("{}", format::render(&output, &render::node_rows(&nodes, host))),
            }
        }
        NodeCommand::Ps { tasks, nodes } => {
            let all = control.list_nodes(v1::ListNodesRequest::default()).await.map_err(api)?.into_inner().nodes;
            let ids = which_nodes(&all, &nodes, host).map_err(anyhow::Error::msg)?;
            let request = v1::ListTasksRequest { node_ids: ids, ..Default::default() };
            let listed = control.list_tasks(request).await.map_err(api)?.into_inner().tasks;
            let services =
                control.list_services(v1::ListServicesRequest::default()).await.map_err(api)?.into_inner().services;
            let names: std::collections::HashMap<&str, &str> =
                services.iter().map(|s| (s.id.as_str(), render::service_name(s))).collect();
            print_tasks(&listed, &all, &names, &tasks)?;
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

/// The IDs of the nodes `node ps` names: each by ID, unique ID prefix, hostname or `self`; none
/// named means `self`, the node of the manager at `host` (as `node ls` marks it), or else the
/// leader's node when the CLI talks to the cluster through an address no manager advertises.
pub(crate) fn which_nodes(nodes: &[v1::Node], names: &[String], host: &str) -> Result<Vec<String>, String> {
    let this = || {
        nodes
            .iter()
            .find(|n| render::is_self(n, host))
            .or_else(|| nodes.iter().find(|n| n.manager_status.as_ref().is_some_and(|m| m.leader)))
            .map(|n| n.id.clone())
            .ok_or_else(|| format!("no node has the manager address {host} and there is no leader; name a node"))
    };
    if names.is_empty() {
        return this().map(|id| vec![id]);
    }
    let mut ids = Vec::new();
    for name in names {
        if name == "self" {
            ids.push(this()?);
            continue;
        }
        let hostname = |n: &v1::Node| n.description.as_ref().is_some_and(|d| d.hostname == *name);
        let by_id: Vec<&v1::Node> = nodes.iter().filter(|n| n.id == *name).collect();
        let by_host: Vec<&v1::Node> = nodes.iter().filter(|n| hostname(n)).collect();
        let by_prefix: Vec<&v1::Node> = nodes.iter().filter(|n| n.id.starts_with(name.as_str())).collect();
        let found = [by_id, by_host, by_prefix].into_iter().find(|found| !found.is_empty());
        match found.as_deref() {
            Some([node]) => ids.push(node.id.clone()),
            Some(_) => return Err(format!("node {name} is ambiguous: give more of its ID")),
            None => return Err(format!("no such node: {name}; see shoal node ls")),
        }
    }
    Ok(ids)
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
        "Platform": description.platform.as_ref().map(|p| serde_json::json!({"OS": p.os, "Architecture": p.architecture})),
        // Docker's layout of what the node says of itself, with the load balancer its kernel
        // offers for VIPs and the routing mesh ("ipvs" or "nftables").
        "Description": {
            "Hostname": description.hostname,
            "Platform": description.platform.as_ref().map(|p| serde_json::json!({"OS": p.os, "Architecture": p.architecture})),
            "Resources": description.resources.as_ref().map(|r| serde_json::json!({"NanoCPUs": r.nano_cpus, "MemoryBytes": r.memory_bytes})),
            "Engine": description.engine.as_ref().map(|e| serde_json::json!({"EngineVersion": e.engine_version})),
            "LoadBalancer": description.load_balancer,
        },
    })
}

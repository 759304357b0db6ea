//! `shoal service ps SERVICE…` and what `node ps` shares with it: the task list with docker's
//! columns, `--filter` (name, id, desired-state, node, service), `--format`, `-q`, `--no-trunc`.

use std::collections::HashMap;
use std::time::SystemTime;

use clap::Args;
use shoal_api::v1::{self, TaskState, control_client::ControlClient};
use tonic::transport::Channel;

use super::{blocked, get_service};
use crate::command::filter::{Filters, TASK_KEYS, task_matches};
use crate::command::{ListArgs, api};
use crate::format::{self, Output};
use crate::render;

/// The options of every task list.
#[derive(Debug, Args)]
pub(crate) struct TaskListArgs {
    #[command(flatten)]
    list: ListArgs,
    /// Only tasks that match: name=PREFIX, id=PREFIX, desired-state=running|shutdown|accepted,
    /// node=ID|HOSTNAME, service=NAME|ID (repeatable).
    #[arg(long, short)]
    filter: Vec<String>,
    /// Print full IDs and errors.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PsArgs {
    #[command(flatten)]
    tasks: TaskListArgs,
    /// Services: names, IDs or unique ID prefixes.
    #[arg(required = true)]
    services: Vec<String>,
}

pub(crate) fn task_json(task: &v1::Task) -> serde_json::Value {
    let status = task.status.clone().unwrap_or_default();
    serde_json::json!({
        "ID": task.id, "Name": task.annotations.as_ref().map(|a| a.name.clone()), "NodeID": task.node_id,
        "ServiceID": task.service_id, "Slot": task.slot,
        "DesiredState": TaskState::try_from(task.desired_state).map(|s| s.label()).unwrap_or_default(),
        "State": TaskState::try_from(status.state).map(|s| s.label()).unwrap_or_default(),
        "Message": status.message, "Err": status.err, "SpecVersion": task.spec_version,
    })
}

/// Prints `tasks` as the options ask; `services` maps service IDs to names (for `service=`).
pub(crate) fn print_tasks(
    tasks: &[v1::Task],
    nodes: &[v1::Node],
    services: &HashMap<&str, &str>,
    args: &TaskListArgs,
) -> anyhow::Result<()> {
    let filters = Filters::parse(&args.filter, TASK_KEYS).map_err(anyhow::Error::msg)?;
    let output = args.list.output(render::TASK_COLUMNS)?;
    let hostnames: HashMap<&str, &str> = nodes
        .iter()
        .map(|n| (n.id.as_str(), n.description.as_ref().map(|d| d.hostname.as_str()).unwrap_or_default()))
        .collect();
    let tasks: Vec<v1::Task> =
        tasks.iter().filter(|t| task_matches(t, &filters, &hostnames, services)).cloned().collect();
    let rows = render::task_rows(&tasks, nodes, SystemTime::now(), args.no_trunc);
    match (args.list.quiet, output) {
        (true, _) => rows.iter().for_each(|row| println!("{}", row[0])),
        (false, Output::Json) => println!("{}", serde_json::Value::Array(tasks.iter().map(task_json).collect())),
        (false, Output::Default) => print!("{}", render::tasks(&tasks, nodes, SystemTime::now(), args.no_trunc)),
        (false, output) => print!("{}", format::render(&output, &rows)),
    }
    Ok(())
}

pub(crate) async fn ps(control: &mut ControlClient<Channel>, args: &PsArgs) -> anyhow::Result<()> {
    let mut found = Vec::new();
    for name in &args.services {
        let service = get_service(control, name.clone()).await?;
        if !service.allocation_error.is_empty() {
            // No task is made from a spec the allocator refused: say why.
            eprintln!("{}", blocked(&service));
        }
        found.push(service);
    }
    let request =
        v1::ListTasksRequest { service_ids: found.iter().map(|s| s.id.clone()).collect(), ..Default::default() };
    let tasks = control.list_tasks(request).await.map_err(api)?.into_inner().tasks;
    let nodes = control.list_nodes(v1::ListNodesRequest::default()).await.map_err(api)?.into_inner().nodes;
    let names: HashMap<&str, &str> = found.iter().map(|s| (s.id.as_str(), render::service_name(s))).collect();
    print_tasks(&tasks, &nodes, &names, &args.tasks)
}

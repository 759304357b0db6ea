//! `shoal stack ps STACK`: the tasks of the stack's services, as `service ps` lists them (its
//! filters, `--format`, `-q`, `--no-trunc`).

use std::collections::HashMap;

use clap::Args;
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::stack_services;
use crate::command::api;
use crate::command::service::{TaskListArgs, print_tasks};
use crate::render;

#[derive(Debug, Args)]
pub(crate) struct PsArgs {
    #[command(flatten)]
    tasks: TaskListArgs,
    /// The stack's name.
    stack: String,
}

pub(crate) async fn ps(control: &mut ControlClient<Channel>, args: &PsArgs) -> anyhow::Result<()> {
    let services = stack_services(control, &args.stack).await?;
    anyhow::ensure!(!services.is_empty(), "nothing found in stack: {} (see shoal stack ls)", args.stack);
    let request =
        v1::ListTasksRequest { service_ids: services.iter().map(|s| s.id.clone()).collect(), ..Default::default() };
    let tasks = control.list_tasks(request).await.map_err(api)?.into_inner().tasks;
    let nodes = control.list_nodes(v1::ListNodesRequest::default()).await.map_err(api)?.into_inner().nodes;
    let names: HashMap<&str, &str> = services.iter().map(|s| (s.id.as_str(), render::service_name(s))).collect();
    print_tasks(&tasks, &nodes, &names, &args.tasks)
}

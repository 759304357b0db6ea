//! `shoal service ls`: docker's columns, `--filter` (name, id, label, mode), `--format`, `-q`
//! and `--no-trunc`.

use clap::Args;
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::inspect::service_json;
use crate::command::filter::{Filters, SERVICE_KEYS, service_matches};
use crate::command::{ListArgs, api};
use crate::format::{self, Output};
use crate::render;

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    #[command(flatten)]
    list: ListArgs,
    /// Only services that match: name=PREFIX, id=PREFIX, label=KEY[=VALUE],
    /// mode=replicated|global|replicated-job|global-job (repeatable).
    #[arg(long, short)]
    filter: Vec<String>,
    /// Print full IDs.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
}

pub(crate) async fn ls(control: &mut ControlClient<Channel>, args: &LsArgs) -> anyhow::Result<()> {
    let filters = Filters::parse(&args.filter, SERVICE_KEYS).map_err(anyhow::Error::msg)?;
    let output = args.list.output(render::SERVICE_COLUMNS)?;
    let mut services =
        control.list_services(v1::ListServicesRequest::default()).await.map_err(api)?.into_inner().services;
    services.retain(|s| service_matches(s, &filters));
    let tasks = if services.is_empty() {
        Vec::new()
    } else {
        let request = v1::ListTasksRequest {
            service_ids: if filters.is_empty() { Vec::new() } else { services.iter().map(|s| s.id.clone()).collect() },
            ..Default::default()
        };
        control.list_tasks(request).await.map_err(api)?.into_inner().tasks
    };
    let rows = render::service_rows(&services, &tasks, args.no_trunc);
    match (args.list.quiet, output) {
        // The ID column, as docker's `-q`: cut unless --no-trunc.
        (true, _) => rows.iter().for_each(|row| println!("{}", row[0])),
        (false, Output::Json) => {
            println!("{}", serde_json::Value::Array(services.iter().map(service_json).collect()))
        }
        (false, Output::Default) => print!("{}", render::services(&services, &tasks, args.no_trunc)),
        (false, output) => print!("{}", format::render(&output, &rows)),
    }
    Ok(())
}

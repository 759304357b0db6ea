//! `shoal stack ls`: every stack (a value of the namespace label on services) and how many
//! services it has, docker's `NAME SERVICES`, with `--format`.

use std::collections::BTreeMap;

use clap::Args;
use serde_json::json;
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::NAMESPACE_LABEL;
use crate::command::api;
use crate::format::{self, Column, Output, column};
use crate::render;

/// The placeholders of `stack ls --format`.
pub(crate) const STACK_COLUMNS: &[Column] = &[column("Name", "NAME"), column("Services", "SERVICES")];

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// table (default), json, or a template: '{{.Name}}: {{.Services}}', 'table {{.Name}}'.
    #[arg(long)]
    format: Option<String>,
}

/// One row per stack, by name: its name and how many services carry its label.
pub(crate) fn stack_rows(services: &[v1::Service]) -> Vec<Vec<String>> {
    let mut stacks: BTreeMap<&str, usize> = BTreeMap::new();
    for service in services {
        let labels = service.spec.as_ref().and_then(|s| s.annotations.as_ref()).map(|a| &a.labels);
        if let Some(stack) = labels.and_then(|l| l.get(NAMESPACE_LABEL)) {
            *stacks.entry(stack.as_str()).or_default() += 1;
        }
    }
    stacks.into_iter().map(|(name, count)| vec![name.to_owned(), count.to_string()]).collect()
}

pub(crate) async fn ls(control: &mut ControlClient<Channel>, args: &LsArgs) -> anyhow::Result<()> {
    let output = Output::parse(args.format.as_deref(), STACK_COLUMNS).map_err(anyhow::Error::msg)?;
    let services = control.list_services(v1::ListServicesRequest::default()).await.map_err(api)?.into_inner().services;
    let rows = stack_rows(&services);
    match output {
        Output::Json => {
            let stacks: Vec<serde_json::Value> =
                rows.iter().map(|row| json!({"Name": row[0], "Services": row[1]})).collect();
            println!("{}", serde_json::Value::Array(stacks));
        }
        Output::Default => print!("{}", render::table(&["NAME", "SERVICES"], &rows)),
        output => print!("{}", format::render(&output, &rows)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, stack: Option<&str>) -> v1::Service {
        let labels = stack.map(|s| (NAMESPACE_LABEL.to_owned(), s.to_owned())).into_iter().collect();
        let annotations = Some(v1::Annotations { name: name.to_owned(), labels });
        v1::Service { spec: Some(v1::ServiceSpec { annotations, ..Default::default() }), ..Default::default() }
    }

    #[test]
    fn stacks_are_counted_by_their_label() {
        let services = [
            service("shop_web", Some("shop")),
            service("blog_web", Some("blog")),
            service("loose", None),
            service("shop_db", Some("shop")),
        ];
        assert_eq!(stack_rows(&services), [vec!["blog", "1"], vec!["shop", "2"]]);
        assert_eq!(render::table(&["NAME", "SERVICES"], &stack_rows(&services[2..3])), "NAME   SERVICES\n");
    }
}

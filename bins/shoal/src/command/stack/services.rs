//! `shoal stack services STACK`: `service ls` of the stack's services, with its `--filter`,
//! `--format`, `-q` and `--no-trunc`. The stack's services are picked here (by the namespace
//! label, then the filters given) and listed by `service ls` itself, by ID, so the columns,
//! templates and JSON are exactly that command's.

use clap::{Args, Parser};
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::stack_services;
use crate::command::filter::{Filters, SERVICE_KEYS, service_matches};
use crate::command::service::{ServiceCommand, service_command};
use crate::format::{self, Output};
use crate::render;

#[derive(Debug, Args)]
pub(crate) struct ServicesArgs {
    /// Only print IDs.
    #[arg(long, short)]
    quiet: bool,
    /// table (default), json, or a template: '{{.Name}}: {{.Replicas}}', 'table {{.ID}}\t{{.Name}}'.
    #[arg(long)]
    format: Option<String>,
    /// Only services that match: name=PREFIX (of the full name, STACK_web), id=PREFIX,
    /// label=KEY[=VALUE], mode=replicated|global|replicated-job|global-job (repeatable).
    #[arg(long, short)]
    filter: Vec<String>,
    /// Print full IDs.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// The stack's name.
    stack: String,
}

/// `service ls` as the service noun parses it.
#[derive(Debug, Parser)]
#[command(no_binary_name = true)]
struct ServiceLs {
    #[command(subcommand)]
    command: ServiceCommand,
}

/// The `service ls` arguments that list exactly `ids` as `args` asks.
fn service_ls_args(args: &ServicesArgs, ids: &[&str]) -> Vec<String> {
    let mut argv = vec!["ls".to_owned()];
    for id in ids {
        argv.extend(["--filter".to_owned(), format!("id={id}")]);
    }
    if args.quiet {
        argv.push("--quiet".to_owned());
    }
    if let Some(format) = &args.format {
        argv.extend(["--format".to_owned(), format.clone()]);
    }
    if args.no_trunc {
        argv.push("--no-trunc".to_owned());
    }
    argv
}

pub(crate) async fn services(
    control: &mut ControlClient<Channel>,
    channel: Channel,
    args: &ServicesArgs,
) -> anyhow::Result<()> {
    let filters = Filters::parse(&args.filter, SERVICE_KEYS).map_err(anyhow::Error::msg)?;
    let output = Output::parse(args.format.as_deref(), render::SERVICE_COLUMNS).map_err(anyhow::Error::msg)?;
    let services = stack_services(control, &args.stack).await?;
    if services.is_empty() {
        eprintln!("Nothing found in stack: {}", args.stack);
        return Ok(());
    }
    let matching: Vec<&v1::Service> = services.iter().filter(|s| service_matches(s, &filters)).collect();
    if matching.is_empty() {
        // `service ls` without an ID filter would list every service: print the empty list here.
        match (args.quiet, &output) {
            (true, _) => {}
            (false, Output::Json) => println!("[]"),
            (false, Output::Default) => print!("{}", render::services(&[], &[], args.no_trunc)),
            (false, output) => print!("{}", format::render(output, &[])),
        }
        return Ok(());
    }
    let ids: Vec<&str> = matching.iter().map(|s| s.id.as_str()).collect();
    let command = ServiceLs::try_parse_from(service_ls_args(args, &ids)).map_err(|e| anyhow::anyhow!("{e}"))?.command;
    service_command(control, channel, command).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_ls_arguments_parse() {
        let args = ServicesArgs {
            quiet: false,
            format: Some("table {{.Name}}".to_owned()),
            filter: Vec::new(),
            no_trunc: true,
            stack: "shop".to_owned(),
        };
        let argv = service_ls_args(&args, &["a1", "b2"]);
        assert_eq!(argv, ["ls", "--filter", "id=a1", "--filter", "id=b2", "--format", "table {{.Name}}", "--no-trunc"]);
        let parsed = ServiceLs::try_parse_from(argv).expect("parses");
        assert!(matches!(parsed.command, ServiceCommand::Ls(_)));
    }
}

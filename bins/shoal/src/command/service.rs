//! `shoal service …`, one module per verb as docker/cli keeps `cli/command/service/`: create,
//! update, rollback, ls, ps, inspect, scale, rm; `opts` holds the flags create and update
//! share, `endpoint` the networking flags, `progress` the waiting and its output. This module
//! holds the subcommands and what the verbs share: reading and writing a service.

mod create;
mod endpoint;
mod inspect;
mod logs;
mod ls;
mod opts;
mod progress;
mod ps;
mod rollback;
mod scale;
mod update;

use anyhow::Context as _;
use clap::Subcommand;
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use self::create::{CreateArgs, create};
use self::inspect::{InspectArgs, inspect};
use self::logs::{LogsArgs, logs};
use self::ls::{LsArgs, ls};
use self::ps::{PsArgs, ps};
use self::rollback::{RollbackArgs, rollback};
use self::scale::{ScaleArgs, scale};
use self::update::{UpdateArgs, update};
use super::api;
use crate::render;

pub(crate) use self::inspect::go_duration;
pub(crate) use self::logs::{Since, timestamp};
pub(crate) use self::opts::{default_restart_policy, default_update_config, parse_label};
pub(crate) use self::ps::{TaskListArgs, print_tasks};

#[derive(Debug, Subcommand)]
pub(crate) enum ServiceCommand {
    /// Create a service.
    Create(Box<CreateArgs>),
    /// Change a service: only what the flags name changes; tasks are replaced by a rolling update.
    Update(Box<UpdateArgs>),
    /// Go back to a service's previous spec.
    Rollback(RollbackArgs),
    /// List services.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// List the tasks of services.
    Ps(PsArgs),
    /// Show a service in full.
    Inspect(InspectArgs),
    /// Fetch the logs of a service or task: every task's output, from every node.
    Logs(LogsArgs),
    /// Set the number of replicas: NAME=N (several at once).
    Scale(ScaleArgs),
    /// Remove services.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
}

pub(crate) async fn get_service(
    control: &mut ControlClient<Channel>,
    service: impl Into<String>,
) -> anyhow::Result<v1::Service> {
    let request = v1::GetServiceRequest { service: service.into() };
    control
        .get_service(request)
        .await
        .map_err(api)?
        .into_inner()
        .service
        .context("the manager answered without a service")
}

/// Sends `spec` as the update of `read` (the service as read), or a rollback when `spec` is
/// `None`; a refusal because it changed since is said in words that tell what to do.
pub(crate) async fn write_service(
    control: &mut ControlClient<Channel>,
    read: &v1::Service,
    spec: Option<v1::ServiceSpec>,
) -> anyhow::Result<v1::Service> {
    // The version and spec version read: the manager refuses the write if the spec changed since.
    let request = v1::UpdateServiceRequest {
        service: read.id.clone(),
        version: read.meta.as_ref().map_or(0, |m| m.version),
        rollback: spec.is_none(),
        spec,
        spec_version: read.spec_version,
    };
    match control.update_service(request).await {
        Ok(answer) => answer.into_inner().service.context("the manager answered without a service"),
        Err(status) if status.code() == tonic::Code::Aborted => anyhow::bail!(
            "service {} was changed by someone else since it was read; run the command again",
            render::service_name(read)
        ),
        Err(status) => Err(api(status)),
    }
}

/// Why a service gets no (new) tasks: its endpoint cannot be allocated.
pub(crate) fn blocked(service: &v1::Service) -> String {
    let name = render::service_name(service);
    format!("service {name} is blocked: {} (see shoal service inspect {name})", service.allocation_error)
}

pub(crate) async fn service_command(
    control: &mut ControlClient<Channel>,
    channel: Channel,
    command: ServiceCommand,
) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Create(args) => create(control, &args).await,
        ServiceCommand::Update(args) => update(control, &args).await,
        ServiceCommand::Rollback(args) => rollback(control, &args).await,
        ServiceCommand::Ls(args) => ls(control, &args).await,
        ServiceCommand::Ps(args) => ps(control, &args).await,
        ServiceCommand::Inspect(args) => inspect(control, &args).await,
        ServiceCommand::Logs(args) => logs(channel, control, &args).await,
        ServiceCommand::Scale(args) => scale(control, &args).await,
        ServiceCommand::Rm { services } => {
            for service in services {
                control.remove_service(v1::RemoveServiceRequest { service: service.clone() }).await.map_err(api)?;
                println!("{service}");
            }
            Ok(())
        }
    }
}

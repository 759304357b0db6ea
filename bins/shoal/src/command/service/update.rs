//! `shoal service update SERVICE`: reads the service, lets each group of flags edit its spec,
//! and writes it back with the version read (the manager refuses a stale one), then waits for
//! convergence as `create` does. Only the networking flags exist yet; each further group of
//! docker's flags (container, resources, placement, update config …) is one more flattened
//! `Args` struct with a pure `apply` on the spec, called in `edit_spec`.

use std::collections::HashMap;

use anyhow::Context as _;
use clap::Args;
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::endpoint::{EndpointEdit, EndpointUpdateArgs};
use super::{converge, get_service};
use crate::command::api;

#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    #[command(flatten)]
    endpoint: EndpointUpdateArgs,
    /// Return at once instead of waiting for the service to converge.
    #[arg(long, short)]
    detach: bool,
    /// The service: its name, ID or a unique ID prefix.
    service: String,
}

/// Every edit the flags ask for, parsed before anything is read.
struct Edits {
    endpoint: EndpointEdit,
}

impl Edits {
    fn parse(args: &UpdateArgs) -> anyhow::Result<Self> {
        Ok(Self { endpoint: EndpointEdit::parse(&args.endpoint).map_err(anyhow::Error::msg)? })
    }

    /// Applies them to `spec`; `networks` maps the networks named to their IDs.
    fn edit_spec(&self, spec: &mut v1::ServiceSpec, networks: &HashMap<String, String>) -> anyhow::Result<()> {
        self.endpoint.apply(spec, networks).map_err(anyhow::Error::msg)
    }
}

/// The ID of each network the edits name (the spec holds IDs; names are resolved as the
/// manager resolves them).
async fn resolve_networks(
    control: &mut ControlClient<Channel>,
    edits: &Edits,
) -> anyhow::Result<HashMap<String, String>> {
    let mut ids = HashMap::new();
    for reference in edits.endpoint.network_refs() {
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
    let edits = Edits::parse(args)?;
    let service = get_service(control, args.service.clone()).await?;
    let networks = resolve_networks(control, &edits).await?;
    let mut spec = service.spec.clone().unwrap_or_default();
    edits.edit_spec(&mut spec, &networks)?;
    let request = v1::UpdateServiceRequest {
        service: service.id.clone(),
        version: service.meta.as_ref().map_or(0, |m| m.version),
        spec: Some(spec),
        rollback: false,
        spec_version: service.spec_version,
    };
    control.update_service(request).await.map_err(api)?;
    println!("{}", args.service);
    if !args.detach {
        converge(control, &service.id).await?;
    }
    Ok(())
}

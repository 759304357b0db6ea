//! `shoal join-token worker|manager [--rotate] [-q]`.

use anyhow::Context as _;
use clap::ValueEnum;
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::api;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TokenRole {
    Worker,
    Manager,
}

pub(crate) async fn join_token(
    control: &mut ControlClient<Channel>,
    host: &str,
    role: TokenRole,
    rotate: bool,
    quiet: bool,
) -> anyhow::Result<()> {
    let mut cluster =
        control.get_cluster(v1::GetClusterRequest {}).await.map_err(api)?.into_inner().cluster.context("no cluster")?;
    if rotate {
        let request = v1::UpdateClusterRequest {
            version: cluster.meta.as_ref().map_or(0, |m| m.version),
            spec: None,
            rotate_worker_token: role == TokenRole::Worker,
            rotate_manager_token: role == TokenRole::Manager,
            ..Default::default()
        };
        cluster = control.update_cluster(request).await.map_err(api)?.into_inner().cluster.context("no cluster")?;
        if !quiet {
            println!(
                "Successfully rotated {} join token.\n",
                if role == TokenRole::Worker { "worker" } else { "manager" }
            );
        }
    }
    let tokens = cluster.join_tokens.unwrap_or_default();
    let (token, binary, what) = match role {
        TokenRole::Worker => (tokens.worker, "shoal-agent", "a worker"),
        TokenRole::Manager => (tokens.manager, "shoal-manager", "a manager"),
    };
    if quiet {
        println!("{token}");
    } else {
        println!(
            "To add {what} to this cluster, run the following command:\n\n    {binary} join --token {token} {host}\n"
        );
    }
    Ok(())
}

//! `shoal service rollback SERVICE`: back to the spec before the last update (the manager keeps
//! it, and refuses when there is none), replaced by a rolling update under the rollback config,
//! followed as docker prints it.

use clap::Args;
use shoal_api::v1::control_client::ControlClient;
use tonic::transport::Channel;

use super::progress::{Kind, follow};
use super::{get_service, write_service};

#[derive(Debug, Args)]
pub(crate) struct RollbackArgs {
    /// Return at once instead of following the rollback.
    #[arg(long, short)]
    detach: bool,
    /// Print no progress while following the rollback.
    #[arg(long, short)]
    quiet: bool,
    /// The service: its name, ID or a unique ID prefix.
    service: String,
}

pub(crate) async fn rollback(control: &mut ControlClient<Channel>, args: &RollbackArgs) -> anyhow::Result<()> {
    let service = get_service(control, args.service.clone()).await?;
    let rolled = write_service(control, &service, None).await?;
    println!("{}", args.service);
    if !args.detach {
        follow(control, &service, &rolled, Kind::Rollback, args.quiet).await?;
    }
    Ok(())
}

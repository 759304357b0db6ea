//! `shoal service scale NAME=N…`: sets each service's replicas (a replicated service) or
//! completions (a replicated job) and waits for it unless `--detach`.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use clap::Args;
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::progress::converge;
use super::{get_service, write_service};

#[derive(Debug, Args)]
pub(crate) struct ScaleArgs {
    /// Return at once instead of waiting for convergence.
    #[arg(long, short)]
    detach: bool,
    /// SERVICE=REPLICAS, one or more.
    #[arg(required = true)]
    scales: Vec<String>,
}

/// `web=3 api=2` as a map; the last value of a name given twice counts.
pub(crate) fn parse_scales(scales: &[String]) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut targets = BTreeMap::new();
    for pair in scales {
        let (name, n) =
            pair.split_once('=').with_context(|| format!("invalid scale {pair:?}: expected SERVICE=REPLICAS"))?;
        let n: u64 =
            n.parse().with_context(|| format!("invalid replicas {n:?} in {pair:?}: expected a whole number"))?;
        targets.insert(name.to_owned(), n);
    }
    Ok(targets)
}

pub(crate) async fn scale(control: &mut ControlClient<Channel>, args: &ScaleArgs) -> anyhow::Result<()> {
    let targets = parse_scales(&args.scales)?;
    for (name, replicas) in targets {
        let service = get_service(control, name.clone()).await?;
        let mut spec = service.spec.clone().unwrap_or_default();
        match spec.mode {
            Some(v1::service_spec::Mode::Replicated(ref mut r)) => r.replicas = replicas,
            _ => bail!("{name}: scale can only be used with replicated mode"),
        }
        write_service(control, &service, Some(spec)).await?;
        println!("{name} scaled to {replicas}");
        if !args.detach {
            converge(control, &service.id, false).await?;
        }
    }
    Ok(())
}

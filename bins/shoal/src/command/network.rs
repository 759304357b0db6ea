//! `shoal network …`: create, list, inspect, remove and prune overlay networks, with docker's
//! flags and output (`docker network create -d overlay …`).

use std::collections::BTreeMap;
use std::io::BufRead as _;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::filter::{Filters, NETWORK_KEYS, network_matches};
use super::{ListArgs, api, reported};
use crate::format::{self, Output};
use crate::render;

#[derive(Debug, Subcommand)]
pub(crate) enum NetworkCommand {
    /// Create a network.
    Create(Box<CreateArgs>),
    /// List networks.
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        list: ListArgs,
        /// Only networks that match: name=…, id=…, driver=…, label=KEY[=VALUE], scope=swarm
        /// (repeatable; one key given twice matches either value).
        #[arg(long, short)]
        filter: Vec<String>,
        /// Print full IDs.
        #[arg(long = "no-trunc")]
        no_trunc: bool,
    },
    /// Show networks in full, with their peers (the nodes that host them).
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks (refused for one a service uses).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove every network no service uses (never the ingress network).
    Prune {
        /// Do not ask for confirmation.
        #[arg(long, short)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Driver: overlay (the only one).
    #[arg(long, short, default_value = "overlay")]
    driver: String,
    /// Subnet in CIDR form, e.g. 10.0.9.0/24 (default: one from the cluster's address pool).
    #[arg(long)]
    subnet: Option<String>,
    /// Gateway address in the subnet (default: its first address).
    #[arg(long)]
    gateway: Option<String>,
    /// Part of the subnet that tasks' and VIPs' addresses come from, in CIDR form.
    #[arg(long = "ip-range")]
    ip_range: Option<String>,
    /// Standalone containers may attach (every task may).
    #[arg(long)]
    attachable: bool,
    /// No traffic to outside the cluster.
    #[arg(long)]
    internal: bool,
    /// The routing mesh's network (at most one exists).
    #[arg(long)]
    ingress: bool,
    /// Driver option KEY=VALUE, e.g. mtu=1400 (repeatable).
    #[arg(long = "opt", short = 'o')]
    opt: Vec<String>,
    /// Label KEY=VALUE (repeatable).
    #[arg(long)]
    label: Vec<String>,
    /// Network name.
    name: String,
}

/// Docker's name for the MTU option; Shoal's manager calls it `mtu`.
const DOCKER_MTU: &str = "com.docker.network.driver.mtu";
/// Where docker shows an overlay network's VNI.
const DOCKER_VNI: &str = "com.docker.network.driver.overlay.vxlanid_list";

/// `KEY=VALUE` pairs; `bare` says whether `KEY` alone is taken (as an empty value).
fn key_values(flag: &str, pairs: &[String], bare: bool) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for pair in pairs {
        match pair.split_once('=') {
            Some(("", _)) => return Err(format!("invalid {flag} {pair:?}: the key is empty")),
            Some((key, value)) => map.insert(key.to_owned(), value.to_owned()),
            None if bare && !pair.is_empty() => map.insert(pair.clone(), String::new()),
            None => return Err(format!("invalid {flag} {pair:?}: expected KEY=VALUE, e.g. {flag} mtu=1400")),
        };
    }
    Ok(map)
}

/// The spec `shoal network create` sends.
pub(crate) fn network_spec(args: &CreateArgs) -> Result<v1::NetworkSpec, String> {
    // `--opt encrypted` alone, as docker takes it; other options need a value.
    let opts: Vec<String> =
        args.opt.iter().map(|o| if o == "encrypted" { "encrypted=".to_owned() } else { o.clone() }).collect();
    let mut options = key_values("--opt", &opts, false)?;
    if let Some(mtu) = options.remove(DOCKER_MTU) {
        options.insert("mtu".to_owned(), mtu);
    }
    Ok(v1::NetworkSpec {
        annotations: Some(v1::Annotations {
            name: args.name.clone(),
            labels: key_values("--label", &args.label, true)?.into_iter().collect(),
        }),
        driver: args.driver.clone(),
        ipam: Some(v1::IpamConfig {
            subnet: args.subnet.clone().unwrap_or_default(),
            gateway: args.gateway.clone().unwrap_or_default(),
            ip_range: args.ip_range.clone().unwrap_or_default(),
        }),
        attachable: args.attachable,
        internal: args.internal,
        ingress: args.ingress,
        options: options.into_iter().collect(),
    })
}

/// Docker's answer to `[y/N]`.
pub(crate) fn confirmed(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// What `network prune` prints for the removed networks (nothing when none was).
pub(crate) fn pruned(removed: &[String]) -> String {
    if removed.is_empty() {
        return String::new();
    }
    format!("Deleted Networks:\n{}\n", removed.join("\n"))
}

/// A network as `docker network inspect` shows it; `peers` from `GetNetwork`.
pub(crate) fn network_json(network: &v1::Network, peers: &[v1::NetworkPeerSummary]) -> serde_json::Value {
    let spec = network.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.unwrap_or_default();
    let ipam = spec.ipam.unwrap_or_default();
    // The allocation once there is one; until then what was asked for.
    let (subnet, gateway, ip_range) = match &network.allocation {
        Some(a) => (a.subnet.clone(), a.gateway.clone(), a.ip_range.clone()),
        None => (ipam.subnet, ipam.gateway, ipam.ip_range),
    };
    let mut config = serde_json::Map::new();
    if !subnet.is_empty() {
        config.insert("Subnet".into(), subnet.into());
    }
    if !gateway.is_empty() {
        config.insert("Gateway".into(), gateway.into());
    }
    if !ip_range.is_empty() {
        config.insert("IPRange".into(), ip_range.into());
    }
    let config = if config.is_empty() { vec![] } else { vec![serde_json::Value::Object(config)] };
    // Shoal's `mtu` under docker's name; the allocated MTU once there is one.
    let mut options: BTreeMap<String, String> = spec
        .options
        .into_iter()
        .map(|(key, value)| (if key == "mtu" { DOCKER_MTU.to_owned() } else { key }, value))
        .collect();
    if let Some(allocation) = &network.allocation {
        options.insert(DOCKER_VNI.to_owned(), allocation.vni.to_string());
        options.insert(DOCKER_MTU.to_owned(), allocation.mtu.to_string());
    }
    let peers: Vec<serde_json::Value> = peers
        .iter()
        .map(|p| {
            serde_json::json!({"Name": p.hostname, "IP": p.node_addr, "NodeID": p.node_id, "Endpoints": p.endpoints})
        })
        .collect();
    let created = shoal_api::from_timestamp(network.meta.as_ref().and_then(|m| m.created_at.as_ref()));
    let mut json = serde_json::json!({
        "Name": annotations.name,
        "Id": network.id,
        "Created": created.map(render::rfc3339).unwrap_or_default(),
        "Scope": "swarm",
        "Driver": spec.driver,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": config},
        "Internal": spec.internal,
        "Attachable": spec.attachable,
        "Ingress": spec.ingress,
        "Options": options,
        "Labels": annotations.labels.into_iter().collect::<BTreeMap<_, _>>(),
        "Peers": peers,
    });
    if !network.allocation_error.is_empty() {
        json["AllocationError"] = network.allocation_error.clone().into();
    }
    json
}

pub(crate) async fn network_command(
    control: &mut ControlClient<Channel>,
    command: NetworkCommand,
) -> anyhow::Result<()> {
    match command {
        NetworkCommand::Create(args) => {
            let spec = network_spec(&args).map_err(anyhow::Error::msg)?;
            let network = control
                .create_network(v1::CreateNetworkRequest { spec: Some(spec) })
                .await
                .map_err(api)?
                .into_inner()
                .network
                .context("the manager answered without a network")?;
            println!("{}", network.id);
        }
        NetworkCommand::Ls { list, filter, no_trunc } => {
            let output = list.output(render::NETWORK_COLUMNS)?;
            let filters = Filters::parse(&filter, NETWORK_KEYS).map_err(anyhow::Error::msg)?;
            let mut networks =
                control.list_networks(v1::ListNetworksRequest::default()).await.map_err(api)?.into_inner().networks;
            networks.retain(|n| network_matches(n, &filters));
            match (list.quiet, output) {
                (true, _) => print!("{}", render::network_ids(&networks, no_trunc)),
                (false, Output::Json) => {
                    println!("{}", serde_json::Value::Array(networks.iter().map(|n| network_json(n, &[])).collect()))
                }
                (false, Output::Default) => print!("{}", render::networks(&networks, no_trunc)),
                (false, output) => print!("{}", format::render(&output, &render::network_rows(&networks, no_trunc))),
            }
        }
        NetworkCommand::Inspect { networks } => {
            // As docker: what was found is printed, each name not found is an error.
            let mut found = Vec::new();
            let mut failed = 0;
            for name in networks {
                match control.get_network(v1::GetNetworkRequest { network: name }).await {
                    Ok(answer) => {
                        let answer = answer.into_inner();
                        if let Some(network) = &answer.network {
                            found.push(network_json(network, &answer.peers));
                        }
                    }
                    Err(status) => {
                        eprintln!("Error: {}", status.message());
                        failed += 1;
                    }
                }
            }
            if !found.is_empty() || failed == 0 {
                println!("{}", serde_json::to_string_pretty(&serde_json::Value::Array(found))?);
            }
            reported(failed)?;
        }
        NetworkCommand::Rm { networks } => {
            let mut failed = 0;
            for name in networks {
                match control.remove_network(v1::RemoveNetworkRequest { network: name.clone() }).await {
                    Ok(_) => println!("{name}"),
                    Err(status) => {
                        eprintln!("Error: {}", status.message());
                        failed += 1;
                    }
                }
            }
            reported(failed)?;
        }
        NetworkCommand::Prune { force } => {
            if !force {
                print!(
                    "WARNING! This will remove all custom networks not used by at least one container.\n\
                     Are you sure you want to continue? [y/N] "
                );
                std::io::Write::flush(&mut std::io::stdout())?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !confirmed(&answer) {
                    return Ok(());
                }
            }
            let removed = control.prune_networks(v1::PruneNetworksRequest {}).await.map_err(api)?.into_inner().removed;
            print!("{}", pruned(&removed));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! `shoal stack deploy -c FILE… [--prune] [--resolve-image …] [--detach] STACK`: loads and
//! converts the files, checks every spec as the manager will, reads the cluster, plans, then
//! creates the networks, secrets and configs, prunes, and creates or updates the services in
//! `depends_on` order — waiting for each one's conditions unless `--detach` — and at the end
//! waits for every service to converge. Each step prints docker's line.

use std::collections::HashMap;

use anyhow::{Context as _, anyhow};
use clap::{ArgAction, Args, ValueEnum};
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::plan::{self, Observed, PayloadAction, ServiceAction};
use super::wait::{self, Watched};
use super::{ComposeFiles, check_stack_name, convert};
use crate::command::api;
use crate::command::payload::{Kind, Payload};
use crate::command::service::{get_service, write_service};

/// `--resolve-image`, as docker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ResolveImage {
    Always,
    Changed,
    Never,
}

#[derive(Debug, Args)]
pub(crate) struct DeployArgs {
    #[command(flatten)]
    files: ComposeFiles,
    /// Remove the stack's services that the files no longer have.
    #[arg(long)]
    prune: bool,
    /// Pin each service to the digest its image's tag names now, asked of the registry through
    /// the manager: always, changed (only images that differ from the last deploy's) or never.
    /// An image that cannot be resolved is sent as written, with a warning.
    #[arg(long = "resolve-image", value_name = "MODE", value_enum, default_value = "always")]
    resolve_image: ResolveImage,
    /// Return once every service is created or updated, without waiting for depends_on
    /// conditions (services are still created in their order) nor for convergence;
    /// --detach=false (the default) waits.
    #[arg(
        long,
        short,
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        require_equals = true
    )]
    detach: bool,
    /// Print no progress while waiting.
    #[arg(long, short)]
    quiet: bool,
    /// Give up waiting (for depends_on conditions and for convergence) after this long, e.g.
    /// 5m, naming the services that are not there yet and why; what was deployed stays. No
    /// limit unless given.
    #[arg(long, value_name = "DURATION", value_parser = crate::command::parse_duration)]
    wait_timeout: Option<std::time::Duration>,
    /// The stack's name, prefixed to its objects' names (STACK_web).
    stack: String,
}

/// Everything the plan is compared with.
async fn observe(control: &mut ControlClient<Channel>) -> anyhow::Result<Observed> {
    let networks = control.list_networks(v1::ListNetworksRequest::default()).await.map_err(api)?.into_inner().networks;
    let secrets = control.list_secrets(v1::ListSecretsRequest::default()).await.map_err(api)?.into_inner().secrets;
    let configs = control.list_configs(v1::ListConfigsRequest::default()).await.map_err(api)?.into_inner().configs;
    let services = control.list_services(v1::ListServicesRequest::default()).await.map_err(api)?.into_inner().services;
    Ok(Observed {
        networks,
        secrets: secrets.into_iter().map(Payload::from).collect(),
        configs: configs.into_iter().map(Payload::from).collect(),
        services,
    })
}

pub(crate) async fn deploy(control: &mut ControlClient<Channel>, args: &DeployArgs) -> anyhow::Result<()> {
    let stack = &args.stack;
    check_stack_name(stack)?;
    let project = args.files.load()?;
    let mut converted = convert::convert(&project, stack, &|path| std::fs::read(path))?;
    for warning in &converted.warnings {
        eprintln!("{warning}");
    }
    // Checked as the manager will, so that a bad service changes nothing.
    for service in &converted.stack.services {
        shoal_manager::validate_service_spec(&service.spec).map_err(|e| anyhow!("service {}: {e}", service.name()))?;
    }
    let deadline = args.wait_timeout.map(|t| wait::Deadline { at: tokio::time::Instant::now() + t, after: t });
    let observed = observe(control).await?;
    super::images::pin(control, &mut converted.stack, &observed.services, args.resolve_image).await;
    let plan = plan::plan(&converted.stack, &observed, args.prune)?;
    let waits =
        plan.services.iter().any(|s| !s.waits_for.is_empty() && !matches!(s.action, ServiceAction::Unchanged { .. }));
    if args.detach && waits {
        eprintln!("--detach: services are created in their depends_on order without waiting for the conditions");
    }

    for spec in &plan.networks {
        let name = spec.annotations.as_ref().map(|a| a.name.clone()).unwrap_or_default();
        println!("Creating network {name}");
        let request = v1::CreateNetworkRequest { spec: Some(spec.clone()) };
        control.create_network(request).await.map_err(api).with_context(|| format!("cannot create network {name}"))?;
    }
    for step in &plan.payloads {
        payload(control, step).await?;
    }
    for (name, id) in &plan.prune {
        println!("Removing service {name}");
        let request = v1::RemoveServiceRequest { service: id.clone() };
        control.remove_service(request).await.map_err(api).with_context(|| format!("cannot remove service {name}"))?;
    }

    // Each service's update status before this deploy wrote it: older statuses are not news.
    let baselines: HashMap<&str, Option<v1::UpdateStatus>> = plan
        .services
        .iter()
        .map(|step| {
            let baseline = match &step.action {
                ServiceAction::Create(_) => None,
                ServiceAction::Update { read, .. } | ServiceAction::Unchanged { read } => read.update_status.clone(),
            };
            (step.name.as_str(), baseline)
        })
        .collect();
    for step in &plan.services {
        let name = &step.name;
        if matches!(step.action, ServiceAction::Unchanged { .. }) {
            continue;
        }
        if !args.detach {
            for (dependency, condition) in &step.waits_for {
                let baseline = baselines.get(dependency.as_str()).cloned().flatten();
                wait::dependency(control, name, dependency, *condition, baseline.as_ref(), args.quiet, deadline)
                    .await?;
            }
        }
        match &step.action {
            ServiceAction::Create(spec) => {
                println!("Creating service {name}");
                let request = v1::CreateServiceRequest { spec: Some((**spec).clone()) };
                control
                    .create_service(request)
                    .await
                    .map_err(api)
                    .with_context(|| format!("cannot create service {name}"))?;
            }
            ServiceAction::Update { read, spec } => {
                println!("Updating service {name} (id: {})", read.id);
                // Read again: a secret or config rotated above moved it to the new payload
                // version since the plan read it, which the write must name.
                let fresh = get_service(control, read.id.clone()).await?;
                let stored = |s: &v1::Service| plan::normalised(&s.spec.clone().unwrap_or_default(), &HashMap::new());
                anyhow::ensure!(
                    stored(&fresh) == stored(read),
                    "service {name} was changed by someone else during the deploy; run the deploy again"
                );
                write_service(control, &fresh, Some((**spec).clone()))
                    .await
                    .with_context(|| format!("cannot update service {name}"))?;
            }
            ServiceAction::Unchanged { .. } => {}
        }
    }
    if !args.detach {
        let watched: Vec<Watched> = plan
            .services
            .iter()
            .map(|step| Watched {
                name: step.name.clone(),
                baseline: baselines.get(step.name.as_str()).cloned().flatten(),
            })
            .collect();
        wait::converged(control, &watched, args.quiet, deadline).await?;
    }
    Ok(())
}

/// Creates a secret or config, or writes its new labels or payload (a new version: the
/// manager moves the services that use it, which is said).
async fn payload(control: &mut ControlClient<Channel>, step: &plan::PayloadStep) -> anyhow::Result<()> {
    let (noun, name) = (step.kind.noun(), &step.name);
    match &step.action {
        PayloadAction::Create { labels, data } => {
            println!("Creating {noun} {name}");
            let annotations = Some(v1::Annotations { name: name.clone(), labels: labels.clone() });
            let created = match step.kind {
                Kind::Secret => {
                    let spec = v1::SecretSpec { annotations, data: data.clone() };
                    control.create_secret(v1::CreateSecretRequest { spec: Some(spec) }).await.map(|_| ())
                }
                Kind::Config => {
                    let spec = v1::ConfigSpec { annotations, data: data.clone() };
                    control.create_config(v1::CreateConfigRequest { spec: Some(spec) }).await.map(|_| ())
                }
            };
            created.map_err(api).with_context(|| format!("cannot create {noun} {name}"))?;
        }
        PayloadAction::Update { read, labels, data } => {
            println!("Updating {noun} {name}");
            // The name must stay; labels sent replace the stored ones.
            let labels = labels.clone().unwrap_or_else(|| read.labels.clone());
            let annotations = Some(v1::Annotations { name: name.clone(), labels });
            let moved = match step.kind {
                Kind::Secret => {
                    let spec = v1::SecretSpec { annotations, data: data.clone() };
                    let request =
                        v1::UpdateSecretRequest { secret: read.id.clone(), version: read.version, spec: Some(spec) };
                    control.update_secret(request).await.map(|a| a.into_inner().services)
                }
                Kind::Config => {
                    let spec = v1::ConfigSpec { annotations, data: data.clone() };
                    let request =
                        v1::UpdateConfigRequest { config: read.id.clone(), version: read.version, spec: Some(spec) };
                    control.update_config(request).await.map(|a| a.into_inner().services)
                }
            };
            let moved = moved.map_err(api).with_context(|| format!("cannot update {noun} {name}"))?;
            if !data.is_empty() && !moved.is_empty() {
                println!("  new version of {noun} {name}; the services using it move to it: {}", moved.join(", "));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: DeployArgs,
    }

    #[test]
    fn flags_as_docker_takes_them() {
        let parse = |argv: &[&str]| Cli::try_parse_from([&["deploy"], argv].concat()).map(|cli| cli.args);
        let args = parse(&["-c", "a.yml", "--compose-file", "b.yml", "shop"]).expect("parses");
        assert_eq!(args.files.files, ["a.yml", "b.yml"]);
        assert_eq!(
            (args.detach, args.prune, args.quiet, args.resolve_image),
            (false, false, false, ResolveImage::Always)
        );
        let args = parse(&["-c", "-", "-d", "--prune", "--resolve-image", "never", "shop"]).expect("parses");
        assert_eq!((args.detach, args.prune, args.resolve_image), (true, true, ResolveImage::Never));
        assert!(parse(&["-c", "a.yml", "--detach=false", "shop"]).is_ok_and(|a| !a.detach));
        assert!(parse(&["-c", "a.yml", "--detach=true", "shop"]).is_ok_and(|a| a.detach));
        assert!(parse(&["shop"]).is_err(), "a compose file is required");
        assert!(parse(&["-c", "a.yml", "--resolve-image", "sometimes", "shop"]).is_err());
    }
}

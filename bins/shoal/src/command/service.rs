//! `shoal service …`: create (flags to a service spec), update, list, ps, inspect, scale,
//! remove, and the progress of a service converging. The networking flags are in `endpoint`,
//! `update` in its own module.

mod endpoint;
mod update;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use shoal_api::v1::{self, TaskState, control_client::ControlClient};
use tonic::transport::Channel;

use self::endpoint::{EndpointArgs, endpoint_json, endpoint_spec, endpoint_spec_json, networks_json};
use self::update::{UpdateArgs, update};
use super::{Format, ListArgs, api, parse_bytes, parse_duration};
use crate::render;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    Replicated,
    Global,
    ReplicatedJob,
    GlobalJob,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RestartCondition {
    None,
    OnFailure,
    Any,
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Service name.
    #[arg(long)]
    name: String,
    /// Number of tasks (replicated mode); completions to reach (replicated-job mode).
    #[arg(long)]
    replicas: Option<u64>,
    /// replicated, global, replicated-job or global-job.
    #[arg(long, value_enum, default_value = "replicated")]
    mode: Mode,
    /// Job tasks run at once (replicated-job mode; default: as many as --replicas).
    #[arg(long = "max-concurrent")]
    max_concurrent: Option<u64>,
    /// Placement constraint, e.g. node.role==worker (repeatable).
    #[arg(long)]
    constraint: Vec<String>,
    /// Placement preference, spread=node.labels.KEY (repeatable).
    #[arg(long = "placement-pref")]
    placement_pref: Vec<String>,
    /// Maximum tasks per node (0: no limit).
    #[arg(long = "replicas-max-per-node", default_value_t = 0)]
    replicas_max_per_node: u64,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long, short)]
    env: Vec<String>,
    /// Restart when: none, on-failure, any.
    #[arg(long = "restart-condition", value_enum)]
    restart_condition: Option<RestartCondition>,
    /// Delay between restarts (e.g. 5s, 1m).
    #[arg(long = "restart-delay", value_parser = parse_duration)]
    restart_delay: Option<Duration>,
    /// Maximum restarts before giving up (0: no limit).
    #[arg(long = "restart-max-attempts")]
    restart_max_attempts: Option<u64>,
    /// Window in which restarts are counted (e.g. 1m).
    #[arg(long = "restart-window", value_parser = parse_duration)]
    restart_window: Option<Duration>,
    /// CPUs to reserve (e.g. 0.5).
    #[arg(long = "reserve-cpu")]
    reserve_cpu: Option<f64>,
    /// Memory to reserve (e.g. 64M, 1G).
    #[arg(long = "reserve-memory", value_parser = parse_bytes)]
    reserve_memory: Option<i64>,
    /// CPU limit (e.g. 1.5).
    #[arg(long = "limit-cpu")]
    limit_cpu: Option<f64>,
    /// Memory limit (e.g. 128M).
    #[arg(long = "limit-memory", value_parser = parse_bytes)]
    limit_memory: Option<i64>,
    /// Security options: seccomp=unconfined runs the tasks without Docker's default seccomp
    /// profile (repeatable).
    #[arg(long = "security-opt", value_parser = parse_security_opt)]
    security_opt: Vec<SecurityOpt>,
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Return at once instead of waiting for the service to converge.
    #[arg(long, short)]
    detach: bool,
    /// Image reference.
    image: String,
    /// Command and arguments (replace the image's).
    command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ServiceCommand {
    /// Create a service.
    Create(Box<CreateArgs>),
    /// Change a service (its networks, published ports and endpoint mode).
    Update(Box<UpdateArgs>),
    /// List services.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// List a service's tasks.
    Ps {
        #[command(flatten)]
        list: ListArgs,
        /// Print full IDs and errors.
        #[arg(long = "no-trunc")]
        no_trunc: bool,
        service: String,
    },
    /// Show a service in full.
    Inspect { service: String },
    /// Set the number of replicas: NAME=N (several at once).
    Scale {
        /// Return at once instead of waiting for convergence.
        #[arg(long, short)]
        detach: bool,
        scales: Vec<String>,
    },
    /// Remove services.
    #[command(alias = "remove")]
    Rm { services: Vec<String> },
}

pub(crate) fn nano_cpus(cpus: Option<f64>, flag: &str) -> anyhow::Result<i64> {
    match cpus {
        None => Ok(0),
        Some(c) if c >= 0.0 && c.is_finite() => Ok((c * 1e9) as i64),
        Some(c) => bail!("{flag} {c} must be a non-negative number of CPUs"),
    }
}

/// The service spec `shoal service create` sends.
/// A `--security-opt` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecurityOpt {
    /// `seccomp=unconfined`.
    SeccompUnconfined,
    /// `seccomp=default` (what tasks get without the option).
    SeccompDefault,
}

pub(crate) fn parse_security_opt(value: &str) -> Result<SecurityOpt, String> {
    match value.split_once(['=', ':']) {
        Some(("seccomp", "unconfined")) => Ok(SecurityOpt::SeccompUnconfined),
        Some(("seccomp", "default" | "builtin")) => Ok(SecurityOpt::SeccompDefault),
        Some(("seccomp", profile)) => Err(format!(
            "seccomp profile {profile:?}: custom profiles are not supported; tasks get Docker's default profile, \
             or none with seccomp=unconfined"
        )),
        _ => Err(format!("unknown security option {value:?}: the one supported is seccomp=unconfined")),
    }
}

pub(crate) fn service_spec(args: &CreateArgs) -> anyhow::Result<v1::ServiceSpec> {
    let mode = match (args.mode, args.replicas) {
        (Mode::Replicated, replicas) => {
            v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: replicas.unwrap_or(1) })
        }
        (Mode::Global, None) => v1::service_spec::Mode::Global(v1::GlobalService {}),
        (Mode::ReplicatedJob, replicas) => v1::service_spec::Mode::ReplicatedJob(v1::ReplicatedJob {
            total_completions: replicas.unwrap_or(1),
            max_concurrent: args.max_concurrent.unwrap_or(0),
        }),
        (Mode::GlobalJob, None) => v1::service_spec::Mode::GlobalJob(v1::GlobalJob {}),
        (Mode::Global | Mode::GlobalJob, Some(_)) => {
            bail!("--replicas can only be used with replicated and replicated-job modes")
        }
    };
    if args.max_concurrent.is_some() && args.mode != Mode::ReplicatedJob {
        bail!("--max-concurrent can only be used with replicated-job mode");
    }
    let restart = v1::RestartPolicy {
        condition: match args.restart_condition.unwrap_or(RestartCondition::Any) {
            RestartCondition::Any => v1::restart_policy::Condition::Any,
            RestartCondition::OnFailure => v1::restart_policy::Condition::OnFailure,
            RestartCondition::None => v1::restart_policy::Condition::None,
        } as i32,
        delay: Some(shoal_api::to_duration(args.restart_delay.unwrap_or(Duration::from_secs(5)))),
        max_attempts: args.restart_max_attempts.unwrap_or(0),
        window: args.restart_window.map(shoal_api::to_duration),
    };
    let resources = v1::ResourceRequirements {
        limits: Some(v1::Resources {
            nano_cpus: nano_cpus(args.limit_cpu, "--limit-cpu")?,
            memory_bytes: args.limit_memory.unwrap_or(0),
            ..Default::default()
        }),
        reservations: Some(v1::Resources {
            nano_cpus: nano_cpus(args.reserve_cpu, "--reserve-cpu")?,
            memory_bytes: args.reserve_memory.unwrap_or(0),
            ..Default::default()
        }),
    };
    let (networks, endpoint) = endpoint_spec(&args.endpoint).map_err(anyhow::Error::msg)?;
    Ok(v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: args.name.clone(), ..Default::default() }),
        networks,
        endpoint,
        mode: Some(mode),
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec {
                image: args.image.clone(),
                args: args.command.clone(),
                env: args.env.clone(),
                seccomp: match args.security_opt.last() {
                    Some(SecurityOpt::SeccompUnconfined) => v1::container_spec::Seccomp::Unconfined,
                    Some(SecurityOpt::SeccompDefault) | None => v1::container_spec::Seccomp::Default,
                } as i32,
                ..Default::default()
            }),
            resources: Some(resources),
            restart: Some(restart),
            placement: Some(v1::Placement {
                constraints: args.constraint.clone(),
                preferences: args.placement_pref.clone(),
                max_replicas: args.replicas_max_per_node,
                platforms: Vec::new(),
            }),
            force_update: 0,
        }),
        ..Default::default()
    })
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

pub(crate) fn service_json(service: &v1::Service) -> serde_json::Value {
    let spec = service.spec.clone().unwrap_or_default();
    let container = spec.task.as_ref().and_then(|t| t.container.clone()).unwrap_or_default();
    let placement = spec.task.as_ref().and_then(|t| t.placement.clone()).unwrap_or_default();
    let mode = match spec.mode {
        Some(v1::service_spec::Mode::Replicated(r)) => serde_json::json!({"Replicated": {"Replicas": r.replicas}}),
        Some(v1::service_spec::Mode::Global(_)) => serde_json::json!({"Global": {}}),
        Some(v1::service_spec::Mode::ReplicatedJob(j)) => {
            serde_json::json!({"ReplicatedJob": {"TotalCompletions": j.total_completions, "MaxConcurrent": j.max_concurrent}})
        }
        Some(v1::service_spec::Mode::GlobalJob(_)) => serde_json::json!({"GlobalJob": {}}),
        None => serde_json::Value::Null,
    };
    let mut json = serde_json::json!({
        "ID": service.id,
        "Version": service.meta.as_ref().map(|m| m.version),
        "Spec": {
            "Name": spec.annotations.map(|a| a.name).unwrap_or_default(),
            "Mode": mode,
            "TaskTemplate": {
                "ContainerSpec": {"Image": container.image, "Args": container.args, "Env": container.env},
                "Placement": {"Constraints": placement.constraints, "Preferences": placement.preferences, "MaxReplicas": placement.max_replicas},
            },
        },
        "Endpoint": endpoint_json(service.endpoint.as_ref()),
        "SpecVersion": service.spec_version,
    });
    if !spec.networks.is_empty() {
        json["Spec"]["TaskTemplate"]["Networks"] = networks_json(&spec.networks);
    }
    if let Some(endpoint) = &spec.endpoint {
        json["Spec"]["EndpointSpec"] = endpoint_spec_json(endpoint);
    }
    if !service.allocation_error.is_empty() {
        json["AllocationError"] = service.allocation_error.clone().into();
    }
    json
}

pub(crate) async fn service_command(
    control: &mut ControlClient<Channel>,
    command: ServiceCommand,
) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Create(args) => {
            let spec = service_spec(&args)?;
            let service = control
                .create_service(v1::CreateServiceRequest { spec: Some(spec) })
                .await
                .map_err(api)?
                .into_inner()
                .service
                .context("no service in the answer")?;
            println!("{}", service.id);
            if !args.detach {
                converge(control, &service.id).await?;
            }
        }
        ServiceCommand::Update(args) => update(control, &args).await?,
        ServiceCommand::Ls(list) => {
            let services =
                control.list_services(v1::ListServicesRequest::default()).await.map_err(api)?.into_inner().services;
            let tasks = control.list_tasks(v1::ListTasksRequest::default()).await.map_err(api)?.into_inner().tasks;
            match (list.quiet, list.format) {
                (true, _) => services.iter().for_each(|s| println!("{}", s.id)),
                (false, Format::Json) => {
                    println!("{}", serde_json::Value::Array(services.iter().map(service_json).collect()))
                }
                (false, Format::Table) => print!("{}", render::services(&services, &tasks)),
            }
        }
        ServiceCommand::Ps { list, no_trunc, service } => {
            let service = get_service(control, service).await?;
            if !service.allocation_error.is_empty() {
                // No task is made from a spec the allocator refused: say why.
                eprintln!("{}", blocked(&service));
            }
            let request = v1::ListTasksRequest { service_ids: vec![service.id.clone()], ..Default::default() };
            let tasks = control.list_tasks(request).await.map_err(api)?.into_inner().tasks;
            let nodes = control.list_nodes(v1::ListNodesRequest::default()).await.map_err(api)?.into_inner().nodes;
            match (list.quiet, list.format) {
                (true, _) => tasks.iter().for_each(|t| println!("{}", t.id)),
                (false, Format::Json) => {
                    let json: Vec<serde_json::Value> = tasks
                        .iter()
                        .map(|t| {
                            let status = t.status.clone().unwrap_or_default();
                            serde_json::json!({
                                "ID": t.id, "Name": t.annotations.as_ref().map(|a| a.name.clone()), "NodeID": t.node_id,
                                "Slot": t.slot, "DesiredState": TaskState::try_from(t.desired_state).map(|s| s.label()).unwrap_or_default(),
                                "State": TaskState::try_from(status.state).map(|s| s.label()).unwrap_or_default(),
                                "Message": status.message, "Err": status.err,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::Value::Array(json));
                }
                (false, Format::Table) => print!("{}", render::tasks(&tasks, &nodes, SystemTime::now(), no_trunc)),
            }
        }
        ServiceCommand::Inspect { service } => {
            let service = get_service(control, service).await?;
            println!("{}", serde_json::to_string_pretty(&service_json(&service))?);
        }
        ServiceCommand::Scale { detach, scales } => {
            let mut targets = BTreeMap::new();
            for pair in &scales {
                let (name, n) = pair
                    .split_once('=')
                    .with_context(|| format!("invalid scale {pair:?}: expected SERVICE=REPLICAS"))?;
                let n: u64 = n
                    .parse()
                    .with_context(|| format!("invalid replicas {n:?} in {pair:?}: expected a whole number"))?;
                targets.insert(name.to_owned(), n);
            }
            if targets.is_empty() {
                bail!("shoal service scale needs at least one SERVICE=REPLICAS");
            }
            for (name, replicas) in targets {
                let service = get_service(control, name.clone()).await?;
                let mut spec = service.spec.clone().unwrap_or_default();
                match spec.mode {
                    Some(v1::service_spec::Mode::Replicated(ref mut r)) => r.replicas = replicas,
                    _ => bail!("{name}: scale can only be used with replicated mode"),
                }
                let request = v1::UpdateServiceRequest {
                    service: service.id.clone(),
                    version: service.meta.as_ref().map_or(0, |m| m.version),
                    spec: Some(spec),
                    rollback: false,
                    spec_version: service.spec_version,
                };
                control.update_service(request).await.map_err(api)?;
                println!("{name} scaled to {replicas}");
                if !detach {
                    converge(control, &service.id).await?;
                }
            }
        }
        ServiceCommand::Rm { services } => {
            for service in services {
                control.remove_service(v1::RemoveServiceRequest { service: service.clone() }).await.map_err(api)?;
                println!("{service}");
            }
        }
    }
    Ok(())
}

/// Why a service gets no (new) tasks: its endpoint cannot be allocated.
fn blocked(service: &v1::Service) -> String {
    let name = render::service_name(service);
    format!("service {name} is blocked: {} (see shoal service inspect {name})", service.allocation_error)
}

/// Waits until the service's tasks run, printing progress as docker does; fails at once with
/// the reason when the service cannot be allocated (it would wait forever).
pub(crate) async fn converge(control: &mut ControlClient<Channel>, service_id: &str) -> anyhow::Result<()> {
    let mut last = String::new();
    loop {
        let service = get_service(control, service_id.to_owned()).await?;
        anyhow::ensure!(service.allocation_error.is_empty(), "{}", blocked(&service));
        let request = v1::ListTasksRequest { service_ids: vec![service_id.to_owned()], ..Default::default() };
        let tasks = control.list_tasks(request).await.map_err(api)?.into_inner().tasks;
        let live: Vec<&v1::Task> = tasks.iter().filter(|t| t.desired_state <= TaskState::Running as i32).collect();
        let desired = match service.spec.as_ref().and_then(|s| s.mode.as_ref()) {
            Some(v1::service_spec::Mode::Replicated(r)) => r.replicas as usize,
            _ => live.len(),
        };
        let running =
            live.iter().filter(|t| t.status.as_ref().is_some_and(|s| s.state == TaskState::Running as i32)).count();
        // A job converges when its tasks have completed, not while they run; its progress is
        // judged as the leader judges it (the current iteration, exit codes, the restart policy).
        let is_job = matches!(
            service.spec.as_ref().and_then(|s| s.mode.as_ref()),
            Some(v1::service_spec::Mode::ReplicatedJob(_) | v1::service_spec::Mode::GlobalJob(_))
        );
        if is_job {
            let nodes = control.list_nodes(v1::ListNodesRequest::default()).await.map_err(api)?.into_inner().nodes;
            let progress =
                shoal_manager::job_progress(&service, &tasks, &nodes, std::time::SystemTime::now()).unwrap_or_default();
            let failed = if progress.failed > 0 { format!(", {} failed", progress.failed) } else { String::new() };
            let line = format!(
                "job progress: {} out of {} complete, {} running{failed}",
                progress.completed, progress.total, progress.running
            );
            if line != last {
                println!("{line}");
                last = line;
            }
            if progress.finished() && progress.total > 0 {
                anyhow::ensure!(
                    progress.failed == 0,
                    "job {service_id}: {} of {} failed and will not be retried; see `shoal service ps {service_id}`",
                    progress.failed,
                    progress.total
                );
                println!("verify: Job complete");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let global =
            matches!(service.spec.as_ref().and_then(|s| s.mode.as_ref()), Some(v1::service_spec::Mode::Global(_)));
        // Printed again whenever a task moved (not redrawn in place: the output may be a file).
        let block = render::progress(&live, desired, global);
        if block != last {
            print!("{block}");
            last = block;
        }
        if running == desired && live.len() == desired {
            println!("verify: Service converged");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_options() {
        assert_eq!(parse_security_opt("seccomp=unconfined"), Ok(SecurityOpt::SeccompUnconfined));
        assert_eq!(parse_security_opt("seccomp:unconfined"), Ok(SecurityOpt::SeccompUnconfined));
        assert_eq!(parse_security_opt("seccomp=default"), Ok(SecurityOpt::SeccompDefault));
        let err = parse_security_opt("seccomp=/etc/profile.json").expect_err("custom profile");
        assert!(err.contains("custom profiles are not supported"), "{err}");
        let err = parse_security_opt("apparmor=unconfined").expect_err("other option");
        assert_eq!(err, "unknown security option \"apparmor=unconfined\": the one supported is seccomp=unconfined");
    }
}

//! The commands: each is a few calls to the control API and a table from `render`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use shoal_api::v1::{self, TaskState, control_client::ControlClient};
use tonic::transport::Channel;

use crate::render;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Manage nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage services.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Manage the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Print (or rotate) a join token.
    JoinToken {
        /// Which token.
        role: TokenRole,
        /// Replace the token; the old one is refused from now on.
        #[arg(long)]
        rotate: bool,
        /// Print only the token.
        #[arg(long, short)]
        quiet: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCommand {
    /// Manage admin client bundles (the certificates the CLI uses).
    #[command(subcommand, name = "admin-cert")]
    AdminCert(AdminCertCommand),
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCertCommand {
    /// List the admin certificates the cluster issued and the revoked ones (`*`: this one).
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Replace the bundle this command runs with (--cert-path) by a new certificate, and revoke
    /// the old one.
    Rotate,
    /// Revoke admin certificates: every manager refuses them from then on.
    Revoke {
        /// Revoke even the certificate this command runs with (locks you out).
        #[arg(long, short)]
        force: bool,
        /// Full IDs (`admin-…`) or unique prefixes.
        ids: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TokenRole {
    Worker,
    Manager,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only print IDs.
    #[arg(long, short)]
    quiet: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// List nodes.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show a node in full.
    Inspect { node: String },
    /// Change a node's availability or labels.
    Update {
        /// active, pause or drain.
        #[arg(long, value_enum)]
        availability: Option<Availability>,
        /// Add or change a label, KEY=VALUE (repeatable).
        #[arg(long = "label-add")]
        label_add: Vec<String>,
        /// Remove a label (repeatable).
        #[arg(long = "label-rm")]
        label_rm: Vec<String>,
        node: String,
    },
    /// Make nodes managers (their process must be shoal-manager).
    Promote { nodes: Vec<String> },
    /// Make managers workers (refused for the last manager or when it would lose the quorum).
    Demote { nodes: Vec<String> },
    /// Remove a node from the cluster.
    #[command(alias = "remove")]
    Rm {
        /// Remove it even if it is still Ready.
        #[arg(long, short)]
        force: bool,
        nodes: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Availability {
    Active,
    Pause,
    Drain,
}

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
    /// List services.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// List a service's tasks.
    Ps {
        #[command(flatten)]
        list: ListArgs,
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

/// Parses `90s`, `5m`, `1h`, `1m30s`, `500ms` or plain seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.trim().is_empty() {
        return Err("invalid duration \"\": expected e.g. 5s, 1m30s, 500ms".to_owned());
    }
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {text:?}: {e}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let value: f64 =
            number.parse().map_err(|_| format!("invalid duration {text:?}: expected e.g. 5s, 1m30s, 500ms"))?;
        let secs = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(format!("invalid duration {text:?}: unit {unit:?} is not one of ms, s, m, h")),
        };
        total += Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {text:?}: {e}"))?;
        rest = next;
    }
    Ok(total)
}

/// Parses `1024`, `64k`, `64M`, `1G` (powers of 1024, as docker).
pub(crate) fn parse_bytes(text: &str) -> Result<i64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let lower = lower.trim_end_matches('b');
    let (number, factor) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1i64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        _ => (lower, 1),
    };
    let value: f64 = number.parse().map_err(|_| format!("invalid size {text:?}: expected e.g. 64M, 1G, 1024"))?;
    if value < 0.0 {
        return Err(format!("invalid size {text:?}: cannot be negative"));
    }
    Ok((value * factor as f64) as i64)
}

fn nano_cpus(cpus: Option<f64>, flag: &str) -> anyhow::Result<i64> {
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

fn parse_security_opt(value: &str) -> Result<SecurityOpt, String> {
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
    Ok(v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: args.name.clone(), ..Default::default() }),
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

async fn get_service(control: &mut ControlClient<Channel>, service: impl Into<String>) -> anyhow::Result<v1::Service> {
    let request = v1::GetServiceRequest { service: service.into() };
    control
        .get_service(request)
        .await
        .map_err(api)?
        .into_inner()
        .service
        .context("the manager answered without a service")
}

async fn get_node(control: &mut ControlClient<Channel>, node: String) -> anyhow::Result<v1::Node> {
    control
        .get_node(v1::GetNodeRequest { node })
        .await
        .map_err(api)?
        .into_inner()
        .node
        .context("the manager answered without a node")
}

/// A control API error as one line: its message, which already names the object and the remedy.
fn api(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

/// The largest answer the CLI accepts from a manager.
const MAX_ANSWER_BYTES: usize = 256 << 20;

pub(crate) async fn run(host: &str, cert_path: &Path, command: Command) -> anyhow::Result<()> {
    let channel = shoal_manager::connect_with_bundle(host, cert_path).await?;
    // Listing 100,000 tasks takes tens of MiB; tonic's default limit is 4 MiB.
    let mut control = ControlClient::new(channel.clone()).max_decoding_message_size(MAX_ANSWER_BYTES);
    match command {
        Command::Node(node) => node_command(&mut control, host, node).await,
        Command::Cluster(ClusterCommand::AdminCert(command)) => {
            admin_cert(&mut control, channel, cert_path, command).await
        }
        Command::Service(service) => service_command(&mut control, service).await,
        Command::JoinToken { role, rotate, quiet } => join_token(&mut control, host, role, rotate, quiet).await,
    }
}

async fn admin_cert(
    control: &mut ControlClient<Channel>,
    channel: Channel,
    cert_path: &Path,
    command: AdminCertCommand,
) -> anyhow::Result<()> {
    match command {
        AdminCertCommand::Ls(list) => {
            let request = v1::ListAdminCertificatesRequest {};
            let listed = control.list_admin_certificates(request).await.map_err(api)?.into_inner();
            match (list.quiet, list.format) {
                (true, _) => listed.certificates.iter().for_each(|c| println!("{}", c.id)),
                (false, Format::Json) => println!("{}", admin_certs_json(&listed)),
                (false, Format::Table) => print!("{}", render::admin_certs(&listed, SystemTime::now())),
            }
        }
        AdminCertCommand::Rotate => {
            let rotated = shoal_manager::rotate_admin_bundle(channel, cert_path).await?;
            println!(
                "{} now holds admin certificate {}; {} is revoked.",
                cert_path.display(),
                rotated.new_id,
                rotated.old_id
            );
        }
        AdminCertCommand::Revoke { force, ids } => {
            anyhow::ensure!(!ids.is_empty(), "name at least one admin certificate");
            for id in ids {
                let request = v1::RevokeAdminCertificateRequest { id, force };
                let revoked = control.revoke_admin_certificate(request).await.map_err(api)?.into_inner();
                println!("{}", revoked.revocation.map(|r| r.id).unwrap_or_default());
            }
        }
    }
    Ok(())
}

fn admin_certs_json(listed: &v1::ListAdminCertificatesResponse) -> serde_json::Value {
    // Seconds since the Unix epoch.
    let at = |meta: Option<&v1::Meta>| {
        shoal_api::from_timestamp(meta.and_then(|m| m.created_at.as_ref()))
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    };
    let certificates = listed.certificates.iter().map(|c| {
        serde_json::json!({
            "ID": c.id, "Status": "active", "IssuedBy": c.issued_by,
            "CreatedAt": at(c.meta.as_ref()), "Current": c.id == listed.caller,
        })
    });
    let revoked = listed.revoked.iter().map(|r| {
        serde_json::json!({
            "ID": r.id, "Status": "revoked",
            "RevokedAt": at(r.meta.as_ref()), "Current": r.id == listed.caller,
        })
    });
    serde_json::Value::Array(certificates.chain(revoked).collect())
}

async fn join_token(
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

async fn node_command(control: &mut ControlClient<Channel>, host: &str, command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::Ls(list) => {
            let nodes = control.list_nodes(v1::ListNodesRequest::default()).await.map_err(api)?.into_inner().nodes;
            match (list.quiet, list.format) {
                (true, _) => nodes.iter().for_each(|n| println!("{}", n.id)),
                (false, Format::Json) => {
                    println!("{}", serde_json::Value::Array(nodes.iter().map(node_json).collect()))
                }
                (false, Format::Table) => print!("{}", render::nodes(&nodes, host)),
            }
        }
        NodeCommand::Inspect { node } => {
            let node = get_node(control, node).await?;
            println!("{}", serde_json::to_string_pretty(&node_json(&node))?);
        }
        NodeCommand::Update { availability, label_add, label_rm, node } => {
            let (id, _) = edit_node_spec(control, &node, |spec| {
                if let Some(a) = availability {
                    spec.availability = match a {
                        Availability::Active => v1::NodeAvailability::Active,
                        Availability::Pause => v1::NodeAvailability::Pause,
                        Availability::Drain => v1::NodeAvailability::Drain,
                    } as i32;
                }
                let labels = &mut spec.annotations.get_or_insert_with(Default::default).labels;
                for pair in &label_add {
                    let (k, v) = pair.split_once('=').unwrap_or((pair.as_str(), ""));
                    labels.insert(k.to_owned(), v.to_owned());
                }
                for key in &label_rm {
                    if labels.remove(key).is_none() {
                        bail!("key {key:?} doesn't exist in node's labels");
                    }
                }
                Ok(true)
            })
            .await?;
            println!("{id}");
        }
        NodeCommand::Promote { nodes } => set_roles(control, nodes, v1::NodeRole::Manager).await?,
        NodeCommand::Demote { nodes } => set_roles(control, nodes, v1::NodeRole::Worker).await?,
        NodeCommand::Rm { force, nodes } => {
            for node in nodes {
                control.remove_node(v1::RemoveNodeRequest { node: node.clone(), force }).await.map_err(api)?;
                println!("{node}");
            }
        }
    }
    Ok(())
}

/// Reads node `name`, lets `edit` change its spec (it returns whether anything is to be written)
/// and writes it back; returns the node's ID and whether it wrote. The managers update node
/// records too (status, manager status): a write that lost to one of theirs is read again and
/// edited again.
async fn edit_node_spec(
    control: &mut ControlClient<Channel>,
    name: &str,
    mut edit: impl FnMut(&mut v1::NodeSpec) -> anyhow::Result<bool>,
) -> anyhow::Result<(String, bool)> {
    let mut attempts = 0;
    loop {
        let mut node = get_node(control, name.to_owned()).await?;
        let mut spec = node.spec.take().unwrap_or_default();
        if !edit(&mut spec)? {
            return Ok((node.id, false));
        }
        let request = v1::UpdateNodeRequest {
            node: node.id.clone(),
            version: node.meta.as_ref().map_or(0, |m| m.version),
            spec: Some(spec),
        };
        match control.update_node(request).await {
            Ok(_) => return Ok((node.id, true)),
            Err(status) if status.code() == tonic::Code::Aborted && attempts < 5 => attempts += 1,
            Err(status) => return Err(api(status)),
        }
    }
}

/// `node promote|demote`: sets each node's desired role; the leader makes Raft membership and
/// the node's certificate follow.
async fn set_roles(control: &mut ControlClient<Channel>, nodes: Vec<String>, role: v1::NodeRole) -> anyhow::Result<()> {
    anyhow::ensure!(!nodes.is_empty(), "name at least one node");
    for name in nodes {
        let (_, changed) = edit_node_spec(control, &name, |spec| {
            let change = spec.desired_role != role as i32;
            spec.desired_role = role as i32;
            Ok(change)
        })
        .await?;
        if !changed {
            match role {
                v1::NodeRole::Manager => println!("Node {name} is already a manager."),
                v1::NodeRole::Worker => println!("Node {name} is already a worker."),
            }
            continue;
        }
        match role {
            v1::NodeRole::Manager => println!("Node {name} promoted to a manager in the cluster."),
            v1::NodeRole::Worker => println!("Manager {name} demoted in the cluster."),
        }
    }
    Ok(())
}

fn node_json(node: &v1::Node) -> serde_json::Value {
    let description = node.description.clone().unwrap_or_default();
    let spec = node.spec.clone().unwrap_or_default();
    serde_json::json!({
        "ID": node.id,
        "Hostname": description.hostname,
        "Status": node.status.as_ref().and_then(|s| v1::node_status::State::try_from(s.state).ok()).map(|s| s.as_str_name()),
        "Addr": node.status.as_ref().map(|s| s.addr.clone()),
        "Availability": v1::NodeAvailability::try_from(spec.availability).map(|a| a.as_str_name()).unwrap_or_default(),
        "Role": v1::NodeRole::try_from(node.role).map(|r| r.as_str_name()).unwrap_or_default(),
        "Labels": spec.annotations.map(|a| a.labels).unwrap_or_default(),
        "ManagerStatus": node.manager_status.as_ref().map(|m| serde_json::json!({"Leader": m.leader, "Addr": m.addr})),
        "Platform": description.platform.map(|p| serde_json::json!({"OS": p.os, "Architecture": p.architecture})),
    })
}

fn service_json(service: &v1::Service) -> serde_json::Value {
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
    serde_json::json!({
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
        "SpecVersion": service.spec_version,
    })
}

async fn service_command(control: &mut ControlClient<Channel>, command: ServiceCommand) -> anyhow::Result<()> {
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
        ServiceCommand::Ps { list, service } => {
            let service = get_service(control, service).await?;
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
                (false, Format::Table) => print!("{}", render::tasks(&tasks, &nodes, SystemTime::now())),
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

/// Waits until the service's tasks run, printing progress as docker does.
async fn converge(control: &mut ControlClient<Channel>, service_id: &str) -> anyhow::Result<()> {
    let mut last = String::new();
    loop {
        let service = get_service(control, service_id.to_owned()).await?;
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
    fn durations_and_sizes() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("12x"), Err("invalid size \"12x\": expected e.g. 64M, 1G, 1024".to_owned()));
    }

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

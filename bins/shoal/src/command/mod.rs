//! The commands, one module per noun as docker/cli keeps them (`cli/command/<noun>/`; secrets
//! and configs share `payload`): each is a few calls to the control API and a table from
//! `render`. This module holds what they
//! share: the top-level command, list options, the duration and size parsers, and `run`.

mod cluster;
mod dashboard;
mod events;
mod filter;
mod join_token;
mod network;
mod node;
mod payload;
mod service;
mod stack;
mod volume;

use std::path::Path;

use clap::{Args, Subcommand};
use shoal_api::v1::control_client::ControlClient;

use self::cluster::{ClusterCommand, admin_cert};
use self::dashboard::DashboardArgs;
use self::events::EventsArgs;
use self::join_token::{TokenRole, join_token};
use self::network::{NetworkCommand, network_command};
use self::node::{NodeCommand, node_command};
use self::payload::{Kind, PayloadCommand, payload_command};
use self::service::{ServiceCommand, service_command};
use self::stack::{StackCommand, stack_command};
use self::volume::{VolumeCommand, volume_command};
use crate::format::{self, Output};

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Manage nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage services.
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Manage overlay networks.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Manage secrets: payloads under 500 KiB that tasks read as files; never shown again.
    #[command(subcommand)]
    Secret(PayloadCommand),
    /// Manage configs: payloads under 1000 KiB that tasks read as files.
    #[command(subcommand)]
    Config(PayloadCommand),
    /// Manage the named volumes on the nodes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Manage stacks: compose files deployed as a unit.
    #[command(subcommand)]
    Stack(StackCommand),
    /// Manage the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Stream the cluster's events: services, nodes, tasks, networks, secrets and configs created,
    /// updated and removed.
    Events(EventsArgs),
    /// Serve a live web dashboard of the cluster on this machine (loopback only by default):
    /// nodes × tasks, services, networks, events; scale, roll back, drain.
    Dashboard(DashboardArgs),
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
    /// Print a shell completion script: `shoal completion bash > /etc/bash_completion.d/shoal`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only print IDs.
    #[arg(long, short)]
    quiet: bool,
    /// table (default), json, or a template: '{{.Name}}: {{.Replicas}}', 'table {{.ID}}\t{{.Name}}'.
    #[arg(long)]
    format: Option<String>,
}

impl ListArgs {
    /// What `--format` asks for, checked against the placeholders the list has.
    pub(crate) fn output(&self, columns: &[format::Column]) -> anyhow::Result<Output> {
        Output::parse(self.format.as_deref(), columns).map_err(anyhow::Error::msg)
    }

    /// For lists that print only their table or JSON.
    pub(crate) fn table_or_json(&self, command: &str) -> anyhow::Result<Output> {
        match self.output(&[])? {
            output @ (Output::Default | Output::Json) => Ok(output),
            _ => anyhow::bail!("{command} --format takes table or json"),
        }
    }
}

pub(crate) use shoal_api::parse_duration;

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

/// A control API error as one line: its message, which already names the object and the remedy.
pub(crate) fn api(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

/// What a command that goes on after errors (`network rm A B`, as docker) returns when some
/// failed: each was printed as it happened, so `main` only exits non-zero.
#[derive(Debug)]
pub(crate) struct Reported {
    pub(crate) failed: usize,
}

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed", self.failed)
    }
}

impl std::error::Error for Reported {}

/// `Ok` when nothing failed, else [`Reported`].
pub(crate) fn reported(failed: usize) -> anyhow::Result<()> {
    if failed == 0 { Ok(()) } else { Err(Reported { failed }.into()) }
}

/// The largest answer the CLI accepts from a manager.
pub(crate) const MAX_ANSWER_BYTES: usize = 256 << 20;

pub(crate) async fn run(host: &str, cert_path: &Path, command: Command) -> anyhow::Result<()> {
    // Reads compose files only: no manager needed.
    if let Command::Stack(StackCommand::Config(args)) = &command {
        return stack::config(args);
    }
    // A locked manager serves only this.
    if let Command::Cluster(ClusterCommand::Unlock) = &command {
        return cluster::unlock(host, cert_path).await;
    }
    let channel = shoal_manager::connect_with_bundle(host, cert_path).await?;
    // Listing 100,000 tasks takes tens of MiB; tonic's default limit is 4 MiB.
    let mut control = ControlClient::new(channel.clone()).max_decoding_message_size(MAX_ANSWER_BYTES);
    match command {
        Command::Node(node) => node_command(&mut control, host, node).await,
        Command::Cluster(ClusterCommand::AdminCert(command)) => {
            admin_cert(&mut control, channel, cert_path, command).await
        }
        Command::Cluster(ClusterCommand::Inspect { pretty }) => cluster::inspect(&mut control, pretty).await,
        Command::Cluster(ClusterCommand::Update(args)) => cluster::update(&mut control, args).await,
        Command::Cluster(ClusterCommand::UnlockKey { rotate, quiet }) => {
            cluster::unlock_key(&mut control, rotate, quiet).await
        }
        // Handled before connecting.
        Command::Cluster(ClusterCommand::Unlock) => Ok(()),
        Command::Cluster(ClusterCommand::Ca(args)) => cluster::ca::run(&mut control, args).await,
        Command::Service(service) => service_command(&mut control, channel, service).await,
        Command::Network(network) => network_command(&mut control, network).await,
        Command::Secret(secret) => payload_command(&mut control, Kind::Secret, secret).await,
        Command::Config(config) => payload_command(&mut control, Kind::Config, config).await,
        Command::Volume(volume) => volume_command(&mut control, volume).await,
        Command::Stack(stack) => stack_command(&mut control, channel, stack).await,
        Command::Events(args) => events::events(channel, &args).await,
        Command::Dashboard(args) => dashboard::dashboard(host, channel, &args).await,
        Command::JoinToken { role, rotate, quiet } => join_token(&mut control, host, role, rotate, quiet).await,
        // `main` prints it before connecting.
        Command::Completion { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
}

//! `shoal stack …`, one module per verb as docker/cli keeps `cli/command/stack/`: deploy, ls,
//! services, ps, rm, config. A stack is what a compose file makes, every object carrying the
//! label `com.docker.stack.namespace=STACK`; that label is all that ties them together, as in
//! Swarm. `convert` turns the loaded file into specs, `plan` compares them with the cluster
//! (both pure, tested as tables), `deploy` applies the plan and `wait` follows the services.
//! This module holds the subcommands and what the verbs share: names, labels, loading files and
//! listing a stack's services.

mod config;
mod convert;
mod deploy;
mod images;
mod ls;
mod plan;
mod ps;
mod rm;
mod services;
mod wait;

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use self::deploy::{DeployArgs, deploy};
use self::ls::{LsArgs, ls};
use self::ps::{PsArgs, ps};
use self::rm::rm;
use self::services::{ServicesArgs, services};
use super::api;

pub(crate) use self::config::{ConfigArgs, config};

/// The label that puts an object in a stack (docker's `convert.LabelNamespace`).
pub(crate) const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";
/// The label with the image a service's file names (docker's `convert.LabelImage`).
pub(crate) const IMAGE_LABEL: &str = "com.docker.stack.image";

#[derive(Debug, Subcommand)]
pub(crate) enum StackCommand {
    /// Deploy a stack from compose files, or update it: creates its networks, secrets and
    /// configs, then its services in depends_on order; waits for them unless --detach.
    #[command(alias = "up")]
    Deploy(DeployArgs),
    /// List stacks.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// List the services of a stack.
    Services(ServicesArgs),
    /// List the tasks of a stack.
    Ps(PsArgs),
    /// Remove stacks: their services, then their secrets, configs and networks (never external
    /// ones).
    #[command(aliases = ["remove", "down"])]
    Rm {
        /// Stack names.
        #[arg(required = true)]
        stacks: Vec<String>,
    },
    /// Print the compose files merged and interpolated, as deploy reads them.
    Config(ConfigArgs),
}

/// `-c/--compose-file`, repeatable: files merged in order.
#[derive(Debug, Args)]
pub(crate) struct ComposeFiles {
    /// A compose file, or - for standard input (repeatable: later files override earlier ones).
    #[arg(long = "compose-file", short = 'c', value_name = "FILE", required = true)]
    files: Vec<String>,
}

impl ComposeFiles {
    /// Loads the files as `docker stack deploy` does, with the variables of this process's
    /// environment over those of a `.env` file beside the first file; the loader's warnings
    /// (keys Swarm ignores, unset variables) go to stderr.
    pub(crate) fn load(&self) -> anyhow::Result<shoal_compose::Project> {
        let mut sources = Vec::with_capacity(self.files.len());
        let mut stdin_read = false;
        for file in &self.files {
            if file == "-" {
                anyhow::ensure!(!stdin_read, "-c - is given twice: standard input can be read once");
                stdin_read = true;
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("cannot read the compose file from standard input")?;
                // Relative paths in it are taken from the current directory.
                sources.push(shoal_compose::Source::new("stdin", text));
            } else {
                let path = PathBuf::from(file);
                let text =
                    std::fs::read_to_string(&path).with_context(|| format!("cannot read compose file {file}"))?;
                sources.push(shoal_compose::Source::new(path, text));
            }
        }
        // Variables whose name or value is not UTF-8 cannot be substituted into a file's text.
        let env = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
        let options = shoal_compose::LoadOptions { env: env.collect(), ..Default::default() };
        let loaded = shoal_compose::load_sources(&sources, &options).map_err(|e| anyhow::anyhow!("{e}"))?;
        for warning in &loaded.warnings {
            eprintln!("{warning}");
        }
        Ok(loaded.project)
    }
}

/// `STACK_NAME`, docker's `Namespace.Scope`.
pub(crate) fn scope(stack: &str, name: &str) -> String {
    format!("{stack}_{name}")
}

/// A stack name must make valid object names when prefixed to them.
pub(crate) fn check_stack_name(stack: &str) -> anyhow::Result<()> {
    shoal_manager::validate_name("stack", stack).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Whether an object's labels put it in `stack`.
pub(crate) fn in_stack(labels: &std::collections::HashMap<String, String>, stack: &str) -> bool {
    labels.get(NAMESPACE_LABEL).is_some_and(|s| s == stack)
}

/// The stack's services, by name.
pub(crate) async fn stack_services(
    control: &mut ControlClient<Channel>,
    stack: &str,
) -> anyhow::Result<Vec<v1::Service>> {
    let services = control.list_services(v1::ListServicesRequest::default()).await.map_err(api)?.into_inner().services;
    let mut services: Vec<v1::Service> = services
        .into_iter()
        .filter(|s| s.spec.as_ref().and_then(|s| s.annotations.as_ref()).is_some_and(|a| in_stack(&a.labels, stack)))
        .collect();
    services.sort_by(|a, b| crate::render::service_name(a).cmp(crate::render::service_name(b)));
    Ok(services)
}

pub(crate) async fn stack_command(
    control: &mut ControlClient<Channel>,
    channel: Channel,
    command: StackCommand,
) -> anyhow::Result<()> {
    match command {
        StackCommand::Deploy(args) => deploy(control, &args).await,
        StackCommand::Ls(args) => ls(control, &args).await,
        StackCommand::Services(args) => services(control, channel, &args).await,
        StackCommand::Ps(args) => ps(control, &args).await,
        StackCommand::Rm { stacks } => rm(control, &stacks).await,
        // Needs no manager: `run` prints it before connecting.
        StackCommand::Config(args) => config(&args),
    }
}

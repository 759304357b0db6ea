//! `shoal service create`: flags to a service spec (docker's defaults where a flag is not
//! given, then [`SpecArgs::apply`]), sent to the manager; waits for the tasks unless `--detach`.

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::endpoint::{EndpointArgs, endpoint_spec};
use super::opts::{
    SpecArgs, default_restart_policy, default_update_config, parse_count, parse_env, parse_label, parse_mount,
};
use super::progress::converge;
use crate::command::api;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    Replicated,
    Global,
    ReplicatedJob,
    GlobalJob,
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Service name.
    #[arg(long)]
    name: String,
    /// Number of tasks (replicated mode); completions to reach (replicated-job mode).
    #[arg(long, value_parser = parse_count, allow_hyphen_values = true)]
    replicas: Option<u64>,
    /// replicated, global, replicated-job or global-job.
    #[arg(long, value_enum, default_value = "replicated")]
    mode: Mode,
    /// Job tasks run at once (replicated-job mode; default: as many as --replicas).
    #[arg(long = "max-concurrent", value_parser = parse_count, allow_hyphen_values = true)]
    max_concurrent: Option<u64>,
    /// Placement constraint, e.g. node.role==worker (repeatable).
    #[arg(long)]
    constraint: Vec<String>,
    /// Placement preference, spread=node.labels.KEY (repeatable).
    #[arg(long = "placement-pref")]
    placement_pref: Vec<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long, short, value_parser = parse_env)]
    env: Vec<String>,
    /// Service label KEY[=VALUE] (repeatable).
    #[arg(long, short, value_parser = parse_label)]
    label: Vec<(String, String)>,
    /// Container label KEY[=VALUE] (repeatable).
    #[arg(long = "container-label", value_parser = parse_label)]
    container_label: Vec<(String, String)>,
    /// Mount: type=bind|volume|tmpfs,source=…,target=…(,readonly) (repeatable).
    #[arg(long, value_parser = parse_mount)]
    mount: Vec<v1::Mount>,
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Return at once instead of waiting for the service to converge.
    #[arg(long, short)]
    detach: bool,
    /// Print no progress while waiting.
    #[arg(long, short)]
    quiet: bool,
    /// Image reference.
    image: String,
    /// Command and arguments (replace the image's); everything after the image.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// The service spec `shoal service create` sends.
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
    let (networks, endpoint) = endpoint_spec(&args.endpoint).map_err(anyhow::Error::msg)?;
    let mut spec = v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: args.name.clone(), labels: args.label.iter().cloned().collect() }),
        networks,
        endpoint,
        mode: Some(mode),
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec {
                image: args.image.clone(),
                args: args.command.clone(),
                env: args.env.clone(),
                labels: args.container_label.iter().cloned().collect(),
                mounts: args.mount.clone(),
                ..Default::default()
            }),
            resources: Some(v1::ResourceRequirements {
                limits: Some(v1::Resources::default()),
                reservations: Some(v1::Resources::default()),
            }),
            restart: Some(default_restart_policy()),
            placement: Some(v1::Placement {
                constraints: args.constraint.clone(),
                preferences: args.placement_pref.clone(),
                max_replicas: 0,
                platforms: Vec::new(),
            }),
            force_update: 0,
        }),
        update: Some(default_update_config()),
        rollback: Some(default_update_config()),
    };
    args.spec.apply(&mut spec).map_err(anyhow::Error::msg)?;
    Ok(spec)
}

pub(crate) async fn create(control: &mut ControlClient<Channel>, args: &CreateArgs) -> anyhow::Result<()> {
    let spec = service_spec(args)?;
    let service = control
        .create_service(v1::CreateServiceRequest { spec: Some(spec) })
        .await
        .map_err(api)?
        .into_inner()
        .service
        .context("the manager answered without a service")?;
    println!("{}", service.id);
    if !args.detach {
        converge(control, &service.id, args.quiet).await?;
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
        args: CreateArgs,
    }

    fn spec(argv: &[&str]) -> anyhow::Result<v1::ServiceSpec> {
        let cli = Cli::try_parse_from([&["create"], argv].concat()).map_err(|e| anyhow::anyhow!("{e}"))?;
        service_spec(&cli.args)
    }

    #[test]
    fn defaults_are_dockers() {
        let spec = spec(&["--name", "web", "web:v1"]).expect("spec");
        assert_eq!(spec.update, Some(default_update_config()));
        assert_eq!(spec.rollback, Some(default_update_config()));
        let update = spec.update.expect("update");
        assert_eq!((update.parallelism, update.failure_action), (1, 0), "one at a time, pause");
        let task = spec.task.expect("task");
        assert_eq!(task.restart, Some(default_restart_policy()));
        assert_eq!(task.container.expect("container").healthcheck, None, "the image's own check");
        assert_eq!(spec.mode, Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 1 })));
    }

    #[test]
    fn flags_fill_the_spec() {
        let spec = spec(&[
            "--name",
            "web",
            "--replicas",
            "3",
            "--env",
            "A=1",
            "--label",
            "tier=front",
            "--container-label",
            "team",
            "--mount",
            "type=tmpfs,target=/run,tmpfs-size=64M",
            "--entrypoint",
            "/bin/sh -c",
            "--health-cmd",
            "wget -q localhost",
            "--health-retries",
            "2",
            "--update-parallelism",
            "0",
            "--update-order",
            "start-first",
            "--rollback-failure-action",
            "continue",
            "--limit-memory",
            "128M",
            "--read-only",
            "web:v1",
            "echo",
            "-n",
            "hi",
        ])
        .expect("spec");
        let labels = spec.annotations.as_ref().map(|a| a.labels.clone()).unwrap_or_default();
        assert_eq!(labels.get("tier").map(String::as_str), Some("front"));
        let task = spec.task.clone().expect("task");
        let container = task.container.clone().expect("container");
        assert_eq!(container.args, ["echo", "-n", "hi"], "what follows the image is the command");
        assert_eq!(container.command, ["/bin/sh", "-c"]);
        assert_eq!(container.env, ["A=1"]);
        assert_eq!(container.labels.get("team").map(String::as_str), Some(""));
        assert_eq!(container.mounts[0].tmpfs_size_bytes, 64 << 20);
        assert!(container.read_only);
        let health = container.healthcheck.expect("health");
        assert_eq!((health.test, health.retries), (vec!["CMD-SHELL".to_owned(), "wget -q localhost".to_owned()], 2));
        let update = spec.update.expect("update");
        assert_eq!((update.parallelism, update.order), (0, v1::update_config::Order::StartFirst as i32));
        assert_eq!(spec.rollback.map(|r| r.failure_action), Some(v1::update_config::FailureAction::Continue as i32));
        assert_eq!(task.resources.and_then(|r| r.limits).map(|l| l.memory_bytes), Some(128 << 20));
    }

    #[test]
    fn bad_values_are_one_clear_error() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--update-parallelism", "-1"],
                "\"-1\" is not a whole number ≥ 0: give how many tasks to update at once (0: all)",
            ),
            (&["--update-max-failure-ratio", "1.5"], "\"1.5\" is not a ratio between 0 and 1"),
            (&["--update-failure-action", "explode"], "invalid value 'explode' for '--update-failure-action"),
            (&["--rollback-failure-action", "rollback"], "invalid value 'rollback' for '--rollback-failure-action"),
            (&["--update-order", "random"], "invalid value 'random' for '--update-order"),
            (&["--update-delay", "-5s"], "invalid duration \"-5s\""),
            (&["--health-retries", "-1"], "\"-1\" is not a whole number ≥ 0"),
            (&["--no-healthcheck", "--health-cmd", "true"], "cannot be used with"),
            (&["--health-cmd", " "], "--health-cmd is empty"),
            (&["--env", "NOVALUE"], "invalid env \"NOVALUE\": expected KEY=VALUE"),
            (&["--mount", "source=/a"], "invalid mount \"source=/a\": the target is missing"),
            (&["--entrypoint", "sh -c 'unclosed"], "a ' is not closed"),
            (&["--replicas", "-2"], "\"-2\" is not a whole number ≥ 0"),
            (
                &["--mode", "global", "--replicas", "2"],
                "--replicas can only be used with replicated and replicated-job modes",
            ),
            (&["--limit-cpu", "-1"], "\"-1\" is not a number of CPUs ≥ 0"),
        ];
        for (flags, expected) in cases {
            let argv = [&["--name", "web"], *flags, &["web:v1"]].concat();
            let err = spec(&argv).expect_err("refused").to_string();
            assert!(err.contains(expected), "{flags:?}: {err}");
        }
    }
}

//! `shoal service create`: flags to a service spec (docker's defaults where a flag is not
//! given, then [`SpecArgs::apply`]), sent to the manager; waits for the tasks unless `--detach`.

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::endpoint::{EndpointArgs, endpoint_spec};
use super::opts::{
    ContainerArgs, SpecArgs, default_restart_policy, default_update_config, parse_count, parse_env, parse_label,
    parse_mount, read_env_files, set_env,
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
    /// Read environment variables from a file: KEY=VALUE lines, # comments; a bare KEY takes
    /// its value from this shell's environment (repeatable; --env wins).
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<std::path::PathBuf>,
    /// Service label KEY[=VALUE] (repeatable).
    #[arg(long, short, value_parser = parse_label)]
    label: Vec<(String, String)>,
    /// Container label KEY[=VALUE] (repeatable).
    #[arg(long = "container-label", value_parser = parse_label)]
    container_label: Vec<(String, String)>,
    /// Mount: type=bind|volume|tmpfs,source=…,target=…(,readonly), with bind-propagation=…,
    /// volume-nocopy, volume-driver=local, volume-opt=KEY=VALUE, volume-label=KEY=VALUE,
    /// tmpfs-size=…, tmpfs-mode=…; a field with commas in double quotes (repeatable).
    #[arg(long, value_parser = parse_mount)]
    mount: Vec<v1::Mount>,
    #[command(flatten)]
    spec: SpecArgs,
    #[command(flatten)]
    container: ContainerArgs,
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
    // As docker: the files' variables first, then --env; a later value replaces an earlier one.
    let mut env = read_env_files(&args.env_file).map_err(anyhow::Error::msg)?;
    for entry in &args.env {
        set_env(&mut env, entry);
    }
    let mut spec = v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: args.name.clone(), labels: args.label.iter().cloned().collect() }),
        networks,
        endpoint,
        mode: Some(mode),
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec {
                image: args.image.clone(),
                args: args.command.clone(),
                env,
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
    if let Some(container) = spec.task.as_mut().and_then(|t| t.container.as_mut()) {
        args.container.apply(container).map_err(anyhow::Error::msg)?;
    }
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
    fn container_flags_fill_their_fields() {
        let dir = std::env::temp_dir().join(format!("shoal-create-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let env_file = dir.join("web.env");
        std::fs::write(&env_file, "# web\nA=from-file\nB=2\nSHOAL_TEST_SURELY_UNSET\n").expect("write");
        let env_file = env_file.to_string_lossy().into_owned();
        let spec = spec(&[
            "--name",
            "web",
            "--env-file",
            &env_file,
            "-e",
            "A=from-flag",
            "--secret",
            "db_password",
            "--secret",
            "source=tls_key,target=/etc/ssl/key.pem,uid=101,gid=102,mode=0400",
            "--config",
            "nginx_conf",
            "--config",
            "source=site,target=/etc/nginx/conf.d/site.conf,mode=0440",
            "--mount",
            r#"type=volume,source=nfs-data,target=/data,volume-nocopy,volume-opt=type=nfs,"volume-opt=o=addr=192.0.2.10,nfsvers=4",volume-opt=device=:/export,volume-label=team=web"#,
            "--mount",
            "type=bind,source=/srv,target=/srv,bind-propagation=rslave,readonly",
            "--init",
            "--cap-add",
            "net_admin",
            "--cap-add",
            "CAP_SYS_TIME",
            "--cap-drop",
            "MKNOD",
            "--sysctl",
            "net.ipv4.ip_unprivileged_port_start=0",
            "--ulimit",
            "nofile=1024:2048",
            "--ulimit",
            "nproc=64",
            "--dns",
            "192.0.2.53",
            "--dns-option",
            "ndots:2",
            "--dns-search",
            "example.com",
            "--host",
            "db.internal:192.0.2.20",
            "--group",
            "video",
            "--limit-pids",
            "100",
            "--hostname",
            "{{.Service.Name}}-{{.Task.Slot}}",
            "web:v1",
        ]);
        let _ = std::fs::remove_dir_all(&dir);
        let spec = spec.expect("spec");
        let task = spec.task.expect("task");
        let container = task.container.expect("container");
        assert_eq!(container.env, ["A=from-flag", "B=2"], "the file first, --env wins, an unset bare name is skipped");
        let file = |name: &str, uid, gid, mode| Some(v1::FileTarget { name: name.into(), uid, gid, mode });
        assert_eq!(
            container.secrets,
            [
                v1::SecretReference {
                    secret_id: String::new(),
                    secret_name: "db_password".into(),
                    file: file("db_password", 0, 0, 0o444),
                    data_version: 0,
                },
                v1::SecretReference {
                    secret_id: String::new(),
                    secret_name: "tls_key".into(),
                    file: file("/etc/ssl/key.pem", 101, 102, 0o400),
                    data_version: 0,
                },
            ]
        );
        let configs: Vec<(&str, Option<v1::FileTarget>)> =
            container.configs.iter().map(|c| (c.config_name.as_str(), c.file.clone())).collect();
        assert_eq!(
            configs,
            [
                ("nginx_conf", file("/nginx_conf", 0, 0, 0o444)),
                ("site", file("/etc/nginx/conf.d/site.conf", 0, 0, 0o440))
            ]
        );
        let volume = container.mounts[0].volume_options.clone().expect("volume options");
        assert!(volume.no_copy);
        assert_eq!(volume.driver_options.get("o").map(String::as_str), Some("addr=192.0.2.10,nfsvers=4"));
        assert_eq!(volume.driver_options.get("device").map(String::as_str), Some(":/export"));
        assert_eq!(volume.labels.get("team").map(String::as_str), Some("web"));
        assert_eq!(
            container.mounts[1].bind_options,
            Some(v1::mount::BindOptions { propagation: v1::mount::bind_options::Propagation::Rslave as i32 })
        );
        assert!(container.mounts[1].read_only);
        assert!(container.init);
        assert_eq!(container.capability_add, ["NET_ADMIN", "SYS_TIME"]);
        assert_eq!(container.capability_drop, ["MKNOD"]);
        assert_eq!(container.sysctls.get("net.ipv4.ip_unprivileged_port_start").map(String::as_str), Some("0"));
        assert_eq!(
            container.ulimits,
            [
                v1::Ulimit { name: "nofile".into(), soft: 1024, hard: 2048 },
                v1::Ulimit { name: "nproc".into(), soft: 64, hard: 64 }
            ]
        );
        assert_eq!(
            container.dns_config,
            Some(v1::DnsConfig {
                nameservers: vec!["192.0.2.53".into()],
                search: vec!["example.com".into()],
                options: vec!["ndots:2".into()],
            })
        );
        assert_eq!(container.hosts, ["192.0.2.20 db.internal"], "stored as an /etc/hosts line");
        assert_eq!(container.groups, ["video"]);
        assert_eq!(container.hostname, "{{.Service.Name}}-{{.Task.Slot}}", "the agent expands the template");
        assert_eq!(task.resources.and_then(|r| r.limits).map(|l| l.pids), Some(100));
    }

    #[test]
    fn without_the_new_flags_the_fields_stay_empty() {
        let container = spec(&["--name", "web", "web:v1"]).expect("spec").task.and_then(|t| t.container).expect("c");
        assert_eq!(
            (container.secrets.len(), container.configs.len(), container.init, container.dns_config),
            (0, 0, false, None)
        );
        assert!(container.capability_add.is_empty() && container.sysctls.is_empty() && container.hosts.is_empty());
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
            (
                &["--secret", "source=db,mode=rw"],
                "invalid --secret \"source=db,mode=rw\": mode \"rw\" is not an octal mode",
            ),
            (&["--secret", "a", "--secret", "source=b,target=a"], "secrets a and b both have the target a"),
            (&["--config", "a", "--config", "source=b,target=/a"], "configs a and b both have the target /a"),
            (&["--mount", "type=bind,source=/a,target=/b,volume-nocopy"], "volume-nocopy is for type=volume mounts"),
            (&["--cap-add", "NET ADMIN"], "invalid capability \"NET ADMIN\""),
            (&["--sysctl", "vm.swappiness=1"], "a container can set only namespaced sysctls"),
            (&["--ulimit", "nofile=2:1"], "the soft limit 2 is above the hard limit 1"),
            (&["--dns", "resolver"], "invalid DNS server \"resolver\": expected an IP address"),
            (&["--host", "db"], "invalid host \"db\": expected HOST:IP"),
            (&["--limit-pids", "-5"], "is not a number of processes ≥ 0"),
            (&["--env-file", "/nonexistent/web.env"], "--env-file /nonexistent/web.env: cannot read it"),
            (&["--init=maybe"], "invalid value 'maybe' for '--init"),
        ];
        for (flags, expected) in cases {
            let argv = [&["--name", "web"], *flags, &["web:v1"]].concat();
            let err = spec(&argv).expect_err("refused").to_string();
            assert!(err.contains(expected), "{flags:?}: {err}");
        }
    }
}

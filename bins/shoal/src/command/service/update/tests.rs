//! `service update`'s flags applied to an existing spec: only what they name changes, removals
//! of what is not there and bad values are errors, `--force` bumps the force counter.

use std::time::Duration;

use clap::Parser;

use super::*;
use crate::command::service::opts::default_update_config;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: UpdateArgs,
}

/// A service as `create` made it, running for a while.
fn existing() -> v1::ServiceSpec {
    v1::ServiceSpec {
        annotations: Some(v1::Annotations {
            name: "web".into(),
            labels: [("tier".to_owned(), "front".to_owned())].into_iter().collect(),
        }),
        networks: vec![v1::NetworkAttachmentConfig { target: "net-backend-id".into(), aliases: vec![] }],
        mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 3 })),
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec {
                image: "web:v1".into(),
                args: vec!["serve".into()],
                env: vec!["A=1".into(), "B=2".into()],
                labels: [("team".to_owned(), "core".to_owned())].into_iter().collect(),
                mounts: vec![v1::Mount { source: "data".into(), target: "/data".into(), ..Default::default() }],
                ..Default::default()
            }),
            placement: Some(v1::Placement {
                constraints: vec!["node.role==worker".into()],
                preferences: vec![],
                max_replicas: 0,
                platforms: vec![],
            }),
            ..Default::default()
        }),
        update: Some(default_update_config()),
        ..Default::default()
    }
}

/// `spec` after `shoal service update ARGV web`.
fn updated(argv: &[&str], spec: &v1::ServiceSpec) -> Result<v1::ServiceSpec, String> {
    let argv = [&["update"], argv, &["web"]].concat();
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    let endpoint = EndpointEdit::parse(&cli.args.endpoint)?;
    let networks = HashMap::from([("backend".to_owned(), "net-backend-id".to_owned())]);
    let mut spec = spec.clone();
    edit_spec(&cli.args, &endpoint, &mut spec, &networks)?;
    Ok(spec)
}

fn container(spec: &v1::ServiceSpec) -> v1::ContainerSpec {
    spec.task.as_ref().and_then(|t| t.container.clone()).unwrap_or_default()
}

#[test]
fn no_flags_change_nothing() {
    assert_eq!(updated(&[], &existing()), Ok(existing()));
    assert_eq!(updated(&["--detach", "--quiet"], &existing()), Ok(existing()));
}

#[test]
fn each_flag_changes_its_field_only() {
    type Change = fn(&mut v1::ServiceSpec);
    let cases: &[(&[&str], Change)] = &[
        (&["--image", "web:v2"], |s| container_mut(s).image = "web:v2".into()),
        (&["--args", "serve --port 81"], |s| {
            container_mut(s).args = vec!["serve".into(), "--port".into(), "81".into()]
        }),
        (&["--args", ""], |s| container_mut(s).args = vec![]),
        (&["--entrypoint", "/bin/sh -c"], |s| container_mut(s).command = vec!["/bin/sh".into(), "-c".into()]),
        (&["--env-add", "B=3", "--env-add", "C=4"], |s| {
            container_mut(s).env = vec!["A=1".into(), "B=3".into(), "C=4".into()]
        }),
        (&["--env-rm", "A"], |s| container_mut(s).env = vec!["B=2".into()]),
        (&["--label-add", "tier=back", "--label-add", "x"], |s| {
            let labels = &mut s.annotations.as_mut().expect("annotations").labels;
            labels.insert("tier".into(), "back".into());
            labels.insert("x".into(), String::new());
        }),
        (&["--label-rm", "tier"], |s| s.annotations.as_mut().expect("annotations").labels.clear()),
        (&["--container-label-rm", "team", "--container-label-add", "owner=me"], |s| {
            container_mut(s).labels = [("owner".to_owned(), "me".to_owned())].into_iter().collect();
        }),
        (&["--constraint-rm", "node.role==worker", "--constraint-add", "node.labels.zone==a"], |s| {
            placement_mut(s).constraints = vec!["node.labels.zone==a".into()];
        }),
        (&["--placement-pref-add", "spread=node.labels.zone"], |s| {
            placement_mut(s).preferences = vec!["spread=node.labels.zone".into()];
        }),
        (&["--mount-add", "type=bind,source=/srv,target=/data"], |s| {
            container_mut(s).mounts = vec![v1::Mount {
                r#type: v1::mount::Type::Bind as i32,
                source: "/srv".into(),
                target: "/data".into(),
                ..Default::default()
            }];
        }),
        (&["--mount-rm", "/data"], |s| container_mut(s).mounts = vec![]),
        (&["--replicas", "5"], |s| {
            s.mode = Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 5 }))
        }),
        (&["--network-rm", "backend"], |s| s.networks.clear()),
        (&["--update-parallelism", "0", "--update-order", "start-first"], |s| {
            let update = s.update.as_mut().expect("update");
            update.parallelism = 0;
            update.order = v1::update_config::Order::StartFirst as i32;
        }),
        (&["--update-failure-action", "rollback", "--update-max-failure-ratio", "0.2"], |s| {
            let update = s.update.as_mut().expect("update");
            update.failure_action = v1::update_config::FailureAction::Rollback as i32;
            update.max_failure_ratio = 0.2;
        }),
        // No rollback config stored yet: docker's defaults, then the flag.
        (&["--rollback-delay", "10s"], |s| {
            s.rollback = Some(v1::UpdateConfig {
                delay: Some(shoal_api::to_duration(Duration::from_secs(10))),
                ..default_update_config()
            });
        }),
        (&["--health-cmd", "curl -f localhost", "--health-interval", "2s"], |s| {
            container_mut(s).healthcheck = Some(v1::HealthConfig {
                test: vec!["CMD-SHELL".into(), "curl -f localhost".into()],
                interval: Some(shoal_api::to_duration(Duration::from_secs(2))),
                ..Default::default()
            });
        }),
        (&["--no-healthcheck"], |s| {
            container_mut(s).healthcheck = Some(v1::HealthConfig { test: vec!["NONE".into()], ..Default::default() });
        }),
        (&["--limit-memory", "64M"], |s| {
            s.task.as_mut().expect("task").resources = Some(v1::ResourceRequirements {
                limits: Some(v1::Resources { memory_bytes: 64 << 20, ..Default::default() }),
                reservations: None,
            });
        }),
        (&["--restart-condition", "on-failure"], |s| {
            s.task.as_mut().expect("task").restart = Some(v1::RestartPolicy {
                condition: v1::restart_policy::Condition::OnFailure as i32,
                ..super::super::opts::default_restart_policy()
            });
        }),
        (&["--read-only"], |s| container_mut(s).read_only = true),
        (&["--user", "1000:1000", "--workdir", "/srv"], |s| {
            container_mut(s).user = "1000:1000".into();
            container_mut(s).dir = "/srv".into();
        }),
        (&["--force"], |s| s.task.as_mut().expect("task").force_update = 1),
    ];
    for (argv, change) in cases {
        let mut expected = existing();
        change(&mut expected);
        assert_eq!(updated(argv, &existing()), Ok(expected), "{argv:?}");
    }
}

fn container_mut(spec: &mut v1::ServiceSpec) -> &mut v1::ContainerSpec {
    spec.task.as_mut().and_then(|t| t.container.as_mut()).expect("container")
}

fn placement_mut(spec: &mut v1::ServiceSpec) -> &mut v1::Placement {
    spec.task.as_mut().and_then(|t| t.placement.as_mut()).expect("placement")
}

#[test]
fn force_bumps_each_time() {
    let once = updated(&["--force"], &existing()).expect("once");
    let twice = updated(&["--force"], &once).expect("twice");
    assert_eq!(twice.task.as_ref().map(|t| t.force_update), Some(2));
    assert_eq!(container(&twice), container(&existing()), "nothing else changes");
}

#[test]
fn bad_flags_are_errors_and_change_nothing() {
    let cases: &[(&[&str], &str)] = &[
        (&["--env-rm", "NOPE"], "--env-rm NOPE: the service has no environment variable NOPE"),
        (&["--label-rm", "nope"], "--label-rm nope: the service has no label nope"),
        (&["--container-label-rm", "nope"], "--container-label-rm nope: the service has no container label nope"),
        (
            &["--constraint-rm", "node.role==manager"],
            "--constraint-rm node.role==manager: the service has no constraint node.role==manager",
        ),
        (
            &["--placement-pref-rm", "spread=x"],
            "--placement-pref-rm spread=x: the service has no placement preference spread=x",
        ),
        (&["--mount-rm", "/nope"], "--mount-rm /nope: the service has no mount at /nope"),
        (&["--max-concurrent", "2"], "--max-concurrent can only be used with replicated-job mode"),
        (&["--image", ""], "--image is empty"),
        (&["--update-parallelism", "-1"], "\"-1\" is not a whole number ≥ 0"),
        (&["--update-max-failure-ratio", "1.5"], "\"1.5\" is not a ratio between 0 and 1"),
        (&["--update-failure-action", "retry"], "invalid value 'retry' for '--update-failure-action"),
        (&["--rollback-failure-action", "rollback"], "invalid value 'rollback' for '--rollback-failure-action"),
        (&["--env-add", "NOVALUE"], "invalid env \"NOVALUE\""),
        (&["--publish-rm", "9999"], "--publish-rm 9999: the service publishes no such port"),
        (&["--network-add", "backend"], "service is already attached to network backend"),
        (&["--health-cmd", "true", "--no-healthcheck"], "cannot be used with"),
    ];
    for (argv, expected) in cases {
        // A valid flag beside the bad one: nothing is written either way (the caller sends
        // only a spec that came back Ok).
        let argv = [*argv, &["--label-add", "valid=yes"]].concat();
        match updated(&argv, &existing()) {
            Ok(spec) => panic!("{argv:?} was taken: {spec:?}"),
            Err(err) => assert!(err.contains(expected), "{argv:?}: {err}"),
        }
    }
    let global = v1::ServiceSpec { mode: Some(v1::service_spec::Mode::Global(v1::GlobalService {})), ..existing() };
    assert_eq!(
        updated(&["--replicas", "2"], &global),
        Err("--replicas can only be used with replicated and replicated-job modes".to_owned())
    );
}

#[test]
fn jobs_take_replicas_and_max_concurrent() {
    let job = v1::ServiceSpec {
        mode: Some(v1::service_spec::Mode::ReplicatedJob(v1::ReplicatedJob {
            max_concurrent: 1,
            total_completions: 4,
        })),
        ..existing()
    };
    let spec = updated(&["--replicas", "10", "--max-concurrent", "3"], &job).expect("job");
    assert_eq!(
        spec.mode,
        Some(v1::service_spec::Mode::ReplicatedJob(v1::ReplicatedJob { max_concurrent: 3, total_completions: 10 }))
    );
}

/// `existing()` with secrets, configs and the container's other lists set, as a service made
/// with them and stored by the manager (IDs and versions resolved).
fn with_lists() -> v1::ServiceSpec {
    let mut spec = existing();
    let container = container_mut(&mut spec);
    let file = |name: &str| Some(v1::FileTarget { name: name.into(), uid: 0, gid: 0, mode: 0o444 });
    container.secrets = vec![v1::SecretReference {
        secret_id: "sec-id".into(),
        secret_name: "db_password".into(),
        file: file("db_password"),
        data_version: 2,
    }];
    container.configs = vec![v1::ConfigReference {
        config_id: "cfg-id".into(),
        config_name: "nginx_conf".into(),
        file: file("/etc/nginx/nginx.conf"),
        data_version: 1,
    }];
    container.capability_add = vec!["NET_ADMIN".into()];
    container.sysctls = [("net.core.somaxconn".to_owned(), "1024".to_owned())].into_iter().collect();
    container.ulimits = vec![v1::Ulimit { name: "nofile".into(), soft: 1024, hard: 1024 }];
    container.dns_config = Some(v1::DnsConfig {
        nameservers: vec!["192.0.2.53".into()],
        search: vec!["example.com".into()],
        options: vec!["ndots:2".into()],
    });
    container.hosts = vec!["192.0.2.20 db".into()];
    container.groups = vec!["video".into()];
    spec
}

#[test]
fn container_list_flags_add_and_remove() {
    type Change = fn(&mut v1::ContainerSpec);
    let cases: &[(&[&str], Change)] = &[
        (&["--secret-add", "source=api_key,target=/run/key,mode=0400"], |c| {
            c.secrets.push(v1::SecretReference {
                secret_id: String::new(),
                secret_name: "api_key".into(),
                file: Some(v1::FileTarget { name: "/run/key".into(), uid: 0, gid: 0, mode: 0o400 }),
                data_version: 0,
            })
        }),
        (&["--secret-rm", "db_password"], |c| c.secrets.clear()),
        // By target too, and the same target can be given to another secret at once.
        (&["--secret-rm", "db_password", "--secret-add", "source=db_password_v2,target=db_password"], |c| {
            c.secrets = vec![v1::SecretReference {
                secret_id: String::new(),
                secret_name: "db_password_v2".into(),
                file: Some(v1::FileTarget { name: "db_password".into(), uid: 0, gid: 0, mode: 0o444 }),
                data_version: 0,
            }]
        }),
        // An add at a target in use replaces that reference, as --mount-add.
        (&["--config-add", "source=nginx_v2,target=/etc/nginx/nginx.conf"], |c| {
            c.configs[0] = v1::ConfigReference {
                config_id: String::new(),
                config_name: "nginx_v2".into(),
                file: Some(v1::FileTarget { name: "/etc/nginx/nginx.conf".into(), uid: 0, gid: 0, mode: 0o444 }),
                data_version: 0,
            }
        }),
        (&["--config-rm", "/etc/nginx/nginx.conf"], |c| c.configs.clear()),
        (&["--cap-add", "SYS_TIME", "--cap-drop", "NET_ADMIN"], |c| {
            c.capability_add = vec!["SYS_TIME".into()];
            c.capability_drop = vec!["NET_ADMIN".into()];
        }),
        (&["--sysctl-add", "net.ipv4.ip_forward=1", "--sysctl-rm", "net.core.somaxconn"], |c| {
            c.sysctls = [("net.ipv4.ip_forward".to_owned(), "1".to_owned())].into_iter().collect();
        }),
        (&["--ulimit-add", "nofile=2048:4096", "--ulimit-add", "nproc=64"], |c| {
            c.ulimits = vec![
                v1::Ulimit { name: "nofile".into(), soft: 2048, hard: 4096 },
                v1::Ulimit { name: "nproc".into(), soft: 64, hard: 64 },
            ]
        }),
        (&["--ulimit-rm", "nofile"], |c| c.ulimits.clear()),
        (&["--dns-rm", "192.0.2.53", "--dns-add", "192.0.2.54", "--dns-option-add", "timeout:3"], |c| {
            let dns = c.dns_config.as_mut().expect("dns");
            dns.nameservers = vec!["192.0.2.54".into()];
            dns.options.push("timeout:3".into());
        }),
        (&["--dns-search-rm", "example.com", "--dns-option-rm", "ndots:2"], |c| {
            let dns = c.dns_config.as_mut().expect("dns");
            dns.search.clear();
            dns.options.clear();
        }),
        (&["--host-add", "cache:192.0.2.30"], |c| c.hosts.push("192.0.2.30 cache".into())),
        (&["--host-rm", "db"], |c| c.hosts.clear()),
        (&["--group-add", "audio", "--group-rm", "video"], |c| c.groups = vec!["audio".into()]),
        (&["--init"], |c| c.init = true),
        (&["--hostname", "{{.Node.Hostname}}-{{.Task.Slot}}"], |c| {
            c.hostname = "{{.Node.Hostname}}-{{.Task.Slot}}".into()
        }),
        (&["--mount-add", "type=bind,source=/srv,target=/srv,bind-propagation=shared"], |c| {
            c.mounts.push(v1::Mount {
                r#type: v1::mount::Type::Bind as i32,
                source: "/srv".into(),
                target: "/srv".into(),
                bind_options: Some(v1::mount::BindOptions {
                    propagation: v1::mount::bind_options::Propagation::Shared as i32,
                }),
                ..Default::default()
            })
        }),
    ];
    for (argv, change) in cases {
        let mut expected = with_lists();
        change(container_mut(&mut expected));
        assert_eq!(updated(argv, &with_lists()), Ok(expected), "{argv:?}");
    }
    // The DNS config is made only when a DNS flag is given.
    let spec = updated(&["--dns-add", "192.0.2.1"], &existing()).expect("dns");
    assert_eq!(container(&spec).dns_config.map(|d| d.nameservers), Some(vec!["192.0.2.1".to_owned()]));
    let spec = updated(&["--init=false"], &with_lists()).expect("init");
    assert!(!container(&spec).init);
    let spec = updated(&["--limit-pids", "50"], &existing()).expect("pids");
    assert_eq!(spec.task.and_then(|t| t.resources).and_then(|r| r.limits).map(|l| l.pids), Some(50));
}

#[test]
fn removing_what_the_service_lacks_is_an_error() {
    let cases: &[(&[&str], &str)] = &[
        (&["--secret-rm", "nope"], "--secret-rm nope: the service has no secret nope (by name or target)"),
        (&["--config-rm", "nope"], "--config-rm nope: the service has no config nope (by name or target)"),
        (&["--sysctl-rm", "net.nope"], "--sysctl-rm net.nope: the service has no sysctl net.nope"),
        (&["--ulimit-rm", "core"], "--ulimit-rm core: the service has no ulimit core"),
        (&["--dns-rm", "192.0.2.99"], "--dns-rm 192.0.2.99: the service has no DNS server 192.0.2.99"),
        (&["--dns-search-rm", "nope.com"], "--dns-search-rm nope.com: the service has no DNS search domain nope.com"),
        (&["--dns-option-rm", "rotate"], "--dns-option-rm rotate: the service has no DNS option rotate"),
        (&["--host-rm", "nope"], "--host-rm nope: the service has no host entry nope"),
        (&["--group-rm", "audio"], "--group-rm audio: the service has no group audio"),
        (&["--secret-add", "a", "--secret-add", "source=b,target=a"], "secrets a and b both have the target a"),
        (&["--secret-add", "source=x,mode=9"], "mode \"9\" is not an octal mode"),
        (&["--ulimit-add", "nofile"], "expected NAME=SOFT[:HARD]"),
        (&["--host-add", "db"], "expected HOST:IP"),
    ];
    for (argv, expected) in cases {
        match updated(argv, &with_lists()) {
            Ok(spec) => panic!("{argv:?} was taken: {spec:?}"),
            Err(err) => assert!(err.contains(expected), "{argv:?}: {err}"),
        }
    }
}

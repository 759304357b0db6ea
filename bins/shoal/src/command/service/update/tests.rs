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

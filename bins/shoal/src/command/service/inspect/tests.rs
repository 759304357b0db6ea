//! `service inspect` as text: docker's pretty format line for line, and the JSON's new parts.

use super::*;
use crate::command::service::opts::default_update_config;

#[test]
fn durations_and_sizes_read_like_go() {
    let cases = [
        (Duration::ZERO, "0s"),
        (Duration::from_millis(500), "500ms"),
        (Duration::from_secs(5), "5s"),
        (Duration::from_millis(1500), "1.5s"),
        (Duration::from_secs(90), "1m30s"),
        (Duration::from_secs(3600), "1h0m0s"),
        (Duration::from_micros(20), "20µs"),
    ];
    for (duration, expected) in cases {
        assert_eq!(go_duration(duration), expected);
    }
    assert_eq!(bytes_size(64 << 20), "64MiB");
    assert_eq!(bytes_size(3 << 29), "1.5GiB");
    assert_eq!(bytes_size(512), "512B");
}

fn web() -> v1::Service {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    v1::Service {
        id: "qv0ndnpkrtfi2l3zxx9bqfp7c".into(),
        spec: Some(v1::ServiceSpec {
            annotations: Some(v1::Annotations {
                name: "web".into(),
                labels: [("tier".to_owned(), "front".to_owned())].into_iter().collect(),
            }),
            networks: vec![v1::NetworkAttachmentConfig { target: "netid".into(), aliases: vec![] }],
            endpoint: Some(v1::EndpointSpec {
                mode: v1::endpoint_spec::Mode::Vip as i32,
                ports: vec![v1::PortConfig { target_port: 80, published_port: 8080, ..Default::default() }],
            }),
            mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 3 })),
            task: Some(v1::TaskSpec {
                container: Some(v1::ContainerSpec {
                    image: "web:v2".into(),
                    args: vec!["serve".into(), "--port".into(), "80".into()],
                    env: vec!["A=1".into()],
                    healthcheck: Some(v1::HealthConfig {
                        test: vec!["CMD-SHELL".into(), "wget -q localhost".into()],
                        interval: Some(shoal_api::to_duration(Duration::from_secs(2))),
                        retries: 2,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                resources: Some(v1::ResourceRequirements {
                    limits: Some(v1::Resources {
                        memory_bytes: 128 << 20,
                        nano_cpus: 500_000_000,
                        ..Default::default()
                    }),
                    reservations: Some(v1::Resources::default()),
                }),
                placement: Some(v1::Placement { constraints: vec!["node.role==worker".into()], ..Default::default() }),
                ..Default::default()
            }),
            update: Some(v1::UpdateConfig {
                parallelism: 2,
                delay: Some(shoal_api::to_duration(Duration::from_secs(10))),
                ..default_update_config()
            }),
            rollback: Some(default_update_config()),
        }),
        update_status: Some(v1::UpdateStatus {
            state: UpdateState::Updating as i32,
            started_at: Some(shoal_api::to_timestamp(now - Duration::from_secs(30))),
            completed_at: None,
            message: "update in progress".into(),
        }),
        ..Default::default()
    }
}

#[test]
fn pretty_is_dockers_human_format() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let networks = HashMap::from([("netid".to_owned(), "backend".to_owned())]);
    let expected = "
ID:             qv0ndnpkrtfi2l3zxx9bqfp7c
Name:           web
Labels:
 tier=front
Service Mode:   Replicated
 Replicas:      3
UpdateStatus:
 State:         updating
 Started:       30 seconds ago
 Message:       update in progress
Placement:
 Constraints:   [node.role==worker]
UpdateConfig:
 Parallelism:   2
 Delay:         10s
 On failure:    pause
 Monitoring Period: 5s
 Max failure ratio: 0
 Update order:      stop-first
RollbackConfig:
 Parallelism:   1
 On failure:    pause
 Monitoring Period: 5s
 Max failure ratio: 0
 Rollback order:      stop-first
ContainerSpec:
 Image:         web:v2
 Args:          serve --port 80
 Env:           A=1
 Healthcheck:
  Interval = 2s
  Retries = 2
  StartPeriod = 0s
  Timeout = 0s
  Tests:
   Test = CMD-SHELL
   Test = wget -q localhost
Resources:
 Limits:
  CPU:          0.5
  Memory:       128MiB
Networks: backend
Endpoint Mode:  vip
Ports:
 PublishedPort = 8080
  Protocol = tcp
  TargetPort = 80
  PublishMode = ingress
";
    assert_eq!(pretty(&web(), &networks, now), expected);
}

#[test]
fn json_has_the_configs_and_the_update_status() {
    let json = service_json(&web());
    assert_eq!(json["UpdateStatus"]["State"], "updating");
    assert_eq!(json["UpdateStatus"]["Message"], "update in progress");
    assert_eq!(
        json["Spec"]["UpdateConfig"],
        serde_json::json!({"Parallelism": 2, "Delay": 10_000_000_000u64, "FailureAction": "pause", "Monitor": 5_000_000_000u64, "MaxFailureRatio": 0.0, "Order": "stop-first"})
    );
    assert_eq!(json["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"]["Test"][1], "wget -q localhost");
    assert_eq!(json["Spec"]["TaskTemplate"]["Resources"]["Limits"]["MemoryBytes"], 128 << 20);
    assert_eq!(json["Spec"]["Labels"]["tier"], "front");
    assert!(json.get("PreviousSpec").is_none(), "none before the first update");
}

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

/// A service with every container list and mount option set.
fn full() -> v1::Service {
    let mut service = web();
    let container =
        service.spec.as_mut().and_then(|s| s.task.as_mut()).and_then(|t| t.container.as_mut()).expect("container");
    container.healthcheck = None;
    container.dir = "/srv".into();
    container.init = true;
    container.groups = vec!["video".into(), "1001".into()];
    container.capability_add = vec!["NET_ADMIN".into(), "SYS_TIME".into()];
    container.capability_drop = vec!["MKNOD".into()];
    container.sysctls = [("net.ipv4.ip_forward".to_owned(), "1".to_owned())].into_iter().collect();
    container.ulimits = vec![
        v1::Ulimit { name: "nproc".into(), soft: 64, hard: 64 },
        v1::Ulimit { name: "nofile".into(), soft: 1024, hard: 2048 },
    ];
    container.mounts = vec![
        v1::Mount {
            r#type: v1::mount::Type::Volume as i32,
            source: "data".into(),
            target: "/data".into(),
            volume_options: Some(v1::mount::VolumeOptions {
                no_copy: true,
                labels: [("team".to_owned(), "web".to_owned())].into_iter().collect(),
                driver: String::new(),
                driver_options: [("type", "nfs"), ("o", "addr=192.0.2.10,nfsvers=4"), ("device", ":/export")]
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            }),
            ..Default::default()
        },
        v1::Mount {
            r#type: v1::mount::Type::Bind as i32,
            source: "/srv".into(),
            target: "/srv".into(),
            read_only: true,
            bind_options: Some(v1::mount::BindOptions {
                propagation: v1::mount::bind_options::Propagation::Rshared as i32,
            }),
            ..Default::default()
        },
        v1::Mount {
            r#type: v1::mount::Type::Tmpfs as i32,
            target: "/run".into(),
            tmpfs_size_bytes: 64 << 20,
            tmpfs_mode: 0o1770,
            ..Default::default()
        },
    ];
    let file = |name: &str, uid, gid, mode| Some(v1::FileTarget { name: name.into(), uid, gid, mode });
    container.secrets = vec![v1::SecretReference {
        secret_id: "secid".into(),
        secret_name: "db_password".into(),
        file: file("db_password", 0, 0, 0o400),
        data_version: 2,
    }];
    container.configs = vec![v1::ConfigReference {
        config_id: "cfgid".into(),
        config_name: "nginx_conf".into(),
        file: file("/etc/nginx/nginx.conf", 101, 101, 0o444),
        data_version: 1,
    }];
    container.dns_config = Some(v1::DnsConfig {
        nameservers: vec!["192.0.2.53".into()],
        search: vec!["example.com".into()],
        options: vec!["ndots:2".into(), "timeout:3".into()],
    });
    container.hosts = vec!["192.0.2.20 db db-primary".into()];
    let limits = service
        .spec
        .as_mut()
        .and_then(|s| s.task.as_mut())
        .and_then(|t| t.resources.as_mut())
        .and_then(|r| r.limits.as_mut())
        .expect("limits");
    limits.pids = 100;
    service
}

#[test]
fn pretty_shows_the_container_lists() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let text = pretty(&full(), &HashMap::new(), now);
    let from = text.find("ContainerSpec:").expect("container spec");
    let to = text.find("Networks:").expect("networks");
    let expected = "ContainerSpec:
 Image:         web:v2
 Args:          serve --port 80
 Env:           A=1
 Dir:           /srv
 Init:          true
 Groups:        video 1001
Capabilities:
 Add: NET_ADMIN, SYS_TIME
 Drop: MKNOD
SysCtls:
 net.ipv4.ip_forward: 1
Ulimits:
 nofile: 1024:2048
 nproc: 64:64
Mounts:
 Target:        /data
  Source:       data
  ReadOnly:     false
  Type:         volume
  NoCopy:       true
  Driver:       local
  Options:      device=:/export, o=addr=192.0.2.10,nfsvers=4, type=nfs
  Labels:       team=web
 Target:        /srv
  Source:       /srv
  ReadOnly:     true
  Type:         bind
  Propagation:  rshared
 Target:        /run
  Source:       
  ReadOnly:     false
  Type:         tmpfs
  Size:         64MiB
  Mode:         1770
Configs:
 Target:        /etc/nginx/nginx.conf
  Source:       nginx_conf
  UID: 101, GID: 101, Mode: 0444
  Version:      1
Secrets:
 Target:        db_password
  Source:       db_password
  UID: 0, GID: 0, Mode: 0400
  Version:      2
DNS:
 Nameservers:  192.0.2.53
 Search:       example.com
 Options:      ndots:2 timeout:3
Hosts:
 192.0.2.20 db db-primary
Resources:
 Limits:
  CPU:          0.5
  Memory:       128MiB
  PIDs:         100
";
    assert_eq!(&text[from..to], expected);
}

#[test]
fn json_has_the_container_lists_as_docker_names_them() {
    let json = service_json(&full());
    let container = &json["Spec"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(
        container["Secrets"],
        serde_json::json!([{"File": {"Name": "db_password", "UID": "0", "GID": "0", "Mode": 0o400}, "SecretID": "secid", "SecretName": "db_password", "DataVersion": 2}])
    );
    assert_eq!(container["Configs"][0]["ConfigName"], "nginx_conf");
    assert_eq!(container["Configs"][0]["File"]["UID"], "101");
    assert_eq!(container["Init"], true);
    assert_eq!(container["CapabilityAdd"], serde_json::json!(["NET_ADMIN", "SYS_TIME"]));
    assert_eq!(container["CapabilityDrop"], serde_json::json!(["MKNOD"]));
    assert_eq!(container["Sysctls"], serde_json::json!({"net.ipv4.ip_forward": "1"}));
    assert_eq!(container["Ulimits"][1], serde_json::json!({"Name": "nofile", "Soft": 1024, "Hard": 2048}));
    assert_eq!(
        container["DNSConfig"],
        serde_json::json!({"Nameservers": ["192.0.2.53"], "Search": ["example.com"], "Options": ["ndots:2", "timeout:3"]})
    );
    assert_eq!(container["Hosts"], serde_json::json!(["192.0.2.20 db db-primary"]));
    assert_eq!(container["Groups"], serde_json::json!(["video", "1001"]));
    assert_eq!(
        container["Mounts"][0]["VolumeOptions"],
        serde_json::json!({"NoCopy": true, "Labels": {"team": "web"}, "DriverConfig": {"Name": "local", "Options": {"type": "nfs", "o": "addr=192.0.2.10,nfsvers=4", "device": ":/export"}}})
    );
    assert_eq!(container["Mounts"][1]["BindOptions"], serde_json::json!({"Propagation": "rshared"}));
    assert_eq!(container["Mounts"][2]["TmpfsOptions"], serde_json::json!({"SizeBytes": 64 << 20, "Mode": 0o1770}));
    assert_eq!(json["Spec"]["TaskTemplate"]["Resources"]["Limits"]["Pids"], 100);
    let plain = service_json(&web());
    assert!(plain["Spec"]["TaskTemplate"]["ContainerSpec"].get("Secrets").is_none(), "left out when empty");
    assert!(plain["Spec"]["TaskTemplate"]["ContainerSpec"].get("Init").is_none());
}

//! Tests of `convert`: compose texts to the stack's objects, in docker's terms — names and
//! labels, externals, every deploy key, ports, volumes, secrets and configs, networks and
//! their aliases, dependencies — and the files it refuses, each with what to do. Every service
//! spec made must also pass the manager's own validation.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use shoal_api::v1;
use shoal_compose::{Condition, LoadOptions, Source, load_sources};

use super::*;

const STACK: &str = "shop";

/// The files secrets and configs come from, for every case.
fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    match path.to_str() {
        Some("/srv/shop/db_password.txt") => Ok(b"s3cret\n".to_vec()),
        Some("/srv/shop/nginx.conf") => Ok(b"server {}\n".to_vec()),
        _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")),
    }
}

/// Loads `yaml` as /srv/shop/compose.yml and converts it into stack `shop`; the error as text.
fn convert_text(yaml: &str) -> Result<Converted, String> {
    let env = [("DB_PASSWORD".to_owned(), "from-env".to_owned())].into();
    let options = LoadOptions { env, ignore_dot_env: true, ..LoadOptions::default() };
    let loaded = load_sources(&[Source::new("/srv/shop/compose.yml", yaml)], &options).map_err(|e| e.to_string())?;
    let converted = convert(&loaded.project, STACK, &read).map_err(|e| format!("{e:#}"))?;
    for service in &converted.stack.services {
        if let Err(e) = shoal_manager::validate_service_spec(&service.spec) {
            return Err(format!("the manager refuses {}: {e}", service.name()));
        }
    }
    Ok(converted)
}

fn sorted(labels: &HashMap<String, String>) -> String {
    let labels: BTreeMap<&String, &String> = labels.iter().collect();
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// One line per object: what is created (with its labels) or looked up, and for services their
/// networks (with aliases), secrets, configs, mounts and the services they wait for.
fn summary(stack: &Stack) -> Vec<String> {
    let mut lines = Vec::new();
    for network in &stack.networks {
        lines.push(match &network.spec {
            None => format!("network {} external", network.name),
            Some(spec) => {
                let labels = spec.annotations.as_ref().map(|a| sorted(&a.labels)).unwrap_or_default();
                format!("network {} {} {labels}", network.name, spec.driver)
            }
        });
    }
    for (noun, payloads) in [("secret", &stack.secrets), ("config", &stack.configs)] {
        for payload in payloads {
            lines.push(match &payload.content {
                None => format!("{noun} {} external", payload.name),
                Some(content) => format!(
                    "{noun} {} {:?} {}",
                    payload.name,
                    String::from_utf8_lossy(&content.data),
                    sorted(&content.labels)
                ),
            });
        }
    }
    for service in &stack.services {
        let spec = &service.spec;
        let container = spec.task.as_ref().and_then(|t| t.container.clone()).unwrap_or_default();
        let networks: Vec<String> =
            spec.networks.iter().map(|n| format!("{}[{}]", n.target, n.aliases.join(","))).collect();
        let mut line = format!("service {} networks={}", service.name(), networks.join(","));
        for s in &container.secrets {
            let file = s.file.clone().unwrap_or_default();
            line.push_str(&format!(
                " secret={}>{}:{}:{}:{:o}",
                s.secret_name, file.name, file.uid, file.gid, file.mode
            ));
        }
        for c in &container.configs {
            let file = c.file.clone().unwrap_or_default();
            line.push_str(&format!(" config={}>{}:{:o}", c.config_name, file.name, file.mode));
        }
        for m in &container.mounts {
            line.push_str(&format!(" mount={}:{}", m.source, m.target));
        }
        for (dependency, condition) in &service.waits_for {
            line.push_str(&format!(" waits={dependency}:{}", condition.as_str()));
        }
        lines.push(line);
    }
    lines
}

/// A name, a compose text, and the summary of its stack.
type Case = (&'static str, &'static str, &'static [&'static str]);

#[test]
fn names_labels_and_externals() {
    let cases: &[Case] = &[
        (
            "a service alone is on STACK_default, reachable by its name in the file",
            "services:\n  web:\n    image: nginx\n",
            &[
                "network shop_default overlay com.docker.stack.namespace=shop",
                "service shop_web networks=shop_default[web]",
            ],
        ),
        (
            "networks: STACK_NET, a name: wins, an external one is looked up by its name",
            r#"
services:
  web:
    image: nginx
    networks:
      front: { aliases: [www] }
      shared:
      legacy:
networks:
  front:
    labels: { tier: front }
  shared:
    name: shared-net
  legacy:
    external: true
    name: corp-net
  unused: {}
"#,
            &[
                "network shop_front overlay com.docker.stack.namespace=shop,tier=front",
                "network corp-net external",
                "network shared-net overlay com.docker.stack.namespace=shop",
                "service shop_web networks=corp-net[web],shared-net[web],shop_front[www,web]",
            ],
        ),
        (
            "secrets and configs: STACK_NAME from a file, the environment or inline; external by name; targets, \
             owners and modes",
            r#"
services:
  web:
    image: nginx
    secrets:
      - db_password
      - source: api_key
        target: /etc/api.key
        uid: "101"
        gid: "102"
        mode: 0400
      - tls
    configs:
      - nginx
      - source: motd
        target: /etc/motd
        mode: 0440
secrets:
  db_password:
    file: ./db_password.txt
    labels: { rotate: monthly }
  api_key:
    environment: DB_PASSWORD
  tls:
    external: true
    name: corp_tls
configs:
  nginx:
    file: ./nginx.conf
  motd:
    content: hello
"#,
            &[
                "network shop_default overlay com.docker.stack.namespace=shop",
                "secret shop_api_key \"from-env\" com.docker.stack.namespace=shop",
                "secret shop_db_password \"s3cret\\n\" com.docker.stack.namespace=shop,rotate=monthly",
                "secret corp_tls external",
                "config shop_motd \"hello\" com.docker.stack.namespace=shop",
                "config shop_nginx \"server {}\\n\" com.docker.stack.namespace=shop",
                "service shop_web networks=shop_default[web] secret=shop_db_password>db_password:0:0:444 \
                 secret=shop_api_key>/etc/api.key:101:102:400 secret=corp_tls>tls:0:0:444 \
                 config=shop_nginx>/nginx:444 config=shop_motd>/etc/motd:440",
            ],
        ),
        (
            "volumes: named STACK_VOL, a name: wins, external by name, binds as they are",
            r#"
services:
  db:
    image: postgres
    volumes:
      - data:/var/lib/postgresql/data
      - logs:/var/log
      - backups:/backups:ro
      - ./initdb:/docker-entrypoint-initdb.d
volumes:
  data:
  logs:
    name: shared-logs
  backups:
    external: true
"#,
            &[
                "network shop_default overlay com.docker.stack.namespace=shop",
                "service shop_db networks=shop_default[db] mount=shop_data:/var/lib/postgresql/data \
                 mount=shared-logs:/var/log mount=backups:/backups mount=/srv/shop/initdb:/docker-entrypoint-initdb.d",
            ],
        ),
        (
            "depends_on: dependencies first, with the condition of each edge",
            r#"
services:
  web:
    image: nginx
    depends_on:
      api: { condition: service_healthy }
      migrate: { condition: service_completed_successfully }
  api:
    image: api
    depends_on: [db]
  db:
    image: postgres
  migrate:
    image: api
    command: migrate
    deploy: { mode: replicated-job }
"#,
            &[
                "network shop_default overlay com.docker.stack.namespace=shop",
                "service shop_db networks=shop_default[db]",
                "service shop_api networks=shop_default[api] waits=shop_db:service_started",
                "service shop_migrate networks=shop_default[migrate]",
                "service shop_web networks=shop_default[web] waits=shop_api:service_healthy \
                 waits=shop_migrate:service_completed_successfully",
            ],
        ),
    ];
    for (name, yaml, expected) in cases {
        let converted = convert_text(yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(summary(&converted.stack), *expected, "{name}");
    }
}

#[test]
fn every_key_of_a_service() {
    let yaml = r#"
services:
  web:
    image: shoal-test/web:v1
    command: ["serve", "--port", "80"]
    entrypoint: /bin/entry -v
    environment:
      LOG: debug
      EMPTY: ""
    labels: { team: web }
    user: "1000:1000"
    working_dir: /app
    hostname: "{{.Service.Name}}-{{.Task.Slot}}"
    stop_grace_period: 1m30s
    stop_signal: SIGQUIT
    read_only: true
    init: true
    cap_add: [net_admin, CAP_SYS_TIME]
    cap_drop: [MKNOD]
    sysctls: { net.core.somaxconn: "1024" }
    ulimits:
      nofile: { soft: 1024, hard: 2048 }
      nproc: 64
    dns: [192.0.2.53]
    dns_search: [example.com]
    dns_opt: ["ndots:2"]
    extra_hosts: ["db.internal:192.0.2.20"]
    group_add: [video]
    tmpfs: ["/run:size=64m,mode=1777"]
    platform: linux/arm64
    healthcheck:
      test: curl -f http://localhost/health
      interval: 10s
      timeout: 2s
      retries: 3
      start_period: 30s
    deploy:
      mode: replicated
      replicas: 3
      labels: { tier: front }
      endpoint_mode: vip
      resources:
        limits: { cpus: "0.5", memory: 256M, pids: 100 }
        reservations:
          cpus: "0.25"
          memory: 64M
          generic_resources:
            - discrete_resource_spec: { kind: gpu, value: 2 }
      restart_policy:
        condition: on-failure
        delay: 10s
        max_attempts: 3
        window: 2m
      update_config:
        parallelism: 2
        delay: 5s
        failure_action: rollback
        monitor: 30s
        max_failure_ratio: 0.25
        order: start-first
      rollback_config:
        parallelism: 0
        failure_action: continue
      placement:
        constraints: [node.role==worker]
        preferences: [{ spread: node.labels.zone }]
        max_replicas_per_node: 2
"#;
    let converted = convert_text(yaml).expect("converts");
    let d = |secs| Some(shoal_api::to_duration(Duration::from_secs(secs)));
    let labels = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    let strings = |items: &[&str]| -> Vec<String> { items.iter().map(|s| (*s).to_owned()).collect() };
    let expected = v1::ServiceSpec {
        annotations: Some(v1::Annotations {
            name: "shop_web".into(),
            labels: labels(&[
                ("tier", "front"),
                ("com.docker.stack.namespace", "shop"),
                ("com.docker.stack.image", "shoal-test/web:v1"),
            ]),
        }),
        networks: vec![v1::NetworkAttachmentConfig { target: "shop_default".into(), aliases: strings(&["web"]) }],
        endpoint: Some(v1::EndpointSpec { mode: v1::endpoint_spec::Mode::Vip as i32, ports: vec![] }),
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec {
                image: "shoal-test/web:v1".into(),
                labels: labels(&[("team", "web"), ("com.docker.stack.namespace", "shop")]),
                command: strings(&["/bin/entry", "-v"]),
                args: strings(&["serve", "--port", "80"]),
                hostname: "{{.Service.Name}}-{{.Task.Slot}}".into(),
                env: strings(&["EMPTY=", "LOG=debug"]),
                dir: "/app".into(),
                user: "1000:1000".into(),
                mounts: vec![v1::Mount {
                    r#type: v1::mount::Type::Tmpfs as i32,
                    target: "/run".into(),
                    tmpfs_size_bytes: 64 << 20,
                    tmpfs_mode: 0o1777,
                    ..Default::default()
                }],
                stop_grace_period: d(90),
                stop_signal: "SIGQUIT".into(),
                healthcheck: Some(v1::HealthConfig {
                    test: strings(&["CMD-SHELL", "curl -f http://localhost/health"]),
                    interval: d(10),
                    timeout: d(2),
                    retries: 3,
                    start_period: d(30),
                }),
                read_only: true,
                seccomp: 0,
                secrets: vec![],
                configs: vec![],
                init: true,
                capability_add: strings(&["NET_ADMIN", "SYS_TIME"]),
                capability_drop: strings(&["MKNOD"]),
                sysctls: labels(&[("net.core.somaxconn", "1024")]),
                ulimits: vec![
                    v1::Ulimit { name: "nofile".into(), soft: 1024, hard: 2048 },
                    v1::Ulimit { name: "nproc".into(), soft: 64, hard: 64 },
                ],
                dns_config: Some(v1::DnsConfig {
                    nameservers: strings(&["192.0.2.53"]),
                    search: strings(&["example.com"]),
                    options: strings(&["ndots:2"]),
                }),
                hosts: strings(&["192.0.2.20 db.internal"]),
                groups: strings(&["video"]),
            }),
            resources: Some(v1::ResourceRequirements {
                limits: Some(v1::Resources {
                    nano_cpus: 500_000_000,
                    memory_bytes: 256 << 20,
                    generic: vec![],
                    pids: 100,
                }),
                reservations: Some(v1::Resources {
                    nano_cpus: 250_000_000,
                    memory_bytes: 64 << 20,
                    generic: vec![v1::GenericResource { kind: "gpu".into(), value: 2 }],
                    pids: 0,
                }),
            }),
            restart: Some(v1::RestartPolicy {
                condition: v1::restart_policy::Condition::OnFailure as i32,
                delay: d(10),
                max_attempts: 3,
                window: d(120),
            }),
            placement: Some(v1::Placement {
                constraints: strings(&["node.role==worker"]),
                preferences: strings(&["spread=node.labels.zone"]),
                max_replicas: 2,
                platforms: vec![v1::Platform { architecture: "arm64".into(), os: "linux".into() }],
            }),
            force_update: 0,
        }),
        mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 3 })),
        update: Some(v1::UpdateConfig {
            parallelism: 2,
            delay: d(5),
            failure_action: v1::update_config::FailureAction::Rollback as i32,
            monitor: d(30),
            max_failure_ratio: 0.25,
            order: v1::update_config::Order::StartFirst as i32,
        }),
        rollback: Some(v1::UpdateConfig {
            parallelism: 0,
            delay: d(0),
            failure_action: v1::update_config::FailureAction::Continue as i32,
            monitor: d(5),
            max_failure_ratio: 0.0,
            order: v1::update_config::Order::StopFirst as i32,
        }),
    };
    assert_eq!(converted.stack.services[0].spec, expected);
    assert_eq!(converted.warnings, Vec::<String>::new());
}

#[test]
fn defaults_are_dockers() {
    let converted = convert_text("services:\n  web:\n    image: nginx\n").expect("converts");
    let spec = &converted.stack.services[0].spec;
    let task = spec.task.clone().unwrap_or_default();
    assert_eq!(spec.mode, Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 1 })));
    assert_eq!(spec.endpoint, None, "no ports, no endpoint mode: the manager's default (VIP)");
    let restart = task.restart.unwrap_or_default();
    assert_eq!(
        (restart.condition, restart.delay, restart.max_attempts),
        (v1::restart_policy::Condition::Any as i32, Some(shoal_api::to_duration(Duration::from_secs(5))), 0)
    );
    let update = spec.update.unwrap_or_default();
    assert_eq!((update.parallelism, update.failure_action), (1, v1::update_config::FailureAction::Pause as i32));
    assert_eq!(update.monitor, Some(shoal_api::to_duration(Duration::from_secs(5))));
    assert_eq!(spec.rollback, spec.update);
    let container = task.container.unwrap_or_default();
    assert_eq!((container.healthcheck, container.init, container.dns_config), (None, false, None));
}

#[test]
fn modes_and_the_restart_fallback() {
    let mode = |yaml: &str| convert_text(yaml).map(|c| c.stack.services[0].spec.mode);
    use v1::service_spec::Mode;
    type Case = (&'static str, &'static str, Result<Option<Mode>, &'static str>);
    let cases: &[Case] = &[
        (
            "replicated",
            "services:\n  a:\n    image: x\n    deploy: { replicas: 4 }\n",
            Ok(Some(Mode::Replicated(v1::ReplicatedService { replicas: 4 }))),
        ),
        (
            "scale is the replicas' fallback",
            "services:\n  a:\n    image: x\n    scale: 2\n",
            Ok(Some(Mode::Replicated(v1::ReplicatedService { replicas: 2 }))),
        ),
        (
            "global",
            "services:\n  a:\n    image: x\n    deploy: { mode: global }\n",
            Ok(Some(Mode::Global(v1::GlobalService {}))),
        ),
        (
            "a replicated job runs its replicas at once",
            "services:\n  a:\n    image: x\n    deploy: { mode: replicated-job, replicas: 3 }\n",
            Ok(Some(Mode::ReplicatedJob(v1::ReplicatedJob { max_concurrent: 3, total_completions: 3 }))),
        ),
        (
            "a global job",
            "services:\n  a:\n    image: x\n    deploy: { mode: global-job }\n",
            Ok(Some(Mode::GlobalJob(v1::GlobalJob {}))),
        ),
    ];
    for (name, yaml, expected) in cases {
        assert_eq!(mode(yaml), expected.map_err(str::to_owned), "{name}");
    }
    let restart = |yaml: &str| {
        convert_text(yaml).map(|c| c.stack.services[0].spec.task.clone().and_then(|t| t.restart).map(|r| r.condition))
    };
    let on_failure = v1::restart_policy::Condition::OnFailure as i32;
    let none = v1::restart_policy::Condition::None as i32;
    assert_eq!(restart("services:\n  a:\n    image: x\n    restart: on-failure\n"), Ok(Some(on_failure)));
    assert_eq!(restart("services:\n  a:\n    image: x\n    restart: \"no\"\n"), Ok(Some(none)));
    assert_eq!(
        restart(
            "services:\n  a:\n    image: x\n    restart: \"no\"\n    deploy:\n      restart_policy: { condition: on-failure }\n"
        ),
        Ok(Some(on_failure)),
        "deploy.restart_policy wins over restart:"
    );
}

#[test]
fn ports_long_and_short() {
    let yaml = r#"
services:
  web:
    image: nginx
    ports:
      - "8080:80"
      - "127.0.0.1:8443:443"
      - "53:53/udp"
      - "9000-9001:9000-9001"
      - target: 7946
        published: 7946
        protocol: tcp
        mode: host
      - target: 3000
        name: app
"#;
    let converted = convert_text(yaml).expect("converts");
    let endpoint = converted.stack.services[0].spec.endpoint.clone().expect("an endpoint");
    let ports: Vec<String> = endpoint
        .ports
        .iter()
        .map(|p| {
            let protocol = crate::render::protocol_name(p.protocol);
            let mode = crate::render::publish_mode_name(p.publish_mode);
            format!("{}{}:{}/{protocol}/{mode}", p.name, p.published_port, p.target_port)
        })
        .collect();
    assert_eq!(
        ports,
        [
            "app0:3000/tcp/ingress",
            "53:53/udp/ingress",
            "7946:7946/tcp/host",
            "8080:80/tcp/ingress",
            "8443:443/tcp/ingress",
            "9000:9000/tcp/ingress",
            "9001:9001/tcp/ingress"
        ],
        "sorted by published port, as docker; a port without one gets one from the cluster"
    );
    assert_eq!(
        converted.warnings,
        ["service web: the host address 127.0.0.1 of port 443 is ignored: Swarm publishes on every address"]
    );
    let dnsrr =
        convert_text("services:\n  a:\n    image: x\n    deploy: { endpoint_mode: dnsrr }\n").expect("converts");
    assert_eq!(
        dnsrr.stack.services[0].spec.endpoint,
        Some(v1::EndpointSpec { mode: v1::endpoint_spec::Mode::Dnsrr as i32, ports: vec![] })
    );
}

#[test]
fn mounts_of_every_kind() {
    let yaml = r#"
services:
  db:
    image: postgres
    volumes:
      - type: volume
        source: data
        target: /data
        volume: { nocopy: true }
      - type: bind
        source: /srv/conf
        target: /etc/conf
        read_only: true
        bind: { propagation: rslave }
      - type: tmpfs
        target: /scratch
        tmpfs: { size: 1048576, mode: 0700 }
      - nfs:/nfs
volumes:
  data:
    driver: local
    driver_opts: { type: tmpfs, device: tmpfs }
    labels: { backup: daily }
  nfs:
    driver_opts: { type: nfs, o: "addr=192.0.2.10,nfsvers=4", device: ":/export" }
"#;
    let converted = convert_text(yaml).expect("converts");
    let container = converted.stack.services[0].spec.task.clone().and_then(|t| t.container).unwrap_or_default();
    let map = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    assert_eq!(
        container.mounts,
        [
            v1::Mount {
                r#type: v1::mount::Type::Volume as i32,
                source: "shop_data".into(),
                target: "/data".into(),
                volume_options: Some(v1::mount::VolumeOptions {
                    no_copy: true,
                    labels: map(&[("backup", "daily"), ("com.docker.stack.namespace", "shop")]),
                    driver: "local".into(),
                    driver_options: map(&[("type", "tmpfs"), ("device", "tmpfs")]),
                }),
                ..Default::default()
            },
            v1::Mount {
                r#type: v1::mount::Type::Bind as i32,
                source: "/srv/conf".into(),
                target: "/etc/conf".into(),
                read_only: true,
                bind_options: Some(v1::mount::BindOptions {
                    propagation: v1::mount::bind_options::Propagation::Rslave as i32
                }),
                ..Default::default()
            },
            v1::Mount {
                r#type: v1::mount::Type::Tmpfs as i32,
                target: "/scratch".into(),
                tmpfs_size_bytes: 1 << 20,
                tmpfs_mode: 0o700,
                ..Default::default()
            },
            v1::Mount {
                r#type: v1::mount::Type::Volume as i32,
                source: "shop_nfs".into(),
                target: "/nfs".into(),
                volume_options: Some(v1::mount::VolumeOptions {
                    no_copy: false,
                    labels: map(&[("com.docker.stack.namespace", "shop")]),
                    driver: String::new(),
                    driver_options: map(&[("type", "nfs"), ("o", "addr=192.0.2.10,nfsvers=4"), ("device", ":/export")]),
                }),
                ..Default::default()
            },
        ]
    );
}

#[test]
fn networks_keep_their_settings() {
    let yaml = r#"
services:
  web:
    image: nginx
    networks: [back]
networks:
  back:
    driver: overlay
    attachable: true
    internal: true
    driver_opts: { com.docker.network.driver.mtu: "1400", encrypted: "" }
    ipam:
      config:
        - subnet: 10.9.0.0/24
          gateway: 10.9.0.1
          ip_range: 10.9.0.128/25
"#;
    let converted = convert_text(yaml).expect("converts");
    let spec = converted.stack.networks[0].spec.clone().expect("created");
    assert_eq!(
        (spec.attachable, spec.internal, spec.ingress, spec.options.get("mtu").map(String::as_str)),
        (true, true, false, Some("1400"))
    );
    assert_eq!(
        spec.options.get("encrypted").map(String::as_str),
        Some(""),
        "encrypted, as docker stack deploy makes it"
    );
    assert_eq!(
        spec.ipam,
        Some(v1::IpamConfig {
            subnet: "10.9.0.0/24".into(),
            gateway: "10.9.0.1".into(),
            ip_range: "10.9.0.128/25".into()
        })
    );
}

#[test]
fn what_cannot_be_honoured_is_refused_or_said() {
    let refused: &[(&str, &str, &str)] = &[
        (
            "a network driver other than overlay",
            "services:\n  a:\n    image: x\n    networks: [n]\nnetworks:\n  n: { driver: bridge }\n",
            "network n: driver bridge is not supported; Shoal's networks are overlay networks",
        ),
        (
            "two subnets",
            "services:\n  a:\n    image: x\n    networks: [n]\nnetworks:\n  n:\n    ipam:\n      config: [{subnet: 10.1.0.0/24}, {subnet: 10.2.0.0/24}]\n",
            "network n: ipam.config has 2 pools",
        ),
        (
            "a secret driver",
            "services:\n  a:\n    image: x\nsecrets:\n  s:\n    file: ./db_password.txt\n    driver: vault\n",
            "secret s: driver vault is not supported",
        ),
        (
            "a template driver",
            "services:\n  a:\n    image: x\nconfigs:\n  c:\n    file: ./nginx.conf\n    template_driver: golang\n",
            "config c: template_driver golang is not supported",
        ),
        (
            "a secret file that cannot be read",
            "services:\n  a:\n    image: x\nsecrets:\n  s:\n    file: ./missing.txt\n",
            "secret s: cannot read its file /srv/shop/missing.txt: no such file",
        ),
        (
            "a volume driver other than local",
            "services:\n  a:\n    image: x\n    volumes: [\"vol:/v\"]\nvolumes:\n  vol: { driver: rexray }\n",
            "volume vol: driver rexray is not supported",
        ),
        (
            "a volume subpath",
            "services:\n  a:\n    image: x\n    volumes:\n      - { type: volume, source: v, target: /v, volume: { subpath: sub } }\nvolumes:\n  v: {}\n",
            "service a: volume at /v: subpath sub is not supported",
        ),
        (
            "an anonymous volume (the manager takes named ones)",
            "services:\n  a:\n    image: x\n    volumes: [\"/cache\"]\n",
            "service a: the anonymous volume at /cache is not supported; name it (NAME:/cache)",
        ),
        (
            "a uid that is a name",
            "services:\n  a:\n    image: x\n    secrets: [{ source: s, uid: www }]\nsecrets:\n  s: { file: ./db_password.txt }\n",
            "service a: uid \"www\" of secret s is not a number",
        ),
        (
            "waiting for a long-running service to complete",
            "services:\n  a:\n    image: x\n    depends_on: { b: { condition: service_completed_successfully } }\n  b:\n    image: y\n",
            "service a waits for b to complete (service_completed_successfully), but b is a long-running service",
        ),
        (
            "a cycle, named by the loader",
            "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: y\n    depends_on: [a]\n",
            "dependency cycle between services: a -> b -> a",
        ),
        (
            "a name the manager refuses",
            "services:\n  web.1:\n    image: x\n",
            "the manager refuses shop_web.1: invalid service name",
        ),
    ];
    for (name, yaml, expected) in refused {
        match convert_text(yaml) {
            Ok(_) => panic!("{name}: converted"),
            Err(err) => assert!(err.contains(expected), "{name}: {err}"),
        }
    }
    let warned = convert_text(
        r#"
services:
  a:
    image: x
    tty: true
    logging: { driver: syslog }
    environment: [UNSET_HERE]
    networks:
      default: { ipv4_address: 10.0.0.5 }
    tmpfs: ["/run:rw,noexec,size=1m"]
"#,
    )
    .expect("converts");
    assert_eq!(
        converted_warnings(&warned),
        [
            "service a: ipv4_address and ipv6_address on network default are ignored (Swarm)",
            "service a: environment variable UNSET_HERE has no value and is not set here; it is left out (give it a \
             value)",
            "service a: tty is ignored: Shoal's tasks have no terminal",
            "service a: logging is ignored: tasks' output is kept by their node (shoal service logs)",
            "service a: tmpfs option rw of /run is ignored (size and mode are kept)",
            "service a: tmpfs option noexec of /run is ignored (size and mode are kept)",
        ]
    );
}

fn converted_warnings(converted: &Converted) -> Vec<&str> {
    converted.warnings.iter().map(String::as_str).collect()
}

#[test]
fn waits_name_the_stack_services() {
    let converted = convert_text(
        "services:\n  web:\n    image: x\n    depends_on:\n      db: { condition: service_healthy }\n  db:\n    image: y\n",
    )
    .expect("converts");
    let order: Vec<(&str, &[(String, Condition)])> =
        converted.stack.services.iter().map(|s| (s.name(), s.waits_for.as_slice())).collect();
    assert_eq!(order, [("shop_db", &[][..]), ("shop_web", &[("shop_db".to_owned(), Condition::Healthy)][..])]);
}

/// The loader's corpus (public stacks' shapes: the voting app, WordPress, docker/cli's
/// full-example, Traefik, a monitoring stack …): every file that loads converts to specs the
/// manager accepts, or is refused for a reason listed here.
#[test]
fn the_loaders_corpus_converts() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/compose/tests/corpus");
    let refused: &[(&str, &str)] = &[
        ("compose-spec", "subpath pg is not supported"),
        ("full-example", "network other-network: ipam.config has 2 pools"),
    ];
    let (mut converted, mut seen_refused) = (0, 0);
    let mut entries: Vec<_> = std::fs::read_dir(&corpus).expect("the corpus").filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let case = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if case.join("expected.err").exists() {
            continue;
        }
        let files: Vec<std::path::PathBuf> = std::fs::read_to_string(case.join("files.txt"))
            .map(|list| list.lines().filter(|l| !l.is_empty()).map(|l| case.join(l)).collect())
            .unwrap_or_else(|_| vec![case.join("compose.yml")]);
        let env = std::fs::read_to_string(case.join("env.txt"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let loaded = shoal_compose::load(&LoadOptions { files, env, ..LoadOptions::default() })
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let result = convert(&loaded.project, "corpus", &|path| std::fs::read(path)).and_then(|c| {
            for service in &c.stack.services {
                shoal_manager::validate_service_spec(&service.spec).map_err(|e| anyhow!("{}: {e}", service.name()))?;
            }
            Ok(c)
        });
        match (result, refused.iter().find(|(case, _)| *case == name)) {
            (Ok(_), None) => converted += 1,
            (Err(err), Some((_, why))) => {
                assert!(format!("{err:#}").contains(why), "{name}: {err:#}");
                seen_refused += 1;
            }
            (Err(err), None) => panic!("{name}: {err:#}"),
            (Ok(_), Some(_)) => panic!("{name}: converted, but listed as refused"),
        }
    }
    assert_eq!(seen_refused, refused.len(), "every refused case is in the corpus");
    assert!(converted >= 7, "only {converted} corpus cases converted");
}

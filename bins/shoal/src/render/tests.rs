//! Output tables, checked cell for cell.

use std::time::Duration;

use super::*;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

#[test]
fn ago_reads_like_docker() {
    let cases = [
        (0, "Less than a second ago"),
        (5, "5 seconds ago"),
        (90, "About a minute ago"),
        (600, "10 minutes ago"),
        (4000, "About an hour ago"),
        (36_000, "10 hours ago"),
        (400_000, "4 days ago"),
    ];
    for (secs, expected) in cases {
        assert_eq!(ago(Some(now() - Duration::from_secs(secs)), now()), expected);
    }
    assert_eq!(ago(None, now()), "");
}

#[test]
fn node_ls() {
    let node = |id: &str, host: &str, state: v1::node_status::State, manager: Option<(bool, &str)>| v1::Node {
        id: id.into(),
        description: Some(v1::NodeDescription {
            hostname: host.into(),
            engine: Some(v1::EngineDescription { engine_version: "0.1.0".into(), ..Default::default() }),
            ..Default::default()
        }),
        status: Some(v1::NodeStatus { state: state as i32, ..Default::default() }),
        manager_status: manager.map(|(leader, addr)| v1::ManagerStatus {
            leader,
            addr: addr.into(),
            reachability: v1::manager_status::Reachability::Reachable as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let out = nodes(
        &[
            node("w1id", "w1", v1::node_status::State::Down, None),
            node("m1id", "m1", v1::node_status::State::Ready, Some((true, "192.0.2.11:2377"))),
            node("m2id", "m2", v1::node_status::State::Ready, Some((false, "192.0.2.12:2377"))),
        ],
        "192.0.2.11:2377",
    );
    assert_eq!(
        out,
        "ID       HOSTNAME   STATUS   AVAILABILITY   MANAGER STATUS   ENGINE VERSION\n\
         m1id *   m1         Ready    Active         Leader           0.1.0\n\
         m2id     m2         Ready    Active         Reachable        0.1.0\n\
         w1id     w1         Down     Active                          0.1.0\n"
    );
}

fn task(id: &str, slot: u64, node: &str, state: TaskState, desired: TaskState, secs_ago: u64, err: &str) -> v1::Task {
    v1::Task {
        id: id.into(),
        service_id: "svc".into(),
        service_name: "web".into(),
        slot,
        node_id: node.into(),
        annotations: Some(v1::Annotations { name: format!("web.{slot}"), ..Default::default() }),
        spec: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec { image: "web:v1".into(), ..Default::default() }),
            ..Default::default()
        }),
        desired_state: desired as i32,
        status: Some(v1::TaskStatus {
            state: state as i32,
            timestamp: Some(shoal_api::to_timestamp(now() - Duration::from_secs(secs_ago))),
            err: err.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn service_ps_shows_history_under_the_current_task() {
    let nodes = [v1::Node {
        id: "n1".into(),
        description: Some(v1::NodeDescription { hostname: "w1".into(), ..Default::default() }),
        ..Default::default()
    }];
    let tasks = [
        task("old-task-id-xyz", 1, "n1", TaskState::Failed, TaskState::Shutdown, 60, "task: non-zero exit (137)"),
        task("new-task-id-abc", 1, "n1", TaskState::Running, TaskState::Running, 5, ""),
        task(
            "other-task-idd",
            2,
            "",
            TaskState::Pending,
            TaskState::Running,
            2,
            "no suitable node (1 node not available)",
        ),
    ];
    let out = super::tasks(&tasks, &nodes, now(), false);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(
        lines[1].starts_with("new-task-id-   web.1      web:v1   w1     Running         Running 5 seconds ago"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with(r"old-task-id-   \_ web.1   web:v1   w1     Shutdown        Failed About a minute ago"),
        "{}",
        lines[2]
    );
    assert!(lines[2].contains("\"task: non-zero exit (137)\""), "{}", lines[2]);
    assert!(lines[3].contains("Pending 2 seconds ago") && lines[3].contains("\"no suitable node"), "{}", lines[3]);
}

#[test]
fn service_ps_cuts_errors_as_docker_unless_no_trunc() {
    let err = "network allocation failed: network backend has no free address left in 10.0.9.0/29";
    let tasks = [task("pending-task-id-0123456789", 1, "", TaskState::Pending, TaskState::Running, 3, err)];
    let cut = super::tasks(&tasks, &[], now(), false);
    assert_eq!(
        cut.lines().nth(1),
        Some(
            "pending-task   web.1   web:v1          Running         Pending 3 seconds ago   \"network allocation failed: ne…\""
        )
    );
    let full = super::tasks(&tasks, &[], now(), true);
    assert!(
        full.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("pending-task-id-0123456789 ") && l.ends_with(&format!("\"{err}\""))),
        "{full}"
    );
}

#[test]
fn service_ls_counts_running_against_desired() {
    let svc = v1::Service {
        id: "0123456789abcdefghijklmno".into(),
        spec: Some(v1::ServiceSpec {
            annotations: Some(v1::Annotations { name: "web".into(), ..Default::default() }),
            mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 3 })),
            task: Some(v1::TaskSpec {
                container: Some(v1::ContainerSpec { image: "web:v1".into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut tasks = vec![
        task("a", 1, "n1", TaskState::Running, TaskState::Running, 1, ""),
        task("b", 2, "n1", TaskState::Starting, TaskState::Running, 1, ""),
    ];
    for t in &mut tasks {
        t.service_id = svc.id.clone();
    }
    assert_eq!(
        services(&[svc], &tasks, false),
        "ID             NAME   MODE         REPLICAS   IMAGE    PORTS\n0123456789ab   web    replicated   1/3        web:v1\n"
    );
}

fn port(published: u32, target: u32, protocol: v1::port_config::Protocol, host: bool) -> v1::PortConfig {
    v1::PortConfig {
        protocol: protocol as i32,
        target_port: target,
        published_port: published,
        publish_mode: if host { v1::port_config::PublishMode::Host } else { v1::port_config::PublishMode::Ingress }
            as i32,
        ..Default::default()
    }
}

fn published(name: &str, spec_ports: Vec<v1::PortConfig>, allocated: Option<Vec<v1::PortConfig>>) -> v1::Service {
    v1::Service {
        id: format!("{name}-0123456789abcdefghij"),
        spec: Some(v1::ServiceSpec {
            annotations: Some(v1::Annotations { name: name.into(), ..Default::default() }),
            mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 2 })),
            endpoint: Some(v1::EndpointSpec { mode: 0, ports: spec_ports.clone() }),
            task: Some(v1::TaskSpec {
                container: Some(v1::ContainerSpec { image: format!("{name}:v1"), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        endpoint: allocated.map(|ports| v1::Endpoint { ports, ..Default::default() }),
        ..Default::default()
    }
}

#[test]
fn ports_as_docker_words_them() {
    use v1::port_config::Protocol::{Tcp, Udp};
    let cases = [
        (vec![], ""),
        (vec![port(8080, 80, Tcp, false)], "*:8080->80/tcp"),
        (vec![port(8443, 443, Tcp, false), port(8080, 80, Tcp, false)], "*:8080->80/tcp, *:8443->443/tcp"),
        (
            vec![port(8080, 80, Tcp, false), port(8081, 81, Tcp, false), port(8082, 82, Tcp, false)],
            "*:8080-8082->80-82/tcp",
        ),
        (vec![port(53, 53, Udp, false), port(53, 53, Tcp, false)], "*:53->53/tcp, *:53->53/udp"),
        (vec![port(8080, 80, Tcp, true)], "*:8080->80/tcp"),
        (vec![port(8080, 80, Tcp, false), port(8081, 81, Tcp, true)], "*:8080->80/tcp, *:8081->81/tcp"),
    ];
    for (ports, expected) in cases {
        assert_eq!(super::ports(&published("s", vec![], Some(ports.clone()))), expected, "{ports:?}");
    }
    // Until allocated, the spec's: a port the cluster is to choose has no published side yet.
    let pending = published("s", vec![port(0, 80, Tcp, false), port(9000, 90, Tcp, false)], None);
    assert_eq!(super::ports(&pending), "80/tcp, *:9000->90/tcp");
}

#[test]
fn service_ls_shows_ports_and_blocked_services() {
    use v1::port_config::Protocol::{Tcp, Udp};
    let web = published("web", vec![port(0, 80, Tcp, false)], Some(vec![port(30000, 80, Tcp, false)]));
    let dns = published(
        "dns",
        vec![port(53, 53, Udp, true), port(53, 53, Tcp, true)],
        Some(vec![port(53, 53, Udp, true), port(53, 53, Tcp, true)]),
    );
    let mut api = published("api", vec![port(8080, 8080, Tcp, false)], None);
    api.allocation_error = "port 8080/tcp is already published by service web; choose another --publish port".into();
    let out = services(&[web, dns, api], &[], false);
    assert_eq!(
        out,
        "ID             NAME   MODE         REPLICAS        IMAGE    PORTS\n\
         api-01234567   api    replicated   0/2 (blocked)   api:v1   *:8080->8080/tcp\n\
         dns-01234567   dns    replicated   0/2             dns:v1   *:53->53/tcp, *:53->53/udp\n\
         web-01234567   web    replicated   0/2             web:v1   *:30000->80/tcp\n"
    );
}

#[test]
fn network_ls() {
    let network = |id: &str, name: &str| v1::Network {
        id: id.into(),
        spec: Some(v1::NetworkSpec {
            annotations: Some(v1::Annotations { name: name.into(), ..Default::default() }),
            driver: "overlay".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let networks = [network("7dl4e0xv9a2bq5yzwpl2zrw1b", "ingress"), network("4bqd3v9xnv2yqa6zwpl2zrw1c", "backend")];
    let out = networks_table(&networks);
    assert_eq!(
        out,
        "NETWORK ID     NAME      DRIVER    SCOPE\n\
         4bqd3v9xnv2y   backend   overlay   swarm\n\
         7dl4e0xv9a2b   ingress   overlay   swarm\n"
    );
    assert_eq!(network_ids(&networks, false), "4bqd3v9xnv2y\n7dl4e0xv9a2b\n");
    assert_eq!(network_ids(&networks, true), "4bqd3v9xnv2yqa6zwpl2zrw1c\n7dl4e0xv9a2bq5yzwpl2zrw1b\n");
    assert!(super::networks(&networks, true).contains("4bqd3v9xnv2yqa6zwpl2zrw1c   backend"));
    assert_eq!(super::networks(&[], false), "NETWORK ID   NAME   DRIVER   SCOPE\n");
}

fn networks_table(networks: &[v1::Network]) -> String {
    super::networks(networks, false)
}

#[test]
fn times_in_json_as_docker() {
    let at = |secs: u64, nanos: u32| SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
    let cases = [
        (at(0, 0), "1970-01-01T00:00:00Z"),
        (at(1_800_000_000, 0), "2027-01-15T08:00:00Z"),
        (at(1_800_000_000, 250_000_000), "2027-01-15T08:00:00.25Z"),
        (at(951_782_400, 1), "2000-02-29T00:00:00.000000001Z"),
        (at(4_107_542_399, 0), "2100-02-28T23:59:59Z"),
    ];
    for (time, expected) in cases {
        assert_eq!(rfc3339(time), expected);
    }
}

#[test]
fn progress_bars_like_docker() {
    let task = |slot: u64, node: &str, state: TaskState, err: &str| v1::Task {
        slot,
        node_id: node.into(),
        status: Some(v1::TaskStatus { state: state as i32, err: err.into(), ..Default::default() }),
        ..Default::default()
    };
    let tasks = [
        task(1, "n1", TaskState::Running, ""),
        task(2, "n2", TaskState::Preparing, ""),
        task(3, "n3", TaskState::Rejected, "image not found: docker.io/x:1"),
    ];
    let live: Vec<&v1::Task> = tasks.iter().collect();
    let full = format!("[{}>]", "=".repeat(50));
    let four_of_seven = format!("[{}>{}]", "=".repeat(28), " ".repeat(22));
    assert_eq!(
        progress(&live, 4, false),
        format!(
            "overall progress: 1 out of 4 tasks\n1/4: running   {full}\n2/4: preparing {four_of_seven}\n\
             3/4: image not found: docker.io/x:1\n4/4: \n"
        )
    );
    let global = progress(&live[..2], 2, true);
    assert!(global.starts_with("overall progress: 1 out of 2 tasks\nn1: running   [="), "{global}");
}

#[test]
fn admin_cert_ls() {
    let meta = |secs: u64| {
        Some(v1::Meta {
            created_at: Some(shoal_api::to_timestamp(now() - Duration::from_secs(secs))),
            ..Default::default()
        })
    };
    let listed = v1::ListAdminCertificatesResponse {
        certificates: vec![
            v1::AdminCertificate { id: "admin-b".into(), meta: meta(600), issued_by: "admin-a".into() },
            v1::AdminCertificate { id: "admin-a".into(), meta: meta(400_000), issued_by: "init".into() },
        ],
        revoked: vec![v1::Revocation { id: "admin-c".into(), meta: meta(5), ..Default::default() }],
        caller: "admin-b".into(),
    };
    assert_eq!(
        admin_certs(&listed, now()),
        "ID          STATUS    ISSUED BY   SINCE\n\
         admin-a     Active    init        4 days ago\n\
         admin-b *   Active    admin-a     10 minutes ago\n\
         admin-c     Revoked               5 seconds ago\n"
    );
}

#[test]
fn pinned_images_show_their_tag_as_docker_shows_them() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let cases = [
        (format!("web:v1@{digest}"), "web:v1".to_owned()),
        (format!("192.0.2.10:5000/shop/web:v1@{digest}"), "192.0.2.10:5000/shop/web:v1".to_owned()),
        // No tag: the digest is all that names it. A registry port is not a tag.
        (format!("web@{digest}"), format!("web@{digest}")),
        (format!("192.0.2.10:5000/web@{digest}"), format!("192.0.2.10:5000/web@{digest}")),
        ("web:v1".to_owned(), "web:v1".to_owned()),
    ];
    for (image, shown) in cases {
        assert_eq!(display_image(&image), shown, "{image}");
    }
}

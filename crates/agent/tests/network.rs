//! The agent's networking on the kernel, without a manager: two harness nodes, each with its own
//! `Networking` (its node namespace, namespace prefix and gateway subnet), fed the view a manager
//! would send, running containers of the busybox test images in a private containerd. Tasks of
//! one overlay network on different nodes reach each other by name through the embedded DNS at
//! 127.0.0.11, the service VIP balances over both, egress reaches the underlay (192.0.2.1), a
//! task on an internal network has none, and released tasks leave no namespace behind.
//!
//! Privileged: root, containerd, runc, nft (skipped with the reason otherwise, failed under
//! `CI=true`); `shoal-runtime-logger` must be built next to the test binaries' directory.

// Tests narrate their steps on stderr, which the harness shows when one fails.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_agent::{Cidr, NetworkConfig, Networking, TaskNetwork};
use shoal_api::v1;
use shoal_runtime::{ContainerRuntime, ContainerSpec, Containerd, ContainerdConfig, ExecSpec, ImageSource};
use shoal_testkit::images::{self, BuiltImage};
use shoal_testkit::privileged::{self, Need};
use shoal_testkit::shoal::runtime_logger;
use shoal_testkit::{Cluster, Node};

fn narrate(step: &str) {
    eprintln!("--- {step}");
}

/// Removes every namespace of this test's agents (prefix `<run>-n`), also when the test panics.
struct NetnsGuard(String);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir("/run/netns") else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&self.0) {
                let _ = std::process::Command::new("ip").args(["netns", "delete", &name]).status();
            }
        }
    }
}

fn network(id: &str, subnet: &str, vni: u32, internal: bool) -> v1::Network {
    v1::Network {
        id: id.into(),
        spec: Some(v1::NetworkSpec { internal, driver: "overlay".into(), ..Default::default() }),
        allocation: Some(v1::NetworkAllocation {
            subnet: subnet.into(),
            gateway: subnet.replace(".0/24", ".1"),
            ip_range: subnet.into(),
            vni,
            mtu: 1450,
        }),
        ..Default::default()
    }
}

fn attachment(network: &v1::Network, addr: &str) -> v1::NetworkAttachment {
    v1::NetworkAttachment { network: Some(network.clone()), addresses: vec![format!("{addr}/24")], aliases: Vec::new() }
}

fn task(id: &str, service: &str, networks: &[(&v1::Network, &str)]) -> v1::Task {
    v1::Task {
        id: id.into(),
        service_id: service.into(),
        networks: networks.iter().map(|(n, addr)| attachment(n, addr)).collect(),
        ..Default::default()
    }
}

fn port(published: u32, target: u32, mode: v1::port_config::PublishMode) -> v1::PortConfig {
    v1::PortConfig {
        protocol: v1::port_config::Protocol::Tcp as i32,
        target_port: target,
        published_port: published,
        publish_mode: mode as i32,
        ..Default::default()
    }
}

/// `wget URL` from the underlay namespace (192.0.2.1, outside every node).
fn from_outside(cluster: &Cluster, url: &str) -> Result<String, String> {
    let mut wget = Cluster::command_in(cluster.underlay_netns(), images::BUSYBOX);
    wget.args(["timeout", "5", images::BUSYBOX, "wget", "-qO-", url]);
    match wget.output() {
        Ok(out) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        Ok(out) => Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim())),
        Err(err) => Err(err.to_string()),
    }
}

/// What clients outside get from `url` in `tries` fetches, retrying failures for up to 10 s.
async fn answers(cluster: &Cluster, url: &str, tries: usize) -> std::collections::BTreeSet<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = std::collections::BTreeSet::new();
    let mut got = 0;
    while got < tries {
        match from_outside(cluster, url) {
            Ok(answer) => {
                seen.insert(answer);
                got += 1;
            }
            Err(err) => {
                assert!(Instant::now() < deadline, "{url} from outside kept failing: {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    seen
}

fn peer(network: &str, id: &str, name: &str, node: &Node, addr: &str, service: &str) -> v1::NetworkChange {
    v1::NetworkChange {
        peer: Some(v1::NetworkPeer {
            network_id: network.into(),
            id: id.into(),
            node_id: node.name.clone(),
            node_addr: node.addr.to_string(),
            address: format!("{addr}/24"),
            service_id: service.into(),
            name: name.into(),
            aliases: Vec::new(),
            serving: true,
        }),
        ..Default::default()
    }
}

struct Host {
    network: Arc<Networking>,
    runtime: Arc<Containerd>,
}

/// Starts `task`'s container from `image` in the namespace its networking gave it.
async fn run(node: &Host, image: &BuiltImage, task: &v1::Task, hostname: &str) -> TaskNetwork {
    let wired = node.network.prepare(task, hostname).await.expect("wire the task");
    let source = ImageSource::Archive { path: image.path.clone(), reference: Some(image.def.reference()) };
    let image = node.runtime.ensure_image(&source).await.expect("image");
    let spec = ContainerSpec {
        id: task.id.clone(),
        image,
        hostname: Some(hostname.into()),
        netns: Some(wired.netns.clone()),
        hosts: Some(wired.hosts.clone()),
        resolv_conf: Some(wired.resolv_conf.clone()),
        ..Default::default()
    };
    node.runtime.create(&spec).await.expect("create");
    node.runtime.start(&task.id).await.expect("start");
    wired
}

/// `sh -c script` in the container; (exit code, stdout and stderr).
async fn sh(node: &Host, id: &str, script: &str) -> (i32, String) {
    let exec = ExecSpec { cmd: vec!["/bin/sh".into(), "-c".into(), script.into()], timeout: Duration::from_secs(10) };
    let out = node.runtime.exec(id, &exec).await.expect("exec");
    (out.code, format!("{}{}", out.stdout, out.stderr))
}

/// Retries `script` until it exits 0 (the peers' dataplanes may be a pass behind), at most 10 s.
async fn eventually(node: &Host, id: &str, script: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out) = sh(node, id, script).await;
        if code == 0 {
            return out;
        }
        assert!(Instant::now() < deadline, "`{script}` in {id} kept failing: exit {code}: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The container log writer, when the test can run (root, containerd, nft, the logger built).
fn prerequisites(test: &str) -> Option<PathBuf> {
    let mut needs = privileged::CONTAINERD.to_vec();
    needs.push(Need::Command("nft"));
    if !privileged::require(test, &needs) {
        return None;
    }
    runtime_logger(test)
}

fn test_images(cluster: &Cluster) -> (BuiltImage, BuiltImage) {
    let wanted =
        |d: &&images::ImageDef| d.repository == "shoal-test/web" && d.tag == "v1" || d.repository == "shoal-test/tools";
    let defs: Vec<_> = images::ALL.iter().filter(wanted).copied().collect();
    let built = images::build(&defs, Path::new(images::BUSYBOX), &cluster.dir().join("images")).expect("images");
    let web = built.iter().find(|b| b.def.repository == "shoal-test/web").expect("web image").clone();
    let tools = built.iter().find(|b| b.def.repository == "shoal-test/tools").expect("tools image").clone();
    (web, tools)
}

#[test]
fn tasks_on_two_nodes_share_an_overlay_with_dns_a_vip_and_egress() {
    let Some(logger) = prerequisites("tasks_on_two_nodes_share_an_overlay_with_dns_a_vip_and_egress") else { return };
    let started = Instant::now();
    let cluster = Cluster::new(2).expect("cluster");
    let prefix = cluster.prefix().to_owned();
    let _netns = [NetnsGuard(format!("{prefix}-n1-")), NetnsGuard(format!("{prefix}-n2-"))];
    let (web_image, tools_image) = test_images(&cluster);
    let containerd = shoal_testkit::Containerd::start(&cluster.dir().join("containerd"), &format!("{prefix}-ctr"))
        .expect("containerd");
    // The node's resolver configuration: the underlay gateway as upstream (nothing answers
    // there; only cluster names are asked).
    let resolv = cluster.dir().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 192.0.2.1\nsearch example.test\n").expect("resolv.conf");

    let blue = network("blue", "198.18.10.0/24", 4300, false);
    let mut ingress = network("ingress", "198.18.255.0/24", 4302, false);
    if let Some(spec) = ingress.spec.as_mut() {
        spec.ingress = true;
    }
    let sealed = network("sealed", "198.18.11.0/24", 4301, true);
    let (node1, node2) = (cluster.node(1).expect("node1").clone(), cluster.node(2).expect("node2").clone());
    let socket = containerd.socket().to_owned();
    let dir = cluster.dir().to_owned();
    let expected_netns = PathBuf::from("/run/netns").join(format!("{prefix}-n1-tt1"));

    let cluster = &cluster;
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio").block_on(
        async move {
            let start = |node: &Node, index: u8| {
                let config = NetworkConfig {
                    netns_prefix: format!("{prefix}-n{index}-"),
                    node_netns: Some(PathBuf::from("/run/netns").join(&node.netns)),
                    gateway_subnet: format!("198.19.{index}.0/24").parse::<Cidr>().expect("gateway subnet"),
                    resolv_conf: resolv.clone(),
                    ..NetworkConfig::default()
                };
                let runtime =
                    ContainerdConfig::new(&socket, &format!("{prefix}-{}", node.name), dir.join(&node.name), &logger);
                let name = node.name.clone();
                async move {
                    let network = Networking::start(config, name).await.expect("networking");
                    let runtime = Arc::new(Containerd::connect(runtime).await.expect("containerd client"));
                    Host { network, runtime }
                }
            };
            narrate("start two nodes' networking");
            let n1 = start(&node1, 1).await;
            let n2 = start(&node2, 2).await;
            assert_eq!(n1.network.load_balancer(), "nftables", "this kernel has no IPVS");

            // What the manager would send both nodes: the networks, every task's address and node,
            // and the web service's VIP.
            let view = vec![
                v1::NetworkChange { network: Some(blue.clone()), ..Default::default() },
                v1::NetworkChange { network: Some(sealed.clone()), ..Default::default() },
                v1::NetworkChange { network: Some(ingress.clone()), ..Default::default() },
                peer("blue", "t1", "web.1", &node1, "198.18.10.3", "web"),
                peer("blue", "t2", "web.2", &node2, "198.18.10.4", "web"),
                peer("ingress", "t1", "web.1", &node1, "198.18.255.5", "web"),
                peer("ingress", "t2", "web.2", &node2, "198.18.255.6", "web"),
                peer("ingress", &format!("ingress-sbox.{}", node1.name), "", &node1, "198.18.255.2", ""),
                peer("ingress", &format!("ingress-sbox.{}", node2.name), "", &node2, "198.18.255.3", ""),
                v1::NetworkChange {
                    service: Some(v1::NetworkService {
                        network_id: "ingress".into(),
                        service_id: "web".into(),
                        name: "web".into(),
                        vip: "198.18.255.4/24".into(),
                        ports: vec![port(8080, 80, v1::port_config::PublishMode::Ingress)],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                peer("sealed", "t3", "vault.1", &node1, "198.18.11.3", "vault"),
                v1::NetworkChange {
                    service: Some(v1::NetworkService {
                        network_id: "blue".into(),
                        service_id: "web".into(),
                        name: "web".into(),
                        vip: "198.18.10.2/24".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ];
            n1.network.set_view(view.clone());
            n2.network.set_view(view);
            // Both nodes have an ingress sandbox (the routing mesh).
            for (host, addr) in [(&n1, "198.18.255.2"), (&n2, "198.18.255.3")] {
                host.network.set_node(&v1::Node { ingress: Some(attachment(&ingress, addr)), ..Default::default() });
            }

            narrate("run web.1 on node1, web.2 on node2, vault.1 (internal network only) on node1");
            let mut t1 = task("t1", "web", &[(&blue, "198.18.10.3"), (&ingress, "198.18.255.5")]);
            // web.1 also publishes 8081 in host mode, on node1 only.
            t1.endpoint = Some(v1::Endpoint {
                ports: vec![port(8081, 80, v1::port_config::PublishMode::Host)],
                ..Default::default()
            });
            let t2 = task("t2", "web", &[(&blue, "198.18.10.4"), (&ingress, "198.18.255.6")]);
            let t3 = task("t3", "vault", &[(&sealed, "198.18.11.3")]);
            let (w1, _, w3) = tokio::join!(
                run(&n1, &web_image, &t1, "web-1"),
                run(&n2, &web_image, &t2, "web-2"),
                run(&n1, &tools_image, &t3, "vault-1"),
            );
            assert!(
                w1.resolv_conf.contains("nameserver 127.0.0.11") && w1.resolv_conf.contains("ndots:0"),
                "{}",
                w1.resolv_conf
            );
            assert!(w1.hosts.contains("198.18.10.3\tweb-1"), "{}", w1.hosts);
            assert_eq!(w1.netns, expected_netns);
            eventually(&n1, "t1", "wget -qO- http://127.0.0.1/").await;
            eventually(&n2, "t2", "wget -qO- http://127.0.0.1/").await;
            eprintln!("--- wired and serving after {:.1} s", started.elapsed().as_secs_f64());

            narrate("web.1 finds web.2 through 127.0.0.11 and pings it across the overlay");
            let out = eventually(&n1, "t1", "nslookup web.2 127.0.0.11").await;
            assert!(out.contains("198.18.10.4"), "{out}");
            eventually(&n1, "t1", "ping -c1 -W2 web.2").await;
            eventually(&n2, "t2", "ping -c1 -W2 web.1").await;

            // busybox-static's wget crashes with -T (exit 139): `timeout` bounds it instead.
            narrate("the VIP (web → 198.18.10.2) answers from both tasks, every port");
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..6 {
                let out = eventually(&n1, "t1", "timeout 5 wget -qO- http://web/").await;
                seen.insert(out.trim().to_owned());
            }
            assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["v1 web-1", "v1 web-2"], "round robin over both tasks");

            narrate("egress reaches the underlay; the internal network has none");
            eventually(&n1, "t1", "ping -c1 -W2 192.0.2.1").await;
            let (code, out) = sh(&n1, "t3", "ping -c1 -W1 192.0.2.1").await;
            assert_ne!(code, 0, "an internal task reached the underlay: {out}");
            let (_, links) = sh(&n1, "t3", "ip -o link show | wc -l").await;
            assert_eq!(links.trim(), "2", "lo and eth0 only on an internal network");
            assert!(w3.hosts.contains("198.18.11.3\tvault-1"));

            narrate("the routing mesh: port 8080 of either node reaches both tasks, which see the client");
            for node in [&node1, &node2] {
                let seen = answers(cluster, &format!("http://{}:8080/cgi-bin/who", node.addr), 6).await;
                // httpd prints the client as a v4-mapped IPv6 address.
                let want = ["web-1 [::ffff:192.0.2.1]", "web-2 [::ffff:192.0.2.1]"].map(str::to_owned);
                assert_eq!(seen.into_iter().collect::<Vec<_>>(), want, "through {}", node.name);
            }
            narrate("host mode: port 8081 of node1 reaches web.1 only; node2 does not publish it");
            let seen = answers(cluster, &format!("http://{}:8081/cgi-bin/who", node1.addr), 3).await;
            assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["web-1 [::ffff:192.0.2.1]"]);
            assert!(from_outside(cluster, &format!("http://{}:8081/", node2.addr)).is_err());

            narrate("web.2 stops serving: it leaves DNS and the VIP at once");
            n1.network.change_view(vec![{
                let mut stopped = peer("blue", "t2", "web.2", &node2, "198.18.10.4", "web");
                if let Some(p) = stopped.peer.as_mut() {
                    p.serving = false;
                }
                stopped
            }]);
            let changed = Instant::now();
            for _ in 0..4 {
                let out = eventually(&n1, "t1", "timeout 5 wget -qO- http://web/").await;
                assert_eq!(out.trim(), "v1 web-1");
            }
            let out = eventually(&n1, "t1", "nslookup tasks.web 127.0.0.11").await;
            assert!(!out.contains("198.18.10.4") && out.contains("198.18.10.3"), "{out}");
            eprintln!("--- left within {:.2} s", changed.elapsed().as_secs_f64());

            narrate("release every task and the nodes' ingress attachments: namespaces and sandboxes go");
            for (node, id) in [(&n1, "t1"), (&n2, "t2"), (&n1, "t3")] {
                let _ = node.runtime.stop(id, Duration::from_secs(2)).await;
                node.network.release(id);
                node.runtime.remove(id).await.expect("remove");
            }
            for host in [&n1, &n2] {
                host.network.set_node(&v1::Node::default());
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            let ours = |prefix: &str| -> Vec<String> {
                std::fs::read_dir("/run/netns")
                    .map(|e| {
                        e.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .filter(|n| n.starts_with(prefix))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            loop {
                let mut left = ours(&format!("{prefix}-n1-"));
                left.extend(ours(&format!("{prefix}-n2-")));
                if left.is_empty() {
                    break;
                }
                assert!(Instant::now() < deadline, "namespaces left after release: {left:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    );
    eprintln!("--- done in {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn a_restarted_agent_adopts_running_tasks_and_removes_what_no_task_needs() {
    let Some(logger) = prerequisites("a_restarted_agent_adopts_running_tasks_and_removes_what_no_task_needs") else {
        return;
    };
    let cluster = Cluster::new(1).expect("cluster");
    let prefix = format!("{}-n1-", cluster.prefix());
    let _netns = NetnsGuard(prefix.clone());
    let (web_image, _) = test_images(&cluster);
    let containerd =
        shoal_testkit::Containerd::start(&cluster.dir().join("containerd"), &format!("{}-ctr", cluster.prefix()))
            .expect("containerd");
    let node = cluster.node(1).expect("node1").clone();
    let config = NetworkConfig {
        netns_prefix: prefix.clone(),
        node_netns: Some(PathBuf::from("/run/netns").join(&node.netns)),
        gateway_subnet: "198.19.1.0/24".parse::<Cidr>().expect("gateway subnet"),
        resolv_conf: cluster.dir().join("no-resolv.conf"),
        ..NetworkConfig::default()
    };
    let runtime_config = ContainerdConfig::new(
        containerd.socket(),
        &format!("{}-node1", cluster.prefix()),
        cluster.dir().join("node1"),
        &logger,
    );
    let blue = network("blue", "198.18.10.0/24", 4300, false);
    let t1 = task("t1", "web", &[(&blue, "198.18.10.3")]);
    let t2 = task("t2", "web", &[(&blue, "198.18.10.4")]);
    let view = |peers: &[(&str, &str, &str)]| {
        let mut changes = vec![v1::NetworkChange { network: Some(blue.clone()), ..Default::default() }];
        changes.extend(peers.iter().map(|(id, name, addr)| peer("blue", id, name, &node, addr, "web")));
        changes.push(v1::NetworkChange {
            service: Some(v1::NetworkService {
                network_id: "blue".into(),
                service_id: "web".into(),
                name: "web".into(),
                vip: "198.18.10.2/24".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        changes
    };
    // A namespace of ours that no task needs (left by a crash): the first pass removes it.
    let ghost = format!("{prefix}tghost");
    let made = std::process::Command::new("ip").args(["netns", "add", &ghost]).status().expect("ip netns add");
    assert!(made.success());

    // Each agent runs in a mount namespace of its own, as under `ip netns exec` (the harness's
    // nodes): what it binds under /run/netns must still reach containerd and outlive it.
    let (w1, w2, egress_before) = as_agent(|| async {
        let runtime = Arc::new(Containerd::connect(runtime_config.clone()).await.expect("containerd client"));
        narrate("the first agent runs web.1 and web.2");
        let first =
            Host { network: Networking::start(config.clone(), node.name.clone()).await.expect("networking"), runtime };
        first.network.set_view(view(&[("t1", "web.1", "198.18.10.3"), ("t2", "web.2", "198.18.10.4")]));
        let (w1, w2) = tokio::join!(run(&first, &web_image, &t1, "web-1"), run(&first, &web_image, &t2, "web-2"));
        eventually(&first, "t1", "wget -qO- http://127.0.0.1/ && ping -c1 -W2 198.18.10.4").await;
        let egress_before = eventually(&first, "t1", "ip -o -4 addr show dev eth1").await;
        assert!(egress_before.contains("198.19.1.2/24"), "{egress_before}");
        assert!(!Path::new("/run/netns").join(&ghost).exists(), "the leftover namespace was removed");
        narrate("the agent stops (its containers run on, its mount namespace goes)");
        (w1, w2, egress_before)
    });

    as_agent(|| async {
        let runtime = Arc::new(Containerd::connect(runtime_config.clone()).await.expect("containerd client"));
        narrate("a new agent starts and finds them");
        let second =
            Host { network: Networking::start(config.clone(), node.name.clone()).await.expect("networking"), runtime };
        second.network.protect(vec!["t1".into(), "t2".into()]);
        // The view comes before the assignments: nothing is torn down meanwhile.
        second.network.set_view(view(&[("t1", "web.1", "198.18.10.3")]));
        // Not synchronisation but a bounded observation window: until `ready` no pass is
        // submitted at all, so there is no event to wait for; a pass submitted by mistake would
        // take web.2's peer away within it.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (code, out) = sh(&second, "t1", "ping -c1 -W2 198.18.10.4").await;
        assert_eq!(code, 0, "web.1 lost web.2 before the first complete assignment set: {out}");

        narrate("the complete set holds web.1 only: web.1 is adopted, web.2 stopped and released");
        second.network.adopt(&t1);
        second.network.ready();
        let adopted = second.network.prepare(&t1, "web-1").await.expect("adopt web.1");
        assert_eq!(adopted.netns, w1.netns, "the same namespace");
        let _ = second.runtime.stop("t2", Duration::from_secs(2)).await;
        second.network.release("t2");
        second.runtime.remove("t2").await.expect("remove web.2");
        let egress_after = eventually(&second, "t1", "ip -o -4 addr show dev eth1").await;
        assert_eq!(egress_after, egress_before, "web.1 keeps its egress address");
        let out = eventually(&second, "t1", "nslookup web 127.0.0.11").await;
        assert!(out.contains("198.18.10.2"), "{out}");
        let answer = eventually(&second, "t1", "timeout 5 wget -qO- http://web/").await;
        assert_eq!(answer.trim(), "v1 web-1", "the VIP adopted, web.2 gone from it");
        eventually(&second, "t1", "ping -c1 -W2 192.0.2.1").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while w2.netns.exists() {
            assert!(Instant::now() < deadline, "web.2's namespace is still there");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let _ = second.runtime.stop("t1", Duration::from_secs(2)).await;
        second.network.release("t1");
        second.runtime.remove("t1").await.expect("remove web.1");
    });
}

/// Runs an agent's life (`body`, on a runtime of its own) on a thread in a private mount
/// namespace that is a slave of the host's, as `ip netns exec` makes it; the namespace goes
/// when the thread ends.
fn as_agent<T: Send, F: std::future::Future<Output = T>>(body: impl FnOnce() -> F + Send) -> T {
    use nix::mount::MsFlags;
    use nix::sched::CloneFlags;
    std::thread::scope(|scope| {
        let thread = scope.spawn(|| {
            nix::sched::unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS).expect("unshare mount namespace");
            nix::mount::mount(None::<&str>, "/", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>)
                .expect("make / a slave");
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio");
            runtime.block_on(body())
        });
        match thread.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

//! Service networking end to end (SCENARIOS.md 6, 13, 15–17) on 3 managers and 2 workers, real
//! containerd, driven by the `shoal` CLI: overlay networks, VIPs and DNS seen from inside
//! containers, the routing mesh on every node (also nodes without a task) keeping the client's
//! real address, host-mode ports, isolation between networks, egress and `--internal`, names
//! forwarded to an upstream resolver on the underlay, and propagation when tasks die, scale down
//! or their agent restarts.

#![allow(clippy::print_stderr)]

mod scenarios;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::UdpSocket;
use std::time::Instant;

use shoal_testkit::{Cluster, Node, images, in_netns};
use support::{NetnsBed, body, env, http_script, in_task, ok, running_task, running_task_on, until, wait_for};

/// The upstream resolver the agents forward to: answers `outside.test. A 192.0.2.99` and
/// REFUSED to anything else, at 192.0.2.1:53 in the underlay namespace.
fn fake_upstream(underlay: &str) -> UdpSocket {
    let socket = in_netns(underlay, || UdpSocket::bind("192.0.2.1:53")).expect("enter underlay").expect("bind :53");
    let serving = socket.try_clone().expect("clone socket");
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((len, from)) = serving.recv_from(&mut buf) {
            if len < 12 {
                continue;
            }
            // The question: labels from byte 12 up to the zero label, then type and class.
            let mut at = 12;
            let mut labels = Vec::new();
            while at < len && buf[at] != 0 {
                let n = buf[at] as usize;
                labels.push(String::from_utf8_lossy(&buf[at + 1..(at + 1 + n).min(len)]).to_lowercase());
                at += 1 + n;
            }
            let end = (at + 5).min(len);
            let qtype = if end == at + 5 { u16::from_be_bytes([buf[at + 1], buf[at + 2]]) } else { 0 };
            let mut answer = buf[..end].to_vec();
            answer[2] = 0x81; // response, recursion desired
            if labels.join(".") == "outside.test" && qtype == 1 {
                answer[3] = 0x80; // recursion available, NOERROR
                answer[6..8].copy_from_slice(&1u16.to_be_bytes());
                answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 99]);
            } else {
                answer[3] = 0x85; // REFUSED
            }
            let _ = serving.send_to(&answer, from);
        }
    });
    socket
}

/// GET `path` from `host:port` out of the underlay namespace (a client outside the cluster,
/// 192.0.2.1): the body of a 200 answer.
fn from_outside(cluster: &Cluster, host: impl std::fmt::Display, port: u16, path: &str) -> Option<String> {
    let out = Cluster::command_in(cluster.underlay_netns(), images::BUSYBOX)
        .args(["sh", "-c", &http_script(&host.to_string(), port, path)])
        .output()
        .ok()?;
    body(&String::from_utf8_lossy(&out.stdout))
}

/// GET `path` from `host:port` inside task `task_id`'s container: the body of a 200 answer.
fn from_task(env: &support::Env, node: &Node, task_id: &str, host: &str, port: u16, path: &str) -> Option<String> {
    let (_, out) = in_task(env, node, task_id, &["sh", "-c", &http_script(host, port, path)]);
    body(&out)
}

/// The addresses busybox `nslookup NAME` printed (after the server's own lines).
fn looked_up(output: &str) -> BTreeSet<String> {
    output
        .split("Name:")
        .skip(1)
        .flat_map(|part| part.lines().filter_map(|l| l.trim().strip_prefix("Address:").map(|a| a.trim().to_owned())))
        .map(|a| a.split_whitespace().next().unwrap_or_default().to_owned())
        .filter(|a| !a.is_empty())
        .collect()
}

#[test]
fn service_networking() {
    let Some(env) = env("e2e service_networking", 5) else { return };
    let nodes: Vec<Node> = (1..=5).map(|i| env.cluster.node(i).expect("node").clone()).collect();
    let (m1, m2, m3, w1, w2) = (&nodes[0], &nodes[1], &nodes[2], &nodes[3], &nodes[4]);
    let _upstream = fake_upstream(env.cluster.underlay_netns());
    let sc = env.shoal();

    eprintln!("--- 3 managers and 2 workers; overlays from 198.18.0.0/16, gateway bridges on 198.19.0.0/24");
    let (m1_process, worker_token) = sc.init(m1).expect("init");
    let shoal = sc.cli(m1, m1);
    let manager_token = ok(&shoal, &["join-token", "manager", "-q"]).trim().to_owned();
    let mut processes = vec![m1_process];
    for m in [m2, m3] {
        processes.push(sc.join_manager(m, &manager_token, m1).expect("join manager"));
        until(&shoal, &format!("{} Ready", m.name), 30, &["node", "ls"], |out| {
            out.lines().any(|l| l.contains(&format!(" {} ", m.name)) && l.contains(" Ready "))
        });
    }
    let mut w1_agent = sc.join_worker(w1, &worker_token, m1).expect("join w1");
    processes.push(sc.join_worker(w2, &worker_token, m1).expect("join w2"));
    until(&shoal, "5 Ready", 30, &["node", "ls"], |out| out.matches(" Ready ").count() == 5);

    eprintln!("--- networks: front, back, private (internal); bad requests refused, nothing left behind");
    let networks = ok(&shoal, &["network", "ls"]);
    assert!(networks.contains("ingress"), "{networks}");
    ok(&shoal, &["network", "create", "-d", "overlay", "front"]);
    ok(&shoal, &["network", "create", "--driver", "overlay", "--subnet", "198.18.200.0/24", "--attachable", "back"]);
    ok(&shoal, &["network", "create", "--internal", "private"]);
    let (created, _, err) = shoal.run(&["network", "create", "--subnet", "198.18.200.128/25", "clash"]).expect("run");
    assert!(!created && err.contains("overlaps network back's subnet 198.18.200.0/24"), "{err}");
    let (created, _, err) =
        shoal.run(&["network", "create", "--subnet", "198.18.201.0/24", "--gateway", "198.18.9.1", "gw"]).expect("run");
    assert!(!created && err.contains("is not a host address of the subnet"), "{err}");
    let networks = ok(&shoal, &["network", "ls"]);
    assert!(!networks.contains("clash") && !networks.contains(" gw "), "{networks}");
    let inspect: serde_json::Value = serde_json::from_str(&ok(&shoal, &["network", "inspect", "back"])).expect("json");
    let back = &inspect[0];
    assert_eq!(back["IPAM"]["Config"][0]["Subnet"], "198.18.200.0/24", "{inspect}");
    assert_eq!(back["IPAM"]["Config"][0]["Gateway"], "198.18.200.1", "{inspect}");
    assert_eq!(back["Attachable"], true, "{inspect}");
    let vni = back["Options"]["com.docker.network.driver.overlay.vxlanid_list"].as_str().unwrap_or_default();
    assert!(vni.parse::<u32>().is_ok_and(|v| v >= 4096), "a VNI from 4096: {inspect}");

    let registry = &env.registry_addr;
    let web_image = format!("{registry}/shoal-test/web:v1");
    let tools = format!("{registry}/shoal-test/tools:latest");
    eprintln!("--- web: 3 replicas on front, published on 8080 through the routing mesh");
    ok(
        &shoal,
        &["service", "create", "--name", "web", "--replicas", "3", "--network", "front", "-p", "8080:80", &web_image],
    );
    let ls = ok(&shoal, &["service", "ls"]);
    assert!(ls.contains("*:8080->80/tcp"), "{ls}");
    let ps = ok(&shoal, &["service", "ps", "web"]);
    let with_task: BTreeSet<&str> =
        nodes.iter().filter(|n| ps.contains(&format!(" {} ", n.name))).map(|n| n.name.as_str()).collect();

    eprintln!("--- the published port answers on all 5 node addresses; requests spread over all tasks");
    let mut hostnames = BTreeSet::new();
    for node in &nodes {
        let mut answer = None;
        wait_for(&format!("{}:8080 answers", node.addr), 20, || {
            answer = from_outside(&env.cluster, node.addr, 8080, "/");
            answer.is_some()
        });
        assert!(answer.as_deref().is_some_and(|a| a.starts_with("v1 ")), "{}: {answer:?}", node.name);
    }
    let without = nodes.iter().find(|n| !with_task.contains(n.name.as_str())).expect("a node without a web task");
    for _ in 0..30 {
        if let Some(answer) = from_outside(&env.cluster, without.addr, 8080, "/") {
            hostnames.insert(answer);
        }
    }
    assert_eq!(hostnames.len(), 3, "30 requests through {} reach all 3 tasks: {hostnames:?}", without.name);

    eprintln!("--- the backend sees the client's real address (no SNAT in the mesh)");
    let who = from_outside(&env.cluster, without.addr, 8080, "/cgi-bin/who").expect("who");
    // httpd listens on a dual-stack socket: it sees [::ffff:192.0.2.1].
    assert!(
        who.contains("192.0.2.1]") || who.ends_with(" 192.0.2.1"),
        "the backend saw {who:?}, not the client 192.0.2.1"
    );

    eprintln!("--- client on front and back; db (dnsrr) and lonely on back; sealed on private");
    ok(&shoal, &["service", "create", "--name", "client", "--network", "front", "--network", "back", &tools]);
    ok(
        &shoal,
        &[
            "service",
            "create",
            "--name",
            "db",
            "--replicas",
            "2",
            "--endpoint-mode",
            "dnsrr",
            "--network",
            "back",
            &web_image,
        ],
    );
    ok(&shoal, &["service", "create", "--name", "lonely", "--network", "back", &tools]);
    ok(&shoal, &["service", "create", "--name", "sealed", "--network", "private", &tools]);
    let (client_node, client, _) = running_task(&env, &nodes, "client");
    let resolv = in_task(&env, client_node, &client, &["cat", "/etc/resolv.conf"]).1;
    assert!(resolv.contains("nameserver 127.0.0.11") && resolv.contains("ndots:0"), "{resolv}");

    eprintln!("--- VIP and DNS from inside a container; inspect shows the VIPs and each node's peers");
    let vip = looked_up(&in_task(&env, client_node, &client, &["nslookup", "web"]).1);
    assert_eq!(vip.len(), 1, "web resolves to one VIP: {vip:?}");
    let web: serde_json::Value = serde_json::from_str(&ok(&shoal, &["service", "inspect", "web"])).expect("json");
    let vips: Vec<&str> = web["Endpoint"]["VirtualIPs"]
        .as_array()
        .map(|v| v.iter().filter_map(|v| v["Addr"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(vips.len(), 2, "a VIP on front and one on ingress: {web}");
    let front_vip_cidr = format!("{}/", vip.iter().next().expect("vip"));
    assert!(vips.iter().any(|v| v.starts_with(&front_vip_cidr)), "inspect names the VIP DNS gives: {vips:?}");
    let front: serde_json::Value = serde_json::from_str(&ok(&shoal, &["network", "inspect", "front"])).expect("json");
    let peers = front[0]["Peers"].as_array().cloned().unwrap_or_default();
    let web_peers = peers
        .iter()
        .flat_map(|p| p["Endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e.as_str().is_some_and(|e| e.starts_with("web.")))
        .count();
    assert_eq!(web_peers, 3, "network inspect front lists web's 3 tasks among its nodes' peers: {front}");
    let tasks_web = looked_up(&in_task(&env, client_node, &client, &["nslookup", "tasks.web"]).1);
    assert_eq!(tasks_web.len(), 3, "tasks.web: {tasks_web:?}");
    let mut through_vip = BTreeSet::new();
    for _ in 0..20 {
        let answer = from_task(&env, client_node, &client, "web", 80, "/");
        through_vip.insert(answer.expect("GET http://web/ from client"));
    }
    assert_eq!(through_vip.len(), 3, "the VIP balances over the 3 tasks across nodes: {through_vip:?}");
    let db = looked_up(&in_task(&env, client_node, &client, &["nslookup", "db"]).1);
    assert_eq!(db.len(), 2, "dnsrr: db resolves to its 2 task addresses: {db:?}");

    eprintln!("--- isolation: lonely (back only) neither resolves nor reaches web");
    let (lonely_node, lonely, _) = running_task(&env, &nodes, "lonely");
    let (resolved, out) = in_task(&env, lonely_node, &lonely, &["nslookup", "web"]);
    assert!(!resolved || looked_up(&out).is_empty(), "web is not a name on back: {out}");
    let front_vip = vip.iter().next().expect("vip").clone();
    let reached = from_task(&env, lonely_node, &lonely, &front_vip, 80, "/");
    assert!(reached.is_none(), "back reached front's VIP: {reached:?}");

    eprintln!("--- egress: front reaches 192.0.2.1; the internal network does not; upstream names are forwarded");
    let egress = from_task(&env, client_node, &client, "192.0.2.1", 5000, "/v2/");
    assert!(egress.is_some(), "egress from client to the registry at 192.0.2.1:5000");
    let (sealed_node, sealed, _) = running_task(&env, &nodes, "sealed");
    let escaped = from_task(&env, sealed_node, &sealed, "192.0.2.1", 5000, "/v2/");
    assert!(escaped.is_none(), "an internal network has no egress: {escaped:?}");
    let outside = looked_up(&in_task(&env, client_node, &client, &["nslookup", "outside.test"]).1);
    assert_eq!(outside, BTreeSet::from(["192.0.2.99".to_owned()]), "forwarded to the upstream on the underlay");

    eprintln!("--- host mode: port 9090 answers only on the node that runs the task");
    ok(&shoal, &["service", "create", "--name", "pinned", "-p", "published=9090,target=80,mode=host", &web_image]);
    let (pinned_node, _, _) = running_task(&env, &nodes, "pinned");
    wait_for("9090 on the pinned node", 20, || from_outside(&env.cluster, pinned_node.addr, 9090, "/").is_some());
    for node in nodes.iter().filter(|n| n.name != pinned_node.name) {
        assert!(from_outside(&env.cluster, node.addr, 9090, "/").is_none(), "{} answers 9090", node.name);
    }

    eprintln!("--- a killed task leaves DNS and the load balancers on every node");
    // A probe on every node, to look from each.
    ok(&shoal, &["service", "create", "--name", "probe", "--mode", "global", "--network", "front", &tools]);
    let probes: Vec<(&Node, String)> = nodes
        .iter()
        .map(|node| {
            let (on, id, _) = running_task_on(&env, &nodes, "probe", &node.name);
            (on, id)
        })
        .collect();
    let (victim_node, victim, victim_name) = running_task(&env, &nodes, "web");
    let victim_ip: BTreeSet<String> = {
        // `network inspect` lists each node's endpoints as "web.2 198.18.1.5/24".
        let inspect = ok(&shoal, &["network", "inspect", "front"]);
        let endpoint = format!("{victim_name} ");
        let line = inspect.lines().find(|l| l.contains(&endpoint)).map(str::to_owned).unwrap_or_default();
        tasks_web.iter().filter(|ip| line.contains(&format!("{ip}/"))).cloned().collect()
    };
    assert_eq!(victim_ip.len(), 1, "the victim's address on front from network inspect");
    let killed_at = Instant::now();
    let ns = sc.containerd_namespace(victim_node);
    let killed =
        env.containerd.ctr().args(["--namespace", &ns, "tasks", "kill", "--signal", "SIGKILL", &victim]).status();
    assert!(killed.is_ok_and(|s| s.success()));
    for (node, probe) in &probes {
        wait_for(&format!("the killed task out of tasks.web on {}", node.name), 10, || {
            let now = looked_up(&in_task(&env, node, probe, &["nslookup", "tasks.web"]).1);
            !now.is_empty() && now.is_disjoint(&victim_ip)
        });
    }
    eprintln!("    gone from DNS on every node {:?} after the kill", killed_at.elapsed());
    // No VIP balancer still sends to the dead task: every request through it is answered.
    for (node, probe) in &probes {
        for _ in 0..6 {
            let answer = from_task(&env, node, probe, "web", 80, "/");
            assert!(answer.is_some(), "a request through web's VIP from {} went unanswered", node.name);
        }
    }
    until(&shoal, "3 web tasks running again", 30, &["service", "ps", "web"], |out| {
        support::running_per_node(out).values().sum::<usize>() == 3
    });

    eprintln!("--- scale web to 2: tasks.web has 2 addresses; the mesh serves 2 hostnames");
    ok(&shoal, &["service", "scale", "web=2"]);
    wait_for("tasks.web has 2", 15, || {
        looked_up(&in_task(&env, client_node, &client, &["nslookup", "tasks.web"]).1).len() == 2
    });
    let mut after: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..20 {
        if let Some(answer) = from_outside(&env.cluster, without.addr, 8080, "/") {
            *after.entry(answer).or_insert(0) += 1;
        }
    }
    assert_eq!(after.len(), 2, "{after:?}");

    eprintln!("--- restart w1's agent: its tasks keep running and stay reachable");
    let w1_ns = sc.containerd_namespace(w1);
    let before = env.containerd.ctr().args(["--namespace", &w1_ns, "tasks", "list"]).output().expect("ctr");
    let before = String::from_utf8_lossy(&before.stdout).to_string();
    w1_agent.kill().expect("kill w1's agent");
    let args: Vec<String> = std::iter::once("run".to_owned()).chain(sc.node_flags(w1)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = env.bins.join("shoal-agent");
    w1_agent = env.cluster.spawn(w1, "shoal-agent-run", &agent.to_string_lossy(), &args).expect("restart w1");
    until(&shoal, "w1 Ready again", 30, &["node", "ls"], |out| {
        out.lines().any(|l| l.contains(&format!(" {} ", w1.name)) && l.contains(" Ready "))
    });
    let after = env.containerd.ctr().args(["--namespace", &w1_ns, "tasks", "list"]).output().expect("ctr");
    let after = String::from_utf8_lossy(&after.stdout).to_string();
    let pids = |listing: &str| -> BTreeSet<String> {
        listing
            .lines()
            .filter(|l| l.contains("RUNNING"))
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(pids(&before), pids(&after), "the same containers with the same PIDs: adopted, not restarted");
    // Seen once in CI: right after the restart, the mesh on w1 did not answer for a moment (not
    // yet explained; the containers and their namespaces were kept). It must be back within
    // seconds and then stay.
    wait_for("the mesh on w1 after its restart", 10, || from_outside(&env.cluster, w1.addr, 8080, "/").is_some());
    for _ in 0..10 {
        assert!(from_outside(&env.cluster, w1.addr, 8080, "/").is_some(), "the mesh on w1 after its restart");
    }
    drop(w1_agent);
    drop(processes);
}

/// The scenario the VM and SSH testbeds run (`e2e_vm.rs`), here on three netns nodes.
#[test]
fn routing_mesh_and_vips_on_netns() {
    let Some(bed) = NetnsBed::new("e2e routing_mesh_and_vips_on_netns", 3) else { return };
    let cluster = scenarios::start(&bed);
    scenarios::mesh::routing_mesh_and_vips(&bed, &cluster);
    // This host's kernel has no ESP: an encrypted network's tasks are refused with the reason.
    scenarios::encrypted::encrypted_overlay(&bed, &cluster);
}

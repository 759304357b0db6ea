//! `cargo xtask bench mesh`: service networking through the whole stack, on a 3-node netns
//! cluster with release binaries. In one run:
//!
//! - HTTP requests (connect, GET, read to the end; busybox httpd in the `web` image, two tasks on
//!   the two workers) through the routing mesh from outside to the node that runs no web task,
//!   through the service VIP from a task on that node, and straight to the tasks' addresses from
//!   the same task: requests/s with 4 connections, p50 and p99, in alternating rounds, medians
//!   compared (mesh/direct and vip/direct, target >= 0.8);
//! - one iperf3 stream task to task across nodes over the overlay against the same between the
//!   node namespaces over their plain veths (target >= 0.8);
//! - propagation: from a web task killed to its address gone from `tasks.web` and from the load
//!   balancers (the VIP's in a task namespace, the routing mesh's in the ingress sandbox) on every
//!   node, and from a new task RUNNING to it being served everywhere (target <= 1 s each).
//!
//! Each target is printed as met or MISSED. Everything runs in namespaces of the harness.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shoal_testkit::shoal::{Cli, ShoalCluster};
use shoal_testkit::{Cluster, Node, in_netns};

/// Rounds of each path, alternating.
pub(crate) const ROUNDS: usize = 3;
/// Seconds of each round.
pub(crate) const ROUND_SECS: u64 = 4;
/// Concurrent connections of the HTTP load.
pub(crate) const CONNECTIONS: usize = 4;

pub(crate) fn shoal(cli: &Cli, args: &[&str]) -> anyhow::Result<String> {
    let (ok, out, err) = cli.run(args)?;
    if !ok {
        bail!("shoal {}: {}", args.join(" "), err.trim());
    }
    Ok(out)
}

/// `shoal service create` of `name` with one task on each of the two workers, on `network`,
/// with `extra` flags, running `image`.
pub(crate) fn one_per_worker(
    cli: &Cli,
    name: &str,
    network: &str,
    extra: &[&str],
    image: &str,
) -> anyhow::Result<String> {
    let mut args = vec![
        "service",
        "create",
        "--name",
        name,
        "--replicas",
        "2",
        "--replicas-max-per-node",
        "1",
        "--constraint",
        "node.role==worker",
        "--network",
        network,
    ];
    args.extend_from_slice(extra);
    args.push(image);
    shoal(cli, &args)
}

fn json(cli: &Cli, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let out = shoal(cli, args)?;
    serde_json::from_str(&out).with_context(|| format!("shoal {}: not JSON: {out}", args.join(" ")))
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// One round of HTTP load: requests/s, p50 and p99 in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Load {
    pub(crate) rps: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
}

/// `CONNECTIONS` clients in `netns`, each requesting `GET /` from the next of `targets` in turn
/// until the round ends. A failed request fails the round (the bench must not time errors).
pub(crate) fn load(netns: &str, targets: &[SocketAddr]) -> anyhow::Result<Load> {
    let deadline = Instant::now() + Duration::from_secs(ROUND_SECS);
    let mut workers = Vec::new();
    for worker in 0..CONNECTIONS {
        let (netns, targets) = (netns.to_owned(), targets.to_vec());
        workers.push(std::thread::spawn(move || {
            in_netns(&netns, move || -> Result<Vec<f64>, String> {
                let mut latencies = Vec::new();
                let mut turn = worker;
                while Instant::now() < deadline {
                    let target = targets[turn % targets.len()];
                    turn += 1;
                    let started = Instant::now();
                    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(3))
                        .map_err(|e| format!("connect {target}: {e}"))?;
                    stream.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
                    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").map_err(|e| format!("send to {target}: {e}"))?;
                    let mut answer = Vec::new();
                    stream.read_to_end(&mut answer).map_err(|e| format!("read from {target}: {e}"))?;
                    if !answer.starts_with(b"HTTP/1.") {
                        return Err(format!("{target} answered {:?}", String::from_utf8_lossy(&answer)));
                    }
                    latencies.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                Ok(latencies)
            })
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        let latencies = worker
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))?
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        all.extend(latencies);
    }
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1))).copied();
    Ok(Load {
        rps: all.len() as f64 / ROUND_SECS as f64,
        p50: at(0.5).unwrap_or(f64::NAN),
        p99: at(0.99).unwrap_or(f64::NAN),
    })
}

/// A DNS A query for `name` to 127.0.0.11:53 from inside `netns`: the addresses answered.
fn resolve(netns: &str, name: &str) -> anyhow::Result<BTreeSet<Ipv4Addr>> {
    let mut query = vec![0x5e, 0x11, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let answer = in_netns(netns, move || -> std::io::Result<Vec<u8>> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(1)))?;
        socket.send_to(&query, "127.0.0.11:53")?;
        let mut buf = [0u8; 1500];
        let len = socket.recv(&mut buf)?;
        Ok(buf[..len].to_vec())
    })??;
    Ok(a_records(&answer))
}

/// The A records of a DNS answer (names skipped by their length or compression pointer).
fn a_records(message: &[u8]) -> BTreeSet<Ipv4Addr> {
    let mut out = BTreeSet::new();
    if message.len() < 12 {
        return out;
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([message[i], message[i + 1]]));
    let (questions, answers) = (count(4), count(6));
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let len = *message.get(at)?;
            if len & 0xc0 == 0xc0 {
                return Some(at + 2);
            }
            if len == 0 {
                return Some(at + 1);
            }
            at += 1 + usize::from(len);
        }
    };
    let mut at = 12;
    for _ in 0..questions {
        let Some(next) = skip_name(at) else { return out };
        at = next + 4;
    }
    for _ in 0..answers {
        let Some(next) = skip_name(at) else { return out };
        let Some(header) = message.get(next..next + 10) else { return out };
        let (kind, len) =
            (u16::from_be_bytes([header[0], header[1]]), usize::from(u16::from_be_bytes([header[8], header[9]])));
        if let (1, 4, Some(ip)) = (kind, len, message.get(next + 10..next + 14)) {
            out.insert(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]));
        }
        at = next + 10 + len;
    }
    out
}

/// The nftables ruleset of `netns` as text (what the load balancers there hold).
fn ruleset(netns: &str) -> String {
    Cluster::command_in(netns, "nft")
        .args(["list", "ruleset"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// iperf3 for `secs` from `client_ns` to `server` (an address in `server_ns`): Gbit/s received.
fn iperf(server_ns: &str, client_ns: &str, server: Ipv4Addr, secs: u64) -> anyhow::Result<f64> {
    let mut daemon = Cluster::command_in(server_ns, "iperf3")
        .args(["-s", "-1", "-B", &server.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("start iperf3 -s")?;
    std::thread::sleep(Duration::from_millis(300));
    let out = Cluster::command_in(client_ns, "iperf3")
        .args(["-c", &server.to_string(), "-t", &secs.to_string(), "-J"])
        .output()
        .context("run iperf3 -c")?;
    let _ = daemon.wait();
    if !out.status.success() {
        bail!("iperf3 -c {server} failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .context("iperf3 report without end.sum_received.bits_per_second")
}

/// The address of task `task_name` (`web.1`) on `network`, from `shoal network inspect`, which
/// lists each node's endpoints as "web.1 198.18.1.3/24". Polled: a new task's comes with its
/// RUNNING state or before.
fn endpoint_ip(cli: &Cli, network: &str, task_name: &str) -> anyhow::Result<Ipv4Addr> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let inspect = shoal(cli, &["network", "inspect", network])?;
        let needle = format!("{task_name} ");
        let found = inspect
            .split('"')
            .filter_map(|s| s.strip_prefix(&needle))
            .filter_map(|addr| addr.split('/').next()?.parse().ok())
            .next_back();
        if let Some(ip) = found {
            return Ok(ip);
        }
        if Instant::now() > deadline {
            bail!("no endpoint of {task_name} on {network} in `shoal network inspect {network}`");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What one node's watcher sees: the first time `done` held, from `start`.
fn watch_all(
    namespaces: &[(String, String)],
    start: Instant,
    done: impl Fn(&str, &str) -> bool + Sync,
) -> anyhow::Result<f64> {
    let deadline = start + Duration::from_secs(15);
    let mut times = Vec::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = namespaces
            .iter()
            .map(|(task_ns, sandbox_ns)| {
                let done = &done;
                scope.spawn(move || {
                    loop {
                        if done(task_ns, sandbox_ns) {
                            return Some(start.elapsed().as_secs_f64());
                        }
                        if Instant::now() > deadline {
                            return None;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        for handle in handles {
            times.push(handle.join().ok().flatten());
        }
    });
    if times.iter().any(Option::is_none) {
        bail!("not every node got there within 15 s");
    }
    Ok(times.into_iter().flatten().fold(0.0, f64::max))
}

pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    let crate::converge::BenchCluster { bins, cluster, archives: _, containerd, registry, registry_addr } =
        crate::converge::bench_cluster(root, "bench mesh")?;
    let nodes: Vec<Node> = (1..=3).map(|i| cluster.node(i).cloned()).collect::<Result<_, _>>()?;
    let sc = ShoalCluster::new(&cluster, &bins, containerd.socket(), &registry_addr, "1");
    let (manager, token) = sc.init(&nodes[0])?;
    let cli = sc.cli(&nodes[0], &nodes[0]);
    let w1 = sc.join_worker(&nodes[1], &token, &nodes[0])?;
    let w2 = sc.join_worker(&nodes[2], &token, &nodes[0])?;
    crate::converge::wait(&cli, "3 Ready nodes", 60, &["node", "ls"], |out| out.matches(" Ready ").count() == 3)?;
    let web = format!("{registry_addr}/shoal-test/web:v1");
    let tools = format!("{registry_addr}/shoal-test/tools:latest");
    shoal(&cli, &["network", "create", "bench"])?;
    one_per_worker(&cli, "web", "bench", &["-p", "8080:80"], &web)?;
    shoal(&cli, &["service", "create", "--name", "probe", "--mode", "global", "--network", "bench", &tools])?;
    println!("mesh bench: web ×2 on the workers (busybox httpd), a probe task on every node, release binaries");

    // Where things are: the probe's namespace on each node, web's addresses, the VIP.
    let node_ids: Vec<(String, String)> = json(&cli, &["node", "ls", "--format", "json"])?
        .as_array()
        .context("node list")?
        .iter()
        .map(|n| {
            (n["ID"].as_str().unwrap_or_default().to_owned(), n["Hostname"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let probe_ns = |node: &Node| -> anyhow::Result<String> {
        let tasks = json(&cli, &["service", "ps", "--format", "json", "probe"])?;
        let id = node_ids.iter().find(|(_, h)| *h == node.name).map(|(id, _)| id.clone()).unwrap_or_default();
        let task = tasks
            .as_array()
            .and_then(|t| t.iter().find(|t| t["NodeID"] == id.as_str() && t["State"] == "Running"))
            .with_context(|| format!("no running probe on {}", node.name))?;
        Ok(format!("{}t{}", sc.netns_prefix(node), task["ID"].as_str().unwrap_or_default()))
    };
    let mut probes = Vec::new();
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(60);
        let ns = loop {
            match probe_ns(node) {
                Ok(ns) if Path::new("/run/netns").join(&ns).exists() => break ns,
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                Ok(ns) => bail!("the probe namespace {ns} on {} does not exist", node.name),
                Err(err) => return Err(err),
            }
        };
        probes.push((ns, format!("{}ingress-sbox", sc.netns_prefix(node))));
    }
    let tasks_web = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = resolve(&probes[0].0, "tasks.web").unwrap_or_default();
            if answer.len() == 2 {
                break answer;
            }
            if Instant::now() > deadline {
                bail!("tasks.web never answered 2 addresses (last: {answer:?})");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let vip = *resolve(&probes[0].0, "web")?.iter().next().context("web has no VIP")?;
    let mesh_target: SocketAddr = (nodes[0].addr, 8080).into();
    let direct: Vec<SocketAddr> = tasks_web.iter().map(|ip| SocketAddr::from((*ip, 80))).collect();
    // Warm up every path (first connections fill ARP and neighbour tables).
    load(cluster.underlay_netns(), &[mesh_target]).context("the routing mesh path")?;

    println!("\nHTTP, {CONNECTIONS} connections, {ROUNDS} alternating rounds of {ROUND_SECS} s:");
    let (mut mesh, mut vip_runs, mut direct_runs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let mut order = ["mesh", "vip", "direct"];
        order.rotate_left(round % 3);
        for path in order {
            match path {
                "mesh" => mesh.push(load(cluster.underlay_netns(), &[mesh_target])?),
                "vip" => vip_runs.push(load(&probes[0].0, &[SocketAddr::from((vip, 80))])?),
                _ => direct_runs.push(load(&probes[0].0, &direct)?),
            }
        }
    }
    let summary = |name: &str, runs: &[Load]| -> f64 {
        let mut rps: Vec<f64> = runs.iter().map(|l| l.rps).collect();
        let mut p50: Vec<f64> = runs.iter().map(|l| l.p50).collect();
        let mut p99: Vec<f64> = runs.iter().map(|l| l.p99).collect();
        let rps = median(&mut rps);
        println!("{name:<44}{rps:>9.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms", median(&mut p50), median(&mut p99));
        rps
    };
    let mesh_rps = summary("routing mesh (outside → node without a task)", &mesh);
    let vip_rps = summary("service VIP (task → VIP, tasks on other nodes)", &vip_runs);
    let direct_rps = summary("direct (task → task addresses over the overlay)", &direct_runs);
    for (name, ratio) in [("mesh / direct", mesh_rps / direct_rps), ("vip / direct", vip_rps / direct_rps)] {
        println!("{name:<44}{ratio:>9.2}x   target >= 0.8: {}", met(ratio >= 0.8));
    }

    println!("\nthroughput, one iperf3 stream, {ROUNDS} alternating rounds of 3 s:");
    let (mut overlay, mut underlay) = (Vec::new(), Vec::new());
    let probe_addr = |ns: &str| -> anyhow::Result<Ipv4Addr> {
        let out = Cluster::command_in(ns, "ip").args(["-4", "-o", "addr", "show", "dev", "eth0"]).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|a| a.split('/').next()?.parse().ok())
            .with_context(|| format!("no address on eth0 in {ns}: {text}"))
    };
    let server_addr = probe_addr(&probes[2].0)?;
    for round in 0..ROUNDS {
        let first_overlay = round % 2 == 0;
        for side in if first_overlay { ["overlay", "underlay"] } else { ["underlay", "overlay"] } {
            if side == "overlay" {
                overlay.push(iperf(&probes[2].0, &probes[1].0, server_addr, 3)?);
            } else {
                underlay.push(iperf(&nodes[2].netns, &nodes[1].netns, nodes[2].addr, 3)?);
            }
        }
    }
    let (overlay, underlay) = (median(&mut overlay), median(&mut underlay));
    println!("{:<44}{overlay:>9.2} Gbit/s", "task → task across nodes (overlay)");
    println!("{:<44}{underlay:>9.2} Gbit/s", "node → node (plain veth)");
    let ratio = overlay / underlay;
    println!("{:<44}{ratio:>9.2}x   target >= 0.8: {}", "overlay / veth", met(ratio >= 0.8));

    println!("\npropagation, every node's DNS, VIP load balancer and ingress sandbox:");
    // The victim: a running web task, with its address on bench (DNS, the VIP's balancer) and on
    // ingress (the routing mesh's balancer).
    let web_tasks = json(&cli, &["service", "ps", "--format", "json", "web"])?;
    let victim = web_tasks
        .as_array()
        .and_then(|t| t.iter().find(|t| t["State"] == "Running"))
        .context("a running web task")?
        .clone();
    let (victim_id, victim_name) =
        (victim["ID"].as_str().unwrap_or_default().to_owned(), victim["Name"].as_str().unwrap_or_default().to_owned());
    let victim_ip = endpoint_ip(&cli, "bench", &victim_name)?;
    let victim_ingress = endpoint_ip(&cli, "ingress", &victim_name)?;
    let host = node_ids.iter().find(|(id, _)| victim["NodeID"] == id.as_str()).map(|(_, h)| h.clone());
    let victim_node = nodes.iter().find(|n| Some(&n.name) == host.as_ref()).context("the victim's node")?;
    let ctr_ns = sc.containerd_namespace(victim_node);
    let started = Instant::now();
    let status =
        containerd.ctr().args(["--namespace", &ctr_ns, "tasks", "kill", "--signal", "SIGKILL", &victim_id]).status()?;
    if !status.success() {
        bail!("ctr tasks kill {victim_id} failed ({status})");
    }
    let gone = watch_all(&probes, started, |task_ns, sandbox_ns| {
        let dns = resolve(task_ns, "tasks.web").is_ok_and(|a| !a.is_empty() && !a.contains(&victim_ip));
        dns && !ruleset(task_ns).contains(&format!("{victim_ip} "))
            && !ruleset(sandbox_ns).contains(&format!("{victim_ingress} "))
    })?;
    println!(
        "{:<44}{:>9.0} ms   target <= 1000 ms: {}",
        "task killed → gone everywhere",
        gone * 1000.0,
        met(gone <= 1.0)
    );

    // Its replacement: from RUNNING (as the manager records it) to served on every node.
    let deadline = Instant::now() + Duration::from_secs(60);
    let running_at = loop {
        let tasks = json(&cli, &["service", "ps", "--format", "json", "web"])?;
        let running = tasks
            .as_array()
            .map_or(0, |t| t.iter().filter(|t| t["State"] == "Running" && t["DesiredState"] == "Running").count());
        if running == 2 {
            break Instant::now();
        }
        if Instant::now() > deadline {
            bail!("the killed web task was not replaced within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The replacement takes the killed task's slot, so its name: its addresses now.
    let fresh = endpoint_ip(&cli, "bench", &victim_name)?;
    let fresh_ingress = endpoint_ip(&cli, "ingress", &victim_name)?;
    let served = watch_all(&probes, running_at, |task_ns, sandbox_ns| {
        let Ok(now) = resolve(task_ns, "tasks.web") else { return false };
        now.contains(&fresh)
            && ruleset(task_ns).contains(&format!("{fresh} "))
            && ruleset(sandbox_ns).contains(&format!("{fresh_ingress} "))
    })?;
    println!(
        "{:<44}{:>9.0} ms   target <= 1000 ms: {}   (RUNNING seen by polling the CLI every 20 ms)",
        "new task RUNNING → served everywhere",
        served * 1000.0,
        met(served <= 1.0)
    );
    println!(
        "\nnot measured in this run (published, for orientation only): Swarm's gossip takes seconds to \
         propagate and sometimes keeps stale entries (moby#28843); its mesh source-NATs (moby#25526)"
    );
    drop((manager, w1, w2, registry, containerd, cluster));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_records_are_read_past_compressed_names() {
        // An answer to `tasks.web A` with two A records named by pointers to the question.
        let mut message = vec![0x5e, 0x11, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 0];
        message.extend_from_slice(&[5, b't', b'a', b's', b'k', b's', 3, b'w', b'e', b'b', 0, 0, 1, 0, 1]);
        for last in [3u8, 4] {
            message.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 198, 18, 1, last]);
        }
        let got: Vec<String> = a_records(&message).iter().map(Ipv4Addr::to_string).collect();
        assert_eq!(got, ["198.18.1.3", "198.18.1.4"]);
        assert!(a_records(&message[..20]).is_empty(), "truncated: nothing, no panic");
    }
}

//! `cargo xtask bench vm`, on the VM cluster (`shoal_testkit::vm`):
//!
//! - the routing mesh, once with every agent on IPVS and once on nftables (`--lb-backend`), on
//!   the same three VMs' image: HTTP requests from outside the cluster to the manager's address,
//!   which runs no web task, so every request crosses the mesh to a worker. Each cluster gets
//!   freshly booted VMs (nothing of the other backend's state is left in the kernels), two per
//!   backend in the order IPVS, nftables, nftables, IPVS;
//! - on each of those clusters, the overlay's throughput from a task on one worker to a task on
//!   the other, over a plain network and over an encrypted one (ESP), in alternating rounds.
//!
//! Under software emulation the absolute figures mean little; the ratios, measured in one run,
//! are the result.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use shoal_testkit::shoal::{BedCluster, Cli, task_exec, task_exec_argv};
use shoal_testkit::vm::{VmBed, three_vms};
use shoal_testkit::{TestNode, Testbed as _};

use crate::mesh::{CONNECTIONS, Load, ROUND_SECS, ROUNDS, load, median, one_per_worker, shoal};

/// Bytes each throughput round sends.
const TRANSFER_MIB: u64 = 32;
/// Throughput rounds per network per cluster.
const TRANSFERS: usize = 2;

/// What one cluster measured.
struct Figures {
    mesh: Vec<Load>,
    /// MB/s over the plain network, then over the encrypted one.
    plain: Vec<f64>,
    encrypted: Vec<f64>,
    /// The driver the guest kernel uses for `rfc4106(gcm(aes))`.
    aes_driver: String,
}

/// The task of `service` on the node named `host`.
fn task_on(cli: &Cli, service: &str, host: &str) -> anyhow::Result<String> {
    let nodes: serde_json::Value = serde_json::from_str(&shoal(cli, &["node", "ls", "--format", "json"])?)?;
    let node_id = nodes
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["Hostname"] == host)
        .and_then(|n| n["ID"].as_str())
        .with_context(|| format!("no node {host}"))?
        .to_owned();
    let tasks: serde_json::Value = serde_json::from_str(&shoal(cli, &["service", "ps", "--format", "json", service])?)?;
    tasks
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["NodeID"] == node_id.as_str() && t["State"] == "Running")
        .and_then(|t| t["ID"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("no running task of {service} on {host}"))
}

/// One transfer of [`TRANSFER_MIB`] from task `from` on `sender` to task `to` on `receiver` at
/// `ip`, port `port`: MB/s as the sender's `time` measures it (connect to close).
fn transfer(
    sender: &dyn TestNode,
    from: &str,
    receiver: &dyn TestNode,
    to: &str,
    ip: &str,
    port: u16,
) -> anyhow::Result<f64> {
    // The listener keeps its standard input open (busybox nc stops at its end) and is killed
    // after the round.
    let listen = format!("sleep 120 | nc -l -p {port} > /dev/null");
    let argv = task_exec_argv(receiver.layout(), to, &format!("sink{port}"), &["sh", "-c", &listen]);
    let mut sink = receiver.spawn(&format!("sink{port}"), &argv)?;
    std::thread::sleep(std::time::Duration::from_secs(3));
    let count = TRANSFER_MIB * 16;
    let send = format!("time sh -c 'dd if=/dev/zero bs=65536 count={count} 2>/dev/null | nc {ip} {port}'");
    let (ok, out) = task_exec(sender, from, &["sh", "-c", &send])?;
    let _ = sink.kill();
    anyhow::ensure!(ok, "the transfer to {ip}:{port} failed: {out}");
    // busybox time: "real\t0m 1.52s"
    let real = out
        .lines()
        .find_map(|l| l.strip_prefix("real"))
        .and_then(|t| {
            let (m, s) = t.trim().split_once('m')?;
            Some(m.trim().parse::<f64>().ok()? * 60.0 + s.trim().trim_end_matches('s').parse::<f64>().ok()?)
        })
        .with_context(|| format!("no time in {out:?}"))?;
    Ok((TRANSFER_MIB * 1024 * 1024) as f64 / 1e6 / real.max(0.01))
}

/// Task-to-task throughput over a plain and an encrypted network, rounds alternating
/// (plain, encrypted, encrypted, plain, …).
fn overlay_throughput(bed: &dyn shoal_testkit::Testbed, cli: &Cli) -> anyhow::Result<(Vec<f64>, Vec<f64>)> {
    let nodes = bed.nodes();
    let (w1, w2) = (nodes[1], nodes[2]);
    let tools = format!("{}/shoal-test/tools:latest", bed.registry());
    shoal(cli, &["network", "create", "plain"])?;
    shoal(cli, &["network", "create", "--opt", "encrypted", "secure"])?;
    for (service, network) in [("sink-plain", "plain"), ("sink-secure", "secure")] {
        one_per_worker(cli, service, network, &["--detach"], &tools)?;
    }
    crate::converge::wait(cli, "sink-plain and sink-secure 2/2", 480, &["service", "ls"], |out| {
        ["sink-plain", "sink-secure"]
            .iter()
            .all(|s| out.lines().any(|l| l.contains(&format!(" {s} ")) && l.contains(" 2/2 ")))
    })?;
    let mut pairs = Vec::new();
    for service in ["sink-plain", "sink-secure"] {
        let (from, to) = (task_on(cli, service, w1.name())?, task_on(cli, service, w2.name())?);
        let (_, addr) = task_exec(w2, &to, &["ip", "-4", "-o", "addr", "show", "eth0"])?;
        let ip = addr
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|c| c.split('/').next())
            .with_context(|| format!("no address in {addr:?}"))?
            .to_owned();
        pairs.push((from, to, ip));
    }
    let (mut plain, mut encrypted) = (Vec::new(), Vec::new());
    let mut port = 5001;
    for round in 0..TRANSFERS {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let (from, to, ip) = &pairs[which];
            let rate = transfer(w1, from, w2, to, ip, port)?;
            port += 1;
            if which == 0 { plain.push(rate) } else { encrypted.push(rate) }
        }
    }
    Ok((plain, encrypted))
}

/// The routing mesh's figures on freshly booted VMs whose agents all use `backend`, and the
/// overlay's throughput on them.
fn measure(bins: &Path, backend: &str) -> anyhow::Result<Figures> {
    let vms = VmBed::start(&three_vms(), bins).context("boot the VM testbed")?;
    let bed = vms.bed();
    let nodes = bed.nodes();
    let shoal_on = BedCluster::with_args(bed, &["--lb-backend", backend]);
    let (_manager, token) = shoal_on.init(nodes[0])?;
    let cli = shoal_on.cli(nodes[0])?;
    let _workers: Vec<_> =
        nodes[1..].iter().map(|w| shoal_on.join_worker(*w, &token, nodes[0])).collect::<Result<_, _>>()?;
    crate::converge::wait(&cli, "3 Ready nodes", 240, &["node", "ls"], |out| out.matches(" Ready ").count() == 3)?;
    for node in &nodes {
        let inspect: serde_json::Value = serde_json::from_str(&shoal(&cli, &["node", "inspect", node.name()])?)?;
        let picked = inspect["Description"]["LoadBalancer"].as_str().unwrap_or_default().to_owned();
        anyhow::ensure!(picked == backend, "{} uses {picked}, not {backend}", node.name());
    }
    let web = format!("{}/shoal-test/web:v1", bed.registry());
    shoal(&cli, &["network", "create", "bench"])?;
    one_per_worker(&cli, "web", "bench", &["-p", "8080:80"], &web)?;
    crate::converge::wait(&cli, "web 2/2", 480, &["service", "ls"], |out| out.contains(" 2/2 "))?;
    let netns = bed.client_netns().context("the VM testbed has a client namespace")?.to_owned();
    let target = SocketAddr::from((nodes[0].addr(), 8080));
    // Until the mesh answers everywhere, then a warm-up round.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while load(&netns, &[target]).is_err() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "{target} does not answer through the mesh");
    }
    let mesh = (0..ROUNDS).map(|_| load(&netns, &[target])).collect::<anyhow::Result<Vec<_>>>()?;
    let (plain, encrypted) = overlay_throughput(bed, &cli)?;
    let crypto = nodes[1].run(&["sh", "-c", "grep -A4 '^name *: rfc4106(gcm(aes))' /proc/crypto | grep '^driver'"])?;
    let aes_driver = crypto.lines().next().and_then(|l| l.split(':').nth(1)).unwrap_or("?").trim().to_owned();
    Ok(Figures { mesh, plain, encrypted, aes_driver })
}

pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    crate::prereq::timed_cargo(&["build", "--workspace", "--bins", "--locked"])?;
    let bins = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), Into::into).join("debug");
    println!(
        "vm bench: 3 qemu VMs (TCG, one vCPU each), web ×2 on the workers (busybox httpd), requests from outside \
         to the manager (no web task there) through the routing mesh; dev-profile binaries, the same for both"
    );
    // ABBA: each backend's clusters come first once and last once, so a drift of the machine
    // over the run (a cold cache, another process) weighs on both alike.
    let mut results: Vec<(&str, Vec<Load>)> = vec![("ipvs", Vec::new()), ("nftables", Vec::new())];
    let (mut plain, mut encrypted, mut drivers) = (Vec::new(), Vec::new(), std::collections::BTreeSet::new());
    for backend in ["ipvs", "nftables", "nftables", "ipvs"] {
        let figures = measure(&bins, backend).with_context(|| format!("the cluster on {backend}"))?;
        results.iter_mut().filter(|(b, _)| *b == backend).for_each(|(_, all)| all.extend(&figures.mesh));
        plain.extend(figures.plain);
        encrypted.extend(figures.encrypted);
        drivers.insert(figures.aes_driver);
    }
    println!(
        "\nHTTP, {CONNECTIONS} connections; per backend two clusters (order ABBA) of {ROUNDS} rounds of {ROUND_SECS} s \
         (medians):"
    );
    let mut rps = Vec::new();
    for (backend, runs) in &mut results {
        let mut r: Vec<f64> = runs.iter().map(|l| l.rps).collect();
        let mut p50: Vec<f64> = runs.iter().map(|l| l.p50).collect();
        let mut p99: Vec<f64> = runs.iter().map(|l| l.p99).collect();
        let r = median(&mut r);
        rps.push(r);
        println!(
            "routing mesh on {backend:<10}{r:>24.0} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms",
            median(&mut p50),
            median(&mut p99)
        );
    }
    println!("{:<44}{:>9.2}x", "ipvs / nftables", rps[0] / rps[1]);
    println!(
        "\noverlay, task on one worker to a task on the other, {TRANSFER_MIB} MiB per transfer, {} transfers each \
         (alternating; medians); the guests' rfc4106(gcm(aes)): {}",
        plain.len(),
        drivers.into_iter().collect::<Vec<_>>().join(", ")
    );
    let (p, e) = (median(&mut plain), median(&mut encrypted));
    println!("{:<44}{p:>9.1} MB/s", "plain VXLAN");
    println!("{:<44}{e:>9.1} MB/s", "encrypted (ESP, AES-GCM)");
    println!("{:<44}{:>9.2}x", "encrypted / plain", e / p);
    Ok(())
}

//! `cargo xtask bench overlay`: iperf3 single stream container → container across two node
//! namespaces over VXLAN, against the same between the nodes over plain veth on the underlay, and
//! the time to program 1,000 remote endpoints. Needs root and Debian's `iperf3`.
//!
//! `SHOAL_BENCH_SECONDS` sets the length of each iperf3 run (default 3), `SHOAL_BENCH_ROUNDS`
//! how many times each path is measured, alternating (default 3; medians are compared).

// A benchmark reports its figures on standard output and problems on standard error.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use shoal_overlay::{
    ContainerSpec, Desired, Kernel, KernelConfig, LocalEndpoint, Naming, NetworkSpec, Overlay, RemoteEndpoint,
};
use shoal_testkit::{Cluster, Node};

/// Removes the bench's container and sandbox namespaces when dropped.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        let listed = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
        for name in String::from_utf8_lossy(&listed).lines().filter_map(|l| l.split_whitespace().next()) {
            if name.starts_with(&self.0) {
                let _ = Command::new("ip").args(["netns", "delete", name]).output();
            }
        }
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; there are no other options.
    if !nix::unistd::geteuid().is_root() {
        eprintln!("overlay bench: needs root (network namespaces, VXLAN, nftables)");
        return ExitCode::FAILURE;
    }
    if !on_path("iperf3") {
        eprintln!("overlay bench: needs iperf3; install it with `apt-get install -y iperf3`");
        return ExitCode::FAILURE;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("overlay bench: {err}");
            ExitCode::FAILURE
        }
    }
}

fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/bin".into(), "/usr/sbin".into()]).any(|d| d.join(name).is_file())
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

fn overlay_for(cluster: &Cluster, node: &Node) -> BenchResult<Overlay<Kernel>> {
    let config = KernelConfig { node_netns: Some(PathBuf::from("/run/netns").join(&node.netns)), ..Default::default() };
    let naming = Naming { netns_prefix: format!("{}-ov-{}-", cluster.prefix(), node.name), ..Default::default() };
    Ok(Overlay::new(Kernel::new(config)?, naming))
}

fn run() -> BenchResult<()> {
    let seconds: u32 = std::env::var("SHOAL_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let rounds: u32 = std::env::var("SHOAL_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3).max(1);
    let cluster = Cluster::new(2)?;
    // Only what the overlay and this program made: the cluster removes its own namespaces.
    let _sweep = Sweep(format!("{}-ov-", cluster.prefix()));
    let (n1, n2) = (cluster.node(1)?.clone(), cluster.node(2)?.clone());
    let net = NetworkSpec::new("bench", 4097, "198.18.0.0/22".parse()?, "198.18.0.1".parse()?);
    let addresses = [Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 3)];

    let mut containers = Vec::new();
    let mut overlays = Vec::new();
    for (i, node) in [&n1, &n2].into_iter().enumerate() {
        let container = format!("{}-ov-c{}", cluster.prefix(), i + 1);
        let status = Command::new("ip").args(["netns", "add", &container]).status()?;
        if !status.success() {
            return Err(format!("ip netns add {container} failed").into());
        }
        let peer = if i == 0 { &n2 } else { &n1 };
        let desired = Desired {
            encryption: None,
            networks: vec![net.clone()],
            containers: vec![ContainerSpec {
                id: container.clone(),
                netns: PathBuf::from("/run/netns").join(&container),
                endpoints: vec![LocalEndpoint::new("bench", "eth0", addresses[i])],
                egress: None,
            }],
            remotes: vec![RemoteEndpoint::new("bench", addresses[1 - i], IpAddr::V4(peer.addr))],
            gateway: None,
        };
        let mut overlay = overlay_for(&cluster, node)?;
        overlay.reconcile(&desired)?;
        overlays.push((overlay, desired));
        containers.push(container);
    }

    // Alternate the two paths for several rounds and compare medians, so that a burst of other
    // work on the machine does not land on one path only.
    println!("overlay bench: iperf3 single stream, {rounds} rounds of {seconds} s per path, alternating");
    let (mut underlay, mut overlay) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let u = iperf(&cluster, &n2.netns, &n1.netns, n2.addr, seconds)?;
        let o = iperf(&cluster, &containers[1], &containers[0], addresses[1], seconds)?;
        println!(
            "  round {round}: underlay {:>6.2} Gbit/s, overlay {:>6.2} Gbit/s, ratio {:.3}",
            u / 1e9,
            o / 1e9,
            o / u
        );
        underlay.push(u);
        overlay.push(o);
    }
    let (underlay, overlay) = (median(&mut underlay), median(&mut overlay));
    println!("  plain veth on the underlay (node1 -> node2), median:   {:>8.2} Gbit/s", underlay / 1e9);
    println!("  overlay, VXLAN (container on node1 -> node2), median:  {:>8.2} Gbit/s", overlay / 1e9);
    println!("  ratio overlay / underlay:                              {:>8.3} (goal >= 0.8)", overlay / underlay);

    // Programming remote endpoints: 1,000 FDB + 1,000 neighbour entries on node1's sandbox.
    let (overlay1, desired1) = &mut overlays[0];
    let base = u32::from(Ipv4Addr::new(198, 18, 1, 0));
    let mut many = desired1.clone();
    for i in 0..1000u32 {
        let node = Ipv4Addr::new(192, 0, 2, 100 + u8::try_from(i % 100)?);
        many.remotes.push(RemoteEndpoint::new("bench", Ipv4Addr::from(base + i), IpAddr::V4(node)));
    }
    let start = Instant::now();
    let added = overlay1.reconcile(&many)?;
    let add_time = start.elapsed();
    let start = Instant::now();
    let unchanged = overlay1.reconcile(&many)?;
    let noop_time = start.elapsed();
    let start = Instant::now();
    let removed = overlay1.reconcile(desired1)?;
    let remove_time = start.elapsed();
    println!("overlay bench: 1,000 remote endpoints on one network");
    println!(
        "  program: {:>5} ops in {:>9.2?} ({:.0} endpoints/s)",
        added.applied.len(),
        add_time,
        per_second(add_time)
    );
    println!("  no-change pass: {:>2} ops in {:>9.2?}", unchanged.applied.len(), noop_time);
    println!("  remove:  {:>5} ops in {:>9.2?}", removed.applied.len(), remove_time);
    for (overlay, _) in &mut overlays {
        overlay.teardown_all()?;
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or_default()
}

fn per_second(elapsed: Duration) -> f64 {
    1000.0 / elapsed.as_secs_f64().max(1e-9)
}

/// Runs an iperf3 server in `server_ns` and a client in `client_ns` against `addr`; returns the
/// received bits per second.
fn iperf(cluster: &Cluster, server_ns: &str, client_ns: &str, addr: Ipv4Addr, seconds: u32) -> BenchResult<f64> {
    let _server = cluster.spawn_in(server_ns, &format!("iperf3-{server_ns}"), "iperf3", &["-s", "-1"])?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let output = Cluster::command_in(client_ns, "iperf3")
            .args(["-c", &addr.to_string(), "-t", &seconds.to_string(), "-J"])
            .output()?;
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
        if let Some(bps) = report["end"]["sum_received"]["bits_per_second"].as_f64() {
            return Ok(bps);
        }
        if Instant::now() > deadline {
            let error = report["error"].as_str().unwrap_or("no report").to_owned();
            return Err(format!("iperf3 {client_ns} -> {addr}: {error}").into());
        }
        // The server may not be listening yet.
        std::thread::sleep(Duration::from_millis(200));
    }
}

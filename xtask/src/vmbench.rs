//! `cargo xtask bench vm`: the routing mesh on the VM cluster (`shoal_testkit::vm`), once with
//! every agent on IPVS and once on nftables (`--lb-backend`), on the same three VMs' image: HTTP
//! requests from outside the cluster to the manager's address, which runs no web task, so every
//! request crosses the mesh to a worker. Each cluster gets freshly booted VMs (nothing of the
//! other backend's state is left in the kernels), two per backend in the order IPVS, nftables,
//! nftables, IPVS. Under software emulation the absolute figures
//! mean little; the ratio between the two, measured in one run, is the result.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use shoal_testkit::Testbed as _;
use shoal_testkit::shoal::BedCluster;
use shoal_testkit::vm::{VmBed, three_vms};

use crate::mesh::{CONNECTIONS, Load, ROUND_SECS, ROUNDS, load, median, shoal};

/// The routing mesh's figures on freshly booted VMs whose agents all use `backend`.
fn measure(bins: &Path, backend: &str) -> anyhow::Result<Vec<Load>> {
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
    shoal(
        &cli,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--replicas-max-per-node",
            "1",
            "--constraint",
            "node.role==worker",
            "--network",
            "bench",
            "-p",
            "8080:80",
            &web,
        ],
    )?;
    crate::converge::wait(&cli, "web 2/2", 480, &["service", "ls"], |out| out.contains(" 2/2 "))?;
    let netns = bed.client_netns().context("the VM testbed has a client namespace")?.to_owned();
    let target = SocketAddr::from((nodes[0].addr(), 8080));
    // Until the mesh answers everywhere, then a warm-up round.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while load(&netns, &[target]).is_err() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "{target} does not answer through the mesh");
    }
    (0..ROUNDS).map(|_| load(&netns, &[target])).collect()
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
    for backend in ["ipvs", "nftables", "nftables", "ipvs"] {
        let runs = measure(&bins, backend).with_context(|| format!("the mesh on {backend}"))?;
        results.iter_mut().filter(|(b, _)| *b == backend).for_each(|(_, all)| all.extend(&runs));
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
    Ok(())
}

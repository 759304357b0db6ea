//! `cargo xtask bench NAME`: runs one benchmark. Each prints its own figures and the ratio to a
//! peer measured in the same run; none is a timed test.

use std::process::Command;

use anyhow::{Context as _, bail};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Which benchmark: one of the names `cargo xtask bench --list` prints.
    name: Option<String>,
    /// List the benchmarks.
    #[arg(long)]
    list: bool,
}

/// (name, package, bench target, what it measures)
const BENCHES: &[(&str, &str, &str, &str)] = &[
    (
        "scheduler",
        "shoal-scheduler",
        "placement",
        "100k tasks onto 1k and 10k nodes, with and without spread preferences: placements/s, peak memory",
    ),
    (
        "runtime",
        "shoal-runtime",
        "runtime",
        "100 sleeper containers created, started, stopped and removed 4 at a time, vs `ctr run -d`",
    ),
    (
        "dns",
        "shoal-embedded-dns",
        "dns",
        "dnsperf vs unbound, same 100 records at 127.0.0.11 in a netns: qps, avg/p99 latency, CPU per query",
    ),
    (
        "overlay",
        "shoal-overlay",
        "overlay",
        "iperf3 container to container over VXLAN vs plain veth; time to program 1,000 remote endpoints",
    ),
    (
        "lb",
        "shoal-ipvs-lb",
        "lb",
        "first packet through a VIP vs direct at 1, 1k and 10k services; one service change among 10k (nftables)",
    ),
    (
        "control-plane",
        "shoal-local-cluster",
        "control_plane",
        "1 manager + 1,000 simulated agents in one process, one service of 100k replicas: converge time, placements/s through Raft, RSS",
    ),
];

/// The whole stack: a netns cluster of release binaries on containerd.
const CONVERGE: (&str, &str) =
    ("converge", "100 sleepers on one node through the whole stack vs ctr run -d; agent kill to tasks moved; idle RSS");

/// The raft-store benchmark drives three member processes and etcd from an example binary.
const RAFT: (&str, &str) = (
    "raft",
    "three members over gRPC/TLS with fsync vs a three-member etcd: puts/s and p50/p99 at 1, 16, 256 clients; leader failover",
);

pub(crate) fn run(root: &std::path::Path, args: &BenchArgs) -> anyhow::Result<()> {
    let Some(name) = args.name.as_deref().filter(|_| !args.list) else {
        for (name, _, _, what) in BENCHES {
            println!("{name:<12} {what}");
        }
        println!("{:<12} {}", RAFT.0, RAFT.1);
        println!("{:<12} {}", CONVERGE.0, CONVERGE.1);
        return Ok(());
    };
    if name == RAFT.0 {
        return raft();
    }
    if name == CONVERGE.0 {
        return crate::converge::run(root);
    }
    let Some((_, package, target, _)) = BENCHES.iter().find(|(n, ..)| *n == name) else {
        let names: Vec<&str> = BENCHES.iter().map(|(n, ..)| *n).chain([RAFT.0, CONVERGE.0]).collect();
        bail!("no benchmark named {name:?}; available: {}", names.join(", "));
    };
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["bench", "--package", package, "--bench", target])
        .status()
        .context("cannot run cargo bench")?;
    if !status.success() {
        bail!("benchmark {name} failed ({status})");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

/// `cargo xtask bench raft`: etcd (Debian's etcd-server) is the peer; installed when missing.
fn raft() -> anyhow::Result<()> {
    crate::prereq::ensure_packages(&[("etcd-server", "etcd", "the peer of the raft-store benchmark")])?;
    let status = cargo()
        .args(["build", "--release", "--locked", "-p", "shoal-raft-store", "--example", "raft_member"])
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("building the raft benchmark failed ({status})");
    }
    let binary = std::path::Path::new("target/release/examples/raft_member");
    let status =
        Command::new(binary).arg("bench").status().with_context(|| format!("cannot run {}", binary.display()))?;
    if !status.success() {
        bail!("benchmark raft failed ({status})");
    }
    Ok(())
}

/// `cargo xtask soak raft --seeds N [--secs S]`: the linearizability check over N seeded fault runs.
pub(crate) fn soak_raft(seeds: u64, secs: u64) -> anyhow::Result<()> {
    let status = cargo()
        .args([
            "test",
            "--release",
            "--locked",
            "-p",
            "shoal-raft-store",
            "--test",
            "linearizability",
            "--",
            "--nocapture",
        ])
        .env("SHOAL_RAFT_SOAK_SEEDS", seeds.to_string())
        .env("SHOAL_RAFT_SOAK_SECS", secs.to_string())
        .status()
        .context("cannot run cargo test")?;
    if !status.success() {
        bail!("the raft soak found a problem ({status}); its output above names the seed");
    }
    Ok(())
}

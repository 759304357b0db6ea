//! `cargo xtask bench NAME`: runs one benchmark. Each prints its own figures and the ratio to a
//! peer measured in the same run; none is a timed test.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::prereq::Task;

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Which benchmark: one of the names `cargo xtask bench --list` prints.
    name: Option<String>,
    /// List the benchmarks.
    #[arg(long)]
    list: bool,
}

/// How a benchmark runs.
#[derive(Debug, Clone, Copy)]
enum Runner {
    /// `cargo bench --package P --bench TARGET`.
    CargoBench { package: &'static str, target: &'static str },
    /// Three member processes and etcd, driven from raft-store's `raft_member` example.
    Raft,
    /// The whole stack: a netns cluster of release binaries on containerd (`converge.rs`).
    Converge,
    /// Service networking on a netns cluster (`mesh.rs`).
    Mesh,
    /// A rolling update of 100 replicas on one node (`update.rs`).
    Update,
    /// A 10-service compose stack deployed and redeployed on one node (`stack.rs`).
    Stack,
    /// The routing mesh on VMs, IPVS against nftables (`vmbench.rs`).
    Vm,
}

/// One benchmark: its name, how it runs and what it measures. What it needs from the machine is
/// in the prerequisite table under `Task::Bench(name)`.
struct Bench {
    name: &'static str,
    runner: Runner,
    what: &'static str,
}

const BENCHES: &[Bench] = &[
    Bench {
        name: "scheduler",
        runner: Runner::CargoBench { package: "shoal-scheduler", target: "placement" },
        what: "100k tasks onto 1k and 10k nodes, with and without spread preferences: placements/s, peak memory",
    },
    Bench {
        name: "runtime",
        runner: Runner::CargoBench { package: "shoal-runtime", target: "runtime" },
        what: "100 sleeper containers created, started, stopped and removed 4 at a time, vs `ctr run -d`",
    },
    Bench {
        name: "dns",
        runner: Runner::CargoBench { package: "shoal-embedded-dns", target: "dns" },
        what: "dnsperf vs unbound, same 100 records at 127.0.0.11 in a netns: qps, avg/p99 latency, CPU per query",
    },
    Bench {
        name: "overlay",
        runner: Runner::CargoBench { package: "shoal-overlay", target: "overlay" },
        what: "iperf3 container to container over VXLAN vs plain veth; time to program 1,000 remote endpoints",
    },
    Bench {
        name: "lb",
        runner: Runner::CargoBench { package: "shoal-ipvs-lb", target: "lb" },
        what: "first packet through a VIP vs direct at 1, 1k and 10k services; one service change among 10k (nftables)",
    },
    Bench {
        name: "control-plane",
        runner: Runner::CargoBench { package: "shoal-local-cluster", target: "control_plane" },
        what: "1 manager, then 3, with 1,000 simulated agents in one process, one service of 100k replicas: converge time, \
               placements/s through Raft, tasks replaced, RSS",
    },
    Bench {
        name: "dashboard",
        runner: Runner::CargoBench { package: "shoal", target: "dashboard" },
        what: "`shoal dashboard` of 100 simulated nodes and 10,000 tasks in headless Chromium: time to hold every task, \
               first render of the whole grid vs `shoal service ls`, a scale of 500 tasks seen on the page vs the API",
    },
    Bench {
        name: "raft",
        runner: Runner::Raft,
        what: "three members over gRPC/TLS with fsync vs a three-member etcd: puts/s and p50/p99 at 1, 16, 256 \
               clients embedded in the leader and over one TLS gRPC connection (etcd's KV.Put, the ratio to etcd); \
               leader failover",
    },
    Bench {
        name: "converge",
        runner: Runner::Converge,
        what: "100 sleepers on one node through the whole stack vs ctr run -d; agent kill to tasks moved; idle RSS",
    },
    Bench {
        name: "mesh",
        runner: Runner::Mesh,
        what: "service networking on 3 nodes: HTTP through the routing mesh, a VIP and direct (req/s, p50/p99); \
               iperf3 over the overlay vs veth; propagation of a killed and a new task to DNS and load balancers",
    },
    Bench {
        name: "update",
        runner: Runner::Update,
        what: "100 replicas on one node updated 10 at a time, stop-first then start-first, vs creating them: time \
               until all run the new image, longest time a slot had no running task",
    },
    Bench {
        name: "stack",
        runner: Runner::Stack,
        what: "a 10-service stack (3 replicas each, one network) on one node: deploy until all run, then a redeploy with \
               one service changed until it is replaced (others untouched), vs the same made with service create",
    },
    Bench {
        name: "vm",
        runner: Runner::Vm,
        what: "the routing mesh on 3 qemu VMs with IPVS vs with nftables (--lb-backend), freshly booted for each: \
               HTTP req/s and p50/p99 from outside through the node without a task, and the ratio",
    },
];

/// The benchmarks' names.
pub(crate) fn names() -> Vec<&'static str> {
    BENCHES.iter().map(|b| b.name).collect()
}

pub(crate) fn run(root: &std::path::Path, args: &BenchArgs) -> anyhow::Result<()> {
    let Some(name) = args.name.as_deref().filter(|_| !args.list) else {
        for bench in BENCHES {
            println!("{:<14} {}", bench.name, bench.what);
        }
        return Ok(());
    };
    let Some(bench) = BENCHES.iter().find(|b| b.name == name) else {
        bail!("no benchmark named {name:?}; available: {}", names().join(", "));
    };
    crate::prereq::ensure(Task::Bench(bench.name))?;
    match bench.runner {
        Runner::Raft => raft(),
        Runner::Converge => crate::converge::run(root),
        Runner::Mesh => crate::mesh::run(root),
        Runner::Update => crate::update::run(root),
        Runner::Stack => crate::stack::run(root),
        Runner::Vm => crate::vmbench::run(root),
        Runner::CargoBench { package, target } => {
            let took = crate::prereq::timed_cargo(&["bench", "--locked", "--package", package, "--bench", target])
                .with_context(|| format!("benchmark {name} failed"))?;
            println!("bench {name}: build and run took {:.0} s", took.as_secs_f64());
            Ok(())
        }
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

/// `cargo xtask bench raft`: etcd (Debian's etcd-server, from the prerequisite table) is the peer.
fn raft() -> anyhow::Result<()> {
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

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
];

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let Some(name) = args.name.as_deref().filter(|_| !args.list) else {
        for (name, _, _, what) in BENCHES {
            println!("{name:<12} {what}");
        }
        return Ok(());
    };
    let Some((_, package, target, _)) = BENCHES.iter().find(|(n, ..)| *n == name) else {
        let names: Vec<&str> = BENCHES.iter().map(|(n, ..)| *n).collect();
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

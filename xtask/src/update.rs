//! `cargo xtask bench update`: a rolling update through the whole stack, on one node of the netns
//! harness with release binaries. 100 replicas of `web:v1` are updated to `web:v2` with
//! `--update-parallelism 10`, stop-first, then back with start-first; for each: the time from the
//! update command until all 100 slots run the new image, and the longest time any slot had no
//! running task. The peer, measured in the same run on the same node: creating the 100 replicas
//! from nothing (the update replaces as many containers, 10 at a time, and its monitor period
//! is set to 0 so that the figures compare the replacement itself).
//!
//! Slots are sampled with `shoal service ps` as fast as the CLI answers (the sampling period is
//! printed: a gap is known to that precision). Targets: the update within 2× the create, and no
//! gap at all with start-first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use shoal_testkit::shoal::{Cli, ShoalCluster};

use crate::converge::{BenchCluster, bench_cluster};

const REPLICAS: usize = 100;
const PARALLELISM: &str = "10";

fn shoal(cli: &Cli, args: &[&str]) -> anyhow::Result<String> {
    let (ok, out, err) = cli.run(args)?;
    if !ok {
        bail!("shoal {}: {}", args.join(" "), err.trim());
    }
    Ok(out)
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// Per slot of `web`, the images of its tasks that run and are meant to, from `service ps`.
fn running_slots(ps: &str) -> BTreeMap<u64, BTreeSet<String>> {
    let mut slots: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for row in ps.lines().skip(1) {
        let cells: Vec<&str> = row.split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
        let name = cells.get(1).map(|n| n.trim_start_matches(r"\_").trim()).unwrap_or_default();
        let Some(slot) = name.strip_prefix("web.").and_then(|s| s.parse().ok()) else { continue };
        let running = cells.get(5).is_some_and(|c| c.starts_with("Running"));
        if running {
            let image = cells.get(2).and_then(|i| i.rsplit(':').next()).unwrap_or_default().to_owned();
            slots.entry(slot).or_default().insert(image);
        }
    }
    slots
}

/// Samples the slots until all `REPLICAS` run `tag` only: (seconds from `since` until then, the
/// longest time a slot was seen without a running task, the mean sampling period).
fn follow(cli: &Cli, tag: &str, since: Instant) -> anyhow::Result<(f64, f64, f64)> {
    let mut empty_since: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut longest = Duration::ZERO;
    let mut samples = 0u32;
    let deadline = since + Duration::from_secs(600);
    loop {
        let out = shoal(cli, &["service", "ps", "--no-trunc", "web"])?;
        let now = Instant::now();
        samples += 1;
        let slots = running_slots(&out);
        for slot in 1..=REPLICAS as u64 {
            match slots.get(&slot) {
                Some(images) if !images.is_empty() => {
                    if let Some(empty) = empty_since.remove(&slot) {
                        longest = longest.max(now.duration_since(empty));
                    }
                }
                _ => {
                    empty_since.entry(slot).or_insert(now);
                }
            }
        }
        let done = (1..=REPLICAS as u64).all(|s| slots.get(&s).is_some_and(|i| i.len() == 1 && i.contains(tag)));
        if done {
            let took = now.duration_since(since).as_secs_f64();
            return Ok((took, longest.as_secs_f64(), took / f64::from(samples)));
        }
        if now > deadline {
            bail!("the update to {tag} did not finish within 600 s");
        }
    }
}

pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    let BenchCluster { bins, cluster, archives: _, containerd, registry, registry_addr } =
        bench_cluster(root, "bench update")?;
    let node = cluster.node(1)?.clone();
    let sc = ShoalCluster::new(&cluster, &bins, containerd.socket(), &registry_addr, "1");
    let (manager, _) = sc.init(&node)?;
    let cli = sc.cli(&node, &node);
    let image = |tag: &str| format!("{registry_addr}/shoal-test/web:{tag}");
    println!("update bench: {REPLICAS} replicas of web on one node, --update-parallelism {PARALLELISM}");

    // Pull both images outside the measurement.
    for tag in ["v1", "v2"] {
        shoal(&cli, &["service", "create", "--name", "warm", &image(tag)])?;
        shoal(&cli, &["service", "rm", "warm"])?;
    }
    let started = Instant::now();
    shoal(&cli, &["service", "create", "--detach", "--name", "web", "--replicas", "100", &image("v1")])?;
    let (create, _, _) = follow(&cli, "v1", started)?;
    println!("{:<44}{:>8.2} s", "create: 0 → 100 running (the peer)", create);

    let mut results = Vec::new();
    for (order, tag) in [("stop-first", "v2"), ("start-first", "v1")] {
        let started = Instant::now();
        shoal(
            &cli,
            &[
                "service",
                "update",
                "--detach",
                "--image",
                &image(tag),
                "--update-parallelism",
                PARALLELISM,
                "--update-order",
                order,
                "--update-monitor",
                "0s",
                "web",
            ],
        )?;
        let (took, gap, period) = follow(&cli, tag, started)?;
        println!(
            "{:<44}{:>8.2} s   longest slot without a running task {:.2} s (sampled every {:.0} ms)",
            format!("update {order}: all 100 on {tag}"),
            took,
            gap,
            period * 1000.0
        );
        results.push((order, took, gap, period));
    }
    for (order, took, gap, _) in results {
        let ratio = took / create;
        println!("{:<44}{:>8.2}x  target <= 2: {}", format!("ratio {order} / create"), ratio, met(ratio <= 2.0));
        if order == "start-first" {
            println!(
                "{:<44}{:>8.2} s   target 0 (no sample without one): {}",
                "start-first: longest slot gap",
                gap,
                met(gap == 0.0)
            );
        }
    }
    shoal(&cli, &["service", "rm", "web"])?;
    drop((manager, registry, containerd, cluster));
    Ok(())
}

//! Placement benchmark: 100k tasks onto 1k and 10k nodes, with and without a two-level spread.
//!
//! Prints figures, it is not a timed test. Each case runs in a child process (this binary
//! re-invoked with `--case NAME`) so that the peak memory read from `/proc/self/status`
//! (VmHWM) belongs to that case alone.
// A benchmark's output is its report: printing is the point.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_scheduler::{Constraint, Node, PlacementPreference, Resources, Task, TaskSpec, schedule};

const TASKS: usize = 100_000;
const RUNS: usize = 3;

struct Case {
    name: &'static str,
    nodes: usize,
    preferences: bool,
    /// The 100k tasks are split evenly over this many services (each its own group).
    services: usize,
    /// Minimum placements per second, if the issue sets one.
    target_rate: Option<f64>,
}

const CASES: [Case; 5] = [
    Case { name: "spread-1k", nodes: 1_000, preferences: false, services: 1, target_rate: Some(1_000_000.0) },
    Case { name: "spread-10k", nodes: 10_000, preferences: false, services: 1, target_rate: None },
    Case { name: "prefs-1k", nodes: 1_000, preferences: true, services: 1, target_rate: Some(200_000.0) },
    Case { name: "prefs-10k", nodes: 10_000, preferences: true, services: 1, target_rate: Some(200_000.0) },
    // Not in the targets: shows the per-group cost (filters and tree built once per
    // group, O(nodes)) when a batch holds many services.
    Case { name: "1k-svcs-10k", nodes: 10_000, preferences: false, services: 1_000, target_rate: None },
];

/// Peak resident memory of this 10k-node case must stay under this.
const MEMORY_LIMIT_MB_10K: f64 = 100.0;

fn nodes(n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| {
            let mut node = Node::new(format!("node-{i:05}"));
            node.platform.os = "linux".into();
            node.platform.arch = "amd64".into();
            node.total = Resources::new(64_000_000_000, 256 << 30);
            node.labels.insert("dc".into(), format!("dc-{}", i % 10));
            node.labels.insert("rack".into(), format!("rack-{}", (i / 10) % 20));
            node.tasks_by_service.insert("other".into(), (i % 3) as u64);
            node
        })
        .collect()
}

fn tasks(preferences: bool, services: usize) -> Vec<Task> {
    let mut spec = TaskSpec {
        reservations: Resources::new(10_000_000, 16 << 20),
        constraints: vec![Constraint::parse("node.platform.os==linux").expect("valid constraint")],
        ..TaskSpec::default()
    };
    if preferences {
        spec.preferences =
            vec![PlacementPreference::spread_node_label("dc"), PlacementPreference::spread_node_label("rack")];
    }
    let spec = Arc::new(spec);
    let per_service = TASKS / services;
    (0..TASKS)
        .map(|i| {
            let service = format!("svc-{}", i / per_service);
            Task::new(format!("{service}.{i}"), service, spec.clone())
        })
        .collect()
}

fn peak_memory_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs one case in this process and prints `rate=… best_ms=… peak_mb=…`.
fn run_case(case: &Case) {
    let nodes = nodes(case.nodes);
    let tasks = tasks(case.preferences, case.services);
    let mut best = Duration::MAX;
    for _ in 0..RUNS {
        let start = Instant::now();
        let placement = schedule(&nodes, &tasks, 1);
        let elapsed = start.elapsed();
        assert_eq!(placement.assignments.len(), TASKS, "every task is placed");
        best = best.min(elapsed);
        drop(placement);
    }
    let rate = TASKS as f64 / best.as_secs_f64();
    let peak = peak_memory_mb().unwrap_or(f64::NAN);
    println!("rate={rate:.0} best_ms={:.1} peak_mb={peak:.1}", best.as_secs_f64() * 1e3);
}

fn field(output: &str, key: &str) -> Option<f64> {
    output.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?.parse().ok()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--case") {
        let Some(case) = args.get(pos + 1).and_then(|n| CASES.iter().find(|c| c.name == n)) else {
            eprintln!("unknown case: expected one of spread-1k, spread-10k, prefs-1k, prefs-10k, 1k-svcs-10k");
            return ExitCode::FAILURE;
        };
        run_case(case);
        return ExitCode::SUCCESS;
    }

    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cannot find the benchmark binary to re-run per case: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("shoal-scheduler placement: {TASKS} tasks, best of {RUNS} runs, one process per case");
    println!("{:<12} {:>7} {:>14} {:>10} {:>10}  targets", "case", "nodes", "placements/s", "best ms", "peak MB");
    let mut all_met = true;
    let mut spread_1k_ms = None;
    for case in &CASES {
        let out = match Command::new(&exe).args(["--case", case.name]).output() {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            Ok(out) => {
                eprintln!("case {} failed: {}", case.name, String::from_utf8_lossy(&out.stderr));
                return ExitCode::FAILURE;
            }
            Err(e) => {
                eprintln!("cannot run case {}: {e}", case.name);
                return ExitCode::FAILURE;
            }
        };
        let rate = field(&out, "rate").unwrap_or(f64::NAN);
        let best = field(&out, "best_ms").unwrap_or(f64::NAN);
        let peak = field(&out, "peak_mb").unwrap_or(f64::NAN);
        if case.name == "spread-1k" {
            spread_1k_ms = Some(best);
        }
        let mut targets = Vec::new();
        if let Some(target) = case.target_rate {
            let met = rate >= target;
            all_met &= met;
            targets.push(format!(">= {target:.0}/s {}", if met { "met" } else { "MISSED" }));
        }
        if case.nodes == 10_000 {
            let met = peak <= MEMORY_LIMIT_MB_10K;
            all_met &= met;
            targets.push(format!("<= {MEMORY_LIMIT_MB_10K:.0} MB {}", if met { "met" } else { "MISSED" }));
        }
        println!(
            "{:<12} {:>7} {:>14.0} {:>10.1} {:>10.1}  {}",
            case.name,
            case.nodes,
            rate,
            best,
            peak,
            targets.join(", ")
        );
    }
    if let Some(ms) = spread_1k_ms {
        // No Go toolchain here to run swarmkit's benchmark in the same run: compare with its
        // published figure, and say so.
        println!(
            "\nnot measured in this run, for orientation only: swarmkit's published 2016 micro-benchmark \
             placed 100k tasks onto 1k nodes in 22.6 s on other hardware (spread-1k here: {:.0} ms; the \
             two are not like for like, so no ratio is claimed)",
            ms
        );
    }
    println!("{}", if all_met { "all targets met" } else { "some targets missed" });
    ExitCode::SUCCESS
}

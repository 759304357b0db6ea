//! `cargo xtask bench stack`: a compose stack through the whole system, on one node of the netns
//! harness with release binaries. A 10-service stack (5 web servers and 5 sleepers, 3 replicas
//! each, one overlay network) is deployed with `shoal stack deploy`: the time from the command
//! until every service runs all its replicas. Then a redeploy with one service changed: the time
//! until that service's 3 tasks are replaced and running, with every other task untouched (same
//! task IDs; checked, since the redeploy must update only what changed). The peer, in the same
//! run on the same node: the same 10 services and network made one by one with `shoal network
//! create` and `shoal service create --detach`, as a script would.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use shoal_testkit::shoal::{Cli, ShoalCluster};

use crate::converge::{BenchCluster, bench_cluster};

const SERVICES: usize = 10;
const REPLICAS: usize = 3;

fn shoal(cli: &Cli, args: &[&str]) -> anyhow::Result<String> {
    let (ok, out, err) = cli.run(args)?;
    if !ok {
        bail!("shoal {}: {}", args.join(" "), err.trim());
    }
    Ok(out)
}

/// The compose file: `web0`…`web4` and `sleep0`…`sleep4`, 3 replicas each on network `app`;
/// `web0` carries `marker` in its environment (what the redeploy changes).
fn compose(registry: &str, marker: &str) -> String {
    let mut out = String::from("services:\n");
    for i in 0..SERVICES / 2 {
        let env = if i == 0 { format!("    environment:\n      MARKER: \"{marker}\"\n") } else { String::new() };
        out.push_str(&format!(
            "  web{i}:\n    image: {registry}/shoal-test/web:v1\n{env}    networks: [app]\n    deploy:\n      replicas: {REPLICAS}\n"
        ));
        out.push_str(&format!(
            "  sleep{i}:\n    image: {registry}/shoal-test/sleeper:latest\n    networks: [app]\n    deploy:\n      replicas: {REPLICAS}\n"
        ));
    }
    out.push_str("networks:\n  app:\n    driver: overlay\n");
    out
}

/// The running tasks of the services whose names start with `prefix`: (service, task ID).
fn running(cli: &Cli, prefix: &str) -> anyhow::Result<BTreeSet<(String, String)>> {
    let out = shoal(cli, &["service", "ls", "-q", "--filter", &format!("name={prefix}")])?;
    let ids: Vec<&str> = out.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if ids.is_empty() {
        return Ok(BTreeSet::new());
    }
    let mut args = vec![
        "service",
        "ps",
        "--no-trunc",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.Name}} {{.ID}} {{.CurrentState}}",
    ];
    args.extend(ids);
    let out = shoal(cli, &args)?;
    Ok(out
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (name, id, state) = (words.next()?, words.next()?, words.next()?);
            let service = name.rsplit_once('.').map_or(name, |(service, _)| service);
            (state == "Running").then(|| (service.to_owned(), id.to_owned()))
        })
        .collect())
}

/// Waits until `check` accepts the running tasks of `prefix`'s services; the seconds since
/// `since`.
fn until(
    cli: &Cli,
    prefix: &str,
    since: Instant,
    what: &str,
    check: impl Fn(&BTreeSet<(String, String)>) -> bool,
) -> anyhow::Result<f64> {
    let deadline = since + Duration::from_secs(600);
    loop {
        let tasks = running(cli, prefix)?;
        if check(&tasks) {
            return Ok(since.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline {
            bail!("{what}: not within 600 s ({} tasks running)", tasks.len());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    let BenchCluster { bins, cluster, archives: _, containerd, registry, registry_addr } =
        bench_cluster(root, "bench stack")?;
    let node = cluster.node(1)?.clone();
    let sc = ShoalCluster::new(&cluster, &bins, containerd.socket(), &registry_addr, "1");
    let (manager, _) = sc.init(&node)?;
    let cli = sc.cli(&node, &node);
    println!("stack bench: {SERVICES} services of {REPLICAS} replicas (web and sleeper) on one network, one node");

    // Pull the images outside the measurement.
    for image in ["shoal-test/web:v1", "shoal-test/sleeper:latest"] {
        shoal(&cli, &["service", "create", "--name", "warm", &format!("{registry_addr}/{image}")])?;
        shoal(&cli, &["service", "rm", "warm"])?;
    }
    let all = SERVICES * REPLICAS;

    let started = Instant::now();
    shoal(&cli, &["network", "create", "peer_app"])?;
    for i in 0..SERVICES / 2 {
        for (name, image) in
            [(format!("peer_web{i}"), "shoal-test/web:v1"), (format!("peer_sleep{i}"), "shoal-test/sleeper:latest")]
        {
            let image = format!("{registry_addr}/{image}");
            shoal(
                &cli,
                &["service", "create", "--detach", "--name", &name, "--replicas", "3", "--network", "peer_app", &image],
            )?;
        }
    }
    let peer = until(&cli, "peer_", started, "the peer's services", |t| t.len() == all)?;
    println!("{:<52}{:>8.2} s", "peer: network + 10 × service create --detach", peer);
    for i in 0..SERVICES / 2 {
        shoal(&cli, &["service", "rm", &format!("peer_web{i}"), &format!("peer_sleep{i}")])?;
    }

    let file = cluster.dir().join("bench-stack.yml");
    std::fs::write(&file, compose(&registry_addr, "one"))?;
    let file_arg = file.to_string_lossy().into_owned();
    let started = Instant::now();
    shoal(&cli, &["stack", "deploy", "--detach", "-c", &file_arg, "bench"])?;
    let deploy = until(&cli, "bench_", started, "the stack", |t| t.len() == all)?;
    println!("{:<52}{:>8.2} s", "stack deploy: 0 → 30 tasks running", deploy);

    let before = running(&cli, "bench_")?;
    let untouched: BTreeSet<(String, String)> = before.iter().filter(|(s, _)| s != "bench_web0").cloned().collect();
    std::fs::write(&file, compose(&registry_addr, "two"))?;
    let started = Instant::now();
    shoal(&cli, &["stack", "deploy", "--detach", "-c", &file_arg, "bench"])?;
    let redeploy = until(&cli, "bench_", started, "the redeploy", |tasks| {
        let replaced =
            tasks.iter().filter(|(s, id)| s == "bench_web0" && !before.iter().any(|(_, old)| old == id)).count();
        replaced == REPLICAS && tasks.len() == all
    })?;
    let after = running(&cli, "bench_")?;
    let kept = untouched.iter().filter(|task| after.contains(*task)).count();
    println!("{:<52}{:>8.2} s", "stack deploy again, web0 changed: its 3 tasks replaced", redeploy);
    println!(
        "{:<52}{:>8}    target {} (every task of the 9 unchanged services kept): {}",
        "tasks of unchanged services kept",
        kept,
        untouched.len(),
        if kept == untouched.len() { "met" } else { "MISSED" }
    );
    let ratio = deploy / peer;
    println!(
        "{:<52}{:>8.2}x  target <= 1.2: {}",
        "ratio stack deploy / service create",
        ratio,
        if ratio <= 1.2 { "met" } else { "MISSED" }
    );
    shoal(&cli, &["stack", "rm", "bench"])?;
    drop((manager, registry, containerd, cluster));
    Ok(())
}

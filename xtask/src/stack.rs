//! `cargo xtask bench stack`: a compose stack through the whole system, on one node of the netns
//! harness with release binaries. A 10-service stack (5 web servers and 5 sleepers, 3 replicas
//! each, one overlay network) is deployed with `shoal stack deploy`: the time from the command
//! until every service runs all its replicas. Then a redeploy with one service changed: the time
//! until that service's 3 tasks are replaced and running, with every other task untouched (same
//! task IDs; checked, since the redeploy must update only what changed). The peer, in the same
//! run on the same node: the same 10 services and network made one by one with `shoal network
//! create` and `shoal service create --detach`, as a script would. Each measurement starts on an
//! idle node (no container left from the last one); rounds alternate the order; medians.

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

/// Rounds of each measurement; the order of the two alternates, and medians are printed.
const ROUNDS: usize = 3;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Waits until the node runs no container at all (what a removal stops has stopped), so that a
/// measurement does not share the node with the last one's teardown.
fn until_idle(containerd: &shoal_testkit::Containerd, namespace: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = containerd.ctr().args(["--namespace", namespace, "tasks", "ls"]).output()?;
        if !out.status.success() {
            bail!("ctr tasks ls: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        if !String::from_utf8_lossy(&out.stdout).lines().any(|l| l.contains("RUNNING")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("containers still running 120 s after their services were removed");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The peer: the network and the 10 services made one command at a time; seconds until all
/// tasks run. Removed again afterwards.
fn peer_round(cli: &Cli, registry: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    shoal(cli, &["network", "create", "peer_app"])?;
    for i in 0..SERVICES / 2 {
        for (name, image) in
            [(format!("peer_web{i}"), "shoal-test/web:v1"), (format!("peer_sleep{i}"), "shoal-test/sleeper:latest")]
        {
            let image = format!("{registry}/{image}");
            let replicas = REPLICAS.to_string();
            shoal(
                cli,
                &[
                    "service",
                    "create",
                    "--detach",
                    "--name",
                    &name,
                    "--replicas",
                    &replicas,
                    "--network",
                    "peer_app",
                    &image,
                ],
            )?;
        }
    }
    let took = until(cli, "peer_", started, "the peer's services", |t| t.len() == SERVICES * REPLICAS)?;
    for i in 0..SERVICES / 2 {
        shoal(cli, &["service", "rm", &format!("peer_web{i}"), &format!("peer_sleep{i}")])?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while shoal(cli, &["network", "rm", "peer_app"]).is_err() {
        if Instant::now() > deadline {
            bail!("network peer_app still in use 60 s after its services were removed");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(took)
}

/// The stack: deployed (seconds until all tasks run), deployed again with `web0` changed
/// (seconds until its tasks are replaced; the tasks of the others kept, counted), removed.
fn stack_round(cli: &Cli, registry: &str, file: &Path) -> anyhow::Result<(f64, f64, usize, usize)> {
    let all = SERVICES * REPLICAS;
    let file_arg = file.to_string_lossy().into_owned();
    std::fs::write(file, compose(registry, "one"))?;
    let started = Instant::now();
    shoal(cli, &["stack", "deploy", "--detach", "-c", &file_arg, "bench"])?;
    let deploy = until(cli, "bench_", started, "the stack", |t| t.len() == all)?;
    let before = running(cli, "bench_")?;
    let untouched: BTreeSet<(String, String)> = before.iter().filter(|(s, _)| s != "bench_web0").cloned().collect();
    std::fs::write(file, compose(registry, "two"))?;
    let started = Instant::now();
    shoal(cli, &["stack", "deploy", "--detach", "-c", &file_arg, "bench"])?;
    let redeploy = until(cli, "bench_", started, "the redeploy", |tasks| {
        let replaced =
            tasks.iter().filter(|(s, id)| s == "bench_web0" && !before.iter().any(|(_, old)| old == id)).count();
        replaced == REPLICAS && tasks.len() == all
    })?;
    let after = running(cli, "bench_")?;
    let kept = untouched.iter().filter(|task| after.contains(*task)).count();
    shoal(cli, &["stack", "rm", "bench"])?;
    Ok((deploy, redeploy, kept, untouched.len()))
}

pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    let BenchCluster { bins, cluster, archives: _, containerd, registry, registry_addr } =
        bench_cluster(root, "bench stack")?;
    let node = cluster.node(1)?.clone();
    let sc = ShoalCluster::new(&cluster, &bins, containerd.socket(), &registry_addr, "1");
    let namespace = sc.containerd_namespace(&node);
    let (manager, _) = sc.init(&node)?;
    let cli = sc.cli(&node, &node);
    println!(
        "stack bench: {SERVICES} services of {REPLICAS} replicas (web and sleeper) on one network, one node, \
         {ROUNDS} rounds in alternating order (medians)"
    );
    // Pull the images outside the measurement.
    for image in ["shoal-test/web:v1", "shoal-test/sleeper:latest"] {
        shoal(&cli, &["service", "create", "--name", "warm", &format!("{registry_addr}/{image}")])?;
        shoal(&cli, &["service", "rm", "warm"])?;
    }
    let file = cluster.dir().join("bench-stack.yml");
    let (mut peers, mut deploys, mut redeploys) = (Vec::new(), Vec::new(), Vec::new());
    let mut kept_all = true;
    for round in 0..ROUNDS {
        for first in [round % 2 == 0, round % 2 != 0] {
            until_idle(&containerd, &namespace)?;
            if first {
                peers.push(peer_round(&cli, &registry_addr)?);
            } else {
                let (deploy, redeploy, kept, untouched) = stack_round(&cli, &registry_addr, &file)?;
                deploys.push(deploy);
                redeploys.push(redeploy);
                kept_all &= kept == untouched;
                println!("  round {}: redeploy kept {kept} of {untouched} unchanged tasks", round + 1);
            }
        }
    }
    let (peer, deploy, redeploy) = (median(peers.clone()), median(deploys.clone()), median(redeploys.clone()));
    let shown = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ");
    println!("{:<52}{:>8.2} s   ({})", "peer: network + 10 × service create --detach", peer, shown(&peers));
    println!("{:<52}{:>8.2} s   ({})", "stack deploy: 0 → 30 tasks running", deploy, shown(&deploys));
    println!("{:<52}{:>8.2} s   ({})", "stack deploy again, web0 changed: its 3 replaced", redeploy, shown(&redeploys));
    println!(
        "{:<52}{:>8}    every round: {}",
        "tasks of the 9 unchanged services kept",
        if kept_all { "all" } else { "NOT ALL" },
        if kept_all { "met" } else { "MISSED" }
    );
    let ratio = deploy / peer;
    println!(
        "{:<52}{:>8.2}x  target <= 1.2: {}",
        "ratio stack deploy / service create",
        ratio,
        if ratio <= 1.2 { "met" } else { "MISSED" }
    );
    drop((manager, registry, containerd, cluster));
    if !kept_all {
        bail!("a redeploy replaced tasks of services that did not change");
    }
    Ok(())
}

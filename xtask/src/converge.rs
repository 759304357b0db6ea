//! `cargo xtask bench converge`: the whole stack on one machine. One node runs 100 sleeper
//! replicas (time from `service create` to 100/100 running), against `ctr run -d` ×100 4 at a time
//! on the same containerd in the same run; then the time from killing a worker's agent to its
//! tasks running on another node; then the idle RSS of a manager and an agent. Release binaries.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shoal_testkit::shoal::{Cli, ShoalCluster, missing_binaries};
use shoal_testkit::{Cluster, Containerd, Registry, images};

const REPLICAS: usize = 100;
const CTR_PARALLEL: usize = 4;

fn shoal(cli: &Cli, args: &[&str]) -> anyhow::Result<String> {
    let (ok, out, err) = cli.run(args)?;
    if !ok {
        bail!("shoal {}: {}", args.join(" "), err.trim());
    }
    Ok(out)
}

/// Polls `shoal ARGS…` every 50 ms until `check` holds; returns when it did.
fn wait(cli: &Cli, what: &str, secs: u64, args: &[&str], check: impl Fn(&str) -> bool) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (ok, out, _) = cli.run(args)?;
        if ok && check(&out) {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("{what} did not happen within {secs} s; last output:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process's resident set from `/proc/PID/status`, in MiB: total, anonymous, file-backed.
fn rss_mib(pid: u32) -> (f64, f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> f64 {
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        kib / 1024.0
    };
    (field("VmRSS:"), field("RssAnon:"), field("RssFile:"))
}

/// One idle-RSS line: the total against its target, then how it splits.
fn print_rss(what: &str, pid: u32, target: &str) {
    let (total, anon, file) = rss_mib(pid);
    println!("{what:<38}{total:>10.1} MiB   ({target}; {anon:.1} anonymous, {file:.1} file-backed)");
}

/// Running tasks per node name in `shoal service ps` output (current rows only).
fn running_on(ps: &str, node: &str) -> usize {
    ps.lines()
        .skip(1)
        .filter(|l| !l.contains(r"\_"))
        .filter(|l| {
            let cells: Vec<&str> = l.split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
            cells.get(3) == Some(&node) && cells.get(5).is_some_and(|c| c.starts_with("Running"))
        })
        .count()
}

pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    crate::require_root("bench converge")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let built = Command::new(&cargo).args(["build", "--release", "--workspace", "--bins", "--locked"]).status()?;
    if !built.success() {
        bail!("building the release binaries failed ({built})");
    }
    let bins = root.join("target/release");
    let missing = missing_binaries(&bins);
    if !missing.is_empty() {
        bail!("binaries {missing:?} are missing in {}", bins.display());
    }
    let cluster = Cluster::new(3)?;
    let archives = images::build_all(Path::new(images::BUSYBOX), &cluster.dir().join("images"))?;
    let containerd = Containerd::start(&cluster.dir().join("containerd"), &format!("{}-ctr", cluster.prefix()))?;
    let registry = Registry::start(&cluster)?;
    registry.push_all(&containerd, &archives)?;
    let registry_addr = registry.addr().to_string();
    let nodes: Vec<_> = (1..=3).map(|i| cluster.node(i).cloned()).collect::<Result<_, _>>()?;
    let sc = ShoalCluster::new(&cluster, &bins, containerd.socket(), &registry_addr, "1");
    let (manager, token) = sc.init(&nodes[0])?;
    let cli = sc.cli(&nodes[0], &nodes[0]);
    let mut w1 = sc.join_worker(&nodes[1], &token, &nodes[0])?;
    let w2 = sc.join_worker(&nodes[2], &token, &nodes[0])?;
    wait(&cli, "3 Ready nodes", 60, &["node", "ls"], |out| out.matches(" Ready ").count() == 3)?;
    let image = format!("{registry_addr}/shoal-test/sleeper:latest");
    println!(
        "converge bench: {REPLICAS} sleepers on one node through the whole stack vs `ctr run -d` ({CTR_PARALLEL} at a time)"
    );

    // Pull once outside the measurement, as ctr's image is imported before its run too.
    shoal(&cli, &["service", "create", "--name", "warm", "--constraint", "node.hostname==node1", "--detach", &image])?;
    wait(&cli, "warm-up task running", 60, &["service", "ls"], |out| out.contains("1/1"))?;
    shoal(&cli, &["service", "rm", "warm"])?;

    let started = Instant::now();
    let replicas = REPLICAS.to_string();
    let args = [
        "service",
        "create",
        "--name",
        "sleep",
        "--replicas",
        &replicas,
        "--constraint",
        "node.hostname==node1",
        "--detach",
        &image,
    ];
    shoal(&cli, &args)?;
    let done =
        wait(&cli, "100/100 running", 300, &["service", "ls"], |out| out.contains(&format!("{REPLICAS}/{REPLICAS}")))?;
    let shoal_secs = done.duration_since(started).as_secs_f64();
    shoal(&cli, &["service", "rm", "sleep"])?;

    let ctr_image = archives.iter().find(|i| i.def.repository == "shoal-test/sleeper").context("sleeper image")?;
    containerd.import(&ctr_image.path)?;
    let reference = ctr_image.def.reference();
    let ids: Vec<String> = (0..REPLICAS).map(|i| format!("ctr-{i}")).collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for chunk in ids.chunks(REPLICAS.div_ceil(CTR_PARALLEL)) {
            let (containerd, reference) = (&containerd, &reference);
            scope.spawn(move || {
                for id in chunk {
                    let _ = containerd.run_ctr(&["run", "-d", reference, id]);
                }
            });
        }
    });
    let ctr_secs = started.elapsed().as_secs_f64();
    println!("{:<38}{:>10.2} s", "shoal service create → 100/100", shoal_secs);
    println!("{:<38}{:>10.2} s", "ctr run -d ×100", ctr_secs);
    println!(
        "{:<38}{:>10.2}x   (target <= 1.2; Docker Swarm needs about 31.6 s here)",
        "ratio (shoal / ctr)",
        shoal_secs / ctr_secs
    );

    println!("\nfailover: 6 replicas on the two workers, kill -9 the agent of one");
    shoal(
        &cli,
        &[
            "service",
            "create",
            "--name",
            "moving",
            "--replicas",
            "6",
            "--constraint",
            "node.role==worker",
            "--detach",
            &image,
        ],
    )?;
    wait(&cli, "6/6", 120, &["service", "ls"], |out| out.contains("6/6"))?;
    let killed = Instant::now();
    w1.kill()?;
    let moved =
        wait(&cli, "6 running on node3", 60, &["service", "ps", "moving"], |out| running_on(out, "node3") == 6)?;
    println!(
        "{:<38}{:>10.2} s   (target <= 6 s with the 1 s default heartbeat; Swarm's defaults need about 20 s)",
        "agent killed → tasks moved",
        moved.duration_since(killed).as_secs_f64()
    );

    shoal(&cli, &["service", "rm", "moving"])?;
    std::thread::sleep(Duration::from_secs(5));
    println!("\nidle RSS (release builds):");
    print_rss("shoal-manager (with its worker role)", manager.pid(), "target <= 40 MB; dockerd about 154");
    print_rss("shoal-agent", w2.pid(), "target <= 20 MB");
    drop((manager, w2, registry, containerd, cluster));
    Ok(())
}

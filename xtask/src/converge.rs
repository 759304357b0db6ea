//! `cargo xtask bench converge`: the whole stack on one machine. One node runs 100 sleeper
//! replicas (time from `service create` to 100/100 running), against `ctr run -d` ×100 4 at a time
//! on the same containerd in the same run, three rounds each in alternating order, each round
//! started once the previous one's containers are gone, compared by median; then the time from
//! killing a worker's agent to its tasks running on another node; then the idle RSS of a manager
//! and an agent. Each target is printed as met or MISSED. Release binaries.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shoal_testkit::shoal::{Cli, ShoalCluster, missing_binaries};
use shoal_testkit::{Cluster, Containerd, Registry, images};

const REPLICAS: usize = 100;
const CTR_PARALLEL: usize = 4;
/// Rounds of each side, in alternating order.
const ROUNDS: usize = 3;

fn shoal(cli: &Cli, args: &[&str]) -> anyhow::Result<String> {
    let (ok, out, err) = cli.run(args)?;
    if !ok {
        bail!("shoal {}: {}", args.join(" "), err.trim());
    }
    Ok(out)
}

/// Polls `shoal ARGS…` every 50 ms until `check` holds; returns when it did.
pub(crate) fn wait(
    cli: &Cli,
    what: &str,
    secs: u64,
    args: &[&str],
    check: impl Fn(&str) -> bool,
) -> anyhow::Result<Instant> {
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

/// One idle-RSS line: the total against its target (MB), then how it splits.
fn print_rss(what: &str, pid: u32, target_mb: f64) {
    let (total, anon, file) = rss_mib(pid);
    let mb = total * 1.048_576;
    println!(
        "{what:<38}{total:>10.1} MiB   target <= {target_mb:.0} MB: {} ({anon:.1} anonymous, {file:.1} file-backed)",
        met(mb <= target_mb)
    );
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

/// What a whole-stack benchmark runs on: release binaries, a 3-node harness cluster, the test
/// images in a local registry and a containerd.
pub(crate) struct BenchCluster {
    pub(crate) bins: std::path::PathBuf,
    pub(crate) cluster: Cluster,
    pub(crate) archives: Vec<images::BuiltImage>,
    pub(crate) containerd: Containerd,
    pub(crate) registry: Registry,
    pub(crate) registry_addr: String,
}

/// Builds the release binaries and brings up a [`BenchCluster`] (as root: `what` names the
/// command in the error otherwise).
pub(crate) fn bench_cluster(root: &Path, what: &str) -> anyhow::Result<BenchCluster> {
    crate::require_root(what)?;
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
    Ok(BenchCluster { bins, cluster, archives, containerd, registry, registry_addr })
}

pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    let BenchCluster { bins, cluster, archives, containerd, registry, registry_addr } =
        bench_cluster(root, "bench converge")?;
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
    let node1_ns = sc.containerd_namespace(&nodes[0]);
    until_no_containers(&containerd, &node1_ns)?;
    let ctr_image = archives.iter().find(|i| i.def.repository == "shoal-test/sleeper").context("sleeper image")?;
    containerd.import(&ctr_image.path)?;
    let reference = ctr_image.def.reference();

    // Rounds in alternating order (shoal first, then ctr first, …), each started only once the
    // previous one's containers are all gone, so neither side is timed while the other's
    // teardown competes for containerd; the medians are compared.
    let (mut shoal_runs, mut ctr_runs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for side in if round % 2 == 0 { ["shoal", "ctr"] } else { ["ctr", "shoal"] } {
            if side == "shoal" {
                shoal_runs.push(shoal_round(&cli, &image)?);
                until_no_containers(&containerd, &node1_ns)?;
            } else {
                ctr_runs.push(ctr_round(&containerd, &reference)?);
                remove_ctr_containers(&containerd)?;
            }
        }
    }
    let (shoal_secs, ctr_secs) = (median(&mut shoal_runs), median(&mut ctr_runs));
    let runs = |v: &[f64]| v.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(", ");
    println!(
        "{:<38}{:>10.2} s   (median of {ROUNDS}: {})",
        "shoal service create → 100/100",
        shoal_secs,
        runs(&shoal_runs)
    );
    println!("{:<38}{:>10.2} s   (median of {ROUNDS}: {})", "ctr run -d ×100", ctr_secs, runs(&ctr_runs));
    let ratio = shoal_secs / ctr_secs;
    println!("{:<38}{:>10.2}x   target <= 1.2: {}", "ratio (shoal / ctr)", ratio, met(ratio <= 1.2));

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
    let moved = moved.duration_since(killed).as_secs_f64();
    println!(
        "{:<38}{:>10.2} s   target <= 6 s (1 s heartbeat): {}",
        "agent killed → tasks moved",
        moved,
        met(moved <= 6.0)
    );

    shoal(&cli, &["service", "rm", "moving"])?;
    std::thread::sleep(Duration::from_secs(5));
    println!("\nidle RSS (release builds):");
    print_rss("shoal-manager (with its worker role)", manager.pid(), 40.0);
    print_rss("shoal-agent", w2.pid(), 20.0);
    println!(
        "\nnot measured in this run (published or earlier figures, for orientation only): Docker Swarm \
         took about 31.6 s for the 100 sleepers and about 20 s to move tasks with its default \
         heartbeat; dockerd idles at about 154 MB"
    );
    drop((manager, w2, registry, containerd, cluster));
    Ok(())
}

/// "met" or "MISSED".
fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// One Shoal round: the service's 100 sleepers on node1 from `service create` to 100/100, then
/// the service removed (not timed). Returns the seconds.
fn shoal_round(cli: &Cli, image: &str) -> anyhow::Result<f64> {
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
        image,
    ];
    let started = Instant::now();
    shoal(cli, &args)?;
    let done =
        wait(cli, "100/100 running", 300, &["service", "ls"], |out| out.contains(&format!("{REPLICAS}/{REPLICAS}")))?;
    let secs = done.duration_since(started).as_secs_f64();
    shoal(cli, &["service", "rm", "sleep"])?;
    Ok(secs)
}

/// One ctr round: `ctr run -d` ×100, CTR_PARALLEL at a time, as a user would run them. A run
/// that fails fails the bench: a failed peer is not a faster peer.
fn ctr_round(containerd: &Containerd, reference: &str) -> anyhow::Result<f64> {
    let ids: Vec<String> = (0..REPLICAS).map(|i| format!("ctr-{i}")).collect();
    let started = Instant::now();
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = ids
            .chunks(REPLICAS.div_ceil(CTR_PARALLEL))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|id| {
                            containerd.run_ctr(&["run", "-d", reference, id]).err().map(|e| format!("{id}: {e}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|_| vec!["a ctr thread panicked".to_owned()]))
            .collect()
    });
    let secs = started.elapsed().as_secs_f64();
    if let Some(first) = failures.first() {
        bail!("`ctr run -d` failed {} time(s); first: {first}", failures.len());
    }
    Ok(secs)
}

/// Kills and deletes the ctr round's containers (not timed).
fn remove_ctr_containers(containerd: &Containerd) -> anyhow::Result<()> {
    for id in (0..REPLICAS).map(|i| format!("ctr-{i}")) {
        let _ = containerd.run_ctr(&["tasks", "kill", "--signal", "SIGKILL", &id]);
        let _ = containerd.run_ctr(&["tasks", "delete", "--force", &id]);
        containerd.run_ctr(&["containers", "delete", &id]).with_context(|| format!("removing ctr container {id}"))?;
    }
    Ok(())
}

/// Waits until containerd namespace `namespace` holds no container: the teardown of a round is
/// over (`service rm` returns before the agent has stopped and removed them).
fn until_no_containers(containerd: &Containerd, namespace: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let listed = Command::new("ctr")
            .arg("--address")
            .arg(containerd.socket())
            .args(["--namespace", namespace, "containers", "list", "-q"])
            .output()
            .context("cannot run ctr")?;
        if !listed.status.success() {
            bail!("`ctr containers list` in {namespace} failed: {}", String::from_utf8_lossy(&listed.stderr).trim());
        }
        let left = String::from_utf8_lossy(&listed.stdout).lines().filter(|l| !l.trim().is_empty()).count();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{left} container(s) still in {namespace} 120 s after the service was removed");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

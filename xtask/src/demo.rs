//! `cargo xtask demo`: a 3-manager + 2-worker Shoal cluster in network namespaces on this
//! machine, running a replicated service on containerd; `--down` removes it. The cluster outlives
//! this command (its processes and namespaces are left running on purpose) until `--down`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use shoal_testkit::shoal::{Cli, ShoalCluster, missing_binaries};
use shoal_testkit::{Cluster, Containerd, Registry, images};

/// The demo's run ID: its names are `shoaltest-demo-…`, so `cargo xtask clean` removes it too.
const RUN_ID: &str = "demo";

fn prefix() -> String {
    format!("{}{RUN_ID}", shoal_testkit::RUN_PREFIX_ROOT)
}

fn running() -> bool {
    Path::new("/run/netns").join(format!("{}-u", prefix())).exists()
}

pub(crate) fn down(root: &Path) -> anyhow::Result<()> {
    let report = shoal_testkit::sweep_prefix(&prefix());
    let files = root.join("target/shoal-demo");
    if files.exists() {
        std::fs::remove_dir_all(&files).with_context(|| format!("cannot remove {}", files.display()))?;
    }
    println!(
        "demo removed: {} namespace(s), {} process(es), {} cgroup(s), {} directory(ies)",
        report.namespaces.len(),
        report.processes.len(),
        report.cgroups.len(),
        report.dirs.len()
    );
    Ok(())
}

fn shoal_ok(cli: &Cli, args: &[&str]) -> anyhow::Result<String> {
    let (ok, out, err) = cli.run(args)?;
    if !ok {
        bail!("shoal {}: {}", args.join(" "), err.trim());
    }
    Ok(out)
}

fn until(cli: &Cli, what: &str, secs: u64, args: &[&str], check: impl Fn(&str) -> bool) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (ok, out, _) = cli.run(args)?;
        if ok && check(&out) {
            return Ok(out);
        }
        if Instant::now() > deadline {
            bail!(
                "{what} did not happen within {secs} s; last output:\n{out}\n(logs: {}/logs)",
                std::env::temp_dir().join(prefix()).display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub(crate) fn up(root: &Path) -> anyhow::Result<()> {
    crate::require_root("demo")?;
    if running() {
        bail!("a demo cluster is already up (namespaces {}-*); `cargo xtask demo --down` removes it", prefix());
    }
    let setup = crate::prereq::ensure(crate::prereq::Task::Demo)?;
    let build = crate::prereq::timed_cargo(&["build", "--workspace", "--bins", "--locked"])
        .context("building the binaries failed")?;
    println!("demo: set-up took {:.1} s, building the binaries {:.1} s", setup.as_secs_f64(), build.as_secs_f64());
    let started = Instant::now();
    let bins = root.join("target/debug");
    let missing = missing_binaries(&bins);
    if !missing.is_empty() {
        bail!("binaries {missing:?} are missing in {} after the build", bins.display());
    }

    println!("==> network namespaces, containerd, registry");
    let mut cluster = Cluster::with_run_id(RUN_ID, 5)?;
    cluster.keep_dir();
    let built = images::build_all(Path::new(images::BUSYBOX), &cluster.dir().join("images"))?;
    let containerd = Containerd::start(&cluster.dir().join("containerd"), &format!("{}-push", prefix()))?;
    let registry = Registry::start(&cluster)?;
    registry.push_all(&containerd, &built)?;
    let registry_addr = registry.addr().to_string();
    let nodes: Vec<_> = (1..=5).map(|i| cluster.node(i).cloned()).collect::<Result<_, _>>()?;
    let shoal = ShoalCluster::new(&cluster, &bins, containerd.socket(), &registry_addr, "1");

    println!("==> shoal-manager init on {}, two managers and two workers join", nodes[0].name);
    let mut processes = Vec::new();
    let (init, worker_token) = shoal.init(&nodes[0])?;
    processes.push(init);
    let cli = shoal.cli(&nodes[0], &nodes[0]);
    let manager_token = shoal_ok(&cli, &["join-token", "manager", "-q"])?.trim().to_owned();
    for node in &nodes[1..3] {
        processes.push(shoal.join_manager(node, &manager_token, &nodes[0])?);
        let row = format!(" {} ", node.name);
        until(&cli, &format!("{} joining", node.name), 60, &["node", "ls"], |out| {
            out.lines().any(|l| l.contains(&row) && l.contains(" Ready "))
        })?;
    }
    for node in &nodes[3..5] {
        processes.push(shoal.join_worker(node, &worker_token, &nodes[0])?);
    }
    until(&cli, "5 Ready nodes", 60, &["node", "ls"], |out| out.matches(" Ready ").count() == 5)?;

    println!(
        "==> a replicated service on an overlay network: web, 5 replicas of {registry_addr}/shoal-test/web:v1, published on 8080"
    );
    let image = format!("{registry_addr}/shoal-test/web:v1");
    shoal_ok(&cli, &["network", "create", "front"])?;
    shoal_ok(
        &cli,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "5",
            "--network",
            "front",
            "-p",
            "8080:80",
            "--detach",
            &image,
        ],
    )?;
    until(&cli, "web 5/5", 120, &["service", "ls"], |out| out.contains("5/5"))?;
    let ps = shoal_ok(&cli, &["service", "ps", "web"])?;

    // From here on the cluster is the user's: leave every process, namespace and file in place.
    std::mem::forget(processes);
    std::mem::forget(registry);
    std::mem::forget(containerd);
    let cluster_underlay = cluster.underlay_netns().to_owned();
    std::mem::forget(cluster);

    let (env, checked) = write_cli_files(root, &cli, &registry_addr)?;
    println!("demo: cluster up in {:.1} s", started.elapsed().as_secs_f64());
    println!("\n$ shoal node ls\n{checked}\n$ shoal service ps web\n{ps}");
    println!("The cluster runs in network namespaces {}-n1 … -n5 (managers n1–n3, workers n4–n5).", prefix());
    println!("Use it from this shell (as root):\n");
    println!("    . {}", env.display());
    println!("    shoal node ls");
    println!("    shoal service create --name hello --replicas 3 $SHOAL_DEMO_REGISTRY/shoal-test/web:v1");
    println!("    shoal service ps hello");
    println!(
        "    printf 'GET / HTTP/1.0\\r\\n\\r\\n' | ip netns exec {} busybox nc {} 8080   # the routing mesh, from the underlay",
        cluster_underlay, nodes[4].addr
    );
    println!("\nTear it down with:  cargo xtask demo --down");
    Ok(())
}

/// Writes `target/shoal-demo/bin/shoal` (the CLI entering the first node's namespace with its
/// admin bundle) and `target/shoal-demo/env` (puts it on `PATH`, names the registry), then runs
/// the wrapper once the way a user will; returns the env file and that run's `node ls`.
fn write_cli_files(root: &Path, cli: &Cli, registry: &str) -> anyhow::Result<(std::path::PathBuf, String)> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = root.join("target/shoal-demo");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    let wrapper = bin.join("shoal");
    std::fs::write(&wrapper, cli.wrapper_script()).with_context(|| format!("cannot write {}", wrapper.display()))?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", wrapper.display()))?;
    let env = dir.join("env");
    let text = format!(
        "# Source this file (. {env}) to run `shoal` against the demo cluster from this shell.\n\
         export PATH='{bin}':\"$PATH\"\n\
         export SHOAL_DEMO_REGISTRY={registry}\n",
        env = env.display(),
        bin = bin.display(),
    );
    std::fs::write(&env, text).with_context(|| format!("cannot write {}", env.display()))?;
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(". \"$1\" && shoal node ls")
        .arg("sh")
        .arg(&env)
        .env_remove("SHOAL_HOST")
        .env_remove("SHOAL_CERT_PATH")
        .output()
        .context("cannot run sh")?;
    if !out.status.success() {
        bail!(
            "`shoal node ls` through {} failed ({}): {}",
            wrapper.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((env, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The demo's directory, for logs.
pub(crate) fn dir() -> std::path::PathBuf {
    std::env::temp_dir().join(prefix())
}

/// Context for errors of the demo commands.
pub(crate) fn context<T>(result: anyhow::Result<T>) -> anyhow::Result<T> {
    result.with_context(|| format!("demo (logs under {})", dir().display()))
}

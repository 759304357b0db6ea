//! The first end-to-end slice on real containers: a manager and a worker as separate processes in
//! their own network namespaces, each running tasks on containerd with images pulled from the test
//! registry, driven by the `shoal` CLI. (The full 3-manager + 2-worker scenario list of issue 8
//! grows from here.)
//!
//! The binaries come from `SHOAL_BIN_DIR` (default: the workspace's `target/debug`); `cargo xtask
//! test` builds them before the suite runs.

// Tests narrate their steps on stderr, which nextest shows when one fails.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_testkit::privileged::{self, Need};
use shoal_testkit::{Cluster, Containerd, Node, Registry, images};

const BINARIES: [&str; 4] = ["shoal-manager", "shoal-agent", "shoal", "shoal-runtime-logger"];

fn bin_dir() -> PathBuf {
    std::env::var_os("SHOAL_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"))
}

struct Shoal<'a> {
    node: &'a Node,
    bins: PathBuf,
    bundle: PathBuf,
}

impl Shoal<'_> {
    /// `shoal ARGS…` inside the manager's namespace; (success, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let mut command = Cluster::command_in(&self.node.netns, &self.bins.join("shoal").to_string_lossy());
        command.args(["--host", &format!("{}:2377", self.node.addr)]).arg("--cert-path").arg(&self.bundle).args(args);
        let out = command.output().expect("run shoal");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "shoal {}: {err}", args.join(" "));
        out
    }

    /// Polls `shoal ARGS…` until `check` accepts its output.
    fn until(&self, what: &str, secs: u64, args: &[&str], check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let (ok, out, _) = self.run(args);
            if ok && check(&out) {
                return out;
            }
            assert!(Instant::now() < deadline, "{what}: not within {secs} s; last output:\n{out}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The CURRENT STATE cell of a `shoal service ps` row (columns are three or more spaces apart).
fn current_state(row: &str) -> &str {
    row.split("   ").map(str::trim).filter(|c| !c.is_empty()).nth(5).unwrap_or_default()
}

fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn manager_and_worker_run_containers() {
    let mut needs = privileged::CONTAINERD.to_vec();
    needs.extend_from_slice(privileged::REGISTRY);
    needs.push(Need::Command("nft"));
    if !privileged::require("e2e manager_and_worker_run_containers", &needs) {
        return;
    }
    let bins = bin_dir();
    let missing: Vec<&str> = BINARIES.iter().filter(|b| !bins.join(b).is_file()).copied().collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "binaries {missing:?} missing in {}; `cargo xtask test` builds them (cargo build --workspace --bins)",
            bins.display()
        );
        eprintln!(
            "e2e: skipped: binaries {missing:?} not built in {} (cargo build --workspace --bins)",
            bins.display()
        );
        return;
    }
    let cluster = Cluster::new(2).expect("cluster");
    let built = images::build_all(Path::new(images::BUSYBOX), &cluster.dir().join("images")).expect("images");
    let containerd = Containerd::start(&cluster.dir().join("containerd"), &format!("{}-push", cluster.prefix()))
        .expect("containerd");
    let registry = Registry::start(&cluster).expect("registry");
    registry.push_all(&containerd, &built).expect("push");
    let (m1, w1) = (cluster.node(1).expect("node1").clone(), cluster.node(2).expect("node2").clone());
    let socket = containerd.socket().to_string_lossy().into_owned();
    let logger = bins.join("shoal-runtime-logger").to_string_lossy().into_owned();
    let registry_addr = registry.addr().to_string();
    let node_flags = |node: &Node| -> Vec<String> {
        vec![
            "--data-dir".into(),
            cluster.dir().join(&node.name).to_string_lossy().into_owned(),
            "--containerd-socket".into(),
            socket.clone(),
            "--containerd-namespace".into(),
            format!("{}-{}", cluster.prefix(), node.name),
            "--logger".into(),
            logger.clone(),
            "--insecure-registry".into(),
            registry_addr.clone(),
            "--hostname".into(),
            node.name.clone(),
        ]
    };

    eprintln!("--- shoal-manager init on node1");
    let mut args: Vec<String> = vec!["init".into(), "--advertise-addr".into(), m1.addr.to_string()];
    args.extend(["--listen-addr".into(), format!("{}:2377", m1.addr), "--heartbeat-period".into(), "0.5".into()]);
    args.extend(node_flags(&m1));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let manager =
        cluster.spawn(&m1, "shoal-manager", &bins.join("shoal-manager").to_string_lossy(), &args).expect("manager");
    let mut token = String::new();
    wait_for("the worker join command", 20, || {
        let log = std::fs::read_to_string(manager.log()).unwrap_or_default();
        token = log.split_whitespace().skip_while(|w| *w != "--token").nth(1).unwrap_or_default().to_owned();
        token.starts_with("SHTKN-1-")
    });
    let shoal = Shoal { node: &m1, bins: bins.clone(), bundle: cluster.dir().join("node1/admin") };

    eprintln!("--- shoal-agent join on node2");
    let mut args: Vec<String> = vec!["join".into(), "--token".into(), token.clone(), format!("{}:2377", m1.addr)];
    args.extend(node_flags(&w1));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent =
        cluster.spawn(&w1, "shoal-agent", &bins.join("shoal-agent").to_string_lossy(), &args).expect("agent");
    let nodes = shoal.until("two Ready nodes", 30, &["node", "ls"], |out| out.matches(" Ready ").count() == 2);
    assert!(nodes.contains("Leader"), "{nodes}");

    eprintln!("--- 4 sleepers from the registry: 2 per node, all running");
    let image = format!("{registry_addr}/shoal-test/sleeper:latest");
    shoal.ok(&["service", "create", "--name", "sleep", "--replicas", "4", "--restart-delay", "1s", "--detach", &image]);
    shoal.until("4/4 running", 60, &["service", "ls"], |out| out.contains("4/4"));
    let ps = shoal.ok(&["service", "ps", "sleep"]);
    assert_eq!(ps.matches(" node1 ").count(), 2, "{ps}");
    assert_eq!(ps.matches(" node2 ").count(), 2, "{ps}");

    eprintln!("--- kill a container by hand: replaced, and ps shows the exit code");
    let on_node2 = ps.lines().find(|l| l.contains(" node2 ")).expect("a task on node2");
    let short_id = on_node2.split_whitespace().next().expect("task id");
    let ns = format!("{}-{}", cluster.prefix(), w1.name);
    let listed = containerd.ctr().args(["--namespace", &ns, "containers", "list", "-q"]).output().expect("ctr");
    let task_id = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .find(|id| id.starts_with(short_id))
        .expect("its container")
        .to_owned();
    let killed = containerd
        .ctr()
        .args(["--namespace", &ns, "tasks", "kill", "--signal", "SIGKILL", &task_id])
        .status()
        .expect("kill");
    assert!(killed.success());
    let ps = shoal.until("a replacement and the failed task in history", 30, &["service", "ps", "sleep"], |out| {
        let current_running = out.lines().filter(|l| !l.contains(r"\_") && current_state(l).starts_with("Running")).count();
        out.contains("task: non-zero exit (137)") && current_running == 4
    });
    let history = ps.lines().find(|l| l.contains("task: non-zero exit (137)")).expect("the failed task");
    assert!(history.contains(r"\_ sleep.") && history.contains("Shutdown") && history.contains("Failed"), "{ps}");

    eprintln!("--- an image that does not exist is rejected with the reason");
    shoal.ok(&[
        "service",
        "create",
        "--name",
        "ghost",
        "--detach",
        &format!("{registry_addr}/shoal-test/nonexistent:1"),
    ]);
    shoal.until("a rejected task", 30, &["service", "ps", "ghost"], |out| {
        out.contains("Rejected") && out.contains("image not found")
    });

    eprintln!("--- kill -9 the worker's agent: Down within seconds, its tasks run on node1");
    agent.kill().expect("kill agent");
    let started = Instant::now();
    shoal.until("node2 Down", 15, &["node", "ls"], |out| {
        out.lines().any(|l| l.contains("node2") && l.contains(" Down "))
    });
    shoal.until("4 running on node1", 30, &["service", "ps", "sleep"], |out| {
        out.lines().filter(|l| l.contains(" node1 ") && current_state(l).starts_with("Running") && !l.contains(r"\_")).count() == 4
    });
    eprintln!("    tasks running again on node1 {:?} after the agent was killed", started.elapsed());
    drop(manager);
    drop(containerd);
}

//! What the end-to-end tests share: the binaries' directory, the environment every run starts
//! from (a harness cluster, containerd, the registry with the test images) and polling helpers
//! around the `shoal` CLI.

#![allow(dead_code, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoal_testkit::privileged::{self, Need};
use shoal_testkit::shoal::{Cli, ShoalCluster, bin_dir, missing_binaries};
use shoal_testkit::{Cluster, Containerd, Features, NetnsNode, Node, Registry, TestNode, Testbed, images};

/// `shoal ARGS…`, which must succeed.
pub(crate) fn ok(cli: &Cli, args: &[&str]) -> String {
    let (ok, out, err) = cli.run(args).expect("run shoal");
    assert!(ok, "shoal {}: {err}", args.join(" "));
    out
}

/// Polls `shoal ARGS…` until `check` accepts its output.
pub(crate) fn until(cli: &Cli, what: &str, secs: u64, args: &[&str], check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (ok, out, _) = cli.run(args).expect("run shoal");
        if ok && check(&out) {
            return out;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s; last output:\n{out}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The CURRENT STATE cell of a `shoal service ps` row (columns are three or more spaces apart).
pub(crate) fn current_state(row: &str) -> &str {
    row.split("   ").map(str::trim).filter(|c| !c.is_empty()).nth(5).unwrap_or_default()
}

pub(crate) fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The body of an HTTP response, if it is a 200.
pub(crate) fn body(response: &str) -> Option<String> {
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then_some(())?;
    head.lines().next()?.contains(" 200 ").then(|| body.trim().to_owned())
}

/// GET `path` from `addr:8080` out of the underlay namespace `underlay` (a client outside the
/// cluster, through the routing mesh): the body of a 200 answer, or what came back instead.
pub(crate) fn get(underlay: &str, addr: &str, path: &str) -> Result<String, String> {
    // nc's -w bounds the connect, not a read from a server that went silent: `timeout` does.
    let script = format!("printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | timeout 10 nc -w 3 {addr} 8080");
    let out = Cluster::command_in(underlay, images::BUSYBOX).args(["sh", "-c", &script]).output();
    let response = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).map_err(|e| e.to_string())?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.lines().next().is_some_and(|l| l.contains(" 200 ")) => Ok(body.trim().to_owned()),
        _ => Err(format!("{addr}{path}: no answer ({response:?})")),
    }
}

/// What every e2e test starts from: a harness cluster, containerd, the registry with the images.
pub(crate) struct Env {
    pub(crate) cluster: Cluster,
    pub(crate) containerd: Containerd,
    pub(crate) registry_addr: String,
    pub(crate) bins: PathBuf,
}

pub(crate) fn env(test: &str, nodes: usize) -> Option<Env> {
    let mut needs = privileged::CONTAINERD.to_vec();
    needs.extend_from_slice(privileged::REGISTRY);
    needs.push(Need::Command("nft"));
    if !privileged::require(test, &needs) {
        return None;
    }
    let bins = bin_dir();
    let missing = missing_binaries(&bins);
    if !missing.is_empty() {
        privileged::skip(&format!(
            "{test}: skipped: binaries {missing:?} not built in {} (cargo build --workspace --bins)",
            bins.display()
        ));
        return None;
    }
    let mut cluster = Cluster::new(nodes).expect("cluster");
    if std::env::var_os("SHOAL_KEEP_LOGS").is_some() {
        eprintln!("--- keeping {} (SHOAL_KEEP_LOGS)", cluster.dir().display());
        cluster.keep_dir();
    }
    let built = images::build_all(Path::new(images::BUSYBOX), &cluster.dir().join("images")).expect("images");
    let containerd = Containerd::start(&cluster.dir().join("containerd"), &format!("{}-push", cluster.prefix()))
        .expect("containerd");
    let registry = Registry::start(&cluster).expect("registry");
    registry.push_all(&containerd, &built).expect("push");
    let registry_addr = registry.addr().to_string();
    // The registry process belongs to the cluster's underlay namespace and dies with it.
    std::mem::forget(registry);
    Some(Env { cluster, containerd, registry_addr, bins })
}

impl Env {
    pub(crate) fn shoal(&self) -> ShoalCluster<'_> {
        ShoalCluster::new(&self.cluster, &self.bins, self.containerd.socket(), &self.registry_addr, "0.5")
    }
}

/// The tasks running now and meant to (desired and current state Running), per node name.
/// A task told to stop on a node that is Down still shows Running until the node returns, as in
/// Swarm, so the desired state matters.
pub(crate) fn running_per_node(ps: &str) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for row in ps.lines().skip(1).filter(|l| !l.contains(r"\_")) {
        let cells: Vec<&str> = row.split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
        if cells.get(4) == Some(&"Running") && cells.get(5).is_some_and(|c| c.starts_with("Running")) {
            *counts.entry(cells[3].to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

/// `busybox ARGS…` run inside the container of task `task_id` on `node` (through ctr, so with the
/// container's own /etc/resolv.conf and namespaces). Returns (success, stdout+stderr).
pub(crate) fn in_task(env: &Env, node: &Node, task_id: &str, args: &[&str]) -> (bool, String) {
    static PROBES: AtomicU64 = AtomicU64::new(0);
    let ns = env.shoal().containerd_namespace(node);
    let exec_id = format!("probe{}", PROBES.fetch_add(1, Ordering::Relaxed));
    let mut ctr = env.containerd.ctr();
    ctr.args(["--namespace", &ns, "tasks", "exec", "--exec-id", &exec_id, task_id, images::BUSYBOX]).args(args);
    let out = ctr.output().expect("ctr exec");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A running task of `service` (desired and current state Running): its node, its container's
/// ID (the task ID, as the executor names containers) and its name (`web.2`).
pub(crate) fn running_task<'a>(env: &Env, nodes: &'a [Node], service: &str) -> (&'a Node, String, String) {
    running_task_on(env, nodes, service, "")
}

/// Like [`running_task`], on the node named `on` (any node when empty).
pub(crate) fn running_task_on<'a>(env: &Env, nodes: &'a [Node], service: &str, on: &str) -> (&'a Node, String, String) {
    let cli = env.shoal().cli(&nodes[0], &nodes[0]);
    let json = |args: &[&str]| -> Vec<serde_json::Value> {
        serde_json::from_str(&ok(&cli, args)).unwrap_or_else(|e| panic!("shoal {}: not JSON: {e}", args.join(" ")))
    };
    let hostnames: BTreeMap<String, String> = json(&["node", "ls", "--format", "json"])
        .iter()
        .map(|n| {
            (n["ID"].as_str().unwrap_or_default().to_owned(), n["Hostname"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    let mut last = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        last = json(&["service", "ps", "--format", "json", service]);
        let running = last.iter().find(|t| {
            let hostname =
                hostnames.get(t["NodeID"].as_str().unwrap_or_default()).map(String::as_str).unwrap_or_default();
            t["State"] == "Running" && t["DesiredState"] == "Running" && (on.is_empty() || hostname == on)
        });
        if let Some(task) = running {
            let hostname = hostnames.get(task["NodeID"].as_str().unwrap_or_default()).cloned().unwrap_or_default();
            let node = nodes.iter().find(|n| n.name == hostname).expect("its node");
            let name = task["Name"].as_str().unwrap_or_default().to_owned();
            return (node, task["ID"].as_str().unwrap_or_default().to_owned(), name);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("no running task of {service}: {last:?}");
}

/// The shell command that GETs `path` from `host:port` with busybox `nc` and prints the response.
/// (Debian's static busybox `wget` crashes in getaddrinfo, so the tests speak HTTP/1.0 by hand.)
pub(crate) fn http_script(host: &str, port: u16, path: &str) -> String {
    format!("printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}")
}

/// The netns harness as a [`Testbed`], for the scenarios written once for every kind of node.
pub(crate) struct NetnsBed {
    nodes: Vec<NetnsNode>,
    load_balancer: &'static str,
    cli: PathBuf,
    env: Env,
}

impl std::fmt::Debug for NetnsBed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetnsBed").field("nodes", &self.nodes).field("dir", &self.env.cluster.dir()).finish()
    }
}

impl NetnsBed {
    /// `nodes` netns nodes on containerd with the test registry; `None` when skipped.
    pub(crate) fn new(test: &str, nodes: usize) -> Option<Self> {
        let env = env(test, nodes)?;
        let shoal = env.shoal();
        let nodes = env.cluster.nodes().iter().map(|n| shoal.test_node(n)).collect();
        // The agents pick IPVS where the kernel has it (the module loads on first use).
        let _ = std::process::Command::new("modprobe").args(["-q", "ip_vs"]).status();
        let ipvs = std::fs::read_to_string("/proc/modules").is_ok_and(|m| m.lines().any(|l| l.starts_with("ip_vs ")));
        let cli = env.bins.join("shoal");
        Some(Self { nodes, load_balancer: if ipvs { "ipvs" } else { "nftables" }, cli, env })
    }
}

impl Testbed for NetnsBed {
    fn nodes(&self) -> Vec<&dyn TestNode> {
        self.nodes.iter().map(|n| n as &dyn TestNode).collect()
    }

    fn client_netns(&self) -> Option<&str> {
        Some(self.env.cluster.underlay_netns())
    }

    fn registry(&self) -> &str {
        &self.env.registry_addr
    }

    fn features(&self) -> Features {
        // This host's kernel has no NFS; ESP where its module loads.
        Features { load_balancer: self.load_balancer, nfs_server: None, esp: has_esp() }
    }

    fn timescale(&self) -> u32 {
        1
    }

    fn heartbeat(&self) -> &str {
        "0.5"
    }

    fn work_dir(&self) -> &Path {
        self.env.cluster.dir()
    }

    fn cli_binary(&self) -> &Path {
        &self.cli
    }
}

/// Whether this host's kernel has ESP: its module loads (or is built in).
pub(crate) fn has_esp() -> bool {
    let _ = std::process::Command::new("modprobe").args(["-q", "esp4"]).status();
    std::path::Path::new("/sys/module/esp4").exists()
}

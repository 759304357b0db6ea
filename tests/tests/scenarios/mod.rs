//! Scenarios written once against the harness's [`Testbed`]: each runs on the netns nodes of
//! this host (`e2e_network.rs`), on VMs (`e2e_vm.rs`, `cargo xtask e2e --vm`) and on machines of an
//! inventory file (`cargo xtask e2e --hosts FILE`). Deadlines are multiplied by the testbed's
//! timescale; what a kernel offers (IPVS or nftables) comes from its features.

#![allow(dead_code, clippy::print_stderr)]

pub(crate) mod encrypted;
pub(crate) mod mesh;
pub(crate) mod nfs;

use std::time::{Duration, Instant};

use shoal_testkit::images;
use shoal_testkit::shoal::{BedCluster, Cli};
use shoal_testkit::{NodeProcess, TestNode, Testbed};

use crate::support::{body, http_script, ok};

/// A cluster on a testbed: the manager on the first node, agents on the others, and the CLI of
/// this host aimed at the manager. Its processes are killed when it is dropped.
pub(crate) struct Running {
    pub(crate) cli: Cli,
    _processes: Vec<Box<dyn NodeProcess>>,
}

/// Starts a cluster on `bed` (at least a manager and two workers) and waits until every node is
/// Ready.
pub(crate) fn start(bed: &dyn Testbed) -> Running {
    let nodes = bed.nodes();
    assert!(nodes.len() >= 3, "the scenarios need a manager and two workers, the testbed has {}", nodes.len());
    let (manager, workers) = (nodes[0], &nodes[1..]);
    eprintln!("--- {} manager, {} workers", manager.name(), workers.len());
    let shoal = BedCluster::new(bed);
    let (process, token) = shoal.init(manager).expect("init");
    let cli = shoal.cli(manager).expect("the CLI");
    let mut processes = vec![process];
    for worker in workers {
        processes.push(shoal.join_worker(*worker, &token, manager).expect("join a worker"));
    }
    eventually(bed, "every node Ready", 60, || {
        let (ok, out, _) = cli.run(&["node", "ls"]).expect("run shoal");
        ok && out.matches(" Ready ").count() == nodes.len()
    });
    Running { cli, _processes: processes }
}

/// `shoal ARGS…` printing JSON, parsed.
pub(crate) fn json(cli: &Cli, args: &[&str]) -> serde_json::Value {
    let out = ok(cli, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("shoal {}: not JSON ({e}): {out}", args.join(" ")))
}

/// Polls `check` every 250 ms until it holds, for at most `secs` × the testbed's timescale.
pub(crate) fn eventually(bed: &dyn Testbed, what: &str, secs: u64, mut check: impl FnMut() -> bool) {
    let limit = Duration::from_secs(secs * u64::from(bed.timescale()));
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// GET `path` from `host:port` as a client outside the cluster (in the testbed's client
/// namespace): the body of a 200 answer.
pub(crate) fn from_outside(bed: &dyn Testbed, host: &str, port: u16, path: &str) -> Option<String> {
    let script = http_script(host, port, path);
    let mut command = match bed.client_netns() {
        Some(netns) => shoal_testkit::Cluster::command_in(netns, images::BUSYBOX),
        None => std::process::Command::new(images::BUSYBOX),
    };
    let out = command.args(["sh", "-c", &script]).output().ok()?;
    body(&String::from_utf8_lossy(&out.stdout))
}

/// `busybox ARGS…` inside the container of task `task_id` on `node` (through its containerd's
/// `ctr`, so with the container's own namespaces and /etc/resolv.conf): (success, output).
pub(crate) fn in_task(node: &dyn TestNode, task_id: &str, args: &[&str]) -> (bool, String) {
    shoal_testkit::shoal::task_exec(node, task_id, args).expect("ctr tasks exec")
}

/// A running task of `service` (desired and current state Running), on the node named `on`
/// (any node when empty): its node and its ID (the container's).
pub(crate) fn running_task<'a>(bed: &'a dyn Testbed, cli: &Cli, service: &str, on: &str) -> (&'a dyn TestNode, String) {
    let nodes = json(cli, &["node", "ls", "--format", "json"]);
    let hostname = |id: &str| -> String {
        nodes
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["ID"] == id)
            .and_then(|n| n["Hostname"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let mut found = None;
    let mut last = serde_json::Value::Null;
    eventually(bed, &format!("a running task of {service} on {on:?}"), 60, || {
        last = json(cli, &["service", "ps", "--format", "json", service]);
        found = last.as_array().into_iter().flatten().find_map(|t| {
            let host = hostname(t["NodeID"].as_str().unwrap_or_default());
            let running = t["State"] == "Running" && t["DesiredState"] == "Running";
            (running && (on.is_empty() || host == on)).then(|| (host, t["ID"].as_str().unwrap_or_default().to_owned()))
        });
        found.is_some()
    });
    let (host, id) = found.unwrap_or_else(|| panic!("no running task of {service}: {last}"));
    let node = bed.nodes().into_iter().find(|n| n.name() == host).unwrap_or_else(|| panic!("no node {host}"));
    (node, id)
}

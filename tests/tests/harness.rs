//! Proof that the cluster harness does what tests rely on: reachability on the underlay, each
//! fault (killed process, downed link, nftables partition) and complete clean-up.

// Tests narrate their steps on stderr, which nextest shows when one fails.
#![allow(clippy::print_stderr)]

use std::process::Command;

use shoal_testkit::privileged::{self, Need};
use shoal_testkit::{Cluster, Containerd, Registry, images};

fn netns_with_prefix(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

#[test]
fn partition_heal_link_and_cleanup() {
    if !privileged::require("partition_heal_link_and_cleanup", privileged::NETNS) {
        return;
    }
    let cluster = Cluster::new(3).expect("build cluster");
    let prefix = cluster.prefix().to_owned();
    let dir = cluster.dir().to_owned();
    let [n1, n2, n3] = [1, 2, 3].map(|i| cluster.node(i).expect("node").clone());
    assert_eq!(netns_with_prefix(&prefix).len(), 4, "underlay and three nodes");

    eprintln!("--- every node reaches every other");
    for (a, b) in [(&n1, &n2), (&n1, &n3), (&n2, &n3), (&n3, &n1)] {
        assert!(cluster.can_reach(a, b.addr), "{} -> {}", a.name, b.name);
    }
    eprintln!("--- nothing routes out of the sandbox");
    let routes = cluster.exec(&n1, "ip", &["route", "show", "default"]).expect("ip route");
    assert_eq!(routes.trim(), "", "node namespaces have no default route");

    eprintln!("--- partition node1 | node2");
    cluster.partition(&n1, &n2).expect("partition");
    assert!(!cluster.can_reach(&n1, n2.addr), "node1 must not reach node2");
    assert!(!cluster.can_reach(&n2, n1.addr), "node2 must not reach node1");
    assert!(cluster.can_reach(&n1, n3.addr), "node1 still reaches node3");
    assert!(cluster.can_reach(&n2, n3.addr), "node2 still reaches node3");

    eprintln!("--- heal");
    cluster.heal(&n1, &n2).expect("heal");
    assert!(cluster.can_reach(&n1, n2.addr));
    assert!(cluster.can_reach(&n2, n1.addr));

    eprintln!("--- partition again, heal_all");
    cluster.partition(&n2, &n3).expect("partition");
    assert!(!cluster.can_reach(&n3, n2.addr));
    cluster.heal_all().expect("heal all");
    assert!(cluster.can_reach(&n3, n2.addr));

    eprintln!("--- node3's link down, then up");
    cluster.link_down(&n3).expect("link down");
    assert!(!cluster.can_reach(&n1, n3.addr), "node3 unreachable with its link down");
    assert!(cluster.can_reach(&n1, n2.addr), "others unaffected");
    cluster.link_up(&n3).expect("link up");
    assert!(cluster.can_reach(&n1, n3.addr), "node3 reachable again");

    eprintln!("--- a process in node2 with its own log, killed");
    let mut process = cluster
        .spawn(
            &n2,
            "echo",
            "/bin/busybox",
            &["sh", "-c", "echo started in $(ip -4 -o addr show eth0 | awk '{print $4}'); exec sleep 600"],
        )
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_to_string(process.log()).unwrap_or_default().is_empty() && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(process.log()).expect("read log");
    assert_eq!(log.trim(), format!("started in {}/24", n2.addr), "the process runs inside node2");
    assert!(process.is_running());
    process.kill().expect("kill");
    assert!(!process.is_running());

    eprintln!("--- a process that is never killed by the test, and a guard drop");
    let _orphan = cluster.spawn(&n1, "sleeper", "/bin/busybox", &["sleep", "600"]).expect("spawn");
    let leftover = cluster.spawn(&n3, "stray", "/bin/busybox", &["sleep", "600"]).expect("spawn");
    let stray_pid = leftover.pid();
    std::mem::forget(leftover); // as if the test lost track of it
    drop(cluster);
    assert_eq!(netns_with_prefix(&prefix), Vec::<String>::new(), "no namespace of the run is left");
    assert!(!dir.exists(), "the run's directory is removed");
    // The stray process was killed with its namespace: it is gone or a zombie awaiting reaping.
    let stat = std::fs::read_to_string(format!("/proc/{stray_pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next());
    assert!(matches!(state, None | Some("Z" | "X")), "stray process {stray_pid} still alive: {stat}");
}

#[test]
fn cleanup_on_panic() {
    if !privileged::require("cleanup_on_panic", privileged::NETNS) {
        return;
    }
    let made = std::sync::Mutex::new((String::new(), std::path::PathBuf::new(), 0u32));
    let result = std::panic::catch_unwind(|| {
        let cluster = Cluster::new(2).expect("build cluster");
        let sleeper =
            cluster.spawn(cluster.node(1).expect("node"), "sleeper", "/bin/busybox", &["sleep", "600"]).expect("spawn");
        *made.lock().expect("lock") = (cluster.prefix().to_owned(), cluster.dir().to_owned(), sleeper.pid());
        panic!("a test fails half-way");
    });
    assert!(result.is_err());
    let (prefix, dir, pid) = made.into_inner().expect("lock");
    assert!(prefix.starts_with(shoal_testkit::RUN_PREFIX_ROOT), "the cluster was built: {prefix:?}");
    assert_eq!(netns_with_prefix(&prefix), Vec::<String>::new(), "namespaces removed despite the panic");
    assert!(!dir.exists(), "the run's directory {} is removed despite the panic", dir.display());
    // The process guard reaped it, so no such process is left, not even a zombie.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} survived the panic");
}

#[test]
fn registry_serves_test_images_to_nodes() {
    let mut needs = privileged::CONTAINERD.to_vec();
    needs.extend_from_slice(privileged::REGISTRY);
    needs.push(Need::Command("nft"));
    if !privileged::require("registry_serves_test_images_to_nodes", &needs) {
        return;
    }
    let cluster = Cluster::new(2).expect("build cluster");
    let built =
        images::build_all(std::path::Path::new(images::BUSYBOX), &cluster.dir().join("images")).expect("build images");
    let containerd = Containerd::start(&cluster.dir().join("containerd"), cluster.prefix()).expect("containerd");
    let registry = Registry::start(&cluster).expect("registry");
    registry.push_all(&containerd, &built).expect("push images");

    eprintln!("--- node2 pulls from the registry on the underlay");
    let sleeper = built.iter().find(|i| i.def.repository == "shoal-test/sleeper").expect("sleeper");
    let reference = registry.reference(sleeper);
    assert_eq!(reference, "192.0.2.1:5000/shoal-test/sleeper:latest");
    let node2 = cluster.node(2).expect("node2");
    let mut pull = Cluster::command_in(&node2.netns, "ctr");
    pull.arg("--address").arg(containerd.socket()).args([
        "--namespace",
        "pulled",
        "images",
        "pull",
        "--plain-http",
        &reference,
    ]);
    let out = pull.output().expect("run ctr pull");
    assert!(out.status.success(), "pull from node2: {}", String::from_utf8_lossy(&out.stderr));

    eprintln!("--- the pulled image has the archive's manifest");
    let mut list = containerd.ctr();
    list.args(["--namespace", "pulled", "images", "list"]);
    let listed = String::from_utf8_lossy(&list.output().expect("ctr images list").stdout).into_owned();
    assert!(listed.contains(&sleeper.manifest_digest), "{listed}");

    eprintln!("--- a partitioned node cannot pull");
    let mut isolated = Cluster::command_in(&node2.netns, "ip");
    isolated.args(["link", "set", "eth0", "down"]);
    assert!(isolated.status().expect("ip link").success());
    let mut pull = Cluster::command_in(&node2.netns, "timeout");
    pull.args(["5", "ctr", "--address"]).arg(containerd.socket());
    pull.args(["--namespace", "pulled2", "images", "pull", "--plain-http", &reference]);
    assert!(!pull.status().expect("run ctr pull").success(), "no pull without a link");
}

//! The routing mesh and VIPs on whatever load balancer the nodes' kernels offer (SCENARIOS.md 6):
//! on a manager and two or more workers, `web` (2 replicas on the workers) published on 8080 and a
//! global `probe` on an overlay. Each node says which balancer its agent picked (`node inspect`),
//! the published port answers on every node's address (the manager runs no web task), requests
//! through the node without a task and through the VIP reach both tasks, and the kernel's own
//! tables show the services: `/proc/net/ip_vs` under IPVS, the `shoal_lb` table under nftables.

use std::collections::BTreeSet;

use shoal_testkit::{TestNode, Testbed};

use super::{Running, eventually, from_outside, in_task, json, running_task};
use crate::support::{http_script, ok};

/// The load-balancer state of a node's namespace `netns`, as its kernel shows it: the IPVS
/// table, or the nftables balancer table.
fn balancer_state(node: &dyn TestNode, netns: &str, load_balancer: &str) -> String {
    let argv: &[&str] = match load_balancer {
        "ipvs" => &["ip", "netns", "exec", netns, "cat", "/proc/net/ip_vs"],
        _ => &["ip", "netns", "exec", netns, "nft", "list", "table", "ip", "shoal_lb"],
    };
    let out = node.exec(argv).expect("read the balancer");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// How many real servers an IPVS table lists.
fn ipvs_destinations(table: &str) -> usize {
    table.lines().filter(|l| l.trim_start().starts_with("->") && !l.contains("RemoteAddress")).count()
}

pub(crate) fn routing_mesh_and_vips(bed: &dyn Testbed, cluster: &Running) {
    let nodes = bed.nodes();
    let manager = nodes[0];
    let expected = bed.features().load_balancer;
    let cli = &cluster.cli;
    eprintln!("--- every node's agent picked {expected}");
    for node in &nodes {
        let inspect = json(cli, &["node", "inspect", node.name()]);
        let picked = &inspect["Description"]["LoadBalancer"];
        assert_eq!(picked, expected, "{}: node inspect says {picked}", node.name());
    }

    eprintln!("--- web (2 replicas on the workers) published on 8080, a global probe, on the overlay front");
    let registry = bed.registry();
    let web_image = format!("{registry}/shoal-test/web:v1");
    let tools = format!("{registry}/shoal-test/tools:latest");
    ok(cli, &["network", "create", "--driver", "overlay", "front"]);
    ok(
        cli,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--constraint",
            "node.role==worker",
            "--network",
            "front",
            "--publish",
            "8080:80",
            &web_image,
        ],
    );
    ok(cli, &["service", "create", "--name", "probe", "--mode", "global", "--network", "front", &tools]);
    eventually(bed, "web and probe converged", 120, || {
        let ls = ok(cli, &["service", "ls"]);
        let web = ls.lines().any(|l| l.contains(" web ") && l.contains(" 2/2 "));
        let probe = ls.lines().any(|l| l.contains(" probe ") && l.contains(&format!(" {n}/{n} ", n = nodes.len())));
        web && probe
    });

    eprintln!("--- the published port answers on every node's address, the manager's too (no web task there)");
    for node in &nodes {
        let addr = node.addr().to_string();
        let mut answer = None;
        eventually(bed, &format!("{}:8080 answers", node.name()), 30, || {
            answer = from_outside(bed, &addr, 8080, "/");
            answer.is_some()
        });
        assert!(answer.as_deref().is_some_and(|a| a.starts_with("v1 ")), "{}: {answer:?}", node.name());
    }
    let manager_addr = manager.addr().to_string();
    let mut through_mesh = BTreeSet::new();
    for _ in 0..20 {
        through_mesh.extend(from_outside(bed, &manager_addr, 8080, "/"));
    }
    assert_eq!(through_mesh.len(), 2, "20 requests through {} reach both tasks: {through_mesh:?}", manager.name());

    eprintln!("--- the VIP from the probe on the manager: one address, both tasks behind it");
    let (probe_node, probe) = running_task(bed, cli, "probe", manager.name());
    let inspect = json(cli, &["service", "inspect", "web"]);
    let vips: Vec<String> = inspect["Endpoint"]["VirtualIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["Addr"].as_str())
        .map(|a| a.split('/').next().unwrap_or_default().to_owned())
        .collect();
    let (_, lookup) = in_task(probe_node, &probe, &["nslookup", "web"]);
    let vip = vips
        .iter()
        .find(|v| lookup.contains(v.as_str()))
        .unwrap_or_else(|| panic!("web resolves to none of its VIPs {vips:?}: {lookup}"))
        .clone();
    let mut through_vip = BTreeSet::new();
    for _ in 0..20 {
        let (_, out) = in_task(probe_node, &probe, &["sh", "-c", &http_script(&vip, 80, "/")]);
        through_vip.extend(crate::support::body(&out));
    }
    assert_eq!(through_vip.len(), 2, "20 requests to the VIP {vip} reach both tasks: {through_vip:?}");

    eprintln!("--- the kernel's own tables ({expected}) hold the mesh and the VIP");
    let prefix = &manager.layout().netns_prefix;
    let sandbox = balancer_state(manager, &format!("{prefix}ingress-sbox"), expected);
    let task = balancer_state(probe_node, &format!("{}t{probe}", probe_node.layout().netns_prefix), expected);
    if expected == "ipvs" {
        assert!(ipvs_destinations(&sandbox) >= 2, "the ingress sandbox's IPVS table:\n{sandbox}");
        assert!(ipvs_destinations(&task) >= 2, "the probe's IPVS table:\n{task}");
    } else {
        assert!(sandbox.contains("table ip shoal_lb"), "the ingress sandbox's balancer:\n{sandbox}");
        assert!(task.contains("table ip shoal_lb"), "the probe's balancer:\n{task}");
    }
    for name in ["web", "probe"] {
        ok(cli, &["service", "rm", name]);
    }
    // The network goes once the tasks on it have stopped.
    eventually(bed, "network front removed", 60, || cli.run(&["network", "rm", "front"]).is_ok_and(|(ok, _, _)| ok));
}

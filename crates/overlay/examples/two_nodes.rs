//! Two nodes on an underlay (harness namespaces), one overlay network, a container on each, and a
//! ping across the VXLAN tunnel. Run as root: `cargo run -p shoal-overlay --example two_nodes`.

// An example reports on standard output.
#![allow(clippy::print_stdout)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;

use shoal_overlay::{
    ContainerSpec, Desired, Kernel, KernelConfig, LocalEndpoint, Naming, NetworkSpec, Overlay, RemoteEndpoint,
};
use shoal_testkit::{Cluster, images};

/// Removes the example's container and sandbox namespaces when dropped.
struct Sweep(String);

impl Drop for Sweep {
    fn drop(&mut self) {
        let listed = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
        for name in String::from_utf8_lossy(&listed).lines().filter_map(|l| l.split_whitespace().next()) {
            if name.starts_with(&self.0) {
                let _ = Command::new("ip").args(["netns", "delete", name]).output();
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::new(2)?;
    // Only what the overlay and this program made: the cluster removes its own namespaces.
    let _sweep = Sweep(format!("{}-ov-", cluster.prefix()));
    let blue = NetworkSpec::new("blue", 4097, "198.18.0.0/24".parse()?, "198.18.0.1".parse()?);
    let addresses = [Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 3)];

    let mut containers = Vec::new();
    for (i, node) in cluster.nodes().iter().enumerate() {
        let container = format!("{}-ov-c{}", cluster.prefix(), i + 1);
        let status = Command::new("ip").args(["netns", "add", &container]).status()?;
        assert!(status.success(), "ip netns add {container}");
        let peer = &cluster.nodes()[1 - i];
        let desired = Desired {
            encryption: None,
            networks: vec![blue.clone()],
            containers: vec![ContainerSpec {
                id: container.clone(),
                netns: PathBuf::from("/run/netns").join(&container),
                endpoints: vec![LocalEndpoint::new("blue", "eth0", addresses[i])],
                egress: None,
            }],
            remotes: vec![RemoteEndpoint::new("blue", addresses[1 - i], IpAddr::V4(peer.addr))],
            gateway: None,
        };
        let config =
            KernelConfig { node_netns: Some(PathBuf::from("/run/netns").join(&node.netns)), ..Default::default() };
        let naming = Naming { netns_prefix: format!("{}-ov-{}-", cluster.prefix(), node.name), ..Default::default() };
        let mut overlay = Overlay::new(Kernel::new(config)?, naming);
        let report = overlay.reconcile(&desired)?;
        println!("{}: {} operations", node.name, report.applied.len());
        for op in &report.applied {
            println!("  {op}");
        }
        containers.push(container);
    }

    let ping = Cluster::command_in(&containers[0], images::BUSYBOX)
        .args(["ping", "-c", "3", "-W", "1", &addresses[1].to_string()])
        .output()?;
    println!("{}", String::from_utf8_lossy(&ping.stdout));
    if !ping.status.success() {
        return Err("the containers do not reach each other".into());
    }
    Ok(())
}

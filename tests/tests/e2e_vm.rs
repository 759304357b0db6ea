//! The end-to-end scenarios on machines with kernels of their own: a cluster of three qemu VMs
//! booted from Debian's cloud kernel (IPVS, ESP and NFS as modules, which this host lacks), or
//! the machines of an inventory file named by `SHOAL_TESTBED` (`cargo xtask e2e --hosts FILE`).
//! The scenarios are the ones `e2e_network.rs` runs on network namespaces (`scenarios/`).
//!
//! The VMs: an ext4 root image with containerd, runc, nft, ip, dropbear and Shoal's binaries of
//! this build, each VM on the harness's underlay bridge through a tap device, driven over SSH
//! through an inventory the harness writes, so that the `--hosts` path is the one tested here.

#![allow(clippy::print_stderr)]

mod scenarios;
mod support;

use std::path::{Path, PathBuf};

use shoal_testkit::inventory::{Inventory, SshBed};
use shoal_testkit::privileged::{self, Need};
use shoal_testkit::shoal::{bin_dir, missing_binaries};
use shoal_testkit::vm::{VmBed, three_vms};
use shoal_testkit::{Containerd, Testbed as _, images, push_all};

/// What booting the VMs takes from this host (the image copies its containerd, runc, nft, ip,
/// kmod, dropbear, tcpdump and dash; packages are fetched with apt-get and dpkg-deb).
const VM_NEEDS: &[Need] = &[
    Need::Root,
    Need::Command("qemu-system-x86_64"),
    Need::Command("mkfs.ext4"),
    Need::Command("depmod"),
    Need::Command("dropbear"),
    Need::Command("dropbearkey"),
    Need::Command("ssh"),
    Need::Command("ssh-keygen"),
    Need::Command("dash"),
    Need::Command("tcpdump"),
    Need::Command("apt-get"),
    Need::Command("dpkg-deb"),
    Need::Command("containerd"),
    Need::Command("runc"),
    Need::Command("nft"),
    Need::Command("docker-registry"),
];

/// The machines: those of `SHOAL_TESTBED`'s inventory (with the containerd that pushed the test
/// images to its registry, kept for as long as the test runs), or three VMs booted here.
enum Machines {
    Hosts(Box<(SshBed, Containerd)>),
    Vms(Box<VmBed>),
}

impl Machines {
    fn bed(&self) -> &SshBed {
        match self {
            Self::Hosts(hosts) => &hosts.0,
            Self::Vms(vms) => vms.bed(),
        }
    }
}

fn testbed(test: &str) -> Option<Machines> {
    let bins = bin_dir();
    let missing = missing_binaries(&bins);
    if !missing.is_empty() {
        privileged::skip(&format!("{test}: skipped: binaries {missing:?} not built in {}", bins.display()));
        return None;
    }
    if let Some(path) = std::env::var_os("SHOAL_TESTBED") {
        let inventory = Inventory::load(Path::new(&path)).expect("the inventory");
        eprintln!("--- testbed: the {} machines of {}", inventory.nodes.len(), PathBuf::from(&path).display());
        let bed = SshBed::new(inventory, &bins.join("shoal")).expect("the testbed");
        bed.prepare().expect("the machines are ready");
        // The test images, pushed to the inventory's registry from where the CLI runs.
        let built = images::build_all(Path::new(images::BUSYBOX), &bed.work_dir().join("images")).expect("images");
        let containerd = Containerd::start(
            &bed.work_dir().join("containerd"),
            &format!("{}-push", bed.work_dir().file_name().map(|n| n.to_string_lossy()).unwrap_or_default()),
        )
        .expect("containerd");
        let inventory = bed.inventory();
        push_all(&containerd, &built, &inventory.registry, inventory.client_netns.as_deref()).expect("push");
        return Some(Machines::Hosts(Box::new((bed, containerd))));
    }
    if !privileged::require(test, VM_NEEDS) {
        return None;
    }
    Some(Machines::Vms(Box::new(VmBed::start(&three_vms(), &bins).expect("the VM testbed"))))
}

/// One cluster on the machines runs every scenario in turn (booting VMs takes a while).
#[test]
fn scenarios_on_machines() {
    let Some(machines) = testbed("e2e_vm scenarios_on_machines") else { return };
    let bed = machines.bed();
    let cluster = scenarios::start(bed);
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        scenarios::encrypted::encrypted_overlay(bed, &cluster);
        scenarios::mesh::routing_mesh_and_vips(bed, &cluster);
        scenarios::nfs::nfs_volume(bed, &cluster);
    }));
    if let Err(panic) = ran {
        hold_on_failure(bed);
        std::panic::resume_unwind(panic);
    }
}

/// With `SHOAL_HOLD_ON_FAILURE=SECONDS`, a failed run keeps its machines (and cluster) up that
/// long, saying how to reach them, so that a developer can look around.
fn hold_on_failure(bed: &SshBed) {
    let Some(secs) = std::env::var("SHOAL_HOLD_ON_FAILURE").ok().and_then(|s| s.parse::<u64>().ok()) else { return };
    let inventory = bed.inventory();
    let netns = inventory.client_netns.as_deref().map(|n| format!("ip netns exec {n} ")).unwrap_or_default();
    let key = inventory.ssh_key.as_ref().map(|k| format!("-i {} ", k.display())).unwrap_or_default();
    for node in &inventory.nodes {
        eprintln!(
            "--- held for {secs} s: {netns}ssh {key}-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@{} ({})",
            node.addr, node.name
        );
    }
    std::thread::sleep(std::time::Duration::from_secs(secs));
}

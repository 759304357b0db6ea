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
use shoal_testkit::vm::{self, Kernel, VmCluster, VmSpec};
use shoal_testkit::{Containerd, Registry, Testbed as _, images, push_all};

/// What booting the VMs takes from this host.
const VM_NEEDS: &[Need] = &[
    Need::Root,
    Need::Command("qemu-system-x86_64"),
    Need::Command("mkfs.ext4"),
    Need::Command("depmod"),
    Need::Command("dropbearkey"),
    Need::Command("ssh"),
    Need::Command("ssh-keygen"),
    Need::Command("containerd"),
    Need::Command("docker-registry"),
];

/// What runs on this host for the testbed: the containerd that pushed the test images, and the
/// VMs (with the registry they pull from, in the underlay namespace) unless an inventory names
/// the machines.
struct Machines {
    _vms: Option<VmCluster>,
    _containerd: Containerd,
}

fn testbed(test: &str) -> Option<(Machines, SshBed)> {
    let bins = bin_dir();
    let missing = missing_binaries(&bins);
    if !missing.is_empty() {
        privileged::skip(&format!("{test}: skipped: binaries {missing:?} not built in {}", bins.display()));
        return None;
    }
    let cli = bins.join("shoal");
    if let Some(path) = std::env::var_os("SHOAL_TESTBED") {
        let inventory = Inventory::load(Path::new(&path)).expect("the inventory");
        eprintln!("--- testbed: the {} machines of {}", inventory.nodes.len(), PathBuf::from(&path).display());
        let bed = SshBed::new(inventory, &cli).expect("the testbed");
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
        return Some((Machines { _vms: None, _containerd: containerd }, bed));
    }
    if !privileged::require(test, VM_NEEDS) {
        return None;
    }
    let cache = vm::cache_dir();
    let kernel = Kernel::fetch(&cache).expect("the kernel");
    let image = vm::image::build(&cache, &kernel, &bins).expect("the VM image");
    let specs: Vec<VmSpec> = (1..=3)
        .map(|i| VmSpec { name: format!("vm{i}"), memory_mib: if i == 1 { 1024 } else { 768 }, nfs_server: i == 1 })
        .collect();
    let vms = VmCluster::boot(&image, &specs).expect("boot the VMs");
    let cluster = vms.cluster();
    let built = images::build_all(Path::new(images::BUSYBOX), &cluster.dir().join("images")).expect("images");
    let containerd = Containerd::start(&cluster.dir().join("containerd"), &format!("{}-push", cluster.prefix()))
        .expect("containerd");
    let registry = Registry::start(cluster).expect("registry");
    registry.push_all(&containerd, &built).expect("push");
    let registry_addr = registry.addr().to_string();
    // The registry runs in the underlay namespace and dies with it.
    std::mem::forget(registry);
    let path = cluster.dir().join("testbed.toml");
    std::fs::write(&path, vms.inventory(&registry_addr).to_toml()).expect("write the inventory");
    eprintln!("--- testbed: {}", path.display());
    let bed = SshBed::new(Inventory::load(&path).expect("read the inventory back"), &cli).expect("the testbed");
    bed.prepare().expect("the VMs are ready");
    Some((Machines { _vms: Some(vms), _containerd: containerd }, bed))
}

/// One cluster on the machines runs every scenario in turn (booting VMs takes a while).
#[test]
fn scenarios_on_machines() {
    let Some((_machines, bed)) = testbed("e2e_vm scenarios_on_machines") else { return };
    let cluster = scenarios::start(&bed);
    scenarios::mesh::routing_mesh_and_vips(&bed, &cluster);
    scenarios::nfs::nfs_volume(&bed, &cluster);
}

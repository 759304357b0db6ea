//! A ready VM testbed: the kernel and image prepared, the VMs booted, the test images pushed to
//! a registry on the underlay, and the VMs written down as an inventory and opened as an
//! [`SshBed`] — what `tests/tests/e2e_vm.rs` and `cargo xtask bench vm` start from.

use std::path::Path;

use crate::inventory::{Inventory, SshBed};
use crate::netns::{HarnessError, narrate};
use crate::vm::{Kernel, VmCluster, VmSpec, cache_dir, image};
use crate::{Containerd, Registry, images};

/// Three VMs of the e2e runs: a manager that also serves NFS (1 GiB), two workers (768 MiB).
pub fn three_vms() -> Vec<VmSpec> {
    (1..=3)
        .map(|i| VmSpec { name: format!("vm{i}"), memory_mib: if i == 1 { 1024 } else { 768 }, nfs_server: i == 1 })
        .collect()
}

/// Booted VMs and what serves them from this host. Dropping it closes the SSH connections, then
/// stops the VMs, the registry and the pushing containerd.
#[derive(Debug)]
pub struct VmBed {
    bed: SshBed,
    _containerd: Containerd,
    vms: VmCluster,
}

fn setup(what: &'static str) -> impl FnOnce(String) -> HarnessError {
    move |detail| HarnessError::Setup { what, detail }
}

impl VmBed {
    /// Boots `specs` from an image holding the Shoal binaries in `bins`, pushes the test images,
    /// and opens the VMs through the inventory it writes into the cluster's directory.
    pub fn start(specs: &[VmSpec], bins: &Path) -> Result<Self, HarnessError> {
        let cache = cache_dir();
        let kernel = Kernel::fetch(&cache)?;
        let image = image::build(&cache, &kernel, bins)?;
        let vms = VmCluster::boot(&image, specs)?;
        let cluster = vms.cluster();
        let built = images::build_all(Path::new(images::BUSYBOX), &cluster.dir().join("images"))
            .map_err(|e| setup("the test images")(e.to_string()))?;
        let containerd = Containerd::start(&cluster.dir().join("containerd"), &format!("{}-push", cluster.prefix()))
            .map_err(|e| setup("a containerd to push the test images")(e.to_string()))?;
        let registry = Registry::start(cluster).map_err(|e| setup("the registry")(e.to_string()))?;
        registry.push_all(&containerd, &built).map_err(|e| setup("the test images in the registry")(e.to_string()))?;
        let registry_addr = registry.addr().to_string();
        // The registry runs in the underlay namespace and dies with it.
        std::mem::forget(registry);
        let path = cluster.dir().join("testbed.toml");
        std::fs::write(&path, vms.inventory(&registry_addr).to_toml())
            .map_err(crate::netns::io_error("write", &path))?;
        narrate(&format!("testbed: {}", path.display()));
        let bed = SshBed::new(Inventory::load(&path)?, &bins.join("shoal"))?;
        bed.prepare()?;
        Ok(Self { bed, _containerd: containerd, vms })
    }

    /// The VMs as a testbed.
    pub fn bed(&self) -> &SshBed {
        &self.bed
    }

    /// The VMs.
    pub fn vms(&self) -> &VmCluster {
        &self.vms
    }
}

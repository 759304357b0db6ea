//! Clusters of qemu VMs booted from Debian's cloud kernel, for what this host's kernel lacks
//! (IPVS, ESP, NFS): each VM runs containerd and an SSH server from a shared root image and sits
//! on the harness's underlay bridge through a tap device, at the address a netns node would have.
//!
//! ```text
//! underlay netns shoaltest-<run>-u:  br0 192.0.2.1/24 ── shl-tap1 ─ vm1 (eth0 192.0.2.11)
//!   (registry, CLI, clients, qemu)                   ├─ shl-tap2 ─ vm2 (eth0 192.0.2.12)
//!                                                    └─ shl-tap3 ─ vm3 (eth0 192.0.2.13)
//! ```
//!
//! qemu runs under TCG (software emulation; KVM hangs on this host), one vCPU per VM. The VMs
//! are written down as an [`Inventory`] and driven through
//! [`SshBed`](crate::inventory::SshBed), exactly as real machines of `cargo xtask e2e --hosts
//! FILE` are; [`VmBed`] does all of it for a test.

mod bed;
pub mod image;
pub mod initramfs;
pub mod kernel;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd;
use crate::inventory::{Inventory, InventoryNode};
use crate::netns::{Cluster, HarnessError, narrate};
pub use bed::{VmBed, three_vms};
pub use image::{Image, NFS_EXPORT, READY_MARKER, SHOAL_BIN_DIR};
pub use kernel::Kernel;

/// How long a VM may take from qemu's start to its ready line.
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// The harness's cache of kernel, packages, keys and images: `target/shoal-vm/`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("shoal-vm")
}

/// One VM to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Its name and hostname.
    pub name: String,
    /// Its memory, in MiB.
    pub memory_mib: u32,
    /// Whether it serves NFSv4 ([`NFS_EXPORT`] to the underlay).
    pub nfs_server: bool,
}

/// A running VM (qemu is killed when dropped).
#[derive(Debug)]
struct Vm {
    spec: VmSpec,
    addr: Ipv4Addr,
    qemu: Child,
    console: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

/// The `qemu-system-x86_64` command that boots `image` as `spec`, at `addr` on the tap device
/// `tap`, under TCG with the host CPU's features emulated (`-cpu max`: AES-NI and PCLMUL for the
/// guest's crypto), its serial console on standard output.
pub fn qemu_command(image: &Image, spec: &VmSpec, addr: Ipv4Addr, tap: &str, mac: &str) -> Command {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-cpu", "max", "-smp", "1", "-nographic", "-no-reboot"]);
    qemu.arg("-m").arg(spec.memory_mib.to_string());
    qemu.arg("-kernel").arg(image.kernel.vmlinuz()).arg("-initrd").arg(&image.initramfs);
    qemu.arg("-drive").arg(format!("file={},format=raw,if=virtio,snapshot=on", image.disk.display()));
    qemu.arg("-netdev").arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"));
    qemu.arg("-device").arg(format!("virtio-net-pci,netdev=n0,mac={mac}"));
    qemu.args(["-device", "virtio-rng-pci"]);
    qemu.arg("-append").arg(format!(
        "console=ttyS0 panic=-1 root=/dev/vda shoal.ip={addr}/24 shoal.name={name} shoal.nfs={nfs}",
        name = spec.name,
        nfs = u8::from(spec.nfs_server),
    ));
    qemu
}

/// A cluster of VMs on a harness underlay. Dropping it kills the VMs and removes the underlay.
#[derive(Debug)]
pub struct VmCluster {
    // Declared before the cluster: VMs go first, then the namespace their taps live in.
    vms: Vec<Vm>,
    cluster: Cluster,
    image: Image,
    booted_in: Duration,
}

impl VmCluster {
    /// Boots `specs` (VM `i`, 1-based, at 192.0.2.(10+i)) from `image` on a fresh underlay, and
    /// waits until each says it is ready (SSH and containerd up).
    pub fn boot(image: &Image, specs: &[VmSpec]) -> Result<Self, HarnessError> {
        let started = Instant::now();
        let mut cluster = Cluster::new(0)?;
        if std::env::var_os("SHOAL_KEEP_LOGS").is_some() {
            narrate(&format!("keeping {} (SHOAL_KEEP_LOGS)", cluster.dir().display()));
            cluster.keep_dir();
        }
        let underlay = cluster.underlay_netns().to_owned();
        let mut vms = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let index = i + 1;
            let last = u8::try_from(10 + index).map_err(|_| HarnessError::NodeIndex { index })?;
            let addr = Ipv4Addr::new(192, 0, 2, last);
            let tap = format!("shl-tap{index}");
            let ip = |action: &str, args: &[&str]| {
                cmd::run(Command::new("ip").arg("-n").arg(&underlay).args(args))
                    .map_err(|source| HarnessError::Command { action: format!("{action} in {underlay}"), source })
            };
            ip("create tap device", &["tuntap", "add", "dev", &tap, "mode", "tap"])?;
            ip("attach tap device", &["link", "set", &tap, "master", "br0", "up"])?;
            let console = cluster.dir().join("logs").join(format!("{}.console", spec.name));
            let out = std::fs::File::create(&console).map_err(|source| HarnessError::Io {
                action: "create console log",
                path: console.clone(),
                source,
            })?;
            let err = out.try_clone().map_err(|source| HarnessError::Io {
                action: "create console log",
                path: console.clone(),
                source,
            })?;
            // qemu opens the tap by name, so it runs in the underlay's namespace.
            let mac = format!("52:54:00:c0:02:{last:02x}");
            let mut qemu = qemu_command(image, spec, addr, &tap, &mac);
            // A pid file in the run's directory: the command line names the run, so the sweep of
            // `cargo xtask clean` finds a VM whose test was killed before it could stop it.
            qemu.arg("-pidfile").arg(console.with_extension("pid"));
            let mut command = Command::new("nsenter");
            command.arg(format!("--net=/run/netns/{underlay}")).arg("--").arg(qemu.get_program()).args(qemu.get_args());
            command.stdin(Stdio::null()).stdout(out).stderr(err);
            let child = command.spawn().map_err(|source| HarnessError::Command {
                action: format!("boot {}", spec.name),
                source: cmd::CommandError::Spawn { command: cmd::render(&command), source },
            })?;
            vms.push(Vm { spec: spec.clone(), addr, qemu: child, console });
        }
        let mut this = Self { vms, cluster, image: image.clone(), booted_in: Duration::ZERO };
        this.wait_ready()?;
        this.booted_in = started.elapsed();
        narrate(&format!(
            "{} VMs ready in {:.1?} ({})",
            this.vms.len(),
            this.booted_in,
            this.vms.iter().map(|v| format!("{} {}", v.spec.name, v.addr)).collect::<Vec<_>>().join(", ")
        ));
        Ok(this)
    }

    fn wait_ready(&mut self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let mut waiting: Vec<usize> = (0..self.vms.len()).collect();
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for i in waiting {
                let vm = &mut self.vms[i];
                let console = std::fs::read_to_string(&vm.console).unwrap_or_default();
                if console.contains(READY_MARKER) {
                    continue;
                }
                if !matches!(vm.qemu.try_wait(), Ok(None)) {
                    return Err(HarnessError::Timeout {
                        what: format!("{} to boot (qemu exited)", vm.spec.name),
                        log: vm.console.clone(),
                    });
                }
                if Instant::now() > deadline {
                    return Err(HarnessError::Timeout {
                        what: format!("{} to boot", vm.spec.name),
                        log: vm.console.clone(),
                    });
                }
                still.push(i);
            }
            waiting = still;
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// The harness cluster around the VMs (its underlay namespace, directory and logs).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// How long the boot took, from the first qemu started to the last VM ready.
    pub fn booted_in(&self) -> Duration {
        self.booted_in
    }

    /// The console log of VM `name`.
    pub fn console(&self, name: &str) -> Option<&Path> {
        self.vms.iter().find(|v| v.spec.name == name).map(|v| v.console.as_path())
    }

    /// The VMs as an inventory: the CLI and clients in the underlay namespace, `registry` for
    /// the images, the load balancer the guest kernel offers (IPVS), the NFS server, ESP, and
    /// deadlines scaled for emulation.
    pub fn inventory(&self, registry: &str) -> Inventory {
        Inventory {
            registry: registry.to_owned(),
            client_netns: Some(self.cluster.underlay_netns().to_owned()),
            ssh_key: Some(self.image.ssh_key.clone()),
            load_balancer: "ipvs".into(),
            timescale: 4,
            heartbeat: "2".into(),
            nfs_server: self.vms.iter().find(|vm| vm.spec.nfs_server).map(|vm| vm.addr),
            esp: true,
            nodes: self
                .vms
                .iter()
                .map(|vm| InventoryNode {
                    name: vm.spec.name.clone(),
                    addr: vm.addr,
                    ssh: None,
                    bin_dir: SHOAL_BIN_DIR.into(),
                    data_dir: "/var/lib/shoal".into(),
                    containerd_socket: "/run/containerd/containerd.sock".into(),
                    containerd_namespace: "shoal".into(),
                })
                .collect(),
        }
    }
}

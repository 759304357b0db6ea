//! The root disk of the cluster VMs: an ext4 image made with `mkfs.ext4 -d` from a staging tree
//! (no loop mount, no root file system of this host touched), holding the kernel's modules with
//! `depmod`'s index, this host's containerd, runc, nft, ip, dropbear, kmod and tcpdump with the
//! libraries they link, busybox for the rest, Shoal's binaries, a login key, and the boot script.
//! Each VM attaches it with `snapshot=on`, so each writes to a copy-on-write layer of its own.
//!
//! The image is rebuilt only when a fingerprint of its inputs (paths, sizes and modification
//! times of every file copied in, and the generated files' contents) changes.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest as _;

use crate::cmd;
use crate::netns::{HarnessError, io_error};
use crate::vm::initramfs::{boot_initramfs, shared_libraries_with};
use crate::vm::kernel::Kernel;

/// Where Shoal's binaries are on the image.
pub const SHOAL_BIN_DIR: &str = "/opt/shoal/bin";

/// What a VM prints on its console once SSH and containerd answer.
pub const READY_MARKER: &str = "SHOAL-VM-READY";

/// Executables of this host copied into the image, with the package that provides each.
const HOST_TOOLS: &[(&str, &str)] = &[
    ("dash", "dash"),
    ("containerd", "containerd"),
    ("containerd-shim-runc-v2", "containerd"),
    ("ctr", "containerd"),
    ("runc", "runc"),
    ("nft", "nftables"),
    ("ip", "iproute2"),
    ("dropbear", "dropbear-bin"),
    ("kmod", "kmod"),
    ("tcpdump", "tcpdump"),
];

/// Packages fetched with `apt-get download` and extracted (not installed here: the server would
/// start on this host) for the NFS server of a VM: NFSv4 only, without rpcbind.
const NFS_PACKAGES: &[&str] = &["nfs-kernel-server", "nfs-common", "libwrap0", "libtirpc-common"];

/// The NFS server's programs, from those packages.
const NFS_PROGRAMS: &[&str] = &["usr/sbin/rpc.nfsd", "usr/sbin/rpc.mountd", "usr/sbin/exportfs"];

/// What a VM started with `shoal.nfs=1` exports (read-write to the underlay, root not squashed).
pub const NFS_EXPORT: &str = "/srv/nfs";

/// Modules loaded at boot; others load on demand (`modprobe` through kmod and `depmod`'s
/// aliases: nftables expressions, crypto templates, …), and each such load is logged on the
/// console.
const BOOT_MODULES: &[&str] = &[
    "virtio_net",
    "virtio_rng",
    "overlay",
    "veth",
    "bridge",
    "vxlan",
    "nf_tables",
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "aesni_intel",
    "ghash_clmulni_intel",
];

/// The kmod names that are links to `kmod`.
const KMOD_LINKS: &[&str] = &["modprobe", "insmod", "rmmod", "lsmod", "modinfo", "depmod"];

/// Bumped when the layout of the image changes in a way the fingerprint does not see.
const FORMAT: u32 = 1;

/// A built image: what qemu boots and how to log in.
#[derive(Debug, Clone)]
pub struct Image {
    /// The kernel.
    pub kernel: Kernel,
    /// The boot initramfs.
    pub initramfs: PathBuf,
    /// The root disk (raw ext4).
    pub disk: PathBuf,
    /// The private key whose public half is root's authorized key on the image.
    pub ssh_key: PathBuf,
}

fn run(action: &str, command: &mut Command) -> Result<String, HarnessError> {
    cmd::run(command).map_err(|source| HarnessError::Command { action: action.to_owned(), source })
}

/// An executable named `name` on `PATH` or in the sbin directories.
pub(crate) fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The SSH key pair of the harness (made once): `cache/ssh/id_ed25519` and a dropbear host key.
fn keys(cache: &Path) -> Result<(PathBuf, PathBuf), HarnessError> {
    let dir = cache.join("ssh");
    std::fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
    let key = dir.join("id_ed25519");
    if !key.exists() {
        run(
            "make the harness's SSH key",
            Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "shoal-vm", "-f"]).arg(&key),
        )?;
    }
    let host_key = dir.join("dropbear_ed25519_host_key");
    if !host_key.exists() {
        let tool = find_tool("dropbearkey").ok_or_else(|| missing_tool("dropbearkey", "dropbear-bin"))?;
        run("make the VMs' host key", Command::new(tool).args(["-t", "ed25519", "-f"]).arg(&host_key))?;
    }
    Ok((key, host_key))
}

fn missing_tool(name: &str, package: &str) -> HarnessError {
    HarnessError::Missing {
        what: format!("{name}, which the VM image copies from this host"),
        hint: format!("apt-get install -y --no-install-recommends {package} (cargo xtask e2e --vm installs it)"),
    }
}

/// A staging tree for `mkfs.ext4 -d`, and the fingerprint of what went into it.
struct Staging {
    root: PathBuf,
    fingerprint: sha2::Sha256,
}

impl Staging {
    fn path(&self, at: &str) -> PathBuf {
        self.root.join(at.trim_start_matches('/'))
    }

    fn dir(&self, at: &str) -> Result<(), HarnessError> {
        let path = self.path(at);
        std::fs::create_dir_all(&path).map_err(io_error("create directory", &path))
    }

    fn symlink(&self, at: &str, target: &str) -> Result<(), HarnessError> {
        let path = self.path(at);
        std::os::unix::fs::symlink(target, &path).map_err(io_error("create symlink", &path))
    }

    /// Writes a generated file (its contents go into the fingerprint).
    fn write(&mut self, at: &str, mode: u32, contents: &[u8]) -> Result<(), HarnessError> {
        self.fingerprint.update(at.as_bytes());
        self.fingerprint.update(contents);
        let path = self.path(at);
        std::fs::write(&path, contents).map_err(io_error("write", &path))?;
        set_mode(&path, mode)
    }

    /// Copies `from` (through symlinks) to `at` (its path, size and mtime go into the fingerprint).
    fn copy(&mut self, from: &Path, at: &str) -> Result<(), HarnessError> {
        let meta = std::fs::metadata(from).map_err(io_error("read", from))?;
        let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        let _ = write!(Fingerprint(&mut self.fingerprint), "{}:{}:{modified:?};", from.display(), meta.len());
        let path = self.path(at);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_error("create directory", parent))?;
        }
        std::fs::copy(from, &path).map(drop).map_err(io_error("copy", from))
    }
}

/// `write!` into a hasher.
struct Fingerprint<'a>(&'a mut sha2::Sha256);

impl std::fmt::Write for Fingerprint<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), HarnessError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_error("chmod", path))
}

/// The boot script run by busybox `init` (which then only reaps orphans, as PID 1 must).
fn rc_script() -> String {
    let modules = BOOT_MODULES.join(" ");
    format!(
        r#"#!/bin/sh
# The VM's boot: pseudo file systems, modules, the address from the kernel command line, sshd and
# containerd. Shoal's processes are started by the harness over SSH.
export PATH=/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
# What udev makes on a real host (nft reads its rules from /dev/stdin).
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount --make-rshared /
echo /usr/bin/modprobe-logged > /proc/sys/kernel/modprobe
for m in {modules}; do modprobe "$m" || echo "shoal-vm: cannot load module $m"; done
for word in $(cat /proc/cmdline); do
    case "$word" in
        shoal.ip=*) ADDR="${{word#shoal.ip=}}" ;;
        shoal.name=*) NAME="${{word#shoal.name=}}" ;;
        shoal.nfs=*) NFS="${{word#shoal.nfs=}}" ;;
    esac
done
hostname "${{NAME:-vm}}"
ip link set lo up
ip addr add "$ADDR" dev eth0
ip link set eth0 up
echo 1 > /proc/sys/net/ipv4/ip_forward
mkdir -p /var/log/shoal /var/lib/shoal
if [ "$NFS" = 1 ]; then
    # NFSv4 only, without rpcbind: the export table, mountd, then the kernel's server threads.
    modprobe nfsd
    mount -t nfsd nfsd /proc/fs/nfsd
    touch /var/lib/nfs/etab /var/lib/nfs/rmtab
    exportfs -ra && rpc.mountd -N 3 && rpc.nfsd -N 3 4 || echo "shoal-vm: the NFS server did not start"
fi
dropbear -s -p 22 -r /etc/dropbear/dropbear_ed25519_host_key -P /run/dropbear.pid
containerd >/var/log/containerd.log 2>&1 &
n=0
while [ ! -S /run/containerd/containerd.sock ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n + 1)); done
echo "{READY_MARKER} $(cut -d' ' -f1 /proc/uptime)"
"#
    )
}

/// Downloads `packages` (once, into `cache/downloads`) and extracts them all into one tree,
/// `cache/packages`, which is returned.
fn extract_packages(cache: &Path, packages: &[&str]) -> Result<PathBuf, HarnessError> {
    let tree = cache.join("packages");
    let stamp = tree.join(".extracted");
    let wanted = packages.join(" ");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return Ok(tree);
    }
    let _ = std::fs::remove_dir_all(&tree);
    for package in packages {
        let deb = crate::vm::kernel::download(&cache.join("downloads"), package)?;
        run(&format!("extract {package}"), Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    }
    std::fs::write(&stamp, &wanted).map_err(io_error("write", &stamp))?;
    Ok(tree)
}

/// Builds (or reuses) the image under `cache`, with Shoal's binaries from `shoal_bins`.
pub fn build(cache: &Path, kernel: &Kernel, shoal_bins: &Path) -> Result<Image, HarnessError> {
    let (ssh_key, host_key) = keys(cache)?;
    let busybox = PathBuf::from(crate::images::BUSYBOX);
    if !busybox.is_file() {
        return Err(missing_tool("busybox", "busybox-static"));
    }
    let staging = cache.join("image.staging");
    let _ = std::fs::remove_dir_all(&staging);
    let mut stage = Staging { root: staging.clone(), fingerprint: sha2::Sha256::new() };
    let _ = write!(Fingerprint(&mut stage.fingerprint), "format {FORMAT}; kernel {};", kernel.version());
    for dir in [
        "usr/bin",
        "usr/lib/modules",
        "usr/lib64",
        "etc/dropbear",
        "root/.ssh",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "var/lib",
        "var/log",
        "srv",
        "opt/shoal/bin",
    ] {
        stage.dir(dir)?;
    }
    // One directory of executables, as dropbear's default PATH and busybox's applets expect.
    for (link, target) in
        [("bin", "usr/bin"), ("sbin", "usr/bin"), ("usr/sbin", "bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")]
    {
        stage.symlink(link, target)?;
    }

    let mut executables = Vec::new();
    for (name, package) in HOST_TOOLS {
        let path = find_tool(name).ok_or_else(|| missing_tool(name, package))?;
        stage.copy(&path, &format!("usr/bin/{name}"))?;
        executables.push(path);
    }
    for name in crate::shoal::BINARIES {
        let path = shoal_bins.join(name);
        if !path.is_file() {
            return Err(HarnessError::Missing {
                what: format!("{} for the VM image", path.display()),
                hint: "build the binaries first (cargo build --workspace --bins)".into(),
            });
        }
        stage.copy(&path, &format!("{SHOAL_BIN_DIR}/{name}"))?;
        executables.push(path);
    }
    // The NFS server, from packages extracted under the cache.
    let extracted = extract_packages(cache, NFS_PACKAGES)?;
    for program in NFS_PROGRAMS {
        let path = extracted.join(program);
        let name = Path::new(program).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        stage.copy(&path, &format!("usr/bin/{name}"))?;
        executables.push(path);
    }
    stage.copy(&extracted.join("etc/netconfig"), "etc/netconfig")?;
    let extra_libraries = vec![extracted.join("usr/lib/x86_64-linux-gnu"), extracted.join("lib/x86_64-linux-gnu")];
    let mut libraries = BTreeSet::new();
    for executable in &executables {
        libraries.extend(shared_libraries_with(executable, &extra_libraries)?);
    }
    for library in &libraries {
        // Under the path ldd printed (the loader's /lib64/… included; an extracted library at
        // its path inside the package), the real bytes.
        let at = library.strip_prefix(&extracted).map_or_else(|_| library.clone(), |p| Path::new("/").join(p));
        stage.copy(library, &at.to_string_lossy())?;
    }
    // busybox is also `init` (PID 1, reading /etc/inittab) through its applet links below.
    stage.copy(&busybox, "usr/bin/busybox")?;
    stage.symlink("usr/bin/sh", "dash")?;
    for link in KMOD_LINKS {
        stage.symlink(&format!("usr/bin/{link}"), "kmod")?;
    }
    let applets = run("list busybox's applets", Command::new(&busybox).arg("--list"))?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        if !stage.path(&format!("usr/bin/{applet}")).exists() {
            stage.symlink(&format!("usr/bin/{applet}"), "busybox")?;
        }
    }

    // The kernel's modules and depmod's index of them, so that on-demand loads work.
    let modules = format!("usr/lib/modules/{}", kernel.version());
    let _ = write!(Fingerprint(&mut stage.fingerprint), "modules {};", kernel.modules_dir().display());
    run("copy the kernel modules", Command::new("cp").arg("-a").arg(kernel.modules_dir()).arg(stage.path(&modules)))?;
    run("index the kernel modules", Command::new("depmod").arg("-b").arg(&staging).arg(kernel.version()))?;

    let public = std::fs::read(ssh_key.with_extension("pub")).map_err(io_error("read", &ssh_key))?;
    stage.write("root/.ssh/authorized_keys", 0o600, &public)?;
    set_mode(&stage.path("root/.ssh"), 0o700)?;
    stage.copy(&host_key, "etc/dropbear/dropbear_ed25519_host_key")?;
    stage.write("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    stage.write("etc/group", 0o644, b"root:x:0:\n")?;
    stage.write("etc/shells", 0o644, b"/bin/sh\n")?;
    stage.write("etc/hosts", 0o644, b"127.0.0.1 localhost\n")?;
    stage.write("etc/resolv.conf", 0o644, format!("nameserver {}\n", crate::UNDERLAY_GATEWAY).as_bytes())?;
    stage.write(
        "etc/services",
        0o644,
        b"sunrpc 111/tcp portmapper\nsunrpc 111/udp portmapper\nnfs 2049/tcp\nnfs 2049/udp\n",
    )?;
    stage.write(
        "etc/exports",
        0o644,
        format!("{NFS_EXPORT} 192.0.2.0/24(rw,sync,no_subtree_check,no_root_squash,insecure)\n").as_bytes(),
    )?;
    stage.write("etc/nfs.conf", 0o644, b"[nfsd]\nvers3=n\nudp=n\n")?;
    stage.dir(NFS_EXPORT)?;
    stage.dir("var/lib/nfs/v4recovery")?;
    stage.write("etc/inittab", 0o644, b"::sysinit:/etc/rc\n::ctrlaltdel:/bin/poweroff -f\n")?;
    stage.write("etc/rc", 0o755, rc_script().as_bytes())?;
    stage.write(
        "usr/bin/modprobe-logged",
        0o755,
        b"#!/bin/sh\necho \"shoal-vm: modprobe $*\" >/dev/console\nexec /usr/bin/modprobe \"$@\"\n",
    )?;

    let fingerprint = format!("{:x}", stage.fingerprint.clone().finalize());
    let disk = cache.join("root.ext4");
    let initramfs = cache.join("boot.initramfs.gz");
    let stamp = cache.join("root.fingerprint");
    let current = std::fs::read_to_string(&stamp).unwrap_or_default();
    if current.trim() != fingerprint || !disk.is_file() || !initramfs.is_file() {
        let _ = std::fs::remove_file(&stamp);
        let _ = std::fs::remove_file(&disk);
        run(
            "make the VM root disk",
            Command::new("mkfs.ext4").args(["-q", "-F", "-L", "shoal-root", "-d"]).arg(&staging).arg(&disk).arg("3G"),
        )?;
        boot_initramfs(kernel, &busybox, &initramfs)?;
        std::fs::write(&stamp, &fingerprint).map_err(io_error("write", &stamp))?;
    }
    let _ = std::fs::remove_dir_all(&staging);
    Ok(Image { kernel: kernel.clone(), initramfs, disk, ssh_key })
}

//! `cargo xtask vm-test`: runs the IPVS conformance suite inside a qemu VM, because this host's
//! kernel has no IPVS. Run as root: `cargo run -p shoal-ipvs-lb --example vm_test [CASE…]`.
//!
//! 1. Installs `qemu-system-x86` with apt-get when `qemu-system-x86_64` is missing.
//! 2. Downloads Debian's cloud kernel (`linux-image-cloud-amd64` → the versioned package) with
//!    `apt-get download` and extracts it with `dpkg-deb -x`, once: both are cached under
//!    `target/shoal-vm/`.
//! 3. Builds `examples/vm_guest.rs` (the suite against `IpvsBalancer`).
//! 4. Packs a gzip'd newc initramfs: busybox-static, iproute2's `ip`, the guest program, the
//!    shared libraries both link (from `ldd`), and the kernel modules (ip_vs, ip_vs_rr,
//!    ip_vs_wrr, veth, bridge, and for source NAT nf_tables, nft_chain_nat, nft_ct, nft_masq,
//!    with their dependencies, read from each module's `depends=`), with
//!    an `/init` that mounts the pseudo file systems, `insmod`s the modules in dependency order,
//!    runs the guest and powers off.
//! 5. Boots `qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot` (KVM hangs on this
//!    host), streams the serial console, and exits with the guest's status.
//!
//! The VM pieces (kernel cache, module closure, newc writer, boot) are plain functions so the
//! ESP overlay and VM-cluster runs can reuse them.

// A command-line tool: it reports progress and the guest's console on standard output/error.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// The modules the guest needs; their dependencies are added.
/// The nftables ones are for IPVS source NAT: the table (`nf_tables`), its `nat` chain
/// (`nft_chain_nat`, which brings `nf_nat`), `ct original …` (`nft_ct`) and `masquerade`
/// (`nft_masq`).
const MODULES: &[&str] =
    &["ip_vs", "ip_vs_rr", "ip_vs_wrr", "veth", "bridge", "nf_tables", "nft_chain_nat", "nft_ct", "nft_masq"];
/// How long the guest may run before it is killed.
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// What `/init` prints last.
const RESULT_MARKER: &str = "SHOAL-VM-RESULT:";

type Failure = String;

fn main() -> ExitCode {
    let filters: Vec<String> = std::env::args().skip(1).collect();
    match run(&filters) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => {
            eprintln!("vm-test: the guest reported failure (exit status {code})");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("vm-test: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(filters: &[String]) -> Result<i32, Failure> {
    let started = Instant::now();
    if !nix::unistd::geteuid().is_root() {
        return Err("must run as root (it installs packages and the guest builds namespaces)".to_owned());
    }
    let cache = target_dir().join("shoal-vm");
    std::fs::create_dir_all(&cache).map_err(|e| format!("create {}: {e}", cache.display()))?;
    ensure_qemu()?;
    let kernel_root = kernel(&cache)?;
    let guest = build_guest()?;
    let initramfs = cache.join("initramfs-ipvs.gz");
    pack_initramfs(&kernel_root, &guest, filters, &initramfs)?;
    println!("vm-test: prepared in {:.1?}; booting", started.elapsed());
    let boot_started = Instant::now();
    let code = boot(&kernel_image(&kernel_root)?, &initramfs)?;
    println!("vm-test: VM ran {:.1?} (total {:.1?})", boot_started.elapsed(), started.elapsed());
    Ok(code)
}

/// `CARGO_TARGET_DIR`, or the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin", "/sbin"].map(PathBuf::from)).any(|d| d.join(name).is_file())
}

fn check(command: &mut Command, what: &str) -> Result<String, Failure> {
    let output = command.output().map_err(|e| format!("{what}: cannot run {command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what}: {command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// qemu comes from the prerequisite table of `cargo xtask` (`cargo xtask vm-test` installs it).
fn ensure_qemu() -> Result<(), Failure> {
    if on_path("qemu-system-x86_64") {
        return Ok(());
    }
    Err("qemu-system-x86_64 is not installed: run this through `cargo xtask vm-test`, which installs it, \
         or `apt-get install -y --no-install-recommends qemu-system-x86`"
        .to_owned())
}

/// The extracted kernel package (cached): `apt-get download` of the package
/// `linux-image-cloud-amd64` depends on, then `dpkg-deb -x`.
fn kernel(cache: &Path) -> Result<PathBuf, Failure> {
    let root = cache.join("kernel");
    if root.join("boot").is_dir() && root.join("lib/modules").is_dir() {
        return Ok(root);
    }
    let resolve = || check(Command::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]), "resolve kernel");
    // A fresh machine may have no package lists yet: fetch them once, then ask again.
    let depends = match resolve() {
        Ok(depends) => depends,
        Err(_) => {
            check(Command::new("apt-get").args(["update", "-qq"]), "update package lists")?;
            resolve()?
        }
    };
    let package = depends
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: ").filter(|p| p.starts_with("linux-image-")))
        .ok_or_else(|| format!("linux-image-cloud-amd64 depends on no linux-image package: {depends}"))?
        .to_owned();
    let downloads = cache.join("downloads");
    std::fs::create_dir_all(&downloads).map_err(|e| format!("create {}: {e}", downloads.display()))?;
    let existing = find_deb(&downloads, &package);
    let deb = match existing {
        Some(deb) => deb,
        None => {
            println!("vm-test: downloading {package}");
            check(Command::new("apt-get").args(["download", &package]).current_dir(&downloads), "download kernel")?;
            find_deb(&downloads, &package).ok_or_else(|| format!("apt-get download left no {package} .deb"))?
        }
    };
    let partial = cache.join("kernel.partial");
    let _ = std::fs::remove_dir_all(&partial);
    check(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial), "extract kernel")?;
    std::fs::rename(&partial, &root).map_err(|e| format!("rename {}: {e}", partial.display()))?;
    Ok(root)
}

fn find_deb(dir: &Path, package: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
    })
}

fn kernel_image(root: &Path) -> Result<PathBuf, Failure> {
    std::fs::read_dir(root.join("boot"))
        .map_err(|e| format!("read {}/boot: {e}", root.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
        .ok_or_else(|| format!("no vmlinuz in {}/boot", root.display()))
}

/// Builds the guest program and returns its path (from cargo's JSON messages).
fn build_guest() -> Result<PathBuf, Failure> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args(["build", "-p", "shoal-ipvs-lb", "--example", "vm_guest", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!("building the guest failed ({})", output.status));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == "vm_guest")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo built no vm_guest executable".to_owned())
}

/// Every module of the tree by name (`-` and `_` are the same in module names).
fn module_index(root: &Path) -> Result<BTreeMap<String, PathBuf>, Failure> {
    let mut index = BTreeMap::new();
    let mut stack = vec![root.join("lib/modules")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("read {}: {e}", dir.display()))?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".ko")) {
                index.insert(name.replace('-', "_"), path);
            }
        }
    }
    Ok(index)
}

/// The `depends=` field of a module's `.modinfo`.
fn module_depends(path: &Path) -> Result<Vec<String>, Failure> {
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let needle = b"depends=";
    let Some(start) = bytes.windows(needle.len()).position(|w| w == needle) else { return Ok(Vec::new()) };
    let rest = &bytes[start + needle.len()..];
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    Ok(String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect())
}

/// `wanted` and their dependencies, dependencies first.
fn module_closure(root: &Path, wanted: &[&str]) -> Result<Vec<(String, PathBuf)>, Failure> {
    let index = module_index(root)?;
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<(String, PathBuf)>,
    ) -> Result<(), Failure> {
        if !done.insert(name.to_owned()) {
            return Ok(());
        }
        let path = index.get(name).ok_or_else(|| format!("kernel module {name} is not in the package"))?;
        for dep in module_depends(path)? {
            visit(&dep, index, done, order)?;
        }
        order.push((name.to_owned(), path.clone()));
        Ok(())
    }
    for name in wanted {
        visit(name, &index, &mut done, &mut order)?;
    }
    Ok(order)
}

/// The shared libraries `ldd` lists for `binary` (the dynamic loader included).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, Failure> {
    let listed = check(Command::new("ldd").arg(binary), "list shared libraries")?;
    Ok(listed
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// A newc cpio archive being written.
struct Newc {
    out: Vec<u8>,
    inode: u32,
}

impl Newc {
    fn new() -> Self {
        Self { out: Vec::new(), inode: 1 }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        let name = name.trim_start_matches('/');
        let fields = [
            self.inode,
            mode,
            0,
            0,
            1,
            0,
            u32::try_from(data.len()).unwrap_or(u32::MAX),
            0,
            0,
            0,
            0,
            u32::try_from(name.len() + 1).unwrap_or(u32::MAX),
            0,
        ];
        self.inode += 1;
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        self.out.resize(self.out.len().next_multiple_of(4), 0);
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[]);
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | mode, data);
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120_777, target.as_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))
}

fn pack_initramfs(kernel_root: &Path, guest: &Path, filters: &[String], out: &Path) -> Result<(), Failure> {
    let modules = module_closure(kernel_root, MODULES)?;
    let ip = ["/usr/sbin/ip", "/sbin/ip", "/bin/ip"]
        .map(PathBuf::from)
        .into_iter()
        .find(|p| p.is_file())
        .ok_or("iproute2's ip is not installed (apt-get install iproute2)")?;
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        return Err("busybox-static is not installed (apt-get install busybox-static)".to_owned());
    }
    let mut archive = Newc::new();
    let mut dirs = BTreeSet::new();
    for dir in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "run", "var", "modules"] {
        dirs.insert(dir.to_owned());
    }
    let mut files: Vec<(String, u32, Vec<u8>)> = Vec::new();
    files.push(("bin/busybox".to_owned(), 0o755, read(busybox)?));
    files.push(("usr/sbin/ip".to_owned(), 0o755, read(&ip)?));
    files.push(("vm_guest".to_owned(), 0o755, read(guest)?));
    let mut libraries = BTreeSet::new();
    libraries.extend(shared_libraries(guest)?);
    libraries.extend(shared_libraries(&ip)?);
    for library in libraries {
        let name = library.to_string_lossy().trim_start_matches('/').to_owned();
        let mut parent = Path::new(&name).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
        // Through symlinks: the archive holds the real bytes at the path ldd printed.
        files.push((name, 0o755, read(&library)?));
    }
    let mut insmods = String::new();
    for (name, path) in &modules {
        files.push((format!("modules/{name}.ko"), 0o644, read(path)?));
        insmods.push_str(&format!("insmod /modules/{name}.ko || echo 'insmod {name} failed'\n"));
    }
    let quoted: Vec<String> = filters.iter().map(|f| format!("'{}'", f.replace('\'', ""))).collect();
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s\n\
         export PATH=/usr/sbin:/sbin:/usr/bin:/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mount -t tmpfs tmpfs /tmp\n\
         mount -t tmpfs tmpfs /run\n\
         {insmods}\
         ip link set lo up\n\
         echo 'vm-test: guest up, running the IPVS conformance suite'\n\
         RUST_BACKTRACE=1 /vm_guest {filters}\n\
         echo \"{RESULT_MARKER} $?\"\n\
         poweroff -f\n",
        filters = quoted.join(" ")
    );
    for dir in &dirs {
        archive.dir(dir);
    }
    archive.symlink("var/run", "/run");
    for (name, mode, data) in &files {
        archive.file(name, *mode, data);
    }
    archive.file("init", 0o755, init.as_bytes());
    let raw = archive.finish();
    let file = std::fs::File::create(out).map_err(|e| format!("create {}: {e}", out.display()))?;
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(&raw).and_then(|()| gz.finish().map(drop)).map_err(|e| format!("write {}: {e}", out.display()))?;
    println!(
        "vm-test: initramfs {} ({} modules: {})",
        out.display(),
        modules.len(),
        modules.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(" ")
    );
    Ok(())
}

/// Boots the VM, streams its console, and returns the guest's exit status.
fn boot(kernel: &Path, initramfs: &Path) -> Result<i32, Failure> {
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "256", "-smp", "2", "-nographic", "-no-reboot", "-kernel"])
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
    let stdout = qemu.stdout.take().ok_or("qemu has no stdout")?;
    let pid = qemu.id();
    // The watchdog kills a guest that hangs; it is harmless once qemu has exited (the PID is
    // only signalled while `done` is false).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog_done = done.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + GUEST_TIMEOUT;
        while Instant::now() < deadline {
            if watchdog_done.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if !watchdog_done.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!("vm-test: guest still running after {GUEST_TIMEOUT:?}; killing qemu");
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    });
    let mut result = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let line = line.trim_end_matches('\r');
        println!("  | {line}");
        if let Some(code) = line.strip_prefix(RESULT_MARKER) {
            result = code.trim().parse::<i32>().ok();
        }
    }
    let status = qemu.wait().map_err(|e| format!("wait for qemu: {e}"))?;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    result.ok_or_else(|| format!("the guest printed no result ({status}); see its console above"))
}

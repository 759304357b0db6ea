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
//! The VM pieces (kernel cache, module closure, newc writer, libraries) are shoal-testkit's
//! `vm` module, which also boots the VM clusters of `cargo xtask e2e --vm`.

// A command-line tool: it reports progress and the guest's console on standard output/error.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use shoal_testkit::vm::initramfs::{Newc, shared_libraries, write_gzip};
use shoal_testkit::vm::{self, Kernel};

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
    let cache = vm::cache_dir();
    std::fs::create_dir_all(&cache).map_err(|e| format!("create {}: {e}", cache.display()))?;
    ensure_qemu()?;
    let kernel = Kernel::fetch(&cache).map_err(|e| e.to_string())?;
    let guest = build_guest()?;
    let initramfs = cache.join("initramfs-ipvs.gz");
    pack_initramfs(&kernel, &guest, filters, &initramfs)?;
    println!("vm-test: prepared in {:.1?}; booting", started.elapsed());
    let boot_started = Instant::now();
    let code = boot(&kernel.vmlinuz(), &initramfs)?;
    println!("vm-test: VM ran {:.1?} (total {:.1?})", boot_started.elapsed(), started.elapsed());
    Ok(code)
}

fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin", "/sbin"].map(PathBuf::from)).any(|d| d.join(name).is_file())
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

fn read(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))
}

fn pack_initramfs(kernel: &Kernel, guest: &Path, filters: &[String], out: &Path) -> Result<(), Failure> {
    let modules = kernel.module_closure(MODULES).map_err(|e| e.to_string())?;
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
    libraries.extend(shared_libraries(guest).map_err(|e| e.to_string())?);
    libraries.extend(shared_libraries(&ip).map_err(|e| e.to_string())?);
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
    write_gzip(&archive.finish(), out).map_err(|e| e.to_string())?;
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

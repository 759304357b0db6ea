//! Prerequisites: one table of every tool and file that building, testing, the demo and the
//! benchmarks use from the machine. Each entry says what it provides, how its presence is probed,
//! what installs it and why it is needed; [`ensure`] probes the entries a task needs, installs
//! what is missing (apt, `cargo install` or `rustup component add`) and probes again, stopping
//! with the entry's name and package when one is still missing.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// How a prerequisite shows that it is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// An executable of this name in `PATH` or the sbin directories.
    Command(&'static str),
    /// A statically linked executable at this path (the test images copy it).
    StaticBinary(&'static str),
    /// A file at this path.
    File(&'static str),
    /// `cargo NAME --help` succeeds (a cargo subcommand or a rustup component; built-in ones too).
    Cargo(&'static str),
}

/// What installs a prerequisite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// A Debian package, with `apt-get install`.
    Apt(&'static str),
    /// A crate's binaries, with `cargo install --locked`.
    CargoInstall(&'static str),
    /// A toolchain component, with `rustup component add`.
    Rustup(&'static str),
}

impl Source {
    /// The command a person would run to install it.
    fn command(self) -> String {
        match self {
            Self::Apt(package) => format!("apt-get install -y --no-install-recommends {package}"),
            Self::CargoInstall(krate) => format!("cargo install --locked {krate}"),
            Self::Rustup(component) => format!("rustup component add {component}"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Apt(name) | Self::CargoInstall(name) | Self::Rustup(name) => name,
        }
    }
}

/// An xtask command that needs prerequisites. Every task also needs [`Task::Build`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Task {
    /// Compiling the workspace (build scripts of dependencies).
    Build,
    /// `cargo xtask test`: lints, the whole suite with the privileged and end-to-end tests, the VM suite.
    Test,
    /// `cargo xtask demo`.
    Demo,
    /// `cargo xtask e2e`.
    E2e,
    /// `cargo xtask e2e --vm`: the scenarios on qemu VMs.
    E2eVm,
    /// `cargo xtask vm-test`.
    VmTest,
    /// `cargo xtask bench NAME`.
    Bench(&'static str),
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Build => f.write_str("build"),
            Self::Test => f.write_str("test"),
            Self::Demo => f.write_str("demo"),
            Self::E2e => f.write_str("e2e"),
            Self::E2eVm => f.write_str("e2e --vm"),
            Self::VmTest => f.write_str("vm-test"),
            Self::Bench(name) => write!(f, "bench {name}"),
        }
    }
}

/// One prerequisite.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prereq {
    /// What it provides (a command, a file, a tool).
    pub(crate) provides: &'static str,
    pub(crate) probe: Probe,
    pub(crate) source: Source,
    pub(crate) why: &'static str,
    /// The tasks that need it (besides every task, when this holds [`Task::Build`]).
    pub(crate) needed_by: &'static [Task],
}

use Task::{Bench, Build, Demo, E2e, E2eVm, Test, VmTest};

/// Everything that runs Shoal's processes on containerd in network namespaces.
const CLUSTER: &[Task] = &[
    Test,
    Demo,
    E2e,
    E2eVm,
    Bench("vm"),
    Bench("converge"),
    Bench("runtime"),
    Bench("mesh"),
    Bench("update"),
    Bench("stack"),
];
/// Everything that builds network namespaces and links.
const NETNS: &[Task] = &[
    Test,
    Demo,
    E2e,
    E2eVm,
    Bench("vm"),
    VmTest,
    Bench("converge"),
    Bench("runtime"),
    Bench("dns"),
    Bench("overlay"),
    Bench("lb"),
    Bench("mesh"),
    Bench("update"),
    Bench("stack"),
];

/// Everything that builds the VM image of `e2e --vm`.
const VM_IMAGE: &[Task] = &[Test, E2eVm, Bench("vm")];

/// The table. Probing and installing both read it; nothing else installs anything.
pub(crate) const PREREQS: &[Prereq] = &[
    Prereq {
        provides: "cc",
        probe: Probe::Command("cc"),
        source: Source::Apt("gcc"),
        why: "C compiler for build scripts of dependencies (ring)",
        needed_by: &[Build],
    },
    Prereq {
        provides: "protoc",
        probe: Probe::Command("protoc"),
        source: Source::Apt("protobuf-compiler"),
        why: "containerd-client's build script compiles containerd's API with protoc (its .proto files, \
              well-known types included, are vendored; Shoal's own are compiled by protox, in Rust)",
        needed_by: &[Build],
    },
    Prereq {
        provides: "cargo fmt",
        probe: Probe::Cargo("fmt"),
        source: Source::Rustup("rustfmt"),
        why: "the formatting check",
        needed_by: &[Test],
    },
    Prereq {
        provides: "cargo clippy",
        probe: Probe::Cargo("clippy"),
        source: Source::Rustup("clippy"),
        why: "the lint check",
        needed_by: &[Test],
    },
    Prereq {
        provides: "cargo nextest",
        probe: Probe::Cargo("nextest"),
        source: Source::CargoInstall("cargo-nextest"),
        why: "runs the test suite (test groups, JUnit report for the summary)",
        needed_by: &[Test, E2e, E2eVm],
    },
    Prereq {
        provides: "cargo deny",
        probe: Probe::Cargo("deny"),
        source: Source::CargoInstall("cargo-deny"),
        why: "license, ban and source checks of the dependency tree",
        needed_by: &[Test],
    },
    Prereq {
        provides: "ip",
        probe: Probe::Command("ip"),
        source: Source::Apt("iproute2"),
        why: "network namespaces, veth, bridges and VXLAN of the harness",
        needed_by: NETNS,
    },
    Prereq {
        provides: "nsenter",
        probe: Probe::Command("nsenter"),
        source: Source::Apt("util-linux"),
        why: "runs the harness's node processes in their network namespace with the host's mounts",
        needed_by: NETNS,
    },
    Prereq {
        provides: "bridge",
        probe: Probe::Command("bridge"),
        source: Source::Apt("iproute2"),
        why: "FDB entries of the overlay tests",
        needed_by: NETNS,
    },
    Prereq {
        provides: "nft",
        probe: Probe::Command("nft"),
        source: Source::Apt("nftables"),
        why: "load balancing (ipvs-lb's nftables backend) and fault injection",
        needed_by: NETNS,
    },
    Prereq {
        provides: "containerd",
        probe: Probe::Command("containerd"),
        source: Source::Apt("containerd"),
        why: "runs the test containers (a private instance per test run)",
        needed_by: CLUSTER,
    },
    Prereq {
        provides: "ctr",
        probe: Probe::Command("ctr"),
        source: Source::Apt("containerd"),
        why: "pushes test images to the registry; the peer of the runtime and converge benchmarks",
        needed_by: CLUSTER,
    },
    Prereq {
        provides: "runc",
        probe: Probe::Command("runc"),
        source: Source::Apt("runc"),
        why: "containerd's OCI runtime",
        needed_by: CLUSTER,
    },
    Prereq {
        provides: "/bin/busybox (static)",
        probe: Probe::StaticBinary("/bin/busybox"),
        source: Source::Apt("busybox-static"),
        why: "the test images' userland, the VMs' initramfs and the VM image's userland",
        needed_by: &[
            Test,
            Demo,
            E2e,
            E2eVm,
            Bench("vm"),
            VmTest,
            Bench("converge"),
            Bench("runtime"),
            Bench("mesh"),
            Bench("update"),
            Bench("stack"),
        ],
    },
    Prereq {
        provides: "/usr/bin/tini-static",
        probe: Probe::StaticBinary("/usr/bin/tini-static"),
        source: Source::Apt("tini"),
        why: "the init a container with `init` runs as PID 1 (Docker's --init), bind-mounted at /sbin/docker-init; \
              the runtime's tests run containers under it",
        needed_by: &[Test, Demo, E2e],
    },
    Prereq {
        provides: "docker-registry",
        probe: Probe::Command("docker-registry"),
        source: Source::Apt("docker-registry"),
        why: "the local registry the nodes pull test images from",
        needed_by: &[
            Test,
            Demo,
            E2e,
            E2eVm,
            Bench("vm"),
            Bench("converge"),
            Bench("mesh"),
            Bench("update"),
            Bench("stack"),
        ],
    },
    Prereq {
        provides: "qemu-system-x86_64",
        probe: Probe::Command("qemu-system-x86_64"),
        source: Source::Apt("qemu-system-x86"),
        why: "boots Debian's cloud kernel for the IPVS suite and the VM cluster (this kernel has no IPVS)",
        needed_by: &[Test, VmTest, E2eVm, Bench("vm")],
    },
    Prereq {
        provides: "SeaBIOS (bios-256k.bin)",
        probe: Probe::File("/usr/share/seabios/bios-256k.bin"),
        source: Source::Apt("seabios"),
        why: "the firmware qemu loads before the kernel",
        needed_by: &[Test, VmTest, E2eVm, Bench("vm")],
    },
    Prereq {
        provides: "mkfs.ext4",
        probe: Probe::Command("mkfs.ext4"),
        source: Source::Apt("e2fsprogs"),
        why: "makes the VMs' root disk from a directory (mkfs.ext4 -d), without a loop mount",
        needed_by: VM_IMAGE,
    },
    Prereq {
        provides: "depmod",
        probe: Probe::Command("depmod"),
        source: Source::Apt("kmod"),
        why: "indexes the VM image's kernel modules (on-demand loads: nftables expressions, crypto); \
              kmod's modprobe is copied into the image",
        needed_by: VM_IMAGE,
    },
    Prereq {
        provides: "dropbear",
        probe: Probe::Command("dropbear"),
        source: Source::Apt("dropbear-bin"),
        why: "the VMs' SSH server, copied into the image (the package starts no service here)",
        needed_by: VM_IMAGE,
    },
    Prereq {
        provides: "dropbearkey",
        probe: Probe::Command("dropbearkey"),
        source: Source::Apt("dropbear-bin"),
        why: "makes the VMs' host key",
        needed_by: VM_IMAGE,
    },
    Prereq {
        provides: "ssh",
        probe: Probe::Command("ssh"),
        source: Source::Apt("openssh-client"),
        why: "drives the VMs and the machines of `e2e --hosts` (one shared connection per node)",
        needed_by: VM_IMAGE,
    },
    Prereq {
        provides: "ssh-keygen",
        probe: Probe::Command("ssh-keygen"),
        source: Source::Apt("openssh-client"),
        why: "makes the harness's login key for the VMs",
        needed_by: VM_IMAGE,
    },
    Prereq {
        provides: "dash",
        probe: Probe::Command("dash"),
        source: Source::Apt("dash"),
        why: "the VM image's /bin/sh (busybox's shell prefers its applets over the real ip and nft)",
        needed_by: VM_IMAGE,
    },
    Prereq {
        provides: "tcpdump",
        probe: Probe::Command("tcpdump"),
        source: Source::Apt("tcpdump"),
        why: "copied into the VM image, to look at the wire from inside a VM",
        needed_by: VM_IMAGE,
    },
    Prereq {
        provides: "chromium",
        probe: Probe::Command("chromium"),
        source: Source::Apt("chromium"),
        why: "the headless browser the dashboard's page is tested and measured in",
        needed_by: &[Test, Bench("dashboard")],
    },
    Prereq {
        provides: "chromedriver",
        probe: Probe::Command("chromedriver"),
        source: Source::Apt("chromium-driver"),
        why: "drives that browser (W3C WebDriver) in the dashboard's test and benchmark",
        needed_by: &[Test, Bench("dashboard")],
    },
    Prereq {
        provides: "etcd",
        probe: Probe::Command("etcd"),
        source: Source::Apt("etcd-server"),
        why: "the peer of the raft-store benchmark",
        needed_by: &[Bench("raft")],
    },
    Prereq {
        provides: "dnsperf",
        probe: Probe::Command("dnsperf"),
        source: Source::Apt("dnsperf"),
        why: "the load generator of the DNS benchmark",
        needed_by: &[Bench("dns")],
    },
    Prereq {
        provides: "unbound",
        probe: Probe::Command("unbound"),
        source: Source::Apt("unbound"),
        why: "the peer of the DNS benchmark",
        needed_by: &[Bench("dns")],
    },
    Prereq {
        provides: "iperf3",
        probe: Probe::Command("iperf3"),
        source: Source::Apt("iperf3"),
        why: "measures throughput over the overlay and over plain veth",
        needed_by: &[Bench("overlay"), Bench("mesh")],
    },
];

/// The entries `task` needs, in table order.
pub(crate) fn needed(task: Task) -> impl Iterator<Item = &'static Prereq> {
    PREREQS.iter().filter(move |p| p.needed_by.contains(&Build) || p.needed_by.contains(&task))
}

/// Whether the probe finds the prerequisite.
pub(crate) fn present(probe: Probe) -> bool {
    match probe {
        Probe::Command(name) => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(Into::into))
                .any(|dir| dir.join(name).is_file())
        }
        Probe::StaticBinary(path) => is_static_elf(Path::new(path)),
        Probe::File(path) => Path::new(path).is_file(),
        Probe::Cargo(subcommand) => Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
            .args([subcommand, "--help"])
            .output()
            .is_ok_and(|o| o.status.success()),
    }
}

/// An ELF file without a PT_INTERP program header is statically linked.
fn is_static_elf(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else { return false };
    let read = |at: usize, len: usize| -> Option<u64> {
        let slice = bytes.get(at..at + len)?;
        Some(slice.iter().rev().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    };
    // 64-bit little-endian ELF only; that is what Debian ships on the architectures we run.
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (read(0x20, 8), read(0x36, 2), read(0x38, 2)) else {
        return false;
    };
    (0..phnum).all(|i| {
        let Ok(at) = usize::try_from(phoff + i * phentsize) else { return false };
        read(at, 4).is_some_and(|p_type| p_type != 3)
    })
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Probes what `task` needs, installs what is missing and probes again. Prints what it did and how
/// long it took; returns that time. Fails naming every entry still missing and what installs it.
pub(crate) fn ensure(task: Task) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let missing: Vec<&Prereq> = needed(task).filter(|p| !present(p.probe)).collect();
    if missing.is_empty() {
        let names: Vec<&str> = needed(task).map(|p| p.provides).collect();
        println!("prerequisites of {task}: all present ({})", names.join(", "));
        return Ok(started.elapsed());
    }
    for prereq in &missing {
        println!("prerequisites of {task}: missing {} [{}]: {}", prereq.provides, prereq.source.name(), prereq.why);
    }
    install(task, &missing)?;
    let still: Vec<&Prereq> = needed(task).filter(|p| !present(p.probe)).collect();
    if !still.is_empty() {
        let lines: Vec<String> = still
            .iter()
            .map(|p| format!("  {} (probed as {:?}) from {}: {}", p.provides, p.probe, p.source.name(), p.why))
            .collect();
        bail!(
            "after installing, {task} still lacks:\n{}\n(the package installed but does not provide what the probe looks for: \
             check `dpkg -L PACKAGE`)",
            lines.join("\n")
        );
    }
    let took = started.elapsed();
    println!("prerequisites of {task}: installed in {:.1} s", took.as_secs_f64());
    Ok(took)
}

/// Installs the missing entries' sources, apt packages in one call.
fn install(task: Task, missing: &[&Prereq]) -> anyhow::Result<()> {
    let mut apt: Vec<&str> = Vec::new();
    let mut others: Vec<Source> = Vec::new();
    for prereq in missing {
        match prereq.source {
            Source::Apt(package) if !apt.contains(&package) => apt.push(package),
            Source::Apt(_) => {}
            other if !others.contains(&other) => others.push(other),
            _ => {}
        }
    }
    if !apt.is_empty() {
        let command = format!("apt-get update && apt-get install -y --no-install-recommends {}", apt.join(" "));
        let has_apt = Path::new("/usr/bin/apt-get").exists();
        if !is_root() || !has_apt {
            let reason = if has_apt { "not root" } else { "no apt-get: not Debian or Ubuntu" };
            bail!(
                "{task} needs {}; cannot install it here ({reason}); install it with:\n    sudo sh -c '{command}'",
                apt.join(", ")
            );
        }
        println!("prerequisites of {task}: apt-get install {}", apt.join(" "));
        let run = |args: &[&str]| -> anyhow::Result<()> {
            let status = Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .with_context(|| format!("cannot run apt-get {}", args.join(" ")))?;
            if !status.success() {
                bail!("`apt-get {}` failed ({status}); run `{command}` by hand to see why", args.join(" "));
            }
            Ok(())
        };
        run(&["update", "-qq"])?;
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(&apt);
        run(&args)?;
    }
    for source in others {
        let (program, args): (String, Vec<&str>) = match source {
            Source::CargoInstall(krate) => {
                (std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()), vec!["install", "--locked", krate])
            }
            Source::Rustup(component) => ("rustup".to_owned(), vec!["component", "add", component]),
            Source::Apt(_) => continue,
        };
        println!("prerequisites of {task}: {}", source.command());
        let status = Command::new(&program).args(&args).status().with_context(|| {
            format!("cannot run `{}` (needed by {task}); install {} by hand", source.command(), source.name())
        })?;
        if !status.success() {
            bail!("`{}` failed ({status}); {task} needs {}", source.command(), source.name());
        }
    }
    Ok(())
}

/// Runs `cargo ARGS…` and returns how long it took; fails naming the command.
pub(crate) fn timed_cargo(args: &[&str]) -> anyhow::Result<Duration> {
    timed_cargo_with(args, &[])
}

/// Like [`timed_cargo`], with `env` added to cargo's environment.
pub(crate) fn timed_cargo_with(args: &[&str], env: &[(&str, std::path::PathBuf)]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal 64-bit little-endian ELF file with one program header of type `p_type`.
    fn elf_with_program_header(p_type: u32) -> Vec<u8> {
        let mut bytes = vec![0u8; 64 + 56];
        bytes[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        bytes[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        bytes[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        bytes[64..68].copy_from_slice(&p_type.to_le_bytes());
        bytes
    }

    #[test]
    fn static_and_dynamic_binaries_are_told_apart() {
        let dir = std::env::temp_dir().join(format!("shoal-prereq-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (static_elf, dynamic_elf) = (dir.join("static"), dir.join("dynamic"));
        std::fs::write(&static_elf, elf_with_program_header(1)).expect("write"); // PT_LOAD
        std::fs::write(&dynamic_elf, elf_with_program_header(3)).expect("write"); // PT_INTERP
        let (is_static, is_dynamic) = (is_static_elf(&static_elf), is_static_elf(&dynamic_elf));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(is_static, "an ELF file without PT_INTERP is static");
        assert!(!is_dynamic, "an ELF file with PT_INTERP is dynamic");

        // The test binary itself is dynamically linked (it has an interpreter).
        let me = std::env::current_exe().expect("current exe");
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(Path::new("/nonexistent")));
        // Cargo.toml is not an ELF file at all.
        assert!(!is_static_elf(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))));
    }

    #[test]
    fn every_entry_has_a_probe_a_source_a_reason_and_a_user() {
        for prereq in PREREQS {
            let what = prereq.provides;
            let probed = match prereq.probe {
                Probe::Command(name) | Probe::Cargo(name) => !name.is_empty() && !name.contains('/'),
                Probe::StaticBinary(path) | Probe::File(path) => path.starts_with('/'),
            };
            assert!(probed, "{what}: the probe {:?} names nothing to look for", prereq.probe);
            let source = prereq.source.name();
            assert!(
                !source.is_empty() && source.chars().all(|c| c.is_ascii_alphanumeric() || "-.+".contains(c)),
                "{what}: {source:?} is not a package name"
            );
            assert!(!what.is_empty() && prereq.why.len() > 10, "{what}: say why it is needed");
            assert!(!prereq.needed_by.is_empty(), "{what}: no task needs it");
        }
        let mut seen = Vec::new();
        for prereq in PREREQS {
            assert!(!seen.contains(&prereq.probe), "{}: probed twice", prereq.provides);
            seen.push(prereq.probe);
        }
    }

    #[test]
    fn every_benchmark_named_in_the_table_exists_and_each_bench_resolves() {
        let names = crate::bench::names();
        for prereq in PREREQS {
            for task in prereq.needed_by {
                if let Bench(name) = task {
                    assert!(names.contains(name), "{}: no benchmark named {name}", prereq.provides);
                }
            }
        }
        // What the commands need: the build's entries always, and each tool where it is used.
        let provides = |task| needed(task).map(|p| p.provides).collect::<Vec<_>>();
        assert!(provides(Bench("scheduler")).contains(&"protoc"));
        assert!(provides(Bench("overlay")).contains(&"iperf3"));
        assert!(!provides(Bench("overlay")).contains(&"etcd"));
        assert!(provides(Bench("raft")).contains(&"etcd"));
        assert!(provides(Test).contains(&"docker-registry"));
        assert!(provides(Test).contains(&"cargo nextest"));
        assert!(provides(Demo).contains(&"containerd"));
        assert!(!provides(Demo).contains(&"cargo deny"));
    }

    #[test]
    fn probes_find_what_is_there_and_not_what_is_not() {
        assert!(present(Probe::File(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))));
        assert!(!present(Probe::File("/nonexistent/google/protobuf/timestamp.proto")));
        assert!(present(Probe::Command("sh")));
        assert!(!present(Probe::Command("shoal-no-such-command")));
        assert!(present(Probe::Cargo("metadata")), "cargo's own subcommand");
        assert!(!present(Probe::Cargo("shoal-no-such-subcommand")));
    }
}

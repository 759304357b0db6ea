//! Prerequisites of the test suite and the demo: Debian packages, installed with apt when missing.

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};

/// How a prerequisite shows that it is present.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// An executable in `PATH` or the sbin directories.
    Command(&'static str),
    /// A statically linked executable at this path (container images copy it).
    StaticBinary(&'static str),
}

/// One Debian package and how to see that it is installed.
#[derive(Debug, Clone, Copy)]
struct Prereq {
    package: &'static str,
    probe: Probe,
    why: &'static str,
}

const PREREQS: &[Prereq] = &[
    Prereq { package: "containerd", probe: Probe::Command("containerd"), why: "runs the test containers" },
    Prereq { package: "runc", probe: Probe::Command("runc"), why: "containerd's OCI runtime" },
    Prereq { package: "nftables", probe: Probe::Command("nft"), why: "load balancing and fault injection" },
    Prereq { package: "iproute2", probe: Probe::Command("ip"), why: "network namespaces of the harness" },
    Prereq { package: "busybox-static", probe: Probe::StaticBinary("/bin/busybox"), why: "the test images' userland" },
    Prereq { package: "docker-registry", probe: Probe::Command("docker-registry"), why: "the local test registry" },
    Prereq { package: "protobuf-compiler", probe: Probe::Command("protoc"), why: "builds the gRPC code" },
];

fn present(probe: Probe) -> bool {
    match probe {
        Probe::Command(name) => {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain(["/usr/sbin", "/sbin"].map(Into::into))
                .any(|dir| dir.join(name).is_file())
        }
        Probe::StaticBinary(path) => is_static_elf(Path::new(path)),
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

/// Installs what is missing (as root, with apt), or says exactly what to run and fails.
pub(crate) fn ensure() -> anyhow::Result<()> {
    let missing: Vec<&Prereq> = PREREQS.iter().filter(|p| !present(p.probe)).collect();
    if missing.is_empty() {
        println!("prerequisites: all present ({})", PREREQS.iter().map(|p| p.package).collect::<Vec<_>>().join(", "));
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|p| p.package).collect();
    for prereq in &missing {
        println!("prerequisites: missing {} ({})", prereq.package, prereq.why);
    }
    let command = format!("apt-get update && apt-get install -y --no-install-recommends {}", packages.join(" "));
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let has_apt = Path::new("/usr/bin/apt-get").exists();
    if !is_root || !has_apt {
        let reason = if has_apt { "not root" } else { "no apt-get: not Debian or Ubuntu" };
        bail!("cannot install prerequisites ({reason}); install them with:\n    sudo sh -c '{command}'");
    }
    println!("prerequisites: installing {}", packages.join(" "));
    let apt = |args: &[&str]| -> anyhow::Result<()> {
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
    apt(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&packages);
    apt(&install)?;
    let still: Vec<&str> = PREREQS.iter().filter(|p| !present(p.probe)).map(|p| p.package).collect();
    if !still.is_empty() {
        bail!("after installing, still missing: {} (check `dpkg -L` of each package)", still.join(", "));
    }
    Ok(())
}

/// Installs `cargo-deny` with `cargo install --locked` when it is not on the machine.
pub(crate) fn ensure_cargo_deny() -> anyhow::Result<()> {
    let found = Command::new("cargo").args(["deny", "--version"]).output().is_ok_and(|o| o.status.success());
    if found {
        return Ok(());
    }
    println!("prerequisites: installing cargo-deny (cargo install --locked cargo-deny)");
    let status = Command::new("cargo")
        .args(["install", "--locked", "cargo-deny"])
        .status()
        .context("cannot run cargo install")?;
    if !status.success() {
        bail!("`cargo install --locked cargo-deny` failed ({status})");
    }
    Ok(())
}

/// Installs Debian packages `(package, command, why)` whose command is missing (root and apt
/// only; otherwise says what to run).
pub(crate) fn ensure_packages(packages: &[(&str, &'static str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&(&str, &'static str, &str)> =
        packages.iter().filter(|(_, cmd, _)| !present(Probe::Command(cmd))).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|(p, ..)| *p).collect();
    let is_root = Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root || !Path::new("/usr/bin/apt-get").exists() {
        bail!("missing {}; install with: sudo apt-get install -y {}", names.join(", "), names.join(" "));
    }
    for (package, _, why) in &missing {
        println!("prerequisites: installing {package} ({why})");
    }
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&names);
    for args in [vec!["update", "-qq"], install] {
        let status = Command::new("apt-get").args(&args).env("DEBIAN_FRONTEND", "noninteractive").status()?;
        if !status.success() {
            bail!("`apt-get {}` failed ({status})", args.join(" "));
        }
    }
    Ok(())
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
}

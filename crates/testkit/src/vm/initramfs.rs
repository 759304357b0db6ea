//! Initial RAM file systems: a newc `cpio` writer (what the kernel unpacks), the shared libraries
//! an executable needs (from `ldd`), and the small boot initramfs of the cluster VMs, which loads
//! the virtio drivers and switches to the root disk.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd;
use crate::netns::HarnessError;
use crate::vm::kernel::Kernel;

/// The drivers the boot initramfs loads to see the root disk (`/dev/vda`).
const BOOT_MODULES: &[&str] = &["virtio_pci", "virtio_blk"];

/// A newc archive being written.
#[derive(Debug, Default)]
pub struct Newc {
    out: Vec<u8>,
    inode: u32,
}

impl Newc {
    /// An empty archive.
    pub fn new() -> Self {
        Self { out: Vec::new(), inode: 1 }
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        let name = name.trim_start_matches('/');
        let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let name_size = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor,
        // namesize, check.
        let fields = [self.inode, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, name_size, 0];
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

    /// A directory (its parents must come first).
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, &[]);
    }

    /// A regular file with permission bits `mode`.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | mode, data);
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120_777, target.as_bytes());
    }

    /// The archive, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.out
    }
}

/// Writes `raw` gzip'd to `out`.
pub fn write_gzip(raw: &[u8], out: &Path) -> Result<(), HarnessError> {
    let io = |source| HarnessError::Io { action: "write", path: out.to_owned(), source };
    let file = std::fs::File::create(out).map_err(io)?;
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    gz.write_all(raw).map_err(io)?;
    gz.finish().map(drop).map_err(io)
}

/// The shared libraries `ldd` lists for `binary` (the dynamic loader included), as the paths it
/// printed; a static executable has none. A library `ldd` cannot find is an error naming it.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, HarnessError> {
    shared_libraries_with(binary, &[])
}

/// Like [`shared_libraries`], also looking in `extra` (libraries extracted from packages that
/// are not installed on this host).
pub fn shared_libraries_with(binary: &Path, extra: &[PathBuf]) -> Result<Vec<PathBuf>, HarnessError> {
    let mut ldd = Command::new("ldd");
    ldd.arg(binary);
    if !extra.is_empty() {
        ldd.env("LD_LIBRARY_PATH", std::env::join_paths(extra).unwrap_or_default());
    }
    let listed = cmd::run(&mut ldd).or_else(|err| match &err {
        // ldd exits 1 on a static executable ("not a dynamic executable").
        cmd::CommandError::Failed { stderr, .. } if stderr.contains("not a dynamic executable") => Ok(String::new()),
        _ => Err(HarnessError::Command { action: format!("list the libraries of {}", binary.display()), source: err }),
    })?;
    let mut libraries = Vec::new();
    for line in listed.lines().map(str::trim) {
        if line.contains("not found") {
            return Err(HarnessError::Missing {
                what: format!("library {} of {}", line.split_whitespace().next().unwrap_or(line), binary.display()),
                hint: "install the package that provides it".into(),
            });
        }
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

/// The boot initramfs of the cluster VMs: busybox, the virtio drivers, and an `/init` that
/// mounts `/dev/vda` (ext4 is built into the kernel) and `switch_root`s into its `/sbin/init`.
pub fn boot_initramfs(kernel: &Kernel, busybox: &Path, out: &Path) -> Result<(), HarnessError> {
    let modules = kernel.module_closure(BOOT_MODULES)?;
    let mut archive = Newc::new();
    for dir in ["bin", "dev", "proc", "sys", "newroot", "modules"] {
        archive.dir(dir);
    }
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| HarnessError::Io { action: "read", path: path.to_owned(), source })
    };
    archive.file("bin/busybox", 0o755, &read(busybox)?);
    let mut insmods = String::new();
    for (name, path) in &modules {
        archive.file(&format!("modules/{name}.ko"), 0o644, &read(path)?);
        insmods.push_str(&format!("/bin/busybox insmod /modules/{name}.ko\n"));
    }
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox mount -t proc proc /proc\n\
         /bin/busybox mount -t devtmpfs devtmpfs /dev\n\
         {insmods}\
         n=0\n\
         while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do /bin/busybox sleep 0.1; n=$((n + 1)); done\n\
         if ! /bin/busybox mount -t ext4 /dev/vda /newroot; then\n\
         \x20   echo 'shoal-vm: cannot mount the root disk /dev/vda'; /bin/busybox poweroff -f\n\
         fi\n\
         /bin/busybox umount /proc /dev\n\
         exec /bin/busybox switch_root /newroot /sbin/init\n"
    );
    archive.file("init", 0o755, init.as_bytes());
    write_gzip(&archive.finish(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_entries_are_aligned_and_end_with_the_trailer() {
        let mut archive = Newc::new();
        archive.dir("bin");
        archive.file("bin/x", 0o755, b"hello");
        archive.symlink("sh", "/bin/x");
        let raw = archive.finish();
        assert_eq!(raw.len() % 4, 0);
        assert!(raw.starts_with(b"070701"));
        // Header: magic, 13 eight-digit hex fields; then the name; the mode of `bin` is a directory.
        assert_eq!(&raw[6 + 8..6 + 16], b"000041ed");
        let trailer = raw.windows(10).position(|w| w == b"TRAILER!!!").expect("trailer");
        assert!(raw.windows(5).position(|w| w == b"hello").is_some_and(|at| at < trailer));
    }
}

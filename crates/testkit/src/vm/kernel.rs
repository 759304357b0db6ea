//! Debian's cloud kernel for the VMs: fetched with `apt-get download`, extracted with `dpkg-deb
//! -x` (nothing is installed on this host), cached; and the closure of the modules a guest needs,
//! read from each module's `depends=`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd;
use crate::netns::{HarnessError, io_error};

/// The package whose dependency names the current cloud kernel.
const META_PACKAGE: &str = "linux-image-cloud-amd64";

/// An extracted kernel package: `boot/vmlinuz-VERSION` and `lib/modules/VERSION/`.
#[derive(Debug, Clone)]
pub struct Kernel {
    root: PathBuf,
    version: String,
}

fn command_error(action: &str) -> impl FnOnce(cmd::CommandError) -> HarnessError + '_ {
    move |source| HarnessError::Command { action: action.to_owned(), source }
}

impl Kernel {
    /// The kernel extracted under `cache/kernel`, fetched (into `cache/downloads`) and extracted
    /// the first time.
    pub fn fetch(cache: &Path) -> Result<Self, HarnessError> {
        let root = cache.join("kernel");
        if !root.join("lib/modules").is_dir() {
            let package = versioned_package()?;
            let downloads = cache.join("downloads");
            let deb = download(&downloads, &package)?;
            let partial = cache.join("kernel.partial");
            let _ = std::fs::remove_dir_all(&partial);
            cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))
                .map_err(command_error("extract the kernel package"))?;
            std::fs::rename(&partial, &root).map_err(io_error("rename", &partial))?;
        }
        Self::at(&root)
    }

    /// An already extracted package at `root`.
    pub fn at(root: &Path) -> Result<Self, HarnessError> {
        let modules = root.join("lib/modules");
        let version = std::fs::read_dir(&modules)
            .map_err(io_error("read", &modules))?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .next()
            .ok_or_else(|| HarnessError::Missing {
                what: format!("a module tree in {}", modules.display()),
                hint: format!("remove {} so that it is extracted again", root.display()),
            })?;
        Ok(Self { root: root.to_owned(), version })
    }

    /// The kernel release, e.g. `6.1.0-57-cloud-amd64`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The extracted tree.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The compressed kernel image qemu boots.
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join("boot").join(format!("vmlinuz-{}", self.version))
    }

    /// `lib/modules/VERSION` of the tree.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.version)
    }

    /// `wanted` and the modules they depend on, dependencies first (the order `insmod` needs).
    pub fn module_closure(&self, wanted: &[&str]) -> Result<Vec<(String, PathBuf)>, HarnessError> {
        let index = module_index(&self.modules_dir())?;
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for name in wanted {
            visit(&name.replace('-', "_"), &index, &mut done, &mut order)?;
        }
        Ok(order)
    }
}

fn visit(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    done: &mut BTreeSet<String>,
    order: &mut Vec<(String, PathBuf)>,
) -> Result<(), HarnessError> {
    if !done.insert(name.to_owned()) {
        return Ok(());
    }
    let path = index.get(name).ok_or_else(|| HarnessError::Missing {
        what: format!("kernel module {name}"),
        hint: format!("the {META_PACKAGE} package has no such module; check the name"),
    })?;
    let bytes = std::fs::read(path).map_err(io_error("read", path))?;
    for dep in module_depends(&bytes) {
        visit(&dep, index, done, order)?;
    }
    order.push((name.to_owned(), path.clone()));
    Ok(())
}

/// The name of the versioned kernel package (`linux-image-6.1.0-57-cloud-amd64`).
fn versioned_package() -> Result<String, HarnessError> {
    let resolve = || {
        cmd::run(Command::new("apt-cache").args(["depends", META_PACKAGE]))
            .map_err(command_error("resolve the kernel package"))
    };
    // A fresh machine may have no package lists yet: fetch them once, then ask again.
    let depends = match resolve() {
        Ok(depends) => depends,
        Err(_) => {
            cmd::run(Command::new("apt-get").args(["update", "-qq"])).map_err(command_error("update package lists"))?;
            resolve()?
        }
    };
    depends
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: ").filter(|p| p.starts_with("linux-image-")))
        .map(str::to_owned)
        .ok_or_else(|| HarnessError::Missing {
            what: format!("the kernel package {META_PACKAGE} depends on"),
            hint: format!("apt-cache depends {META_PACKAGE} printed: {}", depends.trim()),
        })
}

/// The `.deb` of `package` in `dir`, downloaded when it is not there yet.
pub(crate) fn download(dir: &Path, package: &str) -> Result<PathBuf, HarnessError> {
    if let Some(deb) = find_deb(dir, package) {
        return Ok(deb);
    }
    std::fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
    cmd::run(Command::new("apt-get").args(["download", "-q", package]).current_dir(dir))
        .map_err(command_error(&format!("download {package}")))?;
    find_deb(dir, package).ok_or_else(|| HarnessError::Missing {
        what: format!("{package}'s .deb in {}", dir.display()),
        hint: "apt-get download succeeded but left no file of that name".into(),
    })
}

fn find_deb(dir: &Path, package: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
    })
}

/// Every module under `dir` by name (`-` and `_` are the same in module names).
fn module_index(dir: &Path) -> Result<BTreeMap<String, PathBuf>, HarnessError> {
    let mut index = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io_error("read", &dir))?.flatten() {
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

/// The `depends=` field of a module's `.modinfo` section.
fn module_depends(module: &[u8]) -> Vec<String> {
    let needle = b"depends=";
    let Some(start) = module.windows(needle.len()).position(|w| w == needle) else { return Vec::new() };
    let rest = &module[start + needle.len()..];
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end]).split(',').filter(|d| !d.is_empty()).map(|d| d.replace('-', "_")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_are_read_from_modinfo() {
        let module = b"\x7fELF\0license=GPL\0depends=virtio,virtio-ring\0intree=Y\0";
        assert_eq!(module_depends(module), ["virtio", "virtio_ring"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert!(module_depends(b"no modinfo at all").is_empty());
    }

    #[test]
    fn the_closure_puts_dependencies_first_once() {
        let dir = std::env::temp_dir().join(format!("shoaltest-unit-kernel-{}", std::process::id()));
        let modules = dir.join("lib/modules/6.1.0-test/kernel");
        std::fs::create_dir_all(modules.join("drivers")).expect("dirs");
        std::fs::write(modules.join("virtio_ring.ko"), b"depends=\0").expect("write");
        std::fs::write(modules.join("virtio.ko"), b"depends=virtio_ring\0").expect("write");
        std::fs::write(modules.join("drivers/virtio_blk.ko"), b"depends=virtio,virtio_ring\0").expect("write");
        let kernel = Kernel::at(&dir).expect("kernel");
        assert_eq!(kernel.version(), "6.1.0-test");
        let names: Vec<String> =
            kernel.module_closure(&["virtio_blk", "virtio"]).expect("closure").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["virtio_ring", "virtio", "virtio_blk"]);
        let err = kernel.module_closure(&["nope"]).expect_err("missing");
        assert!(err.to_string().contains("kernel module nope"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

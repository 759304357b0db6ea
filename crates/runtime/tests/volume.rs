//! The local volume driver's mounts (privileged): a tmpfs-typed volume really is a tmpfs, is
//! mounted again when found unmounted (a node after a reboot), and is unmounted by `remove`; an
//! NFS-typed volume makes the `mount(2)` call and says why the kernel refused it.

// Tests narrate their steps on stderr, which nextest shows when one fails.
#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::mount::MntFlags;
use shoal_runtime::{LocalVolumes, VolumeError};
use shoal_testkit::privileged::{self, Need};

fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// A volume root for one test, unmounted and removed on drop even when the test fails.
struct Root(PathBuf);

impl Root {
    fn new(test: &str) -> Self {
        let path = std::env::temp_dir().join(format!("shoaltest-volume-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("volume root");
        Self(path)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        for mount in mounts_under(&self.0) {
            let _ = nix::mount::umount2(&mount, MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Mount points at or under `dir`, with their filesystem type and super options.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mount_lines(dir).into_iter().map(|(point, _)| point).collect()
}

fn mount_lines(dir: &Path) -> Vec<(PathBuf, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    text.lines()
        .filter_map(|line| {
            let point = PathBuf::from(line.split(' ').nth(4)?);
            let (_, after) = line.split_once(" - ")?;
            point.starts_with(dir).then(|| (point, after.to_owned()))
        })
        .collect()
}

#[test]
fn a_tmpfs_volume_is_mounted_remounted_and_unmounted() {
    if !privileged::require("volume a_tmpfs_volume_is_mounted_remounted_and_unmounted", &[Need::Root]) {
        return;
    }
    let root = Root::new("tmpfs");
    let volumes = LocalVolumes::new(root.0.clone());
    let opts = options(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=1m,mode=0750,nosuid")]);

    eprintln!("--- ensure mounts a tmpfs of 1 MiB on _data");
    let volume = volumes.ensure("scratch", &opts, &BTreeMap::new()).expect("ensure");
    let data = std::fs::canonicalize(&volume.mountpoint).expect("mountpoint");
    let mounted = mount_lines(&root.0);
    assert_eq!(mounted.len(), 1, "{mounted:?}");
    let (point, rest) = &mounted[0];
    assert_eq!(point, &data);
    assert!(rest.starts_with("tmpfs tmpfs ") && rest.contains("size=1024k") && rest.contains("mode=750"), "{rest}");
    std::fs::write(data.join("file"), "in memory\n").expect("write into the tmpfs");

    eprintln!("--- ensure again: already mounted, not mounted twice");
    assert_eq!(volumes.ensure("scratch", &BTreeMap::new(), &BTreeMap::new()).expect("again"), volume);
    assert_eq!(mounts_under(&root.0).len(), 1);

    eprintln!("--- unmounted behind its back (a reboot): the next ensure mounts it again");
    nix::mount::umount2(&data, MntFlags::empty()).expect("umount");
    assert!(mounts_under(&root.0).is_empty());
    volumes.ensure("scratch", &opts, &BTreeMap::new()).expect("ensure after reboot");
    assert_eq!(mounts_under(&root.0), std::slice::from_ref(&data));
    assert!(!data.join("file").exists(), "a fresh tmpfs");

    eprintln!("--- a volume whose mount fails is not left behind");
    let bad = options(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=lots")]);
    let err = volumes.ensure("bad-size", &bad, &BTreeMap::new()).expect_err("tmpfs refuses the size");
    assert!(err.to_string().starts_with("volume bad-size: mount of type tmpfs from tmpfs on "), "{err}");
    assert!(err.to_string().contains("EINVAL"), "{err}");
    assert!(!root.0.join("bad-size").exists());

    eprintln!("--- remove unmounts, then deletes");
    volumes.remove("scratch").expect("remove");
    assert!(mounts_under(&root.0).is_empty());
    assert!(!root.0.join("scratch").exists());
    assert!(matches!(volumes.get("scratch"), Err(VolumeError::NotFound { .. })));
}

#[test]
fn an_nfs_volume_says_why_the_kernel_refused_it() {
    if !privileged::require("volume an_nfs_volume_says_why_the_kernel_refused_it", &[Need::Root]) {
        return;
    }
    // With NFS in the kernel the call would try to reach 192.0.2.10 (a documentation address,
    // nothing answers) and hang in the kernel; this test is about a kernel without it.
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let modules = Path::new("/lib/modules").join(release.trim());
    if filesystems.lines().any(|l| l.ends_with("\tnfs") || l.ends_with("\tnfs4"))
        || modules.join("kernel/fs/nfs").exists()
    {
        privileged::skip("volume an_nfs_volume_says_why_the_kernel_refused_it: skipped: this kernel has NFS");
        return;
    }
    let root = Root::new("nfs");
    let volumes = LocalVolumes::new(root.0.clone());
    let opts = options(&[("type", "nfs"), ("device", ":/export"), ("o", "addr=192.0.2.10,nfsvers=4")]);
    let err = volumes.ensure("shared-data", &opts, &BTreeMap::new()).expect_err("no nfs in this kernel");
    let target = root.0.join("shared-data/_data");
    assert!(matches!(err, VolumeError::Mount { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "volume shared-data: mount of type nfs from :/export on {} failed: ENODEV: No such device: the kernel \
             has no nfs filesystem (load its module, or use a kernel that has it)",
            target.display()
        )
    );
    assert!(!root.0.join("shared-data").exists(), "nothing left behind");
    assert!(mounts_under(&root.0).is_empty());
}

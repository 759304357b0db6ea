//! Reading an image's root filesystem without trusting the image: a path resolves inside the
//! rootfs (`openat2` with `RESOLVE_IN_ROOT`, so symbolic links, absolute or through `..`, cannot
//! leave it, and magic links of `/proc` are refused). [`read_file`] reads only a regular file (a
//! FIFO would block, a device could be endless) and only so much of it; [`copy_into_volume`]
//! copies a directory of the image into a new volume, walking by file descriptor and never
//! following a link of the image.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::io::Read as _;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, Flock, FlockArg, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstat, fstatat, futimens, mkdirat,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat, linkat, mkfifoat, symlinkat};

/// The most a user database file (`/etc/passwd`, `/etc/group`) may hold: far more than any real
/// image's, and little enough to read into memory.
pub(crate) const USER_FILE_LIMIT: u64 = 1 << 20;

/// Reads `path` (absolute inside the image, e.g. `/etc/passwd`) under `root`, at most `limit`
/// bytes. `Ok(None)` when the image has no such file; an error, in words for a task's status, when
/// it is not a regular file, is larger than `limit`, or cannot be opened.
pub(crate) fn read_file(root: &Path, path: &str, limit: u64) -> Result<Option<String>, String> {
    let dir = nix::fcntl::open(root, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("cannot open the image's root filesystem at {}: {e}", root.display()))?;
    // Non-blocking, so that opening a FIFO returns at once (it is refused below).
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let relative = path.trim_start_matches('/');
    let file = match openat2(&dir, relative, how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(format!("the image's {path} cannot be opened: {e}")),
    };
    let stat = fstat(&file).map_err(|e| format!("the image's {path} cannot be examined: {e}"))?;
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFREG {
        let what = match kind {
            SFlag::S_IFIFO => "a FIFO",
            SFlag::S_IFCHR => "a character device",
            SFlag::S_IFBLK => "a block device",
            SFlag::S_IFSOCK => "a socket",
            SFlag::S_IFDIR => "a directory",
            _ => "not a file",
        };
        return Err(format!("the image's {path} is {what}, not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::from(file)
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| format!("the image's {path} cannot be read: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("the image's {path} is larger than {limit} bytes"));
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// What [`copy_into_volume`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Copied {
    /// The volume was empty and the image had a directory there: this many entries were copied.
    Entries(u64),
    /// The volume has content already: it is left as it is.
    VolumeNotEmpty,
    /// The image has no directory at the path: nothing to copy.
    NothingInImage,
}

/// Copies the image's directory `path` (absolute inside the image, resolved inside `root`) into
/// the directory `volume` when `volume` is empty, as Docker fills a new named volume: regular
/// files, directories, symbolic links (as links) and FIFOs, with their owners, modes (set-ID bits
/// included) and times, and hard links kept as links; device nodes and sockets are left out. The
/// volume's own directory takes the owner and mode of the image's. An exclusive lock on the
/// volume's directory makes a second container created from the same fresh volume wait and then
/// find it filled. Errors are in words, naming the entry.
pub(crate) fn copy_into_volume(root: &Path, path: &str, volume: &Path) -> Result<Copied, String> {
    let dest = nix::fcntl::open(volume, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("the volume's directory cannot be opened: {e}"))?;
    let dest = Flock::lock(dest, FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("the volume's directory cannot be locked: {e}"))?;
    let mut listing = std::fs::read_dir(volume).map_err(|e| format!("the volume's directory cannot be listed: {e}"))?;
    if listing.next().is_some() {
        return Ok(Copied::VolumeNotEmpty);
    }
    let root_fd = nix::fcntl::open(root, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| format!("cannot open the image's root filesystem at {}: {e}", root.display()))?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let relative = match path.trim_start_matches('/') {
        "" => ".",
        relative => relative,
    };
    let source = match openat2(&root_fd, relative, how) {
        Ok(fd) => fd,
        // Nothing there, or not a directory: Docker copies only a directory's content.
        Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(Copied::NothingInImage),
        Err(e) => return Err(format!("the image's {path} cannot be opened: {e}")),
    };
    let mut copy = Copy { dest_root: dest.as_fd(), links: HashMap::new(), entries: 0 };
    let dest_dir = nix::unistd::dup(&*dest).map_err(|e| format!("the volume's directory: {e}"))?;
    copy.directory(source, dest_dir, path, Path::new(""))?;
    Ok(Copied::Entries(copy.entries))
}

/// A copy in progress.
struct Copy<'a> {
    /// The volume's directory, for hard links (by path relative to it).
    dest_root: BorrowedFd<'a>,
    /// Files with more than one link copied so far: (device, inode) → path in the volume.
    links: HashMap<(u64, u64), PathBuf>,
    entries: u64,
}

impl Copy<'_> {
    /// Copies the content of the directory `source` (the image's `shown`) into `dest`, whose
    /// path in the volume is `relative`, then gives `dest` the owner, mode and times of `source`.
    fn directory(&mut self, source: OwnedFd, dest: OwnedFd, shown: &str, relative: &Path) -> Result<(), String> {
        let fail = |what: &str, e: Errno| format!("{shown}: cannot {what}: {e}");
        let stat = fstat(&source).map_err(|e| fail("examine it", e))?;
        let mut dir = Dir::from_fd(source).map_err(|e| fail("list it", e))?;
        let mut names: Vec<CString> = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|e| fail("list it", e))?;
            let name = entry.file_name();
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                names.push(name.to_owned());
            }
        }
        for name in &names {
            let child = format!("{}/{}", shown.trim_end_matches('/'), name.to_string_lossy());
            self.entry(&dir, &dest, name, &child, &relative.join(OsStr::from_bytes(name.to_bytes())))?;
        }
        fchown(&dest, Some(Uid::from_raw(stat.st_uid)), Some(Gid::from_raw(stat.st_gid)))
            .map_err(|e| fail("set the owner of its copy", e))?;
        fchmod(&dest, mode_of(&stat)).map_err(|e| fail("set the mode of its copy", e))?;
        let (atime, mtime) = times(&stat);
        futimens(&dest, &atime, &mtime).map_err(|e| fail("set the times of its copy", e))?;
        Ok(())
    }

    /// Copies the entry `name` of the directory `source` into `dest`.
    fn entry(&mut self, source: &Dir, dest: &OwnedFd, name: &CStr, shown: &str, relative: &Path) -> Result<(), String> {
        let fail = |what: &str, e: Errno| format!("{shown}: cannot {what}: {e}");
        let stat = fstatat(source, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| fail("examine it", e))?;
        let owner = (Some(Uid::from_raw(stat.st_uid)), Some(Gid::from_raw(stat.st_gid)));
        let (atime, mtime) = times(&stat);
        let nofollow = OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => {
                let from = openat(source, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | nofollow, Mode::empty())
                    .map_err(|e| fail("open it", e))?;
                mkdirat(dest, name, Mode::S_IRWXU).map_err(|e| fail("create its copy", e))?;
                let to = openat(dest, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY | nofollow, Mode::empty())
                    .map_err(|e| fail("open its copy", e))?;
                self.directory(from, to, shown, relative)?;
            }
            SFlag::S_IFREG => {
                let key = (stat.st_dev, stat.st_ino);
                if stat.st_nlink > 1
                    && let Some(first) = self.links.get(&key)
                {
                    self.link(first, dest, name).map_err(|e| fail("link its copy", e))?;
                    self.entries += 1;
                    return Ok(());
                }
                let from =
                    openat(source, name, OFlag::O_RDONLY | nofollow, Mode::empty()).map_err(|e| fail("open it", e))?;
                let to = openat(
                    dest,
                    name,
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | nofollow,
                    Mode::S_IRUSR | Mode::S_IWUSR,
                )
                .map_err(|e| fail("create its copy", e))?;
                let (mut from, mut to) = (std::fs::File::from(from), std::fs::File::from(to));
                std::io::copy(&mut from, &mut to).map_err(|e| format!("{shown}: cannot copy it: {e}"))?;
                // The owner first: changing it clears the set-ID bits the mode then restores.
                fchown(&to, owner.0, owner.1).map_err(|e| fail("set the owner of its copy", e))?;
                fchmod(&to, mode_of(&stat)).map_err(|e| fail("set the mode of its copy", e))?;
                futimens(&to, &atime, &mtime).map_err(|e| fail("set the times of its copy", e))?;
                if stat.st_nlink > 1 {
                    self.links.insert(key, relative.to_owned());
                }
            }
            SFlag::S_IFLNK => {
                let target = readlinkat(source, name).map_err(|e| fail("read the link", e))?;
                symlinkat(target.as_os_str(), dest, name).map_err(|e| fail("create its copy", e))?;
                fchownat(dest, name, owner.0, owner.1, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| fail("set the owner of its copy", e))?;
                utimensat(dest, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
                    .map_err(|e| fail("set the times of its copy", e))?;
            }
            SFlag::S_IFIFO => {
                mkfifoat(dest, name, Mode::S_IRUSR | Mode::S_IWUSR).map_err(|e| fail("create its copy", e))?;
                fchownat(dest, name, owner.0, owner.1, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(|e| fail("set the owner of its copy", e))?;
                fchmodat(dest, name, mode_of(&stat), FchmodatFlags::FollowSymlink)
                    .map_err(|e| fail("set the mode of its copy", e))?;
                utimensat(dest, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
                    .map_err(|e| fail("set the times of its copy", e))?;
            }
            // Device nodes and sockets are not content a volume should carry out of an image.
            _ => {
                tracing::debug!(path = shown, "not copying a device node or socket into a volume");
                return Ok(());
            }
        }
        self.entries += 1;
        Ok(())
    }
}

impl Copy<'_> {
    /// Links `name` in `dest` to the copy at `first` (relative to the volume's directory). The
    /// path is resolved without following links, so that whoever else writes into the volume
    /// meanwhile cannot make it reach outside.
    fn link(&self, first: &Path, dest: &OwnedFd, name: &CStr) -> Result<(), Errno> {
        let parent = first.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let file = first.file_name().ok_or(Errno::EINVAL)?;
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let parent = openat2(self.dest_root, parent, how)?;
        // Without AT_SYMLINK_FOLLOW a link in the last component is linked, not followed.
        linkat(&parent, file, dest, name, AtFlags::empty())
    }
}

/// Permission bits with set-user-ID, set-group-ID and sticky.
fn mode_of(stat: &FileStat) -> Mode {
    Mode::from_bits_truncate(stat.st_mode & 0o7777)
}

fn times(stat: &FileStat) -> (TimeSpec, TimeSpec) {
    (TimeSpec::new(stat.st_atime, stat.st_atime_nsec), TimeSpec::new(stat.st_mtime, stat.st_mtime_nsec))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A temporary directory standing for a rootfs, with a file outside it standing for the host's.
    struct Fixture {
        base: std::path::PathBuf,
    }

    impl Fixture {
        fn new(name: &str) -> Self {
            let base = std::env::temp_dir().join(format!("shoaltest-rootfs-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            std::fs::create_dir_all(base.join("root/etc")).expect("create rootfs");
            std::fs::write(base.join("host-passwd"), "hostuser:x:4242:4242::/:/bin/sh\n").expect("host file");
            Self { base }
        }

        fn root(&self) -> std::path::PathBuf {
            self.base.join("root")
        }

        fn read(&self) -> Result<Option<String>, String> {
            read_file(&self.root(), "/etc/passwd", 64)
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    /// A fresh, empty volume directory beside the fixture's root.
    fn empty_volume(f: &Fixture, name: &str) -> std::path::PathBuf {
        let volume = f.base.join(name);
        std::fs::create_dir_all(&volume).expect("volume dir");
        volume
    }

    #[test]
    fn a_new_volume_gets_the_images_directory_with_links_owners_modes_and_times() {
        use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
        let f = Fixture::new("copy");
        let data = f.root().join("srv/data");
        std::fs::create_dir_all(data.join("sub/deeper")).expect("dirs");
        std::fs::write(data.join("config"), "port=80\n").expect("file");
        std::fs::write(data.join("sub/deeper/leaf"), "leaf\n").expect("file");
        std::fs::write(data.join("tool"), "#!/bin/sh\n").expect("file");
        std::fs::hard_link(data.join("config"), data.join("config.link")).expect("hard link");
        symlink("/etc/passwd", data.join("abs-link")).expect("symlink");
        symlink("../../../../../outside", data.join("sub/climbing-link")).expect("symlink");
        nix::unistd::mkfifo(&data.join("pipe"), Mode::from_bits_truncate(0o640)).expect("fifo");
        let set_mode = |p: &str, mode: u32| {
            std::fs::set_permissions(data.join(p), std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        // Ownership other than ours needs root; the modes and times do not.
        let root = nix::unistd::geteuid().is_root();
        if root {
            for (p, uid, gid) in [("", 1000, 1000), ("config", 1000, 50), ("sub", 33, 33), ("tool", 0, 0)] {
                std::os::unix::fs::lchown(data.join(p), Some(uid), Some(gid)).expect("chown");
            }
            std::os::unix::fs::lchown(data.join("abs-link"), Some(7), Some(8)).expect("lchown");
        }
        set_mode("", 0o750);
        set_mode("sub", 0o2775);
        set_mode("config", 0o640);
        set_mode("tool", 0o4755);
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        std::fs::File::open(data.join("sub/deeper/leaf")).and_then(|file| file.set_modified(old)).expect("mtime");

        let volume = empty_volume(&f, "volume");
        let copied = copy_into_volume(&f.root(), "/srv/data", &volume).expect("copy");
        // sub, sub/deeper, sub/deeper/leaf, config, config.link, tool, abs-link, sub/climbing-link, pipe
        assert_eq!(copied, Copied::Entries(9));

        let meta = |p: &str| std::fs::symlink_metadata(volume.join(p)).expect(p);
        assert_eq!(std::fs::read_to_string(volume.join("config")).ok().as_deref(), Some("port=80\n"));
        assert_eq!(std::fs::read_to_string(volume.join("sub/deeper/leaf")).ok().as_deref(), Some("leaf\n"));
        assert_eq!(meta("config").ino(), meta("config.link").ino(), "a hard link stays one file");
        assert_eq!(
            std::fs::read_link(volume.join("abs-link")).ok(),
            Some("/etc/passwd".into()),
            "links are copied as links"
        );
        assert_eq!(std::fs::read_link(volume.join("sub/climbing-link")).ok(), Some("../../../../../outside".into()));
        assert!(meta("pipe").file_type().is_fifo());
        let mode = |p: &str| meta(p).mode() & 0o7777;
        assert_eq!(
            (mode(""), mode("sub"), mode("config"), mode("tool"), mode("pipe")),
            (0o750, 0o2775, 0o640, 0o4755, 0o640)
        );
        assert_eq!(meta("sub/deeper/leaf").modified().ok(), Some(old));
        if root {
            let owner = |p: &str| (meta(p).uid(), meta(p).gid());
            assert_eq!(owner(""), (1000, 1000), "the volume takes the owner of the image's directory");
            assert_eq!(
                (owner("config"), owner("sub"), owner("tool"), owner("abs-link")),
                ((1000, 50), (33, 33), (0, 0), (7, 8))
            );
            assert_eq!(mode("tool"), 0o4755, "set-user-ID survives the change of owner");
        }

        // Filled now: a second container's copy leaves it as it is.
        std::fs::write(volume.join("config"), "port=8080\n").expect("change");
        assert_eq!(copy_into_volume(&f.root(), "/srv/data", &volume), Ok(Copied::VolumeNotEmpty));
        assert_eq!(std::fs::read_to_string(volume.join("config")).ok().as_deref(), Some("port=8080\n"));
    }

    #[test]
    fn nothing_is_copied_from_what_is_not_a_directory_of_the_image() {
        let f = Fixture::new("copy-none");
        std::fs::write(f.root().join("etc/file"), "x").expect("file");
        std::fs::create_dir_all(f.base.join("host-dir")).expect("host dir");
        std::fs::write(f.base.join("host-dir/secret"), "host").expect("host file");
        // A link out of the image resolves inside it, where there is nothing.
        symlink(f.base.join("host-dir"), f.root().join("escape")).expect("symlink");
        symlink("../../../../../../../../host-dir", f.root().join("climb")).expect("symlink");
        std::fs::create_dir_all(f.root().join("real")).expect("dir");
        std::fs::write(f.root().join("real/inside"), "image").expect("file");
        symlink("/real", f.root().join("inner-link")).expect("symlink");
        for target in ["/missing", "/etc/file", "/escape", "/climb"] {
            let volume = empty_volume(&f, &format!("v{}", target.replace('/', "-")));
            assert_eq!(copy_into_volume(&f.root(), target, &volume), Ok(Copied::NothingInImage), "{target}");
            assert_eq!(std::fs::read_dir(&volume).expect("list").count(), 0, "{target}: the volume stays empty");
        }
        // A link to a directory inside the image is followed inside it.
        let volume = empty_volume(&f, "v-inner");
        assert_eq!(copy_into_volume(&f.root(), "/inner-link", &volume), Ok(Copied::Entries(1)));
        assert_eq!(std::fs::read_to_string(volume.join("inside")).ok().as_deref(), Some("image"));
        let err = copy_into_volume(&f.root(), "/real", &f.base.join("no-such-volume")).expect_err("no volume");
        assert!(err.starts_with("the volume's directory cannot be opened: ENOENT"), "{err}");
    }

    #[test]
    fn a_regular_file_is_read_and_a_missing_one_is_none() {
        let f = Fixture::new("regular");
        assert_eq!(f.read(), Ok(None));
        std::fs::write(f.root().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").expect("write");
        assert_eq!(f.read(), Ok(Some("root:x:0:0::/root:/bin/sh\n".to_owned())));
        // A link inside the image is followed inside it.
        std::fs::rename(f.root().join("etc/passwd"), f.root().join("etc/passwd.real")).expect("rename");
        symlink("/etc/passwd.real", f.root().join("etc/passwd")).expect("symlink");
        assert_eq!(f.read(), Ok(Some("root:x:0:0::/root:/bin/sh\n".to_owned())));
    }

    #[test]
    fn links_out_of_the_rootfs_resolve_inside_it() {
        let f = Fixture::new("escape");
        let host_file = f.base.join("host-passwd");
        // An absolute link to a host file, and a relative one climbing out with `..`.
        for target in [host_file.to_string_lossy().into_owned(), "../../../../../../../host-passwd".to_owned()] {
            let _ = std::fs::remove_file(f.root().join("etc/passwd"));
            symlink(&target, f.root().join("etc/passwd")).expect("symlink");
            assert_eq!(f.read(), Ok(None), "{target} must not reach the host's file");
        }
        // Inside the root, `/host-passwd` is the image's own file.
        std::fs::write(f.root().join("host-passwd"), "imageuser:x:7:7::/:/bin/sh\n").expect("write");
        assert_eq!(f.read(), Ok(Some("imageuser:x:7:7::/:/bin/sh\n".to_owned())));
        // `/dev/zero` of the host is never reached either.
        let _ = std::fs::remove_file(f.root().join("etc/passwd"));
        symlink("/dev/zero", f.root().join("etc/passwd")).expect("symlink");
        assert_eq!(f.read(), Ok(None));
        // A magic link is refused outright.
        let _ = std::fs::remove_file(f.root().join("etc/passwd"));
        std::fs::create_dir_all(f.root().join("proc")).expect("proc");
        symlink("/proc/self/root/etc/hostname", f.root().join("etc/passwd")).expect("symlink");
        assert_eq!(f.read(), Ok(None), "the image's /proc is empty, so nothing is there");
    }

    #[test]
    fn a_fifo_a_directory_and_an_oversized_file_are_refused_at_once() {
        let f = Fixture::new("special");
        nix::unistd::mkfifo(&f.root().join("etc/passwd"), Mode::from_bits_truncate(0o644)).expect("mkfifo");
        // Returns at once: no writer is needed for the refusal.
        let refused = f.read().expect_err("a FIFO is refused");
        assert!(refused.contains("is a FIFO, not a regular file"), "{refused}");

        std::fs::remove_file(f.root().join("etc/passwd")).expect("remove");
        std::fs::create_dir(f.root().join("etc/passwd")).expect("mkdir");
        let refused = f.read().expect_err("a directory is refused");
        assert!(refused.contains("is a directory"), "{refused}");

        std::fs::remove_dir(f.root().join("etc/passwd")).expect("rmdir");
        std::fs::write(f.root().join("etc/passwd"), vec![b'x'; 65]).expect("write");
        let refused = f.read().expect_err("65 bytes exceed a 64-byte limit");
        assert!(refused.contains("larger than 64 bytes"), "{refused}");
        std::fs::write(f.root().join("etc/passwd"), vec![b'x'; 64]).expect("write");
        assert_eq!(f.read().map(|s| s.map(|s| s.len())), Ok(Some(64)));
    }
}

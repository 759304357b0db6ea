//! Reading a file of an image's root filesystem without trusting the image: the path resolves
//! inside the rootfs (`openat2` with `RESOLVE_IN_ROOT`, so symbolic links, absolute or through
//! `..`, cannot leave it, and magic links of `/proc` are refused), only a regular file is read
//! (a FIFO would block, a device could be endless), and the read is bounded.

use std::io::Read as _;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag, fstat};

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

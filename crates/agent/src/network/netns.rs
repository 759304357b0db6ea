//! Named network namespaces for tasks and the ingress sandbox (bind mounts under `/run/netns`,
//! as `ip netns add` makes them, with loopback up), and the list of ours that exist.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// Creates the namespace at `path` with loopback up, unless it exists. Returns whether it made it.
pub(crate) fn ensure(path: &Path) -> io::Result<bool> {
    if path.exists() {
        // A file left by a crash between its creation and the bind mount is not a namespace:
        // opening it as one fails; remake it then.
        if is_netns(path) {
            return Ok(false);
        }
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    File::options().write(true).create_new(true).open(path)?;
    let target = path.to_owned();
    let made = std::thread::Builder::new()
        .name("shoal-agent-netns".to_owned())
        .spawn(move || -> io::Result<()> {
            // Only this thread moves into the new namespace; it exits once the bind mount has
            // pinned the namespace to the file.
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
            loopback_up()?;
            nix::mount::mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
            Ok(())
        })?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
    if let Err(err) = made {
        let _ = std::fs::remove_file(path);
        return Err(err);
    }
    Ok(true)
}

/// Whether `path` is a network namespace (a bind mount of one).
fn is_netns(path: &Path) -> bool {
    use nix::sys::statfs::{NSFS_MAGIC, statfs};
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Unmounts and removes a namespace; the kernel frees it once nothing holds it.
pub(crate) fn delete(path: &Path) -> io::Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(errno) => return Err(errno.into()),
    }
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Named namespaces in `dir` whose names start with `prefix`: (name, path).
pub(crate) fn list(dir: &Path, prefix: &str) -> io::Result<Vec<(String, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(prefix) {
            found.push((name, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Brings `lo` up in the calling thread's namespace (SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP):
/// the resolver at 127.0.0.11 and localhost need it before any endpoint is wired.
fn loopback_up() -> io::Result<()> {
    use nix::libc;
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    use std::os::fd::AsRawFd as _;
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: the socket is open, `req` is a valid ifreq naming "lo", and SIOCGIFFLAGS writes
    // only the flags field of it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union, which is what is read here.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS reads the name and flags of `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

//! Named network namespaces for tasks and the ingress sandbox (bind mounts under `/run/netns`,
//! as `ip netns add` makes them, with loopback up), and the list of ours that exist.
//!
//! The bind mounts are made in the mount namespace of PID 1 when the agent runs in another one
//! (as under `ip netns exec`, which gives a process a private mount namespace): a mount made in
//! the agent's own would be invisible to containerd and runc, which then could not join the
//! task's namespace, and would vanish with the agent, so that a restarted agent could not adopt
//! its running tasks. `/run/netns` is made a shared mount first (as `ip netns add` does), so the
//! mount propagates to the agent's namespace too.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;

/// Creates the namespace at `path` with loopback up, unless it exists. Returns whether it made it.
pub(crate) fn ensure(path: &Path) -> io::Result<bool> {
    if is_netns(path) {
        return Ok(false);
    }
    let target = path.to_owned();
    in_mount_namespace(move || -> io::Result<bool> {
        if target.exists() {
            // Bound where the runtime sees it (the agent's view may lag)?
            if is_netns(&target) {
                return Ok(false);
            }
            // A file left by a crash between its creation and the bind mount: remake it.
            std::fs::remove_file(&target)?;
        }
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
            share(dir)?;
        }
        File::options().write(true).create_new(true).open(&target)?;
        // Only this thread moves into the new namespace; it exits once the bind mount has
        // pinned the namespace to the file.
        let made = nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(io::Error::from)
            .and_then(|()| loopback_up())
            .and_then(|()| {
                nix::mount::mount(
                    Some("/proc/thread-self/ns/net"),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(io::Error::from)
            });
        if made.is_err() {
            let _ = std::fs::remove_file(&target);
        }
        made.map(|()| true)
    })
}

/// Runs `f` on a fresh thread in the mount namespace the runtime sees: PID 1's when it differs
/// from the agent's, else the agent's own.
fn in_mount_namespace<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    let host = host_mount_namespace()?;
    std::thread::Builder::new()
        .name("shoal-agent-netns".to_owned())
        .spawn(move || {
            if let Some(mnt) = host {
                // A thread sharing its filesystem attributes with others cannot change its
                // mount namespace.
                nix::sched::unshare(CloneFlags::CLONE_FS)?;
                nix::sched::setns(&mnt, CloneFlags::CLONE_NEWNS)?;
            }
            f()
        })?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
}

/// Moves the calling thread (and the threads it starts) into PID 1's mount namespace when it
/// runs in another one: the dataplane thread does, so that the overlay's sandboxes are bound
/// where they outlive the agent too. Returns whether it moved.
pub(crate) fn enter_runtime_mount_namespace() -> io::Result<bool> {
    let Some(mnt) = host_mount_namespace()? else { return Ok(false) };
    nix::sched::unshare(CloneFlags::CLONE_FS)?;
    nix::sched::setns(&mnt, CloneFlags::CLONE_NEWNS)?;
    Ok(true)
}

/// The mount namespace the runtime sees, when the calling thread runs in another one: PID 1's,
/// or, where that cannot be read (a restricted PID 1), the one the agent's parent had at start
/// (`ip netns exec` gives the program it runs a namespace of its own, its parent keeps the
/// host's). Found once and held open, so that it stays valid whatever happens to the parent.
fn host_mount_namespace() -> io::Result<Option<File>> {
    use std::os::unix::fs::MetadataExt as _;
    static RUNTIME: std::sync::OnceLock<Option<(PathBuf, (u64, u64))>> = std::sync::OnceLock::new();
    let own = std::fs::metadata("/proc/thread-self/ns/mnt")?;
    let own = (own.dev(), own.ino());
    let found = RUNTIME.get_or_init(|| {
        let parent = format!("/proc/{}/ns/mnt", nix::unistd::getppid());
        ["/proc/1/ns/mnt".to_owned(), parent].into_iter().find_map(|candidate| {
            let meta = std::fs::metadata(&candidate).ok()?;
            let id = (meta.dev(), meta.ino());
            // Held open through /proc/self/fd: the namespace stays as found.
            let file = File::open(&candidate).ok()?;
            let held = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::IntoRawFd::into_raw_fd(file)));
            Some((held, id))
        })
    });
    match found {
        Some((path, id)) if *id != own => File::open(path).map(Some),
        _ => Ok(None),
    }
}

/// Makes `dir` a shared mount (a bind mount of itself first, when it is no mount point), as
/// `ip netns add` does, so that namespaces bound in it are seen from every mount namespace.
fn share(dir: &Path) -> io::Result<()> {
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match nix::mount::mount(None::<&str>, dir, Some("none"), shared, None::<&str>) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => {
            nix::mount::mount(Some(dir), dir, Some("none"), MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)?;
            nix::mount::mount(None::<&str>, dir, Some("none"), shared, None::<&str>)?;
            Ok(())
        }
        Err(errno) => Err(errno.into()),
    }
}

/// Whether `path` is a network namespace (a bind mount of one).
fn is_netns(path: &Path) -> bool {
    use nix::sys::statfs::{NSFS_MAGIC, statfs};
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Unmounts and removes a namespace (where it was bound, and in the agent's own mount
/// namespace); the kernel frees it once nothing holds it.
pub(crate) fn delete(path: &Path) -> io::Result<()> {
    let target = path.to_owned();
    in_mount_namespace(move || unmount(&target))?;
    unmount(path)
}

fn unmount(path: &Path) -> io::Result<()> {
    shoal_overlay::delete_named(path)
}

/// Named namespaces in `dir` whose names start with `prefix`: (name, path).
pub(crate) fn list(dir: &Path, prefix: &str) -> io::Result<Vec<(String, PathBuf)>> {
    let found = shoal_overlay::list_named(dir, prefix)?;
    Ok(found.into_iter().map(|(suffix, path)| (format!("{prefix}{suffix}"), path)).collect())
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

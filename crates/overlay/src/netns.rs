//! Network namespaces: running code on a thread inside one, and creating and deleting the named
//! sandbox namespaces (bind mounts under `/run/netns`, as `ip netns add` makes them).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// Runs `f` on a fresh thread that has entered the network namespace at `netns` (the calling
/// thread's namespace when `None`). Sockets opened inside `f` belong to that namespace, and so
/// do processes it starts.
pub(crate) fn run_in<T: Send + 'static>(netns: Option<&Path>, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let Some(path) = netns else { return Ok(f()) };
    let file = File::open(path)?;
    let joined = std::thread::Builder::new()
        .name("shoal-overlay-netns".to_owned())
        .spawn(move || nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map(|()| f()))?
        .join();
    match joined {
        Ok(result) => result.map_err(io::Error::from),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Creates a new network namespace bound at `path` (which must not exist).
pub(crate) fn create_named(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    File::options().write(true).create_new(true).open(path)?;
    let target = path.to_owned();
    let made = std::thread::Builder::new()
        .name("shoal-overlay-unshare".to_owned())
        .spawn(move || -> io::Result<()> {
            // Only this thread moves into the new namespace; it exits right after the bind mount
            // has pinned the namespace to the file.
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
            nix::mount::mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)?;
            Ok(())
        })?
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Unmounts and removes a named namespace (a bind mount of one, as `ip netns add` makes them);
/// a missing one is no error. The kernel frees the namespace once nothing else holds it (no
/// process inside, no open socket).
pub fn delete_named(path: &Path) -> io::Result<()> {
    match nix::mount::umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
        Err(errno) => return Err(errno.into()),
    }
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

/// Named namespaces in `dir` whose names start with `prefix`: (suffix, path).
pub fn list_named(dir: &Path, prefix: &str) -> io::Result<Vec<(String, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(suffix) = name.strip_prefix(prefix).filter(|s| !s.is_empty()) {
            found.push((suffix.to_owned(), entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

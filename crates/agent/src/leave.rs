//! A node's data directory held by one process ([`DataDirLock`]), and leaving the cluster
//! ([`leave`]): the node's containers, network namespaces and state removed, its volumes kept
//! (as Docker keeps them). The managers then see the node Down, as in Swarm; `shoal node rm`
//! removes it from their list.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use shoal_runtime::ContainerRuntime;

/// The lock file under the data directory.
const LOCK_FILE: &str = "lock";

/// How long a task's container is given to stop when its node leaves.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// An exclusive advisory lock (flock) on `DATA/lock`, held by the process that runs a node on
/// `DATA` for as long as it lives: a second process on the same directory fails at once, and
/// `leave` knows the node is not running. The kernel releases it when the process exits, however
/// it exits; dropping the guard releases it too.
#[derive(Debug)]
pub struct DataDirLock {
    data_dir: PathBuf,
    _lock: Flock<File>,
}

/// The data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("{} is in use by another shoal process{}; stop it first", path.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    InUse {
        /// The data directory.
        path: PathBuf,
        /// The process that holds it, as it recorded itself.
        pid: Option<u32>,
    },
    /// The lock file could not be made or locked.
    #[error("{}: cannot lock it: {error}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

impl DataDirLock {
    /// Locks `data_dir` (made if missing) for this process, recording its PID in the lock file.
    pub fn acquire(data_dir: &Path) -> Result<Self, LockError> {
        let path = data_dir.join(LOCK_FILE);
        let io = |error| LockError::Io { path: path.clone(), error };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let file = File::options().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let pid = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
                return Err(LockError::InUse { path: data_dir.to_owned(), pid });
            }
            Err((_, errno)) => return Err(io(errno.into())),
        };
        // The PID is for the error above only: the lock, not the file, says who holds it.
        let pid = std::process::id();
        let write = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{pid}")
        };
        write(&mut lock).map_err(io)?;
        Ok(Self { data_dir: data_dir.to_owned(), _lock: lock })
    }

    /// The locked data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

/// Leaving the cluster failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaveError {
    /// A process runs the node.
    #[error("the {program} using {} is running: stop it first (systemctl stop {program}, or its process)", path.display())]
    Running {
        /// The data directory.
        path: PathBuf,
        /// The program that runs it (`shoal-agent`, `shoal-manager`).
        program: String,
    },
    /// The data directory holds no node.
    #[error("{} holds no joined node; nothing to leave", path.display())]
    NoNode {
        /// The data directory.
        path: PathBuf,
    },
    /// The data directory could not be locked.
    #[error(transparent)]
    Lock(LockError),
    /// containerd could not be reached.
    #[error("{0}; the node's containers cannot be removed without it, so nothing was removed")]
    Containerd(shoal_runtime::ConnectError),
    /// The node's containers could not be listed, stopped or removed.
    #[error("cannot remove the node's containers: {0}; the node's state is kept: leave again once that is fixed")]
    Containers(shoal_runtime::ContainerError),
    /// A network namespace, a mount or a file could not be removed.
    #[error("{}: cannot remove it: {error}", path.display())]
    Io {
        /// What could not be removed.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
}

/// Locks `data_dir` for leaving: a running node (holding the lock) is reported as such, with
/// `program` named in the way to stop it. A directory holding no node is refused as well.
pub fn lock_for_leave(data_dir: &Path, program: &str) -> Result<DataDirLock, LeaveError> {
    let no_node = || LeaveError::NoNode { path: data_dir.to_owned() };
    // Not made where nothing ever ran (the lock would make the directory).
    if !holds_node(data_dir) && !data_dir.join(LOCK_FILE).exists() {
        return Err(no_node());
    }
    // Locked first: a node that is joining holds no node yet, but is running.
    let lock = DataDirLock::acquire(data_dir).map_err(|err| match err {
        LockError::InUse { path, .. } => LeaveError::Running { path, program: program.to_owned() },
        err => LeaveError::Lock(err),
    })?;
    if !holds_node(data_dir) {
        return Err(no_node());
    }
    Ok(lock)
}

/// Whether `data_dir` holds a node's identity: a worker's record, or certificates.
fn holds_node(data_dir: &Path) -> bool {
    crate::holds_worker(data_dir) || data_dir.join("certs").is_dir()
}

/// Where the node's network namespaces are: `dir` and the `prefix` of their names
/// (`NetworkConfig::netns_prefix`).
#[derive(Debug, Clone)]
pub struct Namespaces<'a> {
    /// Where named namespaces live (`/run/netns`).
    pub dir: &'a Path,
    /// The prefix of the node's namespaces.
    pub prefix: &'a str,
}

/// What [`leave`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Left {
    /// The node that left, when its data directory said.
    pub node_id: Option<String>,
    /// The containers stopped and removed.
    pub containers: Vec<String>,
    /// The network namespaces removed.
    pub namespaces: Vec<String>,
}

/// Leaves the cluster from the node whose data directory `lock` holds: stops and removes its
/// tasks' containers on `runtime` (`None`: a node that runs no tasks), removes its network
/// namespaces (`None`: none were made) and its state (`agent.json`, `certs/`, `tasks/`,
/// `runtime/`), keeping `volumes/`. Manager state is the manager's to remove
/// (`shoal_manager::forget_manager`). The containers go first: if containerd cannot be reached,
/// nothing is removed, and leaving can be tried again.
pub async fn leave(
    lock: &DataDirLock,
    runtime: Option<&dyn ContainerRuntime>,
    namespaces: Option<Namespaces<'_>>,
) -> Result<Left, LeaveError> {
    let data_dir = lock.data_dir();
    if !holds_node(data_dir) {
        return Err(LeaveError::NoNode { path: data_dir.to_owned() });
    }
    let node_id = node_id(data_dir);
    let mut left = Left { node_id: node_id.clone(), ..Left::default() };
    if let Some(runtime) = runtime {
        for container in runtime.list(&[]).await.map_err(LeaveError::Containers)? {
            // The node's own tasks: another node may share the containerd namespace.
            let ours = match (container.labels.get(crate::labels::NODE), &node_id) {
                (Some(node), Some(id)) => node == id,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if !ours {
                continue;
            }
            runtime.stop(&container.id, STOP_GRACE).await.map_err(LeaveError::Containers)?;
            runtime.remove(&container.id).await.map_err(LeaveError::Containers)?;
            tracing::info!(container.id = %container.id, "container removed");
            left.containers.push(container.id);
        }
    }
    if let Some(namespaces) = namespaces {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |error| LeaveError::Io { path, error }
        };
        let found = crate::network::list_namespaces(namespaces.dir, namespaces.prefix).map_err(io(namespaces.dir))?;
        for (name, path) in found {
            crate::network::delete_namespace(&path).map_err(io(&path))?;
            tracing::info!(netns = %path.display(), "namespace removed");
            left.namespaces.push(name);
        }
    }
    remove_task_files(&data_dir.join("tasks"))?;
    for dir in ["certs", "runtime"] {
        remove(&data_dir.join(dir), Kind::Dir)?;
    }
    for file in ["agent.json.tmp", "agent.json"] {
        remove(&data_dir.join(file), Kind::File)?;
    }
    Ok(left)
}

/// containerd as the node's worker reaches it (its socket and namespace, as `run` takes them), to
/// give [`leave`].
pub async fn connect_containerd(
    data_dir: &Path,
    socket: &Path,
    namespace: &str,
) -> Result<shoal_runtime::Containerd, LeaveError> {
    // Listing, stopping and removing containers writes no logs: the logger is never started.
    let config =
        shoal_runtime::ContainerdConfig::new(socket, namespace, data_dir.join("runtime"), "shoal-runtime-logger");
    shoal_runtime::Containerd::connect(config).await.map_err(LeaveError::Containerd)
}

/// The node's ID: from its worker record, else from its certificate.
fn node_id(data_dir: &Path) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Record {
        node_id: String,
    }
    let recorded = std::fs::read(data_dir.join("agent.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok())
        .map(|r| r.node_id);
    recorded.or_else(|| {
        let live = shoal_ca_pki::LiveCredentials::load(&data_dir.join("certs")).ok()?;
        Some(live.current().identity().node_id.clone())
    })
}

/// Unmounts the tasks' secret tmpfs mounts (`tasks/TASK/files`) and removes `tasks/`.
fn remove_task_files(root: &Path) -> Result<(), LeaveError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(LeaveError::Io { path: root.to_owned(), error }),
    };
    for entry in entries.filter_map(Result::ok) {
        let files = entry.path().join("files");
        match nix::mount::umount2(&files, nix::mount::MntFlags::MNT_DETACH) {
            // Not a mount point (EINVAL), or gone.
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(errno) => return Err(LeaveError::Io { path: files, error: errno.into() }),
        }
    }
    remove(root, Kind::Dir)
}

/// What [`remove`] removes.
#[derive(Clone, Copy)]
enum Kind {
    File,
    Dir,
}

/// Removes a file or a directory tree; one that is not there is removed already.
fn remove(path: &Path, kind: Kind) -> Result<(), LeaveError> {
    let removed = match kind {
        Kind::File => std::fs::remove_file(path),
        Kind::Dir => std::fs::remove_dir_all(path),
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(LeaveError::Io { path: path.to_owned(), error }),
    }
}

#[cfg(test)]
mod tests;

//! Secrets and configs on a node. The manager sends a payload version with the assignments just
//! before the first task here that uses it and takes it back after the last ([`Payloads`] holds
//! them, in memory only). When a task starts, its files are written into a tmpfs of its own,
//! `DATA/tasks/TASK/files` (mode 0700), and each is bind-mounted read-only at its target in the
//! container, with the owner and mode the service asks; the tmpfs is unmounted when the task's
//! container is removed. So a secret is never on the node's disk: not in the agent's data
//! directory, not in the container's root filesystem.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use shoal_api::v1;
use shoal_runtime::{Mount, Propagation};

/// The kinds of payload, as the node keys them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Secret,
    Config,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Config => "config",
        }
    }
}

/// The payload versions the node holds: (kind, ID, data version) → bytes.
#[derive(Default)]
pub(crate) struct Payloads {
    held: HashMap<(Kind, String, u64), Vec<u8>>,
}

impl std::fmt::Debug for Payloads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Which payloads, never their bytes.
        f.debug_struct("Payloads").field("held", &self.held.keys().collect::<Vec<_>>()).finish()
    }
}

impl Payloads {
    /// Applies an assignment change that carries a secret or config; `false` for any other.
    pub(crate) fn apply(&mut self, change: &v1::AssignmentChange) -> bool {
        let remove = change.action == v1::assignment_change::Action::Remove as i32;
        let (key, data) = match (&change.secret, &change.config) {
            (Some(s), _) => (
                (Kind::Secret, s.id.clone(), s.data_version),
                s.spec.as_ref().map(|s| s.data.clone()).unwrap_or_default(),
            ),
            (None, Some(c)) => (
                (Kind::Config, c.id.clone(), c.data_version),
                c.spec.as_ref().map(|s| s.data.clone()).unwrap_or_default(),
            ),
            (None, None) => return false,
        };
        if remove {
            self.held.remove(&key);
        } else {
            self.held.insert(key, data);
        }
        true
    }

    /// Replaces everything held by the payloads of a complete assignment set.
    pub(crate) fn set_complete(&mut self, changes: &[v1::AssignmentChange]) {
        self.held.clear();
        for change in changes {
            self.apply(change);
        }
    }

    fn get(&self, kind: Kind, id: &str, version: u64) -> Option<&[u8]> {
        self.held.get(&(kind, id.to_owned(), version)).map(Vec::as_slice)
    }

    /// How many payload versions are held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.held.len()
    }
}

/// One file a task reads: where, whose, which mode, what.
struct File<'a> {
    kind: Kind,
    name: &'a str,
    target: String,
    uid: u32,
    gid: u32,
    mode: u32,
    data: &'a [u8],
}

/// The files of `container`'s secrets and configs, from what the node holds; an error names a
/// payload the node lacks.
fn files<'a>(container: &'a v1::ContainerSpec, payloads: &'a Payloads) -> Result<Vec<File<'a>>, String> {
    let secrets =
        container.secrets.iter().map(|r| (Kind::Secret, &r.secret_id, &r.secret_name, r.data_version, &r.file));
    let configs =
        container.configs.iter().map(|r| (Kind::Config, &r.config_id, &r.config_name, r.data_version, &r.file));
    secrets
        .chain(configs)
        .map(|(kind, id, name, version, file)| {
            let data = payloads.get(kind, id, version).ok_or_else(|| {
                format!(
                    "{} {name} ({id}) version {version} is not available on this node; the manager did not send it \
                     (removed meanwhile?)",
                    kind.noun()
                )
            })?;
            let file = file.clone().unwrap_or_default();
            let target_name = if file.name.is_empty() { name.as_str() } else { file.name.as_str() };
            let target = match kind {
                _ if target_name.starts_with('/') => target_name.to_owned(),
                Kind::Secret => format!("/run/secrets/{target_name}"),
                Kind::Config => format!("/{target_name}"),
            };
            Ok(File { kind, name, target, uid: file.uid, gid: file.gid, mode: file.mode, data })
        })
        .collect()
}

/// Where the tasks' files go.
#[derive(Debug, Clone)]
pub(crate) struct TaskFiles {
    /// `DATA/tasks`; `None` for a runtime without real containers (the simulated one): the
    /// payloads are checked, nothing is written.
    root: Option<PathBuf>,
}

impl TaskFiles {
    pub(crate) fn new(root: Option<PathBuf>) -> Self {
        Self { root }
    }

    fn dir(root: &Path, task_id: &str) -> PathBuf {
        root.join(task_id).join("files")
    }

    /// Writes the task's secrets and configs into a new tmpfs of its own and returns their
    /// read-only bind mounts. An error says which payload is missing or what could not be done.
    pub(crate) fn prepare(
        &self,
        task_id: &str,
        container: &v1::ContainerSpec,
        payloads: &Payloads,
    ) -> Result<Vec<Mount>, String> {
        let files = files(container, payloads)?;
        if files.is_empty() {
            return Ok(Vec::new());
        }
        let Some(root) = &self.root else {
            return Ok(files
                .iter()
                .map(|f| Mount::Bind {
                    source: PathBuf::from("/simulated").join(f.name),
                    target: f.target.clone(),
                    read_only: true,
                    propagation: Propagation::Rprivate,
                })
                .collect());
        };
        let dir = Self::dir(root, task_id);
        mount_tmpfs(&dir)
            .map_err(|e| format!("cannot mount a tmpfs for the task's secrets at {}: {e}", dir.display()))?;
        let mut mounts = Vec::with_capacity(files.len());
        for (index, file) in files.iter().enumerate() {
            // Named by position: the host path says nothing of the secret.
            let path = dir.join(format!("{}-{index}", file.kind.noun()));
            write_file(&path, file)
                .map_err(|e| format!("{} {}: cannot write its file: {e}", file.kind.noun(), file.name))?;
            mounts.push(Mount::Bind {
                source: path,
                target: file.target.clone(),
                read_only: true,
                propagation: Propagation::Rprivate,
            });
        }
        Ok(mounts)
    }

    /// Unmounts the task's tmpfs (its payloads vanish with it) and removes its directory.
    pub(crate) fn release(&self, task_id: &str) {
        let Some(root) = &self.root else { return };
        let dir = Self::dir(root, task_id);
        if !dir.exists() {
            return;
        }
        // Detached: a container being torn down may still hold a file of it for a moment.
        if let Err(err) = nix::mount::umount2(&dir, nix::mount::MntFlags::MNT_DETACH)
            && err != nix::errno::Errno::EINVAL
        {
            tracing::warn!(task.id = %task_id, error = %err, "could not unmount the task's secrets tmpfs");
            return;
        }
        if let Err(err) = std::fs::remove_dir_all(root.join(task_id)) {
            tracing::warn!(task.id = %task_id, error = %err, "could not remove the task's files directory");
        }
    }
}

/// Mounts a small tmpfs (mode 0700, no devices, no set-uid, no exec) at `dir`, made empty anew
/// if one is there already (a task started again after a failed attempt).
fn mount_tmpfs(dir: &Path) -> Result<(), String> {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    if dir.exists() {
        let _ = umount2(dir, MntFlags::MNT_DETACH);
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    // 2 MiB plus the payloads' own limits would do; a few tasks' worth of configs fit in 16 MiB.
    mount(Some("tmpfs"), dir, Some("tmpfs"), flags, Some("mode=0700,size=16m")).map_err(|e| e.to_string())
}

fn write_file(path: &Path, file: &File<'_>) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    out.write_all(file.data)?;
    std::os::unix::fs::chown(path, Some(file.uid), Some(file.gid))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(file.mode))
}

#[cfg(test)]
mod tests;

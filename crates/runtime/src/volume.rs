//! Docker's `local` volume driver: a named volume is a directory `ROOT/NAME/_data`, with its
//! options, labels and creation time in `ROOT/NAME/volume.json` beside it. Options `type`, `o`
//! and `device` make `_data` a mount point (`mount -t TYPE -o O DEVICE`): a tmpfs, an NFS
//! export, a block device. The mount is made whenever the volume is ensured and `_data` is not
//! mounted, so a node that rebooted mounts its volumes again when a task next uses them.
//!
//! The calls are blocking (file system work and `mount(2)`, which for NFS can wait on the
//! network): call them from a blocking thread in async code. Whether a container uses a volume
//! is the caller's business: [`LocalVolumes::remove`] does not ask.

use std::collections::BTreeMap;
use std::net::{IpAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use crate::mountinfo;

/// The directory of a volume that containers mount.
const DATA: &str = "_data";
/// The file beside [`DATA`] with the volume's options, labels and creation time.
const METADATA: &str = "volume.json";
/// The options of Docker's local driver.
const OPTION_KEYS: &[&str] = &["type", "o", "device"];
/// How many stacked mounts [`LocalVolumes::remove`] takes off `_data` before giving up.
const MAX_STACKED_MOUNTS: usize = 16;

/// A volume of the local driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalVolume {
    /// Its name.
    pub name: String,
    /// The directory containers mount (`ROOT/NAME/_data`).
    pub mountpoint: PathBuf,
    /// Driver options (`type`, `o`, `device`); empty for a plain directory.
    pub options: BTreeMap<String, String>,
    /// Labels given at creation.
    pub labels: BTreeMap<String, String>,
    /// When it was created.
    pub created_at: SystemTime,
}

/// A volume operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The name is not one Docker's local driver takes.
    #[error(
        "invalid volume name {name:?}: use at least two characters, letters, digits, '_', '.' or '-', \
         the first a letter or digit"
    )]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// An option the local driver does not know.
    #[error("volume {name}: unknown option {key:?}: the local driver takes type, o and device")]
    UnknownOption {
        /// The volume.
        name: String,
        /// The option given.
        key: String,
    },
    /// `type` without `device`, or the other way round.
    #[error("volume {name}: option {missing} is needed with {given} (for example type=tmpfs,device=tmpfs,o=size=64m)")]
    MissingOption {
        /// The volume.
        name: String,
        /// The option that is missing.
        missing: &'static str,
        /// The option that needs it.
        given: &'static str,
    },
    /// The volume exists with other options.
    #[error("volume {name} exists with other options ({difference}): remove it first, or give no options to use it")]
    OptionsDiffer {
        /// The volume.
        name: String,
        /// What differs, option by option.
        difference: String,
    },
    /// No volume of that name.
    #[error("no such volume: {name}")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// A file or directory of the volume could not be used.
    #[error("volume {name}: {}: {source}", path.display())]
    Io {
        /// The volume.
        name: String,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The volume's metadata file cannot be read as one.
    #[error("volume {name}: {} is not valid volume metadata: {reason} (remove the volume and create it again)", path.display())]
    Metadata {
        /// The volume.
        name: String,
        /// The metadata file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The NFS server's host name in `addr=` did not resolve.
    #[error("volume {name}: cannot resolve the NFS server address {host:?}: {reason}")]
    Resolve {
        /// The volume.
        name: String,
        /// The host name.
        host: String,
        /// What went wrong.
        reason: String,
    },
    /// `mount(2)` refused.
    #[error("volume {name}: mount of type {fstype} from {device} on {} failed: {reason}", target.display())]
    Mount {
        /// The volume.
        name: String,
        /// The filesystem type.
        fstype: String,
        /// The device (source) given.
        device: String,
        /// The volume's `_data` directory.
        target: PathBuf,
        /// The kernel's error and what it means here.
        reason: String,
    },
    /// `umount(2)` refused.
    #[error("volume {name}: cannot unmount {}: {reason}", target.display())]
    Unmount {
        /// The volume.
        name: String,
        /// The mount point.
        target: PathBuf,
        /// The kernel's error and what it means here.
        reason: String,
    },
    /// Something is still mounted in the volume's directory, so deleting it would delete the
    /// content of that mount.
    #[error("volume {name}: {} is still mounted: unmount it, then remove the volume", path.display())]
    StillMounted {
        /// The volume.
        name: String,
        /// The mount point inside the volume's directory.
        path: PathBuf,
    },
}

/// The on-disk form of a volume's metadata.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Metadata {
    options: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    created_at_unix_nanos: u64,
}

/// The local volume driver over the directory `root`.
#[derive(Debug)]
pub struct LocalVolumes {
    root: PathBuf,
    /// One operation at a time, so that two ensures of one name do not both create it.
    lock: Mutex<()>,
}

/// What `mount(2)` is called with for a volume's options: Docker's `mount.ParseOptions` split
/// of `o` into flags and filesystem data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountRequest {
    pub(crate) fstype: String,
    pub(crate) device: String,
    pub(crate) flags: MsFlags,
    pub(crate) data: String,
}

impl LocalVolumes {
    /// The driver keeping its volumes under `root` (created on first use).
    pub fn new(root: PathBuf) -> Self {
        Self { root, lock: Mutex::new(()) }
    }

    /// Returns the volume `name`, creating it when it does not exist, and mounting it when its
    /// options give a `type` and it is not mounted. Options given for an existing volume must be
    /// its own (or none); labels of an existing volume stay as they were. A new volume whose
    /// mount fails is removed again.
    pub fn ensure(
        &self,
        name: &str,
        options: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> Result<LocalVolume, VolumeError> {
        check_name(name)?;
        check_options(name, options)?;
        let _held = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = self.load(name)? {
            if !options.is_empty() && *options != existing.options {
                return Err(VolumeError::OptionsDiffer {
                    name: name.to_owned(),
                    difference: difference(&existing.options, options),
                });
            }
            self.mount_if_needed(&existing)?;
            return Ok(existing);
        }
        let dir = self.root.join(name);
        let data = dir.join(DATA);
        let io = |path: &Path| {
            let (name, path) = (name.to_owned(), path.to_owned());
            move |source| VolumeError::Io { name, path, source }
        };
        std::fs::create_dir_all(&data).map_err(io(&data))?;
        let created_at = SystemTime::now();
        let metadata = Metadata {
            options: options.clone(),
            labels: labels.clone(),
            created_at_unix_nanos: created_at
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
                .unwrap_or_default(),
        };
        let path = dir.join(METADATA);
        let staged = dir.join(format!(".{METADATA}.tmp"));
        let bytes = serde_json::to_vec_pretty(&metadata).map_err(|e| io(&staged)(std::io::Error::other(e)))?;
        std::fs::write(&staged, bytes).map_err(io(&staged))?;
        std::fs::rename(&staged, &path).map_err(io(&path))?;
        let volume = LocalVolume {
            name: name.to_owned(),
            mountpoint: data,
            options: options.clone(),
            labels: labels.clone(),
            created_at: UNIX_EPOCH + Duration::from_nanos(metadata.created_at_unix_nanos),
        };
        if let Err(err) = self.mount_if_needed(&volume) {
            // Nothing is mounted after a failed mount (mount_options undoes its own steps).
            let _ = std::fs::remove_dir_all(&dir);
            return Err(err);
        }
        tracing::info!(volume = name, mountpoint = %volume.mountpoint.display(), "created volume");
        Ok(volume)
    }

    /// Every volume under the root, by name.
    pub fn list(&self) -> Result<Vec<LocalVolume>, VolumeError> {
        let _held = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(VolumeError::Io { name: String::new(), path: self.root.clone(), source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|source| VolumeError::Io { name: String::new(), path: self.root.clone(), source })?;
            if let Some(name) = entry.file_name().to_str().filter(|n| check_name(n).is_ok()) {
                names.push(name.to_owned());
            }
        }
        names.sort();
        let mut volumes = Vec::new();
        for name in names {
            volumes.extend(self.load(&name)?);
        }
        Ok(volumes)
    }

    /// The volume `name`.
    pub fn get(&self, name: &str) -> Result<LocalVolume, VolumeError> {
        check_name(name)?;
        let _held = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.load(name)?.ok_or_else(|| VolumeError::NotFound { name: name.to_owned() })
    }

    /// Unmounts the volume `name` when mounted, then deletes its directory and content.
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        check_name(name)?;
        let _held = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(VolumeError::NotFound { name: name.to_owned() });
        }
        let io = |path: &Path| {
            let (name, path) = (name.to_owned(), path.to_owned());
            move |source| VolumeError::Io { name, path, source }
        };
        let resolved = std::fs::canonicalize(&dir).map_err(io(&dir))?;
        let data = resolved.join(DATA);
        for _ in 0..MAX_STACKED_MOUNTS {
            let table = mountinfo::read().map_err(io(Path::new(mountinfo::MOUNTINFO)))?;
            if !table.iter().any(|e| e.mount_point == data) {
                break;
            }
            nix::mount::umount2(&data, MntFlags::empty()).map_err(|errno| VolumeError::Unmount {
                name: name.to_owned(),
                target: data.clone(),
                reason: match errno {
                    Errno::EBUSY => format!("{errno}: a process uses it (a container still running?)"),
                    _ => errno.to_string(),
                },
            })?;
            tracing::info!(volume = name, mountpoint = %data.display(), "unmounted volume");
        }
        // Deleting the directory would delete whatever is still mounted in it.
        let table = mountinfo::read().map_err(io(Path::new(mountinfo::MOUNTINFO)))?;
        if let Some(inside) = table.iter().find(|e| e.mount_point.starts_with(&resolved)) {
            return Err(VolumeError::StillMounted { name: name.to_owned(), path: inside.mount_point.clone() });
        }
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        tracing::info!(volume = name, "removed volume");
        Ok(())
    }

    /// The volume `name` as stored, `None` when there is none. A directory with `_data` but no
    /// metadata (made by hand, or by an older Shoal) is a volume without options.
    fn load(&self, name: &str) -> Result<Option<LocalVolume>, VolumeError> {
        let dir = self.root.join(name);
        let data = dir.join(DATA);
        if !data.is_dir() {
            return Ok(None);
        }
        let path = dir.join(METADATA);
        let metadata = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Metadata>(&bytes).map_err(|e| VolumeError::Metadata {
                name: name.to_owned(),
                path: path.clone(),
                reason: e.to_string(),
            })?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let created = std::fs::metadata(&data).and_then(|m| m.modified()).unwrap_or(UNIX_EPOCH);
                return Ok(Some(LocalVolume {
                    name: name.to_owned(),
                    mountpoint: data,
                    options: BTreeMap::new(),
                    labels: BTreeMap::new(),
                    created_at: created,
                }));
            }
            Err(source) => return Err(VolumeError::Io { name: name.to_owned(), path, source }),
        };
        check_options(name, &metadata.options).map_err(|e| VolumeError::Metadata {
            name: name.to_owned(),
            path,
            reason: e.to_string(),
        })?;
        Ok(Some(LocalVolume {
            name: name.to_owned(),
            mountpoint: data,
            options: metadata.options,
            labels: metadata.labels,
            created_at: UNIX_EPOCH + Duration::from_nanos(metadata.created_at_unix_nanos),
        }))
    }

    /// Mounts the volume when its options give a type and `_data` is not a mount point yet.
    fn mount_if_needed(&self, volume: &LocalVolume) -> Result<(), VolumeError> {
        let name = volume.name.as_str();
        let resolve = |host: &str| resolve_host(host);
        let Some(request) = mount_request(name, &volume.options, resolve)? else { return Ok(()) };
        let io = |path: &Path| {
            let (name, path) = (name.to_owned(), path.to_owned());
            move |source| VolumeError::Io { name, path, source }
        };
        let target = std::fs::canonicalize(&volume.mountpoint).map_err(io(&volume.mountpoint))?;
        let table = mountinfo::read().map_err(io(Path::new(mountinfo::MOUNTINFO)))?;
        if table.iter().any(|e| e.mount_point == target) {
            return Ok(());
        }
        mount_options(&request, &target).map_err(|errno| VolumeError::Mount {
            name: name.to_owned(),
            fstype: request.fstype.clone(),
            device: request.device.clone(),
            target: target.clone(),
            reason: explain_mount_error(errno, &request.fstype),
        })?;
        tracing::info!(volume = name, fstype = %request.fstype, mountpoint = %target.display(), "mounted volume");
        Ok(())
    }
}

/// Docker's rule for local volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, so at least two
/// characters, and never a path.
fn check_name(name: &str) -> Result<(), VolumeError> {
    let valid = name.len() >= 2
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if valid { Ok(()) } else { Err(VolumeError::InvalidName { name: name.to_owned() }) }
}

/// Only `type`, `o` and `device`; `type` and `device` together or not at all (`o` needs them).
fn check_options(name: &str, options: &BTreeMap<String, String>) -> Result<(), VolumeError> {
    if let Some(key) = options.keys().find(|k| !OPTION_KEYS.contains(&k.as_str())) {
        return Err(VolumeError::UnknownOption { name: name.to_owned(), key: key.clone() });
    }
    let given = |key: &str| options.get(key).is_some_and(|v| !v.is_empty());
    let missing = |missing, given| Err(VolumeError::MissingOption { name: name.to_owned(), missing, given });
    match (given("type"), given("device"), given("o")) {
        (true, false, _) => missing("device", "type"),
        (false, true, _) => missing("type", "device"),
        (false, false, true) => missing("type", "o"),
        _ => Ok(()),
    }
}

/// Says which options differ between the volume's and those given.
fn difference(existing: &BTreeMap<String, String>, given: &BTreeMap<String, String>) -> String {
    let keys: std::collections::BTreeSet<&String> = existing.keys().chain(given.keys()).collect();
    keys.into_iter()
        .filter(|k| existing.get(*k) != given.get(*k))
        .map(|k| {
            let show = |v: Option<&String>| v.map_or_else(|| "unset".to_owned(), |v| format!("{v:?}"));
            format!("{k}: {} now, {} given", show(existing.get(k)), show(given.get(k)))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The mount a volume's options ask for; `None` for a plain directory. For NFS an `addr=` that
/// is a host name is replaced by its address through `resolve`, as Docker does (the kernel's
/// NFS client takes only addresses).
pub(crate) fn mount_request(
    name: &str,
    options: &BTreeMap<String, String>,
    resolve: impl Fn(&str) -> Result<IpAddr, String>,
) -> Result<Option<MountRequest>, VolumeError> {
    let given = |key: &str| options.get(key).filter(|v| !v.is_empty());
    let (Some(fstype), Some(device)) = (given("type"), given("device")) else { return Ok(None) };
    let (flags, mut data) = parse_options(options.get("o").map_or("", String::as_str));
    if fstype == "nfs" || fstype == "nfs4" {
        data = data
            .split(',')
            .map(|option| match option.strip_prefix("addr=") {
                Some(host) if !host.is_empty() && host.parse::<IpAddr>().is_err() => resolve(host)
                    .map(|ip| format!("addr={ip}"))
                    .map_err(|reason| VolumeError::Resolve { name: name.to_owned(), host: host.to_owned(), reason }),
                _ => Ok(option.to_owned()),
            })
            .collect::<Result<Vec<_>, _>>()?
            .join(",");
    }
    Ok(Some(MountRequest { fstype: fstype.clone(), device: device.clone(), flags, data }))
}

/// Splits a comma-separated `o` into mount flags and the data string for the filesystem, as
/// Docker's `mount.ParseOptions`: a known flag word sets (or, for its negation, clears) its flag;
/// every other word is data, in order. `defaults` means no flag; unlike Docker it is not passed
/// on as data, where filesystems such as tmpfs refuse it.
pub(crate) fn parse_options(o: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for word in o.split(',').filter(|w| !w.is_empty()) {
        let (set, flag) = match word {
            "defaults" => continue,
            "ro" => (true, MsFlags::MS_RDONLY),
            "rw" => (false, MsFlags::MS_RDONLY),
            "suid" => (false, MsFlags::MS_NOSUID),
            "nosuid" => (true, MsFlags::MS_NOSUID),
            "dev" => (false, MsFlags::MS_NODEV),
            "nodev" => (true, MsFlags::MS_NODEV),
            "exec" => (false, MsFlags::MS_NOEXEC),
            "noexec" => (true, MsFlags::MS_NOEXEC),
            "sync" => (true, MsFlags::MS_SYNCHRONOUS),
            "async" => (false, MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (true, MsFlags::MS_DIRSYNC),
            "remount" => (true, MsFlags::MS_REMOUNT),
            "mand" => (true, MsFlags::MS_MANDLOCK),
            "nomand" => (false, MsFlags::MS_MANDLOCK),
            "atime" => (false, MsFlags::MS_NOATIME),
            "noatime" => (true, MsFlags::MS_NOATIME),
            "diratime" => (false, MsFlags::MS_NODIRATIME),
            "nodiratime" => (true, MsFlags::MS_NODIRATIME),
            "bind" => (true, MsFlags::MS_BIND),
            "rbind" => (true, MsFlags::MS_BIND | MsFlags::MS_REC),
            "unbindable" => (true, MsFlags::MS_UNBINDABLE),
            "runbindable" => (true, MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
            "private" => (true, MsFlags::MS_PRIVATE),
            "rprivate" => (true, MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            "shared" => (true, MsFlags::MS_SHARED),
            "rshared" => (true, MsFlags::MS_SHARED | MsFlags::MS_REC),
            "slave" => (true, MsFlags::MS_SLAVE),
            "rslave" => (true, MsFlags::MS_SLAVE | MsFlags::MS_REC),
            "relatime" => (true, MsFlags::MS_RELATIME),
            "norelatime" => (false, MsFlags::MS_RELATIME),
            "strictatime" => (true, MsFlags::MS_STRICTATIME),
            "nostrictatime" => (false, MsFlags::MS_STRICTATIME),
            other => {
                data.push(other);
                continue;
            }
        };
        if set {
            flags |= flag;
        } else {
            flags &= !flag;
        }
    }
    (flags, data.join(","))
}

/// Mounts as Docker's `mount.Mount` does: the mount itself (skipped for a remount without data),
/// then the propagation change in a call of its own (the kernel takes it only alone), then a
/// read-only remount for a read-only bind (a bind mount ignores `MS_RDONLY` at first). A later
/// step that fails undoes the mount.
fn mount_options(request: &MountRequest, target: &Path) -> Result<(), Errno> {
    let propagation = MsFlags::MS_SHARED | MsFlags::MS_PRIVATE | MsFlags::MS_SLAVE | MsFlags::MS_UNBINDABLE;
    let flags = request.flags;
    let plain = flags & !propagation;
    let data = (!request.data.is_empty()).then_some(request.data.as_str());
    let mounted = !flags.contains(MsFlags::MS_REMOUNT) || data.is_some();
    if mounted {
        nix::mount::mount(Some(request.device.as_str()), target, Some(request.fstype.as_str()), plain, data)?;
    }
    let undo = |errno: Errno| {
        if mounted {
            let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
        }
        errno
    };
    if flags.intersects(propagation) {
        let change = flags & (propagation | MsFlags::MS_REC | MsFlags::MS_SILENT);
        nix::mount::mount(None::<&str>, target, None::<&str>, change, None::<&str>).map_err(undo)?;
    }
    if plain.contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY) {
        nix::mount::mount(None::<&str>, target, None::<&str>, plain | MsFlags::MS_REMOUNT, None::<&str>)
            .map_err(undo)?;
    }
    Ok(())
}

/// The kernel's error, and what it means for a volume mount.
fn explain_mount_error(errno: Errno, fstype: &str) -> String {
    let hint = match errno {
        Errno::ENODEV => {
            format!("the kernel has no {fstype} filesystem (load its module, or use a kernel that has it)")
        }
        Errno::EPERM | Errno::EACCES => "not permitted (mounting needs root) or refused by the server".to_owned(),
        Errno::ENOENT | Errno::ENOTBLK => "the device does not exist or is not a block device".to_owned(),
        Errno::EINVAL => format!("the kernel refused the options: check o= for {fstype}"),
        _ => return errno.to_string(),
    };
    format!("{errno}: {hint}")
}

/// Resolves a host name to an address, IPv4 first (as Go's `net.ResolveIPAddr("ip", …)`).
fn resolve_host(host: &str) -> Result<IpAddr, String> {
    let addresses: Vec<IpAddr> = (host, 0).to_socket_addrs().map_err(|e| e.to_string())?.map(|a| a.ip()).collect();
    addresses
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| "it has no address".to_owned())
}

#[cfg(test)]
mod tests;

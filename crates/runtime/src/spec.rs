//! The runtime's own types: what to run, how it ended, what to look for.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Registry credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// Pull from an OCI distribution registry.
    Registry {
        /// `[host[:port]/]repository[:tag][@digest]`, Docker's normalisation applies.
        reference: String,
        /// Optional basic or token credentials.
        credentials: Option<Credentials>,
    },
    /// Load an OCI image-layout archive; `reference` names the image when the archive does not.
    Archive {
        /// The archive's path.
        path: PathBuf,
        /// Name to give the image if the archive has no `io.containerd.image.name` annotation.
        reference: Option<String>,
    },
}

impl ImageSource {
    /// A registry pull without credentials.
    pub fn registry(reference: impl Into<String>) -> Self {
        Self::Registry { reference: reference.into(), credentials: None }
    }
}

/// A mount in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// A host path (file or directory).
    Bind {
        /// Host path.
        source: PathBuf,
        /// Path in the container.
        target: String,
        /// Mounted read-only.
        read_only: bool,
        /// Whether mounts made later under the source or the target reach the other side.
        propagation: Propagation,
    },
    /// A named volume: a directory the caller manages (see [`LocalVolumes`](crate::LocalVolumes)),
    /// bind-mounted.
    Volume {
        /// The volume's directory on the host.
        source: PathBuf,
        /// Path in the container.
        target: String,
        /// Mounted read-only.
        read_only: bool,
        /// When the directory is empty at creation and the image has a directory at `target`,
        /// copy the image's content (files, directories, links, owners, modes) into it first, as
        /// Docker does for a named volume unless `volume-nocopy` is set.
        copy_image_content: bool,
    },
    /// A tmpfs.
    Tmpfs {
        /// Path in the container.
        target: String,
        /// Size limit in bytes (0: the kernel's default, half of RAM).
        size_bytes: u64,
        /// Mode of the mount's root, e.g. `0o1777`.
        mode: u32,
    },
}

/// Mount propagation of a bind mount (`bind-propagation` in Docker).
///
/// Shared and slave propagation need the source to be on a shared mount of the host (a slave
/// one will do for slave propagation): `mount --make-shared MOUNTPOINT`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Propagation {
    /// Private, with every mount below it private too: nothing propagates (Docker's default).
    #[default]
    Rprivate,
    /// Private; mounts below it keep their own propagation.
    Private,
    /// Shared both ways, recursively.
    Rshared,
    /// Shared both ways.
    Shared,
    /// Host mounts reach the container, not the other way round, recursively.
    Rslave,
    /// Host mounts reach the container, not the other way round.
    Slave,
}

impl Propagation {
    /// The mount option naming it (`rprivate`, `shared`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rprivate => "rprivate",
            Self::Private => "private",
            Self::Rshared => "rshared",
            Self::Shared => "shared",
            Self::Rslave => "rslave",
            Self::Slave => "slave",
        }
    }
}

/// A resource limit of the container's processes (`--ulimit` in Docker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// Docker's name: `nofile`, `nproc`, `core`, `memlock`, `stack`, `cpu`, `fsize`, `data`,
    /// `as`, `locks`, `sigpending`, `msgqueue`, `nice`, `rtprio`, `rttime` or `rss`.
    pub name: String,
    /// The soft limit; at most `hard`.
    pub soft: u64,
    /// The hard limit; `u64::MAX` is unlimited.
    pub hard: u64,
}

/// Resource limits, applied through cgroups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU limit in nano-CPUs (1e9 = one CPU, at least 1e7), as a CFS quota over a 100 ms period.
    pub nano_cpus: Option<u64>,
    /// Relative CPU weight (cgroup v1 shares, 2–262144).
    pub cpu_shares: Option<u64>,
    /// Memory limit in bytes; a process over it is OOM-killed.
    pub memory_bytes: Option<u64>,
    /// Maximum number of processes.
    pub pids: Option<i64>,
}

/// What to run. Fields left empty take the image's values (entrypoint, command, user, workdir).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Container ID, unique in the runtime's namespace (`[A-Za-z0-9][A-Za-z0-9_.-]*`, ≤ 76 chars).
    pub id: String,
    /// Image reference, as returned by [`ContainerRuntime::ensure_image`](crate::ContainerRuntime::ensure_image).
    pub image: String,
    /// Overrides the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Overrides the image's command.
    pub args: Option<Vec<String>>,
    /// `KEY=value` entries, added to (and overriding) the image's.
    pub env: Vec<String>,
    /// `uid[:gid]` or a user name from the image's `/etc/passwd`.
    pub user: Option<String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// Hostname (UTS namespace).
    pub hostname: Option<String>,
    /// Labels, for [`ContainerRuntime::list`](crate::ContainerRuntime::list).
    pub labels: BTreeMap<String, String>,
    /// Join this network namespace (a path such as `/run/netns/NAME`); `None`: a new, empty one.
    pub netns: Option<PathBuf>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// Root filesystem read-only.
    pub read_only_rootfs: bool,
    /// Resource limits.
    pub resources: Resources,
    /// Stop signal (`SIGTERM` when `None` and the image names none).
    pub stop_signal: Option<String>,
    /// Content of `/etc/hosts`; `None`: a minimal one with localhost and the hostname.
    pub hosts: Option<String>,
    /// Content of `/etc/resolv.conf`; `None`: an empty one.
    pub resolv_conf: Option<String>,
    /// The seccomp filter on the container's processes: Docker's default profile unless
    /// [`Seccomp::Unconfined`].
    pub seccomp: Seccomp,
    /// Capabilities added to Docker's default set: `NET_ADMIN` or `CAP_NET_ADMIN` (any case), or
    /// `ALL` for every capability the kernel knows (less those dropped).
    pub capability_add: Vec<String>,
    /// Capabilities removed from Docker's default set; `ALL` leaves only those added.
    pub capability_drop: Vec<String>,
    /// Namespaced kernel parameters (`net.*`, `kernel.msg*`, `kernel.sem`, `kernel.shm*`,
    /// `fs.mqueue.*`), set in the container's namespaces.
    pub sysctls: BTreeMap<String, String>,
    /// Resource limits of the processes (`RLIMIT_*`).
    pub ulimits: Vec<Ulimit>,
    /// Run a minimal init as PID 1 that forwards signals to the command and reaps zombies, as
    /// Docker's `--init` ([`ContainerdConfig::init_binary`](crate::ContainerdConfig::init_binary)).
    pub init: bool,
    /// Supplementary groups of the process: names from the image's `/etc/group` or numbers.
    pub groups: Vec<String>,
}

/// Which seccomp filter a container's processes run under.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// Docker's default profile: an allowlist of ordinary syscalls, more with the capabilities
    /// that govern them (`mount` and `unshare` with `CAP_SYS_ADMIN`, `ptrace` with
    /// `CAP_SYS_PTRACE`, …); everything else fails with `EPERM`.
    #[default]
    Default,
    /// No filter, as Docker's `--security-opt seccomp=unconfined`.
    Unconfined,
}

impl ContainerSpec {
    /// Refuses an ID containerd would not take, or that could leave the runtime's state directory.
    pub(crate) fn check_id(&self) -> Result<(), crate::ContainerError> {
        let id = self.id.as_str();
        let valid = id.len() <= 76
            && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if valid {
            return Ok(());
        }
        Err(crate::ContainerError::InvalidSpec {
            id: id.to_owned(),
            reason: format!("id {id:?} must match [A-Za-z0-9][A-Za-z0-9_.-]* and be at most 76 characters"),
        })
    }
}

/// How a container's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code; 128 + N for a process killed by signal N.
    pub code: i32,
    /// Whether the kernel's OOM killer ended it.
    pub oom_killed: bool,
    /// When it started (`UNIX_EPOCH` when never started).
    pub started_at: SystemTime,
    /// When it exited.
    pub finished_at: SystemTime,
}

/// An image's health check: `HEALTHCHECK` in a Dockerfile, `config.Healthcheck` in the image's
/// config. As in Docker, a zero duration or retry count means "not set" (whoever runs the check
/// applies a default), and an empty `test` means "none of its own".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["CMD", arg, …]` (exec'd as is), `["CMD-SHELL", command]` (run by `/bin/sh -c`) or
    /// `["NONE"]` (checks disabled).
    pub test: Vec<String>,
    /// Between the end of one probe and the start of the next (and from start to the first).
    pub interval: Duration,
    /// A probe that runs longer has failed.
    pub timeout: Duration,
    /// After start, failures do not count for this long (until a probe passes).
    pub start_period: Duration,
    /// This many failures in a row make the container unhealthy.
    pub retries: u32,
}

/// A command to run in a running container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// Command and arguments (not passed through a shell).
    pub cmd: Vec<String>,
    /// Killed after this long; the output then says so and the exit code is 137.
    pub timeout: Duration,
}

/// The result of an exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code (137 when killed at the timeout).
    pub code: i32,
    /// Whether the timeout killed it.
    pub timed_out: bool,
    /// Standard output, at most 4 KiB kept (as Docker keeps for health checks).
    pub stdout: String,
    /// Standard error, at most 4 KiB kept.
    pub stderr: String,
}

/// Which log lines to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Only lines written at or after this time.
    pub since: Option<SystemTime>,
    /// Only the last N lines (of those `since` allows).
    pub tail: Option<usize>,
    /// Keep streaming new lines until the container exits.
    pub follow: bool,
}

/// A container's life-cycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Its main process runs.
    Running,
    /// Its main process has exited.
    Stopped,
}

/// A container found by [`ContainerRuntime::list`](crate::ContainerRuntime::list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Its ID.
    pub id: String,
    /// Its image reference.
    pub image: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Where it is in its life.
    pub state: ContainerState,
}

/// Something that happened to a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEvent {
    /// Its main process exited.
    Exited {
        /// The container.
        id: String,
        /// How.
        status: ExitStatus,
    },
}

//! The loaded project: typed, merged, interpolated, with every short syntax in its long form.
//!
//! Durations are [`Duration`]s, byte sizes are bytes, CPU counts are billionths of a CPU (as
//! Swarm's `NanoCPUs`), relative paths are absolute. Field names follow the compose keys so a
//! converter reads like the file it converts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A compose project: the merge of every file given, in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Project {
    /// The top-level `name:`, if a file sets it (the stack name on the command line wins).
    pub name: Option<String>,
    /// The directory relative paths were resolved against: the first file's, unless the
    /// caller set [`LoadOptions::working_dir`](crate::LoadOptions::working_dir).
    pub working_dir: PathBuf,
    /// Services by name.
    pub services: BTreeMap<String, Service>,
    /// Networks by their key in the file. A `default` network is added when a service uses it,
    /// as `docker compose` does; a service that lists no network is on `default`.
    pub networks: BTreeMap<String, Network>,
    /// Named volumes by key.
    pub volumes: BTreeMap<String, Volume>,
    /// Secrets by key.
    pub secrets: BTreeMap<String, Secret>,
    /// Configs by key.
    pub configs: BTreeMap<String, Config>,
    /// Top-level `x-` fields.
    pub extensions: BTreeMap<String, Value>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Service {
    /// The image to run (required: Swarm does not build).
    pub image: String,
    /// Arguments replacing the image's `CMD`; a string in the file is split as a shell would.
    pub command: Option<Vec<String>>,
    /// Replaces the image's `ENTRYPOINT`.
    pub entrypoint: Option<Vec<String>>,
    /// The environment: `env_file` entries first, `environment` over them. `None` is a variable
    /// named without a value and not set in the loader's environment either.
    pub environment: BTreeMap<String, Option<String>>,
    /// The env files read into [`environment`](Self::environment), absolute.
    pub env_file: Vec<EnvFile>,
    /// Container labels.
    pub labels: BTreeMap<String, String>,
    /// `user[:group]`.
    pub user: Option<String>,
    /// Working directory inside the container.
    pub working_dir: Option<String>,
    /// Container hostname.
    pub hostname: Option<String>,
    /// Time between the stop signal and a kill.
    pub stop_grace_period: Option<Duration>,
    /// Signal that stops the container.
    pub stop_signal: Option<String>,
    /// Read-only root filesystem.
    pub read_only: bool,
    /// Run an init process as PID 1.
    pub init: Option<bool>,
    /// Allocate a TTY.
    pub tty: bool,
    /// Keep stdin open.
    pub stdin_open: bool,
    /// Capabilities to add.
    pub cap_add: Vec<String>,
    /// Capabilities to drop.
    pub cap_drop: Vec<String>,
    /// Kernel parameters.
    pub sysctls: BTreeMap<String, String>,
    /// Resource limits by name (`nofile`, `nproc`, …).
    pub ulimits: BTreeMap<String, Ulimit>,
    /// DNS servers.
    pub dns: Vec<String>,
    /// DNS search domains.
    pub dns_search: Vec<String>,
    /// Resolver options.
    pub dns_opt: Vec<String>,
    /// Extra `/etc/hosts` entries, host name to address.
    pub extra_hosts: BTreeMap<String, String>,
    /// Supplementary groups.
    pub group_add: Vec<String>,
    /// Paths to mount a tmpfs on (`/run` or `/run:size=64m`).
    pub tmpfs: Vec<String>,
    /// Health check; `None` keeps the image's.
    pub healthcheck: Option<Healthcheck>,
    /// Swarm settings.
    pub deploy: Deploy,
    /// Published and exposed ports, one entry per port (ranges expanded).
    pub ports: Vec<Port>,
    /// Mounts.
    pub volumes: Vec<ServiceVolume>,
    /// Secrets given to the service.
    pub secrets: Vec<FileReference>,
    /// Configs given to the service.
    pub configs: Vec<FileReference>,
    /// Networks the service is attached to, by key in the top-level `networks`.
    pub networks: BTreeMap<String, ServiceNetwork>,
    /// Services to start first, and how long to wait for each.
    pub depends_on: BTreeMap<String, Dependency>,
    /// `os[/arch[/variant]]` the image must run on.
    pub platform: Option<String>,
    /// Log driver.
    pub logging: Option<Logging>,
    /// `x-` fields of the service.
    pub extensions: BTreeMap<String, Value>,
}

/// An env file named by `env_file:`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvFile {
    /// Absolute path.
    pub path: PathBuf,
    /// Whether a missing file is an error (`required: false` skips it).
    pub required: bool,
}

/// A soft and hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ulimit {
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// A health check.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args…]` or `["CMD-SHELL", command]`; a string in the file becomes
    /// `CMD-SHELL`, `disable: true` becomes `NONE`. Empty inherits the image's test.
    pub test: Vec<String>,
    /// Time between checks.
    pub interval: Option<Duration>,
    /// Time a check may take.
    pub timeout: Option<Duration>,
    /// Consecutive failures that make the container unhealthy.
    pub retries: Option<u64>,
    /// Start-up time during which failures do not count.
    pub start_period: Option<Duration>,
    /// Time between checks during the start period.
    pub start_interval: Option<Duration>,
}

/// `deploy:`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Deploy {
    /// How tasks are scheduled.
    pub mode: Mode,
    /// Task count for replicated services and jobs (`scale:` is the fallback).
    pub replicas: Option<u64>,
    /// Service labels (as opposed to container labels).
    pub labels: BTreeMap<String, String>,
    /// Resource limits and reservations.
    pub resources: Resources,
    /// When to restart tasks; from `restart:` when `deploy.restart_policy` is absent.
    pub restart_policy: Option<RestartPolicy>,
    /// How updates roll out.
    pub update_config: Option<UpdateConfig>,
    /// How rollbacks roll out.
    pub rollback_config: Option<UpdateConfig>,
    /// Where tasks may run.
    pub placement: Placement,
    /// How clients reach the service.
    pub endpoint_mode: Option<EndpointMode>,
}

/// `deploy.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A number of tasks (`replicated`).
    #[default]
    Replicated,
    /// One task per node (`global`).
    Global,
    /// Tasks that run to completion (`replicated-job`).
    ReplicatedJob,
    /// One run-to-completion task per node (`global-job`).
    GlobalJob,
}

/// `deploy.resources`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resources {
    /// Hard limits.
    pub limits: Option<Limits>,
    /// What the scheduler sets aside.
    pub reservations: Option<Reservations>,
}

/// `deploy.resources.limits`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    /// CPU, in billionths of a CPU (`cpus: "0.5"` is 500 000 000).
    pub nano_cpus: Option<u64>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
    /// Most processes.
    pub pids: Option<i64>,
}

/// `deploy.resources.reservations`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reservations {
    /// CPU, in billionths of a CPU.
    pub nano_cpus: Option<u64>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
    /// Discrete generic resources (`gpu: 2`), by kind.
    pub generic_resources: BTreeMap<String, i64>,
}

/// `deploy.restart_policy`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RestartPolicy {
    /// When to restart; Swarm's default is `any`.
    pub condition: Option<RestartCondition>,
    /// Time between restarts.
    pub delay: Option<Duration>,
    /// Most restarts.
    pub max_attempts: Option<u64>,
    /// Time a task must run for a restart to count as a success.
    pub window: Option<Duration>,
}

/// `deploy.restart_policy.condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartCondition {
    /// Never restart (`none`).
    None,
    /// Restart after a non-zero exit (`on-failure`).
    OnFailure,
    /// Always restart (`any`).
    Any,
}

/// `deploy.update_config` and `deploy.rollback_config`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateConfig {
    /// Tasks updated at once (0: all).
    pub parallelism: Option<u64>,
    /// Time between batches.
    pub delay: Option<Duration>,
    /// What to do when an update fails.
    pub failure_action: Option<FailureAction>,
    /// How long to watch each task after its update.
    pub monitor: Option<Duration>,
    /// Share of failed tasks tolerated, 0 to 1.
    pub max_failure_ratio: Option<f64>,
    /// Stop the old task first or start the new one first.
    pub order: Option<UpdateOrder>,
}

/// `failure_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureAction {
    /// `continue`.
    Continue,
    /// `rollback`.
    Rollback,
    /// `pause`.
    Pause,
}

/// `order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOrder {
    /// `stop-first`.
    StopFirst,
    /// `start-first`.
    StartFirst,
}

/// `deploy.placement`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    /// Constraints such as `node.role==manager`, as written.
    pub constraints: Vec<String>,
    /// Spread preferences, each a label such as `node.labels.zone`, outermost first.
    pub preferences: Vec<String>,
    /// Most tasks of the service on one node.
    pub max_replicas_per_node: Option<u64>,
}

/// `deploy.endpoint_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointMode {
    /// A virtual IP (`vip`).
    Vip,
    /// DNS round robin (`dnsrr`).
    Dnsrr,
}

/// One port, in the long syntax.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Port {
    /// Port inside the container.
    pub target: u16,
    /// Port on the routing mesh or host; `None` publishes nothing (or lets Swarm pick, for
    /// the long syntax with `mode: ingress` and no `published`).
    pub published: Option<u16>,
    /// Protocol.
    pub protocol: Protocol,
    /// Routing mesh or the task's host.
    pub mode: PortMode,
    /// Host address from the short syntax (`127.0.0.1:80:80`); Swarm listens on all addresses.
    pub host_ip: Option<String>,
    /// A name for the port.
    pub name: Option<String>,
    /// Application protocol (`http`, `grpc`, …).
    pub app_protocol: Option<String>,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// `tcp`.
    #[default]
    Tcp,
    /// `udp`.
    Udp,
    /// `sctp`.
    Sctp,
}

/// Where a port is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PortMode {
    /// On every node, through the routing mesh.
    #[default]
    Ingress,
    /// On the node running the task.
    Host,
}

/// One mount, in the long syntax.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceVolume {
    /// The kind of mount.
    pub kind: VolumeKind,
    /// Volume name (a key of the top-level `volumes`), absolute host path for binds, or
    /// `None` for anonymous volumes and tmpfs.
    pub source: Option<String>,
    /// Path in the container.
    pub target: String,
    /// Mount read-only.
    pub read_only: bool,
    /// `consistent`, `cached` or `delegated` (ignored on Linux).
    pub consistency: Option<String>,
    /// Bind options.
    pub bind: Option<BindOptions>,
    /// Volume options.
    pub volume: Option<VolumeOptions>,
    /// Tmpfs options.
    pub tmpfs: Option<TmpfsOptions>,
}

/// `type:` of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VolumeKind {
    /// A named or anonymous volume.
    #[default]
    Volume,
    /// A host path.
    Bind,
    /// A tmpfs.
    Tmpfs,
    /// A Windows named pipe.
    Npipe,
    /// A cluster (CSI) volume.
    Cluster,
    /// An image's filesystem.
    Image,
}

/// Bind options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BindOptions {
    /// `private`, `rprivate`, `shared`, `rshared`, `slave` or `rslave`.
    pub propagation: Option<String>,
    /// Create the host path when missing.
    pub create_host_path: Option<bool>,
    /// SELinux relabelling: `z` (shared) or `Z` (private).
    pub selinux: Option<String>,
}

/// Volume options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeOptions {
    /// Do not copy the image's content into a new volume.
    pub nocopy: bool,
    /// Mount a sub-path of the volume.
    pub subpath: Option<String>,
}

/// Tmpfs options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TmpfsOptions {
    /// Size in bytes.
    pub size: Option<u64>,
    /// File mode of the mount point.
    pub mode: Option<u32>,
}

/// A secret or config given to a service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileReference {
    /// Key in the top-level `secrets` or `configs`.
    pub source: String,
    /// File name or path in the container; `None` is the default (`/run/secrets/SOURCE` for a
    /// secret, `/SOURCE` for a config).
    pub target: Option<String>,
    /// Owner user ID.
    pub uid: Option<String>,
    /// Owner group ID.
    pub gid: Option<String>,
    /// File mode (`0440` in the file is octal).
    pub mode: Option<u32>,
}

/// A service's attachment to a network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceNetwork {
    /// Extra DNS names on this network.
    pub aliases: Vec<String>,
    /// Static IPv4 address.
    pub ipv4_address: Option<String>,
    /// Static IPv6 address.
    pub ipv6_address: Option<String>,
    /// Driver options for this attachment.
    pub driver_opts: BTreeMap<String, String>,
}

/// One `depends_on` edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dependency {
    /// What to wait for.
    pub condition: Condition,
    /// Restart this service when the dependency is updated.
    pub restart: bool,
    /// Whether a missing dependency is an error (`required: false` ignores it).
    pub required: bool,
}

/// `depends_on.*.condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord, Hash)]
pub enum Condition {
    /// The dependency has been started (`service_started`, the list syntax's meaning).
    #[default]
    Started,
    /// The dependency's health check passes (`service_healthy`).
    Healthy,
    /// The dependency ran to completion with status 0 (`service_completed_successfully`).
    CompletedSuccessfully,
}

impl Condition {
    /// The compose spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "service_started",
            Condition::Healthy => "service_healthy",
            Condition::CompletedSuccessfully => "service_completed_successfully",
        }
    }
}

/// `logging:`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Logging {
    /// Log driver; `None` keeps the daemon's.
    pub driver: Option<String>,
    /// Driver options.
    pub options: BTreeMap<String, String>,
}

/// A top-level network.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Network {
    /// The network's name when it is not the stack-prefixed key (always set for an external
    /// network that names one).
    pub name: Option<String>,
    /// Created elsewhere: looked up, never created or removed.
    pub external: bool,
    /// Driver (`overlay` when `None`, in Swarm).
    pub driver: Option<String>,
    /// Driver options.
    pub driver_opts: BTreeMap<String, String>,
    /// Standalone containers may attach.
    pub attachable: bool,
    /// No route outside the network.
    pub internal: bool,
    /// IPv6 enabled.
    pub enable_ipv6: Option<bool>,
    /// Address management.
    pub ipam: Option<Ipam>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `x-` fields.
    pub extensions: BTreeMap<String, Value>,
}

/// `ipam:`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ipam {
    /// IPAM driver.
    pub driver: Option<String>,
    /// Pools.
    pub config: Vec<IpamPool>,
    /// Driver options.
    pub options: BTreeMap<String, String>,
}

/// One `ipam.config` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpamPool {
    /// CIDR of the subnet.
    pub subnet: Option<String>,
    /// CIDR to allocate from.
    pub ip_range: Option<String>,
    /// Gateway address.
    pub gateway: Option<String>,
    /// Reserved addresses by host name.
    pub aux_addresses: BTreeMap<String, String>,
}

/// A top-level volume.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Volume {
    /// Name when it is not the stack-prefixed key.
    pub name: Option<String>,
    /// Created elsewhere: looked up, never created or removed.
    pub external: bool,
    /// Volume driver.
    pub driver: Option<String>,
    /// Driver options.
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `x-` fields.
    pub extensions: BTreeMap<String, Value>,
}

/// A top-level secret or config: where its content comes from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FileObject {
    /// Name when it is not the stack-prefixed key.
    pub name: Option<String>,
    /// The content's source.
    pub source: ObjectSource,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Secret driver (secrets only).
    pub driver: Option<String>,
    /// Secret driver options (secrets only).
    pub driver_opts: BTreeMap<String, String>,
    /// Template driver (`golang`).
    pub template_driver: Option<String>,
    /// `x-` fields.
    pub extensions: BTreeMap<String, Value>,
}

/// A top-level secret.
pub type Secret = FileObject;
/// A top-level config.
pub type Config = FileObject;

/// Where a secret's or config's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ObjectSource {
    /// Created elsewhere: looked up, never created or removed.
    #[default]
    External,
    /// A file, absolute.
    File(PathBuf),
    /// An environment variable of the loader's environment, read at load time.
    Environment {
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
    },
    /// Inline content (configs only).
    Content(String),
}

/// A value of an `x-` field: YAML's core schema.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// `null`, `~` or nothing.
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating point number.
    Float(f64),
    /// A string.
    String(String),
    /// A list.
    Seq(Vec<Value>),
    /// A mapping, keys sorted.
    Map(BTreeMap<String, Value>),
}

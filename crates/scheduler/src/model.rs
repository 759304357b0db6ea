//! The scheduler's input types: a snapshot of nodes and a batch of tasks.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::constraint::Constraint;
use crate::preference::PlacementPreference;

/// A node's role in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Role {
    /// A worker: runs tasks, holds no Raft state.
    #[default]
    Worker,
    /// A manager: a Raft member that also runs tasks unless drained.
    Manager,
}

impl Role {
    /// The lower-case name used in constraints (`worker`, `manager`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Manager => "manager",
        }
    }
}

/// What an operator allows on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Availability {
    /// New tasks may be placed.
    #[default]
    Active,
    /// Running tasks stay, no new tasks are placed.
    Pause,
    /// Tasks are moved away and no new tasks are placed.
    Drain,
}

/// The node's health as the dispatcher sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NodeStatus {
    /// Not yet known.
    Unknown,
    /// Heartbeating: the only status that accepts new tasks.
    #[default]
    Ready,
    /// Missed heartbeats.
    Down,
    /// Session closed.
    Disconnected,
}

/// An operating system and CPU architecture, as reported by a node or accepted by an image.
///
/// In a task's list an empty field matches anything. Comparison ignores case and treats
/// `x86_64` as `amd64` and `aarch64` as `arm64`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Platform {
    /// Operating system, such as `linux`.
    pub os: String,
    /// CPU architecture, such as `amd64`.
    pub arch: String,
}

impl Platform {
    /// A platform from its OS and architecture.
    pub fn new(os: impl Into<String>, arch: impl Into<String>) -> Self {
        Platform { os: os.into(), arch: arch.into() }
    }
}

/// Compute resources: what a node has, what its tasks hold, or what a task reserves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Resources {
    /// CPU in billionths of a core.
    pub nano_cpus: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Generic resources (such as `gpu`) counted by kind. Named resources count one each;
    /// which named instance a task gets is decided on the node, not here.
    pub generic: BTreeMap<String, u64>,
}

impl Resources {
    /// Resources with CPU and memory only.
    pub fn new(nano_cpus: u64, memory_bytes: u64) -> Self {
        Resources { nano_cpus, memory_bytes, generic: BTreeMap::new() }
    }

    /// Adds `count` units of a generic resource kind.
    pub fn with_generic(mut self, kind: impl Into<String>, count: u64) -> Self {
        *self.generic.entry(kind.into()).or_insert(0) += count;
        self
    }
}

/// The transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

/// A host-mode published port: bound on the node itself, so two tasks cannot share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// The transport protocol.
    pub protocol: Protocol,
    /// The port on the node; 0 lets the node pick one and never conflicts.
    pub port: u16,
}

impl HostPort {
    /// A TCP port.
    pub fn tcp(port: u16) -> Self {
        HostPort { protocol: Protocol::Tcp, port }
    }

    /// A UDP port.
    pub fn udp(port: u16) -> Self {
        HostPort { protocol: Protocol::Udp, port }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        };
        write!(f, "{}/{proto}", self.port)
    }
}

/// One node of the snapshot the scheduler places onto.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// The node ID.
    pub id: String,
    /// The node's hostname.
    pub hostname: String,
    /// Manager or worker.
    pub role: Role,
    /// Operator-set availability.
    pub availability: Availability,
    /// Health as seen by the dispatcher.
    pub status: NodeStatus,
    /// The node's OS and architecture.
    pub platform: Platform,
    /// Operator-set labels (`node.labels.KEY`).
    pub labels: BTreeMap<String, String>,
    /// Labels reported by the node's engine (`engine.labels.KEY`).
    pub engine_labels: BTreeMap<String, String>,
    /// The node's addresses, matched by `node.ip` constraints.
    pub addresses: Vec<IpAddr>,
    /// Everything the node has.
    pub total: Resources,
    /// What the tasks already on the node reserve.
    pub reserved: Resources,
    /// Host-mode ports already bound by tasks on the node.
    pub host_ports: Vec<HostPort>,
    /// Active tasks on the node, by service ID.
    pub tasks_by_service: BTreeMap<String, u64>,
    /// Failures of each service's tasks on this node within the failure window (5 minutes in
    /// Swarm); the caller counts them, since the scheduler has no clock.
    pub recent_failures: BTreeMap<String, u32>,
}

impl Node {
    /// A ready, active worker with the given ID (also used as hostname) and nothing else.
    pub fn new(id: impl Into<String>) -> Self {
        let id = id.into();
        Node { hostname: id.clone(), id, ..Node::default() }
    }

    /// Active tasks on the node, all services together.
    pub fn total_tasks(&self) -> u64 {
        self.tasks_by_service.values().sum()
    }
}

/// What a task needs from a node. Tasks of one service version share one spec.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TaskSpec {
    /// Resources the task reserves on its node.
    pub reservations: Resources,
    /// Constraints that all must hold on the node.
    pub constraints: Vec<Constraint>,
    /// Spread preferences, outermost first.
    pub preferences: Vec<PlacementPreference>,
    /// At most this many tasks of the service per node; 0 means no limit.
    pub max_replicas: u64,
    /// Host-mode published ports.
    pub host_ports: Vec<HostPort>,
    /// Platforms the image runs on; empty means any.
    pub platforms: Vec<Platform>,
}

/// One task to place.
#[derive(Debug, Clone)]
pub struct Task {
    /// The task ID.
    pub id: String,
    /// The service the task belongs to.
    pub service_id: String,
    /// What the task needs; shared by the tasks of one service version.
    pub spec: Arc<TaskSpec>,
    /// For a global service's task: the one node it may go to.
    pub node_id: Option<String>,
}

impl Task {
    /// A task of `service_id` that may go to any node.
    pub fn new(id: impl Into<String>, service_id: impl Into<String>, spec: Arc<TaskSpec>) -> Self {
        Task { id: id.into(), service_id: service_id.into(), spec, node_id: None }
    }

    /// A task that may go only to `node_id` (a global service's task).
    pub fn pinned(
        id: impl Into<String>,
        service_id: impl Into<String>,
        spec: Arc<TaskSpec>,
        node_id: impl Into<String>,
    ) -> Self {
        Task { node_id: Some(node_id.into()), ..Task::new(id, service_id, spec) }
    }
}

//! Shoal's worker: joins a cluster with a worker token, keeps a session with a manager (failing
//! over to the others the session names), and runs the tasks assigned to its node through a
//! [`ContainerRuntime`](shoal_runtime::ContainerRuntime), reporting every state change.
//!
//! With networking on ([`NetworkConfig`]), each task runs in a network namespace wired into its
//! overlay networks, with egress, VIP load balancing, the routing mesh and embedded DNS.
//!
//! Composed from `runtime`, `overlay`, `ipvs-lb`, `embedded-dns` and `ca-pki`, speaking `api`;
//! the `shoal-agent` binary and the manager process (which runs a worker too) embed it.
#![warn(missing_docs)]

mod etc;
mod executor;
mod files;
mod health;
mod join;
mod leave;
mod logs;
mod managers;
pub mod mesh;
pub mod metrics;
mod network;
mod session;
mod worker;

pub use executor::NodeDirs;
pub use join::{JoinError, join};
pub use leave::{DataDirLock, LeaveError, Left, LockError, Namespaces, connect_containerd, leave, lock_for_leave};
pub use metrics::AgentMetrics;
pub use network::{LbBackend, NetworkConfig, NetworkError, Networking, TaskNetwork, parse_lb_backend};
pub use session::{Agent, AgentConfig, AgentError, AgentExit};
/// An address with a prefix length (the gateway subnet of [`NetworkConfig`]).
pub use shoal_overlay::Cidr;
/// A registry client that resolves tags to digests without pulling (the manager process
/// answers the control API's `ResolveImage` with it), and the image references it takes.
pub use shoal_runtime::{Reference, Registry};
pub use worker::{
    WorkerConfig, WorkerError, describe_node, find_logger, forget_worker, holds_worker, join_worker, record_worker,
    run_node, run_worker, worker_advertise_addr,
};

// For the integration tests only (`tests/health.rs`): the executor without a session. Hidden,
// and not part of the API.
#[doc(hidden)]
pub mod testing {
    pub use crate::executor::Standalone;
}

/// Labels the agent puts on its containers, to find them again after a restart.
pub mod labels {
    /// The task a container runs.
    pub const TASK: &str = "io.shoal.task.id";
    /// The node that runs it.
    pub const NODE: &str = "io.shoal.node.id";
    /// The task's service.
    pub const SERVICE: &str = "io.shoal.service.id";
}

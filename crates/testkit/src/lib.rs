//! Test support for Shoal: a network-namespace cluster harness, a private containerd, a local
//! registry and the OCI test images, shared by the workspace tests and `cargo xtask`.
//!
//! Everything this crate creates carries a per-run prefix ([`RUN_PREFIX_ROOT`] followed by a
//! random run ID) and is removed by an RAII guard, also when a test panics; [`sweep`] removes what
//! a killed run left behind. Nothing here routes out of the test namespaces: node namespaces have
//! no default route and the underlay bridge lives in a namespace of its own.
#![warn(missing_docs)]

mod cmd;
mod containerd;
pub mod images;
mod netns;
pub mod privileged;
mod registry;
pub mod shoal;
mod sweep;

pub use cmd::CommandError;
pub use containerd::{Containerd, ContainerdError, task_handles_sigterm};
pub use netns::{Cluster, HarnessError, Node, Process, UNDERLAY_GATEWAY, in_netns};
pub use registry::{Registry, RegistryError};
pub use sweep::{SweepReport, sweep, sweep_prefix};

/// Every namespace, directory and containerd namespace made by this crate starts with this.
pub const RUN_PREFIX_ROOT: &str = "shoaltest-";

//! Test support for Shoal: a network-namespace cluster harness, a private containerd, a local
//! registry and the OCI test images, shared by the workspace tests and `cargo xtask`; and one
//! harness over several kinds of machines ([`Testbed`]: netns nodes, qemu VMs, SSH hosts).
//!
//! Everything this crate creates carries a per-run prefix ([`RUN_PREFIX_ROOT`] followed by a
//! random run ID) and is removed by an RAII guard, also when a test panics; [`sweep`] removes what
//! a killed run left behind. Nothing here routes out of the test namespaces: node namespaces have
//! no default route and the underlay bridge lives in a namespace of its own.
#![warn(missing_docs)]

pub mod capture;
mod cmd;
mod containerd;
pub mod images;
pub mod inventory;
mod netns;
mod node;
pub mod privileged;
mod registry;
pub mod shoal;
pub mod ssh;
mod sweep;
pub mod vm;

pub use cmd::CommandError;
pub use containerd::{Containerd, ContainerdError, task_handles_sigterm};
pub use netns::{Cluster, HarnessError, Node, Process, UNDERLAY_GATEWAY, in_netns};
pub use node::{Features, NetnsNode, NodeLayout, NodeProcess, TestNode, Testbed};
pub use registry::{Registry, RegistryError, push_all};
pub use sweep::{SweepReport, sweep, sweep_prefix};

/// Every namespace, directory and containerd namespace made by this crate starts with this.
pub const RUN_PREFIX_ROOT: &str = "shoaltest-";

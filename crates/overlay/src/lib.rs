//! Swarm-style overlay networks on Linux: per-network sandbox namespaces with a bridge and a
//! VXLAN device, veth endpoints into container namespaces, static FDB and neighbour entries for
//! endpoints on other nodes, and a gateway bridge with masquerade for egress.
//!
//! The work is split the way the rest of Shoal splits dataplanes: [`plan`] is pure (desired state
//! and observed state in, [`Op`]s out), and a [`Dataplane`] observes and applies — [`Kernel`]
//! over rtnetlink and nftables, [`FakeDataplane`] in memory. [`Overlay`] ties them together:
//!
//! ```no_run
//! use shoal_overlay::{ContainerSpec, Desired, Kernel, KernelConfig, LocalEndpoint, NetworkSpec, Overlay};
//!
//! let mut overlay = Overlay::new(Kernel::new(KernelConfig::default())?, Default::default());
//! let net = NetworkSpec::new("blue", 4097, "198.18.0.0/24".parse()?, "198.18.0.1".parse()?);
//! let endpoint = LocalEndpoint::new("blue", "eth0", "198.18.0.2".parse()?);
//! let container =
//!     ContainerSpec { id: "c1".into(), netns: "/run/netns/c1".into(), endpoints: vec![endpoint], egress: None };
//! let desired = Desired { networks: vec![net], containers: vec![container], ..Default::default() };
//! overlay.reconcile(&desired)?;
//! assert!(overlay.reconcile(&desired)?.applied.is_empty()); // idempotent
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The same with the fake, which needs no privileges — and shows that forgetting a remote
//! endpoint touches only its entries:
//!
//! ```
//! use shoal_overlay::{Desired, FakeDataplane, NetworkSpec, Op, Overlay, RemoteEndpoint};
//!
//! let mut overlay = Overlay::new(FakeDataplane::new(), Default::default());
//! let net = NetworkSpec::new("blue", 4097, "198.18.0.0/24".parse()?, "198.18.0.1".parse()?);
//! let peer = |ip: &str| -> Result<RemoteEndpoint, std::net::AddrParseError> {
//!     Ok(RemoteEndpoint::new("blue", ip.parse()?, "192.0.2.12".parse()?))
//! };
//! let mut desired = Desired { networks: vec![net], remotes: vec![peer("198.18.0.3")?, peer("198.18.0.4")?], ..Default::default() };
//! overlay.reconcile(&desired)?;
//! desired.remotes.pop();
//! let report = overlay.reconcile(&desired)?;
//! assert!(matches!(report.applied.as_slice(), [Op::DeleteFdb { .. }, Op::DeleteNeighbour { .. }]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod dataplane;
pub mod esp;
mod fake;
mod kernel;
mod model;
mod netns;
mod nft;
mod plan;
pub mod xfrm;

pub use dataplane::{ApplyError, Dataplane, ObserveError};
pub use fake::FakeDataplane;
pub use kernel::{Kernel, KernelConfig, KernelError};
pub use model::{
    Cidr, CidrParseError, ContainerSpec, DEFAULT_MTU, DEFAULT_VXLAN_PORT, Desired, Egress, GATEWAY_BRIDGE,
    GatewayBridge, LINK_PREFIX, LocalEndpoint, MacAddr, Naming, NetworkSpec, RemoteEndpoint, SANDBOX_BRIDGE, Subnet,
};
pub use netns::{delete_named, list_named};
pub use plan::{
    ContainerState, LinkState, NodeState, Observed, Op, Place, PlanError, SandboxState, VxlanState, missing_namespaces,
    plan,
};

/// A reconcile pass failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The desired state is inconsistent.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The current state could not be read.
    #[error(transparent)]
    Observe(#[from] ObserveError),
    /// An operation failed; those before it were applied.
    #[error("after {applied} of {planned} operations: {source}")]
    Apply {
        /// Operations applied before the failure.
        applied: usize,
        /// Operations planned.
        planned: usize,
        /// The failure.
        source: Box<ApplyError>,
    },
}

/// What a reconcile pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The operations applied, in order; empty when nothing needed to change.
    pub applied: Vec<Op>,
    /// Desired containers left out because their network namespace does not exist.
    pub missing: Vec<String>,
}

/// Reconciles a node's overlay networks: observe, plan, apply.
#[derive(Debug)]
pub struct Overlay<D> {
    dataplane: D,
    naming: Naming,
}

impl<D: Dataplane> Overlay<D> {
    /// Drives `dataplane`, naming what it makes with `naming`.
    pub fn new(dataplane: D, naming: Naming) -> Self {
        Self { dataplane, naming }
    }

    /// The names in use.
    pub fn naming(&self) -> &Naming {
        &self.naming
    }

    /// The dataplane (for a fake's log and state).
    pub fn dataplane(&self) -> &D {
        &self.dataplane
    }

    /// Mutable access to the dataplane.
    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dataplane
    }

    /// Observes and plans without changing anything.
    pub fn plan(&mut self, desired: &Desired) -> Result<Vec<Op>, ReconcileError> {
        let observed = self.dataplane.observe(desired, &self.naming);
        self.dataplane.finish();
        Ok(plan(desired, &observed?)?)
    }

    /// Brings the node to `desired`. Applying the same state again changes nothing; after a
    /// failure or a crash, the next pass continues from what is there.
    pub fn reconcile(&mut self, desired: &Desired) -> Result<Report, ReconcileError> {
        let span = tracing::info_span!("overlay_reconcile", networks = desired.networks.len());
        let _entered = span.enter();
        let result = self.reconcile_inner(desired);
        self.dataplane.finish();
        result
    }

    fn reconcile_inner(&mut self, desired: &Desired) -> Result<Report, ReconcileError> {
        let observed = self.dataplane.observe(desired, &self.naming)?;
        let ops = plan(desired, &observed)?;
        let missing = missing_namespaces(desired, &observed);
        for container in &missing {
            tracing::warn!(container = %container, "container network namespace not found; not wired");
        }
        let planned = ops.len();
        for (applied, op) in ops.iter().enumerate() {
            tracing::debug!(op = %op, "apply");
            self.dataplane.apply(op, &self.naming).map_err(|source| ReconcileError::Apply {
                applied,
                planned,
                source: Box::new(source),
            })?;
        }
        if planned > 0 {
            tracing::info!(operations = planned, "overlay reconciled");
        }
        Ok(Report { applied: ops, missing })
    }

    /// Removes everything this library made on the node: every sandbox with the prefix, every
    /// egress veth, the gateway bridge and the masquerade table.
    pub fn teardown_all(&mut self) -> Result<Report, ReconcileError> {
        self.reconcile(&Desired::default())
    }

    /// Removes everything of `network` on this node: its sandbox, bridge, VXLAN device, peer
    /// entries and the veths of its endpoints. Containers keep their other networks.
    pub fn teardown(&mut self, network: &str) -> Result<Report, ReconcileError> {
        let observed = self.dataplane.observe(&Desired::default(), &self.naming);
        let result = observed.map_err(ReconcileError::from).and_then(|observed| {
            if !observed.sandboxes.contains_key(network) {
                return Ok(Report::default());
            }
            let op = Op::DeleteSandbox { network: network.to_owned() };
            self.dataplane.apply(&op, &self.naming).map_err(|source| ReconcileError::Apply {
                applied: 0,
                planned: 1,
                source: Box::new(source),
            })?;
            Ok(Report { applied: vec![op], missing: Vec::new() })
        });
        self.dataplane.finish();
        result
    }
}

//! The seam between the planner and the kernel: a [`Dataplane`] observes and applies. The
//! netlink implementation is [`Kernel`](crate::Kernel); [`FakeDataplane`](crate::FakeDataplane)
//! simulates one in memory for tests of code that drives this crate.

use crate::model::{Desired, Naming};
use crate::plan::{Observed, Op};

/// Reads and changes a node's network state.
pub trait Dataplane {
    /// What is there now: sandboxes named with `naming`'s prefix, the namespaces of `desired`'s
    /// containers, and what this library made in the node namespace.
    fn observe(&mut self, desired: &Desired, naming: &Naming) -> Result<Observed, ObserveError>;

    /// Carries out one operation.
    fn apply(&mut self, op: &Op, naming: &Naming) -> Result<(), ApplyError>;

    /// Called after each reconcile pass; releases what the pass held open.
    fn finish(&mut self) {}
}

/// Reading the kernel state failed.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// A netlink request failed.
    #[error("observe {what}: {source}")]
    Netlink {
        /// What was being read, naming the namespace and device.
        what: String,
        /// The netlink error.
        source: rtnetlink::Error,
    },
    /// A namespace or file could not be read.
    #[error("observe {what}: {source}")]
    Io {
        /// What was being read, naming the namespace or path.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The xfrm state (ESP SAs and policies) could not be read.
    #[error("observe {what}: {source}")]
    Xfrm {
        /// What was being read.
        what: String,
        /// The xfrm error.
        source: crate::xfrm::XfrmError,
    },
    /// `nft`'s text listing could not be read.
    #[error("observe {what}: {detail}")]
    NftText {
        /// What was being read.
        what: String,
        /// What went wrong, with what `nft` printed.
        detail: String,
    },
    /// nftables could not be listed.
    #[error("observe {what}: {source}{stderr}")]
    Nft {
        /// What was being read.
        what: String,
        /// The nftables error.
        source: Box<nftables::helper::NftablesError>,
        /// What `nft` printed on standard error (`": …"`), empty when nothing.
        stderr: String,
    },
}

/// Carrying out an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A netlink request failed.
    #[error("{op}: {step}: {source}")]
    Netlink {
        /// The operation (names the network, device and address).
        op: String,
        /// The step that failed, naming the namespace.
        step: String,
        /// The netlink error.
        source: rtnetlink::Error,
    },
    /// A namespace or file operation failed.
    #[error("{op}: {step}: {source}")]
    Io {
        /// The operation.
        op: String,
        /// The step that failed, naming the namespace or path.
        step: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// nftables refused the rule set.
    #[error("{op}: {source}{stderr}")]
    Nft {
        /// The operation.
        op: String,
        /// The nftables error.
        source: Box<nftables::helper::NftablesError>,
        /// What `nft` printed on standard error (`": …"`), empty when nothing.
        stderr: String,
    },
    /// The kernel refused an ESP SA or policy.
    #[error("{op}: {source}")]
    Xfrm {
        /// The operation.
        op: String,
        /// The xfrm error (it says when the kernel has no ESP at all).
        source: crate::xfrm::XfrmError,
    },
    /// `nft` could not be run, or refused a script.
    #[error("{op}: {detail}")]
    NftScript {
        /// The operation.
        op: String,
        /// What went wrong, with what `nft` printed.
        detail: String,
    },
    /// Something the operation needs is not there.
    #[error("{op}: {missing} not found")]
    NotFound {
        /// The operation.
        op: String,
        /// What is missing: a device in a namespace, a namespace.
        missing: String,
    },
    /// A failure injected into the fake dataplane.
    #[error("{op}: injected failure")]
    Injected {
        /// The operation.
        op: String,
    },
}

impl ApplyError {
    /// Whether the kernel has no ESP or no AES-GCM, so that no encrypted network can work on
    /// this node (as opposed to a failure worth retrying).
    pub fn no_esp(&self) -> bool {
        matches!(self, Self::Xfrm { source, .. } if source.no_esp())
    }
}

/// `": <stderr>"` of a failed `nft` run, which the nftables error's message leaves out.
pub(crate) fn nft_stderr(err: &nftables::helper::NftablesError) -> String {
    match err {
        nftables::helper::NftablesError::NftFailed { stderr, .. } if !stderr.trim().is_empty() => {
            format!(": {}", stderr.trim())
        }
        _ => String::new(),
    }
}

//! Service load balancing for Shoal: virtual services (a VIP or node address, a port and a
//! protocol) balanced across weighted backends inside a network namespace, through nftables or
//! through IPVS over generic netlink, behind one trait. A service of port 0
//! ([`ServiceKey::any_port`]) takes every port of its protocol at its address, as a Swarm VIP
//! does, its connections keeping the client's destination port; a specific-port service at the
//! same address takes its own port.
//!
//! - [`NftBalancer`] programs one nftables table per namespace: a verdict map keyed by
//!   (destination address, protocol, destination port), then one keyed by (address, protocol)
//!   for any-port services, jumps to one chain per service, which DNATs with `numgen inc`
//!   through a shared map of the backends' weight slots. A change to one service touches only
//!   that service's chain and elements, and every change is one nf_tables transaction sent on a
//!   netlink socket the balancer keeps open (`nft` creates and lists).
//! - [`IpvsBalancer`] talks to the kernel's `IPVS` generic-netlink family: NAT forwarding, round
//!   robin (weighted round robin when the weights differ). An any-port service is a fwmark
//!   service whose packets an nftables table of its own marks; source NAT is a masquerade rule
//!   in that table that matches the connection's original destination, with IPVS connection
//!   tracking on in the namespace.
//! - [`open`] picks IPVS when the family resolves in the namespace and nftables otherwise, and
//!   logs the choice.
//!
//! Draining a backend is setting its weight to 0: it gets no new connections and keeps the ones
//! it has. What happens to a removed backend's flows is described on [`LoadBalancer`].
#![warn(missing_docs)]

// For the fuzz tests only (`tests/fuzz.rs`): hidden, and not part of the API.
#[doc(hidden)]
pub mod fuzz;
mod ipvs;
mod model;
mod netns;
mod nft;

pub use ipvs::IpvsBalancer;
pub use model::{Backend, BackendKind, MAX_WEIGHT, Protocol, Service, ServiceKey};
pub use netns::Netns;
pub use nft::NftBalancer;

use std::net::SocketAddrV4;

/// Opening a load balancer in a namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The namespace could not be entered.
    #[error("cannot enter network namespace {netns}: {source}")]
    Netns {
        /// The namespace.
        netns: Netns,
        /// Why.
        source: std::io::Error,
    },
    /// The nftables table could not be created or read.
    #[error("cannot set up nftables table {table} in network namespace {netns}: {detail}")]
    Nft {
        /// The namespace.
        netns: Netns,
        /// The table.
        table: String,
        /// What nft said.
        detail: String,
    },
    /// The IPVS generic-netlink family could not be used.
    #[error("cannot use IPVS in network namespace {netns}: {detail}")]
    Ipvs {
        /// The namespace.
        netns: Netns,
        /// What went wrong.
        detail: String,
    },
}

/// Applying a change (set, remove, replace all, drain) failed. Nothing of a failed nftables
/// change is applied (one `nft` transaction); IPVS applies message by message and stops at the
/// first failure, which the message names.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A service or backend is not acceptable.
    #[error("invalid service {service}: {reason}")]
    Invalid {
        /// The service.
        service: ServiceKey,
        /// Why.
        reason: String,
    },
    /// Drain named a service that is not set.
    #[error("no service {service} in network namespace {netns}")]
    NoSuchService {
        /// The namespace.
        netns: Netns,
        /// The service.
        service: ServiceKey,
    },
    /// Drain named a backend the service does not have.
    #[error("service {service} has no backend {backend} in network namespace {netns}")]
    NoSuchBackend {
        /// The namespace.
        netns: Netns,
        /// The service.
        service: ServiceKey,
        /// The backend.
        backend: SocketAddrV4,
    },
    /// `nft` rejected the batch.
    #[error("nftables table {table} in network namespace {netns}: {detail}")]
    Nft {
        /// The namespace.
        netns: Netns,
        /// The table.
        table: String,
        /// What nft said.
        detail: String,
    },
    /// The kernel rejected an IPVS request.
    #[error("IPVS in network namespace {netns}: {detail}")]
    Ipvs {
        /// The namespace.
        netns: Netns,
        /// The request and the kernel's answer.
        detail: String,
    },
    /// Listing the current state (needed by the change) failed.
    #[error(transparent)]
    List(#[from] ListError),
}

/// Reading the services back from the kernel failed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// `nft` could not list the table, or printed something this crate does not understand.
    #[error("cannot list nftables table {table} in network namespace {netns}: {detail}")]
    Nft {
        /// The namespace.
        netns: Netns,
        /// The table.
        table: String,
        /// What went wrong.
        detail: String,
    },
    /// The IPVS dump failed.
    #[error("cannot list IPVS services in network namespace {netns}: {detail}")]
    Ipvs {
        /// The namespace.
        netns: Netns,
        /// What went wrong.
        detail: String,
    },
}

/// A load balancer in one network namespace. Calls block (they run `nft` or talk netlink);
/// async callers use `spawn_blocking`.
///
/// Conntrack hygiene: established flows are never flushed by this crate. Draining (weight 0)
/// keeps a backend's flows and sends it no new ones. After removal, nftables flows keep their
/// NAT binding and drain naturally: they reach the old backend until they end or their conntrack
/// entry times out. IPVS keeps a removed destination's connection entries too, but by the
/// kernel's default (`net.ipv4.vs.expire_nodest_conn = 0`) silently drops their packets, so
/// with IPVS a removed backend's flows stop. Drain first, remove when the connections are gone.
pub trait LoadBalancer: std::fmt::Debug + Send {
    /// Which kind of dataplane this is.
    fn kind(&self) -> BackendKind;

    /// The namespace it programs.
    fn netns(&self) -> &Netns;

    /// Adds these services or replaces them (matched by key); other services are untouched.
    fn set(&mut self, services: &[Service]) -> Result<(), ApplyError>;

    /// Removes these services; keys that are not set are ignored.
    fn remove(&mut self, keys: &[ServiceKey]) -> Result<(), ApplyError>;

    /// Makes the set of services exactly `services`, touching only what differs.
    fn replace_all(&mut self, services: &[Service]) -> Result<(), ApplyError>;

    /// The services as the kernel has them, sorted by key, backends sorted by address and port.
    fn list(&self) -> Result<Vec<Service>, ListError>;

    /// Sets one backend's weight to 0: no new connections, existing ones kept. Only that
    /// service is touched (from what this balancer applied, not from a full listing).
    fn drain(&mut self, service: &ServiceKey, backend: SocketAddrV4) -> Result<(), ApplyError>;
}

/// What each dataplane provides; [`LoadBalancer`] is the same for both on top of it (set,
/// remove, replace and drain are all one change of what was applied).
trait Dataplane: std::fmt::Debug + Send {
    fn kind(&self) -> BackendKind;
    fn netns(&self) -> &Netns;
    /// The services this balancer applied (or adopted when it opened), by key.
    fn applied(&self) -> &std::collections::BTreeMap<ServiceKey, Service>;
    /// Sets `set` and removes `remove` in one transaction, skipping what is unchanged.
    fn apply(&mut self, set: &[Service], remove: &[ServiceKey]) -> Result<(), ApplyError>;
    fn list(&self) -> Result<Vec<Service>, ListError>;
}

impl<T: Dataplane> LoadBalancer for T {
    fn kind(&self) -> BackendKind {
        Dataplane::kind(self)
    }

    fn netns(&self) -> &Netns {
        Dataplane::netns(self)
    }

    fn set(&mut self, services: &[Service]) -> Result<(), ApplyError> {
        self.apply(services, &[])
    }

    fn remove(&mut self, keys: &[ServiceKey]) -> Result<(), ApplyError> {
        self.apply(&[], keys)
    }

    fn replace_all(&mut self, services: &[Service]) -> Result<(), ApplyError> {
        let wanted: std::collections::BTreeSet<ServiceKey> = services.iter().map(|s| s.key).collect();
        let removals: Vec<ServiceKey> = self.applied().keys().filter(|k| !wanted.contains(k)).copied().collect();
        self.apply(services, &removals)
    }

    fn list(&self) -> Result<Vec<Service>, ListError> {
        Dataplane::list(self)
    }

    fn drain(&mut self, service: &ServiceKey, backend: SocketAddrV4) -> Result<(), ApplyError> {
        let drained = drained(self.applied(), Dataplane::netns(self), service, backend)?;
        self.apply(&[drained], &[])
    }
}

/// The service `service` of `applied` with `backend`'s weight set to 0.
fn drained(
    applied: &std::collections::BTreeMap<ServiceKey, Service>,
    netns: &Netns,
    service: &ServiceKey,
    backend: SocketAddrV4,
) -> Result<Service, ApplyError> {
    let Some(found) = applied.get(service) else {
        return Err(ApplyError::NoSuchService { netns: netns.clone(), service: *service });
    };
    let mut found = found.clone();
    let Some(b) = found.backends.iter_mut().find(|b| b.socket_addr() == backend) else {
        return Err(ApplyError::NoSuchBackend { netns: netns.clone(), service: *service, backend });
    };
    b.weight = 0;
    Ok(found)
}

/// Opens the best load balancer for `netns`: IPVS when its generic-netlink family resolves there,
/// nftables (table `table`) otherwise. The choice and the reason are logged.
pub fn open(netns: &Netns, table: &str) -> Result<Box<dyn LoadBalancer>, OpenError> {
    open_with(netns, table, None)
}

/// Like [`open`], with the backend chosen by the caller when `backend` is `Some` (an operator's
/// `--lb-backend`, a benchmark comparing both): IPVS fails when the kernel has none.
pub fn open_with(netns: &Netns, table: &str, backend: Option<BackendKind>) -> Result<Box<dyn LoadBalancer>, OpenError> {
    match backend {
        Some(BackendKind::Ipvs) => Ok(Box::new(IpvsBalancer::open(netns)?)),
        Some(BackendKind::Nftables) => Ok(Box::new(NftBalancer::open(netns, table)?)),
        None => match IpvsBalancer::open(netns) {
            Ok(ipvs) => {
                tracing::info!(netns = %netns, backend = "ipvs", "load balancer: IPVS family resolved");
                Ok(Box::new(ipvs))
            }
            Err(err) => {
                tracing::info!(netns = %netns, backend = "nftables", reason = %err, "load balancer: IPVS unavailable, using nftables");
                Ok(Box::new(NftBalancer::open(netns, table)?))
            }
        },
    }
}

//! Network-scoped service discovery for containers: the DNS server Shoal's agent runs for the
//! containers of its node, in the manner of Docker's embedded DNS at 127.0.0.11.
//!
//! - A [`RecordTable`] that callers update with [`Delta`]s: per network, service name → VIP (or the
//!   healthy task IPs for DNS round robin), `tasks.NAME` → healthy task IPs, task names, container
//!   hostnames and aliases → their IPs; A and AAAA, and PTR for the same addresses.
//! - A [`DnsServer`] that opens UDP and TCP sockets at 127.0.0.11:53 inside each attached
//!   container's network namespace and answers a container only from the networks it is attached
//!   to: the socket a query arrives on says which container asked.
//! - Other names go to the node's upstream servers (up to 3, 4 s each, answers cached for their
//!   TTL). Names under the cluster domain, single labels, `tasks.X` and names of other networks
//!   never leave the node: unknown ones get NXDOMAIN.
//! - [`ContainerResolvConf`] writes the container's resolv.conf; [`HostResolvConf`] reads the node's.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use shoal_embedded_dns::{ContainerResolvConf, Delta, DnsConfig, DnsServer, Endpoint, HostResolvConf, RecordTable, ServiceRecord};
//! let host = HostResolvConf::read("/etc/resolv.conf".as_ref())?;
//! let dns = DnsServer::new(DnsConfig { upstreams: host.upstreams(), ..DnsConfig::default() }, RecordTable::new())?;
//! let web = ServiceRecord { id: "s1".into(), name: "web".into(), aliases: vec![], endpoint: Endpoint::Vip(vec!["198.18.0.2".parse()?]) };
//! dns.records().apply([Delta::UpsertService { network: "front".into(), service: web }])?;
//! dns.attach("c1", "/run/netns/c1".as_ref(), vec!["front".into()]).await?;
//! let resolv_conf = ContainerResolvConf::from_host(&host, dns.config().cluster_domain.as_deref()).render();
//! # let _ = resolv_conf; Ok(()) }
//! ```
#![warn(missing_docs)]

mod forward;
// For the fuzz tests only (`tests/fuzz.rs`): hidden, and not part of the API.
#[doc(hidden)]
pub mod fuzz;
mod handler;
mod netns;
mod records;
mod resolv;
mod server;

pub use records::{Delta, Endpoint, RecordTable, ServiceRecord, TaskRecord, UpdateError};
pub use resolv::{ContainerResolvConf, HostResolvConf, MAX_UPSTREAMS, ResolvConfError};
pub use server::{AttachError, DnsConfig, DnsServer, RESOLVER_ADDR, SetNetworksError, StartError};

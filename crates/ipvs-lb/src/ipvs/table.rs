//! Source NAT for the IPVS dataplane. IPVS's NAT forwarding rewrites only the destination, so
//! masquerading is netfilter's job, as Docker does it (an iptables `-m ipvs … -j MASQUERADE`
//! rule), here with nftables, which has no `ipvs` match:
//!
//! ```text
//! table ip shoal_ipvs {                      # its own table: an nftables balancer can coexist
//!   set snat_services { type ipv4_addr . inet_proto . inet_service; }   # the source-NAT services
//!   chain postrouting {
//!     type nat hook postrouting priority srcnat; policy accept;
//!     ct original ip daddr . meta l4proto . ct original proto-dst @snat_services masquerade
//!   }
//! }
//! ```
//!
//! The rule matches the service the client addressed in the connection's *original* tuple,
//! which IPVS leaves alone (it rewrites the packet and the reply tuple). That needs IPVS
//! connections to be tracked: `net.ipv4.vs.conntrack = 1` in the namespace, which is set when the
//! first source-NAT service is. Without it IPVS marks its packets untracked and NAT skips them.
//! (`nft` 1.0.6 can list the rule but not parse it back: it refuses `ct original proto-dst` in a
//! concatenation. The kernel takes it as this crate sends it.)
//!
//! The table is made, and the sysctl set, only when a service asks for source NAT; a namespace
//! without such services has neither. The set is what the kernel has, so `list` reads it back.

use std::cell::RefCell;
use std::collections::BTreeSet;

use crate::model::ServiceKey;
use crate::netns::Netns;
use crate::nft::Socket;
use crate::nft::wire::{self, Op};

/// The IPVS dataplane's nftables table (family `ip`).
pub(crate) const TABLE: &str = "shoal_ipvs";
/// The set of source-NAT services.
pub(crate) const SET: &str = "snat_services";
const CHAIN: &str = "postrouting";
/// Makes IPVS give its connections conntrack entries, which NAT needs.
const CONNTRACK_SYSCTL: &str = "/proc/sys/net/ipv4/vs/conntrack";

/// The source-NAT table of one namespace, through an nf_tables socket opened there.
#[derive(Debug)]
pub(crate) struct Snat {
    netns: Netns,
    /// Behind a `RefCell` because reading the set (from `list(&self)`) numbers a request.
    /// `None` when the kernel has no nfnetlink: then there is no table either, and only
    /// turning source NAT on fails, so IPVS without it still works there.
    socket: Option<RefCell<Socket>>,
    /// Whether this balancer has made the table and set the sysctl (it re-does both once, so a
    /// restart also repairs them).
    ready: bool,
}

impl Snat {
    /// Opens the nf_tables socket in `netns`. Changes nothing.
    pub(crate) fn open(netns: &Netns) -> Result<Self, String> {
        let opened = netns.run(Socket::open).map_err(|err| format!("cannot enter the namespace: {err}"))?;
        let socket = match opened {
            Ok(socket) => Some(RefCell::new(socket)),
            Err(err) if err.raw_os_error() == Some(nix::errno::Errno::EPROTONOSUPPORT as i32) => {
                tracing::debug!(netns = %netns, "no nfnetlink in this kernel: IPVS without source NAT");
                None
            }
            Err(err) => return Err(format!("cannot open an nf_tables netlink socket: {err}")),
        };
        Ok(Self { netns: netns.clone(), socket, ready: false })
    }

    fn socket(&self) -> Result<std::cell::RefMut<'_, Socket>, String> {
        let Some(socket) = &self.socket else {
            return Err("source NAT needs nf_tables (with nft_chain_nat, nft_ct, nft_masq) and this kernel \
                        has no nfnetlink"
                .to_owned());
        };
        socket.try_borrow_mut().map_err(|_| "the nf_tables socket is in use".to_owned())
    }

    /// The source-NAT services in the kernel's set; none when the table does not exist.
    pub(crate) fn keys(&self) -> Result<BTreeSet<ServiceKey>, String> {
        if self.socket.is_none() {
            return Ok(BTreeSet::new());
        }
        let Some(raw) = self.socket()?.set_elements(TABLE, SET)? else { return Ok(BTreeSet::new()) };
        raw.iter()
            .map(|bytes| {
                wire::service_key_from_bytes(bytes)
                    .ok_or_else(|| format!("set {SET} holds {bytes:02x?}, not a service key"))
            })
            .collect()
    }

    /// Makes the table, chain and rule (kept when they exist) and turns IPVS connection tracking
    /// on, once per balancer.
    pub(crate) fn ensure(&mut self) -> Result<(), String> {
        if self.ready {
            return Ok(());
        }
        self.netns
            .run(|| std::fs::write(CONNTRACK_SYSCTL, "1"))
            .map_err(|err| format!("cannot enter the namespace: {err}"))?
            .map_err(|err| format!("cannot turn IPVS connection tracking on ({CONNTRACK_SYSCTL}): {err}"))?;
        self.apply(&setup_ops())?;
        tracing::info!(netns = %self.netns, table = TABLE, "IPVS source NAT set up (net.ipv4.vs.conntrack = 1)");
        self.ready = true;
        Ok(())
    }

    /// Adds services to the set (after [`Snat::ensure`]).
    pub(crate) fn add(&mut self, keys: Vec<ServiceKey>) -> Result<(), String> {
        if keys.is_empty() {
            return Ok(());
        }
        self.ensure()?;
        self.apply(&[Op::NewKeys { set: SET.to_owned(), keys }])
    }

    /// Removes services from the set (they must be in it).
    pub(crate) fn remove(&mut self, keys: Vec<ServiceKey>) -> Result<(), String> {
        if keys.is_empty() {
            return Ok(());
        }
        self.apply(&[Op::DelKeys { set: SET.to_owned(), keys }])
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), String> {
        self.socket()?.apply(TABLE, ops)
    }
}

/// The table, set, chain and its one rule: one transaction, the rule replaced.
pub(crate) fn setup_ops() -> Vec<Op> {
    vec![
        Op::NewTable,
        Op::NewKeySet { set: SET.to_owned() },
        Op::NewPostroutingChain { chain: CHAIN.to_owned() },
        Op::FlushBaseChain { chain: CHAIN.to_owned() },
        Op::NewMasqueradeRule { chain: CHAIN.to_owned(), set: SET.to_owned() },
    ]
}

#[cfg(test)]
mod tests;

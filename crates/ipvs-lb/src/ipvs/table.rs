//! The IPVS dataplane's own nftables table: source NAT, and the packet marks that send an
//! any-port service's packets to its IPVS fwmark service.
//!
//! ```text
//! table ip shoal_ipvs {                       # its own table: an nftables balancer can coexist
//!   set snat_services { type ipv4_addr . inet_proto . inet_service; }  # 198.18.0.10 . tcp . 81
//!   set snat_any_port { type ipv4_addr . inet_proto . mark; }          # 198.18.0.10 . tcp . 0x4c420000
//!   map any_port_marks { type ipv4_addr . inet_proto : mark; }         # 198.18.0.10 . tcp : 0x4c420000
//!   set direct_services { type ipv4_addr . inet_proto . inet_service; } # 198.18.0.10 . tcp . 80
//!   chain prerouting { type filter hook prerouting priority mangle; policy accept;
//!     ip daddr . meta l4proto . th dport @direct_services return
//!     meta mark set ip daddr . meta l4proto map @any_port_marks
//!   }
//!   chain output { type route hook output priority mangle; policy accept; (the same two rules) }
//!   chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!     ct original ip daddr . meta l4proto . ct original proto-dst @snat_services masquerade
//!     ct original ip daddr . meta l4proto . meta mark @snat_any_port masquerade
//!   }
//! }
//! ```
//!
//! **Any-port services.** IPVS balances "every port" only as a fwmark service: a service named by
//! a packet mark, whose destinations of port 0 keep the packet's destination port (what Docker
//! Swarm's VIPs use; a port-0 service needs persistence, which pins each client to a backend).
//! The mangle chains mark the packets of each any-port service with its mark before IPVS sees
//! them (IPVS hooks local-in and local-out, after prerouting and the output route chain). IPVS
//! looks a packet's mark up *before* its address and port, so packets of a specific-port service
//! at the same address and protocol (`direct_services`) are left unmarked: that service takes
//! its port. The mark of each any-port service is in `any_port_marks`, which is also how `list`
//! maps IPVS's fwmark services back to addresses.
//!
//! **Source NAT.** IPVS's NAT forwarding rewrites only the destination, so masquerading is
//! netfilter's job, as Docker does it (an iptables `-m ipvs … -j MASQUERADE` rule), here with
//! nftables, which has no `ipvs` match. The rules match the service the client addressed in the
//! connection's *original* tuple, which IPVS leaves alone (it rewrites the packet and the reply
//! tuple), and for an any-port service the packet's mark (set only when that service took it).
//! That needs IPVS connections to be tracked: `net.ipv4.vs.conntrack = 1` in the namespace, set
//! when the first source-NAT service is. Without it IPVS marks its packets untracked and NAT
//! skips them. (`nft` 1.0.6 can list the first rule but not parse it back: it refuses `ct
//! original proto-dst` in a concatenation. The kernel takes it as this crate sends it.)
//!
//! The table is made only when a service asks for source NAT or any port, and the sysctl set
//! only for source NAT; a namespace without such services has neither. The sets are what the
//! kernel has, so `list` reads them back, and a change sends only the elements that differ from
//! what the balancer last wrote (or read at open).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Service, ServiceKey};
use crate::netns::Netns;
use crate::nft::Socket;
use crate::nft::wire::{self, BaseHook, BaseRule, Element, Op, SetKind};

/// The IPVS dataplane's nftables table (family `ip`).
pub(crate) const TABLE: &str = "shoal_ipvs";
/// Specific-port services with source NAT.
pub(crate) const SNAT_SERVICES: &str = "snat_services";
/// Any-port services with source NAT, with their mark.
pub(crate) const SNAT_ANY_PORT: &str = "snat_any_port";
/// Any-port service → its IPVS fwmark.
pub(crate) const MARKS: &str = "any_port_marks";
/// Specific-port services at the address and protocol of an any-port service: not marked.
pub(crate) const DIRECT: &str = "direct_services";
/// Makes IPVS give its connections conntrack entries, which NAT needs.
const CONNTRACK_SYSCTL: &str = "/proc/sys/net/ipv4/vs/conntrack";

/// What the table holds (or should hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TableState {
    /// Specific-port services with source NAT.
    pub(crate) snat_services: BTreeSet<ServiceKey>,
    /// Any-port services with source NAT, and their marks.
    pub(crate) snat_any_port: BTreeSet<(ServiceKey, u32)>,
    /// Any-port service → its fwmark.
    pub(crate) marks: BTreeMap<ServiceKey, u32>,
    /// Specific-port services beside an any-port service.
    pub(crate) direct: BTreeSet<ServiceKey>,
}

impl TableState {
    /// What the table should hold for `services` (all of them, or those of a part of the
    /// table): `exists` says whether a service is set, `mark_of` gives an any-port service's
    /// fwmark.
    pub(crate) fn wanted<'a>(
        services: impl IntoIterator<Item = &'a Service>,
        exists: impl Fn(&ServiceKey) -> bool,
        mark_of: impl Fn(&ServiceKey) -> Option<u32>,
    ) -> Self {
        let mut state = Self::default();
        for service in services {
            let key = service.key;
            if key.is_any_port() {
                let Some(mark) = mark_of(&key) else { continue };
                state.marks.insert(key, mark);
                if service.source_nat {
                    state.snat_any_port.insert((key, mark));
                }
            } else {
                if service.source_nat {
                    state.snat_services.insert(key);
                }
                if exists(&ServiceKey::any_port(key.addr, key.protocol)) {
                    state.direct.insert(key);
                }
            }
        }
        state
    }

    /// The part of the table that holds the elements of `keys`.
    pub(crate) fn part(&self, keys: &BTreeSet<ServiceKey>) -> Self {
        let mut part = Self::default();
        for key in keys {
            if self.snat_services.contains(key) {
                part.snat_services.insert(*key);
            }
            if self.direct.contains(key) {
                part.direct.insert(*key);
            }
            if let Some(mark) = self.marks.get(key) {
                part.marks.insert(*key, *mark);
            }
            part.snat_any_port.extend(self.snat_any_port.range((*key, 0)..=(*key, u32::MAX)).copied());
        }
        part
    }

    /// Replaces the part `from` of the table by `to`.
    pub(crate) fn patch(&mut self, from: &Self, to: &Self) {
        for key in from.snat_services.difference(&to.snat_services) {
            self.snat_services.remove(key);
        }
        for key in from.direct.difference(&to.direct) {
            self.direct.remove(key);
        }
        for entry in from.snat_any_port.difference(&to.snat_any_port) {
            self.snat_any_port.remove(entry);
        }
        for key in from.marks.keys().filter(|k| !to.marks.contains_key(k)) {
            self.marks.remove(key);
        }
        self.snat_services.extend(&to.snat_services);
        self.direct.extend(&to.direct);
        self.snat_any_port.extend(&to.snat_any_port);
        self.marks.extend(&to.marks);
    }

    fn has_source_nat(&self) -> bool {
        !self.snat_services.is_empty() || !self.snat_any_port.is_empty()
    }

    /// Where a change from `self` to `wanted` stops while IPVS is changed: source NAT already
    /// on for services that get it (before IPVS takes their connections) and still on for those
    /// that lose it (until IPVS stops taking them); marks as wanted (a removed service's packets
    /// stop being marked before its fwmark service goes; a new one's are marked before it
    /// exists, which sends them where they went before: nothing answers for that service yet);
    /// specific-port services left unmarked as wanted, except new ones beside an any-port
    /// service that already had its mark: that service keeps their port until IPVS has them.
    pub(crate) fn midway(&self, wanted: &Self) -> Self {
        let marked_before = |key: &ServiceKey| {
            let any = ServiceKey::any_port(key.addr, key.protocol);
            self.marks.get(&any).is_some_and(|mark| wanted.marks.get(&any) == Some(mark))
        };
        Self {
            snat_services: self.snat_services.union(&wanted.snat_services).copied().collect(),
            snat_any_port: self.snat_any_port.union(&wanted.snat_any_port).copied().collect(),
            marks: wanted.marks.clone(),
            direct: wanted.direct.iter().filter(|k| self.direct.contains(k) || !marked_before(k)).copied().collect(),
        }
    }

    /// The messages that turn `self` into `to`, for one batch: deletions first (a changed mark
    /// is deleted, then added again).
    pub(crate) fn ops_to(&self, to: &Self) -> Vec<Op> {
        let deletions = missing(self, to)
            .into_iter()
            .filter(|(_, elements)| !elements.is_empty())
            .map(|(set, elements)| Op::DelElements { set: set.to_owned(), elements });
        let additions = missing(to, self)
            .into_iter()
            .filter(|(_, elements)| !elements.is_empty())
            .map(|(set, elements)| Op::NewElements { set: set.to_owned(), elements });
        deletions.chain(additions).collect()
    }
}

/// The elements of `a` that `b` lacks, by set.
fn missing(a: &TableState, b: &TableState) -> [(&'static str, Vec<Element>); 4] {
    [
        (
            MARKS,
            a.marks.iter().filter(|(k, m)| b.marks.get(k) != Some(m)).map(|(k, m)| Element::mark_of(k, *m)).collect(),
        ),
        (DIRECT, a.direct.difference(&b.direct).map(Element::service).collect()),
        (SNAT_SERVICES, a.snat_services.difference(&b.snat_services).map(Element::service).collect()),
        (SNAT_ANY_PORT, a.snat_any_port.difference(&b.snat_any_port).map(|(k, m)| Element::marked(k, *m)).collect()),
    ]
}

/// The table of one namespace, through an nf_tables socket opened there.
#[derive(Debug)]
pub(crate) struct Table {
    netns: Netns,
    /// Behind a `RefCell` because reading the sets (from `list(&self)`) numbers a request.
    /// `None` when the kernel has no nfnetlink: then there is no table either, and only
    /// source NAT and any-port services fail, so IPVS without them still works there.
    socket: Option<RefCell<Socket>>,
    /// Whether this balancer has made the table (it re-does it once, so a restart also
    /// repairs it and a table of an earlier version gets what it lacks).
    ready: bool,
    /// Whether this balancer has set the sysctl.
    conntrack: bool,
    /// What the table holds: read at open, then what this balancer wrote.
    state: TableState,
}

impl Table {
    /// Opens the nf_tables socket in `netns` and reads the table. Changes nothing.
    pub(crate) fn open(netns: &Netns) -> Result<Self, String> {
        let opened = netns.run(Socket::open).map_err(|err| format!("cannot enter the namespace: {err}"))?;
        let socket = match opened {
            Ok(socket) => Some(RefCell::new(socket)),
            Err(err) if err.raw_os_error() == Some(nix::errno::Errno::EPROTONOSUPPORT as i32) => {
                tracing::debug!(netns = %netns, "no nfnetlink in this kernel: IPVS without source NAT or any-port services");
                None
            }
            Err(err) => return Err(format!("cannot open an nf_tables netlink socket: {err}")),
        };
        let mut table =
            Self { netns: netns.clone(), socket, ready: false, conntrack: false, state: TableState::default() };
        table.state = table.read()?;
        Ok(table)
    }

    /// What the table holds, as last read or written.
    pub(crate) fn state(&self) -> &TableState {
        &self.state
    }

    fn socket(&self) -> Result<std::cell::RefMut<'_, Socket>, String> {
        let Some(socket) = &self.socket else {
            return Err("source NAT and any-port services need nf_tables (with nft_chain_nat, nft_ct, nft_masq) \
                        and this kernel has no nfnetlink"
                .to_owned());
        };
        socket.try_borrow_mut().map_err(|_| "the nf_tables socket is in use".to_owned())
    }

    /// Reads the table from the kernel; empty when it does not exist.
    pub(crate) fn read(&self) -> Result<TableState, String> {
        let mut state = TableState::default();
        if self.socket.is_none() {
            return Ok(state);
        }
        let bad =
            |set: &str, element: &wire::Dumped| format!("set {set} holds {element:02x?}, not one of its elements");
        for element in self.elements(SNAT_SERVICES)? {
            state
                .snat_services
                .insert(wire::service_key_from_bytes(&element.key).ok_or_else(|| bad(SNAT_SERVICES, &element))?);
        }
        for element in self.elements(SNAT_ANY_PORT)? {
            state
                .snat_any_port
                .insert(wire::marked_from_bytes(&element.key).ok_or_else(|| bad(SNAT_ANY_PORT, &element))?);
        }
        for element in self.elements(MARKS)? {
            let key = wire::any_port_key_from_bytes(&element.key);
            let mark = element.data.as_deref().and_then(wire::mark_from_bytes);
            let (Some(key), Some(mark)) = (key, mark) else { return Err(bad(MARKS, &element)) };
            state.marks.insert(key, mark);
        }
        for element in self.elements(DIRECT)? {
            state.direct.insert(wire::service_key_from_bytes(&element.key).ok_or_else(|| bad(DIRECT, &element))?);
        }
        Ok(state)
    }

    /// The elements of `set`; none when the table or the set does not exist.
    fn elements(&self, set: &str) -> Result<Vec<wire::Dumped>, String> {
        Ok(self.socket()?.set_elements(TABLE, set)?.unwrap_or_default())
    }

    /// Replaces what this balancer believes the table holds by what the kernel has (after a
    /// change that failed part-way).
    pub(crate) fn resync(&mut self) {
        if let Ok(state) = self.read() {
            self.state = state;
        }
    }

    /// Turns the part `from` of the table (as [`TableState::part`] read it) into `to`: one
    /// transaction of the elements that differ. The table is made first (once per balancer)
    /// when there is something to send, and IPVS connection tracking turned on when `to` has
    /// source NAT.
    pub(crate) fn change(&mut self, from: &TableState, to: &TableState) -> Result<(), String> {
        let ops = from.ops_to(to);
        if ops.is_empty() {
            return Ok(());
        }
        if to.has_source_nat() && !self.conntrack {
            self.netns
                .run(|| std::fs::write(CONNTRACK_SYSCTL, "1"))
                .map_err(|err| format!("cannot enter the namespace: {err}"))?
                .map_err(|err| format!("cannot turn IPVS connection tracking on ({CONNTRACK_SYSCTL}): {err}"))?;
            tracing::info!(netns = %self.netns, "IPVS connection tracking on for source NAT (net.ipv4.vs.conntrack = 1)");
            self.conntrack = true;
        }
        if !self.ready {
            self.send(&setup_ops())?;
            tracing::info!(netns = %self.netns, table = TABLE, "IPVS nftables table set up");
            self.ready = true;
        }
        self.send(&ops)?;
        self.state.patch(from, to);
        Ok(())
    }

    fn send(&mut self, ops: &[Op]) -> Result<(), String> {
        self.socket()?.apply(TABLE, ops)
    }
}

/// The table, sets, map, chains and their rules: one transaction, the rules replaced.
pub(crate) fn setup_ops() -> Vec<Op> {
    let mut ops = vec![
        Op::NewTable,
        Op::NewSet { set: SNAT_SERVICES.to_owned(), kind: SetKind::ServiceKeys },
        Op::NewSet { set: SNAT_ANY_PORT.to_owned(), kind: SetKind::MarkedServices },
        Op::NewSet { set: MARKS.to_owned(), kind: SetKind::Marks },
        Op::NewSet { set: DIRECT.to_owned(), kind: SetKind::ServiceKeys },
    ];
    let marking = [BaseRule::ReturnServices { set: DIRECT.to_owned() }, BaseRule::SetMark { map: MARKS.to_owned() }];
    let masquerading = [
        BaseRule::MasqueradeServices { set: SNAT_SERVICES.to_owned() },
        BaseRule::MasqueradeMarked { set: SNAT_ANY_PORT.to_owned() },
    ];
    for (chain, hook, rules) in [
        ("prerouting", BaseHook::ManglePrerouting, &marking),
        ("output", BaseHook::MangleOutput, &marking),
        ("postrouting", BaseHook::SourceNat, &masquerading),
    ] {
        ops.push(Op::NewBaseChain { chain: chain.to_owned(), hook });
        ops.push(Op::FlushBaseChain { chain: chain.to_owned() });
        for rule in rules {
            ops.push(Op::NewBaseRule { chain: chain.to_owned(), rule: rule.clone() });
        }
    }
    ops
}

#[cfg(test)]
mod tests;

//! The IPVS dataplane: the kernel's `IPVS` generic-netlink family over netlink-proto, NAT
//! forwarding (masquerade), round robin, weighted round robin when the weights differ. Any-port
//! services are fwmark services whose packets a small nftables table of its own (`table`) marks;
//! that table also does source NAT.
//!
//! The socket is opened inside the namespace (IPVS state is per namespace) and driven by a
//! current-thread tokio runtime the balancer owns, so the blocking [`LoadBalancer`](crate::LoadBalancer) calls can
//! run from any thread.

pub(crate) mod codec;
mod table;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use futures::StreamExt as _;
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlHeader, GenlMessage};
use netlink_proto::ConnectionHandle;
use netlink_sys::SocketAddr;
use netlink_sys::protocols::NETLINK_GENERIC;

use self::codec::{Command, DestAttrs, IpvsMessage, ServiceAttrs, ServiceId};
use crate::model::{Backend, BackendKind, Protocol, Service, ServiceKey};
use crate::netns::Netns;
use crate::{ApplyError, ListError, OpenError};

/// Requests sent to the kernel in one batch (each is acknowledged).
const BATCH: usize = 256;
/// The fwmarks of any-port services: "LB" in the high half, so they do not meet the small
/// integers Docker numbers its services with, nor kube-proxy's single bits (0x4000, 0x8000).
const FWMARKS: RangeInclusive<u32> = 0x4c42_0000..=0x4c42_ffff;

type Handle = ConnectionHandle<GenlMessage<IpvsMessage>>;

/// The IPVS load balancer for one namespace. It owns a small tokio runtime: call it and drop it
/// outside async tasks (from `spawn_blocking` in async code).
#[derive(Debug)]
pub struct IpvsBalancer {
    netns: Netns,
    runtime: tokio::runtime::Runtime,
    handle: Handle,
    family: u16,
    /// What this balancer last applied (read back from the kernel at open), normalized.
    applied: BTreeMap<ServiceKey, Service>,
    /// The fwmark of each any-port service of `applied`.
    marks: BTreeMap<ServiceKey, u32>,
    /// The fwmarks of every fwmark service IPVS has, this balancer's and others', so that a new
    /// any-port service gets a free one.
    fwmarks: BTreeSet<u32>,
    /// The nftables table of source NAT and any-port marks.
    table: table::Table,
}

/// What a listing found: the services, the fwmark of each any-port one, and every fwmark
/// service's mark.
struct Listing {
    services: Vec<Service>,
    marks: BTreeMap<ServiceKey, u32>,
    fwmarks: BTreeSet<u32>,
}

impl IpvsBalancer {
    /// Resolves the `IPVS` family in `netns` and reads the services already there. Fails when
    /// the kernel has no IPVS (the family does not resolve).
    pub fn open(netns: &Netns) -> Result<Self, OpenError> {
        let ipvs_err = |detail: String| OpenError::Ipvs { netns: netns.clone(), detail };
        let (runtime, handle, family) = netns
            .run(connect)
            .map_err(|source| OpenError::Netns { netns: netns.clone(), source })?
            .map_err(ipvs_err)?;
        let table_err =
            |detail: String| OpenError::Nft { netns: netns.clone(), table: table::TABLE.to_owned(), detail };
        let table = table::Table::open(netns).map_err(table_err)?;
        let mut this = Self {
            netns: netns.clone(),
            runtime,
            handle,
            family,
            applied: BTreeMap::new(),
            marks: BTreeMap::new(),
            fwmarks: BTreeSet::new(),
            table,
        };
        let listing = this.listing(this.table.state()).map_err(ipvs_err)?;
        this.adopt(listing);
        this.repair_table().map_err(table_err)?;
        tracing::debug!(netns = %netns, family, services = this.applied.len(), "IPVS load balancer open");
        Ok(this)
    }

    /// Sends `messages` (acknowledged requests) in batches; the first failure names its request
    /// (an any-port service's by the service, through `marks`).
    fn send(&self, messages: Vec<IpvsMessage>, marks: &BTreeMap<ServiceKey, u32>) -> Result<(), String> {
        for chunk in messages.chunks(BATCH) {
            let requests: Vec<_> = chunk.iter().map(|m| self.netlink(m.clone(), NLM_F_REQUEST | NLM_F_ACK)).collect();
            let replies = self.runtime.block_on(async {
                let stream = self.handle.request_batch(requests, SocketAddr::new(0, 0)).map_err(|e| e.to_string())?;
                Ok::<_, String>(stream.collect::<Vec<_>>().await)
            })?;
            for reply in replies {
                if let NetlinkPayload::Error(err) = reply.payload
                    && let Some(code) = err.code
                {
                    let errno = std::io::Error::from_raw_os_error(-code.get());
                    return Err(format!("{} failed: {errno}", describe_request(&err.header, marks)));
                }
            }
        }
        Ok(())
    }

    /// One dump request; returns the messages of the reply.
    fn dump(&self, message: IpvsMessage) -> Result<Vec<IpvsMessage>, String> {
        let request = self.netlink(message, NLM_F_REQUEST | NLM_F_DUMP);
        self.runtime.block_on(async {
            let mut stream = self.handle.request(request, SocketAddr::new(0, 0)).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            while let Some(reply) = stream.next().await {
                match reply.payload {
                    NetlinkPayload::InnerMessage(genl) => out.push(genl.payload),
                    NetlinkPayload::Error(err) if err.code.is_some() => {
                        let errno = err.code.map(|c| std::io::Error::from_raw_os_error(-c.get()));
                        return Err(format!("dump failed: {errno:?}"));
                    }
                    _ => {}
                }
            }
            Ok(out)
        })
    }

    fn netlink(&self, message: IpvsMessage, flags: u16) -> NetlinkMessage<GenlMessage<IpvsMessage>> {
        let mut genl = GenlMessage::from_payload(message);
        genl.set_resolved_family_id(self.family);
        let mut netlink = NetlinkMessage::from(genl);
        netlink.header.flags = flags;
        netlink.finalize();
        netlink
    }

    /// Takes a listing as what this balancer applied.
    fn adopt(&mut self, listing: Listing) {
        self.applied = listing.services.into_iter().map(|s| (s.key, s)).collect();
        self.marks = listing.marks;
        self.fwmarks = listing.fwmarks;
    }

    /// At open: makes the table hold what the adopted services need, dropping elements of
    /// services IPVS does not have (left by a change that stopped half-way: source NAT of a
    /// removed service, the mark of a fwmark service that was never made) and adding what is
    /// missing (a specific-port service's exemption from marking).
    fn repair_table(&mut self) -> Result<(), String> {
        let wanted = table::TableState::wanted(
            self.applied.values(),
            |k| self.applied.contains_key(k),
            |k| self.marks.get(k).copied(),
        );
        let current = self.table.state().clone();
        if current != wanted {
            tracing::info!(netns = %self.netns, table = table::TABLE, "IPVS nftables table: repairing elements");
        }
        self.table.change(&current, &wanted)
    }

    fn table_err(&self, detail: String) -> ApplyError {
        ApplyError::Nft { netns: self.netns.clone(), table: table::TABLE.to_owned(), detail }
    }

    /// After a failure: part of the change may have been applied, the kernel is the truth.
    fn resync(&mut self) {
        self.table.resync();
        if let Ok(listing) = self.listing(self.table.state()) {
            self.adopt(listing);
        }
    }

    /// A free fwmark for a new any-port service: none of IPVS's fwmark services and none
    /// `taken` by this change has it.
    fn free_fwmark(&self, key: &ServiceKey, taken: &BTreeMap<ServiceKey, u32>) -> Result<u32, ApplyError> {
        let used: BTreeSet<u32> = taken.values().copied().collect();
        FWMARKS.clone().find(|m| !self.fwmarks.contains(m) && !used.contains(m)).ok_or_else(|| ApplyError::Ipvs {
            netns: self.netns.clone(),
            detail: format!(
                "no free fwmark for any-port service {key}: all of {:#x}..={:#x} are in use",
                FWMARKS.start(),
                FWMARKS.end()
            ),
        })
    }

    /// Work proportional to the services changed, not to those set: the table's part is the
    /// changed services, the any-port service at each changed specific-port service's address
    /// and protocol, and the specific-port services beside an any-port service that comes or
    /// goes.
    fn change(&mut self, upserts: &[Service], removals: &[ServiceKey]) -> Result<(), ApplyError> {
        for service in upserts {
            service.validate()?;
        }
        let upserts: BTreeMap<ServiceKey, Service> = upserts
            .iter()
            .map(Service::normalized)
            .filter(|s| self.applied.get(&s.key) != Some(s))
            .map(|s| (s.key, s))
            .collect();
        let removals: BTreeSet<ServiceKey> =
            removals.iter().filter(|k| self.applied.contains_key(k) && !upserts.contains_key(k)).copied().collect();
        if upserts.is_empty() && removals.is_empty() {
            return Ok(());
        }
        // An any-port service keeps its mark while it exists; a new one gets a free one.
        let mut new_marks = BTreeMap::new();
        for key in upserts.keys().filter(|k| k.is_any_port() && !self.marks.contains_key(k)) {
            let mark = self.free_fwmark(key, &new_marks)?;
            new_marks.insert(*key, mark);
        }
        let mark_of = |key: &ServiceKey| self.marks.get(key).or_else(|| new_marks.get(key)).copied();
        let change = Change { applied: &self.applied, upserts: &upserts, removals: &removals };
        let part = change.table_part();
        let wanted = table::TableState::wanted(
            part.iter().filter_map(|k| change.after(k)),
            |k| change.after(k).is_some(),
            mark_of,
        );
        let mut names: BTreeMap<ServiceKey, u32> = BTreeMap::new();
        for key in upserts.keys().chain(&removals).filter(|k| k.is_any_port()) {
            if let Some(mark) = mark_of(key) {
                names.insert(*key, mark);
            }
        }
        let mut messages = Vec::new();
        for key in &removals {
            messages.push(IpvsMessage::new(
                Command::DelService,
                Some(ServiceAttrs::id(self.service_id(key, &names)?)),
                None,
            ));
        }
        for service in upserts.values() {
            diff(self.service_id(&service.key, &names)?, self.applied.get(&service.key), service, &mut messages);
        }
        // The table goes half-way before IPVS changes and the rest after (see `midway`): no
        // connection of a source-NAT service goes out unmasqueraded, and no packet is marked
        // for a fwmark service that is gone or has a specific-port service's port.
        let current = self.table.state().part(&part);
        let midway = current.midway(&wanted);
        self.table.change(&current, &midway).map_err(|detail| self.table_err(detail))?;
        let count = messages.len();
        if let Err(detail) = self.send(messages, &names) {
            self.resync();
            return Err(ApplyError::Ipvs { netns: self.netns.clone(), detail });
        }
        if let Err(detail) = self.table.change(&midway, &wanted) {
            self.resync();
            return Err(self.table_err(detail));
        }
        tracing::debug!(
            netns = %self.netns, requests = count, changed = upserts.len(), removed = removals.len(),
            "IPVS services applied"
        );
        for key in &removals {
            self.applied.remove(key);
            if let Some(mark) = self.marks.remove(key) {
                self.fwmarks.remove(&mark);
            }
        }
        self.fwmarks.extend(new_marks.values());
        self.marks.extend(new_marks);
        self.applied.extend(upserts);
        Ok(())
    }

    /// The IPVS service of `key`: its address, port and protocol, or for an any-port service
    /// its fwmark in `marks`.
    fn service_id(&self, key: &ServiceKey, marks: &BTreeMap<ServiceKey, u32>) -> Result<ServiceId, ApplyError> {
        if !key.is_any_port() {
            return Ok(ServiceId::Addr { protocol: key.protocol.number(), addr: key.addr, port: key.port });
        }
        marks.get(key).map(|mark| ServiceId::Fwmark(*mark)).ok_or_else(|| ApplyError::Ipvs {
            netns: self.netns.clone(),
            detail: format!("any-port service {key} has no fwmark"),
        })
    }

    /// The services IPVS has, read with the table's state `table`: address services, and the
    /// fwmark services `table` maps an any-port service to (other fwmark services, and address
    /// services of port 0, are not this crate's: left alone and not listed).
    fn listing(&self, table: &table::TableState) -> Result<Listing, String> {
        let dumped = self.dump(IpvsMessage::new(Command::GetService, None, None))?;
        let by_mark: BTreeMap<u32, ServiceKey> = table.marks.iter().map(|(k, m)| (*m, *k)).collect();
        let mut listing = Listing { services: Vec::new(), marks: BTreeMap::new(), fwmarks: BTreeSet::new() };
        for message in dumped {
            let Some(attrs) = message.service else { continue };
            let (key, source_nat) = match attrs.id {
                ServiceId::Addr { protocol, addr, port } => {
                    let Some(protocol) = Protocol::from_number(protocol).filter(|_| port != 0) else { continue };
                    let key = ServiceKey { addr, port, protocol };
                    (key, table.snat_services.contains(&key))
                }
                ServiceId::Fwmark(mark) => {
                    listing.fwmarks.insert(mark);
                    let Some(key) = by_mark.get(&mark).copied() else { continue };
                    listing.marks.insert(key, mark);
                    (key, table.snat_any_port.contains(&(key, mark)))
                }
            };
            let dests = self
                .dump(IpvsMessage::new(Command::GetDest, Some(ServiceAttrs::id(attrs.id)), None))
                .map_err(|e| format!("destinations of {key}: {e}"))?;
            let backends = dests
                .into_iter()
                .filter_map(|m| m.dest)
                .map(|d| Backend { addr: d.addr, port: d.port, weight: d.weight.unwrap_or_default() })
                .collect();
            listing.services.push(Service { source_nat, ..Service::new(key, backends).normalized() });
        }
        listing.services.sort_by_key(|s| s.key);
        Ok(listing)
    }
}

/// Opens the generic-netlink sockets in the current namespace and resolves the family.
fn connect() -> Result<(tokio::runtime::Runtime, Handle, u16), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build a runtime: {e}"))?;
    let family = runtime.block_on(resolve_family())?;
    let handle = runtime.block_on(async {
        let (connection, handle, _) = netlink_proto::new_connection::<GenlMessage<IpvsMessage>>(NETLINK_GENERIC)
            .map_err(|e| format!("cannot open a generic netlink socket: {e}"))?;
        tokio::spawn(connection);
        Ok::<_, String>(handle)
    })?;
    Ok((runtime, handle, family))
}

/// Asks the generic-netlink controller for the `IPVS` family's ID.
async fn resolve_family() -> Result<u16, String> {
    let (connection, handle, _) = netlink_proto::new_connection::<GenlMessage<GenlCtrl>>(NETLINK_GENERIC)
        .map_err(|e| format!("cannot open a generic netlink socket: {e}"))?;
    let task = tokio::spawn(connection);
    let mut genl = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(codec::FAMILY.to_owned())],
    });
    genl.finalize();
    let mut request = NetlinkMessage::from(genl);
    request.header.flags = NLM_F_REQUEST;
    request.finalize();
    let mut replies = handle.request(request, SocketAddr::new(0, 0)).map_err(|e| e.to_string())?;
    let mut result = Err(format!("generic netlink family {} not found", codec::FAMILY));
    while let Some(reply) = replies.next().await {
        match reply.payload {
            NetlinkPayload::InnerMessage(genl) => {
                if let Some(id) = genl.payload.nlas.iter().find_map(|a| match a {
                    GenlCtrlAttrs::FamilyId(id) => Some(*id),
                    _ => None,
                }) {
                    result = Ok(id);
                }
            }
            NetlinkPayload::Error(err) if err.code.is_some() => {
                let errno = err.code.map(|c| std::io::Error::from_raw_os_error(-c.get()));
                result = Err(format!(
                    "generic netlink family {} does not resolve ({})",
                    codec::FAMILY,
                    errno.map(|e| e.to_string()).unwrap_or_default()
                ));
            }
            _ => {}
        }
    }
    task.abort();
    result
}

/// A change of services: what was applied, what is set and what is removed.
pub(crate) struct Change<'a> {
    pub(crate) applied: &'a BTreeMap<ServiceKey, Service>,
    pub(crate) upserts: &'a BTreeMap<ServiceKey, Service>,
    pub(crate) removals: &'a BTreeSet<ServiceKey>,
}

impl Change<'_> {
    /// The service of `key` after the change.
    pub(crate) fn after(&self, key: &ServiceKey) -> Option<&Service> {
        match self.upserts.get(key) {
            Some(service) => Some(service),
            None if self.removals.contains(key) => None,
            None => self.applied.get(key),
        }
    }

    /// The keys whose elements of the IPVS backend's table the change can touch: the services
    /// changed, the any-port service (if any, before or after) at each changed specific-port
    /// service's address and protocol (its mark decides when that service is exempt), and the specific-port services
    /// beside an any-port service that comes or goes (they become exempt from marking, or stop
    /// being). Found by lookups, so a change costs what it changes, not what is set.
    pub(crate) fn table_part(&self) -> BTreeSet<ServiceKey> {
        let mut part = BTreeSet::new();
        for key in self.upserts.keys().chain(self.removals) {
            part.insert(*key);
            if !key.is_any_port() {
                let any = ServiceKey::any_port(key.addr, key.protocol);
                if self.applied.contains_key(&any) || self.upserts.contains_key(&any) {
                    part.insert(any);
                }
            } else if self.applied.contains_key(key) != self.after(key).is_some() {
                // Keys sort by address, then port: port 0 of TCP is an address's first.
                let first = ServiceKey::any_port(key.addr, Protocol::Tcp);
                for services in [self.applied, self.upserts] {
                    let at_addr = services.range(first..).map(|(k, _)| *k).take_while(|k| k.addr == key.addr);
                    part.extend(at_addr.filter(|k| k.protocol == key.protocol && !k.is_any_port()));
                }
            }
        }
        part
    }
}

/// Names the request an error reply quotes (the kernel echoes the request's headers and body);
/// a fwmark service by the any-port service `marks` gives it.
pub(crate) fn describe_request(quoted: &[u8], marks: &BTreeMap<ServiceKey, u32>) -> String {
    let Some(genl) = quoted.get(16..) else { return "IPVS request".to_owned() };
    let parsed = GenlHeader::parse(genl)
        .ok()
        .and_then(|header| IpvsMessage::decode(header.cmd, genl.get(4..).unwrap_or_default()).ok());
    match parsed {
        Some(message) => {
            let service = message.service.map(|s| match s.id {
                ServiceId::Addr { protocol, addr, port } => format!(
                    " of service {addr}:{port}/{}",
                    Protocol::from_number(protocol).map(Protocol::name).unwrap_or("?")
                ),
                ServiceId::Fwmark(mark) => match marks.iter().find(|(_, m)| **m == mark) {
                    Some((key, _)) => format!(" of service {key} (fwmark {mark:#x})"),
                    None => format!(" of fwmark service {mark:#x}"),
                },
            });
            let dest = message.dest.map(|d| format!(" for backend {}:{}", d.addr, d.port));
            format!("IPVS {:?}{}{}", message.cmd, service.unwrap_or_default(), dest.unwrap_or_default())
        }
        None => "IPVS request".to_owned(),
    }
}

/// Round robin when the backends taking connections weigh the same, weighted otherwise.
fn scheduler(service: &Service) -> &'static str {
    let mut weights = service.backends.iter().map(|b| b.weight).filter(|w| *w > 0);
    match weights.next() {
        Some(first) if weights.any(|w| w != first) => "wrr",
        _ => "rr",
    }
}

/// The requests that turn `old` (absent: a new service) into `new`, IPVS service `id`.
pub(crate) fn diff(id: ServiceId, old: Option<&Service>, new: &Service, out: &mut Vec<IpvsMessage>) {
    let sched = scheduler(new);
    match old {
        None => out.push(IpvsMessage::new(Command::NewService, Some(ServiceAttrs::full(id, sched)), None)),
        Some(old) if scheduler(old) != sched => {
            out.push(IpvsMessage::new(Command::SetService, Some(ServiceAttrs::full(id, sched)), None));
        }
        Some(_) => {}
    }
    let before: BTreeMap<(Ipv4Addr, u16), u32> =
        old.map(|o| o.backends.iter().map(|b| ((b.addr, b.port), b.weight)).collect()).unwrap_or_default();
    let after: BTreeMap<(Ipv4Addr, u16), u32> = new.backends.iter().map(|b| ((b.addr, b.port), b.weight)).collect();
    for (addr, port) in before.keys().filter(|k| !after.contains_key(k)) {
        out.push(IpvsMessage::new(Command::DelDest, Some(ServiceAttrs::id(id)), Some(DestAttrs::id(*addr, *port))));
    }
    for (&(addr, port), &weight) in &after {
        let command = match before.get(&(addr, port)) {
            None => Command::NewDest,
            Some(w) if *w != weight => Command::SetDest,
            Some(_) => continue,
        };
        out.push(IpvsMessage::new(command, Some(ServiceAttrs::id(id)), Some(DestAttrs::masq(addr, port, weight))));
    }
}

impl crate::Dataplane for IpvsBalancer {
    fn kind(&self) -> BackendKind {
        BackendKind::Ipvs
    }

    fn netns(&self) -> &Netns {
        &self.netns
    }

    fn applied(&self) -> &std::collections::BTreeMap<ServiceKey, Service> {
        &self.applied
    }

    fn apply(&mut self, set: &[Service], remove: &[ServiceKey]) -> Result<(), ApplyError> {
        self.change(set, remove)
    }

    fn list(&self) -> Result<Vec<Service>, ListError> {
        let err = |detail: String| ListError::Ipvs { netns: self.netns.clone(), detail };
        let table = self.table.read().map_err(|e| err(format!("nftables table {}: {e}", table::TABLE)))?;
        Ok(self.listing(&table).map_err(err)?.services)
    }
}

#[cfg(test)]
mod tests;

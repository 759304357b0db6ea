//! The IPVS dataplane: the kernel's `IPVS` generic-netlink family over netlink-proto, NAT
//! forwarding (masquerade), round robin, weighted round robin when the weights differ; source NAT
//! through a small nftables table of its own (`snat`).
//!
//! The socket is opened inside the namespace (IPVS state is per namespace) and driven by a
//! current-thread tokio runtime the balancer owns, so the blocking [`LoadBalancer`] calls can
//! run from any thread.

pub(crate) mod codec;
mod snat;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

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
use crate::{ApplyError, ListError, LoadBalancer, OpenError};

/// Requests sent to the kernel in one batch (each is acknowledged).
const BATCH: usize = 256;

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
    /// The source-NAT table.
    snat: snat::Snat,
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
        let snat = snat::Snat::open(netns).map_err(|detail| OpenError::Nft {
            netns: netns.clone(),
            table: snat::TABLE.to_owned(),
            detail,
        })?;
        let mut this = Self { netns: netns.clone(), runtime, handle, family, applied: BTreeMap::new(), snat };
        let listed = this.list().map_err(|err| ipvs_err(err.to_string()))?;
        this.applied = listed.into_iter().map(|s| (s.key, s)).collect();
        this.adopt_snat().map_err(|detail| OpenError::Nft {
            netns: netns.clone(),
            table: snat::TABLE.to_owned(),
            detail,
        })?;
        tracing::debug!(netns = %netns, family, services = this.applied.len(), "IPVS load balancer open");
        Ok(this)
    }

    /// Sends `messages` (acknowledged requests) in batches; the first failure names its request.
    fn send(&self, messages: Vec<IpvsMessage>) -> Result<(), String> {
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
                    return Err(format!("{} failed: {errno}", describe_request(&err.header)));
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

    /// At open: drops set elements of services IPVS does not have (left by a change that
    /// stopped half-way) and, when adopted services use source NAT, makes sure the table and
    /// the sysctl are in place.
    fn adopt_snat(&mut self) -> Result<(), String> {
        let stale: Vec<ServiceKey> = self.snat.keys()?.into_iter().filter(|k| !self.applied.contains_key(k)).collect();
        if !stale.is_empty() {
            tracing::info!(netns = %self.netns, stale = stale.len(), "IPVS source NAT: dropping elements of absent services");
            self.snat.remove(stale)?;
        }
        if self.applied.values().any(|s| s.source_nat) {
            self.snat.ensure()?;
        }
        Ok(())
    }

    fn snat_err(&self, detail: String) -> ApplyError {
        ApplyError::Nft { netns: self.netns.clone(), table: snat::TABLE.to_owned(), detail }
    }

    /// After a failure: part of the change may have been applied, the kernel is the truth.
    fn resync(&mut self) {
        if let Ok(listed) = self.list() {
            self.applied = listed.into_iter().map(|s| (s.key, s)).collect();
        }
    }

    fn change(&mut self, upserts: &[Service], removals: &[ServiceKey]) -> Result<(), ApplyError> {
        for service in upserts {
            service.validate()?;
        }
        // Source NAT is switched on before IPVS takes a service's connections and off after it
        // stops taking them, so no connection of a source-NAT service goes out unmasqueraded.
        let (snat_on, snat_off) = snat_changes(&self.applied, upserts, removals);
        self.snat.add(snat_on).map_err(|detail| self.snat_err(detail))?;
        let mut messages = Vec::new();
        let mut done = Vec::new();
        for key in removals.iter().filter(|k| self.applied.contains_key(k)) {
            messages.push(IpvsMessage::new(Command::DelService, Some(ServiceAttrs::id(service_id(key))), None));
        }
        for service in upserts.iter().map(Service::normalized) {
            let old = self.applied.get(&service.key);
            if old == Some(&service) {
                continue;
            }
            diff(old, &service, &mut messages);
            done.push(service);
        }
        let count = messages.len();
        if count > 0
            && let Err(detail) = self.send(messages)
        {
            self.resync();
            return Err(ApplyError::Ipvs { netns: self.netns.clone(), detail });
        }
        if let Err(detail) = self.snat.remove(snat_off) {
            self.resync();
            return Err(self.snat_err(detail));
        }
        tracing::debug!(netns = %self.netns, requests = count, changed = done.len(), "IPVS services applied");
        for key in removals {
            self.applied.remove(key);
        }
        for service in done {
            self.applied.insert(service.key, service);
        }
        Ok(())
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

/// Names the request an error reply quotes (the kernel echoes the request's headers and body).
pub(crate) fn describe_request(quoted: &[u8]) -> String {
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
                ServiceId::Fwmark(mark) => format!(" of fwmark service {mark}"),
            });
            let dest = message.dest.map(|d| format!(" for backend {}:{}", d.addr, d.port));
            format!("IPVS {:?}{}{}", message.cmd, service.unwrap_or_default(), dest.unwrap_or_default())
        }
        None => "IPVS request".to_owned(),
    }
}

/// Which services' source NAT goes on (not on in `applied`, asked for by an upsert) and which
/// goes off (on in `applied`; asked off by an upsert, or removed).
pub(crate) fn snat_changes(
    applied: &BTreeMap<ServiceKey, Service>,
    upserts: &[Service],
    removals: &[ServiceKey],
) -> (Vec<ServiceKey>, Vec<ServiceKey>) {
    let was_on = |key: &ServiceKey| applied.get(key).is_some_and(|s| s.source_nat);
    let mut on = BTreeSet::new();
    let mut off = BTreeSet::new();
    for key in removals.iter().filter(|k| was_on(k)) {
        off.insert(*key);
    }
    for service in upserts {
        if service.source_nat && !was_on(&service.key) {
            on.insert(service.key);
            off.remove(&service.key);
        } else if !service.source_nat && was_on(&service.key) {
            off.insert(service.key);
        }
    }
    (on.into_iter().collect(), off.into_iter().collect())
}

fn service_id(key: &ServiceKey) -> ServiceId {
    ServiceId::Addr { protocol: key.protocol.number(), addr: key.addr, port: key.port }
}

/// Round robin when the backends taking connections weigh the same, weighted otherwise.
fn scheduler(service: &Service) -> &'static str {
    let mut weights = service.backends.iter().map(|b| b.weight).filter(|w| *w > 0);
    match weights.next() {
        Some(first) if weights.any(|w| w != first) => "wrr",
        _ => "rr",
    }
}

/// The requests that turn `old` (absent: a new service) into `new`.
pub(crate) fn diff(old: Option<&Service>, new: &Service, out: &mut Vec<IpvsMessage>) {
    let id = service_id(&new.key);
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
        let dumped = self.dump(IpvsMessage::new(Command::GetService, None, None)).map_err(err)?;
        let snat = self.snat.keys().map_err(|e| err(format!("nftables table {}: {e}", snat::TABLE)))?;
        let mut services = Vec::new();
        for message in dumped {
            let Some(attrs) = message.service else { continue };
            // Fwmark services are not made by this crate; they are left alone and not listed.
            let ServiceId::Addr { protocol, addr, port } = attrs.id else { continue };
            let Some(protocol) = Protocol::from_number(protocol) else { continue };
            let key = ServiceKey { addr, port, protocol };
            let dests = self
                .dump(IpvsMessage::new(Command::GetDest, Some(ServiceAttrs::id(attrs.id)), None))
                .map_err(|e| err(format!("destinations of {key}: {e}")))?;
            let backends = dests
                .into_iter()
                .filter_map(|m| m.dest)
                .map(|d| Backend { addr: d.addr, port: d.port, weight: d.weight.unwrap_or_default() })
                .collect();
            let mut service = Service::new(key, backends).normalized();
            service.source_nat = snat.contains(&key);
            services.push(service);
        }
        services.sort_by_key(|s| s.key);
        Ok(services)
    }
}

#[cfg(test)]
mod tests;

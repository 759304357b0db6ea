//! The nftables dataplane: one table per namespace, created by `nft`, changed through nf_tables
//! netlink messages on a socket the balancer keeps open (`wire`), every change one transaction,
//! read back with `nft -j list table`.
//!
//! ```text
//! table ip shoal_lb {
//!   map services { type ipv4_addr . inet_proto . inet_service : verdict         # → goto svc_…
//!                  elements = { 198.18.0.10 . tcp . 80 : goto svc_198_18_0_10_tcp_80 } }
//!   map any_port_services { type ipv4_addr . inet_proto : verdict               # every port
//!                  elements = { 198.18.0.10 . udp : goto svc_198_18_0_10_udp_any } }
//!   map backends_29 { typeof ip daddr . meta l4proto . th dport . numgen inc mod 2 : ip daddr . th dport
//!                     elements = { 198.18.0.10 . tcp . 80 . 0 : 198.18.1.11 . 8080,   # one per slot
//!                                  198.18.0.10 . tcp . 80 . 1 : 198.18.1.12 . 8080,
//!                                  198.18.0.10 . tcp . 80 . 2 : 198.18.1.12 . 8080 } }
//!   map any_port_backends_58 { typeof ip daddr . meta l4proto . numgen inc mod 2 : ip daddr
//!                     elements = { 198.18.0.10 . udp . 0 : 198.18.1.11 } }
//!   map backends_00 … backends_63, any_port_backends_00 … _63   # a service's slots are in the
//!                                                               # map its key hashes to
//!   chain prerouting  { type nat hook prerouting priority -100;
//!                       ip daddr . meta l4proto . th dport vmap @services
//!                       ip daddr . meta l4proto vmap @any_port_services }   # when no port matched
//!   chain output      { type nat hook output priority -100; (the same two lookups) }
//!   chain postrouting { type nat hook postrouting priority 100; ct mark & 0x20000000 == 0x20000000 masquerade }
//!   chain svc_198_18_0_10_tcp_80 {
//!     comment "drained 198.18.1.13:8080"             # weight-0 backends, so `list` can return them
//!     ct mark set ct mark | 0x20000000                # only with source NAT
//!     dnat to ip daddr . meta l4proto . th dport . numgen inc mod 3 map @backends_29
//!   }
//!   chain svc_198_18_0_10_udp_any {                   # an any-port service: the port is kept
//!     dnat to ip daddr . meta l4proto . numgen inc mod 1 map @any_port_backends_58
//!   }
//! }
//! ```
//!
//! Each backend owns as many consecutive `numgen inc` slots of its service as its weight, and
//! each service's chain has its own `numgen` counter, so the split is exact weighted round robin
//! rather than random. A change to one service touches only its own chain, map elements and
//! slots; nothing else in the table is rewritten, and nothing is read from the kernel first
//! (the balancer knows what it applied). What still grows with the table is the kernel's own
//! validation of the table at commit when a rule or a `goto` element is added (a walk of every
//! chain reachable from the base chains); the 64 backend maps of each kind keep the other
//! per-rule kernel check (every element of the map a new lookup binds to) at 1/64 of the slots.
//!
//! An any-port service (port 0) is the same with the port left out of its keys: its element is
//! in `any_port_services`, looked up only when `services` has none for the packet's port (so a
//! specific-port service at the same address wins for its port), and its `dnat` maps only the
//! address, so the connection keeps the destination port the client used.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};

use nftables::helper::{self, NftablesError};
use serde_json::Value;

use crate::model::{Backend, BackendKind, Protocol, Service, ServiceKey};
use crate::netns::Netns;
use crate::{ApplyError, ListError, LoadBalancer, OpenError};

pub(crate) mod wire;

use wire::{
    ANY_PORT_BACKENDS_MAP, ANY_PORT_SERVICES_MAP, Answer, BACKEND_SHARDS, BACKENDS_MAP, Batch, Op, Rule, SERVICES_MAP,
};

/// The conntrack mark bit that asks the postrouting chain to masquerade a connection.
const SNAT_MARK: u32 = 0x2000_0000;
const DRAINED: &str = "drained ";
/// The `nft` program (on `PATH`), as the `nftables` crate runs it.
const NFT: &str = "nft";

/// The nftables load balancer for one namespace. See the module docs for the table it keeps.
#[derive(Debug)]
pub struct NftBalancer {
    netns: Netns,
    table: String,
    /// What this balancer last applied (read back from the kernel at open), normalized.
    applied: BTreeMap<ServiceKey, Service>,
    /// The nf_tables socket changes go through, opened in `netns` and kept open.
    socket: Socket,
}

impl NftBalancer {
    /// Creates (or adopts) table `table` in `netns`: the maps and base chains are (re)made, the
    /// services already in it are read back and kept until changed.
    pub fn open(netns: &Netns, table: &str) -> Result<Self, OpenError> {
        let fail = |detail: String| OpenError::Nft { netns: netns.clone(), table: table.to_owned(), detail };
        if table.is_empty() || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || table.len() > 200 {
            return Err(fail("a table name is 1 to 200 ASCII letters, digits or underscores".to_owned()));
        }
        nft_script(netns, &base_script(table)).map_err(fail)?;
        let socket = netns
            .run(Socket::open)
            .map_err(|source| OpenError::Netns { netns: netns.clone(), source })?
            .map_err(|err| fail(format!("cannot open an nf_tables netlink socket: {err}")))?;
        let mut this = Self { netns: netns.clone(), table: table.to_owned(), applied: BTreeMap::new(), socket };
        let listed = this.list().map_err(|err| fail(err.to_string()))?;
        this.applied = listed.into_iter().map(|s| (s.key, s)).collect();
        tracing::debug!(netns = %netns, table, services = this.applied.len(), "nftables load balancer open");
        Ok(this)
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Removes the whole table (every service of this balancer) from the namespace.
    pub fn delete(self) -> Result<(), ApplyError> {
        let t = &self.table;
        nft_script(&self.netns, &format!("add table ip {t}\ndelete table ip {t}\n")).map_err(|detail| ApplyError::Nft {
            netns: self.netns.clone(),
            table: self.table.clone(),
            detail,
        })
    }

    /// One transaction: removals, then upserts; services that did not change are skipped.
    fn change(&mut self, upserts: &[Service], removals: &[ServiceKey]) -> Result<(), ApplyError> {
        for service in upserts {
            service.validate()?;
        }
        let upserts: Vec<Service> =
            upserts.iter().map(Service::normalized).filter(|s| self.applied.get(&s.key) != Some(s)).collect();
        let removals: Vec<ServiceKey> = removals.iter().filter(|k| self.applied.contains_key(k)).copied().collect();
        if upserts.is_empty() && removals.is_empty() {
            return Ok(());
        }
        let mut ops = Vec::new();
        for key in &removals {
            ops.extend(plan(self.applied.get(key), None));
        }
        for service in &upserts {
            ops.extend(plan(self.applied.get(&service.key), Some(service)));
        }
        self.socket.apply(&self.table, &ops).map_err(|detail| ApplyError::Nft {
            netns: self.netns.clone(),
            table: self.table.clone(),
            detail,
        })?;
        for key in &removals {
            self.applied.remove(key);
        }
        tracing::debug!(
            netns = %self.netns, table = %self.table, changed = upserts.len(), removed = removals.len(),
            messages = ops.len(), "nftables services applied"
        );
        for service in upserts {
            self.applied.insert(service.key, service);
        }
        Ok(())
    }
}

/// The table, its maps and base chains, as an `nft -f` script. Text rather than JSON: nft
/// 1.0.6's JSON input cannot declare the backends maps (a `typeof` key with `numgen`). The base
/// chains look the packet up by port first and fall through to the any-port services when that
/// map has no element for it: a specific-port service takes precedence for its port.
fn base_script(t: &str) -> String {
    let lookup = [
        format!("ip daddr . meta l4proto . th dport vmap @{SERVICES_MAP}"),
        format!("ip daddr . meta l4proto vmap @{ANY_PORT_SERVICES_MAP}"),
    ];
    let masquerade = [format!("ct mark & {SNAT_MARK:#x} == {SNAT_MARK:#x} masquerade")];
    let mut script = format!(
        "add table ip {t}\n\
         add map ip {t} {SERVICES_MAP} {{ type ipv4_addr . inet_proto . inet_service : verdict; }}\n\
         add map ip {t} {ANY_PORT_SERVICES_MAP} {{ type ipv4_addr . inet_proto : verdict; }}\n"
    );
    for shard in 0..BACKEND_SHARDS {
        script.push_str(&format!(
            "add map ip {t} {BACKENDS_MAP}_{shard:02} \
             {{ typeof ip daddr . meta l4proto . th dport . numgen inc mod 2 : ip daddr . th dport; }}\n\
             add map ip {t} {ANY_PORT_BACKENDS_MAP}_{shard:02} \
             {{ typeof ip daddr . meta l4proto . numgen inc mod 2 : ip daddr; }}\n"
        ));
    }
    for (chain, hook, prio, rules) in [
        ("prerouting", "prerouting", -100, &lookup[..]),
        ("output", "output", -100, &lookup[..]),
        ("postrouting", "postrouting", 100, &masquerade[..]),
    ] {
        script.push_str(&format!(
            "add chain ip {t} {chain} {{ type nat hook {hook} priority {prio}; policy accept; }}\n\
             flush chain ip {t} {chain}\n"
        ));
        for rule in rules {
            script.push_str(&format!("add rule ip {t} {chain} {rule}\n"));
        }
    }
    script
}

/// Runs `nft -f -` with `script` in `netns`: one transaction.
fn nft_script(netns: &Netns, script: &str) -> Result<(), String> {
    let output = netns
        .run(|| {
            let mut child = Command::new(NFT)
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(script.as_bytes())?;
            }
            child.wait_with_output()
        })
        .map_err(|err| format!("cannot enter namespace: {err}"))?
        .map_err(|err| format!("cannot run {NFT}: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("nft failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
    }
}

fn describe(err: NftablesError) -> String {
    match err {
        NftablesError::NftFailed { stderr, .. } => format!("nft failed: {}", stderr.trim()),
        other => other.to_string(),
    }
}

impl crate::Dataplane for NftBalancer {
    fn kind(&self) -> BackendKind {
        BackendKind::Nftables
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
        let err = |detail: String| ListError::Nft { netns: self.netns.clone(), table: self.table.clone(), detail };
        let args = ["list", "table", "ip", self.table.as_str()];
        let raw = self
            .netns
            .run(|| helper::get_current_ruleset_raw(helper::DEFAULT_NFT, args))
            .map_err(|e| err(format!("cannot enter namespace: {e}")))?
            .map_err(|e| err(describe(e)))?;
        let value: Value = serde_json::from_str(&raw).map_err(|e| err(format!("nft printed invalid JSON: {e}")))?;
        parse_table(&value).map_err(err)
    }
}

/// The nf_tables netlink socket of one namespace.
#[derive(Debug)]
pub(crate) struct Socket {
    socket: netlink_sys::Socket,
    /// The next batch's first sequence number.
    seq: u32,
    /// The send buffer size set so far (a batch is one datagram).
    sndbuf: usize,
}

impl Socket {
    /// Opens the socket in the calling thread's namespace. Non-blocking: the kernel handles a
    /// batch inside `sendmsg`, so every answer is queued when `send` returns.
    pub(crate) fn open() -> Result<Self, std::io::Error> {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        socket.set_non_blocking(true)?;
        // Errors echo only the failed message's header, not the whole message.
        socket.set_cap_ack(true)?;
        Ok(Self { socket, seq: 1, sndbuf: 0 })
    }

    /// The elements (keys, and a map's values) of set `set` of table `table`; `None` when the
    /// table or the set does not exist, or the kernel has no nf_tables.
    pub(crate) fn set_elements(&mut self, table: &str, set: &str) -> Result<Option<Vec<wire::Dumped>>, String> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let request = wire::set_elements_request(table, set, seq);
        let sent = self.socket.send(&request, 0).map_err(|err| format!("cannot send the dump of set {set}: {err}"))?;
        if sent != request.len() {
            return Err(format!("sent {sent} of the {} bytes of the dump request of set {set}", request.len()));
        }
        // The kernel queues the first part of a dump inside `sendmsg` and each next part inside
        // the `recvmsg` that takes the previous one, so a non-blocking read never waits for it.
        let mut elements = Vec::new();
        loop {
            let datagram = match self.socket.recv_from_full() {
                Ok((datagram, _)) => datagram,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(format!("the dump of set {set} ended without its end message"));
                }
                Err(err) => return Err(format!("cannot read the dump of set {set}: {err}")),
            };
            match wire::parse_set_elements(&datagram, seq, &mut elements)? {
                None => {}
                Some(0) => return Ok(Some(elements)),
                Some(errno) if errno == nix::errno::Errno::ENOENT as i32 => return Ok(None),
                // nfnetlink answers EINVAL for a subsystem it does not have: nf_tables is not
                // loaded and cannot be, so there is no such table either.
                Some(errno) if errno == nix::errno::Errno::EINVAL as i32 => return Ok(None),
                Some(errno) => {
                    let errno = std::io::Error::from_raw_os_error(errno);
                    return Err(format!("the kernel refused the dump of set {set}: {errno}"));
                }
            }
        }
    }

    /// Sends `ops` as one batch and waits for the kernel's verdict.
    pub(crate) fn apply(&mut self, table: &str, ops: &[Op]) -> Result<(), String> {
        let mut batch = Batch::new(table, self.seq);
        for op in ops {
            batch.push(op);
        }
        let Some(encoded) = batch.finish()? else { return Ok(()) };
        self.seq = encoded.last_seq.wrapping_add(2);
        let wanted = encoded.bytes.len() + 64 * 1024;
        if wanted > self.sndbuf {
            nix::sys::socket::setsockopt(&self.socket, nix::sys::socket::sockopt::SndBufForce, &wanted)
                .map_err(|err| format!("cannot size the netlink send buffer to {wanted} bytes: {err}"))?;
            self.sndbuf = wanted;
        }
        let sent =
            self.socket.send(&encoded.bytes, 0).map_err(|err| format!("cannot send the nf_tables batch: {err}"))?;
        if sent != encoded.bytes.len() {
            return Err(format!("sent {sent} of the batch's {} bytes", encoded.bytes.len()));
        }
        let mut refused = Vec::new();
        loop {
            let datagram = match self.socket.recv_from_full() {
                Ok((datagram, _)) => datagram,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(refusals(&encoded.sent, &refused, "the kernel did not acknowledge the batch"));
                }
                Err(err) => {
                    return Err(refusals(&encoded.sent, &refused, &format!("cannot read the kernel's answer: {err}")));
                }
            };
            for Answer { seq, errno } in wire::parse_answers(&datagram)? {
                if seq < encoded.begin_seq || seq > encoded.last_seq {
                    continue; // an answer to an earlier batch that was given up on
                }
                if errno != 0 {
                    refused.push(Answer { seq, errno });
                }
                if seq == encoded.begin_seq || seq == encoded.last_seq {
                    return if refused.is_empty() {
                        Ok(())
                    } else {
                        Err(refusals(&encoded.sent, &refused, "nothing of the batch was applied"))
                    };
                }
            }
        }
    }
}

/// Names the messages the kernel refused, and why.
fn refusals(sent: &[(u32, String)], refused: &[Answer], outcome: &str) -> String {
    let mut text = String::new();
    for Answer { seq, errno } in refused {
        let what = sent.iter().find(|(s, _)| s == seq).map_or("the batch", |(_, what)| what.as_str());
        text.push_str(&format!("the kernel refused to {what}: {}; ", std::io::Error::from_raw_os_error(*errno)));
    }
    text.push_str(outcome);
    text
}

/// The chain of a service: its key spelled out (`svc_198_18_0_10_tcp_80`, an any-port service
/// `svc_198_18_0_10_tcp_any`), for people reading the table; a listing maps chains back to keys
/// through the verdict maps.
pub(crate) fn chain_name(key: &ServiceKey) -> String {
    let [a, b, c, d] = key.addr.octets();
    if key.is_any_port() {
        format!("svc_{a}_{b}_{c}_{d}_{}_any", key.protocol)
    } else {
        format!("svc_{a}_{b}_{c}_{d}_{}_{}", key.protocol, key.port)
    }
}

/// The rules of a service's chain.
pub(crate) fn service_rules(service: &Service) -> Vec<Rule> {
    let mut rules: Vec<Rule> =
        service.backends.iter().filter(|b| b.weight == 0).map(|b| Rule::Drained(b.socket_addr())).collect();
    if service.source_nat {
        rules.push(Rule::Mark(SNAT_MARK));
    }
    let modulus: u32 = service.backends.iter().map(|b| b.weight).sum();
    // No backend takes new connections: drop rather than let the packet reach the VIP itself.
    rules.push(match modulus {
        0 => Rule::Drop,
        _ if service.key.is_any_port() => Rule::DnatKeepPort { modulus },
        _ => Rule::Dnat { modulus },
    });
    rules
}

/// The `numgen` slots of a service: each backend of non-zero weight owns `weight` consecutive
/// slots, in the order the backends are given (normalized: by address and port).
pub(crate) fn service_slots(service: &Service) -> BTreeMap<u32, SocketAddrV4> {
    let mut slots = BTreeMap::new();
    let mut next: u32 = 0;
    for backend in service.backends.iter().filter(|b| b.weight > 0) {
        for _ in 0..backend.weight {
            slots.insert(next, backend.socket_addr());
            next += 1;
        }
    }
    slots
}

/// The operations that turn service `old` (as applied) into `new` (normalized); `None` is absent.
pub(crate) fn plan(old: Option<&Service>, new: Option<&Service>) -> Vec<Op> {
    let (old_slots, new_slots) =
        (old.map(service_slots).unwrap_or_default(), new.map(service_slots).unwrap_or_default());
    let mut ops = Vec::new();
    let Some(service) = new.or(old).map(|s| s.key) else { return ops };
    let chain = chain_name(&service);
    match (old, new) {
        (None, None) => {}
        (Some(_), None) => {
            // The element first: a chain that a map element still points to cannot be deleted.
            ops.push(Op::DelService { service });
            ops.push(Op::DelChain { service, chain });
            ops.push(Op::DelSlots { service, slots: old_slots.into_keys().collect() });
        }
        (None, Some(new)) => {
            ops.push(Op::NewChain { service, chain: chain.clone() });
            for rule in service_rules(new) {
                ops.push(Op::NewRule { service, chain: chain.clone(), rule });
            }
            ops.push(Op::NewSlots { service, slots: new_slots.into_iter().collect() });
            ops.push(Op::NewService { service, chain });
        }
        (Some(old), Some(new)) => {
            let rules = service_rules(new);
            if service_rules(old) != rules {
                ops.push(Op::FlushChain { service, chain: chain.clone() });
                for rule in rules {
                    ops.push(Op::NewRule { service, chain: chain.clone(), rule });
                }
            }
            // A map element's value cannot be replaced in place: delete, then add.
            let stale: Vec<u32> =
                old_slots.iter().filter(|(slot, b)| new_slots.get(slot) != Some(b)).map(|(slot, _)| *slot).collect();
            let fresh: Vec<(u32, SocketAddrV4)> =
                new_slots.iter().filter(|(slot, b)| old_slots.get(slot) != Some(b)).map(|(s, b)| (*s, *b)).collect();
            if !stale.is_empty() {
                ops.push(Op::DelSlots { service, slots: stale });
            }
            if !fresh.is_empty() {
                ops.push(Op::NewSlots { service, slots: fresh });
            }
        }
    }
    ops.retain(|op| !matches!(op, Op::NewSlots { slots, .. } if slots.is_empty()));
    ops.retain(|op| !matches!(op, Op::DelSlots { slots, .. } if slots.is_empty()));
    ops
}

/// Reads the services back from `nft -j list table ip NAME`.
pub(crate) fn parse_table(listing: &Value) -> Result<Vec<Service>, String> {
    let objects = listing.get("nftables").and_then(Value::as_array).ok_or("no `nftables` array in the listing")?;
    let mut keys_by_chain: BTreeMap<String, ServiceKey> = BTreeMap::new();
    let mut slots: BTreeMap<ServiceKey, BTreeMap<u32, SocketAddrV4>> = BTreeMap::new();
    let mut rules_by_chain: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for object in objects {
        let map = object.get("map");
        let map_name = map.and_then(|m| m.get("name")).and_then(Value::as_str);
        let elements = map.and_then(|m| m.get("elem")).and_then(Value::as_array).into_iter().flatten();
        if let Some(name) = map_name.filter(|n| *n == SERVICES_MAP || *n == ANY_PORT_SERVICES_MAP) {
            for elem in elements {
                let (key, chain) = parse_element(elem).ok_or_else(|| format!("unexpected {name} element {elem}"))?;
                if key.is_any_port() != (name == ANY_PORT_SERVICES_MAP) {
                    return Err(format!("unexpected {name} element {elem}"));
                }
                keys_by_chain.insert(chain, key);
            }
        } else if map_name.is_some_and(|name| {
            [BACKENDS_MAP, ANY_PORT_BACKENDS_MAP]
                .iter()
                .any(|prefix| name.strip_prefix(prefix).is_some_and(|n| n.starts_with('_')))
        }) {
            for elem in elements {
                let (key, slot, backend) =
                    parse_slot(elem).ok_or_else(|| format!("unexpected backend slot element {elem}"))?;
                slots.entry(key).or_default().insert(slot, backend);
            }
        } else if let Some(rule) = object.get("rule")
            && let Some(chain) = rule.get("chain").and_then(Value::as_str)
        {
            rules_by_chain.entry(chain.to_owned()).or_default().push(rule);
        }
    }
    let mut services = Vec::new();
    for (chain, key) in keys_by_chain {
        let mut service = Service::new(key, Vec::new());
        let mut modulus = 0;
        for rule in rules_by_chain.get(&chain).into_iter().flatten() {
            parse_rule(rule, &mut service, &mut modulus).map_err(|e| format!("chain {chain}: {e}"))?;
        }
        let slots = slots.remove(&key).unwrap_or_default();
        if usize::try_from(modulus).ok() != Some(slots.len()) || slots.keys().copied().ne(0..modulus) {
            return Err(format!("chain {chain}: numgen modulus {modulus} but {} backend slots", slots.len()));
        }
        let mut weights: BTreeMap<SocketAddrV4, u32> = BTreeMap::new();
        for backend in slots.values() {
            *weights.entry(*backend).or_default() += 1;
        }
        service.backends.extend(weights.into_iter().map(|(b, weight)| Backend {
            addr: *b.ip(),
            port: b.port(),
            weight,
        }));
        services.push(service.normalized());
    }
    services.sort_by_key(|s| s.key);
    Ok(services)
}

/// A JSON number, or a number nft printed as a string.
fn number(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

/// A service key from a verdict-map key: `[addr, proto, port]`, or `[addr, proto]` for an
/// any-port service.
fn parse_service_key(concat: &[Value]) -> Option<ServiceKey> {
    let addr: Ipv4Addr = concat.first()?.as_str()?.parse().ok()?;
    let protocol = Protocol::from_name(concat.get(1)?.as_str()?)?;
    match concat.get(2) {
        None => Some(ServiceKey::any_port(addr, protocol)),
        Some(port) => {
            let port = u16::try_from(number(port)?).ok().filter(|p| *p != 0)?;
            (concat.len() == 3).then_some(ServiceKey { addr, port, protocol })
        }
    }
}

fn parse_element(elem: &Value) -> Option<(ServiceKey, String)> {
    let pair = elem.as_array()?;
    let key = parse_service_key(pair.first()?.get("concat")?.as_array()?)?;
    let chain = pair.get(1)?.get("goto")?.get("target")?.as_str()?.to_owned();
    Some((key, chain))
}

/// A backend-map element: `[addr, proto, port, slot] : [addr, port]`, or for an any-port
/// service `[addr, proto, slot] : addr` (the backend's port is 0).
fn parse_slot(elem: &Value) -> Option<(ServiceKey, u32, SocketAddrV4)> {
    let pair = elem.as_array()?;
    let (slot, key) = pair.first()?.get("concat")?.as_array()?.split_last()?;
    let key = parse_service_key(key)?;
    let slot = u32::try_from(number(slot)?).ok()?;
    let target = pair.get(1)?;
    let backend = if key.is_any_port() {
        SocketAddrV4::new(target.as_str()?.parse().ok()?, 0)
    } else {
        let target = target.get("concat")?.as_array()?;
        let addr: Ipv4Addr = target.first()?.as_str()?.parse().ok()?;
        SocketAddrV4::new(addr, u16::try_from(number(target.get(1)?)?).ok()?)
    };
    Some((key, slot, backend))
}

fn parse_rule(rule: &Value, service: &mut Service, modulus: &mut u32) -> Result<(), String> {
    if let Some(comment) = rule.get("comment").and_then(Value::as_str)
        && let Some(backend) = comment.strip_prefix(DRAINED)
    {
        let addr: SocketAddrV4 = backend.parse().map_err(|_| format!("bad drained backend {backend:?}"))?;
        service.backends.push(Backend { addr: *addr.ip(), port: addr.port(), weight: 0 });
        return Ok(());
    }
    for stmt in rule.get("expr").and_then(Value::as_array).into_iter().flatten() {
        if stmt.get("mangle").is_some() {
            service.source_nat = true;
        }
        let Some(map) = stmt.get("dnat").and_then(|d| d.get("addr")).and_then(|a| a.get("map")) else { continue };
        let numgen = map.get("key").and_then(|k| k.get("concat")).and_then(Value::as_array).and_then(|c| c.last());
        let found = numgen.and_then(|n| n.get("numgen")).and_then(|n| n.get("mod")).and_then(number);
        *modulus = found.and_then(|m| u32::try_from(m).ok()).ok_or_else(|| format!("unexpected dnat map {map}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

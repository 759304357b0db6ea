//! The nftables dataplane: one table per namespace, driven through `nft -j` by the `nftables`
//! crate, every change one transaction.
//!
//! ```text
//! table ip shoal_lb {
//!   map services { type ipv4_addr . inet_proto . inet_service : verdict
//!                  elements = { 198.18.0.10 . tcp . 80 : goto svc_198_18_0_10_tcp_80 } }
//!   chain prerouting  { type nat hook prerouting priority -100; ip daddr . meta l4proto . th dport vmap @services }
//!   chain output      { type nat hook output priority -100;     ip daddr . meta l4proto . th dport vmap @services }
//!   chain postrouting { type nat hook postrouting priority 100; ct mark & 0x20000000 == 0x20000000 masquerade }
//!   chain svc_198_18_0_10_tcp_80 {
//!     comment "drained 198.18.1.13:8080"             # weight-0 backends, so `list` can return them
//!     ct mark set ct mark | 0x20000000                # only with source NAT
//!     meta l4proto tcp dnat to numgen inc mod 3 map { 0 : 198.18.1.11 . 8080, 1-2 : 198.18.1.12 . 8080 }
//!   }
//! }
//! ```
//!
//! Each backend owns a range of `numgen inc` values as wide as its weight, so the split is exact
//! (round robin, weighted) rather than random. A change to one service flushes and refills that
//! service's chain and touches its one map element; nothing else in the table changes.
//!
//! The typed schema of the `nftables` crate (0.6) has no `verdict` map type, so the payload is
//! built as JSON values in nft's JSON schema and handed to the crate's raw apply function.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use nftables::helper::{self, NftablesError};
use serde_json::{Value, json};

use crate::model::{Backend, BackendKind, Protocol, Service, ServiceKey};
use crate::netns::Netns;
use crate::{ApplyError, ListError, LoadBalancer, OpenError};

/// The conntrack mark bit that asks the postrouting chain to masquerade a connection.
const SNAT_MARK: u32 = 0x2000_0000;
const MAP: &str = "services";
const DRAINED: &str = "drained ";

/// The nftables load balancer for one namespace. See the module docs for the table it keeps.
#[derive(Debug)]
pub struct NftBalancer {
    netns: Netns,
    table: String,
    /// What this balancer last applied (read back from the kernel at open), normalized.
    applied: BTreeMap<ServiceKey, Service>,
}

impl NftBalancer {
    /// Creates (or adopts) table `table` in `netns`: the map and base chains are (re)made, the
    /// services already in it are read back and kept until changed.
    pub fn open(netns: &Netns, table: &str) -> Result<Self, OpenError> {
        let mut this = Self { netns: netns.clone(), table: table.to_owned(), applied: BTreeMap::new() };
        let base = this.base_commands();
        this.apply(base).map_err(|detail| OpenError::Nft { netns: netns.clone(), table: table.to_owned(), detail })?;
        let listed = this.list().map_err(|err| OpenError::Nft {
            netns: netns.clone(),
            table: table.to_owned(),
            detail: err.to_string(),
        })?;
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
        let table = json!({"table": {"family": "ip", "name": self.table}});
        self.apply(vec![json!({"add": table.clone()}), json!({"delete": table})]).map_err(|detail| ApplyError::Nft {
            netns: self.netns.clone(),
            table: self.table.clone(),
            detail,
        })
    }

    fn base_commands(&self) -> Vec<Value> {
        let t = &self.table;
        let lookup = json!([{"vmap": {
            "key": {"concat": [
                {"payload": {"protocol": "ip", "field": "daddr"}},
                {"meta": {"key": "l4proto"}},
                {"payload": {"protocol": "th", "field": "dport"}},
            ]},
            "data": format!("@{MAP}"),
        }}]);
        let masquerade = json!([
            {"match": {"op": "==", "left": {"&": [{"ct": {"key": "mark"}}, SNAT_MARK]}, "right": SNAT_MARK}},
            {"masquerade": null},
        ]);
        let mut commands = vec![
            json!({"add": {"table": {"family": "ip", "name": t}}}),
            json!({"add": {"map": {"family": "ip", "table": t, "name": MAP,
                "type": ["ipv4_addr", "inet_proto", "inet_service"], "map": "verdict"}}}),
        ];
        for (chain, hook, prio, expr) in [
            ("prerouting", "prerouting", -100, &lookup),
            ("output", "output", -100, &lookup),
            ("postrouting", "postrouting", 100, &masquerade),
        ] {
            commands.push(json!({"add": {"chain": {"family": "ip", "table": t, "name": chain,
                "type": "nat", "hook": hook, "prio": prio, "policy": "accept"}}}));
            commands.push(json!({"flush": {"chain": {"family": "ip", "table": t, "name": chain}}}));
            commands.push(json!({"add": {"rule": {"family": "ip", "table": t, "chain": chain, "expr": expr}}}));
        }
        commands
    }

    /// Commands that make `service` current (new chain and element, or a refilled chain).
    fn upsert_commands(&self, service: &Service, commands: &mut Vec<Value>, elements: &mut Vec<Value>) {
        let t = &self.table;
        let chain = chain_name(&service.key);
        if self.applied.contains_key(&service.key) {
            commands.push(json!({"flush": {"chain": {"family": "ip", "table": t, "name": chain}}}));
        } else {
            commands.push(json!({"add": {"chain": {"family": "ip", "table": t, "name": chain}}}));
            elements.push(json!([element_key(&service.key), {"goto": {"target": chain}}]));
        }
        for (rule, comment) in service_rules(service) {
            let mut body = json!({"family": "ip", "table": t, "chain": chain, "expr": rule});
            if let (Some(comment), Some(map)) = (comment, body.as_object_mut()) {
                map.insert("comment".to_owned(), Value::String(comment));
            }
            commands.push(json!({"add": {"rule": body}}));
        }
    }

    fn remove_commands(&self, key: &ServiceKey, commands: &mut Vec<Value>, elements: &mut Vec<Value>) {
        let t = &self.table;
        let chain = chain_name(key);
        elements.push(element_key(key));
        commands.push(json!({"flush": {"chain": {"family": "ip", "table": t, "name": chain}}}));
        commands.push(json!({"delete": {"chain": {"family": "ip", "table": t, "name": chain}}}));
    }

    /// One transaction: removals (element first, then the chain it pointed to), then upserts.
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
        let t = self.table.clone();
        let mut commands = Vec::new();
        let mut deleted = Vec::new();
        let mut chain_commands = Vec::new();
        for key in &removals {
            self.remove_commands(key, &mut chain_commands, &mut deleted);
        }
        let mut added = Vec::new();
        for service in &upserts {
            self.upsert_commands(service, &mut chain_commands, &mut added);
        }
        if !deleted.is_empty() {
            commands.push(json!({"delete": {"element": {"family": "ip", "table": t, "name": MAP, "elem": deleted}}}));
        }
        commands.extend(chain_commands);
        if !added.is_empty() {
            commands.push(json!({"add": {"element": {"family": "ip", "table": t, "name": MAP, "elem": added}}}));
        }
        self.apply(commands).map_err(|detail| ApplyError::Nft { netns: self.netns.clone(), table: t, detail })?;
        for key in &removals {
            self.applied.remove(key);
        }
        tracing::debug!(
            netns = %self.netns, table = %self.table, changed = upserts.len(), removed = removals.len(),
            "nftables services applied"
        );
        for service in upserts {
            self.applied.insert(service.key, service);
        }
        Ok(())
    }

    fn apply(&self, commands: Vec<Value>) -> Result<(), String> {
        let payload = json!({"nftables": commands}).to_string();
        self.netns
            .run(|| helper::apply_ruleset_raw(&payload, helper::DEFAULT_NFT, helper::DEFAULT_ARGS))
            .map_err(|err| format!("cannot enter namespace: {err}"))?
            .map(drop)
            .map_err(describe)
    }
}

fn describe(err: NftablesError) -> String {
    match err {
        NftablesError::NftFailed { stderr, .. } => format!("nft failed: {}", stderr.trim()),
        other => other.to_string(),
    }
}

impl LoadBalancer for NftBalancer {
    fn kind(&self) -> BackendKind {
        BackendKind::Nftables
    }

    fn netns(&self) -> &Netns {
        &self.netns
    }

    fn set(&mut self, services: &[Service]) -> Result<(), ApplyError> {
        self.change(services, &[])
    }

    fn remove(&mut self, keys: &[ServiceKey]) -> Result<(), ApplyError> {
        self.change(&[], keys)
    }

    fn replace_all(&mut self, services: &[Service]) -> Result<(), ApplyError> {
        let wanted: std::collections::BTreeSet<ServiceKey> = services.iter().map(|s| s.key).collect();
        let removals: Vec<ServiceKey> = self.applied.keys().filter(|k| !wanted.contains(k)).copied().collect();
        self.change(services, &removals)
    }

    fn drain(&mut self, service: &ServiceKey, backend: std::net::SocketAddrV4) -> Result<(), ApplyError> {
        let drained = crate::drained(&self.applied, &self.netns, service, backend)?;
        self.change(&[drained], &[])
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

/// The chain of a service: its key spelled out, so a listing maps back to keys without state.
pub(crate) fn chain_name(key: &ServiceKey) -> String {
    let [a, b, c, d] = key.addr.octets();
    format!("svc_{a}_{b}_{c}_{d}_{}_{}", key.protocol, key.port)
}

fn element_key(key: &ServiceKey) -> Value {
    json!({"concat": [key.addr.to_string(), key.protocol.name(), key.port]})
}

/// The rules of a service's chain, each with an optional comment.
pub(crate) fn service_rules(service: &Service) -> Vec<(Value, Option<String>)> {
    let mut rules = Vec::new();
    for drained in service.backends.iter().filter(|b| b.weight == 0) {
        rules.push((json!([]), Some(format!("{DRAINED}{}", drained.socket_addr()))));
    }
    if service.source_nat {
        rules.push((
            json!([{"mangle": {"key": {"ct": {"key": "mark"}}, "value": {"|": [{"ct": {"key": "mark"}}, SNAT_MARK]}}}]),
            None,
        ));
    }
    let mut entries = Vec::new();
    let mut next: u32 = 0;
    for backend in service.backends.iter().filter(|b| b.weight > 0) {
        let first = next;
        next += backend.weight;
        let last = next - 1;
        let slot = if first == last { json!(first) } else { json!({"range": [first, last]}) };
        entries.push(json!([slot, {"concat": [backend.addr.to_string(), backend.port]}]));
    }
    if entries.is_empty() {
        // No backend takes new connections: drop rather than let the packet reach the VIP itself.
        rules.push((json!([{"drop": null}]), None));
    } else {
        rules.push((
            json!([
                {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": service.key.protocol.name()}},
                {"dnat": {"family": "ip", "addr": {"map": {
                    "key": {"numgen": {"mode": "inc", "mod": next, "offset": 0}},
                    "data": {"set": entries},
                }}}},
            ]),
            None,
        ));
    }
    rules
}

/// Reads the services back from `nft -j list table ip NAME`.
pub(crate) fn parse_table(listing: &Value) -> Result<Vec<Service>, String> {
    let objects = listing.get("nftables").and_then(Value::as_array).ok_or("no `nftables` array in the listing")?;
    let mut keys_by_chain: BTreeMap<String, ServiceKey> = BTreeMap::new();
    let mut rules_by_chain: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for object in objects {
        if let Some(map) = object.get("map").filter(|m| m.get("name").and_then(Value::as_str) == Some(MAP)) {
            for elem in map.get("elem").and_then(Value::as_array).into_iter().flatten() {
                let (key, chain) = parse_element(elem).ok_or_else(|| format!("unexpected map element {elem}"))?;
                keys_by_chain.insert(chain, key);
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
        for rule in rules_by_chain.get(&chain).into_iter().flatten() {
            parse_rule(rule, &mut service).map_err(|e| format!("chain {chain}: {e}"))?;
        }
        services.push(service.normalized());
    }
    services.sort_by_key(|s| s.key);
    Ok(services)
}

fn parse_element(elem: &Value) -> Option<(ServiceKey, String)> {
    let pair = elem.as_array()?;
    let concat = pair.first()?.get("concat")?.as_array()?;
    let addr: Ipv4Addr = concat.first()?.as_str()?.parse().ok()?;
    let protocol = Protocol::from_name(concat.get(1)?.as_str()?)?;
    let port = u16::try_from(concat.get(2)?.as_u64()?).ok()?;
    let chain = pair.get(1)?.get("goto")?.get("target")?.as_str()?.to_owned();
    Some((ServiceKey { addr, port, protocol }, chain))
}

fn parse_rule(rule: &Value, service: &mut Service) -> Result<(), String> {
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
        let entries = map.get("data").and_then(|d| d.get("set")).and_then(Value::as_array);
        for entry in entries.into_iter().flatten() {
            service.backends.push(parse_entry(entry).ok_or_else(|| format!("unexpected dnat map entry {entry}"))?);
        }
    }
    Ok(())
}

fn parse_entry(entry: &Value) -> Option<Backend> {
    let pair = entry.as_array()?;
    let slot = pair.first()?;
    let weight = match slot.get("range").and_then(Value::as_array) {
        Some(range) => range.get(1)?.as_u64()? - range.first()?.as_u64()? + 1,
        None => {
            slot.as_u64()?;
            1
        }
    };
    let concat = pair.get(1)?.get("concat")?.as_array()?;
    let addr = concat.first()?.as_str()?.parse().ok()?;
    let port = u16::try_from(concat.get(1)?.as_u64()?).ok()?;
    Some(Backend { addr, port, weight: u32::try_from(weight).ok()? })
}

#[cfg(test)]
mod tests;

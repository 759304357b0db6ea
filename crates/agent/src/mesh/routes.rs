//! The task side's policy routing: one routing table and one `fwmark` rule per ingress sandbox,
//! numbered from the sandbox's address; reading what `ip -j` lists, and the plan from what is
//! there to what is wanted (pure).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// Marks and routing tables of the mesh are `NUMBER_BASE | (low 16 bits of the sandbox's
/// ingress address)`: 0x5348xxxx ("SH"), i.e. tables 1397227520 to 1397293055.
pub const NUMBER_BASE: u32 = 0x5348_0000;
/// The bits of a mark that say it is one of the mesh's.
pub(crate) const NUMBER_MASK: u32 = 0xffff_0000;
/// The priority of every `fwmark` rule the mesh makes (before `main` at 32766). A rule at this
/// priority is the mesh's: one that is not wanted is deleted.
pub const RULE_PRIORITY: u32 = 10_000;

/// The mark and routing table of the sandbox at `addr` (its ingress-network address).
///
/// Numbers come from the address, not from the sandbox's place in a list, so that adding or
/// removing another sandbox never renumbers one that established connections are marked with.
pub fn route_number(addr: Ipv4Addr) -> u32 {
    NUMBER_BASE | (u32::from(addr) & !NUMBER_MASK)
}

/// Whether `table` is one of the mesh's routing tables.
fn is_ours(table: u32) -> bool {
    table & NUMBER_MASK == NUMBER_BASE
}

/// Sorted, deduplicated sandboxes with their numbers; `Err` names two sandboxes whose numbers
/// clash (the same low 16 bits: only possible on an ingress subnet larger than a /16).
pub(crate) fn number(sandboxes: &[Ipv4Addr]) -> Result<Vec<(Ipv4Addr, u32)>, (Ipv4Addr, Ipv4Addr)> {
    let mut by_number: BTreeMap<u32, Ipv4Addr> = BTreeMap::new();
    for &addr in sandboxes.iter().collect::<BTreeSet<_>>() {
        if let Some(&other) = by_number.get(&route_number(addr)) {
            return Err((other, addr));
        }
        by_number.insert(route_number(addr), addr);
    }
    Ok(by_number.into_iter().map(|(n, a)| (a, n)).collect())
}

/// An `ip rule` at the mesh's priority, as listed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rule {
    /// The mark it matches, if any.
    pub(crate) fwmark: Option<u32>,
    /// Its mask, when not all ones.
    pub(crate) fwmask: Option<u32>,
    /// The table it looks up, as `ip` names it (a number or a name).
    pub(crate) table: String,
}

/// A route in one of the mesh's tables, as listed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Route {
    /// Its table.
    pub(crate) table: u32,
    /// Its destination (`default` or a prefix).
    pub(crate) dst: String,
    /// Its gateway.
    pub(crate) gateway: Option<Ipv4Addr>,
    /// Its output device.
    pub(crate) dev: Option<String>,
}

/// The mesh's rules and routes in a task namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Observed {
    /// Rules at [`RULE_PRIORITY`].
    pub(crate) rules: Vec<Rule>,
    /// Routes in the mesh's tables.
    pub(crate) routes: Vec<Route>,
}

/// Reads `ip -j -4 rule show` and `ip -j -4 route show table all` (what other rules and tables
/// hold is left out).
pub(crate) fn parse_observed(rules: &str, routes: &str) -> Result<Observed, String> {
    let list = |json: &str, what: &str| -> Result<Vec<serde_json::Value>, String> {
        // `ip -j` prints nothing at all for an empty dump on some versions.
        if json.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(json).map_err(|e| format!("{what}: {e}"))
    };
    let mut observed = Observed::default();
    for rule in list(rules, "ip -j rule show")? {
        if rule["priority"].as_u64() != Some(u64::from(RULE_PRIORITY)) {
            continue;
        }
        let hex = |key: &str| -> Result<Option<u32>, String> {
            rule[key]
                .as_str()
                .map(|s| parse_hex(s).ok_or_else(|| format!("rule {key} {s:?} is not hexadecimal")))
                .transpose()
        };
        let table = match &rule["table"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            other => return Err(format!("rule at priority {RULE_PRIORITY} has table {other}")),
        };
        let fwmask = hex("fwmask")?.filter(|m| *m != u32::MAX);
        observed.rules.push(Rule { fwmark: hex("fwmark")?, fwmask, table });
    }
    for route in list(routes, "ip -j route show table all")? {
        let Some(table) = route["table"].as_str().and_then(|t| t.parse::<u32>().ok()).filter(|t| is_ours(*t)) else {
            continue;
        };
        let gateway = match route["gateway"].as_str() {
            Some(gw) => Some(gw.parse().map_err(|_| format!("route gateway {gw:?} in table {table}"))?),
            None => None,
        };
        observed.routes.push(Route {
            table,
            dst: route["dst"].as_str().unwrap_or_default().to_owned(),
            gateway,
            dev: route["dev"].as_str().map(str::to_owned),
        });
    }
    observed.rules.sort();
    observed.routes.sort();
    Ok(observed)
}

fn parse_hex(s: &str) -> Option<u32> {
    u32::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// One change to the task namespace's rules and routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Empties a table.
    FlushTable(u32),
    /// Sets a table's default route.
    ReplaceDefault {
        /// The table.
        table: u32,
        /// The sandbox.
        via: Ipv4Addr,
        /// The ingress interface.
        dev: String,
    },
    /// Adds the rule `fwmark N lookup N`.
    AddRule(u32),
    /// Deletes a rule at the mesh's priority.
    DeleteRule(Rule),
}

impl fmt::Display for Op {
    /// The line `ip -batch` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FlushTable(table) => write!(f, "route flush table {table}"),
            Self::ReplaceDefault { table, via, dev } => {
                write!(f, "route replace default via {via} dev {dev} table {table}")
            }
            Self::AddRule(n) => write!(f, "rule add pref {RULE_PRIORITY} fwmark {n:#010x} lookup {n}"),
            Self::DeleteRule(rule) => {
                write!(f, "rule del pref {RULE_PRIORITY}")?;
                match (rule.fwmark, rule.fwmask) {
                    (Some(mark), Some(mask)) => write!(f, " fwmark {mark:#x}/{mask:#x}")?,
                    (Some(mark), None) => write!(f, " fwmark {mark:#x}")?,
                    (None, _) => {}
                }
                write!(f, " lookup {}", rule.table)
            }
        }
    }
}

/// What to change: `before` the nftables marks change (routes and rules of the wanted
/// sandboxes, so a newly marked connection finds its route), `after` (what is no longer
/// wanted, once no new connection gets its mark).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) before: Vec<Op>,
    pub(crate) after: Vec<Op>,
}

impl Plan {
    pub(crate) fn is_empty(&self) -> bool {
        self.before.is_empty() && self.after.is_empty()
    }
}

/// From `observed` to one table (`default via SANDBOX dev INGRESS_IF`) and one rule per wanted
/// sandbox, and nothing else at the mesh's priority or in its tables.
pub(crate) fn plan(wanted: &[(Ipv4Addr, u32)], ingress_if: &str, observed: &Observed) -> Plan {
    let mut plan = Plan::default();
    let wanted_tables: BTreeSet<u32> = wanted.iter().map(|(_, n)| *n).collect();
    for &(via, table) in wanted {
        let routes: Vec<&Route> = observed.routes.iter().filter(|r| r.table == table).collect();
        let right = |r: &Route| r.dst == "default" && r.gateway == Some(via) && r.dev.as_deref() == Some(ingress_if);
        match routes.as_slice() {
            [only] if right(only) => {}
            [] | [_] => plan.before.push(Op::ReplaceDefault { table, via, dev: ingress_if.to_owned() }),
            _ => {
                plan.before.push(Op::FlushTable(table));
                plan.before.push(Op::ReplaceDefault { table, via, dev: ingress_if.to_owned() });
            }
        }
        let rule = Rule { fwmark: Some(table), fwmask: None, table: table.to_string() };
        if !observed.rules.contains(&rule) {
            plan.before.push(Op::AddRule(table));
        }
    }
    let mut seen = BTreeSet::new();
    for rule in &observed.rules {
        let wanted_rule = rule.fwmask.is_none()
            && rule.fwmark.is_some_and(|m| wanted_tables.contains(&m) && rule.table == m.to_string());
        // A duplicate of a wanted rule (listed twice) goes too: deleting one leaves the other.
        if !wanted_rule || !seen.insert(rule.clone()) {
            plan.after.push(Op::DeleteRule(rule.clone()));
        }
    }
    let stale: BTreeSet<u32> = observed.routes.iter().map(|r| r.table).filter(|t| !wanted_tables.contains(t)).collect();
    plan.after.extend(stale.into_iter().map(Op::FlushTable));
    plan
}

/// The `ip -batch` input for `ops`.
pub(crate) fn batch(ops: &[Op]) -> String {
    ops.iter().map(|op| format!("{op}\n")).collect()
}

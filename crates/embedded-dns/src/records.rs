//! The record table: per-network service and task records, updated by deltas, and the name index
//! that queries are answered from.
//!
//! Callers describe what exists (services, tasks) and the table derives the names: a service's name
//! and aliases, `tasks.NAME`, task names, container hostnames and network aliases. Each network's
//! index is rebuilt as a whole when a batch of deltas touches it and published behind an `Arc`, so a
//! query takes a read lock for as long as one hash lookup and never waits for a rebuild.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, PoisonError, RwLock};

/// How a service is reached on a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The service name resolves to its virtual IPs on this network (one IPv4, optionally one IPv6).
    Vip(Vec<IpAddr>),
    /// DNS round robin: the service name resolves to the addresses of its healthy tasks.
    DnsRr,
}

/// A service attached to a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecord {
    /// Stable ID; deltas refer to the service by it.
    pub id: String,
    /// The service name, e.g. `web`.
    pub name: String,
    /// Network-scoped aliases of the service; each resolves like the name, `tasks.ALIAS` included.
    pub aliases: Vec<String>,
    /// VIP or DNS round robin.
    pub endpoint: Endpoint,
}

/// A task (container) attached to a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// Stable ID; deltas refer to the task by it.
    pub id: String,
    /// The ID of the service the task belongs to, if any.
    pub service_id: Option<String>,
    /// The task name, e.g. `web.1.x8f2k1`; resolves to the task's addresses.
    pub name: String,
    /// The container's hostname, if it should resolve too.
    pub hostname: Option<String>,
    /// Network aliases of this container.
    pub aliases: Vec<String>,
    /// The task's addresses on this network (IPv4 and/or IPv6).
    pub addresses: Vec<IpAddr>,
    /// Only healthy tasks appear in `tasks.NAME` and in DNS round-robin answers.
    pub healthy: bool,
}

/// One change to the record table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    /// Adds a service to a network, or replaces it (matched by ID).
    UpsertService {
        /// The network ID.
        network: String,
        /// The service.
        service: ServiceRecord,
    },
    /// Removes a service from a network.
    RemoveService {
        /// The network ID.
        network: String,
        /// The service ID.
        service_id: String,
    },
    /// Adds a task to a network, or replaces it (matched by ID): health changes are upserts.
    UpsertTask {
        /// The network ID.
        network: String,
        /// The task.
        task: TaskRecord,
    },
    /// Removes a task from a network.
    RemoveTask {
        /// The network ID.
        network: String,
        /// The task ID.
        task_id: String,
    },
    /// Removes a network and every record on it.
    RemoveNetwork {
        /// The network ID.
        network: String,
    },
}

impl Delta {
    fn network(&self) -> &str {
        match self {
            Self::UpsertService { network, .. }
            | Self::RemoveService { network, .. }
            | Self::UpsertTask { network, .. }
            | Self::RemoveTask { network, .. }
            | Self::RemoveNetwork { network } => network,
        }
    }
}

/// A batch of deltas was refused; nothing of the batch was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// A name is not a valid DNS name.
    #[error("network {network}: {what} {name:?} is not a valid DNS name ({reason})")]
    InvalidName {
        /// The network ID of the delta.
        network: String,
        /// Which name it was: `service name`, `task alias`, …
        what: &'static str,
        /// The name.
        name: String,
        /// Why it is not valid.
        reason: &'static str,
    },
}

/// Addresses a name resolves to on one network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Addresses {
    pub(crate) v4: Vec<Ipv4Addr>,
    pub(crate) v6: Vec<Ipv6Addr>,
}

impl Addresses {
    fn push(&mut self, addr: IpAddr) {
        match addr {
            IpAddr::V4(a) => self.v4.push(a),
            IpAddr::V6(a) => self.v6.push(a),
        }
    }

    fn finish(&mut self) {
        self.v4.sort_unstable();
        self.v4.dedup();
        self.v6.sort_unstable();
        self.v6.dedup();
    }
}

/// The derived names of one network: lower-case name (no trailing dot) → addresses, and
/// address → name for reverse lookups.
#[derive(Debug, Default)]
pub(crate) struct NetworkIndex {
    names: HashMap<String, Addresses>,
    reverse: HashMap<IpAddr, String>,
}

impl NetworkIndex {
    fn build(data: &NetworkData) -> Self {
        let mut names: HashMap<String, Addresses> = HashMap::new();
        let mut reverse = HashMap::new();
        // Task-level names first; service-level names below replace any task name they collide with.
        for task in data.tasks.values() {
            for name in std::iter::once(&task.name).chain(task.hostname.iter()).chain(task.aliases.iter()) {
                let entry = names.entry(name.to_ascii_lowercase()).or_default();
                task.addresses.iter().for_each(|a| entry.push(*a));
            }
            for addr in &task.addresses {
                reverse.insert(*addr, task.name.to_ascii_lowercase());
            }
        }
        // Healthy task addresses per service, in one pass over the tasks.
        let mut healthy_by_service: HashMap<&str, Addresses> = HashMap::new();
        for task in data.tasks.values().filter(|t| t.healthy) {
            if let Some(service) = task.service_id.as_deref() {
                let entry = healthy_by_service.entry(service).or_default();
                task.addresses.iter().for_each(|a| entry.push(*a));
            }
        }
        let mut service_names: HashMap<String, Addresses> = HashMap::new();
        for service in data.services.values() {
            let healthy = healthy_by_service.get(service.id.as_str()).cloned().unwrap_or_default();
            let by_name = match &service.endpoint {
                Endpoint::Vip(vips) => {
                    let mut a = Addresses::default();
                    vips.iter().for_each(|v| a.push(*v));
                    for vip in vips {
                        reverse.insert(*vip, service.name.to_ascii_lowercase());
                    }
                    a
                }
                Endpoint::DnsRr => healthy.clone(),
            };
            for name in std::iter::once(&service.name).chain(service.aliases.iter()) {
                let lower = name.to_ascii_lowercase();
                merge(service_names.entry(format!("tasks.{lower}")).or_default(), &healthy);
                merge(service_names.entry(lower).or_default(), &by_name);
            }
        }
        names.extend(service_names);
        names.values_mut().for_each(Addresses::finish);
        Self { names, reverse }
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Addresses> {
        self.names.get(name)
    }

    pub(crate) fn reverse(&self, addr: &IpAddr) -> Option<&str> {
        self.reverse.get(addr).map(String::as_str)
    }
}

fn merge(into: &mut Addresses, from: &Addresses) {
    into.v4.extend_from_slice(&from.v4);
    into.v6.extend_from_slice(&from.v6);
}

/// What callers told the table about one network.
#[derive(Debug, Default)]
struct NetworkData {
    services: BTreeMap<String, ServiceRecord>,
    tasks: BTreeMap<String, TaskRecord>,
}

/// The record table shared by the server and its callers. Cloning gives another handle to the
/// same table.
#[derive(Debug, Clone, Default)]
pub struct RecordTable {
    inner: Arc<TableInner>,
}

#[derive(Debug, Default)]
struct TableInner {
    /// The source of truth; held only while a batch is applied.
    data: std::sync::Mutex<HashMap<String, NetworkData>>,
    /// What queries read: one immutable index per network, swapped whole.
    index: RwLock<HashMap<String, Arc<NetworkIndex>>>,
}

impl RecordTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a batch of deltas atomically: queries see either none or all of them. The batch is
    /// validated first and refused whole if a name is not a valid DNS name.
    pub fn apply(&self, deltas: impl IntoIterator<Item = Delta>) -> Result<(), UpdateError> {
        let deltas: Vec<Delta> = deltas.into_iter().collect();
        deltas.iter().try_for_each(validate)?;
        let mut data = self.inner.data.lock().unwrap_or_else(PoisonError::into_inner);
        let mut touched: HashSet<String> = HashSet::new();
        for delta in deltas {
            touched.insert(delta.network().to_owned());
            match delta {
                Delta::UpsertService { network, service } => {
                    data.entry(network).or_default().services.insert(service.id.clone(), service);
                }
                Delta::RemoveService { network, service_id } => {
                    if let Some(n) = data.get_mut(&network) {
                        n.services.remove(&service_id);
                    }
                }
                Delta::UpsertTask { network, task } => {
                    data.entry(network).or_default().tasks.insert(task.id.clone(), task);
                }
                Delta::RemoveTask { network, task_id } => {
                    if let Some(n) = data.get_mut(&network) {
                        n.tasks.remove(&task_id);
                    }
                }
                Delta::RemoveNetwork { network } => {
                    data.remove(&network);
                }
            }
        }
        // Build outside the index lock: readers keep answering from the old indexes meanwhile.
        let rebuilt: Vec<(String, Option<Arc<NetworkIndex>>)> = touched
            .into_iter()
            .map(|network| {
                let index = data
                    .get(&network)
                    .filter(|n| !n.services.is_empty() || !n.tasks.is_empty())
                    .map(|n| Arc::new(NetworkIndex::build(n)));
                (network, index)
            })
            .collect();
        data.retain(|_, n| !n.services.is_empty() || !n.tasks.is_empty());
        let mut index = self.inner.index.write().unwrap_or_else(PoisonError::into_inner);
        for (network, built) in rebuilt {
            match built {
                Some(built) => {
                    index.insert(network, built);
                }
                None => {
                    index.remove(&network);
                }
            }
        }
        drop(index);
        drop(data);
        Ok(())
    }

    /// The addresses `name` (lower case, no trailing dot) resolves to on the first of `networks`
    /// that knows it, in the order given.
    pub(crate) fn lookup<R>(&self, networks: &[String], name: &str, f: impl FnOnce(&Addresses) -> R) -> Option<R> {
        let index = self.inner.index.read().unwrap_or_else(PoisonError::into_inner);
        networks.iter().filter_map(|n| index.get(n)).find_map(|idx| idx.get(name)).map(f)
    }

    /// Whether `name` is known on any network, whoever asks.
    pub(crate) fn exists_anywhere(&self, name: &str) -> bool {
        let index = self.inner.index.read().unwrap_or_else(PoisonError::into_inner);
        index.values().any(|idx| idx.get(name).is_some())
    }

    /// The name of the task or service that owns `addr` on one of `networks`.
    pub(crate) fn reverse(&self, networks: &[String], addr: &IpAddr) -> Option<String> {
        let index = self.inner.index.read().unwrap_or_else(PoisonError::into_inner);
        networks.iter().filter_map(|n| index.get(n)).find_map(|idx| idx.reverse(addr)).map(str::to_owned)
    }

    /// Every name the table answers on `network` (lower case), sorted; for diagnostics and tests.
    pub fn names(&self, network: &str) -> Vec<String> {
        let index = self.inner.index.read().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<String> = index.get(network).map(|i| i.names.keys().cloned().collect()).unwrap_or_default();
        names.sort();
        names
    }
}

fn validate(delta: &Delta) -> Result<(), UpdateError> {
    let network = delta.network();
    let check = |what: &'static str, name: &str| {
        check_name(name).map_err(|reason| UpdateError::InvalidName {
            network: network.to_owned(),
            what,
            name: name.to_owned(),
            reason,
        })
    };
    match delta {
        Delta::UpsertService { service, .. } => {
            check("service name", &service.name)?;
            service.aliases.iter().try_for_each(|a| check("service alias", a))
        }
        Delta::UpsertTask { task, .. } => {
            check("task name", &task.name)?;
            task.hostname.iter().try_for_each(|h| check("container hostname", h))?;
            task.aliases.iter().try_for_each(|a| check("task alias", a))
        }
        Delta::RemoveService { .. } | Delta::RemoveTask { .. } | Delta::RemoveNetwork { .. } => Ok(()),
    }
}

/// Checks the shape of a name as it appears in a query: dot-separated labels of 1 to 63 bytes of
/// letters, digits, `-` and `_`, 253 bytes in all, no trailing dot.
pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > 253 {
        return Err("longer than 253 bytes");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 bytes");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err("only letters, digits, '-' and '_' are allowed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn task(id: &str, service: &str, addr: &str, healthy: bool) -> TaskRecord {
        TaskRecord {
            id: id.into(),
            service_id: Some(service.into()),
            name: format!("{service}.{id}"),
            hostname: Some(format!("host-{id}")),
            aliases: vec!["db-alias".into()],
            addresses: vec![ip(addr)],
            healthy,
        }
    }

    fn lookup(table: &RecordTable, networks: &[&str], name: &str) -> Option<Vec<IpAddr>> {
        let networks: Vec<String> = networks.iter().map(|s| (*s).to_owned()).collect();
        table.lookup(&networks, name, |a| {
            a.v4.iter().map(|v| IpAddr::V4(*v)).chain(a.v6.iter().map(|v| IpAddr::V6(*v))).collect()
        })
    }

    #[test]
    fn derives_names_from_services_and_tasks() {
        let table = RecordTable::new();
        table
            .apply([
                Delta::UpsertService {
                    network: "n1".into(),
                    service: ServiceRecord {
                        id: "s1".into(),
                        name: "Web".into(),
                        aliases: vec!["www".into()],
                        endpoint: Endpoint::Vip(vec![ip("198.18.0.2"), ip("fd00::2")]),
                    },
                },
                Delta::UpsertTask { network: "n1".into(), task: task("t1", "s1", "198.18.0.10", true) },
                Delta::UpsertTask { network: "n1".into(), task: task("t2", "s1", "198.18.0.11", false) },
            ])
            .expect("apply");
        assert_eq!(lookup(&table, &["n1"], "web"), Some(vec![ip("198.18.0.2"), ip("fd00::2")]));
        assert_eq!(lookup(&table, &["n1"], "www"), Some(vec![ip("198.18.0.2"), ip("fd00::2")]));
        assert_eq!(lookup(&table, &["n1"], "tasks.web"), Some(vec![ip("198.18.0.10")]), "healthy only");
        assert_eq!(lookup(&table, &["n1"], "tasks.www"), Some(vec![ip("198.18.0.10")]));
        assert_eq!(lookup(&table, &["n1"], "s1.t2"), Some(vec![ip("198.18.0.11")]), "task names regardless of health");
        assert_eq!(lookup(&table, &["n1"], "host-t1"), Some(vec![ip("198.18.0.10")]));
        assert_eq!(lookup(&table, &["n1"], "db-alias"), Some(vec![ip("198.18.0.10"), ip("198.18.0.11")]));
        assert_eq!(lookup(&table, &["n2"], "web"), None, "other networks know nothing");
        assert_eq!(table.reverse(&["n1".into()], &ip("198.18.0.10")).as_deref(), Some("s1.t1"));
        assert_eq!(table.reverse(&["n1".into()], &ip("198.18.0.2")).as_deref(), Some("web"));
    }

    #[test]
    fn dnsrr_and_removals() {
        let table = RecordTable::new();
        let service = ServiceRecord { id: "s1".into(), name: "db".into(), aliases: vec![], endpoint: Endpoint::DnsRr };
        table
            .apply([
                Delta::UpsertService { network: "n1".into(), service },
                Delta::UpsertTask { network: "n1".into(), task: task("t1", "s1", "198.18.0.10", true) },
                Delta::UpsertTask { network: "n1".into(), task: task("t2", "s1", "198.18.0.11", true) },
            ])
            .expect("apply");
        assert_eq!(lookup(&table, &["n1"], "db"), Some(vec![ip("198.18.0.10"), ip("198.18.0.11")]));
        table.apply([Delta::RemoveTask { network: "n1".into(), task_id: "t1".into() }]).expect("apply");
        assert_eq!(lookup(&table, &["n1"], "db"), Some(vec![ip("198.18.0.11")]));
        table.apply([Delta::RemoveService { network: "n1".into(), service_id: "s1".into() }]).expect("apply");
        assert_eq!(lookup(&table, &["n1"], "db"), None);
        assert_eq!(lookup(&table, &["n1"], "s1.t2"), Some(vec![ip("198.18.0.11")]));
        table.apply([Delta::RemoveNetwork { network: "n1".into() }]).expect("apply");
        assert_eq!(table.names("n1"), Vec::<String>::new());
    }

    #[test]
    fn first_network_in_order_wins() {
        let table = RecordTable::new();
        let svc = |vip: &str| ServiceRecord {
            id: "s1".into(),
            name: "api".into(),
            aliases: vec![],
            endpoint: Endpoint::Vip(vec![ip(vip)]),
        };
        table
            .apply([
                Delta::UpsertService { network: "a".into(), service: svc("198.18.0.2") },
                Delta::UpsertService { network: "b".into(), service: svc("198.18.1.2") },
            ])
            .expect("apply");
        assert_eq!(lookup(&table, &["b", "a"], "api"), Some(vec![ip("198.18.1.2")]));
        assert_eq!(lookup(&table, &["a", "b"], "api"), Some(vec![ip("198.18.0.2")]));
    }

    /// How long this takes is measured by the `dns` bench, not here.
    #[test]
    fn a_network_of_ten_thousand_tasks_is_indexed_whole() {
        let table = RecordTable::new();
        let mut deltas = Vec::new();
        for s in 0..1_000u32 {
            let endpoint =
                if s % 2 == 0 { Endpoint::DnsRr } else { Endpoint::Vip(vec![IpAddr::from([198, 19, 0, 1])]) };
            let service = ServiceRecord { id: format!("s{s}"), name: format!("svc{s}"), aliases: vec![], endpoint };
            deltas.push(Delta::UpsertService { network: "big".into(), service });
            for t in 0..10u32 {
                let n = s * 10 + t;
                let task = TaskRecord {
                    id: format!("t{n}"),
                    service_id: Some(format!("s{s}")),
                    name: format!("svc{s}.{t}"),
                    hostname: None,
                    aliases: vec![],
                    addresses: vec![IpAddr::from([198, 18, (n >> 8) as u8, n as u8])],
                    healthy: true,
                };
                deltas.push(Delta::UpsertTask { network: "big".into(), task });
            }
        }
        table.apply(deltas).expect("apply");
        table.apply([Delta::RemoveTask { network: "big".into(), task_id: "t0".into() }]).expect("apply one more");
        assert_eq!(lookup(&table, &["big"], "svc0").map(|a| a.len()), Some(9));
        assert_eq!(lookup(&table, &["big"], "tasks.svc1").map(|a| a.len()), Some(10));
    }

    #[test]
    fn invalid_names_refuse_the_whole_batch() {
        let table = RecordTable::new();
        let err = table
            .apply([
                Delta::UpsertTask { network: "n1".into(), task: task("t1", "s1", "198.18.0.10", true) },
                Delta::UpsertService {
                    network: "n1".into(),
                    service: ServiceRecord {
                        id: "s1".into(),
                        name: "bad name".into(),
                        aliases: vec![],
                        endpoint: Endpoint::DnsRr,
                    },
                },
            ])
            .expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "network n1: service name \"bad name\" is not a valid DNS name \
             (only letters, digits, '-' and '_' are allowed)"
        );
        assert_eq!(table.names("n1"), Vec::<String>::new(), "nothing applied");
    }
}

//! The `Networks` stream: what each node needs to wire the networks it hosts, derived from the
//! store alone (no gossip). One feed per dispatcher watches networks, services, tasks and
//! nodes, keeps an index of them, and materialises each network's items — the network itself,
//! its peers (every task address with the underlay address of its node, and every node's ingress
//! sandbox on the ingress network) and its service table (names, aliases, VIP, ports). A batch
//! of store changes recomputes the networks it touched, diffs their items against what was
//! materialised, and sends each node the differences for the networks it hosts; a node that
//! starts or stops hosting a network gets all of its items, or its removal.
//!
//! A node hosts the networks its live tasks are attached to, and the ingress network once it has
//! an ingress sandbox address. A task is a peer while it holds its addresses (scheduled and not
//! ended), and serves (is in DNS and the load balancers) while it is RUNNING and meant to run.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use shoal_api::v1::{self, TaskState};
use shoal_raft_store::EventKind;
use tokio::sync::mpsc;

use crate::allocator::{holds_addresses, is_encrypted, is_ingress};
use crate::control::node_data_addr;
use crate::objects::{Object, ObjectStore, decode, kv_id};

/// The prefix of a node's ingress sandbox's peer ID.
pub(crate) const SANDBOX_PREFIX: &str = "ingress-sbox.";

/// One item of a network, ordered so that the network comes before its keys, peers and
/// services.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    Network,
    /// The cluster's key ring, on encrypted networks.
    Keys,
    Peer(String),
    Service(String),
}

/// What the index keeps of a task that holds addresses.
#[derive(Debug, Clone, PartialEq)]
struct TaskEntry {
    node_id: String,
    service_id: String,
    name: String,
    /// (network ID, address, aliases).
    attachments: Vec<(String, String, Vec<String>)>,
    serving: bool,
}

impl TaskEntry {
    fn of(task: &v1::Task) -> Option<Self> {
        if task.node_id.is_empty() || task.networks.is_empty() || !holds_addresses(task) {
            return None;
        }
        let attachments = task
            .networks
            .iter()
            .filter_map(|a| {
                let id = a.network.as_ref()?.id.clone();
                Some((id, a.addresses.first()?.clone(), a.aliases.clone()))
            })
            .collect();
        Some(Self {
            node_id: task.node_id.clone(),
            service_id: task.service_id.clone(),
            name: task.annotations.as_ref().map(|a| a.name.clone()).unwrap_or_default(),
            attachments,
            serving: task.observed_state() == TaskState::Running && task.desired() == TaskState::Running,
        })
    }

    fn networks(&self) -> impl Iterator<Item = &str> {
        self.attachments.iter().map(|(id, ..)| id.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
struct NodeEntry {
    addr: String,
    /// (network ID, address) of its ingress sandbox.
    ingress: Option<(String, String)>,
}

impl NodeEntry {
    fn of(node: &v1::Node) -> Self {
        let ingress =
            node.ingress.as_ref().and_then(|a| Some((a.network.as_ref()?.id.clone(), a.addresses.first()?.clone())));
        Self { addr: node_data_addr(node), ingress }
    }
}

/// The store as the feed sees it.
#[derive(Debug, Default)]
struct Index {
    networks: HashMap<String, v1::Network>,
    services: HashMap<String, v1::Service>,
    nodes: HashMap<String, NodeEntry>,
    tasks: HashMap<String, TaskEntry>,
    by_node: HashMap<String, HashSet<String>>,
    by_network: HashMap<String, HashSet<String>>,
    /// The keys of encrypted networks.
    keys: Vec<v1::NetworkKey>,
}

/// What a batch of changes touched.
#[derive(Debug, Default)]
struct Dirty {
    networks: HashSet<String>,
    nodes: HashSet<String>,
    all_nodes: bool,
}

/// The networks a service is on: where it has a VIP, and those its spec names (dnsrr).
fn service_networks(service: &v1::Service) -> BTreeSet<String> {
    let mut ids: BTreeSet<String> = service
        .endpoint
        .as_ref()
        .map(|e| e.virtual_ips.iter().map(|v| v.network_id.clone()).collect())
        .unwrap_or_default();
    if let Some(spec) = &service.spec {
        ids.extend(spec.networks.iter().map(|n| n.target.clone()));
    }
    ids
}

impl Index {
    fn ingress(&self) -> Option<&str> {
        let mut ids: Vec<&str> = self.networks.values().filter(|n| is_ingress(n)).map(|n| n.id.as_str()).collect();
        ids.sort();
        ids.first().copied()
    }

    fn put_task(&mut self, id: &str, entry: Option<TaskEntry>, dirty: &mut Dirty) {
        if let Some(old) = self.tasks.get(id) {
            if Some(old) == entry.as_ref() {
                return;
            }
            dirty.nodes.insert(old.node_id.clone());
            dirty.networks.extend(old.networks().map(str::to_owned));
        }
        if let Some(old) = self.tasks.remove(id) {
            if let Some(set) = self.by_node.get_mut(&old.node_id) {
                set.remove(id);
            }
            for network in old.networks() {
                if let Some(set) = self.by_network.get_mut(network) {
                    set.remove(id);
                }
            }
        }
        if let Some(entry) = entry {
            dirty.nodes.insert(entry.node_id.clone());
            dirty.networks.extend(entry.networks().map(str::to_owned));
            self.by_node.entry(entry.node_id.clone()).or_default().insert(id.to_owned());
            for network in entry.networks() {
                self.by_network.entry(network.to_owned()).or_default().insert(id.to_owned());
            }
            self.tasks.insert(id.to_owned(), entry);
        }
    }

    fn put_service(&mut self, id: &str, service: Option<v1::Service>, dirty: &mut Dirty) {
        if let Some(old) = self.services.remove(id) {
            dirty.networks.extend(service_networks(&old));
        }
        if let Some(service) = service {
            dirty.networks.extend(service_networks(&service));
            self.services.insert(id.to_owned(), service);
        }
    }

    fn put_network(&mut self, id: &str, network: Option<v1::Network>, dirty: &mut Dirty) {
        dirty.networks.insert(id.to_owned());
        let was_ingress = self.networks.get(id).is_some_and(is_ingress);
        match network {
            Some(network) => {
                dirty.all_nodes |= is_ingress(&network) || was_ingress;
                self.networks.insert(id.to_owned(), network);
            }
            None => {
                dirty.all_nodes |= was_ingress;
                self.networks.remove(id);
            }
        }
    }

    fn put_keys(&mut self, ring: Option<v1::NetworkKeyRing>, dirty: &mut Dirty) {
        let keys = ring.map(|r| r.keys).unwrap_or_default();
        if keys == self.keys {
            return;
        }
        self.keys = keys;
        dirty.networks.extend(self.networks.values().filter(|n| is_encrypted(n)).map(|n| n.id.clone()));
    }

    fn put_node(&mut self, id: &str, node: Option<NodeEntry>, dirty: &mut Dirty) {
        let old = self.nodes.get(id).cloned();
        if old == node {
            return;
        }
        dirty.nodes.insert(id.to_owned());
        // Its address is in every peer entry of its tasks, and its sandbox in ingress.
        for task in self.by_node.get(id).into_iter().flatten() {
            if let Some(entry) = self.tasks.get(task) {
                dirty.networks.extend(entry.networks().map(str::to_owned));
            }
        }
        for entry in old.iter().chain(node.iter()) {
            if let Some((network, _)) = &entry.ingress {
                dirty.networks.insert(network.clone());
            }
        }
        match node {
            Some(node) => self.nodes.insert(id.to_owned(), node),
            None => self.nodes.remove(id),
        };
    }

    /// The networks `node_id` hosts.
    fn hosted(&self, node_id: &str) -> BTreeSet<String> {
        let mut hosted: BTreeSet<String> = self
            .by_node
            .get(node_id)
            .into_iter()
            .flatten()
            .filter_map(|t| self.tasks.get(t))
            .flat_map(|t| t.networks().map(str::to_owned).collect::<Vec<_>>())
            .filter(|id| self.networks.contains_key(id))
            .collect();
        if let (Some(ingress), Some(node)) = (self.ingress(), self.nodes.get(node_id))
            && node.ingress.as_ref().is_some_and(|(id, _)| id == ingress)
        {
            hosted.insert(ingress.to_owned());
        }
        hosted
    }

    /// Every item of network `id` (none if it is gone or not allocated).
    fn items(&self, id: &str) -> BTreeMap<Key, v1::NetworkChange> {
        let mut items = BTreeMap::new();
        let Some(network) = self.networks.get(id).filter(|n| n.allocation.is_some()) else { return items };
        let update = v1::network_change::Action::Update as i32;
        items.insert(
            Key::Network,
            v1::NetworkChange { action: update, network: Some(network.clone()), ..Default::default() },
        );
        if is_encrypted(network) && !self.keys.is_empty() {
            let keys = v1::NetworkKeys { network_id: id.to_owned(), keys: self.keys.clone() };
            items.insert(Key::Keys, v1::NetworkChange { action: update, keys: Some(keys), ..Default::default() });
        }
        for task_id in self.by_network.get(id).into_iter().flatten() {
            let Some(task) = self.tasks.get(task_id) else { continue };
            let Some(node) = self.nodes.get(&task.node_id).filter(|n| !n.addr.is_empty()) else { continue };
            for (_, address, aliases) in task.attachments.iter().filter(|(n, ..)| n == id) {
                let peer = v1::NetworkPeer {
                    network_id: id.to_owned(),
                    id: task_id.clone(),
                    node_id: task.node_id.clone(),
                    node_addr: node.addr.clone(),
                    address: address.clone(),
                    service_id: task.service_id.clone(),
                    name: task.name.clone(),
                    aliases: aliases.clone(),
                    serving: task.serving,
                };
                items.insert(
                    Key::Peer(task_id.clone()),
                    v1::NetworkChange { action: update, peer: Some(peer), ..Default::default() },
                );
            }
        }
        if is_ingress(network) {
            for (node_id, node) in &self.nodes {
                let Some((_, address)) = node.ingress.as_ref().filter(|(n, _)| n == id) else { continue };
                if node.addr.is_empty() {
                    continue;
                }
                let peer_id = format!("{SANDBOX_PREFIX}{node_id}");
                let peer = v1::NetworkPeer {
                    network_id: id.to_owned(),
                    id: peer_id.clone(),
                    node_id: node_id.clone(),
                    node_addr: node.addr.clone(),
                    address: address.clone(),
                    ..Default::default()
                };
                items.insert(
                    Key::Peer(peer_id),
                    v1::NetworkChange { action: update, peer: Some(peer), ..Default::default() },
                );
            }
        }
        for service in self.services.values() {
            if !service_networks(service).contains(id) {
                continue;
            }
            let spec = service.spec.clone().unwrap_or_default();
            let endpoint = service.endpoint.clone().unwrap_or_default();
            let entry = v1::NetworkService {
                network_id: id.to_owned(),
                service_id: service.id.clone(),
                name: service.name().unwrap_or_default().to_owned(),
                aliases: spec.networks.iter().find(|n| n.target == id).map(|n| n.aliases.clone()).unwrap_or_default(),
                mode: endpoint.spec.as_ref().map_or(0, |s| s.mode),
                vip: endpoint
                    .virtual_ips
                    .iter()
                    .find(|v| v.network_id == id)
                    .map(|v| v.addr.clone())
                    .unwrap_or_default(),
                ports: endpoint.ports.clone(),
            };
            items.insert(
                Key::Service(service.id.clone()),
                v1::NetworkChange { action: update, service: Some(entry), ..Default::default() },
            );
        }
        items
    }
}

/// A REMOVE of an item (its network and ID only).
fn removal(network_id: &str, key: &Key) -> v1::NetworkChange {
    let action = v1::network_change::Action::Remove as i32;
    match key {
        Key::Network => v1::NetworkChange {
            action,
            network: Some(v1::Network { id: network_id.to_owned(), ..Default::default() }),
            ..Default::default()
        },
        Key::Keys => v1::NetworkChange {
            action,
            keys: Some(v1::NetworkKeys { network_id: network_id.to_owned(), ..Default::default() }),
            ..Default::default()
        },
        Key::Peer(id) => v1::NetworkChange {
            action,
            peer: Some(v1::NetworkPeer { network_id: network_id.to_owned(), id: id.clone(), ..Default::default() }),
            ..Default::default()
        },
        Key::Service(id) => v1::NetworkChange {
            action,
            service: Some(v1::NetworkService {
                network_id: network_id.to_owned(),
                service_id: id.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

/// A node's stream as the feed serves it.
#[derive(Debug)]
struct Subscriber {
    node_id: String,
    hosted: BTreeSet<String>,
    tx: mpsc::Sender<Vec<v1::NetworkChange>>,
}

/// A request to the feed: a node's stream opened.
#[derive(Debug)]
pub(super) struct Subscribe {
    pub node_id: String,
    /// The first batch is the node's complete set.
    pub tx: mpsc::Sender<Vec<v1::NetworkChange>>,
}

/// How many batches a node's stream may fall behind before it is ended (the node starts over).
pub(super) const NETWORK_FEED_BUFFER: usize = 1024;

/// The feed's state.
#[derive(Debug, Default)]
struct Feed {
    index: Index,
    materialized: HashMap<String, BTreeMap<Key, v1::NetworkChange>>,
    subscribers: Vec<Subscriber>,
}

impl Feed {
    fn materialize(&mut self, network: &str) -> &BTreeMap<Key, v1::NetworkChange> {
        if !self.materialized.contains_key(network) {
            let items = self.index.items(network);
            self.materialized.insert(network.to_owned(), items);
        }
        &self.materialized[network]
    }

    fn complete(&mut self, hosted: &BTreeSet<String>) -> Vec<v1::NetworkChange> {
        let mut changes = Vec::new();
        for network in hosted {
            changes.extend(self.materialize(network).values().cloned());
        }
        changes
    }

    fn subscribe(&mut self, request: Subscribe) {
        let hosted = self.index.hosted(&request.node_id);
        let complete = self.complete(&hosted);
        if request.tx.try_send(complete).is_ok() {
            self.subscribers.push(Subscriber { node_id: request.node_id, hosted, tx: request.tx });
        }
    }

    /// Recomputes what `dirty` touched and sends each node its differences.
    fn publish(&mut self, dirty: Dirty) {
        let mut changed: HashMap<String, Vec<v1::NetworkChange>> = HashMap::new();
        for network in &dirty.networks {
            let new = self.index.items(network);
            let old = self.materialized.remove(network).unwrap_or_default();
            let mut changes = Vec::new();
            for (key, item) in &new {
                if old.get(key) != Some(item) {
                    changes.push(item.clone());
                }
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                // A network's own removal is sent when nodes stop hosting it.
                if *key != Key::Network {
                    changes.push(removal(network, key));
                }
            }
            if !new.is_empty() {
                self.materialized.insert(network.clone(), new);
            }
            changed.insert(network.clone(), changes);
        }
        let mut subscribers = std::mem::take(&mut self.subscribers);
        for subscriber in &mut subscribers {
            let mut out = Vec::new();
            let hosted = if dirty.all_nodes || dirty.nodes.contains(&subscriber.node_id) {
                self.index.hosted(&subscriber.node_id)
            } else {
                subscriber.hosted.clone()
            };
            // Networks it hosts that are gone (or not allocated) are dropped too.
            let hosted: BTreeSet<String> = hosted.into_iter().filter(|n| !self.materialize(n).is_empty()).collect();
            for gone in subscriber.hosted.difference(&hosted) {
                out.push(removal(gone, &Key::Network));
            }
            for network in &hosted {
                if subscriber.hosted.contains(network) {
                    out.extend(changed.get(network).into_iter().flatten().cloned());
                } else {
                    out.extend(self.materialize(network).values().cloned());
                }
            }
            subscriber.hosted = hosted;
            if !out.is_empty() && subscriber.tx.try_send(out).is_err() {
                // Fell behind or gone: its stream ends and the node starts over.
                subscriber.node_id.clear();
            }
        }
        subscribers.retain(|s| !s.node_id.is_empty() && !s.tx.is_closed());
        self.subscribers = subscribers;
    }
}

fn decode_event<T: Object>(event: &shoal_raft_store::Event) -> (String, Option<T>) {
    let id = kv_id::<T>(&event.kv.key);
    let object = match event.kind {
        EventKind::Put => match decode::<T>(&id, &event.kv.value, event.kv.mod_revision) {
            Ok(object) => Some(object),
            Err(err) => {
                tracing::warn!(error = %err, "undecodable change skipped by the networks feed");
                return (id, None);
            }
        },
        EventKind::Delete => None,
    };
    (id, object)
}

/// Runs the feed until its watches end or no stream is left: subscribes to the five prefixes,
/// reads them, and then follows them, answering subscriptions from `requests`.
pub(super) async fn run(objects: ObjectStore, mut requests: mpsc::UnboundedReceiver<Subscribe>) {
    let store = objects.store();
    let (events_tx, mut events) = mpsc::unbounded_channel::<(usize, shoal_raft_store::Event)>();
    let prefixes =
        [v1::Task::PREFIX, v1::Service::PREFIX, v1::Network::PREFIX, v1::Node::PREFIX, v1::NetworkKeyRing::PREFIX];
    for (kind, prefix) in prefixes.iter().enumerate() {
        let mut watch = match store.watch(*prefix, 0) {
            Ok(watch) => watch,
            Err(err) => {
                tracing::warn!(error = %err, "networks feed cannot watch the store");
                return;
            }
        };
        let tx = events_tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = watch.next().await {
                if tx.send((kind, event)).is_err() {
                    return;
                }
            }
            tracing::warn!("networks feed watch ended");
        });
    }
    drop(events_tx);
    let mut feed = Feed::default();
    let mut listed = [0u64; 5];
    let mut dirty = Dirty::default();
    macro_rules! list {
        ($ty:ty) => {
            match objects.list_at::<$ty>().await {
                Ok(listed) => listed,
                Err(err) => {
                    tracing::warn!(error = %err, "networks feed cannot read the store");
                    return;
                }
            }
        };
    }
    let (tasks, at) = list!(v1::Task);
    listed[0] = at;
    for task in &tasks {
        feed.index.put_task(&task.id, TaskEntry::of(task), &mut dirty);
    }
    let (services, at) = list!(v1::Service);
    listed[1] = at;
    for service in services {
        feed.index.put_service(&service.id.clone(), Some(service), &mut dirty);
    }
    let (networks, at) = list!(v1::Network);
    listed[2] = at;
    for network in networks {
        feed.index.put_network(&network.id.clone(), Some(network), &mut dirty);
    }
    let (nodes, at) = list!(v1::Node);
    listed[3] = at;
    for node in &nodes {
        feed.index.put_node(&node.id, Some(NodeEntry::of(node)), &mut dirty);
    }
    let (rings, at) = list!(v1::NetworkKeyRing);
    listed[4] = at;
    feed.index.put_keys(rings.into_iter().find(|r| r.id == crate::leader::RING_ID), &mut dirty);
    loop {
        let first = tokio::select! {
            request = requests.recv() => match request {
                Some(request) => { feed.subscribe(request); None }
                None => return,
            },
            event = events.recv() => match event {
                Some(event) => Some(event),
                None => {
                    tracing::warn!("networks feed: store watches ended; streams restart");
                    return;
                }
            },
        };
        let Some(first) = first else {
            if feed.subscribers.is_empty() {
                return;
            }
            continue;
        };
        let mut dirty = Dirty::default();
        let mut next = Some(first);
        while let Some((kind, event)) = next {
            if event.kv.mod_revision > listed[kind] {
                match kind {
                    0 => {
                        let (id, task) = decode_event::<v1::Task>(&event);
                        feed.index.put_task(&id, task.as_ref().and_then(TaskEntry::of), &mut dirty);
                    }
                    1 => {
                        let (id, service) = decode_event::<v1::Service>(&event);
                        feed.index.put_service(&id, service, &mut dirty);
                    }
                    2 => {
                        let (id, network) = decode_event::<v1::Network>(&event);
                        feed.index.put_network(&id, network, &mut dirty);
                    }
                    3 => {
                        let (id, node) = decode_event::<v1::Node>(&event);
                        feed.index.put_node(&id, node.as_ref().map(NodeEntry::of), &mut dirty);
                    }
                    _ => {
                        let (id, ring) = decode_event::<v1::NetworkKeyRing>(&event);
                        if id == crate::leader::RING_ID {
                            feed.index.put_keys(ring, &mut dirty);
                        }
                    }
                }
            }
            next = events.try_recv().ok();
        }
        feed.publish(dirty);
        if feed.subscribers.is_empty() && requests.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;

//! The node's network view: what the manager's `Networks` stream says about the networks this
//! node hosts — each network, its peers (every endpoint's address and the node behind it) and its
//! service table — kept as plain data, and the stream's sequencing (complete sets in parts, then
//! increments that must apply to the set the node holds), as for assignments.

use std::collections::BTreeMap;

use shoal_api::v1;

/// What the node knows of the networks it hosts.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct NetworkView {
    /// Networks by ID.
    pub(crate) networks: BTreeMap<String, v1::Network>,
    /// Peers by (network ID, peer ID). A peer may arrive before its network in a batch, so peers
    /// are kept whether or not their network is known.
    pub(crate) peers: BTreeMap<(String, String), v1::NetworkPeer>,
    /// Services by (network ID, service ID).
    pub(crate) services: BTreeMap<(String, String), v1::NetworkService>,
    /// The cluster's key ring, as sent with each encrypted network (by network ID).
    pub(crate) keys: BTreeMap<String, Vec<v1::NetworkKey>>,
}

impl NetworkView {
    /// Replaces the whole view with a complete set.
    pub(crate) fn set_complete(&mut self, changes: Vec<v1::NetworkChange>) {
        *self = Self::default();
        self.apply(changes);
    }

    /// Applies changes in order. A network's removal takes its peers, services and keys with it;
    /// a peer, service or keys removal needs only its network (and ID).
    pub(crate) fn apply(&mut self, changes: Vec<v1::NetworkChange>) {
        for change in changes {
            let remove = change.action == v1::network_change::Action::Remove as i32;
            if let Some(network) = change.network {
                if remove {
                    let id = network.id;
                    self.peers.retain(|(net, _), _| *net != id);
                    self.services.retain(|(net, _), _| *net != id);
                    self.keys.remove(&id);
                    self.networks.remove(&id);
                } else {
                    self.networks.insert(network.id.clone(), network);
                }
            } else if let Some(peer) = change.peer {
                let key = (peer.network_id.clone(), peer.id.clone());
                if remove {
                    self.peers.remove(&key);
                } else {
                    self.peers.insert(key, peer);
                }
            } else if let Some(service) = change.service {
                let key = (service.network_id.clone(), service.service_id.clone());
                if remove {
                    self.services.remove(&key);
                } else {
                    self.services.insert(key, service);
                }
            } else if let Some(keys) = change.keys {
                if remove {
                    self.keys.remove(&keys.network_id);
                } else {
                    self.keys.insert(keys.network_id, keys.keys);
                }
            }
        }
    }

    /// The peers on `network`.
    pub(crate) fn peers_on<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a v1::NetworkPeer> + 'a {
        self.peers.iter().filter(move |((net, _), _)| net == network).map(|(_, peer)| peer)
    }

    /// The services on `network`.
    pub(crate) fn services_on<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a v1::NetworkService> + 'a {
        self.services.iter().filter(move |((net, _), _)| net == network).map(|(_, service)| service)
    }

    /// The ingress network, if the view holds it.
    pub(crate) fn ingress(&self) -> Option<&v1::Network> {
        self.networks.values().find(|n| n.spec.as_ref().is_some_and(|s| s.ingress))
    }
}

/// What a message of the networks stream asks for.
#[derive(Debug, PartialEq)]
pub(crate) enum ViewUpdate {
    /// Nothing yet: a part of a complete set, more parts to come.
    Wait,
    /// The node's whole view.
    Complete(Vec<v1::NetworkChange>),
    /// Changes to apply in order.
    Changes(Vec<v1::NetworkChange>),
}

/// The networks stream of one session as the agent follows it (see `NetworksMessage` in
/// `proto/shoal/v1/dispatcher.proto`): the same rules as the assignment stream.
#[derive(Debug, Default)]
pub(crate) struct ViewStream {
    /// The complete set being received: the set it results in and its changes so far.
    partial: Option<(u64, Vec<v1::NetworkChange>)>,
    /// The set the node holds; none before the first complete set.
    current: Option<u64>,
}

impl ViewStream {
    /// Takes the next message; an error is a stream out of order, which ends the session.
    pub(crate) fn receive(&mut self, message: v1::NetworksMessage) -> Result<ViewUpdate, String> {
        use v1::assignments_message::Type;
        match Type::try_from(message.r#type) {
            Ok(Type::Complete) => {
                let (results_in, mut changes) = self.partial.take().unwrap_or((message.results_in, Vec::new()));
                if results_in != message.results_in {
                    return Err(format!(
                        "a part of complete network set {} arrived before the last part of complete set {results_in}",
                        message.results_in
                    ));
                }
                changes.extend(message.changes);
                if message.more {
                    self.partial = Some((results_in, changes));
                    return Ok(ViewUpdate::Wait);
                }
                self.current = Some(results_in);
                Ok(ViewUpdate::Complete(changes))
            }
            Ok(Type::Incremental) => {
                if let Some((results_in, _)) = &self.partial {
                    return Err(format!(
                        "a network increment arrived before the last part of complete set {results_in}"
                    ));
                }
                if message.more {
                    return Err(format!(
                        "network increment {} says more parts follow; only complete sets have parts",
                        message.applies_to
                    ));
                }
                if self.current != Some(message.applies_to) {
                    let held = self.current.map_or_else(|| "none yet".to_owned(), |c| c.to_string());
                    return Err(format!(
                        "a network increment applies to set {}, this node holds set {held}",
                        message.applies_to
                    ));
                }
                self.current = Some(message.results_in);
                Ok(ViewUpdate::Changes(message.changes))
            }
            Err(_) => Err(format!("unknown networks message type {}", message.r#type)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::network_change::Action;

    fn network(id: &str) -> v1::NetworkChange {
        v1::NetworkChange {
            action: Action::Update as i32,
            network: Some(v1::Network { id: id.into(), ..Default::default() }),
            ..Default::default()
        }
    }

    fn remove_network(id: &str) -> v1::NetworkChange {
        v1::NetworkChange { action: Action::Remove as i32, ..network(id) }
    }

    fn peer(net: &str, id: &str, addr: &str) -> v1::NetworkChange {
        v1::NetworkChange {
            action: Action::Update as i32,
            peer: Some(v1::NetworkPeer {
                network_id: net.into(),
                id: id.into(),
                address: addr.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn remove_peer(net: &str, id: &str) -> v1::NetworkChange {
        v1::NetworkChange { action: Action::Remove as i32, ..peer(net, id, "") }
    }

    fn service(net: &str, id: &str, vip: &str) -> v1::NetworkChange {
        v1::NetworkChange {
            action: Action::Update as i32,
            service: Some(v1::NetworkService {
                network_id: net.into(),
                service_id: id.into(),
                name: id.into(),
                vip: vip.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn message(
        kind: v1::assignments_message::Type,
        applies_to: u64,
        results_in: u64,
        more: bool,
        changes: Vec<v1::NetworkChange>,
    ) -> v1::NetworksMessage {
        v1::NetworksMessage { r#type: kind as i32, applies_to, results_in, changes, more }
    }

    /// The view's content as (networks, peers with addresses, services with VIPs).
    fn summary(view: &NetworkView) -> (Vec<String>, Vec<String>, Vec<String>) {
        (
            view.networks.keys().cloned().collect(),
            view.peers.values().map(|p| format!("{}/{}={}", p.network_id, p.id, p.address)).collect(),
            view.services.values().map(|s| format!("{}/{}={}", s.network_id, s.service_id, s.vip)).collect(),
        )
    }

    #[test]
    fn a_complete_set_replaces_the_view_and_increments_change_it() {
        let mut view = NetworkView::default();
        view.set_complete(vec![
            network("blue"),
            peer("blue", "t1", "198.18.0.3/24"),
            peer("blue", "t2", "198.18.0.4/24"),
            service("blue", "web", "198.18.0.2/24"),
            network("red"),
            peer("red", "t3", "198.18.1.3/24"),
        ]);
        assert_eq!(view.peers_on("blue").count(), 2);
        assert_eq!(view.services_on("blue").count(), 1);
        // A peer updated in place, one removed, a service moved to a new VIP.
        view.apply(vec![
            peer("blue", "t1", "198.18.0.9/24"),
            remove_peer("blue", "t2"),
            service("blue", "web", "198.18.0.5/24"),
        ]);
        assert_eq!(
            summary(&view),
            (
                vec!["blue".to_owned(), "red".to_owned()],
                vec!["blue/t1=198.18.0.9/24".to_owned(), "red/t3=198.18.1.3/24".to_owned()],
                vec!["blue/web=198.18.0.5/24".to_owned()],
            )
        );
        // A new complete set forgets what it does not list.
        view.set_complete(vec![network("red")]);
        assert_eq!(summary(&view), (vec!["red".to_owned()], vec![], vec![]));
    }

    #[test]
    fn removing_a_network_takes_its_peers_and_services_and_leaves_the_others() {
        let mut view = NetworkView::default();
        view.set_complete(vec![
            network("blue"),
            peer("blue", "t1", "198.18.0.3/24"),
            service("blue", "web", "198.18.0.2/24"),
            network("red"),
            peer("red", "t1", "198.18.1.3/24"),
            service("red", "web", "198.18.1.2/24"),
        ]);
        view.apply(vec![remove_network("blue")]);
        assert_eq!(
            summary(&view),
            (vec!["red".to_owned()], vec!["red/t1=198.18.1.3/24".to_owned()], vec!["red/web=198.18.1.2/24".to_owned()],)
        );
        // Removing what is not there changes nothing.
        let before = view.clone();
        view.apply(vec![remove_peer("green", "t9"), remove_network("green")]);
        assert_eq!(view, before);
    }

    #[test]
    fn a_peer_before_its_network_in_a_batch_is_kept() {
        let mut view = NetworkView::default();
        view.set_complete(vec![peer("blue", "t1", "198.18.0.3/24"), network("blue")]);
        assert_eq!(view.peers_on("blue").count(), 1);
    }

    #[test]
    fn the_ingress_network_is_found_by_its_spec() {
        let mut view = NetworkView::default();
        let mut ingress = network("in");
        if let Some(n) = ingress.network.as_mut() {
            n.spec = Some(v1::NetworkSpec { ingress: true, ..Default::default() });
        }
        view.set_complete(vec![network("blue"), ingress]);
        assert_eq!(view.ingress().map(|n| n.id.as_str()), Some("in"));
    }

    #[test]
    fn the_stream_gathers_parts_then_follows_increments_in_sequence() {
        use v1::assignments_message::Type::{Complete, Incremental};
        let mut stream = ViewStream::default();
        assert_eq!(stream.receive(message(Complete, 0, 1, true, vec![network("a")])), Ok(ViewUpdate::Wait));
        assert_eq!(
            stream.receive(message(Complete, 0, 1, false, vec![network("b")])),
            Ok(ViewUpdate::Complete(vec![network("a"), network("b")]))
        );
        assert_eq!(
            stream.receive(message(Incremental, 1, 2, false, vec![remove_network("a")])),
            Ok(ViewUpdate::Changes(vec![remove_network("a")]))
        );
        assert_eq!(stream.receive(message(Incremental, 2, 3, false, vec![])), Ok(ViewUpdate::Changes(vec![])));
    }

    #[test]
    fn a_stream_out_of_order_is_refused() {
        use v1::assignments_message::Type::{Complete, Incremental};
        // An increment before any complete set.
        let mut stream = ViewStream::default();
        let err = stream.receive(message(Incremental, 1, 2, false, vec![])).expect_err("no set held");
        assert!(err.contains("applies to set 1, this node holds set none yet"), "{err}");
        // An increment that skips one.
        let mut stream = ViewStream::default();
        assert!(stream.receive(message(Complete, 0, 1, false, vec![])).is_ok());
        let err = stream.receive(message(Incremental, 2, 3, false, vec![])).expect_err("gap");
        assert!(err.contains("applies to set 2, this node holds set 1"), "{err}");
        // An increment in the middle of a complete set's parts.
        let mut stream = ViewStream::default();
        assert!(stream.receive(message(Complete, 0, 4, true, vec![])).is_ok());
        let err = stream.receive(message(Incremental, 4, 5, false, vec![])).expect_err("inside parts");
        assert!(err.contains("before the last part of complete set 4"), "{err}");
        // A part of another complete set.
        let mut stream = ViewStream::default();
        assert!(stream.receive(message(Complete, 0, 4, true, vec![])).is_ok());
        let err = stream.receive(message(Complete, 0, 5, false, vec![])).expect_err("other set");
        assert!(err.contains("complete network set 5 arrived before the last part of complete set 4"), "{err}");
        // An increment in parts.
        let mut stream = ViewStream::default();
        assert!(stream.receive(message(Complete, 0, 1, false, vec![])).is_ok());
        let err = stream.receive(message(Incremental, 1, 2, true, vec![])).expect_err("parts");
        assert!(err.contains("only complete sets have parts"), "{err}");
        // An unknown type.
        let err = ViewStream::default()
            .receive(v1::NetworksMessage { r#type: 7, ..Default::default() })
            .expect_err("unknown");
        assert!(err.contains("unknown networks message type 7"), "{err}");
    }
}

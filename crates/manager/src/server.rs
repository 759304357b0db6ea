//! Everything a manager serves on its one port: the control, logs and events APIs (managers and
//! admin bundles), the CA (anyone with a join token; renewal for nodes), and the Raft transport
//! (managers only), each behind its role check, and the dispatcher (any node with a
//! certificate). Every service refuses revoked identities on each call (see `revocation.rs`).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::v1::{
    ca_server::CaServer, control_server::ControlServer, dispatcher_server::DispatcherServer,
    events_server::EventsServer, logs_server::LogsServer,
};
use shoal_ca_pki::{ClusterCa, RemovedNodes};
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;

use crate::ca_service::CaService;
use crate::control::ControlService;
use crate::dispatcher::Dispatcher;
use crate::events::{EventBroker, EventsService};
use crate::logs::LogsService;
use crate::objects::ObjectStore;
use crate::tls::{Callers, RefuseRevoked, incoming, require};

/// What one manager serves.
#[derive(Debug, Clone)]
pub struct Services {
    /// The cluster state.
    pub objects: ObjectStore,
    /// Revoked identities, refused at the TLS layer (shared with the TLS config) and on each
    /// call; the manager keeps it equal to the revocations in the store.
    pub removed: RemovedNodes,
    /// The cluster CA.
    pub ca: Arc<Mutex<ClusterCa>>,
    /// The cluster's ID (certificates' O).
    pub cluster_id: String,
    /// How long issued node certificates are valid.
    pub cert_validity: Duration,
    /// The dispatcher (shared with the leader's liveness loop).
    pub dispatcher: Dispatcher,
    /// This manager's client TLS (its node certificate), with which a manager that is not the
    /// leader relays log subscriptions to the leader; without it, it refuses them naming the
    /// leader.
    pub client_tls: Option<rustls::ClientConfig>,
    /// Who answers the control API's `ResolveImage` (see [`crate::ImageResolver`]).
    pub image_resolver: Option<Arc<dyn crate::ImageResolver>>,
}

/// Serves `services` on `listener` with `tls` (ca-pki's `join_server_config`, so that joining
/// nodes without a certificate can reach the CA) until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    services: Services,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let control = ControlService::new(services.objects.clone(), services.removed.clone(), services.ca.clone())
        .with_cert_validity(services.cert_validity)
        .with_image_resolver(services.image_resolver.clone());
    let ca = CaService::new(
        services.objects.clone(),
        services.ca.clone(),
        services.cluster_id.clone(),
        services.cert_validity,
    );
    let logs = LogsService::new(
        services.objects.clone(),
        services.dispatcher.log_broker().clone(),
        services.client_tls.clone(),
    );
    // The broker watches this manager's replica for as long as the server runs.
    let events = EventsService::new(EventBroker::start(services.objects.store().clone()));
    let raft = shoal_raft_store::grpc::service(services.objects.store().clone());
    let removed = &services.removed;
    tonic::transport::Server::builder()
        .add_service(InterceptedService::new(
            RefuseRevoked::new(ControlServer::new(control), services.objects.clone()),
            require("the control API", Callers::ManagersAndAdmins, removed.clone()),
        ))
        .add_service(InterceptedService::new(
            RefuseRevoked::new(LogsServer::new(logs), services.objects.clone()),
            require("the logs API", Callers::ManagersAndAdmins, removed.clone()),
        ))
        .add_service(InterceptedService::new(
            RefuseRevoked::new(EventsServer::new(events), services.objects.clone()),
            require("the events API", Callers::ManagersAndAdmins, removed.clone()),
        ))
        .add_service(CaServer::new(ca))
        .add_service(DispatcherServer::with_interceptor(
            services.dispatcher.clone(),
            require("the dispatcher", Callers::Nodes, removed.clone()),
        ))
        .add_service(InterceptedService::new(raft, require("the raft transport", Callers::Managers, removed.clone())))
        .serve_with_incoming_shutdown(incoming(listener, tls), shutdown)
        .await
}

#[cfg(test)]
mod tests;

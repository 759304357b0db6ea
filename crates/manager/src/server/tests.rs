//! The manager port over real mutual TLS on loopback: role checks per service, anonymous joining
//! through the CA with a token, renewal, and refusal of a removed node and a revoked admin
//! bundle, also on connections opened before.

use super::*;
use crate::testutil::store;
use shoal_api::v1::{self, ca_client::CaClient, control_client::ControlClient};
use shoal_ca_pki::{
    JoinToken, JoinTokens, NodeCredentials, NodeIdentity, NodeKey, Role, RootCa, TrustBundle, client_config,
    join_client_config, join_server_config,
};
use tonic::Code;

struct Fixture {
    addr: String,
    objects: ObjectStore,
    trust: TrustBundle,
    ca: Arc<Mutex<ClusterCa>>,
    tokens: v1::JoinTokens,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    _dirs: Vec<crate::testutil::TempDir>,
}

fn credentials(ca: &Mutex<ClusterCa>, node_id: &str, role: Role) -> NodeCredentials {
    let key = NodeKey::generate().expect("key");
    let identity = NodeIdentity { node_id: node_id.into(), role, cluster_id: "cluster-1".into() };
    let now = time::OffsetDateTime::now_utc();
    let chain = ca.lock().expect("ca").issue(&key.csr_pem().expect("csr"), &identity, time::Duration::hours(2), now);
    NodeCredentials::new(&chain.expect("issue"), key).expect("credentials")
}

async fn fixture(tag: &str) -> Fixture {
    let (objects, dir) = store(tag).await;
    serving(objects, vec![dir]).await
}

/// The manager port on `objects`, with a set of revoked identities that only this port's own
/// control API fills (no watch follows the store).
async fn serving(objects: ObjectStore, dirs: Vec<crate::testutil::TempDir>) -> Fixture {
    let ca = Arc::new(Mutex::new(ClusterCa::new(RootCa::generate(time::OffsetDateTime::now_utc()).expect("root"))));
    let trust = ca.lock().expect("ca").trust_bundle();
    let generated = JoinTokens::generate(&trust).expect("tokens");
    let tokens = v1::JoinTokens {
        worker: generated.token(Role::Worker).to_string(),
        manager: generated.token(Role::Manager).to_string(),
    };
    let cluster = v1::Cluster { id: "cluster-1".into(), join_tokens: Some(tokens.clone()), ..Default::default() };
    objects.create(cluster).await.expect("cluster");
    let removed = RemovedNodes::new();
    let manager = credentials(&ca, "manager-1", Role::Manager);
    let tls = join_server_config(&manager, &trust, &removed).expect("server tls");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let services = Services {
        dispatcher: crate::Dispatcher::new(objects.clone(), Duration::from_secs(1)),
        objects: objects.clone(),
        removed,
        ca: ca.clone(),
        cluster_id: "cluster-1".into(),
        cert_validity: Duration::from_secs(3600),
        client_tls: None,
        image_resolver: None,
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = serve(listener, tls, services, async {
            let _ = rx.await;
        })
        .await;
    });
    Fixture { addr, objects, trust, ca, tokens, _shutdown: tx, _dirs: dirs }
}

impl Fixture {
    async fn as_node(&self, credentials: &NodeCredentials) -> tonic::transport::Channel {
        shoal_api::connect(&self.addr, client_config(credentials, &self.trust).expect("client tls"))
            .await
            .expect("connect")
    }

    async fn anonymous(&self) -> tonic::transport::Channel {
        shoal_api::connect(&self.addr, join_client_config(&self.trust).expect("join tls")).await.expect("connect")
    }
}

#[tokio::test]
async fn each_service_checks_the_callers_role() {
    let f = fixture("server-roles").await;
    let manager = f.as_node(&credentials(&f.ca, "manager-2", Role::Manager)).await;
    let worker = f.as_node(&credentials(&f.ca, "worker-1", Role::Worker)).await;
    let anonymous = f.anonymous().await;

    ControlClient::new(manager).list_nodes(v1::ListNodesRequest::default()).await.expect("a manager may");
    let denied = ControlClient::new(worker).list_nodes(v1::ListNodesRequest::default()).await.expect_err("worker");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(denied.message(), "the control API needs a manager certificate; node worker-1 is a worker");
    let anon = ControlClient::new(anonymous.clone()).list_nodes(v1::ListNodesRequest::default()).await;
    assert_eq!(anon.expect_err("anonymous").code(), Code::Unauthenticated);
    // The dispatcher needs a node certificate of either role.
    let dispatcher = v1::dispatcher_client::DispatcherClient::new(anonymous.clone())
        .heartbeat(v1::HeartbeatRequest { session_id: "x".into(), volumes: None, tls_info: None })
        .await;
    assert_eq!(dispatcher.expect_err("anonymous dispatcher").code(), Code::Unauthenticated);
    // The raft transport is for managers only as well.
    let raft = shoal_raft_store::grpc::proto::raft_transport_client::RaftTransportClient::new(anonymous)
        .call(shoal_raft_store::grpc::proto::RaftMessage::default())
        .await;
    assert_eq!(raft.expect_err("anonymous raft").code(), Code::Unauthenticated);

    tracing::info!("--- an admin bundle reaches the control API, not the Raft transport nor the dispatcher");
    let admin = f.as_node(&credentials(&f.ca, "admin-0123", Role::Manager)).await;
    ControlClient::new(admin.clone()).list_nodes(v1::ListNodesRequest::default()).await.expect("an admin may");
    let raft = shoal_raft_store::grpc::proto::raft_transport_client::RaftTransportClient::new(admin.clone())
        .call(shoal_raft_store::grpc::proto::RaftMessage::default())
        .await
        .expect_err("admin raft");
    assert_eq!(raft.code(), Code::PermissionDenied);
    assert_eq!(raft.message(), "the raft transport is for cluster nodes, not for admin clients");
    let dispatcher = v1::dispatcher_client::DispatcherClient::new(admin)
        .heartbeat(v1::HeartbeatRequest { session_id: "x".into(), volumes: None, tls_info: None })
        .await;
    assert_eq!(dispatcher.expect_err("admin dispatcher").code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_node_joins_with_a_token_and_renews() {
    let f = fixture("server-join").await;
    let mut ca = CaClient::new(f.anonymous().await);

    tracing::info!("--- the joining side pins the root CA by the token's digest");
    let served = ca.get_root_ca_certificate(v1::GetRootCaCertificateRequest {}).await.expect("root").into_inner();
    let token: JoinToken = f.tokens.worker.parse().expect("token");
    let pem = String::from_utf8(served.certificate).expect("pem");
    token.verify_root_ca(&pem).expect("the served root matches the token's digest");

    tracing::info!("--- bad tokens are refused with reasons");
    let key = NodeKey::generate().expect("key");
    let csr = key.csr_pem().expect("csr").into_bytes();
    let issue = |token: &str| v1::IssueNodeCertificateRequest {
        csr: csr.clone(),
        token: token.into(),
        availability: 0,
        worker_only: false,
    };
    let malformed = ca.issue_node_certificate(issue("SHTKN-2-nope")).await.expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(malformed.message().starts_with("invalid join token: "), "{}", malformed.message());
    let other = JoinTokens::generate(&f.trust).expect("other tokens").token(Role::Worker).to_string();
    let wrong = ca.issue_node_certificate(issue(&other)).await.expect_err("wrong secret");
    assert_eq!(wrong.code(), Code::PermissionDenied);
    assert!(wrong.message().starts_with("join token refused: "), "{}", wrong.message());

    tracing::info!("--- a worker token gives a worker certificate and a node record");
    let issued = ca.issue_node_certificate(issue(&f.tokens.worker)).await.expect("issue").into_inner();
    assert_eq!(issued.role, v1::NodeRole::Worker as i32);
    assert_eq!(issued.cluster_id, "cluster-1");
    let chain = String::from_utf8(issued.certificate_chain).expect("pem");
    let joined = NodeCredentials::new(&chain, key).expect("credentials");
    assert_eq!(joined.identity().node_id, issued.node_id);

    let manager = f.as_node(&credentials(&f.ca, "manager-2", Role::Manager)).await;
    let node = ControlClient::new(manager.clone())
        .get_node(v1::GetNodeRequest { node: issued.node_id.clone() })
        .await
        .expect("node record")
        .into_inner()
        .node
        .expect("node");
    assert_eq!(node.role, v1::NodeRole::Worker as i32);

    tracing::info!("--- a manager token from a worker-only program is refused before anything is recorded");
    let mut control = ControlClient::new(manager.clone());
    let count = async |control: &mut ControlClient<_>| {
        control.list_nodes(v1::ListNodesRequest::default()).await.expect("list").into_inner().nodes.len()
    };
    let before = count(&mut control).await;
    let worker_only = v1::IssueNodeCertificateRequest { worker_only: true, ..issue(&f.tokens.manager) };
    let refused = ca.issue_node_certificate(worker_only).await.expect_err("manager token from shoal-agent");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().starts_with("that is a manager token"), "{}", refused.message());
    assert_eq!(count(&mut control).await, before, "no node recorded");

    tracing::info!("--- the new node renews over its own certificate, and is refused once removed");
    let channel = f.as_node(&joined).await;
    let renew_key = NodeKey::generate().expect("key");
    let renewed = CaClient::new(channel)
        .renew_node_certificate(v1::RenewNodeCertificateRequest { csr: renew_key.csr_pem().expect("csr").into_bytes() })
        .await
        .expect("renew")
        .into_inner();
    let renewed =
        NodeCredentials::new(&String::from_utf8(renewed.certificate_chain).expect("pem"), renew_key).expect("renewed");
    assert_eq!(renewed.identity(), joined.identity());

    ControlClient::new(manager)
        .remove_node(v1::RemoveNodeRequest { node: issued.node_id.clone(), force: true })
        .await
        .expect("remove");
    // A valid CSR: the only reason to refuse it is the removal.
    let csr = NodeKey::generate().expect("key").csr_pem().expect("csr").into_bytes();
    match shoal_api::connect(&f.addr, client_config(&renewed, &f.trust).expect("tls")).await {
        Err(err) => assert!(shoal_ca_pki::refused_as_revoked(&err), "refused for another reason: {err}"),
        Ok(channel) => {
            let status = CaClient::new(channel)
                .renew_node_certificate(v1::RenewNodeCertificateRequest { csr })
                .await
                .expect_err("a removed node's certificate no longer gets through");
            assert!(shoal_ca_pki::refused_as_revoked(&status), "refused for another reason: {status}");
        }
    }
}

#[tokio::test]
async fn connections_opened_before_a_revocation_are_refused_call_by_call() {
    let f = fixture("server-revoked-calls").await;
    let mut control = ControlClient::new(f.as_node(&credentials(&f.ca, "manager-2", Role::Manager)).await);
    let raft_call = async |channel: tonic::transport::Channel| {
        shoal_raft_store::grpc::proto::raft_transport_client::RaftTransportClient::new(channel)
            .call(shoal_raft_store::grpc::proto::RaftMessage::default())
            .await
    };

    tracing::info!("--- a demoted manager's old certificate reaches the Raft transport until it is removed");
    let demoted = v1::Node { id: "demoted".into(), role: v1::NodeRole::Worker as i32, ..Default::default() };
    f.objects.create(demoted).await.expect("node record");
    let old_manager = f.as_node(&credentials(&f.ca, "demoted", Role::Manager)).await;
    let before = raft_call(old_manager.clone()).await;
    assert!(before.as_ref().err().is_none_or(|s| s.code() != Code::PermissionDenied), "{before:?}");
    control.remove_node(v1::RemoveNodeRequest { node: "demoted".into(), force: true }).await.expect("remove");
    let after = raft_call(old_manager).await.expect_err("the same connection, after the removal");
    assert_eq!(after.code(), Code::PermissionDenied);
    assert!(after.message().starts_with("node demoted was removed from the cluster"), "{after:?}");

    tracing::info!("--- an admin bundle's open connection: refused from its revocation on");
    let admin_id = format!("admin-{}", crate::ids::new_id());
    let mut admin = ControlClient::new(f.as_node(&credentials(&f.ca, &admin_id, Role::Manager)).await);
    admin.list_nodes(v1::ListNodesRequest::default()).await.expect("before");
    let request = v1::RevokeAdminCertificateRequest { id: admin_id.clone(), force: false };
    control.revoke_admin_certificate(request).await.expect("a bundle without a record is revoked by its full ID");
    let refused = admin.list_nodes(v1::ListNodesRequest::default()).await.expect_err("after");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().starts_with(&format!("admin certificate {admin_id} was revoked")), "{refused:?}");
    let unknown = v1::RevokeAdminCertificateRequest { id: "nosuch".into(), force: false };
    let unknown = control.revoke_admin_certificate(unknown).await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn a_manager_whose_revocations_lag_refuses_control_calls_all_the_same() {
    let (leader, follower, [d1, d2]) = crate::testutil::leader_and_follower("server-lagging").await;
    // The follower's port keeps a set of revoked identities that nothing fills: a manager whose
    // watch has not caught up with the store.
    let f = serving(follower, vec![d1, d2]).await;
    let admin_id = format!("admin-{}", crate::ids::new_id());
    let mut admin = ControlClient::new(f.as_node(&credentials(&f.ca, &admin_id, Role::Manager)).await);
    admin.list_nodes(v1::ListNodesRequest::default()).await.expect("before");

    tracing::info!("--- revoked on the leader: the follower asks the leader before each control call");
    crate::revocation::revoke_admin(&leader, &admin_id, Duration::from_secs(3600)).await.expect("revoke");
    let refused = admin.list_nodes(v1::ListNodesRequest::default()).await.expect_err("after");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().starts_with(&format!("admin certificate {admin_id} was revoked")), "{refused:?}");
    leader.store().shutdown().await;
}

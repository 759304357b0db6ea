//! Revocations in the store: written with the removal, followed by another manager's set,
//! purged once expired, and refused at renewal.

use std::sync::{Arc, Mutex};

use shoal_ca_pki::{ClusterCa, NodeKey, Role, RootCa};
use tonic::Code;

use super::*;
use crate::ca_service::CaService;
use crate::testutil::{leader_and_follower, store};

const HOUR: Duration = Duration::from_secs(3600);

fn identity(id: &str, role: Role) -> NodeIdentity {
    NodeIdentity { node_id: id.into(), role, cluster_id: "c1".into() }
}

fn csr() -> Vec<u8> {
    NodeKey::generate().expect("key").csr_pem().expect("csr").into_bytes()
}

/// Waits up to 5 s for `removed` to answer `contains(id) == wanted`.
async fn until(removed: &RemovedNodes, id: &str, wanted: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while removed.contains(id) != wanted {
        assert!(std::time::Instant::now() < deadline, "{id} still {}in the set", if wanted { "not " } else { "" });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn another_manager_follows_removals_and_purges() {
    let (leader, follower, _dirs) = leader_and_follower("revocation-follow").await;
    let cluster = v1::Cluster {
        id: "c1".into(),
        spec: Some(v1::ClusterSpec { node_cert_expiry: Some(shoal_api::to_duration(2 * HOUR)), ..Default::default() }),
        ..Default::default()
    };
    leader.create(cluster).await.expect("cluster");
    let node = leader.create(v1::Node { id: "w1".into(), ..Default::default() }).await.expect("node");
    let removed = RemovedNodes::new();
    removed.insert("left-over");
    let watch = load(&follower, &removed).await.expect("load");
    assert!(removed.is_empty(), "the set is what the store holds");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let following = tokio::spawn(follow(follower.clone(), removed.clone(), Some(watch), async {
        let _ = stopped.await;
    }));

    tracing::info!("--- a stale removal changes nothing");
    let stale = v1::Node { meta: Some(v1::Meta { version: 1, ..Default::default() }), ..node.clone() };
    let err = remove_node(&leader, &stale, HOUR).await.expect_err("stale");
    assert!(matches!(err, ObjectError::Conflict { .. }), "{err}");
    assert!(leader.get::<v1::Revocation>("w1").await.is_err(), "not revoked");

    tracing::info!("--- removed on the leader: the record goes, the other manager refuses it");
    let revoked = remove_node(&leader, &node, HOUR).await.expect("remove");
    assert!(matches!(leader.get::<v1::Node>("w1").await, Err(ObjectError::NotFound { .. })));
    until(&removed, "w1", true).await;
    let created = shoal_api::from_timestamp(revoked.meta.as_ref().and_then(|m| m.created_at.as_ref())).expect("at");
    let expires = shoal_api::from_timestamp(revoked.expires_at.as_ref()).expect("expires");
    assert_eq!(expires.duration_since(created).ok(), Some(2 * HOUR + EXPIRY_MARGIN), "the cluster's validity wins");
    assert_eq!(revoked.kind, v1::RevokedKind::Node as i32);

    tracing::info!("--- purged once every certificate it covers has expired, and forgotten everywhere");
    assert_eq!(purge_expired(&leader, expires - Duration::from_secs(1)).await.expect("purge"), 0);
    assert_eq!(purge_expired(&leader, expires).await.expect("purge"), 1);
    until(&removed, "w1", false).await;

    let _ = stop.send(());
    following.await.expect("follow ends");
    follower.store().shutdown().await;
    leader.store().shutdown().await;
}

#[tokio::test]
async fn renewing_a_revoked_certificate_is_refused() {
    let (objects, _dir) = store("revocation-renewal").await;
    let now = time::OffsetDateTime::now_utc();
    let ca = Arc::new(Mutex::new(ClusterCa::new(RootCa::generate(now).expect("root"))));
    let service = CaService::new(objects.clone(), ca, "c1".into(), HOUR);
    let node = objects
        .create(v1::Node { id: "w1".into(), role: v1::NodeRole::Worker as i32, ..Default::default() })
        .await
        .expect("node");
    let admin = identity(&format!("admin-{}", crate::ids::new_id()), Role::Manager);

    tracing::info!("--- before: a node and an admin bundle renew, and the bundle gets its record");
    service.renewal_for(identity("w1", Role::Worker), &csr()).await.expect("node renews");
    service.renewal_for(admin.clone(), &csr()).await.expect("admin renews");
    let record: v1::AdminCertificate = objects.get(&admin.node_id).await.expect("recorded at renewal");
    assert_eq!(record.issued_by, "renewal");

    tracing::info!("--- after: both are refused, saying why");
    remove_node(&objects, &node, HOUR).await.expect("remove");
    let refused = service.renewal_for(identity("w1", Role::Worker), &csr()).await.expect_err("removed node");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().starts_with("node w1 was removed from the cluster"), "{}", refused.message());

    let first = revoke_admin(&objects, &admin.node_id, HOUR).await.expect("revoke");
    assert!(matches!(objects.get::<v1::AdminCertificate>(&admin.node_id).await, Err(ObjectError::NotFound { .. })));
    let refused = service.renewal_for(admin.clone(), &csr()).await.expect_err("revoked admin bundle");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        format!(
            "admin certificate {} was revoked; use another admin bundle (each manager keeps a current one in its \
             DATA/admin)",
            admin.node_id
        )
    );
    assert!(objects.get::<v1::AdminCertificate>(&admin.node_id).await.is_err(), "a refused renewal records nothing");
    let again = revoke_admin(&objects, &admin.node_id, HOUR).await.expect("revoke again");
    assert_eq!(again, first, "revoking again keeps the first revocation");
    objects.store().shutdown().await;
}

// ----- managers on loopback over mutual TLS -----

fn manager_config(root: &std::path::Path, name: &str) -> crate::ManagerConfig {
    let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
    crate::ManagerConfig::new(root.join(name), addr, addr)
}

fn load_bundle(dir: &std::path::Path) -> (shoal_ca_pki::NodeCredentials, shoal_ca_pki::TrustBundle) {
    (
        shoal_ca_pki::NodeCredentials::load(dir, None).expect("credentials"),
        shoal_ca_pki::TrustBundle::load(dir).expect("roots"),
    )
}

async fn channel(addr: std::net::SocketAddr, bundle: &std::path::Path) -> tonic::transport::Channel {
    let (credentials, trust) = load_bundle(bundle);
    let tls = shoal_ca_pki::client_config(&credentials, &trust).expect("tls");
    shoal_api::connect(&addr.to_string(), tls).await.expect("connect")
}

/// A TLS handshake with the manager at `addr` as the holder of `bundle`: `Ok` once the manager
/// speaks (its HTTP/2 settings), or why it did not. In TLS 1.3 the client's side of the
/// handshake ends before the server has checked the client's certificate, so a refusal arrives
/// as an alert on the first read.
async fn handshake(addr: std::net::SocketAddr, bundle: &std::path::Path) -> Result<(), String> {
    use tokio::io::AsyncReadExt as _;
    let (credentials, trust) = load_bundle(bundle);
    let mut tls = shoal_ca_pki::client_config(&credentials, &trust).expect("tls");
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let mut stream =
        connector.connect(shoal_ca_pki::server_name(Role::Manager), tcp).await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
        Ok(Ok(0)) => Err("closed".into()),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

/// Asserts that the manager at `addr` refuses `bundle` at the handshake, within `wait`.
async fn refused_at_handshake(addr: std::net::SocketAddr, bundle: &std::path::Path, wait: Duration, who: &str) {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match handshake(addr, bundle).await {
            Err(err) if err.contains("CertificateRevoked") => return,
            outcome => {
                assert!(std::time::Instant::now() < deadline, "{who} does not refuse the certificate: {outcome:?}")
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_is_refused_by_every_manager_and_after_a_restart() {
    let root = crate::testutil::TempDir(
        std::env::temp_dir().join(format!("shoal-manager-revoke-node-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&root.0);
    let (ca, cb, cw) = (manager_config(&root.0, "a"), manager_config(&root.0, "b"), manager_config(&root.0, "w"));
    let (a, outcome) = crate::init(&ca).await.expect("init a");
    let b = crate::join(&cb, &ca.advertise_addr.to_string(), &outcome.manager_token).await.expect("join b");
    let (a_addr, b_addr) = (a.local_addr, b.local_addr);

    tracing::info!("--- a worker joins; both managers let its certificate in");
    let crate::Joined::Worker { node_id } =
        crate::join_node(&cw, &ca.advertise_addr.to_string(), &outcome.worker_token).await.expect("worker joins")
    else {
        panic!("a worker token makes a worker");
    };
    let worker = cw.data_dir.join("certs");
    handshake(a_addr, &worker).await.expect("A lets the worker in");
    handshake(b_addr, &worker).await.expect("B lets the worker in");
    let opened_before = channel(b_addr, &worker).await;

    tracing::info!("--- removed through manager A: A and B refuse its certificate at the handshake");
    let mut control = v1::control_client::ControlClient::new(channel(a_addr, &outcome.admin_bundle).await);
    control.remove_node(v1::RemoveNodeRequest { node: node_id.clone(), force: false }).await.expect("remove");
    refused_at_handshake(a_addr, &worker, Duration::ZERO, "A, at once").await;
    refused_at_handshake(b_addr, &worker, Duration::from_secs(5), "B").await;
    // What the node's agent sees when it restarts with its old certificate: it cannot connect,
    // and the error says why (not a network failure).
    let (credentials, trust) = load_bundle(&worker);
    let tls = shoal_ca_pki::client_config(&credentials, &trust).expect("tls");
    let restarted = shoal_api::connect(&b_addr.to_string(), tls).await.expect_err("a restarted agent connects");
    assert!(shoal_ca_pki::refused_as_revoked(&restarted), "{restarted:?}");

    tracing::info!("--- a connection opened before: its calls are refused, renewal too, with the reason");
    let renewal = v1::ca_client::CaClient::new(opened_before.clone())
        .renew_node_certificate(v1::RenewNodeCertificateRequest { csr: csr() })
        .await
        .expect_err("renewal of a removed node");
    assert_eq!(renewal.code(), Code::PermissionDenied);
    assert!(renewal.message().starts_with(&format!("node {node_id} was removed from the cluster")), "{renewal:?}");
    let session = v1::dispatcher_client::DispatcherClient::new(opened_before)
        .heartbeat(v1::HeartbeatRequest { session_id: "x".into(), volumes: None, tls_info: None })
        .await
        .expect_err("dispatcher call of a removed node");
    assert_eq!(session.code(), Code::PermissionDenied);
    assert!(session.message().starts_with(&format!("node {node_id} was removed from the cluster")), "{session:?}");

    tracing::info!("--- A restarts: it still refuses the certificate, from the state on its disk");
    a.shutdown().await;
    let a = crate::start(&ca).await.expect("restart a");
    refused_at_handshake(a.local_addr, &worker, Duration::ZERO, "A after its restart").await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_admin_bundle_is_refused_everywhere() {
    let root = crate::testutil::TempDir(
        std::env::temp_dir().join(format!("shoal-manager-revoke-admin-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&root.0);
    let (ca, cb) = (manager_config(&root.0, "a"), manager_config(&root.0, "b"));
    let (a, outcome) = crate::init(&ca).await.expect("init a");
    let b = crate::join(&cb, &ca.advertise_addr.to_string(), &outcome.manager_token).await.expect("join b");
    let (a_addr, b_addr) = (a.local_addr, b.local_addr);
    let first = outcome.admin_bundle.clone();
    let first_id = load_bundle(&first).0.identity().node_id.clone();
    let mut control = v1::control_client::ControlClient::new(channel(a_addr, &first).await);

    tracing::info!("--- a second bundle is issued; init's is listed, and the caller is named");
    let key = NodeKey::generate().expect("key");
    let csr = key.csr_pem().expect("csr").into_bytes();
    let issued =
        control.issue_admin_certificate(v1::IssueAdminCertificateRequest { csr }).await.expect("issue").into_inner();
    let second = root.0.join("admin2");
    std::fs::create_dir_all(&second).expect("bundle dir");
    let chain = String::from_utf8(issued.certificate_chain).expect("pem");
    shoal_ca_pki::NodeCredentials::new(&chain, key).expect("credentials").save(&second, None).expect("save");
    load_bundle(&first).1.save(&second).expect("roots");
    let listed = control.list_admin_certificates(v1::ListAdminCertificatesRequest {}).await.expect("ls").into_inner();
    let mut ids: Vec<&str> = listed.certificates.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    let mut expected = vec![first_id.as_str(), issued.id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert_eq!(listed.caller, first_id);
    let mut opened_before = v1::control_client::ControlClient::new(channel(b_addr, &second).await);
    opened_before.list_nodes(v1::ListNodesRequest::default()).await.expect("the second bundle works on B");

    tracing::info!("--- revoking the bundle one calls with needs --force");
    let own = control
        .revoke_admin_certificate(v1::RevokeAdminCertificateRequest { id: first_id.clone(), force: false })
        .await
        .expect_err("own bundle");
    assert_eq!(own.code(), Code::FailedPrecondition);
    assert!(own.message().contains("revoking it locks you out"), "{own:?}");

    tracing::info!("--- the second bundle is revoked through A (by a prefix without `admin-`)");
    let prefix = issued.id.trim_start_matches("admin-")[..8].to_owned();
    control
        .revoke_admin_certificate(v1::RevokeAdminCertificateRequest { id: prefix, force: false })
        .await
        .expect("revoke");
    let refused = opened_before.list_nodes(v1::ListNodesRequest::default()).await.expect_err("revoked, on B");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().starts_with(&format!("admin certificate {} was revoked", issued.id)), "{refused:?}");
    refused_at_handshake(a_addr, &second, Duration::ZERO, "A, at once").await;
    refused_at_handshake(b_addr, &second, Duration::from_secs(5), "B").await;
    let listed = control.list_admin_certificates(v1::ListAdminCertificatesRequest {}).await.expect("ls").into_inner();
    assert_eq!(listed.certificates.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [first_id.as_str()]);
    assert_eq!(listed.revoked.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [issued.id.as_str()]);

    tracing::info!("--- B restarts: it still refuses the bundle; the first one still works there");
    b.shutdown().await;
    let b = crate::start(&cb).await.expect("restart b");
    refused_at_handshake(b.local_addr, &second, Duration::ZERO, "B after its restart").await;
    v1::control_client::ControlClient::new(channel(b.local_addr, &first).await)
        .list_nodes(v1::ListNodesRequest::default())
        .await
        .expect("the first bundle works on B");
    b.shutdown().await;
    a.shutdown().await;
}

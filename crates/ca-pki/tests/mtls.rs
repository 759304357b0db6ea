//! Mutual TLS over loopback: accepted and refused handshakes, identities, roles and root rotation.

mod support;

use shoal_ca_pki::{
    ClusterCa, NodeIdentity, RemovedNodes, Role, RootCa, client_config, join_client_config, join_server_config,
    require_role, server_config, server_name,
};
use support::{CLUSTER, handshake, node, node_at};
use time::{Duration, OffsetDateTime};

fn new_ca() -> ClusterCa {
    ClusterCa::new(RootCa::generate(OffsetDateTime::now_utc()).expect("root"))
}

fn identity(node_id: &str, role: Role) -> NodeIdentity {
    NodeIdentity { node_id: node_id.into(), role, cluster_id: CLUSTER.into() }
}

#[tokio::test]
async fn valid_certificates_handshake_and_identities_are_read() {
    let ca = new_ca();
    let trust = ca.trust_bundle();
    let manager = node(&ca, "manager-1", Role::Manager);
    let worker = node(&ca, "worker-1", Role::Worker);

    let outcome = handshake(
        server_config(&manager, &trust, &RemovedNodes::new()).expect("server config"),
        client_config(&worker, &trust).expect("client config"),
        server_name(Role::Manager),
    )
    .await;

    let seen_by_server = outcome.server.expect("server accepts").expect("client cert");
    let seen_by_client = outcome.client.expect("client accepts");
    assert_eq!(seen_by_server, identity("worker-1", Role::Worker));
    assert_eq!(seen_by_client, identity("manager-1", Role::Manager));
    assert!(require_role(&seen_by_client, Role::Manager).is_ok());
    let err = require_role(&seen_by_server, Role::Manager).expect_err("worker is no manager");
    assert_eq!(err.to_string(), "node worker-1 has role shoal-worker but this call needs role shoal-manager");
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let ca = new_ca();
    let trust = ca.trust_bundle();
    let manager = node(&ca, "manager-1", Role::Manager);

    let outcome = handshake(
        server_config(&manager, &trust, &RemovedNodes::new()).expect("server config"),
        join_client_config(&trust).expect("client config"),
        server_name(Role::Manager),
    )
    .await;
    assert!(!outcome.succeeded(), "{outcome:?}");
    let err = outcome.server.expect_err("server refuses");
    assert!(err.contains("certificate"), "{err}");
}

#[tokio::test]
async fn join_listener_lets_anonymous_clients_in_but_no_identity() {
    let ca = new_ca();
    let trust = ca.trust_bundle();
    let manager = node(&ca, "manager-1", Role::Manager);

    let outcome = handshake(
        join_server_config(&manager, &trust, &RemovedNodes::new()).expect("server config"),
        join_client_config(&trust).expect("client config"),
        server_name(Role::Manager),
    )
    .await;
    assert_eq!(outcome.server.expect("anonymous allowed"), None);
    assert_eq!(outcome.client.expect("server verified").role, Role::Manager);

    // A certificate from another CA is still refused there.
    let other = new_ca();
    let stranger = node(&other, "stranger", Role::Manager);
    let outcome = handshake(
        join_server_config(&manager, &trust, &RemovedNodes::new()).expect("server config"),
        client_config(&stranger, &trust).expect("client config"),
        server_name(Role::Manager),
    )
    .await;
    assert!(outcome.server.is_err(), "{outcome:?}");
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let ca = new_ca();
    let other = new_ca();
    let trust = ca.trust_bundle();
    let manager = node(&ca, "manager-1", Role::Manager);
    let stranger = node(&other, "worker-x", Role::Worker);

    // The stranger trusts our CA, so only the server's check of its certificate can fail.
    let outcome = handshake(
        server_config(&manager, &trust, &RemovedNodes::new()).expect("server config"),
        client_config(&stranger, &trust).expect("client config"),
        server_name(Role::Manager),
    )
    .await;
    assert!(!outcome.succeeded(), "{outcome:?}");
    let err = outcome.server.expect_err("server refuses");
    assert!(err.contains("invalid peer certificate: BadSignature"), "{err}");

    // And a client that trusts only the other CA refuses our server.
    let outcome = handshake(
        server_config(&manager, &trust, &RemovedNodes::new()).expect("server config"),
        client_config(&stranger, &other.trust_bundle()).expect("client config"),
        server_name(Role::Manager),
    )
    .await;
    let err = outcome.client.expect_err("client refuses");
    assert!(err.contains("invalid peer certificate: BadSignature"), "{err}");
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let ca = new_ca();
    let trust = ca.trust_bundle();
    let manager = node(&ca, "manager-1", Role::Manager);
    let long_ago = OffsetDateTime::now_utc() - Duration::days(100);
    let expired = node_at(&ca, "worker-old", Role::Worker, long_ago, Duration::days(90));
    assert!(expired.not_after() < OffsetDateTime::now_utc());

    let outcome = handshake(
        server_config(&manager, &trust, &RemovedNodes::new()).expect("server config"),
        client_config(&expired, &trust).expect("client config"),
        server_name(Role::Manager),
    )
    .await;
    assert!(!outcome.succeeded(), "{outcome:?}");
    let err = outcome.server.expect_err("server refuses");
    assert!(err.contains("invalid peer certificate: certificate expired"), "{err}");
}

#[tokio::test]
async fn worker_cannot_pose_as_a_manager_server() {
    let ca = new_ca();
    let trust = ca.trust_bundle();
    let worker = node(&ca, "worker-1", Role::Worker);
    let other_worker = node(&ca, "worker-2", Role::Worker);

    let outcome = handshake(
        server_config(&worker, &trust, &RemovedNodes::new()).expect("server config"),
        client_config(&other_worker, &trust).expect("client config"),
        server_name(Role::Manager),
    )
    .await;
    let err = outcome.client.expect_err("client refuses the name");
    assert!(err.contains("certificate not valid for name \"shoal-manager\""), "{err}");
}

#[tokio::test]
async fn root_rotation_keeps_nodes_connected_then_cuts_off_old_root() {
    let mut ca = new_ca();
    let old_trust = ca.trust_bundle();
    let old_worker = node(&ca, "worker-old", Role::Worker);
    assert_eq!(ca.state(), shoal_ca_pki::RotationState::Stable);

    ca.start_rotation(OffsetDateTime::now_utc()).expect("start rotation");
    assert_eq!(ca.state(), shoal_ca_pki::RotationState::Transition);
    let transition_trust = ca.trust_bundle();
    let new_manager = node(&ca, "manager-new", Role::Manager);
    assert!(!ca.is_current(old_worker.chain_pem()));
    assert!(ca.is_current(new_manager.chain_pem()));

    // Old-root node (trusting only the old root) as client of a new-root node.
    let outcome = handshake(
        server_config(&new_manager, &transition_trust, &RemovedNodes::new()).expect("server config"),
        client_config(&old_worker, &old_trust).expect("client config"),
        server_name(Role::Manager),
    )
    .await;
    assert!(outcome.succeeded(), "{outcome:?}");

    // And the other way round.
    let outcome = handshake(
        server_config(&old_worker, &old_trust, &RemovedNodes::new()).expect("server config"),
        client_config(&new_manager, &transition_trust).expect("client config"),
        server_name(Role::Worker),
    )
    .await;
    assert!(outcome.succeeded(), "{outcome:?}");

    ca.complete_rotation().expect("complete rotation");
    assert_eq!(ca.state(), shoal_ca_pki::RotationState::Stable);
    let new_trust = ca.trust_bundle();
    let new_worker = node(&ca, "worker-new", Role::Worker);

    // Nodes of the new root, including one issued during the transition, still connect.
    let outcome = handshake(
        server_config(&new_manager, &new_trust, &RemovedNodes::new()).expect("server config"),
        client_config(&new_worker, &new_trust).expect("client config"),
        server_name(Role::Manager),
    )
    .await;
    assert!(outcome.succeeded(), "{outcome:?}");

    // A node that was never reissued is refused.
    let outcome = handshake(
        server_config(&new_manager, &new_trust, &RemovedNodes::new()).expect("server config"),
        client_config(&old_worker, &old_trust).expect("client config"),
        server_name(Role::Manager),
    )
    .await;
    assert!(!outcome.succeeded(), "{outcome:?}");
    let err = outcome.server.expect_err("server refuses the old root");
    // Both roots are named CN=shoal-ca, so webpki finds the new root and its signature check fails.
    assert!(err.contains("invalid peer certificate: BadSignature"), "{err}");
}

#[tokio::test]
async fn removed_node_is_refused_from_then_on() {
    let ca = new_ca();
    let trust = ca.trust_bundle();
    let manager = node(&ca, "manager-1", Role::Manager);
    let worker = node(&ca, "worker-1", Role::Worker);
    let removed = RemovedNodes::new();
    // The config is built before the removal: the set is consulted at each handshake.
    let config = server_config(&manager, &trust, &removed).expect("server config");

    let outcome =
        handshake(config.clone(), client_config(&worker, &trust).expect("client"), server_name(Role::Manager)).await;
    assert!(outcome.succeeded(), "{outcome:?}");

    removed.insert("worker-1");
    let outcome = handshake(config, client_config(&worker, &trust).expect("client"), server_name(Role::Manager)).await;
    let err = outcome.server.expect_err("removed node refused");
    assert!(err.contains("invalid peer certificate: Revoked"), "{err}");
}

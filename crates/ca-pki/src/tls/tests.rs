//! Credentials, trust bundle and config tests that need no network.

use super::*;
use crate::{ClusterCa, DEFAULT_NODE_VALIDITY, RemovedNodes, RootCa};

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn ca() -> ClusterCa {
    ClusterCa::new(RootCa::generate(now()).expect("root"))
}

fn issue(ca: &ClusterCa, key: &NodeKey, role: Role) -> String {
    let identity = NodeIdentity { node_id: "node-7".into(), role, cluster_id: "cluster-9".into() };
    ca.issue(&key.csr_pem().expect("csr"), &identity, DEFAULT_NODE_VALIDITY, now()).expect("issue")
}

#[test]
fn server_names_are_the_role_names() {
    for role in [Role::Manager, Role::Worker] {
        assert_eq!(server_name(role).to_str(), role.as_str());
    }
}

#[test]
fn credentials_read_identity_and_validity() {
    let ca = ca();
    let key = NodeKey::generate().expect("key");
    let chain = issue(&ca, &key, Role::Manager);
    let creds = NodeCredentials::new(&chain, key).expect("credentials");
    assert_eq!(creds.identity().node_id, "node-7");
    assert_eq!(creds.identity().role, Role::Manager);
    assert_eq!(creds.identity().cluster_id, "cluster-9");
    assert_eq!(creds.not_after() - creds.not_before(), DEFAULT_NODE_VALIDITY + time::Duration::hours(1));
    assert_eq!(creds.chain_pem(), chain);
    assert!(!format!("{creds:?}").contains("PRIVATE"));
}

#[test]
fn credentials_refuse_a_foreign_key() {
    let ca = ca();
    let chain = issue(&ca, &NodeKey::generate().expect("key"), Role::Worker);
    let err = NodeCredentials::new(&chain, NodeKey::generate().expect("other key")).expect_err("key mismatch");
    assert_eq!(
        err.to_string(),
        "node certificate for node-7 was not issued for this node key: pair the chain with the key whose CSR the CA signed"
    );
    let err = NodeCredentials::new("", NodeKey::generate().expect("key")).expect_err("empty");
    assert_eq!(err.to_string(), "node certificate chain holds no PEM certificate: pass the PEM the CA returned");
}

#[test]
fn credentials_and_bundle_save_and_load() {
    let ca = ca();
    let key = NodeKey::generate().expect("key");
    let chain = issue(&ca, &key, Role::Worker);
    let creds = NodeCredentials::new(&chain, key).expect("credentials");
    let trust = ca.trust_bundle();
    let kek = crate::UnlockKey::generate().expect("kek");
    let dir = tempfile::tempdir().expect("tempdir");
    creds.save(dir.path(), Some(&kek)).expect("save");
    trust.save(dir.path()).expect("save trust");

    let loaded = NodeCredentials::load(dir.path(), Some(&kek)).expect("load");
    assert_eq!(loaded.identity(), creds.identity());
    assert_eq!(loaded.leaf_der(), creds.leaf_der());
    assert_eq!(TrustBundle::load(dir.path()).expect("load trust"), trust);
    let err = NodeCredentials::load(dir.path(), None).expect_err("locked");
    assert!(matches!(err, CredentialsError::Key(KeyError::Locked { .. })), "{err}");
    // Configs build from loaded credentials.
    server_config(&loaded, &trust, &RemovedNodes::new()).expect("server config");
    client_config(&loaded, &trust).expect("client config");
}

#[test]
fn trust_bundle_refuses_garbage() {
    let err = TrustBundle::from_pem("hello").expect_err("no certificate");
    assert_eq!(err.to_string(), "trust bundle holds no PEM certificate: pass the PEM the CA returned");
}

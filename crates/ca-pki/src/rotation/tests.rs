//! Rotation state tests: state changes, trust bundles, chains and persistence.

use rustls_pki_types::pem::PemObject;

use super::*;
use crate::{DEFAULT_NODE_VALIDITY, NodeKey, Role};

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("timestamp")
}

fn issue(ca: &ClusterCa) -> String {
    let identity = NodeIdentity { node_id: "node-1".into(), role: Role::Worker, cluster_id: "cluster-1".into() };
    let csr = NodeKey::generate().expect("key").csr_pem().expect("csr");
    ca.issue(&csr, &identity, DEFAULT_NODE_VALIDITY, now()).expect("issue")
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().expect("pem")
}

#[test]
fn rotation_moves_through_its_states() {
    let mut ca = ClusterCa::new(RootCa::generate(now()).expect("root"));
    let old_root = ca.signing_root().cert_der().clone();
    assert_eq!(ca.state(), RotationState::Stable);
    assert_eq!(certs(ca.trust_bundle().pem()), vec![old_root.clone()]);
    assert_eq!(certs(&issue(&ca)).len(), 1);
    let err = ca.complete_rotation().expect_err("nothing to complete");
    assert_eq!(err.to_string(), "no root rotation is in progress: start one first");

    ca.start_rotation(now()).expect("start");
    assert_eq!(ca.state(), RotationState::Transition);
    let new_root = ca.signing_root().cert_der().clone();
    assert_ne!(new_root, old_root);
    assert_eq!(certs(ca.trust_bundle().pem()), vec![old_root.clone(), new_root.clone()]);
    let chain = issue(&ca);
    let chain_certs = certs(&chain);
    assert_eq!(chain_certs.len(), 2, "leaf and cross-signed intermediate");
    assert!(ca.is_current(&chain));
    let err = ca.start_rotation(now()).expect_err("already rotating");
    assert_eq!(err.to_string(), "a root rotation is already in progress: complete it before starting another");

    ca.complete_rotation().expect("complete");
    assert_eq!(ca.state(), RotationState::Stable);
    assert_eq!(certs(ca.trust_bundle().pem()), vec![new_root]);
    assert_eq!(certs(&issue(&ca)).len(), 1);
}

#[test]
fn cross_signed_intermediate_has_new_key_and_old_issuer() {
    use x509_parser::prelude::{FromDer, X509Certificate};

    let mut ca = ClusterCa::new(RootCa::generate(now()).expect("root"));
    let old_root = ca.signing_root().cert_der().clone();
    ca.start_rotation(now()).expect("start");
    let chain = certs(&issue(&ca));
    let (_, cross) = X509Certificate::from_der(&chain[1]).expect("cross");
    let (_, new_root) = X509Certificate::from_der(ca.signing_root().cert_der()).expect("new root");
    let (_, old) = X509Certificate::from_der(&old_root).expect("old root");
    assert!(cross.is_ca());
    assert_eq!(cross.subject().as_raw(), new_root.subject().as_raw());
    assert_eq!(cross.public_key().raw, new_root.public_key().raw);
    assert!(cross.verify_signature(Some(old.public_key())).is_ok());
}

#[test]
fn rotation_state_survives_save_and_load() {
    let mut ca = ClusterCa::new(RootCa::generate(now()).expect("root"));
    ca.start_rotation(now()).expect("start");
    let dir = tempfile::tempdir().expect("tempdir");
    ca.save(dir.path(), None).expect("save");
    let loaded = ClusterCa::load(dir.path(), None).expect("load");
    assert_eq!(loaded.state(), RotationState::Transition);
    assert_eq!(loaded.trust_bundle(), ca.trust_bundle());
    assert_eq!(certs(&issue(&loaded)).len(), 2);

    ca.complete_rotation().expect("complete");
    ca.save(dir.path(), None).expect("save");
    let loaded = ClusterCa::load(dir.path(), None).expect("load");
    assert_eq!(loaded.state(), RotationState::Stable);
    assert_eq!(loaded.trust_bundle(), ca.trust_bundle());
}

#[test]
fn saving_a_rotation_writes_the_old_root_before_replacing_it() {
    let mut ca = ClusterCa::new(RootCa::generate(now()).expect("root"));
    let old_root_pem = ca.signing_root().cert_pem().to_owned();
    ca.start_rotation(now()).expect("start");
    let dir = tempfile::tempdir().expect("tempdir");
    // Make replacing `ca.crt` fail, as a crash at that point would stop the save.
    std::fs::create_dir_all(dir.path().join("ca.crt").join("in-the-way")).expect("block ca.crt");

    let err = ca.save(dir.path(), None).expect_err("ca.crt cannot be replaced");
    assert!(err.to_string().contains("ca.crt"), "{err}");
    // The old root, which every node still trusts, was saved first.
    let saved = std::fs::read_to_string(dir.path().join(ROTATION_DIR).join("ca.crt")).expect("old root saved");
    assert_eq!(saved, old_root_pem);
    assert!(dir.path().join(ROTATION_DIR).join("ca.key").is_file());
    assert!(dir.path().join(ROTATION_DIR).join(CROSS_SIGNED_FILE).is_file());
}

//! Rotation state tests: state changes, trust bundles, chains and persistence.

use std::path::PathBuf;

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

/// Lays out `files` (destination name, source path) in a fresh directory.
fn lay_out(files: Layout) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, source) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::copy(source, &path).expect("copy");
    }
    dir
}

/// `names` copied from `from` into `into` (relative to the directory laid out).
fn files(from: &Path, into: &str, names: &[&str]) -> Layout {
    names.iter().map(|name| (format!("{into}/{name}"), from.join(name))).collect()
}

/// Files to lay out (destination name, source path).
type Layout = Vec<(String, PathBuf)>;

/// Every state a crash can leave during a save loads as the CA before or after it (as
/// `expected` says), and saving the CA after it works from there.
fn check_crash_states(states: Vec<(&str, Layout, &ClusterCa)>, after: &ClusterCa) {
    for (step, layout, expected) in states {
        let dir = lay_out(layout);
        let loaded = ClusterCa::load(dir.path(), None).unwrap_or_else(|e| panic!("{step}: {e}"));
        assert_eq!(loaded.state(), expected.state(), "{step}");
        assert_eq!(loaded.trust_bundle(), expected.trust_bundle(), "{step}");
        assert_eq!(loaded.signing_root().cert_der(), expected.signing_root().cert_der(), "{step}");
        after.save(dir.path(), None).unwrap_or_else(|e| panic!("{step}: save: {e}"));
        let loaded = ClusterCa::load(dir.path(), None).expect("load after save");
        assert_eq!(loaded.trust_bundle(), after.trust_bundle(), "{step}: after save");
        assert_eq!(loaded.signing_root().cert_der(), after.signing_root().cert_der(), "{step}: after save");
        for leftover in [STAGING_DIR, DISCARD_DIR] {
            assert!(!dir.path().join(leftover).exists(), "{step}: {leftover} left after save");
        }
    }
}

fn copy_of(root: &RootCa) -> RootCa {
    RootCa::from_pem(root.cert_pem(), &root.key_pem()).expect("copy")
}

#[test]
fn starting_a_rotation_survives_a_crash_at_every_step_of_its_save() {
    let stable = ClusterCa::new(RootCa::generate(now()).expect("root"));
    let mut rotating = ClusterCa::new(copy_of(stable.signing_root()));
    rotating.start_rotation(now()).expect("start");
    let (s, t) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    stable.save(s.path(), None).expect("save");
    rotating.save(t.path(), None).expect("save");
    let (s, t) = (s.path(), t.path());
    let old_signer = || files(s, ".", &["ca.crt", "ca.key"]);
    let rotation = |into| files(&t.join(ROTATION_DIR), into, &["ca.crt", "ca.key", CROSS_SIGNED_FILE]);
    let new_key = vec![("ca.key.new".to_owned(), t.join("ca.key"))];
    let new_cert = vec![("ca.crt.new".to_owned(), t.join("ca.crt"))];
    let states = vec![
        ("rotation.new half built", [old_signer(), rotation(STAGING_DIR)[..1].to_vec()].concat(), &stable),
        ("rotation/ in place, new root not saved", [old_signer(), rotation(ROTATION_DIR)].concat(), &stable),
        ("new root's key written", [old_signer(), rotation(ROTATION_DIR), new_key.clone()].concat(), &stable),
        ("new root's pair committed", [old_signer(), rotation(ROTATION_DIR), new_key, new_cert].concat(), &rotating),
        ("done", [files(t, ".", &["ca.crt", "ca.key"]), rotation(ROTATION_DIR)].concat(), &rotating),
    ];
    check_crash_states(states, &rotating);
}

#[test]
fn completing_a_rotation_survives_a_crash_at_every_step_of_its_save() {
    let mut rotating = ClusterCa::new(RootCa::generate(now()).expect("root"));
    rotating.start_rotation(now()).expect("start");
    let t = tempfile::tempdir().expect("tempdir");
    rotating.save(t.path(), None).expect("save");
    let completed = ClusterCa::new(copy_of(rotating.signing_root()));
    let t = t.path();
    let signer = || files(t, ".", &["ca.crt", "ca.key"]);
    let rotation = |into, names: &[&str]| files(&t.join(ROTATION_DIR), into, names);
    let all = ["ca.crt", "ca.key", CROSS_SIGNED_FILE];
    let states = vec![
        ("signing root saved again", [signer(), rotation(ROTATION_DIR, &all)].concat(), &rotating),
        ("rotation/ renamed aside", [signer(), rotation(DISCARD_DIR, &all)].concat(), &completed),
        ("rotation.old half deleted", [signer(), rotation(DISCARD_DIR, &["ca.crt"])].concat(), &completed),
    ];
    check_crash_states(states, &completed);
}

#[test]
fn a_rotation_started_over_an_unsaved_completion_replaces_the_stale_rotation_dir() {
    let mut ca = ClusterCa::new(RootCa::generate(now()).expect("root"));
    ca.start_rotation(now()).expect("start");
    let dir = tempfile::tempdir().expect("tempdir");
    ca.save(dir.path(), None).expect("save");
    ca.complete_rotation().expect("complete");
    ca.start_rotation(now()).expect("start again");
    ca.save(dir.path(), None).expect("save");
    let loaded = ClusterCa::load(dir.path(), None).expect("load");
    assert_eq!(loaded.trust_bundle(), ca.trust_bundle());
    assert_eq!(issue(&loaded).lines().count(), issue(&ca).lines().count());
    assert!(certs(&issue(&loaded))[1..] == certs(&issue(&ca))[1..], "same cross-signed intermediate");
}

#[test]
fn a_transition_saved_again_under_a_new_unlock_key_loads_with_it() {
    let mut ca = ClusterCa::new(RootCa::generate(now()).expect("root"));
    ca.start_rotation(now()).expect("start");
    let dir = tempfile::tempdir().expect("tempdir");
    ca.save(dir.path(), None).expect("save");
    let kek = UnlockKey::generate().expect("kek");
    ca.save(dir.path(), Some(&kek)).expect("save under a key");
    let loaded = ClusterCa::load(dir.path(), Some(&kek)).expect("load");
    assert_eq!(loaded.trust_bundle(), ca.trust_bundle());
    let err = ClusterCa::load(dir.path(), None).expect_err("locked");
    assert!(err.to_string().contains("is encrypted"), "{err}");
}

/// The same root again, as another manager reads it from the cluster's store.
fn copy(root: &RootCa) -> RootCa {
    RootCa::from_pem(root.cert_pem(), &root.key_pem()).expect("root from PEM")
}

#[test]
fn another_manager_takes_up_a_transition_from_its_parts() {
    let mut started = ClusterCa::new(RootCa::generate(now()).expect("root"));
    let old_root = copy(started.signing_root());
    started.start_rotation(now()).expect("start");
    let cross = started.cross_signed_pem().expect("in transition");
    let old = started.old_root().expect("in transition");
    assert_eq!(old.cert_der(), old_root.cert_der());

    let taken_up = ClusterCa::in_transition(copy(old), copy(started.signing_root()), &cross).expect("same parts");
    assert_eq!(taken_up.state(), RotationState::Transition);
    assert_eq!(taken_up.trust_bundle(), started.trust_bundle());
    let chain = issue(&taken_up);
    assert!(started.is_current(&chain), "both sign with the new root");
    assert_eq!(certs(&chain)[1], certs(&cross)[0], "and chain the same intermediate");

    // An intermediate another root signed, or one for another key, is refused.
    let stranger = RootCa::generate(now()).expect("root");
    let err = ClusterCa::in_transition(copy(&stranger), copy(started.signing_root()), &cross).expect_err("signer");
    assert!(err.to_string().contains("the old root did not sign it"), "{err}");
    let err = ClusterCa::in_transition(copy(old), stranger, &cross).expect_err("key");
    assert!(err.to_string().contains("does not carry the new root's key"), "{err}");
}

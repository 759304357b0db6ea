//! What a rotation waits for, and the CA the stored object describes.

use super::*;

fn root() -> RootCa {
    RootCa::generate(time::OffsetDateTime::now_utc()).expect("root")
}

fn copy_of(root: &RootCa) -> RootCa {
    RootCa::from_pem(root.cert_pem(), &root.key_pem()).expect("copy")
}

fn node(id: &str, cert_issuer: &str, trust_root: &str) -> v1::Node {
    v1::Node {
        id: id.into(),
        tls_info: Some(v1::NodeTlsInfo { cert_issuer: cert_issuer.into(), trust_root: trust_root.into() }),
        ..Default::default()
    }
}

#[test]
fn the_stored_object_describes_the_transition_and_its_end() {
    let (old, new) = (root(), root());
    let mut started = ClusterCa::new(copy_of(&old));
    started.start_rotation_to(copy_of(&new), time::OffsetDateTime::now_utc()).expect("start");
    let mut stored = v1::RootCa {
        id: ROOT_CA_ID.into(),
        ca_cert: old.cert_pem().as_bytes().to_vec(),
        ca_key: old.key_pem().into_bytes(),
        rotation: Some(v1::RootRotation {
            ca_cert: new.cert_pem().as_bytes().to_vec(),
            ca_key: new.key_pem().into_bytes(),
            cross_signed_cert: started.cross_signed_pem().expect("cross-signed").into_bytes(),
            started_at: None,
        }),
        ..Default::default()
    };
    let desired = desired_ca(&stored).expect("transition");
    assert_eq!(desired.trust_bundle(), started.trust_bundle());
    assert_eq!(desired.signing_root().fingerprint(), new.fingerprint());

    stored.rotation = None;
    let desired = desired_ca(&stored).expect("stable");
    assert!(desired.old_root().is_none());
    assert_eq!(desired.signing_root().fingerprint(), old.fingerprint());

    stored.ca_key = root().key_pem().into_bytes();
    let err = desired_ca(&stored).map(drop).expect_err("a key of another root");
    assert!(err.contains("stored root CA"), "{err}");
}

#[test]
fn a_node_counts_once_it_holds_the_new_roots_certificate_and_trusts_it() {
    let (old, new) = (root(), root());
    let mut ca = ClusterCa::new(copy_of(&old));
    ca.start_rotation_to(copy_of(&new), time::OffsetDateTime::now_utc()).expect("start");
    let (both, alone) = (ca.trust_bundle().fingerprint(), new.trust_bundle().fingerprint());
    let nodes = [
        node("old", &old.fingerprint(), &old.trust_bundle().fingerprint()),
        node("trusts-both", &old.fingerprint(), &both),
        node("reissued", &new.fingerprint(), &both),
        node("new-only", &new.fingerprint(), &alone),
        // Issued by the new root but trusting the old alone: it could not verify its peers
        // once the old root goes.
        node("half", &new.fingerprint(), &old.trust_bundle().fingerprint()),
        v1::Node { id: "silent".into(), ..Default::default() },
    ];
    let progress = Progress::of(&nodes, &ca);
    assert_eq!(progress.nodes, 6);
    assert_eq!(progress.certificates, 3);
    assert_eq!(progress.ready, 2);
    assert_eq!(progress.trust, 1);
    assert_eq!(progress.pending, ["old", "trusts-both", "half", "silent"]);
    assert_eq!(Progress::of(&nodes[2..4], &ca).ready, 2, "done once those two are all there is");
}

//! Root CA and issuing tests: identities the CA decides, validity rules, save/load and import.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::extensions::GeneralName;

use super::*;
use crate::Role;

fn now() -> OffsetDateTime {
    // A fixed instant: issuing never reads the clock.
    OffsetDateTime::from_unix_timestamp(1_900_000_000).expect("timestamp")
}

fn identity(role: Role) -> NodeIdentity {
    NodeIdentity { node_id: "node-abc".into(), role, cluster_id: "cluster-1".into() }
}

fn parse(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem")
}

#[test]
fn root_is_p256_shoal_ca_for_20_years() {
    let root = RootCa::generate(now()).expect("root");
    let der = parse(root.cert_pem());
    let (_, cert) = X509Certificate::from_der(&der).expect("x509");
    assert!(cert.is_ca());
    assert_eq!(cert.subject().to_string(), "CN=shoal-ca");
    assert_eq!(cert.public_key().algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    assert_eq!(nb, (now() - Duration::hours(1)).unix_timestamp());
    assert!(na - now().unix_timestamp() >= Duration::days(365 * 20).whole_seconds());
    assert!(format!("{root:?}").contains("redacted"));
}

#[test]
fn ca_decides_the_identity_not_the_csr() {
    let root = RootCa::generate(now()).expect("root");
    let key = NodeKey::generate().expect("key");
    // A CSR that claims to be a manager of another cluster.
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::OrganizationalUnitName, "shoal-manager");
    params.distinguished_name.push(DnType::OrganizationName, "evil");
    let csr = params.serialize_request(&key.key).and_then(|c| c.pem()).expect("csr");

    let pem = root.issue(&csr, &identity(Role::Worker), DEFAULT_NODE_VALIDITY, now()).expect("issue");
    let der = parse(&pem);
    assert_eq!(crate::identity::identity_of(&der).expect("identity"), identity(Role::Worker));
    let (_, cert) = X509Certificate::from_der(&der).expect("x509");
    assert_eq!(cert.subject().to_string(), "CN=node-abc, OU=shoal-worker, O=cluster-1");
    assert_eq!(cert.public_key().subject_public_key.data.as_ref(), key.public_key_raw());
    let san = cert.subject_alternative_name().expect("san ok").expect("san present");
    assert_eq!(san.value.general_names, vec![GeneralName::DNSName("shoal-worker")]);
    let eku = cert.extended_key_usage().expect("eku ok").expect("eku present");
    assert!(eku.value.server_auth && eku.value.client_auth);
    assert!(!cert.is_ca());
}

#[test]
fn validity_is_backdated_and_bounded() {
    let root = RootCa::generate(now()).expect("root");
    let csr = NodeKey::generate().expect("key").csr_pem().expect("csr");
    let cases = [
        (DEFAULT_NODE_VALIDITY, Duration::days(90)),
        (MIN_NODE_VALIDITY, Duration::hours(1)),
        (Duration::days(7), Duration::days(7)),
    ];
    for (asked, lifetime) in cases {
        let pem = root.issue(&csr, &identity(Role::Manager), asked, now()).expect("issue");
        let der = parse(&pem);
        let (_, cert) = X509Certificate::from_der(&der).expect("x509");
        assert_eq!(cert.validity().not_before.timestamp(), (now() - Duration::hours(1)).unix_timestamp());
        assert_eq!(cert.validity().not_after.timestamp(), (now() + lifetime).unix_timestamp());
    }
    // A short-lived certificate (tests of renewal) is backdated by no more than its validity.
    let pem = root.issue(&csr, &identity(Role::Manager), Duration::seconds(10), now()).expect("issue");
    let der = parse(&pem);
    let (_, cert) = X509Certificate::from_der(&der).expect("x509");
    assert_eq!(cert.validity().not_before.timestamp(), (now() - Duration::seconds(10)).unix_timestamp());
    assert_eq!(cert.validity().not_after.timestamp(), (now() + Duration::seconds(10)).unix_timestamp());
    let err = root.issue(&csr, &identity(Role::Manager), Duration::ZERO, now()).expect_err("no validity");
    assert_eq!(err.to_string(), "node certificate validity of 0s is not positive: ask for a duration after now");
}

#[test]
fn bad_requests_are_refused() {
    let root = RootCa::generate(now()).expect("root");
    let csr = NodeKey::generate().expect("key").csr_pem().expect("csr");
    let err = root.issue("not a csr", &identity(Role::Worker), DEFAULT_NODE_VALIDITY, now()).expect_err("garbage");
    assert!(matches!(err, IssueError::Csr(_)), "{err}");
    let mut empty = identity(Role::Worker);
    empty.cluster_id.clear();
    let err = root.issue(&csr, &empty, DEFAULT_NODE_VALIDITY, now()).expect_err("empty cluster");
    assert_eq!(err.to_string(), "node identity has an empty cluster ID: pass a node ID and a cluster ID");
}

#[test]
fn save_and_load_round_trip_with_and_without_kek() {
    let root = RootCa::generate(now()).expect("root");
    for kek in [None, Some(UnlockKey::generate().expect("kek"))] {
        let dir = tempfile::tempdir().expect("tempdir");
        root.save(dir.path(), kek.as_ref()).expect("save");
        let loaded = RootCa::load(dir.path(), kek.as_ref()).expect("load");
        assert_eq!(loaded.cert_der(), root.cert_der());
        assert_eq!(loaded.key_pem(), root.key_pem());
        let key_file = std::fs::read_to_string(dir.path().join("ca.key")).expect("key file");
        assert_eq!(key_file.contains("PRIVATE KEY"), kek.is_none());
    }
}

#[test]
fn imports_an_external_root_and_signs_with_it() {
    // An "external" root made outside Shoal, with its own name.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, "Example Corp Root");
    params.distinguished_name.push(DnType::OrganizationName, "Example Corp");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("self-signed");

    let root = RootCa::from_pem(&cert.pem(), &key.serialize_pem()).expect("import");
    assert_eq!(root.cert_der(), cert.der());
    let csr = NodeKey::generate().expect("key").csr_pem().expect("csr");
    let pem = root.issue(&csr, &identity(Role::Manager), DEFAULT_NODE_VALIDITY, now()).expect("issue");
    assert!(root.signed(&parse(&pem)));
}

#[test]
fn import_refuses_mismatched_keys_and_leaf_certificates() {
    let root = RootCa::generate(now()).expect("root");
    let other = RootCa::generate(now()).expect("other");
    let err = RootCa::from_pem(root.cert_pem(), &other.key_pem()).expect_err("mismatch");
    assert_eq!(
        err.to_string(),
        "root CA key does not match the certificate \"CN=shoal-ca\": pass the key that made this certificate"
    );

    let node_key = NodeKey::generate().expect("key");
    let leaf = root
        .issue(&node_key.csr_pem().expect("csr"), &identity(Role::Worker), DEFAULT_NODE_VALIDITY, now())
        .expect("issue");
    let err = RootCa::from_pem(&leaf, &node_key.to_pem()).expect_err("leaf");
    assert!(matches!(err, CaError::NotCa { .. }), "{err}");
    let err = RootCa::from_pem("garbage", &root.key_pem()).expect_err("garbage");
    assert!(matches!(err, CaError::Certificate { .. }), "{err}");
}

#[test]
fn pem_of_matches_rcgen() {
    let root = RootCa::generate(now()).expect("root");
    assert_eq!(pem_of(root.cert_der()), root.cert_pem());
}

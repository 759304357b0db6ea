//! Live credentials: a renewal (in this process or by another writer of the directory) is what
//! the next handshake presents, on the server side and the client side.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;
use crate::{ClusterCa, NodeIdentity, Role, RootCa, server_name};

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

struct Fixture {
    ca: ClusterCa,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(role: Role) -> Self {
        let fixture =
            Self { ca: ClusterCa::new(RootCa::generate(now()).expect("root")), dir: tempfile::tempdir().expect("dir") };
        fixture.issue(role, Duration::days(90)).save(fixture.dir.path(), None).expect("save");
        fixture.ca.trust_bundle().save(fixture.dir.path()).expect("trust");
        fixture
    }

    fn issue(&self, role: Role, validity: Duration) -> NodeCredentials {
        let key = NodeKey::generate().expect("key");
        NodeCredentials::new(&self.chain(&key, role, validity), key).expect("credentials")
    }

    fn chain(&self, key: &NodeKey, role: Role, validity: Duration) -> String {
        let identity = NodeIdentity { node_id: "node-1".into(), role, cluster_id: "cluster-1".into() };
        self.ca.issue(&key.csr_pem().expect("csr"), &identity, validity, now()).expect("issue")
    }
}

/// One TLS handshake between the two configs over an in-memory pipe; returns the leaf certificate
/// each side saw from the other (server's view of the client, client's view of the server).
async fn handshake(server: ServerConfig, client: ClientConfig, name: ServerName<'static>) -> (Vec<u8>, Vec<u8>) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let serve = async move {
        let mut stream = acceptor.accept(a).await.expect("accept");
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.expect("read");
        let peer = stream.get_ref().1.peer_certificates().expect("client certificate")[0].to_vec();
        stream.write_all(&byte).await.expect("echo");
        stream.flush().await.expect("flush");
        peer
    };
    let connect = async move {
        let mut stream = connector.connect(name, b).await.expect("connect");
        stream.write_all(b"x").await.expect("write");
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.expect("read");
        stream.get_ref().1.peer_certificates().expect("server certificate")[0].to_vec()
    };
    tokio::join!(serve, connect)
}

#[tokio::test]
async fn a_renewal_is_presented_from_the_next_handshake_on_both_sides() {
    let f = Fixture::new(Role::Manager);
    let live = LiveCredentials::load(f.dir.path()).expect("load");
    let server = || live_join_server_config(&live, &RemovedNodes::new()).expect("server");
    let client = || live_client_config(&live).expect("client");
    let first = live.current().leaf_der().to_vec();
    let (seen_by_server, seen_by_client) = handshake(server(), client(), server_name(Role::Manager)).await;
    assert_eq!((&seen_by_server, &seen_by_client), (&first, &first));

    // Renewed in this process: configs built before the renewal present the new certificate.
    let (server_config, client_config) = (server(), client());
    let key = NodeKey::generate().expect("key");
    let renewed = live.renew(&f.chain(&key, Role::Manager, Duration::days(90)), key).expect("renew");
    let second = renewed.leaf_der().to_vec();
    assert_ne!(first, second);
    let (seen_by_server, seen_by_client) = handshake(server_config, client_config, server_name(Role::Manager)).await;
    assert_eq!((&seen_by_server, &seen_by_client), (&second, &second));
    // Saved too: a fresh load reads it.
    assert_eq!(LiveCredentials::load(f.dir.path()).expect("reload").current().leaf_der().to_vec(), second);

    // Renewed by another writer of the directory: picked up at the next handshake.
    let third = f.issue(Role::Manager, Duration::days(90));
    third.save(f.dir.path(), None).expect("other writer");
    let (seen_by_server, seen_by_client) = handshake(server(), client(), server_name(Role::Manager)).await;
    assert_eq!((&seen_by_server, &seen_by_client), (&third.leaf_der().to_vec(), &third.leaf_der().to_vec()));
    assert_eq!(live.current().leaf_der(), third.leaf_der());
}

#[test]
fn renewal_is_due_between_half_and_four_fifths_of_the_lifetime() {
    let f = Fixture::new(Role::Worker);
    let live = LiveCredentials::load(f.dir.path()).expect("load");
    for _ in 0..3 {
        let current = live.current();
        let lifetime = current.not_after() - current.not_before();
        let due = live.renewal_due();
        assert!(due >= current.not_before() + lifetime * 0.5 && due <= current.not_before() + lifetime * 0.8, "{due}");
        // The draw is kept for one certificate: asking again gives the same time.
        assert_eq!(live.renewal_due(), due);
        let key = NodeKey::generate().expect("key");
        live.renew(&f.chain(&key, Role::Worker, Duration::seconds(30)), key).expect("renew");
    }
    // A 30 s certificate starts 30 s back, so its renewal point lies 0–18 s ahead.
    let due = live.renewal_due();
    assert!(due > now() - Duration::seconds(1) && due < now() + Duration::seconds(19), "{due}");
}

#[test]
fn a_renewal_with_a_foreign_key_changes_nothing() {
    let f = Fixture::new(Role::Worker);
    let live = LiveCredentials::load(f.dir.path()).expect("load");
    let before = live.current().leaf_der().to_vec();
    let chain = f.chain(&NodeKey::generate().expect("key"), Role::Worker, Duration::days(1));
    let err = live.renew(&chain, NodeKey::generate().expect("other key")).expect_err("key mismatch");
    assert!(err.to_string().contains("was not issued for this node key"), "{err}");
    assert_eq!(live.current().leaf_der().to_vec(), before);
    assert_eq!(NodeCredentials::load(f.dir.path(), None).expect("load").leaf_der().to_vec(), before);
}

#[test]
fn the_key_file_follows_the_shared_unlock_key_through_rekeys_and_renewals() {
    let fixture = Fixture::new(Role::Manager);
    let dir = fixture.dir.path();
    let key_file = dir.join(crate::tls::KEY_FILE);
    let kek = KeyEncryption::default();
    let live = LiveCredentials::load_encrypted(dir, kek.clone()).expect("load");
    // A second reader of the directory (the worker role beside a manager) shares the cell.
    let other = LiveCredentials::load_encrypted(dir, kek.clone()).expect("load");
    let unlock = crate::UnlockKey::generate().expect("unlock key");
    kek.set(Some(unlock.clone()));
    live.rekey().expect("encrypt");
    assert!(crate::key_file_is_encrypted(&key_file).expect("read"));
    assert!(NodeCredentials::load(dir, None).is_err(), "locked without the key");
    NodeCredentials::load(dir, Some(&unlock)).expect("the unlock key opens it");

    let key = NodeKey::generate().expect("key");
    let renewed = live.renew(&fixture.chain(&key, Role::Manager, Duration::days(90)), key).expect("renew");
    assert!(crate::key_file_is_encrypted(&key_file).expect("read"), "a renewal keeps the key encrypted");
    assert_eq!(other.current().not_after(), renewed.not_after(), "the other reader follows the renewal");

    kek.set(None);
    live.rekey().expect("decrypt");
    assert!(!crate::key_file_is_encrypted(&key_file).expect("read"));
    NodeCredentials::load(dir, None).expect("in the clear again");
}

/// A node's credentials in a directory of its own, issued by `ca`.
fn node_dir(ca: &ClusterCa, node_id: &str, role: Role) -> (tempfile::TempDir, LiveCredentials) {
    let dir = tempfile::tempdir().expect("dir");
    let key = NodeKey::generate().expect("key");
    let identity = NodeIdentity { node_id: node_id.into(), role, cluster_id: "cluster-1".into() };
    let chain = ca.issue(&key.csr_pem().expect("csr"), &identity, Duration::days(90), now()).expect("issue");
    NodeCredentials::new(&chain, key).expect("credentials").save(dir.path(), None).expect("save");
    ca.trust_bundle().save(dir.path()).expect("trust");
    let live = LiveCredentials::load(dir.path()).expect("load");
    (dir, live)
}

fn renew(ca: &ClusterCa, live: &LiveCredentials) {
    let key = NodeKey::generate().expect("key");
    let identity = live.current().identity().clone();
    let chain = ca.issue(&key.csr_pem().expect("csr"), &identity, Duration::days(90), now()).expect("issue");
    live.renew(&chain, key).expect("renew");
}

/// One handshake between two configs; whether it went through.
async fn connects(server: ServerConfig, client: ClientConfig) -> bool {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let serve = async move {
        let mut stream = acceptor.accept(a).await.ok()?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.ok()?;
        stream.write_all(&byte).await.ok()?;
        stream.flush().await.ok()
    };
    let connect = async move {
        let mut stream = connector.connect(server_name(Role::Manager), b).await.ok()?;
        stream.write_all(b"x").await.ok()?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.ok()
    };
    let (served, connected) = tokio::join!(serve, connect);
    served.is_some() && connected.is_some()
}

#[tokio::test]
async fn configs_follow_a_root_rotation_through_the_trust_file() {
    let mut ca = ClusterCa::new(RootCa::generate(now()).expect("root"));
    let (_m, manager) = node_dir(&ca, "manager-1", Role::Manager);
    let (_w, worker) = node_dir(&ca, "worker-1", Role::Worker);
    let (_s, straggler) = node_dir(&ca, "worker-2", Role::Worker);
    // Built once, before the rotation, as a running manager port and a running agent hold them.
    let removed = RemovedNodes::new();
    let server = live_server_config(&manager, &removed).expect("server");
    let client = live_client_config(&worker).expect("client");
    let old_bundle = ca.trust_bundle();
    assert!(worker.issued_by_newest_root());
    assert_eq!(worker.tls_fingerprints(), (old_bundle.newest_root_fingerprint(), old_bundle.fingerprint()));

    ca.start_rotation(now()).expect("start");
    let both = ca.trust_bundle();
    // The manager moves first: a certificate from the new root, the cross-signed intermediate
    // in its chain, both roots trusted. The worker, still on the old root alone, verifies it.
    manager.set_trust(&both).expect("trust both");
    renew(&ca, &manager);
    assert!(manager.issued_by_newest_root());
    assert!(connects(server.clone(), client.clone()).await, "old-root worker to new-root manager");
    // The worker hears of the bundle, trusts it and renews.
    worker.set_trust(&both).expect("trust both");
    assert!(!worker.issued_by_newest_root(), "its certificate is from the old root");
    renew(&ca, &worker);
    assert!(worker.issued_by_newest_root());
    assert_eq!(worker.tls_fingerprints().0, both.newest_root_fingerprint());
    assert!(connects(server.clone(), client.clone()).await, "both on the new root");

    ca.complete_rotation().expect("complete");
    let new_bundle = ca.trust_bundle();
    manager.set_trust(&new_bundle).expect("trust the new root");
    worker.set_trust(&new_bundle).expect("trust the new root");
    assert!(connects(server.clone(), client.clone()).await, "configs built before the rotation still connect");
    assert_eq!(worker.tls_fingerprints(), (new_bundle.newest_root_fingerprint(), new_bundle.fingerprint()));
    // A node that missed the rotation holds an old-root certificate: refused now.
    let stale = live_client_config(&straggler).expect("client");
    assert!(!connects(server.clone(), stale).await, "an old-root certificate is refused after the rotation");
    assert_eq!(straggler.tls_fingerprints().0, old_bundle.newest_root_fingerprint());
    // Another writer of the trust file (the worker role beside a manager) is followed too.
    let reread = LiveCredentials::load(manager.dir()).expect("load");
    old_bundle.save(manager.dir()).expect("write the old bundle back");
    assert_eq!(reread.trust(), old_bundle);
}

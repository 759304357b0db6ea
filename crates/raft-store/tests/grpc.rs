//! Three members in one process over the gRPC transport on loopback with TLS (rustls configs
//! built by the test, as a caller would): replication, a snapshot streamed in chunks to a member
//! that joins late, and failover after the leader's server stops.
#![cfg(feature = "grpc")]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::PrivatePkcs8KeyDer;
use shoal_raft_store::Consistency;
use shoal_raft_store::Store;
use shoal_raft_store::StoreConfig;
use shoal_raft_store::grpc;
use shoal_raft_store::grpc::GrpcTransport;
use tokio::net::TcpListener;
use tracing::info;

struct Tls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn tls() -> Tls {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ck = rcgen::generate_simple_self_signed(vec!["shoal-manager".to_owned()]).expect("certificate");
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Tls { server: Arc::new(server), client: Arc::new(client) }
}

struct Member {
    store: Store,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

async fn start(id: u64, listener: TcpListener, dir: &std::path::Path, tls: &Tls) -> Member {
    let addr = listener.local_addr().expect("addr").to_string();
    let mut config = StoreConfig::new(id, addr, dir.join(format!("node-{id}")));
    config.heartbeat_interval = Duration::from_millis(100);
    config.election_timeout = (Duration::from_millis(1000), Duration::from_millis(2000));
    config.request_timeout = Duration::from_secs(5);
    config.snapshot_after_entries = 20;
    config.keep_entries_after_snapshot = 0;
    let transport = GrpcTransport::new(tls.client.clone(), "shoal-manager").expect("transport").into_transport();
    let store = Store::open(config, transport).await.expect("open");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let store = store.clone();
        let tls = tls.server.clone();
        async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            grpc::serve(store, listener, tls, shutdown).await.expect("serve");
        }
    });
    Member { store, stop: Some(stop), server }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_over_grpc_with_tls() {
    support::init_tracing();
    let tls = tls();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        listeners.insert(id, TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    let addrs: BTreeMap<u64, String> =
        listeners.iter().map(|(id, l)| (*id, l.local_addr().expect("addr").to_string())).collect();
    let mut members = BTreeMap::new();
    for (id, l) in listeners {
        members.insert(id, start(id, l, dir.path(), &tls).await);
    }
    let m = |members: &BTreeMap<u64, Member>, id: u64| members.get(&id).expect("member").store.clone();

    info!("--- bootstrap member 1, add member 2");
    m(&members, 1).bootstrap().await.expect("bootstrap");
    m(&members, 1).add_learner(2, &addrs[&2]).await.expect("learner 2");
    m(&members, 1).promote(2).await.expect("promote 2");

    info!("--- write 32 KiB values past two snapshots, so member 3 needs a chunked snapshot");
    let value = vec![b'x'; 32 * 1024];
    for i in 0..45 {
        m(&members, 1).put(format!("/big/{i:02}"), value.clone()).await.expect("put");
    }
    m(&members, 1).add_learner(3, &addrs[&3]).await.expect("learner 3 via snapshot");
    m(&members, 1).promote(3).await.expect("promote 3");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got = m(&members, 3).range_with("/big/", Consistency::Stale).await.expect("range");
        if got.kvs.len() == 45 || tokio::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(got.kvs.len(), 45);
    assert!(dir.path().join("node-3/snapshot/current.snap").exists(), "member 3 installed a snapshot");
    assert!(got.kvs.iter().all(|kv| kv.value == value));

    info!("--- a follower write is forwarded over grpc");
    m(&members, 2).put("/via/2", "yes").await.expect("forwarded");
    assert_eq!(m(&members, 3).get("/via/2").await.expect("read").expect("kv").value, b"yes");

    info!("--- kill leader: stop its server and raft; the others elect a new one");
    let mut old = members.remove(&1).expect("leader");
    if let Some(stop) = old.stop.take() {
        let _ = stop.send(());
    }
    old.store.shutdown().await;
    let _ = old.server.await;
    let survivor = m(&members, 2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if survivor.put("/after", "failover").await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no new leader within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(m(&members, 3).get("/after").await.expect("read").expect("kv").value, b"failover");
    let status = survivor.status().await;
    assert!(status.leader.is_some_and(|l| l != 1));
    for (_, mut member) in members {
        if let Some(stop) = member.stop.take() {
            let _ = stop.send(());
        }
        member.store.shutdown().await;
        let _ = member.server.await;
    }
}

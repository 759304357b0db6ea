//! Tests of the gRPC server's limits: the total size of a streamed snapshot and the time a
//! connection may take to complete its TLS handshake.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::PrivatePkcs8KeyDer;
use tokio::io::AsyncReadExt;

use super::*;

fn chunk(from: NodeId, target: NodeId, len: usize) -> Result<SnapshotChunk, tonic::Status> {
    Ok(SnapshotChunk { from, target, data: vec![7; len] })
}

#[tokio::test]
async fn a_snapshot_within_the_limit_is_gathered_whole() {
    let chunks = futures::stream::iter(vec![chunk(1, 2, 6), chunk(0, 0, 4)]);
    let data = collect_snapshot(chunks, 2, 10).await.expect("within the limit");
    assert_eq!(data, vec![7; 10]);
}

#[tokio::test]
async fn a_snapshot_over_the_limit_is_refused_naming_the_limit() {
    let chunks = futures::stream::iter(vec![chunk(1, 2, 6), chunk(0, 0, 6), chunk(0, 0, 6)]);
    let status = collect_snapshot(chunks, 2, 10).await.expect_err("over the limit");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let message = status.message();
    assert!(
        message.contains("node 1") && message.contains("limit of 10 bytes") && message.contains("12 bytes received"),
        "{message}"
    );
}

#[tokio::test]
async fn a_snapshot_for_another_member_is_refused() {
    let chunks = futures::stream::iter(vec![chunk(1, 3, 6)]);
    let status = collect_snapshot(chunks, 2, 10).await.expect_err("wrong member");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
}

fn server_tls() -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ck = rcgen::generate_simple_self_signed(vec!["shoal-manager".to_owned()]).expect("certificate");
    let cert = CertificateDer::from(ck.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server config");
    Arc::new(config)
}

#[tokio::test]
async fn a_connection_that_never_completes_its_handshake_is_dropped() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, _rx) = tokio::sync::mpsc::channel(4);
    let acceptor = tokio_rustls::TlsAcceptor::from(server_tls());
    let server = tokio::spawn(accept_tls(listener, acceptor, Duration::from_millis(200), tx));

    tracing::info!("--- connect and say nothing");
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
    server.abort();
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("the server sent {n} bytes to a client that never said hello"),
        Err(_) => panic!("the server kept a silent connection open past its handshake timeout"),
    }
}

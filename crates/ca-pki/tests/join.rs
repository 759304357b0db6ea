//! Joining over loopback: the joining node pins the root CA by the token's digest before it sends
//! the token, then sends it over TLS verified by that root; the manager maps it to a role.

mod support;

use std::sync::Arc;

use shoal_ca_pki::{
    ClusterCa, JoinToken, JoinTokens, RemovedNodes, Role, RootCa, TokenError, join_client_config, join_server_config,
    server_name,
};
use support::node;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn new_ca() -> ClusterCa {
    ClusterCa::new(RootCa::generate(OffsetDateTime::now_utc()).expect("root"))
}

/// The joining side: fetch the root CA bundle in the clear, check it against the token, and only
/// then open TLS verified by it and send the token. Returns the role the manager granted.
async fn join(addr: std::net::SocketAddr, token: &str) -> Result<String, TokenError> {
    let token: JoinToken = token.parse()?;
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    let len = tcp.read_u32().await.expect("bundle length");
    let mut bundle = vec![0u8; len as usize];
    tcp.read_exact(&mut bundle).await.expect("bundle");
    let bundle = String::from_utf8(bundle).expect("utf-8 bundle");
    // Dropping `tcp` on error closes the connection without a byte sent.
    let trust = token.verify_root_ca(&bundle)?;

    let connector = TlsConnector::from(Arc::new(join_client_config(&trust).expect("config")));
    let mut tls = connector.connect(server_name(Role::Manager), tcp).await.expect("tls to the pinned manager");
    tls.write_all(format!("{token}\n").as_bytes()).await.expect("send token");
    tls.flush().await.expect("flush");
    let mut reply = String::new();
    tls.read_to_string(&mut reply).await.expect("reply");
    Ok(reply)
}

#[tokio::test]
async fn token_for_another_root_is_refused_before_any_secret_is_sent() {
    // An impersonator serves its own root CA bundle and records what the client sends next.
    let impostor = new_ca();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = impostor.trust_bundle().pem().to_owned();
    let impostor_side = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        tcp.write_u32(served.len() as u32).await.expect("len");
        tcp.write_all(served.as_bytes()).await.expect("bundle");
        let mut received = Vec::new();
        tcp.read_to_end(&mut received).await.expect("read");
        received
    });

    let cluster = new_ca();
    let tokens = JoinTokens::generate(&cluster.trust_bundle()).expect("tokens");
    let token = tokens.token(Role::Worker).to_string();

    let err = join(addr, &token).await.expect_err("pin must fail");
    assert_eq!(err, TokenError::RootCaMismatch);
    assert_eq!(
        err.to_string(),
        "the root CA served by this manager does not match the join token: refusing to send the token (wrong address, or a manager impersonator)"
    );
    let received = impostor_side.await.expect("impostor");
    assert!(received.is_empty(), "client sent {} bytes", received.len());
}

#[tokio::test]
async fn matching_token_joins_with_its_role_and_rotation_refuses_the_old_one() {
    let ca = new_ca();
    let trust = ca.trust_bundle();
    let manager = node(&ca, "manager-1", Role::Manager);
    let mut tokens = JoinTokens::generate(&trust).expect("tokens");
    let worker_token = tokens.token(Role::Worker).to_string();
    let manager_token = tokens.token(Role::Manager).to_string();

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor =
        TlsAcceptor::from(Arc::new(join_server_config(&manager, &trust, &RemovedNodes::new()).expect("server config")));
    let served = trust.pem().to_owned();
    let checker = tokens.clone();
    let manager_side = tokio::spawn(async move {
        let mut checker = checker;
        for round in 0..3 {
            if round == 2 {
                checker.rotate(Role::Worker).expect("rotate");
            }
            let (mut tcp, _) = listener.accept().await.expect("accept");
            tcp.write_u32(served.len() as u32).await.expect("len");
            tcp.write_all(served.as_bytes()).await.expect("bundle");
            let mut tls = acceptor.accept(tcp).await.expect("tls");
            let mut line = Vec::new();
            while !line.ends_with(b"\n") {
                let mut byte = [0u8; 1];
                tls.read_exact(&mut byte).await.expect("token byte");
                line.push(byte[0]);
            }
            let text = String::from_utf8(line).expect("utf-8");
            let reply = match text.trim_end().parse::<JoinToken>() {
                Ok(token) => match checker.role_for(&token) {
                    Ok(role) => role.to_string(),
                    Err(err) => format!("refused: {err}"),
                },
                Err(err) => format!("refused: {err}"),
            };
            tls.write_all(reply.as_bytes()).await.expect("reply");
            tls.shutdown().await.expect("shutdown");
        }
    });

    assert_eq!(join(addr, &worker_token).await.expect("worker"), "shoal-worker");
    assert_eq!(join(addr, &manager_token).await.expect("manager"), "shoal-manager");
    // The manager rotated the worker token before this third join.
    assert_eq!(
        join(addr, &worker_token).await.expect("reply"),
        "refused: join token secret is not valid for this cluster (it may have been rotated): ask a manager for a current token"
    );
    manager_side.await.expect("manager");
    tokens.rotate(Role::Worker).expect("rotate");
    assert_ne!(tokens.token(Role::Worker).to_string(), worker_token);
}

//! Example: create a cluster CA, sign a manager and a worker, and connect them over mutual TLS.
//!
//! Run with `cargo run -p shoal-ca-pki --example issue_and_connect`.
#![allow(clippy::print_stdout)]

use std::error::Error;
use std::sync::Arc;

use shoal_ca_pki::{
    ClusterCa, DEFAULT_NODE_VALIDITY, NodeCredentials, NodeIdentity, NodeKey, RemovedNodes, Role, RootCa,
    client_config, peer_identity, require_role, server_config, server_name,
};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// What a node does to get its certificate: make a key and a CSR, and let the CA decide who it is.
fn enroll(ca: &ClusterCa, node_id: &str, role: Role) -> Result<NodeCredentials, Box<dyn Error>> {
    let key = NodeKey::generate()?;
    let csr = key.csr_pem()?;
    let identity = NodeIdentity { node_id: node_id.to_owned(), role, cluster_id: "example-cluster".to_owned() };
    let chain = ca.issue(&csr, &identity, DEFAULT_NODE_VALIDITY, OffsetDateTime::now_utc())?;
    Ok(NodeCredentials::new(&chain, key)?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let ca = ClusterCa::new(RootCa::generate(OffsetDateTime::now_utc())?);
    let trust = ca.trust_bundle();
    let manager = enroll(&ca, "manager-1", Role::Manager)?;
    let worker = enroll(&ca, "worker-1", Role::Worker)?;
    println!("issued {:?} and {:?}", manager.identity(), worker.identity());

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(Arc::new(server_config(&manager, &trust, &RemovedNodes::new())?));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let caller = peer_identity(tls.get_ref().1.peer_certificates())?;
        // A worker may call the dispatcher, but not the Raft transport.
        let raft_allowed = require_role(&caller, Role::Manager).is_ok();
        let reply = format!("hello {}, raft allowed: {raft_allowed}", caller.node_id);
        tls.write_all(reply.as_bytes()).await?;
        tls.shutdown().await?;
        Ok::<_, Box<dyn Error + Send + Sync>>(caller)
    });

    let connector = TlsConnector::from(Arc::new(client_config(&worker, &trust)?));
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = connector.connect(server_name(Role::Manager), tcp).await?;
    let server_identity = peer_identity(tls.get_ref().1.peer_certificates())?;
    let mut reply = String::new();
    tls.read_to_string(&mut reply).await?;
    let caller = server.await?.map_err(|e| e.to_string())?;

    println!("worker sees server {server_identity:?}");
    println!("manager sees client {caller:?}");
    println!("manager replied: {reply}");
    Ok(())
}

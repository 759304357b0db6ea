//! Shared fixtures for the TLS tests: issuing node credentials and running a real loopback handshake.

// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration as StdDuration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use shoal_ca_pki::{ClusterCa, DEFAULT_NODE_VALIDITY, NodeCredentials, NodeIdentity, NodeKey, Role, peer_identity};
use time::{Duration, OffsetDateTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The cluster ID every fixture node belongs to.
pub(crate) const CLUSTER: &str = "cluster-test";

/// Makes a node key, has `ca` sign its CSR and returns the node's credentials.
pub(crate) fn node(ca: &ClusterCa, node_id: &str, role: Role) -> NodeCredentials {
    node_at(ca, node_id, role, OffsetDateTime::now_utc(), DEFAULT_NODE_VALIDITY)
}

/// Like [`node`], signed as if the clock read `now`, valid for `validity`.
pub(crate) fn node_at(
    ca: &ClusterCa,
    node_id: &str,
    role: Role,
    now: OffsetDateTime,
    validity: Duration,
) -> NodeCredentials {
    let key = NodeKey::generate().expect("node key");
    let identity = NodeIdentity { node_id: node_id.to_owned(), role, cluster_id: CLUSTER.to_owned() };
    let chain = ca.issue(&key.csr_pem().expect("csr"), &identity, validity, now).expect("issue");
    NodeCredentials::new(&chain, key).expect("credentials")
}

/// What each side of a handshake saw: the peer's identity, or the error that ended the session.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The server's view: the client's identity (`None` for an anonymous client).
    pub(crate) server: Result<Option<NodeIdentity>, String>,
    /// The client's view: the server's identity.
    pub(crate) client: Result<NodeIdentity, String>,
}

impl Outcome {
    /// Both sides completed the handshake and exchanged a message.
    pub(crate) fn succeeded(&self) -> bool {
        self.server.is_ok() && self.client.is_ok()
    }
}

/// Runs a TLS handshake over loopback and a ping/pong exchange, so that a refusal on either side
/// (TLS 1.3 servers check client certificates after the client thinks it is done) shows up.
pub(crate) async fn handshake(server: ServerConfig, client: ClientConfig, name: ServerName<'static>) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let identity = match tls.get_ref().1.peer_certificates() {
            None => None,
            certs => Some(peer_identity(certs).map_err(|e| e.to_string())?),
        };
        tls.shutdown().await.ok();
        Ok::<_, String>(identity)
    });
    let connector = TlsConnector::from(Arc::new(client));
    let client_side = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong).await.map_err(|e| e.to_string())?;
        peer_identity(tls.get_ref().1.peer_certificates()).map_err(|e| e.to_string())
    };
    let limit = StdDuration::from_secs(20);
    let client = tokio::time::timeout(limit, client_side).await.unwrap_or_else(|_| Err("client timed out".into()));
    let server = match tokio::time::timeout(limit, server_side).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(join.to_string()),
        Err(_) => Err("server timed out".into()),
    };
    Outcome { server, client }
}

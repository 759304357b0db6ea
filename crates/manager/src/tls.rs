//! The manager's one port: TLS (ca-pki's configs, client certificates optional so that joining
//! nodes can reach the CA) under tonic, with each connection's verified peer identity attached
//! to every request, and role and revocation checks per service. The client side is
//! `shoal_api::connect`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use shoal_ca_pki::{NodeIdentity, RemovedNodes, Role, peer_identity};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::transport::server::Connected;
use tonic::{Request, Status};

use crate::objects::ObjectStore;

/// Who is on the other end of a connection, attached to each of its requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The remote address.
    pub addr: SocketAddr,
    /// The verified certificate identity; `None` for a node without a certificate (joining).
    pub identity: Option<NodeIdentity>,
}

/// A TLS connection carrying its peer's identity.
#[derive(Debug)]
pub(crate) struct PeerStream {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts connections on `listener` and completes their TLS handshakes (each on its own task,
/// so a slow or hostile client cannot hold up others); the stream yields established ones.
pub(crate) fn incoming(
    listener: TcpListener,
    mut tls: rustls::ServerConfig,
) -> tokio_stream::wrappers::ReceiverStream<Result<PeerStream, std::io::Error>> {
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            // The server dropping its end (shutdown) ends the loop and closes the listener at
            // once, not at the next connection attempt: the port is free for a restart.
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, addr) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, conn_tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp).into_fallible()).await {
                    Ok(Ok(stream)) => {
                        let identity = peer_identity(stream.get_ref().1.peer_certificates()).ok();
                        let _ = conn_tx.send(Ok(PeerStream { inner: stream, info: PeerInfo { addr, identity } })).await;
                    }
                    Ok(Err((err, tcp))) => {
                        if is_revoked(&err) {
                            tracing::info!(
                                peer = %addr,
                                "tls handshake refused: the client's certificate is revoked (a removed node or a \
                                 revoked admin bundle)"
                            );
                        } else {
                            tracing::debug!(peer = %addr, error = %err, "tls handshake refused");
                        }
                        close_after_alert(tcp).await;
                    }
                    Err(_) => tracing::debug!(peer = %addr, "tls handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Closes a connection whose handshake failed so that the client reads the alert saying why. A
/// TLS 1.3 client has sent its first request by the time the server checks its certificate;
/// closing with that request unread would make the kernel send a reset, which can reach the
/// client before it has read the alert ("connection reset" instead of "certificate revoked").
/// So: end the sending side, and read what the client sends until it closes (at most a second).
async fn close_after_alert(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let _ = tcp.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Whether a handshake failed because ca-pki refused a revoked certificate.
fn is_revoked(err: &std::io::Error) -> bool {
    matches!(
        err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked))
    )
}

/// The caller's identity, or `Unauthenticated` for a caller without a certificate.
pub(crate) fn caller<T>(request: &Request<T>) -> Result<NodeIdentity, Status> {
    request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.identity.clone())
        .ok_or_else(|| Status::unauthenticated("this call needs a node certificate; join the cluster first"))
}

/// The common name of admin client bundles starts with this. Node IDs are base36 and never
/// contain '-', and the CA alone decides common names, so the prefix cannot be claimed by a node.
pub(crate) const ADMIN_PREFIX: &str = "admin-";

/// Whether `identity` is an admin client bundle (a manager-role certificate that is no node).
pub(crate) fn is_admin(identity: &NodeIdentity) -> bool {
    identity.role == Role::Manager && identity.node_id.starts_with(ADMIN_PREFIX)
}

/// Who may call a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Callers {
    /// Manager nodes and admin bundles (the control API).
    ManagersAndAdmins,
    /// Manager nodes only (the Raft transport).
    Managers,
    /// Any node, manager or worker, but no admin bundle (the dispatcher).
    Nodes,
}

/// An interceptor admitting only `callers`, and none whose identity is in `revoked` (the set
/// the TLS handshake consults: a connection opened before a revocation stays open, but each of
/// its calls is refused).
pub(crate) fn require(
    service: &'static str,
    callers: Callers,
    revoked: RemovedNodes,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |request: Request<()>| {
        let identity = caller(&request)?;
        if revoked.contains(&identity.node_id) {
            return Err(crate::revocation::refused(&identity));
        }
        let admin = is_admin(&identity);
        let allowed = match callers {
            Callers::ManagersAndAdmins => identity.role == Role::Manager,
            Callers::Managers => identity.role == Role::Manager && !admin,
            Callers::Nodes => !admin,
        };
        if allowed {
            Ok(request)
        } else if admin {
            Err(Status::permission_denied(format!("{service} is for cluster nodes, not for admin clients")))
        } else {
            let roles: &[Role] = match callers {
                Callers::ManagersAndAdmins | Callers::Managers => &[Role::Manager],
                Callers::Nodes => &[Role::Manager, Role::Worker],
            };
            let wanted: Vec<&str> = roles.iter().map(|r| role_word(*r)).collect();
            Err(Status::permission_denied(format!(
                "{service} needs a {} certificate; node {} is a {}",
                wanted.join(" or "),
                identity.node_id,
                role_word(identity.role)
            )))
        }
    }
}

/// A service that refuses, before each call, a caller the cluster revoked, as the cluster has it
/// now ([`crate::revocation::check`], a linearizable read): this covers a manager whose store
/// (and so its set of revoked identities) is behind. For the control API, where a read per call
/// costs little; not for the Raft transport, which cannot wait for a quorum.
#[derive(Debug, Clone)]
pub(crate) struct RefuseRevoked<S> {
    inner: S,
    objects: ObjectStore,
}

impl<S> RefuseRevoked<S> {
    /// Checks each caller of `inner` against the revocations in `objects`.
    pub(crate) fn new(inner: S, objects: ObjectStore) -> Self {
        Self { inner, objects }
    }
}

impl<S> Service<http::Request<Body>> for RefuseRevoked<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The service that was made ready is the one to call; a clone takes its place.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let identity = request.extensions().get::<PeerInfo>().and_then(|p| p.identity.clone());
        let objects = self.objects.clone();
        Box::pin(async move {
            if let Some(identity) = identity
                && let Err(status) = crate::revocation::check(&objects, &identity).await
            {
                return Ok(status.into_http());
            }
            inner.call(request).await
        })
    }
}

impl<S: NamedService> NamedService for RefuseRevoked<S> {
    const NAME: &'static str = S::NAME;
}

pub(crate) fn role_word(role: Role) -> &'static str {
    match role {
        Role::Manager => "manager",
        Role::Worker => "worker",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_connection_stream_frees_the_port() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("tls versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new()));
        drop(incoming(listener, tls));
        tokio::time::timeout(Duration::from_secs(5), async {
            while TcpListener::bind(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the port is free again without another connection");
    }
}

//! The gRPC transport (feature `grpc`): tonic over rustls, with TLS configurations that the
//! caller builds (for Shoal, `ca-pki` gives mutual-TLS configs that admit only managers).
//!
//! Client side: [`GrpcTransport`] keeps one HTTP/2 channel per member address and streams
//! snapshots in chunks. Server side: [`service`] gives the tonic service to mount next to others
//! on one port, or [`serve`] runs it alone on a listener.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::Context;
use std::task::Poll;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::io::ReadBuf;
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tonic::transport::Channel;
use tonic::transport::Endpoint;
use tonic::transport::Uri;
use tonic::transport::server::Connected;

use crate::error::TransportError;
use crate::network::MessageKind;
use crate::network::Transport;
use crate::store::Store;
use crate::types::NodeId;

/// Code generated from `proto/shoal/v1/raft.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("shoal.v1");
}

use proto::RaftMessage;
use proto::RaftReply;
use proto::SnapshotChunk;
use proto::raft_transport_client::RaftTransportClient;
use proto::raft_transport_server::RaftTransport;
use proto::raft_transport_server::RaftTransportServer;

/// Snapshots travel in chunks of this many bytes.
const CHUNK_BYTES: usize = 1 << 20;
/// Largest single message accepted (log batches are bounded by openraft's payload limits).
const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// The largest snapshot [`service`] and [`serve`] accept, in bytes (1 GiB): the chunks are
/// gathered in memory before the snapshot is installed, so a sender must not be able to make
/// them grow without end. Far above the state a Shoal manager keeps; a store that outgrows it
/// mounts [`service_with_snapshot_limit`] with a larger one.
pub const MAX_SNAPSHOT_BYTES: usize = 1 << 30;
/// How long an accepted connection may take to complete its TLS handshake in [`serve`] before
/// it is dropped, so connections that never speak do not pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Setting up or running the gRPC transport failed.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The TLS server name is not a valid DNS name or IP address.
    #[error("invalid tls server name {name:?}: {reason}")]
    ServerName {
        /// The name given.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The server failed.
    #[error("raft grpc server on {addr} failed: {reason}")]
    Serve {
        /// The listening address.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// Sends messages to other members over gRPC with TLS.
#[derive(Clone)]
pub struct GrpcTransport {
    tls: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
    connect_timeout: Duration,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl std::fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTransport").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl GrpcTransport {
    /// A transport that connects with `client_config` and expects every member's certificate to
    /// be valid for `server_name` (for Shoal managers, the role name `ca-pki` puts in the SAN).
    pub fn new(client_config: Arc<rustls::ClientConfig>, server_name: &str) -> Result<Self, GrpcError> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| GrpcError::ServerName { name: server_name.to_owned(), reason: e.to_string() })?;
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(client_config),
            server_name,
            connect_timeout: Duration::from_secs(2),
            channels: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// The transport as the trait object [`Store::open`] takes.
    pub fn into_transport(self) -> Arc<dyn Transport> {
        Arc::new(self)
    }

    async fn channel(&self, target: NodeId, addr: &str) -> Result<Channel, TransportError> {
        let cached = self.channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(addr).cloned();
        if let Some(ch) = cached {
            return Ok(ch);
        }
        let unreachable = |reason: String| TransportError::Unreachable { target, addr: addr.to_owned(), reason };
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| unreachable(format!("invalid address: {e}")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10));
        let connector = TlsConnect { tls: self.tls.clone(), server_name: self.server_name.clone() };
        // Connecting eagerly: a failure here means nothing was sent, so it is "unreachable".
        let channel = endpoint.connect_with_connector(connector).await.map_err(|e| unreachable(e.to_string()))?;
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    fn forget(&self, addr: &str) {
        self.channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(addr);
    }
}

fn status_error(target: NodeId, status: tonic::Status) -> TransportError {
    match status.code() {
        // The server's handler answered: the message arrived and was refused.
        tonic::Code::Internal | tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
            TransportError::Remote { target, reason: status.message().to_owned() }
        }
        _ => TransportError::NoAnswer { target, reason: format!("{}: {}", status.code(), status.message()) },
    }
}

impl Transport for GrpcTransport {
    fn send(
        &self,
        from: NodeId,
        target: NodeId,
        addr: &str,
        kind: MessageKind,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let this = self.clone();
        let addr = addr.to_owned();
        Box::pin(async move {
            let channel = this.channel(target, &addr).await?;
            let mut client = RaftTransportClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            let result = if kind == MessageKind::InstallSnapshot {
                let total = payload.len();
                let mut chunks: Vec<SnapshotChunk> = payload
                    .chunks(CHUNK_BYTES)
                    .map(|c| SnapshotChunk { from: 0, target: 0, data: c.to_vec() })
                    .collect();
                if chunks.is_empty() {
                    chunks.push(SnapshotChunk { from: 0, target: 0, data: Vec::new() });
                }
                if let Some(first) = chunks.first_mut() {
                    first.from = from;
                    first.target = target;
                }
                tracing::debug!(
                    target.id = target,
                    snapshot.bytes = total,
                    snapshot.chunks = chunks.len(),
                    "streaming snapshot"
                );
                client.install_snapshot(futures::stream::iter(chunks)).await
            } else {
                client.call(RaftMessage { from, target, kind: kind.as_str().to_owned(), payload }).await
            };
            match result {
                Ok(reply) => Ok(reply.into_inner().payload),
                Err(status) => {
                    if status.code() == tonic::Code::Unavailable {
                        this.forget(&addr);
                    }
                    Err(status_error(target, status))
                }
            }
        })
    }
}

/// Opens TCP + TLS connections for tonic's channel.
#[derive(Clone)]
struct TlsConnect {
    tls: tokio_rustls::TlsConnector,
    server_name: ServerName<'static>,
}

impl tonic::codegen::Service<Uri> for TlsConnect {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| std::io::Error::other(format!("no host in {uri}")))?;
            let port = uri.port_u16().ok_or_else(|| std::io::Error::other(format!("no port in {uri}")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let tls = this.tls.connect(this.server_name.clone(), tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// The server side: hands each message to the local [`Store`].
#[derive(Debug, Clone)]
pub struct RaftService {
    store: Store,
    max_snapshot_bytes: usize,
}

/// The tonic service for `store`, to mount on a server with the other services of the node;
/// it accepts snapshots of up to [`MAX_SNAPSHOT_BYTES`].
///
/// Authorisation is the TLS layer's: the server's rustls config must only admit members.
pub fn service(store: Store) -> RaftTransportServer<RaftService> {
    service_with_snapshot_limit(store, MAX_SNAPSHOT_BYTES)
}

/// [`service`] accepting snapshots of up to `max_snapshot_bytes`; a larger one is refused with
/// `RESOURCE_EXHAUSTED` naming the limit.
pub fn service_with_snapshot_limit(store: Store, max_snapshot_bytes: usize) -> RaftTransportServer<RaftService> {
    RaftTransportServer::new(RaftService { store, max_snapshot_bytes })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Gathers a snapshot's chunks for member `me`, refusing one addressed to another member or
/// larger than `limit` bytes.
async fn collect_snapshot(
    mut stream: impl futures::Stream<Item = Result<SnapshotChunk, tonic::Status>> + Unpin,
    me: NodeId,
    limit: usize,
) -> Result<Vec<u8>, tonic::Status> {
    let mut data = Vec::new();
    let mut from = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let sender = match from {
            Some(sender) => sender,
            None => {
                if chunk.target != me {
                    return Err(tonic::Status::failed_precondition(format!(
                        "snapshot for node {} reached node {me}",
                        chunk.target
                    )));
                }
                *from.insert(chunk.from)
            }
        };
        if data.len().saturating_add(chunk.data.len()) > limit {
            return Err(tonic::Status::resource_exhausted(format!(
                "snapshot from node {sender} to node {me} is larger than the limit of {limit} bytes \
                 ({} bytes received); raise the limit with grpc::service_with_snapshot_limit on node {me}",
                data.len() + chunk.data.len()
            )));
        }
        data.extend_from_slice(&chunk.data);
    }
    Ok(data)
}

fn handle_error(e: crate::error::HandleError) -> tonic::Status {
    match e {
        crate::error::HandleError::Malformed { .. } => tonic::Status::invalid_argument(e.to_string()),
        crate::error::HandleError::Failed { .. } => tonic::Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn call(&self, request: tonic::Request<RaftMessage>) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let msg = request.into_inner();
        if msg.target != self.store.id() {
            return Err(tonic::Status::failed_precondition(format!(
                "message for node {} reached node {}",
                msg.target,
                self.store.id()
            )));
        }
        let kind = MessageKind::from_name(&msg.kind)
            .ok_or_else(|| tonic::Status::invalid_argument(format!("unknown message kind {:?}", msg.kind)))?;
        let payload = self.store.handle(kind, msg.payload).await.map_err(handle_error)?;
        Ok(tonic::Response::new(RaftReply { payload }))
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let data = collect_snapshot(request.into_inner(), self.store.id(), self.max_snapshot_bytes).await?;
        let payload = self.store.handle(MessageKind::InstallSnapshot, data).await.map_err(handle_error)?;
        Ok(tonic::Response::new(RaftReply { payload }))
    }
}

/// A TLS stream that tonic's server accepts.
struct ServerTls(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for ServerTls {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for ServerTls {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerTls {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepts connections on `listener` and hands each to `tx` once its TLS handshake completes;
/// handshakes run concurrently, and one that fails or takes longer than `handshake_timeout`
/// only drops its connection.
async fn accept_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
    tx: tokio::sync::mpsc::Sender<std::io::Result<ServerTls>>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "raft grpc accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send(Ok(ServerTls(tls))).await;
                }
                Ok(Err(e)) => tracing::warn!(peer = %peer, error = %e, "raft grpc tls handshake failed"),
                Err(_) => tracing::warn!(
                    peer = %peer,
                    timeout = ?handshake_timeout,
                    "raft grpc tls handshake timed out; connection dropped"
                ),
            }
        });
    }
}

/// Serves the Raft transport of `store` alone on `listener` with `tls` until `shutdown`
/// completes. Handshakes run concurrently; a failed handshake, or one not done within 10 s,
/// only drops that connection.
pub async fn serve(
    store: Store,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GrpcError> {
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<ServerTls>>(64);
    let accept_loop = tokio::spawn(accept_tls(listener, tokio_rustls::TlsAcceptor::from(tls), HANDSHAKE_TIMEOUT, tx));
    let incoming = tokio_stream::wrappers::ReceiverStream::new(rx);
    let result = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(service(store))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| GrpcError::Serve { addr, reason: e.to_string() });
    accept_loop.abort();
    result
}

#[cfg(test)]
mod tests;

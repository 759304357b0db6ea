//! A gRPC channel to a manager over TLS, shared by every client of the manager port (the CLI,
//! agents, other managers): the connection is TLS with the caller's rustls config, verified
//! against the manager role's name, never the address.
//!
//! A connection is handed to gRPC only once the manager has spoken (its HTTP/2 settings, which
//! it sends at once). In TLS 1.3 the client's side of the handshake ends before the server has
//! checked the client's certificate, so a refusal — a revoked certificate, say — arrives as an
//! alert on the first read; read here, it is the connection's error, with its reason, rather
//! than a call's "connection closed".

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The name every manager certificate carries (ca-pki's `server_name(Role::Manager)`).
const MANAGER_SERVER_NAME: &str = "shoal-manager";

/// Opens a channel to the manager at `addr` (HOST:PORT) with `tls`.
pub async fn connect(addr: &str, tls: rustls::ClientConfig) -> Result<Channel, tonic::transport::Error> {
    connect_named(addr, tls, MANAGER_SERVER_NAME).await
}

/// [`connect`] to a server whose certificate carries `server_name` instead of a manager's (a
/// locked manager's, ca-pki's `LOCKED_SERVER_NAME`).
pub async fn connect_named(
    addr: &str,
    mut tls: rustls::ClientConfig,
    server_name: &'static str,
) -> Result<Channel, tonic::transport::Error> {
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    // The URI only carries the address: TLS is done by the connector below, so "http" it is.
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10));
    endpoint
        .connect_with_connector(tower::service_fn(move |uri: Uri| {
            let connector = connector.clone();
            async move {
                let host = uri.host().unwrap_or_default().trim_matches(['[', ']']).to_owned();
                let port = uri.port_u16().unwrap_or(2377);
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let name = rustls::pki_types::ServerName::try_from(server_name)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(Spoken::first_read(tls).await?))
            }
        }))
        .await
}

/// A stream whose server has spoken: what it said first is kept and read before the rest.
#[derive(Debug)]
struct Spoken<S> {
    inner: S,
    first: Vec<u8>,
    read: usize,
}

impl<S: AsyncRead + Unpin> Spoken<S> {
    /// Waits for the server's first bytes; a refusal of the handshake is the error.
    async fn first_read(mut inner: S) -> std::io::Result<Self> {
        let mut first = vec![0; 4096];
        let n = inner.read(&mut first).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the manager closed the connection before it spoke",
            ));
        }
        first.truncate(n);
        Ok(Self { inner, first, read: 0 })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Spoken<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.read < this.first.len() {
            let n = buf.remaining().min(this.first.len() - this.read);
            buf.put_slice(&this.first[this.read..this.read + n]);
            this.read += n;
            if this.read == this.first.len() {
                this.first = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Spoken<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

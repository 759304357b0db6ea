//! A gRPC channel to a manager over TLS, shared by every client of the manager port (the CLI,
//! agents, other managers): the connection is TLS with the caller's rustls config, verified
//! against the manager role's name, never the address.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The name every manager certificate carries (ca-pki's `server_name(Role::Manager)`).
const MANAGER_SERVER_NAME: &str = "shoal-manager";

/// Opens a channel to the manager at `addr` (HOST:PORT) with `tls`.
pub async fn connect(addr: &str, mut tls: rustls::ClientConfig) -> Result<Channel, tonic::transport::Error> {
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
                let name = rustls::pki_types::ServerName::try_from(MANAGER_SERVER_NAME)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
}

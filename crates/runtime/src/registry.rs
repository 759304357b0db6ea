//! A small OCI distribution client: manifests and blobs over HTTP/1.1 (hyper), HTTPS with
//! rustls on ring, plain HTTP only for registries the caller marks insecure; bearer-token and
//! basic authentication; redirects for blobs served from elsewhere.
//!
//! Every step is bounded: a registry that stalls (connect, TLS handshake, response headers, or
//! a body that stops moving) fails the pull after a timeout instead of holding it for ever, and
//! bodies read into memory (manifests, indexes, tokens, error pages) have a size cap, so a
//! hostile registry cannot exhaust the agent's memory. Blobs are streamed, not buffered; the
//! caller bounds them by their descriptor's size.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode, Uri, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::error::ImageError;
use crate::reference::Reference;
use crate::spec::Credentials;

/// Media types a manifest request accepts, most specific first.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index a pull accepts (containerd's Go client uses the same limit).
pub(crate) const MANIFEST_LIMIT: usize = 4 << 20;
/// Largest token-service answer a pull accepts.
const TOKEN_LIMIT: usize = 1 << 20;
/// How much of an error answer is read, to quote the start of it.
const EXCERPT_LIMIT: usize = 4 << 10;

/// How long a registry may take at each step before a pull gives up on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timeouts {
    /// TCP connect, and again the TLS handshake.
    pub(crate) connect: Duration,
    /// From sending a request to the end of the response headers.
    pub(crate) response: Duration,
    /// Longest pause between two parts of a body (manifests, tokens and blobs alike).
    pub(crate) idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect: Duration::from_secs(30), response: Duration::from_secs(60), idle: Duration::from_secs(60) }
    }
}

/// The pull session for one repository: where to connect and which credentials to present.
pub(crate) struct Session<'a> {
    client: &'a RegistryClient,
    reference: &'a Reference,
    credentials: Option<&'a Credentials>,
    authorization: Option<String>,
}

/// Connection settings shared by pulls.
pub(crate) struct RegistryClient {
    tls: Arc<rustls::ClientConfig>,
    insecure: Vec<String>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("insecure", &self.insecure)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// `insecure` lists `host[:port]` registries reached over plain HTTP.
    pub(crate) fn new(insecure: Vec<String>) -> Self {
        Self { tls: Arc::new(tls_config()), insecure, timeouts: Timeouts::default() }
    }

    /// A client with other timeouts (tests use short ones).
    #[cfg(test)]
    pub(crate) fn with_timeouts(insecure: Vec<String>, timeouts: Timeouts) -> Self {
        Self { timeouts, ..Self::new(insecure) }
    }

    /// The longest pause allowed between two parts of a body.
    pub(crate) fn idle_timeout(&self) -> Duration {
        self.timeouts.idle
    }

    pub(crate) fn session<'a>(&'a self, reference: &'a Reference, credentials: Option<&'a Credentials>) -> Session<'a> {
        Session { client: self, reference, credentials, authorization: None }
    }
}

/// Asks registries which manifest a tag names now, without pulling anything (docker's
/// "distribution inspect"): what a client pins a service to, so that every node runs the same
/// image even if the tag moves (`shoal stack deploy --resolve-image`).
#[derive(Debug)]
pub struct Registry {
    client: RegistryClient,
}

impl Registry {
    /// `insecure_registries` lists `host[:port]` registries reached over plain HTTP.
    pub fn new(insecure_registries: Vec<String>) -> Self {
        Self { client: RegistryClient::new(insecure_registries) }
    }

    /// The digest (`sha256:…`) of the manifest or index `reference` names: its own digest
    /// when it has one (no request is made), else the SHA-256 of what the registry serves for
    /// its tag.
    pub async fn digest(&self, reference: &Reference, credentials: Option<&Credentials>) -> Result<String, ImageError> {
        if let Some(digest) = &reference.digest {
            return Ok(digest.clone());
        }
        let (_, body) = self.client.session(reference, credentials).manifest(reference.object()).await?;
        Ok(crate::containerd::sha256(&body))
    }
}

/// Roots from the system bundle (Debian's ca-certificates) when present.
fn tls_config() -> rustls::ClientConfig {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for bundle in ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"] {
        if let Ok(certs) = CertificateDer::pem_file_iter(bundle) {
            for cert in certs.flatten() {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    match rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions() {
        Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
        // ring supports the default protocol versions; this arm keeps a build-time fact out of
        // the error path by falling back to rustls' own defaults.
        Err(_) => {
            rustls::ClientConfig::builder().with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth()
        }
    }
}

impl Session<'_> {
    fn fail(&self, reason: impl Into<String>) -> ImageError {
        ImageError::Registry {
            registry: self.reference.registry.clone(),
            reference: self.reference.to_string(),
            reason: reason.into(),
        }
    }

    fn base(&self) -> String {
        let host = self.reference.endpoint_host();
        let scheme = if self.client.insecure.iter().any(|h| h == &self.reference.registry) { "http" } else { "https" };
        format!("{scheme}://{host}/v2/{}", self.reference.repository)
    }

    /// Fetches a manifest (by tag or digest); returns its media type and bytes.
    pub(crate) async fn manifest(&mut self, object: &str) -> Result<(String, Bytes), ImageError> {
        let url = format!("{}/manifests/{object}", self.base());
        let response = self.get(&url, Some(MANIFEST_ACCEPT)).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(ImageError::NotFound { reference: self.reference.to_string() });
        }
        let response = self.expect_ok(response, &url).await?;
        let media_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .unwrap_or_default();
        let body = read_limited(response.into_body(), MANIFEST_LIMIT, self.client.timeouts.idle)
            .await
            .map_err(|e| self.fail(format!("read manifest {object} from {url}: {e}")))?;
        Ok((media_type, body))
    }

    /// Opens a blob for streaming.
    pub(crate) async fn blob(&mut self, digest: &str) -> Result<Incoming, ImageError> {
        let url = format!("{}/blobs/{digest}", self.base());
        let response = self.get(&url, None).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(ImageError::Invalid {
                reference: self.reference.to_string(),
                reason: format!("registry has no blob {digest} that the manifest lists"),
            });
        }
        Ok(self.expect_ok(response, &url).await?.into_body())
    }

    async fn expect_ok(&self, response: Response<Incoming>, url: &str) -> Result<Response<Incoming>, ImageError> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = read_prefix(response.into_body(), EXCERPT_LIMIT, self.client.timeouts.idle).await;
        let excerpt: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        Err(self.fail(format!("GET {url}: {status}: {}", excerpt.trim())))
    }

    /// GET with authentication (answering one 401 challenge) and up to five redirects.
    async fn get(&mut self, url: &str, accept: Option<&str>) -> Result<Response<Incoming>, ImageError> {
        let mut url = url.to_owned();
        let mut challenged = false;
        // Credentials go only to the origin (scheme and host) they were meant for: not to a CDN
        // a blob redirects to, and not over plain HTTP after a redirect from HTTPS.
        let mut same_origin = true;
        for _ in 0..6 {
            let auth = if same_origin { self.authorization.clone() } else { None };
            let response = self.send(&url, accept, auth.as_deref()).await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && same_origin && !challenged {
                challenged = true;
                let challenge = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                self.authorization = Some(self.authenticate(&challenge).await?);
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(ImageError::Unauthorized {
                    registry: self.reference.registry.clone(),
                    reference: self.reference.to_string(),
                    reason: format!(
                        "{status}{}",
                        if self.credentials.is_none() { " (no credentials given)" } else { "" }
                    ),
                });
            }
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| self.fail(format!("{status} without a Location from {url}")))?;
                let next = resolve(&url, location);
                same_origin = origin_of(&next) == origin_of(&url) && same_origin;
                url = next;
                continue;
            }
            return Ok(response);
        }
        Err(self.fail(format!("too many redirects or challenges fetching {url}")))
    }

    /// Answers a `WWW-Authenticate` challenge; returns the `Authorization` header value.
    async fn authenticate(&self, challenge: &str) -> Result<String, ImageError> {
        let (scheme, params) = challenge.split_once(' ').unwrap_or((challenge, ""));
        let basic =
            self.credentials.map(|c| format!("Basic {}", base64(format!("{}:{}", c.username, c.password).as_bytes())));
        if scheme.eq_ignore_ascii_case("basic") {
            return basic.ok_or_else(|| ImageError::Unauthorized {
                registry: self.reference.registry.clone(),
                reference: self.reference.to_string(),
                reason: "registry asks for basic credentials and none were given".to_owned(),
            });
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(self.fail(format!("unsupported authentication challenge {challenge:?}")));
        }
        let param = |name: &str| challenge_param(params, name);
        let realm =
            param("realm").ok_or_else(|| self.fail(format!("bearer challenge without realm: {challenge:?}")))?;
        let mut token_url = realm.clone();
        let mut sep = if realm.contains('?') { '&' } else { '?' };
        if let Some(service) = param("service") {
            token_url.push_str(&format!("{sep}service={}", url_encode(&service)));
            sep = '&';
        }
        let scope = param("scope").unwrap_or_else(|| format!("repository:{}:pull", self.reference.repository));
        token_url.push_str(&format!("{sep}scope={}", url_encode(&scope)));
        let insecure = self.client.insecure.iter().any(|h| h == &self.reference.registry);
        if basic.is_some() && !insecure && !realm.starts_with("https://") {
            return Err(ImageError::Unauthorized {
                registry: self.reference.registry.clone(),
                reference: self.reference.to_string(),
                reason: format!(
                    "token service {realm} is not HTTPS: refusing to send credentials in the clear \
                     (list the registry as insecure if that is intended)"
                ),
            });
        }
        let response = self.send(&token_url, None, basic.as_deref()).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(ImageError::Unauthorized {
                registry: self.reference.registry.clone(),
                reference: self.reference.to_string(),
                reason: format!("token service {realm} answered {status}"),
            });
        }
        let body = read_limited(response.into_body(), TOKEN_LIMIT, self.client.timeouts.idle)
            .await
            .map_err(|e| self.fail(format!("read token from {realm}: {e}")))?;
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| self.fail(format!("token service {realm}: invalid JSON: {e}")))?;
        let token = json["token"].as_str().or_else(|| json["access_token"].as_str());
        token
            .map(|t| format!("Bearer {t}"))
            .ok_or_else(|| self.fail(format!("token service {realm} returned no token")))
    }

    /// One request on a fresh connection.
    async fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        auth: Option<&str>,
    ) -> Result<Response<Incoming>, ImageError> {
        let uri: Uri = url.parse().map_err(|e| self.fail(format!("invalid URL {url}: {e}")))?;
        let host = uri.host().ok_or_else(|| self.fail(format!("URL without host: {url}")))?.to_owned();
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let timeouts = self.client.timeouts;
        let tcp = tokio::time::timeout(timeouts.connect, TcpStream::connect((host.as_str(), port)))
            .await
            .map_err(|_| {
                self.fail(format!(
                    "connect {host}:{port}: no connection within {} (is the registry up and reachable from this node?)",
                    human(timeouts.connect)
                ))
            })?
            .map_err(|e| self.fail(format!("connect {host}:{port}: {e}")))?;
        let mut request = Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(header::HOST, uri.authority().map_or(host.as_str(), |a| a.as_str()))
            .header(header::USER_AGENT, concat!("shoal-runtime/", env!("CARGO_PKG_VERSION")));
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|e| self.fail(format!("build request: {e}")))?;
        let result = if https {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| self.fail(format!("invalid TLS server name {host}: {e}")))?;
            let handshake = tokio_rustls::TlsConnector::from(self.client.tls.clone()).connect(name, tcp);
            let tls = tokio::time::timeout(timeouts.connect, handshake)
                .await
                .map_err(|_| {
                    self.fail(format!(
                        "TLS handshake with {host}:{port}: no answer within {} (does it speak HTTPS? \
                         list it in insecure registries if it serves plain HTTP)",
                        human(timeouts.connect)
                    ))
                })?
                .map_err(|e| self.fail(format!("TLS handshake with {host}:{port}: {e}")))?;
            tokio::time::timeout(timeouts.response, roundtrip(TokioIo::new(tls), request)).await
        } else {
            tokio::time::timeout(timeouts.response, roundtrip(TokioIo::new(tcp), request)).await
        };
        // Dropping the unfinished exchange also ends its connection (hyper closes it once the
        // response can no longer be delivered).
        result
            .map_err(|_| {
                self.fail(format!(
                    "GET {url}: no response within {} (the registry accepted the connection but did not answer)",
                    human(timeouts.response)
                ))
            })?
            .map_err(|e| self.fail(format!("GET {url}: {e}")))
    }
}

async fn roundtrip<T>(io: T, request: Request<Empty<Bytes>>) -> Result<Response<Incoming>, hyper::Error>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "registry connection closed with an error");
        }
    });
    sender.send_request(request).await
}

/// The next data of `body`, waiting at most `idle` for it; `None` at its end.
pub(crate) async fn next_data(body: &mut Incoming, idle: Duration) -> Result<Option<Bytes>, String> {
    loop {
        match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => {
                return Err(format!(
                    "the registry sent nothing for {} in the middle of a body (is it overloaded, or the network down?)",
                    human(idle)
                ));
            }
            Ok(None) => return Ok(None),
            Ok(Some(Err(err))) => return Err(format!("download interrupted: {err}")),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// A whole body of at most `limit` bytes.
async fn read_limited(mut body: Incoming, limit: usize, idle: Duration) -> Result<Bytes, String> {
    let mut bytes = Vec::new();
    while let Some(data) = next_data(&mut body, idle).await? {
        if bytes.len() + data.len() > limit {
            return Err(format!(
                "answer is larger than {limit} bytes, the most accepted: refusing it (is this really a registry?)"
            ));
        }
        bytes.extend_from_slice(&data);
    }
    Ok(Bytes::from(bytes))
}

/// The first `limit` bytes of a body (or less, if it ends, fails or stalls first).
async fn read_prefix(mut body: Incoming, limit: usize, idle: Duration) -> Vec<u8> {
    let mut bytes = Vec::new();
    while bytes.len() < limit {
        match next_data(&mut body, idle).await {
            Ok(Some(data)) => bytes.extend_from_slice(&data[..data.len().min(limit - bytes.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    bytes
}

/// `300 ms`, `60 s`.
fn human(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{} s", duration.as_secs())
    } else {
        format!("{} ms", duration.as_millis())
    }
}

fn challenge_param(params: &str, name: &str) -> Option<String> {
    // key="value" pairs separated by commas; values may contain commas inside quotes.
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], quoted[end + 1..].trim_start().trim_start_matches(','))
        } else {
            match after.split_once(',') {
                Some((v, r)) => (v, r),
                None => (after, ""),
            }
        };
        if key.trim().eq_ignore_ascii_case(name) {
            return Some(value.to_owned());
        }
        rest = remainder.trim();
    }
    None
}

fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let origin_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[origin_end..].find('/').map_or(base.len(), |i| origin_end + i);
    format!(
        "{}{}",
        &base[..path_start],
        if location.starts_with('/') { location.to_owned() } else { format!("/{location}") }
    )
}

/// The scheme and authority of a URL (`https://host:port`).
fn origin_of(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    &url[..end]
}

fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A registry on 127.0.0.1 that misbehaves on purpose, for tests of the limits above.
#[cfg(test)]
pub(crate) mod fake {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::sync::mpsc;

    use super::{RegistryClient, Timeouts};
    use crate::reference::Reference;

    /// Short timeouts, so that a stalled step fails in a fraction of a second.
    pub(crate) const SHORT: Duration = Duration::from_millis(300);

    /// A server that answers every connection by writing `reply` (nothing at all if empty) and
    /// then holding the connection open until the client closes it; each close is reported on
    /// the returned channel, so a test can check that a client gave up without leaking it.
    pub(crate) struct FakeRegistry {
        pub(crate) addr: SocketAddr,
        pub(crate) closed: mpsc::UnboundedReceiver<()>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for FakeRegistry {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl FakeRegistry {
        pub(crate) async fn start(reply: Vec<u8>) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a local port");
            let addr = listener.local_addr().expect("local address");
            let (tx, closed) = mpsc::unbounded_channel();
            let task = tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let (reply, tx) = (reply.clone(), tx.clone());
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 8192];
                        let mut request = Vec::new();
                        // Read the request head (a TLS ClientHello has none: then read on).
                        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf).await {
                                Ok(0) | Err(_) => {
                                    let _ = tx.send(());
                                    return;
                                }
                                Ok(n) => request.extend_from_slice(&buf[..n]),
                            }
                        }
                        if !reply.is_empty() {
                            let _ = stream.write_all(&reply).await;
                        }
                        while let Ok(n) = stream.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                        let _ = tx.send(());
                    });
                }
            });
            Self { addr, closed, task }
        }

        /// A reference to repository `test/image` on this registry.
        pub(crate) fn reference(&self) -> Reference {
            Reference::parse(&format!("{}/test/image:v1", self.addr)).expect("reference")
        }

        /// A client with short timeouts that reaches this registry over plain HTTP.
        pub(crate) fn client(&self) -> RegistryClient {
            RegistryClient::with_timeouts(
                vec![self.addr.to_string()],
                Timeouts { connect: SHORT, response: SHORT, idle: SHORT },
            )
        }

        /// Waits (a little) for the client to close its connection.
        pub(crate) async fn client_closed(&mut self) -> bool {
            tokio::time::timeout(Duration::from_secs(5), self.closed.recv()).await.is_ok_and(|c| c.is_some())
        }
    }

    /// Response headers announcing `length` bytes of `content_type`.
    pub(crate) fn head(status: &str, content_type: &str, length: usize) -> Vec<u8> {
        format!("HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n").into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{FakeRegistry, head};
    use super::*;

    const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

    /// Fetches the manifest of the fake registry's image; returns the error, timed.
    async fn manifest_error(registry: &FakeRegistry, https: bool) -> (String, Duration) {
        let client = if https {
            RegistryClient::with_timeouts(
                Vec::new(),
                Timeouts { connect: fake::SHORT, response: fake::SHORT, idle: fake::SHORT },
            )
        } else {
            registry.client()
        };
        let reference = registry.reference();
        let mut session = client.session(&reference, None);
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(10), session.manifest("v1"))
            .await
            .expect("the client gives up on its own, well before 10 s");
        let err = result.expect_err("a misbehaving registry fails the fetch");
        (err.to_string(), started.elapsed())
    }

    #[tokio::test]
    async fn a_registry_that_never_answers_times_out() {
        let mut registry = FakeRegistry::start(Vec::new()).await;
        let (err, took) = manifest_error(&registry, false).await;
        let url = format!("http://{}/v2/test/image/manifests/v1", registry.addr);
        assert_eq!(
            err,
            format!(
                "pull {}/test/image:v1 from {}: GET {url}: no response within 300 ms \
                 (the registry accepted the connection but did not answer)",
                registry.addr, registry.addr
            )
        );
        // It waited its timeout (the outer 10 s bound shows it gave up on its own).
        assert!(took >= fake::SHORT, "{took:?}");
        assert!(registry.client_closed().await, "the abandoned connection is closed");
    }

    #[tokio::test]
    async fn a_stalled_tls_handshake_times_out() {
        let mut registry = FakeRegistry::start(Vec::new()).await;
        let (err, _) = manifest_error(&registry, true).await;
        assert!(
            err.ends_with(&format!(
                "TLS handshake with 127.0.0.1:{}: no answer within 300 ms (does it speak HTTPS? \
                 list it in insecure registries if it serves plain HTTP)",
                registry.addr.port()
            )),
            "{err}"
        );
        assert!(registry.client_closed().await, "the abandoned connection is closed");
    }

    #[tokio::test]
    async fn a_body_that_stops_moving_times_out() {
        // Promises 100 bytes, sends 10, then nothing.
        let mut reply = head("200 OK", MANIFEST_TYPE, 100);
        reply.extend_from_slice(b"{\"schema\":");
        let mut registry = FakeRegistry::start(reply).await;
        let (err, took) = manifest_error(&registry, false).await;
        assert!(
            err.ends_with(
                "the registry sent nothing for 300 ms in the middle of a body (is it overloaded, or the network down?)"
            ),
            "{err}"
        );
        assert!(took >= fake::SHORT, "{took:?}");
        assert!(registry.client_closed().await, "the abandoned connection is closed");
    }

    #[tokio::test]
    async fn a_tag_resolves_to_the_digest_of_what_the_registry_serves() {
        let manifest = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        let mut reply = head("200 OK", MANIFEST_TYPE, manifest.len());
        reply.extend_from_slice(manifest);
        let fake = FakeRegistry::start(reply).await;
        let registry = Registry { client: fake.client() };
        // `echo -n '{"schemaVersion":2,"config":{},"layers":[]}' | sha256sum`
        let expected = "sha256:4108250765b19c4d5000be73d2bdd612bbb17a989972bcfd1adbf5085a9af46b";
        assert_eq!(registry.digest(&fake.reference(), None).await.expect("a digest"), expected);
        // A reference with a digest needs no registry at all.
        let pinned = Reference::parse(&format!("unreachable.invalid/a/b:v1@sha256:{}", "c".repeat(64))).expect("ref");
        assert_eq!(registry.digest(&pinned, None).await.expect("its own"), format!("sha256:{}", "c".repeat(64)));
        // A missing tag is a clear error, not a digest.
        let missing = FakeRegistry::start(head("404 Not Found", "text/plain", 0)).await;
        let err = Registry { client: missing.client() }.digest(&missing.reference(), None).await;
        assert!(matches!(err, Err(ImageError::NotFound { .. })), "{err:?}");
    }

    #[tokio::test]
    async fn an_oversized_manifest_is_refused() {
        let size = MANIFEST_LIMIT + 1;
        let mut reply = head("200 OK", MANIFEST_TYPE, size);
        reply.resize(reply.len() + size, b' ');
        let registry = FakeRegistry::start(reply).await;
        let (err, _) = manifest_error(&registry, false).await;
        assert!(
            err.ends_with(&format!(
                "read manifest v1 from http://{}/v2/test/image/manifests/v1: answer is larger than {MANIFEST_LIMIT} \
                 bytes, the most accepted: refusing it (is this really a registry?)",
                registry.addr
            )),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_oversized_token_is_refused() {
        // One server plays registry and token service: the first request is challenged, the
        // token request gets a body over the limit.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = vec![0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = if request.starts_with(b"GET /token") {
                    let mut reply = head("200 OK", "application/json", TOKEN_LIMIT + 1);
                    reply.resize(reply.len() + TOKEN_LIMIT + 1, b' ');
                    reply
                } else {
                    format!(
                        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://{addr}/token\"\r\n\
                         Content-Length: 0\r\n\r\n"
                    )
                    .into_bytes()
                };
                let _ = stream.write_all(&reply).await;
            }
        });
        let client = RegistryClient::with_timeouts(
            vec![addr.to_string()],
            Timeouts { connect: fake::SHORT, response: fake::SHORT, idle: fake::SHORT },
        );
        let reference = Reference::parse(&format!("{addr}/test/image:v1")).expect("reference");
        let result = client.session(&reference, None).manifest("v1").await;
        server.abort();
        let err = result.expect_err("an oversized token is refused").to_string();
        assert!(
            err.ends_with(&format!(
                "read token from http://{addr}/token: answer is larger than {TOKEN_LIMIT} bytes, the most \
                 accepted: refusing it (is this really a registry?)"
            )),
            "{err}"
        );
    }

    #[tokio::test]
    async fn error_excerpts_read_only_the_start_of_a_body() {
        // A 500 whose body never ends: the excerpt is taken from its start without waiting.
        let mut reply = head("500 Internal Server Error", "text/plain", 100 << 20);
        reply.extend_from_slice(&b"x".repeat(2 * EXCERPT_LIMIT));
        let registry = FakeRegistry::start(reply).await;
        let (err, _) = manifest_error(&registry, false).await;
        // Had it waited for the rest of the body, the idle timeout would be the error instead.
        assert!(err.contains(&format!(": 500 Internal Server Error: {}", "x".repeat(200))), "{err}");
        assert!(!err.contains("sent nothing for"), "the excerpt does not wait for the rest of the body: {err}");
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn parses_bearer_challenges() {
        let params =
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#;
        assert_eq!(challenge_param(params, "realm").as_deref(), Some("https://auth.example/token"));
        assert_eq!(challenge_param(params, "service").as_deref(), Some("registry.example"));
        assert_eq!(challenge_param(params, "scope").as_deref(), Some("repository:a/b:pull,push"));
        assert_eq!(challenge_param("realm=plain,x=1", "x").as_deref(), Some("1"));
        assert_eq!(challenge_param(params, "missing"), None);
    }

    #[test]
    fn resolves_redirects() {
        assert_eq!(resolve("http://r:5000/v2/a/blobs/x", "/other/path"), "http://r:5000/other/path");
        assert_eq!(resolve("http://r:5000/v2/a", "https://cdn.example/blob?sig=1"), "https://cdn.example/blob?sig=1");
        assert_eq!(origin_of("https://cdn.example/blob"), "https://cdn.example");
        assert_eq!(origin_of("http://r:5000"), "http://r:5000");
        // A downgrade to plain HTTP on the same host is another origin: no credentials follow it.
        assert_ne!(origin_of("https://r/v2/a"), origin_of("http://r/v2/a"));
        assert_eq!(url_encode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }
}

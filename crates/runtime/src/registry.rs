//! A small OCI distribution client: manifests and blobs over HTTP/1.1 (hyper), HTTPS with
//! rustls on ring, plain HTTP only for registries the caller marks insecure; bearer-token and
//! basic authentication; redirects for blobs served from elsewhere.

use std::sync::Arc;

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
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").field("insecure", &self.insecure).finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// `insecure` lists `host[:port]` registries reached over plain HTTP.
    pub(crate) fn new(insecure: Vec<String>) -> Self {
        Self { tls: Arc::new(tls_config()), insecure }
    }

    pub(crate) fn session<'a>(&'a self, reference: &'a Reference, credentials: Option<&'a Credentials>) -> Session<'a> {
        Session { client: self, reference, credentials, authorization: None }
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
        let body = response.into_body().collect().await.map_err(|e| self.fail(format!("read manifest: {e}")))?;
        Ok((media_type, body.to_bytes()))
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
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
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
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        if !status.is_success() {
            return Err(ImageError::Unauthorized {
                registry: self.reference.registry.clone(),
                reference: self.reference.to_string(),
                reason: format!("token service {realm} answered {status}"),
            });
        }
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
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
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
            let tls = tokio_rustls::TlsConnector::from(self.client.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| self.fail(format!("TLS handshake with {host}:{port}: {e}")))?;
            roundtrip(TokioIo::new(tls), request).await
        } else {
            roundtrip(TokioIo::new(tcp), request).await
        };
        result.map_err(|e| self.fail(format!("GET {url}: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;

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

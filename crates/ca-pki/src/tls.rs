//! rustls configs for mutual TLS between nodes, on the ring provider, and the credentials they use.
//!
//! Servers require a client certificate from the cluster CA (except the join listener, where a
//! node without a certificate yet may ask for one). Clients present their node certificate and
//! verify the server against the cluster CA by a fixed server name, the role name
//! (`shoal-manager`), never by IP address: managers move, their certificates do not name addresses.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ca::{CERT_MODE, NodeKey, pem_of};
use crate::identity::{IdentityError, NodeIdentity, Role, identity_of};
use crate::keys::{self, KeyError, UnlockKey};
use crate::pair::{PairError, PairFiles};
use crate::removed::{RefuseRemoved, RemovedNodes};

pub(crate) const CERT_FILE: &str = "node.crt";
pub(crate) const KEY_FILE: &str = "node.key";
pub(crate) const ROOTS_FILE: &str = "root-ca.crt";

/// Assembling credentials or a trust bundle from PEM, or saving and loading them, failed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The PEM holds no certificate.
    #[error("{what} holds no PEM certificate: pass the PEM the CA returned")]
    NoCertificate {
        /// What was parsed.
        what: &'static str,
    },
    /// A certificate is not valid PEM or X.509.
    #[error("{what} is not a valid PEM X.509 certificate: {reason}")]
    Certificate {
        /// What was parsed.
        what: &'static str,
        /// What the parser reported.
        reason: String,
    },
    /// The certificate's public key is not the node key's.
    #[error(
        "node certificate for {node_id} was not issued for this node key: pair the chain with the key whose CSR the CA signed"
    )]
    KeyMismatch {
        /// The node ID in the certificate.
        node_id: String,
    },
    /// The saved certificate's public key is not the saved key's (an interrupted save is finished
    /// on load, so this means the files were changed by something else).
    #[error(
        "node certificate {cert} (node {node_id}) does not belong to the key {key}: restore {dir} from a backup, or remove the node from the cluster (`shoal node rm {node_id}`) and join it again with an empty --data-dir"
    )]
    SavedKeyMismatch {
        /// The node ID in the certificate.
        node_id: String,
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The directory that holds them.
        dir: PathBuf,
    },
    /// The certificate does not carry a Shoal identity.
    #[error("node certificate carries no shoal identity: {0}")]
    Identity(#[from] IdentityError),
    /// Reading or writing the certificate files failed.
    #[error("cannot access certificate file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key file could not be read or written.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Building a rustls config failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// rustls refused the certificates, keys or protocol settings.
    #[error("cannot build TLS config: {0}")]
    Rustls(#[from] rustls::Error),
    /// A trust bundle certificate is not a usable trust anchor.
    #[error("trust bundle certificate cannot be a trust anchor: {0}")]
    TrustAnchor(String),
    /// The client certificate verifier could not be built.
    #[error("cannot build client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The root certificates a node trusts, as served by the CA (PEM, one or more certificates).
///
/// Its SHA-256 digest is what a join token pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    pem: String,
    roots: Vec<CertificateDer<'static>>,
}

impl TrustBundle {
    /// Parses a PEM bundle of root certificates.
    pub fn from_pem(pem: &str) -> Result<TrustBundle, CredentialsError> {
        let what = "trust bundle";
        let roots = parse_certs(pem, what)?;
        Ok(TrustBundle { pem: pem.to_owned(), roots })
    }

    /// Makes a bundle of the given roots.
    pub(crate) fn from_roots(roots: Vec<CertificateDer<'static>>) -> TrustBundle {
        let pem = roots.iter().map(pem_of).collect();
        TrustBundle { pem, roots }
    }

    /// The bundle in PEM, exactly as served to joining nodes.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// SHA-256 of the PEM bytes: what a join token pins.
    pub(crate) fn digest(&self) -> [u8; 32] {
        sha256(self.pem.as_bytes())
    }

    /// The bundle's fingerprint, `sha256:<hex>` of its PEM: what nodes report and compare to
    /// tell whether they trust what the cluster trusts.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.pem.as_bytes())
    }

    /// The roots in the bundle, oldest first.
    pub(crate) fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Whether the bundle holds the root with this fingerprint (`sha256:<hex>` of its DER).
    pub fn has_root(&self, fingerprint_of_root: &str) -> bool {
        self.roots.iter().any(|root| fingerprint(root) == fingerprint_of_root)
    }

    /// The fingerprint (`sha256:<hex>` of the DER) of the bundle's newest root: the one that signs
    /// during a root rotation (bundles list the old root first).
    pub fn newest_root_fingerprint(&self) -> String {
        // `from_pem` and `from_roots` never make an empty bundle.
        self.roots.last().map(|root| fingerprint(root)).unwrap_or_default()
    }

    /// The fingerprint (`sha256:<hex>` of the DER) of the root in this bundle whose key signed
    /// `cert` (directly, or through a cross-signed intermediate carrying that key), if one did.
    pub fn issuer_of(&self, cert: &CertificateDer<'_>) -> Option<String> {
        self.roots.iter().find(|root| crate::ca::signed_by(root, cert)).map(|root| fingerprint(root))
    }

    /// Saves the bundle as `root-ca.crt` in `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), CredentialsError> {
        write_file(&dir.join(ROOTS_FILE), &self.pem)
    }

    /// Loads a bundle saved by [`TrustBundle::save`].
    pub fn load(dir: &Path) -> Result<TrustBundle, CredentialsError> {
        TrustBundle::from_pem(&read_file(&dir.join(ROOTS_FILE))?)
    }

    pub(crate) fn root_store(&self) -> Result<RootCertStore, TlsConfigError> {
        let mut store = RootCertStore::empty();
        for root in &self.roots {
            store.add(root.clone()).map_err(|e| TlsConfigError::TrustAnchor(e.to_string()))?;
        }
        Ok(store)
    }
}

/// SHA-256 of some bytes.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// `sha256:<hex>` of some bytes (a certificate's DER, a bundle's PEM), as Docker prints digests.
pub fn fingerprint(bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in digest {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// A node's key with its certificate chain (leaf first, then any intermediate).
pub struct NodeCredentials {
    chain: Vec<CertificateDer<'static>>,
    chain_pem: String,
    key_der: Vec<u8>,
    key_pem: String,
    identity: NodeIdentity,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCredentials")
            .field("identity", &self.identity)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.chain.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

impl NodeCredentials {
    /// Pairs the chain the CA issued (PEM, leaf first) with the node key that made the CSR.
    pub fn new(chain_pem: &str, key: NodeKey) -> Result<NodeCredentials, CredentialsError> {
        let parsed = KeyedChain::parse(chain_pem, &key, "node certificate chain")?;
        let identity = identity_of(&parsed.chain[0])?;
        Ok(NodeCredentials {
            chain_pem: chain_pem.to_owned(),
            chain: parsed.chain,
            key_der: key.pkcs8_der(),
            key_pem: key.to_pem(),
            identity,
            not_before: parsed.not_before,
            not_after: parsed.not_after,
        })
    }

    /// Saves `node.crt` and `node.key` (mode 0600, encrypted when `kek` is set) in `dir`,
    /// replacing both together: after a crash, [`NodeCredentials::load`] finds either the old
    /// pair or this one.
    pub fn save(&self, dir: &Path, kek: Option<&UnlockKey>) -> Result<(), CredentialsError> {
        files(dir).save(&self.chain_pem, self.key_pem.as_bytes(), kek).map_err(pair_error)
    }

    /// Loads credentials saved by [`NodeCredentials::save`], first finishing a save that a crash
    /// interrupted after its commit point.
    pub fn load(dir: &Path, kek: Option<&UnlockKey>) -> Result<NodeCredentials, CredentialsError> {
        let files = files(dir);
        files.finish().map_err(pair_error)?;
        let chain_pem = read_file(&files.cert_path())?;
        let key_pem = keys::read_key_file(&files.key_path(), kek)?;
        let key = NodeKey::from_pem(&String::from_utf8_lossy(&key_pem))?;
        NodeCredentials::new(&chain_pem, key).map_err(|e| match e {
            CredentialsError::KeyMismatch { node_id } => CredentialsError::SavedKeyMismatch {
                node_id,
                cert: files.cert_path(),
                key: files.key_path(),
                dir: dir.to_owned(),
            },
            other => other,
        })
    }

    /// Who this node is, as its certificate says.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// Start of the leaf certificate's validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// End of the leaf certificate's validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The certificate chain in PEM, leaf first.
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The leaf certificate in DER.
    pub fn leaf_der(&self) -> &CertificateDer<'static> {
        // `new` refuses an empty chain.
        &self.chain[0]
    }

    /// The chain and key as rustls signs with them.
    pub(crate) fn certified_key(&self) -> Result<CertifiedKey, TlsConfigError> {
        Ok(CertifiedKey::from_der(self.chain.clone(), self.private_key(), &provider())?)
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// The TLS server name of nodes with `role` (`shoal-manager` or `shoal-worker`): clients check a
/// server's certificate against it, never against an IP address.
pub fn server_name(role: Role) -> ServerName<'static> {
    // Role names are fixed lower-case ASCII labels, valid DNS names (checked by a unit test), so
    // this cannot fail at run time.
    #[allow(clippy::expect_used)]
    let name = DnsName::try_from(role.as_str()).expect("role names are valid DNS names");
    ServerName::DnsName(name)
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config that requires a client certificate issued by a root in `trust`, and refuses
/// certificates of nodes in `removed` (checked at every handshake, so later removals count).
///
/// TLS 1.3 only. Set ALPN on the result as the RPC layer needs (`h2` for gRPC).
pub fn server_config(
    credentials: &NodeCredentials,
    trust: &TrustBundle,
    removed: &RemovedNodes,
) -> Result<ServerConfig, TlsConfigError> {
    build_server(credentials, trust, removed, true)
}

/// A server config for the manager port that also lets nodes without a certificate connect,
/// so they can present a join token and a CSR. Certificates that are presented must verify;
/// RPC handlers treat a connection without one as anonymous ([`crate::peer_identity`] fails).
pub fn join_server_config(
    credentials: &NodeCredentials,
    trust: &TrustBundle,
    removed: &RemovedNodes,
) -> Result<ServerConfig, TlsConfigError> {
    build_server(credentials, trust, removed, false)
}

fn build_server(
    credentials: &NodeCredentials,
    trust: &TrustBundle,
    removed: &RemovedNodes,
    require_client_cert: bool,
) -> Result<ServerConfig, TlsConfigError> {
    let verifier = client_verifier(trust, require_client_cert)?;
    server_with(Arc::new(SingleCertAndKey::from(credentials.certified_key()?)), verifier, removed)
}

/// webpki's check of client certificates against `trust`: required, or (for the join listener)
/// optional.
pub(crate) fn client_verifier(
    trust: &TrustBundle,
    require_client_cert: bool,
) -> Result<Arc<dyn ClientCertVerifier>, TlsConfigError> {
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(trust.root_store()?), provider());
    Ok(if require_client_cert { builder.build()? } else { builder.allow_unauthenticated().build()? })
}

/// webpki's check of server certificates against `trust`.
pub(crate) fn server_verifier(trust: &TrustBundle) -> Result<Arc<WebPkiServerVerifier>, TlsConfigError> {
    Ok(WebPkiServerVerifier::builder_with_provider(Arc::new(trust.root_store()?), provider()).build()?)
}

/// A server config whose certificate comes from `certs` (one certificate, or the live ones of
/// [`crate::LiveCredentials`]), checking client certificates with `verifier` and refusing
/// those of `removed` nodes. TLS 1.3 only.
pub(crate) fn server_with(
    certs: Arc<dyn ResolvesServerCert>,
    verifier: Arc<dyn ClientCertVerifier>,
    removed: &RemovedNodes,
) -> Result<ServerConfig, TlsConfigError> {
    let verifier = Arc::new(RefuseRemoved { inner: verifier, removed: removed.clone() });
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certs);
    Ok(config)
}

/// A client config that presents the node's certificate and verifies servers against `trust`.
///
/// Connect with [`server_name`] of the role you expect, e.g. `server_name(Role::Manager)`.
pub fn client_config(credentials: &NodeCredentials, trust: &TrustBundle) -> Result<ClientConfig, TlsConfigError> {
    client_with(Arc::new(SingleCertAndKey::from(credentials.certified_key()?)), trust)
}

/// A client config presenting the certificate `certs` gives (one certificate, or the live ones
/// of [`crate::LiveCredentials`]) and verifying servers against `trust`. TLS 1.3 only.
pub(crate) fn client_with(
    certs: Arc<dyn ResolvesClientCert>,
    trust: &TrustBundle,
) -> Result<ClientConfig, TlsConfigError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(trust.root_store()?)
        .with_client_cert_resolver(certs);
    Ok(config)
}

/// A client config presenting the certificate `certs` gives and checking servers with
/// `verifier` (the live trust of [`crate::LiveCredentials`]). TLS 1.3 only.
pub(crate) fn client_verified_by(
    certs: Arc<dyn ResolvesClientCert>,
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
) -> Result<ClientConfig, TlsConfigError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(certs);
    Ok(config)
}

/// A client config for a node that has no certificate yet: it verifies the manager against the
/// root it pinned with the join token ([`crate::JoinToken::verify_root_ca`]) and presents none.
pub fn join_client_config(trust: &TrustBundle) -> Result<ClientConfig, TlsConfigError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(trust.root_store()?)
        .with_no_client_auth();
    Ok(config)
}

/// A certificate chain (PEM, leaf first) checked against the key whose CSR the CA signed.
pub(crate) struct KeyedChain {
    /// The chain; never empty.
    pub(crate) chain: Vec<CertificateDer<'static>>,
    /// The leaf's common name.
    pub(crate) common_name: String,
    /// The leaf's validity.
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
}

impl KeyedChain {
    /// Parses `chain_pem` (`what` names it in errors) and checks that its leaf is for `key`.
    pub(crate) fn parse(chain_pem: &str, key: &NodeKey, what: &'static str) -> Result<KeyedChain, CredentialsError> {
        let chain = parse_certs(chain_pem, what)?;
        let leaf = chain.first().ok_or(CredentialsError::NoCertificate { what })?;
        let (_, parsed) = X509Certificate::from_der(leaf)
            .map_err(|e| CredentialsError::Certificate { what, reason: e.to_string() })?;
        let (common_name, _, _) = crate::identity::subject_of(leaf)?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CredentialsError::KeyMismatch { node_id: common_name });
        }
        let time = |t: &x509_parser::time::ASN1Time| {
            OffsetDateTime::from_unix_timestamp(t.timestamp())
                .map_err(|e| CredentialsError::Certificate { what, reason: e.to_string() })
        };
        let not_before = time(&parsed.validity().not_before)?;
        let not_after = time(&parsed.validity().not_after)?;
        Ok(KeyedChain { chain, common_name, not_before, not_after })
    }
}

fn parse_certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, CredentialsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CredentialsError::Certificate { what, reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(CredentialsError::NoCertificate { what });
    }
    for cert in &certs {
        X509Certificate::from_der(cert).map_err(|e| CredentialsError::Certificate { what, reason: e.to_string() })?;
    }
    Ok(certs)
}

fn files(dir: &Path) -> PairFiles<'_> {
    PairFiles { dir, cert: CERT_FILE, key: KEY_FILE }
}

pub(crate) fn pair_error(e: PairError) -> CredentialsError {
    match e {
        PairError::Io { path, source } => CredentialsError::Io { path, source },
        PairError::Key(e) => CredentialsError::Key(e),
    }
}

fn write_file(path: &Path, content: &str) -> Result<(), CredentialsError> {
    keys::write_atomic(path, content.as_bytes(), CERT_MODE)
        .map_err(|source| CredentialsError::Io { path: path.to_owned(), source })
}

fn read_file(path: &Path) -> Result<String, CredentialsError> {
    std::fs::read_to_string(path).map_err(|source| CredentialsError::Io { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests;

/// A client config for the one call a joining node makes before it trusts anything: fetching the
/// root CA. It accepts whatever certificate the server shows (the handshake signature is still
/// verified), so the caller must check the bundle it gets with [`crate::JoinToken::verify_root_ca`]
/// before it sends anything secret, and use [`join_client_config`] from then on.
pub fn bootstrap_client_config() -> Result<ClientConfig, TlsConfigError> {
    let provider = provider();
    let verifier = Arc::new(AnyServerCertificate(provider.clone()));
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// Accepts any server certificate; used only by [`bootstrap_client_config`].
#[derive(Debug)]
struct AnyServerCertificate(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

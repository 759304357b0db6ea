//! Node credentials that change while the servers and clients built on them keep running.
//!
//! Certificates expire (90 days by default), and a node renews its own long before that: at a
//! random point between 50 % and 80 % of the lifetime ([`crate::renewal_time`]). A renewal must
//! not restart the manager port, the Raft transport or the agent's session, so the TLS configs of
//! [`live_server_config`], [`live_join_server_config`] and [`live_client_config`] take their
//! certificate from a [`LiveCredentials`] at every handshake. The credentials change when this
//! process renews them ([`LiveCredentials::renew`]) or when another component writes the same
//! directory (the files are read again when `node.crt` changes on disk). Connections already
//! open keep the certificate they were made with; TLS checks it only at the handshake.
//!
//! The roots the configs trust are live the same way: they are the bundle in `root-ca.crt` of
//! the same directory, read again when that file changes ([`LiveCredentials::set_trust`] writes
//! it). That is how a root CA rotation reaches running servers and clients: the bundle grows to
//! both roots, nodes move to certificates from the new root, and the bundle shrinks to it.

use std::fmt;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use time::OffsetDateTime;

use crate::ca::NodeKey;
use crate::keys::UnlockKey;
use crate::removed::RemovedNodes;
use crate::renewal::renewal_time;
use crate::tls::{CERT_FILE, CredentialsError, NodeCredentials, ROOTS_FILE, TlsConfigError, TrustBundle};

/// A node's credentials as they are now, shared by every TLS config built on them. Cloning is
/// cheap and clones share the credentials.
#[derive(Clone)]
pub struct LiveCredentials {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    kek: KeyEncryption,
    current: Mutex<Current>,
    trust: Mutex<Trust>,
    /// Counts the changes of the credentials or the trust, so that what is worked out from
    /// them can be kept until they change.
    generation: std::sync::atomic::AtomicU64,
    /// [`LiveCredentials::tls_fingerprints`] as of one generation.
    fingerprints: Mutex<Option<(u64, String, String)>>,
}

/// The roots trusted now, with the verifiers built on them.
struct Trust {
    bundle: TrustBundle,
    /// The bundle's fingerprint, computed once.
    fingerprint: String,
    /// What `root-ca.crt` looked like when the bundle was read or written.
    stamp: Option<Stamp>,
    clients_required: Arc<dyn ClientCertVerifier>,
    clients_optional: Arc<dyn ClientCertVerifier>,
    servers: Arc<WebPkiServerVerifier>,
}

impl Trust {
    fn new(bundle: TrustBundle, stamp: Option<Stamp>) -> Result<Trust, TlsConfigError> {
        Ok(Trust {
            fingerprint: bundle.fingerprint(),
            clients_required: crate::tls::client_verifier(&bundle, true)?,
            clients_optional: crate::tls::client_verifier(&bundle, false)?,
            servers: crate::tls::server_verifier(&bundle)?,
            bundle,
            stamp,
        })
    }
}

/// The unlock key a process encrypts a node's key file with (autolock), or none: one cell
/// shared by every reader and writer of that file in the process (a manager and the worker role
/// beside it), so a renewal by either writes the key as the other reads it. Change it with
/// [`KeyEncryption::set`], then rewrite the file with [`LiveCredentials::rekey`].
#[derive(Clone, Default)]
pub struct KeyEncryption(Arc<Mutex<Option<UnlockKey>>>);

impl fmt::Debug for KeyEncryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = self.0.lock().unwrap_or_else(PoisonError::into_inner).is_some();
        write!(f, "KeyEncryption({})", if on { "on" } else { "off" })
    }
}

/// Two handles are equal when they are the same cell.
impl PartialEq for KeyEncryption {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for KeyEncryption {}

impl KeyEncryption {
    /// A cell holding `kek` (`None`: key files in the clear).
    pub fn new(kek: Option<UnlockKey>) -> KeyEncryption {
        KeyEncryption(Arc::new(Mutex::new(kek)))
    }

    /// The unlock key now.
    pub fn get(&self) -> Option<UnlockKey> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the unlock key; files are written with it from now on.
    pub fn set(&self, kek: Option<UnlockKey>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = kek;
    }
}

struct Current {
    credentials: Arc<NodeCredentials>,
    certified: Arc<CertifiedKey>,
    /// What `node.crt` looked like when these credentials were read or written.
    stamp: Option<Stamp>,
    /// Where in 50–80 % of the lifetime this certificate is renewed, drawn once per certificate.
    draw: f64,
}

/// Identifies one version of `node.crt`: a renewal replaces the file (new inode, new time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    modified_ns: i128,
    len: u64,
}

fn stamp(dir: &Path) -> Option<Stamp> {
    stamp_of(&dir.join(CERT_FILE))
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        inode: meta.ino(),
        modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        len: meta.len(),
    })
}

/// A number in `[0, 1]` from the system's random source (0.5 if that fails: renewal is then at
/// 65 % of the lifetime, which is still inside the window).
fn draw() -> f64 {
    crate::random::random_bytes::<8>().map_or(0.5, |b| (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64)
}

fn certified(credentials: &NodeCredentials) -> Result<Arc<CertifiedKey>, CredentialsError> {
    let key = credentials
        .certified_key()
        .map_err(|e| CredentialsError::Certificate { what: "node key", reason: e.to_string() })?;
    Ok(Arc::new(key))
}

impl fmt::Debug for LiveCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.lock();
        f.debug_struct("LiveCredentials")
            .field("dir", &self.inner.dir)
            .field("credentials", &current.credentials)
            .finish()
    }
}

impl LiveCredentials {
    /// Loads the credentials saved in `dir` ([`NodeCredentials::save`]) with the key in the
    /// clear; they are read again whenever `dir/node.crt` changes.
    pub fn load(dir: &Path) -> Result<LiveCredentials, CredentialsError> {
        LiveCredentials::load_encrypted(dir, KeyEncryption::default())
    }

    /// [`LiveCredentials::load`] for a key file encrypted with the unlock key in `kek` (or in the
    /// clear while it holds none); renewals write the key file with the key it holds then.
    pub fn load_encrypted(dir: &Path, kek: KeyEncryption) -> Result<LiveCredentials, CredentialsError> {
        let credentials = NodeCredentials::load(dir, kek.get().as_ref())?;
        let current = Current {
            certified: certified(&credentials)?,
            credentials: Arc::new(credentials),
            stamp: stamp(dir),
            draw: draw(),
        };
        let stamp = stamp_of(&dir.join(ROOTS_FILE));
        let trust = Trust::new(TrustBundle::load(dir)?, stamp)
            .map_err(|e| CredentialsError::Certificate { what: "trust bundle", reason: e.to_string() })?;
        let inner = Inner {
            dir: dir.to_owned(),
            kek,
            current: Mutex::new(current),
            trust: Mutex::new(trust),
            generation: std::sync::atomic::AtomicU64::new(0),
            fingerprints: Mutex::new(None),
        };
        Ok(LiveCredentials { inner: Arc::new(inner) })
    }

    /// The roots trusted now, read again from `root-ca.crt` if it changed there. A bundle that
    /// cannot be read or used (a writer midway) leaves the trust as it was.
    fn trust_now(&self) -> std::sync::MutexGuard<'_, Trust> {
        let mut trust = self.inner.trust.lock().unwrap_or_else(PoisonError::into_inner);
        let path = self.inner.dir.join(ROOTS_FILE);
        let now = stamp_of(&path);
        if now.is_some()
            && now != trust.stamp
            && let Some(fresh) = TrustBundle::load(&self.inner.dir).ok().and_then(|b| Trust::new(b, now).ok())
        {
            *trust = fresh;
            self.changed();
        }
        trust
    }

    /// Notes that the credentials or the trust changed.
    fn changed(&self) {
        self.inner.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The roots the TLS configs built on these credentials trust now.
    pub fn trust(&self) -> TrustBundle {
        self.trust_now().bundle.clone()
    }

    /// Trusts `bundle` from the next handshake on, and saves it as `root-ca.crt` in the
    /// credentials' directory.
    pub fn set_trust(&self, bundle: &TrustBundle) -> Result<(), CredentialsError> {
        let fresh = Trust::new(bundle.clone(), None)
            .map_err(|e| CredentialsError::Certificate { what: "trust bundle", reason: e.to_string() })?;
        let mut trust = self.inner.trust.lock().unwrap_or_else(PoisonError::into_inner);
        bundle.save(&self.inner.dir)?;
        *trust = Trust { stamp: stamp_of(&self.inner.dir.join(ROOTS_FILE)), ..fresh };
        self.changed();
        Ok(())
    }

    /// Whether the certificate now was signed by the newest root trusted now (the signing root
    /// during a root rotation): false means it should be renewed.
    pub fn issued_by_newest_root(&self) -> bool {
        let (issuer, _) = self.tls_fingerprints();
        !issuer.is_empty() && issuer == self.trust().newest_root_fingerprint()
    }

    /// The fingerprints of the root that signed the certificate now (empty if no trusted root
    /// did) and of the trusted bundle: what a node reports while a root rotation waits for it.
    /// Kept until the certificate or the bundle changes (agents ask with every heartbeat, and
    /// finding the issuer checks a signature).
    pub fn tls_fingerprints(&self) -> (String, String) {
        // Read before the credentials and the trust: a change meanwhile (theirs read again from
        // disk included) leaves what is kept below one generation behind, to be worked out again.
        let generation = self.inner.generation.load(std::sync::atomic::Ordering::Relaxed);
        let credentials = self.current();
        let trust = self.trust_now();
        let mut cached = self.inner.fingerprints.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((of, issuer, bundle)) = cached.as_ref()
            && *of == generation
        {
            return (issuer.clone(), bundle.clone());
        }
        let issuer = trust.bundle.issuer_of(credentials.leaf_der()).unwrap_or_default();
        *cached = Some((generation, issuer.clone(), trust.fingerprint.clone()));
        (issuer, trust.fingerprint.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.inner.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The directory the credentials live in.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Reads the files again if another writer replaced them. A pair that cannot be read (a
    /// writer midway) leaves the credentials as they were; the next call tries again.
    fn refresh(&self, current: &mut Current) {
        let now = stamp(&self.inner.dir);
        if now.is_none() || now == current.stamp {
            return;
        }
        let Ok(credentials) = NodeCredentials::load(&self.inner.dir, self.inner.kek.get().as_ref()) else { return };
        let Ok(certified) = certified(&credentials) else { return };
        *current = Current { credentials: Arc::new(credentials), certified, stamp: now, draw: draw() };
        self.changed();
    }

    /// The credentials now (read again from disk if they changed there).
    pub fn current(&self) -> Arc<NodeCredentials> {
        let mut current = self.lock();
        self.refresh(&mut current);
        current.credentials.clone()
    }

    fn certified_key(&self) -> Arc<CertifiedKey> {
        let mut current = self.lock();
        self.refresh(&mut current);
        current.certified.clone()
    }

    /// When the current certificate is due for renewal: a random point between 50 % and 80 % of
    /// its lifetime, drawn once per certificate so nodes spread their renewals.
    pub fn renewal_due(&self) -> OffsetDateTime {
        let mut current = self.lock();
        self.refresh(&mut current);
        renewal_time(current.credentials.not_before(), current.credentials.not_after(), current.draw)
    }

    /// How long from now until [`LiveCredentials::renewal_due`] (zero once it has passed).
    pub fn until_renewal(&self) -> std::time::Duration {
        std::time::Duration::try_from(self.renewal_due() - OffsetDateTime::now_utc()).unwrap_or_default()
    }

    /// How long to wait before trying a failed renewal again ([`crate::renewal_retry_wait`]).
    pub fn retry_wait(&self) -> std::time::Duration {
        crate::renewal::renewal_retry_wait(self.current().not_after(), OffsetDateTime::now_utc())
    }

    /// Replaces the credentials with the chain the CA issued for `key`: saved in the directory
    /// (key and certificate together, crash-safe), then used by every later handshake.
    pub fn renew(&self, chain_pem: &str, key: NodeKey) -> Result<Arc<NodeCredentials>, CredentialsError> {
        let credentials = NodeCredentials::new(chain_pem, key)?;
        let certified = certified(&credentials)?;
        let mut current = self.lock();
        credentials.save(&self.inner.dir, self.inner.kek.get().as_ref())?;
        let credentials = Arc::new(credentials);
        *current = Current { credentials: credentials.clone(), certified, stamp: stamp(&self.inner.dir), draw: draw() };
        self.changed();
        Ok(credentials)
    }
}

impl LiveCredentials {
    /// The cell holding the unlock key the key file is written with.
    pub fn key_encryption(&self) -> &KeyEncryption {
        &self.inner.kek
    }

    /// Writes the credentials again with the unlock key [`LiveCredentials::key_encryption`]
    /// holds now (after [`KeyEncryption::set`]): the key file is encrypted, re-encrypted or
    /// decrypted; the certificate stays.
    pub fn rekey(&self) -> Result<(), CredentialsError> {
        let mut current = self.lock();
        current.credentials.save(&self.inner.dir, self.inner.kek.get().as_ref())?;
        current.stamp = stamp(&self.inner.dir);
        Ok(())
    }
}

/// Hands rustls the current certificate at each handshake, as server and as client.
#[derive(Debug)]
struct Resolver(LiveCredentials);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks client certificates against the roots trusted at each handshake.
#[derive(Debug)]
struct LiveClientVerifier {
    live: LiveCredentials,
    mandatory: bool,
}

impl LiveClientVerifier {
    fn inner(&self) -> Arc<dyn ClientCertVerifier> {
        let trust = self.live.trust_now();
        if self.mandatory { trust.clients_required.clone() } else { trust.clients_optional.clone() }
    }
}

impl ClientCertVerifier for LiveClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Every root is named `CN=shoal-ca` and a node has one certificate: hints would say nothing.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner().verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner().supported_verify_schemes()
    }
}

/// Checks server certificates against the roots trusted at each handshake.
#[derive(Debug)]
struct LiveServerVerifier(LiveCredentials);

impl LiveServerVerifier {
    fn inner(&self) -> Arc<WebPkiServerVerifier> {
        self.0.trust_now().servers.clone()
    }
}

impl ServerCertVerifier for LiveServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner().verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner().supported_verify_schemes()
    }
}

/// [`crate::server_config`] on live credentials: a renewed certificate is presented, and the
/// roots in `root-ca.crt` trusted, from the next handshake on.
pub fn live_server_config(
    credentials: &LiveCredentials,
    removed: &RemovedNodes,
) -> Result<ServerConfig, TlsConfigError> {
    build_server(credentials, removed, true)
}

/// [`crate::join_server_config`] on live credentials.
pub fn live_join_server_config(
    credentials: &LiveCredentials,
    removed: &RemovedNodes,
) -> Result<ServerConfig, TlsConfigError> {
    build_server(credentials, removed, false)
}

fn build_server(
    credentials: &LiveCredentials,
    removed: &RemovedNodes,
    require_client_cert: bool,
) -> Result<ServerConfig, TlsConfigError> {
    let verifier = Arc::new(LiveClientVerifier { live: credentials.clone(), mandatory: require_client_cert });
    crate::tls::server_with(Arc::new(Resolver(credentials.clone())), verifier, removed)
}

/// [`crate::client_config`] on live credentials: new connections present the renewed
/// certificate and trust the roots in `root-ca.crt` as it is then.
pub fn live_client_config(credentials: &LiveCredentials) -> Result<ClientConfig, TlsConfigError> {
    crate::tls::client_verified_by(
        Arc::new(Resolver(credentials.clone())),
        Arc::new(LiveServerVerifier(credentials.clone())),
    )
}

#[cfg(test)]
mod tests;

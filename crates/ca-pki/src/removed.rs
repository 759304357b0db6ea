//! Removed nodes: a shared set of revoked identities (certificate common names: the IDs of
//! removed nodes, of revoked client bundles) whose certificates servers refuse from then on.
//!
//! A removed node's certificate stays cryptographically valid until it expires, so the CA alone
//! cannot cut it off. Servers built by this crate consult this set during every handshake; the
//! set's owner keeps it equal to its list of revocations (the manager follows its replicated
//! store) and RPC handlers can check it too.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::identity::identity_of;

/// Node IDs (certificate common names) removed from the cluster. Cheap to clone; clones share
/// the same set, so a server config built with it sees later changes.
#[derive(Debug, Clone, Default)]
pub struct RemovedNodes {
    ids: Arc<RwLock<HashSet<String>>>,
}

impl RemovedNodes {
    /// An empty set.
    pub fn new() -> RemovedNodes {
        RemovedNodes::default()
    }

    /// Marks a node as removed: its certificate is refused in every later handshake.
    pub fn insert(&self, node_id: impl Into<String>) {
        // A writer that panicked cannot leave a half-inserted string in a HashSet; carry on.
        self.ids.write().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(node_id.into());
    }

    /// Forgets a removed node (once every certificate of its ID has expired, say); returns whether
    /// it was in the set.
    pub fn remove(&self, node_id: &str) -> bool {
        self.ids.write().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(node_id)
    }

    /// Makes the set exactly `node_ids`, in one step: handshakes see the old set or the new one.
    pub fn replace_all(&self, node_ids: impl IntoIterator<Item = String>) {
        let ids: HashSet<String> = node_ids.into_iter().collect();
        *self.ids.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = ids;
    }

    /// Whether a node has been removed.
    pub fn contains(&self, node_id: &str) -> bool {
        self.ids.read().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(node_id)
    }

    /// How many IDs the set holds.
    pub fn len(&self) -> usize {
        self.ids.read().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether `err` (or an error in its chain of sources) is a server's refusal of this client's
/// certificate as revoked: the `certificate_revoked` alert that servers built by this crate send
/// to a removed node. In TLS 1.3 the client's side of the handshake ends before the server has
/// checked the certificate, so the alert arrives with the first call: a client looks at that
/// call's error to tell its user that its identity was revoked, rather than that the network failed.
pub fn refused_as_revoked(err: &(dyn std::error::Error + 'static)) -> bool {
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked);
    // HTTP/2 (h2) keeps an I/O error as its kind and message only, so past it the alert is
    // known by rustls's own words for it.
    let words = alert.to_string();
    let revoked = |e: &(dyn std::error::Error + 'static)| {
        e.downcast_ref::<rustls::Error>().is_some_and(|e| *e == alert) || e.to_string().contains(&words)
    };
    any_in_chain(err, revoked)
}

/// Whether `err` (or an error in its chain) is a handshake that failed because the two sides do
/// not share a root: this side did not know the root of the server's certificate, or the server
/// did not know the root of this side's (the `unknown_ca` alert). After a root CA rotation, that
/// is what a client bundle left on the old root meets.
pub fn refused_for_unknown_root(err: &(dyn std::error::Error + 'static)) -> bool {
    // Every root is named `CN=shoal-ca`, so a certificate from a root this side does not hold is
    // checked against one it does by that name, and fails as a bad signature rather than an
    // unknown issuer.
    let refusals = [
        rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA),
        rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate),
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        rustls::Error::InvalidCertificate(CertificateError::BadSignature),
    ];
    // As with `refused_as_revoked`: past HTTP/2 only the words are left.
    let words: Vec<String> = refusals.iter().map(ToString::to_string).collect();
    let matches = |e: &(dyn std::error::Error + 'static)| {
        e.downcast_ref::<rustls::Error>().is_some_and(|e| refusals.contains(e))
            || words.iter().any(|w| e.to_string().contains(w.as_str()))
    };
    any_in_chain(err, matches)
}

/// Whether `matches` holds for `err` or an error in its chain of sources, the inner errors of
/// I/O errors included (an I/O error shows its inner error's message but skips it as a source).
pub(crate) fn any_in_chain(
    err: &(dyn std::error::Error + 'static),
    matches: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        if matches(e) || inner.is_some_and(&matches) {
            return true;
        }
        next = e.source();
    }
    false
}

/// A client certificate verifier that runs webpki's checks, then refuses removed nodes.
#[derive(Debug)]
pub(crate) struct RefuseRemoved {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) removed: RemovedNodes,
}

impl ClientCertVerifier for RefuseRemoved {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let identity = identity_of(end_entity).map_err(|_| CertificateError::BadEncoding)?;
        if self.removed.contains(&identity.node_id) {
            return Err(CertificateError::Revoked.into());
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_set() {
        let removed = RemovedNodes::new();
        let seen_by_server = removed.clone();
        assert!(!seen_by_server.contains("node-1"));
        removed.insert("node-1");
        assert!(seen_by_server.contains("node-1"));
        assert!(!seen_by_server.contains("node-2"));
    }

    /// An error whose source is `inner`, as transport errors wrap I/O errors.
    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("transport error")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_revoked_alert_is_found_in_the_chain() {
        let alert = |a| std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::AlertReceived(a));
        assert!(refused_as_revoked(&Wrapped(alert(rustls::AlertDescription::CertificateRevoked))));
        assert!(refused_as_revoked(&rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked)));
        assert!(!refused_as_revoked(&Wrapped(alert(rustls::AlertDescription::BadCertificate))));
        assert!(!refused_as_revoked(&std::io::Error::other("connection reset")));
        // As HTTP/2 hands it on: a message without the error it came from.
        let words = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked).to_string();
        let retold = std::io::Error::new(std::io::ErrorKind::InvalidData, words);
        assert!(refused_as_revoked(&Wrapped(retold)));
    }

    #[test]
    fn an_unknown_root_is_found_in_the_chain() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert!(refused_for_unknown_root(&Wrapped(io(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        )))));
        assert!(refused_for_unknown_root(&Wrapped(io(rustls::Error::AlertReceived(
            rustls::AlertDescription::UnknownCA
        )))));
        assert!(refused_for_unknown_root(&Wrapped(io(rustls::Error::InvalidCertificate(
            CertificateError::BadSignature
        )))));
        assert!(!refused_for_unknown_root(&Wrapped(io(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRevoked
        )))));
        assert!(!refused_for_unknown_root(&std::io::Error::other("connection refused")));
    }

    #[test]
    fn remove_and_replace_all() {
        let removed = RemovedNodes::new();
        removed.insert("node-1");
        removed.insert("node-2");
        assert!(removed.remove("node-1"));
        assert!(!removed.remove("node-1"), "already gone");
        assert_eq!(removed.len(), 1);
        removed.replace_all(["node-3".to_owned(), "admin-4".to_owned()]);
        assert!(!removed.contains("node-2") && removed.contains("node-3") && removed.contains("admin-4"));
        removed.replace_all([]);
        assert!(removed.is_empty());
    }
}

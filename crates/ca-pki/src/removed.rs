//! Removed nodes: a shared set of node IDs whose certificates servers refuse from then on.
//!
//! A removed node's certificate stays cryptographically valid until it expires, so the CA alone
//! cannot cut it off. Servers built by this crate consult this set during every handshake
//! (the manager adds a node ID when it removes the node); RPC handlers can check it too.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::identity::identity_of;

/// Node IDs removed from the cluster. Cheap to clone; clones share the same set, so a server
/// config built with it sees later removals.
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

    /// Whether a node has been removed.
    pub fn contains(&self, node_id: &str) -> bool {
        self.ids.read().unwrap_or_else(|poisoned| poisoned.into_inner()).contains(node_id)
    }
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
}

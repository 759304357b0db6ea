//! The certificate a manager shows while it is locked (autolock): its own key and certificate
//! are encrypted on disk and it has no unlock key yet, so it cannot prove it is a manager. It
//! serves only `shoal cluster unlock`, with a certificate the cluster CA issued it for that:
//! CN = node ID, O = cluster ID, OU and DNS name `shoal-locked`.
//!
//! Nothing accepts that certificate as a node's: its OU is no role, so [`crate::peer_identity`]
//! fails for it and every server of this crate refuses it as a client certificate. Clients reach
//! a locked manager only when they ask for [`LOCKED_SERVER_NAME`], which the CLI does to tell a
//! locked manager from a broken one and to send it the unlock key. Its key stays in the clear,
//! so that a restarted manager can serve that much: whoever holds the disk can pose as this
//! locked manager, and nothing more.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::ca::{IssueError, NodeKey};
use crate::identity::subject_of;
use crate::pair::PairFiles;
use crate::removed::RemovedNodes;
use crate::rotation::ClusterCa;
use crate::tls::{CredentialsError, KeyedChain, TlsConfigError, TrustBundle, provider};

/// The OU and TLS server name of a locked manager's certificate.
pub const LOCKED_SERVER_NAME: &str = "shoal-locked";

const CERT_FILE: &str = "locked.crt";
const KEY_FILE: &str = "locked.key";

/// A locked manager's certificate and key (see the module docs).
pub struct LockedCertificate {
    chain: Vec<CertificateDer<'static>>,
    chain_pem: String,
    key_der: Vec<u8>,
    key_pem: String,
    node_id: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl fmt::Debug for LockedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockedCertificate")
            .field("node_id", &self.node_id)
            .field("not_after", &self.not_after)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl ClusterCa {
    /// Issues a locked manager's certificate (see [`LockedCertificate`]) for the CSR of `key`.
    pub fn issue_locked(
        &self,
        key: NodeKey,
        node_id: &str,
        cluster_id: &str,
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<LockedCertificate, IssueError> {
        let csr = key.csr_pem()?;
        let mut chain = self.signing_root().issue_for(&csr, node_id, LOCKED_SERVER_NAME, cluster_id, validity, now)?;
        chain.push_str(&self.chain_suffix());
        LockedCertificate::new(&chain, key).map_err(|e| IssueError::Locked { reason: e.to_string() })
    }
}

impl LockedCertificate {
    /// Pairs a locked manager's chain (PEM, leaf first) with its key.
    pub fn new(chain_pem: &str, key: NodeKey) -> Result<LockedCertificate, CredentialsError> {
        let what = "locked manager certificate";
        let parsed = KeyedChain::parse(chain_pem, &key, what)?;
        let (_, unit, _) = subject_of(&parsed.chain[0])?;
        if unit != LOCKED_SERVER_NAME {
            return Err(CredentialsError::Certificate {
                what,
                reason: format!("its OU is {unit:?}, not {LOCKED_SERVER_NAME:?}"),
            });
        }
        Ok(LockedCertificate {
            chain_pem: chain_pem.to_owned(),
            chain: parsed.chain,
            key_der: key.pkcs8_der(),
            key_pem: key.to_pem(),
            node_id: parsed.common_name,
            not_before: parsed.not_before,
            not_after: parsed.not_after,
        })
    }

    /// The manager's node ID.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Start of the certificate's validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }

    /// End of the certificate's validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Whether the certificate chain was issued by the current signing root of `ca`.
    pub fn is_current(&self, ca: &ClusterCa) -> bool {
        ca.is_current(&self.chain_pem)
    }

    /// Saves `locked.crt` and `locked.key` (mode 0600, in the clear: see the module docs) in `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), CredentialsError> {
        files(dir).save(&self.chain_pem, self.key_pem.as_bytes(), None).map_err(crate::tls::pair_error)
    }

    /// Loads what [`LockedCertificate::save`] wrote.
    pub fn load(dir: &Path) -> Result<LockedCertificate, CredentialsError> {
        let files = files(dir);
        files.finish().map_err(crate::tls::pair_error)?;
        let chain_pem = std::fs::read_to_string(files.cert_path())
            .map_err(|source| CredentialsError::Io { path: files.cert_path(), source })?;
        let key_pem = crate::keys::read_key_file(&files.key_path(), None)?;
        let key = NodeKey::from_pem(&String::from_utf8_lossy(&key_pem))?;
        LockedCertificate::new(&chain_pem, key)
    }

    /// Whether `dir` holds a locked manager's certificate.
    pub fn exists(dir: &Path) -> bool {
        files(dir).cert_path().is_file()
    }

    /// Removes the files [`LockedCertificate::save`] wrote (none is fine).
    pub fn remove(dir: &Path) -> Result<(), CredentialsError> {
        let files = files(dir);
        for path in [files.cert_path(), files.key_path()] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(CredentialsError::Io { path, source }),
            }
        }
        Ok(())
    }

    /// A server config for the locked manager's port: this certificate, client certificates
    /// from `trust` required (an admin bundle or a manager's), removed nodes refused. TLS 1.3.
    pub fn server_config(&self, trust: &TrustBundle, removed: &RemovedNodes) -> Result<ServerConfig, TlsConfigError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let certified = CertifiedKey::from_der(self.chain.clone(), key, &provider())?;
        crate::tls::server_with(
            Arc::new(SingleCertAndKey::from(certified)),
            crate::tls::client_verifier(trust, true)?,
            removed,
        )
    }
}

/// Whether a client's connection failed because the server's certificate is valid for another
/// name than the one asked for: a manager that is locked (its certificate says
/// [`LOCKED_SERVER_NAME`]) when a manager was asked for (rustls's error, anywhere in the chain).
pub fn named_otherwise(err: &(dyn std::error::Error + 'static)) -> bool {
    use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
    let wrong_name = |e: &(dyn std::error::Error + 'static)| {
        matches!(
            e.downcast_ref::<rustls::Error>(),
            Some(rustls::Error::InvalidCertificate(NotValidForName | NotValidForNameContext { .. }))
        )
    };
    crate::removed::any_in_chain(err, wrong_name)
}

fn files(dir: &Path) -> PairFiles<'_> {
    PairFiles { dir, cert: CERT_FILE, key: KEY_FILE }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NodeIdentity, RootCa, peer_identity};

    #[test]
    fn a_locked_certificate_is_no_node_certificate_and_round_trips() {
        let now = OffsetDateTime::now_utc();
        let ca = ClusterCa::new(RootCa::generate(now).expect("root"));
        let key = NodeKey::generate().expect("key");
        let locked = ca.issue_locked(key, "node-1", "cluster-1", Duration::hours(2), now).expect("issued");
        assert_eq!(locked.node_id(), "node-1");
        assert!(locked.is_current(&ca));
        let err = peer_identity(Some(locked.chain.as_slice())).expect_err("no role");
        assert!(err.to_string().contains("shoal-locked"), "{err}");
        // A node certificate is not a locked one.
        let node_key = NodeKey::generate().expect("key");
        let identity =
            NodeIdentity { node_id: "node-1".into(), role: crate::Role::Manager, cluster_id: "cluster-1".into() };
        let chain = ca.issue(&node_key.csr_pem().expect("csr"), &identity, Duration::hours(2), now).expect("node");
        let err = LockedCertificate::new(&chain, node_key).expect_err("node cert");
        assert!(err.to_string().contains("not \"shoal-locked\""), "{err}");

        let dir = std::env::temp_dir().join(format!("shoal-locked-cert-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        assert!(!LockedCertificate::exists(&dir));
        locked.save(&dir).expect("save");
        assert!(LockedCertificate::exists(&dir));
        let loaded = LockedCertificate::load(&dir).expect("load");
        assert_eq!((loaded.node_id(), loaded.not_after()), ("node-1", locked.not_after()));
        loaded.server_config(&ca.trust_bundle(), &RemovedNodes::new()).expect("server config");
        LockedCertificate::remove(&dir).expect("remove");
        assert!(!LockedCertificate::exists(&dir));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

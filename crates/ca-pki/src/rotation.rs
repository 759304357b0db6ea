//! The cluster CA over time: which root signs, which roots are trusted, and root rotation.
//!
//! Rotation goes Stable → Transition → Stable. At the start a new root is made and cross-signed
//! by the old one: an intermediate with the new root's name and key, issued by the old root.
//! During the transition the new root signs every certificate and the chain carries the
//! cross-signed intermediate, so a node that trusts only the old root still verifies it; the
//! trust bundle holds both roots, so reissued nodes still verify old certificates. Once every
//! node has been reissued, completion drops the old root: certificates it signed are refused.

use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

use crate::ca::{CERT_MODE, CaError, IssueError, RootCa, pair_error, pem_of, saved_cert_der};
use crate::identity::NodeIdentity;
use crate::keys::{self, UnlockKey};
use crate::pair::sync_dir;
use crate::tls::TrustBundle;

/// During a transition: the old root and the cross-signed intermediate.
const ROTATION_DIR: &str = "rotation";
const CROSS_SIGNED_FILE: &str = "cross-signed.crt";
/// A rotation directory being built; renamed to `rotation` once whole.
const STAGING_DIR: &str = "rotation.new";
/// A rotation directory being deleted; renamed from `rotation` first, so it vanishes in one step.
const DISCARD_DIR: &str = "rotation.old";

/// Where a root rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationState {
    /// One root signs and is trusted.
    Stable,
    /// A new root signs (chains carry the cross-signed intermediate); both roots are trusted.
    /// Reissue every node, then call [`ClusterCa::complete_rotation`].
    Transition,
}

/// Starting or completing a root rotation failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// A rotation is already under way.
    #[error("a root rotation is already in progress: complete it before starting another")]
    InProgress,
    /// There is no rotation to complete.
    #[error("no root rotation is in progress: start one first")]
    NotInProgress,
    /// Making the new root or the cross-signed intermediate failed.
    #[error("cannot rotate the root CA: {0}")]
    Ca(#[from] CaError),
    /// A cross-signed intermediate given for a transition is not the old root's signature of
    /// the new root.
    #[error("the cross-signed root certificate is not valid for this rotation: {0}")]
    CrossSigned(String),
}

/// The cluster's certificate authority: the signing root and, during a rotation, the old one.
#[derive(Debug)]
pub struct ClusterCa {
    /// The root that signs new certificates.
    signer: RootCa,
    /// During a transition: the old root and the new root cross-signed by it.
    transition: Option<Transition>,
}

#[derive(Debug)]
struct Transition {
    old_root: RootCa,
    cross_signed: CertificateDer<'static>,
}

impl ClusterCa {
    /// A CA in the stable state with one root.
    pub fn new(root: RootCa) -> ClusterCa {
        ClusterCa { signer: root, transition: None }
    }

    /// Where a rotation stands.
    pub fn state(&self) -> RotationState {
        match self.transition {
            None => RotationState::Stable,
            Some(_) => RotationState::Transition,
        }
    }

    /// The root that signs new certificates (the new root during a transition).
    pub fn signing_root(&self) -> &RootCa {
        &self.signer
    }

    /// The roots nodes should trust now: both roots during a transition (old first), else one.
    pub fn trust_bundle(&self) -> TrustBundle {
        let mut roots = Vec::new();
        if let Some(transition) = &self.transition {
            roots.push(transition.old_root.cert_der().clone());
        }
        roots.push(self.signer.cert_der().clone());
        TrustBundle::from_roots(roots)
    }

    /// Signs a node's CSR (see [`RootCa::issue`]) and returns the chain in PEM: the leaf and,
    /// during a transition, the cross-signed intermediate.
    pub fn issue(
        &self,
        csr_pem: &str,
        identity: &NodeIdentity,
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<String, IssueError> {
        let mut chain = self.signer.issue(csr_pem, identity, validity, now)?;
        chain.push_str(&self.chain_suffix());
        Ok(chain)
    }

    /// What follows a leaf the signing root issued in its chain: during a transition, the
    /// cross-signed intermediate (PEM); else nothing.
    pub(crate) fn chain_suffix(&self) -> String {
        self.transition.as_ref().map(|t| pem_of(&t.cross_signed)).unwrap_or_default()
    }

    /// Whether a node certificate (PEM, leaf first) was signed by the current signing root.
    /// During a transition, nodes for which this is false still need reissuing.
    pub fn is_current(&self, chain_pem: &str) -> bool {
        CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .next()
            .and_then(Result::ok)
            .is_some_and(|leaf| self.signer.signed(&leaf))
    }

    /// Starts a rotation to a newly made root.
    pub fn start_rotation(&mut self, now: OffsetDateTime) -> Result<(), RotationError> {
        if self.transition.is_some() {
            return Err(RotationError::InProgress);
        }
        let new_root = RootCa::generate(now)?;
        self.start_rotation_to(new_root, now)
    }

    /// Starts a rotation to a given root (for example an imported external one).
    pub fn start_rotation_to(&mut self, new_root: RootCa, now: OffsetDateTime) -> Result<(), RotationError> {
        if self.transition.is_some() {
            return Err(RotationError::InProgress);
        }
        let cross_signed = self.signer.cross_sign(&new_root, now)?;
        let old_root = std::mem::replace(&mut self.signer, new_root);
        self.transition = Some(Transition { old_root, cross_signed });
        Ok(())
    }

    /// A CA in a transition another manager started (its parts kept in the cluster's store):
    /// `new_root` signs, `old_root` is still trusted, and `cross_signed_pem` is the intermediate
    /// the old root signed for the new root's name and key, checked to be exactly that.
    pub fn in_transition(
        old_root: RootCa,
        new_root: RootCa,
        cross_signed_pem: &str,
    ) -> Result<ClusterCa, RotationError> {
        let cross_signed = CertificateDer::from_pem_slice(cross_signed_pem.as_bytes())
            .map_err(|e| RotationError::CrossSigned(format!("not a PEM certificate: {e}")))?;
        if !old_root.signed(&cross_signed) {
            return Err(RotationError::CrossSigned("the old root did not sign it".into()));
        }
        if !crate::ca::same_public_key(&cross_signed, new_root.cert_der()) {
            return Err(RotationError::CrossSigned("it does not carry the new root's key".into()));
        }
        Ok(ClusterCa { signer: new_root, transition: Some(Transition { old_root, cross_signed }) })
    }

    /// During a transition: the root being replaced, still trusted.
    pub fn old_root(&self) -> Option<&RootCa> {
        self.transition.as_ref().map(|t| &t.old_root)
    }

    /// During a transition: the cross-signed intermediate (PEM).
    pub fn cross_signed_pem(&self) -> Option<String> {
        self.transition.as_ref().map(|t| pem_of(&t.cross_signed))
    }

    /// Ends the transition: the old root is dropped from the trust bundle, so certificates it
    /// signed are refused from then on.
    pub fn complete_rotation(&mut self) -> Result<(), RotationError> {
        self.transition.take().map(|_| ()).ok_or(RotationError::NotInProgress)
    }

    /// Saves the CA in `dir`: `ca.crt`/`ca.key` for the signing root and, during a transition,
    /// `rotation/ca.crt`/`rotation/ca.key` for the old root and `rotation/cross-signed.crt`.
    ///
    /// A crash at any point leaves a directory [`ClusterCa::load`] reads as the state before or
    /// after the save. Each key and certificate pair is replaced as one step. A new `rotation/` is
    /// built as `rotation.new/` and renamed into place whole, before the new signing root replaces
    /// `ca.crt`/`ca.key`, so the root every node still trusts is never lost; an old one is renamed
    /// to `rotation.old/` before it is deleted, so it never loads half deleted.
    pub fn save(&self, dir: &Path, kek: Option<&UnlockKey>) -> Result<(), CaError> {
        // Leftovers of a save a crash interrupted; `load` ignores them.
        remove_dir_if_present(&dir.join(STAGING_DIR))?;
        remove_dir_if_present(&dir.join(DISCARD_DIR))?;
        let rotation_dir = dir.join(ROTATION_DIR);
        match &self.transition {
            Some(transition) => {
                if saved_cert_der(&rotation_dir).as_ref() == Some(transition.old_root.cert_der()) {
                    // This transition saved again (under another unlock key, say): each file is
                    // replaced safely in place, and every state in between loads as this transition.
                    transition.save(&rotation_dir, kek)?;
                } else {
                    // Until the new signing root is saved below, `ca.crt`/`ca.key` hold the root
                    // this transition starts from, so the CA loads as stable on that root while
                    // `rotation/` is replaced.
                    discard_rotation_dir(dir)?;
                    let staging = dir.join(STAGING_DIR);
                    std::fs::create_dir(&staging).map_err(|source| CaError::Io { path: staging.clone(), source })?;
                    transition.save(&staging, kek)?;
                    std::fs::rename(&staging, &rotation_dir)
                        .map_err(|source| CaError::Io { path: rotation_dir.clone(), source })?;
                    sync_dir(dir).map_err(pair_error)?;
                }
                self.signer.save(dir, kek)?;
            }
            None => {
                self.signer.save(dir, kek)?;
                discard_rotation_dir(dir)?;
            }
        }
        Ok(())
    }

    /// Loads a CA saved by [`ClusterCa::save`].
    pub fn load(dir: &Path, kek: Option<&UnlockKey>) -> Result<ClusterCa, CaError> {
        let signer = RootCa::load(dir, kek)?;
        let rotation_dir = dir.join(ROTATION_DIR);
        if !rotation_dir.exists() {
            return Ok(ClusterCa::new(signer));
        }
        let old_root = RootCa::load(&rotation_dir, kek)?;
        if old_root.cert_der() == signer.cert_der() {
            // A save that started a rotation stopped after writing `rotation/` and before the new
            // root replaced `ca.crt`/`ca.key`: the new root was lost, so the rotation never began.
            return Ok(ClusterCa::new(signer));
        }
        let path = rotation_dir.join(CROSS_SIGNED_FILE);
        let pem = std::fs::read_to_string(&path).map_err(|source| CaError::Io { path: path.clone(), source })?;
        let cross_signed = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| CaError::Certificate { reason: format!("{}: {e}", path.display()) })?;
        Ok(ClusterCa { signer, transition: Some(Transition { old_root, cross_signed }) })
    }
}

impl Transition {
    /// Saves the old root and the cross-signed intermediate in `dir`.
    fn save(&self, dir: &Path, kek: Option<&UnlockKey>) -> Result<(), CaError> {
        self.old_root.save(dir, kek)?;
        let path = dir.join(CROSS_SIGNED_FILE);
        keys::write_atomic(&path, pem_of(&self.cross_signed).as_bytes(), CERT_MODE)
            .map_err(|source| CaError::Io { path, source })
    }
}

/// Removes `rotation/` so that it disappears in one step: renamed aside, then deleted.
fn discard_rotation_dir(dir: &Path) -> Result<(), CaError> {
    let rotation_dir = dir.join(ROTATION_DIR);
    let discard = dir.join(DISCARD_DIR);
    match std::fs::rename(&rotation_dir, &discard) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(CaError::Io { path: rotation_dir, source }),
    }
    sync_dir(dir).map_err(pair_error)?;
    remove_dir_if_present(&discard)
}

fn remove_dir_if_present(path: &Path) -> Result<(), CaError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CaError::Io { path: path.to_owned(), source }),
    }
}

#[cfg(test)]
mod tests;

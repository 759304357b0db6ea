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

use crate::ca::{CERT_MODE, CaError, IssueError, RootCa, pem_of};
use crate::identity::NodeIdentity;
use crate::keys::{self, UnlockKey};
use crate::tls::TrustBundle;

/// During a transition: the old root and the cross-signed intermediate.
const ROTATION_DIR: &str = "rotation";
const CROSS_SIGNED_FILE: &str = "cross-signed.crt";

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
        if let Some(transition) = &self.transition {
            chain.push_str(&pem_of(&transition.cross_signed));
        }
        Ok(chain)
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

    /// Ends the transition: the old root is dropped from the trust bundle, so certificates it
    /// signed are refused from then on.
    pub fn complete_rotation(&mut self) -> Result<(), RotationError> {
        self.transition.take().map(|_| ()).ok_or(RotationError::NotInProgress)
    }

    /// Saves the CA in `dir`: `ca.crt`/`ca.key` for the signing root and, during a transition,
    /// `rotation/ca.crt`/`rotation/ca.key` for the old root and `rotation/cross-signed.crt`.
    ///
    /// Each file is replaced atomically. The old root is saved before the new signing root
    /// replaces it in `ca.crt`/`ca.key`, so a crash part-way through starting a rotation never
    /// loses the root that every node still trusts.
    pub fn save(&self, dir: &Path, kek: Option<&UnlockKey>) -> Result<(), CaError> {
        let rotation_dir = dir.join(ROTATION_DIR);
        match &self.transition {
            Some(transition) => {
                std::fs::create_dir_all(&rotation_dir)
                    .map_err(|source| CaError::Io { path: rotation_dir.clone(), source })?;
                transition.old_root.save(&rotation_dir, kek)?;
                let path = rotation_dir.join(CROSS_SIGNED_FILE);
                keys::write_atomic(&path, pem_of(&transition.cross_signed).as_bytes(), CERT_MODE)
                    .map_err(|source| CaError::Io { path, source })?;
                self.signer.save(dir, kek)?;
            }
            None => {
                self.signer.save(dir, kek)?;
                match std::fs::remove_dir_all(&rotation_dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(CaError::Io { path: rotation_dir, source });
                    }
                }
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
        let path = rotation_dir.join(CROSS_SIGNED_FILE);
        let pem = std::fs::read_to_string(&path).map_err(|source| CaError::Io { path: path.clone(), source })?;
        let cross_signed = CertificateDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| CaError::Certificate { reason: format!("{}: {e}", path.display()) })?;
        Ok(ClusterCa { signer, transition: Some(Transition { old_root, cross_signed }) })
    }
}

#[cfg(test)]
mod tests;

//! Node identities: the role enum, the (node ID, role, cluster ID) triple in a certificate, and RPC authorisation.

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::AttributeTypeAndValue;

/// What a node may do in the cluster, carried in the OU of its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A manager: Raft member, control API, CA. OU `shoal-manager`.
    Manager,
    /// A worker: runs tasks, talks to the dispatcher and the CA only. OU `shoal-worker`.
    Worker,
}

impl Role {
    /// The OU string in certificates, which is also the TLS server name for nodes of this role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "shoal-manager",
            Role::Worker => "shoal-worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "shoal-manager" => Ok(Role::Manager),
            "shoal-worker" => Ok(Role::Worker),
            other => Err(IdentityError::UnknownRole { found: other.to_owned() }),
        }
    }
}

/// Who a node is, as decided by the CA and read back from a verified certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    /// The node ID (certificate CN).
    pub node_id: String,
    /// The node's role (certificate OU).
    pub role: Role,
    /// The cluster the node belongs to (certificate O).
    pub cluster_id: String,
}

/// A peer certificate could not be turned into a [`NodeIdentity`].
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The TLS session has no peer certificate.
    #[error("peer presented no certificate: connect with node credentials issued by the cluster CA")]
    NoCertificate,
    /// The certificate is not valid DER X.509.
    #[error("peer certificate is not valid X.509: {reason}")]
    Malformed {
        /// What the parser reported.
        reason: String,
    },
    /// A required subject field is missing or not a string.
    #[error("peer certificate has no usable {field} in its subject: it was not issued by a shoal CA")]
    MissingField {
        /// The subject field, `CN`, `OU` or `O`.
        field: &'static str,
    },
    /// The OU is not a Shoal role.
    #[error("certificate role {found:?} is unknown: expected shoal-manager or shoal-worker")]
    UnknownRole {
        /// The OU found.
        found: String,
    },
}

/// A peer's role does not allow the call it made.
#[derive(Debug, thiserror::Error)]
#[error("node {node_id} has role {actual} but this call needs role {required}")]
pub struct PermissionError {
    /// The calling node.
    pub node_id: String,
    /// The role the call needs.
    pub required: Role,
    /// The role the node has.
    pub actual: Role,
}

/// Reads (node ID, role, cluster ID) from a peer's verified certificate chain.
///
/// Pass `conn.peer_certificates()` of a rustls connection whose config came from this crate, so the
/// chain has already been verified against the cluster CA; the leaf is the first certificate.
pub fn peer_identity(chain: Option<&[CertificateDer<'_>]>) -> Result<NodeIdentity, IdentityError> {
    let leaf = chain.and_then(|certs| certs.first()).ok_or(IdentityError::NoCertificate)?;
    identity_of(leaf)
}

/// Reads the identity of one certificate (no verification).
pub(crate) fn identity_of(cert: &CertificateDer<'_>) -> Result<NodeIdentity, IdentityError> {
    let (node_id, unit, cluster_id) = subject_of(cert)?;
    Ok(NodeIdentity { node_id, role: unit.parse()?, cluster_id })
}

/// The (CN, OU, O) of one certificate (no verification).
pub(crate) fn subject_of(cert: &CertificateDer<'_>) -> Result<(String, String, String), IdentityError> {
    let (_, cert) = X509Certificate::from_der(cert).map_err(|e| IdentityError::Malformed { reason: e.to_string() })?;
    let subject = cert.subject();
    let node_id = first_str(subject.iter_common_name(), "CN")?;
    let unit = first_str(subject.iter_organizational_unit(), "OU")?;
    let cluster_id = first_str(subject.iter_organization(), "O")?;
    Ok((node_id, unit, cluster_id))
}

/// The first value of a subject attribute, as a string.
fn first_str<'a, 'b: 'a>(
    mut values: impl Iterator<Item = &'a AttributeTypeAndValue<'b>>,
    field: &'static str,
) -> Result<String, IdentityError> {
    values.next().and_then(|value| value.as_str().ok()).map(str::to_owned).ok_or(IdentityError::MissingField { field })
}

/// Allows a call only if the peer has `required` role.
pub fn require_role(identity: &NodeIdentity, required: Role) -> Result<(), PermissionError> {
    if identity.role == required {
        Ok(())
    } else {
        Err(PermissionError { node_id: identity.node_id.clone(), required, actual: identity.role })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_strings() {
        for role in [Role::Manager, Role::Worker] {
            assert_eq!(role.as_str().parse::<Role>().expect("role"), role);
        }
        let err = "admin".parse::<Role>().expect_err("unknown role");
        assert_eq!(err.to_string(), "certificate role \"admin\" is unknown: expected shoal-manager or shoal-worker");
    }

    #[test]
    fn require_role_refuses_other_roles() {
        let worker = NodeIdentity { node_id: "node-1".into(), role: Role::Worker, cluster_id: "c1".into() };
        assert!(require_role(&worker, Role::Worker).is_ok());
        let err = require_role(&worker, Role::Manager).expect_err("worker is not a manager");
        assert_eq!(err.to_string(), "node node-1 has role shoal-worker but this call needs role shoal-manager");
    }

    #[test]
    fn no_certificate_is_an_error() {
        assert!(matches!(peer_identity(None), Err(IdentityError::NoCertificate)));
        assert!(matches!(peer_identity(Some(&[])), Err(IdentityError::NoCertificate)));
    }
}

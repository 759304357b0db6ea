//! Shoal's cluster PKI: root CA, node certificates, join tokens, mTLS configs, root rotation, keys at rest.
//!
//! A cluster's identity and trust live here and nowhere else:
//!
//! - [`RootCa`] makes or imports the cluster root (ECDSA P-256, 20 years, CN `shoal-ca`) and signs
//!   node certificates from CSRs. The CA, not the CSR, decides the identity: CN = node ID,
//!   OU = role (`shoal-manager` | `shoal-worker`), O = cluster ID.
//! - [`NodeKey`] is a node's private key and CSR; [`NodeCredentials`] is the key with its issued chain.
//! - [`renewal_time`] and [`needs_renewal`] are the pure renewal policy; [`LiveCredentials`] holds
//!   credentials that are renewed while the TLS configs built on them ([`live_server_config`],
//!   [`live_client_config`]) keep serving.
//! - [`JoinToken`] (`SHTKN-1-<digest>-<secret>`) pins the root CA for a joining node, and
//!   [`JoinTokens`] is the manager's side: constant-time checks, token to role, rotation.
//! - [`server_config`], [`client_config`], [`join_server_config`] and [`join_client_config`] build
//!   rustls configs on the ring provider; [`peer_identity`] and [`require_role`] authorise RPCs;
//!   [`RemovedNodes`] makes servers refuse removed nodes' certificates, and
//!   [`refused_as_revoked`] tells a client that a server refused its certificate so.
//! - [`ClusterCa`] runs root rotation with a cross-signed intermediate ([`RotationState`]).
//! - [`UnlockKey`], [`DataKey`], [`write_key_file`] and [`read_key_file`] keep keys at rest;
//!   [`KeyEncryption`] is the unlock key a process writes a node's key with (autolock), and
//!   [`LockedCertificate`] what a manager whose keys are locked shows while it waits for it.
//!
//! Time is always a parameter (`now`), so expiry and renewal are deterministic in tests.
//!
//! ```
//! use shoal_ca_pki::{
//!     ClusterCa, DEFAULT_NODE_VALIDITY, JoinTokens, NodeCredentials, NodeIdentity, NodeKey, Role,
//!     RemovedNodes, RootCa, client_config, server_config,
//! };
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = time::OffsetDateTime::now_utc();
//! let ca = ClusterCa::new(RootCa::generate(now)?);
//! let trust = ca.trust_bundle();
//!
//! // The node makes its key and CSR; the CA decides who it is.
//! let key = NodeKey::generate()?;
//! let identity = NodeIdentity {
//!     node_id: "node-1".into(),
//!     role: Role::Worker,
//!     cluster_id: "cluster-1".into(),
//! };
//! let chain = ca.issue(&key.csr_pem()?, &identity, DEFAULT_NODE_VALIDITY, now)?;
//! let credentials = NodeCredentials::new(&chain, key)?;
//! assert_eq!(credentials.identity(), &identity);
//! let _server = server_config(&credentials, &trust, &RemovedNodes::new())?;
//! let _client = client_config(&credentials, &trust)?;
//!
//! // A joining node's token pins the root CA bundle before it sends anything secret.
//! let tokens = JoinTokens::generate(&trust)?;
//! let token = tokens.token(Role::Worker).to_string().parse::<shoal_ca_pki::JoinToken>()?;
//! token.verify_root_ca(trust.pem())?;
//! assert_eq!(tokens.role_for(&token)?, Role::Worker);
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

mod base36;
mod ca;
mod identity;
mod keys;
mod live;
mod locked;
mod pair;
mod random;
mod removed;
mod renewal;
mod rotation;
mod tls;
mod token;

pub use ca::{
    CaError, DEFAULT_NODE_VALIDITY, IssueError, MIN_NODE_VALIDITY, NodeKey, ROOT_CA_COMMON_NAME, ROOT_CA_VALIDITY,
    RootCa,
};
pub use identity::{IdentityError, NodeIdentity, PermissionError, Role, peer_identity, require_role};
pub use keys::{DataKey, KeyError, UnlockKey, key_file_is_encrypted, read_key_file, rekey_key_file, write_key_file};
pub use live::{KeyEncryption, LiveCredentials, live_client_config, live_join_server_config, live_server_config};
pub use locked::{LOCKED_SERVER_NAME, LockedCertificate, named_otherwise};
pub use removed::{RemovedNodes, refused_as_revoked, refused_for_unknown_root};
pub use renewal::{needs_renewal, renewal_retry_wait, renewal_time};
pub use rotation::{ClusterCa, RotationError, RotationState};
pub use tls::{
    CredentialsError, NodeCredentials, TlsConfigError, TrustBundle, bootstrap_client_config, client_config,
    fingerprint, join_client_config, join_server_config, server_config, server_name,
};
pub use token::{JoinError, JoinToken, JoinTokens, TokenError};

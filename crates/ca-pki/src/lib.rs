//! Shoal's cluster PKI: root CA, node certificates, join tokens, mTLS configs, root rotation, keys at rest.
//!
//! A cluster's identity and trust live here and nowhere else:
//!
//! - [`RootCa`] makes or imports the cluster root (ECDSA P-256, 20 years, CN `shoal-ca`) and signs
//!   node certificates from CSRs. The CA, not the CSR, decides the identity: CN = node ID,
//!   OU = role (`shoal-manager` | `shoal-worker`), O = cluster ID.
//! - [`NodeKey`] is a node's private key and CSR; [`NodeCredentials`] is the key with its issued chain.
//! - [`renewal_time`] and [`needs_renewal`] are the pure renewal policy.
//! - [`JoinToken`] (`SHTKN-1-<digest>-<secret>`) pins the root CA for a joining node, and
//!   [`JoinTokens`] is the manager's side: constant-time checks, token to role, rotation.
//! - [`server_config`], [`client_config`], [`join_server_config`] and [`join_client_config`] build
//!   rustls configs on the ring provider; [`peer_identity`] and [`require_role`] authorise RPCs.
//! - [`ClusterCa`] runs root rotation with a cross-signed intermediate ([`RotationState`]).
//! - [`UnlockKey`], [`DataKey`], [`write_key_file`] and [`read_key_file`] keep keys at rest.
//!
//! Time is always a parameter (`now`), so expiry and renewal are deterministic in tests.
#![warn(missing_docs)]

mod base36;
mod ca;
mod identity;
mod keys;
mod random;
mod renewal;
mod rotation;
mod tls;
mod token;

pub use ca::{
    CaError, DEFAULT_NODE_VALIDITY, IssueError, MIN_NODE_VALIDITY, NodeKey, ROOT_CA_COMMON_NAME,
    ROOT_CA_VALIDITY, RootCa,
};
pub use identity::{
    IdentityError, NodeIdentity, PermissionError, Role, peer_identity, require_role,
};
pub use keys::{DataKey, KeyError, UnlockKey, read_key_file, rekey_key_file, write_key_file};
pub use renewal::{needs_renewal, renewal_time};
pub use rotation::{ClusterCa, RotationError, RotationState};
pub use tls::{
    CredentialsError, NodeCredentials, TlsConfigError, TrustBundle, client_config,
    join_client_config, join_server_config, server_config, server_name,
};
pub use token::{JoinError, JoinToken, JoinTokens, TokenError};

//! Join tokens `SHTKN-1-<digest>-<secret>`: parsing, root CA pinning, and the manager's token registry.
//!
//! The digest is the SHA-256 of the root CA bundle (PEM, exactly as served) in base36 at a fixed
//! width of 50; the secret is 16 random bytes in base36 at a fixed width of 25. A joining node
//! fetches the bundle, checks it against the digest with [`JoinToken::verify_root_ca`], and only
//! then, over TLS verified by that root, sends the token. The manager maps the token to a role
//! with [`JoinTokens::role_for`], comparing secrets in constant time.

use std::fmt;
use std::str::FromStr;

use crate::base36::{self, DecodeError, WIDTH_16_BYTES, WIDTH_32_BYTES};
use crate::identity::Role;
use crate::random;
use crate::tls::{CredentialsError, TrustBundle, sha256};

const PREFIX: &str = "SHTKN";
const VERSION: &str = "1";
const PARTS: usize = 4;

/// A join token could not be parsed, or the root CA it pins does not match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Nothing was given.
    #[error("join token is empty: pass the SHTKN-1-… token printed by `shoal-manager init`")]
    Empty,
    /// Whitespace around the token, usually from copying.
    #[error("join token has leading or trailing whitespace: copy it without spaces or line breaks")]
    Whitespace,
    /// The token does not start with `SHTKN`.
    #[error("join token must start with SHTKN-, found {found:?}: this is not a shoal join token")]
    Prefix {
        /// The first dash-separated part.
        found: String,
    },
    /// The version part is missing.
    #[error("join token ends after SHTKN: expected SHTKN-1-<digest>-<secret>")]
    MissingVersion,
    /// The version is not 1.
    #[error("join token version {found:?} is not supported: this build reads version 1")]
    Version {
        /// The version part.
        found: String,
    },
    /// The token does not have four dash-separated parts.
    #[error(
        "join token has {found} dash-separated parts, expected 4 (SHTKN-1-<digest>-<secret>): the token was cut or altered"
    )]
    PartCount {
        /// How many parts there are.
        found: usize,
    },
    /// The digest part has the wrong length.
    #[error("join token digest is {found} characters long, expected 50: the token was cut or altered")]
    DigestLength {
        /// Its length.
        found: usize,
    },
    /// The digest part has a character outside `0-9a-z`.
    #[error("join token digest has {found:?} at position {position}: only 0-9 and a-z are allowed")]
    DigestCharacter {
        /// 1-based position within the digest.
        position: usize,
        /// The character.
        found: char,
    },
    /// The digest is larger than a SHA-256 value.
    #[error("join token digest is larger than a SHA-256 value: the token was altered")]
    DigestRange,
    /// The secret part has the wrong length.
    #[error("join token secret is {found} characters long, expected 25: the token was cut or altered")]
    SecretLength {
        /// Its length.
        found: usize,
    },
    /// The secret part has a character outside `0-9a-z`.
    #[error("join token secret has {found:?} at position {position}: only 0-9 and a-z are allowed")]
    SecretCharacter {
        /// 1-based position within the secret.
        position: usize,
        /// The character.
        found: char,
    },
    /// The secret is larger than 128 bits.
    #[error("join token secret is larger than 128 bits: the token was altered")]
    SecretRange,
    /// The root CA bundle the manager served does not match the token's digest.
    #[error(
        "the root CA served by this manager does not match the join token: refusing to send the token (wrong address, or a manager impersonator)"
    )]
    RootCaMismatch,
    /// The served root CA bundle matched but is not usable.
    #[error("the root CA served by this manager is not usable: {0}")]
    RootCa(String),
}

/// A manager refused a join token.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The token pins a different root CA than the cluster's current one.
    #[error("join token was made for a different root CA: ask a manager for a current token")]
    WrongRootCa,
    /// The secret matches neither the worker nor the manager token.
    #[error(
        "join token secret is not valid for this cluster (it may have been rotated): ask a manager for a current token"
    )]
    InvalidSecret,
    /// The two tokens given to [`JoinTokens::from_tokens`] pin different roots.
    #[error("worker and manager join tokens pin different root CAs: store tokens made together")]
    MixedRoots,
    /// The system random number generator failed.
    #[error("cannot make a join token secret: the system random number generator failed")]
    Random,
}

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    digest: [u8; 32],
    secret: [u8; 16],
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("digest", &base36::encode(&self.digest, WIDTH_32_BYTES))
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl fmt::Display for JoinToken {
    /// The `SHTKN-1-…` text. Secret: anyone holding it can join.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}-{VERSION}-{}-{}",
            base36::encode(&self.digest, WIDTH_32_BYTES),
            base36::encode(&self.secret, WIDTH_16_BYTES)
        )
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        if text.trim() != text {
            return Err(TokenError::Whitespace);
        }
        let parts: Vec<&str> = text.split('-').collect();
        if parts[0] != PREFIX {
            return Err(TokenError::Prefix { found: parts[0].chars().take(16).collect() });
        }
        let version = parts.get(1).ok_or(TokenError::MissingVersion)?;
        if *version != VERSION {
            return Err(TokenError::Version { found: version.chars().take(16).collect() });
        }
        if parts.len() != PARTS {
            return Err(TokenError::PartCount { found: parts.len() });
        }
        let (digest, secret) = (parts[2], parts[3]);
        let digest_len = digest.chars().count();
        if digest_len != WIDTH_32_BYTES {
            return Err(TokenError::DigestLength { found: digest_len });
        }
        let digest = base36::decode::<32>(digest).map_err(|e| match e {
            DecodeError::Character { position, found } => TokenError::DigestCharacter { position, found },
            DecodeError::Range => TokenError::DigestRange,
        })?;
        let secret_len = secret.chars().count();
        if secret_len != WIDTH_16_BYTES {
            return Err(TokenError::SecretLength { found: secret_len });
        }
        let secret = base36::decode::<16>(secret).map_err(|e| match e {
            DecodeError::Character { position, found } => TokenError::SecretCharacter { position, found },
            DecodeError::Range => TokenError::SecretRange,
        })?;
        Ok(JoinToken { digest, secret })
    }
}

impl JoinToken {
    /// The joining side's pin: checks the root CA bundle a manager served (PEM, as received)
    /// against the token's digest, and returns it as the trust to use for the join connection.
    ///
    /// Call this before sending anything secret: on [`TokenError::RootCaMismatch`] close the
    /// connection without sending the token.
    ///
    /// During a root rotation the manager serves both roots while tokens still pin the bundle of
    /// the old root alone: a served bundle holding a root whose own PEM has the token's digest
    /// verifies, and the trust returned is that root alone (the other root is not pinned by
    /// anything; the node learns the whole bundle later over its verified session).
    pub fn verify_root_ca(&self, served_bundle_pem: &str) -> Result<TrustBundle, TokenError> {
        // The digest is public; comparing it in constant time costs nothing and keeps the rule simple.
        if random::constant_time_eq(&sha256(served_bundle_pem.as_bytes()), &self.digest) {
            return TrustBundle::from_pem(served_bundle_pem)
                .map_err(|e: CredentialsError| TokenError::RootCa(e.to_string()));
        }
        let served = TrustBundle::from_pem(served_bundle_pem).map_err(|_| TokenError::RootCaMismatch)?;
        served
            .roots()
            .iter()
            .map(|root| TrustBundle::from_roots(vec![root.clone()]))
            .find(|single| random::constant_time_eq(&single.digest(), &self.digest))
            .ok_or(TokenError::RootCaMismatch)
    }
}

/// The manager's join tokens: one secret per role, pinned to the current root CA bundle.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinTokens {
    digest: [u8; 32],
    worker: [u8; 16],
    manager: [u8; 16],
}

impl fmt::Debug for JoinTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinTokens")
            .field("digest", &base36::encode(&self.digest, WIDTH_32_BYTES))
            .field("secrets", &"[redacted]")
            .finish()
    }
}

impl JoinTokens {
    /// Makes fresh worker and manager tokens for the root CA bundle `trust`.
    pub fn generate(trust: &TrustBundle) -> Result<JoinTokens, JoinError> {
        Ok(JoinTokens { digest: trust.digest(), worker: new_secret()?, manager: new_secret()? })
    }

    /// Rebuilds the registry from stored tokens (as written by [`JoinTokens::token`]).
    pub fn from_tokens(worker: &JoinToken, manager: &JoinToken) -> Result<JoinTokens, JoinError> {
        if worker.digest != manager.digest {
            return Err(JoinError::MixedRoots);
        }
        Ok(JoinTokens { digest: worker.digest, worker: worker.secret, manager: manager.secret })
    }

    /// The current token for `role`.
    pub fn token(&self, role: Role) -> JoinToken {
        let secret = match role {
            Role::Manager => self.manager,
            Role::Worker => self.worker,
        };
        JoinToken { digest: self.digest, secret }
    }

    /// Replaces the secret for `role`; the old token is refused from now on.
    pub fn rotate(&mut self, role: Role) -> Result<(), JoinError> {
        let secret = new_secret()?;
        match role {
            Role::Manager => self.manager = secret,
            Role::Worker => self.worker = secret,
        }
        Ok(())
    }

    /// Pins the tokens to a new root CA bundle (after a root rotation); secrets stay the same,
    /// tokens naming the old bundle are refused.
    pub fn set_root_ca(&mut self, trust: &TrustBundle) {
        self.digest = trust.digest();
    }

    /// The role a presented token grants, comparing the secret with both roles' secrets in
    /// constant time.
    pub fn role_for(&self, token: &JoinToken) -> Result<Role, JoinError> {
        let is_worker = random::constant_time_eq(&token.secret, &self.worker);
        let is_manager = random::constant_time_eq(&token.secret, &self.manager);
        if !random::constant_time_eq(&token.digest, &self.digest) {
            return Err(JoinError::WrongRootCa);
        }
        match (is_manager, is_worker) {
            (true, _) => Ok(Role::Manager),
            (false, true) => Ok(Role::Worker),
            (false, false) => Err(JoinError::InvalidSecret),
        }
    }
}

fn new_secret() -> Result<[u8; 16], JoinError> {
    random::random_bytes::<16>().map_err(|_| JoinError::Random)
}

#[cfg(test)]
mod tests;

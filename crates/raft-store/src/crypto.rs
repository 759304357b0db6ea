//! Optional encryption at rest: AES-256-GCM (ring) over log records and snapshot files.

use std::fmt;

use ring::aead;
use ring::rand::SecureRandom;
use ring::rand::SystemRandom;

/// A 256-bit key that encrypts the log records and snapshots of one member at rest.
///
/// Every record is sealed with AES-256-GCM under a fresh random nonce, so a flipped bit or a
/// wrong key is detected when the store opens.
#[derive(Clone)]
pub struct EncryptionKey {
    bytes: [u8; 32],
}

impl EncryptionKey {
    /// A key from 32 secret bytes (for instance from a KMS or the cluster's unlock key).
    pub fn new(bytes: [u8; 32]) -> Self {
        Self { bytes }
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(..)")
    }
}

/// Seals and opens byte strings with the member's key, or passes them through without one.
pub(crate) struct Sealer {
    key: Option<aead::LessSafeKey>,
    rng: SystemRandom,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer").field("encrypted", &self.key.is_some()).finish()
    }
}

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SealError {
    #[error("random nonce generation failed")]
    Random,
    #[error("encryption failed")]
    Seal,
    #[error("decryption failed: wrong key or corrupted data")]
    Open,
}

impl Sealer {
    pub(crate) fn new(key: Option<&EncryptionKey>) -> Result<Self, SealError> {
        let key = match key {
            None => None,
            Some(k) => Some(aead::LessSafeKey::new(
                aead::UnboundKey::new(&aead::AES_256_GCM, &k.bytes).map_err(|_| SealError::Seal)?,
            )),
        };
        Ok(Self { key, rng: SystemRandom::new() })
    }

    /// Appends the sealed form of `plain` (nonce, ciphertext, tag) to `out`.
    pub(crate) fn seal_into(&self, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        let Some(key) = &self.key else {
            out.extend_from_slice(plain);
            return Ok(());
        };
        let mut nonce = [0u8; aead::NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let start = out.len();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let mut body = out.split_off(start + aead::NONCE_LEN);
        key.seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(aad), &mut body)
            .map_err(|_| SealError::Seal)?;
        out.extend_from_slice(&body);
        Ok(())
    }

    /// Opens a sealed byte string produced by [`Sealer::seal_into`].
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let Some(key) = &self.key else {
            return Ok(sealed.to_vec());
        };
        if sealed.len() < aead::NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, body) = sealed.split_at(aead::NONCE_LEN);
        let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut body = body.to_vec();
        let plain_len = key.open_in_place(nonce, aead::Aad::from(aad), &mut body).map_err(|_| SealError::Open)?.len();
        body.truncate(plain_len);
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open_round_trips_and_detects_tampering() {
        let sealer = Sealer::new(Some(&EncryptionKey::new([7; 32]))).expect("key");
        let mut sealed = Vec::new();
        sealer.seal_into(b"log", b"hello", &mut sealed).expect("seal");
        assert_ne!(&sealed[aead::NONCE_LEN..aead::NONCE_LEN + 5], b"hello");
        assert_eq!(sealer.open(b"log", &sealed).expect("open"), b"hello");
        assert!(sealer.open(b"snapshot", &sealed).is_err(), "aad is bound");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(sealer.open(b"log", &sealed).is_err(), "tampering is detected");
        let other = Sealer::new(Some(&EncryptionKey::new([8; 32]))).expect("key");
        let mut again = Vec::new();
        sealer.seal_into(b"log", b"x", &mut again).expect("seal");
        assert!(other.open(b"log", &again).is_err(), "wrong key is detected");
    }

    #[test]
    fn without_a_key_bytes_pass_through() {
        let sealer = Sealer::new(None).expect("no key");
        let mut out = Vec::new();
        sealer.seal_into(b"log", b"plain", &mut out).expect("seal");
        assert_eq!(out, b"plain");
        assert_eq!(sealer.open(b"log", &out).expect("open"), b"plain");
    }
}

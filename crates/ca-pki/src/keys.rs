//! Keys at rest: the unlock key (`SHKEY-1-…`), data-encryption keys wrapped with it, and key files.
//!
//! The unlock key is the key-encryption key (KEK) a person supplies after a restart when the
//! cluster is locked. It wraps data-encryption keys (DEK, for example the Raft store's) with
//! AES-256-GCM, and encrypts key files on disk. Key files are always written with mode 0600,
//! through a temporary file and a rename, so a failed write never leaves a half-written key.

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::base36::{self, DecodeError, WIDTH_32_BYTES};
use crate::random;

const UNLOCK_KEY_PREFIX: &str = "SHKEY";
const UNLOCK_KEY_VERSION: &str = "1";
/// First line of an encrypted key file; the second line is hex(nonce ‖ ciphertext ‖ tag).
const ENCRYPTED_HEADER: &str = "shoal-encrypted-key-v1";
/// Version byte that starts a wrapped data-encryption key.
const WRAP_VERSION: u8 = 1;
/// Associated data binds each ciphertext to its use, so a wrapped DEK cannot pass for a key file.
const AAD_DEK: &[u8] = b"shoal data-encryption key v1";
const AAD_KEY_FILE: &[u8] = b"shoal key file v1";
const AAD_PREVIOUS_KEY: &[u8] = b"shoal previous unlock key v1";
const AAD_BLOB: &[u8] = b"shoal sealed blob v1";

/// Keys at rest: parsing an unlock key, wrapping keys, reading or writing key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The unlock key does not start with `SHKEY-`.
    #[error("unlock key must start with SHKEY-, found {found:?}: pass the key printed by `shoal cluster unlock-key`")]
    UnlockKeyPrefix {
        /// The start of what was given.
        found: String,
    },
    /// The unlock key version is not 1.
    #[error("unlock key version {found:?} is not supported: this build reads version 1")]
    UnlockKeyVersion {
        /// The version found.
        found: String,
    },
    /// The unlock key body has the wrong length.
    #[error("unlock key body is {found} characters long, expected 50: the key was cut or altered")]
    UnlockKeyLength {
        /// The length found.
        found: usize,
    },
    /// The unlock key body has a character outside `0-9a-z`.
    #[error("unlock key has {found:?} at position {position} of its body: only 0-9 and a-z are allowed")]
    UnlockKeyCharacter {
        /// 1-based position in the body.
        position: usize,
        /// The character.
        found: char,
    },
    /// The unlock key body is larger than 256 bits.
    #[error("unlock key body is larger than 256 bits: the key was altered")]
    UnlockKeyRange,
    /// The unlock key does not open the ciphertext.
    #[error("the unlock key does not open {what}: check that it is this cluster's current unlock key")]
    WrongUnlockKey {
        /// What was being opened.
        what: String,
    },
    /// A key file is encrypted but no unlock key was given.
    #[error("key file {path} is encrypted: supply the cluster's unlock key")]
    Locked {
        /// The file.
        path: PathBuf,
    },
    /// Ciphertext or key material is not in the expected format.
    #[error("key material is malformed: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The AEAD or random number generator failed.
    #[error("cannot {what}: the crypto library failed")]
    Crypto {
        /// What was being done.
        what: &'static str,
    },
    /// Reading or writing a key file failed.
    #[error("cannot access key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The key-encryption key a person keeps, written `SHKEY-1-<50 base36 characters>`.
#[derive(Clone, PartialEq, Eq)]
pub struct UnlockKey([u8; 32]);

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnlockKey([redacted])")
    }
}

impl fmt::Display for UnlockKey {
    /// The `SHKEY-1-…` text. Secret: show it to the operator once.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{UNLOCK_KEY_PREFIX}-{UNLOCK_KEY_VERSION}-{}", base36::encode(&self.0, WIDTH_32_BYTES))
    }
}

impl FromStr for UnlockKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut parts = text.splitn(3, '-');
        let prefix = parts.next().unwrap_or_default();
        if prefix != UNLOCK_KEY_PREFIX {
            return Err(KeyError::UnlockKeyPrefix { found: text.chars().take(6).collect() });
        }
        let version = parts.next().unwrap_or_default();
        if version != UNLOCK_KEY_VERSION {
            return Err(KeyError::UnlockKeyVersion { found: version.to_owned() });
        }
        let body = parts.next().unwrap_or_default();
        let length = body.chars().count();
        if length != WIDTH_32_BYTES {
            return Err(KeyError::UnlockKeyLength { found: length });
        }
        match base36::decode::<32>(body) {
            Ok(bytes) => Ok(UnlockKey(bytes)),
            Err(DecodeError::Character { position, found }) => Err(KeyError::UnlockKeyCharacter { position, found }),
            Err(DecodeError::Range) => Err(KeyError::UnlockKeyRange),
        }
    }
}

impl UnlockKey {
    /// Makes a new random unlock key.
    pub fn generate() -> Result<UnlockKey, KeyError> {
        random::random_bytes::<32>().map(UnlockKey).map_err(|_| KeyError::Crypto { what: "generate an unlock key" })
    }

    /// Uses existing key bytes (as the cluster stores them).
    pub fn from_bytes(bytes: [u8; 32]) -> UnlockKey {
        UnlockKey(bytes)
    }

    /// The key bytes. Secret.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Seals the key this one replaced, so that whoever holds this key can recover it (a
    /// manager that was down while the key was rotated still has files the old key opens).
    pub fn seal_previous(&self, previous: &UnlockKey) -> Result<Vec<u8>, KeyError> {
        self.seal(&previous.0, AAD_PREVIOUS_KEY)
    }

    /// Opens what [`UnlockKey::seal_previous`] sealed with this key.
    pub fn open_previous(&self, sealed: &[u8]) -> Result<UnlockKey, KeyError> {
        let bytes = self.open(sealed, AAD_PREVIOUS_KEY, "the previous unlock key")?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|v: Vec<u8>| KeyError::Malformed {
            reason: format!("previous unlock key is {} bytes, expected 32", v.len()),
        })?;
        Ok(UnlockKey(bytes))
    }

    /// Encrypts any bytes with this key (AES-256-GCM, random nonce), for example a backup.
    pub fn seal_blob(&self, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.seal(plaintext, AAD_BLOB)
    }

    /// Decrypts what [`UnlockKey::seal_blob`] made; `what` names it in the error.
    pub fn open_blob(&self, sealed: &[u8], what: &str) -> Result<Vec<u8>, KeyError> {
        self.open(sealed, AAD_BLOB, what)
    }

    fn seal(&self, plaintext: &[u8], aad: &'static [u8]) -> Result<Vec<u8>, KeyError> {
        let crypto = |what| KeyError::Crypto { what };
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).map_err(|_| crypto("seal a key"))?);
        let nonce_bytes = random::random_bytes::<NONCE_LEN>().map_err(|_| crypto("make a nonce"))?;
        let mut sealed = plaintext.to_vec();
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(aad), &mut sealed)
            .map_err(|_| crypto("seal a key"))?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open(&self, sealed: &[u8], aad: &'static [u8], what: &str) -> Result<Vec<u8>, KeyError> {
        if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(KeyError::Malformed {
                reason: format!("{what} is {} bytes, too short to be sealed", sealed.len()),
            });
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, &self.0).map_err(|_| KeyError::Crypto { what: "open a key" })?,
        );
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Crypto { what: "open a key" })?;
        let mut buffer = ciphertext.to_vec();
        let plaintext = key
            .open_in_place(nonce, Aad::from(aad), &mut buffer)
            .map_err(|_| KeyError::WrongUnlockKey { what: what.to_owned() })?;
        Ok(plaintext.to_vec())
    }
}

/// A data-encryption key (256 bits), for example the one the Raft store encrypts with.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; 32]);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

impl DataKey {
    /// Makes a new random data-encryption key.
    pub fn generate() -> Result<DataKey, KeyError> {
        random::random_bytes::<32>()
            .map(DataKey)
            .map_err(|_| KeyError::Crypto { what: "generate a data-encryption key" })
    }

    /// Uses existing key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> DataKey {
        DataKey(bytes)
    }

    /// The key bytes. Secret.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Encrypts this key with the unlock key (AES-256-GCM, random nonce) for storage.
    pub fn wrap(&self, kek: &UnlockKey) -> Result<Vec<u8>, KeyError> {
        let mut out = vec![WRAP_VERSION];
        out.extend(kek.seal(&self.0, AAD_DEK)?);
        Ok(out)
    }

    /// Decrypts a key made by [`DataKey::wrap`]; a wrong unlock key gives [`KeyError::WrongUnlockKey`].
    pub fn unwrap(wrapped: &[u8], kek: &UnlockKey) -> Result<DataKey, KeyError> {
        let (version, sealed) = wrapped
            .split_first()
            .ok_or_else(|| KeyError::Malformed { reason: "wrapped data-encryption key is empty".into() })?;
        if *version != WRAP_VERSION {
            return Err(KeyError::Malformed {
                reason: format!(
                    "wrapped data-encryption key has version {version}, this build reads version {WRAP_VERSION}"
                ),
            });
        }
        let plaintext = kek.open(sealed, AAD_DEK, "the wrapped data-encryption key")?;
        let bytes: [u8; 32] = plaintext.try_into().map_err(|v: Vec<u8>| KeyError::Malformed {
            reason: format!("data-encryption key is {} bytes, expected 32", v.len()),
        })?;
        Ok(DataKey(bytes))
    }
}

/// Writes a key file with mode 0600, encrypted with `kek` when one is given.
///
/// The content goes to a temporary file in the same directory that is then renamed over `path`,
/// so readers see the old or the new key, never a mix.
pub fn write_key_file(path: &Path, key: &[u8], kek: Option<&UnlockKey>) -> Result<(), KeyError> {
    let content = match kek {
        None => key.to_vec(),
        Some(kek) => {
            let sealed = kek.seal(key, AAD_KEY_FILE)?;
            format!("{ENCRYPTED_HEADER}\n{}\n", hex_encode(&sealed)).into_bytes()
        }
    };
    write_atomic(path, &content, 0o600).map_err(|source| KeyError::Io { path: path.to_owned(), source })
}

/// Writes `content` to a temporary file with `mode` in the same directory, syncs it and renames it
/// over `path`, so that a crash leaves the old file or the new one, never a torn one.
pub(crate) fn write_atomic(path: &Path, content: &[u8], mode: u32) -> std::io::Result<()> {
    let suffix = random::random_bytes::<8>()
        .map_err(|_| std::io::Error::other("the system random number generator failed naming a temporary file"))?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp-{}", hex_encode(&suffix)));
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        file.write_all(content)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable, so a crash cannot bring back the old file.
        let parent = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        std::fs::File::open(parent)?.sync_all()
    })();
    if result.is_err() {
        // Best effort: the temporary file may not exist if the open failed.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a key file written by [`write_key_file`], decrypting it when it is encrypted.
///
/// An encrypted file needs `kek` ([`KeyError::Locked`] otherwise); a plaintext file is returned
/// as is whether or not `kek` is given, so a cluster can turn on autolock and re-encrypt with
/// [`rekey_key_file`].
pub fn read_key_file(path: &Path, kek: Option<&UnlockKey>) -> Result<Vec<u8>, KeyError> {
    let content = std::fs::read(path).map_err(|source| KeyError::Io { path: path.to_owned(), source })?;
    let Some(body) = content.strip_prefix(ENCRYPTED_HEADER.as_bytes()).and_then(|rest| rest.strip_prefix(b"\n")) else {
        return Ok(content);
    };
    let kek = kek.ok_or_else(|| KeyError::Locked { path: path.to_owned() })?;
    let text = std::str::from_utf8(body)
        .map_err(|_| KeyError::Malformed { reason: format!("encrypted key file {} is not text", path.display()) })?;
    let sealed = hex_decode(text.trim())
        .ok_or_else(|| KeyError::Malformed { reason: format!("encrypted key file {} is not hex", path.display()) })?;
    kek.open(&sealed, AAD_KEY_FILE, &format!("key file {}", path.display()))
}

/// Whether the key file at `path` is encrypted (by [`write_key_file`] with an unlock key).
pub fn key_file_is_encrypted(path: &Path) -> Result<bool, KeyError> {
    let content = std::fs::read(path).map_err(|source| KeyError::Io { path: path.to_owned(), source })?;
    Ok(content.starts_with(ENCRYPTED_HEADER.as_bytes()))
}

/// Re-encrypts a key file from `old` to `new` (either may be `None` for plaintext).
///
/// The file is decrypted first: with a wrong `old` key nothing is written.
pub fn rekey_key_file(path: &Path, old: Option<&UnlockKey>, new: Option<&UnlockKey>) -> Result<(), KeyError> {
    let key = read_key_file(path, old)?;
    write_key_file(path, &key, new)
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests;

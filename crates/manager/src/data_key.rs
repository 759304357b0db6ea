//! The key that encrypts this manager's Raft log and snapshots at rest (raft-store's
//! AES-256-GCM sealing), so that secrets, configs and every other object are never on a
//! manager's disk in the clear. Each manager has its own, made when its Raft store is first
//! created and kept beside it in `DATA/raft.key` (0600); Raft traffic between managers is
//! protected by mutual TLS instead. With autolock the file is itself encrypted by the cluster's
//! unlock key (`autolock.rs`), as Swarm keeps its data key in the TLS key's headers.

use std::path::Path;

use ring::rand::{SecureRandom as _, SystemRandom};
use shoal_ca_pki::{KeyError, UnlockKey, read_key_file, write_key_file};
use shoal_raft_store::EncryptionKey;

use crate::node::StartError;

/// The key's file in the data directory.
pub(crate) const FILE: &str = "raft.key";

/// The data key of the manager whose Raft store is `raft_dir`: read from `DATA/raft.key` (opened
/// with `kek` when autolock encrypted it), or made there when the store does not exist yet.
/// `None` for a store written before encryption at rest, which stays as it is.
pub(crate) fn load_or_create(
    data_dir: &Path,
    raft_dir: &Path,
    kek: Option<&UnlockKey>,
) -> Result<Option<EncryptionKey>, StartError> {
    let path = data_dir.join(FILE);
    match read_key_file(&path, kek) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            return parse(text.trim()).map(Some).map_err(|reason| StartError::DataDir { path, reason });
        }
        Err(KeyError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(KeyError::Io { source, .. }) => return Err(StartError::Io { path, source }),
        Err(other) => return Err(StartError::DataDir { path, reason: other.to_string() }),
    }
    let existing = std::fs::read_dir(raft_dir).map(|mut entries| entries.next().is_some()).unwrap_or(false);
    if existing {
        tracing::warn!(
            raft.dir = %raft_dir.display(),
            "this manager's Raft log was written before encryption at rest and stays unencrypted; \
             to encrypt it, remove the manager (demote it) and join it again"
        );
        return Ok(None);
    }
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).map_err(|_| StartError::DataDir {
        path: path.clone(),
        reason: "the system's random source failed; cannot make the Raft data key".to_owned(),
    })?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(data_dir).map_err(|source| StartError::Io { path: data_dir.to_owned(), source })?;
    write_key_file(&path, hex.as_bytes(), kek)
        .map_err(|e| StartError::DataDir { path: path.clone(), reason: e.to_string() })?;
    Ok(Some(EncryptionKey::new(bytes)))
}

fn parse(text: &str) -> Result<EncryptionKey, String> {
    let bad = || {
        format!(
            "is not a Raft data key (64 hex digits); without the right key this manager's Raft log cannot be read: \
             restore the file from a backup, or remove the manager and join it again ({} characters found)",
            text.len()
        )
    };
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(EncryptionKey::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn temp(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("shoal-data-key-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    #[test]
    fn a_new_store_gets_a_key_that_is_read_back() {
        let dir = temp("new");
        let raft = dir.0.as_path().join("raft");
        assert!(load_or_create(dir.0.as_path(), &raft, None).expect("made").is_some());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.0.as_path().join(FILE)).expect("file").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(dir.0.as_path().join(FILE)).expect("read");
        assert!(load_or_create(dir.0.as_path(), &raft, None).expect("read back").is_some());
        assert_eq!(std::fs::read_to_string(dir.0.as_path().join(FILE)).expect("read"), text, "the key is not replaced");
    }

    #[test]
    fn a_store_from_before_stays_unencrypted_and_a_damaged_key_is_refused() {
        let dir = temp("old");
        let raft = dir.0.as_path().join("raft");
        std::fs::create_dir_all(&raft).expect("raft dir");
        std::fs::write(raft.join("log"), b"x").expect("log");
        assert!(load_or_create(dir.0.as_path(), &raft, None).expect("old store").is_none());
        assert!(!dir.0.as_path().join(FILE).exists());
        std::fs::write(dir.0.as_path().join(FILE), "not-hex").expect("write");
        let err = load_or_create(dir.0.as_path(), &raft, None).expect_err("damaged").to_string();
        assert!(err.contains("is not a Raft data key"), "{err}");
    }
}

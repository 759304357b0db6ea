//! Autolock: each manager's keys at rest — its TLS key (`DATA/certs/node.key`), the cluster CA's
//! keys (`DATA/ca`) and its Raft data key (`DATA/raft.key`) — encrypted with the cluster's unlock
//! key, so a manager's disk alone opens nothing (Swarm's `--autolock`).
//!
//! The unlock key lives in the Raft store (`/unlock-keys/manager`, itself encrypted at rest)
//! while autolock is on, with the keys it replaced sealed by their successors. Each manager's
//! [`Keeper`] follows that object (read linearizably, once a second): it rewrites its key files with the
//! key (or in the clear once autolock is off), keeps a locked certificate for the next restart
//! (ca-pki's `LockedCertificate`) and the other managers' addresses beside it. A manager
//! restarted with encrypted files serves only `Unlock` (`lock.rs`) until it is given the key.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use shoal_api::v1;
use shoal_ca_pki::{
    ClusterCa, KeyError, LiveCredentials, LockedCertificate, NodeKey, UnlockKey, key_file_is_encrypted, read_key_file,
    rekey_key_file,
};
use tonic::Status;

use crate::objects::{ObjectError, ObjectStore};

/// The ID of the one unlock-keys object.
pub(crate) const UNLOCK_KEYS_ID: &str = "manager";
/// How many earlier keys the object keeps.
const PREVIOUS_KEPT: usize = 16;
/// The directory of the locked certificate and the managers' addresses.
pub(crate) const LOCKED_DIR: &str = "locked";
/// The other managers' addresses (one per line), for a locked manager to ask for earlier keys.
pub(crate) const PEERS_FILE: &str = "peers";
/// How often the keeper looks at the store.
const PASS: Duration = Duration::from_secs(1);
/// The shortest life of a locked certificate: a manager down for months can still be unlocked
/// (its node certificate is renewed once it is).
const LOCKED_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// A new unlock-keys object for a cluster turning autolock on.
pub(crate) fn new_keys() -> Result<(v1::UnlockKeys, UnlockKey), Status> {
    let key = UnlockKey::generate().map_err(|e| Status::internal(e.to_string()))?;
    let keys = v1::UnlockKeys { id: UNLOCK_KEYS_ID.into(), current: key.as_bytes().to_vec(), ..Default::default() };
    Ok((keys, key))
}

/// `keys` with a new current key; the old one is kept sealed by the new one.
pub(crate) fn rotated(mut keys: v1::UnlockKeys) -> Result<(v1::UnlockKeys, UnlockKey), Status> {
    let old = key_of(&keys)?;
    let new = UnlockKey::generate().map_err(|e| Status::internal(e.to_string()))?;
    let sealed = new.seal_previous(&old).map_err(|e| Status::internal(e.to_string()))?;
    keys.previous.insert(0, sealed);
    keys.previous.truncate(PREVIOUS_KEPT);
    keys.current = new.as_bytes().to_vec();
    Ok((keys, new))
}

/// The current key of `keys`.
pub(crate) fn key_of(keys: &v1::UnlockKeys) -> Result<UnlockKey, Status> {
    let bytes: [u8; 32] = keys
        .current
        .as_slice()
        .try_into()
        .map_err(|_| Status::data_loss(format!("the stored unlock key is {} bytes, not 32", keys.current.len())))?;
    Ok(UnlockKey::from_bytes(bytes))
}

/// The unlock keys as the cluster has them now (a linearizable read: a manager catching up
/// after a restart does not go back to a key it had); `None` while autolock is off.
pub(crate) async fn stored(objects: &ObjectStore) -> Result<Option<v1::UnlockKeys>, ObjectError> {
    match objects.get::<v1::UnlockKeys>(UNLOCK_KEYS_ID).await {
        Ok(keys) => Ok(Some(keys)),
        Err(ObjectError::NotFound { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The key files of the manager in `data_dir` that exist, as autolock encrypts them.
pub(crate) fn key_files(data_dir: &Path) -> Vec<PathBuf> {
    [
        data_dir.join("certs").join("node.key"),
        data_dir.join("ca").join("ca.key"),
        data_dir.join("ca").join("rotation").join("ca.key"),
        data_dir.join(crate::data_key::FILE),
    ]
    .into_iter()
    .filter(|path| path.is_file())
    .collect()
}

/// Whether any key file of the manager in `data_dir` is encrypted: it starts locked.
pub(crate) fn is_locked(data_dir: &Path) -> Result<bool, KeyError> {
    for path in key_files(data_dir) {
        if key_file_is_encrypted(&path)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Opens every encrypted key file of `data_dir` with one of `candidates` (the key given first,
/// then earlier ones) and rewrites the files an earlier key opened with the first, so that all
/// open with it. Nothing is written unless every file opens. The error names a file no
/// candidate opens.
pub(crate) fn unlock_files(data_dir: &Path, candidates: &[UnlockKey]) -> Result<(), KeyError> {
    let Some(given) = candidates.first() else {
        return Err(KeyError::Malformed { reason: "no unlock key given".into() });
    };
    let mut rewrite = Vec::new();
    for path in key_files(data_dir) {
        if !key_file_is_encrypted(&path)? {
            continue;
        }
        let mut opened = None;
        for (i, key) in candidates.iter().enumerate() {
            match read_key_file(&path, Some(key)) {
                Ok(_) => {
                    opened = Some(i);
                    break;
                }
                Err(KeyError::WrongUnlockKey { .. }) => {}
                Err(other) => return Err(other),
            }
        }
        match opened {
            Some(0) => {}
            Some(i) => rewrite.push((path, i)),
            None => return Err(KeyError::WrongUnlockKey { what: format!("key file {}", path.display()) }),
        }
    }
    for (path, i) in rewrite {
        rekey_key_file(&path, Some(&candidates[i]), Some(given))?;
    }
    Ok(())
}

/// Follows the cluster's unlock key on one manager (see the module docs).
#[derive(Debug)]
pub(crate) struct Keeper {
    pub(crate) data_dir: PathBuf,
    pub(crate) node_id: String,
    pub(crate) cluster_id: String,
    /// The node's credentials; their `key_encryption()` is the key the process writes with.
    pub(crate) live: LiveCredentials,
    pub(crate) ca: Arc<Mutex<ClusterCa>>,
    pub(crate) objects: ObjectStore,
    /// How long a locked certificate lasts when the cluster's setting cannot be read.
    pub(crate) validity: Duration,
}

impl Keeper {
    /// Runs until `stopped` resolves.
    pub(crate) async fn run(self, stopped: impl Future<Output = ()>) {
        let failing = "cannot bring this manager's keys at rest in line";
        let this = &self;
        crate::passes::every(PASS, "autolock", failing, stopped, || this.pass()).await;
    }

    /// One look at the store: the key files follow the unlock key, the locked certificate and
    /// the peers file are kept while autolock is on.
    pub(crate) async fn pass(&self) -> Result<(), String> {
        let keys = stored(&self.objects).await.map_err(|e| format!("read the unlock key: {e}"))?;
        let desired = keys.as_ref().map(key_of).transpose().map_err(|s| s.message().to_owned())?;
        let locked = self.data_dir.join(LOCKED_DIR);
        // What a restarted, locked manager needs is in place before any file is locked.
        if desired.is_some() {
            self.keep_locked_certificate(&locked).await?;
            self.write_peers(&locked).await?;
        }
        let cell = self.live.key_encryption();
        let current = cell.get();
        if current != desired {
            self.rekey(current.as_ref(), desired.as_ref())?;
            match desired {
                Some(_) => tracing::info!("autolock: this manager's keys at rest are encrypted with the unlock key"),
                None => tracing::info!("autolock is off: this manager's keys at rest are in the clear again"),
            }
        }
        if desired.is_none() && locked.exists() {
            std::fs::remove_dir_all(&locked).map_err(|e| format!("remove {}: {e}", locked.display()))?;
        }
        Ok(())
    }

    /// Rewrites every key file from `old` to `new` (either `None`: in the clear). The process
    /// writes with `new` from the first file on, so a renewal meanwhile is written as the rest;
    /// if a step fails, it writes with `old` again and the next pass starts over (each step
    /// leaves a file that `new` opens as it is).
    fn rekey(&self, old: Option<&UnlockKey>, new: Option<&UnlockKey>) -> Result<(), String> {
        let cell = self.live.key_encryption();
        cell.set(new.cloned());
        let rewritten = self.rewrite(old, new);
        if rewritten.is_err() {
            cell.set(old.cloned());
        }
        rewritten
    }

    fn rewrite(&self, old: Option<&UnlockKey>, new: Option<&UnlockKey>) -> Result<(), String> {
        self.live.rekey().map_err(|e| format!("rewrite the node key: {e}"))?;
        let ca_dir = self.data_dir.join("ca");
        if ca_dir.join("ca.key").is_file() {
            let ca = self.ca.lock().unwrap_or_else(PoisonError::into_inner);
            ca.save(&ca_dir, new).map_err(|e| format!("rewrite the CA key: {e}"))?;
        }
        let data_key = self.data_dir.join(crate::data_key::FILE);
        if data_key.is_file() {
            // The file may already be as `new` wants it, after a pass that stopped midway.
            let done =
                read_key_file(&data_key, new).is_ok() && key_file_is_encrypted(&data_key).ok() == Some(new.is_some());
            if !done {
                rekey_key_file(&data_key, old, new).map_err(|e| format!("rewrite the Raft data key: {e}"))?;
            }
        }
        Ok(())
    }

    /// Issues (or renews) the certificate a restarted, locked manager serves `Unlock` with.
    async fn keep_locked_certificate(&self, dir: &Path) -> Result<(), String> {
        let ca = || self.ca.lock().unwrap_or_else(PoisonError::into_inner);
        if let Ok(existing) = LockedCertificate::load(dir) {
            let now = time::OffsetDateTime::now_utc();
            let fresh = shoal_ca_pki::renewal_time(existing.not_before(), existing.not_after(), 0.5) > now;
            if fresh && existing.is_current(&ca()) {
                return Ok(());
            }
        }
        let cluster = crate::settings::cluster(&self.objects).await.ok().flatten();
        let validity = crate::settings::cert_validity(cluster.as_ref(), self.validity).max(LOCKED_VALIDITY);
        let validity = time::Duration::try_from(validity).unwrap_or(time::Duration::MAX);
        let key = NodeKey::generate().map_err(|e| e.to_string())?;
        let locked = ca()
            .issue_locked(key, &self.node_id, &self.cluster_id, validity, time::OffsetDateTime::now_utc())
            .map_err(|e| format!("issue the locked certificate: {e}"))?;
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        locked.save(dir).map_err(|e| format!("save the locked certificate: {e}"))
    }

    /// Records where the other managers are, for this one to ask them for earlier keys while
    /// it is locked (its Raft membership is in its encrypted log).
    async fn write_peers(&self, dir: &Path) -> Result<(), String> {
        let store = self.objects.store();
        let status = store.status().await;
        let mut peers: Vec<String> =
            status.members.iter().filter(|m| m.id != store.id()).map(|m| m.addr.clone()).collect();
        peers.sort();
        let text: String = peers.iter().map(|p| format!("{p}\n")).collect();
        let path = dir.join(PEERS_FILE);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        shoal_ca_pki::write_key_file(&path, text.as_bytes(), None).map_err(|e| format!("write {}: {e}", path.display()))
    }
}

/// The other managers' addresses recorded in `data_dir` (none if there is no record).
pub(crate) fn recorded_peers(data_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(data_dir.join(LOCKED_DIR).join(PEERS_FILE))
        .map(|text| text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_ca_pki::write_key_file;

    #[test]
    fn rotation_keeps_the_earlier_keys_sealed_by_their_successors() {
        let (keys, first) = new_keys().expect("keys");
        let (keys, second) = rotated(keys).expect("rotated");
        let (keys, third) = rotated(keys).expect("rotated");
        assert_eq!(key_of(&keys).expect("current"), third);
        assert_eq!(keys.previous.len(), 2);
        let recovered = third.open_previous(&keys.previous[0]).expect("second");
        assert_eq!(recovered, second);
        assert_eq!(recovered.open_previous(&keys.previous[1]).expect("first"), first);
        let mut keys = keys;
        for _ in 0..PREVIOUS_KEPT + 3 {
            keys = rotated(keys).expect("rotated").0;
        }
        assert_eq!(keys.previous.len(), PREVIOUS_KEPT);
    }

    #[test]
    fn files_locked_by_an_earlier_key_open_with_the_chain_and_are_rewritten_with_the_given_key() {
        let dir = std::env::temp_dir().join(format!("shoal-autolock-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("certs")).expect("certs");
        std::fs::create_dir_all(dir.join("ca")).expect("ca");
        let (old, new) = (UnlockKey::generate().expect("old"), UnlockKey::generate().expect("new"));
        assert!(!is_locked(&dir).expect("nothing yet"));
        write_key_file(&dir.join("certs/node.key"), b"node", Some(&old)).expect("node key");
        write_key_file(&dir.join("ca/ca.key"), b"ca", Some(&new)).expect("ca key");
        write_key_file(&dir.join(crate::data_key::FILE), b"raft", None).expect("data key");
        assert!(is_locked(&dir).expect("locked"));

        // The new key alone does not open the node key: refused, nothing written.
        let err = unlock_files(&dir, std::slice::from_ref(&new)).expect_err("old file");
        assert!(err.to_string().contains("node.key"), "{err}");
        assert!(read_key_file(&dir.join("certs/node.key"), Some(&old)).is_ok(), "unchanged");
        let other = UnlockKey::generate().expect("other");
        assert!(unlock_files(&dir, &[other, old.clone()]).is_err(), "a wrong key opens no file it did not lock");

        unlock_files(&dir, &[new.clone(), old]).expect("the chain opens every file");
        for (file, content) in [("certs/node.key", &b"node"[..]), ("ca/ca.key", b"ca")] {
            assert_eq!(read_key_file(&dir.join(file), Some(&new)).expect("opens with the new key"), content);
        }
        assert!(!key_file_is_encrypted(&dir.join(crate::data_key::FILE)).expect("read"), "plain files stay");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

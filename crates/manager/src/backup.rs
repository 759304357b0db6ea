//! Backup and restore: `shoal-manager backup --output FILE` asks the running manager on this
//! host for its whole replicated state, consistent at one revision (the control API's `Backup`,
//! called with this node's own certificate), and writes it to a file with what a manager needs
//! besides: its identity, its certificate and key, the cluster CA and the admin bundle.
//! `shoal-manager restore --input FILE --data-dir DIR` writes those into an empty directory and
//! seeds a new Raft group of one member with the state (`recovery::seed`): a new single-manager
//! cluster with every service, network, secret, config and node, which the nodes reconnect to.
//!
//! The file: `SHOAL-BACKUP\n`, format 1 (u32 LE), then records `[tag u8][length u64 LE][body]`
//! — a header (JSON), files (path, bytes), key-values —, and last an end record holding the
//! SHA-256 of every byte before it, so that a truncated or altered file is refused, not half
//! restored. It holds the CA key and every secret as stored: it is written mode 0600, to be
//! kept as carefully as a manager's data directory. With autolock on, the whole file is sealed
//! with the unlock key (`SHOAL-BACKUP-SEALED\n`, then AES-256-GCM), so it opens only with the
//! key, as the manager's own files do.

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use shoal_api::v1;
use shoal_ca_pki::{KeyEncryption, LiveCredentials, UnlockKey, live_client_config};
use shoal_raft_store::Store;
use tonic::Status;

use crate::leader::LEADER_FENCE;
use crate::node::StartError;

const MAGIC: &[u8] = b"SHOAL-BACKUP\n";
/// What starts a backup sealed with the unlock key.
const SEALED_MAGIC: &[u8] = b"SHOAL-BACKUP-SEALED\n";
const FORMAT: u32 = 1;
const TAG_HEADER: u8 = 1;
const TAG_FILE: u8 = 2;
const TAG_KV: u8 = 3;
const TAG_END: u8 = 0xff;

/// Bytes of key-values per chunk of the control API's `Backup` stream.
const CHUNK_BYTES: usize = 1 << 20;

/// The files of a manager's data directory a backup carries (directories: their files).
const CARRIED: &[&str] = &["manager.json", "certs", "ca", "admin"];

/// A backup that cannot be read, or not restored where asked.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The file is not a backup, is cut short, or was altered.
    #[error("{0}")]
    Invalid(String),
    /// The running manager could not be reached or read.
    #[error("{0}")]
    Manager(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What a backup says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// The cluster it is of.
    pub cluster_id: String,
    /// The manager it was taken from (the restored manager is that node).
    pub node_id: String,
    /// When, in seconds since the Unix epoch.
    pub taken_at: u64,
    /// The store revision its state is consistent at.
    pub revision: u64,
}

/// A decoded backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// What it says about itself.
    pub header: BackupHeader,
    /// Files of the data directory, by path relative to it.
    pub files: Vec<(String, Vec<u8>)>,
    /// The replicated state.
    pub kvs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The control API's `Backup`: the whole state at one revision (a linearizable read), but the
/// leader's fence, in chunks of about 1 MiB.
pub(crate) async fn chunks(store: &Store) -> Result<Vec<v1::BackupChunk>, Status> {
    let range = store.range("").await.map_err(|e| Status::unavailable(format!("cannot read the state: {e}")))?;
    let mut chunks = Vec::new();
    let mut chunk = v1::BackupChunk { revision: range.revision, entries: Vec::new() };
    let mut bytes = 0;
    for kv in range.kvs.into_iter().filter(|kv| kv.key != LEADER_FENCE.as_bytes()) {
        bytes += kv.key.len() + kv.value.len();
        chunk.entries.push(v1::BackupEntry { key: kv.key, value: kv.value });
        if bytes >= CHUNK_BYTES {
            chunks
                .push(std::mem::replace(&mut chunk, v1::BackupChunk { revision: range.revision, entries: Vec::new() }));
            bytes = 0;
        }
    }
    chunks.push(chunk);
    Ok(chunks)
}

fn invalid(reason: impl Into<String>) -> BackupError {
    BackupError::Invalid(reason.into())
}

fn record(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
}

fn pair(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + a.len() + b.len());
    body.extend_from_slice(&(a.len() as u32).to_le_bytes());
    body.extend_from_slice(a);
    body.extend_from_slice(b);
    body
}

fn unpair(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = usize::try_from(u32::from_le_bytes(body.get(..4)?.try_into().ok()?)).ok()?;
    let first = body.get(4..4 + len)?;
    Some((first, &body[4 + len..]))
}

/// A path a backup may carry: relative, inside one of [`CARRIED`], nothing like `..`.
fn carried_path(path: &str) -> bool {
    let p = Path::new(path);
    p.components().all(|c| matches!(c, Component::Normal(_)))
        && p.components().next().is_some_and(|first| CARRIED.iter().any(|c| Path::new(c) == Path::new(&first)))
}

impl Backup {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&FORMAT.to_le_bytes());
        // A header of four plain fields always serializes.
        let header = serde_json::to_vec(&self.header).unwrap_or_default();
        record(&mut out, TAG_HEADER, &header);
        for (path, bytes) in &self.files {
            record(&mut out, TAG_FILE, &pair(path.as_bytes(), bytes));
        }
        for (key, value) in &self.kvs {
            record(&mut out, TAG_KV, &pair(key, value));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, &out);
        record(&mut out, TAG_END, digest.as_ref());
        out
    }

    /// Reads a backup file's bytes; refuses one that is not a backup, is cut short, altered, or
    /// names a file outside what a backup carries.
    pub fn decode(bytes: &[u8]) -> Result<Self, BackupError> {
        let Some(rest) = bytes.strip_prefix(MAGIC) else {
            return Err(invalid("this is not a Shoal backup (it does not start with SHOAL-BACKUP)"));
        };
        let format = rest.get(..4).map(|f| u32::from_le_bytes([f[0], f[1], f[2], f[3]]));
        match format {
            Some(FORMAT) => {}
            Some(other) => {
                return Err(invalid(format!(
                    "the backup is in format {other}; this shoal-manager reads format {FORMAT}"
                )));
            }
            None => return Err(invalid("the backup is truncated: it ends inside its header")),
        }
        let mut at = MAGIC.len() + 4;
        let (mut header, mut files, mut kvs) = (None, Vec::new(), Vec::new());
        loop {
            let start = at;
            let head = bytes.get(at..at + 9).ok_or_else(|| {
                invalid(format!(
                    "the backup is truncated: it ends at byte {} without its end record; take the backup again",
                    bytes.len()
                ))
            })?;
            let tag = head[0];
            let len = u64::from_le_bytes(head[1..9].try_into().unwrap_or_default());
            let len = usize::try_from(len).map_err(|_| invalid("the backup is corrupt: a record is too long"))?;
            let body = at
                .checked_add(9)
                .and_then(|b| Some((b, b.checked_add(len)?)))
                .and_then(|(b, e)| bytes.get(b..e))
                .ok_or_else(|| {
                    invalid(format!(
                        "the backup is truncated: a record at byte {start} runs past its end ({} bytes); take the \
                         backup again",
                        bytes.len()
                    ))
                })?;
            at += 9 + len;
            match tag {
                TAG_END => {
                    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes[..start]);
                    if digest.as_ref() != body {
                        return Err(invalid("the backup is corrupt: its checksum does not match its contents"));
                    }
                    if at != bytes.len() {
                        return Err(invalid(format!(
                            "the backup is corrupt: {} bytes follow its end",
                            bytes.len() - at
                        )));
                    }
                    break;
                }
                TAG_HEADER => {
                    header = Some(
                        serde_json::from_slice::<BackupHeader>(body)
                            .map_err(|e| invalid(format!("the backup's header does not parse: {e}")))?,
                    );
                }
                TAG_FILE => {
                    let (path, content) =
                        unpair(body).ok_or_else(|| invalid("the backup is corrupt: a file record"))?;
                    let path = String::from_utf8(path.to_vec())
                        .map_err(|_| invalid("the backup is corrupt: a file name is not UTF-8"))?;
                    if !carried_path(&path) {
                        return Err(invalid(format!("the backup names a file it may not carry: {path:?}")));
                    }
                    files.push((path, content.to_vec()));
                }
                TAG_KV => {
                    let (key, value) = unpair(body).ok_or_else(|| invalid("the backup is corrupt: a key record"))?;
                    kvs.push((key.to_vec(), value.to_vec()));
                }
                other => return Err(invalid(format!("the backup is corrupt: unknown record {other} at byte {start}"))),
            }
        }
        let header = header.ok_or_else(|| invalid("the backup is corrupt: it has no header"))?;
        Ok(Self { header, files, kvs })
    }
}

/// The files under `data_dir` a backup carries, with paths relative to it.
fn read_files(data_dir: &Path) -> Result<Vec<(String, Vec<u8>)>, BackupError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Io { path, source }
    };
    let mut files = Vec::new();
    for name in CARRIED {
        let path = data_dir.join(name);
        if path.is_file() {
            files.push(((*name).to_owned(), std::fs::read(&path).map_err(io(&path))?));
        } else if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(&path)
                .map_err(io(&path))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            entries.sort();
            for file in entries {
                let Some(leaf) = file.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
                files.push((format!("{name}/{leaf}"), std::fs::read(&file).map_err(io(&file))?));
            }
        }
    }
    Ok(files)
}

/// Whether the manager in `data_dir` keeps its keys encrypted (autolock): its backups need the
/// unlock key, and are sealed with it.
pub fn backup_needs_unlock_key(data_dir: &Path) -> Result<bool, BackupError> {
    crate::autolock::is_locked(data_dir).map_err(|e| BackupError::Manager(e.to_string()))
}

/// Whether `bytes` are a backup sealed with the unlock key ([`open_backup`] needs it).
pub fn backup_is_sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(SEALED_MAGIC)
}

/// Reads a backup file's bytes, sealed with the unlock key `kek` or not.
pub fn open_backup(bytes: &[u8], kek: Option<&UnlockKey>) -> Result<Backup, BackupError> {
    let Some(sealed) = bytes.strip_prefix(SEALED_MAGIC) else { return Backup::decode(bytes) };
    let kek =
        kek.ok_or_else(|| invalid("the backup is sealed with the cluster's unlock key (autolock): give the key"))?;
    let opened = kek.open_blob(sealed, "the backup").map_err(|e| invalid(e.to_string()))?;
    Backup::decode(&opened)
}

/// Takes a backup from the manager running on this host with `data_dir`: its state through the
/// control API (with this node's own certificate, opened with `kek` under autolock), its files
/// from the directory.
pub async fn take_backup(data_dir: &Path, kek: Option<&UnlockKey>) -> Result<Backup, BackupError> {
    let identity = crate::node::read_identity(data_dir).map_err(|e| BackupError::Manager(e.to_string()))?;
    let certs = data_dir.join("certs");
    let manager = |reason: String| BackupError::Manager(reason);
    let live = LiveCredentials::load_encrypted(&certs, KeyEncryption::new(kek.cloned())).map_err(|e| {
        manager(match kek {
            None if crate::autolock::is_locked(data_dir).unwrap_or(false) => {
                "this manager's keys are encrypted (autolock): give the unlock key".to_owned()
            }
            _ => format!("{}: {e}", certs.display()),
        })
    })?;
    let tls = live_client_config(&live).map_err(|e| manager(e.to_string()))?;
    let addr = identity.advertise_addr.clone();
    let channel = shoal_api::connect(&addr, tls).await.map_err(|e| {
        manager(format!("cannot reach the manager of {} at {addr}: {e}; is it running?", data_dir.display()))
    })?;
    let mut control = v1::control_client::ControlClient::new(channel).max_decoding_message_size(64 << 20);
    let refused = |s: Status| manager(format!("the manager at {addr} refused the backup: {}", s.message()));
    let mut stream = control.backup(v1::BackupRequest {}).await.map_err(refused)?.into_inner();
    let (mut revision, mut kvs) = (0, Vec::new());
    while let Some(chunk) = stream.message().await.map_err(refused)? {
        revision = chunk.revision;
        kvs.extend(chunk.entries.into_iter().map(|e| (e.key, e.value)));
    }
    let taken_at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    let header = BackupHeader { cluster_id: identity.cluster_id, node_id: identity.node_id, taken_at, revision };
    Ok(Backup { header, files: read_files(data_dir)?, kvs })
}

/// Writes `backup` to `path`, mode 0600, durably; sealed with `kek` when one is given.
pub fn write_backup(backup: &Backup, path: &Path, kek: Option<&UnlockKey>) -> Result<(), BackupError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| BackupError::Io { path: path.to_path_buf(), source };
    let bytes = match kek {
        None => backup.encode(),
        Some(kek) => {
            let mut bytes = SEALED_MAGIC.to_vec();
            bytes.extend(kek.seal_blob(&backup.encode()).map_err(|e| BackupError::Manager(e.to_string()))?);
            bytes
        }
    };
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Writes the files of `backup` into `data_dir` (which must hold no manager) and seeds its Raft
/// store with the state; `advertise_addr` replaces the address the backup recorded; `kek` is the
/// unlock key its key files are encrypted with (autolock). Then `start` runs it as a new
/// single-manager cluster (given the same key in `ManagerConfig::unlock_key`).
pub async fn restore(
    backup: &Backup,
    data_dir: &Path,
    advertise_addr: Option<String>,
    kek: Option<&UnlockKey>,
) -> Result<(), StartError> {
    let bad = |reason: String| StartError::DataDir { path: data_dir.to_path_buf(), reason };
    if let Ok(existing) = crate::node::read_identity(data_dir) {
        return Err(bad(if existing.cluster_id == backup.header.cluster_id {
            "holds a manager of this cluster already; restore into an empty --data-dir (move this one aside)".to_owned()
        } else {
            format!(
                "holds a manager of cluster {}, and the backup is of cluster {}; restore into an empty --data-dir",
                existing.cluster_id, backup.header.cluster_id
            )
        }));
    }
    if std::fs::read_dir(data_dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(bad("is not empty; restore into an empty --data-dir".to_owned()));
    }
    for (path, content) in &backup.files {
        let target = data_dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|source| StartError::Io { path: parent.to_path_buf(), source })?;
        }
        write_private_file(&target, content).map_err(|source| StartError::Io { path: target.clone(), source })?;
    }
    let mut identity = crate::node::read_identity(data_dir)?;
    if identity.node_id != backup.header.node_id || identity.cluster_id != backup.header.cluster_id {
        return Err(bad("the backup's manager.json does not match its header; the backup is not usable".to_owned()));
    }
    if let Some(addr) = advertise_addr {
        identity.advertise_addr = addr;
        crate::node::write_identity(data_dir, &identity)?;
    }
    let config = crate::node::store_config_for(data_dir, &identity, kek)?;
    crate::recovery::seed(config, &backup.kvs).await?;
    tracing::warn!(
        cluster.id = %backup.header.cluster_id,
        node.id = %backup.header.node_id,
        revision = backup.header.revision,
        keys = backup.kvs.len(),
        "restored a backup: a new single-member Raft group holds its state"
    );
    Ok(())
}

fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests;

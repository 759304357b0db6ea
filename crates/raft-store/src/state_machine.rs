//! The in-memory key-value state machine: revisions, transactions, watch history and watchers,
//! and snapshots written atomically to disk.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::Path;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::task::Context;
use std::task::Poll;

use futures::Stream;
use futures::TryStreamExt;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use tokio::sync::mpsc;

use crate::codec;
use crate::codec::Decode;
use crate::codec::DecodeError;
use crate::codec::Encode;
use crate::codec::Reader;
use crate::crypto::Sealer;
use crate::error::OpenError;
use crate::error::WatchError;
use crate::log_store::write_atomically;
use crate::types::CommandResult;
use crate::types::Compare;
use crate::types::Event;
use crate::types::EventKind;
use crate::types::KeyValue;
use crate::types::LogId;
use crate::types::NodeId;
use crate::types::Op;
use crate::types::SnapshotMeta;
use crate::types::StoredMembership;
use crate::types::Txn;
use crate::types::TxnOutcome;
use crate::types::TypeConfig;

const SNAPSHOT_FILE: &str = "current.snap";
/// Snapshot files start with this magic; its last byte is the format version.
const SNAPSHOT_MAGIC: &[u8; 8] = b"SHSNP\x00\x00\x02";
const SNAPSHOT_AAD: &[u8] = b"shoal-raft-snapshot";

/// The serialised state machine carried by a snapshot (binary, [`crate::codec`]; plain on the
/// wire, encryption is per member).
#[derive(Debug)]
pub(crate) struct SnapshotBody {
    /// The store revision the snapshot was taken at.
    pub(crate) revision: u64,
    /// Every key-value, in key order.
    pub(crate) kvs: Vec<KeyValue>,
}

impl Encode for SnapshotBody {
    fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.size_hint());
        self.revision.encode(out);
        codec::put_items(out, &self.kvs);
    }

    fn size_hint(&self) -> usize {
        16 + self.kvs.iter().map(Encode::size_hint).sum::<usize>()
    }
}

impl Decode for SnapshotBody {
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(SnapshotBody { revision: u64::decode(r)?, kvs: codec::get_items(r, "snapshot keys")? })
    }
}

struct Watcher {
    prefix: Vec<u8>,
    tx: mpsc::UnboundedSender<Result<Event, WatchError>>,
}

struct KvState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    revision: u64,
    kv: BTreeMap<Vec<u8>, KeyValue>,
    /// Recent events in revision order, for watches that start in the past.
    history: VecDeque<Event>,
    /// The oldest revision a watch may start from.
    oldest_watchable: u64,
    watchers: Vec<Watcher>,
}

pub(crate) struct SmShared {
    node: NodeId,
    dir: PathBuf,
    sealer: Arc<Sealer>,
    history_limit: usize,
    state: Mutex<KvState>,
    /// The last log id of the snapshot file on disk; held while the file is replaced so a
    /// snapshot built from an older state never overwrites a newer installed one.
    on_disk: Mutex<Option<LogId>>,
}

/// The state machine handed to openraft; clones share state with the [`crate::Store`] handle.
#[derive(Clone)]
pub(crate) struct StateMachine {
    pub(crate) shared: Arc<SmShared>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine").field("node", &self.shared.node).finish()
    }
}

fn snapshot_corrupt(path: &Path, reason: impl Into<String>) -> OpenError {
    OpenError::Corrupt { path: path.to_path_buf(), offset: 0, reason: reason.into() }
}

impl StateMachine {
    /// Opens the state machine, loading the last snapshot in `dir` if there is one.
    pub(crate) fn open(
        node: NodeId,
        dir: PathBuf,
        sealer: Arc<Sealer>,
        history_limit: usize,
    ) -> Result<Self, OpenError> {
        fs::create_dir_all(&dir).map_err(|source| OpenError::Io { path: dir.clone(), source })?;
        let mut state = KvState {
            last_applied: None,
            membership: StoredMembership::default(),
            revision: 0,
            kv: BTreeMap::new(),
            history: VecDeque::new(),
            oldest_watchable: 1,
            watchers: Vec::new(),
        };
        let path = dir.join(SNAPSHOT_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                if bytes.len() >= 8 && bytes[..7] == SNAPSHOT_MAGIC[..7] && bytes[7] != SNAPSHOT_MAGIC[7] {
                    return Err(OpenError::Format {
                        path,
                        found: bytes[7],
                        supported: SNAPSHOT_MAGIC[7],
                        hint: crate::log_store::OLD_FORMAT_HINT,
                    });
                }
                let (meta, body) = decode_snapshot_file(&sealer, &bytes).map_err(|e| snapshot_corrupt(&path, e))?;
                let body: SnapshotBody =
                    codec::from_slice(&body).map_err(|e| snapshot_corrupt(&path, e.to_string()))?;
                tracing::info!(
                    node.id = node,
                    snapshot.revision = body.revision,
                    snapshot.keys = body.kvs.len(),
                    "state machine restored from snapshot"
                );
                state.last_applied = meta.last_log_id;
                state.membership = meta.last_membership;
                state.revision = body.revision;
                state.oldest_watchable = body.revision + 1;
                state.kv = body.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(OpenError::Io { path, source }),
        }
        let on_disk = Mutex::new(state.last_applied);
        Ok(Self {
            shared: Arc::new(SmShared {
                node,
                dir,
                sealer,
                history_limit: history_limit.max(1),
                state: Mutex::new(state),
                on_disk,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, KvState> {
        self.shared.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current store revision.
    pub(crate) fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// How many keys the applied state holds, and its revision.
    pub(crate) fn size(&self) -> (u64, u64) {
        let st = self.lock();
        (st.kv.len() as u64, st.revision)
    }

    /// Reads one key from the applied state.
    pub(crate) fn get(&self, key: &[u8]) -> (Option<KeyValue>, u64) {
        let st = self.lock();
        (st.kv.get(key).cloned(), st.revision)
    }

    /// Reads every key under `prefix` from the applied state.
    pub(crate) fn range(&self, prefix: &[u8]) -> (Vec<KeyValue>, u64) {
        let st = self.lock();
        let kvs =
            st.kv.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v.clone()).collect();
        (kvs, st.revision)
    }

    /// Starts a watch on `prefix` from `from_revision` (0: from the next change).
    pub(crate) fn watch(&self, prefix: Vec<u8>, from_revision: u64) -> Result<WatchStream, WatchError> {
        let mut st = self.lock();
        let from = if from_revision == 0 { st.revision + 1 } else { from_revision };
        if from < st.oldest_watchable {
            return Err(WatchError::Compacted { requested: from, oldest: st.oldest_watchable });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for ev in st.history.iter().filter(|e| e.kv.mod_revision >= from && e.kv.key.starts_with(&prefix)) {
            let _ = tx.send(Ok(ev.clone()));
        }
        st.watchers.push(Watcher { prefix, tx });
        Ok(WatchStream { rx })
    }

    /// Ends every watch with an error: used when the store shuts down.
    pub(crate) fn close_watchers(&self) {
        let node = self.shared.node;
        let mut st = self.lock();
        for w in st.watchers.drain(..) {
            let _ = w.tx.send(Err(WatchError::Stopped { node }));
        }
    }

    fn apply_txn(st: &mut KvState, txn: &Txn, history_limit: usize) -> TxnOutcome {
        let holds = txn.compares.iter().all(|c| match c {
            Compare::ModRevision { key, revision } => st.kv.get(key).map_or(0, |kv| kv.mod_revision) == *revision,
            Compare::Exists { key } => st.kv.contains_key(key),
            Compare::Missing { key } => !st.kv.contains_key(key),
        });
        let ops = if holds { &txn.success } else { &txn.failure };
        let rev = st.revision + 1;
        let mut events = Vec::new();
        let mut deleted = 0;
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    let kv = match st.kv.get(key) {
                        Some(old) => KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: old.create_revision,
                            mod_revision: rev,
                            version: old.version + 1,
                        },
                        None => KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: rev,
                            mod_revision: rev,
                            version: 1,
                        },
                    };
                    st.kv.insert(key.clone(), kv.clone());
                    events.push(Event { kind: EventKind::Put, kv });
                }
                Op::Delete { key } => {
                    if st.kv.remove(key).is_some() {
                        deleted += 1;
                        events.push(Event {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                key: key.clone(),
                                value: Vec::new(),
                                create_revision: 0,
                                mod_revision: rev,
                                version: 0,
                            },
                        });
                    }
                }
            }
        }
        if !events.is_empty() {
            st.revision = rev;
            st.watchers.retain(|w| {
                events.iter().filter(|e| e.kv.key.starts_with(&w.prefix)).all(|e| w.tx.send(Ok(e.clone())).is_ok())
            });
            st.history.extend(events);
            // Trim whole revisions so a watch never starts in the middle of a transaction.
            while st.history.len() > history_limit {
                let Some(first) = st.history.front().map(|e| e.kv.mod_revision) else { break };
                while st.history.front().is_some_and(|e| e.kv.mod_revision == first) {
                    st.history.pop_front();
                }
                st.oldest_watchable = first + 1;
            }
        }
        TxnOutcome { succeeded: holds, revision: st.revision, deleted }
    }

    fn snapshot_path(&self) -> PathBuf {
        self.shared.dir.join(SNAPSHOT_FILE)
    }

    /// Seals and writes the snapshot file atomically (with fsyncs): blocking, so async callers
    /// run it through [`blocking`].
    fn write_snapshot_file(&self, meta: &SnapshotMeta, body: &[u8]) -> io::Result<()> {
        let file = encode_snapshot_file(&self.shared.sealer, meta, body)?;
        let mut on_disk = self.shared.on_disk.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *on_disk > meta.last_log_id {
            tracing::debug!(
                node.id = self.shared.node,
                snapshot.last_log_id = ?meta.last_log_id,
                snapshot.on_disk = ?*on_disk,
                "not replacing a newer snapshot file"
            );
            return Ok(());
        }
        write_atomically(&self.shared.dir, SNAPSHOT_FILE, &file)?;
        *on_disk = meta.last_log_id;
        Ok(())
    }
}

/// Runs file work that syncs to disk (and the encoding around it) on tokio's blocking pool, so
/// a large snapshot's writes and fsyncs do not hold up an async worker thread and every task
/// queued on it.
async fn blocking<R: Send + 'static>(work: impl FnOnce() -> io::Result<R> + Send + 'static) -> io::Result<R> {
    tokio::task::spawn_blocking(work).await.map_err(|e| io::Error::other(format!("snapshot file task failed: {e}")))?
}

/// The bytes of a snapshot file: the magic, a CRC32, then (sealed) `[meta len u32 LE][meta][body]`.
fn encode_snapshot_file(sealer: &Sealer, meta: &SnapshotMeta, body: &[u8]) -> io::Result<Vec<u8>> {
    let meta_bytes = codec::to_vec(meta);
    let mut plain = Vec::with_capacity(4 + meta_bytes.len() + body.len());
    plain.extend_from_slice(&u32::try_from(meta_bytes.len()).map_err(io::Error::other)?.to_le_bytes());
    plain.extend_from_slice(&meta_bytes);
    plain.extend_from_slice(body);
    let mut sealed = Vec::with_capacity(plain.len() + 64);
    sealer.seal_into(SNAPSHOT_AAD, &plain, &mut sealed).map_err(io::Error::other)?;
    let mut file = Vec::with_capacity(sealed.len() + 12);
    file.extend_from_slice(SNAPSHOT_MAGIC);
    file.extend_from_slice(&crc32fast::hash(&sealed).to_le_bytes());
    file.extend_from_slice(&sealed);
    Ok(file)
}

/// Reads a plain (not encrypted) snapshot file's meta and body as [`StateMachine::open`] does,
/// without touching any file. For the fuzz tests ([`crate::fuzz`]).
pub(crate) fn read_plain_snapshot_file(bytes: &[u8]) -> Result<(SnapshotMeta, SnapshotBody), String> {
    let sealer = Sealer::new(None).map_err(|e| e.to_string())?;
    let (meta, body) = decode_snapshot_file(&sealer, bytes)?;
    let body: SnapshotBody = codec::from_slice(&body).map_err(|e| e.to_string())?;
    Ok((meta, body))
}

/// The bytes of a plain snapshot file holding `meta` and `body`. For the fuzz tests
/// ([`crate::fuzz`]).
pub(crate) fn plain_snapshot_file(meta: &SnapshotMeta, body: &SnapshotBody) -> Vec<u8> {
    let sealer = Sealer::new(None).expect("a sealer without a key cannot fail");
    // Without a key nothing can fail but a meta over 4 GiB, which no snapshot has.
    encode_snapshot_file(&sealer, meta, &codec::to_vec(body)).expect("a plain snapshot file encodes")
}

fn decode_snapshot_file(sealer: &Sealer, bytes: &[u8]) -> Result<(SnapshotMeta, Vec<u8>), String> {
    if bytes.len() < 12 || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err("snapshot header is wrong".into());
    }
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let sealed = &bytes[12..];
    if crc32fast::hash(sealed) != crc {
        return Err("snapshot checksum mismatch".into());
    }
    let plain = sealer.open(SNAPSHOT_AAD, sealed).map_err(|e| e.to_string())?;
    if plain.len() < 4 {
        return Err("snapshot body is incomplete".into());
    }
    let meta_len = u32::from_le_bytes([plain[0], plain[1], plain[2], plain[3]]) as usize;
    if plain.len() < 4 + meta_len {
        return Err("snapshot meta is incomplete".into());
    }
    let meta: SnapshotMeta = codec::from_slice(&plain[4..4 + meta_len]).map_err(|e| e.to_string())?;
    Ok((meta, plain[4 + meta_len..].to_vec()))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>, io::Error> {
        // Copy under the lock (cheap), encode outside it, so applies are not held up by a large state.
        let (meta, body) = {
            let st = self.lock();
            let body = SnapshotBody { revision: st.revision, kvs: st.kv.values().cloned().collect() };
            let meta = SnapshotMeta { last_log_id: st.last_applied, last_membership: st.membership.clone() };
            (meta, body)
        };
        let this = self.clone();
        let (meta, body) = blocking(move || {
            let body = codec::to_vec(&body);
            this.write_snapshot_file(&meta, &body)?;
            Ok((meta, body))
        })
        .await?;
        tracing::info!(
            node.id = self.shared.node,
            snapshot.last_log_id = ?meta.last_log_id,
            snapshot.bytes = body.len(),
            "snapshot written"
        );
        Ok(openraft::alias::SnapshotOf::<TypeConfig, Vec<u8>> { meta, snapshot: body })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let st = self.lock();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let limit = self.shared.history_limit;
        while let Some((entry, responder)) = entries.try_next().await? {
            let result = {
                let mut st = self.lock();
                st.last_applied = Some(entry.log_id);
                match &entry.payload {
                    EntryPayload::Blank => {
                        CommandResult { outcome: TxnOutcome { succeeded: true, revision: st.revision, deleted: 0 } }
                    }
                    EntryPayload::Normal(cmd) => CommandResult { outcome: Self::apply_txn(&mut st, &cmd.txn, limit) },
                    EntryPayload::Membership(m) => {
                        st.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                        CommandResult { outcome: TxnOutcome { succeeded: true, revision: st.revision, deleted: 0 } }
                    }
                }
            };
            if let Some(responder) = responder {
                responder.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Vec<u8>) -> Result<(), io::Error> {
        let this = self.clone();
        let file_meta = meta.clone();
        let body = blocking(move || {
            let body: SnapshotBody =
                codec::from_slice(&snapshot).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            // Durable first: a crash after this point restarts from the installed snapshot.
            this.write_snapshot_file(&file_meta, &snapshot)?;
            Ok(body)
        })
        .await?;
        let node = self.shared.node;
        let mut st = self.lock();
        tracing::info!(
            node.id = node,
            snapshot.last_log_id = ?meta.last_log_id,
            snapshot.revision = body.revision,
            "snapshot installed"
        );
        st.last_applied = meta.last_log_id;
        st.membership = meta.last_membership.clone();
        st.revision = body.revision;
        st.kv = body.kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        st.history.clear();
        st.oldest_watchable = body.revision + 1;
        // Watchers cannot be told what changed in between: end them so they re-read and re-watch.
        let oldest = st.oldest_watchable;
        for w in st.watchers.drain(..) {
            let _ = w.tx.send(Err(WatchError::Compacted { requested: oldest, oldest }));
        }
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>>, io::Error> {
        let path = self.snapshot_path();
        let sealer = self.shared.sealer.clone();
        blocking(move || {
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let (meta, body) = decode_snapshot_file(&sealer, &bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
            Ok(Some(openraft::alias::SnapshotOf::<TypeConfig, Vec<u8>> { meta, snapshot: body }))
        })
        .await
    }
}

/// An ordered stream of changes under a prefix, from [`crate::Store::watch`].
///
/// Yields `Ok(event)` in revision order; yields one `Err` and ends when the watch cannot continue
/// (a snapshot replaced the history this member keeps, or the store stopped). Events wait in an
/// unbounded buffer until read: a watcher that stops reading should drop the stream.
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::UnboundedReceiver<Result<Event, WatchError>>,
}

impl WatchStream {
    /// The next event, or `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Result<Event, WatchError>> {
        self.rx.recv().await
    }
}

impl Stream for WatchStream {
    type Item = Result<Event, WatchError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests;

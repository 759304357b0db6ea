//! The durable Raft log: segment files of length- and CRC-framed records, written by one thread
//! that group-commits appends with one fsync per batch.
//!
//! Layout under the log directory:
//! - `meta.json`: vote, last purged log id and a lower bound of the committed log id, replaced
//!   atomically (temp file, fsync, rename, fsync dir);
//! - `NNNNNNNNNNNNNNNNNNNN.log`: a segment named after the index of its first record; each file
//!   starts with an 8-byte magic whose last byte is the format version (2) and holds records
//!   `[len u32 LE][crc32 u32 LE][payload]`, where the payload is the binary encoding of one entry
//!   ([`crate::codec`]) followed by an end mark, sealed when encryption at rest is on. A segment in
//!   format 1 (the JSON records of earlier versions) refuses to open with [`OpenError::Format`].
//!   The last segment is zero-filled ahead of its records (up to 1 MiB at a time, synced once), so
//!   an append's fdatasync has no file size to journal; a sealed segment is trimmed to its last
//!   record.
//!
//! The writer thread polls for the next operation for a short while before it sleeps
//! ([`LogOptions::spin`]): waking a sleeping thread on a VM whose idle vCPUs halt can take
//! milliseconds, which was most of the 1-client p99.
//!
//! Architecture invariant: every entry the log store acknowledges through its `IOFlushed` callback
//! is on disk (fsynced). On open, a record torn by a crash mid-append at the very end of the last
//! segment is cut off: incomplete, or a valid header over data that reads back as zeros (pages
//! never written). Any other damage, such as a checksum mismatch elsewhere, refuses to open with
//! the file and offset.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs;
use std::fs::File;
use std::fs::OpenOptions;
use std::io;
use std::io::Write;
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;
use std::time::Instant;

use openraft::OptionalSend;
use openraft::RaftLogReader;
use openraft::storage::IOFlushed;
use openraft::storage::LogState;
use openraft::storage::RaftLogStorage;
use serde::Deserialize;
use serde::Serialize;

use crate::codec;
use crate::codec::Encode;
use crate::crypto::Sealer;
use crate::error::OpenError;
use crate::types::Entry;
use crate::types::LogId;
use crate::types::TypeConfig;
use crate::types::Vote;

/// Segment files start with this magic; its last byte is the record format version.
const SEGMENT_MAGIC: &[u8; 8] = b"SHLOG\x00\x00\x02";
/// Every record's plain payload ends with this byte, so a record whose last data page never
/// reached the disk (reads back as zeros) cannot pass for one that ends in zeros.
const RECORD_END: u8 = 0xa5;
/// What an operator should do with a log or snapshot in an older format.
pub(crate) const OLD_FORMAT_HINT: &str = "it was written by an earlier Shoal (JSON records); there is no \
    converter: remove this member's data directory and add the member to the cluster again, which \
    copies the state from the leader";
const RECORD_HEADER: usize = 8;
const LOG_AAD: &[u8] = b"shoal-raft-log";
/// Records larger than this are treated as damage, not as a real length.
const MAX_RECORD: usize = 256 << 20;
const META_FILE: &str = "meta.json";
/// Segments grow in steps of zeros written ahead of the records (at most this much), so that an
/// append overwrites allocated blocks and its fdatasync has no file size or extent to journal.
const PREALLOCATE: u64 = 1 << 20;

/// How the log store is laid out and synced.
#[derive(Debug, Clone)]
pub(crate) struct LogOptions {
    /// Directory holding `meta.json` and the segments.
    pub(crate) dir: PathBuf,
    /// A segment is closed and a new one started once it grows past this many bytes.
    pub(crate) segment_bytes: u64,
    /// Whether appends are fsynced (off only for benchmarks that measure the rest).
    pub(crate) fsync: bool,
    /// How long the writer thread polls for the next operation after finishing one before it
    /// sleeps (zero: sleep at once). See [`crate::StoreConfig::log_writer_spin`].
    pub(crate) spin: Duration,
    /// Test hook: a segment write that would grow the log's segments past this many bytes writes
    /// only part of its records and fails as a full disk would.
    pub(crate) disk_full_after: Option<u64>,
    /// Every entry counts as committed at open (see [`crate::StoreConfig::recover_whole_log`]).
    pub(crate) whole_log_committed: bool,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Meta {
    vote: Option<Vote>,
    last_purged: Option<LogId>,
    committed: Option<LogId>,
}

#[derive(Debug, Default)]
struct MemLog {
    entries: BTreeMap<u64, Entry>,
    meta: Meta,
    /// The highest index known to be on disk, used to clamp the persisted committed log id.
    durable_index: Option<u64>,
}

/// The Raft log storage of one member; clones share the same log (a clone is the log reader).
#[derive(Clone)]
pub(crate) struct LogStore {
    shared: Arc<Shared>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("dir", &self.shared.dir).finish()
    }
}

struct Shared {
    dir: PathBuf,
    mem: Mutex<MemLog>,
    writer: Mutex<Option<mpsc::Sender<WriteOp>>>,
    /// Fires when the writer thread has exited.
    done: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    sealer: Arc<Sealer>,
}

impl Shared {
    /// Queues a last meta write (the committed lower bound) and lets the writer thread exit.
    fn stop_writer(&self) {
        let sender = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(tx) = sender {
            let meta = lock(&self.mem).meta.clone();
            let (reply, _) = tokio::sync::oneshot::channel();
            let _ = tx.send(WriteOp::Meta { meta, reply });
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop_writer();
    }
}

/// Framed records of one `append` call, waiting for the writer thread.
struct PendingAppend {
    records: Vec<u8>,
    first_index: u64,
    last_index: u64,
    callback: IOFlushed<TypeConfig>,
}

enum WriteOp {
    Append(PendingAppend),
    Truncate { after: Option<u64>, reply: tokio::sync::oneshot::Sender<io::Result<()>> },
    Purge { upto: u64, reply: tokio::sync::oneshot::Sender<io::Result<()>> },
    Meta { meta: Meta, reply: tokio::sync::oneshot::Sender<io::Result<()>> },
}

/// One segment file as the writer thread tracks it.
#[derive(Debug)]
struct Segment {
    first_index: u64,
    path: PathBuf,
    /// End of the last whole record.
    len: u64,
    /// File length: `len` plus zeros written ahead.
    allocated: u64,
    /// `(index, offset)` of every record, in order.
    offsets: Vec<(u64, u64)>,
}

fn segment_name(first_index: u64) -> String {
    format!("{first_index:020}.log")
}

fn lock(mem: &Mutex<MemLog>) -> MutexGuard<'_, MemLog> {
    // A panic while holding the lock leaves plain data behind; keep serving it.
    mem.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes `bytes` to `dir/name` atomically: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// Writes zeros from `from` up to `to` and syncs the new file length; returns `to`.
fn write_ahead(file: &File, from: u64, to: u64) -> io::Result<u64> {
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    let mut at = from;
    while at < to {
        let n = usize::try_from((to - at).min(ZEROS.len() as u64)).unwrap_or(ZEROS.len());
        file.write_all_at(&ZEROS[..n], at)?;
        at += n as u64;
    }
    file.sync_all()?;
    Ok(to)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LogStore {
    /// Opens (or creates) the log in `options.dir`, repairing a torn tail and refusing any other
    /// damage.
    pub(crate) fn open(options: LogOptions, sealer: Arc<Sealer>) -> Result<Self, OpenError> {
        let dir = options.dir.clone();
        fs::create_dir_all(&dir).map_err(|source| OpenError::Io { path: dir.clone(), source })?;
        let meta_path = dir.join(META_FILE);
        let meta: Meta = match fs::read(&meta_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| OpenError::Corrupt {
                path: meta_path.clone(),
                offset: 0,
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Meta::default(),
            Err(source) => return Err(OpenError::Io { path: meta_path, source }),
        };
        let (segments, entries) = scan_segments(&dir, &sealer, meta.last_purged.as_ref().map(|l| l.index))?;
        let durable_index = entries.keys().next_back().copied();
        let mut meta = meta;
        if options.whole_log_committed
            && let Some(last) = entries.values().next_back().map(|e| e.log_id)
        {
            tracing::warn!(committed = ?meta.committed, last = %last, "recovery: every entry of the log counts as committed");
            meta.committed = Some(last);
        }
        let mem = MemLog { entries, meta, durable_index };
        tracing::info!(
            log.dir = %dir.display(),
            log.segments = segments.len(),
            log.entries = mem.entries.len(),
            "raft log opened"
        );
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            mem: Mutex::new(mem),
            writer: Mutex::new(Some(tx)),
            done: Mutex::new(Some(done_rx)),
            sealer,
        });
        let writer = Writer { options, segments, current: None, shared: Arc::downgrade(&shared), failed_at: None };
        thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || {
                writer.run(rx);
                let _ = done_tx.send(());
            })
            .map_err(|source| OpenError::Io { path: dir, source })?;
        Ok(Self { shared })
    }

    /// Persists meta, stops the writer thread and waits for it, so the directory can be opened
    /// again at once. Later writes fail.
    pub(crate) async fn close(&self) {
        self.shared.stop_writer();
        let done = self.shared.done.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(done) = done {
            let _ = done.await;
        }
    }

    fn send(&self, op: WriteOp) -> io::Result<()> {
        let guard = self.shared.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match guard.as_ref() {
            Some(tx) => tx.send(op).map_err(|_| io::Error::other("raft log writer thread stopped")),
            None => Err(io::Error::other("raft log is closed")),
        }
    }

    async fn request(
        &self,
        make: impl FnOnce(tokio::sync::oneshot::Sender<io::Result<()>>) -> WriteOp,
    ) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(make(tx))?;
        rx.await.map_err(|_| io::Error::other("raft log writer thread stopped"))?
    }

    async fn write_meta(&self) -> io::Result<()> {
        let meta = lock(&self.shared.mem).meta.clone();
        self.request(|reply| WriteOp::Meta { meta, reply }).await
    }
}

/// The plain payload of a record: the entry's binary encoding and [`RECORD_END`].
pub(crate) fn encode_record(entry: &Entry, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(entry.size_hint() + 1);
    entry.encode(out);
    out.push(RECORD_END);
}

/// Reads the plain payload of a record written by [`encode_record`].
pub(crate) fn decode_record(plain: &[u8]) -> Result<Entry, String> {
    match plain.split_last() {
        Some((&RECORD_END, body)) => codec::from_slice(body).map_err(|e| e.to_string()),
        _ => Err("record end mark is missing".into()),
    }
}

/// Reads every segment, returns them with the entries above `purged`, and cuts a torn tail.
fn scan_segments(
    dir: &Path,
    sealer: &Sealer,
    purged: Option<u64>,
) -> Result<(Vec<Segment>, BTreeMap<u64, Entry>), OpenError> {
    let io_err = |path: &Path, source| OpenError::Io { path: path.to_path_buf(), source };
    let mut names = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let item = item.map_err(|e| io_err(dir, e))?;
        let name = item.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".log") {
            let first: u64 = stem.parse().map_err(|_| OpenError::Corrupt {
                path: item.path(),
                offset: 0,
                reason: "segment file name is not a log index".into(),
            })?;
            names.push((first, item.path()));
        } else if name.ends_with(".tmp") {
            // A temp file from an interrupted atomic write: never renamed, so never valid.
            fs::remove_file(item.path()).map_err(|e| io_err(&item.path(), e))?;
        }
    }
    names.sort();
    // Segments wholly at or below the purge point are removed first. `meta.json` records a purge
    // before its segments are removed, so a crash in between leaves them behind; and a purge past
    // the end of the log (a snapshot install) leaves a gap before the next segment. Left in place,
    // the next append could land in one of them under the wrong name.
    // (The last segment is judged by its records, once read, below.)
    if let Some(p) = purged {
        let mut kept = Vec::with_capacity(names.len());
        for (i, (first_index, path)) in names.iter().enumerate() {
            // Every record of a segment is below the next segment's first index.
            let wholly_purged = names.get(i + 1).is_some_and(|(next_first, _)| *next_first <= p.saturating_add(1));
            if wholly_purged {
                tracing::info!(log.segment = %path.display(), log.last_purged = p, "removing a purged segment");
                fs::remove_file(path).map_err(|e| io_err(path, e))?;
            } else {
                kept.push((*first_index, path.clone()));
            }
        }
        if kept.len() != names.len() {
            sync_dir(dir).map_err(|e| io_err(dir, e))?;
        }
        names = kept;
    }
    let mut segments = Vec::new();
    let mut entries = BTreeMap::new();
    let mut expected: Option<u64> = None;
    let count = names.len();
    for (i, (first_index, path)) in names.into_iter().enumerate() {
        let is_last = i + 1 == count;
        let bytes = fs::read(&path).map_err(|e| io_err(&path, e))?;
        let corrupt = |offset: usize, reason: &str| OpenError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            reason: reason.into(),
        };
        if bytes.len() < SEGMENT_MAGIC.len() {
            if is_last && (bytes.iter().all(|b| *b == 0) || SEGMENT_MAGIC.starts_with(&bytes)) {
                tracing::warn!(log.segment = %path.display(), "removing a segment torn while being created");
                fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
                sync_dir(dir).map_err(|e| io_err(dir, e))?;
                continue;
            }
            return Err(corrupt(0, "segment header is incomplete"));
        }
        if bytes[..SEGMENT_MAGIC.len() - 1] == SEGMENT_MAGIC[..SEGMENT_MAGIC.len() - 1]
            && bytes[SEGMENT_MAGIC.len() - 1] != SEGMENT_MAGIC[SEGMENT_MAGIC.len() - 1]
        {
            return Err(OpenError::Format {
                path: path.clone(),
                found: bytes[SEGMENT_MAGIC.len() - 1],
                supported: SEGMENT_MAGIC[SEGMENT_MAGIC.len() - 1],
                hint: OLD_FORMAT_HINT,
            });
        }
        if &bytes[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
            return Err(corrupt(0, "segment header magic is wrong"));
        }
        if let Some(want) = expected
            && first_index != want
        {
            return Err(corrupt(0, &format!("segment starts at index {first_index}, expected {want}")));
        }
        let SegmentRecords { offsets, entries: read, next_index, torn_at } =
            scan_records(&bytes, first_index, is_last, sealer).map_err(|(offset, reason)| corrupt(offset, &reason))?;
        for entry in read {
            if purged.is_none_or(|p| entry.log_id.index > p) {
                entries.insert(entry.log_id.index, entry);
            }
        }
        let mut len = bytes.len() as u64;
        if let Some(at) = torn_at {
            if bytes[at..].iter().all(|b| *b == 0) {
                tracing::debug!(log.segment = %path.display(), log.offset = at, "dropping zeros written ahead");
            } else {
                tracing::warn!(
                    log.segment = %path.display(),
                    log.offset = at,
                    log.cut_bytes = bytes.len() - at,
                    "cutting a torn record at the end of the log"
                );
            }
            let f = OpenOptions::new().write(true).open(&path).map_err(|e| io_err(&path, e))?;
            f.set_len(at as u64).map_err(|e| io_err(&path, e))?;
            f.sync_all().map_err(|e| io_err(&path, e))?;
            len = at as u64;
        }
        if is_last
            && let Some(p) = purged
            && wholly_purged(first_index, offsets.last().map(|(i, _)| *i), p)
        {
            tracing::info!(log.segment = %path.display(), log.last_purged = p, "removing a purged segment");
            fs::remove_file(&path).map_err(|e| io_err(&path, e))?;
            sync_dir(dir).map_err(|e| io_err(dir, e))?;
            continue;
        }
        expected = Some(next_index);
        segments.push(Segment { first_index, path, len, allocated: len, offsets });
    }
    Ok((segments, entries))
}

/// The records of one segment file, as [`scan_records`] reads them.
#[derive(Debug, Default)]
struct SegmentRecords {
    /// `(index, offset)` of every whole record, in order.
    offsets: Vec<(u64, u64)>,
    /// The entry of every whole record, in order.
    entries: Vec<Entry>,
    /// The index the record after the last whole one would have.
    next_index: u64,
    /// In the last segment, where a torn tail starts: from there on the file is cut.
    torn_at: Option<usize>,
}

/// Reads the records of a segment file whose magic was checked, the first one having index
/// `first_index`; in the last segment (`is_last`) an incomplete record or zeros at the end are a
/// torn tail, elsewhere damage. Reads only `bytes` (no file is touched), so the fuzz tests reach
/// it through [`read_segment`]. Damage is `(offset, reason)`.
fn scan_records(
    bytes: &[u8],
    first_index: u64,
    is_last: bool,
    sealer: &Sealer,
) -> Result<SegmentRecords, (usize, String)> {
    let mut out = SegmentRecords { next_index: first_index, ..SegmentRecords::default() };
    let mut offset = SEGMENT_MAGIC.len();
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.iter().all(|b| *b == 0) && is_last {
            // A zero-filled tail: space allocated by a write that never completed.
            out.torn_at = Some(offset);
            break;
        }
        if rest.len() < RECORD_HEADER {
            if is_last {
                out.torn_at = Some(offset);
                break;
            }
            return Err((offset, "record header is incomplete".into()));
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len == 0 {
            // No record is empty: this is the zeroed space ahead of the records. In the last
            // segment anything after it is a write that never completed in order.
            if is_last {
                out.torn_at = Some(offset);
                break;
            }
            return Err((offset, "empty record".into()));
        }
        if len > MAX_RECORD {
            return Err((offset, format!("record length {len} is implausible")));
        }
        if rest.len() < RECORD_HEADER + len {
            if is_last {
                out.torn_at = Some(offset);
                break;
            }
            return Err((offset, "record is incomplete".into()));
        }
        let payload = &rest[RECORD_HEADER..RECORD_HEADER + len];
        if crc32fast::hash(payload) != crc {
            // The append being written when the machine crashed can have its header on disk
            // but not all of its data pages, which read back as zeros. Only that shape, at
            // the very end of the log, is a torn write; anything else is damage.
            let at_end = is_last && rest[RECORD_HEADER + len..].iter().all(|b| *b == 0);
            // (A whole record never ends in zeros: plain ones end in RECORD_END, sealed ones in
            // an authentication tag; 16 zeros, or all of a shorter one, are not a bit flip.)
            let unwritten_tail = payload[payload.len().saturating_sub(16)..].iter().all(|b| *b == 0);
            if at_end && unwritten_tail {
                out.torn_at = Some(offset);
                break;
            }
            return Err((offset, "record checksum mismatch".into()));
        }
        let plain = sealer.open(LOG_AAD, payload).map_err(|e| (offset, e.to_string()))?;
        let entry = decode_record(&plain).map_err(|e| (offset, format!("record does not decode: {e}")))?;
        if entry.log_id.index != out.next_index {
            return Err((offset, format!("record has index {}, expected {}", entry.log_id.index, out.next_index)));
        }
        out.offsets.push((out.next_index, offset as u64));
        out.entries.push(entry);
        // A crafted file name can start a segment at the last index there is.
        out.next_index = out.next_index.checked_add(1).ok_or((offset, "record index overflows".to_owned()))?;
        offset += RECORD_HEADER + len;
    }
    Ok(out)
}

/// Reads a whole plain (not encrypted) segment file as [`LogStore::open`] does, without touching
/// any file: its entries and where a torn tail starts. For the fuzz tests ([`crate::fuzz`]).
pub(crate) fn read_segment(
    bytes: &[u8],
    first_index: u64,
    is_last: bool,
) -> Result<(Vec<Entry>, Option<usize>), String> {
    if !bytes.starts_with(SEGMENT_MAGIC) {
        return Err("segment header magic is wrong".into());
    }
    let sealer = Sealer::new(None).map_err(|e| e.to_string())?;
    let records = scan_records(bytes, first_index, is_last, &sealer)
        .map_err(|(offset, reason)| format!("at offset {offset}: {reason}"))?;
    Ok((records.entries, records.torn_at))
}

/// A whole plain segment file holding `entries`, framed as the writer frames them. For the fuzz
/// tests ([`crate::fuzz`]).
pub(crate) fn encode_segment(entries: &[Entry]) -> Vec<u8> {
    let mut out = SEGMENT_MAGIC.to_vec();
    let mut plain = Vec::new();
    for entry in entries {
        encode_record(entry, &mut plain);
        out.extend_from_slice(&(plain.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&plain).to_le_bytes());
        out.extend_from_slice(&plain);
    }
    out
}

/// Whether a segment starting at `first_index` whose last record is `last_record` (none: it has
/// no records) holds nothing above the purge point `upto`.
fn wholly_purged(first_index: u64, last_record: Option<u64>, upto: u64) -> bool {
    match last_record {
        Some(last) => last <= upto,
        // An empty segment (its records cut as a torn tail) would take appends from its first
        // index on; once that is at or below the purge point, it can only be in the way.
        None => first_index <= upto.saturating_add(1),
    }
}

/// The single thread that writes segment files and `meta.json`.
struct Writer {
    options: LogOptions,
    segments: Vec<Segment>,
    current: Option<File>,
    shared: std::sync::Weak<Shared>,
    /// The first index of an append that failed, until an append continues the records on disk
    /// or a truncate or purge moves the log: appends queued behind a failed one must fail too,
    /// or one would start a segment past the gap and the log could never be opened again.
    failed_at: Option<u64>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<WriteOp>) {
        let mut pending: Option<WriteOp> = None;
        loop {
            let op = match pending.take() {
                Some(op) => op,
                None => match self.next_op(&rx) {
                    Some(op) => op,
                    None => break,
                },
            };
            match op {
                WriteOp::Append(first) => {
                    // Group commit: take every append already queued, write them all, fsync once.
                    let mut batch = vec![first];
                    while let Ok(next) = rx.try_recv() {
                        match next {
                            WriteOp::Append(more) => batch.push(more),
                            other => {
                                pending = Some(other);
                                break;
                            }
                        }
                    }
                    let result = self.refuse_past_failure(&batch).and_then(|()| self.append_batch(&batch));
                    match (&result, batch.first()) {
                        (Ok(()), _) => self.failed_at = None,
                        (Err(_), Some(first)) => {
                            self.failed_at =
                                Some(self.failed_at.map_or(first.first_index, |f| f.min(first.first_index)));
                        }
                        (Err(_), None) => {}
                    }
                    if let Err(e) = &result {
                        tracing::error!(error = %e, log.dir = %self.options.dir.display(), "raft log append failed");
                        // The files hold only whole records up to the failed batch; make memory agree.
                        if let Some(shared) = self.shared.upgrade()
                            && let Some(first) = batch.first()
                        {
                            let _ = lock(&shared.mem).entries.split_off(&first.first_index);
                        }
                    }
                    if result.is_ok()
                        && let Some(shared) = self.shared.upgrade()
                        && let Some(last) = batch.last()
                    {
                        lock(&shared.mem).durable_index = Some(last.last_index);
                    }
                    for PendingAppend { callback, .. } in batch {
                        let r = match &result {
                            Ok(()) => Ok(()),
                            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                        };
                        callback.io_completed(r);
                    }
                }
                WriteOp::Truncate { after, reply } => {
                    self.failed_at = None;
                    let _ = reply.send(self.truncate(after));
                }
                WriteOp::Purge { upto, reply } => {
                    self.failed_at = None;
                    let _ = reply.send(self.purge(upto));
                }
                WriteOp::Meta { meta, reply } => {
                    let _ = reply.send(self.write_meta(meta));
                }
            }
        }
        tracing::debug!(log.dir = %self.options.dir.display(), "raft log writer stopped");
    }

    /// Waits for the next operation, polling for `options.spin` before sleeping: on virtual
    /// machines whose idle vCPUs halt, a thread woken from sleep can wait milliseconds for its
    /// vCPU, which was most of the 1-client p99. Polling yields the CPU to any runnable thread,
    /// so it only uses time that would otherwise be idle, and only while writes keep coming.
    /// `None` once every sender is gone.
    fn next_op(&self, rx: &mpsc::Receiver<WriteOp>) -> Option<WriteOp> {
        let start = Instant::now();
        while start.elapsed() < self.options.spin {
            match rx.try_recv() {
                Ok(op) => return Some(op),
                Err(mpsc::TryRecvError::Empty) => thread::yield_now(),
                Err(mpsc::TryRecvError::Disconnected) => return None,
            }
        }
        rx.recv().ok()
    }

    fn write_meta(&self, mut meta: Meta) -> io::Result<()> {
        if let Some(shared) = self.shared.upgrade() {
            // Never claim a committed entry that is not durable here.
            let durable = lock(&shared.mem).durable_index;
            if let Some(c) = &meta.committed
                && durable.is_none_or(|d| c.index > d)
            {
                meta.committed = None;
            }
        }
        let bytes = serde_json::to_vec(&meta).map_err(io::Error::other)?;
        write_atomically(&self.options.dir, META_FILE, &bytes)
    }

    fn open_current(&mut self, first_index: u64) -> io::Result<()> {
        let needs_new = match self.segments.last() {
            None => true,
            Some(s) => {
                let next = s.first_index + s.offsets.len() as u64;
                if first_index < next {
                    return Err(io::Error::other(format!(
                        "raft log append at index {first_index} overlaps segment {} holding up to index {} \
                         (entries must be truncated before they are replaced)",
                        s.path.display(),
                        next - 1
                    )));
                }
                // An index that does not follow the last record (a purge past the end of the log,
                // as a snapshot install does) starts a segment named after it, so every segment
                // holds consecutive records from the index in its name.
                s.len >= self.options.segment_bytes || first_index != next
            }
        };
        if needs_new {
            self.current = None;
            if self.segments.last().is_some_and(|s| s.offsets.is_empty()) {
                // A segment without records (its tail cut as torn) is of no use: remove it.
                if let Some(seg) = self.segments.pop() {
                    fs::remove_file(&seg.path)?;
                    sync_dir(&self.options.dir)?;
                }
            } else if let Some(seg) = self.segments.last_mut() {
                // Seal the segment: its records durable, its zeros written ahead dropped, so
                // only the last segment can end in zeros.
                let f = OpenOptions::new().write(true).open(&seg.path)?;
                f.sync_data()?;
                f.set_len(seg.len)?;
                f.sync_all()?;
                seg.allocated = seg.len;
            }
            self.current = None;
            let path = self.options.dir.join(segment_name(first_index));
            let mut f = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
            f.write_all(SEGMENT_MAGIC)?;
            f.sync_all()?;
            sync_dir(&self.options.dir)?;
            tracing::debug!(log.segment = %path.display(), "new raft log segment");
            let len = SEGMENT_MAGIC.len() as u64;
            self.segments.push(Segment { first_index, path, len, allocated: len, offsets: Vec::new() });
        }
        if self.current.is_none() {
            let Some(seg) = self.segments.last() else {
                return Err(io::Error::other("no raft log segment to append to"));
            };
            self.current = Some(OpenOptions::new().write(true).open(&seg.path)?);
        }
        Ok(())
    }

    /// After a failed append, refuses a batch that does not continue the records on disk.
    fn refuse_past_failure(&self, batch: &[PendingAppend]) -> io::Result<()> {
        let (Some(failed), Some(first)) = (self.failed_at, batch.first()) else { return Ok(()) };
        let next = self.segments.last().map(|s| s.first_index + s.offsets.len() as u64);
        if next.is_none_or(|next| next == first.first_index) {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "raft log append at index {} refused: the append at index {failed} failed before it, and \
             writing past that would leave a gap in the log",
            first.first_index
        )))
    }

    fn append_batch(&mut self, batch: &[PendingAppend]) -> io::Result<()> {
        for PendingAppend { records, first_index, .. } in batch {
            self.open_current(*first_index)?;
            let before = self.segments.last().map(|s| s.len).unwrap_or(0);
            let allocated = self.segments.last().map(|s| s.allocated).unwrap_or(0);
            let total: u64 = self.segments.iter().map(|s| s.len).sum();
            let step = self.options.segment_bytes.clamp(1, PREALLOCATE);
            let file = self.current.as_mut().ok_or_else(|| io::Error::other("no raft log segment open"))?;
            let end = before + records.len() as u64;
            let mut new_allocated = allocated;
            let write = match self.options.disk_full_after {
                Some(limit) if total + records.len() as u64 > limit => {
                    let fits = usize::try_from(limit.saturating_sub(total)).unwrap_or(0).min(records.len());
                    file.write_all_at(&records[..fits], before)
                        .and(Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device (injected)")))
                }
                _ => {
                    let grown = if end > allocated {
                        write_ahead(file, allocated, end.max(allocated + step)).map(|to| new_allocated = to)
                    } else {
                        Ok(())
                    };
                    grown.and_then(|()| file.write_all_at(records, before))
                }
            };
            if let Err(e) = write {
                // Disk full or I/O error: roll back the partial write so the segment stays a
                // sequence of whole records.
                let _ = file.set_len(before);
                let _ = file.sync_all();
                if let Some(seg) = self.segments.last_mut() {
                    seg.allocated = before;
                }
                return Err(e);
            }
            let seg = self.segments.last_mut().ok_or_else(|| io::Error::other("segment vanished"))?;
            seg.allocated = new_allocated.max(end);
            let mut offset = 0usize;
            let mut index = *first_index;
            while offset + RECORD_HEADER <= records.len() {
                let len = u32::from_le_bytes([
                    records[offset],
                    records[offset + 1],
                    records[offset + 2],
                    records[offset + 3],
                ]) as usize;
                seg.offsets.push((index, before + offset as u64));
                index += 1;
                offset += RECORD_HEADER + len;
            }
            seg.len = before + records.len() as u64;
        }
        if self.options.fsync
            && let Some(f) = self.current.as_ref()
        {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Removes every record with an index above `after` (all records when `None`).
    fn truncate(&mut self, after: Option<u64>) -> io::Result<()> {
        let first_gone = after.map_or(0, |a| a + 1);
        let mut changed_dir = false;
        // Drop whole segments from the end first, so a crash leaves a prefix of the log.
        while let Some(seg) = self.segments.last() {
            if seg.first_index >= first_gone {
                self.current = None;
                fs::remove_file(&seg.path)?;
                changed_dir = true;
                self.segments.pop();
            } else {
                break;
            }
        }
        if changed_dir {
            sync_dir(&self.options.dir)?;
        }
        if let Some(seg) = self.segments.last_mut()
            && let Some(pos) = seg.offsets.iter().position(|(i, _)| *i >= first_gone)
        {
            self.current = None;
            if pos == 0 {
                // No record would remain: remove the file so a later append names its own.
                fs::remove_file(&seg.path)?;
                self.segments.pop();
                return sync_dir(&self.options.dir);
            }
            let cut = seg.offsets[pos].1;
            let f = OpenOptions::new().write(true).open(&seg.path)?;
            f.set_len(cut)?;
            f.sync_all()?;
            seg.offsets.truncate(pos);
            seg.len = cut;
            seg.allocated = cut;
        }
        Ok(())
    }

    /// Deletes segments whose records are all at or below `upto`; `meta.json` already says so.
    fn purge(&mut self, upto: u64) -> io::Result<()> {
        let mut removed = false;
        while self.segments.len() > 1 {
            // A segment is wholly purged when the next one starts at or below upto + 1.
            let next_first = self.segments[1].first_index;
            if next_first <= upto + 1 {
                let seg = self.segments.remove(0);
                fs::remove_file(&seg.path)?;
                removed = true;
            } else {
                break;
            }
        }
        if let Some(seg) = self.segments.last()
            && self.segments.len() == 1
            && wholly_purged(seg.first_index, seg.offsets.last().map(|(i, _)| *i), upto)
        {
            // The only segment is fully purged: start over with the next append.
            let seg = self.segments.remove(0);
            self.current = None;
            fs::remove_file(&seg.path)?;
            removed = true;
        }
        if removed {
            sync_dir(&self.options.dir)?;
        }
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let mem = lock(&self.shared.mem);
        Ok(mem.entries.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(lock(&self.shared.mem).meta.vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let mem = lock(&self.shared.mem);
        let last_purged_log_id = mem.meta.last_purged;
        let last_log_id = mem.entries.values().next_back().map(|e| e.log_id).or(last_purged_log_id);
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        lock(&self.shared.mem).meta.vote = Some(*vote);
        self.write_meta().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Kept in memory and persisted with the next meta write (vote, purge, close): a lower
        // bound is all a restart needs to re-apply entries before the first new commit.
        lock(&self.shared.mem).meta.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(lock(&self.shared.mem).meta.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut records = Vec::new();
        let mut first_index = None;
        let mut last_index = 0;
        let mut payload = Vec::new();
        let mut plain = Vec::new();
        let mut staged = Vec::new();
        for entry in entries {
            encode_record(&entry, &mut plain);
            payload.clear();
            self.shared.sealer.seal_into(LOG_AAD, &plain, &mut payload).map_err(io::Error::other)?;
            let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("log record too large"))?;
            records.extend_from_slice(&len.to_le_bytes());
            records.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
            records.extend_from_slice(&payload);
            first_index.get_or_insert(entry.log_id.index);
            last_index = entry.log_id.index;
            staged.push(entry);
        }
        let Some(first_index) = first_index else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        {
            let mut mem = lock(&self.shared.mem);
            for e in staged {
                mem.entries.insert(e.log_id.index, e);
            }
        }
        self.send(WriteOp::Append(PendingAppend { records, first_index, last_index, callback }))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let after = last_log_id.map(|l| l.index);
        {
            let mut mem = lock(&self.shared.mem);
            let from = after.map_or(0, |a| a + 1);
            let _ = mem.entries.split_off(&from);
        }
        self.request(|reply| WriteOp::Truncate { after, reply }).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let upto = log_id.index;
        {
            let mut mem = lock(&self.shared.mem);
            if mem.meta.last_purged.is_some_and(|p| p.index >= upto) {
                return Ok(());
            }
            mem.meta.last_purged = Some(log_id);
            let rest = mem.entries.split_off(&(upto + 1));
            mem.entries = rest;
        }
        // Record the purge point first: a crash after it leaves extra records that are ignored.
        self.write_meta().await?;
        self.request(|reply| WriteOp::Purge { upto, reply }).await
    }
}

#[cfg(test)]
mod tests;

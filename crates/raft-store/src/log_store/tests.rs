//! Tests of the segment-file log store: openraft's storage conformance suite, and crash
//! consistency (torn tails are cut, other damage is refused with file and offset).

use std::sync::Arc;

use openraft::RaftLogReader;
use openraft::StorageError;
use openraft::entry::RaftEntry;
use openraft::storage::IOFlushed;
use openraft::storage::RaftLogStorage;
use openraft::testing::log::StoreBuilder;
use openraft::testing::log::Suite;

use super::*;
use crate::crypto::EncryptionKey;
use crate::state_machine::StateMachine;
use crate::types::Entry;

struct Builder {
    key: Option<EncryptionKey>,
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::read(openraft::errors::ErrorSource::from_error(&e)))?;
        let sealer = Arc::new(
            Sealer::new(self.key.as_ref())
                .map_err(|e| StorageError::read(openraft::errors::ErrorSource::from_error(&e)))?,
        );
        let log = LogStore::open(options(dir.path()), sealer.clone())
            .map_err(|e| StorageError::read(openraft::errors::ErrorSource::from_error(&e)))?;
        let sm = StateMachine::open(1, dir.path().join("snapshot"), sealer, 100)
            .map_err(|e| StorageError::read(openraft::errors::ErrorSource::from_error(&e)))?;
        Ok((dir, log, sm))
    }
}

fn options(dir: &Path) -> LogOptions {
    // Small segments so the suite crosses segment boundaries.
    LogOptions {
        dir: dir.join("log"),
        segment_bytes: 256,
        fsync: true,
        spin: std::time::Duration::from_micros(200),
        disk_full_after: None,
        whole_log_committed: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_conformance_suite() {
    Suite::test_all(Builder { key: None }).await.expect("conformance suite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_conformance_suite_encrypted() {
    Suite::test_all(Builder { key: Some(EncryptionKey::new([3; 32])) }).await.expect("conformance suite");
}

fn sealer() -> Arc<Sealer> {
    Arc::new(Sealer::new(None).expect("sealer"))
}

fn blank(term: u64, index: u64) -> Entry {
    Entry::new_blank(LogId::new(
        <<TypeConfig as openraft::RaftTypeConfig>::LeaderId as openraft::vote::RaftLeaderIdExt>::new_committed(term, 1),
        index,
    ))
}

/// An entry of the size a small put makes (about 60 bytes as a record).
fn put(term: u64, index: u64) -> Entry {
    let mut e = blank(term, index);
    let txn = crate::types::Txn::new().and_then(crate::types::Op::put(format!("/k/{index}"), vec![b'v'; 40]));
    e.payload = openraft::EntryPayload::Normal(crate::types::Command { txn });
    e
}

async fn append(log: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = <TypeConfig as openraft::type_config::TypeConfigExt>::oneshot();
    log.append(entries, IOFlushed::signal(tx)).await.expect("append");
    rx.await.expect("flushed").expect("flush ok");
}

async fn indexes(log: &mut LogStore) -> Vec<u64> {
    log.try_get_log_entries(0..).await.expect("read").iter().map(|e| e.log_id.index).collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir.join("log"))
        .expect("log dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

/// Drops the zeros written ahead at the end of a segment, so a test can damage its last record.
fn strip_zeros(path: &Path) -> Vec<u8> {
    let mut bytes = fs::read(path).expect("read");
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    bytes.truncate(end);
    fs::write(path, &bytes).expect("write");
    bytes
}

async fn write_ten(dir: &Path) {
    let mut log = LogStore::open(options(dir), sealer()).expect("open");
    for i in 1..=10 {
        append(&mut log, vec![put(1, i)]).await;
    }
    log.close().await;
}

#[tokio::test]
async fn reopen_restores_every_entry_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_ten(dir.path()).await;
    assert!(segments(dir.path()).len() > 1, "small segments rotate");
    let mut log = LogStore::open(options(dir.path()), sealer()).expect("reopen");
    assert_eq!(indexes(&mut log).await, (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn torn_last_record_is_cut_and_appends_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_ten(dir.path()).await;
    let last = segments(dir.path()).pop().expect("a segment");
    let len = strip_zeros(&last).len() as u64;
    tracing::info!("--- cut the last record in half, as a crash mid-append would");
    let f = OpenOptions::new().write(true).open(&last).expect("open");
    f.set_len(len - 5).expect("truncate");
    drop(f);
    let mut log = LogStore::open(options(dir.path()), sealer()).expect("torn tail is repaired");
    assert_eq!(indexes(&mut log).await, (1..=9).collect::<Vec<_>>());
    append(&mut log, vec![blank(2, 10)]).await;
    log.close().await;
    let mut log = LogStore::open(options(dir.path()), sealer()).expect("reopen");
    assert_eq!(indexes(&mut log).await, (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn zero_filled_tail_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_ten(dir.path()).await;
    let last = segments(dir.path()).pop().expect("a segment");
    let mut f = OpenOptions::new().append(true).open(&last).expect("open");
    f.write_all(&[0u8; 100]).expect("zeros");
    drop(f);
    let mut log = LogStore::open(options(dir.path()), sealer()).expect("zero tail is repaired");
    assert_eq!(indexes(&mut log).await.len(), 10);
}

#[tokio::test]
async fn flipped_byte_in_a_record_refuses_to_open_naming_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_ten(dir.path()).await;
    let first = segments(dir.path()).remove(0);
    let mut bytes = fs::read(&first).expect("read");
    let at = SEGMENT_MAGIC.len() + RECORD_HEADER + 3;
    bytes[at] ^= 0x40;
    fs::write(&first, &bytes).expect("write");
    let err = LogStore::open(options(dir.path()), sealer()).expect_err("corruption is refused");
    match &err {
        OpenError::Corrupt { path, offset, reason } => {
            assert_eq!(path, &first);
            assert_eq!(*offset, SEGMENT_MAGIC.len() as u64);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected corrupt error, got {other}"),
    }
    assert!(err.to_string().contains(&first.display().to_string()));
}

#[tokio::test]
async fn truncated_middle_segment_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_ten(dir.path()).await;
    let segs = segments(dir.path());
    assert!(segs.len() >= 2);
    let len = fs::metadata(&segs[0]).expect("meta").len();
    let f = OpenOptions::new().write(true).open(&segs[0]).expect("open");
    f.set_len(len - 3).expect("truncate");
    drop(f);
    let err = LogStore::open(options(dir.path()), sealer()).expect_err("a hole in the log is refused");
    assert!(matches!(err, OpenError::Corrupt { ref path, .. } if path == &segs[0]), "{err}");
}

#[tokio::test]
async fn missing_segment_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_ten(dir.path()).await;
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    fs::remove_file(&segs[1]).expect("remove");
    let err = LogStore::open(options(dir.path()), sealer()).expect_err("a gap is refused");
    assert!(matches!(err, OpenError::Corrupt { ref path, .. } if path == &segs[2]), "{err}");
}

#[tokio::test]
async fn wrong_encryption_key_refuses_to_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = |b| Arc::new(Sealer::new(Some(&EncryptionKey::new([b; 32]))).expect("sealer"));
    let mut log = LogStore::open(options(dir.path()), key(1)).expect("open");
    append(&mut log, vec![blank(1, 1), blank(1, 2)]).await;
    log.close().await;
    let raw = fs::read(&segments(dir.path())[0]).expect("read");
    assert!(!String::from_utf8_lossy(&raw).contains("log_id"), "records are not plain JSON");
    let err = LogStore::open(options(dir.path()), key(2)).expect_err("wrong key");
    assert!(err.to_string().contains("decryption failed"), "{err}");
    let mut log = LogStore::open(options(dir.path()), key(1)).expect("right key");
    assert_eq!(indexes(&mut log).await, vec![1, 2]);
}

#[tokio::test]
async fn truncate_and_purge_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_ten(dir.path()).await;
    let mut log = LogStore::open(options(dir.path()), sealer()).expect("open");
    log.truncate_after(Some(blank(1, 7).log_id)).await.expect("truncate");
    log.purge(blank(1, 3).log_id).await.expect("purge");
    append(&mut log, vec![blank(2, 8), blank(2, 9)]).await;
    log.close().await;
    let mut log = LogStore::open(options(dir.path()), sealer()).expect("reopen");
    assert_eq!(indexes(&mut log).await, vec![4, 5, 6, 7, 8, 9]);
    let entries = log.try_get_log_entries(8..).await.expect("read");
    assert!(entries.iter().all(|e| e.log_id.leader_id.term == 2), "truncated records were replaced");
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(3));
    assert_eq!(state.last_log_id.map(|l| l.index), Some(9));
}

#[tokio::test]
async fn purge_past_the_end_then_append_elsewhere_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_ten(dir.path()).await;
    let mut log = LogStore::open(options(dir.path()), sealer()).expect("open");
    tracing::info!("--- a snapshot install purges past the local log");
    log.purge(blank(3, 100).log_id).await.expect("purge");
    append(&mut log, vec![blank(3, 101)]).await;
    log.close().await;
    let mut log = LogStore::open(options(dir.path()), sealer()).expect("reopen");
    assert_eq!(indexes(&mut log).await, vec![101]);
}

#[tokio::test]
async fn a_full_disk_fails_the_append_and_leaves_whole_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = options(dir.path());
    opts.segment_bytes = 1 << 20;
    opts.disk_full_after = Some(600);
    let mut log = LogStore::open(opts, sealer()).expect("open");
    let mut acked = Vec::new();
    let mut failure = None;
    for i in 1..=20 {
        let (tx, rx) = <TypeConfig as openraft::type_config::TypeConfigExt>::oneshot();
        log.append(vec![put(1, i), put(1, i + 100)].into_iter().take(1), IOFlushed::signal(tx)).await.expect("queued");
        match rx.await.expect("answer") {
            Ok(()) => acked.push(i),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("the disk fills up");
    assert_eq!(failure.kind(), io::ErrorKind::StorageFull, "{failure}");
    assert!(!acked.is_empty());
    log.close().await;
    tracing::info!("--- reopen: every acknowledged entry, and no torn record to cut");
    let mut log = LogStore::open(options(dir.path()), sealer()).expect("reopen");
    assert_eq!(indexes(&mut log).await, acked);
    let seg = segments(dir.path()).pop().expect("segment");
    let len = fs::metadata(&seg).expect("meta").len();
    assert!(len <= 600, "the partial write was rolled back ({len} bytes)");
}

/// An entry about 1 KiB long as a record.
fn big(term: u64, index: u64) -> Entry {
    let mut e = blank(term, index);
    let txn = crate::types::Txn::new().and_then(crate::types::Op::put(format!("/k/{index}"), vec![b'v'; 1000]));
    e.payload = openraft::EntryPayload::Normal(crate::types::Command { txn });
    e
}

/// Appends without waiting for the flush; returns the answer to wait for.
async fn queue(log: &mut LogStore, entry: Entry) -> futures::future::BoxFuture<'static, Result<(), io::Error>> {
    let (tx, rx) = <TypeConfig as openraft::type_config::TypeConfigExt>::oneshot();
    log.append(vec![entry], IOFlushed::signal(tx)).await.expect("queued");
    Box::pin(async move { rx.await.expect("answer") })
}

#[tokio::test]
async fn appends_behind_a_failed_one_fail_too_so_the_log_keeps_no_gap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = options(dir.path());
    opts.segment_bytes = 1 << 20;
    opts.disk_full_after = Some(600);
    let mut log = LogStore::open(opts.clone(), sealer()).expect("open");
    for i in 1..=5 {
        queue(&mut log, put(1, i)).await.await.expect("a small entry fits");
    }
    tracing::info!("--- a big entry does not fit; small ones queued behind it would");
    let failed = queue(&mut log, big(1, 6)).await;
    let behind = [queue(&mut log, put(1, 7)).await, queue(&mut log, put(1, 8)).await];
    let err = failed.await.expect_err("the big entry does not fit");
    assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{err}");
    for answer in behind {
        // In the failed entry's batch it shares that error; in a later batch it is refused.
        let err = answer.await.expect_err("an append behind a failed one fails");
        let refused = err.to_string().contains("the append at index 6 failed before it");
        assert!(refused || err.kind() == io::ErrorKind::StorageFull, "{err}");
    }
    tracing::info!("--- one more, after the failure was reported: still refused, it would leave a gap");
    let err = queue(&mut log, put(1, 9)).await.await.expect_err("past the gap");
    assert!(err.to_string().contains("refused"), "{err}");
    tracing::info!("--- appending again from the failed index (what Raft retries) works");
    queue(&mut log, put(1, 6)).await.await.expect("index 6 continues the log");
    log.close().await;
    let mut log = LogStore::open(opts, sealer()).expect("the log opens: no gap");
    assert_eq!(indexes(&mut log).await, (1..=6).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_last_record_with_unwritten_zero_pages_is_cut_but_a_flipped_last_byte_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_ten(dir.path()).await;
    let last = segments(dir.path()).pop().expect("a segment");
    let original = strip_zeros(&last);

    tracing::info!("--- the last record's data pages never reached the disk: zeros under a valid header");
    let mut torn = original.clone();
    let n = torn.len();
    torn[n - 20..].fill(0);
    fs::write(&last, &torn).expect("write");
    let mut log = LogStore::open(options(dir.path()), sealer()).expect("torn write is repaired");
    assert_eq!(indexes(&mut log).await, (1..=9).collect::<Vec<_>>());
    log.close().await;

    tracing::info!("--- one flipped byte in the last record is damage, not a torn write");
    let mut flipped = original;
    let n = flipped.len();
    flipped[n - 2] ^= 0x01;
    fs::write(&last, &flipped).expect("write");
    let err = LogStore::open(options(dir.path()), sealer()).expect_err("refused");
    assert!(err.to_string().contains("checksum"), "{err}");
}

#[tokio::test]
async fn a_segment_in_the_json_format_is_refused_naming_the_file_and_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_ten(dir.path()).await;
    let first = segments(dir.path()).remove(0);
    tracing::info!("--- the segment as an earlier version wrote it: format byte 1");
    let mut bytes = fs::read(&first).expect("read");
    bytes[SEGMENT_MAGIC.len() - 1] = 1;
    fs::write(&first, bytes).expect("write");
    let err = LogStore::open(options(dir.path()), sealer()).expect_err("refused");
    assert!(matches!(&err, OpenError::Format { path, found: 1, supported: 2, .. } if path == &first), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&first.display().to_string()) && text.contains("add the member to the cluster again"),
        "{text}"
    );
}

#[tokio::test]
async fn purge_past_the_end_of_a_log_whose_last_segment_lost_its_records_then_append_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_ten(dir.path()).await;
    tracing::info!("--- a crash tore every record of the last segment: only its header is left");
    let last = segments(dir.path()).pop().expect("a segment");
    let f = OpenOptions::new().write(true).open(&last).expect("open");
    f.set_len(SEGMENT_MAGIC.len() as u64 + 5).expect("truncate");
    drop(f);
    let mut log = LogStore::open(options(dir.path()), sealer()).expect("torn tail is repaired");
    let kept = indexes(&mut log).await;
    assert!(!kept.is_empty() && kept.len() < 10, "{kept:?}");

    tracing::info!("--- a snapshot install purges past the local log; the next append follows the purge point");
    log.purge(blank(3, 100).log_id).await.expect("purge");
    append(&mut log, vec![blank(3, 101), blank(3, 102)]).await;
    log.close().await;
    let mut log = LogStore::open(options(dir.path()), sealer()).expect("reopen");
    assert_eq!(indexes(&mut log).await, vec![101, 102]);
    assert_eq!(segments(dir.path()), vec![dir.path().join("log").join(segment_name(101))]);
}

#[tokio::test]
async fn a_crash_between_the_purge_record_and_the_segment_removal_is_finished_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_ten(dir.path()).await;
    tracing::info!("--- meta.json records a purge past the end, then the member crashes before removing segments");
    let meta = Meta { last_purged: Some(blank(3, 100).log_id), ..Meta::default() };
    write_atomically(&dir.path().join("log"), META_FILE, &serde_json::to_vec(&meta).expect("json")).expect("meta");
    assert!(segments(dir.path()).len() > 1);

    let mut log = LogStore::open(options(dir.path()), sealer()).expect("open");
    assert!(segments(dir.path()).is_empty(), "purged segments are removed on open");
    assert_eq!(indexes(&mut log).await, Vec::<u64>::new());
    tracing::info!("--- openraft sees the purge done and appends after it");
    log.purge(blank(3, 100).log_id).await.expect("purge again is a no-op");
    append(&mut log, vec![blank(3, 101)]).await;
    log.close().await;
    let mut log = LogStore::open(options(dir.path()), sealer()).expect("reopen");
    assert_eq!(indexes(&mut log).await, vec![101]);
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(100));
}

#[tokio::test]
async fn a_crash_after_a_partial_purge_keeps_the_segments_above_the_purge_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_ten(dir.path()).await;
    let meta = Meta { last_purged: Some(blank(1, 6).log_id), ..Meta::default() };
    write_atomically(&dir.path().join("log"), META_FILE, &serde_json::to_vec(&meta).expect("json")).expect("meta");
    let mut log = LogStore::open(options(dir.path()), sealer()).expect("open");
    assert_eq!(indexes(&mut log).await, vec![7, 8, 9, 10]);
    let first_kept = segments(dir.path()).remove(0);
    let first: u64 =
        first_kept.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()).expect("segment name");
    assert!(first <= 7, "the segment holding index 7 is kept, not {first}");
    append(&mut log, vec![put(1, 11)]).await;
    log.close().await;
    let mut log = LogStore::open(options(dir.path()), sealer()).expect("reopen");
    assert_eq!(indexes(&mut log).await, vec![7, 8, 9, 10, 11]);
}

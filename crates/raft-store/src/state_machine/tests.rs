//! Tests of the key-value state machine: revisions, transactions, watches, snapshots.

use openraft::entry::RaftEntry;
use openraft::vote::RaftLeaderIdExt;

use super::*;
use crate::types::Command;
use crate::types::Entry;

struct Fixture {
    _dir: tempfile::TempDir,
    sm: StateMachine,
    index: u64,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sm = StateMachine::open(1, dir.path().to_path_buf(), Arc::new(Sealer::new(None).expect("sealer")), 4)
            .expect("open");
        Self { _dir: dir, sm, index: 0 }
    }

    async fn apply(&mut self, txn: Txn) {
        self.index += 1;
        let log_id = LogId::new(
            <<TypeConfig as openraft::RaftTypeConfig>::LeaderId as RaftLeaderIdExt>::new_committed(1, 1),
            self.index,
        );
        let entry = Entry::new_normal(log_id, Command { txn });
        self.sm.apply(futures::stream::iter([Ok((entry, None))])).await.expect("apply");
    }
}

fn put(k: &str, v: &str) -> Txn {
    Txn::new().and_then(Op::put(k, v))
}

#[tokio::test]
async fn revisions_versions_and_compares_follow_etcd_semantics() {
    let mut f = Fixture::new();
    f.apply(put("/a", "1")).await;
    f.apply(put("/a", "2")).await;
    f.apply(put("/b", "1")).await;
    let (a, rev) = f.sm.get(b"/a");
    let a = a.expect("a exists");
    assert_eq!((a.create_revision, a.mod_revision, a.version, rev), (1, 2, 2, 3));

    tracing::info!("--- a stale compare fails and applies the failure branch");
    f.apply(
        Txn::new().when(Compare::mod_revision("/a", 1)).and_then(Op::put("/a", "x")).or_else(Op::put("/c", "lost")),
    )
    .await;
    assert_eq!(f.sm.get(b"/a").0.expect("a").value, b"2");
    assert_eq!(f.sm.get(b"/c").0.expect("c").mod_revision, 4);

    tracing::info!("--- a current compare succeeds; one revision for the whole txn");
    f.apply(
        Txn::new()
            .when(Compare::mod_revision("/a", 2))
            .when(Compare::missing("/z"))
            .and_then(Op::put("/a", "3"))
            .and_then(Op::delete("/b")),
    )
    .await;
    assert_eq!(f.sm.revision(), 5);
    assert_eq!(f.sm.get(b"/a").0.expect("a").mod_revision, 5);
    assert!(f.sm.get(b"/b").0.is_none());

    tracing::info!("--- deleting a missing key does not bump the revision");
    f.apply(Txn::new().and_then(Op::delete("/nope"))).await;
    assert_eq!(f.sm.revision(), 5);

    tracing::info!("--- a recreated key starts a new version history");
    f.apply(put("/b", "again")).await;
    let b = f.sm.get(b"/b").0.expect("b");
    assert_eq!((b.create_revision, b.version), (6, 1));

    let (kvs, _) = f.sm.range(b"/");
    assert_eq!(
        kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        vec![b"/a".to_vec(), b"/b".to_vec(), b"/c".to_vec()]
    );
    assert!(f.sm.range(b"/a/").0.is_empty());
}

#[tokio::test]
async fn watch_replays_history_then_streams_live_and_reports_compaction() {
    let mut f = Fixture::new();
    for i in 0..3 {
        f.apply(put(&format!("/w/{i}"), "v")).await;
    }
    f.apply(put("/other", "v")).await;
    let mut w = f.sm.watch(b"/w/".to_vec(), 2).expect("watch");
    f.apply(Txn::new().and_then(Op::delete("/w/0"))).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ev = w.next().await.expect("event").expect("ok");
        seen.push((ev.kind, ev.kv.mod_revision));
    }
    assert_eq!(seen, vec![(EventKind::Put, 2), (EventKind::Put, 3), (EventKind::Delete, 5)]);

    tracing::info!("--- history keeps 4 events; older revisions are compacted");
    for i in 0..4 {
        f.apply(put("/w/x", &i.to_string())).await;
    }
    let err = f.sm.watch(b"/".to_vec(), 1).expect_err("compacted");
    assert!(matches!(err, WatchError::Compacted { requested: 1, oldest } if oldest > 1), "{err}");
    assert!(err.to_string().contains("compacted"));
}

#[tokio::test]
async fn snapshot_round_trips_and_installing_one_ends_watches() {
    let mut f = Fixture::new();
    f.apply(put("/a", "1")).await;
    f.apply(put("/b", "2")).await;
    let snap = f.sm.build_snapshot().await.expect("build");
    let current = f.sm.get_current_snapshot().await.expect("read").expect("some");
    assert_eq!(current.meta, snap.meta);

    let mut g = Fixture::new();
    let mut w = g.sm.watch(b"/".to_vec(), 0).expect("watch");
    g.sm.install_snapshot(&snap.meta, snap.snapshot).await.expect("install");
    assert_eq!(g.sm.get(b"/b").0.expect("b").value, b"2");
    assert_eq!(g.sm.revision(), 2);
    assert!(matches!(w.next().await, Some(Err(WatchError::Compacted { .. }))));
    assert!(w.next().await.is_none(), "the watch ends");

    tracing::info!("--- reopening loads the installed snapshot");
    let dir = g._dir.path().to_path_buf();
    let reopened = StateMachine::open(1, dir, Arc::new(Sealer::new(None).expect("sealer")), 4).expect("reopen");
    assert_eq!(reopened.revision(), 2);
    assert!(reopened.watch(b"/".to_vec(), 2).is_err(), "history before the snapshot is gone");
    assert!(reopened.watch(b"/".to_vec(), 3).is_ok());
}

#[tokio::test]
async fn corrupted_snapshot_refuses_to_open() {
    let mut f = Fixture::new();
    f.apply(put("/a", "1")).await;
    f.sm.build_snapshot().await.expect("build");
    let path = f.sm.snapshot_path();
    let mut bytes = fs::read(&path).expect("read");
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    fs::write(&path, bytes).expect("write");
    let err = StateMachine::open(1, f._dir.path().to_path_buf(), Arc::new(Sealer::new(None).expect("sealer")), 4)
        .expect_err("refused");
    assert!(matches!(&err, OpenError::Corrupt { path: p, .. } if p == &path), "{err}");
}

#[tokio::test]
async fn an_older_snapshot_never_replaces_a_newer_file() {
    let mut f = Fixture::new();
    f.apply(put("/a", "1")).await;
    let old = f.sm.build_snapshot().await.expect("build");
    f.apply(put("/a", "2")).await;
    let new = f.sm.build_snapshot().await.expect("build");
    tracing::info!("--- a slow build of the older state finishes last");
    f.sm.write_snapshot_file(&old.meta, &old.snapshot).expect("write");
    let current = f.sm.get_current_snapshot().await.expect("read").expect("some");
    assert_eq!(current.meta.last_log_id, new.meta.last_log_id);
}

#[tokio::test]
async fn a_snapshot_in_the_json_format_is_refused_with_what_to_do() {
    let mut f = Fixture::new();
    f.apply(put("/a", "1")).await;
    f.sm.build_snapshot().await.expect("build");
    let path = f.sm.snapshot_path();
    tracing::info!("--- the file as an earlier version wrote it: format byte 1");
    let mut bytes = fs::read(&path).expect("read");
    bytes[7] = 1;
    fs::write(&path, bytes).expect("write");
    let err = StateMachine::open(1, f._dir.path().to_path_buf(), Arc::new(Sealer::new(None).expect("sealer")), 4)
        .expect_err("refused");
    assert!(matches!(&err, OpenError::Format { path: p, found: 1, supported: 2, .. } if p == &path), "{err}");
    assert!(err.to_string().contains("remove this member's data directory"), "{err}");
}

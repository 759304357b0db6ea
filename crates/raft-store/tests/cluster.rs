//! Three members in one process on the fault-injecting router: replication, forwarding, leader
//! loss, partitions, restarts from disk, snapshot install on a member that fell behind,
//! membership changes and status.

mod support;

use std::time::Duration;

use shoal_raft_store::Compare;
use shoal_raft_store::Consistency;
use shoal_raft_store::EncryptionKey;
use shoal_raft_store::EventKind;
use shoal_raft_store::InProcessRouter;
use shoal_raft_store::MembershipError;
use shoal_raft_store::Op;
use shoal_raft_store::OpenError;
use shoal_raft_store::Reachability;
use shoal_raft_store::ReadError;
use shoal_raft_store::Role;
use shoal_raft_store::Store;
use shoal_raft_store::StoreConfig;
use shoal_raft_store::Txn;
use shoal_raft_store::WatchError;
use shoal_raft_store::WriteError;
use support::Cluster;
use support::Tuning;
use tracing::info;

fn others(leader: u64) -> Vec<u64> {
    (1..=3).filter(|id| *id != leader).collect()
}

/// The leader's status once it hears from every member (or after 5 s, for the caller to check).
async fn all_reachable(c: &Cluster, leader: u64) -> shoal_raft_store::ClusterStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let s = c.store(leader).status().await;
        if s.members.iter().all(|m| m.reachability == Reachability::Reachable) || std::time::Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `leader` has stopped hearing from `member` (its status says Unreachable: no
/// heartbeat answer within the election timeout), failing after 10 s.
async fn until_unreachable(c: &Cluster, leader: u64, member: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = c.store(leader).status().await;
        let reachability = status.members.iter().find(|m| m.id == member).map(|m| m.reachability);
        if reachability == Some(Reachability::Unreachable) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{leader} still hears from {member} after 10 s: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_writes_are_forwarded_and_reads_are_linearizable_everywhere() {
    let c = Cluster::start(3, 1, Tuning::default()).await;
    let leader = c.wait_leader().await;
    let follower = others(leader)[0];

    info!("--- a write on a follower is forwarded to the leader");
    let out = c.store(follower).put("/k", "v1").await.expect("forwarded put");
    assert!(out.succeeded);
    info!("--- a linearizable read on any member sees it at once");
    for id in 1..=3 {
        let kv = c.store(id).get("/k").await.expect("read").expect("present");
        assert_eq!(kv.value, b"v1");
        assert_eq!(kv.mod_revision, out.revision);
    }

    info!("--- a txn with a stale compare fails on a follower too");
    let stale = Txn::new().when(Compare::mod_revision("/k", out.revision - 1)).and_then(Op::put("/k", "lost"));
    assert!(!c.store(follower).txn(stale).await.expect("txn").succeeded);
    let ok = Txn::new().when(Compare::mod_revision("/k", out.revision)).and_then(Op::put("/k", "v2"));
    assert!(c.store(follower).txn(ok).await.expect("txn").succeeded);
    assert_eq!(c.store(leader).get("/k").await.expect("read").expect("kv").version, 2);

    info!("--- a watch on a follower sees changes in order");
    let mut w = c.store(follower).watch("/w/", 0).expect("watch");
    for i in 0..5 {
        c.store(leader).put(format!("/w/{i}"), "x").await.expect("put");
    }
    c.store(leader).delete("/w/0").await.expect("delete");
    let mut revs = Vec::new();
    for _ in 0..6 {
        let ev = tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("event");
        revs.push((ev.kind, ev.kv.mod_revision));
    }
    assert!(revs.windows(2).all(|p| p[0].1 < p[1].1), "{revs:?}");
    assert_eq!(revs.last().map(|r| r.0), Some(EventKind::Delete));

    let range = c.store(follower).range("/w/").await.expect("range");
    assert_eq!(range.kvs.len(), 4);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_leader_answers_not_leader() {
    support::init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let router = InProcessRouter::new(2);
    let lone = Store::open(StoreConfig::new(9, "mem://9", dir.path()), router.transport()).await.expect("open");
    router.register(&lone);
    info!("--- a member that was never bootstrapped knows no leader");
    assert_eq!(lone.put("/k", "v").await, Err(WriteError::NotLeader { leader: None }));
    assert!(matches!(lone.get("/k").await, Err(ReadError::NoQuorum { leader: None, .. })));
    assert!(matches!(lone.add_learner(10, "mem://10").await, Err(MembershipError::NotLeader { leader: None })));
    info!("--- stale reads still answer from local state");
    assert_eq!(lone.get_with("/k", Consistency::Stale).await, Ok(None));
    lone.bootstrap().await.expect("bootstrap");
    assert!(matches!(lone.bootstrap().await, Err(MembershipError::AlreadyInitialized { node: 9 })));
    lone.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_learner_without_a_quorum_times_out_naming_the_time_waited() {
    support::init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let router = InProcessRouter::new(3);
    let mut stores = Vec::new();
    for id in [1, 2] {
        let mut config = StoreConfig::new(id, support::addr(id), dir.path().join(format!("node-{id}")));
        config.request_timeout = Duration::from_millis(200);
        let store = Store::open(config, router.transport()).await.expect("open");
        router.register(&store);
        stores.push(store);
    }
    stores[0].bootstrap().await.expect("bootstrap");
    stores[0].add_learner(2, support::addr(2)).await.expect("add learner");
    stores[0].promote(2).await.expect("promote");
    info!("--- cut the leader off from the other voter: no membership change can commit");
    router.partition(&[&[1], &[2]]);
    let started = std::time::Instant::now();
    let err = stores[0].add_learner(10, "mem://nobody").await.expect_err("cannot commit");
    let text = err.to_string();
    assert!(matches!(err, MembershipError::Refused { node: 1, .. }), "{text}");
    info!("--- add_learner waits six request timeouts, and says so");
    assert!(text.contains("add learner timed out after 1.2s"), "{text}");
    assert!(started.elapsed() >= Duration::from_millis(1200));
    for store in stores {
        store.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_elects_another_and_loses_nothing() {
    let mut c = Cluster::start(3, 3, Tuning::default()).await;
    let old = c.wait_leader().await;
    for i in 0..20 {
        c.store(old).put(format!("/k/{i}"), format!("{i}")).await.expect("put");
    }
    info!("--- kill leader");
    c.kill(old).await;
    let new = c.put_via_leader(&others(old), "/after", "1").await;
    assert_ne!(new, old);
    let got = c.store(new).range("/k/").await.expect("range");
    assert_eq!(got.kvs.len(), 20, "every acknowledged write survives");

    info!("--- restart the old leader from disk: it rejoins as follower and catches up");
    c.open(old).await;
    c.wait_value(old, "/after", "1").await;
    assert_eq!(c.store(old).range_with("/k/", Consistency::Stale).await.expect("range").kvs.len(), 20);
    c.wait_leader().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_of_minority_and_majority() {
    let c = Cluster::start(3, 4, Tuning::default()).await;
    let old = c.put_via_leader(&[1, 2, 3], "/before", "1").await;
    let rest = others(old);

    info!("--- partition the leader into a minority of one");
    c.router.partition(&[&[old], &rest]);
    info!("--- the majority elects a leader and accepts writes");
    c.put_via_leader(&rest, "/majority", "1").await;
    info!("--- the isolated old leader cannot commit or serve linearizable reads");
    assert!(c.store(old).put("/minority", "1").await.is_err());
    assert!(c.store(old).get("/majority").await.is_err());

    info!("--- heal: the old leader follows and holds the majority's write, not its own");
    c.router.heal();
    c.wait_value(old, "/majority", "1").await;
    let now = c.wait_leader().await;
    assert_ne!(now, old, "the deposed leader cannot win back without the majority's log");
    assert!(c.store(now).get("/minority").await.expect("read").is_none(), "uncommitted minority write is gone");

    info!("--- partition a majority away from the leader: the two-member side takes over");
    let leader = c.wait_leader().await;
    let follower = others(leader)[0];
    let third = others(leader)[1];
    c.router.partition(&[&[leader], &[follower], &[third]]);
    assert!(c.store(leader).put("/nobody", "1").await.is_err(), "no quorum anywhere");
    c.router.partition(&[&[leader], &[follower, third]]);
    c.put_via_leader(&[follower, third], "/after-split", "1").await;
    c.router.heal();
    c.wait_value(leader, "/after-split", "1").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_that_fell_behind_install_a_snapshot() {
    let mut c = Cluster::start(3, 5, Tuning { snapshot_after_entries: 40, keep_entries_after_snapshot: 0 }).await;
    let leader = c.wait_leader().await;
    let lagging = others(leader)[0];
    info!("--- stop a follower while the others write past several snapshots");
    c.kill(lagging).await;
    for i in 0..120 {
        c.store(leader).put(format!("/s/{i:03}"), format!("{i}")).await.expect("put");
    }
    let root = c.dir.path().to_path_buf();
    let snap_file = |id: u64| root.join(format!("node-{id}")).join("snapshot").join("current.snap");
    assert!(snap_file(leader).exists(), "the leader compacted its log");

    info!("--- a member that joins now needs purged entries: the leader streams it a snapshot");
    c.open(4).await;
    c.store(leader).add_learner(4, support::addr(4)).await.expect("learner");
    c.wait_value(4, "/s/119", "119").await;
    assert!(snap_file(4).exists(), "the installed snapshot is on disk");
    let got = c.store(4).range_with("/s/", Consistency::Stale).await.expect("range");
    assert_eq!(got.kvs.len(), 120);
    assert_eq!(got.revision, c.store(leader).revision(), "revisions carry over in the snapshot");
    info!("--- a watch from before the installed snapshot is refused as compacted");
    assert!(matches!(c.store(4).watch("/", 1), Err(WatchError::Compacted { requested: 1, .. })));
    let mut w = c.store(4).watch("/", 0).expect("watch from now");
    c.store(leader).put("/s/last", "done").await.expect("put");
    let ev =
        tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("in time").expect("open").expect("event");
    assert_eq!(ev.kv.key, b"/s/last");

    info!("--- once the leader has purged the entries the stopped follower lacks, restart it");
    let leader_meta = root.join(format!("node-{leader}")).join("log").join("meta.json");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&leader_meta).unwrap_or_default()).unwrap_or_default();
        if meta["last_purged"]["index"].as_u64().is_some_and(|i| i >= 100) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the leader never purged its log: {meta}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.open(lagging).await;
    c.wait_value(lagging, "/s/last", "done").await;
    let got = c.store(lagging).range_with("/s/", Consistency::Stale).await.expect("range");
    assert_eq!(got.kvs.len(), 121);
    assert_eq!(got.revision, c.store(leader).revision());
    assert!(
        matches!(c.store(lagging).watch("/", 1), Err(WatchError::Compacted { .. })),
        "the follower caught up from a snapshot, not by replaying the whole log"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_snapshot_interval_changes_while_the_store_runs() {
    let c = Cluster::start(1, 7, Tuning { snapshot_after_entries: 10_000, keep_entries_after_snapshot: 0 }).await;
    let leader = c.wait_leader().await;
    let store = c.store(leader);
    for i in 0..30 {
        store.put(format!("/k/{i:02}"), "v").await.expect("put");
    }
    assert_eq!(store.metrics().snapshot_index, 0, "no snapshot within the first 10,000 entries");
    store.set_snapshot_interval(10);
    assert_eq!(store.snapshot_interval(), 10);
    store.put("/k/last", "v").await.expect("put");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.metrics().snapshot_index < 30 {
        assert!(std::time::Instant::now() < deadline, "no snapshot after the interval changed: {:?}", store.metrics());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    info!("--- every 10 entries from then on");
    let first = store.metrics().snapshot_index;
    for i in 0..25 {
        store.put(format!("/m/{i:02}"), "v").await.expect("put");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.metrics().snapshot_index < first + 20 {
        assert!(std::time::Instant::now() < deadline, "snapshots stopped: {:?}", store.metrics());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_whole_cluster_restarts_from_disk() {
    let mut c = Cluster::start(3, 6, Tuning { snapshot_after_entries: 30, keep_entries_after_snapshot: 5 }).await;
    let leader = c.wait_leader().await;
    for i in 0..50 {
        c.store(leader).put(format!("/r/{i}"), "v").await.expect("put");
    }
    let revision = c.store(leader).get("/r/0").await.expect("read").map(|_| c.store(leader).revision());
    info!("--- stop every member");
    for id in 1..=3 {
        c.kill(id).await;
    }
    info!("--- start them again from their data directories");
    for id in 1..=3 {
        c.open(id).await;
    }
    let leader = c.wait_leader().await;
    let got = c.store(leader).range("/r/").await.expect("range");
    assert_eq!(got.kvs.len(), 50);
    assert_eq!(Some(got.revision), revision, "revisions are rebuilt identically");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_status_and_removal() {
    let mut c = Cluster::start(3, 7, Tuning::default()).await;
    let leader = c.wait_leader().await;
    info!("--- every member acknowledges the leader soon after joining");
    let status = all_reachable(&c, leader).await;
    assert_eq!(status.leader, Some(leader));
    assert_eq!(status.members.len(), 3);
    assert!(
        status.members.iter().all(|m| m.role == Role::Voter && m.reachability == Reachability::Reachable),
        "{status:?}"
    );

    info!("--- a follower reports the leader's view");
    let follower = others(leader)[0];
    let via_follower = c.store(follower).status().await;
    assert_eq!(via_follower.leader, Some(leader));
    assert!(via_follower.members.iter().all(|m| m.reachability == Reachability::Reachable));

    info!("--- a dead member shows as unreachable");
    let victim = others(leader)[1];
    c.kill(victim).await;
    until_unreachable(&c, leader, victim).await;
    let status = c.store(leader).status().await;
    assert!(status.members.iter().any(|m| m.id == victim), "still a member: {status:?}");

    info!("--- remove it; add a fresh learner and promote it");
    c.store(leader).remove(victim).await.expect("remove");
    assert_eq!(c.store(leader).status().await.members.len(), 2);
    assert!(matches!(c.store(follower).remove(leader).await, Err(MembershipError::NotLeader { leader: Some(_) })));
    c.open(4).await;
    c.store(leader).add_learner(4, support::addr(4)).await.expect("learner");
    let s = c.store(leader).status().await;
    assert_eq!(s.members.iter().find(|m| m.id == 4).map(|m| m.role), Some(Role::Learner));
    c.store(leader).promote(4).await.expect("promote");
    c.store(leader).put("/m", "1").await.expect("put");
    c.wait_value(4, "/m", "1").await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leadership_is_handed_to_a_voter_the_leader_hears_from() {
    let mut c = Cluster::start(3, 11, Tuning::default()).await;
    let first = c.wait_leader().await;
    all_reachable(&c, first).await;
    c.store(first).put("/before", "1").await.expect("put");
    let follower = others(first)[0];
    assert!(matches!(c.store(follower).transfer_leadership().await, Err(MembershipError::NotLeader { .. })));

    info!("--- the leader hands over while writes keep coming to it: they reach the successor");
    // The writer goes on until told to stop, which is after the hand-over and three more writes:
    // writes are in flight before, during and after it, however the threads are scheduled.
    let (written, mut progress) = tokio::sync::watch::channel(0usize);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let writer = {
        let store = c.store(first).clone();
        tokio::spawn(async move {
            let mut count = 0;
            while !*stopped.borrow_and_update() {
                store.put(format!("/during/{count:03}"), "x").await?;
                count += 1;
                written.send_replace(count);
            }
            Ok::<_, WriteError>(count)
        })
    };
    let writes = |n: usize| move |count: &usize| *count >= n;
    // A failed write ends the writer, and with it these waits; the writer's result says why.
    let _ = progress.wait_for(writes(1)).await;
    let second = c.store(first).transfer_leadership().await.expect("transfer");
    let at_hand_over = *progress.borrow();
    let _ = progress.wait_for(writes(at_hand_over + 3)).await;
    stop.send_replace(true);
    let count = writer.await.expect("writer").expect("every write during the hand-over is applied");
    assert_ne!(second, first);
    let during = c.store(second).range("/during/").await.expect("range");
    assert_eq!(during.kvs.len(), count, "every acknowledged write is there");
    assert_eq!(c.wait_leader().await, second);
    c.store(second).put("/after", "2").await.expect("put on the new leader");
    c.wait_value(first, "/after", "2").await;
    assert_eq!(c.store(second).get("/before").await.expect("get").map(|kv| kv.value), Some(b"1".to_vec()));

    info!("--- with one follower dead, the only voter it hears from is chosen");
    let dead = others(second).into_iter().find(|id| *id != first).expect("third member");
    all_reachable(&c, second).await;
    c.kill(dead).await;
    until_unreachable(&c, second, dead).await;
    assert_eq!(c.store(second).transfer_leadership().await.expect("transfer back"), first);

    info!("--- alone with no reachable voter, it refuses and stays leader");
    c.kill(second).await;
    until_unreachable(&c, first, second).await;
    match c.store(first).transfer_leadership().await {
        Err(MembershipError::Refused { reason, .. }) => assert!(reason.contains("no other voter"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_member_reopens_only_with_its_key() {
    support::init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let router = InProcessRouter::new(8);
    let config = |key: u8| {
        let mut c = StoreConfig::new(1, "mem://1", dir.path());
        c.encryption_key = Some(EncryptionKey::new([key; 32]));
        c.snapshot_after_entries = 10;
        c
    };
    let store = Store::open(config(1), router.transport()).await.expect("open");
    router.register(&store);
    store.bootstrap().await.expect("bootstrap");
    for i in 0..15 {
        store.put(format!("/secret/{i}"), "top-secret-value").await.expect("put");
    }
    store.shutdown().await;
    router.unregister(1);

    info!("--- nothing readable on disk");
    for sub in ["log", "snapshot"] {
        for entry in std::fs::read_dir(dir.path().join(sub)).expect("dir") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
            assert!(!String::from_utf8_lossy(&bytes).contains("top-secret"), "plaintext found in {sub}");
        }
    }
    info!("--- a wrong key refuses to open");
    let err = Store::open(config(2), router.transport()).await.expect_err("wrong key");
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err}");
    info!("--- the right key opens and serves the data");
    let store = Store::open(config(1), router.transport()).await.expect("reopen");
    router.register(&store);
    store.wait_for_leader(Duration::from_secs(5)).await.expect("leader");
    assert_eq!(store.range("/secret/").await.expect("range").kvs.len(), 15);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_repairs_a_torn_log_tail_and_refuses_a_corrupted_log() {
    support::init_tracing();
    let dir = tempfile::tempdir().expect("tempdir");
    let router = InProcessRouter::new(9);
    let config = || StoreConfig::new(1, "mem://1", dir.path());
    let store = Store::open(config(), router.transport()).await.expect("open");
    router.register(&store);
    store.bootstrap().await.expect("bootstrap");
    for i in 0..10 {
        store.put(format!("/k/{i}"), "v").await.expect("put");
    }
    store.shutdown().await;
    router.unregister(1);
    let segment = std::fs::read_dir(dir.path().join("log"))
        .expect("log dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .expect("a segment");
    let bytes = std::fs::read(&segment).expect("read");

    info!("--- a crash mid-append: half of a record at the end is cut and the store opens");
    let mut torn = bytes.clone();
    torn.extend_from_slice(&[0x40, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&segment, &torn).expect("write");
    let store = Store::open(config(), router.transport()).await.expect("torn tail is repaired");
    router.register(&store);
    store.wait_for_leader(Duration::from_secs(5)).await.expect("leader");
    assert_eq!(store.range("/k/").await.expect("range").kvs.len(), 10);
    store.shutdown().await;
    router.unregister(1);

    info!("--- a flipped bit inside the log refuses to open, naming the file and offset");
    let mut bytes = std::fs::read(&segment).expect("read");
    bytes[40] ^= 0x01;
    std::fs::write(&segment, &bytes).expect("write");
    let err = Store::open(config(), router.transport()).await.expect_err("corruption is refused");
    let text = err.to_string();
    assert!(matches!(&err, OpenError::Corrupt { path, .. } if path == &segment), "{text}");
    assert!(text.contains("offset"), "{text}");
}

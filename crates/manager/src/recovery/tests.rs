//! Quorum recovery on three in-process members: two are lost for good, the third keeps what it
//! applied, becomes a group of one, serves writes, and another member joins it again.

use std::time::Duration;

use shoal_raft_store::{Consistency, InProcessRouter, Store, StoreConfig};

use super::*;
use crate::testutil::TempDir;

fn temp(tag: &str) -> TempDir {
    let dir = std::env::temp_dir().join(format!("shoal-manager-recovery-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    TempDir(dir)
}

fn config(dir: &Path, id: u64) -> StoreConfig {
    let mut config = StoreConfig::new(id, format!("mem://m{id}"), dir.join(format!("m{id}")).join("raft"));
    config.fsync = false;
    config.heartbeat_interval = Duration::from_millis(50);
    config.election_timeout = (Duration::from_millis(300), Duration::from_millis(600));
    config.request_timeout = Duration::from_secs(2);
    config
}

async fn open(router: &InProcessRouter, config: StoreConfig) -> Store {
    let store = Store::open(config, router.transport()).await.expect("open");
    router.register(&store);
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_survivor_forms_a_new_cluster_with_the_state_it_had() {
    let dir = temp("survivor");
    let router = InProcessRouter::new(7);
    let m1 = open(&router, config(&dir.0, 1)).await;
    m1.bootstrap().await.expect("bootstrap");
    m1.wait_for_leader(Duration::from_secs(10)).await.expect("a leader");
    let mut others = Vec::new();
    for id in [2, 3] {
        let store = open(&router, config(&dir.0, id)).await;
        m1.add_learner(id, format!("mem://m{id}")).await.expect("learner");
        m1.promote(id).await.expect("voter");
        others.push(store);
    }
    for i in 0..600 {
        m1.put(format!("/services/s{i:03}"), format!("spec {i}")).await.expect("put");
    }
    m1.put(LEADER_FENCE, Vec::new()).await.expect("fence");
    m1.delete("/services/s000").await.expect("delete");

    // --- m2 and m3 are lost: m1 has no quorum, then stops too
    for store in others.drain(..) {
        router.unregister(store.id());
        store.shutdown().await;
    }
    let refused = tokio::time::timeout(Duration::from_secs(10), m1.put("/services/late", "x")).await;
    assert!(!matches!(refused, Ok(Ok(_))), "no quorum: the write cannot commit");
    router.unregister(1);
    m1.shutdown().await;
    drop(m1);

    // --- force a new cluster on m1's directory
    let raft_dir = config(&dir.0, 1).data_dir;
    let old = force_new_cluster(config(&dir.0, 1)).await.expect("forced");
    assert!(old.is_dir() && old.file_name().is_some_and(|n| n.to_string_lossy().starts_with("raft.before-")));

    let router = InProcessRouter::new(8);
    let m1 = open(&router, config(&dir.0, 1)).await;
    assert_eq!(m1.wait_for_leader(Duration::from_secs(10)).await, Some(1), "it elects itself");
    let status = m1.status().await;
    assert_eq!(status.members.iter().map(|m| m.id).collect::<Vec<_>>(), [1], "the only member");
    let services = m1.range("/services/").await.expect("range").kvs;
    // Every entry of m1's log: the 600 puts but the deleted one, and the write it appended but
    // could not commit without its peers (the newest state anyone left has).
    assert_eq!(
        services.len(),
        600,
        "{:?}",
        services.iter().map(|kv| String::from_utf8_lossy(&kv.key)).collect::<Vec<_>>()
    );
    assert!(services.iter().all(|kv| kv.key != b"/services/s000"));
    assert!(services.iter().any(|kv| kv.key == b"/services/late"));
    assert_eq!(m1.get("/services/s599").await.expect("get").map(|kv| kv.value), Some(b"spec 599".to_vec()));
    assert!(m1.get_with(LEADER_FENCE, Consistency::Stale).await.expect("get").is_none(), "the old fence stays behind");
    m1.put("/services/after", "y").await.expect("it takes writes alone");

    // --- a new member joins the new cluster
    let m4 = open(&router, config(&dir.0, 4)).await;
    m1.add_learner(4, "mem://m4").await.expect("learner");
    m1.promote(4).await.expect("voter");
    m1.put("/services/joined", "z").await.expect("replicated to two");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while m4.get_with("/services/joined", Consistency::Stale).await.expect("get").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "m4 never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    m4.shutdown().await;
    m1.shutdown().await;
    assert!(raft_dir.is_dir());
}

#[tokio::test]
async fn seeding_refuses_a_directory_that_exists() {
    let dir = temp("exists");
    let config = config(&dir.0, 1);
    std::fs::create_dir_all(&config.data_dir).expect("dir");
    let err = seed(config, &[]).await.expect_err("refused");
    assert!(err.to_string().contains("exists already; a new Raft group needs an empty directory"), "{err}");
}

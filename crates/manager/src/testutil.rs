//! Test fixtures shared by the manager's unit tests.

use shoal_raft_store::{InProcessRouter, Store, StoreConfig};

use crate::objects::ObjectStore;

/// A directory removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An object store on a fresh one-member in-process raft-store that is leader.
pub(crate) async fn store(tag: &str) -> (ObjectStore, TempDir) {
    let dir = std::env::temp_dir().join(format!("shoal-manager-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let router = InProcessRouter::new(1);
    // Durability is raft-store's to test; here an fsync stalled by a loaded CI disk would only
    // turn into spurious "not committed" timeouts.
    let mut config = StoreConfig::new(1, "mem://m1", &dir);
    config.fsync = false;
    let store = Store::open(config, router.transport()).await.expect("open store");
    router.register(&store);
    store.bootstrap().await.expect("bootstrap");
    store.wait_for_leader(std::time::Duration::from_secs(5)).await.expect("leader");
    (ObjectStore::new(store), TempDir(dir))
}

/// A leader and a learner that follows it, on one in-process router: (leader, follower, their
/// directories). Both stores are stopped when the last handle drops.
pub(crate) async fn leader_and_follower(tag: &str) -> (ObjectStore, ObjectStore, [TempDir; 2]) {
    let router = InProcessRouter::new(1);
    let dirs = [1, 2]
        .map(|id| TempDir(std::env::temp_dir().join(format!("shoal-manager-{tag}-m{id}-{}", std::process::id()))));
    let mut stores = Vec::new();
    for (id, dir) in [1u64, 2].into_iter().zip(&dirs) {
        let _ = std::fs::remove_dir_all(&dir.0);
        let mut config = StoreConfig::new(id, format!("mem://m{id}"), &dir.0);
        config.fsync = false;
        let store = Store::open(config, router.transport()).await.expect("open store");
        router.register(&store);
        stores.push(store);
    }
    let (leader, follower) = (stores[0].clone(), stores[1].clone());
    leader.bootstrap().await.expect("bootstrap");
    leader.wait_for_leader(std::time::Duration::from_secs(5)).await.expect("leader");
    leader.add_learner(2, "mem://m2").await.expect("add learner");
    follower.wait_for_leader(std::time::Duration::from_secs(5)).await.expect("the follower hears the leader");
    (ObjectStore::new(leader), ObjectStore::new(follower), dirs)
}

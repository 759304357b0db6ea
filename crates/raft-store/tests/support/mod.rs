//! Test harness: members of one cluster in one process, on the fault-injecting router, each with
//! its own data directory that survives restarts.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use shoal_raft_store::Consistency;
use shoal_raft_store::InProcessRouter;
use shoal_raft_store::NodeId;
use shoal_raft_store::Store;
use shoal_raft_store::StoreConfig;
use shoal_raft_store::WriteError;

pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// How members of a test cluster are configured.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tuning {
    pub(crate) snapshot_after_entries: u64,
    pub(crate) keep_entries_after_snapshot: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Self { snapshot_after_entries: 10_000, keep_entries_after_snapshot: 1_000 }
    }
}

pub(crate) struct Cluster {
    pub(crate) router: InProcessRouter,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) stores: BTreeMap<NodeId, Store>,
    pub(crate) tuning: Tuning,
}

pub(crate) fn addr(id: NodeId) -> String {
    format!("mem://node-{id}")
}

impl Cluster {
    pub(crate) fn config(&self, id: NodeId) -> StoreConfig {
        let mut c = StoreConfig::new(id, addr(id), self.data_dir(id));
        c.heartbeat_interval = Duration::from_millis(50);
        c.election_timeout = (Duration::from_millis(400), Duration::from_millis(800));
        c.request_timeout = Duration::from_secs(2);
        c.snapshot_after_entries = self.tuning.snapshot_after_entries;
        c.keep_entries_after_snapshot = self.tuning.keep_entries_after_snapshot;
        c
    }

    pub(crate) fn data_dir(&self, id: NodeId) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Starts `n` members: member 1 bootstraps, the others join as learners and are promoted.
    pub(crate) async fn start(n: u64, seed: u64, tuning: Tuning) -> Self {
        init_tracing();
        let mut c = Self {
            router: InProcessRouter::new(seed),
            dir: tempfile::tempdir().expect("tempdir"),
            stores: BTreeMap::new(),
            tuning,
        };
        c.open(1).await;
        c.store(1).bootstrap().await.expect("bootstrap");
        c.wait_leader().await;
        for id in 2..=n {
            c.open(id).await;
            let leader = c.wait_leader_among(&(1..id).collect::<Vec<_>>()).await;
            c.store(leader).add_learner(id, addr(id)).await.expect("add learner");
            c.store(leader).promote(id).await.expect("promote");
        }
        c
    }

    pub(crate) async fn open(&mut self, id: NodeId) -> Store {
        let store = Store::open(self.config(id), self.router.transport()).await.expect("open store");
        self.router.register(&store);
        self.stores.insert(id, store.clone());
        store
    }

    pub(crate) fn store(&self, id: NodeId) -> &Store {
        self.stores.get(&id).unwrap_or_else(|| panic!("member {id} is not running"))
    }

    /// Stops member `id` as a crash would look to others (its files stay).
    pub(crate) async fn kill(&mut self, id: NodeId) {
        self.router.unregister(id);
        if let Some(s) = self.stores.remove(&id) {
            s.shutdown().await;
        }
    }

    /// Waits until one running member is leader and every running member that can hear it
    /// agrees; returns its id.
    pub(crate) async fn wait_leader(&self) -> NodeId {
        self.wait_leader_among(&self.stores.keys().copied().collect::<Vec<_>>()).await
    }

    pub(crate) async fn wait_leader_among(&self, ids: &[NodeId]) -> NodeId {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leaders: Vec<NodeId> =
                ids.iter().filter(|id| self.stores.get(id).is_some_and(Store::is_leader)).copied().collect();
            if let [l] = leaders.as_slice()
                && ids.iter().all(|id| self.stores.get(id).is_none_or(|s| s.leader() == Some(*l)))
            {
                return *l;
            }
            assert!(Instant::now() < deadline, "no single leader among {ids:?} within 10 s (leaders: {leaders:?})");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes through the leader among `ids`, retrying while leadership is still settling (only
    /// on errors that guarantee the write was not applied); returns the leader that took it.
    pub(crate) async fn put_via_leader(&self, ids: &[NodeId], key: &str, value: &str) -> NodeId {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leader = self.wait_leader_among(ids).await;
            match self.store(leader).put(key, value).await {
                Ok(_) => return leader,
                Err(e @ (WriteError::NotLeader { .. } | WriteError::LeaderUnreachable { .. })) => {
                    assert!(Instant::now() < deadline, "no leader among {ids:?} accepted {key} within 10 s: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("write of {key} through leader {leader} failed: {e}"),
            }
        }
    }

    /// Waits until member `id` has applied `key` = `value` (stale local reads).
    pub(crate) async fn wait_value(&self, id: NodeId, key: &str, value: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.store(id).get_with(key, Consistency::Stale).await.expect("stale read");
            if got.as_ref().is_some_and(|kv| kv.value == value.as_bytes()) {
                return;
            }
            assert!(Instant::now() < deadline, "member {id} did not apply {key}={value} within 10 s: {got:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) async fn shutdown(mut self) {
        let ids: Vec<NodeId> = self.stores.keys().copied().collect();
        for id in ids {
            self.kill(id).await;
        }
    }
}

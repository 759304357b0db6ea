//! A manager's replicated state moved into a new Raft group of one member: `shoal-manager run
//! --force-new-cluster` (the other managers are lost for good: this one keeps what it had
//! applied and becomes the only member, which others can join again), and `shoal-manager
//! restore` (a backup's state in a new data directory). Both go through raft-store's public
//! API only: the old store is opened on an in-process transport that reaches nobody, read once
//! it applied everything it knows to be committed, and a new store is bootstrapped with the same
//! member ID and address and written the same keys. The old Raft directory is kept aside.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use shoal_raft_store::{Consistency, InProcessRouter, Op, Store, StoreConfig, Txn};

use crate::leader::LEADER_FENCE;
use crate::node::StartError;

/// Keys that belong to the Raft group they were written in, not to the cluster's state: the old
/// leader's fence (a new group's leader writes its own).
fn carried(key: &[u8]) -> bool {
    key != LEADER_FENCE.as_bytes()
}

/// Keys and values written per transaction when seeding (well under raft-store's limits).
const SEED_BATCH: usize = 256;

/// How long the old store may take to apply what its log holds as committed.
const APPLY_WAIT: Duration = Duration::from_secs(60);

fn store_error(raft_dir: &Path, reason: impl std::fmt::Display) -> StartError {
    StartError::Store { path: raft_dir.to_path_buf(), reason: reason.to_string() }
}

/// The keys and values of the store of `config` once it applied every entry of its log (the
/// committed ones and any it received that its lost group may not have committed: the newest
/// state anyone left has), read without contacting any other member.
pub(crate) async fn read_applied(mut config: StoreConfig) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StartError> {
    let raft_dir = config.data_dir.clone();
    // The committed point on disk is a lower bound; what this member's log holds beyond it was
    // committed as far as anyone left can tell.
    config.recover_whole_log = true;
    let router = InProcessRouter::new(1);
    let store = Store::open(config, router.transport()).await.map_err(|e| store_error(&raft_dir, e))?;
    let deadline = tokio::time::Instant::now() + APPLY_WAIT;
    loop {
        let metrics = store.metrics();
        if metrics.applied_index >= metrics.committed_index {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            store.shutdown().await;
            return Err(store_error(
                &raft_dir,
                format!(
                    "applied only up to entry {} of the {} its log holds as committed within {APPLY_WAIT:?}",
                    metrics.applied_index, metrics.committed_index
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let range = store.range_with("", Consistency::Stale).await.map_err(|e| store_error(&raft_dir, e));
    store.shutdown().await;
    Ok(range?.kvs.into_iter().filter(|kv| carried(&kv.key)).map(|kv| (kv.key, kv.value)).collect())
}

/// A new single-member Raft group in `config.data_dir` (which must not exist yet) holding `kvs`.
pub(crate) async fn seed(config: StoreConfig, kvs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StartError> {
    let raft_dir = config.data_dir.clone();
    if raft_dir.exists() {
        return Err(store_error(&raft_dir, "exists already; a new Raft group needs an empty directory"));
    }
    let id = config.node_id;
    let router = InProcessRouter::new(1);
    let store = Store::open(config, router.transport()).await.map_err(|e| store_error(&raft_dir, e))?;
    router.register(&store);
    let seeded = async {
        store.bootstrap().await.map_err(|e| store_error(&raft_dir, e))?;
        if store.wait_for_leader(Duration::from_secs(30)).await != Some(id) {
            return Err(store_error(&raft_dir, "the new single-member group elected no leader within 30 s"));
        }
        for batch in kvs.chunks(SEED_BATCH) {
            let txn = batch.iter().fold(Txn::new(), |txn, (k, v)| txn.and_then(Op::put(k.clone(), v.clone())));
            store.txn(txn).await.map_err(|e| store_error(&raft_dir, e))?;
        }
        Ok(())
    }
    .await;
    store.shutdown().await;
    seeded
}

/// Where the Raft directory goes aside: `raft.before-WHAT-UNIXTIME` beside it.
pub(crate) fn aside(raft_dir: &Path, what: &str) -> PathBuf {
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    raft_dir.with_file_name(format!("raft.before-{what}-{secs}"))
}

/// `--force-new-cluster`: the store of `config` becomes a group of one member with the same
/// state; the old directory is kept aside (its path returned).
pub(crate) async fn force_new_cluster(config: StoreConfig) -> Result<PathBuf, StartError> {
    let raft_dir = config.data_dir.clone();
    let kvs = read_applied(config.clone()).await?;
    let old = aside(&raft_dir, "force-new-cluster");
    std::fs::rename(&raft_dir, &old)
        .map_err(|e| store_error(&raft_dir, format!("cannot move it aside to {}: {e}", old.display())))?;
    if let Err(err) = seed(config, &kvs).await {
        // Put the old store back: nothing is lost, and the operator can try again.
        let _ = std::fs::remove_dir_all(&raft_dir);
        let _ = std::fs::rename(&old, &raft_dir);
        return Err(err);
    }
    tracing::warn!(
        keys = kvs.len(),
        old = %old.display(),
        "forced a new cluster: this manager is the only member of a new Raft group with the state it had; \
         the other managers are no longer members (demote or remove them, then join managers again)"
    );
    Ok(old)
}

#[cfg(test)]
mod tests;

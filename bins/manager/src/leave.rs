//! `shoal-manager leave`: a manager must be demoted first unless forced (as in Swarm), then the
//! node leaves as a worker does (`shoal_agent::leave`) and its manager state goes too.

use std::path::Path;

/// How the worker role reached containerd (`None`: `--no-worker`, no containers to remove).
pub(crate) struct Containerd<'a> {
    pub(crate) socket: &'a Path,
    pub(crate) namespace: &'a str,
}

/// Leaves the cluster from the node in `data_dir`: refused while it runs, and for a manager
/// unless `force`; removes its containers and namespaces, its state (its identity, certificates,
/// Raft log, CA and admin bundle) and keeps its volumes.
pub(crate) async fn leave(
    data_dir: &Path,
    force: bool,
    containerd: Option<Containerd<'_>>,
    namespaces: Option<shoal_agent::Namespaces<'_>>,
) -> anyhow::Result<shoal_agent::Left> {
    let lock = shoal_agent::lock_for_leave(data_dir, "shoal-manager")?;
    let manager = shoal_manager::holds_manager(data_dir);
    anyhow::ensure!(
        !manager || force,
        "this node is a manager: demote it first (shoal node demote NODE, from another manager) so that the \
         cluster keeps its quorum, or use --force to leave anyway (the remaining managers then count it as lost: \
         with 3 managers, losing 2 loses the quorum)"
    );
    let runtime = match containerd {
        Some(c) => Some(shoal_agent::connect_containerd(data_dir, c.socket, c.namespace).await?),
        None => None,
    };
    let left = shoal_agent::leave(&lock, runtime.as_ref().map(|r| r as _), namespaces).await?;
    shoal_manager::forget_manager(data_dir)?;
    let admin = data_dir.join("admin");
    match std::fs::remove_dir_all(&admin) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("{}: cannot remove it: {e}", admin.display()),
    }
    Ok(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory for one test, removed when dropped (even when the test fails).
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A manager's data directory as `init` leaves it, made by hand.
    fn manager_dir(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("shoal-manager-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["certs", "raft", "ca", "admin", "volumes/v1"] {
            std::fs::create_dir_all(dir.join(sub)).expect("data dir");
        }
        std::fs::write(dir.join("manager.json"), b"{}").expect("identity");
        std::fs::write(dir.join("raft.key"), b"key").expect("Raft key");
        std::fs::write(dir.join("volumes/v1/data"), b"kept").expect("volume");
        TempDir(dir)
    }

    #[tokio::test]
    async fn a_manager_leaves_only_when_forced_and_its_manager_state_goes() {
        let dir = manager_dir("leave");
        let data = &dir.0;
        tracing::info!("--- not forced: refused, nothing removed");
        let err = leave(data, false, None, None).await.expect_err("a manager");
        assert!(err.to_string().starts_with("this node is a manager: demote it first"), "{err}");
        assert!(err.to_string().contains("or use --force to leave anyway"), "{err}");
        assert!(data.join("manager.json").exists() && data.join("raft").exists());

        tracing::info!("--- running: refused even when forced");
        let running = shoal_agent::DataDirLock::acquire(data).expect("the running node's lock");
        let err = leave(data, true, None, None).await.expect_err("running");
        assert!(err.to_string().contains("is running: stop it first (systemctl stop shoal-manager"), "{err}");
        drop(running);

        tracing::info!("--- forced");
        leave(data, true, None, None).await.expect("forced");
        for gone in ["manager.json", "raft", "ca", "admin", "certs", "raft.key"] {
            assert!(!data.join(gone).exists(), "{gone} is removed");
        }
        assert_eq!(std::fs::read(data.join("volumes/v1/data")).expect("the volume is kept"), b"kept");
        let err = leave(data, true, None, None).await.expect_err("left already");
        assert!(err.to_string().ends_with("holds no joined node; nothing to leave"), "{err}");
    }

    #[tokio::test]
    async fn a_worker_node_leaves_without_force() {
        let dir = manager_dir("leave-worker");
        let data = &dir.0;
        // A demoted manager, or one joined with a worker token: a worker record, no manager.
        std::fs::remove_file(data.join("manager.json")).expect("no manager");
        std::fs::write(data.join("agent.json"), br#"{"node_id":"n1","managers":[]}"#).expect("record");
        let left = leave(data, false, None, None).await.expect("a worker leaves");
        assert_eq!(left.node_id.as_deref(), Some("n1"));
        assert!(!data.join("agent.json").exists() && !data.join("certs").exists());
    }
}

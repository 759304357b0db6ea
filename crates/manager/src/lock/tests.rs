//! Autolock end to end in one process: three managers whose keys are encrypted with the unlock
//! key; one restarted stays locked (clients are told so, a wrong key is refused and counted)
//! until it is given the key — the rotated one, although its files were locked with the key
//! before; then autolock off puts every key file in the clear again.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use shoal_api::v1::{self, control_client::ControlClient};
use shoal_ca_pki::{UnlockKey, read_key_file};

use crate::client::{ClientError, connect_with_bundle, unlock};
use crate::node::{ManagerConfig, init, join, start};

fn manager_config(root: &Path, name: &str) -> ManagerConfig {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    ManagerConfig::new(root.join(name), addr, addr)
}

/// Waits (up to 30 s) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether every key file of the manager in `data` opens with `key` (and is encrypted).
fn locked_with(data: &Path, key: &UnlockKey) -> bool {
    let files = crate::autolock::key_files(data);
    files.len() >= 3
        && files
            .iter()
            .all(|f| shoal_ca_pki::key_file_is_encrypted(f).unwrap_or(false) && read_key_file(f, Some(key)).is_ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_manager_stays_locked_until_it_is_given_the_current_key() {
    let root = crate::testutil::TempDir(std::env::temp_dir().join(format!("shoal-autolock-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&root.0);
    let (mut c1, c2, c3) =
        (manager_config(&root.0, "m1"), manager_config(&root.0, "m2"), manager_config(&root.0, "m3"));
    c1.autolock = true;
    let (m1, outcome) = init(&c1).await.expect("init m1");
    let first: UnlockKey = outcome.unlock_key.as_deref().expect("init --autolock prints the key").parse().expect("key");
    let remote = c1.advertise_addr.to_string();
    let m2 = join(&c2, &remote, &outcome.manager_token).await.expect("join m2");
    let m3 = join(&c3, &remote, &outcome.manager_token).await.expect("join m3");
    let bundle = outcome.admin_bundle.clone();

    tracing::info!("--- every manager encrypts its keys at rest with the key; the API shows it");
    for config in [&c1, &c2, &c3] {
        until("keys encrypted", || locked_with(&config.data_dir, &first)).await;
    }
    until("m3 knows the other managers", || crate::autolock::recorded_peers(&c3.data_dir).len() == 2).await;
    let mut control = ControlClient::new(connect_with_bundle(&remote, &bundle).await.expect("connect"));
    let shown = control.get_unlock_key(v1::GetUnlockKeyRequest {}).await.expect("unlock key").into_inner();
    assert_eq!(shown.unlock_key, first.to_string());
    let cluster = control.get_cluster(v1::GetClusterRequest {}).await.expect("cluster").into_inner();
    assert!(cluster.cluster.and_then(|c| c.spec).is_some_and(|s| s.autolock_managers));

    tracing::info!("--- m3 restarts: locked, it says so, and refuses a wrong key");
    m3.shutdown().await;
    let restarting = tokio::spawn({
        let c3 = c3.clone();
        async move { start(&c3).await }
    });
    let m3_addr = c3.advertise_addr.to_string();
    let locked = loop {
        match connect_with_bundle(&m3_addr, &bundle).await {
            Err(err @ ClientError::Locked { .. }) => break err,
            Err(ClientError::Unreachable { .. }) => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("a locked manager is no manager: {other:?}"),
        }
    };
    assert!(
        locked.to_string().contains("is locked") && locked.to_string().contains("shoal cluster unlock"),
        "{locked}"
    );
    let err = connect_with_bundle(&remote, &bundle).await.map(drop);
    assert!(err.is_ok(), "an unlocked manager still serves: {err:?}");
    let err = unlock(&remote, &bundle, &first).await.expect_err("m1 is not locked");
    assert!(matches!(err, ClientError::NotLocked { .. }), "{err}");
    let wrong = UnlockKey::generate().expect("key");
    for attempt in 1..=2 {
        let err = unlock(&m3_addr, &bundle, &wrong).await.expect_err("wrong key").to_string();
        assert!(err.contains(&format!("refused {attempt} time(s)")) && err.contains("nothing was changed"), "{err}");
    }
    assert!(locked_with(&c3.data_dir, &first), "a wrong key changes nothing");

    tracing::info!("--- the key is rotated while m3 is locked: the new key unlocks it");
    let cluster = control.get_cluster(v1::GetClusterRequest {}).await.expect("cluster").into_inner().cluster;
    let cluster = cluster.expect("cluster");
    let version = cluster.meta.as_ref().map_or(0, |m| m.version);
    let rotated = control
        .update_cluster(v1::UpdateClusterRequest {
            version,
            spec: cluster.spec.clone(),
            rotate_unlock_key: true,
            ..Default::default()
        })
        .await
        .expect("rotate")
        .into_inner()
        .unlock_key;
    let second: UnlockKey = rotated.parse().expect("rotated key");
    assert_ne!(second, first);
    for config in [&c1, &c2] {
        until("keys re-encrypted with the new key", || locked_with(&config.data_dir, &second)).await;
    }
    let node_id = unlock(&m3_addr, &bundle, &second).await.expect("the current key unlocks m3");
    let m3 = restarting.await.expect("task").expect("m3 runs");
    assert_eq!(node_id, m3.node_id);
    assert!(locked_with(&c3.data_dir, &second), "m3's files open with the current key now");
    let mut via_m3 = ControlClient::new(connect_with_bundle(&m3_addr, &bundle).await.expect("m3 serves again"));
    let nodes = via_m3.list_nodes(v1::ListNodesRequest::default()).await.expect("nodes").into_inner().nodes;
    assert_eq!(nodes.len(), 3);

    tracing::info!("--- autolock off: every key file is in the clear again");
    let cluster = control.get_cluster(v1::GetClusterRequest {}).await.expect("cluster").into_inner().cluster;
    let cluster = cluster.expect("cluster");
    let mut spec = cluster.spec.clone().expect("spec");
    spec.autolock_managers = false;
    let version = cluster.meta.as_ref().map_or(0, |m| m.version);
    control
        .update_cluster(v1::UpdateClusterRequest { version, spec: Some(spec), ..Default::default() })
        .await
        .expect("autolock off");
    for config in [&c1, &c2, &c3] {
        until("keys in the clear", || {
            let data = &config.data_dir;
            !crate::autolock::is_locked(data).unwrap_or(true) && !data.join(crate::autolock::LOCKED_DIR).exists()
        })
        .await;
    }
    let err = control.get_unlock_key(v1::GetUnlockKeyRequest {}).await.expect_err("no key");
    assert!(err.message().contains("autolock is off"), "{}", err.message());
    for manager in [m1, m2, m3] {
        manager.shutdown().await;
    }
}

//! The backup file: round trip, and every way a damaged or foreign file is refused.

use super::*;

fn sample() -> Backup {
    Backup {
        header: BackupHeader { cluster_id: "c1".into(), node_id: "n1".into(), taken_at: 1_800_000_000, revision: 42 },
        files: vec![("manager.json".into(), b"{}".to_vec()), ("ca/root.key".into(), b"KEY".to_vec())],
        kvs: vec![(b"/services/a".to_vec(), vec![0, 1, 2, 255]), (b"/nodes/n1".to_vec(), Vec::new())],
    }
}

fn refusal(bytes: &[u8]) -> String {
    Backup::decode(bytes).expect_err("refused").to_string()
}

#[test]
fn a_backup_reads_back_as_written() {
    let backup = sample();
    assert_eq!(Backup::decode(&backup.encode()).expect("decodes"), backup);
}

#[test]
fn damaged_and_foreign_files_are_refused_with_the_reason() {
    let bytes = sample().encode();
    assert!(refusal(b"hello").starts_with("this is not a Shoal backup"));
    assert!(refusal(&bytes[..MAGIC.len() + 2]).contains("truncated"));
    // Cut anywhere before the end record is complete: truncated, never half read.
    for cut in [MAGIC.len() + 4, MAGIC.len() + 10, bytes.len() / 2, bytes.len() - 1] {
        let said = refusal(&bytes[..cut]);
        assert!(said.starts_with("the backup is truncated"), "cut at {cut}: {said}");
    }
    let mut altered = bytes.clone();
    let at = bytes.len() - 50;
    altered[at] ^= 0x01;
    assert_eq!(refusal(&altered), "the backup is corrupt: its checksum does not match its contents");
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"xx");
    assert_eq!(refusal(&longer), "the backup is corrupt: 2 bytes follow its end");
    let mut newer = bytes;
    newer[MAGIC.len()] = 9;
    assert_eq!(refusal(&newer), "the backup is in format 9; this shoal-manager reads format 1");
}

#[test]
fn a_backup_carries_only_a_managers_files() {
    for (path, ok) in [
        ("manager.json", true),
        ("certs/node.crt", true),
        ("ca/root.key", true),
        ("admin/node.key", true),
        ("raft/log", false),
        ("../etc/passwd", false),
        ("/etc/passwd", false),
        ("certs/../../x", false),
    ] {
        assert_eq!(carried_path(path), ok, "{path}");
    }
    let mut backup = sample();
    backup.files.push(("../outside".into(), Vec::new()));
    assert_eq!(refusal(&backup.encode()), "the backup names a file it may not carry: \"../outside\"");
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

async fn control(addr: &str, bundle: &Path) -> v1::control_client::ControlClient<tonic::transport::Channel> {
    v1::control_client::ControlClient::new(crate::connect_with_bundle(addr, bundle).await.expect("connect"))
}

/// Waits (up to 30 s) until the restored manager behind `admin` answers.
async fn until_it_answers(admin: &mut v1::control_client::ControlClient<tonic::transport::Channel>) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match admin.list_services(v1::ListServicesRequest::default()).await {
            Ok(_) => return,
            Err(status) => assert!(tokio::time::Instant::now() < deadline, "the restored manager answers: {status:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn service_names(control: &mut v1::control_client::ControlClient<tonic::transport::Channel>) -> Vec<String> {
    let listed = control.list_services(v1::ListServicesRequest::default()).await.expect("list").into_inner();
    let mut names: Vec<String> =
        listed.services.into_iter().filter_map(|s| s.spec.and_then(|s| s.annotations).map(|a| a.name)).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_manager_is_backed_up_and_restored_as_a_new_cluster() {
    let root = std::env::temp_dir().join(format!("shoal-manager-backup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let _cleanup = crate::testutil::TempDir(root.clone());
    let (source, restored_dir) = (root.join("source"), root.join("restored"));
    let addr = free_addr();
    let (manager, outcome) = crate::init(&crate::ManagerConfig::new(&source, addr, addr)).await.expect("init");
    let mut admin = control(&addr.to_string(), &outcome.admin_bundle).await;
    for name in ["web", "db"] {
        let spec = crate::control::tests::spec(name, 2);
        admin.create_service(v1::CreateServiceRequest { spec: Some(spec) }).await.expect("create");
    }
    let secret = v1::SecretSpec {
        annotations: Some(v1::Annotations { name: "pw".into(), ..Default::default() }),
        data: b"hunter2".to_vec(),
    };
    admin.create_secret(v1::CreateSecretRequest { spec: Some(secret) }).await.expect("secret");

    // --- online, with the manager's own certificate
    let backup = take_backup(&source, None).await.expect("backup");
    assert_eq!(
        (backup.header.cluster_id.as_str(), backup.header.node_id.as_str()),
        (outcome.cluster_id.as_str(), outcome.node_id.as_str())
    );
    assert!(backup.files.iter().any(|(p, _)| p.starts_with("ca/")), "the CA travels");
    assert!(backup.files.iter().any(|(p, _)| p == "manager.json"), "the manager's identity travels");
    assert!(backup.kvs.iter().all(|(k, _)| k != LEADER_FENCE.as_bytes()));
    let file = root.join("cluster.backup");
    write_backup(&backup, &file, None).expect("write");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777, 0o600);
    manager.shutdown().await;

    // --- refused where a cluster lives; restored into an empty directory at a new address
    let decoded = Backup::decode(&std::fs::read(&file).expect("read")).expect("decode");
    let err = restore(&decoded, &source, None, None).await.expect_err("not over a manager");
    assert!(err.to_string().contains("holds a manager of this cluster already"), "{err}");
    let other_addr = free_addr();
    let other_dir = root.join("other");
    let (other, other_outcome) =
        crate::init(&crate::ManagerConfig::new(&other_dir, other_addr, other_addr)).await.expect("another cluster");
    other.shutdown().await;
    let err = restore(&decoded, &other_dir, None, None).await.expect_err("not over another cluster");
    assert!(
        err.to_string().contains(&format!(
            "holds a manager of cluster {}, and the backup is of cluster {}",
            other_outcome.cluster_id, outcome.cluster_id
        )),
        "{err}"
    );
    let new_addr = free_addr();
    restore(&decoded, &restored_dir, Some(new_addr.to_string()), None).await.expect("restore");
    let restored = crate::start(&crate::ManagerConfig::new(&restored_dir, new_addr, new_addr)).await.expect("start");
    assert_eq!(restored.node_id, outcome.node_id, "the manager the backup was taken from");
    let mut admin = control(&new_addr.to_string(), &restored_dir.join("admin")).await;
    until_it_answers(&mut admin).await;
    assert_eq!(service_names(&mut admin).await, ["db", "web"]);
    let secrets = admin.list_secrets(v1::ListSecretsRequest::default()).await.expect("secrets").into_inner().secrets;
    assert_eq!(secrets.len(), 1);
    let nodes = admin.list_nodes(v1::ListNodesRequest::default()).await.expect("nodes").into_inner().nodes;
    assert!(nodes.iter().any(|n| n.id == outcome.node_id), "its node is known");
    // It takes writes alone: a new single-member group.
    let spec = crate::control::tests::spec("api", 1);
    admin.create_service(v1::CreateServiceRequest { spec: Some(spec) }).await.expect("a write after the restore");
    restored.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autolocked_managers_backup_is_sealed_with_the_unlock_key() {
    let root = std::env::temp_dir().join(format!("shoal-manager-backup-sealed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let _cleanup = crate::testutil::TempDir(root.clone());
    let (source, restored_dir) = (root.join("source"), root.join("restored"));
    let addr = free_addr();
    let mut config = crate::ManagerConfig::new(&source, addr, addr);
    config.autolock = true;
    let (manager, outcome) = crate::init(&config).await.expect("init");
    let key: shoal_ca_pki::UnlockKey = outcome.unlock_key.as_deref().expect("key").parse().expect("parses");
    let mut admin = control(&addr.to_string(), &outcome.admin_bundle).await;
    let spec = crate::control::tests::spec("web", 1);
    admin.create_service(v1::CreateServiceRequest { spec: Some(spec) }).await.expect("create");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !backup_needs_unlock_key(&source).expect("read") {
        assert!(std::time::Instant::now() < deadline, "the keeper encrypts the keys within 30 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let err = take_backup(&source, None).await.expect_err("the node key is locked");
    assert!(err.to_string().contains("give the unlock key"), "{err}");
    let backup = take_backup(&source, Some(&key)).await.expect("backup");
    let file = root.join("sealed.backup");
    write_backup(&backup, &file, Some(&key)).expect("write");
    manager.shutdown().await;

    let bytes = std::fs::read(&file).expect("read");
    assert!(backup_is_sealed(&bytes));
    assert!(!bytes.windows(b"shoal-test/web".len()).any(|w| w == b"shoal-test/web"), "nothing readable");
    let err = open_backup(&bytes, None).expect_err("needs the key").to_string();
    assert!(err.contains("sealed with the cluster's unlock key"), "{err}");
    let other = shoal_ca_pki::UnlockKey::generate().expect("key");
    let err = open_backup(&bytes, Some(&other)).expect_err("another key").to_string();
    assert!(err.contains("does not open the backup"), "{err}");
    let opened = open_backup(&bytes, Some(&key)).expect("opens with the key");
    assert_eq!(opened, backup);

    let new_addr = free_addr();
    restore(&opened, &restored_dir, Some(new_addr.to_string()), Some(&key)).await.expect("restore");
    let mut config = crate::ManagerConfig::new(&restored_dir, new_addr, new_addr);
    config.unlock_key = Some(key);
    let restored = crate::start(&config).await.expect("starts with the key given");
    let mut admin = control(&new_addr.to_string(), &restored_dir.join("admin")).await;
    until_it_answers(&mut admin).await;
    assert_eq!(service_names(&mut admin).await, ["web"]);
    restored.shutdown().await;
}

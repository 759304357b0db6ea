//! A manager initialised in a temporary data directory, used through its admin bundle over TLS,
//! stopped and resumed from disk.

use super::*;
use shoal_api::v1::control_client::ControlClient;

fn config(dir: &Path) -> ManagerConfig {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    ManagerConfig::new(dir, any, "127.0.0.1:2377".parse().expect("addr"))
}

async fn admin(manager: &RunningManager, bundle: &Path) -> ControlClient<tonic::transport::Channel> {
    let credentials = NodeCredentials::load(bundle, None).expect("admin credentials");
    let trust = TrustBundle::load(bundle).expect("admin trust");
    let tls = client_config(&credentials, &trust).expect("tls");
    ControlClient::new(shoal_api::connect(&manager.local_addr.to_string(), tls).await.expect("connect"))
}

#[tokio::test]
async fn init_then_resume_from_the_data_dir() {
    let dir = crate::testutil::TempDir(std::env::temp_dir().join(format!("shoal-manager-node-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let config = config(&dir.0);

    let err = start(&config).await.expect_err("nothing to resume yet");
    assert!(
        err.to_string().ends_with("holds no cluster; run `shoal-manager init` or `shoal-manager join` first"),
        "{err}"
    );

    tracing::info!("--- an init that fails (its port is taken) leaves nothing that blocks the next one");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = ManagerConfig::new(&dir.0, taken.local_addr().expect("addr"), "127.0.0.1:2377".parse().expect("addr"));
    let failed = init(&busy).await.expect_err("port taken");
    assert!(matches!(failed, StartError::Listen { .. }), "{failed}");
    let err = start(&config).await.expect_err("the failed init left no cluster");
    assert!(err.to_string().contains("holds no cluster"), "{err}");
    drop(taken);

    let (manager, outcome) = init(&config).await.expect("init");
    assert!(outcome.worker_token.starts_with("SHTKN-1-") && outcome.manager_token.starts_with("SHTKN-1-"));
    assert_ne!(outcome.worker_token, outcome.manager_token);
    let mut control = admin(&manager, &outcome.admin_bundle).await;
    let cluster =
        control.get_cluster(v1::GetClusterRequest {}).await.expect("cluster").into_inner().cluster.expect("cluster");
    assert_eq!(cluster.id, outcome.cluster_id);
    let nodes = control.list_nodes(v1::ListNodesRequest::default()).await.expect("nodes").into_inner().nodes;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].manager_status.as_ref().map(|m| m.leader), Some(true));
    let spec = v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: "web".into(), ..Default::default() }),
        mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 2 })),
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec { image: "shoal-test/web:v1".into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    control.create_service(v1::CreateServiceRequest { spec: Some(spec) }).await.expect("create service");
    let again = init(&config).await.expect_err("a second init on the same data dir");
    assert!(again.to_string().contains("already holds a cluster"), "{again}");
    manager.shutdown().await;

    tracing::info!("--- restart from the same data dir: same cluster, same service, no join");
    let manager = start(&config).await.expect("resume");
    assert_eq!(manager.node_id, outcome.node_id);
    let mut control = admin(&manager, &outcome.admin_bundle).await;
    let services = control.list_services(v1::ListServicesRequest::default()).await.expect("services").into_inner();
    assert_eq!(
        services
            .services
            .iter()
            .filter_map(|s| s.spec.as_ref()?.annotations.as_ref())
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["web"]
    );
    // The leader loop created the service's tasks (they wait for nodes).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tasks = control.list_tasks(v1::ListTasksRequest::default()).await.expect("tasks").into_inner().tasks;
        if tasks.len() == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the leader loop creates 2 tasks: {tasks:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    manager.shutdown().await;
}

/// A free loopback address (the port is released for the manager to bind).
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

fn manager_config(root: &Path, name: &str) -> ManagerConfig {
    let addr = free_addr();
    ManagerConfig::new(root.join(name), addr, addr)
}

async fn control_at(addr: SocketAddr, bundle: &Path) -> ControlClient<tonic::transport::Channel> {
    let credentials = NodeCredentials::load(bundle, None).expect("admin credentials");
    let trust = TrustBundle::load(bundle).expect("admin trust");
    ControlClient::new(
        shoal_api::connect(&addr.to_string(), client_config(&credentials, &trust).expect("tls"))
            .await
            .expect("connect"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_survive_the_loss_of_the_leader() {
    let root = crate::testutil::TempDir(std::env::temp_dir().join(format!("shoal-manager-ha-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&root.0);
    let (c1, c2, c3) = (manager_config(&root.0, "m1"), manager_config(&root.0, "m2"), manager_config(&root.0, "m3"));
    let (m1, outcome) = init(&c1).await.expect("init m1");
    let remote = c1.advertise_addr.to_string();

    tracing::info!("--- refusals: a worker token, a token of another cluster");
    let err = join(&manager_config(&root.0, "w"), &remote, &outcome.worker_token).await.expect_err("worker token");
    assert!(err.to_string().contains("that is a worker token"), "{err}");
    let other = manager_config(&root.0, "other");
    let (other_cluster, other_outcome) = init(&other).await.expect("another cluster");
    let err =
        join(&manager_config(&root.0, "x"), &remote, &other_outcome.manager_token).await.expect_err("foreign token");
    assert!(err.to_string().contains("does not match the token"), "{err}");
    other_cluster.shutdown().await;

    tracing::info!("--- two managers join, the second through a follower (it asks the leader)");
    let m2 = join(&c2, &remote, &outcome.manager_token).await.expect("join m2");
    assert!(!m2.objects().store().is_leader());
    let m3 = join(&c3, &c2.advertise_addr.to_string(), &outcome.manager_token).await.expect("join m3 through m2");
    let status = m1.objects().store().status().await;
    assert_eq!(status.members.len(), 3, "{status:?}");

    tracing::info!("--- a write through a follower reaches the leader; every manager reads it");
    let spec = v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: "web".into(), ..Default::default() }),
        mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 1 })),
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec { image: "shoal-test/web:v1".into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut via_m2 = control_at(m2.local_addr, &outcome.admin_bundle).await;
    via_m2.create_service(v1::CreateServiceRequest { spec: Some(spec) }).await.expect("create via m2");
    let mut via_m3 = control_at(m3.local_addr, &outcome.admin_bundle).await;
    let services = via_m3.list_services(v1::ListServicesRequest::default()).await.expect("list via m3").into_inner();
    assert_eq!(services.services.len(), 1);

    tracing::info!("--- kill the leader: another leads and the API keeps working");
    let old_leader = m1.objects().store().id();
    assert_eq!(m1.objects().store().leader(), Some(old_leader), "m1 leads before it is killed");
    m1.shutdown().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let listed = via_m2.list_nodes(v1::ListNodesRequest::default()).await;
        if listed.is_ok() && m2.objects().store().leader().is_some_and(|l| l != old_leader) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no new leader within 15 s: {listed:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut scaled =
        via_m3.get_service(v1::GetServiceRequest { service: "web".into() }).await.expect("get").into_inner();
    let service = scaled.service.take().expect("service");
    let mut new_spec = service.spec.clone().expect("spec");
    new_spec.mode = Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 3 }));
    let version = service.meta.map(|m| m.version).unwrap_or_default();
    via_m3
        .update_service(v1::UpdateServiceRequest {
            service: "web".into(),
            version,
            spec: Some(new_spec),
            rollback: false,
            spec_version: service.spec_version,
        })
        .await
        .expect("update after failover");
    m2.shutdown().await;
    m3.shutdown().await;
}

#[tokio::test]
async fn a_manager_whose_certificate_expired_while_it_was_down_renews_it_from_its_ca() {
    let dir =
        crate::testutil::TempDir(std::env::temp_dir().join(format!("shoal-manager-expired-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    let mut config = config(&dir.0);
    config.cert_validity = Duration::from_secs(2);
    let (manager, _) = init(&config).await.expect("init");
    manager.shutdown().await;
    tracing::info!("--- down for longer than the certificate lives");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let certs = dir.0.join("certs");
    let expired = NodeCredentials::load(&certs, None).expect("certs");
    assert!(expired.not_after() < time::OffsetDateTime::now_utc());
    config.cert_validity = Duration::from_secs(3600);
    let manager = start(&config).await.expect("a manager renews its own expired certificate");
    let renewed = NodeCredentials::load(&certs, None).expect("certs");
    assert_eq!(renewed.identity(), expired.identity());
    assert!(renewed.not_after() > time::OffsetDateTime::now_utc() + time::Duration::minutes(50));
    tracing::info!("--- its renewal loop renews the expired admin bundle at once");
    let bundle = dir.0.join("admin");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while NodeCredentials::load(&bundle, None).expect("bundle").not_after() < time::OffsetDateTime::now_utc() {
        assert!(std::time::Instant::now() < deadline, "the admin bundle was not renewed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut control = admin(&manager, &bundle).await;
    control.list_nodes(v1::ListNodesRequest::default()).await.expect("the manager serves with it");
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_that_fails_midway_leaves_no_voter_no_record_and_no_files() {
    let root = crate::testutil::TempDir(
        std::env::temp_dir().join(format!("shoal-manager-failed-join-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&root.0);
    let (c1, c2) = (manager_config(&root.0, "m1"), manager_config(&root.0, "m2"));
    let (m1, outcome) = init(&c1).await.expect("init m1");
    let remote = c1.advertise_addr.to_string();

    tracing::info!("--- m2 is admitted to the Raft group, then fails before it records that it joined");
    FAIL_JOIN_AFTER_RAFT.lock().expect("hook").push(c2.data_dir.clone());
    let err = join(&c2, &remote, &outcome.manager_token).await.expect_err("fails on purpose");
    assert!(err.to_string().contains("failed on purpose"), "{err}");
    FAIL_JOIN_AFTER_RAFT.lock().expect("hook").clear();
    let status = m1.objects().store().status().await;
    assert_eq!(status.members.len(), 1, "the failed member was taken out again: {status:?}");
    let mut control = admin(&m1, &outcome.admin_bundle).await;
    let nodes = control.list_nodes(v1::ListNodesRequest::default()).await.expect("nodes").into_inner().nodes;
    assert_eq!(nodes.len(), 1, "no record of the failed join: {nodes:?}");
    for left in ["raft", "ca", "certs", "manager.json"] {
        assert!(!c2.data_dir.join(left).exists(), "{left} stayed behind");
    }

    tracing::info!("--- the same data directory joins the next time");
    let m2 = join(&c2, &remote, &outcome.manager_token).await.expect("join m2");
    let status = m1.objects().store().status().await;
    assert_eq!(status.members.len(), 2, "{status:?}");
    m2.shutdown().await;
    m1.shutdown().await;
}

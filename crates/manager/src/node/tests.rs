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
    ControlClient::new(crate::connect(&manager.local_addr.to_string(), tls).await.expect("connect"))
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

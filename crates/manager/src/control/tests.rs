//! The control service called directly (no network): names, prefixes, versions, validation,
//! node removal rules and token rotation, each with the status code and message a CLI shows.

use super::*;
use crate::testutil::store;
use tonic::Code;

pub(super) fn ca() -> std::sync::Arc<std::sync::Mutex<shoal_ca_pki::ClusterCa>> {
    let root = shoal_ca_pki::RootCa::generate(time::OffsetDateTime::now_utc()).expect("root");
    std::sync::Arc::new(std::sync::Mutex::new(shoal_ca_pki::ClusterCa::new(root)))
}

pub(crate) fn spec(name: &str, replicas: u64) -> v1::ServiceSpec {
    v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: name.into(), ..Default::default() }),
        mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas })),
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec { image: "shoal-test/web:v1".into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn create(control: &ControlService, name: &str) -> v1::Service {
    let request = Request::new(v1::CreateServiceRequest { spec: Some(spec(name, 1)) });
    control.create_service(request).await.expect("create").into_inner().service.expect("service")
}

#[tokio::test]
async fn services_by_id_name_and_prefix() {
    let (objects, _dir) = store("control-services").await;
    let control = ControlService::new(objects, RemovedNodes::new(), ca());
    let web = create(&control, "web").await;
    assert_eq!(web.id.len(), crate::ids::ID_LEN);
    assert_eq!(web.spec_version, 1);
    for reference in [web.id.clone(), "web".to_owned(), web.id[..6].to_owned()] {
        let got = control.get_service(Request::new(v1::GetServiceRequest { service: reference.clone() })).await;
        assert_eq!(got.expect(&reference).into_inner().service.map(|s| s.id), Some(web.id.clone()));
    }
    let missing = control.get_service(Request::new(v1::GetServiceRequest { service: "nope".into() })).await;
    let status = missing.expect_err("missing");
    assert_eq!((status.code(), status.message()), (Code::NotFound, "no such service: nope"));

    let dup = control.create_service(Request::new(v1::CreateServiceRequest { spec: Some(spec("web", 2)) })).await;
    let status = dup.expect_err("duplicate name");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(status.message(), format!("service name \"web\" is already in use by service {}", web.id));

    let bad = control.create_service(Request::new(v1::CreateServiceRequest { spec: Some(spec("web.1", 1)) })).await;
    assert_eq!(bad.expect_err("invalid name").code(), Code::InvalidArgument);
}

#[tokio::test]
async fn updates_need_the_current_version_and_keep_the_previous_spec() {
    let (objects, _dir) = store("control-update").await;
    let control = ControlService::new(objects.clone(), RemovedNodes::new(), ca());
    let web = create(&control, "web").await;
    let update = |version: u64, replicas: u64, rollback: bool| v1::UpdateServiceRequest {
        service: "web".into(),
        version,
        spec: Some(spec("web", replicas)),
        rollback,
        spec_version: 0,
    };
    let updated = control.update_service(Request::new(update(web.version(), 5, false))).await.expect("update");
    let updated = updated.into_inner().service.expect("service");
    assert_eq!(updated.spec_version, 2);
    assert_eq!(updated.previous_spec, web.spec);

    let stale = control.update_service(Request::new(update(web.version(), 7, false))).await.expect_err("stale");
    assert_eq!(stale.code(), Code::Aborted, "a stale version is retried by reading again");
    assert!(stale.message().contains("was changed by someone else"), "{}", stale.message());

    // The cluster's own write (the allocator's endpoint) makes the version stale but not the
    // spec: a caller that names the spec version it read is not refused; a stale spec still is.
    let read = objects.get::<v1::Service>(&updated.id).await.expect("read");
    objects
        .modify::<v1::Service>(&updated.id, |s| {
            s.endpoint = Some(v1::Endpoint::default());
            true
        })
        .await
        .expect("the leader's write");
    let with_spec = |spec_version: u64| v1::UpdateServiceRequest { spec_version, ..update(read.version(), 6, false) };
    let stale = control.update_service(Request::new(with_spec(read.spec_version - 1))).await.expect_err("stale spec");
    assert_eq!(stale.code(), Code::Aborted);
    let updated = control.update_service(Request::new(with_spec(read.spec_version))).await.expect("same spec read");
    let updated = updated.into_inner().service.expect("service");
    assert_eq!(updated.spec_version, 3);

    let rolled = control.update_service(Request::new(update(updated.version(), 0, true))).await.expect("rollback");
    assert_eq!(
        rolled.into_inner().service.and_then(|s| s.spec.and_then(|s| s.mode)),
        Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 5 })),
        "rollback restores the previous spec"
    );

    let mut global = spec("web", 0);
    global.mode = Some(v1::service_spec::Mode::Global(v1::GlobalService {}));
    let current =
        control.get_service(Request::new(v1::GetServiceRequest { service: "web".into() })).await.expect("get");
    let version = current.into_inner().service.map(|s| s.version()).unwrap_or_default();
    let request = v1::UpdateServiceRequest {
        service: "web".into(),
        version,
        spec: Some(global),
        rollback: false,
        spec_version: 0,
    };
    let status = control.update_service(Request::new(request)).await.expect_err("mode change");
    assert_eq!(status.code(), Code::InvalidArgument);
}

/// An update that changes tasks starts a rolling update; scaling does not; a rollback starts one
/// of its own; a paused update goes on with any update.
#[tokio::test]
async fn updates_set_the_update_status() {
    use v1::update_status::UpdateState;
    let (objects, _dir) = store("control-update-status").await;
    let control = ControlService::new(objects.clone(), RemovedNodes::new(), ca());
    create(&control, "web").await;
    let state = |service: &v1::Service| service.update_status.as_ref().map(|s| (s.state, s.message.clone()));
    let update = |edit: &dyn Fn(&mut v1::ServiceSpec)| {
        let control = &control;
        let mut next = spec("web", 1);
        edit(&mut next);
        async move {
            let current = control.get_service(Request::new(v1::GetServiceRequest { service: "web".into() })).await;
            let current = current.expect("get").into_inner().service.expect("service");
            let request = v1::UpdateServiceRequest {
                service: "web".into(),
                version: current.version(),
                spec: Some(next),
                rollback: false,
                spec_version: 0,
            };
            control.update_service(Request::new(request)).await.expect("update").into_inner().service.expect("service")
        }
    };
    let scaled =
        update(&|s| s.mode = Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 3 }))).await;
    assert_eq!(state(&scaled), None, "scaling replaces no task");
    let constrained = update(&|s| {
        s.mode = Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 3 }));
        s.task.as_mut().expect("task").placement =
            Some(v1::Placement { constraints: vec!["node.role==worker".into()], ..Default::default() });
    })
    .await;
    assert_eq!(state(&constrained), None, "constraints move only the tasks that no longer meet them");
    let v2 =
        update(&|s| s.task.as_mut().and_then(|t| t.container.as_mut()).expect("container").image = "web:v2".into())
            .await;
    assert_eq!(state(&v2), Some((UpdateState::Updating as i32, "update in progress".to_owned())));

    objects
        .modify::<v1::Service>(&v2.id, |s| {
            s.update_status.as_mut().expect("status").state = UpdateState::Paused as i32;
            true
        })
        .await
        .expect("the leader pauses it");
    let resumed =
        update(&|s| s.task.as_mut().and_then(|t| t.container.as_mut()).expect("container").image = "web:v2".into())
            .await;
    assert_eq!(state(&resumed).map(|s| s.0), Some(UpdateState::Updating as i32), "a paused update goes on");

    let request = v1::UpdateServiceRequest {
        service: "web".into(),
        version: resumed.version(),
        spec: None,
        rollback: true,
        spec_version: 0,
    };
    let rolled = control.update_service(Request::new(request)).await.expect("rollback");
    let rolled = rolled.into_inner().service.expect("service");
    assert_eq!(state(&rolled), Some((UpdateState::RollbackStarted as i32, "manually requested rollback".to_owned())));
}

/// The cluster's own writes of a service (the allocator's endpoint, a rolling update's
/// progress) between the control API's read and write do not refuse an update that names the
/// spec it read: it is applied to the fresh object (a failover test saw such a refusal).
#[tokio::test]
async fn updates_go_through_the_clusters_own_writes() {
    let (objects, _dir) = store("control-update-race").await;
    let control = ControlService::new(objects.clone(), RemovedNodes::new(), ca());
    let web = create(&control, "web").await;
    let writer = {
        let objects = objects.clone();
        let id = web.id.clone();
        tokio::spawn(async move {
            // A very busy leader: a write of the service every 2 ms.
            for i in 0..5_000u64 {
                let write = objects.modify::<v1::Service>(&id, |s| {
                    s.allocation_error = format!("write {i}");
                    true
                });
                if write.await.is_err() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    for replicas in 2..32 {
        let read = control.get_service(Request::new(v1::GetServiceRequest { service: "web".into() })).await;
        let read = read.expect("get").into_inner().service.expect("service");
        let request = v1::UpdateServiceRequest {
            service: "web".into(),
            version: read.version(),
            spec: Some(spec("web", replicas)),
            rollback: false,
            spec_version: read.spec_version,
        };
        let updated = control.update_service(Request::new(request)).await;
        assert!(updated.is_ok(), "update to {replicas} replicas refused: {updated:?}");
    }
    writer.abort();
}

#[tokio::test]
async fn removing_a_service_marks_its_tasks_for_removal() {
    let (objects, _dir) = store("control-remove").await;
    let control = ControlService::new(objects.clone(), RemovedNodes::new(), ca());
    let web = create(&control, "web").await;
    for (id, service) in [("t1", web.id.as_str()), ("t2", "other")] {
        let task = v1::Task {
            id: id.into(),
            service_id: service.into(),
            desired_state: v1::TaskState::Running as i32,
            ..Default::default()
        };
        objects.create(task).await.expect("task");
    }
    control.remove_service(Request::new(v1::RemoveServiceRequest { service: "web".into() })).await.expect("remove");
    let t1: v1::Task = objects.get("t1").await.expect("t1");
    let t2: v1::Task = objects.get("t2").await.expect("t2");
    assert_eq!(t1.desired_state, v1::TaskState::Remove as i32);
    assert_eq!(t2.desired_state, v1::TaskState::Running as i32);
    let listed = control
        .list_tasks(Request::new(v1::ListTasksRequest { service_ids: vec!["other".into()], ..Default::default() }));
    assert_eq!(listed.await.expect("list").into_inner().tasks.len(), 1);
}

#[tokio::test]
async fn node_removal_rules() {
    let (objects, _dir) = store("control-nodes").await;
    let removed = RemovedNodes::new();
    let control = ControlService::new(objects.clone(), removed.clone(), ca());
    let node = |id: &str, host: &str, role: v1::NodeRole, state: v1::node_status::State| v1::Node {
        id: id.into(),
        role: role as i32,
        description: Some(v1::NodeDescription { hostname: host.into(), ..Default::default() }),
        status: Some(v1::NodeStatus { state: state as i32, ..Default::default() }),
        ..Default::default()
    };
    objects.create(node("m1id", "m1", v1::NodeRole::Manager, v1::node_status::State::Ready)).await.expect("m1");
    objects.create(node("w1id", "w1", v1::NodeRole::Worker, v1::node_status::State::Ready)).await.expect("w1");
    objects.create(node("w2id", "w2", v1::NodeRole::Worker, v1::node_status::State::Down)).await.expect("w2");
    let remove =
        |node: &str, force: bool| control.remove_node(Request::new(v1::RemoveNodeRequest { node: node.into(), force }));

    let status = remove("m1", false).await.expect_err("manager");
    assert_eq!(status.message(), "node m1 is a manager; demote it first (shoal node demote m1)");
    let status = remove("w1", false).await.expect_err("ready");
    assert_eq!(status.message(), "node w1 is not down and can't be removed; stop its agent first, or use --force");
    remove("w2", false).await.expect("a down node goes");
    remove("w1", true).await.expect("forced");
    assert!(removed.contains("w1id") && removed.contains("w2id"), "removed nodes are refused at the TLS layer");
    let left = control.list_nodes(Request::new(v1::ListNodesRequest::default())).await.expect("list").into_inner();
    assert_eq!(left.nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["m1id"]);
}

#[tokio::test]
async fn rotating_a_join_token_replaces_it() {
    let (objects, _dir) = store("control-cluster").await;
    let control = ControlService::new(objects.clone(), RemovedNodes::new(), ca());
    let missing = control.get_cluster(Request::new(v1::GetClusterRequest {})).await.expect_err("no cluster yet");
    assert_eq!(missing.code(), Code::FailedPrecondition);

    let now = time::OffsetDateTime::now_utc();
    let ca = shoal_ca_pki::ClusterCa::new(shoal_ca_pki::RootCa::generate(now).expect("root"));
    let tokens = JoinTokens::generate(&ca.trust_bundle()).expect("tokens");
    let join_tokens = v1::JoinTokens {
        worker: tokens.token(Role::Worker).to_string(),
        manager: tokens.token(Role::Manager).to_string(),
    };
    let cluster = v1::Cluster { id: "c1".into(), join_tokens: Some(join_tokens.clone()), ..Default::default() };
    let cluster = objects.create(cluster).await.expect("cluster");
    let request =
        v1::UpdateClusterRequest { version: cluster.version(), rotate_worker_token: true, ..Default::default() };
    let rotated =
        control.update_cluster(Request::new(request)).await.expect("rotate").into_inner().cluster.expect("cluster");
    let rotated_tokens = rotated.join_tokens.expect("tokens");
    assert_ne!(rotated_tokens.worker, join_tokens.worker, "the worker token changed");
    assert_eq!(rotated_tokens.manager, join_tokens.manager, "the manager token did not");
    let fresh = JoinTokens::from_tokens(
        &rotated_tokens.worker.parse().expect("worker"),
        &rotated_tokens.manager.parse().expect("manager"),
    )
    .expect("tokens");
    let old: JoinToken = join_tokens.worker.parse().expect("old worker token");
    assert!(fresh.role_for(&old).is_err(), "the old worker token is refused");
}

#[tokio::test]
async fn joining_raft_through_a_follower_names_the_leader() {
    let (leader, follower, _dirs) = crate::testutil::leader_and_follower("control-join").await;
    let manager = v1::Node { id: "m2".into(), role: v1::NodeRole::Manager as i32, ..Default::default() };
    leader.create(manager).await.expect("manager node");
    let control = ControlService::new(follower.clone(), RemovedNodes::new(), ca());
    let mut request = Request::new(v1::JoinRaftRequest { raft_id: 3, addr: "192.0.2.13:2377".into() });
    let identity =
        shoal_ca_pki::NodeIdentity { node_id: "m2".into(), role: shoal_ca_pki::Role::Manager, cluster_id: "c".into() };
    request
        .extensions_mut()
        .insert(crate::PeerInfo { addr: ([192, 0, 2, 13], 40000).into(), identity: Some(identity) });
    let refused = control.join_raft(request).await.expect_err("not the leader");
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(
        refused.message(),
        "manager mem://m2 is not the Raft leader and cannot add members; the leader is at mem://m1: ask it"
    );
    follower.store().shutdown().await;
    leader.store().shutdown().await;
}

#[tokio::test]
async fn role_changes_need_a_manager_capable_node_and_keep_a_manager() {
    let (objects, _dir) = store("control-roles").await;
    let control = ControlService::new(objects.clone(), RemovedNodes::new(), ca());
    let node = |id: &str, role: v1::NodeRole, can_manage: bool| v1::Node {
        id: id.into(),
        role: role as i32,
        spec: Some(v1::NodeSpec { desired_role: role as i32, ..Default::default() }),
        description: Some(v1::NodeDescription { hostname: id.into(), can_manage, ..Default::default() }),
        ..Default::default()
    };
    objects.create(node("m1", v1::NodeRole::Manager, true)).await.expect("m1");
    objects.create(node("agent", v1::NodeRole::Worker, false)).await.expect("agent");
    objects.create(node("spare", v1::NodeRole::Worker, true)).await.expect("spare");
    let set_role = async |id: &str, role: v1::NodeRole| {
        let current: v1::Node = objects.get(id).await.expect("node");
        let spec = v1::NodeSpec { desired_role: role as i32, ..current.spec.clone().unwrap_or_default() };
        let request = v1::UpdateNodeRequest { node: id.into(), version: current.version(), spec: Some(spec) };
        control.update_node(Request::new(request)).await
    };

    let status = set_role("agent", v1::NodeRole::Manager).await.expect_err("shoal-agent node");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().starts_with("node agent runs shoal-agent, which cannot run a manager"), "{status:?}");
    let status = set_role("m1", v1::NodeRole::Worker).await.expect_err("last manager");
    assert_eq!(status.message(), "node m1 is the last manager of the cluster; promote another node first");

    set_role("spare", v1::NodeRole::Manager).await.expect("a shoal-manager worker is promotable");
    let spare: v1::Node = objects.get("spare").await.expect("spare");
    assert_eq!(spare.spec.map(|s| s.desired_role), Some(v1::NodeRole::Manager as i32));
    assert_eq!(spare.role, v1::NodeRole::Worker as i32, "the leader's loop changes the role, not the API");
}

/// The leader's passes every 20 ms, which allocate what the control API stores (abort the handle
/// at the end of the test).
fn leader_passes(objects: &ObjectStore) -> tokio::task::JoinHandle<()> {
    let leader = crate::Leader::new(
        objects.clone(),
        crate::Dispatcher::new(objects.clone(), Duration::from_secs(1)),
        crate::DEFAULT_TASK_HISTORY,
    );
    tokio::spawn(async move {
        loop {
            let _ = leader.pass(std::time::SystemTime::now()).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

fn network_spec(name: &str, subnet: &str) -> v1::NetworkSpec {
    v1::NetworkSpec {
        annotations: Some(v1::Annotations { name: name.into(), ..Default::default() }),
        ipam: Some(v1::IpamConfig { subnet: subnet.into(), ..Default::default() }),
        ..Default::default()
    }
}

async fn create_network(control: &ControlService, spec: v1::NetworkSpec) -> Result<v1::Network, Status> {
    let request = Request::new(v1::CreateNetworkRequest { spec: Some(spec) });
    Control::create_network(control, request).await.map(|r| r.into_inner().network.unwrap_or_default())
}

fn refusal<T: std::fmt::Debug>(result: Result<T, Status>) -> (Code, String) {
    let status = result.expect_err("refused");
    (status.code(), status.message().to_owned())
}

#[tokio::test]
async fn networks_are_checked_allocated_and_removed_only_when_unused() {
    let (objects, _dir) = store("control-networks").await;
    let control = ControlService::new(objects.clone(), RemovedNodes::new(), ca());
    let passes = leader_passes(&objects);

    let mut ingress = network_spec("ingress", "198.18.0.0/24");
    ingress.ingress = true;
    create_network(&control, ingress.clone()).await.expect("ingress");
    let front = create_network(&control, network_spec("front", "198.18.1.0/24")).await.expect("front");
    let allocation = front.allocation.expect("allocated when create answers");
    assert_eq!(
        (allocation.subnet.as_str(), allocation.gateway.as_str(), allocation.vni, allocation.mtu),
        ("198.18.1.0/24", "198.18.1.1", 4097, 1450)
    );
    // Encrypted: ESP's 34 bytes come off the default MTU; an MTU given is kept.
    let mut secure = network_spec("secure", "198.18.3.0/24");
    secure.options.insert("encrypted".into(), String::new());
    let secure = create_network(&control, secure).await.expect("encrypted");
    assert_eq!(secure.allocation.map(|a| a.mtu), Some(1416));
    let mut sized = network_spec("sized", "198.18.4.0/24");
    sized.options.extend([("encrypted".to_owned(), "true".to_owned()), ("mtu".to_owned(), "1380".to_owned())]);
    assert_eq!(create_network(&control, sized).await.expect("sized").allocation.map(|a| a.mtu), Some(1380));
    for name in ["secure", "sized"] {
        let request = Request::new(v1::RemoveNetworkRequest { network: name.into() });
        Control::remove_network(&control, request).await.expect("remove");
    }

    let mut other_ingress = ingress.clone();
    other_ingress.annotations = Some(v1::Annotations { name: "ingress2".into(), ..Default::default() });
    other_ingress.ipam = None;
    let mut bad_gateway = network_spec("x", "198.18.8.0/24");
    bad_gateway.ipam.as_mut().expect("ipam").gateway = "198.18.9.1".into();
    let mut bad_driver = network_spec("x", "");
    bad_driver.driver = "bridge".into();
    let mut encrypted = network_spec("x", "");
    encrypted.options.insert("encrypted".into(), "no".into());
    let mut unknown = network_spec("x", "");
    unknown.options.insert("com.docker.network.driver.overlay.vxlanid_list".into(), "4097".into());
    let cases: Vec<(v1::NetworkSpec, Code, &str)> = vec![
        (
            network_spec("x", "198.18.1.128/25"),
            Code::InvalidArgument,
            "subnet 198.18.1.128/25 overlaps network front's subnet 198.18.1.0/24; choose another --subnet",
        ),
        (
            bad_gateway,
            Code::InvalidArgument,
            "network x: --gateway 198.18.9.1 is not a host address of the subnet 198.18.8.0/24",
        ),
        (
            bad_driver,
            Code::InvalidArgument,
            "network x: driver \"bridge\" is not supported; Shoal's networks are overlay networks (-d overlay)",
        ),
        (
            encrypted,
            Code::InvalidArgument,
            "network x: --opt encrypted=no is not understood; give --opt encrypted (or encrypted=true), or leave it out for a plain network",
        ),
        (
            unknown,
            Code::InvalidArgument,
            "network x: --opt com.docker.network.driver.overlay.vxlanid_list is not supported; supported: mtu, encrypted",
        ),
        (network_spec("front", "198.18.2.0/24"), Code::AlreadyExists, ""),
    ];
    for (spec, code, message) in cases {
        let (got_code, got) = refusal(create_network(&control, spec).await);
        assert_eq!(got_code, code, "{got}");
        if !message.is_empty() {
            assert_eq!(got, message);
        }
    }
    let (code, message) = refusal(create_network(&control, other_ingress).await);
    assert_eq!(code, Code::AlreadyExists);
    assert!(message.starts_with("an ingress network exists already: ingress ("), "{message}");

    // Services name networks by name; bad references and combinations are refused.
    let with = |name: &str, networks: &[&str], ports: &[u32], dnsrr: bool| {
        let mut s = spec(name, 1);
        s.networks =
            networks.iter().map(|n| v1::NetworkAttachmentConfig { target: (*n).into(), aliases: vec![] }).collect();
        s.endpoint = Some(v1::EndpointSpec {
            mode: if dnsrr { v1::endpoint_spec::Mode::Dnsrr } else { v1::endpoint_spec::Mode::Vip } as i32,
            ports: ports
                .iter()
                .map(|p| v1::PortConfig { published_port: *p, target_port: 80, ..Default::default() })
                .collect(),
        });
        s
    };
    let create_with = |s: v1::ServiceSpec| {
        let control = control.clone();
        async move { control.create_service(Request::new(v1::CreateServiceRequest { spec: Some(s) })).await }
    };
    let cases: Vec<(v1::ServiceSpec, Code, &str)> = vec![
        (
            with("a", &["nope"], &[], false),
            Code::NotFound,
            "service a: network nope not found; create it with shoal network create nope",
        ),
        (
            with("a", &["ingress"], &[], false),
            Code::InvalidArgument,
            "service a: the ingress network ingress cannot be attached with --network; publish a port (--publish) to use the routing mesh",
        ),
        (
            with("a", &["front", "front"], &[], false),
            Code::InvalidArgument,
            "service a: network front is attached twice",
        ),
        (
            with("a", &[], &[8080], true),
            Code::InvalidArgument,
            "service a: endpoint mode dnsrr has no VIP, so its ports cannot be published through the routing mesh; publish them with mode=host, or use --endpoint-mode vip",
        ),
    ];
    for (s, code, message) in cases {
        assert_eq!(refusal(create_with(s).await), (code, message.to_owned()));
    }
    let web =
        create_with(with("web", &["front"], &[8080], false)).await.expect("web").into_inner().service.expect("svc");
    assert_eq!(web.spec.as_ref().map(|s| s.networks[0].target.clone()), Some(front.id.clone()), "stored by ID");
    // Once the leader has given web its port, another service asking for it is told who has it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got =
            control.get_service(Request::new(v1::GetServiceRequest { service: "web".into() })).await.expect("get");
        if got.into_inner().service.and_then(|s| s.endpoint).is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "web allocated");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        refusal(create_with(with("api", &[], &[8080], false)).await),
        (
            Code::AlreadyExists,
            "port 8080/tcp is already published by service web; choose another --publish port".to_owned()
        )
    );

    // A network in use stays; prune takes only unused ones, never ingress.
    create_network(&control, network_spec("unused", "")).await.expect("unused");
    let rm =
        |name: &str| Control::remove_network(&control, Request::new(v1::RemoveNetworkRequest { network: name.into() }));
    assert_eq!(
        refusal(rm("front").await),
        (
            Code::FailedPrecondition,
            "network front is in use: service web uses it; remove the service or its --network first".to_owned()
        )
    );
    assert_eq!(
        refusal(rm("ingress").await),
        (Code::FailedPrecondition, "network ingress is in use: service web publishes ports through it; remove the service or its --network first".to_owned())
    );
    let pruned = Control::prune_networks(&control, Request::new(v1::PruneNetworksRequest {})).await.expect("prune");
    assert_eq!(pruned.into_inner().removed, ["unused"]);
    control.remove_service(Request::new(v1::RemoveServiceRequest { service: "web".into() })).await.expect("rm web");
    rm("front").await.expect("front unused now");
    passes.abort();
}

#[tokio::test]
async fn the_ingress_network_is_replaced_as_in_swarm() {
    let (objects, _dir) = store("control-ingress").await;
    let control = ControlService::new(objects.clone(), RemovedNodes::new(), ca());
    let passes = leader_passes(&objects);
    let mut ingress = network_spec("ingress", "198.18.0.0/24");
    ingress.ingress = true;
    create_network(&control, ingress).await.expect("ingress");
    let rm =
        |name: &str| Control::remove_network(&control, Request::new(v1::RemoveNetworkRequest { network: name.into() }));
    // Unused: it may go; prune never takes it.
    let pruned = Control::prune_networks(&control, Request::new(v1::PruneNetworksRequest {})).await.expect("prune");
    assert!(pruned.into_inner().removed.is_empty());
    rm("ingress").await.expect("an unused ingress network can be removed");
    // Without one, publishing is refused with what to do.
    let mut web = spec("web", 1);
    web.endpoint = Some(v1::EndpointSpec {
        ports: vec![v1::PortConfig { published_port: 8080, target_port: 80, ..Default::default() }],
        ..Default::default()
    });
    let refused = control.create_service(Request::new(v1::CreateServiceRequest { spec: Some(web.clone()) })).await;
    assert_eq!(
        refusal(refused),
        (
            Code::FailedPrecondition,
            "the service publishes ports through the routing mesh but no ingress network exists; create one with shoal network create --ingress".to_owned()
        )
    );
    // A user-made ingress network takes its place, with its own subnet.
    let mut mine = network_spec("mesh", "198.18.9.0/24");
    mine.ingress = true;
    let made = create_network(&control, mine).await.expect("a new ingress network");
    assert_eq!(made.allocation.map(|a| a.subnet), Some("198.18.9.0/24".to_owned()));
    control.create_service(Request::new(v1::CreateServiceRequest { spec: Some(web) })).await.expect("web publishes");
    passes.abort();
}

#[tokio::test]
async fn cluster_settings_are_checked_and_take_effect() {
    let (objects, _dir) = store("control-cluster-settings").await;
    let day = Duration::from_secs(86_400);
    let stored = v1::Cluster {
        id: "cluster-1".into(),
        spec: Some(v1::ClusterSpec {
            task_history_retention_limit: 5,
            heartbeat_period: Some(shoal_api::to_duration(Duration::from_secs(1))),
            node_cert_expiry: Some(shoal_api::to_duration(day * 90)),
            ..Default::default()
        }),
        ..Default::default()
    };
    objects.create(stored).await.expect("cluster");
    let ca = ca();
    let control = ControlService::new(objects.clone(), RemovedNodes::new(), ca.clone());
    let read =
        || async { control.get_cluster(Request::new(v1::GetClusterRequest {})).await.expect("get").into_inner() };
    let update = |version: u64, spec: v1::ClusterSpec| {
        control.update_cluster(Request::new(v1::UpdateClusterRequest {
            version,
            spec: Some(spec),
            ..Default::default()
        }))
    };

    // --- refused by name, nothing changed
    let cluster = read().await.cluster.expect("cluster");
    let mut short = cluster.spec.clone().expect("spec");
    short.node_cert_expiry = Some(shoal_api::to_duration(Duration::from_secs(600)));
    let version = cluster.meta.as_ref().map_or(0, |m| m.version);
    assert_eq!(
        refusal(update(version, short).await),
        (
            Code::InvalidArgument,
            "--cert-expiry 10m is out of range: certificates must last between 1h and 87600h".to_owned()
        )
    );
    assert_eq!(read().await.cluster.and_then(|c| c.meta).map(|m| m.version), Some(version));

    // --- 2 h certificates, a 2 s heartbeat, one task of history
    let mut spec = cluster.spec.clone().expect("spec");
    spec.node_cert_expiry = Some(shoal_api::to_duration(Duration::from_secs(7200)));
    spec.heartbeat_period = Some(shoal_api::to_duration(Duration::from_secs(2)));
    spec.task_history_retention_limit = 1;
    let updated = update(version, spec).await.expect("update").into_inner().cluster.expect("cluster");
    assert_eq!(
        shoal_api::from_duration(updated.longest_node_cert_expiry.as_ref()),
        Some(day * 90),
        "certificates issued for 90 days may still be out there"
    );

    // The CA issues for the new expiry at once.
    let issuer = crate::CaService::new(objects.clone(), ca, "cluster-1".into(), day * 90);
    let key = shoal_ca_pki::NodeKey::generate().expect("key");
    let identity = shoal_ca_pki::NodeIdentity {
        node_id: "node1".into(),
        role: shoal_ca_pki::Role::Worker,
        cluster_id: "cluster-1".into(),
    };
    let chain = issuer.issue(key.csr_pem().expect("csr").as_bytes(), &identity).await.expect("issued");
    let credentials = shoal_ca_pki::NodeCredentials::new(&chain, key).expect("credentials");
    let lasts = credentials.not_after() - time::OffsetDateTime::now_utc();
    assert!(lasts <= time::Duration::hours(2) && lasts > time::Duration::minutes(100), "lasts {lasts}");

    // The leader's next pass asks nodes for the new heartbeat period.
    let dispatcher = crate::Dispatcher::new(objects.clone(), Duration::from_secs(1));
    let leader = crate::Leader::new(objects.clone(), dispatcher.clone(), crate::DEFAULT_TASK_HISTORY);
    leader.pass(std::time::SystemTime::now()).await.expect("pass");
    assert_eq!(dispatcher.period(), Duration::from_secs(2));
}

//! Root CA rotation on the control plane in one process (`shoal-local-cluster`: three managers
//! and two workers, five nodes, a running service): every node moves to a certificate from the
//! new root while its session and its tasks carry on, the old root is then dropped everywhere,
//! and the join tokens pin the new root (a node holding an old token is refused, one with the
//! new token joins).

#![allow(clippy::print_stderr)]

mod inproc;

use std::sync::Arc;

use shoal_agent::Agent;
use shoal_api::v1;
use shoal_local_cluster::{LocalCluster, LocalOptions, eventually};
use shoal_runtime::{SimBehavior, Simulated};

const IMAGE: &str = "shoal-test/sleeper:latest";

fn secret_of(token: &str) -> &str {
    token.rsplit('-').next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_ca_rotates_under_a_running_service_and_nothing_restarts() {
    let images = vec![(IMAGE.to_owned(), SimBehavior::RunUntilStopped)];
    let options = LocalOptions { managers: 3, workers: 0, images, ..Default::default() };
    let cluster = LocalCluster::start(options).await.expect("cluster");
    // The workers' agents are the test's own, so it can count their sessions.
    let mut agents = Vec::new();
    for name in ["w1", "w2"] {
        let config = cluster.join_worker_config(name).await.expect("join");
        let sim = Simulated::new();
        sim.add_image(IMAGE, SimBehavior::RunUntilStopped);
        let agent = Arc::new(Agent::new(config, Arc::new(sim)));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = agent.clone();
        let task = tokio::spawn(async move {
            let _ = running
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        });
        agents.push((agent, stop, task));
    }
    let mut control = cluster.control().await.expect("admin client");
    let created = control
        .create_service(v1::CreateServiceRequest { spec: Some(inproc::spec("web", IMAGE, 4)) })
        .await
        .expect("service");
    let id = created.into_inner().service.expect("service").id;
    let running_ids = |tasks: &[v1::Task]| {
        let mut ids: Vec<String> = inproc::running(tasks).iter().map(|t| t.id.clone()).collect();
        ids.sort();
        ids
    };
    let before = eventually("4 tasks running", 30, async || {
        let ids = running_ids(&inproc::tasks(&mut control, &id).await);
        (ids.len() == 4).then_some(ids)
    })
    .await
    .expect("running");
    let sessions: Vec<u64> = agents.iter().map(|(agent, ..)| agent.sessions_started()).collect();
    let get_cluster = async |control: &mut v1::control_client::ControlClient<tonic::transport::Channel>| {
        control.get_cluster(v1::GetClusterRequest {}).await.expect("cluster").into_inner().cluster.expect("cluster")
    };
    let old = get_cluster(&mut control).await;
    let old_tokens = old.join_tokens.clone().expect("tokens");
    // Every node says what it holds: the managers from their own pass, the workers with their
    // first heartbeat.
    let status = eventually("every node reports a certificate from the first root", 30, async || {
        let status = control.get_root_ca_status(v1::GetRootCaStatusRequest {}).await.ok()?.into_inner();
        (status.nodes == 5 && status.certificates_rotated == 5 && status.trust_rotated == 5).then_some(status)
    })
    .await
    .expect("reported");
    assert!(!status.rotating);

    eprintln!("--- rotate: a new root, cross-signed by the old");
    let started = control.rotate_root_ca(v1::RotateRootCaRequest::default()).await.expect("rotate").into_inner();
    assert_ne!(started.desired_root, status.signing_root_fingerprint);
    let again = control.rotate_root_ca(v1::RotateRootCaRequest::default()).await.expect_err("one at a time");
    assert!(again.message().contains("already under way"), "{}", again.message());
    let given = v1::RotateRootCaRequest { ca_cert: b"not a certificate".to_vec(), ca_key: Vec::new() };
    let refused = control.rotate_root_ca(given).await.expect_err("half a root");
    assert!(refused.message().contains("--ca-cert") && refused.message().contains("--ca-key"), "{}", refused.message());

    let done = eventually("every node trusts the new root alone", 120, async || {
        let status = control.get_root_ca_status(v1::GetRootCaStatusRequest {}).await.ok()?.into_inner();
        eprintln!(
            "    rotating {} certificates {}/{} trust {}/{} waiting for {:?}",
            status.rotating,
            status.certificates_rotated,
            status.nodes,
            status.trust_rotated,
            status.nodes,
            status.pending_nodes
        );
        (!status.rotating && status.trust_rotated == 5).then_some(status)
    })
    .await
    .expect("converged");
    assert_eq!(done.signing_root_fingerprint, started.desired_root);
    assert_eq!(done.certificates_rotated, 5);
    assert_eq!(done.trust_bundle, done.signing_root, "the old root is no longer trusted");

    eprintln!("--- nothing restarted: the same tasks run, no agent opened another session");
    assert_eq!(running_ids(&inproc::tasks(&mut control, &id).await), before);
    let after: Vec<u64> = agents.iter().map(|(agent, ..)| agent.sessions_started()).collect();
    assert_eq!(after, sessions, "sessions started before and after");

    eprintln!("--- the join tokens pin the new root; their secrets stay");
    let new = get_cluster(&mut control).await;
    let new_tokens = new.join_tokens.clone().expect("tokens");
    assert_ne!(new_tokens.worker, old_tokens.worker);
    assert_eq!(secret_of(&new_tokens.worker), secret_of(&old_tokens.worker));
    assert_eq!(secret_of(&new_tokens.manager), secret_of(&old_tokens.manager));
    assert_eq!(new.root_ca_cert, done.trust_bundle);
    assert!(new_tokens.worker.contains(&new.root_ca_digest));
    let remote = cluster.manager_addrs()[0].to_string();
    let stale = cluster.dir().join("stale-token");
    let err = shoal_agent::join(&remote, &old_tokens.worker, &stale).await.map(drop).expect_err("old token");
    assert!(err.to_string().contains("does not match the join token"), "{err}");
    let late = cluster.dir().join("late-worker");
    shoal_agent::join(&remote, &new_tokens.worker, &late).await.expect("the new token joins");

    for (_, stop, task) in agents {
        let _ = stop.send(());
        let _ = task.await;
    }
    cluster.shutdown().await;
}

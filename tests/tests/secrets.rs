//! Secrets on the control plane in one process (`shoal-local-cluster`: a manager, two workers on
//! the simulated runtime): tasks that use a secret start only where the node was sent it (an
//! agent rejects a task whose payload it lacks, naming it), and `UpdateSecret` with new data
//! rolls the service to the new version through its update config, one task at a time, with
//! the old version kept while a task or the previous spec still names it.

#![allow(clippy::print_stderr)]

mod inproc;

use shoal_api::v1::{self, TaskState, update_status::UpdateState};
use shoal_local_cluster::{LocalCluster, LocalOptions, eventually};
use shoal_runtime::SimBehavior;

const IMAGE: &str = "shoal-test/sleeper:latest";

fn secret_version(task: &v1::Task) -> u64 {
    task.spec.as_ref().and_then(|s| s.container.as_ref()).map_or(0, |c| c.secrets[0].data_version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reaches_its_tasks_and_a_new_version_rolls_them() {
    let images = vec![(IMAGE.to_owned(), SimBehavior::RunUntilStopped)];
    let options = LocalOptions { managers: 1, workers: 2, images, ..Default::default() };
    let cluster = LocalCluster::start(options).await.expect("cluster");
    let mut control = cluster.control().await.expect("admin client");

    let spec = v1::SecretSpec {
        annotations: Some(v1::Annotations { name: "db-password".into(), ..Default::default() }),
        data: b"first".to_vec(),
    };
    control.create_secret(v1::CreateSecretRequest { spec: Some(spec) }).await.expect("secret");
    let mut service = inproc::spec("api", IMAGE, 4);
    if let Some(container) = service.task.as_mut().and_then(|t| t.container.as_mut()) {
        container.secrets = vec![v1::SecretReference { secret_name: "db-password".into(), ..Default::default() }];
    }
    service.update = Some(v1::UpdateConfig {
        parallelism: 1,
        monitor: Some(shoal_api::to_duration(std::time::Duration::from_millis(200))),
        ..Default::default()
    });
    let created = control.create_service(v1::CreateServiceRequest { spec: Some(service) }).await.expect("service");
    let id = created.into_inner().service.expect("service").id;

    eprintln!("--- 4 tasks run: each node got the secret before its tasks");
    eventually("4 tasks running", 30, async || {
        let tasks = inproc::tasks(&mut control, &id).await;
        let rejected: Vec<&str> = tasks
            .iter()
            .filter_map(|t| t.status.as_ref())
            .filter(|s| !s.err.is_empty())
            .map(|s| s.err.as_str())
            .collect();
        assert!(rejected.is_empty(), "tasks failed: {rejected:?}");
        (inproc::running(&tasks).len() == 4).then_some(())
    })
    .await
    .expect("running");

    eprintln!("--- a new version: the service rolls to it");
    let update = v1::UpdateSecretRequest {
        secret: "db-password".into(),
        version: 0,
        spec: Some(v1::SecretSpec { annotations: None, data: b"second".to_vec() }),
    };
    let answer = control.update_secret(update).await.expect("rotate").into_inner();
    assert_eq!(answer.services, ["api"]);
    assert_eq!(answer.secret.map(|s| s.data_version), Some(2));
    eventually("the update completed with 4 tasks on version 2", 60, async || {
        let service = control.get_service(v1::GetServiceRequest { service: id.clone() }).await.ok()?.into_inner();
        let state = service.service?.update_status?.state;
        let tasks = inproc::tasks(&mut control, &id).await;
        let running = inproc::running(&tasks);
        let on_two = running.iter().filter(|t| secret_version(t) == 2).count();
        (state == UpdateState::Completed as i32 && running.len() == 4 && on_two == 4).then_some(())
    })
    .await
    .expect("rolled");
    let tasks = inproc::tasks(&mut control, &id).await;
    let shut: Vec<&v1::Task> = tasks.iter().filter(|t| t.desired_state >= TaskState::Shutdown as i32).collect();
    assert!(shut.iter().all(|t| secret_version(t) == 1), "the tasks replaced ran version 1");
    assert_eq!(shut.len(), 4, "each of the 4 tasks was replaced once");
    assert!(tasks.iter().all(|t| t.status.as_ref().is_none_or(|s| s.err.is_empty())), "no task failed: {tasks:?}");

    eprintln!("--- the previous spec still names version 1: a rollback can use it");
    let secret = control.get_secret(v1::GetSecretRequest { secret: "db-password".into() }).await.expect("get");
    let secret = secret.into_inner().secret.expect("secret");
    assert!(secret.previous.is_empty() && secret.spec.is_some_and(|s| s.data.is_empty()), "nothing shown");
    let objects = cluster.objects(0).expect("manager 0");
    let stored: v1::Secret = objects.get(&secret.id).await.expect("stored");
    assert_eq!(stored.previous.iter().map(|p| p.data_version).collect::<Vec<_>>(), [1]);
    cluster.shutdown().await;
}

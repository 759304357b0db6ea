//! The control plane in one process (`shoal-local-cluster`): three managers on loopback, three
//! workers on the simulated runtime, and the scenarios — node list, spread, a crashed
//! container replaced with its exit code in the history, a job run to completion, a lost
//! worker's tasks moved, the leader lost, a missing image rejected, no quorum said so.

// Tests narrate their steps on stderr, which nextest shows when one fails.
#![allow(clippy::print_stderr)]

use std::time::{Duration, Instant};

use shoal_api::v1::{self, TaskState};
use shoal_local_cluster::{LocalCluster, LocalOptions, eventually};
use shoal_runtime::SimBehavior;

mod inproc;

use inproc::{running, spec, tasks};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_run_tasks_and_the_cluster_heals() {
    eprintln!("--- three managers and three workers; the workers become Ready");
    let mut images = LocalOptions::default().images;
    images.push(("shoal-test/batch".to_owned(), SimBehavior::ExitAfter { code: 0, after: Duration::from_millis(200) }));
    let options = LocalOptions { managers: 3, workers: 3, images, ..Default::default() };
    let mut cluster = LocalCluster::start(options).await.expect("cluster");
    let mut control = cluster.control().await.expect("admin client");
    let nodes = control.list_nodes(v1::ListNodesRequest::default()).await.expect("node ls").into_inner().nodes;
    let managers: Vec<&v1::Node> = nodes.iter().filter(|n| n.role == v1::NodeRole::Manager as i32).collect();
    assert_eq!((nodes.len(), managers.len()), (6, 3));
    let leaders = managers.iter().filter(|n| n.manager_status.as_ref().is_some_and(|m| m.leader)).count();
    assert_eq!(leaders, 1, "one leader among the managers");

    eprintln!("--- 6 replicas run, 2 per worker");
    let service = control
        .create_service(v1::CreateServiceRequest { spec: Some(spec("sleep", "shoal-test/sleeper", 6)) })
        .await
        .expect("create")
        .into_inner()
        .service
        .expect("service");
    let placed = eventually("6 running tasks", 15, async || {
        let all = tasks(&mut control, &service.id).await;
        (running(&all).len() == 6).then_some(all)
    })
    .await
    .expect("converged");
    for w in cluster.workers() {
        let on = running(&placed).iter().filter(|t| t.node_id == w.node_id).count();
        assert_eq!(on, 2, "worker {} runs 2", w.node_id);
        assert_eq!(w.sim.container_count(), 2);
    }

    eprintln!("--- a container is killed (exit 137): a new task replaces it, the history keeps the exit code");
    let victim_node = cluster.workers()[0].node_id.clone();
    let victim = running(&placed).into_iter().find(|t| t.node_id == victim_node).expect("a task on w1").clone();
    cluster.workers()[0].sim.kill_externally(&victim.id, 137, false).expect("kill");
    let history = eventually("the killed task replaced", 15, async || {
        let all = tasks(&mut control, &service.id).await;
        let failed = all
            .iter()
            .find(|t| t.id == victim.id && t.status.as_ref().is_some_and(|s| s.state == TaskState::Failed as i32))?;
        (running(&all).len() == 6).then(|| failed.clone())
    })
    .await
    .expect("replaced");
    assert_eq!(history.status.map(|s| s.err), Some("task: non-zero exit (137)".to_owned()));
    assert_eq!(history.desired_state, TaskState::Shutdown as i32);

    eprintln!("--- a replicated job: 4 completions, 2 at a time");
    // Every task change, in the order the store applied them: the concurrency bound is checked
    // on that sequence, not on samples.
    let mut watch = cluster
        .objects(0)
        .expect("manager 0")
        .store()
        .watch(<v1::Task as shoal_manager::Object>::PREFIX, 0)
        .expect("watch");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let changes = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = watch.next().await {
                if let Ok(task) = <v1::Task as prost::Message>::decode(event.kv.value.as_slice()) {
                    seen.lock().expect("changes").push(task);
                }
            }
        })
    };
    let mut job = spec("batch", "shoal-test/batch", 0);
    job.mode =
        Some(v1::service_spec::Mode::ReplicatedJob(v1::ReplicatedJob { max_concurrent: 2, total_completions: 4 }));
    let job = control
        .create_service(v1::CreateServiceRequest { spec: Some(job) })
        .await
        .expect("create job")
        .into_inner()
        .service
        .expect("job");
    let done = eventually("4 completed job tasks", 20, async || {
        let all = tasks(&mut control, &job.id).await;
        let complete = all.iter().filter(|t| t.status.as_ref().is_some_and(|s| s.state == TaskState::Complete as i32));
        (complete.count() == 4).then_some(all)
    })
    .await
    .expect("job complete");
    assert_eq!(done.len(), 4, "no task beyond the completions asked for");
    changes.abort();
    let seen = seen.lock().expect("changes").clone();
    // A task counts from its creation until it ends or is told to stop.
    let mut live = std::collections::BTreeSet::new();
    let mut most = 0;
    for task in seen.iter().filter(|t| t.service_id == job.id) {
        let state = task.status.as_ref().map_or(0, |s| s.state);
        let ended = [TaskState::Complete, TaskState::Failed, TaskState::Shutdown, TaskState::Rejected]
            .iter()
            .any(|s| *s as i32 == state)
            || task.desired_state != TaskState::Running as i32 && task.desired_state != TaskState::Complete as i32;
        if ended {
            live.remove(&task.id);
        } else {
            live.insert(task.id.clone());
        }
        most = most.max(live.len());
    }
    assert_eq!(most, 2, "at most 2 job tasks at a time, and the job used both");

    eprintln!("--- a worker stops heartbeating: Down within three periods, its tasks run elsewhere");
    let lost = cluster.workers()[2].node_id.clone();
    let lost_at = Instant::now();
    cluster.stop_worker(2);
    eventually("the lost worker Down", 10, async || {
        let node = control.get_node(v1::GetNodeRequest { node: lost.clone() }).await.ok()?.into_inner().node?;
        (node.status?.state == v1::node_status::State::Down as i32).then_some(())
    })
    .await
    .expect("down");
    eprintln!("    down after {:?}", lost_at.elapsed());
    eventually("6 running on the other two", 15, async || {
        let all = tasks(&mut control, &service.id).await;
        let live = running(&all);
        (live.len() == 6 && live.iter().all(|t| t.node_id != lost)).then_some(())
    })
    .await
    .expect("moved");
    // A figure, not a bound: how fast is the benchmarks' business (`cargo xtask bench converge`).
    eprintln!("    tasks running elsewhere {:?} after the agent stopped", lost_at.elapsed());

    eprintln!("--- the leading manager goes away: another leads, the API keeps working on the survivors");
    let leader_id = managers.iter().find(|n| n.manager_status.as_ref().is_some_and(|m| m.leader)).map(|n| n.id.clone());
    let index = cluster.manager_ids().iter().position(|id| *id == leader_id).expect("the leader is one of ours");
    cluster.kill_manager(index).await;
    let mut control = cluster.control().await.expect("a surviving manager");
    eventually("a new leader that serves writes", 20, async || {
        let request = v1::CreateServiceRequest { spec: Some(spec("after", "shoal-test/sleeper", 1)) };
        control.create_service(request).await.ok().map(drop)
    })
    .await
    .expect("new leader");

    eprintln!("--- the agents follow the new leader: a container killed now is replaced");
    let all = tasks(&mut control, &service.id).await;
    let victim =
        running(&all).into_iter().find(|t| t.node_id == cluster.workers()[0].node_id).expect("a task on w1").clone();
    cluster.workers()[0].sim.kill_externally(&victim.id, 137, false).expect("kill");
    eventually("the task killed after the failover replaced", 20, async || {
        let all = tasks(&mut control, &service.id).await;
        let failed = all
            .iter()
            .any(|t| t.id == victim.id && t.status.as_ref().is_some_and(|s| s.state == TaskState::Failed as i32));
        (failed && running(&all).len() == 6).then_some(())
    })
    .await
    .expect("replaced under the new leader");

    eprintln!("--- an image that does not exist: the task is rejected with `image not found`");
    let missing = control
        .create_service(v1::CreateServiceRequest { spec: Some(spec("ghost", "shoal-test/nonexistent:1", 1)) })
        .await
        .expect("create")
        .into_inner()
        .service
        .expect("service");
    let rejected = eventually("a rejected task", 15, async || {
        tasks(&mut control, &missing.id)
            .await
            .into_iter()
            .find(|t| t.status.as_ref().is_some_and(|s| s.state == TaskState::Rejected as i32))
    })
    .await
    .expect("rejected");
    assert_eq!(rejected.status.map(|s| s.err), Some("image not found: docker.io/shoal-test/nonexistent:1".to_owned()));

    eprintln!("--- a second manager goes: the last one says there is no quorum");
    let alive: Vec<usize> =
        cluster.manager_ids().iter().enumerate().filter(|(_, id)| id.is_some()).map(|(i, _)| i).collect();
    assert_eq!(alive.len(), 2);
    cluster.kill_manager(alive[0]).await;
    let mut last = cluster.control_at(cluster.manager_addrs()[alive[1]]).await.expect("the last manager");
    let refused =
        eventually("a no-quorum answer", 20, async || last.list_nodes(v1::ListNodesRequest::default()).await.err())
            .await
            .expect("no quorum");
    assert!(refused.message().starts_with("no quorum: "), "{}", refused.message());
    cluster.shutdown().await;
}

/// Every certificate file of the cluster: the managers' node certificates, the admin bundle and
/// each worker's certificate.
fn certificate_files(cluster: &LocalCluster) -> Vec<std::path::PathBuf> {
    let mut files = vec![cluster.dir().join("m0/certs/node.crt"), cluster.admin_bundle().join("node.crt")];
    files.extend(cluster.workers().iter().map(|w| cluster.dir().join("workers").join(&w.name).join("node.crt")));
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_renewed_again_and_again_while_tasks_run_and_the_cli_keeps_working() {
    eprintln!("--- certificates valid for 4 s: each is renewed 0-2.4 s after it is issued");
    let options = LocalOptions { workers: 2, cert_validity: Duration::from_secs(4), ..Default::default() };
    let cluster = LocalCluster::start(options).await.expect("cluster");
    let mut control = cluster.control().await.expect("admin client");
    let service = control
        .create_service(v1::CreateServiceRequest { spec: Some(spec("sleep", "shoal-test/sleeper", 4)) })
        .await
        .expect("create")
        .into_inner()
        .service
        .expect("service");
    let placed = eventually("4 running tasks", 15, async || {
        let all = tasks(&mut control, &service.id).await;
        (running(&all).len() == 4).then_some(all)
    })
    .await
    .expect("converged");
    let task_ids: std::collections::BTreeSet<String> = placed.iter().map(|t| t.id.clone()).collect();

    eprintln!("--- 16 s (four lifetimes): a new admin client every half second, certificates watched");
    let files = certificate_files(&cluster);
    let mut seen: Vec<std::collections::BTreeSet<String>> = vec![Default::default(); files.len()];
    let until = Instant::now() + Duration::from_secs(16);
    while Instant::now() < until {
        for (file, versions) in files.iter().zip(&mut seen) {
            versions.insert(std::fs::read_to_string(file).unwrap_or_default());
        }
        // A fresh connection each time: each handshake needs a certificate valid now.
        let mut fresh = cluster.control().await.expect("the CLI connects with the renewed bundle");
        let nodes = fresh.list_nodes(v1::ListNodesRequest::default()).await.expect("node ls").into_inner().nodes;
        let ready = nodes
            .iter()
            .filter(|n| n.status.as_ref().is_some_and(|s| s.state == v1::node_status::State::Ready as i32))
            .count();
        assert_eq!(ready, 2, "both workers stay Ready through the renewals");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (file, versions) in files.iter().zip(&seen) {
        eprintln!("{}: {} certificates", file.display(), versions.len());
        assert!(versions.len() >= 4, "{} was renewed at least 3 times: {} versions", file.display(), versions.len());
    }

    eprintln!("--- the same tasks still run: nothing was restarted or moved");
    let mut control = cluster.control().await.expect("admin client");
    let now: std::collections::BTreeSet<String> =
        running(&tasks(&mut control, &service.id).await).iter().map(|t| t.id.clone()).collect();
    assert_eq!(now, task_ids);
    cluster.shutdown().await;
}

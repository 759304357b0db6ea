//! `shoal service logs` on the in-process control plane (`shoal-local-cluster`): three managers,
//! two workers on the simulated runtime whose containers print as they start. The logs are read
//! through a manager that is not the leader (it relays to the leader's broker); a read ends;
//! following a service keeps going while a task is killed and replaced and while a worker goes
//! away (Swarm's hangs in both: moby#33183), and ends when the service is removed; an unknown
//! service is one clear error.

// Tests narrate their steps on stderr, which nextest shows when one fails.
#![allow(clippy::print_stderr)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_api::v1::{self, logs_client::LogsClient};
use shoal_local_cluster::{LocalCluster, LocalOptions, eventually};
use shoal_runtime::SimBehavior;

mod inproc;

use inproc::{running, spec, tasks};

fn request(service: &str, follow: bool) -> v1::SubscribeLogsRequest {
    v1::SubscribeLogsRequest {
        selector: Some(v1::LogSelector { service_ids: vec![service.to_owned()], task_ids: Vec::new() }),
        options: Some(v1::LogSubscriptionOptions { follow, ..Default::default() }),
    }
}

/// A line as `task text`.
fn line(message: &v1::LogMessage) -> String {
    let task = message.context.as_ref().map(|c| c.task_id.as_str()).unwrap_or_default();
    format!("{task} {}", String::from_utf8_lossy(&message.data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_a_service_survives_a_replaced_task_and_a_lost_node() {
    eprintln!("--- three managers, two workers; web's containers print two lines and keep running");
    let mut images = LocalOptions::default().images;
    let server = SimBehavior::PrintAndRun { stdout: vec!["ready".into()], stderr: vec!["warming up".into()] };
    images.push(("shoal-test/server".to_owned(), server));
    let options = LocalOptions { managers: 3, workers: 2, images, ..Default::default() };
    let mut cluster = LocalCluster::start(options).await.expect("cluster");
    let mut control = cluster.control().await.expect("admin client");
    let service = control
        .create_service(v1::CreateServiceRequest { spec: Some(spec("web", "shoal-test/server", 2)) })
        .await
        .expect("create")
        .into_inner()
        .service
        .expect("service");
    let placed = eventually("2 running tasks", 15, async || {
        let all = tasks(&mut control, &service.id).await;
        (running(&all).len() == 2).then_some(all)
    })
    .await
    .expect("converged");
    let spread: BTreeSet<&str> = placed.iter().map(|t| t.node_id.as_str()).collect();
    assert_eq!(spread.len(), 2, "one task per worker");

    eprintln!("--- the CLI asks a manager that is not the leader: it relays to the leader");
    let nodes = control.list_nodes(v1::ListNodesRequest::default()).await.expect("node ls").into_inner().nodes;
    let follower = nodes
        .iter()
        .find(|n| n.manager_status.as_ref().is_some_and(|m| !m.leader))
        .map(|n| n.id.clone())
        .expect("a follower");
    let index = cluster.manager_ids().iter().position(|id| id.as_deref() == Some(&follower)).expect("ours");
    let addr = cluster.manager_addrs()[index].to_string();
    let channel = shoal_manager::connect_with_bundle(&addr, cluster.admin_bundle()).await.expect("connect");
    let mut logs = LogsClient::new(channel);

    eprintln!("--- a read (no follow) gets both tasks' lines and ends");
    let mut read = logs.subscribe_logs(request("web", false)).await.expect("subscribe").into_inner();
    let mut seen = BTreeSet::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = read.message().await.expect("a message") {
            assert!(message.warnings.is_empty(), "{:?}", message.warnings);
            for m in &message.messages {
                let context = m.context.clone().expect("context");
                assert_eq!(context.service_id, service.id);
                assert!(placed.iter().any(|t| t.id == context.task_id && t.node_id == context.node_id));
                seen.insert(line(m));
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the read ends");
    let expected: BTreeSet<String> =
        placed.iter().flat_map(|t| [format!("{} ready", t.id), format!("{} warming up", t.id)]).collect();
    assert_eq!(seen, expected);

    eprintln!("--- following web: both tasks' lines arrive");
    let followed = Arc::new(Mutex::new(Vec::<String>::new()));
    let warnings = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut stream = logs.subscribe_logs(request("web", true)).await.expect("follow").into_inner();
    let following = {
        let (followed, warnings) = (followed.clone(), warnings.clone());
        tokio::spawn(async move {
            while let Some(message) = stream.message().await? {
                followed.lock().expect("lines").extend(message.messages.iter().map(line));
                warnings.lock().expect("warnings").extend(message.warnings);
            }
            Ok::<(), tonic::Status>(())
        })
    };
    let has = |text: String| {
        let followed = followed.clone();
        async move || followed.lock().expect("lines").contains(&text).then_some(())
    };
    for task in &placed {
        eventually("the task's line followed", 10, has(format!("{} ready", task.id))).await.expect("followed");
    }

    eprintln!("--- a task is killed: its replacement's lines come through the same stream");
    let victim = placed[0].clone();
    let worker = cluster.workers().iter().position(|w| w.node_id == victim.node_id).expect("its worker");
    cluster.workers()[worker].sim.kill_externally(&victim.id, 137, false).expect("kill");
    let replacement = eventually("a replacement running", 15, async || {
        let all = tasks(&mut control, &service.id).await;
        let live = running(&all);
        let fresh = live.iter().find(|t| t.id != placed[1].id && t.id != victim.id);
        if live.len() == 2 { fresh.map(|t| (*t).clone()) } else { None }
    })
    .await
    .expect("replaced");
    assert_ne!(replacement.id, victim.id);
    eventually("the replacement's line followed", 10, has(format!("{} ready", replacement.id)))
        .await
        .expect("the replacement is followed");

    eprintln!("--- a worker goes away: reported, the stream goes on, its tasks' replacements are followed");
    let lost = cluster.workers().iter().position(|w| w.node_id == placed[1].node_id).expect("a worker");
    let lost_node = cluster.workers()[lost].node_id.clone();
    cluster.stop_worker(lost);
    let moved = eventually("web running on the other worker only", 20, async || {
        let all = tasks(&mut control, &service.id).await;
        let live = running(&all);
        (live.len() == 2 && live.iter().all(|t| t.node_id != lost_node))
            .then(|| live.iter().map(|t| t.id.clone()).collect::<Vec<_>>())
    })
    .await
    .expect("moved");
    for task in &moved {
        eventually("a moved task's line followed", 10, has(format!("{task} ready"))).await.expect("followed");
    }
    let reported = eventually("the lost worker reported", 10, async || {
        let warnings = warnings.lock().expect("warnings");
        warnings.iter().find(|w| w.contains(&lost_node) && w.contains("went away")).cloned()
    })
    .await
    .expect("reported");
    eprintln!("    {reported}");
    assert!(!following.is_finished(), "following goes on");

    eprintln!("--- web is removed: the stream ends");
    control.remove_service(v1::RemoveServiceRequest { service: "web".into() }).await.expect("rm");
    let ended = tokio::time::timeout(Duration::from_secs(10), following).await.expect("the stream ends");
    ended.expect("joined").expect("ended without an error");
    assert!(warnings.lock().expect("warnings").iter().any(|w| w == "service web was removed"));

    eprintln!("--- an unknown service: one clear error");
    let refused = logs.subscribe_logs(request("nope", false)).await.expect_err("refused");
    assert_eq!((refused.code(), refused.message()), (tonic::Code::NotFound, "no such service: nope"));
    cluster.shutdown().await;
}

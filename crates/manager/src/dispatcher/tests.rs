//! The dispatcher called directly, with the peer identity a TLS connection would attach.

use super::*;
use crate::objects::Write;
use crate::testutil::store;
use futures::StreamExt as _;
use shoal_ca_pki::{NodeIdentity, Role};
use tonic::Code;

fn req<T>(message: T, node_id: &str) -> Request<T> {
    let mut request = Request::new(message);
    let identity = NodeIdentity { node_id: node_id.into(), role: Role::Worker, cluster_id: "c".into() };
    request.extensions_mut().insert(PeerInfo { addr: ([192, 0, 2, 12], 40000).into(), identity: Some(identity) });
    request
}

async fn node(objects: &ObjectStore, id: &str) {
    let node = v1::Node { id: id.into(), role: v1::NodeRole::Worker as i32, ..Default::default() };
    objects.create(node).await.expect("node");
}

fn task(id: &str, node: &str, state: TaskState, desired: TaskState) -> v1::Task {
    v1::Task {
        id: id.into(),
        node_id: node.into(),
        desired_state: desired as i32,
        status: Some(v1::TaskStatus { state: state as i32, ..Default::default() }),
        ..Default::default()
    }
}

/// Checks the heartbeats every period for `how_long`, as the leader does; returns the nodes
/// marked Down.
async fn checks_for(d: &Dispatcher, how_long: Duration) -> Vec<String> {
    let until = Instant::now() + how_long;
    let mut down = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(d.period()).await;
        down.extend(d.check_heartbeats().await.expect("check"));
    }
    down
}

/// The next message of an assignments stream, within 5 s.
async fn next_message(stream: &mut AssignmentStream) -> v1::AssignmentsMessage {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a message in time")
        .expect("open")
        .expect("ok")
}

async fn start(d: &Dispatcher, node_id: &str) -> String {
    let description = v1::NodeDescription { hostname: format!("host-{node_id}"), ..Default::default() };
    let mut stream = d
        .session(req(v1::SessionRequest { description: Some(description), session_id: String::new() }, node_id))
        .await
        .expect("session")
        .into_inner();
    let first = stream.next().await.expect("first message").expect("ok");
    // Keep the stream open for the test's duration.
    tokio::spawn(async move { while stream.next().await.is_some() {} });
    first.session_id
}

#[tokio::test]
async fn sessions_heartbeats_and_liveness() {
    let (objects, _dir) = store("dispatcher-live").await;
    node(&objects, "w1").await;
    let d = Dispatcher::new(objects.clone(), Duration::from_millis(150));

    let stranger = d.session(req(v1::SessionRequest::default(), "nobody")).await.expect_err("unknown node");
    assert_eq!(stranger.code(), Code::PermissionDenied);

    let session = start(&d, "w1").await;
    let w1: v1::Node = objects.get("w1").await.expect("w1");
    let status = w1.status.expect("status");
    assert_eq!((status.state, status.addr.as_str()), (v1::node_status::State::Ready as i32, "192.0.2.12"));
    assert_eq!(w1.description.map(|d| d.hostname), Some("host-w1".to_owned()));

    let beat = d
        .heartbeat(req(v1::HeartbeatRequest { session_id: session.clone(), volumes: None, tls_info: None }, "w1"))
        .await
        .expect("heartbeat");
    assert_eq!(beat.into_inner().period, Some(shoal_api::to_duration(Duration::from_millis(150))));
    let wrong = d
        .heartbeat(req(v1::HeartbeatRequest { session_id: "other".into(), volumes: None, tls_info: None }, "w1"))
        .await
        .expect_err("wrong session");
    assert_eq!(wrong.code(), Code::NotFound);

    tracing::info!("--- the node stops beating: down after three periods, not before");
    assert_eq!(d.check_heartbeats().await.expect("check"), Vec::<String>::new());
    assert_eq!(checks_for(&d, Duration::from_millis(500)).await, vec!["w1".to_owned()]);
    let w1: v1::Node = objects.get("w1").await.expect("w1");
    assert_eq!(w1.status.map(|s| s.state), Some(v1::node_status::State::Down as i32));
    let ended = d
        .heartbeat(req(v1::HeartbeatRequest { session_id: session, volumes: None, tls_info: None }, "w1"))
        .await
        .expect_err("session over");
    assert_eq!(ended.code(), Code::NotFound);

    tracing::info!("--- it comes back with a new session and is Ready again");
    start(&d, "w1").await;
    let w1: v1::Node = objects.get("w1").await.expect("w1");
    assert_eq!(w1.status.map(|s| s.state), Some(v1::node_status::State::Ready as i32));
}

#[tokio::test]
async fn task_status_only_moves_forward_and_only_for_own_tasks() {
    let (objects, _dir) = store("dispatcher-status").await;
    node(&objects, "w1").await;
    objects.create(task("t1", "w1", TaskState::Assigned, TaskState::Running)).await.expect("t1");
    objects.create(task("t2", "w2", TaskState::Assigned, TaskState::Running)).await.expect("t2");
    let d = Dispatcher::new(objects.clone(), Duration::from_secs(1));
    let session = start(&d, "w1").await;
    let report = |id: &str, state: TaskState| v1::UpdateTaskStatusRequest {
        session_id: session.clone(),
        updates: vec![v1::TaskStatusUpdate {
            task_id: id.into(),
            status: Some(v1::TaskStatus { state: state as i32, message: "started".into(), ..Default::default() }),
        }],
    };
    d.update_task_status(req(report("t1", TaskState::Running), "w1")).await.expect("running");
    d.update_task_status(req(report("t1", TaskState::Preparing), "w1")).await.expect("a late report is ignored");
    let t1: v1::Task = objects.get("t1").await.expect("t1");
    let status = t1.status.expect("status");
    assert_eq!(status.state, TaskState::Running as i32);
    assert!(status.timestamp.is_some(), "the dispatcher stamps reports");
    let other = d.update_task_status(req(report("t2", TaskState::Running), "w1")).await.expect_err("not its task");
    assert_eq!(other.message(), "task t2 is not assigned to node w1");

    tracing::info!("--- REMOVE and ORPHANED are the manager's to decide, not a node's to report");
    for state in [TaskState::Remove, TaskState::Orphaned] {
        d.update_task_status(req(report("t1", state), "w1")).await.expect("ignored");
    }
    let t1: v1::Task = objects.get("t1").await.expect("t1");
    assert_eq!(t1.status.map(|s| s.state), Some(TaskState::Running as i32));
}

#[tokio::test]
async fn assignments_start_complete_then_follow_changes() {
    let (objects, _dir) = store("dispatcher-assign").await;
    node(&objects, "w1").await;
    objects.create(task("t1", "w1", TaskState::Assigned, TaskState::Running)).await.expect("t1");
    objects.create(task("t2", "w2", TaskState::Assigned, TaskState::Running)).await.expect("t2");
    objects.create(task("old", "w1", TaskState::Failed, TaskState::Shutdown)).await.expect("old");
    let d = Dispatcher::new(objects.clone(), Duration::from_secs(1));
    let session = start(&d, "w1").await;
    let mut stream =
        d.assignments(req(v1::AssignmentsRequest { session_id: session }, "w1")).await.expect("assign").into_inner();
    let ids = |m: &v1::AssignmentsMessage| -> Vec<(i32, String)> {
        m.changes.iter().map(|c| (c.action, c.task.as_ref().map(|t| t.id.clone()).unwrap_or_default())).collect()
    };
    let update = v1::assignment_change::Action::Update as i32;
    let remove = v1::assignment_change::Action::Remove as i32;

    let complete = next_message(&mut stream).await;
    assert_eq!(complete.r#type, v1::assignments_message::Type::Complete as i32);
    assert_eq!(ids(&complete), vec![(update, "t1".to_owned())], "only w1's live tasks");

    objects.create(task("t2b", "w2", TaskState::Assigned, TaskState::Running)).await.expect("other node's task");
    objects.create(task("t3", "w1", TaskState::Assigned, TaskState::Running)).await.expect("t3");
    let added = next_message(&mut stream).await;
    assert_eq!((added.applies_to, added.results_in), (1, 2));
    assert_eq!(ids(&added), vec![(update, "t3".to_owned())]);

    let mut t1: v1::Task = objects.get("t1").await.expect("t1");
    t1.desired_state = TaskState::Shutdown as i32;
    let t1 = objects.update(t1).await.expect("shutdown t1");
    assert_eq!(ids(&next_message(&mut stream).await), vec![(update, "t1".to_owned())], "told to stop");
    let mut t1 = t1;
    t1.status = Some(v1::TaskStatus { state: TaskState::Shutdown as i32, ..Default::default() });
    objects.update(t1).await.expect("t1 stopped");
    assert_eq!(
        ids(&next_message(&mut stream).await),
        vec![(remove, "t1".to_owned())],
        "finished and told to stop: gone"
    );

    let t3: v1::Task = objects.get("t3").await.expect("t3");
    objects.delete::<v1::Task>("t3", t3.version()).await.expect("delete t3");
    assert_eq!(ids(&next_message(&mut stream).await), vec![(remove, "t3".to_owned())]);
}

#[tokio::test]
async fn one_watch_feeds_every_node_and_queued_changes_go_out_together() {
    let (objects, _dir) = store("dispatcher-feed").await;
    node(&objects, "w1").await;
    node(&objects, "w2").await;
    objects.create(task("before", "w2", TaskState::Assigned, TaskState::Running)).await.expect("before");
    let d = Dispatcher::new(objects.clone(), Duration::from_secs(1));
    let mut streams = Vec::new();
    for id in ["w1", "w2"] {
        let session = start(&d, id).await;
        let mut stream =
            d.assignments(req(v1::AssignmentsRequest { session_id: session }, id)).await.expect("assign").into_inner();
        stream.next().await.expect("complete").expect("ok");
        streams.push(stream);
    }
    let writes: Vec<Write<v1::Task>> = (0..40)
        .map(|i| {
            Write::Create(task(
                &format!("b{i:02}"),
                if i % 2 == 0 { "w1" } else { "w2" },
                TaskState::Assigned,
                TaskState::Running,
            ))
        })
        .collect();
    objects.write_all(writes).await.expect("batch");
    for (stream, parity) in streams.iter_mut().zip([0, 1]) {
        let mut seen = Vec::new();
        while seen.len() < 20 {
            let message = next_message(stream).await;
            assert!(message.changes.len() > 1 || seen.len() == 19, "changes queued together go out together");
            seen.extend(message.changes.into_iter().filter_map(|c| c.task).map(|t| t.id));
        }
        let mut expected: Vec<String> = (0..40).filter(|i| i % 2 == parity).map(|i| format!("b{i:02}")).collect();
        seen.sort();
        expected.sort();
        assert_eq!(seen, expected, "each node gets exactly its own tasks");
    }

    tracing::info!("--- a task written before the feed started is deleted: its node hears of it");
    let before: v1::Task = objects.get("before").await.expect("before");
    objects.delete::<v1::Task>("before", before.version()).await.expect("delete");
    let removed = next_message(&mut streams[1]).await;
    assert_eq!(removed.changes.len(), 1);
    assert_eq!(removed.changes[0].action, v1::assignment_change::Action::Remove as i32);
    assert_eq!(removed.changes[0].task.as_ref().map(|t| t.id.as_str()), Some("before"));
}

#[tokio::test]
async fn a_node_back_while_its_old_session_expires_stays_ready() {
    let (objects, _dir) = store("dispatcher-flap").await;
    node(&objects, "w1").await;
    let d = Dispatcher::new(objects.clone(), Duration::from_millis(20));
    start(&d, "w1").await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    tracing::info!("--- the check ends the silent session; before it writes Down, the node starts a new one");
    assert_eq!(d.end_expired_sessions(), vec!["w1".to_owned()]);
    let session = start(&d, "w1").await;
    assert!(!d.mark_down("w1").await.expect("mark down"), "a node with a live session is not marked Down");

    let w1: v1::Node = objects.get("w1").await.expect("w1");
    assert_eq!(w1.status.map(|s| s.state), Some(v1::node_status::State::Ready as i32));
    d.heartbeat(req(v1::HeartbeatRequest { session_id: session, volumes: None, tls_info: None }, "w1"))
        .await
        .expect("the new session lives");
}

#[tokio::test]
async fn a_manager_that_is_not_the_leader_sends_nodes_to_the_leader() {
    let (leader, follower, _dirs) = crate::testutil::leader_and_follower("dispatcher-follower").await;
    node(&leader, "w1").await;
    let manager = v1::Node {
        id: "m1".into(),
        role: v1::NodeRole::Manager as i32,
        manager_status: Some(v1::ManagerStatus { addr: "192.0.2.11:2377".into(), ..Default::default() }),
        ..Default::default()
    };
    leader.create(manager).await.expect("manager node");

    let on_follower = Dispatcher::new(follower.clone(), Duration::from_secs(1));
    let refused = on_follower.session(req(v1::SessionRequest::default(), "w1")).await.expect_err("not the leader");
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(refused.metadata().get(shoal_api::LEADER_METADATA).and_then(|v| v.to_str().ok()), Some("mem://m1"));
    let beat = on_follower
        .heartbeat(req(v1::HeartbeatRequest { session_id: "s".into(), volumes: None, tls_info: None }, "w1"))
        .await;
    assert_eq!(beat.expect_err("not the leader").code(), Code::Unavailable);

    tracing::info!("--- the leader's session names the managers to fail over to");
    let on_leader = Dispatcher::new(leader.clone(), Duration::from_secs(1));
    let mut stream = on_leader.session(req(v1::SessionRequest::default(), "w1")).await.expect("session").into_inner();
    let first = stream.next().await.expect("first").expect("ok");
    let managers: Vec<(String, String)> = first.managers.into_iter().map(|m| (m.node_id, m.addr)).collect();
    assert_eq!(managers, vec![("m1".to_owned(), "192.0.2.11:2377".to_owned())]);
    follower.store().shutdown().await;
    leader.store().shutdown().await;
}

#[tokio::test]
async fn leading_again_gives_nodes_the_grace_of_a_new_term() {
    let (objects, _dir) = store("dispatcher-term").await;
    node(&objects, "w1").await;
    // Periods long enough that a loaded CI machine stays inside the grace window between two calls.
    let d = Dispatcher::new(objects.clone(), Duration::from_millis(200));
    start(&d, "w1").await;

    tracing::info!("--- this manager follows for a while (its sessions go silent), then leads again");
    tokio::time::sleep(Duration::from_millis(700)).await;
    d.expect_nodes(["w1".to_owned()]);
    assert_eq!(d.check_heartbeats().await.expect("check"), Vec::<String>::new(), "three periods of grace first");
    assert_eq!(checks_for(&d, Duration::from_millis(700)).await, vec!["w1".to_owned()], "then silent nodes are Down");
}

#[tokio::test]
async fn streams_that_open_together_share_one_read_of_the_task_table() {
    let (objects, _dir) = store("dispatcher-listing").await;
    let d = Dispatcher::new(objects.clone(), Duration::from_millis(200));
    let subscribed = Instant::now();
    let first = d.task_list(subscribed).await.expect("list");
    let second = d.task_list(subscribed).await.expect("list");
    assert!(Arc::ptr_eq(&first, &second), "a read that began after the subscription is shared");
    assert_eq!(d.lists_read(), 1);
    tracing::info!("--- a stream subscribed after that read began reads anew");
    let later = d.task_list(Instant::now()).await.expect("list");
    assert!(!Arc::ptr_eq(&first, &later));
    assert_eq!(d.lists_read(), 2);
}

#[tokio::test]
async fn nodes_not_yet_marked_down_stay_expired_for_the_next_check() {
    let (objects, _dir) = store("dispatcher-requeue").await;
    node(&objects, "w1").await;
    node(&objects, "w2").await;
    let d = Dispatcher::new(objects.clone(), Duration::from_millis(200));
    start(&d, "w2").await;
    d.expect_nodes(["w1".to_owned()]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut expired = d.end_expired_sessions();
    expired.sort();
    assert_eq!(expired, ["w1", "w2"]);
    tracing::info!("--- marking w1 failed (no quorum, say): w1 and w2 are kept; w2 has a new session meanwhile");
    start(&d, "w2").await;
    d.keep_expired(&expired);
    assert_eq!(d.end_expired_sessions(), ["w1"], "a kept node expires at once; a new session is left alone");
    assert_eq!(d.check_heartbeats().await.expect("check"), Vec::<String>::new());
}

#[tokio::test]
async fn the_session_stream_ends_with_the_session() {
    let (objects, _dir) = store("dispatcher-stream").await;
    node(&objects, "w1").await;
    let d = Dispatcher::new(objects.clone(), Duration::from_millis(20));
    let open = async || {
        let request = req(v1::SessionRequest::default(), "w1");
        let mut stream = d.session(request).await.expect("session").into_inner();
        stream.next().await.expect("first").expect("ok");
        stream
    };
    let ends = async |stream: &mut SessionStream| {
        let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
        assert!(matches!(end, Ok(None)), "the stream ends with its session: {end:?}");
    };

    tracing::info!("--- a newer session replaces it");
    let mut first = open().await;
    let mut second = open().await;
    ends(&mut first).await;

    tracing::info!("--- it misses its heartbeats");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(d.check_heartbeats().await.expect("check"), vec!["w1".to_owned()]);
    ends(&mut second).await;
}

#[tokio::test]
async fn a_status_that_keeps_conflicting_is_handed_back_not_dropped() {
    let (objects, _dir) = store("dispatcher-conflict").await;
    node(&objects, "w1").await;
    objects.create(task("t1", "w1", TaskState::Assigned, TaskState::Running)).await.expect("t1");
    let d = Dispatcher::new(objects.clone(), Duration::from_secs(1));
    let update = v1::TaskStatusUpdate {
        task_id: "t1".into(),
        status: Some(v1::TaskStatus { state: TaskState::Running as i32, ..Default::default() }),
    };
    // No attempt left stands for every attempt losing to a concurrent write.
    let refused = d.record_status("w1", update.clone(), 0).await.expect_err("no attempt succeeded");
    assert_eq!(refused.code(), Code::Aborted);
    assert_eq!(
        refused.message(),
        "task t1: status not recorded in 0 attempts (the task kept changing); send the report again"
    );
    d.record_status("w1", update, 1).await.expect("recorded");
    let t1: v1::Task = objects.get("t1").await.expect("t1");
    assert_eq!(t1.status.map(|s| s.state), Some(TaskState::Running as i32));
}

#[tokio::test]
async fn sessions_write_the_node_only_when_it_changed_and_refuse_oversized_descriptions() {
    let (objects, _dir) = store("dispatcher-description").await;
    node(&objects, "w1").await;
    let d = Dispatcher::new(objects.clone(), Duration::from_secs(5));
    start(&d, "w1").await;
    let first: v1::Node = objects.get("w1").await.expect("w1");

    tracing::info!("--- the same node opens sessions again and again: nothing more is written");
    for _ in 0..5 {
        start(&d, "w1").await;
    }
    let again: v1::Node = objects.get("w1").await.expect("w1");
    assert_eq!(again.meta.as_ref().map(|m| m.version), first.meta.as_ref().map(|m| m.version));

    tracing::info!("--- a changed description is written");
    let description = v1::NodeDescription { hostname: "renamed".into(), ..Default::default() };
    d.session(req(v1::SessionRequest { description: Some(description), session_id: String::new() }, "w1"))
        .await
        .expect("session");
    let renamed: v1::Node = objects.get("w1").await.expect("w1");
    assert_eq!(renamed.description.map(|d| d.hostname), Some("renamed".to_owned()));

    tracing::info!("--- a 3 MiB hostname is refused before anything is written");
    let huge = v1::NodeDescription { hostname: "h".repeat(3 << 20), ..Default::default() };
    let refused = d
        .session(req(v1::SessionRequest { description: Some(huge), session_id: String::new() }, "w1"))
        .await
        .expect_err("oversized");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("hostname is 3145728 bytes, at most 253"), "{}", refused.message());
    let after: v1::Node = objects.get("w1").await.expect("w1");
    assert_eq!(after.description.map(|d| d.hostname), Some("renamed".to_owned()));
}

/// A task of `env_bytes` of environment, as a node's complete set carries it.
fn big_task(id: &str, node: &str, env_bytes: usize) -> v1::Task {
    let mut task = task(id, node, TaskState::Assigned, TaskState::Running);
    task.spec = Some(v1::TaskSpec {
        container: Some(v1::ContainerSpec {
            image: "shoal-test/sleeper".into(),
            env: vec![format!("BIG={}", "x".repeat(env_bytes))],
            ..Default::default()
        }),
        ..Default::default()
    });
    task
}

fn update_of(task: v1::Task) -> v1::AssignmentChange {
    v1::AssignmentChange {
        action: v1::assignment_change::Action::Update as i32,
        task: Some(task),
        ..Default::default()
    }
}

#[test]
fn assignments_are_split_by_size_in_order() {
    use prost::Message as _;
    const LIMIT: usize = 1 << 20;
    let complete = v1::assignments_message::Type::Complete;
    let incremental = v1::assignments_message::Type::Incremental;
    // 1,500 tasks of 4 KiB (the node), a few of 300 KiB among them, and one larger than
    // a message may be, which goes alone.
    let mut changes: Vec<v1::AssignmentChange> =
        (0..1500).map(|i| update_of(big_task(&format!("t{i:04}"), "w1", 4096))).collect();
    for at in [10, 700, 701, 1499] {
        changes.insert(at, update_of(big_task(&format!("mid{at}"), "w1", 300 << 10)));
    }
    changes.insert(900, update_of(big_task("huge", "w1", 3 << 19)));
    let total: usize = changes.iter().map(change_bytes).sum();

    for (kind, sequence) in [(complete, 0), (incremental, 7)] {
        let messages = split_assignments(kind, sequence, changes.clone(), LIMIT);
        let mut joined = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            let last = index + 1 == messages.len();
            assert_eq!(message.r#type, kind as i32);
            let size = message.encoded_len();
            if message.changes.len() == 1 && message.changes[0].task.as_ref().is_some_and(|t| t.id == "huge") {
                assert!(size > LIMIT && size <= ASSIGNMENT_MAX_BYTES, "the huge change goes alone: {size}");
            } else {
                assert!(size <= LIMIT, "message {index} is {size} bytes");
                assert!(!message.changes.is_empty());
            }
            if kind == complete {
                assert_eq!((message.applies_to, message.results_in, message.more), (0, 1, !last), "part {index}");
            } else {
                let applies_to = sequence + index as u64;
                assert_eq!((message.applies_to, message.results_in, message.more), (applies_to, applies_to + 1, false));
            }
            joined.extend(message.changes.iter().cloned());
        }
        assert_eq!(joined, changes, "the messages carry every change, in order");
        // Greedy packing: only the messages cut around the huge change may be short.
        assert!(messages.len() <= total / (LIMIT - (300 << 11)) + 3, "{} messages for {total} bytes", messages.len());
    }

    tracing::info!("--- no change: one empty message (an empty complete set still says so)");
    let empty = split_assignments(complete, 0, Vec::new(), LIMIT);
    assert_eq!(empty.len(), 1);
    assert!(empty[0].changes.is_empty() && !empty[0].more);

    tracing::info!("--- a limit smaller than every change: one change per message");
    let few: Vec<v1::AssignmentChange> = changes[..5].to_vec();
    let single = split_assignments(incremental, 1, few.clone(), 100);
    assert_eq!(single.iter().map(|m| m.changes.len()).collect::<Vec<_>>(), [1; 5]);
    assert_eq!(single.iter().map(|m| m.applies_to).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn a_large_assignment_set_comes_in_parts_and_a_task_too_large_is_rejected() {
    use prost::Message as _;
    let (objects, _dir) = store("dispatcher-parts").await;
    node(&objects, "w1").await;
    let writes: Vec<Write<v1::Task>> =
        (0..600).map(|i| Write::Create(big_task(&format!("a{i:03}"), "w1", 4096))).collect();
    objects.write_all(writes).await.expect("600 tasks");
    // Stored without validation (as before specs were bounded): no node could decode it.
    objects.create(big_task("toolarge", "w1", 5 << 20)).await.expect("oversized task");
    let d = Dispatcher::new(objects.clone(), Duration::from_secs(1));
    let session = start(&d, "w1").await;
    let mut stream =
        d.assignments(req(v1::AssignmentsRequest { session_id: session }, "w1")).await.expect("assign").into_inner();

    tracing::info!("--- 2.5 MB of tasks: a complete set in parts of at most 1 MiB, the last without `more`");
    let mut parts = Vec::new();
    loop {
        let part = next_message(&mut stream).await;
        assert_eq!(part.r#type, v1::assignments_message::Type::Complete as i32);
        assert!(part.encoded_len() <= ASSIGNMENT_CHUNK_BYTES, "{} bytes", part.encoded_len());
        let more = part.more;
        parts.push(part);
        if !more {
            break;
        }
    }
    assert!(parts.len() >= 3, "{} parts", parts.len());
    let mut ids: Vec<String> =
        parts.iter().flat_map(|p| &p.changes).filter_map(|c| c.task.clone()).map(|t| t.id).collect();
    ids.sort();
    let expected: Vec<String> = (0..600).map(|i| format!("a{i:03}")).collect();
    assert_eq!(ids, expected, "every task but the one too large");

    tracing::info!("--- the task too large is rejected, saying why");
    let deadline = Instant::now() + Duration::from_secs(5);
    let rejected = loop {
        let task: v1::Task = objects.get("toolarge").await.expect("toolarge");
        if let Some(status) = task.status.filter(|s| s.state == TaskState::Rejected as i32) {
            break status;
        }
        assert!(Instant::now() < deadline, "the task too large is rejected within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(rejected.err.starts_with("task too large to assign: 52"), "{}", rejected.err);
    assert!(rejected.err.ends_with("bytes encoded, a node accepts at most 4194304"), "{}", rejected.err);

    tracing::info!("--- 600 more at once: increments of at most 1 MiB, each applying to the one before");
    let writes: Vec<Write<v1::Task>> =
        (0..600).map(|i| Write::Create(big_task(&format!("b{i:03}"), "w1", 4096))).collect();
    objects.write_all(writes).await.expect("600 more");
    let mut sequence = 1;
    let mut added = Vec::new();
    while added.len() < 600 {
        let increment = next_message(&mut stream).await;
        assert_eq!(increment.r#type, v1::assignments_message::Type::Incremental as i32);
        assert!(increment.encoded_len() <= ASSIGNMENT_CHUNK_BYTES, "{} bytes", increment.encoded_len());
        assert_eq!((increment.applies_to, increment.results_in, increment.more), (sequence, sequence + 1, false));
        sequence += 1;
        added.extend(
            increment.changes.into_iter().filter_map(|c| c.task).map(|t| t.id).filter(|id| id.starts_with('b')),
        );
    }
    added.sort();
    assert_eq!(added, (0..600).map(|i| format!("b{i:03}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn time_the_leader_was_held_up_is_not_counted_against_the_nodes() {
    let (objects, _dir) = store("dispatcher-stall").await;
    node(&objects, "w1").await;
    let d = Dispatcher::new(objects.clone(), Duration::from_millis(150));
    start(&d, "w1").await;
    assert_eq!(d.check_heartbeats().await.expect("check"), Vec::<String>::new());

    tracing::info!("--- the leader is held up for four periods: no check, no heartbeat handled");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(d.check_heartbeats().await.expect("check"), Vec::<String>::new(), "a stall is not a node failure");
    let w1: v1::Node = objects.get("w1").await.expect("w1");
    assert_eq!(w1.status.map(|s| s.state), Some(v1::node_status::State::Ready as i32));

    tracing::info!("--- checked on time and still silent: Down after three periods");
    assert_eq!(checks_for(&d, Duration::from_millis(700)).await, vec!["w1".to_owned()]);
}

/// A task of `node` that reads secret `secret` at `version` (and config `cfg`, version 1).
fn task_with_secret(id: &str, node: &str, secret: &str, version: u64) -> v1::Task {
    let mut task = task(id, node, TaskState::Assigned, TaskState::Running);
    task.spec = Some(v1::TaskSpec {
        container: Some(v1::ContainerSpec {
            image: "shoal-test/web".into(),
            secrets: vec![v1::SecretReference {
                secret_id: secret.into(),
                secret_name: "db".into(),
                file: Some(v1::FileTarget { name: "db".into(), mode: 0o400, ..Default::default() }),
                data_version: version,
            }],
            configs: vec![v1::ConfigReference {
                config_id: "cfg".into(),
                config_name: "site".into(),
                file: None,
                data_version: 1,
            }],
            ..Default::default()
        }),
        ..Default::default()
    });
    task
}

#[tokio::test]
async fn secrets_go_before_the_tasks_that_use_them_and_leave_with_the_last() {
    use crate::payload::Payload as _;
    let (objects, _dir) = store("dispatcher-secrets").await;
    node(&objects, "w1").await;
    let mut secret =
        v1::Secret::new("s1".into(), v1::Annotations { name: "db".into(), ..Default::default() }, b"pw-one".to_vec());
    secret = objects.create(secret).await.expect("secret");
    objects
        .create(v1::Config::new(
            "cfg".into(),
            v1::Annotations { name: "site".into(), ..Default::default() },
            b"cfg".to_vec(),
        ))
        .await
        .expect("config");
    objects.create(task_with_secret("t1", "w1", "s1", 1)).await.expect("t1");
    objects.create(task_with_secret("t2", "w1", "s1", 1)).await.expect("t2");
    objects.create(task_with_secret("elsewhere", "w2", "s1", 1)).await.expect("other node");
    let d = Dispatcher::new(objects.clone(), Duration::from_secs(1));
    let session = start(&d, "w1").await;
    let mut stream =
        d.assignments(req(v1::AssignmentsRequest { session_id: session }, "w1")).await.expect("assign").into_inner();
    let shown = |m: &v1::AssignmentsMessage| -> Vec<String> {
        m.changes
            .iter()
            .map(|c| {
                let action = if c.action == v1::assignment_change::Action::Remove as i32 { "-" } else { "+" };
                match (&c.task, &c.secret, &c.config) {
                    (Some(t), None, None) => format!("{action}task {}", t.id),
                    (None, Some(s), None) => format!(
                        "{action}secret {}@{} {:?}",
                        s.id,
                        s.data_version,
                        String::from_utf8_lossy(s.spec.as_ref().map(|s| s.data.as_slice()).unwrap_or_default())
                    ),
                    (None, None, Some(c)) => format!("{action}config {}@{}", c.id, c.data_version),
                    other => panic!("not exactly one item in a change: {other:?}"),
                }
            })
            .collect()
    };
    let complete = next_message(&mut stream).await;
    assert_eq!(
        shown(&complete),
        ["+secret s1@1 \"pw-one\"", "+config cfg@1", "+task t1", "+task t2"],
        "each payload once, before its first task"
    );

    // A new version: a task made with it brings it; the old one stays while t1 and t2 use it.
    crate::payload::replace(&mut secret, b"pw-two".to_vec(), SystemTime::now());
    objects.update(secret).await.expect("rotate");
    objects.create(task_with_secret("t3", "w1", "s1", 2)).await.expect("t3");
    assert_eq!(shown(&next_message(&mut stream).await), ["+secret s1@2 \"pw-two\"", "+task t3"]);

    for id in ["t1", "t2"] {
        let t: v1::Task = objects.get(id).await.expect("task");
        objects.delete::<v1::Task>(id, t.version()).await.expect("delete");
    }
    let mut removed = shown(&next_message(&mut stream).await);
    if removed.len() == 1 {
        removed.extend(shown(&next_message(&mut stream).await));
    }
    assert_eq!(removed, ["-task t1", "-task t2", "-secret s1@1 \"\""], "the old version leaves with its last task");

    let t3: v1::Task = objects.get("t3").await.expect("t3");
    objects.delete::<v1::Task>("t3", t3.version()).await.expect("delete t3");
    assert_eq!(shown(&next_message(&mut stream).await), ["-task t3", "-secret s1@2 \"\"", "-config cfg@1"]);
}

#[tokio::test]
async fn heartbeats_carry_volumes_and_their_removals() {
    let (objects, _dir) = store("dispatcher-volumes").await;
    node(&objects, "w1").await;
    let d = Dispatcher::new(objects.clone(), Duration::from_secs(1));
    let session = start(&d, "w1").await;
    let volume = |name: &str| v1::NodeVolume { name: name.into(), driver: "local".into(), ..Default::default() };
    let report = v1::VolumeReport { volumes: vec![volume("data"), volume("cache")] };
    let beat = |volumes: Option<v1::VolumeReport>| {
        d.heartbeat(req(v1::HeartbeatRequest { session_id: session.clone(), volumes, tls_info: None }, "w1"))
    };
    let answer = beat(Some(report)).await.expect("beat").into_inner();
    assert!(answer.remove_volumes.is_empty());
    let w1: v1::Node = objects.get("w1").await.expect("w1");
    let names: Vec<&str> = w1.volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["cache", "data"], "stored, sorted");

    objects
        .modify("w1", |n: &mut v1::Node| {
            n.volume_removals = vec!["cache".into()];
            true
        })
        .await
        .expect("ask removal");
    let answer = beat(None).await.expect("beat").into_inner();
    assert_eq!(answer.remove_volumes, ["cache"], "the node is told");
    beat(Some(v1::VolumeReport { volumes: vec![volume("data")] })).await.expect("beat");
    let w1: v1::Node = objects.get("w1").await.expect("w1");
    assert!(w1.volume_removals.is_empty(), "done once the node reports it gone");
    assert_eq!(w1.volumes.len(), 1);
}

//! The log broker: a subscription's decisions as tables of events (`Subscription`), then the
//! broker driven through the store and fake node streams (subscriptions sent, lines fanned in,
//! the end of a read, following new tasks, a caller that does not read holding back the nodes).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use shoal_api::v1::{self, TaskState};
use tonic::{Code, Status};

use super::subscription::{NodeMessage, Subscription};
use super::*;
use crate::testutil::store;

fn task(id: &str, service: &str, node: &str, state: TaskState) -> v1::Task {
    v1::Task {
        id: id.into(),
        service_id: service.into(),
        node_id: node.into(),
        desired_state: TaskState::Running as i32,
        status: Some(v1::TaskStatus { state: state as i32, ..Default::default() }),
        ..Default::default()
    }
}

fn options(follow: bool, tail: Option<u64>) -> v1::LogSubscriptionOptions {
    v1::LogSubscriptionOptions { follow, tail, ..Default::default() }
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn line(task: &str, text: &str, secs: u64) -> v1::LogMessage {
    v1::LogMessage {
        context: Some(v1::LogContext { task_id: task.into(), ..Default::default() }),
        timestamp: Some(shoal_api::to_timestamp(at(secs))),
        stream: v1::LogStream::Stdout as i32,
        data: text.as_bytes().to_vec(),
    }
}

fn batch(lines: Vec<v1::LogMessage>, finished: &[&str], close: bool) -> v1::PublishLogsMessage {
    v1::PublishLogsMessage {
        session_id: "s".into(),
        subscription_id: "sub".into(),
        messages: lines,
        finished_task_ids: finished.iter().map(|t| (*t).to_owned()).collect(),
        warnings: Vec::new(),
        close,
    }
}

/// A subscription "sub" to services (ID, name) and tasks, nodes n1 and n2 named w1 and w2.
fn subscription(follow: bool, services: &[(&str, &str)], tasks: &[&str]) -> Subscription {
    let services = services.iter().map(|(id, name)| ((*id).to_owned(), (*name).to_owned())).collect();
    let tasks = tasks.iter().map(|t| (*t).to_owned()).collect();
    let names = [("n1", "w1"), ("n2", "w2")].map(|(id, name)| (id.to_owned(), name.to_owned())).into();
    Subscription::new("sub".into(), options(follow, Some(10)), services, tasks, names)
}

/// Each message as (node, task IDs, close).
fn summary(sends: &[NodeMessage]) -> Vec<(String, Vec<String>, bool)> {
    sends
        .iter()
        .map(|s| {
            let tasks = s.message.selector.as_ref().map(|sel| sel.task_ids.clone()).unwrap_or_default();
            (s.node_id.clone(), tasks, s.message.close)
        })
        .collect()
}

fn expect(node: &str, tasks: &[&str]) -> (String, Vec<String>, bool) {
    (node.to_owned(), tasks.iter().map(|t| (*t).to_owned()).collect(), false)
}

fn texts(lines: &[v1::LogMessage]) -> Vec<String> {
    lines.iter().map(|l| String::from_utf8_lossy(&l.data).into_owned()).collect()
}

#[test]
fn without_follow_each_node_is_asked_for_its_readable_tasks_and_the_read_ends_when_all_have_sent() {
    let mut sub = subscription(false, &[("svc", "web")], &[]);
    let tasks = [
        task("t1", "svc", "n1", TaskState::Running),
        task("t2", "svc", "n2", TaskState::Failed),
        task("t3", "svc", "n1", TaskState::Complete),
        // Not yet created on its node: nothing to read.
        task("t4", "svc", "n2", TaskState::Assigned),
        // Not placed.
        task("t5", "svc", "", TaskState::Pending),
        // Another service's.
        task("t6", "other", "n1", TaskState::Running),
    ];
    let sends = sub.tasks_seen(&tasks);
    assert_eq!(summary(&sends), [expect("n1", &["t1", "t3"]), expect("n2", &["t2"])]);
    assert_eq!(sends[0].message.options, Some(options(false, Some(10))), "the caller's options go to the nodes");
    sub.sent("n1", 1);
    sub.sent("n2", 2);
    assert!(!sub.is_done());

    let (lines, dropped) = sub.published("n1", batch(vec![line("t1", "a", 1), line("t3", "b", 2)], &["t1"], false));
    assert_eq!((texts(&lines), dropped), (vec!["a".to_owned(), "b".to_owned()], 0));
    let context = lines[0].context.clone().expect("context");
    assert_eq!((context.service_id.as_str(), context.node_id.as_str(), context.task_id.as_str()), ("svc", "n1", "t1"));
    sub.published("n1", batch(Vec::new(), &["t3"], true));
    assert!(!sub.is_done(), "n2 has not sent everything yet");
    sub.published("n2", batch(vec![line("t2", "c", 3)], &["t2"], true));
    assert!(sub.is_done());
    assert!(sub.take_warnings().is_empty());
    assert!(sub.subscribed_nodes().is_empty(), "nothing to close: every node finished");
}

#[test]
fn a_node_publishes_only_the_tasks_it_was_asked_for() {
    let mut sub = subscription(false, &[("svc", "web")], &[]);
    sub.tasks_seen(&[task("t1", "svc", "n1", TaskState::Running), task("t2", "svc", "n2", TaskState::Running)]);
    // n1 sends a line of n2's task and one of a task nobody asked for: both dropped.
    let lines = vec![line("t1", "mine", 1), line("t2", "not mine", 1), line("tx", "unknown", 1)];
    let (lines, dropped) = sub.published("n1", batch(lines, &["t2"], false));
    assert_eq!((texts(&lines), dropped), (vec!["mine".to_owned()], 2));
    // Nor can it finish another node's task.
    sub.published("n2", batch(Vec::new(), &[], false));
    assert!(!sub.is_done());
    // A node that was never asked for anything is ignored altogether.
    let (lines, dropped) = sub.published("n9", batch(vec![line("t1", "x", 1)], &[], true));
    assert_eq!((lines.len(), dropped), (0, 1));
}

#[test]
fn a_node_without_a_session_or_that_goes_away_is_reported_and_does_not_hold_up_the_end() {
    let mut sub = subscription(false, &[("svc", "web")], &[]);
    sub.tasks_seen(&[
        task("t1", "svc", "n1", TaskState::Running),
        task("t2", "svc", "n2", TaskState::Running),
        task("t3", "svc", "n2", TaskState::Shutdown),
    ]);
    sub.sent("n1", 1);
    sub.unreachable("n2");
    assert_eq!(
        sub.take_warnings(),
        ["node w2 (n2) is down or has no session with the leader: the logs of its 2 tasks are missing"]
    );
    assert!(!sub.is_done());
    sub.node_gone("n1", 1, "its session ended");
    assert_eq!(sub.take_warnings(), ["node w1 (n1) went away (its session ended) before it sent all its logs"]);
    assert!(sub.is_done(), "a read without follow ends; it does not wait for nodes that are gone");
    // Its session's end heard twice (the stream, then the publication) warns once.
    sub.node_gone("n1", 1, "its publication broke off");
    assert!(sub.take_warnings().is_empty());
}

#[test]
fn following_takes_replacements_and_keeps_going_when_a_node_goes_away_and_comes_back() {
    let mut sub = subscription(true, &[("svc", "web")], &[]);
    let sends = sub.tasks_seen(&[task("t1", "svc", "n1", TaskState::Running)]);
    assert_eq!(summary(&sends), [expect("n1", &["t1"])]);
    sub.sent("n1", 1);
    sub.published("n1", batch(vec![line("t1", "a", 5)], &[], false));

    // t1 is killed: its log ends; its replacement shows up, first ASSIGNED (nothing to read
    // yet), then RUNNING, on n2.
    sub.published("n1", batch(Vec::new(), &["t1"], false));
    assert!(sub.tasks_seen(&[task("t2", "svc", "n2", TaskState::Assigned)]).is_empty());
    let sends = sub.tasks_seen(&[task("t2", "svc", "n2", TaskState::Running)]);
    assert_eq!(summary(&sends), [expect("n2", &["t2"])]);
    sub.sent("n2", 7);
    assert!(sub.tasks_seen(&[task("t2", "svc", "n2", TaskState::Running)]).is_empty(), "asked once");
    assert!(!sub.is_done(), "following a service goes on");

    // n2 goes away: reported, dropped, not the end.
    sub.published("n2", batch(vec![line("t2", "b", 9)], &[], false));
    sub.node_gone("n2", 7, "its session ended");
    assert_eq!(sub.take_warnings(), ["node w2 (n2) went away (its session ended): its logs stop until it is back"]);
    assert!(!sub.is_done());
    // A late event of an older stream changes nothing.
    assert!(sub.node_connected("n2", 6).is_none());
    // It comes back: asked again for what it has not finished, after the last line it sent
    // (its tail was sent already).
    let resumed = sub.node_connected("n2", 8).expect("asked again");
    assert_eq!(summary(std::slice::from_ref(&resumed)), [expect("n2", &["t2"])]);
    let resumed_options = resumed.message.options.expect("options");
    assert_eq!(resumed_options.tail, None);
    assert_eq!(shoal_api::from_timestamp(resumed_options.since.as_ref()), Some(at(9) + Duration::from_nanos(1)));
    assert_eq!(sub.take_warnings(), ["node w2 (n2) is back: its logs continue"]);
    // The old stream's end, and the end of a publication of the old session, heard late, do
    // not undo the new one.
    sub.node_gone("n2", 7, "its session ended");
    sub.node_gone("n2", 7, "its publication broke off");
    assert!(sub.take_warnings().is_empty());
    assert_eq!(sub.subscribed_nodes(), ["n1", "n2"], "both are told to stop when it ends");
}

#[test]
fn following_asks_a_node_that_is_gone_for_everything_it_owes_when_a_new_task_lands_there() {
    let mut sub = subscription(true, &[("svc", "web")], &[]);
    sub.tasks_seen(&[task("t1", "svc", "n1", TaskState::Running)]);
    sub.unreachable("n1");
    assert_eq!(
        sub.take_warnings(),
        ["node w1 (n1) is down or has no session with the leader: the logs of its 1 task follow when it is back"]
    );
    // A new task there: the node may be back; it is asked for both.
    let sends = sub.tasks_seen(&[task("t2", "svc", "n1", TaskState::Starting)]);
    assert_eq!(summary(&sends), [expect("n1", &["t1", "t2"])]);
}

#[test]
fn following_ends_when_the_service_is_removed() {
    let mut sub = subscription(true, &[("svc", "web")], &[]);
    sub.tasks_seen(&[task("t1", "svc", "n1", TaskState::Running)]);
    sub.service_removed("other");
    assert!(!sub.is_done());
    sub.service_removed("svc");
    assert!(sub.is_done());
    assert_eq!(sub.take_warnings(), ["service web was removed"]);
}

#[test]
fn following_a_task_ends_with_its_log() {
    let mut sub = subscription(true, &[], &["t1", "t2"]);
    let sends = sub.tasks_seen(&[task("t1", "svc", "n1", TaskState::Running), task("t2", "svc", "n2", TaskState::New)]);
    assert_eq!(summary(&sends), [expect("n1", &["t1"])]);
    sub.published("n1", batch(Vec::new(), &["t1"], false));
    assert!(!sub.is_done(), "t2 has not started yet");
    sub.task_removed("t2");
    assert!(sub.is_done(), "t1's container exited and t2 is gone before it started");
}

#[test]
fn warnings_are_capped() {
    let mut sub = subscription(false, &[("svc", "web")], &[]);
    let tasks: Vec<v1::Task> =
        (0..150).map(|i| task(&format!("t{i}"), "svc", &format!("m{i:03}"), TaskState::Running)).collect();
    let sends = sub.tasks_seen(&tasks);
    for send in sends {
        sub.unreachable(&send.node_id);
    }
    let warnings = sub.take_warnings();
    assert_eq!(warnings.len(), 101);
    assert_eq!(warnings.last().map(String::as_str), Some("50 more warnings left out"));
    assert!(sub.is_done());
}

// --- the broker, through the store

async fn create_service(objects: &ObjectStore, id: &str, name: &str) {
    let spec = v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: name.into(), ..Default::default() }),
        ..Default::default()
    };
    objects.create(v1::Service { id: id.into(), spec: Some(spec), ..Default::default() }).await.expect("service");
}

fn request(follow: bool, services: &[&str], tasks: &[&str]) -> v1::SubscribeLogsRequest {
    v1::SubscribeLogsRequest {
        selector: Some(v1::LogSelector {
            service_ids: services.iter().map(|s| (*s).to_owned()).collect(),
            task_ids: tasks.iter().map(|t| (*t).to_owned()).collect(),
        }),
        options: Some(options(follow, None)),
    }
}

/// The next item of a stream, within 5 s.
async fn next<T>(stream: &mut (impl futures::Stream<Item = T> + Unpin)) -> Option<T> {
    tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("an item in time")
}

/// The next subscription message a node gets.
async fn node_message(stream: &mut NodeSubscriptionStream) -> v1::NodeLogSubscription {
    let message = next(stream).await.expect("open").expect("ok");
    assert_eq!(message.subscriptions.len(), 1);
    message.subscriptions.into_iter().next().expect("one")
}

fn publication(
    subscription: &v1::NodeLogSubscription,
    lines: Vec<v1::LogMessage>,
    finished: &[&str],
    close: bool,
) -> v1::PublishLogsMessage {
    v1::PublishLogsMessage { subscription_id: subscription.id.clone(), ..batch(lines, finished, close) }
}

#[tokio::test]
async fn a_read_fans_in_the_nodes_lines_and_ends_when_they_have_sent_everything() {
    let (objects, _dir) = store("logs-read").await;
    create_service(&objects, "svc1", "web").await;
    objects.create(task("t1", "svc1", "n1", TaskState::Running)).await.expect("t1");
    objects.create(task("t2", "svc1", "n2", TaskState::Running)).await.expect("t2");
    let broker = LogBroker::default();
    let service = LogsService::new(objects.clone(), broker.clone(), None);
    let mut n1 = broker.node_stream("n1".into(), || true);

    tracing::info!("--- a read of web by name: n1 is asked for t1; n2 has no session and is reported");
    let mut caller = service.subscribe(request(false, &["web"], &[])).await.expect("subscribe");
    let asked = node_message(&mut n1).await;
    assert_eq!(asked.selector.as_ref().map(|s| s.task_ids.clone()), Some(vec!["t1".to_owned()]));
    let first = next(&mut caller).await.expect("a message").expect("ok");
    assert_eq!(first.warnings.len(), 1);
    assert!(first.warnings[0].starts_with("node n2 is down or has no session"), "{:?}", first.warnings);

    tracing::info!("--- n1 publishes its lines and its end: the read ends");
    let lines = vec![line("t1", "hello", 1), line("t1", "world", 2)];
    let batches = futures::stream::iter(vec![Ok(publication(&asked, Vec::new(), &["t1"], true))]);
    broker.publish("n1".into(), publication(&asked, lines, &[], false), batches, |_| true).await.expect("publish");
    let message = next(&mut caller).await.expect("lines").expect("ok");
    assert_eq!(texts(&message.messages), ["hello", "world"]);
    let context = message.messages[0].context.clone().expect("context");
    assert_eq!((context.service_id.as_str(), context.node_id.as_str()), ("svc1", "n1"));
    assert!(next(&mut caller).await.is_none(), "the read ends");
}

#[tokio::test]
async fn following_a_service_takes_its_new_tasks_and_ends_when_it_is_removed() {
    let (objects, _dir) = store("logs-follow").await;
    create_service(&objects, "svc1", "web").await;
    objects.create(task("t1", "svc1", "n1", TaskState::Running)).await.expect("t1");
    let broker = LogBroker::default();
    let service = LogsService::new(objects.clone(), broker.clone(), None);
    let mut n1 = broker.node_stream("n1".into(), || true);
    let mut n2 = broker.node_stream("n2".into(), || true);
    let mut caller = service.subscribe(request(true, &["svc1"], &[])).await.expect("subscribe");
    let asked = node_message(&mut n1).await;

    tracing::info!("--- a replacement starts on n2: n2 is asked for it");
    objects.create(task("t2", "svc1", "n2", TaskState::Running)).await.expect("t2");
    let asked2 = node_message(&mut n2).await;
    assert_eq!(asked2.id, asked.id);
    assert_eq!(asked2.selector.as_ref().map(|s| s.task_ids.clone()), Some(vec!["t2".to_owned()]));
    let publishing = tokio::spawn({
        let (broker, first) =
            (broker.clone(), publication(&asked2, vec![line("t2", "from the replacement", 3)], &[], false));
        async move { broker.publish("n2".into(), first, futures::stream::pending(), |_| true).await }
    });
    let message = next(&mut caller).await.expect("lines").expect("ok");
    assert_eq!(texts(&message.messages), ["from the replacement"]);

    tracing::info!("--- the service is removed: the stream ends and the nodes are told to stop");
    let removed: v1::Service = objects.get("svc1").await.expect("service");
    objects.delete::<v1::Service>("svc1", removed.meta.map_or(0, |m| m.version)).await.expect("remove");
    let last = next(&mut caller).await.expect("a last message").expect("ok");
    assert_eq!(last.warnings, ["service web was removed"]);
    assert!(next(&mut caller).await.is_none(), "the stream ends");
    for stream in [&mut n1, &mut n2] {
        let close = node_message(stream).await;
        assert!(close.close && close.id == asked.id, "{close:?}");
    }
    let refused = tokio::time::timeout(Duration::from_secs(5), publishing).await.expect("publication ends");
    assert!(refused.expect("joined").is_ok(), "a publication of an ended subscription just stops");
}

#[tokio::test]
async fn a_caller_that_does_not_read_holds_back_the_nodes() {
    let (objects, _dir) = store("logs-backpressure").await;
    create_service(&objects, "svc1", "web").await;
    objects.create(task("t1", "svc1", "n1", TaskState::Running)).await.expect("t1");
    let broker = LogBroker::default();
    let service = LogsService::new(objects.clone(), broker.clone(), None);
    let mut n1 = broker.node_stream("n1".into(), || true);
    let caller = service.subscribe(request(true, &["svc1"], &[])).await.expect("subscribe");
    let asked = node_message(&mut n1).await;
    let taken = Arc::new(AtomicUsize::new(0));
    let batches = {
        let (taken, asked) = (taken.clone(), asked.clone());
        futures::stream::unfold(0u64, move |n| {
            let (taken, asked) = (taken.clone(), asked.clone());
            async move {
                taken.fetch_add(1, Ordering::SeqCst);
                Some((Ok(publication(&asked, vec![line("t1", "x", n)], &[], false)), n + 1))
            }
        })
        .boxed()
    };
    let first = publication(&asked, vec![line("t1", "x", 0)], &[], false);
    let publishing = tokio::spawn({
        let broker = broker.clone();
        async move { broker.publish("n1".into(), first, batches, |_| true).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bound = SUBSCRIPTION_QUEUE + CALLER_QUEUE + 3;
    let taken_now = taken.load(Ordering::SeqCst);
    assert!(
        taken_now <= bound,
        "{taken_now} batches taken from the node while the caller reads none (at most {bound})"
    );
    tracing::info!("--- the caller goes away: the publication stops");
    drop(caller);
    let ended = tokio::time::timeout(Duration::from_secs(5), publishing).await.expect("the publication stops");
    assert!(ended.expect("joined").is_ok());
    let close = node_message(&mut n1).await;
    assert!(close.close);
}

#[tokio::test]
async fn an_unknown_service_or_task_is_one_clear_error() {
    let (objects, _dir) = store("logs-unknown").await;
    create_service(&objects, "svc1", "web").await;
    let service = LogsService::new(objects.clone(), LogBroker::default(), None);
    let refused = |request| async { service.subscribe(request).await.err().expect("refused") };
    let status: Status = refused(request(false, &["nope"], &[])).await;
    assert_eq!((status.code(), status.message()), (Code::NotFound, "no such service: nope"));
    let status = refused(request(true, &[], &["t9"])).await;
    assert_eq!((status.code(), status.message()), (Code::NotFound, "no such task: t9"));
    let status = refused(request(false, &[], &[])).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    let mut bad = request(false, &["web"], &[]);
    bad.options.get_or_insert_default().streams = vec![7];
    assert_eq!(refused(bad).await.code(), Code::InvalidArgument);
}

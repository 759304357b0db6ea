//! The agent's log publication on the simulated runtime: what it reads for a subscription (tail,
//! streams, missing containers), how it batches, when it marks tasks and the subscription
//! finished, following a container until it exits, and that it waits for the manager.

use std::time::Duration;

use shoal_runtime::{ContainerSpec, ImageSource, SimBehavior, Simulated};

use super::*;

/// A simulated runtime with a running container per `(id, behavior)`.
async fn runtime(containers: &[(&str, SimBehavior)]) -> Simulated {
    let sim = Simulated::new();
    for (id, behavior) in containers {
        let image = format!("sim/{id}");
        sim.add_image(&image, behavior.clone());
        let image = sim.ensure_image(&ImageSource::registry(image)).await.expect("pull");
        sim.create(&ContainerSpec { id: (*id).to_owned(), image, ..Default::default() }).await.expect("create");
        sim.start(id).await.expect("start");
    }
    sim
}

fn prints(stdout: &[&str], stderr: &[&str]) -> SimBehavior {
    SimBehavior::Print {
        stdout: stdout.iter().map(|s| (*s).to_owned()).collect(),
        stderr: stderr.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn publisher(sim: &Simulated, options: v1::LogSubscriptionOptions) -> Publisher {
    // Never connected: `publish` hands its batches to the test instead.
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
    Publisher {
        runtime: Arc::new(sim.clone()),
        dispatcher: DispatcherClient::new(channel),
        session_id: "s1".into(),
        id: "sub1".into(),
        options,
        reads: Arc::new(Semaphore::new(CONCURRENT_READS)),
    }
}

/// Runs a subscription to the end and returns its batches.
async fn publish_all(publisher: Publisher, task_ids: &[&str]) -> Vec<v1::PublishLogsMessage> {
    let (out, mut batches) = mpsc::channel(1);
    let (_updates, receiver) = mpsc::channel(1);
    let ids = task_ids.iter().map(|t| (*t).to_owned()).collect();
    let run = tokio::spawn(async move { publisher.publish(ids, receiver, out).await });
    let mut all = Vec::new();
    while let Some(batch) = tokio::time::timeout(Duration::from_secs(5), batches.recv()).await.expect("in time") {
        all.push(batch);
    }
    assert_eq!(run.await.expect("joined"), "complete");
    all
}

/// Every line of `batches` as `task stream text`.
fn lines(batches: &[v1::PublishLogsMessage]) -> Vec<String> {
    let mut lines: Vec<String> = batches
        .iter()
        .flat_map(|b| &b.messages)
        .map(|m| {
            let task = m.context.as_ref().map(|c| c.task_id.as_str()).unwrap_or_default();
            let stream = if m.stream == v1::LogStream::Stderr as i32 { "err" } else { "out" };
            format!("{task} {stream} {}", String::from_utf8_lossy(&m.data))
        })
        .collect();
    // Tasks are read side by side: their lines interleave.
    lines.sort();
    lines
}

fn finished(batches: &[v1::PublishLogsMessage]) -> Vec<String> {
    let mut ids: Vec<String> = batches.iter().flat_map(|b| b.finished_task_ids.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_read_publishes_every_task_then_its_end() {
    let sim = runtime(&[("t1", prints(&["a1", "a2"], &["a-err"])), ("t2", prints(&["b1"], &[]))]).await;
    let options = v1::LogSubscriptionOptions::default();
    // t3's container is gone (an old task): nothing to read, and no complaint.
    let batches = publish_all(publisher(&sim, options), &["t1", "t2", "t3"]).await;
    assert_eq!(lines(&batches), ["t1 err a-err", "t1 out a1", "t1 out a2", "t2 out b1"]);
    assert_eq!(finished(&batches), ["t1", "t2", "t3"]);
    let last = batches.last().expect("a batch");
    assert!(last.close, "the last batch marks the end");
    assert_eq!(batches.iter().filter(|b| b.close).count(), 1);
    assert!(batches.iter().all(|b| b.session_id == "s1" && b.subscription_id == "sub1" && b.warnings.is_empty()));
    let stamped = batches.iter().flat_map(|b| &b.messages).all(|m| m.timestamp.is_some());
    assert!(stamped, "every line carries its time");
}

#[tokio::test]
async fn tail_and_streams_choose_the_lines() {
    let sim = runtime(&[("t1", prints(&["1", "2", "3"], &["e1", "e2"]))]).await;
    let stderr = v1::LogSubscriptionOptions { streams: vec![v1::LogStream::Stderr as i32], ..Default::default() };
    assert_eq!(lines(&publish_all(publisher(&sim, stderr), &["t1"]).await), ["t1 err e1", "t1 err e2"]);
    let tail = v1::LogSubscriptionOptions { tail: Some(1), ..Default::default() };
    assert_eq!(lines(&publish_all(publisher(&sim, tail), &["t1"]).await), ["t1 err e2"]);
}

#[tokio::test]
async fn batches_are_bounded_in_lines_and_bytes() {
    let many: Vec<String> = (0..2500).map(|i| format!("line {i}")).collect();
    let long = "x".repeat(16 << 10);
    let wide: Vec<String> = (0..40).map(|_| long.clone()).collect();
    let sim = runtime(&[
        ("many", SimBehavior::Print { stdout: many, stderr: Vec::new() }),
        ("wide", SimBehavior::Print { stdout: wide, stderr: Vec::new() }),
    ])
    .await;
    for (task, lines) in [("many", 2500), ("wide", 40)] {
        let batches = publish_all(publisher(&sim, v1::LogSubscriptionOptions::default()), &[task]).await;
        assert_eq!(batches.iter().map(|b| b.messages.len()).sum::<usize>(), lines);
        for batch in &batches {
            let bytes: usize = batch.messages.iter().map(|m| m.data.len()).sum();
            assert!(
                batch.messages.len() <= BATCH_LINES && bytes <= BATCH_BYTES,
                "{} lines, {bytes} bytes",
                batch.messages.len()
            );
        }
    }
}

#[tokio::test]
async fn following_reads_new_tasks_until_the_manager_closes_the_subscription() {
    let server = |line: &str| SimBehavior::PrintAndRun { stdout: vec![line.to_owned()], stderr: Vec::new() };
    let sim = runtime(&[("t1", server("one")), ("t2", server("two"))]).await;
    let follow = v1::LogSubscriptionOptions { follow: true, ..Default::default() };
    let publisher = publisher(&sim, follow);
    let (out, mut batches) = mpsc::channel(1);
    let (updates, receiver) = mpsc::channel(4);
    let run = tokio::spawn(async move { publisher.publish(vec!["t1".into()], receiver, out).await });
    let next = async |batches: &mut mpsc::Receiver<v1::PublishLogsMessage>| {
        tokio::time::timeout(Duration::from_secs(5), batches.recv()).await.expect("in time").expect("open")
    };
    assert_eq!(lines(&[next(&mut batches).await]), ["t1 out one"]);

    // The manager asks for a new task of the service (and t1 again, which is read already).
    updates.send(vec!["t1".into(), "t2".into()]).await.expect("update");
    assert_eq!(lines(&[next(&mut batches).await]), ["t2 out two"]);

    // t1's container exits: its log ends, the subscription goes on.
    sim.stop("t1", Duration::from_secs(1)).await.expect("stop");
    let ended = next(&mut batches).await;
    assert_eq!((ended.finished_task_ids.as_slice(), ended.close), (&["t1".to_owned()][..], false));
    assert!(!run.is_finished());

    drop(updates);
    let outcome = tokio::time::timeout(Duration::from_secs(5), run).await.expect("ends").expect("joined");
    assert_eq!(outcome, "closed by the manager");
}

// The clock is paused so that the sleep below is a wait for quiescence: it returns only once no
// task can run (the runtime advances a paused clock only when idle), so the publisher has gone as
// far as it can without the manager taking a batch.
#[tokio::test(start_paused = true)]
async fn a_manager_that_does_not_take_batches_holds_back_the_reads() {
    let many: Vec<String> = (0..100_000).map(|i| format!("line {i}")).collect();
    let sim = runtime(&[("t1", SimBehavior::Print { stdout: many, stderr: Vec::new() })]).await;
    let publisher = publisher(&sim, v1::LogSubscriptionOptions::default());
    let (out, mut batches) = mpsc::channel(1);
    let (_updates, receiver) = mpsc::channel(1);
    let run = tokio::spawn(async move { publisher.publish(vec!["t1".into()], receiver, out).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One batch in the channel, one being sent, one being gathered, and the line queue: the
    // rest of the 100,000 lines wait in the runtime's stream.
    assert!(!run.is_finished());
    let first = batches.recv().await.expect("a batch");
    assert_eq!(first.messages.len(), BATCH_LINES);
    drop(batches);
    let outcome = tokio::time::timeout(Duration::from_secs(5), run).await.expect("ends").expect("joined");
    assert_eq!(outcome, "the manager stopped taking it");
}

//! `shoal events` end to end: the binary against a manager started in the test. A follower sees a
//! service created, scaled and removed, in order and as docker prints them; `--since` replays
//! what the manager kept (and `--until` ends the stream); `--filter` drops the rest;
//! `--format '{{json .}}'` prints docker's fields; a bad filter is one error line.

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{Cli, init_manager};

/// The kill-on-drop of a `shoal events` that follows.
struct Follower(std::process::Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `TYPE ACTION (ATTRIBUTES)` of a default line, without its time and ID.
fn shape(line: &str) -> String {
    let mut words = line.splitn(5, ' ');
    let (_time, kind, action, _id) = (words.next(), words.next(), words.next(), words.next());
    let attributes = words.next().unwrap_or_default();
    format!("{} {} {attributes}", kind.unwrap_or_default(), action.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_service_as_docker_prints_them() {
    let (dir, addr, manager, outcome) = init_manager("events").await;
    let cli = Cli { host: addr.to_string(), bundle: &outcome.admin_bundle };

    // Follow the service events, then create, scale and remove a service.
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["events", "--filter", "type=service"])
        .env("SHOAL_HOST", addr.to_string())
        .env("SHOAL_CERT_PATH", &outcome.admin_bundle)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run shoal events");
    let stdout = child.stdout.take().expect("stdout");
    let _follower = Follower(child);
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    // The follower is subscribed once its first event arrives: create a probe until it does.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut probes = 0;
    loop {
        probes += 1;
        cli.ok(&["service", "create", "--name", &format!("probe{probes}"), "--replicas", "0", "--detach", "busybox"]);
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(500)) {
            // Its create, or (subscribed a moment late) the allocator's update after it.
            assert!(line.contains(" service ") && line.contains("name=probe"), "{line}");
            break;
        }
        assert!(Instant::now() < deadline, "shoal events printed nothing in 10s");
    }
    while lines.recv_timeout(Duration::from_millis(300)).is_ok() {}

    let id = cli.ok(&["service", "create", "--name", "web", "--replicas", "3", "--detach", "shoal-test/web:v1"]);
    let id = id.trim();
    // Its three tasks are made (they wait for a node: the manager has no agent).
    let deadline = Instant::now() + Duration::from_secs(10);
    while cli.ok(&["service", "ps", "-q", "web"]).lines().count() < 3 {
        assert!(Instant::now() < deadline, "web's 3 tasks within 10s");
        std::thread::sleep(Duration::from_millis(100));
    }
    cli.ok(&["service", "scale", "--detach", "web=5"]);
    cli.ok(&["service", "rm", "web"]);
    let expected = [
        "service create (name=web)".to_owned(),
        "service update (name=web, replicas.new=5, replicas.old=3)".to_owned(),
        "service remove (name=web)".to_owned(),
    ];
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let line = lines.recv_timeout(Duration::from_secs(10)).expect("the next event within 10s");
        assert!(line.starts_with("20") && line.contains(&format!(" {id} ")), "time first, then the ID: {line}");
        // The orchestrator and allocator may update the service in between (its endpoint).
        let shape = shape(&line);
        if shape.starts_with("service update") && !shape.contains("replicas") {
            continue;
        }
        seen.push(shape);
    }
    assert_eq!(seen, expected);

    // Since replays, until ends the stream, a filter drops the others.
    let replay = cli.ok(&["events", "--since", "10m", "--until", "0s", "--filter", "name=web"]);
    let shapes: Vec<String> =
        replay.lines().map(shape).filter(|s| !s.starts_with("service update") || s.contains("replicas")).collect();
    assert_eq!(shapes, expected, "{replay}");
    let removes =
        cli.ok(&["events", "--since", "10m", "--until", "0s", "--filter", "event=remove", "--filter", "type=service"]);
    assert_eq!(removes.lines().map(shape).collect::<Vec<_>>(), ["service remove (name=web)"], "{removes}");
    // Tasks have events too: web's, created with their slot (3, and the scale's 2 if the
    // orchestrator made them before the service was removed).
    let tasks = cli.ok(&["events", "--since", "10m", "--until", "0s", "-f", "type=task", "-f", "event=create"]);
    for slot in 1..=3 {
        let task = format!("service=web, slot={slot})");
        assert_eq!(tasks.lines().filter(|l| l.ends_with(&task)).count(), 1, "{tasks}");
    }

    // --format '{{json .}}' prints docker's fields.
    let json = cli.ok(&[
        "events",
        "--since",
        "10m",
        "--until",
        "0s",
        "-f",
        "event=remove",
        "-f",
        "type=service",
        "--format",
        "{{json .}}",
    ]);
    let event: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON object");
    assert_eq!(
        (
            &event["Type"],
            &event["Action"],
            &event["Actor"]["ID"],
            &event["Actor"]["Attributes"]["name"],
            &event["scope"]
        ),
        (&"service".into(), &"remove".into(), &id.into(), &"web".into(), &"swarm".into())
    );
    assert!(event["timeNano"].as_u64().is_some_and(|n| n / 1_000_000_000 == event["time"].as_u64().unwrap_or(0)));

    let err = cli.fails(&["events", "--filter", "container=web"]);
    assert!(err.contains("invalid filter \"container\""), "{err}");

    manager.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

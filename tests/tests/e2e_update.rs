//! The service lifecycle end to end (SCENARIOS.md 8–10, 14) on 3 managers and 1 worker, real
//! containerd, driven by the `shoal` CLI: a start-first rolling update v1 → v2 during which a
//! request loop through the routing mesh sees only v1 and v2 answers and never an error, a
//! rollback, an update to a crashing image that rolls back by itself, a health check that starts
//! failing and gets its task replaced, the leader killed mid-update and the update completed by
//! the next one, and `service logs -f` following while a task is killed and replaced.

#![allow(clippy::print_stderr)]

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_testkit::{Cluster, Node, images};
use support::{env, get, ok, until, wait_for};

/// Requests through the routing mesh, on every node in turn, until stopped: what each answered.
struct Load {
    stop: Arc<AtomicBool>,
    /// How many requests have been made so far (answered or failed).
    made: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<Result<String, String>>>,
}

impl Load {
    fn start(cluster: &Cluster, nodes: &[Node]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let made = Arc::new(AtomicUsize::new(0));
        let underlay = cluster.underlay_netns().to_owned();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr.to_string()).collect();
        let (stopped, counter) = (stop.clone(), made.clone());
        let thread = std::thread::spawn(move || {
            let mut answers = Vec::new();
            for addr in addrs.iter().cycle() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                answers.push(get(&underlay, addr, "/"));
                counter.fetch_add(1, Ordering::Relaxed);
            }
            answers
        });
        Self { stop, made, thread }
    }

    /// Waits until a request has gone through every node (answered or not), so that what
    /// comes next happens under load.
    fn until_going(&self, nodes: usize) {
        wait_for("a request through every node", 20, || self.made.load(Ordering::Relaxed) >= nodes);
    }

    fn stop(self) -> Vec<Result<String, String>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("load thread")
    }
}

/// The images (by tag) of the web tasks that run and are meant to, from `service ps`.
fn running_versions(ps: &str) -> BTreeMap<String, usize> {
    let mut versions = BTreeMap::new();
    for row in ps.lines().skip(1).filter(|l| !l.contains(r"\_")) {
        let cells: Vec<&str> = row.split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
        if cells.get(4) == Some(&"Running") && cells.get(5).is_some_and(|c| c.starts_with("Running")) {
            let tag = cells.get(2).and_then(|image| image.rsplit(':').next()).unwrap_or_default();
            *versions.entry(tag.to_owned()).or_insert(0) += 1;
        }
    }
    versions
}

fn update_state(shoal: &shoal_testkit::shoal::Cli, service: &str) -> String {
    let (ran, out, _) = shoal.run(&["service", "inspect", service]).expect("run shoal");
    if !ran {
        return String::new();
    }
    let inspect: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    inspect["UpdateStatus"]["State"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn service_lifecycle() {
    let Some(env) = env("e2e service_lifecycle", 4) else { return };
    let nodes: Vec<Node> = (1..=4).map(|i| env.cluster.node(i).expect("node").clone()).collect();
    let (m1, m2, m3, w1) = (&nodes[0], &nodes[1], &nodes[2], &nodes[3]);
    let sc = env.shoal();

    eprintln!("--- 3 managers and 1 worker");
    let (mut m1_process, worker_token) = sc.init(m1).expect("init");
    let shoal = sc.cli(m1, m1);
    let manager_token = ok(&shoal, &["join-token", "manager", "-q"]).trim().to_owned();
    let mut processes = Vec::new();
    for m in [m2, m3] {
        processes.push(sc.join_manager(m, &manager_token, m1).expect("join manager"));
        until(&shoal, &format!("{} Ready", m.name), 30, &["node", "ls"], |out| {
            out.lines().any(|l| l.contains(&format!(" {} ", m.name)) && l.contains(" Ready "))
        });
    }
    processes.push(sc.join_worker(w1, &worker_token, m1).expect("join w1"));
    until(&shoal, "4 Ready", 30, &["node", "ls"], |out| out.matches(" Ready ").count() == 4);

    let registry = &env.registry_addr;
    let image = |name: &str| format!("{registry}/shoal-test/{name}");
    eprintln!("--- web: 4 replicas of v1 on 8080, start-first updates 2 at a time");
    let created = ok(
        &shoal,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "4",
            "-p",
            "8080:80",
            "--update-parallelism",
            "2",
            "--update-order",
            "start-first",
            "--update-monitor",
            "2s",
            &image("web:v1"),
        ],
    );
    assert!(created.contains("verify: Service converged"), "{created}");
    for node in &nodes {
        wait_for(&format!("{}:8080 answers", node.addr), 20, || {
            get(env.cluster.underlay_netns(), &node.addr.to_string(), "/").is_ok()
        });
    }

    eprintln!("--- service update --image web:v2 under load: only v1 and v2 answer, never an error");
    let load = Load::start(&env.cluster, &nodes);
    load.until_going(nodes.len());
    let updated = ok(&shoal, &["service", "update", "--image", &image("web:v2"), "web"]);
    assert!(updated.contains("verify: Service converged"), "{updated}");
    let answers = load.stop();
    let errors: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    let versions: BTreeMap<&str, usize> =
        answers.iter().filter_map(|a| a.as_ref().ok()).fold(BTreeMap::new(), |mut counts, body| {
            *counts.entry(body.split_whitespace().next().unwrap_or_default()).or_insert(0) += 1;
            counts
        });
    eprintln!("    {} requests during the update: {versions:?}, {} errors", answers.len(), errors.len());
    assert!(errors.is_empty(), "requests failed during a start-first update: {errors:?}");
    assert!(versions.keys().all(|v| *v == "v1" || *v == "v2"), "{versions:?}");
    assert!(answers.len() >= 10, "the load ran: {} requests", answers.len());
    for node in &nodes {
        let answer = get(env.cluster.underlay_netns(), &node.addr.to_string(), "/");
        assert!(answer.as_deref().is_ok_and(|a| a.starts_with("v2 ")), "{}: {answer:?}", node.name);
    }
    let ps = ok(&shoal, &["service", "ps", "web"]);
    assert_eq!(running_versions(&ps), BTreeMap::from([("v2".to_owned(), 4)]), "{ps}");
    let inspect: serde_json::Value = serde_json::from_str(&ok(&shoal, &["service", "inspect", "web"])).expect("json");
    assert_eq!(inspect["UpdateStatus"]["State"], "completed", "{inspect}");

    eprintln!("--- service rollback web: v1 again");
    let rolled = ok(&shoal, &["service", "rollback", "web"]);
    assert!(rolled.contains("rollback: manually requested rollback"), "{rolled}");
    assert!(rolled.contains("verify: Service converged"), "{rolled}");
    for node in &nodes {
        let answer = get(env.cluster.underlay_netns(), &node.addr.to_string(), "/");
        assert!(answer.as_deref().is_ok_and(|a| a.starts_with("v1 ")), "{}: {answer:?}", node.name);
    }

    eprintln!("--- an update to the crasher with --update-failure-action rollback rolls back by itself");
    let (updated, out, err) = shoal
        .run(&[
            "service",
            "update",
            "--image",
            &image("crasher:latest"),
            "--update-failure-action",
            "rollback",
            "--update-monitor",
            "3s",
            "web",
        ])
        .expect("run shoal");
    assert!(!updated, "an update that rolled back fails the command:\n{out}\n{err}");
    let said = format!("{out}{err}");
    assert!(said.contains("rollback: update rolled back due to failure or early termination of task"), "{said}");
    until(&shoal, "web back on v1", 60, &["service", "ps", "web"], |ps| {
        running_versions(ps) == BTreeMap::from([("v1".to_owned(), 4)])
    });
    assert_eq!(update_state(&shoal, "web"), "rollback_completed");

    eprintln!("--- a health check that starts failing replaces the task");
    ok(&shoal, &["service", "create", "--name", "hc", "--constraint", "node.hostname==node4", &image("health:latest")]);
    let ps = until(&shoal, "hc running", 30, &["service", "ps", "--no-trunc", "hc"], |ps| {
        running_versions(ps).values().sum::<usize>() == 1
    });
    let task_id = ps
        .lines()
        .skip(1)
        .find(|l| l.contains("Running"))
        .and_then(|l| l.split_whitespace().next())
        .expect("hc's task")
        .to_owned();
    let ns = sc.containerd_namespace(w1);
    let mut ctr = env.containerd.ctr();
    ctr.args(["--namespace", &ns, "tasks", "exec", "--exec-id", "sicken", &task_id, images::BUSYBOX]);
    let sickened = ctr.args(["touch", "/tmp/unhealthy"]).status().expect("ctr exec");
    assert!(sickened.success());
    let ps = until(&shoal, "the unhealthy task replaced", 60, &["service", "ps", "hc"], |ps| {
        ps.contains("task: unhealthy container") && running_versions(ps).values().sum::<usize>() == 1
    });
    eprintln!("{ps}");

    eprintln!("--- service logs -f keeps following while a task is killed and replaced");
    ok(
        &shoal,
        &[
            "service",
            "create",
            "--name",
            "talker",
            "--replicas",
            "2",
            "--entrypoint",
            "sh",
            &image("tools:latest"),
            "-c",
            "while true; do echo tick from $(hostname); sleep 0.3; done",
        ],
    );
    let mut follow = shoal.command(&["service", "logs", "-f", "--no-trunc", "talker"]);
    let mut child =
        follow.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().expect("logs -f");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines.lock().expect("lines").push(line);
            }
        })
    };
    let prefix_of = |line: &str| line.split('|').next().unwrap_or_default().trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen: std::collections::BTreeSet<String> =
            lines.lock().expect("lines").iter().map(|l| prefix_of(l)).collect();
        if seen.len() >= 2 {
            break;
        }
        if Instant::now() > deadline {
            let (_, logs, err) = shoal.run(&["service", "logs", "talker"]).expect("run shoal");
            let ps = ok(&shoal, &["service", "ps", "talker"]);
            panic!("lines from both talker tasks: not within 30 s; -f gave {seen:?}\n{ps}\nlogs:\n{logs}\n{err}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ps = ok(&shoal, &["service", "ps", "--no-trunc", "talker"]);
    let before_kill: Vec<String> =
        ps.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(str::to_owned).collect();
    let victim = ps
        .lines()
        .skip(1)
        .find(|l| l.contains("Running"))
        .and_then(|l| l.split_whitespace().next())
        .expect("a talker task");
    let victim_node = ps
        .lines()
        .find(|l| l.starts_with(victim))
        .map(|l| l.split_whitespace().nth(3).unwrap_or_default().to_owned())
        .expect("its node");
    let node = nodes.iter().find(|n| n.name == victim_node).expect("victim's node");
    let killed = env
        .containerd
        .ctr()
        .args(["--namespace", &sc.containerd_namespace(node), "tasks", "kill", "--signal", "SIGKILL", victim])
        .status()
        .expect("kill");
    assert!(killed.success());
    let ps = until(&shoal, "talker replaced", 60, &["service", "ps", "--no-trunc", "talker"], |ps| {
        ps.contains("task: non-zero exit (137)") && running_versions(ps).values().sum::<usize>() == 2
    });
    let replacement = ps
        .lines()
        .skip(1)
        .filter(|l| l.contains("Running") && !l.contains(r"\_"))
        .filter_map(|l| l.split_whitespace().next())
        .find(|id| *id != victim && !before_kill.iter().any(|b| b == id))
        .map(str::to_owned)
        .expect("the replacement task");
    let started = Instant::now();
    wait_for("lines from the replacement task through the same logs -f", 30, || {
        let from_replacement = lines.lock().expect("lines").iter().any(|l| prefix_of(l).contains(&replacement));
        from_replacement && child.try_wait().ok().flatten().is_none()
    });
    eprintln!("    lines from the replacement {replacement} after {:?}", started.elapsed());
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();

    eprintln!("--- the leader is lost mid-update: the next leader completes it");
    ok(
        &shoal,
        &[
            "service",
            "update",
            "--detach",
            "--image",
            &image("web:v2"),
            "--update-parallelism",
            "1",
            "--update-delay",
            "2s",
            "--update-order",
            "stop-first",
            "--update-failure-action",
            "pause",
            "web",
        ],
    );
    until(&shoal, "one slot on v2", 60, &["service", "ps", "web"], |ps| running_versions(ps).contains_key("v2"));
    m1_process.kill().expect("kill m1");
    let via_m2 = sc.cli(m2, m1);
    until(&via_m2, "the update completed by the next leader", 120, &["service", "inspect", "web"], |out| {
        serde_json::from_str::<serde_json::Value>(out).is_ok_and(|v| v["UpdateStatus"]["State"] == "completed")
    });
    let ps = until(&via_m2, "4 tasks of v2", 60, &["service", "ps", "web"], |ps| {
        running_versions(ps) == BTreeMap::from([("v2".to_owned(), 4)])
    });
    eprintln!("{ps}");
    drop(processes);
}

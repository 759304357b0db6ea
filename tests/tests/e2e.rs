//! End to end on real containers: managers and workers as separate processes in their own
//! network namespaces, running tasks on containerd with images pulled from the test registry,
//! driven by the `shoal` CLI. Three managers and three workers: placement, drain, global
//! services, a worker's link cut, the leader's process killed, an agent restarted, a manager
//! restarted, demote and promote of the leader, the leader's link cut with its process alive,
//! a removed worker locked out by every manager, the loss of two managers recovered with
//! `--force-new-cluster`, and an autolocked manager restarted and unlocked; then a manager and a worker:
//! containers, exits, rejected images, a root CA rotation under the running tasks, a killed agent, a
//! backup restored into a wiped data directory.
//!
//! The binaries come from `SHOAL_BIN_DIR` (default: the `debug` directory this test runs from); `cargo xtask
//! test` builds them before the suite runs.

// Tests narrate their steps on stderr, which nextest shows when one fails.
#![allow(clippy::print_stderr)]

mod support;

use std::time::Instant;

use shoal_testkit::Node;
use support::{current_state, env, ok, running_per_node, until, wait_for};

#[test]
fn three_managers_two_workers() {
    let Some(env) = env("e2e three_managers_two_workers", 6) else { return };
    let nodes: Vec<Node> = (1..=6).map(|i| env.cluster.node(i).expect("node").clone()).collect();
    let (m1, m2, m3, w1, w2, w3) = (&nodes[0], &nodes[1], &nodes[2], &nodes[3], &nodes[4], &nodes[5]);

    eprintln!("--- m1 inits; m2 and m3 join as managers; w1 and w2 as workers");
    let sc = env.shoal();
    let (mut m1_process, worker_token) = sc.init(m1).expect("init");
    let shoal = sc.cli(m1, m1);
    let manager_token = ok(&shoal, &["join-token", "manager", "-q"]).trim().to_owned();
    let mut managers = Vec::new();
    for m in [m2, m3] {
        managers.push(sc.join_manager(m, &manager_token, m1).expect("join manager"));
        until(&shoal, &format!("{} Ready", m.name), 30, &["node", "ls"], |out| {
            out.lines().any(|l| l.contains(&format!(" {} ", m.name)) && l.contains(" Ready "))
        });
    }
    let mut workers = Vec::new();
    for w in [w1, w2] {
        workers.push(sc.join_worker(w, &worker_token, m1).expect("join worker"));
    }
    let nodes_out = until(&shoal, "5 Ready, 1 Leader, 2 Reachable", 30, &["node", "ls"], |out| {
        out.matches(" Ready ").count() == 5
            && out.matches("Leader").count() == 1
            && out.matches("Reachable").count() == 2
    });
    eprintln!("{nodes_out}");

    eprintln!("--- 10 sleepers spread 2 per node");
    let image = format!("{}/shoal-test/sleeper:latest", env.registry_addr);
    ok(
        &shoal,
        &["service", "create", "--name", "sleep", "--replicas", "10", "--restart-delay", "1s", "--detach", &image],
    );
    let ps = until(&shoal, "10/10", 90, &["service", "ps", "sleep"], |out| {
        running_per_node(out).values().sum::<usize>() == 10
    });
    assert!(running_per_node(&ps).values().all(|n| *n == 2), "{ps}");

    eprintln!("--- drain w1: its tasks move");
    ok(&shoal, &["node", "update", "--availability", "drain", &w1.name]);
    until(&shoal, "nothing on w1, 10 running", 60, &["service", "ps", "sleep"], |out| {
        let counts = running_per_node(out);
        counts.values().sum::<usize>() == 10 && !counts.contains_key(&w1.name)
    });
    ok(&shoal, &["node", "update", "--availability", "active", &w1.name]);

    eprintln!("--- a global service runs on every node, including w3 joining later");
    ok(&shoal, &["service", "create", "--name", "everywhere", "--mode", "global", "--detach", &image]);
    // Exactly one per node: every node has one, and the table has no second one anywhere.
    let one_each = |nodes: usize| {
        move |out: &str| {
            let per_node = running_per_node(out);
            per_node.len() == nodes && per_node.values().all(|n| *n == 1)
        }
    };
    until(&shoal, "one global task on each of 5 nodes", 60, &["service", "ps", "everywhere"], one_each(5));
    workers.push(sc.join_worker(w3, &worker_token, m1).expect("join worker"));
    until(&shoal, "one global task on each of 6 nodes", 60, &["service", "ps", "everywhere"], one_each(6));

    eprintln!("--- cut w2's link: Down, its tasks run elsewhere; back: its stale containers are stopped");
    env.cluster.link_down(w2).expect("link down");
    let w2_row = format!(" {} ", w2.name);
    until(&shoal, "w2 Down", 15, &["node", "ls"], |out| {
        out.lines().any(|l| l.contains(&w2_row) && l.contains(" Down "))
    });
    until(&shoal, "10 sleepers without w2", 60, &["service", "ps", "sleep"], |out| {
        let counts = running_per_node(out);
        counts.values().sum::<usize>() == 10 && !counts.contains_key(&w2.name)
    });
    env.cluster.link_up(w2).expect("link up");
    until(&shoal, "w2 Ready again", 30, &["node", "ls"], |out| {
        out.lines().any(|l| l.contains(&w2_row) && l.contains(" Ready "))
    });
    let ns = format!("{}-{}", env.cluster.prefix(), w2.name);
    wait_for("w2 runs only its global task", 30, || {
        let out = env.containerd.ctr().args(["--namespace", &ns, "tasks", "list"]).output().expect("ctr");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("RUNNING")).count() == 1
    });

    eprintln!("--- kill the leader's process: another leads, the CLI keeps working on m2");
    m1_process.kill().expect("kill m1");
    let via_m2 = sc.cli(m2, m1);
    let m1_row = format!(" {} ", m1.name);
    let nodes_out = until(&via_m2, "a new leader", 30, &["node", "ls"], |out| {
        out.lines().any(|l| l.contains("Leader") && !l.contains(&m1_row))
            && out.lines().any(|l| l.contains(&m1_row) && l.contains("Unreachable"))
    });
    eprintln!("{nodes_out}");
    ok(&via_m2, &["service", "scale", "--detach", "sleep=8"]);
    until(&via_m2, "8 sleepers", 60, &["service", "ps", "sleep"], |out| {
        running_per_node(out).values().sum::<usize>() == 8
    });

    eprintln!("--- restart w1's agent while m1, which it joined through, is down: it finds the others it saved");
    workers[0].kill().expect("kill w1's agent");
    let started = Instant::now();
    let w1_row = format!(" {} ", w1.name);
    until(&via_m2, "w1 Down, its global task stopped", 15, &["service", "ps", "everywhere"], |out| {
        !running_per_node(out).contains_key(&w1.name)
    });
    let args: Vec<String> = std::iter::once("run".to_owned()).chain(sc.node_flags(w1)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let agent = env.bins.join("shoal-agent");
    workers[0] = env.cluster.spawn(w1, "shoal-agent-run", &agent.to_string_lossy(), &args).expect("restart w1");
    until(&via_m2, "w1 Ready again", 30, &["node", "ls"], |out| {
        out.lines().any(|l| l.contains(&w1_row) && l.contains(" Ready "))
    });
    until(&via_m2, "a new global task running on w1", 30, &["service", "ps", "everywhere"], |out| {
        running_per_node(out).contains_key(&w1.name)
    });
    eprintln!("    w1 runs tasks again {:?} after its agent was killed", started.elapsed());

    eprintln!("--- restart m1 from its data dir: Reachable again, no re-join");
    let m1_again = sc.restart_manager(m1).expect("restart m1");
    until(&via_m2, "m1 Reachable", 30, &["node", "ls"], |out| {
        out.lines().any(|l| l.contains(&m1_row) && l.contains(" Ready ") && l.contains("Reachable"))
    });

    eprintln!("--- demote the leader: it hands over, leaves Raft and runs on as a worker; promote it back");
    let out = ok(&via_m2, &["node", "ls"]);
    let leader = [m1, m2, m3]
        .into_iter()
        .find(|m| out.lines().any(|l| l.contains(&format!(" {} ", m.name)) && l.contains("Leader")))
        .expect("a leader among the managers");
    // The CLI talks to another manager, which stays one throughout.
    let other = if leader.name == m2.name { m3 } else { m2 };
    let via_other = sc.cli(other, m1);
    let row = format!(" {} ", leader.name);
    let line = |out: &str| out.lines().find(|l| l.contains(&row)).map(str::to_owned).unwrap_or_default();
    let demoted = ok(&via_other, &["node", "demote", &leader.name]);
    assert!(demoted.contains("demoted"), "{demoted}");
    until(&via_other, "the old leader a Ready worker", 30, &["node", "ls"], |out| {
        let line = line(out);
        line.contains(" Ready ") && !line.contains("Reachable") && !line.contains("Leader")
    });
    ok(&via_other, &["node", "promote", &leader.name]);
    let nodes_out = until(&via_other, "the old leader Reachable again", 60, &["node", "ls"], |out| {
        let line = line(out);
        line.contains(" Ready ") && (line.contains("Reachable") || line.contains("Leader"))
    });
    eprintln!("{nodes_out}");
    let (refused, _, err) = via_other.run(&["node", "promote", &w1.name]).expect("run shoal");
    assert!(!refused && err.contains("runs shoal-agent, which cannot run a manager"), "{err}");

    eprintln!(
        "--- cut the leader's link, its process alive: a new leader, the nodes follow it, the old one serves nothing"
    );
    let out = ok(&via_other, &["node", "ls"]);
    let leader = [m1, m2, m3]
        .into_iter()
        .find(|m| out.lines().any(|l| l.contains(&format!(" {} ", m.name)) && l.contains("Leader")))
        .expect("a leader among the managers");
    let other = if leader.name == m2.name { m3 } else { m2 };
    let via_other = sc.cli(other, m1);
    let row = format!(" {} ", leader.name);
    let started = Instant::now();
    env.cluster.link_down(leader).expect("cut the leader's link");
    until(&via_other, "a new leader, the old one Unreachable and Down", 60, &["node", "ls"], |out| {
        out.lines().any(|l| l.contains("Leader") && !l.contains(&row))
            && out.lines().any(|l| l.contains(&row) && l.contains("Unreachable") && l.contains(" Down "))
    });
    eprintln!("    new leader {:?} after the cut", started.elapsed());
    ok(&via_other, &["service", "scale", "--detach", "sleep=6"]);
    until(&via_other, "6 sleepers, none on the cut-off node", 60, &["service", "ps", "sleep"], |out| {
        let counts = running_per_node(out);
        counts.values().sum::<usize>() == 6 && !counts.contains_key(&leader.name)
    });
    // From its own side of the cut, the old leader answers nothing: no read without a quorum.
    let via_old = sc.cli(leader, m1);
    let (answered, out, err) = via_old.run(&["service", "ls"]).expect("run shoal");
    assert!(!answered, "the cut-off leader answered service ls:\n{out}");
    assert!(err.contains("quorum"), "the refusal says why: {err}");
    env.cluster.link_up(leader).expect("restore the link");
    until(&via_other, "the old leader back as a Reachable follower", 60, &["node", "ls"], |out| {
        out.lines().any(|l| l.contains(&row) && l.contains(" Ready ") && l.contains("Reachable"))
            && out.lines().any(|l| l.contains("Leader") && !l.contains(&row))
    });
    let (answered, out, err) = via_old.run(&["service", "ls"]).expect("run shoal");
    assert!(answered && out.contains("sleep"), "the old leader serves again once it follows: {err}");

    eprintln!(
        "--- remove w2 while it runs: its agent, restarted with its old certificate, is refused by every manager"
    );
    ok(&via_other, &["node", "rm", "--force", &w2.name]);
    until(&via_other, "w2 gone from the node list", 15, &["node", "ls"], |out| !out.contains(&w2_row));
    workers[1].kill().expect("stop w2's agent");
    let args: Vec<String> = std::iter::once("run".to_owned()).chain(sc.node_flags(w2)).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let w2_again = env.cluster.spawn(w2, "shoal-agent-removed", &agent.to_string_lossy(), &args).expect("restart w2");
    let refused_by = |m: &Node| {
        let log = std::fs::read_to_string(w2_again.log()).unwrap_or_default();
        let manager = format!("{}:2377", m.addr);
        log.lines().any(|l| l.contains("it was removed from the cluster") && l.contains(&manager))
    };
    wait_for("each of the three managers refused w2's old certificate", 60, || {
        [m1, m2, m3].into_iter().all(refused_by)
    });
    let out = ok(&via_other, &["node", "ls"]);
    assert!(!out.contains(&w2_row), "a removed node came back:\n{out}");
    let ps = ok(&via_other, &["service", "ps", "everywhere"]);
    assert!(!running_per_node(&ps).contains_key(&w2.name), "a task runs on the removed node:\n{ps}");
    drop(w2_again);

    eprintln!("--- m2 and m3 lost for good: no quorum, and the error names the way out");
    for manager in &mut managers {
        manager.kill().expect("kill a manager");
    }
    let via_m1 = sc.cli(m1, m1);
    wait_for("m1 refuses for want of a quorum", 60, || {
        let (answered, _, err) = via_m1.run(&["service", "ls"]).expect("run shoal");
        !answered && err.contains("shoal-manager run --force-new-cluster")
    });

    eprintln!("--- m1 restarted with --force-new-cluster: the only manager, every service kept");
    let mut m1_again = m1_again;
    m1_again.kill().expect("stop m1");
    let m1_forced = sc.restart_manager_with(m1, &["--force-new-cluster"]).expect("force a new cluster");
    until(&via_m1, "m1 leads alone", 60, &["node", "ls"], |out| {
        out.lines().any(|l| l.contains(&format!(" {} ", m1.name)) && l.contains("Leader"))
    });
    let services = ok(&via_m1, &["service", "ls"]);
    assert!(services.contains("sleep") && services.contains("everywhere"), "{services}");
    until(&via_m1, "6 sleepers on the nodes left", 90, &["service", "ps", "sleep"], |out| {
        let counts = running_per_node(out);
        counts.values().sum::<usize>() == 6 && !counts.contains_key(&m2.name) && !counts.contains_key(&m3.name)
    });

    eprintln!("--- the lost managers removed, then m2 and m3 join again from empty data directories");
    for m in [m2, m3] {
        ok(&via_m1, &["node", "demote", &m.name]);
        until(&via_m1, &format!("{} demoted", m.name), 30, &["node", "ls"], |out| {
            out.lines()
                .any(|l| l.contains(&format!(" {} ", m.name)) && !l.contains("Reachable") && !l.contains("Unreachable"))
        });
        ok(&via_m1, &["node", "rm", "--force", &m.name]);
        std::fs::remove_dir_all(sc.data_dir(m)).expect("empty the data directory");
    }
    let manager_token = ok(&via_m1, &["join-token", "manager", "-q"]).trim().to_owned();
    let managers: Vec<_> =
        [m2, m3].into_iter().map(|m| sc.join_manager(m, &manager_token, m1).expect("join again")).collect();
    let nodes_out = until(&via_m1, "three managers again: 1 Leader, 2 Reachable", 60, &["node", "ls"], |out| {
        out.matches("Leader").count() == 1 && out.matches(" Reachable").count() == 2
    });
    eprintln!("{nodes_out}");
    ok(&via_m1, &["service", "scale", "--detach", "sleep=8"]);
    until(&via_m1, "8 sleepers in the rebuilt cluster", 90, &["service", "ps", "sleep"], |out| {
        running_per_node(out).values().sum::<usize>() == 8
    });

    eprintln!("--- autolock: a restarted manager serves nothing until `shoal cluster unlock` gives it the key");
    let updated = ok(&via_m1, &["cluster", "update", "--autolock=true"]);
    assert!(updated.contains("shoal cluster unlock") && updated.contains("SHKEY-1-"), "{updated}");
    let key = ok(&via_m1, &["cluster", "unlock-key", "-q"]).trim().to_owned();
    assert!(updated.contains(&key), "the key printed is the cluster's:\n{updated}");
    let m2_key = sc.data_dir(m2).join("certs").join("node.key");
    wait_for("m2 encrypts its keys at rest", 30, || {
        std::fs::read_to_string(&m2_key).is_ok_and(|k| k.starts_with("shoal-encrypted-key-v1"))
    });
    let mut managers = managers;
    managers[0].kill().expect("stop m2");
    let m2_again = sc.restart_manager(m2).expect("restart m2");
    let via_m2 = sc.cli(m2, m1);
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (answered, out, err) = via_m2.run(&["node", "ls"]).expect("run shoal");
        if !answered && err.contains("is locked") && err.contains("shoal cluster unlock") {
            break;
        }
        let log = std::fs::read_to_string(m2_again.log()).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "m2 answers that it is locked: not within 60 s; last: {out}{err}\nm2's log:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let wrong = format!("SHKEY-1-{}", "0".repeat(50));
    let (unlocked, _, err) = via_m2.run_with_input(&["cluster", "unlock"], &wrong).expect("run shoal");
    assert!(!unlocked && err.contains("not the unlock key") && err.contains("refused 1 time"), "{err}");
    let (unlocked, out, err) = via_m2.run_with_input(&["cluster", "unlock"], &key).expect("run shoal");
    assert!(unlocked && out.contains("unlocked"), "{out}{err}");
    until(&via_m2, "m2 serves again and rejoins: 1 Leader, 2 Reachable", 60, &["node", "ls"], |out| {
        out.matches("Leader").count() == 1 && out.matches(" Reachable").count() == 2
    });
    drop(m2_again);
    drop(m1_forced);
    drop(managers);
    drop(workers);
}

#[test]
fn manager_and_worker_run_containers() {
    let Some(env) = env("e2e manager_and_worker_run_containers", 2) else { return };
    let (m1, w1) = (env.cluster.node(1).expect("node1").clone(), env.cluster.node(2).expect("node2").clone());
    let (cluster, containerd, registry_addr) = (&env.cluster, &env.containerd, &env.registry_addr);
    let sc = env.shoal();

    eprintln!("--- shoal-manager init on node1");
    let (manager, token) = sc.init(&m1).expect("init");
    let shoal = sc.cli(&m1, &m1);

    eprintln!("--- shoal-agent join on node2");
    let mut agent = sc.join_worker(&w1, &token, &m1).expect("agent");
    let nodes = until(&shoal, "two Ready nodes", 30, &["node", "ls"], |out| out.matches(" Ready ").count() == 2);
    assert!(nodes.contains("Leader"), "{nodes}");

    eprintln!("--- 4 sleepers from the registry: 2 per node, all running");
    let image = format!("{registry_addr}/shoal-test/sleeper:latest");
    // Not detached: the CLI follows the tasks to RUNNING with docker's progress lines.
    let created =
        ok(&shoal, &["service", "create", "--name", "sleep", "--replicas", "4", "--restart-delay", "1s", &image]);
    let full = format!("running   [{}>]", "=".repeat(50));
    assert!(created.contains("overall progress: 4 out of 4 tasks"), "{created}");
    assert!((1..=4).all(|slot| created.contains(&format!("{slot}/4: {full}"))), "{created}");
    assert!(created.trim_end().ends_with("verify: Service converged"), "{created}");
    until(&shoal, "4/4 running", 60, &["service", "ls"], |out| out.contains("4/4"));
    let ps = ok(&shoal, &["service", "ps", "sleep"]);
    assert_eq!(ps.matches(" node1 ").count(), 2, "{ps}");
    assert_eq!(ps.matches(" node2 ").count(), 2, "{ps}");

    eprintln!("--- kill a container by hand: replaced, and ps shows the exit code");
    let on_node2 = ps.lines().find(|l| l.contains(" node2 ")).expect("a task on node2");
    let short_id = on_node2.split_whitespace().next().expect("task id");
    let ns = format!("{}-{}", cluster.prefix(), w1.name);
    let listed = containerd.ctr().args(["--namespace", &ns, "containers", "list", "-q"]).output().expect("ctr");
    let task_id = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .find(|id| id.starts_with(short_id))
        .expect("its container")
        .to_owned();
    let killed = containerd
        .ctr()
        .args(["--namespace", &ns, "tasks", "kill", "--signal", "SIGKILL", &task_id])
        .status()
        .expect("kill");
    assert!(killed.success());
    let ps = until(&shoal, "a replacement and the failed task in history", 30, &["service", "ps", "sleep"], |out| {
        let current_running =
            out.lines().filter(|l| !l.contains(r"\_") && current_state(l).starts_with("Running")).count();
        out.contains("task: non-zero exit (137)") && current_running == 4
    });
    let history = ps.lines().find(|l| l.contains("task: non-zero exit (137)")).expect("the failed task");
    assert!(history.contains(r"\_ sleep.") && history.contains("Shutdown") && history.contains("Failed"), "{ps}");

    eprintln!("--- an image that does not exist is rejected with the reason");
    ok(
        &shoal,
        &["service", "create", "--name", "ghost", "--detach", &format!("{registry_addr}/shoal-test/nonexistent:1")],
    );
    until(&shoal, "a rejected task", 30, &["service", "ps", "ghost"], |out| {
        out.contains("Rejected") && out.contains("image not found")
    });

    eprintln!("--- rotate the root CA: both nodes move to the new root, no task restarts, the tokens change");
    let running_ids = |out: &str| -> Vec<String> {
        let mut ids: Vec<String> = out
            .lines()
            .filter(|l| !l.contains(r"\_") && current_state(l).starts_with("Running"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    };
    let before = running_ids(&ok(&shoal, &["service", "ps", "sleep"]));
    let rotation_began = Instant::now();
    let rotated = ok(&shoal, &["cluster", "ca", "--rotate"]);
    eprintln!("    rotated in {:?}:\n{rotated}", rotation_began.elapsed());
    assert!(rotated.contains("rotated TLS certificates:") && rotated.contains("] 2/2 nodes"), "{rotated}");
    assert!(rotated.trim_end().ends_with("-----END CERTIFICATE-----"), "{rotated}");
    assert_eq!(running_ids(&ok(&shoal, &["service", "ps", "sleep"])), before, "no task restarted");
    let nodes = ok(&shoal, &["node", "ls"]);
    assert_eq!(nodes.matches(" Ready ").count(), 2, "{nodes}");
    assert_ne!(ok(&shoal, &["join-token", "worker", "-q"]).trim(), token, "the token pins the new root");
    let squeezed = |pem: &str| pem.split_whitespace().collect::<String>();
    let new_root = ok(&shoal, &["cluster", "ca"]);
    let worker_roots =
        std::fs::read_to_string(sc.data_dir(&w1).join("certs").join("root-ca.crt")).expect("the worker's roots");
    assert_eq!(squeezed(&worker_roots), squeezed(&new_root), "the worker trusts the new root alone");

    eprintln!("--- kill -9 the worker's agent: Down within seconds, its tasks run on node1");
    agent.kill().expect("kill agent");
    let started = Instant::now();
    until(&shoal, "node2 Down", 15, &["node", "ls"], |out| {
        out.lines().any(|l| l.contains("node2") && l.contains(" Down "))
    });
    until(&shoal, "4 running on node1", 30, &["service", "ps", "sleep"], |out| {
        out.lines()
            .filter(|l| l.contains(" node1 ") && current_state(l).starts_with("Running") && !l.contains(r"\_"))
            .count()
            == 4
    });
    eprintln!("    tasks running again on node1 {:?} after the agent was killed", started.elapsed());

    eprintln!("--- back up the running manager, wipe its data directory, restore: the services are kept");
    let backup = cluster.dir().join("cluster.backup");
    let (backed_up, out, err) = sc.backup_manager(&m1, &backup).expect("run shoal-manager backup");
    assert!(backed_up && out.contains("written to"), "{out}{err}");
    let mut manager = manager;
    manager.kill().expect("stop the manager");
    let data = sc.data_dir(&m1);
    std::fs::rename(&data, data.with_extension("wiped")).expect("move the data directory aside");
    let manager = sc.restore_manager(&m1, &backup).expect("restore");
    let services = until(&shoal, "the restored manager answers", 60, &["service", "ls"], |_| true);
    assert!(services.contains("sleep") && services.contains("ghost"), "{services}");
    until(&shoal, "4 sleepers running under the restored manager", 60, &["service", "ls"], |out| {
        out.lines().any(|l| l.contains("sleep") && l.contains("4/4"))
    });
    drop(manager);
}

//! The `shoal` binary against a manager started in the test (on loopback, with the admin bundle
//! `init` writes): output as docker prints it, errors as one line and a non-zero exit.

mod support;

use std::path::Path;

use support::{Cli, init_manager};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_like_commands_against_a_manager() {
    let (dir, addr, manager, outcome) = init_manager("cli").await;
    let cli = Cli { host: addr.to_string(), bundle: &outcome.admin_bundle };

    let nodes = cli.ok(&["node", "ls"]);
    assert!(nodes.starts_with("ID "), "{nodes}");
    assert!(nodes.contains(&format!("{} *", outcome.node_id)) && nodes.contains("Leader"), "{nodes}");
    assert_eq!(cli.ok(&["node", "ls", "-q"]).trim(), outcome.node_id);

    let id = cli.ok(&["service", "create", "--name", "web", "--replicas", "3", "--detach", "shoal-test/web:v1"]);
    assert_eq!(id.trim().len(), 25, "prints the new service's ID: {id}");
    let ls = cli.ok(&["service", "ls"]);
    let row = ls.lines().nth(1).expect("a row");
    assert!(
        row.contains("web") && row.contains("replicated") && row.contains("0/3") && row.contains("shoal-test/web:v1"),
        "{ls}"
    );
    let json: serde_json::Value = serde_json::from_str(&cli.ok(&["service", "ls", "--format", "json"])).expect("json");
    assert_eq!(json[0]["Spec"]["Mode"]["Replicated"]["Replicas"], 3);

    // No node runs tasks yet (the manager has no agent): each task waits with a reason.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let ps = loop {
        let ps = cli.ok(&["service", "ps", "web"]);
        if ps.matches("no suitable node").count() == 3 || std::time::Instant::now() > deadline {
            break ps;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(ps.lines().count(), 4, "{ps}");
    assert!(ps.lines().nth(1).is_some_and(|l| l.contains("web.1") && l.contains("Pending")), "{ps}");
    assert_eq!(ps.matches("no suitable node").count(), 3, "{ps}");

    assert_eq!(cli.ok(&["service", "scale", "--detach", "web=1"]).trim(), "web scaled to 1");
    let inspect: serde_json::Value = serde_json::from_str(&cli.ok(&["service", "inspect", "web"])).expect("json");
    assert_eq!(inspect["Spec"]["Mode"]["Replicated"]["Replicas"], 1);
    assert_eq!(inspect["SpecVersion"], 2);

    let token = cli.ok(&["join-token", "worker", "-q"]);
    assert_eq!(token.trim(), outcome.worker_token);
    let rotated = cli.ok(&["join-token", "--rotate", "worker"]);
    assert!(rotated.starts_with("Successfully rotated worker join token."), "{rotated}");
    assert!(!rotated.contains(&outcome.worker_token), "a new token");
    let manager_hint = cli.ok(&["join-token", "manager"]);
    assert!(
        manager_hint.contains(&format!("shoal-manager join --token {} {addr}", outcome.manager_token)),
        "{manager_hint}"
    );

    let label = cli.ok(&["node", "update", "--label-add", "zone=a", "--availability", "drain", &outcome.node_id]);
    assert_eq!(label.trim(), outcome.node_id);
    let node: serde_json::Value = serde_json::from_str(&cli.ok(&["node", "inspect", &outcome.node_id])).expect("json");
    assert_eq!(
        (node["Labels"]["zone"].as_str(), node["Availability"].as_str()),
        (Some("a"), Some("NODE_AVAILABILITY_DRAIN"))
    );

    assert!(
        cli.fails(&["service", "create", "--name", "web.1", "--detach", "x"])
            .starts_with("Error: invalid service name \"web.1\"")
    );
    assert!(cli.fails(&["service", "create", "--name", "web", "--detach", "x"]).contains("already in use"));
    assert!(cli.fails(&["node", "rm", &outcome.node_id]).contains("is a manager; demote it first"));
    assert!(cli.fails(&["service", "ps", "nope"]).contains("no such service: nope"));
    assert!(cli.fails(&["service", "scale", "web=many"]).contains("expected a whole number"));

    assert_eq!(cli.ok(&["service", "rm", "web"]).trim(), "web");
    assert_eq!(cli.ok(&["service", "ls", "-q"]).trim(), "");

    let wrong = Cli { host: cli.host.clone(), bundle: Path::new("/nonexistent/bundle") };
    assert!(wrong.fails(&["node", "ls"]).contains("cannot load the client bundle in /nonexistent/bundle"));
    manager.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_bundles_are_listed_rotated_and_revoked() {
    let (dir, addr, manager, outcome) = init_manager("admin").await;
    let cli = Cli { host: addr.to_string(), bundle: &outcome.admin_bundle };

    // The words of the row of certificate `id`.
    let row = |ls: &str, id: &str| -> Vec<String> {
        let line = ls.lines().find(|l| l.starts_with(id)).unwrap_or_default();
        line.split_whitespace().take(4).map(str::to_owned).collect()
    };
    let ls = cli.ok(&["cluster", "admin-cert", "ls"]);
    let first = cli.ok(&["cluster", "admin-cert", "ls", "-q"]).trim().to_owned();
    assert!(first.starts_with("admin-") && ls.starts_with("ID "), "{ls}");
    assert_eq!(row(&ls, &first), [first.as_str(), "*", "Active", "init"], "{ls}");
    let own = cli.fails(&["cluster", "admin-cert", "revoke", &first]);
    assert!(own.contains("revoking it locks you out") && own.contains("--force"), "{own}");

    // A copy of the bundle as it is now, for the one who kept it.
    let copy = dir.join("old-admin");
    std::fs::create_dir_all(&copy).expect("copy dir");
    for file in std::fs::read_dir(&outcome.admin_bundle).expect("bundle") {
        let file = file.expect("entry").path();
        std::fs::copy(&file, copy.join(file.file_name().expect("name"))).expect("copy");
    }

    let rotated = cli.ok(&["cluster", "admin-cert", "rotate"]);
    assert!(rotated.contains(&format!("{first} is revoked")), "{rotated}");
    let second = cli.ok(&["cluster", "admin-cert", "ls", "-q"]).trim().to_owned();
    assert!(second.starts_with("admin-") && second != first, "{second}");
    let ls = cli.ok(&["cluster", "admin-cert", "ls"]);
    assert_eq!(row(&ls, &second)[1..3], ["*", "Active"], "{ls}");
    assert_eq!(row(&ls, &first)[1], "Revoked", "{ls}");

    let old = Cli { host: cli.host.clone(), bundle: &copy };
    let refused = old.fails(&["node", "ls"]);
    let said = format!("the managers refuse the client bundle in {}: its certificate was revoked", copy.display());
    assert!(refused.contains(&said), "{refused}");
    manager.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_settings_are_shown_and_updated() {
    let (dir, addr, manager, outcome) = init_manager("cluster").await;
    let cli = Cli { host: addr.to_string(), bundle: &outcome.admin_bundle };
    let inspect = || -> serde_json::Value { serde_json::from_str(&cli.ok(&["cluster", "inspect"])).expect("json") };
    let json = inspect();
    let spec = &json["Spec"];
    assert_eq!(spec["Orchestration"]["TaskHistoryRetentionLimit"], 5);
    assert_eq!(spec["Dispatcher"]["HeartbeatPeriod"], 1_000_000_000_u64);
    assert_eq!(spec["CAConfig"]["NodeCertExpiry"], 90 * 86_400 * 1_000_000_000_u64);
    assert!(json["TLSInfo"]["TrustRoot"].as_str().is_some_and(|pem| pem.contains("BEGIN CERTIFICATE")), "{json}");
    assert!(json["JoinTokens"]["Worker"].as_str().is_some_and(|t| t.starts_with("SHTKN-")), "{json}");

    let refused = cli.fails(&["cluster", "update", "--cert-expiry", "30m"]);
    assert!(
        refused.contains("--cert-expiry 30m is out of range: certificates must last between 1h and 87600h"),
        "{refused}"
    );
    let refused = cli.fails(&["cluster", "update", "--snapshot-interval", "5"]);
    assert!(refused.contains("--snapshot-interval 5 is out of range: between 10 and 10000000"), "{refused}");
    assert_eq!(spec["Raft"]["SnapshotInterval"], 10_000);
    assert_eq!(spec["EncryptionConfig"]["NetworkKeyRotation"], 12 * 3600 * 1_000_000_000_u64, "Swarm's 12 h");
    let refused = cli.fails(&["cluster", "update", "--network-key-rotation", "5s"]);
    assert!(refused.contains("--network-key-rotation 5s is out of range: between 10s and 8760h"), "{refused}");
    let refused = cli.fails(&["cluster", "update"]);
    assert!(refused.contains("nothing to update"), "{refused}");
    assert_eq!(inspect()["Version"], json["Version"], "a refused update changes nothing");

    let out = cli.ok(&[
        "cluster",
        "update",
        "--cert-expiry",
        "720h",
        "--dispatcher-heartbeat",
        "2s",
        "--task-history-limit",
        "-1",
        "--snapshot-interval",
        "50",
        "--network-key-rotation",
        "90m",
    ]);
    assert_eq!(out, "Cluster updated.\n");
    // Each manager snapshots its own log at the new interval from its next look at the cluster.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while manager.objects().store().snapshot_interval() != 50 {
        assert!(std::time::Instant::now() < deadline, "the manager never took up the snapshot interval");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let spec = inspect()["Spec"].clone();
    assert_eq!(spec["CAConfig"]["NodeCertExpiry"], 720 * 3600 * 1_000_000_000_u64);
    assert_eq!(spec["Dispatcher"]["HeartbeatPeriod"], 2_000_000_000_u64);
    assert_eq!(spec["Orchestration"]["TaskHistoryRetentionLimit"], -1);
    let pretty = cli.ok(&["cluster", "inspect", "--pretty"]);
    assert_eq!(spec["Raft"]["SnapshotInterval"], 50);
    for line in [
        "Task History Retention Limit:\tunlimited",
        "Heartbeat Period:\t2s",
        "Expiry Duration:\t720h0m0s",
        "Snapshot Interval:\t50",
        "Network Key Rotation:\t1h30m0s",
    ] {
        assert!(pretty.contains(line), "{line:?} missing:\n{pretty}");
    }
    manager.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autolock_is_turned_on_shown_rotated_and_off() {
    let (dir, addr, manager, outcome) = init_manager("autolock").await;
    let cli = Cli { host: addr.to_string(), bundle: &outcome.admin_bundle };
    let refused = cli.fails(&["cluster", "unlock-key"]);
    assert!(refused.contains("autolock is off") && refused.contains("--autolock=true"), "{refused}");
    let refused = cli.fails(&["cluster", "unlock-key", "--rotate"]);
    assert!(refused.contains("no unlock key to rotate"), "{refused}");

    let on = cli.ok(&["cluster", "update", "--autolock=true"]);
    let key = cli.ok(&["cluster", "unlock-key", "-q"]).trim().to_owned();
    assert!(key.starts_with("SHKEY-1-") && key.len() == "SHKEY-1-".len() + 50, "{key}");
    assert!(on.starts_with("Cluster updated.\n") && on.contains(&format!("\n    {key}\n")), "{on}");
    assert!(on.contains("shoal cluster unlock"), "{on}");
    let shown = cli.ok(&["cluster", "unlock-key"]);
    assert!(shown.contains(&key) && shown.contains("password manager"), "{shown}");
    let json: serde_json::Value = serde_json::from_str(&cli.ok(&["cluster", "inspect"])).expect("json");
    assert_eq!(json["Spec"]["EncryptionConfig"]["AutoLockManagers"], true);
    assert!(!cli.ok(&["cluster", "inspect"]).contains(&key), "inspect never shows the key");

    let rotated = cli.ok(&["cluster", "unlock-key", "--rotate"]);
    assert!(rotated.starts_with("Successfully rotated the unlock key."), "{rotated}");
    let new_key = cli.ok(&["cluster", "unlock-key", "-q"]).trim().to_owned();
    assert!(new_key != key && rotated.contains(&new_key), "{rotated}");

    // This manager runs: there is nothing to unlock, and a malformed key is named as such.
    let (unlocked, _, err) = cli.run_with_input(&["cluster", "unlock"], new_key.as_bytes());
    assert!(!unlocked && err.contains("is not locked"), "{err}");
    let (unlocked, _, err) = cli.run_with_input(&["cluster", "unlock"], b"SHKEY-1-tooshort\n");
    assert!(!unlocked && err.contains("expected 50"), "{err}");
    let (unlocked, _, err) = cli.run_with_input(&["cluster", "unlock"], b"");
    assert!(!unlocked && err.contains("no unlock key given"), "{err}");

    assert_eq!(cli.ok(&["cluster", "update", "--autolock=false"]), "Cluster updated.\n");
    assert!(cli.fails(&["cluster", "unlock-key"]).contains("autolock is off"));
    manager.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_and_published_ports() {
    let (dir, addr, manager, outcome) = init_manager("network").await;
    let cli = Cli { host: addr.to_string(), bundle: &outcome.admin_bundle };
    let json = |args: &[&str]| -> serde_json::Value { serde_json::from_str(&cli.ok(args)).expect("json") };
    // Polls `shoal ARGS` until `done` holds (the leader allocates within a pass).
    let eventually = |args: &[&str], done: &dyn Fn(&str) -> bool| -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let out = cli.ok(args);
            if done(&out) || std::time::Instant::now() > deadline {
                return out;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };

    // `init` made the routing mesh's network.
    let ls = cli.ok(&["network", "ls"]);
    assert!(ls.starts_with("NETWORK ID     NAME      DRIVER    SCOPE\n"), "{ls}");
    assert!(
        ls.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()[1..] == ["ingress", "overlay", "swarm"]),
        "{ls}"
    );

    let id =
        cli.ok(&["network", "create", "-d", "overlay", "--subnet", "10.0.9.0/24", "--label", "team=web", "backend"]);
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 25, "prints the new network's ID: {id}");
    assert!(
        cli.fails(&["network", "create", "-o", "encrypted=1", "secret"])
            .contains("--opt encrypted=1 is not understood")
    );
    cli.ok(&["network", "create", "--opt", "encrypted", "secret"]);
    let secret = json(&["network", "inspect", "secret"]);
    assert_eq!(secret[0]["Options"]["encrypted"], "", "{secret}");
    assert_eq!(secret[0]["Options"]["com.docker.network.driver.mtu"], "1416", "ESP's bytes off the MTU: {secret}");
    cli.ok(&["network", "rm", "secret"]);
    assert_eq!(cli.ok(&["network", "ls", "-q", "--filter", "name=back"]).trim(), &id[..12]);
    let inspect = json(&["network", "inspect", "backend"]);
    assert_eq!(inspect[0]["Id"], id.as_str());
    assert_eq!(inspect[0]["Scope"], "swarm");
    assert_eq!(inspect[0]["IPAM"]["Config"][0]["Subnet"], "10.0.9.0/24");
    assert_eq!(inspect[0]["IPAM"]["Config"][0]["Gateway"], "10.0.9.1");
    assert!(inspect[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"].is_string(), "{inspect}");
    assert_eq!(inspect[0]["Labels"]["team"], "web");

    let create = ["service", "create", "--name", "web", "--network", "name=backend,alias=www", "-p", "8080:80"];
    cli.ok(&[&create[..], &["--detach", "shoal-test/web:v1"]].concat());
    let ls = cli.ok(&["service", "ls"]);
    assert!(ls.lines().nth(1).is_some_and(|l| l.ends_with("*:8080->80/tcp")), "{ls}");
    let allocated = |out: &str| {
        serde_json::from_str::<serde_json::Value>(out).is_ok_and(|s| s["Endpoint"]["VirtualIPs"].as_array().is_some())
    };
    let web: serde_json::Value =
        serde_json::from_str(&eventually(&["service", "inspect", "web"], &allocated)).expect("json");
    assert_eq!(web["Spec"]["TaskTemplate"]["Networks"], serde_json::json!([{"Target": id, "Aliases": ["www"]}]));
    assert_eq!(
        web["Spec"]["EndpointSpec"],
        serde_json::json!({"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]})
    );
    assert_eq!(web["Endpoint"]["Ports"][0]["PublishedPort"], 8080, "{web}");
    assert_eq!(web["Endpoint"]["VirtualIPs"].as_array().map(Vec::len), Some(2), "ingress and backend: {web}");

    let bad = cli.fails(&["service", "create", "--name", "api", "-p", "8080:x", "--detach", "x"]);
    assert!(bad.starts_with("Error: invalid publish \"8080:x\": target port \"x\" is not a port number"), "{bad}");
    let unknown = cli.fails(&["service", "create", "--name", "api", "--network", "nope", "--detach", "x"]);
    assert!(unknown.contains("network nope not found"), "{unknown}");

    let updated = cli.ok(&["service", "update", "--publish-rm", "80", "--publish-add", "9090:90", "--detach", "web"]);
    assert_eq!(updated, "web\n");
    let ls = eventually(&["service", "ls"], &|out| out.contains("*:9090->90/tcp"));
    assert!(ls.lines().nth(1).is_some_and(|l| l.ends_with("*:9090->90/tcp")), "{ls}");
    let twice = cli.fails(&["service", "update", "--network-add", "backend", "--detach", "web"]);
    assert!(twice.contains("service is already attached to network backend"), "{twice}");
    cli.ok(&[
        "service",
        "update",
        "--network-rm",
        "backend",
        "--endpoint-mode",
        "dnsrr",
        "--publish-rm",
        "90",
        "-d",
        "web",
    ]);
    let web = json(&["service", "inspect", "web"]);
    assert_eq!(web["Spec"]["EndpointSpec"], serde_json::json!({"Mode": "dnsrr"}));
    assert!(web["Spec"]["TaskTemplate"]["Networks"].is_null(), "{web}");

    // rm goes on after an error and fails at the end, as docker.
    cli.ok(&["network", "create", "spare"]);
    let (ok, out, err) = cli.run(&["network", "rm", "nope", "spare"]);
    assert!(!ok && out == "spare\n" && err.trim() == "Error: no such network: nope", "{out} {err}");
    // prune asks first; without an answer nothing is removed.
    cli.ok(&["network", "create", "unused"]);
    let asked = cli.ok(&["network", "prune"]);
    assert!(asked.starts_with("WARNING! This will remove all custom networks"), "{asked}");
    assert!(cli.ok(&["network", "ls"]).contains("unused"));
    let pruned = cli.ok(&["network", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Networks:\n") && pruned.lines().any(|l| l == "unused"), "{pruned}");
    assert!(!cli.ok(&["network", "ls"]).contains("unused"));
    manager.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_rollbacks_and_docker_output() {
    let (dir, addr, manager, outcome) = init_manager("update").await;
    let cli = Cli { host: addr.to_string(), bundle: &outcome.admin_bundle };
    let json = |args: &[&str]| -> serde_json::Value { serde_json::from_str(&cli.ok(args)).expect("json") };

    let create = ["service", "create", "--name", "web", "--replicas", "2", "-e", "A=1", "--label", "tier=front"];
    cli.ok(&[&create[..], &["--update-parallelism", "2", "--health-cmd", "true", "-d", "shoal-test/web:v1"]].concat());
    let web = json(&["service", "inspect", "web"]);
    assert_eq!(web["Spec"]["UpdateConfig"]["Parallelism"], 2);
    assert_eq!(web["Spec"]["RollbackConfig"]["FailureAction"], "pause");
    assert_eq!(web["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"]["Test"][0], "CMD-SHELL");

    // An update changes what its flags name and starts a rolling update.
    assert_eq!(
        cli.ok(&["service", "update", "--image", "shoal-test/web:v2", "--env-add", "B=2", "-d", "web"]),
        "web\n"
    );
    let web = json(&["service", "inspect", "web"]);
    assert_eq!(web["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"], "shoal-test/web:v2");
    assert_eq!(web["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"], serde_json::json!(["A=1", "B=2"]));
    assert_eq!(web["Spec"]["Labels"]["tier"], "front", "untouched");
    assert_eq!(web["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"], "shoal-test/web:v1");
    assert_eq!(web["UpdateStatus"]["State"], "updating", "{web}");
    let version = web["SpecVersion"].clone();

    // Bad flags change nothing.
    assert!(
        cli.fails(&["service", "update", "--env-rm", "NOPE", "-d", "web"])
            .contains("--env-rm NOPE: the service has no")
    );
    let (ok, _, err) = cli.run(&["service", "update", "--update-parallelism", "-1", "-d", "web"]);
    assert!(!ok && err.contains("is not a whole number ≥ 0"), "{err}");
    let (ok, _, err) = cli.run(&["service", "update", "--update-max-failure-ratio", "1.5", "-d", "web"]);
    assert!(!ok && err.contains("is not a ratio between 0 and 1"), "{err}");
    assert_eq!(json(&["service", "inspect", "web"])["SpecVersion"], version);

    cli.ok(&["service", "update", "--force", "-d", "web"]);
    assert_eq!(json(&["service", "inspect", "web"])["Spec"]["TaskTemplate"]["ForceUpdate"], 1);

    assert_eq!(cli.ok(&["service", "rollback", "-d", "web"]), "web\n");
    let web = json(&["service", "inspect", "web"]);
    assert_eq!(web["Spec"]["TaskTemplate"]["ForceUpdate"], 0, "back to the spec before --force");
    // With no task to replace, the leader may have completed it already.
    let state = web["UpdateStatus"]["State"].as_str().unwrap_or_default();
    assert!(["rollback_started", "rollback_completed"].contains(&state), "{web}");
    cli.ok(&["service", "create", "--name", "fresh", "-d", "shoal-test/web:v1"]);
    assert!(cli.fails(&["service", "rollback", "-d", "fresh"]).contains("has no previous spec to roll back to"));

    // Lists as docker prints them.
    assert_eq!(cli.ok(&["service", "ls", "--format", "{{.Name}}: {{.Replicas}}"]), "fresh: 0/1\nweb: 0/2\n");
    assert_eq!(cli.ok(&["service", "ls", "--filter", "name=we", "--format", "{{.Name}}"]), "web\n");
    assert_eq!(cli.ok(&["service", "ls", "-f", "label=tier=front", "-q"]).trim().len(), 12);
    assert_eq!(cli.ok(&["service", "ls", "-f", "label=tier=front", "-q", "--no-trunc"]).trim().len(), 25);
    let table = cli.ok(&["service", "ls", "--format", "table {{.Name}}\\t{{.Mode}}"]);
    assert_eq!(table, "NAME    MODE\nfresh   replicated\nweb     replicated\n");
    let unknown = cli.fails(&["service", "ls", "--format", "{{.Nmae}}"]);
    assert!(unknown.contains("unknown placeholder {{.Nmae}}") && unknown.contains("{{.Name}}"), "{unknown}");
    assert!(cli.fails(&["service", "ls", "-f", "mode=job"]).contains("mode is replicated, global"));
    let ps = cli.ok(&["service", "ps", "web", "fresh", "-f", "desired-state=running", "--format", "{{.Name}}"]);
    assert_eq!(ps.lines().count(), 3, "{ps}");
    let nodes = cli.ok(&["node", "ls", "-f", "role=manager", "--format", "{{.ID}} {{.Self}}"]);
    assert_eq!(nodes, format!("{} true\n", outcome.node_id));
    assert_eq!(cli.ok(&["node", "ls", "-f", "role=worker", "-q"]), "");
    assert!(cli.ok(&["node", "ps"]).starts_with("ID "), "no tasks on the manager's node yet");
    assert!(cli.fails(&["node", "ps", "nope"]).contains("no such node: nope"));

    let pretty = cli.ok(&["service", "inspect", "--pretty", "web"]);
    for line in
        ["Name:           web", "Service Mode:   Replicated", " Replicas:      2", "UpdateConfig:", " Parallelism:   2"]
    {
        assert!(pretty.lines().any(|l| l == line), "{line:?} in {pretty}");
    }
    assert!(cli.ok(&["completion", "bash"]).contains("rollback"));
    manager.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_configs_and_the_services_that_use_them() {
    let (dir, addr, manager, outcome) = init_manager("secret").await;
    let cli = Cli { host: addr.to_string(), bundle: &outcome.admin_bundle };
    let json = |args: &[&str]| -> serde_json::Value { serde_json::from_str(&cli.ok(args)).expect("json") };
    let file = |name: &str, content: &[u8]| -> String {
        let path = dir.join(name);
        std::fs::write(&path, content).expect("write");
        path.to_string_lossy().into_owned()
    };

    // Create from a file and from standard input; the payload never comes back.
    let password = "correct-horse-battery-staple";
    let id = cli.ok(&["secret", "create", "--label", "env=prod", "db_password", &file("pw.txt", password.as_bytes())]);
    assert_eq!(id.trim().len(), 25, "prints the new secret's ID: {id}");
    let (ok, out, err) = cli.run_with_input(&["secret", "create", "api_key", "-"], b"key-from-stdin");
    assert!(ok && out.trim().len() == 25, "{out} {err}");
    let (ok, _, err) = cli.run_with_input(&["secret", "create", "empty", "-"], b"");
    assert!(!ok && err.contains("standard input is empty"), "{err}");
    let big = file("big.bin", &vec![b'x'; 600 * 1024]);
    let refused = cli.fails(&["secret", "create", "big", &big]);
    assert!(refused.contains("is 600.0 KiB (614400 bytes): a secret must be smaller than 500.0 KiB"), "{refused}");

    let ls = cli.ok(&["secret", "ls"]);
    assert!(ls.starts_with("ID "), "{ls}");
    assert_eq!(
        ls.lines().next().map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["ID", "NAME", "VERSION", "CREATED", "UPDATED"])
    );
    assert!(ls.lines().any(|l| l.contains("db_password") && l.split_whitespace().nth(2) == Some("1")), "{ls}");
    assert_eq!(cli.ok(&["secret", "ls", "--filter", "label=env=prod", "--format", "{{.Name}}"]), "db_password\n");
    let listed = cli.ok(&["secret", "ls", "--format", "json"]);
    let inspected = cli.ok(&["secret", "inspect", "db_password", "api_key"]);
    let pretty = cli.ok(&["secret", "inspect", "--pretty", "db_password"]);
    for out in [&ls, &listed, &inspected, &pretty] {
        assert!(!out.contains(password) && !out.contains("key-from-stdin") && !out.contains("Data\""), "{out}");
    }
    let inspected: serde_json::Value = serde_json::from_str(&inspected).expect("json");
    assert_eq!(inspected[0]["Spec"]["Name"], "db_password");
    assert_eq!(inspected[0]["Spec"]["Labels"]["env"], "prod");
    assert_eq!(inspected[0]["DataVersion"], 1);
    assert!(pretty.lines().any(|l| l == "Name:            db_password"), "{pretty}");

    // A config shows its payload: base64 in the JSON, text with --pretty.
    let nginx = "worker_processes 1;\n";
    cli.ok(&["config", "create", "nginx_conf", &file("nginx.conf", nginx.as_bytes())]);
    let config = json(&["config", "inspect", "nginx_conf"]);
    assert_eq!(config[0]["Spec"]["Data"], "d29ya2VyX3Byb2Nlc3NlcyAxOwo=", "{config}");
    assert!(cli.ok(&["config", "inspect", "--pretty", "nginx_conf"]).ends_with(&format!("Data:\n{nginx}\n")));
    assert!(!cli.ok(&["config", "ls"]).contains("worker_processes"));

    // A service that uses them, and the container flags that came with them.
    cli.ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--secret",
        "db_password",
        "--secret",
        "source=api_key,target=/etc/api.key,uid=101,mode=0400",
        "--config",
        "source=nginx_conf,target=/etc/nginx/nginx.conf",
        "--mount",
        r#"type=volume,source=nfs-data,target=/data,volume-nocopy,volume-opt=type=nfs,"volume-opt=o=addr=192.0.2.10,nfsvers=4",volume-opt=device=:/export"#,
        "--mount",
        "type=bind,source=/srv,target=/srv,bind-propagation=rslave",
        "--init",
        "--cap-add",
        "NET_ADMIN",
        "--cap-drop",
        "MKNOD",
        "--sysctl",
        "net.ipv4.ip_unprivileged_port_start=0",
        "--ulimit",
        "nofile=1024:2048",
        "--dns",
        "192.0.2.53",
        "--dns-search",
        "example.com",
        "--dns-option",
        "ndots:2",
        "--host",
        "db.internal:192.0.2.20",
        "--group",
        "video",
        "--limit-pids",
        "100",
        "-d",
        "shoal-test/web:v1",
    ]);
    let web = json(&["service", "inspect", "web"]);
    let container = &web["Spec"]["TaskTemplate"]["ContainerSpec"];
    let secrets = container["Secrets"].as_array().cloned().unwrap_or_default();
    assert_eq!(secrets.len(), 2, "{container}");
    assert_eq!(secrets[0]["SecretName"], "db_password");
    assert_eq!(secrets[0]["SecretID"].as_str().map(str::len), Some(25), "the manager resolved the name: {container}");
    assert_eq!(secrets[0]["File"], serde_json::json!({"Name": "db_password", "UID": "0", "GID": "0", "Mode": 0o444}));
    assert_eq!(
        secrets[1]["File"],
        serde_json::json!({"Name": "/etc/api.key", "UID": "101", "GID": "0", "Mode": 0o400})
    );
    assert_eq!(secrets[0]["DataVersion"], 1);
    assert_eq!(container["Configs"][0]["ConfigName"], "nginx_conf");
    assert_eq!(container["Configs"][0]["File"]["Name"], "/etc/nginx/nginx.conf");
    assert_eq!(
        container["Mounts"][0]["VolumeOptions"],
        serde_json::json!({"NoCopy": true, "DriverConfig": {"Name": "local", "Options": {"type": "nfs", "o": "addr=192.0.2.10,nfsvers=4", "device": ":/export"}}})
    );
    assert_eq!(container["Mounts"][1]["BindOptions"]["Propagation"], "rslave");
    assert_eq!(container["Init"], true);
    assert_eq!(container["CapabilityAdd"], serde_json::json!(["NET_ADMIN"]));
    assert_eq!(container["CapabilityDrop"], serde_json::json!(["MKNOD"]));
    assert_eq!(container["Sysctls"]["net.ipv4.ip_unprivileged_port_start"], "0");
    assert_eq!(container["Ulimits"], serde_json::json!([{"Name": "nofile", "Soft": 1024, "Hard": 2048}]));
    assert_eq!(
        container["DNSConfig"],
        serde_json::json!({"Nameservers": ["192.0.2.53"], "Search": ["example.com"], "Options": ["ndots:2"]})
    );
    assert_eq!(container["Hosts"], serde_json::json!(["192.0.2.20 db.internal"]));
    assert_eq!(container["Groups"], serde_json::json!(["video"]));
    assert_eq!(web["Spec"]["TaskTemplate"]["Resources"]["Limits"]["Pids"], 100);
    let pretty = cli.ok(&["service", "inspect", "--pretty", "web"]);
    for line in
        [" Init:          true", "Secrets:", "  Source:       db_password", "  Propagation:  rslave", " Add: NET_ADMIN"]
    {
        assert!(pretty.lines().any(|l| l == line), "{line:?} in {pretty}");
    }

    // Removal is refused while a service uses it; rm goes on after an error, as docker.
    let in_use = cli.fails(&["secret", "rm", "db_password"]);
    assert!(in_use.starts_with("Error: ") && in_use.contains("web"), "the manager's error: {in_use}");
    cli.ok(&["secret", "create", "spare", &file("spare", b"spare")]);
    let (ok, out, err) = cli.run(&["secret", "rm", "nope", "spare"]);
    assert!(!ok && out == "spare\n" && err.lines().count() == 1 && err.starts_with("Error: "), "{out} {err}");

    // Rotation moves the services that use the secret to its new version.
    assert_eq!(cli.ok(&["secret", "update", "db_password", &file("pw2.txt", b"new-password")]), "web\n");
    let web = json(&["service", "inspect", "web"]);
    assert_eq!(web["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"][0]["DataVersion"], 2, "{web}");
    assert_eq!(json(&["secret", "inspect", "db_password"])[0]["DataVersion"], 2);
    let (ok, out, err) = cli.run_with_input(&["secret", "update", "--data-file", "-", "api_key"], b"key-2");
    assert!(ok && out == "web\n", "{out} {err}");
    assert_eq!(cli.ok(&["secret", "update", "--label-add", "tier=db", "db_password"]), "db_password\n");
    assert_eq!(json(&["secret", "inspect", "db_password"])[0]["Spec"]["Labels"]["tier"], "db");
    cli.ok(&["secret", "create", "unused", &file("unused", b"one")]);
    assert_eq!(cli.ok(&["secret", "update", "unused", &file("unused2", b"two")]), "no service uses secret unused\n");
    assert!(cli.fails(&["secret", "update", "unused"]).contains("nothing to change"));
    assert_eq!(cli.ok(&["config", "update", "nginx_conf", &file("nginx2.conf", b"worker_processes 2;\n")]), "web\n");

    // Once no service uses them, they go.
    cli.ok(&["service", "update", "--secret-rm", "db_password", "--secret-rm", "/etc/api.key", "-d", "web"]);
    assert_eq!(cli.ok(&["secret", "rm", "db_password", "api_key"]), "db_password\napi_key\n");
    manager.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_of_nodes() {
    let (dir, addr, manager, outcome) = init_manager("volume").await;
    let cli = Cli { host: addr.to_string(), bundle: &outcome.admin_bundle };
    // The manager's node has no agent, so no volume report.
    assert_eq!(cli.ok(&["volume", "ls"]), "DRIVER   VOLUME NAME   NODE\n");
    assert_eq!(cli.ok(&["volume", "ls", "--node", &outcome.node_id, "-q"]), "");
    assert!(cli.fails(&["volume", "ls", "--node", "nope"]).contains("nope"));
    let (ok, out, err) = cli.run(&["volume", "inspect", "data"]);
    assert!(!ok && out.is_empty() && err.trim() == "Error: no such volume: data (on no node)", "{out} {err}");
    assert!(cli.fails(&["volume", "ls", "-f", "dangling=maybe"]).contains("dangling is true, false, 1 or 0"));
    manager.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_ca_is_shown_and_rotated() {
    let (dir, addr, manager, outcome) = init_manager("root-ca").await;
    let cli = Cli { host: addr.to_string(), bundle: &outcome.admin_bundle };
    let first = cli.ok(&["cluster", "ca"]);
    assert!(
        first.starts_with("-----BEGIN CERTIFICATE-----") && first.trim_end().ends_with("-----END CERTIFICATE-----")
    );
    let (accepted, _, refused) = cli.run_with_input(&["cluster", "ca", "--ca-cert", "x.pem", "--ca-key", "y.pem"], b"");
    assert!(!accepted && refused.contains("--rotate"), "a root to rotate to, without --rotate: {refused}");

    // A copy of the bundle that no command uses during the rotations below.
    let stale = dir.join("stale-admin");
    std::fs::create_dir_all(&stale).expect("stale bundle");
    for file in ["node.crt", "node.key", "root-ca.crt"] {
        std::fs::copy(outcome.admin_bundle.join(file), stale.join(file)).expect("copy the bundle");
    }

    // One node (this manager): it moves to the new root, then trusts it alone.
    let rotated = cli.ok(&["cluster", "ca", "--rotate"]);
    assert!(rotated.starts_with("desired root digest: sha256:"), "{rotated}");
    assert!(rotated.contains("rotated TLS certificates:") && rotated.contains("rotated CA certificates:"), "{rotated}");
    assert!(
        rotated
            .contains("] 1/1 nodes\n  rotated CA certificates:   [=================================================="),
        "{rotated}"
    );
    let second = cli.ok(&["cluster", "ca"]);
    assert!(rotated.ends_with(&second), "prints the new root last: {rotated}");
    assert_ne!(first, second);
    let json: serde_json::Value = serde_json::from_str(&cli.ok(&["cluster", "inspect"])).expect("json");
    assert_eq!(json["RootRotationInProgress"], false);
    assert_eq!(json["TLSInfo"]["TrustRoot"], second.as_str());

    // To a root the operator gives, quietly: only the root is printed. Another cluster's root
    // serves as one (its CA files, as an operator would copy them from a CA of their own).
    let (other_dir, _, other, _) = init_manager("root-ca-given").await;
    let (cert, key) = (other_dir.join("ca").join("ca.crt"), other_dir.join("ca").join("ca.key"));
    let (cert, key) = (cert.to_str().expect("path"), key.to_str().expect("path"));
    let own_key = dir.join("ca").join("ca.key");
    let refused =
        cli.fails(&["cluster", "ca", "--rotate", "--ca-cert", cert, "--ca-key", own_key.to_str().expect("path")]);
    assert!(refused.contains("cannot sign for the cluster"), "another root's key: {refused}");
    let quiet = cli.ok(&["cluster", "ca", "--rotate", "--ca-cert", cert, "--ca-key", key, "-q"]);
    let squeezed = |pem: &str| pem.split_whitespace().collect::<String>();
    let given = std::fs::read_to_string(cert).expect("the given root");
    assert_eq!(squeezed(&quiet), squeezed(&given), "-q prints the root alone");
    let refused = cli.fails(&["cluster", "ca", "--rotate", "--ca-cert", cert, "--ca-key", key]);
    assert!(refused.contains("is the cluster's root already"), "{refused}");
    // Detached: the command returns once the rotation started; `cluster ca` then waits for the
    // rotation under way (printing its progress) and prints the root it ends on.
    let detached = cli.ok(&["cluster", "ca", "--rotate", "--detach"]);
    assert!(detached.starts_with("Root CA rotation started: desired root digest sha256:"), "{detached}");
    let shown = cli.ok(&["cluster", "ca"]);
    assert!(shown.trim_end().ends_with("-----END CERTIFICATE-----"), "{shown}");
    assert!(!shown.contains(quiet.trim()), "the root rotated to last: {shown}");
    let json: serde_json::Value = serde_json::from_str(&cli.ok(&["cluster", "inspect"])).expect("json");
    assert_eq!(json["RootRotationInProgress"], false);
    // The CLI still connects with its bundle: it moved to the new root with the manager. The
    // copy left on the first root is told why it no longer works, and what to do.
    assert!(cli.ok(&["node", "ls"]).contains("Leader"));
    let stale_cli = Cli { host: addr.to_string(), bundle: &stale };
    let refused = stale_cli.fails(&["node", "ls"]);
    assert!(refused.contains("trust different root CAs") && refused.contains("DATA/admin"), "{refused}");
    manager.shutdown().await;
    other.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other_dir);
}

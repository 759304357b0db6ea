//! Stacks end to end (SCENARIOS.md 18) on a manager and a worker, real containerd, driven by the
//! `shoal` CLI: a compose file with a web service, a client that depends on it, a secret, a
//! config and a named volume on the stack's own network, plus an external network; the client
//! reaches web by its service name and reads the secret and config it serves; a redeploy with
//! one service changed updates only that one (the other keeps its tasks); `stack rm` removes
//! everything the stack created and nothing else (the external network and a service outside the
//! stack stay).

#![allow(clippy::print_stderr)]

mod support;

use std::collections::BTreeSet;

use shoal_testkit::Node;
use support::{env, http_script, in_task, ok, running_task, until, wait_for};

/// What `web` serves at /cgi-bin/files: the secret and the config it reads.
const FILES: &str = r#"#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
printf 'secret=%s config=%s\n' "$(cat /run/secrets/db)" "$(cat /etc/site.conf)"
"#;

fn compose(registry: &str, client_env: &str) -> String {
    let script = format!(
        "mkdir -p /tmp/www/cgi-bin && cat > /tmp/www/cgi-bin/files <<'EOF'\n{FILES}EOF\nchmod 755 /tmp/www/cgi-bin/files\nexec httpd -f -p 80 -h /tmp/www"
    );
    // The script as a YAML block scalar, indented under `command`, `$` escaped from
    // interpolation as compose wants it.
    let block: String = script.lines().map(|l| format!("        {}\n", l.replace('$', "$$"))).collect();
    format!(
        r#"services:
  web:
    image: {registry}/shoal-test/web:v1
    entrypoint: ["/bin/sh", "-c"]
    command:
      - |
{block}    networks: [backend]
    secrets: [db]
    configs:
      - source: site
        target: /etc/site.conf
    volumes:
      - data:/data
    deploy:
      replicas: 2
  client:
    image: {registry}/shoal-test/tools:latest
    environment:
      ROUND: "{client_env}"
    networks: [backend, shared]
    depends_on:
      web:
        condition: service_started
networks:
  backend: {{}}
  shared:
    external: true
secrets:
  db:
    file: ./db.txt
configs:
  site:
    file: ./site.conf
volumes:
  data: {{}}
"#
    )
}

/// The task IDs of `service` that run.
fn running_ids(shoal: &shoal_testkit::shoal::Cli, service: &str) -> BTreeSet<String> {
    let out = ok(
        shoal,
        &[
            "service",
            "ps",
            "--no-trunc",
            "--filter",
            "desired-state=running",
            "--format",
            "{{.ID}} {{.CurrentState}}",
            service,
        ],
    );
    out.lines()
        .filter(|l| l.contains("Running"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_stack_deployed_updated_and_removed() {
    let Some(env) = env("e2e a_stack_deployed_updated_and_removed", 2) else { return };
    let nodes: Vec<Node> = (1..=2).map(|i| env.cluster.node(i).expect("node").clone()).collect();
    let (m1, w1) = (&nodes[0], &nodes[1]);
    let sc = env.shoal();
    let (m1_process, worker_token) = sc.init(m1).expect("init");
    let shoal = sc.cli(m1, m1);
    let w1_process = sc.join_worker(w1, &worker_token, m1).expect("join w1");
    until(&shoal, "2 Ready", 30, &["node", "ls"], |out| out.matches(" Ready ").count() == 2);

    eprintln!("--- outside the stack: an external network and a service");
    ok(&shoal, &["network", "create", "shared"]);
    let registry = &env.registry_addr;
    ok(&shoal, &["service", "create", "--detach", "--name", "other", &format!("{registry}/shoal-test/sleeper:latest")]);

    let dir = env.cluster.dir().join("stack");
    std::fs::create_dir_all(&dir).expect("stack dir");
    std::fs::write(dir.join("db.txt"), "s3cret-stack").expect("secret file");
    std::fs::write(dir.join("site.conf"), "site-conf-v1").expect("config file");
    let file = dir.join("docker-compose.yml");
    std::fs::write(&file, compose(registry, "one")).expect("compose file");
    let file = file.to_string_lossy().into_owned();

    eprintln!("--- stack deploy: network, secret, config, then web, then client (it depends on web)");
    let out = ok(&shoal, &["stack", "deploy", "-c", &file, "app"]);
    eprintln!("{out}");
    for line in [
        "Creating network app_backend",
        "Creating secret app_db",
        "Creating config app_site",
        "Creating service app_web",
        "Creating service app_client",
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    let web_at = out.find("Creating service app_web").unwrap_or(usize::MAX);
    let client_at = out.find("Creating service app_client").unwrap_or(0);
    assert!(web_at < client_at, "depends_on: web before client:\n{out}");
    eprintln!("--- --resolve-image always (the default): web pinned to what the registry serves for its tag");
    let inspected: serde_json::Value =
        serde_json::from_str(&ok(&shoal, &["service", "inspect", "app_web"])).expect("service inspect JSON");
    let image = inspected["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].as_str().unwrap_or_default().to_owned();
    let digest = image.strip_prefix(&format!("{registry}/shoal-test/web:v1@sha256:")).unwrap_or_default();
    assert!(digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()), "web's image: {image}");
    let services = ok(&shoal, &["stack", "services", "app"]);
    let shown = format!("{registry}/shoal-test/web:v1");
    assert!(
        services.lines().any(|l| l.contains("app_web") && l.trim_end().ends_with(&shown)),
        "shown without its digest:\n{services}"
    );
    assert!(
        services.contains("app_web") && services.contains("app_client") && !services.contains("other"),
        "{services}"
    );
    let stacks = ok(&shoal, &["stack", "ls"]);
    assert!(stacks.lines().any(|l| l.starts_with("app") && l.contains('2')), "{stacks}");

    eprintln!("--- the client reaches web by its service name, on the stack's network");
    let (node, client, _) = running_task(&env, &nodes, "app_client");
    let script = http_script("web", 80, "/cgi-bin/files");
    let mut last = String::new();
    wait_for("client → web", 30, || {
        let (_, out) = in_task(&env, node, &client, &["sh", "-c", &script]);
        last = out;
        last.contains("secret=s3cret-stack config=site-conf-v1")
    });

    eprintln!("--- redeploy with the client changed: only the client is updated");
    let web_before = running_ids(&shoal, "app_web");
    let client_before = running_ids(&shoal, "app_client");
    assert_eq!((web_before.len(), client_before.len()), (2, 1));
    std::fs::write(dir.join("docker-compose.yml"), compose(registry, "two")).expect("compose file");
    let out = ok(&shoal, &["stack", "deploy", "-c", &file, "app"]);
    eprintln!("{out}");
    assert!(out.contains("Updating service app_client"), "{out}");
    assert!(!out.contains("Updating service app_web"), "web did not change:\n{out}");
    until(&shoal, "the client replaced", 60, &["service", "ps", "app_client"], |_| {
        let now = running_ids(&shoal, "app_client");
        now.len() == 1 && now.is_disjoint(&client_before)
    });
    assert_eq!(running_ids(&shoal, "app_web"), web_before, "web's tasks are the same");

    eprintln!("--- stack rm: what the stack made goes, nothing else");
    ok(&shoal, &["stack", "rm", "app"]);
    until(&shoal, "the stack's services gone", 30, &["service", "ls"], |out| !out.contains("app_"));
    wait_for("the stack's network, secret and config gone", 30, || {
        let networks = ok(&shoal, &["network", "ls"]);
        let secrets = ok(&shoal, &["secret", "ls"]);
        let configs = ok(&shoal, &["config", "ls"]);
        !networks.contains("app_backend") && !secrets.contains("app_db") && !configs.contains("app_site")
    });
    assert!(ok(&shoal, &["network", "ls"]).contains("shared"), "the external network stays");
    assert!(ok(&shoal, &["service", "ls"]).contains("other"), "the service outside the stack stays");
    let stacks = ok(&shoal, &["stack", "ls"]);
    assert!(!stacks.contains("app"), "{stacks}");
    drop((w1_process, m1_process));
}

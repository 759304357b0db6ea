//! `shoal stack` against a manager started in the test (on loopback, with the admin bundle
//! `init` writes; no agent, so deploys run `--detach` and tasks stay pending): a stack with a
//! network, a secret, a config and two services where one depends on the other, deployed with
//! docker's lines and labels, deployed again unchanged (nothing written) and with one service
//! changed (only its spec version moves), pruned, listed, and removed without touching an
//! external network or another stack. Then, on an in-process cluster with a simulated worker,
//! a deploy that waits: the dependent service is created only once its dependency's job has
//! completed, and the command ends when every service converged.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use support::{Cli, Registries, init_manager, init_manager_with};

/// Removes the test's directory however the test ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The stack of the test: `web` waits for `db` to be healthy; `web` is on the stack's network
/// and the external `corp`, `db` reads a secret from a file beside the compose file.
fn compose(web_image: &str, with_db: bool) -> String {
    let db = if with_db {
        "    depends_on:\n      db: { condition: service_healthy }\n  db:\n    image: shoal-test/db:v1\n    secrets: [db_password]\n"
    } else {
        ""
    };
    format!(
        r#"services:
  web:
    image: {web_image}
    networks:
      default: {{ aliases: [www] }}
      outside:
    configs:
      - source: site
        target: /etc/site.conf
    deploy:
      replicas: 2
      labels: {{ tier: front }}
{db}networks:
  outside: {{ external: true, name: corp }}
secrets:
  db_password: {{ file: ./db_password.txt }}
configs:
  site: {{ content: "hello" }}
"#
    )
}

fn lines_with<'a>(out: &'a str, prefix: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_is_deployed_redeployed_pruned_listed_and_removed() {
    let (dir, addr, manager, outcome) = init_manager("stack").await;
    let _cleanup = TempDir(dir.clone());
    let cli = Cli { host: addr.to_string(), bundle: &outcome.admin_bundle };
    let app = dir.join("app");
    std::fs::create_dir_all(&app).expect("app dir");
    std::fs::write(app.join("db_password.txt"), "s3cret\n").expect("secret file");
    let file = app.join("compose.yml");
    std::fs::write(&file, compose("shoal-test/web:v1", true)).expect("compose file");
    let file = file.to_string_lossy().into_owned();

    // --- an external network, made beforehand
    cli.ok(&["network", "create", "corp"]);

    // --- the first deploy: docker's lines, dependencies first
    let (ok, out, err) = cli.run(&["stack", "deploy", "-c", &file, "--detach", "shop"]);
    assert!(ok, "{out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "Creating network shop_default",
            "Creating secret shop_db_password",
            "Creating config shop_site",
            "Creating service shop_db",
            "Creating service shop_web",
        ]
    );
    assert!(err.contains("--detach: services are created in their depends_on order without waiting"), "{err}");
    let web = cli.inspect("shop_web");
    let labels = &web["Spec"]["Labels"];
    assert_eq!(
        (labels["com.docker.stack.namespace"].as_str(), labels["com.docker.stack.image"].as_str()),
        (Some("shop"), Some("shoal-test/web:v1"))
    );
    assert_eq!(labels["tier"], "front");
    let container = &web["Spec"]["TaskTemplate"]["ContainerSpec"];
    assert_eq!(container["Labels"]["com.docker.stack.namespace"], "shop");
    assert_eq!(container["Configs"][0]["ConfigName"], "shop_site");
    assert_eq!(container["Configs"][0]["File"]["Name"], "/etc/site.conf");
    let networks = web["Spec"]["TaskTemplate"]["Networks"].as_array().cloned().unwrap_or_default();
    assert_eq!(networks.len(), 2, "{networks:?}");
    assert!(networks.iter().any(|n| n["Aliases"] == serde_json::json!(["www", "web"])), "{networks:?}");
    let db = cli.inspect("shop_db");
    assert_eq!(db["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"][0]["SecretName"], "shop_db_password");
    let network: serde_json::Value =
        serde_json::from_str(&cli.ok(&["network", "inspect", "shop_default"])).expect("json");
    let network = if network.is_array() { network[0].clone() } else { network };
    assert_eq!(network["Labels"]["com.docker.stack.namespace"], "shop", "{network}");

    // --- the same file again: nothing is written
    let out = cli.ok(&["stack", "deploy", "-c", &file, "--detach", "shop"]);
    assert_eq!(out, "", "an unchanged stack is left as it is");
    assert_eq!(
        (cli.inspect("shop_web")["SpecVersion"].as_u64(), cli.inspect("shop_db")["SpecVersion"].as_u64()),
        (Some(1), Some(1))
    );

    // --- web changed, the file from standard input (relative paths from the current directory)
    let changed =
        compose("shoal-test/web:v2", true).replace("./db_password.txt", &app.join("db_password.txt").to_string_lossy());
    let out = cli.ok_with_input(&["stack", "deploy", "-c", "-", "--detach", "shop"], changed.as_bytes());
    let web_id = cli.inspect("shop_web")["ID"].as_str().map(str::to_owned).unwrap_or_default();
    assert_eq!(out, format!("Updating service shop_web (id: {web_id})\n"));
    assert_eq!(
        (cli.inspect("shop_web")["SpecVersion"].as_u64(), cli.inspect("shop_db")["SpecVersion"].as_u64()),
        (Some(2), Some(1))
    );

    // --- a new password and a new db image: the secret's next version, to which the manager
    // moves db, then db's update on top of that (the file names web:v1 again: web goes back)
    std::fs::write(app.join("db_password.txt"), "n3w\n").expect("secret file");
    std::fs::write(app.join("compose.yml"), compose("shoal-test/web:v1", true).replace("db:v1", "db:v2"))
        .expect("compose file");
    let db_id = cli.inspect("shop_db")["ID"].as_str().map(str::to_owned).unwrap_or_default();
    let out = cli.ok(&["stack", "deploy", "-c", &file, "--detach", "shop"]);
    assert_eq!(
        out,
        format!(
            "Updating secret shop_db_password\n  new version of secret shop_db_password; the services using it move to \
             it: shop_db\nUpdating service shop_db (id: {db_id})\nUpdating service shop_web (id: {web_id})\n"
        )
    );
    let db = cli.inspect("shop_db");
    assert_eq!(db["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"][0]["DataVersion"], 2);
    assert_eq!(db["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"], "shoal-test/db:v2");
    assert_eq!(db["SpecVersion"], 3, "moved by the manager, then updated by the deploy");
    assert_eq!(cli.ok(&["stack", "deploy", "-c", &file, "--detach", "shop"]), "");

    // --- another stack, which nothing below may touch
    let blog = app.join("blog.yml");
    std::fs::write(&blog, "services:\n  web:\n    image: shoal-test/blog:v1\n").expect("blog file");
    let blog = blog.to_string_lossy().into_owned();
    cli.ok(&["stack", "deploy", "-c", &blog, "--detach", "blog"]);

    // --- lists
    assert_eq!(cli.ok(&["stack", "ls"]), "NAME   SERVICES\nblog   1\nshop   2\n");
    assert_eq!(cli.ok(&["stack", "ls", "--format", "{{.Name}}={{.Services}}"]), "blog=1\nshop=2\n");
    let services = cli.ok(&["stack", "services", "shop"]);
    assert!(services.starts_with("ID ") && services.contains("shop_db") && services.contains("shop_web"), "{services}");
    assert!(!services.contains("blog_web"), "{services}");
    assert_eq!(cli.ok(&["stack", "services", "-q", "shop"]).lines().count(), 2);
    assert_eq!(
        cli.ok(&["stack", "services", "--filter", "name=shop_w", "--format", "{{.Name}}", "shop"]),
        "shop_web\n"
    );
    let ps = cli.ok(&["stack", "ps", "shop"]);
    assert!(ps.contains("shop_web.1") && ps.contains("shop_db.1") && !ps.contains("blog"), "{ps}");
    let config = cli.ok(&["stack", "config", "-c", &file]);
    assert!(config.contains("image: shoal-test/web:v1") && config.contains("condition: service_healthy"), "{config}");

    // --- db left the file: kept without --prune, removed with it
    std::fs::write(app.join("compose.yml"), compose("shoal-test/web:v2", false)).expect("compose file");
    let out = cli.ok(&["stack", "deploy", "-c", &file, "--detach", "shop"]);
    assert!(lines_with(&out, "Removing").is_empty(), "{out}");
    let out = cli.ok(&["stack", "deploy", "-c", &file, "--prune", "--detach", "shop"]);
    assert_eq!(lines_with(&out, "Removing"), ["Removing service shop_db"]);
    assert_eq!(cli.ok(&["stack", "ls"]), "NAME   SERVICES\nblog   1\nshop   1\n");

    // --- errors: one line each
    let cycle = app.join("cycle.yml");
    std::fs::write(
        &cycle,
        "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: y\n    depends_on: [a]\n",
    )
    .expect("cycle file");
    assert!(cli.fails(&["stack", "deploy", "-c", &cycle.to_string_lossy(), "shop"]).contains("a -> b -> a"));
    assert!(cli.fails(&["stack", "ps", "nope"]).contains("nothing found in stack: nope"));
    assert!(cli.fails(&["stack", "deploy", "-c", &file, "bad.name"]).contains("invalid stack name \"bad.name\""));

    // --- rm: what the stack made, nothing else
    let out = cli.ok(&["stack", "rm", "shop"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "Removing service shop_web",
            "Removing secret shop_db_password",
            "Removing config shop_site",
            "Removing network shop_default",
        ]
    );
    assert_eq!(cli.ok(&["stack", "ls"]), "NAME   SERVICES\nblog   1\n");
    let networks = cli.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(networks.lines().any(|n| n == "corp") && networks.lines().any(|n| n == "blog_default"), "{networks}");
    assert!(!networks.contains("shop_"), "{networks}");
    assert_eq!(cli.ok(&["secret", "ls", "-q"]), "");
    let (ok, out, err) = cli.run(&["stack", "rm", "shop"]);
    assert!(ok && out.is_empty() && err == "Nothing found in stack: shop\n", "{out}{err}");

    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_pinned_to_their_digests_as_resolve_image_says() {
    let registries = Arc::new(Registries::default());
    let (dir, addr, manager, outcome) = init_manager_with("stack-images", Some(registries.clone())).await;
    let _cleanup = TempDir(dir.clone());
    let cli = Cli { host: addr.to_string(), bundle: &outcome.admin_bundle };
    let file = dir.join("compose.yml");
    let web = |image: &str| format!("services:\n  web:\n    image: {image}\n  db:\n    image: shoal-test/db:v1\n");
    std::fs::write(&file, web("shoal-test/web:v1")).expect("compose file");
    let file = file.to_string_lossy().into_owned();
    let (d1, d2, d3) = (
        format!("sha256:{}", "1".repeat(64)),
        format!("sha256:{}", "2".repeat(64)),
        format!("sha256:{}", "3".repeat(64)),
    );
    registries.push("shoal-test/web:v1", &d1);
    registries.push("shoal-test/web:v2", &d2);
    let image = |service: &str| {
        let spec = &cli.inspect(service)["Spec"];
        let label = spec["Labels"]["com.docker.stack.image"].as_str().unwrap_or_default().to_owned();
        (spec["TaskTemplate"]["ContainerSpec"]["Image"].as_str().unwrap_or_default().to_owned(), label)
    };
    let deploy = |mode: &str| {
        let (ok, out, err) = cli.run(&["stack", "deploy", "-c", &file, "--detach", "--resolve-image", mode, "shop"]);
        assert!(ok, "{out}{err}");
        (out, err)
    };

    // --- always (the default): web pinned; db's registry does not know it: docker's warning,
    // and db goes as written
    let (ok, _, err) = cli.run(&["stack", "deploy", "-c", &file, "--detach", "shop"]);
    assert!(ok, "{err}");
    assert_eq!(image("shop_web"), (format!("shoal-test/web:v1@{d1}"), "shoal-test/web:v1".to_owned()));
    assert_eq!(image("shop_db"), ("shoal-test/db:v1".to_owned(), "shoal-test/db:v1".to_owned()));
    assert!(
        err.contains(
            "image shoal-test/db:v1 could not be accessed on a registry to record its digest (manifest unknown: \
             shoal-test/db:v1). Each node will access shoal-test/db:v1 independently"
        ),
        "{err}"
    );
    assert!(!err.contains("web:v1 could not"), "{err}");

    // --- the tag is pushed again: changed keeps what the last deploy resolved, without asking;
    // never sends the image as written (an update); always follows the tag
    registries.push("shoal-test/web:v1", &d3);
    registries.asked();
    let (out, _) = deploy("changed");
    assert_eq!(out, "", "the file did not change: nothing is written");
    assert_eq!(registries.asked(), Vec::<String>::new(), "changed asks only for images the file changed");
    assert_eq!(image("shop_web").0, format!("shoal-test/web:v1@{d1}"));
    let (out, _) = deploy("always");
    assert!(out.starts_with("Updating service shop_web"), "{out}");
    assert_eq!(image("shop_web").0, format!("shoal-test/web:v1@{d3}"));
    let (out, err) = deploy("never");
    assert!(out.starts_with("Updating service shop_web"), "{out}");
    assert!(!err.contains("could not be accessed"), "never asks nothing: {err}");
    assert_eq!(image("shop_web").0, "shoal-test/web:v1");

    // --- a new image in the file: changed resolves it
    std::fs::write(&file, web("shoal-test/web:v2")).expect("compose file");
    deploy("changed");
    assert_eq!(image("shop_web"), (format!("shoal-test/web:v2@{d2}"), "shoal-test/web:v2".to_owned()));
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_waits_for_dependencies_then_for_convergence() {
    use std::time::Duration;

    use shoal_local_cluster::{LocalCluster, LocalOptions, SimBehavior};

    let images = vec![
        ("shoal-test/web:v1".to_owned(), SimBehavior::RunUntilStopped),
        ("shoal-test/migrate:v1".to_owned(), SimBehavior::ExitAfter { code: 0, after: Duration::from_millis(300) }),
    ];
    let cluster =
        LocalCluster::start(LocalOptions { workers: 1, images, ..Default::default() }).await.expect("cluster");
    let cli = Cli { host: cluster.manager_addrs()[0].to_string(), bundle: cluster.admin_bundle() };
    let file = cluster.dir().join("compose.yml");
    std::fs::write(
        &file,
        r#"services:
  web:
    image: shoal-test/web:v1
    depends_on:
      migrate: { condition: service_completed_successfully }
    deploy: { replicas: 2 }
  migrate:
    image: shoal-test/migrate:v1
    deploy: { mode: replicated-job }
"#,
    )
    .expect("compose file");
    let file = file.to_string_lossy().into_owned();

    let deploy = tokio::task::spawn_blocking({
        let (host, bundle) = (cli.host.clone(), cluster.admin_bundle().to_owned());
        move || Cli { host, bundle: &bundle }.run(&["stack", "deploy", "-c", &file, "shop"])
    });
    let (ok, out, err) =
        tokio::time::timeout(Duration::from_secs(60), deploy).await.expect("ends in time").expect("joins");
    assert!(ok, "{out}{err}");
    let creating = lines_with(&out, "Creating service");
    assert_eq!(creating, ["Creating service shop_migrate", "Creating service shop_web"], "{out}");
    assert!(out.starts_with("Creating network shop_default\nCreating service shop_migrate\n"), "{out}");
    assert!(out.contains("shop_migrate: complete\n") && out.ends_with("shop_web: converged\n"), "{out}");

    // web was created after the job's task completed.
    let mut control = cluster.control().await.expect("control");
    let services = control.list_services(shoal_api::v1::ListServicesRequest::default()).await.expect("services");
    let services = services.into_inner().services;
    let id_of = |name: &str| {
        let service = services
            .iter()
            .find(|s| s.spec.as_ref().and_then(|s| s.annotations.as_ref()).is_some_and(|a| a.name == name));
        service.expect("the service").clone()
    };
    let (web, migrate) = (id_of("shop_web"), id_of("shop_migrate"));
    let request = shoal_api::v1::ListTasksRequest { service_ids: vec![migrate.id.clone()], ..Default::default() };
    let tasks = control.list_tasks(request).await.expect("tasks").into_inner().tasks;
    let status = tasks[0].status.clone().unwrap_or_default();
    assert_eq!(status.state, shoal_api::v1::TaskState::Complete as i32);
    let completed = shoal_api::from_timestamp(status.timestamp.as_ref()).expect("a completion time");
    let created = shoal_api::from_timestamp(web.meta.and_then(|m| m.created_at).as_ref()).expect("a creation time");
    assert!(created >= completed, "web created at {created:?}, before the job completed at {completed:?}");

    // --- a service no node can take: --wait-timeout ends the wait naming it and why; what
    // was deployed stays
    let nowhere = cluster.dir().join("nowhere.yml");
    std::fs::write(
        &nowhere,
        "services:\n  api:\n    image: shoal-test/web:v1\n    deploy:\n      placement: { constraints: [node.labels.zone==nowhere] }\n",
    )
    .expect("compose file");
    let nowhere = nowhere.to_string_lossy().into_owned();
    let deploy = tokio::task::spawn_blocking({
        let (host, bundle) = (cli.host.clone(), cluster.admin_bundle().to_owned());
        move || Cli { host, bundle: &bundle }.run(&["stack", "deploy", "-c", &nowhere, "--wait-timeout", "2s", "shop"])
    });
    let (ok, out, err) =
        tokio::time::timeout(Duration::from_secs(60), deploy).await.expect("ends in time").expect("joins");
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("the stack did not converge within 2s (--wait-timeout); what was deployed stays. Not there yet: shop_api: 0/1 running (no suitable node"),
        "{err}"
    );
    assert!(out.contains("Creating service shop_api\n"), "{out}");
    cli.inspect("shop_api");
    cluster.shutdown().await;
}

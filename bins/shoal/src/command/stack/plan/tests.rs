//! Tests of `plan`: deploys in Swarm's terms against a cluster kept in memory. [`apply`] plays
//! the manager's part (IDs for what is created, networks and payloads resolved in stored specs,
//! spec versions bumped on update), so a case can deploy, change the file and deploy again,
//! and check what each deploy would do.

use std::collections::HashMap;

use shoal_api::v1;
use shoal_compose::{LoadOptions, Source, load_sources};

use super::*;
use crate::command::stack::convert::convert;

/// The stack of the cases: web waits for db to be healthy; a network of its own and an
/// external one, a secret, a config.
const FILE: &str = r#"
services:
  web:
    image: shoal-test/web:v1
    depends_on:
      db: { condition: service_healthy }
    networks: [default, outside]
    configs: [site]
    deploy: { replicas: 2 }
  db:
    image: shoal-test/db:v1
    secrets: [db_password]
networks:
  outside: { external: true, name: corp }
secrets:
  db_password: { environment: DB_PASSWORD }
configs:
  site: { content: hello }
"#;

fn stack_of(yaml: &str, password: &str) -> Stack {
    let env = [("DB_PASSWORD".to_owned(), password.to_owned())].into();
    let options = LoadOptions { env, ignore_dot_env: true, ..LoadOptions::default() };
    let loaded = load_sources(&[Source::new("/srv/shop/compose.yml", yaml)], &options).expect("loads");
    convert(&loaded.project, "shop", &|_| Ok(Vec::new())).expect("converts").stack
}

fn labelled(name: &str, stack: Option<&str>) -> Option<v1::Annotations> {
    let labels = stack.map(|s| (NAMESPACE_LABEL.to_owned(), s.to_owned())).into_iter().collect();
    Some(v1::Annotations { name: name.to_owned(), labels })
}

fn network(id: &str, name: &str, stack: Option<&str>) -> v1::Network {
    let spec = v1::NetworkSpec { annotations: labelled(name, stack), driver: "overlay".into(), ..Default::default() };
    v1::Network { id: id.to_owned(), spec: Some(spec), ..Default::default() }
}

fn service(id: &str, name: &str, stack: Option<&str>) -> v1::Service {
    let spec = v1::ServiceSpec {
        annotations: labelled(name, stack),
        mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 1 })),
        ..Default::default()
    };
    v1::Service { id: id.to_owned(), spec: Some(spec), spec_version: 1, ..Default::default() }
}

/// A cluster with the external network `corp` and what another stack made.
fn cluster() -> Observed {
    Observed {
        networks: vec![network("n-corp", "corp", None), network("n-blog", "blog_default", Some("blog"))],
        services: vec![service("s-blog", "blog_db", Some("blog"))],
        ..Observed::default()
    }
}

/// The manager's part: what `plan` asks for, done to `observed` as the manager stores it.
fn apply(plan: &Plan, mut observed: Observed) -> Observed {
    for spec in &plan.networks {
        let name = spec.annotations.as_ref().map(|a| a.name.clone()).unwrap_or_default();
        let id = format!("n-{name}");
        observed.networks.push(v1::Network { id, spec: Some(spec.clone()), ..Default::default() });
    }
    for step in &plan.payloads {
        let list = match step.kind {
            Kind::Secret => &mut observed.secrets,
            Kind::Config => &mut observed.configs,
        };
        match &step.action {
            PayloadAction::Create { labels, data } => list.push(Payload {
                id: format!("p-{}", step.name),
                name: step.name.clone(),
                labels: labels.clone(),
                data_version: 1,
                digest: digest(data),
                ..Payload::default()
            }),
            PayloadAction::Update { read, labels, data } => {
                let stored = list.iter_mut().find(|p| p.id == read.id).expect("updates what exists");
                if let Some(labels) = labels {
                    stored.labels = labels.clone();
                }
                if !data.is_empty() {
                    stored.data_version += 1;
                    stored.digest = digest(data);
                }
            }
        }
    }
    observed.services.retain(|s| !plan.prune.iter().any(|(_, id)| *id == s.id));
    for step in &plan.services {
        let store = |spec: &v1::ServiceSpec, observed: &Observed| {
            let mut spec = spec.clone();
            for attachment in &mut spec.networks {
                let network = observed.networks.iter().find(|n| {
                    n.spec.as_ref().and_then(|s| s.annotations.as_ref()).is_some_and(|a| a.name == attachment.target)
                });
                attachment.target = network.expect("the network exists").id.clone();
            }
            let container = spec.task.as_mut().and_then(|t| t.container.as_mut()).expect("a container");
            for secret in &mut container.secrets {
                let stored = observed.secrets.iter().find(|p| p.name == secret.secret_name).expect("the secret");
                secret.secret_id.clone_from(&stored.id);
                secret.data_version = stored.data_version;
            }
            for config in &mut container.configs {
                let stored = observed.configs.iter().find(|p| p.name == config.config_name).expect("the config");
                config.config_id.clone_from(&stored.id);
                config.data_version = stored.data_version;
            }
            spec
        };
        match &step.action {
            ServiceAction::Create(spec) => {
                let spec = store(spec, &observed);
                let id = format!("s-{}", step.name);
                observed.services.push(v1::Service { id, spec: Some(spec), spec_version: 1, ..Default::default() });
            }
            ServiceAction::Update { read, spec } => {
                let spec = store(spec, &observed);
                let stored = observed.services.iter_mut().find(|s| s.id == read.id).expect("updates what exists");
                stored.previous_spec = stored.spec.replace(spec);
                stored.spec_version += 1;
            }
            ServiceAction::Unchanged { .. } => {}
        }
    }
    observed
}

/// What a plan does, one line per step.
fn describe(plan: &Plan) -> Vec<String> {
    let mut lines = Vec::new();
    for spec in &plan.networks {
        lines.push(format!("create network {}", spec.annotations.as_ref().map_or("", |a| a.name.as_str())));
    }
    for step in &plan.payloads {
        let noun = step.kind.noun();
        lines.push(match &step.action {
            PayloadAction::Create { .. } => format!("create {noun} {}", step.name),
            PayloadAction::Update { labels, data, .. } => format!(
                "update {noun} {}:{}{}",
                step.name,
                if labels.is_some() { " labels" } else { "" },
                if data.is_empty() { "" } else { " payload" }
            ),
        });
    }
    for (name, _) in &plan.prune {
        lines.push(format!("prune {name}"));
    }
    for step in &plan.services {
        let waits: Vec<String> = step.waits_for.iter().map(|(d, c)| format!(" after {d} {}", c.as_str())).collect();
        let verb = match step.action {
            ServiceAction::Create(_) => "create",
            ServiceAction::Update { .. } => "update",
            ServiceAction::Unchanged { .. } => "keep",
        };
        lines.push(format!("{verb} service {}{}", step.name, waits.concat()));
    }
    lines
}

#[test]
fn a_first_deploy_creates_everything_dependencies_first() {
    let plan = plan(&stack_of(FILE, "s3cret"), &cluster(), false).expect("plans");
    assert_eq!(
        describe(&plan),
        [
            "create network shop_default",
            "create secret shop_db_password",
            "create config shop_site",
            "create service shop_db",
            "create service shop_web after shop_db service_healthy",
        ]
    );
}

#[test]
fn a_redeploy_changes_only_what_the_file_changed() {
    let first = plan(&stack_of(FILE, "s3cret"), &cluster(), false).expect("plans");
    let mut observed = apply(&first, cluster());

    let again = plan(&stack_of(FILE, "s3cret"), &observed, false).expect("plans");
    assert_eq!(
        describe(&again),
        ["keep service shop_db", "keep service shop_web after shop_db service_healthy"],
        "the stored specs (network IDs, payload IDs and versions) are the file's"
    );

    // A `service update --force` since: the counter stays, so only the image replaces tasks.
    let web = observed.services.iter_mut().find(|s| s.id == "s-shop_web").expect("web");
    web.spec.as_mut().and_then(|s| s.task.as_mut()).expect("task").force_update = 3;
    let changed = FILE.replace("shoal-test/web:v1", "shoal-test/web:v2");
    let update = plan(&stack_of(&changed, "s3cret"), &observed, false).expect("plans");
    assert_eq!(describe(&update), ["keep service shop_db", "update service shop_web after shop_db service_healthy"]);
    let ServiceAction::Update { read, spec } = &update.services[1].action else { panic!("an update") };
    assert_eq!((read.id.as_str(), read.spec_version), ("s-shop_web", 1), "the write names what was read");
    assert_eq!(spec.task.as_ref().map(|t| t.force_update), Some(3));
    let observed = apply(&update, observed);
    let versions: Vec<(&str, u64)> = observed.services.iter().map(|s| (s.id.as_str(), s.spec_version)).collect();
    assert_eq!(versions, [("s-blog", 1), ("s-shop_db", 1), ("s-shop_web", 2)]);

    // A new password is a new version of the secret (the manager moves its services);
    // new labels are written alone.
    let relabelled = changed.replace(
        "configs:\n  site: { content: hello }",
        "configs:\n  site:\n    content: hello\n    labels: { v: \"2\" }",
    );
    let rotate = plan(&stack_of(&relabelled, "n3w"), &observed, false).expect("plans");
    assert_eq!(
        describe(&rotate),
        [
            "update secret shop_db_password: payload",
            "update config shop_site: labels",
            "keep service shop_db",
            "keep service shop_web after shop_db service_healthy",
        ]
    );
}

#[test]
fn prune_removes_only_the_stacks_services_the_file_lost() {
    let observed = apply(&plan(&stack_of(FILE, "s3cret"), &cluster(), false).expect("plans"), cluster());
    let without_db = r#"
services:
  web:
    image: shoal-test/web:v1
    networks: [default, outside]
    configs: [site]
    deploy: { replicas: 2 }
networks:
  outside: { external: true, name: corp }
configs:
  site: { content: hello }
"#;
    let kept = plan(&stack_of(without_db, "s3cret"), &observed, false).expect("plans");
    assert_eq!(describe(&kept), ["keep service shop_web"], "without --prune, shop_db stays");
    let pruned = plan(&stack_of(without_db, "s3cret"), &observed, true).expect("plans");
    assert_eq!(describe(&pruned), ["prune shop_db", "keep service shop_web"], "blog_db is another stack's");
}

#[test]
fn clashes_and_missing_externals_are_refused_before_anything_changes() {
    let with = |edit: &dyn Fn(&mut Observed)| {
        let mut observed = cluster();
        edit(&mut observed);
        observed
    };
    let cases: Vec<(&str, Observed, &str)> = vec![
        (
            "a missing external network",
            with(&|o| o.networks.retain(|n| n.id != "n-corp")),
            "network corp is declared as external, but could not be found; create it first (shoal network create corp)",
        ),
        (
            "a network of the stack's name that another stack made",
            with(&|o| o.networks.push(network("n-x", "shop_default", Some("blog")))),
            "network shop_default exists and belongs to stack blog, not to stack shop; declare it external: true",
        ),
        (
            "a secret of the stack's name that no stack made",
            with(&|o| o.secrets.push(Payload { name: "shop_db_password".into(), ..Payload::default() })),
            "secret shop_db_password exists and belongs to no stack, not to stack shop",
        ),
        (
            "a service of the stack's name outside it",
            with(&|o| o.services.push(service("s-x", "shop_web", None))),
            "service shop_web exists and belongs to no stack, not to stack shop; remove it (shoal service rm shop_web)",
        ),
        (
            "a mode change",
            with(&|o| {
                let mut db = service("s-db", "shop_db", Some("shop"));
                db.spec.as_mut().expect("spec").mode = Some(v1::service_spec::Mode::Global(v1::GlobalService {}));
                o.services.push(db);
            }),
            "service shop_db: its mode (replicated, global, job) cannot change in place",
        ),
    ];
    for (name, observed, expected) in cases {
        let err = plan(&stack_of(FILE, "s3cret"), &observed, false).expect_err(name).to_string();
        assert!(err.contains(expected), "{name}: {err}");
    }
    let external_secret = FILE.replace("db_password: { environment: DB_PASSWORD }", "db_password: { external: true }");
    let err = plan(&stack_of(&external_secret, ""), &cluster(), false).expect_err("missing").to_string();
    assert_eq!(
        err,
        "secret db_password is declared as external, but could not be found; create it first (shoal secret create \
         db_password FILE)"
    );
}

#[test]
fn the_normal_form_ignores_only_what_the_manager_fills_in() {
    let names: HashMap<&str, &str> = [("n-1", "shop_default")].into();
    let mut sent = v1::ServiceSpec {
        networks: vec![v1::NetworkAttachmentConfig { target: "shop_default".into(), aliases: vec!["web".into()] }],
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec {
                image: "web:v1".into(),
                secrets: vec![v1::SecretReference { secret_name: "shop_db".into(), ..Default::default() }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut stored = sent.clone();
    stored.networks[0].target = "n-1".into();
    let task = stored.task.as_mut().expect("task");
    task.force_update = 2;
    let secret = &mut task.container.as_mut().expect("container").secrets[0];
    (secret.secret_id, secret.data_version) = ("p-1".into(), 4);
    assert_eq!(normalised(&stored, &names), normalised(&sent, &names));
    sent.task.as_mut().and_then(|t| t.container.as_mut()).expect("container").image = "web:v2".into();
    assert_ne!(normalised(&stored, &names), normalised(&sent, &names));
}

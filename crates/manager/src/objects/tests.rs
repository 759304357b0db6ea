//! The object store on a one-member in-process raft-store: create, read, optimistic updates,
//! unique names, deletes.

use super::*;

use crate::testutil::store;

fn service(id: &str, name: &str, replicas: u64) -> v1::Service {
    v1::Service {
        id: id.to_owned(),
        spec: Some(v1::ServiceSpec {
            annotations: Some(v1::Annotations { name: name.to_owned(), ..Default::default() }),
            mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn replicas(s: &v1::Service) -> u64 {
    match s.spec.as_ref().and_then(|s| s.mode.as_ref()) {
        Some(v1::service_spec::Mode::Replicated(r)) => r.replicas,
        _ => 0,
    }
}

#[tokio::test]
async fn create_get_list_update_delete() {
    let (objects, _dir) = store("crud").await;
    let created = objects.create(service("s1", "web", 1)).await.expect("create");
    assert!(created.version() > 0, "a stored object carries its version");
    let read: v1::Service = objects.get("s1").await.expect("get");
    assert_eq!(read, created);

    let mut scaled = read.clone();
    if let Some(v1::service_spec::Mode::Replicated(r)) = scaled.spec.as_mut().and_then(|s| s.mode.as_mut()) {
        r.replicas = 5;
    }
    let updated = objects.update(scaled).await.expect("update");
    assert!(updated.version() > created.version());
    assert_eq!(replicas(&objects.get::<v1::Service>("s1").await.expect("get")), 5);

    objects.create(service("s2", "db", 1)).await.expect("create second");
    let all: Vec<v1::Service> = objects.list().await.expect("list");
    assert_eq!(all.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), ["s1", "s2"]);

    objects.delete::<v1::Service>("s1", updated.version()).await.expect("delete");
    let gone = objects.get::<v1::Service>("s1").await.expect_err("deleted");
    assert_eq!(gone.to_string(), "service s1 not found");
    // Its name is free again.
    objects.create(service("s3", "web", 1)).await.expect("name reusable after delete");
}

#[tokio::test]
async fn stale_versions_are_refused() {
    let (objects, _dir) = store("stale").await;
    let created = objects.create(service("s1", "web", 1)).await.expect("create");
    let first = objects.update(created.clone()).await.expect("first writer");
    let err = objects.update(created.clone()).await.expect_err("second writer with the old version");
    assert_eq!(
        err.to_string(),
        format!(
            "service s1 was changed by someone else (version {} is out of date); read it again and retry",
            created.version()
        )
    );
    let err = objects.delete::<v1::Service>("s1", created.version()).await.expect_err("stale delete");
    assert!(matches!(err, ObjectError::Conflict { .. }), "{err:?}");
    objects.delete::<v1::Service>("s1", first.version()).await.expect("delete at the current version");
    let err = objects.update(first).await.expect_err("update after delete");
    assert!(matches!(err, ObjectError::NotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn names_and_ids_are_unique() {
    let (objects, _dir) = store("names").await;
    objects.create(service("s1", "web", 1)).await.expect("create");
    let err = objects.create(service("s2", "web", 1)).await.expect_err("same name");
    assert_eq!(err.to_string(), "service name \"web\" is already in use by service s1");
    let err = objects.create(service("s1", "other", 1)).await.expect_err("same id");
    assert_eq!(err.to_string(), "service s1 already exists");

    // Renaming frees the old name and takes the new one atomically.
    let s2 = objects.create(service("s2", "api", 1)).await.expect("create");
    let mut renamed = s2.clone();
    if let Some(a) = renamed.spec.as_mut().and_then(|s| s.annotations.as_mut()) {
        a.name = "web".into();
    }
    let err = objects.update(renamed.clone()).await.expect_err("rename onto a taken name");
    assert!(matches!(err, ObjectError::NameTaken { .. }), "{err:?}");
    if let Some(a) = renamed.spec.as_mut().and_then(|s| s.annotations.as_mut()) {
        a.name = "api2".into();
    }
    objects.update(renamed).await.expect("rename to a free name");
    objects.create(service("s3", "api", 1)).await.expect("the old name is free");

    // Node names (hostnames) need not be unique.
    for id in ["n1", "n2"] {
        let node = v1::Node {
            id: id.into(),
            description: Some(v1::NodeDescription { hostname: "same-host".into(), ..Default::default() }),
            ..Default::default()
        };
        objects.create(node).await.expect("node");
    }
}

fn task(id: &str, slot: u64) -> v1::Task {
    v1::Task { id: id.to_owned(), service_id: "s".into(), slot, ..Default::default() }
}

#[tokio::test]
async fn batches_apply_together_and_a_stale_object_holds_back_no_other() {
    let (objects, _dir) = store("batch").await;
    let writes: Vec<Write<v1::Task>> = (0..1200).map(|i| Write::Create(task(&format!("t{i:04}"), i))).collect();
    let before = objects.store().revision();
    let outcomes = objects.write_all(writes).await.expect("batch");
    assert!(outcomes.iter().all(Result::is_ok), "{:?}", outcomes.iter().find(|o| o.is_err()));
    assert_eq!(objects.store().revision() - before, 3, "1,200 creates in three transactions of at most {BATCH}");
    let stored: Vec<v1::Task> = objects.list().await.expect("list");
    assert_eq!(stored.len(), 1200);
    assert!(stored.iter().all(|t| t.meta.as_ref().is_some_and(|m| m.created_at.is_some())));

    // t0001 changes behind the batch's back: its write is refused, every other one applies.
    let mut sneaky = stored[1].clone();
    sneaky.slot = 99;
    objects.update(sneaky).await.expect("concurrent write");
    let writes = vec![
        Write::Update(v1::Task { slot: 7, ..stored[0].clone() }),
        Write::Update(v1::Task { slot: 8, ..stored[1].clone() }),
        Write::Delete { id: stored[2].id.clone(), version: stored[2].version() },
        Write::Create(task("t0000", 1)),
        Write::Delete { id: "nowhere".into(), version: 3 },
    ];
    let outcomes = objects.write_all(writes).await.expect("batch");
    let kinds: Vec<String> =
        outcomes.iter().map(|o| o.as_ref().map_or_else(ToString::to_string, |()| "ok".into())).collect();
    assert_eq!(kinds[0], "ok");
    assert!(kinds[1].starts_with("task t0001 was changed by someone else"), "{}", kinds[1]);
    assert_eq!(kinds[2], "ok");
    assert_eq!(kinds[3], "task t0000 already exists");
    assert_eq!(kinds[4], "task nowhere not found");
    assert_eq!(objects.get::<v1::Task>("t0000").await.expect("t0").slot, 7);
    assert_eq!(objects.get::<v1::Task>("t0001").await.expect("t1").slot, 99);
    assert!(objects.get::<v1::Task>("t0002").await.is_err());
}

//! Payload versions: replacing, pruning, what the control API shows, users, targets, names and sizes.

use std::time::SystemTime;

use super::*;

fn secret(data: &[u8]) -> v1::Secret {
    v1::Secret::new("s1".into(), v1::Annotations { name: "db".into(), ..Default::default() }, data.to_vec())
}

fn service(id: &str, current: u64, previous: Option<u64>) -> v1::Service {
    let spec = |version: u64| v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: id.into(), ..Default::default() }),
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec {
                secrets: vec![v1::SecretReference {
                    secret_id: "s1".into(),
                    data_version: version,
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    v1::Service { id: id.into(), spec: Some(spec(current)), previous_spec: previous.map(spec), ..Default::default() }
}

#[test]
fn a_new_payload_is_a_new_version_and_the_same_bytes_are_not() {
    let mut s = secret(b"one");
    assert_eq!((s.data_version, s.digest.clone()), (1, digest_hex(b"one")));
    assert!(!replace(&mut s, b"one".to_vec(), SystemTime::now()), "unchanged");
    assert!(replace(&mut s, b"two".to_vec(), SystemTime::now()));
    assert!(replace(&mut s, b"three".to_vec(), SystemTime::now()));
    assert_eq!(s.data_version, 3);
    assert_eq!(payload_of(&s, 1), Some(&b"one"[..]));
    assert_eq!(payload_of(&s, 3), Some(&b"three"[..]));
    assert_eq!(payload_of(&s, 4), None);
    let two = for_node(&s, 2).expect("version 2");
    assert_eq!((two.data_version, two.spec.as_ref().map(|s| s.data.as_slice())), (2, Some(&b"two"[..])));
    assert!(two.previous.is_empty(), "a node gets one version");
}

#[test]
fn versions_stay_while_a_spec_or_a_live_task_names_them() {
    let mut s = secret(b"one");
    for data in [b"two", b"tri", b"for"] {
        replace(&mut s, data.to_vec(), SystemTime::now());
    }
    // Service a moved to 4 from 3 (rollback target); a task of version 2 still runs; one of
    // version 1 has finished.
    let services = [service("a", 4, Some(3))];
    let task = |version: u64, state: v1::TaskState| v1::Task {
        spec: services[0].spec.as_ref().and_then(|s| s.task.clone()).map(|mut t| {
            if let Some(c) = t.container.as_mut() {
                c.secrets[0].data_version = version;
            }
            t
        }),
        desired_state: v1::TaskState::Running as i32,
        status: Some(v1::TaskStatus { state: state as i32, ..Default::default() }),
        ..Default::default()
    };
    let tasks = [task(2, v1::TaskState::Running), task(1, v1::TaskState::Failed)];
    let used = versions_in_use::<v1::Secret>("s1", &services, &tasks);
    prune(&mut s, &used);
    let kept: Vec<u64> = s.previous.iter().map(|p| p.data_version).collect();
    assert_eq!(kept, [2, 3], "1 is gone, 2 runs, 3 is the rollback target");
}

#[test]
fn secrets_are_shown_without_payload_configs_with() {
    let shown_secret = shown(secret(b"hunter2"));
    assert!(shown_secret.spec.as_ref().is_some_and(|s| s.data.is_empty()));
    assert_eq!(shown_secret.digest, digest_hex(b"hunter2"), "the digest tells versions apart");
    let config =
        v1::Config::new("c".into(), v1::Annotations { name: "site".into(), ..Default::default() }, b"x=1".to_vec());
    assert_eq!(shown(config).spec.map(|s| s.data), Some(b"x=1".to_vec()));
}

#[test]
fn users_names_and_targets() {
    assert_eq!(users::<v1::Secret>("s1", &[service("b", 1, None), service("a", 1, None)]), ["a", "b"]);
    assert!(users::<v1::Secret>("other", &[service("a", 1, None)]).is_empty());
    let r = |name: &str| v1::SecretReference {
        secret_name: "db".into(),
        file: Some(v1::FileTarget { name: name.into(), ..Default::default() }),
        ..Default::default()
    };
    assert_eq!(target_path::<v1::Secret>(&r("")), "/run/secrets/db");
    assert_eq!(target_path::<v1::Secret>(&r("pw")), "/run/secrets/pw");
    assert_eq!(target_path::<v1::Secret>(&r("/etc/app/pw")), "/etc/app/pw");
    let c = v1::ConfigReference { config_name: "site".into(), ..Default::default() };
    assert_eq!(target_path::<v1::Config>(&c), "/site");
    assert!(validate_payload_name("secret", "db.password-1").is_ok());
    for bad in ["", "-db", "db/pw", "db pw", &"x".repeat(65)] {
        assert!(validate_payload_name("secret", bad).is_err(), "{bad:?}");
    }
    assert!(validate_payload_size::<v1::Secret>("db", &vec![0; MAX_SECRET_BYTES]).is_ok());
    let err = validate_payload_size::<v1::Secret>("db", &vec![0; MAX_SECRET_BYTES + 1]).expect_err("too big");
    assert!(err.contains("512000 bytes, the limit is 511999 (under 500 KiB)"), "{err}");
    assert!(validate_payload_size::<v1::Config>("c", &vec![0; MAX_SECRET_BYTES + 1]).is_ok(), "configs may be larger");
    assert!(validate_payload_size::<v1::Secret>("db", b"").expect_err("empty").contains("empty"));
}

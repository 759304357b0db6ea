//! The node's payloads and the tasks' files: what the assignments bring, what a task lacks, and the tmpfs each task's files live on (privileged).

use super::*;
use shoal_testkit::privileged::{Need, require};

fn secret_change(id: &str, version: u64, data: &[u8], remove: bool) -> v1::AssignmentChange {
    let action = if remove { v1::assignment_change::Action::Remove } else { v1::assignment_change::Action::Update };
    v1::AssignmentChange {
        action: action as i32,
        secret: Some(v1::Secret {
            id: id.into(),
            data_version: version,
            spec: Some(v1::SecretSpec { annotations: None, data: data.to_vec() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container() -> v1::ContainerSpec {
    v1::ContainerSpec {
        secrets: vec![v1::SecretReference {
            secret_id: "s1".into(),
            secret_name: "db".into(),
            file: Some(v1::FileTarget { name: "db".into(), uid: 1000, gid: 1001, mode: 0o400 }),
            data_version: 2,
        }],
        configs: vec![v1::ConfigReference {
            config_id: "c1".into(),
            config_name: "site".into(),
            file: Some(v1::FileTarget { name: "".into(), uid: 0, gid: 0, mode: 0o444 }),
            data_version: 1,
        }],
        ..Default::default()
    }
}

fn config_change(id: &str, data: &[u8]) -> v1::AssignmentChange {
    v1::AssignmentChange {
        config: Some(v1::Config {
            id: id.into(),
            data_version: 1,
            spec: Some(v1::ConfigSpec { annotations: None, data: data.to_vec() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn payloads_follow_the_assignments_and_never_show_in_debug() {
    let mut held = Payloads::default();
    assert!(!held.apply(&v1::AssignmentChange::default()), "a task change is not a payload");
    assert!(held.apply(&secret_change("s1", 1, b"pw-one", false)));
    assert!(held.apply(&secret_change("s1", 2, b"pw-two", false)));
    assert_eq!(held.get(Kind::Secret, "s1", 2), Some(&b"pw-two"[..]));
    held.apply(&secret_change("s1", 1, b"", true));
    assert_eq!((held.get(Kind::Secret, "s1", 1), held.len()), (None, 1));
    assert!(!format!("{held:?}").contains("pw-two"));
    held.set_complete(&[config_change("c1", b"x")]);
    assert_eq!((held.len(), held.get(Kind::Config, "c1", 1)), (1, Some(&b"x"[..])), "a complete set replaces all");
}

#[test]
fn a_missing_payload_is_named_and_targets_follow_docker() {
    let mut held = Payloads::default();
    held.apply(&config_change("c1", b"x=1"));
    let files = TaskFiles::new(None);
    let err = files.prepare("t1", &container(), &held).expect_err("secret missing");
    assert_eq!(
        err,
        "secret db (s1) version 2 is not available on this node; the manager did not send it (removed meanwhile?)"
    );
    held.apply(&secret_change("s1", 2, b"pw", false));
    let mounts = files.prepare("t1", &container(), &held).expect("simulated");
    let targets: Vec<&str> = mounts
        .iter()
        .map(|m| match m {
            Mount::Bind { target, read_only: true, .. } => target.as_str(),
            other => panic!("not a read-only bind: {other:?}"),
        })
        .collect();
    assert_eq!(targets, ["/run/secrets/db", "/site"]);
}

#[test]
fn files_are_written_on_a_tmpfs_of_their_own_and_go_with_it() {
    if !require("files_are_written_on_a_tmpfs_of_their_own_and_go_with_it", &[Need::Root]) {
        return;
    }
    let root = std::env::temp_dir().join(format!("shoal-agent-files-{}", std::process::id()));
    let mut held = Payloads::default();
    held.apply(&secret_change("s1", 2, b"correct-horse", false));
    held.apply(&config_change("c1", b"x=1"));
    let files = TaskFiles::new(Some(root.clone()));
    let mounts = files.prepare("t1", &container(), &held).expect("prepared");
    let Some(Mount::Bind { source, .. }) = mounts.first() else { panic!("no mount: {mounts:?}") };
    assert!(!source.to_string_lossy().contains("db"), "the host path names no secret: {}", source.display());
    let stat = nix::sys::statfs::statfs(source.as_path()).expect("statfs");
    assert_eq!(stat.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC, "on a tmpfs");
    assert_eq!(std::fs::read(source).expect("read"), b"correct-horse");
    let meta = std::fs::metadata(source).expect("meta");
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    assert_eq!((meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777), (1000, 1001, 0o400));
    files.release("t1");
    assert!(!root.join("t1").exists(), "unmounted and removed");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounted.contains(&root.to_string_lossy().to_string()), "no mount left under {}", root.display());
    let _ = std::fs::remove_dir_all(&root);
}

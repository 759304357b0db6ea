//! Secrets and configs as text: payload checks, JSON (never a secret's data), `--pretty`, the
//! list, and what `update` prints.

use std::time::Duration;

use super::*;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn payload(name: &str, id: &str, data_version: u64) -> Payload {
    Payload {
        id: id.into(),
        version: 12,
        created: Some(now() - Duration::from_secs(7200)),
        updated: Some(now() - Duration::from_secs(90)),
        name: name.into(),
        labels: [("env".to_owned(), "prod".to_owned()), ("flag".to_owned(), String::new())].into_iter().collect(),
        data_version,
        digest: "9f86d081884c7d65".into(),
        data: b"user nginx;\n".to_vec(),
    }
}

#[test]
fn payloads_are_checked_with_their_sizes() {
    assert_eq!(check_payload(Kind::Secret, "key.pem", b"x".to_vec(), false), Ok(b"x".to_vec()));
    assert_eq!(check_payload(Kind::Secret, "key.pem", vec![0; 500 * 1024 - 1], false).map(|d| d.len()), Ok(511_999));
    assert_eq!(
        check_payload(Kind::Secret, "standard input", Vec::new(), false),
        Err("standard input is empty: a secret needs a payload of 1 byte to 500.0 KiB".to_owned())
    );
    assert_eq!(
        check_payload(Kind::Secret, "big.bin", vec![0; 600 * 1024], false),
        Err("big.bin is 600.0 KiB (614400 bytes): a secret must be smaller than 500.0 KiB (512000 bytes)".to_owned())
    );
    assert_eq!(
        check_payload(Kind::Secret, "big.bin", vec![0; 500 * 1024], false),
        Err("big.bin is 500.0 KiB (512000 bytes): a secret must be smaller than 500.0 KiB (512000 bytes)".to_owned())
    );
    assert_eq!(
        check_payload(Kind::Config, "huge.conf", vec![0; 2000 * 1024 + 1], true),
        Err("huge.conf is more than 2000.0 KiB: a config must be smaller than 1000.0 KiB (1024000 bytes)".to_owned())
    );
    assert_eq!(check_payload(Kind::Config, "nginx.conf", vec![0; 600 * 1024], false).map(|d| d.len()), Ok(614_400));
}

#[test]
fn base64_as_go_encodes_bytes() {
    let cases: [(&[u8], &str); 6] = [
        (b"", ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"foo", "Zm9v"),
        (b"foobar", "Zm9vYmFy"),
        (&[0xff, 0xfe], "//4="),
    ];
    for (data, expected) in cases {
        assert_eq!(base64(data), expected);
    }
}

#[test]
fn a_secret_never_carries_its_data() {
    let secret = v1::Secret {
        id: "s1".into(),
        spec: Some(v1::SecretSpec {
            annotations: Some(v1::Annotations { name: "key".into(), ..Default::default() }),
            data: b"hunter2".to_vec(),
        }),
        data_version: 3,
        ..Default::default()
    };
    let shown = Payload::from(secret);
    assert!(shown.data.is_empty(), "dropped even when a manager sends it");
    assert_eq!((shown.name.as_str(), shown.data_version), ("key", 3));
    let json = payload_json(&shown, false).to_string();
    assert!(!json.contains("hunter2") && !json.contains("aHVudGVyMg"), "{json}");
    assert!(!pretty(Kind::Secret, &shown).contains("hunter2"));
    let config = Payload::from(v1::Config {
        spec: Some(v1::ConfigSpec { annotations: None, data: b"listen 80;".to_vec() }),
        ..Default::default()
    });
    assert_eq!(config.data, b"listen 80;");
}

#[test]
fn json_is_dockers_with_the_version_and_digest() {
    let secret = payload_json(&payload("key", "s1", 2), false);
    assert_eq!(
        secret,
        serde_json::json!({
            "ID": "s1",
            "Version": {"Index": 12},
            "CreatedAt": "2027-01-15T06:00:00Z",
            "UpdatedAt": "2027-01-15T07:58:30Z",
            "Spec": {"Name": "key", "Labels": {"env": "prod", "flag": ""}},
            "DataVersion": 2,
            "Digest": "sha256:9f86d081884c7d65",
        })
    );
    let config = payload_json(&payload("nginx", "c1", 1), true);
    assert_eq!(config["Spec"]["Data"], "dXNlciBuZ2lueDsK", "base64, as Go's JSON shows bytes");
}

#[test]
fn pretty_is_dockers_format() {
    let expected = "ID:              s1
Name:            key
Labels:
 - env=prod
 - flag
Created at:      2027-01-15 06:00:00 +0000 UTC
Updated at:      2027-01-15 07:58:30 +0000 UTC
Data version:    2
Digest:          sha256:9f86d081884c7d65
";
    assert_eq!(pretty(Kind::Secret, &payload("key", "s1", 2)), expected);
    let config = pretty(Kind::Config, &payload("nginx", "c1", 1));
    assert!(config.ends_with("Digest:          sha256:9f86d081884c7d65\nData:\nuser nginx;\n\n"), "{config}");
}

#[test]
fn ls_lists_by_name_with_the_version() {
    let list = [payload("web-key", "s2", 3), payload("api-key", "s1", 1)];
    assert_eq!(
        payload_table(&list, now()),
        "ID   NAME      VERSION   CREATED       UPDATED\n\
         s1   api-key   1         2 hours ago   About a minute ago\n\
         s2   web-key   3         2 hours ago   About a minute ago\n"
    );
    let rows = payload_rows(&list, now());
    assert_eq!(rows[0][5], "env=prod,flag=");
    assert_eq!(rows[1][6], "sha256:9f86d081884c7d65");
    assert_eq!(rows[0].len(), PAYLOAD_COLUMNS.len());
}

#[test]
fn update_reports_what_it_did() {
    let services = ["api".to_owned(), "web".to_owned()];
    assert_eq!(update_report(Kind::Secret, "key", true, false, &services), "api\nweb\n");
    assert_eq!(update_report(Kind::Secret, "key", true, false, &[]), "no service uses secret key\n");
    assert_eq!(update_report(Kind::Config, "nginx", false, true, &[]), "nginx\n", "labels only: the name");
    assert_eq!(
        update_report(Kind::Config, "nginx", true, true, &[]),
        "config nginx already has this payload; nothing changed\n"
    );
    let read = payload("key", "s1", 1);
    let labels = edit_labels(Kind::Secret, &read, &["flag".to_owned()], &[("tier".to_owned(), "db".to_owned())]);
    let expected: HashMap<String, String> =
        [("env", "prod"), ("tier", "db")].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    assert_eq!(labels, Ok(expected));
    assert_eq!(
        edit_labels(Kind::Secret, &read, &["nope".to_owned()], &[]),
        Err("--label-rm nope: secret key has no label nope".to_owned())
    );
}

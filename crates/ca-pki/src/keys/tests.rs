//! Keys-at-rest tests: unlock key format, DEK wrapping, key files and their modes.

use std::os::unix::fs::PermissionsExt;

use super::*;

#[test]
fn unlock_key_round_trips() {
    let key = UnlockKey::generate().expect("key");
    let text = key.to_string();
    assert!(text.starts_with("SHKEY-1-"));
    assert_eq!(text.len(), 8 + 50);
    assert_eq!(text.parse::<UnlockKey>().expect("parse"), key);
    assert_eq!(format!("{key:?}"), "UnlockKey([redacted])");
}

#[test]
fn malformed_unlock_keys_have_precise_messages() {
    let body = "1".repeat(50);
    let table = [
        (
            format!("SWMKEY-1-{body}"),
            "unlock key must start with SHKEY-, found \"SWMKEY\": pass the key printed by `shoal cluster unlock-key`",
        ),
        (format!("SHKEY-2-{body}"), "unlock key version \"2\" is not supported: this build reads version 1"),
        (
            format!("SHKEY-1-{}", &body[1..]),
            "unlock key body is 49 characters long, expected 50: the key was cut or altered",
        ),
        (
            format!("SHKEY-1-{}X", &body[1..]),
            "unlock key has 'X' at position 50 of its body: only 0-9 and a-z are allowed",
        ),
        (format!("SHKEY-1-{}", "z".repeat(50)), "unlock key body is larger than 256 bits: the key was altered"),
    ];
    for (input, expected) in table {
        let err = input.parse::<UnlockKey>().expect_err(&input);
        assert_eq!(err.to_string(), expected, "input {input:?}");
    }
}

#[test]
fn data_key_wraps_and_unwraps() {
    let kek = UnlockKey::generate().expect("kek");
    let dek = DataKey::generate().expect("dek");
    let wrapped = dek.wrap(&kek).expect("wrap");
    assert_ne!(&wrapped[1..33], dek.as_bytes().as_slice());
    assert_eq!(DataKey::unwrap(&wrapped, &kek).expect("unwrap"), dek);

    let wrong = UnlockKey::generate().expect("other kek");
    let err = DataKey::unwrap(&wrapped, &wrong).expect_err("wrong kek");
    assert_eq!(
        err.to_string(),
        "the unlock key does not open the wrapped data-encryption key: check that it is this cluster's current unlock key"
    );
    let mut tampered = wrapped.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert!(matches!(DataKey::unwrap(&tampered, &kek), Err(KeyError::WrongUnlockKey { .. })));
    assert!(matches!(DataKey::unwrap(&[], &kek), Err(KeyError::Malformed { .. })));
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn plaintext_key_file_has_mode_0600() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.key");
    write_key_file(&path, b"secret key", None).expect("write");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(std::fs::read(&path).expect("read"), b"secret key");
    assert_eq!(read_key_file(&path, None).expect("read"), b"secret key");
    // Overwriting keeps the mode and leaves no temporary files behind.
    write_key_file(&path, b"new key", None).expect("rewrite");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
}

#[test]
fn encrypted_key_file_needs_the_unlock_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.key");
    let kek = UnlockKey::generate().expect("kek");
    write_key_file(&path, b"secret key", Some(&kek)).expect("write");
    assert_eq!(mode(&path), 0o600);
    let on_disk = std::fs::read(&path).expect("read");
    assert!(!on_disk.windows(6).any(|w| w == b"secret"));
    assert_eq!(read_key_file(&path, Some(&kek)).expect("read"), b"secret key");

    let err = read_key_file(&path, None).expect_err("locked");
    assert_eq!(err.to_string(), format!("key file {} is encrypted: supply the cluster's unlock key", path.display()));
}

#[test]
fn wrong_unlock_key_is_clear_and_overwrites_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("node.key");
    let kek = UnlockKey::generate().expect("kek");
    let wrong = UnlockKey::generate().expect("wrong");
    let new = UnlockKey::generate().expect("new");
    write_key_file(&path, b"secret key", Some(&kek)).expect("write");
    let before = std::fs::read(&path).expect("read");

    let err = read_key_file(&path, Some(&wrong)).expect_err("wrong key");
    assert_eq!(
        err.to_string(),
        format!(
            "the unlock key does not open key file {}: check that it is this cluster's current unlock key",
            path.display()
        )
    );
    let err = rekey_key_file(&path, Some(&wrong), Some(&new)).expect_err("wrong old key");
    assert!(matches!(err, KeyError::WrongUnlockKey { .. }), "{err}");
    assert_eq!(std::fs::read(&path).expect("read"), before);
    assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);

    rekey_key_file(&path, Some(&kek), Some(&new)).expect("rekey");
    assert_eq!(read_key_file(&path, Some(&new)).expect("read"), b"secret key");
    rekey_key_file(&path, Some(&new), None).expect("decrypt");
    assert_eq!(std::fs::read(&path).expect("read"), b"secret key");
}

#[test]
fn a_rotated_key_recovers_the_one_it_replaced_and_blobs_need_their_key() {
    let (old, new) = (UnlockKey::generate().expect("old"), UnlockKey::generate().expect("new"));
    let sealed = new.seal_previous(&old).expect("seal");
    assert_eq!(new.open_previous(&sealed).expect("open"), old);
    let err = old.open_previous(&sealed).expect_err("only the new key opens it");
    assert!(matches!(err, KeyError::WrongUnlockKey { .. }), "{err}");
    assert_eq!(UnlockKey::from_bytes(*new.as_bytes()), new);

    let blob = new.seal_blob(b"backup").expect("seal");
    assert_eq!(new.open_blob(&blob, "the backup").expect("open"), b"backup");
    let err = old.open_blob(&blob, "the backup").expect_err("wrong key");
    assert_eq!(
        err.to_string(),
        "the unlock key does not open the backup: check that it is this cluster's current unlock key"
    );
    // A sealed previous key is no blob (and the reverse): each use has its own associated data.
    assert!(new.open_blob(&sealed, "x").is_err());
    assert!(new.open_previous(&blob).is_err());
}

#[test]
fn encrypted_key_files_are_told_from_plain_ones() {
    let dir = std::env::temp_dir().join(format!("shoal-keys-encrypted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("k");
    write_key_file(&path, b"secret", None).expect("plain");
    assert!(!key_file_is_encrypted(&path).expect("read"));
    write_key_file(&path, b"secret", Some(&UnlockKey::generate().expect("kek"))).expect("sealed");
    assert!(key_file_is_encrypted(&path).expect("read"));
    let _ = std::fs::remove_dir_all(&dir);
}

//! Replacing a key and certificate pair: every state a crash can leave loads as the old pair or
//! the new one, and a pair that really mismatches is refused with a message that says what to do.

use std::path::Path;

use time::OffsetDateTime;

use crate::{
    CaError, ClusterCa, CredentialsError, DEFAULT_NODE_VALIDITY, NodeCredentials, NodeIdentity, NodeKey, Role, RootCa,
    UnlockKey,
};

/// What a file holds in a simulated crash state.
#[derive(Clone, Copy)]
enum Content {
    Old,
    New,
    /// A temporary file cut short by the crash.
    Torn,
}

/// Files by name (`C` the certificate, `K` the key) and what each holds.
type Layout = Vec<(&'static str, Content)>;
/// Loads a pair from a directory: the certificate PEM loaded, or the error's message.
type Load = Box<dyn Fn(&Path) -> Result<String, String>>;

/// The files a save leaves after each of its steps (`C` the certificate, `K` the key), and
/// whether the new pair must load from there.
fn crash_states() -> Vec<(&'static str, Layout, bool)> {
    use Content::{New, Old, Torn};
    vec![
        ("before the save", vec![("C", Old), ("K", Old)], false),
        ("key temporary file torn", vec![("C", Old), ("K", Old), ("K.new.tmp-1", Torn)], false),
        ("K.new written", vec![("C", Old), ("K", Old), ("K.new", New)], false),
        ("certificate temporary file torn", vec![("C", Old), ("K", Old), ("K.new", New), ("C.new.tmp-1", Torn)], false),
        ("C.new written: committed", vec![("C", Old), ("K", Old), ("K.new", New), ("C.new", New)], true),
        ("key renamed", vec![("C", Old), ("K", New), ("C.new", New)], true),
        ("certificate renamed", vec![("C", New), ("K", New)], true),
    ]
}

/// The certificate and key file contents of a pair, as `save` writes them.
struct Saved {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// One kind of pair: its file names, how to save a fresh one and how to load it (as the
/// certificate PEM loaded, or the error's message).
struct Kind {
    cert: &'static str,
    key: &'static str,
    save_new: Box<dyn Fn(&Path) -> String>,
    load: Load,
}

fn saved(kind: &Kind) -> (Saved, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_pem = (kind.save_new)(dir.path());
    let read = |name: &str| std::fs::read(dir.path().join(name)).expect("saved file");
    (Saved { cert: read(kind.cert), key: read(kind.key) }, cert_pem)
}

fn check(kind: &Kind) {
    let (old, old_pem) = saved(kind);
    let (new, new_pem) = saved(kind);
    for (step, files, new_wins) in crash_states() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, content) in files {
            let name = name.replacen('C', kind.cert, 1).replacen('K', kind.key, 1);
            let bytes: &[u8] = match (content, name.starts_with(kind.cert)) {
                (Content::Old, true) => &old.cert,
                (Content::Old, false) => &old.key,
                (Content::New, true) => &new.cert,
                (Content::New, false) => &new.key,
                (Content::Torn, _) => b"-----BEGIN",
            };
            std::fs::write(dir.path().join(name), bytes).expect("write");
        }
        let loaded = (kind.load)(dir.path()).unwrap_or_else(|e| panic!("{}, {step}: {e}", kind.cert));
        let expected = if new_wins { &new_pem } else { &old_pem };
        assert_eq!(&loaded, expected, "{}, {step}: wrong pair", kind.cert);
        if new_wins {
            // Loading finished the replacement.
            for name in [kind.cert, kind.key] {
                assert!(!dir.path().join(format!("{name}.new")).exists(), "{}, {step}: {name}.new left", kind.cert);
            }
        }
        // Whatever the crash left, the next save and load work.
        let third = (kind.save_new)(dir.path());
        assert_eq!((kind.load)(dir.path()).expect("load after save"), third, "{}, {step}", kind.cert);
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn node_kind(kek: Option<UnlockKey>) -> Kind {
    let ca = ClusterCa::new(RootCa::generate(now()).expect("root"));
    let save_kek = kek.clone();
    Kind {
        cert: "node.crt",
        key: "node.key",
        save_new: Box::new(move |dir| {
            let key = NodeKey::generate().expect("key");
            let identity = NodeIdentity { node_id: "node-7".into(), role: Role::Worker, cluster_id: "c".into() };
            let chain = ca.issue(&key.csr_pem().expect("csr"), &identity, DEFAULT_NODE_VALIDITY, now()).expect("issue");
            NodeCredentials::new(&chain, key).expect("credentials").save(dir, save_kek.as_ref()).expect("save");
            chain
        }),
        load: Box::new(move |dir| {
            NodeCredentials::load(dir, kek.as_ref()).map(|c| c.chain_pem().to_owned()).map_err(|e| e.to_string())
        }),
    }
}

fn root_kind(kek: Option<UnlockKey>) -> Kind {
    let save_kek = kek.clone();
    Kind {
        cert: "ca.crt",
        key: "ca.key",
        save_new: Box::new(move |dir| {
            let root = RootCa::generate(now()).expect("root");
            root.save(dir, save_kek.as_ref()).expect("save");
            root.cert_pem().to_owned()
        }),
        load: Box::new(move |dir| {
            RootCa::load(dir, kek.as_ref()).map(|r| r.cert_pem().to_owned()).map_err(|e| e.to_string())
        }),
    }
}

#[test]
fn node_credentials_survive_a_crash_at_every_step_of_a_save() {
    check(&node_kind(None));
    check(&node_kind(Some(UnlockKey::generate().expect("kek"))));
}

#[test]
fn root_ca_survives_a_crash_at_every_step_of_a_save() {
    check(&root_kind(None));
    check(&root_kind(Some(UnlockKey::generate().expect("kek"))));
}

/// Saves two pairs and puts the first one's certificate beside the second one's key.
fn mismatched(kind: &Kind) -> tempfile::TempDir {
    let (old, _) = saved(kind);
    let dir = tempfile::tempdir().expect("tempdir");
    (kind.save_new)(dir.path());
    std::fs::write(dir.path().join(kind.cert), &old.cert).expect("write");
    dir
}

#[test]
fn a_mismatched_node_pair_is_refused_with_what_to_do() {
    let dir = mismatched(&node_kind(None));
    let err = NodeCredentials::load(dir.path(), None).expect_err("mismatch");
    assert!(matches!(err, CredentialsError::SavedKeyMismatch { .. }), "{err:?}");
    let d = dir.path().display();
    assert_eq!(
        err.to_string(),
        format!(
            "node certificate {d}/node.crt (node node-7) does not belong to the key {d}/node.key: restore {d} from a \
             backup, or remove the node from the cluster (`shoal node rm node-7`) and join it again with an empty \
             --data-dir"
        )
    );
}

#[test]
fn a_mismatched_root_pair_is_refused_with_what_to_do() {
    let dir = mismatched(&root_kind(None));
    let err = RootCa::load(dir.path(), None).expect_err("mismatch");
    assert!(matches!(err, CaError::SavedKeyMismatch { .. }), "{err:?}");
    let d = dir.path().display();
    assert_eq!(
        err.to_string(),
        format!(
            "root CA certificate {d}/ca.crt does not match the key {d}/ca.key: restore {d} from a backup; a manager \
             in a cluster with other managers can instead be removed from the cluster and joined again with an \
             empty --data-dir"
        )
    );
}

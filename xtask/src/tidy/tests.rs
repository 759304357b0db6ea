//! Tests of the tidy checker: the real workspace passes, and each violation on synthetic input fails
//! with a message naming the crate or file.

use super::*;

/// A temp directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("shoal-tidy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn package(root: &Path, dir: &str, name: &str, deps: &[(&str, Option<&str>)]) -> Package {
    Package {
        name: name.to_owned(),
        dir: root.join(dir),
        is_lib: !dir.starts_with("bins"),
        deps: deps.iter().map(|(n, k)| Dep { name: (*n).to_owned(), kind: k.map(str::to_owned) }).collect(),
    }
}

/// A well-layered synthetic workspace.
fn good(root: &Path) -> Vec<Package> {
    vec![
        package(root, "crates/scheduler", "shoal-scheduler", &[("thiserror", None), ("shoal-testkit", Some("dev"))]),
        package(root, "crates/ca-pki", "shoal-ca-pki", &[("rustls", None)]),
        package(root, "crates/raft-store", "shoal-raft-store", &[]),
        package(root, "crates/api", "shoal-api", &[("prost", None)]),
        package(
            root,
            "crates/manager",
            "shoal-manager",
            &[("shoal-raft-store", None), ("shoal-scheduler", None), ("shoal-api", None)],
        ),
        package(root, "bins/manager", "shoal-manager-bin", &[("shoal-manager", None), ("anyhow", None)]),
        package(root, "crates/testkit", "shoal-testkit", &[("shoal-manager", None)]),
    ]
}

fn messages(problems: &[Problem]) -> Vec<String> {
    problems.iter().map(ToString::to_string).collect()
}

#[test]
fn real_workspace_is_tidy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let problems = check_workspace(root).expect("run tidy");
    assert!(problems.is_empty(), "tidy problems:\n{}", messages(&problems).join("\n"));
}

#[test]
fn well_layered_workspace_passes() {
    let root = Path::new("/ws");
    assert_eq!(messages(&check_layering(root, &good(root))), Vec::<String>::new());
}

#[test]
fn each_layering_violation_is_named() {
    let root = Path::new("/ws");
    // (mutation of the good workspace, expected message fragment)
    let cases: &[(&str, &str, &str)] = &[
        (
            "shoal-scheduler",
            "shoal-ca-pki",
            "shoal-scheduler depends on shoal-ca-pki: subsystem crates depend on no other Shoal crate",
        ),
        ("shoal-raft-store", "shoal-api", "shoal-raft-store depends on shoal-api: subsystem crates"),
        ("shoal-manager", "shoal-runtime", "shoal-manager depends on shoal-runtime: shoal-manager may depend on:"),
        ("shoal-api", "shoal-manager", "shoal-api depends on shoal-manager: shoal-api may depend on: none"),
        ("shoal-ca-pki", "anyhow", "library crate shoal-ca-pki depends on anyhow"),
        (
            "shoal-manager",
            "shoal-testkit",
            "shoal-manager depends on test tooling shoal-testkit outside [dev-dependencies]",
        ),
    ];
    for (crate_name, dep, expected) in cases {
        let mut packages = good(root);
        // The dependency must exist as a workspace crate for the layering rule to apply.
        packages.push(package(root, "crates/runtime", "shoal-runtime", &[]));
        let target = packages.iter_mut().find(|p| p.name == *crate_name).expect("crate in fixture");
        target.deps.push(Dep { name: (*dep).to_owned(), kind: None });
        let found = messages(&check_layering(root, &packages));
        assert!(
            found.iter().any(|m| m.contains(expected)),
            "adding {dep} to {crate_name}: expected a problem containing {expected:?}, got {found:?}"
        );
    }
}

#[test]
fn unknown_crate_must_be_placed_in_a_layer() {
    let root = Path::new("/ws");
    let mut packages = good(root);
    packages.push(package(root, "crates/gossip", "shoal-gossip", &[]));
    let found = messages(&check_layering(root, &packages));
    assert!(
        found.iter().any(|m| m.starts_with("crate shoal-gossip (/ws/crates/gossip) is not in the layering table")),
        "{found:?}"
    );
}

#[test]
fn dev_dependencies_on_tooling_and_anyhow_are_allowed() {
    let root = Path::new("/ws");
    let mut packages = good(root);
    packages[0].deps.push(Dep { name: "anyhow".to_owned(), kind: Some("dev".to_owned()) });
    assert_eq!(messages(&check_layering(root, &packages)), Vec::<String>::new());
}

#[test]
fn parses_cargo_metadata() {
    let json = r#"{
      "workspace_members": ["path+file:///ws/crates/a#shoal-a@0.1.0"],
      "packages": [
        {"id": "path+file:///ws/crates/a#shoal-a@0.1.0", "name": "shoal-a",
         "manifest_path": "/ws/crates/a/Cargo.toml",
         "targets": [{"kind": ["lib"]}],
         "dependencies": [{"name": "thiserror", "kind": null}, {"name": "proptest", "kind": "dev"}]},
        {"id": "registry+https://github.com/rust-lang/crates.io-index#thiserror@2.0.0", "name": "thiserror",
         "manifest_path": "/reg/thiserror/Cargo.toml", "targets": [], "dependencies": []}
      ]}"#;
    let packages = parse_metadata(json).expect("parse");
    assert_eq!(packages.len(), 1, "only workspace members are kept");
    assert_eq!(packages[0].name, "shoal-a");
    assert_eq!(packages[0].dir, PathBuf::from("/ws/crates/a"));
    assert!(packages[0].is_lib);
    assert_eq!(packages[0].deps[1], Dep { name: "proptest".to_owned(), kind: Some("dev".to_owned()) });
}

#[test]
fn missing_readme_and_lints_are_named() {
    let tmp = TempDir::new("manifests");
    let good_dir = tmp.0.join("good");
    let bad_dir = tmp.0.join("bad");
    for dir in [&good_dir, &bad_dir] {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(good_dir.join("Cargo.toml"), "[package]\nname = \"good\"\n\n[lints]\nworkspace = true\n")
        .expect("write");
    std::fs::write(good_dir.join("README.md"), "# good\n").expect("write");
    std::fs::write(bad_dir.join("Cargo.toml"), "[package]\nname = \"bad\"\n[lints.rust]\nunsafe_code = \"deny\"\n")
        .expect("write");
    let packages = vec![
        Package { name: "good".to_owned(), dir: good_dir, is_lib: true, deps: vec![] },
        Package { name: "bad".to_owned(), dir: bad_dir.clone(), is_lib: true, deps: vec![] },
    ];
    let found = messages(&check_manifests(&packages));
    assert_eq!(
        found,
        vec![
            format!("{}: crate bad must have `[lints] workspace = true`", bad_dir.join("Cargo.toml").display()),
            format!(
                "crate bad has no README.md in {} (what it is, its API in ten lines, an example)",
                bad_dir.display()
            ),
        ]
    );
}

#[test]
fn files_without_module_doc_are_named() {
    let tmp = TempDir::new("headers");
    let src = tmp.0.join("crates/x/src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::create_dir_all(tmp.0.join("crates/x/target/debug")).expect("mkdir");
    std::fs::write(src.join("lib.rs"), "//! The x crate.\npub fn x() {}\n").expect("write");
    std::fs::write(src.join("bad.rs"), "// plain comment\nfn y() {}\n").expect("write");
    std::fs::write(src.join("empty.rs"), "").expect("write");
    std::fs::write(tmp.0.join("crates/x/target/debug/gen.rs"), "fn generated() {}\n").expect("write");
    let found = messages(&check_headers(&[tmp.0.join("crates")]));
    let expected: Vec<String> = ["bad.rs", "empty.rs"]
        .iter()
        .map(|f| format!("{}: first line must be a `//!` comment saying what the file is for", src.join(f).display()))
        .collect();
    assert_eq!(found, expected);
}

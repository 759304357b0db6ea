//! What the CLI's tests against a manager share: running the `shoal` binary with a bundle, and a
//! manager initialised for one test.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// The `shoal` binary aimed at one manager with one bundle.
pub(crate) struct Cli<'a> {
    pub(crate) host: String,
    pub(crate) bundle: &'a Path,
}

impl Cli<'_> {
    /// Runs `shoal ARGS…`; returns (success, stdout, stderr).
    pub(crate) fn run(&self, args: &[&str]) -> (bool, String, String) {
        self.run_with_input(args, b"")
    }

    /// Runs `shoal ARGS…` with `input` on its standard input; returns (success, stdout, stderr).
    pub(crate) fn run_with_input(&self, args: &[&str], input: &[u8]) -> (bool, String, String) {
        use std::io::Write as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(args)
            .env("SHOAL_HOST", &self.host)
            .env("SHOAL_CERT_PATH", self.bundle)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run shoal");
        child.stdin.take().expect("stdin").write_all(input).expect("write stdin");
        let out = child.wait_with_output().expect("wait for shoal");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `shoal ARGS…`, which must succeed: its standard output.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        self.ok_with_input(args, b"")
    }

    /// `shoal ARGS…` with `input` on its standard input, which must succeed.
    pub(crate) fn ok_with_input(&self, args: &[&str], input: &[u8]) -> String {
        let (ok, out, err) = self.run_with_input(args, input);
        assert!(ok, "shoal {} failed: {err}", args.join(" "));
        out
    }

    /// `shoal ARGS…`, which must fail with a one-line error: the error.
    pub(crate) fn fails(&self, args: &[&str]) -> String {
        let (ok, _, err) = self.run(args);
        assert!(!ok, "shoal {} should fail", args.join(" "));
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        err
    }

    /// `service inspect SERVICE` as JSON.
    pub(crate) fn inspect(&self, service: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["service", "inspect", service])).expect("json")
    }
}

/// A manager initialised for one test: a fresh directory (`shoal-cli-TAG-test-PID`), a free
/// loopback port, the running manager and what `init` returned.
pub(crate) async fn init_manager(
    tag: &str,
) -> (PathBuf, SocketAddr, shoal_manager::RunningManager, shoal_manager::InitOutcome) {
    init_manager_with(tag, None).await
}

/// As [`init_manager`], with a stand-in for the registries behind `ResolveImage`.
pub(crate) async fn init_manager_with(
    tag: &str,
    registries: Option<Arc<Registries>>,
) -> (PathBuf, SocketAddr, shoal_manager::RunningManager, shoal_manager::InitOutcome) {
    let dir = std::env::temp_dir().join(format!("shoal-cli-{tag}-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
    let mut config = shoal_manager::ManagerConfig::new(&dir, addr, addr);
    config.image_resolver = registries.map(|r| r as Arc<dyn shoal_manager::ImageResolver>);
    let (manager, outcome) = shoal_manager::init(&config).await.expect("init");
    (dir, addr, manager, outcome)
}

/// Registries as a test wants them: the digest each tag names (a tag can be "pushed" again);
/// any other image is unknown.
#[derive(Debug, Default)]
pub(crate) struct Registries {
    tags: Mutex<std::collections::HashMap<String, String>>,
    asked: Mutex<Vec<String>>,
}

impl Registries {
    /// `image` now names `digest`.
    pub(crate) fn push(&self, image: &str, digest: &str) {
        self.tags.lock().expect("tags").insert(image.to_owned(), digest.to_owned());
    }

    /// The images asked for since the last call.
    pub(crate) fn asked(&self) -> Vec<String> {
        std::mem::take(&mut *self.asked.lock().expect("asked"))
    }
}

impl shoal_manager::ImageResolver for Registries {
    fn digest<'a>(&'a self, image: &'a str) -> shoal_manager::Resolving<'a> {
        self.asked.lock().expect("asked").push(image.to_owned());
        let digest = self.tags.lock().expect("tags").get(image).cloned();
        Box::pin(async move { digest.ok_or_else(|| format!("manifest unknown: {image}")) })
    }
}

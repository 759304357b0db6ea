//! Prerequisites of privileged tests: root, and commands such as `ip`, `nft` and `containerd`.
//!
//! Outside CI a test whose prerequisites are missing is skipped with a printed reason, and the
//! reason is appended to the file named by `SHOAL_SKIP_LOG` so that `cargo xtask test` counts it as
//! skipped rather than passed. Under `CI=true` a missing prerequisite fails the test loudly.

use std::io::Write as _;
use std::path::Path;

/// Something a privileged test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Effective user ID 0.
    Root,
    /// An executable on `PATH`.
    Command(&'static str),
    /// A file at an absolute path.
    File(&'static str),
}

/// Returns `true` when every need is met. Otherwise: under `CI=true` it panics with a message
/// naming what is missing; elsewhere it prints why the test is skipped and returns `false`.
pub fn require(test: &str, needs: &[Need]) -> bool {
    let missing: Vec<String> = needs.iter().filter_map(|need| unmet(*need)).collect();
    if missing.is_empty() {
        return true;
    }
    skip(&format!("{test}: skipped: missing {}", missing.join(", ")));
    false
}

/// Skips a test for `reason` (`"TEST: skipped: why"`): under `CI=true` it panics instead;
/// elsewhere it prints the reason and records it in `SHOAL_SKIP_LOG`, so that `cargo xtask
/// test` counts the test as skipped, not passed.
pub fn skip(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{reason}; CI=true requires every prerequisite (run `cargo xtask test`, which installs them)"
    );
    // Test support: a skipped test must say why where the developer sees it.
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{reason}");
    }
    if let Ok(log) = std::env::var("SHOAL_SKIP_LOG") {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut file| writeln!(file, "{reason}"));
        if let Err(err) = appended {
            panic!("cannot record skipped test in SHOAL_SKIP_LOG={log}: {err}");
        }
    }
}

/// The standard needs of a test that builds network namespaces.
pub const NETNS: &[Need] =
    &[Need::Root, Need::Command("ip"), Need::Command("nsenter"), Need::Command("nft"), Need::File("/bin/busybox")];

/// The standard needs of a test that runs containers in a private containerd.
pub const CONTAINERD: &[Need] = &[
    Need::Root,
    Need::Command("ip"),
    Need::Command("containerd"),
    Need::Command("ctr"),
    Need::Command("runc"),
    Need::File("/bin/busybox"),
];

/// The needs of a test that runs the local registry.
pub const REGISTRY: &[Need] = &[Need::Command("docker-registry")];

fn unmet(need: Need) -> Option<String> {
    match need {
        Need::Root => (!nix::unistd::geteuid().is_root()).then(|| "root (run as uid 0)".to_owned()),
        Need::Command(name) => (!on_path(name)).then(|| format!("command `{name}`")),
        Need::File(path) => (!Path::new(path).exists()).then(|| format!("file {path}")),
    }
}

/// Whether `name` is an executable file in a `PATH` directory (or the sbin directories root has).
pub(crate) fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(["/usr/sbin", "/sbin"].map(Into::into)).any(|dir| dir.join(name).is_file())
}

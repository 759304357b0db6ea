//! The tidy check: workspace conventions that plain `cargo test -p xtask` enforces.
//!
//! - Layering (DESIGN.md §1), checked from `cargo metadata`: the seven subsystem crates depend on
//!   no other Shoal crate (a dev-dependency on the test kit aside); `manager`, `agent` and the
//!   binaries depend only on what their arrow allows; every Shoal crate is in [`LAYERS`].
//! - Every `.rs` file starts with a `//!` line.
//! - No `anyhow` in library crates (binaries and xtask only).
//! - Every crate has `[lints] workspace = true` and a README.md.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

/// The seven subsystem crates: each can be taken alone.
const SUBSYSTEMS: &[&str] = &[
    "shoal-ca-pki",
    "shoal-raft-store",
    "shoal-scheduler",
    "shoal-runtime",
    "shoal-overlay",
    "shoal-ipvs-lb",
    "shoal-embedded-dns",
];

/// Test and automation crates: never published, may use any crate, and no product crate may
/// depend on them other than as a dev-dependency.
const TOOLING: &[&str] = &["shoal-testkit", "shoal-local-cluster", "xtask", "shoal-tests"];

/// Which Shoal crates each layer may depend on (normal and build dependencies). A crate under
/// `bins/` takes the `bins/*` row.
const LAYERS: &[(&str, &[&str])] = &[
    ("bins/*", &["shoal-manager", "shoal-agent", "shoal-stack", "shoal-api", "shoal-compose"]),
    ("shoal-manager", &["shoal-raft-store", "shoal-scheduler", "shoal-ca-pki", "shoal-api"]),
    (
        "shoal-agent",
        &["shoal-runtime", "shoal-overlay", "shoal-ipvs-lb", "shoal-embedded-dns", "shoal-ca-pki", "shoal-api"],
    ),
    ("shoal-api", &[]),
    ("shoal-stack", &[]),
    // The compose-file loader: a library at the subsystems' level that anyone can embed.
    ("shoal-compose", &[]),
];

/// One broken convention, naming the crate or file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem(String);

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What tidy needs of a workspace package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Package {
    pub(crate) name: String,
    /// Directory of its Cargo.toml.
    pub(crate) dir: PathBuf,
    /// Whether it has a library target.
    pub(crate) is_lib: bool,
    pub(crate) deps: Vec<Dep>,
}

/// A declared dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dep {
    pub(crate) name: String,
    /// `None` for normal dependencies, `Some("dev")` or `Some("build")` otherwise.
    pub(crate) kind: Option<String>,
}

/// Reads the workspace packages from `cargo metadata --no-deps` JSON.
pub(crate) fn parse_metadata(json: &str) -> anyhow::Result<Vec<Package>> {
    let value: serde_json::Value = serde_json::from_str(json).context("cargo metadata printed invalid JSON")?;
    let members: Vec<&str> = value["workspace_members"]
        .as_array()
        .context("cargo metadata has no workspace_members")?
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    let packages = value["packages"].as_array().context("cargo metadata has no packages")?;
    let mut out = Vec::new();
    for package in packages.iter().filter(|p| p["id"].as_str().is_some_and(|id| members.contains(&id))) {
        let name = package["name"].as_str().context("package without a name")?.to_owned();
        let manifest = package["manifest_path"].as_str().with_context(|| format!("{name} has no manifest_path"))?;
        let dir = Path::new(manifest).parent().map(Path::to_path_buf).unwrap_or_default();
        let is_lib = package["targets"].as_array().into_iter().flatten().any(|target| {
            target["kind"].as_array().into_iter().flatten().any(|k| matches!(k.as_str(), Some("lib" | "rlib")))
        });
        let deps = package["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|dep| {
                Some(Dep { name: dep["name"].as_str()?.to_owned(), kind: dep["kind"].as_str().map(str::to_owned) })
            })
            .collect();
        out.push(Package { name, dir, is_lib, deps });
    }
    Ok(out)
}

/// Checks the dependency direction of DESIGN.md §1 and the anyhow rule.
pub(crate) fn check_layering(root: &Path, packages: &[Package]) -> Vec<Problem> {
    let ours: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
    let mut problems = Vec::new();
    for package in packages {
        let name = package.name.as_str();
        if TOOLING.contains(&name) {
            continue;
        }
        let in_bins = package.dir.strip_prefix(root).is_ok_and(|rel| rel.starts_with("bins"));
        let allowed: &[&str] = if SUBSYSTEMS.contains(&name) {
            &[]
        } else if let Some((_, allowed)) =
            LAYERS.iter().find(|(layer, _)| *layer == name || (in_bins && *layer == "bins/*"))
        {
            allowed
        } else {
            problems.push(Problem(format!(
                "crate {name} ({}) is not in the layering table: add it to LAYERS in xtask/src/tidy.rs \
                 with the crates it may depend on (DESIGN.md §1)",
                package.dir.display()
            )));
            continue;
        };
        for dep in &package.deps {
            let dep_name = dep.name.as_str();
            let is_dev = dep.kind.as_deref() == Some("dev");
            if dep_name == "anyhow" && package.is_lib && !is_dev {
                problems.push(Problem(format!(
                    "library crate {name} depends on anyhow: libraries return their own thiserror enums \
                     (anyhow is for binaries and xtask)"
                )));
            }
            if !ours.contains(&dep_name) {
                continue;
            }
            if TOOLING.contains(&dep_name) {
                if !is_dev {
                    problems
                        .push(Problem(format!("{name} depends on test tooling {dep_name} outside [dev-dependencies]")));
                }
                continue;
            }
            if !allowed.contains(&dep_name) {
                let rule = if SUBSYSTEMS.contains(&name) {
                    "subsystem crates depend on no other Shoal crate".to_owned()
                } else {
                    format!(
                        "{name} may depend on: {}",
                        if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") }
                    )
                };
                problems.push(Problem(format!("{name} depends on {dep_name}: {rule} (DESIGN.md §1)")));
            }
        }
    }
    problems
}

/// Checks `[lints] workspace = true` and README.md of each package.
pub(crate) fn check_manifests(packages: &[Package]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for package in packages {
        let manifest = package.dir.join("Cargo.toml");
        let inherits = std::fs::read_to_string(&manifest)
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .and_then(|table| table.get("lints")?.get("workspace")?.as_bool())
            == Some(true);
        if !inherits {
            problems.push(Problem(format!(
                "{}: crate {} must have `[lints] workspace = true`",
                manifest.display(),
                package.name
            )));
        }
        if !package.dir.join("README.md").is_file() {
            problems.push(Problem(format!(
                "crate {} has no README.md in {} (what it is, its API in ten lines, an example)",
                package.name,
                package.dir.display()
            )));
        }
    }
    problems
}

/// Checks that every `.rs` file under `dirs` starts with a `//!` line.
pub(crate) fn check_headers(dirs: &[PathBuf]) -> Vec<Problem> {
    let mut files = Vec::new();
    for dir in dirs {
        collect_rs(dir, &mut files);
    }
    files.sort();
    files
        .into_iter()
        .filter(|file| {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            !text.lines().next().is_some_and(|line| line.starts_with("//!"))
        })
        .map(|file| {
            Problem(format!("{}: first line must be a `//!` comment saying what the file is for", file.display()))
        })
        .collect()
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && !name.to_string_lossy().starts_with('.') {
                collect_rs(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Runs every check against the workspace at `root`.
pub(crate) fn check_workspace(root: &Path) -> anyhow::Result<Vec<Problem>> {
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(root)
        .output()
        .context("cannot run cargo metadata")?;
    anyhow::ensure!(output.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr));
    let packages = parse_metadata(&String::from_utf8_lossy(&output.stdout))?;
    let mut problems = check_layering(root, &packages);
    problems.extend(check_manifests(&packages));
    let dirs: Vec<PathBuf> = ["crates", "bins", "xtask", "tests"].iter().map(|d| root.join(d)).collect();
    problems.extend(check_headers(&dirs));
    Ok(problems)
}

#[cfg(test)]
mod tests;

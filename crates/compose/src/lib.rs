//! Shoal's compose-file loader: the files `shoal stack deploy -c a.yml -c b.yml` reads, to a
//! typed [`Project`].
//!
//! It reads the v3.x format `docker stack deploy` reads and the Compose Specification's forms
//! (top-level `name`, `depends_on` conditions, `platform`, `x-` fields, anchors and merge
//! keys, long and short syntax), merges several files in order, substitutes `${VAR}` from the
//! caller's environment and a `.env` file beside the first file, and reads `env_file`s. Every
//! error names the file, line and column; keys Swarm ignores come back as [`Warning`]s.
//!
//! ```
//! use shoal_compose::{LoadOptions, Source, load_sources};
//!
//! let text = r#"
//! services:
//!   web:
//!     image: "nginx:${TAG:-1.25}"
//!     ports: ["8080:80"]
//!     deploy: { replicas: 2 }
//!     build: .
//! "#;
//! let loaded = load_sources(&[Source::new("compose.yml", text)], &LoadOptions::default())?;
//! let web = &loaded.project.services["web"];
//! assert_eq!(web.image, "nginx:1.25");
//! assert_eq!((web.ports[0].published, web.ports[0].target), (Some(8080), 80));
//! assert_eq!(web.deploy.replicas, Some(2));
//! assert_eq!(loaded.warnings[0].to_string(), "compose.yml: Ignoring unsupported options: build");
//! # Ok::<(), shoal_compose::LoadError>(())
//! ```
#![warn(missing_docs)]

mod decode;
mod dotenv;
mod error;
mod interpolate;
mod merge;
mod model;
mod normalize;
mod order;
mod render;
mod units;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{DependencyError, LoadError, Location, Warning};
pub use model::*;
pub use order::Step;
pub use render::render;

/// The README's example, compiled and run as a doctest so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// What to load.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Compose files, merged in order. Read by [`load`]; [`load_sources`] takes the texts
    /// instead.
    pub files: Vec<PathBuf>,
    /// Variables for `${VAR}`, usually the process environment. They win over the `.env` file.
    pub env: BTreeMap<String, String>,
    /// Do not read the `.env` file beside the first file.
    pub ignore_dot_env: bool,
    /// The directory relative paths (binds, `env_file`, secret and config files, `.env`) are
    /// resolved against; the first file's directory when `None`.
    pub working_dir: Option<PathBuf>,
}

/// A compose file's text, and the path it is known by (used in messages and to resolve
/// relative paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file's path.
    pub path: PathBuf,
    /// Its content.
    pub text: String,
}

impl Source {
    /// A source from a path and its text.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Source {
        Source { path: path.into(), text: text.into() }
    }
}

/// A loaded project and what the person deploying it should be told.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The merged, interpolated, typed project.
    pub project: Project,
    /// Keys Swarm ignores (once per file) and variables that were not set.
    pub warnings: Vec<Warning>,
}

/// Reads and loads `options.files`.
pub fn load(options: &LoadOptions) -> Result<Loaded, LoadError> {
    let sources = options
        .files
        .iter()
        .map(|path| {
            std::fs::read_to_string(path)
                .map(|text| Source { path: path.clone(), text })
                .map_err(|source| LoadError::Read { path: path.clone(), source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    load_sources(&sources, options)
}

/// Loads compose files given as text, merged in order; `options.files` is not read. The `.env`
/// file and `env_file`s are still read from disk, relative to the working directory.
pub fn load_sources(sources: &[Source], options: &LoadOptions) -> Result<Loaded, LoadError> {
    let Some(first) = sources.first() else { return Err(LoadError::NoFiles) };
    let working_dir = match &options.working_dir {
        Some(dir) => dir.clone(),
        None => first.path.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let working_dir = if working_dir.as_os_str().is_empty() { PathBuf::from(".") } else { working_dir };
    let working_dir = std::path::absolute(&working_dir).unwrap_or(working_dir);
    let env = environment(&working_dir, options)?;

    let mut interpolator = interpolate::Interpolator { env: &env, unset: BTreeMap::new() };
    let mut merged: Option<yaml::Node> = None;
    for source in sources {
        let file: Arc<Path> = Arc::from(source.path.as_path());
        let mut tree = yaml::parse(&file, &source.text)?;
        interpolator.tree(&mut tree, &mut Vec::new())?;
        normalize::file(&mut tree)?;
        match &mut merged {
            None => merged = Some(tree),
            Some(base) => merge::merge(base, tree),
        }
    }
    let unset = interpolator.unset;
    let Some(merged) = merged else { return Err(LoadError::NoFiles) };

    let mut decoder = decode::Decoder { working_dir: &working_dir, env: &env, ignored: BTreeMap::new() };
    let (project, depends_marks) = decoder.project(&merged)?;
    check_cycles(&project, &depends_marks)?;

    let mut warnings = Vec::new();
    let mut ignored = decoder.ignored;
    let mut seen = BTreeSet::new();
    for source in sources {
        if let (true, Some(keys)) = (seen.insert(source.path.clone()), ignored.remove(&source.path)) {
            warnings.push(Warning::Unsupported { file: source.path.clone(), keys: keys.into_iter().collect() });
        }
    }
    let mut unset: Vec<(String, Location)> = unset.into_iter().collect();
    unset.sort_by(|a, b| a.1.cmp(&b.1));
    warnings.extend(unset.into_iter().map(|(name, location)| Warning::UnsetVariable { location, name }));
    tracing::debug!(
        files = sources.len(),
        services = project.services.len(),
        warnings = warnings.len(),
        "compose project loaded"
    );
    Ok(Loaded { project, warnings })
}

/// The caller's variables over those of the `.env` file.
fn environment(working_dir: &Path, options: &LoadOptions) -> Result<BTreeMap<String, String>, LoadError> {
    let mut env = BTreeMap::new();
    if !options.ignore_dot_env {
        let path = working_dir.join(".env");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (key, value) in dotenv::parse(&path, &text, &options.env, false)? {
                    if let Some(value) = value {
                        env.insert(key, value);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                let location = Location { file: path.clone(), line: 1, column: 1 };
                return Err(LoadError::EnvFile { location, path, source });
            }
        }
    }
    env.extend(options.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(env)
}

/// A `depends_on` cycle is an error at load time, located at the first service's `depends_on`.
fn check_cycles(project: &Project, marks: &BTreeMap<String, yaml::Mark>) -> Result<(), LoadError> {
    let graph: BTreeMap<&str, Vec<&str>> = project
        .services
        .iter()
        .map(|(name, s)| (name.as_str(), s.depends_on.keys().map(String::as_str).collect()))
        .collect();
    match order::find_cycle(&graph) {
        None => Ok(()),
        Some(cycle) => {
            let location = cycle
                .first()
                .and_then(|name| marks.get(name))
                .map(yaml::Mark::location)
                .unwrap_or_else(|| Location { file: PathBuf::new(), line: 0, column: 0 });
            Err(LoadError::DependencyCycle { location, cycle })
        }
    }
}

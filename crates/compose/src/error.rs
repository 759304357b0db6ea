//! Errors and warnings of the loader: each error names the file, line and column it is about.

use std::fmt;
use std::path::PathBuf;

/// A place in a compose (or env) file: 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The file, as given to the loader.
    pub file: PathBuf,
    /// Line, from 1.
    pub line: u32,
    /// Column in characters, from 1.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// Why a compose project could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// No compose file was given.
    #[error("no compose file given: pass at least one file")]
    NoFiles,
    /// A compose file could not be read.
    #[error("cannot read compose file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML, or uses YAML in a way compose files cannot.
    #[error("{location}: {message}")]
    Syntax {
        /// Where.
        location: Location,
        /// What the parser found.
        message: String,
    },
    /// A key that the format does not have at this place.
    #[error("{location}: unknown key `{key}` in {context}{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownKey {
        /// Where the key is.
        location: Location,
        /// The key as written.
        key: String,
        /// The mapping it is in, as a dotted path (`services.web.deploy`).
        context: String,
        /// The closest valid key, when one is close enough to be a likely typo.
        suggestion: Option<String>,
    },
    /// A key Swarm cannot honour and that would change the meaning of the service if ignored.
    #[error("{location}: `{key}` is not supported in {context}: {hint}")]
    Unsupported {
        /// Where the key is.
        location: Location,
        /// The key.
        key: String,
        /// The mapping it is in, as a dotted path.
        context: String,
        /// What to do instead.
        hint: String,
    },
    /// A value of the wrong type or form.
    #[error("{location}: {path}: {message}")]
    Invalid {
        /// Where the value is.
        location: Location,
        /// The dotted path of the value (`services.web.deploy.replicas`).
        path: String,
        /// What is wrong, and what was expected.
        message: String,
    },
    /// A `${VAR}` expression that cannot be substituted.
    #[error("{location}: {message}")]
    Interpolation {
        /// Where the value holding it is.
        location: Location,
        /// What is wrong (a required variable is unset, or the syntax is invalid).
        message: String,
    },
    /// A service built from source: Swarm runs images from a registry only.
    #[error(
        "{location}: service `{service}` has `build:` but no `image:`: Swarm does not build images; \
         build and push the image, then add `image:` naming it (or add `image:` to the service)"
    )]
    BuildWithoutImage {
        /// Where `build:` is.
        location: Location,
        /// The service.
        service: String,
    },
    /// A service names a network, volume, secret, config or service the project does not define.
    #[error("{location}: service `{service}` refers to undefined {kind} `{name}`{hint}")]
    UndefinedReference {
        /// Where the reference is.
        location: Location,
        /// The service.
        service: String,
        /// `network`, `volume`, `secret`, `config` or `service`.
        kind: &'static str,
        /// The name it refers to.
        name: String,
        /// What to add, when that is clear.
        hint: String,
    },
    /// `depends_on` edges that form a cycle.
    #[error("{location}: dependency cycle between services: {}", cycle.join(" -> "))]
    DependencyCycle {
        /// Where the first service of the cycle declares its `depends_on`.
        location: Location,
        /// The services in the cycle, the first repeated at the end (`a -> b -> a`).
        cycle: Vec<String>,
    },
    /// An env file named by `env_file:` (or a `.env` file) could not be read.
    #[error("{location}: cannot read env file {}: {source}", path.display())]
    EnvFile {
        /// Where the file is named (the `.env` file itself for a `.env` read error).
        location: Location,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl LoadError {
    /// Where the error is, when it is about a place in a file.
    pub fn location(&self) -> Option<&Location> {
        match self {
            LoadError::NoFiles | LoadError::Read { .. } => None,
            LoadError::Syntax { location, .. }
            | LoadError::UnknownKey { location, .. }
            | LoadError::Unsupported { location, .. }
            | LoadError::Invalid { location, .. }
            | LoadError::Interpolation { location, .. }
            | LoadError::BuildWithoutImage { location, .. }
            | LoadError::UndefinedReference { location, .. }
            | LoadError::DependencyCycle { location, .. }
            | LoadError::EnvFile { location, .. } => Some(location),
        }
    }
}

/// Something the loader accepted but that a person should know: Swarm will not do it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// Keys Swarm ignores, listed once per file as `docker stack deploy` does. Keys below the
    /// service level are dotted (`deploy.resources.reservations.devices`).
    Unsupported {
        /// The file that uses them.
        file: PathBuf,
        /// The keys, sorted, each once.
        keys: Vec<String>,
    },
    /// A variable used without a default is not set: it was replaced by an empty string.
    UnsetVariable {
        /// The first place that uses it.
        location: Location,
        /// The variable.
        name: String,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::Unsupported { file, keys } => {
                write!(f, "{}: Ignoring unsupported options: {}", file.display(), keys.join(", "))
            }
            Warning::UnsetVariable { location, name } => {
                write!(f, "{location}: the {name:?} variable is not set; defaulting to a blank string")
            }
        }
    }
}

/// Why [`Project::startup_order`](crate::Project::startup_order) cannot order the services.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DependencyError {
    /// `depends_on` edges that form a cycle.
    #[error("dependency cycle between services: {}", cycle.join(" -> "))]
    Cycle {
        /// The services in the cycle, the first repeated at the end (`a -> b -> a`).
        cycle: Vec<String>,
    },
    /// A required dependency on a service the project does not have.
    #[error("service `{service}` depends on undefined service `{dependency}`")]
    Undefined {
        /// The dependent service.
        service: String,
        /// The missing one.
        dependency: String,
    },
}

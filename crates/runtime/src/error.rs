//! Errors of the runtime, one enum per kind of operation; each names the image or container.

/// Making an image present failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The registry or archive has no such image.
    #[error("image not found: {reference}")]
    NotFound {
        /// The reference asked for.
        reference: String,
    },
    /// The reference cannot be parsed.
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
    /// The registry refused the credentials (or asked for some and none were given).
    #[error("registry {registry} refused access to {reference}: {reason}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// The reference.
        reference: String,
        /// What the registry said.
        reason: String,
    },
    /// The registry could not be reached or answered with an error.
    #[error("pull {reference} from {registry}: {reason}")]
    Registry {
        /// The registry host.
        registry: String,
        /// The reference.
        reference: String,
        /// What went wrong.
        reason: String,
    },
    /// The image's content does not match its digest, or its manifest is invalid.
    #[error("image {reference}: {reason}")]
    Invalid {
        /// The reference.
        reference: String,
        /// What is wrong.
        reason: String,
    },
    /// The image has no manifest for this machine's platform.
    #[error("image {reference} has no manifest for {platform}")]
    NoPlatform {
        /// The reference.
        reference: String,
        /// `os/arch`.
        platform: String,
    },
    /// An archive could not be read.
    #[error("load {path}: {reason}")]
    Archive {
        /// The archive path.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// containerd refused a step.
    #[error("image {reference}: containerd {step}: {status}")]
    Containerd {
        /// The reference.
        reference: String,
        /// The step, e.g. `write content`, `apply layer`.
        step: &'static str,
        /// containerd's answer.
        status: Box<tonic::Status>,
    },
}

/// An operation on a container failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// No container with that ID.
    #[error("no such container: {id}")]
    NotFound {
        /// The container ID.
        id: String,
    },
    /// A container with that ID exists already.
    #[error("container {id} already exists")]
    AlreadyExists {
        /// The container ID.
        id: String,
    },
    /// The image the spec names is not present; pull it first.
    #[error("image not found: {reference} (for container {id})")]
    ImageNotFound {
        /// The container ID.
        id: String,
        /// The image reference.
        reference: String,
    },
    /// The spec is invalid.
    #[error("container {id}: invalid spec: {reason}")]
    InvalidSpec {
        /// The container ID.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The operation does not fit the container's state (start twice, remove while running…).
    #[error("container {id}: cannot {operation} while {state}")]
    WrongState {
        /// The container ID.
        id: String,
        /// The operation.
        operation: &'static str,
        /// Its state, in words.
        state: &'static str,
    },
    /// containerd refused a step.
    #[error("container {id}: containerd {step}: {status}")]
    Containerd {
        /// The container ID (empty for namespace-wide calls).
        id: String,
        /// The step, e.g. `create task`.
        step: &'static str,
        /// containerd's answer.
        status: Box<tonic::Status>,
    },
    /// Filling a new volume with the image's content at its target failed.
    #[error("container {id}: cannot copy the image's {target} into volume {}: {reason}", volume.display())]
    VolumeCopy {
        /// The container ID.
        id: String,
        /// The volume's path in the container (and the image's directory copied).
        target: String,
        /// The volume's directory on the host.
        volume: std::path::PathBuf,
        /// What went wrong, naming the entry.
        reason: String,
    },
    /// A file of the container (log, hosts, exec output) could not be used.
    #[error("container {id}: {path}: {source}")]
    Io {
        /// The container ID.
        id: String,
        /// The path.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The simulated runtime was told to fail this operation.
    #[error("container {id}: injected failure: {reason}")]
    Injected {
        /// The container ID.
        id: String,
        /// The configured reason.
        reason: String,
    },
}

/// The runtime could not reach containerd.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket did not accept a connection or did not answer.
    #[error(
        "cannot reach containerd at {socket}: {reason} (is containerd running, and is this the right --containerd-socket?)"
    )]
    Unreachable {
        /// The socket path.
        socket: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The namespace name is not valid for containerd.
    #[error(
        "invalid containerd namespace {namespace:?}: use letters and digits, with single '.', '_' or '-' between them (at most 76 characters)"
    )]
    Namespace {
        /// The name given.
        namespace: String,
    },
}

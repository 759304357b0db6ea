//! How a Shoal agent runs containers: the [`ContainerRuntime`] trait, its containerd
//! implementation ([`Containerd`]) and an in-memory simulation ([`Simulated`]) for scale tests,
//! and Docker's `local` volume driver ([`LocalVolumes`]) for the volumes containers mount.
//!
//! The agent asks for four things: make an image present (pull from a registry or load an OCI
//! archive) and read its health check, run a container from a [`ContainerSpec`] through its
//! life (create, start, wait, stop, remove), look inside it (exec for health checks, logs), and
//! find its containers again after a restart (list by label, a stream of exits).
#![warn(missing_docs)]

mod containerd;
mod error;
pub mod logs;
mod mountinfo;
mod oci;
mod reference;
mod registry;
mod rootfs;
mod seccomp;
mod sim;
mod spec;
mod volume;

pub use containerd::{Containerd, ContainerdConfig};
pub use error::{ConnectError, ContainerError, ImageError};
pub use reference::{Reference, ReferenceError};
pub use registry::Registry;
pub use sim::{SimBehavior, Simulated};
pub use spec::{
    ContainerInfo, ContainerSpec, ContainerState, Credentials, ExecOutput, ExecSpec, ExitStatus, Healthcheck,
    ImageSource, LogOptions, Mount, Propagation, Resources, RuntimeEvent, Seccomp, Ulimit,
};
pub use volume::{LocalVolume, LocalVolumes, VolumeError};

use std::time::Duration;

use futures::stream::BoxStream;

/// A stream of runtime events (container exits), for an agent's monitor.
pub type EventStream = BoxStream<'static, RuntimeEvent>;

/// A stream of log lines.
pub type LogStream = BoxStream<'static, logs::LogLine>;

/// What an agent needs from a container runtime.
///
/// Container IDs are chosen by the caller (the agent uses task IDs); every method names the
/// container or image it failed on in its error.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync + std::fmt::Debug {
    /// Makes `source` present locally; returns the image's canonical reference. A registry that
    /// does not have it gives [`ImageError::NotFound`] (`image not found: REF`).
    async fn ensure_image(&self, source: &ImageSource) -> Result<String, ImageError>;

    /// The health check in the config of `image`, a local image (as [`ensure_image`] returned
    /// it); `None` when the config has none. An image that is not present gives
    /// [`ImageError::NotFound`]; a malformed `Healthcheck` gives [`ImageError::Invalid`], naming
    /// the image.
    ///
    /// [`ensure_image`]: ContainerRuntime::ensure_image
    async fn image_healthcheck(&self, image: &str) -> Result<Option<Healthcheck>, ImageError>;

    /// Creates (but does not start) a container.
    async fn create(&self, spec: &ContainerSpec) -> Result<(), ContainerError>;

    /// Starts a created container. A container runs once: starting one that has run gives
    /// [`ContainerError::WrongState`]; remove it and create it again.
    async fn start(&self, id: &str) -> Result<(), ContainerError>;

    /// Waits until the container's main process exits.
    async fn wait(&self, id: &str) -> Result<ExitStatus, ContainerError>;

    /// Sends the container's stop signal, waits up to `grace`, then SIGKILLs it. Returns its exit.
    /// Stopping a container that has already exited returns that exit.
    async fn stop(&self, id: &str, grace: Duration) -> Result<ExitStatus, ContainerError>;

    /// Removes a stopped or created container and everything the runtime kept for it.
    async fn remove(&self, id: &str) -> Result<(), ContainerError>;

    /// Runs a command inside a running container (health checks).
    async fn exec(&self, id: &str, exec: &ExecSpec) -> Result<ExecOutput, ContainerError>;

    /// Reads the container's standard output and error.
    async fn logs(&self, id: &str, options: &LogOptions) -> Result<LogStream, ContainerError>;

    /// Lists containers whose labels include every `(key, value)` in `labels`.
    async fn list(&self, labels: &[(String, String)]) -> Result<Vec<ContainerInfo>, ContainerError>;

    /// Subscribes to container exits from now on.
    ///
    /// The stream ends when the runtime loses its connection to the daemon (or cannot subscribe);
    /// a caller that needs every exit subscribes again and calls [`ContainerRuntime::list`] to
    /// catch exits it missed.
    async fn events(&self) -> Result<EventStream, ContainerError>;
}

//! A local OCI registry (Debian's `docker-registry`) listening on the underlay inside the
//! harness, with the test images pushed to it over plain HTTP.

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use crate::Containerd;
use crate::cmd::{self, CommandError};
use crate::images::BuiltImage;
use crate::netns::{Cluster, HarnessError, Process, UNDERLAY_GATEWAY, in_netns, narrate};

/// Starting or filling the registry failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The harness could not start it.
    #[error("registry: {0}")]
    Harness(#[from] HarnessError),
    /// It did not accept connections in time.
    #[error("registry at {addr} did not accept connections within {seconds} s; its log is {log}")]
    NotReady {
        /// Its address.
        addr: SocketAddrV4,
        /// How long we waited.
        seconds: u64,
        /// Its log file.
        log: std::path::PathBuf,
    },
    /// Its config could not be written.
    #[error("registry: cannot write {path}: {source}")]
    Io {
        /// The path.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Pushing an image failed.
    #[error("registry: push {reference}: {source}")]
    Push {
        /// The remote reference.
        reference: String,
        /// The failed `ctr push`.
        source: CommandError,
    },
}

/// A running registry. Stopped when dropped (and with the cluster's namespaces in any case).
#[derive(Debug)]
pub struct Registry {
    addr: SocketAddrV4,
    underlay: String,
    _process: Process,
}

impl Registry {
    /// The port it listens on, at the underlay bridge's address.
    pub const PORT: u16 = 5000;

    /// Starts a registry in `cluster`'s underlay namespace at 192.0.2.1:5000, storing under the
    /// cluster's directory.
    pub fn start(cluster: &Cluster) -> Result<Self, RegistryError> {
        let addr = SocketAddrV4::new(UNDERLAY_GATEWAY, Self::PORT);
        let dir = cluster.dir().join("registry");
        let config = cluster.dir().join("registry.yml");
        let text = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.display()
        );
        std::fs::write(&config, text).map_err(|source| RegistryError::Io { path: config.clone(), source })?;
        let config_arg = config.to_string_lossy();
        let process =
            cluster.spawn_in(cluster.underlay_netns(), "registry", "docker-registry", &["serve", &config_arg])?;
        let registry = Self { addr, underlay: cluster.underlay_netns().to_owned(), _process: process };
        registry.wait_ready(Duration::from_secs(20), cluster)?;
        narrate(&format!("registry up at {addr}"));
        Ok(registry)
    }

    fn wait_ready(&self, timeout: Duration, cluster: &Cluster) -> Result<(), RegistryError> {
        let deadline = Instant::now() + timeout;
        let addr = self.addr;
        while Instant::now() < deadline {
            let connected = in_netns(&self.underlay, move || {
                TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_ok()
            })?;
            if connected {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(RegistryError::NotReady {
            addr,
            seconds: timeout.as_secs(),
            log: cluster.dir().join("logs").join("registry.log"),
        })
    }

    /// `192.0.2.1:5000`.
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// The reference of `image` in this registry, e.g. `192.0.2.1:5000/shoal-test/web:v1`.
    pub fn reference(&self, image: &BuiltImage) -> String {
        format!("{}/{}", self.addr, image.def.reference())
    }

    /// Imports each image into `containerd` and pushes it here over plain HTTP.
    pub fn push_all(&self, containerd: &Containerd, images: &[BuiltImage]) -> Result<(), RegistryError> {
        push_all(containerd, images, &self.addr.to_string(), Some(&self.underlay))
    }

    /// The underlay address, for tests that check where it listens.
    pub fn ip(&self) -> Ipv4Addr {
        *self.addr.ip()
    }
}

/// Imports each image into `containerd` and pushes it over plain HTTP to the registry at
/// `registry` (`HOST:PORT`), from the network namespace `netns` of this host (`None`: its own).
pub fn push_all(
    containerd: &Containerd,
    images: &[BuiltImage],
    registry: &str,
    netns: Option<&str>,
) -> Result<(), RegistryError> {
    for image in images {
        let reference = format!("{registry}/{}", image.def.reference());
        let push = |source| RegistryError::Push { reference: reference.clone(), source };
        cmd::run(containerd.ctr().args(["images", "import"]).arg(&image.path)).map_err(push)?;
        // `ctr push` talks to the registry itself, so it runs where the registry is reachable.
        let mut ctr = match netns {
            Some(netns) => Cluster::command_in(netns, "ctr"),
            None => std::process::Command::new("ctr"),
        };
        ctr.arg("--address").arg(containerd.socket()).args(["--namespace", containerd.namespace()]);
        ctr.args(["images", "push", "--plain-http", &reference, &image.def.reference()]);
        cmd::run(&mut ctr).map_err(push)?;
    }
    Ok(())
}

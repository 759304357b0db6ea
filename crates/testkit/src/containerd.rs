//! A private containerd for tests: its own root, state, socket and config under a directory, and a
//! containerd namespace named after the run, so that concurrent tests and the host's own
//! containerd never see each other's images or containers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::{self, CommandError};
use crate::netns::narrate;

/// Starting or driving the private containerd failed.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// A file of the private containerd could not be written.
    #[error("private containerd: cannot write {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `containerd` or `ctr` failed.
    #[error("private containerd: {action}: {source}")]
    Command {
        /// What was being done.
        action: String,
        /// The failed command.
        source: CommandError,
    },
    /// containerd did not answer on its socket in time.
    #[error("private containerd at {socket} did not answer within {seconds} s; its log is {log}")]
    NotReady {
        /// Its socket.
        socket: PathBuf,
        /// How long we waited.
        seconds: u64,
        /// Its log file.
        log: PathBuf,
    },
}

/// A containerd process owned by a test. Dropping it kills its tasks, stops it, and unmounts and
/// removes its directory.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    socket: PathBuf,
    namespace: String,
    child: Option<Child>,
}

impl Containerd {
    /// Starts containerd with everything under `dir` (created if missing); `namespace` is the
    /// containerd namespace that [`Containerd::ctr`] uses.
    pub fn start(dir: &Path, namespace: &str) -> Result<Self, ContainerdError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ContainerdError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        let d = dir.display();
        let text = format!(
            "version = 2\n\
             root = \"{d}/root\"\n\
             state = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n"
        );
        std::fs::write(&config, text).map_err(io(&config))?;
        let log = dir.join("containerd.log");
        let out = std::fs::File::create(&log).map_err(io(&log))?;
        let err = out.try_clone().map_err(io(&log))?;
        let mut command = Command::new("containerd");
        command.arg("--config").arg(&config).stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command.spawn().map_err(|source| ContainerdError::Command {
            action: "start".to_owned(),
            source: CommandError::Spawn { command: cmd::render(&command), source },
        })?;
        let containerd = Self { dir: dir.to_owned(), socket, namespace: namespace.to_owned(), child: Some(child) };
        containerd.wait_ready(Duration::from_secs(20), &log)?;
        narrate(&format!("containerd up at {}", containerd.socket.display()));
        Ok(containerd)
    }

    fn wait_ready(&self, timeout: Duration, log: &Path) -> Result<(), ContainerdError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.socket.exists() && cmd::run(self.ctr().arg("version")).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ContainerdError::NotReady { socket: self.socket.clone(), seconds: timeout.as_secs(), log: log.to_owned() })
    }

    /// Its gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The containerd namespace tests use.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `ctr` aimed at this containerd and namespace; add the subcommand and run it.
    pub fn ctr(&self) -> Command {
        let mut ctr = Command::new("ctr");
        ctr.arg("--address").arg(&self.socket).arg("--namespace").arg(&self.namespace);
        ctr
    }

    /// Runs `ctr ARGS…` and returns its output; fails unless it exits 0.
    pub fn run_ctr(&self, args: &[&str]) -> Result<String, ContainerdError> {
        cmd::run(self.ctr().args(args))
            .map_err(|source| ContainerdError::Command { action: format!("ctr {}", args.join(" ")), source })
    }

    /// Imports an OCI archive; returns once the image is listed.
    pub fn import(&self, archive: &Path) -> Result<(), ContainerdError> {
        let path = archive.to_string_lossy();
        self.run_ctr(&["images", "import", &path]).map(drop)
    }

    /// Kills and deletes every task and container in every namespace of this containerd.
    /// Returns the namespaces it found.
    fn remove_all_containers(&self) -> Vec<String> {
        let namespaces =
            cmd::run(Command::new("ctr").arg("--address").arg(&self.socket).args(["namespaces", "list", "-q"]))
                .unwrap_or_default();
        for ns in namespaces.lines().map(str::trim).filter(|ns| !ns.is_empty()) {
            let ctr = |args: &[&str]| {
                cmd::run(Command::new("ctr").arg("--address").arg(&self.socket).args(["--namespace", ns]).args(args))
            };
            let tasks = ctr(&["tasks", "list", "-q"]).unwrap_or_default();
            for task in tasks.lines().map(str::trim).filter(|t| !t.is_empty()) {
                let _ = ctr(&["tasks", "kill", "--signal", "SIGKILL", task]);
                let _ = ctr(&["tasks", "delete", "--force", task]);
            }
            let containers = ctr(&["containers", "list", "-q"]).unwrap_or_default();
            for container in containers.lines().map(str::trim).filter(|c| !c.is_empty()) {
                let _ = ctr(&["containers", "delete", container]);
            }
        }
        namespaces.lines().map(str::trim).filter(|ns| !ns.is_empty()).map(str::to_owned).collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let namespaces = self.remove_all_containers();
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Shims outlive containerd by design; ours name our socket on their command line.
        crate::sweep::kill_processes_mentioning(&self.dir);
        crate::sweep::unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        // Containers' cgroups (and their namespaces' parents) can outlive a forced delete until
        // the shims are gone; remove what is left of the run's now.
        for ns in namespaces.iter().filter(|ns| ns.starts_with(crate::RUN_PREFIX_ROOT)) {
            crate::sweep::remove_cgroups(std::path::Path::new("/sys/fs/cgroup"), ns);
        }
    }
}

/// Whether task `id` of `tasks` (what `ctr tasks list` prints: TASK, PID, STATUS) runs a
/// process that handles SIGTERM (`SigCgt` in `/proc/PID/status`, bit N-1 for signal N). The
/// kernel drops a SIGTERM sent to a namespace's init that does not handle it yet, so a test that
/// stops a container waits for this first.
pub fn task_handles_sigterm(tasks: &str, id: &str) -> bool {
    const SIGTERM: u64 = 1 << (15 - 1);
    let pid = tasks.lines().find_map(|row| {
        let mut cells = row.split_whitespace();
        (cells.next() == Some(id)).then(|| cells.next()).flatten()
    });
    let status = pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok());
    let handled = status.as_deref().and_then(|s| s.lines().find_map(|l| l.strip_prefix("SigCgt:")));
    handled.and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok()).is_some_and(|m| m & SIGTERM != 0)
}

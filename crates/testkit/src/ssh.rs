//! Nodes reached over SSH: a real machine of an inventory file, or one of the harness's VMs.
//!
//! Every command goes through OpenSSH's client with one shared connection per node
//! (`ControlMaster`), so that only the first command pays for the handshake, which matters on a
//! machine under emulation. The client runs in a network namespace of this host when the nodes
//! live on the harness's underlay. Background processes are started detached (`setsid`), their
//! output in `/var/log/shoal/NAME.log` on the node, and are known by their PID there.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::cmd;
use crate::netns::{Cluster, HarnessError};
use crate::node::{NodeLayout, NodeProcess, TestNode};

/// Where a node's background processes write their output.
const REMOTE_LOG_DIR: &str = "/var/log/shoal";

/// How an [`SshNode`] is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// `USER@HOST` (or a host alias of `~/.ssh/config`).
    pub destination: String,
    /// The private key to offer (`None`: ssh's own choice).
    pub key: Option<PathBuf>,
    /// The network namespace of this host the client runs in (`None`: this host's own).
    pub netns: Option<String>,
    /// The directory of the shared connections' sockets.
    pub control_dir: PathBuf,
}

/// A machine reached over SSH, as root.
#[derive(Debug, Clone)]
pub struct SshNode {
    name: String,
    addr: Ipv4Addr,
    target: SshTarget,
    layout: NodeLayout,
}

/// Quotes `word` for a POSIX shell.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b)) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// `argv` as one shell command line.
pub fn shell_line<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter().map(|a| shell_quote(a.as_ref())).collect::<Vec<_>>().join(" ")
}

impl SshNode {
    /// The node `name` at `addr` (its address on the cluster's network), reached through `target`.
    pub fn new(name: &str, addr: Ipv4Addr, target: SshTarget, layout: NodeLayout) -> Self {
        Self { name: name.to_owned(), addr, target, layout }
    }

    /// How it is reached.
    pub fn target(&self) -> &SshTarget {
        &self.target
    }

    /// `ssh` with the options every use shares, up to the destination.
    fn ssh(&self) -> Command {
        let mut command = match &self.target.netns {
            Some(netns) => Cluster::command_in(netns, "ssh"),
            None => Command::new("ssh"),
        };
        command.args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]);
        command.args(["-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5"]);
        command.args(["-o", "ControlMaster=auto", "-o", "ControlPersist=600"]);
        command.arg("-o").arg(format!("ControlPath={}/%C", self.target.control_dir.display()));
        if let Some(key) = &self.target.key {
            command.arg("-i").arg(key);
        }
        command
    }

    /// The `ssh` command that runs the shell command line `remote` there.
    pub fn command(&self, remote: &str) -> Command {
        let mut command = self.ssh();
        command.arg(&self.target.destination).arg("--").arg(remote);
        command
    }

    /// Runs the shell command line `remote` there; returns its output whatever its status.
    pub fn shell(&self, remote: &str) -> Result<Output, HarnessError> {
        let mut command = self.command(remote);
        command.stdin(Stdio::null());
        cmd::output(&mut command)
            .map_err(|source| HarnessError::Command { action: format!("run on {}", self.name), source })
    }

    /// Closes the shared connection (it would otherwise linger for ten minutes).
    pub fn disconnect(&self) {
        let mut exit = self.ssh();
        exit.args(["-O", "exit"]).arg(&self.target.destination).stdout(Stdio::null()).stderr(Stdio::null());
        let _ = exit.status();
    }
}

impl TestNode for SshNode {
    fn name(&self) -> &str {
        &self.name
    }

    fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    fn layout(&self) -> &NodeLayout {
        &self.layout
    }

    fn exec(&self, argv: &[&str]) -> Result<Output, HarnessError> {
        self.shell(&shell_line(argv))
    }

    fn spawn(&self, name: &str, argv: &[String]) -> Result<Box<dyn NodeProcess>, HarnessError> {
        let log = format!("{REMOTE_LOG_DIR}/{name}.log");
        let line = format!(
            "mkdir -p {REMOTE_LOG_DIR} && cd / && setsid {} >{log} 2>&1 </dev/null & echo $!",
            shell_line(argv),
            log = shell_quote(&log)
        );
        let output = self.shell(&line)?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let pid = stdout.trim().parse::<u32>().map_err(|_| HarnessError::Missing {
            what: format!("the PID of {name} started on {}", self.name),
            hint: format!(
                "the shell printed {:?} and {:?}",
                stdout.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        })?;
        Ok(Box::new(SshProcess { node: self.clone(), name: name.to_owned(), pid, log, killed: false }))
    }

    fn read_file(&self, path: &Path) -> Result<Vec<u8>, HarnessError> {
        let path = path.to_string_lossy();
        let output = self.shell(&format!("cat {}", shell_quote(&path)))?;
        if !output.status.success() {
            return Err(HarnessError::Missing {
                what: format!("{path} on {}", self.name),
                hint: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(output.stdout)
    }
}

/// A process an [`SshNode`] started in the background.
#[derive(Debug)]
pub struct SshProcess {
    node: SshNode,
    name: String,
    pid: u32,
    log: String,
    killed: bool,
}

impl SshProcess {
    /// Its PID on the node.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl NodeProcess for SshProcess {
    fn kill(&mut self) -> Result<(), HarnessError> {
        // SIGKILL, then wait until the PID is gone (at most ~5 s).
        let line = format!(
            "kill -9 {pid} 2>/dev/null; n=0; while kill -0 {pid} 2>/dev/null && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done; ! kill -0 {pid} 2>/dev/null",
            pid = self.pid
        );
        let output = self.node.shell(&line)?;
        self.killed = true;
        if output.status.success() {
            return Ok(());
        }
        Err(HarnessError::Process {
            action: format!("kill process {} ({}) on {}", self.name, self.pid, self.node.name),
            source: std::io::Error::other("still running 5 s after SIGKILL"),
        })
    }

    fn is_running(&mut self) -> bool {
        // A zombie still answers `kill -0`: its state in /proc tells.
        let line = format!("grep -q '^State:[[:space:]]*[^Z]' /proc/{}/status", self.pid);
        !self.killed && self.node.shell(&line).is_ok_and(|o| o.status.success())
    }

    fn log(&self) -> Result<String, HarnessError> {
        self.node.read_file(Path::new(&self.log)).map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

impl Drop for SshProcess {
    fn drop(&mut self) {
        if !self.killed {
            let _ = self.node.shell(&format!("kill -9 {} 2>/dev/null", self.pid));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("ls"), "ls");
        assert_eq!(shell_quote("--data-dir=/var/lib/shoal"), "--data-dir=/var/lib/shoal");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_line(&["sh", "-c", "echo $HOME; ls"]), "sh -c 'echo $HOME; ls'");
    }

    #[test]
    fn the_command_shares_one_connection_and_runs_in_the_client_namespace() {
        let node = SshNode::new(
            "vm1",
            Ipv4Addr::new(192, 0, 2, 11),
            SshTarget {
                destination: "root@192.0.2.11".into(),
                key: Some("/k/id".into()),
                netns: Some("shoaltest-x-u".into()),
                control_dir: "/c".into(),
            },
            NodeLayout {
                bin_dir: "/opt/shoal/bin".into(),
                data_dir: "/var/lib/shoal".into(),
                containerd_socket: "/run/containerd/containerd.sock".into(),
                containerd_namespace: "shoal".into(),
                netns_prefix: "shoal-".into(),
                resolv_conf: None,
            },
        );
        let line = cmd::render(&node.command("uname -r"));
        assert!(line.starts_with("ip netns exec shoaltest-x-u ssh "), "{line}");
        assert!(line.contains("ControlPath=/c/%C") && line.contains("-i /k/id"), "{line}");
        assert!(line.ends_with("root@192.0.2.11 -- uname -r"), "{line}");
    }
}

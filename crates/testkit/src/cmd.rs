//! Running external commands (`ip`, `nft`, `ctr`) with errors that say what ran and what it printed.

use std::process::{Command, Output};

/// An external command failed to start or exited non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Could not start `{command}`: {source}
    #[error("could not start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it could not start.
        source: std::io::Error,
    },
    /// The command exited with a failure status.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on standard error, trimmed.
        stderr: String,
    },
}

/// Renders a command line for messages.
pub(crate) fn render(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` to completion; fails unless it exits 0. Returns its standard output.
pub(crate) fn run(cmd: &mut Command) -> Result<String, CommandError> {
    let output = output(cmd)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(CommandError::Failed {
            command: render(cmd),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Runs `cmd` to completion and returns its output whatever its status.
pub(crate) fn output(cmd: &mut Command) -> Result<Output, CommandError> {
    cmd.output().map_err(|source| CommandError::Spawn { command: render(cmd), source })
}

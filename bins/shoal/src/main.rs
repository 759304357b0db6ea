//! `shoal`: the command-line client of a Shoal cluster, speaking the manager's control API over
//! mutual TLS with a client bundle (`--cert-path`, `SHOAL_CERT_PATH`) to a manager (`--host`,
//! `SHOAL_HOST`). Commands and output follow the docker CLI.

// A command-line program: printing is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod command;
mod format;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser};

#[derive(Debug, Parser)]
#[command(name = "shoal", version, about = "Manage a Shoal cluster")]
struct Cli {
    /// A manager, HOST:PORT. Given before the command, as docker's -H: `service create --host`
    /// is an /etc/hosts entry of the tasks.
    #[arg(long, short = 'H', env = "SHOAL_HOST", default_value = "127.0.0.1:2377")]
    host: String,
    /// The client bundle directory (key, certificate, roots), as `shoal-manager init` wrote it.
    #[arg(long, env = "SHOAL_CERT_PATH", default_value = "/var/lib/shoal/admin", global = true)]
    cert_path: PathBuf,
    #[command(subcommand)]
    command: command::Command,
}

/// Writes the completion script of `shell` for the whole command tree.
fn completion(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut Cli::command(), "shoal", out);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let command::Command::Completion { shell } = cli.command {
        // Needs no manager: the script is made from the command tree alone.
        completion(shell, &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    // One thread does for a command; the dashboard serves browsers while it follows the cluster.
    let mut builder = match cli.command {
        command::Command::Dashboard(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("shoal: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command::run(&cli.host, &cli.cert_path, cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        // Printed already, one line per failure.
        Err(err) if err.is::<command::Reported>() => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_scripts_name_the_subcommands() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut script = Vec::new();
            completion(shell, &mut script);
            let script = String::from_utf8(script).expect("utf-8");
            for word in [
                "node",
                "service",
                "network",
                "join-token",
                "completion",
                "rollback",
                "update-parallelism",
                "publish-add",
                "secret",
                "config",
                "volume",
                "secret-add",
                "data-file",
                "stack",
                "resolve-image",
            ] {
                assert!(script.contains(word), "{shell}: {word} missing");
            }
        }
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }
}

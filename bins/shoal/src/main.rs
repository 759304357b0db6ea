//! `shoal`: the command-line client of a Shoal cluster, speaking the manager's control API over
//! mutual TLS with a client bundle (`--cert-path`, `SHOAL_CERT_PATH`) to a manager (`--host`,
//! `SHOAL_HOST`). Commands and output follow the docker CLI.

// A command-line program: printing is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod command;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "shoal", version, about = "Manage a Shoal cluster")]
struct Cli {
    /// A manager, HOST:PORT.
    #[arg(long, short = 'H', env = "SHOAL_HOST", default_value = "127.0.0.1:2377", global = true)]
    host: String,
    /// The client bundle directory (key, certificate, roots), as `shoal-manager init` wrote it.
    #[arg(long, env = "SHOAL_CERT_PATH", default_value = "/var/lib/shoal/admin", global = true)]
    cert_path: PathBuf,
    #[command(subcommand)]
    command: command::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
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

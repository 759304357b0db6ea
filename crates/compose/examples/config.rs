//! `shoal stack config` in miniature: loads compose files and prints the merged project.
//!
//! `cargo run -p shoal-compose --example config -- -c compose.yml [-c override.yml …]`
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use shoal_compose::{LoadOptions, load, render};

fn main() -> ExitCode {
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("-c" | "--compose-file", Some(file)) => files.push(file.into()),
            _ => {
                eprintln!("usage: config -c FILE [-c FILE …]");
                return ExitCode::from(2);
            }
        }
    }
    let options = LoadOptions { files, env: std::env::vars().collect(), ..LoadOptions::default() };
    match load(&options) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", render(&loaded.project));
            match loaded.project.startup_order() {
                Ok(steps) => {
                    for step in steps.iter().filter(|s| !s.waits_for.is_empty()) {
                        let waits: Vec<String> =
                            step.waits_for.iter().map(|(d, c)| format!("{d} ({})", c.as_str())).collect();
                        eprintln!("start order: {} after {}", step.service, waits.join(", "));
                    }
                }
                Err(error) => eprintln!("error: {error}"),
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

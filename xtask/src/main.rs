//! `cargo xtask`: the single entry point for Shoal's automation (tests, images, clean-up, benchmarks).

// A command-line tool: printing to the terminal is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod converge;
mod demo;
mod prereq;
mod test;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Shoal's automation", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install missing prerequisites, then run fmt, clippy, deny, the whole test suite (privileged
    /// tests included) and rustdoc; ends with `summary: N passed, N failed, N skipped`.
    Test(test::TestArgs),
    /// Check the workspace conventions (layering, `//!` headers, READMEs, lints, no anyhow in libraries).
    Tidy,
    /// Build the OCI test image archives from the host's busybox-static.
    Images {
        /// Directory for the archives.
        #[arg(long, default_value = "target/shoal-images")]
        out: PathBuf,
    },
    /// Remove leftovers (namespaces, processes, mounts, cgroups, temp dirs) of killed test runs.
    ///
    /// It removes everything named `shoaltest-…`, so do not run it while tests are running: it
    /// would take their namespaces and processes too.
    Clean,
    /// Run a benchmark and print its figures (see `cargo xtask bench --help` for the list).
    Bench(bench::BenchArgs),
    /// Long fault-injection runs: `soak raft --seeds N` checks linearizability over N seeded runs.
    Soak {
        /// What to soak (only `raft` so far).
        what: String,
        /// How many seeds.
        #[arg(long, default_value_t = 20)]
        seeds: u64,
        /// Seconds per seed.
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
    /// Build the binaries and run the end-to-end tests on the netns cluster (also part of `test`).
    E2e,
    /// Bring up a 3-manager + 2-worker cluster in network namespaces with a service running
    /// (`--down` removes it).
    Demo {
        /// Tear the demo cluster down.
        #[arg(long)]
        down: bool,
    },
    /// Boot Debian's cloud kernel in a qemu VM and run the IPVS conformance tests inside it
    /// (this host's kernel has no IPVS). Extra arguments filter the test cases.
    VmTest {
        /// Test case names to run (all when none).
        filters: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Test(args) = &cli.command {
        // `test` prints its own failure and must end with the summary line.
        return match workspace_root().and_then(|root| enter(&root).map(|()| root)) {
            Ok(root) if test::run(&root, args) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(err) => {
                eprintln!("error: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn enter(root: &Path) -> anyhow::Result<()> {
    std::env::set_current_dir(root).with_context(|| format!("cannot enter workspace root {}", root.display()))
}

fn dispatch(command: Cmd) -> anyhow::Result<()> {
    let root = workspace_root()?;
    enter(&root)?;
    match command {
        Cmd::Test(args) => {
            if test::run(&root, &args) {
                Ok(())
            } else {
                bail!("tests failed")
            }
        }
        Cmd::Tidy => {
            let problems = tidy::check_workspace(&root)?;
            if problems.is_empty() {
                println!("tidy: workspace follows the conventions");
                Ok(())
            } else {
                for problem in &problems {
                    eprintln!("tidy: {problem}");
                }
                bail!("tidy found {} problem(s)", problems.len())
            }
        }
        Cmd::Images { out } => {
            let built = shoal_testkit::images::build_all(Path::new(shoal_testkit::images::BUSYBOX), &out)?;
            for image in built {
                println!("{:<28} {}  {}", image.def.reference(), image.manifest_digest, image.path.display());
            }
            Ok(())
        }
        Cmd::Clean => {
            require_root("clean")?;
            let report = shoal_testkit::sweep();
            println!(
                "removed {} namespace(s), {} process(es), {} cgroup(s), {} directory(ies)",
                report.namespaces.len(),
                report.processes.len(),
                report.cgroups.len(),
                report.dirs.len()
            );
            for line in report.namespaces.iter().map(String::as_str) {
                println!("  netns {line}");
            }
            for dir in &report.dirs {
                println!("  dir   {}", dir.display());
            }
            Ok(())
        }
        Cmd::Bench(args) => bench::run(&root, &args),
        Cmd::Soak { what, seeds, secs } => match what.as_str() {
            "raft" => bench::soak_raft(seeds, secs),
            other => bail!("nothing to soak named {other:?}; available: raft"),
        },
        Cmd::Demo { down } => {
            if down {
                require_root("demo --down")?;
                demo::down(&root)
            } else {
                demo::context(demo::up(&root))
            }
        }
        Cmd::E2e => {
            require_root("e2e")?;
            let setup = prereq::ensure(prereq::Task::E2e)?;
            let build = prereq::timed_cargo(&["build", "--workspace", "--bins", "--locked"])?;
            println!(
                "e2e: set-up took {:.1} s, building the binaries {:.1} s",
                setup.as_secs_f64(),
                build.as_secs_f64()
            );
            prereq::timed_cargo(&["nextest", "run", "--locked", "-p", "shoal-tests", "-E", "binary(e2e)"])?;
            Ok(())
        }
        Cmd::VmTest { filters } => {
            require_root("vm-test")?;
            prereq::ensure(prereq::Task::VmTest)?;
            let (passed, failed) = test::vm_test(&filters)?;
            if failed > 0 {
                bail!("{failed} IPVS conformance test(s) failed in the VM ({passed} passed)");
            }
            Ok(())
        }
    }
}

/// The workspace root: the parent of xtask's manifest directory.
fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).context("xtask's manifest directory has no parent")
}

fn require_root(what: &str) -> anyhow::Result<()> {
    let uid = Command::new("id").arg("-u").output().context("cannot run `id -u`")?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        bail!("`cargo xtask {what}` needs root (network namespaces, mounts): run it with sudo");
    }
    Ok(())
}

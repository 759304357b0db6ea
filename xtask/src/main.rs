//! `cargo xtask`: the single entry point for Shoal's automation (tests, images, clean-up, benchmarks).

// A command-line tool: printing to the terminal is its job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod converge;
mod demo;
mod mesh;
mod prereq;
mod stack;
mod test;
mod tidy;
mod update;
mod vmbench;

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
    /// Run one fuzz target longer than `cargo xtask test` does (`--list` names them).
    Fuzz {
        /// The target, e.g. raft_codec_message.
        name: Option<String>,
        /// Seconds to run.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// List the targets.
        #[arg(long)]
        list: bool,
    },
    /// Build the binaries and run the end-to-end tests on the netns cluster (also part of `test`);
    /// `--vm` runs the scenarios on three qemu VMs instead, `--hosts FILE` on the machines of an
    /// inventory file.
    E2e {
        /// Boot three qemu VMs (Debian's cloud kernel: IPVS, ESP, NFS) and run the scenarios there.
        #[arg(long, conflicts_with = "hosts")]
        vm: bool,
        /// Run the scenarios on the machines an inventory file names (see crates/testkit/README.md).
        #[arg(long, value_name = "FILE")]
        hosts: Option<PathBuf>,
    },
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
        Cmd::Fuzz { name, secs, list } => fuzz(name.as_deref().filter(|_| !list), secs),
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
        Cmd::E2e { vm, hosts } => {
            require_root("e2e")?;
            let task = if vm { prereq::Task::E2eVm } else { prereq::Task::E2e };
            let setup = prereq::ensure(task)?;
            let build = prereq::timed_cargo(&["build", "--workspace", "--bins", "--locked"])?;
            println!(
                "e2e: set-up took {:.1} s, building the binaries {:.1} s",
                setup.as_secs_f64(),
                build.as_secs_f64()
            );
            let mut args = vec!["nextest", "run", "--locked", "-p", "shoal-tests", "--no-capture"];
            match (vm, &hosts) {
                (false, None) => args.extend(["-E", "binary(e2e)"]),
                _ => args.extend(["-E", "binary(e2e_vm)"]),
            }
            // The test reads the inventory from SHOAL_TESTBED; without one it boots the VMs.
            let testbed = match &hosts {
                Some(file) => vec![(
                    "SHOAL_TESTBED",
                    std::fs::canonicalize(file).with_context(|| format!("inventory {}", file.display()))?,
                )],
                None => Vec::new(),
            };
            prereq::timed_cargo_with(&args, &testbed)?;
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

/// The fuzz targets: (name, package). Each is the test `fuzz_NAME` in the package's `tests/fuzz.rs`,
/// on the engine in `tests/fuzz-engine/engine.rs`; `cargo xtask test` runs each for 2 s.
const FUZZ_TARGETS: &[(&str, &str)] = &[
    ("raft_codec_message", "shoal-raft-store"),
    ("raft_log_record", "shoal-raft-store"),
    ("raft_log_segment", "shoal-raft-store"),
    ("raft_snapshot_file", "shoal-raft-store"),
    ("ipvs_netlink", "shoal-ipvs-lb"),
    ("nft_netlink", "shoal-ipvs-lb"),
    ("xfrm_netlink", "shoal-overlay"),
    ("dns_query", "shoal-embedded-dns"),
    ("dns_upstream_answer", "shoal-embedded-dns"),
    ("join_token", "shoal-ca-pki"),
    ("unlock_key", "shoal-ca-pki"),
    ("wrapped_data_key", "shoal-ca-pki"),
    ("csr", "shoal-ca-pki"),
];

/// `cargo xtask fuzz NAME --secs N`: one target for N seconds (libtest, not nextest, whose slow
/// test timeout would end a long run).
fn fuzz(name: Option<&str>, secs: u64) -> anyhow::Result<()> {
    let Some(name) = name else {
        for (name, package) in FUZZ_TARGETS {
            println!("{name:<22} {package}");
        }
        return Ok(());
    };
    let Some((_, package)) = FUZZ_TARGETS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = FUZZ_TARGETS.iter().map(|(n, _)| *n).collect();
        bail!("no fuzz target named {name:?}; available: {}", names.join(", "));
    };
    let test = format!("fuzz_{name}");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(["test", "--locked", "-p", package, "--test", "fuzz", "--", "--exact", &test, "--nocapture"])
        .env("SHOAL_FUZZ_SECS", secs.to_string())
        .status()
        .context("cannot run cargo test")?;
    if !status.success() {
        bail!("fuzz target {name} found a problem ({status}); its output above says how to replay it");
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::FUZZ_TARGETS;

    /// Every `fuzz_*` test in the packages' `tests/fuzz.rs` is a target `cargo xtask fuzz` knows,
    /// and every target names a test that exists.
    #[test]
    fn fuzz_targets_match_the_fuzz_tests() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut found = Vec::new();
        for dir in ["raft-store", "ipvs-lb", "overlay", "embedded-dns", "ca-pki"] {
            let text = std::fs::read_to_string(root.join("crates").join(dir).join("tests/fuzz.rs")).expect("fuzz.rs");
            let package = format!("shoal-{dir}");
            for name in text.lines().filter_map(|l| l.trim().strip_prefix("fn fuzz_")?.split('(').next()) {
                found.push((name.to_owned(), package.clone()));
            }
        }
        let mut known: Vec<(String, String)> =
            FUZZ_TARGETS.iter().map(|(n, p)| ((*n).to_owned(), (*p).to_owned())).collect();
        found.sort();
        known.sort();
        assert_eq!(found, known);
    }
}

//! `cargo xtask test`: prerequisites, fmt, clippy, deny, the whole test suite and rustdoc, in that
//! order, stopping at the first failure, and a closing `summary: N passed, N failed, N skipped`.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub(crate) struct TestArgs {
    /// Extra arguments for `cargo nextest run` (e.g. a test name filter), after `--`.
    #[arg(last = true)]
    nextest: Vec<String>,
}

/// Test counts from every runner.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    passed: u64,
    failed: u64,
    skipped: u64,
}

/// Runs every step; prints why it failed, if it did, and always ends with the summary line.
pub(crate) fn run(root: &Path, args: &TestArgs) -> bool {
    let mut counts = Counts::default();
    let mut clock = Steps::default();
    let result = steps(root, args, &mut counts, &mut clock);
    clock.finish();
    println!("\ntimings:");
    for (name, took) in &clock.done {
        println!("  {:>7.1} s  {name}", took.as_secs_f64());
    }
    if let Err(err) = &result {
        println!("xtask test: FAILED: {err:#}");
    }
    println!("summary: {} passed, {} failed, {} skipped", counts.passed, counts.failed, counts.skipped);
    result.is_ok()
}

/// The steps run so far and how long each took.
#[derive(Debug, Default)]
struct Steps {
    current: Option<(&'static str, Instant)>,
    done: Vec<(&'static str, Duration)>,
}

impl Steps {
    /// Ends the running step, if any, and starts `name`.
    fn begin(&mut self, name: &'static str) {
        self.finish();
        println!("\n==> {name}");
        self.current = Some((name, Instant::now()));
    }

    fn finish(&mut self) {
        if let Some((name, started)) = self.current.take() {
            self.done.push((name, started.elapsed()));
        }
    }
}

fn steps(root: &Path, args: &TestArgs, counts: &mut Counts, clock: &mut Steps) -> anyhow::Result<()> {
    clock.begin("prerequisites");
    crate::prereq::ensure(crate::prereq::Task::Test)?;

    clock.begin("cargo fmt --check");
    cargo(&["fmt", "--all", "--check"], &[]).context("formatting differs: run `cargo fmt --all`")?;

    clock.begin("cargo clippy");
    cargo(&["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"], &[])?;

    clock.begin("cargo deny check");
    deny()?;

    clock.begin("cargo build --workspace --bins (the end-to-end tests run the binaries)");
    cargo(&["build", "--workspace", "--bins", "--locked"], &[])?;

    clock.begin("cargo nextest run (unit, integration, privileged and end-to-end tests)");
    let skip_log = root.join("target").join("shoal-skipped.log");
    let _ = std::fs::remove_file(&skip_log);
    let junit = root.join("target").join("nextest").join("default").join("junit.xml");
    let _ = std::fs::remove_file(&junit);
    let mut nextest = vec!["nextest", "run", "--workspace", "--locked", "--no-fail-fast"];
    nextest.extend(args.nextest.iter().map(String::as_str));
    let skip_env = skip_log.to_string_lossy().into_owned();
    let nextest_result = cargo(&nextest, &[("SHOAL_SKIP_LOG", &skip_env)]);
    let report = std::fs::read_to_string(&junit);
    let suite = parse_junit(report.as_deref().unwrap_or_default());
    let skipped = std::fs::read_to_string(&skip_log).map(|s| s.lines().count() as u64).unwrap_or(0);
    counts.passed += suite.passed.saturating_sub(skipped);
    counts.failed += suite.failed;
    counts.skipped += skipped;
    if skipped > 0 {
        println!("skipped tests (missing prerequisites):");
        print!("{}", std::fs::read_to_string(&skip_log).unwrap_or_default());
    }
    nextest_result?;
    if let Err(err) = report {
        // Without the report the summary would count every test as not run.
        bail!(
            "nextest wrote no JUnit report at {} ({err}): keep [profile.default.junit] in .config/nextest.toml",
            junit.display()
        );
    }

    clock.begin("cargo test --doc");
    let doc = cargo_captured(&["test", "--doc", "--workspace", "--locked"])?;
    let doc_counts = parse_libtest(&doc.0);
    counts.passed += doc_counts.passed;
    counts.failed += doc_counts.failed;
    if !doc.1 {
        bail!("doc tests failed");
    }

    clock.begin("IPVS conformance in a qemu VM (cargo xtask vm-test)");
    let (passed, failed) = vm_test(&[])?;
    counts.passed += passed;
    counts.failed += failed;
    if failed > 0 {
        bail!("{failed} IPVS conformance test(s) failed in the VM");
    }

    clock.begin("cargo doc (warnings denied)");
    cargo(&["doc", "--workspace", "--no-deps", "--locked"], &[("RUSTDOCFLAGS", "-D warnings")])?;
    Ok(())
}

/// `cargo deny check`. The advisory database is fetched from the network when it can be; where
/// only the crate registries are reachable (as on CI here) an existing local copy is used, and
/// with none the advisories check is reported as not run rather than silently passed.
fn deny() -> anyhow::Result<()> {
    cargo(&["deny", "--log-level", "error", "check", "bans", "licenses", "sources"], &[])?;
    if cargo(&["deny", "--log-level", "error", "check", "advisories"], &[]).is_ok() {
        return Ok(());
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    let has_local_db = home
        .map(|home| home.join("advisory-dbs"))
        .and_then(|dir| std::fs::read_dir(dir).ok())
        .is_some_and(|entries| entries.flatten().any(|e| e.path().join("crates").is_dir()));
    if has_local_db {
        println!("deny: advisory database could not be fetched; checking against the local copy");
        cargo(&["deny", "--offline", "--log-level", "error", "check", "advisories"], &[])
    } else {
        println!("deny: advisories NOT checked: the advisory database cannot be fetched from this network");
        Ok(())
    }
}

fn cargo(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    command.args(args).envs(env.iter().copied());
    let status = command.status().with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs cargo, echoing its standard output while keeping a copy; returns (output, success).
fn cargo_captured(args: &[&str]) -> anyhow::Result<(String, bool)> {
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    let mut copy = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line.context("reading cargo's output")?;
            println!("{line}");
            copy.push_str(&line);
            copy.push('\n');
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    Ok((copy, status.success()))
}

/// Runs the IPVS conformance suite in a VM booting Debian's cloud kernel (the VM program is an
/// example of `shoal-ipvs-lb`; it installs qemu and fetches the kernel package when missing) and
/// returns its (passed, failed) counts from its `ipvs-conformance: N passed, M failed` line.
pub(crate) fn vm_test(filters: &[String]) -> anyhow::Result<(u64, u64)> {
    let mut args = vec!["run", "--locked", "-p", "shoal-ipvs-lb", "--example", "vm_test", "--"];
    args.extend(filters.iter().map(String::as_str));
    let (output, success) = cargo_captured(&args)?;
    // The guest console is relayed with a prefix: take what follows the marker.
    let line = output.lines().rev().find_map(|l| l.split_once("ipvs-conformance:").map(|(_, rest)| rest));
    let Some(line) = line else {
        bail!(
            "the VM test printed no `ipvs-conformance:` result line (exit {})",
            if success { "0" } else { "non-zero" }
        );
    };
    // "8 passed, 0 failed in 4.2s"
    let count = |word: &str| -> u64 {
        line.split(',')
            .find_map(|part| {
                let mut words = part.split_whitespace();
                let n = words.next()?.parse().ok()?;
                (words.next()? == word).then_some(n)
            })
            .unwrap_or(0)
    };
    let (passed, failed) = (count("passed"), count("failed"));
    if !success && failed == 0 {
        bail!("the VM test failed before reporting any failing case");
    }
    Ok((passed, failed))
}

/// Counts from nextest's JUnit report: the `<testsuites …>` element's `tests`, `failures` and
/// `errors` attributes.
fn parse_junit(xml: &str) -> Counts {
    let Some(start) = xml.find("<testsuites") else { return Counts::default() };
    let tag = &xml[start..xml[start..].find('>').map_or(xml.len(), |end| start + end)];
    let attr = |name: &str| -> u64 {
        let key = format!(" {name}=\"");
        tag.find(&key).and_then(|at| tag[at + key.len()..].split('"').next()).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    let failed = attr("failures") + attr("errors");
    Counts { passed: attr("tests").saturating_sub(failed), failed, skipped: 0 }
}

/// Sums libtest's `test result: ok. N passed; M failed; …` lines.
fn parse_libtest(output: &str) -> Counts {
    let mut counts = Counts::default();
    for line in output.lines().filter(|l| l.starts_with("test result:")) {
        for part in line.split([';', '.']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next()) {
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => counts.passed += n,
                    "failed" => counts.failed += n,
                    _ => {}
                }
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_counts() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="12" failures="2" errors="1" uuid="x" timestamp="t" time="1.0">
<testsuite name="a" tests="12" disabled="0" errors="0" failures="0"></testsuite></testsuites>"#;
        assert_eq!(parse_junit(xml), Counts { passed: 9, failed: 3, skipped: 0 });
        assert_eq!(parse_junit(""), Counts::default());
    }

    #[test]
    fn libtest_counts() {
        let out = "running 3 tests\n\
                   test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
                   test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.2s\n";
        assert_eq!(parse_libtest(out), Counts { passed: 4, failed: 2, skipped: 0 });
    }
}

//! The loader on a corpus of compose files shaped like public ones (docker's example voting
//! app and WordPress stacks, docker/cli's full-example fixture, the Compose Specification's
//! examples, monitoring and proxy stacks) and on files that must fail.
//!
//! Each directory under `tests/corpus/` is one case:
//! - `files.txt`: the files to merge, one a line (default `compose.yml`);
//! - `env.txt`: the caller's environment, `KEY=VALUE` lines (default empty);
//! - `expected.yml`: the rendered project (`shoal stack config`), with the case directory
//!   written `$CASE`, and `warnings.txt` the warnings, one a line; or
//! - `expected.err`: the error, which names the file, line and column.
//!
//! A loaded case must also render to YAML that loads back to the same project. Run with
//! `UPDATE_EXPECT=1` to rewrite the expectations, then review the diff.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use shoal_compose::{LoadOptions, Source, load, load_sources, render};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("tests/corpus exists")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    cases
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn options(case: &Path) -> LoadOptions {
    // Relative paths, so messages read `tests/corpus/CASE/compose.yml:3:5` on every machine.
    let relative = Path::new("tests/corpus").join(case.file_name().expect("case has a name"));
    let files = read(&case.join("files.txt"))
        .map(|list| list.lines().filter(|l| !l.is_empty()).map(|l| relative.join(l)).collect())
        .unwrap_or_else(|| vec![relative.join("compose.yml")]);
    let env: BTreeMap<String, String> = read(&case.join("env.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    LoadOptions { files, env, ..LoadOptions::default() }
}

/// Compares `actual` with the file, or rewrites the file under `UPDATE_EXPECT`.
fn expect_file(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(path, actual).expect("expectation written");
        return;
    }
    let expected = read(path).unwrap_or_default();
    if expected != actual {
        failures.push(format!("{}:\n--- expected\n{expected}\n--- actual\n{actual}", path.display()));
    }
}

#[test]
fn corpus_cases() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in cases() {
        let options = options(&case);
        let name = case.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let result = load(&options);
        ran += 1;
        if case.join("expected.err").exists() {
            match result {
                Ok(_) => failures.push(format!("{name}: loaded, but expected.err says it fails")),
                Err(error) => {
                    let message = format!("{error}\n").replace(&*case.to_string_lossy(), "$CASE");
                    expect_file(&case.join("expected.err"), &message, &mut failures);
                }
            }
            continue;
        }
        let loaded = match result {
            Ok(loaded) => loaded,
            Err(error) => {
                failures.push(format!("{name}: {error}"));
                continue;
            }
        };
        let dir = case.to_string_lossy().into_owned();
        let rendered = render(&loaded.project);
        expect_file(&case.join("expected.yml"), &rendered.replace(&dir, "$CASE"), &mut failures);
        let warnings: String = loaded.warnings.iter().map(|w| format!("{w}\n")).collect();
        expect_file(&case.join("warnings.txt"), &warnings, &mut failures);

        // The rendered project is a compose file that means the same thing.
        let again = load_sources(&[Source::new(case.join("rendered.yml"), rendered.clone())], &options);
        match again {
            Ok(again) if again.project == loaded.project => {}
            Ok(again) => failures
                .push(format!("{name}: the rendered file loads to another project:\n{}", render(&again.project))),
            Err(error) => failures.push(format!("{name}: the rendered file does not load: {error}\n{rendered}")),
        }
    }
    assert!(ran >= 30, "the corpus has {ran} cases");
    assert!(failures.is_empty(), "{} of {ran} cases failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

/// Each case says what it expects: a golden render or an error.
#[test]
fn every_case_has_an_expectation() {
    for case in cases() {
        let ok = case.join("expected.yml").exists();
        let err = case.join("expected.err").exists();
        assert!(
            ok != err || std::env::var_os("UPDATE_EXPECT").is_some(),
            "{}: needs expected.yml or expected.err",
            case.display()
        );
    }
}

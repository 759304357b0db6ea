//! The loader never panics: random YAML-like text, and the corpus files cut, spliced and
//! garbled, either load or fail with a located error. What loads renders to YAML that loads
//! back to the same rendering.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use shoal_compose::{LoadOptions, Source, load_sources, render};

/// Every compose file of the corpus, with its path.
fn corpus_files() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files = Vec::new();
    for case in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(case.path()).into_iter().flatten().flatten() {
            let path = file.path();
            let is_compose = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("compose"));
            if let (true, Ok(text)) = (is_compose, std::fs::read_to_string(&path)) {
                files.push((path, text));
            }
        }
    }
    files.sort();
    files
}

fn options() -> LoadOptions {
    let env: BTreeMap<String, String> = [("HOME", "/home/fuzz"), ("TAG", "1"), ("DB_PASSWORD", "pw"), ("BAR", "bar")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    LoadOptions { env, ..LoadOptions::default() }
}

/// Loads the text; when it loads, its rendering must load to the same rendering. Errors must
/// carry a location or be about reading a file.
fn check(path: &Path, text: &str) -> Result<(), TestCaseError> {
    let options = options();
    match load_sources(&[Source::new(path, text)], &options) {
        Ok(loaded) => {
            let rendered = render(&loaded.project);
            let again = load_sources(&[Source::new(path.with_file_name("rendered.yml"), rendered.as_str())], &options);
            match again {
                Ok(again) => prop_assert_eq!(render(&again.project), rendered),
                Err(error) => prop_assert!(false, "the rendering does not load: {}\n{}", error, rendered),
            }
        }
        Err(error) => {
            let message = error.to_string();
            prop_assert!(error.location().is_some() || message.contains("cannot read"), "unlocated error: {}", message);
        }
    }
    Ok(())
}

/// One edit of a file's characters.
#[derive(Debug, Clone)]
enum Edit {
    Delete { at: usize, len: usize },
    Insert { at: usize, text: String },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
    Indent { line: usize, by: i8 },
}

fn snippet() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(": ".to_owned()),
        Just("\n  - ".to_owned()),
        Just("${".to_owned()),
        Just("$".to_owned()),
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("<<: *a\n".to_owned()),
        Just("!reset ".to_owned()),
        Just("!override ".to_owned()),
        Just("{".to_owned()),
        Just("[".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("\t".to_owned()),
        Just("null".to_owned()),
        Just("x-y: 1\n".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("-1".to_owned()),
        Just("é✓".to_owned()),
        "[a-z_:/.0-9 -]{0,12}",
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0usize..20).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), snippet()).prop_map(|(at, text)| Edit::Insert { at, text }),
        any::<usize>().prop_map(|line| Edit::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines { a, b }),
        (any::<usize>(), -4i8..4).prop_map(|(line, by)| Edit::Indent { line, by }),
    ]
}

fn apply(text: &str, edit: &Edit) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let n = lines.len().max(1);
    match edit {
        Edit::Delete { at, len } => {
            let at = at % (chars.len() + 1);
            let end = (at + len).min(chars.len());
            chars[..at].iter().chain(&chars[end..]).collect()
        }
        Edit::Insert { at, text } => {
            let at = at % (chars.len() + 1);
            chars[..at].iter().copied().chain(text.chars()).chain(chars[at..].iter().copied()).collect()
        }
        Edit::DuplicateLine { line } => {
            if let Some(l) = lines.get(line % n).cloned() {
                lines.insert(line % n, l);
            }
            lines.join("\n")
        }
        Edit::SwapLines { a, b } => {
            if !lines.is_empty() {
                lines.swap(a % n, b % n);
            }
            lines.join("\n")
        }
        Edit::Indent { line, by } => {
            if let Some(l) = lines.get_mut(line % n) {
                if *by > 0 {
                    l.insert_str(0, &" ".repeat(usize::from(by.unsigned_abs())));
                } else {
                    let spaces = l.len() - l.trim_start_matches(' ').len();
                    l.drain(..spaces.min(usize::from(by.unsigned_abs())));
                }
            }
            lines.join("\n")
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_text_never_panics(text in "[a-z0-9_:{}\\[\\], \n\t#&*!|>'\"$.~<=?-]{0,400}") {
        check(Path::new("/fuzz/compose.yml"), &text)?;
    }

    #[test]
    fn mutated_corpus_files_never_panic(index in any::<usize>(), edits in proptest::collection::vec(edit(), 1..6)) {
        let files = corpus_files();
        prop_assume!(!files.is_empty());
        let (path, text) = &files[index % files.len()];
        let mutated = edits.iter().fold(text.clone(), |text, e| apply(&text, e));
        check(path, &mutated)?;
    }
}

#[test]
fn every_corpus_file_is_fuzzed() {
    assert!(corpus_files().len() >= 30, "the corpus is where the mutations start");
}

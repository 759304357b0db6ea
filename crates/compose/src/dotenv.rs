//! Env files: the `.env` beside the first compose file and the files `env_file:` names.
//!
//! The format is docker compose's: `KEY=VALUE` lines, `#` comments, an optional `export `,
//! single quotes taken literally, double quotes with `\n`-style escapes, unquoted values ending
//! at ` #`; unquoted and double-quoted values are interpolated (variables of the environment
//! first, then those defined earlier in the file). A line with only `KEY` takes the variable
//! from the environment, or leaves it without a value. The `raw` format takes everything after
//! `=` as it is.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{LoadError, Location};
use crate::interpolate::{SubstError, substitute};

/// Variables in file order; `None` for a name without a value that the environment lacks.
pub(crate) type Entries = Vec<(String, Option<String>)>;

/// Parses an env file into `(key, value)` pairs in file order.
pub(crate) fn parse(path: &Path, text: &str, env: &BTreeMap<String, String>, raw: bool) -> Result<Entries, LoadError> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let mut defined: BTreeMap<String, String> = BTreeMap::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let location = |column: usize| Location {
            file: path.to_path_buf(),
            line: u32::try_from(index + 1).unwrap_or(u32::MAX),
            column: u32::try_from(column + 1).unwrap_or(u32::MAX),
        };
        let indent = line.len() - line.trim_start().len();
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let content = content.strip_prefix("export ").map(str::trim_start).unwrap_or(content);
        let (key, value) = match content.split_once('=') {
            Some((key, value)) => (key.trim_end(), Some(value)),
            None => (content.trim_end(), None),
        };
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c == '\'' || c == '"') {
            return Err(LoadError::Syntax {
                location: location(indent),
                message: format!("invalid env file line {line:?}: expected KEY=VALUE"),
            });
        }
        let Some(value) = value else {
            out.push((key.to_owned(), env.get(key).cloned()));
            continue;
        };
        let value_column = line.len() - value.len();
        let value = if raw {
            value.to_owned()
        } else {
            let trimmed = value.trim_start();
            let column = line.len() - trimmed.len();
            let (text, interpolate) = if let Some(body) = trimmed.strip_prefix('\'') {
                let Some(end) = body.find('\'') else {
                    return Err(LoadError::Syntax {
                        location: location(column),
                        message: "unclosed single quote".to_owned(),
                    });
                };
                (body[..end].to_owned(), false)
            } else if let Some(body) = trimmed.strip_prefix('"') {
                (
                    double_quoted(body, &mut lines).ok_or_else(|| LoadError::Syntax {
                        location: location(column),
                        message: "unclosed double quote".to_owned(),
                    })?,
                    true,
                )
            } else {
                let end = trimmed.find(" #").or_else(|| trimmed.find("\t#")).unwrap_or(trimmed.len());
                (trimmed[..end].trim_end().to_owned(), true)
            };
            if interpolate && text.contains('$') {
                let mut lookup = defined.clone();
                lookup.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
                substitute(&text, &lookup, &mut Vec::new()).map_err(|e| LoadError::Interpolation {
                    location: location(value_column),
                    message: match e {
                        SubstError::Invalid => format!(
                            "invalid interpolation format in {key}: {text:?}; you may need to escape any $ with another $"
                        ),
                        SubstError::Required { name, message } => {
                            format!("required variable {name} is missing a value: {message}")
                        }
                    },
                })?
            } else {
                text
            }
        };
        defined.insert(key.to_owned(), value.clone());
        out.push((key.to_owned(), Some(value)));
    }
    Ok(out)
}

/// The content of a double-quoted value, escapes applied; may continue on the next lines.
fn double_quoted<'a>(first: &'a str, lines: &mut impl Iterator<Item = (usize, &'a str)>) -> Option<String> {
    let mut out = String::new();
    let mut current = first;
    loop {
        let mut chars = current.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(out),
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some('r') => out.push('\r'),
                    Some(next @ ('"' | '\\')) => out.push(next),
                    Some(next) => {
                        out.push('\\');
                        out.push(next);
                    }
                    None => out.push('\\'),
                },
                c => out.push(c),
            }
        }
        out.push('\n');
        current = lines.next()?.1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let env: BTreeMap<String, String> = [("HOME".to_owned(), "/root".to_owned())].into_iter().collect();
        let text = "# comment\n\nA=1\nexport B = two words \nC='single $HOME # kept'\nD=\"line\\nnext $HOME\"\nE=x # comment\nHOME\nMISSING\nF=${A}-${HOME}\nG=\nH=\"multi\nline\"\n";
        let got = parse(Path::new(".env"), text, &env, false).map_err(|e| e.to_string());
        let want: Vec<(String, Option<String>)> = [
            ("A", Some("1")),
            ("B", Some("two words")),
            ("C", Some("single $HOME # kept")),
            ("D", Some("line\nnext /root")),
            ("E", Some("x")),
            ("HOME", Some("/root")),
            ("MISSING", None),
            ("F", Some("1-/root")),
            ("G", Some("")),
            ("H", Some("multi\nline")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
        .collect();
        assert_eq!(got, Ok(want));
    }

    #[test]
    fn raw_takes_values_as_written() {
        let got = parse(Path::new("e"), "A='q' # $x\n", &BTreeMap::new(), true).map_err(|e| e.to_string());
        assert_eq!(got, Ok(vec![("A".to_owned(), Some("'q' # $x".to_owned()))]));
    }

    #[test]
    fn errors_are_located() {
        let cases = [
            ("A=1\nBAD KEY=2\n", "e:2:1: invalid env file line \"BAD KEY=2\": expected KEY=VALUE"),
            ("A='open\n", "e:1:3: unclosed single quote"),
            ("  A=\"open\n", "e:1:5: unclosed double quote"),
            ("A=$1\n", "e:1:3: invalid interpolation format in A: \"$1\"; you may need to escape any $ with another $"),
            ("A=${X:?set X}\n", "e:1:3: required variable X is missing a value: set X"),
        ];
        for (text, want) in cases {
            let got = parse(Path::new("e"), text, &BTreeMap::new(), false).map(|_| ()).map_err(|e| e.to_string());
            assert_eq!(got, Err(want.to_owned()), "{text:?}");
        }
    }
}

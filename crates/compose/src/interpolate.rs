//! Variable substitution: `${VAR}`, `$VAR`, `${VAR:-default}`, `${VAR-default}`,
//! `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}` and `$$`, as docker compose does.
//!
//! Values are substituted, keys are not. Defaults and alternatives may themselves hold
//! substitutions (`${A:-${B}}`). A `$` followed by anything else is an error that says to
//! write `$$`.

use std::collections::BTreeMap;

use crate::error::{LoadError, Location};
use crate::yaml::{Node, Style, Yaml};

/// What a substitution needs: the variables, and where to note variables used but not set.
pub(crate) struct Interpolator<'a> {
    pub(crate) env: &'a BTreeMap<String, String>,
    /// Variables used without a default while unset, with the first place each was used.
    pub(crate) unset: BTreeMap<String, Location>,
}

impl Interpolator<'_> {
    /// Substitutes every scalar value of the tree.
    pub(crate) fn tree(&mut self, node: &mut Node, path: &mut Vec<String>) -> Result<(), LoadError> {
        let mark = node.mark.clone();
        match &mut node.value {
            Yaml::Scalar(text, style) => {
                if text.contains('$') {
                    let mut unset = Vec::new();
                    let out = substitute(text, self.env, &mut unset).map_err(|e| LoadError::Interpolation {
                        location: mark.location(),
                        message: match e {
                            SubstError::Invalid => format!(
                                "invalid interpolation format for {}: {text:?}; you may need to escape any $ with another $",
                                dotted(path)
                            ),
                            SubstError::Required { name, message } => {
                                format!("required variable {name} is missing a value: {message}")
                            }
                        },
                    })?;
                    for name in unset {
                        self.unset.entry(name).or_insert_with(|| mark.location());
                    }
                    // `A: ${UNSET}` is an empty string, as in docker compose, not a null.
                    if out.is_empty() {
                        *style = Style::Quoted;
                    }
                    *text = out;
                }
                Ok(())
            }
            Yaml::Seq(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    path.push(format!("[{i}]"));
                    let result = self.tree(item, path);
                    path.pop();
                    result?;
                }
                Ok(())
            }
            Yaml::Map(pairs) => {
                for (key, value) in pairs.iter_mut() {
                    path.push(key.text.clone());
                    let result = self.tree(value, path);
                    path.pop();
                    result?;
                }
                Ok(())
            }
        }
    }
}

/// `services`, `web`, `command`, `[2]` as `services.web.command[2]`.
fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if !out.is_empty() && !part.starts_with('[') {
            out.push('.');
        }
        out.push_str(part);
    }
    out
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SubstError {
    /// Malformed `$` expression.
    Invalid,
    /// `${VAR?message}` or `${VAR:?message}` with VAR unset (or empty).
    Required { name: String, message: String },
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Substitutes variables in `text`. Names of variables used without a default while unset are
/// pushed onto `unset`.
pub(crate) fn substitute(
    text: &str,
    env: &BTreeMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<String, SubstError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let mut chars = after.chars();
        match chars.next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('{') => {
                let body_and_rest = &after[1..];
                let end = closing_brace(body_and_rest).ok_or(SubstError::Invalid)?;
                out.push_str(&braced(&body_and_rest[..end], env, unset)?);
                rest = &body_and_rest[end + 1..];
            }
            Some(c) if is_name_start(c) => {
                let len = after.find(|c: char| !is_name_char(c)).unwrap_or(after.len());
                let name = &after[..len];
                match env.get(name) {
                    Some(value) => out.push_str(value),
                    None => unset.push(name.to_owned()),
                }
                rest = &after[len..];
            }
            _ => return Err(SubstError::Invalid),
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Index of the `}` closing a `${`, counting nested `${…}`.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The inside of `${…}`.
fn braced(body: &str, env: &BTreeMap<String, String>, unset: &mut Vec<String>) -> Result<String, SubstError> {
    let name_len = body.find(|c: char| !is_name_char(c)).unwrap_or(body.len());
    let name = &body[..name_len];
    if !name.chars().next().is_some_and(is_name_start) {
        return Err(SubstError::Invalid);
    }
    let value = env.get(name);
    let operator = &body[name_len..];
    if operator.is_empty() {
        return Ok(match value {
            Some(v) => v.clone(),
            None => {
                unset.push(name.to_owned());
                String::new()
            }
        });
    }
    let (colon, operator) = match operator.strip_prefix(':') {
        Some(rest) => (true, rest),
        None => (false, operator),
    };
    let mut chars = operator.chars();
    let op = chars.next().ok_or(SubstError::Invalid)?;
    let word = chars.as_str();
    // With a colon, an empty value counts as unset.
    let set = value.filter(|v| !colon || !v.is_empty());
    match op {
        '-' => match set {
            Some(v) => Ok(v.clone()),
            None => substitute(word, env, unset),
        },
        '+' => match set {
            Some(_) => substitute(word, env, unset),
            None => Ok(String::new()),
        },
        '?' => match set {
            Some(v) => Ok(v.clone()),
            None => {
                let message = substitute(word, env, unset)?;
                Err(SubstError::Required { name: name.to_owned(), message })
            }
        },
        _ => Err(SubstError::Invalid),
    }
}

#[cfg(test)]
mod tests;

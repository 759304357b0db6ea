//! `--format` as docker users write it: a Go-template-like line per object
//! (`{{.Name}}: {{.Replicas}}`), `table …` for aligned columns under headers
//! (`table {{.ID}}\t{{.Name}}`), or `json`. Only what docker's list formats use is understood:
//! placeholders (`{{.Field}}`, `{{.}}`), the functions `json`, `upper`, `lower`, `title`,
//! `truncate`, and the `\t`/`\n` escapes; anything else is an error that says what is valid.
//! Values come in as the cells of a list, so the engine knows nothing of nodes or services.

use std::fmt::Write as _;

/// A placeholder a list offers: `{{.Name}}`, shown under `NAME` in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Column {
    pub(crate) name: &'static str,
    pub(crate) header: &'static str,
}

/// Shorthand for the column tables of each list.
pub(crate) const fn column(name: &'static str, header: &'static str) -> Column {
    Column { name, header }
}

/// What `--format` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Output {
    /// No `--format`, or `table`: the command's usual table.
    Default,
    /// `json`: the command's JSON.
    Json,
    /// `table TEMPLATE`: the template's cells (split at tabs) aligned under headers.
    Table(Template),
    /// `TEMPLATE`: one line per object.
    Lines(Template),
}

impl Output {
    /// Parses `--format` for a list whose objects have `columns`.
    pub(crate) fn parse(format: Option<&str>, columns: &[Column]) -> Result<Self, String> {
        let Some(format) = format else { return Ok(Self::Default) };
        match format.trim() {
            "" | "table" => Ok(Self::Default),
            "json" => Ok(Self::Json),
            text => match text.strip_prefix("table ") {
                Some(template) => Ok(Self::Table(Template::parse(template, columns)?)),
                None => Ok(Self::Lines(Template::parse(format, columns)?)),
            },
        }
    }
}

/// A function applied to a placeholder's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    Plain,
    Json,
    Upper,
    Lower,
    Title,
    Truncate(usize),
}

const FUNCTIONS: &str = "json, upper, lower, title, truncate";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// A column's value (its index), or the whole object (`None`: `{{.}}`).
    Value {
        column: Option<usize>,
        function: Function,
    },
}

/// A parsed template: text and placeholders, checked against the list's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
    columns: Vec<Column>,
}

impl Template {
    pub(crate) fn parse(text: &str, columns: &[Column]) -> Result<Self, String> {
        // As docker: the two characters `\t` in a shell argument mean a tab.
        let text = text.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| format!("--format {text:?}: a {{{{ is not closed by }}}}"))?;
            parts.push(action(&after[..end], columns)?);
            rest = &after[end + 2..];
        }
        if rest.contains("}}") {
            return Err(format!("--format {text:?}: a }}}} has no {{{{ before it"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts, columns: columns.to_vec() })
    }

    /// The template filled with one object's cells (in column order).
    pub(crate) fn fill(&self, cells: &[String]) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Value { column: None, function } => {
                    let object: serde_json::Map<String, serde_json::Value> = self
                        .columns
                        .iter()
                        .zip(cells)
                        .map(|(c, v)| (c.name.to_owned(), serde_json::Value::String(v.clone())))
                        .collect();
                    let json = serde_json::Value::Object(object).to_string();
                    out.push_str(&apply(*function, &json, true));
                }
                Part::Value { column: Some(i), function } => {
                    out.push_str(&apply(*function, cells.get(*i).map_or("", String::as_str), false));
                }
            }
        }
        out
    }

    /// The header line of a `table` format: each placeholder replaced by its column's header.
    fn header(&self) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.clone(),
                Part::Value { column: Some(i), .. } => self.columns[*i].header.to_owned(),
                Part::Value { column: None, .. } => String::new(),
            })
            .collect()
    }
}

/// Parses what is between `{{` and `}}`.
fn action(inside: &str, columns: &[Column]) -> Result<Part, String> {
    // Go's trim markers (`{{- .Name -}}`) are accepted; spacing is the template's own.
    let inside = inside.trim().trim_start_matches('-').trim_end_matches('-').trim();
    let words: Vec<&str> = inside.split_whitespace().collect();
    let placeholder = |word: &str| -> Result<Option<usize>, String> {
        if word == "." {
            return Ok(None);
        }
        let name = word.strip_prefix('.').unwrap_or(word);
        match columns.iter().position(|c| c.name == name) {
            Some(i) if word.starts_with('.') => Ok(Some(i)),
            _ => {
                let valid: Vec<String> = columns.iter().map(|c| format!("{{{{.{}}}}}", c.name)).collect();
                Err(format!(
                    "unknown placeholder {{{{{inside}}}}} in --format; valid placeholders: {}",
                    valid.join(", ")
                ))
            }
        }
    };
    let (function, argument) = match words.as_slice() {
        [word] if word.starts_with('.') => {
            return Ok(Part::Value { column: placeholder(word)?, function: Function::Plain });
        }
        ["json", arg] => (Function::Json, arg),
        ["upper", arg] => (Function::Upper, arg),
        ["lower", arg] => (Function::Lower, arg),
        ["title", arg] => (Function::Title, arg),
        ["truncate", arg, n] => {
            let n = n.parse().map_err(|_| {
                format!("{{{{{inside}}}}} in --format: truncate takes a length, e.g. {{{{truncate .ID 12}}}}")
            })?;
            (Function::Truncate(n), arg)
        }
        [] => return Err("an empty {{}} in --format: write a placeholder such as {{.Name}}".to_owned()),
        [name, ..] if !name.starts_with('.') => {
            return Err(format!("unknown function {name:?} in {{{{{inside}}}}} of --format; functions: {FUNCTIONS}"));
        }
        _ => return Err(format!("{{{{{inside}}}}} in --format: write one placeholder, e.g. {{{{.Name}}}}")),
    };
    let column = placeholder(argument)?;
    Ok(Part::Value { column, function })
}

fn apply(function: Function, value: &str, is_json: bool) -> String {
    match function {
        Function::Plain => value.to_owned(),
        Function::Json if is_json => value.to_owned(),
        Function::Json => serde_json::Value::String(value.to_owned()).to_string(),
        Function::Upper => value.to_uppercase(),
        Function::Lower => value.to_lowercase(),
        Function::Title => {
            let mut chars = value.chars();
            chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
        }
        Function::Truncate(n) => value.chars().take(n).collect(),
    }
}

/// Prints `rows` (each an object's cells in column order) as `output` asks; `Default` and
/// `Json` are the caller's to print and give nothing here.
pub(crate) fn render(output: &Output, rows: &[Vec<String>]) -> String {
    match output {
        Output::Default | Output::Json => String::new(),
        Output::Lines(template) => rows.iter().fold(String::new(), |mut out, row| {
            let _ = writeln!(out, "{}", template.fill(row));
            out
        }),
        Output::Table(template) => {
            let header = template.header();
            let header: Vec<&str> = header.split('\t').collect();
            let lines: Vec<Vec<String>> = rows
                .iter()
                .map(|row| {
                    let mut cells: Vec<String> = template.fill(row).split('\t').map(str::to_owned).collect();
                    cells.resize(header.len().max(cells.len()), String::new());
                    cells
                })
                .collect();
            let mut header: Vec<&str> = header;
            let widest = lines.iter().map(Vec::len).max().unwrap_or(0);
            header.resize(widest.max(header.len()), "");
            crate::render::table(&header, &lines)
        }
    }
}

#[cfg(test)]
mod tests;

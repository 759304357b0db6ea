//! YAML text to a tree of located nodes: anchors and aliases expanded, merge keys (`<<`) applied.
//!
//! The tree keeps every scalar as its source text and style, so typing happens later, after
//! interpolation, and each node remembers where it came from (file, line, column) for errors.
//! Aliases are copied (a budget stops "billion laughs" documents) and nesting is bounded, so no
//! input makes the loader exhaust memory or the stack.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use crate::error::{LoadError, Location};

/// Most nodes a file may expand to, aliases included.
const MAX_NODES: usize = 200_000;
/// Deepest nesting of collections.
const MAX_DEPTH: usize = 100;

/// Where a node starts in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) file: Arc<Path>,
    /// 1-based.
    pub(crate) line: u32,
    /// 1-based, in characters.
    pub(crate) column: u32,
}

impl Mark {
    pub(crate) fn location(&self) -> Location {
        Location { file: self.file.to_path_buf(), line: self.line, column: self.column }
    }
}

/// How a scalar was written: a plain scalar may be null, a boolean or a number; any quoted or
/// block scalar (or one tagged `!!str`) is a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    Plain,
    Quoted,
}

/// The tags the loader acts on: the Compose Specification's `!reset` and `!override` for
/// override files. Other tags are accepted and ignored (`!!str` turns a scalar into a string
/// while parsing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tag {
    Reset,
    Override,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Yaml {
    Scalar(String, Style),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A mapping key: always a scalar in compose files.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Key {
    pub(crate) text: String,
    pub(crate) mark: Mark,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub(crate) value: Yaml,
    pub(crate) mark: Mark,
    pub(crate) tag: Option<Tag>,
}

impl Node {
    pub(crate) fn scalar(text: impl Into<String>, style: Style, mark: &Mark) -> Node {
        Node { value: Yaml::Scalar(text.into(), style), mark: mark.clone(), tag: None }
    }

    pub(crate) fn string(text: impl Into<String>, mark: &Mark) -> Node {
        Node::scalar(text, Style::Quoted, mark)
    }

    pub(crate) fn plain(text: impl Into<String>, mark: &Mark) -> Node {
        Node::scalar(text, Style::Plain, mark)
    }

    pub(crate) fn null(mark: &Mark) -> Node {
        Node::plain("null", mark)
    }

    pub(crate) fn map(pairs: Vec<(Key, Node)>, mark: &Mark) -> Node {
        Node { value: Yaml::Map(pairs), mark: mark.clone(), tag: None }
    }

    pub(crate) fn seq(items: Vec<Node>, mark: &Mark) -> Node {
        Node { value: Yaml::Seq(items), mark: mark.clone(), tag: None }
    }

    /// Whether this is a plain `null`, `~` or empty scalar.
    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.value, Yaml::Scalar(text, Style::Plain) if is_null_text(text))
    }

    pub(crate) fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Yaml::Map(pairs) => Some(pairs),
            _ => None,
        }
    }

    pub(crate) fn as_seq(&self) -> Option<&[Node]> {
        match &self.value {
            Yaml::Seq(items) => Some(items),
            _ => None,
        }
    }

    /// The text of a non-null scalar.
    pub(crate) fn as_scalar(&self) -> Option<&str> {
        match &self.value {
            Yaml::Scalar(text, _) if !self.is_null() => Some(text),
            _ => None,
        }
    }

    /// The value under `key`, if this is a mapping that has it.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?.iter().find(|(k, _)| k.text == key).map(|(_, v)| v)
    }

    /// A short description for "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> String {
        match &self.value {
            Yaml::Scalar(_, _) if self.is_null() => "null".to_owned(),
            Yaml::Scalar(text, _) => format!("{text:?}"),
            Yaml::Seq(_) => "a list".to_owned(),
            Yaml::Map(_) => "a mapping".to_owned(),
        }
    }
}

pub(crate) fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// A collection being built.
enum Frame {
    Seq {
        items: Vec<Node>,
        mark: Mark,
        anchor: usize,
        tag: Option<Tag>,
    },
    Map {
        pairs: Vec<(Key, Node)>,
        key: Option<Key>,
        merges: Vec<(usize, Node)>,
        mark: Mark,
        anchor: usize,
        tag: Option<Tag>,
    },
}

/// Parses one file. The document must be a single mapping.
pub(crate) fn parse(file: &Arc<Path>, text: &str) -> Result<Node, LoadError> {
    let mut builder = Builder { file: file.clone(), anchors: HashMap::new(), nodes: 0, stack: Vec::new(), root: None };
    let mut documents = 0;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| LoadError::Syntax {
            location: Location {
                file: file.to_path_buf(),
                line: to_u32(e.marker().line()),
                column: to_u32(e.marker().col() + 1),
            },
            message: e.info().to_owned(),
        })?;
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(builder.error(
                        &span,
                        "a compose file holds one YAML document; split the others into files of their own",
                    ));
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                let mut style = if style == ScalarStyle::Plain { Style::Plain } else { Style::Quoted };
                let mut node_tag = None;
                if let Some(tag) = tag {
                    if tag.is_yaml_core_schema() && tag.suffix == "str" {
                        style = Style::Quoted;
                    }
                    node_tag = builder.tag(&tag.handle, &tag.suffix);
                }
                let mark = builder.mark(&span);
                let node = Node { value: Yaml::Scalar(value.into_owned(), style), mark, tag: node_tag };
                builder.push(node, anchor, &span)?;
            }
            Event::Alias(id) => {
                let Some((node, size)) = builder.anchors.get(&id) else {
                    return Err(builder.error(&span, "alias to an anchor that is not defined before it"));
                };
                builder.nodes += size;
                if builder.nodes > MAX_NODES {
                    return Err(builder.error(&span, "aliases expand to too many nodes (over 200000)"));
                }
                let mut node = node.clone();
                // Errors inside the copy point at the anchor; a mapping key needs the alias's place.
                if matches!(node.value, Yaml::Scalar(..)) {
                    node.mark = builder.mark(&span);
                }
                builder.push(node, 0, &span)?;
            }
            Event::SequenceStart(anchor, tag) => {
                let tag = tag.and_then(|t| builder.tag(&t.handle, &t.suffix));
                builder.open(Frame::Seq { items: Vec::new(), mark: builder.mark(&span), anchor, tag }, &span)?;
            }
            Event::MappingStart(anchor, tag) => {
                let tag = tag.and_then(|t| builder.tag(&t.handle, &t.suffix));
                let frame = Frame::Map {
                    pairs: Vec::new(),
                    key: None,
                    merges: Vec::new(),
                    mark: builder.mark(&span),
                    anchor,
                    tag,
                };
                builder.open(frame, &span)?;
            }
            Event::SequenceEnd | Event::MappingEnd => builder.close(&span)?,
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => {}
        }
    }
    let start = Mark { file: file.clone(), line: 1, column: 1 };
    match builder.root {
        Some(root) if root.as_map().is_some() => Ok(root),
        Some(root) if root.is_null() => Err(LoadError::Invalid {
            location: start.location(),
            path: "(top level)".to_owned(),
            message: "the file is empty: a compose file is a mapping with at least `services:`".to_owned(),
        }),
        Some(root) => Err(LoadError::Invalid {
            location: root.mark.location(),
            path: "(top level)".to_owned(),
            message: format!("a compose file must be a mapping, found {}", root.describe()),
        }),
        None => Err(LoadError::Invalid {
            location: start.location(),
            path: "(top level)".to_owned(),
            message: "the file is empty: a compose file is a mapping with at least `services:`".to_owned(),
        }),
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

struct Builder {
    file: Arc<Path>,
    /// Anchor id to its node and how many nodes it holds.
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
    stack: Vec<Frame>,
    root: Option<Node>,
}

impl Builder {
    fn mark(&self, span: &Span) -> Mark {
        Mark { file: self.file.clone(), line: to_u32(span.start.line()), column: to_u32(span.start.col() + 1) }
    }

    fn error(&self, span: &Span, message: &str) -> LoadError {
        LoadError::Syntax { location: self.mark(span).location(), message: message.to_owned() }
    }

    fn tag(&self, handle: &str, suffix: &str) -> Option<Tag> {
        match (handle, suffix) {
            ("!", "reset") => Some(Tag::Reset),
            ("!", "override") => Some(Tag::Override),
            _ => None,
        }
    }

    fn open(&mut self, frame: Frame, span: &Span) -> Result<(), LoadError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.error(span, "collections nested too deeply (over 100 levels)"));
        }
        if let Some(Frame::Map { key: None, .. }) = self.stack.last() {
            return Err(self.error(span, "a mapping key must be a scalar (a name), not a list or mapping"));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn close(&mut self, span: &Span) -> Result<(), LoadError> {
        let Some(frame) = self.stack.pop() else {
            return Err(self.error(span, "unbalanced collection end"));
        };
        let (node, anchor) = match frame {
            Frame::Seq { items, mark, anchor, tag } => (Node { value: Yaml::Seq(items), mark, tag }, anchor),
            Frame::Map { pairs, merges, mark, anchor, tag, .. } => {
                let pairs = apply_merges(pairs, merges)?;
                (Node { value: Yaml::Map(pairs), mark, tag }, anchor)
            }
        };
        self.push(node, anchor, span)
    }

    /// Adds a finished node to the collection being built (or makes it the root).
    fn push(&mut self, node: Node, anchor: usize, span: &Span) -> Result<(), LoadError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(self.error(span, "the document has too many nodes (over 200000)"));
        }
        if anchor != 0 {
            let size = count(&node);
            self.anchors.insert(anchor, (node.clone(), size));
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map { pairs, key, merges, .. }) => match key.take() {
                None => {
                    let Yaml::Scalar(text, style) = node.value else {
                        return Err(self.error(span, "a mapping key must be a scalar (a name), not a list or mapping"));
                    };
                    if style == Style::Plain && text == "<<" {
                        *key = Some(Key { text: MERGE_KEY.to_owned(), mark: node.mark });
                        return Ok(());
                    }
                    if let Some((first, _)) = pairs.iter().find(|(k, _)| k.text == text) {
                        let line = first.mark.line;
                        let location = node.mark.location();
                        return Err(LoadError::Syntax {
                            location,
                            message: format!("duplicate key `{text}` (first defined on line {line})"),
                        });
                    }
                    *key = Some(Key { text, mark: node.mark });
                    Ok(())
                }
                Some(k) if k.text == MERGE_KEY => {
                    merges.push((pairs.len(), node));
                    Ok(())
                }
                Some(k) => {
                    pairs.push((k, node));
                    Ok(())
                }
            },
        }
    }
}

/// Stands for a `<<` key while its mapping is open; no real key can contain a NUL.
const MERGE_KEY: &str = "\0<<";

/// Applies YAML merge keys: each `<<` value (a mapping or a list of mappings) adds the keys the
/// mapping does not set itself; among several sources the first wins.
fn apply_merges(mut pairs: Vec<(Key, Node)>, merges: Vec<(usize, Node)>) -> Result<Vec<(Key, Node)>, LoadError> {
    let mut offset = 0;
    for (position, source) in merges {
        let sources: Vec<&Node> = match &source.value {
            Yaml::Map(_) => vec![&source],
            Yaml::Seq(items) => items.iter().collect(),
            Yaml::Scalar(..) => {
                return Err(LoadError::Syntax {
                    location: source.mark.location(),
                    message: format!(
                        "a merge key (`<<`) takes a mapping or a list of mappings, found {}",
                        source.describe()
                    ),
                });
            }
        };
        let mut added = Vec::new();
        for map in sources {
            let Some(entries) = map.as_map() else {
                return Err(LoadError::Syntax {
                    location: map.mark.location(),
                    message: format!(
                        "a merge key (`<<`) takes a mapping or a list of mappings, found {}",
                        map.describe()
                    ),
                });
            };
            for (key, value) in entries {
                let taken = pairs.iter().any(|(k, _)| k.text == key.text)
                    || added.iter().any(|(k, _): &(Key, Node)| k.text == key.text);
                if !taken {
                    added.push((key.clone(), value.clone()));
                }
            }
        }
        let at = (position + offset).min(pairs.len());
        offset += added.len();
        pairs.splice(at..at, added);
    }
    Ok(pairs)
}

/// How many nodes a tree holds.
fn count(node: &Node) -> usize {
    match &node.value {
        Yaml::Scalar(..) => 1,
        Yaml::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        Yaml::Map(pairs) => 1 + pairs.iter().map(|(_, v)| 1 + count(v)).sum::<usize>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Node, LoadError> {
        parse(&Arc::from(Path::new("t.yml")), text)
    }

    fn keys(node: &Node) -> Vec<&str> {
        node.as_map().unwrap_or_default().iter().map(|(k, _)| k.text.as_str()).collect()
    }

    #[test]
    fn marks_are_one_based() {
        let root = load("services:\n  web:\n    image: nginx\n").expect("parses");
        let image = root.get("services").and_then(|s| s.get("web")).and_then(|w| w.get("image")).expect("image");
        assert_eq!((image.mark.line, image.mark.column), (3, 12));
    }

    #[test]
    fn merge_keys_keep_explicit_values_and_first_source_wins() {
        let text = "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  x: 0\n";
        let root = load(text).expect("parses");
        let c = root.get("c").expect("c");
        assert_eq!(keys(c), ["y", "z", "x"]);
        assert_eq!(c.get("x").and_then(Node::as_scalar), Some("0"));
        assert_eq!(c.get("y").and_then(Node::as_scalar), Some("1"));
    }

    #[test]
    fn errors_are_located() {
        let cases = [
            ("a: 1\na: 2\n", "t.yml:2:1: duplicate key `a` (first defined on line 1)"),
            ("a: *nope\n", "t.yml:1:4: while parsing node, found unknown anchor"),
            ("a: [1, 2\n", "t.yml:2:1: while parsing a flow sequence, expected ',' or ']'"),
            ("- 1\n", "t.yml:1:1: (top level): a compose file must be a mapping, found a list"),
            ("", "t.yml:1:1: (top level): the file is empty: a compose file is a mapping with at least `services:`"),
            (
                "a: 1\n---\nb: 2\n",
                "t.yml:2:1: a compose file holds one YAML document; split the others into files of their own",
            ),
            ("? [a]\n: 1\n", "t.yml:1:3: a mapping key must be a scalar (a name), not a list or mapping"),
            ("a:\n  <<: 1\n", "t.yml:2:7: a merge key (`<<`) takes a mapping or a list of mappings, found \"1\""),
        ];
        for (text, want) in cases {
            let got = load(text).map(|_| ()).map_err(|e| e.to_string());
            assert_eq!(got, Err(want.to_owned()), "{text:?}");
        }
    }

    #[test]
    fn alias_bombs_stop() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            text.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
        }
        let err = load(&text).map(|_| ()).map_err(|e| e.to_string());
        assert!(err.as_ref().is_err_and(|e| e.contains("too many nodes")), "{err:?}");
    }

    #[test]
    fn deep_nesting_stops() {
        let text = format!("a: {}{}\n", "[".repeat(500), "]".repeat(500));
        let err = load(&text).map(|_| ()).map_err(|e| e.to_string());
        assert!(
            err.as_ref().is_err_and(|e| e.contains("nested too deeply") || e.contains("recursion limit")),
            "{err:?}"
        );
        let text = format!("a: {}{}\n", "[".repeat(101), "]".repeat(101));
        let err = load(&text).map(|_| ()).map_err(|e| e.to_string());
        assert!(
            err.as_ref().is_err_and(|e| e.contains("nested too deeply") || e.contains("recursion limit")),
            "{err:?}"
        );
    }
}

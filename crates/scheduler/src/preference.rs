//! Placement preferences (`spread=node.labels.dc`): parsing and label lookup.

use std::fmt;
use std::str::FromStr;

use crate::constraint::{ENGINE_LABELS, NODE_LABELS, strip_prefix_fold};
use crate::model::Node;

/// Why a placement preference string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreferenceError {
    /// Not of the form `spread=KEY`.
    #[error(
        "placement preference {preference:?} is not a spread: expected spread=node.labels.KEY or spread=engine.labels.KEY"
    )]
    NotSpread {
        /// The preference as given.
        preference: String,
    },
    /// The spread key is not a node or engine label.
    #[error(
        "spread key {key:?} in placement preference {preference:?} is not a label: expected node.labels.KEY or engine.labels.KEY"
    )]
    NotALabel {
        /// The preference as given.
        preference: String,
        /// The key after `spread=`.
        key: String,
    },
    /// The spread key has a prefix but no label name.
    #[error("spread key {key:?} in placement preference {preference:?} has no label name: expected {key}KEY")]
    EmptyLabel {
        /// The preference as given.
        preference: String,
        /// The key after `spread=`.
        key: String,
    },
}

/// Which label set a spread preference reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabelSource {
    /// Operator-set node labels (`node.labels.KEY`).
    Node,
    /// Engine labels reported by the node (`engine.labels.KEY`).
    Engine,
}

/// Spread a service's tasks evenly over the values of a node label.
///
/// Several preferences nest: tasks are spread over the first label's values, then within each
/// of those over the second's, and so on. Nodes without the label form a group of their own.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlacementPreference {
    source: LabelSource,
    name: String,
}

impl PlacementPreference {
    /// Spread over the values of node label `name`.
    pub fn spread_node_label(name: impl Into<String>) -> Self {
        PlacementPreference { source: LabelSource::Node, name: name.into() }
    }

    /// Spread over the values of engine label `name`.
    pub fn spread_engine_label(name: impl Into<String>) -> Self {
        PlacementPreference { source: LabelSource::Engine, name: name.into() }
    }

    /// Parses `spread=node.labels.KEY` or `spread=engine.labels.KEY`.
    pub fn parse(text: &str) -> Result<PlacementPreference, PreferenceError> {
        let preference = || text.to_owned();
        let Some((kind, key)) = text.split_once('=') else {
            return Err(PreferenceError::NotSpread { preference: preference() });
        };
        if !kind.trim().eq_ignore_ascii_case("spread") {
            return Err(PreferenceError::NotSpread { preference: preference() });
        }
        let key = key.trim();
        for (prefix, source) in [(NODE_LABELS, LabelSource::Node), (ENGINE_LABELS, LabelSource::Engine)] {
            if let Some(name) = strip_prefix_fold(key, prefix) {
                if name.is_empty() {
                    return Err(PreferenceError::EmptyLabel { preference: preference(), key: key.to_owned() });
                }
                if name.contains(|c: char| c.is_whitespace() || c == '=') {
                    break;
                }
                return Ok(PlacementPreference { source, name: name.to_owned() });
            }
        }
        Err(PreferenceError::NotALabel { preference: preference(), key: key.to_owned() })
    }

    /// Which label set the preference reads.
    pub fn source(&self) -> LabelSource {
        self.source
    }

    /// The label name.
    pub fn label(&self) -> &str {
        &self.name
    }

    /// The node's value of the label, if it has one.
    pub fn value_of<'n>(&self, node: &'n Node) -> Option<&'n str> {
        let labels = match self.source {
            LabelSource::Node => &node.labels,
            LabelSource::Engine => &node.engine_labels,
        };
        labels.get(&self.name).map(String::as_str)
    }
}

impl FromStr for PlacementPreference {
    type Err = PreferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PlacementPreference::parse(s)
    }
}

impl fmt::Display for PlacementPreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.source {
            LabelSource::Node => NODE_LABELS,
            LabelSource::Engine => ENGINE_LABELS,
        };
        write!(f, "spread={prefix}{}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, &str)] = &[
            ("spread=node.labels.dc", "ok: spread=node.labels.dc"),
            (" SPREAD = Engine.Labels.rack ", "ok: spread=engine.labels.rack"),
            (
                "node.labels.dc",
                r#"placement preference "node.labels.dc" is not a spread: expected spread=node.labels.KEY or spread=engine.labels.KEY"#,
            ),
            (
                "pack=node.labels.dc",
                r#"placement preference "pack=node.labels.dc" is not a spread: expected spread=node.labels.KEY or spread=engine.labels.KEY"#,
            ),
            (
                "spread=node.hostname",
                r#"spread key "node.hostname" in placement preference "spread=node.hostname" is not a label: expected node.labels.KEY or engine.labels.KEY"#,
            ),
            (
                "spread=node.labels.",
                r#"spread key "node.labels." in placement preference "spread=node.labels." has no label name: expected node.labels.KEY"#,
            ),
        ];
        for (input, expected) in cases {
            let got = match PlacementPreference::parse(input) {
                Ok(p) => format!("ok: {p}"),
                Err(e) => e.to_string(),
            };
            assert_eq!(&got, expected, "input {input:?}");
        }
    }

    #[test]
    fn reads_the_right_label_set() {
        let mut node = Node::new("n1");
        node.labels.insert("dc".into(), "east".into());
        node.engine_labels.insert("dc".into(), "west".into());
        assert_eq!(PlacementPreference::spread_node_label("dc").value_of(&node), Some("east"));
        assert_eq!(PlacementPreference::spread_engine_label("dc").value_of(&node), Some("west"));
        assert_eq!(PlacementPreference::spread_node_label("rack").value_of(&node), None);
    }
}

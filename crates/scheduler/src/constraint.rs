//! Placement constraints (`node.labels.zone==a`): parsing with precise errors, and matching.
//!
//! The parser is also what the manager and CLI use to validate user input, so every error
//! names the constraint, the offending part and what was expected.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::model::{Node, Role};

/// The keys a constraint may test, for error messages.
const EXPECTED_KEYS: &str = "node.id, node.hostname, node.ip, node.role, node.platform.os, \
                             node.platform.arch, node.labels.KEY or engine.labels.KEY";

pub(crate) const NODE_LABELS: &str = "node.labels.";
pub(crate) const ENGINE_LABELS: &str = "engine.labels.";

/// Why a constraint string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// Neither `==` nor `!=` appears.
    #[error("constraint {constraint:?} has no operator: expected KEY==VALUE or KEY!=VALUE")]
    NoOperator {
        /// The constraint as given.
        constraint: String,
    },
    /// A single `=` where `==` was meant.
    #[error("constraint {constraint:?} uses \"=\": expected \"==\" or \"!=\"")]
    SingleEquals {
        /// The constraint as given.
        constraint: String,
    },
    /// More than one operator.
    #[error("constraint {constraint:?} has more than one operator: expected one \"==\" or \"!=\"")]
    ExtraOperator {
        /// The constraint as given.
        constraint: String,
    },
    /// Nothing before the operator.
    #[error("constraint {constraint:?} has no key before the operator: expected KEY==VALUE or KEY!=VALUE")]
    EmptyKey {
        /// The constraint as given.
        constraint: String,
    },
    /// Nothing after the operator.
    #[error("constraint {constraint:?} has no value after the operator: expected KEY==VALUE or KEY!=VALUE")]
    EmptyValue {
        /// The constraint as given.
        constraint: String,
    },
    /// The key contains whitespace or `=`/`!`.
    #[error("key {key:?} in constraint {constraint:?} contains {found:?}: expected no whitespace, '=' or '!'")]
    InvalidKey {
        /// The constraint as given.
        constraint: String,
        /// The key.
        key: String,
        /// The first character not allowed.
        found: char,
    },
    /// The key is not one the scheduler knows.
    #[error("unknown key {key:?} in constraint {constraint:?}: expected {EXPECTED_KEYS}")]
    UnknownKey {
        /// The constraint as given.
        constraint: String,
        /// The key.
        key: String,
    },
    /// `node.labels.` or `engine.labels.` without a label name.
    #[error("key {key:?} in constraint {constraint:?} has no label name: expected {prefix}KEY")]
    EmptyLabel {
        /// The constraint as given.
        constraint: String,
        /// The key (the bare prefix).
        key: String,
        /// The prefix the label name goes after (`node.labels.` or `engine.labels.`).
        prefix: &'static str,
    },
    /// A `node.ip` value that is neither an address nor a CIDR.
    #[error(
        "value {value:?} in constraint {constraint:?} is not an IP address or CIDR: expected such as 192.0.2.7 or 192.0.2.0/24"
    )]
    InvalidIp {
        /// The constraint as given.
        constraint: String,
        /// The value.
        value: String,
    },
    /// A `node.role` value other than `manager` or `worker`.
    #[error("value {value:?} in constraint {constraint:?} is not a node role: expected manager or worker")]
    InvalidRole {
        /// The constraint as given.
        constraint: String,
        /// The value.
        value: String,
    },
}

/// `==` or `!=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// The node's value equals the constraint's (ignoring case).
    Eq,
    /// The node's value differs from the constraint's (a missing label differs from everything).
    Ne,
}

impl Operator {
    fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "==",
            Operator::Ne => "!=",
        }
    }
}

/// What a constraint tests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConstraintKey {
    /// `node.id`
    NodeId,
    /// `node.hostname`
    NodeHostname,
    /// `node.ip`: an address or a CIDR that one of the node's addresses falls in.
    NodeIp,
    /// `node.role`: `manager` or `worker`.
    NodeRole,
    /// `node.platform.os`
    NodePlatformOs,
    /// `node.platform.arch`
    NodePlatformArch,
    /// `node.labels.NAME`
    NodeLabel(String),
    /// `engine.labels.NAME`
    EngineLabel(String),
}

impl fmt::Display for ConstraintKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConstraintKey::NodeId => f.write_str("node.id"),
            ConstraintKey::NodeHostname => f.write_str("node.hostname"),
            ConstraintKey::NodeIp => f.write_str("node.ip"),
            ConstraintKey::NodeRole => f.write_str("node.role"),
            ConstraintKey::NodePlatformOs => f.write_str("node.platform.os"),
            ConstraintKey::NodePlatformArch => f.write_str("node.platform.arch"),
            ConstraintKey::NodeLabel(name) => write!(f, "{NODE_LABELS}{name}"),
            ConstraintKey::EngineLabel(name) => write!(f, "{ENGINE_LABELS}{name}"),
        }
    }
}

/// An address with a prefix length; a plain address is a full-length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    fn parse(s: &str) -> Option<IpNet> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => {
                let addr: IpAddr = addr.parse().ok()?;
                // Only plain decimal digits: `u8::from_str` would also take "+8".
                if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let prefix: u8 = prefix.parse().ok()?;
                (addr, prefix)
            }
            None => {
                let addr: IpAddr = s.parse().ok()?;
                (addr, if addr.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A parsed placement constraint: `KEY==VALUE` or `KEY!=VALUE`.
///
/// Values compare ignoring case. A task's constraints must all hold on a node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Constraint {
    key: ConstraintKey,
    op: Operator,
    value: String,
    ip: Option<IpNet>,
}

impl Constraint {
    /// Parses one constraint such as `node.labels.zone==a` or `node.role!=manager`.
    pub fn parse(text: &str) -> Result<Constraint, ConstraintError> {
        let constraint = || text.to_owned();
        let eq = text.find("==");
        let ne = text.find("!=");
        let (pos, op) = match (eq, ne) {
            (Some(e), Some(n)) if n < e => (n, Operator::Ne),
            (Some(e), _) => (e, Operator::Eq),
            (None, Some(n)) => (n, Operator::Ne),
            (None, None) if text.contains('=') => {
                return Err(ConstraintError::SingleEquals { constraint: constraint() });
            }
            (None, None) => {
                return Err(ConstraintError::NoOperator { constraint: constraint() });
            }
        };
        let key = text[..pos].trim();
        let value = text[pos + 2..].trim();
        if value.contains("==") || value.contains("!=") {
            return Err(ConstraintError::ExtraOperator { constraint: constraint() });
        }
        if key.is_empty() {
            return Err(ConstraintError::EmptyKey { constraint: constraint() });
        }
        if value.is_empty() {
            return Err(ConstraintError::EmptyValue { constraint: constraint() });
        }
        if let Some(found) = key.chars().find(|c| c.is_whitespace() || *c == '=' || *c == '!') {
            return Err(ConstraintError::InvalidKey { constraint: constraint(), key: key.to_owned(), found });
        }
        let key = parse_key(key).map_err(|kind| match kind {
            KeyError::Unknown => ConstraintError::UnknownKey { constraint: constraint(), key: key.to_owned() },
            KeyError::EmptyLabel(prefix) => {
                ConstraintError::EmptyLabel { constraint: constraint(), key: key.to_owned(), prefix }
            }
        })?;
        let mut ip = None;
        match key {
            ConstraintKey::NodeIp => match IpNet::parse(value) {
                Some(net) => ip = Some(net),
                None => {
                    return Err(ConstraintError::InvalidIp { constraint: constraint(), value: value.to_owned() });
                }
            },
            ConstraintKey::NodeRole => {
                let known = [Role::Manager, Role::Worker].iter().any(|r| r.as_str().eq_ignore_ascii_case(value));
                if !known {
                    return Err(ConstraintError::InvalidRole { constraint: constraint(), value: value.to_owned() });
                }
            }
            _ => {}
        }
        Ok(Constraint { key, op, value: value.to_owned(), ip })
    }

    /// What the constraint tests.
    pub fn key(&self) -> &ConstraintKey {
        &self.key
    }

    /// `==` or `!=`.
    pub fn operator(&self) -> Operator {
        self.op
    }

    /// The value, as written (trimmed).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether `node` satisfies the constraint.
    pub fn matches(&self, node: &Node) -> bool {
        let equal = match &self.key {
            ConstraintKey::NodeId => eq_fold(&node.id, &self.value),
            ConstraintKey::NodeHostname => eq_fold(&node.hostname, &self.value),
            ConstraintKey::NodeIp => match self.ip {
                Some(net) => node.addresses.iter().any(|&a| net.contains(a)),
                None => false,
            },
            ConstraintKey::NodeRole => eq_fold(node.role.as_str(), &self.value),
            ConstraintKey::NodePlatformOs => eq_fold(&node.platform.os, &self.value),
            ConstraintKey::NodePlatformArch => eq_fold(&node.platform.arch, &self.value),
            ConstraintKey::NodeLabel(name) => node.labels.get(name).is_some_and(|v| eq_fold(v, &self.value)),
            ConstraintKey::EngineLabel(name) => node.engine_labels.get(name).is_some_and(|v| eq_fold(v, &self.value)),
        };
        match self.op {
            Operator::Eq => equal,
            Operator::Ne => !equal,
        }
    }
}

impl FromStr for Constraint {
    type Err = ConstraintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Constraint::parse(s)
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.key, self.op.as_str(), self.value)
    }
}

/// Parses several constraints; the first bad one is the error.
pub fn parse_constraints<I>(texts: I) -> Result<Vec<Constraint>, ConstraintError>
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    texts.into_iter().map(|t| Constraint::parse(t.as_ref())).collect()
}

enum KeyError {
    Unknown,
    EmptyLabel(&'static str),
}

fn parse_key(key: &str) -> Result<ConstraintKey, KeyError> {
    let fixed = [
        ("node.id", ConstraintKey::NodeId),
        ("node.hostname", ConstraintKey::NodeHostname),
        ("node.ip", ConstraintKey::NodeIp),
        ("node.role", ConstraintKey::NodeRole),
        ("node.platform.os", ConstraintKey::NodePlatformOs),
        ("node.platform.arch", ConstraintKey::NodePlatformArch),
    ];
    for (name, k) in fixed {
        if key.eq_ignore_ascii_case(name) {
            return Ok(k);
        }
    }
    for (prefix, make) in [
        (NODE_LABELS, ConstraintKey::NodeLabel as fn(String) -> ConstraintKey),
        (ENGINE_LABELS, ConstraintKey::EngineLabel),
    ] {
        // `node.labels` without the dot is a missing label name, not an unknown key.
        if key.eq_ignore_ascii_case(&prefix[..prefix.len() - 1]) {
            return Err(KeyError::EmptyLabel(prefix));
        }
        if let Some(name) = strip_prefix_fold(key, prefix) {
            if name.is_empty() {
                return Err(KeyError::EmptyLabel(prefix));
            }
            return Ok(make(name.to_owned()));
        }
    }
    Err(KeyError::Unknown)
}

/// `s` without `prefix`, comparing the prefix ignoring ASCII case.
pub(crate) fn strip_prefix_fold<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Case-insensitive equality; Unicode-aware when either side is not ASCII.
pub(crate) fn eq_fold(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        a.chars().flat_map(char::to_lowercase).eq(b.chars().flat_map(char::to_lowercase))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table: constraint text in, error message (or `ok: DISPLAY`) out.
    #[test]
    fn parse_table() {
        let cases: &[(&str, &str)] = &[
            ("node.labels.zone==a", "ok: node.labels.zone==a"),
            ("  node.role != Manager ", "ok: node.role!=Manager"),
            ("NODE.HOSTNAME==web-1", "ok: node.hostname==web-1"),
            ("engine.labels.ssd==true", "ok: engine.labels.ssd==true"),
            ("node.ip==192.0.2.0/24", "ok: node.ip==192.0.2.0/24"),
            ("node.ip!=2001:db8::1", "ok: node.ip!=2001:db8::1"),
            ("node.labels.a!=b=c", "ok: node.labels.a!=b=c"),
            ("node.role", r#"constraint "node.role" has no operator: expected KEY==VALUE or KEY!=VALUE"#),
            ("node.role=manager", r#"constraint "node.role=manager" uses "=": expected "==" or "!=""#),
            (
                "node.role==manager==worker",
                r#"constraint "node.role==manager==worker" has more than one operator: expected one "==" or "!=""#,
            ),
            (
                "==manager",
                r#"constraint "==manager" has no key before the operator: expected KEY==VALUE or KEY!=VALUE"#,
            ),
            (
                "node.role== ",
                r#"constraint "node.role== " has no value after the operator: expected KEY==VALUE or KEY!=VALUE"#,
            ),
            (
                "node labels.a==b",
                r#"key "node labels.a" in constraint "node labels.a==b" contains ' ': expected no whitespace, '=' or '!'"#,
            ),
            (
                "node.rol==manager",
                r#"unknown key "node.rol" in constraint "node.rol==manager": expected node.id, node.hostname, node.ip, node.role, node.platform.os, node.platform.arch, node.labels.KEY or engine.labels.KEY"#,
            ),
            (
                "node.labels.==a",
                r#"key "node.labels." in constraint "node.labels.==a" has no label name: expected node.labels.KEY"#,
            ),
            (
                "engine.labels==a",
                r#"key "engine.labels" in constraint "engine.labels==a" has no label name: expected engine.labels.KEY"#,
            ),
            (
                "node.ip==192.0.2.0/33",
                r#"value "192.0.2.0/33" in constraint "node.ip==192.0.2.0/33" is not an IP address or CIDR: expected such as 192.0.2.7 or 192.0.2.0/24"#,
            ),
            (
                "node.ip==web-1",
                r#"value "web-1" in constraint "node.ip==web-1" is not an IP address or CIDR: expected such as 192.0.2.7 or 192.0.2.0/24"#,
            ),
            (
                "node.role==boss",
                r#"value "boss" in constraint "node.role==boss" is not a node role: expected manager or worker"#,
            ),
        ];
        for (input, expected) in cases {
            let got = match Constraint::parse(input) {
                Ok(c) => format!("ok: {c}"),
                Err(e) => e.to_string(),
            };
            assert_eq!(&got, expected, "input {input:?}");
        }
    }

    /// Table: constraint, node fixture, whether it matches.
    #[test]
    fn match_table() {
        let mut node = Node::new("n1");
        node.hostname = "Web-1".into();
        node.role = Role::Manager;
        node.platform = crate::Platform::new("linux", "amd64");
        node.labels.insert("zone".into(), "East".into());
        node.engine_labels.insert("ssd".into(), "true".into());
        node.addresses = vec!["192.0.2.7".parse().expect("ip"), "2001:db8::7".parse().expect("ip")];
        let cases: &[(&str, bool)] = &[
            ("node.id==N1", true),
            ("node.id!=n1", false),
            ("node.hostname==web-1", true),
            ("node.role==manager", true),
            ("node.role!=worker", true),
            ("node.platform.os==Linux", true),
            ("node.platform.arch==arm64", false),
            ("node.labels.zone==east", true),
            ("node.labels.zone!=east", false),
            ("node.labels.missing==x", false),
            ("node.labels.missing!=x", true),
            ("node.labels.Zone==east", false),
            ("engine.labels.ssd==TRUE", true),
            ("node.ip==192.0.2.7", true),
            ("node.ip==192.0.2.0/24", true),
            ("node.ip==192.0.3.0/24", false),
            ("node.ip!=192.0.3.0/24", true),
            ("node.ip==2001:db8::/32", true),
            ("node.ip==0.0.0.0/0", true),
        ];
        for (input, expected) in cases {
            let c = Constraint::parse(input).expect("valid constraint");
            assert_eq!(c.matches(&node), *expected, "constraint {input:?}");
        }
    }

    #[test]
    fn unicode_values_fold() {
        assert!(eq_fold("ÄBC", "äbc"));
        assert!(!eq_fold("äbc", "abc"));
    }

    #[test]
    fn parse_many_reports_first_error() {
        assert_eq!(parse_constraints(["node.role==worker", "node.labels.zone==a"]).expect("valid").len(), 2);
        let err = parse_constraints(["node.role==worker", "bogus"]).expect_err("invalid");
        assert!(matches!(err, ConstraintError::NoOperator { .. }));
    }
}

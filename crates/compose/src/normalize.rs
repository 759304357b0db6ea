//! Short syntax to long syntax, per file, before files are merged.
//!
//! Merging needs one shape per key: `environment: [A=1]` and `environment: {A: 1}` must merge by
//! key, `ports: ["80:80"]` and a long-form port must compare by their parts. So each file's tree
//! is rewritten here: list-form mappings become mappings, short ports, volumes, secrets and
//! configs become their long mappings (port ranges expanded), commands become word lists. The
//! rewrite is lenient about anything it does not recognise: the decoder reports wrong types.

use crate::error::LoadError;
use crate::units::split_shell_words;
use crate::yaml::{Key, Mark, Node, Style, Yaml};

/// Rewrites one file's tree in place.
pub(crate) fn file(root: &mut Node) -> Result<(), LoadError> {
    let Yaml::Map(pairs) = &mut root.value else { return Ok(()) };
    for (key, value) in pairs.iter_mut() {
        match key.text.as_str() {
            "services" => {
                if let Yaml::Map(services) = &mut value.value {
                    for (name, service) in services.iter_mut() {
                        self::service(&name.text, service)?;
                    }
                }
            }
            "networks" | "volumes" | "secrets" | "configs" => {
                if let Yaml::Map(entries) = &mut value.value {
                    for (_, entry) in entries.iter_mut() {
                        top_level_entry(entry);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn service(name: &str, node: &mut Node) -> Result<(), LoadError> {
    let Yaml::Map(pairs) = &mut node.value else { return Ok(()) };
    for (key, value) in pairs.iter_mut() {
        let path = format!("services.{name}.{}", key.text);
        match key.text.as_str() {
            "environment" => list_to_map(value, Missing::Null),
            "labels" | "sysctls" | "annotations" => list_to_map(value, Missing::Empty),
            "extra_hosts" => extra_hosts(value),
            "networks" => list_to_map(value, Missing::Null),
            "depends_on" => depends_on(value),
            "ports" => each_item(value, |item| ports(item, &path))?,
            "volumes" => each_item(value, |item| volume(item, &path).map(|v| vec![v]))?,
            "secrets" | "configs" => each_item(value, |item| Ok(vec![file_reference(item)]))?,
            "command" | "entrypoint" => command(value, &path)?,
            "env_file" => env_file(value),
            "dns" | "dns_search" | "dns_opt" | "tmpfs" | "cap_add" | "cap_drop" => scalar_to_list(value),
            "ulimits" => ulimits(value),
            "healthcheck" => {
                if let Some(test) = map_value_mut(value, "test")
                    && let Yaml::Scalar(text, _) = &test.value
                    && !test.is_null()
                {
                    let mark = test.mark.clone();
                    let items = vec![Node::string("CMD-SHELL", &mark), Node::string(text.clone(), &mark)];
                    *test = Node { tag: test.tag, ..Node::seq(items, &mark) };
                }
            }
            "deploy" => {
                if let Some(labels) = map_value_mut(value, "labels") {
                    list_to_map(labels, Missing::Empty);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn top_level_entry(node: &mut Node) {
    if let Some(labels) = map_value_mut(node, "labels") {
        list_to_map(labels, Missing::Empty);
    }
    // The legacy `external: {name: x}` is `external: true` with `name: x`.
    let Yaml::Map(pairs) = &mut node.value else { return };
    let Some(index) = pairs.iter().position(|(k, _)| k.text == "external") else { return };
    let external = &pairs[index].1;
    let Some(name) = external.get("name").cloned() else { return };
    if external.as_map().is_some_and(|m| m.len() == 1) {
        let mark = external.mark.clone();
        pairs[index].1 = Node::plain("true", &mark);
        if !pairs.iter().any(|(k, _)| k.text == "name") {
            pairs.push((Key { text: "name".to_owned(), mark: name.mark.clone() }, name));
        }
    }
}

pub(crate) fn map_value_mut<'a>(node: &'a mut Node, key: &str) -> Option<&'a mut Node> {
    match &mut node.value {
        Yaml::Map(pairs) => pairs.iter_mut().find(|(k, _)| k.text == key).map(|(_, v)| v),
        _ => None,
    }
}

/// What a list item without `=` maps to.
#[derive(Clone, Copy)]
enum Missing {
    /// `KEY` alone: no value (environment variables taken from the environment; networks).
    Null,
    /// `KEY` alone: an empty string (labels).
    Empty,
}

/// `["A=1", "B"]` to `{A: "1", B: null}`; a later duplicate replaces an earlier one.
fn list_to_map(node: &mut Node, missing: Missing) {
    let Yaml::Seq(items) = &node.value else { return };
    let mut pairs: Vec<(Key, Node)> = Vec::new();
    for item in items {
        let Yaml::Scalar(text, _) = &item.value else {
            // Left for the decoder to report: put it under a key that says what it is.
            pairs.push((Key { text: item.describe(), mark: item.mark.clone() }, item.clone()));
            continue;
        };
        let (key, value) = match text.split_once('=') {
            Some((k, v)) => (k.to_owned(), Node::string(v, &item.mark)),
            None => (
                text.clone(),
                match missing {
                    Missing::Null => Node::null(&item.mark),
                    Missing::Empty => Node::string("", &item.mark),
                },
            ),
        };
        pairs.retain(|(k, _)| k.text != key);
        pairs.push((Key { text: key, mark: item.mark.clone() }, value));
    }
    let tag = node.tag;
    *node = Node { tag, ..Node::map(pairs, &node.mark) };
}

/// `["host:1.2.3.4", "other=::1"]` to `{host: 1.2.3.4, other: "::1"}`.
fn extra_hosts(node: &mut Node) {
    let Yaml::Seq(items) = &node.value else { return };
    let mut pairs: Vec<(Key, Node)> = Vec::new();
    for item in items {
        let Yaml::Scalar(text, _) = &item.value else { continue };
        let split = text.split_once('=').or_else(|| text.split_once(':'));
        let (host, ip) = split.unwrap_or((text.as_str(), ""));
        let ip = ip.strip_prefix('[').and_then(|s| s.strip_suffix(']')).unwrap_or(ip);
        pairs.retain(|(k, _)| k.text != host);
        pairs.push((Key { text: host.to_owned(), mark: item.mark.clone() }, Node::string(ip, &item.mark)));
    }
    let tag = node.tag;
    *node = Node { tag, ..Node::map(pairs, &node.mark) };
}

fn depends_on(node: &mut Node) {
    let Yaml::Seq(items) = &node.value else { return };
    let mut pairs: Vec<(Key, Node)> = Vec::new();
    for item in items {
        let Yaml::Scalar(text, _) = &item.value else { continue };
        let condition = (
            Key { text: "condition".to_owned(), mark: item.mark.clone() },
            Node::string("service_started", &item.mark),
        );
        pairs.push((Key { text: text.clone(), mark: item.mark.clone() }, Node::map(vec![condition], &item.mark)));
    }
    let tag = node.tag;
    *node = Node { tag, ..Node::map(pairs, &node.mark) };
}

/// Rewrites each item of a list into zero or more items.
fn each_item(node: &mut Node, mut rewrite: impl FnMut(&Node) -> Result<Vec<Node>, LoadError>) -> Result<(), LoadError> {
    let Yaml::Seq(items) = &mut node.value else { return Ok(()) };
    let mut out = Vec::with_capacity(items.len());
    for item in items.iter() {
        out.extend(rewrite(item)?);
    }
    *items = out;
    Ok(())
}

fn invalid(mark: &Mark, path: &str, message: String) -> LoadError {
    LoadError::Invalid { location: mark.location(), path: path.to_owned(), message }
}

fn entry(key: &str, value: Node) -> (Key, Node) {
    (Key { text: key.to_owned(), mark: value.mark.clone() }, value)
}

/// A short port (`"8080:80/udp"`, `3000-3005`, `"127.0.0.1:80:80"`, `"[::1]:80:80"`) to one
/// long mapping per port.
fn ports(item: &Node, path: &str) -> Result<Vec<Node>, LoadError> {
    let Yaml::Scalar(text, _) = &item.value else { return Ok(vec![item.clone()]) };
    let mark = &item.mark;
    let bad = |why: &str| {
        invalid(
            mark,
            path,
            format!(
                "invalid port {text:?}: {why} (expected [[HOST_IP:]PUBLISHED:]TARGET[/PROTOCOL], ranges as 8000-8010)"
            ),
        )
    };
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((spec, protocol)) => (spec, Some(protocol)),
        None => (text.as_str(), None),
    };
    if let Some(protocol) = protocol
        && !matches!(protocol, "tcp" | "udp" | "sctp")
    {
        return Err(bad("the protocol must be tcp, udp or sctp"));
    }
    let (host_ip, rest) = if let Some(bracketed) = spec.strip_prefix('[') {
        let (ip, rest) =
            bracketed.split_once("]:").ok_or_else(|| bad("an IPv6 address in brackets must be followed by a port"))?;
        (Some(ip), rest)
    } else {
        (None, spec)
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (host_ip, published, target) = match (host_ip, parts.as_slice()) {
        (None, [target]) => (None, None, *target),
        (host_ip, [published, target]) => (host_ip, Some(*published), *target),
        (None, [ip, published, target]) => (Some(*ip), Some(*published), *target),
        _ => return Err(bad("too many colons")),
    };
    let targets = port_range(target).ok_or_else(|| bad("the target must be a port (1-65535) or a range"))?;
    let published = match published.filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => Some(port_range(p).ok_or_else(|| bad("the published port must be a port (1-65535) or a range"))?),
    };
    if let Some(published) = &published {
        if published.len() != targets.len() && published.len() != 1 {
            return Err(bad("the published and target ranges must have the same length"));
        }
        if published.len() == 1 && targets.len() > 1 {
            return Err(bad("a target range needs a published range of the same length"));
        }
    }
    let host_ip = host_ip.filter(|ip| !ip.is_empty());
    Ok(targets
        .iter()
        .enumerate()
        .map(|(i, target)| {
            let mut pairs = vec![entry("target", Node::plain(target.to_string(), mark))];
            if let Some(published) = &published {
                let port = published.get(i).or(published.first()).copied().unwrap_or(*target);
                pairs.push(entry("published", Node::plain(port.to_string(), mark)));
            }
            if let Some(protocol) = protocol {
                pairs.push(entry("protocol", Node::string(protocol, mark)));
            }
            if let Some(ip) = host_ip {
                pairs.push(entry("host_ip", Node::string(ip, mark)));
            }
            Node::map(pairs, mark)
        })
        .collect())
}

/// `80` or `8000-8010`, each port 1 to 65535.
fn port_range(text: &str) -> Option<Vec<u16>> {
    let port = |s: &str| s.parse::<u16>().ok().filter(|p| *p > 0);
    match text.split_once('-') {
        None => Some(vec![port(text)?]),
        Some((start, end)) => {
            let (start, end) = (port(start)?, port(end)?);
            (start <= end).then(|| (start..=end).collect())
        }
    }
}

/// A short volume (`/data`, `name:/data:ro`, `./src:/src:ro,z`) to its long mapping.
fn volume(item: &Node, path: &str) -> Result<Node, LoadError> {
    let Yaml::Scalar(text, _) = &item.value else { return Ok(item.clone()) };
    let mark = &item.mark;
    let bad =
        |why: &str| invalid(mark, path, format!("invalid volume {text:?}: {why} (expected [SOURCE:]TARGET[:OPTIONS])"));
    let mut parts: Vec<String> = Vec::new();
    for piece in text.split(':') {
        // A Windows drive letter (`C:\data`) is part of the path.
        if let Some(last) = parts.last_mut()
            && last.len() == 1
            && last.chars().all(|c| c.is_ascii_alphabetic())
            && (piece.starts_with('\\') || piece.starts_with('/'))
        {
            last.push(':');
            last.push_str(piece);
            continue;
        }
        parts.push(piece.to_owned());
    }
    let (source, target, options) = match parts.as_slice() {
        [target] => (None, target.clone(), None),
        [source, target] => (Some(source.clone()), target.clone(), None),
        [source, target, options] => (Some(source.clone()), target.clone(), Some(options.clone())),
        _ => return Err(bad("too many colons")),
    };
    if target.is_empty() {
        return Err(bad("the target is empty"));
    }
    let source = source.filter(|s| !s.is_empty());
    let is_bind = source.as_deref().is_some_and(|s| {
        s.starts_with('.')
            || s.starts_with('/')
            || s.starts_with('~')
            || s.starts_with('\\')
            || s.chars().nth(1) == Some(':')
    });
    let mut pairs = vec![entry("type", Node::string(if is_bind { "bind" } else { "volume" }, mark))];
    if let Some(source) = source {
        pairs.push(entry("source", Node::string(source, mark)));
    }
    pairs.push(entry("target", Node::string(target, mark)));
    let mut bind: Vec<(Key, Node)> = Vec::new();
    let mut volume: Vec<(Key, Node)> = Vec::new();
    for option in options.iter().flat_map(|o| o.split(',')) {
        match option {
            "ro" => pairs.push(entry("read_only", Node::plain("true", mark))),
            "rw" => pairs.push(entry("read_only", Node::plain("false", mark))),
            "z" | "Z" => bind.push(entry("selinux", Node::string(option, mark))),
            "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                bind.push(entry("propagation", Node::string(option, mark)));
            }
            "nocopy" => volume.push(entry("nocopy", Node::plain("true", mark))),
            "cached" | "delegated" | "consistent" => pairs.push(entry("consistency", Node::string(option, mark))),
            _ => {
                return Err(bad(&format!(
                    "unknown option {option:?} (ro, rw, z, Z, nocopy, a propagation such as rshared, or cached/delegated/consistent)"
                )));
            }
        }
    }
    if !bind.is_empty() {
        if !is_bind {
            return Err(bad("bind options (z, Z, propagation) need a host path as the source"));
        }
        pairs.push(entry("bind", Node::map(bind, mark)));
    }
    if !volume.is_empty() {
        if is_bind {
            return Err(bad("nocopy applies to volumes, not to host paths"));
        }
        pairs.push(entry("volume", Node::map(volume, mark)));
    }
    Ok(Node::map(pairs, mark))
}

fn file_reference(item: &Node) -> Node {
    match &item.value {
        Yaml::Scalar(text, _) if !item.is_null() => {
            Node::map(vec![entry("source", Node::string(text.clone(), &item.mark))], &item.mark)
        }
        _ => item.clone(),
    }
}

/// `command: echo hi` to `[echo, hi]`.
fn command(node: &mut Node, path: &str) -> Result<(), LoadError> {
    if node.is_null() {
        return Ok(());
    }
    let Yaml::Scalar(text, _) = &node.value else { return Ok(()) };
    let words = split_shell_words(text).map_err(|why| invalid(&node.mark, path, why))?;
    let mark = node.mark.clone();
    let tag = node.tag;
    *node = Node { tag, ..Node::seq(words.into_iter().map(|w| Node::string(w, &mark)).collect(), &mark) };
    Ok(())
}

/// `env_file: a.env` and `[a.env]` to `[{path: a.env}]`.
fn env_file(node: &mut Node) {
    scalar_to_list(node);
    let Yaml::Seq(items) = &mut node.value else { return };
    for item in items.iter_mut() {
        if let Yaml::Scalar(text, _) = &item.value
            && !item.is_null()
        {
            *item = Node::map(vec![entry("path", Node::string(text.clone(), &item.mark))], &item.mark);
        }
    }
}

fn scalar_to_list(node: &mut Node) {
    if matches!(node.value, Yaml::Scalar(..)) && !node.is_null() {
        let item = Node { tag: None, ..node.clone() };
        let tag = node.tag;
        *node = Node { tag, ..Node::seq(vec![item], &node.mark) };
    }
}

/// `nproc: 65535` to `nproc: {soft: 65535, hard: 65535}`.
fn ulimits(node: &mut Node) {
    let Yaml::Map(pairs) = &mut node.value else { return };
    for (_, value) in pairs.iter_mut() {
        if let Yaml::Scalar(text, Style::Plain | Style::Quoted) = &value.value
            && !value.is_null()
        {
            let limit = Node::plain(text.clone(), &value.mark);
            *value = Node::map(vec![entry("soft", limit.clone()), entry("hard", limit)], &value.mark);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;

    fn mark() -> Mark {
        Mark { file: Arc::from(Path::new("t.yml")), line: 1, column: 1 }
    }

    /// A long mapping as `key=value` pairs, for compact expectations.
    fn flat(node: &Node) -> String {
        match &node.value {
            Yaml::Scalar(text, _) => text.clone(),
            Yaml::Seq(items) => format!("[{}]", items.iter().map(flat).collect::<Vec<_>>().join(" ")),
            Yaml::Map(pairs) => {
                format!(
                    "{{{}}}",
                    pairs.iter().map(|(k, v)| format!("{}={}", k.text, flat(v))).collect::<Vec<_>>().join(" ")
                )
            }
        }
    }

    #[test]
    fn short_ports() {
        let cases: &[(&str, &str)] = &[
            ("3000", "{target=3000}"),
            ("8000:80", "{target=80 published=8000}"),
            ("3000-3002", "{target=3000} {target=3001} {target=3002}"),
            ("9090-9091:8080-8081", "{target=8080 published=9090} {target=8081 published=9091}"),
            ("6060:6060/udp", "{target=6060 published=6060 protocol=udp}"),
            ("127.0.0.1:8001:8001", "{target=8001 published=8001 host_ip=127.0.0.1}"),
            ("[::1]:6001:6001", "{target=6001 published=6001 host_ip=::1}"),
            ("0.0.0.0::80", "{target=80 host_ip=0.0.0.0}"),
        ];
        for (text, want) in cases {
            let got = ports(&Node::string(*text, &mark()), "p")
                .map(|nodes| nodes.iter().map(flat).collect::<Vec<_>>().join(" "));
            assert_eq!(got.map_err(|e| e.to_string()), Ok((*want).to_owned()), "{text}");
        }
        for text in ["0", "70000", "80/tcpx", "1:2:3:4", "8000-8001:80", "80:8000-8001", "9-3", "a:b", "[::1]6001"] {
            assert!(ports(&Node::string(text, &mark()), "p").is_err(), "{text}");
        }
    }

    #[test]
    fn short_volumes() {
        let cases: &[(&str, &str)] = &[
            ("/var/lib/mysql", "{type=volume target=/var/lib/mysql}"),
            ("data:/var/lib/mysql", "{type=volume source=data target=/var/lib/mysql}"),
            ("./cache:/tmp/cache", "{type=bind source=./cache target=/tmp/cache}"),
            ("~/configs:/etc/configs/:ro", "{type=bind source=~/configs target=/etc/configs/ read_only=true}"),
            (
                "/src:/src:rw,rshared,Z",
                "{type=bind source=/src target=/src read_only=false bind={propagation=rshared selinux=Z}}",
            ),
            ("data:/data:nocopy", "{type=volume source=data target=/data volume={nocopy=true}}"),
            ("C:\\data:/data", "{type=bind source=C:\\data target=/data}"),
            ("/a:/b:cached", "{type=bind source=/a target=/b consistency=cached}"),
        ];
        for (text, want) in cases {
            let got = volume(&Node::string(*text, &mark()), "v").map(|n| flat(&n));
            assert_eq!(got.map_err(|e| e.to_string()), Ok((*want).to_owned()), "{text}");
        }
        for text in ["a:b:c:d", "data:", "data:/d:bogus", "data:/d:z", "/a:/b:nocopy"] {
            assert!(volume(&Node::string(text, &mark()), "v").is_err(), "{text}");
        }
    }
}

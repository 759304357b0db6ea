//! Merging normalised files in order (`-c a.yml -c b.yml`), as `docker stack deploy` does.
//!
//! - Mappings merge key by key, recursively: services, `environment`, `labels`, `sysctls`,
//!   `extra_hosts`, `networks`, `depends_on`, `deploy`, `healthcheck`, `ulimits`, top-level
//!   objects, `x-` fields.
//! - Scalars and most lists are replaced: `command`, `entrypoint`, `healthcheck.test`, `dns`,
//!   `cap_add`, placement constraints, …
//! - `ports`, `volumes`, `secrets` and `configs` of a service merge by key: an entry of the later
//!   file replaces the earlier entry with the same key, in place; others are appended. Ports are
//!   keyed by host address, published port, target and protocol; volumes, secrets and configs
//!   by target (a secret or config without one by its source).
//! - `logging` with a different `driver` replaces the earlier one whole.
//! - The Compose Specification's tags: `!reset` removes the earlier value, `!override`
//!   replaces it without merging.

use crate::yaml::{Key, Node, Tag, Yaml};

/// Merges `over` into `base`.
pub(crate) fn merge(base: &mut Node, over: Node) {
    let mut path = Vec::new();
    merge_at(base, over, &mut path);
}

fn merge_at(base: &mut Node, mut over: Node, path: &mut Vec<String>) {
    if over.tag == Some(Tag::Override) {
        over.tag = None;
        *base = over;
        return;
    }
    let keyed = keyed_list(path);
    match (&mut base.value, over.value) {
        (Yaml::Map(base_pairs), Yaml::Map(over_pairs)) => {
            if is_logging(path) && driver_changes(base_pairs, &over_pairs) {
                *base = without_tags(Node { value: Yaml::Map(over_pairs), mark: over.mark, tag: None });
                return;
            }
            for (key, value) in over_pairs {
                if value.tag == Some(Tag::Reset) {
                    base_pairs.retain(|(k, _)| k.text != key.text);
                    continue;
                }
                match base_pairs.iter_mut().find(|(k, _)| k.text == key.text) {
                    Some((base_key, base_value)) => {
                        *base_key = key.clone();
                        path.push(key.text);
                        merge_at(base_value, value, path);
                        path.pop();
                    }
                    None => base_pairs.push((key, without_tags(value))),
                }
            }
        }
        (Yaml::Seq(base_items), Yaml::Seq(over_items)) if keyed.is_some() => {
            let key_of = keyed.unwrap_or(port_key);
            for item in over_items {
                let item = without_tags(item);
                match key_of(&item).and_then(|k| base_items.iter().position(|b| key_of(b).as_ref() == Some(&k))) {
                    Some(i) => base_items[i] = item,
                    None => base_items.push(item),
                }
            }
        }
        (_, value) => {
            *base = without_tags(Node { value, mark: over.mark, tag: None });
        }
    }
}

/// A value added where nothing was: `!reset` entries inside it mean nothing, `!override` is
/// plain replacement.
fn without_tags(mut node: Node) -> Node {
    node.tag = None;
    match &mut node.value {
        Yaml::Map(pairs) => {
            pairs.retain(|(_, v)| v.tag != Some(Tag::Reset));
            let taken = std::mem::take(pairs);
            *pairs = taken.into_iter().map(|(k, v)| (k, without_tags(v))).collect::<Vec<(Key, Node)>>();
        }
        Yaml::Seq(items) => {
            let taken = std::mem::take(items);
            *items = taken.into_iter().map(without_tags).collect();
        }
        Yaml::Scalar(..) => {}
    }
    node
}

fn is_service_key(path: &[String], names: &[&str]) -> bool {
    matches!(path, [services, _, key] if services == "services" && names.contains(&key.as_str()))
}

fn is_logging(path: &[String]) -> bool {
    is_service_key(path, &["logging"])
}

fn driver_changes(base: &[(Key, Node)], over: &[(Key, Node)]) -> bool {
    let driver = |pairs: &[(Key, Node)]| {
        pairs.iter().find(|(k, _)| k.text == "driver").and_then(|(_, v)| v.as_scalar().map(str::to_owned))
    };
    match (driver(base), driver(over)) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    }
}

type KeyFn = fn(&Node) -> Option<String>;

/// The merge key of the lists that merge by key.
fn keyed_list(path: &[String]) -> Option<KeyFn> {
    match path {
        [services, _, key] if services == "services" => match key.as_str() {
            "ports" => Some(port_key),
            "volumes" => Some(target_key),
            "secrets" | "configs" => Some(reference_key),
            _ => None,
        },
        _ => None,
    }
}

fn text(node: &Node, key: &str) -> Option<String> {
    node.get(key).and_then(Node::as_scalar).map(str::to_owned)
}

fn port_key(node: &Node) -> Option<String> {
    let target = text(node, "target")?;
    Some(format!(
        "{}:{}:{}/{}",
        text(node, "host_ip").unwrap_or_default(),
        text(node, "published").unwrap_or_default(),
        target,
        text(node, "protocol").unwrap_or_else(|| "tcp".to_owned())
    ))
}

fn target_key(node: &Node) -> Option<String> {
    text(node, "target")
}

/// A secret or config without a target lands at a path named after its source.
fn reference_key(node: &Node) -> Option<String> {
    text(node, "target").or_else(|| text(node, "source"))
}

//! How a service is reached, as `service create|update` take it: `--network`, `--publish`,
//! `--endpoint-mode` and their `-add`/`-rm` forms, parsed by pure functions into the spec's
//! `NetworkAttachmentConfig`s and `PortConfig`s (docker's `opts.NetworkOpt` and `opts.PortOpt`),
//! and the same objects as `docker service inspect` shows them.

use std::collections::HashMap;

use clap::{Args, ValueEnum};
use shoal_api::v1::{self, endpoint_spec, port_config};

use crate::render::{protocol_name, publish_mode_name};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum EndpointMode {
    // Plain comments: doc comments would turn `--help` into its long form.
    // One virtual IP per network, balanced over the tasks.
    Vip,
    // DNS answers the tasks' IPs; no virtual IP.
    Dnsrr,
}

impl EndpointMode {
    fn api(self) -> endpoint_spec::Mode {
        match self {
            Self::Vip => endpoint_spec::Mode::Vip,
            Self::Dnsrr => endpoint_spec::Mode::Dnsrr,
        }
    }
}

/// `service create`'s networking flags.
#[derive(Debug, Args)]
pub(crate) struct EndpointArgs {
    /// Attach to a network: NAME, or name=NAME,alias=ALIAS[,alias=…] (repeatable).
    #[arg(long)]
    network: Vec<String>,
    /// vip (a virtual IP balanced over the tasks) or dnsrr (DNS answers the tasks' IPs).
    #[arg(long = "endpoint-mode", value_enum)]
    endpoint_mode: Option<EndpointMode>,
    /// Publish a port: 8080:80, 8080:80/udp, 80 (the cluster picks the published port) or
    /// published=8080,target=80,protocol=tcp|udp|sctp,mode=ingress|host (repeatable).
    #[arg(long, short)]
    publish: Vec<String>,
}

/// `service update`'s networking flags.
#[derive(Debug, Args)]
pub(crate) struct EndpointUpdateArgs {
    /// Attach to a network: NAME, or name=NAME,alias=ALIAS (repeatable).
    #[arg(long = "network-add")]
    network_add: Vec<String>,
    /// Detach from a network, by name or ID (repeatable).
    #[arg(long = "network-rm")]
    network_rm: Vec<String>,
    /// vip or dnsrr.
    #[arg(long = "endpoint-mode", value_enum)]
    endpoint_mode: Option<EndpointMode>,
    /// Publish a port, as --publish of create (repeatable).
    #[arg(long = "publish-add")]
    publish_add: Vec<String>,
    /// Stop publishing a port, by its target port: 80, 80/udp, or PUBLISHED:TARGET (repeatable).
    #[arg(long = "publish-rm")]
    publish_rm: Vec<String>,
}

const PUBLISH_EXAMPLE: &str = "e.g. 8080:80, 8080:80/udp, 80, or published=8080,target=80,protocol=udp,mode=host";
const NETWORK_EXAMPLE: &str = "e.g. backend, or name=backend,alias=db";

fn parse_protocol(text: &str) -> Result<port_config::Protocol, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(port_config::Protocol::Tcp),
        "udp" => Ok(port_config::Protocol::Udp),
        "sctp" => Ok(port_config::Protocol::Sctp),
        _ => Err(format!("protocol {text:?} is not tcp, udp or sctp")),
    }
}

fn parse_mode(text: &str) -> Result<port_config::PublishMode, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "ingress" => Ok(port_config::PublishMode::Ingress),
        "host" => Ok(port_config::PublishMode::Host),
        _ => Err(format!("mode {text:?} is not ingress or host")),
    }
}

fn parse_port(text: &str, what: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(port) if (1..=65535).contains(&port) => Ok(port),
        _ if text.trim().is_empty() => Err(format!("the {what} port is missing")),
        _ => Err(format!("{what} port {text:?} is not a port number (1-65535)")),
    }
}

/// `80` or `80-82`, as (first, last).
fn parse_range(text: &str, what: &str) -> Result<(u32, u32), String> {
    let Some((first, last)) = text.split_once('-') else {
        let port = parse_port(text, what)?;
        return Ok((port, port));
    };
    let (first, last) = (parse_port(first, what)?, parse_port(last, what)?);
    if last < first {
        return Err(format!("{what} range {text:?} ends before it starts"));
    }
    Ok((first, last))
}

/// `[PUBLISHED:]TARGET[/PROTOCOL]`, each port possibly a range (`8080-8081:80-81`).
fn short_form(value: &str) -> Result<Vec<v1::PortConfig>, String> {
    let (ports, protocol) = match value.rsplit_once('/') {
        Some((ports, protocol)) => (ports, parse_protocol(protocol)?),
        None => (value, port_config::Protocol::Tcp),
    };
    let (published, target) = match ports.split(':').collect::<Vec<_>>().as_slice() {
        [target] => (None, *target),
        [published, target] => ((!published.is_empty()).then_some(*published), *target),
        _ => return Err("a host IP is not supported: ports are published on every node".to_owned()),
    };
    let targets = parse_range(target, "target")?;
    let published = published.map(|p| parse_range(p, "published")).transpose()?;
    if let Some(published) = published
        && published.1 - published.0 != targets.1 - targets.0
    {
        return Err("the published and target ranges differ in length".to_owned());
    }
    Ok((targets.0..=targets.1)
        .enumerate()
        .map(|(i, target)| v1::PortConfig {
            protocol: protocol as i32,
            target_port: target,
            published_port: published.map_or(0, |p| p.0 + i as u32),
            publish_mode: port_config::PublishMode::Ingress as i32,
            ..Default::default()
        })
        .collect())
}

/// `published=8080,target=80,protocol=udp,mode=host`; also says whether the mode was given.
fn long_form(value: &str) -> Result<(v1::PortConfig, bool), String> {
    let mut port = v1::PortConfig::default();
    let (mut target, mut mode_given) = (None, false);
    for field in value.split(',') {
        let Some((key, text)) = field.split_once('=') else {
            return Err(format!("field {field:?} is not KEY=VALUE"));
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "target" => target = Some(parse_port(text, "target")?),
            "published" => port.published_port = parse_port(text, "published")?,
            "protocol" => port.protocol = parse_protocol(text)? as i32,
            "mode" => {
                port.publish_mode = parse_mode(text)? as i32;
                mode_given = true;
            }
            _ => return Err(format!("unknown field {key:?} (fields: published, target, protocol, mode)")),
        }
    }
    port.target_port = target.ok_or("the target port is missing")?;
    Ok((port, mode_given))
}

/// Ports of one `--publish` (several for a range), and whether a mode was given.
fn ports_of(value: &str, flag: &str, example: &str) -> Result<(Vec<v1::PortConfig>, bool), String> {
    let parsed = if value.contains('=') {
        long_form(value).map(|(p, m)| (vec![p], m))
    } else {
        short_form(value).map(|p| (p, false))
    };
    parsed.map_err(|why| format!("invalid {flag} {value:?}: {why}; {example}"))
}

/// One `--publish` (or `--publish-add`) value.
pub(crate) fn parse_publish(value: &str) -> Result<Vec<v1::PortConfig>, String> {
    Ok(ports_of(value, "publish", PUBLISH_EXAMPLE)?.0)
}

/// A `--publish-rm` value: which published ports it takes away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortSelector {
    port: v1::PortConfig,
    /// `mode=` was given: only ports of that mode match.
    mode_given: bool,
    text: String,
}

impl PortSelector {
    /// The same target port and protocol; the same published port if one is named (a spec
    /// port the cluster is to choose matches any); the same mode if one is named.
    fn matches(&self, port: &v1::PortConfig) -> bool {
        let want = &self.port;
        port.target_port == want.target_port
            && port.protocol == want.protocol
            && (want.published_port == 0 || port.published_port == 0 || port.published_port == want.published_port)
            && (!self.mode_given || port.publish_mode == want.publish_mode)
    }
}

pub(crate) fn parse_publish_rm(value: &str) -> Result<Vec<PortSelector>, String> {
    let (ports, mode_given) = ports_of(value, "publish-rm", "e.g. 80, 80/udp or 8080:80")?;
    Ok(ports.into_iter().map(|port| PortSelector { port, mode_given, text: value.to_owned() }).collect())
}

/// One `--network` (or `--network-add`) value: `NAME` or `name=NAME,alias=A,alias=B`.
pub(crate) fn parse_network(value: &str) -> Result<v1::NetworkAttachmentConfig, String> {
    let fail = |why: &str| format!("invalid network {value:?}: {why}; {NETWORK_EXAMPLE}");
    if !value.contains('=') {
        if value.trim().is_empty() {
            return Err(fail("the name is empty"));
        }
        return Ok(v1::NetworkAttachmentConfig { target: value.trim().to_owned(), aliases: Vec::new() });
    }
    let mut attachment = v1::NetworkAttachmentConfig::default();
    for field in value.split(',') {
        let Some((key, text)) = field.split_once('=') else {
            return Err(fail(&format!("field {field:?} is not KEY=VALUE")));
        };
        match (key.trim().to_ascii_lowercase().as_str(), text.trim()) {
            (_, "") => return Err(fail(&format!("{key} is empty"))),
            ("name", name) => attachment.target = name.to_owned(),
            ("alias", alias) => attachment.aliases.push(alias.to_owned()),
            _ => return Err(fail(&format!("unknown field {key:?} (fields: name, alias)"))),
        }
    }
    if attachment.target.is_empty() {
        return Err(fail("the name is missing"));
    }
    Ok(attachment)
}

/// The networks and endpoint `service create` sends (no endpoint when no flag asks for one:
/// the manager's default is a VIP and no ports).
pub(crate) fn endpoint_spec(
    args: &EndpointArgs,
) -> Result<(Vec<v1::NetworkAttachmentConfig>, Option<v1::EndpointSpec>), String> {
    let networks = args.network.iter().map(|n| parse_network(n)).collect::<Result<Vec<_>, _>>()?;
    let mut ports = Vec::new();
    for value in &args.publish {
        ports.extend(parse_publish(value)?);
    }
    let endpoint = (args.endpoint_mode.is_some() || !ports.is_empty())
        .then(|| v1::EndpointSpec { mode: args.endpoint_mode.unwrap_or(EndpointMode::Vip).api() as i32, ports });
    Ok((networks, endpoint))
}

/// What `service update`'s networking flags change, parsed.
#[derive(Debug, Default)]
pub(crate) struct EndpointEdit {
    network_add: Vec<v1::NetworkAttachmentConfig>,
    network_rm: Vec<String>,
    mode: Option<EndpointMode>,
    publish_add: Vec<v1::PortConfig>,
    publish_rm: Vec<PortSelector>,
}

impl EndpointEdit {
    pub(crate) fn parse(args: &EndpointUpdateArgs) -> Result<Self, String> {
        let mut edit = Self {
            network_add: args.network_add.iter().map(|n| parse_network(n)).collect::<Result<_, _>>()?,
            network_rm: args.network_rm.clone(),
            mode: args.endpoint_mode,
            ..Self::default()
        };
        for value in &args.publish_add {
            edit.publish_add.extend(parse_publish(value)?);
        }
        for value in &args.publish_rm {
            edit.publish_rm.extend(parse_publish_rm(value)?);
        }
        Ok(edit)
    }

    /// The networks named, to be resolved to IDs (the spec holds IDs) before [`Self::apply`].
    pub(crate) fn network_refs(&self) -> impl Iterator<Item = &str> {
        self.network_add.iter().map(|n| n.target.as_str()).chain(self.network_rm.iter().map(String::as_str))
    }

    /// Changes `spec` as docker's `service update` does: removals before additions; `ids`
    /// maps the networks named to their IDs. Removing what is not there, or attaching a network
    /// twice, is an error rather than nothing.
    pub(crate) fn apply(&self, spec: &mut v1::ServiceSpec, ids: &HashMap<String, String>) -> Result<(), String> {
        let id = |reference: &str| ids.get(reference).cloned().unwrap_or_else(|| reference.to_owned());
        for reference in &self.network_rm {
            let before = spec.networks.len();
            let target = id(reference);
            spec.networks.retain(|n| n.target != target && n.target != *reference);
            if spec.networks.len() == before {
                return Err(format!("--network-rm {reference}: the service is not attached to network {reference}"));
            }
        }
        for attachment in &self.network_add {
            let target = id(&attachment.target);
            if spec.networks.iter().any(|n| n.target == target) {
                return Err(format!("service is already attached to network {}", attachment.target));
            }
            spec.networks.push(v1::NetworkAttachmentConfig { target, aliases: attachment.aliases.clone() });
        }
        if self.mode.is_none() && self.publish_add.is_empty() && self.publish_rm.is_empty() {
            return Ok(());
        }
        let endpoint = spec.endpoint.get_or_insert_with(Default::default);
        for selector in &self.publish_rm {
            let before = endpoint.ports.len();
            endpoint.ports.retain(|p| !selector.matches(p));
            if endpoint.ports.len() == before {
                return Err(format!("--publish-rm {}: the service publishes no such port", selector.text));
            }
        }
        for port in &self.publish_add {
            if !endpoint.ports.contains(port) {
                endpoint.ports.push(port.clone());
            }
        }
        if let Some(mode) = self.mode {
            endpoint.mode = mode.api() as i32;
        }
        Ok(())
    }
}

fn mode_name(mode: i32) -> &'static str {
    match endpoint_spec::Mode::try_from(mode) {
        Ok(endpoint_spec::Mode::Dnsrr) => "dnsrr",
        _ => "vip",
    }
}

/// A port as docker's JSON has it (empty and zero fields left out).
fn port_json(port: &v1::PortConfig) -> serde_json::Value {
    let mut json = serde_json::json!({
        "Protocol": protocol_name(port.protocol),
        "TargetPort": port.target_port,
        "PublishMode": publish_mode_name(port.publish_mode),
    });
    if port.published_port != 0 {
        json["PublishedPort"] = port.published_port.into();
    }
    if !port.name.is_empty() {
        json["Name"] = port.name.clone().into();
    }
    json
}

fn ports_json(ports: &[v1::PortConfig]) -> serde_json::Value {
    ports.iter().map(port_json).collect()
}

/// `Spec.EndpointSpec`.
pub(crate) fn endpoint_spec_json(spec: &v1::EndpointSpec) -> serde_json::Value {
    let mut json = serde_json::json!({"Mode": mode_name(spec.mode)});
    if !spec.ports.is_empty() {
        json["Ports"] = ports_json(&spec.ports);
    }
    json
}

/// `Spec.TaskTemplate.Networks`.
pub(crate) fn networks_json(networks: &[v1::NetworkAttachmentConfig]) -> serde_json::Value {
    networks
        .iter()
        .map(|n| {
            let mut json = serde_json::json!({"Target": n.target});
            if !n.aliases.is_empty() {
                json["Aliases"] = n.aliases.clone().into();
            }
            json
        })
        .collect()
}

/// `Endpoint`: what the allocator gave the service (`{"Spec": {}}` until then).
pub(crate) fn endpoint_json(endpoint: Option<&v1::Endpoint>) -> serde_json::Value {
    let Some(endpoint) = endpoint else { return serde_json::json!({"Spec": {}}) };
    let mut json = serde_json::json!({
        "Spec": endpoint.spec.as_ref().map_or_else(|| serde_json::json!({}), endpoint_spec_json),
    });
    if !endpoint.ports.is_empty() {
        json["Ports"] = ports_json(&endpoint.ports);
    }
    if !endpoint.virtual_ips.is_empty() {
        json["VirtualIPs"] = endpoint
            .virtual_ips
            .iter()
            .map(|v| serde_json::json!({"NetworkID": v.network_id, "Addr": v.addr}))
            .collect();
    }
    json
}

#[cfg(test)]
mod tests;

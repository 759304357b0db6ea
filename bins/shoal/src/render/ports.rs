//! The PORTS cell of `service ls` (`*:8080->80/tcp, *:30000-30001->53-54/udp`) and the names
//! docker gives protocols and publish modes.

use shoal_api::v1::{self, port_config};

/// `tcp`, `udp`, `sctp`.
pub(crate) fn protocol_name(protocol: i32) -> &'static str {
    match port_config::Protocol::try_from(protocol) {
        Ok(port_config::Protocol::Udp) => "udp",
        Ok(port_config::Protocol::Sctp) => "sctp",
        _ => "tcp",
    }
}

/// `ingress`, `host`.
pub(crate) fn publish_mode_name(mode: i32) -> &'static str {
    match port_config::PublishMode::try_from(mode) {
        Ok(port_config::PublishMode::Host) => "host",
        _ => "ingress",
    }
}

/// Consecutive ports (published and target both one more, same protocol and mode) shown as one.
struct Run {
    published: (u32, u32),
    target: (u32, u32),
    protocol: &'static str,
    mode: i32,
}

impl Run {
    fn of(port: &v1::PortConfig) -> Self {
        Self {
            published: (port.published_port, port.published_port),
            target: (port.target_port, port.target_port),
            protocol: protocol_name(port.protocol),
            mode: port.publish_mode,
        }
    }

    /// Takes `port` in if it continues this run.
    fn extend(&mut self, port: &v1::PortConfig) -> bool {
        let continues = self.protocol == protocol_name(port.protocol)
            && self.mode == port.publish_mode
            && self.published.0 > 0
            && port.published_port == self.published.1 + 1
            && port.target_port == self.target.1 + 1;
        if continues {
            self.published.1 = port.published_port;
            self.target.1 = port.target_port;
        }
        continues
    }

    fn text(&self) -> String {
        let published = match self.published {
            (0, _) => String::new(),
            (a, b) if b > a => format!("*:{a}-{b}->"),
            (a, _) => format!("*:{a}->"),
        };
        let target = match self.target {
            (a, b) if b > a => format!("{a}-{b}"),
            (a, _) => a.to_string(),
        };
        format!("{published}{target}/{}", self.protocol)
    }
}

/// A service's published ports as docker's `service ls` shows them: the allocated ones (the
/// spec's until the service is allocated; a port still to be chosen shows as `80/tcp`), by
/// protocol then published port, consecutive ones as ranges, joined by `, `. Host-mode ports
/// are shown the same way (docker leaves them out; here one sees them).
pub(crate) fn ports(service: &v1::Service) -> String {
    let ports = match &service.endpoint {
        Some(endpoint) => endpoint.ports.as_slice(),
        None => service.spec.as_ref().and_then(|s| s.endpoint.as_ref()).map(|e| e.ports.as_slice()).unwrap_or_default(),
    };
    let mut sorted: Vec<&v1::PortConfig> = ports.iter().collect();
    sorted.sort_by_key(|p| (protocol_name(p.protocol), p.published_port, p.target_port));
    let mut runs: Vec<Run> = Vec::new();
    for port in sorted {
        if !runs.last_mut().is_some_and(|run| run.extend(port)) {
            runs.push(Run::of(port));
        }
    }
    runs.iter().map(Run::text).collect::<Vec<_>>().join(", ")
}

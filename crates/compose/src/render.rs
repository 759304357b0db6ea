//! The project back to YAML, for `shoal stack config`: long syntax throughout, keys sorted,
//! the same project always giving the same bytes.
//!
//! The output is itself a compose file that loads to the same project: `$` in values is
//! written `$$` so that loading it again does not substitute anything, and strings that YAML
//! would read as something else (`"8080:80"`, `"yes"`, `"0.5"`) are quoted.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::*;
use crate::units::{format_duration, format_nano_cpus};

/// A value to print.
enum Out {
    /// A string (quoted when YAML would read it as something else; `$` doubled).
    Str(String),
    /// A number, boolean or null, printed as it is.
    Raw(String),
    Seq(Vec<Out>),
    /// Printed in the order given.
    Map(Vec<(String, Out)>),
}

/// A mapping under construction: fields are added when set, sorted on [`Fields::done`].
#[derive(Default)]
struct Fields(Vec<(String, Out)>);

impl Fields {
    fn put(&mut self, key: &str, value: Out) -> &mut Self {
        self.0.push((key.to_owned(), value));
        self
    }

    fn opt(&mut self, key: &str, value: Option<Out>) -> &mut Self {
        if let Some(value) = value {
            self.put(key, value);
        }
        self
    }

    fn str(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        self.opt(key, value.map(string))
    }

    fn flag(&mut self, key: &str, value: bool) -> &mut Self {
        if value {
            self.put(key, raw(true));
        }
        self
    }

    fn list(&mut self, key: &str, values: &[String]) -> &mut Self {
        if !values.is_empty() {
            self.put(key, strings(values));
        }
        self
    }

    fn map(&mut self, key: &str, values: &BTreeMap<String, String>) -> &mut Self {
        if !values.is_empty() {
            self.put(key, Out::Map(values.iter().map(|(k, v)| (k.clone(), string(v))).collect()));
        }
        self
    }

    fn duration(&mut self, key: &str, value: Option<std::time::Duration>) -> &mut Self {
        self.opt(key, value.map(|d| Out::Str(format_duration(d))))
    }

    fn extensions(&mut self, values: &BTreeMap<String, Value>) -> &mut Self {
        for (key, value) in values {
            self.put(key, extension(value));
        }
        self
    }

    fn done(&mut self) -> Out {
        let mut pairs = std::mem::take(&mut self.0);
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Out::Map(pairs)
    }
}

fn string(value: impl Into<String>) -> Out {
    Out::Str(value.into())
}

fn raw(value: impl ToString) -> Out {
    Out::Raw(value.to_string())
}

fn strings(values: &[String]) -> Out {
    Out::Seq(values.iter().map(string).collect())
}

fn extension(value: &Value) -> Out {
    match value {
        Value::Null => raw("null"),
        Value::Bool(b) => raw(b),
        Value::Int(n) => raw(n),
        Value::Float(f) if f.is_nan() => raw(".nan"),
        Value::Float(f) if f.is_infinite() => raw(if *f > 0.0 { ".inf" } else { "-.inf" }),
        Value::Float(f) => raw(format!("{f:?}")),
        Value::String(s) => string(s.as_str()),
        Value::Seq(items) => Out::Seq(items.iter().map(extension).collect()),
        Value::Map(pairs) => Out::Map(pairs.iter().map(|(k, v)| (k.clone(), extension(v))).collect()),
    }
}

/// Renders a project as YAML: `name`, `services`, `networks`, `volumes`, `secrets`,
/// `configs`, then `x-` fields; keys sorted within each.
pub fn render(project: &Project) -> String {
    let mut top = Vec::new();
    if let Some(name) = &project.name {
        top.push(("name".to_owned(), string(name.as_str())));
    }
    top.push((
        "services".to_owned(),
        Out::Map(project.services.iter().map(|(k, s)| (k.clone(), service(s))).collect()),
    ));
    let sections: [(&str, Vec<(String, Out)>); 4] = [
        ("networks", project.networks.iter().map(|(k, n)| (k.clone(), network(n))).collect()),
        ("volumes", project.volumes.iter().map(|(k, v)| (k.clone(), volume(v))).collect()),
        ("secrets", project.secrets.iter().map(|(k, s)| (k.clone(), file_object(s))).collect()),
        ("configs", project.configs.iter().map(|(k, c)| (k.clone(), file_object(c))).collect()),
    ];
    for (key, entries) in sections {
        if !entries.is_empty() {
            top.push((key.to_owned(), Out::Map(entries)));
        }
    }
    for (key, value) in &project.extensions {
        top.push((key.clone(), extension(value)));
    }
    let mut out = String::new();
    emit_map(&mut out, &top, 0);
    out
}

fn service(s: &Service) -> Out {
    let mut f = Fields::default();
    f.list("cap_add", &s.cap_add).list("cap_drop", &s.cap_drop);
    f.opt("command", s.command.as_deref().map(strings));
    f.opt("entrypoint", s.entrypoint.as_deref().map(strings));
    if !s.configs.is_empty() {
        f.put("configs", Out::Seq(s.configs.iter().map(reference).collect()));
    }
    if !s.secrets.is_empty() {
        f.put("secrets", Out::Seq(s.secrets.iter().map(reference).collect()));
    }
    if !s.depends_on.is_empty() {
        let edges = s.depends_on.iter().map(|(name, d)| {
            let mut e = Fields::default();
            e.put("condition", string(d.condition.as_str())).flag("restart", d.restart);
            if !d.required {
                e.put("required", raw(false));
            }
            (name.clone(), e.done())
        });
        f.put("depends_on", Out::Map(edges.collect()));
    }
    if s.deploy != Deploy::default() {
        f.put("deploy", deploy(&s.deploy));
    }
    f.list("dns", &s.dns).list("dns_opt", &s.dns_opt).list("dns_search", &s.dns_search);
    if !s.env_file.is_empty() {
        let files = s.env_file.iter().map(|e| {
            let mut file = Fields::default();
            file.put("path", string(e.path.to_string_lossy()));
            if !e.required {
                file.put("required", raw(false));
            }
            file.done()
        });
        f.put("env_file", Out::Seq(files.collect()));
    }
    if !s.environment.is_empty() {
        let vars = s.environment.iter().map(|(k, v)| (k.clone(), v.as_deref().map_or_else(|| raw("null"), string)));
        f.put("environment", Out::Map(vars.collect()));
    }
    f.map("extra_hosts", &s.extra_hosts).list("group_add", &s.group_add);
    f.opt("healthcheck", s.healthcheck.as_ref().map(healthcheck));
    f.str("hostname", s.hostname.as_deref()).put("image", string(s.image.as_str()));
    f.opt("init", s.init.map(raw)).map("labels", &s.labels);
    f.opt(
        "logging",
        s.logging
            .as_ref()
            .map(|l| Fields::default().str("driver", l.driver.as_deref()).map("options", &l.options).done()),
    );
    if !s.networks.is_empty() {
        let networks = s.networks.iter().map(|(name, n)| {
            let value = if *n == ServiceNetwork::default() {
                raw("null")
            } else {
                Fields::default()
                    .list("aliases", &n.aliases)
                    .str("ipv4_address", n.ipv4_address.as_deref())
                    .str("ipv6_address", n.ipv6_address.as_deref())
                    .map("driver_opts", &n.driver_opts)
                    .done()
            };
            (name.clone(), value)
        });
        f.put("networks", Out::Map(networks.collect()));
    }
    f.str("platform", s.platform.as_deref());
    if !s.ports.is_empty() {
        f.put("ports", Out::Seq(s.ports.iter().map(port).collect()));
    }
    f.flag("read_only", s.read_only).flag("stdin_open", s.stdin_open).flag("tty", s.tty);
    f.duration("stop_grace_period", s.stop_grace_period).str("stop_signal", s.stop_signal.as_deref());
    f.map("sysctls", &s.sysctls).list("tmpfs", &s.tmpfs);
    if !s.ulimits.is_empty() {
        let limits = s
            .ulimits
            .iter()
            .map(|(k, u)| (k.clone(), Fields::default().put("hard", raw(u.hard)).put("soft", raw(u.soft)).done()));
        f.put("ulimits", Out::Map(limits.collect()));
    }
    f.str("user", s.user.as_deref());
    if !s.volumes.is_empty() {
        f.put("volumes", Out::Seq(s.volumes.iter().map(service_volume).collect()));
    }
    f.str("working_dir", s.working_dir.as_deref()).extensions(&s.extensions);
    f.done()
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Replicated => "replicated",
        Mode::Global => "global",
        Mode::ReplicatedJob => "replicated-job",
        Mode::GlobalJob => "global-job",
    }
}

fn deploy(d: &Deploy) -> Out {
    let mut f = Fields::default();
    f.opt(
        "endpoint_mode",
        d.endpoint_mode.map(|m| {
            string(match m {
                EndpointMode::Vip => "vip",
                EndpointMode::Dnsrr => "dnsrr",
            })
        }),
    );
    f.map("labels", &d.labels).put("mode", string(mode_name(d.mode)));
    if d.placement != Placement::default() {
        let p = &d.placement;
        let preferences =
            p.preferences.iter().map(|spread| Fields::default().put("spread", string(spread.as_str())).done());
        let mut placement = Fields::default();
        placement.list("constraints", &p.constraints).opt("max_replicas_per_node", p.max_replicas_per_node.map(raw));
        if !p.preferences.is_empty() {
            placement.put("preferences", Out::Seq(preferences.collect()));
        }
        f.put("placement", placement.done());
    }
    f.opt("replicas", d.replicas.map(raw));
    if d.resources != Resources::default() {
        let limits = d.resources.limits.as_ref().map(|l| {
            Fields::default()
                .opt("cpus", l.nano_cpus.map(|n| string(format_nano_cpus(n))))
                .opt("memory", l.memory_bytes.map(raw))
                .opt("pids", l.pids.map(raw))
                .done()
        });
        let reservations = d.resources.reservations.as_ref().map(|r| {
            let mut fields = Fields::default();
            fields.opt("cpus", r.nano_cpus.map(|n| string(format_nano_cpus(n)))).opt("memory", r.memory_bytes.map(raw));
            if !r.generic_resources.is_empty() {
                let generic = r.generic_resources.iter().map(|(kind, value)| {
                    let spec = Fields::default().put("kind", string(kind.as_str())).put("value", raw(value)).done();
                    Fields::default().put("discrete_resource_spec", spec).done()
                });
                fields.put("generic_resources", Out::Seq(generic.collect()));
            }
            fields.done()
        });
        f.put("resources", Fields::default().opt("limits", limits).opt("reservations", reservations).done());
    }
    f.opt(
        "restart_policy",
        d.restart_policy.as_ref().map(|r| {
            Fields::default()
                .opt(
                    "condition",
                    r.condition.map(|c| {
                        string(match c {
                            RestartCondition::None => "none",
                            RestartCondition::OnFailure => "on-failure",
                            RestartCondition::Any => "any",
                        })
                    }),
                )
                .duration("delay", r.delay)
                .opt("max_attempts", r.max_attempts.map(raw))
                .duration("window", r.window)
                .done()
        }),
    );
    f.opt("rollback_config", d.rollback_config.as_ref().map(update_config));
    f.opt("update_config", d.update_config.as_ref().map(update_config));
    f.done()
}

fn update_config(u: &UpdateConfig) -> Out {
    Fields::default()
        .opt("parallelism", u.parallelism.map(raw))
        .duration("delay", u.delay)
        .opt(
            "failure_action",
            u.failure_action.map(|a| {
                string(match a {
                    FailureAction::Continue => "continue",
                    FailureAction::Rollback => "rollback",
                    FailureAction::Pause => "pause",
                })
            }),
        )
        .duration("monitor", u.monitor)
        .opt("max_failure_ratio", u.max_failure_ratio.map(|r| raw(format!("{r:?}"))))
        .opt(
            "order",
            u.order.map(|o| {
                string(match o {
                    UpdateOrder::StopFirst => "stop-first",
                    UpdateOrder::StartFirst => "start-first",
                })
            }),
        )
        .done()
}

fn healthcheck(h: &Healthcheck) -> Out {
    Fields::default()
        .list("test", &h.test)
        .duration("interval", h.interval)
        .duration("timeout", h.timeout)
        .opt("retries", h.retries.map(raw))
        .duration("start_period", h.start_period)
        .duration("start_interval", h.start_interval)
        .done()
}

fn port(p: &Port) -> Out {
    Fields::default()
        .put("target", raw(p.target))
        .opt("published", p.published.map(raw))
        .put(
            "protocol",
            string(match p.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                Protocol::Sctp => "sctp",
            }),
        )
        .put(
            "mode",
            string(match p.mode {
                PortMode::Ingress => "ingress",
                PortMode::Host => "host",
            }),
        )
        .str("host_ip", p.host_ip.as_deref())
        .str("name", p.name.as_deref())
        .str("app_protocol", p.app_protocol.as_deref())
        .done()
}

fn file_mode(mode: u32) -> Out {
    raw(format!("0{mode:o}"))
}

fn service_volume(v: &ServiceVolume) -> Out {
    let kind = match v.kind {
        VolumeKind::Volume => "volume",
        VolumeKind::Bind => "bind",
        VolumeKind::Tmpfs => "tmpfs",
        VolumeKind::Npipe => "npipe",
        VolumeKind::Cluster => "cluster",
        VolumeKind::Image => "image",
    };
    let mut f = Fields::default();
    f.put("type", string(kind)).str("source", v.source.as_deref()).put("target", string(v.target.as_str()));
    f.flag("read_only", v.read_only).str("consistency", v.consistency.as_deref());
    f.opt(
        "bind",
        v.bind.as_ref().map(|b| {
            Fields::default()
                .str("propagation", b.propagation.as_deref())
                .opt("create_host_path", b.create_host_path.map(raw))
                .str("selinux", b.selinux.as_deref())
                .done()
        }),
    );
    f.opt(
        "volume",
        v.volume
            .as_ref()
            .map(|o| Fields::default().flag("nocopy", o.nocopy).str("subpath", o.subpath.as_deref()).done()),
    );
    f.opt(
        "tmpfs",
        v.tmpfs
            .as_ref()
            .map(|t| Fields::default().opt("size", t.size.map(raw)).opt("mode", t.mode.map(file_mode)).done()),
    );
    f.done()
}

fn reference(r: &FileReference) -> Out {
    Fields::default()
        .put("source", string(r.source.as_str()))
        .str("target", r.target.as_deref())
        .str("uid", r.uid.as_deref())
        .str("gid", r.gid.as_deref())
        .opt("mode", r.mode.map(file_mode))
        .done()
}

fn network(n: &Network) -> Out {
    let mut f = Fields::default();
    f.str("name", n.name.as_deref()).flag("external", n.external).str("driver", n.driver.as_deref());
    f.map("driver_opts", &n.driver_opts).flag("attachable", n.attachable).flag("internal", n.internal);
    f.opt("enable_ipv6", n.enable_ipv6.map(raw));
    f.opt(
        "ipam",
        n.ipam.as_ref().map(|i| {
            let pools = i.config.iter().map(|p| {
                Fields::default()
                    .str("subnet", p.subnet.as_deref())
                    .str("ip_range", p.ip_range.as_deref())
                    .str("gateway", p.gateway.as_deref())
                    .map("aux_addresses", &p.aux_addresses)
                    .done()
            });
            let mut ipam = Fields::default();
            ipam.str("driver", i.driver.as_deref()).map("options", &i.options);
            if !i.config.is_empty() {
                ipam.put("config", Out::Seq(pools.collect()));
            }
            ipam.done()
        }),
    );
    f.map("labels", &n.labels).extensions(&n.extensions);
    f.done()
}

fn volume(v: &Volume) -> Out {
    Fields::default()
        .str("name", v.name.as_deref())
        .flag("external", v.external)
        .str("driver", v.driver.as_deref())
        .map("driver_opts", &v.driver_opts)
        .map("labels", &v.labels)
        .extensions(&v.extensions)
        .done()
}

fn file_object(o: &FileObject) -> Out {
    let mut f = Fields::default();
    match &o.source {
        ObjectSource::External => f.flag("external", true),
        ObjectSource::File(path) => f.put("file", string(path.to_string_lossy())),
        ObjectSource::Environment { variable, .. } => f.put("environment", string(variable.as_str())),
        ObjectSource::Content(content) => f.put("content", string(content.as_str())),
    };
    f.str("name", o.name.as_deref()).map("labels", &o.labels).str("driver", o.driver.as_deref());
    f.map("driver_opts", &o.driver_opts).str("template_driver", o.template_driver.as_deref());
    f.extensions(&o.extensions).done()
}

fn emit_map(out: &mut String, pairs: &[(String, Out)], indent: usize) {
    for (key, value) in pairs {
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar_text(key, false));
        out.push(':');
        emit_after_key(out, value, indent);
    }
}

fn emit_after_key(out: &mut String, value: &Out, indent: usize) {
    match value {
        Out::Str(s) => {
            out.push(' ');
            out.push_str(&scalar_text(&s.replace('$', "$$"), true));
            out.push('\n');
        }
        Out::Raw(s) => {
            let _ = writeln!(out, " {s}");
        }
        Out::Map(pairs) if pairs.is_empty() => out.push_str(" {}\n"),
        Out::Seq(items) if items.is_empty() => out.push_str(" []\n"),
        Out::Map(pairs) => {
            out.push('\n');
            emit_map(out, pairs, indent + 2);
        }
        Out::Seq(items) => {
            out.push('\n');
            emit_seq(out, items, indent + 2);
        }
    }
}

fn emit_seq(out: &mut String, items: &[Out], indent: usize) {
    for item in items {
        match item {
            Out::Map(pairs) if !pairs.is_empty() => {
                // Printed as a mapping two columns in, its first line's indent replaced by "- ".
                let mut nested = String::new();
                emit_map(&mut nested, pairs, indent + 2);
                out.push_str(&" ".repeat(indent));
                out.push_str("- ");
                out.push_str(&nested[indent + 2..]);
            }
            Out::Seq(items) if !items.is_empty() => {
                let mut nested = String::new();
                emit_seq(&mut nested, items, indent + 2);
                out.push_str(&" ".repeat(indent));
                out.push_str("- ");
                out.push_str(&nested[indent + 2..]);
            }
            _ => {
                out.push_str(&" ".repeat(indent));
                out.push('-');
                emit_after_key(out, item, indent);
            }
        }
    }
}

/// A string as a plain scalar when YAML reads it back as that same string, else double-quoted.
fn scalar_text(s: &str, is_value: bool) -> String {
    if is_plain_safe(s, is_value) {
        return s.to_owned();
    }
    let mut quoted = String::with_capacity(s.len() + 2);
    quoted.push('"');
    for c in s.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            '\r' => quoted.push_str("\\r"),
            c if c.is_control() || c == '\u{feff}' => {
                let _ = write!(quoted, "\\u{:04x}", u32::from(c));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

fn is_plain_safe(s: &str, is_value: bool) -> bool {
    let Some(first) = s.chars().next() else { return false };
    let safe_first = first.is_ascii_alphanumeric() || matches!(first, '_' | '/' | '.' | '$');
    let safe_rest = s.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '_' | '/'
                    | '.'
                    | '-'
                    | '+'
                    | '='
                    | ','
                    | '@'
                    | '%'
                    | '~'
                    | ':'
                    | '$'
                    | ' '
                    | '('
                    | ')'
                    | '^'
                    | ';'
                    | '<'
                    | '>'
            )
    });
    if !safe_first || !safe_rest || s.ends_with(' ') || s.ends_with(':') || s.contains(": ") || s.contains(" #") {
        return false;
    }
    // Strings YAML (1.1 or 1.2) would read as another type: null, booleans, numbers, and
    // digit-led values with colons (YAML 1.1 reads `1:20` as a base-60 number).
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "null" | "~" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | ".inf" | ".nan"
    ) || (first.is_ascii_digit() && s.contains(':'))
        || (is_value && s.starts_with('<'))
    {
        return false;
    }
    !matches!(crate::decode::value(&plain_node(s)), Value::Int(_) | Value::Float(_)) && !looks_numeric(s)
}

/// Numbers in forms the core schema check above might not catch (`1_000`, `0b1`, `1e3`).
fn looks_numeric(s: &str) -> bool {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    body.matches('.').count() <= 1
        && body.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && body
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | '_' | 'x' | 'o' | 'b' | 'e' | 'E' | '-' | '+'))
}

fn plain_node(s: &str) -> crate::yaml::Node {
    use std::path::Path;
    use std::sync::Arc;
    let mark = crate::yaml::Mark { file: Arc::from(Path::new("")), line: 0, column: 0 };
    crate::yaml::Node::plain(s, &mark)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        let cases = [
            ("nginx:1.25", "nginx:1.25"),
            ("8080:80", "\"8080:80\""),
            ("yes", "\"yes\""),
            ("0.5", "\"0.5\""),
            ("0440", "\"0440\""),
            ("1e3", "\"1e3\""),
            ("", "\"\""),
            ("a: b", "\"a: b\""),
            ("-x", "\"-x\""),
            ("*", "\"*\""),
            ("line\nnext", "\"line\\nnext\""),
            ("say \"hi\"", "\"say \\\"hi\\\"\""),
            ("node.role==manager", "node.role==manager"),
            ("CMD-SHELL", "CMD-SHELL"),
            ("curl -f http://localhost/ || exit 1", "\"curl -f http://localhost/ || exit 1\""),
            ("/run/secrets/db", "/run/secrets/db"),
            ("null", "\"null\""),
            ("trailing ", "\"trailing \""),
        ];
        for (s, want) in cases {
            assert_eq!(scalar_text(s, true), want, "{s:?}");
        }
    }

    #[test]
    fn nesting() {
        let value = Out::Map(vec![
            (
                "list".to_owned(),
                Out::Seq(vec![
                    Out::Map(vec![("a".to_owned(), raw(1)), ("b".to_owned(), Out::Seq(vec![string("x")]))]),
                    Out::Seq(vec![string("p"), string("z")]),
                    string("w"),
                    Out::Map(Vec::new()),
                ]),
            ),
            ("empty".to_owned(), Out::Seq(Vec::new())),
        ]);
        let Out::Map(pairs) = value else { return };
        let mut out = String::new();
        emit_map(&mut out, &pairs, 0);
        assert_eq!(out, "list:\n  - a: 1\n    b:\n      - x\n  - - p\n    - z\n  - w\n  - {}\nempty: []\n");
    }
}

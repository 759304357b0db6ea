//! The merged, normalised tree to the typed [`Project`]: every key checked against the format,
//! every value typed, paths resolved, references between objects checked.
//!
//! Each mapping is first checked against a [`Table`] of its keys: known keys are read, keys
//! Swarm ignores are noted for the file's warning, keys that Swarm cannot honour and whose
//! absence would change the service are refused with a hint, and anything else is an unknown
//! key with the closest known one suggested.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use crate::dotenv;
use crate::error::LoadError;
use crate::model::*;
use crate::units::{closest, parse_bytes, parse_duration, parse_nano_cpus};
use crate::yaml::{Key, Mark, Node, Style, Yaml, is_null_text};

mod tables;

use tables::*;

/// The keys of one kind of mapping.
pub(crate) struct Table {
    /// Keys the loader reads.
    pub(crate) keys: &'static [&'static str],
    /// Keys Swarm ignores: accepted with a warning.
    pub(crate) ignored: &'static [&'static str],
    /// Keys refused, with what to do instead.
    pub(crate) refused: &'static [(&'static str, &'static str)],
}

pub(crate) struct Decoder<'a> {
    pub(crate) working_dir: &'a Path,
    pub(crate) env: &'a BTreeMap<String, String>,
    /// Keys Swarm ignores, per file: dotted below the service for service keys.
    pub(crate) ignored: BTreeMap<PathBuf, BTreeSet<String>>,
}

/// A checked mapping and its dotted path, with typed getters.
struct Fields<'n> {
    pairs: &'n [(Key, Node)],
    path: String,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn invalid(node: &Node, path: &str, message: impl Into<String>) -> LoadError {
    LoadError::Invalid { location: node.mark.location(), path: path.to_owned(), message: message.into() }
}

fn expected(node: &Node, path: &str, what: &str) -> LoadError {
    invalid(node, path, format!("expected {what}, found {}", node.describe()))
}

fn scalar<'n>(node: &'n Node, path: &str, what: &str) -> Result<&'n str, LoadError> {
    match &node.value {
        Yaml::Scalar(text, _) => Ok(text),
        _ => Err(expected(node, path, what)),
    }
}

fn string(node: &Node, path: &str) -> Result<String, LoadError> {
    scalar(node, path, "a string").map(str::to_owned)
}

fn boolean(node: &Node, path: &str) -> Result<bool, LoadError> {
    match scalar(node, path, "true or false")?.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" => Ok(false),
        _ => Err(expected(node, path, "true or false")),
    }
}

fn uint(node: &Node, path: &str) -> Result<u64, LoadError> {
    scalar(node, path, "a whole number of 0 or more")?
        .trim()
        .parse()
        .map_err(|_| expected(node, path, "a whole number of 0 or more"))
}

fn int(node: &Node, path: &str) -> Result<i64, LoadError> {
    scalar(node, path, "a whole number")?.trim().parse().map_err(|_| expected(node, path, "a whole number"))
}

fn float(node: &Node, path: &str) -> Result<f64, LoadError> {
    let value: f64 = scalar(node, path, "a number")?.trim().parse().map_err(|_| expected(node, path, "a number"))?;
    if value.is_finite() { Ok(value) } else { Err(expected(node, path, "a finite number")) }
}

/// A file mode: octal when written with a leading `0` or `0o`, or quoted (as docker reads it).
fn file_mode(node: &Node, path: &str) -> Result<u32, LoadError> {
    let what = "a file mode such as 0440";
    let text = scalar(node, path, what)?.trim();
    let quoted = matches!(node.value, Yaml::Scalar(_, Style::Quoted));
    let parsed = if let Some(octal) = text.strip_prefix("0o") {
        u32::from_str_radix(octal, 8)
    } else if quoted || (text.starts_with('0') && text.len() > 1) {
        u32::from_str_radix(text, 8)
    } else {
        text.parse()
    };
    parsed.ok().filter(|mode| *mode <= 0o7777).ok_or_else(|| expected(node, path, what))
}

fn scalars(node: &Node, path: &str) -> Result<Vec<String>, LoadError> {
    match &node.value {
        Yaml::Seq(items) => items.iter().enumerate().map(|(i, item)| string(item, &format!("{path}[{i}]"))).collect(),
        Yaml::Scalar(..) if node.is_null() => Ok(Vec::new()),
        Yaml::Scalar(text, _) => Ok(vec![text.clone()]),
        Yaml::Map(_) => Err(expected(node, path, "a list of strings")),
    }
}

fn string_map(node: &Node, path: &str) -> Result<BTreeMap<String, String>, LoadError> {
    if node.is_null() {
        return Ok(BTreeMap::new());
    }
    let pairs = node.as_map().ok_or_else(|| expected(node, path, "a mapping of names to values"))?;
    pairs
        .iter()
        .map(|(key, value)| {
            let text = if value.is_null() { String::new() } else { string(value, &join(path, &key.text))? };
            Ok((key.text.clone(), text))
        })
        .collect()
}

impl<'n> Fields<'n> {
    /// The value of `key`, unless absent or null.
    fn get(&self, key: &str) -> Option<&'n Node> {
        self.pairs.iter().find(|(k, _)| k.text == key).map(|(_, v)| v).filter(|v| !v.is_null())
    }

    fn key(&self, key: &str) -> Option<&'n Key> {
        self.pairs.iter().find(|(k, _)| k.text == key).map(|(k, _)| k)
    }

    fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn with<T>(
        &self,
        key: &str,
        read: impl FnOnce(&'n Node, &str) -> Result<T, LoadError>,
    ) -> Result<Option<T>, LoadError> {
        self.get(key).map(|node| read(node, &self.path(key))).transpose()
    }

    fn string(&self, key: &str) -> Result<Option<String>, LoadError> {
        self.with(key, string)
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, LoadError> {
        self.with(key, boolean)
    }

    fn uint(&self, key: &str) -> Result<Option<u64>, LoadError> {
        self.with(key, uint)
    }

    fn int(&self, key: &str) -> Result<Option<i64>, LoadError> {
        self.with(key, int)
    }

    fn duration(&self, key: &str) -> Result<Option<std::time::Duration>, LoadError> {
        self.with(key, |node, path| {
            parse_duration(scalar(node, path, "a duration such as 10s")?).map_err(|e| invalid(node, path, e))
        })
    }

    fn bytes(&self, key: &str) -> Result<Option<u64>, LoadError> {
        self.with(key, |node, path| {
            parse_bytes(scalar(node, path, "a byte size such as 512m")?).map_err(|e| invalid(node, path, e))
        })
    }

    fn cpus(&self, key: &str) -> Result<Option<u64>, LoadError> {
        self.with(key, |node, path| {
            parse_nano_cpus(scalar(node, path, "a CPU count such as 0.5")?).map_err(|e| invalid(node, path, e))
        })
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, LoadError> {
        Ok(self.with(key, scalars)?.unwrap_or_default())
    }

    fn string_map(&self, key: &str) -> Result<BTreeMap<String, String>, LoadError> {
        Ok(self.with(key, string_map)?.unwrap_or_default())
    }

    /// One of the spellings in `choices`.
    fn choice<T: Copy>(&self, key: &str, choices: &[(&str, T)]) -> Result<Option<T>, LoadError> {
        self.with(key, |node, path| {
            let text = scalar(node, path, "a string")?;
            choices.iter().find(|(name, _)| *name == text).map(|(_, v)| *v).ok_or_else(|| {
                let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
                invalid(node, path, format!("{text:?} is not one of {}", names.join(", ")))
            })
        })
    }

    fn extensions(&self) -> BTreeMap<String, Value> {
        self.pairs.iter().filter(|(k, _)| k.text.starts_with("x-")).map(|(k, v)| (k.text.clone(), value(v))).collect()
    }
}

/// An `x-` value by YAML's core schema.
pub(crate) fn value(node: &Node) -> Value {
    match &node.value {
        Yaml::Scalar(text, Style::Quoted) => Value::String(text.clone()),
        Yaml::Scalar(text, Style::Plain) => plain_value(text),
        Yaml::Seq(items) => Value::Seq(items.iter().map(value).collect()),
        Yaml::Map(pairs) => Value::Map(pairs.iter().map(|(k, v)| (k.text.clone(), value(v))).collect()),
    }
}

fn plain_value(text: &str) -> Value {
    if is_null_text(text) {
        return Value::Null;
    }
    match text {
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(n) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(n);
    }
    if let Some(octal) = text.strip_prefix("0o")
        && let Ok(n) = i64::from_str_radix(octal, 8)
    {
        return Value::Int(n);
    }
    let numeric = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !numeric.is_empty()
        && numeric.chars().all(|c| c.is_ascii_digit())
        && let Ok(n) = text.parse()
    {
        return Value::Int(n);
    }
    let float_like = numeric.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && numeric.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        && numeric.chars().any(|c| c.is_ascii_digit());
    if float_like && let Ok(f) = text.parse() {
        return Value::Float(f);
    }
    Value::String(text.to_owned())
}

/// Joins `path` to `base` unless absolute, and drops `.` and resolvable `..` components.
pub(crate) fn resolve(base: &Path, path: &str, home: Option<&str>) -> PathBuf {
    let expanded = match (path.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => format!("{home}{rest}"),
        _ => path.to_owned(),
    };
    let joined = base.join(expanded);
    let mut out = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.components().next_back(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

impl Decoder<'_> {
    /// Checks the keys of a mapping (null is an empty mapping) and returns its fields.
    /// `scope` is how ignored keys are named in the warning (`""` for a service's own keys).
    fn fields<'n>(&mut self, node: &'n Node, path: &str, scope: &str, table: &Table) -> Result<Fields<'n>, LoadError> {
        let pairs: &'n [(Key, Node)] = match &node.value {
            Yaml::Map(pairs) => pairs,
            _ if node.is_null() => &[],
            _ => return Err(expected(node, path, "a mapping")),
        };
        for (key, _) in pairs {
            let k = key.text.as_str();
            if k.starts_with("x-") || table.keys.contains(&k) {
                continue;
            }
            if table.ignored.contains(&k) {
                self.ignored.entry(key.mark.file.to_path_buf()).or_default().insert(join(scope, k));
                continue;
            }
            let context = if path.is_empty() { "the top-level mapping".to_owned() } else { path.to_owned() };
            if let Some((_, hint)) = table.refused.iter().find(|(name, _)| *name == k) {
                return Err(LoadError::Unsupported {
                    location: key.mark.location(),
                    key: k.to_owned(),
                    context,
                    hint: (*hint).to_owned(),
                });
            }
            let candidates =
                table.keys.iter().chain(table.ignored).chain(table.refused.iter().map(|(name, _)| name)).copied();
            return Err(LoadError::UnknownKey {
                location: key.mark.location(),
                key: k.to_owned(),
                context,
                suggestion: closest(k, candidates).map(str::to_owned),
            });
        }
        Ok(Fields { pairs, path: path.to_owned() })
    }

    fn home(&self) -> Option<&str> {
        self.env.get("HOME").map(String::as_str)
    }

    pub(crate) fn project(&mut self, root: &Node) -> Result<(Project, BTreeMap<String, Mark>), LoadError> {
        let top = self.fields(root, "", "", &TOP)?;
        top.with("version", |node, path| scalar(node, path, "a version string such as \"3.8\"").map(|_| ()))?;
        let name = top.string("name")?;
        if let (Some(name), Some(node)) = (&name, top.get("name")) {
            let valid = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
            if !valid {
                return Err(invalid(
                    node,
                    "name",
                    format!(
                        "{name:?} is not a valid project name: use lower-case letters, digits, `-` and `_`, starting with a letter or digit"
                    ),
                ));
            }
        }
        let mut project = Project {
            name,
            working_dir: self.working_dir.to_path_buf(),
            extensions: top.extensions(),
            ..Project::default()
        };
        project.networks = self.objects(&top, "networks", Self::network)?;
        project.volumes = self.objects(&top, "volumes", Self::volume)?;
        project.secrets = self.objects(&top, "secrets", |d, node, path| d.file_object(node, path, &SECRET))?;
        project.configs = self.objects(&top, "configs", |d, node, path| d.file_object(node, path, &CONFIG))?;

        let mut depends_marks = BTreeMap::new();
        if let Some(services) = top.get("services") {
            let pairs = services
                .as_map()
                .ok_or_else(|| expected(services, "services", "a mapping of service names to services"))?;
            let names: BTreeSet<&str> = pairs.iter().map(|(k, _)| k.text.as_str()).collect();
            for (key, node) in pairs {
                let path = join("services", &key.text);
                check_name(key, "service")?;
                let service = self.service(key, node, &path, &names, &project)?;
                if let Some(k) =
                    node.as_map().and_then(|m| m.iter().find(|(k, _)| k.text == "depends_on")).map(|(k, _)| k)
                {
                    depends_marks.insert(key.text.clone(), k.mark.clone());
                }
                project.services.insert(key.text.clone(), service);
            }
        }
        // A service on no network is on `default`, which exists unless the file defines it.
        let uses_default = project.services.values_mut().fold(false, |uses, service| {
            if service.networks.is_empty() {
                service.networks.insert("default".to_owned(), ServiceNetwork::default());
            }
            uses || service.networks.contains_key("default")
        });
        if uses_default {
            project.networks.entry("default".to_owned()).or_default();
        }
        Ok((project, depends_marks))
    }

    /// Reads a top-level section of named objects.
    fn objects<T>(
        &mut self,
        top: &Fields<'_>,
        section: &str,
        mut read: impl FnMut(&mut Self, &Node, &str) -> Result<T, LoadError>,
    ) -> Result<BTreeMap<String, T>, LoadError> {
        let mut out = BTreeMap::new();
        let Some(node) = top.get(section) else { return Ok(out) };
        let pairs = node.as_map().ok_or_else(|| expected(node, section, "a mapping of names"))?;
        for (key, value) in pairs {
            check_name(key, section.trim_end_matches('s'))?;
            out.insert(key.text.clone(), read(self, value, &join(section, &key.text))?);
        }
        Ok(out)
    }

    fn network(&mut self, node: &Node, path: &str) -> Result<Network, LoadError> {
        let f = self.fields(node, path, path, &NETWORK)?;
        let ipam = match f.get("ipam") {
            None => None,
            Some(node) => {
                let path = f.path("ipam");
                let ipam = self.fields(node, &path, &path, &IPAM)?;
                let mut config = Vec::new();
                if let Some(pools) = ipam.get("config") {
                    let items =
                        pools.as_seq().ok_or_else(|| expected(pools, &ipam.path("config"), "a list of pools"))?;
                    for (i, item) in items.iter().enumerate() {
                        let path = format!("{}[{i}]", ipam.path("config"));
                        let pool = self.fields(item, &path, &path, &IPAM_POOL)?;
                        config.push(IpamPool {
                            subnet: pool.string("subnet")?,
                            ip_range: pool.string("ip_range")?,
                            gateway: pool.string("gateway")?,
                            aux_addresses: pool.string_map("aux_addresses")?,
                        });
                    }
                }
                Some(Ipam { driver: ipam.string("driver")?, config, options: ipam.string_map("options")? })
            }
        };
        let network = Network {
            name: f.string("name")?,
            external: f.bool("external")?.unwrap_or(false),
            driver: f.string("driver")?,
            driver_opts: f.string_map("driver_opts")?,
            attachable: f.bool("attachable")?.unwrap_or(false),
            internal: f.bool("internal")?.unwrap_or(false),
            enable_ipv6: f.bool("enable_ipv6")?,
            ipam,
            labels: f.string_map("labels")?,
            extensions: f.extensions(),
        };
        if network.external {
            external_conflicts(
                &f,
                &["driver", "driver_opts", "ipam", "internal", "attachable", "labels", "enable_ipv6"],
            )?;
        }
        Ok(network)
    }

    fn volume(&mut self, node: &Node, path: &str) -> Result<Volume, LoadError> {
        let f = self.fields(node, path, path, &VOLUME)?;
        let volume = Volume {
            name: f.string("name")?,
            external: f.bool("external")?.unwrap_or(false),
            driver: f.string("driver")?,
            driver_opts: f.string_map("driver_opts")?,
            labels: f.string_map("labels")?,
            extensions: f.extensions(),
        };
        if volume.external {
            external_conflicts(&f, &["driver", "driver_opts", "labels"])?;
        }
        Ok(volume)
    }

    fn file_object(&mut self, node: &Node, path: &str, table: &Table) -> Result<FileObject, LoadError> {
        let f = self.fields(node, path, path, table)?;
        let mut sources = Vec::new();
        if let Some(file) = f.string("file")? {
            sources.push(ObjectSource::File(resolve(self.working_dir, &file, self.home())));
        }
        if let Some(variable) = f.string("environment")? {
            let Some(value) = self.env.get(&variable) else {
                let at = f.get("environment").unwrap_or(node);
                return Err(invalid(
                    at,
                    &f.path("environment"),
                    format!("the environment variable {variable} is not set"),
                ));
            };
            sources.push(ObjectSource::Environment { variable, value: value.clone() });
        }
        if let Some(content) = f.string("content")? {
            sources.push(ObjectSource::Content(content));
        }
        if f.bool("external")?.unwrap_or(false) {
            sources.push(ObjectSource::External);
        }
        let kinds = if table.keys.contains(&"content") {
            "file, environment, content or external"
        } else {
            "file, environment or external"
        };
        let source = match sources.len() {
            1 => sources.remove(0),
            0 => return Err(invalid(node, path, format!("needs one of {kinds}"))),
            _ => return Err(invalid(node, path, format!("takes only one of {kinds}"))),
        };
        Ok(FileObject {
            name: f.string("name")?,
            source,
            labels: f.string_map("labels")?,
            driver: f.string("driver")?,
            driver_opts: f.string_map("driver_opts")?,
            template_driver: f.string("template_driver")?,
            extensions: f.extensions(),
        })
    }

    fn service(
        &mut self,
        key: &Key,
        node: &Node,
        path: &str,
        names: &BTreeSet<&str>,
        project: &Project,
    ) -> Result<Service, LoadError> {
        let name = key.text.as_str();
        let f = self.fields(node, path, "", &SERVICE)?;
        let image = match f.string("image")? {
            Some(image) if !image.trim().is_empty() => image,
            _ => {
                if let Some(build) = f.key("build") {
                    return Err(LoadError::BuildWithoutImage {
                        location: build.mark.location(),
                        service: name.to_owned(),
                    });
                }
                let (location, path) = match f.get("image") {
                    Some(image) => (image.mark.location(), f.path("image")),
                    None => (key.mark.location(), path.to_owned()),
                };
                let message = "the service has no `image:`: add one naming the image to run".to_owned();
                return Err(LoadError::Invalid { location, path, message });
            }
        };
        let mut deploy = match f.get("deploy") {
            Some(node) => self.deploy(node, &f.path("deploy"))?,
            None => Deploy::default(),
        };
        if deploy.restart_policy.is_none()
            && let Some(restart) = f.get("restart")
        {
            deploy.restart_policy = restart_fallback(restart, &f.path("restart"))?;
        }
        if deploy.replicas.is_none() && matches!(deploy.mode, Mode::Replicated | Mode::ReplicatedJob) {
            deploy.replicas = f.uint("scale")?;
        }
        let mut environment = BTreeMap::new();
        let mut env_file = Vec::new();
        if let Some(files) = f.get("env_file") {
            let items =
                files.as_seq().ok_or_else(|| expected(files, &f.path("env_file"), "a file name or a list of them"))?;
            for (i, item) in items.iter().enumerate() {
                let path = format!("{}[{i}]", f.path("env_file"));
                let (file, entries) = self.env_file(item, &path)?;
                env_file.push(file);
                environment.extend(entries);
            }
        }
        if let Some(env) = f.get("environment") {
            let path = f.path("environment");
            let pairs = env.as_map().ok_or_else(|| expected(env, &path, "a mapping or a list of KEY=VALUE"))?;
            for (key, value) in pairs {
                let value = if value.is_null() {
                    self.env.get(&key.text).cloned()
                } else {
                    Some(string(value, &join(&path, &key.text))?)
                };
                environment.insert(key.text.clone(), value);
            }
        }
        let mut ulimits = BTreeMap::new();
        if let Some(node) = f.get("ulimits") {
            let path = f.path("ulimits");
            let pairs = node.as_map().ok_or_else(|| expected(node, &path, "a mapping of limit names"))?;
            for (key, value) in pairs {
                let path = join(&path, &key.text);
                let limit = self.fields(value, &path, &join("ulimits", &key.text), &ULIMIT)?;
                let (Some(soft), Some(hard)) = (limit.int("soft")?, limit.int("hard")?) else {
                    return Err(invalid(value, &path, "needs both `soft` and `hard` (or a single number for both)"));
                };
                if soft > hard {
                    return Err(invalid(value, &path, format!("the soft limit {soft} is above the hard limit {hard}")));
                }
                ulimits.insert(key.text.clone(), Ulimit { soft, hard });
            }
        }
        let healthcheck =
            f.get("healthcheck").map(|node| self.healthcheck(node, &f.path("healthcheck"))).transpose()?;
        let logging = match f.get("logging") {
            Some(node) => {
                let path = f.path("logging");
                let logging = self.fields(node, &path, "logging", &LOGGING)?;
                Some(Logging { driver: logging.string("driver")?, options: logging.string_map("options")? })
            }
            None => None,
        };
        let platform = f.string("platform")?;
        if let (Some(platform), Some(node)) = (&platform, f.get("platform")) {
            let parts: Vec<&str> = platform.split('/').collect();
            if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
                return Err(invalid(
                    node,
                    &f.path("platform"),
                    format!("{platform:?} is not a platform (expected os[/arch[/variant]], such as linux/amd64)"),
                ));
            }
        }
        let command = f.with("command", scalars)?;
        let entrypoint = f.with("entrypoint", scalars)?;
        Ok(Service {
            image,
            command,
            entrypoint,
            environment,
            env_file,
            labels: f.string_map("labels")?,
            user: f.string("user")?,
            working_dir: f.string("working_dir")?,
            hostname: f.string("hostname")?,
            stop_grace_period: f.duration("stop_grace_period")?,
            stop_signal: f.string("stop_signal")?,
            read_only: f.bool("read_only")?.unwrap_or(false),
            init: f.bool("init")?,
            tty: f.bool("tty")?.unwrap_or(false),
            stdin_open: f.bool("stdin_open")?.unwrap_or(false),
            cap_add: f.strings("cap_add")?,
            cap_drop: f.strings("cap_drop")?,
            sysctls: f.string_map("sysctls")?,
            ulimits,
            dns: f.strings("dns")?,
            dns_search: f.strings("dns_search")?,
            dns_opt: f.strings("dns_opt")?,
            extra_hosts: f.string_map("extra_hosts")?,
            group_add: f.strings("group_add")?,
            tmpfs: f.strings("tmpfs")?,
            healthcheck,
            deploy,
            ports: self.list(&f, "ports", Self::port)?,
            volumes: self.list(&f, "volumes", |d, node, path| d.service_volume(node, path, name, project))?,
            secrets: self
                .list(&f, "secrets", |d, node, path| d.reference(node, path, name, "secret", &project.secrets))?,
            configs: self
                .list(&f, "configs", |d, node, path| d.reference(node, path, name, "config", &project.configs))?,
            networks: self.service_networks(&f, name, project)?,
            depends_on: self.depends_on(&f, name, names)?,
            platform,
            logging,
            extensions: f.extensions(),
        })
    }

    /// Reads a list whose items `read` types.
    fn list<T>(
        &mut self,
        f: &Fields<'_>,
        key: &str,
        mut read: impl FnMut(&mut Self, &Node, &str) -> Result<T, LoadError>,
    ) -> Result<Vec<T>, LoadError> {
        let Some(node) = f.get(key) else { return Ok(Vec::new()) };
        let path = f.path(key);
        let items = node.as_seq().ok_or_else(|| expected(node, &path, "a list"))?;
        items.iter().enumerate().map(|(i, item)| read(self, item, &format!("{path}[{i}]"))).collect()
    }

    fn env_file(&mut self, node: &Node, path: &str) -> Result<(EnvFile, dotenv::Entries), LoadError> {
        let f = self.fields(node, path, "env_file", &ENV_FILE)?;
        let Some(name) = f.string("path")? else {
            return Err(invalid(node, path, "needs `path`"));
        };
        let raw = match f.string("format")?.as_deref() {
            None => false,
            Some("raw") => true,
            Some(other) => {
                return Err(invalid(
                    f.get("format").unwrap_or(node),
                    &f.path("format"),
                    format!("{other:?} is not a known format (raw)"),
                ));
            }
        };
        let file = EnvFile {
            path: resolve(self.working_dir, &name, self.home()),
            required: f.bool("required")?.unwrap_or(true),
        };
        let entries = match std::fs::read_to_string(&file.path) {
            Ok(text) => dotenv::parse(&file.path, &text, self.env, raw)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !file.required => Vec::new(),
            Err(source) => return Err(LoadError::EnvFile { location: node.mark.location(), path: file.path, source }),
        };
        Ok((file, entries))
    }

    fn healthcheck(&mut self, node: &Node, path: &str) -> Result<Healthcheck, LoadError> {
        let f = self.fields(node, path, "healthcheck", &HEALTHCHECK)?;
        let mut test = f.strings("test")?;
        if f.bool("disable")?.unwrap_or(false) {
            if !test.is_empty() && test != ["NONE"] {
                return Err(invalid(node, path, "`disable: true` and a `test` cannot be used together"));
            }
            test = vec!["NONE".to_owned()];
        }
        if let (Some(first), Some(at)) = (test.first(), f.get("test"))
            && !matches!(first.as_str(), "NONE" | "CMD" | "CMD-SHELL")
        {
            return Err(invalid(
                at,
                &f.path("test"),
                format!("a test list starts with CMD, CMD-SHELL or NONE, not {first:?}"),
            ));
        }
        Ok(Healthcheck {
            test,
            interval: f.duration("interval")?,
            timeout: f.duration("timeout")?,
            retries: f.uint("retries")?,
            start_period: f.duration("start_period")?,
            start_interval: f.duration("start_interval")?,
        })
    }

    fn deploy(&mut self, node: &Node, path: &str) -> Result<Deploy, LoadError> {
        let f = self.fields(node, path, "deploy", &DEPLOY)?;
        let mode = f
            .choice(
                "mode",
                &[
                    ("replicated", Mode::Replicated),
                    ("global", Mode::Global),
                    ("replicated-job", Mode::ReplicatedJob),
                    ("global-job", Mode::GlobalJob),
                ],
            )?
            .unwrap_or_default();
        let replicas = f.uint("replicas")?;
        if let (Some(_), Mode::Global | Mode::GlobalJob, Some(at)) = (replicas, mode, f.get("replicas")) {
            return Err(invalid(
                at,
                &f.path("replicas"),
                "`replicas` applies to replicated services and jobs, not global ones",
            ));
        }
        let resources = match f.get("resources") {
            None => Resources::default(),
            Some(node) => {
                let path = f.path("resources");
                let r = self.fields(node, &path, "deploy.resources", &RESOURCES)?;
                let limits = match r.get("limits") {
                    None => None,
                    Some(node) => {
                        let l = self.fields(node, &r.path("limits"), "deploy.resources.limits", &LIMITS)?;
                        Some(Limits {
                            nano_cpus: l.cpus("cpus")?,
                            memory_bytes: l.bytes("memory")?,
                            pids: l.int("pids")?,
                        })
                    }
                };
                let reservations = match r.get("reservations") {
                    None => None,
                    Some(node) => {
                        let rv =
                            self.fields(node, &r.path("reservations"), "deploy.resources.reservations", &RESERVATIONS)?;
                        let generic_resources = self.list(&rv, "generic_resources", |d, node, path| {
                            let g = d.fields(
                                node,
                                path,
                                "deploy.resources.reservations.generic_resources",
                                &GENERIC_RESOURCE,
                            )?;
                            let Some(spec) = g.get("discrete_resource_spec") else {
                                return Err(invalid(
                                    node,
                                    path,
                                    "needs `discrete_resource_spec` with `kind` and `value`",
                                ));
                            };
                            let path = g.path("discrete_resource_spec");
                            let s = d.fields(
                                spec,
                                &path,
                                "deploy.resources.reservations.generic_resources",
                                &DISCRETE_RESOURCE,
                            )?;
                            match (s.string("kind")?, s.int("value")?) {
                                (Some(kind), Some(value)) => Ok((kind, value)),
                                _ => Err(invalid(spec, &path, "needs `kind` and `value`")),
                            }
                        })?;
                        Some(Reservations {
                            nano_cpus: rv.cpus("cpus")?,
                            memory_bytes: rv.bytes("memory")?,
                            generic_resources: generic_resources.into_iter().collect(),
                        })
                    }
                };
                Resources { limits, reservations }
            }
        };
        let restart_policy = match f.get("restart_policy") {
            None => None,
            Some(node) => {
                let r = self.fields(node, &f.path("restart_policy"), "deploy.restart_policy", &RESTART_POLICY)?;
                Some(RestartPolicy {
                    condition: r.choice(
                        "condition",
                        &[
                            ("none", RestartCondition::None),
                            ("on-failure", RestartCondition::OnFailure),
                            ("any", RestartCondition::Any),
                        ],
                    )?,
                    delay: r.duration("delay")?,
                    max_attempts: r.uint("max_attempts")?,
                    window: r.duration("window")?,
                })
            }
        };
        let placement = match f.get("placement") {
            None => Placement::default(),
            Some(node) => {
                let p = self.fields(node, &f.path("placement"), "deploy.placement", &PLACEMENT)?;
                let preferences = self.list(&p, "preferences", |d, node, path| {
                    let pref = d.fields(node, path, "deploy.placement.preferences", &PREFERENCE)?;
                    pref.string("spread")?
                        .ok_or_else(|| invalid(node, path, "needs `spread` with a label such as node.labels.zone"))
                })?;
                Placement {
                    constraints: p.strings("constraints")?,
                    preferences,
                    max_replicas_per_node: p.uint("max_replicas_per_node")?,
                }
            }
        };
        Ok(Deploy {
            mode,
            replicas,
            labels: f.string_map("labels")?,
            resources,
            restart_policy,
            update_config: self.update_config(&f, "update_config")?,
            rollback_config: self.update_config(&f, "rollback_config")?,
            placement,
            endpoint_mode: f.choice("endpoint_mode", &[("vip", EndpointMode::Vip), ("dnsrr", EndpointMode::Dnsrr)])?,
        })
    }

    fn update_config(&mut self, f: &Fields<'_>, key: &str) -> Result<Option<UpdateConfig>, LoadError> {
        let Some(node) = f.get(key) else { return Ok(None) };
        let path = f.path(key);
        let u = self.fields(node, &path, &join("deploy", key), &UPDATE_CONFIG)?;
        let max_failure_ratio = u.with("max_failure_ratio", float)?;
        if let (Some(ratio), Some(at)) = (max_failure_ratio, u.get("max_failure_ratio"))
            && !(0.0..=1.0).contains(&ratio)
        {
            return Err(invalid(at, &u.path("max_failure_ratio"), format!("{ratio} is not between 0 and 1")));
        }
        Ok(Some(UpdateConfig {
            parallelism: u.uint("parallelism")?,
            delay: u.duration("delay")?,
            failure_action: u.choice(
                "failure_action",
                &[
                    ("continue", FailureAction::Continue),
                    ("rollback", FailureAction::Rollback),
                    ("pause", FailureAction::Pause),
                ],
            )?,
            monitor: u.duration("monitor")?,
            max_failure_ratio,
            order: u
                .choice("order", &[("stop-first", UpdateOrder::StopFirst), ("start-first", UpdateOrder::StartFirst)])?,
        }))
    }

    fn port(&mut self, node: &Node, path: &str) -> Result<Port, LoadError> {
        let f = self.fields(node, path, "ports", &PORT)?;
        let port = |key: &str| {
            f.with(key, |node, path| {
                let text = scalar(node, path, "a port number")?;
                text.trim().parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    if text.contains('-') {
                        invalid(
                            node,
                            path,
                            format!(
                                "{text:?}: port ranges are only supported in the short syntax (\"8000-8001:80-81\")"
                            ),
                        )
                    } else {
                        expected(node, path, "a port number from 1 to 65535")
                    }
                })
            })
        };
        let Some(target) = port("target")? else {
            return Err(invalid(node, path, "needs `target`, the port inside the container"));
        };
        Ok(Port {
            target,
            published: port("published")?,
            protocol: f
                .choice("protocol", &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp), ("sctp", Protocol::Sctp)])?
                .unwrap_or_default(),
            mode: f.choice("mode", &[("ingress", PortMode::Ingress), ("host", PortMode::Host)])?.unwrap_or_default(),
            host_ip: f.string("host_ip")?,
            name: f.string("name")?,
            app_protocol: f.string("app_protocol")?,
        })
    }

    fn service_volume(
        &mut self,
        node: &Node,
        path: &str,
        service: &str,
        project: &Project,
    ) -> Result<ServiceVolume, LoadError> {
        let f = self.fields(node, path, "volumes", &SERVICE_VOLUME)?;
        let kind = f.choice(
            "type",
            &[
                ("volume", VolumeKind::Volume),
                ("bind", VolumeKind::Bind),
                ("tmpfs", VolumeKind::Tmpfs),
                ("npipe", VolumeKind::Npipe),
                ("cluster", VolumeKind::Cluster),
                ("image", VolumeKind::Image),
            ],
        )?;
        let Some(kind) = kind else {
            return Err(invalid(node, path, "needs `type` (volume, bind or tmpfs)"));
        };
        let Some(target) = f.string("target")? else {
            return Err(invalid(node, path, "needs `target`, the path in the container"));
        };
        let target_node = f.get("target").unwrap_or(node);
        let windows_drive = target.chars().nth(1) == Some(':');
        if !target.starts_with('/') && !windows_drive {
            return Err(invalid(
                target_node,
                &f.path("target"),
                format!("{target:?} is not an absolute path in the container"),
            ));
        }
        let mut source = f.string("source")?.filter(|s| !s.is_empty());
        let source_node = f.get("source").unwrap_or(node);
        match kind {
            VolumeKind::Bind => match &source {
                None => return Err(invalid(node, path, "a bind mount needs `source`, the path on the host")),
                Some(s) => source = Some(resolve(self.working_dir, s, self.home()).to_string_lossy().into_owned()),
            },
            VolumeKind::Volume => {
                if let Some(name) = &source
                    && !project.volumes.contains_key(name)
                {
                    return Err(LoadError::UndefinedReference {
                        location: source_node.mark.location(),
                        service: service.to_owned(),
                        kind: "volume",
                        name: name.clone(),
                        hint: format!(": add it under the top-level `volumes:` (or use ./{name} for a host path)"),
                    });
                }
            }
            VolumeKind::Tmpfs => {
                if source.is_some() {
                    return Err(invalid(source_node, &f.path("source"), "a tmpfs mount has no source"));
                }
            }
            VolumeKind::Npipe | VolumeKind::Cluster | VolumeKind::Image => {}
        }
        let bind = match f.get("bind") {
            None => None,
            Some(node) => {
                let b = self.fields(node, &f.path("bind"), "volumes.bind", &BIND)?;
                Some(BindOptions {
                    propagation: b
                        .choice(
                            "propagation",
                            &[
                                ("private", "private"),
                                ("rprivate", "rprivate"),
                                ("shared", "shared"),
                                ("rshared", "rshared"),
                                ("slave", "slave"),
                                ("rslave", "rslave"),
                            ],
                        )?
                        .map(str::to_owned),
                    create_host_path: b.bool("create_host_path")?,
                    selinux: b.choice("selinux", &[("z", "z"), ("Z", "Z")])?.map(str::to_owned),
                })
            }
        };
        let volume = match f.get("volume") {
            None => None,
            Some(node) => {
                let v = self.fields(node, &f.path("volume"), "volumes.volume", &VOLUME_OPTIONS)?;
                Some(VolumeOptions { nocopy: v.bool("nocopy")?.unwrap_or(false), subpath: v.string("subpath")? })
            }
        };
        let tmpfs = match f.get("tmpfs") {
            None => None,
            Some(node) => {
                let t = self.fields(node, &f.path("tmpfs"), "volumes.tmpfs", &TMPFS)?;
                Some(TmpfsOptions { size: t.bytes("size")?, mode: t.with("mode", file_mode)? })
            }
        };
        for (options, name, fits) in [
            (bind.is_some(), "bind", kind == VolumeKind::Bind),
            (volume.is_some(), "volume", kind == VolumeKind::Volume),
            (tmpfs.is_some(), "tmpfs", kind == VolumeKind::Tmpfs),
        ] {
            if options && !fits {
                let at = f.get(name).unwrap_or(node);
                return Err(invalid(at, &f.path(name), format!("`{name}` options need `type: {name}`")));
            }
        }
        Ok(ServiceVolume {
            kind,
            source,
            target,
            read_only: f.bool("read_only")?.unwrap_or(false),
            consistency: f.string("consistency")?,
            bind,
            volume,
            tmpfs,
        })
    }

    fn reference(
        &mut self,
        node: &Node,
        path: &str,
        service: &str,
        kind: &'static str,
        defined: &BTreeMap<String, FileObject>,
    ) -> Result<FileReference, LoadError> {
        let f = self.fields(node, path, &format!("{kind}s"), &FILE_REFERENCE)?;
        let Some(source) = f.string("source")? else {
            return Err(invalid(node, path, format!("needs `source`, the name of a top-level {kind}")));
        };
        if !defined.contains_key(&source) {
            return Err(LoadError::UndefinedReference {
                location: f.get("source").unwrap_or(node).mark.location(),
                service: service.to_owned(),
                kind,
                name: source,
                hint: format!(": add it under the top-level `{kind}s:`"),
            });
        }
        Ok(FileReference {
            source,
            target: f.string("target")?,
            uid: f.string("uid")?,
            gid: f.string("gid")?,
            mode: f.with("mode", file_mode)?,
        })
    }

    fn service_networks(
        &mut self,
        f: &Fields<'_>,
        service: &str,
        project: &Project,
    ) -> Result<BTreeMap<String, ServiceNetwork>, LoadError> {
        let mut out = BTreeMap::new();
        let Some(node) = f.get("networks") else { return Ok(out) };
        let path = f.path("networks");
        let pairs = node.as_map().ok_or_else(|| expected(node, &path, "a list of network names or a mapping"))?;
        for (key, value) in pairs {
            if key.text != "default" && !project.networks.contains_key(&key.text) {
                return Err(LoadError::UndefinedReference {
                    location: key.mark.location(),
                    service: service.to_owned(),
                    kind: "network",
                    name: key.text.clone(),
                    hint: ": add it under the top-level `networks:`".to_owned(),
                });
            }
            let path = join(&path, &key.text);
            let n = self.fields(value, &path, "networks", &SERVICE_NETWORK)?;
            out.insert(
                key.text.clone(),
                ServiceNetwork {
                    aliases: n.strings("aliases")?,
                    ipv4_address: n.string("ipv4_address")?,
                    ipv6_address: n.string("ipv6_address")?,
                    driver_opts: n.string_map("driver_opts")?,
                },
            );
        }
        Ok(out)
    }

    fn depends_on(
        &mut self,
        f: &Fields<'_>,
        service: &str,
        names: &BTreeSet<&str>,
    ) -> Result<BTreeMap<String, Dependency>, LoadError> {
        let mut out = BTreeMap::new();
        let Some(node) = f.get("depends_on") else { return Ok(out) };
        let path = f.path("depends_on");
        let pairs = node.as_map().ok_or_else(|| expected(node, &path, "a list of service names or a mapping"))?;
        for (key, value) in pairs {
            let path = join(&path, &key.text);
            let d = self.fields(value, &path, "depends_on", &DEPENDENCY)?;
            let dependency = Dependency {
                condition: d
                    .choice(
                        "condition",
                        &[
                            ("service_started", Condition::Started),
                            ("service_healthy", Condition::Healthy),
                            ("service_completed_successfully", Condition::CompletedSuccessfully),
                        ],
                    )?
                    .unwrap_or_default(),
                restart: d.bool("restart")?.unwrap_or(false),
                required: d.bool("required")?.unwrap_or(true),
            };
            if key.text == service {
                return Err(LoadError::DependencyCycle {
                    location: key.mark.location(),
                    cycle: vec![service.to_owned(), service.to_owned()],
                });
            }
            if !names.contains(key.text.as_str()) {
                if dependency.required {
                    return Err(LoadError::UndefinedReference {
                        location: key.mark.location(),
                        service: service.to_owned(),
                        kind: "service",
                        name: key.text.clone(),
                        hint: String::new(),
                    });
                }
                continue;
            }
            out.insert(key.text.clone(), dependency);
        }
        Ok(out)
    }
}

fn check_name(key: &Key, kind: &str) -> Result<(), LoadError> {
    let valid = key.text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && key.text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(LoadError::Invalid {
            location: key.mark.location(),
            path: key.text.clone(),
            message: format!(
                "{:?} is not a valid {kind} name: use letters, digits, `_`, `.` and `-`, starting with a letter or digit",
                key.text
            ),
        })
    }
}

/// An external object is only looked up: settings for creating it mean a mistake.
fn external_conflicts(f: &Fields<'_>, keys: &[&str]) -> Result<(), LoadError> {
    for key in keys {
        if let Some(k) = f.key(key) {
            return Err(LoadError::Invalid {
                location: k.mark.location(),
                path: f.path(key),
                message: format!(
                    "`{key}` cannot be set on an external object: it is created elsewhere, not by the stack"
                ),
            });
        }
    }
    Ok(())
}

/// `restart:` as the restart policy, as `docker stack deploy` reads it.
fn restart_fallback(node: &Node, path: &str) -> Result<Option<RestartPolicy>, LoadError> {
    let text = scalar(node, path, "no, always, on-failure[:N] or unless-stopped")?;
    let condition = |condition| Some(RestartPolicy { condition: Some(condition), ..RestartPolicy::default() });
    match text.split_once(':') {
        None => match text {
            "no" | "false" => Ok(condition(RestartCondition::None)),
            "always" | "unless-stopped" => Ok(condition(RestartCondition::Any)),
            "on-failure" => Ok(condition(RestartCondition::OnFailure)),
            _ => Err(invalid(node, path, format!("{text:?} is not no, always, on-failure[:N] or unless-stopped"))),
        },
        Some(("on-failure", count)) => {
            let max_attempts =
                count.parse().map_err(|_| invalid(node, path, format!("{count:?} is not a number of attempts")))?;
            Ok(Some(RestartPolicy {
                condition: Some(RestartCondition::OnFailure),
                max_attempts: Some(max_attempts),
                ..RestartPolicy::default()
            }))
        }
        Some(_) => Err(invalid(node, path, format!("{text:?} is not no, always, on-failure[:N] or unless-stopped"))),
    }
}

//! The list flags of a task's container beyond the basics, as docker's `service create` and
//! `service update` take them: secrets and configs, capabilities, sysctls, ulimits, DNS, extra
//! hosts and groups (`create` sets them, `update` adds and removes), and `--env-file`. The
//! parsers are pure; the manager checks the spec again when it stores it.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::Args;
use shoal_api::v1;

use super::refs::{check_targets, edit_refs, parse_config, parse_secret};
use super::{edit_list, edit_map, missing};

/// Resource limits docker's `--ulimit` knows: the manager's list, so both refuse the same.
pub(super) use shoal_manager::ULIMITS;

/// `--cap-add`/`--cap-drop`: a capability as the spec stores it, upper case without `CAP_`
/// (`net_admin` and `CAP_NET_ADMIN` are `NET_ADMIN`; `ALL` is every one).
pub(crate) fn parse_capability(text: &str) -> Result<String, String> {
    let upper = text.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("invalid capability {text:?}: expected a name such as NET_ADMIN, SYS_PTRACE or ALL"));
    }
    Ok(name.to_owned())
}

/// Applies `--cap-add` and `--cap-drop` to the lists as docker's `updateCapabilities`: adding
/// wins over dropping the same capability; what is added leaves the drop list and what is
/// dropped leaves the add list; the lists come out sorted without duplicates, and a list with
/// `ALL` holds nothing else. No flag given: the lists stay exactly as they are (a reordering
/// would count as a change and replace every task).
pub(crate) fn edit_capabilities(
    add_list: &mut Vec<String>,
    drop_list: &mut Vec<String>,
    add: &[String],
    drop: &[String],
) {
    if add.is_empty() && drop.is_empty() {
        return;
    }
    let normal = |cap: &String| {
        let upper = cap.trim().to_ascii_uppercase();
        upper.strip_prefix("CAP_").map_or_else(|| upper.clone(), str::to_owned)
    };
    let add: BTreeSet<String> = add.iter().map(normal).collect();
    let drop: BTreeSet<String> = drop.iter().map(normal).filter(|cap| !add.contains(cap)).collect();
    let mut new_add: BTreeSet<String> =
        add_list.iter().map(normal).filter(|cap| !drop.contains(cap)).chain(add.iter().cloned()).collect();
    let mut new_drop: BTreeSet<String> =
        drop_list.iter().map(normal).filter(|cap| !add.contains(cap)).chain(drop.iter().cloned()).collect();
    for set in [&mut new_add, &mut new_drop] {
        if set.contains("ALL") {
            set.retain(|cap| cap == "ALL");
        }
    }
    *add_list = new_add.into_iter().collect();
    *drop_list = new_drop.into_iter().collect();
}

/// `--sysctl KEY=VALUE`: only the sysctls a container's namespaces have (docker's list):
/// net.*, fs.mqueue.*, kernel.msg*, kernel.shm*, kernel.sem.
pub(crate) fn parse_sysctl(text: &str) -> Result<(String, String), String> {
    let example = "e.g. --sysctl net.ipv4.ip_unprivileged_port_start=0";
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("invalid sysctl {text:?}: expected KEY=VALUE; {example}"));
    };
    let key = key.trim();
    let namespaced = key.starts_with("net.")
        || key.starts_with("fs.mqueue.")
        || key.starts_with("kernel.msg")
        || key.starts_with("kernel.shm")
        || key == "kernel.sem";
    if !namespaced || key.contains(char::is_whitespace) {
        return Err(format!(
            "invalid sysctl {text:?}: a container can set only namespaced sysctls: net.*, fs.mqueue.*, kernel.msg*, \
             kernel.shm*, kernel.sem; {example}"
        ));
    }
    Ok((key.to_owned(), value.trim().to_owned()))
}

/// `--ulimit NAME=SOFT[:HARD]` (one number: both limits; -1: unlimited), as docker's.
pub(crate) fn parse_ulimit(text: &str) -> Result<v1::Ulimit, String> {
    let fail = |why: String| format!("invalid ulimit {text:?}: {why}; e.g. --ulimit nofile=1024:2048 (soft:hard)");
    let Some((name, limits)) = text.split_once('=') else {
        return Err(fail("expected NAME=SOFT[:HARD]".to_owned()));
    };
    let name = name.trim().to_ascii_lowercase();
    if !ULIMITS.contains(&name.as_str()) {
        return Err(fail(format!("{name:?} is not a resource limit; one of {}", ULIMITS.join(", "))));
    }
    let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
    let limit = |text: &str| match text.trim().parse::<i64>() {
        Ok(value) if value >= -1 => Ok(value),
        _ => Err(fail(format!("{text:?} is not a limit (a number ≥ 0, or -1 for unlimited)"))),
    };
    let (soft, hard) = (limit(soft)?, limit(hard)?);
    let above = |a: i64, b: i64| match (a, b) {
        (_, -1) => false,
        (-1, _) => true,
        (a, b) => a > b,
    };
    if above(soft, hard) {
        return Err(fail(format!("the soft limit {soft} is above the hard limit {hard}")));
    }
    Ok(v1::Ulimit { name, soft, hard })
}

/// `--dns`: a name server's IP address.
pub(crate) fn parse_nameserver(text: &str) -> Result<String, String> {
    match text.trim().parse::<IpAddr>() {
        Ok(ip) => Ok(ip.to_string()),
        Err(_) => Err(format!("invalid DNS server {text:?}: expected an IP address, e.g. --dns 192.0.2.53")),
    }
}

/// `--dns-search`: a domain (`.` for none), as docker's `ValidateDNSSearch`.
pub(crate) fn parse_dns_search(text: &str) -> Result<String, String> {
    let domain = text.trim();
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if domain == "." || (domain.len() <= 255 && domain.split('.').all(label_ok)) {
        return Ok(domain.to_owned());
    }
    Err(format!("invalid DNS search domain {text:?}: expected a domain, e.g. --dns-search example.com"))
}

/// `--dns-option`: one resolver option, `ndots:2`, `timeout:3`, `edns0`.
pub(crate) fn parse_dns_option(text: &str) -> Result<String, String> {
    let option = text.trim();
    if option.is_empty() || option.contains(char::is_whitespace) {
        return Err(format!("invalid DNS option {text:?}: expected one option, e.g. --dns-option ndots:2"));
    }
    Ok(option.to_owned())
}

/// `HOST:IP` (or `HOST=IP`; an IPv6 address may be in brackets) as a hostname and an address.
fn host_and_ip(text: &str) -> Option<(&str, IpAddr)> {
    let (host, ip) = text.split_once('=').or_else(|| text.split_once(':'))?;
    let ip = ip.trim();
    let ip = ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')).unwrap_or(ip);
    let host = host.trim();
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host, ip.parse().ok()?))
}

/// `--host HOST:IP`: an /etc/hosts line as the spec keeps it, `IP HOST`.
pub(crate) fn parse_host(text: &str) -> Result<String, String> {
    match host_and_ip(text) {
        Some((host, ip)) => Ok(format!("{ip} {host}")),
        None => Err(format!(
            "invalid host {text:?}: expected HOST:IP with an IP address, e.g. --host db.internal:192.0.2.20"
        )),
    }
}

/// What `--host-rm` removes: a hostname from every entry, or only from the entries of an IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostRemoval {
    text: String,
    host: String,
    ip: Option<IpAddr>,
}

/// `--host-rm HOST` or `--host-rm HOST:IP`.
pub(crate) fn parse_host_removal(text: &str) -> Result<HostRemoval, String> {
    if !text.contains([':', '=']) && !text.trim().is_empty() {
        return Ok(HostRemoval { text: text.to_owned(), host: text.trim().to_owned(), ip: None });
    }
    match host_and_ip(text) {
        Some((host, ip)) => Ok(HostRemoval { text: text.to_owned(), host: host.to_owned(), ip: Some(ip) }),
        None => Err(format!("invalid --host-rm {text:?}: expected HOST or HOST:IP, e.g. db.internal:192.0.2.20")),
    }
}

/// `--host-rm`, then `--host-add`, as docker's `updateHosts`: a hostname is removed from the
/// entries it is in (only those of the IP, when one is given) and an entry left without names
/// goes; an entry is added unless it is there; entries keep their order (the first one for a
/// name wins in /etc/hosts).
pub(crate) fn edit_hosts(hosts: &mut Vec<String>, rm: &[HostRemoval], add: &[String]) -> Result<(), String> {
    for removal in rm {
        let mut found = false;
        let mut kept = Vec::with_capacity(hosts.len());
        for line in hosts.iter() {
            let mut words = line.split_whitespace();
            let ip = words.next().unwrap_or_default();
            let names: Vec<&str> = words.collect();
            let ip_matches = removal.ip.is_none_or(|want| ip.parse::<IpAddr>().is_ok_and(|ip| ip == want));
            if !ip_matches || !names.contains(&removal.host.as_str()) {
                kept.push(line.clone());
                continue;
            }
            found = true;
            let rest: Vec<&str> = names.into_iter().filter(|name| *name != removal.host).collect();
            if !rest.is_empty() {
                kept.push(format!("{ip} {}", rest.join(" ")));
            }
        }
        if !found {
            return Err(missing("--host-rm", &removal.text, "host entry"));
        }
        *hosts = kept;
    }
    for line in add {
        if !hosts.contains(line) {
            hosts.push(line.clone());
        }
    }
    Ok(())
}

/// `--group`: a supplementary group, by name (from the image's /etc/group) or number.
pub(crate) fn parse_group(text: &str) -> Result<String, String> {
    let group = text.trim();
    if group.is_empty() || group.contains(|c: char| c.is_whitespace() || c == ':') {
        return Err(format!("invalid group {text:?}: expected a group name or number, e.g. --group video"));
    }
    Ok(group.to_owned())
}

/// An env file as docker reads one (`opts.ParseEnvFile`): a `KEY=VALUE` per line, the value
/// taken as it is (no quotes, no trimming); blank lines and lines starting with `#` skipped; a
/// bare `KEY` takes its value from `lookup` (the CLI's environment) and is skipped when unset.
pub(crate) fn parse_env_file(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Vec<String>, String> {
    let mut env = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = if i == 0 { line.trim_start_matches('\u{feff}') } else { line };
        let line = line.strip_suffix('\r').unwrap_or(line).trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let number = i + 1;
        let (name, value) = match line.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (line, None),
        };
        if name.is_empty() {
            return Err(format!("line {number}: no variable name before the ="));
        }
        if name.contains(char::is_whitespace) {
            return Err(format!("line {number}: variable name {name:?} contains whitespace"));
        }
        match value {
            Some(value) => env.push(format!("{name}={value}")),
            None => env.extend(lookup(name).map(|value| format!("{name}={value}"))),
        }
    }
    Ok(env)
}

/// The variables of each `--env-file`, in order (bare names looked up in this process's
/// environment).
pub(crate) fn read_env_files(paths: &[PathBuf]) -> Result<Vec<String>, String> {
    let mut env = Vec::new();
    for path in paths {
        let fail = |why: String| format!("--env-file {}: {why}", path.display());
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let line = e.as_bytes()[..e.utf8_error().valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1;
            fail(format!("line {line} is not UTF-8 text"))
        })?;
        env.extend(parse_env_file(&text, |name| std::env::var(name).ok()).map_err(fail)?);
    }
    Ok(env)
}

/// Sets `KEY=VALUE` in `env`: in place of the variable's entry, or at the end.
pub(crate) fn set_env(env: &mut Vec<String>, entry: &str) {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_owned();
    let wanted = key(entry);
    match env.iter_mut().find(|e| key(e) == wanted) {
        Some(existing) => entry.clone_into(existing),
        None => env.push(entry.to_owned()),
    }
}

/// Sets (or replaces, by name) ulimits.
fn set_ulimits(ulimits: &mut Vec<v1::Ulimit>, add: &[v1::Ulimit]) {
    for ulimit in add {
        match ulimits.iter_mut().find(|u| u.name == ulimit.name) {
            Some(existing) => existing.clone_from(ulimit),
            None => ulimits.push(ulimit.clone()),
        }
    }
}

/// `values` without repeats, in the order first given.
fn unique(values: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    values.iter().filter(|v| seen.insert(v.as_str())).cloned().collect()
}

/// `service create`'s container list flags.
#[derive(Debug, Default, Args)]
pub(crate) struct ContainerArgs {
    /// Give the tasks a secret, as a file: NAME (at /run/secrets/NAME), or
    /// source=NAME,target=T,uid=U,gid=G,mode=0400 (target: a name under /run/secrets/ or an
    /// absolute path; mode octal, default 0444) (repeatable).
    #[arg(long, value_parser = parse_secret)]
    secret: Vec<v1::SecretReference>,
    /// Give the tasks a config, as a file: NAME (at /NAME), or
    /// source=NAME,target=/PATH,uid=U,gid=G,mode=0440 (repeatable).
    #[arg(long, value_parser = parse_config)]
    config: Vec<v1::ConfigReference>,
    /// Add a Linux capability, e.g. NET_ADMIN, or ALL (repeatable).
    #[arg(long = "cap-add", value_parser = parse_capability)]
    cap_add: Vec<String>,
    /// Drop a Linux capability, e.g. NET_RAW, or ALL (repeatable).
    #[arg(long = "cap-drop", value_parser = parse_capability)]
    cap_drop: Vec<String>,
    /// Namespaced kernel parameter KEY=VALUE, e.g. net.ipv4.ip_unprivileged_port_start=0
    /// (repeatable).
    #[arg(long, value_parser = parse_sysctl)]
    sysctl: Vec<(String, String)>,
    /// Resource limit NAME=SOFT:HARD, e.g. nofile=1024:2048 (-1: unlimited) (repeatable).
    #[arg(long, value_parser = parse_ulimit)]
    ulimit: Vec<v1::Ulimit>,
    /// A DNS server asked after the cluster's own, by IP address (repeatable).
    #[arg(long, value_parser = parse_nameserver)]
    dns: Vec<String>,
    /// A resolver option, e.g. ndots:2 (repeatable).
    #[arg(long = "dns-option", value_parser = parse_dns_option)]
    dns_option: Vec<String>,
    /// A DNS search domain (repeatable).
    #[arg(long = "dns-search", value_parser = parse_dns_search)]
    dns_search: Vec<String>,
    /// An /etc/hosts entry, HOST:IP (repeatable).
    #[arg(id = "extra_host", long = "host", value_name = "HOST:IP", value_parser = parse_host)]
    host: Vec<String>,
    /// A supplementary group of the container's processes, by name or number (repeatable).
    #[arg(long, value_parser = parse_group)]
    group: Vec<String>,
}

impl ContainerArgs {
    /// Sets the container's lists from the flags.
    pub(crate) fn apply(&self, container: &mut v1::ContainerSpec) -> Result<(), String> {
        check_targets(&self.secret, "secret")?;
        check_targets(&self.config, "config")?;
        container.secrets.clone_from(&self.secret);
        container.configs.clone_from(&self.config);
        edit_capabilities(&mut container.capability_add, &mut container.capability_drop, &self.cap_add, &self.cap_drop);
        container.sysctls.extend(self.sysctl.iter().cloned());
        set_ulimits(&mut container.ulimits, &self.ulimit);
        if !(self.dns.is_empty() && self.dns_option.is_empty() && self.dns_search.is_empty()) {
            container.dns_config = Some(v1::DnsConfig {
                nameservers: unique(&self.dns),
                search: unique(&self.dns_search),
                options: unique(&self.dns_option),
            });
        }
        container.hosts = unique(&self.host);
        container.groups = unique(&self.group);
        Ok(())
    }
}

/// `service update`'s container list flags: `-rm` removes (what is not there is an error),
/// `-add` adds or replaces.
#[derive(Debug, Default, Args)]
pub(crate) struct ContainerEditArgs {
    /// Add a secret, as --secret of create; replaces the one at the same target (repeatable).
    #[arg(long = "secret-add", value_parser = parse_secret)]
    secret_add: Vec<v1::SecretReference>,
    /// Remove a secret, by its name or target (repeatable).
    #[arg(long = "secret-rm")]
    secret_rm: Vec<String>,
    /// Add a config, as --config of create; replaces the one at the same target (repeatable).
    #[arg(long = "config-add", value_parser = parse_config)]
    config_add: Vec<v1::ConfigReference>,
    /// Remove a config, by its name or target (repeatable).
    #[arg(long = "config-rm")]
    config_rm: Vec<String>,
    /// Add a Linux capability (and take it off the drop list) (repeatable).
    #[arg(long = "cap-add", value_parser = parse_capability)]
    cap_add: Vec<String>,
    /// Drop a Linux capability (and take it off the add list) (repeatable).
    #[arg(long = "cap-drop", value_parser = parse_capability)]
    cap_drop: Vec<String>,
    /// Add or change a sysctl, KEY=VALUE (repeatable).
    #[arg(long = "sysctl-add", value_parser = parse_sysctl)]
    sysctl_add: Vec<(String, String)>,
    /// Remove a sysctl, by KEY (repeatable).
    #[arg(long = "sysctl-rm")]
    sysctl_rm: Vec<String>,
    /// Add or replace a ulimit, NAME=SOFT:HARD (repeatable).
    #[arg(long = "ulimit-add", value_parser = parse_ulimit)]
    ulimit_add: Vec<v1::Ulimit>,
    /// Remove a ulimit, by NAME (repeatable).
    #[arg(long = "ulimit-rm")]
    ulimit_rm: Vec<String>,
    /// Add a DNS server (repeatable).
    #[arg(long = "dns-add", value_parser = parse_nameserver)]
    dns_add: Vec<String>,
    /// Remove a DNS server (repeatable).
    #[arg(long = "dns-rm", value_parser = parse_nameserver)]
    dns_rm: Vec<String>,
    /// Add a resolver option (repeatable).
    #[arg(long = "dns-option-add", value_parser = parse_dns_option)]
    dns_option_add: Vec<String>,
    /// Remove a resolver option (repeatable).
    #[arg(long = "dns-option-rm")]
    dns_option_rm: Vec<String>,
    /// Add a DNS search domain (repeatable).
    #[arg(long = "dns-search-add", value_parser = parse_dns_search)]
    dns_search_add: Vec<String>,
    /// Remove a DNS search domain (repeatable).
    #[arg(long = "dns-search-rm")]
    dns_search_rm: Vec<String>,
    /// Add an /etc/hosts entry, HOST:IP (repeatable).
    #[arg(long = "host-add", value_name = "HOST:IP", value_parser = parse_host)]
    host_add: Vec<String>,
    /// Remove a hostname from the /etc/hosts entries: HOST, or HOST:IP for that address's
    /// entry only (repeatable).
    #[arg(long = "host-rm", value_parser = parse_host_removal)]
    host_rm: Vec<HostRemoval>,
    /// Add a supplementary group (repeatable).
    #[arg(long = "group-add", value_parser = parse_group)]
    group_add: Vec<String>,
    /// Remove a supplementary group (repeatable).
    #[arg(long = "group-rm")]
    group_rm: Vec<String>,
}

impl ContainerEditArgs {
    /// Edits the container's lists (removals first); a removal of what is not there is an
    /// error, and lists no flag names stay as they are.
    pub(crate) fn apply(&self, container: &mut v1::ContainerSpec) -> Result<(), String> {
        edit_refs(&mut container.secrets, &self.secret_rm, &self.secret_add, "secret")?;
        edit_refs(&mut container.configs, &self.config_rm, &self.config_add, "config")?;
        edit_capabilities(&mut container.capability_add, &mut container.capability_drop, &self.cap_add, &self.cap_drop);
        let sysctl_rm: Vec<String> =
            self.sysctl_rm.iter().map(|k| k.split_once('=').map_or(k.as_str(), |(k, _)| k).to_owned()).collect();
        edit_map(&mut container.sysctls, &sysctl_rm, &self.sysctl_add, "--sysctl-rm", "sysctl")?;
        for name in &self.ulimit_rm {
            let name = name.split_once('=').map_or(name.as_str(), |(n, _)| n).trim().to_ascii_lowercase();
            let before = container.ulimits.len();
            container.ulimits.retain(|u| u.name != name);
            if container.ulimits.len() == before {
                return Err(missing("--ulimit-rm", &name, "ulimit"));
            }
        }
        set_ulimits(&mut container.ulimits, &self.ulimit_add);
        let dns_flags = [
            &self.dns_add,
            &self.dns_rm,
            &self.dns_option_add,
            &self.dns_option_rm,
            &self.dns_search_add,
            &self.dns_search_rm,
        ];
        if dns_flags.iter().any(|values| !values.is_empty()) {
            let dns = container.dns_config.get_or_insert_with(Default::default);
            edit_list(&mut dns.nameservers, &self.dns_rm, &self.dns_add, "--dns-rm", "DNS server")?;
            edit_list(&mut dns.options, &self.dns_option_rm, &self.dns_option_add, "--dns-option-rm", "DNS option")?;
            edit_list(
                &mut dns.search,
                &self.dns_search_rm,
                &self.dns_search_add,
                "--dns-search-rm",
                "DNS search domain",
            )?;
        }
        edit_hosts(&mut container.hosts, &self.host_rm, &self.host_add)?;
        edit_list(&mut container.groups, &self.group_rm, &self.group_add, "--group-rm", "group")?;
        Ok(())
    }
}

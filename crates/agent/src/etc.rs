//! The `/etc/hosts` and `/etc/resolv.conf` a task's container gets: the cluster's (its
//! addresses, the embedded DNS server) with what the service adds (`--host`, `--dns`,
//! `--dns-search`, `--dns-option`).

use shoal_api::v1;

/// `/etc/hosts`: `base` (the networking's, with the task's addresses) or a minimal one, then
/// the service's extra entries (`IP HOSTNAME…` lines).
pub(crate) fn hosts_file(hostname: &str, base: Option<&str>, extra: &[String]) -> String {
    let mut out = match base {
        Some(base) => base.to_owned(),
        None => format!("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"),
    };
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for line in extra {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some((ip, names)) = words.split_first() {
            out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
        }
    }
    out
}

/// `/etc/resolv.conf`: `base` (the networking's, naming the embedded DNS server first), with
/// the service's name servers after its own, its search domains instead of the base's when it
/// gives any (as docker's `--dns-search`), and its options over the base's of the same name.
pub(crate) fn resolv_conf(base: Option<&str>, dns: Option<&v1::DnsConfig>) -> String {
    let mut nameservers = Vec::new();
    let mut search = Vec::new();
    let mut options: Vec<String> = Vec::new();
    for line in base.unwrap_or_default().lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => nameservers.extend(words.map(str::to_owned)),
            Some("search" | "domain") => search = words.map(str::to_owned).collect(),
            Some("options") => options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    if let Some(dns) = dns {
        nameservers.extend(dns.nameservers.iter().filter(|n| !nameservers.contains(n)).cloned().collect::<Vec<_>>());
        if !dns.search.is_empty() {
            search = dns.search.clone();
        }
        for option in &dns.options {
            let name = option.split(':').next().unwrap_or(option);
            options.retain(|o| o.split(':').next().unwrap_or(o) != name);
            options.push(option.clone());
        }
    }
    let mut out = String::new();
    for server in &nameservers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// Expands docker's hostname templates: `{{.Service.Name}}`, `{{.Service.ID}}`,
/// `{{.Task.Name}}`, `{{.Task.ID}}`, `{{.Task.Slot}}`, `{{.Node.ID}}`, `{{.Node.Hostname}}`
/// (spaces inside the braces allowed); other text is kept as it is.
pub(crate) fn expand_hostname(template: &str, task: &v1::Task, node_id: &str, node_hostname: &str) -> String {
    let task_name = match task.annotations.as_ref().map(|a| a.name.as_str()) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ if task.slot > 0 => format!("{}.{}", task.service_name, task.slot),
        _ => format!("{}.{}", task.service_name, task.node_id),
    };
    let slot = if task.slot > 0 { task.slot.to_string() } else { task.node_id.clone() };
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else { break };
        out.push_str(&rest[..start]);
        let field = rest[start + 2..start + len].trim();
        let value = match field {
            ".Service.Name" => Some(task.service_name.clone()),
            ".Service.ID" => Some(task.service_id.clone()),
            ".Task.Name" => Some(task_name.clone()),
            ".Task.ID" => Some(task.id.clone()),
            ".Task.Slot" => Some(slot.clone()),
            ".Node.ID" => Some(node_id.to_owned()),
            ".Node.Hostname" => Some(node_hostname.to_owned()),
            _ => None,
        };
        match value {
            Some(value) => out.push_str(&value),
            None => out.push_str(&rest[start..start + len + 2]),
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_hosts_follow_the_base() {
        let base = "127.0.0.1\tlocalhost\n10.0.1.5\tweb\n";
        let extra = ["192.0.2.7 db db.local".to_owned()];
        assert_eq!(hosts_file("web", Some(base), &extra), format!("{base}192.0.2.7\tdb db.local\n"));
        assert!(hosts_file("web", None, &[]).contains("127.0.1.1\tweb\n"));
    }

    #[test]
    fn dns_settings_merge_as_docker_does() {
        let base = "nameserver 127.0.0.11\nsearch node.example\noptions ndots:0 edns0\n";
        let dns = v1::DnsConfig {
            nameservers: vec!["192.0.2.53".into()],
            search: vec!["corp.example".into()],
            options: vec!["ndots:2".into(), "timeout:3".into()],
        };
        assert_eq!(
            resolv_conf(Some(base), Some(&dns)),
            "nameserver 127.0.0.11\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0 ndots:2 timeout:3\n"
        );
        assert_eq!(
            resolv_conf(Some(base), None),
            "nameserver 127.0.0.11\nsearch node.example\noptions ndots:0 edns0\n"
        );
        assert_eq!(resolv_conf(None, None), "");
    }

    #[test]
    fn hostname_templates() {
        let task = v1::Task {
            id: "t123".into(),
            service_id: "s9".into(),
            service_name: "web".into(),
            slot: 3,
            node_id: "n1".into(),
            ..Default::default()
        };
        assert_eq!(expand_hostname("{{.Service.Name}}-{{ .Task.Slot }}", &task, "n1", "host-a"), "web-3");
        assert_eq!(expand_hostname("{{.Node.Hostname}}.{{.Task.Name}}", &task, "n1", "host-a"), "host-a.web.3");
        assert_eq!(expand_hostname("plain", &task, "n1", "h"), "plain");
        assert_eq!(expand_hostname("{{.Unknown}}-x", &task, "n1", "h"), "{{.Unknown}}-x", "kept as written");
        assert_eq!(expand_hostname("{{.Task.ID", &task, "n1", "h"), "{{.Task.ID");
    }
}

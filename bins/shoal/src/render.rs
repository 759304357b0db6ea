//! Output as docker prints it: tables with the same columns, `-q` for IDs, `--format json`.
//! Pure functions of api objects and the current time, so they are tested as tables.

use std::collections::HashMap;
use std::time::SystemTime;

use shoal_api::v1::{self, TaskState};

use crate::format::{Column, column};

mod ports;

pub(crate) use self::ports::{ports, protocol_name, publish_mode_name};

/// Pads columns to their widest cell, three spaces apart, as docker's tabwriter does.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out.push('\n');
    out
}

/// "5 seconds ago", "About a minute ago", "2 hours ago", as docker words it.
pub(crate) fn ago(then: Option<SystemTime>, now: SystemTime) -> String {
    let Some(then) = then else { return String::new() };
    let secs = now.duration_since(then).unwrap_or_default().as_secs();
    let text = match secs {
        0 => "Less than a second".to_owned(),
        1..=59 => format!("{secs} seconds"),
        60..=119 => "About a minute".to_owned(),
        120..=3599 => format!("{} minutes", secs / 60),
        3600..=7199 => "About an hour".to_owned(),
        7200..=172_799 => format!("{} hours", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    };
    format!("{text} ago")
}

pub(crate) fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// `text` cut to `max` characters, the last being `…`, as docker's `Ellipsis`.
fn ellipsis(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `2027-01-15T08:00:00.5Z`: RFC 3339 in UTC with as many decimals as needed, as docker prints
/// times in JSON (Go's RFC3339Nano).
pub(crate) fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days since 1970-01-01 to a civil date (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let fraction = match since.subsec_nanos() {
        0 => String::new(),
        nanos => format!(".{nanos:09}").trim_end_matches('0').to_owned(),
    };
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

fn node_status(node: &v1::Node) -> &'static str {
    match node.status.as_ref().and_then(|s| v1::node_status::State::try_from(s.state).ok()) {
        Some(v1::node_status::State::Ready) => "Ready",
        Some(v1::node_status::State::Down) => "Down",
        Some(v1::node_status::State::Disconnected) => "Disconnected",
        _ => "Unknown",
    }
}

fn availability(node: &v1::Node) -> &'static str {
    match node.spec.as_ref().and_then(|s| v1::NodeAvailability::try_from(s.availability).ok()) {
        Some(v1::NodeAvailability::Pause) => "Pause",
        Some(v1::NodeAvailability::Drain) => "Drain",
        _ => "Active",
    }
}

fn manager_status(node: &v1::Node) -> &'static str {
    match &node.manager_status {
        None => "",
        Some(m) if m.leader => "Leader",
        Some(m) if m.reachability == v1::manager_status::Reachability::Unreachable as i32 => "Unreachable",
        Some(_) => "Reachable",
    }
}

/// The placeholders of `node ls --format`, in the order of [`node_rows`]' cells.
pub(crate) const NODE_COLUMNS: &[Column] = &[
    column("ID", "ID"),
    column("Self", "SELF"),
    column("Hostname", "HOSTNAME"),
    column("Status", "STATUS"),
    column("Availability", "AVAILABILITY"),
    column("ManagerStatus", "MANAGER STATUS"),
    column("EngineVersion", "ENGINE VERSION"),
];

/// Nodes by hostname, each as its [`NODE_COLUMNS`] cells; `self_addr` is the manager the CLI
/// talks to (its node's `Self` is `true`).
pub(crate) fn node_rows(nodes: &[v1::Node], self_addr: &str) -> Vec<Vec<String>> {
    let mut nodes: Vec<&v1::Node> = nodes.iter().collect();
    nodes.sort_by(|a, b| hostname(a).cmp(hostname(b)).then(a.id.cmp(&b.id)));
    nodes
        .iter()
        .map(|n| {
            vec![
                n.id.clone(),
                is_self(n, self_addr).to_string(),
                hostname(n).to_owned(),
                node_status(n).to_owned(),
                availability(n).to_owned(),
                manager_status(n).to_owned(),
                n.description
                    .as_ref()
                    .and_then(|d| d.engine.as_ref())
                    .map(|e| e.engine_version.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect()
}

/// Whether `node` is the manager at `self_addr` (docker's "self").
pub(crate) fn is_self(node: &v1::Node, self_addr: &str) -> bool {
    node.manager_status.as_ref().is_some_and(|m| m.addr == self_addr)
}

/// `shoal node ls`: `self_addr` marks the node the CLI talks to with `*`.
pub(crate) fn nodes(nodes: &[v1::Node], self_addr: &str) -> String {
    let rows: Vec<Vec<String>> = node_rows(nodes, self_addr)
        .into_iter()
        .map(|mut row| {
            let this = row.remove(1) == "true";
            if this {
                row[0].push_str(" *");
            }
            row
        })
        .collect();
    table(&["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION"], &rows)
}

fn hostname(node: &v1::Node) -> &str {
    node.description.as_ref().map(|d| d.hostname.as_str()).unwrap_or_default()
}

pub(crate) fn service_name(service: &v1::Service) -> &str {
    service.spec.as_ref().and_then(|s| s.annotations.as_ref()).map(|a| a.name.as_str()).unwrap_or_default()
}

fn image(spec: Option<&v1::TaskSpec>) -> &str {
    spec.and_then(|t| t.container.as_ref()).map(|c| c.image.as_str()).unwrap_or_default()
}

/// An image as docker's tables show it: a tagged image pinned to a digest (what `stack deploy
/// --resolve-image` sends) without the digest; an image named by digest alone keeps it.
pub(crate) fn display_image(image: &str) -> &str {
    match image.split_once('@') {
        Some((named, _)) if named.rsplit('/').next().is_some_and(|last| last.contains(':')) => named,
        _ => image,
    }
}

/// The placeholders of `service ls --format`, in the order of [`service_rows`]' cells.
pub(crate) const SERVICE_COLUMNS: &[Column] = &[
    column("ID", "ID"),
    column("Name", "NAME"),
    column("Mode", "MODE"),
    column("Replicas", "REPLICAS"),
    column("Image", "IMAGE"),
    column("Ports", "PORTS"),
];

/// Services by name, each as its [`SERVICE_COLUMNS`] cells: REPLICAS counts running tasks
/// against the desired number (for global services, against the tasks that should run),
/// followed by `(blocked)` when the service's endpoint cannot be allocated (no task is made
/// until it is); PORTS as [`ports()`] words them; IDs cut to 12 characters unless `no_trunc`.
pub(crate) fn service_rows(services: &[v1::Service], tasks: &[v1::Task], no_trunc: bool) -> Vec<Vec<String>> {
    let mut running: HashMap<&str, usize> = HashMap::new();
    let mut wanted: HashMap<&str, usize> = HashMap::new();
    for task in tasks {
        if task.desired_state <= TaskState::Running as i32 {
            *wanted.entry(task.service_id.as_str()).or_default() += 1;
            if task.observed_state() == TaskState::Running {
                *running.entry(task.service_id.as_str()).or_default() += 1;
            }
        }
    }
    let mut services: Vec<&v1::Service> = services.iter().collect();
    services.sort_by(|a, b| service_name(a).cmp(service_name(b)));
    services
        .iter()
        .map(|s| {
            let spec = s.spec.as_ref();
            let (mode, desired) = match spec.and_then(|s| s.mode.as_ref()) {
                Some(v1::service_spec::Mode::Replicated(r)) => ("replicated", r.replicas as usize),
                Some(v1::service_spec::Mode::Global(_)) => ("global", wanted.get(s.id.as_str()).copied().unwrap_or(0)),
                Some(v1::service_spec::Mode::ReplicatedJob(j)) => ("replicated job", j.total_completions as usize),
                Some(v1::service_spec::Mode::GlobalJob(_)) => {
                    ("global job", wanted.get(s.id.as_str()).copied().unwrap_or(0))
                }
                None => ("", 0),
            };
            let blocked = if s.allocation_error.is_empty() { "" } else { " (blocked)" };
            vec![
                if no_trunc { s.id.clone() } else { short(&s.id).to_owned() },
                service_name(s).to_owned(),
                mode.to_owned(),
                format!("{}/{desired}{blocked}", running.get(s.id.as_str()).copied().unwrap_or(0)),
                display_image(image(spec.and_then(|s| s.task.as_ref()))).to_owned(),
                ports(s),
            ]
        })
        .collect()
}

/// `shoal service ls`: [`service_rows`] under docker's headers.
pub(crate) fn services(services: &[v1::Service], tasks: &[v1::Task], no_trunc: bool) -> String {
    table(&["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"], &service_rows(services, tasks, no_trunc))
}

/// Longest error `service ps` shows without `--no-trunc`, as docker's `maxErrLength`.
const MAX_ERR: usize = 30;

/// The placeholders of `service ps --format` and `node ps --format`, in the order of
/// [`task_rows`]' cells.
pub(crate) const TASK_COLUMNS: &[Column] = &[
    column("ID", "ID"),
    column("Name", "NAME"),
    column("Image", "IMAGE"),
    column("Node", "NODE"),
    column("DesiredState", "DESIRED STATE"),
    column("CurrentState", "CURRENT STATE"),
    column("Error", "ERROR"),
    column("Ports", "PORTS"),
];

/// `shoal service ps`: [`task_rows`] under docker's headers.
pub(crate) fn tasks(tasks: &[v1::Task], nodes: &[v1::Node], now: SystemTime, no_trunc: bool) -> String {
    table(
        &["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"],
        &task_rows(tasks, nodes, now, no_trunc),
    )
}

/// Tasks as `service ps` lists them, each as its [`TASK_COLUMNS`] cells: per slot (or node,
/// for global services) the current task first, then its history as `\_ name` rows, newest
/// first; the error column quotes the task's error (cut to 30 characters and IDs to 12 unless
/// `no_trunc`).
pub(crate) fn task_rows(tasks: &[v1::Task], nodes: &[v1::Node], now: SystemTime, no_trunc: bool) -> Vec<Vec<String>> {
    let hostnames: HashMap<&str, &str> = nodes.iter().map(|n| (n.id.as_str(), hostname(n))).collect();
    let mut groups: Vec<Vec<&v1::Task>> = Vec::new();
    let mut index: HashMap<(String, u64, String), usize> = HashMap::new();
    let mut sorted: Vec<&v1::Task> = tasks.iter().collect();
    let time = |t: &v1::Task| shoal_api::from_timestamp(t.status.as_ref().and_then(|s| s.timestamp.as_ref()));
    sorted.sort_by(|a, b| {
        (a.service_name.as_str(), a.slot, a.node_id.as_str()).cmp(&(
            b.service_name.as_str(),
            b.slot,
            b.node_id.as_str(),
        ))
    });
    for task in sorted {
        let key =
            (task.service_id.clone(), task.slot, if task.slot == 0 { task.node_id.clone() } else { String::new() });
        let at = *index.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push(task);
    }
    let mut rows = Vec::new();
    for mut group in groups {
        // Current (desired running) first, then the rest newest first.
        group.sort_by(|a, b| {
            let live = |t: &v1::Task| t.desired_state <= TaskState::Running as i32;
            live(b).cmp(&live(a)).then(time(b).cmp(&time(a)))
        });
        for (i, task) in group.iter().enumerate() {
            let name = task.annotations.as_ref().map(|a| a.name.clone()).unwrap_or_default();
            let desired = task.desired();
            let err = task.status.as_ref().map(|s| s.err.as_str()).unwrap_or_default();
            let err = if no_trunc { err.to_owned() } else { ellipsis(err, MAX_ERR) };
            rows.push(vec![
                if no_trunc { task.id.clone() } else { short(&task.id).to_owned() },
                if i == 0 { name } else { format!(r"\_ {name}") },
                if no_trunc { image(task.spec.as_ref()) } else { display_image(image(task.spec.as_ref())) }.to_owned(),
                hostnames.get(task.node_id.as_str()).copied().unwrap_or_default().to_owned(),
                desired.label().to_owned(),
                format!("{} {}", task.observed_state().label(), ago(time(task), now)).trim_end().to_owned(),
                if err.is_empty() { String::new() } else { format!("\"{err}\"") },
                String::new(),
            ]);
        }
    }
    rows
}

fn network_name(network: &v1::Network) -> &str {
    network.spec.as_ref().and_then(|s| s.annotations.as_ref()).map(|a| a.name.as_str()).unwrap_or_default()
}

/// Networks by name, as docker lists them.
fn sorted_networks(networks: &[v1::Network]) -> Vec<&v1::Network> {
    let mut sorted: Vec<&v1::Network> = networks.iter().collect();
    sorted.sort_by(|a, b| network_name(a).cmp(network_name(b)).then(a.id.cmp(&b.id)));
    sorted
}

/// The placeholders of `network ls --format`, in the order of [`network_rows`]' cells.
pub(crate) const NETWORK_COLUMNS: &[Column] =
    &[column("ID", "NETWORK ID"), column("Name", "NAME"), column("Driver", "DRIVER"), column("Scope", "SCOPE")];

/// `shoal network ls`: every network is a swarm-scoped one.
pub(crate) fn networks(networks: &[v1::Network], no_trunc: bool) -> String {
    table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &network_rows(networks, no_trunc))
}

/// Networks by name, each as its [`NETWORK_COLUMNS`] cells.
pub(crate) fn network_rows(networks: &[v1::Network], no_trunc: bool) -> Vec<Vec<String>> {
    sorted_networks(networks)
        .into_iter()
        .map(|n| {
            vec![
                if no_trunc { n.id.clone() } else { short(&n.id).to_owned() },
                network_name(n).to_owned(),
                n.spec.as_ref().map(|s| s.driver.clone()).unwrap_or_default(),
                "swarm".to_owned(),
            ]
        })
        .collect()
}

/// `shoal network ls -q`: IDs, short as docker prints them unless `no_trunc`.
pub(crate) fn network_ids(networks: &[v1::Network], no_trunc: bool) -> String {
    sorted_networks(networks)
        .into_iter()
        .map(|n| format!("{}\n", if no_trunc { n.id.as_str() } else { short(&n.id) }))
        .collect()
}

/// `shoal cluster admin-cert ls`: the issued certificates, then the revoked ones (each by ID);
/// `*` marks the one the CLI runs with. SINCE is when it was issued, or revoked.
pub(crate) fn admin_certs(listed: &v1::ListAdminCertificatesResponse, now: SystemTime) -> String {
    let created = |meta: Option<&v1::Meta>| shoal_api::from_timestamp(meta.and_then(|m| m.created_at.as_ref()));
    let id = |id: &str| format!("{id}{}", if id == listed.caller { " *" } else { "" });
    let mut issued: Vec<&v1::AdminCertificate> = listed.certificates.iter().collect();
    issued.sort_by(|a, b| a.id.cmp(&b.id));
    let mut revoked: Vec<&v1::Revocation> = listed.revoked.iter().collect();
    revoked.sort_by(|a, b| a.id.cmp(&b.id));
    let rows: Vec<Vec<String>> = issued
        .iter()
        .map(|c| vec![id(&c.id), "Active".into(), c.issued_by.clone(), ago(created(c.meta.as_ref()), now)])
        .chain(
            revoked
                .iter()
                .map(|r| vec![id(&r.id), "Revoked".into(), String::new(), ago(created(r.meta.as_ref()), now)]),
        )
        .collect();
    table(&["ID", "STATUS", "ISSUED BY", "SINCE"], &rows)
}

/// Width of a task's progress bar, as docker's.
const BAR: usize = 50;

/// One task's progress line as `docker service create` prints it while converging: how far it
/// got from NEW to RUNNING as a bar, or the error of a task that ended.
fn progress_line(label: &str, task: Option<&v1::Task>) -> String {
    let Some(task) = task else { return format!("{label}: ") };
    let status = task.status.clone().unwrap_or_default();
    let state = TaskState::try_from(status.state).unwrap_or(TaskState::New);
    if !status.err.is_empty() && state != TaskState::Running {
        return format!("{label}: {}", status.err);
    }
    let steps = [
        TaskState::New,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Ready,
        TaskState::Starting,
        TaskState::Running,
    ];
    let reached = steps.iter().rposition(|s| *s as i32 <= state as i32).unwrap_or(0);
    let filled = BAR * reached / (steps.len() - 1);
    let bar = format!("{}>{}", "=".repeat(filled), " ".repeat(BAR - filled));
    format!("{label}: {:<9} [{bar}]", state.label().to_ascii_lowercase())
}

/// The progress block of a converging service: `overall progress: N out of M tasks`, then one
/// line per slot (`1/3: running [====>]`) or, for a global service, per node (its short ID).
pub(crate) fn progress(live: &[&v1::Task], desired: usize, global: bool) -> String {
    let running =
        live.iter().filter(|t| t.status.as_ref().is_some_and(|s| s.state == TaskState::Running as i32)).count();
    let mut out = format!("overall progress: {running} out of {desired} tasks\n");
    if global {
        let mut by_node: Vec<&&v1::Task> = live.iter().collect();
        by_node.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        for task in by_node {
            out.push_str(&progress_line(short(&task.node_id), Some(task)));
            out.push('\n');
        }
    } else {
        // The newest task of each slot, found in one pass (100,000 slots would make a scan per
        // slot 10^10 steps).
        let version = |t: &v1::Task| t.meta.as_ref().map_or(0, |m| m.version);
        let mut newest: std::collections::HashMap<u64, &v1::Task> = std::collections::HashMap::new();
        for task in live {
            let entry = newest.entry(task.slot).or_insert(task);
            if version(task) > version(entry) {
                *entry = task;
            }
        }
        for slot in 1..=desired as u64 {
            out.push_str(&progress_line(&format!("{slot}/{desired}"), newest.get(&slot).copied()));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests;

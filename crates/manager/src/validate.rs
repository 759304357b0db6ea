//! Validation of names and service specs before anything is stored: each refusal names the
//! field, the value and what is expected, so the CLI can print it as is.

use std::time::Duration;

use shoal_api::v1;

/// The longest wait a spec may ask for: restart delay, stop grace period, update and rollback
/// delay and monitor period, health-check interval, timeout and start period. A day is far
/// beyond any real need; a longer value is more likely a slip of units (`--restart-delay 1e19`),
/// and the cap keeps every time computed from these representable.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// The most replicas, job completions or concurrent job tasks one service may ask for: each is a
/// task the leader builds, stores and schedules, in one pass for a new service, so an unbounded
/// count exhausts the memory of every leader in turn. A million is ten times the largest service
/// measured (`cargo xtask bench control-plane`: 100,000 replicas).
pub(crate) const MAX_TASKS: u64 = 1_000_000;

/// The largest restart `max_attempts` (0 is unlimited): every attempt the policy counts stays in
/// the task history beyond its 5-task limit, so that a slot that used them up stays stopped.
pub(crate) const MAX_RESTART_ATTEMPTS: u64 = 100;

/// The longest restart window (the period `max_attempts` counts failures in): a week.
pub(crate) const MAX_RESTART_WINDOW: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The largest task spec, encoded: each task carries its spec to its node in the assignment
/// stream, whose messages a node accepts up to 4 MiB (`ASSIGNMENT_MAX_BYTES` in the dispatcher).
/// Env, args, labels and mounts are otherwise unbounded; half a megabyte of them is far beyond
/// real use, and keeps a node's complete set at a few megabytes per thousand tasks.
pub(crate) const MAX_TASK_SPEC_BYTES: usize = 512 * 1024;

/// A spec that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A name that is not 1–63 letters, digits, `-` and `_`, starting and ending with a letter or digit.
    #[error(
        "invalid {kind} name {name:?}: use 1-63 letters, digits, '-' and '_', starting and ending with a letter or digit"
    )]
    Name {
        /// What is named.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A required field is missing.
    #[error("service spec has no {field}")]
    Missing {
        /// The field.
        field: &'static str,
    },
    /// A field has a value that cannot work.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// The field (e.g. `constraint`, `mount target`).
        field: &'static str,
        /// The value given.
        value: String,
        /// Why it cannot be accepted.
        reason: String,
    },
    /// A task spec over 512 KiB encoded (`MAX_TASK_SPEC_BYTES`).
    #[error(
        "service {service:?}: task spec is {size} bytes encoded, at most {max} are accepted; keep large data (env, args, labels) in a file or volume"
    )]
    TooLarge {
        /// The service's name.
        service: String,
        /// The task spec's encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// Checks a name of kind `kind` (service, node label…) the way Swarm does, plus DNS's 63-byte limit.
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), SpecError> {
    let bytes = name.as_bytes();
    let valid = (1..=63).contains(&bytes.len())
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    if valid { Ok(()) } else { Err(SpecError::Name { kind, name: name.to_owned() }) }
}

fn invalid(field: &'static str, value: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid { field, value: value.into(), reason: reason.into() }
}

/// Checks a service spec: name, image, mode, placement (with the scheduler's own parsers),
/// resources, restart policy, env and mounts.
pub fn validate_service_spec(spec: &v1::ServiceSpec) -> Result<(), SpecError> {
    let name = spec.annotations.as_ref().map(|a| a.name.as_str()).unwrap_or_default();
    if name.is_empty() {
        return Err(SpecError::Missing { field: "name" });
    }
    validate_name("service", name)?;
    let task = spec.task.as_ref().ok_or(SpecError::Missing { field: "task" })?;
    let size = prost::Message::encoded_len(task);
    if size > MAX_TASK_SPEC_BYTES {
        return Err(SpecError::TooLarge { service: name.to_owned(), size, max: MAX_TASK_SPEC_BYTES });
    }
    let container = task.container.as_ref().ok_or(SpecError::Missing { field: "container" })?;
    if container.image.trim().is_empty() {
        return Err(SpecError::Missing { field: "image" });
    }
    if container.image.contains(char::is_whitespace) {
        return Err(invalid("image", &container.image, "an image reference has no spaces"));
    }
    let counts = match spec.mode.as_ref().ok_or(SpecError::Missing { field: "mode" })? {
        v1::service_spec::Mode::ReplicatedJob(job) if job.total_completions == 0 => {
            return Err(invalid("total completions", "0", "a replicated job needs at least one completion"));
        }
        v1::service_spec::Mode::Replicated(service) => vec![("replicas", service.replicas)],
        v1::service_spec::Mode::ReplicatedJob(job) => {
            vec![("total completions", job.total_completions), ("max concurrent", job.max_concurrent)]
        }
        v1::service_spec::Mode::Global(_) | v1::service_spec::Mode::GlobalJob(_) => vec![],
    };
    for (field, count) in counts {
        if count > MAX_TASKS {
            return Err(invalid(
                field,
                count.to_string(),
                format!("at most {MAX_TASKS}; split the work over several services"),
            ));
        }
    }
    for entry in &container.env {
        if entry.split('=').next().is_none_or(str::is_empty) {
            return Err(invalid("env", entry, "expected KEY=value"));
        }
    }
    for mount in &container.mounts {
        validate_mount(mount)?;
    }
    validate_files(container)?;
    validate_process(container)?;
    if let Some(placement) = &task.placement {
        for text in &placement.constraints {
            shoal_scheduler::Constraint::parse(text).map_err(|e| invalid("constraint", text, e.to_string()))?;
        }
        for text in &placement.preferences {
            shoal_scheduler::PlacementPreference::parse(text)
                .map_err(|e| invalid("placement preference", text, e.to_string()))?;
        }
    }
    if let Some(resources) = &task.resources {
        validate_resources(resources)?;
    }
    let mut waits = Vec::new();
    if let Some(restart) = &task.restart {
        if restart.max_attempts > MAX_RESTART_ATTEMPTS {
            return Err(invalid(
                "restart max attempts",
                restart.max_attempts.to_string(),
                format!("at most {MAX_RESTART_ATTEMPTS} (0: unlimited); the attempts counted stay in the task history"),
            ));
        }
        waits.push(("restart delay", restart.delay.as_ref(), MAX_WAIT, "24h"));
        waits.push(("restart window", restart.window.as_ref(), MAX_RESTART_WINDOW, "7 days (168h)"));
    }
    if let Some(grace) = container.stop_grace_period.as_ref() {
        waits.push(("stop grace period", Some(grace), MAX_WAIT, "24h"));
    }
    if let Some(health) = &container.healthcheck {
        validate_health_test(&health.test)?;
        waits.push(("health-check interval", health.interval.as_ref(), MAX_WAIT, "24h"));
        waits.push(("health-check timeout", health.timeout.as_ref(), MAX_WAIT, "24h"));
        waits.push(("health-check start period", health.start_period.as_ref(), MAX_WAIT, "24h"));
    }
    for (which, update) in [("update", &spec.update), ("rollback", &spec.rollback)] {
        let Some(update) = update else { continue };
        let ratio = update.max_failure_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            let field = if which == "update" { "update max failure ratio" } else { "rollback max failure ratio" };
            return Err(invalid(
                field,
                ratio.to_string(),
                "a fraction between 0 and 1 (0.1: one task in ten may fail)",
            ));
        }
        if which == "rollback" && update.failure_action == v1::update_config::FailureAction::Rollback as i32 {
            return Err(invalid("rollback failure action", "rollback", "a rollback that fails can pause or continue"));
        }
        if v1::update_config::FailureAction::try_from(update.failure_action).is_err()
            || v1::update_config::Order::try_from(update.order).is_err()
        {
            return Err(invalid(
                if which == "update" { "update config" } else { "rollback config" },
                format!("failure action {}, order {}", update.failure_action, update.order),
                "unknown failure action or order",
            ));
        }
        let (delay, monitor) = if which == "update" {
            ("update delay", "update monitor period")
        } else {
            ("rollback delay", "rollback monitor period")
        };
        waits.push((delay, update.delay.as_ref(), MAX_WAIT, "24h"));
        waits.push((monitor, update.monitor.as_ref(), MAX_WAIT, "24h"));
    }
    for (field, d, max, max_text) in waits {
        let Some(d) = d else { continue };
        let text = if d.nanos == 0 { format!("{}s", d.seconds) } else { format!("{}.{:09}s", d.seconds, d.nanos) };
        if d.seconds < 0 || d.nanos < 0 {
            return Err(invalid(field, text, "durations cannot be negative"));
        }
        if shoal_api::from_duration(Some(d)).is_none_or(|d| d > max) {
            return Err(invalid(field, text, format!("at most {max_text}")));
        }
    }
    Ok(())
}

/// A health check's test, as Docker takes it: empty (the image's), `["NONE"]`, `["CMD", program,
/// args…]` or `["CMD-SHELL", command]`.
fn validate_health_test(test: &[String]) -> Result<(), SpecError> {
    let shown = || format!("{test:?}");
    match test.first().map(String::as_str) {
        None => Ok(()),
        Some("NONE") if test.len() == 1 => Ok(()),
        Some("CMD") if test.len() > 1 && !test[1].is_empty() => Ok(()),
        Some("CMD-SHELL") if test.len() == 2 && !test[1].trim().is_empty() => Ok(()),
        Some("NONE" | "CMD" | "CMD-SHELL") => Err(invalid(
            "health-check test",
            shown(),
            "NONE takes nothing, CMD a program and its arguments, CMD-SHELL one command",
        )),
        Some(_) => Err(invalid("health-check test", shown(), "must start with NONE, CMD or CMD-SHELL")),
    }
}

fn validate_mount(mount: &v1::Mount) -> Result<(), SpecError> {
    let kind = v1::mount::Type::try_from(mount.r#type).unwrap_or(v1::mount::Type::Bind);
    if !mount.target.starts_with('/') || mount.target.split('/').any(|c| c == "..") {
        return Err(invalid("mount target", &mount.target, "must be an absolute path without '..'"));
    }
    match kind {
        v1::mount::Type::Bind if !mount.source.starts_with('/') => {
            Err(invalid("bind mount source", &mount.source, "must be an absolute path on the node"))
        }
        // Docker's local driver's names: a letter or digit, then at least one more of those or
        // `_`, `.`, `-`.
        v1::mount::Type::Volume => {
            let bytes = mount.source.as_bytes();
            let valid = (2..=255).contains(&bytes.len())
                && bytes[0].is_ascii_alphanumeric()
                && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(b));
            if valid {
                Ok(())
            } else {
                Err(invalid(
                    "volume name",
                    &mount.source,
                    "use at least two characters, letters, digits, '_', '.' or '-', the first a letter or digit",
                ))
            }
        }
        v1::mount::Type::Tmpfs if !mount.source.is_empty() => {
            Err(invalid("tmpfs mount source", &mount.source, "a tmpfs mount has no source"))
        }
        _ => Ok(()),
    }?;
    if mount.bind_options.is_some() && kind != v1::mount::Type::Bind {
        return Err(invalid("mount option", "bind-propagation", "only a bind mount has a propagation"));
    }
    if let Some(options) = &mount.volume_options {
        if kind != v1::mount::Type::Volume {
            return Err(invalid("mount option", "volume-*", "volume options are for type=volume mounts"));
        }
        if !options.driver.is_empty() && options.driver != "local" {
            return Err(invalid("volume driver", &options.driver, "the one volume driver is local"));
        }
        for key in options.driver_options.keys() {
            if !["type", "o", "device"].contains(&key.as_str()) {
                return Err(invalid(
                    "volume option",
                    key,
                    "the local driver takes type, o and device (e.g. type=nfs,o=addr=192.0.2.10,device=:/export)",
                ));
            }
        }
    }
    Ok(())
}

/// Secrets, configs and mounts: each file target well formed, and no two of them (nor a mount)
/// at the same path in the container.
fn validate_files(container: &v1::ContainerSpec) -> Result<(), SpecError> {
    use crate::payload::{Payload, Reference, target_path};
    let mut paths: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut claim = |path: String, what: String| match paths.insert(path.clone(), what.clone()) {
        Some(other) => Err(invalid("target", path, format!("both {other} and {what} are mounted there"))),
        None => Ok(()),
    };
    for mount in &container.mounts {
        claim(mount.target.trim_end_matches('/').to_owned(), format!("mount {}", mount.source))?;
    }
    fn check<P: Payload>(r: &P::Ref) -> Result<String, SpecError> {
        let field = if P::KIND == "secret" { "secret" } else { "config" };
        if r.id().is_empty() && r.name().is_empty() {
            return Err(invalid(field, "", "no source given; name a stored one (source=NAME)"));
        }
        let file = r.file().cloned().unwrap_or_default();
        let path = target_path::<P>(r);
        if path.split('/').any(|c| c == "..") || path.ends_with('/') || file.name.contains('\0') {
            return Err(invalid(
                if P::KIND == "secret" { "secret target" } else { "config target" },
                &file.name,
                "a file name or an absolute path without '..'",
            ));
        }
        if file.mode > 0o7777 {
            return Err(invalid(
                if P::KIND == "secret" { "secret mode" } else { "config mode" },
                format!("{:o}", file.mode),
                "permission bits, at most 7777 (octal); docker's default is 0444",
            ));
        }
        Ok(path)
    }
    for r in <v1::Secret as Payload>::refs(container) {
        claim(check::<v1::Secret>(r)?, format!("secret {}", r.name()))?;
    }
    for r in <v1::Config as Payload>::refs(container) {
        claim(check::<v1::Config>(r)?, format!("config {}", r.name()))?;
    }
    Ok(())
}

/// The resource limits docker's `--ulimit` knows (setrlimit's, without `RLIMIT_`).
pub const ULIMITS: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// The capabilities a Linux kernel has (as of 6.x), without the `CAP_` prefix.
const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// Capabilities, sysctls, ulimits, DNS, extra hosts and groups: what the node's runtime would
/// refuse at task start is refused here, when the service is stored.
fn validate_process(container: &v1::ContainerSpec) -> Result<(), SpecError> {
    for (field, caps) in
        [("capability to add", &container.capability_add), ("capability to drop", &container.capability_drop)]
    {
        for cap in caps {
            let upper = cap.to_ascii_uppercase();
            let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
            if name != "ALL" && !CAPABILITIES.contains(&name) {
                return Err(invalid(field, cap, "not a Linux capability (e.g. NET_ADMIN, SYS_PTRACE, ALL)"));
            }
        }
    }
    for key in container.sysctls.keys() {
        let namespaced = key.starts_with("net.")
            || key.starts_with("fs.mqueue.")
            || key.starts_with("kernel.msg")
            || key.starts_with("kernel.shm")
            || key == "kernel.sem";
        if !namespaced {
            return Err(invalid(
                "sysctl",
                key,
                "only namespaced sysctls can be set for a container: net.*, fs.mqueue.*, kernel.msg*, kernel.shm*, kernel.sem",
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for ulimit in &container.ulimits {
        if !ULIMITS.contains(&ulimit.name.as_str()) {
            return Err(invalid(
                "ulimit",
                &ulimit.name,
                format!("not a resource limit; one of {}", ULIMITS.join(", ")),
            ));
        }
        if !seen.insert(ulimit.name.as_str()) {
            return Err(invalid("ulimit", &ulimit.name, "given twice"));
        }
        if ulimit.soft < -1
            || ulimit.hard < -1
            || (ulimit.hard != -1 && (ulimit.soft == -1 || ulimit.soft > ulimit.hard))
        {
            return Err(invalid(
                "ulimit",
                format!("{}={}:{}", ulimit.name, ulimit.soft, ulimit.hard),
                "the soft limit must not exceed the hard one (-1: unlimited)",
            ));
        }
    }
    if let Some(dns) = &container.dns_config {
        for server in &dns.nameservers {
            if server.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid("DNS server", server, "an IP address"));
            }
        }
        for name in dns.search.iter().chain(&dns.options) {
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(invalid("DNS search domain or option", name, "one word, no spaces"));
            }
        }
    }
    for line in &container.hosts {
        let mut words = line.split_whitespace();
        let ip_ok = words.next().is_some_and(|ip| ip.parse::<std::net::IpAddr>().is_ok());
        if !ip_ok || words.next().is_none() {
            return Err(invalid("extra host", line, "expected \"IP HOSTNAME [ALIAS...]\" (--host HOSTNAME:IP)"));
        }
    }
    for group in &container.groups {
        if group.is_empty() || group.contains(|c: char| c.is_whitespace() || c == ':') {
            return Err(invalid("group", group, "a group name or number"));
        }
    }
    Ok(())
}

fn validate_resources(resources: &v1::ResourceRequirements) -> Result<(), SpecError> {
    const MIN_MEMORY: i64 = 6 << 20;
    for (which, r) in [("limit", &resources.limits), ("reservation", &resources.reservations)] {
        let Some(r) = r else { continue };
        if r.nano_cpus < 0 {
            return Err(invalid(
                if which == "limit" { "cpu limit" } else { "cpu reservation" },
                r.nano_cpus.to_string(),
                "cannot be negative",
            ));
        }
        if r.memory_bytes != 0 && r.memory_bytes < MIN_MEMORY {
            let field = if which == "limit" { "memory limit" } else { "memory reservation" };
            return Err(invalid(field, r.memory_bytes.to_string(), "must be at least 6 MiB"));
        }
    }
    if let (Some(limits), Some(reservations)) = (&resources.limits, &resources.reservations) {
        if limits.memory_bytes != 0 && reservations.memory_bytes > limits.memory_bytes {
            return Err(invalid(
                "memory reservation",
                reservations.memory_bytes.to_string(),
                format!("exceeds the memory limit {}", limits.memory_bytes),
            ));
        }
        if limits.nano_cpus != 0 && reservations.nano_cpus > limits.nano_cpus {
            return Err(invalid(
                "cpu reservation",
                reservations.nano_cpus.to_string(),
                format!("exceeds the cpu limit {}", limits.nano_cpus),
            ));
        }
    }
    Ok(())
}

/// The largest node description a session may carry, encoded: every session writes it to Raft
/// (when it changed), so its size is what a node can add to every manager's log per session.
pub(crate) const MAX_DESCRIPTION_BYTES: usize = 16 * 1024;

/// Checks what a node says of itself when its session starts: each field within a bound that
/// real machines are far from (a hostname is at most 253 bytes, as in DNS), the whole at most
/// [`MAX_DESCRIPTION_BYTES`] encoded. The error names the field, its size and the limit.
pub(crate) fn validate_node_description(description: &v1::NodeDescription) -> Result<(), String> {
    let within = |field: &str, value: &str, max: usize| -> Result<(), String> {
        if value.len() > max {
            return Err(format!("node description: {field} is {} bytes, at most {max} are accepted", value.len()));
        }
        Ok(())
    };
    within("hostname", &description.hostname, 253)?;
    if let Some(platform) = &description.platform {
        within("platform architecture", &platform.architecture, 32)?;
        within("platform os", &platform.os, 32)?;
    }
    if let Some(resources) = &description.resources {
        if resources.generic.len() > 64 {
            return Err(format!(
                "node description: {} generic resources, at most 64 are accepted",
                resources.generic.len()
            ));
        }
        for generic in &resources.generic {
            within("generic resource kind", &generic.kind, 128)?;
        }
    }
    if let Some(engine) = &description.engine {
        within("engine version", &engine.engine_version, 128)?;
        if engine.labels.len() > 64 {
            return Err(format!("node description: {} engine labels, at most 64 are accepted", engine.labels.len()));
        }
        for (key, value) in &engine.labels {
            within("engine label key", key, 128)?;
            within("engine label value", value, 1024)?;
        }
    }
    let size = prost::Message::encoded_len(description);
    if size > MAX_DESCRIPTION_BYTES {
        return Err(format!("node description is {size} bytes encoded, at most {MAX_DESCRIPTION_BYTES} are accepted"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> v1::ServiceSpec {
        v1::ServiceSpec {
            annotations: Some(v1::Annotations { name: "web".into(), ..Default::default() }),
            mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 1 })),
            task: Some(v1::TaskSpec {
                container: Some(v1::ContainerSpec { image: "shoal-test/web:v1".into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A named volume mounted at /data.
    fn volume_mount(name: &str, options: Option<v1::mount::VolumeOptions>) -> v1::Mount {
        v1::Mount {
            r#type: v1::mount::Type::Volume as i32,
            source: name.into(),
            target: "/data".into(),
            volume_options: options,
            ..Default::default()
        }
    }

    fn container(s: &mut v1::ServiceSpec) -> &mut v1::ContainerSpec {
        s.task.as_mut().and_then(|t| t.container.as_mut()).expect("container")
    }

    #[test]
    fn names() {
        for ok in ["web", "w", "my_stack_web", "a-b", &"x".repeat(63)] {
            assert_eq!(validate_name("service", ok), Ok(()), "{ok}");
        }
        for bad in ["", "-web", "web-", "we b", "web.1", "wéb", &"x".repeat(64)] {
            assert!(validate_name("service", bad).is_err(), "{bad}");
        }
        assert_eq!(
            validate_name("service", "web.1").map_err(|e| e.to_string()),
            Err("invalid service name \"web.1\": use 1-63 letters, digits, '-' and '_', starting and ending with a letter or digit".into())
        );
    }

    type Mutation = fn(&mut v1::ServiceSpec);

    /// A protobuf duration of `$seconds` (which may be negative), without naming prost-types.
    macro_rules! seconds {
        ($seconds:expr) => {{
            let mut d = shoal_api::to_duration(Duration::ZERO);
            d.seconds = $seconds;
            Some(d)
        }};
    }

    fn restart(s: &mut v1::ServiceSpec) -> &mut v1::RestartPolicy {
        s.task.as_mut().expect("task").restart.get_or_insert_default()
    }

    fn replicated_job(max_concurrent: u64, total_completions: u64) -> Option<v1::service_spec::Mode> {
        Some(v1::service_spec::Mode::ReplicatedJob(v1::ReplicatedJob { max_concurrent, total_completions }))
    }

    #[test]
    fn task_counts_are_capped() {
        let refused: [(Option<v1::service_spec::Mode>, &str); 3] = [
            (
                Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: MAX_TASKS + 1 })),
                "invalid replicas \"1000001\": at most 1000000; split the work over several services",
            ),
            (replicated_job(1, u64::MAX), "invalid total completions \"18446744073709551615\": at most 1000000"),
            (replicated_job(MAX_TASKS + 1, 1), "invalid max concurrent \"1000001\": at most 1000000"),
        ];
        for (mode, expected) in refused {
            let mut s = spec();
            s.mode = mode;
            let err = validate_service_spec(&s).expect_err(expected).to_string();
            assert!(err.starts_with(expected), "expected {expected:?}, got {err:?}");
        }
        let mut s = spec();
        s.mode = Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: MAX_TASKS }));
        assert_eq!(validate_service_spec(&s), Ok(()));
        s.mode = replicated_job(MAX_TASKS, MAX_TASKS);
        assert_eq!(validate_service_spec(&s), Ok(()));
    }

    /// Waits beyond their maximum, and negative ones.
    fn wait_cases() -> Vec<(Mutation, &'static str)> {
        vec![
            (|s| restart(s).delay = seconds!(-1), "invalid restart delay \"-1s\": durations cannot be negative"),
            (|s| restart(s).delay = seconds!(86_401), "invalid restart delay \"86401s\": at most 24h"),
            (|s| restart(s).delay = seconds!(i64::MAX), "invalid restart delay \"9223372036854775807s\": at most 24h"),
            (
                |s| restart(s).max_attempts = 101,
                "invalid restart max attempts \"101\": at most 100 (0: unlimited); the attempts counted stay in the task history",
            ),
            (|s| restart(s).window = seconds!(604_801), "invalid restart window \"604801s\": at most 7 days (168h)"),
            (
                |s| container(s).stop_grace_period = seconds!(100_000),
                "invalid stop grace period \"100000s\": at most 24h",
            ),
            (
                |s| {
                    container(s).healthcheck =
                        Some(v1::HealthConfig { timeout: seconds!(100_000), ..Default::default() });
                },
                "invalid health-check timeout \"100000s\": at most 24h",
            ),
            (
                |s| s.update = Some(v1::UpdateConfig { delay: seconds!(100_000), ..Default::default() }),
                "invalid update delay \"100000s\": at most 24h",
            ),
            (
                |s| s.rollback = Some(v1::UpdateConfig { monitor: seconds!(-5), ..Default::default() }),
                "invalid rollback monitor period \"-5s\": durations cannot be negative",
            ),
        ]
    }

    #[test]
    fn waits_up_to_their_maximum_are_accepted() {
        let mut s = spec();
        restart(&mut s).delay = seconds!(86_400);
        restart(&mut s).window = seconds!(604_800);
        restart(&mut s).max_attempts = MAX_RESTART_ATTEMPTS;
        container(&mut s).stop_grace_period = seconds!(86_400);
        s.update = Some(v1::UpdateConfig { delay: seconds!(86_400), monitor: seconds!(0), ..Default::default() });
        assert_eq!(validate_service_spec(&s), Ok(()));
    }

    #[test]
    fn each_refusal_names_the_field() {
        let cases: Vec<(Mutation, &str)> = vec![
            (|s| s.annotations = None, "service spec has no name"),
            (|s| s.mode = None, "service spec has no mode"),
            (|s| container(s).image = String::new(), "service spec has no image"),
            (|s| container(s).image = "web v1".into(), "invalid image \"web v1\": an image reference has no spaces"),
            (|s| container(s).env = vec!["=x".into()], "invalid env \"=x\": expected KEY=value"),
            (
                |s| {
                    container(s).healthcheck =
                        Some(v1::HealthConfig { test: vec!["CURL".into(), "x".into()], ..Default::default() });
                },
                "invalid health-check test \"[\\\"CURL\\\", \\\"x\\\"]\": must start with NONE, CMD or CMD-SHELL",
            ),
            (
                |s| {
                    container(s).healthcheck =
                        Some(v1::HealthConfig { test: vec!["CMD-SHELL".into()], ..Default::default() });
                },
                "invalid health-check test \"[\\\"CMD-SHELL\\\"]\": NONE takes nothing",
            ),
            (
                |s| s.update = Some(v1::UpdateConfig { max_failure_ratio: 1.5, ..Default::default() }),
                "invalid update max failure ratio \"1.5\": a fraction between 0 and 1",
            ),
            (
                |s| {
                    let rollback = v1::update_config::FailureAction::Rollback as i32;
                    s.rollback = Some(v1::UpdateConfig { failure_action: rollback, ..Default::default() });
                },
                "invalid rollback failure action \"rollback\": a rollback that fails can pause or continue",
            ),
            (
                |s| {
                    s.mode = Some(v1::service_spec::Mode::ReplicatedJob(v1::ReplicatedJob::default()));
                },
                "invalid total completions \"0\": a replicated job needs at least one completion",
            ),
            (
                |s| {
                    s.task.as_mut().expect("task").placement =
                        Some(v1::Placement { constraints: vec!["node.role=worker".into()], ..Default::default() });
                },
                "invalid constraint \"node.role=worker\": ",
            ),
            (
                |s| {
                    s.task.as_mut().expect("task").placement =
                        Some(v1::Placement { preferences: vec!["pack=node.labels.zone".into()], ..Default::default() });
                },
                "invalid placement preference \"pack=node.labels.zone\": ",
            ),
            (
                |s| {
                    container(s).mounts = vec![v1::Mount { target: "data".into(), ..Default::default() }];
                },
                "invalid mount target \"data\": must be an absolute path without '..'",
            ),
            (
                |s| {
                    container(s).mounts =
                        vec![v1::Mount { source: "rel".into(), target: "/data".into(), ..Default::default() }];
                },
                "invalid bind mount source \"rel\": must be an absolute path on the node",
            ),
            (
                |s| {
                    s.task.as_mut().expect("task").resources = Some(v1::ResourceRequirements {
                        limits: Some(v1::Resources { memory_bytes: 1024, ..Default::default() }),
                        reservations: None,
                    });
                },
                "invalid memory limit \"1024\": must be at least 6 MiB",
            ),
            (
                |s| {
                    s.task.as_mut().expect("task").resources = Some(v1::ResourceRequirements {
                        limits: Some(v1::Resources { memory_bytes: 64 << 20, ..Default::default() }),
                        reservations: Some(v1::Resources { memory_bytes: 128 << 20, ..Default::default() }),
                    });
                },
                "invalid memory reservation \"134217728\": exceeds the memory limit 67108864",
            ),
            (|s| container(s).capability_add = vec!["NET_ADMINS".into()], "invalid capability to add \"NET_ADMINS\""),
            (
                |s| container(s).sysctls = [("kernel.hostname".to_owned(), "x".to_owned())].into(),
                "invalid sysctl \"kernel.hostname\": only namespaced sysctls",
            ),
            (
                |s| container(s).ulimits = vec![v1::Ulimit { name: "nofile".into(), soft: 10, hard: 5 }],
                "invalid ulimit \"nofile=10:5\": the soft limit must not exceed the hard one",
            ),
            (
                |s| container(s).ulimits = vec![v1::Ulimit { name: "files".into(), soft: 1, hard: 1 }],
                "invalid ulimit \"files\": not a resource limit",
            ),
            (
                |s| {
                    container(s).dns_config =
                        Some(v1::DnsConfig { nameservers: vec!["dns.example".into()], ..Default::default() })
                },
                "invalid DNS server \"dns.example\": an IP address",
            ),
            (|s| container(s).hosts = vec!["db.example".into()], "invalid extra host \"db.example\""),
            (|s| container(s).groups = vec!["a b".into()], "invalid group \"a b\""),
            (
                |s| {
                    container(s).secrets = vec![v1::SecretReference {
                        secret_name: "db".into(),
                        file: Some(v1::FileTarget {
                            name: "../../etc/passwd".into(),
                            mode: 0o444,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }];
                },
                "invalid secret target \"../../etc/passwd\"",
            ),
            (
                |s| {
                    container(s).configs = vec![v1::ConfigReference {
                        config_name: "c".into(),
                        file: Some(v1::FileTarget { name: "/c".into(), mode: 0o17777, ..Default::default() }),
                        ..Default::default()
                    }]
                },
                "invalid config mode \"17777\"",
            ),
            (
                |s| {
                    container(s).mounts = vec![v1::Mount {
                        r#type: v1::mount::Type::Tmpfs as i32,
                        target: "/run/secrets/db".into(),
                        ..Default::default()
                    }];
                    container(s).secrets = vec![v1::SecretReference { secret_name: "db".into(), ..Default::default() }];
                },
                "invalid target \"/run/secrets/db\": both mount  and secret db are mounted there",
            ),
            (
                |s| {
                    let options = v1::mount::VolumeOptions { driver: "rexray".into(), ..Default::default() };
                    container(s).mounts = vec![volume_mount("data", Some(options))];
                },
                "invalid volume driver \"rexray\": the one volume driver is local",
            ),
            (
                |s| container(s).mounts = vec![volume_mount("d", None)],
                "invalid volume name \"d\": use at least two characters",
            ),
            (
                |s| {
                    let driver_options = [("size".to_owned(), "1G".to_owned())].into();
                    let options = v1::mount::VolumeOptions { driver_options, ..Default::default() };
                    container(s).mounts = vec![volume_mount("data", Some(options))];
                },
                "invalid volume option \"size\": the local driver takes type, o and device",
            ),
            (
                |s| {
                    container(s).mounts = vec![v1::Mount {
                        r#type: v1::mount::Type::Tmpfs as i32,
                        target: "/t".into(),
                        bind_options: Some(v1::mount::BindOptions::default()),
                        ..Default::default()
                    }];
                },
                "invalid mount option \"bind-propagation\": only a bind mount has a propagation",
            ),
        ];
        assert_eq!(validate_service_spec(&spec()), Ok(()));
        for (mutate, expected) in cases.into_iter().chain(wait_cases()) {
            let mut s = spec();
            mutate(&mut s);
            let err = validate_service_spec(&s).expect_err(expected).to_string();
            assert!(err.starts_with(expected), "expected {expected:?}, got {err:?}");
        }
    }

    #[test]
    fn task_specs_are_bounded_in_all() {
        // What a node gets its tasks in is bounded (the assignment stream's messages), and
        // env, args and labels are otherwise unbounded: the encoded task spec is capped.
        let mut s = spec();
        container(&mut s).env = (0..120).map(|i| format!("V{i:03}={}", "x".repeat(4096))).collect();
        assert_eq!(validate_service_spec(&s), Ok(()), "120 variables of 4 KiB: under 512 KiB");
        let mut s = spec();
        container(&mut s).env = vec![format!("BIG={}", "x".repeat(MAX_TASK_SPEC_BYTES))];
        let err = validate_service_spec(&s).expect_err("over the cap");
        let size = prost::Message::encoded_len(s.task.as_ref().expect("task"));
        assert_eq!(
            err.to_string(),
            format!(
                "service \"web\": task spec is {size} bytes encoded, at most 524288 are accepted; keep large data (env, args, labels) in a file or volume"
            )
        );
        let mut s = spec();
        container(&mut s).labels = (0..200).map(|i| (format!("l{i}"), "v".repeat(4096))).collect();
        assert!(matches!(validate_service_spec(&s), Err(SpecError::TooLarge { .. })), "labels count too");
    }

    #[test]
    fn node_descriptions_are_bounded_field_by_field_and_in_all() {
        let base = v1::NodeDescription {
            hostname: "node-1".into(),
            platform: Some(v1::Platform { architecture: "amd64".into(), os: "linux".into() }),
            engine: Some(v1::EngineDescription { engine_version: "0.1.0".into(), labels: Default::default() }),
            ..Default::default()
        };
        assert_eq!(validate_node_description(&base), Ok(()));
        let cases: Vec<(v1::NodeDescription, &str)> = vec![
            (
                v1::NodeDescription { hostname: "h".repeat(254), ..base.clone() },
                "node description: hostname is 254 bytes, at most 253 are accepted",
            ),
            (
                v1::NodeDescription { hostname: "h".repeat(3 << 20), ..base.clone() },
                "node description: hostname is 3145728 bytes, at most 253 are accepted",
            ),
            (
                v1::NodeDescription {
                    engine: Some(v1::EngineDescription {
                        engine_version: "0.1.0".into(),
                        labels: (0..65).map(|i| (format!("k{i}"), "v".into())).collect(),
                    }),
                    ..base.clone()
                },
                "node description: 65 engine labels, at most 64 are accepted",
            ),
            (
                v1::NodeDescription {
                    engine: Some(v1::EngineDescription {
                        engine_version: "0.1.0".into(),
                        labels: (0..64).map(|i| (format!("k{i}"), "v".repeat(1000))).collect(),
                    }),
                    ..base.clone()
                },
                "node description is 64",
            ),
        ];
        for (description, expected) in cases {
            let err = validate_node_description(&description).expect_err("refused");
            assert!(err.starts_with(expected), "{err}");
        }
    }
}

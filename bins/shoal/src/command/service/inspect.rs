//! `shoal service inspect`: the service as docker's JSON (spec, previous spec, update status,
//! endpoint) or, with `--pretty`, docker's human format. Both are pure functions of the service
//! (and the networks' names), tested as text.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde_json::json;
use shoal_api::v1::{self, control_client::ControlClient, update_config, update_status::UpdateState};
use tonic::transport::Channel;

use super::endpoint::{endpoint_json, endpoint_spec_json, networks_json};
use super::get_service;
use super::opts::{propagation_name, type_name};
use crate::command::api;
use crate::render;

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// Print docker's human-readable format instead of JSON.
    #[arg(long)]
    pretty: bool,
    /// Services: names, IDs or unique ID prefixes (one prints an object, several an array).
    #[arg(required = true)]
    services: Vec<String>,
}

pub(crate) async fn inspect(control: &mut ControlClient<Channel>, args: &InspectArgs) -> anyhow::Result<()> {
    let mut services = Vec::new();
    for name in &args.services {
        services.push(get_service(control, name.clone()).await?);
    }
    if args.pretty {
        let networks =
            control.list_networks(v1::ListNetworksRequest::default()).await.map_err(api)?.into_inner().networks;
        let names: HashMap<String, String> = networks
            .iter()
            .map(|n| {
                let name = n.spec.as_ref().and_then(|s| s.annotations.as_ref()).map(|a| a.name.clone());
                (n.id.clone(), name.unwrap_or_default())
            })
            .collect();
        let blocks: Vec<String> = services.iter().map(|s| pretty(s, &names, SystemTime::now())).collect();
        print!("{}", blocks.join("\n"));
        return Ok(());
    }
    let json = match services.as_slice() {
        [one] => service_json(one),
        many => many.iter().map(service_json).collect(),
    };
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

fn nanos(duration: Option<Duration>) -> Option<u64> {
    duration.map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn failure_action(action: i32) -> &'static str {
    match update_config::FailureAction::try_from(action) {
        Ok(update_config::FailureAction::Continue) => "continue",
        Ok(update_config::FailureAction::Rollback) => "rollback",
        _ => "pause",
    }
}

fn order(order: i32) -> &'static str {
    match update_config::Order::try_from(order) {
        Ok(update_config::Order::StartFirst) => "start-first",
        _ => "stop-first",
    }
}

fn update_state(state: i32) -> &'static str {
    match UpdateState::try_from(state) {
        Ok(UpdateState::Updating) => "updating",
        Ok(UpdateState::Paused) => "paused",
        Ok(UpdateState::Completed) => "completed",
        Ok(UpdateState::RollbackStarted) => "rollback_started",
        Ok(UpdateState::RollbackPaused) => "rollback_paused",
        Ok(UpdateState::RollbackCompleted) => "rollback_completed",
        _ => "unknown",
    }
}

fn restart_condition(condition: i32) -> &'static str {
    match v1::restart_policy::Condition::try_from(condition) {
        Ok(v1::restart_policy::Condition::OnFailure) => "on-failure",
        Ok(v1::restart_policy::Condition::None) => "none",
        _ => "any",
    }
}

fn mount_type(kind: i32) -> &'static str {
    type_name(v1::mount::Type::try_from(kind).unwrap_or(v1::mount::Type::Bind))
}

/// A mount as docker's JSON has it, with its bind, volume or tmpfs options.
fn mount_json(mount: &v1::Mount) -> serde_json::Value {
    let mut json = json!({"Type": mount_type(mount.r#type), "Source": mount.source, "Target": mount.target, "ReadOnly": mount.read_only});
    if let Some(bind) = &mount.bind_options {
        json["BindOptions"] = json!({"Propagation": propagation_name(bind.propagation)});
    }
    if let Some(volume) = &mount.volume_options {
        let mut options = serde_json::Map::new();
        if volume.no_copy {
            options.insert("NoCopy".into(), true.into());
        }
        if !volume.labels.is_empty() {
            options.insert("Labels".into(), json!(sorted(&volume.labels)));
        }
        if !volume.driver.is_empty() || !volume.driver_options.is_empty() {
            let name = if volume.driver.is_empty() { "local" } else { volume.driver.as_str() };
            options.insert("DriverConfig".into(), json!({"Name": name, "Options": sorted(&volume.driver_options)}));
        }
        json["VolumeOptions"] = serde_json::Value::Object(options);
    }
    if mount.tmpfs_size_bytes != 0 || mount.tmpfs_mode != 0 {
        json["TmpfsOptions"] = json!({"SizeBytes": mount.tmpfs_size_bytes, "Mode": mount.tmpfs_mode});
    }
    json
}

/// A secret's or config's file as docker's JSON has it (UID and GID as strings, the mode as a
/// number).
fn file_json(file: Option<&v1::FileTarget>) -> serde_json::Value {
    let file = file.cloned().unwrap_or_default();
    json!({"Name": file.name, "UID": file.uid.to_string(), "GID": file.gid.to_string(), "Mode": file.mode})
}

fn secret_json(secret: &v1::SecretReference) -> serde_json::Value {
    let mut json = json!({"File": file_json(secret.file.as_ref()), "SecretID": secret.secret_id, "SecretName": secret.secret_name});
    if secret.data_version != 0 {
        json["DataVersion"] = secret.data_version.into();
    }
    json
}

fn config_json(config: &v1::ConfigReference) -> serde_json::Value {
    let mut json = json!({"File": file_json(config.file.as_ref()), "ConfigID": config.config_id, "ConfigName": config.config_name});
    if config.data_version != 0 {
        json["DataVersion"] = config.data_version.into();
    }
    json
}

fn update_config_json(config: &v1::UpdateConfig) -> serde_json::Value {
    json!({
        "Parallelism": config.parallelism,
        "Delay": nanos(shoal_api::from_duration(config.delay.as_ref())).unwrap_or(0),
        "FailureAction": failure_action(config.failure_action),
        "Monitor": nanos(shoal_api::from_duration(config.monitor.as_ref())).unwrap_or(0),
        "MaxFailureRatio": config.max_failure_ratio,
        "Order": order(config.order),
    })
}

fn resources_json(resources: Option<&v1::Resources>) -> serde_json::Value {
    let r = resources.cloned().unwrap_or_default();
    let mut json = serde_json::Map::new();
    if r.nano_cpus != 0 {
        json.insert("NanoCPUs".into(), r.nano_cpus.into());
    }
    if r.memory_bytes != 0 {
        json.insert("MemoryBytes".into(), r.memory_bytes.into());
    }
    if r.pids != 0 {
        json.insert("Pids".into(), r.pids.into());
    }
    serde_json::Value::Object(json)
}

fn sorted(labels: &HashMap<String, String>) -> BTreeMap<&str, &str> {
    labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `Spec` (and `PreviousSpec`) as docker's JSON has it; empty fields are left out.
fn spec_json(spec: &v1::ServiceSpec) -> serde_json::Value {
    let annotations = spec.annotations.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let container = task.container.clone().unwrap_or_default();
    let placement = task.placement.clone().unwrap_or_default();
    let mode = match &spec.mode {
        Some(v1::service_spec::Mode::Replicated(r)) => json!({"Replicated": {"Replicas": r.replicas}}),
        Some(v1::service_spec::Mode::Global(_)) => json!({"Global": {}}),
        Some(v1::service_spec::Mode::ReplicatedJob(j)) => {
            json!({"ReplicatedJob": {"TotalCompletions": j.total_completions, "MaxConcurrent": j.max_concurrent}})
        }
        Some(v1::service_spec::Mode::GlobalJob(_)) => json!({"GlobalJob": {}}),
        None => serde_json::Value::Null,
    };
    let mut container_json = json!({"Image": container.image, "Args": container.args, "Env": container.env});
    let dns = container.dns_config.clone().unwrap_or_default();
    let optional: [(&str, serde_json::Value, bool); 19] = [
        ("Labels", json!(sorted(&container.labels)), !container.labels.is_empty()),
        ("Command", json!(container.command), !container.command.is_empty()),
        ("Dir", json!(container.dir), !container.dir.is_empty()),
        ("User", json!(container.user), !container.user.is_empty()),
        ("Groups", json!(container.groups), !container.groups.is_empty()),
        ("Hostname", json!(container.hostname), !container.hostname.is_empty()),
        ("StopSignal", json!(container.stop_signal), !container.stop_signal.is_empty()),
        (
            "StopGracePeriod",
            json!(nanos(shoal_api::from_duration(container.stop_grace_period.as_ref()))),
            container.stop_grace_period.is_some(),
        ),
        ("ReadOnly", json!(container.read_only), container.read_only),
        ("Init", json!(container.init), container.init),
        ("Mounts", container.mounts.iter().map(mount_json).collect(), !container.mounts.is_empty()),
        ("Secrets", container.secrets.iter().map(secret_json).collect(), !container.secrets.is_empty()),
        ("Configs", container.configs.iter().map(config_json).collect(), !container.configs.is_empty()),
        ("CapabilityAdd", json!(container.capability_add), !container.capability_add.is_empty()),
        ("CapabilityDrop", json!(container.capability_drop), !container.capability_drop.is_empty()),
        ("Sysctls", json!(sorted(&container.sysctls)), !container.sysctls.is_empty()),
        (
            "Ulimits",
            container.ulimits.iter().map(|u| json!({"Name": u.name, "Soft": u.soft, "Hard": u.hard})).collect(),
            !container.ulimits.is_empty(),
        ),
        (
            "DNSConfig",
            json!({"Nameservers": dns.nameservers, "Search": dns.search, "Options": dns.options}),
            container.dns_config.is_some(),
        ),
        ("Hosts", json!(container.hosts), !container.hosts.is_empty()),
    ];
    for (key, value, present) in optional {
        if present {
            container_json[key] = value;
        }
    }
    if let Some(health) = &container.healthcheck {
        container_json["Healthcheck"] = json!({
            "Test": health.test,
            "Interval": nanos(shoal_api::from_duration(health.interval.as_ref())),
            "Timeout": nanos(shoal_api::from_duration(health.timeout.as_ref())),
            "Retries": health.retries,
            "StartPeriod": nanos(shoal_api::from_duration(health.start_period.as_ref())),
        });
    }
    let resources = task.resources.clone().unwrap_or_default();
    let restart = task.restart.unwrap_or_default();
    let mut json = json!({
        "Name": annotations.name,
        "Labels": sorted(&annotations.labels),
        "Mode": mode,
        "TaskTemplate": {
            "ContainerSpec": container_json,
            "Resources": {
                "Limits": resources_json(resources.limits.as_ref()),
                "Reservations": resources_json(resources.reservations.as_ref()),
            },
            "RestartPolicy": {
                "Condition": restart_condition(restart.condition),
                "Delay": nanos(shoal_api::from_duration(restart.delay.as_ref())),
                "MaxAttempts": restart.max_attempts,
                "Window": nanos(shoal_api::from_duration(restart.window.as_ref())),
            },
            "Placement": {"Constraints": placement.constraints, "Preferences": placement.preferences, "MaxReplicas": placement.max_replicas},
            "ForceUpdate": task.force_update,
        },
    });
    if !spec.networks.is_empty() {
        json["TaskTemplate"]["Networks"] = networks_json(&spec.networks);
    }
    if let Some(update) = &spec.update {
        json["UpdateConfig"] = update_config_json(update);
    }
    if let Some(rollback) = &spec.rollback {
        json["RollbackConfig"] = update_config_json(rollback);
    }
    if let Some(endpoint) = &spec.endpoint {
        json["EndpointSpec"] = endpoint_spec_json(endpoint);
    }
    json
}

/// A service as `docker service inspect` shows it.
pub(crate) fn service_json(service: &v1::Service) -> serde_json::Value {
    let time = |at: Option<SystemTime>| at.map(render::rfc3339);
    let meta = service.meta.unwrap_or_default();
    let mut json = json!({
        "ID": service.id,
        "Version": meta.version,
        "CreatedAt": time(shoal_api::from_timestamp(meta.created_at.as_ref())),
        "UpdatedAt": time(shoal_api::from_timestamp(meta.updated_at.as_ref())),
        "Spec": spec_json(&service.spec.clone().unwrap_or_default()),
        "Endpoint": endpoint_json(service.endpoint.as_ref()),
        "SpecVersion": service.spec_version,
    });
    if let Some(previous) = &service.previous_spec {
        json["PreviousSpec"] = spec_json(previous);
    }
    if let Some(status) = &service.update_status {
        json["UpdateStatus"] = json!({
            "State": update_state(status.state),
            "StartedAt": time(shoal_api::from_timestamp(status.started_at.as_ref())),
            "CompletedAt": time(shoal_api::from_timestamp(status.completed_at.as_ref())),
            "Message": status.message,
        });
    }
    if !service.allocation_error.is_empty() {
        json["AllocationError"] = service.allocation_error.clone().into();
    }
    json
}

/// A duration as Go prints it (`0s`, `500ms`, `5s`, `1m30s`, `1h0m0s`), as docker's pretty
/// output shows durations.
pub(crate) fn go_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        return match nanos {
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{}µs", n / 1_000),
            n => format!("{n}ns"),
        };
    }
    let secs = duration.as_secs();
    let fraction = match duration.subsec_nanos() {
        0 => String::new(),
        n => format!(".{n:09}").trim_end_matches('0').to_owned(),
    };
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}{fraction}s"),
        (0, m) => format!("{m}m{s}{fraction}s"),
        (h, m) => format!("{h}h{m}m{s}{fraction}s"),
    }
}

/// Bytes as docker's `units.BytesSize`: `64MiB`, `1.5GiB`.
pub(crate) fn bytes_size(bytes: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.3}");
    format!("{}{}", text.trim_end_matches('0').trim_end_matches('.'), units[unit])
}

fn config_pretty(out: &mut String, title: &str, config: &v1::UpdateConfig, verb: &str) {
    let _ = writeln!(out, "{title}:");
    let _ = writeln!(out, " Parallelism:   {}", config.parallelism);
    if let Some(delay) = shoal_api::from_duration(config.delay.as_ref()).filter(|d| !d.is_zero()) {
        let _ = writeln!(out, " Delay:         {}", go_duration(delay));
    }
    let _ = writeln!(out, " On failure:    {}", failure_action(config.failure_action));
    if let Some(monitor) = shoal_api::from_duration(config.monitor.as_ref()).filter(|d| !d.is_zero()) {
        let _ = writeln!(out, " Monitoring Period: {}", go_duration(monitor));
    }
    let _ = writeln!(out, " Max failure ratio: {}", config.max_failure_ratio);
    let _ = writeln!(out, " {verb} order:      {}", order(config.order));
}

/// `KEY=VALUE` pairs in key order, comma-separated.
fn pairs(map: &HashMap<String, String>) -> String {
    sorted(map).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// The parts of `--pretty` after the container's health check, in docker's order (capabilities,
/// sysctls, ulimits, mounts, configs, secrets) and then what docker does not show (mount
/// options, DNS, hosts).
fn container_pretty(out: &mut String, container: &v1::ContainerSpec) {
    if !container.capability_add.is_empty() || !container.capability_drop.is_empty() {
        let _ = writeln!(out, "Capabilities:");
        if !container.capability_add.is_empty() {
            let _ = writeln!(out, " Add: {}", container.capability_add.join(", "));
        }
        if !container.capability_drop.is_empty() {
            let _ = writeln!(out, " Drop: {}", container.capability_drop.join(", "));
        }
    }
    if !container.sysctls.is_empty() {
        let _ = writeln!(out, "SysCtls:");
        for (key, value) in sorted(&container.sysctls) {
            let _ = writeln!(out, " {key}{}", if value.is_empty() { String::new() } else { format!(": {value}") });
        }
    }
    if !container.ulimits.is_empty() {
        let _ = writeln!(out, "Ulimits:");
        let ulimits: BTreeMap<&str, &v1::Ulimit> = container.ulimits.iter().map(|u| (u.name.as_str(), u)).collect();
        for (name, ulimit) in ulimits {
            let _ = writeln!(out, " {name}: {}:{}", ulimit.soft, ulimit.hard);
        }
    }
    if !container.mounts.is_empty() {
        let _ = writeln!(out, "Mounts:");
        for mount in &container.mounts {
            let _ = writeln!(out, " Target:        {}", mount.target);
            let _ = writeln!(out, "  Source:       {}", mount.source);
            let _ = writeln!(out, "  ReadOnly:     {}", mount.read_only);
            let _ = writeln!(out, "  Type:         {}", mount_type(mount.r#type));
            if let Some(bind) = &mount.bind_options {
                let _ = writeln!(out, "  Propagation:  {}", propagation_name(bind.propagation));
            }
            if let Some(volume) = &mount.volume_options {
                if volume.no_copy {
                    let _ = writeln!(out, "  NoCopy:       true");
                }
                if !volume.driver.is_empty() || !volume.driver_options.is_empty() {
                    let driver = if volume.driver.is_empty() { "local" } else { volume.driver.as_str() };
                    let _ = writeln!(out, "  Driver:       {driver}");
                }
                if !volume.driver_options.is_empty() {
                    let _ = writeln!(out, "  Options:      {}", pairs(&volume.driver_options));
                }
                if !volume.labels.is_empty() {
                    let _ = writeln!(out, "  Labels:       {}", pairs(&volume.labels));
                }
            }
            if mount.tmpfs_size_bytes != 0 {
                let _ = writeln!(out, "  Size:         {}", bytes_size(mount.tmpfs_size_bytes));
            }
            if mount.tmpfs_mode != 0 {
                let _ = writeln!(out, "  Mode:         {:04o}", mount.tmpfs_mode);
            }
        }
    }
    let file = |out: &mut String, file: Option<&v1::FileTarget>, source: &str, version: u64| {
        let file = file.cloned().unwrap_or_default();
        let _ = writeln!(out, " Target:        {}", file.name);
        let _ = writeln!(out, "  Source:       {source}");
        let _ = writeln!(out, "  UID: {}, GID: {}, Mode: {:04o}", file.uid, file.gid, file.mode);
        if version != 0 {
            let _ = writeln!(out, "  Version:      {version}");
        }
    };
    if !container.configs.is_empty() {
        let _ = writeln!(out, "Configs:");
        for config in &container.configs {
            file(out, config.file.as_ref(), &config.config_name, config.data_version);
        }
    }
    if !container.secrets.is_empty() {
        let _ = writeln!(out, "Secrets:");
        for secret in &container.secrets {
            file(out, secret.file.as_ref(), &secret.secret_name, secret.data_version);
        }
    }
    if let Some(dns) = &container.dns_config {
        let _ = writeln!(out, "DNS:");
        for (title, values) in
            [("Nameservers:", &dns.nameservers), ("Search:     ", &dns.search), ("Options:    ", &dns.options)]
        {
            if !values.is_empty() {
                let _ = writeln!(out, " {title}  {}", values.join(" "));
            }
        }
    }
    if !container.hosts.is_empty() {
        let _ = writeln!(out, "Hosts:");
        for line in &container.hosts {
            let _ = writeln!(out, " {line}");
        }
    }
}

/// `service inspect --pretty`: docker's human format. `networks` maps network IDs to names;
/// `now` words the update's times ("5 minutes ago").
pub(crate) fn pretty(service: &v1::Service, networks: &HashMap<String, String>, now: SystemTime) -> String {
    let spec = service.spec.clone().unwrap_or_default();
    let annotations = spec.annotations.clone().unwrap_or_default();
    let task = spec.task.clone().unwrap_or_default();
    let container = task.container.clone().unwrap_or_default();
    let placement = task.placement.clone().unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "\nID:             {}", service.id);
    let _ = writeln!(out, "Name:           {}", annotations.name);
    if !annotations.labels.is_empty() {
        let _ = writeln!(out, "Labels:");
        for (key, value) in sorted(&annotations.labels) {
            let _ = writeln!(out, " {key}{}", if value.is_empty() { String::new() } else { format!("={value}") });
        }
    }
    match &spec.mode {
        Some(v1::service_spec::Mode::Replicated(r)) => {
            let _ = writeln!(out, "Service Mode:   Replicated\n Replicas:      {}", r.replicas);
        }
        Some(v1::service_spec::Mode::Global(_)) => {
            let _ = writeln!(out, "Service Mode:   Global");
        }
        Some(v1::service_spec::Mode::ReplicatedJob(j)) => {
            let _ = writeln!(out, "Service Mode:   ReplicatedJob");
            let _ = writeln!(out, " Max Concurrent:    {}", j.max_concurrent);
            let _ = writeln!(out, " Total Completions: {}", j.total_completions);
        }
        Some(v1::service_spec::Mode::GlobalJob(_)) => {
            let _ = writeln!(out, "Service Mode:   GlobalJob");
        }
        None => {}
    }
    if let Some(status) = &service.update_status {
        let _ = writeln!(out, "UpdateStatus:");
        let _ = writeln!(out, " State:         {}", update_state(status.state));
        if let Some(started) = shoal_api::from_timestamp(status.started_at.as_ref()) {
            let _ = writeln!(out, " Started:       {}", render::ago(Some(started), now));
        }
        if let Some(completed) = shoal_api::from_timestamp(status.completed_at.as_ref()) {
            let _ = writeln!(out, " Completed:     {}", render::ago(Some(completed), now));
        }
        let _ = writeln!(out, " Message:       {}", status.message);
    }
    let _ = writeln!(out, "Placement:");
    if !placement.constraints.is_empty() {
        let _ = writeln!(out, " Constraints:   [{}]", placement.constraints.join(" "));
    }
    if !placement.preferences.is_empty() {
        let _ = writeln!(out, " Preferences:   [{}]", placement.preferences.join(" "));
    }
    if placement.max_replicas > 0 {
        let _ = writeln!(out, " Max Replicas Per Node:   {}", placement.max_replicas);
    }
    if let Some(update) = &spec.update {
        config_pretty(&mut out, "UpdateConfig", update, "Update");
    }
    if let Some(rollback) = &spec.rollback {
        config_pretty(&mut out, "RollbackConfig", rollback, "Rollback");
    }
    let _ = writeln!(out, "ContainerSpec:");
    let _ = writeln!(out, " Image:         {}", container.image);
    if !container.command.is_empty() {
        let _ = writeln!(out, " Command:       {}", container.command.join(" "));
    }
    if !container.args.is_empty() {
        let _ = writeln!(out, " Args:          {}", container.args.join(" "));
    }
    if !container.env.is_empty() {
        let _ = writeln!(out, " Env:           {}", container.env.join(" "));
    }
    if !container.dir.is_empty() {
        let _ = writeln!(out, " Dir:           {}", container.dir);
    }
    if container.init {
        let _ = writeln!(out, " Init:          true");
    }
    if !container.user.is_empty() {
        let _ = writeln!(out, " User: {}", container.user);
    }
    if !container.groups.is_empty() {
        let _ = writeln!(out, " Groups:        {}", container.groups.join(" "));
    }
    if let Some(health) = &container.healthcheck {
        let duration = |d: Option<&_>| go_duration(shoal_api::from_duration(d).unwrap_or_default());
        let _ = writeln!(out, " Healthcheck:");
        let _ = writeln!(out, "  Interval = {}", duration(health.interval.as_ref()));
        let _ = writeln!(out, "  Retries = {}", health.retries);
        let _ = writeln!(out, "  StartPeriod = {}", duration(health.start_period.as_ref()));
        let _ = writeln!(out, "  Timeout = {}", duration(health.timeout.as_ref()));
        if !health.test.is_empty() {
            let _ = writeln!(out, "  Tests:");
            for test in &health.test {
                let _ = writeln!(out, "   Test = {test}");
            }
        }
    }
    container_pretty(&mut out, &container);
    let resources = task.resources.clone().unwrap_or_default();
    let (limits, reservations) = (resources.limits.unwrap_or_default(), resources.reservations.unwrap_or_default());
    let has = |r: &v1::Resources| r.nano_cpus > 0 || r.memory_bytes > 0 || r.pids > 0;
    if has(&limits) || has(&reservations) {
        let _ = writeln!(out, "Resources:");
        for (title, r) in [("Reservations", &reservations), ("Limits", &limits)] {
            if !has(r) {
                continue;
            }
            let _ = writeln!(out, " {title}:");
            if r.nano_cpus > 0 {
                let _ = writeln!(out, "  CPU:          {}", r.nano_cpus as f64 / 1e9);
            }
            if r.memory_bytes > 0 {
                let _ = writeln!(out, "  Memory:       {}", bytes_size(r.memory_bytes));
            }
            if r.pids > 0 {
                let _ = writeln!(out, "  PIDs:         {}", r.pids);
            }
        }
    }
    if !spec.networks.is_empty() {
        let names: Vec<&str> =
            spec.networks.iter().map(|n| networks.get(&n.target).map_or(n.target.as_str(), String::as_str)).collect();
        let _ = writeln!(out, "Networks: {}", names.join(" "));
    }
    let endpoint_spec = spec.endpoint.clone().unwrap_or_default();
    let mode = match v1::endpoint_spec::Mode::try_from(endpoint_spec.mode) {
        Ok(v1::endpoint_spec::Mode::Dnsrr) => "dnsrr",
        _ => "vip",
    };
    let _ = writeln!(out, "Endpoint Mode:  {mode}");
    let ports = match &service.endpoint {
        Some(endpoint) if !endpoint.ports.is_empty() => endpoint.ports.clone(),
        _ => endpoint_spec.ports.clone(),
    };
    if !ports.is_empty() {
        let _ = writeln!(out, "Ports:");
        for port in &ports {
            let _ = writeln!(out, " PublishedPort = {}", port.published_port);
            let _ = writeln!(out, "  Protocol = {}", render::protocol_name(port.protocol));
            let _ = writeln!(out, "  TargetPort = {}", port.target_port);
            let _ = writeln!(out, "  PublishMode = {}", render::publish_mode_name(port.publish_mode));
        }
    }
    out
}

#[cfg(test)]
mod tests;

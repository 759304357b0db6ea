//! The flags `service create` and `service update` share (docker/cli's `service/opts.go`):
//! each changes one field of the spec when given, so `create` applies them to its defaults
//! and `update` to the spec it read. Also the value parsers of the list flags (`--env`,
//! `--label`), the update and rollback configs, and health checks; `mount` parses `--mount`,
//! `refs` `--secret` and `--config`, and `container` the container's other list flags
//! (capabilities, sysctls, ulimits, DNS, hosts, groups, env files).

mod container;
mod mount;
mod refs;

use std::collections::HashMap;
use std::time::Duration;

use clap::{Args, ValueEnum};
use shoal_api::v1::{self, update_config};

pub(crate) use self::container::{ContainerArgs, ContainerEditArgs, read_env_files, set_env};
pub(crate) use self::mount::{parse_mount, propagation_name, type_name};
use crate::command::{parse_bytes, parse_duration};

/// Swarm's default time a task is watched after its update before it counts as a success.
pub(crate) const DEFAULT_MONITOR: Duration = Duration::from_secs(5);

/// Docker's defaults: one task at a time, pause on failure, watch each for 5 s, stop first.
pub(crate) fn default_update_config() -> v1::UpdateConfig {
    v1::UpdateConfig {
        parallelism: 1,
        delay: Some(shoal_api::to_duration(Duration::ZERO)),
        failure_action: update_config::FailureAction::Pause as i32,
        monitor: Some(shoal_api::to_duration(DEFAULT_MONITOR)),
        max_failure_ratio: 0.0,
        order: update_config::Order::StopFirst as i32,
    }
}

/// `RestartPolicy` as `service create` makes it without flags: restart on any exit after 5 s.
pub(crate) fn default_restart_policy() -> v1::RestartPolicy {
    v1::RestartPolicy {
        condition: v1::restart_policy::Condition::Any as i32,
        delay: Some(shoal_api::to_duration(Duration::from_secs(5))),
        max_attempts: 0,
        window: None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RestartCondition {
    None,
    OnFailure,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum UpdateFailureAction {
    Pause,
    Continue,
    Rollback,
}

/// A rollback that fails cannot roll back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RollbackFailureAction {
    Pause,
    Continue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Order {
    StopFirst,
    StartFirst,
}

/// A `--security-opt` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecurityOpt {
    /// `seccomp=unconfined`.
    SeccompUnconfined,
    /// `seccomp=default` (what tasks get without the option).
    SeccompDefault,
}

pub(crate) fn parse_security_opt(value: &str) -> Result<SecurityOpt, String> {
    match value.split_once(['=', ':']) {
        Some(("seccomp", "unconfined")) => Ok(SecurityOpt::SeccompUnconfined),
        Some(("seccomp", "default" | "builtin")) => Ok(SecurityOpt::SeccompDefault),
        Some(("seccomp", profile)) => Err(format!(
            "seccomp profile {profile:?}: custom profiles are not supported; tasks get Docker's default profile, \
             or none with seccomp=unconfined"
        )),
        _ => Err(format!("unknown security option {value:?}: the one supported is seccomp=unconfined")),
    }
}

/// A whole number ≥ 0 (clap's own message for `-1` would be about digits).
pub(crate) fn parse_count(text: &str) -> Result<u64, String> {
    text.trim().parse().map_err(|_| format!("{text:?} is not a whole number ≥ 0"))
}

/// `--update-parallelism`: how many tasks at once, 0 for all.
pub(crate) fn parse_parallelism(text: &str) -> Result<u64, String> {
    parse_count(text).map_err(|e| format!("{e}: give how many tasks to update at once (0: all)"))
}

/// `--health-retries`.
pub(crate) fn parse_retries(text: &str) -> Result<u32, String> {
    text.trim().parse().map_err(|_| format!("{text:?} is not a whole number ≥ 0"))
}

/// `--update-max-failure-ratio`: a fraction of the tasks, 0 to 1.
pub(crate) fn parse_ratio(text: &str) -> Result<f32, String> {
    match text.trim().parse::<f32>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("{text:?} is not a ratio between 0 and 1 (e.g. 0.2: up to a fifth of the tasks may fail)")),
    }
}

/// CPUs as nano-CPUs: `0.5` → 500,000,000.
pub(crate) fn parse_cpus(text: &str) -> Result<i64, String> {
    match text.trim().parse::<f64>() {
        Ok(cpus) if cpus >= 0.0 && cpus.is_finite() => Ok((cpus * 1e9) as i64),
        _ => Err(format!("{text:?} is not a number of CPUs ≥ 0, e.g. 0.5")),
    }
}

/// Command words as a shell would split them: spaces separate, quotes group, `\` escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Words(pub(crate) Vec<String>);

pub(crate) fn parse_words(text: &str) -> Result<Words, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let part = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => part.push(c),
                        None => return Err(format!("{text:?}: a ' is not closed")),
                    }
                }
            }
            '"' => {
                let part = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => part.push(c),
                            Some(c) => {
                                part.push('\\');
                                part.push(c);
                            }
                            None => return Err(format!("{text:?}: a \" is not closed")),
                        },
                        Some(c) => part.push(c),
                        None => return Err(format!("{text:?}: a \" is not closed")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(format!("{text:?}: ends with a lone \\")),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(Words(words))
}

/// `--env KEY=VALUE` (an empty value is a value; a key alone is refused, since the manager
/// cannot see the CLI's environment).
pub(crate) fn parse_env(text: &str) -> Result<String, String> {
    match text.split_once('=') {
        Some((key, _)) if !key.is_empty() && !key.contains(char::is_whitespace) => Ok(text.to_owned()),
        _ => Err(format!("invalid env {text:?}: expected KEY=VALUE, e.g. --env LOG_LEVEL=debug")),
    }
}

/// `--label KEY[=VALUE]` (a key alone has an empty value, as docker).
pub(crate) fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    if key.trim().is_empty() {
        return Err(format!("invalid label {text:?}: the key is empty; expected KEY=VALUE or KEY"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// `--KEY-rm` of what is not there is an error (a typo would otherwise change nothing and say
/// nothing).
pub(crate) fn missing(flag: &str, value: &str, what: &str) -> String {
    format!("{flag} {value}: the service has no {what} {value}")
}

/// Removes the keys `rm` names (each must be there: else the error names `flag` and `what`),
/// then sets `add`.
pub(crate) fn edit_map(
    map: &mut HashMap<String, String>,
    rm: &[String],
    add: &[(String, String)],
    flag: &str,
    what: &str,
) -> Result<(), String> {
    for key in rm {
        if map.remove(key).is_none() {
            return Err(missing(flag, key, what));
        }
    }
    map.extend(add.iter().cloned());
    Ok(())
}

/// Removes the values `rm` names (each must be there), then appends those of `add` it lacks.
pub(crate) fn edit_list(
    list: &mut Vec<String>,
    rm: &[String],
    add: &[String],
    flag: &str,
    what: &str,
) -> Result<(), String> {
    for value in rm {
        let before = list.len();
        list.retain(|v| v != value);
        if list.len() == before {
            return Err(missing(flag, value, what));
        }
    }
    for value in add {
        if !list.contains(value) {
            list.push(value.clone());
        }
    }
    Ok(())
}

/// `--limit-pids`: the most processes a task may run (0: no limit).
pub(crate) fn parse_pids(text: &str) -> Result<i64, String> {
    parse_count(text)
        .ok()
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(|| format!("{text:?} is not a number of processes ≥ 0 (0: no limit)"))
}

/// The flags both `create` and `update` take that set one field each. In `update` a flag not
/// given leaves its field as it is.
#[derive(Debug, Default, Args)]
pub(crate) struct SpecArgs {
    /// Replace the image's entrypoint, split as a shell would ("" for the image's own).
    #[arg(long, value_parser = parse_words, allow_hyphen_values = true)]
    pub(crate) entrypoint: Option<Words>,
    /// User the tasks run as: a name, a UID, or UID:GID.
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(long, short = 'w')]
    workdir: Option<String>,
    /// Container hostname (default: the task's name).
    #[arg(long)]
    hostname: Option<String>,
    /// Time a task gets to stop before it is killed (e.g. 10s).
    #[arg(long = "stop-grace-period", value_parser = parse_duration, allow_hyphen_values = true)]
    stop_grace_period: Option<Duration>,
    /// Signal that stops a task (e.g. SIGTERM).
    #[arg(long = "stop-signal")]
    stop_signal: Option<String>,
    /// Mount the container's root filesystem read-only (--read-only=false to undo).
    #[arg(long = "read-only", num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    read_only: Option<bool>,
    /// Run an init process as PID 1 that forwards signals and reaps zombies (--init=false to
    /// undo).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    init: Option<bool>,
    /// Security options: seccomp=unconfined runs the tasks without Docker's default seccomp
    /// profile (repeatable; the last one counts).
    #[arg(long = "security-opt", value_parser = parse_security_opt)]
    security_opt: Vec<SecurityOpt>,
    /// Maximum tasks per node (0: no limit).
    #[arg(long = "replicas-max-per-node", value_parser = parse_count, allow_hyphen_values = true)]
    replicas_max_per_node: Option<u64>,
    /// Restart when: none, on-failure, any (default any).
    #[arg(long = "restart-condition", value_enum)]
    restart_condition: Option<RestartCondition>,
    /// Delay between restarts (default 5s).
    #[arg(long = "restart-delay", value_parser = parse_duration, allow_hyphen_values = true)]
    restart_delay: Option<Duration>,
    /// Maximum restarts before giving up (0: no limit).
    #[arg(long = "restart-max-attempts", value_parser = parse_count, allow_hyphen_values = true)]
    restart_max_attempts: Option<u64>,
    /// Window in which restarts are counted (e.g. 1m).
    #[arg(long = "restart-window", value_parser = parse_duration, allow_hyphen_values = true)]
    restart_window: Option<Duration>,
    /// CPUs to reserve (e.g. 0.5).
    #[arg(long = "reserve-cpu", value_parser = parse_cpus, allow_hyphen_values = true)]
    reserve_cpu: Option<i64>,
    /// Memory to reserve (e.g. 64M, 1G).
    #[arg(long = "reserve-memory", value_parser = parse_bytes, allow_hyphen_values = true)]
    reserve_memory: Option<i64>,
    /// CPU limit (e.g. 1.5).
    #[arg(long = "limit-cpu", value_parser = parse_cpus, allow_hyphen_values = true)]
    limit_cpu: Option<i64>,
    /// Memory limit (e.g. 128M).
    #[arg(long = "limit-memory", value_parser = parse_bytes, allow_hyphen_values = true)]
    limit_memory: Option<i64>,
    /// Most processes a task may run (0: no limit).
    #[arg(long = "limit-pids", value_parser = parse_pids, allow_hyphen_values = true)]
    limit_pids: Option<i64>,
    #[command(flatten)]
    health: HealthArgs,
    #[command(flatten)]
    update: UpdateConfigArgs,
    #[command(flatten)]
    rollback: RollbackConfigArgs,
}

/// Health-check flags.
#[derive(Debug, Default, Args)]
pub(crate) struct HealthArgs {
    /// Command that checks the task's health, run by a shell in its container (exit 0: healthy).
    #[arg(long = "health-cmd")]
    health_cmd: Option<String>,
    /// Time between checks (e.g. 30s).
    #[arg(long = "health-interval", value_parser = parse_duration, allow_hyphen_values = true)]
    health_interval: Option<Duration>,
    /// Time one check may take.
    #[arg(long = "health-timeout", value_parser = parse_duration, allow_hyphen_values = true)]
    health_timeout: Option<Duration>,
    /// Failures in a row that make a task unhealthy.
    #[arg(long = "health-retries", value_parser = parse_retries, allow_hyphen_values = true)]
    health_retries: Option<u32>,
    /// Time after start in which failures do not count.
    #[arg(long = "health-start-period", value_parser = parse_duration, allow_hyphen_values = true)]
    health_start_period: Option<Duration>,
    /// No health check, not even the image's.
    #[arg(
        long = "no-healthcheck",
        conflicts_with_all = ["health_cmd", "health_interval", "health_timeout", "health_retries", "health_start_period"]
    )]
    no_healthcheck: bool,
}

/// `--update-*`: how an update replaces tasks.
#[derive(Debug, Default, Args)]
pub(crate) struct UpdateConfigArgs {
    /// Tasks updated at once (default 1; 0: all at once).
    #[arg(long = "update-parallelism", value_parser = parse_parallelism, allow_hyphen_values = true)]
    update_parallelism: Option<u64>,
    /// Time between updating one batch of tasks and the next (e.g. 10s).
    #[arg(long = "update-delay", value_parser = parse_duration, allow_hyphen_values = true)]
    update_delay: Option<Duration>,
    /// What a failed update does: pause, continue or rollback (default pause).
    #[arg(long = "update-failure-action", value_enum)]
    update_failure_action: Option<UpdateFailureAction>,
    /// Time each updated task is watched for failure (default 5s).
    #[arg(long = "update-monitor", value_parser = parse_duration, allow_hyphen_values = true)]
    update_monitor: Option<Duration>,
    /// Fraction of tasks that may fail before the failure action is taken (0 to 1; default 0).
    #[arg(long = "update-max-failure-ratio", value_parser = parse_ratio, allow_hyphen_values = true)]
    update_max_failure_ratio: Option<f32>,
    /// stop-first (default) or start-first (the new task starts before the old one stops).
    #[arg(long = "update-order", value_enum)]
    update_order: Option<Order>,
}

/// `--rollback-*`: how a rollback replaces tasks.
#[derive(Debug, Default, Args)]
pub(crate) struct RollbackConfigArgs {
    /// Tasks rolled back at once (default 1; 0: all at once).
    #[arg(long = "rollback-parallelism", value_parser = parse_parallelism, allow_hyphen_values = true)]
    rollback_parallelism: Option<u64>,
    /// Time between rolling back one batch of tasks and the next.
    #[arg(long = "rollback-delay", value_parser = parse_duration, allow_hyphen_values = true)]
    rollback_delay: Option<Duration>,
    /// What a failed rollback does: pause or continue (default pause).
    #[arg(long = "rollback-failure-action", value_enum)]
    rollback_failure_action: Option<RollbackFailureAction>,
    /// Time each rolled-back task is watched for failure (default 5s).
    #[arg(long = "rollback-monitor", value_parser = parse_duration, allow_hyphen_values = true)]
    rollback_monitor: Option<Duration>,
    /// Fraction of tasks that may fail before the failure action is taken (0 to 1).
    #[arg(long = "rollback-max-failure-ratio", value_parser = parse_ratio, allow_hyphen_values = true)]
    rollback_max_failure_ratio: Option<f32>,
    /// stop-first (default) or start-first.
    #[arg(long = "rollback-order", value_enum)]
    rollback_order: Option<Order>,
}

/// What a config's flags set; `None` fields are left as they are.
struct ConfigFlags {
    parallelism: Option<u64>,
    delay: Option<Duration>,
    failure_action: Option<update_config::FailureAction>,
    monitor: Option<Duration>,
    max_failure_ratio: Option<f32>,
    order: Option<Order>,
}

impl ConfigFlags {
    fn any(&self) -> bool {
        self.parallelism.is_some()
            || self.delay.is_some()
            || self.failure_action.is_some()
            || self.monitor.is_some()
            || self.max_failure_ratio.is_some()
            || self.order.is_some()
    }

    fn apply(&self, config: &mut Option<v1::UpdateConfig>) {
        if !self.any() {
            return;
        }
        // A service made before configs were stored gets docker's defaults, not proto zeros
        // (parallelism 0 would update every task at once).
        let config = config.get_or_insert_with(default_update_config);
        if let Some(parallelism) = self.parallelism {
            config.parallelism = parallelism;
        }
        if let Some(delay) = self.delay {
            config.delay = Some(shoal_api::to_duration(delay));
        }
        if let Some(action) = self.failure_action {
            config.failure_action = action as i32;
        }
        if let Some(monitor) = self.monitor {
            config.monitor = Some(shoal_api::to_duration(monitor));
        }
        if let Some(ratio) = self.max_failure_ratio {
            config.max_failure_ratio = ratio;
        }
        if let Some(order) = self.order {
            config.order = match order {
                Order::StopFirst => update_config::Order::StopFirst,
                Order::StartFirst => update_config::Order::StartFirst,
            } as i32;
        }
    }
}

impl UpdateConfigArgs {
    fn flags(&self) -> ConfigFlags {
        ConfigFlags {
            parallelism: self.update_parallelism,
            delay: self.update_delay,
            failure_action: self.update_failure_action.map(|a| match a {
                UpdateFailureAction::Pause => update_config::FailureAction::Pause,
                UpdateFailureAction::Continue => update_config::FailureAction::Continue,
                UpdateFailureAction::Rollback => update_config::FailureAction::Rollback,
            }),
            monitor: self.update_monitor,
            max_failure_ratio: self.update_max_failure_ratio,
            order: self.update_order,
        }
    }
}

impl RollbackConfigArgs {
    fn flags(&self) -> ConfigFlags {
        ConfigFlags {
            parallelism: self.rollback_parallelism,
            delay: self.rollback_delay,
            failure_action: self.rollback_failure_action.map(|a| match a {
                RollbackFailureAction::Pause => update_config::FailureAction::Pause,
                RollbackFailureAction::Continue => update_config::FailureAction::Continue,
            }),
            monitor: self.rollback_monitor,
            max_failure_ratio: self.rollback_max_failure_ratio,
            order: self.rollback_order,
        }
    }
}

impl HealthArgs {
    fn apply(&self, container: &mut v1::ContainerSpec) -> Result<(), String> {
        if self.no_healthcheck {
            container.healthcheck = Some(v1::HealthConfig { test: vec!["NONE".to_owned()], ..Default::default() });
            return Ok(());
        }
        let any = self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some();
        if !any {
            return Ok(());
        }
        let health = container.healthcheck.get_or_insert_with(Default::default);
        if let Some(cmd) = &self.health_cmd {
            if cmd.trim().is_empty() {
                return Err("--health-cmd is empty: give a command, or --no-healthcheck for no check".to_owned());
            }
            health.test = vec!["CMD-SHELL".to_owned(), cmd.clone()];
        } else if health.test.first().is_some_and(|t| t == "NONE") {
            return Err("the service has --no-healthcheck: give --health-cmd too".to_owned());
        }
        if let Some(interval) = self.health_interval {
            health.interval = Some(shoal_api::to_duration(interval));
        }
        if let Some(timeout) = self.health_timeout {
            health.timeout = Some(shoal_api::to_duration(timeout));
        }
        if let Some(start_period) = self.health_start_period {
            health.start_period = Some(shoal_api::to_duration(start_period));
        }
        if let Some(retries) = self.health_retries {
            health.retries = retries;
        }
        Ok(())
    }
}

impl SpecArgs {
    /// Sets each field a flag was given for; the others stay as they are.
    pub(crate) fn apply(&self, spec: &mut v1::ServiceSpec) -> Result<(), String> {
        self.update.flags().apply(&mut spec.update);
        self.rollback.flags().apply(&mut spec.rollback);
        let task = spec.task.get_or_insert_with(Default::default);
        let container = task.container.get_or_insert_with(Default::default);
        if let Some(Words(words)) = &self.entrypoint {
            container.command = words.clone();
        }
        let text = |field: &mut String, value: &Option<String>| {
            if let Some(value) = value {
                *field = value.clone();
            }
        };
        text(&mut container.user, &self.user);
        text(&mut container.dir, &self.workdir);
        text(&mut container.hostname, &self.hostname);
        text(&mut container.stop_signal, &self.stop_signal);
        if let Some(grace) = self.stop_grace_period {
            container.stop_grace_period = Some(shoal_api::to_duration(grace));
        }
        if let Some(read_only) = self.read_only {
            container.read_only = read_only;
        }
        if let Some(init) = self.init {
            container.init = init;
        }
        if let Some(opt) = self.security_opt.last() {
            container.seccomp = match opt {
                SecurityOpt::SeccompUnconfined => v1::container_spec::Seccomp::Unconfined,
                SecurityOpt::SeccompDefault => v1::container_spec::Seccomp::Default,
            } as i32;
        }
        self.health.apply(container)?;
        if let Some(max) = self.replicas_max_per_node {
            task.placement.get_or_insert_with(Default::default).max_replicas = max;
        }
        let restart_given = self.restart_condition.is_some()
            || self.restart_delay.is_some()
            || self.restart_max_attempts.is_some()
            || self.restart_window.is_some();
        if restart_given {
            let restart = task.restart.get_or_insert_with(default_restart_policy);
            if let Some(condition) = self.restart_condition {
                restart.condition = match condition {
                    RestartCondition::Any => v1::restart_policy::Condition::Any,
                    RestartCondition::OnFailure => v1::restart_policy::Condition::OnFailure,
                    RestartCondition::None => v1::restart_policy::Condition::None,
                } as i32;
            }
            if let Some(delay) = self.restart_delay {
                restart.delay = Some(shoal_api::to_duration(delay));
            }
            if let Some(max) = self.restart_max_attempts {
                restart.max_attempts = max;
            }
            if let Some(window) = self.restart_window {
                restart.window = Some(shoal_api::to_duration(window));
            }
        }
        // Sub-messages are made only for a flag given: an empty one where there was none would
        // be a change of the task spec, and replace every task.
        if self.limit_cpu.is_some() || self.limit_memory.is_some() || self.limit_pids.is_some() {
            let limits =
                task.resources.get_or_insert_with(Default::default).limits.get_or_insert_with(Default::default);
            limits.nano_cpus = self.limit_cpu.unwrap_or(limits.nano_cpus);
            limits.memory_bytes = self.limit_memory.unwrap_or(limits.memory_bytes);
            limits.pids = self.limit_pids.unwrap_or(limits.pids);
        }
        if self.reserve_cpu.is_some() || self.reserve_memory.is_some() {
            let reservations =
                task.resources.get_or_insert_with(Default::default).reservations.get_or_insert_with(Default::default);
            reservations.nano_cpus = self.reserve_cpu.unwrap_or(reservations.nano_cpus);
            reservations.memory_bytes = self.reserve_memory.unwrap_or(reservations.memory_bytes);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

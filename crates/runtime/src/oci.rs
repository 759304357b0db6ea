//! The OCI runtime spec for a container, generated from its [`ContainerSpec`] and its image's
//! config: Docker's defaults (mounts, capabilities, masked paths, seccomp profile) with the
//! caller's overrides.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::seccomp;
use crate::spec::{ContainerSpec, Healthcheck, Mount, Propagation, Seccomp, Ulimit};

/// Docker's default capability set.
pub(crate) const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux defines, indexed by number (`linux/capability.h`): what `ALL` means,
/// up to the kernel's last one.
pub(crate) const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker's `--ulimit` names and the rlimits they set.
const RLIMITS: &[(&str, &str)] = &[
    ("as", "RLIMIT_AS"),
    ("core", "RLIMIT_CORE"),
    ("cpu", "RLIMIT_CPU"),
    ("data", "RLIMIT_DATA"),
    ("fsize", "RLIMIT_FSIZE"),
    ("locks", "RLIMIT_LOCKS"),
    ("memlock", "RLIMIT_MEMLOCK"),
    ("msgqueue", "RLIMIT_MSGQUEUE"),
    ("nice", "RLIMIT_NICE"),
    ("nofile", "RLIMIT_NOFILE"),
    ("nproc", "RLIMIT_NPROC"),
    ("rss", "RLIMIT_RSS"),
    ("rtprio", "RLIMIT_RTPRIO"),
    ("rttime", "RLIMIT_RTTIME"),
    ("sigpending", "RLIMIT_SIGPENDING"),
    ("stack", "RLIMIT_STACK"),
];

/// Where the init binary appears in the container, and what PID 1 runs (Docker's `--init`).
pub(crate) const INIT_PATH: &str = "/sbin/docker-init";

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota the kernel takes: 1 ms per period, 0.01 CPU.
const MIN_CPU_QUOTA_US: u64 = 1_000;

/// What the runtime needs of an image's config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ImageConfig {
    pub(crate) entrypoint: Vec<String>,
    pub(crate) cmd: Vec<String>,
    pub(crate) env: Vec<String>,
    pub(crate) workdir: String,
    pub(crate) user: String,
    pub(crate) stop_signal: Option<String>,
}

impl ImageConfig {
    /// Reads the `config` object of an OCI image config.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, String> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("image config is not JSON: {e}"))?;
        let config = &value["config"];
        let strings = |key: &str| -> Vec<String> {
            config[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
        };
        Ok(Self {
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            env: strings("Env"),
            workdir: config["WorkingDir"].as_str().unwrap_or_default().to_owned(),
            user: config["User"].as_str().unwrap_or_default().to_owned(),
            stop_signal: config["StopSignal"].as_str().filter(|s| !s.is_empty()).map(str::to_owned),
        })
    }
}

/// The health check in an OCI image config (`config.Healthcheck`, durations in integer
/// nanoseconds as Docker writes them); `None` when it has none. A malformed one is an error
/// saying which field and value, never a default in its place.
pub(crate) fn healthcheck(bytes: &[u8]) -> Result<Option<Healthcheck>, String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("image config is not JSON: {e}"))?;
    let check = &value["config"]["Healthcheck"];
    if check.is_null() {
        return Ok(None);
    }
    if !check.is_object() {
        return Err(format!("config.Healthcheck is not an object: {check}"));
    }
    let test = match &check["Test"] {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("config.Healthcheck.Test is not a list of strings: {}", check["Test"]))?,
        other => return Err(format!("config.Healthcheck.Test is not a list of strings: {other}")),
    };
    match test.first().map(String::as_str) {
        None | Some("NONE") => {}
        Some("CMD" | "CMD-SHELL") if test.len() < 2 => {
            return Err(format!("config.Healthcheck.Test {test:?} has no command"));
        }
        Some("CMD" | "CMD-SHELL") => {}
        Some(kind) => {
            return Err(format!(
                "config.Healthcheck.Test {test:?}: unknown type {kind:?} (expected CMD, CMD-SHELL or NONE)"
            ));
        }
    }
    let nanos = |key: &str| -> Result<Duration, String> {
        match &check[key] {
            Value::Null => Ok(Duration::ZERO),
            v => v
                .as_u64()
                .map(Duration::from_nanos)
                .ok_or_else(|| format!("config.Healthcheck.{key} is not a duration in nanoseconds: {v}")),
        }
    };
    let retries = match &check["Retries"] {
        Value::Null => 0,
        v => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("config.Healthcheck.Retries is not a count: {v}"))?,
    };
    Ok(Some(Healthcheck {
        test,
        interval: nanos("Interval")?,
        timeout: nanos("Timeout")?,
        start_period: nanos("StartPeriod")?,
        retries,
    }))
}

/// Host files and names the spec refers to.
#[derive(Debug, Clone)]
pub(crate) struct SpecContext<'a> {
    /// containerd namespace (the cgroup parent).
    pub(crate) namespace: &'a str,
    /// Host paths bind-mounted at /etc/hosts, /etc/resolv.conf and /etc/hostname.
    pub(crate) hosts: &'a Path,
    pub(crate) resolv_conf: &'a Path,
    pub(crate) hostname_file: &'a Path,
    /// The image's /etc/passwd and /etc/group, for user and group names (empty when not needed).
    pub(crate) passwd: &'a str,
    pub(crate) group: &'a str,
    /// The static init bind-mounted at [`INIT_PATH`] for a spec with `init`; `None`: none found.
    pub(crate) init_binary: Option<&'a Path>,
    /// The kernel's highest capability number (`/proc/sys/kernel/cap_last_cap`).
    pub(crate) last_capability: usize,
}

/// The process's command line: the entrypoint and command, each from the spec or the image
/// (overriding the entrypoint drops the image's command, as Docker does).
pub(crate) fn command_line(spec: &ContainerSpec, image: &ImageConfig) -> Vec<String> {
    let entrypoint = spec.entrypoint.clone().unwrap_or_else(|| image.entrypoint.clone());
    let cmd = match (&spec.args, &spec.entrypoint) {
        (Some(args), _) => args.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => image.cmd.clone(),
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// The environment: the image's, overridden by the spec's, with PATH and HOSTNAME ensured.
pub(crate) fn environment(spec: &ContainerSpec, image: &ImageConfig, hostname: &str) -> Vec<String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let default_path = [DEFAULT_PATH.to_owned()];
    let hostname = [format!("HOSTNAME={hostname}")];
    let sources = default_path.iter().chain(&hostname).chain(&image.env).chain(&spec.env);
    for entry in sources {
        let (key, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        if !env.contains_key(key) {
            order.push(key.to_owned());
        }
        env.insert(key.to_owned(), value.to_owned());
    }
    order.into_iter().map(|key| format!("{key}={}", env[&key])).collect()
}

/// Resolves `user` (`uid[:gid]`, `name[:group]`, empty for root) against the image's files.
pub(crate) fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<(u32, u32), String> {
    if user.is_empty() {
        return Ok((0, 0));
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary_gid) = if let Ok(uid) = user_part.parse::<u32>() {
        let gid = passwd_entries(passwd).find(|e| e.2 == uid).map_or(0, |e| e.3);
        (uid, gid)
    } else {
        passwd_entries(passwd)
            .find(|e| e.0 == user_part)
            .map(|e| (e.2, e.3))
            .ok_or_else(|| format!("user {user_part:?} is not in the image's /etc/passwd"))?
    };
    let gid = match group_part {
        None => primary_gid,
        Some(g) => group_id(g, group).ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
    };
    Ok((uid, gid))
}

/// The GID of `name` (a number, or a name in the image's /etc/group).
fn group_id(name: &str, group: &str) -> Option<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Some(gid);
    }
    group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&name))
        .and_then(|f| f.get(2)?.parse().ok())
}

/// The supplementary GIDs of `groups` (numbers taken as they are, names from the image's
/// /etc/group), in order, each once.
pub(crate) fn resolve_groups(groups: &[String], group: &str) -> Result<Vec<u32>, String> {
    let mut gids = Vec::new();
    for name in groups {
        let gid = group_id(name, group).ok_or_else(|| {
            format!("supplementary group {name:?} is not in the image's /etc/group (give its number or a group the image has)")
        })?;
        if !gids.contains(&gid) {
            gids.push(gid);
        }
    }
    Ok(gids)
}

/// Whether resolving the spec's user and groups needs the image's /etc/passwd and /etc/group.
pub(crate) fn needs_user_files(spec: &ContainerSpec, image: &ImageConfig) -> bool {
    let user = spec.user.as_deref().unwrap_or(&image.user);
    let named_user = !user.is_empty() && user.split(':').any(|part| part.parse::<u32>().is_err());
    named_user || spec.groups.iter().any(|g| g.parse::<u32>().is_err())
}

/// A capability named in `capability_add` or `capability_drop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capability {
    All,
    Number(usize),
}

/// Docker's normalisation: any case, with or without `CAP_`; `ALL` stands for every one.
fn capability(name: &str, list: &str) -> Result<Capability, String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(Capability::All);
    }
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    CAPABILITIES.iter().position(|c| *c == full).map(Capability::Number).ok_or_else(|| {
        format!("unknown capability {name:?} in {list}: use a name such as NET_ADMIN or CAP_NET_ADMIN, or ALL")
    })
}

/// The process's capability set, ordered by number: Docker's defaults, less `drop`, plus `add`;
/// `ALL` in `add` gives every capability up to the kernel's `last` less `drop`; `ALL` in `drop`
/// leaves only `add` (Docker's rules).
pub(crate) fn capabilities(add: &[String], drop: &[String], last: usize) -> Result<Vec<&'static str>, String> {
    let add = add.iter().map(|n| capability(n, "capability_add")).collect::<Result<Vec<_>, _>>()?;
    let drop = drop.iter().map(|n| capability(n, "capability_drop")).collect::<Result<Vec<_>, _>>()?;
    let last = last.min(CAPABILITIES.len() - 1);
    for cap in &add {
        if let Capability::Number(n) = *cap
            && n > last
        {
            return Err(format!(
                "capability {} is not known to this kernel (its last is {}): remove it from capability_add",
                CAPABILITIES[n], CAPABILITIES[last]
            ));
        }
    }
    let dropped = |n: usize| drop.contains(&Capability::Number(n));
    let mut set = std::collections::BTreeSet::new();
    if add.contains(&Capability::All) {
        set.extend((0..=last).filter(|n| !dropped(*n)));
    } else {
        if !drop.contains(&Capability::All) {
            let defaults = DEFAULT_CAPABILITIES.iter().filter_map(|d| CAPABILITIES.iter().position(|c| c == d));
            set.extend(defaults.filter(|n| !dropped(*n)));
        }
        set.extend(add.iter().filter_map(|c| match c {
            Capability::Number(n) => Some(*n),
            Capability::All => None,
        }));
    }
    Ok(set.into_iter().map(|n| CAPABILITIES[n]).collect())
}

/// Refuses a sysctl that is not namespaced: the container could change the host through it.
/// `net.*` is namespaced only in a network namespace of the container's own, which every
/// container here has (a new one, or the caller's, which is never the host's).
pub(crate) fn check_sysctls(sysctls: &BTreeMap<String, String>) -> Result<(), String> {
    for key in sysctls.keys() {
        let well_formed = key.split('.').all(|part| !part.is_empty() && !part.contains('/'));
        let namespaced = key.starts_with("net.")
            || key.starts_with("fs.mqueue.")
            || key.starts_with("kernel.msg")
            || key.starts_with("kernel.shm")
            || key == "kernel.sem";
        if !well_formed || !namespaced {
            return Err(format!(
                "sysctl {key:?} is not allowed: only namespaced ones are (net.*, kernel.msg*, kernel.sem, \
                 kernel.shm*, fs.mqueue.*)"
            ));
        }
    }
    Ok(())
}

/// The OCI `process.rlimits` of `ulimits`, each name once, soft at most hard.
pub(crate) fn rlimits(ulimits: &[Ulimit]) -> Result<Vec<Value>, String> {
    let mut seen: Vec<&str> = Vec::new();
    ulimits
        .iter()
        .map(|u| {
            let name = u.name.as_str();
            let (_, rlimit) = RLIMITS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
                let names: Vec<&str> = RLIMITS.iter().map(|(n, _)| *n).collect();
                format!("unknown ulimit {name:?}: use one of {}", names.join(", "))
            })?;
            if seen.contains(&name) {
                return Err(format!("ulimit {name} is given twice: give it once"));
            }
            seen.push(name);
            if u.soft > u.hard {
                return Err(format!("ulimit {name}: the soft limit {} is above the hard limit {}", u.soft, u.hard));
            }
            Ok(json!({"type": rlimit, "soft": u.soft, "hard": u.hard}))
        })
        .collect()
}

/// The propagation of the container's root mount: shared when a bind mount is shared, else
/// slave when one is a slave, so that the mount's propagation can take effect (as Docker does).
fn rootfs_propagation(mounts: &[Mount]) -> Option<&'static str> {
    let propagations: Vec<Propagation> = mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Bind { propagation, .. } => Some(*propagation),
            _ => None,
        })
        .collect();
    if propagations.iter().any(|p| matches!(p, Propagation::Shared | Propagation::Rshared)) {
        Some("shared")
    } else if propagations.iter().any(|p| matches!(p, Propagation::Slave | Propagation::Rslave)) {
        Some("rslave")
    } else {
        None
    }
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = (&str, &str, u32, u32)> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        Some((*f.first()?, *f.get(1)?, f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
    })
}

/// Signal number of `SIGTERM`, `TERM` or `15`.
pub(crate) fn signal_number(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = name.trim_start_matches("SIG").to_ascii_uppercase();
    let table = [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ILL", 4),
        ("TRAP", 5),
        ("ABRT", 6),
        ("BUS", 7),
        ("FPE", 8),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("STKFLT", 16),
        ("CHLD", 17),
        ("CONT", 18),
        ("STOP", 19),
        ("TSTP", 20),
        ("TTIN", 21),
        ("TTOU", 22),
        ("URG", 23),
        ("XCPU", 24),
        ("XFSZ", 25),
        ("VTALRM", 26),
        ("PROF", 27),
        ("WINCH", 28),
        ("IO", 29),
        ("PWR", 30),
        ("SYS", 31),
    ];
    table.iter().find(|(n, _)| *n == name).map(|(_, number)| *number)
}

/// The stop signal's number: the spec's, else the image's, else SIGTERM.
pub(crate) fn stop_signal(spec: &ContainerSpec, image: &ImageConfig) -> Result<u32, String> {
    let name = spec.stop_signal.as_deref().or(image.stop_signal.as_deref()).unwrap_or("SIGTERM");
    signal_number(name).ok_or_else(|| format!("unknown stop signal {name:?} (use a name such as SIGTERM or a number)"))
}

/// What [`check_options`] made of Docker's options.
pub(crate) struct Checked<'a> {
    pub(crate) caps: Vec<&'static str>,
    pub(crate) rlimits: Vec<Value>,
    pub(crate) init: Option<&'a Path>,
}

/// Checks the options that need nothing from the image (capabilities, sysctls, ulimits, init),
/// so that a container can be refused before anything is prepared for it.
pub(crate) fn check_options<'a>(
    spec: &ContainerSpec,
    init_binary: Option<&'a Path>,
    last_capability: usize,
) -> Result<Checked<'a>, String> {
    let caps = capabilities(&spec.capability_add, &spec.capability_drop, last_capability)?;
    check_sysctls(&spec.sysctls)?;
    let rlimits = rlimits(&spec.ulimits)?;
    let init = match (spec.init, init_binary) {
        (false, _) => None,
        (true, Some(binary)) => Some(binary),
        (true, None) => {
            return Err("init is requested but no init binary is configured: install Debian's tini package \
                        (it provides /usr/bin/tini-static) or set ContainerdConfig::init_binary"
                .to_owned());
        }
    };
    Ok(Checked { caps, rlimits, init })
}

/// Builds the runtime spec.
pub(crate) fn runtime_spec(spec: &ContainerSpec, image: &ImageConfig, ctx: &SpecContext<'_>) -> Result<Value, String> {
    let mut args = command_line(spec, image);
    if args.is_empty() {
        return Err("no command: the image has no entrypoint or command and the spec gives none".to_owned());
    }
    let Checked { caps, rlimits, init } = check_options(spec, ctx.init_binary, ctx.last_capability)?;
    if init.is_some() {
        args.splice(0..0, [INIT_PATH.to_owned(), "--".to_owned()]);
    }
    let hostname = spec.hostname.clone().unwrap_or_else(|| spec.id.chars().take(12).collect());
    let user = spec.user.as_deref().unwrap_or(&image.user);
    let (uid, gid) = resolve_user(user, ctx.passwd, ctx.group)?;
    let additional_gids = resolve_groups(&spec.groups, ctx.group)?;
    let cwd = spec
        .workdir
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| if image.workdir.is_empty() { "/".to_owned() } else { image.workdir.clone() });
    if !cwd.starts_with('/') {
        return Err(format!("working directory {cwd:?} must be an absolute path"));
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev", "relatime"]}),
    ];
    for (target, source) in
        [("/etc/hosts", ctx.hosts), ("/etc/resolv.conf", ctx.resolv_conf), ("/etc/hostname", ctx.hostname_file)]
    {
        mounts.push(json!({"destination": target, "type": "bind", "source": source, "options": ["rbind", "rprivate"]}));
    }
    if let Some(binary) = init {
        mounts.push(json!({"destination": INIT_PATH, "type": "bind", "source": binary,
                           "options": ["rbind", "rprivate", "ro"]}));
    }
    for mount in &spec.mounts {
        mounts.push(match mount {
            Mount::Bind { source, target, read_only, propagation } => {
                check_target(target)?;
                json!({"destination": target, "type": "bind", "source": source,
                       "options": ["rbind", propagation.as_str(), if *read_only { "ro" } else { "rw" }]})
            }
            Mount::Volume { source, target, read_only, copy_image_content: _ } => {
                check_target(target)?;
                json!({"destination": target, "type": "bind", "source": source,
                       "options": ["rbind", "rprivate", if *read_only { "ro" } else { "rw" }]})
            }
            Mount::Tmpfs { target, size_bytes, mode } => {
                check_target(target)?;
                let mut options = vec!["nosuid".to_owned(), "nodev".to_owned(), format!("mode={mode:o}")];
                if *size_bytes > 0 {
                    options.push(format!("size={size_bytes}"));
                }
                json!({"destination": target, "type": "tmpfs", "source": "tmpfs", "options": options})
            }
        });
    }
    let mut network = json!({"type": "network"});
    if let Some(path) = &spec.netns {
        network["path"] = json!(path);
    }
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    let r = &spec.resources;
    if let Some(limit) = r.memory_bytes {
        resources["memory"] = json!({"limit": limit});
    }
    let mut cpu = serde_json::Map::new();
    if let Some(nano) = r.nano_cpus {
        let quota = nano.saturating_mul(CPU_PERIOD_US) / 1_000_000_000;
        // The kernel refuses a CFS quota under 1 ms; say so here rather than at task start.
        if quota < MIN_CPU_QUOTA_US {
            return Err(format!("CPU limit of {nano} nano-CPUs is below the minimum of 0.01 CPU (10000000)"));
        }
        cpu.insert("quota".into(), json!(quota));
        cpu.insert("period".into(), json!(CPU_PERIOD_US));
    }
    if let Some(shares) = r.cpu_shares {
        cpu.insert("shares".into(), json!(shares));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(pids) = r.pids {
        resources["pids"] = json!({"limit": pids});
    }
    let mut linux = json!({
        "resources": resources,
        "cgroupsPath": format!("/{}/{}", ctx.namespace, spec.id),
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, network],
        "maskedPaths": ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                        "/sys/firmware", "/sys/devices/virtual/powercap"],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    });
    if !spec.sysctls.is_empty() {
        linux["sysctl"] = json!(spec.sysctls);
    }
    if let Some(propagation) = rootfs_propagation(&spec.mounts) {
        linux["rootfsPropagation"] = json!(propagation);
    }
    // The profile follows the capabilities the process gets, so that adding one (CAP_SYS_ADMIN,
    // CAP_SYS_PTRACE, …) brings the syscalls it governs and dropping one takes them away.
    match spec.seccomp {
        Seccomp::Default => {
            linux["seccomp"] = seccomp::default_profile(&caps);
        }
        Seccomp::Unconfined => {}
    }
    let mut user = json!({"uid": uid, "gid": gid});
    if !additional_gids.is_empty() {
        user["additionalGids"] = json!(additional_gids);
    }
    let mut process = json!({
        "terminal": false,
        "user": user,
        "args": args,
        "env": environment(spec, image, &hostname),
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": false,
    });
    if !rlimits.is_empty() {
        process["rlimits"] = Value::Array(rlimits);
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": "rootfs", "readonly": spec.read_only_rootfs},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
    }))
}

fn check_target(target: &str) -> Result<(), String> {
    if target.starts_with('/') && !target.split('/').any(|c| c == "..") {
        Ok(())
    } else {
        Err(format!("mount target {target:?} must be an absolute path without '..'"))
    }
}

/// The OCI process spec for an exec inside a container whose runtime spec is `base`.
pub(crate) fn exec_process(base: &Value, cmd: &[String]) -> Value {
    let mut process = base["process"].clone();
    process["args"] = json!(cmd);
    process["terminal"] = json!(false);
    process
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Resources;

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into(), "--port=80".into()],
            env: vec!["PATH=/image/bin".into(), "MODE=image".into()],
            workdir: "/app".into(),
            user: String::new(),
            stop_signal: Some("SIGQUIT".into()),
        }
    }

    fn ctx() -> SpecContext<'static> {
        SpecContext {
            namespace: "ns",
            hosts: Path::new("/state/c1/hosts"),
            resolv_conf: Path::new("/state/c1/resolv.conf"),
            hostname_file: Path::new("/state/c1/hostname"),
            passwd: "root:x:0:0::/root:/bin/sh\nweb:x:33:44::/:/bin/false\n",
            group: "root:x:0:\nstaff:x:50:\naudio:x:29:web\n",
            init_binary: Some(Path::new("/usr/bin/tini-static")),
            last_capability: 40,
        }
    }

    fn spec() -> ContainerSpec {
        ContainerSpec { id: "c1".into(), image: "docker.io/x/y:1".into(), ..ContainerSpec::default() }
    }

    #[test]
    fn command_line_follows_docker() {
        let img = image();
        // (entrypoint override, args override, expected)
        type Override = Option<Vec<&'static str>>;
        let cases: [(Override, Override, Vec<&str>); 4] = [
            (None, None, vec!["/entry", "serve", "--port=80"]),
            (None, Some(vec!["other"]), vec!["/entry", "other"]),
            (Some(vec!["/bin/sh"]), None, vec!["/bin/sh"]),
            (Some(vec!["/bin/sh", "-c"]), Some(vec!["echo hi"]), vec!["/bin/sh", "-c", "echo hi"]),
        ];
        for (entrypoint, args, expected) in cases {
            let s = ContainerSpec {
                entrypoint: entrypoint.map(|v| v.into_iter().map(str::to_owned).collect()),
                args: args.map(|v| v.into_iter().map(str::to_owned).collect()),
                ..spec()
            };
            assert_eq!(command_line(&s, &img), expected);
        }
    }

    #[test]
    fn environment_merges_in_order() {
        let s = ContainerSpec { env: vec!["MODE=spec".into(), "EXTRA=1".into()], ..spec() };
        assert_eq!(environment(&s, &image(), "h1"), ["PATH=/image/bin", "HOSTNAME=h1", "MODE=spec", "EXTRA=1"]);
    }

    #[test]
    fn users_resolve_or_say_why_not() {
        let c = ctx();
        let cases = [
            ("", Ok((0, 0))),
            ("1000", Ok((1000, 0))),
            ("33", Ok((33, 44))),
            ("1000:1000", Ok((1000, 1000))),
            ("web", Ok((33, 44))),
            ("web:staff", Ok((33, 50))),
            ("nobody", Err("user \"nobody\" is not in the image's /etc/passwd".to_owned())),
            ("web:wheel", Err("group \"wheel\" is not in the image's /etc/group".to_owned())),
        ];
        for (user, expected) in cases {
            assert_eq!(resolve_user(user, c.passwd, c.group), expected, "{user}");
        }
    }

    #[test]
    fn signals() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("term"), Some(15));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGNOPE"), None);
        assert_eq!(signal_number("99"), None);
        assert_eq!(stop_signal(&spec(), &image()), Ok(3));
        let bad = ContainerSpec { stop_signal: Some("SIGNOPE".into()), ..spec() };
        assert_eq!(
            stop_signal(&bad, &image()),
            Err("unknown stop signal \"SIGNOPE\" (use a name such as SIGTERM or a number)".into())
        );
    }

    #[test]
    fn spec_carries_limits_mounts_and_namespaces() {
        let s = ContainerSpec {
            hostname: Some("web-1".into()),
            user: Some("web".into()),
            netns: Some("/run/netns/task1".into()),
            read_only_rootfs: true,
            resources: Resources {
                nano_cpus: Some(500_000_000),
                cpu_shares: Some(512),
                memory_bytes: Some(64 << 20),
                pids: Some(100),
            },
            mounts: vec![
                Mount::Bind {
                    source: "/srv/data".into(),
                    target: "/data".into(),
                    read_only: true,
                    propagation: Propagation::Rprivate,
                },
                Mount::Tmpfs { target: "/scratch".into(), size_bytes: 1 << 20, mode: 0o1777 },
            ],
            ..spec()
        };
        let v = runtime_spec(&s, &image(), &ctx()).expect("spec");
        assert_eq!(v["hostname"], "web-1");
        assert_eq!(v["process"]["user"], json!({"uid": 33, "gid": 44}));
        assert_eq!(v["process"]["cwd"], "/app");
        assert_eq!(v["root"], json!({"path": "rootfs", "readonly": true}));
        assert_eq!(v["linux"]["cgroupsPath"], "/ns/c1");
        assert_eq!(v["linux"]["resources"]["memory"], json!({"limit": 64 << 20}));
        assert_eq!(v["linux"]["resources"]["cpu"], json!({"quota": 50_000, "period": 100_000, "shares": 512}));
        assert_eq!(v["linux"]["resources"]["pids"], json!({"limit": 100}));
        assert_eq!(v["linux"]["namespaces"][4], json!({"type": "network", "path": "/run/netns/task1"}));
        let mounts = v["mounts"].as_array().expect("mounts");
        let find = |dest: &str| mounts.iter().find(|m| m["destination"] == dest).cloned();
        assert_eq!(find("/data").map(|m| m["options"].clone()), Some(json!(["rbind", "rprivate", "ro"])));
        assert_eq!(
            find("/scratch").map(|m| m["options"].clone()),
            Some(json!(["nosuid", "nodev", "mode=1777", "size=1048576"]))
        );
        assert_eq!(find("/etc/resolv.conf").map(|m| m["source"].clone()), Some(json!("/state/c1/resolv.conf")));
        assert_eq!(v["process"]["capabilities"]["bounding"].as_array().map(Vec::len), Some(14));
    }

    #[test]
    fn seccomp_follows_the_spec_and_the_capabilities() {
        let v = runtime_spec(&spec(), &image(), &ctx()).expect("spec");
        let profile = &v["linux"]["seccomp"];
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(profile["defaultErrnoRet"], 1);
        let caps: Vec<&str> = v["process"]["capabilities"]["bounding"]
            .as_array()
            .expect("capabilities")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            *profile,
            seccomp::default_profile(&caps),
            "the profile is computed from the process's capabilities"
        );
        let allowed = profile["syscalls"][0]["names"].as_array().expect("allowlist");
        let allows = |name: &str| allowed.iter().any(|n| n.as_str() == Some(name));
        assert!(allows("read") && allows("execve") && allows("chroot"));
        assert!(!allows("unshare") && !allows("mount") && !allows("keyctl"));

        let unconfined = ContainerSpec { seccomp: Seccomp::Unconfined, ..spec() };
        let v = runtime_spec(&unconfined, &image(), &ctx()).expect("spec");
        assert_eq!(v["linux"].get("seccomp"), None, "unconfined: no seccomp object");
        assert!(v["linux"].get("namespaces").is_some());
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn capabilities_follow_dockers_rules() {
        let defaults: Vec<&str> = {
            let mut d = DEFAULT_CAPABILITIES.to_vec();
            d.sort_by_key(|c| CAPABILITIES.iter().position(|k| k == c));
            d
        };
        let without = |gone: &[&str]| defaults.iter().filter(|c| !gone.contains(c)).copied().collect::<Vec<_>>();
        let with = |extra: &[&'static str]| {
            let mut set: Vec<&str> = defaults.iter().chain(extra).copied().collect();
            set.sort_by_key(|c| CAPABILITIES.iter().position(|k| k == c));
            set
        };
        /// (add, drop, kernel's last capability, expected set)
        type Case<'a> = (&'a [&'a str], &'a [&'a str], usize, Vec<&'a str>);
        let cases: Vec<Case<'_>> = vec![
            (&[], &[], 40, defaults.clone()),
            (&["NET_ADMIN"], &[], 40, with(&["CAP_NET_ADMIN"])),
            (&["cap_net_admin", "Sys_Ptrace"], &[], 40, with(&["CAP_NET_ADMIN", "CAP_SYS_PTRACE"])),
            (&["CAP_CHOWN"], &[], 40, defaults.clone()),
            (&[], &["CHOWN", "cap_net_raw"], 40, without(&["CAP_CHOWN", "CAP_NET_RAW"])),
            (&[], &["ALL"], 40, vec![]),
            (&["NET_BIND_SERVICE", "kill"], &["all"], 40, vec!["CAP_KILL", "CAP_NET_BIND_SERVICE"]),
            (&["ALL"], &[], 40, CAPABILITIES.to_vec()),
            (&["ALL"], &[], 37, CAPABILITIES[..=37].to_vec()),
            (&["ALL"], &["SYS_ADMIN", "ALL"], 40, {
                let mut all = CAPABILITIES.to_vec();
                all.retain(|c| *c != "CAP_SYS_ADMIN");
                all
            }),
            // Dropped and added: Docker drops first, then adds.
            (&["CHOWN"], &["CHOWN"], 40, defaults.clone()),
        ];
        for (add, drop, last, expected) in cases {
            let got = capabilities(&strings(add), &strings(drop), last);
            assert_eq!(got, Ok(expected), "add {add:?}, drop {drop:?}, last {last}");
        }
        assert_eq!(
            capabilities(&strings(&["NET_FLY"]), &[], 40),
            Err("unknown capability \"NET_FLY\" in capability_add: use a name such as NET_ADMIN or \
                 CAP_NET_ADMIN, or ALL"
                .to_owned())
        );
        assert_eq!(
            capabilities(&[], &strings(&["CAP_"]), 40),
            Err("unknown capability \"CAP_\" in capability_drop: use a name such as NET_ADMIN or CAP_NET_ADMIN, \
                 or ALL"
                .to_owned())
        );
        assert_eq!(
            capabilities(&strings(&["BPF"]), &[], 38),
            Err("capability CAP_BPF is not known to this kernel (its last is CAP_PERFMON): remove it from \
                 capability_add"
                .to_owned())
        );
    }

    #[test]
    fn the_process_and_its_seccomp_profile_get_the_resulting_capabilities() {
        let s =
            ContainerSpec { capability_add: strings(&["SYS_ADMIN"]), capability_drop: strings(&["CHOWN"]), ..spec() };
        let v = runtime_spec(&s, &image(), &ctx()).expect("spec");
        let caps: Vec<&str> = v["process"]["capabilities"]["effective"]
            .as_array()
            .expect("caps")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(caps.contains(&"CAP_SYS_ADMIN") && !caps.contains(&"CAP_CHOWN"), "{caps:?}");
        assert_eq!(v["process"]["capabilities"]["bounding"], v["process"]["capabilities"]["effective"]);
        assert_eq!(v["linux"]["seccomp"], seccomp::default_profile(&caps));
        let allowed = v["linux"]["seccomp"]["syscalls"][0]["names"].as_array().expect("allowlist");
        assert!(allowed.iter().any(|n| n == "mount"), "CAP_SYS_ADMIN brings mount");

        let none = ContainerSpec { capability_drop: strings(&["ALL"]), ..spec() };
        let v = runtime_spec(&none, &image(), &ctx()).expect("spec");
        assert_eq!(v["process"]["capabilities"]["effective"], json!([]));
        let allowed = v["linux"]["seccomp"]["syscalls"][0]["names"].as_array().expect("allowlist");
        assert!(!allowed.iter().any(|n| n == "chroot"), "without CAP_SYS_CHROOT, no chroot");
    }

    #[test]
    fn only_namespaced_sysctls_are_set() {
        let allowed = [
            "net.ipv4.ip_unprivileged_port_start",
            "net.core.somaxconn",
            "kernel.msgmax",
            "kernel.sem",
            "kernel.shmmax",
            "kernel.shm_rmid_forced",
            "fs.mqueue.msg_max",
        ];
        let sysctls: BTreeMap<String, String> = allowed.iter().map(|k| ((*k).to_owned(), "1".to_owned())).collect();
        let v = runtime_spec(&ContainerSpec { sysctls: sysctls.clone(), ..spec() }, &image(), &ctx()).expect("spec");
        assert_eq!(v["linux"]["sysctl"], json!(sysctls));
        assert_eq!(runtime_spec(&spec(), &image(), &ctx()).expect("spec")["linux"].get("sysctl"), None);
        for refused in [
            "kernel.hostname",
            "kernel.domainname",
            "vm.swappiness",
            "fs.file-max",
            "kernel.semx",
            "net",
            "net..ipv4",
            "net.ipv4/../../x",
            "kernel.printk",
        ] {
            let s = ContainerSpec { sysctls: BTreeMap::from([(refused.to_owned(), "1".to_owned())]), ..spec() };
            assert_eq!(
                runtime_spec(&s, &image(), &ctx()).err(),
                Some(format!(
                    "sysctl {refused:?} is not allowed: only namespaced ones are (net.*, kernel.msg*, kernel.sem, \
                     kernel.shm*, fs.mqueue.*)"
                )),
            );
        }
    }

    #[test]
    fn ulimits_become_rlimits() {
        let ulimit = |name: &str, soft: u64, hard: u64| Ulimit { name: name.to_owned(), soft, hard };
        let s = ContainerSpec {
            ulimits: vec![ulimit("nofile", 1500, 3000), ulimit("core", 0, 0), ulimit("memlock", u64::MAX, u64::MAX)],
            ..spec()
        };
        let v = runtime_spec(&s, &image(), &ctx()).expect("spec");
        assert_eq!(
            v["process"]["rlimits"],
            json!([
                {"type": "RLIMIT_NOFILE", "soft": 1500, "hard": 3000},
                {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
                {"type": "RLIMIT_MEMLOCK", "soft": u64::MAX, "hard": u64::MAX},
            ])
        );
        assert_eq!(runtime_spec(&spec(), &image(), &ctx()).expect("spec")["process"].get("rlimits"), None);
        for name in [
            "as",
            "cpu",
            "data",
            "fsize",
            "locks",
            "msgqueue",
            "nice",
            "nproc",
            "rss",
            "rtprio",
            "rttime",
            "sigpending",
            "stack",
        ] {
            assert!(rlimits(&[ulimit(name, 1, 2)]).is_ok(), "{name}");
        }
        // (ulimits, error)
        let cases = [
            (vec![ulimit("nofile", 10, 5)], "ulimit nofile: the soft limit 10 is above the hard limit 5"),
            (vec![ulimit("nofile", 1, 1), ulimit("nofile", 2, 2)], "ulimit nofile is given twice: give it once"),
            (
                vec![ulimit("NOFILE", 1, 1)],
                "unknown ulimit \"NOFILE\": use one of as, core, cpu, data, fsize, locks, memlock, msgqueue, nice, \
                 nofile, nproc, rss, rtprio, rttime, sigpending, stack",
            ),
        ];
        for (ulimits, expected) in cases {
            let s = ContainerSpec { ulimits, ..spec() };
            assert_eq!(runtime_spec(&s, &image(), &ctx()).err().as_deref(), Some(expected));
        }
    }

    #[test]
    fn init_runs_the_command_under_docker_init() {
        let s = ContainerSpec { init: true, ..spec() };
        let v = runtime_spec(&s, &image(), &ctx()).expect("spec");
        assert_eq!(v["process"]["args"], json!(["/sbin/docker-init", "--", "/entry", "serve", "--port=80"]));
        let mounts = v["mounts"].as_array().expect("mounts");
        let init = mounts.iter().find(|m| m["destination"] == "/sbin/docker-init").expect("init mounted");
        assert_eq!(
            *init,
            json!({"destination": "/sbin/docker-init", "type": "bind", "source": "/usr/bin/tini-static",
                   "options": ["rbind", "rprivate", "ro"]})
        );
        let plain = runtime_spec(&spec(), &image(), &ctx()).expect("spec");
        assert_eq!(plain["process"]["args"], json!(["/entry", "serve", "--port=80"]));
        assert!(!plain["mounts"].as_array().expect("mounts").iter().any(|m| m["destination"] == "/sbin/docker-init"));

        let no_binary = SpecContext { init_binary: None, ..ctx() };
        assert_eq!(
            runtime_spec(&s, &image(), &no_binary).err().as_deref(),
            Some(
                "init is requested but no init binary is configured: install Debian's tini package (it provides \
                 /usr/bin/tini-static) or set ContainerdConfig::init_binary"
            )
        );
        assert!(runtime_spec(&spec(), &image(), &no_binary).is_ok(), "no init asked, none needed");
    }

    #[test]
    fn supplementary_groups_resolve_from_the_image() {
        let c = ctx();
        /// (groups, expected GIDs)
        type Case<'a> = (&'a [&'a str], Result<Vec<u32>, &'a str>);
        let cases: &[Case<'_>] = &[
            (&[], Ok(vec![])),
            (&["staff"], Ok(vec![50])),
            (&["audio", "1234", "staff", "50"], Ok(vec![29, 1234, 50])),
            (
                &["staff", "wheel"],
                Err("supplementary group \"wheel\" is not in the image's /etc/group (give its number or a group the \
                     image has)"),
            ),
        ];
        for (groups, expected) in cases {
            let got = resolve_groups(&strings(groups), c.group);
            assert_eq!(got, expected.clone().map_err(str::to_owned), "{groups:?}");
        }
        let s = ContainerSpec { user: Some("web".into()), groups: strings(&["audio", "7"]), ..spec() };
        let v = runtime_spec(&s, &image(), &c).expect("spec");
        assert_eq!(v["process"]["user"], json!({"uid": 33, "gid": 44, "additionalGids": [29, 7]}));
        // Names need the image's files; numbers do not.
        assert!(needs_user_files(&s, &image()));
        assert!(!needs_user_files(&ContainerSpec { groups: strings(&["7", "8"]), ..spec() }, &image()));
        assert!(needs_user_files(&ContainerSpec { groups: strings(&["7", "audio"]), ..spec() }, &image()));
        assert!(!needs_user_files(&ContainerSpec { user: Some("1:2".into()), ..spec() }, &image()));
    }

    #[test]
    fn bind_propagation_reaches_the_mount_and_the_root() {
        let bind = |target: &str, propagation| Mount::Bind {
            source: "/srv/x".into(),
            target: target.to_owned(),
            read_only: false,
            propagation,
        };
        let volume = Mount::Volume {
            source: "/var/lib/shoal/volumes/db/_data".into(),
            target: "/db".into(),
            read_only: false,
            copy_image_content: true,
        };
        // (propagation of the bind mount, its options, rootfsPropagation)
        let cases = [
            (Propagation::Rprivate, "rprivate", None),
            (Propagation::Private, "private", None),
            (Propagation::Rshared, "rshared", Some("shared")),
            (Propagation::Shared, "shared", Some("shared")),
            (Propagation::Rslave, "rslave", Some("rslave")),
            (Propagation::Slave, "slave", Some("rslave")),
        ];
        for (propagation, option, root) in cases {
            let s = ContainerSpec { mounts: vec![bind("/x", propagation), volume.clone()], ..spec() };
            let v = runtime_spec(&s, &image(), &ctx()).expect("spec");
            let mounts = v["mounts"].as_array().expect("mounts");
            let find = |dest: &str| mounts.iter().find(|m| m["destination"] == dest).map(|m| m["options"].clone());
            assert_eq!(find("/x"), Some(json!(["rbind", option, "rw"])), "{propagation:?}");
            assert_eq!(find("/db"), Some(json!(["rbind", "rprivate", "rw"])), "a volume stays private");
            assert_eq!(v["linux"].get("rootfsPropagation").and_then(Value::as_str), root, "{propagation:?}");
        }
        let both =
            ContainerSpec { mounts: vec![bind("/a", Propagation::Rslave), bind("/b", Propagation::Shared)], ..spec() };
        let v = runtime_spec(&both, &image(), &ctx()).expect("spec");
        assert_eq!(v["linux"]["rootfsPropagation"], "shared", "shared wins over slave");
    }

    #[test]
    fn invalid_specs_are_refused_with_reasons() {
        let no_cmd = ImageConfig::default();
        assert_eq!(
            runtime_spec(&spec(), &no_cmd, &ctx()).err().as_deref(),
            Some("no command: the image has no entrypoint or command and the spec gives none")
        );
        let relative = ContainerSpec { workdir: Some("app".into()), ..spec() };
        assert_eq!(
            runtime_spec(&relative, &image(), &ctx()).err().as_deref(),
            Some("working directory \"app\" must be an absolute path")
        );
        let escape = ContainerSpec {
            mounts: vec![Mount::Tmpfs { target: "/a/../etc".into(), size_bytes: 0, mode: 0o755 }],
            ..spec()
        };
        assert_eq!(
            runtime_spec(&escape, &image(), &ctx()).err().as_deref(),
            Some("mount target \"/a/../etc\" must be an absolute path without '..'")
        );
        let tiny_cpu =
            ContainerSpec { resources: Resources { nano_cpus: Some(9_999_999), ..Default::default() }, ..spec() };
        assert_eq!(
            runtime_spec(&tiny_cpu, &image(), &ctx()).err().as_deref(),
            Some("CPU limit of 9999999 nano-CPUs is below the minimum of 0.01 CPU (10000000)")
        );
        let least_cpu =
            ContainerSpec { resources: Resources { nano_cpus: Some(10_000_000), ..Default::default() }, ..spec() };
        let v = runtime_spec(&least_cpu, &image(), &ctx()).expect("0.01 CPU is allowed");
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 1_000);
    }

    #[test]
    fn parses_image_config() {
        let bytes = br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"],"Entrypoint":["/e"],"Cmd":null,"WorkingDir":"/w","User":"1:2","StopSignal":"SIGINT"}}"#;
        let parsed = ImageConfig::parse(bytes).expect("parse");
        assert_eq!(
            parsed,
            ImageConfig {
                entrypoint: vec!["/e".into()],
                cmd: vec![],
                env: vec!["A=1".into()],
                workdir: "/w".into(),
                user: "1:2".into(),
                stop_signal: Some("SIGINT".into()),
            }
        );
        assert!(ImageConfig::parse(b"not json").is_err());
    }

    #[test]
    fn parses_the_image_health_check() {
        let secs = Duration::from_secs;
        let docker = |test: &[&str], interval: u64, timeout: u64, start: u64, retries: u32| Healthcheck {
            test: test.iter().map(|s| (*s).to_owned()).collect(),
            interval: secs(interval),
            timeout: secs(timeout),
            start_period: secs(start),
            retries,
        };
        // (config object, what it gives)
        let cases: &[(&str, Result<Option<Healthcheck>, &str>)] = &[
            (r#"{}"#, Ok(None)),
            (r#"{"Healthcheck":null}"#, Ok(None)),
            (
                r#"{"Healthcheck":{"Test":["CMD-SHELL","test ! -e /tmp/unhealthy"],"Interval":1000000000,"Timeout":2000000000,"StartPeriod":0,"Retries":2}}"#,
                Ok(Some(docker(&["CMD-SHELL", "test ! -e /tmp/unhealthy"], 1, 2, 0, 2))),
            ),
            (
                r#"{"Healthcheck":{"Test":["CMD","/bin/check","--quick"],"StartPeriod":5000000000}}"#,
                Ok(Some(docker(&["CMD", "/bin/check", "--quick"], 0, 0, 5, 0))),
            ),
            (r#"{"Healthcheck":{"Test":["NONE"]}}"#, Ok(Some(docker(&["NONE"], 0, 0, 0, 0)))),
            // Only durations set: the test comes from whoever merges it (Docker's "inherit").
            (r#"{"Healthcheck":{"Interval":3000000000}}"#, Ok(Some(docker(&[], 3, 0, 0, 0)))),
            (r#"{"Healthcheck":"CMD true"}"#, Err(r#"config.Healthcheck is not an object: "CMD true""#)),
            (r#"{"Healthcheck":{"Test":"true"}}"#, Err(r#"config.Healthcheck.Test is not a list of strings: "true""#)),
            (
                r#"{"Healthcheck":{"Test":["CMD",1]}}"#,
                Err(r#"config.Healthcheck.Test is not a list of strings: ["CMD",1]"#),
            ),
            (r#"{"Healthcheck":{"Test":["CMD"]}}"#, Err(r#"config.Healthcheck.Test ["CMD"] has no command"#)),
            (
                r#"{"Healthcheck":{"Test":["HTTP","/"]}}"#,
                Err(r#"config.Healthcheck.Test ["HTTP", "/"]: unknown type "HTTP" (expected CMD, CMD-SHELL or NONE)"#),
            ),
            (
                r#"{"Healthcheck":{"Test":["CMD","true"],"Interval":-1}}"#,
                Err("config.Healthcheck.Interval is not a duration in nanoseconds: -1"),
            ),
            (
                r#"{"Healthcheck":{"Test":["CMD","true"],"Timeout":"30s"}}"#,
                Err(r#"config.Healthcheck.Timeout is not a duration in nanoseconds: "30s""#),
            ),
            (
                r#"{"Healthcheck":{"Test":["CMD","true"],"StartPeriod":1.5}}"#,
                Err("config.Healthcheck.StartPeriod is not a duration in nanoseconds: 1.5"),
            ),
            (
                r#"{"Healthcheck":{"Test":["CMD","true"],"Retries":4294967296}}"#,
                Err("config.Healthcheck.Retries is not a count: 4294967296"),
            ),
        ];
        for (config, expected) in cases {
            let bytes = format!(r#"{{"architecture":"amd64","os":"linux","config":{config}}}"#);
            let got = healthcheck(bytes.as_bytes());
            assert_eq!(got.as_ref().map_err(String::as_str), expected.as_ref().map_err(|e| *e), "{config}");
        }
        assert_eq!(healthcheck(b"{}"), Ok(None), "a config without a config object");
        assert!(healthcheck(b"not json").is_err());
    }
}

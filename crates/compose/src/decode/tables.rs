//! The keys of each mapping of the format: read, ignored by Swarm (a warning), or refused.
//!
//! Service keys are the union of the v3.x schema `docker stack deploy` reads and the Compose
//! Specification. Ignored and refused keys follow docker/cli's `UnsupportedProperties`,
//! `DeprecatedProperties` and `ForbiddenProperties`, extended with the Specification's newer
//! keys that Swarm services cannot express.

use super::Table;

const RESOURCE_HINT: &str = "set resource limits with deploy.resources (limits and reservations of cpus, memory, pids)";

pub(super) const TOP: Table = Table {
    keys: &["version", "name", "services", "networks", "volumes", "secrets", "configs"],
    ignored: &["models"],
    refused: &[("include", "pass each file with its own -c instead (files merge in order)")],
};

pub(super) const SERVICE: Table = Table {
    keys: &[
        "image",
        "command",
        "entrypoint",
        "environment",
        "env_file",
        "labels",
        "user",
        "working_dir",
        "hostname",
        "stop_grace_period",
        "stop_signal",
        "read_only",
        "init",
        "tty",
        "stdin_open",
        "cap_add",
        "cap_drop",
        "sysctls",
        "ulimits",
        "dns",
        "dns_search",
        "dns_opt",
        "extra_hosts",
        "group_add",
        "tmpfs",
        "healthcheck",
        "deploy",
        "ports",
        "volumes",
        "secrets",
        "configs",
        "networks",
        "depends_on",
        "platform",
        "logging",
        "scale",
    ],
    ignored: &[
        "annotations",
        "attach",
        "blkio_config",
        "build",
        "cgroup",
        "cgroup_parent",
        "cgroupns_mode",
        "container_name",
        "cpu_count",
        "cpu_percent",
        "cpu_period",
        "cpu_rt_period",
        "cpu_rt_runtime",
        "credential_spec",
        "develop",
        "device_cgroup_rules",
        "devices",
        "domainname",
        "expose",
        "external_links",
        "gpus",
        "ipc",
        "isolation",
        "label_file",
        "links",
        "mac_address",
        "mem_swappiness",
        "models",
        "network_mode",
        "oom_kill_disable",
        "oom_score_adj",
        "pid",
        "post_start",
        "pre_stop",
        "privileged",
        "profiles",
        "provider",
        "pull_policy",
        "pull_refresh_after",
        "restart",
        "runtime",
        "security_opt",
        "shm_size",
        "storage_opt",
        "use_api_socket",
        "userns_mode",
        "uts",
    ],
    refused: &[
        ("extends", "share settings with a YAML anchor and a merge key (`<<: *defaults`) instead"),
        (
            "volume_driver",
            "define a volume under the top-level `volumes:` with its driver, and mount it from the service",
        ),
        (
            "volumes_from",
            "to share a volume between services, define it under the top-level `volumes:` and mount it in each service",
        ),
        ("cpu_quota", RESOURCE_HINT),
        ("cpu_shares", RESOURCE_HINT),
        ("cpuset", RESOURCE_HINT),
        ("cpus", "set deploy.resources.limits.cpus"),
        ("mem_limit", "set deploy.resources.limits.memory"),
        ("mem_reservation", "set deploy.resources.reservations.memory"),
        ("memswap_limit", RESOURCE_HINT),
        ("pids_limit", "set deploy.resources.limits.pids"),
    ],
};

pub(super) const DEPLOY: Table = Table {
    keys: &[
        "mode",
        "replicas",
        "labels",
        "resources",
        "restart_policy",
        "update_config",
        "rollback_config",
        "placement",
        "endpoint_mode",
    ],
    ignored: &[],
    refused: &[],
};

pub(super) const RESOURCES: Table = Table { keys: &["limits", "reservations"], ignored: &[], refused: &[] };

pub(super) const LIMITS: Table = Table { keys: &["cpus", "memory", "pids"], ignored: &["devices"], refused: &[] };

pub(super) const RESERVATIONS: Table =
    Table { keys: &["cpus", "memory", "generic_resources"], ignored: &["devices"], refused: &[] };

pub(super) const GENERIC_RESOURCE: Table =
    Table { keys: &["discrete_resource_spec"], ignored: &["named_resource_spec"], refused: &[] };

pub(super) const DISCRETE_RESOURCE: Table = Table { keys: &["kind", "value"], ignored: &[], refused: &[] };

pub(super) const RESTART_POLICY: Table =
    Table { keys: &["condition", "delay", "max_attempts", "window"], ignored: &[], refused: &[] };

pub(super) const UPDATE_CONFIG: Table = Table {
    keys: &["parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"],
    ignored: &[],
    refused: &[],
};

pub(super) const PLACEMENT: Table =
    Table { keys: &["constraints", "preferences", "max_replicas_per_node"], ignored: &[], refused: &[] };

pub(super) const PREFERENCE: Table = Table { keys: &["spread"], ignored: &[], refused: &[] };

pub(super) const HEALTHCHECK: Table = Table {
    keys: &["test", "interval", "timeout", "retries", "start_period", "start_interval", "disable"],
    ignored: &[],
    refused: &[],
};

pub(super) const LOGGING: Table = Table { keys: &["driver", "options"], ignored: &[], refused: &[] };

pub(super) const ULIMIT: Table = Table { keys: &["soft", "hard"], ignored: &[], refused: &[] };

pub(super) const ENV_FILE: Table = Table { keys: &["path", "required", "format"], ignored: &[], refused: &[] };

pub(super) const PORT: Table = Table {
    keys: &["target", "published", "protocol", "mode", "host_ip", "name", "app_protocol"],
    ignored: &[],
    refused: &[],
};

pub(super) const SERVICE_VOLUME: Table = Table {
    keys: &["type", "source", "target", "read_only", "consistency", "bind", "volume", "tmpfs"],
    ignored: &["image"],
    refused: &[],
};

pub(super) const BIND: Table =
    Table { keys: &["propagation", "create_host_path", "selinux"], ignored: &["recursive"], refused: &[] };

pub(super) const VOLUME_OPTIONS: Table = Table { keys: &["nocopy", "subpath"], ignored: &[], refused: &[] };

pub(super) const TMPFS: Table = Table { keys: &["size", "mode"], ignored: &[], refused: &[] };

pub(super) const FILE_REFERENCE: Table =
    Table { keys: &["source", "target", "uid", "gid", "mode"], ignored: &[], refused: &[] };

pub(super) const SERVICE_NETWORK: Table = Table {
    keys: &["aliases", "ipv4_address", "ipv6_address", "driver_opts"],
    ignored: &["link_local_ips", "priority", "gw_priority", "mac_address", "interface_name"],
    refused: &[],
};

pub(super) const DEPENDENCY: Table = Table { keys: &["condition", "restart", "required"], ignored: &[], refused: &[] };

pub(super) const NETWORK: Table = Table {
    keys: &["name", "external", "driver", "driver_opts", "attachable", "internal", "enable_ipv6", "ipam", "labels"],
    ignored: &["enable_ipv4"],
    refused: &[],
};

pub(super) const IPAM: Table = Table { keys: &["driver", "config", "options"], ignored: &[], refused: &[] };

pub(super) const IPAM_POOL: Table =
    Table { keys: &["subnet", "ip_range", "gateway", "aux_addresses"], ignored: &[], refused: &[] };

pub(super) const VOLUME: Table =
    Table { keys: &["name", "external", "driver", "driver_opts", "labels"], ignored: &[], refused: &[] };

pub(super) const SECRET: Table = Table {
    keys: &["name", "file", "environment", "external", "labels", "driver", "driver_opts", "template_driver"],
    ignored: &[],
    refused: &[],
};

pub(super) const CONFIG: Table = Table {
    keys: &["name", "file", "environment", "content", "external", "labels", "template_driver"],
    ignored: &[],
    refused: &[],
};

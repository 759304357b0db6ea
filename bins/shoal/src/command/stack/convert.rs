//! A loaded compose project to the objects of a stack, as docker/cli's `cli/compose/convert`
//! makes them: services `STACK_SVC` with the namespace label on them and their containers,
//! networks `STACK_NET` (overlay; `STACK_default` for services that name none), secrets and
//! configs `STACK_NAME` (a `name:` in the file wins), named volumes `STACK_VOL`; `external:`
//! objects keep their own names and are only looked up. Pure: files that secrets and configs
//! come from are read through the caller's function, so the tests run without a disk.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use shoal_api::v1::{self, update_config};
use shoal_compose as compose;

use super::{IMAGE_LABEL, NAMESPACE_LABEL, scope};

/// Docker's name for the MTU driver option, which Shoal's networks call `mtu`.
const DOCKER_MTU: &str = "com.docker.network.driver.mtu";

/// What a stack is made of, ready to compare with the cluster and send.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stack {
    pub(crate) name: String,
    /// The networks the services use (only those, as docker), by name.
    pub(crate) networks: Vec<Network>,
    pub(crate) secrets: Vec<Payload>,
    pub(crate) configs: Vec<Payload>,
    /// In `depends_on` order: each after the services it waits for.
    pub(crate) services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Network {
    pub(crate) name: String,
    /// `None` for an external network: looked up, never created or removed.
    pub(crate) spec: Option<v1::NetworkSpec>,
}

/// A secret or config.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Payload {
    /// Its key in the file.
    pub(crate) key: String,
    pub(crate) name: String,
    /// `None` for an external one.
    pub(crate) content: Option<Content>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Content {
    pub(crate) labels: HashMap<String, String>,
    pub(crate) data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Service {
    pub(crate) spec: v1::ServiceSpec,
    /// The stack's services (full names) to wait for before this one is created or updated.
    pub(crate) waits_for: Vec<(String, compose::Condition)>,
}

impl Service {
    pub(crate) fn name(&self) -> &str {
        self.spec.annotations.as_ref().map_or("", |a| a.name.as_str())
    }
}

/// The stack, and what of the file it could not honour (said on stderr, as the loader's
/// warnings are).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Converted {
    pub(crate) stack: Stack,
    pub(crate) warnings: Vec<String>,
}

/// Converts `project` into stack `stack`; `read` reads the files secrets and configs come from.
pub(crate) fn convert(
    project: &compose::Project,
    stack: &str,
    read: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> anyhow::Result<Converted> {
    let mut warnings = Vec::new();
    let networks = networks(project, stack, &mut warnings)?;
    let network_names: BTreeMap<&str, &str> =
        networks.iter().map(|(key, network)| (key.as_str(), network.name.as_str())).collect();
    let secrets = payloads(stack, "secret", &project.secrets, read)?;
    let configs = payloads(stack, "config", &project.configs, read)?;
    let order = project.startup_order().map_err(|e| anyhow!("{e}"))?;
    let mut services = Vec::with_capacity(order.len());
    for step in order {
        let Some(source) = project.services.get(step.service) else { continue };
        let mut context = ServiceContext { project, stack, key: step.service, warnings: &mut warnings };
        let spec = context.spec(source, &network_names, &secrets, &configs)?;
        let waits_for = step
            .waits_for
            .iter()
            .map(|(dependency, condition)| {
                check_completion(project, step.service, dependency, *condition)?;
                Ok((scope(stack, dependency), *condition))
            })
            .collect::<anyhow::Result<_>>()?;
        services.push(Service { spec, waits_for });
    }
    let networks = networks.into_iter().map(|(_, network)| network).collect();
    Ok(Converted { stack: Stack { name: stack.to_owned(), networks, secrets, configs, services }, warnings })
}

/// `service_completed_successfully` on a service that restarts whatever way its tasks end
/// would wait forever: refused before anything is created.
fn check_completion(
    project: &compose::Project,
    service: &str,
    dependency: &str,
    condition: compose::Condition,
) -> anyhow::Result<()> {
    let Some(dep) = project.services.get(dependency) else { return Ok(()) };
    let job = matches!(dep.deploy.mode, compose::Mode::ReplicatedJob | compose::Mode::GlobalJob);
    let restarts_always = dep
        .deploy
        .restart_policy
        .as_ref()
        .and_then(|p| p.condition)
        .is_none_or(|c| c == compose::RestartCondition::Any);
    if condition == compose::Condition::CompletedSuccessfully && !job && restarts_always {
        bail!(
            "service {service} waits for {dependency} to complete (service_completed_successfully), but {dependency} \
             is a long-running service whose tasks are restarted whenever they end: it never completes; make it a \
             job (deploy.mode: replicated-job) or give it deploy.restart_policy.condition: on-failure"
        );
    }
    Ok(())
}

fn labels(stack: &str, labels: &BTreeMap<String, String>) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.insert(NAMESPACE_LABEL.to_owned(), stack.to_owned());
    labels
}

fn network_name(stack: &str, key: &str, network: &compose::Network) -> String {
    match &network.name {
        Some(name) => name.clone(),
        None if network.external => key.to_owned(),
        None => scope(stack, key),
    }
}

/// The networks the services are on, by key in the file, as docker's `convert.Networks`.
fn networks(
    project: &compose::Project,
    stack: &str,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Vec<(String, Network)>> {
    let used: BTreeSet<&str> = project.services.values().flat_map(|s| s.networks.keys()).map(String::as_str).collect();
    let mut out = Vec::new();
    for key in used {
        let default = compose::Network::default();
        let network = project.networks.get(key).unwrap_or(&default);
        let name = network_name(stack, key, network);
        if network.external {
            out.push((key.to_owned(), Network { name, spec: None }));
            continue;
        }
        match network.driver.as_deref() {
            None | Some("overlay") => {}
            Some(other) => bail!(
                "network {key}: driver {other} is not supported; Shoal's networks are overlay networks: remove \
                 driver: or set it to overlay"
            ),
        }
        let mut options = HashMap::new();
        for (option, value) in &network.driver_opts {
            match option.as_str() {
                DOCKER_MTU | "mtu" => {
                    options.insert("mtu".to_owned(), value.clone());
                }
                "encrypted" => {
                    options.insert("encrypted".to_owned(), value.clone());
                }
                other => warnings.push(format!(
                    "network {key}: driver_opts {other} is ignored; the options are {DOCKER_MTU} (the MTU) and encrypted"
                )),
            }
        }
        let mut ipam = v1::IpamConfig::default();
        if let Some(config) = &network.ipam {
            if config.driver.as_deref().is_some_and(|d| d != "default") || !config.options.is_empty() {
                warnings.push(format!("network {key}: ipam driver and options are ignored; Shoal has one IPAM"));
            }
            match config.config.as_slice() {
                [] => {}
                [pool] => {
                    if !pool.aux_addresses.is_empty() {
                        warnings.push(format!("network {key}: ipam aux_addresses are ignored"));
                    }
                    ipam = v1::IpamConfig {
                        subnet: pool.subnet.clone().unwrap_or_default(),
                        gateway: pool.gateway.clone().unwrap_or_default(),
                        ip_range: pool.ip_range.clone().unwrap_or_default(),
                    };
                }
                pools => bail!(
                    "network {key}: ipam.config has {} pools; a Shoal network has one subnet: keep one",
                    pools.len()
                ),
            }
        }
        if network.enable_ipv6 == Some(true) {
            warnings.push(format!("network {key}: enable_ipv6 is ignored; Shoal's overlay networks are IPv4"));
        }
        let spec = v1::NetworkSpec {
            annotations: Some(v1::Annotations { name: name.clone(), labels: labels(stack, &network.labels) }),
            driver: "overlay".to_owned(),
            ipam: Some(ipam),
            attachable: network.attachable,
            internal: network.internal,
            ingress: false,
            options,
        };
        out.push((key.to_owned(), Network { name, spec: Some(spec) }));
    }
    Ok(out)
}

/// Every secret or config the file declares, as docker's `convert.Secrets` and `convert.Configs`.
fn payloads(
    stack: &str,
    noun: &str,
    objects: &BTreeMap<String, compose::FileObject>,
    read: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> anyhow::Result<Vec<Payload>> {
    let mut out = Vec::new();
    for (key, object) in objects {
        let external = object.source == compose::ObjectSource::External;
        let name = match &object.name {
            Some(name) => name.clone(),
            None if external => key.clone(),
            None => scope(stack, key),
        };
        if let Some(driver) = &object.driver {
            bail!(
                "{noun} {key}: driver {driver} is not supported; Shoal keeps {noun}s in its own store: remove driver:"
            );
        }
        if let Some(driver) = &object.template_driver {
            bail!("{noun} {key}: template_driver {driver} is not supported; give the content as it should be");
        }
        let data = match &object.source {
            compose::ObjectSource::External => None,
            compose::ObjectSource::File(path) => {
                Some(read(path).with_context(|| format!("{noun} {key}: cannot read its file {}", path.display()))?)
            }
            compose::ObjectSource::Environment { value, .. } => Some(value.clone().into_bytes()),
            compose::ObjectSource::Content(content) => Some(content.clone().into_bytes()),
        };
        let content = data.map(|data| Content { labels: labels(stack, &object.labels), data });
        out.push(Payload { key: key.clone(), name, content });
    }
    Ok(out)
}

fn signed(value: u64, what: &str, key: &str) -> anyhow::Result<i64> {
    i64::try_from(value).map_err(|_| anyhow!("service {key}: {what} {value} is too large"))
}

/// Docker's update defaults (one task at a time, pause on failure, 5 s monitor, stop first),
/// as `service create` stores them, with what the file sets.
fn update_config(
    source: Option<&compose::UpdateConfig>,
    rollback: bool,
    key: &str,
) -> anyhow::Result<v1::UpdateConfig> {
    let mut config = crate::command::service::default_update_config();
    let Some(source) = source else { return Ok(config) };
    if let Some(parallelism) = source.parallelism {
        config.parallelism = parallelism;
    }
    if let Some(delay) = source.delay {
        config.delay = Some(shoal_api::to_duration(delay));
    }
    if let Some(action) = source.failure_action {
        config.failure_action = match action {
            compose::FailureAction::Pause => update_config::FailureAction::Pause,
            compose::FailureAction::Continue => update_config::FailureAction::Continue,
            compose::FailureAction::Rollback if rollback => bail!(
                "service {key}: deploy.rollback_config.failure_action cannot be rollback; a rollback that fails can \
                 pause or continue"
            ),
            compose::FailureAction::Rollback => update_config::FailureAction::Rollback,
        } as i32;
    }
    if let Some(monitor) = source.monitor {
        config.monitor = Some(shoal_api::to_duration(monitor));
    }
    if let Some(ratio) = source.max_failure_ratio {
        config.max_failure_ratio = ratio as f32;
    }
    if let Some(order) = source.order {
        config.order = match order {
            compose::UpdateOrder::StopFirst => update_config::Order::StopFirst,
            compose::UpdateOrder::StartFirst => update_config::Order::StartFirst,
        } as i32;
    }
    Ok(config)
}

/// `restart_policy` (or `restart:`, which the loader reads into it) over Swarm's default: any
/// exit, after 5 s.
fn restart_policy(source: Option<&compose::RestartPolicy>) -> v1::RestartPolicy {
    let mut policy = crate::command::service::default_restart_policy();
    let Some(source) = source else { return policy };
    if let Some(condition) = source.condition {
        policy.condition = match condition {
            compose::RestartCondition::Any => v1::restart_policy::Condition::Any,
            compose::RestartCondition::OnFailure => v1::restart_policy::Condition::OnFailure,
            compose::RestartCondition::None => v1::restart_policy::Condition::None,
        } as i32;
    }
    if let Some(delay) = source.delay {
        policy.delay = Some(shoal_api::to_duration(delay));
    }
    if let Some(max) = source.max_attempts {
        policy.max_attempts = max;
    }
    policy.window = source.window.map(shoal_api::to_duration);
    policy
}

/// A capability as the spec stores it: upper case without `CAP_` (as `--cap-add`).
fn capability(text: &str) -> String {
    let upper = text.trim().to_ascii_uppercase();
    upper.strip_prefix("CAP_").map_or_else(|| upper.clone(), str::to_owned)
}

/// An octal mode or a number as `uid`/`gid` take them.
fn id(value: Option<&String>, what: &str, key: &str, source: &str) -> anyhow::Result<u32> {
    match value {
        None => Ok(0),
        Some(text) => text.trim().parse().map_err(|_| {
            anyhow!("service {key}: {what} {text:?} of {source} is not a number; give a numeric ID such as 1000")
        }),
    }
}

/// One service's conversion.
struct ServiceContext<'a> {
    project: &'a compose::Project,
    stack: &'a str,
    key: &'a str,
    warnings: &'a mut Vec<String>,
}

impl ServiceContext<'_> {
    fn warn(&mut self, what: String) {
        self.warnings.push(format!("service {}: {what}", self.key));
    }

    fn spec(
        &mut self,
        source: &compose::Service,
        networks: &BTreeMap<&str, &str>,
        secrets: &[Payload],
        configs: &[Payload],
    ) -> anyhow::Result<v1::ServiceSpec> {
        let (stack, key) = (self.stack, self.key);
        let deploy = &source.deploy;
        let mut annotation_labels = labels(stack, &deploy.labels);
        annotation_labels.insert(IMAGE_LABEL.to_owned(), source.image.clone());
        let mode = match (deploy.mode, deploy.replicas) {
            (compose::Mode::Replicated, replicas) => {
                v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: replicas.unwrap_or(1) })
            }
            (compose::Mode::ReplicatedJob, replicas) => {
                // As docker: the replicas are the completions and how many run at once.
                let replicas = replicas.unwrap_or(1);
                v1::service_spec::Mode::ReplicatedJob(v1::ReplicatedJob {
                    max_concurrent: replicas,
                    total_completions: replicas,
                })
            }
            (compose::Mode::Global, None) => v1::service_spec::Mode::Global(v1::GlobalService {}),
            (compose::Mode::GlobalJob, None) => v1::service_spec::Mode::GlobalJob(v1::GlobalJob {}),
            (compose::Mode::Global | compose::Mode::GlobalJob, Some(_)) => bail!(
                "service {key}: deploy.replicas can only be used with modes replicated and replicated-job; remove it"
            ),
        };
        let mut attachments = Vec::new();
        for (network_key, attachment) in &source.networks {
            let Some(target) = networks.get(network_key.as_str()) else {
                bail!("service {key}: network {network_key} is not defined; add it under the top-level networks:")
            };
            if attachment.ipv4_address.is_some() || attachment.ipv6_address.is_some() {
                self.warn(format!("ipv4_address and ipv6_address on network {network_key} are ignored (Swarm)"));
            }
            // As docker: the service is known on each of its networks by its name in the file.
            let mut aliases = attachment.aliases.clone();
            aliases.push(key.to_owned());
            attachments.push(v1::NetworkAttachmentConfig { target: (*target).to_owned(), aliases });
        }
        attachments.sort_by(|a, b| a.target.cmp(&b.target));
        let endpoint = self.endpoint(source);
        let container = self.container(source, secrets, configs)?;
        let resources = self.resources(&deploy.resources)?;
        let placement = v1::Placement {
            constraints: deploy.placement.constraints.clone(),
            preferences: deploy.placement.preferences.iter().map(|label| format!("spread={label}")).collect(),
            max_replicas: deploy.placement.max_replicas_per_node.unwrap_or(0),
            platforms: source.platform.iter().map(|p| platform(p)).collect(),
        };
        Ok(v1::ServiceSpec {
            annotations: Some(v1::Annotations { name: scope(stack, key), labels: annotation_labels }),
            networks: attachments,
            endpoint,
            task: Some(v1::TaskSpec {
                container: Some(container),
                resources: Some(resources),
                restart: Some(restart_policy(deploy.restart_policy.as_ref())),
                placement: Some(placement),
                force_update: 0,
            }),
            mode: Some(mode),
            update: Some(update_config(deploy.update_config.as_ref(), false, key)?),
            rollback: Some(update_config(deploy.rollback_config.as_ref(), true, key)?),
        })
    }

    fn endpoint(&mut self, source: &compose::Service) -> Option<v1::EndpointSpec> {
        let mut ports = Vec::new();
        for port in &source.ports {
            if let Some(ip) = &port.host_ip {
                self.warn(format!(
                    "the host address {ip} of port {} is ignored: Swarm publishes on every address",
                    port.target
                ));
            }
            ports.push(v1::PortConfig {
                name: port.name.clone().unwrap_or_default(),
                protocol: match port.protocol {
                    compose::Protocol::Tcp => v1::port_config::Protocol::Tcp,
                    compose::Protocol::Udp => v1::port_config::Protocol::Udp,
                    compose::Protocol::Sctp => v1::port_config::Protocol::Sctp,
                } as i32,
                target_port: u32::from(port.target),
                published_port: port.published.map_or(0, u32::from),
                publish_mode: match port.mode {
                    compose::PortMode::Ingress => v1::port_config::PublishMode::Ingress,
                    compose::PortMode::Host => v1::port_config::PublishMode::Host,
                } as i32,
            });
        }
        // As docker: by published port (those the cluster picks first).
        ports.sort_by_key(|p| p.published_port);
        let mode = source.deploy.endpoint_mode;
        (mode.is_some() || !ports.is_empty()).then_some(v1::EndpointSpec {
            mode: match mode {
                Some(compose::EndpointMode::Dnsrr) => v1::endpoint_spec::Mode::Dnsrr,
                Some(compose::EndpointMode::Vip) | None => v1::endpoint_spec::Mode::Vip,
            } as i32,
            ports,
        })
    }

    fn resources(&mut self, source: &compose::Resources) -> anyhow::Result<v1::ResourceRequirements> {
        let key = self.key;
        let mut limits = v1::Resources::default();
        if let Some(l) = &source.limits {
            limits.nano_cpus = signed(l.nano_cpus.unwrap_or(0), "the CPU limit", key)?;
            limits.memory_bytes = signed(l.memory_bytes.unwrap_or(0), "the memory limit", key)?;
            limits.pids = l.pids.unwrap_or(0);
        }
        let mut reservations = v1::Resources::default();
        if let Some(r) = &source.reservations {
            reservations.nano_cpus = signed(r.nano_cpus.unwrap_or(0), "the CPU reservation", key)?;
            reservations.memory_bytes = signed(r.memory_bytes.unwrap_or(0), "the memory reservation", key)?;
            reservations.generic = r
                .generic_resources
                .iter()
                .map(|(kind, value)| v1::GenericResource { kind: kind.clone(), value: *value })
                .collect();
        }
        Ok(v1::ResourceRequirements { limits: Some(limits), reservations: Some(reservations) })
    }

    fn container(
        &mut self,
        source: &compose::Service,
        secrets: &[Payload],
        configs: &[Payload],
    ) -> anyhow::Result<v1::ContainerSpec> {
        let (stack, key) = (self.stack, self.key);
        let mut env = Vec::new();
        for (name, value) in &source.environment {
            match value {
                Some(value) => env.push(format!("{name}={value}")),
                None => self.warn(format!(
                    "environment variable {name} has no value and is not set here; it is left out (give it a value)"
                )),
            }
        }
        for (flag, set) in [("tty", source.tty), ("stdin_open", source.stdin_open)] {
            if set {
                self.warn(format!("{flag} is ignored: Shoal's tasks have no terminal"));
            }
        }
        if source.logging.is_some() {
            self.warn("logging is ignored: tasks' output is kept by their node (shoal service logs)".to_owned());
        }
        if source.healthcheck.as_ref().is_some_and(|h| h.start_interval.is_some()) {
            self.warn("healthcheck.start_interval is ignored".to_owned());
        }
        let healthcheck = match &source.healthcheck {
            None => None,
            Some(h) => Some(v1::HealthConfig {
                test: h.test.clone(),
                interval: h.interval.map(shoal_api::to_duration),
                timeout: h.timeout.map(shoal_api::to_duration),
                retries: match h.retries {
                    None => 0,
                    Some(n) => {
                        u32::try_from(n).map_err(|_| anyhow!("service {key}: healthcheck.retries {n} is too large"))?
                    }
                },
                start_period: h.start_period.map(shoal_api::to_duration),
            }),
        };
        let dns_config =
            (!(source.dns.is_empty() && source.dns_search.is_empty() && source.dns_opt.is_empty())).then(|| {
                v1::DnsConfig {
                    nameservers: source.dns.clone(),
                    search: source.dns_search.clone(),
                    options: source.dns_opt.clone(),
                }
            });
        let mut mounts = Vec::new();
        for volume in &source.volumes {
            mounts.push(self.mount(volume)?);
        }
        for tmpfs in &source.tmpfs {
            mounts.push(self.tmpfs(tmpfs)?);
        }
        let secrets = source
            .secrets
            .iter()
            .map(|r| {
                let (name, file) = file_reference(r, secrets, "secret", key, r.source.clone())?;
                Ok(v1::SecretReference {
                    secret_id: String::new(),
                    secret_name: name,
                    file: Some(file),
                    data_version: 0,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        let configs = source
            .configs
            .iter()
            .map(|r| {
                let (name, file) = file_reference(r, configs, "config", key, format!("/{}", r.source))?;
                Ok(v1::ConfigReference {
                    config_id: String::new(),
                    config_name: name,
                    file: Some(file),
                    data_version: 0,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(v1::ContainerSpec {
            image: source.image.clone(),
            labels: labels(stack, &source.labels),
            command: source.entrypoint.clone().unwrap_or_default(),
            args: source.command.clone().unwrap_or_default(),
            hostname: source.hostname.clone().unwrap_or_default(),
            env,
            dir: source.working_dir.clone().unwrap_or_default(),
            user: source.user.clone().unwrap_or_default(),
            mounts,
            stop_grace_period: source.stop_grace_period.map(shoal_api::to_duration),
            stop_signal: source.stop_signal.clone().unwrap_or_default(),
            healthcheck,
            read_only: source.read_only,
            seccomp: v1::container_spec::Seccomp::Default as i32,
            secrets,
            configs,
            init: source.init.unwrap_or(false),
            capability_add: source.cap_add.iter().map(|c| capability(c)).collect(),
            capability_drop: source.cap_drop.iter().map(|c| capability(c)).collect(),
            sysctls: source.sysctls.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ulimits: source
                .ulimits
                .iter()
                .map(|(name, limit)| v1::Ulimit { name: name.clone(), soft: limit.soft, hard: limit.hard })
                .collect(),
            dns_config,
            hosts: source.extra_hosts.iter().map(|(host, ip)| format!("{ip} {host}")).collect(),
            groups: source.group_add.clone(),
        })
    }

    /// One entry of `volumes:`, as docker's `convertVolumeToMount`.
    fn mount(&mut self, volume: &compose::ServiceVolume) -> anyhow::Result<v1::Mount> {
        let (stack, key) = (self.stack, self.key);
        let target = &volume.target;
        let mut mount = v1::Mount { target: target.clone(), read_only: volume.read_only, ..Default::default() };
        match volume.kind {
            compose::VolumeKind::Volume => {
                mount.r#type = v1::mount::Type::Volume as i32;
                let options = volume.volume.clone().unwrap_or_default();
                if let Some(subpath) = &options.subpath {
                    bail!(
                        "service {key}: volume at {target}: subpath {subpath} is not supported; mount the whole volume"
                    );
                }
                let mut volume_options = v1::mount::VolumeOptions { no_copy: options.nocopy, ..Default::default() };
                match &volume.source {
                    None => bail!(
                        "service {key}: the anonymous volume at {target} is not supported; name it (NAME:{target}) \
                         and declare NAME under the top-level volumes:"
                    ),
                    Some(source) => {
                        let declared = self.project.volumes.get(source).cloned().unwrap_or_default();
                        if declared.external {
                            mount.source = declared.name.clone().unwrap_or_else(|| source.clone());
                        } else {
                            mount.source = declared.name.clone().unwrap_or_else(|| scope(stack, source));
                            match declared.driver.as_deref() {
                                None | Some("local") => {}
                                Some(other) => bail!(
                                    "volume {source}: driver {other} is not supported; the one volume driver is local \
                                     (its driver_opts type, o and device mount NFS and the like)"
                                ),
                            }
                            volume_options.driver = declared.driver.clone().unwrap_or_default();
                            volume_options.labels = labels(stack, &declared.labels);
                            volume_options.driver_options =
                                declared.driver_opts.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                        }
                    }
                }
                if volume_options != v1::mount::VolumeOptions::default() {
                    mount.volume_options = Some(volume_options);
                }
            }
            compose::VolumeKind::Bind => {
                mount.r#type = v1::mount::Type::Bind as i32;
                mount.source = volume.source.clone().unwrap_or_default();
                let bind = volume.bind.clone().unwrap_or_default();
                if bind.selinux.is_some() {
                    self.warn(format!("the SELinux relabelling of the bind at {target} is ignored"));
                }
                if let Some(propagation) = &bind.propagation {
                    use v1::mount::bind_options::Propagation;
                    let propagation = match propagation.as_str() {
                        "rprivate" => Propagation::Rprivate,
                        "private" => Propagation::Private,
                        "rshared" => Propagation::Rshared,
                        "shared" => Propagation::Shared,
                        "rslave" => Propagation::Rslave,
                        "slave" => Propagation::Slave,
                        other => bail!(
                            "service {key}: bind at {target}: propagation {other} is not one of rprivate, private, \
                             rshared, shared, rslave, slave"
                        ),
                    };
                    mount.bind_options = Some(v1::mount::BindOptions { propagation: propagation as i32 });
                }
            }
            compose::VolumeKind::Tmpfs => {
                mount.r#type = v1::mount::Type::Tmpfs as i32;
                let tmpfs = volume.tmpfs.clone().unwrap_or_default();
                mount.tmpfs_size_bytes = signed(tmpfs.size.unwrap_or(0), "the tmpfs size", key)?;
                mount.tmpfs_mode = tmpfs.mode.unwrap_or(0);
            }
            kind @ (compose::VolumeKind::Npipe | compose::VolumeKind::Cluster | compose::VolumeKind::Image) => bail!(
                "service {key}: the {} mount at {target} is not supported; Shoal mounts volumes, binds and tmpfs",
                match kind {
                    compose::VolumeKind::Npipe => "npipe",
                    compose::VolumeKind::Cluster => "cluster",
                    _ => "image",
                }
            ),
        }
        Ok(mount)
    }

    /// An entry of `tmpfs:`: `/run` or `/run:size=64m,mode=1777` (other options are ignored).
    fn tmpfs(&mut self, entry: &str) -> anyhow::Result<v1::Mount> {
        let key = self.key;
        let (target, options) = entry.split_once(':').unwrap_or((entry, ""));
        let mut mount =
            v1::Mount { r#type: v1::mount::Type::Tmpfs as i32, target: target.trim().to_owned(), ..Default::default() };
        for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            match option.split_once('=') {
                Some(("size", size)) => {
                    mount.tmpfs_size_bytes =
                        crate::command::parse_bytes(size).map_err(|e| anyhow!("service {key}: tmpfs {entry}: {e}"))?;
                }
                Some(("mode", mode)) => {
                    mount.tmpfs_mode = u32::from_str_radix(mode, 8).map_err(|_| {
                        anyhow!("service {key}: tmpfs {entry}: mode {mode:?} is not an octal mode such as 1777")
                    })?;
                }
                _ => self.warn(format!("tmpfs option {option} of {target} is ignored (size and mode are kept)")),
            }
        }
        Ok(mount)
    }
}

/// The stored object a service's secret or config names, and where its file goes: the target
/// (`default_target` when none), uid and gid (0) and mode (0444), as docker's
/// `convertFileObject`.
fn file_reference(
    reference: &compose::FileReference,
    objects: &[Payload],
    noun: &str,
    key: &str,
    default_target: String,
) -> anyhow::Result<(String, v1::FileTarget)> {
    let source = &reference.source;
    let Some(object) = objects.iter().find(|o| &o.key == source) else {
        bail!("service {key}: {noun} {source} is not defined; add it under the top-level {noun}s:")
    };
    let what = format!("{noun} {source}");
    let file = v1::FileTarget {
        name: reference.target.clone().unwrap_or(default_target),
        uid: id(reference.uid.as_ref(), "uid", key, &what)?,
        gid: id(reference.gid.as_ref(), "gid", key, &what)?,
        mode: reference.mode.unwrap_or(0o444),
    };
    Ok((object.name.clone(), file))
}

/// `os[/arch[/variant]]` as a placement platform (the variant is not matched).
fn platform(text: &str) -> v1::Platform {
    let mut parts = text.split('/');
    let os = parts.next().unwrap_or_default().to_owned();
    let architecture = parts.next().unwrap_or_default().to_owned();
    v1::Platform { architecture, os }
}

#[cfg(test)]
mod tests;

//! The control API's networks: create (validated against the other networks at once, then
//! allocated by the leader), inspect with the peers per node, list, remove (refused while in
//! use) and prune; and the network side of service specs (names resolved to IDs, endpoint and
//! published ports checked against the other services), so that bad input gets one clear error
//! and nothing half-made stays behind.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use shoal_api::v1;
use tonic::Status;

use super::ControlService;
use crate::allocator::{self, Allocator, Cursors, holds_addresses, is_ingress, is_ingress_port, network_name};
use crate::ids::new_id;
use crate::objects::{Object, ObjectError};
use crate::validate::validate_name;

/// How long `CreateNetwork` waits for the leader's allocator before answering without it.
const ALLOCATION_WAIT: Duration = Duration::from_secs(5);

/// Options `--opt` takes.
const OPTIONS: &[&str] = &["mtu", crate::allocator::ENCRYPTED];

impl ControlService {
    pub(super) async fn create_network(&self, spec: Option<v1::NetworkSpec>) -> Result<v1::Network, Status> {
        let mut spec = spec.ok_or_else(|| Status::invalid_argument("create network: no spec given"))?;
        let name = spec.annotations.as_ref().map(|a| a.name.clone()).unwrap_or_default();
        validate_name("network", &name)?;
        match spec.driver.as_str() {
            "" => spec.driver = "overlay".to_owned(),
            "overlay" => {}
            other => {
                return Err(Status::invalid_argument(format!(
                    "network {name}: driver {other:?} is not supported; Shoal's networks are overlay networks (-d overlay)"
                )));
            }
        }
        if let Some(option) = spec.options.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
            return Err(Status::invalid_argument(format!(
                "network {name}: --opt {option} is not supported; supported: {}",
                OPTIONS.join(", ")
            )));
        }
        if let Some(value) = spec.options.get(crate::allocator::ENCRYPTED)
            && !matches!(value.as_str(), "" | "true")
        {
            return Err(Status::invalid_argument(format!(
                "network {name}: --opt encrypted={value} is not understood; give --opt encrypted (or encrypted=true), or leave it out for a plain network"
            )));
        }
        if spec.ingress && (spec.attachable || spec.internal) {
            return Err(Status::invalid_argument(format!(
                "network {name}: an ingress network cannot be --attachable or --internal"
            )));
        }
        let networks = self.objects.list::<v1::Network>().await?;
        if spec.ingress
            && let Some(existing) = networks.iter().find(|n| is_ingress(n))
        {
            return Err(Status::already_exists(format!(
                "an ingress network exists already: {} ({}); remove it first (shoal network rm {}) when no service publishes ports",
                network_name(existing),
                existing.id,
                network_name(existing)
            )));
        }
        // A dry run against the networks as they are: overlaps, a gateway outside the subnet,
        // a bad MTU are refused now rather than left to the allocator.
        let network = v1::Network { id: new_id(), spec: Some(spec), ..Default::default() };
        let mut cursors = Cursors::new();
        let mut dry = Allocator::new(&[], 0, &networks, &[], &[], &[], &mut cursors);
        if !network.spec.as_ref().and_then(|s| s.ipam.as_ref()).is_none_or(|i| i.subnet.is_empty()) {
            dry.allocate_network(&network).map_err(|e| Status::invalid_argument(e.to_string()))?;
        } else {
            check_ipam_without_subnet(&network)?;
        }
        let created = self.objects.create(network).await?;
        tracing::info!(network.id = %created.id, network.name = %name, "network created");
        // The leader allocates it within a pass; answer with the allocation when it comes.
        let deadline = tokio::time::Instant::now() + ALLOCATION_WAIT;
        loop {
            let current = match self.objects.get::<v1::Network>(&created.id).await {
                Ok(current) => current,
                Err(err) => return Err(err.into()),
            };
            if current.allocation.is_some() {
                return Ok(current);
            }
            if !current.allocation_error.is_empty() {
                // Nothing half-made stays behind.
                let _ = self.objects.delete::<v1::Network>(&current.id, current.version()).await;
                return Err(Status::resource_exhausted(format!("network {name}: {}", current.allocation_error)));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(current);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(super) async fn get_network(&self, reference: &str) -> Result<v1::GetNetworkResponse, Status> {
        let network = self.resolve::<v1::Network>(reference).await?;
        let tasks = self.objects.list::<v1::Task>().await?;
        let nodes = self.objects.list::<v1::Node>().await?;
        let mut peers: BTreeMap<String, v1::NetworkPeerSummary> = BTreeMap::new();
        let mut summary = |node_id: &str, endpoint: String| {
            let entry = peers.entry(node_id.to_owned()).or_insert_with(|| {
                let node = nodes.iter().find(|n| n.id == node_id);
                v1::NetworkPeerSummary {
                    node_id: node_id.to_owned(),
                    hostname: node.and_then(|n| n.description.as_ref()).map(|d| d.hostname.clone()).unwrap_or_default(),
                    node_addr: node.map(node_data_addr).unwrap_or_default(),
                    endpoints: Vec::new(),
                }
            });
            entry.endpoints.push(endpoint);
        };
        for task in tasks.iter().filter(|t| holds_addresses(t) && !t.node_id.is_empty()) {
            for attachment in task.networks.iter().filter(|a| a.network.as_ref().is_some_and(|n| n.id == network.id)) {
                let name = task.annotations.as_ref().map(|a| a.name.as_str()).unwrap_or(&task.id);
                summary(&task.node_id, format!("{name} {}", attachment.addresses.join(" ")));
            }
        }
        for node in &nodes {
            if let Some(attachment) =
                node.ingress.as_ref().filter(|a| a.network.as_ref().is_some_and(|n| n.id == network.id))
            {
                summary(&node.id, format!("ingress-sbox {}", attachment.addresses.join(" ")));
            }
        }
        Ok(v1::GetNetworkResponse { network: Some(network), peers: peers.into_values().collect() })
    }

    pub(super) async fn list_networks(&self, names: &[String]) -> Result<Vec<v1::Network>, Status> {
        Ok(self
            .objects
            .list::<v1::Network>()
            .await?
            .into_iter()
            .filter(|n| names.is_empty() || names.iter().any(|name| name == network_name(n)))
            .collect())
    }

    /// Why `network` cannot be removed now, if it cannot: the services that use it, or tasks
    /// still attached (ending ones keep their address until their node says they ended).
    async fn in_use(&self, network: &v1::Network) -> Result<Option<String>, Status> {
        let services = self.objects.list::<v1::Service>().await?;
        let mut users: Vec<String> = services
            .iter()
            .filter(|s| {
                let spec = s.spec.clone().unwrap_or_default();
                spec.networks.iter().any(|n| n.target == network.id)
                    || (is_ingress(network)
                        && spec.endpoint.as_ref().is_some_and(|e| e.ports.iter().any(is_ingress_port)))
            })
            .map(|s| s.name().unwrap_or(&s.id).to_owned())
            .collect();
        users.sort();
        let name = network_name(network);
        if !users.is_empty() {
            let how = if is_ingress(network) { "publishes ports through it" } else { "uses it" };
            return Ok(Some(format!(
                "network {name} is in use: service {} {how}; remove the service or its --network first",
                users.join(", ")
            )));
        }
        let tasks = self.objects.list::<v1::Task>().await?;
        let attached = tasks
            .iter()
            .filter(|t| holds_addresses(t))
            .filter(|t| t.networks.iter().any(|a| a.network.as_ref().is_some_and(|n| n.id == network.id)))
            .count();
        if attached > 0 {
            return Ok(Some(format!(
                "network {name} has {attached} task(s) still attached (ending); try again when they have stopped"
            )));
        }
        Ok(None)
    }

    pub(super) async fn remove_network(&self, reference: &str) -> Result<(), Status> {
        let network = self.resolve::<v1::Network>(reference).await?;
        if let Some(why) = self.in_use(&network).await? {
            return Err(Status::failed_precondition(why));
        }
        self.objects.delete::<v1::Network>(&network.id, network.version()).await?;
        tracing::info!(network.id = %network.id, "network removed");
        Ok(())
    }

    pub(super) async fn prune_networks(&self) -> Result<Vec<String>, Status> {
        let mut removed = Vec::new();
        for network in self.objects.list::<v1::Network>().await?.iter().filter(|n| !is_ingress(n)) {
            if self.in_use(network).await?.is_some() {
                continue;
            }
            match self.objects.delete::<v1::Network>(&network.id, network.version()).await {
                Ok(()) => removed.push(network_name(network).to_owned()),
                Err(ObjectError::NotFound { .. } | ObjectError::Conflict { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(removed)
    }

    /// Resolves the networks a service spec names to their IDs and checks its endpoint against
    /// the cluster: unknown networks, the ingress network named explicitly, dnsrr with routing
    /// mesh ports (which need a VIP), a port another service publishes, and ports without an
    /// ingress network are refused, each with what to do.
    pub(super) async fn resolve_service_networks(
        &self,
        spec: &mut v1::ServiceSpec,
        service_id: Option<&str>,
    ) -> Result<(), Status> {
        let name = spec.annotations.as_ref().map(|a| a.name.clone()).unwrap_or_default();
        let networks = self.objects.list::<v1::Network>().await?;
        let mut seen = HashSet::new();
        for attachment in &mut spec.networks {
            let reference = attachment.target.clone();
            let network = match self.resolve::<v1::Network>(&reference).await {
                Ok(network) => network,
                Err(status) if status.code() == tonic::Code::NotFound => {
                    return Err(Status::not_found(format!(
                        "service {name}: network {reference} not found; create it with shoal network create {reference}"
                    )));
                }
                Err(status) => return Err(status),
            };
            if is_ingress(&network) {
                return Err(Status::invalid_argument(format!(
                    "service {name}: the ingress network {} cannot be attached with --network; publish a port (--publish) to use the routing mesh",
                    network_name(&network)
                )));
            }
            if !seen.insert(network.id.clone()) {
                return Err(Status::invalid_argument(format!("service {name}: network {reference} is attached twice")));
            }
            for alias in &attachment.aliases {
                validate_name("network alias", alias)?;
            }
            attachment.target = network.id;
        }
        let endpoint = spec.endpoint.clone().unwrap_or_default();
        let ingress_ports: Vec<&v1::PortConfig> = endpoint.ports.iter().filter(|p| is_ingress_port(p)).collect();
        let mut keys = HashSet::new();
        for port in &endpoint.ports {
            let protocol = allocator::protocol_name(port.protocol);
            if port.target_port == 0 || port.target_port > 65535 {
                return Err(Status::invalid_argument(format!(
                    "service {name}: target port {} is not a port number (1-65535)",
                    port.target_port
                )));
            }
            if port.published_port > 65535 {
                return Err(Status::invalid_argument(format!(
                    "service {name}: published port {} is not a port number (1-65535)",
                    port.published_port
                )));
            }
            if !is_ingress_port(port) && port.published_port == 0 {
                return Err(Status::invalid_argument(format!(
                    "service {name}: a host-mode port needs a published port (published=PORT,target={},mode=host)",
                    port.target_port
                )));
            }
            if port.published_port != 0 && !keys.insert((port.protocol, port.published_port)) {
                return Err(Status::invalid_argument(format!(
                    "service {name}: port {}/{protocol} is published twice",
                    port.published_port
                )));
            }
        }
        if ingress_ports.is_empty() {
            return self.check_host_ports(&name, &endpoint, service_id).await;
        }
        if endpoint.mode == v1::endpoint_spec::Mode::Dnsrr as i32 {
            return Err(Status::invalid_argument(format!(
                "service {name}: endpoint mode dnsrr has no VIP, so its ports cannot be published through the routing mesh; publish them with mode=host, or use --endpoint-mode vip"
            )));
        }
        if !networks.iter().any(is_ingress) {
            return Err(Status::failed_precondition(allocator::AllocError::NoIngress.to_string()));
        }
        let services = self.objects.list::<v1::Service>().await?;
        let mut cursors = Cursors::new();
        let all = Allocator::new(&[], 0, &networks, &services, &[], &[], &mut cursors);
        for port in ingress_ports.iter().filter(|p| p.published_port != 0) {
            if let Some((holder_id, holder)) = all.port_holder(port.protocol, port.published_port)
                && Some(holder_id.as_str()) != service_id
            {
                return Err(Status::already_exists(
                    allocator::AllocError::PortInUse {
                        port: port.published_port,
                        protocol: allocator::protocol_name(port.protocol),
                        holder: holder.clone(),
                    }
                    .to_string(),
                ));
            }
        }
        self.check_host_ports(&name, &endpoint, service_id).await
    }

    /// A host-mode port may not be one the routing mesh publishes on every node.
    async fn check_host_ports(
        &self,
        name: &str,
        endpoint: &v1::EndpointSpec,
        service_id: Option<&str>,
    ) -> Result<(), Status> {
        let host: Vec<&v1::PortConfig> = endpoint.ports.iter().filter(|p| !is_ingress_port(p)).collect();
        if host.is_empty() {
            return Ok(());
        }
        let services = self.objects.list::<v1::Service>().await?;
        for service in services.iter().filter(|s| Some(s.id.as_str()) != service_id) {
            let published = service.endpoint.as_ref().map(|e| e.ports.as_slice()).unwrap_or_default();
            for port in &host {
                if published.iter().any(|p| {
                    is_ingress_port(p) && p.protocol == port.protocol && p.published_port == port.published_port
                }) {
                    return Err(Status::already_exists(format!(
                        "service {name}: port {}/{} is published on every node by service {} (routing mesh); choose another host port",
                        port.published_port,
                        allocator::protocol_name(port.protocol),
                        service.name().unwrap_or(&service.id)
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The IPAM fields that make sense without a subnet: none but the MTU option.
fn check_ipam_without_subnet(network: &v1::Network) -> Result<(), Status> {
    let spec = network.spec.clone().unwrap_or_default();
    let ipam = spec.ipam.unwrap_or_default();
    let name = network_name(network);
    if !ipam.gateway.is_empty() || !ipam.ip_range.is_empty() {
        return Err(Status::invalid_argument(format!("network {name}: --gateway and --ip-range need --subnet")));
    }
    if let Some(mtu) = spec.options.get("mtu")
        && !mtu.parse::<u32>().is_ok_and(|m| (576..=9000).contains(&m))
    {
        return Err(Status::invalid_argument(format!("network {name}: --opt mtu={mtu} is not a number in 576–9000")));
    }
    Ok(())
}

/// A node's underlay address for VXLAN: its `data_addr`, else the address its session came
/// from (without the port).
pub(crate) fn node_data_addr(node: &v1::Node) -> String {
    let data = node.description.as_ref().map(|d| d.data_addr.as_str()).unwrap_or_default();
    if !data.is_empty() {
        return data.to_owned();
    }
    let addr = node.status.as_ref().map(|s| s.addr.as_str()).unwrap_or_default();
    match addr.parse::<std::net::SocketAddr>() {
        Ok(socket) => socket.ip().to_string(),
        Err(_) => addr.to_owned(),
    }
}

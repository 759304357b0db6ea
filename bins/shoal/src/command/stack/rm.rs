//! `shoal stack rm STACK…`: removes what carries the stack's label — its services, then its
//! secrets and configs, then (once no task holds an address on them any more) its networks — as
//! docker's `stack rm`. External objects never carry the label, so they stay; neither do another
//! stack's. A failure is said and the rest goes on; the exit code says it.

use std::time::{Duration, Instant};

use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::{in_stack, stack_services};
use crate::command::{api, reported};
use crate::render;

/// How long networks wait for the removed services' tasks to stop before removal is tried.
const TASKS_GONE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(300);

fn labelled<'a>(spec: Option<&'a v1::Annotations>, stack: &str) -> Option<&'a str> {
    spec.filter(|a| in_stack(&a.labels, stack)).map(|a| a.name.as_str())
}

/// Reports a removal's outcome: docker's `Failed to remove … ` line on failure.
fn outcome<T>(what: &str, name: &str, result: Result<T, tonic::Status>, failed: &mut usize) {
    if let Err(status) = result {
        eprintln!("Failed to remove {what} {name}: {}", status.message());
        *failed += 1;
    }
}

/// Waits (a while) until no task is attached to the networks `network_ids` any more: until then
/// the tasks hold addresses on them (the removed services' tasks, and those of services an earlier
/// deploy pruned that are still ending), and the manager refuses to remove those networks.
async fn tasks_gone(control: &mut ControlClient<Channel>, network_ids: &[String]) -> anyhow::Result<()> {
    let deadline = Instant::now() + TASKS_GONE;
    loop {
        let tasks = control.list_tasks(v1::ListTasksRequest::default()).await.map_err(api)?.into_inner().tasks;
        let attached = tasks
            .iter()
            .filter(|t| shoal_manager::holds_addresses(t))
            .any(|t| t.networks.iter().any(|a| a.network.as_ref().is_some_and(|n| network_ids.contains(&n.id))));
        if !attached || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

pub(crate) async fn rm(control: &mut ControlClient<Channel>, stacks: &[String]) -> anyhow::Result<()> {
    let mut failed = 0;
    for stack in stacks {
        let services = stack_services(control, stack).await?;
        let stack_networks: Vec<(String, String)> = control
            .list_networks(v1::ListNetworksRequest::default())
            .await
            .map_err(api)?
            .into_inner()
            .networks
            .iter()
            .filter_map(|n| {
                let name = labelled(n.spec.as_ref().and_then(|s| s.annotations.as_ref()), stack)?;
                Some((name.to_owned(), n.id.clone()))
            })
            .collect();
        let network_ids: Vec<String> = stack_networks.iter().map(|(_, id)| id.clone()).collect();
        let mut networks: Vec<String> = stack_networks.into_iter().map(|(name, _)| name).collect();
        let mut secrets: Vec<String> = control
            .list_secrets(v1::ListSecretsRequest::default())
            .await
            .map_err(api)?
            .into_inner()
            .secrets
            .iter()
            .filter_map(|s| labelled(s.spec.as_ref().and_then(|s| s.annotations.as_ref()), stack).map(str::to_owned))
            .collect();
        let mut configs: Vec<String> = control
            .list_configs(v1::ListConfigsRequest::default())
            .await
            .map_err(api)?
            .into_inner()
            .configs
            .iter()
            .filter_map(|c| labelled(c.spec.as_ref().and_then(|s| s.annotations.as_ref()), stack).map(str::to_owned))
            .collect();
        if services.is_empty() && networks.is_empty() && secrets.is_empty() && configs.is_empty() {
            eprintln!("Nothing found in stack: {stack}");
            continue;
        }
        networks.sort();
        secrets.sort();
        configs.sort();
        for service in &services {
            let name = render::service_name(service);
            println!("Removing service {name}");
            let result = control.remove_service(v1::RemoveServiceRequest { service: service.id.clone() }).await;
            outcome("service", name, result, &mut failed);
        }
        for name in &secrets {
            println!("Removing secret {name}");
            let result = control.remove_secret(v1::RemoveSecretRequest { secret: name.clone() }).await;
            outcome("secret", name, result, &mut failed);
        }
        for name in &configs {
            println!("Removing config {name}");
            let result = control.remove_config(v1::RemoveConfigRequest { config: name.clone() }).await;
            outcome("config", name, result, &mut failed);
        }
        if !networks.is_empty() {
            tasks_gone(control, &network_ids).await?;
        }
        for name in &networks {
            println!("Removing network {name}");
            let result = control.remove_network(v1::RemoveNetworkRequest { network: name.clone() }).await;
            outcome("network", name, result, &mut failed);
        }
    }
    reported(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_stack_label_counts() {
        let annotations = |stack: Option<&str>| v1::Annotations {
            name: "x".to_owned(),
            labels: stack.map(|s| (super::super::NAMESPACE_LABEL.to_owned(), s.to_owned())).into_iter().collect(),
        };
        assert_eq!(labelled(Some(&annotations(Some("shop"))), "shop"), Some("x"));
        assert_eq!(labelled(Some(&annotations(Some("shopping"))), "shop"), None, "another stack's");
        assert_eq!(labelled(Some(&annotations(None)), "shop"), None, "an external one");
        assert_eq!(labelled(None, "shop"), None);
    }
}

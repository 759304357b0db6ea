//! What the page's buttons do, each the CLI command of the same name: `service scale`, `service
//! rollback`, `node update --availability`. The page asks for confirmation first; this side
//! checks the request and answers in the CLI's words.

use serde_json::Value;
use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use crate::command::node::edit_node_spec;
use crate::command::service::{get_service, write_service};
use crate::render;

/// The largest replica count the page may ask for (the CLI takes any; a slip of the keyboard
/// here should not make a million tasks).
pub(crate) const MAX_REPLICAS: u64 = 100_000;

/// Why an action was not done.
#[derive(Debug)]
pub(crate) enum ActionError {
    /// The request itself is wrong (400).
    BadRequest(String),
    /// The cluster refused or the manager could not be reached (409).
    Refused(anyhow::Error),
}

impl From<anyhow::Error> for ActionError {
    fn from(err: anyhow::Error) -> Self {
        Self::Refused(err)
    }
}

/// Refuses when the request names the spec version the page showed and the service has moved on.
fn unchanged_since_shown(service: &v1::Service, body: &Value) -> Result<(), ActionError> {
    let Some(shown) = body.get("specVersion").filter(|v| !v.is_null()) else { return Ok(()) };
    let shown = shown.as_u64().ok_or_else(|| {
        ActionError::BadRequest(format!("invalid specVersion {shown}: expected the version the page showed"))
    })?;
    if shown == service.spec_version {
        return Ok(());
    }
    Err(ActionError::Refused(anyhow::anyhow!(
        "service {} changed since the page showed it (spec version {shown}, now {}): look at it again and retry",
        render::service_name(service),
        service.spec_version
    )))
}

/// `{"replicas": N, "specVersion": V}`: sets a replicated service's replicas.
pub(crate) async fn scale(control: &mut ControlClient<Channel>, id: &str, body: &Value) -> Result<String, ActionError> {
    let replicas = body.get("replicas").and_then(Value::as_u64).filter(|n| *n <= MAX_REPLICAS).ok_or_else(|| {
        ActionError::BadRequest(format!(
            "invalid replicas {}: expected a whole number from 0 to {MAX_REPLICAS}",
            body.get("replicas").unwrap_or(&Value::Null)
        ))
    })?;
    let service = get_service(control, id).await?;
    unchanged_since_shown(&service, body)?;
    let name = render::service_name(&service).to_owned();
    let mut spec = service.spec.clone().unwrap_or_default();
    match spec.mode {
        Some(v1::service_spec::Mode::Replicated(ref mut r)) => r.replicas = replicas,
        _ => return Err(ActionError::BadRequest(format!("{name}: scale can only be used with replicated mode"))),
    }
    write_service(control, &service, Some(spec)).await?;
    Ok(format!("{name} scaled to {replicas}"))
}

/// `{"specVersion": V}`: rolls a service back to its spec before the last update (a second
/// rollback would undo the first: the version makes a repeated request fail instead).
pub(crate) async fn rollback(
    control: &mut ControlClient<Channel>,
    id: &str,
    body: &Value,
) -> Result<String, ActionError> {
    let service = get_service(control, id).await?;
    unchanged_since_shown(&service, body)?;
    write_service(control, &service, None).await?;
    Ok(format!("{}: rollback started", render::service_name(&service)))
}

/// `{"availability": "active" | "pause" | "drain"}`: sets a node's availability.
pub(crate) async fn availability(
    control: &mut ControlClient<Channel>,
    id: &str,
    body: &Value,
) -> Result<String, ActionError> {
    let word = body.get("availability").and_then(Value::as_str).unwrap_or_default();
    let availability = match word {
        "active" => v1::NodeAvailability::Active,
        "pause" => v1::NodeAvailability::Pause,
        "drain" => v1::NodeAvailability::Drain,
        _ => {
            return Err(ActionError::BadRequest(format!(
                "invalid availability {}: expected active, pause or drain",
                body.get("availability").unwrap_or(&Value::Null)
            )));
        }
    } as i32;
    let (id, _) = edit_node_spec(control, id, |spec| {
        let changed = spec.availability != availability;
        spec.availability = availability;
        Ok(changed)
    })
    .await?;
    Ok(format!("node {} is now {word}", render::short(&id)))
}

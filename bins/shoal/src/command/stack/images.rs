//! `stack deploy --resolve-image always|changed|never`: pins each service to the digest its
//! image's tag names now, asked of the manager (which asks the registry, as docker's daemon
//! answers "distribution inspect"), so that every node runs the same image even if someone
//! pushes the tag again midway. The image as the file writes it stays in the label
//! `com.docker.stack.image`, which `changed` compares with; an image that cannot be resolved is
//! sent as written, with docker's warning.

use std::collections::HashMap;

use shoal_api::v1::{self, control_client::ControlClient};
use tonic::transport::Channel;

use super::IMAGE_LABEL;
use super::convert::Stack;
use super::deploy::ResolveImage;

/// What to send for one service's image.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    /// Ask the registry (through the manager).
    Resolve,
    /// Send this image: the one the service already runs, resolved by an earlier deploy.
    Keep(String),
    /// Send the image as the file writes it.
    AsWritten,
}

/// `changed` resolves only images that differ from what the service's last deploy wrote;
/// an image that names a digest is pinned already.
fn choose(mode: ResolveImage, written: &str, existing: Option<&v1::Service>) -> Choice {
    if written.contains('@') {
        return Choice::AsWritten;
    }
    match mode {
        ResolveImage::Never => Choice::AsWritten,
        ResolveImage::Always => Choice::Resolve,
        ResolveImage::Changed => {
            let spec = existing.and_then(|s| s.spec.as_ref());
            let last_written = spec.and_then(|s| s.annotations.as_ref()).and_then(|a| a.labels.get(IMAGE_LABEL));
            let running = spec.and_then(|s| s.task.as_ref()).and_then(|t| t.container.as_ref()).map(|c| &c.image);
            match (last_written, running) {
                (Some(last), Some(running)) if last == written => Choice::Keep(running.clone()),
                _ => Choice::Resolve,
            }
        }
    }
}

/// Docker's warning for an image that stays unpinned, with the manager's reason.
fn unpinned_warning(image: &str, reason: &str) -> String {
    format!(
        "image {image} could not be accessed on a registry to record its digest ({reason}). Each node will access \
         {image} independently, possibly leading to different nodes running different versions of the image."
    )
}

/// Pins the images of `stack`'s services as `mode` says; `existing` are the cluster's services.
/// Each image is asked for once; a failure warns (on stderr) and leaves it as written.
pub(crate) async fn pin(
    control: &mut ControlClient<Channel>,
    stack: &mut Stack,
    existing: &[v1::Service],
    mode: ResolveImage,
) {
    let by_name: HashMap<&str, &v1::Service> =
        existing.iter().filter_map(|s| Some((s.spec.as_ref()?.annotations.as_ref()?.name.as_str(), s))).collect();
    let mut resolved: HashMap<String, Option<String>> = HashMap::new();
    for service in &mut stack.services {
        let name = service.name().to_owned();
        let Some(container) = service.spec.task.as_mut().and_then(|t| t.container.as_mut()) else { continue };
        let written = container.image.clone();
        match choose(mode, &written, by_name.get(name.as_str()).copied()) {
            Choice::AsWritten => {}
            Choice::Keep(image) => container.image = image,
            Choice::Resolve => {
                if !resolved.contains_key(&written) {
                    let answer = control.resolve_image(v1::ResolveImageRequest { image: written.clone() }).await;
                    let pinned = match answer {
                        Ok(answer) => Some(answer.into_inner().image),
                        Err(status) => {
                            eprintln!("{}", unpinned_warning(&written, status.message()));
                            None
                        }
                    };
                    resolved.insert(written.clone(), pinned);
                }
                if let Some(Some(pinned)) = resolved.get(&written) {
                    container.image.clone_from(pinned);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(label: Option<&str>, image: &str) -> v1::Service {
        let labels = label.map(|l| HashMap::from([(IMAGE_LABEL.to_owned(), l.to_owned())])).unwrap_or_default();
        v1::Service {
            spec: Some(v1::ServiceSpec {
                annotations: Some(v1::Annotations { name: "shop_web".into(), labels }),
                task: Some(v1::TaskSpec {
                    container: Some(v1::ContainerSpec { image: image.into(), ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn each_mode_resolves_what_docker_resolves() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let pinned = format!("web:v1@{digest}");
        let deployed = service(Some("web:v1"), &pinned);
        let cases: [(ResolveImage, &str, Option<&v1::Service>, Choice); 9] = [
            (ResolveImage::Always, "web:v1", None, Choice::Resolve),
            (ResolveImage::Always, "web:v1", Some(&deployed), Choice::Resolve),
            (ResolveImage::Never, "web:v1", None, Choice::AsWritten),
            (ResolveImage::Never, "web:v1", Some(&deployed), Choice::AsWritten),
            (ResolveImage::Changed, "web:v1", None, Choice::Resolve),
            // The file still says web:v1: the digest the last deploy resolved stays.
            (ResolveImage::Changed, "web:v1", Some(&deployed), Choice::Keep(pinned.clone())),
            (ResolveImage::Changed, "web:v2", Some(&deployed), Choice::Resolve),
            (ResolveImage::Changed, "web:v1", Some(&service(None, "web:v1")), Choice::Resolve),
            (ResolveImage::Always, &pinned, Some(&deployed), Choice::AsWritten),
        ];
        for (mode, written, existing, expected) in cases {
            assert_eq!(choose(mode, written, existing), expected, "{mode:?} {written} {:?}", existing.is_some());
        }
    }

    #[test]
    fn the_warning_names_the_image_and_the_reason() {
        let warning = unpinned_warning("registry.example/web:v1", "connection refused");
        assert!(warning.starts_with(
            "image registry.example/web:v1 could not be accessed on a registry to record its digest \
             (connection refused). Each node will access registry.example/web:v1 independently"
        ));
    }
}

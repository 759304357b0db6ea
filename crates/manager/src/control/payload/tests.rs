//! Secrets and configs through the control API: what comes out, what is refused, and rotation
//! moving the services that use a secret to its new version.

use tonic::{Code, Request};

use super::super::tests::{ca, spec};
use super::*;
use crate::testutil::store;
use shoal_api::v1::control_server::Control as _;
use shoal_api::v1::update_status::UpdateState;
use shoal_ca_pki::RemovedNodes;

fn secret_spec(name: &str, data: &[u8]) -> v1::SecretSpec {
    v1::SecretSpec {
        annotations: Some(v1::Annotations { name: name.into(), ..Default::default() }),
        data: data.to_vec(),
    }
}

fn with_secret(name: &str, source: &str) -> v1::ServiceSpec {
    let mut spec = spec(name, 2);
    let container = spec.task.as_mut().and_then(|t| t.container.as_mut()).expect("container");
    container.secrets = vec![v1::SecretReference { secret_name: source.into(), ..Default::default() }];
    container.configs = vec![v1::ConfigReference { config_name: "site".into(), ..Default::default() }];
    spec
}

#[tokio::test]
async fn secrets_never_come_out_and_are_kept_while_used() {
    let (objects, _dir) = store("control-secrets").await;
    let control = ControlService::new(objects.clone(), RemovedNodes::new(), ca());
    let created = control
        .create_secret(Request::new(v1::CreateSecretRequest { spec: Some(secret_spec("db", b"hunter2")) }))
        .await
        .expect("create")
        .into_inner()
        .secret
        .expect("secret");
    assert!(created.spec.as_ref().is_some_and(|s| s.data.is_empty()), "no payload in the answer");
    assert_eq!((created.data_version, created.digest.len()), (1, 64));
    let stored: v1::Secret = objects.get(&created.id).await.expect("stored");
    assert_eq!(stored.spec.map(|s| s.data), Some(b"hunter2".to_vec()), "kept in the store");
    for reference in ["db", &created.id[..5]] {
        let got = control.get_secret(Request::new(v1::GetSecretRequest { secret: reference.into() })).await;
        let got = got.expect("get").into_inner().secret.expect("secret");
        assert!(got.spec.is_some_and(|s| s.data.is_empty()), "get shows no payload");
    }
    let listed = control.list_secrets(Request::new(v1::ListSecretsRequest::default())).await.expect("list");
    assert!(listed.into_inner().secrets.iter().all(|s| s.spec.as_ref().is_some_and(|s| s.data.is_empty())));

    let refused =
        |spec: v1::SecretSpec| control.create_secret(Request::new(v1::CreateSecretRequest { spec: Some(spec) }));
    let status = refused(secret_spec("db", b"again")).await.expect_err("name taken");
    assert_eq!(status.code(), Code::AlreadyExists);
    let status = refused(secret_spec("bad/name", b"x")).await.expect_err("bad name");
    assert!(status.message().starts_with("invalid secret name \"bad/name\""), "{}", status.message());
    let status = refused(secret_spec("big", &vec![b'x'; 500 * 1024])).await.expect_err("too big");
    assert!(status.message().contains("the limit is 511999"), "{}", status.message());

    // A service names it (and a config) by name; the control API resolves both.
    let missing =
        control.create_service(Request::new(v1::CreateServiceRequest { spec: Some(with_secret("web", "db")) })).await;
    let status = missing.expect_err("the config does not exist");
    assert_eq!(status.code(), Code::NotFound);
    assert!(
        status.message().contains("config site not found; create it with shoal config create site FILE"),
        "{}",
        status.message()
    );
    let config = v1::ConfigSpec {
        annotations: Some(v1::Annotations { name: "site".into(), ..Default::default() }),
        data: b"x=1".to_vec(),
    };
    control.create_config(Request::new(v1::CreateConfigRequest { spec: Some(config) })).await.expect("config");
    let web = control
        .create_service(Request::new(v1::CreateServiceRequest { spec: Some(with_secret("web", "db")) }))
        .await
        .expect("service")
        .into_inner()
        .service
        .expect("service");
    let container =
        web.spec.as_ref().and_then(|s| s.task.as_ref()).and_then(|t| t.container.clone()).expect("container");
    let r = &container.secrets[0];
    assert_eq!((r.secret_id.as_str(), r.secret_name.as_str(), r.data_version), (created.id.as_str(), "db", 1));
    assert_eq!(r.file, Some(v1::FileTarget { name: "db".into(), uid: 0, gid: 0, mode: 0o444 }), "docker's defaults");
    assert_eq!(container.configs[0].file.as_ref().map(|f| f.name.as_str()), Some("site"));

    let status =
        control.remove_secret(Request::new(v1::RemoveSecretRequest { secret: "db".into() })).await.expect_err("in use");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "secret db is in use by service web; remove it from them first (shoal service update --secret-rm db SERVICE)"
    );

    // Rotation: a new version, and the service moves to it through an update.
    let update =
        v1::UpdateSecretRequest { secret: "db".into(), version: 0, spec: Some(secret_spec("", b"correct-horse")) };
    let answer = control.update_secret(Request::new(update)).await.expect("rotate").into_inner();
    assert_eq!(answer.services, ["web"]);
    let rotated = answer.secret.expect("secret");
    assert_eq!(rotated.data_version, 2);
    assert!(rotated.spec.is_some_and(|s| s.data.is_empty()) && rotated.previous.is_empty());
    let web: v1::Service = objects.get(&web.id).await.expect("web");
    assert_eq!(web.spec_version, 2);
    let version = |spec: &Option<v1::ServiceSpec>| {
        spec.as_ref()
            .and_then(|s| s.task.as_ref())
            .and_then(|t| t.container.as_ref())
            .map(|c| c.secrets[0].data_version)
    };
    assert_eq!((version(&web.spec), version(&web.previous_spec)), (Some(2), Some(1)));
    assert_eq!(web.update_status.map(|s| s.state), Some(UpdateState::Updating as i32), "a rolling update");
    let stored: v1::Secret = objects.get(&created.id).await.expect("stored");
    assert_eq!(stored.previous.iter().map(|p| p.data_version).collect::<Vec<_>>(), [1], "kept for a rollback");

    // The same bytes again: no version, no update. A rename is refused.
    let same =
        v1::UpdateSecretRequest { secret: "db".into(), version: 0, spec: Some(secret_spec("", b"correct-horse")) };
    assert!(control.update_secret(Request::new(same)).await.expect("same").into_inner().services.is_empty());
    let rename = v1::UpdateSecretRequest { secret: "db".into(), version: 0, spec: Some(secret_spec("pw", b"")) };
    let status = control.update_secret(Request::new(rename)).await.expect_err("rename");
    assert!(status.message().contains("cannot be renamed"), "{}", status.message());

    // Rolled back to version 1, then the service is removed: the secret can go.
    let back = v1::UpdateServiceRequest {
        service: "web".into(),
        version: web.meta.as_ref().map_or(0, |m| m.version),
        rollback: true,
        ..Default::default()
    };
    let web = control.update_service(Request::new(back)).await.expect("rollback").into_inner().service.expect("web");
    assert_eq!(version(&web.spec), Some(1), "the old payload is still there to roll back to");
    control.remove_service(Request::new(v1::RemoveServiceRequest { service: "web".into() })).await.expect("rm web");
    control.remove_secret(Request::new(v1::RemoveSecretRequest { secret: "db".into() })).await.expect("rm secret");
    let gone = control.get_secret(Request::new(v1::GetSecretRequest { secret: "db".into() })).await;
    assert_eq!(gone.expect_err("gone").code(), Code::NotFound);
}

#[tokio::test]
async fn file_targets_may_not_collide() {
    let (objects, _dir) = store("control-secret-targets").await;
    let control = ControlService::new(objects, RemovedNodes::new(), ca());
    for name in ["a", "b"] {
        let spec = secret_spec(name, b"x");
        control.create_secret(Request::new(v1::CreateSecretRequest { spec: Some(spec) })).await.expect("secret");
    }
    let mut spec = spec("web", 1);
    let container = spec.task.as_mut().and_then(|t| t.container.as_mut()).expect("container");
    let target = |name: &str| Some(v1::FileTarget { name: name.into(), mode: 0o444, ..Default::default() });
    container.secrets = vec![
        v1::SecretReference { secret_name: "a".into(), file: target("same"), ..Default::default() },
        v1::SecretReference { secret_name: "b".into(), file: target("same"), ..Default::default() },
    ];
    let status = control
        .create_service(Request::new(v1::CreateServiceRequest { spec: Some(spec) }))
        .await
        .expect_err("collision");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "invalid target \"/run/secrets/same\": both secret a and secret b are mounted there");
}

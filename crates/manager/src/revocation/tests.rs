//! Revocations in the store: written with the removal, followed by another manager's set,
//! purged once expired, and refused at renewal.

use std::sync::{Arc, Mutex};

use shoal_ca_pki::{ClusterCa, NodeKey, Role, RootCa};
use tonic::Code;

use super::*;
use crate::ca_service::CaService;
use crate::testutil::{leader_and_follower, store};

const HOUR: Duration = Duration::from_secs(3600);

fn identity(id: &str, role: Role) -> NodeIdentity {
    NodeIdentity { node_id: id.into(), role, cluster_id: "c1".into() }
}

fn csr() -> Vec<u8> {
    NodeKey::generate().expect("key").csr_pem().expect("csr").into_bytes()
}

/// Waits up to 5 s for `removed` to answer `contains(id) == wanted`.
async fn until(removed: &RemovedNodes, id: &str, wanted: bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while removed.contains(id) != wanted {
        assert!(std::time::Instant::now() < deadline, "{id} still {}in the set", if wanted { "not " } else { "" });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn another_manager_follows_removals_and_purges() {
    let (leader, follower, _dirs) = leader_and_follower("revocation-follow").await;
    let cluster = v1::Cluster {
        id: "c1".into(),
        spec: Some(v1::ClusterSpec { node_cert_expiry: Some(shoal_api::to_duration(2 * HOUR)), ..Default::default() }),
        ..Default::default()
    };
    leader.create(cluster).await.expect("cluster");
    let node = leader.create(v1::Node { id: "w1".into(), ..Default::default() }).await.expect("node");
    let removed = RemovedNodes::new();
    removed.insert("left-over");
    let watch = load(&follower, &removed).await.expect("load");
    assert!(removed.is_empty(), "the set is what the store holds");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let following = tokio::spawn(follow(follower.clone(), removed.clone(), Some(watch), async {
        let _ = stopped.await;
    }));

    tracing::info!("--- a stale removal changes nothing");
    let stale = v1::Node { meta: Some(v1::Meta { version: 1, ..Default::default() }), ..node.clone() };
    let err = remove_node(&leader, &stale, HOUR).await.expect_err("stale");
    assert!(matches!(err, ObjectError::Conflict { .. }), "{err}");
    assert!(leader.get::<v1::Revocation>("w1").await.is_err(), "not revoked");

    tracing::info!("--- removed on the leader: the record goes, the other manager refuses it");
    let revoked = remove_node(&leader, &node, HOUR).await.expect("remove");
    assert!(matches!(leader.get::<v1::Node>("w1").await, Err(ObjectError::NotFound { .. })));
    until(&removed, "w1", true).await;
    let created = shoal_api::from_timestamp(revoked.meta.as_ref().and_then(|m| m.created_at.as_ref())).expect("at");
    let expires = shoal_api::from_timestamp(revoked.expires_at.as_ref()).expect("expires");
    assert_eq!(expires.duration_since(created).ok(), Some(2 * HOUR + EXPIRY_MARGIN), "the cluster's validity wins");
    assert_eq!(revoked.kind, v1::RevokedKind::Node as i32);

    tracing::info!("--- purged once every certificate it covers has expired, and forgotten everywhere");
    assert_eq!(purge_expired(&leader, expires - Duration::from_secs(1)).await.expect("purge"), 0);
    assert_eq!(purge_expired(&leader, expires).await.expect("purge"), 1);
    until(&removed, "w1", false).await;

    let _ = stop.send(());
    following.await.expect("follow ends");
    follower.store().shutdown().await;
    leader.store().shutdown().await;
}

#[tokio::test]
async fn renewing_a_revoked_certificate_is_refused() {
    let (objects, _dir) = store("revocation-renewal").await;
    let now = time::OffsetDateTime::now_utc();
    let ca = Arc::new(Mutex::new(ClusterCa::new(RootCa::generate(now).expect("root"))));
    let service = CaService::new(objects.clone(), ca, "c1".into(), HOUR);
    let node = objects
        .create(v1::Node { id: "w1".into(), role: v1::NodeRole::Worker as i32, ..Default::default() })
        .await
        .expect("node");
    let admin = identity(&format!("admin-{}", crate::ids::new_id()), Role::Manager);

    tracing::info!("--- before: a node and an admin bundle renew, and the bundle gets its record");
    service.renewal_for(identity("w1", Role::Worker), &csr()).await.expect("node renews");
    service.renewal_for(admin.clone(), &csr()).await.expect("admin renews");
    let record: v1::AdminCertificate = objects.get(&admin.node_id).await.expect("recorded at renewal");
    assert_eq!(record.issued_by, "renewal");

    tracing::info!("--- after: both are refused, saying why");
    remove_node(&objects, &node, HOUR).await.expect("remove");
    let refused = service.renewal_for(identity("w1", Role::Worker), &csr()).await.expect_err("removed node");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().starts_with("node w1 was removed from the cluster"), "{}", refused.message());

    let first = revoke_admin(&objects, &admin.node_id, HOUR).await.expect("revoke");
    assert!(matches!(objects.get::<v1::AdminCertificate>(&admin.node_id).await, Err(ObjectError::NotFound { .. })));
    let refused = service.renewal_for(admin.clone(), &csr()).await.expect_err("revoked admin bundle");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        refused.message(),
        format!(
            "admin certificate {} was revoked; use another admin bundle (each manager keeps a current one in its \
             DATA/admin)",
            admin.node_id
        )
    );
    assert!(objects.get::<v1::AdminCertificate>(&admin.node_id).await.is_err(), "a refused renewal records nothing");
    let again = revoke_admin(&objects, &admin.node_id, HOUR).await.expect("revoke again");
    assert_eq!(again, first, "revoking again keeps the first revocation");
    objects.store().shutdown().await;
}

//! Revocation as replicated state. The identities every manager refuses — removed nodes and
//! revoked admin bundles — are stored one key per ID under `/revocations/ID` (a
//! [`v1::Revocation`]), written in the same transaction that removes the node or the admin
//! bundle's record, so every manager refuses them, and goes on refusing them after a restart:
//!
//! - at the TLS handshake: each manager keeps the [`RemovedNodes`] its server config consults
//!   equal to the stored revocations, read at start and followed through the store's watch
//!   ([`follow`]);
//! - on each call: the role check of every service refuses an identity in that set (connections
//!   opened before the revocation stay open), and the control API also reads the revocation key
//!   linearizably before each call ([`check`]), so a manager whose store is behind asks the
//!   leader. The Raft transport relies on the set alone: it is what makes a quorum, so it cannot
//!   wait for a quorum read;
//! - at renewal: the CA refuses to renew a revoked certificate ([`check`], [`record_admin`]).
//!
//! A revocation is kept until every certificate of its ID has expired: the revocation time plus
//! the longest validity the managers issue plus [`EXPIRY_MARGIN`]. Then the leader purges it
//! ([`purge_expired`]), and every manager forgets the ID.

use std::future::Future;
use std::time::{Duration, SystemTime};

use prost::Message as _;
use shoal_api::v1;
use shoal_ca_pki::{NodeIdentity, RemovedNodes};
use shoal_raft_store::{Compare, Consistency, Event, EventKind, Op, Txn, WatchError, WatchStream};
use tonic::Status;

use crate::objects::{Object, ObjectError, ObjectStore, Write, key, kv_id};
use crate::tls::is_admin;

/// Added to a revocation's lifetime for the clocks of managers that disagree.
pub(crate) const EXPIRY_MARGIN: Duration = Duration::from_secs(3600);

/// How often the leader looks for revocations it may purge.
const PURGE_PERIOD: Duration = Duration::from_secs(3600);

/// The refusal of a revoked identity, saying what to do.
pub(crate) fn refused(identity: &NodeIdentity) -> Status {
    let id = &identity.node_id;
    if is_admin(identity) {
        Status::permission_denied(format!(
            "admin certificate {id} was revoked; use another admin bundle (each manager keeps a current one in its \
             DATA/admin)"
        ))
    } else {
        Status::permission_denied(format!(
            "node {id} was removed from the cluster and its certificate is revoked; to bring this machine back, empty \
             its data directory and join it again with a join token"
        ))
    }
}

/// Refuses `identity` if the cluster revoked it, as the cluster has it now: a linearizable
/// read, so a manager whose store is behind asks the leader.
pub(crate) async fn check(objects: &ObjectStore, identity: &NodeIdentity) -> Result<(), Status> {
    match objects.store().get(key::<v1::Revocation>(&identity.node_id)).await {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(refused(identity)),
        Err(err) => Err(ObjectError::Read(err).into()),
    }
}

/// `at` + `by`, or the far future when that is beyond what a timestamp holds.
fn later(at: SystemTime, by: Duration) -> SystemTime {
    const YEAR_9999: Duration = Duration::from_secs(253_402_300_799);
    at.checked_add(by).unwrap_or(SystemTime::UNIX_EPOCH + YEAR_9999).min(SystemTime::UNIX_EPOCH + YEAR_9999)
}

/// A revocation of `id` made at `now`, for certificates this manager issues for `validity`.
async fn revocation(
    objects: &ObjectStore,
    id: &str,
    kind: v1::RevokedKind,
    validity: Duration,
    now: SystemTime,
) -> Result<v1::Revocation, ObjectError> {
    // Certificates last the cluster's `--cert-expiry` (the longest it ever was covers those
    // issued before a change), or this manager's own validity while it had none.
    let cluster = crate::settings::cluster(objects).await?;
    let longest = crate::settings::longest_cert_validity(cluster.as_ref(), validity);
    let expires_at = later(now, longest.saturating_add(EXPIRY_MARGIN));
    let stamp = shoal_api::to_timestamp(now);
    Ok(v1::Revocation {
        id: id.to_owned(),
        meta: Some(v1::Meta { version: 0, created_at: Some(stamp), updated_at: Some(stamp) }),
        kind: kind as i32,
        expires_at: Some(shoal_api::to_timestamp(expires_at)),
    })
}

/// Deletes `node` (read at its version) and revokes its ID in one transaction, so that its
/// certificate is refused from the moment its record is gone. `validity` is how long this
/// manager's certificates last.
pub(crate) async fn remove_node(
    objects: &ObjectStore,
    node: &v1::Node,
    validity: Duration,
) -> Result<v1::Revocation, ObjectError> {
    let mut revoked = revocation(objects, &node.id, v1::RevokedKind::Node, validity, SystemTime::now()).await?;
    let txn = Txn::new()
        .when(Compare::mod_revision(key::<v1::Node>(&node.id), node.version()))
        .and_then(Op::delete(key::<v1::Node>(&node.id)))
        .and_then(Op::put(key::<v1::Revocation>(&node.id), revoked.encode_to_vec()));
    let outcome = objects.store().txn(txn).await?;
    if !outcome.succeeded {
        return Err(match objects.get::<v1::Node>(&node.id).await {
            Ok(_) => ObjectError::Conflict { kind: v1::Node::KIND, id: node.id.clone(), expected: node.version() },
            Err(err) => err,
        });
    }
    revoked.meta_mut().version = outcome.revision;
    Ok(revoked)
}

/// Revokes admin certificate `id`: its record (if it has one) is replaced by its revocation in
/// one transaction. Revoking it again returns the first revocation.
pub(crate) async fn revoke_admin(
    objects: &ObjectStore,
    id: &str,
    validity: Duration,
) -> Result<v1::Revocation, ObjectError> {
    let mut revoked = revocation(objects, id, v1::RevokedKind::Admin, validity, SystemTime::now()).await?;
    let txn = Txn::new()
        .when(Compare::missing(key::<v1::Revocation>(id)))
        .and_then(Op::delete(key::<v1::AdminCertificate>(id)))
        .and_then(Op::put(key::<v1::Revocation>(id), revoked.encode_to_vec()));
    let outcome = objects.store().txn(txn).await?;
    if !outcome.succeeded {
        return objects.get::<v1::Revocation>(id).await;
    }
    revoked.meta_mut().version = outcome.revision;
    Ok(revoked)
}

/// Records admin certificate `id` as issued (by `issued_by`) unless it has a record already;
/// refused if it is revoked. One transaction checks both, so a renewal that races a revocation
/// cannot bring the record back.
pub(crate) async fn record_admin(
    objects: &ObjectStore,
    identity: &NodeIdentity,
    issued_by: &str,
) -> Result<(), Status> {
    let id = &identity.node_id;
    let stamp = shoal_api::to_timestamp(SystemTime::now());
    let record = v1::AdminCertificate {
        id: id.clone(),
        meta: Some(v1::Meta { version: 0, created_at: Some(stamp), updated_at: Some(stamp) }),
        issued_by: issued_by.to_owned(),
    };
    let txn = Txn::new()
        .when(Compare::missing(key::<v1::Revocation>(id)))
        .when(Compare::missing(key::<v1::AdminCertificate>(id)))
        .and_then(Op::put(key::<v1::AdminCertificate>(id), record.encode_to_vec()));
    let outcome = objects.store().txn(txn).await.map_err(ObjectError::from)?;
    if outcome.succeeded {
        tracing::info!(admin.id = %id, issued_by, "admin certificate recorded");
        return Ok(());
    }
    // Refused: it is revoked, or it has its record already.
    check(objects, identity).await
}

/// Deletes the revocations whose `expires_at` is not after `now` (every certificate they cover
/// has expired); returns how many went.
pub(crate) async fn purge_expired(objects: &ObjectStore, now: SystemTime) -> Result<usize, ObjectError> {
    let expired: Vec<Write<v1::Revocation>> = objects
        .list::<v1::Revocation>()
        .await?
        .into_iter()
        .filter(|r| shoal_api::from_timestamp(r.expires_at.as_ref()).is_some_and(|at| at <= now))
        .map(|r| Write::Delete { version: r.version(), id: r.id })
        .collect();
    let outcomes = objects.write_all(expired).await?;
    Ok(outcomes.iter().filter(|o| o.is_ok()).count())
}

/// Makes `removed` the revocations this manager's store holds (as applied here: nothing to ask
/// anyone, so this works without a quorum) and returns a watch of their changes from there.
pub(crate) async fn load(objects: &ObjectStore, removed: &RemovedNodes) -> Result<WatchStream, String> {
    let store = objects.store();
    let range = store.range_with(v1::Revocation::PREFIX, Consistency::Stale).await.map_err(|e| e.to_string())?;
    let watch = store.watch(v1::Revocation::PREFIX, range.revision + 1).map_err(|e| e.to_string())?;
    removed.replace_all(range.kvs.iter().map(|kv| kv_id::<v1::Revocation>(&kv.key)));
    Ok(watch)
}

/// Applies one change of the revocations to `removed`.
fn apply(removed: &RemovedNodes, event: &Event) {
    let id = kv_id::<v1::Revocation>(&event.kv.key);
    match event.kind {
        EventKind::Put => {
            if !removed.contains(&id) {
                tracing::info!(revoked.id = %id, "certificate revoked: refused from now on");
            }
            removed.insert(id);
        }
        EventKind::Delete => {
            removed.remove(&id);
        }
    }
}

/// What [`follow`] does next.
enum Step {
    Stop,
    Changed(Option<Result<Event, WatchError>>),
    Purge,
}

/// Keeps `removed` equal to the stored revocations until `stopped` resolves, from `watch` (made
/// by [`load`]; `None` loads first): applies each change as this manager applies it, reads them
/// all again when the watch breaks off (a snapshot was installed), and while this manager leads,
/// purges expired revocations every [`PURGE_PERIOD`].
pub(crate) async fn follow(
    objects: ObjectStore,
    removed: RemovedNodes,
    mut watch: Option<WatchStream>,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut purge = tokio::time::interval(PURGE_PERIOD);
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if watch.is_none() {
            match load(&objects, &removed).await {
                Ok(loaded) => watch = Some(loaded),
                Err(reason) => {
                    tracing::warn!(%reason, "cannot read the revocations; trying again");
                    tokio::select! {
                        () = &mut stopped => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            }
        }
        let Some(changes) = watch.as_mut() else { continue };
        let step = tokio::select! {
            () = &mut stopped => Step::Stop,
            event = changes.next() => Step::Changed(event),
            _ = purge.tick() => Step::Purge,
        };
        match step {
            Step::Stop => return,
            Step::Changed(Some(Ok(event))) => apply(&removed, &event),
            Step::Changed(Some(Err(WatchError::Compacted { .. }))) => {
                tracing::debug!("the revocation watch broke off; reading the revocations again");
                watch = None;
            }
            // The store shut down.
            Step::Changed(Some(Err(_)) | None) => return,
            Step::Purge if objects.store().is_leader() => match purge_expired(&objects, SystemTime::now()).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "expired revocations purged"),
                Err(err) => tracing::warn!(error = %err, "cannot purge expired revocations"),
            },
            Step::Purge => {}
        }
    }
}

#[cfg(test)]
mod tests;

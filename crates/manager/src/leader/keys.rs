//! The key ring of encrypted overlays (Swarm's key manager): the leader makes three keys the
//! first time and, every `--network-key-rotation` (12 h by default), drops the oldest and adds a
//! new one. Nodes send with the middle key and receive with all three, so a rotation loses no
//! packet as long as every node applies one before the next. The time of the last rotation is
//! in the ring, so a new leader keeps the schedule rather than restarting it.

use std::time::{Duration, SystemTime};

use ring::rand::{SecureRandom as _, SystemRandom};
use shoal_api::v1;

use crate::objects::{ObjectError, ObjectStore};

/// The ring's ID (`/network-keys/ipsec`).
pub(crate) const RING_ID: &str = "ipsec";
/// Keys in the ring (Swarm's `keyringSize`).
pub(crate) const RING_SIZE: usize = 3;
/// Bytes of a key (AES-128).
const KEY_LEN: usize = 16;

/// The ring could not be made or rotated.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeysError {
    /// Reading or writing the ring failed.
    #[error(transparent)]
    Store(#[from] ObjectError),
    /// No random bytes.
    #[error("the system's random source failed; no network key can be made")]
    Random,
}

/// A random key stamped with Lamport time `time`.
fn new_key(random: &SystemRandom, time: u64) -> Result<v1::NetworkKey, KeysError> {
    let mut key = vec![0u8; KEY_LEN];
    random.fill(&mut key).map_err(|_| KeysError::Random)?;
    Ok(v1::NetworkKey { key, lamport_time: time })
}

/// Makes the ring if there is none, and rotates it when `interval` has passed since its last
/// rotation (at most once per call: a leader that was down for days does not rotate three
/// times in a row, which would leave nodes without the key they send with). Returns the ring
/// and when its next rotation is due.
pub(crate) async fn ensure_network_keys(
    objects: &ObjectStore,
    now: SystemTime,
    interval: Duration,
) -> Result<(v1::NetworkKeyRing, SystemTime), KeysError> {
    let random = SystemRandom::new();
    let stamp = Some(shoal_api::to_timestamp(now));
    let ring = match objects.get::<v1::NetworkKeyRing>(RING_ID).await {
        Ok(ring) => ring,
        Err(ObjectError::NotFound { .. }) => {
            // The clock starts at a random point, as Swarm's does, so that two clusters' tags
            // (and so their SPIs) do not line up.
            let mut skew = [0u8; 2];
            random.fill(&mut skew).map_err(|_| KeysError::Random)?;
            let start = u64::from(u16::from_be_bytes(skew));
            let keys = (1..=RING_SIZE as u64).map(|i| new_key(&random, start + i)).collect::<Result<Vec<_>, _>>()?;
            let ring = v1::NetworkKeyRing {
                id: RING_ID.to_owned(),
                keys,
                lamport_clock: start + RING_SIZE as u64,
                rotated_at: stamp,
                ..Default::default()
            };
            let ring = objects.create(ring).await?;
            tracing::info!(keys = RING_SIZE, "network key ring made");
            return Ok((ring, now + interval));
        }
        Err(err) => return Err(err.into()),
    };
    let rotated_at = shoal_api::from_timestamp(ring.rotated_at.as_ref()).unwrap_or(SystemTime::UNIX_EPOCH);
    let due = rotated_at + interval;
    if now < due {
        return Ok((ring, due));
    }
    let mut rotated = ring;
    // The oldest goes (the smallest time: swarmkit's loop misses it when it is not first).
    if let Some(oldest) = rotated.keys.iter().enumerate().min_by_key(|(_, k)| k.lamport_time).map(|(i, _)| i)
        && rotated.keys.len() >= RING_SIZE
    {
        rotated.keys.remove(oldest);
    }
    rotated.lamport_clock += 1;
    rotated.keys.push(new_key(&random, rotated.lamport_clock)?);
    rotated.rotated_at = stamp;
    let rotated = objects.update(rotated).await?;
    tracing::info!(lamport_time = rotated.lamport_clock, "network keys rotated");
    Ok((rotated, now + interval))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::Object as _;
    use crate::testutil::store;

    fn times(ring: &v1::NetworkKeyRing) -> Vec<u64> {
        ring.keys.iter().map(|k| k.lamport_time).collect()
    }

    #[tokio::test]
    async fn the_ring_is_made_then_rotated_when_due_and_the_oldest_goes() {
        let (objects, _dir) = store("network-keys").await;
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let every = Duration::from_secs(60);
        let (ring, due) = ensure_network_keys(&objects, start, every).await.expect("make");
        assert_eq!(due, start + every);
        let first = times(&ring);
        assert_eq!(first.len(), 3);
        assert!(first.windows(2).all(|w| w[1] == w[0] + 1), "{first:?}");
        assert!(ring.keys.iter().all(|k| k.key.len() == 16));
        assert_ne!(ring.keys[0].key, ring.keys[1].key);

        let (same, due) = ensure_network_keys(&objects, start + every / 2, every).await.expect("not yet");
        assert_eq!((same.version(), due), (ring.version(), start + every), "nothing written before it is due");

        // Late by a long way: one rotation, scheduled from now.
        let late = start + every * 10;
        let (rotated, due) = ensure_network_keys(&objects, late, every).await.expect("rotate");
        assert_eq!(times(&rotated), [first[1], first[2], first[2] + 1]);
        assert_eq!(due, late + every);
        assert_eq!(rotated.keys[..2], ring.keys[1..], "the two newer keys stay as they were");

        // Stored out of order (as another implementation might): the smallest time still goes.
        let mut shuffled = rotated.clone();
        shuffled.keys.reverse();
        let shuffled = objects.update(shuffled).await.expect("store");
        let (next, _) = ensure_network_keys(&objects, late + every, every).await.expect("rotate");
        assert!(next.version() > shuffled.version());
        let mut got = times(&next);
        got.sort_unstable();
        assert_eq!(got, [first[2], first[2] + 1, first[2] + 2]);
    }

    #[tokio::test]
    async fn a_new_leader_keeps_the_schedule_and_the_clock() {
        let (objects, _dir) = store("network-keys-leader").await;
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let every = Duration::from_secs(3600);
        let (ring, _) = ensure_network_keys(&objects, start, every).await.expect("make");
        // Whoever reads the store next (a new leader) finds the same due time and tags.
        let (again, due) = ensure_network_keys(&objects, start + Duration::from_secs(10), every).await.expect("read");
        assert_eq!((again.version(), due), (ring.version(), start + every));
        let (rotated, _) = ensure_network_keys(&objects, start + every, every).await.expect("rotate");
        assert_eq!(rotated.lamport_clock, ring.lamport_clock + 1);
    }
}

//! An in-process [`Transport`] for tests and examples: members in one process exchange messages
//! through a router that can drop, delay and partition them.

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::MutexGuard;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::error::TransportError;
use crate::network::MessageKind;
use crate::network::Transport;
use crate::store::Store;
use crate::store::WeakStore;
use crate::types::NodeId;

#[derive(Default)]
struct Faults {
    /// Directed links that deliver nothing: `(from, to)`.
    cut: HashSet<(NodeId, NodeId)>,
    /// Probability in [0, 1] that a request, or independently its answer, is lost.
    drop_rate: f64,
    /// Delivery delay range for every message.
    delay: (Duration, Duration),
    /// xorshift state for the drop and delay dice (seeded for reproducible runs).
    rng: u64,
}

impl Faults {
    fn next(&mut self) -> u64 {
        let mut x = self.rng.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn chance(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn delay(&mut self) -> Duration {
        let (lo, hi) = self.delay;
        if hi <= lo {
            return lo;
        }
        let span = u64::try_from((hi - lo).as_micros()).unwrap_or(u64::MAX).max(1);
        lo + Duration::from_micros(self.next() % span)
    }
}

#[derive(Default)]
struct RouterInner {
    members: Mutex<HashMap<NodeId, WeakStore>>,
    faults: Mutex<Faults>,
}

/// Routes messages between members of one process, with fault injection.
///
/// Register each member after opening it; a member that is shut down or dropped becomes
/// unreachable. Faults apply to every message (Raft traffic, forwarded writes, read index).
#[derive(Clone, Default)]
pub struct InProcessRouter {
    inner: Arc<RouterInner>,
}

impl std::fmt::Debug for InProcessRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessRouter").finish_non_exhaustive()
    }
}

impl InProcessRouter {
    /// A router with no faults; `seed` drives the drop and delay dice.
    pub fn new(seed: u64) -> Self {
        let router = Self::default();
        router.faults().rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        router
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.inner.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn members(&self) -> MutexGuard<'_, HashMap<NodeId, WeakStore>> {
        self.inner.members.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The router as the transport to pass to [`Store::open`].
    pub fn transport(&self) -> Arc<dyn Transport> {
        Arc::new(self.clone())
    }

    /// Makes `store` reachable under its id (replacing an earlier incarnation).
    pub fn register(&self, store: &Store) {
        self.members().insert(store.id(), store.downgrade());
    }

    /// Makes member `id` unreachable (as if its process died).
    pub fn unregister(&self, id: NodeId) {
        self.members().remove(&id);
    }

    /// Replaces the partition: cuts every link between members of different groups, restores
    /// every other link.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let mut f = self.faults();
        f.cut.clear();
        for (i, a) in groups.iter().enumerate() {
            for (j, b) in groups.iter().enumerate() {
                if i != j {
                    for x in a.iter() {
                        for y in b.iter() {
                            f.cut.insert((*x, *y));
                        }
                    }
                }
            }
        }
    }

    /// Cuts the one-way link from `from` to `to`.
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.faults().cut.insert((from, to));
    }

    /// Restores every link (drop rate and delay stay as set).
    pub fn heal(&self) {
        self.faults().cut.clear();
    }

    /// Loses each request, and independently each answer, with probability `rate`.
    pub fn set_drop_rate(&self, rate: f64) {
        self.faults().drop_rate = rate.clamp(0.0, 1.0);
    }

    /// Delays every message by a random time in `min..max`.
    pub fn set_delay(&self, min: Duration, max: Duration) {
        self.faults().delay = (min, max);
    }
}

impl Transport for InProcessRouter {
    fn send(
        &self,
        from: NodeId,
        target: NodeId,
        addr: &str,
        kind: MessageKind,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let router = self.clone();
        let addr = addr.to_owned();
        Box::pin(async move {
            let unreachable =
                |reason: &str| TransportError::Unreachable { target, addr: addr.clone(), reason: reason.into() };
            let (cut, drop_request, drop_answer, delay) = {
                let mut f = router.faults();
                let cut = f.cut.contains(&(from, target));
                let rate = f.drop_rate;
                let drop_request = rate > 0.0 && f.chance() < rate;
                let drop_answer = rate > 0.0 && f.chance() < rate;
                (cut, drop_request, drop_answer, f.delay())
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if cut {
                return Err(unreachable("link is partitioned"));
            }
            if drop_request {
                return Err(unreachable("request dropped"));
            }
            let store = router.members().get(&target).and_then(WeakStore::upgrade);
            let Some(store) = store else {
                return Err(unreachable("no such member is running"));
            };
            let answer = store
                .handle(kind, payload)
                .await
                .map_err(|e| TransportError::Remote { target, reason: e.to_string() })?;
            // The answer crosses the same link back.
            let lost = |reason: &str| TransportError::NoAnswer { target, reason: reason.into() };
            if router.faults().cut.contains(&(target, from)) {
                return Err(lost("answer lost: link is partitioned"));
            }
            if drop_answer {
                return Err(lost("answer dropped"));
            }
            Ok(answer)
        })
    }
}

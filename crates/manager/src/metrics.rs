//! The control plane's Prometheus metrics: Raft, the store, tasks by state, the leader's passes
//! and the scheduler, the dispatcher's sessions.
//!
//! A [`ManagerMetrics`] lives as long as the process; the manager it describes may come and go
//! (a node promoted, demoted, restarted in-process), so [`crate::start`] attaches its store and
//! dispatcher and [`crate::RunningManager::shutdown`] detaches them. Gauges are read from them
//! at scrape time ([`ManagerMetrics::encode`]); histograms are observed as the work happens. The
//! serving side (HTTP) is the embedder's: the text is the OpenMetrics exposition without its
//! `# EOF` line, so that the worker's series can follow it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use shoal_api::v1::{self, TaskState};
use shoal_raft_store::{Consistency, Store};

use crate::dispatcher::Dispatcher;
use crate::objects::Object as _;

/// Every task state, in lifecycle order: each gets a series, zero when no task is in it.
const STATES: [TaskState; 14] = TaskState::ALL;

/// The `state` label value of a task state: `docker service ps`'s word, lower-case.
pub(crate) fn state_label(state: TaskState) -> String {
    state.label().to_ascii_lowercase()
}

type StateFamily = Family<Vec<(String, String)>, Gauge>;

/// The control plane's metrics; cheap to clone (clones share the series).
#[derive(Debug, Clone)]
pub struct ManagerMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    proposals: Histogram,
    failed_proposals: Counter,
    passes: Histogram,
    placements: Histogram,
    tasks: StateFamily,
    attached: Arc<Mutex<Option<Attached>>>,
}

/// The running manager the scrape-time gauges read.
#[derive(Debug, Clone)]
struct Attached {
    store: Store,
    dispatcher: Dispatcher,
}

impl Default for ManagerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ManagerMetrics {
    /// The series, with no manager attached yet (only the histograms' empty buckets show).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let proposals = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register_with_unit(
            "shoal_raft_proposal_duration",
            "Time from a write's proposal (forwarded to the leader if need be) to its outcome",
            Unit::Seconds,
            proposals.clone(),
        );
        let failed_proposals = Counter::default();
        registry.register("shoal_raft_proposal_failures", "Writes that failed (no quorum, timeout, …)", {
            failed_proposals.clone()
        });
        let passes = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register_with_unit(
            "shoal_leader_pass_duration",
            "Time of one pass of the leader's loops: allocate, orchestrate, schedule, write",
            Unit::Seconds,
            passes.clone(),
        );
        let placements = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register_with_unit(
            "shoal_scheduler_latency",
            "Time the scheduler took to place one pass's pending tasks",
            Unit::Seconds,
            placements.clone(),
        );
        let tasks = StateFamily::default();
        registry.register(
            "shoal_tasks",
            "Tasks in the store by observed state, as this manager's replica has them",
            tasks.clone(),
        );
        let attached = Arc::new(Mutex::new(None));
        registry.register_collector(Box::new(Live { attached: attached.clone() }));
        Self { inner: Arc::new(Inner { registry, proposals, failed_proposals, passes, placements, tasks, attached }) }
    }

    fn attached(&self) -> MutexGuard<'_, Option<Attached>> {
        lock(&self.inner.attached)
    }

    /// Reads the gauges from this manager's store and dispatcher until [`Self::detach`]; times
    /// the store's writes.
    pub(crate) fn attach(&self, store: &Store, dispatcher: &Dispatcher) {
        let proposals = self.inner.proposals.clone();
        let failed = self.inner.failed_proposals.clone();
        // A store is attached once in its life; a second observer would be refused, harmlessly.
        store.observe_writes(Box::new(move |took: Duration, ok: bool| {
            proposals.observe(took.as_secs_f64());
            if !ok {
                failed.inc();
            }
        }));
        *self.attached() = Some(Attached { store: store.clone(), dispatcher: dispatcher.clone() });
    }

    /// The manager stopped: its gauges go (the histograms stay, as counters do).
    pub(crate) fn detach(&self) {
        *self.attached() = None;
        self.inner.tasks.clear();
    }

    /// Records one leader pass's duration.
    pub(crate) fn observe_pass(&self, took: Duration) {
        self.inner.passes.observe(took.as_secs_f64());
    }

    /// Records one placement's duration.
    pub(crate) fn observe_placement(&self, took: Duration) {
        self.inner.placements.observe(took.as_secs_f64());
    }

    /// Appends the series in the OpenMetrics text format, without the closing `# EOF` line (the
    /// embedder adds its own series, then that line). Tasks by state are counted here, from
    /// this member's replica (no leader round trip).
    pub async fn encode(&self, out: &mut String) -> std::fmt::Result {
        let attached = self.attached().clone();
        if let Some(attached) = attached {
            self.count_tasks(&attached.store).await;
        }
        prometheus_client::encoding::text::encode_registry(out, &self.inner.registry)
    }

    async fn count_tasks(&self, store: &Store) {
        let Ok(range) = store.range_with(v1::Task::PREFIX, Consistency::Stale).await else {
            return;
        };
        let mut counts = [0i64; STATES.len()];
        for kv in &range.kvs {
            let Ok(task) = <v1::Task as prost::Message>::decode(kv.value.as_slice()) else { continue };
            if let Some(i) = STATES.iter().position(|s| *s == task.observed_state()) {
                counts[i] += 1;
            }
        }
        for (state, count) in STATES.iter().zip(counts) {
            self.inner.tasks.get_or_create(&vec![("state".to_owned(), state_label(*state))]).set(count);
        }
    }
}

fn lock(attached: &Mutex<Option<Attached>>) -> MutexGuard<'_, Option<Attached>> {
    attached.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The gauges read at scrape time from the attached manager; none while no manager runs.
#[derive(Debug)]
struct Live {
    attached: Arc<Mutex<Option<Attached>>>,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(attached) = lock(&self.attached).clone() else {
            return Ok(());
        };
        let m = attached.store.metrics();
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let gauges: [(&str, &str, i64); 9] = [
            ("shoal_raft_term", "The current Raft term", as_i64(m.term)),
            ("shoal_raft_leader", "1 if this manager is the Raft leader, else 0", i64::from(m.is_leader)),
            ("shoal_raft_has_leader", "1 if this manager knows a Raft leader, else 0", i64::from(m.leader.is_some())),
            ("shoal_raft_last_log_index", "The last Raft log index appended here", as_i64(m.last_log_index)),
            (
                "shoal_raft_commit_index",
                "The last Raft log index known here to be committed",
                as_i64(m.committed_index),
            ),
            ("shoal_raft_applied_index", "The last Raft log index applied to the store here", as_i64(m.applied_index)),
            ("shoal_raft_snapshot_index", "The Raft log index the last snapshot covers", as_i64(m.snapshot_index)),
            ("shoal_store_keys", "Keys in the replicated store (this member's applied state)", as_i64(m.keys)),
            ("shoal_store_revision", "The replicated store's revision applied here", as_i64(m.revision)),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let sessions = ConstGauge::new(i64::try_from(attached.dispatcher.session_count()).unwrap_or(i64::MAX));
        sessions.encode(encoder.encode_descriptor(
            "shoal_dispatcher_sessions",
            "Nodes with an open dispatcher session to this manager",
            None,
            sessions.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_state_has_a_series() {
        // STATES must list every state the API has, so that none is missing from the output.
        let all = (0..=1000).filter_map(|n| TaskState::try_from(n).ok()).count();
        assert_eq!(all, STATES.len());
    }

    #[tokio::test]
    async fn a_detached_manager_shows_only_its_histograms() {
        let metrics = ManagerMetrics::new();
        metrics.observe_pass(Duration::from_millis(3));
        let mut out = String::new();
        metrics.encode(&mut out).await.unwrap();
        assert!(out.contains("shoal_leader_pass_duration_seconds_count 1"), "{out}");
        assert!(!out.contains("shoal_raft_term"), "{out}");
        assert!(!out.contains("# EOF"), "{out}");
    }
}

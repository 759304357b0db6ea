//! Carrying out a [`NodePlan`] on the kernel, on one dedicated thread (netlink and nftables calls
//! block): namespaces, the overlay, load balancers, return routes, published ports, and the
//! removal of namespaces no task needs. Plans are handed over through a slot that keeps only the
//! latest, so a burst of view changes costs one pass; a pass that failed is tried again with a
//! growing wait, or at the next plan.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use shoal_ipvs_lb::{LoadBalancer, Netns};
use shoal_overlay::{ContainerSpec, Dataplane as _, Desired, Kernel, KernelConfig, Overlay};
use tokio::sync::watch;

use super::netns;
use super::plan::{INGRESS_SANDBOX, Names, NodePlan, PublishEntry, ReturnRoutes};
use crate::mesh;

/// The nftables table of each namespace's load balancer (task VIPs, the ingress sandbox).
pub(crate) const LB_TABLE: &str = "shoal_lb";
/// The node namespace's table of published ports.
pub(crate) const PUBLISH_TABLE: &str = "shoal_publish";
/// The owner of the published ports in [`Outcome::failed`].
const PUBLISHED: &str = "(published ports)";

/// One pass to make.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// Increases with every change of the node's network state.
    pub(crate) generation: u64,
    pub(crate) plan: Arc<NodePlan>,
    /// Tasks whose namespaces must stay although no plan has them yet (containers found running
    /// after an agent restart, before their controllers adopt or release them).
    pub(crate) protected: BTreeSet<String>,
}

/// What the latest pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The generation of the plan it carried out.
    pub(crate) generation: u64,
    /// A failure of the overlay, which every task's wiring depends on.
    pub(crate) error: Option<String>,
    /// Owners (tasks, the ingress sandbox) whose part failed, and why.
    pub(crate) failed: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct Slot {
    next: Option<Job>,
    stop: bool,
}

/// The handle of the dataplane thread: hand it plans, watch what it did.
#[derive(Debug)]
pub(crate) struct Driver {
    slot: Arc<(Mutex<Slot>, Condvar)>,
    outcomes: watch::Receiver<Outcome>,
}

/// What the thread drives: [`Dataplane`], or a fake in tests.
pub(crate) trait Pass: Send + 'static {
    /// Carries out one plan.
    fn pass(&mut self, job: &Job) -> Outcome;
}

impl Pass for Dataplane {
    fn pass(&mut self, job: &Job) -> Outcome {
        self.apply(job)
    }
}

impl Driver {
    /// Starts the thread.
    pub(crate) fn start(dataplane: impl Pass) -> std::io::Result<Self> {
        let slot: Arc<(Mutex<Slot>, Condvar)> = Arc::default();
        let (sender, outcomes) = watch::channel(Outcome::default());
        let shared = slot.clone();
        std::thread::Builder::new()
            .name("shoal-agent-network".to_owned())
            .spawn(move || run(dataplane, &shared, &sender))?;
        Ok(Self { slot, outcomes })
    }

    /// Replaces the pending plan (a plan not started yet is dropped for this newer one).
    pub(crate) fn submit(&self, job: Job) {
        let (lock, wake) = &*self.slot;
        lock.lock().unwrap_or_else(PoisonError::into_inner).next = Some(job);
        wake.notify_one();
    }

    /// What the passes did.
    pub(crate) fn outcomes(&self) -> watch::Receiver<Outcome> {
        self.outcomes.clone()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let (lock, wake) = &*self.slot;
        lock.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        wake.notify_one();
    }
}

const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(10);

fn run(mut dataplane: impl Pass, slot: &(Mutex<Slot>, Condvar), outcomes: &watch::Sender<Outcome>) {
    // Everything this thread binds under /run/netns (task namespaces, the overlay's sandboxes)
    // must be seen by the runtime and outlive the agent: see `netns`.
    match netns::enter_runtime_mount_namespace() {
        Ok(true) => tracing::info!("network thread moved to PID 1's mount namespace, which the runtime sees"),
        Ok(false) => {}
        Err(err) => {
            tracing::warn!(error = %err, "cannot enter PID 1's mount namespace; namespaces are bound in the agent's own")
        }
    }
    let (lock, wake) = slot;
    let mut last: Option<Job> = None;
    let mut retry: Option<Duration> = None;
    loop {
        let job = {
            let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if guard.stop {
                    return;
                }
                if let Some(job) = guard.next.take() {
                    break job;
                }
                match (retry, &last) {
                    (Some(wait), Some(job)) => {
                        let (next, timeout) = wake.wait_timeout(guard, wait).unwrap_or_else(PoisonError::into_inner);
                        guard = next;
                        if timeout.timed_out() && guard.next.is_none() && !guard.stop {
                            break job.clone();
                        }
                    }
                    _ => guard = wake.wait(guard).unwrap_or_else(PoisonError::into_inner),
                }
            }
        };
        let span = tracing::info_span!("network_pass", generation = job.generation);
        let outcome = span.in_scope(|| dataplane.pass(&job));
        retry = if outcome.error.is_some() || !outcome.failed.is_empty() {
            let wait = retry.map_or(FIRST_RETRY, |w| (w * 2).min(MAX_RETRY));
            tracing::warn!(
                generation = job.generation,
                error = ?outcome.error,
                failed = ?outcome.failed,
                retry_in_ms = wait.as_millis() as u64,
                "network pass incomplete"
            );
            Some(wait)
        } else {
            None
        };
        outcomes.send_replace(outcome);
        last = Some(job);
    }
}

/// The kernel side of the node's networking.
#[derive(Debug)]
pub(crate) struct Dataplane {
    overlay: Overlay<Kernel>,
    names: Names,
    node_netns: Option<PathBuf>,
    /// Load balancers open per namespace.
    lbs: BTreeMap<PathBuf, Box<dyn LoadBalancer>>,
    /// The load balancer asked for (`None`: the kernel's best).
    lb_backend: Option<shoal_ipvs_lb::BackendKind>,
    /// Return routes set per namespace.
    routes: BTreeMap<PathBuf, ReturnRoutes>,
    /// The published ports set; `None` until the first pass (which also clears a table left by
    /// an earlier agent when nothing is published now).
    published: Option<Vec<PublishEntry>>,
    /// The namespace forwarding was turned on in.
    forwarding: Option<PathBuf>,
    /// The overlay state the last pass reached; a plan with the same one skips the overlay
    /// (most view changes move only load-balancer backends).
    overlay_done: Option<Desired>,
}

impl Dataplane {
    /// A dataplane for the node namespace `node_netns` (the agent's own when `None`), balancing
    /// with `lb_backend` (the kernel's best when `None`).
    pub(crate) fn new(
        names: Names,
        node_netns: Option<PathBuf>,
        lb_backend: Option<shoal_ipvs_lb::BackendKind>,
    ) -> Result<Self, shoal_overlay::KernelError> {
        let kernel = Kernel::new(KernelConfig { node_netns: node_netns.clone(), netns_dir: names.netns_dir.clone() })?;
        Ok(Self {
            overlay: Overlay::new(kernel, names.overlay()),
            names,
            node_netns,
            lbs: BTreeMap::new(),
            lb_backend,
            routes: BTreeMap::new(),
            published: None,
            forwarding: None,
            overlay_done: None,
        })
    }

    /// Whether the node's kernel has ESP with AES-GCM, which encrypted networks need. A probe
    /// that fails for another reason counts as no.
    pub(crate) fn esp_available(&mut self) -> bool {
        match self.overlay.dataplane_mut().esp_available() {
            Ok(available) => available,
            Err(err) => {
                tracing::warn!(error = %err, "cannot tell whether this kernel has ESP; encrypted networks are refused");
                false
            }
        }
    }

    /// The IPv4 addresses the namespaces of ours have now, by owner (task ID or the ingress
    /// sandbox): how egress addresses survive an agent restart.
    pub(crate) fn observe_addresses(&mut self) -> BTreeMap<String, Vec<std::net::Ipv4Addr>> {
        let mut containers = Vec::new();
        for (name, path) in netns::list(&self.names.netns_dir, &self.names.prefix).unwrap_or_default() {
            let owner = match self.names.task_of(&name) {
                Some(task) => task,
                None if path == self.names.sandbox_netns() => INGRESS_SANDBOX.to_owned(),
                None => continue,
            };
            containers.push(ContainerSpec { id: owner, netns: path, endpoints: Vec::new(), egress: None });
        }
        let desired = Desired { containers: containers.clone(), ..Desired::default() };
        let naming = self.overlay.naming().clone();
        let observed = self.overlay.dataplane_mut().observe(&desired, &naming);
        self.overlay.dataplane_mut().finish();
        let observed = match observed {
            Ok(observed) => observed,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the addresses of existing task namespaces");
                return BTreeMap::new();
            }
        };
        let mut out = BTreeMap::new();
        for container in containers {
            let Some(state) = observed.containers.get(&container.netns) else { continue };
            let addrs = state
                .links
                .values()
                .flat_map(|l| &l.addresses)
                .filter_map(|c| match c.addr {
                    std::net::IpAddr::V4(v4) => Some(v4),
                    std::net::IpAddr::V6(_) => None,
                })
                .collect();
            out.insert(container.id, addrs);
        }
        out
    }

    fn owner<'a>(plan: &'a NodePlan, path: &Path) -> &'a str {
        plan.netns.get(path).map_or("node", String::as_str)
    }

    /// One pass: every part is tried, failures are collected.
    pub(crate) fn apply(&mut self, job: &Job) -> Outcome {
        let plan = &job.plan;
        let mut outcome = Outcome { generation: job.generation, ..Outcome::default() };
        let mut fail = |owner: &str, why: String| {
            outcome.failed.entry(owner.to_owned()).or_insert(why);
        };

        for (owner, why) in &plan.problems {
            fail(owner, why.clone());
        }

        // 1. Namespaces.
        let mut made = false;
        for (path, owner) in &plan.netns {
            match netns::ensure(path) {
                Ok(true) => {
                    made = true;
                    tracing::debug!(netns = %path.display(), owner = %owner, "namespace made");
                }
                Ok(false) => {}
                Err(err) => fail(owner, format!("create namespace {}: {err}", path.display())),
            }
        }

        // 2. The overlay (unless the last pass reached this very state and no namespace was
        //    made since).
        let mut error = None;
        if self.overlay_done.as_ref() != Some(&plan.overlay) || made {
            self.overlay_done = None;
            match self.overlay.reconcile(&plan.overlay) {
                Ok(report) if report.missing.is_empty() => self.overlay_done = Some(plan.overlay.clone()),
                Ok(report) => {
                    for container in report.missing {
                        fail(&container, format!("namespace of {container} vanished before it was wired"));
                    }
                }
                Err(err) => error = Some(format!("overlay: {err}")),
            }
        }

        // 3. Forwarding in the ingress sandbox.
        if plan.forwarding != self.forwarding {
            self.forwarding = None;
            if let Some(path) = &plan.forwarding {
                match mesh::enable_forwarding(path) {
                    Ok(()) => self.forwarding = Some(path.clone()),
                    Err(err) => fail(INGRESS_SANDBOX, format!("forwarding in {}: {err}", path.display())),
                }
            }
        }

        // 4. Load balancers: VIPs in task namespaces, published ports in the ingress sandbox.
        let gone: Vec<PathBuf> = self.lbs.keys().filter(|p| !plan.netns.contains_key(*p)).cloned().collect();
        for path in gone {
            self.lbs.remove(&path);
        }
        let empty = Vec::new();
        let paths: BTreeSet<PathBuf> = plan.lb.keys().chain(self.lbs.keys()).cloned().collect();
        for path in paths {
            let services = plan.lb.get(&path).unwrap_or(&empty);
            let owner = Self::owner(plan, &path);
            if !self.lbs.contains_key(&path) {
                match shoal_ipvs_lb::open_with(&Netns::Path(path.clone()), LB_TABLE, self.lb_backend) {
                    Ok(lb) => {
                        self.lbs.insert(path.clone(), lb);
                    }
                    Err(err) => {
                        fail(owner, err.to_string());
                        continue;
                    }
                }
            }
            if let Some(lb) = self.lbs.get_mut(&path)
                && let Err(err) = lb.replace_all(services)
            {
                fail(owner, err.to_string());
                // Read back from the kernel at the next pass.
                self.lbs.remove(&path);
            }
        }

        // 5. Return routes of the tasks on the ingress network.
        self.routes.retain(|path, _| plan.return_routes.contains_key(path));
        for (path, routes) in &plan.return_routes {
            if self.routes.get(path) == Some(routes) {
                continue;
            }
            match mesh::return_routes(path, &routes.ifname, &routes.sandboxes) {
                Ok(()) => {
                    self.routes.insert(path.clone(), routes.clone());
                }
                Err(err) => {
                    self.routes.remove(path);
                    fail(Self::owner(plan, path), format!("return routes in {}: {err}", path.display()));
                }
            }
        }

        // 6. Published ports in the node namespace.
        if self.published.as_ref() != Some(&plan.publish) {
            let ports: Vec<mesh::Publish> =
                plan.publish.iter().map(|p| mesh::Publish { protocol: p.protocol, port: p.port, to: p.to }).collect();
            match mesh::publish(self.node_netns.as_deref(), PUBLISH_TABLE, &ports) {
                Ok(()) => self.published = Some(plan.publish.clone()),
                Err(err) => {
                    // Retried, but no task's wiring waits for it.
                    self.published = None;
                    fail(PUBLISHED, format!("published ports (table {PUBLISH_TABLE}): {err}"));
                }
            }
        }

        // 7. Namespaces nobody needs: tasks gone, the ingress sandbox of a node without ingress.
        match netns::list(&self.names.netns_dir, &self.names.prefix) {
            Ok(found) => {
                for (name, path) in found {
                    let ours = match self.names.task_of(&name) {
                        Some(task) => !job.protected.contains(&task),
                        None => path == self.names.sandbox_netns(),
                    };
                    if !ours || plan.netns.contains_key(&path) {
                        continue;
                    }
                    self.lbs.remove(&path);
                    match netns::delete(&path) {
                        Ok(()) => tracing::info!(netns = %path.display(), "namespace removed"),
                        Err(err) => tracing::warn!(netns = %path.display(), error = %err, "cannot remove namespace"),
                    }
                }
            }
            Err(err) => tracing::warn!(dir = %self.names.netns_dir.display(), error = %err, "cannot list namespaces"),
        }
        outcome.error = error;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lb_backend_flag_values() {
        use crate::network::{LbBackend, parse_lb_backend};
        assert_eq!(parse_lb_backend("auto"), Ok(None));
        assert_eq!(parse_lb_backend("ipvs"), Ok(Some(LbBackend::Ipvs)));
        assert_eq!(parse_lb_backend("nftables"), Ok(Some(LbBackend::Nftables)));
        let err = parse_lb_backend("bpf").expect_err("not a balancer");
        assert!(err.contains("\"bpf\"") && err.contains("auto, ipvs or nftables"), "{err}");
    }

    /// Records the generations it was given; fails the passes listed in `fail`; holds its first
    /// pass until the test lets it go, when given a `hold`.
    struct Recorder {
        passes: Arc<Mutex<Vec<u64>>>,
        fail: BTreeSet<usize>,
        hold: Option<Hold>,
    }

    /// Says when the first pass has begun, and waits for `go`.
    struct Hold {
        begun: tokio::sync::oneshot::Sender<()>,
        go: tokio::sync::oneshot::Receiver<()>,
    }

    impl Pass for Recorder {
        fn pass(&mut self, job: &Job) -> Outcome {
            if let Some(Hold { begun, go }) = self.hold.take() {
                let _ = begun.send(());
                let _ = go.blocking_recv();
            }
            let mut passes = self.passes.lock().unwrap_or_else(PoisonError::into_inner);
            passes.push(job.generation);
            let mut outcome = Outcome { generation: job.generation, ..Outcome::default() };
            if self.fail.contains(&passes.len()) {
                outcome.failed.insert("t1".into(), "injected".into());
            }
            outcome
        }
    }

    fn job(generation: u64) -> Job {
        Job { generation, plan: Arc::default(), protected: BTreeSet::new() }
    }

    #[tokio::test]
    async fn a_burst_of_changes_during_a_pass_costs_one_more_pass_for_the_latest() {
        let passes: Arc<Mutex<Vec<u64>>> = Arc::default();
        let (begun, first_begun) = tokio::sync::oneshot::channel();
        let (let_go, go) = tokio::sync::oneshot::channel();
        let hold = Some(Hold { begun, go });
        let recorder = Recorder { passes: passes.clone(), fail: BTreeSet::new(), hold };
        let driver = Driver::start(recorder).expect("thread");
        let mut outcomes = driver.outcomes();
        driver.submit(job(1));
        tokio::time::timeout(Duration::from_secs(5), first_begun).await.expect("in time").expect("the first pass");
        for generation in 2..=200 {
            driver.submit(job(generation));
        }
        let _ = let_go.send(());
        let last = tokio::time::timeout(Duration::from_secs(5), outcomes.wait_for(|o| o.generation == 200))
            .await
            .map(|r| r.map(|o| o.clone()));
        assert!(matches!(last, Ok(Ok(_))), "the latest plan was carried out");
        let passes = passes.lock().unwrap_or_else(PoisonError::into_inner).clone();
        assert_eq!(passes, [1, 200], "the 199 plans submitted during the first pass cost one pass, the latest");
    }

    #[tokio::test]
    async fn a_failed_pass_is_tried_again_without_a_new_plan() {
        let passes: Arc<Mutex<Vec<u64>>> = Arc::default();
        let fail = [1, 2].into_iter().collect();
        let recorder = Recorder { passes: passes.clone(), fail, hold: None };
        let driver = Driver::start(recorder).expect("thread");
        let mut outcomes = driver.outcomes();
        driver.submit(job(7));
        let done = tokio::time::timeout(
            Duration::from_secs(5),
            outcomes.wait_for(|o| o.generation == 7 && o.failed.is_empty()),
        )
        .await
        .map(|r| r.is_ok());
        assert_eq!(done, Ok(true), "the third try succeeds");
        // Tried at once, then after 0.5 s and 1 s.
        assert_eq!(passes.lock().unwrap_or_else(PoisonError::into_inner).clone(), [7, 7, 7]);
    }
}

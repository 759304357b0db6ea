//! The managers an agent knows: how a session that starts changes the list (the manager that
//! answered first, then the known ones the cluster still lists, then the new ones), and the hook
//! through which an embedder keeps the list across restarts ([`crate::Agent::saving_managers`]).
//! The agent itself knows nothing of files.

use std::sync::{Arc, Mutex};

/// The managers known once a session with `working` started and named `named` (the cluster's
/// managers): `working` first, since it is the one most recently known to work; then those of
/// `known`, in their order, that the cluster still lists; then the ones it names that were not
/// known. An empty `named` means the manager could not say, so nothing known is dropped. Never
/// empty.
pub(crate) fn after_session(known: &[String], working: &str, named: &[String]) -> Vec<String> {
    let named: Vec<&String> = named.iter().filter(|a| !a.is_empty()).collect();
    let listed = |addr: &&String| named.is_empty() || named.contains(addr);
    let mut managers = vec![working.to_owned()];
    for addr in known.iter().filter(listed).chain(named.iter().copied()) {
        if !addr.is_empty() && !managers.contains(addr) {
            managers.push(addr.clone());
        }
    }
    managers
}

/// What an embedder does to keep the managers an agent knows.
pub(crate) type Save = dyn Fn(&[String]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> + Send + Sync;

/// Calls the embedder's save hook with the managers an agent knows, when they differ from what
/// it saved last.
pub(crate) struct ManagerRecord {
    save: Arc<Save>,
    /// What was saved last: at first, what the agent started with (which the embedder read from
    /// where it saves).
    saved: Mutex<Vec<String>>,
}

impl std::fmt::Debug for ManagerRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerRecord").field("saved", &self.saved).finish_non_exhaustive()
    }
}

impl ManagerRecord {
    pub(crate) fn new(save: Arc<Save>, started_with: Vec<String>) -> Self {
        Self { save, saved: Mutex::new(started_with) }
    }

    /// Saves `managers` unless they are what was saved last. The hook does blocking I/O, so it
    /// runs on the blocking pool; a failure is logged, and the next session that starts tries
    /// again.
    pub(crate) async fn save(&self, managers: &[String]) {
        if *self.saved.lock().unwrap_or_else(|e| e.into_inner()) == managers {
            return;
        }
        let (save, list) = (self.save.clone(), managers.to_vec());
        match tokio::task::spawn_blocking(move || save(&list)).await {
            Ok(Ok(())) => {
                tracing::info!(?managers, "saved the managers this node knows");
                *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = managers.to_vec();
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "cannot save the managers this node knows; retrying at the next session")
            }
            Err(err) => {
                tracing::warn!(error = %err, "saving the managers this node knows failed; retrying at the next session")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(addrs: &[&str]) -> Vec<String> {
        addrs.iter().map(|a| (*a).to_owned()).collect()
    }

    /// A named case: what the agent knew, the manager its session started with, what that
    /// manager named, and the list after.
    type Case = (&'static str, &'static [&'static str], &'static str, &'static [&'static str], &'static [&'static str]);

    #[test]
    fn a_session_puts_its_manager_first_and_follows_the_clusters_list() {
        let cases: &[Case] = &[
            ("joined through m1, which names the others", &["m1"], "m1", &["m1", "m2", "m3"], &["m1", "m2", "m3"]),
            ("m2 took over: first", &["m1", "m2", "m3"], "m2", &["m1", "m2", "m3"], &["m2", "m1", "m3"]),
            ("m3 demoted: dropped", &["m2", "m1", "m3"], "m2", &["m1", "m2"], &["m2", "m1"]),
            ("a new manager: last", &["m2", "m1"], "m2", &["m1", "m2", "m4"], &["m2", "m1", "m4"]),
            ("the manager could not list: nothing dropped", &["m1", "m2"], "m2", &[], &["m2", "m1"]),
            ("empty names are no names", &["m1", "m2"], "m1", &["", "m1"], &["m1"]),
            // The address that worked (a name the cluster does not list, say) stays.
            ("the working address is kept unlisted", &["lb", "m1"], "lb", &["m1", "m2"], &["lb", "m1", "m2"]),
            ("unchanged", &["m1", "m2", "m3"], "m1", &["m3", "m2", "m1"], &["m1", "m2", "m3"]),
        ];
        for (name, known, working, named, want) in cases {
            assert_eq!(after_session(&list(known), working, &list(named)), list(want), "{name}");
        }
    }

    #[tokio::test]
    async fn the_hook_runs_only_when_the_list_changed_and_again_after_a_failure() {
        let calls: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let save: Arc<Save> = {
            let (calls, fail) = (calls.clone(), fail.clone());
            Arc::new(move |managers: &[String]| {
                calls.lock().expect("calls").push(managers.to_vec());
                if fail.load(std::sync::atomic::Ordering::SeqCst) { Err("disk full".into()) } else { Ok(()) }
            })
        };
        let record = ManagerRecord::new(save, list(&["m1"]));
        record.save(&list(&["m1"])).await;
        assert!(calls.lock().expect("calls").is_empty(), "what the agent started with is not saved again");
        record.save(&list(&["m1", "m2"])).await;
        record.save(&list(&["m1", "m2"])).await;
        assert_eq!(*calls.lock().expect("calls"), [list(&["m1", "m2"])]);
        fail.store(true, std::sync::atomic::Ordering::SeqCst);
        record.save(&list(&["m2", "m1"])).await;
        fail.store(false, std::sync::atomic::Ordering::SeqCst);
        record.save(&list(&["m2", "m1"])).await;
        record.save(&list(&["m2", "m1"])).await;
        assert_eq!(*calls.lock().expect("calls"), [list(&["m1", "m2"]), list(&["m2", "m1"]), list(&["m2", "m1"])]);
    }
}

//! Linearizability under faults: concurrent clients run puts, gets and compare-guarded
//! transactions against random members while a seeded nemesis drops, delays and partitions
//! messages and crashes a member; the recorded history is then checked against a sequential
//! register model with a Wing–Gong search (per key, since linearizability is local).
//!
//! The normal suite runs two short seeds. Long runs: `SHOAL_RAFT_SOAK_SEEDS=N` (number of seeds)
//! and `SHOAL_RAFT_SOAK_SECS=S` (seconds per seed), which `cargo xtask soak raft` sets.

mod support;

use std::collections::BTreeMap;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::time::Duration;

use shoal_raft_store::Compare;
use shoal_raft_store::Op;
use shoal_raft_store::Store;
use shoal_raft_store::Txn;
use shoal_raft_store::WriteError;
use support::Cluster;
use support::Tuning;
use tokio::time::Instant;
use tracing::info;

/// One operation as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Get,
    Put(String),
    PutIfAbsent(String),
    DeleteIfExists,
    /// Compare-and-swap on mod revision; with unique values this is a compare on the value read.
    Cas {
        expect: String,
        new: String,
    },
}

/// What the client observed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Value(Option<String>),
    Applied(bool),
    Done,
    /// The call failed in a way that leaves open whether it took effect.
    Unknown,
}

#[derive(Debug, Clone)]
struct Record {
    key: usize,
    call: Duration,
    /// `None` when the outcome is unknown: the op may take effect at any time after its call.
    ret: Option<Duration>,
    kind: Kind,
    outcome: Outcome,
}

/// The sequential model of one key: its current value.
fn step(state: &Option<String>, kind: &Kind) -> (Option<String>, Outcome) {
    match kind {
        Kind::Get => (state.clone(), Outcome::Value(state.clone())),
        Kind::Put(v) => (Some(v.clone()), Outcome::Done),
        Kind::PutIfAbsent(v) => match state {
            None => (Some(v.clone()), Outcome::Applied(true)),
            Some(_) => (state.clone(), Outcome::Applied(false)),
        },
        Kind::DeleteIfExists => match state {
            Some(_) => (None, Outcome::Applied(true)),
            None => (None, Outcome::Applied(false)),
        },
        Kind::Cas { expect, new } => {
            if state.as_ref() == Some(expect) {
                (Some(new.clone()), Outcome::Applied(true))
            } else {
                (state.clone(), Outcome::Applied(false))
            }
        }
    }
}

/// Wing–Gong search with memoisation: is there an order of the ops, consistent with real time,
/// in which the model produces every observed outcome? Ops with unknown outcomes may be placed
/// anywhere after their call, or left out.
fn linearizable(ops: &[Record]) -> Result<(), String> {
    let n = ops.len();
    let words = n.div_ceil(64).max(1);
    let required: Vec<u64> = {
        let mut r = vec![0u64; words];
        for (i, op) in ops.iter().enumerate() {
            if op.outcome != Outcome::Unknown {
                r[i / 64] |= 1 << (i % 64);
            }
        }
        r
    };
    let mut seen: HashSet<(Vec<u64>, Option<String>)> = HashSet::new();
    let mut stack: Vec<(Vec<u64>, Option<String>)> = vec![(vec![0u64; words], None)];
    let mut best = 0usize;
    while let Some((done, state)) = stack.pop() {
        if seen.len() > SEARCH_BUDGET {
            return Err(format!("checker gave up after {SEARCH_BUDGET} states ({n} ops)"));
        }
        let is_done = |i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        if required.iter().zip(&done).all(|(r, d)| r & d == *r) {
            return Ok(());
        }
        best = best.max(done.iter().map(|w| w.count_ones() as usize).sum());
        // Only ops called before every pending op with a known result has returned may go next.
        let horizon = (0..n).filter(|i| !is_done(*i)).filter_map(|i| ops[i].ret).min().unwrap_or(Duration::MAX);
        for i in (0..n).filter(|i| !is_done(*i) && ops[*i].call <= horizon) {
            let (next, observed) = step(&state, &ops[i].kind);
            if ops[i].outcome != Outcome::Unknown && observed != ops[i].outcome {
                continue;
            }
            let mut d = done.clone();
            d[i / 64] |= 1 << (i % 64);
            if seen.insert((d.clone(), next.clone())) {
                stack.push((d, next));
            }
        }
    }
    Err(format!("no linearization exists; the longest consistent prefix has {best} of {n} ops"))
}

fn check_history(history: &[Record], keys: usize) -> Result<(), String> {
    for key in 0..keys {
        if !history.iter().any(|r| r.key == key) {
            continue;
        }
        let ops: Vec<Record> = history.iter().filter(|r| r.key == key).cloned().collect();
        linearizable(&ops).map_err(|e| {
            let mut lines = vec![format!("key {key}: {e}")];
            for op in &ops {
                lines.push(format!("  {:?}..{:?} {:?} -> {:?}", op.call, op.ret, op.kind, op.outcome));
            }
            lines.join("\n")
        })?;
    }
    Ok(())
}

/// A tiny deterministic generator (xorshift) for client choices and the nemesis.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Keys in use at a time. Clients move to fresh keys every [`EPOCH`], so each key's history
/// stays small enough for an exhaustive search (linearizability is checked per key).
const KEYS: usize = 3;
const EPOCH: Duration = Duration::from_millis(400);
/// Search states per key before the checker gives up (and fails: never a silent pass).
const SEARCH_BUDGET: usize = 2_000_000;

fn key_name(k: usize) -> String {
    format!("/lin/{k}")
}

type Members = Arc<RwLock<BTreeMap<u64, Store>>>;

async fn client(id: u64, seed: u64, members: Members, start: Instant, until: Instant, log: Arc<Mutex<Vec<Record>>>) {
    let mut dice = Dice(seed ^ (id.wrapping_mul(0x2545_F491_4F6C_DD1D)) | 1);
    let mut counter = 0u64;
    while Instant::now() < until {
        let store = {
            let m = members.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let ids: Vec<u64> = m.keys().copied().collect();
            if ids.is_empty() { None } else { m.get(&ids[dice.below(ids.len() as u64) as usize]).cloned() }
        };
        let Some(store) = store else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let epoch = (start.elapsed().as_millis() / EPOCH.as_millis()) as usize;
        let key = epoch * KEYS + dice.below(KEYS as u64) as usize;
        let name = key_name(key);
        counter += 1;
        let fresh = format!("c{id}-{counter}");
        let call = start.elapsed();
        let (kind, outcome) = match dice.below(10) {
            0..=3 => match store.get(&name).await {
                Ok(kv) => {
                    (Kind::Get, Some(Outcome::Value(kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))))
                }
                // A failed read has no effect: leave it out of the history.
                Err(_) => continue,
            },
            4..=5 => (
                Kind::Put(fresh.clone()),
                write_outcome(store.put(name.as_bytes(), fresh.as_bytes()).await.map(|_| true)),
            ),
            6 => {
                let txn = Txn::new()
                    .when(Compare::missing(name.as_bytes()))
                    .and_then(Op::put(name.as_bytes(), fresh.as_bytes()));
                (Kind::PutIfAbsent(fresh.clone()), write_outcome(store.txn(txn).await.map(|o| o.succeeded)))
            }
            7 => {
                let txn = Txn::new().when(Compare::exists(name.as_bytes())).and_then(Op::delete(name.as_bytes()));
                (Kind::DeleteIfExists, write_outcome(store.txn(txn).await.map(|o| o.succeeded)))
            }
            _ => {
                // Read, then swap guarded by the mod revision that was read (optimistic concurrency).
                let Ok(Some(kv)) = store.get(&name).await else { continue };
                let expect = String::from_utf8_lossy(&kv.value).into_owned();
                let call = start.elapsed();
                let txn = Txn::new()
                    .when(Compare::mod_revision(name.as_bytes(), kv.mod_revision))
                    .and_then(Op::put(name.as_bytes(), fresh.as_bytes()));
                if let Some(outcome) = write_outcome(store.txn(txn).await.map(|o| o.succeeded)) {
                    record(&log, key, call, start, Kind::Cas { expect, new: fresh }, outcome);
                }
                continue;
            }
        };
        if let Some(outcome) = outcome {
            record(&log, key, call, start, kind, outcome);
        }
    }
}

fn write_outcome(r: Result<bool, WriteError>) -> Option<Outcome> {
    match r {
        Ok(applied) => Some(Outcome::Applied(applied)),
        // Documented as "not applied": the op did not happen, so it is not part of the history.
        Err(WriteError::NotLeader { .. } | WriteError::LeaderUnreachable { .. }) => None,
        Err(_) => Some(Outcome::Unknown),
    }
}

fn record(log: &Mutex<Vec<Record>>, key: usize, call: Duration, start: Instant, kind: Kind, outcome: Outcome) {
    let outcome = match (&kind, outcome) {
        (Kind::Put(_), Outcome::Applied(_)) => Outcome::Done,
        (_, o) => o,
    };
    let ret = if outcome == Outcome::Unknown { None } else { Some(start.elapsed()) };
    log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Record { key, call, ret, kind, outcome });
}

async fn run_seed(seed: u64, run_for: Duration) {
    info!(seed, "--- start three members");
    let mut cluster =
        Cluster::start(3, seed, Tuning { snapshot_after_entries: 200, keep_entries_after_snapshot: 20 }).await;
    cluster.wait_leader().await;
    let members: Members = Arc::new(RwLock::new(cluster.stores.clone()));
    let log = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let until = start + run_for;
    let clients: Vec<_> =
        (0..4).map(|id| tokio::spawn(client(id, seed, members.clone(), start, until, log.clone()))).collect();

    info!(seed, "--- nemesis: drops, delays, partitions, a crash and restart");
    cluster.router.set_drop_rate(0.02);
    cluster.router.set_delay(Duration::ZERO, Duration::from_millis(3));
    let mut dice = Dice(seed | 1);
    let mut crashed: Option<u64> = None;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200 + dice.below(300))).await;
        match dice.below(4) {
            0 => {
                let lone = 1 + dice.below(3);
                let rest: Vec<u64> = (1..=3).filter(|i| *i != lone).collect();
                info!(seed, lone, "--- partition one member away");
                cluster.router.partition(&[&[lone], &rest]);
            }
            1 => {
                info!(seed, "--- heal");
                cluster.router.heal();
            }
            2 => match crashed.take() {
                None => {
                    let victim = 1 + dice.below(3);
                    info!(seed, victim, "--- crash a member");
                    members.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&victim);
                    cluster.kill(victim).await;
                    crashed = Some(victim);
                }
                Some(victim) => {
                    info!(seed, victim, "--- restart it from disk");
                    let store = cluster.open(victim).await;
                    members.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(victim, store);
                }
            },
            _ => {
                info!(seed, "--- heal and let it settle");
                cluster.router.heal();
            }
        }
    }
    cluster.router.heal();
    cluster.router.set_drop_rate(0.0);
    if let Some(victim) = crashed.take() {
        let store = cluster.open(victim).await;
        members.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(victim, store);
    }
    for c in clients {
        c.await.expect("client task");
    }

    info!(seed, "--- final reads after healing are part of the history");
    cluster.wait_leader().await;
    let leader = cluster.wait_leader().await;
    let keys = ((start.elapsed().as_millis() / EPOCH.as_millis()) as usize + 1) * KEYS;
    for key in 0..keys {
        let call = start.elapsed();
        let kv = cluster.store(leader).get(key_name(key)).await.expect("final read");
        let value = kv.map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
        record(&log, key, call, start, Kind::Get, Outcome::Value(value));
    }
    let history = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let known = history.iter().filter(|r| r.outcome != Outcome::Unknown).count();
    info!(seed, ops = history.len(), known, "--- check the history");
    assert!(known > 20, "seed {seed}: too few completed operations ({known}) to mean anything");
    if let Err(e) = check_history(&history, keys) {
        panic!("seed {seed}: history is not linearizable\n{e}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seeded_fault_runs_are_linearizable() {
    support::init_tracing();
    let seeds: u64 = std::env::var("SHOAL_RAFT_SOAK_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let secs: u64 = std::env::var("SHOAL_RAFT_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    for seed in 1..=seeds {
        run_seed(seed, Duration::from_secs(secs)).await;
    }
}

#[test]
fn the_checker_accepts_and_rejects_known_histories() {
    let at = |ms| Duration::from_millis(ms);
    let rec = |call, ret, kind, outcome| Record { key: 0, call: at(call), ret: Some(at(ret)), kind, outcome };
    let put = |v: &str| Kind::Put(v.into());
    let got = |v: Option<&str>| Outcome::Value(v.map(String::from));

    // Concurrent put and get: the get may see either value.
    let ok = vec![
        rec(0, 10, put("a"), Outcome::Done),
        rec(5, 15, Kind::Get, got(Some("a"))),
        rec(6, 16, Kind::Get, got(None)),
    ];
    assert!(check_history(&ok, 1).is_ok());

    // A get that starts after a put returned must see it (a lost acknowledged write).
    let stale = vec![rec(0, 10, put("a"), Outcome::Done), rec(20, 30, Kind::Get, got(None))];
    assert!(check_history(&stale, 1).is_err());

    // Once a read saw the new value, a later read may not see the old one.
    let flicker = vec![
        rec(0, 100, put("b"), Outcome::Done),
        rec(10, 20, Kind::Get, got(Some("b"))),
        rec(30, 40, Kind::Get, got(None)),
    ];
    assert!(check_history(&flicker, 1).is_err());

    // Two successful put-if-absent on an empty key cannot both win.
    let twice = vec![
        rec(0, 10, Kind::PutIfAbsent("x".into()), Outcome::Applied(true)),
        rec(0, 10, Kind::PutIfAbsent("y".into()), Outcome::Applied(true)),
    ];
    assert!(check_history(&twice, 1).is_err());

    // An unknown write may or may not have happened.
    let unknown = vec![
        Record { key: 0, call: at(0), ret: None, kind: put("u"), outcome: Outcome::Unknown },
        rec(50, 60, Kind::Get, got(Some("u"))),
        rec(70, 80, Kind::Get, got(Some("u"))),
    ];
    assert!(check_history(&unknown, 1).is_ok());
    let cas = vec![
        rec(0, 10, put("a"), Outcome::Done),
        rec(20, 30, Kind::Cas { expect: "a".into(), new: "b".into() }, Outcome::Applied(true)),
        rec(40, 50, Kind::Cas { expect: "a".into(), new: "c".into() }, Outcome::Applied(true)),
    ];
    assert!(check_history(&cas, 1).is_err(), "a swap against a stale value must fail");
}

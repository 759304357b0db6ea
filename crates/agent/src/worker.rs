//! A worker node on disk and on containerd: `join` once (certificates and the managers to talk
//! to under the data directory), then `run` after every start. The `shoal-agent` binary is flags
//! around these two.
//!
//! ```text
//! DATA/agent.json   node ID, the managers it knows (most recently working first), join address
//! DATA/certs/       the node's key and certificate, the cluster's roots
//! DATA/runtime/     per-container files (logs, hosts, resolv.conf)
//! DATA/volumes/     named volumes
//! ```

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shoal_api::v1;
use shoal_ca_pki::{LiveCredentials, live_client_config};
use shoal_runtime::{Containerd, ContainerdConfig};

use crate::{Agent, AgentConfig, AgentExit};

/// Where a worker keeps its state and how it reaches containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// The data directory.
    pub data_dir: PathBuf,
    /// containerd's socket.
    pub containerd_socket: PathBuf,
    /// The containerd namespace for this node's images and containers.
    pub containerd_namespace: String,
    /// The `shoal-runtime-logger` executable (next to the agent's own by default).
    pub logger: PathBuf,
    /// Registries (`host[:port]`) reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// The hostname the node reports (the machine's when `None`; set it when several nodes share
    /// a machine, as in the test harness).
    pub hostname: Option<String>,
    /// Whether the process running the worker can also run a manager (`shoal-manager`): such a
    /// node can be promoted, and follows role changes by renewing its certificate.
    pub can_manage: bool,
    /// Networking (on by default with containerd: `Some(NetworkConfig::default())`); `None`
    /// leaves every task in a namespace with loopback only.
    pub network: Option<crate::NetworkConfig>,
    /// Where the worker keeps its metrics (`--metrics-addr`); `None`: it keeps none.
    pub metrics: Option<crate::AgentMetrics>,
    /// The unlock key the node's key file is encrypted with, shared with the manager in the same
    /// process (autolock encrypts a manager's keys at rest); a worker's is in the clear.
    pub key_encryption: shoal_ca_pki::KeyEncryption,
}

/// Joining or running a worker failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Joining failed.
    #[error(transparent)]
    Join(#[from] crate::JoinError),
    /// The data directory holds no joined node, or holds one already.
    #[error("{path}: {reason}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The container log writer is missing.
    #[error("logger {path}: {reason}")]
    Logger {
        /// Where it was looked for.
        path: PathBuf,
        /// What to do.
        reason: String,
    },
    /// containerd could not be reached.
    #[error(transparent)]
    Containerd(#[from] shoal_runtime::ConnectError),
    /// The agent could not run.
    #[error(transparent)]
    Agent(#[from] crate::AgentError),
}

#[derive(Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct State {
    node_id: String,
    /// The managers the node knows, the one most recently known to work first: the join address
    /// at first, then what sessions said (`Agent::saving_managers`).
    managers: Vec<String>,
    /// The address the node joined through, tried last even once the cluster no longer lists it
    /// (it may be a name that follows the managers). Absent from records written before it was
    /// kept, and from nodes that `shoal-manager` recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    joined_through: Option<String>,
    /// The address other nodes reach this node at, for a node whose process can run a manager
    /// (it advertises it to the Raft group when promoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    advertise_addr: Option<String>,
}

/// The `shoal-runtime-logger` executable: `given`, or the one next to the running program
/// (`program` names it in the error).
pub fn find_logger(given: Option<&Path>, program: &str) -> Result<PathBuf, WorkerError> {
    let logger = match given {
        Some(path) => path.to_owned(),
        None => std::env::current_exe()
            .map_err(|e| WorkerError::Logger {
                path: PathBuf::from("shoal-runtime-logger"),
                reason: format!("cannot find {program} itself to look beside it ({e}); pass --logger"),
            })?
            .with_file_name("shoal-runtime-logger"),
    };
    if !logger.is_file() {
        return Err(WorkerError::Logger {
            path: logger,
            reason: format!("not found; install shoal-runtime-logger next to {program} or pass --logger"),
        });
    }
    Ok(logger)
}

fn data_error(path: &Path, reason: impl Into<String>) -> WorkerError {
    WorkerError::DataDir { path: path.to_owned(), reason: reason.into() }
}

/// Joins the cluster of the manager at `remote` with a worker `token`; returns the node ID.
pub async fn join_worker(data_dir: &Path, remote: &str, token: &str) -> Result<String, WorkerError> {
    let state_path = data_dir.join("agent.json");
    if state_path.exists() {
        return Err(data_error(
            data_dir,
            "already holds a joined node; run `shoal-agent run` to resume, or use another --data-dir",
        ));
    }
    let (credentials, _) = crate::join(remote, token, &data_dir.join("certs")).await?;
    let node_id = credentials.identity().node_id.clone();
    let state = State {
        node_id: node_id.clone(),
        managers: vec![remote.to_owned()],
        joined_through: Some(remote.to_owned()),
        advertise_addr: None,
    };
    write_state(data_dir, &state)?;
    Ok(node_id)
}

/// What this machine says about itself in its session; `hostname` overrides the machine's.
pub fn describe_node(hostname: Option<&str>) -> v1::NodeDescription {
    let hostname = hostname.map(str::to_owned).unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
    });
    let cpus = std::thread::available_parallelism().map(|n| n.get() as i64).unwrap_or(1);
    let memory_kib: i64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    v1::NodeDescription {
        hostname,
        platform: Some(v1::Platform { architecture: arch.to_owned(), os: std::env::consts::OS.to_owned() }),
        resources: Some(v1::Resources {
            nano_cpus: cpus * 1_000_000_000,
            memory_bytes: memory_kib * 1024,
            ..Default::default()
        }),
        engine: Some(v1::EngineDescription {
            engine_version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        }),
        can_manage: false,
        ..Default::default()
    }
}

/// Runs the worker joined in `config.data_dir` on containerd until `shutdown` resolves.
pub async fn run_worker(config: &WorkerConfig, shutdown: impl Future<Output = ()>) -> Result<AgentExit, WorkerError> {
    let state = load_state(&config.data_dir)?;
    let (certs, managers) = (config.data_dir.join("certs"), start_managers(&state));
    run_agent(config, &certs, state.node_id, managers, v1::NodeRole::Worker, true, shutdown).await
}

/// The worker's record in `data_dir`.
fn load_state(data_dir: &Path) -> Result<State, WorkerError> {
    let state_path = data_dir.join("agent.json");
    let bytes = std::fs::read(&state_path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            data_error(data_dir, "holds no joined node; run `shoal-agent join --token TOKEN MANAGER` first")
        }
        _ => data_error(&state_path, format!("cannot be read: {e}")),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        data_error(&state_path, format!("is not a valid agent state ({e}); join again with a fresh --data-dir"))
    })
}

/// The managers a worker tries first after a start: the ones it knew, the one most recently
/// known to work first, then the address it joined through.
fn start_managers(state: &State) -> Vec<String> {
    let mut managers = state.managers.clone();
    if let Some(joined) = state.joined_through.as_ref().filter(|j| !managers.contains(j)) {
        managers.push(joined.clone());
    }
    managers
}

/// Saves `managers` as the ones the worker in `data_dir` knows, keeping the rest of its record;
/// returns whether it wrote (not when the record already holds them, nor for an empty list).
fn save_managers(data_dir: &Path, managers: &[String]) -> Result<bool, WorkerError> {
    let state = load_state(data_dir)?;
    if managers.is_empty() || state.managers == managers {
        return Ok(false);
    }
    write_state(data_dir, &State { managers: managers.to_vec(), ..state })?;
    Ok(true)
}

/// Runs the worker role of a node whose certificates are in `certs` (a manager runs one too, with
/// its own certificate, against itself and the other managers); `runs_as` is the role the
/// process runs the node as.
pub async fn run_node(
    config: &WorkerConfig,
    certs: &Path,
    node_id: String,
    managers: Vec<String>,
    runs_as: v1::NodeRole,
    shutdown: impl Future<Output = ()>,
) -> Result<AgentExit, WorkerError> {
    // The embedder keeps its own record of the managers (shoal-manager: its Raft group).
    run_agent(config, certs, node_id, managers, runs_as, false, shutdown).await
}

/// [`run_node`], saving the managers the agent learns in `agent.json` when `save`.
async fn run_agent(
    config: &WorkerConfig,
    certs: &Path,
    node_id: String,
    managers: Vec<String>,
    runs_as: v1::NodeRole,
    save: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<AgentExit, WorkerError> {
    let live = LiveCredentials::load_encrypted(certs, config.key_encryption.clone())
        .map_err(|e| data_error(certs, e.to_string()))?;
    let credentials = live.current();
    if credentials.not_after() <= time::OffsetDateTime::now_utc() && runs_as == v1::NodeRole::Worker {
        // No manager will renew a certificate that no longer proves who the node is.
        return Err(data_error(
            certs,
            format!(
                "the node's certificate expired at {} (the node was down past its lifetime, and a \
                 running node renews it well before): remove the node on a manager (`shoal node rm \
                 --force {}`), then join again with a fresh --data-dir (`shoal-agent join --token \
                 TOKEN MANAGER`)",
                credentials.not_after(),
                credentials.identity().node_id
            ),
        ));
    }
    let certificate_role = match credentials.identity().role {
        shoal_ca_pki::Role::Manager => v1::NodeRole::Manager,
        shoal_ca_pki::Role::Worker => v1::NodeRole::Worker,
    };
    let tls = live_client_config(&live).map_err(|e| data_error(certs, e.to_string()))?;
    let mut containerd = ContainerdConfig::new(
        &config.containerd_socket,
        &config.containerd_namespace,
        config.data_dir.join("runtime"),
        &config.logger,
    );
    containerd.insecure_registries = config.insecure_registries.clone();
    let runtime = Containerd::connect(containerd).await?;
    let mut agent = Agent::new(
        AgentConfig {
            managers,
            tls,
            node_id,
            description: v1::NodeDescription {
                can_manage: config.can_manage,
                ..describe_node(config.hostname.as_deref())
            },
            dirs: crate::NodeDirs::under(&config.data_dir),
            role: runs_as,
            certificate_role,
            certs_dir: config.can_manage.then(|| certs.to_owned()),
            credentials: Some(live),
            network: config.network.clone(),
            metrics: config.metrics.clone(),
        },
        Arc::new(runtime),
    );
    if save {
        let data_dir = config.data_dir.clone();
        agent = agent.saving_managers(move |managers| Ok(save_managers(&data_dir, managers).map(drop)?));
    }
    Ok(agent.run(shutdown).await?)
}

/// Records in `data_dir` a node that runs as a worker (node ID, the managers to reach and, for a
/// node that can be promoted, the address it advertises), as `join_worker` does after joining:
/// for a node that joined otherwise, or that was demoted.
pub fn record_worker(
    data_dir: &Path,
    node_id: &str,
    managers: Vec<String>,
    advertise_addr: Option<&str>,
) -> Result<(), WorkerError> {
    let state = State {
        node_id: node_id.to_owned(),
        managers,
        joined_through: None,
        advertise_addr: advertise_addr.map(str::to_owned),
    };
    write_state(data_dir, &state)
}

/// Writes the worker's record in `data_dir`.
fn write_state(data_dir: &Path, state: &State) -> Result<(), WorkerError> {
    let state_path = data_dir.join("agent.json");
    let json = serde_json::to_vec_pretty(state).map_err(|e| data_error(&state_path, e.to_string()))?;
    // Replaced atomically (a temporary file, synced, renamed, the directory synced): a crash
    // leaves the old record or the new one, never a torn one.
    let tmp = data_dir.join("agent.json.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, &json)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &state_path)?;
        std::fs::File::open(data_dir)?.sync_all()
    };
    write().map_err(|e| data_error(&state_path, e.to_string()))
}

/// Forgets that `data_dir` holds a worker (after a promotion: the node runs as a manager).
pub fn forget_worker(data_dir: &Path) -> Result<(), WorkerError> {
    let state_path = data_dir.join("agent.json");
    match std::fs::remove_file(&state_path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(data_error(&state_path, e.to_string())),
    }
}

/// The address recorded for the worker in `data_dir` by [`record_worker`], if any.
pub fn worker_advertise_addr(data_dir: &Path) -> Result<Option<String>, WorkerError> {
    let state_path = data_dir.join("agent.json");
    let bytes = std::fs::read(&state_path).map_err(|e| data_error(&state_path, format!("cannot be read: {e}")))?;
    let state: State = serde_json::from_slice(&bytes).map_err(|e| {
        data_error(&state_path, format!("is not a worker record ({e}); join again with a fresh --data-dir"))
    })?;
    Ok(state.advertise_addr)
}

/// Whether `data_dir` holds a joined worker.
pub fn holds_worker(data_dir: &Path) -> bool {
    data_dir.join("agent.json").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(data_dir: &Path) -> WorkerConfig {
        WorkerConfig {
            data_dir: data_dir.to_owned(),
            containerd_socket: data_dir.join("no-containerd.sock"),
            containerd_namespace: "shoal-test".into(),
            logger: data_dir.join("logger"),
            insecure_registries: Vec::new(),
            hostname: None,
            can_manage: false,
            network: None,
            metrics: None,
            key_encryption: Default::default(),
        }
    }

    #[test]
    fn a_worker_record_keeps_the_address_a_promotable_node_advertises() {
        let dir = std::env::temp_dir().join(format!("shoal-agent-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("data dir");
        record_worker(&dir, "n1", vec!["192.0.2.11:2377".into()], Some("192.0.2.13:2377")).expect("record");
        assert_eq!(worker_advertise_addr(&dir).expect("read").as_deref(), Some("192.0.2.13:2377"));
        record_worker(&dir, "n1", vec!["192.0.2.11:2377".into()], None).expect("record");
        assert_eq!(worker_advertise_addr(&dir).expect("read"), None);
        // A record written before the address was kept reads as none.
        std::fs::write(dir.join("agent.json"), br#"{"node_id":"n1","managers":[]}"#).expect("old record");
        let old = worker_advertise_addr(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(old.expect("read"), None);
    }

    fn addrs(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| (*a).to_owned()).collect()
    }

    /// The record's inode and contents: a rename gives a new inode, an untouched file keeps both.
    fn on_disk(dir: &Path) -> (u64, String) {
        use std::os::unix::fs::MetadataExt;
        let path = dir.join("agent.json");
        (std::fs::metadata(&path).expect("record").ino(), std::fs::read_to_string(&path).expect("record"))
    }

    #[test]
    fn a_record_from_before_the_saved_managers_loads_and_takes_them() {
        let dir = std::env::temp_dir().join(format!("shoal-agent-old-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("data dir");
        // What `join_worker` and `record_worker` wrote before: the join address only.
        std::fs::write(
            dir.join("agent.json"),
            br#"{"node_id":"n1","managers":["192.0.2.11:2377"],"advertise_addr":"192.0.2.14:2377"}"#,
        )
        .expect("old record");
        let old = load_state(&dir).expect("an old record loads");
        assert_eq!(start_managers(&old), addrs(&["192.0.2.11:2377"]));
        let wrote = save_managers(&dir, &addrs(&["192.0.2.12:2377", "192.0.2.11:2377"])).expect("save");
        let now = load_state(&dir).expect("load");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(wrote);
        let want = State {
            node_id: "n1".into(),
            managers: addrs(&["192.0.2.12:2377", "192.0.2.11:2377"]),
            joined_through: None,
            advertise_addr: Some("192.0.2.14:2377".into()),
        };
        assert_eq!(now, want);
    }

    #[test]
    fn saved_managers_replace_the_list_atomically_and_the_join_address_is_tried_last() {
        let dir = std::env::temp_dir().join(format!("shoal-agent-save-managers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("data dir");
        let joined = State {
            node_id: "n1".into(),
            managers: addrs(&["192.0.2.11:2377"]),
            joined_through: Some("192.0.2.11:2377".into()),
            advertise_addr: None,
        };
        write_state(&dir, &joined).expect("join record");
        // A crash during an earlier save left its temporary file: it is written over.
        std::fs::write(dir.join("agent.json.tmp"), b"{\"node_id\":").expect("torn temporary file");
        let (inode, _) = on_disk(&dir);
        // m1, the join address, is no longer a manager: the cluster lists m2 and m3.
        let learned = addrs(&["192.0.2.12:2377", "192.0.2.13:2377"]);
        assert!(save_managers(&dir, &learned).expect("save"));
        let (new_inode, text) = on_disk(&dir);
        let state = load_state(&dir).expect("load");
        let leftover = dir.join("agent.json.tmp").exists();
        let _ = std::fs::remove_dir_all(&dir);
        assert_ne!(new_inode, inode, "replaced by a rename, not rewritten in place");
        assert!(!leftover, "the temporary file was renamed over the record");
        assert!(text.contains("\"joined_through\": \"192.0.2.11:2377\""), "{text}");
        assert_eq!(state, State { managers: learned, ..joined });
        // After a restart the last managers known to work come first, the join address last.
        assert_eq!(start_managers(&state), addrs(&["192.0.2.12:2377", "192.0.2.13:2377", "192.0.2.11:2377"]));
    }

    #[test]
    fn an_unchanged_or_empty_list_is_not_written() {
        let dir = std::env::temp_dir().join(format!("shoal-agent-unchanged-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("data dir");
        let managers = addrs(&["192.0.2.12:2377", "192.0.2.11:2377"]);
        record_worker(&dir, "n1", managers.clone(), Some("192.0.2.14:2377")).expect("record");
        let before = on_disk(&dir);
        let same = save_managers(&dir, &managers).expect("save");
        let empty = save_managers(&dir, &[]).expect("save");
        let after = on_disk(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(!same && !empty);
        assert_eq!(after, before, "the record was not rewritten");
    }

    #[tokio::test]
    async fn a_worker_whose_certificate_expired_while_it_was_down_says_how_to_rejoin() {
        use shoal_ca_pki::{ClusterCa, NodeCredentials, NodeIdentity, NodeKey, Role, RootCa};
        let dir = std::env::temp_dir().join(format!("shoal-agent-expired-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let certs = dir.join("certs");
        std::fs::create_dir_all(&certs).expect("certs dir");
        // Issued two hours ago for one hour.
        let then = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
        let ca = ClusterCa::new(RootCa::generate(then).expect("root"));
        let key = NodeKey::generate().expect("key");
        let identity = NodeIdentity { node_id: "n1".into(), role: Role::Worker, cluster_id: "c1".into() };
        let chain = ca.issue(&key.csr_pem().expect("csr"), &identity, time::Duration::hours(1), then).expect("issue");
        NodeCredentials::new(&chain, key).expect("credentials").save(&certs, None).expect("save");
        ca.trust_bundle().save(&certs).expect("trust");
        let result =
            run_node(&config(&dir), &certs, "n1".into(), vec!["127.0.0.1:1".into()], v1::NodeRole::Worker, async {})
                .await;
        let _ = std::fs::remove_dir_all(&dir);
        let err = result.expect_err("an expired certificate");
        let text = err.to_string();
        assert!(text.contains("the node's certificate expired at"), "{text}");
        assert!(text.contains("`shoal node rm --force n1`") && text.contains("shoal-agent join --token"), "{text}");
    }

    #[tokio::test]
    async fn a_data_dir_says_whether_it_holds_no_node_or_cannot_be_read() {
        let dir = std::env::temp_dir().join(format!("shoal-agent-worker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("data dir");
        let err = run_worker(&config(&dir), async {}).await.expect_err("no node");
        assert!(err.to_string().ends_with("holds no joined node; run `shoal-agent join --token TOKEN MANAGER` first"));

        // A state file that exists but cannot be read is not "no node": the error says why.
        std::fs::create_dir(dir.join("agent.json")).expect("unreadable state");
        let err = run_worker(&config(&dir), async {}).await.expect_err("unreadable");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(err.to_string().contains("agent.json: cannot be read: "), "{err}");
    }
}

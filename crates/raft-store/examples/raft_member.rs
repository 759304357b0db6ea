//! One member of a replicated store as its own process, over the gRPC transport with TLS on
//! loopback, driven by line commands on stdin: the entry point `cargo xtask bench raft` uses to
//! run members as separate processes (and to kill -9 a leader).
//!
//! ```text
//! raft_member certs DIR                      # a CA and a leaf for "shoal-manager", localhost, 127.0.0.1
//! raft_member serve --id N --listen 127.0.0.1:PORT --dir DATA --tls DIR [--client-listen ADDR] [--no-fsync]
//! raft_member bench [--clients 1,16,256] [--ops N] [--bytes 256]
//! ```
//!
//! `serve` prints `ok listening RAFT_ADDR client CLIENT_ADDR` first. Besides the Raft transport
//! it serves a client API on `--client-listen` (default `127.0.0.1:0`), TLS with the same
//! certificate: etcd's v3 `KV.Put` (`proto/etcd_bench.proto`), backed by `Store::put`, so the
//! benchmark drives Shoal and etcd with the same client code over the same kind of connection.
//!
//! `bench` runs the whole benchmark (etcd, Debian's `etcd-server`, is required: without it the
//! benchmark fails): three `serve` children of this binary on loopback with TLS and fsync, then
//! 256-byte puts from 1, 16 and 256 concurrent clients, three ways:
//! 1. Shoal, clients embedded in the leader (the `load` command; how Shoal's manager uses the store);
//! 2. Shoal, clients in the bench process over one TLS gRPC connection to the leader's client API;
//! 3. a three-member etcd, clients in the bench process over one TLS gRPC connection to its leader.
//!
//! 2 and 3 are like for like (same client code, protocol, TLS and connection pattern; both
//! connected to the leader, so neither forwards) and the printed ratios compare them. Between 2
//! and 3 the leader of Shoal is killed with SIGKILL and the time until a put through a follower
//! succeeds is printed. Build with `--release` for meaningful figures.
//!
//! Commands on stdin (one per line; each answer is one line starting with `ok` or `err`):
//! `bootstrap` · `add ID ADDR` (learner, then voter) · `leader` · `put KEY VALUE` · `get KEY` ·
//! `load CLIENTS OPS BYTES` (puts from CLIENTS concurrent tasks; answers
//! `ok puts_per_sec=… p50_us=… p99_us=…`) · `failover-put KEY` (retries a put until it succeeds,
//! answers `ok millis=…`) · `quit`.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::PrivatePkcs8KeyDer;
use shoal_raft_store::Store;
use shoal_raft_store::StoreConfig;
use shoal_raft_store::grpc;
use shoal_raft_store::grpc::GrpcTransport;
use tokio::io::AsyncBufReadExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Where the benchmark looks for etcd (Debian's `etcd-server` installs `/usr/bin/etcd`).
const ETCD_PATHS: [&str; 2] = ["/usr/bin/etcd", "/usr/local/bin/etcd"];

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn certs(dir: &str) -> Result<(), Error> {
    // A CA and one leaf for every member (and for etcd in the comparison): valid for the role
    // name the gRPC transport checks and for loopback.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "raft bench ca");
    let ca_key = rcgen::KeyPair::generate()?;
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let leaf_params = rcgen::CertificateParams::new(vec![
        "shoal-manager".to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ])?;
    let leaf_key = rcgen::KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &ca)?;
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("ca.der"), ca.der())?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("cert.der"), leaf.der())?;
    std::fs::write(dir.join("cert.pem"), leaf.pem())?;
    std::fs::write(dir.join("key.der"), leaf_key.serialize_der())?;
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem())?;
    Ok(())
}

fn tls(dir: &str) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = CertificateDer::from(std::fs::read(PathBuf::from(dir).join("ca.der"))?);
    let cert = CertificateDer::from(std::fs::read(PathBuf::from(dir).join("cert.der"))?);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(std::fs::read(PathBuf::from(dir).join("key.der"))?));
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(server), Arc::new(client)))
}

fn percentile(sorted: &[Duration], p: f64) -> u128 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_micros()
}

/// Waits for the clients' latencies and prints throughput and percentiles, the same for both
/// stores.
async fn summarize<E>(
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<Duration>, E>>>,
    start: Instant,
) -> Result<String, Error>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    Ok(format!(
        "puts_per_sec={:.0} p50_us={} p99_us={} puts={}",
        all.len() as f64 / secs,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all.len()
    ))
}

async fn load(store: &Store, clients: usize, ops: usize, bytes: usize) -> Result<String, Error> {
    let value = vec![b'v'; bytes];
    let per_client = ops.div_ceil(clients.max(1));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let store = store.clone();
            let value = value.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let t = Instant::now();
                    store.put(format!("/bench/{c}/{i}"), value.clone()).await?;
                    lat.push(t.elapsed());
                }
                Ok::<_, shoal_raft_store::WriteError>(lat)
            })
        })
        .collect();
    Ok(format!("ok {}", summarize(tasks, start).await?))
}

async fn command(store: &Store, line: &str) -> Result<Option<String>, Error> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let answer = match words.as_slice() {
        ["bootstrap"] => {
            store.bootstrap().await?;
            "ok".to_owned()
        }
        ["add", id, addr] => {
            let id: u64 = id.parse()?;
            store.add_learner(id, *addr).await?;
            store.promote(id).await?;
            "ok".to_owned()
        }
        ["leader"] => format!("ok {}", store.leader().map_or("none".to_owned(), |l| l.to_string())),
        ["put", key, value] => format!("ok revision={}", store.put(*key, *value).await?.revision),
        ["get", key] => match store.get(*key).await? {
            Some(kv) => format!("ok {}", String::from_utf8_lossy(&kv.value)),
            None => "ok none".to_owned(),
        },
        ["load", clients, ops, bytes] => load(store, clients.parse()?, ops.parse()?, bytes.parse()?).await?,
        ["failover-put", key] => {
            let start = Instant::now();
            loop {
                if store.put(*key, "after-failover").await.is_ok() {
                    break format!("ok millis={}", start.elapsed().as_millis());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        ["quit"] => return Ok(None),
        _ => return Err(format!("unknown command {line:?}").into()),
    };
    Ok(Some(answer))
}

/// The client API a member serves: etcd's v3 `KV.Put`, each request one [`Store::put`], so the
/// benchmark's clients reach Shoal exactly as they reach etcd.
struct ClientApi {
    store: Store,
}

#[tonic::async_trait]
impl etcdpb::kv_server::Kv for ClientApi {
    async fn put(
        &self,
        request: tonic::Request<etcdpb::PutRequest>,
    ) -> Result<tonic::Response<etcdpb::PutResponse>, tonic::Status> {
        let etcdpb::PutRequest { key, value } = request.into_inner();
        let outcome = self.store.put(key, value).await.map_err(|e| match e {
            // Not applied: the client may try again, as etcd's "not leader" invites it to.
            shoal_raft_store::WriteError::NotLeader { .. } | shoal_raft_store::WriteError::LeaderUnreachable { .. } => {
                tonic::Status::unavailable(e.to_string())
            }
            _ => tonic::Status::internal(e.to_string()),
        })?;
        let revision = i64::try_from(outcome.revision)
            .map_err(|_| tonic::Status::internal(format!("revision {} does not fit etcd's int64", outcome.revision)))?;
        // etcd's header also carries the cluster id and Raft term; the benchmark reads neither.
        let header = etcdpb::ResponseHeader { cluster_id: 0, member_id: self.store.id(), revision, raft_term: 0 };
        Ok(tonic::Response::new(etcdpb::PutResponse { header: Some(header) }))
    }
}

async fn serve(args: &[String]) -> Result<(), Error> {
    let id: u64 = arg(args, "--id").ok_or("--id is required")?.parse()?;
    let listen = arg(args, "--listen").ok_or("--listen is required")?;
    let client_listen = arg(args, "--client-listen").unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let dir = arg(args, "--dir").ok_or("--dir is required")?;
    let tls_dir = arg(args, "--tls").ok_or("--tls is required")?;
    let (server_tls, client_tls) = tls(&tls_dir)?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let client_listener = tokio::net::TcpListener::bind(&client_listen).await?;
    let client_addr = client_listener.local_addr()?;
    let mut config = StoreConfig::new(id, listener.local_addr()?.to_string(), dir);
    config.fsync = !args.iter().any(|a| a == "--no-fsync");
    let transport = GrpcTransport::new(client_tls, "shoal-manager")?.into_transport();
    let store = Store::open(config, transport).await?;
    let server = tokio::spawn(grpc::serve(store.clone(), listener, server_tls, std::future::pending()));
    // The client API on its own port, as etcd keeps client and peer URLs apart; tonic's TLS
    // (rustls with ring, like the transport) with the same certificate, which also offers h2
    // by ALPN as etcd's clients expect.
    let tls_dir = PathBuf::from(tls_dir);
    let identity = tonic::transport::Identity::from_pem(
        std::fs::read(tls_dir.join("cert.pem"))?,
        std::fs::read(tls_dir.join("key.pem"))?,
    );
    let client_server = tonic::transport::Server::builder()
        .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?
        .add_service(etcdpb::kv_server::KvServer::new(ClientApi { store: store.clone() }))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(client_listener).with_nodelay(Some(true)));
    let client_server = tokio::spawn(client_server);
    println!("ok listening {} client {client_addr}", store.addr());
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match command(&store, &line).await {
            Ok(Some(answer)) => println!("{answer}"),
            Ok(None) => break,
            Err(e) => println!("err {e}"),
        }
    }
    store.shutdown().await;
    server.abort();
    client_server.abort();
    Ok(())
}

/// The etcd v3 messages, client and `KV` server of the comparison (`proto/etcd_bench.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
mod etcdpb {
    tonic::include_proto!("etcdserverpb");
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One TLS gRPC connection to `addr` (`127.0.0.1:PORT`), the same for etcd and for Shoal's
/// client API.
async fn client_channel(tls_dir: &std::path::Path, addr: &str) -> Result<tonic::transport::Channel, Error> {
    let ca = std::fs::read_to_string(tls_dir.join("ca.pem"))?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("localhost");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2));
    Ok(endpoint.connect().await?)
}

/// The etcd binary; the benchmark fails without it rather than print half a comparison.
fn find_etcd() -> Result<PathBuf, Error> {
    ETCD_PATHS.into_iter().map(PathBuf::from).find(|p| p.exists()).ok_or_else(|| {
        format!(
            "etcd not found at {}: the comparison needs it; install the Debian package etcd-server",
            ETCD_PATHS.join(" or ")
        )
        .into()
    })
}

/// Starts three etcd members on loopback with TLS (client and peer), waits for a leader and
/// returns the processes and a channel to the leader.
async fn start_etcd(
    etcd: &std::path::Path,
    root: &std::path::Path,
) -> Result<(Vec<tokio::process::Child>, tonic::transport::Channel), Error> {
    let tls = root.join("tls");
    let ports: Vec<(u16, u16)> = (0..3).map(|_| Ok((free_port()?, free_port()?))).collect::<Result<_, Error>>()?;
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=https://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut children = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let file = |name: &str| tls.join(name).to_string_lossy().into_owned();
        let child = tokio::process::Command::new(etcd)
            .args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(root.join(format!("etcd-{i}")))
            .args(["--listen-client-urls", &format!("https://127.0.0.1:{client}")])
            .args(["--advertise-client-urls", &format!("https://127.0.0.1:{client}")])
            .args(["--listen-peer-urls", &format!("https://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("https://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &cluster, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "shoal-bench"])
            .args(["--cert-file", &file("cert.pem"), "--key-file", &file("key.pem")])
            .args(["--peer-cert-file", &file("cert.pem"), "--peer-key-file", &file("key.pem")])
            .args(["--peer-trusted-ca-file", &file("ca.pem")])
            .args(["--log-level", "error", "--logger", "zap"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        children.push(child);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (client, _) in &ports {
            let Ok(channel) = client_channel(&tls, &format!("127.0.0.1:{client}")).await else { continue };
            let mut m = etcdpb::maintenance_client::MaintenanceClient::new(channel.clone());
            if let Ok(status) = m.status(etcdpb::StatusRequest {}).await {
                let status = status.into_inner();
                if status.leader != 0 && status.header.as_ref().is_some_and(|h| h.member_id == status.leader) {
                    return Ok((children, channel));
                }
            }
        }
        if Instant::now() > deadline {
            return Err("etcd did not elect a leader within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Puts from `clients` concurrent tasks over `channel` to etcd's `KV.Put`, served by etcd or by
/// a Shoal member's client API: the one load both are measured with. Keys are
/// `/bench/grpc/CLIENT/I`, new in both stores (the embedded load wrote `/bench/CLIENT/I`).
async fn etcd_load(
    channel: &tonic::transport::Channel,
    clients: usize,
    ops: usize,
    bytes: usize,
) -> Result<String, Error> {
    let value = vec![b'v'; bytes];
    let per_client = ops.div_ceil(clients.max(1));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let mut kv = etcdpb::kv_client::KvClient::new(channel.clone());
            let value = value.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let t = Instant::now();
                    kv.put(etcdpb::PutRequest {
                        key: format!("/bench/grpc/{c}/{i}").into_bytes(),
                        value: value.clone(),
                    })
                    .await?;
                    lat.push(t.elapsed());
                }
                Ok::<_, tonic::Status>(lat)
            })
        })
        .collect();
    summarize(tasks, start).await
}

fn field(result: &str, name: &str) -> Result<f64, Error> {
    result
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no number {name}= in {result:?}").into())
}

/// A child member process driven over its stdin and stdout.
struct Member {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Member {
    /// Starts member `id`; returns it with its Raft address and its client API's address.
    async fn spawn(exe: &std::path::Path, id: u64, root: &std::path::Path) -> Result<(Self, String, String), Error> {
        let mut child = tokio::process::Command::new(exe)
            .args(["serve", "--id", &id.to_string(), "--listen", "127.0.0.1:0"])
            .arg("--dir")
            .arg(root.join(format!("member-{id}")))
            .arg("--tls")
            .arg(root.join("tls"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            // Members log warnings (a killed leader is "unreachable"); keep the figures readable.
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut member = Self { child, stdin, out: tokio::io::BufReader::new(stdout).lines() };
        let first = member.out.next_line().await?.ok_or("member exited")?;
        let (addr, client_addr) = first
            .strip_prefix("ok listening ")
            .and_then(|rest| rest.split_once(" client "))
            .ok_or_else(|| format!("member {id}: {first}"))?;
        let (addr, client_addr) = (addr.to_owned(), client_addr.to_owned());
        Ok((member, addr, client_addr))
    }

    async fn ask(&mut self, command: &str) -> Result<String, Error> {
        use tokio::io::AsyncWriteExt;
        self.stdin.write_all(format!("{command}\n").as_bytes()).await?;
        let line = self.out.next_line().await?.ok_or("member exited")?;
        match line.strip_prefix("ok") {
            Some(rest) => Ok(rest.trim().to_owned()),
            None => Err(format!("{command}: {line}").into()),
        }
    }
}

async fn bench(args: &[String]) -> Result<(), Error> {
    let clients: Vec<usize> = arg(args, "--clients")
        .unwrap_or_else(|| "1,16,256".to_owned())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let bytes: usize = arg(args, "--bytes").map_or(Ok(256), |b| b.parse())?;
    let ops: Option<usize> = arg(args, "--ops").map(|o| o.parse()).transpose()?;
    let ops_for = |c: usize| ops.unwrap_or((c * 40).max(2_000));
    // Before anything runs: a comparison without its peer is no result.
    let etcd_bin = find_etcd()?;
    let exe = std::env::current_exe()?;
    let root = tempfile::tempdir()?;
    let tls_dir = root.path().join("tls");
    certs(&tls_dir.to_string_lossy())?;
    let mut members = Vec::new();
    let mut addrs = Vec::new();
    let mut client_addrs = Vec::new();
    for id in 1..=3 {
        let (m, addr, client_addr) = Member::spawn(&exe, id, root.path()).await?;
        members.push(m);
        addrs.push(addr);
        client_addrs.push(client_addr);
    }
    members[0].ask("bootstrap").await?;
    for id in 2..=3u64 {
        members[0].ask(&format!("add {id} {}", addrs[usize::try_from(id)? - 1])).await?;
    }
    // Both Shoal loads below go to member 1; they measure the leader, not a forwarding hop.
    let leader = members[0].ask("leader").await?;
    if leader != "1" {
        return Err(format!("member 1 bootstrapped the cluster but the leader is {leader}").into());
    }

    println!("shoal embedded: three member processes on loopback, gRPC over TLS between them, fsync on,");
    println!("       {bytes}-byte puts, clients embedded in the leader process (how Shoal's manager uses the store)");
    for c in &clients {
        let result = members[0].ask(&format!("load {c} {} {bytes}", ops_for(*c))).await?;
        println!("shoal(embedded) clients={c} {result}");
    }

    println!("shoal over gRPC/TLS (like for like with etcd): the same three members; clients in this process");
    println!("       over one TLS gRPC connection to the leader's client API (etcd's KV.Put, same client code");
    println!("       as for etcd below); connected to the leader only, so no put is forwarded");
    let channel = client_channel(&tls_dir, &client_addrs[0]).await?;
    let mut shoal = Vec::new();
    for c in &clients {
        let result = etcd_load(&channel, *c, ops_for(*c), bytes).await?;
        println!("shoal(grpc) clients={c} {result}");
        shoal.push((*c, result));
    }
    drop(channel);

    members[0].child.start_kill()?;
    let _ = members[0].child.wait().await;
    let failover = members[1].ask("failover-put /bench/failover").await?;
    println!("shoal leader kill -9 -> first successful put through a follower: {failover}");
    for m in members.iter_mut().skip(1) {
        let _ = m.ask("quit").await;
    }
    drop(members);

    let (mut etcd, channel) = start_etcd(&etcd_bin, root.path()).await?;
    println!("etcd: three member processes on loopback, TLS on client and peer links, fsync on,");
    println!("      clients in this process over one TLS gRPC connection to the leader (how etcd is used)");
    for (c, shoal_result) in &shoal {
        let result = etcd_load(&channel, *c, ops_for(*c), bytes).await?;
        println!("etcd clients={c} {result}");
        let ratio = field(shoal_result, "puts_per_sec")? / field(&result, "puts_per_sec")?.max(1.0);
        let p99 = field(shoal_result, "p99_us")? / field(&result, "p99_us")?.max(1.0);
        println!("ratio clients={c} shoal(grpc)/etcd puts_per_sec={ratio:.2} p99={p99:.2}");
    }
    for child in &mut etcd {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("certs") => {
            certs(args.get(1).ok_or("certs DIR")?)?;
            println!("ok");
            Ok(())
        }
        Some("serve") => serve(&args).await,
        Some("bench") => bench(&args).await,
        _ => Err(
            "usage: raft_member certs DIR | serve --id N --listen ADDR --dir DATA --tls DIR [--client-listen ADDR] \
                  [--no-fsync] | bench [--clients 1,16,256] [--ops N] [--bytes 256]"
                .into(),
        ),
    }
}

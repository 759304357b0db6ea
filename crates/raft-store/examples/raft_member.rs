//! One member of a replicated store as its own process, over the gRPC transport with TLS on
//! loopback, driven by line commands on stdin: the entry point `cargo xtask bench raft` and
//! `cargo xtask soak` use to run members as separate processes (and to kill -9 a leader).
//!
//! ```text
//! raft_member certs DIR                      # a CA and a leaf for "shoal-manager", localhost, 127.0.0.1
//! raft_member serve --id N --listen 127.0.0.1:PORT --dir DATA --tls DIR [--no-fsync]
//! raft_member bench [--clients 1,16,256] [--ops N] [--bytes 256]
//! ```
//!
//! `bench` runs the whole benchmark: three `serve` children of this binary on loopback with TLS
//! and fsync, puts from 1, 16 and 256 concurrent clients embedded in the leader (the way Shoal's
//! manager uses the store), then kill -9 of the leader and the time until a put through a
//! follower succeeds. Build with `--release` for meaningful figures.
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

async fn serve(args: &[String]) -> Result<(), Error> {
    let id: u64 = arg(args, "--id").ok_or("--id is required")?.parse()?;
    let listen = arg(args, "--listen").ok_or("--listen is required")?;
    let dir = arg(args, "--dir").ok_or("--dir is required")?;
    let tls_dir = arg(args, "--tls").ok_or("--tls is required")?;
    let (server_tls, client_tls) = tls(&tls_dir)?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    let mut config = StoreConfig::new(id, listener.local_addr()?.to_string(), dir);
    config.fsync = !args.iter().any(|a| a == "--no-fsync");
    let transport = GrpcTransport::new(client_tls, "shoal-manager")?.into_transport();
    let store = Store::open(config, transport).await?;
    let server = tokio::spawn(grpc::serve(store.clone(), listener, server_tls, std::future::pending()));
    println!("ok listening {}", store.addr());
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
    Ok(())
}

/// The etcd v3 client messages the comparison needs (`proto/etcd_bench.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
mod etcdpb {
    tonic::include_proto!("etcdserverpb");
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn etcd_channel(tls_dir: &std::path::Path, port: u16) -> Result<tonic::transport::Channel, Error> {
    let ca = std::fs::read_to_string(tls_dir.join("ca.pem"))?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("localhost");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))?
        .tls_config(tls)?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2));
    Ok(endpoint.connect().await?)
}

/// Starts three etcd members on loopback with TLS (client and peer), waits for a leader and
/// returns the processes and a channel to the leader; `None` when etcd is not installed.
async fn start_etcd(
    root: &std::path::Path,
) -> Result<Option<(Vec<tokio::process::Child>, tonic::transport::Channel)>, Error> {
    let Some(etcd) = ["/usr/bin/etcd", "/usr/local/bin/etcd"].into_iter().map(PathBuf::from).find(|p| p.exists())
    else {
        return Ok(None);
    };
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
        let child = tokio::process::Command::new(&etcd)
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
            let Ok(channel) = etcd_channel(&tls, *client).await else { continue };
            let mut m = etcdpb::maintenance_client::MaintenanceClient::new(channel.clone());
            if let Ok(status) = m.status(etcdpb::StatusRequest {}).await {
                let status = status.into_inner();
                if status.leader != 0 && status.header.as_ref().is_some_and(|h| h.member_id == status.leader) {
                    return Ok(Some((children, channel)));
                }
            }
        }
        if Instant::now() > deadline {
            return Err("etcd did not elect a leader within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

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
                    kv.put(etcdpb::PutRequest { key: format!("/bench/{c}/{i}").into_bytes(), value: value.clone() })
                        .await?;
                    lat.push(t.elapsed());
                }
                Ok::<_, tonic::Status>(lat)
            })
        })
        .collect();
    summarize(tasks, start).await
}

fn field(result: &str, name: &str) -> f64 {
    result
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A child member process driven over its stdin and stdout.
struct Member {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Member {
    async fn spawn(exe: &std::path::Path, id: u64, root: &std::path::Path) -> Result<(Self, String), Error> {
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
        let addr = first.strip_prefix("ok listening ").ok_or_else(|| format!("member {id}: {first}"))?.to_owned();
        Ok((member, addr))
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
    let exe = std::env::current_exe()?;
    let root = tempfile::tempdir()?;
    certs(&root.path().join("tls").to_string_lossy())?;
    let mut members = Vec::new();
    let mut addrs = Vec::new();
    for id in 1..=3 {
        let (m, addr) = Member::spawn(&exe, id, root.path()).await?;
        members.push(m);
        addrs.push(addr);
    }
    members[0].ask("bootstrap").await?;
    for id in 2..=3u64 {
        members[0].ask(&format!("add {id} {}", addrs[usize::try_from(id)? - 1])).await?;
    }
    println!("shoal: three member processes on loopback, gRPC over TLS, fsync on, {bytes}-byte puts,");
    println!("       clients embedded in the leader process (how Shoal's manager uses the store)");
    let mut shoal = Vec::new();
    for c in &clients {
        let n = ops.unwrap_or((c * 40).max(2_000));
        let result = members[0].ask(&format!("load {c} {n} {bytes}")).await?;
        println!("shoal clients={c} {result}");
        shoal.push((*c, result));
    }
    members[0].child.start_kill()?;
    let _ = members[0].child.wait().await;
    let failover = members[1].ask("failover-put /bench/failover").await?;
    println!("shoal leader kill -9 -> first successful put: {failover}");
    for m in members.iter_mut().skip(1) {
        let _ = m.ask("quit").await;
    }
    drop(members);

    match start_etcd(root.path()).await? {
        None => println!("etcd: not installed (Debian package etcd-server); comparison skipped"),
        Some((mut etcd, channel)) => {
            println!("etcd: three member processes on loopback, TLS on client and peer links, fsync on,");
            println!("      clients in this process over one TLS gRPC connection to the leader (how etcd is used)");
            for (c, shoal_result) in &shoal {
                let n = ops.unwrap_or((c * 40).max(2_000));
                let result = etcd_load(&channel, *c, n, bytes).await?;
                println!("etcd  clients={c} {result}");
                let ratio = field(shoal_result, "puts_per_sec") / field(&result, "puts_per_sec").max(1.0);
                let p99 = field(shoal_result, "p99_us") / field(&result, "p99_us").max(1.0);
                println!("ratio clients={c} shoal/etcd puts_per_sec={ratio:.2} p99={p99:.2}");
            }
            for child in &mut etcd {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
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
        _ => Err("usage: raft_member certs DIR | serve --id N --listen ADDR --dir DATA --tls DIR [--no-fsync] | bench"
            .into()),
    }
}

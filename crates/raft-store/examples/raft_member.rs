//! One member of a replicated store as its own process, over the gRPC transport with TLS on
//! loopback, driven by line commands on stdin: the entry point `cargo xtask bench raft` and
//! `cargo xtask soak` use to run members as separate processes (and to kill -9 a leader).
//!
//! ```text
//! raft_member certs DIR                      # self-signed cert.der + key.der for "shoal-manager"
//! raft_member serve --id N --listen 127.0.0.1:PORT --dir DATA --tls DIR [--no-fsync]
//! ```
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
    let ck = rcgen::generate_simple_self_signed(vec!["shoal-manager".to_owned()])?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(PathBuf::from(dir).join("cert.der"), ck.cert.der())?;
    std::fs::write(PathBuf::from(dir).join("key.der"), ck.signing_key.serialize_der())?;
    println!("ok");
    Ok(())
}

fn tls(dir: &str) -> Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>), Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = CertificateDer::from(std::fs::read(PathBuf::from(dir).join("cert.der"))?);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(std::fs::read(PathBuf::from(dir).join("key.der"))?));
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
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
    let mut all = Vec::with_capacity(ops);
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    Ok(format!(
        "ok puts_per_sec={:.0} p50_us={} p99_us={} puts={}",
        all.len() as f64 / secs,
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        all.len()
    ))
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

#[tokio::main]
async fn main() -> Result<(), Error> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("certs") => certs(args.get(1).ok_or("certs DIR")?),
        Some("serve") => serve(&args).await,
        _ => Err("usage: raft_member certs DIR | serve --id N --listen ADDR --dir DATA --tls DIR [--no-fsync]".into()),
    }
}

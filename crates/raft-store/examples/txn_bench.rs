//! A micro-benchmark of large transactions, the manager's write pattern (500 objects per Raft
//! entry): members on the in-process transport, each transaction 500 puts of 400-byte values,
//! timed one after another; prints the time per transaction and the log bytes each one took on
//! the leader's disk. It measures what the record and message encoding costs, run by hand:
//!
//! `cargo run --release -p shoal-raft-store --example txn_bench -- [--members 1|3] [--txns 40]
//! [--puts 500] [--bytes 400] [--no-fsync]`
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::time::Duration;
use std::time::Instant;

use shoal_raft_store::InProcessRouter;
use shoal_raft_store::Op;
use shoal_raft_store::Store;
use shoal_raft_store::StoreConfig;
use shoal_raft_store::Txn;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn arg(args: &[String], name: &str, default: usize) -> Result<usize, Error> {
    match args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)) {
        Some(v) => Ok(v.parse()?),
        None => Ok(default),
    }
}

/// Bytes of records in the log's segments, without the zeros written ahead of them.
fn log_bytes(dir: &Path) -> Result<u64, Error> {
    let mut total = 0;
    for item in std::fs::read_dir(dir.join("log"))? {
        let path = item?.path();
        if path.extension().is_some_and(|x| x == "log") {
            let bytes = std::fs::read(&path)?;
            total += bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1) as u64;
        }
    }
    Ok(total)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let members = arg(&args, "--members", 1)?.clamp(1, 5) as u64;
    let txns = arg(&args, "--txns", 40)?;
    let puts = arg(&args, "--puts", 500)?;
    let bytes = arg(&args, "--bytes", 400)?;
    let fsync = !args.iter().any(|a| a == "--no-fsync");
    let root = tempfile::tempdir()?;
    let router = InProcessRouter::new(1);
    let mut stores = Vec::new();
    for id in 1..=members {
        let mut config = StoreConfig::new(id, format!("mem://{id}"), root.path().join(id.to_string()));
        config.fsync = fsync;
        let store = Store::open(config, router.transport()).await?;
        router.register(&store);
        stores.push(store);
    }
    let leader = &stores[0];
    leader.bootstrap().await?;
    for id in 2..=members {
        leader.add_learner(id, format!("mem://{id}")).await?;
        leader.promote(id).await?;
    }
    let before = log_bytes(&root.path().join("1"))?;
    let value = vec![0x5a_u8; bytes];
    let mut times = Vec::with_capacity(txns);
    for t in 0..txns {
        let mut txn = Txn::new();
        for i in 0..puts {
            txn = txn.and_then(Op::put(format!("/tasks/{t:04}/{i:06}/spec"), value.clone()));
        }
        let start = Instant::now();
        leader.txn(txn).await?;
        times.push(start.elapsed());
    }
    let after = log_bytes(&root.path().join("1"))?;
    let total: Duration = times.iter().sum();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "members={members} fsync={} txns={txns} puts_per_txn={puts} value_bytes={bytes} mean_ms={:.2} p50_ms={:.2} max_ms={:.2} log_bytes_per_txn={}",
        if fsync { "on" } else { "off" },
        ms(total) / txns.max(1) as f64,
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        (after - before) / txns.max(1) as u64,
    );
    for s in &stores {
        s.shutdown().await;
    }
    Ok(())
}

//! Three members in one process on the in-process transport; a watch on one member prints every
//! change while another member writes, and the leader is stopped halfway to show failover.
//!
//! Run: `cargo run -p shoal-raft-store --example three_members`
#![allow(clippy::print_stdout)]

use std::time::Duration;

use shoal_raft_store::Compare;
use shoal_raft_store::InProcessRouter;
use shoal_raft_store::Op;
use shoal_raft_store::Store;
use shoal_raft_store::StoreConfig;
use shoal_raft_store::Txn;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let router = InProcessRouter::new(7);
    let mut stores = Vec::new();
    for id in 1..=3 {
        let store = Store::open(
            StoreConfig::new(id, format!("mem://{id}"), dir.path().join(id.to_string())),
            router.transport(),
        )
        .await?;
        router.register(&store);
        stores.push(store);
    }
    stores[0].bootstrap().await?;
    for id in 2..=3 {
        stores[0].add_learner(id, format!("mem://{id}")).await?;
        stores[0].promote(id).await?;
    }
    println!("leader: {:?}", stores[0].leader());

    // Watch every change under /services/ on member 3.
    let mut watch = stores[2].watch("/services/", 0)?;
    let printer = tokio::spawn(async move {
        while let Some(event) = watch.next().await {
            match event {
                Ok(ev) => println!(
                    "watch: {:?} {} = {:?} (revision {}, version {})",
                    ev.kind,
                    String::from_utf8_lossy(&ev.kv.key),
                    String::from_utf8_lossy(&ev.kv.value),
                    ev.kv.mod_revision,
                    ev.kv.version
                ),
                Err(e) => println!("watch ended: {e}"),
            }
        }
    });

    // Writes on a follower are forwarded to the leader.
    stores[1].put("/services/web", "replicas=1").await?;
    let web = stores[1].get("/services/web").await?.ok_or("web is missing")?;
    // Optimistic concurrency: update only if nobody changed it since we read it.
    let update = Txn::new()
        .when(Compare::mod_revision("/services/web", web.mod_revision))
        .and_then(Op::put("/services/web", "replicas=3"));
    println!("guarded update applied: {}", stores[1].txn(update).await?.succeeded);

    println!("--- stopping the leader");
    let leader = stores[0].leader().ok_or("no leader")?;
    let index = usize::try_from(leader - 1)?;
    router.unregister(leader);
    stores[index].shutdown().await;
    let survivor = &stores[if index == 2 { 1 } else { 2 }];
    loop {
        match survivor.put("/services/db", "replicas=1").await {
            Ok(_) => break,
            Err(e) => {
                println!("waiting for a new leader: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    survivor.delete("/services/web").await?;
    println!("new leader: {:?}", survivor.leader());
    let status = survivor.status().await;
    for m in &status.members {
        println!("member {} at {}: {:?}, {:?}", m.id, m.addr, m.role, m.reachability);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, s) in stores.iter().enumerate() {
        if i != index {
            s.shutdown().await;
        }
    }
    printer.await?;
    Ok(())
}

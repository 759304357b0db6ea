//! A `type=volume` mount with the local driver's NFS options (Docker's `volume-opt=type=nfs`,
//! `device=:/path`, `o=addr=…`) against the testbed's NFS server: two replicas on two workers
//! mount the same export, one writes, the other reads it back, and the server's directory holds
//! the file. The kernels of the workers mount it themselves (`mount(2)`, no helper), as Docker's
//! local driver does. Skipped on testbeds without an NFS server (this host's kernel has no NFS).

use shoal_testkit::Testbed;
use shoal_testkit::vm::NFS_EXPORT;

use super::{Running, eventually, in_task, running_task};
use crate::support::ok;

pub(crate) fn nfs_volume(bed: &dyn Testbed, cluster: &Running) {
    let Some(server) = bed.features().nfs_server else {
        eprintln!("--- NFS volume: skipped, the testbed has no NFS server (nfs_server in its inventory)");
        return;
    };
    let cli = &cluster.cli;
    let nodes = bed.nodes();
    let (w1, w2) = (nodes[1], nodes[2]);
    eprintln!("--- shared: 2 replicas on the workers, a volume on {server}:{NFS_EXPORT} over NFSv4.2");
    let tools = format!("{}/shoal-test/tools:latest", bed.registry());
    let mount = format!(
        "type=volume,source=shared,target=/data,volume-opt=type=nfs,volume-opt=device=:{NFS_EXPORT},\
         \"volume-opt=o=addr={server},nfsvers=4.2,rw\""
    );
    ok(
        cli,
        &[
            "service",
            "create",
            "--name",
            "shared",
            "--replicas",
            "2",
            "--constraint",
            "node.role==worker",
            "--replicas-max-per-node",
            "1",
            "--mount",
            &mount,
            &tools,
        ],
    );
    let (writer_node, writer) = running_task(bed, cli, "shared", w1.name());
    let (reader_node, reader) = running_task(bed, cli, "shared", w2.name());
    let marker = format!("written on {} by task {writer}", writer_node.name());
    let (wrote, out) = in_task(writer_node, &writer, &["sh", "-c", &format!("echo '{marker}' > /data/greeting")]);
    assert!(wrote, "the task on {} cannot write to the NFS volume: {out}", writer_node.name());
    let mut read = String::new();
    eventually(bed, &format!("{} reads what {} wrote", reader_node.name(), writer_node.name()), 10, || {
        read = in_task(reader_node, &reader, &["cat", "/data/greeting"]).1;
        read.trim() == marker
    });
    let on_server = bed
        .nodes()
        .into_iter()
        .find(|n| n.addr() == server)
        .map(|n| n.run(&["cat", &format!("{NFS_EXPORT}/greeting")]).expect("read the export on the server"));
    if let Some(on_server) = on_server {
        assert_eq!(on_server.trim(), marker, "the server's {NFS_EXPORT} holds the file");
    }
    let mounts = in_task(reader_node, &reader, &["cat", "/proc/mounts"]).1;
    assert!(
        mounts.lines().any(|l| l.contains(" /data nfs4 ") && l.contains(&format!("addr={server}"))),
        "/data is an NFSv4 mount of {server}: {mounts}"
    );
    ok(cli, &["service", "rm", "shared"]);
}

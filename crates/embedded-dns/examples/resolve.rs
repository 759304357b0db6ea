//! A container namespace asks the embedded server for a service, its tasks and an unknown name.
//!
//! Run as root: `cargo run -p shoal-embedded-dns --example resolve`. It creates a namespace named
//! `shoaltest-example-PID` (removed at the end; `cargo xtask clean` sweeps it if the example is
//! killed), attaches it to the server on network `front`, and queries 127.0.0.11:53 from inside.
//! No upstream is configured, so nothing leaves the machine.
// An example shows its results on standard output.
#![allow(clippy::print_stdout)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use shoal_embedded_dns::{
    ContainerResolvConf, Delta, DnsConfig, DnsServer, Endpoint, HostResolvConf, RecordTable, ServiceRecord, TaskRecord,
};

/// Deletes the namespace when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

fn ip(s: &str) -> Result<IpAddr, Box<dyn std::error::Error>> {
    Ok(s.parse()?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if !nix::unistd::geteuid().is_root() {
        return Err("run as root: the example creates a network namespace".into());
    }
    let name = format!("shoaltest-example-{}", std::process::id());
    Command::new("ip").args(["netns", "add", &name]).status()?;
    let netns = Netns(name);
    Command::new("ip").args(["-n", &netns.0, "link", "set", "lo", "up"]).status()?;

    // The record table: service `web` (VIP) with two tasks on network `front`.
    let table = RecordTable::new();
    let web = ServiceRecord {
        id: "s1".into(),
        name: "web".into(),
        aliases: vec![],
        endpoint: Endpoint::Vip(vec![ip("198.18.0.2")?]),
    };
    let task = |id: &str, addr: &str| -> Result<TaskRecord, Box<dyn std::error::Error>> {
        Ok(TaskRecord {
            id: id.into(),
            service_id: Some("s1".into()),
            name: format!("web.{id}"),
            hostname: None,
            aliases: vec![],
            addresses: vec![ip(addr)?],
            healthy: true,
        })
    };
    table.apply([
        Delta::UpsertService { network: "front".into(), service: web },
        Delta::UpsertTask { network: "front".into(), task: task("1", "198.18.0.10")? },
        Delta::UpsertTask { network: "front".into(), task: task("2", "198.18.0.11")? },
    ])?;

    let dns = DnsServer::new(DnsConfig::default(), table)?;
    let path = PathBuf::from("/run/netns").join(&netns.0);
    dns.attach("c1", &path, vec!["front".into()]).await?;

    // A client inside the namespace: the socket is opened by a thread that entered it.
    let client = {
        let file = std::fs::File::open(&path)?;
        std::thread::spawn(move || -> std::io::Result<std::net::UdpSocket> {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
            socket.set_read_timeout(Some(Duration::from_secs(2)))?;
            Ok(socket)
        })
        .join()
        .map_err(|_| "client thread panicked")??
    };
    for (qname, qtype) in [
        ("web.", RecordType::A),
        ("tasks.web.", RecordType::A),
        ("web.shoal.internal.", RecordType::A),
        ("db.", RecordType::A),
    ] {
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(Name::from_ascii(qname)?, qtype));
        client.send_to(&query.to_vec()?, "127.0.0.11:53")?;
        let mut buf = [0u8; 1500];
        let n = tokio::task::block_in_place(|| client.recv(&mut buf))?;
        let reply = Message::from_vec(&buf[..n])?;
        let answers: Vec<String> = reply.answers.iter().map(|r| r.data.to_string()).collect();
        let (qtype, rcode) = (qtype.to_string(), format!("{:?}", reply.metadata.response_code));
        println!("{qname:<22} {qtype:<5} {rcode:<9} {}", answers.join(" "));
    }

    let host = HostResolvConf::parse("nameserver 192.0.2.53\nsearch corp.example\n");
    println!(
        "\nthe container's resolv.conf:\n{}",
        ContainerResolvConf::from_host(&host, Some("shoal.internal")).render()
    );
    dns.detach("c1");
    Ok(())
}

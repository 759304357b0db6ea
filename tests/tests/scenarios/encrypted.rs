//! An encrypted overlay (`network create --opt encrypted`, SCENARIOS.md 6): on kernels with ESP,
//! a task on one worker keeps reaching a task on the other over the encrypted network while the
//! manager rotates the keys (every 15 s here), each worker holds an inbound SA per key of the ring
//! and one outbound SA, the outbound SPI changes with the rotations, and a capture of the
//! underlay has ESP between the workers and no byte of the encrypted network's traffic in the
//! clear — while a plain network's VXLAN, the control, is readable there. On kernels without ESP,
//! the network is created, but its tasks are refused with the reason and never wired.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use shoal_testkit::capture::{self, Packet};
use shoal_testkit::{NodeProcess, TestNode, Testbed};

use super::{Running, eventually, in_task, json, running_task};
use crate::support::{body, ok};

/// The reqid of Shoal's SAs (`shoal_overlay::xfrm::ESP_MARK`) as `ip xfrm` prints it.
const REQID: &str = "reqid 1163087872";
const ROTATION: &str = "15s";
/// How long traffic runs across rotations.
const TRAFFIC_SECS: u64 = 45;

pub(crate) fn encrypted_overlay(bed: &dyn Testbed, cluster: &Running) {
    let cli = &cluster.cli;
    let nodes = bed.nodes();
    let (w1, w2) = (nodes[1], nodes[2]);
    let web = format!("{}/shoal-test/web:v1", bed.registry());
    eprintln!("--- an encrypted network: created with ESP's bytes off its MTU");
    ok(cli, &["network", "create", "--opt", "encrypted", "secure"]);
    let mut inspect = serde_json::Value::Null;
    eventually(bed, "secure allocated", 30, || {
        inspect = json(cli, &["network", "inspect", "secure"]);
        !inspect[0]["Options"]["com.docker.network.driver.mtu"].is_null()
    });
    assert_eq!(inspect[0]["Options"]["encrypted"], "", "{inspect}");
    assert_eq!(inspect[0]["Options"]["com.docker.network.driver.mtu"], "1416", "{inspect}");
    let service = |name: &str, network: &str| {
        ok(
            cli,
            &[
                "service",
                "create",
                "--detach",
                "--name",
                name,
                "--replicas",
                "2",
                "--constraint",
                "node.role==worker",
                "--network",
                network,
                &web,
            ],
        );
    };

    if !bed.features().esp {
        eprintln!("--- this kernel has no ESP: the task is refused with the reason, never sent in the clear");
        service("secweb", "secure");
        let mut tasks = serde_json::Value::Null;
        eventually(bed, "secweb's tasks refused for want of ESP", 60, || {
            tasks = json(cli, &["service", "ps", "--format", "json", "secweb"]);
            tasks
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["State"] == "Rejected" && t["Err"].as_str().is_some_and(|e| e.contains("has no ESP (esp4)")))
        });
        assert!(
            !tasks.as_array().into_iter().flatten().any(|t| t["State"] == "Running"),
            "no task of an encrypted network runs without ESP: {tasks}"
        );
        ok(cli, &["service", "rm", "secweb"]);
        ok(cli, &["network", "rm", "secure"]);
        return;
    }

    eprintln!("--- keys rotate every {ROTATION}; web on the encrypted network and, the control, on a plain one");
    ok(cli, &["cluster", "update", "--network-key-rotation", ROTATION]);
    ok(cli, &["network", "create", "plain"]);
    service("secweb", "secure");
    service("plainweb", "plain");
    eventually(bed, "secweb and plainweb converged", 120, || {
        let ls = ok(cli, &["service", "ls"]);
        ["secweb", "plainweb"].iter().all(|s| ls.lines().any(|l| l.contains(&format!(" {s} ")) && l.contains(" 2/2 ")))
    });
    let (_, client) = running_task(bed, cli, "secweb", w1.name());
    let (_, server) = running_task(bed, cli, "secweb", w2.name());
    let (_, plain_client) = running_task(bed, cli, "plainweb", w1.name());
    let (_, plain_server) = running_task(bed, cli, "plainweb", w2.name());
    let server_ip = overlay_ip(w2, &server);
    let plain_ip = overlay_ip(w2, &plain_server);
    let vni = |network: &str| -> u32 {
        let inspect = json(cli, &["network", "inspect", network]);
        let vni = &inspect[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"];
        vni.as_str().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no VNI: {inspect}"))
    };
    let (secure_vni, plain_vni) = (vni("secure"), vni("plain"));

    eprintln!("--- each worker holds 3 inbound SAs and 1 outbound SA for the other");
    let mut state = String::new();
    eventually(bed, "w1's SAs", 60, || {
        state = xfrm(w1, "state");
        sas(&state, w2.addr(), w1.addr()) == 3 && sas(&state, w1.addr(), w2.addr()) == 1
    });

    // The first page each server gives: its marker, looked for in the capture.
    let secret = fetch(w1, &client, &server_ip).unwrap_or_else(|| {
        panic!("secweb over the encrypted network ({server_ip}): no page\n{}", diagnostics(&[w1, w2]))
    });
    let control = fetch(w1, &plain_client, &plain_ip).expect("plainweb over the plain network");
    assert!(secret.starts_with("v1 ") && control.starts_with("v1 "), "{secret:?} {control:?}");

    eprintln!("--- {TRAFFIC_SECS} s of requests w1 -> w2 across rotations, captured on the underlay");
    let capture = Capture::start(bed, w1, w2);
    let loop_script = format!(
        "ok=0; fail=0; end=$(( $(date +%s) + {TRAFFIC_SECS} )); \
         while [ $(date +%s) -lt $end ]; do \
           if {} | grep -q '{secret}'; then ok=$((ok+1)); else fail=$((fail+1)); fi; \
           sleep 0.2; \
         done; echo ok=$ok fail=$fail",
        get(&server_ip)
    );
    let mut spis = BTreeSet::new();
    let traffic = std::thread::scope(|scope| {
        let traffic = scope.spawn(|| in_task(w1, &client, &["sh", "-c", &loop_script]));
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(TRAFFIC_SECS) && !traffic.is_finished() {
            spis.extend(outbound_spi(&xfrm(w1, "policy"), w2.addr()));
            std::thread::sleep(Duration::from_secs(2));
        }
        traffic.join().expect("the traffic thread")
    });
    let plain = fetch(w1, &plain_client, &plain_ip).unwrap_or_default();
    assert_eq!(plain, control, "the control request");
    let packets = capture.finish();

    eprintln!("--- {}; outbound SPIs seen: {spis:x?}", traffic.1.trim());
    let counts = traffic.1.trim().rsplit_once("ok=").map(|(_, c)| c.to_owned()).unwrap_or_default();
    let (good, failed) = counts
        .split_once(" fail=")
        .and_then(|(o, f)| Some((o.parse::<u32>().ok()?, f.trim().parse::<u32>().ok()?)))
        .unwrap_or_else(|| panic!("the traffic loop's tally: {}", traffic.1));
    assert_eq!(failed, 0, "requests failed across the rotations ({good} went through)");
    assert!(good >= 20, "only {good} requests in {TRAFFIC_SECS} s");
    assert!(spis.len() >= 2, "the outbound SPI never changed: no rotation reached w1 ({spis:x?})");

    let between = |p: &Packet| (p.src == w1.addr() && p.dst == w2.addr()) || (p.src == w2.addr() && p.dst == w1.addr());
    let esp = packets.iter().filter(|p| between(p) && p.protocol == 50).count();
    let clear = packets.iter().filter(|p| p.vni == Some(secure_vni)).count();
    let leaked = packets.iter().filter(|p| p.contains(secret.as_bytes())).count();
    let plain_vxlan = packets.iter().filter(|p| p.vni == Some(plain_vni)).count();
    let plain_seen = packets.iter().filter(|p| p.contains(control.as_bytes())).count();
    eprintln!(
        "--- capture: {} IPv4 packets, {esp} ESP between the workers, {clear} VXLAN of the encrypted network, \
         {leaked} with its page; {plain_vxlan} VXLAN of the plain one, {plain_seen} with its page",
        packets.len()
    );
    assert!(esp > 0, "no ESP between the workers in the capture");
    assert_eq!(clear, 0, "VXLAN datagrams of the encrypted network (vni {secure_vni}) crossed the underlay");
    assert_eq!(leaked, 0, "the encrypted network's page {secret:?} crossed the underlay in the clear");
    assert!(plain_vxlan > 0 && plain_seen > 0, "the control: the plain network's page is readable on the wire");

    eprintln!("--- after the rotations: still 3 inbound SAs and 1 outbound");
    eventually(bed, "w1's SAs settle", 30, || {
        state = xfrm(w1, "state");
        sas(&state, w2.addr(), w1.addr()) == 3 && sas(&state, w1.addr(), w2.addr()) == 1
    });
    for name in ["secweb", "plainweb"] {
        ok(cli, &["service", "rm", name]);
    }
    ok(cli, &["cluster", "update", "--network-key-rotation", "12h"]);
}

/// A shell pipeline that GETs `/` from `ip`:80 and prints the answer (busybox's `nc`: its
/// static `wget` crashes on some kernels).
fn get(ip: &str) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 10 nc -w 5 {ip} 80")
}

/// The page task `task` on `node` gets from `ip`:80, if it gets one.
fn fetch(node: &dyn TestNode, task: &str, ip: &str) -> Option<String> {
    let (_, out) = in_task(node, task, &["sh", "-c", &get(ip)]);
    body(&out)
}

/// What the workers' kernels say of ESP, for a failure's message: SAs and policies with their
/// counters, the marking table's counters, the xfrm error counters.
fn diagnostics(nodes: &[&dyn TestNode]) -> String {
    let mut out = String::new();
    for node in nodes {
        for argv in [
            &["ip", "-s", "xfrm", "state"][..],
            &["ip", "-s", "xfrm", "policy"],
            &["nft", "list", "table", "ip", "shoal_esp"],
            &["cat", "/proc/net/xfrm_stat"],
        ] {
            let shown = node.exec(argv).map_or_else(
                |e| e.to_string(),
                |o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
            );
            out.push_str(&format!("--- {}: {}\n{shown}\n", node.name(), argv.join(" ")));
        }
    }
    out
}

/// The IPv4 address of `eth0` in task `task` on `node`: its address on the task's first network.
fn overlay_ip(node: &dyn TestNode, task: &str) -> String {
    let (ok, out) = in_task(node, task, &["ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(ok, "ip addr in {task}: {out}");
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_else(|| panic!("no address on eth0 of {task}: {out}"))
        .to_owned()
}

/// `ip xfrm OBJECT` on `node`.
fn xfrm(node: &dyn TestNode, object: &str) -> String {
    node.run(&["ip", "xfrm", object]).unwrap_or_else(|e| panic!("ip xfrm {object} on {}: {e}", node.name()))
}

/// How many of Shoal's SAs `ip xfrm state` lists from `src` to `dst`.
fn sas(state: &str, src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr) -> usize {
    let head = format!("src {src} dst {dst}");
    let lines: Vec<&str> = state.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(i, l)| l.starts_with(&head) && lines.get(i + 1).is_some_and(|next| next.contains(REQID)))
        .count()
}

/// The SPI of the outbound policy towards `peer` in `ip xfrm policy`'s output (its template's
/// `proto esp spi 0x…` line).
fn outbound_spi(policies: &str, peer: std::net::Ipv4Addr) -> Option<u32> {
    let mut towards = false;
    for line in policies.lines() {
        if line.starts_with("src ") {
            towards = line.contains(&format!("dst {peer}/32"));
        } else if towards && line.trim_start().starts_with("proto esp spi ") {
            let spi = line.split_whitespace().nth(3)?;
            let hex = spi.split('(').next()?.trim_start_matches("0x");
            return u32::from_str_radix(hex, 16).ok();
        }
    }
    None
}

/// `tcpdump` of the underlay: in the testbed's client namespace on this host when it has one
/// (every VM's tap is there), else on the first worker's underlay device.
enum Capture<'a> {
    Local { child: std::process::Child, file: PathBuf },
    Node { node: &'a dyn TestNode, process: Box<dyn NodeProcess>, file: PathBuf },
}

impl<'a> Capture<'a> {
    fn start(bed: &dyn Testbed, w1: &'a dyn TestNode, w2: &dyn TestNode) -> Self {
        let filter = format!("host {} and host {}", w1.addr(), w2.addr());
        let capture = match bed.client_netns() {
            Some(netns) => {
                let file = bed.work_dir().join("underlay.pcap");
                let child = std::process::Command::new("ip")
                    .args(["netns", "exec", netns, "tcpdump", "-i", "any", "-U", "-s", "0", "-w"])
                    .arg(&file)
                    .arg(&filter)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("start tcpdump");
                Self::Local { child, file }
            }
            None => {
                let route = w1.run(&["ip", "-o", "route", "get", &w2.addr().to_string()]).expect("route to w2");
                let device = route.split_whitespace().skip_while(|w| *w != "dev").nth(1).unwrap_or("any").to_owned();
                let file = PathBuf::from("/tmp/shoal-underlay.pcap");
                let argv: Vec<String> =
                    ["tcpdump", "-i", &device, "-U", "-s", "0", "-w", "/tmp/shoal-underlay.pcap", &filter]
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect();
                let process = w1.spawn("tcpdump", &argv).expect("start tcpdump");
                Self::Node { node: w1, process, file }
            }
        };
        // tcpdump opens its sockets in well under this, even emulated.
        std::thread::sleep(Duration::from_secs(3));
        capture
    }

    fn finish(self) -> Vec<Packet> {
        std::thread::sleep(Duration::from_secs(1));
        let data = match self {
            Self::Local { mut child, file } => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)),
                    nix::sys::signal::Signal::SIGINT,
                );
                let _ = child.wait();
                std::fs::read(&file).expect("read the capture")
            }
            Self::Node { node, mut process, file } => {
                process.kill().expect("stop tcpdump");
                node.read_file(&file).expect("read the capture")
            }
        };
        capture::ipv4_packets(&data).expect("a pcap file")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_outbound_spi_is_read_from_ip_xfrm_policy() {
        let shown = "src 192.0.2.12/32 dst 192.0.2.13/32 proto 17 dport 4789 uid 0
\tdir out action allow index 9 priority 100 ptype main share any flag  (0x00000000)
\tmark 0x45535000/0xffffffff
\ttmpl src 192.0.2.12 dst 192.0.2.13
\t\tproto esp spi 0xdfd80529(3755476265) reqid 1163087872(0x45535000) mode transport
src 0.0.0.0/0 dst 0.0.0.0/0 proto 17 dport 4789 uid 0
\tdir out action block index 1 priority 200 ptype main share any flag  (0x00000000)
";
        let peer = std::net::Ipv4Addr::new(192, 0, 2, 13);
        assert_eq!(super::outbound_spi(shown, peer), Some(0xdfd8_0529));
        assert_eq!(super::outbound_spi(shown, std::net::Ipv4Addr::new(192, 0, 2, 14)), None);
    }
}

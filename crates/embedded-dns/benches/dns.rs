//! DNS benchmark: dnsperf against our server and against unbound, each serving the same 100
//! records at 127.0.0.11:53 inside a test namespace of its own, in one run.
//!
//! Prints queries per second, average and p99 latency, and the ratio to unbound; it is not a timed
//! test. Each server gets one thread (unbound `num-threads: 1`, our server a current-thread
//! runtime), so that the second core is left to dnsperf. The qps and average come from a plain
//! dnsperf run; p99 from a second run with `-v` (one line per answer, which costs dnsperf some
//! throughput, equally for both servers). Needs root (namespaces); installs `dnsperf` and `unbound`
//! with apt-get when they are missing.
// A benchmark's output is its report: printing is the point.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use shoal_embedded_dns::{Delta, DnsConfig, DnsServer, Endpoint, RecordTable, ServiceRecord};

const RECORDS: u8 = 100;
const CLIENTS: &str = "16";
const SECONDS: &str = "10";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dns bench: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A namespace with `lo` up, deleted when dropped (also on panic).
struct Netns {
    name: String,
}

impl Netns {
    fn new(name: String) -> Result<Self, String> {
        run_ok(Command::new("ip").args(["netns", "add", &name]))?;
        let netns = Self { name };
        run_ok(Command::new("ip").args(["-n", &netns.name, "link", "set", "lo", "up"]))?;
        Ok(netns)
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.name]).status();
    }
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_ok(command: &mut Command) -> Result<String, String> {
    let output = command.output().map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if !output.status.success() {
        return Err(format!("{command:?} failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn install_prerequisites() -> Result<(), String> {
    if on_path("dnsperf") && (on_path("unbound") || Path::new("/usr/sbin/unbound").exists()) {
        return Ok(());
    }
    println!("installing dnsperf and unbound with apt-get");
    run_ok(Command::new("apt-get").arg("update").arg("-qq"))?;
    run_ok(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "dnsperf", "unbound"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .map(drop)
}

fn vip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, i + 1)
}

fn name(i: u8) -> String {
    format!("svc{i:03}")
}

struct Figures {
    qps: f64,
    avg_ms: f64,
    p99_ms: f64,
    lost: u64,
}

/// Runs dnsperf twice in `netns` against 127.0.0.11 (plain, then `-v` for per-answer latency).
fn measure(netns: &Netns, queries: &Path) -> Result<Figures, String> {
    let base = ["-s", "127.0.0.11", "-d", &queries.to_string_lossy(), "-c", CLIENTS, "-l", SECONDS].map(str::to_owned);
    let plain = run_ok(netns.command("dnsperf").args(&base))?;
    let field = |label: &str| {
        plain
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("no {label:?} in dnsperf output:\n{plain}"))
    };
    let qps = field("Queries per second:")?;
    let avg_ms = field("Average Latency (s):")? * 1000.0;
    let lost = field("Queries lost:")? as u64;
    let verbose = run_ok(netns.command("dnsperf").args(&base).arg("-v"))?;
    let mut latencies: Vec<f64> = verbose
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect();
    if latencies.is_empty() {
        return Err(format!("no per-query latencies in dnsperf -v output in {}", netns.name));
    }
    latencies.sort_by(f64::total_cmp);
    let p99_ms = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)] * 1000.0;
    Ok(Figures { qps, avg_ms, p99_ms, lost })
}

fn run() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (network namespaces); run it as root".into());
    }
    install_prerequisites()?;
    let run_id = format!(
        "{:06x}",
        (std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0))
            & 0xff_ffff
    );
    let prefix = format!("shoaltest-{run_id}");
    let dir = std::env::temp_dir().join(format!("{prefix}-dnsbench"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let queries = dir.join("queries.txt");
    let lines: String = (0..RECORDS).map(|i| format!("{} A\n", name(i))).collect();
    std::fs::write(&queries, lines).map_err(|e| format!("write {}: {e}", queries.display()))?;

    // Ours.
    let ours_ns = Netns::new(format!("{prefix}-ours"))?;
    let table = RecordTable::new();
    table
        .apply((0..RECORDS).map(|i| Delta::UpsertService {
            network: "bench".into(),
            service: ServiceRecord {
                id: format!("s{i}"),
                name: name(i),
                aliases: vec![],
                endpoint: Endpoint::Vip(vec![IpAddr::V4(vip(i))]),
            },
        }))
        .map_err(|e| e.to_string())?;
    let config = DnsConfig { ttl: 5, ..DnsConfig::default() };
    let server = DnsServer::new(config, table).map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let ours_path = ours_ns.path();
    let server_thread = std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                return;
            }
        };
        runtime.block_on(async move {
            let attached = server.attach("bench", &ours_path, vec!["bench".into()]).await.map_err(|e| e.to_string());
            let _ = ready_tx.send(attached);
            let _ = stop_rx.await;
        });
    });
    ready_rx.recv().map_err(|_| "our server thread died".to_owned())??;
    println!("dnsperf -c {CLIENTS} -l {SECONDS}, {RECORDS} A records, each server on one thread");
    let ours = measure(&ours_ns, &queries);
    let _ = stop_tx.send(());
    let _ = server_thread.join();
    let ours = ours?;

    // Unbound with the same records.
    let ub_ns = Netns::new(format!("{prefix}-unbound"))?;
    let mut conf = format!(
        "server:\n  interface: 127.0.0.11\n  port: 53\n  do-daemonize: no\n  chroot: \"\"\n  username: \"\"\n  \
         directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n  num-threads: 1\n  \
         access-control: 127.0.0.0/8 allow\n  do-ip6: no\n  module-config: \"iterator\"\n",
        d = dir.display()
    );
    for i in 0..RECORDS {
        conf.push_str(&format!("  local-data: \"{}. 5 IN A {}\"\n", name(i), vip(i)));
    }
    let conf_path = dir.join("unbound.conf");
    std::fs::write(&conf_path, conf).map_err(|e| format!("write {}: {e}", conf_path.display()))?;
    let unbound_bin = if on_path("unbound") { "unbound".to_owned() } else { "/usr/sbin/unbound".to_owned() };
    let log = std::fs::File::create(dir.join("unbound.log")).map_err(|e| format!("unbound log: {e}"))?;
    let child = ub_ns
        .command(&unbound_bin)
        .args(["-d", "-c"])
        .arg(&conf_path)
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start unbound: {e}"))?;
    let _unbound = Killed(child);
    wait_for_unbound(&ub_ns)?;
    let unbound = measure(&ub_ns, &queries)?;

    println!("{:<10} {:>12} {:>10} {:>10} {:>8}", "server", "qps", "avg ms", "p99 ms", "lost");
    for (label, f) in [("shoal", &ours), ("unbound", &unbound)] {
        println!("{label:<10} {:>12.0} {:>10.3} {:>10.3} {:>8}", f.qps, f.avg_ms, f.p99_ms, f.lost);
    }
    println!(
        "ratio shoal/unbound: qps {:.2} (goal >= 1.0), avg latency {:.2}, p99 latency {:.2}",
        ours.qps / unbound.qps,
        ours.avg_ms / unbound.avg_ms,
        ours.p99_ms / unbound.p99_ms
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Waits until unbound answers (it loads its configuration first).
fn wait_for_unbound(netns: &Netns) -> Result<(), String> {
    // A query for svc000/A with ID 1, written out by hand.
    let mut query = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 6];
    query.extend_from_slice(b"svc000");
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let answered = shoal_testkit::in_netns(&netns.name, move || {
        let Ok(socket) = std::net::UdpSocket::bind("127.0.0.1:0") else { return false };
        let _ = socket.set_read_timeout(Some(Duration::from_millis(100)));
        let mut buf = [0u8; 512];
        (0..50).any(|_| socket.send_to(&query, "127.0.0.11:53").is_ok() && socket.recv(&mut buf).is_ok())
    })
    .map_err(|e| e.to_string())?;
    if answered { Ok(()) } else { Err(format!("unbound did not answer in namespace {}", netns.name)) }
}

//! DNS benchmark: dnsperf against our server and against unbound, each serving the same 100
//! records at 127.0.0.11:53 inside a test namespace of its own, in one run; first, how long the
//! record table takes to index a network of 10,000 tasks.
//!
//! Prints queries per second, average and p99 latency, and the ratio to unbound; it is not a timed
//! test. Each server gets one thread (unbound `num-threads: 1`, our server a current-thread
//! runtime), so that the second core is left to dnsperf. Both servers run side by side and are
//! measured in alternating rounds, so that noise from other work on the machine hits both; qps and
//! average latency are the medians of the plain rounds, p99 comes from one more run each with `-v`
//! (one line per answer, which costs dnsperf some throughput, equally for both servers). Needs root (namespaces); installs `dnsperf` and `unbound`
//! with apt-get when they are missing.
// A benchmark's output is its report: printing is the point.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use shoal_embedded_dns::{Delta, DnsConfig, DnsServer, Endpoint, RecordTable, ServiceRecord, TaskRecord};

const RECORDS: u8 = 100;
const CLIENTS: &str = "16";
/// Seconds per dnsperf run.
const SECONDS: u32 = 5;
/// Alternating plain rounds per server; the median counts.
const ROUNDS: u32 = 3;

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

/// dnsperf and unbound come from the prerequisite table of `cargo xtask` (`cargo xtask bench dns`
/// installs them); run directly, the bench stops and says how to get them.
fn check_prerequisites() -> Result<(), String> {
    let missing: Vec<&str> = [("dnsperf", "dnsperf"), ("unbound", "unbound")]
        .into_iter()
        .filter(|(program, _)| !on_path(program) && !Path::new("/usr/sbin").join(program).exists())
        .map(|(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "needs {}: run it as `cargo xtask bench dns`, which installs them, or `apt-get install -y {}`",
        missing.join(" and "),
        missing.join(" ")
    ))
}

fn vip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, i + 1)
}

fn name(i: u8) -> String {
    format!("svc{i:03}")
}

/// One dnsperf run.
struct Run {
    qps: f64,
    avg_ms: f64,
    lost: u64,
    /// The server's CPU time (user + system) per answered query, in microseconds.
    cpu_us: f64,
    /// Per-answer latencies in ms, sorted (only with `-v`).
    latencies_ms: Vec<f64>,
}

/// Runs dnsperf in `netns` against 127.0.0.11 for `seconds`; with `verbose`, dnsperf prints one
/// line per answer with its latency.
fn dnsperf(netns: &Netns, server_pid: u32, queries: &Path, seconds: u32, verbose: bool) -> Result<Run, String> {
    let cpu_before = cpu_ticks(server_pid)?;
    let mut command = netns.command("dnsperf");
    command.args(["-s", "127.0.0.11", "-c", CLIENTS, "-l", &seconds.to_string(), "-d"]).arg(queries);
    if verbose {
        command.arg("-v");
    }
    let out = run_ok(&mut command)?;
    let cpu_ticks = cpu_ticks(server_pid)? - cpu_before;
    let field = |label: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("no {label:?} in dnsperf output in {}", netns.name))
    };
    let mut latencies_ms: Vec<f64> = out
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    latencies_ms.sort_by(f64::total_cmp);
    let completed = field("Queries completed:")?.max(1.0);
    Ok(Run {
        // /proc reports CPU time in USER_HZ ticks, 100 per second on Linux.
        cpu_us: cpu_ticks as f64 * 10_000.0 / completed,
        qps: field("Queries per second:")?,
        avg_ms: field("Average Latency (s):")? * 1000.0,
        lost: field("Queries lost:")? as u64,
        latencies_ms,
    })
}

/// User plus system CPU ticks of a process so far (all its threads), from `/proc/PID/stat`.
fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    // Fields after the command name (which may hold spaces, so split after its closing paren):
    // state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    match (tick(11), tick(12)) {
        (Some(user), Some(system)) => Ok(user + system),
        _ => Err(format!("unexpected {path}: {stat}")),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn p99(sorted: &[f64]) -> f64 {
    sorted.get((sorted.len() * 99 / 100).min(sorted.len().saturating_sub(1))).copied().unwrap_or(0.0)
}

/// Both servers' figures: median qps and average over the plain rounds, p99 from the verbose run.
struct Figures {
    qps: f64,
    avg_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    lost: u64,
}

fn run() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (network namespaces); run it as root".into());
    }
    check_prerequisites()?;
    table_rebuild()?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos());
    let prefix = format!("shoaltest-{:06x}", (std::process::id() ^ nanos.unwrap_or(0)) & 0xff_ffff);
    let dir = std::env::temp_dir().join(format!("{prefix}-dnsbench"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let result = bench(&prefix, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Applies a network of 1,000 services and 10,000 tasks, then removes one task (which indexes
/// the network whole again), and prints how long each took: linear in tasks and services, so
/// milliseconds, where a services × tasks scan would take seconds.
fn table_rebuild() -> Result<(), String> {
    let table = RecordTable::new();
    let mut deltas = Vec::new();
    for s in 0..1_000u32 {
        let endpoint = if s % 2 == 0 { Endpoint::DnsRr } else { Endpoint::Vip(vec![IpAddr::from([198, 19, 0, 1])]) };
        let service = ServiceRecord { id: format!("s{s}"), name: format!("svc{s}"), aliases: vec![], endpoint };
        deltas.push(Delta::UpsertService { network: "big".into(), service });
        for t in 0..10u32 {
            let n = s * 10 + t;
            let task = TaskRecord {
                id: format!("t{n}"),
                service_id: Some(format!("s{s}")),
                name: format!("svc{s}.{t}"),
                hostname: None,
                aliases: vec![],
                addresses: vec![IpAddr::from([198, 18, (n >> 8) as u8, n as u8])],
                healthy: true,
            };
            deltas.push(Delta::UpsertTask { network: "big".into(), task });
        }
    }
    let started = Instant::now();
    table.apply(deltas).map_err(|e| e.to_string())?;
    let applied = started.elapsed();
    let started = Instant::now();
    table.apply([Delta::RemoveTask { network: "big".into(), task_id: "t0".into() }]).map_err(|e| e.to_string())?;
    let removed = started.elapsed();
    println!("record table: 1,000 services and 10,000 tasks applied in {applied:.2?}, one removal in {removed:.2?}");
    Ok(())
}

fn bench(prefix: &str, dir: &Path) -> Result<(), String> {
    let queries = dir.join("queries.txt");
    let lines: String = (0..RECORDS).map(|i| format!("{} A\n", name(i))).collect();
    std::fs::write(&queries, lines).map_err(|e| format!("write {}: {e}", queries.display()))?;

    // Ours, on a current-thread runtime of its own.
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
    let server = DnsServer::new(DnsConfig { ttl: 5, ..DnsConfig::default() }, table).map_err(|e| e.to_string())?;
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
    // Stops our server when this function returns, whichever way.
    struct Stop(Option<tokio::sync::oneshot::Sender<()>>, Option<std::thread::JoinHandle<()>>);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
            if let Some(thread) = self.1.take() {
                let _ = thread.join();
            }
        }
    }
    let _stop = Stop(Some(stop_tx), Some(server_thread));
    ready_rx.recv().map_err(|_| "our server thread died".to_owned())??;

    // Unbound with the same records, only the iterator module (no validation, as ours).
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
    let unbound_bin = if on_path("unbound") { "unbound" } else { "/usr/sbin/unbound" };
    let log = std::fs::File::create(dir.join("unbound.log")).map_err(|e| format!("unbound log: {e}"))?;
    let child = ub_ns
        .command(unbound_bin)
        .args(["-d", "-c"])
        .arg(&conf_path)
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start unbound: {e}"))?;
    let unbound_pid = child.id();
    let _unbound = Killed(child);
    wait_for_unbound(&ub_ns)?;

    println!(
        "dnsperf -c {CLIENTS}, {RECORDS} A records, each server on one thread; \
         {ROUNDS} alternating rounds of {SECONDS} s, then one verbose run each for p99"
    );
    // `ip netns exec` execs unbound, so the child's PID is unbound's; ours is this process.
    let mut runs: [(Vec<Run>, &Netns, u32); 2] =
        [(Vec::new(), &ours_ns, std::process::id()), (Vec::new(), &ub_ns, unbound_pid)];
    for round in 1..=ROUNDS {
        for (label, (rounds, netns, pid)) in ["shoal", "unbound"].iter().zip(runs.iter_mut()) {
            let run = dnsperf(netns, *pid, &queries, SECONDS, false)?;
            println!(
                "  round {round} {label:<8} {:>10.0} qps  avg {:.3} ms  {:.2} us CPU/query",
                run.qps, run.avg_ms, run.cpu_us
            );
            rounds.push(run);
        }
    }
    let mut figures = Vec::new();
    for (rounds, netns, pid) in &runs {
        let verbose = dnsperf(netns, *pid, &queries, SECONDS, true)?;
        if verbose.latencies_ms.is_empty() {
            return Err(format!("no per-query latencies in dnsperf -v output in {}", netns.name));
        }
        figures.push(Figures {
            qps: median(rounds.iter().map(|r| r.qps).collect()),
            avg_ms: median(rounds.iter().map(|r| r.avg_ms).collect()),
            p99_ms: p99(&verbose.latencies_ms),
            cpu_us: median(rounds.iter().map(|r| r.cpu_us).collect()),
            lost: rounds.iter().map(|r| r.lost).sum(),
        });
    }
    let [ours, unbound] = figures.as_slice() else { return Err("two servers measured".into()) };

    println!("{:<10} {:>12} {:>10} {:>10} {:>14} {:>8}", "server", "qps", "avg ms", "p99 ms", "CPU us/query", "lost");
    for (label, f) in [("shoal", ours), ("unbound", unbound)] {
        println!("{label:<10} {:>12.0} {:>10.3} {:>10.3} {:>14.2} {:>8}", f.qps, f.avg_ms, f.p99_ms, f.cpu_us, f.lost);
    }
    println!(
        "ratio shoal/unbound: qps {:.2} (goal >= 1.0), avg latency {:.2}, p99 latency {:.2}, CPU per query {:.2}",
        ours.qps / unbound.qps,
        ours.avg_ms / unbound.avg_ms,
        ours.p99_ms / unbound.p99_ms,
        ours.cpu_us / unbound.cpu_us
    );
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

//! `cargo xtask bench dashboard`: the dashboard of a 100-node, 10,000-task cluster (an
//! in-process cluster of simulated agents, ten services of 1,000 replicas) served by the release
//! `shoal dashboard` and loaded in headless Chromium. Prints:
//! - how long the dashboard takes from its start until it holds every task, and the size of
//!   the state it sends a page;
//! - the page's first render of the whole grid (navigation to 10,000 task cards drawn, the
//!   page's own `shoal-first-render` mark) and its first contentful paint, median of 5 loads,
//!   against the peer: `shoal service ls` printing the same cluster's services (which lists the
//!   same tasks to count replicas), run 5 times, median;
//! - a live change: one service scaled from 1,000 to 1,500, until the open page shows all
//!   10,500 tasks running, against the manager's own API polled for the same.
//!
//! Scale with SHOAL_BENCH_NODES and SHOAL_BENCH_TASKS.

#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "../tests/support/webdriver.rs"]
mod webdriver;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_api::v1;
use shoal_local_cluster::{LocalCluster, LocalOptions};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;
use webdriver::{Browser, http};

const SERVICES: u64 = 10;
const LOADS: usize = 5;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn spec(name: &str, replicas: u64) -> v1::ServiceSpec {
    v1::ServiceSpec {
        annotations: Some(v1::Annotations { name: name.to_owned(), ..Default::default() }),
        task: Some(v1::TaskSpec {
            container: Some(v1::ContainerSpec { image: "shoal-test/sleeper".to_owned(), ..Default::default() }),
            ..Default::default()
        }),
        mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas })),
        ..Default::default()
    }
}

async fn running_tasks(cluster: &LocalCluster) -> Result<usize, Box<dyn std::error::Error>> {
    let mut control = cluster.control().await?;
    let tasks = control.list_tasks(v1::ListTasksRequest::default()).await?.into_inner().tasks;
    Ok(tasks
        .iter()
        .filter(|t| t.observed_state() == v1::TaskState::Running && t.desired() == v1::TaskState::Running)
        .count())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench())
}

async fn bench() -> Result<(), Box<dyn std::error::Error>> {
    let nodes = env_or("SHOAL_BENCH_NODES", 100) as usize;
    let tasks = env_or("SHOAL_BENCH_TASKS", 10_000);
    let per_service = tasks / SERVICES;
    println!("\ndashboard: {nodes} simulated nodes, {SERVICES} services of {per_service} replicas, headless Chromium");

    let options = LocalOptions { heartbeat_period: Duration::from_secs(1), ..Default::default() };
    let mut cluster = LocalCluster::start(options).await?;
    cluster.add_workers("node", nodes, 25).await?;
    cluster.wait_ready(nodes, 120).await?;
    let mut control = cluster.control().await?;
    let mut ids = Vec::new();
    for i in 0..SERVICES {
        let created = control
            .create_service(v1::CreateServiceRequest { spec: Some(spec(&format!("svc{i}"), per_service)) })
            .await?;
        ids.push(created.into_inner().service.ok_or("no service")?.id);
    }
    let total = (per_service * SERVICES) as usize;
    let deadline = Instant::now() + Duration::from_secs(300);
    while running_tasks(&cluster).await? < total {
        if Instant::now() > deadline {
            return Err("the tasks did not all run within 300 s".into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("  cluster up: {total} tasks running");

    // --- the dashboard: start until it holds every task.
    let host = cluster.manager_addrs()[0].to_string();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["dashboard", "--listen", "127.0.0.1:0"])
        .env("SHOAL_HOST", &host)
        .env("SHOAL_CERT_PATH", cluster.admin_bundle())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    let first = lines.next_line().await?.ok_or("the dashboard printed nothing")?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = first.rsplit(' ').next().ok_or("no URL")?.to_owned();
    let (addr, token) = url.trim_start_matches("http://").split_once("/?token=").ok_or("no token")?;
    let addr: std::net::SocketAddr = addr.parse()?;
    let cookie = format!("shoal_dashboard_{}={token}", addr.port());
    loop {
        let answer = http(addr, "GET", "/api/state", &[("Cookie", &cookie)], "").await;
        if answer.status != 200 {
            return Err(format!("GET /api/state: {} {}", answer.status, answer.body).into());
        }
        if answer.json()["tasks"].as_array().map_or(0, Vec::len) >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("  dashboard holds every task {:.2} s after its start", started.elapsed().as_secs_f64());
    let (mut state_bytes, mut state_times) = (0, Vec::new());
    for _ in 0..LOADS {
        let asked = Instant::now();
        let answer = http(addr, "GET", "/api/state", &[("Cookie", &cookie)], "").await;
        state_times.push(asked.elapsed().as_secs_f64() * 1e3);
        state_bytes = answer.body.len();
    }
    println!(
        "  GET /api/state: {:.1} MiB in {:.0} ms (median of {LOADS})",
        state_bytes as f64 / (1 << 20) as f64,
        median(state_times)
    );

    // --- the page: first render of the whole grid, LOADS times.
    let profile = tempfile::tempdir()?;
    let browser = Browser::start(profile.path(), 1600, 1000).await;
    browser.goto(&url).await;
    let (mut renders, mut paints) = (Vec::new(), Vec::new());
    for _ in 0..LOADS {
        browser.goto(&format!("http://{addr}/#/grid")).await;
        browser.script("location.reload()", json!([])).await;
        let ready = format!(
            "return document.body.dataset.loaded === 'true' && document.querySelectorAll('li.task').length >= {total} && \
             [performance.getEntriesByName('shoal-first-render')[0].startTime, \
              (performance.getEntriesByName('first-contentful-paint')[0] || {{startTime: 0}}).startTime]"
        );
        let times = browser.wait_for("the grid drawn", 60, &ready).await;
        renders.push(times[0].as_f64().unwrap_or(0.0));
        paints.push(times[1].as_f64().unwrap_or(0.0));
    }
    let render = median(renders);
    println!(
        "  page: first contentful paint {:.0} ms; every one of the {total} task cards built {render:.0} ms after navigation (median of {LOADS})",
        median(paints)
    );
    let shots = std::path::PathBuf::from(env!("CARGO_BIN_EXE_shoal"));
    if let Some(target) = shots.parent().and_then(|p| p.parent()) {
        let dir = target.join("dashboard");
        std::fs::create_dir_all(&dir)?;
        browser.screenshot(&dir.join("bench-grid.png")).await;
    }

    // --- the peer: the CLI's service ls of the same cluster.
    let mut listings = Vec::new();
    for _ in 0..LOADS {
        let asked = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args(["service", "ls"])
            .env("SHOAL_HOST", &host)
            .env("SHOAL_CERT_PATH", cluster.admin_bundle())
            .output()
            .await?;
        if !out.status.success() {
            return Err(format!("shoal service ls failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        listings.push(asked.elapsed().as_secs_f64() * 1e3);
    }
    let listing = median(listings);
    println!("  peer: shoal service ls {listing:.0} ms (median of {LOADS}); page / CLI = {:.2}", render / listing);

    // --- a live change: one service 1,000 → 1,500 replicas.
    let grown = total + (per_service / 2) as usize;
    let service = control
        .get_service(v1::GetServiceRequest { service: ids[0].clone() })
        .await?
        .into_inner()
        .service
        .ok_or("no service")?;
    let mut new_spec = service.spec.clone().ok_or("no spec")?;
    new_spec.mode =
        Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: per_service + per_service / 2 }));
    // The page notes when it first shows them all (its own clock, every 50 ms): no WebDriver
    // round trip in the figure.
    let watch = format!(
        "window.shoalLongest = 0; new PerformanceObserver(l => l.getEntries().forEach(e => \
         {{ window.shoalLongest = Math.max(window.shoalLongest, e.duration); }})).observe({{ type: 'longtask' }}); \
         performance.clearMeasures('shoal-draw'); window.shoalSeen = null; \
         const timer = setInterval(() => {{ if (document.querySelectorAll('li.task[data-state=running]').length >= {grown}) \
         {{ window.shoalSeen = Date.now(); clearInterval(timer); }} }}, 50);"
    );
    browser.script(&watch, json!([])).await;
    let asked_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as f64;
    let asked = Instant::now();
    control
        .update_service(v1::UpdateServiceRequest {
            service: service.id.clone(),
            version: service.meta.as_ref().map_or(0, |m| m.version),
            spec: Some(new_spec),
            spec_version: service.spec_version,
            rollback: false,
        })
        .await?;
    // The manager's API and the page are watched side by side, each as often as it answers.
    let api = {
        let control = cluster.control().await?;
        tokio::spawn(async move {
            let mut control = control;
            loop {
                let tasks = control.list_tasks(v1::ListTasksRequest::default()).await.ok()?.into_inner().tasks;
                let running = tasks
                    .iter()
                    .filter(|t| t.observed_state() == v1::TaskState::Running && t.desired() == v1::TaskState::Running)
                    .count();
                if running >= grown {
                    return Some(asked.elapsed());
                }
                if asked.elapsed() > Duration::from_secs(120) {
                    return None;
                }
            }
        })
    };
    let page_at = loop {
        if let Some(seen) = browser.script("return window.shoalSeen", json!([])).await.as_f64() {
            break Some(Duration::from_secs_f64((seen - asked_epoch).max(0.0) / 1e3));
        }
        if asked.elapsed() > Duration::from_secs(120) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let api_at = api.await?;
    let draws = browser
        .script(
            "const d = performance.getEntriesByName('shoal-draw').map(e => e.duration).sort((a, b) => a - b); \
             performance.clearMeasures('shoal-draw'); return [d.length, d[Math.floor(d.length / 2)] || 0, d[d.length - 1] || 0]",
            json!([]),
        )
        .await;
    let (Some(page_at), Some(api_at)) = (page_at, api_at) else {
        return Err("the scale did not show within 120 s".into());
    };
    println!(
        "  live: {} more tasks running on the open page {:.2} s after the scale; the manager's API polled: {:.2} s (page − API = {:+.2} s)",
        per_service / 2,
        page_at.as_secs_f64(),
        api_at.as_secs_f64(),
        page_at.as_secs_f64() - api_at.as_secs_f64()
    );
    let longest = browser.script("return window.shoalLongest", json!([])).await;
    println!(
        "  page redraws of the {grown}-task grid during the scale: {}, script median {:.0} ms, longest {:.0} ms; \
         longest main-thread task (script, style, layout) {:.0} ms",
        draws[0],
        draws[1].as_f64().unwrap_or(0.0),
        draws[2].as_f64().unwrap_or(0.0),
        longest.as_f64().unwrap_or(0.0)
    );
    browser.quit().await;
    drop(child);
    cluster.shutdown().await;
    Ok(())
}

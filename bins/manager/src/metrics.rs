//! The process's metrics endpoint (`--metrics-addr`): the manager's series and its worker
//! role's, served together by the agent crate's small HTTP responder.

use std::net::SocketAddr;

use anyhow::Context as _;

/// The process's metrics: the manager's (while this node is one) and its worker role's, served
/// together at `--metrics-addr`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics {
    pub(crate) manager: shoal_manager::ManagerMetrics,
    pub(crate) agent: shoal_agent::AgentMetrics,
}

impl Metrics {
    /// Binds `addr` and serves the series there for the life of the process.
    pub(crate) async fn start(addr: SocketAddr) -> anyhow::Result<Self> {
        let metrics = Self::default();
        let listener =
            shoal_agent::metrics::bind(addr).await.with_context(|| format!("--metrics-addr {addr}: cannot listen"))?;
        tokio::spawn(shoal_agent::metrics::serve(listener, metrics.render(), std::future::pending()));
        Ok(metrics)
    }

    /// One scrape's text: the manager's series, the worker's, then `# EOF`.
    fn render(&self) -> shoal_agent::metrics::Render {
        let metrics = self.clone();
        shoal_agent::metrics::render(move || {
            let metrics = metrics.clone();
            async move {
                let mut out = String::new();
                // Writing to a String cannot fail.
                let _ = metrics.manager.encode(&mut out).await;
                let _ = metrics.agent.encode(&mut out);
                shoal_agent::metrics::end(&mut out);
                out
            }
        })
    }
}

#[cfg(test)]
mod tests {
    //! A manager started with metrics is scraped over HTTP and its text parsed.

    use std::collections::BTreeMap;
    use std::time::Duration;

    use shoal_api::v1;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// The samples of an OpenMetrics text: `name{labels}` → value. Checks each line's shape
    /// on the way (comments, `name value`, `name{k="v",…} value`) and the closing `# EOF`.
    fn parse(text: &str) -> BTreeMap<String, f64> {
        assert!(text.ends_with("# EOF\n"), "no # EOF at the end:\n{text}");
        let mut samples = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
            let name = series.split('{').next().unwrap_or_default();
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                "bad metric name: {line:?}"
            );
            if let Some(labels) = series.strip_prefix(name) {
                assert!(labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')), "{line:?}");
            }
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line:?}"));
            assert!(samples.insert(series.to_owned(), value).is_none(), "series twice: {line:?}");
        }
        samples
    }

    /// `GET /metrics` over plain HTTP; the body of a 200 answer.
    async fn scrape(addr: SocketAddr) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").await.expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.contains("Content-Type: application/openmetrics-text"), "{head}");
        body.to_owned()
    }

    /// Removes the test's data directory, even when the test fails.
    struct Cleanup(std::path::PathBuf);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_single_manager_is_scraped_over_http() {
        let dir = std::env::temp_dir().join(format!("shoal-manager-metrics-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let _cleanup = Cleanup(dir.clone());
        let metrics = Metrics::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let metrics_addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(shoal_agent::metrics::serve(listener, metrics.render(), async move {
            let _ = stopped.await;
        }));

        // No manager yet: the worker's series and the manager's histograms, no Raft gauges.
        let before = parse(&scrape(metrics_addr).await);
        assert!(before.contains_key("shoal_leader_pass_duration_seconds_count"), "{before:?}");
        assert!(!before.contains_key("shoal_raft_term"), "{before:?}");

        let addr: SocketAddr =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port");
        let mut config = shoal_manager::ManagerConfig::new(&dir, addr, addr);
        config.metrics = Some(metrics.manager.clone());
        let (manager, _) = shoal_manager::init(&config).await.expect("init");
        let spec = v1::ServiceSpec {
            annotations: Some(v1::Annotations { name: "web".into(), ..Default::default() }),
            mode: Some(v1::service_spec::Mode::Replicated(v1::ReplicatedService { replicas: 3 })),
            task: Some(v1::TaskSpec {
                container: Some(v1::ContainerSpec { image: "shoal-test/web:v1".into(), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let service = v1::Service { id: "metricstestservice0000001".into(), spec: Some(spec), ..Default::default() };
        manager.objects().create(service).await.expect("create service");

        // The leader's loop makes the service's tasks; the scrape counts them by state.
        let mut samples = BTreeMap::new();
        for _ in 0..100 {
            samples = parse(&scrape(metrics_addr).await);
            let tasks: f64 = samples.iter().filter(|(k, _)| k.starts_with("shoal_tasks{")).map(|(_, v)| v).sum();
            if tasks >= 3.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tasks: f64 = samples.iter().filter(|(k, _)| k.starts_with("shoal_tasks{")).map(|(_, v)| v).sum();
        assert_eq!(tasks, 3.0, "{samples:?}");
        assert!(samples.contains_key("shoal_tasks{state=\"running\"}"), "every state has a series: {samples:?}");
        assert!(samples["shoal_raft_term"] >= 1.0, "{samples:?}");
        assert_eq!(samples["shoal_raft_leader"], 1.0, "{samples:?}");
        assert_eq!(samples["shoal_raft_has_leader"], 1.0, "{samples:?}");
        assert!(samples["shoal_raft_commit_index"] >= 1.0, "{samples:?}");
        assert!(samples["shoal_raft_applied_index"] <= samples["shoal_raft_last_log_index"], "{samples:?}");
        assert!(samples["shoal_store_keys"] >= 4.0, "cluster, node, service, tasks: {samples:?}");
        assert_eq!(samples["shoal_dispatcher_sessions"], 0.0, "no worker role here: {samples:?}");
        assert!(samples["shoal_raft_proposal_duration_seconds_count"] >= 1.0, "{samples:?}");
        assert!(samples["shoal_leader_pass_duration_seconds_count"] >= 1.0, "{samples:?}");
        assert!(samples["shoal_scheduler_latency_seconds_count"] >= 1.0, "{samples:?}");
        assert!(samples.contains_key("shoal_agent_container_start_duration_seconds_count"), "{samples:?}");

        // Stopped, the manager's gauges go; the process's endpoint stays.
        manager.shutdown().await;
        let after = parse(&scrape(metrics_addr).await);
        assert!(!after.contains_key("shoal_raft_term"), "{after:?}");
        assert!(!after.keys().any(|k| k.starts_with("shoal_tasks{")), "{after:?}");
        let _ = stop.send(());
    }
}

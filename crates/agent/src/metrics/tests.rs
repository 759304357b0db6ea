//! The metrics endpoint over real TCP, and the worker's task-state series.

use super::*;

/// Serves `text` (with `# EOF`) on a loopback port; the guard stops the server when dropped.
async fn endpoint(text: &'static str) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let render = render(move || async move { format!("{text}# EOF\n") });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, render, async move {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// Sends `request` as it is and returns the whole answer.
async fn send(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before a long request is all written.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8(answer).unwrap()
}

/// Each case: the request sent, the status line expected, a part of the body expected.
#[tokio::test]
async fn the_endpoint_answers_each_request_as_expected() {
    let (addr, _stop) = endpoint("# TYPE up gauge\nup 1\n").await;
    let huge = format!("GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    let cases: [(&str, &[u8], &str, &str); 6] = [
        ("scrape", b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "HTTP/1.1 200 OK", "up 1\n# EOF\n"),
        ("scrape with a query", b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK", "up 1"),
        ("another path", b"GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found", "try /metrics"),
        ("another method", b"POST /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 405", "only GET"),
        ("not HTTP", b"hello\r\n\r\n", "HTTP/1.1 400", "bad request"),
        ("oversized head", huge.as_bytes(), "HTTP/1.1 431", "too large"),
    ];
    for (name, request, status, body) in cases {
        let answer = send(addr, request).await;
        assert!(answer.starts_with(status), "{name}: {answer}");
        assert!(answer.contains(body), "{name}: {answer}");
    }
    let ok = send(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(ok.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")), "{ok}");
    assert!(ok.contains("Content-Length: 27\r\n"), "{ok}");
}

#[tokio::test]
async fn a_silent_client_is_dropped_and_others_still_served() {
    let (addr, _stop) = endpoint("up 1\n").await;
    // Connected but never sending: it holds one slot until the read timeout, not the server.
    let _silent = TcpStream::connect(addr).await.unwrap();
    let answer = send(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}

#[test]
fn tasks_move_between_state_series() {
    let metrics = AgentMetrics::new();
    metrics.task_state("t1", TaskState::Preparing);
    metrics.task_state("t1", TaskState::Running);
    metrics.task_state("t1", TaskState::Running);
    metrics.task_state("t2", TaskState::Running);
    metrics.task_state("t3", TaskState::Failed);
    metrics.task_gone("t3");
    metrics.observe_start(Duration::from_millis(40));
    let mut out = String::new();
    metrics.encode(&mut out).unwrap();
    assert!(out.contains("shoal_agent_tasks{state=\"running\"} 2\n"), "{out}");
    assert!(out.contains("shoal_agent_tasks{state=\"preparing\"} 0\n"), "{out}");
    assert!(out.contains("shoal_agent_tasks{state=\"failed\"} 0\n"), "{out}");
    assert!(out.contains("shoal_agent_container_start_duration_seconds_count 1\n"), "{out}");
    assert!(!out.contains("# EOF"), "{out}");
    metrics.reset();
    let mut out = String::new();
    metrics.encode(&mut out).unwrap();
    assert!(!out.contains("shoal_agent_tasks{"), "{out}");
}

//! A real browser for the dashboard's tests: headless Chromium driven through chromedriver's W3C
//! WebDriver API (JSON over HTTP with hyper's client, also used for the dashboard's own API).
//! Nothing here reaches beyond loopback.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

/// One HTTP answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.body))
    }
}

/// One request on a fresh connection, through hyper's HTTP/1 client (the hyper the workspace
/// already has), read to its end.
pub(crate) async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    use http_body_util::BodyExt as _;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|err| format!("connect: {err}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|err| format!("handshake: {err}"))?;
        tokio::spawn(connection);
        let mut request = hyper::Request::builder().method(method).uri(path).header("Host", addr.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(http_body_util::Full::new(bytes::Bytes::from(body.to_owned())))
            .map_err(|err| format!("request: {err}"))?;
        let answer = sender.send_request(request).await.map_err(|err| format!("send: {err}"))?;
        let status = answer.status().as_u16();
        let headers = answer
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = answer.into_body().collect().await.map_err(|err| format!("read body: {err}"))?.to_bytes();
        Ok::<_, String>(Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
    };
    match tokio::time::timeout(Duration::from_secs(60), exchange).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(err)) => panic!("{method} http://{addr}{path}: {err}"),
        Err(_) => panic!("{method} http://{addr}{path}: no answer within 60 s"),
    }
}

/// Standard base64 (what WebDriver's screenshots are) to bytes.
pub(crate) fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for six in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(six);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// The key W3C WebDriver names element references by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Headless Chromium under chromedriver, one session; both end when it is dropped.
pub(crate) struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium of `width`×`height` whose profile lives in
    /// `profile`.
    pub(crate) async fn start(profile: &Path, width: u32, height: u32) -> Self {
        let port = free_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        // A process group of its own: the browser it starts goes with it when a test fails.
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {addr} within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let args = [
            "--headless=new".to_owned(),
            // The test runs as root, where Chromium's sandbox cannot start.
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-background-timer-throttling".to_owned(),
            "--disable-renderer-backgrounding".to_owned(),
            "--disable-backgrounding-occluded-windows".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": chromium_binary(), "args": args },
        } } });
        let mut browser = Self { driver, addr, session: String::new() };
        let created = browser.call("POST", "/session", &capabilities).await;
        browser.session = created["sessionId"].as_str().expect("a session ID").to_owned();
        browser
    }

    /// One WebDriver command; panics with the driver's message when it fails.
    pub(crate) async fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        let body = if method == "GET" { String::new() } else { body.to_string() };
        let answer = http(self.addr, method, path, &[("Content-Type", "application/json; charset=utf-8")], &body).await;
        let json = answer.json();
        assert_eq!(answer.status, 200, "WebDriver {method} {path}: {}", json["value"]);
        json["value"].clone()
    }

    fn path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub(crate) async fn goto(&self, url: &str) {
        self.call("POST", &self.path("/url"), &json!({ "url": url })).await;
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page: its return value.
    pub(crate) async fn script(&self, script: &str, args: Value) -> Value {
        self.call("POST", &self.path("/execute/sync"), &json!({ "script": script, "args": args })).await
    }

    /// Polls `script` until it returns something other than null or false: that value.
    pub(crate) async fn wait_for(&self, what: &str, secs: u64, script: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let value = self.script(script, json!([])).await;
            if !(value.is_null() || value == json!(false)) {
                return value;
            }
            assert!(Instant::now() < deadline, "{what}: not within {secs} s");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The first element `css` matches.
    pub(crate) async fn find(&self, css: &str) -> String {
        let found = self.call("POST", &self.path("/element"), &json!({ "using": "css selector", "value": css })).await;
        found[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {found}")).to_owned()
    }

    pub(crate) async fn click(&self, element: &str) {
        self.call("POST", &self.path(&format!("/element/{element}/click")), &json!({})).await;
    }

    pub(crate) async fn clear(&self, element: &str) {
        self.call("POST", &self.path(&format!("/element/{element}/clear")), &json!({})).await;
    }

    /// Types `text` into the element (W3C key codes: "\u{E007}" is Enter).
    pub(crate) async fn type_text(&self, element: &str, text: &str) {
        self.call("POST", &self.path(&format!("/element/{element}/value")), &json!({ "text": text })).await;
    }

    /// Presses keys on whatever has the focus.
    pub(crate) async fn keys(&self, keys: &[&str]) {
        let mut actions = Vec::new();
        for key in keys {
            actions.push(json!({ "type": "keyDown", "value": key }));
            actions.push(json!({ "type": "keyUp", "value": key }));
        }
        let body = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] });
        self.call("POST", &self.path("/actions"), &body).await;
    }

    /// Saves a PNG of the window at `path`.
    pub(crate) async fn screenshot(&self, path: &Path) {
        let png = self.call("GET", &self.path("/screenshot"), &Value::Null).await;
        let bytes = base64_decode(png.as_str().expect("base64"));
        assert!(bytes.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, bytes).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
    }

    /// Ends the session (Chromium quits); the driver goes with `self`.
    pub(crate) async fn quit(self) {
        let path = self.path("");
        let _ = http(self.addr, "DELETE", &path, &[], "").await;
    }
}

impl Drop for Browser {
    /// Kills chromedriver's process group: the driver and every Chromium process it started,
    /// also when a test panics half way.
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id().and_then(|pid| i32::try_from(pid).ok()) {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Debian's `chromium` command is a shell script; chromedriver needs the browser binary.
fn chromium_binary() -> String {
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/usr/bin/chromium")
        .to_owned()
}

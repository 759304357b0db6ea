//! A real browser for the dashboard's tests: headless Chromium driven through chromedriver's W3C
//! WebDriver API (JSON over HTTP), with a plain HTTP/1.1 client for that and for the dashboard's
//! own API. Nothing here reaches beyond loopback.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
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

/// One request on a fresh connection (`Connection: close`), read to its end.
pub(crate) async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|err| panic!("connect {addr}: {err}"));
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).await.expect("write request");
    // Read until the body is whole: chromedriver keeps the connection open despite `close`.
    let mut raw = Vec::new();
    let read = async {
        let mut buf = vec![0u8; 64 << 10];
        let mut wanted = None;
        loop {
            // How long the answer is, once its head is in; then only the length is compared.
            if wanted.is_none() {
                wanted = expected_length(&raw);
            }
            match wanted {
                Some(Length::Exactly(n)) if raw.len() >= n => return,
                Some(Length::Chunked) if raw.ends_with(b"0\r\n\r\n") => return,
                _ => {}
            }
            match stream.read(&mut buf).await {
                Ok(0) => return,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(err) => panic!("{method} {path}: read answer: {err} (after {} bytes)", raw.len()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within 60 s"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
    let chunked = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Answer { status, headers, body }
}

/// How long an answer is, as its head says.
enum Length {
    /// Head and body together.
    Exactly(usize),
    Chunked,
    /// Until the connection ends.
    ToEnd,
}

/// The length of the answer `raw` begins, once its head is whole.
fn expected_length(raw: &[u8]) -> Option<Length> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    if let Some(length) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        return Some(Length::Exactly(end + 4 + length.trim().parse::<usize>().ok()?));
    }
    Some(if head.contains("transfer-encoding: chunked") { Length::Chunked } else { Length::ToEnd })
}

/// The payload of a chunked body.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
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
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stderr(Stdio::null())
                .status();
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

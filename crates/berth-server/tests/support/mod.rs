//! What the people tests share: processes that end with the test, a raw
//! HTTP/1.1 client that can dial from a chosen loopback address, a
//! `berth serve` on a config, headless Chromium.

#![allow(dead_code, clippy::unwrap_used)] // Helpers panic on failure by design; not every test uses all.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Environment variable that turns "no browser" into a test failure.
pub const ENV_REQUIRE_BROWSER: &str = "BERTH_REQUIRE_BROWSER";

/// Whether missing parts (browser, provider, proxy) must fail the test.
pub fn required() -> bool {
    let set = |v: &str| std::env::var(v).is_ok_and(|v| !v.is_empty() && v != "0");
    set(ENV_REQUIRE_BROWSER) || set(berth_testkit::ENV_REQUIRE_DOCKER)
}

/// The first of `names` on `PATH` (or an absolute path that exists).
pub fn on_path(names: &[&str]) -> Option<PathBuf> {
    for n in names {
        let p = Path::new(n);
        if p.is_absolute() && p.is_file() {
            return Some(p.to_owned());
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
}

/// `what` is missing: a failure when parts are required, else a loud skip.
pub fn missing(test: &str, what: &str, install: &str) -> Option<std::convert::Infallible> {
    assert!(
        !required(),
        "{test}: {what} is not available ({install}); {ENV_REQUIRE_BROWSER} or BERTH_REQUIRE_DOCKER is set"
    );
    eprintln!("SKIPPED {test}: {what} is not available ({install})");
    None
}

/// A child process, killed and reaped on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Kills it now.
    pub fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A directory of this test, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn file_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port `p` with `127.0.0.1:p` and `0.0.0.0:p+1` free (berth's main and
/// staging listeners).
pub fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let main = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = main.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("0.0.0.0", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free ports found");
}

/// Calls `check` every 100 ms until it gives `Some`, or panics naming `what`.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The value of cookie `name` set by this answer (`Some("")` when it is
    /// removed).
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
            .filter_map(|(_, v)| v.split(';').next()?.split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_owned())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// One request.
pub struct Req<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// Dial from this address (a second loopback address plays another host).
    pub from: Option<IpAddr>,
}

impl<'a> Req<'a> {
    pub fn get(path: &'a str) -> Self {
        Req { method: "GET", path, headers: Vec::new(), body: None, from: None }
    }

    pub fn method(method: &'a str, path: &'a str) -> Self {
        Req { method, ..Req::get(path) }
    }

    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }

    pub fn json(mut self, v: &serde_json::Value) -> Self {
        self.body = Some(v.to_string());
        self.header("content-type", "application/json")
    }

    pub fn form(mut self, body: &str) -> Self {
        self.body = Some(body.to_owned());
        self.header("content-type", "application/x-www-form-urlencoded")
    }

    pub fn from(mut self, ip: &str) -> Self {
        self.from = Some(ip.parse().unwrap());
        self
    }

    fn head(&self, to: SocketAddr, close: bool) -> String {
        let mut text = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        if !self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            text.push_str(&format!("host: {to}\r\n"));
        }
        for (k, v) in &self.headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        if close {
            text.push_str("connection: close\r\n");
        }
        if let Some(b) = &self.body {
            text.push_str(&format!("content-length: {}\r\n", b.len()));
        }
        text.push_str("\r\n");
        if let Some(b) = &self.body {
            text.push_str(b);
        }
        text
    }

    async fn connect(&self, to: SocketAddr) -> tokio::net::TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(ip) = self.from {
            socket.bind(SocketAddr::new(ip, 0)).unwrap();
        }
        socket.connect(to).await.unwrap_or_else(|e| panic!("connecting to {to}: {e}"))
    }

    /// As [`send`](Self::send), `None` when nothing listens at `to`.
    pub async fn try_send(self, to: SocketAddr) -> Option<Answer> {
        tokio::net::TcpStream::connect(to).await.ok()?;
        Some(self.send(to).await)
    }

    /// Sends it with `Connection: close` and reads the whole answer.
    pub async fn send(self, to: SocketAddr) -> Answer {
        self.send_within(to, Duration::from_secs(30)).await
    }

    /// As [`send`](Self::send), waiting at most `wait` for the whole
    /// answer (e.g. a launch with `?wait=true`).
    pub async fn send_within(self, to: SocketAddr, wait: Duration) -> Answer {
        let mut stream = self.connect(to).await;
        stream.write_all(self.head(to, true).as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(wait, stream.read_to_end(&mut raw))
            .await
            .unwrap_or_else(|_| panic!("{} {} timed out", self.method, self.path))
            .unwrap();
        parse(&raw, true)
    }

    /// Sends it and reads for at most `wait` (streams that do not end:
    /// server-sent events, upgrades); the body is what arrived.
    pub async fn peek(self, to: SocketAddr, wait: Duration) -> Answer {
        let mut stream = self.connect(to).await;
        stream.write_all(self.head(to, false).as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 4096];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match tokio::time::timeout(left, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            }
        }
        parse(&raw, false)
    }
}

fn parse(raw: &[u8], whole: bool) -> Answer {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked && whole {
        dechunk(rest)
    } else if chunked {
        dechunk_partial(rest)
    } else {
        rest.to_owned()
    };
    Answer { status, headers, body }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || after.len() < n {
            out.push_str(&after[..n.min(after.len())]);
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

fn dechunk_partial(rest: &str) -> String {
    dechunk(rest)
}

/// A running `berth serve`.
pub struct Berth {
    pub child: ChildGuard,
    pub addr: SocketAddr,
    pub log: PathBuf,
    config: PathBuf,
}

impl Berth {
    /// Starts `berth serve --config <dir>/berth.toml` listening on `port`;
    /// returns once `/healthz` answers.
    pub async fn start(dir: &Path, port: u16) -> Berth {
        let config = dir.join("berth.toml");
        let log = dir.join("berth.log");
        let mut berth =
            Berth { child: spawn_berth(&config, &log), addr: SocketAddr::from(([127, 0, 0, 1], port)), log, config };
        berth.wait_ready().await;
        berth
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = berth_manager::conformance::http_get(self.addr, "/healthz").await {
                return;
            }
            if let Ok(Some(status)) = self.child.0.try_wait() {
                panic!("berth serve ended with {status}; its output:\n{}", file_text(&self.log));
            }
            assert!(Instant::now() < deadline, "berth serve never answered; its output:\n{}", file_text(&self.log));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills it (as a crash would) and starts it again on the same files.
    pub async fn restart(&mut self) {
        self.child.stop();
        self.log = self.log.with_extension("restarted.log");
        self.child = spawn_berth(&self.config, &self.log);
        self.wait_ready().await;
    }

    pub fn output(&self) -> String {
        file_text(&self.log)
    }
}

fn spawn_berth(config: &Path, log: &Path) -> ChildGuard {
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info,berth=debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("starting berth serve");
    ChildGuard(child)
}

/// Headless Chromium through a chromedriver this process starts.
pub struct Browser {
    _driver: ChildGuard,
    pub client: Client,
    pub log: PathBuf,
}

impl Browser {
    /// `None` (after a loud skip) without Chromium or chromedriver.
    pub async fn start(test: &str, dir: &Path) -> Option<Browser> {
        Browser::start_with(test, dir, &[]).await
    }

    /// As [`start`](Self::start), with `extra` Chromium arguments (e.g.
    /// `--host-resolver-rules=...`).
    pub async fn start_with(test: &str, dir: &Path, extra: &[&str]) -> Option<Browser> {
        let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
        let driver = on_path(&["chromedriver"]);
        let (Some(chromium), Some(driver)) = (chromium, driver) else {
            missing(test, "chromium and chromedriver", "apt-get install chromium chromium-driver");
            return None;
        };
        let port = free_port();
        let log = dir.join("chromedriver.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting chromedriver");
        let guard = ChildGuard(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        poll("chromedriver", Duration::from_secs(20), || async move {
            match berth_manager::conformance::http_get(addr, "/status").await {
                Ok((200, body)) if body.contains("\"ready\":true") || body.contains("\"ready\": true") => Some(()),
                _ => None,
            }
        })
        .await;
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
        ];
        args.extend_from_slice(extra);
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert("goog:chromeOptions".into(), json!({"binary": chromium, "args": args}));
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://{addr}"))
            .await
            .unwrap_or_else(|e| panic!("opening a Chromium session: {e}; chromedriver said:\n{}", file_text(&log)));
        Some(Browser { _driver: guard, client, log })
    }
}

/// The text of the page's body.
pub async fn text(client: &Client) -> String {
    let v = client.execute("return document.body ? document.body.innerText : ''", Vec::new()).await;
    v.ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// Waits until the page's text contains `needle`; returns the text.
pub async fn wait_text(client: &Client, needle: &str) -> String {
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        last = text(client).await;
        if last.contains(needle) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
    panic!("the page at {url} never said {needle:?}; it says:\n{last}");
}

/// The browser's value of cookie `name` for the current page's host.
pub async fn cookie(client: &Client, name: &str) -> Option<String> {
    let cookies = client.get_all_cookies().await.ok()?;
    cookies.iter().find(|c| c.name() == name).map(|c| c.value().to_owned())
}

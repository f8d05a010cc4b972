//! The demo's whole journey in a real browser: the `berth` binary serves
//! the web app with the CSV viewer (and a variant of it), and headless Chromium
//! (driven over WebDriver by `fantoccini`, through a `chromedriver` this
//! test starts) goes through every page: the empty running list; the
//! launch page, where it uploads a CSV, unfolds the viewer's card, and
//! sees a broken parameters field refused beside the field by the browser
//! and (with the browser's checks off) by the server; berth's please-wait
//! page turning into the heatmap by itself; the running list updating
//! without a reload when a container is launched elsewhere; the logs
//! page following a request made meanwhile; the history page; the fleet
//! page after an eviction; the list on a phone-sized screen; and kills
//! that ask first (no, then yes). Screenshots of each step go to
//! `target/browser-test/` (and `failure.png` when something breaks); with
//! `BERTH_SCREENSHOTS_TO_DOCS=1` those the README shows are copied into
//! `docs/screenshots/`.
//!
//! Skipped loudly without Chromium and chromedriver (a failure with
//! `BERTH_REQUIRE_BROWSER=1`) or without a Docker engine (a failure with
//! `BERTH_REQUIRE_DOCKER=1`).

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_manager::docker::DockerManager;
use berth_manager::{ContainerManager, LabelScheme, ListFilter};
use berth_testkit::TestRun;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// Environment variable that turns "no browser" into a test failure.
const ENV_REQUIRE_BROWSER: &str = "BERTH_REQUIRE_BROWSER";

/// The uploaded file's name.
const CSV_NAME: &str = "browser-sample.csv";
/// Data rows of the uploaded CSV.
const ROWS: usize = 12;
/// Its numeric columns (after the `sample` label column).
const NUMERIC: [&str; 5] = ["alpha", "beta", "gamma", "delta", "epsilon"];
/// How long the viewer answers 503 after start (`parameters.warmup_secs`).
const WARMUP_SECS: u64 = 3;
/// The server's memory budget: two viewers (32 MiB each) fit, a third does not.
const BUDGET_MB: u64 = 80;
/// The ends of the viridis scale: each column's minimum and maximum cell.
const VIRIDIS_MIN: &str = "#440154";
const VIRIDIS_MAX: &str = "#fde725";

/// Chromium and chromedriver, as found on `PATH`.
struct Browser {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
}

fn browser_required() -> bool {
    std::env::var(ENV_REQUIRE_BROWSER).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Chromium and chromedriver, or `None` after saying loudly that the test
/// is skipped.
///
/// # Panics
///
/// When one is missing and `BERTH_REQUIRE_BROWSER` is set.
fn browser_or_skip(test: &str) -> Option<Browser> {
    let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
    let chromedriver = on_path(&["chromedriver"]);
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => Some(Browser { chromium, chromedriver }),
        (chromium, _) => {
            let missing = if chromium.is_none() { "chromium" } else { "chromedriver" };
            if browser_required() {
                panic!("{ENV_REQUIRE_BROWSER} is set but {missing} is not on PATH for {test}");
            }
            eprintln!(
                "SKIPPED {test}: {missing} is not on PATH (apt-get install chromium chromium-driver); \
                 set {ENV_REQUIRE_BROWSER}=1 to make this a failure"
            );
            None
        }
    }
}

/// A child process, killed and reaped on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory of this test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> TempDir {
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

/// A port `p` with `127.0.0.1:p` and `0.0.0.0:p+1` free (the server's main
/// and staging listeners).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let main = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = main.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("0.0.0.0", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two consecutive free ports found");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn file_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// Calls `check` every 100 ms until it returns `Some`, or panics naming
/// `what` after `timeout`.
async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The uploaded CSV: a `sample` label column and five numeric columns. In
/// column `j`, row `i` holds `(i + 1) * k_j mod 13` (scaled), with `k_j`
/// coprime to 13, so each column's twelve values are distinct and it has
/// exactly one minimum and one maximum.
fn sample_csv() -> String {
    const FACTORS: [usize; 5] = [1, 2, 5, 7, 11];
    const SCALES: [f64; 5] = [1.0, 0.5, 10.0, 2.5, 0.1];
    let mut csv = format!("sample,{}\n", NUMERIC.join(","));
    for i in 0..ROWS {
        let _ = write!(csv, "s{:02}", i + 1);
        for (k, scale) in FACTORS.iter().zip(SCALES) {
            let v = ((i + 1) * k % 13) as f64 * scale;
            let _ = write!(csv, ",{v:.2}");
        }
        csv.push('\n');
    }
    csv
}

/// A running `berth serve`.
struct Server {
    _child: ChildGuard,
    addr: SocketAddr,
    stderr: PathBuf,
    root_label: String,
    uploads: PathBuf,
}

/// Writes `berth.toml` and `tools.toml` into `dir` and starts the server
/// on them; returns once `/healthz` answers 200.
async fn start_server(dir: &Path, image: &str, run: &TestRun) -> Server {
    let port = free_port_pair();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let root_label = format!("berth-browser-{}", std::process::id());
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // berth makes its containers' network; the run's label lets its
    // clean-up remove it.
    let network_labels: Vec<String> = run.labels().iter().map(|(k, v)| format!("{k:?} = {v:?}")).collect();
    let config = format!(
        "listen = \"{addr}\"\ndata_dir = {state:?}\nroot_label = \"{root_label}\"\ntools = \"tools.toml\"\n\n\
         [engine]\nendpoints = \"published\"\nnetwork_labels = {{ {network_labels} }}\n\n\
         [proxy]\nstart_timeout_secs = 60\n\n[fleet]\nmemory_budget_mb = {BUDGET_MB}\n\n[data]\ndir = {data:?}\n",
        network_labels = network_labels.join(", "),
        state = dir.join("state").display().to_string(),
        data = data.display().to_string(),
    );
    let labels: String = run.labels().iter().map(|(k, v)| format!("{k:?} = {v:?}\n")).collect();
    // A second tool (the same image) for the launch page's cards; only
    // the first is launched.
    let tools = format!(
        "[[tools]]\nname = \"csv-viewer\"\ndescription = \"CSV files as tables and heatmaps.\"\nimage = {image:?}\n\
         port = 80\nmem_reservation_mb = 32\ninput_mode = \"url\"\ndefault_files = []\n\n\
         [tools.default_parameters]\npalette = \"viridis\"\nwarmup_secs = {WARMUP_SECS}\n\n[tools.labels]\n{labels}\n\
         [[tools]]\nname = \"csv-magma\"\ndescription = \"The CSV viewer with the magma palette.\"\nimage = {image:?}\n\
         port = 80\nmem_reservation_mb = 48\nmax_per_user = 1\ninput_mode = \"url\"\ndefault_files = []\n\n\
         [tools.default_parameters]\npalette = \"magma\"\n\n[tools.labels]\n{labels}"
    );
    std::fs::write(dir.join("berth.toml"), config).unwrap();
    std::fs::write(dir.join("tools.toml"), tools).unwrap();
    let stderr = dir.join("server.log");
    let log = std::fs::File::create(&stderr).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("serve")
        .arg("--config")
        .arg(dir.join("berth.toml"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting berth serve");
    let mut child = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = berth_manager::conformance::http_get(addr, "/healthz").await {
            break;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("berth serve ended with {status} before answering; its output:\n{}", file_text(&stderr));
        }
        assert!(Instant::now() < deadline, "berth serve never answered /healthz; its output:\n{}", file_text(&stderr));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The listener for containers answers loopback and the engine's
    // networks only: this host, dialled at its own non-loopback address, is
    // neither (its peer address is that address).
    if let Some(own) = own_address() {
        let staging = SocketAddr::new(own, port + 1);
        let answer = berth_manager::conformance::http_get(staging, "/_berth/data/nothing.csv").await;
        assert_eq!(
            answer.map(|(status, _)| status),
            Ok(403),
            "the staging listener on {staging} served a non-container"
        );
    } else {
        eprintln!("browser: no non-loopback, non-container address here; the staging peer check is not exercised");
    }
    Server { _child: child, addr, stderr, root_label, uploads: dir.join("state/uploads") }
}

/// This host's address on its default route, when it has one outside
/// loopback and the usual container ranges (172.16/12); no packet is sent.
fn own_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    let container_range =
        matches!(ip, std::net::IpAddr::V4(v4) if v4.octets()[0] == 172 && (16..32).contains(&v4.octets()[1]));
    (!ip.is_loopback() && !ip.is_unspecified() && !container_range).then_some(ip)
}

/// Starts chromedriver on a free port and opens a headless Chromium session.
async fn start_browser(dir: &Path, browser: &Browser) -> (ChildGuard, Client, PathBuf) {
    let port = free_port();
    let log_path = dir.join("chromedriver.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(&browser.chromedriver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting chromedriver");
    let guard = ChildGuard(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    poll("chromedriver to be ready", Duration::from_secs(20), || async move {
        match berth_manager::conformance::http_get(addr, "/status").await {
            Ok((200, body)) if body.contains("\"ready\":true") || body.contains("\"ready\": true") => Some(()),
            _ => None,
        }
    })
    .await;
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": browser.chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900"],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://{addr}"))
        .await
        .unwrap_or_else(|e| panic!("opening a Chromium session: {e}; chromedriver said:\n{}", file_text(&log_path)));
    (guard, client, log_path)
}

/// Where screenshots go.
fn shots_dir() -> PathBuf {
    berth_testkit::workspace_root().join("target/browser-test")
}

/// The journey's screenshots, each with the name it has in
/// `docs/screenshots/` when it is shown in the README.
const SHOTS: [(&str, Option<&str>); 11] = [
    ("01-running-empty.png", None),
    ("02-launch.png", Some("launch.png")),
    ("03-launch-errors.png", Some("launch-errors.png")),
    ("04-please-wait.png", Some("please-wait.png")),
    ("05-heatmap.png", None),
    ("06-running.png", Some("running.png")),
    ("07-logs.png", Some("logs.png")),
    ("08-history.png", Some("history.png")),
    ("09-fleet.png", Some("fleet.png")),
    ("10-running-phone.png", Some("running-phone.png")),
    ("11-killed.png", None),
];

/// Environment variable that copies the journey's screenshots into
/// `docs/screenshots/` (after a change to the web app's looks).
const ENV_SCREENSHOTS_TO_DOCS: &str = "BERTH_SCREENSHOTS_TO_DOCS";

/// Copies the screenshots the README shows into `docs/screenshots/`.
fn screenshots_to_docs() {
    let docs = berth_testkit::workspace_root().join("docs/screenshots");
    std::fs::create_dir_all(&docs).unwrap();
    for (shot, doc) in SHOTS {
        if let Some(doc) = doc {
            std::fs::copy(shots_dir().join(shot), docs.join(doc)).unwrap_or_else(|e| panic!("copying {shot}: {e}"));
            eprintln!("docs/screenshots/{doc} from {shot}");
        }
    }
}

/// A screenshot of the whole page (as tall as its content, so small pages
/// make small pictures).
async fn screenshot(client: &Client, name: &str) {
    screenshot_of(client, "html", name).await;
}

/// The browser window's size for the journey.
const WINDOW: (u32, u32) = (1280, 900);

/// A screenshot of the element `selector` selects, all of it: the window
/// is made as tall as the page for it (an element screenshot shows only
/// what is in the window), then set back.
async fn screenshot_of(client: &Client, selector: &str, name: &str) {
    let sizes = client
        .execute("return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]", Vec::new())
        .await
        .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
    let [page, frame] = [0, 1].map(|i| sizes[i].as_u64().unwrap_or(0) as u32);
    client.set_window_size(WINDOW.0, (page + frame).clamp(WINDOW.1, 3000)).await.expect("a window for the page");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let element = client.find(Locator::Css(selector)).await.unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
    let png = element.screenshot().await.unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
    client.set_window_size(WINDOW.0, WINDOW.1).await.expect("the window back");
    let path = shots_dir().join(name);
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    eprintln!("screenshot: {}", path.display());
}

/// The elements matching CSS `selector` now (none when the page is
/// between documents).
async fn all(client: &Client, selector: &str) -> Vec<fantoccini::elements::Element> {
    client.find_all(Locator::Css(selector)).await.unwrap_or_default()
}

/// Runs `script` and returns its value as strings.
async fn strings(client: &Client, script: &str) -> Vec<String> {
    let value = client.execute(script, Vec::new()).await.unwrap_or_else(|e| panic!("script {script}: {e}"));
    serde_json::from_value(value).unwrap_or_else(|e| panic!("script {script} returned no string list: {e}"))
}

/// What the journey measured.
#[derive(Debug)]
struct Report {
    to_please_wait: Duration,
    to_heatmap: Duration,
    status_text: String,
    progress_text: String,
    phases: Vec<String>,
    navigation: String,
}

/// The engine as the server sees it: only containers under its root label.
async fn server_engine(root_label: &str) -> DockerManager {
    let config = berth_testkit::docker_config().unwrap().labels(LabelScheme::new(root_label.to_owned()));
    DockerManager::connect(config).await.unwrap()
}

/// What the journey works on.
struct Journey {
    client: Client,
    addr: SocketAddr,
    csv_path: PathBuf,
    uploads: PathBuf,
    name: String,
    root_label: String,
    run_labels: BTreeMap<String, String>,
}

/// `POST path` with a JSON body to the server; `(status, body)`.
async fn post_json(addr: SocketAddr, path: &str, body: &Value) -> (u16, String) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body.to_string())))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The texts of the cells of the running list's row of `name`, once it has one.
async fn row_cells(client: &Client, name: &str) -> Vec<String> {
    let xpath = format!("//tbody[@id='running']/tr[@data-name='{name}']/td");
    poll(&format!("{name}'s row"), Duration::from_secs(20), || {
        let xpath = xpath.clone();
        async move {
            let tds = client.find_all(Locator::XPath(&xpath)).await.ok()?;
            let mut out = Vec::new();
            for td in tds {
                out.push(td.text().await.ok()?);
            }
            (!out.is_empty()).then_some(out)
        }
    })
    .await
}

/// The number of documents this tab has loaded (it grows with every
/// navigation, reloads included), via a marker a reload would lose.
async fn mark_page(client: &Client) {
    client.execute("window.berthMarker = 'still here'", Vec::new()).await.expect("set the marker");
}

async fn page_kept(client: &Client) -> bool {
    let v = client.execute("return window.berthMarker || ''", Vec::new()).await.expect("read the marker");
    v == json!("still here")
}

/// Everything the browser does, from the empty list to the last kill.
async fn journey(j: Journey) -> Report {
    let Journey { client, addr, csv_path, uploads, name, root_label, run_labels } = j;
    let base = format!("http://{addr}");
    let csv = std::fs::read_to_string(&csv_path).unwrap();

    // a. The running list, empty.
    client.goto(&format!("{base}/")).await.expect("open the running list");
    assert_eq!(client.title().await.expect("title"), "Running · berth");
    let nav =
        strings(&client, "return Array.from(document.querySelectorAll('header nav a')).map(e => e.textContent)").await;
    assert_eq!(nav, ["Running", "Launch", "Fleet"]);
    let current =
        strings(&client, "return Array.from(document.querySelectorAll('[aria-current=page]')).map(e => e.textContent)")
            .await;
    assert_eq!(current, ["Running"]);
    assert!(all(&client, r#"form[action^="/ui/kill/"]"#).await.is_empty(), "no container runs yet");
    let running =
        client.find(Locator::Css("tbody#running")).await.expect("the running list").text().await.expect("text");
    assert!(running.contains("nothing is running"), "{running}");
    screenshot(&client, "01-running-empty.png").await;

    // b. The launch page: upload the CSV through its form.
    client.find(Locator::LinkText("Launch")).await.expect("the Launch tab").click().await.expect("click");
    poll("the launch page", Duration::from_secs(10), || {
        let client = &client;
        async move { (client.title().await.ok()? == "Launch · berth").then_some(()) }
    })
    .await;
    let headings =
        strings(&client, "return Array.from(document.querySelectorAll('main h2')).map(e => e.textContent)").await;
    assert_eq!(headings, ["Tools", "Data files"]);
    let upload = r#"form[action="/ui/upload"]"#;
    let input = client.find(Locator::Css(&format!("{upload} input[type=file][name=file]"))).await.expect("file input");
    input.send_keys(csv_path.to_str().unwrap()).await.expect("choose the file");
    client.find(Locator::Css(&format!("{upload} button"))).await.expect("upload button").click().await.expect("click");
    let checkbox = format!(r#"input[type=checkbox][name=file][value$="/{CSV_NAME}"]"#);
    poll("the uploaded file in the launch form", Duration::from_secs(10), || {
        let (client, checkbox) = (&client, &checkbox);
        async move { (!all(client, checkbox).await.is_empty()).then_some(()) }
    })
    .await;
    assert_eq!(client.current_url().await.expect("url").path(), "/ui/launch");
    assert_eq!(std::fs::read_to_string(uploads.join(CSV_NAME)).expect("the upload is stored"), csv);
    let notice = client.find(Locator::Css(".notice")).await.expect("a notice").text().await.expect("text");
    assert_eq!(notice, format!("{CSV_NAME} was uploaded."));

    // c. The viewer's card: its form is folded until asked for.
    let card_xpath =
        "//div[contains(concat(' ', normalize-space(@class), ' '), ' tool ')][h3[normalize-space(.)='csv-viewer']]";
    let card = client.find(Locator::XPath(card_xpath)).await.expect("the csv-viewer's card");
    let card_text = card.text().await.expect("card text");
    assert!(card_text.contains("CSV files as tables and heatmaps.") && card_text.contains("32 MiB"), "{card_text}");
    let form = card.find(Locator::Css(r#"form[action="/ui/launch"]"#)).await.expect("launch form");
    let name_input = form.find(Locator::Css("input[name=name]")).await.expect("name input");
    assert!(!name_input.is_displayed().await.expect("displayed?"), "the form starts folded");
    card.find(Locator::Css("summary")).await.expect("the card's summary").click().await.expect("unfold");
    name_input.send_keys(&name).await.expect("type");
    let file = form.find(Locator::Css(&checkbox)).await.expect("file checkbox");
    assert!(!file.is_selected().await.expect("checked?"), "the upload is not a default file");
    file.click().await.expect("tick the file");
    assert!(file.is_selected().await.expect("checked?"));
    let params = form.find(Locator::Css("textarea[name=parameters]")).await.expect("parameters");
    let prefilled: Value = serde_json::from_str(&params.prop("value").await.expect("value").unwrap_or_default())
        .expect("the prefilled parameters are JSON");
    assert_eq!(prefilled, json!({"palette": "viridis", "warmup_secs": WARMUP_SECS}));
    screenshot(&client, "02-launch.png").await;

    // Broken parameters: the browser says so beside the field and keeps the form.
    let broken = format!("{{\"palette\": \"viridis\", \"warmup_secs\": {WARMUP_SECS}");
    params.clear().await.expect("clear");
    params.send_keys(&broken).await.expect("type");
    let error = "return document.getElementById('t0-params-err').textContent";
    let said = client.execute(error, Vec::new()).await.expect("error text");
    assert!(said.as_str().is_some_and(|s| s.contains("not JSON")), "the browser's check: {said}");
    let launch_button = r#"button[name=action][value=launch]"#;
    form.find(Locator::Css(launch_button)).await.expect("launch button").click().await.expect("click");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.current_url().await.expect("url").path(), "/ui/launch", "the browser kept the form");
    // Past the browser's check (as a script-less browser would be), the
    // server answers with the form again and the error beside the field.
    client
        .execute("document.querySelector('#tool-csv-viewer form').noValidate = true", Vec::new())
        .await
        .expect("switch the browser's checks off");
    form.find(Locator::Css(launch_button)).await.expect("launch button").click().await.expect("click");
    let server_says = poll("the server's answer to the broken form", Duration::from_secs(10), || {
        let client = &client;
        async move {
            let e = client.find(Locator::Id("t0-params-err")).await.ok()?.text().await.ok()?;
            (e.contains("parameters are not JSON") && !all(client, ".errors").await.is_empty()).then_some(e)
        }
    })
    .await;
    eprintln!("the server's check: {server_says}");
    let form = client.find(Locator::Css("#tool-csv-viewer form")).await.expect("the form again");
    let kept = form.find(Locator::Css("input[name=name]")).await.expect("name").prop("value").await.expect("value");
    assert_eq!(kept.as_deref(), Some(name.as_str()), "the name is kept");
    assert!(form.find(Locator::Css(&checkbox)).await.expect("file").is_selected().await.expect("checked?"));
    screenshot_of(&client, "#tool-csv-viewer", "03-launch-errors.png").await;
    let params = form.find(Locator::Css("textarea[name=parameters]")).await.expect("parameters");
    params.clear().await.expect("clear");
    params.send_keys(&format!("{broken}}}")).await.expect("type");
    let launch = form.find(Locator::Css(launch_button)).await.expect("launch button");
    let clicked = Instant::now();
    launch.click().await.expect("click launch");

    // d. The please-wait page, filling its progress list from the event stream.
    poll("the please-wait page's #berth-progress", Duration::from_secs(10), || {
        let client = &client;
        async move { (!all(client, "#berth-progress").await.is_empty()).then_some(()) }
    })
    .await;
    let to_please_wait = clicked.elapsed();
    // The form answers at once and the launch goes on in the background.
    assert_eq!(client.current_url().await.expect("url").path(), format!("/ui/wait/{name}"));
    poll("a \"waiting\" phase in #berth-progress", Duration::from_secs(10), || {
        let client = &client;
        async move { (!all(client, r#"#berth-progress li[data-phase="waiting"]"#).await.is_empty()).then_some(()) }
    })
    .await;
    screenshot(&client, "04-please-wait.png").await;
    let status = client.find(Locator::Id("berth-status")).await.expect("#berth-status");
    let status_text = status.text().await.expect("status text");
    let status_phase = status.attr("data-phase").await.expect("data-phase");
    let progress_text = client.find(Locator::Id("berth-progress")).await.expect("progress").text().await.expect("text");
    let phases = strings(
        &client,
        "return Array.from(document.querySelectorAll('#berth-progress li')).map(e => e.dataset.phase)",
    )
    .await;
    eprintln!("please-wait: status {status_phase:?} {status_text:?}; progress {phases:?} {progress_text:?}");
    // Phases arrive in launch order, each once; the page may open after
    // the first ones are over, but "waiting" lasts the 3 s warm-up.
    let order = ["creating", "starting", "waiting"];
    let positions: Vec<Option<usize>> = phases.iter().map(|p| order.iter().position(|o| o == p)).collect();
    assert!(positions.iter().all(Option::is_some), "unexpected phases {phases:?}");
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "phases out of order {phases:?}");
    assert_eq!(phases.last().map(String::as_str), Some("waiting"), "{phases:?}");
    assert!(!status_text.trim().is_empty(), "#berth-status says nothing");

    // e. Without a reload from here, the page turns into the viewer.
    let cells = ROWS * NUMERIC.len();
    poll("the heatmap", Duration::from_secs(30), || {
        let client = &client;
        async move { (all(client, "svg rect").await.len() >= cells).then_some(()) }
    })
    .await;
    let to_heatmap = clicked.elapsed();
    assert_eq!(client.current_url().await.expect("url").path(), format!("/docker/{name}/"));
    // One <rect class="cell"> per row and numeric column, and nothing else.
    assert_eq!(all(&client, "svg rect").await.len(), cells);
    assert_eq!(all(&client, "svg.heatmap rect.cell").await.len(), cells);
    let col_labels = strings(
        &client,
        "return Array.from(document.querySelectorAll('svg.heatmap text.col')).map(e => e.firstChild.textContent)",
    )
    .await;
    assert_eq!(col_labels, NUMERIC);
    let row_labels = strings(
        &client,
        "return Array.from(document.querySelectorAll('svg.heatmap text.row')).map(e => e.textContent)",
    )
    .await;
    let expected_rows: Vec<String> = (1..=ROWS).map(|i| format!("s{i:02}")).collect();
    assert_eq!(row_labels, expected_rows);
    // Each column runs from viridis' first colour (its minimum) to its last (its maximum).
    let fills = strings(
        &client,
        "return Array.from(document.querySelectorAll('svg.heatmap rect.cell')).map(e => e.getAttribute('fill'))",
    )
    .await;
    assert_eq!(fills.iter().filter(|f| *f == VIRIDIS_MIN).count(), NUMERIC.len(), "{fills:?}");
    assert_eq!(fills.iter().filter(|f| *f == VIRIDIS_MAX).count(), NUMERIC.len(), "{fills:?}");
    let titles = strings(
        &client,
        "return Array.from(document.querySelectorAll('svg.heatmap rect.cell title')).map(e => e.textContent)",
    )
    .await;
    let first_row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').skip(1).collect();
    assert_eq!(titles[0], format!("s01 / alpha: {}", first_row[0]));
    assert_eq!(titles[NUMERIC.len() - 1], format!("s01 / epsilon: {}", first_row[NUMERIC.len() - 1]));
    // The table shows the CSV's header, visibly.
    let header_cells = all(&client, "table.data th").await;
    let mut header = Vec::new();
    for th in &header_cells {
        assert!(th.is_displayed().await.expect("displayed?"));
        header.push(th.text().await.expect("header text"));
    }
    let expected_header: Vec<String> = csv.lines().next().unwrap().split(',').map(str::to_owned).collect();
    assert_eq!(header, expected_header);
    assert_eq!(all(&client, "table.data tr").await.len(), ROWS + 1);
    let h2 = client.find(Locator::Css("section.file h2")).await.expect("file heading").text().await.expect("text");
    assert_eq!(h2, CSV_NAME);
    let summary = client.find(Locator::Css("section.file p")).await.expect("summary").text().await.expect("text");
    assert_eq!(summary, format!("{ROWS} rows, {} columns, {} numeric.", NUMERIC.len() + 1, NUMERIC.len()));
    let navigation = strings(&client, "return performance.getEntriesByType('navigation').map(e => e.type)").await;
    let navigation = navigation.join(",");
    screenshot(&client, "05-heatmap.png").await;

    // f. Back on the running list, the container is listed.
    client.goto(&format!("{base}/")).await.expect("open the running list");
    let cells_text = row_cells(&client, &name).await;
    eprintln!("running list row: {cells_text:?}");
    // Name, tool, owner, age, memory, last activity, status, ready.
    assert_eq!(cells_text[..3], [name.clone(), "csv-viewer".into(), "-".into()], "{cells_text:?}");
    assert_eq!(cells_text[4], "32 MiB", "{cells_text:?}");
    assert_eq!(cells_text[5], "just now", "the heatmap's requests: {cells_text:?}");
    assert_eq!(cells_text[6..8], ["running".to_owned(), "yes".to_owned()], "{cells_text:?}");
    let badge = client
        .find(Locator::Css(&format!(r#"tr[data-name="{name}"] .badge"#)))
        .await
        .expect("status badge")
        .attr("class")
        .await
        .expect("class");
    assert_eq!(badge.as_deref(), Some("badge ok"));
    // The registry's extra labels reached the container (so the test run's clean-up covers it).
    let info = server_engine(&root_label).await.inspect(&name).await.expect("inspect the container");
    for (key, value) in &run_labels {
        assert_eq!(info.labels.get(key), Some(value), "label {key} on {name}: {:?}", info.labels);
    }
    // Live: a container launched elsewhere (the API) appears without a reload.
    mark_page(&client).await;
    let second = format!("{name}-b");
    let (status, body) = post_json(addr, "/api/v1/containers", &json!({"name": second, "tool": "csv-viewer"})).await;
    assert_eq!(status, 202, "{body}");
    let second_cells = row_cells(&client, &second).await;
    assert!(page_kept(&client).await, "the list was reloaded instead of refreshed");
    eprintln!("the second container appeared live: {second_cells:?}");
    let live = client.find(Locator::Id("live-status")).await.expect("#live-status").text().await.expect("text");
    assert!(live.starts_with("Updated "), "{live}");
    screenshot(&client, "06-running.png").await;

    // g. Its logs, followed in the page: a request made now shows up.
    let logs_link = format!(r#"tr[data-name="{name}"] a[href="/ui/logs/{name}"]"#);
    client.find(Locator::Css(&logs_link)).await.expect("logs link").click().await.expect("click");
    poll("the logs page following", Duration::from_secs(10), || {
        let client = &client;
        async move { (!all(client, "pre#log[data-following=yes]").await.is_empty()).then_some(()) }
    })
    .await;
    let text = client.find(Locator::Id("log")).await.expect("#log").text().await.expect("text");
    assert!(text.contains("listening on 0.0.0.0:80"), "{text}");
    let marker = "/?followed=logs";
    let (status, _) = berth_manager::conformance::http_get(addr, &format!("/docker/{name}{marker}")).await.unwrap();
    assert_eq!(status, 200);
    poll("the new request in the followed log", Duration::from_secs(10), || {
        let client = &client;
        async move {
            let text = client.find(Locator::Id("log")).await.ok()?.text().await.ok()?;
            text.contains(&format!("GET {marker}")).then_some(())
        }
    })
    .await;
    screenshot(&client, "07-logs.png").await;

    // h. Its request history: a table, newest first.
    client.find(Locator::LinkText("History")).await.expect("history link").click().await.expect("click");
    let first = poll("the history table", Duration::from_secs(10), || {
        let client = &client;
        async move {
            let row = client.find(Locator::Css("main tbody tr")).await.ok()?;
            let mut cells = Vec::new();
            for td in row.find_all(Locator::Css("td")).await.ok()? {
                cells.push(td.text().await.ok()?);
            }
            (cells.len() == 4).then_some(cells)
        }
    })
    .await;
    assert_eq!(first[1..3], [format!("/docker/{name}{marker}"), "200".to_owned()], "the newest first: {first:?}");
    screenshot(&client, "08-history.png").await;

    // i. The fleet: a third container does not fit the budget (80 MiB):
    // the least recently used one (the second, never visited) is evicted.
    let (status, _) = berth_manager::conformance::http_get(addr, &format!("/docker/{name}/")).await.unwrap();
    assert_eq!(status, 200);
    let third = format!("{name}-c");
    let (status, body) = post_json(addr, "/api/v1/containers", &json!({"name": third, "tool": "csv-viewer"})).await;
    assert_eq!(status, 202, "{body}");
    let evicted: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(evicted["evicted"], json!([second]), "{body}");
    client.find(Locator::LinkText("Fleet")).await.expect("the Fleet tab").click().await.expect("click");
    let removals = poll("the eviction on the fleet page", Duration::from_secs(10), || {
        let client = &client;
        async move {
            let text = client.find(Locator::Id("removals")).await.ok()?.text().await.ok()?;
            text.contains("evicted").then_some(text)
        }
    })
    .await;
    assert!(removals.contains(&second) && removals.contains(&format!("to make room for {third}")), "{removals}");
    let main = client.find(Locator::Css("main")).await.expect("main").text().await.expect("text");
    assert!(main.contains("64 of 80 MiB reserved (80%)"), "{main}");
    screenshot(&client, "09-fleet.png").await;

    // j. On a phone-sized screen the list turns into cards.
    client.set_window_size(390, 844).await.expect("phone size");
    client.goto(&format!("{base}/")).await.expect("open the running list");
    row_cells(&client, &third).await;
    let header_hidden = client
        .execute("return getComputedStyle(document.querySelector('table.list thead')).position", Vec::new())
        .await
        .expect("style");
    assert_eq!(header_hidden, json!("absolute"), "the table's header is out of the way on a phone");
    let png = client.screenshot().await.expect("the phone's screen");
    std::fs::write(shots_dir().join("10-running-phone.png"), png).unwrap();
    client.set_window_size(WINDOW.0, WINDOW.1).await.expect("desktop size");

    // k. Kill, with a confirmation: no, then yes.
    client.goto(&format!("{base}/")).await.expect("open the running list");
    row_cells(&client, &name).await;
    let kill = format!(r#"form[action="/ui/kill/{name}"] button"#);
    client.find(Locator::Css(&kill)).await.expect("kill button").click().await.expect("click kill");
    let question = client.get_alert_text().await.expect("the confirmation");
    assert!(question.starts_with(&format!("Kill {name}?")), "{question}");
    client.dismiss_alert().await.expect("say no");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!row_cells(&client, &name).await.is_empty(), "still there after saying no");
    for victim in [&name, &third] {
        let kill = format!(r#"form[action="/ui/kill/{victim}"] button"#);
        client.find(Locator::Css(&kill)).await.expect("kill button").click().await.expect("click kill");
        client.accept_alert().await.expect("say yes");
        let row_xpath = format!("//tbody[@id='running']/tr[@data-name='{victim}']");
        poll("the container's row to go", Duration::from_secs(20), || {
            let (client, row_xpath) = (&client, &row_xpath);
            async move {
                let url = client.current_url().await.ok()?;
                let rows = client.find_all(Locator::XPath(row_xpath)).await.ok()?;
                (url.path() == "/" && rows.is_empty() && !all(client, "h1").await.is_empty()).then_some(())
            }
        })
        .await;
        let notice = client.find(Locator::Css(".notice")).await.expect("notice").text().await.expect("text");
        assert_eq!(notice, format!("{victim} was killed."));
    }
    screenshot(&client, "11-killed.png").await;

    Report { to_please_wait, to_heatmap, status_text, progress_text, phases, navigation }
}

/// Screenshot, page source and the processes' output, for a failed journey.
async fn diagnose(client: &Client, server: &Server, chromedriver_log: &Path) {
    let shot = tokio::time::timeout(Duration::from_secs(20), client.screenshot()).await;
    match shot {
        Ok(Ok(png)) => {
            let path = shots_dir().join("failure.png");
            match std::fs::write(&path, png) {
                Ok(()) => eprintln!("failure screenshot: {}", path.display()),
                Err(e) => eprintln!("cannot write {}: {e}", path.display()),
            }
        }
        Ok(Err(e)) => eprintln!("no failure screenshot: {e}"),
        Err(_) => eprintln!("no failure screenshot: timed out"),
    }
    match tokio::time::timeout(Duration::from_secs(10), client.current_url()).await {
        Ok(Ok(url)) => eprintln!("page at failure: {url}"),
        _ => eprintln!("page at failure: unknown"),
    }
    match tokio::time::timeout(Duration::from_secs(10), client.source()).await {
        Ok(Ok(source)) => eprintln!("---- page source ----\n{source}\n---- end of page source ----"),
        Ok(Err(e)) => eprintln!("no page source: {e}"),
        Err(_) => eprintln!("no page source: timed out"),
    }
    eprintln!("---- berth serve output ----\n{}---- end of berth serve output ----", file_text(&server.stderr));
    eprintln!("---- chromedriver output ----\n{}---- end of chromedriver output ----", file_text(chromedriver_log));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_journey_in_a_browser() {
    let Some(browser) = browser_or_skip("browser") else {
        return;
    };
    let Some(docker) = berth_testkit::docker_or_skip("browser").await else {
        return;
    };
    // Dropped last: removes whatever the server launched with the run's label.
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::static_tool_image(
        &docker,
        "berth-demo-tools",
        "berth-csv-viewer",
        "berth-test-berth-csv-viewer",
    )
    .await
    .unwrap_or_else(|e| panic!("image of berth-csv-viewer: {e}"));
    let dir = TempDir::new("berth-browser-test");
    std::fs::create_dir_all(shots_dir()).unwrap();
    for old in SHOTS.iter().map(|(shot, _)| shot).chain(&["failure.png"]) {
        let _ = std::fs::remove_file(shots_dir().join(old));
    }
    let csv_path = dir.0.join(CSV_NAME);
    std::fs::write(&csv_path, sample_csv()).unwrap();

    let server = start_server(&dir.0, &image, &run).await;
    let (_driver, client, driver_log) = start_browser(&dir.0, &browser).await;
    let name = format!("browser-viz-{}", run.id());

    // The journey runs as a task of its own, so that a failed assertion in
    // it still leaves this function the browser to take a screenshot with.
    let outcome = tokio::spawn(journey(Journey {
        client: client.clone(),
        addr: server.addr,
        csv_path,
        uploads: server.uploads.clone(),
        name: name.clone(),
        root_label: server.root_label.clone(),
        run_labels: run.labels(),
    }))
    .await;
    let report = match outcome {
        Ok(report) => report,
        Err(e) => {
            diagnose(&client, &server, &driver_log).await;
            let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
            match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("the browser journey did not finish: {e}"),
            }
        }
    };
    client.close().await.expect("closing the browser session");
    eprintln!(
        "timings: launch click -> please-wait page {:.2?}; launch click -> heatmap visible {:.2?} \
         (viewer warm-up {WARMUP_SECS} s)",
        report.to_please_wait, report.to_heatmap
    );
    eprintln!(
        "please-wait showed: status {:?}, progress {:?} (phases {:?}); viewer page navigation type {:?}",
        report.status_text, report.progress_text, report.phases, report.navigation
    );

    // The container is gone: for the server's API and for the engine.
    let (status, body) = berth_manager::conformance::http_get(server.addr, "/api/v1/containers").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["containers"], json!([]), "{body}");
    let engine = server_engine(&server.root_label).await;
    let left: Vec<String> = engine.list(&ListFilter::all()).await.unwrap().into_iter().map(|c| c.name).collect();
    assert!(left.is_empty(), "the server's containers left in the engine: {left:?}");
    let gone = engine.inspect(&name).await;
    assert!(matches!(gone, Err(berth_manager::Error::NotFound { .. })), "{name} still in the engine: {gone:?}");
    if std::env::var(ENV_SCREENSHOTS_TO_DOCS).is_ok_and(|v| v == "1") {
        screenshots_to_docs();
    }
}

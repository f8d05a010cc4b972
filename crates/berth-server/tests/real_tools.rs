//! Real, stock tools behind the real `berth serve`: the entries of
//! `demo/real-tools.toml` that this machine builds (JupyterLab, Streamlit,
//! Dash, Shiny; `berth_testkit::real_tools_registry`), served with
//! `[proxy] routing = "both"`, once with path routing
//! (`/docker/<name>/...`) and once with hostname routing
//! (`<name>.docker.localhost`) as the default routing. Each app is launched
//! from its registry entry through the API (`POST /api/v1/containers` with
//! the tool's name, `?wait=true`), as a portal would for its user, then:
//!
//! - JupyterLab: the lab page loads in Chromium; a kernel is created
//!   through the REST API with Jupyter's `_xsrf` cookie and `X-XSRFToken`
//!   header, and `1+1` sent as an `execute_request` over the kernel's
//!   websocket (`/api/kernels/<id>/channels`) answers `execute_result` 2;
//! - Streamlit and Dash: rendered in Chromium, text typed into an input
//!   (and Streamlit's slider moved) comes back changed from the server;
//! - Shiny: rendered in Chromium, a moved slider's output arrives over
//!   Shiny's websocket.
//!
//! Then the containers are removed through the API, and JupyterLab's
//! persistent volume too. The images come from `cargo xtask test` (built
//! before the tests, cached by content hash; a missing one is built here).
//! Every container and volume carries the test run's label, so a failing
//! test leaves nothing behind. Traffic goes to 127.0.0.1 only: containers
//! are reached on ports published on loopback, and Chromium maps
//! `*.docker.localhost` to 127.0.0.1.
//!
//! Screenshots of each app's page go to `target/real-tools-test/`
//! (`<routing>-<tool>.png`, and `failure-<routing>.png` with the page
//! source, the server's and the apps' output when something breaks).
//! Skipped loudly without Docker or Chromium; a failure with
//! `BERTH_REQUIRE_DOCKER=1` or `BERTH_REQUIRE_BROWSER=1` (CI).

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_manager::docker::DockerManager;
use berth_manager::{ContainerManager, LabelScheme, ListFilter};
use berth_testkit::TestRun;
use fantoccini::key::Key;
use fantoccini::{Client, Locator};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Answer, Berth, Browser, Req, TempDir, free_port_pair};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The API's bearer token: the test plays a portal launching for its users.
const TOKEN: &str = "real-tools-service-token";

/// Hostname routing's suffix.
const HOST_SUFFIX: &str = "docker.localhost";

/// The registry's tools this machine builds, in launch order.
const TOOLS: [&str; 4] = ["jupyterlab", "streamlit", "dash", "shiny"];

/// Longest wait for a launch with `?wait=true` (JupyterLab's own start
/// timeout is 90 s; four apps start at once on a small machine).
const LAUNCH_WAIT: Duration = Duration::from_secs(150);

/// Longest wait for a page, a widget or a kernel to show something.
const PAGE_WAIT: Duration = Duration::from_secs(60);

/// How the default routing of the server is set for one test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `/docker/<name>/...`.
    Path,
    /// `<name>.docker.localhost`.
    Host,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Path => "path",
            Mode::Host => "host",
        }
    }
}

/// A launched app, as the test reaches it.
#[derive(Debug, Clone)]
struct App {
    tool: &'static str,
    mode: Mode,
    name: String,
    /// Where browsers open it (the API's `url`).
    url: String,
    /// Its public path (`/docker/<name>/`, or `/` on its own host).
    path: String,
    /// The `Host` header of requests to it (berth listens on 127.0.0.1).
    host: String,
}

impl App {
    /// A request for `path` (from the server's root) with this app's `Host`.
    fn req<'a>(&self, method: &'a str, path: &'a str) -> Req<'a> {
        Req::method(method, path).header("host", &self.host)
    }

    /// The origin browsers send for its pages.
    fn origin(&self) -> String {
        format!("http://{}", self.host)
    }
}

/// Writes the server registry: `demo/real-tools.toml`'s buildable entries
/// as they are (image set to the local build), each with the run's labels.
async fn write_registry(dir: &Path, docker: &DockerManager, run: &TestRun) {
    let text = berth_testkit::real_tools_registry(docker)
        .await
        .unwrap_or_else(|e| panic!("the real tools' images (cargo xtask images --real builds them): {e}"));
    let mut registry: toml::Table = text.parse().unwrap();
    let tools = registry.get_mut("tools").and_then(toml::Value::as_array_mut).unwrap();
    let names: Vec<&str> = tools.iter().filter_map(|t| t.get("name").and_then(toml::Value::as_str)).collect();
    assert_eq!(names, TOOLS, "the registry's locally built tools");
    let labels: toml::Table = run.labels().into_iter().map(|(k, v)| (k, toml::Value::String(v))).collect();
    for tool in tools.iter_mut() {
        tool.as_table_mut().unwrap().insert("labels".into(), toml::Value::Table(labels.clone()));
    }
    std::fs::write(dir.join("tools.toml"), toml::to_string(&registry).unwrap()).unwrap();
}

/// Writes `berth.toml`: both routings, `mode` the default, the containers'
/// ports published on loopback; the network berth makes for its
/// containers carries the run's labels, so the run's clean-up removes it.
fn write_config(dir: &Path, port: u16, root_label: &str, mode: Mode, run: &TestRun) {
    let network_labels: Vec<String> = run.labels().iter().map(|(k, v)| format!("{k:?} = {v:?}")).collect();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = {state:?}\nroot_label = \"{root_label}\"\ntools = \"tools.toml\"\n\n\
         [engine]\nendpoints = \"published\"\nnetwork_labels = {{ {network_labels} }}\n\n\
         [proxy]\nhost_suffix = \"{HOST_SUFFIX}\"\nrouting = \"both\"\ndefault_routing = \"{mode}\"\n\
         start_timeout_secs = 120\n\n[api]\ntoken = \"{TOKEN}\"\n\n[fleet]\nmemory_budget_mb = 8192\n",
        network_labels = network_labels.join(", "),
        state = dir.join("state").display().to_string(),
        mode = mode.as_str(),
    );
    std::fs::write(dir.join("berth.toml"), config).unwrap();
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// Launches `tool` as `name` for `owner` through the API and waits until
/// berth says it is ready.
async fn launch(berth: SocketAddr, mode: Mode, tool: &'static str, name: String, owner: &str) -> App {
    let started = Instant::now();
    let answer = Req::method("POST", "/api/v1/containers?wait=true")
        .header("authorization", &bearer())
        .json(&json!({"tool": tool, "name": name, "owner": owner}))
        .send_within(berth, LAUNCH_WAIT)
        .await;
    assert_eq!(answer.status, 200, "launching {tool} as {name}: {}", answer.body);
    let body = answer.json();
    assert_eq!(body["ready"], json!(true), "{tool}: {body}");
    eprintln!("{tool} ({name}) ready through berth after {:.1?}", started.elapsed());
    let url = body["url"].as_str().unwrap().to_owned();
    let path = body["path"].as_str().unwrap().to_owned();
    let host = url.strip_prefix("http://").and_then(|rest| rest.split('/').next()).unwrap().to_owned();
    App { tool, mode, name, url, path, host }
}

/// The page's text once it contains every one of `needles`.
async fn wait_text(client: &Client, needles: &[&str]) -> String {
    let deadline = Instant::now() + PAGE_WAIT;
    let mut last = String::new();
    while Instant::now() < deadline {
        last = support::text(client).await;
        if needles.iter().all(|n| last.contains(n)) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let url = client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
    panic!("the page at {url} never said all of {needles:?}; it says:\n{last}");
}

/// The element matching CSS `selector`, waiting for it to appear.
async fn element(client: &Client, selector: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(PAGE_WAIT)
        .for_element(Locator::Css(selector))
        .await
        .unwrap_or_else(|e| panic!("no {selector} on the page: {e}"))
}

/// Keys that replace an input's text with `text` (select all, type).
fn replace_with(text: &str) -> String {
    format!("{}a{}{text}", char::from(Key::Control), char::from(Key::Null))
}

/// JupyterLab: the lab page's configuration names the public path; a
/// kernel made through the REST API (with Jupyter's XSRF handling)
/// computes `1+1` over its websocket channels.
async fn jupyter_kernel(berth: SocketAddr, app: &App) {
    let lab_path = format!("{}lab", app.path);
    let lab = app.req("GET", &lab_path).send(berth).await;
    assert_eq!(lab.status, 200, "GET {lab_path}: {}", lab.body);
    let config = page_config(&lab);
    assert_eq!(config["baseUrl"], json!(app.path), "JupyterLab's base URL");
    let xsrf =
        lab.set_cookie("_xsrf").unwrap_or_else(|| panic!("no _xsrf cookie from the lab page: {:?}", lab.headers));
    let cookie = format!("_xsrf={xsrf}");

    // A POST without the token is refused: Jupyter's XSRF check is on.
    let kernels = format!("{}api/kernels", app.path);
    let refused = app.req("POST", &kernels).json(&json!({"name": "python3"})).send(berth).await;
    assert_eq!(refused.status, 403, "a kernel without the XSRF token: {}", refused.body);
    let created = app
        .req("POST", &kernels)
        .header("cookie", &cookie)
        .header("x-xsrftoken", &xsrf)
        .header("origin", &app.origin())
        .json(&json!({"name": "python3"}))
        .send_within(berth, PAGE_WAIT)
        .await;
    assert_eq!(created.status, 201, "POST {kernels}: {}", created.body);
    let id = created.json()["id"].as_str().unwrap().to_owned();

    let session = format!("berth-real-tools-{}-{}", std::process::id(), app.name);
    let url = format!("ws://{}{}api/kernels/{id}/channels?session_id={session}", app.host, app.path);
    let mut request = url.as_str().into_client_request().unwrap();
    request.headers_mut().insert("origin", app.origin().parse().unwrap());
    request.headers_mut().insert("cookie", cookie.parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(berth).await.unwrap();
    let (mut ws, response) = tokio::time::timeout(PAGE_WAIT, tokio_tungstenite::client_async(request, tcp))
        .await
        .unwrap_or_else(|_| panic!("no websocket handshake at {url}"))
        .unwrap_or_else(|e| panic!("websocket to {url}: {e}"));
    assert_eq!(response.status(), 101);

    // As JupyterLab does: ask for the kernel's info until it answers
    // (the kernel may still be starting), then execute.
    let deadline = Instant::now() + PAGE_WAIT;
    let mut asked = 0;
    let mut info_sent = Instant::now() - Duration::from_secs(10);
    let execute_id = format!("{session}-execute");
    let mut executed = false;
    let mut seen = Vec::new();
    let result = loop {
        assert!(Instant::now() < deadline, "no execute_result from the kernel; messages seen: {seen:?}");
        if !executed && info_sent.elapsed() > Duration::from_secs(3) {
            asked += 1;
            let request =
                kernel_message(&session, &format!("{session}-info-{asked}"), "kernel_info_request", json!({}));
            ws.send(Message::text(request.to_string())).await.unwrap();
            info_sent = Instant::now();
        }
        let frame = match tokio::time::timeout(Duration::from_millis(500), ws.next()).await {
            Err(_) => continue,
            Ok(None) => panic!("the kernel's websocket closed; messages seen: {seen:?}"),
            Ok(Some(frame)) => frame.unwrap(),
        };
        let Message::Text(text) = frame else { continue };
        let message: Value = serde_json::from_str(text.as_str()).unwrap();
        let kind = message["msg_type"].as_str().or_else(|| message["header"]["msg_type"].as_str()).unwrap_or("");
        seen.push(kind.to_owned());
        let parent = message["parent_header"]["msg_id"].as_str().unwrap_or("");
        match kind {
            "kernel_info_reply" if !executed => {
                let content = json!({"code": "1+1", "silent": false, "store_history": false, "user_expressions": {},
                                     "allow_stdin": false, "stop_on_error": true});
                let request = kernel_message(&session, &execute_id, "execute_request", content);
                ws.send(Message::text(request.to_string())).await.unwrap();
                executed = true;
            }
            "execute_result" if parent == execute_id => break message,
            "error" if parent == execute_id => panic!("the kernel failed on 1+1: {message}"),
            _ => {}
        }
    };
    assert_eq!(result["content"]["data"]["text/plain"], json!("2"), "{result}");
    let _ = ws.close(None).await;

    let kernel = format!("{kernels}/{id}");
    let deleted = app
        .req("DELETE", &kernel)
        .header("cookie", &cookie)
        .header("x-xsrftoken", &xsrf)
        .send_within(berth, PAGE_WAIT)
        .await;
    assert_eq!(deleted.status, 204, "DELETE {kernel}: {}", deleted.body);
    eprintln!("{}: kernel {id} computed 1+1 = 2 over {url}", app.name);
}

/// JupyterLab's page configuration (`<script id="jupyter-config-data">`).
fn page_config(lab: &Answer) -> Value {
    let start = lab.body.find("id=\"jupyter-config-data\"").expect("JupyterLab's page configuration");
    let json_start = start + lab.body[start..].find('>').unwrap() + 1;
    let json_end = json_start + lab.body[json_start..].find("</script>").unwrap();
    serde_json::from_str(&lab.body[json_start..json_end]).unwrap()
}

/// A Jupyter message for the shell channel.
fn kernel_message(session: &str, id: &str, kind: &str, content: Value) -> Value {
    json!({
        "header": {"msg_id": id, "session": session, "username": "berth-test", "msg_type": kind,
                   "version": "5.3", "date": "2025-01-01T00:00:00.000000Z"},
        "parent_header": {}, "metadata": {}, "content": content, "channel": "shell", "buffers": [],
    })
}

/// JupyterLab's page renders in Chromium (its scripts, styles and
/// extensions all load through berth) with its launcher.
async fn jupyter_page(client: &Client, app: &App) {
    client.goto(&format!("{}lab", app.url)).await.unwrap();
    wait_text(client, &["Python 3 (ipykernel)"]).await;
    screenshot(client, app).await;
}

/// Streamlit: the script's text renders; a name typed in and a slider
/// moved come back from the server changed.
async fn streamlit(client: &Client, app: &App) {
    client.goto(&app.url).await.unwrap();
    wait_text(client, &["berth streamlit demo", "Hello, world!", "Count squared is 9"]).await;
    let input = element(client, r#"input[aria-label="Your name"]"#).await;
    input.send_keys(&format!("{}{}", replace_with("berth"), char::from(Key::Enter))).await.unwrap();
    wait_text(client, &["Hello, berth!"]).await;
    // The thumb: an <input type="range"> in Streamlit 1.5x and later
    // (react-aria), a div with role slider before (baseweb).
    let slider =
        element(client, r#"[data-testid="stSlider"] input[type="range"], [data-testid="stSlider"] [role="slider"]"#)
            .await;
    slider.send_keys(&char::from(Key::Right).to_string()).await.unwrap();
    wait_text(client, &["Count squared is 16"]).await;
    screenshot(client, app).await;
}

/// Dash: the layout renders and its callback answers what is typed.
async fn dash(client: &Client, app: &App) {
    client.goto(&app.url).await.unwrap();
    wait_text(client, &["berth dash demo", "Hello, world!"]).await;
    let input = element(client, "input#name").await;
    input.send_keys(&replace_with("berth")).await.unwrap();
    wait_text(client, &["Hello, berth!"]).await;
    screenshot(client, app).await;
}

/// Shiny: the page renders, and a moved slider's text comes back over
/// Shiny's websocket.
async fn shiny(client: &Client, app: &App) {
    client.goto(&app.url).await.unwrap();
    wait_text(client, &["berth shiny demo", "The square of 7 is 49"]).await;
    let socket = client
        .execute(
            "const s = window.Shiny && Shiny.shinyapp && Shiny.shinyapp.$socket; \
             return s ? [String(s.url), s.readyState] : null;",
            Vec::new(),
        )
        .await
        .unwrap();
    let expected = format!("ws://{}{}websocket/", app.host, app.path);
    assert_eq!(socket, json!([expected, 1]), "Shiny's websocket (url, readyState OPEN)");
    client.execute("$('#n').data('ionRangeSlider').update({from: 12});", Vec::new()).await.unwrap();
    wait_text(client, &["The square of 12 is 144"]).await;
    screenshot(client, app).await;
}

/// Where screenshots go.
fn shots_dir() -> PathBuf {
    berth_testkit::workspace_root().join("target/real-tools-test")
}

/// A screenshot of the app's page, `<routing>-<tool>.png`.
async fn screenshot(client: &Client, app: &App) {
    if let Ok(png) = client.screenshot().await {
        let _ = std::fs::write(shots_dir().join(format!("{}-{}.png", app.mode.as_str(), app.tool)), png);
    }
}

/// Everything that runs against the launched apps.
async fn check_apps(client: Client, berth: SocketAddr, apps: Vec<App>) {
    let app = |tool: &str| apps.iter().find(|a| a.tool == tool).unwrap();
    jupyter_kernel(berth, app("jupyterlab")).await;
    jupyter_page(&client, app("jupyterlab")).await;
    streamlit(&client, app("streamlit")).await;
    dash(&client, app("dash")).await;
    shiny(&client, app("shiny")).await;
}

/// What helps after a failure: a screenshot, the page, the server's and
/// the apps' output.
async fn diagnose(client: &Client, berth: &Berth, apps: &[String], mode: Mode) {
    if let Ok(Ok(png)) = tokio::time::timeout(Duration::from_secs(20), client.screenshot()).await {
        let path = shots_dir().join(format!("failure-{}.png", mode.as_str()));
        if std::fs::write(&path, png).is_ok() {
            eprintln!("failure screenshot: {}", path.display());
        }
    }
    if let Ok(Ok(url)) = tokio::time::timeout(Duration::from_secs(10), client.current_url()).await {
        eprintln!("page at failure: {url}");
    }
    if let Ok(Ok(source)) = tokio::time::timeout(Duration::from_secs(10), client.source()).await {
        eprintln!("---- page source ----\n{source}\n---- end of page source ----");
    }
    for name in apps {
        let path = format!("/api/v1/containers/{name}/logs");
        let logs = Req::get(&path).header("authorization", &bearer()).send(berth.addr).await;
        eprintln!("---- logs of {name} ({}) ----\n{}", logs.status, logs.body);
    }
    eprintln!("---- berth serve output ----\n{}---- end ----", berth.output());
}

/// The engine as the server sees it: only containers under its root label.
async fn server_engine(root_label: &str) -> DockerManager {
    let config = berth_testkit::docker_config().unwrap().labels(LabelScheme::new(root_label.to_owned()));
    DockerManager::connect(config).await.unwrap()
}

async fn real_tools_behind_berth(mode: Mode) {
    let test = format!("real_tools_by_{}", mode.as_str());
    let Some(docker) = berth_testkit::docker_or_skip(&test).await else { return };
    let dir = TempDir::new(&format!("berth-real-tools-{}", mode.as_str()));
    // Dropped before `dir`: removes whatever the server launched, whatever happens.
    let run = TestRun::start(&docker).await;
    std::fs::create_dir_all(shots_dir()).unwrap();
    for old in
        TOOLS.iter().map(|t| format!("{}-{t}.png", mode.as_str())).chain([format!("failure-{}.png", mode.as_str())])
    {
        let _ = std::fs::remove_file(shots_dir().join(old));
    }
    write_registry(&dir.0, &docker, &run).await;
    let port = free_port_pair();
    let root_label = format!("berth-real-{}-{}", std::process::id(), mode.as_str());
    write_config(&dir.0, port, &root_label, mode, &run);
    let berth = Berth::start(&dir.0, port).await;
    // Chromium resolves every container host to loopback, and calls no
    // one else. Started last: from here on, a failure closes its session
    // (and so Chromium) before it panics.
    let browser_args = [
        "--host-resolver-rules=MAP *.docker.localhost 127.0.0.1",
        "--disable-background-networking",
        "--disable-component-update",
    ];
    let Some(browser) = Browser::start_with(&test, &dir.0, &browser_args).await else { return };
    let owner = format!("u{}", run.id());
    let names: Vec<String> = TOOLS.iter().map(|t| format!("{t}-{}", run.id())).collect();

    let started = Instant::now();
    // Launches and checks run as tasks of their own, so that a failed
    // assertion still leaves the browser here to take a screenshot with
    // (and its session to close).
    let launches = tokio::spawn({
        let (addr, owner, names) = (berth.addr, owner.clone(), names.clone());
        async move {
            let launches = TOOLS.iter().zip(names).map(|(tool, name)| launch(addr, mode, tool, name, &owner));
            let apps = futures_util::future::join_all(launches).await;
            for app in &apps {
                let expected = match mode {
                    Mode::Path => (format!("/docker/{}/", app.name), format!("http://{addr}/docker/{}/", app.name)),
                    Mode::Host => ("/".to_owned(), format!("http://{}.{HOST_SUFFIX}:{}/", app.name, addr.port())),
                };
                assert_eq!((app.path.clone(), app.url.clone()), expected, "where {} is published", app.tool);
            }
            apps
        }
    })
    .await;
    let apps = match launches {
        Ok(apps) => apps,
        Err(e) => {
            diagnose(&browser.client, &berth, &names, mode).await;
            let _ = tokio::time::timeout(Duration::from_secs(10), browser.client.clone().close()).await;
            std::panic::resume_unwind(e.into_panic());
        }
    };
    eprintln!("{test}: all four ready after {:.1?}", started.elapsed());
    let checked = tokio::spawn(check_apps(browser.client.clone(), berth.addr, apps.clone())).await;
    if let Err(e) = checked {
        diagnose(&browser.client, &berth, &names, mode).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), browser.client.clone().close()).await;
        std::panic::resume_unwind(e.into_panic());
    }
    browser.client.clone().close().await.unwrap();
    eprintln!("{test}: launched and checked in {:.1?}", started.elapsed());

    // Removal through the API: the containers, then the user's volume,
    // which outlives them.
    for app in &apps {
        let path = format!("/api/v1/containers/{}", app.name);
        let removed = Req::method("DELETE", &path).header("authorization", &bearer()).send(berth.addr).await;
        assert!(matches!(removed.status, 200 | 204), "DELETE {path}: {} {}", removed.status, removed.body);
    }
    let volume = format!("jupyter-home-{owner}");
    let listed = Req::get("/api/v1/volumes").header("authorization", &bearer()).send(berth.addr).await.json();
    let entry = listed["volumes"].as_array().unwrap().iter().find(|v| v["name"] == json!(volume)).cloned();
    let entry = entry.unwrap_or_else(|| panic!("{volume} is not listed: {listed}"));
    assert_eq!(entry["owner"], json!(owner), "{entry}");
    let path = format!("/api/v1/volumes/{volume}");
    let removed = Req::method("DELETE", &path).header("authorization", &bearer()).send(berth.addr).await;
    assert!(matches!(removed.status, 200 | 204), "DELETE {path}: {} {}", removed.status, removed.body);
    let engine = server_engine(&root_label).await;
    let left: Vec<String> = engine.list(&ListFilter::all()).await.unwrap().into_iter().map(|c| c.name).collect();
    assert!(left.is_empty(), "containers left: {left:?}");
    assert!(engine.persistent_volumes().await.unwrap().is_empty(), "persistent volumes left");
    drop(berth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tools_by_path() {
    real_tools_behind_berth(Mode::Path).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_tools_by_hostname() {
    real_tools_behind_berth(Mode::Host).await;
}

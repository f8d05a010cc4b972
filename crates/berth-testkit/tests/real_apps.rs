//! The real apps' images run as their upstream images do: each is launched
//! with `DockerManager::launch` (ports published on 127.0.0.1) and answers
//! on its port the way the upstream app answers.
//!
//! The images are built on first use (`cargo xtask test` builds them
//! before the tests, as one cached step).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_manager::docker::DockerManager;
use berth_manager::{ContainerManager, ContainerSpec};
use berth_testkit::{RealApp, TestRun};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// How long an app may take to answer after its container started (a
/// notebook server on a loaded two-core machine needs a while).
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// One answer: status, headers, body.
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

/// One request over a fresh connection to a published loopback port.
async fn request(addr: SocketAddr, method: &str, path: &str, json: Option<&str>) -> Result<Answer, String> {
    assert!(addr.ip().is_loopback(), "tests only talk to loopback, not {addr}");
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let mut req = http::Request::builder().method(method).uri(path).header(http::header::HOST, addr.to_string());
        if json.is_some() {
            req = req.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = req.body(Full::new(Bytes::from(json.unwrap_or_default().to_owned()))).map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
    };
    tokio::time::timeout(Duration::from_secs(20), attempt).await.map_err(|_| format!("{method} {path} timed out"))?
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    match request(addr, "GET", path, None).await {
        Ok(answer) => answer,
        Err(e) => panic!("GET {path} on {addr}: {e}"),
    }
}

/// Builds (or finds) `app`'s image, launches it under `run`, and waits
/// until its ready path answers 2xx or 3xx; returns the published address.
async fn launch_ready(docker: &DockerManager, run: &TestRun, app: RealApp) -> SocketAddr {
    let image = berth_testkit::real_app_image(docker, app).await.unwrap_or_else(|e| panic!("image of {app}: {e}"));
    let mut spec = ContainerSpec::new(&image, run.name(app.name()), 512).port(app.port()).cpus(1.0);
    spec.labels.extend(run.labels());
    docker.launch(&spec).await.unwrap_or_else(|e| panic!("launching {image}: {e}"));
    let endpoint = docker.endpoint(&spec.name).await.expect("endpoint");
    let started = Instant::now();
    loop {
        let last = match request(endpoint.addr, "GET", app.ready_path(), None).await {
            Ok(a) if (200..400).contains(&a.status) => {
                eprintln!("{app} answered {} on {} after {:.1?}", a.status, app.ready_path(), started.elapsed());
                return endpoint.addr;
            }
            Ok(a) => format!("status {}", a.status),
            Err(e) => e,
        };
        if started.elapsed() > READY_TIMEOUT {
            let logs = docker.logs(&spec.name, Default::default()).await.unwrap_or_default();
            let tail: Vec<&str> = logs.iter().rev().take(30).map(|l| l.line.as_str()).collect();
            panic!(
                "{app} did not answer within {READY_TIMEOUT:?} (last: {last}); log tail (newest first):\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn jupyterlab_redirects_to_lab_and_serves_its_api() {
    let Some(docker) = berth_testkit::docker_or_skip("jupyterlab_redirects_to_lab_and_serves_its_api").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let addr = launch_ready(&docker, &run, RealApp::JupyterLab).await;
    let root = get(addr, "/").await;
    assert_eq!(root.status, 302, "GET / of JupyterLab: {}", root.body);
    assert!(root.header("location").starts_with("/lab"), "location {:?}", root.header("location"));
    // A token is required, as upstream: /lab sends a browser to log in.
    let lab = get(addr, "/lab").await;
    assert_eq!(lab.status, 302, "GET /lab without a token");
    assert!(lab.header("location").starts_with("/login"), "location {:?}", lab.header("location"));
    let api = get(addr, "/api").await;
    assert_eq!(api.status, 200);
    let json: serde_json::Value = serde_json::from_str(&api.body).expect("/api answers JSON");
    let version = json["version"].as_str().unwrap_or_default();
    assert!(version.starts_with('2'), "jupyter_server 2.x, got {json}");
    let logs = docker.logs(&run.name("jupyterlab"), Default::default()).await.expect("logs");
    assert!(logs.iter().any(|l| l.line.contains("/lab?token=")), "the log shows the generated token");
}

#[tokio::test]
async fn streamlit_reports_healthy_and_serves_its_page() {
    let Some(docker) = berth_testkit::docker_or_skip("streamlit_reports_healthy_and_serves_its_page").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let addr = launch_ready(&docker, &run, RealApp::Streamlit).await;
    let health = get(addr, "/_stcore/health").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>Streamlit</title>"), "{}", page.body);
}

#[tokio::test]
async fn dash_serves_its_layout_and_runs_its_callback() {
    let Some(docker) = berth_testkit::docker_or_skip("dash_serves_its_layout_and_runs_its_callback").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let addr = launch_ready(&docker, &run, RealApp::Dash).await;
    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>berth dash demo</title>"), "{}", page.body);
    assert_eq!(dash_config(&page.body)["requests_pathname_prefix"], "/", "no prefix without the environment");
    let layout = get(addr, "/_dash-layout").await;
    assert_eq!(layout.status, 200);
    let json: serde_json::Value = serde_json::from_str(&layout.body).expect("layout JSON");
    assert_eq!(json["props"]["children"][0]["props"]["children"], "berth dash demo", "{json}");
    // The callback, called as the page's script calls it.
    let update = r#"{"output":"greeting.children","outputs":{"id":"greeting","property":"children"},
        "inputs":[{"id":"name","property":"value","value":"berth"}],"changedPropIds":["name.value"]}"#;
    let answer = request(addr, "POST", "/_dash-update-component", Some(update)).await.expect("callback");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("Hello, berth!"), "{}", answer.body);
}

#[tokio::test]
async fn dash_takes_its_prefix_from_the_environment() {
    let Some(docker) = berth_testkit::docker_or_skip("dash_takes_its_prefix_from_the_environment").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::real_app_image(&docker, RealApp::Dash).await.expect("dash image");
    let mut spec = ContainerSpec::new(&image, run.name("dashprefix"), 512)
        .port(RealApp::Dash.port())
        .cpus(1.0)
        .env("DASH_URL_BASE_PATHNAME", "/docker/viz/");
    spec.labels.extend(run.labels());
    docker.launch(&spec).await.expect("launch");
    let addr = docker.endpoint(&spec.name).await.expect("endpoint").addr;
    let deadline = Instant::now() + READY_TIMEOUT;
    let page = loop {
        match request(addr, "GET", "/docker/viz/", None).await {
            Ok(a) if a.status == 200 => break a,
            other if Instant::now() > deadline => panic!("no 200 on /docker/viz/: {:?}", other.map(|a| a.status)),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let config = dash_config(&page.body);
    assert_eq!(config["requests_pathname_prefix"], "/docker/viz/", "{config}");
    assert_eq!(config["url_base_pathname"], "/docker/viz/", "{config}");
    assert_eq!(get(addr, "/docker/viz/_dash-layout").await.status, 200);
}

/// The page's `_dash-config` JSON (where the browser learns its paths).
fn dash_config(page: &str) -> serde_json::Value {
    let start = r#"<script id="_dash-config" type="application/json">"#;
    let json = page.split_once(start).and_then(|(_, rest)| rest.split_once("</script>")).map(|(json, _)| json);
    serde_json::from_str(json.unwrap_or_else(|| panic!("no _dash-config in {page}"))).expect("_dash-config JSON")
}

#[tokio::test]
async fn shiny_serves_its_app() {
    let Some(docker) = berth_testkit::docker_or_skip("shiny_serves_its_app").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let addr = launch_ready(&docker, &run, RealApp::Shiny).await;
    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("berth shiny demo"), "{}", page.body);
    assert!(page.body.contains("id=\"square\"") && page.body.contains("shiny-text-output"), "{}", page.body);
    assert!(page.body.contains("js-range-slider"), "the slider input: {}", page.body);
}

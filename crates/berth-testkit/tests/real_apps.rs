//! The real apps' images run as their upstream images do: each is started
//! with testcontainers (`GenericImage`, its port published on 127.0.0.1)
//! and answers on its port the way the upstream app answers.
//!
//! berth-testkit makes the images (`real_app_image`; built on first use,
//! and `cargo xtask test` builds them before the tests as one cached step):
//! their base layer is a root filesystem imported through the engine's
//! API, which testcontainers cannot do. Every container carries the
//! `TestRun`'s label as well, so the run's sweep removes what
//! testcontainers' own removal on drop misses.
//!
//! Readiness is testcontainers' health-check wait, the probe run by the
//! engine inside the container. Its HTTP wait is not used: it requests
//! `get_host()`, which for tests running inside a container (`/.dockerenv`)
//! is the bridge network's gateway whenever the engine names one (usually
//! 172.17.0.1, where these tests must not connect and where a port
//! published on 127.0.0.1 does not answer), and it cannot be pinned to
//! 127.0.0.1.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use berth_manager::docker::DockerManager;
use berth_testkit::{RealApp, TestRun};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use testcontainers::bollard::models::PortBinding;
use testcontainers::core::logs::LogFrame;
use testcontainers::core::wait::HealthWaitStrategy;
use testcontainers::core::{Healthcheck, IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// How long an app may take to answer after its container started (a
/// notebook server on a loaded two-core machine needs a while).
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Log lines kept per container for failure messages.
const LOG_TAIL: usize = 40;

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

/// The last [`LOG_TAIL`] lines a container wrote (stdout and stderr).
type LogTail = Arc<Mutex<VecDeque<String>>>;

fn keep(tail: &LogTail, frame: &LogFrame) {
    let text = String::from_utf8_lossy(frame.bytes());
    let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
    for line in text.lines() {
        if tail.len() == LOG_TAIL {
            tail.pop_front();
        }
        tail.push_back(line.to_owned());
    }
}

fn show(tail: &LogTail) -> String {
    let tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
    tail.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
}

/// A real app's container, started and (when dropped) removed by
/// testcontainers.
struct App {
    app: RealApp,
    container: ContainerAsync<GenericImage>,
    /// The published port, on 127.0.0.1.
    addr: SocketAddr,
    tail: LogTail,
}

impl App {
    /// Builds (or finds) `app`'s image and runs it under `run` with `env`,
    /// its port published on 127.0.0.1; returns once `ready_path` answers
    /// 2xx or 3xx.
    async fn start(
        docker: &DockerManager,
        run: &TestRun,
        app: RealApp,
        name: &str,
        ready_path: &str,
        env: &[(&str, &str)],
    ) -> App {
        let image = berth_testkit::real_app_image(docker, app).await.unwrap_or_else(|e| panic!("image of {app}: {e}"));
        // A reference without a registry port: `repo:tag`. testcontainers
        // pulls only when creating the container answers 404, so a tag the
        // engine has is never pulled.
        let (repo, tag) = image.rsplit_once(':').unwrap_or_else(|| panic!("{image} has no tag"));
        let port = app.port();
        let tail = LogTail::default();
        let sink = tail.clone();
        let mut container = GenericImage::new(repo, tag)
            .with_exposed_port(port.tcp())
            .with_wait_for(WaitFor::Healthcheck(
                HealthWaitStrategy::new().with_poll_interval(Duration::from_millis(250)),
            ))
            .with_container_name(run.name(name))
            .with_labels(run.labels())
            .with_health_check(probe(port, ready_path))
            .with_startup_timeout(READY_TIMEOUT)
            .with_log_consumer(move |frame: &LogFrame| keep(&sink, frame))
            .with_host_config_modifier(move |host| {
                // testcontainers publishes every exposed port on all
                // interfaces; berth's tests publish on loopback only. The
                // limits are those berth's launches of these apps use.
                host.publish_all_ports = Some(false);
                let binding =
                    PortBinding { host_ip: Some(Ipv4Addr::LOCALHOST.to_string()), host_port: Some(String::new()) };
                host.port_bindings = Some(HashMap::from([(format!("{port}/tcp"), Some(vec![binding]))]));
                host.nano_cpus = Some(1_000_000_000);
                host.memory_reservation = Some(512 << 20);
            });
        for (key, value) in env {
            container = container.with_env_var(*key, *value);
        }
        let started = Instant::now();
        let container = match container.start().await {
            Ok(container) => container,
            Err(e) => panic!(
                "{app} did not answer 2xx or 3xx on {ready_path} within {READY_TIMEOUT:?}: {e}; log tail:\n{}",
                show(&tail)
            ),
        };
        let host_port = container.get_host_port_ipv4(port).await.unwrap_or_else(|e| panic!("{app}'s port: {e}"));
        eprintln!("{app} answered on {ready_path} after {:.1?}", started.elapsed());
        App { app, container, addr: SocketAddr::from((Ipv4Addr::LOCALHOST, host_port)), tail }
    }

    /// Everything the container wrote so far, stdout and stderr.
    async fn logs(&self) -> String {
        let stdout = self.container.stdout_to_vec().await.expect("stdout");
        let stderr = self.container.stderr_to_vec().await.expect("stderr");
        format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr))
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{} log tail:\n{}", self.app, show(&self.tail));
        }
    }
}

/// A health check the engine runs inside the container: bash (every image
/// has it; curl is not in Shiny's) asks `path` on the app's port over the
/// container's own loopback and passes on 2xx or 3xx. Failures during the
/// start period do not count, so the wait ends at the first answer or the
/// startup timeout.
fn probe(port: u16, path: &str) -> Healthcheck {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port} || exit 1
printf 'GET {path} HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\nConnection: close\\r\\n\\r\\n' >&3
read -r -t 10 _ status _ <&3
case \"$status\" in [23][0-9][0-9]*) exit 0 ;; *) exit 1 ;; esac"
    );
    Healthcheck::cmd(["bash", "-c", script.as_str()])
        .with_interval(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(15))
        .with_start_period(READY_TIMEOUT)
        .with_retries(3)
}

/// Starts `app` as its upstream image runs it, ready on its ready path.
async fn start_ready(docker: &DockerManager, run: &TestRun, app: RealApp) -> App {
    App::start(docker, run, app, app.name(), app.ready_path(), &[]).await
}

#[tokio::test]
async fn jupyterlab_redirects_to_lab_and_serves_its_api() {
    let Some(docker) = berth_testkit::docker_or_skip("jupyterlab_redirects_to_lab_and_serves_its_api").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let app = start_ready(&docker, &run, RealApp::JupyterLab).await;
    let root = get(app.addr, "/").await;
    assert_eq!(root.status, 302, "GET / of JupyterLab: {}", root.body);
    assert!(root.header("location").starts_with("/lab"), "location {:?}", root.header("location"));
    // A token is required, as upstream: /lab sends a browser to log in.
    let lab = get(app.addr, "/lab").await;
    assert_eq!(lab.status, 302, "GET /lab without a token");
    assert!(lab.header("location").starts_with("/login"), "location {:?}", lab.header("location"));
    let api = get(app.addr, "/api").await;
    assert_eq!(api.status, 200);
    let json: serde_json::Value = serde_json::from_str(&api.body).expect("/api answers JSON");
    let version = json["version"].as_str().unwrap_or_default();
    assert!(version.starts_with('2'), "jupyter_server 2.x, got {json}");
    assert!(app.logs().await.contains("/lab?token="), "the log shows the generated token");
}

#[tokio::test]
async fn streamlit_reports_healthy_and_serves_its_page() {
    let Some(docker) = berth_testkit::docker_or_skip("streamlit_reports_healthy_and_serves_its_page").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let app = start_ready(&docker, &run, RealApp::Streamlit).await;
    let health = get(app.addr, "/_stcore/health").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    let page = get(app.addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>Streamlit</title>"), "{}", page.body);
}

#[tokio::test]
async fn dash_serves_its_layout_and_runs_its_callback() {
    let Some(docker) = berth_testkit::docker_or_skip("dash_serves_its_layout_and_runs_its_callback").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let app = start_ready(&docker, &run, RealApp::Dash).await;
    let page = get(app.addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>berth dash demo</title>"), "{}", page.body);
    assert_eq!(dash_config(&page.body)["requests_pathname_prefix"], "/", "no prefix without the environment");
    let layout = get(app.addr, "/_dash-layout").await;
    assert_eq!(layout.status, 200);
    let json: serde_json::Value = serde_json::from_str(&layout.body).expect("layout JSON");
    assert_eq!(json["props"]["children"][0]["props"]["children"], "berth dash demo", "{json}");
    // The callback, called as the page's script calls it.
    let update = r#"{"output":"greeting.children","outputs":{"id":"greeting","property":"children"},
        "inputs":[{"id":"name","property":"value","value":"berth"}],"changedPropIds":["name.value"]}"#;
    let answer = request(app.addr, "POST", "/_dash-update-component", Some(update)).await.expect("callback");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.contains("Hello, berth!"), "{}", answer.body);
}

#[tokio::test]
async fn dash_takes_its_prefix_from_the_environment() {
    let Some(docker) = berth_testkit::docker_or_skip("dash_takes_its_prefix_from_the_environment").await else {
        return;
    };
    let run = TestRun::start(&docker).await;
    let env = [("DASH_URL_BASE_PATHNAME", "/docker/viz/")];
    let app = App::start(&docker, &run, RealApp::Dash, "dashprefix", "/docker/viz/", &env).await;
    let page = get(app.addr, "/docker/viz/").await;
    assert_eq!(page.status, 200, "GET /docker/viz/: {}", page.body);
    let config = dash_config(&page.body);
    assert_eq!(config["requests_pathname_prefix"], "/docker/viz/", "{config}");
    assert_eq!(config["url_base_pathname"], "/docker/viz/", "{config}");
    assert_eq!(get(app.addr, "/docker/viz/_dash-layout").await.status, 200);
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
    let app = start_ready(&docker, &run, RealApp::Shiny).await;
    let page = get(app.addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("berth shiny demo"), "{}", page.body);
    assert!(page.body.contains("id=\"square\"") && page.body.contains("shiny-text-output"), "{}", page.body);
    assert!(page.body.contains("js-range-slider"), "the slider input: {}", page.body);
}

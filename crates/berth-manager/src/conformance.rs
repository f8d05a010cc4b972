//! The contract every [`ContainerManager`] backend must keep, as public
//! async checks over `&dyn ContainerManager`.
//!
//! Each check launches containers of a *tool image* that follows the test
//! tool contract (the mock's [`default_tool`](crate::mock::default_tool)
//! and the `berth-testtool` image both do): `GET /` answers 503 during
//! `BERTH_TOOL_STARTUP_DELAY_MS`, then 200; `GET /input` returns the input
//! document as read; `GET /env/<NAME>`; `GET /say/<text>` prints text;
//! `GET /exit/<code>` exits.
//!
//! Every backend's tests run the same checks through
//! [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! berth_manager::conformance_tests!(setup);
//! async fn setup() -> Option<(std::sync::Arc<dyn ContainerManager>, Fixture)> { ... }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::json;

use crate::error::Error;
use crate::manager::{ContainerManager, ContainerManagerExt};
use crate::spec::{ContainerSpec, DEFAULT_INPUT_PATH, MAX_ENV_INPUT_BYTES};
use crate::types::{ContainerState, EventKind, ListFilter, LogOptions};

/// What a backend's test hands the checks.
pub struct Fixture {
    /// Image of a tool that follows the test tool contract.
    pub image: String,
    /// A manager on the same engine with a different root label: its
    /// containers are foreign to the manager under test.
    pub foreign: Arc<dyn ContainerManager>,
    /// Prefix for container names, unique per test run.
    pub name_prefix: String,
    /// Labels put on every container a check launches (e.g. a per-run label
    /// a sweep can find).
    pub labels: BTreeMap<String, String>,
    /// Host name under which a container reaches this test process (for
    /// the URL input mode): `127.0.0.1` for in-process mocks,
    /// `host.docker.internal` for Docker.
    pub host_from_container: String,
    /// Longest wait for a container to answer 200 on `/`.
    pub ready_timeout: Duration,
    /// The tool's program as its image runs it (its `CMD`), for checks
    /// that replace the command: `/berth-testtool` for Docker's test tool,
    /// [`MOCK_TOOL_PROGRAM`](crate::mock::MOCK_TOOL_PROGRAM) for the mock.
    pub program: String,
    /// Anything the setup needs kept alive until the check ends (e.g. a
    /// guard that removes the run's containers on drop).
    pub guard: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("image", &self.image)
            .field("name_prefix", &self.name_prefix)
            .finish_non_exhaustive()
    }
}

/// A failed check: what was expected and what happened.
#[derive(Debug, thiserror::Error)]
#[error("conformance check {check} failed: {message}")]
pub struct CheckFailure {
    /// Name of the check.
    pub check: &'static str,
    /// What went wrong.
    pub message: String,
}

/// Result of one check.
pub type CheckResult = std::result::Result<(), CheckFailure>;

macro_rules! ensure {
    ($check:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(CheckFailure { check: $check, message: format!($($fmt)+) });
        }
    };
}

/// Turns any error into a failure of `check`.
trait Ctx<T> {
    fn ctx(self, check: &'static str, what: &str) -> std::result::Result<T, CheckFailure>;
}

impl<T, E: std::fmt::Display> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, check: &'static str, what: &str) -> std::result::Result<T, CheckFailure> {
        self.map_err(|e| CheckFailure { check, message: format!("{what}: {e}") })
    }
}

impl Fixture {
    fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name_prefix)
    }

    fn spec(&self, suffix: &str) -> ContainerSpec {
        let mut spec = ContainerSpec::new(self.image.clone(), self.name(suffix), 32);
        spec.labels = self.labels.clone();
        spec
    }
}

/// Runs `body`, then removes the named containers whatever happened.
async fn with_cleanup<F>(m: &dyn ContainerManager, names: &[String], body: F) -> CheckResult
where
    F: std::future::Future<Output = CheckResult>,
{
    let result = body.await;
    for name in names {
        if let Err(e) = m.remove_if_exists(name).await {
            tracing::warn!(%name, error = %e, "conformance clean-up failed");
        }
    }
    result
}

/// One HTTP GET; `(status, body)`.
///
/// # Errors
///
/// A message for connection or protocol failures, or after 10 s.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::result::Result<(u16, String), String> {
    http_request(addr, "GET", path, Bytes::new()).await
}

/// One HTTP request with a body; `(status, body)`.
///
/// # Errors
///
/// A message for connection or protocol failures, or after 10 s.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Bytes,
) -> std::result::Result<(u16, String), String> {
    let attempt = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake with {addr}: {e}"))?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, addr.to_string())
            .body(http_body_util::Full::new(body))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .map_err(|_| format!("{method} {path} on {addr} timed out"))?
}

/// Polls `GET /` on the container until it answers 200; returns the
/// statuses seen before (so callers can check a warm-up happened).
async fn wait_ready(
    m: &dyn ContainerManager,
    fx: &Fixture,
    check: &'static str,
    name: &str,
) -> std::result::Result<(SocketAddr, Vec<u16>), CheckFailure> {
    let deadline = Instant::now() + fx.ready_timeout;
    let mut seen = Vec::new();
    loop {
        let last = match m.endpoint(name).await {
            Ok(ep) => match http_get(ep.addr, "/").await {
                Ok((200, _)) => return Ok((ep.addr, seen)),
                Ok((status, _)) => {
                    seen.push(status);
                    format!("status {status}")
                }
                Err(e) => e,
            },
            Err(e) => e.to_string(),
        };
        ensure!(check, Instant::now() < deadline, "{name} not ready within {:?}: {last}", fx.ready_timeout);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET `path` on a ready container.
async fn get(
    m: &dyn ContainerManager,
    fx: &Fixture,
    check: &'static str,
    name: &str,
    path: &str,
) -> std::result::Result<(u16, String), CheckFailure> {
    let (addr, _) = wait_ready(m, fx, check, name).await?;
    http_get(addr, path).await.ctx(check, path)
}

/// Waits until `cond` holds for the container's info, or fails.
async fn wait_state(m: &dyn ContainerManager, check: &'static str, name: &str, want: ContainerState) -> CheckResult {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let info = m.inspect(name).await.ctx(check, "inspect")?;
        if info.state == want {
            return Ok(());
        }
        ensure!(check, Instant::now() < deadline, "{name} stayed {} instead of {want}", info.state);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Launch, inspect every field the spec set, remove, and the container is gone.
pub async fn launch_inspect_remove(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "launch_inspect_remove";
    let spec = fx.spec("lir").label("purpose", "conformance").cpus(0.25);
    with_cleanup(m, std::slice::from_ref(&spec.name), async {
        let launched = m.launch(&spec).await.ctx(C, "launch")?;
        let info = m.inspect(&spec.name).await.ctx(C, "inspect")?;
        ensure!(C, info.id == launched.id, "launch and inspect disagree on the id");
        ensure!(C, info.name == spec.name, "name {:?}", info.name);
        ensure!(C, info.image == spec.normalized_image(), "image {:?}, want {:?}", info.image, spec.normalized_image());
        ensure!(C, info.state == ContainerState::Running, "state {}", info.state);
        ensure!(C, info.container_port == Some(80), "port {:?}", info.container_port);
        ensure!(C, info.mem_reservation_mb == Some(32), "mem {:?}", info.mem_reservation_mb);
        let s = m.label_scheme();
        ensure!(
            C,
            info.labels.get(s.root()).map(String::as_str) == Some("true"),
            "root label missing: {:?}",
            info.labels
        );
        ensure!(C, info.labels.get(&s.port_key()).map(String::as_str) == Some("80"), "port label missing");
        ensure!(C, info.labels.get(&s.mem_key()).map(String::as_str) == Some("32"), "mem label missing");
        ensure!(C, info.labels.get("purpose").map(String::as_str) == Some("conformance"), "own label missing");
        ensure!(C, m.is_live(&spec.name).await.ctx(C, "is_live")?, "is_live false for a running container");
        m.remove(&spec.name).await.ctx(C, "remove")?;
        let err = m.inspect(&spec.name).await.err();
        ensure!(C, err.as_ref().is_some_and(Error::is_not_found), "inspect after remove: {err:?}");
        ensure!(C, !m.is_live(&spec.name).await.ctx(C, "is_live")?, "is_live true after remove");
        Ok(())
    })
    .await
}

/// A second launch with the same name is a `Conflict`; the first survives.
pub async fn duplicate_name_conflict(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "duplicate_name_conflict";
    let spec = fx.spec("dup");
    with_cleanup(m, std::slice::from_ref(&spec.name), async {
        m.launch(&spec).await.ctx(C, "first launch")?;
        let err = m.launch(&spec).await.err();
        ensure!(C, err.as_ref().is_some_and(Error::is_conflict), "second launch gave {err:?}");
        let info = m.inspect(&spec.name).await.ctx(C, "inspect after conflict")?;
        ensure!(C, info.state == ContainerState::Running, "first container is {}", info.state);
        Ok(())
    })
    .await
}

/// Concurrent launches of one name: exactly one wins, the rest conflict.
pub async fn concurrent_same_name(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "concurrent_same_name";
    let spec = fx.spec("race");
    with_cleanup(m, std::slice::from_ref(&spec.name), async {
        let results = futures_util::future::join_all((0..4).map(|_| m.launch(&spec))).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let conflicts = results.iter().filter(|r| r.as_ref().err().is_some_and(Error::is_conflict)).count();
        ensure!(
            C,
            ok == 1 && conflicts == 3,
            "{ok} succeeded and {conflicts} conflicted: {:?}",
            results.iter().filter_map(|r| r.as_ref().err()).collect::<Vec<_>>()
        );
        let listed = m.list(&ListFilter::all().name(&spec.name)).await.ctx(C, "list")?;
        ensure!(C, listed.len() == 1, "{} containers named {}", listed.len(), spec.name);
        Ok(())
    })
    .await
}

/// Removing, inspecting, resolving or reading logs of a missing container is `NotFound`.
pub async fn missing_is_not_found(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "missing_is_not_found";
    let name = fx.name("never-launched");
    let r = m.remove(&name).await;
    ensure!(C, r.as_ref().err().is_some_and(Error::is_not_found), "remove: {r:?}");
    let r = m.inspect(&name).await;
    ensure!(C, r.as_ref().err().is_some_and(Error::is_not_found), "inspect: {r:?}");
    let r = m.endpoint(&name).await;
    ensure!(C, r.as_ref().err().is_some_and(Error::is_not_found), "endpoint: {r:?}");
    let r = m.logs(&name, LogOptions::default()).await;
    ensure!(C, r.as_ref().err().is_some_and(Error::is_not_found), "logs: {r:?}");
    ensure!(
        C,
        !m.remove_if_exists(&name).await.ctx(C, "remove_if_exists")?,
        "remove_if_exists said it removed something"
    );
    // Path-like names never reach the engine as paths.
    let r = m.inspect("../../containers/json").await;
    ensure!(C, r.as_ref().err().is_some_and(Error::is_not_found), "inspect of a path-like name: {r:?}");
    Ok(())
}

/// `list` filters by label (with and without value) and by exact name.
pub async fn list_filters(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "list_filters";
    let tag = format!("{}-lf", fx.name_prefix);
    let a = fx.spec("lf-a").label("berth-conformance-group", &tag).label("color", "red");
    let b = fx.spec("lf-b").label("berth-conformance-group", &tag).label("color", "blue");
    // A name that contains a's as a prefix must not match a's exact-name filter.
    let c = fx.spec("lf-a2").label("berth-conformance-group", &tag);
    with_cleanup(m, &[a.name.clone(), b.name.clone(), c.name.clone()], async {
        for s in [&a, &b, &c] {
            m.launch(s).await.ctx(C, "launch")?;
        }
        let group = ListFilter::all().label("berth-conformance-group", &tag);
        let all = m.list(&group).await.ctx(C, "list group")?;
        let names: Vec<_> = all.iter().map(|i| i.name.as_str()).collect();
        ensure!(
            C,
            names == [a.name.as_str(), c.name.as_str(), b.name.as_str()],
            "group listed {names:?} (want sorted by name)"
        );
        let red = m.list(&group.clone().label("color", "red")).await.ctx(C, "list red")?;
        ensure!(
            C,
            red.len() == 1 && red[0].name == a.name,
            "color=red listed {:?}",
            red.iter().map(|i| &i.name).collect::<Vec<_>>()
        );
        let colored = m.list(&group.clone().has_label("color")).await.ctx(C, "list colored")?;
        ensure!(C, colored.len() == 2, "has color listed {}", colored.len());
        let by_name = m.list(&ListFilter::all().name(&a.name)).await.ctx(C, "list by name")?;
        ensure!(
            C,
            by_name.len() == 1 && by_name[0].name == a.name,
            "name filter listed {:?}",
            by_name.iter().map(|i| &i.name).collect::<Vec<_>>()
        );
        let none = m.list(&group.label("color", "green")).await.ctx(C, "list green")?;
        ensure!(C, none.is_empty(), "color=green listed {}", none.len());
        Ok(())
    })
    .await
}

/// Containers without this manager's root label are invisible to it.
pub async fn foreign_containers_invisible(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "foreign_containers_invisible";
    let spec = fx.spec("foreign");
    let foreign = fx.foreign.as_ref();
    let result = async {
        foreign.launch(&spec).await.ctx(C, "foreign launch")?;
        let r = m.inspect(&spec.name).await;
        ensure!(C, r.as_ref().err().is_some_and(Error::is_not_found), "inspect saw the foreign container: {r:?}");
        let r = m.endpoint(&spec.name).await;
        ensure!(C, r.as_ref().err().is_some_and(Error::is_not_found), "endpoint resolved the foreign container: {r:?}");
        let r = m.remove(&spec.name).await;
        ensure!(C, r.as_ref().err().is_some_and(Error::is_not_found), "remove touched the foreign container: {r:?}");
        let listed = m.list(&ListFilter::all()).await.ctx(C, "list")?;
        ensure!(C, listed.iter().all(|i| i.name != spec.name), "list shows the foreign container");
        ensure!(C, foreign.inspect(&spec.name).await.is_ok(), "the foreign container is gone");
        Ok(())
    }
    .await;
    if let Err(e) = foreign.remove_if_exists(&spec.name).await {
        tracing::warn!(error = %e, "foreign clean-up failed");
    }
    result
}

/// Logs carry what the tool printed, with timestamps, oldest first; `tail` works.
pub async fn logs_contain_output(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "logs_contain_output";
    let spec = fx.spec("logs");
    with_cleanup(m, std::slice::from_ref(&spec.name), async {
        let before = std::time::SystemTime::now() - Duration::from_secs(5);
        m.launch(&spec).await.ctx(C, "launch")?;
        for word in ["first-word", "second-word"] {
            let (status, _) = get(m, fx, C, &spec.name, &format!("/say/{word}")).await?;
            ensure!(C, status == 200, "/say answered {status}");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = m.logs(&spec.name, LogOptions::default()).await.ctx(C, "logs")?;
            let first = lines.iter().position(|l| l.line.contains("first-word"));
            let second = lines.iter().position(|l| l.line.contains("second-word"));
            if let (Some(f), Some(s)) = (first, second) {
                ensure!(C, f < s, "lines out of order");
                ensure!(C, lines.iter().all(|l| l.timestamp >= before), "a log line has a timestamp before the launch");
                ensure!(C, lines.windows(2).all(|w| w[0].timestamp <= w[1].timestamp), "timestamps not ordered");
                let tail = m.logs(&spec.name, LogOptions { tail: Some(1), since: None }).await.ctx(C, "logs tail")?;
                ensure!(C, tail.len() == 1, "tail 1 gave {} lines", tail.len());
                return Ok(());
            }
            ensure!(
                C,
                Instant::now() < deadline,
                "printed words not in logs: {:?}",
                lines.iter().map(|l| &l.line).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// `follow_logs` yields lines printed after the call.
pub async fn follow_logs_streams(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "follow_logs_streams";
    let spec = fx.spec("follow");
    with_cleanup(m, std::slice::from_ref(&spec.name), async {
        m.launch(&spec).await.ctx(C, "launch")?;
        wait_ready(m, fx, C, &spec.name).await?;
        let mut stream = m.follow_logs(&spec.name, LogOptions::default()).await.ctx(C, "follow_logs")?;
        get(m, fx, C, &spec.name, "/say/followed-word").await?;
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(line) = stream.next().await {
                if line.is_ok_and(|l| l.line.contains("followed-word")) {
                    return true;
                }
            }
            false
        })
        .await;
        ensure!(C, found == Ok(true), "followed stream did not yield the new line ({found:?})");
        Ok(())
    })
    .await
}

/// Events arrive for start, die (with exit code) and remove.
pub async fn events_lifecycle(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "events_lifecycle";
    let spec = fx.spec("events");
    with_cleanup(m, std::slice::from_ref(&spec.name), async {
        let mut events = m.events().await.ctx(C, "events")?;
        m.launch(&spec).await.ctx(C, "launch")?;
        get(m, fx, C, &spec.name, "/exit/3").await?;
        wait_state(m, C, &spec.name, ContainerState::Exited).await?;
        m.remove(&spec.name).await.ctx(C, "remove")?;
        let mut kinds = Vec::new();
        let mut exit_code = None;
        let collected = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(ev) = events.next().await {
                let Ok(ev) = ev else { continue };
                if ev.name != spec.name {
                    continue;
                }
                if ev.kind == EventKind::Died {
                    exit_code = ev.exit_code;
                }
                kinds.push(ev.kind);
                if ev.kind == EventKind::Removed {
                    break;
                }
            }
        })
        .await;
        ensure!(C, collected.is_ok(), "no removed event within 10 s; saw {kinds:?}");
        let pos = |k| kinds.iter().position(|x| *x == k);
        ensure!(C, matches!((pos(EventKind::Started), pos(EventKind::Died), pos(EventKind::Removed)), (Some(a), Some(b), Some(c)) if a < b && b < c), "events out of order or missing: {kinds:?}");
        ensure!(C, exit_code == Some(3), "died event exit code {exit_code:?}");
        Ok(())
    })
    .await
}

/// Extra directories get volumes that vanish with the container.
pub async fn extra_directory_volumes(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "extra_directory_volumes";
    let spec = fx.spec("vols").extra_directory("/data").extra_directory("/scratch/work");
    with_cleanup(m, std::slice::from_ref(&spec.name), async {
        let info = m.launch(&spec).await.ctx(C, "launch")?;
        // A backend that sees only its own node's volumes may not see
        // these (the container runs on another node): it says so.
        let visible = !(m.capabilities().node_local_volumes && info.volumes.is_empty());
        ensure!(C, !visible || info.volumes.len() == 2, "container has {} volumes", info.volumes.len());
        let owned: Vec<_> = m
            .list_volumes()
            .await
            .ctx(C, "list_volumes")?
            .into_iter()
            .filter(|v| v.container.as_deref() == Some(spec.name.as_str()))
            .collect();
        ensure!(C, owned.len() == if visible { 2 } else { 0 }, "{} volumes owned by {}", owned.len(), spec.name);
        if visible {
            let (addr, _) = wait_ready(m, fx, C, &spec.name).await?;
            let (status, _) = http_request(addr, "PUT", "/file?path=/scratch/work/a.txt", Bytes::from_static(b"w"))
                .await
                .ctx(C, "write into an extra directory")?;
            ensure!(C, status == 201, "writing into the extra directory answered {status}");
        }
        m.remove(&spec.name).await.ctx(C, "remove")?;
        let left: Vec<_> = m
            .list_volumes()
            .await
            .ctx(C, "list_volumes")?
            .into_iter()
            .filter(|v| v.container.as_deref() == Some(spec.name.as_str()) || info.volumes.contains(&v.name))
            .collect();
        ensure!(C, left.is_empty(), "volumes left after remove: {left:?}");
        Ok(())
    })
    .await
}

fn sample_document(tag: &str) -> serde_json::Value {
    json!({
        "file_relationships": ["http://example.invalid/data.csv"],
        "node_info": {"1": {"name": "data.csv"}},
        "parameters": {"tag": tag, "unicode": "héllo ✓", "quote": "\"'<>"},
        "api_prefix": "/docker/x/",
        "extra_directories": [],
    })
}

async fn check_input(
    m: &dyn ContainerManager,
    fx: &Fixture,
    check: &'static str,
    spec: ContainerSpec,
    want: &serde_json::Value,
) -> CheckResult {
    let name = spec.name.clone();
    with_cleanup(m, std::slice::from_ref(&name), async {
        m.launch(&spec).await.ctx(check, "launch")?;
        let (status, body) = get(m, fx, check, &name, "/input").await?;
        ensure!(check, status == 200, "/input answered {status}: {body}");
        let got: serde_json::Value = serde_json::from_str(&body).ctx(check, "input is not JSON")?;
        ensure!(check, &got == want, "tool read {got} instead of {want}");
        Ok(())
    })
    .await
}

/// Mode `env`: the tool reads the document from `INPUT_JSON`.
pub async fn input_env(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    let doc = sample_document("env");
    check_input(m, fx, "input_env", fx.spec("in-env").input_env(doc.clone()), &doc).await
}

/// Mode `file`: the document is at the default path and at a nested
/// custom path, written before start.
pub async fn input_file(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    let doc = sample_document("file");
    check_input(m, fx, "input_file", fx.spec("in-file").input_file(doc.clone(), DEFAULT_INPUT_PATH), &doc).await?;
    let doc2 = sample_document("file-nested");
    check_input(m, fx, "input_file", fx.spec("in-file2").input_file(doc2.clone(), "/srv/berth/in put.json"), &doc2)
        .await
}

/// Mode `url`: the tool fetches the document from `INPUT_JSON_URL`.
pub async fn input_url(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "input_url";
    let doc = sample_document("url");
    let body = serde_json::to_vec(&doc).ctx(C, "serialize")?;
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", 0)).await.ctx(C, "bind document server")?;
    let port = listener.local_addr().ctx(C, "local addr")?.port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        let resp = if req.uri().path() == "/input.json" {
                            http::Response::new(http_body_util::Full::new(Bytes::from(body)))
                        } else {
                            let mut r = http::Response::new(http_body_util::Full::new(Bytes::from_static(b"no")));
                            *r.status_mut() = http::StatusCode::NOT_FOUND;
                            r
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let url = format!("http://{}:{port}/input.json", fx.host_from_container);
    let result = check_input(m, fx, C, fx.spec("in-url").input_url(doc.clone(), url), &doc).await;
    server.abort();
    result
}

/// Invalid specs are refused before the engine is called: nothing is created.
pub async fn bad_specs_rejected(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "bad_specs_rejected";
    let root = m.label_scheme().root().to_owned();
    let cases = vec![
        ("relative extra directory", fx.spec("bad1").extra_directory("data")),
        ("uppercase name", ContainerSpec { name: fx.name("Bad2"), ..fx.spec("bad2") }),
        ("name with slash", ContainerSpec { name: format!("{}/x", fx.name("bad3")), ..fx.spec("bad3") }),
        ("zero memory", ContainerSpec { mem_reservation_mb: 0, ..fx.spec("bad4") }),
        ("relative input path", fx.spec("bad5").input_file(json!({}), "input.json")),
        ("reserved label", fx.spec("bad6").label(root.clone(), "false")),
        ("reserved port label", fx.spec("bad7").label(format!("{root}.port"), "1")),
        ("memory limit below the reservation", fx.spec("bad9").mem_limit_mb(16)),
        ("cpu limit below the share", fx.spec("bad10").cpus(1.0).cpu_limit(0.5)),
        ("empty command", ContainerSpec { command: Some(Vec::new()), ..fx.spec("bad11") }),
        ("relative working dir", fx.spec("bad12").working_dir("tmp")),
        ("bad volume name", fx.spec("bad13").persistent_volume("-x", "/work", None)),
        ("volume over an extra directory", fx.spec("bad14").extra_directory("/w").persistent_volume("vv", "/w/", None)),
        (
            "readiness path without /",
            fx.spec("bad15").hints(crate::RouteHints { ready_path: Some("lab".into()), ..Default::default() }),
        ),
    ];
    for (what, spec) in &cases {
        let r = m.launch(spec).await;
        ensure!(C, matches!(r, Err(Error::InvalidSpec { .. })), "{what}: launch gave {r:?}");
    }
    let huge = json!({"blob": "x".repeat(MAX_ENV_INPUT_BYTES + 1)});
    let r = m.launch(&fx.spec("bad8").input_env(huge)).await;
    ensure!(C, matches!(r, Err(Error::InputTooLarge { mode: "env", .. })), "oversized env input gave {r:?}");
    let listed = m.list(&ListFilter::all()).await.ctx(C, "list")?;
    ensure!(C, listed.iter().all(|i| !i.name.starts_with(&fx.name("bad"))), "a refused spec left a container");
    Ok(())
}

/// A missing image is `ImageUnavailable` and leaves nothing behind.
pub async fn missing_image(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "missing_image";
    let mut spec = fx.spec("noimg");
    spec.image = "berth-conformance/no-such-image:0".into();
    let r = m.launch(&spec).await;
    ensure!(C, matches!(r, Err(Error::ImageUnavailable { .. })), "launch gave {r:?}");
    let r = m.inspect(&spec.name).await;
    ensure!(C, r.as_ref().err().is_some_and(Error::is_not_found), "a container was left: {r:?}");
    Ok(())
}

/// The endpoint serves the tool; the spec's environment reaches it; a
/// slow tool answers 503 before 200.
pub async fn endpoint_serves_http(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "endpoint_serves_http";
    let spec = fx.spec("http").env("BERTH_CONFORMANCE", "yes=1 two").env(crate::spec::ENV_STARTUP_DELAY_MS, "1500");
    with_cleanup(m, std::slice::from_ref(&spec.name), async {
        m.launch(&spec).await.ctx(C, "launch")?;
        let (_, seen) = wait_ready(m, fx, C, &spec.name).await?;
        ensure!(C, seen.contains(&503), "a 1.5 s warm-up produced no 503 (saw {seen:?})");
        let (status, body) = get(m, fx, C, &spec.name, "/env/BERTH_CONFORMANCE").await?;
        ensure!(C, status == 200 && body.trim_end() == "yes=1 two", "env var read as {status} {body:?}");
        Ok(())
    })
    .await
}

/// An exited container reports its exit code, has no endpoint, and can be removed.
pub async fn exited_container(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "exited_container";
    let spec = fx.spec("exited");
    with_cleanup(m, std::slice::from_ref(&spec.name), async {
        m.launch(&spec).await.ctx(C, "launch")?;
        get(m, fx, C, &spec.name, "/exit/7").await?;
        wait_state(m, C, &spec.name, ContainerState::Exited).await?;
        let info = m.inspect(&spec.name).await.ctx(C, "inspect")?;
        ensure!(C, info.exit_code == Some(7), "exit code {:?}", info.exit_code);
        let r = m.endpoint(&spec.name).await;
        ensure!(C, matches!(r, Err(Error::NotRunning { .. })), "endpoint of an exited container: {r:?}");
        ensure!(C, !m.is_live(&spec.name).await.ctx(C, "is_live")?, "is_live true for an exited container");
        let listed = m.list(&ListFilter::all().name(&spec.name)).await.ctx(C, "list")?;
        ensure!(C, listed.len() == 1 && listed[0].state == ContainerState::Exited, "list does not show it exited");
        m.remove(&spec.name).await.ctx(C, "remove")?;
        Ok(())
    })
    .await
}

/// `purge_by_label` removes exactly the labelled containers.
pub async fn purge_by_label(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "purge_by_label";
    let tag = format!("{}-purge", fx.name_prefix);
    let a = fx.spec("pg-a").label("berth-conformance-purge", &tag);
    let b = fx.spec("pg-b").label("berth-conformance-purge", &tag);
    let keep = fx.spec("pg-keep");
    with_cleanup(m, &[a.name.clone(), b.name.clone(), keep.name.clone()], async {
        for s in [&a, &b, &keep] {
            m.launch(s).await.ctx(C, "launch")?;
        }
        let mut removed = m.purge_by_label("berth-conformance-purge", Some(&tag)).await.ctx(C, "purge")?;
        removed.sort();
        ensure!(C, removed == [a.name.clone(), b.name.clone()], "purged {removed:?}");
        ensure!(C, m.inspect(&keep.name).await.is_ok(), "purge removed an unlabelled container");
        Ok(())
    })
    .await
}

/// A name that is a prefix of another container's ID is not that
/// container: inspect says `NotFound`, a launch under that name makes a new
/// container, and removing it leaves the other alone. (The Docker engine
/// resolves ID prefixes where names are expected.)
pub async fn id_prefixes_are_not_names(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "id_prefixes_are_not_names";
    let first = fx.spec("idp");
    with_cleanup(m, std::slice::from_ref(&first.name), async {
        let info = m.launch(&first).await.ctx(C, "launch")?;
        // Docker's short ID (12 hex digits) is a valid container name.
        let prefix: String = info.id.chars().take(12).collect();
        ensure!(
            C,
            crate::validate_name(&prefix).is_ok(),
            "the backend's ids ({:?}) give no valid name to test with",
            info.id
        );
        let r = m.inspect(&prefix).await;
        ensure!(C, r.as_ref().err().is_some_and(Error::is_not_found), "inspect by an id prefix: {r:?}");
        let mut second = fx.spec("idp2");
        second.name.clone_from(&prefix);
        with_cleanup(m, std::slice::from_ref(&prefix), async {
            let made = m.launch(&second).await.ctx(C, "launch under the id prefix")?;
            ensure!(C, made.id != info.id && made.name == prefix, "got {made:?}");
            m.remove(&prefix).await.ctx(C, "remove by the prefix name")?;
            let still = m.inspect(&first.name).await.ctx(C, "inspect the first after removing the second")?;
            ensure!(C, still.id == info.id, "the first container changed");
            Ok(())
        })
        .await
    })
    .await
}

/// Command, entrypoint, working directory, user, memory limit and
/// `/dev/shm` size reach the container's process as the spec sets them.
pub async fn process_settings(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "process_settings";
    let cmd = fx
        .spec("proc")
        .command([fx.program.as_str(), "--berth-check", "two words", "{not-a-template}"])
        .working_dir("/tmp")
        .user("4321:4321")
        .mem_limit_mb(96)
        .shm_size_mb(80);
    let entry = fx.spec("entry").entrypoint([fx.program.as_str()]).command(["--via-entrypoint"]);
    with_cleanup(m, &[cmd.name.clone(), entry.name.clone()], async {
        m.launch(&cmd).await.ctx(C, "launch with a command")?;
        m.launch(&entry).await.ctx(C, "launch with an entrypoint")?;
        let expect = [
            (&cmd.name, "/argv", "--berth-check\ntwo words\n{not-a-template}\n".to_owned()),
            (&cmd.name, "/cwd", "/tmp\n".to_owned()),
            (&cmd.name, "/uid", "4321\n".to_owned()),
            (&cmd.name, "/memlimit", format!("{}\n", 96 * 1024 * 1024)),
            (&cmd.name, "/shm", format!("{}\n", 80 * 1024 * 1024)),
            (&entry.name, "/argv", "--via-entrypoint\n".to_owned()),
        ];
        for (name, path, want) in expect {
            let (status, body) = get(m, fx, C, name, path).await?;
            ensure!(C, status == 200 && body == want, "{name} {path}: {status} {body:?}, expected {want:?}");
        }
        Ok(())
    })
    .await
}

/// A persistent volume is created on first use, keeps its files when its
/// container is removed, is mounted again by the next container, is never
/// pruned, cannot be removed while mounted, and goes on request.
pub async fn persistent_volumes_outlive_containers(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "persistent_volumes_outlive_containers";
    let volume = format!("{}-home", fx.name_prefix);
    let first = fx.spec("pv-a").persistent_volume(&volume, "/work", Some("alice"));
    let second = fx.spec("pv-b").persistent_volume(&volume, "/work/", Some("alice"));
    let result = with_cleanup(m, &[first.name.clone(), second.name.clone()], async {
        let info = m.launch(&first).await.ctx(C, "launch")?;
        ensure!(C, info.persistent_volumes == [volume.clone()], "persistent volumes {:?}", info.persistent_volumes);
        ensure!(C, !info.volumes.contains(&volume), "the persistent volume is listed as an extra directory's");
        let (addr, _) = wait_ready(m, fx, C, &first.name).await?;
        let (status, body) = http_request(addr, "PUT", "/file?path=/work/notes/a.txt", Bytes::from_static(b"kept"))
            .await
            .ctx(C, "PUT a file")?;
        ensure!(C, status == 201, "writing into the volume: {status} {body}");
        let listed = m.persistent_volumes().await.ctx(C, "persistent_volumes")?;
        let found = listed.iter().find(|v| v.name == volume);
        ensure!(C, found.is_some_and(|v| v.owner(m.label_scheme()) == Some("alice")), "listed: {listed:?}");
        let r = m.remove_persistent_volume(&volume).await;
        ensure!(C, matches!(r, Err(Error::VolumeInUse { .. })), "removing a mounted volume gave {r:?}");
        m.remove(&first.name).await.ctx(C, "remove the container")?;
        m.prune_volumes().await.ctx(C, "prune_volumes")?;
        let listed = m.persistent_volumes().await.ctx(C, "persistent_volumes")?;
        ensure!(C, listed.iter().any(|v| v.name == volume), "the volume went with its container");
        ensure!(
            C,
            m.list_volumes().await.ctx(C, "list_volumes")?.iter().all(|v| v.name != volume),
            "listed as an extra directory's volume"
        );
        m.launch(&second).await.ctx(C, "launch again")?;
        let (status, body) = get(m, fx, C, &second.name, "/file?path=/work/notes/a.txt").await?;
        ensure!(C, status == 200 && body == "kept", "the next container read {status} {body:?}");
        m.remove(&second.name).await.ctx(C, "remove the second container")?;
        Ok(())
    })
    .await;
    let removed = m.remove_persistent_volume(&volume).await;
    result?;
    removed.ctx(C, "remove_persistent_volume")?;
    let again = m.remove_persistent_volume(&volume).await;
    ensure!(C, again.as_ref().err().is_some_and(Error::is_not_found), "removing it twice gave {again:?}");
    let listed = m.persistent_volumes().await.ctx(C, "persistent_volumes")?;
    ensure!(C, listed.iter().all(|v| v.name != volume), "still listed after removal");
    Ok(())
}

/// A persistent volume that belongs to one owner cannot be mounted by a
/// launch for another (`VolumeOwned`), and such a launch leaves nothing
/// behind; a foreign manager's volume of that name is not ours to remove.
pub async fn persistent_volume_owners(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "persistent_volume_owners";
    let volume = format!("{}-own", fx.name_prefix);
    let alice = fx.spec("own-a").persistent_volume(&volume, "/work", Some("alice"));
    let bob = fx.spec("own-b").persistent_volume(&volume, "/work", Some("bob"));
    let nobody = fx.spec("own-c").persistent_volume(&volume, "/work", None);
    let result = with_cleanup(m, &[alice.name.clone(), bob.name.clone(), nobody.name.clone()], async {
        m.launch(&alice).await.ctx(C, "launch for alice")?;
        m.remove(&alice.name).await.ctx(C, "remove")?;
        for spec in [&bob, &nobody] {
            let r = m.launch(spec).await;
            ensure!(C, matches!(r, Err(Error::VolumeOwned { .. })), "{}: launch gave {r:?}", spec.name);
            let r = m.inspect(&spec.name).await;
            ensure!(C, r.as_ref().err().is_some_and(Error::is_not_found), "a refused launch left {r:?}");
        }
        let r = fx.foreign.remove_persistent_volume(&volume).await;
        ensure!(C, r.as_ref().err().is_some_and(Error::is_not_found), "a foreign manager removed it: {r:?}");
        Ok(())
    })
    .await;
    let removed = m.remove_persistent_volume(&volume).await;
    result?;
    removed.ctx(C, "remove_persistent_volume")
}

/// Route hints are kept in the container's labels and read back the same.
pub async fn route_hints_in_labels(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "route_hints_in_labels";
    let hints = crate::RouteHints {
        ready_path: Some("/api/status".into()),
        ready_status: vec![200, 302],
        start_timeout_secs: Some(45),
        strip_prefix: Some(false),
        routing: Some(crate::RoutingMode::Host),
        public_url: Some("http://hints.docker.localhost:8000/".into()),
    };
    let spec = fx.spec("hints").hints(hints.clone());
    with_cleanup(m, std::slice::from_ref(&spec.name), async {
        let launched = m.launch(&spec).await.ctx(C, "launch")?;
        let listed = m.list(&ListFilter::all().name(&spec.name)).await.ctx(C, "list")?;
        for (how, labels) in
            [("launch", &launched.labels), ("list", &listed.first().map(|i| i.labels.clone()).unwrap_or_default())]
        {
            let read = crate::RouteHints::from_labels(m.label_scheme(), labels);
            ensure!(C, read == hints, "{how}: read back {read:?}");
        }
        Ok(())
    })
    .await
}

/// A constraint no node meets is `Unschedulable` (no free resources would
/// help) and leaves nothing behind; a constraint naming a node the
/// backend lists launches there.
pub async fn placement_constraints(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "placement_constraints";
    let nowhere = fx.spec("nowhere").constraint("node.labels.berth-conformance-nowhere==yes");
    let r = m.launch(&nowhere).await;
    ensure!(
        C,
        matches!(r, Err(Error::Unschedulable { insufficient_resources: false, .. })),
        "an unsatisfiable constraint gave {r:?}"
    );
    let r = m.inspect(&nowhere.name).await;
    ensure!(C, r.as_ref().err().is_some_and(Error::is_not_found), "a refused launch left {r:?}");
    let nodes = m.nodes().await.ctx(C, "nodes")?;
    let Some(node) = nodes.iter().find(|n| n.ready && n.schedulable) else {
        return Err(CheckFailure { check: C, message: format!("no ready node listed: {nodes:?}") });
    };
    let pinned = fx.spec("pinned").constraint(format!("node.id=={}", node.id)).spread("node.labels.zone");
    with_cleanup(m, std::slice::from_ref(&pinned.name), async {
        let info = m.launch(&pinned).await.ctx(C, "launch on a named node")?;
        ensure!(C, info.node.as_ref().is_none_or(|n| *n == node.id), "landed on {:?}, not {}", info.node, node.id);
        Ok(())
    })
    .await
}

/// The nodes are listed (one for a single engine), and a container's node
/// is one of them.
pub async fn nodes_listed(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "nodes_listed";
    let nodes = m.nodes().await.ctx(C, "nodes")?;
    ensure!(C, !nodes.is_empty(), "no nodes");
    ensure!(C, m.capabilities().cluster || nodes.len() == 1, "a single-engine backend lists {} nodes", nodes.len());
    let ids: std::collections::BTreeSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    ensure!(C, ids.len() == nodes.len(), "node ids repeat: {nodes:?}");
    ensure!(C, nodes.windows(2).all(|w| w[0].id <= w[1].id), "nodes not sorted by id");
    let spec = fx.spec("node");
    with_cleanup(m, std::slice::from_ref(&spec.name), async {
        let info = m.launch(&spec).await.ctx(C, "launch")?;
        ensure!(C, info.node.as_deref().is_none_or(|n| ids.contains(n)), "runs on unlisted node {:?}", info.node);
        Ok(())
    })
    .await
}

/// Mode `file` delivers a document up to the backend's declared limit
/// ([`Capabilities::max_file_input_bytes`](crate::Capabilities)), checked
/// with a document of almost the limit or 1 MiB, whichever is less, and
/// refuses one over the limit with `InputTooLarge` before making anything.
pub async fn file_input_limit(m: &dyn ContainerManager, fx: &Fixture) -> CheckResult {
    const C: &str = "file_input_limit";
    let limit = m.capabilities().max_file_input_bytes;
    let over = json!({"blob": "x".repeat(limit)});
    let spec = fx.spec("big-in").input_file(over, DEFAULT_INPUT_PATH);
    let r = m.launch(&spec).await;
    ensure!(C, matches!(r, Err(Error::InputTooLarge { mode: "file", .. })), "an over-limit document gave {r:?}");
    let r = m.inspect(&spec.name).await;
    ensure!(C, r.as_ref().err().is_some_and(Error::is_not_found), "a refused launch left {r:?}");
    let size = limit.min(1024 * 1024) - 64;
    let doc = json!({"blob": "y".repeat(size - 16)});
    check_input(m, fx, C, fx.spec("big-ok").input_file(doc.clone(), DEFAULT_INPUT_PATH), &doc).await
}

/// Names of all checks, in the order [`conformance_tests!`](crate::conformance_tests) runs them.
pub const ALL_CHECKS: &[&str] = &[
    "launch_inspect_remove",
    "duplicate_name_conflict",
    "concurrent_same_name",
    "missing_is_not_found",
    "list_filters",
    "foreign_containers_invisible",
    "logs_contain_output",
    "follow_logs_streams",
    "events_lifecycle",
    "extra_directory_volumes",
    "input_env",
    "input_file",
    "input_url",
    "bad_specs_rejected",
    "missing_image",
    "endpoint_serves_http",
    "exited_container",
    "purge_by_label",
    "id_prefixes_are_not_names",
    "process_settings",
    "persistent_volumes_outlive_containers",
    "persistent_volume_owners",
    "route_hints_in_labels",
    "placement_constraints",
    "nodes_listed",
    "file_input_limit",
];

/// Expands to one `#[tokio::test]` per conformance check. `$setup` is an
/// async fn returning `Option<(Arc<dyn ContainerManager>, Fixture)>`;
/// `None` skips the test (the setup says why).
#[macro_export]
macro_rules! conformance_tests {
    ($setup:path) => {
        $crate::conformance_tests!(@each $setup;
            launch_inspect_remove, duplicate_name_conflict, concurrent_same_name,
            missing_is_not_found, list_filters, foreign_containers_invisible,
            logs_contain_output, follow_logs_streams, events_lifecycle,
            extra_directory_volumes, input_env, input_file, input_url,
            bad_specs_rejected, missing_image, endpoint_serves_http,
            exited_container, purge_by_label, id_prefixes_are_not_names,
            process_settings, persistent_volumes_outlive_containers, persistent_volume_owners,
            route_hints_in_labels, placement_constraints, nodes_listed, file_input_limit);
    };
    (@each $setup:path; $($check:ident),+) => {
        #[test]
        fn conformance_covers_every_check() {
            let generated: &[&str] = &[$(stringify!($check)),+];
            assert_eq!(generated, $crate::conformance::ALL_CHECKS);
        }
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some((manager, fixture)) = $setup().await else { return };
                if let Err(failure) = $crate::conformance::$check(&*manager, &fixture).await {
                    panic!("{failure}");
                }
            }
        )+
    };
}

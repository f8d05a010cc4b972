//! `berth serve` with `[engine] backend = "swarm"` on a single-node swarm
//! (see `berth_testkit::swarm`): a launch through the API waits until
//! ready, the tool answers through the proxy with its staged input (mode
//! `url`, fetched from the staging listener, whose peer check admits the
//! swarm's containers), the container is a swarm service whose spec
//! carries the tool's constraint and spread preference beside the
//! engine-wide constraint, removal through the API removes the service, and
//! a tool whose constraint no node meets is refused through the API (503,
//! saying so) with no service made.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_manager::conformance::http_get;
use berth_manager::{ContainerManager, ListFilter};
use berth_testkit::TestRun;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port `p` with `127.0.0.1:p` and `0.0.0.0:p+1` free.
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

/// `.Spec.TaskTemplate.Placement` of swarm service `name`, as the engine
/// has it (read with the Docker CLI, which finds the engine as the tests do).
fn service_placement(name: &str) -> serde_json::Value {
    let out = Command::new("docker")
        .args(["service", "inspect", "--format", "{{json .Spec.TaskTemplate.Placement}}", name])
        .output()
        .expect("running docker service inspect");
    assert!(out.status.success(), "docker service inspect {name}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One JSON API call over a fresh connection; `(status, body)`.
async fn api(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_a_swarm() {
    let Some(swarm) = berth_testkit::swarm::swarm_or_skip("serve_on_a_swarm").await else { return };
    let run = TestRun::start(swarm.engine()).await;
    let image = berth_testkit::test_tool_image(swarm.engine()).await.unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("serve-swarm-{}", run.id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port_pair();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let root = format!("bs{}", run.id());
    let config = format!(
        "listen = \"{addr}\"\ndata_dir = \"state\"\nroot_label = \"{root}\"\ntools = \"tools.toml\"\n\n\
         [engine]\nbackend = \"swarm\"\nendpoints = \"published\"\n\n\
         [engine.swarm]\nconstraints = [\"node.role==manager\"]\n\n[proxy]\nstart_timeout_secs = 60\n"
    );
    let labels: String = run.labels().iter().map(|(k, v)| format!("{k:?} = {v:?}\n")).collect();
    // The tool's constraint names this very node (so it is the tool's, not
    // one every node meets by default); its preference spreads over a
    // label no node has (swarm then places as if it were absent).
    let on_this_node = format!("node.id=={}", swarm.local_node_id());
    let spread = format!("node.labels.{root}-zone");
    let nowhere = format!("node.labels.{root}-nowhere==yes");
    let tools = format!(
        "[[tools]]\nname = \"probe\"\nimage = {image:?}\nmem_reservation_mb = 32\ninput_mode = \"url\"\n\
         constraints = [{on_this_node:?}]\npreferences = [{spread:?}]\n\n\
         [tools.default_parameters]\nfrom = \"swarm\"\n\n[tools.labels]\n{labels}\n\
         [[tools]]\nname = \"nowhere\"\nimage = {image:?}\nmem_reservation_mb = 32\n\
         constraints = [{nowhere:?}]\n\n[tools.labels]\n{labels}"
    );
    std::fs::write(dir.join("berth.toml"), config).unwrap();
    std::fs::write(dir.join("tools.toml"), tools).unwrap();
    let log_path = dir.join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .arg("serve")
            .arg("--config")
            .arg(dir.join("berth.toml"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting berth serve"),
    );
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(http_get(addr, "/healthz").await, Ok((200, _))) {
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("berth serve ended with {status}:\n{}", log_text());
        }
        assert!(Instant::now() < deadline, "berth serve never answered:\n{}", log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let name = run.name("probe");
    let body = serde_json::json!({"name": name, "tool": "probe"}).to_string();
    let started = Instant::now();
    let (status, answer) = api(addr, "POST", "/api/v1/containers?wait=true", &body).await;
    assert!(status == 201 || status == 200, "launch: {status} {answer}\n{}", log_text());
    eprintln!("launched on the swarm and ready after {:.1?}", started.elapsed());
    let (status, input) = http_get(addr, &format!("/docker/{name}/input")).await.unwrap();
    assert_eq!(status, 200, "{input}\n{}", log_text());
    let input: serde_json::Value = serde_json::from_str(&input).unwrap();
    assert_eq!(input["parameters"]["from"], "swarm", "the staged input reached the swarm container: {input}");

    // It is a swarm service of this server's root label.
    let scheme_swarm = {
        let mut config = berth_testkit::swarm::swarm_config(swarm.engine());
        config.engine = config.engine.labels(berth_manager::LabelScheme::new(root.clone()));
        berth_manager::swarm::SwarmManager::connect(config).await.unwrap()
    };
    let listed = scheme_swarm.list(&ListFilter::all()).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].node.as_deref(), Some(scheme_swarm.local_node_id()));
    // The tool's placement reached the service spec the swarm schedules by.
    let placement = service_placement(&name);
    let constraints: Vec<&str> =
        placement["Constraints"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(constraints.contains(&on_this_node.as_str()), "the tool's constraint: {placement}");
    assert!(constraints.contains(&"node.role==manager"), "the engine-wide constraint: {placement}");
    assert_eq!(
        placement["Preferences"],
        serde_json::json!([{"Spread": {"SpreadDescriptor": spread}}]),
        "the tool's spread preference: {placement}"
    );

    // A tool whose constraint no node meets: a clear refusal through the
    // API, and nothing made.
    let unplaced = run.name("nowhere");
    let body = serde_json::json!({"name": unplaced, "tool": "nowhere"}).to_string();
    let (status, answer) = api(addr, "POST", "/api/v1/containers?wait=true", &body).await;
    assert_eq!(status, 503, "{answer}\n{}", log_text());
    let error: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains(&format!("no node can run container {unplaced:?}")) && message.contains(&nowhere),
        "the refusal names the container and the constraint: {message}"
    );
    assert!(scheme_swarm.inspect(&unplaced).await.unwrap_err().is_not_found(), "no service left behind");
    assert_eq!(scheme_swarm.list(&ListFilter::all()).await.unwrap().len(), 1);

    let (status, _) = api(addr, "DELETE", &format!("/api/v1/containers/{name}"), "").await;
    assert!(status == 200 || status == 204, "remove: {status}");
    assert!(scheme_swarm.list(&ListFilter::all()).await.unwrap().is_empty(), "the service is gone");
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
}

//! The life of `berth serve` with real Docker containers: a SIGTERM is a
//! graceful stop (websockets get close frames, a stream in flight ends
//! whole, what was proxied is in the history after a restart), and
//! SIGKILLs in the middle of launches leave nothing half-made once the
//! next server has looked twice.

#![allow(clippy::unwrap_used)] // Test helpers panic on failure by design.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_testkit::TestRun;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use support::{Berth, Req, TempDir, free_port_pair};

/// A server directory for `run`: the test tool as tool `tool`, containers
/// of root label `root` published on loopback, `extra` appended.
fn write_config(dir: &Path, run: &TestRun, root: &str, image: &str, extra: &str) -> u16 {
    let port = free_port_pair();
    let labels: Vec<String> = run.labels().iter().map(|(k, v)| format!("{k:?} = {v:?}")).collect();
    let labels = labels.join(", ");
    std::fs::write(
        dir.join("tools.toml"),
        format!(
            "version = 1\n[[tools]]\nname = \"tool\"\ndescription = \"the test tool\"\nimage = {image:?}\n\
             port = 80\nmem_reservation_mb = 16\ninput_mode = \"url\"\nextra_directories = [\"/scratch\"]\n\
             [tools.labels]\n{}\n",
            labels.replace(", ", "\n")
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("berth.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nroot_label = {root:?}\ntools = \"tools.toml\"\n\
             [engine]\nendpoints = \"published\"\nnetwork_labels = {{ {labels} }}\n{extra}\n"
        ),
    )
    .unwrap();
    port
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Names of the containers of `root` in `state` (`created`, `running`, ...).
fn containers_in(root: &str, state: &str) -> BTreeSet<String> {
    docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={root}=true"),
        "--filter",
        &format!("status={state}"),
        "--format",
        "{{.Names}}",
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_websockets_finishes_streams_and_keeps_the_history() {
    let test = "sigterm_closes_websockets_finishes_streams_and_keeps_the_history";
    let Some(engine) = berth_testkit::docker_or_skip(test).await else { return };
    let run = TestRun::start(&engine).await;
    let image = berth_testkit::test_tool_image(&engine).await.unwrap();
    let dir = TempDir::new("berth-sigterm");
    let root = format!("bg{}", run.id());
    let port = write_config(&dir.0, &run, &root, &image, "[server]\nshutdown_grace_secs = 5\n");
    let mut berth = Berth::start(&dir.0, port).await;
    let name = run.name("t");
    let launched = Req::method("POST", "/api/v1/containers?wait=true")
        .json(&json!({"name": name, "tool": "tool"}))
        .send(berth.addr)
        .await;
    assert_eq!(launched.status, 200, "{}", launched.body);

    // A websocket through berth, echoing.
    let url = format!("ws://{}/docker/{name}/ws", berth.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap().into_text().unwrap().as_str(), "hello");
    // A stream that takes 2 s, in flight when the signal comes.
    let addr = berth.addr;
    let stream_path = format!("/docker/{name}/sse?n=8&interval_ms=250");
    let stream = tokio::spawn(async move { Req::get(&stream_path).send(addr).await });
    // The last request before the signal.
    let last = format!("/docker/{name}/say/last-before-sigterm");
    assert_eq!(Req::get(&last).send(berth.addr).await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    let pid = berth.child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // The websocket gets a close frame: going away.
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a frame before the end") {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1001);
        }
        other => panic!("expected a close frame, got {other:?}\n{}", berth.output()),
    }
    let client_end = tokio::spawn(async move { while ws.next().await.is_some() {} });
    // The stream in flight ends whole.
    let streamed = tokio::time::timeout(Duration::from_secs(10), stream).await.expect("stream ended").unwrap();
    assert_eq!(streamed.status, 200);
    assert!(streamed.body.contains("data: event 7"), "the stream was cut: {}", streamed.body);
    // The server ends by itself, well within the grace, and says why.
    let status = loop {
        if let Some(status) = berth.child.0.try_wait().unwrap() {
            break status;
        }
        assert!(signalled.elapsed() < Duration::from_secs(10), "berth did not stop:\n{}", berth.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "berth ended with {status}:\n{}", berth.output());
    tokio::time::timeout(Duration::from_secs(3), client_end).await.expect("the websocket closed").unwrap();
    assert!(berth.output().contains("SIGTERM"), "{}", berth.output());
    // New connections are refused while it is down.
    assert!(tokio::net::TcpStream::connect(berth.addr).await.is_err());

    // A new server adopts the container; the last request is in its history.
    berth.restart().await;
    let history = Req::get(&format!("/api/v1/containers/{name}/history")).send(berth.addr).await.json();
    let paths: Vec<&str> = history["history"].as_array().unwrap().iter().filter_map(|h| h["path"].as_str()).collect();
    assert!(paths.contains(&last.as_str()), "{paths:?}");
    let page = format!("/docker/{name}/");
    let addr = berth.addr;
    support::poll("the adopted container to answer", Duration::from_secs(10), || {
        let page = page.clone();
        async move { (Req::get(&page).send(addr).await.status == 200).then_some(()) }
    })
    .await;
    berth.child.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_launches_leaves_nothing_half_made() {
    const ROUNDS: usize = 20;
    const LAUNCHES: usize = 4;
    let test = "sigkill_during_launches_leaves_nothing_half_made";
    let Some(engine) = berth_testkit::docker_or_skip(test).await else { return };
    let run = TestRun::start(&engine).await;
    let image = berth_testkit::test_tool_image(&engine).await.unwrap();
    let dir = TempDir::new("berth-sigkill");
    let root = format!("bk{}", run.id());
    let grace = Duration::from_secs(2);
    let port = write_config(&dir.0, &run, &root, &image, "[fleet]\norphan_grace_secs = 2\n");
    let mut berth = Berth::start(&dir.0, port).await;
    let started = Instant::now();
    // Requests whose history rows were read back (so written) before a kill.
    let mut recorded: Vec<(String, String)> = Vec::new();
    let mut half_made_seen = 0;
    for round in 0..ROUNDS {
        // Traffic to what runs now, read back from the history.
        let list = Req::get("/api/v1/containers").send(berth.addr).await.json();
        let running: Vec<String> = list["containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == "running" && c["ready"] == true)
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect();
        if let Some(name) = running.first() {
            let path = format!("/docker/{name}/say/round-{round}");
            assert_eq!(Req::get(&path).send(berth.addr).await.status, 200);
            let history = Req::get(&format!("/api/v1/containers/{name}/history")).send(berth.addr).await.json();
            assert!(history.to_string().contains(&path), "read-your-writes: {history}");
            recorded.push((name.clone(), path));
        }
        // Four launches in flight, then a kill at some point of theirs.
        let addr = berth.addr;
        for k in 0..LAUNCHES {
            let name = run.name(&format!("r{round}-{k}"));
            tokio::spawn(async move {
                let body = json!({"name": name, "tool": "tool"});
                let _ = tokio::time::timeout(
                    Duration::from_secs(30),
                    Req::method("POST", "/api/v1/containers?wait=true").json(&body).try_send(addr),
                )
                .await;
            });
        }
        let delay = 30 + (round as u64 * 97) % 600;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        berth.child.stop(); // SIGKILL
        half_made_seen += containers_in(&root, "created").len();
        berth.restart().await;
    }
    eprintln!(
        "{ROUNDS} SIGKILLs in {:.1?}; containers seen created (never started) right after a kill: {half_made_seen}",
        started.elapsed()
    );
    // The last server has had the grace, and a few seconds, to look again.
    tokio::time::sleep(grace + Duration::from_secs(4)).await;
    let created = containers_in(&root, "created");
    assert!(created.is_empty(), "containers left in state created: {created:?}\n{}", berth.output());
    // No volume of a container that is gone.
    let containers: BTreeSet<String> =
        docker(&["ps", "-a", "--filter", &format!("label={root}=true"), "--format", "{{.Names}}"])
            .lines()
            .map(str::to_owned)
            .collect();
    let owners = docker(&[
        "volume",
        "ls",
        "--filter",
        &format!("label={root}=true"),
        "--format",
        &format!("{{{{.Label \"{root}.container\"}}}}"),
    ]);
    for owner in owners.lines().filter(|l| !l.is_empty()) {
        assert!(containers.contains(owner), "an orphan volume of {owner}");
    }
    // Every container is running and routable.
    let running = containers_in(&root, "running");
    assert_eq!(running, containers, "containers neither running nor removed");
    assert!(!running.is_empty(), "no launch ever finished: the kills came too early to test anything");
    for name in &running {
        let answer = Req::get(&format!("/docker/{name}/")).send(berth.addr).await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.body);
    }
    // Every history row read back before a kill is still there.
    for (name, path) in &recorded {
        let history = Req::get(&format!("/api/v1/containers/{name}/history")).send(berth.addr).await.json();
        assert!(history.to_string().contains(path.as_str()), "{path} lost from {name}'s history");
    }
    berth.child.stop();
    eprintln!("{} containers running, {} history rows checked", running.len(), recorded.len());
}

//! Restart recovery with real processes: a node serves and records
//! activity, is killed with SIGKILL, launches are killed mid-way, and a new
//! node finds everything again (routes, history, LRU order) and leaves no
//! half-made container or orphan volume behind.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_testkit::{RUN_LABEL, TestRun};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Node {
    db: String,
    root: String,
}

impl Node {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fleet-node"));
        c.args(["--db", &self.db, "--root", &self.root, "--orphan-grace", "0"]).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(out.status.success(), "fleet-node {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn serve(&self, port: u16) -> Child {
        self.command(&["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }
}

async fn get(port: u16, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    String::from_utf8_lossy(&buf).split_whitespace().nth(1)?.parse().ok()
}

async fn wait_200(port: u16, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(port, path).await != Some(200) {
        assert!(Instant::now() < deadline, "{path} never answered 200 on port {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_sigkill_and_restart() {
    let Some(engine) = berth_testkit::docker_or_skip("survives_sigkill_and_restart").await else { return };
    let run = TestRun::start(&engine).await;
    let image = berth_testkit::test_tool_image(&engine).await.unwrap();
    let dir = std::env::temp_dir().join(format!("berth-restart-{}", run.id()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = format!("br{}", run.id());
    let node = Node { db: dir.join("history.sqlite").display().to_string(), root: root.clone() };
    let run_label = format!("{RUN_LABEL}={}", run.id());
    let (a, b) = (run.name("a"), run.name("b"));

    node.run(&["launch", &a, &image, "16", &run_label]);
    node.run(&["launch", &b, &image, "16", &run_label]);

    // First life: traffic to b, then to a.
    let port = free_port();
    let mut first = node.serve(port);
    wait_200(port, &format!("/docker/{a}/")).await;
    wait_200(port, &format!("/docker/{b}/")).await;
    assert_eq!(get(port, &format!("/docker/{b}/before-b")).await, Some(200));
    tokio::time::sleep(Duration::from_millis(50)).await;
    for p in ["a1", "a2", "a3"] {
        assert_eq!(get(port, &format!("/docker/{a}/{p}")).await, Some(200));
    }
    // Batches are written off the hot path; give them a moment, then SIGKILL.
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill().unwrap();
    first.wait().unwrap();

    // Launches killed mid-way, at several points.
    for (i, delay) in [0u64, 30, 60, 120, 250, 500].iter().enumerate() {
        let name = run.name(&format!("k{i}"));
        let mut child =
            node.command(&["launch", &name, &image, "16", &run_label]).stdout(Stdio::null()).spawn().unwrap();
        tokio::time::sleep(Duration::from_millis(*delay)).await;
        let _ = child.kill();
        let _ = child.wait();
    }
    // A half-made container and an orphan volume, as a crash between
    // creation and start would leave them.
    let half = run.name("half");
    docker(&[
        "create",
        "--name",
        &half,
        "--label",
        &format!("{root}=true"),
        "--label",
        &format!("{root}.port=80"),
        "--label",
        &run_label,
        &image,
    ]);
    let ghost_volume = docker(&[
        "volume",
        "create",
        "--label",
        &format!("{root}=true"),
        "--label",
        &format!("{root}.container={}", run.name("ghost")),
        "--label",
        &run_label,
    ]);

    // Second life.
    let port = free_port();
    let mut second = node.serve(port);
    let mut line = String::new();
    {
        use std::io::BufRead;
        let stdout = second.stdout.take().unwrap();
        std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
    }
    let report: serde_json::Value = serde_json::from_str(&line).unwrap();
    let recovered: Vec<String> = serde_json::from_value(report["recovered"].clone()).unwrap();
    assert!(recovered.contains(&a) && recovered.contains(&b), "{report}");
    let removed: Vec<String> = serde_json::from_value(report["removed_half_made"].clone()).unwrap();
    assert!(removed.contains(&half), "{report}");

    // Routes come back.
    wait_200(port, &format!("/docker/{a}/")).await;
    // History survived.
    let history = node.run(&["history", &a]);
    for p in ["a1", "a2", "a3"] {
        assert!(history.contains(&format!("/docker/{a}/{p}")), "{history}");
    }
    // LRU order survived: b was used before a.
    let lru: Vec<serde_json::Value> = serde_json::from_str(&node.run(&["lru"])).unwrap();
    let pos = |n: &str| lru.iter().position(|e| e["name"] == n).unwrap();
    assert!(pos(&b) < pos(&a), "{lru:?}");

    // No half-made container, no orphan volume.
    let created = docker(&["ps", "-a", "--filter", &format!("label={root}"), "--filter", "status=created", "-q"]);
    assert_eq!(created, "", "half-made containers left");
    let volumes = docker(&["volume", "ls", "-q", "--filter", &format!("label={root}.container={}", run.name("ghost"))]);
    assert_eq!(volumes, "", "orphan volume {ghost_volume} left");
    // Every launch killed mid-way either finished or left nothing.
    for i in 0..6 {
        let name = run.name(&format!("k{i}"));
        let state = Command::new("docker").args(["inspect", "-f", "{{.State.Status}}", &name]).output().unwrap();
        let state = String::from_utf8_lossy(&state.stdout).trim().to_owned();
        assert!(state.is_empty() || state == "running", "{name} left in state {state:?}");
    }

    second.kill().unwrap();
    second.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

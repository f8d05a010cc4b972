//! `cargo xtask bench swarm`: a swarm container against a plain one.
//!
//! ```text
//! cargo xtask bench swarm [--rounds N] [--duration SECS] [--connections N]
//! ```
//!
//! Same image (`berth-testtool`), same engine, same loopback traffic:
//!
//! - launch-to-ready: the time from `launch` to the first 200 on `/`
//!   (polled every 20 ms over a fresh loopback connection), through
//!   `DockerManager` (a port published on `127.0.0.1`) and through
//!   `SwarmManager` (a service with a host-mode port on the engine's own
//!   node, a single-node swarm); rounds interleaved, one unmeasured warm-up
//!   each, median with the fastest and slowest (default 5 rounds);
//! - proxied requests per second: `wrk` (1 KiB responses) through berth's
//!   proxy (`proxy-server`, release build, `--backend docker` and
//!   `--backend swarm`) to one container of each, one run each, plus the
//!   containers' published ports directly for reference.
//!
//! The swarm is the test kit's (`berth_testkit::swarm`): made when the
//! engine's swarm mode is inactive, and left again when this process has
//! ended. Everything launched carries `berth-bench=swarm` and is removed,
//! also when the benchmark fails. The table goes between the
//! `<!-- bench:swarm:start -->` and `<!-- bench:swarm:end -->` markers of
//! `docs/BENCHMARKS.md`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use berth_manager::docker::{DockerManager, EndpointMode};
use berth_manager::swarm::SwarmManager;
use berth_manager::{ContainerManager, ContainerManagerExt, ContainerSpec, ListFilter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bench::{LABEL, load_average, utc_now, write_section};

/// Value of the `berth-bench` label on this benchmark's containers.
const LABEL_VALUE: &str = "swarm";

/// Start of the generated section of `docs/BENCHMARKS.md`.
const MARK_START: &str = "<!-- bench:swarm:start -->";

/// End of the generated section of `docs/BENCHMARKS.md`.
const MARK_END: &str = "<!-- bench:swarm:end -->";

/// Usage of `cargo xtask bench swarm`.
pub const USAGE: &str = "usage: cargo xtask bench swarm [--rounds N] [--duration SECS] [--connections N]";

/// Settings.
#[derive(Debug, Clone, Copy)]
struct Options {
    rounds: usize,
    duration_secs: u64,
    connections: u32,
}

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut o = Options { rounds: 5, duration_secs: 10, connections: 32 };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--rounds" => o.rounds = value()?.parse().context("--rounds takes a number")?,
                "--duration" => o.duration_secs = value()?.parse().context("--duration takes seconds")?,
                "--connections" => o.connections = value()?.parse().context("--connections takes a number")?,
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        ensure!(o.rounds > 0 && o.duration_secs > 0 && o.connections > 0, "{USAGE}");
        Ok(o)
    }
}

/// The two backends, as one list.
struct Backends {
    docker: Arc<DockerManager>,
    swarm: Arc<SwarmManager>,
}

impl Backends {
    fn each(&self) -> [(&'static str, Arc<dyn ContainerManager>); 2] {
        [("plain engine", self.docker.clone()), ("swarm service", self.swarm.clone())]
    }

    async fn sweep(&self) {
        for (_, m) in self.each() {
            if let Ok(list) = m.list(&ListFilter::all().label(LABEL, LABEL_VALUE)).await {
                for c in list {
                    let _ = m.remove_if_exists(&c.name).await;
                }
            }
        }
    }
}

/// Runs the benchmark.
///
/// # Errors
///
/// Bad arguments, no engine or swarm, a container that never answers, a
/// failing `wrk` run.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let options = Options::parse(args)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let load_before = load_average();
        println!("load average before the benchmark: {load_before}");
        let docker = berth_testkit::docker_config()?.endpoint_mode(EndpointMode::PublishedPort);
        let docker = Arc::new(DockerManager::connect(docker).await.context("connecting to the Docker engine")?);
        let swarm = berth_testkit::swarm::swarm_or_skip("bench swarm").await.context("no swarm on this engine")?;
        let image = berth_testkit::test_tool_image(&docker).await.context("building the test tool image")?;
        let backends = Backends { docker, swarm: Arc::new(swarm) };
        backends.sweep().await;
        let result = measure(&backends, &image, options).await;
        backends.sweep().await;
        let (launch, throughput) = result?;
        let section = report(options, &launch, &throughput, &load_before, &load_average(), args);
        println!("\n{section}");
        write_section(&berth_testkit::workspace_root().join("docs/BENCHMARKS.md"), MARK_START, MARK_END, &section)?;
        anyhow::Ok(())
    })
}

/// Launch times per backend, and `(what, requests per second)` rows.
type Results = (Vec<(&'static str, Vec<Duration>)>, Vec<(String, f64)>);

async fn measure(backends: &Backends, image: &str, options: Options) -> anyhow::Result<Results> {
    let spec = |name: String| {
        ContainerSpec::new(image, name, 32).label(LABEL, LABEL_VALUE).env("BERTH_TOOL_QUIET", "1").cpus(1.0)
    };
    // Launch to ready, interleaved: round 0 is the warm-up.
    let mut launch: Vec<(&'static str, Vec<Duration>)> =
        backends.each().iter().map(|(n, _)| (*n, Vec::new())).collect();
    for round in 0..=options.rounds {
        for (i, (column, m)) in backends.each().into_iter().enumerate() {
            let name = format!("bench-swarm-{}-{round}", if i == 0 { "d" } else { "s" });
            let started = Instant::now();
            m.launch(&spec(name.clone())).await.with_context(|| format!("launching on the {column}"))?;
            let endpoint = m.endpoint(&name).await?;
            wait_200(endpoint.addr).await.with_context(|| format!("{column}: {name} never answered"))?;
            let took = started.elapsed();
            m.remove(&name).await?;
            if round > 0 {
                println!("{column}: round {round}: {took:.2?}");
                launch[i].1.push(took);
            }
        }
    }
    // Throughput: one container per backend, proxied and direct.
    let mut rows = Vec::new();
    let root = berth_testkit::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("building proxy-server (release)");
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "--quiet", "-p", "proxy-server"])
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "building proxy-server failed ({status})");
    let binary = root.join("target/release/proxy-server");
    ensure!(which("wrk"), "wrk is not installed (apt-get install -y wrk, or run cargo xtask bench proxy once)");
    for (i, (column, m)) in backends.each().into_iter().enumerate() {
        let name = format!("bench-swarm-{}-rps", if i == 0 { "d" } else { "s" });
        m.launch(&spec(name.clone())).await?;
        let direct = m.endpoint(&name).await?.addr;
        wait_200(direct).await?;
        let port = free_port()?;
        let backend = if i == 0 { "docker" } else { "swarm" };
        let mut proxy = ChildGuard(
            Command::new(&binary)
                .args(["--listen", &format!("127.0.0.1:{port}"), "--endpoints", "published", "--backend", backend])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting proxy-server")?,
        );
        let proxied = SocketAddr::from(([127, 0, 0, 1], port));
        let path = format!("/docker/{name}/bytes/1024");
        wait_200_path(proxied, &path).await.context("berth's proxy never answered")?;
        for (what, addr, p) in
            [("through berth's proxy", proxied, path.clone()), ("direct", direct, "/bytes/1024".into())]
        {
            let rps = wrk(addr, &p, options).await?;
            println!("{column}, {what}: {rps:.0} req/s");
            rows.push((format!("{column}, {what}"), rps));
        }
        proxy.stop();
        m.remove(&name).await?;
    }
    Ok((launch, rows))
}

fn report(
    options: Options,
    launch: &[(&'static str, Vec<Duration>)],
    rows: &[(String, f64)],
    load_before: &str,
    load_after: &str,
    args: &[String],
) -> String {
    let mut s = String::new();
    let command = std::iter::once("cargo xtask bench swarm".to_owned()).chain(args.iter().cloned()).collect::<Vec<_>>();
    let _ = writeln!(
        s,
        "Measured {} with `{}` (test tool image, single-node swarm on the same engine).",
        utc_now(),
        command.join(" ")
    );
    let _ = writeln!(
        s,
        "The machine was shared and loaded (load average {load_before} before, {load_after} after): compare the rows with each other, not with other machines.\n"
    );
    let _ = writeln!(s, "| launch to first 200 ({} rounds) | median | fastest | slowest |", options.rounds);
    let _ = writeln!(s, "| --- | ---: | ---: | ---: |");
    for (column, times) in launch {
        let mut t = times.clone();
        t.sort();
        let median = t[t.len() / 2];
        let _ = writeln!(
            s,
            "| {column} | {:.0} ms | {:.0} ms | {:.0} ms |",
            median.as_secs_f64() * 1e3,
            t[0].as_secs_f64() * 1e3,
            t[t.len() - 1].as_secs_f64() * 1e3
        );
    }
    let _ = writeln!(
        s,
        "\n| `wrk -t2 -c{} -d{}s`, 1 KiB responses (one run each) | requests/s |",
        options.connections, options.duration_secs
    );
    let _ = writeln!(s, "| --- | ---: |");
    for (what, rps) in rows {
        let _ = writeln!(s, "| {what} | {rps:.0} |");
    }
    s
}

/// Kills a child process when dropped.
struct ChildGuard(Child);

impl ChildGuard {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

async fn wait_200(addr: SocketAddr) -> anyhow::Result<()> {
    wait_200_path(addr, "/").await
}

/// Polls `GET path` on a fresh connection every 20 ms until it answers 200.
async fn wait_200_path(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if status(addr, path).await == Some(200) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{addr}{path} did not answer 200 within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status(addr: SocketAddr, path: &str) -> Option<u16> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut head = [0u8; 64];
        let n = stream.read(&mut head).await.ok()?;
        let line = String::from_utf8_lossy(&head[..n]).into_owned();
        line.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), attempt).await.ok().flatten()
}

/// Requests per second `wrk` reaches on `http://addr/path`.
async fn wrk(addr: SocketAddr, path: &str, o: Options) -> anyhow::Result<f64> {
    let out = tokio::process::Command::new("wrk")
        .args(["-t2", &format!("-c{}", o.connections), &format!("-d{}s", o.duration_secs)])
        .arg(format!("http://{addr}{path}"))
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "wrk failed: {text} {}", String::from_utf8_lossy(&out.stderr));
    ensure!(!text.contains("Non-2xx"), "wrk saw errors: {text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {text}"))
}

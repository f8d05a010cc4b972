//! `cargo xtask bench launch`: launch-to-ready time of the real apps.
//!
//! ```text
//! cargo xtask bench launch [--rounds N] [--apps jupyterlab,streamlit,dash,shiny]
//! ```
//!
//! For each real app (`berth_testkit::RealApp`, images built first and not
//! timed), the time from asking for a container to the app's first 2xx or
//! 3xx answer on its ready path, polled every 50 ms over a fresh loopback
//! connection. Each way of launching is a [`Launcher`], one column of the
//! table:
//!
//! - [`DockerRun`] does what `docker run -d -p 127.0.0.1::PORT IMAGE` does
//!   through the engine API (create, start, publish on 127.0.0.1) and polls
//!   the app's published port;
//! - [`ThroughBerth`] runs the release `berth serve` binary with the real
//!   tools' registry (`demo/real-tools.toml`, as `berth_testkit::
//!   real_tools_registry` makes it), launches each app from its registry
//!   entry with `POST /api/v1/containers` as a client would, and polls
//!   through berth's proxy (`/docker/<name><ready_path>`), which answers
//!   its please-wait page (503) until its own readiness probe has seen
//!   the app answer.
//!
//! Rounds are interleaved (round 1 of every app and column, then round 2,
//! ...), so a change in the machine's load spreads over all cells; one
//! unmeasured warm-up launch per cell comes first. The table shows the
//! median of the rounds with the fastest and slowest; it is printed and
//! written between the `<!-- bench:launch:start -->` and
//! `<!-- bench:launch:end -->` markers of `docs/BENCHMARKS.md`. Every
//! container (and JupyterLab's persistent volume under berth) carries the
//! label `berth-bench=launch` and is removed after its round; a sweep of
//! that label at the start and at the end removes leftovers, also when
//! the benchmark fails. berth serve is stopped and its state directory
//! removed when the benchmark ends.

use std::fmt::Write as _;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use berth_manager::docker::DockerManager;
use berth_manager::{ContainerManager, ContainerManagerExt, ContainerSpec};
use berth_testkit::RealApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bench::{LABEL, load_average, utc_now, write_section};

/// Value of the `berth-bench` label on this benchmark's containers.
const LABEL_VALUE: &str = "launch";

/// Start of the generated section of `docs/BENCHMARKS.md`.
const MARK_START: &str = "<!-- bench:launch:start -->";

/// End of the generated section of `docs/BENCHMARKS.md`.
const MARK_END: &str = "<!-- bench:launch:end -->";

/// Usage of `cargo xtask bench launch`.
pub const USAGE: &str = "usage: cargo xtask bench launch [--rounds N] [--apps jupyterlab,streamlit,dash,shiny]";

/// Longest wait for an app to answer before the round fails.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// Pause between two readiness polls.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Memory reservation of the benchmark's containers, in MiB.
const MEM_RESERVATION_MB: u64 = 512;

/// The bearer token of the benchmark's berth serve.
const BERTH_TOKEN: &str = "bench-launch";

/// The owner berth's launches are made for (its persistent volumes are
/// named after it).
const BERTH_OWNER: &str = "berth-bench";

/// Root label of the benchmark's berth serve, apart from any other berth
/// on the engine.
const BERTH_ROOT_LABEL: &str = "berth-launch-bench";

/// A boxed future, as [`Launcher`]'s methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where to poll a launched app until it answers.
#[derive(Debug, Clone)]
pub struct Started {
    /// A loopback address.
    pub addr: SocketAddr,
    /// The path whose 2xx or 3xx answer means ready (e.g. the app's ready
    /// path, or the same behind a proxy's prefix).
    pub path: String,
}

/// One way of starting an app: a column of the table.
pub trait Launcher: Sync {
    /// The column's heading.
    fn column(&self) -> &str;

    /// Starts a container of `image` running `app`, called `name`, and
    /// returns where to poll it. The measured time starts before this call.
    fn launch<'a>(&'a self, app: RealApp, image: &'a str, name: &'a str) -> BoxFuture<'a, anyhow::Result<Started>>;

    /// Removes the container `launch` started (not measured).
    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// `docker run -d -p 127.0.0.1::PORT --cpus N IMAGE` through the engine
/// API: create and start (`DockerManager::launch`, so also berth's
/// labels and memory reservation, which cost nothing at start), the port
/// published on 127.0.0.1, no CPU throttling (all cores).
pub struct DockerRun {
    /// The engine, with endpoints on published loopback ports.
    pub docker: DockerManager,
    /// CPU share given to each container.
    pub cpus: f64,
}

impl Launcher for DockerRun {
    fn column(&self) -> &str {
        "docker run + polling"
    }

    fn launch<'a>(&'a self, app: RealApp, image: &'a str, name: &'a str) -> BoxFuture<'a, anyhow::Result<Started>> {
        Box::pin(async move {
            let spec = ContainerSpec::new(image, name, MEM_RESERVATION_MB)
                .port(app.port())
                .cpus(self.cpus)
                .label(LABEL, LABEL_VALUE);
            self.docker.launch(&spec).await.with_context(|| format!("launching {image} as {name}"))?;
            let endpoint = self.docker.endpoint(name).await.with_context(|| format!("endpoint of {name}"))?;
            ensure!(endpoint.addr.ip().is_loopback(), "{name} is published on {}, not loopback", endpoint.addr);
            Ok(Started { addr: endpoint.addr, path: app.ready_path().to_owned() })
        })
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.docker.remove_if_exists(name).await.with_context(|| format!("removing {name}"))?;
            Ok(())
        })
    }
}

/// Through berth: the release `berth serve` binary with the real tools'
/// registry; a launch is `POST /api/v1/containers` with the tool's name
/// (answered once the container is created and started), and readiness is
/// polled through berth's proxy at `/docker/<name><ready_path>`. The
/// registry's entries are used as they are (command, environment, memory,
/// readiness, volumes) except `cpus`, set to the [`DockerRun`] column's
/// value: the entries' own 0.5 to 1 CPU would measure that limit, not
/// berth.
pub struct ThroughBerth {
    /// berth's listener, on loopback.
    addr: SocketAddr,
    /// Each app's image reference, registry tool name and ready path
    /// (under its public path).
    tools: Vec<(String, String, String)>,
    /// The server; stopped, and its directory removed, on drop.
    server: BerthProcess,
}

/// A running `berth serve`, stopped on drop with its directory removed.
struct BerthProcess {
    child: Child,
    dir: PathBuf,
}

impl Drop for BerthProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl ThroughBerth {
    /// Builds `berth` in release mode and starts `berth serve` on a free
    /// loopback port with the real tools' registry, every tool carrying
    /// the benchmark's label and `cpus`.
    ///
    /// # Errors
    ///
    /// The build, the registry (its images), the server not answering.
    pub async fn start(docker: &DockerManager, cpus: f64) -> anyhow::Result<ThroughBerth> {
        let root = berth_testkit::workspace_root();
        println!("building berth (release)");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--release", "--quiet", "-p", "berth-server", "--bin", "berth"])
            .status()
            .context("running cargo build")?;
        ensure!(status.success(), "building berth failed ({status})");
        let binary = root.join("target/release/berth");

        let mut registry: toml::Table = berth_testkit::real_tools_registry(docker)
            .await
            .context("the real tools' registry")?
            .parse()
            .context("parsing the real tools' registry")?;
        let entries = registry.get_mut("tools").and_then(toml::Value::as_array_mut).context("no [[tools]]")?;
        let mut tools = Vec::new();
        for entry in entries.iter_mut() {
            let table = entry.as_table_mut().context("a [[tools]] entry is not a table")?;
            let text = |key: &str| table.get(key).and_then(toml::Value::as_str).map(str::to_owned);
            let (Some(name), Some(image)) = (text("name"), text("image")) else {
                bail!("a tool without name or image")
            };
            tools.push((image, name, text("ready_path").unwrap_or_else(|| "/".into())));
            table.insert("cpus".into(), toml::Value::Float(cpus));
            let labels = toml::Table::from_iter([(LABEL.to_owned(), toml::Value::String(LABEL_VALUE.into()))]);
            table.insert("labels".into(), toml::Value::Table(labels));
        }

        let dir = root.join("target").join(format!("bench-launch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("tools.toml"), toml::to_string(&registry)?).context("writing the registry")?;
        let port = free_port_pair()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = format!(
            "listen = \"{addr}\"\ndata_dir = \"state\"\nroot_label = \"{BERTH_ROOT_LABEL}\"\ntools = \"tools.toml\"\n\n\
             [engine]\nendpoints = \"published\"\n\n[proxy]\nstart_timeout_secs = {timeout}\n\n\
             [api]\ntoken = \"{BERTH_TOKEN}\"\n\n[fleet]\nmemory_budget_mb = 65536\n",
            timeout = READY_TIMEOUT.as_secs(),
        );
        std::fs::write(dir.join("berth.toml"), config).context("writing berth.toml")?;
        let log = std::fs::File::create(dir.join("berth.log")).context("creating berth.log")?;
        let child = Command::new(&binary)
            .current_dir(&dir)
            .args(["serve", "--config", "berth.toml"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = BerthProcess { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(200) = status_of(addr, "/healthz").await {
                break;
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("berth serve ended with {status}:\n{}", server.log());
            }
            ensure!(Instant::now() < deadline, "berth serve did not answer within 30 s:\n{}", server.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("berth serve (release) answers on {addr}");
        Ok(ThroughBerth { addr, tools, server })
    }
}

impl ThroughBerth {
    /// Removes persistent volume `name` through the API, if it exists
    /// (a warning when that fails).
    pub async fn remove_volume(&self, name: &str) {
        match api(self.addr, "DELETE", &format!("/api/v1/volumes/{name}"), None).await {
            Ok((200 | 204 | 404, _)) => {}
            Ok((status, answer)) => eprintln!("warning: removing volume {name}: {status} {answer}"),
            Err(e) => eprintln!("warning: removing volume {name}: {e:#}"),
        }
    }
}

impl BerthProcess {
    /// The server's output.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("berth.log")).unwrap_or_default()
    }
}

impl Launcher for ThroughBerth {
    fn column(&self) -> &str {
        "through berth serve"
    }

    fn launch<'a>(&'a self, app: RealApp, image: &'a str, name: &'a str) -> BoxFuture<'a, anyhow::Result<Started>> {
        Box::pin(async move {
            let (_, tool, ready_path) = self
                .tools
                .iter()
                .find(|(i, _, _)| i == image)
                .with_context(|| format!("no registry tool runs {image} ({app})"))?;
            let body = serde_json::json!({"tool": tool, "name": name, "owner": BERTH_OWNER}).to_string();
            let (status, answer) = api(self.addr, "POST", "/api/v1/containers", Some(&body)).await?;
            ensure!(
                matches!(status, 200 | 202),
                "launching {tool} as {name}: {status} {answer}\n{}",
                self.server.log()
            );
            Ok(Started { addr: self.addr, path: format!("/docker/{name}{ready_path}") })
        })
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let (status, answer) = api(self.addr, "DELETE", &format!("/api/v1/containers/{name}"), None).await?;
            ensure!(matches!(status, 200 | 204 | 404), "removing {name}: {status} {answer}");
            Ok(())
        })
    }
}

/// A request to berth's API with its token, over a fresh connection;
/// the status and the raw rest of the answer.
async fn api(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<(u16, String)> {
    api_request(addr, method, path, body, Some(BERTH_TOKEN), Duration::from_secs(60)).await
}

/// One request to `berth serve` over a fresh connection (with `token` as
/// its bearer token when given), answered within `limit`: the status and
/// the raw rest of the answer.
pub(crate) async fn api_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
    limit: Duration,
) -> anyhow::Result<(u16, String)> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.context("connecting")?;
        let body = body.unwrap_or_default();
        let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.context("sending")?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.context("reading")?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no status")?;
        let rest = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        anyhow::Ok((status, rest))
    };
    tokio::time::timeout(limit, attempt)
        .await
        .with_context(|| format!("{method} {path}: no answer within {limit:?}"))?
}

/// A port `p` with `127.0.0.1:p` and `0.0.0.0:p+1` free (berth's main and
/// staging listeners).
fn free_port_pair() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let main = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        let port = main.local_addr()?.port();
        if port < u16::MAX && TcpListener::bind(("0.0.0.0", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no two consecutive free ports found")
}

/// Settings of the launch benchmark.
#[derive(Debug, Clone)]
struct LaunchOptions {
    /// Measured rounds per cell.
    rounds: usize,
    /// The apps, in table order.
    apps: Vec<RealApp>,
}

impl LaunchOptions {
    /// Parses `--rounds N` (default 5) and `--apps a,b` (default all).
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut options = LaunchOptions { rounds: 5, apps: RealApp::ALL.to_vec() };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--rounds" => {
                    options.rounds = value()?.parse().context("--rounds takes a number")?;
                    ensure!(options.rounds >= 1, "--rounds must be at least 1");
                }
                "--apps" => {
                    options.apps = value()?
                        .split(',')
                        .map(|name| RealApp::from_name(name).with_context(|| format!("unknown app {name:?}\n{USAGE}")))
                        .collect::<anyhow::Result<_>>()?;
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

/// Times of one app under one launcher.
#[derive(Debug, Clone)]
struct Cell {
    app: RealApp,
    column: String,
    times: Vec<Duration>,
}

impl Cell {
    /// Median, fastest and slowest.
    fn stats(&self) -> Option<(Duration, Duration, Duration)> {
        let mut sorted = self.times.clone();
        sorted.sort();
        let median = match sorted.len() {
            0 => return None,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
        };
        Some((median, sorted[0], sorted[sorted.len() - 1]))
    }
}

/// Runs `cargo xtask bench launch` with `args`.
///
/// # Errors
///
/// Bad arguments, an image that cannot be built, an app that does not
/// answer within three minutes, engine failures.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let options = LaunchOptions::parse(args)?;
    let started = Instant::now();
    let load_before = load_average();
    println!("load average before the benchmark: {load_before}");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    let docker = rt.block_on(crate::connect())?;
    let result = rt.block_on(async {
        sweep(&docker).await;
        let mut images = Vec::new();
        for &app in &options.apps {
            let image = berth_testkit::real_app_image(&docker, app).await.with_context(|| format!("image of {app}"))?;
            println!("{app}: {image}");
            images.push((app, image));
        }
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as f64;
        let berth = ThroughBerth::start(&docker, cpus).await?;
        let docker_run = DockerRun { docker: docker.clone(), cpus };
        let launchers: [&dyn Launcher; 2] = [&docker_run, &berth];
        let cells = measure(&launchers, &images, options.rounds).await;
        // JupyterLab's volume outlives its containers under berth; remove
        // it as a user would (the sweep below would take it too).
        berth.remove_volume(&format!("jupyter-home-{BERTH_OWNER}")).await;
        cells
    });
    rt.block_on(sweep(&docker));
    let cells = result?;
    let command = std::iter::once("cargo xtask bench launch".to_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let table = table(&cells);
    println!("\n{table}");
    let section = section(&command, options.rounds, &load_before, started.elapsed(), &table);
    let doc = berth_testkit::workspace_root().join("docs").join("BENCHMARKS.md");
    write_section(&doc, MARK_START, MARK_END, &section)?;
    println!("wrote {}", doc.display());
    Ok(())
}

/// Removes every container of this benchmark (label `berth-bench=launch`).
async fn sweep(docker: &DockerManager) {
    match docker.sweep_label(LABEL, LABEL_VALUE).await {
        Ok((0, _)) => {}
        Ok((n, _)) => println!("removed {n} benchmark container(s)"),
        Err(e) => eprintln!("warning: removing the benchmark's containers failed: {e}"),
    }
}

/// A warm-up round, then `rounds` interleaved rounds of every app under
/// every launcher.
async fn measure(
    launchers: &[&dyn Launcher],
    images: &[(RealApp, String)],
    rounds: usize,
) -> anyhow::Result<Vec<Cell>> {
    let mut cells: Vec<Cell> = images
        .iter()
        .flat_map(|(app, _)| {
            launchers.iter().map(|l| Cell { app: *app, column: l.column().to_owned(), times: Vec::new() })
        })
        .collect();
    for round in 0..=rounds {
        for (a, (app, image)) in images.iter().enumerate() {
            for (l, launcher) in launchers.iter().enumerate() {
                let name = format!("berth-bench-{}-{round}-{l}", app.name());
                let took = launch_to_ready(*launcher, *app, image, &name).await;
                let removed = launcher.remove(&name).await;
                let took = took?;
                removed?;
                if round == 0 {
                    println!("warm-up  {app:<10} {:<22} {took:>8.2?}", launcher.column());
                } else {
                    println!("round {round}  {app:<10} {:<22} {took:>8.2?}", launcher.column());
                    cells[a * launchers.len() + l].times.push(took);
                }
            }
        }
    }
    Ok(cells)
}

/// The time from calling the launcher to the first 2xx or 3xx answer.
async fn launch_to_ready(launcher: &dyn Launcher, app: RealApp, image: &str, name: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let target = launcher.launch(app, image, name).await?;
    ensure!(target.addr.ip().is_loopback(), "refusing to poll {}: not a loopback address", target.addr);
    let mut last = String::from("no answer yet");
    while started.elapsed() < READY_TIMEOUT {
        match status_of(target.addr, &target.path).await {
            Ok(status) if (200..400).contains(&status) => return Ok(started.elapsed()),
            Ok(status) => last = format!("status {status}"),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    bail!("{app} ({name}) did not answer GET {} within {READY_TIMEOUT:?} (last: {last})", target.path)
}

/// The status of `GET path` over a fresh connection (`Connection: close`),
/// reading only the status line.
async fn status_of(addr: SocketAddr, path: &str) -> anyhow::Result<u16> {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.context("connecting")?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.context("sending")?;
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.contains(&b'\n') {
            let n = stream.read(&mut buf).await.context("reading")?;
            ensure!(n > 0, "connection closed before a status line");
            head.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&head);
        let status = line.split_whitespace().nth(1).context("no status in the answer")?;
        status.parse::<u16>().with_context(|| format!("bad status {status:?}"))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.context("no answer within 5 s")?
}

/// Seconds with two decimals.
fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// The results as a markdown table: an app per row, a launcher per column.
fn table(cells: &[Cell]) -> String {
    let mut columns: Vec<&str> = Vec::new();
    for c in cells {
        if !columns.contains(&c.column.as_str()) {
            columns.push(&c.column);
        }
    }
    let mut out = String::from("| app | port | ready path (docker run) |");
    for column in &columns {
        let _ = write!(out, " {column}: median s (min–max) |");
    }
    out.push_str("\n|:---|---:|:---|");
    out.push_str(&"---:|".repeat(columns.len()));
    out.push('\n');
    let mut apps: Vec<RealApp> = Vec::new();
    for c in cells {
        if !apps.contains(&c.app) {
            apps.push(c.app);
        }
    }
    for app in apps {
        let _ = write!(out, "| {app} | {} | `{}` |", app.port(), app.ready_path());
        for column in &columns {
            let cell = cells.iter().find(|c| c.app == app && c.column == *column).and_then(Cell::stats);
            match cell {
                Some((median, min, max)) => {
                    let _ = write!(out, " {} ({}–{}) |", secs(median), secs(min), secs(max));
                }
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    out
}

/// The generated section of `docs/BENCHMARKS.md`, markers excluded.
fn section(command: &str, rounds: usize, load: &str, took: Duration, table: &str) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!(
        "\n## Launch to ready: real apps\n\n\
         Command: `{command}` (the whole benchmark took {took:.0?}). Measured {date} on {cpus} CPUs; load \
         average (1, 5, 15 min) at the start: {load}. The machine is shared and noisy: differences under about \
         ±15% between runs, or between columns, are noise.\n\n\
         Each cell is the time from asking for a container to the app's first 2xx or 3xx answer on its ready \
         path (polled every {poll} ms over a fresh loopback connection): the median of {rounds} rounds, \
         with the fastest and slowest, after one unmeasured warm-up launch. Rounds are interleaved across apps \
         and columns. The images are `berth_testkit::real_app_image`'s (see `demo/real-tools/README.md`).\n\n\
         - *docker run + polling*: `docker run -d -p 127.0.0.1::PORT --cpus {cpus} IMAGE` done through the \
         engine API (create, start), then polling the published port at the ready path in the table.\n\
         - *through berth serve*: the release `berth serve` binary with `demo/real-tools.toml`'s entries (their command, \
         environment, memory limits, readiness and volumes; `cpus` set to {cpus} like the other column), \
         `POST /api/v1/containers` with the tool's name (answered once the container has started), then \
         polling through berth's proxy at `/docker/<name>` plus the entry's `ready_path` (JupyterLab `/api`, \
         Streamlit `/_stcore/health`, Dash `/_dash-layout`, Shiny `/`), where berth answers its please-wait \
         page until its own readiness probe (every 250 ms) has seen the app answer. JupyterLab mounts its \
         persistent volume there, made in the warm-up round.\n\n{table}\n",
        date = utc_now(),
        poll = POLL_INTERVAL.as_millis(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_table() {
        let cell = |app, times: &[u64]| Cell {
            app,
            column: "docker run + polling".into(),
            times: times.iter().map(|ms| Duration::from_millis(*ms)).collect(),
        };
        let cells = [cell(RealApp::Dash, &[900, 100, 300, 200, 500]), cell(RealApp::Shiny, &[1000, 3000])];
        assert_eq!(
            cells[0].stats(),
            Some((Duration::from_millis(300), Duration::from_millis(100), Duration::from_millis(900)))
        );
        assert_eq!(cells[1].stats().map(|s| s.0), Some(Duration::from_millis(2000)));
        let table = table(&cells);
        assert!(table.contains("| dash | 8050 | `/` | 0.30 (0.10–0.90) |"), "{table}");
        assert!(table.contains("| shiny | 3838 | `/` | 2.00 (1.00–3.00) |"), "{table}");
    }

    #[test]
    fn options() -> anyhow::Result<()> {
        let o = LaunchOptions::parse(&["--rounds".into(), "3".into(), "--apps".into(), "dash,shiny".into()])?;
        assert_eq!((o.rounds, o.apps), (3, vec![RealApp::Dash, RealApp::Shiny]));
        assert!(LaunchOptions::parse(&["--apps".into(), "rstudio".into()]).is_err());
        Ok(())
    }
}

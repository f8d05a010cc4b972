//! `cargo xtask bench memory`: the resident memory of `berth serve` (the
//! release binary) with 0, 100 and 1,000 routed containers.
//!
//! ```text
//! cargo xtask bench memory [--steps 0,100,1000]
//! ```
//!
//! The server runs with `[engine] backend = "mock"`: its containers are
//! HTTP servers inside berth's own process, so a thousand of them fit on
//! any machine. Each container is launched through the API as a registry
//! tool and then routed (one proxied request each, so the route table,
//! the history and the metrics all know it). The figures include the mock
//! containers' own servers (a listening socket and a task each), so they
//! are an upper bound of what berth itself spends per route. Results go
//! between the `<!-- bench:memory:start -->` and `<!-- bench:memory:end -->`
//! markers of `docs/BENCHMARKS.md`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// Usage of `cargo xtask bench memory`.
pub const USAGE: &str = "usage: cargo xtask bench memory [--steps 0,100,1000]";

/// Start of the generated section of `docs/BENCHMARKS.md`.
const MARK_START: &str = "<!-- bench:memory:start -->";

/// End of the generated section of `docs/BENCHMARKS.md`.
const MARK_END: &str = "<!-- bench:memory:end -->";

/// Launches in flight at once while filling up.
const PARALLEL: usize = 16;

/// How long the idle measurement waits: two of the proxy's pool idle
/// timeouts (60 s each) and a little.
const IDLE_WAIT: Duration = Duration::from_secs(125);

/// Runs the benchmark.
///
/// # Errors
///
/// Bad arguments, a build or server that fails, a launch or request that
/// does not answer as it should.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let steps = parse(args)?;
    let started = Instant::now();
    let root = berth_testkit::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("building berth (release)");
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "--quiet", "-p", "berth-server"])
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "building berth failed ({status})");

    let dir = std::env::temp_dir().join(format!("berth-bench-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let server = Server::start(&root.join("target/release/berth"), &dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = rt.block_on(measure(&server, &steps));
    let log = std::fs::read_to_string(dir.join("berth.log")).unwrap_or_default();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    let rows = result.with_context(|| format!("berth serve's log ends:\n{}", tail(&log)))?;

    let command = std::iter::once("cargo xtask bench memory".to_owned())
        .chain(args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let section = section(&command, &rows, started.elapsed());
    println!("{section}");
    let doc = root.join("docs").join("BENCHMARKS.md");
    crate::bench::write_section(&doc, MARK_START, MARK_END, &section)?;
    println!("wrote {}", doc.display());
    Ok(())
}

/// `--steps`: the container counts to measure at, ascending.
fn parse(args: &[String]) -> anyhow::Result<Vec<usize>> {
    let mut steps = vec![0, 100, 1000];
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--steps" => {
                let value = args.next().with_context(|| format!("--steps needs a value\n{USAGE}"))?;
                steps = value
                    .split(',')
                    .map(|s| s.trim().parse::<usize>().with_context(|| format!("bad step {s:?}\n{USAGE}")))
                    .collect::<anyhow::Result<_>>()?;
                ensure!(steps.windows(2).all(|w| w[0] < w[1]), "--steps must ascend\n{USAGE}");
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(steps)
}

/// A measured point.
#[derive(Debug, Clone, Copy)]
struct Row {
    /// Routed containers.
    containers: usize,
    /// When it was taken.
    when: When,
    /// Resident memory (`VmRSS`), and its anonymous (`RssAnon`: heap,
    /// stacks) and file-backed (`RssFile`: the binary's pages) parts, in
    /// KiB.
    rss: Rss,
}

/// When a point was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// 2 s after the step's last request: the proxy's pooled upstream
    /// connections (one per container and serving thread used) are open.
    JustRouted,
    /// After the pool's idle timeout: those connections are closed.
    Idle,
}

/// The resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
}

/// The running `berth serve`, stopped on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Writes a mock-backend configuration into `dir` and starts `berth`.
    fn start(berth: &std::path::Path, dir: &std::path::Path) -> anyhow::Result<Server> {
        let [port, staging] = crate::bench::free_ports::<2>()?;
        std::fs::write(
            dir.join("tools.toml"),
            "version = 1\n[[tools]]\nname = \"echo\"\ndescription = \"the mock tool\"\n\
             image = \"berth/mock-tool\"\nport = 80\nmem_reservation_mb = 1\n",
        )?;
        std::fs::write(
            dir.join("berth.toml"),
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\ntools = \"tools.toml\"\n\
                 [engine]\nbackend = \"mock\"\n\
                 [staging]\npublic_base = \"http://127.0.0.1:{staging}\"\nbind = \"127.0.0.1:{staging}\"\n"
            ),
        )?;
        let log = std::fs::File::create(dir.join("berth.log"))?;
        let child = Command::new(berth)
            .arg("serve")
            .arg("--config")
            .arg(dir.join("berth.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", berth.display()))?;
        Ok(Server { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) })
    }

    /// The server's resident memory.
    fn rss(&self) -> anyhow::Result<Rss> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find_map(|l| l.strip_prefix(name).and_then(|l| l.strip_prefix(':')))
                .with_context(|| format!("no {name} in {path}"))?;
            line.trim().trim_end_matches("kB").trim().parse().with_context(|| format!("bad {name} {line:?}"))
        };
        Ok(Rss { total: field("VmRSS")?, anon: field("RssAnon")?, file: field("RssFile")? })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fills the server up step by step, measuring at each.
async fn measure(server: &Server, steps: &[usize]) -> anyhow::Result<Vec<Row>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while request(server.addr, "GET", "/healthz", None).await.map(|(s, _)| s).unwrap_or(0) != 200 {
        ensure!(Instant::now() < deadline, "berth serve did not answer /healthz within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut rows = Vec::new();
    let mut launched = 0;
    for &target in steps {
        while launched < target {
            let batch: Vec<usize> = (launched..target.min(launched + PARALLEL)).collect();
            let calls = batch.iter().map(|i| route_one(server.addr, *i));
            for r in futures_util::future::join_all(calls).await {
                r?;
            }
            launched += batch.len();
        }
        // Let the history's and the route table's background work settle.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = server.rss()?;
        println!("{target:>5} containers routed: VmRSS {}", mib(rss.total));
        rows.push(Row { containers: target, when: When::JustRouted, rss });
    }
    // The proxy closes pooled connections idle for its pool timeout (60 s),
    // looking every timeout: within two of them.
    let Some(&last) = steps.last() else { return Ok(rows) };
    println!("waiting {IDLE_WAIT:?} for the pooled upstream connections to idle out");
    tokio::time::sleep(IDLE_WAIT).await;
    // A few requests, so the allocator's background purge has run its
    // decay since the connections went.
    for _ in 0..20 {
        request(server.addr, "GET", "/healthz", None).await?;
    }
    tokio::time::sleep(Duration::from_secs(6)).await;
    let rss = server.rss()?;
    println!("{last:>5} containers, idle connections closed: VmRSS {}", mib(rss.total));
    rows.push(Row { containers: last, when: When::Idle, rss });
    Ok(rows)
}

/// Launches container `i` through the API and sends it one request
/// through the proxy.
async fn route_one(addr: SocketAddr, i: usize) -> anyhow::Result<()> {
    let name = format!("m{i:05}");
    let body = format!("{{\"name\":\"{name}\",\"tool\":\"echo\"}}");
    let (status, answer) = request(addr, "POST", "/api/v1/containers?wait=true", Some(&body)).await?;
    ensure!(status == 200 || status == 201, "launching {name}: {status} {answer}");
    let (status, answer) = request(addr, "GET", &format!("/docker/{name}/"), None).await?;
    ensure!(status == 200, "GET /docker/{name}/: {status} {answer}");
    Ok(())
}

/// One request over a fresh connection: the status and the rest.
async fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<(u16, String)> {
    crate::bench_launch::api_request(addr, method, path, body, None, Duration::from_secs(30)).await
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `kib` as MiB with one decimal.
fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The generated section.
fn section(command: &str, rows: &[Row], took: Duration) -> String {
    let mut out = format!(
        "\n## Memory per routed container\n\n\
         Measured {date} with `{command}` (took {took:.0?}): `berth serve` (release build, default \
         configuration, `[engine] backend = \"mock\"`), each container launched through the API as a registry \
         tool and sent one request through the proxy. Resident memory of the process (`VmRSS`), and its \
         anonymous (heap, stacks: `RssAnon`) and file-backed (the binary's code pages: `RssFile`) parts. \
         *Just routed* is 2 s after the step's last request, when the proxy still holds a pooled connection to \
         each container, and the mock container the other end of it, with their buffers, in the same \
         process; *idle* is after the pool's idle timeout closed them, the steady state of containers \
         nobody is using. The mock containers are servers inside the \
         same process (a listening socket, a task and their state each), so the figures include them: an \
         upper bound of berth's own cost per route.\n\n\
         | routed containers | when | resident | anonymous | file-backed | anonymous per container, from the row before |\n\
         |---:|:---|---:|---:|---:|---:|\n",
        date = crate::bench::utc_now(),
    );
    let mut previous: Option<Row> = None;
    for row in rows {
        let per = match previous {
            Some(p) if row.containers > p.containers => {
                format!("{:.1} KiB", (row.rss.anon as f64 - p.rss.anon as f64) / (row.containers - p.containers) as f64)
            }
            _ => "–".to_owned(),
        };
        let when = match row.when {
            When::JustRouted => "just routed",
            When::Idle => "idle",
        };
        let _ = writeln!(
            out,
            "| {} | {when} | {} | {} | {} | {per} |",
            row.containers,
            mib(row.rss.total),
            mib(row.rss.anon),
            mib(row.rss.file)
        );
        previous = Some(*row);
    }
    out.push('\n');
    out
}

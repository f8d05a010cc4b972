//! `cargo xtask bench <benchmark>`: berth's benchmarks: `proxy` (below),
//! `launch` (launch-to-ready of the real apps, in `bench_launch.rs`) and
//! `swarm` (a swarm container against a plain one, in `bench_swarm.rs`).
//!
//! ```text
//! cargo xtask bench proxy [--duration SECS] [--connections N]
//! ```
//!
//! It launches the test tool (`berth-testtool`) in a container on the host
//! network, then puts four ways of reaching it under load with `wrk`:
//! directly, through berth's proxy (the `proxy-server` example, built in
//! release mode), through nginx and through HAProxy, each with 1 KiB and
//! 1 MiB responses. It prints a markdown table (requests per second, median
//! and 99th percentile latency, ratios to the direct and to the best
//! established proxy) plus berth's peak resident memory, and writes the
//! same between the `<!-- bench:proxy:start -->` and
//! `<!-- bench:proxy:end -->` markers of `docs/BENCHMARKS.md`.
//!
//! `wrk`, `nginx` and `haproxy` are installed with `apt-get` when missing.
//! Every process, the container and the temporary directory are removed
//! again when the benchmark ends, also when it fails. All traffic stays on
//! `127.0.0.1`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use berth_manager::docker::{DockerManager, EndpointMode};
use berth_manager::{ContainerManager, ContainerManagerExt, ContainerSpec};

/// Name of the benchmark's tool container.
const CONTAINER: &str = "berth-bench-tool";

/// Label on everything the benchmarks launch.
pub(crate) const LABEL: &str = "berth-bench";

/// Response sizes measured, in bytes.
const SIZES: [u64; 2] = [1024, 1024 * 1024];

/// Debian packages the proxy benchmark needs.
const PACKAGES: [&str; 3] = ["wrk", "nginx", "haproxy"];

/// Start of the generated section of `docs/BENCHMARKS.md`.
const MARK_START: &str = "<!-- bench:proxy:start -->";

/// End of the generated section of `docs/BENCHMARKS.md`.
const MARK_END: &str = "<!-- bench:proxy:end -->";

/// Usage of `cargo xtask bench proxy`.
const USAGE: &str = "usage: cargo xtask bench proxy [--duration SECS] [--connections N] [--rounds N]";

/// The user `berth serve` knows from the trusted header in the benchmark
/// (it owns the tool container, so the owner hooks let it through).
const BENCH_USER: &str = "bench";

/// The label berth serve reads a container's owner from
/// (`berth_axum::DEFAULT_OWNER_LABEL`, which xtask does not depend on).
const OWNER_LABEL: &str = "berth-owner";

/// Runs the benchmark named by `args[0]` with the remaining arguments.
///
/// # Errors
///
/// Unknown benchmarks or arguments, and whatever makes the benchmark fail.
pub fn run(args: &[String]) -> anyhow::Result<()> {
    let Some((name, rest)) = args.split_first() else {
        bail!("{USAGE}\n{}\n{}\n{}", crate::bench_launch::USAGE, crate::bench_swarm::USAGE, crate::bench_memory::USAGE);
    };
    match name.as_str() {
        "proxy" => proxy(&ProxyOptions::parse(rest)?, rest),
        "launch" => crate::bench_launch::run(rest),
        "swarm" => crate::bench_swarm::run(rest),
        "memory" => crate::bench_memory::run(rest),
        other => {
            bail!(
                "unknown benchmark {other:?}; benchmarks: proxy, launch, swarm, memory\n{USAGE}\n{}\n{}\n{}",
                crate::bench_memory::USAGE,
                crate::bench_launch::USAGE,
                crate::bench_swarm::USAGE
            )
        }
    }
}

/// Settings of the proxy benchmark.
#[derive(Debug, Clone, Copy)]
struct ProxyOptions {
    /// Length of each measured `wrk` run, in seconds.
    duration_secs: u64,
    /// Open connections `wrk` keeps.
    connections: u32,
    /// Interleaved rounds: each round runs every target once per size;
    /// the report gives each target's median.
    rounds: usize,
}

impl ProxyOptions {
    /// Parses `--duration SECS`, `--connections N` and `--rounds N`
    /// (defaults 8, 32 and 3).
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut options = ProxyOptions { duration_secs: 8, connections: 32, rounds: 3 };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
            match arg.as_str() {
                "--duration" => {
                    options.duration_secs = value()?.parse().context("--duration takes whole seconds")?;
                    ensure!(options.duration_secs > 0, "--duration must be at least 1");
                }
                "--connections" => {
                    options.connections = value()?.parse().context("--connections takes a number")?;
                    ensure!(options.connections >= 2, "--connections must be at least 2 (wrk runs 2 threads)");
                }
                "--rounds" => {
                    options.rounds = value()?.parse().context("--rounds takes a number")?;
                    ensure!(options.rounds >= 1, "--rounds must be at least 1");
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        Ok(options)
    }
}

/// One way of reaching the tool.
#[derive(Debug, Clone)]
struct Target {
    /// Short name shown in the table.
    name: &'static str,
    /// Address to connect to.
    addr: SocketAddr,
    /// Path prefix put before `/bytes/<n>`.
    prefix: String,
}

impl Target {
    /// Path of the `size`-byte response.
    fn path(&self, size: u64) -> String {
        format!("{}/bytes/{size}", self.prefix)
    }

    /// URL of the `size`-byte response.
    fn url(&self, size: u64) -> String {
        format!("http://{}{}", self.addr, self.path(size))
    }
}

/// What one measured `wrk` run reported.
#[derive(Debug, Clone)]
struct Measurement {
    /// Response size in bytes.
    size: u64,
    /// Target name.
    target: &'static str,
    /// Requests per second.
    rps: f64,
    /// Median latency in milliseconds.
    p50_ms: f64,
    /// 99th percentile latency in milliseconds.
    p99_ms: f64,
    /// Requests completed.
    requests: u64,
    /// Responses with a status of 400 or more (wrk's "Non-2xx or 3xx").
    non_2xx: u64,
    /// wrk's `Socket errors:` line, when it printed one.
    socket_errors: Option<String>,
}

/// Everything that must be undone when the benchmark ends: child
/// processes, the tool container and the temporary directory. Dropping it
/// undoes them, so a failing benchmark cleans up as well.
struct Cleanup {
    /// Runs the engine calls.
    rt: tokio::runtime::Runtime,
    /// The engine, once connected.
    docker: Option<DockerManager>,
    /// Whether the tool container may exist.
    container: bool,
    /// Child processes, in start order.
    children: Vec<(&'static str, Child)>,
    /// Temporary directory for configurations, logs and nginx's files.
    dir: PathBuf,
}

impl Cleanup {
    /// The child named `name`, if it was started.
    fn child(&self, name: &str) -> Option<&Child> {
        self.children.iter().find(|(n, _)| *n == name).map(|(_, c)| c)
    }

    /// Fails when a child process has exited, showing the end of its log.
    fn check_children(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait().with_context(|| format!("checking on {name}"))? {
                let log = log_tail(&self.dir.join(format!("{name}.log")));
                bail!("{name} exited early ({status}); end of its log:\n{log}");
            }
        }
        Ok(())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (name, child) in self.children.iter_mut().rev() {
            stop_child(name, child);
        }
        if self.container
            && let Some(docker) = &self.docker
        {
            match self.rt.block_on(docker.remove_if_exists(CONTAINER)) {
                Ok(_) => println!("removed container {CONTAINER}"),
                Err(e) => eprintln!("warning: removing container {CONTAINER} failed: {e}"),
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("warning: removing {} failed: {e}", self.dir.display());
        }
    }
}

/// Stops a child: `SIGTERM` (so nginx's master stops its workers too),
/// then `SIGKILL` if it is still running after 5 s.
fn stop_child(name: &str, child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            println!("stopped {name}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("warning: {name} ignored SIGTERM; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// The proxy benchmark; `raw_args` are the arguments as given, for the
/// report.
fn proxy(options: &ProxyOptions, raw_args: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let load_before = load_average();
    println!("load average before the benchmark: {load_before}");
    if load_before.split(' ').next().and_then(|l| l.parse::<f64>().ok()).is_some_and(|l| l > 1.0) {
        eprintln!("warning: the machine is busy; other work will make the numbers noisy");
    }
    ensure_tools()?;

    let dir = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut guard = Cleanup { rt, docker: None, container: false, children: Vec::new(), dir: dir.clone() };

    // Free loopback ports: the tool, berth (without and with history),
    // nginx, HAProxy, and berth serve with its staging listener.
    let [tool_port, berth_port, berth_history_port, nginx_port, haproxy_port, serve_port, staging_port] =
        free_ports::<7>()?;
    let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));

    // The tool, in a container on the host network.
    let docker = guard.rt.block_on(async {
        let config = berth_testkit::docker_config()?.endpoint_mode(EndpointMode::HostNetwork);
        DockerManager::connect(config).await
    });
    let docker = docker.context("connecting to the Docker engine (DOCKER_HOST or /var/run/docker.sock)")?;
    let docker = guard.docker.insert(docker);
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let image = guard.rt.block_on(berth_testkit::test_tool_image(docker)).context("building the test tool image")?;
    println!("tool image {image}");
    guard.container = true;
    guard.rt.block_on(async {
        if docker.remove_if_exists(CONTAINER).await? {
            println!("removed a leftover container {CONTAINER}");
        }
        // All CPUs: with berth's default share of 0.5 CPU, the tool's CFS
        // throttling would dominate every row.
        let spec = ContainerSpec::new(&image, CONTAINER, 64)
            .cpus(cpus as f64)
            .port(tool_port)
            .env("PORT", tool_port.to_string())
            // No log line per request: the engine's log driver would cost
            // more than the HTTP under test, in every row alike.
            .env("BERTH_TOOL_QUIET", "1")
            // berth serve's owner hooks let only its owner through.
            .label(OWNER_LABEL, BENCH_USER)
            .label(LABEL, "1");
        docker.launch(&spec).await
    })?;
    println!("launched {CONTAINER} on 127.0.0.1:{tool_port} (host network)");
    let direct = Target { name: "direct", addr: loopback(tool_port), prefix: String::new() };
    wait_ok(&mut guard, "the tool", direct.addr, "/")?;

    // berth's proxy.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = berth_testkit::workspace_root();
    println!("building proxy-server and berth (release)");
    let status = Command::new(&cargo)
        .current_dir(&root)
        .args(["build", "--release", "--quiet", "-p", "proxy-server", "-p", "berth-server"])
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "building proxy-server and berth failed ({status})");
    let berth_addr = loopback(berth_port);
    let proxy_server = root.join("target").join("release").join("proxy-server");
    spawn(
        &mut guard,
        "proxy-server",
        Command::new(&proxy_server).args(["--listen", &berth_addr.to_string(), "--endpoints", "host"]),
    )?;
    let berth = Target { name: "berth", addr: berth_addr, prefix: format!("/docker/{CONTAINER}") };
    wait_ok(&mut guard, "berth's proxy", berth.addr, &format!("{}/", berth.prefix))?;
    // The same, recording every request in a SQLite history file.
    let history_addr = loopback(berth_history_port);
    let history_db = dir.join("history.sqlite");
    spawn(
        &mut guard,
        "proxy-server+history",
        Command::new(&proxy_server)
            .args(["--listen", &history_addr.to_string(), "--endpoints", "host", "--history"])
            .arg(&history_db),
    )?;
    let berth_history = Target { name: "berth+history", addr: history_addr, prefix: format!("/docker/{CONTAINER}") };
    wait_ok(&mut guard, "berth's proxy with history", berth_history.addr, &format!("{}/", berth_history.prefix))?;

    // berth serve: the binary users run, with its default configuration
    // but for a login mode (so the owner hooks run on every request: the
    // trusted header names the user, who owns the tool), host-network
    // endpoints for the tool, and the engine's own network (the tool is on
    // the host network; berth makes no network of its own).
    let serve_dir = dir.join("berth-serve");
    std::fs::create_dir_all(&serve_dir).with_context(|| format!("creating {}", serve_dir.display()))?;
    let serve_config = serve_dir.join("berth.toml");
    std::fs::write(&serve_config, berth_serve_config(serve_port, staging_port))
        .with_context(|| format!("writing {}", serve_config.display()))?;
    spawn(
        &mut guard,
        "berth-serve",
        Command::new(root.join("target").join("release").join("berth")).arg("serve").arg("--config").arg(&serve_config),
    )?;
    let serve = Target { name: "berth serve", addr: loopback(serve_port), prefix: format!("/docker/{CONTAINER}") };
    wait_ok(&mut guard, "berth serve", serve.addr, &format!("{}/", serve.prefix))?;

    // nginx.
    let nginx_conf = dir.join("nginx.conf");
    std::fs::write(&nginx_conf, nginx_config(&dir, nginx_port, tool_port))
        .with_context(|| format!("writing {}", nginx_conf.display()))?;
    let nginx_error_log = dir.join("error.log");
    spawn(
        &mut guard,
        "nginx",
        Command::new(tool_path("nginx")?)
            .arg("-c")
            .arg(&nginx_conf)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(&nginx_error_log),
    )?;
    let nginx = Target { name: "nginx", addr: loopback(nginx_port), prefix: String::new() };
    wait_ok(&mut guard, "nginx", nginx.addr, "/")?;

    // HAProxy.
    let haproxy_conf = dir.join("haproxy.cfg");
    std::fs::write(&haproxy_conf, haproxy_config(haproxy_port, tool_port))
        .with_context(|| format!("writing {}", haproxy_conf.display()))?;
    spawn(&mut guard, "haproxy", Command::new(tool_path("haproxy")?).arg("-f").arg(&haproxy_conf).arg("-db"))?;
    let haproxy = Target { name: "haproxy", addr: loopback(haproxy_port), prefix: String::new() };
    wait_ok(&mut guard, "haproxy", haproxy.addr, "/")?;

    let targets = [direct, berth, berth_history, serve, nginx, haproxy];
    for size in SIZES {
        for target in &targets {
            check_bytes(target, size)?;
        }
    }
    println!("every target answers 200 with exactly the requested bytes");

    // Interleaved rounds: every target once per size in each round, so
    // the machine's slow drifts touch every target alike.
    let user_header = format!("X-Forwarded-User: {BENCH_USER}");
    let mut runs = Vec::new();
    for round in 1..=options.rounds {
        println!("round {round} of {}", options.rounds);
        for size in SIZES {
            for target in &targets {
                guard.check_children()?;
                let url = target.url(size);
                let connections = format!("-c{}", options.connections);
                wrk(&["-t2", &connections, "-d1s", "-H", &user_header, &url]).context("warm-up run")?;
                let duration = format!("-d{}s", options.duration_secs);
                let output = wrk(&["-t2", &connections, &duration, "--latency", "-H", &user_header, &url])?;
                let m = parse_wrk(&output, size, target.name)
                    .with_context(|| format!("parsing wrk's output:\n{output}"))?;
                println!(
                    "{:>7} {:<13} {:>10.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  {} requests{}",
                    size_label(size),
                    m.target,
                    m.rps,
                    m.p50_ms,
                    m.p99_ms,
                    m.requests,
                    errors_label(&m).map(|e| format!("  ({e})")).unwrap_or_default()
                );
                runs.push(m);
            }
        }
    }
    guard.check_children()?;
    let results = medians(&runs, &targets);

    let proxy_pid = guard.child("proxy-server").context("proxy-server is not running")?.id();
    let serve_pid = guard.child("berth-serve").context("berth serve is not running")?.id();
    let serve_peak_rss_kib = peak_rss_kib(serve_pid)?;
    let peak_rss_kib = peak_rss_kib(proxy_pid)?;
    let command = std::iter::once("cargo xtask bench proxy".to_owned())
        .chain(raw_args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let report = Report {
        command,
        options: *options,
        results,
        runs,
        peak_rss_kib,
        serve_peak_rss_kib,
        facts: machine_facts(),
        load_before,
        took: started.elapsed(),
    };
    let table = report.table();
    println!(
        "\n{table}\npeak RSS (VmHWM): proxy-server {}, berth serve {}\n",
        rss_label(peak_rss_kib),
        rss_label(serve_peak_rss_kib)
    );
    let doc = root.join("docs").join("BENCHMARKS.md");
    write_section(&doc, MARK_START, MARK_END, &report.section())?;
    println!("wrote {}", doc.display());
    drop(guard);
    println!("bench proxy took {:.0?}", started.elapsed());
    Ok(())
}

/// Installs `wrk`, `nginx` and `haproxy` with `apt-get` when any is missing.
fn ensure_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|t| find_tool(t).is_none()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("missing {}: running apt-get update", missing.join(", "));
    let status = Command::new("apt-get").arg("update").status().context("running apt-get update")?;
    ensure!(status.success(), "apt-get update failed ({status})");
    println!("running apt-get install -y --no-install-recommends {}", PACKAGES.join(" "));
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(PACKAGES)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install")?;
    ensure!(status.success(), "apt-get install failed ({status})");
    for tool in PACKAGES {
        tool_path(tool)?;
    }
    Ok(())
}

/// Where executable `name` is: on `PATH`, or in the `sbin` directories
/// (where Debian puts nginx and HAProxy) when `PATH` lacks them.
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Like [`find_tool`], failing when the tool is missing.
fn tool_path(name: &str) -> anyhow::Result<PathBuf> {
    find_tool(name).with_context(|| format!("{name} is not installed"))
}

/// `N` distinct free loopback ports (all bound at once, then released).
pub(crate) fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        *port = listener.local_addr().context("reading a bound port")?.port();
        listeners.push(listener);
    }
    Ok(ports)
}

/// Starts `command` as child `name` of `guard`, with its output in
/// `<name>.log` in the temporary directory.
fn spawn(guard: &mut Cleanup, name: &'static str, command: &mut Command) -> anyhow::Result<()> {
    let log_path = guard.dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("duplicating a log file handle")?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    println!("started {name} (pid {})", child.id());
    guard.children.push((name, child));
    Ok(())
}

/// Waits up to 30 s until `GET path` on `addr` answers 200, failing early
/// when a child process exits.
fn wait_ok(guard: &mut Cleanup, what: &str, addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    loop {
        guard.check_children()?;
        let last = match http_get(addr, path) {
            Ok((200, _)) => {
                println!("{what} answers on {addr} (after {:.1?})", started.elapsed());
                return Ok(());
            }
            Ok((status, _)) => format!("status {status}"),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("{what} did not answer GET http://{addr}{path} with 200 within 30 s (last: {last})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `GET` over a fresh connection (`Connection: close`); returns the
/// status and the body (decoded when chunked).
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout)).context("setting a read timeout")?;
    stream.set_write_timeout(Some(timeout)).context("setting a write timeout")?;
    // The user header is for berth serve's login (every target gets it,
    // as every target gets it from wrk).
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-Forwarded-User: {BENCH_USER}\r\nConnection: close\r\n\r\n"
    )
    .context("sending a request")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).context("reading a response")?;
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").context("response without a complete head")?;
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let body = &raw[head_end + 4..];
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("malformed status line in {head:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            length = Some(value.parse::<usize>().with_context(|| format!("bad content-length {value:?}"))?);
        } else if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else if let Some(length) = length {
        ensure!(body.len() >= length, "body of {} bytes, content-length {length}", body.len());
        body[..length].to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

/// Decodes a chunked body.
fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").context("truncated chunked body")?;
        let line = String::from_utf8_lossy(&data[..line_end]);
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16).with_context(|| format!("bad chunk size {size_hex:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        ensure!(data.len() >= size + 2, "truncated chunk");
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Checks that `target` answers `GET /bytes/<size>` with 200 and exactly
/// the tool's `size` bytes.
fn check_bytes(target: &Target, size: u64) -> anyhow::Result<()> {
    let (status, body) =
        http_get(target.addr, &target.path(size)).with_context(|| format!("GET {}", target.url(size)))?;
    ensure!(status == 200, "GET {} answered {status}", target.url(size));
    ensure!(body.len() as u64 == size, "GET {} returned {} bytes, not {size}", target.url(size), body.len());
    let pattern_ok = body.iter().enumerate().all(|(i, &b)| b == (i % 256) as u8);
    ensure!(pattern_ok, "GET {} returned {size} bytes, but not the tool's byte pattern", target.url(size));
    Ok(())
}

/// Runs `wrk` with `args`; returns its standard output.
fn wrk(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(tool_path("wrk")?).args(args).output().context("running wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(
        output.status.success(),
        "wrk {} failed ({}):\n{stdout}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

/// Reads requests per second, the 50 % and 99 % latencies, the request
/// count and the error lines from `wrk --latency` output.
fn parse_wrk(output: &str, size: u64, target: &'static str) -> anyhow::Result<Measurement> {
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut requests = None;
    let mut non_2xx = 0;
    let mut socket_errors = None;
    for line in output.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>().with_context(|| format!("bad Requests/sec {v:?}"))?);
        } else if let Some(v) = line.strip_prefix("50%") {
            p50 = Some(parse_latency_ms(v.trim())?);
        } else if let Some(v) = line.strip_prefix("99%") {
            p99 = Some(parse_latency_ms(v.trim())?);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = v.trim().parse().with_context(|| format!("bad Non-2xx count {v:?}"))?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            socket_errors = Some(v.trim().to_owned());
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            requests = Some(n.trim().parse().with_context(|| format!("bad request count {n:?}"))?);
        }
    }
    Ok(Measurement {
        size,
        target,
        rps: rps.context("no Requests/sec line")?,
        p50_ms: p50.context("no 50% latency line")?,
        p99_ms: p99.context("no 99% latency line")?,
        requests: requests.context("no \"requests in\" line")?,
        non_2xx,
        socket_errors,
    })
}

/// Converts a wrk duration such as `812.00us`, `1.25ms`, `2.01s` or
/// `1.00m` to milliseconds.
fn parse_latency_ms(value: &str) -> anyhow::Result<f64> {
    let split =
        value.find(|c: char| !(c.is_ascii_digit() || c == '.')).with_context(|| format!("no unit in {value:?}"))?;
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().with_context(|| format!("bad latency {value:?}"))?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        other => bail!("unknown latency unit {other:?} in {value:?}"),
    };
    Ok(number * factor)
}

/// Peak resident set size (`VmHWM`) of process `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).with_context(|| format!("no VmHWM in {path}"))?;
    let kib = line.trim().trim_end_matches("kB").trim();
    kib.parse().with_context(|| format!("bad VmHWM {line:?}"))
}

/// Facts about the machine and the tools, for the report.
#[derive(Debug, Clone)]
struct MachineFacts {
    /// Logical CPUs available.
    cpus: usize,
    /// CPU model name.
    cpu_model: String,
    /// Kernel release.
    kernel: String,
    /// Docker Engine version.
    engine: String,
    /// Versions of wrk, nginx and HAProxy.
    tools: Vec<String>,
}

/// Gathers [`MachineFacts`]; anything unreadable is reported as `unknown`.
fn machine_facts() -> MachineFacts {
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let engine = command_line("docker", &["version", "--format", "{{.Server.Version}}"]);
    let tools = vec![
        format!("wrk {}", version_in(&command_line("wrk", &["-v"]))),
        format!("nginx {}", version_in(&command_line("nginx", &["-v"]))),
        format!("HAProxy {}", version_in(&command_line("haproxy", &["-v"]))),
    ];
    MachineFacts { cpus, cpu_model, kernel, engine, tools }
}

/// First non-empty line `program args` prints (on either stream), or
/// `unknown`.
fn command_line(program: &str, args: &[&str]) -> String {
    let Some(path) = find_tool(program) else { return "unknown".into() };
    let Ok(output) = Command::new(path).args(args).stdin(Stdio::null()).output() else {
        return "unknown".into();
    };
    let text = format!("{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    text.lines().map(str::trim).find(|l| !l.is_empty()).map_or_else(|| "unknown".into(), str::to_owned)
}

/// The version in a tool's version line: the first word holding a digit,
/// without any `name/` prefix (`nginx version: nginx/1.22.1` → `1.22.1`).
fn version_in(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.chars().any(|c| c.is_ascii_digit()))
        .map_or_else(|| "unknown".into(), |w| w.rsplit('/').next().unwrap_or(w).to_owned())
}

/// The 1, 5 and 15 minute load averages, or `unknown`.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The measured results and their context.
#[derive(Debug, Clone)]
struct Report {
    /// The command as typed.
    command: String,
    /// The effective settings.
    options: ProxyOptions,
    /// Per size and target, the median of the rounds.
    results: Vec<Measurement>,
    /// Every run of every round.
    runs: Vec<Measurement>,
    /// proxy-server's peak RSS in KiB.
    peak_rss_kib: u64,
    /// berth serve's peak RSS in KiB.
    serve_peak_rss_kib: u64,
    /// The machine.
    facts: MachineFacts,
    /// `/proc/loadavg`'s 1, 5 and 15 minute load averages at the start.
    load_before: String,
    /// How long the benchmark took up to the report.
    took: Duration,
}

impl Report {
    /// The results as a markdown table.
    fn table(&self) -> String {
        let mut out = String::from(
            "| size | target | req/s (median) | rounds: min–max | p50 ms | p99 ms | vs direct | vs best of nginx/haproxy | errors |\n\
             |---:|:---|---:|---:|---:|---:|---:|---:|:---|\n",
        );
        for m in &self.results {
            let of_size =
                |name: &str| self.results.iter().find(|r| r.size == m.size && r.target == name).map(|r| r.rps);
            let direct = of_size("direct");
            let best = [of_size("nginx"), of_size("haproxy")]
                .into_iter()
                .flatten()
                .fold(None, |best: Option<f64>, r| Some(best.map_or(r, |b| b.max(r))));
            let ratio = |base: Option<f64>| match base {
                Some(b) if b > 0.0 => format!("{:.2}×", m.rps / b),
                _ => "–".to_owned(),
            };
            let rounds: Vec<f64> =
                self.runs.iter().filter(|r| r.size == m.size && r.target == m.target).map(|r| r.rps).collect();
            let low = rounds.iter().copied().fold(f64::INFINITY, f64::min);
            let high = rounds.iter().copied().fold(0.0, f64::max);
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {:.0}–{:.0} | {:.3} | {:.3} | {} | {} | {} |",
                size_label(m.size),
                m.target,
                m.rps,
                low,
                high,
                m.p50_ms,
                m.p99_ms,
                ratio(direct),
                ratio(best),
                errors_label(m).unwrap_or_else(|| "none".into())
            );
        }
        out
    }

    /// The generated section of `docs/BENCHMARKS.md`, markers excluded.
    fn section(&self) -> String {
        let f = &self.facts;
        let ProxyOptions { duration_secs, connections, rounds } = self.options;
        let mut out = String::new();
        let _ = write!(
            out,
            "\n## Proxy throughput\n\n\
             Command: `{command}` ({rounds} interleaved rounds; in each, every target once per size: \
             `wrk -t2 -c{connections} -d{duration_secs}s --latency`, after a 1 s warm-up run; the whole benchmark \
             took {took:.0?}). Each row gives the median of its rounds (requests per second, p50 and p99 each \
             the median of the rounds' values) and the rounds' range.\n\n\
             Measured {date} on {cpus} CPUs ({model}), Linux {kernel}, Docker Engine {engine}; \
             {tools}. Load average (1, 5, 15 min) at the start: {load}.\n\n\
             **All on one machine:** `wrk` (2 threads), the test tool and the proxy under test share the same \
             {cpus} cores, so the load generator competes with what it measures and the numbers are lower than on \
             separate machines. Take the ratios as the result, not the absolute rates. Other work on the \
             machine shows up in every run: rounds of the same target differ by several percent (up to ±15%, \
             more for p99), so differences of that size are noise.\n\n\
             The tool is `berth-testtool` (one thread per connection, started with `BERTH_TOOL_QUIET=1` so it \
             prints no log line per request) in a container with network mode `host` and a CPU limit of all {cpus} CPUs (berth's default of 0.5 \
             CPU would throttle it), answering `GET /bytes/<n>` with `n` bytes. *direct* is \
             `wrk` against the tool; the proxies forward plain HTTP/1.1 to it over loopback, with keep-alive \
             to the tool:\n\n\
             - **berth**: `proxy-server --endpoints host` (the `examples/proxy-server` binary, release build) \
               on `/docker/{CONTAINER}/bytes/<n>`, with its default settings and no activity recording;\n\
             - **berth+history**: the same with `--history FILE`: every request is reported to the SQLite \
               history store (a bounded channel, batched transactions on the store's own thread); comparing \
               it with *berth* gives the history's cost;\n\
             - **berth serve**: the `berth` binary users run (release build), with its default configuration \
               except `[auth] mode = \"header\"` (every request carries `X-Forwarded-User: {BENCH_USER}` from a \
               trusted proxy, so the owner hooks identify the user and check the container's owner on every \
               request), `[engine] endpoints = \"host\"` and the engine's own network; history (SQLite), \
               metrics, the API and the web app are on, as they are by default; wrk sends the same header to every \
               target;\n\
             - **nginx**: `worker_processes 2`, `worker_connections 4096`, `access_log off`, an upstream with \
               `keepalive 64`, `proxy_http_version 1.1` and an empty `Connection` header; otherwise nginx's \
               defaults, in particular `proxy_buffering on` (a 1 MiB response outgrows its in-memory buffers, \
               so nginx may spill it to a temporary file);\n\
             - **haproxy**: `nbthread 2`, `maxconn 4096` (10000 would need 20017 file descriptors, more \
               than many containers allow), `mode http`, `http-reuse always`, timeouts 5 s \
               connect and 60 s client/server.\n\n\
             Each ratio divides the row's requests per second by those of *direct*, or by the better of nginx \
             and HAProxy, for the same size.\n\n",
            command = self.command,
            took = self.took,
            date = utc_now(),
            cpus = f.cpus,
            model = f.cpu_model,
            kernel = f.kernel,
            engine = f.engine,
            tools = f.tools.join(", "),
            load = self.load_before,
        );
        out.push_str(&self.table());
        let _ = write!(
            out,
            "\nPeak resident memory after all runs (`VmHWM`): `proxy-server` {}, `berth serve` {}.\n\n",
            rss_label(self.peak_rss_kib),
            rss_label(self.serve_peak_rss_kib)
        );
        out
    }
}

/// `1 KiB`, `1 MiB` or the byte count.
fn size_label(size: u64) -> String {
    match size {
        s if s >= 1024 * 1024 && s % (1024 * 1024) == 0 => format!("{} MiB", s / (1024 * 1024)),
        s if s >= 1024 && s % 1024 == 0 => format!("{} KiB", s / 1024),
        s => format!("{s} B"),
    }
}

/// A KiB count as MiB.
fn rss_label(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The errors wrk reported for a run, or `None` when there were none.
fn errors_label(m: &Measurement) -> Option<String> {
    let mut parts = Vec::new();
    if m.non_2xx > 0 {
        parts.push(format!("{} non-2xx/3xx", m.non_2xx));
    }
    if let Some(socket) = &m.socket_errors {
        parts.push(format!("socket errors: {socket}"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Per size and target (in `targets`' order), the median of `runs`:
/// requests per second, p50 and p99 each the median of the runs' values;
/// request and error counts summed.
fn medians(runs: &[Measurement], targets: &[Target]) -> Vec<Measurement> {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let mut out = Vec::new();
    for size in SIZES {
        for target in targets {
            let of: Vec<&Measurement> = runs.iter().filter(|m| m.size == size && m.target == target.name).collect();
            let Some(first) = of.first() else { continue };
            out.push(Measurement {
                size,
                target: first.target,
                rps: median(of.iter().map(|m| m.rps).collect()),
                p50_ms: median(of.iter().map(|m| m.p50_ms).collect()),
                p99_ms: median(of.iter().map(|m| m.p99_ms).collect()),
                requests: of.iter().map(|m| m.requests).sum(),
                non_2xx: of.iter().map(|m| m.non_2xx).sum(),
                socket_errors: of.iter().find_map(|m| m.socket_errors.clone()),
            });
        }
    }
    out
}

/// `berth serve`'s configuration in the benchmark: defaults, but for the
/// listeners, a trusted-header login, host-network endpoints and the
/// engine's network.
fn berth_serve_config(port: u16, staging_port: u16) -> String {
    format!(
        "listen = \"127.0.0.1:{port}\"\n\
         data_dir = \"data\"\n\
         [engine]\n\
         endpoints = \"host\"\n\
         network = \"bridge\"\n\
         [staging]\n\
         public_base = \"http://127.0.0.1:{staging_port}\"\n\
         bind = \"127.0.0.1:{staging_port}\"\n\
         [auth]\n\
         mode = \"header\"\n\
         [auth.header]\n\
         trusted_proxies = [\"127.0.0.1/32\"]\n"
    )
}

/// The nginx configuration: listen on `listen_port`, forward to the tool.
fn nginx_config(dir: &Path, listen_port: u16, tool_port: u16) -> String {
    let d = dir.display();
    format!(
        "worker_processes 2;\n\
         daemon off;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {d}/client_body;\n\
         \x20   proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         \x20   upstream tool {{ server 127.0.0.1:{tool_port}; keepalive 64; }}\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{listen_port};\n\
         \x20       location / {{\n\
         \x20           proxy_pass http://tool;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n"
    )
}

/// The HAProxy configuration: listen on `listen_port`, forward to the tool.
fn haproxy_config(listen_port: u16, tool_port: u16) -> String {
    format!(
        "global\n\
         \x20   nbthread 2\n\
         \x20   maxconn 4096\n\
         defaults\n\
         \x20   mode http\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 60s\n\
         \x20   timeout server 60s\n\
         \x20   http-reuse always\n\
         frontend bench\n\
         \x20   bind 127.0.0.1:{listen_port}\n\
         \x20   default_backend tool\n\
         backend tool\n\
         \x20   server tool 127.0.0.1:{tool_port}\n"
    )
}

/// Replaces the text between the markers `start` and `end` of `doc` with
/// `section`, creating the file (or appending the markers) when needed.
pub(crate) fn write_section(doc: &Path, start_mark: &str, end_mark: &str, section: &str) -> anyhow::Result<()> {
    let current = match std::fs::read_to_string(doc) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::from(
            "# Benchmarks\n\nMeasured with `cargo xtask bench`; the sections between the markers are generated.\n\n",
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", doc.display())),
    };
    let updated = match (current.find(start_mark), current.find(end_mark)) {
        (Some(start), Some(end)) if start < end => {
            format!("{}{start_mark}\n{section}{}", &current[..start], &current[end..])
        }
        _ => {
            let separator = if current.is_empty() || current.ends_with("\n\n") {
                ""
            } else if current.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{current}{separator}{start_mark}\n{section}{end_mark}\n")
        }
    };
    std::fs::write(doc, updated).with_context(|| format!("writing {}", doc.display()))
}

/// The last 40 lines of a log file.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The current time in UTC as `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn utc_now() -> String {
    let t = berth_manager::format_rfc3339(std::time::SystemTime::now());
    format!("{} {} UTC", &t[..10], &t[11..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUTPUT: &str = "Running 10s test @ http://127.0.0.1:1/bytes/1024
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.20ms  300.00us  12.00ms   90.00%
    Req/Sec    13.00k     1.00k   15.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.10ms
     90%    1.50ms
     99%    2.01s
  260000 requests in 10.00s, 280.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  26000.50
Transfer/sec:     28.00MB
";

    #[test]
    fn parses_wrk_output() -> anyhow::Result<()> {
        let m = parse_wrk(WRK_OUTPUT, 1024, "direct")?;
        assert!((m.rps - 26000.5).abs() < 1e-9);
        assert!((m.p50_ms - 0.812).abs() < 1e-9);
        assert!((m.p99_ms - 2010.0).abs() < 1e-9);
        assert_eq!(m.requests, 260_000);
        assert_eq!(m.non_2xx, 5);
        assert_eq!(m.socket_errors.as_deref(), Some("connect 0, read 3, write 0, timeout 1"));
        Ok(())
    }

    #[test]
    fn now_in_utc() {
        let now = utc_now();
        assert_eq!((now.len(), &now[4..5], &now[10..11], &now[16..]), (20, "-", " ", " UTC"), "{now}");
    }

    #[test]
    fn sections_are_replaced() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("berth-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let doc = dir.join("B.md");
        write_section(&doc, MARK_START, MARK_END, "one\n")?;
        write_section(&doc, MARK_START, MARK_END, "two\n")?;
        let text = std::fs::read_to_string(&doc)?;
        std::fs::remove_dir_all(&dir)?;
        assert!(text.starts_with("# Benchmarks"));
        assert!(text.ends_with(&format!("{MARK_START}\ntwo\n{MARK_END}\n")));
        assert!(!text.contains("one"));
        Ok(())
    }

    #[test]
    fn chunked_bodies() -> anyhow::Result<()> {
        assert_eq!(dechunk(b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n")?, b"abcde");
        Ok(())
    }
}

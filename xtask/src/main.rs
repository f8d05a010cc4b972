//! `cargo xtask <task>`: berth's project tasks.
//!
//! - `images [--real]`: build the tool images from this workspace (the
//!   test tool, and the proxy-server example that the multi-node swarm test
//!   runs inside its cluster) and import them into the engine (no registry
//!   needed); with `--real`, also
//!   the real apps' images (`berth_testkit::real_app_image`: a debootstrapped
//!   Debian base, then JupyterLab, Streamlit, Dash and Shiny), each cached
//!   by a hash of its inputs, with the time each step took.
//! - `test [args]`: build the images (the real apps' too), run
//!   `cargo test --workspace [args]`,
//!   check that the tests left no container or volume behind, and remove
//!   the test images again, except the real apps' images of the current
//!   sources, which stay as a cache (`--keep-images` keeps every image).
//! - `demo [--listen ADDR] [--no-real]`: build the demo tool images and the
//!   real tools (JupyterLab, Streamlit, Dash, Shiny; `--no-real` skips
//!   them), write a server config and registry under `target/demo/`, and
//!   run `berth serve` with them.
//! - `swarm-test [args]`: only the Docker Swarm tests (the conformance
//!   suite, the proxy's Docker tests and `berth serve` on a single-node
//!   swarm, the
//!   multi-node swarm of extra daemons in network namespaces), with
//!   `BERTH_REQUIRE_DOCKER=1` and `BERTH_REQUIRE_CLUSTER=1`, then the same
//!   leftover check as `test`.
//! - `bench proxy|launch|swarm|memory`: the benchmarks (see `bench.rs`,
//!   `bench_launch.rs`, `bench_swarm.rs`, `bench_memory.rs`).
//! - `schemathesis [args]`: schemathesis (from PyPI) against `berth serve`
//!   on the mock backend, open and with a token (see `schemathesis.rs`).

#![allow(clippy::print_stdout)] // A command-line program reports on stdout.

mod bench;
mod bench_launch;
mod bench_memory;
mod bench_swarm;
mod schemathesis;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use berth_manager::docker::DockerManager;

fn main() -> ExitCode {
    // Image builds report their progress through `tracing`; show it
    // (RUST_LOG overrides, e.g. RUST_LOG=warn for a quiet build).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,berth_testkit=info,berth_manager::docker::build=info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        eprintln!("usage: cargo xtask <images [--real]|test|swarm-test|demo|bench|schemathesis> [args]");
        return ExitCode::from(2);
    };
    let result = match task.as_str() {
        "images" => match rest {
            [] => images(false).map(|_| ()),
            [flag] if flag == "--real" => images(true).map(|_| ()),
            _ => {
                eprintln!("usage: cargo xtask images [--real]");
                return ExitCode::from(2);
            }
        },
        "test" => test(rest),
        "swarm-test" => swarm_test(rest),
        "demo" => demo(rest),
        "bench" => bench::run(rest),
        "schemathesis" => schemathesis::run(rest),
        other => {
            eprintln!("unknown task {other:?}; tasks: images, test, swarm-test, demo, bench, schemathesis");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The Docker Swarm tests, required to run (no skipping), then the
/// leftover check.
fn swarm_test(args: &[String]) -> anyhow::Result<()> {
    let rt = runtime()?;
    let docker = rt.block_on(connect())?;
    rt.block_on(berth_testkit::test_tool_image(&docker)).context("building the test tool image")?;
    rt.block_on(berth_testkit::test_proxy_image(&docker)).context("building the test proxy image")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = std::time::Instant::now();
    let status = Command::new(cargo)
        .args([
            "test",
            "--no-fail-fast",
            "-p",
            "berth-manager",
            "--test",
            "conformance_swarm",
            "--test",
            "swarm_errors",
        ])
        .args(["-p", "berth-proxy", "--test", "proxy_docker", "-p", "berth-fleet", "--test", "swarm_cluster"])
        .args(["--test", "fleet_nodes", "-p", "berth-server", "--test", "serve_swarm"])
        .args(args)
        .env(berth_testkit::ENV_REQUIRE_DOCKER, "1")
        .env(berth_testkit::cluster::ENV_REQUIRE_CLUSTER, "1")
        .status()
        .context("running cargo test")?;
    println!("the swarm tests took {:.1?}", started.elapsed());
    rt.block_on(async {
        // Only runs whose process has ended: other test processes on the
        // same engine may still be running theirs.
        let left: Vec<String> = berth_testkit::run_label_values(&docker)
            .await?
            .into_iter()
            .filter(|v| {
                let pid = v.split('x').next().unwrap_or_default();
                !std::path::Path::new("/proc").join(pid).exists()
            })
            .collect();
        for value in &left {
            berth_testkit::sweep_run(&docker, value).await?;
        }
        if !left.is_empty() {
            bail!(
                "the swarm tests left services, containers or volumes behind (runs {left:?}); they have been removed"
            );
        }
        anyhow::Ok(())
    })?;
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

async fn connect() -> anyhow::Result<DockerManager> {
    let config = berth_testkit::docker_config()?;
    DockerManager::connect(config)
        .await
        .context("connecting to the Docker engine (DOCKER_HOST or /var/run/docker.sock)")
}

/// Builds every tool image, and with `real` the real apps' images too;
/// returns their references.
fn images(real: bool) -> anyhow::Result<Vec<String>> {
    runtime()?.block_on(async {
        let docker = connect().await?;
        let started = std::time::Instant::now();
        let test_tool = berth_testkit::test_tool_image(&docker).await.context("building the test tool image")?;
        println!("{test_tool}  (built or found in {:.1?})", started.elapsed());
        let started = std::time::Instant::now();
        let test_proxy = berth_testkit::test_proxy_image(&docker).await.context("building the test proxy image")?;
        println!("{test_proxy}  (built or found in {:.1?})", started.elapsed());
        let mut built = vec![test_tool, test_proxy];
        if real {
            built.extend(real_images(&docker).await?);
        }
        Ok(built)
    })
}

/// Builds (or finds) the real apps' images layer by layer, printing how
/// long each layer took, so a first build shows where its time goes.
async fn real_images(docker: &DockerManager) -> anyhow::Result<Vec<String>> {
    let all = std::time::Instant::now();
    let started = std::time::Instant::now();
    let rootfs = berth_testkit::real_rootfs().await.context("making the Debian root filesystem")?;
    println!("{}  (made or found in {:.1?})", rootfs.display(), started.elapsed());
    let mut built = Vec::new();
    let started = std::time::Instant::now();
    let base = berth_testkit::real_base_image(docker).await.context("importing the Debian base image")?;
    println!("{base}  (imported or found in {:.1?})", started.elapsed());
    built.push(base);
    let started = std::time::Instant::now();
    let python = berth_testkit::real_python_image(docker).await.context("building the Python layer")?;
    println!("{python}  (built or found in {:.1?})", started.elapsed());
    built.push(python);
    for app in berth_testkit::RealApp::ALL {
        let started = std::time::Instant::now();
        let image = berth_testkit::real_app_image(docker, app).await.with_context(|| format!("building {app}"))?;
        println!("{image}  (built or found in {:.1?}; port {})", started.elapsed(), app.port());
        built.push(image);
    }
    println!("real app images ready in {:.1?}", all.elapsed());
    Ok(built)
}

fn test(args: &[String]) -> anyhow::Result<()> {
    let keep_images = args.iter().any(|a| a == "--keep-images");
    let cargo_args: Vec<&String> = args.iter().filter(|a| *a != "--keep-images").collect();
    let rt = runtime()?;
    let docker = rt.block_on(connect());
    let docker = match docker {
        Ok(d) => {
            // One cached step for every image, so no test pays for a build.
            images(true)?;
            Some(d)
        }
        Err(e) if berth_testkit::docker_required() => {
            bail!("{} is set but Docker is unreachable: {e:#}", berth_testkit::ENV_REQUIRE_DOCKER)
        }
        Err(e) => {
            eprintln!("warning: no Docker engine ({e:#}); Docker tests will report themselves skipped");
            None
        }
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = std::time::Instant::now();
    let status = Command::new(cargo)
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(&cargo_args)
        .status()
        .context("running cargo test")?;
    println!("cargo test --workspace took {:.1?}", started.elapsed());
    if let Some(docker) = docker {
        rt.block_on(async {
            let left = berth_testkit::run_label_values(&docker).await?;
            let live: Vec<_> = left
                .iter()
                .filter(|v| {
                    let pid = v.split('x').next().unwrap_or_default();
                    std::path::Path::new("/proc").join(pid).exists()
                })
                .collect();
            // Runs of processes that have ended but left objects behind are
            // a test bug: sweep them, and fail so the bug gets fixed.
            for value in &left {
                berth_testkit::sweep_run(&docker, value).await?;
            }
            if !keep_images {
                // The real apps' images take minutes to build and change
                // rarely: keep the ones these sources make (their tags are
                // content hashes), remove their stale versions and the
                // cheap test images.
                let keep = berth_testkit::real_image_references()?;
                let n = docker.remove_images_with_label_except(berth_testkit::IMAGE_LABEL, None, &keep).await?;
                println!("removed {n} test image(s); kept the real apps' images of these sources as a cache");
            }
            if !left.is_empty() && live.is_empty() {
                bail!("tests left containers or volumes behind (runs {left:?}); they have been removed");
            }
            anyhow::Ok(())
        })?;
    }
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}

/// Builds the demo tool images, writes a server config for them under
/// `target/demo/`, and runs `berth serve` with it until interrupted.
fn demo(args: &[String]) -> anyhow::Result<()> {
    let root = berth_testkit::workspace_root();
    let listen = args.iter().position(|a| a == "--listen").and_then(|i| args.get(i + 1)).cloned();
    let listen: std::net::SocketAddr = listen.as_deref().unwrap_or("127.0.0.1:8000").parse().context("--listen")?;
    let registry_text = std::fs::read_to_string(root.join("demo/tools.toml")).context("reading demo/tools.toml")?;
    let mut registry: toml::Table = registry_text.parse().context("parsing demo/tools.toml")?;
    let data_base = format!("http://{}:{}/_berth/data", berth_staging_host(), listen.port() + 1);
    let tools =
        registry.get_mut("tools").and_then(toml::Value::as_array_mut).context("demo/tools.toml has no [[tools]]")?;
    runtime()?.block_on(async {
        let docker = connect().await?;
        for tool in tools.iter_mut() {
            let t = tool.as_table_mut().context("a [[tools]] entry is not a table")?;
            let field = |k: &str| {
                t.get(k).and_then(toml::Value::as_str).map(str::to_owned).with_context(|| format!("tool without {k}"))
            };
            let (package, bin, repo) = (field("package")?, field("bin")?, field("image")?);
            let started = std::time::Instant::now();
            let image = berth_testkit::static_tool_image(&docker, &package, &bin, &repo).await?;
            println!("{image}  ({:.1?})", started.elapsed());
            t.insert("image".into(), image.into());
            // How to build the image is this task's business: the server's
            // registry refuses keys it does not know.
            t.remove("package");
            t.remove("bin");
            let files: Vec<toml::Value> = t
                .get("default_files")
                .and_then(toml::Value::as_array)
                .map(|a| a.iter().filter_map(toml::Value::as_str).map(|f| format!("{data_base}/{f}").into()).collect())
                .unwrap_or_default();
            t.insert("default_files".into(), files.into());
        }
        // The real tools (JupyterLab, Streamlit, Dash, Shiny), built here
        // from Debian and PyPI, unless --no-real.
        if !args.iter().any(|a| a == "--no-real") {
            let started = std::time::Instant::now();
            let real: toml::Table = berth_testkit::real_tools_registry(&docker)
                .await
                .context("building the real tools (cargo xtask demo --no-real skips them)")?
                .parse()
                .context("parsing the real tools registry")?;
            let real_tools = real.get("tools").and_then(toml::Value::as_array).cloned().unwrap_or_default();
            println!("{} real tools ({:.1?})", real_tools.len(), started.elapsed());
            tools.extend(real_tools);
        }
        anyhow::Ok(())
    })?;
    let dir = root.join("target/demo");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("tools.toml"), toml::to_string(&registry)?)?;
    let config = format!(
        "# Written by cargo xtask demo.\nlisten = \"{listen}\"\ndata_dir = \"state\"\ntools = \"tools.toml\"\n\n\
         [proxy]\nlogs_path = \"docker-logs\"\n\n[fleet]\nmemory_budget_mb = 6144\nidle_timeout_secs = 3600\n\n\
         [engine]\nendpoints = \"published\"\n\n[data]\ndir = {data:?}\n",
        data = root.join("demo/data").display().to_string()
    );
    std::fs::write(dir.join("berth.toml"), config)?;
    println!(
        "\nberth demo: open http://{listen}/  (the web app; API at http://{listen}/api/v1, tools under /docker/<name>/)"
    );
    println!("or: cargo run -q -p berth-server -- launch viz csv-viewer   then open http://{listen}/docker/viz/\n");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["run", "--quiet", "--package", "berth-server", "--bin", "berth", "--", "serve", "--config"])
        .arg(dir.join("berth.toml"))
        .status()
        .context("running berth serve")?;
    if !status.success() {
        bail!("berth serve ended with {status}");
    }
    Ok(())
}

/// The host name containers use to reach this machine.
fn berth_staging_host() -> &'static str {
    "host.docker.internal"
}

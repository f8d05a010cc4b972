//! `cargo xtask <task>`: berth's project tasks.
//!
//! - `images`: build the tool images from this workspace and import them
//!   into the engine (no registry needed).
//! - `test [args]`: build the images, run `cargo test --workspace [args]`,
//!   check that the tests left no container or volume behind, and remove
//!   the test images again (`--keep-images` keeps them as a cache).
//! - `demo`: build the images and run the demo (for now the manager-only
//!   example against the test tool).

#![allow(clippy::print_stdout)] // A command-line program reports on stdout.

mod bench;
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use berth_manager::docker::DockerManager;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        eprintln!("usage: cargo xtask <images|test|demo|bench> [args]");
        return ExitCode::from(2);
    };
    let result = match task.as_str() {
        "images" => images().map(|_| ()),
        "test" => test(rest),
        "demo" => demo(),
        "bench" => bench::run(rest),
        other => {
            eprintln!("unknown task {other:?}; tasks: images, test, demo, bench");
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

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

async fn connect() -> anyhow::Result<DockerManager> {
    let config = berth_testkit::docker_config()?;
    DockerManager::connect(config)
        .await
        .context("connecting to the Docker engine (DOCKER_HOST or /var/run/docker.sock)")
}

/// Builds every tool image; returns their references.
fn images() -> anyhow::Result<Vec<String>> {
    runtime()?.block_on(async {
        let docker = connect().await?;
        let started = std::time::Instant::now();
        let test_tool = berth_testkit::test_tool_image(&docker).await.context("building the test tool image")?;
        println!("{test_tool}  (built or found in {:.1?})", started.elapsed());
        Ok(vec![test_tool])
    })
}

fn test(args: &[String]) -> anyhow::Result<()> {
    let keep_images = args.iter().any(|a| a == "--keep-images");
    let cargo_args: Vec<&String> = args.iter().filter(|a| *a != "--keep-images").collect();
    let rt = runtime()?;
    let docker = rt.block_on(connect());
    let docker = match docker {
        Ok(d) => {
            images()?;
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
            let left = docker.label_values(berth_testkit::RUN_LABEL).await?;
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
                docker.sweep_label(berth_testkit::RUN_LABEL, value).await?;
            }
            if !keep_images {
                let n = docker.remove_images_with_label(berth_testkit::IMAGE_LABEL, None).await?;
                println!("removed {n} test image(s)");
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

fn demo() -> anyhow::Result<()> {
    let image = images()?.into_iter().next().context("no image built")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["run", "--quiet", "--package", "manager-only", "--", &image])
        .status()
        .context("running the manager-only example")?;
    if !status.success() {
        bail!("the demo failed ({status})");
    }
    Ok(())
}

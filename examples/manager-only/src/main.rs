//! A program that depends on berth-manager alone: it launches a tool
//! container with an input document, waits until the tool answers, prints
//! its endpoint and logs, and removes it.
//!
//! ```text
//! cargo run -p manager-only -- IMAGE [NAME]
//! ```
//!
//! The engine is found like the Docker CLI finds it (`DOCKER_HOST`, ...).
//! `cargo xtask demo` builds the test tool image and runs this with it.

#![allow(clippy::print_stdout)] // An example program reports on stdout.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_manager::docker::{DockerConfig, EndpointMode};
use berth_manager::{ContainerManager, ContainerSpec, DockerManager, LogOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let mut args = std::env::args().skip(1);
    let image = args.next().context("usage: manager-only IMAGE [NAME]")?;
    let name = args.next().unwrap_or_else(|| format!("berth-example-{}", std::process::id()));

    // Published on loopback, so the example works with local and remote engines alike.
    let config = DockerConfig::from_env()?.endpoint_mode(EndpointMode::PublishedPort);
    let manager = DockerManager::connect(config).await?;
    println!("connected to {} (API {})", manager.config().host.display_url(), manager.api_version());

    let document = serde_json::json!({
        "file_relationships": [],
        "parameters": {"greeting": "hello from berth"},
    });
    let spec = ContainerSpec::new(image, &name, 64).input_env(document);
    let info = manager.launch(&spec).await?;
    println!("launched {} ({}) from {}", info.name, &info.id[..12.min(info.id.len())], info.image);

    let result = serve_and_report(&manager, &name).await;
    manager.remove(&name).await?;
    println!("removed {name}");
    result
}

async fn serve_and_report(manager: &DockerManager, name: &str) -> anyhow::Result<()> {
    let endpoint = manager.endpoint(name).await?;
    println!("endpoint: {endpoint}");
    let started = Instant::now();
    loop {
        if let Ok((200, body)) = berth_manager_get(endpoint.addr).await {
            println!("ready after {:.1?}; GET / answered:\n{body}", started.elapsed());
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{name} did not answer 200 within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("logs:");
    for line in manager.logs(name, LogOptions::default()).await? {
        let at = line.timestamp.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        println!("  [{}.{:03}] {}", at.as_secs(), at.subsec_millis(), line.line);
    }
    Ok(())
}

/// A bare HTTP/1.0 GET with the standard library, to keep the example's
/// dependencies to berth-manager alone.
async fn berth_manager_get(addr: std::net::SocketAddr) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

//! `berth`: the berth server and its command-line client.
//!
//! ```text
//! berth serve --config berth.toml [--listen 127.0.0.1:8000]
//! berth [--server URL] [--token T] ls
//! berth launch NAME TOOL [--file URL]... [--param key=json]... [--no-wait]
//! berth logs NAME [-f] | history NAME | rm NAME
//! berth purge (--idle SECS | --label KEY[=VALUE])
//! berth volumes | volume-rm NAME
//! ```
//!
//! `serve` runs the proxy, the staging store, the lifecycle layer and the
//! management API in one process (see `config.rs` for the file). The other
//! subcommands call a running server's API (`--server`, default
//! `http://127.0.0.1:8000`, or `BERTH_SERVER`; token from `--token` or
//! `BERTH_TOKEN`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

/// jemalloc instead of the system allocator: with its background thread it
/// hands freed pages back to the system a few seconds after they are free
/// (glibc's arenas kept the buffers of a thousand routed containers'
/// connections resident for good: 52 MiB against jemalloc's 32 MiB once
/// idle, docs/BENCHMARKS.md). Its settings are in `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod auth;
mod client;
mod config;
mod engine;
mod peers;
mod serve;
#[cfg(test)]
mod testutil;
mod web;

#[derive(Parser)]
#[command(name = "berth", version, about = "Launch tool containers and proxy to them by name")]
struct Cli {
    /// The server the client subcommands talk to.
    #[arg(long, env = "BERTH_SERVER", default_value = "http://127.0.0.1:8000", global = true)]
    server: String,
    /// Bearer token for the server's API.
    #[arg(long, env = "BERTH_TOKEN", global = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// Configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Listening address (overrides the file's `listen`).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// List containers.
    Ls,
    /// Launch a tool from the registry (or, where the server allows it, an
    /// image) and wait until it is ready.
    Launch {
        /// Container name (a DNS label).
        name: String,
        /// Tool name in the registry (omit with --image).
        #[arg(required_unless_present = "image", conflicts_with = "image")]
        tool: Option<String>,
        /// An image to launch instead of a tool (the server's
        /// `[api] allow_images` must allow it).
        #[arg(long)]
        image: Option<String>,
        /// With --image: its HTTP port inside the container.
        #[arg(long, requires = "image")]
        port: Option<u16>,
        /// With --image: memory reservation in MiB.
        #[arg(long, requires = "image")]
        mem_mb: Option<u64>,
        /// Data-file URL (repeatable).
        #[arg(long = "file")]
        files: Vec<String>,
        /// Parameter as key=value, the value parsed as JSON when it parses (repeatable).
        #[arg(long = "param")]
        params: Vec<String>,
        /// Return once the container exists.
        #[arg(long)]
        no_wait: bool,
    },
    /// Print a container's logs.
    Logs {
        /// Container name.
        name: String,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
    },
    /// Print a container's request history.
    History {
        /// Container name.
        name: String,
    },
    /// Remove a container with its volumes and staged files.
    Rm {
        /// Container name.
        name: String,
    },
    /// List persistent volumes (a user's notebooks, ...), with their owners
    /// and the containers that mount them.
    Volumes,
    /// Remove a persistent volume and its data (refused while mounted).
    VolumeRm {
        /// Volume name.
        name: String,
    },
    /// Remove containers idle for a while, or carrying a label.
    Purge {
        /// Seconds without proxied activity.
        #[arg(long, conflicts_with = "label")]
        idle: Option<u64>,
        /// KEY or KEY=VALUE.
        #[arg(long)]
        label: Option<String>,
    },
}

fn parse_params(params: &[String]) -> anyhow::Result<Value> {
    let mut map = serde_json::Map::new();
    for p in params {
        let (k, v) = p.split_once('=').with_context(|| format!("--param {p:?} is not key=value"))?;
        map.insert(k.to_owned(), serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned())));
    }
    Ok(Value::Object(map))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The chain of causes, one line; no backtrace for expected errors.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let api = client::Api::new(&cli.server, cli.token.clone()).interactive(std::io::stderr().is_terminal());
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Serve { config, listen } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let mut config = config::Config::load(&config)?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            drop(out);
            serve::serve(config).await
        }
        Command::Ls => api.ls(&mut out).await,
        Command::Launch { name, tool, image, port, mem_mb, files, params, no_wait } => {
            let what = match (tool, image) {
                (Some(tool), _) => client::What::Tool(tool),
                (None, Some(image)) => client::What::Image { image, port, mem_reservation_mb: mem_mb },
                (None, None) => anyhow::bail!("give a tool or --image"),
            };
            api.launch(&name, &what, files, parse_params(&params)?, !no_wait, &mut out).await
        }
        Command::Logs { name, follow } => api.logs(&name, follow, &mut out).await,
        Command::History { name } => api.history(&name, &mut out).await,
        Command::Rm { name } => api.rm(&name, &mut out).await,
        Command::Volumes => api.volumes(&mut out).await,
        Command::VolumeRm { name } => api.volume_rm(&name, &mut out).await,
        Command::Purge { idle, label } => {
            let body = match (idle, label) {
                (Some(secs), _) => json!({"idle_secs": secs}),
                (None, Some(l)) => match l.split_once('=') {
                    Some((k, v)) => json!({"label": k, "value": v}),
                    None => json!({"label": l}),
                },
                (None, None) => anyhow::bail!("give --idle SECS or --label KEY[=VALUE]"),
            };
            api.purge(body, &mut out).await
        }
    }
}

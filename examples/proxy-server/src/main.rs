//! berth's proxy engine served on its own, in front of every berth
//! container of a Docker engine, with no web framework around it.
//!
//! ```text
//! proxy-server [--listen 127.0.0.1:8000] [--prefix /docker] [--host-suffix docker.localhost]
//!              [--endpoints auto|bridge|published|host] [--logs-path docker-logs]
//!              [--history FILE] [--threads N] [--backend docker|swarm] [--network NAME]
//! ```
//!
//! Path routing by default (`/docker/<name>/...`); `--host-suffix`
//! switches to hostname routing (`<name>.docker.localhost`). The engine is
//! found like the Docker CLI finds it. With `--history`, every proxied
//! request is recorded in that SQLite file (off the hot path). With
//! `--backend swarm` the engine must be a swarm manager, and the proxy
//! serves its swarm services' containers (host-mode published ports; with
//! `--network NAME`, their addresses on that attachable overlay network,
//! which this process must then run attached to). Used by `cargo xtask
//! bench proxy` (with and without history), `cargo xtask bench swarm`, and
//! inside the multi-node test swarm for the overlay endpoint mode.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use berth_history::{HistoryConfig, HistoryStore};
use berth_manager::ContainerManager;
use berth_manager::docker::{DockerConfig, DockerManager, EndpointMode};
use berth_manager::swarm::{SwarmConfig, SwarmEndpoints, SwarmManager};
use berth_proxy::{
    ActivityRecorder, AllowAll, HostRouting, PathRouting, Proxy, ProxyConfig, RouteTable, Routing, ServerLimits,
    TableConfig,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let mut listen: SocketAddr = "127.0.0.1:8000".parse()?;
    let mut routing = PathRouting::default();
    let mut host_suffix: Option<String> = None;
    let mut logs_path: Option<String> = None;
    let mut mode = EndpointMode::Auto;
    let mut history: Option<String> = None;
    let mut threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut swarm = false;
    let mut network: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--listen" => listen = value()?.parse().context("--listen takes an address like 127.0.0.1:8000")?,
            "--prefix" => routing = PathRouting::new(&value()?),
            "--host-suffix" => host_suffix = Some(value()?),
            "--logs-path" => logs_path = Some(value()?),
            "--history" => history = Some(value()?),
            "--threads" => threads = value()?.parse().context("--threads takes a number")?,
            "--backend" => {
                swarm = match value()?.as_str() {
                    "docker" => false,
                    "swarm" => true,
                    other => bail!("unknown --backend {other:?} (docker, swarm)"),
                }
            }
            "--network" => network = Some(value()?),
            "--endpoints" => {
                mode = match value()?.as_str() {
                    "auto" => EndpointMode::Auto,
                    "bridge" => EndpointMode::BridgeIp,
                    "published" => EndpointMode::PublishedPort,
                    "host" => EndpointMode::HostNetwork,
                    other => bail!("unknown --endpoints {other:?} (auto, bridge, published, host)"),
                }
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let routing = match host_suffix {
        Some(suffix) => {
            let mut h = HostRouting::new(&suffix);
            if let Some(p) = logs_path {
                h = h.logs_path(p);
            }
            Routing::Host(h)
        }
        None => Routing::Path(match logs_path {
            Some(p) => routing.logs_path(p),
            None => routing,
        }),
    };
    if network.is_some() && !swarm {
        bail!("--network needs --backend swarm");
    }
    let manager: Arc<dyn ContainerManager> = if swarm {
        let mut config = SwarmConfig::new(DockerConfig::from_env()?);
        if let Some(network) = network {
            config = config.endpoints(SwarmEndpoints::Network).network(network);
        }
        Arc::new(SwarmManager::connect(config).await?)
    } else {
        Arc::new(DockerManager::connect(DockerConfig::from_env()?.endpoint_mode(mode)).await?)
    };
    let table = RouteTable::start(manager, TableConfig::default()).await?;
    let recorder = match history {
        Some(path) => {
            let store = Arc::new(HistoryStore::open(&path, HistoryConfig::default()).await?);
            ActivityRecorder::spawn(store, 65_536)
        }
        None => ActivityRecorder::disabled(),
    };
    let proxy = Proxy::with_hooks(table, ProxyConfig { routing, ..ProxyConfig::default() }, AllowAll, recorder);
    // One single-threaded runtime per core serves requests; this runtime
    // keeps the route table fresh.
    tokio::task::spawn_blocking(move || {
        berth_proxy::serve_on_threads(listen, &proxy, ServerLimits::default(), threads)
    })
    .await??;
    Ok(())
}

//! The container backend `berth serve` drives (`[engine] backend`): one
//! Docker engine, services on a Docker Swarm manager, or the in-process
//! mock.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_manager::docker::{ContainerNetwork, DockerConfig, DockerManager, EndpointMode, Subnet};
use berth_manager::swarm::{ImageResolution, SwarmConfig, SwarmEndpoints, SwarmManager};
use berth_manager::{ContainerManager, LabelScheme, Placement};

use crate::config::{Backend, Config, SwarmImages};
use crate::peers::ContainerPeers;

/// The connected backend and what the staging listener needs of it.
pub struct Engine {
    /// The manager every layer shares.
    pub manager: Arc<dyn ContainerManager>,
    /// Who may use the staging listener (loopback, and where containers
    /// connect from).
    pub peers: ContainerPeers,
    /// True when containers connect from other hosts the peer check cannot
    /// know (a remote engine): the staging listener then serves every peer.
    pub remote: bool,
}

/// Connects the backend `config` names.
///
/// # Errors
///
/// A bad `DOCKER_HOST`, an unreachable engine, and for `swarm` an engine
/// that is no swarm manager, a missing network, with context.
pub async fn connect(config: &Config) -> anyhow::Result<Engine> {
    let docker = || -> anyhow::Result<DockerConfig> {
        Ok(DockerConfig::from_env()?.labels(LabelScheme::new(config.root_label.clone())))
    };
    match config.engine.backend {
        Backend::Mock => Ok(mock(config)),
        Backend::Docker => {
            let mode = match config.engine.endpoints.as_deref() {
                Some("bridge") => EndpointMode::BridgeIp,
                Some("published") => EndpointMode::PublishedPort,
                Some("host") => EndpointMode::HostNetwork,
                _ => EndpointMode::Auto,
            };
            let manager =
                Arc::new(DockerManager::connect(docker()?.endpoint_mode(mode).network(network(config))).await?);
            manager.prepare_network().await.context("preparing the containers' network ([engine] network)")?;
            let remote = !manager.config().host.is_local();
            let peers = ContainerPeers::new({
                let manager = manager.clone();
                Arc::new(move || {
                    let manager = manager.clone();
                    Box::pin(async move { manager.network_subnets().await })
                })
            });
            Ok(Engine { manager, peers, remote })
        }
        Backend::Swarm => {
            let swarm = swarm_config(config, docker()?);
            let manager =
                Arc::new(SwarmManager::connect(swarm).await.context("connecting to the swarm manager ([engine])")?);
            // Containers connect from the manager's own networks (tasks on
            // its node) and from the other nodes' addresses (their
            // engines masquerade outgoing connections).
            let peers = ContainerPeers::new({
                let manager = manager.clone();
                Arc::new(move || {
                    let manager = manager.clone();
                    Box::pin(async move {
                        let mut subnets = manager.engine().network_subnets().await?;
                        for node in manager.nodes().await? {
                            if let Some(addr) = node.addr {
                                let prefix = if addr.is_ipv4() { 32 } else { 128 };
                                if let Ok(s) = format!("{addr}/{prefix}").parse::<Subnet>() {
                                    subnets.push(s);
                                }
                            }
                        }
                        Ok(subnets)
                    })
                })
            });
            Ok(Engine { manager, peers, remote: false })
        }
    }
}

/// The in-process mock engine: it knows every image of the registry (each
/// runs the mock tool), so registry tools launch as they would on Docker.
fn mock(config: &Config) -> Engine {
    use berth_manager::mock::{MockConfig, MockEngine, MockManager};
    let engine = MockEngine::new();
    if let Ok(registry) = config.registry() {
        for tool in &registry.tools {
            engine.add_image(&tool.image);
        }
    }
    let labels = LabelScheme::new(config.root_label.clone());
    let manager = Arc::new(MockManager::with_config(engine, MockConfig { labels, ..MockConfig::default() }));
    tracing::warn!("[engine] backend = \"mock\": containers are stand-ins inside this process, not real tools");
    // Mock containers fetch nothing from the staging listener but through
    // loopback, which is always allowed.
    let peers = ContainerPeers::new(Arc::new(|| Box::pin(async { Ok(Vec::new()) })));
    Engine { manager, peers, remote: false }
}

/// The network containers join on a single engine (`[engine] network`):
/// by default a bridge of berth's own on which they cannot reach each
/// other, so a container is reached through berth's proxy only.
fn network(config: &Config) -> ContainerNetwork {
    let labels = config.engine.network_labels.clone();
    match config.engine.network.as_deref() {
        Some("bridge") => ContainerNetwork::EngineDefault,
        Some(name) => ContainerNetwork::Isolated { name: name.to_owned(), labels },
        None => ContainerNetwork::Isolated { name: format!("{}-isolated", config.root_label), labels },
    }
}

/// The swarm settings of `config` over the engine settings `docker`.
fn swarm_config(config: &Config, docker: DockerConfig) -> SwarmConfig {
    let section = &config.engine.swarm;
    let mut swarm = SwarmConfig::new(docker);
    swarm.endpoints = match config.engine.endpoints.as_deref() {
        Some("network") => SwarmEndpoints::Network,
        _ => SwarmEndpoints::PublishedPort,
    };
    swarm.network = section.network.clone();
    swarm.placement = Placement { constraints: section.constraints.clone(), preferences: section.preferences.clone() };
    swarm.images = match section.images {
        SwarmImages::Local => ImageResolution::LocalId,
        SwarmImages::Registry => ImageResolution::Registry,
    };
    swarm.address_label = section.address_label.clone();
    if let Some(secs) = section.start_timeout_secs {
        swarm.start_timeout = Duration::from_secs(secs);
    }
    if let Some(secs) = section.unschedulable_grace_secs {
        swarm.unschedulable_grace = Duration::from_secs(secs);
    }
    swarm.volume_driver = section.volume_driver.clone();
    swarm.volume_driver_options = section.volume_driver_options.clone();
    swarm
}

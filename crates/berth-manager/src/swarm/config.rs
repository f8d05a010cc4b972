//! Settings of a [`SwarmManager`](super::SwarmManager).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::docker::DockerConfig;
use crate::placement::Placement;

/// How berth reaches a swarm container's HTTP port.
///
/// Neither way uses a virtual IP or the ingress routing mesh: services get
/// `endpoint_mode = dnsrr`. Kernels without IPVS cannot use VIPs at all,
/// and IPVS silently drops connections (websockets) idle for 15 minutes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SwarmEndpoints {
    /// The container port is published in host mode on a random port of
    /// the node the task runs on; berth connects to `node address:port`.
    /// The node's address is its node label `<root>.address` when set,
    /// else the address the swarm knows it by. Host-mode ports bind every
    /// address of the node: firewall them so only berth reaches them.
    #[default]
    PublishedPort,
    /// The task's address on [`SwarmConfig::network`] and the container
    /// port itself, found through the swarm's DNS (`endpoint_mode =
    /// dnsrr` makes the service name resolve to its task's address). berth
    /// must itself run attached to that (attachable, overlay) network.
    /// Nothing is published on the nodes.
    Network,
}

/// How a service names its image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImageResolution {
    /// By the image ID found on the manager's engine (`sha256:...`): every
    /// node runs exactly those bits, and nodes never contact a registry
    /// (the engine skips pulls for images named by ID). The image must be
    /// loaded on every node that may run it (`docker save | docker load`);
    /// a node without it rejects the task, which is
    /// [`Error::ImageUnavailable`](crate::Error::ImageUnavailable).
    #[default]
    LocalId,
    /// By reference, as given: each node pulls it from its registry if it
    /// lacks it (a deployment with a registry the nodes can reach). The
    /// manager's engine need not have it.
    Registry,
}

/// Settings of a [`SwarmManager`](super::SwarmManager): how to reach a
/// manager node (the engine settings) and how services are made.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
    /// How to reach a swarm manager's engine (`DOCKER_HOST` and friends),
    /// the root label, and the per-call timeouts. Its endpoint mode,
    /// publish IP and network fields are not used: see
    /// [`endpoints`](Self::endpoints) and [`network`](Self::network).
    pub engine: DockerConfig,
    /// How endpoints are found.
    pub endpoints: SwarmEndpoints,
    /// An overlay network every service is attached to (required for
    /// [`SwarmEndpoints::Network`]).
    pub network: Option<String>,
    /// Constraints and spread preferences every service gets, on top of
    /// the spec's own (`node.labels.berth==yes`).
    pub placement: Placement,
    /// How images are referenced.
    pub images: ImageResolution,
    /// Node label whose value is the address berth uses for that node's
    /// published ports; `None` means `<root>.address`.
    pub address_label: Option<String>,
    /// How long a task may take to reach `running` (pulls included)
    /// before the launch gives up and removes the service.
    pub start_timeout: Duration,
    /// How long a task may wait for a node (`pending`, "no suitable node")
    /// before the launch fails with
    /// [`Error::Unschedulable`](crate::Error::Unschedulable) and removes
    /// the service.
    pub unschedulable_grace: Duration,
    /// Time a container gets between SIGTERM and SIGKILL when removed.
    pub stop_grace: Duration,
    /// How often the event stream re-reads task states (besides the
    /// engine's own events, which trigger a re-read at once).
    pub poll_interval: Duration,
    /// Volume driver for persistent volumes (`local` with NFS options, a
    /// plugin), so that every node mounts the same data. `None`: each
    /// node's local driver, and a container goes to the node that holds
    /// its persistent volume.
    pub volume_driver: Option<String>,
    /// Options of [`volume_driver`](Self::volume_driver); `{name}` in a
    /// value is replaced by the volume's name (`device = ":/export/{name}"`).
    pub volume_driver_options: BTreeMap<String, String>,
}

impl SwarmConfig {
    /// Defaults over `engine`: published ports, no network, no placement,
    /// images by local ID, 120 s to start, 3 s to find a node, 2 s stop
    /// grace, a 1 s poll, node-local persistent volumes.
    pub fn new(engine: DockerConfig) -> Self {
        SwarmConfig {
            engine,
            endpoints: SwarmEndpoints::PublishedPort,
            network: None,
            placement: Placement::default(),
            images: ImageResolution::LocalId,
            address_label: None,
            start_timeout: Duration::from_secs(120),
            unschedulable_grace: Duration::from_secs(3),
            stop_grace: Duration::from_secs(2),
            poll_interval: Duration::from_secs(1),
            volume_driver: None,
            volume_driver_options: BTreeMap::new(),
        }
    }

    /// Sets how endpoints are found.
    pub fn endpoints(mut self, endpoints: SwarmEndpoints) -> Self {
        self.endpoints = endpoints;
        self
    }

    /// Sets the network every service joins.
    pub fn network(mut self, network: impl Into<String>) -> Self {
        self.network = Some(network.into());
        self
    }

    /// Adds a constraint every service gets.
    pub fn constraint(mut self, constraint: impl Into<String>) -> Self {
        self.placement.constraints.push(constraint.into());
        self
    }

    /// Adds a spread preference every service gets.
    pub fn spread(mut self, descriptor: impl Into<String>) -> Self {
        self.placement.preferences.push(descriptor.into());
        self
    }

    /// Sets how images are referenced.
    pub fn images(mut self, images: ImageResolution) -> Self {
        self.images = images;
        self
    }

    /// The node label holding a node's address for endpoints.
    pub fn address_label_key(&self) -> String {
        self.address_label.clone().unwrap_or_else(|| format!("{}.address", self.engine.labels.root()))
    }
}

//! `SwarmManager`: berth containers as Docker Swarm services, on bollard.
//!
//! One service per berth container: one replica, restart condition `none`
//! (berth decides what a failure means), `endpoint_mode = dnsrr` (no VIP,
//! no ingress routing mesh), the berth labels on the service and on its
//! container spec. Everything berth knows is read back cluster-wide from
//! the managers (services, tasks, nodes, configs), never from one node's
//! container list, so a berth that restarts finds containers on every
//! node. Like the `docker` module, this is a bollard module: no bollard
//! type appears in its public API.
//!
//! How the parts of a [`ContainerSpec`] travel to a remote node:
//!
//! - image: by ID ([`ImageResolution::LocalId`]), so nodes without a
//!   registry run a locally loaded image; or by reference
//!   ([`ImageResolution::Registry`]);
//! - input mode `file`: a swarm *config* (stored in the managers' raft log,
//!   delivered by the swarm to whichever node runs the task, mounted at the
//!   path, removed with the service). The archive API berth uses on a
//!   single engine cannot work here: it needs the node's own engine API
//!   and a container that exists but has not started, while a swarm node
//!   starts the container as soon as it has created it. Configs are
//!   limited to [`MAX_CONFIG_BYTES`];
//! - extra directories: anonymous volumes, created by the node with the
//!   container and removed with it (the node's engine removes a swarm
//!   task's anonymous volumes when it removes the task's container);
//! - persistent volumes: a named volume on the node (or on shared storage,
//!   [`SwarmConfig::volume_driver`]), its owner kept in a swarm config that
//!   is the cluster-wide record of the volume; without shared storage, a
//!   container goes to the node that holds its volume;
//! - `/dev/shm` size: a tmpfs mount (swarm has no `ShmSize`);
//! - CPU and memory: `Resources.Limits` and `Resources.Reservations`, so
//!   the swarm's scheduler places by memory reservation.

mod config;
mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use bollard::models::{
    Config as SwarmObjectConfig, ConfigSpec, EndpointPortConfig, EndpointPortConfigProtocolEnum,
    EndpointPortConfigPublishModeEnum, EndpointSpec, EndpointSpecModeEnum, Limit, LocalNodeState, Mount,
    MountTmpfsOptions, MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig, NetworkAttachmentConfig, Node,
    NodeSpecAvailabilityEnum, NodeSpecRoleEnum, ResourceObject, Service, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, Task, TaskSpec, TaskSpecContainerSpec, TaskSpecContainerSpecConfigs,
    TaskSpecContainerSpecFile1, TaskSpecPlacement, TaskSpecPlacementPreferences, TaskSpecPlacementSpread,
    TaskSpecResources, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    EventsOptions, InspectServiceOptions, ListConfigsOptions, ListContainersOptions, ListNodesOptions,
    ListServicesOptions, ListTasksOptions, ListVolumesOptions, UpdateConfigOptions,
};
use futures_util::{StreamExt, TryStreamExt};

pub use config::{ImageResolution, SwarmConfig, SwarmEndpoints};

use crate::docker::{DockerManager, log_lines, logs_options, mib_to_bytes};
use crate::error::{Error, Result};
use crate::manager::{
    Capabilities, ContainerManager, EventStreamBox, LogStreamBox, check_persistent_volume, container_labels,
    persistent_volume_labels, persistent_volumes_from_labels, port_from_labels, validate_for,
};
use crate::placement::{NodeInfo, Placement};
use crate::spec::{ContainerSpec, ENV_INPUT_JSON, ENV_INPUT_JSON_PATH, ENV_INPUT_JSON_URL, InputMode};
use crate::time::EngineTime;
use crate::types::{
    ContainerEvent, ContainerInfo, ContainerState, Endpoint, EventKind, LabelScheme, ListFilter, LogLine, LogOptions,
    VolumeInfo,
};
use state::{TaskView, exited_after_running, latest, node_is_down, node_name, task_view, unschedulable_reason};

/// Largest input document mode `file` delivers on a swarm, in bytes: a
/// swarm config holds less than 1000 KiB ("config data must be larger
/// than 0 and less than 1024000 bytes"). Larger documents are refused
/// with [`Error::InputTooLarge`] before anything is made; use mode `url`
/// for them.
pub const MAX_CONFIG_BYTES: usize = 1000 * 1024 - 1;

/// Label of the swarm's own on a task's container: the id of its service.
const SERVICE_ID_LABEL: &str = "com.docker.swarm.service.id";

/// 24 hex digits of SHA-256 over `parts` (NUL-separated): short, stable
/// config names for volume records.
fn hex_digest(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update(p.as_bytes());
        hasher.update([0]);
    }
    hasher.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// [`ContainerManager`] on a Docker Swarm: each container is a swarm
/// service with one task, placed by the swarm's scheduler.
///
/// Connect it to a manager node's engine (as the Docker CLI would:
/// `DOCKER_HOST`, TLS); [`SwarmManager::connect`] refuses an engine whose
/// swarm mode is inactive or that is only a worker.
#[derive(Debug, Clone)]
pub struct SwarmManager {
    engine: DockerManager,
    config: Arc<SwarmConfig>,
    /// The swarm node id of the engine berth talks to.
    local_node: Arc<str>,
    /// Final states of services this manager (and its clones) removes, for
    /// the event streams: a task that ended just before its service was
    /// removed still owes its `died` event.
    removals: tokio::sync::broadcast::Sender<(String, TaskView)>,
}

/// What [`SwarmManager::sweep_label`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepCount {
    /// Services removed.
    pub services: usize,
    /// Configs (input documents, volume records) removed.
    pub configs: usize,
}

impl SwarmManager {
    /// Connects to the manager's engine and checks that it can manage
    /// services.
    ///
    /// # Errors
    ///
    /// As [`DockerManager::connect`]; [`Error::NotSwarmManager`] when swarm
    /// mode is not active on the engine or the engine is a worker;
    /// [`Error::Config`] when [`SwarmConfig::network`] is missing, not an
    /// overlay network, or missing or not attachable for
    /// [`SwarmEndpoints::Network`].
    pub async fn connect(config: SwarmConfig) -> Result<Self> {
        let engine = DockerManager::connect(config.engine.clone()).await?;
        let endpoint = config.engine.host.display_url();
        let info = engine.call("info", "engine", engine.client().info()).await?;
        let swarm = info.swarm.unwrap_or_default();
        let node_state = swarm.local_node_state.unwrap_or(LocalNodeState::EMPTY);
        if node_state != LocalNodeState::ACTIVE {
            let detail = swarm.error.filter(|e| !e.is_empty()).map(|e| format!(" ({e})")).unwrap_or_default();
            return Err(Error::NotSwarmManager {
                endpoint,
                reason: format!(
                    "swarm mode is {}{detail}: run `docker swarm init` there, or point DOCKER_HOST at a swarm manager",
                    if node_state == LocalNodeState::EMPTY { "inactive".to_owned() } else { node_state.to_string() }
                ),
            });
        }
        if swarm.control_available != Some(true) {
            return Err(Error::NotSwarmManager {
                endpoint,
                reason: "this engine is a swarm worker: point DOCKER_HOST at a manager node".to_owned(),
            });
        }
        let local_node: Arc<str> = swarm.node_id.unwrap_or_default().into();
        if config.endpoints == SwarmEndpoints::Network && config.network.is_none() {
            return Err(Error::Config {
                reason: "swarm endpoints = \"network\" needs a network (the overlay network berth is attached to)"
                    .to_owned(),
                source: None,
            });
        }
        if let Some(network) = &config.network {
            let found = engine
                .call("inspect network", network, engine.client().inspect_network(network, None))
                .await
                .map_err(|e| Error::Config {
                reason: format!("swarm network {network:?} cannot be used"),
                source: Some(Box::new(e)),
            })?;
            if found.scope.as_deref() != Some("swarm") {
                return Err(Error::Config {
                    reason: format!(
                        "network {network:?} is not a swarm-scoped (overlay) network: create it with `docker network create -d overlay --attachable {network}`"
                    ),
                    source: None,
                });
            }
            // berth reaches tasks on the network only from a container of
            // its own attached to it, and only an attachable overlay takes
            // containers that are not swarm services.
            if config.endpoints == SwarmEndpoints::Network && found.attachable != Some(true) {
                return Err(Error::Config {
                    reason: format!(
                        "overlay network {network:?} is not attachable, so berth's own container cannot join it to reach \
                         containers there (swarm endpoints = \"network\"): create it with \
                         `docker network create -d overlay --attachable {network}`"
                    ),
                    source: None,
                });
            }
        }
        tracing::info!(engine = %endpoint, node = %local_node, "connected to swarm manager");
        let (removals, _) = tokio::sync::broadcast::channel(256);
        Ok(SwarmManager { engine, config: Arc::new(config), local_node, removals })
    }

    /// The settings in use.
    pub fn config(&self) -> &SwarmConfig {
        &self.config
    }

    /// The engine of the manager node berth talks to (for its images and
    /// the volumes on that node).
    pub fn engine(&self) -> &DockerManager {
        &self.engine
    }

    /// The swarm node id of the manager's own node.
    pub fn local_node_id(&self) -> &str {
        &self.local_node
    }

    fn scheme(&self) -> &LabelScheme {
        &self.config.engine.labels
    }

    fn image_key(&self) -> String {
        format!("{}.image", self.scheme().root())
    }

    fn input_key(&self) -> String {
        format!("{}.input", self.scheme().root())
    }

    fn volume_key(&self) -> String {
        format!("{}.volume", self.scheme().root())
    }

    fn volume_node_key(&self) -> String {
        format!("{}.node", self.scheme().root())
    }

    async fn call<T>(
        &self,
        operation: &'static str,
        subject: &str,
        fut: impl std::future::Future<Output = std::result::Result<T, bollard::errors::Error>>,
    ) -> Result<T> {
        match self.engine.call(operation, subject, fut).await {
            Err(Error::Engine { status: 503, message, .. }) => {
                Err(Error::NotSwarmManager { endpoint: self.config.engine.host.display_url(), reason: message })
            }
            other => other,
        }
    }

    /// The service called exactly `name` with this manager's root label.
    async fn service_named(&self, name: &str) -> Result<Service> {
        if !engine_name_ok(name) {
            return Err(Error::not_found(name));
        }
        let opts = InspectServiceOptions { insert_defaults: false };
        let service = match self.call("inspect", name, self.engine.client().inspect_service(name, Some(opts))).await {
            Ok(s) => s,
            // An ID prefix matching several services, in the engine's words.
            Err(Error::InvalidSpec { .. }) => return Err(Error::not_found(name)),
            Err(e) => return Err(e),
        };
        // The engine resolves IDs and ID prefixes where a name is given.
        let spec = service.spec.as_ref();
        let same_name = spec.and_then(|s| s.name.as_deref()) == Some(name);
        let ours = spec.and_then(|s| s.labels.as_ref()).is_some_and(|l| l.contains_key(self.scheme().root()));
        if !(same_name && ours) {
            return Err(Error::not_found(name));
        }
        Ok(service)
    }

    async fn tasks_of(&self, service_id: &str) -> Result<Vec<Task>> {
        let opts =
            ListTasksOptions { filters: Some(HashMap::from([("service".to_owned(), vec![service_id.to_owned()])])) };
        match self.call("list tasks", service_id, self.engine.client().list_tasks(Some(opts))).await {
            Ok(tasks) => Ok(tasks.into_iter().filter(|t| t.service_id.as_deref() == Some(service_id)).collect()),
            // The service went away between two calls.
            Err(Error::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn all_tasks(&self) -> Result<Vec<Task>> {
        self.call("list tasks", "tasks", self.engine.client().list_tasks(None::<ListTasksOptions>)).await
    }

    async fn node(&self, id: &str) -> Result<Option<Node>> {
        match self.call("inspect node", id, self.engine.client().inspect_node(id)).await {
            Ok(n) => Ok(Some(n)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn all_nodes(&self) -> Result<Vec<Node>> {
        self.call("list nodes", "nodes", self.engine.client().list_nodes(None::<ListNodesOptions>)).await
    }

    /// The service, its newest task and that task's node.
    async fn lookup(&self, name: &str) -> Result<(Service, Option<Task>, Option<Node>)> {
        let service = self.service_named(name).await?;
        let id = service.id.clone().unwrap_or_default();
        let tasks = self.tasks_of(&id).await?;
        let task = latest(&tasks).cloned();
        let node = match task.as_ref().and_then(|t| t.node_id.as_deref()) {
            Some(n) => self.node(n).await?,
            None => None,
        };
        Ok((service, task, node))
    }

    /// Extra-directory volumes on the manager's own node, by owner.
    async fn local_volumes(&self, owner: Option<&str>) -> Result<HashMap<String, Vec<String>>> {
        let scheme = self.scheme();
        let owner_key = scheme.volume_owner_key();
        let filter = match owner {
            Some(o) => format!("{owner_key}={o}"),
            None => owner_key.clone(),
        };
        let opts = ListVolumesOptions {
            filters: Some(HashMap::from([("label".to_owned(), vec![scheme.root().to_owned(), filter])])),
        };
        let list = self.call("list volumes", "volumes", self.engine.client().list_volumes(Some(opts))).await?;
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for v in list.volumes.unwrap_or_default() {
            if let Some(o) = v.labels.get(&owner_key) {
                out.entry(o.clone()).or_default().push(v.name);
            }
        }
        for names in out.values_mut() {
            names.sort();
        }
        Ok(out)
    }

    fn info_from(
        &self,
        service: &Service,
        task: Option<&Task>,
        node: Option<&Node>,
        volumes: Vec<String>,
    ) -> ContainerInfo {
        let scheme = self.scheme();
        let spec = service.spec.clone().unwrap_or_default();
        let name = spec.name.clone().unwrap_or_default();
        let labels: BTreeMap<String, String> = spec.labels.clone().unwrap_or_default().into_iter().collect();
        let view: TaskView = task_view(task, node);
        let image = labels.get(&self.image_key()).cloned().unwrap_or_else(|| {
            spec.task_template
                .as_ref()
                .and_then(|t| t.container_spec.as_ref())
                .and_then(|c| c.image.clone())
                .unwrap_or_default()
        });
        let persistent_volumes = persistent_volumes_from_labels(scheme, &labels);
        ContainerInfo {
            id: service.id.clone().unwrap_or_default(),
            container_port: port_from_labels(scheme, &name, &labels).ok(),
            mem_reservation_mb: labels.get(&scheme.mem_key()).and_then(|v| v.parse().ok()),
            name,
            image,
            labels,
            state: view.state,
            exit_code: view.exit_code,
            created: service.created_at.as_ref().and_then(EngineTime::system_time).unwrap_or(SystemTime::UNIX_EPOCH),
            started: view.started,
            volumes,
            persistent_volumes,
            node: task.and_then(|t| t.node_id.clone()),
            message: view.message,
        }
    }

    /// The service image for `reference`.
    async fn resolve_image(&self, reference: &str) -> Result<String> {
        match self.config.images {
            ImageResolution::Registry => Ok(reference.to_owned()),
            ImageResolution::LocalId => {
                match self.call("inspect image", reference, self.engine.client().inspect_image(reference)).await {
                    Ok(image) => image.id.ok_or_else(|| Error::ImageUnavailable {
                        image: reference.to_owned(),
                        source: Some("the engine reports no image id".into()),
                    }),
                    Err(Error::NotFound { .. }) => Err(Error::ImageUnavailable {
                        image: reference.to_owned(),
                        source: Some(
                            "not on the swarm manager's engine (images are run by the ID found there: load it on the manager and on every node that may run it)"
                                .into(),
                        ),
                    }),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Creates the config holding a mode-`file` document.
    async fn create_input_config(&self, spec: &ContainerSpec, doc: &[u8]) -> Result<(String, String)> {
        let scheme = self.scheme();
        let name = format!("berth-in-{:016x}{:08x}", rand::random::<u64>(), rand::random::<u32>());
        let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        labels.insert(scheme.root().to_owned(), "true".to_owned());
        labels.insert(scheme.volume_owner_key(), spec.name.clone());
        labels.insert(self.input_key(), "true".to_owned());
        let config = ConfigSpec {
            name: Some(name.clone()),
            labels: Some(labels),
            data: Some(base64::engine::general_purpose::STANDARD.encode(doc)),
            templating: None,
        };
        let created = self.call("create config", &spec.name, self.engine.client().create_config(config)).await?;
        Ok((created.id, name))
    }

    async fn remove_config(&self, id: &str) {
        for attempt in 0..50 {
            match self.call("remove config", id, self.engine.client().delete_config(id)).await {
                Ok(()) | Err(Error::NotFound { .. }) => return,
                // Still referenced by a service being removed.
                Err(_) if attempt < 49 => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => tracing::warn!(config = %id, error = %e, "could not remove swarm config"),
            }
        }
    }

    /// The name of the config that records persistent volume `volume`.
    fn volume_record_name(&self, volume: &str) -> String {
        format!("berth-vol-{}", hex_digest(&[self.scheme().root(), volume]))
    }

    async fn volume_record(&self, volume: &str) -> Result<Option<SwarmObjectConfig>> {
        let name = self.volume_record_name(volume);
        match self.call("inspect config", &name, self.engine.client().inspect_config(&name)).await {
            Ok(c) => {
                let labels = c.spec.as_ref().and_then(|s| s.labels.as_ref());
                let ours = labels.is_some_and(|l| {
                    l.get(&self.volume_key()).map(String::as_str) == Some(volume)
                        && l.contains_key(self.scheme().root())
                });
                Ok(ours.then_some(c))
            }
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Records (on first use) and checks the spec's persistent volumes;
    /// their mounts, and the constraints that send the container to the
    /// nodes holding them.
    async fn persistent_mounts(
        &self,
        spec: &ContainerSpec,
        records: &mut Vec<String>,
    ) -> Result<(Vec<Mount>, Vec<String>)> {
        let scheme = self.scheme();
        let mut mounts = Vec::new();
        let mut pins = Vec::new();
        for volume in &spec.volumes {
            let record = match self.volume_record(&volume.name).await? {
                Some(r) => r,
                None => {
                    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
                    labels.extend(persistent_volume_labels(scheme, volume));
                    labels.insert(self.volume_key(), volume.name.clone());
                    let data = serde_json::json!({ "volume": volume.name, "owner": volume.owner }).to_string();
                    let config = ConfigSpec {
                        name: Some(self.volume_record_name(&volume.name)),
                        labels: Some(labels),
                        data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
                        templating: None,
                    };
                    match self.call("create config", &spec.name, self.engine.client().create_config(config)).await {
                        Ok(made) => records.push(made.id),
                        // Made by a launch racing this one: its labels decide.
                        Err(Error::Conflict { .. } | Error::Engine { status: 409, .. }) => {}
                        Err(e) => return Err(e),
                    }
                    self.volume_record(&volume.name).await?.ok_or_else(|| Error::Engine {
                        operation: "create config",
                        status: 0,
                        message: format!("the record of volume {:?} vanished while it was made", volume.name),
                    })?
                }
            };
            let labels: BTreeMap<String, String> =
                record.spec.and_then(|s| s.labels).unwrap_or_default().into_iter().collect();
            check_persistent_volume(scheme, &spec.name, volume, &labels)?;
            if self.config.volume_driver.is_none()
                && let Some(node) = labels.get(&self.volume_node_key())
            {
                pins.push(format!("node.id=={node}"));
            }
            let mut vlabels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
            vlabels.extend(persistent_volume_labels(scheme, volume));
            let driver_config = self.config.volume_driver.as_ref().map(|driver| MountVolumeOptionsDriverConfig {
                name: Some(driver.clone()),
                options: Some(
                    self.config
                        .volume_driver_options
                        .iter()
                        .map(|(k, v)| (k.clone(), v.replace("{name}", &volume.name)))
                        .collect(),
                ),
            });
            mounts.push(Mount {
                target: Some(volume.path.clone()),
                source: Some(volume.name.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(false),
                volume_options: Some(MountVolumeOptions { labels: Some(vlabels), driver_config, ..Default::default() }),
                ..Default::default()
            });
        }
        Ok((mounts, pins))
    }

    /// Records the node a container with persistent volumes landed on, so
    /// the next container mounting them goes there too (node-local
    /// volumes only).
    async fn pin_volumes(&self, spec: &ContainerSpec, node: &str) {
        if self.config.volume_driver.is_some() {
            return;
        }
        for volume in &spec.volumes {
            let Ok(Some(record)) = self.volume_record(&volume.name).await else { continue };
            let Some(mut cspec) = record.spec.clone() else { continue };
            let labels = cspec.labels.get_or_insert_with(HashMap::new);
            if labels.contains_key(&self.volume_node_key()) {
                continue;
            }
            labels.insert(self.volume_node_key(), node.to_owned());
            let version = record.version.and_then(|v| v.index).unwrap_or(0);
            let id = record.id.unwrap_or_default();
            let opts = UpdateConfigOptions { version: i64::try_from(version).unwrap_or(i64::MAX) };
            if let Err(e) = self.call("update config", &id, self.engine.client().update_config(&id, cspec, opts)).await
            {
                tracing::warn!(volume = %volume.name, error = %e, "could not record the node of a persistent volume");
            }
        }
    }

    /// The part of a launch that makes things: volume records, the input
    /// config, the service; `records` collects the volume records it made.
    async fn launch_prepared(
        &self,
        spec: &ContainerSpec,
        mut placement: Placement,
        env: Vec<String>,
        input_file: Option<(String, Vec<u8>)>,
        image: String,
        records: &mut Vec<String>,
    ) -> Result<ContainerInfo> {
        let scheme = self.scheme();
        let (mut mounts, pins) = self.persistent_mounts(spec, records).await?;
        for pin in pins {
            if !placement.constraints.contains(&pin) {
                placement.constraints.push(pin);
            }
        }
        for dir in &spec.extra_directories {
            // Anonymous: the node creates the volume with the container and
            // removes it with the container. No driver config, or the node
            // would create a second, unused volume for it.
            let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
            labels.insert(scheme.root().to_owned(), "true".to_owned());
            labels.insert(scheme.volume_owner_key(), spec.name.clone());
            mounts.push(Mount {
                target: Some(dir.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(false),
                volume_options: Some(MountVolumeOptions { labels: Some(labels), ..Default::default() }),
                ..Default::default()
            });
        }
        if let Some(mb) = spec.shm_size_mb {
            mounts.push(Mount {
                target: Some("/dev/shm".to_owned()),
                typ: Some(MountType::TMPFS),
                tmpfs_options: Some(MountTmpfsOptions {
                    size_bytes: Some(mib_to_bytes(mb)),
                    mode: Some(0o1777),
                    options: None,
                }),
                ..Default::default()
            });
        }
        let mut config_ids = Vec::new();
        let mut configs = Vec::new();
        if let Some((path, doc)) = &input_file {
            let (id, name) = self.create_input_config(spec, doc).await?;
            configs.push(TaskSpecContainerSpecConfigs {
                file: Some(TaskSpecContainerSpecFile1 {
                    name: Some(path.clone()),
                    uid: Some("0".to_owned()),
                    gid: Some("0".to_owned()),
                    mode: Some(0o444),
                }),
                config_id: Some(id.clone()),
                config_name: Some(name),
                runtime: None,
            });
            config_ids.push(id);
        }
        let service_spec = match self.service_spec(spec, image.clone(), env, mounts, configs, &placement) {
            Ok(s) => s,
            Err(e) => {
                for id in &config_ids {
                    self.remove_config(id).await;
                }
                return Err(e);
            }
        };
        let created =
            match self.call("create", &spec.name, self.engine.client().create_service(service_spec, None)).await {
                Ok(c) => c,
                Err(e) => {
                    for id in &config_ids {
                        self.remove_config(id).await;
                    }
                    return Err(e);
                }
            };
        let service_id = created.id.unwrap_or_default();
        let task = match self.wait_started(&service_id, spec, &image).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(name = %spec.name, error = %e, "launch failed after the service was made; removing it");
                if let Err(cleanup) = self.destroy(&service_id, &spec.name, &config_ids).await {
                    tracing::error!(name = %spec.name, error = %cleanup, "could not remove the half-launched service");
                }
                return Err(e);
            }
        };
        if let Some(node) = task.node_id.as_deref() {
            self.pin_volumes(spec, node).await;
        }
        tracing::info!(name = %spec.name, image = %spec.normalized_image(), node = ?task.node_id, "swarm service launched");
        self.inspect(&spec.name).await
    }

    /// For each spread descriptor in turn, the constraint that sends a new
    /// container to the label value (among ready nodes meeting the
    /// placement so far) with the fewest of this manager's live containers.
    async fn spread_constraints(&self, placement: &Placement) -> Result<Vec<String>> {
        let descriptors = placement.spread_descriptors().unwrap_or_default();
        if descriptors.is_empty() {
            return Ok(Vec::new());
        }
        let nodes = self.nodes().await?;
        let containers = self.list(&ListFilter::all()).await?;
        let mut narrowed = placement.clone();
        let mut out = Vec::new();
        for descriptor in descriptors {
            let value_of = |n: &NodeInfo| -> Option<String> {
                match (descriptor.strip_prefix("node.labels."), descriptor.strip_prefix("engine.labels.")) {
                    (Some(l), _) => n.labels.get(l).cloned(),
                    (_, Some(l)) => n.engine_labels.get(l).cloned(),
                    _ => None,
                }
            };
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for node in nodes.iter().filter(|n| n.accepts(&narrowed)) {
                if let Some(v) = value_of(node) {
                    counts.entry(v).or_insert(0);
                }
            }
            for c in containers.iter().filter(|c| matches!(c.state, ContainerState::Running | ContainerState::Created))
            {
                let node = nodes.iter().find(|n| c.node.as_deref() == Some(n.id.as_str()));
                if let Some(v) = node.and_then(value_of)
                    && let Some(count) = counts.get_mut(&v)
                {
                    *count += 1;
                }
            }
            let Some((value, _)) = counts.into_iter().min_by_key(|(v, n)| (*n, v.clone())) else { continue };
            let constraint = format!("{descriptor}=={value}");
            narrowed.constraints.push(constraint.clone());
            out.push(constraint);
        }
        Ok(out)
    }

    /// Builds the service spec of a launch.
    fn service_spec(
        &self,
        spec: &ContainerSpec,
        image: String,
        env: Vec<String>,
        mounts: Vec<Mount>,
        configs: Vec<TaskSpecContainerSpecConfigs>,
        placement: &Placement,
    ) -> Result<ServiceSpec> {
        let scheme = self.scheme();
        let mut labels = container_labels(scheme, spec);
        labels.insert(self.image_key(), spec.normalized_image());
        let labels: HashMap<String, String> = labels.into_iter().collect();
        let preferences = placement
            .spread_descriptors()
            .map_err(|reason| Error::invalid(&spec.name, reason))?
            .into_iter()
            .map(|d| TaskSpecPlacementPreferences {
                spread: Some(TaskSpecPlacementSpread { spread_descriptor: Some(d.to_owned()) }),
            })
            .collect::<Vec<_>>();
        let nanos = |cpus: f64| (cpus * 1e9).round() as i64;
        let container = TaskSpecContainerSpec {
            image: Some(image),
            labels: Some(labels.clone()),
            command: spec.entrypoint.clone(),
            args: spec.command.clone(),
            env: Some(env),
            dir: spec.working_dir.clone(),
            user: spec.user.clone(),
            mounts: (!mounts.is_empty()).then_some(mounts),
            configs: (!configs.is_empty()).then_some(configs),
            stop_grace_period: Some(i64::try_from(self.config.stop_grace.as_nanos()).unwrap_or(i64::MAX)),
            hosts: self.config.engine.host_gateway_alias.as_ref().map(|alias| vec![format!("host-gateway {alias}")]),
            ..Default::default()
        };
        let ports = match self.config.endpoints {
            SwarmEndpoints::PublishedPort => Some(vec![EndpointPortConfig {
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(i64::from(spec.container_port)),
                published_port: None,
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                name: None,
            }]),
            SwarmEndpoints::Network => None,
        };
        Ok(ServiceSpec {
            name: Some(spec.name.clone()),
            labels: Some(labels),
            task_template: Some(TaskSpec {
                container_spec: Some(container),
                resources: Some(TaskSpecResources {
                    limits: Some(Limit {
                        nano_cpus: Some(spec.nano_cpus()),
                        memory_bytes: spec.mem_limit_mb.map(mib_to_bytes),
                        pids: None,
                    }),
                    reservations: Some(ResourceObject {
                        nano_cpus: spec.cpu_limit.map(|_| nanos(spec.cpus)),
                        memory_bytes: Some(mib_to_bytes(spec.mem_reservation_mb)),
                        generic_resources: None,
                    }),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                    max_attempts: Some(0),
                    ..Default::default()
                }),
                placement: Some(TaskSpecPlacement {
                    constraints: (!placement.constraints.is_empty()).then(|| placement.constraints.clone()),
                    preferences: (!preferences.is_empty()).then_some(preferences),
                    ..Default::default()
                }),
                networks: self
                    .config
                    .network
                    .as_ref()
                    .map(|n| vec![NetworkAttachmentConfig { target: Some(n.clone()), ..Default::default() }]),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            endpoint_spec: Some(EndpointSpec { mode: Some(EndpointSpecModeEnum::DNSRR), ports }),
            ..Default::default()
        })
    }

    /// Waits until the service's task runs (or ran and exited), or says
    /// why it never will.
    async fn wait_started(&self, service_id: &str, spec: &ContainerSpec, image: &str) -> Result<Task> {
        let started = Instant::now();
        let mut unschedulable_since: Option<Instant> = None;
        loop {
            let tasks = self.tasks_of(service_id).await?;
            if let Some(task) = latest(&tasks) {
                let status = task.status.clone().unwrap_or_default();
                let err = status.err.clone().unwrap_or_default();
                match status.state.unwrap_or(TaskState::NEW) {
                    TaskState::RUNNING | TaskState::COMPLETE => return Ok(task.clone()),
                    TaskState::FAILED if exited_after_running(task) => return Ok(task.clone()),
                    TaskState::FAILED | TaskState::REJECTED => return Err(start_failure(spec, image, &err)),
                    TaskState::SHUTDOWN | TaskState::REMOVE | TaskState::ORPHANED => {
                        return Err(Error::Engine {
                            operation: "start",
                            status: 0,
                            message: format!("the task of {:?} was shut down before it ran {err}", spec.name),
                        });
                    }
                    _ => {}
                }
                match unschedulable_reason(task) {
                    Some(reason) => {
                        let since = *unschedulable_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= self.config.unschedulable_grace {
                            return Err(Error::Unschedulable {
                                name: spec.name.clone(),
                                insufficient_resources: reason.contains("insufficient resources"),
                                reason,
                            });
                        }
                    }
                    None => unschedulable_since = None,
                }
            }
            if started.elapsed() > self.config.start_timeout {
                return Err(Error::EngineTimeout { operation: "start", timeout: self.config.start_timeout });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Removes a service, waits (bounded) until its task's container is
    /// gone from every reachable node, then removes its configs and the
    /// volumes left for its name on the manager's node.
    async fn destroy(&self, service_id: &str, name: &str, configs: &[String]) -> Result<()> {
        match self.call("remove", name, self.engine.client().delete_service(service_id)).await {
            Ok(()) | Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        self.wait_gone(service_id).await;
        for id in configs {
            self.remove_config(id).await;
        }
        let owner = format!("{}={}", self.scheme().volume_owner_key(), name);
        self.engine.remove_volumes_matching(&owner).await?;
        Ok(())
    }

    /// Waits until no task of the removed service remains on a node that
    /// is up, and no container of it on the manager's node (so its port
    /// and its anonymous volumes are free when `remove` returns).
    async fn wait_gone(&self, service_id: &str) {
        let deadline = Instant::now() + self.config.stop_grace + Duration::from_secs(20);
        loop {
            let nodes: HashMap<String, Node> = match self.all_nodes().await {
                Ok(nodes) => nodes.into_iter().filter_map(|n| Some((n.id.clone()?, n))).collect(),
                Err(_) => HashMap::new(),
            };
            let tasks_left = match self.all_tasks().await {
                Ok(tasks) => tasks.iter().any(|t| {
                    t.service_id.as_deref() == Some(service_id)
                        && t.node_id.as_deref().and_then(|n| nodes.get(n)).is_some_and(|n| !node_is_down(n))
                        && t.status.as_ref().and_then(|s| s.container_status.as_ref()).is_some()
                }),
                Err(_) => false,
            };
            let opts = ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([("label".to_owned(), vec![format!("{SERVICE_ID_LABEL}={service_id}")])])),
                ..Default::default()
            };
            let local_left = match self.call("list", service_id, self.engine.client().list_containers(Some(opts))).await
            {
                Ok(list) => !list.is_empty(),
                Err(_) => false,
            };
            if !tasks_left && !local_left {
                return;
            }
            if Instant::now() > deadline {
                tracing::warn!(service = %service_id, "the removed service's container is still there; not waiting longer");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The ids of the configs a service mounts.
    fn config_ids(service: &Service) -> Vec<String> {
        service
            .spec
            .as_ref()
            .and_then(|s| s.task_template.as_ref())
            .and_then(|t| t.container_spec.as_ref())
            .and_then(|c| c.configs.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|c| c.config_id.clone())
            .collect()
    }

    async fn configs_with(&self, labels: Vec<String>) -> Result<Vec<SwarmObjectConfig>> {
        let opts = ListConfigsOptions { filters: Some(HashMap::from([("label".to_owned(), labels)])) };
        self.call("list configs", "configs", self.engine.client().list_configs(Some(opts))).await
    }

    async fn services_with(&self, labels: Vec<String>) -> Result<Vec<Service>> {
        let opts = ListServicesOptions { filters: Some(HashMap::from([("label".to_owned(), labels)])), status: None };
        self.call("list services", "services", self.engine.client().list_services(Some(opts))).await
    }

    /// Removes every service and config carrying label `key=value`,
    /// whatever its root label (a sweep for test runs and crash
    /// leftovers), waiting for the services' containers to go.
    ///
    /// # Errors
    ///
    /// Transport errors.
    pub async fn sweep_label(&self, key: &str, value: &str) -> Result<SweepCount> {
        let label = format!("{key}={value}");
        let mut count = SweepCount::default();
        for service in self.services_with(vec![label.clone()]).await? {
            let Some(id) = service.id.clone() else { continue };
            let name = service.spec.as_ref().and_then(|s| s.name.clone()).unwrap_or_default();
            match self.destroy(&id, &name, &Self::config_ids(&service)).await {
                Ok(()) => count.services += 1,
                Err(e) => tracing::warn!(service = %name, error = %e, "sweep could not remove service"),
            }
        }
        for config in self.configs_with(vec![label]).await? {
            if let Some(id) = config.id {
                self.remove_config(&id).await;
                count.configs += 1;
            }
        }
        Ok(count)
    }

    /// The values of label `key` on services and configs (whatever their
    /// root label), for sweeping leftovers of crashed runs.
    ///
    /// # Errors
    ///
    /// Transport errors.
    pub async fn label_values(&self, key: &str) -> Result<std::collections::BTreeSet<String>> {
        let mut values = std::collections::BTreeSet::new();
        for s in self.services_with(vec![key.to_owned()]).await? {
            values.extend(s.spec.and_then(|s| s.labels).and_then(|mut l| l.remove(key)));
        }
        for c in self.configs_with(vec![key.to_owned()]).await? {
            values.extend(c.spec.and_then(|s| s.labels).and_then(|mut l| l.remove(key)));
        }
        Ok(values)
    }

    /// Where a node's published ports are reached.
    async fn node_addr(&self, node: Option<&Node>) -> Result<IpAddr> {
        let label = self.config.address_label_key();
        let from_label = node
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.labels.as_ref())
            .and_then(|l| l.get(&label))
            .and_then(|a| a.parse::<IpAddr>().ok());
        let from_status = node
            .and_then(|n| n.status.as_ref())
            .and_then(|s| s.addr.as_deref())
            .and_then(|a| a.parse::<IpAddr>().ok())
            .filter(|ip| !ip.is_unspecified());
        match from_label.or(from_status) {
            Some(ip) => Ok(ip),
            None => self.engine.resolve_host().await,
        }
    }

    /// Per-subscriber snapshot of this manager's services for the event
    /// stream: service id → (name, view).
    /// Also the last views of services in `known` that are gone, from
    /// their tasks while the swarm still has them.
    async fn snapshot(&self, known: &Snapshot) -> Result<(Snapshot, HashMap<String, TaskView>)> {
        let services = self.services_with(vec![self.scheme().root().to_owned()]).await?;
        let tasks = self.all_tasks().await?;
        let nodes = self.all_nodes().await?;
        let mut by_service: HashMap<&str, Vec<&Task>> = HashMap::new();
        for t in &tasks {
            if let Some(s) = t.service_id.as_deref() {
                by_service.entry(s).or_default().push(t);
            }
        }
        let nodes: HashMap<&str, &Node> = nodes.iter().filter_map(|n| Some((n.id.as_deref()?, n))).collect();
        let mut out = HashMap::new();
        for s in &services {
            let (Some(id), Some(name)) = (s.id.clone(), s.spec.as_ref().and_then(|x| x.name.clone())) else { continue };
            let task = latest(by_service.get(id.as_str()).into_iter().flatten().copied());
            let node = task.and_then(|t| t.node_id.as_deref()).and_then(|n| nodes.get(n).copied());
            out.insert(id, (name, task_view(task, node)));
        }
        let finals = known
            .keys()
            .filter(|id| !out.contains_key(*id))
            .filter_map(|id| {
                let task = latest(by_service.get(id.as_str()).into_iter().flatten().copied())?;
                Some((id.clone(), task_view(Some(task), None)))
            })
            .collect();
        Ok((out, finals))
    }
}

/// Classifies a task that failed or was rejected before it ran.
fn start_failure(spec: &ContainerSpec, image: &str, err: &str) -> Error {
    let lower = err.to_ascii_lowercase();
    if lower.contains("no such image") || lower.contains("pull access denied") || lower.contains("manifest unknown") {
        return Error::ImageUnavailable {
            image: spec.normalized_image(),
            source: Some(format!("a node could not run image {image}: {err}").into()),
        };
    }
    Error::Engine { operation: "start", status: 0, message: format!("container {:?} did not start: {err}", spec.name) }
}

/// Names the engine accepts in a URL path ([a-zA-Z0-9][a-zA-Z0-9_.-]*).
fn engine_name_ok(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// A swarm node as berth describes nodes.
fn node_info(node: &Node) -> NodeInfo {
    let description = node.description.clone().unwrap_or_default();
    let spec = node.spec.clone().unwrap_or_default();
    let mut info = NodeInfo::new(node.id.clone().unwrap_or_default(), node_name(node));
    info.role = match spec.role {
        Some(NodeSpecRoleEnum::MANAGER) => "manager".to_owned(),
        _ => "worker".to_owned(),
    };
    let platform = description.platform.unwrap_or_default();
    info.os = platform.os.unwrap_or_else(|| "linux".to_owned());
    info.arch = platform.architecture.unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    info.addr = node.status.as_ref().and_then(|s| s.addr.as_deref()).and_then(|a| a.parse().ok());
    info.labels = spec.labels.unwrap_or_default().into_iter().collect();
    info.engine_labels = description.engine.and_then(|e| e.labels).unwrap_or_default().into_iter().collect();
    let resources = description.resources.unwrap_or_default();
    info.memory_mb = resources.memory_bytes.and_then(|b| u64::try_from(b).ok()).unwrap_or(0) / (1024 * 1024);
    info.cpus = resources.nano_cpus.unwrap_or(0) as f64 / 1e9;
    info.ready =
        !node_is_down(node) && node.status.as_ref().and_then(|s| s.state) == Some(bollard::models::NodeState::READY);
    info.schedulable = matches!(spec.availability, Some(NodeSpecAvailabilityEnum::ACTIVE) | None);
    info
}

#[async_trait]
impl ContainerManager for SwarmManager {
    fn label_scheme(&self) -> &LabelScheme {
        self.scheme()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new("swarm", true)
            .with_cluster(true)
            .with_max_file_input_bytes(MAX_CONFIG_BYTES)
            .with_node_local_volumes(true)
    }

    async fn launch(&self, spec: &ContainerSpec) -> Result<ContainerInfo> {
        let scheme = self.scheme();
        validate_for(scheme, spec)?;
        let mut placement = self.config.placement.merged(&spec.placement);
        placement.validate().map_err(|reason| Error::invalid(&spec.name, reason))?;

        let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut input_file = None;
        if let Some(input) = &spec.input {
            let doc = serde_json::to_vec(&input.document)
                .map_err(|e| Error::invalid(&spec.name, format!("input document does not serialize: {e}")))?;
            match &input.mode {
                InputMode::Env => env.push(format!("{ENV_INPUT_JSON}={}", String::from_utf8_lossy(&doc))),
                InputMode::Url { url } => env.push(format!("{ENV_INPUT_JSON_URL}={url}")),
                InputMode::File { path } => {
                    if doc.len() > MAX_CONFIG_BYTES {
                        return Err(Error::InputTooLarge {
                            name: spec.name.clone(),
                            size: doc.len(),
                            limit: MAX_CONFIG_BYTES,
                            mode: "file",
                        });
                    }
                    env.push(format!("{ENV_INPUT_JSON_PATH}={path}"));
                    input_file = Some((path.clone(), doc));
                }
            }
        }
        let image = self.resolve_image(&spec.normalized_image()).await?;
        // A constraint no node meets fails now, before anything is made.
        if !placement.constraints.is_empty() {
            let nodes = self.nodes().await?;
            if !nodes.iter().any(|n| n.accepts(&placement)) {
                return Err(Error::Unschedulable {
                    name: spec.name.clone(),
                    reason: format!(
                        "no ready node satisfies the placement constraints {:?} ({} nodes)",
                        placement.constraints,
                        nodes.len()
                    ),
                    insufficient_resources: false,
                });
            }
        }
        // Swarm spreads one service's tasks; each berth container is a
        // service of its own, so spreading them is berth's job.
        for constraint in self.spread_constraints(&placement).await? {
            placement.constraints.push(constraint);
        }
        let mut records = Vec::new();
        let launched = self.launch_prepared(spec, placement, env, input_file, image, &mut records).await;
        if launched.is_err() {
            // Volume records this launch made go with it (one a racing
            // launch's service mounts is refused by the swarm, and stays).
            for id in records {
                if let Err(e) = self.call("remove config", &id, self.engine.client().delete_config(&id)).await {
                    tracing::debug!(config = %id, error = %e, "kept the record of a persistent volume");
                }
            }
        }
        launched
    }

    async fn inspect(&self, name: &str) -> Result<ContainerInfo> {
        let (service, task, node) = self.lookup(name).await?;
        let local = task.as_ref().and_then(|t| t.node_id.as_deref()) == Some(&*self.local_node);
        let volumes =
            if local { self.local_volumes(Some(name)).await?.remove(name).unwrap_or_default() } else { Vec::new() };
        Ok(self.info_from(&service, task.as_ref(), node.as_ref(), volumes))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ContainerInfo>> {
        let mut labels = vec![self.scheme().root().to_owned()];
        for (k, v) in &filter.labels {
            labels.push(match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            });
        }
        let services = self.services_with(labels).await?;
        if services.is_empty() {
            return Ok(Vec::new());
        }
        let tasks = self.all_tasks().await?;
        let nodes = self.all_nodes().await?;
        let mut volumes = self.local_volumes(None).await?;
        let mut by_service: HashMap<&str, Vec<&Task>> = HashMap::new();
        for t in &tasks {
            if let Some(s) = t.service_id.as_deref() {
                by_service.entry(s).or_default().push(t);
            }
        }
        let nodes: HashMap<&str, &Node> = nodes.iter().filter_map(|n| Some((n.id.as_deref()?, n))).collect();
        let mut out: Vec<ContainerInfo> = services
            .iter()
            .filter(|s| {
                s.spec.as_ref().and_then(|x| x.labels.as_ref()).is_some_and(|l| l.contains_key(self.scheme().root()))
            })
            .map(|s| {
                let id = s.id.as_deref().unwrap_or_default();
                let task = latest(by_service.get(id).into_iter().flatten().copied());
                let node = task.and_then(|t| t.node_id.as_deref()).and_then(|n| nodes.get(n).copied());
                let name = s.spec.as_ref().and_then(|x| x.name.clone()).unwrap_or_default();
                let local = task.and_then(|t| t.node_id.as_deref()) == Some(&*self.local_node);
                let vols = if local { volumes.remove(&name).unwrap_or_default() } else { Vec::new() };
                self.info_from(s, task, node, vols)
            })
            .filter(|i| filter.matches(i))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn logs(&self, name: &str, options: LogOptions) -> Result<Vec<LogLine>> {
        let (service, task, node) = self.lookup(name).await?;
        if let Some(down) = task_view(task.as_ref(), node.as_ref()).node_down {
            return Err(Error::NodeDown { name: name.to_owned(), node: down });
        }
        let id = service.id.unwrap_or_default();
        let opts = logs_options(options, false);
        let chunks =
            self.call("logs", name, self.engine.client().service_logs(&id, Some(opts)).try_collect::<Vec<_>>()).await?;
        let mut lines: Vec<LogLine> = chunks.into_iter().flat_map(log_lines).collect();
        if let Some(since) = options.since {
            lines.retain(|l| l.timestamp >= since);
        }
        // Lines of one service arrive per stream; order them by time.
        lines.sort_by_key(|l| l.timestamp);
        Ok(lines)
    }

    async fn follow_logs(&self, name: &str, options: LogOptions) -> Result<LogStreamBox> {
        let (service, task, node) = self.lookup(name).await?;
        if let Some(down) = task_view(task.as_ref(), node.as_ref()).node_down {
            return Err(Error::NodeDown { name: name.to_owned(), node: down });
        }
        let id = service.id.unwrap_or_default();
        let opts = logs_options(options, true);
        let this = self.clone();
        let owner = name.to_owned();
        let lines = self
            .engine
            .client()
            .service_logs(&id, Some(opts))
            .map(move |item| match item {
                Ok(chunk) => futures_util::stream::iter(log_lines(chunk).into_iter().map(Ok)).left_stream(),
                Err(e) => futures_util::stream::iter(vec![Err(this.engine.classify("logs", &owner, e))]).right_stream(),
            })
            .flatten();
        // A service's log stream does not end when its task does: end it
        // when the task has stopped (and its last lines had time to come).
        let this = self.clone();
        let stopped = async move {
            loop {
                tokio::time::sleep(this.config.poll_interval).await;
                let Ok(tasks) = this.tasks_of(&id).await else { continue };
                let view = task_view(latest(&tasks), None);
                if !matches!(view.state, ContainerState::Running | ContainerState::Created) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    return;
                }
            }
        };
        Ok(lines.take_until(Box::pin(stopped)).boxed())
    }

    async fn remove(&self, name: &str) -> Result<()> {
        let (service, task, node) = self.lookup(name).await?;
        let id = service.id.clone().unwrap_or_default();
        // No subscriber is fine.
        let _ = self.removals.send((id.clone(), task_view(task.as_ref(), node.as_ref())));
        self.destroy(&id, name, &Self::config_ids(&service)).await?;
        // Input configs of this name that no service mounts (a crash
        // between config and service) go too.
        let owned =
            self.configs_with(vec![format!("{}={}", self.scheme().volume_owner_key(), name), self.input_key()]).await?;
        if !owned.is_empty() {
            let in_use = self.configs_in_use().await?;
            for c in owned {
                if let Some(cid) = c.id.filter(|cid| !in_use.contains(cid)) {
                    self.remove_config(&cid).await;
                }
            }
        }
        tracing::info!(%name, "swarm service removed");
        Ok(())
    }

    async fn endpoint(&self, name: &str) -> Result<Endpoint> {
        let (service, task, node) = self.lookup(name).await?;
        let labels: BTreeMap<String, String> =
            service.spec.as_ref().and_then(|s| s.labels.clone()).unwrap_or_default().into_iter().collect();
        let port = port_from_labels(self.scheme(), name, &labels)?;
        let view = task_view(task.as_ref(), node.as_ref());
        if let Some(down) = view.node_down {
            return Err(Error::NodeDown { name: name.to_owned(), node: down });
        }
        if view.state != ContainerState::Running {
            return Err(Error::NotRunning { name: name.to_owned(), state: view.state.to_string() });
        }
        match self.config.endpoints {
            SwarmEndpoints::PublishedPort => {
                let ports = task
                    .as_ref()
                    .and_then(|t| t.status.as_ref())
                    .and_then(|s| s.port_status.as_ref())
                    .and_then(|p| p.ports.clone())
                    .unwrap_or_default();
                if ports.is_empty() {
                    return Err(Error::NoPortsOpen { name: name.to_owned() });
                }
                let published = ports
                    .iter()
                    .filter(|p| p.target_port == Some(i64::from(port)))
                    .find_map(|p| p.published_port.and_then(|pp| u16::try_from(pp).ok()).filter(|pp| *pp != 0))
                    .ok_or_else(|| Error::ExpectedPortMissing { name: name.to_owned(), port })?;
                Ok(Endpoint { addr: SocketAddr::new(self.node_addr(node.as_ref()).await?, published) })
            }
            SwarmEndpoints::Network => {
                // With dnsrr, the service's name resolves (on its network)
                // to its task's address.
                let mut addrs = tokio::net::lookup_host((name, port)).await.map_err(|source| Error::Io {
                    context: format!("resolving service {name:?} on network {:?}", self.config.network),
                    source,
                })?;
                addrs.next().map(|addr| Endpoint { addr }).ok_or_else(|| Error::NoPortsOpen { name: name.to_owned() })
            }
        }
    }

    async fn events(&self) -> Result<EventStreamBox> {
        let opts = EventsOptions {
            filters: Some(HashMap::from([(
                "type".to_owned(),
                ["service", "container", "node"].map(String::from).to_vec(),
            )])),
            ..Default::default()
        };
        let mut raw = self.engine.client().events(Some(opts)).boxed();
        // The first poll sends the subscription; see the docker module.
        let first = match tokio::time::timeout(Duration::from_millis(300), raw.next()).await {
            Ok(Some(Err(e))) => return Err(self.engine.classify("events", "events", e)),
            Ok(item) => item,
            Err(_) => None,
        };
        let mut removals = self.removals.subscribe();
        let (mut known, _) = self.snapshot(&Snapshot::new()).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let this = self.clone();
        let mut raw = futures_util::stream::iter(first).chain(raw);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.config.poll_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let mut settle = true;
                tokio::select! {
                    _ = tick.tick() => {}
                    removal = removals.recv() => {
                        // This process removes a service: its last state
                        // first, so a death just before is not lost.
                        let Ok((id, last)) = removal else { continue };
                        let Some((name, _)) = known.get(&id).cloned() else { continue };
                        let mut now = known.clone();
                        now.insert(id, (name, last));
                        for event in diff(&known, &now, &HashMap::new()) {
                            if tx.send(Ok(event)).is_err() {
                                return;
                            }
                        }
                        known = now;
                        continue;
                    }
                    item = raw.next() => match item {
                        None => return,
                        Some(Err(e)) => {
                            let _ = tx.send(Err(this.engine.classify("events", "events", e)));
                            return;
                        }
                        // A removal is read at once, while the swarm still
                        // has the service's tasks.
                        Some(Ok(msg)) => settle = msg.action.as_deref() != Some("remove"),
                    },
                }
                if settle {
                    // Let a burst of engine events settle into one read.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let Ok((now, finals)) = this.snapshot(&known).await else { continue };
                for event in diff(&known, &now, &finals) {
                    if tx.send(Ok(event)).is_err() {
                        return;
                    }
                }
                known = now;
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(tokio_stream_from(rx))
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        self.engine.list_volumes().await
    }

    async fn prune_volumes(&self) -> Result<Vec<String>> {
        let services: HashSet<String> = self
            .services_with(vec![self.scheme().root().to_owned()])
            .await?
            .into_iter()
            .filter_map(|s| s.spec?.name)
            .collect();
        let mut removed = Vec::new();
        for v in self.list_volumes().await? {
            let owner_alive = v.container.as_ref().is_some_and(|o| services.contains(o));
            if !owner_alive && self.engine.remove_volume(&v.name).await {
                tracing::info!(volume = %v.name, owner = ?v.container, "removed orphan volume");
                removed.push(v.name);
            }
        }
        // Input documents whose launch died before its service existed.
        let in_use = self.configs_in_use().await?;
        for c in self.configs_with(vec![self.scheme().root().to_owned(), self.input_key()]).await? {
            let (Some(id), Some(spec)) = (c.id.clone(), c.spec.clone()) else { continue };
            let owner = spec.labels.and_then(|mut l| l.remove(&self.scheme().volume_owner_key()));
            if !in_use.contains(&id) && owner.as_ref().is_none_or(|o| !services.contains(o)) {
                self.remove_config(&id).await;
                tracing::info!(config = ?spec.name, ?owner, "removed orphan input config");
                removed.push(spec.name.unwrap_or(id));
            }
        }
        Ok(removed)
    }

    async fn persistent_volumes(&self) -> Result<Vec<VolumeInfo>> {
        let scheme = self.scheme();
        let records = self.configs_with(vec![scheme.root().to_owned(), scheme.persistent_key()]).await?;
        let mut out: Vec<VolumeInfo> = records
            .into_iter()
            .filter_map(|c| {
                let labels: BTreeMap<String, String> = c.spec?.labels?.into_iter().collect();
                let name = labels.get(&self.volume_key())?.clone();
                Some(VolumeInfo { name, container: None, labels })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn remove_persistent_volume(&self, name: &str) -> Result<()> {
        let scheme = self.scheme();
        let Some(record) = self.volume_record(name).await? else {
            return Err(Error::not_found(name));
        };
        let labels = record.spec.as_ref().and_then(|s| s.labels.clone()).unwrap_or_default();
        if !labels.contains_key(&scheme.persistent_key()) {
            return Err(Error::not_found(name));
        }
        let key = scheme.persistent_volumes_key();
        let in_use = self.services_with(vec![scheme.root().to_owned(), key.clone()]).await?.into_iter().any(|s| {
            s.spec
                .and_then(|s| s.labels)
                .and_then(|l| l.get(&key).cloned())
                .is_some_and(|list| list.split(',').any(|v| v == name))
        });
        if in_use {
            return Err(Error::VolumeInUse { volume: name.to_owned() });
        }
        if let Some(id) = record.id.as_deref() {
            self.remove_config(id).await;
        }
        let node = labels.get(&self.volume_node_key());
        if engine_name_ok(name) {
            match self.call("inspect volume", name, self.engine.client().inspect_volume(name)).await {
                Ok(v) if v.labels.contains_key(&scheme.persistent_key()) => {
                    if !self.engine.remove_volume(name).await {
                        tracing::warn!(volume = %name, "could not remove the persistent volume's data on the manager's node");
                    }
                }
                Ok(_) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(node) = node.filter(|n| n.as_str() != &*self.local_node) {
            tracing::warn!(volume = %name, %node, "the persistent volume's data stays on its node (not reachable through the manager): remove it there with `docker volume rm`");
        }
        tracing::info!(volume = %name, "persistent volume removed");
        Ok(())
    }

    /// The swarm's nodes that meet the configured placement constraints
    /// ([`SwarmConfig::placement`]): those berth's containers can run on.
    async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let base = Placement { constraints: self.config.placement.constraints.clone(), preferences: Vec::new() };
        let mut nodes: Vec<NodeInfo> =
            self.all_nodes().await?.iter().map(node_info).filter(|n| base.matches(n)).collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }
}

impl SwarmManager {
    /// The ids of the configs some service mounts.
    async fn configs_in_use(&self) -> Result<HashSet<String>> {
        let services = self
            .call("list services", "services", self.engine.client().list_services(None::<ListServicesOptions>))
            .await?;
        Ok(services.iter().flat_map(Self::config_ids).collect())
    }
}

/// Events that turn `before` into `now`: starts, deaths (with exit codes),
/// creations and removals of services.
/// Service id → (name, view), as an event stream last saw them.
type Snapshot = HashMap<String, (String, TaskView)>;

fn diff(before: &Snapshot, now: &Snapshot, finals: &HashMap<String, TaskView>) -> Vec<ContainerEvent> {
    let mut out = Vec::new();
    let event = |kind, name: &str, id: &str, exit_code| ContainerEvent {
        kind,
        name: name.to_owned(),
        id: id.to_owned(),
        time: SystemTime::now(),
        exit_code,
    };
    let ended = |v: &TaskView| matches!(v.state, ContainerState::Exited | ContainerState::Dead);
    let mut ids: Vec<&String> = now.keys().collect();
    ids.sort();
    for id in ids {
        let (name, view) = &now[id];
        let prev = before.get(id).map(|(_, v)| v);
        if prev.is_none() {
            out.push(event(EventKind::Created, name, id, None));
        }
        let was_running = prev.is_some_and(|p| p.state == ContainerState::Running);
        let was_ended = prev.is_some_and(ended);
        if view.state == ContainerState::Running && !was_running {
            out.push(event(EventKind::Started, name, id, None));
        }
        if ended(view) && !was_ended {
            if view.ran && !was_running {
                out.push(event(EventKind::Started, name, id, None));
            }
            out.push(event(EventKind::Died, name, id, view.exit_code));
        }
    }
    let mut gone: Vec<(&String, &String)> =
        before.iter().filter(|(id, _)| !now.contains_key(*id)).map(|(id, (name, _))| (id, name)).collect();
    gone.sort();
    for (id, name) in gone {
        let was = before.get(id).map(|(_, v)| v);
        if let Some(last) = finals.get(id).filter(|v| ended(v))
            && !was.is_some_and(ended)
        {
            if last.ran && !was.is_some_and(|p| p.state == ContainerState::Running) {
                out.push(event(EventKind::Started, name, id, None));
            }
            out.push(event(EventKind::Died, name, id, last.exit_code));
        }
        out.push(event(EventKind::Removed, name, id, None));
    }
    out
}

/// An unbounded receiver as a boxed stream.
fn tokio_stream_from(rx: tokio::sync::mpsc::UnboundedReceiver<Result<ContainerEvent>>) -> EventStreamBox {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) }).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: ContainerState, exit_code: Option<i64>, ran: bool) -> TaskView {
        TaskView { state, exit_code, message: None, started: None, node_down: None, ran }
    }

    #[test]
    fn diffs_become_lifecycle_events() {
        let s = |v| HashMap::from([("id1".to_owned(), ("viz".to_owned(), v))]);
        let kinds = |evs: Vec<ContainerEvent>| evs.into_iter().map(|e| (e.kind, e.exit_code)).collect::<Vec<_>>();
        let d = |a: &Snapshot, b: &Snapshot| kinds(diff(a, b, &HashMap::new()));
        let empty = Snapshot::new();
        let created = s(view(ContainerState::Created, None, false));
        let running = s(view(ContainerState::Running, None, true));
        let exited = s(view(ContainerState::Exited, Some(3), true));
        assert_eq!(d(&empty, &created), [(EventKind::Created, None)]);
        assert_eq!(d(&created, &running), [(EventKind::Started, None)]);
        assert_eq!(d(&running, &exited), [(EventKind::Died, Some(3))]);
        // Between two reads it started and exited: both are owed.
        assert_eq!(d(&created, &exited), [(EventKind::Started, None), (EventKind::Died, Some(3))]);
        assert_eq!(d(&exited, &exited), []);
        assert_eq!(d(&exited, &empty), [(EventKind::Removed, None)]);
        // Gone while running, its last task says it had exited: died, then removed.
        let finals = HashMap::from([("id1".to_owned(), view(ContainerState::Exited, Some(7), true))]);
        assert_eq!(kinds(diff(&running, &empty, &finals)), [(EventKind::Died, Some(7)), (EventKind::Removed, None)]);
    }

    #[test]
    fn record_names_differ_by_root_and_volume() {
        let a = hex_digest(&["berth", "home"]);
        assert_eq!(a.len(), 24);
        assert_ne!(a, hex_digest(&["berth-foreign", "home"]));
        assert_ne!(a, hex_digest(&["berth", "home2"]));
        assert_eq!(a, hex_digest(&["berth", "home"]));
    }

    #[test]
    fn start_failures_are_classified() {
        let spec = ContainerSpec::new("x", "viz", 10);
        assert!(matches!(start_failure(&spec, "sha256:1", "No such image: sha256:1"), Error::ImageUnavailable { .. }));
        assert!(matches!(start_failure(&spec, "x", "starting container failed: boom"), Error::Engine { .. }));
    }
}

//! `DockerManager`: the Docker Engine backend, on bollard.
//!
//! This is the only module of the workspace that imports bollard; no
//! bollard type appears in its public API.

mod build;
mod config;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, EventMessage, HostConfig, Mount, MountType,
    NetworkCreateRequest, PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, InspectContainerOptions, InspectNetworkOptions,
    ListContainersOptions, ListImagesOptions, ListNetworksOptions, ListVolumesOptions, LogsOptions,
    RemoveContainerOptions, RemoveImageOptions, RemoveVolumeOptions, StartContainerOptions, UploadToContainerOptions,
};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

pub use build::{BUILD_IDLE_TIMEOUT, BUILD_LOG_TAIL_LINES, BuiltImage, ImageBuild};
pub use config::{
    BRIDGE_ICC_OPTION, ContainerNetwork, DEFAULT_SOCKET, DockerConfig, EndpointMode, EngineHost, PullPolicy, TlsFiles,
    parse_docker_host,
};

use crate::error::{BoxError, Error, Result};
use crate::manager::{
    Capabilities, ContainerManager, EventStreamBox, LogStreamBox, check_persistent_volume, check_placement,
    container_labels, persistent_volume_labels, persistent_volumes_from_labels, port_from_labels, validate_for,
};
use crate::placement::{NodeInfo, labels_from_list};
use crate::spec::{ContainerSpec, ENV_INPUT_JSON, ENV_INPUT_JSON_PATH, ENV_INPUT_JSON_URL, InputMode};
use crate::time::{EngineTime, parse_rfc3339, unix_secs};
use crate::types::{
    ContainerEvent, ContainerInfo, ContainerState, Endpoint, EventKind, LabelScheme, ListFilter, LogLine, LogOptions,
    LogStream, VolumeInfo,
};

/// [`ContainerManager`] on a Docker Engine, local or remote.
///
/// Connects like the Docker CLI ([`DockerConfig::from_env`]), negotiates
/// the API version with the engine (engines older than bollard's default
/// API work), and bounds every engine call by a timeout.
#[derive(Debug, Clone)]
pub struct DockerManager {
    docker: Docker,
    config: DockerConfig,
    /// The configured network is known to be there (shared by clones).
    network_ready: Arc<AtomicBool>,
    /// One look at (or making of) the network at a time.
    network_lock: Arc<tokio::sync::Mutex<()>>,
}

/// Whether `name` can be an engine object's name (and so is safe in an
/// engine URL): `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn is_engine_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Whether a network with `driver` and `options` keeps containers from
/// reaching each other.
fn network_isolates(driver: Option<&str>, options: Option<&HashMap<String, String>>) -> bool {
    driver == Some("bridge") && options.and_then(|o| o.get(BRIDGE_ICC_OPTION)).is_some_and(|v| v == "false")
}

/// An image made by [`DockerManager::import_image`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// `repo:tag` reference.
    pub reference: String,
}

/// An IP network: an address and a prefix length (`172.17.0.0/16`,
/// `fd00::/64`), parsed from the engine's notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    addr: IpAddr,
    prefix: u8,
}

impl Subnet {
    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Subnet {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| format!("{s:?} has no /prefix"))?;
        let addr: IpAddr = addr.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = prefix.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("{s:?}: prefix over {max}"));
        }
        Ok(Subnet { addr, prefix })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether `e` is the engine saying an ID prefix matches several
/// containers (its wording differs between engine versions).
fn is_ambiguous_prefix(e: &Error) -> bool {
    let message = match e {
        Error::Engine { message, .. } => message.as_str(),
        Error::InvalidSpec { reason, .. } => reason.as_str(),
        _ => return false,
    };
    message.to_ascii_lowercase().contains("multiple ids found")
}

/// Whether the engine's answer is about the container called `name` (the
/// engine answers an inspect for a name with any container whose ID starts
/// with it, when no container has that name).
fn same_name(resp: &ContainerInspectResponse, name: &str) -> bool {
    resp.name.as_deref().map(|n| n.trim_start_matches('/')) == Some(name)
}

impl DockerManager {
    /// Connects with settings from the environment (see
    /// [`DockerConfig::from_env`]).
    ///
    /// # Errors
    ///
    /// As [`DockerManager::connect`], plus [`Error::Config`] for a bad
    /// `DOCKER_HOST`.
    pub async fn from_env() -> Result<Self> {
        DockerManager::connect(DockerConfig::from_env()?).await
    }

    /// Connects to the engine and negotiates the API version.
    ///
    /// # Errors
    ///
    /// [`Error::EngineUnavailable`] when the engine does not answer within
    /// `connect_timeout` (socket missing, connection refused, TLS failure,
    /// silence); [`Error::Config`] for unreadable TLS files.
    pub async fn connect(config: DockerConfig) -> Result<Self> {
        let timeout_secs = config.timeout.as_secs().max(1);
        let endpoint = config.host.display_url();
        let unavailable = |source: Option<BoxError>| Error::EngineUnavailable { endpoint: endpoint.clone(), source };
        let docker = match &config.host {
            EngineHost::Unix { path } => {
                let path = path.to_string_lossy();
                Docker::connect_with_unix(&path, timeout_secs, bollard::API_DEFAULT_VERSION)
                    .map_err(|e| unavailable(Some(Box::new(e))))?
            }
            EngineHost::Tcp { host, port, tls: None } => Docker::connect_with_http(
                &format!("http://{}:{port}", bracket(host)),
                timeout_secs,
                bollard::API_DEFAULT_VERSION,
            )
            .map_err(|e| unavailable(Some(Box::new(e))))?,
            EngineHost::Tcp { host, port, tls: Some(tls) } => {
                for f in [&tls.ca, &tls.cert, &tls.key] {
                    if !f.is_file() {
                        return Err(Error::Config {
                            reason: format!("TLS file {} is missing", f.display()),
                            source: None,
                        });
                    }
                }
                Docker::connect_with_ssl(
                    &format!("https://{}:{port}", bracket(host)),
                    &tls.key,
                    &tls.cert,
                    &tls.ca,
                    timeout_secs,
                    bollard::API_DEFAULT_VERSION,
                )
                .map_err(|e| Error::Config {
                    reason: format!("cannot set up TLS to {endpoint}"),
                    source: Some(Box::new(e)),
                })?
            }
        };
        let docker = match tokio::time::timeout(config.connect_timeout, docker.negotiate_version()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(unavailable(Some(Box::new(e)))),
            Err(_) => {
                return Err(unavailable(Some(format!("no answer within {:?}", config.connect_timeout).into())));
            }
        };
        let version = docker.client_version();
        tracing::info!(engine = %endpoint, api = %format!("{}.{}", version.major_version, version.minor_version), "connected to docker engine");
        Ok(DockerManager {
            docker,
            config,
            network_ready: Arc::new(AtomicBool::new(false)),
            network_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// Makes sure the network containers join is there (see
    /// [`ContainerNetwork`]): an isolated network is made when missing
    /// (launches do this too; a server calls it at start so that problems
    /// show then). Warns when containers on the configured network can
    /// reach each other. Nothing to do with host networking.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a network name the engine cannot have, or an
    /// [`ContainerNetwork::Existing`] network that does not exist; engine
    /// errors making or inspecting it.
    pub async fn prepare_network(&self) -> Result<()> {
        if self.config.effective_endpoint_mode() == EndpointMode::HostNetwork {
            return Ok(());
        }
        let (name, labels) = match &self.config.network {
            ContainerNetwork::EngineDefault => {
                tracing::warn!(
                    "containers join the engine's default network, where they can reach each other directly \
                     (past berth's proxy); use an isolated network for more than one user"
                );
                return Ok(());
            }
            ContainerNetwork::Existing(name) => (name, None),
            ContainerNetwork::Isolated { name, labels } => (name, Some(labels)),
        };
        self.network_ready.store(false, Ordering::Release);
        self.ensure_network(name, labels, true).await
    }

    /// What launches need of [`prepare_network`](Self::prepare_network):
    /// an isolated network is looked at (and made) until it is known to be
    /// there; other networks are the engine's business.
    async fn ensure_launch_network(&self) -> Result<()> {
        if self.network_ready.load(Ordering::Acquire)
            || self.config.effective_endpoint_mode() == EndpointMode::HostNetwork
        {
            return Ok(());
        }
        match &self.config.network {
            ContainerNetwork::Isolated { name, labels } => self.ensure_network(name, Some(labels), false).await,
            ContainerNetwork::EngineDefault | ContainerNetwork::Existing(_) => Ok(()),
        }
    }

    /// Looks at network `name` and, given `labels` (an isolated network),
    /// makes it when missing. Warns about an existing network that lets
    /// containers reach each other when `check` or it should isolate.
    async fn ensure_network(&self, name: &str, labels: Option<&BTreeMap<String, String>>, check: bool) -> Result<()> {
        if !is_engine_name(name) {
            return Err(Error::Config { reason: format!("{name:?} is not a network name"), source: None });
        }
        let _one = self.network_lock.lock().await;
        if self.network_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let inspect = || self.docker.inspect_network(name, None::<InspectNetworkOptions>);
        match self.call("inspect network", name, inspect()).await {
            Ok(n) => {
                if (check || labels.is_some()) && !network_isolates(n.driver.as_deref(), n.options.as_ref()) {
                    tracing::warn!(
                        network = %name,
                        "containers on this network can reach each other directly (past berth's proxy): \
                         make it a bridge with {BRIDGE_ICC_OPTION}=false, or let berth make its own"
                    );
                }
            }
            Err(Error::NotFound { .. }) => {
                let Some(extra) = labels else {
                    return Err(Error::Config { reason: format!("network {name} does not exist"), source: None });
                };
                let scheme = &self.config.labels;
                let mut labels: HashMap<String, String> = extra.clone().into_iter().collect();
                labels.insert(scheme.root().to_owned(), "true".to_owned());
                labels.insert(scheme.network_key(), "isolated".to_owned());
                let request = NetworkCreateRequest {
                    name: name.to_owned(),
                    driver: Some("bridge".to_owned()),
                    options: Some(HashMap::from([(BRIDGE_ICC_OPTION.to_owned(), "false".to_owned())])),
                    labels: Some(labels),
                    ..Default::default()
                };
                match self.call("create network", name, self.docker.create_network(request)).await {
                    Ok(_) => {
                        tracing::info!(network = %name, "made a network on which containers cannot reach each other");
                    }
                    // Someone else made it just now.
                    Err(Error::Engine { status: 409, .. }) => {
                        self.call("inspect network", name, inspect()).await?;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        self.network_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// The bollard client, for the swarm backend beside this module.
    pub(crate) fn client(&self) -> &Docker {
        &self.docker
    }

    /// The settings in use.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// The negotiated engine API version, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        let v = self.docker.client_version();
        format!("{}.{}", v.major_version, v.minor_version)
    }

    /// Runs one engine call under the configured timeout and classifies
    /// its error.
    pub(crate) async fn call<T>(
        &self,
        operation: &'static str,
        subject: &str,
        fut: impl Future<Output = std::result::Result<T, BollardError>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.config.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.classify(operation, subject, e)),
            Err(_) => Err(Error::EngineTimeout { operation, timeout: self.config.timeout }),
        }
    }

    /// Turns a bollard error into this crate's error.
    pub(crate) fn classify(&self, operation: &'static str, subject: &str, e: BollardError) -> Error {
        match e {
            BollardError::DockerResponseServerError { status_code, message } => {
                let lower = message.to_ascii_lowercase();
                match status_code {
                    404 if operation == "create" && (lower.contains("image") || lower.contains("pull access")) => {
                        Error::ImageUnavailable { image: subject.to_owned(), source: Some(message.into()) }
                    }
                    404 if operation == "pull" => {
                        Error::ImageUnavailable { image: subject.to_owned(), source: Some(message.into()) }
                    }
                    404 => Error::not_found(subject),
                    409 if operation == "create" => {
                        Error::Conflict { name: subject.to_owned(), source: Some(message.into()) }
                    }
                    400 => Error::invalid(subject, format!("engine refused {operation}: {message}")),
                    _ => Error::Engine { operation, status: status_code, message },
                }
            }
            BollardError::RequestTimeoutError => Error::EngineTimeout { operation, timeout: self.config.timeout },
            BollardError::JsonDataError { .. }
            | BollardError::JsonSerdeError { .. }
            | BollardError::StrParseError { .. }
            | BollardError::APIVersionParseError { .. } => {
                Error::Engine { operation, status: 0, message: e.to_string() }
            }
            other => {
                Error::EngineUnavailable { endpoint: self.config.host.display_url(), source: Some(Box::new(other)) }
            }
        }
    }

    /// Inspects `name` and checks the root label.
    /// The container called exactly `name`, managed or not, or `None`.
    ///
    /// The engine resolves names before ID prefixes, but it does resolve
    /// prefixes: a name like "1" or "beef" can come back as another
    /// container, or as an "ambiguous prefix" error (a 500 on older engines,
    /// a 400 on newer ones). Both mean no container has this name.
    async fn container_named(&self, name: &str) -> Result<Option<ContainerInspectResponse>> {
        // Never pass path-like input into an engine URL. Names the engine
        // allows ([a-zA-Z0-9][a-zA-Z0-9_.-]*) pass, so adopted containers
        // with older naming rules stay reachable.
        let engine_name_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !engine_name_ok {
            return Ok(None);
        }
        match self.call("inspect", name, self.docker.inspect_container(name, None::<InspectContainerOptions>)).await {
            Ok(resp) if same_name(&resp, name) => Ok(Some(resp)),
            Ok(_) | Err(Error::NotFound { .. }) => Ok(None),
            Err(e) if is_ambiguous_prefix(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn inspect_raw(&self, name: &str) -> Result<ContainerInspectResponse> {
        let resp = self.container_named(name).await?.ok_or_else(|| Error::not_found(name))?;
        let labels = resp.config.as_ref().and_then(|c| c.labels.as_ref());
        if !labels.is_some_and(|l| l.contains_key(self.config.labels.root())) {
            return Err(Error::not_found(name));
        }
        Ok(resp)
    }

    fn info_from_inspect(&self, resp: &ContainerInspectResponse) -> ContainerInfo {
        let name = resp.name.as_deref().unwrap_or_default().trim_start_matches('/').to_owned();
        let labels: BTreeMap<String, String> =
            resp.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default().into_iter().collect();
        let state = resp.state.as_ref();
        let state_word = state.and_then(|s| s.status).map(|s| s.to_string()).unwrap_or_default();
        let cstate = ContainerState::from_engine(&state_word);
        let exit_code = match cstate {
            ContainerState::Exited | ContainerState::Dead => state.and_then(|s| s.exit_code),
            _ => None,
        };
        let image = resp.config.as_ref().and_then(|c| c.image.clone()).unwrap_or_default();
        let persistent_volumes = persistent_volumes_from_labels(&self.config.labels, &labels);
        let volumes = resp
            .mounts
            .iter()
            .flatten()
            .filter(|m| m.typ.as_ref().is_some_and(|t| t == "volume"))
            .filter_map(|m| m.name.clone())
            .filter(|n| !persistent_volumes.contains(n))
            .collect();
        ContainerInfo {
            id: resp.id.clone().unwrap_or_default(),
            container_port: port_from_labels(&self.config.labels, &name, &labels).ok(),
            mem_reservation_mb: labels.get(&self.config.labels.mem_key()).and_then(|v| v.parse().ok()),
            name,
            image,
            labels,
            state: cstate,
            exit_code,
            created: resp.created.as_ref().and_then(EngineTime::system_time).unwrap_or(SystemTime::UNIX_EPOCH),
            started: state.and_then(|s| s.started_at.as_deref()).and_then(parse_rfc3339),
            volumes,
            persistent_volumes,
            node: None,
            message: state.and_then(|s| s.error.clone()).filter(|e| !e.is_empty()),
        }
    }

    fn info_from_summary(&self, s: &ContainerSummary) -> ContainerInfo {
        let name = s.names.iter().flatten().next().map(|n| n.trim_start_matches('/').to_owned()).unwrap_or_default();
        let labels: BTreeMap<String, String> = s.labels.clone().unwrap_or_default().into_iter().collect();
        let cstate = ContainerState::from_engine(&s.state.map(|x| x.to_string()).unwrap_or_default());
        // The summary only has "Exited (3) 2 minutes ago" as text.
        let exit_code = s
            .status
            .as_deref()
            .and_then(|st| st.strip_prefix("Exited ("))
            .and_then(|r| r.split(')').next())
            .and_then(|c| c.parse().ok());
        let persistent_volumes = persistent_volumes_from_labels(&self.config.labels, &labels);
        ContainerInfo {
            id: s.id.clone().unwrap_or_default(),
            container_port: port_from_labels(&self.config.labels, &name, &labels).ok(),
            mem_reservation_mb: labels.get(&self.config.labels.mem_key()).and_then(|v| v.parse().ok()),
            name,
            image: s.image.clone().unwrap_or_default(),
            labels,
            state: cstate,
            exit_code,
            created: SystemTime::UNIX_EPOCH
                + Duration::from_secs(s.created.and_then(|c| u64::try_from(c).ok()).unwrap_or(0)),
            started: None,
            volumes: s
                .mounts
                .iter()
                .flatten()
                .filter(|m| m.typ.as_ref().is_some_and(|t| t == "volume"))
                .filter_map(|m| m.name.clone())
                .filter(|n| !persistent_volumes.contains(n))
                .collect(),
            persistent_volumes,
            node: None,
            message: None,
        }
    }

    async fn ensure_image(&self, image: &str) -> Result<()> {
        if self.config.pull == PullPolicy::Never || self.image_exists(image).await? {
            return Ok(());
        }
        tracing::info!(%image, "pulling missing image");
        let (repo, tag) = split_tag(image);
        let opts =
            CreateImageOptions { from_image: Some(repo.to_owned()), tag: Some(tag.to_owned()), ..Default::default() };
        let pull = self.docker.create_image(Some(opts), None, None).try_collect::<Vec<_>>();
        // Pulls are slow by nature: allow ten call timeouts.
        match tokio::time::timeout(self.config.timeout * 10, pull).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(match self.classify("pull", image, e) {
                e @ Error::EngineUnavailable { .. } => e,
                other => Error::ImageUnavailable { image: image.to_owned(), source: Some(Box::new(other)) },
            }),
            Err(_) => Err(Error::ImageUnavailable { image: image.to_owned(), source: Some("pull timed out".into()) }),
        }
    }

    /// True when the engine has image `reference`.
    ///
    /// # Errors
    ///
    /// Transport errors.
    pub async fn image_exists(&self, reference: &str) -> Result<bool> {
        match self.call("inspect image", reference, self.docker.inspect_image(reference)).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates image `repo:tag` from a root filesystem tar (the engine's
    /// import API, no registry involved), applying Dockerfile-style
    /// `changes` such as `CMD ["/tool"]` or `LABEL k=v`.
    ///
    /// # Errors
    ///
    /// [`Error::Engine`] when the engine refuses the import; transport errors.
    pub async fn import_image(
        &self,
        rootfs_tar: Bytes,
        repo: &str,
        tag: &str,
        changes: Vec<String>,
    ) -> Result<ImportedImage> {
        let reference = format!("{repo}:{tag}");
        let opts = CreateImageOptions {
            from_src: Some("-".to_owned()),
            repo: Some(repo.to_owned()),
            tag: Some(tag.to_owned()),
            changes,
            ..Default::default()
        };
        let import =
            self.docker.create_image(Some(opts), Some(bollard::body_full(rootfs_tar)), None).try_collect::<Vec<_>>();
        match tokio::time::timeout(self.config.timeout * 4, import).await {
            Ok(Ok(_)) => Ok(ImportedImage { reference }),
            Ok(Err(e)) => Err(self.classify("import image", &reference, e)),
            Err(_) => Err(Error::EngineTimeout { operation: "import image", timeout: self.config.timeout * 4 }),
        }
    }

    /// Removes every image carrying label `key` (with `value`, when
    /// given); returns how many were removed.
    ///
    /// # Errors
    ///
    /// Transport errors; images still in use are skipped with a warning.
    pub async fn remove_images_with_label(&self, key: &str, value: Option<&str>) -> Result<usize> {
        self.remove_images_with_label_except(key, value, &[]).await
    }

    /// As [`remove_images_with_label`](Self::remove_images_with_label),
    /// but keeps every image tagged with one of `keep` (`repo:tag`
    /// references): a cache of expensive images survives while their
    /// stale versions go.
    ///
    /// # Errors
    ///
    /// Transport errors; images still in use are skipped with a warning.
    pub async fn remove_images_with_label_except(
        &self,
        key: &str,
        value: Option<&str>,
        keep: &[String],
    ) -> Result<usize> {
        let filter = match value {
            Some(v) => format!("{key}={v}"),
            None => key.to_owned(),
        };
        let opts = ListImagesOptions {
            filters: Some(HashMap::from([("label".to_owned(), vec![filter])])),
            ..Default::default()
        };
        let mut images = self.call("list images", key, self.docker.list_images(Some(opts))).await?;
        images.retain(|image| !image.repo_tags.iter().any(|tag| keep.contains(tag)));
        let mut removed = 0;
        // An image that others were built FROM cannot be removed (not even
        // forced) before them; the list is in no particular order, so
        // retry what failed while a pass makes progress.
        loop {
            let mut failed = Vec::new();
            let before = removed;
            for image in images {
                let opts = RemoveImageOptions { force: true, ..Default::default() };
                match self.call("remove image", &image.id, self.docker.remove_image(&image.id, Some(opts), None)).await
                {
                    Ok(_) | Err(Error::NotFound { .. }) => removed += 1,
                    Err(e) => failed.push((image, e)),
                }
            }
            if failed.is_empty() || removed == before {
                for (image, e) in &failed {
                    tracing::warn!(image = %image.id, error = %e, "could not remove image");
                }
                return Ok(removed);
            }
            images = failed.into_iter().map(|(image, _)| image).collect();
        }
    }

    /// Removes every container, volume and network carrying label
    /// `key=value`, whatever its root label: a sweep for test runs and
    /// crash leftovers. Returns the number of containers and volumes
    /// removed.
    ///
    /// # Errors
    ///
    /// Transport errors.
    pub async fn sweep_label(&self, key: &str, value: &str) -> Result<(usize, usize)> {
        let label = format!("{key}={value}");
        let opts = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), vec![label.clone()])])),
            ..Default::default()
        };
        let containers = self.call("list", key, self.docker.list_containers(Some(opts))).await?;
        let mut n_containers = 0;
        for c in containers {
            let Some(id) = c.id else { continue };
            let opts = RemoveContainerOptions { force: true, v: true, ..Default::default() };
            match self.call("remove", &id, self.docker.remove_container(&id, Some(opts))).await {
                Ok(()) | Err(Error::NotFound { .. }) => n_containers += 1,
                Err(e) => tracing::warn!(container = %id, error = %e, "sweep could not remove container"),
            }
        }
        let n_volumes = self.remove_volumes_matching(&label).await?;
        self.remove_networks_matching(&label).await?;
        Ok((n_containers, n_volumes))
    }

    /// Removes the networks carrying `label_filter` (`key=value`), once no
    /// container uses them (retrying briefly while containers go).
    async fn remove_networks_matching(&self, label_filter: &str) -> Result<()> {
        let filters = Some(HashMap::from([("label".to_owned(), vec![label_filter.to_owned()])]));
        let list = self
            .call("list networks", label_filter, self.docker.list_networks(Some(ListNetworksOptions { filters })))
            .await?;
        for id in list.into_iter().filter_map(|n| n.id) {
            for attempt in 0..20 {
                match self.call("remove network", &id, self.docker.remove_network(&id)).await {
                    Ok(()) | Err(Error::NotFound { .. }) => break,
                    Err(Error::Engine { status: 403 | 409, .. }) if attempt < 19 => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => {
                        tracing::warn!(network = %id, error = %e, "could not remove network");
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// The values of label `key` on containers, volumes and networks
    /// (whatever their root label), for sweeping leftovers of crashed runs.
    ///
    /// # Errors
    ///
    /// Transport errors.
    pub async fn label_values(&self, key: &str) -> Result<std::collections::BTreeSet<String>> {
        let filters = Some(HashMap::from([("label".to_owned(), vec![key.to_owned()])]));
        let opts = ListContainersOptions { all: true, filters: filters.clone(), ..Default::default() };
        let containers = self.call("list", key, self.docker.list_containers(Some(opts))).await?;
        let volumes = self
            .call("list volumes", key, self.docker.list_volumes(Some(ListVolumesOptions { filters: filters.clone() })))
            .await?;
        let networks =
            self.call("list networks", key, self.docker.list_networks(Some(ListNetworksOptions { filters }))).await?;
        let mut values: std::collections::BTreeSet<String> =
            containers.into_iter().filter_map(|c| c.labels.and_then(|mut l| l.remove(key))).collect();
        values.extend(volumes.volumes.unwrap_or_default().into_iter().filter_map(|mut v| v.labels.remove(key)));
        values.extend(networks.into_iter().filter_map(|n| n.labels.and_then(|mut l| l.remove(key))));
        Ok(values)
    }

    pub(crate) async fn remove_volumes_matching(&self, label_filter: &str) -> Result<usize> {
        let opts =
            ListVolumesOptions { filters: Some(HashMap::from([("label".to_owned(), vec![label_filter.to_owned()])])) };
        let list = self.call("list volumes", label_filter, self.docker.list_volumes(Some(opts))).await?;
        let mut n = 0;
        for v in list.volumes.unwrap_or_default() {
            if self.remove_volume(&v.name).await {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Removes a volume, retrying briefly while the engine still sees it in
    /// use by a container being removed. Returns whether it is gone.
    pub(crate) async fn remove_volume(&self, name: &str) -> bool {
        for attempt in 0..20 {
            let opts = RemoveVolumeOptions { force: true };
            match self.call("remove volume", name, self.docker.remove_volume(name, Some(opts))).await {
                Ok(()) | Err(Error::NotFound { .. }) => return true,
                Err(Error::Engine { status: 409, .. }) if attempt < 19 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    tracing::warn!(volume = %name, error = %e, "could not remove volume");
                    return false;
                }
            }
        }
        false
    }

    /// Removes a container by id or name and the named volumes listed,
    /// ignoring "already gone". Used by `remove` and by launch clean-up.
    async fn destroy(&self, id: &str, name: &str, volumes: &[String]) -> Result<()> {
        let opts = RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.call("remove", name, self.docker.remove_container(id, Some(opts))).await {
            Ok(()) => {}
            Err(Error::NotFound { .. }) => {}
            // "removal already in progress": someone else is removing it.
            Err(Error::Engine { status: 409, .. }) => {}
            Err(e) => return Err(e),
        }
        for v in volumes {
            self.remove_volume(v).await;
        }
        Ok(())
    }

    /// Writes `content` to `path` inside the (created, not started)
    /// container through the archive API, creating parent directories.
    ///
    /// The file goes alone into its parent directory when that exists, so
    /// the image's directories keep their owners and modes (an archive
    /// entry for `/home/jovyan` would make a user's home root's, and the
    /// tool could no longer write there). Only when the parent is missing
    /// does the archive carry the parent directories (owned by root).
    async fn upload_file(&self, id: &str, name: &str, path: &str, content: &[u8]) -> Result<()> {
        let io = |source| Error::Io { context: format!("building the input archive for container {name:?}"), source };
        let (parent, file) = path.rsplit_once('/').unwrap_or(("", path));
        let parent = if parent.is_empty() { "/" } else { parent };
        let alone = file_tar(&format!("/{file}"), content).map_err(io)?;
        let opts = UploadToContainerOptions { path: parent.to_owned(), ..Default::default() };
        let upload = self.docker.upload_to_container(id, Some(opts), bollard::body_full(alone.into()));
        match self.call("upload input", name, upload).await {
            Err(Error::NotFound { .. }) if parent != "/" => {
                let tar = file_tar(path, content).map_err(io)?;
                let opts = UploadToContainerOptions { path: "/".to_owned(), ..Default::default() };
                let upload = self.docker.upload_to_container(id, Some(opts), bollard::body_full(tar.into()));
                self.call("upload input", name, upload).await
            }
            other => other,
        }
    }

    async fn launch_created(&self, id: &str, spec: &ContainerSpec, input_file: Option<(&str, Vec<u8>)>) -> Result<()> {
        if let Some((path, content)) = input_file {
            self.upload_file(id, &spec.name, path, &content).await?;
        }
        self.call("start", &spec.name, self.docker.start_container(id, None::<StartContainerOptions>)).await
    }

    /// The subnets of the engine's networks, for a local engine: where
    /// containers' connections to this host come from, whichever address
    /// they dial (`host-gateway`, the bridge's address, a configured
    /// `host-gateway-ip`). Empty for a remote engine.
    ///
    /// # Errors
    ///
    /// When the engine cannot be asked.
    pub async fn network_subnets(&self) -> Result<Vec<Subnet>> {
        if !self.config.host.is_local() {
            return Ok(Vec::new());
        }
        let networks = self.call("list networks", "networks", self.docker.list_networks(None)).await?;
        Ok(networks
            .iter()
            .filter_map(|n| n.ipam.as_ref()?.config.as_ref())
            .flatten()
            .filter_map(|c| c.subnet.as_deref()?.parse().ok())
            .collect())
    }

    pub(crate) async fn resolve_host(&self) -> Result<IpAddr> {
        let EngineHost::Tcp { host, .. } = &self.config.host else {
            return Ok(IpAddr::from([127, 0, 0, 1]));
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(ip);
        }
        let mut addrs = tokio::net::lookup_host((host.as_str(), 0)).await.map_err(|e| Error::EngineUnavailable {
            endpoint: self.config.host.display_url(),
            source: Some(Box::new(e)),
        })?;
        addrs.next().map(|a| a.ip()).ok_or_else(|| Error::EngineUnavailable {
            endpoint: self.config.host.display_url(),
            source: Some(format!("host {host:?} resolves to no address").into()),
        })
    }
}

impl DockerManager {
    /// Creates (on first use) and checks the spec's persistent volumes;
    /// their mounts, and the names of those this call created. A launch
    /// that fails later removes those again (nothing half-made is left),
    /// never one that existed before: that one holds someone's work.
    async fn persistent_mounts(&self, spec: &ContainerSpec) -> Result<(Vec<Mount>, Vec<String>)> {
        let mut created = Vec::new();
        match self.persistent_mounts_noting(spec, &mut created).await {
            Ok(mounts) => Ok((mounts, created)),
            Err(e) => {
                self.remove_new_volumes(&created).await;
                Err(e)
            }
        }
    }

    async fn persistent_mounts_noting(&self, spec: &ContainerSpec, created: &mut Vec<String>) -> Result<Vec<Mount>> {
        let scheme = &self.config.labels;
        let mut mounts = Vec::new();
        for volume in &spec.volumes {
            let labels = match self.call("inspect volume", &volume.name, self.docker.inspect_volume(&volume.name)).await
            {
                Ok(existing) => existing.labels,
                Err(Error::NotFound { .. }) => {
                    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
                    labels.extend(persistent_volume_labels(scheme, volume));
                    // Creating an existing volume answers with that volume,
                    // so two launches racing to create it both succeed;
                    // whoever made it, its labels decide whether this launch
                    // may mount it. (The loser of such a race counts it as
                    // its own; should its launch fail, removing it is
                    // refused while the winner's container mounts it.)
                    let req = VolumeCreateRequest {
                        name: Some(volume.name.clone()),
                        labels: Some(labels),
                        ..Default::default()
                    };
                    let made = self.call("create volume", &spec.name, self.docker.create_volume(req)).await?;
                    created.push(volume.name.clone());
                    made.labels
                }
                Err(e) => return Err(e),
            };
            let labels: BTreeMap<String, String> = labels.into_iter().collect();
            check_persistent_volume(scheme, &spec.name, volume, &labels)?;
            mounts.push(Mount {
                target: Some(volume.path.clone()),
                source: Some(volume.name.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(false),
                ..Default::default()
            });
        }
        Ok(mounts)
    }

    /// Removes persistent volumes a failed launch created.
    async fn remove_new_volumes(&self, names: &[String]) {
        for name in names {
            if self.remove_volume(name).await {
                tracing::debug!(volume = %name, "removed the persistent volume of a failed launch");
            }
        }
    }
}

pub(crate) fn mib_to_bytes(mb: u64) -> i64 {
    i64::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)
}

fn bracket(host: &str) -> String {
    if host.contains(':') { format!("[{host}]") } else { host.to_owned() }
}

fn split_tag(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

/// A tar holding `path` (absolute) with `content`, and its parent
/// directories, for extraction at `/`.
fn file_tar(path: &str, content: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let rel = path.trim_start_matches('/');
    let mut dir = String::new();
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    let mtime = unix_secs(SystemTime::now()).max(0) as u64;
    for part in &parts[..parts.len().saturating_sub(1)] {
        dir.push_str(part);
        dir.push('/');
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(if dir == "tmp/" { 0o1777 } else { 0o755 });
        header.set_size(0);
        header.set_mtime(mtime);
        builder.append_data(&mut header, &dir, std::io::empty())?;
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_size(content.len() as u64);
    header.set_mtime(mtime);
    builder.append_data(&mut header, rel, content)?;
    builder.into_inner()
}

fn parse_log_chunk(bytes: &[u8], stream: LogStream, out: &mut Vec<LogLine>) {
    let text = String::from_utf8_lossy(bytes);
    for raw in text.split_inclusive('\n') {
        let raw = raw.strip_suffix('\n').unwrap_or(raw);
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let (timestamp, line) = match raw.split_once(' ') {
            Some((ts, rest)) => match parse_rfc3339(ts) {
                Some(t) => (t, rest),
                None => (SystemTime::now(), raw),
            },
            None => match parse_rfc3339(raw) {
                Some(t) => (t, ""),
                None => (SystemTime::now(), raw),
            },
        };
        out.push(LogLine { timestamp, stream, line: line.to_owned() });
    }
}

pub(crate) fn log_lines(item: bollard::container::LogOutput) -> Vec<LogLine> {
    use bollard::container::LogOutput;
    let mut out = Vec::new();
    match item {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            parse_log_chunk(&message, LogStream::Stdout, &mut out)
        }
        LogOutput::StdErr { message } => parse_log_chunk(&message, LogStream::Stderr, &mut out),
        LogOutput::StdIn { .. } => {}
    }
    out
}

/// The engine's log query for `options`: both streams, with timestamps.
pub(crate) fn logs_options(options: LogOptions, follow: bool) -> LogsOptions {
    LogsOptions {
        stdout: true,
        stderr: true,
        timestamps: true,
        follow,
        tail: options.tail.map(|n| n.to_string()).unwrap_or_else(|| "all".to_owned()),
        since: options.since.map(|t| i32::try_from(unix_secs(t)).unwrap_or(i32::MAX)).unwrap_or(0),
        ..Default::default()
    }
}

fn event_from_message(msg: EventMessage) -> Option<ContainerEvent> {
    let kind = match msg.action.as_deref()? {
        "create" => EventKind::Created,
        "start" => EventKind::Started,
        "die" => EventKind::Died,
        "destroy" => EventKind::Removed,
        _ => return None,
    };
    let actor = msg.actor?;
    let attrs = actor.attributes.unwrap_or_default();
    let time = match (msg.time_nano, msg.time) {
        (Some(n), _) if n > 0 => SystemTime::UNIX_EPOCH + Duration::from_nanos(u64::try_from(n).ok()?),
        (_, Some(s)) if s > 0 => SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(s).ok()?),
        _ => SystemTime::now(),
    };
    Some(ContainerEvent {
        kind,
        name: attrs.get("name")?.clone(),
        id: actor.id.unwrap_or_default(),
        time,
        exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
    })
}

#[async_trait]
impl ContainerManager for DockerManager {
    fn label_scheme(&self) -> &LabelScheme {
        &self.config.labels
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new("docker", true)
    }

    async fn launch(&self, spec: &ContainerSpec) -> Result<ContainerInfo> {
        let scheme = &self.config.labels;
        validate_for(scheme, spec)?;
        if !spec.placement.constraints.is_empty() {
            check_placement(spec, &self.nodes().await?)?;
        }
        let image = spec.normalized_image();
        self.ensure_image(&image).await?;
        self.ensure_launch_network().await?;

        let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut input_file = None;
        if let Some(input) = &spec.input {
            let doc = serde_json::to_vec(&input.document)
                .map_err(|e| Error::invalid(&spec.name, format!("input document does not serialize: {e}")))?;
            match &input.mode {
                InputMode::Env => env.push(format!("{ENV_INPUT_JSON}={}", String::from_utf8_lossy(&doc))),
                InputMode::Url { url } => env.push(format!("{ENV_INPUT_JSON_URL}={url}")),
                InputMode::File { path } => {
                    env.push(format!("{ENV_INPUT_JSON_PATH}={path}"));
                    input_file = Some((path.as_str(), doc));
                }
            }
        }

        // Volumes first, each labelled with its owner so a crash between
        // here and the container's creation leaves something a sweep finds.
        let mut volumes: Vec<String> = Vec::new();
        let (mut mounts, new_persistent) = self.persistent_mounts(spec).await?;
        for dir in &spec.extra_directories {
            // The spec's own labels too (a test run's, a tool's), so sweeps
            // by label find the volume.
            let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
            labels.insert(scheme.root().to_owned(), "true".to_owned());
            labels.insert(scheme.volume_owner_key(), spec.name.clone());
            let req = VolumeCreateRequest { labels: Some(labels), ..Default::default() };
            let created = match self.call("create volume", &spec.name, self.docker.create_volume(req)).await {
                Ok(v) => v,
                Err(e) => {
                    for v in &volumes {
                        self.remove_volume(v).await;
                    }
                    self.remove_new_volumes(&new_persistent).await;
                    return Err(e);
                }
            };
            mounts.push(Mount {
                target: Some(dir.clone()),
                source: Some(created.name.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(false),
                ..Default::default()
            });
            volumes.push(created.name);
        }

        let port_key = format!("{}/tcp", spec.container_port);
        let publish = self.config.effective_endpoint_mode() == EndpointMode::PublishedPort;
        let host_config = HostConfig {
            nano_cpus: Some(spec.nano_cpus()),
            cpu_shares: spec.cpu_shares(),
            memory_reservation: Some(mib_to_bytes(spec.mem_reservation_mb)),
            memory: spec.mem_limit_mb.map(mib_to_bytes),
            shm_size: spec.shm_size_mb.map(mib_to_bytes),
            mounts: (!mounts.is_empty()).then_some(mounts),
            port_bindings: publish.then(|| {
                HashMap::from([(
                    port_key.clone(),
                    Some(vec![PortBinding {
                        host_ip: Some(self.config.effective_publish_ip()),
                        host_port: Some(String::new()),
                    }]),
                )])
            }),
            extra_hosts: self.config.host_gateway_alias.as_ref().map(|alias| vec![format!("{alias}:host-gateway")]),
            network_mode: if self.config.effective_endpoint_mode() == EndpointMode::HostNetwork {
                Some("host".to_owned())
            } else {
                self.config.network.name().map(str::to_owned)
            },
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            env: Some(env),
            labels: Some(container_labels(scheme, spec).into_iter().collect()),
            exposed_ports: Some(vec![port_key]),
            host_config: Some(host_config),
            cmd: spec.command.clone(),
            entrypoint: spec.entrypoint.clone(),
            working_dir: spec.working_dir.clone(),
            user: spec.user.clone(),
            ..Default::default()
        };
        let opts = CreateContainerOptions { name: Some(spec.name.clone()), ..Default::default() };
        let created = match self.docker.create_container(Some(opts), body).await {
            Ok(c) => c,
            Err(e) => {
                for v in &volumes {
                    self.remove_volume(v).await;
                }
                self.remove_new_volumes(&new_persistent).await;
                let subject = match &e {
                    BollardError::DockerResponseServerError { status_code: 404, message } => {
                        if message.to_ascii_lowercase().contains("network") {
                            // Removed behind berth's back: looked at again next time.
                            self.network_ready.store(false, Ordering::Release);
                        }
                        image.as_str()
                    }
                    _ => spec.name.as_str(),
                };
                return Err(self.classify("create", subject, e));
            }
        };
        if let Err(e) = self.launch_created(&created.id, spec, input_file).await {
            tracing::warn!(name = %spec.name, error = %e, "launch failed after create; removing the container");
            if let Err(cleanup) = self.destroy(&created.id, &spec.name, &volumes).await {
                tracing::error!(name = %spec.name, error = %cleanup, "could not remove half-launched container");
            }
            self.remove_new_volumes(&new_persistent).await;
            return Err(e);
        }
        tracing::info!(name = %spec.name, %image, "container launched");
        self.inspect(&spec.name).await
    }

    async fn inspect(&self, name: &str) -> Result<ContainerInfo> {
        let resp = self.inspect_raw(name).await?;
        Ok(self.info_from_inspect(&resp))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<ContainerInfo>> {
        let mut labels = vec![self.config.labels.root().to_owned()];
        for (k, v) in &filter.labels {
            labels.push(match v {
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            });
        }
        let mut filters = HashMap::from([("label".to_owned(), labels)]);
        if let Some(name) = &filter.name {
            // The engine's name filter is a regular expression; anchor it
            // and escape the name, then check exactly below anyway.
            let escaped: String = name
                .chars()
                .flat_map(|c| {
                    let esc = !c.is_ascii_alphanumeric() && c != '-' && c != '_';
                    esc.then_some('\\').into_iter().chain(std::iter::once(c))
                })
                .collect();
            filters.insert("name".to_owned(), vec![format!("^/?{escaped}$")]);
        }
        let opts = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let list = self.call("list", "containers", self.docker.list_containers(Some(opts))).await?;
        let mut out: Vec<ContainerInfo> =
            list.iter().map(|s| self.info_from_summary(s)).filter(|i| filter.matches(i)).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn logs(&self, name: &str, options: LogOptions) -> Result<Vec<LogLine>> {
        let resp = self.inspect_raw(name).await?;
        let id = resp.id.unwrap_or_else(|| name.to_owned());
        let opts = logs_options(options, false);
        let chunks = self.call("logs", name, self.docker.logs(&id, Some(opts)).try_collect::<Vec<_>>()).await?;
        let mut lines: Vec<LogLine> = chunks.into_iter().flat_map(log_lines).collect();
        if let Some(since) = options.since {
            lines.retain(|l| l.timestamp >= since);
        }
        Ok(lines)
    }

    async fn follow_logs(&self, name: &str, options: LogOptions) -> Result<LogStreamBox> {
        let resp = self.inspect_raw(name).await?;
        let id = resp.id.unwrap_or_else(|| name.to_owned());
        let opts = logs_options(options, true);
        let this = self.clone();
        let name = name.to_owned();
        let stream = self
            .docker
            .logs(&id, Some(opts))
            .map(move |item| match item {
                Ok(chunk) => Ok(futures_util::stream::iter(log_lines(chunk).into_iter().map(Ok))),
                Err(e) => Err(this.classify("logs", &name, e)),
            })
            .map(|r| match r {
                Ok(s) => s.left_stream(),
                Err(e) => futures_util::stream::iter(vec![Err(e)]).right_stream(),
            })
            .flatten();
        Ok(stream.boxed())
    }

    async fn remove(&self, name: &str) -> Result<()> {
        let resp = self.inspect_raw(name).await?;
        let info = self.info_from_inspect(&resp);
        self.destroy(&info.id, name, &info.volumes).await?;
        // Volumes made for this name whose mount never happened (a crash
        // between volume and container creation) go too.
        let owner = format!("{}={}", self.config.labels.volume_owner_key(), name);
        self.remove_volumes_matching(&owner).await?;
        tracing::info!(%name, "container removed");
        Ok(())
    }

    async fn endpoint(&self, name: &str) -> Result<Endpoint> {
        let resp = self.inspect_raw(name).await?;
        let labels: BTreeMap<String, String> =
            resp.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default().into_iter().collect();
        let port = port_from_labels(&self.config.labels, name, &labels)?;
        let running = resp.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        if !running {
            let state = resp
                .state
                .as_ref()
                .and_then(|s| s.status)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "unknown".to_owned());
            return Err(Error::NotRunning { name: name.to_owned(), state });
        }
        if self.config.effective_endpoint_mode() == EndpointMode::HostNetwork {
            return Ok(Endpoint { addr: SocketAddr::new(self.resolve_host().await?, port) });
        }
        let settings = resp.network_settings.unwrap_or_default();
        let ports = settings.ports.unwrap_or_default();
        if ports.is_empty() {
            return Err(Error::NoPortsOpen { name: name.to_owned() });
        }
        let key = format!("{port}/tcp");
        let Some(bindings) = ports.get(&key) else {
            return Err(Error::ExpectedPortMissing { name: name.to_owned(), port });
        };
        match self.config.effective_endpoint_mode() {
            EndpointMode::BridgeIp | EndpointMode::Auto | EndpointMode::HostNetwork => {
                let networks = settings.networks.unwrap_or_default();
                let ip = self
                    .config
                    .network
                    .name()
                    .and_then(|n| networks.get(n))
                    .into_iter()
                    .chain(networks.values())
                    .filter_map(|n| n.ip_address.as_deref())
                    .find_map(|ip| ip.parse::<IpAddr>().ok())
                    .ok_or_else(|| Error::NoPortsOpen { name: name.to_owned() })?;
                Ok(Endpoint { addr: SocketAddr::new(ip, port) })
            }
            EndpointMode::PublishedPort => {
                let bindings = bindings.as_deref().unwrap_or_default();
                let binding = bindings
                    .iter()
                    .find(|b| b.host_ip.as_deref().is_some_and(|ip| !ip.contains(':')))
                    .or_else(|| bindings.first())
                    .ok_or_else(|| Error::ExpectedPortMissing { name: name.to_owned(), port })?;
                let host_port: u16 = binding
                    .host_port
                    .as_deref()
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| Error::ExpectedPortMissing { name: name.to_owned(), port })?;
                let ip = match (&self.config.host, binding.host_ip.as_deref().and_then(|ip| ip.parse::<IpAddr>().ok()))
                {
                    (EngineHost::Unix { .. }, Some(ip)) if !ip.is_unspecified() => ip,
                    _ => self.resolve_host().await?,
                };
                Ok(Endpoint { addr: SocketAddr::new(ip, host_port) })
            }
        }
    }

    async fn events(&self) -> Result<EventStreamBox> {
        let opts = EventsOptions {
            filters: Some(HashMap::from([
                ("type".to_owned(), vec!["container".to_owned()]),
                ("label".to_owned(), vec![self.config.labels.root().to_owned()]),
                ("event".to_owned(), ["create", "start", "die", "destroy"].map(String::from).to_vec()),
            ])),
            ..Default::default()
        };
        let mut raw = self.docker.events(Some(opts)).boxed();
        // Wait for the engine to accept the subscription (the first poll
        // sends the request), so events from now on are not missed; a
        // quiet engine gives no item, which the short timeout allows.
        let first = match tokio::time::timeout(Duration::from_millis(300), raw.next()).await {
            Ok(Some(Err(e))) => return Err(self.classify("events", "events", e)),
            Ok(item) => item,
            Err(_) => None,
        };
        let this = self.clone();
        let stream = futures_util::stream::iter(first).chain(raw).filter_map(move |item| {
            let out = match item {
                Ok(msg) => event_from_message(msg).map(Ok),
                Err(e) => Some(Err(this.classify("events", "events", e))),
            };
            futures_util::future::ready(out)
        });
        Ok(stream.boxed())
    }

    async fn prune_volumes(&self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for v in self.list_volumes().await? {
            let owner_exists = match &v.container {
                // Any container of that name counts: its volumes are its own business.
                Some(owner) => self.container_named(owner).await?.is_some(),
                None => false,
            };
            if !owner_exists && self.remove_volume(&v.name).await {
                tracing::info!(volume = %v.name, owner = ?v.container, "removed orphan volume");
                removed.push(v.name);
            }
        }
        Ok(removed)
    }

    async fn persistent_volumes(&self) -> Result<Vec<VolumeInfo>> {
        let scheme = &self.config.labels;
        let opts = ListVolumesOptions {
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![scheme.root().to_owned(), scheme.persistent_key()],
            )])),
        };
        let list = self.call("list volumes", "volumes", self.docker.list_volumes(Some(opts))).await?;
        let mut out: Vec<VolumeInfo> = list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| VolumeInfo { container: None, name: v.name, labels: v.labels.into_iter().collect() })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn remove_persistent_volume(&self, name: &str) -> Result<()> {
        let scheme = &self.config.labels;
        let engine_name_ok = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !engine_name_ok {
            return Err(Error::not_found(name));
        }
        let volume = self.call("inspect volume", name, self.docker.inspect_volume(name)).await?;
        if !(volume.labels.contains_key(scheme.root()) && volume.labels.contains_key(&scheme.persistent_key())) {
            return Err(Error::not_found(name));
        }
        let opts = RemoveVolumeOptions { force: false };
        match self.call("remove volume", name, self.docker.remove_volume(name, Some(opts))).await {
            Ok(()) => {
                tracing::info!(volume = %name, "persistent volume removed");
                Ok(())
            }
            Err(Error::Engine { status: 409, .. }) => Err(Error::VolumeInUse { volume: name.to_owned() }),
            Err(e) => Err(e),
        }
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let info = self.call("info", "engine", self.docker.info()).await?;
        let mut node = NodeInfo::new(info.id.unwrap_or_default(), info.name.unwrap_or_default());
        node.os = info.os_type.unwrap_or_else(|| "linux".to_owned());
        node.arch = info.architecture.unwrap_or_else(|| std::env::consts::ARCH.to_owned());
        node.engine_labels = labels_from_list(&info.labels.unwrap_or_default());
        node.memory_mb = info.mem_total.and_then(|b| u64::try_from(b).ok()).unwrap_or(0) / (1024 * 1024);
        node.cpus = info.ncpu.unwrap_or(0) as f64;
        node.addr = Some(self.resolve_host().await?);
        Ok(vec![node])
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        let owner_key = self.config.labels.volume_owner_key();
        let opts = ListVolumesOptions {
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![self.config.labels.root().to_owned(), owner_key.clone()],
            )])),
        };
        let list = self.call("list volumes", "volumes", self.docker.list_volumes(Some(opts))).await?;
        let mut out: Vec<VolumeInfo> = list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| VolumeInfo {
                container: v.labels.get(&owner_key).cloned(),
                name: v.name,
                labels: v.labels.into_iter().collect(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ambiguous_prefixes_in_both_wordings() {
        use super::{Error, is_ambiguous_prefix};
        let old = Error::Engine {
            operation: "inspect",
            status: 500,
            message: "Multiple IDs found with provided prefix: f".into(),
        };
        let new = Error::invalid("ab", "engine refused inspect: multiple IDs found with provided prefix: ab");
        assert!(is_ambiguous_prefix(&old) && is_ambiguous_prefix(&new));
        assert!(!is_ambiguous_prefix(&Error::invalid("ab", "bad")) && !is_ambiguous_prefix(&Error::not_found("ab")));
    }

    #[test]
    fn subnets() {
        use super::Subnet;
        let net: Subnet = "172.17.0.0/16".parse().unwrap();
        assert!(net.contains([172, 17, 3, 4].into()) && !net.contains([172, 18, 0, 1].into()));
        assert!(net.contains("::ffff:172.17.0.9".parse().unwrap()), "IPv4-mapped IPv6");
        let v6: Subnet = "fd00:1::/64".parse().unwrap();
        assert!(v6.contains("fd00:1::5".parse().unwrap()) && !v6.contains("fd00:2::5".parse().unwrap()));
        assert!(!v6.contains([172, 17, 0, 1].into()));
        let all: Subnet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains([8, 8, 8, 8].into()));
        assert_eq!(net.to_string(), "172.17.0.0/16");
        for bad in ["172.17.0.0", "172.17.0.0/33", "x/8", "fd00::/129"] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }

    use super::*;

    #[test]
    fn tar_has_parents() {
        let tar = file_tar("/tmp/deep/input.json", b"{}").unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> =
            archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["tmp/", "tmp/deep/", "tmp/deep/input.json"]);
    }

    #[test]
    fn log_chunks() {
        let mut out = Vec::new();
        parse_log_chunk(
            b"2026-11-24T07:24:49.5Z hello world\n2026-11-24T07:24:50Z second\n",
            LogStream::Stdout,
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].line, "hello world");
        assert_eq!(out[1].line, "second");
        assert!(out[0].timestamp < out[1].timestamp);
    }

    #[test]
    fn split_tags() {
        assert_eq!(split_tag("a/b:1"), ("a/b", "1"));
        assert_eq!(split_tag("reg:5000/a"), ("reg:5000/a", "latest"));
    }
}

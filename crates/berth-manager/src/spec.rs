//! What to launch: [`ContainerSpec`] and the input document's delivery.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::placement::Placement;

/// Default HTTP port a tool listens on inside its container.
pub const DEFAULT_CONTAINER_PORT: u16 = 80;

/// Default CPU share of a container, in CPUs.
pub const DEFAULT_CPUS: f64 = 0.5;

/// Default path of the input document in mode [`InputMode::File`].
pub const DEFAULT_INPUT_PATH: &str = "/tmp/input.json";

/// Environment variable that holds the document in mode [`InputMode::Env`].
pub const ENV_INPUT_JSON: &str = "INPUT_JSON";

/// Environment variable that holds the document's URL in mode [`InputMode::Url`].
pub const ENV_INPUT_JSON_URL: &str = "INPUT_JSON_URL";

/// Environment variable that names the document's path in mode [`InputMode::File`].
///
/// Tools may ignore it and read their configured path; berth sets it so a
/// tool does not have to be told the path twice.
pub const ENV_INPUT_JSON_PATH: &str = "INPUT_JSON_PATH";

/// Environment variable of the test tool contract, read by the mock tool
/// and by the Docker test tool: milliseconds during which `GET /` answers
/// 503, as a slow-starting tool would. Not used by berth itself.
pub const ENV_STARTUP_DELAY_MS: &str = "BERTH_TOOL_STARTUP_DELAY_MS";

/// Largest document accepted in mode [`InputMode::Env`], in bytes.
///
/// Linux refuses to `exec` a process with any single environment string
/// longer than `MAX_ARG_STRLEN` (32 pages, 131072 bytes on x86-64), and the
/// string is `INPUT_JSON=<document>` plus a NUL. A larger document would
/// make the container fail at start with an obscure error, so it is refused
/// up front; use mode `file` or `url` for large documents.
pub const MAX_ENV_INPUT_BYTES: usize = 131_072 - ENV_INPUT_JSON.len() - 2;

/// Largest document accepted in modes [`InputMode::File`] and
/// [`InputMode::Url`], in bytes (64 MiB): a guard against accidents, not a
/// limit of the engine.
pub const MAX_FILE_INPUT_BYTES: usize = 64 * 1024 * 1024;

/// Largest memory reservation a spec may ask for, in MiB (16 TiB): far
/// above any real host, low enough that sums of reservations cannot
/// overflow.
pub const MAX_MEM_RESERVATION_MB: u64 = 16 * 1024 * 1024;

/// Shortest container name accepted (the Docker engine's own minimum).
pub const MIN_NAME_LEN: usize = 2;

/// Longest container name accepted: one DNS label.
pub const MAX_NAME_LEN: usize = 63;

/// How the input document reaches the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum InputMode {
    /// Environment variable `INPUT_JSON` holds the document.
    Env,
    /// Environment variable `INPUT_JSON_URL` holds this URL, where the
    /// document is served (typically by berth's staging store).
    Url {
        /// The URL, reachable from inside the container.
        url: String,
    },
    /// The document is written into the container's filesystem at `path`
    /// before the container starts (through the engine's archive API, so it
    /// works with a remote engine too).
    File {
        /// Absolute path inside the container.
        path: String,
    },
}

impl InputMode {
    /// Short name of the mode: `env`, `url` or `file`.
    pub fn as_str(&self) -> &'static str {
        match self {
            InputMode::Env => "env",
            InputMode::Url { .. } => "url",
            InputMode::File { .. } => "file",
        }
    }
}

/// An input document and how to deliver it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Input {
    /// The JSON document. Conventional keys (`file_relationships`,
    /// `node_info`, `parameters`, `api_prefix`, `extra_directories`) are
    /// passed through untouched.
    pub document: serde_json::Value,
    /// How the container receives it.
    #[serde(flatten)]
    pub mode: InputMode,
}

/// Everything needed to launch one tool container.
///
/// Build one with [`ContainerSpec::new`] and the chained setters, then hand
/// it to [`ContainerManager::launch`](crate::ContainerManager::launch),
/// which validates it before calling the engine.
///
/// ```
/// use berth_manager::ContainerSpec;
///
/// let spec = ContainerSpec::new("berth/debugger", "viz-1", 256)
///     .port(8080)
///     .label("owner", "alice")
///     .extra_directory("/data")
///     .input_env(serde_json::json!({"parameters": {"zoom": 2}}));
/// assert_eq!(spec.normalized_image(), "berth/debugger:latest");
/// assert!(spec.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Image reference; a missing tag means `:latest`.
    pub image: String,
    /// Container name: a lowercase DNS label (`a-z`, `0-9`, `-`; at most 63
    /// characters; no leading or trailing `-`), since it also routes by
    /// hostname.
    pub name: String,
    /// HTTP port the tool listens on inside the container.
    pub container_port: u16,
    /// Extra labels. Keys under the manager's root label are reserved.
    pub labels: BTreeMap<String, String>,
    /// CPU share in CPUs (converted to nano-CPUs for the engine).
    pub cpus: f64,
    /// Memory reservation in MiB (required; used by the memory budget).
    pub mem_reservation_mb: u64,
    /// Absolute paths inside the container that each get a fresh writable
    /// volume, removed with the container.
    pub extra_directories: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// The input document, if any.
    pub input: Option<Input>,
    /// Replaces the image's `CMD` (arguments of its entrypoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's `ENTRYPOINT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Working directory of the process (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// User (and group) the process runs as: `name`, `uid`, `uid:gid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Hard memory limit in MiB (the container is killed beyond it); at
    /// least the reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_limit_mb: Option<u64>,
    /// Hard CPU limit in CPUs. With it, [`cpus`](Self::cpus) is the
    /// container's share (its weight under contention, a reservation on a
    /// cluster); without it, `cpus` is the limit, as in the original.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<f64>,
    /// Size of `/dev/shm` in MiB (the engine's default is 64 MiB, too
    /// little for Chromium- or PyTorch-based tools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size_mb: Option<u64>,
    /// Named volumes that outlive the container (a user's notebooks),
    /// created on first use and removed only on request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<PersistentVolume>,
    /// How berth's proxy treats the container (readiness, prefix
    /// stripping, routing), kept in its labels.
    #[serde(default, skip_serializing_if = "RouteHints::is_default")]
    pub hints: RouteHints,
    /// Where the container may run (constraints, spread preferences), in
    /// Docker Swarm's constraint language; single engines match the
    /// constraints against their one node.
    #[serde(default, skip_serializing_if = "Placement::is_empty")]
    pub placement: Placement,
}

/// A named volume that outlives its container: created on first use,
/// labelled as berth's, kept when the container is removed, evicted or
/// culled, and removed only by an explicit request
/// ([`ContainerManager::remove_persistent_volume`](crate::ContainerManager::remove_persistent_volume)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistentVolume {
    /// Volume name: 2 to 128 characters of `a-z A-Z 0-9 _ . -`, starting
    /// with a letter or digit.
    pub name: String,
    /// Absolute path inside the container where it is mounted.
    pub path: String,
    /// The user it belongs to. A volume that exists with another owner is
    /// refused ([`Error::VolumeOwned`]), so one user's launch cannot mount
    /// another's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// How a container is routed: by path (`/docker/<name>/`) or by hostname
/// (`<name>.<suffix>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    /// Path routing.
    Path,
    /// Hostname routing.
    Host,
}

impl RoutingMode {
    /// `path` or `host`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RoutingMode::Path => "path",
            RoutingMode::Host => "host",
        }
    }

    /// Parses `path` or `host`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "path" => Some(RoutingMode::Path),
            "host" => Some(RoutingMode::Host),
            _ => None,
        }
    }
}

/// What berth's proxy needs to know about one container beyond its port,
/// kept in the container's labels (see [`LabelScheme`](crate::LabelScheme))
/// so that it survives a restart of berth. Every field is optional; the
/// proxy's defaults apply to what is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteHints {
    /// Path probed for readiness (default `/`), as the container receives
    /// it: a container whose prefix is not stripped is probed with the
    /// prefix in the path (berth-axum's tool definitions add it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_path: Option<String>,
    /// Statuses that mean ready; empty means any 2xx or 3xx (a redirect
    /// means the server is up).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ready_status: Vec<u16>,
    /// Seconds the container may take to become ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout_secs: Option<u64>,
    /// Whether the proxy strips `/<prefix>/<name>` before forwarding
    /// (default: the proxy's own setting, which strips).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<bool>,
    /// The one routing this container is served under, when not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingMode>,
    /// The container's public URL (where browsers reach it), for redirects
    /// from the other routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
}

/// Longest readiness timeout a spec may ask for, in seconds (a day).
pub const MAX_START_TIMEOUT_SECS: u64 = 24 * 3600;

impl RouteHints {
    /// True when no hint is set.
    pub fn is_default(&self) -> bool {
        *self == RouteHints::default()
    }

    /// Whether an answer with `status` to the readiness probe means ready.
    ///
    /// ```
    /// use berth_manager::RouteHints;
    /// let any = RouteHints::default();
    /// assert!(any.is_ready(200) && any.is_ready(302) && !any.is_ready(404) && !any.is_ready(503));
    /// let strict = RouteHints { ready_status: vec![200], ..RouteHints::default() };
    /// assert!(strict.is_ready(200) && !strict.is_ready(302));
    /// ```
    pub fn is_ready(&self, status: u16) -> bool {
        if self.ready_status.is_empty() { (200..400).contains(&status) } else { self.ready_status.contains(&status) }
    }

    /// Writes the hints as labels under `scheme`'s root (absent hints
    /// write nothing).
    pub fn to_labels(&self, scheme: &crate::LabelScheme, labels: &mut BTreeMap<String, String>) {
        if let Some(p) = &self.ready_path {
            labels.insert(scheme.hint_key("ready_path"), p.clone());
        }
        if !self.ready_status.is_empty() {
            let list: Vec<String> = self.ready_status.iter().map(u16::to_string).collect();
            labels.insert(scheme.hint_key("ready_status"), list.join(","));
        }
        if let Some(secs) = self.start_timeout_secs {
            labels.insert(scheme.hint_key("start_timeout_secs"), secs.to_string());
        }
        if let Some(strip) = self.strip_prefix {
            labels.insert(scheme.hint_key("strip_prefix"), strip.to_string());
        }
        if let Some(mode) = self.routing {
            labels.insert(scheme.hint_key("routing"), mode.as_str().to_owned());
        }
        if let Some(url) = &self.public_url {
            labels.insert(scheme.hint_key("public_url"), url.clone());
        }
    }

    /// Reads the hints back from a container's labels. Values that do not
    /// parse (a container labelled by hand) count as absent.
    pub fn from_labels(scheme: &crate::LabelScheme, labels: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| labels.get(&scheme.hint_key(k));
        let hints = RouteHints {
            ready_path: get("ready_path").cloned(),
            ready_status: get("ready_status")
                .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
                .unwrap_or_default(),
            start_timeout_secs: get("start_timeout_secs").and_then(|v| v.parse().ok()),
            strip_prefix: get("strip_prefix").and_then(|v| v.parse().ok()),
            routing: get("routing").and_then(|v| RoutingMode::parse(v)),
            public_url: get("public_url").cloned(),
        };
        // Hand-made labels must not make the proxy probe a bad target.
        match hints.validate("") {
            Ok(()) => hints,
            Err(_) => RouteHints { ready_path: None, ..hints },
        }
    }

    /// The path probed for readiness.
    pub fn ready_path(&self) -> &str {
        self.ready_path.as_deref().unwrap_or("/")
    }

    fn validate(&self, name: &str) -> Result<()> {
        if let Some(path) = &self.ready_path {
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::invalid(
                    name,
                    format!("ready_path {path:?} must start with / and contain no spaces or control characters"),
                ));
            }
            if http_path_invalid(path) {
                return Err(Error::invalid(name, format!("ready_path {path:?} is not a valid request target")));
            }
        }
        if let Some(bad) = self.ready_status.iter().find(|s| !(100..=599).contains(*s)) {
            return Err(Error::invalid(name, format!("ready_status {bad} is not an HTTP status (100 to 599)")));
        }
        if let Some(secs) = self.start_timeout_secs
            && (secs == 0 || secs > MAX_START_TIMEOUT_SECS)
        {
            return Err(Error::invalid(
                name,
                format!("start_timeout_secs {secs} must be between 1 and {MAX_START_TIMEOUT_SECS}"),
            ));
        }
        if let Some(url) = &self.public_url
            && (!(url.starts_with("http://") || url.starts_with("https://"))
                || url.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(Error::invalid(name, format!("public_url {url:?} is not an http(s) URL")));
        }
        Ok(())
    }
}

/// Characters a request target may not contain unescaped.
fn http_path_invalid(path: &str) -> bool {
    path.bytes().any(|b| {
        b == b'"'
            || b == b'<'
            || b == b'>'
            || b == b'\\'
            || b == b'^'
            || b == b'`'
            || b == b'{'
            || b == b'|'
            || b == b'}'
            || b == b'#'
            || b >= 0x7f
    })
}

/// Longest persistent volume name accepted.
pub const MAX_VOLUME_NAME_LEN: usize = 128;

/// Checks a persistent volume name: 2 to [`MAX_VOLUME_NAME_LEN`]
/// characters of `a-z A-Z 0-9 _ . -`, starting with a letter or digit (the
/// Docker engine's rule, bounded).
///
/// # Errors
///
/// [`Error::InvalidSpec`] (with `container` as the name) saying what is wrong.
pub fn validate_volume_name(container: &str, volume: &str) -> Result<()> {
    let ok_chars = volume.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    let ok_start = volume.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if volume.len() < 2 || volume.len() > MAX_VOLUME_NAME_LEN || !ok_chars || !ok_start {
        return Err(Error::invalid(
            container,
            format!(
                "volume name {volume:?} is not valid: 2 to {MAX_VOLUME_NAME_LEN} characters of a-z, A-Z, 0-9, _ . -, starting with a letter or digit"
            ),
        ));
    }
    Ok(())
}

impl ContainerSpec {
    /// A spec with the defaults: port 80, 0.5 CPUs, no labels, no extra
    /// directories, no environment, no input.
    pub fn new(image: impl Into<String>, name: impl Into<String>, mem_reservation_mb: u64) -> Self {
        ContainerSpec {
            image: image.into(),
            name: name.into(),
            container_port: DEFAULT_CONTAINER_PORT,
            labels: BTreeMap::new(),
            cpus: DEFAULT_CPUS,
            mem_reservation_mb,
            extra_directories: Vec::new(),
            env: BTreeMap::new(),
            input: None,
            command: None,
            entrypoint: None,
            working_dir: None,
            user: None,
            mem_limit_mb: None,
            cpu_limit: None,
            shm_size_mb: None,
            volumes: Vec::new(),
            hints: RouteHints::default(),
            placement: Placement::default(),
        }
    }

    /// Adds a placement constraint (`node.labels.gpu==yes`, see [`Placement`]).
    pub fn constraint(mut self, constraint: impl Into<String>) -> Self {
        self.placement.constraints.push(constraint.into());
        self
    }

    /// Adds a spread preference (`node.labels.zone`, see [`Placement`]).
    pub fn spread(mut self, descriptor: impl Into<String>) -> Self {
        self.placement.preferences.push(descriptor.into());
        self
    }

    /// Replaces the image's `CMD`.
    pub fn command<I: IntoIterator<Item = S>, S: Into<String>>(mut self, command: I) -> Self {
        self.command = Some(command.into_iter().map(Into::into).collect());
        self
    }

    /// Replaces the image's `ENTRYPOINT`.
    pub fn entrypoint<I: IntoIterator<Item = S>, S: Into<String>>(mut self, entrypoint: I) -> Self {
        self.entrypoint = Some(entrypoint.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the working directory.
    pub fn working_dir(mut self, dir: impl Into<String>) -> Self {
        self.working_dir = Some(dir.into());
        self
    }

    /// Sets the user the process runs as.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the hard memory limit in MiB.
    pub fn mem_limit_mb(mut self, mb: u64) -> Self {
        self.mem_limit_mb = Some(mb);
        self
    }

    /// Sets the hard CPU limit in CPUs.
    pub fn cpu_limit(mut self, cpus: f64) -> Self {
        self.cpu_limit = Some(cpus);
        self
    }

    /// Sets the size of `/dev/shm` in MiB.
    pub fn shm_size_mb(mut self, mb: u64) -> Self {
        self.shm_size_mb = Some(mb);
        self
    }

    /// Mounts the persistent volume `name` (created on first use, owned by
    /// `owner`) at `path`.
    pub fn persistent_volume(mut self, name: impl Into<String>, path: impl Into<String>, owner: Option<&str>) -> Self {
        self.volumes.push(PersistentVolume { name: name.into(), path: path.into(), owner: owner.map(str::to_owned) });
        self
    }

    /// Sets the proxy hints.
    pub fn hints(mut self, hints: RouteHints) -> Self {
        self.hints = hints;
        self
    }

    /// Sets the container port.
    pub fn port(mut self, port: u16) -> Self {
        self.container_port = port;
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the CPU share.
    pub fn cpus(mut self, cpus: f64) -> Self {
        self.cpus = cpus;
        self
    }

    /// Adds an extra directory (absolute path) backed by a fresh volume.
    pub fn extra_directory(mut self, path: impl Into<String>) -> Self {
        self.extra_directories.push(path.into());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Delivers `document` in environment variable `INPUT_JSON`.
    pub fn input_env(mut self, document: serde_json::Value) -> Self {
        self.input = Some(Input { document, mode: InputMode::Env });
        self
    }

    /// Sets `INPUT_JSON_URL` to `url`, where `document` is served.
    pub fn input_url(mut self, document: serde_json::Value, url: impl Into<String>) -> Self {
        self.input = Some(Input { document, mode: InputMode::Url { url: url.into() } });
        self
    }

    /// Writes `document` into the container at `path` before it starts.
    pub fn input_file(mut self, document: serde_json::Value, path: impl Into<String>) -> Self {
        self.input = Some(Input { document, mode: InputMode::File { path: path.into() } });
        self
    }

    /// The image reference with `:latest` added when it has no tag or digest.
    pub fn normalized_image(&self) -> String {
        normalize_image(&self.image)
    }

    /// The hard CPU limit in nano-CPUs, as the engine wants it:
    /// [`cpu_limit`](Self::cpu_limit) when set, else [`cpus`](Self::cpus)
    /// (the original library's meaning of its CPU setting).
    pub fn nano_cpus(&self) -> i64 {
        // Validation bounds both to (0, 1024], so the product fits an i64.
        (self.cpu_limit.unwrap_or(self.cpus) * 1e9).round() as i64
    }

    /// The container's CPU weight under contention (the engine's
    /// `CpuShares`, 1024 per CPU) when a separate limit is set; `None`
    /// leaves the engine's default.
    pub fn cpu_shares(&self) -> Option<i64> {
        self.cpu_limit.map(|_| ((self.cpus * 1024.0).round() as i64).max(2))
    }

    /// Checks the spec without calling any engine.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSpec`] naming the first problem found: bad name,
    /// empty or malformed image, port 0, CPUs not in (0, 1024], zero memory
    /// reservation, relative or duplicate extra directory, relative input
    /// path, environment key that is empty or contains `=`, or a URL-mode
    /// URL that is not http(s). [`Error::InputTooLarge`] when the document
    /// exceeds its mode's limit.
    pub fn validate(&self) -> Result<()> {
        validate_name(&self.name)?;
        let name = self.name.as_str();
        if self.image.trim().is_empty() {
            return Err(Error::invalid(name, "image is empty"));
        }
        if self.image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid(
                name,
                format!("image {:?} contains whitespace or control characters", self.image),
            ));
        }
        if self.container_port == 0 {
            return Err(Error::invalid(name, "container port must not be 0"));
        }
        if !(self.cpus.is_finite() && self.cpus > 0.0 && self.cpus <= 1024.0) {
            return Err(Error::invalid(name, format!("cpus must be in (0, 1024], got {}", self.cpus)));
        }
        if self.mem_reservation_mb == 0 {
            return Err(Error::invalid(name, "memory reservation (MB) is required and must be > 0"));
        }
        if self.mem_reservation_mb > MAX_MEM_RESERVATION_MB {
            return Err(Error::invalid(
                name,
                format!(
                    "memory reservation {} MB is over the {MAX_MEM_RESERVATION_MB} MB limit",
                    self.mem_reservation_mb
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for dir in &self.extra_directories {
            validate_container_path(name, "extra directory", dir)?;
            if dir == "/" {
                return Err(Error::invalid(name, "extra directory must not be \"/\""));
            }
            if !seen.insert(dir.trim_end_matches('/')) {
                return Err(Error::invalid(name, format!("extra directory {dir:?} is listed twice")));
            }
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(Error::invalid(name, format!("environment key {key:?} is not valid")));
            }
        }
        for (key, value) in &self.env {
            if value.contains('\0') {
                return Err(Error::invalid(name, format!("environment value of {key:?} contains NUL")));
            }
        }
        self.validate_process(name)?;
        self.validate_resources(name)?;
        let mut mount_paths: std::collections::BTreeSet<&str> =
            self.extra_directories.iter().map(|d| d.trim_end_matches('/')).collect();
        let mut volume_names = std::collections::BTreeSet::new();
        for (i, v) in self.volumes.iter().enumerate() {
            validate_volume_name(name, &v.name)?;
            validate_container_path(name, &format!("volumes[{i}].path"), &v.path)?;
            if v.path == "/" {
                return Err(Error::invalid(name, format!("volumes[{i}].path must not be \"/\"")));
            }
            if !mount_paths.insert(v.path.trim_end_matches('/')) {
                return Err(Error::invalid(name, format!("volumes[{i}].path {:?} is mounted twice", v.path)));
            }
            if !volume_names.insert(v.name.as_str()) {
                return Err(Error::invalid(name, format!("volume {:?} is listed twice", v.name)));
            }
            if v.owner.as_deref().is_some_and(|o| o.is_empty() || o.contains(['\0', '\n'])) {
                return Err(Error::invalid(name, format!("volumes[{i}].owner is empty or contains NUL/newline")));
            }
        }
        self.hints.validate(name)?;
        self.placement.validate().map_err(|reason| Error::invalid(name, reason))?;
        if let Some(input) = &self.input {
            let size = input_size(&input.document);
            let limit = match &input.mode {
                InputMode::Env => MAX_ENV_INPUT_BYTES,
                InputMode::File { path } => {
                    validate_container_path(name, "input path", path)?;
                    if path.ends_with('/') {
                        return Err(Error::invalid(name, format!("input path {path:?} names a directory")));
                    }
                    MAX_FILE_INPUT_BYTES
                }
                InputMode::Url { url } => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(Error::invalid(
                            name,
                            format!("input URL {url:?} must start with http:// or https://"),
                        ));
                    }
                    MAX_FILE_INPUT_BYTES
                }
            };
            if size > limit {
                return Err(Error::InputTooLarge { name: name.to_owned(), size, limit, mode: input.mode.as_str() });
            }
        }
        Ok(())
    }
}

impl ContainerSpec {
    /// Command, entrypoint, working directory and user.
    fn validate_process(&self, name: &str) -> Result<()> {
        for (field, list) in [("command", &self.command), ("entrypoint", &self.entrypoint)] {
            let Some(list) = list else { continue };
            if list.is_empty() {
                return Err(Error::invalid(
                    name,
                    format!("{field} is an empty list: leave it out to keep the image's own"),
                ));
            }
            if let Some(i) = list.iter().position(|a| a.contains('\0')) {
                return Err(Error::invalid(name, format!("{field}[{i}] contains NUL")));
            }
        }
        if let Some(dir) = &self.working_dir
            && (!dir.starts_with('/') || dir.contains('\0'))
        {
            return Err(Error::invalid(name, format!("working_dir {dir:?} is not an absolute path")));
        }
        if let Some(user) = &self.user
            && (user.is_empty() || user.len() > 256 || user.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(Error::invalid(name, format!("user {user:?} must be a name, uid or uid:gid without spaces")));
        }
        Ok(())
    }

    /// Limits beside the reservation.
    fn validate_resources(&self, name: &str) -> Result<()> {
        if let Some(limit) = self.mem_limit_mb {
            if limit < self.mem_reservation_mb {
                return Err(Error::invalid(
                    name,
                    format!("mem_limit_mb {limit} is below the memory reservation of {} MB", self.mem_reservation_mb),
                ));
            }
            if limit > MAX_MEM_RESERVATION_MB {
                return Err(Error::invalid(
                    name,
                    format!("mem_limit_mb {limit} is over the {MAX_MEM_RESERVATION_MB} MB limit"),
                ));
            }
        }
        if let Some(limit) = self.cpu_limit {
            if !(limit.is_finite() && limit > 0.0 && limit <= 1024.0) {
                return Err(Error::invalid(name, format!("cpu_limit must be in (0, 1024], got {limit}")));
            }
            if limit < self.cpus {
                return Err(Error::invalid(name, format!("cpu_limit {limit} is below the CPU share of {}", self.cpus)));
            }
        }
        if let Some(shm) = self.shm_size_mb
            && (shm == 0 || shm > MAX_MEM_RESERVATION_MB)
        {
            return Err(Error::invalid(
                name,
                format!("shm_size_mb must be between 1 and {MAX_MEM_RESERVATION_MB}, got {shm}"),
            ));
        }
        Ok(())
    }
}

/// Serialized size of a document in bytes.
fn input_size(document: &serde_json::Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing into a counter cannot fail; a failure would only undercount.
    let _ = serde_json::to_writer(&mut counter, document);
    counter.0
}

fn validate_container_path(name: &str, what: &str, path: &str) -> Result<()> {
    if !path.starts_with('/') {
        return Err(Error::invalid(name, format!("{what} {path:?} is not an absolute path")));
    }
    if path.contains('\0') {
        return Err(Error::invalid(name, format!("{what} {path:?} contains NUL")));
    }
    if path.split('/').any(|part| part == ".." || part == ".") {
        return Err(Error::invalid(name, format!("{what} {path:?} contains . or .. components")));
    }
    if path.contains(':') || path.contains(',') {
        // `:` separates bind fields and `,` mount options in the engine's syntax.
        return Err(Error::invalid(name, format!("{what} {path:?} contains ':' or ','")));
    }
    Ok(())
}

/// Checks that `name` is a valid container name: a lowercase DNS label of
/// at least two characters (the Docker engine refuses one-character names).
///
/// # Errors
///
/// [`Error::InvalidSpec`] saying which rule is broken.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(name, "name is empty"));
    }
    if name.len() < MIN_NAME_LEN {
        return Err(Error::invalid(name, format!("name must be at least {MIN_NAME_LEN} characters long")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid(
            name,
            format!("name is {} characters long, at most {MAX_NAME_LEN} allowed", name.len()),
        ));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(Error::invalid(name, format!("name may contain only a-z, 0-9 and '-', found {bad:?}")));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(Error::invalid(name, "name must not start or end with '-'"));
    }
    Ok(())
}

/// Adds `:latest` to an image reference that has neither tag nor digest.
///
/// A colon inside the registry part (`localhost:5000/tool`) is a port, not
/// a tag.
///
/// ```
/// use berth_manager::normalize_image;
/// assert_eq!(normalize_image("tool"), "tool:latest");
/// assert_eq!(normalize_image("tool:1.2"), "tool:1.2");
/// assert_eq!(normalize_image("localhost:5000/tool"), "localhost:5000/tool:latest");
/// assert_eq!(normalize_image("tool@sha256:abc"), "tool@sha256:abc");
/// ```
pub fn normalize_image(image: &str) -> String {
    let image = image.trim();
    if image.contains('@') {
        return image.to_owned();
    }
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    if last_segment.contains(':') { image.to_owned() } else { format!("{image}:latest") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> ContainerSpec {
        ContainerSpec::new("tool", "viz-1", 100)
    }

    #[test]
    fn names() {
        for ok in ["ab", "viz-1", "0abc", "00", &"a".repeat(63)] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "a", "0", "-a", "a-", "Viz", "a_b", "a.b", "a/b", "..", "a b", &"a".repeat(64), "é"] {
            let err = validate_name(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidSpec { .. }), "{bad:?}: {err}");
        }
    }

    #[test]
    fn image_normalization() {
        assert_eq!(normalize_image("a/b"), "a/b:latest");
        assert_eq!(normalize_image("a/b:c"), "a/b:c");
        assert_eq!(normalize_image("reg:1/a/b"), "reg:1/a/b:latest");
    }

    #[test]
    fn nano_cpus() {
        assert_eq!(spec().nano_cpus(), 500_000_000);
        assert_eq!(spec().cpus(2.0).nano_cpus(), 2_000_000_000);
    }

    #[test]
    fn bad_specs() {
        let cases: Vec<(ContainerSpec, &str)> = vec![
            (spec().extra_directory("data"), "not an absolute path"),
            (spec().extra_directory("/a/../b"), ". or .."),
            (spec().extra_directory("/a").extra_directory("/a/"), "twice"),
            (spec().extra_directory("/"), "must not be"),
            (spec().port(0), "port"),
            (spec().cpus(0.0), "cpus"),
            (spec().cpus(f64::NAN), "cpus"),
            (ContainerSpec::new("tool", "xy", 0), "memory"),
            (ContainerSpec::new("tool", "xy", MAX_MEM_RESERVATION_MB + 1), "over the"),
            (ContainerSpec::new(" ", "xy", 1), "image is empty"),
            (ContainerSpec::new("a b", "xy", 1), "whitespace"),
            (spec().env("A=B", "c"), "environment key"),
            (spec().input_file(json!({}), "tmp/input.json"), "not an absolute"),
            (spec().input_file(json!({}), "/tmp/"), "directory"),
            (spec().input_url(json!({}), "ftp://x"), "http"),
            (spec().mem_limit_mb(99), "mem_limit_mb 99 is below"),
            (spec().cpu_limit(0.25), "cpu_limit 0.25 is below"),
            (spec().cpu_limit(f64::INFINITY), "cpu_limit must be"),
            (spec().shm_size_mb(0), "shm_size_mb"),
            (ContainerSpec { command: Some(vec![]), ..spec() }, "command is an empty list"),
            (spec().entrypoint(["a\0b"]), "entrypoint[0] contains NUL"),
            (spec().working_dir("rel"), "working_dir"),
            (spec().user("a b"), "user"),
            (spec().persistent_volume("x", "/w", None), "volume name \"x\""),
            (spec().persistent_volume("home/x", "/w", None), "volume name"),
            (spec().persistent_volume("vol", "w", None), "volumes[0].path"),
            (spec().persistent_volume("vol", "/", None), "must not be"),
            (spec().persistent_volume("vol", "/a", None).persistent_volume("vol", "/b", None), "listed twice"),
            (spec().extra_directory("/a").persistent_volume("vol", "/a/", None), "mounted twice"),
            (spec().persistent_volume("vol", "/a", Some("")), "owner"),
            (spec().hints(RouteHints { ready_path: Some("lab".into()), ..Default::default() }), "ready_path"),
            (spec().hints(RouteHints { ready_path: Some("/a b".into()), ..Default::default() }), "ready_path"),
            (spec().hints(RouteHints { ready_status: vec![99], ..Default::default() }), "ready_status 99"),
            (spec().hints(RouteHints { start_timeout_secs: Some(0), ..Default::default() }), "start_timeout_secs"),
            (spec().hints(RouteHints { public_url: Some("ftp://x".into()), ..Default::default() }), "public_url"),
            (spec().constraint("node.labels.gpu"), "no == or != operator"),
            (spec().spread("zone"), "spread descriptor"),
        ];
        for (spec, needle) in cases {
            let err = spec.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
    }

    #[test]
    fn limits_and_shares() {
        let s = spec().cpus(0.5);
        assert_eq!((s.nano_cpus(), s.cpu_shares()), (500_000_000, None), "cpus is the limit without cpu_limit");
        let s = spec().cpus(0.5).cpu_limit(2.0);
        assert_eq!((s.nano_cpus(), s.cpu_shares()), (2_000_000_000, Some(512)));
        spec().mem_limit_mb(100).validate().unwrap();
        spec().mem_limit_mb(4096).shm_size_mb(512).validate().unwrap();
    }

    #[test]
    fn hints_round_trip_through_labels() {
        let scheme = crate::LabelScheme::default();
        let hints = RouteHints {
            ready_path: Some("/lab".into()),
            ready_status: vec![200, 302],
            start_timeout_secs: Some(30),
            strip_prefix: Some(false),
            routing: Some(RoutingMode::Host),
            public_url: Some("http://viz.docker.localhost/".into()),
        };
        let mut labels = BTreeMap::new();
        hints.to_labels(&scheme, &mut labels);
        assert_eq!(labels["berth.ready_status"], "200,302");
        assert_eq!(RouteHints::from_labels(&scheme, &labels), hints);
        assert!(RouteHints::from_labels(&scheme, &BTreeMap::new()).is_default());
        // A hand-made label that would make a bad probe target is ignored.
        labels.insert("berth.ready_path".into(), "no-slash".into());
        assert_eq!(RouteHints::from_labels(&scheme, &labels).ready_path, None);
    }

    #[test]
    fn new_fields_keep_old_serializations() {
        // Specs without the new fields serialize as before, so the fleet's
        // spec hashes of running containers stay the same.
        let v = serde_json::to_value(spec()).unwrap();
        for key in ["command", "entrypoint", "volumes", "hints", "mem_limit_mb", "shm_size_mb", "user", "placement"] {
            assert!(v.get(key).is_none(), "{key} serialized: {v}");
        }
    }

    #[test]
    fn env_input_limit() {
        let doc = json!({"blob": "x".repeat(MAX_ENV_INPUT_BYTES)});
        let err = spec().input_env(doc.clone()).validate().unwrap_err();
        assert!(matches!(err, Error::InputTooLarge { mode: "env", .. }), "{err}");
        // The same document is fine as a file.
        spec().input_file(doc, DEFAULT_INPUT_PATH).validate().unwrap();
        // Exactly at the limit is accepted.
        let pad = MAX_ENV_INPUT_BYTES - input_size(&json!({"b": ""}));
        spec().input_env(json!({"b": "y".repeat(pad)})).validate().unwrap();
    }

    #[test]
    fn input_serde_shape() {
        let input = Input { document: json!({"a": 1}), mode: InputMode::File { path: "/tmp/input.json".into() } };
        let v = serde_json::to_value(&input).unwrap();
        assert_eq!(v, json!({"document": {"a": 1}, "mode": "file", "path": "/tmp/input.json"}));
    }
}

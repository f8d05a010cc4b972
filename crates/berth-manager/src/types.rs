//! Values the manager hands back: container descriptions, endpoints, log
//! lines, events, and the label scheme that marks berth's containers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Default root label.
pub const DEFAULT_ROOT_LABEL: &str = "berth";

/// The root label of the Python library `django_docker_engine`: use it as
/// [`LabelScheme::new`]'s argument to adopt containers that library started.
pub const DJANGO_DOCKER_ENGINE_ROOT_LABEL: &str = "io.github.refinery-project.django_docker_engine";

/// The labels that mark a container as managed.
///
/// A managed container carries `<root>=true`, `<root>.port=<container
/// port>` and `<root>.mem_reservation_mb=<MiB>`; its volumes carry
/// `<root>=true` and `<root>.container=<name>`. Only containers with the
/// root label are ever listed, managed or resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LabelScheme {
    root: String,
}

impl Default for LabelScheme {
    fn default() -> Self {
        LabelScheme::new(DEFAULT_ROOT_LABEL)
    }
}

impl LabelScheme {
    /// A scheme with the given root label.
    pub fn new(root: impl Into<String>) -> Self {
        LabelScheme { root: root.into() }
    }

    /// The root label key.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Key of the container-port label.
    pub fn port_key(&self) -> String {
        format!("{}.port", self.root)
    }

    /// Key of the memory-reservation label.
    pub fn mem_key(&self) -> String {
        format!("{}.mem_reservation_mb", self.root)
    }

    /// Key of the label that ties a volume to its container.
    pub fn volume_owner_key(&self) -> String {
        format!("{}.container", self.root)
    }

    /// Key of a proxy-hint label (`<root>.<hint>`, see
    /// [`RouteHints`](crate::RouteHints)).
    pub fn hint_key(&self, hint: &str) -> String {
        format!("{}.{hint}", self.root)
    }

    /// Key of the container label listing its persistent volumes
    /// (comma-separated names).
    pub fn persistent_volumes_key(&self) -> String {
        format!("{}.persistent_volumes", self.root)
    }

    /// Key of the label that marks a volume as persistent (it outlives
    /// its containers).
    pub fn persistent_key(&self) -> String {
        format!("{}.persistent", self.root)
    }

    /// Key of the label naming a persistent volume's owner.
    pub fn volume_user_key(&self) -> String {
        format!("{}.volume_owner", self.root)
    }

    /// Key of the label that marks a network berth made for its containers
    /// (value `isolated`, see [`ContainerNetwork`](crate::docker::ContainerNetwork)).
    pub fn network_key(&self) -> String {
        format!("{}.network", self.root)
    }

    /// True when `key` is the root label or sits under it; such keys are
    /// reserved for berth and refused in a spec's labels.
    pub fn is_reserved(&self, key: &str) -> bool {
        key == self.root || key.strip_prefix(self.root.as_str()).is_some_and(|rest| rest.starts_with('.'))
    }
}

/// Coarse lifecycle state of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ContainerState {
    /// Created, not started yet.
    Created,
    /// Running.
    Running,
    /// Paused by the engine.
    Paused,
    /// Restarting.
    Restarting,
    /// Being removed.
    Removing,
    /// Exited.
    Exited,
    /// Dead (the engine failed to remove or stop it).
    Dead,
    /// Anything the engine reports that berth does not know.
    Unknown,
}

impl ContainerState {
    /// Parses the engine's state word.
    pub fn from_engine(s: &str) -> Self {
        match s {
            "created" => ContainerState::Created,
            "running" => ContainerState::Running,
            "paused" => ContainerState::Paused,
            "restarting" => ContainerState::Restarting,
            "removing" => ContainerState::Removing,
            "exited" => ContainerState::Exited,
            "dead" => ContainerState::Dead,
            _ => ContainerState::Unknown,
        }
    }

    /// The state word.
    pub fn as_str(&self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
            ContainerState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the manager knows about one managed container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Engine id.
    pub id: String,
    /// Container name (without the engine's leading `/`).
    pub name: String,
    /// Image reference as launched.
    pub image: String,
    /// All labels, berth's included.
    pub labels: BTreeMap<String, String>,
    /// Lifecycle state.
    pub state: ContainerState,
    /// Exit code, when the container has exited.
    pub exit_code: Option<i64>,
    /// Creation time.
    pub created: SystemTime,
    /// Start time, when it has started.
    pub started: Option<SystemTime>,
    /// Container port from the port label, when present and valid.
    pub container_port: Option<u16>,
    /// Memory reservation from its label, when present and valid.
    pub mem_reservation_mb: Option<u64>,
    /// Names of the volumes mounted for its extra directories (removed
    /// with it).
    pub volumes: Vec<String>,
    /// Names of the persistent volumes it mounts (kept when it is removed).
    pub persistent_volumes: Vec<String>,
    /// Id of the node it runs on (see
    /// [`ContainerManager::nodes`](crate::ContainerManager::nodes)); `None`
    /// on a single engine, whose one node runs everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The engine's word on the state, when it has one: why a container
    /// failed (`task: non-zero exit (7)`, `node n2 is down`) or waits
    /// (`no suitable node (insufficient resources on 3 nodes)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a container's HTTP server can be reached from berth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// Address (IP and port) to connect to.
    pub addr: SocketAddr,
}

impl Endpoint {
    /// `http://ip:port` without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}", self.addr)
    }
}

/// Filters for [`ContainerManager::list`](crate::ContainerManager::list).
///
/// All given conditions must hold. The root label always applies on top.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFilter {
    /// Labels the container must carry: `(key, None)` means "has the
    /// key", `(key, Some(v))` means "key equals v".
    pub labels: Vec<(String, Option<String>)>,
    /// Exact container name.
    pub name: Option<String>,
}

impl ListFilter {
    /// Matches every managed container.
    pub fn all() -> Self {
        ListFilter::default()
    }

    /// Requires label `key` with any value.
    pub fn has_label(mut self, key: impl Into<String>) -> Self {
        self.labels.push((key.into(), None));
        self
    }

    /// Requires label `key` equal to `value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), Some(value.into())));
        self
    }

    /// Requires the exact name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// True when `info` passes the filter (the root label is checked by the
    /// backend, not here).
    pub fn matches(&self, info: &ContainerInfo) -> bool {
        self.name.as_ref().is_none_or(|n| *n == info.name)
            && self.labels.iter().all(|(k, v)| match (info.labels.get(k), v) {
                (Some(_), None) => true,
                (Some(have), Some(want)) => have == want,
                (None, _) => false,
            })
    }
}

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// When the engine recorded it.
    pub timestamp: SystemTime,
    /// Which stream it came from.
    pub stream: LogStream,
    /// The line, without its trailing newline.
    pub line: String,
}

/// Options for [`ContainerManager::logs`](crate::ContainerManager::logs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogOptions {
    /// Only the last `n` lines.
    pub tail: Option<usize>,
    /// Only lines at or after this time.
    pub since: Option<SystemTime>,
}

/// Kind of a lifecycle event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum EventKind {
    /// The container was created (not started yet).
    Created,
    /// The container started.
    Started,
    /// The container's process exited.
    Died,
    /// The container was removed.
    Removed,
}

/// A lifecycle event of a managed container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerEvent {
    /// What happened.
    pub kind: EventKind,
    /// Container name.
    pub name: String,
    /// Engine id.
    pub id: String,
    /// When the engine says it happened.
    pub time: SystemTime,
    /// Exit code, for [`EventKind::Died`].
    pub exit_code: Option<i64>,
}

/// A volume berth created: for an extra directory (removed with its
/// container) or a persistent one (kept until removed on request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    /// Volume name.
    pub name: String,
    /// Name of the container it was created for (extra directories).
    pub container: Option<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

impl VolumeInfo {
    /// Whether it is a persistent volume under `scheme`.
    pub fn is_persistent(&self, scheme: &LabelScheme) -> bool {
        self.labels.contains_key(&scheme.persistent_key())
    }

    /// The owner of a persistent volume, when it has one.
    pub fn owner(&self, scheme: &LabelScheme) -> Option<&str> {
        self.labels.get(&scheme.volume_user_key()).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_keys() {
        let s = LabelScheme::default();
        assert!(s.is_reserved("berth"));
        assert!(s.is_reserved("berth.port"));
        assert!(!s.is_reserved("berthx"));
        assert!(!s.is_reserved("owner"));
        assert_eq!(s.mem_key(), "berth.mem_reservation_mb");
        let d = LabelScheme::new(DJANGO_DOCKER_ENGINE_ROOT_LABEL);
        assert_eq!(d.port_key(), "io.github.refinery-project.django_docker_engine.port");
    }
}

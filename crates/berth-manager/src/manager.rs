//! The [`ContainerManager`] trait, its extension trait and forwarding impls.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

use crate::error::{Error, Result};
use crate::placement::NodeInfo;
use crate::spec::ContainerSpec;
use crate::types::{
    ContainerEvent, ContainerInfo, ContainerState, Endpoint, LabelScheme, ListFilter, LogLine, LogOptions, VolumeInfo,
};

/// A stream of log lines that ends when the container stops.
pub type LogStreamBox = BoxStream<'static, Result<LogLine>>;

/// A stream of lifecycle events; it ends only when the backend goes away.
pub type EventStreamBox = BoxStream<'static, Result<ContainerEvent>>;

/// What a backend can and cannot do, so that callers and the conformance
/// suite treat differences as declared facts instead of hidden surprises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Short name of the backend (`docker`, `swarm`, `mock`).
    pub backend: &'static str,
    /// True when containers outlive the process that launched them, so a
    /// new manager finds them again (Docker, Swarm: yes; mock: no).
    pub survives_restart: bool,
    /// True when containers may land on any of several nodes
    /// ([`ContainerManager::nodes`] may list more than one, and
    /// [`ContainerInfo::node`] says where each runs).
    pub cluster: bool,
    /// Largest input document mode `file` delivers, in bytes: the spec's
    /// own limit ([`MAX_FILE_INPUT_BYTES`](crate::MAX_FILE_INPUT_BYTES))
    /// or less when the backend's transport is smaller (Swarm configs).
    pub max_file_input_bytes: usize,
    /// True when [`ContainerManager::list_volumes`] and
    /// [`ContainerManager::prune_volumes`] see only the volumes on the node
    /// the manager talks to (a cluster's other nodes keep theirs out of
    /// reach), and [`ContainerInfo::volumes`] is known only for containers
    /// on that node.
    pub node_local_volumes: bool,
}

impl Capabilities {
    /// Capabilities of a single-engine backend with the given name and
    /// restart survival: one node, the spec's file-input limit, volumes all
    /// in view.
    pub const fn new(backend: &'static str, survives_restart: bool) -> Self {
        Capabilities {
            backend,
            survives_restart,
            cluster: false,
            max_file_input_bytes: crate::spec::MAX_FILE_INPUT_BYTES,
            node_local_volumes: false,
        }
    }

    /// The same, for a backend whose containers spread over several nodes.
    pub const fn with_cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// The same, with a smaller limit on mode-`file` documents.
    pub const fn with_max_file_input_bytes(mut self, bytes: usize) -> Self {
        self.max_file_input_bytes = bytes;
        self
    }

    /// The same, with volumes listed only on the manager's own node.
    pub const fn with_node_local_volumes(mut self, node_local: bool) -> Self {
        self.node_local_volumes = node_local;
        self
    }
}

/// Launches, inspects, lists and removes tool containers.
///
/// Object safe: use it as `Arc<dyn ContainerManager>`. Every method only
/// ever sees containers that carry the manager's root label (see
/// [`LabelScheme`]); a container without it is [`Error::NotFound`] even
/// when the engine knows it.
#[async_trait]
pub trait ContainerManager: Send + Sync {
    /// The label scheme that marks this manager's containers.
    fn label_scheme(&self) -> &LabelScheme;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Validates `spec`, creates the container with its labels, volumes
    /// and input document, and starts it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSpec`] / [`Error::InputTooLarge`] before the engine
    /// is called; [`Error::Conflict`] when the name is taken;
    /// [`Error::ImageUnavailable`] when the image is missing;
    /// [`Error::EngineUnavailable`] / [`Error::EngineTimeout`] for
    /// transport failures. On any failure after creation, the half-made
    /// container and its volumes are removed again.
    async fn launch(&self, spec: &ContainerSpec) -> Result<ContainerInfo>;

    /// Describes the managed container `name`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when there is no such managed container.
    async fn inspect(&self, name: &str) -> Result<ContainerInfo>;

    /// Lists managed containers passing `filter`, sorted by name.
    ///
    /// # Errors
    ///
    /// Transport errors only.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<ContainerInfo>>;

    /// The container's output so far, with timestamps, oldest first.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when there is no such managed container.
    async fn logs(&self, name: &str, options: LogOptions) -> Result<Vec<LogLine>>;

    /// The container's output as a stream that follows new lines until the
    /// container stops.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when there is no such managed container.
    async fn follow_logs(&self, name: &str, options: LogOptions) -> Result<LogStreamBox>;

    /// Removes the container (stopping it if needed) and the volumes of its
    /// extra directories.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when there is no such managed container.
    async fn remove(&self, name: &str) -> Result<()>;

    /// Where the container's HTTP server can be reached from this process.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::NotRunning`], and the endpoint
    /// failures the original distinguished: [`Error::NoPortLabel`],
    /// [`Error::PortMisconfigured`], [`Error::NoPortsOpen`],
    /// [`Error::ExpectedPortMissing`].
    async fn endpoint(&self, name: &str) -> Result<Endpoint>;

    /// Lifecycle events (created, started, died, removed) of managed
    /// containers from now on, so callers can keep caches fresh without
    /// polling.
    ///
    /// # Errors
    ///
    /// Transport errors when subscribing; later errors arrive in the stream.
    async fn events(&self) -> Result<EventStreamBox>;

    /// Volumes this manager created for extra directories that still exist.
    ///
    /// # Errors
    ///
    /// Transport errors only.
    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>>;

    /// Removes volumes this manager created for extra directories whose
    /// container no longer exists (left by a crash between creating a
    /// volume and its container); returns their names. Persistent volumes
    /// are never pruned.
    ///
    /// # Errors
    ///
    /// Transport errors.
    async fn prune_volumes(&self) -> Result<Vec<String>>;

    /// The persistent volumes this manager created (see
    /// [`PersistentVolume`](crate::PersistentVolume)), sorted by name.
    ///
    /// # Errors
    ///
    /// Transport errors only.
    async fn persistent_volumes(&self) -> Result<Vec<VolumeInfo>>;

    /// Removes the persistent volume `name` and its data.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when no persistent volume of this manager has
    /// that name; [`Error::VolumeInUse`] while a container mounts it.
    async fn remove_persistent_volume(&self, name: &str) -> Result<()>;

    /// The nodes containers can run on, sorted by id: the engine itself
    /// for a single engine, every node of a cluster (ready or not, so a
    /// caller sees which are down).
    ///
    /// # Errors
    ///
    /// Transport errors only.
    async fn nodes(&self) -> Result<Vec<NodeInfo>>;
}

/// Conveniences built only on [`ContainerManager`]'s required methods;
/// every manager has them through a blanket impl.
#[async_trait]
pub trait ContainerManagerExt: ContainerManager {
    /// True when the managed container `name` exists and is running.
    ///
    /// # Errors
    ///
    /// Transport errors; a missing container is `Ok(false)`.
    async fn is_live(&self, name: &str) -> Result<bool> {
        match self.inspect(name).await {
            Ok(info) => Ok(info.state == ContainerState::Running),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes `name` if it exists; returns whether it did.
    ///
    /// # Errors
    ///
    /// Transport errors.
    async fn remove_if_exists(&self, name: &str) -> Result<bool> {
        match self.remove(name).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes every managed container that carries label `key` (with
    /// `value`, when given); returns the names removed.
    ///
    /// Containers that vanish while this runs are skipped, not errors.
    ///
    /// # Errors
    ///
    /// The first transport error; containers removed before it stay removed.
    async fn purge_by_label(&self, key: &str, value: Option<&str>) -> Result<Vec<String>> {
        let filter = match value {
            Some(v) => ListFilter::all().label(key, v),
            None => ListFilter::all().has_label(key),
        };
        let mut removed = Vec::new();
        for info in self.list(&filter).await? {
            if self.remove_if_exists(&info.name).await? {
                removed.push(info.name);
            }
        }
        Ok(removed)
    }
}

impl<T: ContainerManager + ?Sized> ContainerManagerExt for T {}

macro_rules! forward_manager {
    ($ptr:ident) => {
        #[async_trait]
        impl<T: ContainerManager + ?Sized> ContainerManager for $ptr<T> {
            fn label_scheme(&self) -> &LabelScheme {
                (**self).label_scheme()
            }
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            async fn launch(&self, spec: &ContainerSpec) -> Result<ContainerInfo> {
                (**self).launch(spec).await
            }
            async fn inspect(&self, name: &str) -> Result<ContainerInfo> {
                (**self).inspect(name).await
            }
            async fn list(&self, filter: &ListFilter) -> Result<Vec<ContainerInfo>> {
                (**self).list(filter).await
            }
            async fn logs(&self, name: &str, options: LogOptions) -> Result<Vec<LogLine>> {
                (**self).logs(name, options).await
            }
            async fn follow_logs(&self, name: &str, options: LogOptions) -> Result<LogStreamBox> {
                (**self).follow_logs(name, options).await
            }
            async fn remove(&self, name: &str) -> Result<()> {
                (**self).remove(name).await
            }
            async fn endpoint(&self, name: &str) -> Result<Endpoint> {
                (**self).endpoint(name).await
            }
            async fn events(&self) -> Result<EventStreamBox> {
                (**self).events().await
            }
            async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
                (**self).list_volumes().await
            }
            async fn prune_volumes(&self) -> Result<Vec<String>> {
                (**self).prune_volumes().await
            }
            async fn persistent_volumes(&self) -> Result<Vec<VolumeInfo>> {
                (**self).persistent_volumes().await
            }
            async fn remove_persistent_volume(&self, name: &str) -> Result<()> {
                (**self).remove_persistent_volume(name).await
            }
            async fn nodes(&self) -> Result<Vec<NodeInfo>> {
                (**self).nodes().await
            }
        }
    };
}

forward_manager!(Arc);
forward_manager!(Box);

/// Checks a spec's labels against the scheme: reserved keys are refused.
pub(crate) fn check_reserved_labels(scheme: &LabelScheme, spec: &ContainerSpec) -> Result<()> {
    if let Some(key) = spec.labels.keys().find(|k| scheme.is_reserved(k)) {
        return Err(Error::invalid(
            &spec.name,
            format!("label {key:?} is reserved for berth (root label {:?})", scheme.root()),
        ));
    }
    Ok(())
}

/// The labels berth puts on a container: the spec's own plus the root,
/// port and memory labels.
pub(crate) fn container_labels(
    scheme: &LabelScheme,
    spec: &ContainerSpec,
) -> std::collections::BTreeMap<String, String> {
    let mut labels = spec.labels.clone();
    labels.insert(scheme.root().to_owned(), "true".to_owned());
    labels.insert(scheme.port_key(), spec.container_port.to_string());
    labels.insert(scheme.mem_key(), spec.mem_reservation_mb.to_string());
    spec.hints.to_labels(scheme, &mut labels);
    if !spec.volumes.is_empty() {
        let names: Vec<&str> = spec.volumes.iter().map(|v| v.name.as_str()).collect();
        labels.insert(scheme.persistent_volumes_key(), names.join(","));
    }
    labels
}

/// The persistent volume names a container's labels list.
#[cfg(feature = "docker")]
pub(crate) fn persistent_volumes_from_labels(
    scheme: &LabelScheme,
    labels: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    labels
        .get(&scheme.persistent_volumes_key())
        .map(|v| v.split(',').filter(|n| !n.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The labels of a new persistent volume.
pub(crate) fn persistent_volume_labels(
    scheme: &LabelScheme,
    volume: &crate::spec::PersistentVolume,
) -> std::collections::BTreeMap<String, String> {
    let mut labels = std::collections::BTreeMap::from([
        (scheme.root().to_owned(), "true".to_owned()),
        (scheme.persistent_key(), "true".to_owned()),
    ]);
    if let Some(owner) = &volume.owner {
        labels.insert(scheme.volume_user_key(), owner.clone());
    }
    labels
}

/// Checks that an existing volume may be mounted as `wanted`: it must be a
/// persistent volume of this scheme with the same owner.
pub(crate) fn check_persistent_volume(
    scheme: &LabelScheme,
    container: &str,
    wanted: &crate::spec::PersistentVolume,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    if !(labels.contains_key(scheme.root()) && labels.contains_key(&scheme.persistent_key())) {
        return Err(Error::invalid(
            container,
            format!("volume {:?} exists but is not a persistent volume of berth's", wanted.name),
        ));
    }
    if labels.get(&scheme.volume_user_key()) != wanted.owner.as_ref() {
        return Err(Error::VolumeOwned { volume: wanted.name.clone() });
    }
    Ok(())
}

/// Validates a spec fully: its own rules, then reserved labels.
pub(crate) fn validate_for(scheme: &LabelScheme, spec: &ContainerSpec) -> Result<()> {
    spec.validate()?;
    check_reserved_labels(scheme, spec)
}

/// Reads the port label: `Ok(None)` when absent.
pub(crate) fn port_from_labels(
    scheme: &LabelScheme,
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<u16> {
    let key = scheme.port_key();
    let value = labels.get(&key).ok_or_else(|| Error::NoPortLabel { name: name.to_owned(), label: key.clone() })?;
    match value.trim().parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(Error::PortMisconfigured { name: name.to_owned(), value: value.clone() }),
    }
}

/// Checks that one of `nodes` can take a container with `spec`'s placement
/// (single-engine backends: their one node).
pub(crate) fn check_placement(spec: &ContainerSpec, nodes: &[NodeInfo]) -> Result<()> {
    if spec.placement.constraints.is_empty() || nodes.iter().any(|n| n.accepts(&spec.placement)) {
        return Ok(());
    }
    Err(Error::Unschedulable {
        name: spec.name.clone(),
        reason: format!(
            "no node satisfies the placement constraints {:?} ({} node{} checked)",
            spec.placement.constraints,
            nodes.len(),
            if nodes.len() == 1 { "" } else { "s" }
        ),
        insufficient_resources: false,
    })
}

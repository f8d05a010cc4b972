//! What the management API reads and writes, as types: request bodies and
//! query strings (deserialized by the handlers) and answers (serialized,
//! or describing what a handler writes). Each derives
//! [`utoipa::ToSchema`] or [`utoipa::IntoParams`], so the OpenAPI document
//! ([`crate::openapi`]) is generated from the same definitions the server
//! parses with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::tools::ToolDef;

/// A launch request (the body of `POST /api/v1/containers`): a registry
/// `tool`, or an `image` when the server's
/// [`ImagePolicy`](crate::api::ImagePolicy) allows it.
///
/// Integer fields also take integral floats (`256.0`), as JSON Schema's
/// `integer` does.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(description = "A registry tool, or an image when the server allows it (403 otherwise). \
    The keys from port to routing describe the tool an image launch makes; a tool launch has its own \
    and refuses them (400).")]
pub struct LaunchRequest {
    /// Container name.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$", min_length = 2, max_length = 63)]
    pub name: String,
    /// Tool name in the registry; empty with `image`.
    #[serde(default)]
    pub tool: String,
    /// An image to launch instead of a registry tool (input by environment,
    /// no default files or parameters). Refused unless
    /// [`ApiState::images`](crate::api::ApiState::images) allows it.
    #[serde(default)]
    #[schema(min_length = 1)]
    pub image: Option<String>,
    /// For `image`: the HTTP port inside the container (default 80).
    #[serde(default, deserialize_with = "integral::option")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port: Option<u16>,
    /// For `image`: the memory reservation in MiB (default
    /// [`DEFAULT_IMAGE_MEMORY_MB`](crate::api::DEFAULT_IMAGE_MEMORY_MB)).
    #[serde(default, deserialize_with = "integral::option")]
    #[schema(minimum = 1, maximum = 16777216)]
    pub mem_reservation_mb: Option<u64>,
    /// For `image`: the hard memory limit in MiB.
    #[serde(default, deserialize_with = "integral::option")]
    #[schema(minimum = 1, maximum = 16777216)]
    pub mem_limit_mb: Option<u64>,
    /// For `image`: the CPU share.
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 1024)]
    pub cpus: Option<f64>,
    /// For `image`: the hard CPU limit.
    #[serde(default)]
    #[schema(exclusive_minimum = 0, maximum = 1024)]
    pub cpu_limit: Option<f64>,
    /// For `image`: the size of `/dev/shm` in MiB.
    #[serde(default, deserialize_with = "integral::option")]
    #[schema(minimum = 1, maximum = 16777216)]
    pub shm_size_mb: Option<u64>,
    /// For `image`: replaces its `CMD`. Templates: `{name}`,
    /// `{public_path}`, `{public_url}`, `{owner}`, `{port}` (see
    /// [`ToolDef`]).
    #[serde(default)]
    #[schema(min_items = 1)]
    pub command: Option<Vec<String>>,
    /// For `image`: replaces its `ENTRYPOINT` (templates).
    #[serde(default)]
    #[schema(min_items = 1)]
    pub entrypoint: Option<Vec<String>>,
    /// For `image`: environment variables (values are templates).
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// For `image`: the working directory (a template).
    #[serde(default)]
    pub working_dir: Option<String>,
    /// For `image`: the user (a template).
    #[serde(default)]
    pub user: Option<String>,
    /// For `image`: persistent volumes (names are templates).
    #[serde(default)]
    pub volumes: Option<Vec<VolumeRequest>>,
    /// For `image`: the readiness path, under its public root.
    #[serde(default)]
    pub ready_path: Option<String>,
    /// For `image`: statuses that mean ready.
    #[serde(default, deserialize_with = "integral::option_vec")]
    #[schema(value_type = Option<Vec<HttpStatus>>)]
    pub ready_status: Option<Vec<u16>>,
    /// For `image`: seconds it may take to become ready.
    #[serde(default, deserialize_with = "integral::option")]
    #[schema(minimum = 1, maximum = 86400)]
    pub start_timeout_secs: Option<u64>,
    /// For `image`: whether the proxy strips the path prefix.
    #[serde(default)]
    pub strip_prefix: Option<bool>,
    /// For `image`: `path` or `host` routing only.
    #[serde(default)]
    #[schema(value_type = Option<Routing>)]
    pub routing: Option<berth_manager::RoutingMode>,
    /// Data-file URLs; the tool's defaults when absent.
    #[serde(default)]
    pub files: Option<Vec<String>>,
    /// Parameters, merged over the tool's defaults.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// Return the input document instead of launching.
    #[serde(default)]
    pub dry_run: bool,
    /// Launch on behalf of this user (the container's owner): only for the
    /// service (the bearer token) and admins.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 255)]
    pub owner: Option<String>,
}

/// A persistent volume of an image launch.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeRequest {
    /// Volume name (a template, e.g. `home-{owner}`).
    pub name: String,
    /// Absolute mount path.
    pub path: String,
}

/// An HTTP status code (100 to 599).
pub struct HttpStatus(pub u16);

impl utoipa::PartialSchema for HttpStatus {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .minimum(Some(100))
            .maximum(Some(599))
            .into()
    }
}

impl ToSchema for HttpStatus {}

/// How a container is published: by path or by hostname.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    /// Path routing (`/docker/<name>/`).
    Path,
    /// Hostname routing (`<name>.<suffix>`).
    Host,
}

impl From<berth_manager::RoutingMode> for Routing {
    fn from(mode: berth_manager::RoutingMode) -> Self {
        match mode {
            berth_manager::RoutingMode::Path => Routing::Path,
            berth_manager::RoutingMode::Host => Routing::Host,
        }
    }
}

/// The body of `POST /api/v1/containers/{name}/links` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkRequest {
    /// Seconds the link is valid (default 60, at most 3600).
    #[serde(default, deserialize_with = "integral::option")]
    #[schema(minimum = 1, maximum = 3600)]
    pub(crate) ttl_secs: Option<u64>,
}

/// The body of `POST /api/v1/purge`: `label` (with an optional `value`),
/// or `idle_secs`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeRequest {
    /// Remove containers carrying this label.
    #[serde(default)]
    #[schema(min_length = 1)]
    pub(crate) label: Option<String>,
    /// With `label`: only where the label has this value.
    #[serde(default)]
    pub(crate) value: Option<String>,
    /// Remove containers idle for at least this many seconds.
    #[serde(default, deserialize_with = "integral::option")]
    #[schema(format = "uint64", maximum = 18446744073709551615_u64)]
    pub(crate) idle_secs: Option<u64>,
}

/// The query of `POST /api/v1/containers`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct WaitQuery {
    /// Answer once the container is ready or failed (or its start timeout
    /// passed), not as soon as it exists.
    #[serde(default)]
    pub(crate) wait: bool,
}

/// The query of `GET /api/v1/containers/{name}/logs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LogsQuery {
    /// Only the last this many lines.
    #[serde(default)]
    #[param(format = "uint64", maximum = 18446744073709551615_u64)]
    pub(crate) tail: Option<usize>,
    /// Stream new lines as the container writes them, until it stops.
    #[serde(default)]
    pub(crate) follow: bool,
}

/// The query of `GET /api/v1/containers/{name}/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// A launch ticket: report a failed launch only if it is this one.
    #[serde(default)]
    #[param(format = "uint64", maximum = 18446744073709551615_u64)]
    pub(crate) launch: Option<u64>,
}

/// The name of a container in a path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ContainerName {
    /// The container's name.
    #[param(pattern = "^[a-z0-9][a-z0-9-]{0,61}[a-z0-9]$", min_length = 2, max_length = 63)]
    pub name: String,
}

/// The name of a persistent volume in a path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct VolumeName {
    /// The volume's name.
    pub name: String,
}

/// An error answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
}

/// A container as the API describes it (see [`describe`](crate::api::describe)).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Container {
    /// Its name.
    pub name: String,
    /// The registry tool it runs (none for an image launch).
    pub tool: Option<String>,
    /// Its owner (none without an identity).
    pub owner: Option<String>,
    /// Its image.
    pub image: String,
    /// The engine's state word: `created`, `running`, `paused`,
    /// `restarting`, `removing`, `exited`, `dead` or `unknown`.
    pub status: String,
    /// Exit code, once it exited.
    pub exit_code: Option<i64>,
    /// Whether the proxy forwards to it.
    pub ready: bool,
    /// The path it is published under.
    pub path: Option<String>,
    /// The URL it is published at.
    pub url: Option<String>,
    /// Path or host routing.
    pub routing: Option<Routing>,
    /// When it was created (Unix seconds).
    pub created: f64,
    /// Persistent volumes it mounts.
    pub volumes: Vec<String>,
    /// Its memory reservation in MiB.
    pub mem_reservation_mb: Option<u64>,
    /// Inspect only, with history: its last proxied request (Unix
    /// seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<f64>,
    /// Launch only: containers evicted to make room for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evicted: Option<Vec<String>>,
    /// `?wait=true` only: why it will not become ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// Why a container will not become ready.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Failure {
    /// What happened (exited, unreachable, not ready in time).
    pub reason: String,
    /// Its last log lines.
    pub logs: Vec<String>,
}

/// `GET /api/v1/containers`.
#[derive(ToSchema)]
pub struct ContainerList {
    /// The containers the caller may see.
    pub containers: Vec<Container>,
}

/// `GET /api/v1/tools`.
#[derive(ToSchema)]
pub struct ToolList {
    /// The registry.
    pub tools: Vec<ToolDef>,
}

/// The `200` of a launch: the container (it existed already, or
/// `?wait=true` saw it ready), or with `dry_run` its input document.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum LaunchAnswer {
    /// The container.
    Container(Box<Container>),
    /// The input document of a dry run.
    DryRun(DryRun),
}

/// The answer of a dry run.
#[derive(ToSchema)]
pub struct DryRun {
    /// The input document the container would get: `file_relationships`,
    /// `node_info`, `parameters`, `api_prefix`, `extra_directories`.
    #[schema(value_type = Object)]
    pub input: Value,
}

/// Where a launch is when `?wait=true` gives up waiting.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// No container yet.
    Creating,
    /// Created, not running.
    Starting,
    /// Running, not answering yet.
    Waiting,
}

/// The `504` of `?wait=true`: not ready within its start timeout.
#[derive(ToSchema)]
pub struct NotReady {
    /// What happened.
    pub error: String,
    /// Where the launch is.
    pub phase: Phase,
    /// The container (with `failure` when the route table gave up).
    pub container: Container,
}

/// `GET /api/v1/containers/{name}/history`.
#[derive(ToSchema)]
pub struct History {
    /// The container.
    pub name: String,
    /// Proxied requests, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// One proxied request.
#[derive(ToSchema)]
pub struct HistoryEntry {
    /// When (Unix seconds).
    pub time: f64,
    /// Request path.
    pub path: String,
    /// Answer status.
    pub status: u16,
    /// Answer bytes.
    pub bytes: u64,
}

/// One launch-progress event's data (`GET .../events`, `text/event-stream`;
/// the event is named after the phase).
#[derive(ToSchema)]
pub struct LaunchEvent {
    /// The container.
    pub name: String,
    /// `creating`, `starting`, `waiting`, `ready`, `failed` or `timeout`.
    pub phase: String,
    /// Seconds since the container was created, once seen.
    pub age_secs: Option<f64>,
    /// `failed` only: why.
    pub reason: Option<String>,
    /// `failed` only: its last log lines.
    pub logs: Option<Vec<String>>,
}

/// A persistent volume.
#[derive(ToSchema)]
pub struct Volume {
    /// Its name.
    pub name: String,
    /// Its owner.
    pub owner: Option<String>,
    /// Containers (that the caller may see) mounting it.
    pub used_by: Vec<String>,
}

/// `GET /api/v1/volumes`.
#[derive(ToSchema)]
pub struct VolumeList {
    /// The volumes the caller may see.
    pub volumes: Vec<Volume>,
}

/// A hand-off link.
#[derive(ToSchema)]
pub struct Link {
    /// Where to send the browser.
    pub url: String,
    /// The user it logs in (the container's owner).
    pub user: String,
    /// The one container it gives access to.
    pub container: String,
    /// Seconds it stays valid.
    pub expires_in_secs: u64,
}

/// `POST /api/v1/purge`.
#[derive(ToSchema)]
pub struct Purged {
    /// Names of the removed containers.
    pub removed: Vec<String>,
}

/// Integers that also arrive as integral floats.
///
/// JSON has one number type: JSON Schema's `integer` is any number without
/// a fractional part, so `256.0` is an integer to it, and some clients
/// (Python's `json` for a float that holds one) write it that way. serde
/// would refuse it for a `u64`, so the API's integer fields take it.
pub(crate) mod integral {
    use serde::de::{self, Deserializer, Unexpected, Visitor};
    use serde::{Deserialize, Serialize};

    /// An integer, from an integer or an integral float.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
    #[serde(transparent)]
    pub(crate) struct Integral<T>(pub(crate) T);

    impl<'de, T: TryFrom<u64>> Deserialize<'de> for Integral<T> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct V<T>(std::marker::PhantomData<T>);
            impl<T: TryFrom<u64>> Visitor<'_> for V<T> {
                type Value = Integral<T>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    write!(f, "an integer from 0 to {}", max::<T>())
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                    T::try_from(v).map(Integral).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                    let u = u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))?;
                    self.visit_u64(u)
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                    // 2^64 is the first float past u64::MAX.
                    if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        let u = v as u64;
                        return T::try_from(u).map(Integral).map_err(|_| E::invalid_value(Unexpected::Float(v), &self));
                    }
                    Err(E::invalid_type(Unexpected::Float(v), &self))
                }
            }
            deserializer.deserialize_any(V(std::marker::PhantomData))
        }
    }

    /// The largest `T`, for messages.
    fn max<T: TryFrom<u64>>() -> u64 {
        [u64::MAX, u64::from(u32::MAX), u64::from(u16::MAX), u64::from(u8::MAX)]
            .into_iter()
            .find(|&m| T::try_from(m).is_ok())
            .unwrap_or(0)
    }

    /// An optional integer field (`null` is absent).
    pub(crate) fn option<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
        Ok(Option::<Integral<T>>::deserialize(d)?.map(|i| i.0))
    }

    /// An optional list of integers (`null` is absent).
    pub(crate) fn option_vec<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<Vec<T>>, D::Error> {
        Ok(Option::<Vec<Integral<T>>>::deserialize(d)?.map(|v| v.into_iter().map(|i| i.0).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_fields_take_integral_floats() {
        let r: LaunchRequest = serde_json::from_str(
            r#"{"name": "ab", "mem_reservation_mb": 256.0, "port": 8080.0, "ready_status": [200.0, 204],
                "start_timeout_secs": 30}"#,
        )
        .unwrap();
        assert_eq!((r.mem_reservation_mb, r.port, r.start_timeout_secs), (Some(256), Some(8080), Some(30)));
        assert_eq!(r.ready_status, Some(vec![200, 204]));
        let p: PurgeRequest = serde_json::from_str(r#"{"idle_secs": 0.0}"#).unwrap();
        assert_eq!(p.idle_secs, Some(0));
        let l: LinkRequest = serde_json::from_str(r#"{"ttl_secs": null}"#).unwrap();
        assert_eq!(l.ttl_secs, None);
        for bad in [
            r#"{"name": "ab", "port": 80.5}"#,
            r#"{"name": "ab", "port": 65536}"#,
            r#"{"name": "ab", "port": 65536.0}"#,
            r#"{"name": "ab", "port": -1}"#,
            r#"{"name": "ab", "port": "80"}"#,
            r#"{"name": "ab", "mem_reservation_mb": 1e300}"#,
            r#"{"name": "ab", "mem_reservation_mb": -0.5}"#,
            r#"{"name": "ab", "ready_status": [200.5]}"#,
        ] {
            let e = serde_json::from_str::<LaunchRequest>(bad).unwrap_err().to_string();
            assert!(e.contains("an integer from 0 to") || e.contains("invalid type"), "{bad}: {e}");
        }
        let e = serde_json::from_str::<LaunchRequest>(r#"{"name": "ab", "port": 70000}"#).unwrap_err().to_string();
        assert!(e.contains("an integer from 0 to 65535"), "{e}");
    }
}

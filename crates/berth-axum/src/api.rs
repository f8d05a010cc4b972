//! The management API (`/api/v1`), as an axum router over a [`Fleet`].
//!
//! JSON in and out; errors are `{"error": "..."}` with a status that says
//! what the caller can do (400 invalid, 401 token, 403 not allowed, 404
//! missing, 409 conflict, 422 image unavailable, 429 limit, 503 engine
//! down or no node able to run the container). When a
//! bearer token is configured every route but `/healthz` requires it,
//! except for requests the host application's authentication already gave
//! an [`Identity`] (a logged-in user). A caller with the token is the
//! service: it sees everything, may launch on behalf of a user (`owner`)
//! and ask for hand-off links ([`HandOff`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use berth_fleet::{Fleet, LaunchOutcome};
use berth_history::{HistoryQuery, HistoryStore};
use berth_manager::{ContainerInfo, ListFilter, LogOptions};
use berth_proxy::{Failure, FailureReason, Lookup, RouteTable, TableConfig};
use serde_json::{Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Identity;
pub use crate::launches::{
    FAILED_LAUNCH_MEMORY, LaunchGuard, LaunchRecord, LaunchState, LaunchTicket, Launches, MAX_EVENT_STREAMS,
    MAX_LAUNCH_RECORDS,
};
use crate::schema::{
    Container, ContainerList, ContainerName, ErrorBody, EventsQuery, History, LaunchAnswer, Link, LinkRequest,
    LogsQuery, NotReady, PurgeRequest, Purged, ToolList, VolumeList, VolumeName, WaitQuery,
};
pub use crate::schema::{LaunchRequest, VolumeRequest};
use crate::template::Template;

use crate::tools::default_port;
pub use crate::tools::{InputDelivery, Placement, PublicUrls, ToolDef, ToolRegistry, VolumeDef};

/// Everything the API needs.
#[derive(Clone)]
pub struct ApiState {
    /// Launches and removals go through the fleet.
    pub fleet: Arc<Fleet>,
    /// Readiness comes from the proxy's route table.
    pub table: Arc<RouteTable>,
    /// Request history, when recorded.
    pub history: Option<Arc<HistoryStore>>,
    /// The tools that may be launched.
    pub registry: Arc<ToolRegistry>,
    /// Bearer token required on `/api/v1`, when set.
    pub token: Option<String>,
    /// Where containers are published (for `path` and `url` in answers,
    /// `{public_path}` in templates and the input's `api_prefix`).
    pub urls: PublicUrls,
    /// Label naming a container's owner (set from the caller's [`Identity`]).
    pub owner_label: String,
    /// How long a container may take to become ready when its tool sets
    /// no `start_timeout_secs` (the route table's start timeout);
    /// `?wait=true` and event streams wait that long plus a grace, so the
    /// route table's verdict comes first.
    pub ready_timeout: Duration,
    /// Counters for `/metrics` (give the same `Metrics` to the proxy's
    /// activity recorder so requests are counted).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The proxy's activity recorder: its dropped-records count, and the flush
    /// that makes history answers read-your-writes.
    pub activity: berth_proxy::ActivityRecorder,
    /// Launches under way and recently failed (shared by clones).
    pub launches: Launches,
    /// Which images a launch may name instead of a registry tool.
    pub images: ImagePolicy,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").field("tools", &self.registry.tools.len()).finish_non_exhaustive()
    }
}

/// The management API router: `/api/v1/...` and `/healthz`.
pub fn api_router<S: Clone + Send + Sync + 'static>(state: ApiState) -> Router<S> {
    let (public, protected) = routes();
    let protected = protected.route_layer(middleware::from_fn_with_state(state.clone(), bearer));
    let (router, _) = public.merge(protected).split_for_parts();
    router.with_state(state)
}

/// The API's routes, each with its description (`#[utoipa::path]`): those
/// anyone may call, and those behind the bearer token.
fn routes() -> (OpenApiRouter<ApiState>, OpenApiRouter<ApiState>) {
    let public = OpenApiRouter::new().routes(routes!(healthz));
    let protected = OpenApiRouter::new()
        .routes(routes!(openapi))
        .routes(routes!(tools))
        .routes(routes!(list, launch))
        .routes(routes!(inspect, remove))
        .routes(routes!(logs))
        .routes(routes!(history))
        .routes(routes!(events))
        .routes(routes!(links))
        .routes(routes!(volumes))
        .routes(routes!(remove_volume))
        .routes(routes!(purge))
        .routes(routes!(metrics));
    (public, protected)
}

/// The OpenAPI 3.1 description of this API, generated from its routes
/// (see [`crate::openapi`]).
pub fn openapi_spec() -> utoipa::openapi::OpenApi {
    let (public, protected) = routes();
    crate::openapi::complete(public.merge(protected).into_openapi())
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, description = "ok", body = String)))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// An API error: status and message.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    /// A body that is not the expected JSON: 415 without a JSON content
    /// type, 400 for malformed JSON, 422 for JSON of the wrong shape.
    fn from(e: JsonRejection) -> Self {
        ApiError(e.status(), e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    /// A query string that does not parse: 400.
    fn from(e: QueryRejection) -> Self {
        ApiError(e.status(), e.body_text())
    }
}

impl From<berth_fleet::Error> for ApiError {
    fn from(e: berth_fleet::Error) -> Self {
        use berth_fleet::Error as F;
        use berth_manager::Error as M;
        let status = match &e {
            F::Manager(M::NotFound { .. }) => StatusCode::NOT_FOUND,
            F::Manager(M::Conflict { .. } | M::VolumeInUse { .. }) | F::Conflict { .. } => StatusCode::CONFLICT,
            F::Manager(M::VolumeOwned { .. }) => StatusCode::FORBIDDEN,
            F::Manager(M::InvalidSpec { .. } | M::InputTooLarge { .. }) | F::Staging { .. } => StatusCode::BAD_REQUEST,
            F::Manager(M::ImageUnavailable { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
            F::Manager(M::EngineUnavailable { .. } | M::EngineTimeout { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            F::LimitReached { .. } => StatusCode::TOO_MANY_REQUESTS,
            // No node can run it now: constraints no ready node meets, or no
            // room even after eviction. Nothing was left behind.
            F::Manager(M::Unschedulable { .. }) | F::NoRoom { .. } => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, error_chain(&e))
    }
}

impl From<berth_manager::Error> for ApiError {
    fn from(e: berth_manager::Error) -> Self {
        berth_fleet::Error::from(e).into()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Marks a request that carried the API's bearer token: the service
/// behind it may act for any user.
#[derive(Debug, Clone, Copy)]
pub struct ServiceCaller;

/// Whether `headers` carry `token` as a bearer token (compared in constant
/// time: the token is a secret).
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    given.is_some_and(|g| {
        g.len() == token.len() && g.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    })
}

async fn bearer(State(state): State<ApiState>, headers: HeaderMap, mut req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        if bearer_matches(&headers, token) {
            // The service acts for everyone: a user identity set by the
            // host app's authentication does not narrow it.
            req.extensions_mut().remove::<Identity>();
            req.extensions_mut().insert(ServiceCaller);
        } else if req.extensions().get::<Identity>().is_none() {
            return ApiError(StatusCode::UNAUTHORIZED, "a valid bearer token is required".into()).into_response();
        }
        // A logged-in user stays that user whatever else `Authorization`
        // holds (an auth proxy's own credentials, say).
    }
    next.run(req).await
}

/// The tool registry.
#[utoipa::path(get, path = "/api/v1/tools", responses((status = 200, description = "the tools", body = ToolList)))]
async fn tools(State(state): State<ApiState>) -> Json<Value> {
    Json(json!({"tools": state.registry.tools}))
}

impl LaunchRequest {
    /// The image-launch settings present in this request, by key, so that
    /// a registry-tool launch can refuse them.
    fn image_settings(&self) -> Vec<&'static str> {
        let present = [
            ("port", self.port.is_some()),
            ("mem_reservation_mb", self.mem_reservation_mb.is_some()),
            ("mem_limit_mb", self.mem_limit_mb.is_some()),
            ("cpus", self.cpus.is_some()),
            ("cpu_limit", self.cpu_limit.is_some()),
            ("shm_size_mb", self.shm_size_mb.is_some()),
            ("command", self.command.is_some()),
            ("entrypoint", self.entrypoint.is_some()),
            ("env", self.env.is_some()),
            ("working_dir", self.working_dir.is_some()),
            ("user", self.user.is_some()),
            ("volumes", self.volumes.is_some()),
            ("ready_path", self.ready_path.is_some()),
            ("ready_status", self.ready_status.is_some()),
            ("start_timeout_secs", self.start_timeout_secs.is_some()),
            ("strip_prefix", self.strip_prefix.is_some()),
            ("routing", self.routing.is_some()),
        ];
        present.iter().filter(|(_, set)| *set).map(|(key, _)| *key).collect()
    }

    /// The tool an `image` launch describes, its templates checked.
    fn image_tool(&self, image: &str) -> Result<ToolDef, ApiError> {
        let bad = |field: String, e: crate::template::TemplateError| {
            ApiError(StatusCode::BAD_REQUEST, format!("{field}: {}", e.message))
        };
        let templates = |field: &str, list: &Option<Vec<String>>| -> Result<Option<Vec<Template>>, ApiError> {
            list.as_ref()
                .map(|l| {
                    l.iter()
                        .enumerate()
                        .map(|(i, s)| Template::parse(s).map_err(|e| bad(format!("{field}[{i}]"), e)))
                        .collect()
                })
                .transpose()
        };
        let mut tool = ToolDef::new(String::new(), image, self.mem_reservation_mb.unwrap_or(DEFAULT_IMAGE_MEMORY_MB));
        tool.port = self.port.unwrap_or_else(default_port);
        tool.mem_limit_mb = self.mem_limit_mb;
        tool.cpus = self.cpus;
        tool.cpu_limit = self.cpu_limit;
        tool.shm_size_mb = self.shm_size_mb;
        tool.command = templates("command", &self.command)?;
        tool.entrypoint = templates("entrypoint", &self.entrypoint)?;
        for (key, value) in self.env.iter().flatten() {
            let name = crate::template::EnvName::new(key)
                .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("env: {e}")))?;
            let value = Template::parse(value).map_err(|e| bad(format!("env.{key}"), e))?;
            tool.env.insert(name, value);
        }
        tool.working_dir =
            self.working_dir.as_deref().map(Template::parse).transpose().map_err(|e| bad("working_dir".into(), e))?;
        tool.user = self.user.as_deref().map(Template::parse).transpose().map_err(|e| bad("user".into(), e))?;
        for (i, v) in self.volumes.iter().flatten().enumerate() {
            let name = Template::parse(&v.name).map_err(|e| bad(format!("volumes[{i}].name"), e))?;
            tool.volumes.push(VolumeDef { name, path: v.path.clone() });
        }
        tool.ready_path.clone_from(&self.ready_path);
        tool.ready_status = self.ready_status.clone().unwrap_or_default();
        tool.start_timeout_secs = self.start_timeout_secs;
        tool.strip_prefix = self.strip_prefix;
        tool.routing = self.routing;
        tool.check().map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
        Ok(tool)
    }
}

/// The input document for `request` of `tool`, as the container will get
/// it: `api_prefix` is the path it is published under.
pub fn input_document(state: &ApiState, tool: &ToolDef, request: &LaunchRequest) -> Value {
    let api_prefix = state
        .urls
        .placed(&request.name, &berth_manager::RouteHints { routing: tool.routing, ..Default::default() })
        .map(|p| p.path)
        .unwrap_or_default();
    let mut parameters = tool.default_parameters.clone();
    if let (Some(base), Some(Value::Object(given))) = (parameters.as_object_mut(), &request.parameters) {
        for (k, v) in given {
            base.insert(k.clone(), v.clone());
        }
    }
    let files = request.files.clone().unwrap_or_else(|| tool.default_files.clone());
    let node_info: BTreeMap<String, Value> =
        files.iter().enumerate().map(|(i, url)| (i.to_string(), json!({"file_url": url}))).collect();
    json!({
        "file_relationships": files,
        "node_info": node_info,
        "parameters": parameters,
        "api_prefix": api_prefix,
        "extra_directories": tool.extra_directories,
    })
}

/// Launches `request` through the state's fleet, as `owner` when given.
///
/// # Errors
///
/// [`ApiError`] with the status the API answers with.
///
/// While it runs, and for a while after it failed, [`ApiState::launches`]
/// records it, which is how [`launch_events`] reports `creating` and a
/// failed launch.
pub async fn launch_tool(
    state: &ApiState,
    request: &LaunchRequest,
    owner: Option<&str>,
) -> Result<LaunchOutcome, ApiError> {
    // Requests refused before they reach the fleet are not recorded: they
    // must not overwrite the record of a launch that is under way.
    check_request(state, request)?;
    let ticket = state.launches.start(&request.name, owner);
    launch_recorded(state, request, owner, ticket).await
}

/// As [`launch_tool`], for a launch already recorded with
/// [`Launches::start`] (one whose answer went out before it ran, e.g. to a
/// page that then follows `ticket`).
///
/// # Errors
///
/// As [`launch_tool`].
pub async fn launch_recorded(
    state: &ApiState,
    request: &LaunchRequest,
    owner: Option<&str>,
    ticket: LaunchTicket,
) -> Result<LaunchOutcome, ApiError> {
    let guard = state.launches.guard(&request.name, ticket);
    let result = launch_unrecorded(state, request, owner).await;
    guard.finish(result.as_ref().err().map(|e| (e.0.as_u16(), e.1.clone())));
    result
}

/// The checks a launch request must pass before anything is recorded or
/// launched: a valid name and a tool (or allowed image).
///
/// # Errors
///
/// 400 or 403, as [`resolve_tool`].
pub fn check_request(state: &ApiState, request: &LaunchRequest) -> Result<(), ApiError> {
    berth_manager::validate_name(&request.name).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    if request.parameters.as_ref().is_some_and(|p| !p.is_object() && !p.is_null()) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "parameters: must be a JSON object (merged over the tool's default parameters)".to_owned(),
        ));
    }
    resolve_tool(state, request).map(|_| ())
}

/// Whether an image launch asks for more memory than the spec limit or the
/// fleet's whole budget.
fn image_memory_too_large(state: &ApiState, request: &LaunchRequest) -> bool {
    let mb = request.mem_reservation_mb.unwrap_or(DEFAULT_IMAGE_MEMORY_MB);
    mb > berth_manager::MAX_MEM_RESERVATION_MB
        || state.fleet.config().memory_budget_mb.is_some_and(|budget| mb > budget)
}

/// Keys of a launch request that only an `image` launch may set.
pub(crate) const IMAGE_ONLY_KEYS: &[&str] = &[
    "port",
    "mem_reservation_mb",
    "mem_limit_mb",
    "cpus",
    "cpu_limit",
    "shm_size_mb",
    "command",
    "entrypoint",
    "env",
    "working_dir",
    "user",
    "volumes",
    "ready_path",
    "ready_status",
    "start_timeout_secs",
    "strip_prefix",
    "routing",
];

/// Memory reservation of an `image` launch that names none, in MiB.
pub const DEFAULT_IMAGE_MEMORY_MB: u64 = 256;

/// Which images a launch may name directly instead of a registry tool.
///
/// Image launches carry no tool label: they count toward the fleet's total
/// limit and memory budget, not toward any per-tool limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ImagePolicy {
    /// Registry tools only (the default).
    #[default]
    RegistryOnly,
    /// Also images whose reference, as given, starts with one of these
    /// prefixes; `""` allows any image. End prefixes with `/` or `:` (a
    /// prefix `reg.example/viz` would also allow `reg.example/vizard/x`).
    Prefixes(Vec<String>),
}

impl ImagePolicy {
    /// Whether a launch may name `image`.
    pub fn allows(&self, image: &str) -> bool {
        match self {
            ImagePolicy::RegistryOnly => false,
            ImagePolicy::Prefixes(prefixes) => prefixes.iter().any(|p| image.starts_with(p.as_str())),
        }
    }
}

/// The tool `request` launches: its registry entry, or one made for its
/// `image` when the policy allows it.
///
/// # Errors
///
/// 400 for an unknown tool or a request naming both or neither, 403 for an
/// image the policy refuses.
pub fn resolve_tool(state: &ApiState, request: &LaunchRequest) -> Result<ToolDef, ApiError> {
    match (&request.image, request.tool.as_str()) {
        (Some(_), tool) if !tool.is_empty() => {
            Err(ApiError(StatusCode::BAD_REQUEST, "give either tool or image, not both".into()))
        }
        (Some(image), _) if !state.images.allows(image) => Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("image {image:?} is not allowed here: this server launches registry tools only"),
        )),
        (Some(_), _) if image_memory_too_large(state, request) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            "mem_reservation_mb is more than this server's memory budget (or the spec limit)".into(),
        )),
        (Some(image), _) => request.image_tool(image),
        (None, "") => Err(ApiError(StatusCode::BAD_REQUEST, "give a tool (or an image)".into())),
        (None, _) if !request.image_settings().is_empty() => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("{} go(es) with image; a tool has its own", request.image_settings().join(", ")),
        )),
        (None, tool) => state
            .registry
            .get(tool)
            .cloned()
            .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, format!("tool {tool:?} is not in the registry"))),
    }
}

async fn launch_unrecorded(
    state: &ApiState,
    request: &LaunchRequest,
    owner: Option<&str>,
) -> Result<LaunchOutcome, ApiError> {
    let tool = resolve_tool(state, request)?;
    // Containers of an image launch carry no tool label.
    let tool_name = (!tool.name.is_empty()).then_some(tool.name.as_str());
    let document = input_document(state, &tool, request);
    let placement = state.urls.place(&request.name, tool.routing).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let mut spec = tool.spec(&request.name, owner, &placement).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    if let Some(owner) = owner {
        spec = spec.label(state.owner_label.clone(), owner.to_owned());
    }
    let what = berth_fleet::LaunchAs { tool: tool_name, tool_max_per_user: tool.max_per_user };
    let outcome = match tool.input_mode {
        InputDelivery::Env => state.fleet.launch_as(spec.input_env(document), what).await?,
        InputDelivery::File => {
            let path = tool.input_path.clone().unwrap_or_else(|| berth_manager::DEFAULT_INPUT_PATH.to_owned());
            state.fleet.launch_as(spec.input_file(document, path), what).await?
        }
        InputDelivery::Url => state.fleet.launch_staged_as(spec, document, Vec::new(), what).await?,
    };
    if let LaunchOutcome::Launched { evicted, .. } = &outcome {
        state.metrics.launched(evicted.len());
    }
    Ok(outcome)
}

/// `GET /metrics`: Prometheus text. Its series name every container, so a
/// logged-in user who is not an admin (or is limited to some containers)
/// gets a 403; the service (bearer token), admins, and callers without an
/// [`Identity`] (no login layer: the demo) read it.
#[utoipa::path(get, path = "/metrics", responses(
    (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String),
    (status = 403, description = "a logged-in user who is not an admin", body = ErrorBody),
    (status = 503, description = "engine unavailable", body = ErrorBody),
))]
async fn metrics(State(state): State<ApiState>, user: Option<Extension<Identity>>) -> Result<Response, ApiError> {
    if matches!(&user, Some(Extension(u)) if !u.admin || u.only.is_some()) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "only admins and the service token may read metrics (they name every container)".into(),
        ));
    }
    let running = state
        .fleet
        .manager()
        .list(&ListFilter::all())
        .await?
        .iter()
        .filter(|c| c.state == berth_manager::ContainerState::Running)
        .count();
    let text = state.metrics.render(running, state.activity.dropped());
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// The owner a launch by `user` (or the service) asking for `request`
/// gets: the request's `owner` when the caller may launch for others (the
/// service, an admin), else the caller.
///
/// # Errors
///
/// 403 for an `owner` from someone else, or a caller limited to some
/// containers (a hand-off link's session); 400 for an owner name that is
/// empty, too long or has control characters.
pub fn launch_owner(
    user: Option<&Identity>,
    service: bool,
    request: &LaunchRequest,
) -> Result<Option<String>, ApiError> {
    if user.is_some_and(|u| u.only.is_some()) {
        return Err(ApiError(StatusCode::FORBIDDEN, "this session may use its containers only, not launch".into()));
    }
    let Some(owner) = &request.owner else { return Ok(user.map(|u| u.user.clone())) };
    if !(service || user.is_some_and(|u| u.admin)) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "only the service token or an admin may launch for another user".into(),
        ));
    }
    if owner.is_empty() || owner.len() > 255 || owner.chars().any(char::is_control) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "owner must be 1 to 255 characters, none a control character".into(),
        ));
    }
    Ok(Some(owner.clone()))
}

/// Launch a tool (or an allowed image).
///
/// 202 once the container exists (200 when it existed already);
/// `?wait=true` waits for ready (200), failed (502) or its start timeout
/// (504); `dry_run` returns the input document instead.
#[utoipa::path(post, path = "/api/v1/containers", params(WaitQuery), request_body = LaunchRequest, responses(
    (status = 200, description = "existing, ready (?wait=true), or the input document of a dry run", body = LaunchAnswer),
    (status = 202, description = "launched", body = Container),
    (status = 400, description = "invalid (name, tool, settings, templates), or a bad query string", body = ErrorBody),
    (status = 403, description = "image not allowed here, or owner given by a caller who may not launch for others", body = ErrorBody),
    (status = 409, description = "exists with another spec", body = ErrorBody),
    (status = 415, description = "not JSON", body = ErrorBody),
    (status = 422, description = "body not a LaunchRequest, or image unavailable", body = ErrorBody),
    (status = 429, description = "limit reached", body = ErrorBody),
    (status = 502, description = "?wait=true: failed (exited, unreachable), with failure.reason and failure.logs", body = Container),
    (status = 503, description = "engine unavailable", body = ErrorBody),
    (status = 504, description = "?wait=true: not ready within its start timeout, with the phase it is in", body = NotReady),
))]
async fn launch(
    State(state): State<ApiState>,
    wait: Result<Query<WaitQuery>, QueryRejection>,
    user: Option<Extension<Identity>>,
    service: Option<Extension<ServiceCaller>>,
    request: Result<Json<LaunchRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Query(wait) = wait?;
    let Json(request) = request?;
    let owner = launch_owner(user.as_ref().map(|Extension(u)| u), service.is_some(), &request)?;
    if request.dry_run {
        // A dry run answers what the launch would: an invalid name is a 400.
        check_request(&state, &request)?;
        let tool = resolve_tool(&state, &request)?;
        return Ok(Json(json!({"input": input_document(&state, &tool, &request)})).into_response());
    }
    let outcome = launch_tool(&state, &request, owner.as_deref()).await?;
    let existing = matches!(outcome, LaunchOutcome::Existing(_));
    let mut body = describe(&state, outcome.info());
    if let (Some(obj), LaunchOutcome::Launched { evicted, .. }) = (body.as_object_mut(), &outcome) {
        obj.insert("evicted".into(), json!(evicted));
    }
    if !wait.wait {
        let status = if existing { StatusCode::OK } else { StatusCode::ACCEPTED };
        return Ok((status, Json(body)).into_response());
    }
    let timeout = start_timeout_of(&state, outcome.info());
    let deadline = deadline_after(timeout + WAIT_GRACE);
    loop {
        match state.table.lookup(&request.name).await {
            Lookup::Ready(_) => {
                body["ready"] = json!(true);
                return Ok((StatusCode::OK, Json(body)).into_response());
            }
            Lookup::Failed(f) => {
                body["ready"] = json!(false);
                body["failure"] = failure_json(&state, &request.name, &f).await;
                // Not ready within its start timeout is "not ready in
                // time", whoever noticed first: the route table (which
                // gives up at that timeout) or this deadline.
                let phase = match f.reason {
                    FailureReason::StartTimeout(_) => "waiting",
                    FailureReason::NeverStarted(_) => "starting",
                    _ => return Ok((StatusCode::BAD_GATEWAY, Json(body)).into_response()),
                };
                return Ok(not_ready(&request.name, timeout, phase, body));
            }
            _ if Instant::now() > deadline => {
                let phase = match state.fleet.manager().inspect(&request.name).await {
                    Ok(info) if info.state == berth_manager::ContainerState::Created => "starting",
                    Ok(_) => "waiting",
                    Err(_) => "creating",
                };
                return Ok(not_ready(&request.name, timeout, phase, body));
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A failure as the API reports it: `reason` and the last log lines in
/// `logs`. The route table publishes a failure at once and reads the logs
/// after; until they are in, they are read here, so a one-time answer
/// (`?wait=true`, a `failed` event) never goes out without them.
async fn failure_json(state: &ApiState, name: &str, failure: &Failure) -> Value {
    let logs = if failure.log_tail.is_empty() {
        let options = LogOptions { tail: Some(TableConfig::default().failure_log_lines), since: None };
        match state.fleet.manager().logs(name, options).await {
            Ok(lines) => lines.into_iter().map(|l| l.line).collect(),
            Err(e) => vec![format!("(logs unavailable: {e})")],
        }
    } else {
        failure.log_tail.clone()
    };
    json!({"reason": failure.reason.to_string(), "logs": logs})
}

/// The `?wait=true` answer for a container not ready within `timeout`:
/// 504 with the phase it is in and its description.
fn not_ready(name: &str, timeout: Duration, phase: &str, container: Value) -> Response {
    let message = format!("{name} is not ready after {} s (phase {phase})", timeout.as_secs());
    (StatusCode::GATEWAY_TIMEOUT, Json(json!({"error": message, "phase": phase, "container": container})))
        .into_response()
}

/// How much longer than a container's start timeout `?wait=true` and
/// event streams wait, so that the route table's verdict (failed, or not
/// ready in time, with the reason and last log lines) arrives before they
/// give up.
pub const WAIT_GRACE: Duration = Duration::from_secs(5);

/// The start timeout of a container: its tool's, else the server's.
fn start_timeout_of(state: &ApiState, info: &ContainerInfo) -> Duration {
    berth_manager::RouteHints::from_labels(state.fleet.manager().label_scheme(), &info.labels)
        .start_timeout_secs
        .map_or(state.ready_timeout, Duration::from_secs)
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Where an existing container is published.
pub fn placement_of(state: &ApiState, info: &ContainerInfo) -> Option<Placement> {
    let hints = berth_manager::RouteHints::from_labels(state.fleet.manager().label_scheme(), &info.labels);
    state.urls.placed(&info.name, &hints)
}

/// A container as the API describes it.
pub fn describe(state: &ApiState, info: &ContainerInfo) -> Value {
    let ready = matches!(state.table.peek(&info.name), Some(Lookup::Ready(_)));
    let placement = placement_of(state, info);
    let container = Container {
        name: info.name.clone(),
        tool: info.labels.get(&state.fleet.tool_label()).cloned(),
        owner: info.labels.get(&state.owner_label).cloned(),
        image: info.image.clone(),
        status: info.state.as_str().to_owned(),
        exit_code: info.exit_code,
        ready,
        path: placement.as_ref().map(|p| p.path.clone()),
        url: placement.as_ref().map(|p| p.url.clone()),
        routing: placement.as_ref().map(|p| p.mode.into()),
        created: unix(info.created),
        volumes: info.persistent_volumes.clone(),
        mem_reservation_mb: info.mem_reservation_mb,
        last_activity: None,
        evicted: None,
        failure: None,
    };
    // Serializing strings, numbers and lists cannot fail.
    serde_json::to_value(container).unwrap_or_default()
}

/// Non-admin callers only see their own containers.
fn visible(state: &ApiState, user: &Option<Extension<Identity>>, info: &ContainerInfo) -> bool {
    may_see(state, user.as_ref().map(|Extension(u)| u), &info.name, &info.labels)
}

/// Whether `user` may see container `name` with `labels`: always without a
/// user (no identity layer), else as [`Identity::may_see`] (admins all,
/// others their own; a limited identity only its containers).
pub fn may_see(state: &ApiState, user: Option<&Identity>, name: &str, labels: &BTreeMap<String, String>) -> bool {
    match user {
        Some(u) => u.may_see(name, labels.get(&state.owner_label).map(String::as_str)),
        None => true,
    }
}

/// Containers (an owner sees their own).
#[utoipa::path(get, path = "/api/v1/containers", responses(
    (status = 200, description = "the containers the caller may see", body = ContainerList),
    (status = 503, description = "engine unavailable", body = ErrorBody),
))]
async fn list(State(state): State<ApiState>, user: Option<Extension<Identity>>) -> Result<Json<Value>, ApiError> {
    let infos = state.fleet.manager().list(&ListFilter::all()).await?;
    let items: Vec<Value> = infos.iter().filter(|i| visible(&state, &user, i)).map(|i| describe(&state, i)).collect();
    Ok(Json(json!({"containers": items})))
}

async fn find(state: &ApiState, user: &Option<Extension<Identity>>, name: &str) -> Result<ContainerInfo, ApiError> {
    let info = state.fleet.manager().inspect(name).await?;
    if !visible(state, user, &info) {
        return Err(berth_manager::Error::NotFound { name: name.to_owned() }.into());
    }
    Ok(info)
}

/// One container.
#[utoipa::path(get, path = "/api/v1/containers/{name}", params(ContainerName), responses(
    (status = 200, description = "the container (with last_activity when history is recorded)", body = Container),
    (status = 400, description = "invalid name", body = ErrorBody),
    (status = 404, description = "missing", body = ErrorBody),
    (status = 503, description = "engine unavailable", body = ErrorBody),
))]
async fn inspect(
    State(state): State<ApiState>,
    user: Option<Extension<Identity>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let info = find(&state, &user, &name).await?;
    let mut body = describe(&state, &info);
    if let Some(history) = &state.history {
        // Read your writes: requests already proxied are in the store.
        state.activity.flush().await;
        if let Ok(Some(t)) = history.last_activity(&name).await {
            body["last_activity"] = json!(unix(t));
        }
    }
    Ok(Json(body))
}

/// Remove a container with its volumes and staged files.
#[utoipa::path(delete, path = "/api/v1/containers/{name}", params(ContainerName), responses(
    (status = 204, description = "removed"),
    (status = 400, description = "invalid name", body = ErrorBody),
    (status = 404, description = "missing", body = ErrorBody),
    (status = 503, description = "engine unavailable", body = ErrorBody),
))]
async fn remove(
    State(state): State<ApiState>,
    user: Option<Extension<Identity>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    find(&state, &user, &name).await?;
    state.fleet.kill(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One log line as the logs endpoint writes it: unix time, space, text.
fn log_line(l: &berth_manager::LogLine) -> String {
    format!("{:.6} {}\n", unix(l.timestamp), l.line)
}

/// Log lines, each `<unix time> <text>`.
///
/// The lines so far (the last `tail` of them), or with `follow=true` a
/// body that streams new lines as the container writes them and ends when
/// it stops.
#[utoipa::path(get, path = "/api/v1/containers/{name}/logs", params(ContainerName, LogsQuery), responses(
    (status = 200, description = "log lines; with follow=true a stream that ends when the container stops",
        content_type = "text/plain", body = String),
    (status = 400, description = "invalid name, or a bad query string", body = ErrorBody),
    (status = 404, description = "missing", body = ErrorBody),
    (status = 503, description = "engine unavailable", body = ErrorBody),
))]
async fn logs(
    State(state): State<ApiState>,
    user: Option<Extension<Identity>>,
    Path(name): Path<String>,
    q: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    use futures_util::StreamExt;
    find(&state, &user, &name).await?;
    let options = LogOptions { tail: q.tail, since: None };
    let headers = [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-store")];
    if q.follow {
        let lines = state.fleet.manager().follow_logs(&name, options).await?;
        // An engine error mid-stream ends the body; what was sent stays valid.
        let body = lines
            .take_while(|l| std::future::ready(l.is_ok()))
            .filter_map(move |l| std::future::ready(l.ok().map(|l| Ok::<_, std::convert::Infallible>(log_line(&l)))));
        return Ok((headers, axum::body::Body::from_stream(body)).into_response());
    }
    let lines = state.fleet.manager().logs(&name, options).await?;
    let text: String = lines.iter().map(log_line).collect();
    Ok((headers, text).into_response())
}

/// Proxied requests, oldest first.
#[utoipa::path(get, path = "/api/v1/containers/{name}/history", params(ContainerName), responses(
    (status = 200, description = "history", body = History),
    (status = 400, description = "invalid name", body = ErrorBody),
    (status = 404, description = "missing, or this server records no history", body = ErrorBody),
    (status = 503, description = "engine unavailable", body = ErrorBody),
))]
async fn history(
    State(state): State<ApiState>,
    user: Option<Extension<Identity>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    find(&state, &user, &name).await?;
    let Some(store) = &state.history else {
        return Err(ApiError(StatusCode::NOT_FOUND, "this server records no history".into()));
    };
    // Read your writes: a request proxied before this one is in the answer.
    state.activity.flush().await;
    let entries = store
        .history(&name, HistoryQuery::default())
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, error_chain(&e)))?;
    let items: Vec<Value> = entries
        .iter()
        .map(|e| json!({"time": unix(e.time), "path": e.path, "status": e.status, "bytes": e.bytes}))
        .collect();
    Ok(Json(json!({"name": name, "history": items})))
}

/// Launch progress as server-sent events.
///
/// One event per phase change, named after the phase: `creating`,
/// `starting`, `waiting`, then `ready`, `failed` or `timeout`, which end
/// the stream. Each event's data is a `LaunchEvent` (JSON).
#[utoipa::path(get, path = "/api/v1/containers/{name}/events", params(ContainerName, EventsQuery), responses(
    (status = 200, description = "an event stream of LaunchEvent data, ending after ready, failed or timeout",
        content_type = "text/event-stream"),
    (status = 400, description = "a bad query string", body = ErrorBody),
    (status = 404, description = "invalid name", body = ErrorBody),
    (status = 503, description = "too many streams open; retry later", body = ErrorBody,
        headers(("Retry-After" = u32, description = "seconds"))),
))]
async fn events(
    State(state): State<ApiState>,
    user: Option<Extension<Identity>>,
    Path(name): Path<String>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q?;
    berth_manager::validate_name(&name).map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))?;
    Ok(launch_events(state, name, user.map(|Extension(u)| u), q.launch.map(LaunchTicket::from_id)))
}

/// `timeout` from now, or far in the future when that is not representable.
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// Launch progress of container `name` as server-sent events, one per
/// phase change, named after the phase:
///
/// - `creating`: no container yet (the launch is under way, or has not
///   started);
/// - `starting`: the container exists and has not started running;
/// - `waiting`: it runs but does not answer 200 on `/` yet;
/// - `ready`: the proxy forwards to it;
/// - `failed`: it will not become ready, or the launch failed before there
///   was a container (data has `reason` and `logs`);
/// - `timeout`: nothing final within the ready timeout.
///
/// Each event's data is a JSON object with `name`, `phase` and, once the
/// container was seen, `age_secs` (seconds since it was created). The
/// stream ends after `ready`, `failed` or `timeout`. A `viewer` that is not
/// an admin sees someone else's container as not existing (`creating`),
/// exactly as a missing one. With a `ticket` (from [`Launches::start`]) a
/// failed launch is reported only if it is that launch.
///
/// At most [`MAX_EVENT_STREAMS`] streams run at once; beyond that the
/// answer is 503 with `Retry-After`. The stream polls every 250 ms. Readiness comes from the route table
/// (whose negative cache bounds lookups of unknown names); only while the
/// table says a visible container is starting and it has not been seen
/// running does the stream inspect it, to tell `starting` from `waiting`.
pub fn launch_events(
    state: ApiState,
    name: String,
    viewer: Option<Identity>,
    ticket: Option<LaunchTicket>,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let Some(permit) = state.launches.stream_permit() else {
        let mut resp = ApiError(StatusCode::SERVICE_UNAVAILABLE, "too many launch-progress streams are open".into())
            .into_response();
        resp.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        return resp;
    };
    // The longest any tool may take (image launches with a longer timeout
    // of their own end with `timeout` here while the table still waits).
    let longest = state
        .registry
        .tools
        .iter()
        .filter_map(|t| t.start_timeout_secs)
        .map(Duration::from_secs)
        .fold(state.ready_timeout, Duration::max);
    let deadline = deadline_after(longest + WAIT_GRACE);
    let watch = Watch { state, name, viewer, ticket, created: None, running: false, _permit: permit };
    let stream =
        futures_util::stream::unfold((watch, None::<&'static str>, false), move |(mut watch, last, done)| async move {
            if done {
                return None;
            }
            loop {
                if Instant::now() > deadline {
                    let data = json!({"name": watch.name, "phase": "timeout"});
                    let event = Event::default().event("timeout").data(data.to_string());
                    return Some((Ok(event), (watch, last, true)));
                }
                let (phase, mut data) = watch.observe().await;
                if last != Some(phase) {
                    data["name"] = json!(watch.name);
                    data["phase"] = json!(phase);
                    if let Some(created) = watch.created {
                        let age = SystemTime::now().duration_since(created).unwrap_or_default();
                        data["age_secs"] = json!((age.as_secs_f64() * 10.0).round() / 10.0);
                    }
                    let event = Event::default().event(phase).data(data.to_string());
                    let finished = phase == "ready" || phase == "failed";
                    return Some((Ok::<_, std::convert::Infallible>(event), (watch, Some(phase), finished)));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// What [`launch_events`] follows.
struct Watch {
    state: ApiState,
    name: String,
    viewer: Option<Identity>,
    /// The launch followed, when known.
    ticket: Option<LaunchTicket>,
    /// When the container was created, once seen.
    created: Option<SystemTime>,
    /// Seen running: no more inspects needed to tell the phase.
    running: bool,
    /// Held while the stream runs (see [`Launches::stream_permit`]).
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Watch {
    /// The current phase and its details.
    async fn observe(&mut self) -> (&'static str, Value) {
        let lookup = self.state.table.lookup(&self.name).await;
        if lookup == Lookup::Missing || !self.may_see_known().await {
            return self.no_container();
        }
        match lookup {
            Lookup::Ready(_) => ("ready", json!({})),
            Lookup::Failed(f) => ("failed", failure_json(&self.state, &self.name, &f).await),
            _ if self.running => ("waiting", json!({})),
            _ => match self.state.fleet.manager().inspect(&self.name).await {
                Ok(info) => {
                    self.created = Some(info.created);
                    if info.state == berth_manager::ContainerState::Created {
                        ("starting", json!({}))
                    } else {
                        // Running, or exited and about to be reported failed.
                        self.running = true;
                        ("waiting", json!({}))
                    }
                }
                Err(e) => {
                    if !matches!(e, berth_manager::Error::NotFound { .. }) {
                        tracing::debug!(name = %self.name, error = %e, "launch events: inspect failed");
                    }
                    self.no_container()
                }
            },
        }
    }

    /// The phase when there is no container (that the viewer may see): the
    /// launch failed (the followed one, when a ticket was given), or it is
    /// under way or yet to come. A container that exists wins over a
    /// failed launch of the same name (a conflicting second launch), so
    /// pages following the container see it.
    fn no_container(&self) -> (&'static str, Value) {
        match self.state.launches.get(&self.name, self.viewer.as_ref()) {
            Some(LaunchRecord { ticket, state: LaunchState::Failed { message, .. }, .. })
                if self.ticket.is_none_or(|t| t == ticket) =>
            {
                ("failed", json!({"reason": message, "logs": []}))
            }
            _ => ("creating", json!({})),
        }
    }

    /// Whether the viewer may see the container the route table knows.
    async fn may_see_known(&self) -> bool {
        match &self.viewer {
            Some(v) if !v.admin || v.only.is_some() => self
                .state
                .table
                .labels_or_fetch(&self.name)
                .await
                .is_some_and(|labels| may_see(&self.state, Some(v), &self.name, &labels)),
            _ => true,
        }
    }
}

/// Whether `user` may see a persistent volume: its owner or an admin (or
/// anyone without an identity layer).
fn may_see_volume(state: &ApiState, user: Option<&Identity>, volume: &berth_manager::VolumeInfo) -> bool {
    match user {
        // A session limited to some containers sees no volumes.
        Some(u) if u.only.is_some() => false,
        Some(u) if !u.admin => volume.owner(state.fleet.manager().label_scheme()) == Some(u.user.as_str()),
        _ => true,
    }
}

/// Persistent volumes (an owner sees their own), with the containers
/// mounting them.
#[utoipa::path(get, path = "/api/v1/volumes", responses(
    (status = 200, description = "the volumes the caller may see", body = VolumeList),
    (status = 503, description = "engine unavailable", body = ErrorBody),
))]
async fn volumes(State(state): State<ApiState>, user: Option<Extension<Identity>>) -> Result<Json<Value>, ApiError> {
    let manager = state.fleet.manager();
    let user = user.as_ref().map(|Extension(u)| u);
    let containers = manager.list(&ListFilter::all()).await?;
    let items: Vec<Value> = manager
        .persistent_volumes()
        .await?
        .iter()
        .filter(|v| may_see_volume(&state, user, v))
        .map(|v| {
            let used_by: Vec<&str> = containers
                .iter()
                .filter(|c| c.persistent_volumes.contains(&v.name))
                .filter(|c| may_see(&state, user, &c.name, &c.labels))
                .map(|c| c.name.as_str())
                .collect();
            json!({"name": v.name, "owner": v.owner(manager.label_scheme()), "used_by": used_by})
        })
        .collect();
    Ok(Json(json!({"volumes": items})))
}

/// Remove a persistent volume and its data (409 while a container mounts
/// it).
#[utoipa::path(delete, path = "/api/v1/volumes/{name}", params(VolumeName), responses(
    (status = 204, description = "removed"),
    (status = 403, description = "owned by someone else", body = ErrorBody),
    (status = 404, description = "missing", body = ErrorBody),
    (status = 409, description = "in use by a container", body = ErrorBody),
    (status = 503, description = "engine unavailable", body = ErrorBody),
))]
async fn remove_volume(
    State(state): State<ApiState>,
    user: Option<Extension<Identity>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let manager = state.fleet.manager();
    let user = user.as_ref().map(|Extension(u)| u);
    let volume = manager.persistent_volumes().await?.into_iter().find(|v| v.name == name);
    match volume {
        Some(v) if may_see_volume(&state, user, &v) => {
            manager.remove_persistent_volume(&name).await?;
            tracing::info!(volume = %name, "persistent volume removed on request");
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(ApiError(StatusCode::NOT_FOUND, format!("volume {name:?} not found"))),
    }
}

/// Issues hand-off links: short-lived, single-use URLs that give a browser
/// a session for a user limited to one container, then send it there.
/// The host application provides it as a request extension
/// (`Extension(Arc<dyn HandOff>)`); without one, `.../links` answers 404.
#[async_trait::async_trait]
pub trait HandOff: Send + Sync + 'static {
    /// A link for `user` to `container`, valid for `ttl`.
    ///
    /// # Errors
    ///
    /// A message for a 500 (e.g. the session store failed).
    async fn link(&self, user: &str, container: &str, ttl: Duration) -> Result<String, String>;
}

/// Longest validity of a hand-off link.
pub const MAX_LINK_TTL: Duration = Duration::from_secs(3600);
/// Validity of a hand-off link that asks for none.
pub const DEFAULT_LINK_TTL: Duration = Duration::from_secs(60);

/// A hand-off link for the container's owner.
///
/// A short-lived, single-use link giving a browser a session for the
/// container's owner, limited to this container (the service token or an
/// admin only).
#[utoipa::path(post, path = "/api/v1/containers/{name}/links", params(ContainerName),
    request_body(content = Option<LinkRequest>, description = "optional", content_type = "application/json"),
    responses(
        (status = 201, description = "the link", body = Link),
        (status = 400, description = "bad body or ttl, or the container has no owner", body = ErrorBody),
        (status = 403, description = "not the service or an admin", body = ErrorBody),
        (status = 404, description = "missing, or this server issues no links", body = ErrorBody),
        (status = 415, description = "a body that is not JSON", body = ErrorBody),
        (status = 503, description = "engine unavailable", body = ErrorBody),
    ))]
async fn links(
    State(state): State<ApiState>,
    user: Option<Extension<Identity>>,
    service: Option<Extension<ServiceCaller>>,
    hand_off: Option<Extension<Arc<dyn HandOff>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // No form of another site can send JSON (or nothing with no type).
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if content_type.is_some_and(|t| !t.starts_with("application/json")) {
        return Err(ApiError(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send JSON (application/json), or no body".into()));
    }
    let Some(Extension(hand_off)) = hand_off else {
        return Err(ApiError(StatusCode::NOT_FOUND, "this server issues no hand-off links".into()));
    };
    let user = user.as_ref().map(|Extension(u)| u);
    if service.is_none() && !user.is_some_and(|u| u.admin && u.only.is_none()) {
        return Err(ApiError(StatusCode::FORBIDDEN, "only the service token or an admin may ask for links".into()));
    }
    let request: LinkRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LinkRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("not a link request: {e}")))?
    };
    let ttl = request.ttl_secs.map_or(DEFAULT_LINK_TTL, Duration::from_secs);
    if ttl.is_zero() || ttl > MAX_LINK_TTL {
        return Err(ApiError(StatusCode::BAD_REQUEST, format!("ttl_secs must be 1 to {}", MAX_LINK_TTL.as_secs())));
    }
    let info = state.fleet.manager().inspect(&name).await?;
    let Some(owner) = info.labels.get(&state.owner_label) else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("{name} has no owner to hand it to (launch it with owner)"),
        ));
    };
    let url = hand_off.link(owner, &name, ttl).await.map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"url": url, "user": owner, "container": name, "expires_in_secs": ttl.as_secs()})),
    )
        .into_response())
}

/// Remove by label, or idle for `idle_secs` (admins).
#[utoipa::path(post, path = "/api/v1/purge", request_body = PurgeRequest, responses(
    (status = 200, description = "the removed containers", body = Purged),
    (status = 400, description = "neither or both of label and idle_secs, or an empty label", body = ErrorBody),
    (status = 403, description = "not an admin", body = ErrorBody),
    (status = 415, description = "not JSON", body = ErrorBody),
    (status = 422, description = "body not a PurgeRequest", body = ErrorBody),
    (status = 503, description = "engine unavailable", body = ErrorBody),
))]
async fn purge(
    State(state): State<ApiState>,
    user: Option<Extension<Identity>>,
    req: Result<Json<PurgeRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(req) = req?;
    if matches!(&user, Some(Extension(u)) if !u.admin || u.only.is_some()) {
        return Err(ApiError(StatusCode::FORBIDDEN, "only admins may purge".into()));
    }
    let removed = match (req.label, req.idle_secs) {
        (Some(label), None) if !label.is_empty() => state.fleet.purge_by_label(&label, req.value.as_deref()).await?,
        (None, Some(secs)) => state.fleet.purge_inactive(Duration::from_secs(secs)).await?,
        _ => return Err(ApiError(StatusCode::BAD_REQUEST, "give either label (and value) or idle_secs".into())),
    };
    Ok(Json(json!({"removed": removed})))
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", responses(
    (status = 200, description = "the OpenAPI 3.1 document", body = Object),
))]
async fn openapi(State(state): State<ApiState>) -> Json<Value> {
    Json(openapi_document(&state))
}

/// The OpenAPI 3.1 description of this API as `/api/v1/openapi.json`
/// serves it: [`openapi_spec`] with the names of `state`'s tools as the
/// values a tool launch may name.
pub fn openapi_document(state: &ApiState) -> Value {
    static SPEC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    let names: Vec<&str> = state.registry.tools.iter().map(|t| t.name.as_str()).collect();
    crate::openapi::to_json(SPEC.get_or_init(openapi_spec), &names)
}

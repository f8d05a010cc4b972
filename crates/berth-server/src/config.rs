//! The server's configuration file (`berth.toml`).
//!
//! ```toml
//! listen = "127.0.0.1:8000"        # --listen overrides it
//! data_dir = "berth-data"           # history database and staged files
//! root_label = "berth"
//! tools = "tools.toml"              # the tool registry, relative to this file
//!
//! [server]                        # the listeners (main and staging); all optional
//! threads = 2                       # main listener: one runtime per thread; default: the CPU count
//! header_read_timeout_secs = 10     # a request head must arrive within this (also closes idle keep-alive)
//! max_header_bytes = 65536          # larger request heads get 431
//! max_connections = 10000           # for the whole process; beyond it clients wait
//! shutdown_grace_secs = 10          # SIGTERM/SIGINT: requests in flight may finish within this
//!
//! [engine]
//! backend = "docker"                # docker (one engine) | swarm (services on a swarm manager)
//!                                   # | mock (in-process stand-ins: no Docker; tests, benchmarks)
//! endpoints = "auto"                # docker: auto | bridge | published | host; swarm: published | network
//! network = "berth-isolated"        # docker: the containers' network; default "<root_label>-isolated", made by
//!                                   # berth: containers cannot reach each other; "bridge": the engine's default
//! network_labels = { team = "lab" } # docker: labels on the network berth makes
//!
//! [engine.swarm]                    # with backend = "swarm"
//! constraints = ["node.labels.berth==yes"]   # every service's, on top of each tool's own
//! preferences = ["node.labels.zone"]         # spread containers over this label's values
//! network = "berth-net"             # attachable overlay network (needed for endpoints = "network")
//! images = "local"                  # local: by the image ID on the manager (no registry) | registry
//! address_label = "berth.address"   # node label overriding a node's address for published ports
//! start_timeout_secs = 120          # for a task to reach running (pulls included)
//! unschedulable_grace_secs = 3      # for a task to find a node before the launch fails
//! volume_driver = "local"           # persistent volumes on shared storage (else: on their node)
//! volume_driver_options = { type = "nfs", o = "addr=10.0.0.5,rw", device = ":/export/{name}" }
//!
//! [proxy]
//! prefix = "/docker"                # path routing under this prefix
//! host_suffix = "docker.localhost"  # hostname routing: <name>.docker.localhost
//! routing = "both"                  # path | host | both (default: host if host_suffix is set, else path)
//! default_routing = "path"          # with both: for tools that choose neither
//! public_url = "https://berth.example.org"   # where browsers reach this server (default http://<listen>)
//! strip_cookies = ["sessionid"]
//! logs_path = "docker-logs"
//! start_timeout_secs = 120          # unless a tool sets its own
//!
//! [fleet]
//! memory_budget_mb = 4096
//! max_containers = 50
//! max_per_tool = 10
//! max_per_user = 3                  # per logged-in user (a tool may set its own max_per_user)
//! idle_timeout_secs = 3600
//! orphan_grace_secs = 10            # a container created but never started is removed after this
//! node_memory_budget_mb = 8192      # per node (cluster backends); a node label <root_label>.mem_budget_mb overrides
//! node_budget_labels = true         # read nodes' own budgets from that label
//!
//! [api]
//! token = "change-me"               # bearer token for /api/v1; none when absent
//! allow_images = ["reg.example/viz/"]   # images a launch may name besides tools; "*" for any
//!
//! [staging]
//! public_base = "http://host.docker.internal:8001"   # what containers fetch from
//! dir = "staging"                   # default <data_dir>/staging
//! bind = "0.0.0.0:8001"             # default: all interfaces on public_base's port
//! any_peer = false                  # true: serve peers outside the engine's networks too
//!
//! [data]
//! dir = "data"                      # files served at /_berth/data/<name>
//!
//! [web]
//! enabled = true                    # the web app at /; off by default when api.token is set
//!                                   # (with auth.mode = "none"), on with a login mode
//!
//! [auth]                            # who is asking (docs/USERS.md)
//! mode = "none"                     # none | header | oidc
//! admins = ["alice"]                # users who see and manage every container
//! admin_groups = ["berth-admins"]   # members of these groups too
//! session_ttl_secs = 43200          # sessions (oidc logins, hand-off links) end after this
//! cookie_name = "berth_session"
//! secure_cookies = true             # default: proxy.public_url is https
//! key_file = "session.key"          # cookie key; default <data_dir>/session.key, made when missing
//!
//! [auth.header]                     # mode = "header": a trusted auth proxy sets these
//! trusted_proxies = ["127.0.0.1/32", "::1/128"]   # required; others sending the headers are refused
//! user_header = "X-Forwarded-User"
//! groups_header = "X-Forwarded-Groups"            # comma-separated
//! email_header = "X-Forwarded-Email"              # optional; passed to containers as X-Berth-Email
//!
//! [auth.oidc]                       # mode = "oidc": berth is an OpenID Connect relying party
//! issuer = "https://login.example.org/realms/berth"
//! client_id = "berth"
//! client_secret = "..."             # or client_secret_file = "oidc-secret"
//! scopes = ["profile", "email"]     # besides openid
//! user_claim = "preferred_username" # or sub, email, or any string claim
//! groups_claim = "groups"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use berth_axum::api::ToolRegistry;
use serde::Deserialize;

/// Why the configuration cannot be used. Messages name the file and, for
/// syntax and type errors, the line, column and key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}:{line}:{column}: {}{message}", key.as_ref().map(|k| format!("key {k}: ")).unwrap_or_default())]
    Parse {
        /// The key (with its table) on the offending line, when there is one.
        key: Option<String>,
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong (names the key).
        message: String,
    },
    /// A value parses but makes no sense.
    #[error("{path}{}: key {key}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line where the key is written, when it is.
        line: Option<usize>,
        /// The key (with its table, e.g. `proxy.routing`, `tools.mem_limit_mb`).
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Which container engine berth drives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One Docker engine (`DockerManager`).
    #[default]
    Docker,
    /// Services on a Docker Swarm manager (`SwarmManager`).
    Swarm,
    /// No engine: containers are HTTP servers inside berth's own process
    /// (`MockManager`), following the test tool's contract whatever the
    /// image. For trying berth without Docker, tests and benchmarks; they
    /// end with the process.
    Mock,
}

/// Engine settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSection {
    /// `docker`, `swarm` or `mock`.
    #[serde(default)]
    pub backend: Backend,
    /// Docker: `auto`, `bridge`, `published` or `host`; swarm: `published`
    /// (the default) or `network`.
    #[serde(default)]
    pub endpoints: Option<String>,
    /// Docker: the network containers join. Unset: `<root_label>-isolated`,
    /// a bridge network berth makes when missing, on which containers
    /// cannot reach each other (only the host, and the host them). A name:
    /// that network, made the same way when missing, used as it is when it
    /// exists (with a warning when it lets containers reach each other).
    /// `"bridge"`: the engine's default network, where they can.
    #[serde(default)]
    pub network: Option<String>,
    /// Docker: labels put on the network berth makes.
    #[serde(default)]
    pub network_labels: std::collections::BTreeMap<String, String>,
    /// Swarm settings (`[engine.swarm]`).
    #[serde(default)]
    pub swarm: SwarmSection,
}

/// How services name their images on a swarm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwarmImages {
    /// By the image ID on the manager's engine: no registry needed, the
    /// image is loaded on every node.
    #[default]
    Local,
    /// By reference: nodes pull from their registry.
    Registry,
}

/// `[engine.swarm]`: how berth makes swarm services.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwarmSection {
    /// Constraints every service gets (`node.labels.berth==yes`).
    #[serde(default)]
    pub constraints: Vec<String>,
    /// Labels containers are spread over (`node.labels.zone`).
    #[serde(default)]
    pub preferences: Vec<String>,
    /// Overlay network every service joins.
    #[serde(default)]
    pub network: Option<String>,
    /// `local` or `registry`.
    #[serde(default)]
    pub images: SwarmImages,
    /// Node label holding a node's address for published ports.
    #[serde(default)]
    pub address_label: Option<String>,
    /// Seconds a task may take to reach running.
    #[serde(default)]
    pub start_timeout_secs: Option<u64>,
    /// Seconds a task may wait for a node before the launch fails.
    #[serde(default)]
    pub unschedulable_grace_secs: Option<u64>,
    /// Volume driver of persistent volumes.
    #[serde(default)]
    pub volume_driver: Option<String>,
    /// Its options (`{name}` is the volume's name).
    #[serde(default)]
    pub volume_driver_options: std::collections::BTreeMap<String, String>,
}

/// `[server]`: how berth listens (both the main listener and the staging
/// listener containers fetch from).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Threads serving the main listener, each a single-threaded runtime
    /// with its own upstream connection pool, fed connections by one
    /// accepting thread (each goes to the thread serving the fewest);
    /// default: the number of CPUs.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Seconds a client has to send a complete request head, counted from
    /// its connection for the first request and from the end of the
    /// previous response for later ones (so idle keep-alive connections
    /// close after it too).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: f64,
    /// Largest request head accepted, in bytes; larger ones get 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Most connections served at once, by the whole process (main and
    /// staging listeners have a cap each); further clients wait.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// After SIGTERM or SIGINT: seconds requests in flight may take to
    /// finish (websockets are closed with close frames first).
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: f64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            threads: None,
            header_read_timeout_secs: default_header_read_timeout(),
            max_header_bytes: default_max_header_bytes(),
            max_connections: default_max_connections(),
            shutdown_grace_secs: default_shutdown_grace(),
        }
    }
}

impl ServerSection {
    /// The limits as the proxy crate's server takes them.
    pub fn limits(&self) -> berth_proxy::ServerLimits {
        berth_proxy::ServerLimits {
            header_read_timeout: std::time::Duration::from_secs_f64(self.header_read_timeout_secs),
            max_header_bytes: self.max_header_bytes,
            max_connections: self.max_connections,
            shutdown_grace: std::time::Duration::from_secs_f64(self.shutdown_grace_secs),
        }
    }

    /// The serving threads: `threads`, else the number of CPUs.
    pub fn thread_count(&self) -> usize {
        self.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
    }
}

fn default_header_read_timeout() -> f64 {
    10.0
}

fn default_max_header_bytes() -> usize {
    64 * 1024
}

fn default_max_connections() -> usize {
    10_000
}

fn default_shutdown_grace() -> f64 {
    10.0
}

/// Which routings the proxy serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoutingChoice {
    /// `/<prefix>/<name>/` only.
    Path,
    /// `<name>.<host_suffix>` only.
    Host,
    /// Both at once: a container host is routed by hostname, anything else
    /// by path.
    Both,
}

/// Proxy settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// Path prefix for path routing.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Host suffix for hostname routing.
    #[serde(default)]
    pub host_suffix: Option<String>,
    /// Which routings are on: `path`, `host` or `both`. Absent: `host` when
    /// `host_suffix` is set, else `path`.
    #[serde(default)]
    pub routing: Option<RoutingChoice>,
    /// With both routings on, the routing of tools that choose neither
    /// (default `path`).
    #[serde(default)]
    pub default_routing: Option<berth_manager::RoutingMode>,
    /// The URL browsers reach this server at (scheme, host, port, and a
    /// path if it is served under one), for `{public_url}`, the API's
    /// `url` and redirects; default `http://<listen>` (with `127.0.0.1` for
    /// an unspecified address).
    #[serde(default)]
    pub public_url: Option<String>,
    /// Cookies never forwarded to containers.
    #[serde(default)]
    pub strip_cookies: Vec<String>,
    /// Logs sub-path; off when absent.
    #[serde(default)]
    pub logs_path: Option<String>,
    /// Seconds a container may take to become ready.
    #[serde(default = "default_start_timeout")]
    pub start_timeout_secs: u64,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            prefix: default_prefix(),
            host_suffix: None,
            routing: None,
            default_routing: None,
            public_url: None,
            strip_cookies: Vec::new(),
            logs_path: None,
            start_timeout_secs: default_start_timeout(),
        }
    }
}

fn default_prefix() -> String {
    berth_proxy::DEFAULT_PREFIX.to_owned()
}

fn default_start_timeout() -> u64 {
    120
}

/// Lifecycle settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSection {
    /// Memory budget in MiB.
    #[serde(default)]
    pub memory_budget_mb: Option<u64>,
    /// Most containers at once.
    #[serde(default)]
    pub max_containers: Option<usize>,
    /// Most containers per tool.
    #[serde(default)]
    pub max_per_tool: Option<usize>,
    /// Most containers one user has at once (a login mode's users).
    #[serde(default)]
    pub max_per_user: Option<usize>,
    /// Idle seconds before a container is culled.
    #[serde(default)]
    pub idle_timeout_secs: Option<u64>,
    /// Seconds after which a container still `created` (never started)
    /// that no launch of this server is making counts as half-made (a
    /// launch of a process that died) and is removed; default 10. Only
    /// containers of this server's root label are considered.
    #[serde(default)]
    pub orphan_grace_secs: Option<u64>,
    /// Memory budget per node in MiB (cluster backends).
    #[serde(default)]
    pub node_memory_budget_mb: Option<u64>,
    /// Read each node's budget from its node label
    /// `<root_label>.mem_budget_mb`.
    #[serde(default)]
    pub node_budget_labels: bool,
}

/// API settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Bearer token for `/api/v1`.
    #[serde(default)]
    pub token: Option<String>,
    /// Image reference prefixes a launch may name instead of a registry
    /// tool (`"*"` allows any image); registry tools only when absent.
    #[serde(default)]
    pub allow_images: Vec<String>,
}

impl ApiSection {
    /// The [`ImagePolicy`](berth_axum::api::ImagePolicy) of `allow_images`.
    pub fn image_policy(&self) -> berth_axum::api::ImagePolicy {
        use berth_axum::api::ImagePolicy;
        if self.allow_images.is_empty() {
            return ImagePolicy::RegistryOnly;
        }
        ImagePolicy::Prefixes(
            self.allow_images.iter().map(|p| if p == "*" { String::new() } else { p.clone() }).collect(),
        )
    }
}

/// Staging settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagingSection {
    /// Base URL containers fetch staged inputs from; by default the
    /// engine's host gateway and the server's port.
    #[serde(default)]
    pub public_base: Option<String>,
    /// Where staged files are kept; `<data_dir>/staging` when absent.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Address of the listener containers fetch from; all interfaces on
    /// `public_base`'s port when absent. With a local engine it answers
    /// only loopback and the engine's network subnets, whatever it binds.
    #[serde(default)]
    pub bind: Option<SocketAddr>,
    /// Answer every peer, not only loopback and the engine's networks: for
    /// setups where containers' connections arrive from elsewhere (rootless
    /// engines, some VMs). Refused peers are logged, which tells.
    #[serde(default)]
    pub any_peer: bool,
}

/// The web app at `/` (running containers, launch, fleet, uploads). With
/// `auth.mode = "none"` it has no login: anyone who reaches it can do what
/// it offers; with a login mode each user sees their own containers and
/// uploads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    /// Whether to serve it. When absent: on, unless `api.token` is set
    /// without a login mode (a token protects the API; an open web app
    /// beside it would bypass it).
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// Data files served read-only to containers at `/_berth/data/<name>`
/// (the demo's sample data, a shared library of inputs).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Directory whose files are served; none when absent.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listening address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the history database and staged files live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Root label of managed containers.
    #[serde(default = "default_root")]
    pub root_label: String,
    /// Path of the tool registry (TOML with `[[tools]]`), relative to the config file.
    #[serde(default)]
    pub tools: Option<PathBuf>,
    /// The listeners' limits and threads.
    #[serde(default)]
    pub server: ServerSection,
    /// Engine settings.
    #[serde(default)]
    pub engine: EngineSection,
    /// Proxy settings.
    #[serde(default)]
    pub proxy: ProxySection,
    /// Lifecycle settings.
    #[serde(default)]
    pub fleet: FleetSection,
    /// API settings.
    #[serde(default)]
    pub api: ApiSection,
    /// Staging settings.
    #[serde(default)]
    pub staging: StagingSection,
    /// Shared data files.
    #[serde(default)]
    pub data: DataSection,
    /// The web app.
    #[serde(default)]
    pub web: WebSection,
    /// Who is asking: no login, a trusted auth proxy, or OpenID Connect.
    #[serde(default)]
    pub auth: AuthSection,
}

/// How berth knows who is asking.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Nobody logs in; everyone sees everything (the demo, on loopback).
    #[default]
    None,
    /// A trusted authenticating reverse proxy sets identity headers.
    Header,
    /// berth logs people in with an OpenID Connect provider.
    Oidc,
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `none`, `header` or `oidc`.
    #[serde(default)]
    pub mode: AuthMode,
    /// Users who are admins.
    #[serde(default)]
    pub admins: Vec<String>,
    /// Groups whose members are admins.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// How long a session lasts, in seconds.
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
    /// Name of berth's session cookie.
    #[serde(default = "default_cookie_name")]
    pub cookie_name: String,
    /// Whether cookies carry `Secure`; default: `proxy.public_url` is https.
    #[serde(default)]
    pub secure_cookies: Option<bool>,
    /// The file holding the cookie key (made when missing).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Mode `header`.
    #[serde(default)]
    pub header: Option<HeaderAuthSection>,
    /// Mode `oidc`.
    #[serde(default)]
    pub oidc: Option<OidcSection>,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            mode: AuthMode::None,
            admins: Vec::new(),
            admin_groups: Vec::new(),
            session_ttl_secs: default_session_ttl(),
            cookie_name: default_cookie_name(),
            secure_cookies: None,
            key_file: None,
            header: None,
            oidc: None,
        }
    }
}

fn default_session_ttl() -> u64 {
    12 * 3600
}

fn default_cookie_name() -> String {
    "berth_session".to_owned()
}

/// `[auth.header]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderAuthSection {
    /// Networks (CIDR) of the proxies whose identity headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Header naming the user.
    #[serde(default = "default_user_header")]
    pub user_header: String,
    /// Header listing the user's groups, comma-separated.
    #[serde(default = "default_groups_header")]
    pub groups_header: String,
    /// Header holding the user's email address (optional: a request
    /// without it has none), passed to containers as `X-Berth-Email`.
    #[serde(default = "default_email_header")]
    pub email_header: String,
}

fn default_user_header() -> String {
    "X-Forwarded-User".to_owned()
}

fn default_groups_header() -> String {
    "X-Forwarded-Groups".to_owned()
}

fn default_email_header() -> String {
    "X-Forwarded-Email".to_owned()
}

/// `[auth.oidc]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    /// The provider's issuer URL (discovery at `/.well-known/openid-configuration`).
    pub issuer: String,
    /// berth's client id at the provider.
    pub client_id: String,
    /// berth's client secret.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// A file holding the client secret instead.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Scopes asked for besides `openid`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The claim naming the user.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// The claim listing the user's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
}

fn default_scopes() -> Vec<String> {
    vec!["profile".to_owned(), "email".to_owned()]
}

fn default_user_claim() -> String {
    "preferred_username".to_owned()
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8000))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("berth-data")
}

fn default_root() -> String {
    berth_manager::DEFAULT_ROOT_LABEL.to_owned()
}

fn parse_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e
        .span()
        .map(|span| {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, str::len) + 1;
            (line, column)
        })
        .unwrap_or((0, 0));
    ConfigError::Parse {
        key: key_at_line(text, line),
        path: path.to_owned(),
        line,
        column,
        message: e.message().trim().to_owned(),
    }
}

/// The dotted key assigned on `line` (1-based), with the table it is in.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let current = lines.get(line.checked_sub(1)?)?;
    let key = current.split_once('=')?.0.trim().trim_matches('"');
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let table = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_owned(),
    })
}

/// A value of `text` (read from `path`) that parses but makes no sense:
/// the error names the line where `key` is written. `key` is a dotted path
/// into the file whose numbers index arrays (`tools.2.mem_limit_mb`); the
/// error names it without them (`tools.mem_limit_mb`), as parse errors do.
fn invalid_at(path: &Path, text: &str, key: &str, message: String) -> ConfigError {
    let named: Vec<&str> = key.split('.').filter(|s| s.parse::<usize>().is_err()).collect();
    ConfigError::Invalid { path: path.to_owned(), line: line_of(text, key), key: named.join("."), message }
}

/// The 1-based line where the dotted `key` (numbers index arrays) is
/// written in `text`, when it is.
fn line_of(text: &str, key: &str) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut segments = key.split('.');
    let (first_key, mut value) = root.get_ref().get_key_value(segments.next()?)?;
    let mut span = first_key.span();
    for segment in segments {
        match value.get_ref() {
            DeValue::Table(table) => {
                let (k, v) = table.get_key_value(segment)?;
                span = k.span();
                value = v;
            }
            DeValue::Array(items) => {
                value = items.get(segment.parse::<usize>().ok()?)?;
                span = value.span();
            }
            _ => return None,
        }
    }
    Some(text.get(..span.start)?.matches('\n').count() + 1)
}

/// The key a message about a tool's setting starts with (`mem_limit_mb
/// 100 is below ...`, `volumes[0].name ...`).
fn leading_key(message: &str) -> &str {
    let end = message.find(|c: char| !(c.is_ascii_lowercase() || c == '_')).unwrap_or(message.len());
    &message[..end]
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })
}

/// Longest `proxy.start_timeout_secs` accepted: a day.
pub const MAX_START_TIMEOUT_SECS: u64 = 24 * 3600;

impl Config {
    /// Checks `[server]`: every limit must be usable.
    fn check_server(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let s = &self.server;
        let seconds = |key: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 3600.0 {
                Ok(())
            } else {
                Err(invalid_at(path, text, key, format!("{v} is not between 0 and 3600 seconds")))
            }
        };
        seconds("server.header_read_timeout_secs", s.header_read_timeout_secs)?;
        seconds("server.shutdown_grace_secs", s.shutdown_grace_secs)?;
        if s.threads == Some(0) || s.threads.is_some_and(|t| t > 1024) {
            return Err(invalid_at(path, text, "server.threads", "must be between 1 and 1024".to_owned()));
        }
        if !(1024..=16 * 1024 * 1024).contains(&s.max_header_bytes) {
            return Err(invalid_at(
                path,
                text,
                "server.max_header_bytes",
                format!("{} is not between 1024 and 16777216 bytes", s.max_header_bytes),
            ));
        }
        if s.max_connections == 0 || s.max_connections > 1_000_000 {
            return Err(invalid_at(
                path,
                text,
                "server.max_connections",
                format!("{} is not between 1 and 1000000", s.max_connections),
            ));
        }
        Ok(())
    }

    /// Reads and checks `path`; relative paths inside it are resolved
    /// against its directory.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file, and line/column/key where it can.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read(path)?;
        Config::parse(path, &text)
    }

    /// Parses `text` as if read from `path`.
    ///
    /// # Errors
    ///
    /// As [`Config::load`].
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| parse_error(path, text, &e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if config.data_dir.is_relative() {
            config.data_dir = base.join(&config.data_dir);
        }
        if let Some(dir) = &config.data.dir
            && dir.is_relative()
        {
            config.data.dir = Some(base.join(dir));
        }
        if let Some(dir) = &config.staging.dir
            && dir.is_relative()
        {
            config.staging.dir = Some(base.join(dir));
        }
        if let Some(tools) = &config.tools
            && tools.is_relative()
        {
            config.tools = Some(base.join(tools));
        }
        if config.proxy.start_timeout_secs > MAX_START_TIMEOUT_SECS {
            return Err(invalid_at(
                path,
                text,
                "proxy.start_timeout_secs",
                format!("is more than a day ({MAX_START_TIMEOUT_SECS} s)"),
            ));
        }
        config.check_server(path, text)?;
        if let Some(bad) = config.api.allow_images.iter().find(|p| p.is_empty() || (p.contains('*') && *p != "*")) {
            return Err(invalid_at(
                path,
                text,
                "api.allow_images",
                format!("{bad:?} is not a prefix: give image reference prefixes, or \"*\" alone for any image"),
            ));
        }
        if let Some(e) = &config.engine.endpoints {
            let allowed: &[&str] = match config.engine.backend {
                Backend::Docker => &["auto", "bridge", "published", "host"],
                Backend::Swarm => &["published", "network"],
                Backend::Mock => &[],
            };
            if !allowed.contains(&e.as_str()) {
                return Err(invalid_at(
                    path,
                    text,
                    "engine.endpoints",
                    format!("{e:?} is not one of {} (for backend {:?})", allowed.join(", "), config.engine.backend),
                ));
            }
        }
        if config.engine.backend == Backend::Swarm
            && (config.engine.network.is_some() || !config.engine.network_labels.is_empty())
        {
            return Err(invalid_at(
                path,
                text,
                "engine.network",
                "applies only with engine.backend = \"docker\" (a swarm's is engine.swarm.network)".into(),
            ));
        }
        if let Some(n) = &config.engine.network {
            let ok = n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && n.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return Err(invalid_at(
                    path,
                    text,
                    "engine.network",
                    format!("{n:?} is not a network name (letters, digits, _ . -)"),
                ));
            }
        }
        let swarm = &config.engine.swarm;
        let swarm_set = !swarm.constraints.is_empty()
            || !swarm.preferences.is_empty()
            || swarm.network.is_some()
            || swarm.volume_driver.is_some();
        if config.engine.backend == Backend::Docker && swarm_set {
            return Err(invalid_at(path, text, "engine.swarm", "applies only with engine.backend = \"swarm\"".into()));
        }
        let placement =
            berth_manager::Placement { constraints: swarm.constraints.clone(), preferences: swarm.preferences.clone() };
        if let Err(reason) = placement.validate() {
            let key = if placement.parsed().is_err() { "engine.swarm.constraints" } else { "engine.swarm.preferences" };
            return Err(invalid_at(path, text, key, reason));
        }
        if config.engine.endpoints.as_deref() == Some("network") && swarm.network.is_none() {
            return Err(invalid_at(
                path,
                text,
                "engine.endpoints",
                "\"network\" needs engine.swarm.network (the overlay network berth runs attached to)".into(),
            ));
        }
        let invalid = |key: &str, message: String| invalid_at(path, text, key, message);
        if config.routing_choice() != RoutingChoice::Path && config.proxy.host_suffix.is_none() {
            return Err(invalid("proxy.routing", "hostname routing needs proxy.host_suffix".into()));
        }
        if config.routing_choice() != RoutingChoice::Both && config.proxy.default_routing.is_some() {
            return Err(invalid("proxy.default_routing", "applies only with proxy.routing = \"both\"".into()));
        }
        if let Some(url) = &config.proxy.public_url {
            let ok = (url.starts_with("http://") || url.starts_with("https://"))
                && url.split_once("://").is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'))
                && !url.chars().any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#');
            if !ok {
                return Err(invalid("proxy.public_url", format!("{url:?} is not an http(s) URL without query")));
            }
        }
        if berth_manager::LabelScheme::new(config.root_label.clone()).root().is_empty() {
            return Err(invalid("root_label", "is empty".into()));
        }
        config.check_auth(path, text)?;
        if let Some(file) = &config.auth.key_file
            && file.is_relative()
        {
            config.auth.key_file = Some(base.join(file));
        }
        if let Some(oidc) = config.auth.oidc.as_mut()
            && let Some(file) = oidc.client_secret_file.take()
        {
            let file = if file.is_relative() { base.join(file) } else { file };
            let secret = std::fs::read_to_string(&file).map_err(|e| {
                invalid_at(path, text, "auth.oidc.client_secret_file", format!("cannot read {}: {e}", file.display()))
            })?;
            oidc.client_secret = Some(secret.trim().to_owned());
        }
        if config.api.token.as_deref().is_some_and(|t| t.len() < 8) {
            return Err(invalid("api.token", "is shorter than 8 characters".into()));
        }
        Ok(config)
    }

    /// Checks `[auth]`: each mode's section present and sensible, none of
    /// another mode's.
    fn check_auth(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| invalid_at(path, text, key, message);
        let auth = &self.auth;
        if auth.session_ttl_secs == 0 || auth.session_ttl_secs > 366 * 24 * 3600 {
            return Err(invalid("auth.session_ttl_secs", "must be 1 s to a year".into()));
        }
        let cookie_ok = !auth.cookie_name.is_empty()
            && auth.cookie_name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !cookie_ok {
            return Err(invalid(
                "auth.cookie_name",
                format!("{:?} is not a cookie name (letters, digits, - _ .)", auth.cookie_name),
            ));
        }
        if auth.header.is_some() && auth.mode != AuthMode::Header {
            return Err(invalid("auth.header", "applies only with auth.mode = \"header\"".into()));
        }
        if auth.oidc.is_some() && auth.mode != AuthMode::Oidc {
            return Err(invalid("auth.oidc", "applies only with auth.mode = \"oidc\"".into()));
        }
        match auth.mode {
            AuthMode::None => {
                if !auth.admins.is_empty() || !auth.admin_groups.is_empty() {
                    return Err(invalid(
                        "auth.admins",
                        "mean nothing with auth.mode = \"none\" (everyone sees everything)".into(),
                    ));
                }
            }
            AuthMode::Header => {
                let Some(header) = &auth.header else {
                    return Err(invalid(
                        "auth.header",
                        "is required with auth.mode = \"header\" (at least trusted_proxies)".into(),
                    ));
                };
                if header.trusted_proxies.is_empty() {
                    return Err(invalid(
                        "auth.header.trusted_proxies",
                        "is empty: name the networks of your authenticating proxy".into(),
                    ));
                }
                for (key, name) in [
                    ("auth.header.user_header", &header.user_header),
                    ("auth.header.groups_header", &header.groups_header),
                    ("auth.header.email_header", &header.email_header),
                ] {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        return Err(invalid(key, format!("{name:?} is not a header name")));
                    }
                }
            }
            AuthMode::Oidc => {
                let Some(oidc) = &auth.oidc else {
                    return Err(invalid(
                        "auth.oidc",
                        "is required with auth.mode = \"oidc\" (issuer and client_id)".into(),
                    ));
                };
                let url_ok = (oidc.issuer.starts_with("https://") || oidc.issuer.starts_with("http://"))
                    && oidc
                        .issuer
                        .split_once("://")
                        .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'));
                if !url_ok {
                    return Err(invalid("auth.oidc.issuer", format!("{:?} is not an http(s) URL", oidc.issuer)));
                }
                if oidc.client_id.trim().is_empty() {
                    return Err(invalid("auth.oidc.client_id", "is empty".into()));
                }
                if oidc.client_secret.is_some() && oidc.client_secret_file.is_some() {
                    return Err(invalid(
                        "auth.oidc.client_secret",
                        "give client_secret or client_secret_file, not both".into(),
                    ));
                }
                if oidc.user_claim.is_empty() {
                    return Err(invalid("auth.oidc.user_claim", "is empty".into()));
                }
                if self.proxy.public_url.is_none() && self.listen.ip().is_unspecified() {
                    return Err(invalid(
                        "proxy.public_url",
                        "is required with auth.mode = \"oidc\" on an unspecified address: the provider redirects browsers back to it".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether cookies carry `Secure` (`auth.secure_cookies`, else whether
    /// the public URL is https).
    pub fn secure_cookies(&self) -> bool {
        self.auth.secure_cookies.unwrap_or_else(|| self.public_urls().base.starts_with("https://"))
    }

    /// Which routings are on.
    pub fn routing_choice(&self) -> RoutingChoice {
        self.proxy.routing.unwrap_or(if self.proxy.host_suffix.is_some() {
            RoutingChoice::Host
        } else {
            RoutingChoice::Path
        })
    }

    /// Where containers are published.
    pub fn public_urls(&self) -> berth_axum::api::PublicUrls {
        use berth_manager::RoutingMode;
        let base = self.proxy.public_url.clone().unwrap_or_else(|| {
            let mut addr = self.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("http://{addr}")
        });
        let choice = self.routing_choice();
        let prefix = berth_proxy::PathRouting::new(&self.proxy.prefix).prefix().to_owned();
        berth_axum::api::PublicUrls {
            base: base.trim_end_matches('/').to_owned(),
            path_prefix: (choice != RoutingChoice::Host).then_some(prefix),
            host_suffix: (choice != RoutingChoice::Path)
                .then(|| {
                    self.proxy.host_suffix.as_deref().map(|s| berth_proxy::HostRouting::new(s).suffix().to_owned())
                })
                .flatten(),
            default: match choice {
                RoutingChoice::Path => RoutingMode::Path,
                RoutingChoice::Host => RoutingMode::Host,
                RoutingChoice::Both => self.proxy.default_routing.unwrap_or(RoutingMode::Path),
            },
        }
    }

    /// Where staged files are kept.
    pub fn staging_dir(&self) -> PathBuf {
        self.staging.dir.clone().unwrap_or_else(|| self.data_dir.join("staging"))
    }

    /// Whether the web app is served (see [`WebSection::enabled`]).
    pub fn web_enabled(&self) -> bool {
        self.web.enabled.unwrap_or(self.api.token.is_none() || self.auth.mode != AuthMode::None)
    }

    /// The tool registry the config points at (empty without `tools`).
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the registry file.
    pub fn registry(&self) -> Result<ToolRegistry, ConfigError> {
        let Some(path) = &self.tools else { return Ok(ToolRegistry::default()) };
        let text = read(path)?;
        let registry: ToolRegistry = toml::from_str(&text).map_err(|e| parse_error(path, &text, &e))?;
        if let Some(v) = registry.version.filter(|v| *v != 1) {
            return Err(invalid_at(
                path,
                &text,
                "version",
                format!("registry format version {v} is not supported (this berth reads version 1)"),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, tool) in registry.tools.iter().enumerate() {
            let invalid = |key: &str, message: String| invalid_at(path, &text, &format!("tools.{i}.{key}"), message);
            let root = self.root_label.as_str();
            let reserved =
                |k: &str| k.strip_prefix(root).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '-']));
            if let Some(key) = tool.labels.keys().find(|k| reserved(k)) {
                return Err(invalid(
                    "labels",
                    format!(
                        "tool {:?}: label {key:?} is under the root label {:?}, which berth reserves for its own labels",
                        tool.name, self.root_label
                    ),
                ));
            }
            if let Err(message) = tool.check() {
                // The message starts with the key it is about; a key the
                // entry does not write (a default) points at its name.
                let key = leading_key(&message);
                let key = if line_of(&text, &format!("tools.{i}.{key}")).is_some() { key } else { "name" };
                return Err(invalid(key, format!("tool {:?}: {message}", tool.name)));
            }
            if let Some(mode) = tool.routing
                && self.public_urls().place(&tool.name, Some(mode)).is_err()
            {
                return Err(invalid(
                    "routing",
                    format!(
                        "tool {:?} wants {} routing, which this server does not serve (see proxy.routing)",
                        tool.name,
                        mode.as_str()
                    ),
                ));
            }
            if !seen.insert(tool.name.as_str()) {
                return Err(invalid("name", format!("tool {:?} is defined twice", tool.name)));
            }
        }
        Ok(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_relative_paths() {
        let c = Config::parse(Path::new("/etc/berth/berth.toml"), "tools = \"tools.toml\"\n").unwrap();
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.data_dir, PathBuf::from("/etc/berth/berth-data"));
        assert_eq!(c.tools, Some(PathBuf::from("/etc/berth/tools.toml")));
        assert_eq!(c.proxy.prefix, "/docker");
        assert!(c.web_enabled());
        assert_eq!(c.staging_dir(), PathBuf::from("/etc/berth/berth-data/staging"));
        let c =
            Config::parse(Path::new("/etc/b.toml"), "[staging]\ndir = \"st\"\nbind = \"172.17.0.1:8001\"\n").unwrap();
        assert_eq!(
            (c.staging_dir(), c.staging.bind),
            (PathBuf::from("/etc/st"), Some("172.17.0.1:8001".parse().unwrap()))
        );
    }

    #[test]
    fn swarm_engine() {
        let text = "[engine]\nbackend = \"swarm\"\nendpoints = \"published\"\n[engine.swarm]\n\
                    constraints = [\"node.labels.berth==yes\"]\npreferences = [\"node.labels.zone\"]\n\
                    images = \"registry\"\nvolume_driver_options = { device = \":/x/{name}\" }\n";
        let c = Config::parse(Path::new("b.toml"), text).unwrap();
        assert_eq!(c.engine.backend, Backend::Swarm);
        assert_eq!(c.engine.swarm.constraints, ["node.labels.berth==yes"]);
        assert_eq!(c.engine.swarm.images, SwarmImages::Registry);
        let bad = |text: &str, key: &str| {
            let e = Config::parse(Path::new("b.toml"), text).unwrap_err().to_string();
            assert!(e.contains(key), "{e} should name {key}");
        };
        bad("[engine]\nbackend = \"swarm\"\nendpoints = \"bridge\"\n", "engine.endpoints");
        bad("[engine]\nbackend = \"swarm\"\nendpoints = \"network\"\n", "engine.endpoints");
        bad("[engine]\nbackend = \"kube\"\n", "engine.backend");
        bad("[engine.swarm]\nconstraints = [\"node.labels.x==1\"]\n", "engine.swarm");
        bad(
            "[engine]\nbackend = \"swarm\"\n[engine.swarm]\nconstraints = [\"node.gpu\"]\n",
            "engine.swarm.constraints",
        );
        bad("[engine]\nbackend = \"swarm\"\n[engine.swarm]\npreferences = [\"zone\"]\n", "engine.swarm.preferences");
        bad("[engine]\nbackend = \"swarm\"\nnetwork = \"n\"\n", "engine.network");
    }

    #[test]
    fn docker_networks() {
        let engine = |text: &str| Config::parse(Path::new("b.toml"), text).map(|c| c.engine);
        let e = engine("").unwrap();
        assert_eq!((e.network, e.network_labels.len()), (None, 0), "berth's own isolated network by default");
        let e = engine("[engine]\nnetwork = \"lab-net\"\nnetwork_labels = { team = \"lab\" }\n").unwrap();
        assert_eq!((e.network.as_deref(), e.network_labels["team"].as_str()), (Some("lab-net"), "lab"));
        for bad in ["", "-x", "a b", "a/b"] {
            let e = engine(&format!("[engine]\nnetwork = {bad:?}\n")).unwrap_err().to_string();
            assert!(e.contains("key engine.network") && e.contains(":2:"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn server_limits_have_safe_defaults_and_are_checked_naming_the_key() {
        let c = Config::parse(Path::new("b.toml"), "").unwrap();
        let limits = c.server.limits();
        assert_eq!(limits.header_read_timeout, std::time::Duration::from_secs(10));
        assert_eq!((limits.max_header_bytes, limits.max_connections), (64 * 1024, 10_000));
        assert!(c.server.thread_count() >= 1);
        let c = Config::parse(
            Path::new("b.toml"),
            "[server]
threads = 3
header_read_timeout_secs = 2.5
max_connections = 50
shutdown_grace_secs = 1
",
        )
        .unwrap();
        assert_eq!(c.server.thread_count(), 3);
        assert_eq!(c.server.limits().header_read_timeout, std::time::Duration::from_millis(2500));
        let bad = |text: &str, key: &str, line: usize| {
            let e = Config::parse(Path::new("b.toml"), text).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(&format!("b.toml:{line}")), "{e} should name {key} on line {line}");
        };
        bad(
            "[server]
threads = 0
",
            "server.threads",
            2,
        );
        bad(
            "[server]
\nheader_read_timeout_secs = 0
",
            "server.header_read_timeout",
            3,
        );
        bad(
            "[server]
max_connections = 2
max_header_bytes = 10
",
            "server.max_header_bytes",
            3,
        );
        bad(
            "[server]
max_connections = 0
",
            "server.max_connections",
            2,
        );
        bad(
            "[server]
shutdown_grace_secs = -1
",
            "server.shutdown_grace_secs",
            2,
        );
        bad(
            "[server]
threads = \"two\"
",
            "server.threads",
            2,
        );
        bad(
            "[server]
backlog = 5
",
            "server",
            2,
        );
    }

    #[test]
    fn a_token_turns_the_web_app_off_unless_asked_for() {
        let parse = |text: &str| Config::parse(Path::new("b.toml"), text).unwrap().web_enabled();
        assert!(!parse("[api]\ntoken = \"0123456789\"\n"));
        assert!(parse("[api]\ntoken = \"0123456789\"\n[web]\nenabled = true\n"));
        assert!(!parse("[web]\nenabled = false\n"));
    }

    #[test]
    fn auth_sections_are_checked_naming_the_key() {
        let parse = |text: &str| Config::parse(Path::new("b.toml"), text).map_err(|e| e.to_string());
        let c = parse("").unwrap();
        assert_eq!((c.auth.mode, c.secure_cookies()), (AuthMode::None, false));
        let header = "[auth]\nmode = \"header\"\nadmin_groups = [\"ops\"]\n[auth.header]\ntrusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]\n";
        let c = parse(header).unwrap();
        let h = c.auth.header.as_ref().unwrap();
        assert_eq!((h.trusted_proxies.len(), h.user_header.as_str()), (2, "X-Forwarded-User"));
        assert_eq!(h.email_header, "X-Forwarded-Email");
        assert!(c.web_enabled(), "a login mode turns the web app on");
        let oidc = "[proxy]\npublic_url = \"https://b.example\"\n[auth]\nmode = \"oidc\"\n[auth.oidc]\nissuer = \"https://idp.example\"\nclient_id = \"berth\"\n";
        let c = parse(oidc).unwrap();
        assert!(c.secure_cookies());
        assert_eq!(c.auth.oidc.as_ref().unwrap().user_claim, "preferred_username");
        for (text, key) in [
            ("[auth]\nmode = \"ldap\"\n", "auth.mode"),
            ("[auth]\nmode = \"header\"\n", "auth.header"),
            ("[auth]\nmode = \"header\"\n[auth.header]\ntrusted_proxies = []\n", "auth.header.trusted_proxies"),
            (
                "[auth]\nmode = \"header\"\n[auth.header]\ntrusted_proxies = [\"localhost\"]\n",
                "auth.header.trusted_proxies",
            ),
            (
                "[auth]\nmode = \"header\"\n[auth.header]\ntrusted_proxies = [\"10.0.0.0/8\"]\nuser_header = \"a b\"\n",
                "auth.header.user_header",
            ),
            (
                "[auth]\nmode = \"header\"\n[auth.header]\ntrusted_proxies = [\"10.0.0.0/8\"]\nemail_header = \"\"\n",
                "auth.header.email_header",
            ),
            ("[auth]\nmode = \"oidc\"\n", "auth.oidc"),
            ("[auth]\nmode = \"oidc\"\n[auth.oidc]\nissuer = \"idp\"\nclient_id = \"b\"\n", "auth.oidc.issuer"),
            ("[auth]\nmode = \"oidc\"\n[auth.oidc]\nissuer = \"https://i\"\n", "client_id"),
            (
                "[auth]\nmode = \"oidc\"\n[auth.oidc]\nissuer = \"https://i\"\nclient_id = \"b\"\nclient_secret_file = \"/nonexistent/s\"\n",
                "auth.oidc.client_secret_file",
            ),
            ("[auth.oidc]\nissuer = \"https://i\"\nclient_id = \"b\"\n", "auth.oidc"),
            ("[auth]\nadmins = [\"a\"]\n", "auth.admins"),
            ("[auth]\ncookie_name = \"a;b\"\n", "auth.cookie_name"),
            ("[auth]\nsession_ttl_secs = 0\n", "auth.session_ttl_secs"),
            ("[auth]\nmode = \"oidc\"\nkeyfile = \"x\"\n", "keyfile"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn image_policy() {
        use berth_axum::api::ImagePolicy;
        let policy = |text: &str| Config::parse(Path::new("b.toml"), text).unwrap().api.image_policy();
        assert_eq!(policy(""), ImagePolicy::RegistryOnly);
        let p = policy("[api]\nallow_images = [\"reg.example/viz/\"]\n");
        assert!(p.allows("reg.example/viz/heat:1") && !p.allows("reg.example/vizard/x") && !p.allows("alpine"));
        assert!(policy("[api]\nallow_images = [\"*\"]\n").allows("anything/at:all"));
        for bad in ["\"\"", "\"reg/*\""] {
            let e = Config::parse(Path::new("b.toml"), &format!("[api]\nallow_images = [{bad}]\n")).unwrap_err();
            assert!(e.to_string().contains("api.allow_images"), "{e}");
        }
        let e = Config::parse(Path::new("b.toml"), "[proxy]\nstart_timeout_secs = 99999999999\n").unwrap_err();
        assert!(e.to_string().contains("proxy.start_timeout_secs"), "{e}");
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let text = "listen = \"127.0.0.1:8000\"\n[fleet]\nmemory_budget_mb = \"lots\"\n";
        let e = Config::parse(Path::new("berth.toml"), text).unwrap_err().to_string();
        assert!(e.starts_with("berth.toml:3:"), "{e}");
        assert!(e.contains("key fleet.memory_budget_mb"), "{e}");
        let e = Config::parse(Path::new("b.toml"), "[proxy]\nprefixx = \"/x\"\n").unwrap_err().to_string();
        assert!(e.starts_with("b.toml:2:") && e.contains("prefixx"), "{e}");
        let e = Config::parse(Path::new("b.toml"), "[engine]\nendpoints = \"magic\"\n").unwrap_err().to_string();
        assert!(e.contains("engine.endpoints"), "{e}");
        let e = Config::parse(Path::new("b.toml"), "listen = \"nowhere\"\n").unwrap_err().to_string();
        assert!(e.starts_with("b.toml:1:"), "{e}");
    }

    #[test]
    fn the_real_tools_registry_is_valid() {
        use berth_manager::RoutingMode;
        // What `cargo xtask` does with demo/real-tools.toml: drop the
        // build-only `local` key; the server must then accept every entry.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let text = std::fs::read_to_string(root.join("demo/real-tools.toml")).unwrap();
        let mut table: toml::Table = text.parse().unwrap();
        for tool in table["tools"].as_array_mut().unwrap() {
            tool.as_table_mut().unwrap().remove("local");
        }
        let dir = std::env::temp_dir().join(format!("berth-real-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tools.toml"), toml::to_string(&table).unwrap()).unwrap();
        let both = "tools = \"tools.toml\"\n[proxy]\nhost_suffix = \"docker.localhost\"\nrouting = \"both\"\n";
        let config = Config::parse(&dir.join("berth.toml"), both).unwrap();
        let registry = config.registry().unwrap();
        assert_eq!(registry.tools.len(), 6);
        let jupyter = registry.get("jupyterlab").unwrap();
        let placement = config.public_urls().place("nb", None).unwrap();
        let spec = jupyter.spec("nb", Some("ann"), &placement).unwrap();
        assert!(spec.command.unwrap().contains(&"--ServerApp.base_url=/docker/nb/".to_owned()));
        assert_eq!(spec.hints.ready_path.as_deref(), Some("/docker/nb/api"), "probed under the path it keeps");
        assert_eq!(spec.volumes[0].name, "jupyter-home-ann");
        // Every entry works under path routing alone, as a user copies it.
        let path_only = Config::parse(&dir.join("berth.toml"), "tools = \"tools.toml\"\n").unwrap();
        let registry = path_only.registry().unwrap();
        assert!(registry.tools.iter().all(|t| t.routing.is_none()), "no entry needs one routing");
        // RStudio is told its root (www-root-path) under either routing;
        // berth strips the prefix.
        let rstudio = registry.get("rstudio").unwrap();
        for (placement, root) in [
            (config.public_urls().place("rs", Some(RoutingMode::Path)).unwrap(), "/docker/rs/"),
            (config.public_urls().place("rs", Some(RoutingMode::Host)).unwrap(), "/"),
        ] {
            let spec = rstudio.spec("rs", Some("ann"), &placement).unwrap();
            let script = spec.command.unwrap().last().cloned().unwrap();
            assert!(script.contains(&format!("echo 'www-root-path={root}' >>")), "{script}");
            assert!(script.ends_with("exec /init"), "{script}");
            assert_eq!(spec.hints.strip_prefix, None, "stripped, the default");
            assert_eq!(
                (spec.hints.ready_path.as_deref(), spec.hints.ready_status.clone()),
                (Some("/"), vec![200, 302])
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn registry_refuses_unknown_keys_and_versions() {
        let dir = std::env::temp_dir().join(format!("berth-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = Config::parse(&dir.join("berth.toml"), "tools = \"tools.toml\"\n").unwrap();
        let tool = "[[tools]]\nname = \"v\"\nimage = \"i\"\nmem_reservation_mb = 8\n";
        let registry = |text: &str| {
            std::fs::write(dir.join("tools.toml"), text).unwrap();
            config.registry().map_err(|e| e.to_string())
        };
        let ok = registry(&format!("version = 1\n{tool}[tools.labels]\nteam = \"bio\"\n")).unwrap();
        assert_eq!(ok.tools[0].labels.get("team").map(String::as_str), Some("bio"));
        let e = registry(&format!("{tool}package = \"berth-demo-tools\"\n")).unwrap_err();
        assert!(e.contains("tools.toml:5:") && e.contains("package"), "{e}");
        let e = registry(&format!("version = 2\n{tool}")).unwrap_err();
        assert!(e.contains("version 2 is not supported"), "{e}");
        let e = registry(&format!("{tool}{tool}")).unwrap_err();
        assert!(e.contains("defined twice"), "{e}");
        let e = registry(&format!("{tool}[tools.labels]\nberth-owner = \"mallory\"\n")).unwrap_err();
        assert!(e.contains("tools.labels") && e.contains("reserves"), "{e}");
        assert!(registry(&format!("{tool}[tools.labels]\nberthold = \"x\"\n")).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A registry file in a fresh directory, read through a config that
    /// points at it.
    fn registry_of(test: &str, berth: &str, tools: &str) -> Result<ToolRegistry, String> {
        let dir = std::env::temp_dir().join(format!("berth-registry-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tools.toml"), tools).unwrap();
        let result = Config::parse(&dir.join("berth.toml"), &format!("tools = \"tools.toml\"\n{berth}"))
            .map_err(|e| e.to_string())
            .and_then(|c| c.registry().map_err(|e| e.to_string()));
        let _ = std::fs::remove_dir_all(&dir);
        result.map_err(|e| e.replace(&dir.display().to_string(), "DIR"))
    }

    #[test]
    fn registry_errors_name_file_line_and_key() {
        // Lines 1 to 5; each case adds from line 6.
        let head =
            "version = 1\n[[tools]]\nname = \"nb\"\nimage = \"jupyter/base-notebook\"\nmem_reservation_mb = 512\n";
        let cases = [
            ("command = [\"start.sh\", \"--base={oops}\"]\n", 6, "key tools.command", "unknown placeholder {oops}"),
            ("command = [\"--base={public_path\"]\n", 6, "key tools.command", "unclosed {"),
            ("command = \"start.sh --base={public_path}\"\n", 6, "key tools.command", "invalid type: string"),
            ("entrypoint = [\"tini\", 1]\n", 6, "key tools.entrypoint", "invalid type: integer"),
            (
                "[tools.env]\nJUPYTER_TOKEN = \"\"\n\"BAD-NAME\" = \"x\"\n",
                8,
                "key tools.env",
                "\"BAD-NAME\" is not a valid",
            ),
            ("[tools.env]\nBERTH_PUBLIC_PATH = \"/x/\"\n", 7, "key tools.env", "set by berth itself"),
            ("[tools.env]\nBASE = \"{publicpath}\"\n", 7, "key tools.env.BASE", "unknown placeholder {publicpath}"),
            ("working_dir = \"/home/{user}\"\n", 6, "key tools.working_dir", "unknown placeholder {user}"),
            ("mem_limit_mb = 256\n", 6, "key tools.mem_limit_mb", "mem_limit_mb 256 is below the memory reservation"),
            ("cpus = 2.0\ncpu_limit = 1.0\n", 7, "key tools.cpu_limit", "cpu_limit 1 is below"),
            ("shm_size_mb = 0\n", 6, "key tools.shm_size_mb", "shm_size_mb must be between"),
            ("ready_status = [200, 700]\n", 6, "key tools.ready_status", "ready_status 700"),
            ("ready_path = \"lab\"\n", 6, "key tools.ready_path", "ready_path \"lab\""),
            ("start_timeout_secs = 0\n", 6, "key tools.start_timeout_secs", "start_timeout_secs 0"),
            (
                "volumes = [{ name = \"home {owner}\", path = \"/home/jovyan/work\" }]\n",
                6,
                "key tools.volumes",
                "volumes[0].name",
            ),
            ("volumes = [{ name = \"home-{owner}\", path = \"work\" }]\n", 6, "key tools.volumes", "volumes[0].path"),
            ("routing = \"host\"\n", 6, "key tools.routing", "does not serve"),
            ("routing = \"hostname\"\n", 6, "key tools.routing", "unknown variant"),
        ];
        for (extra, line, key, needle) in cases {
            let e = registry_of("lines", "", &format!("{head}{extra}")).unwrap_err();
            assert!(e.starts_with(&format!("DIR/tools.toml:{line}:")), "{extra}: {e}");
            assert!(e.contains(key) && e.contains(needle), "{extra}: {e}");
        }
        // The second tool's error points into the second tool.
        let two =
            format!("{head}[[tools]]\nname = \"other\"\nimage = \"i\"\nmem_reservation_mb = 64\nmem_limit_mb = 32\n");
        let e = registry_of("second", "", &two).unwrap_err();
        assert!(e.starts_with("DIR/tools.toml:10:") && e.contains("tool \"other\""), "{e}");
    }

    #[test]
    fn routing_settings_are_checked_with_file_line_and_key() {
        let parse = |text: &str| Config::parse(Path::new("b.toml"), text).map_err(|e| e.to_string());
        let cases = [
            (
                "[proxy]\nprefix = \"/docker\"\nrouting = \"host\"\n",
                "b.toml:3: key proxy.routing",
                "needs proxy.host_suffix",
            ),
            ("[proxy]\nrouting = \"both\"\n", "b.toml:2: key proxy.routing", "needs proxy.host_suffix"),
            ("[proxy]\ndefault_routing = \"host\"\n", "b.toml:2: key proxy.default_routing", "only with proxy.routing"),
            ("[proxy]\nrouting = \"all\"\n", "b.toml:2:", "unknown variant `all`"),
            ("[proxy]\npublic_url = \"berth.example.org\"\n", "b.toml:2: key proxy.public_url", "not an http(s) URL"),
        ];
        for (text, prefix, needle) in cases {
            let e = parse(text).unwrap_err();
            assert!(e.starts_with(prefix) && e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn a_registry_with_every_new_key_parses() {
        use berth_manager::RoutingMode;
        let berth = "[proxy]\nhost_suffix = \"docker.localhost\"\nrouting = \"both\"\n\
                     public_url = \"https://berth.example.org\"\n";
        let tools = r#"
version = 1

[[tools]]
name = "jupyter"
description = "JupyterLab, told its base path"
image = "quay.io/jupyter/base-notebook:2025-01-01"
port = 8888
mem_reservation_mb = 512
mem_limit_mb = 2048
cpus = 0.5
cpu_limit = 2.0
shm_size_mb = 512
entrypoint = ["tini", "-g", "--"]
command = ["start-notebook.py", "--ServerApp.base_url={public_path}", "--IdentityProvider.token=", "--ServerApp.custom_display_url={public_url}"]
working_dir = "/home/jovyan"
user = "1000:100"
volumes = [{ name = "jupyter-home-{owner}", path = "/home/jovyan/work" }]
ready_path = "/api/status"
ready_status = [200]
start_timeout_secs = 60
strip_prefix = false
routing = "path"

[tools.env]
JUPYTER_PORT = "{port}"
NB_USER_LABEL = "{owner} on {name}: {{not a placeholder}}"

[[tools]]
name = "dash"
image = "dash-app"
port = 8050
mem_reservation_mb = 256
routing = "host"
"#;
        let registry = registry_of("every-key", berth, tools).unwrap();
        let jupyter = registry.get("jupyter").unwrap();
        assert_eq!((jupyter.mem_limit_mb, jupyter.cpu_limit, jupyter.shm_size_mb), (Some(2048), Some(2.0), Some(512)));
        assert_eq!((jupyter.strip_prefix, jupyter.routing), (Some(false), Some(RoutingMode::Path)));
        let config = Config::parse(Path::new("b.toml"), berth).unwrap();
        let urls = config.public_urls();
        let placement = urls.place("nb", jupyter.routing).unwrap();
        let spec = jupyter.spec("nb", Some("ann"), &placement).unwrap();
        let command = spec.command.as_deref().unwrap();
        assert_eq!(command[1], "--ServerApp.base_url=/docker/nb/");
        assert_eq!(command[3], "--ServerApp.custom_display_url=https://berth.example.org/docker/nb/");
        assert_eq!(spec.entrypoint.as_deref().unwrap(), ["tini", "-g", "--"]);
        assert_eq!(spec.env["JUPYTER_PORT"], "8888");
        assert_eq!(spec.env["NB_USER_LABEL"], "ann on nb: {not a placeholder}");
        assert_eq!(spec.env["BERTH_PUBLIC_URL"], "https://berth.example.org/docker/nb/");
        assert_eq!((spec.working_dir.as_deref(), spec.user.as_deref()), (Some("/home/jovyan"), Some("1000:100")));
        assert_eq!(
            (spec.volumes[0].name.as_str(), spec.volumes[0].owner.as_deref()),
            ("jupyter-home-ann", Some("ann"))
        );
        assert_eq!(spec.hints.ready_path.as_deref(), Some("/docker/nb/api/status"));
        assert_eq!((spec.hints.ready_status.as_slice(), spec.hints.start_timeout_secs), (&[200][..], Some(60)));
        let dash = registry.get("dash").unwrap();
        let placement = urls.place("viz", dash.routing).unwrap();
        assert_eq!((placement.path.as_str(), placement.url.as_str()), ("/", "https://viz.docker.localhost/"));
    }
}

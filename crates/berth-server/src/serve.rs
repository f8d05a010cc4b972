//! `berth serve`: everything in one process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use berth_axum::api::{ApiState, api_router};
use berth_fleet::{Fleet, FleetConfig, Stager};
use berth_history::{HistoryConfig, HistoryStore};
use berth_proxy::{
    ActivityRecorder, HostRouting, PathRouting, Proxy, ProxyConfig, RouteTable, Routing, TableConfig, WaitingPage,
};
use berth_staging::{LocalDirStore, StagingService, StagingUrls, TokenRegistry};

use crate::auth::{Auth, ServerHooks};
use crate::config::{AuthMode, Config, RoutingChoice};

/// Builds the server from `config` and serves until the process ends.
///
/// The main listener serves the API, the proxy, the web app and the staged
/// inputs (token-protected). A
/// second listener serves only the staged inputs (token-protected) and data
/// files to containers, which reach the host through the engine's bridge
/// gateway, not through loopback; with a local engine it answers only
/// loopback and the engine's network subnets (see [`crate::peers`]).
///
/// # Errors
///
/// Configuration, engine, database or socket failures, with context.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let Built { app, staging_app, public_base } = build(&config).await?;
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let staging_listener = staging_listener(&config, &public_base).await?;
    let staging_addr = staging_listener.local_addr().context("the staging listener's address")?;
    tracing::info!(listen = %config.listen, staging = %public_base, %staging_addr, "berth serving");
    eprintln!("berth is serving on http://{}/ (API at /api/v1, tools at {})", config.listen, tools_at(&config));
    let staging = tokio::spawn(async move {
        axum::serve(staging_listener, staging_app.into_make_service_with_connect_info::<SocketAddr>()).await
    });
    tokio::select! {
        r = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()) => r.context("serving")?,
        r = staging => r.context("staging task")?.context("serving staged inputs")?,
    }
    Ok(())
}

/// The longest start timeout of any tool (or the server's default).
fn longest_start(config: &Config, registry: &berth_axum::api::ToolRegistry) -> Duration {
    let default = Duration::from_secs(config.proxy.start_timeout_secs);
    registry.tools.iter().filter_map(|t| t.start_timeout_secs).map(Duration::from_secs).fold(default, Duration::max)
}

/// Where tools are served, for the start-up line.
fn tools_at(config: &Config) -> String {
    let urls = config.public_urls();
    let path = urls.path_prefix.as_ref().map(|p| format!("{p}/<name>/"));
    let host = urls.host_suffix.as_ref().map(|s| format!("<name>.{s}"));
    path.into_iter().chain(host).collect::<Vec<_>>().join(" and ")
}

/// The proxy's routing for `config`.
fn routing(config: &Config) -> Routing {
    let path = || {
        let mut p = PathRouting::new(&config.proxy.prefix);
        if let Some(l) = &config.proxy.logs_path {
            p = p.logs_path(l.clone());
        }
        p
    };
    let host = || {
        let mut h = HostRouting::new(config.proxy.host_suffix.as_deref().unwrap_or_default());
        if let Some(l) = &config.proxy.logs_path {
            h = h.logs_path(l.clone());
        }
        h
    };
    match config.routing_choice() {
        RoutingChoice::Path => Routing::Path(path()),
        RoutingChoice::Host => Routing::Host(host()),
        RoutingChoice::Both => Routing::Both(path(), host()),
    }
}

/// Serves the files of `dirs` (the first holding a name wins) at
/// `/_berth/data/<name>`; plain names only: no `/`, no `..`, no hidden files.
fn data_router(dirs: Vec<std::path::PathBuf>) -> Router {
    use axum::extract::Path as UrlPath;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    Router::new().route(
        "/_berth/data/{name}",
        axum::routing::get(move |UrlPath(name): UrlPath<String>| {
            let dirs = dirs.clone();
            async move {
                if !crate::web::valid_file_name(&name) {
                    return (StatusCode::NOT_FOUND, "not found\n").into_response();
                }
                for dir in &dirs {
                    if let Ok(bytes) = tokio::fs::read(dir.join(&name)).await {
                        let ct = berth_staging::content_type_for(&name);
                        return ([(header::CONTENT_TYPE, ct)], bytes).into_response();
                    }
                }
                (StatusCode::NOT_FOUND, "not found\n").into_response()
            }
        }),
    )
}

/// The listener containers fetch staged inputs and data files from:
/// `[staging] bind`, else all interfaces on the public base's port (its
/// peers are checked, see [`crate::peers`]).
async fn staging_listener(config: &Config, public_base: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let addr = match config.staging.bind {
        Some(addr) => addr,
        None => staging_bind(public_base)?,
    };
    tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the staging listener on {addr}"))
}

/// The staging listener's all-interfaces address: the public base's port.
fn staging_bind(public_base: &str) -> anyhow::Result<SocketAddr> {
    let port = public_base
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse::<u16>().ok())
        .with_context(|| format!("staging public_base {public_base:?} names no port"))?;
    Ok(SocketAddr::from(([0, 0, 0, 0], port)))
}

/// Deletes expired sessions and long-expired single-use tokens every hour.
fn spawn_session_pruner(history: Arc<HistoryStore>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(3600));
        loop {
            ticks.tick().await;
            match history.prune_sessions(std::time::SystemTime::now()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "pruned expired sessions and tokens"),
                Err(e) => tracing::warn!(error = %e, "pruning sessions failed"),
            }
        }
    });
}

/// The main app, the staging-only app and the staging base URL.
/// What [`build`] makes.
struct Built {
    /// The main app.
    app: Router,
    /// The app of the staging listener.
    staging_app: Router,
    /// The base URL containers fetch staged files from.
    public_base: String,
}

async fn build(config: &Config) -> anyhow::Result<Built> {
    let registry = config.registry()?;
    let longest_start = longest_start(config, &registry);
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let crate::engine::Engine { manager, peers, remote: remote_engine } = crate::engine::connect(config).await?;

    let history = Arc::new(
        HistoryStore::open(config.data_dir.join("history.sqlite"), HistoryConfig::default())
            .await
            .context("opening the history database")?,
    );
    history.clone().spawn_pruner();

    let store = Arc::new(LocalDirStore::open(config.staging_dir()).await.context("opening the staging directory")?);
    let staging = StagingService::new(store, TokenRegistry::new());
    let public_base = match &config.staging.public_base {
        Some(base) => base.clone(),
        None => format!("http://{}:{}", berth_staging::HOST_GATEWAY_HOST, config.listen.port() + 1),
    };
    let stager = Arc::new(Stager::new(staging.clone(), StagingUrls::new(&public_base)));

    let owner_label = berth_axum::DEFAULT_OWNER_LABEL.to_owned();
    let fleet_config = FleetConfig {
        memory_budget_mb: config.fleet.memory_budget_mb,
        max_containers: config.fleet.max_containers,
        max_per_tool: config.fleet.max_per_tool,
        max_per_user: config.fleet.max_per_user,
        owner_label: owner_label.clone(),
        idle_timeout: config.fleet.idle_timeout_secs.map(Duration::from_secs),
        node_memory_budget_mb: config.fleet.node_memory_budget_mb,
        node_budget_labels: config.fleet.node_budget_labels,
        ..FleetConfig::default()
    };
    let fleet = Arc::new(Fleet::new(manager.clone(), history.clone(), fleet_config).with_stager(stager));
    let report = fleet.recover().await.context("recovering containers")?;
    tracing::info!(adopted = report.adopted.len(), "containers recovered");
    fleet.spawn_culler();

    let table_config =
        TableConfig { start_timeout: Duration::from_secs(config.proxy.start_timeout_secs), ..TableConfig::default() };
    let table = RouteTable::start(manager, table_config).await?;
    let auth = Arc::new(Auth::new(config, history.clone(), table.clone(), &owner_label).context("setting up [auth]")?);
    spawn_session_pruner(history.clone());
    if auth.mode() == AuthMode::None && !config.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %config.listen,
            "auth.mode is \"none\" on a non-loopback address: anyone who reaches it can launch, use and remove every \
             container; set [auth] mode = \"header\" or \"oidc\" (docs/USERS.md)"
        );
    }
    let routing = routing(config);
    // The please-wait page follows the launch from the web app's event
    // stream under path routing (the proxy polls instead for container
    // hosts, which belong to their tools). Without the web app it polls.
    let events_url = config.web_enabled().then(|| crate::web::EVENTS_URL.to_owned());
    // berth's own cookies never reach a container (on container hosts
    // too: a host's session cookie has the same name).
    let mut strip_cookies = config.proxy.strip_cookies.clone();
    strip_cookies.extend(
        [config.auth.cookie_name.as_str(), crate::auth::CSRF_COOKIE, crate::auth::FLOW_COOKIE].map(str::to_owned),
    );
    let public_https = config.public_urls().base.starts_with("https://");
    let proxy_config = ProxyConfig {
        routing,
        strip_cookies,
        forwarded_proto: if public_https { "https" } else { "http" }.to_owned(),
        waiting_page: WaitingPage { events_url, ..WaitingPage::default() },
        ..ProxyConfig::default()
    };
    let metrics = Arc::new(berth_axum::metrics::Metrics::new());
    let recorder = ActivityRecorder::spawn(berth_proxy::TeeSink(history.clone(), metrics.clone()), 65_536);
    let hooks = match auth.mode() {
        AuthMode::None => ServerHooks::Open,
        _ => ServerHooks::Owners(berth_axum::OwnerHooks::new(
            crate::auth::ProxyIdentify(auth.clone()),
            table.clone(),
            owner_label.clone(),
        )),
    };
    let proxy = Proxy::with_hooks(table.clone(), proxy_config, hooks, recorder.clone());

    let api = ApiState {
        fleet,
        table,
        history: Some(history),
        registry: Arc::new(registry),
        token: config.api.token.clone(),
        urls: config.public_urls(),
        owner_label,
        ready_timeout: Duration::from_secs(config.proxy.start_timeout_secs),
        metrics,
        activity: recorder,
        launches: Default::default(),
        images: config.api.image_policy(),
    };
    let uploads = config.data_dir.join("uploads");
    let data_dirs: Vec<std::path::PathBuf> = std::iter::once(uploads.clone()).chain(config.data.dir.clone()).collect();
    let data = data_router(data_dirs);
    let web = config.web_enabled().then(|| {
        crate::web::web_router(crate::web::WebState {
            api: api.clone(),
            uploads,
            data: config.data.dir.clone(),
            data_base: format!("{}/_berth/data", public_base.trim_end_matches('/')),
            max_upload: 256 * 1024 * 1024,
            auth: auth.clone(),
        })
    });
    // Data files have no token: only the containers' listener, with its
    // peer check, serves them.
    let staging_app: Router = berth_axum::staging_router(staging.clone()).merge(data);
    // Containers of a remote engine come from other hosts: no peer check.
    let staging_app = if remote_engine || config.staging.any_peer {
        staging_app
    } else {
        staging_app.layer(axum::middleware::from_fn_with_state(peers, crate::peers::only_containers))
    };
    let mut api = api_router(api);
    if auth.mode() != AuthMode::None {
        let links: Arc<dyn berth_axum::api::HandOff> = Arc::new(crate::auth::Links(auth.clone()));
        api = api.layer(axum::Extension(links));
    }
    let mut app: Router = api.merge(berth_axum::staging_router(staging)).merge(crate::auth::auth_router(auth.clone()));
    match web {
        Some(web) => app = app.merge(web),
        None => tracing::info!(
            "the web app is off: [web] enabled = false, or api.token is set without [web] enabled = true"
        ),
    }
    // Who is asking, for berth's own routes; the proxy's hooks identify
    // proxied requests themselves.
    let app = app.layer(axum::middleware::from_fn_with_state(auth.clone(), crate::auth::identity_middleware));
    // tower-http's standard layers on berth's own routes only, never on the
    // proxied path. The timeout leaves room for the longest `?wait=true`.
    let app =
        berth_axum::layers::standard_layers(app, longest_start + berth_axum::api::WAIT_GRACE + Duration::from_secs(30));
    let app = match config.routing_choice() {
        RoutingChoice::Host => app.layer(berth_axum::HostRoutingLayer::new(proxy)),
        RoutingChoice::Path => app.merge(berth_axum::proxy_router(proxy, &config.proxy.prefix)),
        RoutingChoice::Both => app
            .merge(berth_axum::proxy_router(proxy.clone(), &config.proxy.prefix))
            .layer(berth_axum::HostRoutingLayer::new(proxy)),
    };
    Ok(Built { app, staging_app, public_base })
}

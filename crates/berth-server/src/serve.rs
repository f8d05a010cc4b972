//! `berth serve`: everything in one process.
//!
//! Both listeners are served by berth-proxy's [`Server`] (its limits:
//! header deadline, head size, a process-wide connection cap; graceful
//! shutdown). The main listener runs one single-threaded runtime per
//! thread (`[server] threads`) and dispatches each request before any
//! axum routing: a container's path or host goes straight to that
//! thread's fork of the proxy (the hot path), everything else (API, web
//! app, login) to the axum app, which runs on the main runtime.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use berth_axum::api::{ApiState, api_router};
use berth_fleet::{Fleet, FleetConfig, Stager};
use berth_history::{HistoryConfig, HistoryStore};
use berth_proxy::{
    ActivityRecorder, ClientAddr, HostRouting, PathRouting, Proxy, ProxyBody, ProxyConfig, RouteTable, Routing, Server,
    TableConfig, WaitingPage,
};
use berth_staging::{LocalDirStore, StagingService, StagingUrls, TokenRegistry};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::auth::{Auth, ServerHooks};
use crate::config::{AuthMode, Config, RoutingChoice};

/// Builds the server from `config` and serves until SIGTERM or SIGINT,
/// then shuts down gracefully: stop accepting, close websockets with close
/// frames, let requests in flight finish within `[server]
/// shutdown_grace_secs`, and flush the request history.
///
/// The main listener serves the API, the proxy, the web app and the staged
/// inputs (token-protected). A second listener serves only the staged
/// inputs (token-protected) and data files to containers, which reach the
/// host through the engine's bridge gateway, not through loopback; with a
/// local engine it answers only loopback and the engine's network subnets
/// (see [`crate::peers`]).
///
/// # Errors
///
/// Configuration, engine, database or socket failures, with context.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    raise_open_file_limit(&config);
    let Built { app, staging_app, public_base, proxy, activity } = build(&config).await?;
    let shutdown = proxy.shutdown().clone();
    let limits = config.server.limits();
    let main = Server::with_shutdown(limits.clone(), shutdown.clone());
    let staging = Server::with_shutdown(limits.clone(), shutdown.clone());
    let staging_listener = staging_listener(&config, &public_base).await?;
    let staging_addr = staging_listener.local_addr().context("the staging listener's address")?;
    let runtime = tokio::runtime::Handle::current();
    let threads = config.server.thread_count();
    let serving = main
        .serve_on_threads(config.listen, threads, |_| Dispatch {
            proxy: proxy.fork(),
            app: App { router: app.clone(), runtime: Some(runtime.clone()) },
        })
        .with_context(|| format!("serving on {}", config.listen))?;
    tracing::info!(listen = %config.listen, threads, staging = %public_base, %staging_addr, "berth serving");
    eprintln!("berth is serving on http://{}/ (API at /api/v1, tools at {})", config.listen, tools_at(&config));
    let mut staging_task =
        tokio::spawn(async move { staging.serve(staging_listener, App { router: staging_app, runtime: None }).await });
    let mut failed = None;
    tokio::select! {
        signal = shutdown_signal() => tracing::info!(signal, "shutting down: no new connections; requests in flight may finish"),
        r = &mut staging_task => {
            failed = Some(match r {
                Ok(Ok(())) => anyhow::anyhow!("the staging listener stopped"),
                Ok(Err(e)) => anyhow::Error::new(e).context("serving staged inputs"),
                Err(e) => anyhow::Error::new(e).context("the staging listener's task"),
            });
        }
    }
    shutdown.trigger();
    // Everything below is bounded: the servers by the grace, tunnels by
    // their close wait; the bound here only guards against a stuck peer.
    let bound = limits.shutdown_grace + 2 * berth_proxy::TUNNEL_CLOSE_WAIT + Duration::from_secs(1);
    let drained = tokio::time::timeout(bound, async {
        let joined = tokio::task::spawn_blocking(move || serving.join());
        let (_, joined, staging) = tokio::join!(proxy.tunnels_closed(), joined, async {
            if staging_task.is_finished() { Ok(Ok(())) } else { (&mut staging_task).await }
        });
        if let Ok(Err(e)) = joined {
            tracing::warn!(error = %e, "a serving thread ended with an error");
        }
        if let Ok(Err(e)) = staging {
            tracing::warn!(error = %e, "the staging listener ended with an error");
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(?bound, "connections still open after the shutdown grace; closing them");
    }
    // What was proxied before the shutdown is in the history now.
    activity.flush().await;
    tracing::info!("berth stopped");
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C), naming it.
async fn shutdown_signal() -> &'static str {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops berth gracefully");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => "SIGTERM",
        r = tokio::signal::ctrl_c() => {
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot listen for SIGINT");
                std::future::pending::<()>().await;
            }
            "SIGINT"
        }
    }
}

/// Raises the soft limit on open files to the hard limit: every proxied
/// connection holds two (client and container), so the default soft limit
/// of many systems (1024) would cap berth far below `[server]
/// max_connections`. Warns when even the hard limit is too low.
fn raise_open_file_limit(config: &Config) {
    let wanted = 2 * config.server.max_connections as u64 + 256;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < wanted => tracing::warn!(
            open_files = limit,
            max_connections = config.server.max_connections,
            "the open-file limit allows fewer proxied connections than [server] max_connections (each needs two \
             descriptors); raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower max_connections"
        ),
        Ok(limit) => tracing::debug!(open_files = limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// What the main listener's threads serve: containers' paths and hosts go
/// to the thread's proxy, everything else to the app.
#[derive(Clone)]
struct Dispatch {
    proxy: Proxy<ServerHooks>,
    app: App,
}

impl tower::Service<http::Request<Incoming>> for Dispatch {
    type Response = http::Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Incoming>) -> Self::Future {
        let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok());
        if self.proxy.config().routing.claims(req.uri(), host) {
            let proxy = self.proxy.clone();
            Box::pin(async move { Ok(proxy.handle(req).await) })
        } else {
            self.app.call(req)
        }
    }
}

/// berth's own routes (an axum app), run on `runtime` when given (the
/// main runtime, where the app's background work lives), else inline.
#[derive(Clone)]
struct App {
    router: Router,
    runtime: Option<tokio::runtime::Handle>,
}

impl tower::Service<http::Request<Incoming>> for App {
    type Response = http::Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<Incoming>) -> Self::Future {
        use tower::ServiceExt;
        if let Some(ClientAddr(peer)) = req.extensions().get::<ClientAddr>().copied() {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        }
        let router = self.router.clone();
        let boxed = |resp: http::Response<axum::body::Body>| resp.map(|b| b.map_err(Into::into).boxed_unsync());
        match &self.runtime {
            None => Box::pin(async move { Ok(boxed(router.oneshot(req).await.unwrap_or_else(|e| match e {}))) }),
            Some(runtime) => {
                let task = runtime.spawn(async move { router.oneshot(req).await });
                Box::pin(async move {
                    Ok(match task.await {
                        Ok(Ok(resp)) => boxed(resp),
                        Ok(Err(e)) => match e {},
                        Err(e) => {
                            tracing::error!(error = %e, "a request handler failed");
                            berth_proxy::pages::error(http::StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                                .map(|b| b.map_err(|e| match e {}).boxed_unsync())
                        }
                    })
                })
            }
        }
    }
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

/// What [`build`] makes.
struct Built {
    /// berth's own routes: API, web app, login, staged inputs.
    app: Router,
    /// The app of the staging listener.
    staging_app: Router,
    /// The base URL containers fetch staged files from.
    public_base: String,
    /// The proxy (forked per serving thread).
    proxy: Proxy<ServerHooks>,
    /// Where proxied requests are reported (flushed at shutdown).
    activity: ActivityRecorder,
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
        orphan_grace: config.fleet.orphan_grace_secs.map_or(FleetConfig::default().orphan_grace, Duration::from_secs),
        node_memory_budget_mb: config.fleet.node_memory_budget_mb,
        node_budget_labels: config.fleet.node_budget_labels,
        ..FleetConfig::default()
    };
    let fleet = Arc::new(Fleet::new(manager.clone(), history.clone(), fleet_config).with_stager(stager));
    let report = fleet.recover().await.context("recovering containers")?;
    tracing::info!(adopted = report.adopted.len(), "containers recovered");
    fleet.spawn_culler();
    // Containers found created but too young to judge (a launch of the
    // process before may still have been starting them) are looked at
    // again once the grace has passed.
    fleet.spawn_reaper();

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
        activity: recorder.clone(),
        launches: Default::default(),
        images: config.api.image_policy(),
    };
    let uploads = config.data_dir.join("uploads");
    // Uploads are shared without a login, per user with one.
    let data = crate::web::data_router(uploads.clone(), config.data.dir.clone(), auth.mode() == AuthMode::None);
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
    Ok(Built { app, staging_app, public_base, proxy, activity: recorder })
}

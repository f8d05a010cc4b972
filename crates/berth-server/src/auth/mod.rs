//! People in the server: who is asking, in each `[auth]` mode, for the
//! proxy (an [`Identify`] for [`berth_axum::OwnerHooks`], reading the
//! session cookie or the trusted headers and the peer address from
//! [`ClientAddr`]) and for the API and the web app (a middleware that
//! inserts the [`Identity`]); the login routes (`/auth/...`: OpenID
//! Connect login and callback, logout, hand-off links, the step that
//! carries a session to a container's own host); CSRF tokens for the web
//! app's forms.
//!
//! Modes (see `docs/USERS.md`):
//!
//! - `none`: nobody logs in, nothing is limited.
//! - `header`: identity headers from a trusted proxy; the same headers from
//!   any other peer are refused (403), never believed. Sessions exist for
//!   hand-off links.
//! - `oidc`: berth logs people in with an OpenID Connect provider and keeps
//!   a session (sealed cookie, data in SQLite).
//!
//! Under hostname routing a container's host never gets berth's own
//! cookie (it is host-only); a browser gets a session of its own there,
//! limited to that container, through a one-time ticket: the container's
//! host sends it to `/auth/host` on berth's host, which redirects back to
//! `/.berth-session?ticket=...` on the container's host, which sets the
//! cookie (the proxy's [`Identify::intercept`]).

mod hooks;
mod oidc;
mod session;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_axum::api::PublicUrls;
use berth_axum::{Identify, Identity};
use berth_history::{HistoryStore, TakeOutcome};
use berth_proxy::{ClientAddr, Denied, RouteTable};
use bytes::Bytes;
use cookie::SameSite;
use http_body_util::Full;
use serde::Deserialize;

use crate::config::{AuthMode, Config};
pub use hooks::ServerHooks;
pub use session::{SessionData, Sessions};

/// The path on a container's host that takes a ticket and sets the
/// container host's session cookie.
pub const HOST_SESSION_PATH: &str = "/.berth-session";
/// The cookie holding a login under way.
pub const FLOW_COOKIE: &str = "berth_login";
/// The cookie holding the browser's CSRF nonce.
pub const CSRF_COOKIE: &str = "berth_csrf";

/// The text of `e` and its sources, one line.
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

/// Identity headers from a trusted proxy.
#[derive(Debug)]
struct HeaderAuth {
    trusted: Vec<ipnet::IpNet>,
    user: http::HeaderName,
    groups: http::HeaderName,
    email: http::HeaderName,
}

/// Who the trusted proxy's headers name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    user: String,
    groups: Vec<String>,
    email: Option<String>,
}

/// `email` when it can be an email address (and a header value): 3 to 254
/// characters with an `@`, no spaces or control characters.
fn usable_email(email: &str) -> Option<String> {
    let email = email.trim();
    let ok = (3..=254).contains(&email.len())
        && email.contains('@')
        && !email.chars().any(|c| c.is_control() || c.is_whitespace() || c == ',');
    ok.then(|| email.to_owned())
}

impl HeaderAuth {
    /// The user, groups and email the headers name; `Ok(None)` without them.
    fn identify(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<Option<Named>, Denied> {
        if ![&self.user, &self.groups, &self.email].iter().any(|h| headers.contains_key(*h)) {
            return Ok(None);
        }
        let trusted = peer.is_some_and(|p| {
            let p = p.to_canonical();
            self.trusted.iter().any(|net| net.contains(&p))
        });
        if !trusted {
            tracing::warn!(peer = ?peer, "identity headers from a peer that is not a trusted proxy: refused");
            return Err(Denied::forbidden("identity headers are accepted from berth's trusted proxies only"));
        }
        let user = headers.get(&self.user).and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or_default();
        if user.is_empty() || user.len() > 255 {
            return Err(Denied::forbidden("the authenticating proxy sent no user"));
        }
        let groups = headers
            .get_all(&self.groups)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect();
        let email = headers.get(&self.email).and_then(|v| v.to_str().ok()).and_then(usable_email);
        Ok(Some(Named { user: user.to_owned(), groups, email }))
    }
}

/// Who is asking, in the configured mode, and the login routes' state.
pub struct Auth {
    mode: AuthMode,
    /// berth's sessions.
    pub sessions: Sessions,
    header: Option<HeaderAuth>,
    oidc: Option<oidc::Oidc>,
    admins: HashSet<String>,
    admin_groups: HashSet<String>,
    urls: PublicUrls,
    table: Arc<RouteTable>,
    owner_label: String,
    api_token: Option<String>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("mode", &self.mode).finish_non_exhaustive()
    }
}

/// The path and query of `uri`, for `next`.
fn path_and_query(uri: &http::Uri) -> String {
    uri.path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned())
}

/// `next` when it is a path on this host, else `/`: where berth redirects
/// after a login, a hand-off or a container host's ticket, so never
/// anywhere a browser could read as another origin (see [`is_local_path`]).
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n) if is_local_path(n) => n.to_owned(),
        _ => "/".to_owned(),
    }
}

/// Longest `next` berth redirects to.
const MAX_NEXT: usize = 4096;

/// Whether `next` is a path on this host however a browser reads it.
///
/// Browsers drop tabs and newlines anywhere in a URL, strip leading
/// control characters and spaces, and read `\` as `/`, so `/\t/evil`
/// becomes the scheme-relative `//evil`. Hence only printable ASCII (what
/// a URI's path and query consist of), a leading `/` not followed by `/`
/// or `\`, and no `\` anywhere; and the same again for every
/// percent-decoded form (`/%09/evil`, `/%2F/evil`, `/%252F/evil`), in case
/// anything on the way decodes it.
fn is_local_path(next: &str) -> bool {
    fn plain(s: &str) -> bool {
        let b = s.as_bytes();
        b.first() == Some(&b'/')
            && !matches!(b.get(1), Some(b'/' | b'\\'))
            && !s.chars().any(|c| c.is_control() || c == '\\')
    }
    if next.len() > MAX_NEXT || !next.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    let mut current = next.to_owned();
    // A few rounds of decoding; a form still changing after them is refused.
    for _ in 0..4 {
        if !plain(&current) {
            return false;
        }
        let decoded = percent_decode(&current);
        if decoded == current {
            return true;
        }
        current = decoded;
    }
    false
}

/// `s` with `%XX` escapes decoded (invalid UTF-8 replaced, `+` kept).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn urlencode(s: &str) -> String {
    openidconnect::url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A page of berth's own (escaped `message`).
fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!("<p>{}</p><p><a href=\"/\">berth</a></p>", berth_proxy::pages::escape_html(message));
    (status, crate::web::page(title, &body)).into_response()
}

fn redirect(location: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location.to_owned()), (header::CACHE_CONTROL, "no-store".to_owned())])
        .into_response()
}

/// [`message_page`] as the proxy's response type.
fn message_page_full(status: StatusCode, title: &str, message: &str) -> http::Response<Full<Bytes>> {
    let body = format!("<p>{}</p><p><a href=\"/\">berth</a></p>", berth_proxy::pages::escape_html(message));
    let mut resp = http::Response::new(Full::new(Bytes::from(crate::web::page(title, &body).0)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/html; charset=utf-8"));
    resp.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

/// [`redirect`] as the proxy's response type.
fn redirect_full(location: &str) -> http::Response<Full<Bytes>> {
    let mut resp = http::Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = http::HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

/// The value of `key` in a query string.
fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    openidconnect::url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

impl Auth {
    /// The auth of `config`, its sessions in `store`, ownership read from
    /// `table`'s labels under `owner_label`.
    ///
    /// # Errors
    ///
    /// The cookie key cannot be read or made; the OpenID Connect client
    /// cannot be set up.
    pub fn new(
        config: &Config,
        store: Arc<HistoryStore>,
        table: Arc<RouteTable>,
        owner_label: &str,
    ) -> anyhow::Result<Self> {
        let auth = &config.auth;
        let key_file = auth.key_file.clone().unwrap_or_else(|| config.data_dir.join("session.key"));
        let key = session::load_key(&key_file)?;
        let sessions = Sessions::new(
            key,
            store.clone(),
            auth.cookie_name.clone(),
            config.secure_cookies(),
            Duration::from_secs(auth.session_ttl_secs),
        );
        let urls = config.public_urls();
        let header = match (&auth.header, auth.mode) {
            (Some(h), AuthMode::Header) => Some(HeaderAuth {
                trusted: h.trusted_proxies.clone(),
                user: http::HeaderName::from_bytes(h.user_header.as_bytes())?,
                groups: http::HeaderName::from_bytes(h.groups_header.as_bytes())?,
                email: http::HeaderName::from_bytes(h.email_header.as_bytes())?,
            }),
            _ => None,
        };
        let oidc = match (&auth.oidc, auth.mode) {
            (Some(o), AuthMode::Oidc) => {
                Some(oidc::Oidc::new(o, &format!("{}/auth/callback", urls.base), store.clone())?)
            }
            _ => None,
        };
        Ok(Auth {
            mode: auth.mode,
            sessions,
            header,
            oidc,
            admins: auth.admins.iter().cloned().collect(),
            admin_groups: auth.admin_groups.iter().cloned().collect(),
            urls,
            table,
            owner_label: owner_label.to_owned(),
            api_token: config.api.token.clone(),
        })
    }

    /// The mode.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The identity of `user` in `groups`, with `email`, limited to `only`.
    fn identity(
        &self,
        user: String,
        groups: Vec<String>,
        email: Option<String>,
        only: Option<Vec<String>>,
    ) -> Identity {
        let admin = self.admins.contains(&user) || groups.iter().any(|g| self.admin_groups.contains(g));
        let who = Identity::new(user).with_admin(admin).with_groups(groups).with_email(email);
        match only {
            Some(only) => who.only(only),
            None => who,
        }
    }

    /// Who sent a request with `headers` from `peer`: the trusted headers
    /// (mode `header`), else the session cookie (modes `header`, `oidc`).
    ///
    /// # Errors
    ///
    /// A 403 for identity headers from a peer that is not a trusted proxy.
    pub async fn identify(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<Option<Identity>, Denied> {
        if self.mode == AuthMode::None {
            return Ok(None);
        }
        if let Some(h) = &self.header
            && let Some(named) = h.identify(headers, peer)?
        {
            return Ok(Some(self.identity(named.user, named.groups, named.email, None)));
        }
        Ok(self.session(headers).await.map(|(_, who, _)| who))
    }

    /// The request's session, one made for the host it is sent to (a
    /// container's own, or berth's): id, identity, expiry.
    async fn session(&self, headers: &HeaderMap) -> Option<(String, Identity, SystemTime)> {
        let host = self.container_host(headers.get(header::HOST).and_then(|h| h.to_str().ok()));
        let (id, data, expires) = self.sessions.find(headers, host).await?;
        Some((id, self.identity(data.user, data.groups, data.email, data.only), expires))
    }

    /// Whether `host` (a `Host` header) names a container's host.
    fn container_host<'h>(&self, host: Option<&'h str>) -> Option<&'h str> {
        let suffix = self.urls.host_suffix.as_deref()?;
        let host = host?;
        let name = host.split(':').next()?.strip_suffix(suffix)?.strip_suffix('.')?;
        (!name.is_empty() && !name.contains('.')).then_some(name)
    }

    /// Where a browser without a session goes to log in and return to `next`.
    fn login_url(&self, next: &str) -> String {
        format!("/auth/login?next={}", urlencode(next))
    }

    /// The not-found page of container `name` (as the proxy gives it).
    fn not_found(&self, name: &str) -> Response {
        berth_proxy::pages::not_found(name, false).map(axum::body::Body::new).into_response()
    }
}

/// The proxy's view of [`Auth`]: an [`Identify`] for [`berth_axum::OwnerHooks`].
#[derive(Debug, Clone)]
pub struct ProxyIdentify(pub Arc<Auth>);

#[async_trait]
impl Identify for ProxyIdentify {
    async fn identify(&self, request: &http::request::Parts) -> Result<Option<Identity>, Denied> {
        let peer = request.extensions.get::<ClientAddr>().map(|c| c.0.ip());
        self.0.identify(&request.headers, peer).await
    }

    fn intercept(&self, request: &http::request::Parts, container: &str) -> Option<http::Response<Full<Bytes>>> {
        let auth = &self.0;
        if request.uri.path() != HOST_SESSION_PATH || auth.mode == AuthMode::None {
            return None;
        }
        let host = request.headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if auth.container_host(host) != Some(container) {
            return None;
        }
        let query = request.uri.query();
        let Some(id) = query_value(query, "ticket").and_then(|t| auth.sessions.take_ticket(&t, container)) else {
            return Some(message_page_full(
                StatusCode::FORBIDDEN,
                "sign-in link not valid",
                "This sign-in link has been used or has expired. Open the tool again from berth.",
            ));
        };
        let mut resp = redirect_full(&local_path(query_value(query, "next").as_deref()));
        resp.headers_mut().insert(header::SET_COOKIE, auth.sessions.session_cookie(&id));
        Some(resp)
    }

    fn login_page(
        &self,
        request: &http::request::Parts,
        container: &str,
        json: bool,
    ) -> Option<http::Response<Full<Bytes>>> {
        let auth = &self.0;
        let upgrade = request.headers.contains_key(header::UPGRADE);
        if json || upgrade || request.method != http::Method::GET {
            return None;
        }
        let host = request.headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let next = path_and_query(&request.uri);
        if auth.container_host(host) == Some(container) {
            // A container's host has no session of berth's host: fetch one.
            let url = format!("{}/auth/host?container={container}&next={}", auth.urls.base, urlencode(&next));
            return Some(redirect_full(&url));
        }
        match auth.mode {
            AuthMode::Oidc => Some(redirect_full(&auth.login_url(&next))),
            _ => None,
        }
    }
}

/// The middleware of berth's own routes (API, web app, `/auth`): puts the
/// caller's [`Identity`] into the request, refuses identity headers from
/// untrusted peers, and sends browsers without a session to the login (or
/// answers 401) where a user is needed. Lets `/healthz` and the staging
/// paths (`/_berth/`) through untouched, and everything in mode `none`.
/// (A client's own `X-Berth-User`/`X-Berth-Groups` are no concern here:
/// berth's routes never read them, and the proxy strips them from every
/// proxied request.)
pub async fn identity_middleware(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if path == "/healthz" || path.starts_with("/_berth/") || auth.mode == AuthMode::None {
        return next.run(req).await;
    }
    let peer = req
        .extensions()
        .get::<ClientAddr>()
        .map(|c| c.0.ip())
        .or_else(|| req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip()));
    let who = match auth.identify(req.headers(), peer).await {
        Ok(who) => who,
        Err(denied) => return message_page(denied.status, "refused", &denied.message),
    };
    let api = path.starts_with("/api/") || path == "/metrics";
    let open = path.starts_with("/auth/");
    match who {
        Some(who) => {
            req.extensions_mut().insert(who);
        }
        None if open => {}
        // The API's bearer check decides for callers with a token.
        None if api
            && auth.api_token.is_some()
            && req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("Bearer ")) => {}
        None if api => {
            let body = serde_json::json!({"error": "log in, or give the service's bearer token"});
            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
        None => {
            if auth.mode == AuthMode::Oidc && req.method() == http::Method::GET {
                return redirect(&auth.login_url(&path_and_query(req.uri())));
            }
            return message_page(
                StatusCode::UNAUTHORIZED,
                "log in",
                "berth does not know who you are: log in through the authenticating proxy in front of it.",
            );
        }
    }
    next.run(req).await
}

/// The browser's CSRF nonce (from its cookie) and, when it had none, the
/// `Set-Cookie` value of a new one.
pub fn csrf_nonce(auth: &Auth, headers: &HeaderMap) -> (String, Option<http::HeaderValue>) {
    let nonce = session::cookie_values(headers, CSRF_COOKIE)
        .find(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()));
    match nonce {
        Some(n) => (n, None),
        None => {
            let n = session::random_hex();
            let set = auth.sessions.set_cookie(
                CSRF_COOKIE,
                &n,
                false,
                Some(Duration::from_secs(366 * 24 * 3600)),
                "/",
                SameSite::Strict,
            );
            (n, Some(set))
        }
    }
}

/// Whether a form's `token` is right for the browser (its CSRF cookie)
/// and `user` (`""` without a login).
pub fn csrf_ok(auth: &Auth, headers: &HeaderMap, user: &str, token: &str) -> bool {
    session::cookie_values(headers, CSRF_COOKIE).any(|nonce| auth.sessions.csrf_ok(&nonce, user, token))
}

/// The CSRF token for forms shown to `user` in a browser with `nonce`.
pub fn csrf_token(auth: &Auth, nonce: &str, user: &str) -> String {
    auth.sessions.csrf_token(nonce, user)
}

/// The 403 page of a form without a valid CSRF token.
pub fn csrf_refused() -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "form refused",
        "This form did not come from berth's own page (its CSRF token is missing or wrong). Reload the page and try again.",
    )
}

/// Issues hand-off links (the API's [`berth_axum::api::HandOff`]).
#[derive(Debug, Clone)]
pub struct Links(pub Arc<Auth>);

/// What a hand-off link stands for.
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
struct LinkData {
    user: String,
    container: String,
}

#[async_trait]
impl berth_axum::api::HandOff for Links {
    async fn link(&self, user: &str, container: &str, ttl: Duration) -> Result<String, String> {
        let token = session::random_hex();
        let data = serde_json::to_string(&LinkData { user: user.to_owned(), container: container.to_owned() })
            .map_err(|e| e.to_string())?;
        self.0
            .sessions_store()
            .put_single_use(&session::hash(&token), &data, SystemTime::now() + ttl)
            .await
            .map_err(|e| error_chain(&e))?;
        Ok(format!("{}/auth/link/{token}", self.0.urls.base))
    }
}

impl Auth {
    fn sessions_store(&self) -> &HistoryStore {
        self.sessions.store()
    }
}

/// The `/auth` routes.
pub fn auth_router(auth: Arc<Auth>) -> Router {
    Router::new()
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout))
        .route("/auth/link/{token}", get(link))
        .route("/auth/host", get(host))
        .with_state(auth)
}

#[derive(Debug, Default, Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: Option<String>,
}

/// `GET /auth/login?next=...`: to the provider (503 when it cannot be reached).
async fn login(State(auth): State<Arc<Auth>>, Query(q): Query<NextQuery>) -> Response {
    let Some(oidc) = &auth.oidc else {
        return message_page(
            StatusCode::NOT_FOUND,
            "no login here",
            "This berth does not log people in itself: its users come through an authenticating proxy.",
        );
    };
    let next = local_path(q.next.as_deref());
    match oidc.start(next).await {
        Ok((url, flow)) => {
            let text = serde_json::to_string(&flow).unwrap_or_default();
            let cookie =
                auth.sessions.set_cookie(FLOW_COOKIE, &text, true, Some(oidc::FLOW_TTL), "/auth", SameSite::Lax);
            let mut resp = redirect(&url);
            resp.headers_mut().insert(header::SET_COOKIE, cookie);
            resp
        }
        Err(oidc::LoginError::Unavailable(e) | oidc::LoginError::Refused(e)) => unavailable(oidc.issuer(), &e),
    }
}

fn unavailable(issuer: &str, error: &str) -> Response {
    let mut resp = message_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "identity provider unavailable",
        &format!(
            "The identity provider at {issuer} cannot be reached, so berth cannot log you in now. \
             People who are logged in go on working. Try again in a while. ({error})"
        ),
    );
    resp.headers_mut().insert(header::RETRY_AFTER, http::HeaderValue::from_static("30"));
    resp
}

#[derive(Debug, Default, Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// `GET /auth/callback`: the provider's answer; a session and on to `next`.
async fn callback(State(auth): State<Arc<Auth>>, headers: HeaderMap, Query(q): Query<CallbackQuery>) -> Response {
    let Some(oidc) = &auth.oidc else { return message_page(StatusCode::NOT_FOUND, "no login here", "no login here") };
    let refused = |message: &str| message_page(StatusCode::FORBIDDEN, "login refused", message);
    if let Some(error) = &q.error {
        let detail = q.error_description.as_deref().unwrap_or("");
        return refused(&format!("The identity provider did not log you in: {error} {detail}"));
    }
    let flow: Option<oidc::Flow> = session::cookie_values(&headers, FLOW_COOKIE)
        .find_map(|v| auth.sessions.open(FLOW_COOKIE, &v))
        .and_then(|text| serde_json::from_str(&text).ok());
    let Some(flow) = flow else {
        return refused(
            "This login is not under way in this browser (it expired, or was completed already). Start again.",
        );
    };
    let (Some(code), Some(state)) = (q.code.as_deref(), q.state.as_deref()) else {
        return refused("The identity provider's answer has no code or state.");
    };
    let logged_in = match oidc.finish(&flow, code, state).await {
        Ok(l) => l,
        Err(oidc::LoginError::Unavailable(e)) => return unavailable(oidc.issuer(), &e),
        Err(oidc::LoginError::Refused(e)) => return refused(&format!("Login refused: {e}.")),
    };
    let data = SessionData {
        user: logged_in.user.clone(),
        groups: logged_in.groups,
        email: logged_in.email,
        only: None,
        host: None,
    };
    let id = match auth.sessions.create(&data).await {
        Ok((id, _)) => id,
        Err(e) => return message_page(StatusCode::INTERNAL_SERVER_ERROR, "error", &error_chain(&e)),
    };
    // A previous session of this browser ends: a login starts afresh.
    if let Some((old, ..)) = auth.sessions.find(&headers, None).await {
        auth.sessions.delete(&old).await;
    }
    tracing::info!(user = %logged_in.user, "logged in");
    let mut resp = redirect(&local_path(Some(&flow.next)));
    resp.headers_mut().append(header::SET_COOKIE, auth.sessions.session_cookie(&id));
    resp.headers_mut()
        .append(header::SET_COOKIE, auth.sessions.set_cookie(FLOW_COOKIE, "", false, None, "/auth", SameSite::Lax));
    resp
}

#[derive(Debug, Default, Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /auth/logout` (with the CSRF token): the session ends.
async fn logout(
    State(auth): State<Arc<Auth>>,
    headers: HeaderMap,
    who: Option<axum::Extension<Identity>>,
    axum::extract::Form(form): axum::extract::Form<LogoutForm>,
) -> Response {
    let user = who.as_ref().map(|w| w.0.user.as_str()).unwrap_or("");
    if !csrf_ok(&auth, &headers, user, &form.csrf) {
        return csrf_refused();
    }
    if let Some((id, ..)) = auth.sessions.find(&headers, None).await {
        auth.sessions.delete(&id).await;
    }
    let mut resp = message_page(StatusCode::OK, "logged out", "You are logged out of berth.");
    if auth.mode == AuthMode::Oidc {
        resp = (
            StatusCode::OK,
            crate::web::page(
                "logged out",
                "<p>You are logged out of berth.</p><p><a href=\"/auth/login?next=/\">Log in again</a></p>",
            ),
        )
            .into_response();
    }
    resp.headers_mut().insert(header::SET_COOKIE, auth.sessions.clear_session_cookie());
    resp
}

/// `GET /auth/link/{token}`: a hand-off link. Valid: a session for its
/// user limited to its container, and on to the container. Expired, used
/// or tampered with: a 403 page saying which.
async fn link(State(auth): State<Arc<Auth>>, headers: HeaderMap, Path(token): Path<String>) -> Response {
    let refused = |message: &str| message_page(StatusCode::FORBIDDEN, "link not valid", message);
    if auth.mode == AuthMode::None {
        return refused("This berth has no logins, so it has no hand-off links.");
    }
    let well_formed = token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit());
    let outcome = if well_formed {
        match auth.sessions_store().take_single_use(&session::hash(&token), SystemTime::now()).await {
            Ok(o) => o,
            Err(e) => return message_page(StatusCode::INTERNAL_SERVER_ERROR, "error", &error_chain(&e)),
        }
    } else {
        TakeOutcome::Unknown
    };
    let data = match outcome {
        TakeOutcome::Taken(text) => match serde_json::from_str::<LinkData>(&text) {
            Ok(d) => d,
            Err(_) => return refused("This link is not valid."),
        },
        TakeOutcome::Expired => {
            return refused("This link has expired. Ask the application that sent you for a new one.");
        }
        TakeOutcome::Used(_) => {
            return refused(
                "This link was used already: a link works once. Ask the application that sent you for a new one.",
            );
        }
        TakeOutcome::Unknown => return refused("This link is not valid (it was never issued, or it was altered)."),
    };
    // The browser keeps a session of the same user, widened by this
    // container; any other session is replaced. `/auth/host` then sends
    // it on (straight there under path routing, by ticket to a
    // container's host).
    tracing::info!(user = %data.user, container = %data.container, "hand-off link used");
    let mut resp = redirect(&format!("/auth/host?container={}&next=/", urlencode(&data.container)));
    let current = auth.session(&headers).await;
    if matches!(&current, Some((_, who, _)) if who.user == data.user && who.only.is_none()) {
        return resp;
    }
    let mut only = vec![data.container.clone()];
    if let Some((old, who, _)) = &current {
        if who.user == data.user {
            only.extend(who.only.iter().flatten().filter(|c| **c != data.container).cloned());
        }
        auth.sessions.delete(old).await;
    }
    let session = SessionData { user: data.user, groups: Vec::new(), email: None, only: Some(only), host: None };
    match auth.sessions.create(&session).await {
        Ok((id, _)) => {
            resp.headers_mut().insert(header::SET_COOKIE, auth.sessions.session_cookie(&id));
            resp
        }
        Err(e) => message_page(StatusCode::INTERNAL_SERVER_ERROR, "error", &error_chain(&e)),
    }
}

fn host_ticket_url(container_url: &str, ticket: &str, next: &str) -> String {
    format!("{}{}?ticket={ticket}&next={}", container_url.trim_end_matches('/'), HOST_SESSION_PATH, urlencode(next))
}

/// Where container `name` is published, from its labels.
async fn placed(auth: &Auth, name: &str) -> Option<berth_axum::api::Placement> {
    let labels = auth.table.labels_or_fetch(name).await?;
    let scheme = auth.table.manager().label_scheme().clone();
    let hints = berth_manager::RouteHints::from_labels(&scheme, &labels);
    auth.urls.placed(name, &hints)
}

#[derive(Debug, Default, Deserialize)]
struct HostQuery {
    #[serde(default)]
    container: String,
    #[serde(default)]
    next: Option<String>,
}

/// `GET /auth/host?container=C&next=P`: a session for container C's own
/// host, limited to C, handed over by a one-time ticket.
async fn host(
    State(auth): State<Arc<Auth>>,
    who: Option<axum::Extension<Identity>>,
    uri: http::Uri,
    Query(q): Query<HostQuery>,
) -> Response {
    let Some(axum::Extension(who)) = who else {
        if auth.mode == AuthMode::Oidc {
            return redirect(&auth.login_url(&path_and_query(&uri)));
        }
        return message_page(StatusCode::UNAUTHORIZED, "log in", "berth does not know who you are.");
    };
    let name = q.container;
    if berth_manager::validate_name(&name).is_err() {
        return auth.not_found(&name);
    }
    let owner = auth.table.labels_or_fetch(&name).await.and_then(|l| l.get(&auth.owner_label).cloned());
    if !(who.may_reach(&name) && (who.admin || owner.as_deref() == Some(who.user.as_str()))) {
        return auth.not_found(&name);
    }
    let next = local_path(q.next.as_deref());
    match placed(&auth, &name).await {
        Some(p) if p.mode == berth_manager::RoutingMode::Host => {
            let data = SessionData {
                user: who.user.clone(),
                groups: who.groups.clone(),
                email: who.email.clone(),
                only: Some(vec![name.clone()]),
                host: Some(name.clone()),
            };
            let id = match auth.sessions.create(&data).await {
                Ok((id, _)) => id,
                Err(e) => return message_page(StatusCode::INTERNAL_SERVER_ERROR, "error", &error_chain(&e)),
            };
            let ticket = auth.sessions.issue_ticket(&id, &name);
            redirect(&host_ticket_url(&p.url, &ticket, &next))
        }
        Some(p) => redirect(&format!("{}{}", p.path.trim_end_matches('/'), next)),
        None => auth.not_found(&name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_host() {
        for good in [
            "/",
            "/docker/a/?x=1",
            "/docker/a/files/my%20data.csv",
            "/lab?token=a+b&x=%2Fy",
            "/a/..//b",
            "/./x",
            "/ui/wait/v1?launch=3",
            "/caf%C3%A9",
        ] {
            assert_eq!(local_path(Some(good)), good, "{good:?} is a local path");
        }
        let long = format!("/{}", "a".repeat(MAX_NEXT));
        let refused: &[&str] = &[
            "",
            "x",
            "evil.example",
            "//evil.example/",
            "///evil.example",
            "https://evil.example/",
            "http:/evil.example",
            "javascript:alert(1)",
            "/\\evil.example",
            "\\\\evil.example",
            "/x\\y",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/evil.example",
            "/\u{0}/evil.example",
            "/\u{b}/evil.example",
            "/\u{c}/evil.example",
            "/\u{1f}/evil.example",
            "/\u{7f}/evil.example",
            "/\u{85}/evil.example",
            " //evil.example",
            "\t//evil.example",
            "/ /evil.example",
            "/\u{3000}/evil.example",
            "/%09/evil.example",
            "/%0a/evil.example",
            "/%0D%0A/evil.example",
            "/%00",
            "/%2F/evil.example",
            "/%2f/evil.example",
            "/%5C/evil.example",
            "/%5c%5cevil.example",
            "/x%5Cy",
            "/%252F/evil.example",
            "/%25252F/evil.example",
            "/%2525252525252F/evil.example",
            "/%C2%85/evil.example",
            &long,
        ];
        for bad in refused.iter().copied().map(Some).chain([None]) {
            assert_eq!(local_path(bad), "/", "{bad:?} is refused");
        }
    }

    #[test]
    fn headers_count_only_from_trusted_proxies() {
        let h = HeaderAuth {
            trusted: vec!["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()],
            user: http::HeaderName::from_static("x-forwarded-user"),
            groups: http::HeaderName::from_static("x-forwarded-groups"),
            email: http::HeaderName::from_static("x-forwarded-email"),
        };
        let mut headers = HeaderMap::new();
        assert_eq!(h.identify(&headers, Some("127.0.0.2".parse().unwrap())), Ok(None));
        headers.insert("x-forwarded-user", "ann".parse().unwrap());
        headers.insert("x-forwarded-groups", "a, b,".parse().unwrap());
        let ok = h.identify(&headers, Some("127.0.0.1".parse().unwrap())).unwrap().unwrap();
        let named = |email: Option<&str>| Named {
            user: "ann".to_owned(),
            groups: vec!["a".to_owned(), "b".to_owned()],
            email: email.map(str::to_owned),
        };
        assert_eq!(ok, named(None), "the email header is optional");
        headers.insert("x-forwarded-email", " ann@example.org ".parse().unwrap());
        let ok = h.identify(&headers, Some("127.0.0.1".parse().unwrap())).unwrap().unwrap();
        assert_eq!(ok, named(Some("ann@example.org")));
        for unusable in ["", "ann", "ann @example.org", "a@b,c@d"] {
            headers.insert("x-forwarded-email", unusable.parse().unwrap());
            let ok = h.identify(&headers, Some("127.0.0.1".parse().unwrap())).unwrap().unwrap();
            assert_eq!(ok, named(None), "{unusable:?}");
        }
        // The email header alone from an untrusted peer is refused too.
        let mut only_email = HeaderMap::new();
        only_email.insert("x-forwarded-email", "root@example.org".parse().unwrap());
        assert_eq!(
            h.identify(&only_email, Some("10.1.2.3".parse().unwrap())).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        headers.insert("x-forwarded-email", "ann@example.org".parse().unwrap());
        assert!(h.identify(&headers, Some("::ffff:127.0.0.1".parse().unwrap())).unwrap().is_some(), "mapped v4");
        for peer in [Some("127.0.0.2"), Some("10.1.2.3"), None] {
            let e = h.identify(&headers, peer.map(|p| p.parse().unwrap())).unwrap_err();
            assert_eq!(e.status, StatusCode::FORBIDDEN);
        }
    }
}

//! The web app: server-rendered HTML, no external resources, works
//! without JavaScript and better with it. Three pages:
//!
//! - **Running** (`/`): the caller's containers (admins: all) with tool,
//!   owner, age, memory, last activity, status and readiness; each with
//!   its logs (`/ui/logs/{name}`, followed in the page), request history
//!   (`/ui/history/{name}`, paged) and a kill button that asks first. With
//!   JavaScript the rows are fetched again every few seconds
//!   (`/ui/running`, see [`running_rows`] for why polling).
//! - **Launch** (`/ui/launch`): the registry's tools as cards, each with
//!   its launch form folded; data files from the caller's uploads, the
//!   data directory or URLs; parameters as JSON; "show input" previews
//!   the document. Fields are checked in the browser and again on the
//!   server, which answers a bad form with the page again and the errors
//!   beside their fields. Uploads go to `/ui/upload`.
//! - **Fleet** (`/ui/fleet`): the memory budget used, containers per tool,
//!   and the evictions and idle culls berth did lately.
//!
//! A launch from the form goes on in the background while the browser
//! waits on `/ui/wait/{name}`, a please-wait page that follows the
//! launch-progress stream `/ui/events/{name}` and then opens the tool.
//!
//! With a login mode each person sees and manages their own containers
//! (admins all; someone else's is exactly a missing one), launches as
//! themselves, sees their limits, and has uploads of their own (see
//! [`uploads`]). Every form that changes something carries a CSRF token
//! (an HMAC of the browser's `berth_csrf` cookie and the user), checked on
//! submission, beside the session cookie's `SameSite=Lax`.

mod page;
mod uploads;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Form, Multipart, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use berth_axum::Identity;
use berth_axum::api::{ApiState, LaunchRequest, ToolDef, input_document, launch_recorded};
use berth_fleet::{Fleet, RemovalReason};
use berth_history::HistoryQuery;
use berth_manager::{ContainerInfo, ContainerState, ListFilter, LogOptions};
use berth_proxy::Lookup;
use berth_proxy::pages::escape_html as esc;

use self::page::{Nav, ago, span, time_el};
use self::uploads::UploadDir;
pub use self::uploads::{valid_file_name, valid_user_dir};
use crate::config::AuthMode;

/// The launch-progress stream of container `{name}`: the route, and the
/// [`berth_proxy::WaitingPage::events_url`] template (both write the name
/// as `{name}`).
pub const EVENTS_URL: &str = "/ui/events/{name}";

/// How often the running list's script fetches the rows again, in ms.
const REFRESH_MS: u32 = 3000;
/// How long the container list behind the running list's refreshes is
/// shared by all of one fleet's pollers.
const SNAPSHOT_TTL: Duration = Duration::from_secs(1);
/// Log lines a logs page shows (and its followed stream starts with).
const LOG_LINES: usize = 500;
/// Log streams followed at once, server-wide; more are refused with 503.
const MAX_LOG_FOLLOWS: usize = 64;
/// History entries per page.
const HISTORY_PAGE: usize = 50;
/// History pages one can go back (the most recent entries only).
const HISTORY_PAGES: usize = 100;

/// What the pages need.
#[derive(Clone)]
pub struct WebState {
    /// The API's state (fleet, registry, table, history).
    pub api: ApiState,
    /// Where uploads go (served with the data files): shared without a
    /// login mode, a directory per user with one (see [`uploads`]).
    pub uploads: PathBuf,
    /// Read-only shared data files, when configured.
    pub data: Option<PathBuf>,
    /// Base URL containers fetch data files from (`.../_berth/data`).
    pub data_base: String,
    /// Largest upload in bytes.
    pub max_upload: usize,
    /// Who is asking, CSRF tokens.
    pub auth: Arc<crate::auth::Auth>,
}

/// The caller, as the identity middleware found them.
type Who = Option<Extension<Identity>>;

fn who(w: &Who) -> Option<&Identity> {
    w.as_ref().map(|Extension(i)| i)
}

/// The web app's routes.
pub fn web_router(state: WebState) -> Router {
    Router::new()
        .route("/", get(running))
        .route("/ui/running", get(running_rows))
        .route("/ui/launch", get(launch_page).post(launch))
        .route("/ui/fleet", get(fleet))
        .route("/ui/kill/{name}", post(kill))
        .route("/ui/logs/{name}", get(logs))
        .route("/ui/logs/{name}/text", get(logs_text))
        .route("/ui/history/{name}", get(history))
        .route(EVENTS_URL, get(events))
        .route("/ui/wait/{name}", get(wait))
        .route("/ui/upload", post(upload))
        .route("/ui/upload/delete", post(delete_upload))
        .layer(axum::extract::DefaultBodyLimit::max(state.max_upload))
        .with_state(state)
}

/// A page outside the web app's frame (berth's login, logout and error
/// pages, which container hosts serve too): `title` (escaped) and `body`
/// (HTML), in the app's style.
pub(crate) fn page(title: &str, body: &str) -> axum::response::Html<String> {
    axum::response::Html(page::plain(title, body))
}

/// One request's view: who asks, and the CSRF token of its forms.
struct Ctx<'a> {
    me: Option<&'a Identity>,
    csrf: String,
    /// A new CSRF cookie, when the browser had none.
    set_cookie: Option<HeaderValue>,
}

impl<'a> Ctx<'a> {
    fn new(state: &WebState, headers: &HeaderMap, me: Option<&'a Identity>) -> Self {
        let (nonce, set_cookie) = crate::auth::csrf_nonce(&state.auth, headers);
        let csrf = crate::auth::csrf_token(&state.auth, &nonce, me.map_or("", |i| i.user.as_str()));
        Ctx { me, csrf, set_cookie }
    }

    /// The hidden CSRF field of a form.
    fn field(&self) -> String {
        format!("<input type=hidden name=csrf value=\"{}\">", self.csrf)
    }

    /// A framed page with forms (and the cookie their token needs).
    fn page(&self, status: StatusCode, nav: Nav, title: &str, body: &str) -> Response {
        let mut resp = page::respond(status, page::framed(nav, self.me, &self.field(), title, body));
        if let Some(set) = &self.set_cookie {
            resp.headers_mut().insert(header::SET_COOKIE, set.clone());
        }
        resp
    }
}

/// A framed page with no forms (so the same for every request: an error
/// page says nothing about who else asked).
fn bare(status: StatusCode, me: Option<&Identity>, title: &str, body: &str) -> Response {
    page::respond(status, page::framed(Nav::Running, me, "", title, body))
}

fn error_page(status: StatusCode, me: Option<&Identity>, message: &str) -> Response {
    bare(status, me, "error", &format!("<p>{}</p><p><a href=\"/\">back to the running list</a></p>", esc(message)))
}

/// The page for a container the caller may not see, or that is missing.
fn no_such(me: Option<&Identity>, name: &str) -> Response {
    error_page(StatusCode::NOT_FOUND, me, &format!("there is no tool named {name:?}"))
}

/// Whether people log in (then uploads are per user).
fn logins(state: &WebState) -> bool {
    state.auth.mode() != AuthMode::None
}

/// Whether the caller may see container `name` (everyone may without a
/// login mode).
async fn may_see(state: &WebState, who: Option<&Identity>, name: &str) -> bool {
    let Some(who) = who else { return true };
    let labels = state.api.table.labels_or_fetch(name).await.unwrap_or_default();
    who.may_see(name, labels.get(&state.api.owner_label).map(String::as_str))
}

fn owner_of<'c>(state: &WebState, c: &'c ContainerInfo) -> Option<&'c str> {
    c.labels.get(&state.api.owner_label).map(String::as_str)
}

/// Whether the caller sees everything (no login mode, or an admin with no
/// limit to some containers).
fn sees_all(me: Option<&Identity>) -> bool {
    me.is_none_or(|i| i.admin && i.only.is_none())
}

/// The containers the caller may see, by name: listed now, or (`shared`)
/// from a list at most [`SNAPSHOT_TTL`] old shared by all callers.
async fn visible_containers(state: &WebState, me: Option<&Identity>, shared: bool) -> Vec<ContainerInfo> {
    let listed = if shared {
        snapshot(&state.api.fleet).await
    } else {
        Arc::new(state.api.fleet.manager().list(&ListFilter::all()).await.unwrap_or_default())
    };
    let mut list: Vec<ContainerInfo> =
        listed.iter().filter(|c| me.is_none_or(|i| i.may_see(&c.name, owner_of(state, c)))).cloned().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    list
}

/// Container lists of live fleets, with when they were read.
type Snapshots = Vec<(Weak<Fleet>, Instant, Arc<Vec<ContainerInfo>>)>;
static SNAPSHOTS: Mutex<Snapshots> = Mutex::new(Vec::new());

/// `fleet`'s containers as listed at most [`SNAPSHOT_TTL`] ago: however
/// many browsers refresh their lists, the engine is asked about once a
/// second.
async fn snapshot(fleet: &Arc<Fleet>) -> Arc<Vec<ContainerInfo>> {
    {
        let mut all = SNAPSHOTS.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|(f, _, _)| f.strong_count() > 0);
        let mine = all.iter().find(|(f, at, _)| f.as_ptr() == Arc::as_ptr(fleet) && at.elapsed() < SNAPSHOT_TTL);
        if let Some((_, _, list)) = mine {
            return list.clone();
        }
    }
    let list = Arc::new(fleet.manager().list(&ListFilter::all()).await.unwrap_or_default());
    let mut all = SNAPSHOTS.lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|(f, _, _)| f.as_ptr() != Arc::as_ptr(fleet));
    all.push((Arc::downgrade(fleet), Instant::now(), list.clone()));
    list
}

/// The last proxied activity of every container (none without a history).
async fn last_activity(state: &WebState) -> HashMap<String, SystemTime> {
    match &state.api.history {
        Some(h) => h.last_activity_all().await.unwrap_or_default(),
        None => HashMap::new(),
    }
}

/// The limits that apply to the caller, in words.
fn limits_line(state: &WebState, me: Option<&Identity>, containers: &[ContainerInfo]) -> String {
    let mut limits = Vec::new();
    if let (Some(me), Some(max)) = (me, state.api.fleet.config().max_per_user) {
        let mine = containers.iter().filter(|c| owner_of(state, c) == Some(me.user.as_str())).count();
        limits.push(format!("you run {mine} of at most {max} containers (max_per_user)"));
    }
    if me.is_some() {
        for tool in state.api.registry.tools.iter().filter(|t| t.max_per_user.is_some()) {
            limits.push(format!("{}: at most {} per user", esc(&tool.name), tool.max_per_user.unwrap_or_default()));
        }
    }
    if limits.is_empty() { String::new() } else { format!("<p class=limits>Limits: {}.</p>", limits.join("; ")) }
}

// ---------------------------------------------------------------- Running

async fn running(
    State(state): State<WebState>,
    headers: HeaderMap,
    w: Who,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let me = who(&w);
    let ctx = Ctx::new(&state, &headers, me);
    let containers = visible_containers(&state, me, false).await;
    // Read your writes: the requests just made to a tool count.
    state.api.activity.flush().await;
    let rows = rows_html(&state, &ctx, &containers, &last_activity(&state).await);
    let notice = match q.get("killed") {
        Some(name) => format!("<p class=notice role=status>{} was killed.</p>", esc(name)),
        None => String::new(),
    };
    let count = match containers.len() {
        0 => "Nothing is running.".to_owned(),
        1 => "1 container.".to_owned(),
        n => format!("{n} containers."),
    };
    let body = format!(
        "{notice}{limits}<p class=hint><span id=running-count>{count}</span> <a href=\"/ui/launch\">Launch a tool</a>.</p>\
         <div class=scroll><table class=list><caption class=sr-only>{caption}</caption><thead><tr>\
         <th scope=col>Name</th><th scope=col>Tool</th><th scope=col>Owner</th><th scope=col>Age</th>\
         <th scope=col class=num>Memory</th><th scope=col>Last activity</th><th scope=col>Status</th>\
         <th scope=col>Ready</th><th scope=col><span class=sr-only>Actions</span></th></tr></thead>\
         <tbody id=running data-live=\"/ui/running\" data-every=\"{REFRESH_MS}\">{rows}</tbody></table></div>\
         <p class=hint id=live-status role=status></p>\
         <noscript><p class=hint>This list is as of loading the page: <a href=\"/\">reload</a> for news.</p></noscript>",
        limits = limits_line(&state, me, &containers),
        caption = if sees_all(me) { "Running containers" } else { "Your containers" },
    );
    ctx.page(StatusCode::OK, Nav::Running, "Running", &body)
}

/// The running list's rows alone, for its script to fetch every few
/// seconds (with `If-None-Match`: an unchanged list is a 304).
///
/// Polling rather than a list-wide event stream, because it is the more
/// robust of the two here: each open list would hold a connection for as
/// long as it is open, counted against the server's connection cap and
/// the browser's six connections per host (which the please-wait page
/// and log following use already), and held back by buffering proxies in
/// front of berth; a poll needs no reconnection or resumption after a
/// restart; it sees every change whoever made it (API, culler, eviction,
/// another tab), filtered by owner by the same code as the page. Its cost
/// is bounded: all pollers share one container list per second
/// ([`snapshot`]), hidden tabs do not poll, unchanged lists are 304s.
async fn running_rows(State(state): State<WebState>, headers: HeaderMap, w: Who) -> Response {
    let me = who(&w);
    let ctx = Ctx::new(&state, &headers, me);
    let containers = visible_containers(&state, me, true).await;
    let rows = rows_html(&state, &ctx, &containers, &last_activity(&state).await);
    let etag = {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(rows.as_bytes());
        let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        format!("\"{hex}\"")
    };
    let fresh = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str());
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], rows).into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Some(set) = ctx.set_cookie {
        h.insert(header::SET_COOKIE, set);
    }
    resp
}

/// The running list's rows.
fn rows_html(
    state: &WebState,
    ctx: &Ctx<'_>,
    containers: &[ContainerInfo],
    last: &HashMap<String, SystemTime>,
) -> String {
    if containers.is_empty() {
        return "<tr><td colspan=9><em>nothing is running</em> · <a href=\"/ui/launch\">launch a tool</a></td></tr>"
            .to_owned();
    }
    let now = SystemTime::now();
    let hidden = ctx.field();
    let mut rows = String::new();
    for c in containers {
        let name = esc(&c.name);
        let link = match berth_axum::api::placement_of(&state.api, c) {
            Some(p) if p.mode == berth_manager::RoutingMode::Host => p.url,
            Some(p) => p.path,
            None => String::new(),
        };
        let tool = c.labels.get(&state.api.fleet.tool_label()).map_or("-".to_owned(), |t| esc(t));
        let owner = owner_of(state, c).map_or("-".to_owned(), esc);
        let age = time_el(c.created, &span(now.duration_since(c.created).unwrap_or_default()));
        let memory = c.mem_reservation_mb.map_or("-".to_owned(), |mb| format!("{mb} MiB"));
        let activity = match last.get(&c.name) {
            Some(t) if *t >= c.created => time_el(*t, &ago(now.duration_since(*t).unwrap_or_default())),
            _ => "never".to_owned(),
        };
        let (class, ready, why) = match state.api.table.peek(&c.name) {
            Some(Lookup::Ready(_)) => ("ok", "yes", String::new()),
            Some(Lookup::Failed(f)) => ("bad", "failed", format!("<br><small>{}</small>", esc(&f.reason.to_string()))),
            _ => match c.state {
                ContainerState::Running | ContainerState::Created | ContainerState::Restarting => {
                    ("wait", "no", String::new())
                }
                ContainerState::Exited if c.exit_code.unwrap_or(0) == 0 => ("idle", "no", String::new()),
                ContainerState::Exited | ContainerState::Dead => ("bad", "no", String::new()),
                _ => ("idle", "no", String::new()),
            },
        };
        let status = match (c.state, c.exit_code) {
            (ContainerState::Exited, Some(code)) => format!("exited ({code})"),
            (s, _) => s.as_str().to_owned(),
        };
        let name_cell = if link.is_empty() { name.clone() } else { format!("<a href=\"{}\">{name}</a>", esc(&link)) };
        rows.push_str(&format!(
            "<tr data-name=\"{name}\"><td data-label=Name>{name_cell}</td><td data-label=Tool>{tool}</td>\
             <td data-label=Owner>{owner}</td><td data-label=Age>{age}</td><td data-label=Memory class=num>{memory}</td>\
             <td data-label=\"Last activity\">{activity}</td>\
             <td data-label=Status><span class=\"badge {class}\">{status}</span>{why}</td><td data-label=Ready>{ready}</td>\
             <td class=actions><a href=\"/ui/logs/{name}\">logs<span class=sr-only> of {name}</span></a>\
             <a href=\"/ui/history/{name}\">history<span class=sr-only> of {name}</span></a>\
             <form class=inline method=post action=\"/ui/kill/{name}\" data-confirm=\"Kill {name}? It is removed with its volumes and staged files.\">{hidden}\
             <button class=danger aria-label=\"kill {name}\">kill</button></form></td></tr>"
        ));
    }
    rows
}

/// The kill form: the CSRF token, and `confirm=yes` once the person
/// confirmed (by the script's dialog, or on the confirmation page).
#[derive(Debug, Default, serde::Deserialize)]
struct KillForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

async fn kill(
    State(state): State<WebState>,
    headers: HeaderMap,
    w: Who,
    Path(name): Path<String>,
    Form(form): Form<KillForm>,
) -> Response {
    let me = who(&w);
    if !csrf_ok(&state, &headers, me, &form.csrf) {
        return crate::auth::csrf_refused();
    }
    if !may_see(&state, me, &name).await {
        return no_such(me, &name);
    }
    if form.confirm != "yes" {
        let ctx = Ctx::new(&state, &headers, me);
        let n = esc(&name);
        let body = format!(
            "<p>Kill <b>{n}</b>? It is removed with its volumes and staged files; this cannot be undone.</p>\
             <form method=post action=\"/ui/kill/{n}\">{field}<input type=hidden name=confirm value=yes>\
             <button class=danger>Kill {n}</button> <a class=button href=\"/\">Cancel</a></form>",
            field = ctx.field()
        );
        return ctx.page(StatusCode::OK, Nav::Running, &format!("Kill {name}?"), &body);
    }
    match state.api.fleet.kill(&name).await {
        Ok(()) => Redirect::to(&format!("/?killed={}", urlencode(&name))).into_response(),
        Err(e) if e.is_not_found() => no_such(me, &name),
        Err(e) => error_page(StatusCode::BAD_GATEWAY, me, &e.to_string()),
    }
}

/// `s` percent-encoded for a query value (all but letters, digits and
/// `-_.~`).
fn urlencode(s: &str) -> String {
    const QUERY_VALUE: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// Whether the form's CSRF token is right for this browser and caller.
fn csrf_ok(state: &WebState, headers: &HeaderMap, me: Option<&Identity>, token: &str) -> bool {
    crate::auth::csrf_ok(&state.auth, headers, me.map_or("", |i| i.user.as_str()), token)
}

// ------------------------------------------------------------ Logs, history

/// The logs page: the last lines, then (with JavaScript) the new ones as
/// the container writes them.
async fn logs(State(state): State<WebState>, headers: HeaderMap, w: Who, Path(name): Path<String>) -> Response {
    let me = who(&w);
    if !may_see(&state, me, &name).await {
        return no_such(me, &name);
    }
    let lines = match state.api.fleet.manager().logs(&name, LogOptions { tail: Some(LOG_LINES), since: None }).await {
        Ok(lines) => lines,
        Err(e) if e.is_not_found() => return no_such(me, &name),
        Err(e) => return error_page(StatusCode::BAD_GATEWAY, me, &e.to_string()),
    };
    let text: String = lines.iter().map(log_line).collect();
    let n = esc(&name);
    let body = format!(
        "<p class=hint>The last {LOG_LINES} lines, times in UTC. <a href=\"/ui/logs/{n}/text\">Plain text</a> · \
         <a href=\"/ui/history/{n}\">History</a> · <span id=follow-status role=status>\
         <noscript>reload for new lines</noscript></span></p>\
         <pre class=log id=log tabindex=0 aria-label=\"log of {n}\" data-follow=\"/ui/logs/{n}/text?follow=1\">{}</pre>",
        esc(&text)
    );
    Ctx::new(&state, &headers, me).page(StatusCode::OK, Nav::Running, &format!("Logs of {name}"), &body)
}

/// A log line as the pages show it: UTC time, space, text.
fn log_line(l: &berth_manager::LogLine) -> String {
    format!("{} {}\n", page::utc(l.timestamp), l.line)
}

/// `?follow=1` of the plain-text logs.
#[derive(Debug, Default, serde::Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: Option<String>,
}

/// Processes following logs now (bounded by [`MAX_LOG_FOLLOWS`]).
static LOG_FOLLOWS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_LOG_FOLLOWS);

/// The last lines as plain text; with `?follow=1` a body that goes on with
/// new lines until the container stops (what the logs page's script reads).
async fn logs_text(
    State(state): State<WebState>,
    w: Who,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Response {
    use futures_util::StreamExt;
    let me = who(&w);
    if !may_see(&state, me, &name).await {
        return no_such(me, &name);
    }
    let options = LogOptions { tail: Some(LOG_LINES), since: None };
    let headers = [(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-store")];
    let manager = state.api.fleet.manager();
    if q.follow.is_some_and(|f| f == "1" || f == "true") {
        let Ok(permit) = LOG_FOLLOWS.try_acquire() else {
            let mut resp = error_page(StatusCode::SERVICE_UNAVAILABLE, me, "too many logs are being followed");
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return resp;
        };
        return match manager.follow_logs(&name, options).await {
            Ok(stream) => {
                // The permit goes with the body: when the browser leaves, it is free.
                let body = stream.take_while(|l| std::future::ready(l.is_ok())).filter_map(move |l| {
                    let _held = &permit;
                    std::future::ready(l.ok().map(|l| Ok::<_, std::convert::Infallible>(log_line(&l))))
                });
                (headers, axum::body::Body::from_stream(body)).into_response()
            }
            Err(e) if e.is_not_found() => no_such(me, &name),
            Err(e) => error_page(StatusCode::BAD_GATEWAY, me, &e.to_string()),
        };
    }
    match manager.logs(&name, options).await {
        Ok(lines) => (headers, lines.iter().map(log_line).collect::<String>()).into_response(),
        Err(e) if e.is_not_found() => no_such(me, &name),
        Err(e) => error_page(StatusCode::BAD_GATEWAY, me, &e.to_string()),
    }
}

/// `?page=N` of the history (0: the newest entries).
#[derive(Debug, Default, serde::Deserialize)]
struct HistoryPage {
    #[serde(default)]
    page: usize,
}

async fn history(
    State(state): State<WebState>,
    headers: HeaderMap,
    w: Who,
    Path(name): Path<String>,
    q: Result<Query<HistoryPage>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let me = who(&w);
    if !may_see(&state, me, &name).await {
        return no_such(me, &name);
    }
    let Some(store) = &state.api.history else {
        return error_page(StatusCode::NOT_FOUND, me, "no history is recorded");
    };
    let page_no = q.map_or(0, |Query(q)| q.page).min(HISTORY_PAGES - 1);
    // Read your writes: requests proxied before this page are on it.
    state.api.activity.flush().await;
    // The newest (page + 1) pages and one more entry (is there an older page?).
    let want = (page_no + 1) * HISTORY_PAGE + 1;
    let mut entries = match store.history(&name, HistoryQuery { since: None, limit: Some(want) }).await {
        Ok(e) => e,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, me, &e.to_string()),
    };
    let older = entries.len() == want && page_no + 1 < HISTORY_PAGES;
    entries.reverse();
    let shown: Vec<_> = entries.iter().skip(page_no * HISTORY_PAGE).take(HISTORY_PAGE).collect();
    let rows: String = shown
        .iter()
        .map(|e| {
            let class = match e.status {
                200..=399 => "ok",
                400..=499 => "wait",
                _ => "bad",
            };
            let ws = if e.kind == berth_proxy::ActivityKind::WebSocket { " <small>(websocket)</small>" } else { "" };
            format!(
                "<tr><td data-label=Time>{time}</td><td data-label=Path><code>{path}</code>{ws}</td>\
                 <td data-label=Status><span class=\"badge {class}\">{status}</span></td><td data-label=Bytes class=num>{bytes}</td></tr>",
                time = time_el(e.time, &page::utc(e.time)),
                path = esc(&e.path),
                status = e.status,
                bytes = e.bytes,
            )
        })
        .collect();
    let rows = if rows.is_empty() { "<tr><td colspan=4><em>no requests yet</em></td></tr>".to_owned() } else { rows };
    let n = esc(&name);
    let mut pager = Vec::new();
    if page_no > 0 {
        pager.push(format!("<a href=\"/ui/history/{n}?page={}\" rel=prev>← newer</a>", page_no - 1));
    }
    if older {
        pager.push(format!("<a href=\"/ui/history/{n}?page={}\" rel=next>older →</a>", page_no + 1));
    }
    let body = format!(
        "<p class=hint>Requests to {n}, newest first, times in UTC (page {page}). <a href=\"/ui/logs/{n}\">Logs</a></p>\
         <div class=scroll><table class=list><thead><tr><th scope=col>Time</th><th scope=col>Path</th>\
         <th scope=col>Status</th><th scope=col class=num>Bytes</th></tr></thead><tbody>{rows}</tbody></table></div>\
         <nav class=pager aria-label=\"history pages\">{pager}</nav>",
        page = page_no + 1,
        pager = pager.join(" "),
    );
    Ctx::new(&state, &headers, me).page(StatusCode::OK, Nav::Running, &format!("History of {name}"), &body)
}

// ------------------------------------------------------------------ Fleet

async fn fleet(State(state): State<WebState>, headers: HeaderMap, w: Who) -> Response {
    let me = who(&w);
    let all = sees_all(me);
    let everything = state.api.fleet.manager().list(&ListFilter::all()).await.unwrap_or_default();
    let config = state.api.fleet.config();
    let used: u64 = everything.iter().filter_map(|c| c.mem_reservation_mb).sum();
    let mine: Vec<&ContainerInfo> =
        everything.iter().filter(|c| me.is_none_or(|i| i.may_see(&c.name, owner_of(&state, c)))).collect();
    let mine_mb: u64 = mine.iter().filter_map(|c| c.mem_reservation_mb).sum();
    let memory = match config.memory_budget_mb {
        Some(budget) if budget > 0 => {
            let pct = (used.saturating_mul(100) / budget).min(100);
            let class = match pct {
                0..80 => "fill",
                80..100 => "fill warn",
                _ => "fill full",
            };
            let over =
                if used > budget { " (over budget: launches start anyway when nothing is left to evict)" } else { "" };
            format!(
                "<svg class=bar role=img aria-label=\"{used} of {budget} MiB reserved\" preserveAspectRatio=none>\
                 <rect class=track width=\"100%\" height=\"100%\"/><rect class=\"{class}\" width=\"{pct}%\" height=\"100%\"/></svg>\
                 <p><b>{used} of {budget} MiB</b> reserved ({pct}%){over}.</p>"
            )
        }
        _ => format!("<p><b>{used} MiB</b> reserved; no memory budget is set, so nothing is evicted.</p>"),
    };
    let yours = if all { String::new() } else { format!("<p class=hint>Yours: {mine_mb} MiB.</p>") };
    // Per tool, of what the caller may see.
    let mut per_tool: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for c in &mine {
        let tool = c.labels.get(&state.api.fleet.tool_label()).cloned().unwrap_or_else(|| "(image)".to_owned());
        let entry = per_tool.entry(tool).or_default();
        entry.0 += 1;
        entry.1 += c.mem_reservation_mb.unwrap_or(0);
    }
    for t in &state.api.registry.tools {
        per_tool.entry(t.name.clone()).or_default();
    }
    let tool_rows: String = per_tool
        .iter()
        .map(|(tool, (n, mb))| {
            format!(
                "<tr><td data-label=Tool>{}</td><td data-label=Containers class=num>{n}</td><td data-label=Memory class=num>{mb} MiB</td></tr>",
                esc(tool)
            )
        })
        .collect();
    let now = SystemTime::now();
    let removals: String = state
        .api
        .fleet
        .recent_removals()
        .into_iter()
        .filter(|r| me.is_none_or(|i| i.may_see(&r.name, r.owner.as_deref())))
        .map(|r| {
            let why = match &r.reason {
                RemovalReason::Evicted { for_container } if all || may_see_name(&state, me, &everything, for_container) => {
                    format!("<span class=\"badge wait\">evicted</span> to make room for {}", esc(for_container))
                }
                RemovalReason::Evicted { .. } => "<span class=\"badge wait\">evicted</span> to make room".to_owned(),
                RemovalReason::Idle { idle } => {
                    format!("<span class=\"badge idle\">idle</span> no requests for {}", span(*idle))
                }
                _ => "removed".to_owned(),
            };
            format!(
                "<tr><td data-label=When>{when}</td><td data-label=Container>{name}</td><td data-label=Owner>{owner}</td><td data-label=Why>{why}</td></tr>",
                when = time_el(r.time, &ago(now.duration_since(r.time).unwrap_or_default())),
                name = esc(&r.name),
                owner = r.owner.as_deref().map_or("-".to_owned(), esc),
            )
        })
        .collect();
    let removals = if removals.is_empty() {
        "<tr><td colspan=4><em>nothing was evicted or culled since berth started</em></td></tr>".to_owned()
    } else {
        removals
    };
    let mut settings = vec![(
        "Idle culling",
        config.idle_timeout.map_or("off".to_owned(), |d| format!("after {} without requests", span(d))),
    )];
    let limit = |v: Option<usize>| v.map_or("none".to_owned(), |n| n.to_string());
    settings.push(("Containers at most", limit(config.max_containers)));
    settings.push(("Per tool at most", limit(config.max_per_tool)));
    settings.push(("Per user at most", limit(config.max_per_user)));
    let settings: String =
        settings.iter().map(|(k, v)| format!("<div class=stat>{k}<b>{}</b></div>", esc(v))).collect();
    let scope = if all { "" } else { " Counts and removals are of your containers only." };
    let body = format!(
        "<h2>Memory</h2>{memory}{yours}\
         <h2>Per tool</h2><p class=hint>Running containers by tool.{scope}</p><div class=scroll><table class=list><thead><tr>\
         <th scope=col>Tool</th><th scope=col class=num>Containers</th><th scope=col class=num>Memory</th></tr></thead>\
         <tbody>{tool_rows}</tbody></table></div>\
         <h2>Recently removed by berth</h2><p class=hint>Evictions (least recently used first, to fit the memory budget) \
         and idle culls, newest first; a restart forgets them.</p><div class=scroll><table class=list><thead><tr>\
         <th scope=col>When</th><th scope=col>Container</th><th scope=col>Owner</th><th scope=col>Why</th></tr></thead>\
         <tbody id=removals>{removals}</tbody></table></div>\
         <h2>Settings</h2><div class=stats>{settings}</div>"
    );
    Ctx::new(&state, &headers, me).page(StatusCode::OK, Nav::Fleet, "Fleet", &body)
}

/// Whether the caller may see container `name` among `containers` (a
/// name that is gone is shown only to those who see everything).
fn may_see_name(state: &WebState, me: Option<&Identity>, containers: &[ContainerInfo], name: &str) -> bool {
    containers.iter().any(|c| c.name == name && me.is_none_or(|i| i.may_see(&c.name, owner_of(state, c))))
}

// ----------------------------------------------------------------- Launch

/// The caller's uploads directory.
///
/// # Errors
///
/// The page to answer: 401 without a user under a login mode (the
/// identity layer sends people to log in first, so only a misconfigured
/// composition gets here), 500 when the directory key cannot be read.
fn upload_dir(state: &WebState, me: Option<&Identity>) -> Result<UploadDir, Box<Response>> {
    if !logins(state) {
        return Ok(UploadDir::shared(&state.uploads));
    }
    let Some(me) = me else { return Err(Box::new(error_page(StatusCode::UNAUTHORIZED, None, "log in first"))) };
    UploadDir::of_user(&state.uploads, &me.user).map_err(|e| {
        tracing::error!(error = %e, dir = %state.uploads.display(), "cannot read or make the uploads key");
        Box::new(error_page(StatusCode::INTERNAL_SERVER_ERROR, Some(me), "uploads are unavailable"))
    })
}

/// The data files a caller may launch with: their uploads and the shared
/// data directory, each with its URL.
struct Picker {
    own: Vec<(uploads::DataFile, String)>,
    shared: Vec<(uploads::DataFile, String)>,
}

impl Picker {
    fn new(state: &WebState, dir: &UploadDir) -> Self {
        let base = state.data_base.as_str();
        let own: Vec<_> = uploads::list(&dir.path)
            .into_iter()
            .map(|f| {
                let url = dir.url(base, &f.name);
                (f, url)
            })
            .collect();
        // Without a login, uploads and data share one namespace in which
        // an upload hides a data file of the same name.
        let hidden = |name: &str| dir.dir.is_none() && own.iter().any(|(f, _)| f.name == name);
        let shared = state
            .data
            .as_deref()
            .map(uploads::list)
            .unwrap_or_default()
            .into_iter()
            .filter(|f| !hidden(&f.name))
            .map(|f| {
                let url = format!("{base}/{}", f.name);
                (f, url)
            })
            .collect();
        Picker { own, shared }
    }

    fn offers(&self, url: &str) -> bool {
        self.own.iter().chain(&self.shared).any(|(_, u)| u == url)
    }
}

/// The launch form as submitted.
#[derive(Debug, Default)]
struct LaunchForm {
    tool: String,
    name: String,
    files: Vec<String>,
    urls: String,
    parameters: String,
    action: String,
    csrf: String,
}

impl LaunchForm {
    fn parse(pairs: Vec<(String, String)>) -> Self {
        let mut form = LaunchForm::default();
        for (k, v) in pairs {
            match k.as_str() {
                "tool" => form.tool = v,
                "name" => form.name = v,
                "file" => form.files.push(v),
                "urls" => form.urls = v,
                "parameters" => form.parameters = v,
                "action" => form.action = v,
                "csrf" => form.csrf = v,
                _ => {}
            }
        }
        form
    }

    fn url_lines(&self) -> impl Iterator<Item = &str> {
        self.urls.lines().map(str::trim).filter(|l| !l.is_empty())
    }
}

/// What is wrong with a launch form, field by field.
#[derive(Debug, Default)]
struct FieldErrors {
    name: Option<String>,
    files: Option<String>,
    urls: Option<String>,
    parameters: Option<String>,
}

impl FieldErrors {
    fn any(&self) -> bool {
        self.name.is_some() || self.files.is_some() || self.urls.is_some() || self.parameters.is_some()
    }
}

/// Checks `form` (the browser checked it too, but a form can come from
/// anywhere): a valid name, files offered to this caller, http(s) URLs
/// that do not lead into someone else's uploads, parameters a JSON object.
fn check_form(form: &LaunchForm, picker: &Picker, dir: &UploadDir) -> (FieldErrors, serde_json::Value) {
    let mut errors = FieldErrors::default();
    if let Err(e) = berth_manager::validate_name(form.name.trim()) {
        errors.name = Some(e.to_string());
    }
    if let Some(f) = form.files.iter().find(|f| !picker.offers(f)) {
        errors.files = Some(format!("{f} is not one of your files (upload it again?)"));
    }
    for line in form.url_lines() {
        if let Err(e) = check_url(line, dir) {
            errors.urls = Some(e);
            break;
        }
    }
    let parameters = match serde_json::from_str(form.parameters.trim()) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => {
            errors.parameters = Some("parameters must be a JSON object, like {\"zoom\": 2}".to_owned());
            serde_json::Value::Null
        }
        Err(e) => {
            errors.parameters = Some(format!("parameters are not JSON: {e}"));
            serde_json::Value::Null
        }
    };
    (errors, parameters)
}

/// Whether `url` may be given to a container launched by the owner of
/// `dir`: an http(s) URL naming no per-user uploads directory but the
/// owner's own. Any `u-<32 hex>` in it counts, however it is spelled
/// (case, percent-encoding, dot segments or host), so no route to another
/// user's directory gets through.
fn check_url(url: &str, dir: &UploadDir) -> Result<(), String> {
    let parsed: axum::http::Uri = url.parse().map_err(|_| format!("not a URL: {url}"))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
        return Err(format!("not an http(s) URL: {url}"));
    }
    let decoded = percent_decode(url).to_ascii_lowercase();
    let own = dir.dir.as_deref();
    let foreign = decoded
        .match_indices("u-")
        .any(|(at, _)| decoded.get(at..at + 34).is_some_and(|d| valid_user_dir(d) && Some(d) != own));
    if foreign {
        return Err(format!("{url} is not one of your files"));
    }
    Ok(())
}

/// `s` with `%XX` escapes decoded (once; invalid escapes are kept as they
/// are, and so is `s` when the result is not UTF-8).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8().map_or_else(|_| s.to_owned(), |d| d.into_owned())
}

async fn launch_page(
    State(state): State<WebState>,
    headers: HeaderMap,
    w: Who,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let me = who(&w);
    let dir = match upload_dir(&state, me) {
        Ok(d) => d,
        Err(resp) => return *resp,
    };
    let ctx = Ctx::new(&state, &headers, me);
    let notice = match (q.get("uploaded"), q.get("deleted")) {
        (Some(f), _) => format!("<p class=notice role=status>{} was uploaded.</p>", esc(f)),
        (None, Some(f)) => format!("<p class=notice role=status>{} was deleted.</p>", esc(f)),
        (None, None) => String::new(),
    };
    let open = q.get("tool").map(String::as_str);
    let body = launch_body(&state, &ctx, &dir, &notice, open, None).await;
    ctx.page(StatusCode::OK, Nav::Launch, "Launch", &body)
}

/// The launch page's body; `open` names the tool whose form is unfolded;
/// `sticky` is a form sent back with its errors.
async fn launch_body(
    state: &WebState,
    ctx: &Ctx<'_>,
    dir: &UploadDir,
    notice: &str,
    open: Option<&str>,
    sticky: Option<(&LaunchForm, &FieldErrors)>,
) -> String {
    let picker = Picker::new(state, dir);
    let containers = if ctx.me.is_some() { visible_containers(state, ctx.me, true).await } else { Vec::new() };
    let mut cards = String::new();
    for (i, tool) in state.api.registry.tools.iter().enumerate() {
        let mine = sticky.filter(|(f, _)| f.tool == tool.name);
        cards.push_str(&tool_card(ctx, &picker, dir, i, tool, open == Some(tool.name.as_str()), mine));
    }
    if cards.is_empty() {
        cards.push_str("<p><em>The registry has no tools.</em></p>");
    }
    let summary = match sticky {
        Some((_, e)) if e.any() => {
            "<div class=errors role=alert>The launch form has errors: see the messages beside its fields.</div>"
        }
        _ => "",
    };
    let files: String = picker
        .own
        .iter()
        .map(|(f, url)| {
            format!(
                "<tr><td data-label=File title=\"containers fetch it from {url}\">{name}</td>\
                 <td data-label=Size class=num>{size}</td><td data-label=Uploaded>{when}</td>\
                 <td><form class=inline method=post action=/ui/upload/delete data-confirm=\"Delete {name}?\">{field}<input type=hidden name=file value=\"{name}\">\
                 <button class=danger aria-label=\"Delete {name}\">Delete</button></form></td></tr>",
                url = esc(url),
                name = esc(&f.name),
                field = ctx.field(),
                size = page::bytes(f.size),
                when = f.modified.map_or("-".to_owned(), |t| time_el(
                    t,
                    &ago(SystemTime::now().duration_since(t).unwrap_or_default())
                )),
            )
        })
        .collect();
    let files = if files.is_empty() {
        "<p class=hint><em>No uploads yet.</em></p>".to_owned()
    } else {
        format!(
            "<div class=scroll><table class=list><thead><tr><th scope=col>File</th><th scope=col class=num>Size</th>\
             <th scope=col>Uploaded</th><th scope=col><span class=sr-only>Delete</span></th></tr></thead><tbody>{files}</tbody></table></div>"
        )
    };
    let whose = if dir.dir.is_some() {
        "Your uploads: only you see them and only your containers are given them."
    } else {
        "Uploads are shared by everyone using this server."
    };
    format!(
        "{notice}{summary}{limits}<h2 id=tools>Tools</h2><div class=cards>{cards}</div>\
         <h2 id=files>Data files</h2><p class=hint>{whose}</p>{files}\
         <form method=post action=/ui/upload enctype=multipart/form-data>{field}<div class=field>\
         <label for=upload-file>Upload a data file</label><br><input id=upload-file type=file name=file required \
         aria-describedby=upload-hint> <button>Upload</button><p class=hint id=upload-hint>Names of letters, digits, \
         <code>-</code> <code>_</code> <code>.</code>; up to {max}; a file of the same name is replaced.</p></div></form>",
        limits = limits_line(state, ctx.me, &containers),
        field = ctx.field(),
        max = page::bytes(state.max_upload as u64),
    )
}

/// One tool's card with its folded launch form.
#[allow(clippy::too_many_arguments)] // One card's parts; a struct would only rename them.
fn tool_card(
    ctx: &Ctx<'_>,
    picker: &Picker,
    dir: &UploadDir,
    i: usize,
    tool: &ToolDef,
    open: bool,
    sticky: Option<(&LaunchForm, &FieldErrors)>,
) -> String {
    let errors = sticky.map(|(_, e)| e);
    let err = |f: fn(&FieldErrors) -> &Option<String>| errors.and_then(|e| f(e).clone()).unwrap_or_default();
    let invalid = |f: fn(&FieldErrors) -> &Option<String>| {
        if errors.is_some_and(|e| f(e).is_some()) { " aria-invalid=true" } else { "" }
    };
    let checked = |url: &str, name: &str, shared: bool| match sticky {
        Some((form, _)) => form.files.iter().any(|f| f == url),
        None => tool
            .default_files
            .iter()
            .any(|d| d == url || ((shared || dir.dir.is_none()) && d.ends_with(&format!("/{name}")))),
    };
    let boxes = |list: &[(uploads::DataFile, String)], shared: bool| -> String {
        list.iter()
            .map(|(f, url)| {
                format!(
                    "<label><input type=checkbox name=file value=\"{}\"{}> {}</label> ",
                    esc(url),
                    if checked(url, &f.name, shared) { " checked" } else { "" },
                    esc(&f.name)
                )
            })
            .collect()
    };
    let (own_label, shared_label) =
        if dir.dir.is_some() { ("Your uploads", "Shared data") } else { ("Uploads", "Data directory") };
    let mut groups = String::new();
    if !picker.own.is_empty() {
        groups.push_str(&format!("<div><small>{own_label}:</small> {}</div>", boxes(&picker.own, false)));
    }
    if !picker.shared.is_empty() {
        groups.push_str(&format!("<div><small>{shared_label}:</small> {}</div>", boxes(&picker.shared, true)));
    }
    if groups.is_empty() {
        groups.push_str("<p class=hint><em>none yet: <a href=\"#files\">upload one</a></em></p>");
    }
    let default_params = serde_json::to_string_pretty(&tool.default_parameters).unwrap_or_else(|_| "{}".into());
    let (name_v, urls_v, params_v) = match sticky {
        Some((f, _)) => (f.name.as_str(), f.urls.as_str(), f.parameters.as_str()),
        None => ("", "", default_params.as_str()),
    };
    let limit = tool.max_per_user.map(|n| format!("<dt>Limit</dt><dd>{n} per user</dd>")).unwrap_or_default();
    let t = esc(&tool.name);
    let id = format!("t{i}");
    format!(
        "<div class=\"tool card\" id=\"tool-{t}\"><h3>{t}</h3><p>{desc}</p>\
         <dl><dt>Image</dt><dd><code>{image}</code></dd><dt>Memory</dt><dd>{mb} MiB reserved</dd><dt>Port</dt><dd>{port}</dd>{limit}</dl>\
         <details{open}><summary>Launch {t}…</summary>\
         <form method=post action=/ui/launch>{field}<input type=hidden name=tool value=\"{t}\">\
         <div class=field><label for={id}-name>Name</label>\
         <input id={id}-name name=name required autocomplete=off spellcheck=false pattern=\"[a-z0-9][a-z0-9\\-]{{0,61}}[a-z0-9]\" \
         title=\"2 to 63 of a-z, 0-9 and -, not starting or ending with -\" placeholder=my-{t} value=\"{name_v}\" \
         data-err={id}-name-err aria-describedby=\"{id}-name-hint {id}-name-err\"{name_invalid}>\
         <p class=hint id={id}-name-hint>2 to 63 of a-z, 0-9 and -, not starting or ending with -.</p>\
         <p class=error id={id}-name-err>{name_err}</p></div>\
         <fieldset aria-describedby={id}-files-err><legend>Data files</legend>{groups}\
         <p class=error id={id}-files-err>{files_err}</p></fieldset>\
         <div class=field><label for={id}-urls>Other file URLs <small>(one a line)</small></label>\
         <textarea id={id}-urls name=urls rows=2 spellcheck=false data-urls data-err={id}-urls-err aria-describedby={id}-urls-err{urls_invalid}>{urls_v}</textarea>\
         <p class=error id={id}-urls-err>{urls_err}</p></div>\
         <div class=field><label for={id}-params>Parameters <small>(a JSON object)</small></label>\
         <textarea id={id}-params name=parameters rows=5 spellcheck=false data-json data-err={id}-params-err aria-describedby={id}-params-err{params_invalid}>{params_v}</textarea>\
         <p class=error id={id}-params-err>{params_err}</p></div>\
         <button class=primary name=action value=launch>Launch</button> <button name=action value=show>Show input</button></form></details></div>",
        desc = esc(&tool.description),
        image = esc(&tool.image),
        mb = tool.mem_reservation_mb,
        port = tool.port,
        open = if open || sticky.is_some() { " open" } else { "" },
        field = ctx.field(),
        name_v = esc(name_v),
        urls_v = esc(urls_v),
        params_v = esc(params_v),
        name_err = esc(&err(|e| &e.name)),
        files_err = esc(&err(|e| &e.files)),
        urls_err = esc(&err(|e| &e.urls)),
        params_err = esc(&err(|e| &e.parameters)),
        name_invalid = invalid(|e| &e.name),
        urls_invalid = invalid(|e| &e.urls),
        params_invalid = invalid(|e| &e.parameters),
    )
}

async fn launch(
    State(state): State<WebState>,
    headers: HeaderMap,
    w: Who,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let form = LaunchForm::parse(pairs);
    let me = who(&w);
    if !csrf_ok(&state, &headers, me, &form.csrf) {
        return crate::auth::csrf_refused();
    }
    if me.is_some_and(|i| i.only.is_some()) {
        return error_page(StatusCode::FORBIDDEN, me, "this session may use its containers only, not launch");
    }
    let Some(tool) = state.api.registry.get(&form.tool) else {
        return error_page(StatusCode::BAD_REQUEST, me, &format!("tool {:?} is not in the registry", form.tool));
    };
    let dir = match upload_dir(&state, me) {
        Ok(d) => d,
        Err(resp) => return *resp,
    };
    let picker = Picker::new(&state, &dir);
    let (errors, parameters) = check_form(&form, &picker, &dir);
    if errors.any() {
        let ctx = Ctx::new(&state, &headers, me);
        let body = launch_body(&state, &ctx, &dir, "", None, Some((&form, &errors))).await;
        return ctx.page(StatusCode::BAD_REQUEST, Nav::Launch, "Launch", &body);
    }
    let owner = me.map(|i| i.user.clone());
    let mut files = form.files.clone();
    files.extend(form.url_lines().map(str::to_owned));
    let request = LaunchRequest {
        name: form.name.trim().to_owned(),
        tool: tool.name.clone(),
        files: Some(files),
        parameters: Some(parameters),
        dry_run: form.action == "show",
        ..LaunchRequest::default()
    };
    if request.dry_run {
        let doc = input_document(&state.api, tool, &request);
        let pretty = serde_json::to_string_pretty(&doc).unwrap_or_default();
        let body = format!(
            "<p class=hint>The input document {name} would get from {t}; nothing was launched.</p><pre class=log>{}</pre>\
             <p><a href=\"/ui/launch?tool={tq}#tool-{t}\">back to the launch form</a></p>",
            esc(&pretty),
            name = esc(&request.name),
            t = esc(&tool.name),
            tq = urlencode(&tool.name),
        );
        return Ctx::new(&state, &headers, me).page(StatusCode::OK, Nav::Launch, "Input document", &body);
    }
    if let Err(e) = berth_axum::api::check_request(&state.api, &request) {
        return error_page(e.0, me, &e.1);
    }
    // The launch goes on in the background while the browser follows it
    // on the wait page; recorded first, so that page never sees a gap, and
    // by ticket, so that page reports this launch's outcome.
    let ticket = state.api.launches.start(&request.name, owner.as_deref());
    let api = state.api.clone();
    let name = request.name.clone();
    tokio::spawn(async move {
        if let Err(e) = launch_recorded(&api, &request, owner.as_deref(), ticket).await {
            tracing::info!(name = %request.name, error = %e.1, "launch from the web app failed");
        }
    });
    Redirect::to(&format!("/ui/wait/{name}?launch={}", ticket.id())).into_response()
}

/// The launch a wait or events URL follows (`?launch=<ticket>`).
#[derive(Debug, Default, serde::Deserialize)]
struct Following {
    #[serde(default)]
    launch: Option<u64>,
}

/// The please-wait page of a launch from the form: follows its progress
/// (`/ui/events/{name}`); once the route table has an outcome it sends the
/// browser to the tool (or to the proxy's failure page), and when the
/// followed launch failed before there was a container it says why.
async fn wait(State(state): State<WebState>, w: Who, Path(name): Path<String>, Query(q): Query<Following>) -> Response {
    use berth_axum::api::{LaunchRecord, LaunchState, LaunchTicket};
    let me = who(&w);
    if berth_manager::validate_name(&name).is_err() {
        return no_such(me, &name);
    }
    let ticket = q.launch.map(LaunchTicket::from_id);
    let record = state.api.launches.get(&name, me);
    if let Some(LaunchRecord { ticket: t, state: LaunchState::Failed { status, message, .. }, .. }) = &record
        && ticket == Some(*t)
    {
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
        return error_page(status, me, &format!("launching {name} failed: {message}"));
    }
    let waiting = || {
        let events = match ticket {
            Some(t) => format!("{EVENTS_URL}?launch={}", t.id()),
            None => EVENTS_URL.to_owned(),
        };
        let page = berth_proxy::WaitingPage { events_url: Some(events), ..berth_proxy::WaitingPage::default() };
        berth_proxy::pages::waiting(&page, &name, false).map(axum::body::Body::new)
    };
    let in_flight = matches!(&record, Some(LaunchRecord { state: LaunchState::InFlight, .. }));
    // Someone else's container is exactly a missing one.
    let lookup = if may_see(&state, me, &name).await { state.api.table.lookup(&name).await } else { Lookup::Missing };
    let visible = lookup != Lookup::Missing;
    match lookup {
        Lookup::Starting => waiting(),
        Lookup::Missing if in_flight => waiting(),
        // Ready, failed (the proxy shows why) or missing (it says so).
        _ => {
            let labels = if visible {
                state.api.table.labels_or_fetch(&name).await.unwrap_or_default()
            } else {
                Default::default()
            };
            let hints = berth_manager::RouteHints::from_labels(state.api.fleet.manager().label_scheme(), &labels);
            match state.api.urls.placed(&name, &hints) {
                // Under path routing the path keeps the browser on this host;
                // a container served by hostname is elsewhere.
                Some(p) if p.mode == berth_manager::RoutingMode::Path => Redirect::to(&p.path).into_response(),
                Some(p) => Redirect::to(&p.url).into_response(),
                None => error_page(StatusCode::NOT_FOUND, me, &format!("{name} is not published on this server")),
            }
        }
    }
}

/// Launch progress for the please-wait page (the API's stream, which may
/// sit behind a bearer token a browser does not have).
async fn events(
    State(state): State<WebState>,
    w: Who,
    Path(name): Path<String>,
    Query(q): Query<Following>,
) -> Response {
    if berth_manager::validate_name(&name).is_err() {
        return no_such(who(&w), &name);
    }
    let ticket = q.launch.map(berth_axum::api::LaunchTicket::from_id);
    berth_axum::api::launch_events(state.api, name, who(&w).cloned(), ticket)
}

async fn upload(State(state): State<WebState>, headers: HeaderMap, w: Who, mut multipart: Multipart) -> Response {
    let me = who(&w);
    // The form's first field is its CSRF token.
    let token = match multipart.next_field().await {
        Ok(Some(field)) if field.name() == Some("csrf") => field.text().await.unwrap_or_default(),
        _ => String::new(),
    };
    if !csrf_ok(&state, &headers, me, &token) {
        return crate::auth::csrf_refused();
    }
    if me.is_some_and(|i| i.only.is_some()) {
        return error_page(StatusCode::FORBIDDEN, me, "this session may use its containers only, not upload");
    }
    let dir = match upload_dir(&state, me) {
        Ok(d) => d,
        Err(resp) => return *resp,
    };
    let mut last = None;
    while let Ok(Some(mut field)) = multipart.next_field().await {
        let Some(name) = field.file_name().map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).to_owned()) else {
            continue;
        };
        if !valid_file_name(&name) {
            return error_page(
                StatusCode::BAD_REQUEST,
                me,
                &format!("file name {name:?} is not allowed (letters, digits, - _ .)"),
            );
        }
        if let Err(e) = tokio::fs::create_dir_all(&dir.path).await {
            return error_page(StatusCode::INTERNAL_SERVER_ERROR, me, &e.to_string());
        }
        // Streamed to a temporary file, renamed when complete.
        let tmp = dir.path.join(format!(".{name}.part"));
        let result = async {
            use tokio::io::AsyncWriteExt;
            let mut file = tokio::fs::File::create(&tmp).await?;
            while let Some(chunk) = field.chunk().await.map_err(std::io::Error::other)? {
                file.write_all(&chunk).await?;
            }
            file.sync_all().await?;
            tokio::fs::rename(&tmp, dir.path.join(&name)).await
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return error_page(StatusCode::BAD_REQUEST, me, &format!("upload failed: {e}"));
        }
        last = Some(name);
    }
    match last {
        Some(name) => Redirect::to(&format!("/ui/launch?uploaded={}#files", urlencode(&name))).into_response(),
        None => Redirect::to("/ui/launch#files").into_response(),
    }
}

/// The delete form of one upload.
#[derive(Debug, serde::Deserialize)]
struct DeleteUploadForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    file: String,
}

/// Deletes one of the caller's uploads (in mode `none`, one of the shared
/// uploads). Containers already given it get a 404 when they fetch it
/// next; those that fetched it keep their copy.
async fn delete_upload(
    State(state): State<WebState>,
    headers: HeaderMap,
    w: Who,
    Form(form): Form<DeleteUploadForm>,
) -> Response {
    let me = who(&w);
    if !csrf_ok(&state, &headers, me, &form.csrf) {
        return crate::auth::csrf_refused();
    }
    if me.is_some_and(|i| i.only.is_some()) {
        return error_page(StatusCode::FORBIDDEN, me, "this session may use its containers only, not delete uploads");
    }
    if !valid_file_name(&form.file) {
        return error_page(StatusCode::BAD_REQUEST, me, &format!("file name {:?} is not allowed", form.file));
    }
    let dir = match upload_dir(&state, me) {
        Ok(d) => d,
        Err(resp) => return *resp,
    };
    match tokio::fs::remove_file(dir.path.join(&form.file)).await {
        Ok(()) => Redirect::to(&format!("/ui/launch?deleted={}#files", urlencode(&form.file))).into_response(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            error_page(StatusCode::NOT_FOUND, me, &format!("{} is not among your uploads", form.file))
        }
        Err(e) => {
            tracing::error!(error = %e, file = %form.file, "cannot delete an upload");
            error_page(StatusCode::INTERNAL_SERVER_ERROR, me, "the upload could not be deleted")
        }
    }
}

// ------------------------------------------------------------ Data files

/// The data files containers fetch, for the staging listener:
/// `/_berth/data/<file>` from the shared data directory `data` (and,
/// with `shared_uploads`, the mode-`none` uploads in `uploads` first), and
/// `/_berth/data/u-<hex>/<file>` from a user's own uploads directory.
/// Plain names only: no `/`, no `..`, no hidden files.
pub(crate) fn data_router(uploads: PathBuf, data: Option<PathBuf>, shared_uploads: bool) -> Router {
    let flat: Vec<PathBuf> = shared_uploads.then(|| uploads.clone()).into_iter().chain(data).collect();
    Router::new()
        .route(
            "/_berth/data/{name}",
            get(move |Path(name): Path<String>, req: axum::extract::Request| {
                let dirs = flat.clone();
                async move {
                    if !valid_file_name(&name) {
                        return data_missing();
                    }
                    for dir in &dirs {
                        let path = dir.join(&name);
                        if tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
                            return data_file(&path, &name, req).await;
                        }
                    }
                    data_missing()
                }
            }),
        )
        .route(
            "/_berth/data/{dir}/{name}",
            get(move |Path((dir, name)): Path<(String, String)>, req: axum::extract::Request| {
                let path = uploads.join(&dir).join(&name);
                async move {
                    if !valid_user_dir(&dir) || !valid_file_name(&name) {
                        return data_missing();
                    }
                    if !tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
                        return data_missing();
                    }
                    data_file(&path, &name, req).await
                }
            }),
        )
}

/// `path` streamed from disk (never read whole: data files may be larger
/// than memory), with ranges, `HEAD` and conditional requests.
async fn data_file(path: &std::path::Path, name: &str, req: axum::extract::Request) -> Response {
    use tower::ServiceExt as _;
    let mime: mime::Mime = berth_staging::content_type_for(name).parse().unwrap_or(mime::APPLICATION_OCTET_STREAM);
    match tower_http::services::ServeFile::new_with_mime(path, &mime).oneshot(req).await {
        Ok(resp) if resp.status() == StatusCode::NOT_FOUND => data_missing(),
        Ok(resp) => resp.map(axum::body::Body::new),
        Err(never) => match never {},
    }
}

fn data_missing() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

#[cfg(test)]
mod tests;

//! The demo web app: server-rendered HTML, no external resources, works
//! offline. Lists containers (with kill / logs / history), launches tools
//! from the registry (data files from uploads, the data directory or URLs;
//! parameters as JSON; "show input" previews the document), and uploads
//! data files. A launch from the form goes on in the background while
//! the browser waits on `/ui/wait/{name}`, a please-wait page that follows
//! the launch-progress stream `/ui/events/{name}` and then opens the tool.
//!
//! With a login mode each person sees and manages their own containers
//! (admins all; someone else's is exactly a missing one), launches as
//! themselves, and sees their limits. Every form carries a CSRF token (an
//! HMAC of the browser's `berth_csrf` cookie and the user), checked on
//! submission, beside the session cookie's `SameSite=Lax`.

use std::path::PathBuf;

use std::sync::Arc;

use axum::extract::{Form, Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use berth_axum::Identity;
use berth_axum::api::{ApiState, LaunchRequest, input_document, launch_recorded};
use berth_history::HistoryQuery;
use berth_manager::{ListFilter, LogOptions};
use berth_proxy::pages::escape_html as esc;

/// The launch-progress stream of container `{name}`: the route, and the
/// [`berth_proxy::WaitingPage::events_url`] template (both write the name
/// as `{name}`).
pub const EVENTS_URL: &str = "/ui/events/{name}";

/// What the pages need.
#[derive(Clone)]
pub struct WebState {
    /// The API's state (fleet, registry, table, history).
    pub api: ApiState,
    /// Where uploads go (served with the data files).
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

/// Whether the caller may see container `name` (everyone may without a
/// login mode).
async fn may_see(state: &WebState, who: Option<&Identity>, name: &str) -> bool {
    let Some(who) = who else { return true };
    let labels = state.api.table.labels_or_fetch(name).await.unwrap_or_default();
    who.may_see(name, labels.get(&state.api.owner_label).map(String::as_str))
}

/// The page for a container the caller may not see, or that is missing.
fn no_such(name: &str) -> Response {
    error_page(StatusCode::NOT_FOUND, &format!("there is no tool named {name:?}"))
}

/// The web app's routes.
pub fn web_router(state: WebState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ui/launch", post(launch))
        .route("/ui/kill/{name}", post(kill))
        .route("/ui/logs/{name}", get(logs))
        .route("/ui/history/{name}", get(history))
        .route(EVENTS_URL, get(events))
        .route("/ui/wait/{name}", get(wait))
        .route("/ui/upload", post(upload))
        .layer(axum::extract::DefaultBodyLimit::max(state.max_upload))
        .with_state(state)
}

/// A valid data-file name: letters, digits, `-`, `_`, `.`; not hidden.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A page of the web app: `title` (escaped) and `body` (HTML).
pub(crate) fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2em auto;max-width:70em;color:#222}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\
         .tool{{border:1px solid #ddd;padding:1em;margin:1em 0}}textarea{{width:100%}}form.inline{{display:inline}}</style>\
         </head><body><h1><a href=\"/\">berth</a> · {t}</h1>{body}</body></html>",
        t = esc(title)
    ))
}

/// Files available to launch with: uploads first, then the data directory.
fn data_files(state: &WebState) -> Vec<String> {
    let mut names: Vec<String> = [Some(&state.uploads), state.data.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| valid_file_name(n))
        .collect();
    names.sort();
    names.dedup();
    names
}

async fn index(State(state): State<WebState>, headers: HeaderMap, w: Who) -> Response {
    let me = who(&w);
    let (nonce, set_cookie) = crate::auth::csrf_nonce(&state.auth, &headers);
    let user = me.map_or("", |i| i.user.as_str());
    let csrf = crate::auth::csrf_token(&state.auth, &nonce, user);
    let hidden = format!("<input type=hidden name=csrf value=\"{csrf}\">");
    let containers: Vec<_> = state
        .api
        .fleet
        .manager()
        .list(&ListFilter::all())
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|c| me.is_none_or(|i| i.may_see(&c.name, c.labels.get(&state.api.owner_label).map(String::as_str))))
        .collect();
    let mut rows = String::new();
    for c in &containers {
        let d = berth_axum::api::describe(&state.api, c);
        let name = esc(&c.name);
        rows.push_str(&format!(
            "<tr><td><a href=\"{path}\">{name}</a></td><td>{tool}</td><td>{status}</td><td>{ready}</td>\
             <td><a href=\"/ui/logs/{name}\">logs</a> <a href=\"/ui/history/{name}\">history</a> \
             <form class=inline method=post action=\"/ui/kill/{name}\">{hidden}<button>kill</button></form></td></tr>",
            path = esc(d["path"].as_str().unwrap_or("")),
            tool = esc(d["tool"].as_str().unwrap_or("-")),
            status = esc(d["status"].as_str().unwrap_or("?")),
            ready = if d["ready"].as_bool() == Some(true) { "yes" } else { "no" },
        ));
    }
    if rows.is_empty() {
        rows.push_str("<tr><td colspan=5><em>nothing is running</em></td></tr>");
    }
    let files = data_files(&state);
    let mut tools = String::new();
    for tool in &state.api.registry.tools {
        let checkboxes: String = files
            .iter()
            .map(|f| {
                let url = format!("{}/{f}", state.data_base);
                let checked = tool.default_files.iter().any(|d| d == &url || d.ends_with(&format!("/{f}")));
                format!(
                    "<label><input type=checkbox name=file value=\"{}\"{}> {}</label> ",
                    esc(&url),
                    if checked { " checked" } else { "" },
                    esc(f)
                )
            })
            .collect();
        let checkboxes = if files.is_empty() { "<em>none yet: upload one below</em>".to_owned() } else { checkboxes };
        let params = serde_json::to_string_pretty(&tool.default_parameters).unwrap_or_else(|_| "{}".into());
        tools.push_str(&format!(
            "<div class=tool><h3>{name}</h3><p>{desc}</p><p><small>image {image}, port {port}, {mb} MiB</small></p>\
             <form method=post action=/ui/launch>{hidden}<input type=hidden name=tool value=\"{name}\">\
             <p>Name <input name=name required pattern=\"[a-z0-9][a-z0-9\\-]{{0,61}}[a-z0-9]\" title=\"2 to 63 of a-z, 0-9 and -, not starting or ending with -\" placeholder=my-{name}></p>\
             <p>Data files: {checkboxes}</p><p>Other file URLs (one a line)<br><textarea name=urls rows=2></textarea></p>\
             <p>Parameters (JSON)<br><textarea name=parameters rows=4>{params}</textarea></p>\
             <button name=action value=launch>Launch</button> <button name=action value=show>Show input</button></form></div>",
            name = esc(&tool.name),
            desc = esc(&tool.description),
            image = esc(&tool.image),
            port = tool.port,
            mb = tool.mem_reservation_mb,
            params = esc(&params),
        ));
    }
    let mut limits = Vec::new();
    if let (Some(me), Some(max)) = (me, state.api.fleet.config().max_per_user) {
        let mine = containers.iter().filter(|c| c.labels.get(&state.api.owner_label) == Some(&me.user)).count();
        limits.push(format!("you run {mine} of at most {max} containers (max_per_user)"));
    }
    if me.is_some() {
        for tool in state.api.registry.tools.iter().filter(|t| t.max_per_user.is_some()) {
            limits.push(format!("{}: at most {} per user", esc(&tool.name), tool.max_per_user.unwrap_or_default()));
        }
    }
    let limits =
        if limits.is_empty() { String::new() } else { format!("<p class=limits>Limits: {}.</p>", limits.join("; ")) };
    let signed_in = match me {
        Some(i) => format!(
            "<div class=who>Signed in as <b>{user}</b>{admin}{only} · <form class=inline method=post action=/auth/logout>{hidden}<button>Log out</button></form></div>",
            user = esc(&i.user),
            admin = if i.admin { " (admin)" } else { "" },
            only = i.only.as_ref().map(|o| format!(", for {} only", esc(&o.join(", ")))).unwrap_or_default(),
        ),
        None => String::new(),
    };
    let body = format!(
        "{signed_in}{limits}<h2>Running</h2><table><tr><th>name</th><th>tool</th><th>status</th><th>ready</th><th></th></tr>{rows}</table>\
         <h2>Launch</h2>{tools}\
         <h2>Upload a data file</h2><form method=post action=/ui/upload enctype=multipart/form-data>{hidden}\
         <input type=file name=file required> <button>Upload</button></form>"
    );
    let mut resp = page("tools", &body).into_response();
    if let Some(set) = set_cookie {
        resp.headers_mut().insert(header::SET_COOKIE, set);
    }
    resp
}

/// Whether the form's CSRF token is right for this browser and caller.
fn csrf_ok(state: &WebState, headers: &HeaderMap, me: Option<&Identity>, token: &str) -> bool {
    crate::auth::csrf_ok(&state.auth, headers, me.map_or("", |i| i.user.as_str()), token)
}

fn error_page(status: StatusCode, message: &str) -> Response {
    (status, page("error", &format!("<p>{}</p><p><a href=\"/\">back</a></p>", esc(message)))).into_response()
}

async fn launch(
    State(state): State<WebState>,
    headers: HeaderMap,
    w: Who,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let get = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
    let me = who(&w);
    if !csrf_ok(&state, &headers, me, &get("csrf")) {
        return crate::auth::csrf_refused();
    }
    if me.is_some_and(|i| i.only.is_some()) {
        return error_page(StatusCode::FORBIDDEN, "this session may use its containers only, not launch");
    }
    let owner = me.map(|i| i.user.clone());
    let mut files: Vec<String> = form.iter().filter(|(k, _)| k == "file").map(|(_, v)| v.clone()).collect();
    files.extend(get("urls").lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned));
    let parameters: serde_json::Value = match serde_json::from_str(get("parameters").trim()) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => return error_page(StatusCode::BAD_REQUEST, "parameters must be a JSON object"),
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &format!("parameters are not JSON: {e}")),
    };
    let request = LaunchRequest {
        name: get("name").trim().to_owned(),
        tool: get("tool"),
        files: Some(files),
        parameters: Some(parameters),
        dry_run: get("action") == "show",
        ..LaunchRequest::default()
    };
    if request.dry_run {
        let Some(tool) = state.api.registry.get(&request.tool) else {
            return error_page(StatusCode::BAD_REQUEST, "no such tool");
        };
        let doc = input_document(&state.api, tool, &request);
        let pretty = serde_json::to_string_pretty(&doc).unwrap_or_default();
        return page("input document", &format!("<pre>{}</pre><p><a href=\"/\">back</a></p>", esc(&pretty)))
            .into_response();
    }
    if let Err(e) = berth_axum::api::check_request(&state.api, &request) {
        return error_page(e.0, &e.1);
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
    if berth_manager::validate_name(&name).is_err() {
        return no_such(&name);
    }
    let me = who(&w);
    let ticket = q.launch.map(LaunchTicket::from_id);
    let record = state.api.launches.get(&name, me);
    if let Some(LaunchRecord { ticket: t, state: LaunchState::Failed { status, message, .. }, .. }) = &record {
        if ticket == Some(*t) {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
            return error_page(status, &format!("launching {name} failed: {message}"));
        }
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
    let lookup = if may_see(&state, me, &name).await {
        state.api.table.lookup(&name).await
    } else {
        berth_proxy::Lookup::Missing
    };
    let visible = lookup != berth_proxy::Lookup::Missing;
    match lookup {
        berth_proxy::Lookup::Starting => waiting(),
        berth_proxy::Lookup::Missing if in_flight => waiting(),
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
                None => error_page(StatusCode::NOT_FOUND, &format!("{name} is not published on this server")),
            }
        }
    }
}

/// The kill button's form.
#[derive(Debug, Default, serde::Deserialize)]
struct KillForm {
    #[serde(default)]
    csrf: String,
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
        return no_such(&name);
    }
    match state.api.fleet.kill(&name).await {
        Ok(()) => Redirect::to("/").into_response(),
        Err(e) => error_page(StatusCode::NOT_FOUND, &e.to_string()),
    }
}

async fn logs(State(state): State<WebState>, w: Who, Path(name): Path<String>) -> Response {
    if !may_see(&state, who(&w), &name).await {
        return no_such(&name);
    }
    match state.api.fleet.manager().logs(&name, LogOptions { tail: Some(2000), since: None }).await {
        Ok(lines) => {
            let text: String = lines.into_iter().map(|l| l.line + "\n").collect();
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
        }
        Err(e) => error_page(StatusCode::NOT_FOUND, &e.to_string()),
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
        return no_such(&name);
    }
    let ticket = q.launch.map(berth_axum::api::LaunchTicket::from_id);
    berth_axum::api::launch_events(state.api, name, who(&w).cloned(), ticket)
}

async fn history(State(state): State<WebState>, w: Who, Path(name): Path<String>) -> Response {
    if !may_see(&state, who(&w), &name).await {
        return no_such(&name);
    }
    let Some(store) = &state.api.history else {
        return error_page(StatusCode::NOT_FOUND, "no history is recorded");
    };
    // Read your writes: requests proxied before this page are on it.
    state.api.activity.flush().await;
    let entries = match store.history(&name, HistoryQuery { since: None, limit: Some(500) }).await {
        Ok(e) => e,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let rows: String = entries
        .iter()
        .map(|e| {
            let t = e.time.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
            format!("<tr><td>{t:.3}</td><td>{}</td><td>{}</td><td>{}</td></tr>", esc(&e.path), e.status, e.bytes)
        })
        .collect();
    page(
        &format!("history of {name}"),
        &format!("<table><tr><th>time (unix)</th><th>path</th><th>status</th><th>bytes</th></tr>{rows}</table>"),
    )
    .into_response()
}

async fn upload(State(state): State<WebState>, headers: HeaderMap, w: Who, mut multipart: Multipart) -> Response {
    // The form's first field is its CSRF token.
    let token = match multipart.next_field().await {
        Ok(Some(field)) if field.name() == Some("csrf") => field.text().await.unwrap_or_default(),
        _ => String::new(),
    };
    if !csrf_ok(&state, &headers, who(&w), &token) {
        return crate::auth::csrf_refused();
    }
    while let Ok(Some(mut field)) = multipart.next_field().await {
        let Some(name) = field.file_name().map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).to_owned()) else {
            continue;
        };
        if !valid_file_name(&name) {
            return error_page(
                StatusCode::BAD_REQUEST,
                &format!("file name {name:?} is not allowed (letters, digits, - _ .)"),
            );
        }
        if let Err(e) = tokio::fs::create_dir_all(&state.uploads).await {
            return error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
        // Streamed to a temporary file, renamed when complete.
        let tmp = state.uploads.join(format!(".{name}.part"));
        let result = async {
            use tokio::io::AsyncWriteExt;
            let mut file = tokio::fs::File::create(&tmp).await?;
            while let Some(chunk) = field.chunk().await.map_err(std::io::Error::other)? {
                file.write_all(&chunk).await?;
            }
            file.sync_all().await?;
            tokio::fs::rename(&tmp, state.uploads.join(&name)).await
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return error_page(StatusCode::BAD_REQUEST, &format!("upload failed: {e}"));
        }
    }
    Redirect::to("/").into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    async fn app(dir: &std::path::Path) -> Router {
        let api = crate::testutil::mock_api(Duration::ZERO).await;
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("data/a.csv"), "x,y\n1,2\n").unwrap();
        let auth = crate::testutil::auth(dir, &api, "").await;
        web_router(WebState {
            api,
            uploads: dir.join("uploads"),
            data: Some(dir.join("data")),
            data_base: "http://gw:8001/_berth/data".into(),
            max_upload: 1024 * 1024,
            auth,
        })
    }

    /// The CSRF cookie and token of the browser these tests play.
    const COOKIE: &str = "berth_csrf=00000000000000000000000000000000000000000000000000000000000000aa";

    async fn token(app: &Router) -> String {
        let req = http::Request::get("/").header(header::COOKIE, COOKIE).body(Body::empty()).unwrap();
        let html = send(app, req).await.1;
        let at = html.find("name=csrf value=\"").unwrap() + "name=csrf value=\"".len();
        html[at..at + 64].to_owned()
    }

    async fn send(app: &Router, mut req: http::Request<Body>) -> (StatusCode, String, Option<String>) {
        if !req.headers().contains_key(header::COOKIE) {
            req.headers_mut().insert(header::COOKIE, COOKIE.parse().unwrap());
        }
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let location = resp.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned());
        let body = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned();
        (status, body, location)
    }

    fn get(path: &str) -> http::Request<Body> {
        http::Request::get(path).body(Body::empty()).unwrap()
    }

    fn form(path: &str, body: &str) -> http::Request<Body> {
        http::Request::post(path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn list_launch_show_kill_upload() {
        let dir = std::env::temp_dir().join(format!("berth-web-{}", std::process::id()));
        let app = app(&dir).await;
        let csrf = token(&app).await;
        let form = |path: &str, body: &str| form(path, &format!("csrf={csrf}&{body}"));
        // Without the token (or with another browser's cookie) forms are refused.
        let (status, _, _) = send(&app, super::tests::form("/ui/kill/v1", "")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let mut other = form("/ui/kill/v1", "");
        other.headers_mut().insert(header::COOKIE, "berth_csrf=11".parse().unwrap());
        assert_eq!(send(&app, other).await.0, StatusCode::FORBIDDEN);
        let (status, html, _) = send(&app, http::Request::get("/").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("views &lt;things&gt;") && html.contains("a.csv") && html.contains(" checked"), "{html}");

        let show = "tool=viewer&name=v1&file=http%3A%2F%2Fgw%3A8001%2F_berth%2Fdata%2Fa.csv&urls=http%3A%2F%2Fx%2Fb.csv&parameters=%7B%22zoom%22%3A2%7D&action=show";
        let (status, html, _) = send(&app, form("/ui/launch", show)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            html.contains("&quot;zoom&quot;: 2") && html.contains("http://x/b.csv") && html.contains("viridis"),
            "{html}"
        );

        let (status, html, _) =
            send(&app, form("/ui/launch", "tool=viewer&name=v1&parameters=%5B1%5D&action=launch")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
        let (status, _, location) =
            send(&app, form("/ui/launch", "tool=viewer&name=v1&parameters=%7B%7D&action=launch")).await;
        let wait = location.unwrap();
        assert!(wait.starts_with("/ui/wait/v1?launch="), "{wait}");
        assert_eq!(status, StatusCode::SEE_OTHER);
        // The wait page until the tool is ready, then off to the tool.
        let mut seen = Vec::new();
        loop {
            let (status, html, location) = send(&app, get(&wait)).await;
            if status == StatusCode::SEE_OTHER {
                assert_eq!(location.as_deref(), Some("/docker/v1/"));
                break;
            }
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            let events = wait.replace("/ui/wait/", "/ui/events/");
            assert!(html.contains(&format!(r#"var url = "{events}";"#)), "{html}");
            seen.push(status);
            assert!(seen.len() < 100, "never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The same name with other parameters conflicts: the wait page says so.
        let (status, _, location) =
            send(&app, form("/ui/launch", "tool=viewer&name=v1&parameters=%7B%22x%22%3A1%7D&action=launch")).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let conflicting = location.unwrap();
        let mut answer = (StatusCode::OK, String::new());
        for _ in 0..100 {
            let (status, html, _) = send(&app, get(&conflicting)).await;
            answer = (status, html);
            if answer.0 == StatusCode::CONFLICT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(answer.0, StatusCode::CONFLICT, "{}", answer.1);
        assert!(answer.1.contains("launching v1 failed"), "{}", answer.1);
        // Without the failed launch's ticket, the name leads to its container.
        let (status, _, location) = send(&app, get("/ui/wait/v1")).await;
        assert_eq!((status, location.as_deref()), (StatusCode::SEE_OTHER, Some("/docker/v1/")));
        let (status, _, _) =
            send(&app, form("/ui/launch", "tool=viewer&name=Bad_Name&parameters=%7B%7D&action=launch")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (_, html, _) = send(&app, http::Request::get("/").body(Body::empty()).unwrap()).await;
        assert!(html.contains("/ui/kill/v1"), "{html}");
        let (status, _, _) = send(&app, form("/ui/kill/v1", "")).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (_, html, _) = send(&app, http::Request::get("/").body(Body::empty()).unwrap()).await;
        assert!(!html.contains("/ui/kill/v1"));

        let boundary = "XyZ";
        let multipart = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"mine.csv\"\r\nContent-Type: text/csv\r\n\r\na,b\n3,4\n\r\n--{boundary}--\r\n"
        );
        let req = http::Request::post("/ui/upload")
            .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
            .body(Body::from(multipart))
            .unwrap();
        let (status, _, _) = send(&app, req).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(std::fs::read_to_string(dir.join("uploads/mine.csv")).unwrap(), "a,b\n3,4\n");
        let (_, html, _) = send(&app, http::Request::get("/").body(Body::empty()).unwrap()).await;
        assert!(html.contains("mine.csv"));
        let bad = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\".hidden\"\r\n\r\nx\r\n--{boundary}--\r\n"
        );
        let req = http::Request::post("/ui/upload")
            .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
            .body(Body::from(bad))
            .unwrap();
        assert_eq!(send(&app, req).await.0, StatusCode::BAD_REQUEST);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

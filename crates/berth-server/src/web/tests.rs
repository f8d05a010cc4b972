use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

/// A directory of one test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("berth-web-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("data/a.csv"), "x,y\n1,2\n").unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The web app over mock containers, its files under `dir`, with the
/// `[auth]` table `auth_toml` (empty: mode `none`).
async fn app_with(dir: &std::path::Path, auth_toml: &str, api: ApiState) -> Router {
    let auth = crate::testutil::auth(dir, &api, auth_toml).await;
    web_router(WebState {
        api,
        uploads: dir.join("uploads"),
        data: Some(dir.join("data")),
        data_base: "http://gw:8001/_berth/data".into(),
        max_upload: 1024 * 1024,
        auth,
    })
}

async fn app(dir: &std::path::Path) -> Router {
    app_with(dir, "", crate::testutil::mock_api(Duration::ZERO).await).await
}

/// Header mode: who asks comes from the identity the tests put in.
const HEADER_MODE: &str =
    "[auth]\nmode = \"header\"\nadmin_groups = [\"admins\"]\n[auth.header]\ntrusted_proxies = [\"127.0.0.1/32\"]\n";

/// The CSRF cookie of the browser these tests play.
const COOKIE: &str = "berth_csrf=00000000000000000000000000000000000000000000000000000000000000aa";

/// The CSRF token of the forms `as_user` (None: no login) is shown.
async fn token(app: &Router, as_user: Option<&Identity>) -> String {
    let html = send(app, with(as_user, get("/ui/launch"))).await.1;
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

/// `req` as asked by `user` (the identity middleware's work).
fn with(user: Option<&Identity>, mut req: http::Request<Body>) -> http::Request<Body> {
    if let Some(u) = user {
        req.extensions_mut().insert(u.clone());
    }
    req
}

fn multipart(csrf: &str, file_name: &str, content: &str) -> http::Request<Body> {
    let boundary = "XyZ";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: text/csv\r\n\r\n{content}\r\n--{boundary}--\r\n"
    );
    http::Request::post("/ui/upload")
        .header(header::CONTENT_TYPE, format!("multipart/form-data; boundary={boundary}"))
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn list_launch_show_kill_upload() {
    let dir = TempDir::new("journey");
    let app = app(&dir.0).await;
    let csrf = token(&app, None).await;
    let form = |path: &str, body: &str| form(path, &format!("csrf={csrf}&{body}"));
    // Without the token (or with another browser's cookie) forms are refused.
    let (status, _, _) = send(&app, super::tests::form("/ui/kill/v1", "")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mut other = form("/ui/kill/v1", "");
    other.headers_mut().insert(header::COOKIE, "berth_csrf=11".parse().unwrap());
    assert_eq!(send(&app, other).await.0, StatusCode::FORBIDDEN);
    let (status, html, _) = send(&app, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("nothing is running") && html.contains("<title>Running · berth</title>"), "{html}");
    let (status, html, _) = send(&app, get("/ui/launch")).await;
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
    let (_, html, _) = send(&app, get("/")).await;
    assert!(html.contains("/ui/kill/v1") && html.contains("data-confirm=\"Kill v1?"), "{html}");
    // Kill asks first (the page without JavaScript); then it is gone.
    let (status, html, _) = send(&app, form("/ui/kill/v1", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("Kill <b>v1</b>?") && html.contains("name=confirm value=yes"), "{html}");
    assert!(send(&app, get("/")).await.1.contains("/ui/kill/v1"), "not killed before it is confirmed");
    let (status, _, location) = send(&app, form("/ui/kill/v1", "confirm=yes")).await;
    assert_eq!((status, location.as_deref()), (StatusCode::SEE_OTHER, Some("/?killed=v1")));
    let (_, html, _) = send(&app, get("/?killed=v1")).await;
    assert!(!html.contains("/ui/kill/v1") && html.contains("v1 was killed."), "{html}");

    let (status, _, location) = send(&app, multipart(&csrf, "mine.csv", "a,b\n3,4\n")).await;
    assert_eq!((status, location.as_deref()), (StatusCode::SEE_OTHER, Some("/ui/launch?uploaded=mine.csv#files")));
    assert_eq!(std::fs::read_to_string(dir.0.join("uploads/mine.csv")).unwrap(), "a,b\n3,4\n");
    let (_, html, _) = send(&app, get("/ui/launch")).await;
    assert!(html.contains("value=\"http://gw:8001/_berth/data/mine.csv\""), "{html}");
    assert_eq!(send(&app, multipart(&csrf, ".hidden", "x")).await.0, StatusCode::BAD_REQUEST);
    // Without a login, data files are shared: uploads first, then the data directory.
    let data = data_router(dir.0.join("uploads"), Some(dir.0.join("data")), true);
    assert_eq!(send(&data, get("/_berth/data/mine.csv")).await.1, "a,b\n3,4\n");
    assert_eq!(send(&data, get("/_berth/data/a.csv")).await.1, "x,y\n1,2\n");
    assert_eq!(send(&data, get("/_berth/data/.hidden")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(send(&data, get("/_berth/data/missing.csv")).await.0, StatusCode::NOT_FOUND);
    // An upload can be deleted (with the form's token only), once.
    let (_, html, _) = send(&app, get("/ui/launch")).await;
    assert!(html.contains("action=/ui/upload/delete") && html.contains("name=file value=\"mine.csv\""), "{html}");
    assert_eq!(send(&app, super::tests::form("/ui/upload/delete", "file=mine.csv")).await.0, StatusCode::FORBIDDEN);
    let (status, _, location) = send(&app, form("/ui/upload/delete", "file=mine.csv")).await;
    assert_eq!((status, location.as_deref()), (StatusCode::SEE_OTHER, Some("/ui/launch?deleted=mine.csv#files")));
    assert!(!dir.0.join("uploads/mine.csv").exists());
    assert_eq!(send(&data, get("/_berth/data/mine.csv")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(send(&app, form("/ui/upload/delete", "file=mine.csv")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(send(&app, form("/ui/upload/delete", "file=..%2Fberth.toml")).await.0, StatusCode::BAD_REQUEST);
    // Streamed from disk: a range of a file, its type from its name.
    let mut ranged = get("/_berth/data/a.csv");
    ranged.headers_mut().insert(header::RANGE, "bytes=2-4".parse().unwrap());
    let resp = data.clone().oneshot(ranged).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "y\n1");
}

#[tokio::test]
async fn bad_forms_come_back_with_errors_beside_their_fields() {
    let dir = TempDir::new("errors");
    let app = app(&dir.0).await;
    let csrf = token(&app, None).await;
    let body = format!(
        "csrf={csrf}&tool=viewer&name=Bad_Name&file=http%3A%2F%2Fgw%3A8001%2F_berth%2Fdata%2Fnot-there.csv\
         &urls=ftp%3A%2F%2Fx%2Fy&parameters=%7B%22zoom%22%3A&action=launch"
    );
    let (status, html, _) = send(&app, form("/ui/launch", &body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("class=errors role=alert"), "a summary: {html}");
    // Each message in its field's error element; the form keeps what was typed.
    for (field, says) in [
        ("t0-name-err", "name"),
        ("t0-files-err", "not-there.csv is not one of your files"),
        ("t0-urls-err", "not an http(s) URL: ftp://x/y"),
        ("t0-params-err", "parameters are not JSON"),
    ] {
        let at = html.find(&format!("<p class=error id={field}>")).unwrap_or_else(|| panic!("{field}: {html}"));
        let text = &html[at..at + html[at..].find("</p>").unwrap()];
        assert!(text.contains(says), "{field}: {text}");
    }
    assert!(html.contains("value=\"Bad_Name\"") && html.contains("{&quot;zoom&quot;:</textarea>"), "{html}");
    assert!(html.contains("<details open>"), "the form is unfolded: {html}");
    assert!(html.contains("aria-invalid=true"), "{html}");
    // Nothing was launched.
    assert!(send(&app, get("/")).await.1.contains("nothing is running"));
}

#[tokio::test]
async fn the_running_list_refreshes_by_etag() {
    let dir = TempDir::new("rows");
    let app = app(&dir.0).await;
    let (status, rows, _) = send(&app, get("/ui/running")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(rows.contains("nothing is running") && !rows.contains("<html"), "{rows}");
    let resp = app.clone().oneshot(get("/ui/running")).await.unwrap();
    let etag = resp.headers().get(header::ETAG).unwrap().clone();
    let again = app.clone().oneshot(
        http::Request::get("/ui/running").header(header::IF_NONE_MATCH, etag.clone()).body(Body::empty()).unwrap(),
    );
    assert_eq!(again.await.unwrap().status(), StatusCode::NOT_MODIFIED);
    // The pages' policy allows their own inline code and nothing else.
    let page = app.clone().oneshot(get("/")).await.unwrap();
    let csp = page.headers().get(header::CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap().to_owned();
    assert!(csp.contains("script-src 'sha256-") && csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(page.headers().get(header::CACHE_CONTROL).unwrap(), "no-store");
}

#[tokio::test]
async fn uploads_are_per_user_under_a_login() {
    let dir = TempDir::new("people");
    let app = app_with(&dir.0, HEADER_MODE, crate::testutil::mock_api(Duration::ZERO).await).await;
    let alice = Identity::new("alice");
    let bob = Identity::new("bob");
    let root = Identity::new("root").with_admin(true);
    for (who, content) in [(&alice, "alice's\n"), (&bob, "bob's\n"), (&root, "root's\n")] {
        let csrf = token(&app, Some(who)).await;
        let (status, _, _) = send(&app, with(Some(who), multipart(&csrf, "same.csv", content))).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{}", who.user);
    }
    // One directory each, named by neither the user nor a plain hash of them.
    let dirs: Vec<String> = std::fs::read_dir(dir.0.join("uploads"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs.len(), 3, "{dirs:?}");
    assert!(dirs.iter().all(|d| valid_user_dir(d)), "{dirs:?}");
    assert!(!dir.0.join("uploads/same.csv").exists(), "nothing in the shared directory");
    let dir_of = |who: &Identity| UploadDir::of_user(&dir.0.join("uploads"), &who.user).unwrap().dir.unwrap();
    let (a, b) = (dir_of(&alice), dir_of(&bob));
    assert_eq!(std::fs::read_to_string(dir.0.join("uploads").join(&a).join("same.csv")).unwrap(), "alice's\n");
    assert_eq!(std::fs::read_to_string(dir.0.join("uploads").join(&b).join("same.csv")).unwrap(), "bob's\n");

    // Each sees their own (the admin too: uploads are not administered).
    let page_of = |who: &Identity| with(Some(who), get("/ui/launch"));
    let alices = send(&app, page_of(&alice)).await.1;
    assert!(alices.contains(&format!("value=\"http://gw:8001/_berth/data/{a}/same.csv\"")), "{alices}");
    assert!(alices.contains("value=\"http://gw:8001/_berth/data/a.csv\""), "shared data for everyone");
    let roots = send(&app, page_of(&root)).await.1;
    for page in [&alices, &roots] {
        assert!(!page.contains(&b), "bob's directory shown to someone else");
    }
    // Launching (or previewing) with bob's file is refused beside the field,
    // as a checkbox value or as a URL, however its directory is spelled.
    let csrf = token(&app, Some(&alice)).await;
    let bobs = format!("http%3A%2F%2Fgw%3A8001%2F_berth%2Fdata%2F{b}%2Fsame.csv");
    for body in [
        format!("csrf={csrf}&tool=viewer&name=a1&file={bobs}&parameters=%7B%7D&action=show"),
        format!("csrf={csrf}&tool=viewer&name=a1&urls={bobs}&parameters=%7B%7D&action=show"),
        format!(
            "csrf={csrf}&tool=viewer&name=a1&urls=http%3A%2F%2F172.17.0.1%3A8001%2F_berth%2Fdata%2F{}%2Fsame.csv&parameters=%7B%7D&action=launch",
            b.to_uppercase()
        ),
        // "u" percent-encoded (%75) behind a dot segment: still bob's.
        format!(
            "csrf={csrf}&tool=viewer&name=a1&urls=http%3A%2F%2Fgw%2F_berth%2Fdata%2Fx%2F..%2F%2575{}%2Fsame.csv&parameters=%7B%7D&action=launch",
            &b[1..]
        ),
    ] {
        let (status, html, _) = send(&app, with(Some(&alice), form("/ui/launch", &body))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(html.contains("is not one of your files"), "{html}");
    }
    // Her own file goes into her document.
    let own = format!("http%3A%2F%2Fgw%3A8001%2F_berth%2Fdata%2F{a}%2Fsame.csv");
    let body = format!("csrf={csrf}&tool=viewer&name=a1&file={own}&parameters=%7B%7D&action=show");
    let (status, html, _) = send(&app, with(Some(&alice), form("/ui/launch", &body))).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(&format!("/_berth/data/{a}/same.csv")), "{html}");
    // Deleting "same.csv" deletes the caller's own, never another's.
    let body = format!("csrf={csrf}&file=same.csv");
    let (status, _, _) = send(&app, with(Some(&alice), form("/ui/upload/delete", &body))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(!dir.0.join("uploads").join(&a).join("same.csv").exists());
    assert_eq!(std::fs::read_to_string(dir.0.join("uploads").join(&b).join("same.csv")).unwrap(), "bob's\n");
    std::fs::write(dir.0.join("uploads").join(&a).join("same.csv"), "alice's\n").unwrap();

    // What containers can fetch: a user's directory by its (unguessable)
    // name; nothing flat from the uploads; the shared data as before.
    let data = data_router(dir.0.join("uploads"), Some(dir.0.join("data")), false);
    assert_eq!(send(&data, get(&format!("/_berth/data/{a}/same.csv"))).await.1, "alice's\n");
    assert_eq!(send(&data, get("/_berth/data/a.csv")).await.1, "x,y\n1,2\n");
    std::fs::write(dir.0.join("uploads/old.csv"), "from mode none\n").unwrap();
    for path in [
        "/_berth/data/old.csv".to_owned(),
        "/_berth/data/same.csv".to_owned(),
        format!("/_berth/data/{}/same.csv", a.to_uppercase()),
        "/_berth/data/u-00000000000000000000000000000000/same.csv".to_owned(),
        format!("/_berth/data/{a}/.dir-key"),
        "/_berth/data/uploads/old.csv".to_owned(),
        "/_berth/data/../uploads/old.csv".to_owned(),
        "/_berth/data/.dir-key".to_owned(),
    ] {
        assert_eq!(send(&data, get(&path)).await.0, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn others_containers_are_missing_on_every_page() {
    let dir = TempDir::new("owners");
    let api = crate::testutil::mock_api(Duration::ZERO).await;
    let app = app_with(&dir.0, HEADER_MODE, api.clone()).await;
    let alice = Identity::new("alice");
    let bob = Identity::new("bob");
    let request = LaunchRequest { name: "alices".into(), tool: "viewer".into(), ..LaunchRequest::default() };
    berth_axum::api::launch_tool(&api, &request, Some("alice")).await.unwrap();
    let missing = |path: &str| path.replace("alices", "nobodys");
    for path in ["/ui/logs/alices", "/ui/logs/alices/text", "/ui/logs/alices/text?follow=1", "/ui/history/alices"] {
        let theirs = send(&app, with(Some(&bob), get(path))).await;
        let nobodys = send(&app, with(Some(&bob), get(&missing(path)))).await;
        assert_eq!(theirs.0, StatusCode::NOT_FOUND, "{path}");
        // Signed in as bob, with no form (a logout form needs a CSRF token).
        assert!(theirs.1.contains("Signed in as <b>bob</b>") && !theirs.1.contains("<form"), "{}", theirs.1);
        assert_eq!((theirs.0, theirs.1), (nobodys.0, nobodys.1.replace("nobodys", "alices")), "{path}");
        if !path.contains("follow") {
            // Alice's own (no history is recorded here: that page says so).
            let own = send(&app, with(Some(&alice), get(path))).await;
            assert_eq!(own.0 == StatusCode::NOT_FOUND, path.contains("history"), "{path}: {own:?}");
        }
    }
    for path in ["/", "/ui/running", "/ui/fleet", "/ui/launch"] {
        let (status, html, _) = send(&app, with(Some(&bob), get(path))).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(!html.contains("alices"), "{path}: {html}");
        if path == "/" || path == "/ui/running" {
            assert!(send(&app, with(Some(&alice), get(path))).await.1.contains("alices"), "{path}");
        }
    }
    let csrf = token(&app, Some(&bob)).await;
    let (status, _, _) =
        send(&app, with(Some(&bob), form("/ui/kill/alices", &format!("csrf={csrf}&confirm=yes")))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = send(&app, with(Some(&bob), form("/ui/kill/alices", &format!("csrf={csrf}")))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no confirmation page for someone else's container");
}

#[tokio::test]
async fn the_fleet_page_shows_budget_counts_and_removals() {
    use berth_fleet::{FleetConfig, MemoryActivityStore};
    let dir = TempDir::new("fleet");
    let mut api = crate::testutil::mock_api(Duration::ZERO).await;
    let config = FleetConfig {
        memory_budget_mb: Some(40),
        owner_label: api.owner_label.clone(),
        idle_timeout: Some(Duration::from_secs(600)),
        ..FleetConfig::default()
    };
    api.fleet = Arc::new(Fleet::new(api.fleet.manager().clone(), Arc::new(MemoryActivityStore::new()), config));
    let app = app_with(&dir.0, "", api.clone()).await;
    for name in ["f1", "f2", "f3"] {
        let request = LaunchRequest { name: name.into(), tool: "viewer".into(), ..LaunchRequest::default() };
        berth_axum::api::launch_tool(&api, &request, None).await.unwrap();
    }
    // 16 MiB each in 40: f1 was evicted for f3.
    let (status, html, _) = send(&app, get("/ui/fleet")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("32 of 40 MiB") && html.contains("(80%)") && html.contains("fill warn"), "{html}");
    assert!(html.contains("<td data-label=Tool>viewer</td><td data-label=Containers class=num>2</td>"), "{html}");
    let removals = &html[html.find("id=removals").unwrap()..];
    assert!(removals.contains(">f1<") && removals.contains("evicted") && removals.contains("for f3"), "{removals}");
    assert!(html.contains("after 10 min without requests"), "{html}");
}

#[tokio::test]
async fn history_pages_go_back_from_the_newest() {
    let dir = TempDir::new("history");
    let mut api = crate::testutil::mock_api(Duration::ZERO).await;
    let store = Arc::new(berth_history::HistoryStore::in_memory().unwrap());
    api.history = Some(store.clone());
    let app = app_with(&dir.0, "", api.clone()).await;
    let request = LaunchRequest { name: "hh".into(), tool: "viewer".into(), ..LaunchRequest::default() };
    berth_axum::api::launch_tool(&api, &request, None).await.unwrap();
    let start = SystemTime::now();
    let records: Vec<berth_proxy::ActivityRecord> = (0..120u64)
        .map(|i| berth_proxy::ActivityRecord {
            container: "hh".into(),
            time: start + Duration::from_millis(i),
            path: format!("/docker/hh/r{i:03}"),
            status: if i == 119 { 503 } else { 200 },
            bytes: i,
            kind: berth_proxy::ActivityKind::Http,
            duration: Duration::ZERO,
        })
        .collect();
    store.try_record(records).await.unwrap();
    let rows = |html: &str| html.matches("<tr><td data-label=Time>").count();
    let (status, first, _) = send(&app, get("/ui/history/hh")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rows(&first), HISTORY_PAGE);
    assert!(first.find("r119").unwrap() < first.find("r118").unwrap(), "newest first");
    assert!(first.contains("badge bad\">503") && !first.contains("r069<"), "{first}");
    assert!(first.contains("href=\"/ui/history/hh?page=1\" rel=next") && !first.contains("rel=prev"), "{first}");
    let (_, second, _) = send(&app, get("/ui/history/hh?page=1")).await;
    assert!(second.contains("r069<") && second.contains("r020<") && !second.contains("r019<"), "{second}");
    let (_, last, _) = send(&app, get("/ui/history/hh?page=2")).await;
    assert_eq!(rows(&last), 20);
    assert!(last.contains("r000<") && last.contains("rel=prev") && !last.contains("rel=next"), "{last}");
    // A page past the end is empty, not an error; a bad page number is the first page.
    assert!(send(&app, get("/ui/history/hh?page=7")).await.1.contains("no requests yet"));
    assert_eq!(rows(&send(&app, get("/ui/history/hh?page=x")).await.1), HISTORY_PAGE);
}

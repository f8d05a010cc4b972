//! People in `berth serve`, with real parts: containers from the test tool
//! on Docker; a real nginx (Debian's) in front for `[auth] mode =
//! "header"`; a real OpenID Connect provider (Authlib's, from Debian's
//! python3-authlib, in `support/oidc_provider.py`) and headless Chromium
//! for `mode = "oidc"`.
//!
//! Each test fails instead of skipping when a part it needs is missing
//! under `BERTH_REQUIRE_DOCKER=1` or `BERTH_REQUIRE_BROWSER=1` (CI).
//! Traffic goes to loopback only; 127.0.0.2 plays a host that is not the
//! trusted proxy.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns panic on failure by design.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_testkit::TestRun;
use fantoccini::Locator;
use serde_json::json;
use support::{Answer, Berth, Browser, ChildGuard, Req, TempDir, file_text, free_port, free_port_pair, missing};

const TOKEN: &str = "service-token-for-tests";
const HOST_SUFFIX: &str = "docker.localhost";

/// The registry: `probe` (path routing) and `hosty` (hostname routing),
/// the test tool, with a persistent volume per owner, carrying the run's
/// labels so that its clean-up covers them.
fn write_tools(dir: &Path, image: &str, run: &TestRun) {
    let labels: String = run.labels().iter().map(|(k, v)| format!("{k:?} = {v:?}\n")).collect();
    let run_id = run.id().replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let mut tools = String::new();
    for (name, routing) in [("probe", "path"), ("hosty", "host")] {
        tools.push_str(&format!(
            "[[tools]]\nname = \"{name}\"\nimage = {image:?}\nport = 80\nmem_reservation_mb = 16\nrouting = \"{routing}\"\n\
             volumes = [{{ name = \"v{run_id}-{{owner}}\", path = \"/data\" }}]\n[tools.labels]\n{labels}\n"
        ));
    }
    std::fs::write(dir.join("tools.toml"), tools).unwrap();
}

/// berth.toml: common settings plus `extra` (sections). The network berth
/// makes for its containers carries the run's labels, so that the run's
/// clean-up removes it.
fn write_config(dir: &Path, port: u16, public_url: &str, root_label: &str, run: &TestRun, extra: &str) {
    let network_labels: Vec<String> = run.labels().iter().map(|(k, v)| format!("{k:?} = {v:?}")).collect();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = {state:?}\nroot_label = \"{root_label}\"\ntools = \"tools.toml\"\n\n\
         [engine]\nendpoints = \"published\"\nnetwork_labels = {{ {network_labels} }}\n\n\
         [proxy]\nhost_suffix = \"{HOST_SUFFIX}\"\nrouting = \"both\"\npublic_url = \"{public_url}\"\nlogs_path = \"docker-logs\"\n\
         start_timeout_secs = 60\n\n[api]\ntoken = \"{TOKEN}\"\n\n[fleet]\nmax_per_user = 2\n\n{extra}",
        state = dir.join("state").display().to_string(),
        network_labels = network_labels.join(", "),
    );
    std::fs::write(dir.join("berth.toml"), config).unwrap();
}

/// The CSRF cookie an answer set and the token of its forms.
fn csrf_of(page: &Answer) -> (String, String) {
    let cookie = page.set_cookie("berth_csrf").unwrap();
    let at = page.body.find("name=csrf value=\"").unwrap() + "name=csrf value=\"".len();
    (cookie, page.body[at..at + 64].to_owned())
}

/// Whether `answer` is exactly the not-found page of a missing `name`.
fn is_missing_page(answer: &Answer, name: &str, missing: &Answer, missing_name: &str) -> bool {
    answer.status == 404 && answer.body == missing.body.replace(missing_name, name)
}

fn basic(user: &str) -> String {
    // user:user in base64, for the three users of the nginx test.
    let encoded = match user {
        "alice" => "YWxpY2U6YWxpY2U=",
        "bob" => "Ym9iOmJvYg==",
        "root" => "cm9vdDpyb290",
        other => panic!("no password for {other}"),
    };
    format!("Basic {encoded}")
}

/// Starts nginx from Debian on `port` in front of berth at `upstream`,
/// authenticating alice, bob and root (group berth-admins) with basic auth
/// and passing the user, groups and email (alice's and root's; bob has
/// none) in `X-Forwarded-User`/`-Groups`/`-Email`. One process (no
/// master and workers), so that killing the child leaves nothing running.
fn start_nginx(dir: &Path, port: u16, upstream: SocketAddr) -> Option<ChildGuard> {
    let Some(nginx) = support::on_path(&["nginx", "/usr/sbin/nginx"]) else {
        missing("header_mode_behind_nginx", "nginx", "apt-get install nginx-light");
        return None;
    };
    let d = dir.join("nginx");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("htpasswd"), "alice:{PLAIN}alice\nbob:{PLAIN}bob\nroot:{PLAIN}root\n").unwrap();
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let d = d.display().to_string();
    let conf = format!(
        "{user}master_process off;\nerror_log {d}/error.log info;\npid {d}/nginx.pid;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           map $remote_user $berth_groups {{ default \"\"; root \"berth-admins,ops\"; }}\n\
           map $remote_user $berth_email {{ default \"\"; alice \"alice@example.org\"; root \"root@example.org\"; }}\n\
           map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    server_name _;\n    auth_basic \"berth\";\n\
             auth_basic_user_file {d}/htpasswd;\n    location / {{\n      proxy_pass http://{upstream};\n\
               proxy_http_version 1.1;\n      proxy_set_header Host $http_host;\n\
               proxy_set_header Authorization \"\";\n      proxy_set_header X-Forwarded-User $remote_user;\n      proxy_set_header X-Forwarded-Groups $berth_groups;\n\
               proxy_set_header X-Forwarded-Email $berth_email;\n\
               proxy_set_header Upgrade $http_upgrade;\n      proxy_set_header Connection $connection_upgrade;\n\
               proxy_buffering off;\n    }}\n  }}\n}}\n",
        user = if root { "user root;\n" } else { "" },
    );
    std::fs::write(format!("{d}/nginx.conf"), conf).unwrap();
    let log = std::fs::File::create(format!("{d}/stderr.log")).unwrap();
    let child = Command::new(nginx)
        .args(["-p", &d, "-c", &format!("{d}/nginx.conf"), "-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting nginx");
    Some(ChildGuard(child))
}

/// A request through nginx as `user`.
fn as_user<'a>(user: &str, req: Req<'a>) -> Req<'a> {
    req.header("authorization", &basic(user))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_mode_behind_nginx() {
    let Some(docker) = berth_testkit::docker_or_skip("header_mode_behind_nginx").await else { return };
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::test_tool_image(&docker).await.unwrap();
    let dir = TempDir::new("berth-people-header");
    let port = free_port_pair();
    let nginx_port = free_port();
    let root_label = format!("berth-people-h{}", std::process::id());
    write_tools(&dir.0, &image, &run);
    write_config(
        &dir.0,
        port,
        &format!("http://127.0.0.1:{nginx_port}"),
        &root_label,
        &run,
        "[auth]\nmode = \"header\"\nadmin_groups = [\"berth-admins\"]\nsession_ttl_secs = 5\n\
         [auth.header]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    );
    let berth = Berth::start(&dir.0, port).await;
    let Some(_nginx) = start_nginx(&dir.0, nginx_port, berth.addr) else { return };
    let front = SocketAddr::from(([127, 0, 0, 1], nginx_port));
    support::poll("nginx", Duration::from_secs(10), || async move {
        let a = Req::get("/healthz").try_send(front).await?;
        (a.status == 401 || a.status == 200).then_some(())
    })
    .await;
    let outcome = tokio::spawn(header_checks(front, berth.addr, run.id().to_owned())).await;
    if let Err(e) = outcome {
        eprintln!(
            "---- berth ----\n{}\n---- nginx ----\n{}",
            berth.output(),
            file_text(&dir.0.join("nginx/error.log"))
        );
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn header_checks(front: SocketAddr, berth: SocketAddr, run_id: String) {
    let run_id: String = run_id.chars().filter(char::is_ascii_alphanumeric).collect();
    let a1 = format!("a1-{run_id}");
    let b1 = format!("b1-{run_id}");
    let ah = format!("ah-{run_id}");
    let gone = format!("zz-{run_id}");
    let launch = |user: &str, name: &str, tool: &str| {
        as_user(user, Req::method("POST", "/api/v1/containers?wait=true").json(&json!({"name": name, "tool": tool})))
    };
    // Nobody without the proxy's login; identity headers a client sends
    // through the proxy are the proxy's, not the client's.
    assert_eq!(Req::get("/api/v1/containers").send(front).await.status, 401);
    let a = launch("alice", &a1, "probe").header("x-forwarded-user", "root").send(front).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()["owner"], "alice");
    let a = launch("alice", &ah, "hosty").send(front).await;
    assert_eq!((a.status, a.json()["owner"].as_str()), (200, Some("alice")), "{}", a.body);
    let a = launch("bob", &b1, "probe").send(front).await;
    assert_eq!(a.status, 200, "{}", a.body);
    // max_per_user = 2: alice's third is a 429 naming the limit.
    let a = launch("alice", &format!("a3-{run_id}"), "probe").send(front).await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert!(a.json()["error"].as_str().unwrap().contains("max_per_user"), "{}", a.body);

    // What alice's container receives: who she is, no berth cookie, the
    // tool's own cookie, no forged identity header.
    let headers = as_user("alice", Req::get(&format!("/docker/{a1}/headers")))
        .header("cookie", "berth_session=forged; berth_csrf=00ff; tool_pref=dark")
        .header("x-berth-user", "mallory")
        .header("x-berth-groups", "berth-admins")
        .header("x-berth-email", "mallory@example.org")
        .header("x-forwarded-email", "root@example.org")
        .send(front)
        .await;
    assert_eq!(headers.status, 200, "{}", headers.body);
    let lower = headers.body.to_ascii_lowercase();
    assert!(lower.contains("x-berth-user: alice\n"), "{}", headers.body);
    assert!(lower.contains("x-berth-email: alice@example.org\n"), "{}", headers.body);
    assert!(!lower.contains("root@example.org"), "nginx sets the email header: {}", headers.body);
    assert!(!lower.contains("mallory") && !lower.contains("x-berth-groups"), "{}", headers.body);
    assert!(lower.contains("cookie: tool_pref=dark\n") && !lower.contains("berth_"), "{}", headers.body);
    let host = format!("{ah}.{HOST_SUFFIX}:{}", front.port());
    let on_host = as_user("alice", Req::get("/headers")).header("host", &host).send(front).await;
    assert_eq!(on_host.status, 200, "{}", on_host.body);
    assert!(on_host.body.to_ascii_lowercase().contains("x-berth-user: alice\n"), "{}", on_host.body);

    // Bob: each of alice's containers is exactly a missing one, on every surface.
    let bob = |req: Req<'static>| as_user("bob", req);
    // Bob has no email: his container gets none, forged or not.
    let own = bob(Req::get(leak(format!("/docker/{b1}/headers"))))
        .header("x-berth-email", "alice@example.org")
        .send(front)
        .await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert!(!own.body.to_ascii_lowercase().contains("x-berth-email"), "{}", own.body);
    let both = |path: String| {
        let (mine, missing) = (path.replace("{}", &a1), path.replace("{}", &gone));
        (leak(mine), leak(missing))
    };
    for template in [
        "/docker/{}/headers",
        "/docker/{}/docker-logs",
        "/api/v1/containers/{}",
        "/api/v1/containers/{}/logs",
        "/api/v1/containers/{}/history",
        "/ui/logs/{}",
        "/ui/logs/{}/text",
        "/ui/history/{}",
    ] {
        let (mine, miss) = both(template.to_owned());
        let theirs = bob(Req::get(mine)).send(front).await;
        let missing = bob(Req::get(miss)).send(front).await;
        assert!(is_missing_page(&theirs, &a1, &missing, &gone), "{mine}: {theirs:?} vs {missing:?}");
    }
    for template in ["/ui/wait/{}", "/api/v1/containers/{}/events", "/ui/events/{}"] {
        let (mine, miss) = both(template.to_owned());
        let theirs = bob(Req::get(mine)).peek(front, Duration::from_millis(700)).await;
        let missing = bob(Req::get(miss)).peek(front, Duration::from_millis(700)).await;
        assert_eq!(theirs.status, missing.status, "{mine}");
        assert_eq!(theirs.body, missing.body.replace(&gone, &a1), "{mine}");
        assert_eq!(
            theirs.header("location").map(|l| l.replace(&a1, "X")),
            missing.header("location").map(|l| l.replace(&gone, "X"))
        );
    }
    // Hostname routing, and a websocket upgrade under both routings.
    let theirs = bob(Req::get("/headers")).header("host", &host).send(front).await;
    let missing =
        bob(Req::get("/headers")).header("host", &format!("{gone}.{HOST_SUFFIX}:{}", front.port())).send(front).await;
    assert!(is_missing_page(&theirs, &ah, &missing, &gone), "{theirs:?}");
    // The logs sub-path of a container host is its owner's too.
    let theirs = bob(Req::get("/docker-logs")).header("host", &host).send(front).await;
    let missing = bob(Req::get("/docker-logs"))
        .header("host", &format!("{gone}.{HOST_SUFFIX}:{}", front.port()))
        .send(front)
        .await;
    assert!(is_missing_page(&theirs, &ah, &missing, &gone), "bob's docker-logs on alice's host: {theirs:?}");
    let own = as_user("alice", Req::get("/docker-logs")).header("host", &host).send(front).await;
    assert_eq!(own.status, 200, "alice's docker-logs on her host: {own:?}");
    let ws = |req: Req<'static>| {
        req.header("upgrade", "websocket")
            .header("connection", "upgrade")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
    };
    let a =
        ws(as_user("alice", Req::get(leak(format!("/docker/{a1}/ws"))))).peek(front, Duration::from_millis(700)).await;
    assert_eq!(a.status, 101, "alice's own websocket: {a:?}");
    let b = ws(bob(Req::get(leak(format!("/docker/{a1}/ws"))))).peek(front, Duration::from_millis(700)).await;
    assert_eq!(b.status, 404, "bob's websocket to alice's container: {b:?}");
    let b = ws(bob(Req::get("/ws"))).header("host", &host).peek(front, Duration::from_millis(700)).await;
    assert_eq!(b.status, 404, "bob's websocket to alice's container host: {b:?}");
    // Lists, volumes, removal, links.
    let list = bob(Req::get("/api/v1/containers")).send(front).await.json();
    let names: Vec<&str> = list["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, [b1.as_str()]);
    let volumes = bob(Req::get("/api/v1/volumes")).send(front).await.json();
    let vols: Vec<&str> = volumes["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(vols, [format!("v{run_id}-bob")], "{volumes}");
    let alices_volume = format!("v{run_id}-alice");
    let a = bob(Req::method("DELETE", leak(format!("/api/v1/volumes/{alices_volume}")))).send(front).await;
    assert_eq!(a.status, 404, "{}", a.body);
    let a = bob(Req::method("DELETE", leak(format!("/api/v1/containers/{a1}")))).send(front).await;
    assert_eq!(a.status, 404);
    let a = bob(Req::method("POST", leak(format!("/api/v1/containers/{a1}/links")))).send(front).await;
    assert_eq!(a.status, 403);
    let index = bob(Req::get("/")).send(front).await;
    assert!(index.body.contains("Signed in as <b>bob</b>") && !index.body.contains(&a1), "{}", index.body);
    assert!(index.body.contains("you run 1 of at most 2 containers (max_per_user)"), "{}", index.body);
    // The kill form, with bob's valid CSRF token: 404; without: 403.
    let (csrf_cookie, token) = csrf_of(&index);
    let kill = |user: &str, name: &str, token: &str| {
        as_user(user, Req::method("POST", leak(format!("/ui/kill/{name}"))))
            .header("cookie", &format!("berth_csrf={csrf_cookie}"))
            .form(&format!("csrf={token}"))
    };
    assert_eq!(kill("bob", &a1, &token).send(front).await.status, 404);
    assert_eq!(kill("bob", &b1, "0000").send(front).await.status, 403, "a wrong CSRF token");
    assert_eq!(kill("alice", &b1, &token).send(front).await.status, 403, "bob's token is not alice's");
    // The list's refreshes and the fleet page do not name alice's containers to bob.
    for path in ["/ui/running", "/ui/fleet", "/ui/launch"] {
        let page = bob(Req::get(path)).send(front).await;
        assert!(page.status == 200 && !page.body.contains(&a1) && !page.body.contains(&ah), "{path}: {page:?}");
    }

    // Uploads are each user's own: alice's file is in a directory named
    // by neither her name nor a plain hash of it, listed to her only,
    // refused to bob's launches, served to containers under that name only.
    let upload = |user: &str, cookie: &str, token: &str, file: &str, content: &str| {
        let boundary = "berthTestBoundary";
        let mut req = as_user(user, Req::method("POST", "/ui/upload"))
            .header("cookie", &format!("berth_csrf={cookie}"))
            .header("content-type", &format!("multipart/form-data; boundary={boundary}"));
        req.body = Some(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{token}\r\n--{boundary}\r\n\
             Content-Disposition: form-data; name=\"file\"; filename=\"{file}\"\r\nContent-Type: text/csv\r\n\r\n\
             {content}\r\n--{boundary}--\r\n"
        ));
        req
    };
    let launch_page = as_user("alice", Req::get("/ui/launch")).send(front).await;
    let (alice_cookie, alice_token) = csrf_of(&launch_page);
    let a = upload("alice", &alice_cookie, &alice_token, "secret.csv", "alice only").send(front).await;
    assert_eq!(a.status, 303, "{a:?}");
    let alices_page = as_user("alice", Req::get("/ui/launch")).send(front).await.body;
    let at = alices_page.find("/_berth/data/u-").expect("alice's upload in her launch form") + "/_berth/data/".len();
    let alices_dir = alices_page[at..at + 34].to_owned();
    assert!(alices_page[at + 34..].starts_with("/secret.csv"), "{alices_page}");
    assert!(!alices_dir.contains("alice"), "{alices_dir}");
    let bobs_page = bob(Req::get("/ui/launch")).send(front).await.body;
    assert!(!bobs_page.contains(&alices_dir) && !bobs_page.contains("secret.csv"), "{bobs_page}");
    let staging = SocketAddr::new(berth.ip(), berth.port() + 1);
    let fetched = Req::get(leak(format!("/_berth/data/{alices_dir}/secret.csv"))).send(staging).await;
    assert_eq!((fetched.status, fetched.body.as_str()), (200, "alice only"), "{fetched:?}");
    assert_eq!(Req::get("/_berth/data/secret.csv").send(staging).await.status, 404, "not in a shared namespace");
    let (bob_cookie, bob_token) = csrf_of(&bob(Req::get("/ui/launch")).send(front).await);
    let stolen = format!("http%3A%2F%2Fgw%2F_berth%2Fdata%2F{alices_dir}%2Fsecret.csv");
    for field in ["file", "urls"] {
        let a = bob(Req::method("POST", "/ui/launch"))
            .header("cookie", &format!("berth_csrf={bob_cookie}"))
            .form(&format!(
                "csrf={bob_token}&tool=probe&name=b9-{run_id}&{field}={stolen}&parameters=%7B%7D&action=launch"
            ))
            .send(front)
            .await;
        assert!(a.status == 400 && a.body.contains("is not one of your files"), "bob launching with {field}: {a:?}");
    }

    // The admin (group berth-admins) sees and reaches both.
    let list = as_user("root", Req::get("/api/v1/containers")).send(front).await.json();
    assert_eq!(list["containers"].as_array().unwrap().len(), 3, "{list}");
    let a = as_user("root", Req::get(leak(format!("/docker/{a1}/headers")))).send(front).await;
    assert_eq!(a.status, 200);
    let lower = a.body.to_ascii_lowercase();
    assert!(
        lower.contains("x-berth-user: root\n") && lower.contains("x-berth-groups: berth-admins,ops\n"),
        "{}",
        a.body
    );

    // Metrics name every container: admins and the service only.
    let m = bob(Req::get("/metrics")).send(front).await;
    assert_eq!(m.status, 403, "{m:?}");
    assert!(!m.body.contains(&a1), "{}", m.body);
    let series = format!("container=\"{a1}\"");
    let m = support::poll("alice's requests in the metrics", Duration::from_secs(10), || {
        let series = series.clone();
        async move {
            let m = as_user("root", Req::get("/metrics")).send(front).await;
            (m.status == 200 && m.body.contains(&series)).then_some(m)
        }
    })
    .await;
    assert!(m.body.contains("berth_requests_total{"), "{}", m.body);
    let m = Req::get("/metrics").header("authorization", &format!("Bearer {TOKEN}")).send(berth).await;
    assert!(m.status == 200 && m.body.contains(&series), "{m:?}");

    // A launch from the web form over alice's limit (she has 2): the
    // launch's page says why, with the limit's 429.
    let index = as_user("alice", Req::get("/")).send(front).await;
    let (alice_csrf, alice_token) = csrf_of(&index);
    let over = format!("a4-{run_id}");
    let a = as_user("alice", Req::method("POST", "/ui/launch"))
        .header("cookie", &format!("berth_csrf={alice_csrf}"))
        .form(&format!("csrf={alice_token}&tool=probe&name={over}&parameters=%7B%7D&action=launch"))
        .send(front)
        .await;
    assert_eq!(a.status, 303, "{a:?}");
    let wait = leak(a.header("location").unwrap().to_owned());
    assert!(wait.starts_with(&format!("/ui/wait/{over}?launch=")), "{wait}");
    let page = support::poll("the launch's page to say it failed", Duration::from_secs(20), || async {
        // The please-wait page (503) until the launch has an outcome.
        let page = as_user("alice", Req::get(wait)).send(front).await;
        (page.status != 503).then_some(page)
    })
    .await;
    assert_eq!(page.status, 429, "{page:?}");
    assert!(
        page.body.contains(&format!("launching {over} failed"))
            && page.body.contains("limit of 2 containers per user (max_per_user; alice has 2)"),
        "{}",
        page.body
    );

    // The same headers straight to berth from a host that is not the
    // trusted proxy: refused everywhere, never believed.
    for (path, host) in [
        ("/api/v1/containers".to_owned(), None),
        (format!("/docker/{a1}/headers"), None),
        ("/".to_owned(), None),
        ("/headers".to_owned(), Some(host.replace(&front.port().to_string(), &berth.port().to_string()))),
    ] {
        let mut req = Req::get(leak(path.clone())).from("127.0.0.2").header("x-forwarded-user", "alice");
        if let Some(h) = &host {
            req = req.header("host", h);
        }
        let a = req.send(berth).await;
        assert_eq!(a.status, 403, "{path} from 127.0.0.2: {a:?}");
        let a = Req::get(leak(path.clone())).from("127.0.0.2").send(berth).await;
        assert_ne!(a.status, 200, "{path} from 127.0.0.2 without headers");
    }
    // The service token works from anywhere and sees everything.
    let a = Req::get("/api/v1/containers")
        .from("127.0.0.2")
        .header("authorization", &format!("Bearer {TOKEN}"))
        .send(berth)
        .await;
    assert_eq!((a.status, a.json()["containers"].as_array().unwrap().len()), (200, 3));

    // A session ends after session_ttl_secs (5 s here): one from a
    // hand-off link, opened straight at berth (no proxy headers).
    let link = Req::method("POST", leak(format!("/api/v1/containers/{a1}/links")))
        .header("authorization", &format!("Bearer {TOKEN}"))
        .json(&json!({}))
        .send(berth)
        .await;
    assert_eq!(link.status, 201, "{link:?}");
    let url = link.json()["url"].as_str().unwrap().to_owned();
    let path = leak(url[url.find("/auth/link/").unwrap()..].to_owned());
    let opened = Req::get(path).send(berth).await;
    let started = Instant::now();
    assert_eq!(opened.status, 303, "{opened:?}");
    let session = opened.set_cookie("berth_session").unwrap();
    let with_session =
        || Req::get(leak(format!("/docker/{a1}/headers"))).header("cookie", &format!("berth_session={session}"));
    let a = with_session().send(berth).await;
    assert!(started.elapsed() < Duration::from_secs(4), "too slow to see the session live");
    assert!(a.status == 200 && a.body.to_ascii_lowercase().contains("x-berth-user: alice\n"), "{a:?}");
    tokio::time::sleep_until((started + Duration::from_millis(5500)).into()).await;
    let a = with_session().send(berth).await;
    assert_eq!(a.status, 401, "the session outlived session_ttl_secs: {a:?}");

    // Clean up the persistent volumes (the run's clean-up takes the containers).
    for (user, name) in [("alice", &a1), ("alice", &ah), ("bob", &b1)] {
        let a = as_user(user, Req::method("DELETE", leak(format!("/api/v1/containers/{name}")))).send(front).await;
        assert_eq!(a.status, 204, "{}", a.body);
    }
    for (user, vol) in [("alice", format!("v{run_id}-alice")), ("bob", format!("v{run_id}-bob"))] {
        let a = as_user(user, Req::method("DELETE", leak(format!("/api/v1/volumes/{vol}")))).send(front).await;
        assert_eq!(a.status, 204, "{vol}: {}", a.body);
    }
}

/// A `'static` copy of `s` (test paths live as long as the test).
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The test provider: Authlib's OpenID Connect server on `port`.
fn start_provider(dir: &Path, port: u16, redirect: &str) -> Option<(ChildGuard, std::path::PathBuf)> {
    let Some(python) = support::on_path(&["/usr/bin/python3", "python3"]) else {
        missing("oidc_login_in_chromium", "python3", "apt-get install python3 python3-authlib python3-flask");
        return None;
    };
    let check = Command::new(&python).args(["-c", "import authlib, flask"]).status();
    if !check.is_ok_and(|s| s.success()) {
        missing(
            "oidc_login_in_chromium",
            "Authlib and Flask for python3",
            "apt-get install python3-authlib python3-flask",
        );
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/oidc_provider.py");
    let log = dir.join("provider.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(python)
        .arg(script)
        .args([&port.to_string(), "berth", "client-secret-1", redirect])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("starting the OpenID provider");
    Some((ChildGuard(child), log))
}

/// The parts of a URL: address, path and query.
fn split_url(url: &str) -> (SocketAddr, String) {
    let rest = url.strip_prefix("http://").unwrap_or_else(|| panic!("not an http URL: {url}"));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let addr = authority.replace("localhost", "127.0.0.1").parse().unwrap_or_else(|e| panic!("{authority}: {e}"));
    (addr, if path.is_empty() { "/".to_owned() } else { path.to_owned() })
}

/// A login without a browser: berth's login redirect, the provider's
/// form, the callback. Returns the callback's answer, the login cookie it
/// was sent with, and the callback's path.
async fn raw_login(berth: SocketAddr, user: &str) -> (Answer, String, String) {
    let start = Req::get("/auth/login?next=/").send(berth).await;
    assert_eq!(start.status, 303, "{start:?}");
    let flow = start.set_cookie("berth_login").unwrap();
    let (idp, authorize) = split_url(start.header("location").unwrap());
    let form = Req::method("POST", leak(authorize)).form(&format!("username={user}&password={user}")).send(idp).await;
    assert_eq!(form.status, 302, "the provider's answer: {form:?}");
    let (_, callback) = split_url(form.header("location").unwrap());
    let answer = Req::get(leak(callback.clone())).header("cookie", &format!("berth_login={flow}")).send(berth).await;
    (answer, flow, callback)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_login_in_chromium() {
    let Some(docker) = berth_testkit::docker_or_skip("oidc_login_in_chromium").await else { return };
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::test_tool_image(&docker).await.unwrap();
    let dir = TempDir::new("berth-people-oidc");
    let port = free_port_pair();
    let idp_port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let Some((mut provider, provider_log)) = start_provider(&dir.0, idp_port, &format!("{base}/auth/callback")) else {
        return;
    };
    let idp = SocketAddr::from(([127, 0, 0, 1], idp_port));
    support::poll("the OpenID provider", Duration::from_secs(20), || async move {
        let a = Req::get("/.well-known/openid-configuration").try_send(idp).await?;
        (a.status == 200).then_some(())
    })
    .await;
    let root_label = format!("berth-people-o{}", std::process::id());
    write_tools(&dir.0, &image, &run);
    write_config(
        &dir.0,
        port,
        &base,
        &root_label,
        &run,
        &format!(
            "[auth]\nmode = \"oidc\"\nadmin_groups = [\"berth-admins\"]\n[auth.oidc]\nissuer = \"http://127.0.0.1:{idp_port}\"\n\
             client_id = \"berth\"\nclient_secret = \"client-secret-1\"\nscopes = [\"profile\", \"email\", \"groups\"]\n"
        ),
    );
    let mut berth = Berth::start(&dir.0, port).await;
    let Some(browser) = Browser::start("oidc_login_in_chromium", &dir.0).await else { return };
    let shots = berth_testkit::workspace_root().join("target/people-test");
    std::fs::create_dir_all(&shots).unwrap();
    let outcome = tokio::spawn({
        let client = browser.client.clone();
        let run_id: String = run.id().chars().filter(char::is_ascii_alphanumeric).collect();
        let berth_addr = berth.addr;
        let shots = shots.clone();
        async move { oidc_checks(&client, berth_addr, &run_id, &shots).await }
    })
    .await;
    let state = match outcome {
        Ok(state) => state,
        Err(e) => {
            if let Ok(png) = browser.client.screenshot().await {
                let _ = std::fs::write(shots.join("failure.png"), png);
            }
            eprintln!(
                "---- berth ----\n{}\n---- provider ----\n{}\n---- page ----\n{}",
                berth.output(),
                file_text(&provider_log),
                browser.client.source().await.unwrap_or_default()
            );
            std::panic::resume_unwind(e.into_panic());
        }
    };

    // A restart of berth keeps alice's session; with the provider down, a
    // new login is a 503 page that says so, while alice goes on working.
    berth.restart().await;
    provider.stop();
    // A used state stays used across the restart.
    let (callback, flow) = &state.replay;
    let replay =
        Req::get(leak(callback.clone())).header("cookie", &format!("berth_login={flow}")).send(berth.addr).await;
    assert!(replay.status == 403 && replay.body.contains("replayed"), "a replay after a restart: {replay:?}");
    browser.client.goto(&format!("{base}/docker/{}/headers", state.alices)).await.unwrap();
    let text = support::wait_text(&browser.client, "x-berth-user").await;
    assert!(text.to_ascii_lowercase().contains("x-berth-user: alice"), "{text}");
    let down = Req::get("/auth/login?next=/").send(berth.addr).await;
    assert_eq!(down.status, 503, "{down:?}");
    assert!(down.body.contains("identity provider") && down.body.contains("cannot be reached"), "{}", down.body);
    // Logging out ends the session.
    browser.client.goto(&format!("{base}/")).await.unwrap();
    support::wait_text(&browser.client, "Signed in as alice").await;
    browser.client.find(Locator::Css("form[action=\"/auth/logout\"] button")).await.unwrap().click().await.unwrap();
    support::wait_text(&browser.client, "You are logged out").await;
    let cookie = support::cookie(&browser.client, "berth_session").await;
    let a = Req::get(leak(format!("/docker/{}/headers", state.alices)))
        .header("cookie", &format!("berth_session={}", state.alice_cookie))
        .send(berth.addr)
        .await;
    assert_eq!(a.status, 303, "the old session is gone after logout: {a:?} (browser cookie {cookie:?})");
    let _ = browser.client.clone().close().await;
    // Remove what the test made (the run's clean-up takes the containers too).
    for name in [&state.alices, &state.hosts, &state.carols] {
        let a = Req::method("DELETE", leak(format!("/api/v1/containers/{name}")))
            .header("authorization", &format!("Bearer {TOKEN}"))
            .send(berth.addr)
            .await;
        assert!(a.status == 204 || a.status == 404, "{a:?}");
    }
    for user in ["alice", "carol"] {
        let a = Req::method("DELETE", leak(format!("/api/v1/volumes/v{}-{user}", state.run_id)))
            .header("authorization", &format!("Bearer {TOKEN}"))
            .send(berth.addr)
            .await;
        assert_eq!(a.status, 204, "{a:?}");
    }
}

/// Logs `user` in through the provider's form, from berth's index.
async fn browser_login(client: &fantoccini::Client, base: &str, user: &str) {
    client.goto(&format!("{base}/")).await.unwrap();
    support::wait_text(client, "Log in").await;
    assert!(client.current_url().await.unwrap().as_str().contains("/authorize?"), "at the provider");
    client.find(Locator::Id("username")).await.unwrap().send_keys(user).await.unwrap();
    client.find(Locator::Id("password")).await.unwrap().send_keys(user).await.unwrap();
    client.find(Locator::Id("login")).await.unwrap().click().await.unwrap();
    support::wait_text(client, &format!("Signed in as {user}")).await;
    assert_eq!(client.current_url().await.unwrap().as_str(), format!("{base}/"));
}

/// What the OIDC checks leave for the rest of the test.
struct OidcState {
    run_id: String,
    alices: String,
    hosts: String,
    carols: String,
    alice_cookie: String,
    /// A finished login's callback and login cookie, to replay later.
    replay: (String, String),
}

async fn oidc_checks(client: &fantoccini::Client, berth: SocketAddr, run_id: &str, shots: &Path) -> OidcState {
    let base = format!("http://{berth}");
    let shot = |name: &'static str| async move {
        if let Ok(png) = client.screenshot().await {
            let _ = std::fs::write(shots.join(name), png);
        }
    };
    // 1. The whole login in Chromium: berth sends the browser to the
    // provider, the user logs in there, berth takes the code back.
    browser_login(client, &base, "alice").await;
    shot("02-logged-in.png").await;
    assert!(support::cookie(client, "berth_session").await.is_some(), "berth's session cookie");

    // 2. Launch from the form: the container is alice's, and it never sees
    // berth's cookie.
    let alices = format!("oa-{run_id}");
    client.goto(&format!("{base}/ui/launch")).await.unwrap();
    let card =
        client.find(Locator::XPath("//div[contains(@class,'tool')][h3[normalize-space(.)='probe']]")).await.unwrap();
    card.find(Locator::Css("summary")).await.unwrap().click().await.unwrap();
    let form = card.find(Locator::Css("form")).await.unwrap();
    form.find(Locator::Css("input[name=name]")).await.unwrap().send_keys(&alices).await.unwrap();
    form.find(Locator::Css("button[value=launch]")).await.unwrap().click().await.unwrap();
    support::poll("the tool", Duration::from_secs(60), || async {
        let url = client.current_url().await.ok()?;
        (url.path() == format!("/docker/{alices}/")).then_some(())
    })
    .await;
    client.goto(&format!("{base}/docker/{alices}/headers")).await.unwrap();
    let text = support::wait_text(client, "x-berth-user").await.to_ascii_lowercase();
    assert!(text.contains("x-berth-user: alice"), "{text}");
    assert!(text.contains("x-berth-email: alice@example.org"), "the email claim: {text}");
    assert!(
        !text.contains("berth_session") && !text.contains("berth_csrf"),
        "berth's cookies reached the container: {text}"
    );
    shot("03-headers.png").await;

    // 3. Hostname routing: the container's host gets a session of its own
    // (limited to it) by a one-time ticket from berth's host.
    let hosts = format!("oh-{run_id}");
    let a = Req::method("POST", "/api/v1/containers?wait=true")
        .header("authorization", &format!("Bearer {TOKEN}"))
        .json(&json!({"name": hosts, "tool": "hosty", "owner": "alice"}))
        .send(berth)
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let host_url = format!("http://{hosts}.{HOST_SUFFIX}:{}/headers", berth.port());
    client.goto(&host_url).await.unwrap();
    let text = support::wait_text(client, "x-berth-user").await.to_ascii_lowercase();
    assert!(text.contains("x-berth-user: alice") && !text.contains("berth_session"), "{text}");
    assert_eq!(client.current_url().await.unwrap().as_str(), host_url);
    // That host's cookie is a session there only: planted on berth's own
    // host (a parent-domain cookie would reach it) it is nobody.
    let host_cookie = support::cookie(client, "berth_session").await.expect("the container host's cookie");
    let host_header = format!("{hosts}.{HOST_SUFFIX}:{}", berth.port());
    let there = Req::get("/headers")
        .header("host", &host_header)
        .header("cookie", &format!("berth_session={host_cookie}"))
        .send(berth)
        .await;
    assert!(there.status == 200 && there.body.to_ascii_lowercase().contains("x-berth-user: alice"), "{there:?}");
    let planted =
        Req::get("/api/v1/containers").header("cookie", &format!("berth_session={host_cookie}")).send(berth).await;
    assert_eq!(planted.status, 401, "a container host's cookie on berth's host: {planted:?}");

    // 4. Bob (logged in without a browser) gets exactly missing pages for
    // alice's containers, by path and by host, websockets too.
    let (answer, _, _) = raw_login(berth, "bob").await;
    assert_eq!(answer.status, 303, "{answer:?}");
    let bob = answer.set_cookie("berth_session").unwrap();
    let as_bob = |path: &'static str| Req::get(path).header("cookie", &format!("berth_session={bob}"));
    let gone = format!("zz-{run_id}");
    let theirs = as_bob(leak(format!("/docker/{alices}/headers"))).send(berth).await;
    let missing = as_bob(leak(format!("/docker/{gone}/headers"))).send(berth).await;
    assert!(is_missing_page(&theirs, &alices, &missing, &gone), "{theirs:?}");
    let ws = as_bob(leak(format!("/docker/{alices}/ws")))
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .peek(berth, Duration::from_millis(700))
        .await;
    assert_eq!(ws.status, 404, "{ws:?}");
    let list = as_bob("/api/v1/containers").send(berth).await.json();
    assert_eq!(list["containers"], json!([]), "{list}");
    // Bob's session on alice's container host: the host step refuses him
    // exactly as for a missing container.
    let step = as_bob(leak(format!("/auth/host?container={hosts}&next=/"))).send(berth).await;
    let step_missing = as_bob(leak(format!("/auth/host?container={gone}&next=/"))).send(berth).await;
    assert!(is_missing_page(&step, &hosts, &step_missing, &gone), "{step:?}");
    // The admin group maps to an admin.
    let (answer, _, _) = raw_login(berth, "admin").await;
    let admin = answer.set_cookie("berth_session").unwrap();
    let list =
        Req::get("/api/v1/containers").header("cookie", &format!("berth_session={admin}")).send(berth).await.json();
    assert_eq!(list["containers"].as_array().unwrap().len(), 2, "{list}");

    // 5. Refused logins: wrong audience, expired token, bad signature, and
    // a replayed state (the same callback with the same login cookie).
    for (user, says) in [("wrongaud", "audience"), ("expired", "expired"), ("badsig", "signature")] {
        let (answer, _, _) = raw_login(berth, user).await;
        assert_eq!(answer.status, 403, "{user}: {answer:?}");
        assert!(answer.set_cookie("berth_session").is_none(), "{user} got a session");
        assert!(answer.body.to_ascii_lowercase().contains(says), "{user}: {}", answer.body);
    }
    let (answer, flow, callback) = raw_login(berth, "alice").await;
    assert_eq!(answer.status, 303, "{answer:?}");
    let replay_later = (callback.clone(), flow.clone());
    let replay = Req::get(leak(callback.clone())).header("cookie", &format!("berth_login={flow}")).send(berth).await;
    assert_eq!(replay.status, 403, "{replay:?}");
    assert!(replay.body.contains("replayed") && replay.set_cookie("berth_session").is_none(), "{}", replay.body);
    // A forged login cookie is no login at all.
    let forged = Req::get("/auth/callback?code=x&state=y").header("cookie", "berth_login=forged").send(berth).await;
    assert_eq!(forged.status, 403);

    // 6. Hand-off links: the portal (service token) launches for carol and
    // asks for a link; the browser opening it is carol's, for that
    // container only; used, expired or altered links are a 403 page.
    let carols = format!("oc-{run_id}");
    let service = |req: Req<'static>| req.header("authorization", &format!("Bearer {TOKEN}"));
    let a = service(Req::method("POST", "/api/v1/containers?wait=true"))
        .json(&json!({"name": carols, "tool": "probe", "owner": "carol"}))
        .send(berth)
        .await;
    assert_eq!((a.status, a.json()["owner"].as_str()), (200, Some("carol")), "{}", a.body);
    let link = |ttl: u64| {
        let path = leak(format!("/api/v1/containers/{carols}/links"));
        async move {
            let a = service(Req::method("POST", path)).json(&json!({"ttl_secs": ttl})).send(berth).await;
            assert_eq!(a.status, 201, "{}", a.body);
            a.json()["url"].as_str().unwrap().to_owned()
        }
    };
    let url = link(60).await;
    client.delete_all_cookies().await.unwrap();
    client.goto(&url).await.unwrap();
    support::poll("the hand-off to carol's container", Duration::from_secs(20), || async {
        let url = client.current_url().await.ok()?;
        (url.path() == format!("/docker/{carols}/")).then_some(())
    })
    .await;
    client.goto(&format!("{base}/docker/{carols}/headers")).await.unwrap();
    let text = support::wait_text(client, "x-berth-user").await.to_ascii_lowercase();
    assert!(text.contains("x-berth-user: carol"), "{text}");
    shot("04-hand-off.png").await;
    let carol_cookie = support::cookie(client, "berth_session").await.unwrap();
    let as_carol = |path: &'static str| Req::get(path).header("cookie", &format!("berth_session={carol_cookie}"));
    let list = as_carol("/api/v1/containers").send(berth).await.json();
    assert_eq!(list["containers"].as_array().unwrap().len(), 1, "a link's session sees its container only: {list}");
    assert_eq!(as_carol(leak(format!("/docker/{alices}/"))).send(berth).await.status, 404);
    client.goto(&url).await.unwrap();
    let text = support::wait_text(client, "link").await;
    assert!(text.contains("used already"), "{text}");
    let mut altered = link(60).await;
    let last = altered.pop().unwrap();
    altered.push(if last == '0' { '1' } else { '0' });
    client.goto(&altered).await.unwrap();
    let text = support::wait_text(client, "link").await;
    assert!(text.contains("not valid"), "{text}");
    let short = link(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.goto(&short).await.unwrap();
    let text = support::wait_text(client, "link").await;
    assert!(text.contains("expired"), "{text}");
    for u in [&url, &altered, &short] {
        let (addr, path) = split_url(u);
        assert_eq!(Req::get(leak(path)).send(addr).await.status, 403, "{u}");
    }
    shot("05-link-refused.png").await;

    // Back to alice in the browser for the rest of the test: a second
    // login through the provider's form.
    client.delete_all_cookies().await.unwrap();
    browser_login(client, &base, "alice").await;
    let alice_cookie = support::cookie(client, "berth_session").await.expect("berth's session cookie");
    OidcState { run_id: run_id.to_owned(), alices, hosts, carols, alice_cookie, replay: replay_later }
}

/// `[auth] mode = "none"` (no `[auth]` section) on an address that is not
/// loopback says at start that anyone who reaches it can launch, use and
/// remove every container; on loopback it says nothing of the sort.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_off_loopback_warns() {
    let Some(docker) = berth_testkit::docker_or_skip("open_mode_off_loopback_warns").await else { return };
    let run = TestRun::start(&docker).await;
    let image = berth_testkit::test_tool_image(&docker).await.unwrap();
    let dir = TempDir::new("berth-people-open");
    let port = free_port_pair();
    let root_label = format!("berth-people-n{}", std::process::id());
    write_tools(&dir.0, &image, &run);
    write_config(&dir.0, port, &format!("http://127.0.0.1:{port}"), &root_label, &run, "");
    let config = dir.0.join("berth.toml");
    let on_loopback = std::fs::read_to_string(&config).unwrap();
    // All interfaces (the requests still go to 127.0.0.1); the service
    // token keeps the API closed meanwhile.
    std::fs::write(&config, on_loopback.replace("listen = \"127.0.0.1:", "listen = \"0.0.0.0:")).unwrap();
    let warning = "auth.mode is \"none\" on a non-loopback address";
    let mut berth = Berth::start(&dir.0, port).await;
    let output = berth.output();
    assert!(output.contains(warning) && output.contains("0.0.0.0:"), "{output}");
    std::fs::write(&config, on_loopback).unwrap();
    berth.restart().await;
    let output = berth.output();
    assert!(output.contains("berth serving") && !output.contains(warning), "{output}");
}

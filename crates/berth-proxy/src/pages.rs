//! The pages berth answers with itself: please-wait, not found, failure.
//!
//! All are self-contained HTML (no external resources) with every
//! interpolated value escaped, and have JSON twins for clients that ask for
//! `application/json`.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// Look of the please-wait page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingPage {
    /// Page title (plain text; escaped when rendered).
    pub title: String,
    /// Extra HTML shown under the title (trusted: not escaped).
    pub body_html: String,
    /// Seconds between reloads: `Retry-After`, the meta refresh, and the
    /// poll interval of the script.
    pub retry_secs: u32,
    /// A server-sent-events URL reporting the launch's progress, with
    /// `{name}` standing for the (percent-encoded) container name, e.g.
    /// `/api/v1/containers/{name}/events` when browsers may read it. When
    /// set, the page lists each phase as it arrives (`creating`,
    /// `starting`, `waiting`, then `ready` or `failed`) and reloads at the
    /// end instead of polling; without a script it still reloads by itself.
    /// When the stream cannot be opened the page falls back to polling.
    pub events_url: Option<String>,
}

impl Default for WaitingPage {
    fn default() -> Self {
        WaitingPage {
            title: "Please wait".to_owned(),
            body_html: "<p>The tool is starting. This page reloads by itself.</p>".to_owned(),
            retry_secs: 1,
            events_url: None,
        }
    }
}

/// Why a container will not become ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    /// The container's process exited.
    Exited {
        /// Its exit code, when known.
        code: Option<i64>,
    },
    /// It did not answer its readiness probe with a ready status within
    /// its start timeout.
    StartTimeout(Duration),
    /// It was created but not started within the start timeout (its
    /// launch died half-way).
    NeverStarted(Duration),
    /// Its endpoint cannot be resolved (e.g. no port label).
    NoEndpoint(String),
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureReason::Exited { code: Some(c) } => write!(f, "the container exited with status {c}"),
            FailureReason::Exited { code: None } => write!(f, "the container exited"),
            FailureReason::StartTimeout(d) => write!(f, "the container did not become ready within {} s", d.as_secs()),
            FailureReason::NeverStarted(d) => {
                write!(f, "the container was created but not started within {} s", d.as_secs())
            }
            FailureReason::NoEndpoint(e) => write!(f, "the container cannot be reached: {e}"),
        }
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// True when the client prefers JSON over HTML (its `Accept` names
/// `application/json` and not `text/html`).
pub fn wants_json(accept: Option<&HeaderValue>) -> bool {
    let Some(accept) = accept.and_then(|a| a.to_str().ok()) else {
        return false;
    };
    accept.contains("application/json") && !accept.contains("text/html")
}

fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    response(status, "application/json", value.to_string())
}

/// The please-wait page: 503 with `Retry-After`, a meta refresh for
/// browsers without scripts, and a script that follows the launch's
/// progress (see [`WaitingPage::events_url`]) or polls the same URL, and
/// reloads once the tool answers.
///
/// The page has `<p id="berth-status" data-phase="...">` (the current
/// phase, in words) and `<ol id="berth-progress">`, to which the script adds
/// an `<li data-phase="...">` per phase received, with the seconds since the
/// container was created.
pub fn waiting(page: &WaitingPage, container: &str, json_client: bool) -> Response<Full<Bytes>> {
    let retry = page.retry_secs.max(1);
    let events = page.events_url.as_ref().map(|u| u.replace("{name}", &percent_encode(container)));
    let mut resp = if json_client {
        let mut value = serde_json::json!({"status": "starting", "container": container, "retry_after_secs": retry});
        if let Some(events) = &events {
            value["events_url"] = serde_json::json!(events);
        }
        json(StatusCode::SERVICE_UNAVAILABLE, value)
    } else {
        let title = escape_html(&page.title);
        let refresh = format!(r#"<meta http-equiv="refresh" content="{retry}">"#);
        // With a progress stream the script decides when to reload; a meta
        // refresh would cut the stream every `retry` seconds.
        let refresh = if events.is_some() { format!("<noscript>{refresh}</noscript>") } else { refresh };
        // A JSON string is a JavaScript string literal; `</` is escaped so
        // the value cannot close the script element.
        let events_js = serde_json::to_string(&events).unwrap_or_else(|_| "null".into()).replace("</", "<\\/");
        let html = format!(
            r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
{refresh}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:3em auto;max-width:40em;color:#222}}
#berth-progress li{{color:#555}}#berth-progress li:last-child{{color:#222;font-weight:600}}
#berth-progress li[data-phase=failed]{{color:#a00}}</style>
</head><body>
<h1>{title}</h1>
{body}
<p id="berth-status" data-container="{name}" data-phase="">Starting…</p>
<ol id="berth-progress"></ol>
<script>
(function () {{
  var ms = {ms};
  var url = {events_js};
  var words = {{creating: "Creating the container", starting: "Starting the container",
    waiting: "Waiting for the tool to answer", ready: "Ready, opening the tool",
    failed: "The tool failed to start", timeout: "Still not ready, checking again"}};
  var status = document.getElementById("berth-status");
  var list = document.getElementById("berth-progress");
  function show(phase, data) {{
    var text = words[phase] || phase;
    status.setAttribute("data-phase", phase);
    status.textContent = text + (phase === "ready" || phase === "failed" ? "" : "…");
    var last = list.lastElementChild;
    if (last && last.getAttribute("data-phase") === phase) {{ return; }}
    var li = document.createElement("li");
    li.setAttribute("data-phase", phase);
    var age = typeof data.age_secs === "number" ? " (" + data.age_secs.toFixed(1) + " s)" : "";
    li.textContent = text + age + (data.reason ? ": " + data.reason : "");
    list.appendChild(li);
  }}
  function poll() {{
    fetch(window.location.href, {{cache: "no-store", headers: {{"Accept": "text/html"}}}})
      .then(function (r) {{ if (r.status !== 503) {{ window.location.reload(); }} else {{ setTimeout(poll, ms); }} }})
      .catch(function () {{ setTimeout(poll, ms); }});
  }}
  if (!url || !window.EventSource) {{ setTimeout(poll, ms); return; }}
  var stream = new EventSource(url);
  ["creating", "starting", "waiting", "ready", "failed", "timeout"].forEach(function (phase) {{
    stream.addEventListener(phase, function (e) {{
      var data = {{}};
      try {{ data = JSON.parse(e.data); }} catch (err) {{}}
      show(phase, data);
      if (phase === "ready" || phase === "failed") {{ stream.close(); window.location.reload(); }}
      if (phase === "timeout") {{ stream.close(); setTimeout(poll, ms); }}
    }});
  }});
  stream.onerror = function () {{ stream.close(); setTimeout(poll, ms); }};
}})();
</script>
</body></html>
"#,
            body = page.body_html,
            name = escape_html(container),
            ms = retry * 1000,
        );
        response(StatusCode::SERVICE_UNAVAILABLE, "text/html; charset=utf-8", html)
    };
    if let Ok(v) = HeaderValue::from_str(&retry.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    const UNRESERVED: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

/// The page for a name that matches no container: 404, and no waiting.
pub fn not_found(container: &str, json_client: bool) -> Response<Full<Bytes>> {
    if json_client {
        return json(StatusCode::NOT_FOUND, serde_json::json!({"status": "not_found", "container": container}));
    }
    let name = escape_html(container);
    response(
        StatusCode::NOT_FOUND,
        "text/html; charset=utf-8",
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>No such tool</title></head>\
             <body><h1>No such tool</h1><p>There is no running tool named <code>{name}</code>.</p></body></html>\n"
        ),
    )
}

/// The page for a container that will not become ready: 502 with the
/// reason and its last log lines.
pub fn failure(
    container: &str,
    reason: &FailureReason,
    log_tail: &[String],
    json_client: bool,
) -> Response<Full<Bytes>> {
    if json_client {
        return json(
            StatusCode::BAD_GATEWAY,
            serde_json::json!({
                "status": "failed",
                "container": container,
                "reason": reason.to_string(),
                "logs": log_tail,
            }),
        );
    }
    let logs: String = log_tail.iter().map(|l| escape_html(l) + "\n").collect();
    response(
        StatusCode::BAD_GATEWAY,
        "text/html; charset=utf-8",
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Tool failed</title></head>\
             <body><h1>The tool {name} failed</h1><p>{reason}.</p><h2>Last log lines</h2><pre>{logs}</pre></body></html>\n",
            name = escape_html(container),
            reason = escape_html(&reason.to_string()),
        ),
    )
}

/// A plain error page for proxy failures (400, 403, 502, 504, ...).
pub fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

/// A 307 redirect to `location`.
pub fn redirect(location: &str) -> Response<Full<Bytes>> {
    let mut resp = response(StatusCode::TEMPORARY_REDIRECT, "text/plain; charset=utf-8", String::new());
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(resp: Response<Full<Bytes>>) -> String {
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn waiting_page_escapes_and_reloads() {
        let page = WaitingPage {
            title: "<script>alert(1)</script> & co".into(),
            body_html: "<p id=custom>custom</p>".into(),
            retry_secs: 2,
            events_url: None,
        };
        let resp = waiting(&page, "viz\"x", false);
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        let html = body(resp).await;
        assert!(html.contains("<title>&lt;script&gt;alert(1)&lt;/script&gt; &amp; co</title>"));
        assert!(!html.contains("<script>alert(1)"));
        assert!(html.contains("<p id=custom>custom</p>"), "custom body is trusted HTML");
        assert!(html.contains(r#"<meta http-equiv="refresh" content="2">"#));
        assert!(html.contains("r.status !== 503"));
        assert!(html.contains("data-container=\"viz&quot;x\""));
        assert!(html.contains("var url = null;"), "no stream without an events URL");
    }

    #[tokio::test]
    async fn waiting_page_follows_the_event_stream() {
        let page = WaitingPage { events_url: Some("/ui/events/{name}?x=</script>".into()), ..WaitingPage::default() };
        let resp = waiting(&page, "a b", false);
        let html = body(resp).await;
        assert!(html.contains(r#"var url = "/ui/events/a%20b?x=<\/script>";"#), "{html}");
        assert!(!html.contains("x=</script>"), "the URL cannot close the script");
        assert!(html.contains(r#"<noscript><meta http-equiv="refresh" content="1"></noscript>"#));
        assert!(html.contains(r#"<ol id="berth-progress"></ol>"#));
        let v: serde_json::Value = serde_json::from_str(&body(waiting(&page, "v", true)).await).unwrap();
        assert_eq!(v["events_url"], "/ui/events/v?x=</script>");
    }

    #[tokio::test]
    async fn json_twins() {
        assert!(wants_json(Some(&HeaderValue::from_static("application/json"))));
        assert!(!wants_json(Some(&HeaderValue::from_static("text/html,application/json;q=0.9"))));
        assert!(!wants_json(None));
        let v: serde_json::Value =
            serde_json::from_str(&body(waiting(&WaitingPage::default(), "v", true)).await).unwrap();
        assert_eq!(v["status"], "starting");
        let v: serde_json::Value = serde_json::from_str(&body(not_found("v", true)).await).unwrap();
        assert_eq!(v["status"], "not_found");
        let f = failure("v", &FailureReason::Exited { code: Some(3) }, &["boom <b>".into()], false);
        assert_eq!(f.status(), StatusCode::BAD_GATEWAY);
        let html = body(f).await;
        assert!(html.contains("exited with status 3") && html.contains("boom &lt;b&gt;"));
    }
}

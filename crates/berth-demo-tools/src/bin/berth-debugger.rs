//! `berth-debugger`: shows the input document a tool receives.
//!
//! Reads the input document once at start-up. Routes:
//!
//! - `GET /`: an HTML page saying where the document came from, each
//!   conventional key (present or not, and what it means), other keys, and
//!   the document pretty-printed (shown as is when it is not JSON; when
//!   there is no document, the page says why, still with status 200);
//! - `GET /input`: the document exactly as read (`application/json`), 404
//!   when there is none;
//! - anything else: 404.

use std::process::ExitCode;
use std::sync::Arc;

use berth_demo_tools::json::{self, Value};
use berth_demo_tools::{CONVENTIONAL_KEYS, page};
use berth_tool_http::input;
use berth_tool_http::server::Response;
use berth_tool_http::text::html_escape;

/// The tool's name (in `Server`, `User-Agent` and log lines).
const NAME: &str = "berth-debugger";

/// Where the document came from, for the page.
fn source() -> String {
    if std::env::var_os(input::ENV_INPUT_JSON).is_some() {
        format!("environment variable <code>{}</code> (mode env)", input::ENV_INPUT_JSON)
    } else if let Some(url) = std::env::var_os(input::ENV_INPUT_JSON_URL) {
        format!(
            "<code>{}</code> = <code>{}</code> (mode url)",
            input::ENV_INPUT_JSON_URL,
            html_escape(&url.to_string_lossy())
        )
    } else {
        let path = std::env::var_os(input::ENV_INPUT_JSON_PATH).unwrap_or_else(|| input::DEFAULT_INPUT_PATH.into());
        format!("file <code>{}</code> (mode file)", html_escape(&path.to_string_lossy()))
    }
}

/// A one-line description of a value.
fn summary(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string ({} characters)", s.chars().count()),
        Value::Array(items) => format!("list of {}", items.len()),
        Value::Object(members) => format!("object with {} keys", members.len()),
    }
}

/// The page for a loaded document.
fn render(raw: &[u8], source: &str) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut body = format!("<p>Input read from {source}, {} bytes.</p>", raw.len());
    match json::parse(&text) {
        Ok(doc) => {
            body.push_str("<h2>Conventional keys</h2><table><tr><th>key</th><th>value</th><th>meaning</th></tr>");
            for (key, meaning) in CONVENTIONAL_KEYS {
                let value = doc.get(key).map_or_else(|| "<em>absent</em>".to_owned(), |v| html_escape(&summary(v)));
                body.push_str(&format!("<tr><td><code>{key}</code></td><td>{value}</td><td>{meaning}</td></tr>"));
            }
            body.push_str("</table>");
            if let Value::Object(members) = &doc {
                let others: Vec<String> = members
                    .iter()
                    .filter(|(k, _)| !CONVENTIONAL_KEYS.iter().any(|(c, _)| c == k))
                    .map(|(k, v)| format!("<li><code>{}</code>: {}</li>", html_escape(k), html_escape(&summary(v))))
                    .collect();
                if !others.is_empty() {
                    body.push_str(&format!("<h2>Other keys</h2><ul>{}</ul>", others.concat()));
                }
            } else {
                body.push_str("<p class=\"error\">The document is not a JSON object.</p>");
            }
            body.push_str(&format!("<h2>Document</h2><pre id=\"document\">{}</pre>", html_escape(&doc.pretty())));
        }
        Err(e) => {
            body.push_str(&format!(
                "<p class=\"error\">{}</p><h2>Document (raw)</h2><pre id=\"document\">{}</pre>",
                html_escape(&e),
                html_escape(&text)
            ));
        }
    }
    body.push_str("<p><a href=\"input\">raw input</a></p>");
    page("berth debugger", &body)
}

fn main() -> ExitCode {
    let loaded = Arc::new(input::load(&berth_demo_tools::client(NAME)).map_err(|e| e.to_string()));
    let home = match loaded.as_ref() {
        Ok(raw) => render(raw, &source()),
        Err(e) => page("berth debugger", &format!("<p class=\"error\">No input document: {}</p>", html_escape(e))),
    };
    berth_demo_tools::run(NAME, move |req| {
        let get = req.method == "GET" || req.method == "HEAD";
        match req.path() {
            "/" if get => Response::html(200, home.clone()).into(),
            "/input" if get => match loaded.as_ref() {
                Ok(raw) => Response::new(200, "application/json", raw.clone()).into(),
                Err(e) => Response::text(404, format!("{e}\n")).into(),
            },
            _ => Response::text(404, "not found\n").into(),
        }
    })
}

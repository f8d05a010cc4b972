//! berth-demo-tools: the tools of berth's demo, each a std-only HTTP server
//! (on [`berth_tool_http`]) built as a static binary and run alone in a
//! `FROM scratch` image.
//!
//! - `berth-debugger`: shows the input document, pretty-printed, with each
//!   conventional key explained;
//! - `berth-csv-viewer`: downloads the CSV files in `file_relationships`
//!   and shows each as a table and an SVG heatmap of its numeric columns;
//! - `berth-slow-tool`: answers 503 for `parameters.delay_secs` seconds,
//!   then 200 (to watch berth's please-wait page);
//! - `berth-ws-tool`: a page that talks to a websocket echo at `./ws`.
//!
//! This library holds what they share: [`json`] (reading and
//! pretty-printing input documents), [`csv`], [`heatmap`], page layout and
//! the start-up of a tool ([`run`]).
//!
//! ```
//! use berth_demo_tools::{csv, heatmap, json};
//!
//! let doc = json::parse(r#"{"parameters": {"palette": "greys"}}"#).expect("json");
//! let palette = berth_demo_tools::palette(&doc);
//! let table = csv::parse("gene,s1,s2\nTP53,1.5,2\nMYC,0.5,4\n").expect("csv");
//! let svg = heatmap::svg(&table, palette).expect("numeric columns");
//! assert_eq!(svg.matches("<rect class=\"cell\"").count(), 4);
//! ```

pub mod csv;
pub mod heatmap;
pub mod json;

use std::io::Write;
use std::net::TcpListener;
use std::process::ExitCode;
use std::time::Duration;

use berth_tool_http::client::Client;
use berth_tool_http::message::Request;
use berth_tool_http::server::{self, Reply};
use berth_tool_http::text::html_escape;

use crate::heatmap::Palette;
use crate::json::Value;

/// The conventional keys of an input document, each with what it means.
pub const CONVENTIONAL_KEYS: [(&str, &str); 5] = [
    ("file_relationships", "list of data-file URLs the tool should load (berth stages them and rewrites the URLs)"),
    ("node_info", "per-file metadata, keyed by file id"),
    ("parameters", "user-set values (an object), e.g. a palette or a delay"),
    ("api_prefix", "the path prefix the tool is served under, e.g. /docker/<name>/"),
    ("extra_directories", "absolute paths inside the container that each got a fresh writable volume"),
];

/// The client tools fetch with, sending `User-Agent: <tool>`.
pub fn client(tool: &str) -> Client {
    Client::new(tool)
}

/// Loads and parses the input document.
///
/// # Errors
///
/// The document could not be read, or is not JSON; the message says which.
pub fn load_document(tool: &str) -> Result<(Vec<u8>, Value), String> {
    let raw = berth_tool_http::input::load(&client(tool)).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let doc = json::parse(&text).map_err(|e| format!("the input document is not JSON: {e}"))?;
    Ok((raw, doc))
}

/// The URLs in the document's `file_relationships` (strings only; other
/// entries are ignored).
pub fn file_urls(doc: &Value) -> Vec<String> {
    doc.get("file_relationships")
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The parameter `name` of the document (`parameters.<name>`).
pub fn parameter<'a>(doc: &'a Value, name: &str) -> Option<&'a Value> {
    doc.get("parameters").and_then(|p| p.get(name))
}

/// The palette named by `parameters.palette`, viridis when absent or
/// unknown.
pub fn palette(doc: &Value) -> Palette {
    parameter(doc, "palette").and_then(Value::as_str).and_then(Palette::from_name).unwrap_or(Palette::Viridis)
}

/// Default delay of the slow tool, in seconds.
pub const DEFAULT_DELAY_SECS: f64 = 10.0;
/// Longest delay of the slow tool, in seconds.
pub const MAX_DELAY_SECS: f64 = 3600.0;

/// The slow tool's delay from `parameters.delay_secs`: see [`seconds`];
/// absent or not a number means [`DEFAULT_DELAY_SECS`].
pub fn delay(doc: Option<&Value>) -> Duration {
    seconds(doc, "delay_secs", DEFAULT_DELAY_SECS)
}

/// A duration from `parameters.<key>` (a number, or a string holding one):
/// negative means 0, more than [`MAX_DELAY_SECS`] means that, absent or not
/// a number means `default` seconds.
pub fn seconds(doc: Option<&Value>, key: &str, default: f64) -> Duration {
    let secs = doc.and_then(|d| parameter(d, key)).and_then(Value::as_f64).filter(|s| s.is_finite()).unwrap_or(default);
    Duration::from_secs_f64(secs.clamp(0.0, MAX_DELAY_SECS))
}

/// An HTML page with a little style, `title` escaped, `body` as given.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font-family:sans-serif;margin:2em;max-width:75em}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}\
         th{{background:#f0f0f0}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}.error{{color:#a00}}\
         </style></head><body><h1>{}</h1>{body}</body></html>",
        html_escape(title),
        html_escape(title)
    )
}

/// Writes one line to standard output and flushes it (for `docker logs`).
#[allow(clippy::print_stdout)] // Standard output is where a container's log goes.
pub fn log(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs tool `name`: listens on `0.0.0.0:$PORT` (default 80), logs
/// `<name> listening on 0.0.0.0:<port>` and every request line, and
/// answers with `handler`. Returns only when it cannot start.
pub fn run<H>(name: &'static str, handler: H) -> ExitCode
where
    H: Fn(&Request) -> Reply + Send + Sync + 'static,
{
    let port = match server::port_from_env() {
        Ok(port) => port,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("{name}: cannot listen on 0.0.0.0:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    log(&format!("{name} listening on 0.0.0.0:{port}"));
    server::serve(&listener, name, move |req| {
        log(&format!("{} {}", req.method, req.target));
        handler(req)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Value {
        json::parse(text).expect("json")
    }

    #[test]
    fn parses_delays() {
        let secs = |text: &str| delay(Some(&doc(text))).as_secs_f64();
        assert_eq!(secs(r#"{"parameters":{"delay_secs":3}}"#), 3.0);
        assert_eq!(secs(r#"{"parameters":{"delay_secs":0.25}}"#), 0.25);
        assert_eq!(secs(r#"{"parameters":{"delay_secs":" 7 "}}"#), 7.0);
        assert_eq!(secs(r#"{"parameters":{"delay_secs":-5}}"#), 0.0);
        assert_eq!(secs(r#"{"parameters":{"delay_secs":1e9}}"#), MAX_DELAY_SECS);
        assert_eq!(secs(r#"{"parameters":{"delay_secs":"soon"}}"#), DEFAULT_DELAY_SECS);
        assert_eq!(secs(r#"{"parameters":{"delay_secs":null}}"#), DEFAULT_DELAY_SECS);
        assert_eq!(secs(r#"{"parameters":{}}"#), DEFAULT_DELAY_SECS);
        assert_eq!(secs(r#"[1]"#), DEFAULT_DELAY_SECS);
        assert_eq!(delay(None).as_secs_f64(), DEFAULT_DELAY_SECS);
        assert_eq!(seconds(Some(&doc(r#"{"parameters":{"warmup_secs":2}}"#)), "warmup_secs", 0.0).as_secs_f64(), 2.0);
        assert_eq!(seconds(Some(&doc("{}")), "warmup_secs", 0.0).as_secs_f64(), 0.0);
    }

    #[test]
    fn reads_conventional_keys() {
        let d =
            doc(r#"{"file_relationships":["http://h/a.csv", 3, "http://h/b.csv"],"parameters":{"palette":"GREYS"}}"#);
        assert_eq!(file_urls(&d), ["http://h/a.csv", "http://h/b.csv"]);
        assert_eq!(palette(&d), Palette::Greys);
        assert_eq!(palette(&doc("{}")), Palette::Viridis);
        assert!(file_urls(&doc(r#"{"file_relationships":"x"}"#)).is_empty());
        assert!(page("<t>", "<p>b</p>").contains("<title>&lt;t&gt;</title>"));
    }
}

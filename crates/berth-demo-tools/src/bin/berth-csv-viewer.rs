//! `berth-csv-viewer`: shows CSV data files as tables and heatmaps.
//!
//! At start a background thread downloads every `http://` URL in the input
//! document's `file_relationships`, parses each as CSV (header row,
//! comma-separated, quoted fields with `""` escapes) and renders the page:
//! per file, an SVG heatmap of its numeric columns (colour scale per column
//! from its minimum to its maximum, palette from `parameters.palette`:
//! `viridis` (default), `greys` or `blues`) and the table itself. No
//! script, no external resources. With `parameters.warmup_secs` (default
//! 0) it waits that long before downloading, which makes a slow start
//! visible (berth's please-wait page). Routes:
//!
//! - `GET /`: 503 `loading` while downloading; then 200 with the page, or
//!   200 with the error when the input, a download or a parse failed;
//! - `GET /health`: 200, `{"state": "loading" | "ready" | "error", "files": <n>}`;
//! - anything else: 404.

use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use berth_demo_tools::{csv, heatmap, page};
use berth_tool_http::server::Response;
use berth_tool_http::text::{html_escape, percent_decode};

/// The tool's name (in `Server`, `User-Agent` and log lines).
const NAME: &str = "berth-csv-viewer";

/// Most table rows shown per file (the heatmap shows all).
const MAX_TABLE_ROWS: usize = 500;

/// Where start-up stands.
#[derive(Debug, Clone)]
enum State {
    /// Downloading: `done` of `total` files fetched.
    Loading {
        /// Files fetched so far.
        done: usize,
        /// Files to fetch.
        total: usize,
    },
    /// The page, rendered, for this many files.
    Ready(String, usize),
    /// Why there is no page.
    Failed(String),
}

/// The file name in a URL: its last path segment, percent-decoded.
fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or(path);
    String::from_utf8_lossy(&percent_decode(last, false)).into_owned()
}

/// The section of the page for one file.
fn render_file(name: &str, table: &csv::Table, palette: heatmap::Palette) -> String {
    let numeric = table.numeric_columns();
    let mut out = format!(
        "<section class=\"file\"><h2>{}</h2><p>{} rows, {} columns, {} numeric.</p>",
        html_escape(name),
        table.rows.len(),
        table.header.len(),
        numeric.len()
    );
    match heatmap::svg(table, palette) {
        Some(svg) => out.push_str(&svg),
        None => out.push_str("<p>No numeric columns to draw.</p>"),
    }
    out.push_str("<table class=\"data\"><tr>");
    for h in &table.header {
        out.push_str(&format!("<th>{}</th>", html_escape(h)));
    }
    out.push_str("</tr>");
    for row in table.rows.iter().take(MAX_TABLE_ROWS) {
        out.push_str("<tr>");
        for field in row {
            out.push_str(&format!("<td>{}</td>", html_escape(field)));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    if table.rows.len() > MAX_TABLE_ROWS {
        out.push_str(&format!("<p>First {MAX_TABLE_ROWS} of {} rows shown.</p>", table.rows.len()));
    }
    out.push_str("</section>");
    out
}

/// Downloads and renders everything, reporting progress into `state`.
fn load(state: &Mutex<State>) -> State {
    let (_, doc) = match berth_demo_tools::load_document(NAME) {
        Ok(loaded) => loaded,
        Err(e) => return State::Failed(e),
    };
    let urls = berth_demo_tools::file_urls(&doc);
    let palette = berth_demo_tools::palette(&doc);
    let warmup = berth_demo_tools::seconds(Some(&doc), "warmup_secs", 0.0);
    if !warmup.is_zero() {
        *state.lock().unwrap_or_else(PoisonError::into_inner) = State::Loading { done: 0, total: urls.len() };
        berth_demo_tools::log(&format!("{NAME}: warming up for {} s", warmup.as_secs_f64()));
        thread::sleep(warmup);
    }
    if urls.is_empty() {
        return State::Ready(page("berth CSV viewer", "<p>No files: <code>file_relationships</code> is empty.</p>"), 0);
    }
    let client = berth_demo_tools::client(NAME);
    let mut body = String::new();
    for (i, url) in urls.iter().enumerate() {
        *state.lock().unwrap_or_else(PoisonError::into_inner) = State::Loading { done: i, total: urls.len() };
        berth_demo_tools::log(&format!("{NAME}: downloading {url}"));
        let bytes = match client.get(url) {
            Ok(bytes) => bytes,
            Err(e) => return State::Failed(format!("downloading {url}: {e}")),
        };
        let name = file_name(url);
        let table = match csv::parse(&String::from_utf8_lossy(&bytes)) {
            Ok(table) => table,
            Err(e) => return State::Failed(format!("reading {name} as CSV: {e}")),
        };
        body.push_str(&render_file(&name, &table, palette));
    }
    State::Ready(page("berth CSV viewer", &body), urls.len())
}

fn main() -> ExitCode {
    let state = Arc::new(Mutex::new(State::Loading { done: 0, total: 0 }));
    let loader = Arc::clone(&state);
    let spawned = thread::Builder::new().name("loader".into()).spawn(move || {
        let done = load(&loader);
        if let State::Failed(e) = &done {
            eprintln!("{NAME}: {e}");
        }
        *loader.lock().unwrap_or_else(PoisonError::into_inner) = done;
    });
    if let Err(e) = spawned {
        *state.lock().unwrap_or_else(PoisonError::into_inner) = State::Failed(format!("cannot start the loader: {e}"));
    }
    berth_demo_tools::run(NAME, move |req| {
        let get = req.method == "GET" || req.method == "HEAD";
        let current = state.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match req.path() {
            "/" if get => match current {
                State::Loading { done, total } => Response::text(503, format!("loading ({done} of {total} files)\n"))
                    .header("Retry-After", "1")
                    .into(),
                State::Ready(page, _) => Response::html(200, page).into(),
                // A tool that cannot start still answers 200, with the reason.
                State::Failed(e) => Response::html(
                    200,
                    page("berth CSV viewer", &format!("<p class=\"error\" id=\"error\">{}</p>", html_escape(&e))),
                )
                .into(),
            },
            "/health" if get => {
                let (state, files) = match current {
                    State::Loading { total, .. } => ("loading", total),
                    State::Ready(_, n) => ("ready", n),
                    State::Failed(_) => ("error", 0),
                };
                Response::json(200, format!("{{\"state\": \"{state}\", \"files\": {files}}}")).into()
            }
            _ => Response::text(404, "not found\n").into(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_files_after_their_urls() {
        assert_eq!(file_name("http://h:8/files/expr%20a.csv?token=x#f"), "expr a.csv");
        assert_eq!(file_name("http://h/dir/"), "dir");
    }

    #[test]
    fn renders_escaped_tables() {
        let table = csv::parse("gene,s1\n<b>,1\nX,2\n").expect("csv");
        let html = render_file("a<b>.csv", &table, heatmap::Palette::Viridis);
        assert!(html.contains("<h2>a&lt;b&gt;.csv</h2>"));
        assert!(html.contains("<td>&lt;b&gt;</td>"));
        assert_eq!(html.matches("<rect class=\"cell\"").count(), 2);
        assert!(html.contains("2 rows, 2 columns, 1 numeric."));
    }
}

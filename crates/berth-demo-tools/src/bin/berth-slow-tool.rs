//! `berth-slow-tool`: a tool that takes its time to become ready.
//!
//! Reads `parameters.delay_secs` from the input document (default 10; a
//! missing or unreadable document means the default). Routes:
//!
//! - `GET /`: 503 `starting` until that many seconds after start, then 200
//!   with a page;
//! - `GET /status`: `{"ready": <bool>, "delay_secs": <n>, "elapsed_secs": <n>}`;
//! - anything else: 404.

use std::process::ExitCode;
use std::time::Instant;

use berth_demo_tools::page;
use berth_tool_http::server::Response;
use berth_tool_http::text::html_escape;

/// The tool's name (in `Server`, `User-Agent` and log lines).
const NAME: &str = "berth-slow-tool";

fn main() -> ExitCode {
    let started = Instant::now();
    let loaded = berth_demo_tools::load_document(NAME);
    let delay = berth_demo_tools::delay(loaded.as_ref().ok().map(|(_, doc)| doc));
    let note = match &loaded {
        Ok(_) => String::new(),
        Err(e) => format!("<p class=\"error\">Input: {} (using the default delay)</p>", html_escape(e)),
    };
    let home = page(
        "berth slow tool",
        &format!(
            "<p id=\"ready\">Ready after {} seconds.</p>{note}<p><a href=\"status\">status</a></p>",
            delay.as_secs_f64()
        ),
    );
    berth_demo_tools::log(&format!("{NAME}: ready in {} s", delay.as_secs_f64()));
    berth_demo_tools::run(NAME, move |req| {
        let get = req.method == "GET" || req.method == "HEAD";
        let elapsed = started.elapsed();
        let ready = elapsed >= delay;
        match req.path() {
            "/" if get && ready => Response::html(200, home.clone()).into(),
            "/" if get => {
                let left = (delay - elapsed).as_secs_f64().ceil();
                Response::text(503, format!("starting: ready in {left} s\n"))
                    .header("Retry-After", format!("{left}"))
                    .into()
            }
            "/status" if get => Response::json(
                200,
                format!(
                    "{{\"ready\": {ready}, \"delay_secs\": {}, \"elapsed_secs\": {:.3}}}",
                    delay.as_secs_f64(),
                    elapsed.as_secs_f64()
                ),
            )
            .into(),
            _ => Response::text(404, "not found\n").into(),
        }
    })
}

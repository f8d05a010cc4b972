//! `berth-testtool`: the tool that berth's Docker tests launch.
//!
//! It is a tiny HTTP/1.1 server (std only, through `berth-tool-http`, which
//! adds `sha1_smol` for the websocket handshake), built as a static executable and run as the only
//! file of a `FROM scratch` image, so it needs no libc files, no `/etc` and
//! no shell. It follows the same contract as the mock tool of
//! `berth-manager`, and adds routes for testing berth's proxy.
//!
//! It listens on `0.0.0.0:$PORT` (default 80), serves each connection on
//! its own thread with keep-alive, prints `berth-testtool listening on
//! 0.0.0.0:<port>` at start and `<METHOD> <target>` for every request on
//! standard output (flushed line by line, for `docker logs`), unless
//! `BERTH_TOOL_QUIET=1` (benchmarks: the engine's log driver would cost
//! more than the HTTP under test).
//!
//! The *input document* is read on each request that needs it: from
//! `INPUT_JSON`, else fetched from the `http://` URL in `INPUT_JSON_URL`,
//! else from the file at `INPUT_JSON_PATH` (default `/tmp/input.json`).
//!
//! Routes:
//!
//! - `GET /`: `503 starting` during the first `BERTH_TOOL_STARTUP_DELAY_MS`
//!   milliseconds (default 0), then an HTML page showing the input document
//!   (or why there is none);
//! - `GET /input`: the input document exactly as read (`application/json`),
//!   404 when there is none;
//! - `GET /env/<NAME>`: the value of variable `NAME`, 404 when unset;
//! - `GET /say/<text>`: prints the percent-decoded text as a line, answers `said`;
//! - `GET /exit/<code>`: answers `exiting with <code>`, then exits with
//!   `code` (default 1);
//! - `GET /file?path=<abs>`: the file's bytes, 404 when unreadable;
//! - `PUT /file?path=<abs>`: writes the body to the file (creating parent
//!   directories), 201, or 500 on failure;
//! - `GET /bytes/<n>`: exactly `n` bytes (byte `i` is `i % 256`), streamed;
//! - `POST|PUT /echo`: `bytes=<count> sum=<sum of bytes mod 2^32>` of the
//!   body, read as a stream;
//! - `GET /sse?n=3&interval_ms=100`: `n` server-sent events `data: event <i>`
//!   (`i` from 0), then the connection closes;
//! - `GET /ws` (websocket upgrade): echoes text and binary frames, answers
//!   pings and closes;
//! - `GET /fetch?url=<http url>`: fetches the URL from inside the container
//!   and returns its body (502 with the reason when it fails);
//! - `GET /headers`: the request's header fields, one `name: value` a line;
//! - `GET /argv`, `/cwd`, `/uid`, `/memlimit`, `/shm`: the process's
//!   arguments after the program (one a line; arguments are otherwise
//!   ignored), working directory, user id, memory cgroup limit in bytes (or
//!   `max`), and `/dev/shm` size in bytes;
//! - anything else: 200 `<METHOD> <target>`.
//!
//! Malformed requests get 400 and header blocks over 64 KiB get 431; both
//! close the connection. `HEAD` works wherever `GET` only reads.

// Printing to standard output is this program's job: the tests read it
// through `docker logs`.
#![allow(clippy::print_stdout)]

mod server;

use std::io::Write;
use std::net::TcpListener;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The name in the `Server` and `User-Agent` fields.
pub const SERVER: &str = "berth-testtool";

/// The client that fetches the input document and `/fetch` URLs.
pub fn client() -> berth_tool_http::client::Client {
    berth_tool_http::client::Client::new(SERVER)
}

/// Writes one line to standard output and flushes it. Errors are ignored:
/// a closed standard output must not stop the server.
pub fn stdout_line(line: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

fn main() -> ExitCode {
    let started = Instant::now();
    let port = match berth_tool_http::server::port_from_env() {
        Ok(port) => port,
        Err(e) => {
            eprintln!("berth-testtool: {e}");
            return ExitCode::from(2);
        }
    };
    let delay_ms =
        std::env::var("BERTH_TOOL_STARTUP_DELAY_MS").ok().and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(0);
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("berth-testtool: cannot listen on 0.0.0.0:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let port = listener.local_addr().map_or(port, |a| a.port());
    stdout_line(format!("berth-testtool listening on 0.0.0.0:{port}").as_bytes());
    server::serve(
        &listener,
        server::Config {
            started,
            quiet: std::env::var_os("BERTH_TOOL_QUIET").is_some_and(|v| v == "1"),
            startup_delay: Duration::from_millis(delay_ms),
        },
    )
}

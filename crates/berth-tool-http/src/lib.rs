//! berth-tool-http: std-only HTTP/1.1 building blocks for tool images that
//! berth launches.
//!
//! A berth tool listens for HTTP on one port (`$PORT`, default 80), reads
//! one JSON input document at start-up (from `INPUT_JSON`, else fetched from
//! `INPUT_JSON_URL`, else the file at `INPUT_JSON_PATH` or
//! `/tmp/input.json`), and is ready when `GET /` answers 200. This crate
//! holds what such a tool needs when it runs as the only file of a
//! `FROM scratch` image, with no dependency but `sha1_smol`:
//!
//! - [`message`]: reading and parsing request and response heads, bodies
//!   framed by `Content-Length`, chunked coding or end of stream, and
//!   writing responses;
//! - [`server`]: a thread-per-connection server over a handler function,
//!   with keep-alive and websocket takeover;
//! - [`ws`]: the websocket handshake and an echo loop;
//! - [`text`]: base64, percent-decoding, query parameters, HTML escaping;
//! - [`client`]: a minimal `http://` GET client that looks host names up in
//!   `/etc/hosts` first (for `host.docker.internal`);
//! - [`input`]: loading the input document the way berth delivers it.
//!
//! A whole tool:
//!
//! ```no_run
//! use std::net::TcpListener;
//! use berth_tool_http::client::Client;
//! use berth_tool_http::server::{self, Reply, Response};
//! use berth_tool_http::{input, text::html_escape};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let document = match input::load(&Client::new("hello-tool")) {
//!         Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
//!         // A tool that cannot start still answers 200, with the reason.
//!         Err(e) => format!("no input: {e}"),
//!     };
//!     let listener = TcpListener::bind(("0.0.0.0", server::port_from_env()?))?;
//!     server::serve(&listener, "hello-tool", move |req| match req.path() {
//!         "/" => Response::html(200, format!("<pre>{}</pre>", html_escape(&document))).into(),
//!         "/ws" => Reply::websocket_echo("hello-tool", req),
//!         _ => Response::text(404, "not found\n").into(),
//!     })
//! }
//! ```

pub mod client;
pub mod input;
pub mod message;
pub mod server;
pub mod text;
pub mod ws;

use std::fmt;

/// An error of the client, the input loader or the configuration, as a
/// human-readable message (tools show it on their pages and in their logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What went wrong.
    message: String,
}

impl Error {
    /// An error saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Error { message: message.into() }
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Self {
        Error { message }
    }
}

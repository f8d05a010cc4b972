//! `berth-ws-tool`: a page that talks to a websocket echo.
//!
//! Routes:
//!
//! - `GET /`: an HTML page whose inline script connects to `./ws`
//!   (relative to the page, so it works under `/docker/<name>/`), sends
//!   what is typed and shows what comes back;
//! - `GET /ws`: a websocket that echoes text and binary messages (426
//!   without an upgrade);
//! - anything else: 404.

use std::process::ExitCode;

use berth_demo_tools::page;
use berth_tool_http::server::{Reply, Response};

/// The tool's name (in `Server` and log lines).
const NAME: &str = "berth-ws-tool";

/// The page's content: a form, a log, and the script.
const BODY: &str = r#"<p>Status: <span id="status">connecting</span></p>
<form id="form"><input id="text" value="hello" autocomplete="off"> <button>send</button></form>
<pre id="log"></pre>
<script>
// Resolve ./ws against the page's directory, so the socket goes through the
// same proxy prefix (/docker/<name>/ws) as the page.
const dir = location.pathname.endsWith("/") ? location.pathname : location.pathname + "/";
const url = new URL("ws", location.origin + dir);
url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
const log = (line) => { document.getElementById("log").textContent += line + "\n"; };
const status = document.getElementById("status");
const socket = new WebSocket(url);
socket.onopen = () => { status.textContent = "open (" + url + ")"; socket.send("hello from the page"); };
socket.onmessage = (e) => log("echo: " + e.data);
socket.onclose = (e) => { status.textContent = "closed (" + e.code + ")"; };
socket.onerror = () => { status.textContent = "error"; };
document.getElementById("form").onsubmit = (e) => {
  e.preventDefault();
  const text = document.getElementById("text").value;
  log("sent: " + text);
  socket.send(text);
};
</script>"#;

fn main() -> ExitCode {
    let home = page("berth websocket echo", BODY);
    berth_demo_tools::run(NAME, move |req| {
        let get = req.method == "GET" || req.method == "HEAD";
        match req.path() {
            "/" if get => Response::html(200, home.clone()).into(),
            "/ws" if req.method == "GET" => Reply::websocket_echo(NAME, req),
            _ => Response::text(404, "not found\n").into(),
        }
    })
}

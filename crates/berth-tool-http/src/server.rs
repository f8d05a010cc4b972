//! A small thread-per-connection HTTP/1.1 server for tools whose routes
//! answer with whole responses (and, for websockets, take over the
//! connection): keep-alive, `HEAD`, 400 for malformed requests and 431 for
//! oversized heads, request bodies skipped.
//!
//! ```no_run
//! use std::net::TcpListener;
//! use berth_tool_http::server::{self, Reply, Response};
//!
//! let port = server::port_from_env()?;
//! let listener = TcpListener::bind(("0.0.0.0", port)).expect("listen");
//! server::serve(&listener, "my-tool", |req| match req.path() {
//!     "/" => Response::html(200, "<!doctype html><title>ready</title>".to_owned()).into(),
//!     "/ws" => Reply::websocket_echo("my-tool", req),
//!     _ => Response::text(404, "not found\n").into(),
//! })
//! # ; Ok::<(), berth_tool_http::Error>(())
//! ```

use std::io::{self, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::Error;
use crate::message::{self, Body, HeadError, Request};
use crate::ws;

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Value of `Content-Type` (left out when empty).
    pub content_type: String,
    /// Further header fields, written as given.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with this status, content type and body.
    pub fn new(status: u16, content_type: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Response { status, content_type: content_type.into(), headers: Vec::new(), body: body.into() }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::new(status, "text/plain; charset=utf-8", body.into())
    }

    /// A `text/html; charset=utf-8` response.
    pub fn html(status: u16, body: impl Into<String>) -> Self {
        Response::new(status, "text/html; charset=utf-8", body.into())
    }

    /// An `application/json` response.
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Response::new(status, "application/json", body.into())
    }

    /// Adds a header field.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The response as bytes: head (with `Server: <server>`,
    /// `Content-Length` and, when `close`, `Connection: close`) and, unless
    /// `head_only`, body.
    pub fn to_bytes(&self, server: &str, close: bool, head_only: bool) -> Vec<u8> {
        let mut out =
            message::response_head(server, self.status, &self.content_type, Some(self.body.len() as u64), close);
        // Insert the extra fields before the empty line ending the head.
        let end = out.len() - 2;
        let mut extra = Vec::new();
        for (name, value) in &self.headers {
            extra.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.splice(end..end, extra);
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// What takes over a connection after a protocol switch: it gets the
/// connection's buffered reader and its write side, and the connection
/// closes when it returns.
pub type Takeover = Box<dyn FnOnce(&mut BufReader<TcpStream>, &mut TcpStream) -> io::Result<()> + Send>;

/// A handler's answer to one request.
pub enum Reply {
    /// Answer with this response; the connection stays open when the
    /// request allows it.
    Response(Response),
    /// Hand the connection over (after a `101` the takeover writes itself).
    Takeover(Takeover),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Response(r) => f.debug_tuple("Response").field(r).finish(),
            Reply::Takeover(_) => f.write_str("Takeover"),
        }
    }
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Reply::Response(response)
    }
}

impl Reply {
    /// A websocket echo session (see [`ws::echo`]) when `req` is a
    /// websocket upgrade, else `426 Upgrade Required`.
    pub fn websocket_echo(server: &str, req: &Request) -> Reply {
        let Some(key) = ws::upgrade_key(req) else {
            return Response::text(426, "expected a websocket upgrade (Upgrade: websocket, Sec-WebSocket-Key)\n")
                .header("Connection", "close")
                .into();
        };
        let head = ws::handshake_response(server, key);
        Reply::Takeover(Box::new(move |reader, out| {
            out.write_all(head.as_bytes())?;
            out.flush()?;
            ws::echo(reader, out)
        }))
    }
}

/// The port to listen on: `$PORT`, or 80 when unset or blank.
///
/// # Errors
///
/// `PORT` is set but is not a port number.
pub fn port_from_env() -> Result<u16, Error> {
    match std::env::var("PORT") {
        Ok(p) if !p.trim().is_empty() => {
            p.trim().parse::<u16>().map_err(|_| Error::new(format!("PORT must be a port number, not {p:?}")))
        }
        _ => Ok(80),
    }
}

/// Accepts connections on `listener` forever, serving each on its own
/// thread: every request head goes to `handler`, whose reply is written with
/// `Server: <server>`.
pub fn serve<H>(listener: &TcpListener, server: &'static str, handler: H) -> !
where
    H: Fn(&Request) -> Reply + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let handler = Arc::clone(&handler);
                // A connection that fails (peer gone, malformed request) ends
                // quietly: it concerns only that peer.
                let _ = thread::Builder::new().spawn(move || handle_connection(stream, server, &*handler));
            }
            // E.g. out of file descriptors: wait a little rather than spin.
            Err(_) => thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Serves the requests of one connection until it closes.
fn handle_connection<H>(stream: TcpStream, server: &str, handler: &H) -> io::Result<()>
where
    H: Fn(&Request) -> Reply,
{
    let _ = stream.set_nodelay(true);
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let head = match message::read_head(&mut reader, message::MAX_HEAD) {
            Ok(head) => head,
            Err(HeadError::Closed) => return Ok(()),
            Err(HeadError::TooLarge) => {
                let answer = Response::text(431, "request header block too large\n");
                out.write_all(&answer.to_bytes(server, true, false))?;
                return close(&out);
            }
            Err(HeadError::Io(e)) => return Err(e),
        };
        let (req, kind) = match message::parse_request(&head).and_then(|req| Ok((req.body_kind()?, req))) {
            Ok((kind, req)) => (req, kind),
            Err(msg) => {
                let answer = Response::text(400, format!("bad request: {msg}\n"));
                out.write_all(&answer.to_bytes(server, true, false))?;
                return close(&out);
            }
        };
        match handler(&req) {
            Reply::Response(response) => {
                let close_after = !req.keep_alive()
                    || response.headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("connection") && v == "close");
                let close_field =
                    close_after && !response.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("connection"));
                out.write_all(&response.to_bytes(server, close_field, req.method == "HEAD"))?;
                out.flush()?;
                if close_after {
                    return close(&out);
                }
                // Skip the request body, if any, to reach the next request.
                if io::copy(&mut Body::new(&mut reader, kind), &mut io::sink()).is_err() {
                    return close(&out);
                }
            }
            Reply::Takeover(takeover) => {
                let result = takeover(&mut reader, &mut out);
                let _ = close(&out);
                return result;
            }
        }
    }
}

/// Ends the connection, telling the peer nothing more comes.
fn close(stream: &TcpStream) -> io::Result<()> {
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn responses_carry_extra_fields() {
        let r = Response::text(200, "ok").header("Cache-Control", "no-store");
        assert_eq!(
            r.to_bytes("t", false, false),
            b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\n\
              Cache-Control: no-store\r\n\r\nok"
        );
        assert!(r.to_bytes("t", true, true).ends_with(b"Connection: close\r\nCache-Control: no-store\r\n\r\n"));
    }

    fn exchange(raw: &[u8]) -> Vec<u8> {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let serving = thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            handle_connection(stream, "t", &|req: &Request| match req.path() {
                "/ws" => Reply::websocket_echo("t", req),
                p => Response::text(200, format!("{} {p}", req.method)).into(),
            })
        });
        let mut client = TcpStream::connect(addr).expect("connect");
        client.write_all(raw).expect("send");
        client.shutdown(Shutdown::Write).expect("shutdown");
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).expect("read");
        let _ = serving.join();
        answer
    }

    #[test]
    fn serves_keep_alive_and_head() {
        let answer = exchange(
            b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyzHEAD /b HTTP/1.1\r\n\r\nGET /c HTTP/1.0\r\n\r\n",
        );
        let answer = String::from_utf8(answer).expect("utf-8");
        assert!(answer.contains("\r\n\r\nPOST /a"), "{answer}");
        assert!(!answer.contains("HEAD /b"), "{answer}");
        assert!(answer.ends_with("Connection: close\r\n\r\nGET /c"), "{answer}");
        assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 3);
    }

    #[test]
    fn rejects_bad_requests_and_echoes_websockets() {
        let answer = exchange(b"GET / HTTP/9\r\n\r\n");
        assert!(answer.starts_with(b"HTTP/1.1 400 Bad Request\r\n"));
        let answer = exchange(b"GET /ws HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with(b"HTTP/1.1 426 Upgrade Required\r\n"));
        let answer = exchange(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n\x81\x02hi");
        assert!(answer.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(answer.ends_with(b"\r\n\r\n\x81\x02hi"));
    }
}

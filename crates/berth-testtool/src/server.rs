//! The HTTP server: one thread per connection, keep-alive, and the routes.

use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use berth_tool_http::message::{self as http, Body, BodyKind, HeadError, Request};
use berth_tool_http::text::{html_escape, percent_decode, query_param};
use berth_tool_http::{input, ws};

use crate::{SERVER, client, stdout_line};

/// Size of the chunks `/bytes` and the body readers work in.
const CHUNK: usize = 64 * 1024;

/// Settings fixed at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// When the process started.
    pub started: Instant,
    /// Skip the per-request log line (`BERTH_TOOL_QUIET=1`), so benchmarks
    /// measure HTTP, not the engine's log driver.
    pub quiet: bool,
    /// How long `GET /` answers 503 after start.
    pub startup_delay: Duration,
}

/// Accepts connections forever, each served on its own thread.
pub fn serve(listener: &TcpListener, config: Config) -> ! {
    let config = Arc::new(config);
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let config = Arc::clone(&config);
                let spawned = thread::Builder::new().name(format!("conn {peer}")).spawn(move || {
                    if let Err(e) = handle_connection(stream, &config) {
                        eprintln!("berth-testtool: connection from {peer}: {e}");
                    }
                });
                if let Err(e) = spawned {
                    eprintln!("berth-testtool: cannot start a thread for {peer}: {e}");
                }
            }
            Err(e) => {
                // E.g. out of file descriptors: wait a little rather than spin.
                eprintln!("berth-testtool: accept: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// What to do with the connection after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Read the next request (if the request allows keep-alive).
    KeepAlive,
    /// Close the connection.
    Close,
}

/// Serves the requests of one connection until it closes.
fn handle_connection(stream: TcpStream, config: &Config) -> io::Result<()> {
    // Small writes (SSE events, websocket frames) should leave at once.
    let _ = stream.set_nodelay(true);
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(CHUNK, stream);
    loop {
        let head = match http::read_head(&mut reader, http::MAX_HEAD) {
            Ok(head) => head,
            Err(HeadError::Closed) => return Ok(()),
            Err(HeadError::TooLarge) => {
                http::write_response(
                    &mut out,
                    SERVER,
                    431,
                    "text/plain",
                    b"request header block too large\n",
                    true,
                    false,
                )?;
                return close(&out);
            }
            Err(HeadError::Io(e)) => return Err(e),
        };
        let (req, kind) = match http::parse_request(&head).and_then(|req| Ok((req.body_kind()?, req))) {
            Ok((kind, req)) => (req, kind),
            Err(msg) => {
                http::write_response(
                    &mut out,
                    SERVER,
                    400,
                    "text/plain",
                    format!("bad request: {msg}\n").as_bytes(),
                    true,
                    false,
                )?;
                return close(&out);
            }
        };
        if !config.quiet {
            stdout_line(format!("{} {}", req.method, req.target).as_bytes());
        }
        if kind != BodyKind::Empty && !req.http10 && req.has_token("expect", "100-continue") {
            out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut exchange = Exchange {
            close: !req.keep_alive(),
            head_only: req.method == "HEAD",
            req: &req,
            body: Body::new(&mut reader, kind),
            out: &mut out,
            config,
        };
        let next = route(&mut exchange)?;
        if next == Next::Close || exchange.close {
            return close(&out);
        }
        // Skip whatever of the body the route did not read.
        if io::copy(&mut exchange.body, &mut io::sink()).is_err() {
            return close(&out);
        }
    }
}

/// Ends the connection, telling the peer nothing more comes.
fn close(stream: &TcpStream) -> io::Result<()> {
    let _ = stream.shutdown(Shutdown::Both);
    Ok(())
}

/// One request being answered.
struct Exchange<'a> {
    /// The request head.
    req: &'a Request,
    /// The request body, positioned on the connection.
    body: Body<'a, BufReader<TcpStream>>,
    /// The connection's write side.
    out: &'a mut TcpStream,
    /// Whether the connection closes after this answer.
    close: bool,
    /// Whether to leave out response bodies (`HEAD`).
    head_only: bool,
    /// Settings.
    config: &'a Config,
}

impl Exchange<'_> {
    /// Answers with a complete response.
    fn respond(&mut self, status: u16, content_type: &str, body: &[u8]) -> io::Result<Next> {
        http::write_response(self.out, SERVER, status, content_type, body, self.close, self.head_only)?;
        Ok(Next::KeepAlive)
    }

    /// Answers with a plain-text response.
    fn text(&mut self, status: u16, body: &str) -> io::Result<Next> {
        self.respond(status, "text/plain; charset=utf-8", body.as_bytes())
    }
}

/// Dispatches a request to its route.
fn route(x: &mut Exchange<'_>) -> io::Result<Next> {
    let method = x.req.method.as_str();
    let path = x.req.path();
    let get = method == "GET";
    let get_or_head = get || method == "HEAD";
    if get_or_head && path == "/" {
        root(x)
    } else if get_or_head && path == "/input" {
        match input::load(&client()) {
            Ok(doc) => x.respond(200, "application/json", &doc),
            Err(e) => x.text(404, &format!("{e}\n")),
        }
    } else if let Some(name) = path.strip_prefix("/env/").filter(|_| get_or_head) {
        env_var(x, &percent_decode(name, false))
    } else if let Some(text) = path.strip_prefix("/say/").filter(|_| get) {
        stdout_line(&percent_decode(text, false));
        x.text(200, "said\n")
    } else if let Some(code) = path.strip_prefix("/exit/").filter(|_| get) {
        exit(x, code.parse().unwrap_or(1))
    } else if get_or_head && path == "/file" {
        get_file(x)
    } else if method == "PUT" && path == "/file" {
        put_file(x)
    } else if let Some(n) = path.strip_prefix("/bytes/").filter(|_| get_or_head) {
        bytes(x, n)
    } else if (method == "POST" || method == "PUT") && path == "/echo" {
        echo(x)
    } else if get && path == "/sse" {
        sse(x)
    } else if get && path == "/ws" {
        websocket(x)
    } else if get && path == "/fetch" {
        // Fetches any http:// URL from inside the container, as a tool
        // downloading its `file_relationships` would.
        match query_param(x.req.query(), "url").map(|u| String::from_utf8_lossy(&u).into_owned()) {
            Some(url) => match client().get(&url) {
                Ok(body) => x.respond(200, "application/octet-stream", &body),
                Err(e) => x.text(502, &format!("fetching {url}: {e}\n")),
            },
            None => x.text(400, "missing url parameter\n"),
        }
    } else if let Some(answer) = process_route(path).filter(|_| get_or_head) {
        x.text(200, &answer)
    } else if get_or_head && path == "/headers" {
        let mut listing = String::new();
        for (name, value) in &x.req.headers {
            listing.push_str(&format!("{name}: {value}\n"));
        }
        x.text(200, &listing)
    } else {
        let line = format!("{} {}\n", x.req.method, x.req.target);
        x.text(200, &line)
    }
}

/// The process routes: `/argv` (arguments after the program, one a line),
/// `/cwd`, `/uid`, `/memlimit` (the cgroup's limit in bytes, or `max`),
/// `/shm` (size of `/dev/shm` in bytes).
fn process_route(path: &str) -> Option<String> {
    Some(match path {
        "/argv" => std::env::args().skip(1).map(|a| format!("{a}\n")).collect(),
        "/cwd" => format!("{}\n", std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default()),
        "/uid" => {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or("?");
            format!("{uid}\n")
        }
        "/memlimit" => format!("{}\n", memory_limit()),
        "/shm" => {
            // /proc/mounts: "shm /dev/shm tmpfs rw,...,size=65536k 0 0".
            let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
            let size = mounts
                .lines()
                .find(|l| l.split_whitespace().nth(1) == Some("/dev/shm"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|opts| opts.split(',').find_map(|o| o.strip_prefix("size=")))
                .and_then(parse_size)
                .map_or_else(|| "?".to_owned(), |b| b.to_string());
            format!("{size}\n")
        }
        _ => return None,
    })
}

/// The memory cgroup's limit (v2 `memory.max`, else v1
/// `memory.limit_in_bytes`; v1's "no limit" is a huge number, shown as
/// `max`).
fn memory_limit() -> String {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    match read("/sys/fs/cgroup/memory.max").or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes")) {
        Some(v) if v.parse::<u64>().is_ok_and(|n| n >= 1 << 62) => "max".to_owned(),
        Some(v) => v,
        None => "?".to_owned(),
    }
}

/// `65536k`, `64m`, `1g` or plain bytes, as tmpfs mount options write them.
fn parse_size(s: &str) -> Option<u64> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().ok()?;
    let mul = match unit {
        "" => 1,
        "k" | "K" => 1024,
        "m" | "M" => 1024 * 1024,
        "g" | "G" => 1024 * 1024 * 1024,
        _ => return None,
    };
    Some(n * mul)
}

/// `GET /`: 503 while starting, then a page showing the input document.
fn root(x: &mut Exchange<'_>) -> io::Result<Next> {
    if x.config.started.elapsed() < x.config.startup_delay {
        return x.text(503, "starting\n");
    }
    let doc = match input::load(&client()) {
        Ok(doc) => String::from_utf8_lossy(&doc).into_owned(),
        Err(e) => e.to_string(),
    };
    let page =
        format!("<!doctype html><title>berth-testtool</title><h1>berth-testtool</h1><pre>{}</pre>", html_escape(&doc));
    x.respond(200, "text/html; charset=utf-8", page.as_bytes())
}

/// `GET /env/<NAME>`: the variable's value, 404 when unset.
fn env_var(x: &mut Exchange<'_>, name: &[u8]) -> io::Result<Next> {
    // `var_os` may panic on such names: they cannot be set anyway.
    if name.is_empty() || name.contains(&b'=') || name.contains(&0) {
        return x.text(404, "unset\n");
    }
    match std::env::var_os(std::ffi::OsStr::from_bytes(name)) {
        Some(value) => x.respond(200, "text/plain; charset=utf-8", &value.into_vec()),
        None => x.text(404, "unset\n"),
    }
}

/// `GET /exit/<code>`: answers, then exits the process with `code`.
fn exit(x: &mut Exchange<'_>, code: i32) -> io::Result<Next> {
    x.close = true;
    // A failed answer must not keep the process alive.
    let _ = x.text(200, &format!("exiting with {code}\n"));
    let _ = x.out.shutdown(Shutdown::Write);
    let _ = io::stdout().flush();
    // Let the answer leave before the process (maybe PID 1) goes.
    thread::sleep(Duration::from_millis(50));
    std::process::exit(code)
}

/// The absolute path in the `path` query parameter.
fn path_param(x: &Exchange<'_>) -> Result<PathBuf, &'static str> {
    let path = query_param(x.req.query(), "path").ok_or("missing ?path=\n")?;
    let path = PathBuf::from(std::ffi::OsString::from_vec(path));
    if path.is_absolute() { Ok(path) } else { Err("path must be absolute\n") }
}

/// `GET /file?path=`: the file's content, 404 when it cannot be read.
fn get_file(x: &mut Exchange<'_>) -> io::Result<Next> {
    let path = match path_param(x) {
        Ok(path) => path,
        Err(msg) => return x.text(400, msg),
    };
    match fs::read(&path) {
        Ok(content) => x.respond(200, "application/octet-stream", &content),
        Err(e) => x.text(404, &format!("reading {}: {e}\n", path.display())),
    }
}

/// `PUT /file?path=`: writes the request body to the file (creating parent
/// directories); 201 when written, 500 when not.
fn put_file(x: &mut Exchange<'_>) -> io::Result<Next> {
    let path = match path_param(x) {
        Ok(path) => path,
        Err(msg) => return x.text(400, msg),
    };
    let file = path.parent().map_or(Ok(()), fs::create_dir_all).and_then(|()| fs::File::create(&path));
    let mut file = match file {
        Ok(file) => file,
        Err(e) => return x.text(500, &format!("creating {}: {e}\n", path.display())),
    };
    let mut buf = vec![0u8; CHUNK];
    let mut written = 0u64;
    loop {
        let n = match read_chunk(x, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return body_error(x, &e),
        };
        if let Err(e) = file.write_all(&buf[..n]) {
            return x.text(500, &format!("writing {}: {e}\n", path.display()));
        }
        written += n as u64;
    }
    if let Err(e) = file.sync_all() {
        return x.text(500, &format!("syncing {}: {e}\n", path.display()));
    }
    x.text(201, &format!("wrote {written} bytes to {}\n", path.display()))
}

/// The next piece of the request body in `buf`, retrying interrupted
/// reads; `Ok(0)` at its end.
fn read_chunk(x: &mut Exchange<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match x.body.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            read => return read,
        }
    }
}

/// Answers a request whose body could not be read: 400 for a malformed
/// body, and the connection closes either way.
fn body_error(x: &mut Exchange<'_>, e: &io::Error) -> io::Result<Next> {
    x.close = true;
    if e.kind() == io::ErrorKind::InvalidData {
        x.text(400, &format!("bad request body: {e}\n"))?;
    }
    Ok(Next::Close)
}

/// `GET /bytes/<n>`: exactly `n` bytes (byte `i` is `i % 256`), streamed.
fn bytes(x: &mut Exchange<'_>, n: &str) -> io::Result<Next> {
    let Ok(total) = n.parse::<u64>() else {
        return x.text(400, "expected /bytes/<count>\n");
    };
    x.out.write_all(&http::response_head(SERVER, 200, "application/octet-stream", Some(total), x.close))?;
    if x.head_only {
        return Ok(Next::KeepAlive);
    }
    // CHUNK is a multiple of 256, so the pattern runs on across chunks.
    let pattern: Vec<u8> = (0..CHUNK).map(|i| i as u8).collect();
    let mut left = total;
    while left > 0 {
        let n = usize::try_from(left).map_or(CHUNK, |left| left.min(CHUNK));
        x.out.write_all(&pattern[..n])?;
        left -= n as u64;
    }
    x.out.flush()?;
    Ok(Next::KeepAlive)
}

/// `POST|PUT /echo`: the count and the byte sum (mod 2^32) of the body,
/// read as a stream.
fn echo(x: &mut Exchange<'_>) -> io::Result<Next> {
    let mut buf = vec![0u8; CHUNK];
    let (mut count, mut sum) = (0u64, 0u32);
    loop {
        let n = match read_chunk(x, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return body_error(x, &e),
        };
        count += n as u64;
        sum = buf[..n].iter().fold(sum, |s, &b| s.wrapping_add(u32::from(b)));
    }
    x.text(200, &format!("bytes={count} sum={sum}\n"))
}

/// `GET /sse?n=&interval_ms=`: `n` server-sent events `data: event <i>`
/// (`i` from 0), `interval_ms` apart, then the connection closes.
fn sse(x: &mut Exchange<'_>) -> io::Result<Next> {
    let param = |name: &str, default: u64| {
        query_param(x.req.query(), name)
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let count = param("n", 3);
    let interval = Duration::from_millis(param("interval_ms", 100));
    let head = "HTTP/1.1 200 OK\r\nServer: berth-testtool\r\nContent-Type: text/event-stream\r\n\
                Cache-Control: no-cache\r\nConnection: close\r\n\r\n";
    x.out.write_all(head.as_bytes())?;
    x.out.flush()?;
    for i in 0..count {
        if i > 0 {
            thread::sleep(interval);
        }
        x.out.write_all(format!("data: event {i}\n\n").as_bytes())?;
        x.out.flush()?;
    }
    Ok(Next::Close)
}

/// `GET /ws`: the websocket handshake, then an echo session.
fn websocket(x: &mut Exchange<'_>) -> io::Result<Next> {
    let Some(key) = ws::upgrade_key(x.req).map(str::to_owned) else {
        x.close = true;
        return x.text(426, "expected a websocket upgrade (Upgrade: websocket, Sec-WebSocket-Key)\n");
    };
    let head = ws::handshake_response(SERVER, &key);
    x.out.write_all(head.as_bytes())?;
    x.out.flush()?;
    ws::echo(x.body.inner_mut(), x.out)?;
    Ok(Next::Close)
}

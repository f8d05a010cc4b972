//! A minimal `http://` GET client for tools: fetching the input document
//! from `INPUT_JSON_URL` and data files from `file_relationships`.
//!
//! Host names are looked up in `/etc/hosts` first (Docker writes
//! `host.docker.internal` there, and a static binary without NSS modules
//! may not consult it otherwise), then through the system resolver. HTTPS
//! is not supported: berth serves staged files over plain HTTP on the
//! engine's host gateway.
//!
//! ```no_run
//! use berth_tool_http::client::Client;
//!
//! let csv = Client::new("my-tool").get("http://host.docker.internal:8000/files/a.csv")?;
//! # Ok::<(), berth_tool_http::Error>(())
//! ```

use std::io::{self, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::Error;
use crate::message::{self, Body, BodyKind, HeadError};

/// Default connect, read and write timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest accepted response body, in bytes.
pub const DEFAULT_MAX_BODY: u64 = 64 * 1024 * 1024;

/// Settings of GET requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Value of the `User-Agent` field.
    pub user_agent: String,
    /// Value of the `Accept` field.
    pub accept: String,
    /// Timeout of connecting, and of each read and write.
    pub timeout: Duration,
    /// Largest accepted response body, in bytes.
    pub max_body: u64,
}

impl Client {
    /// A client sending `User-Agent: <user_agent>` and
    /// `Accept: application/json, */*`, with [`DEFAULT_TIMEOUT`] and
    /// [`DEFAULT_MAX_BODY`].
    pub fn new(user_agent: impl Into<String>) -> Self {
        Client {
            user_agent: user_agent.into(),
            accept: "application/json, */*".to_owned(),
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
        }
    }

    /// GETs `url` (`http://` only) and returns the body of a 2xx answer.
    /// Interim 1xx answers are skipped; bodies framed by `Content-Length`,
    /// chunked coding or the end of the connection are all read.
    ///
    /// # Errors
    ///
    /// An unsupported or malformed URL, a failed lookup or connection, a
    /// malformed answer, a body over [`Client::max_body`], or a status
    /// outside 2xx (the message then quotes the start of the body).
    pub fn get(&self, url: &str) -> Result<Vec<u8>, Error> {
        self.get_inner(url).map_err(Error::new)
    }

    /// [`Client::get`] with plain string errors.
    fn get_inner(&self, url: &str) -> Result<Vec<u8>, String> {
        let url = parse_url(url)?;
        let mut stream = connect(&url.host, url.port, self.timeout)?;
        stream.set_read_timeout(Some(self.timeout)).map_err(|e| e.to_string())?;
        stream.set_write_timeout(Some(self.timeout)).map_err(|e| e.to_string())?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {}\r\nAccept: {}\r\nConnection: close\r\n\r\n",
            url.path, url.authority, self.user_agent, self.accept
        );
        stream.write_all(request.as_bytes()).map_err(|e| format!("sending request: {e}"))?;
        let mut reader = BufReader::new(stream);
        let (status, headers) = loop {
            let head = message::read_head(&mut reader, message::MAX_HEAD).map_err(|e| match e {
                HeadError::Closed => "connection closed without a response".to_owned(),
                HeadError::TooLarge => "response head too large".to_owned(),
                HeadError::Io(e) => format!("reading response: {e}"),
            })?;
            let (status, headers) = message::parse_response(&head)?;
            // Skip interim answers (100 Continue and the like).
            if !(100..200).contains(&status) || status == 101 {
                break (status, headers);
            }
        };
        let kind = if status == 204 || status == 304 {
            BodyKind::Empty
        } else {
            message::framing(&headers)?.unwrap_or(BodyKind::UntilClose)
        };
        let mut body = Vec::new();
        Body::new(&mut reader, kind)
            .take(self.max_body.saturating_add(1))
            .read_to_end(&mut body)
            .map_err(|e| format!("reading response body: {e}"))?;
        if body.len() as u64 > self.max_body {
            return Err(format!("document larger than {} bytes", self.max_body));
        }
        if !(200..300).contains(&status) {
            let snippet = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(format!("HTTP status {status}: {}", snippet.trim()));
        }
        Ok(body)
    }
}

/// The parts of an `http://` URL the client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    /// Host name or address (IPv6 without brackets).
    host: String,
    /// Port, 80 by default.
    port: u16,
    /// Value of the `Host` header.
    authority: String,
    /// Path and query, at least `/`.
    path: String,
}

/// Parses an `http://host[:port][/path][?query]` URL.
fn parse_url(url: &str) -> Result<Url, String> {
    let rest = url
        .get(..7)
        .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
        .map(|_| &url[7..])
        .ok_or_else(|| "only http:// URLs are supported".to_owned())?;
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or("unclosed [ in URL host")?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("URL without host".to_owned());
    }
    let port = match port {
        None | Some("") => 80,
        Some(p) => p.parse().map_err(|_| format!("bad port {p:?} in URL"))?,
    };
    let path = match path {
        "" => "/".to_owned(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_owned(),
    };
    Ok(Url { host: host.to_owned(), port, authority: authority.to_owned(), path })
}

/// Addresses of `name` in a hosts file's text (`address name...` lines,
/// `#` comments), in file order.
pub fn hosts_lookup(hosts: &str, name: &str) -> Vec<IpAddr> {
    hosts
        .lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            let addr: IpAddr = fields.next()?.parse().ok()?;
            fields.any(|n| n.eq_ignore_ascii_case(name)).then_some(addr)
        })
        .collect()
}

/// Resolves `host`: an IP address as is, else through `/etc/hosts` (which
/// Docker writes, and which a static binary without NSS modules may not
/// consult otherwise), else through the system resolver.
///
/// # Errors
///
/// The system resolver failed.
pub fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        let found = hosts_lookup(&hosts, host);
        if !found.is_empty() {
            return Ok(found.into_iter().map(|ip| SocketAddr::new(ip, port)).collect());
        }
    }
    Ok((host, port).to_socket_addrs()?.collect())
}

/// Connects to the first reachable address of `host`.
fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, String> {
    let addrs = resolve(host, port).map_err(|e| format!("resolving {host}: {e}"))?;
    let mut last = format!("no address for {host}");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("connecting to {addr}: {e}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let url = parse_url("http://host.docker.internal:8000/input/abc?x=1#frag").expect("url");
        assert_eq!(
            url,
            Url {
                host: "host.docker.internal".into(),
                port: 8000,
                authority: "host.docker.internal:8000".into(),
                path: "/input/abc?x=1".into(),
            }
        );
        let url = parse_url("HTTP://example").expect("url");
        assert_eq!((url.host.as_str(), url.port, url.path.as_str()), ("example", 80, "/"));
        let url = parse_url("http://[::1]:81?q").expect("url");
        assert_eq!((url.host.as_str(), url.port, url.path.as_str()), ("::1", 81, "/?q"));
        let url = parse_url("http://user:pw@h/p").expect("url");
        assert_eq!((url.host.as_str(), url.authority.as_str()), ("h", "h"));
        assert!(parse_url("https://example/").is_err());
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("http://h:99999/").is_err());
        assert!(parse_url("http://[::1/").is_err());
    }

    #[test]
    fn looks_up_hosts_file() {
        let hosts = "127.0.0.1\tlocalhost\n::1 localhost ip6-localhost\n# 10.0.0.9 host.docker.internal\n\
                     172.17.0.1 host.docker.internal # gateway\nbogus line\n";
        assert_eq!(
            hosts_lookup(hosts, "localhost"),
            vec!["127.0.0.1".parse::<IpAddr>().expect("ip"), "::1".parse().expect("ip")]
        );
        assert_eq!(hosts_lookup(hosts, "HOST.docker.internal"), vec!["172.17.0.1".parse::<IpAddr>().expect("ip")]);
        assert!(hosts_lookup(hosts, "gateway").is_empty());
        assert!(hosts_lookup(hosts, "line").is_empty());
    }
}

//! Minimal HTTP/1.1 message handling, shared by servers and the client:
//! reading and parsing message heads, decoding bodies framed by
//! `Content-Length`, chunked transfer-coding or end of stream, and writing
//! responses.
//!
//! ```
//! use std::io::{Cursor, Read};
//! use berth_tool_http::message::{self, Body, MAX_HEAD};
//!
//! let mut conn = Cursor::new(&b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"[..]);
//! let head = message::read_head(&mut conn, MAX_HEAD).expect("head");
//! let req = message::parse_request(&head).expect("request");
//! let mut body = Vec::new();
//! Body::new(&mut conn, req.body_kind().expect("framing")).read_to_end(&mut body).expect("body");
//! assert_eq!((req.path(), &body[..]), ("/echo", &b"hi"[..]));
//! ```

use std::io::{self, BufRead, Read, Write};

/// Largest accepted header block (start line plus header fields), in bytes.
pub const MAX_HEAD: usize = 64 * 1024;

/// Longest accepted chunk-size line of a chunked body, in bytes.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Why a message head could not be read.
#[derive(Debug)]
pub enum HeadError {
    /// The peer closed the connection before sending a byte of a new message.
    Closed,
    /// The header block is larger than the limit.
    TooLarge,
    /// The connection failed or ended in the middle of the head.
    Io(io::Error),
}

/// Reads one message head (start line, header fields and the empty line
/// ending them) of at most `limit` bytes. Empty lines before the start line
/// are skipped, as RFC 9112 §2.2 recommends.
///
/// # Errors
///
/// [`HeadError::Closed`] when the stream ends before a new message,
/// [`HeadError::TooLarge`] past `limit`, [`HeadError::Io`] otherwise.
pub fn read_head<R: BufRead>(r: &mut R, limit: usize) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::new();
    loop {
        let start = head.len();
        // One byte more than allowed, so that an overlong head is detected.
        let allowed = (limit + 1).saturating_sub(start) as u64;
        let n = r.by_ref().take(allowed).read_until(b'\n', &mut head).map_err(HeadError::Io)?;
        if head.len() > limit {
            return Err(HeadError::TooLarge);
        }
        if n == 0 {
            return Err(if head.is_empty() {
                HeadError::Closed
            } else {
                HeadError::Io(io::ErrorKind::UnexpectedEof.into())
            });
        }
        let line = &head[start..];
        if !line.ends_with(b"\n") {
            return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        if line == b"\n" || line == b"\r\n" {
            if start == 0 {
                head.clear();
                continue;
            }
            return Ok(head);
        }
    }
}

/// Header fields in order of arrival, names lowercased.
pub type Headers = Vec<(String, String)>;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request target exactly as sent, e.g. `/file?path=%2Ftmp%2Fx`.
    pub target: String,
    /// Whether the request is HTTP/1.0 (otherwise HTTP/1.1).
    pub http10: bool,
    /// The header fields.
    pub headers: Headers,
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer-coding.
    Chunked,
    /// Everything until the peer closes the connection (responses only).
    UntilClose,
}

/// Lines of a head, without their line endings and without the final empty line.
fn head_lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&b| b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line)).filter(|line| !line.is_empty())
}

/// Whether `b` may appear in a token (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `s` is a non-empty token.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().copied().all(is_tchar)
}

/// Parses a request head as returned by [`read_head`].
///
/// # Errors
///
/// A short description of what is malformed (bad request line, method,
/// target, version or header field).
pub fn parse_request(head: &[u8]) -> Result<Request, &'static str> {
    let mut lines = head_lines(head);
    let first = lines.next().ok_or("empty request")?;
    let mut parts = first.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line");
    };
    if !is_token(method) {
        return Err("malformed method");
    }
    if target.is_empty() || target.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err("malformed request target");
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Err("unsupported HTTP version"),
    };
    Ok(Request {
        method: String::from_utf8_lossy(method).into_owned(),
        target: String::from_utf8_lossy(target).into_owned(),
        http10,
        headers: parse_headers(lines)?,
    })
}

/// Parses a response head as returned by [`read_head`] into its status code
/// and header fields.
///
/// # Errors
///
/// A short description of what is malformed.
pub fn parse_response(head: &[u8]) -> Result<(u16, Headers), &'static str> {
    let mut lines = head_lines(head);
    let first = lines.next().ok_or("empty response")?;
    let mut parts = first.splitn(3, |&b| b == b' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with(b"HTTP/1.") {
        return Err("not an HTTP/1.x response");
    }
    let code = parts.next().unwrap_or_default();
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err("malformed status code");
    }
    let status = code.iter().fold(0u16, |acc, &d| acc * 10 + u16::from(d - b'0'));
    Ok((status, parse_headers(lines)?))
}

/// Parses header field lines.
fn parse_headers<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Result<Headers, &'static str> {
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            return Err("obsolete header line folding");
        }
        let colon = line.iter().position(|&b| b == b':').ok_or("header line without colon")?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if !is_token(name) {
            return Err("malformed header name");
        }
        if value.iter().any(|&b| b == b'\r' || b == 0) {
            return Err("malformed header value");
        }
        let value = value.trim_ascii();
        headers.push((String::from_utf8_lossy(name).to_ascii_lowercase(), String::from_utf8_lossy(value).into_owned()));
    }
    Ok(headers)
}

/// Values of the fields named `name` (lowercase).
pub fn header_values<'a, 'n>(headers: &'a Headers, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
    headers.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// Whether a comma-separated field named `name` lists `token` (ignoring case).
pub fn has_token(headers: &Headers, name: &str, token: &str) -> bool {
    header_values(headers, name).flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// How the body of a message with these fields is framed, or `None` when
/// the fields say nothing (no `Transfer-Encoding`, no `Content-Length`).
///
/// # Errors
///
/// A transfer-coding other than `chunked` last, or a malformed or
/// conflicting `Content-Length`.
pub fn framing(headers: &Headers) -> Result<Option<BodyKind>, &'static str> {
    let codings: Vec<&str> = header_values(headers, "transfer-encoding")
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if let Some(last) = codings.last() {
        return if last.eq_ignore_ascii_case("chunked") {
            Ok(Some(BodyKind::Chunked))
        } else {
            Err("unsupported transfer-encoding")
        };
    }
    let mut length = None;
    for value in header_values(headers, "content-length").flat_map(|v| v.split(',')) {
        let value = value.trim();
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err("malformed content-length");
        }
        let n: u64 = value.parse().map_err(|_| "content-length too large")?;
        if length.is_some_and(|l| l != n) {
            return Err("conflicting content-length values");
        }
        length = Some(n);
    }
    Ok(length.map(BodyKind::Length))
}

impl Request {
    /// The first value of the field named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_values(&self.headers, name).next()
    }

    /// Whether a comma-separated field named `name` lists `token`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        has_token(&self.headers, name, token)
    }

    /// The path part of the target (before `?`); for an absolute-form target
    /// (`http://host/path`), the path after the authority.
    pub fn path(&self) -> &str {
        let target = self.target.split_once('?').map_or(self.target.as_str(), |(p, _)| p);
        match target.split_once("://") {
            Some((_, rest)) if !target.starts_with('/') => rest.find('/').map_or("/", |i| &rest[i..]),
            _ => target,
        }
    }

    /// The query string of the target (after `?`), empty when there is none.
    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }

    /// Whether the connection may carry another request after this one.
    pub fn keep_alive(&self) -> bool {
        if self.has_token("connection", "close") {
            false
        } else if self.http10 {
            self.has_token("connection", "keep-alive")
        } else {
            true
        }
    }

    /// How the request body is framed.
    ///
    /// # Errors
    ///
    /// As [`framing`].
    pub fn body_kind(&self) -> Result<BodyKind, &'static str> {
        Ok(framing(&self.headers)?.unwrap_or(BodyKind::Empty))
    }
}

/// Where a [`Body`] reader stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// This many bytes of a `Content-Length` body are left.
    Length(u64),
    /// Reading until end of stream.
    UntilClose,
    /// A chunk-size line comes next.
    ChunkSize,
    /// This many bytes of the current chunk are left.
    ChunkData(u64),
    /// The line ending after a chunk's data comes next.
    ChunkEnd,
    /// The whole body has been read.
    Done,
}

/// A reader of one message body over the connection's buffered reader. It
/// yields the body's bytes (chunked framing removed) and then end of file,
/// leaving the connection positioned at the next message.
pub struct Body<'a, R> {
    /// The connection.
    inner: &'a mut R,
    /// Progress through the body.
    state: BodyState,
}

/// An error for a malformed body.
fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<'a, R: BufRead> Body<'a, R> {
    /// A reader of a body framed as `kind` starting at `inner`'s position.
    pub fn new(inner: &'a mut R, kind: BodyKind) -> Self {
        let state = match kind {
            BodyKind::Empty => BodyState::Done,
            BodyKind::Length(n) => BodyState::Length(n),
            BodyKind::Chunked => BodyState::ChunkSize,
            BodyKind::UntilClose => BodyState::UntilClose,
        };
        Body { inner, state }
    }

    /// The underlying connection (to take it over, e.g. for a websocket).
    pub fn inner_mut(&mut self) -> &mut R {
        self.inner
    }

    /// Reads one line of at most `limit` bytes, without its line ending.
    fn read_line(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        self.inner.by_ref().take(limit as u64 + 1).read_until(b'\n', &mut line)?;
        if line.len() > limit {
            return Err(invalid("chunked body line too long"));
        }
        if line.pop() != Some(b'\n') {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(line)
    }

    /// Reads up to `max` bytes of data into `buf`; end of stream is an error.
    fn read_data(&mut self, buf: &mut [u8], max: u64) -> io::Result<usize> {
        let len = buf.len().min(usize::try_from(max).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..len])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(n)
    }
}

/// Parses a chunk-size line (hex size, optionally followed by `;extensions`).
///
/// # Errors
///
/// [`io::ErrorKind::InvalidData`] for anything but 1 to 16 hex digits.
pub fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    let size = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    if size.is_empty() || size.len() > 16 || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(invalid("malformed chunk size"));
    }
    let size = std::str::from_utf8(size).map_err(|_| invalid("malformed chunk size"))?;
    u64::from_str_radix(size, 16).map_err(|_| invalid("malformed chunk size"))
}

impl<R: BufRead> Read for Body<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                BodyState::Done => return Ok(0),
                BodyState::Length(0) => self.state = BodyState::Done,
                BodyState::Length(left) => {
                    let n = self.read_data(buf, left)?;
                    self.state = BodyState::Length(left - n as u64);
                    return Ok(n);
                }
                BodyState::UntilClose => {
                    let n = self.inner.read(buf)?;
                    if n == 0 {
                        self.state = BodyState::Done;
                    }
                    return Ok(n);
                }
                BodyState::ChunkSize => {
                    let line = self.read_line(MAX_CHUNK_LINE)?;
                    let size = parse_chunk_size(&line)?;
                    if size > 0 {
                        self.state = BodyState::ChunkData(size);
                        continue;
                    }
                    // Last chunk: skip the trailer section up to its empty line.
                    let mut trailers = 0;
                    loop {
                        let line = self.read_line(MAX_HEAD)?;
                        if line.is_empty() {
                            break;
                        }
                        trailers += line.len();
                        if trailers > MAX_HEAD {
                            return Err(invalid("chunked trailers too large"));
                        }
                    }
                    self.state = BodyState::Done;
                }
                BodyState::ChunkData(left) => {
                    let n = self.read_data(buf, left)?;
                    let left = left - n as u64;
                    self.state = if left == 0 { BodyState::ChunkEnd } else { BodyState::ChunkData(left) };
                    return Ok(n);
                }
                BodyState::ChunkEnd => {
                    if !self.read_line(2)?.is_empty() {
                        return Err(invalid("chunk data longer than its size"));
                    }
                    self.state = BodyState::ChunkSize;
                }
            }
        }
    }
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A response head with a `Server: <server>` field. `Content-Type` is
/// omitted when `content_type` is empty, `Content-Length` when
/// `content_length` is `None` (streams that end with the connection);
/// `close` adds `Connection: close`.
pub fn response_head(
    server: &str,
    status: u16,
    content_type: &str,
    content_length: Option<u64>,
    close: bool,
) -> Vec<u8> {
    let mut head = format!("HTTP/1.1 {status} {}\r\nServer: {server}\r\n", reason(status));
    if !content_type.is_empty() {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if let Some(len) = content_length {
        head.push_str(&format!("Content-Length: {len}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// Writes a complete response (head as [`response_head`], with a
/// `Content-Length`) and flushes; the body is left out when `head_only`
/// (answer to `HEAD`).
///
/// # Errors
///
/// Writing to `w` failed.
pub fn write_response<W: Write>(
    w: &mut W,
    server: &str,
    status: u16,
    content_type: &str,
    body: &[u8],
    close: bool,
    head_only: bool,
) -> io::Result<()> {
    let mut message = response_head(server, status, content_type, Some(body.len() as u64), close);
    if !head_only {
        message.extend_from_slice(body);
    }
    w.write_all(&message)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn head_of(raw: &[u8]) -> Result<Vec<u8>, HeadError> {
        read_head(&mut Cursor::new(raw), MAX_HEAD)
    }

    #[test]
    fn reads_heads() {
        let raw = b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nBODY";
        let mut cursor = Cursor::new(&raw[..]);
        let head = read_head(&mut cursor, MAX_HEAD).expect("head");
        assert_eq!(head, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut rest = Vec::new();
        cursor.read_to_end(&mut rest).expect("rest");
        assert_eq!(rest, b"BODY");
        assert!(matches!(head_of(b""), Err(HeadError::Closed)));
        assert!(matches!(head_of(b"GET / HTTP/1.1\r\nHost"), Err(HeadError::Io(_))));
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(matches!(head_of(long.as_bytes()), Err(HeadError::TooLarge)));
        let mut endless = Cursor::new(vec![b'a'; 10 * MAX_HEAD]);
        assert!(matches!(read_head(&mut endless, MAX_HEAD), Err(HeadError::TooLarge)));
    }

    #[test]
    fn parses_request_line_and_headers() {
        let req = parse_request(
            b"POST /echo?x=1 HTTP/1.1\r\nHost: example\r\nX-Forwarded-For:  10.0.0.1 \r\nCONTENT-length: 5\r\n\r\n",
        )
        .expect("parse");
        assert_eq!(req.method, "POST");
        assert_eq!(req.target, "/echo?x=1");
        assert_eq!(req.path(), "/echo");
        assert_eq!(req.query(), "x=1");
        assert!(!req.http10);
        assert_eq!(req.header("x-forwarded-for"), Some("10.0.0.1"));
        assert_eq!(req.header("content-length"), Some("5"));
        assert_eq!(req.body_kind(), Ok(BodyKind::Length(5)));
        assert!(req.keep_alive());

        let req = parse_request(b"GET http://host:8080/a/b?c HTTP/1.0\nConnection: keep-alive\n\n").expect("parse");
        assert!(req.http10);
        assert_eq!(req.path(), "/a/b");
        assert!(req.keep_alive());
        assert_eq!(req.body_kind(), Ok(BodyKind::Empty));

        let req = parse_request(b"GET / HTTP/1.0\r\n\r\n").expect("parse");
        assert!(!req.keep_alive());
        let req = parse_request(b"GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n").expect("parse");
        assert!(!req.keep_alive());
        let req = parse_request(b"PUT /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").expect("parse");
        assert_eq!(req.body_kind(), Ok(BodyKind::Chunked));
    }

    #[test]
    fn rejects_malformed_requests() {
        for raw in [
            &b"GET /\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty\r\n\r\n",
        ] {
            assert!(parse_request(raw).is_err(), "{:?}", String::from_utf8_lossy(raw));
        }
        for raw in [
            &b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        ] {
            let req = parse_request(raw).expect("parse");
            assert!(req.body_kind().is_err(), "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn parses_responses() {
        let (status, headers) = parse_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n").expect("parse");
        assert_eq!(status, 404);
        assert_eq!(framing(&headers), Ok(Some(BodyKind::Length(3))));
        let (status, headers) = parse_response(b"HTTP/1.0 200\r\n\r\n").expect("parse");
        assert_eq!(status, 200);
        assert_eq!(framing(&headers), Ok(None));
        assert!(parse_response(b"ICY 200 OK\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 20x OK\r\n\r\n").is_err());
    }

    fn decode(raw: &[u8], kind: BodyKind) -> (io::Result<Vec<u8>>, Vec<u8>) {
        let mut cursor = Cursor::new(raw);
        let mut out = Vec::new();
        let result = Body::new(&mut cursor, kind).read_to_end(&mut out).map(|_| out);
        let mut rest = Vec::new();
        cursor.read_to_end(&mut rest).expect("rest");
        (result, rest)
    }

    #[test]
    fn decodes_chunked_bodies() {
        let raw = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let (body, rest) = decode(raw, BodyKind::Chunked);
        assert_eq!(body.expect("body"), b"hello, world");
        assert_eq!(rest, b"NEXT");

        let (body, rest) = decode(b"A\nabcdefghij\n0\n\n", BodyKind::Chunked);
        assert_eq!(body.expect("body"), b"abcdefghij");
        assert!(rest.is_empty());

        assert!(decode(b"zz\r\nhello\r\n0\r\n\r\n", BodyKind::Chunked).0.is_err());
        assert!(decode(b"3\r\nhello\r\n0\r\n\r\n", BodyKind::Chunked).0.is_err());
        assert!(decode(b"5\r\nhel", BodyKind::Chunked).0.is_err());
        assert!(decode(b"5\r\nhello\r\n", BodyKind::Chunked).0.is_err());
        assert!(decode(b"11111111111111111\r\n", BodyKind::Chunked).0.is_err());
        assert_eq!(parse_chunk_size(b"fF ; a=b").expect("size"), 255);
        assert!(parse_chunk_size(b"+5").is_err());
    }

    #[test]
    fn decodes_other_bodies() {
        let (body, rest) = decode(b"helloNEXT", BodyKind::Length(5));
        assert_eq!(body.expect("body"), b"hello");
        assert_eq!(rest, b"NEXT");
        assert!(decode(b"hel", BodyKind::Length(5)).0.is_err());
        let (body, rest) = decode(b"NEXT", BodyKind::Empty);
        assert!(body.expect("body").is_empty());
        assert_eq!(rest, b"NEXT");
        let (body, _) = decode(b"all of it", BodyKind::UntilClose);
        assert_eq!(body.expect("body"), b"all of it");
    }

    #[test]
    fn writes_responses() {
        let mut out = Vec::new();
        write_response(&mut out, "berth-testtool", 200, "text/plain", b"hi\n", true, false).expect("write");
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nServer: berth-testtool\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nhi\n"
        );
        let mut out = Vec::new();
        write_response(&mut out, "berth-testtool", 404, "text/plain", b"nope", false, true).expect("write");
        assert!(out.ends_with(b"Content-Length: 4\r\n\r\n"));
    }
}

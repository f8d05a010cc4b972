//! WebSocket (RFC 6455) server support: the handshake and an echo loop
//! over frames.
//!
//! ```
//! use berth_tool_http::{message, ws};
//!
//! let head = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
//! let req = message::parse_request(head).expect("request");
//! let key = ws::upgrade_key(&req).expect("a websocket upgrade");
//! let answer = ws::handshake_response("my-tool", key);
//! assert!(answer.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
//! // Then: write `answer`, and run `ws::echo(reader, writer)` on the connection.
//! ```

use std::io::{self, Read, Write};

use crate::message::Request;
use crate::text::base64_encode;

/// The GUID appended to the client's key to compute `Sec-WebSocket-Accept`
/// (RFC 6455 §1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest accepted frame payload; larger frames end the session with
/// close code 1009 (message too big).
const MAX_PAYLOAD: u64 = 64 * 1024 * 1024;

/// Continuation frame opcode.
const OP_CONTINUATION: u8 = 0x0;
/// Text frame opcode.
const OP_TEXT: u8 = 0x1;
/// Binary frame opcode.
const OP_BINARY: u8 = 0x2;
/// Close frame opcode.
const OP_CLOSE: u8 = 0x8;
/// Ping frame opcode.
const OP_PING: u8 = 0x9;
/// Pong frame opcode.
const OP_PONG: u8 = 0xA;

/// Close code for a protocol error.
const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code for a message too big to process.
const CLOSE_TOO_BIG: u16 = 1009;

/// The `Sec-WebSocket-Accept` value answering the client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(GUID.as_bytes());
    base64_encode(&sha.digest().bytes())
}

/// The client's `Sec-WebSocket-Key` when `req` asks for a websocket upgrade
/// (`Upgrade: websocket` and a key), else `None`.
pub fn upgrade_key(req: &Request) -> Option<&str> {
    req.header("sec-websocket-key").filter(|_| req.has_token("upgrade", "websocket"))
}

/// The complete `101 Switching Protocols` head accepting a websocket
/// upgrade whose client sent `key`, with a `Server: <server>` field.
pub fn handshake_response(server: &str, key: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nServer: {server}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key)
    )
}

/// One received frame, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    /// Whether this is the final fragment of a message.
    fin: bool,
    /// The opcode.
    opcode: u8,
    /// The payload, unmasked.
    payload: Vec<u8>,
}

/// Why a frame could not be read.
#[derive(Debug)]
enum FrameError {
    /// The frame breaks the protocol.
    Protocol,
    /// The payload is larger than [`MAX_PAYLOAD`].
    TooBig,
    /// Reading failed or the stream ended inside a frame.
    Io(io::Error),
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Reads one frame; `None` when the stream ends cleanly between frames.
/// Client frames should be masked; unmasked frames are accepted too.
fn read_frame<R: Read>(r: &mut R) -> Result<Option<Frame>, FrameError> {
    let mut b0 = [0u8; 1];
    loop {
        match r.read(&mut b0) {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut b1 = [0u8; 1];
    r.read_exact(&mut b1)?;
    let fin = b0[0] & 0x80 != 0;
    if b0[0] & 0x70 != 0 {
        return Err(FrameError::Protocol); // reserved bits without an extension
    }
    let opcode = b0[0] & 0x0f;
    let masked = b1[0] & 0x80 != 0;
    let len = match b1[0] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            let len = u64::from_be_bytes(b);
            if len >> 63 != 0 {
                return Err(FrameError::Protocol);
            }
            len
        }
        n => u64::from(n),
    };
    if opcode >= OP_CLOSE && (!fin || len > 125) {
        return Err(FrameError::Protocol); // control frames are short and whole
    }
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooBig);
    }
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask)?;
    }
    let mut payload = Vec::new();
    r.take(len).read_to_end(&mut payload)?;
    if payload.len() as u64 != len {
        return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Ok(Some(Frame { fin, opcode, payload }))
}

/// The header of an unmasked server frame.
fn frame_header(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
    let mut header = vec![if fin { 0x80 } else { 0 } | opcode];
    if len < 126 {
        header.push(len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        header.push(126);
        header.extend_from_slice(&len.to_be_bytes());
    } else {
        header.push(127);
        header.extend_from_slice(&(len as u64).to_be_bytes());
    }
    header
}

/// Writes one unmasked frame.
fn write_frame<W: Write>(w: &mut W, fin: bool, opcode: u8, payload: &[u8]) -> io::Result<()> {
    let mut frame = frame_header(fin, opcode, payload.len());
    frame.extend_from_slice(payload);
    w.write_all(&frame)?;
    w.flush()
}

/// Echoes frames until the client closes: text, binary and continuation
/// frames come back as they are (so fragmented messages are echoed frame by
/// frame), pings are answered with pongs, pongs are ignored, and a close
/// frame is answered with a close frame carrying the same status code.
pub fn echo<R: Read, W: Write>(r: &mut R, w: &mut W) -> io::Result<()> {
    loop {
        let frame = match read_frame(r) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(()),
            Err(FrameError::Protocol) => {
                return write_frame(w, true, OP_CLOSE, &CLOSE_PROTOCOL_ERROR.to_be_bytes());
            }
            Err(FrameError::TooBig) => {
                return write_frame(w, true, OP_CLOSE, &CLOSE_TOO_BIG.to_be_bytes());
            }
            Err(FrameError::Io(e)) => return Err(e),
        };
        match frame.opcode {
            OP_CONTINUATION | OP_TEXT | OP_BINARY => write_frame(w, frame.fin, frame.opcode, &frame.payload)?,
            OP_PING => write_frame(w, true, OP_PONG, &frame.payload)?,
            OP_PONG => {}
            OP_CLOSE => {
                let code = frame.payload.get(..2).unwrap_or_default();
                return write_frame(w, true, OP_CLOSE, code);
            }
            _ => return write_frame(w, true, OP_CLOSE, &CLOSE_PROTOCOL_ERROR.to_be_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn accept_key_rfc6455_example() {
        // RFC 6455 §1.3.
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn upgrade_requests() {
        let req =
            crate::message::parse_request(b"GET /ws HTTP/1.1\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key: k\r\n\r\n")
                .expect("parse");
        assert_eq!(upgrade_key(&req), Some("k"));
        let req = crate::message::parse_request(b"GET /ws HTTP/1.1\r\nSec-WebSocket-Key: k\r\n\r\n").expect("parse");
        assert_eq!(upgrade_key(&req), None);
        assert_eq!(
            handshake_response("t", "dGhlIHNhbXBsZSBub25jZQ=="),
            "HTTP/1.1 101 Switching Protocols\r\nServer: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    /// A masked client frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = frame_header(fin, opcode, payload.len());
        frame[1] |= 0x80;
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    #[test]
    fn frame_headers_use_all_length_forms() {
        assert_eq!(frame_header(true, OP_TEXT, 5), [0x81, 5]);
        assert_eq!(frame_header(true, OP_BINARY, 126), [0x82, 126, 0, 126]);
        assert_eq!(frame_header(false, OP_TEXT, 65535), [0x01, 126, 0xff, 0xff]);
        assert_eq!(frame_header(true, OP_BINARY, 65536), [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn echoes_frames() {
        let big = vec![7u8; 70_000];
        let mut input = client_frame(true, OP_TEXT, b"Hello");
        input.extend(client_frame(true, OP_PING, b"p"));
        input.extend(client_frame(true, OP_BINARY, &big));
        input.extend(client_frame(false, OP_TEXT, b"frag"));
        input.extend(client_frame(true, OP_CONTINUATION, b"ment"));
        input.extend(client_frame(true, OP_PONG, b""));
        input.extend(client_frame(true, OP_CLOSE, &[0x03, 0xe8, b'b', b'y', b'e']));
        input.extend(client_frame(true, OP_TEXT, b"after close"));
        let mut out = Vec::new();
        echo(&mut Cursor::new(input), &mut out).expect("echo");

        let mut expected = vec![0x81, 5];
        expected.extend_from_slice(b"Hello");
        expected.extend_from_slice(&[0x8A, 1, b'p']);
        expected.extend(frame_header(true, OP_BINARY, big.len()));
        expected.extend_from_slice(&big);
        expected.extend_from_slice(&[0x01, 4]);
        expected.extend_from_slice(b"frag");
        expected.extend_from_slice(&[0x80, 4]);
        expected.extend_from_slice(b"ment");
        expected.extend_from_slice(&[0x88, 2, 0x03, 0xe8]);
        assert_eq!(out, expected);
    }

    #[test]
    fn unmasked_frames_and_clean_end() {
        let mut out = Vec::new();
        echo(&mut Cursor::new(vec![0x81, 2, b'h', b'i']), &mut out).expect("echo");
        assert_eq!(out, [0x81, 2, b'h', b'i']);
    }

    #[test]
    fn protocol_errors_close_the_session() {
        for input in [
            vec![0xC1, 0],                                    // reserved bit
            vec![0x83, 0],                                    // unknown opcode
            vec![0x09, 0],                                    // fragmented ping
            [vec![0x89, 126, 0, 200], vec![0; 200]].concat(), // long ping
        ] {
            let mut out = Vec::new();
            echo(&mut Cursor::new(input), &mut out).expect("echo");
            assert_eq!(out, [0x88, 2, 0x03, 0xea]);
        }
        let mut out = Vec::new();
        let huge = [0x82, 127, 0, 0, 0, 0, 0x10, 0, 0, 0];
        echo(&mut Cursor::new(huge.to_vec()), &mut out).expect("echo");
        assert_eq!(out, [0x88, 2, 0x03, 0xf1]);
        assert!(echo(&mut Cursor::new(vec![0x81, 5, b'h']), &mut Vec::new()).is_err());
    }
}

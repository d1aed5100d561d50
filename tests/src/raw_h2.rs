//! Hand-made HTTP/2 for proxy tests: frames a real client never sends (protocol violations,
//! floods, a window kept shut), written over a plain TCP socket from a lab host, and the
//! server's frames read back.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::raw_http::read_reply;
use crate::Host;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// Error codes (RFC 9113 7).
pub const PROTOCOL_ERROR: u32 = 1;

/// `GET /` with authority lb1 in HPACK: :method GET, :scheme http and :path / from the
/// static table, :authority as a literal with an indexed name.
pub const GET_BLOCK: [u8; 8] = [0x82, 0x86, 0x84, 0x01, 0x03, b'l', b'b', b'1'];

/// One frame: its header, then `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len())
        .expect("small frame")
        .to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A header field in HPACK as a literal without indexing, its name sent as it is (names of
/// fewer than 127 bytes, values of any length).
pub fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00];
    for string in [name, value] {
        hpack_length(string.len(), &mut out);
        out.extend_from_slice(string);
    }
    out
}

/// A string's length with HPACK's 7-bit prefix (RFC 7541 5.1), Huffman bit clear.
fn hpack_length(mut length: usize, out: &mut Vec<u8>) {
    if length < 127 {
        out.push(u8::try_from(length).expect("small"));
        return;
    }
    out.push(127);
    length -= 127;
    while length >= 128 {
        out.push(u8::try_from(length % 128).expect("7 bits") | 0x80);
        length /= 128;
    }
    out.push(u8::try_from(length).expect("7 bits"));
}

/// A frame as the server sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let code = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(code.try_into().ok()?))
    }
}

/// The whole frames in `bytes`.
pub fn frames(bytes: &[u8]) -> Vec<Frame<'_>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        if rest.len() < 9 + len {
            break;
        }
        out.push(Frame {
            kind: rest[3],
            flags: rest[4],
            stream: u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff,
            payload: &rest[9..9 + len],
        });
        rest = &rest[9 + len..];
    }
    out
}

/// A raw HTTP/2 connection from `client` to `server`: the preface and an empty SETTINGS sent.
pub fn connect(client: &Host, server: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut stream = client
        .in_netns(move || TcpStream::connect_timeout(&server, Duration::from_secs(5)))?
        .with_context(|| format!("connecting to {server}"))?;
    stream.write_all(PREFACE).context("sending the preface")?;
    stream
        .write_all(&frame(SETTINGS, 0, 0, &[]))
        .context("sending SETTINGS")?;
    Ok(stream)
}

/// Everything the server sent until it closed or `timeout` passed, and whether it closed.
pub fn read_all(stream: &mut TcpStream, timeout: Duration) -> (Vec<u8>, bool) {
    let reply = read_reply(stream, Instant::now(), timeout).expect("reading the server");
    (reply.bytes, reply.closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_literals_take_hpack_continuation_bytes() {
        let value = vec![b'v'; 300];
        let block = literal(b"x", &value);
        // 0x00, name length 1, "x", then 127 + 173: 0x7f, 173 - 128 = 45 | 0x80, 1.
        assert_eq!(&block[..6], &[0x00, 1, b'x', 0x7f, 0xad, 0x01]);
        assert_eq!(block.len(), 6 + 300);
    }

    #[test]
    fn frames_read_back_with_their_stream_and_error_code() {
        let mut bytes = frame(RST_STREAM, 0, 3, &PROTOCOL_ERROR.to_be_bytes());
        bytes.extend(frame(DATA, END_STREAM, 5, b"x"));
        let read = frames(&bytes);
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].stream, 3);
        assert_eq!(read[0].error_code(), Some(PROTOCOL_ERROR));
        assert_eq!(read[1].payload, b"x");
    }
}

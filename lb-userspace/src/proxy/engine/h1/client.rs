//! HTTP/1.1 to a backend for requests that did not arrive over HTTP/1.1 (HTTP/2 streams), on
//! the same per-worker pool of plain connections as the HTTP/1.1 engine: the request head is
//! written from the stream's header map, a body of unknown length goes chunked, and the
//! response body is read into frames ([`RawBody`]), chunked bodies decoded ([`Dechunk`]),
//! since HTTP/2 frames its data itself. An idle pooled connection holds no buffer.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt as _;

use super::head::{Framing, Malformed};
use super::pool::{self, RawConn};
use crate::proxy::engine::backend::{ForwardBody, PoolSettings};
use crate::proxy::engine::guard::BodyEnd;

/// What one read from a backend may take.
const READ: usize = 32 * 1024;

/// Errors of a body relayed to an HTTP/2 client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Writes the request head for `parts` (its hop-by-hop headers already removed) with `target`
/// in origin-form; says whether the body goes chunked (it has one and no Content-Length).
pub fn request_head(
    parts: &http::request::Parts,
    target: &[u8],
    has_body: bool,
) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let chunked = has_body && !parts.headers.contains_key(CONTENT_LENGTH);
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (out, chunked)
}

/// Why a request could not be sent whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFailed {
    /// The backend's connection failed, or it took nothing for the server timeout.
    Backend,
    /// The client sent nothing of its body for the client timeout.
    ClientStalled,
    /// The client's body ended in an error (a reset stream, a body over its limit).
    Client,
}

/// Sends the head and the body to the backend: each write must go through within
/// `server_timeout`, each piece of the client's body must come within `client_timeout`.
pub async fn send(
    conn: &mut RawConn,
    head: &[u8],
    mut body: ForwardBody,
    chunked: bool,
    client_timeout: Duration,
    server_timeout: Duration,
) -> Result<(), SendFailed> {
    let stream = &mut conn.stream;
    write_within(stream, head, server_timeout).await?;
    if body.is_empty() {
        return Ok(());
    }
    loop {
        let frame = match tokio::time::timeout(client_timeout, body.frame()).await {
            Err(_elapsed) => return Err(SendFailed::ClientStalled),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(SendFailed::Client),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            // Trailers: HTTP/1.1 backends get none (hyper's client sends none either).
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            let size = format!("{:x}\r\n", data.len());
            write_within(stream, size.as_bytes(), server_timeout).await?;
            write_within(stream, &data, server_timeout).await?;
            write_within(stream, b"\r\n", server_timeout).await?;
        } else {
            write_within(stream, &data, server_timeout).await?;
        }
    }
    if chunked {
        write_within(stream, b"0\r\n\r\n", server_timeout).await?;
    }
    Ok(())
}

/// One write to the backend, which must take it within `limit`.
async fn write_within(
    stream: &mut (impl tokio::io::AsyncWrite + Unpin),
    bytes: &[u8],
    limit: Duration,
) -> Result<(), SendFailed> {
    match tokio::time::timeout(limit, stream.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(SendFailed::Backend),
    }
}

/// A chunked body's decoder (RFC 9112 7.1): chunk data out, sizes, extensions and trailers
/// dropped. The grammar is the client I/O's ([`BodyEnd`]), which checks and tracks chunked
/// bodies everywhere else; this only takes the data out.
#[derive(Debug, Clone, Copy)]
pub struct Dechunk(BodyEnd);

impl Default for Dechunk {
    fn default() -> Self {
        Dechunk::new()
    }
}

impl Dechunk {
    pub fn new() -> Self {
        Dechunk(BodyEnd::chunked())
    }

    pub fn is_done(&self) -> bool {
        self.0.is_done()
    }

    /// Takes the framing at the front of `buf` and returns the next chunk data there, if any;
    /// `Ok(None)` when `buf` holds no data yet (read more) or the body has ended.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Malformed> {
        let bad = |_| Malformed("malformed chunked body");
        while !buf.is_empty() && !self.0.is_done() {
            if let Some(left) = self.0.chunk_data_left() {
                let n = (buf.len() as u64).min(left) as usize;
                let data = buf.split_to(n).freeze();
                self.0.feed(&data).map_err(bad)?;
                return Ok(Some(data));
            }
            // Framing, a byte at a time: it stops where the data begins.
            self.0.feed(&buf[..1]).map_err(bad)?;
            buf.advance(1);
        }
        Ok(None)
    }
}

/// How [`RawBody`] finds the body's end.
#[derive(Debug)]
enum Decoder {
    Length(u64),
    Chunked(Dechunk),
    /// Until the backend closes.
    Close,
    Done,
}

/// A backend's response body read from its plain HTTP/1.1 connection, as frames; the
/// connection goes back to the worker's pool once the body has been read to its end.
pub struct RawBody {
    conn: Option<RawConn>,
    buf: BytesMut,
    decoder: Decoder,
    /// The backend keeps the connection open after this response.
    reusable: bool,
    pool: PoolSettings,
}

impl RawBody {
    /// The body after a response head with `framing`; `buf` holds what was read past the head.
    pub fn new(
        conn: RawConn,
        buf: BytesMut,
        framing: Framing,
        reusable: bool,
        pool: PoolSettings,
    ) -> Self {
        let decoder = match framing {
            Framing::None | Framing::Length(0) => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Dechunk::new()),
            Framing::Close => Decoder::Close,
        };
        let mut body = RawBody {
            conn: Some(conn),
            buf,
            decoder,
            reusable,
            pool,
        };
        body.finish_if_done();
        body
    }

    /// Releases the connection when the body has been read whole.
    fn finish_if_done(&mut self) {
        if !matches!(self.decoder, Decoder::Done) {
            return;
        }
        if let Some(conn) = self.conn.take() {
            // Bytes past the body: the backend does not frame as it says; not reused.
            if self.reusable && self.buf.is_empty() {
                pool::release(conn, &self.pool);
            }
        }
        self.buf = BytesMut::new();
    }

    /// The next data in `buf`, by the decoder.
    fn take_data(&mut self) -> Result<Option<Bytes>, Malformed> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let data = match &mut self.decoder {
            Decoder::Done => None,
            Decoder::Close => Some(self.buf.split().freeze()),
            Decoder::Length(left) => {
                let n = (self.buf.len() as u64).min(*left) as usize;
                *left -= n as u64;
                let data = self.buf.split_to(n).freeze();
                if *left == 0 {
                    self.decoder = Decoder::Done;
                }
                Some(data)
            }
            Decoder::Chunked(dechunk) => {
                let data = dechunk.decode(&mut self.buf)?;
                if dechunk.is_done() {
                    self.decoder = Decoder::Done;
                }
                data
            }
        };
        Ok(data.filter(|d| !d.is_empty()))
    }
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let data = this.take_data().map_err(BoxError::from);
            this.finish_if_done();
            match data {
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(error)));
                }
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) => {}
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if this.buf.capacity() - this.buf.len() < 1024 {
                this.buf.reserve(READ);
            }
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.stream),
                cx,
                &mut this.buf
            ));
            match read {
                Ok(0) if matches!(this.decoder, Decoder::Close) => {
                    this.reusable = false;
                    this.decoder = Decoder::Done;
                    this.finish_if_done();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(
                        "the backend closed the connection in the middle of the body".into(),
                    )));
                }
                Ok(_) => {}
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.decoder, Decoder::Done) && self.buf.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder {
            Decoder::Length(left) => SizeHint::with_exact(left),
            Decoder::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], step: usize) -> Result<Vec<u8>, Malformed> {
        let mut dechunk = Dechunk::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(data) = dechunk.decode(&mut buf)? {
                out.extend_from_slice(&data);
            }
        }
        assert!(dechunk.is_done(), "the body ended");
        Ok(out)
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
        for step in [1, 2, 7, body.len()] {
            assert_eq!(decode_all(body, step).expect("valid"), b"hello world");
        }
    }

    #[test]
    fn malformed_chunks_are_refused() {
        assert!(decode_all(b"zz\r\nhello\r\n0\r\n\r\n", 4).is_err());
        assert!(decode_all(b"5\r\nhelloXX0\r\n\r\n", 4).is_err());
    }

    #[test]
    fn a_body_of_unknown_length_goes_chunked() {
        let mut parts = http::Request::new(()).into_parts().0;
        parts.method = http::Method::POST;
        parts.headers.insert("host", "h".parse().expect("value"));
        let (head, chunked) = request_head(&parts, b"/up?x=1", true);
        assert!(chunked);
        assert_eq!(
            head,
            b"POST /up?x=1 HTTP/1.1\r\nhost: h\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        parts
            .headers
            .insert(CONTENT_LENGTH, "3".parse().expect("value"));
        assert!(!request_head(&parts, b"/", true).1);
        assert!(!request_head(&parts, b"/", false).1);
    }
}

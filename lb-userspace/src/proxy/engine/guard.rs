//! The client connection's first line of defence, below hyper: [`ClientIo`] wraps the socket
//! (or the TLS stream), checks every HTTP/1 request head before hyper sees it, and enforces the
//! header and idle timeouts.
//!
//! Why not leave it to hyper: hyper accepts a request with both `Content-Length` and
//! `Transfer-Encoding: chunked` (it drops the length and closes the connection afterwards), and
//! a `Content-Length` that follows `Transfer-Encoding` is not even visible afterwards; it answers
//! an unknown transfer coding with 400 where RFC 9112 6.1 says 501. A proxy must refuse such
//! requests outright, because the backend may frame them differently (request smuggling). So
//! [`Scanner`], a sans-I/O tracker of HTTP/1 message framing, holds each request head back until
//! it is complete, checks its framing headers, and follows the body (by length or by chunks) to
//! find the next head. A head it refuses never reaches hyper: hyper sees the end of the stream,
//! finishes the responses it owes, and when it shuts the connection down the refusal (400, 431
//! or 501 with `Connection: close`) is written in its place.
//!
//! HTTP/2 connections (the preface, or ALPN h2) pass through untouched: HTTP/2 frames messages
//! itself and the engine's HTTP/2 server rejects connection-specific headers.
//!
//! Timeouts live here too because this is where bytes are seen: the header timeout runs from
//! the first byte of a request head to its end (slowloris), the idle timeout while no request is
//! in progress and nothing moves, the client timeout while a write waits for a client that takes
//! nothing (a full socket buffer). HTTP/2 connections count requests, not bytes: one that has
//! started no request within the header timeout, or none for the idle timeout, is closed
//! whatever PINGs or SETTINGS it sends, and one whose responses the client takes nothing of
//! (its flow-control window kept shut) for the client timeout is closed too.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The connection preface of HTTP/2 over cleartext (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes read from the socket at once while heads or chunked bodies are being checked.
const READ_CHUNK: usize = 8 * 1024;
/// Longest chunk-size line (size and extensions) accepted in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
/// Longest trailer section of a chunked body.
const MAX_TRAILERS: usize = 16 * 1024;

/// A request refused before hyper saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    /// Short text for the client and the log, e.g. "both Content-Length and Transfer-Encoding".
    pub reason: &'static str,
    /// The refused request's first line, when it could be read.
    pub request_line: Option<String>,
    /// Whether to answer: not when hyper already has the request and will answer it (a body
    /// that turned out malformed); then the connection is just closed.
    pub respond: bool,
}

impl Rejection {
    fn new(status: u16, reason: &'static str) -> Self {
        Rejection {
            status,
            reason,
            request_line: None,
            respond: true,
        }
    }

    /// The whole response written in place of the refused request.
    pub fn response_bytes(&self) -> Vec<u8> {
        let phrase = match self.status {
            400 => "Bad Request",
            431 => "Request Header Fields Too Large",
            501 => "Not Implemented",
            _ => "Error",
        };
        let body = format!("{} {phrase}: {}\n", self.status, self.reason);
        format!(
            "HTTP/1.1 {} {phrase}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            self.status,
            body.len()
        )
        .into_bytes()
    }
}

/// Where the scanner is in the byte stream of one client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing seen yet: HTTP/2 preface or an HTTP/1 head.
    Start,
    /// Waiting for a complete request head; `searched` bytes of it have no terminator.
    Head {
        searched: usize,
    },
    /// A body of known length; this many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Not HTTP/1 framing (HTTP/2): nothing more to check.
    Passthrough,
}

/// Where the scanner is inside a chunked body (RFC 9112 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Reading the chunk-size line: `digits` hex digits of `size` so far, `line` bytes of the
    /// line so far, `at` what comes next.
    Size {
        size: u64,
        digits: u32,
        line: usize,
        at: SizeLine,
    },
    /// `left` bytes of chunk data to go.
    Data { left: u64 },
    /// After the data: expecting CRLF.
    DataEnd { seen_cr: bool },
    /// After the last chunk: trailer lines until an empty one. `line` bytes into the current
    /// line, `total` bytes of trailers so far; `seen_cr`: a CR that must be followed by LF.
    Trailers {
        line: usize,
        total: usize,
        seen_cr: bool,
    },
}

impl Chunk {
    /// The start of a chunked body: the first chunk-size line.
    const START: Chunk = Chunk::Size {
        size: 0,
        digits: 0,
        line: 0,
        at: SizeLine::Digits,
    };
}

/// Where a chunk-size line is: `1*HEXDIG *( BWS ";" chunk-ext ) CRLF`, read as hyper reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeLine {
    /// In the hex digits.
    Digits,
    /// In spaces or tabs after them.
    Space,
    /// In the extensions, after a `;`.
    Extension,
    /// After the CR: the LF ends the line.
    Cr,
}

/// Tracks HTTP/1 request framing in a client's byte stream and checks each head. Sans-I/O: it
/// is fed the bytes not yet handed on and says how many of them may go on.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    max_head: usize,
    /// A refusal found behind bytes that were cleared in the same call: reported once those
    /// bytes have gone on, so the requests before it are answered.
    /// Boxed: rare, and every connection carries a scanner.
    pending: Option<Box<Rejection>>,
}

impl Scanner {
    pub fn new(max_head: usize) -> Self {
        Scanner {
            state: State::Start,
            max_head,
            pending: None,
        }
    }

    /// A scanner that checks nothing (the connection speaks HTTP/2).
    pub fn passthrough() -> Self {
        Scanner {
            state: State::Passthrough,
            max_head: 0,
            pending: None,
        }
    }

    /// Whether part of a request head has been received but not all of it.
    pub fn in_head(&self, held: usize) -> bool {
        matches!(self.state, State::Head { .. } | State::Start) && held > 0
    }

    /// Whether nothing is being checked any more (HTTP/2).
    pub fn is_passthrough(&self) -> bool {
        self.state == State::Passthrough
    }

    /// At most this many bytes can be read straight into hyper's buffer without looking at
    /// them (the rest of a body of known length, or anything in passthrough); 0 when the bytes
    /// must be checked first.
    fn direct_budget(&self) -> u64 {
        match self.state {
            State::Length(left) => left,
            State::Passthrough => u64::MAX,
            _ => 0,
        }
    }

    /// Accounts for `n` bytes that went straight to hyper (see [`Scanner::direct_budget`]).
    fn consumed_direct(&mut self, n: usize) {
        if let State::Length(left) = self.state {
            let left = left.saturating_sub(n as u64);
            self.state = if left == 0 {
                State::Head { searched: 0 }
            } else {
                State::Length(left)
            };
        }
    }

    /// Looks at `data`, the bytes received and not yet handed on (a head in progress always
    /// starts at `data[0]`), and returns how many leading bytes may be handed on now. The
    /// others must be offered again, with more behind them.
    pub fn scan(&mut self, data: &[u8]) -> Result<usize, Rejection> {
        if let Some(rejection) = self.pending.take() {
            return Err(*rejection);
        }
        let mut pos = 0;
        let result = self.scan_from(data, &mut pos);
        match result {
            Err(rejection) if pos > 0 => {
                self.pending = Some(Box::new(rejection));
                Ok(pos)
            }
            other => other,
        }
    }

    /// Whether a refusal waits behind bytes already cleared.
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    fn scan_from(&mut self, data: &[u8], pos: &mut usize) -> Result<usize, Rejection> {
        loop {
            let rest = &data[*pos..];
            if rest.is_empty() {
                return Ok(*pos);
            }
            match self.state {
                State::Passthrough => return Ok(data.len()),
                State::Start => {
                    let n = rest.len().min(H2_PREFACE.len());
                    if rest[..n] != H2_PREFACE[..n] {
                        self.state = State::Head { searched: 0 };
                    } else if n == H2_PREFACE.len() {
                        self.state = State::Passthrough;
                    } else {
                        return Ok(*pos);
                    }
                }
                State::Length(left) => {
                    let n = (rest.len() as u64).min(left);
                    *pos += n as usize;
                    self.state = if n == left {
                        State::Head { searched: 0 }
                    } else {
                        State::Length(left - n)
                    };
                }
                State::Chunked(chunk) => match scan_chunked(chunk, rest) {
                    Ok((used, next)) => {
                        *pos += used;
                        self.state = next;
                    }
                    Err((valid, rejection)) => {
                        *pos += valid;
                        return Err(rejection);
                    }
                },
                State::Head { searched } => {
                    // Empty lines before a request line are ignored (RFC 9112 2.2).
                    if searched == 0 {
                        let blank = rest
                            .iter()
                            .take_while(|&&b| b == b'\r' || b == b'\n')
                            .count();
                        if blank > 0 {
                            *pos += blank;
                            continue;
                        }
                    }
                    match find_head_end(rest, searched) {
                        Some(end) if end > self.max_head => {
                            return Err(Rejection {
                                request_line: first_line(rest),
                                ..Rejection::new(431, "request head too large")
                            });
                        }
                        Some(end) => {
                            self.state = check_head(&rest[..end])?;
                            *pos += end;
                        }
                        None => {
                            if rest.len() > self.max_head {
                                return Err(Rejection {
                                    request_line: first_line(rest),
                                    ..Rejection::new(431, "request head too large")
                                });
                            }
                            // The terminator may straddle the end: search its last 3 bytes again.
                            self.state = State::Head {
                                searched: rest.len().saturating_sub(3),
                            };
                            return Ok(*pos);
                        }
                    }
                }
            }
        }
    }
}

/// The end (exclusive) of the head at the start of `data`: after the empty line. Accepts LF as
/// well as CRLF line ends, as hyper's parser does.
fn find_head_end(data: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(offset) = data[i..].iter().position(|&b| b == b'\n') {
        let lf = i + offset;
        // "\n\n" or "\n\r\n" ends the head.
        if data.get(lf + 1) == Some(&b'\n') {
            return Some(lf + 2);
        }
        if data.get(lf + 1) == Some(&b'\r') && data.get(lf + 2) == Some(&b'\n') {
            return Some(lf + 3);
        }
        i = lf + 1;
    }
    None
}

fn first_line(head: &[u8]) -> Option<String> {
    let end = head.iter().position(|&b| b == b'\r' || b == b'\n')?;
    let line = String::from_utf8_lossy(&head[..end.min(200)]).into_owned();
    Some(line)
}

/// Checks one complete request head and says how its body is framed.
fn check_head(head: &[u8]) -> Result<State, Rejection> {
    let reject = |status, reason| Rejection {
        request_line: first_line(head),
        ..Rejection::new(status, reason)
    };
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(reject(400, "malformed request line"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_token(b)) || target.is_empty() {
        return Err(reject(400, "malformed request line"));
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Err(reject(400, "unsupported HTTP version")),
    };

    let mut length: Option<u64> = None;
    let mut codings: Vec<Vec<u8>> = Vec::new();
    let mut has_te = false;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(reject(400, "obsolete line folding in a header"));
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(reject(400, "header line without a colon"));
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_token(b)) {
            return Err(reject(400, "malformed header name"));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            for element in value.split(|&b| b == b',').map(trim) {
                let parsed =
                    parse_decimal(element).ok_or_else(|| reject(400, "invalid Content-Length"))?;
                match length {
                    Some(previous) if previous != parsed => {
                        return Err(reject(400, "conflicting Content-Length values"));
                    }
                    _ => length = Some(parsed),
                }
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            has_te = true;
            for element in value.split(|&b| b == b',').map(trim) {
                let coding = element
                    .split(|&b| b == b';')
                    .next()
                    .map(trim)
                    .unwrap_or_default();
                // An empty element ("chunked,") or chunked with parameters ("chunked;x"):
                // hyper refuses both, and a backend may read the framing otherwise than we
                // would, so such a request is refused rather than passed on (smuggling).
                if coding.is_empty() {
                    return Err(reject(400, "invalid Transfer-Encoding"));
                }
                if coding.eq_ignore_ascii_case(b"chunked") && element.len() != coding.len() {
                    return Err(reject(400, "chunked takes no parameters"));
                }
                codings.push(coding.to_ascii_lowercase());
            }
        }
    }

    if has_te {
        if http10 {
            return Err(reject(400, "Transfer-Encoding in an HTTP/1.0 request"));
        }
        if length.is_some() {
            return Err(reject(400, "both Content-Length and Transfer-Encoding"));
        }
        if codings.iter().any(|coding| coding != b"chunked") {
            return Err(reject(501, "unsupported transfer coding"));
        }
        if codings.len() != 1 {
            return Err(reject(400, "invalid Transfer-Encoding"));
        }
        return Ok(State::Chunked(Chunk::START));
    }
    Ok(match length {
        Some(n) if n > 0 => State::Length(n),
        _ => State::Head { searched: 0 },
    })
}

/// RFC 9110 5.6.2 token characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `bytes` without leading and trailing spaces and tabs (optional whitespace, RFC 9110 5.6.3).
pub(super) fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Follows a chunked body through `data`; returns the bytes used and the state after them, or,
/// for a malformed body, how many bytes before the bad one are valid and the refusal. Those go
/// on before it, as they would have had the bad byte arrived in a later read: what is handed
/// on does not depend on how the client's bytes were split.
///
/// Every line of the framing (sizes, the CRLF after data, trailers) must end in CRLF: a bare LF
/// or CR is refused, as hyper refuses it (its size lines take no bare CR or LF, its trailer
/// lines end at a CR only). A body is passed on as it came (a request's to the backend, a
/// response's to the client), and a peer that ended such a line elsewhere would find another
/// end of the body, and take what follows it for another message (request smuggling).
fn scan_chunked(mut chunk: Chunk, data: &[u8]) -> Result<(usize, State), (usize, Rejection)> {
    let mut i = 0;
    // Called once the bad byte is taken: it is `data[i - 1]`.
    let bad = |i: usize| {
        let rejection = Rejection {
            respond: false,
            ..Rejection::new(400, "malformed chunked body")
        };
        (i - 1, rejection)
    };
    while i < data.len() {
        if let Chunk::Data { left } = chunk {
            let n = ((data.len() - i) as u64).min(left);
            i += n as usize;
            chunk = if n == left {
                Chunk::DataEnd { seen_cr: false }
            } else {
                Chunk::Data { left: left - n }
            };
            continue;
        }
        let b = data[i];
        i += 1;
        chunk = match chunk {
            Chunk::Size {
                size,
                digits,
                line,
                at,
            } => {
                if line >= MAX_CHUNK_LINE {
                    return Err(bad(i));
                }
                let line = line + 1;
                let next = |at| Chunk::Size {
                    size,
                    digits,
                    line,
                    at,
                };
                match (at, b) {
                    (SizeLine::Digits, _) if b.is_ascii_hexdigit() => {
                        if digits >= 16 {
                            return Err(bad(i));
                        }
                        let digit = (b as char).to_digit(16).map_or(0, u64::from);
                        Chunk::Size {
                            size: size * 16 + digit,
                            digits: digits + 1,
                            line,
                            at,
                        }
                    }
                    (SizeLine::Digits, _) if digits == 0 => return Err(bad(i)),
                    (SizeLine::Digits | SizeLine::Space, b' ' | b'\t') => next(SizeLine::Space),
                    (SizeLine::Digits | SizeLine::Space, b';') => next(SizeLine::Extension),
                    (SizeLine::Digits | SizeLine::Space | SizeLine::Extension, b'\r') => {
                        next(SizeLine::Cr)
                    }
                    (SizeLine::Extension, b'\n') => return Err(bad(i)),
                    (SizeLine::Extension, _) => next(SizeLine::Extension),
                    (SizeLine::Cr, b'\n') if size == 0 => Chunk::Trailers {
                        line: 0,
                        total: 0,
                        seen_cr: false,
                    },
                    (SizeLine::Cr, b'\n') => Chunk::Data { left: size },
                    _ => return Err(bad(i)),
                }
            }
            Chunk::DataEnd { seen_cr } => match b {
                b'\r' if !seen_cr => Chunk::DataEnd { seen_cr: true },
                b'\n' if seen_cr => Chunk::START,
                _ => return Err(bad(i)),
            },
            Chunk::Trailers {
                line,
                total,
                seen_cr,
            } => {
                if total >= MAX_TRAILERS {
                    return Err(bad(i));
                }
                let total = total + 1;
                match (seen_cr, b) {
                    (true, b'\n') if line == 0 => return Ok((i, State::Head { searched: 0 })),
                    (true, b'\n') => Chunk::Trailers {
                        line: 0,
                        total,
                        seen_cr: false,
                    },
                    (false, b'\r') => Chunk::Trailers {
                        line,
                        total,
                        seen_cr: true,
                    },
                    (true, _) | (false, b'\n') => return Err(bad(i)),
                    (false, _) => Chunk::Trailers {
                        line: line + 1,
                        total,
                        seen_cr: false,
                    },
                }
            }
            Chunk::Data { .. } => unreachable!("handled above"),
        };
    }
    Ok((i, State::Chunked(chunk)))
}

/// Where a message body ends, for bodies relayed as they are (the HTTP/1 engine passes chunked
/// bodies through without decoding them): fed the body's bytes in order, it says how many of
/// them belong to the body and whether the body has ended with them.
#[derive(Debug, Clone, Copy)]
pub enum BodyEnd {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Until the connection closes (a response with neither length nor chunks).
    Close,
    Done,
}

/// A chunked body was not valid: its end cannot be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct MalformedChunks;

impl BodyEnd {
    pub fn length(n: u64) -> Self {
        if n == 0 {
            BodyEnd::Done
        } else {
            BodyEnd::Length(n)
        }
    }

    pub fn chunked() -> Self {
        BodyEnd::Chunked(Chunk::START)
    }

    pub fn is_done(&self) -> bool {
        matches!(self, BodyEnd::Done)
    }

    /// Inside a chunk's data: how many data bytes are left of it (a decoder takes them out;
    /// everything else in a chunked body is framing).
    pub fn chunk_data_left(&self) -> Option<u64> {
        match self {
            BodyEnd::Chunked(Chunk::Data { left }) => Some(*left),
            _ => None,
        }
    }

    /// Takes in `data`, the next bytes of the stream; returns how many belong to the body.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, MalformedChunks> {
        match *self {
            BodyEnd::Done => Ok(0),
            BodyEnd::Close => Ok(data.len()),
            BodyEnd::Length(left) => {
                let n = (data.len() as u64).min(left);
                *self = BodyEnd::length(left - n);
                Ok(n as usize)
            }
            BodyEnd::Chunked(chunk) => {
                let (used, next) = scan_chunked(chunk, data).map_err(|_| MalformedChunks)?;
                *self = match next {
                    State::Chunked(chunk) => BodyEnd::Chunked(chunk),
                    _ => BodyEnd::Done,
                };
                Ok(used)
            }
        }
    }
}

/// What the connection and its requests share with the I/O wrapper.
#[derive(Debug, Default)]
pub struct ConnActivity {
    /// Requests whose response has not been finished or dropped yet.
    pub in_flight: AtomicUsize,
    /// What HTTP/2 (and every request hyper serves) needs besides: made the first time such a
    /// connection asks, so an HTTP/1.1 connection (most idle ones) carries only the pointer.
    http2: std::sync::OnceLock<Box<Http2Activity>>,
}

/// An HTTP/2 connection's requests as its timeouts and limits see them.
#[derive(Debug)]
struct Http2Activity {
    /// A request has been started on this connection (one is due within the header timeout
    /// of the connection's start).
    served: AtomicBool,
    /// When the connection started or its last request finished, on [`clock_ms`]. Its idle
    /// time runs from here, not from its last byte: PING frames and other chatter do not keep
    /// it open.
    last_request_ms: AtomicU64,
    /// Responses that handed the client a frame and have not been asked for the next one yet
    /// (the client's window is closed or its socket full).
    awaiting_client: AtomicUsize,
    /// When a response in flight last had a frame taken by the client, on [`clock_ms`].
    client_progress_ms: AtomicU64,
    /// Streams the client cancelled (RST_STREAM before its response ended) in the second that
    /// began at `resets_since_ms`.
    resets: AtomicU32,
    resets_since_ms: AtomicU64,
    /// The client reset more than [`MAX_RESETS_PER_SECOND`] streams in a second (HTTP/2 rapid
    /// reset, CVE-2023-44487): the connection is closed.
    too_many_resets: AtomicBool,
}

/// Streams an HTTP/2 client may cancel in one second before its connection is closed. A
/// browser cancels a few when a page is left; the rapid-reset attack cancels thousands, each
/// of which would start a request here (and at a backend).
pub const MAX_RESETS_PER_SECOND: u32 = 100;

impl Http2Activity {
    fn new() -> Self {
        Http2Activity {
            served: AtomicBool::new(false),
            last_request_ms: AtomicU64::new(clock_ms(Instant::now())),
            awaiting_client: AtomicUsize::new(0),
            client_progress_ms: AtomicU64::new(0),
            resets: AtomicU32::new(0),
            resets_since_ms: AtomicU64::new(0),
            too_many_resets: AtomicBool::new(false),
        }
    }
}

impl ConnActivity {
    /// A request of the HTTP/1.1 engine began.
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn http2(&self) -> &Http2Activity {
        self.http2.get_or_init(|| Box::new(Http2Activity::new()))
    }

    /// A request served outside the HTTP/1.1 engine (an HTTP/2 stream, or a request handed
    /// to hyper) began.
    pub fn stream_started(&self) {
        self.request_started();
        self.http2().served.store(true, Ordering::Relaxed);
    }

    /// Such a request is over (answered, or dropped).
    pub fn stream_finished(&self) {
        self.request_finished();
        self.http2()
            .last_request_ms
            .store(clock_ms(Instant::now()), Ordering::Relaxed);
    }

    /// A response handed the client a frame and waits to be asked for more.
    pub fn handed_to_client(&self) {
        let http2 = self.http2();
        if http2.awaiting_client.fetch_add(1, Ordering::Relaxed) == 0 {
            http2
                .client_progress_ms
                .store(clock_ms(Instant::now()), Ordering::Relaxed);
        }
    }

    /// The client took what a response handed it (or the response is gone).
    pub fn taken_by_client(&self) {
        let http2 = self.http2();
        http2.awaiting_client.fetch_sub(1, Ordering::Relaxed);
        http2
            .client_progress_ms
            .store(clock_ms(Instant::now()), Ordering::Relaxed);
    }

    /// The client cancelled a stream before its response ended.
    pub fn stream_cancelled(&self) {
        let http2 = self.http2();
        let now = clock_ms(Instant::now());
        let since = http2.resets_since_ms.load(Ordering::Relaxed);
        let resets = if now.saturating_sub(since) >= 1000 {
            http2.resets_since_ms.store(now, Ordering::Relaxed);
            http2.resets.store(1, Ordering::Relaxed);
            1
        } else {
            http2.resets.fetch_add(1, Ordering::Relaxed) + 1
        };
        if resets > MAX_RESETS_PER_SECOND {
            http2.too_many_resets.store(true, Ordering::Relaxed);
        }
    }

    /// When an HTTP/2 connection must be closed if nothing changes, and why: no first request
    /// within the header timeout, no request for the idle timeout, or responses the client has
    /// taken nothing of for the client timeout.
    fn http2_deadline(&self, timeouts: &Timeouts) -> Option<(Instant, &'static str)> {
        let http2 = self.http2();
        if http2.too_many_resets.load(Ordering::Relaxed) {
            return Some((clock_epoch(), "the client reset too many streams"));
        }
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let since = at_ms(http2.last_request_ms.load(Ordering::Relaxed));
            return Some(if http2.served.load(Ordering::Relaxed) {
                (since + timeouts.idle, "idle timeout")
            } else {
                (
                    since + timeouts.header,
                    "no request within the header timeout",
                )
            });
        }
        if http2.awaiting_client.load(Ordering::Relaxed) > 0 {
            let since = at_ms(http2.client_progress_ms.load(Ordering::Relaxed));
            return Some((
                since + timeouts.client,
                "the client took nothing of its responses within the client timeout",
            ));
        }
        None
    }
}

/// A process-wide millisecond clock, so that times fit in an atomic.
fn clock_ms(now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(clock_epoch()).as_millis()).unwrap_or(u64::MAX)
}

fn at_ms(ms: u64) -> Instant {
    clock_epoch() + Duration::from_millis(ms)
}

fn clock_epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Timeouts enforced on one client connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
    /// Inactivity of the client while it owes the proxy something: taking a response's bytes.
    pub client: Duration,
    /// The same inside a protocol switch (101), where nothing is owed: the tunnel timeout.
    pub tunnel: Duration,
}

/// What a client I/O tells the connection it belongs to (implemented by the connection's
/// shared state, so the I/O holds one pointer and nothing more is allocated per connection).
pub trait ClientEvents: Send + Sync {
    /// The connection's requests in flight (no idle timeout while one is).
    fn activity(&self) -> &ConnActivity;
    /// The header and idle timeouts (kept by the connection's engine, not copied into each
    /// connection's I/O).
    fn timeouts(&self) -> Timeouts;
    /// A refused request, once: called when its refusal is written.
    fn rejected(&self, rejection: &Rejection);
}

/// A client connection's I/O as hyper sees it: request heads checked, timeouts enforced.
pub struct ClientIo<T> {
    inner: T,
    scanner: Scanner,
    /// Received bytes not yet handed to hyper; the first `cleared` of them are checked.
    held: BytesMut,
    cleared: usize,
    /// The client closed its side: hand hyper what is left, then the end.
    client_eof: bool,
    /// A refused request: hyper gets the end of the stream, the refusal is written at shutdown.
    /// Boxed: rare, and an idle connection should not carry its room.
    rejection: Option<Box<(Rejection, Vec<u8>, usize)>>,
    rejection_reported: bool,
    /// A protocol switch (101): the bytes are a tunnel, whose idle time its relay watches.
    tunnel: bool,
    /// A write is waiting for the client to take bytes (its socket buffer is full).
    write_blocked: bool,
    last_activity: Instant,
    head_started: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    /// Runs while a write is blocked: a client that takes nothing for the client timeout is
    /// cut off. Made the first time a write blocks (most connections never need it).
    write_timer: Option<Pin<Box<Sleep>>>,
    events: Arc<dyn ClientEvents>,
}

impl<T> ClientIo<T> {
    /// `http2` skips the HTTP/1 checks (ALPN chose h2).
    pub fn new(inner: T, max_head: usize, http2: bool, events: Arc<dyn ClientEvents>) -> Self {
        let timeouts = events.timeouts();
        let now = Instant::now();
        ClientIo {
            inner,
            scanner: if http2 {
                Scanner::passthrough()
            } else {
                Scanner::new(max_head)
            },
            held: BytesMut::new(),
            cleared: 0,
            client_eof: false,
            rejection: None,
            rejection_reported: false,
            tunnel: false,
            write_blocked: false,
            last_activity: now,
            head_started: None,
            timer: Box::pin(tokio::time::sleep_until(now + timeouts.idle)),
            write_timer: None,
            events,
        }
    }

    /// After a protocol switch (101): the bytes are no longer HTTP/1 and nothing is checked
    /// any more; what was held back goes on.
    pub fn pass_through(&mut self) {
        self.scanner = Scanner::passthrough();
        self.cleared = self.held.len();
        self.tunnel = true;
    }

    /// HTTP/2 (by the preface or ALPN): framing passes through, the timeouts follow requests.
    fn is_http2(&self) -> bool {
        self.scanner.is_passthrough() && !self.tunnel
    }

    /// When the connection must be closed if nothing happens before, and why.
    fn deadline(&mut self) -> Option<(Instant, &'static str)> {
        if self.scanner.in_head(self.held.len()) {
            let started = *self.head_started.get_or_insert(self.last_activity);
            return Some((
                started + self.events.timeouts().header,
                "request head not complete within the header timeout",
            ));
        }
        self.head_started = None;
        if self.is_http2() {
            return self
                .events
                .activity()
                .http2_deadline(&self.events.timeouts());
        }
        let idle = self.events.activity().in_flight.load(Ordering::Relaxed) == 0
            && (self.held.is_empty() || self.scanner.is_passthrough());
        idle.then(|| {
            (
                self.last_activity + self.events.timeouts().idle,
                "idle timeout",
            )
        })
    }

    /// HTTP/2 frames keep arriving (PINGs, SETTINGS...) but that is no request: is the
    /// connection's time up anyway?
    fn http2_expired(&mut self, now: Instant) -> Option<io::Error> {
        if !self.is_http2() {
            return None;
        }
        let (deadline, why) = self.deadline()?;
        (now >= deadline).then(|| io::Error::new(io::ErrorKind::TimedOut, why))
    }

    /// A write found the client's socket full: the client has the client timeout to take
    /// bytes again.
    fn poll_write_stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeouts = self.events.timeouts();
        let limit = if self.tunnel {
            timeouts.tunnel
        } else {
            timeouts.client
        };
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if !self.write_blocked {
            self.write_blocked = true;
            timer.as_mut().reset(Instant::now() + limit);
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client took nothing within the client timeout",
        ))
    }

    /// A write went through: the client is taking bytes.
    fn wrote(&mut self) {
        self.write_blocked = false;
        self.last_activity = Instant::now();
    }
}

impl<T: AsyncRead + Unpin> ClientIo<T> {
    fn hand_over(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.cleared.min(buf.remaining());
        buf.put_slice(&self.held[..n]);
        self.held.advance(n);
        self.cleared -= n;
        if self.held.is_empty() {
            self.held = BytesMut::new();
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.cleared > 0 {
                this.hand_over(buf);
                return Poll::Ready(Ok(()));
            }
            if let Some((rejection, _, _)) = this.rejection.as_deref() {
                if !rejection.respond {
                    let error = io::Error::new(io::ErrorKind::InvalidData, rejection.reason);
                    return Poll::Ready(Err(error));
                }
                return Poll::Ready(Ok(()));
            }
            if this.client_eof {
                return Poll::Ready(Ok(()));
            }
            if this.scanner.has_pending() {
                if let Err(rejection) = this.scanner.scan(&this.held) {
                    let bytes = rejection.response_bytes();
                    this.rejection = Some(Box::new((rejection, bytes, 0)));
                }
                continue;
            }

            // Bytes that need no checking go straight into hyper's buffer.
            let direct = this.scanner.direct_budget();
            let polled = if direct > 0 && this.held.is_empty() {
                let limit = usize::try_from(direct)
                    .unwrap_or(usize::MAX)
                    .min(buf.remaining());
                let mut limited = buf.take(limit);
                match Pin::new(&mut this.inner).poll_read(cx, &mut limited) {
                    Poll::Ready(Ok(())) => {
                        let n = limited.filled().len();
                        if n == 0 {
                            this.client_eof = true;
                            return Poll::Ready(Ok(()));
                        }
                        // SAFETY: `limited` is a view of `buf`'s unfilled part whose first `n`
                        // bytes the reader has just initialised and filled.
                        unsafe { buf.assume_init(n) };
                        buf.advance(n);
                        this.scanner.consumed_direct(n);
                        this.last_activity = Instant::now();
                        if let Some(expired) = this.http2_expired(this.last_activity) {
                            return Poll::Ready(Err(expired));
                        }
                        return Poll::Ready(Ok(()));
                    }
                    other => other,
                }
            } else {
                // Read on the stack, not into `held`: a connection waiting for its next request
                // then holds no buffer (idle keep-alive connections cost little memory).
                let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
                let mut chunk = ReadBuf::uninit(&mut chunk);
                let polled = Pin::new(&mut this.inner).poll_read(cx, &mut chunk);
                let n = chunk.filled().len();
                this.held.extend_from_slice(chunk.filled());
                match polled {
                    Poll::Ready(Ok(())) if n == 0 => {
                        // Let hyper see whatever partial head there is and fail on it.
                        this.client_eof = true;
                        this.cleared = this.held.len();
                        continue;
                    }
                    Poll::Ready(Ok(())) => {
                        this.last_activity = Instant::now();
                        match this.scanner.scan(&this.held) {
                            Ok(cleared) => this.cleared = cleared,
                            Err(rejection) => {
                                let bytes = rejection.response_bytes();
                                this.rejection = Some(Box::new((rejection, bytes, 0)));
                            }
                        }
                        continue;
                    }
                    other => other,
                }
            };
            match polled {
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Ready(Ok(())) => continue,
                Poll::Pending => {}
            }

            // Nothing to read: is a timeout due?
            let Some((deadline, why)) = this.deadline() else {
                return Poll::Pending;
            };
            if Instant::now() >= deadline {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
            }
            if this.timer.deadline() != deadline {
                this.timer.as_mut().reset(deadline);
            }
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(written) => {
                this.wrote();
                Poll::Ready(written)
            }
            Poll::Pending => this.poll_write_stall(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(written) => {
                this.wrote();
                Poll::Ready(written)
            }
            Poll::Pending => this.poll_write_stall(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(flushed) => {
                this.write_blocked = false;
                Poll::Ready(flushed)
            }
            Poll::Pending => this.poll_write_stall(cx).map(Err),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some((rejection, bytes, written)) =
            this.rejection.as_deref_mut().filter(|r| r.0.respond)
        {
            if !this.rejection_reported {
                this.rejection_reported = true;
                this.events.rejected(rejection);
            }
            while *written < bytes.len() {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
            ready!(Pin::new(&mut this.inner).poll_flush(cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` to a fresh scanner in pieces of `step` bytes, as a socket would deliver
    /// it, and returns the bytes handed on or the rejection.
    fn run(input: &[u8], step: usize) -> Result<Vec<u8>, Rejection> {
        let mut scanner = Scanner::new(1024);
        let mut held = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            held.extend_from_slice(piece);
            let cleared = scanner.scan(&held)?;
            out.extend(held.drain(..cleared));
            if scanner.has_pending() {
                scanner.scan(&held)?;
            }
        }
        Ok(out)
    }

    fn status(input: &[u8]) -> Option<u16> {
        run(input, input.len()).err().map(|r| r.status)
    }

    #[test]
    fn plain_requests_pass_whole_and_in_pieces() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST /x HTTP/1.1\r\nHost: a\r\n\
                      Content-Length: 5\r\n\r\nhelloGET /y HTTP/1.1\r\nHost: a\r\n\r\n";
        for step in [1, 3, 7, input.len()] {
            assert_eq!(run(input, step).expect("valid"), input, "step {step}");
        }
    }

    #[test]
    fn a_head_is_held_back_until_complete() {
        let mut scanner = Scanner::new(1024);
        assert_eq!(scanner.scan(b"GET / HTTP/1.1\r\nHo"), Ok(0));
        assert_eq!(scanner.scan(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), Ok(0));
        assert_eq!(scanner.scan(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(27));
    }

    #[test]
    fn chunked_bodies_are_followed_to_the_next_head() {
        let input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                      5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n\
                      GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        // The second request is a smuggling attempt: found only if the body was followed.
        for step in [1, 5, input.len()] {
            let rejection = run(input, step).expect_err("second request refused");
            assert_eq!(rejection.status, 400);
            assert_eq!(
                rejection.reason,
                "both Content-Length and Transfer-Encoding"
            );
            assert_eq!(rejection.request_line.as_deref(), Some("GET / HTTP/1.1"));
        }
    }

    #[test]
    fn smuggling_shapes_are_refused_with_400() {
        for input in [
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked,\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked;x=1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: , chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            b"GET /\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
        ] {
            assert_eq!(
                status(input),
                Some(400),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        // Equal duplicates are one length (RFC 9110 8.6).
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"),
            None
        );
    }

    #[test]
    fn requests_before_a_refused_one_go_on_first() {
        let mut scanner = Scanner::new(1024);
        let good = b"GET / HTTP/1.1\r\n\r\n";
        let mut input = good.to_vec();
        input
            .extend_from_slice(b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(scanner.scan(&input), Ok(good.len()));
        assert_eq!(
            scanner.scan(&input[good.len()..]).map_err(|r| r.status),
            Err(400)
        );
    }

    #[test]
    fn unknown_transfer_codings_get_501() {
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Some(501)
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nTransfer-Encoding: foo\r\n\r\n"),
            Some(501)
        );
    }

    #[test]
    fn oversized_heads_get_431() {
        let mut input = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        input.extend(std::iter::repeat_n(b'a', 2000));
        assert_eq!(status(&input), Some(431));
    }

    #[test]
    fn http2_preface_turns_checking_off() {
        let mut input = H2_PREFACE.to_vec();
        input.extend_from_slice(b"\x00\x00\x00anything at all");
        assert_eq!(run(&input, 1).expect("passes"), input);
    }

    #[test]
    fn leading_empty_lines_and_bare_lf_are_accepted() {
        let input = b"\r\n\nGET / HTTP/1.1\nHost: a\n\nGET / HTTP/1.1\r\n\r\n";
        assert_eq!(run(input, 2).expect("valid"), input);
    }

    #[test]
    fn malformed_chunks_are_refused() {
        let input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(status(input), Some(400));
    }

    #[test]
    fn chunked_framing_lines_end_in_crlf_only() {
        let post = |body: &[u8]| {
            let mut input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            input.extend_from_slice(body);
            input.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
            input
        };
        for body in [
            &b"5\r\nhello\r\n0\r\n\r\n"[..],
            b"5;a=b\r\nhello\r\n0\r\n\r\n",
            b"5 \t;a\r\nhello\r\n0;x\r\nT: 1\r\nU: 2\r\n\r\n",
        ] {
            let input = post(body);
            assert_eq!(run(&input, 1).expect("valid"), input);
        }
        // Found by fuzzing against hyper: a trailer line with a bare LF inside. This scanner
        // ended the body at "\n\r\n"; hyper reads on to the next CRLF, so a backend like it
        // takes the next request for trailers and what follows it for a request.
        for body in [
            &b"5\r\nhello\r\n0\r\nX-Trailer: 1\n\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r\n0\n\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5;a\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"5 5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\nT: 1\r\r\n\r\n",
        ] {
            let input = post(body);
            for step in [1, input.len()] {
                let rejection = run(&input, step).expect_err("refused");
                assert_eq!(
                    (rejection.status, rejection.reason),
                    (400, "malformed chunked body"),
                    "{:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn a_malformed_chunk_is_refused_after_the_valid_bytes_before_it_however_they_arrive() {
        // The chunk's data is followed by ':' where its CRLF belongs (found by fuzzing: sent
        // at once, the valid bytes before it used to be held back with the refusal).
        let input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello:\r\n";
        let valid = input.len() - 3;
        for step in [1, 5, input.len()] {
            let mut scanner = Scanner::new(1024);
            let mut held = Vec::new();
            let mut handed_on = 0;
            let mut refused = None;
            for piece in input.chunks(step) {
                held.extend_from_slice(piece);
                match scanner.scan(&held) {
                    Ok(cleared) => {
                        handed_on += cleared;
                        held.drain(..cleared);
                    }
                    Err(rejection) => {
                        refused = Some(rejection);
                        break;
                    }
                }
            }
            if scanner.has_pending() {
                refused = scanner.scan(&held).err();
            }
            assert_eq!(handed_on, valid, "step {step}");
            let rejection = refused.expect("refused");
            assert_eq!(
                (rejection.status, rejection.reason, rejection.respond),
                (400, "malformed chunked body", false),
                "step {step}"
            );
        }
    }

    /// What a client I/O under test reports to.
    struct Events {
        activity: ConnActivity,
        timeouts: Timeouts,
    }

    impl ClientEvents for Events {
        fn activity(&self) -> &ConnActivity {
            &self.activity
        }
        fn timeouts(&self) -> Timeouts {
            self.timeouts
        }
        fn rejected(&self, _: &Rejection) {}
    }

    fn events() -> Arc<Events> {
        Arc::new(Events {
            activity: ConnActivity::default(),
            timeouts: Timeouts {
                header: Duration::from_secs(2),
                idle: Duration::from_secs(5),
                client: Duration::from_secs(3),
                tunnel: Duration::from_secs(60),
            },
        })
    }

    /// An HTTP/2 PING frame (RFC 9113 6.7).
    const PING: [u8; 17] = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];

    /// Reads from `io` while the peer sends a PING every 500 ms; returns the read's error
    /// and when it came.
    async fn read_while_pinged<T: AsyncRead + AsyncWrite + Unpin>(
        io: &mut ClientIo<T>,
        peer: &mut tokio::io::DuplexStream,
    ) -> (io::Error, Duration) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let started = Instant::now();
        let pinger = async {
            for _ in 0..100 {
                peer.write_all(&PING).await.expect("ping");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        let reader = async {
            let mut buf = [0u8; 1024];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) => panic!("the stream ended instead of timing out"),
                    Ok(_) => {}
                    Err(error) => return error,
                }
            }
        };
        tokio::select! {
            error = reader => (error, started.elapsed()),
            () = pinger => panic!("the connection outlived 100 PINGs"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_client_that_only_pings_is_closed_after_the_header_timeout() {
        let (mut peer, server) = tokio::io::duplex(64 * 1024);
        let mut io = ClientIo::new(server, 4096, true, events());
        let (error, after) = read_while_pinged(&mut io, &mut peer).await;
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(error.to_string().contains("header timeout"), "{error}");
        assert!(
            after >= Duration::from_secs(2) && after < Duration::from_secs(3),
            "{after:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pings_do_not_keep_an_idle_http2_connection_open() {
        let (mut peer, server) = tokio::io::duplex(64 * 1024);
        let events = events();
        let mut io = ClientIo::new(server, 4096, true, events.clone());
        // One request, finished at once: from then on the connection is idle.
        events.activity.stream_started();
        events.activity.stream_finished();
        let (error, after) = read_while_pinged(&mut io, &mut peer).await;
        assert!(error.to_string().contains("idle timeout"), "{error}");
        assert!(
            after >= Duration::from_secs(5) && after < Duration::from_secs(6),
            "{after:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_takes_nothing_of_its_responses_is_closed_after_the_client_timeout() {
        let (mut peer, server) = tokio::io::duplex(64 * 1024);
        let events = events();
        let mut io = ClientIo::new(server, 4096, true, events.clone());
        events.activity.request_started();
        // A response handed the client a frame; the client never asks for the next.
        events.activity.handed_to_client();
        let (error, after) = read_while_pinged(&mut io, &mut peer).await;
        assert!(error.to_string().contains("client timeout"), "{error}");
        assert!(
            after >= Duration::from_secs(3) && after < Duration::from_secs(4),
            "{after:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_waiting_on_its_backend_keeps_an_http2_connection_open() {
        let (mut peer, server) = tokio::io::duplex(64 * 1024);
        let events = events();
        let mut io = ClientIo::new(server, 4096, true, events.clone());
        events.activity.request_started();
        let outcome = tokio::time::timeout(
            Duration::from_secs(20),
            read_while_pinged(&mut io, &mut peer),
        )
        .await;
        assert!(outcome.is_err(), "closed while its request was in flight");
    }

    #[test]
    fn a_burst_of_stream_resets_closes_the_connection_and_a_few_do_not() {
        let activity = ConnActivity::default();
        let timeouts = Timeouts {
            header: Duration::from_secs(2),
            idle: Duration::from_secs(5),
            client: Duration::from_secs(3),
            tunnel: Duration::from_secs(60),
        };
        activity.request_started();
        for _ in 0..10 {
            activity.stream_cancelled();
        }
        assert_eq!(activity.http2_deadline(&timeouts), None);
        for _ in 0..MAX_RESETS_PER_SECOND {
            activity.stream_cancelled();
        }
        let (deadline, why) = activity.http2_deadline(&timeouts).expect("closed");
        assert!(deadline <= Instant::now());
        assert_eq!(why, "the client reset too many streams");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_fails_the_write_after_the_client_timeout() {
        use tokio::io::AsyncWriteExt as _;
        let (_peer, server) = tokio::io::duplex(1024);
        let mut io = ClientIo::new(server, 4096, false, events());
        let started = Instant::now();
        let error = io
            .write_all(&[0u8; 64 * 1024])
            .await
            .expect_err("the write cannot finish");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let after = started.elapsed();
        assert!(
            after >= Duration::from_secs(3) && after < Duration::from_secs(4),
            "{after:?}"
        );
    }
}

//! A client's bytes into the HTTP/1 request scanner (`Scanner`, proxy/engine/guard.rs), checked
//! against the parsers that read what it lets through: the engine's own (`RequestHead::take`,
//! httparse underneath, and `RequestHead::framing` with `BodyEnd` for the body) and hyper's
//! (httparse with hyper's framing rules, for the requests the engine hands to hyper).
//!
//! Asserted:
//! - the scanner never panics, and what it clears and refuses does not depend on how the bytes
//!   arrive (all at once, in the pieces the input asks for, one at a time);
//! - each head the scanner clears is one the engine reads with exactly the same length, or
//!   refuses outright (400, connection closed: nothing after it is read); the body then ends,
//!   by the engine's framing, exactly where the scanner found the next head;
//! - the same for hyper, as long as hyper reads on: a head httparse refuses, a framing or
//!   chunked body hyper refuses, a connection hyper closes after the request end the check;
//! - a head the scanner still holds back (at the client's EOF it is handed on unchecked) is not
//!   complete for httparse.
//!
//! Input: byte 0 picks the scanner's head limit (`LIMITS`), byte 1 (mod 8) says how many piece
//! lengths follow (each byte + 1, used in turn; none: all at once), then the client's bytes.
#![no_main]

use std::ops::Range;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tandem::proxy::engine::guard::{BodyEnd, Rejection, Scanner};
use tandem::proxy::engine::h1::head::{Framing, RequestHead, MAX_HEADERS};

/// Head limits to scan with: the default `max_header_size` and small ones the fuzzer can reach.
const LIMITS: [usize; 4] = [16 * 1024, 64, 256, 1024];
/// The connection preface of HTTP/2: the scanner lets everything after it through.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let [limit, count, rest @ ..] = data else {
        return;
    };
    let max_head = LIMITS[usize::from(limit % 4)];
    let count = usize::from(count % 8).min(rest.len());
    let (lengths, input) = rest.split_at(count);
    let whole_length = [input.len().max(1)];
    let lengths: Vec<usize> = lengths.iter().map(|&b| usize::from(b) + 1).collect();

    let whole = feed(input, max_head, &whole_length);
    let pieces = feed(
        input,
        max_head,
        if lengths.is_empty() {
            &whole_length
        } else {
            &lengths
        },
    );
    let bytewise = feed(input, max_head, &[1]);
    assert_eq!(
        whole.outcome, pieces.outcome,
        "all at once, then in {lengths:?}"
    );
    assert_eq!(
        whole.outcome, bytewise.outcome,
        "all at once, then byte by byte"
    );

    let cleared = &input[..whole.outcome.cleared];
    if cleared.starts_with(H2_PREFACE) {
        return;
    }
    engine_reads_the_same_heads(cleared, &bytewise.heads);
    hyper_reads_the_same_heads(cleared, &bytewise.heads);
    if whole.outcome.refused.is_none() {
        held_head_is_incomplete(&bytewise.held);
    }
});

/// What a scanner made of a client's bytes.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Bytes handed on.
    cleared: usize,
    /// The refusal: status, reason, whether it is answered.
    refused: Option<(u16, &'static str, bool)>,
}

struct Fed {
    outcome: Outcome,
    /// Where each head the scanner cleared lies in the input; found only when fed one byte at
    /// a time (a head is held back until its last byte, then cleared at once).
    heads: Vec<Range<usize>>,
    /// Bytes received and not handed on (a head not complete yet).
    held: Vec<u8>,
}

/// Feeds `input` to a fresh scanner the way the client I/O does: received bytes are appended
/// to what is held, the cleared ones go on, a refusal found behind cleared bytes comes next.
fn feed(input: &[u8], max_head: usize, lengths: &[usize]) -> Fed {
    let mut scanner = Scanner::new(max_head);
    let mut held = Vec::new();
    let mut heads = Vec::new();
    let mut cleared = 0;
    let refused =
        |rejection: Rejection| Some((rejection.status, rejection.reason, rejection.respond));
    let mut rest = input;
    for &length in lengths.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, after) = rest.split_at(length.min(rest.len()));
        rest = after;
        held.extend_from_slice(piece);
        match scanner.scan(&held) {
            Ok(n) => {
                assert!(n <= held.len(), "cleared {n} of {} bytes held", held.len());
                if lengths == [1] && n > 1 {
                    heads.push(cleared..cleared + n);
                }
                held.drain(..n);
                cleared += n;
            }
            Err(rejection) => {
                return Fed {
                    outcome: Outcome {
                        cleared,
                        refused: refused(rejection),
                    },
                    heads,
                    held,
                }
            }
        }
        if scanner.has_pending() {
            let rejection = scanner
                .scan(&held)
                .expect_err("a pending refusal is reported by the next scan");
            return Fed {
                outcome: Outcome {
                    cleared,
                    refused: refused(rejection),
                },
                heads,
                held,
            };
        }
    }
    Fed {
        outcome: Outcome {
            cleared,
            refused: None,
        },
        heads,
        held,
    }
}

/// Empty lines before a request line, which the scanner and the engine skip.
fn blank_run(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// Walks the cleared bytes as the HTTP/1 engine reads them (`h1::Session::next_head`, then the
/// body by `RequestHead::framing`), checking each head against the scanner's.
fn engine_reads_the_same_heads(stream: &[u8], heads: &[Range<usize>]) {
    let mut heads = heads.iter();
    let mut pos = 0;
    loop {
        pos += blank_run(&stream[pos..]);
        let Some(head) = heads.next() else {
            assert_eq!(
                pos,
                stream.len(),
                "the engine reads a head at {pos} in what the scanner passed as a body"
            );
            return;
        };
        assert_eq!(
            head.start, pos,
            "the engine reads a head at {pos}, the scanner at {}",
            head.start
        );
        let mut buf = BytesMut::from(&stream[pos..]);
        let parsed = match RequestHead::take(&mut buf) {
            // Answered with 400 and the connection closed: nothing after it is read.
            Err(_) => return,
            Ok(None) => panic!(
                "the scanner passed the head at {head:?} and the engine has not seen its end"
            ),
            Ok(Some(parsed)) => parsed,
        };
        let end = stream.len() - buf.len();
        assert_eq!(
            end, head.end,
            "the engine ends the head at {pos} at {end}, the scanner at {}",
            head.end
        );
        exercise(&parsed);
        pos = end;
        let mut body = match parsed.framing() {
            Framing::None => BodyEnd::length(0),
            Framing::Length(n) => BodyEnd::length(n),
            Framing::Chunked => BodyEnd::chunked(),
            Framing::Close => panic!("a request framed to the connection's close"),
        };
        match body.feed(&stream[pos..]) {
            Ok(used) => pos += used,
            // The scanner refused the same body, so nothing after it was cleared.
            Err(_) => return,
        }
        if !body.is_done() {
            assert_eq!(pos, stream.len(), "a body that is not done used every byte");
            assert!(heads.next().is_none(), "the scanner found a head in a body");
            return;
        }
    }
}

/// Everything the engine reads of a head, and the head the backend gets: nothing may panic.
fn exercise(head: &RequestHead) {
    let _ = (
        head.method(),
        head.target(),
        head.origin_form(),
        head.path(),
    );
    let _ = (head.host(), head.keep_alive(), head.is_upgrade());
    let _ = (head.expects_continue(), head.header_map());
    let mut out = Vec::new();
    tandem::proxy::engine::h1::head::write_request(
        &mut out,
        head,
        tandem::proxy::engine::h1::head::ForwardedFor {
            switches: tandem::proxy::engine::headers::Forwarded {
                for_: true,
                proto: true,
                port: true,
            },
            client: b"198.18.0.10",
            https: false,
            port: b"80",
        },
    );
}

/// How hyper frames a request body, or `None` when hyper refuses the request (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HyperBody {
    Length(u64),
    Chunked,
}

/// A parsed request as far as hyper's framing is concerned.
struct HyperHead {
    /// The head's length, empty lines before it included.
    len: usize,
    body: Option<HyperBody>,
    /// hyper goes on reading the connection after this request.
    reads_on: bool,
}

/// hyper 1.12's server side (proto/h1/role.rs, `Server::parse`): httparse with at most 100
/// headers, the method and target checked by `http`, then Transfer-Encoding (HTTP/1.1 only;
/// the last value's last coding must be chunked) before Content-Length (digits only, equal
/// if repeated). `Err` when httparse refuses the bytes or has not seen the end of a head.
fn hyper_head(bytes: &[u8]) -> Result<HyperHead, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Err("partial".into()),
        Err(error) => return Err(error.to_string()),
    };
    let method = request.method.expect("httparse completed");
    let target = request.path.expect("httparse completed");
    let http11 = request.version == Some(1);
    let valid = http::Method::from_bytes(method.as_bytes()).is_ok()
        && target.len() < usize::from(u16::MAX)
        && http::Uri::try_from(target.as_bytes()).is_ok();
    let mut body = Some(HyperBody::Length(0));
    let (mut te, mut te_chunked, mut cl, mut length) = (false, false, false, None);
    let mut keep_alive = http11;
    let mut close = false;
    let mut upgrade = method == "CONNECT";
    for header in request.headers.iter() {
        let value = header.value;
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http11 {
                body = None;
                break;
            }
            te = true;
            length = None;
            te_chunked = std::str::from_utf8(value).is_ok_and(|text| {
                text.bytes().all(|b| b == b'\t' || (32..127).contains(&b))
                    && text
                        .rsplit(',')
                        .next()
                        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
            });
            if te_chunked {
                body = Some(HyperBody::Chunked);
            }
        } else if header.name.eq_ignore_ascii_case("content-length") {
            cl = true;
            if te {
                continue;
            }
            let Some(n) = from_digits(value).filter(|&n| n <= u64::MAX - 2) else {
                body = None;
                break;
            };
            if length.is_some_and(|previous| previous != n) {
                body = None;
                break;
            }
            length = Some(n);
            body = Some(HyperBody::Length(n));
        } else if header.name.eq_ignore_ascii_case("connection") {
            if close || has_token(value, "close") {
                close = true;
                keep_alive = false;
            } else if !keep_alive {
                keep_alive = has_token(value, "keep-alive");
            }
        } else if header.name.eq_ignore_ascii_case("upgrade") {
            upgrade = http11;
        }
    }
    if te && !te_chunked {
        body = None;
    }
    Ok(HyperHead {
        len,
        body: body.filter(|_| valid),
        // Both framings: hyper drops the length, then closes the connection after the request.
        reads_on: keep_alive && !upgrade && !(te && cl),
    })
}

/// hyper's `from_digits`: ASCII digits only, no sign, no overflow.
fn from_digits(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))?
    })
}

/// Whether a comma-separated header value lists `token` (hyper's `connection_has`).
fn has_token(value: &[u8], token: &str) -> bool {
    std::str::from_utf8(value).is_ok_and(|text| {
        text.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// hyper 1.12's chunked decoder (proto/h1/decode.rs, `ChunkedState`): `Some(length)` of a
/// complete chunked body at the start of `bytes`, `None` if hyper refuses it or it does not
/// end within them.
fn hyper_chunked(bytes: &[u8]) -> Option<usize> {
    #[derive(Clone, Copy)]
    enum S {
        Start,
        Size,
        Lws,
        Extension,
        SizeLf,
        Body,
        BodyCr,
        BodyLf,
        Trailer,
        TrailerLf,
        EndCr,
        EndLf,
    }
    let (mut state, mut size, mut extension) = (S::Start, 0u64, 0u64);
    // Trailer lines, and their bytes (at most 16 KiB: hyper's TRAILER_LIMIT).
    let (mut trailers, mut trailer_bytes) = (0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        if let S::Body = state {
            let n = (bytes.len() - i).min(usize::try_from(size).unwrap_or(usize::MAX));
            i += n;
            size -= n as u64;
            if size == 0 {
                state = S::BodyCr;
            }
            continue;
        }
        let b = bytes[i];
        i += 1;
        if matches!(state, S::Trailer | S::TrailerLf | S::EndCr | S::EndLf) {
            trailer_bytes += 1;
            if trailer_bytes > 16 * 1024 {
                return None;
            }
        }
        let digit = (b as char).to_digit(16).map(u64::from);
        state = match (state, b, digit) {
            (S::Start | S::Size, _, Some(d)) => {
                size = size.checked_mul(16)?.checked_add(d)?;
                S::Size
            }
            (S::Size | S::Lws, b'\t' | b' ', _) => S::Lws,
            (S::Size | S::Lws, b';', _) => S::Extension,
            (S::Size | S::Lws | S::Extension, b'\r', _) => S::SizeLf,
            (S::Extension, b'\n', _) => return None,
            (S::Extension, _, _) => {
                extension += 1;
                if extension >= 16 * 1024 {
                    return None;
                }
                S::Extension
            }
            (S::SizeLf, b'\n', _) if size == 0 => S::EndCr,
            (S::SizeLf, b'\n', _) => S::Body,
            (S::BodyCr, b'\r', _) => S::BodyLf,
            (S::BodyLf, b'\n', _) => S::Start,
            (S::Trailer, b'\r', _) => S::TrailerLf,
            (S::Trailer, _, _) => S::Trailer,
            (S::TrailerLf, b'\n', _) => {
                trailers += 1;
                if trailers > MAX_HEADERS {
                    return None;
                }
                S::EndCr
            }
            (S::EndCr, b'\r', _) => S::EndLf,
            (S::EndCr, _, _) => S::Trailer,
            (S::EndLf, b'\n', _) => return Some(i),
            _ => return None,
        };
    }
    None
}

/// Walks the cleared bytes as hyper reads them, checking each head and body against the
/// scanner's while hyper accepts them and keeps the connection.
fn hyper_reads_the_same_heads(stream: &[u8], heads: &[Range<usize>]) {
    let mut heads = heads.iter();
    let mut pos = 0;
    while pos < stream.len() {
        let Ok(parsed) = hyper_head(&stream[pos..]) else {
            // Refused with 400 (or not a head at all, which the other walk reports).
            return;
        };
        let start = pos + blank_run(&stream[pos..]);
        let end = pos + parsed.len;
        let head = heads.next().unwrap_or_else(|| {
            panic!("hyper reads a head at {start} in a body the scanner passed")
        });
        assert_eq!(
            (start, end),
            (head.start, head.end),
            "hyper reads a head at {start}..{end}, the scanner at {head:?}"
        );
        pos = end;
        match parsed.body {
            None => return,
            Some(HyperBody::Length(n)) => {
                let left = (stream.len() - pos) as u64;
                if n > left {
                    assert!(heads.next().is_none(), "the scanner found a head in a body");
                    return;
                }
                pos += n as usize;
            }
            Some(HyperBody::Chunked) => match hyper_chunked(&stream[pos..]) {
                Some(used) => pos += used,
                None => return,
            },
        }
        if !parsed.reads_on {
            return;
        }
        // hyper skips empty lines through httparse; what it does not skip it refuses.
    }
    assert!(
        heads.next().is_none(),
        "the scanner found a head past what hyper reads"
    );
}

/// A head the scanner still holds back is not complete for the engine or for hyper: at the
/// client's EOF the client I/O hands it on unchecked.
fn held_head_is_incomplete(held: &[u8]) {
    if held.is_empty() || H2_PREFACE.starts_with(held) {
        return;
    }
    let mut buf = BytesMut::from(held);
    assert!(
        !matches!(RequestHead::take(&mut buf), Ok(Some(_))),
        "the engine reads a complete head the scanner still holds back"
    );
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    assert!(
        !matches!(
            httparse::Request::new(&mut headers).parse(held),
            Ok(httparse::Status::Complete(_))
        ),
        "httparse reads a complete head the scanner still holds back"
    );
}

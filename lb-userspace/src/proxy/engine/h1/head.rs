//! HTTP/1 message heads as the engine handles them: parsed in place (httparse over the bytes
//! received, kept as offsets into them, so a head costs one small allocation and no copy of
//! its headers), read by name, and written out again for the other side with the proxy's
//! changes: hop-by-hop headers removed (RFC 9110 7.6.1), the `X-Forwarded-*` headers set.
//! Pure functions over bytes: every rule is unit-tested without a socket.

use std::io::Write as _;
use std::net::SocketAddr;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

use crate::proxy::engine::guard::trim;
use crate::proxy::engine::headers::client_ip;

/// Most header lines a head may have (hyper's default is 100 too).
pub const MAX_HEADERS: usize = 100;

/// A head could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed message head: {0}")]
pub struct Malformed(pub &'static str);

/// One header line: where its name and value are in the head's bytes.
#[derive(Debug, Clone)]
struct Field {
    name: Range<usize>,
    value: Range<usize>,
}

/// The fields every head has.
#[derive(Debug, Clone)]
struct Fields {
    bytes: Bytes,
    fields: Vec<Field>,
}

impl Fields {
    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|f| (&self.bytes[f.name.clone()], &self.bytes[f.value.clone()]))
    }

    fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Whether a comma-separated header `name` lists `token` (any case).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.get_all(name).any(|value| {
            value
                .split(|&b| b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
        })
    }

    /// The names the `Connection` header lists (they are hop-by-hop too).
    fn connection_names(&self) -> Vec<&[u8]> {
        self.get_all("connection")
            .flat_map(|value| value.split(|&b| b == b','))
            .map(trim)
            .filter(|t| !t.is_empty())
            .collect()
    }

    fn header_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::with_capacity(self.fields.len());
        for (name, value) in self.iter() {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name),
                http::HeaderValue::from_bytes(value),
            ) {
                map.append(name, value);
            }
        }
        map
    }
}

/// Where `slice`, a part of `base`, lies in it.
fn range_in(base: &[u8], slice: &[u8]) -> Range<usize> {
    let start = slice.as_ptr() as usize - base.as_ptr() as usize;
    start..start + slice.len()
}

/// Where each parsed header line lies in `base`, the bytes it was parsed from.
fn fields_in(base: &[u8], headers: &[httparse::Header<'_>]) -> Vec<Field> {
    headers
        .iter()
        .map(|h| Field {
            name: range_in(base, h.name.as_bytes()),
            value: range_in(base, h.value),
        })
        .collect()
}

/// How a message's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// A request head from a client.
#[derive(Debug, Clone)]
pub struct RequestHead {
    fields: Fields,
    method: Range<usize>,
    target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
}

impl RequestHead {
    /// Takes the head at the start of `buf` out of it, without copying it.
    pub fn take(buf: &mut BytesMut) -> Result<Option<RequestHead>, Malformed> {
        Ok(Self::locate(buf)?.map(|(located, len)| located.into_head(buf.split_to(len).freeze())))
    }

    /// Where the parts of the head at the start of `buf` are, and its length.
    fn locate(buf: &[u8]) -> Result<Option<(Located, usize)>, Malformed> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let len = match request.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Malformed("too many headers")),
            Err(_) => return Err(Malformed("invalid request head")),
        };
        let (Some(method), Some(target), Some(minor)) =
            (request.method, request.path, request.version)
        else {
            return Err(Malformed("invalid request line"));
        };
        let (method, target) = (
            range_in(buf, method.as_bytes()),
            range_in(buf, target.as_bytes()),
        );
        let count = request.headers.len();
        let fields = fields_in(buf, &headers[..count]);
        Ok(Some((
            Located {
                fields,
                method,
                target,
                minor,
            },
            len,
        )))
    }

    pub fn method(&self) -> &[u8] {
        &self.fields.bytes[self.method.clone()]
    }

    pub fn target(&self) -> &[u8] {
        &self.fields.bytes[self.target.clone()]
    }

    /// The path and query as the backend gets them: origin-form, also when the client sent
    /// absolute-form (`http://host/path`).
    pub fn origin_form(&self) -> &[u8] {
        let target = self.target();
        let Some(rest) = strip_scheme(target) else {
            return target;
        };
        match rest.iter().position(|&b| b == b'/' || b == b'?') {
            Some(i) => &rest[i..],
            None => b"/",
        }
    }

    /// The authority of an absolute-form target.
    fn target_authority(&self) -> Option<&[u8]> {
        let rest = strip_scheme(self.target())?;
        let end = rest
            .iter()
            .position(|&b| b == b'/' || b == b'?')
            .unwrap_or(rest.len());
        Some(&rest[..end])
    }

    /// The head as the client wrote it.
    pub fn into_bytes(self) -> Bytes {
        self.fields.bytes
    }

    /// The host the request is for: the Host header, else the target's authority.
    pub fn host(&self) -> Option<&str> {
        self.header("host")
            .or_else(|| self.target_authority())
            .and_then(|h| std::str::from_utf8(h).ok())
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        let target = self.origin_form();
        let end = target
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(target.len());
        std::str::from_utf8(&target[..end]).unwrap_or("/")
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.fields.get(name)
    }

    /// How the body is framed (the client I/O checked it: no conflicting lengths, no other
    /// codings than chunked).
    pub fn framing(&self) -> Framing {
        if self.fields.get("transfer-encoding").is_some() {
            return Framing::Chunked;
        }
        match self
            .fields
            .get("content-length")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.split(',').next()?.trim().parse::<u64>().ok())
        {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    }

    /// Whether the client keeps the connection open after this exchange.
    pub fn keep_alive(&self) -> bool {
        if self.minor == 0 {
            self.fields.has_token("connection", "keep-alive")
        } else {
            !self.fields.has_token("connection", "close")
        }
    }

    /// A protocol switch (WebSocket...): `Upgrade` named in `Connection`.
    pub fn is_upgrade(&self) -> bool {
        self.minor == 1
            && self.fields.get("upgrade").is_some()
            && self.fields.has_token("connection", "upgrade")
    }

    /// `Expect: 100-continue`.
    pub fn expects_continue(&self) -> bool {
        self.fields.has_token("expect", "100-continue")
    }

    pub fn header_map(&self) -> http::HeaderMap {
        self.fields.header_map()
    }

    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter()
    }
}

fn strip_scheme(target: &[u8]) -> Option<&[u8]> {
    let lower = |n: usize| target.get(..n).map(<[u8]>::to_ascii_lowercase);
    if lower(7).as_deref() == Some(b"http://") {
        Some(&target[7..])
    } else if lower(8).as_deref() == Some(b"https://") {
        Some(&target[8..])
    } else {
        None
    }
}

/// A request head's parts, before its bytes are taken.
struct Located {
    fields: Vec<Field>,
    method: Range<usize>,
    target: Range<usize>,
    minor: u8,
}

impl Located {
    fn into_head(self, bytes: Bytes) -> RequestHead {
        RequestHead {
            fields: Fields {
                bytes,
                fields: self.fields,
            },
            method: self.method,
            target: self.target,
            minor: self.minor,
        }
    }
}

/// A response head from a backend.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    fields: Fields,
    pub status: u16,
    reason: Range<usize>,
    pub minor: u8,
}

impl ResponseHead {
    /// Parses the head at the start of `buf`: `Ok(None)` if it is not complete yet, else the
    /// head (its bytes copied) and its length.
    pub fn parse(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, Malformed> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(Malformed("invalid response head")),
        };
        let (Some(status), Some(minor)) = (response.code, response.version) else {
            return Err(Malformed("invalid status line"));
        };
        // An absent reason is an empty one at the end of the status line.
        let reason = match response.reason {
            Some(reason) => range_in(buf, reason.as_bytes()),
            None => 0..0,
        };
        let count = response.headers.len();
        let fields = fields_in(buf, &headers[..count]);
        let fields = Fields {
            bytes: Bytes::copy_from_slice(&buf[..len]),
            fields,
        };
        Ok(Some((
            ResponseHead {
                fields,
                status,
                reason,
                minor,
            },
            len,
        )))
    }

    pub fn reason(&self) -> &[u8] {
        &self.fields.bytes[self.reason.clone()]
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.fields.get(name)
    }

    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter()
    }

    pub fn header_map(&self) -> http::HeaderMap {
        self.fields.header_map()
    }

    /// How the body is framed, for a response to `method` (RFC 9112 6.3).
    pub fn framing(&self, head_request: bool) -> Result<Framing, Malformed> {
        if head_request || self.status < 200 || self.status == 204 || self.status == 304 {
            return Ok(Framing::None);
        }
        if let Some(te) = self.fields.get("transfer-encoding") {
            let last = te.split(|&b| b == b',').map(trim).next_back();
            return match last {
                Some(coding) if coding.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
                _ => Ok(Framing::Close),
            };
        }
        let mut length: Option<u64> = None;
        for value in self.fields.get_all("content-length") {
            for element in value.split(|&b| b == b',').map(trim) {
                let parsed = std::str::from_utf8(element)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(Malformed("invalid Content-Length"))?;
                if length.is_some_and(|l| l != parsed) {
                    return Err(Malformed("conflicting Content-Length values"));
                }
                length = Some(parsed);
            }
        }
        Ok(match length {
            Some(0) => Framing::None,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        })
    }

    /// Whether the backend keeps the connection open after this response.
    pub fn keep_alive(&self) -> bool {
        if self.minor == 0 {
            self.fields.has_token("connection", "keep-alive")
        } else {
            !self.fields.has_token("connection", "close")
        }
    }
}

/// Headers that describe one connection and are never passed on; `Connection` names more.
const HOP_BY_HOP: [&[u8]; 6] = [
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"upgrade",
    b"te",
    b"transfer-encoding",
];

/// Whether `name` is hop-by-hop for this message: the fixed list (minus the exceptions the
/// caller keeps) or a name the `Connection` header lists.
fn is_hop_by_hop(name: &[u8], listed: &[&[u8]], keep: &[&[u8]]) -> bool {
    let fixed = HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h));
    let kept = keep.iter().any(|k| name.eq_ignore_ascii_case(k));
    (fixed && !kept) || listed.iter().any(|l| name.eq_ignore_ascii_case(l))
}

/// Which `X-Forwarded-*` headers to set, and their values for one client connection.
#[derive(Debug, Clone, Copy)]
pub struct ForwardedFor<'a> {
    pub switches: crate::proxy::engine::headers::Forwarded,
    /// The client's address as written (see [`client_text`]).
    pub client: &'a [u8],
    pub https: bool,
    pub port: &'a [u8],
}

/// Writes the request head the backend gets: the client's method and origin-form target over
/// HTTP/1.1 (HTTP/1.0 clients' requests go as HTTP/1.0 with `Connection: close`, so the
/// backend frames its answer in a way they understand), the client's headers without the
/// hop-by-hop ones (an upgrade keeps `Upgrade` and says `Connection: upgrade`; a chunked body
/// keeps its `Transfer-Encoding`, since it is passed on as it came; `TE: trailers` stays), and
/// the `X-Forwarded-*` headers.
pub fn write_request(out: &mut Vec<u8>, head: &RequestHead, forwarded: ForwardedFor<'_>) {
    let upgrade = head.is_upgrade();
    out.extend_from_slice(head.method());
    out.push(b' ');
    out.extend_from_slice(head.origin_form());
    out.extend_from_slice(if head.minor == 0 {
        b" HTTP/1.0\r\n".as_slice()
    } else {
        b" HTTP/1.1\r\n".as_slice()
    });
    let listed = head.fields.connection_names();
    let mut keep: Vec<&[u8]> = vec![b"transfer-encoding"];
    if upgrade {
        keep.push(b"upgrade");
    }
    let te_trailers = head.fields.get_all("te").all(|value| {
        value
            .split(|&b| b == b',')
            .all(|t| trim(t).eq_ignore_ascii_case(b"trailers"))
    });
    if te_trailers {
        keep.push(b"te");
    }
    let switches = forwarded.switches;
    let mut incoming_for: Vec<&[u8]> = Vec::new();
    for (name, value) in head.headers() {
        let upgrade_listed = upgrade && name.eq_ignore_ascii_case(b"upgrade");
        if is_hop_by_hop(name, &listed, &keep) && !upgrade_listed {
            continue;
        }
        if switches.for_ && name.eq_ignore_ascii_case(b"x-forwarded-for") {
            let value = trim(value);
            if !value.is_empty() {
                incoming_for.push(value);
            }
            continue;
        }
        if (switches.proto && name.eq_ignore_ascii_case(b"x-forwarded-proto"))
            || (switches.port && name.eq_ignore_ascii_case(b"x-forwarded-port"))
        {
            continue;
        }
        push_header(out, name, value);
    }
    if upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else if head.minor == 0 {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if switches.for_ {
        out.extend_from_slice(b"x-forwarded-for: ");
        for value in incoming_for {
            out.extend_from_slice(value);
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(forwarded.client);
        out.extend_from_slice(b"\r\n");
    }
    if switches.proto {
        out.extend_from_slice(if forwarded.https {
            b"x-forwarded-proto: https\r\n".as_slice()
        } else {
            b"x-forwarded-proto: http\r\n".as_slice()
        });
    }
    if switches.port {
        push_header(out, b"x-forwarded-port", forwarded.port);
    }
    out.extend_from_slice(b"\r\n");
}

/// How the client connection goes on after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientConnection {
    /// HTTP/1.1 keep-alive: nothing to say.
    KeepAlive11,
    /// An HTTP/1.0 client that asked for keep-alive: say yes.
    KeepAlive10,
    /// Closed after this response: say so.
    Close,
    /// A protocol switch (101): the backend's `Connection`/`Upgrade` go through.
    Upgrade,
}

/// Writes the response head the client gets: the backend's status over HTTP/1.1, its headers
/// without the hop-by-hop ones (a chunked body keeps its `Transfer-Encoding`: it is passed on
/// as it came), `extra` headers (the policy's cookie), and what the connection does next.
/// `headers` are the backend's headers, or a map the policy amended.
pub fn write_response<'h>(
    out: &mut Vec<u8>,
    head: &ResponseHead,
    headers: impl Iterator<Item = (&'h [u8], &'h [u8])>,
    connection: ClientConnection,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    write_u16(out, head.status);
    out.push(b' ');
    out.extend_from_slice(head.reason());
    out.extend_from_slice(b"\r\n");
    let upgrade = connection == ClientConnection::Upgrade;
    let listed = if upgrade {
        Vec::new()
    } else {
        head.fields.connection_names()
    };
    let keep: &[&[u8]] = if upgrade {
        &[b"transfer-encoding", b"upgrade", b"connection"]
    } else {
        &[b"transfer-encoding"]
    };
    for (name, value) in headers {
        if is_hop_by_hop(name, &listed, keep) {
            continue;
        }
        push_header(out, name, value);
    }
    match connection {
        ClientConnection::KeepAlive11 | ClientConnection::Upgrade => {}
        ClientConnection::KeepAlive10 => out.extend_from_slice(b"connection: keep-alive\r\n"),
        ClientConnection::Close => out.extend_from_slice(b"connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// A response of the proxy's own: status, a short text body, and extra headers.
pub fn write_local(
    out: &mut Vec<u8>,
    status: http::StatusCode,
    extra: &[(&str, &str)],
    body: &[u8],
    connection: ClientConnection,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    write_u16(out, status.as_u16());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-type: text/plain\r\ncontent-length: ");
    write_u64(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    for (name, value) in extra {
        push_header(out, name.as_bytes(), value.as_bytes());
    }
    match connection {
        ClientConnection::KeepAlive11 | ClientConnection::Upgrade => {}
        ClientConnection::KeepAlive10 => out.extend_from_slice(b"connection: keep-alive\r\n"),
        ClientConnection::Close => out.extend_from_slice(b"connection: close\r\n"),
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

fn push_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn write_u16(out: &mut Vec<u8>, n: u16) {
    write_u64(out, u64::from(n));
}

fn write_u64(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The client's address as forwarded and logged ([`client_ip`]), written for each request
/// into a buffer on the stack (no allocation; a connection does not keep it).
pub fn client_text(client: impl Into<SocketAddr>) -> ClientText {
    let mut text = ClientText {
        bytes: [0; ClientText::MAX],
        len: 0,
    };
    let mut out = &mut text.bytes[..];
    // An IPv6 address is at most 45 characters: the write cannot fall short.
    let _ = write!(out, "{}", client_ip(client.into()));
    text.len = ClientText::MAX - out.len();
    text
}

/// An address as text, held inline.
#[derive(Debug, Clone, Copy)]
pub struct ClientText {
    bytes: [u8; ClientText::MAX],
    len: usize,
}

impl ClientText {
    /// The longest IPv6 address in text ("ffff:...:255.255.255.255").
    const MAX: usize = 45;

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for ClientText {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.as_bytes() == &other[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::engine::headers::Forwarded;

    fn request(text: &str) -> RequestHead {
        let mut buf = BytesMut::from(text.as_bytes());
        let head = RequestHead::take(&mut buf)
            .expect("valid")
            .expect("complete");
        assert!(buf.is_empty(), "the whole text is one head");
        head
    }

    fn response(text: &str) -> ResponseHead {
        ResponseHead::parse(text.as_bytes())
            .expect("valid")
            .expect("complete")
            .0
    }

    const ALL: Forwarded = Forwarded {
        for_: true,
        proto: true,
        port: true,
    };

    fn forwarded(switches: Forwarded) -> ForwardedFor<'static> {
        ForwardedFor {
            switches,
            client: b"198.18.0.10",
            https: false,
            port: b"80",
        }
    }

    fn sent(head: &RequestHead, switches: Forwarded) -> String {
        let mut out = Vec::new();
        write_request(&mut out, head, forwarded(switches));
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn mapped_ipv4_clients_are_written_as_ipv4() {
        assert_eq!(
            client_text((
                "::ffff:198.18.0.10"
                    .parse::<std::net::IpAddr>()
                    .expect("ip"),
                80
            )),
            b"198.18.0.10"
        );
        assert_eq!(
            client_text(("2001:2::10".parse::<std::net::IpAddr>().expect("ip"), 80)),
            b"2001:2::10"
        );
    }

    #[test]
    fn a_head_taken_from_the_buffer_leaves_what_follows() {
        let mut buf = BytesMut::from(&b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b"[..]);
        let head = RequestHead::take(&mut buf)
            .expect("valid")
            .expect("complete");
        assert_eq!(head.target(), b"/a");
        assert_eq!(head.host(), Some("h"));
        assert_eq!(&buf[..], b"GET /b");
    }

    #[test]
    fn a_partial_head_waits_for_more() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\n"[..]);
        assert!(RequestHead::take(&mut buf).expect("valid").is_none());
        assert_eq!(buf.len(), 25, "nothing is taken");
    }

    #[test]
    fn the_backend_gets_the_head_without_hop_by_hop_headers_and_with_forwarded_ones() {
        let head = request(
            "GET /a?b=1 HTTP/1.1\r\nHost: www.example\r\nConnection: keep-alive, X-Private\r\n\
             X-Private: secret\r\nKeep-Alive: 5\r\nProxy-Connection: x\r\nTE: gzip\r\n\
             Upgrade: h2c\r\nX-Forwarded-For: 203.0.113.7\r\nx-forwarded-for: 10.0.0.1\r\n\
             X-Forwarded-Proto: https\r\nCookie: a=1\r\n\r\n",
        );
        assert_eq!(
            sent(&head, ALL),
            "GET /a?b=1 HTTP/1.1\r\nHost: www.example\r\nCookie: a=1\r\n\
             x-forwarded-for: 203.0.113.7, 10.0.0.1, 198.18.0.10\r\n\
             x-forwarded-proto: http\r\nx-forwarded-port: 80\r\n\r\n"
        );
        let off = Forwarded {
            for_: false,
            proto: false,
            port: false,
        };
        assert!(sent(&head, off).contains("X-Forwarded-For: 203.0.113.7\r\n"));
        assert!(sent(&head, off).contains("X-Forwarded-Proto: https\r\n"));
    }

    #[test]
    fn absolute_form_targets_go_to_the_backend_in_origin_form() {
        let head = request("GET http://www.example:8080/x?y HTTP/1.1\r\n\r\n");
        assert_eq!(head.origin_form(), b"/x?y");
        assert_eq!(head.host(), Some("www.example:8080"));
        assert_eq!(head.path(), "/x");
        assert_eq!(request("GET HTTP://h HTTP/1.1\r\n\r\n").origin_form(), b"/");
    }

    #[test]
    fn a_websocket_handshake_keeps_its_upgrade() {
        let head = request(
            "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: k\r\n\r\n",
        );
        assert!(head.is_upgrade());
        let text = sent(&head, ALL);
        assert!(text.contains("Upgrade: websocket\r\n"), "{text}");
        assert!(text.contains("connection: upgrade\r\n"), "{text}");
        assert!(text.contains("Sec-WebSocket-Key: k\r\n"), "{text}");
    }

    #[test]
    fn chunked_bodies_keep_their_framing_and_te_trailers_passes() {
        let head = request(
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n",
        );
        assert_eq!(head.framing(), Framing::Chunked);
        let text = sent(&head, ALL);
        assert!(text.contains("Transfer-Encoding: chunked\r\n"), "{text}");
        assert!(text.contains("TE: trailers\r\n"), "{text}");
    }

    #[test]
    fn http10_clients_keep_alive_only_when_they_ask() {
        assert!(!request("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        assert!(request("GET / HTTP/1.1\r\n\r\n").keep_alive());
        assert!(!request("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
        let text = sent(&request("GET / HTTP/1.0\r\nHost: h\r\n\r\n"), ALL);
        assert!(text.starts_with("GET / HTTP/1.0\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let ok = |text: &str, head| response(text).framing(head).expect("framing");
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            Framing::Length(5)
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Framing::None
        );
        assert_eq!(ok("HTTP/1.1 204 No Content\r\n\r\n", false), Framing::None);
        assert_eq!(
            ok(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false
            ),
            Framing::Chunked
        );
        assert_eq!(ok("HTTP/1.1 200 OK\r\n\r\n", false), Framing::Close);
        assert!(
            response("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
                .framing(false)
                .is_err()
        );
    }

    #[test]
    fn the_client_gets_the_response_without_hop_by_hop_headers() {
        let head = response(
            "HTTP/1.1 200 Fine\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\n\
             Content-Length: 2\r\nSet-Cookie: a=1\r\n\r\n",
        );
        let mut out = Vec::new();
        write_response(
            &mut out,
            &head,
            head.headers(),
            ClientConnection::KeepAlive10,
        );
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "HTTP/1.1 200 Fine\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\n\
             connection: keep-alive\r\n\r\n"
        );
        assert!(!head.keep_alive());
    }

    #[test]
    fn a_switching_protocols_response_keeps_its_upgrade_headers() {
        let head = response(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: x\r\n\r\n",
        );
        let mut out = Vec::new();
        write_response(&mut out, &head, head.headers(), ClientConnection::Upgrade);
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains("Upgrade: websocket\r\nConnection: Upgrade\r\n"),
            "{text}"
        );
    }

    #[test]
    fn local_answers_have_a_length_and_say_when_the_connection_closes() {
        let mut out = Vec::new();
        write_local(
            &mut out,
            http::StatusCode::SERVICE_UNAVAILABLE,
            &[],
            b"down\n",
            ClientConnection::Close,
        );
        assert_eq!(
            String::from_utf8(out).expect("utf-8"),
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
             content-length: 5\r\nconnection: close\r\n\r\ndown\n"
        );
    }
}

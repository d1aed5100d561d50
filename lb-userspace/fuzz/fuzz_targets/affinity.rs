//! Arbitrary request parts into the session-affinity key readers (proxy/policy/affinity.rs):
//! the `Cookie` and `Set-Cookie` readers, the query parameter (percent-decoding), the basic-auth
//! user (base64), `SessionKey::extract` for every session type, and the insert mode's ids.
//!
//! Asserted: nothing panics; a key is never empty nor longer than `MAX_KEY_BYTES`; a cookie
//! value holds no `;`; a parameter percent-encoded, and a user name base64-encoded, read back
//! as they were written; an insert id names its backend and no other.
//!
//! Input: lines. The first is the name (cookie, header or parameter), the second the request
//! target, the third a header value sent as `Authorization` and under that name, the others
//! `Cookie` values and `Set-Cookie` values in turn.
#![no_main]

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{HeaderValue, AUTHORIZATION, COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderName};
use libfuzzer_sys::fuzz_target;
use tandem::config::{Session, SessionKind, SessionMode};
use tandem::proxy::policy::affinity::{
    basic_auth_user, cookie_value, query_param, set_cookie_value, InsertIds, SessionKey,
    MAX_KEY_BYTES,
};

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let name = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let target = lines.next().unwrap_or_default();
    let authorization = lines.next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(authorization) {
        headers.insert(AUTHORIZATION, value.clone());
        if let Ok(header) = HeaderName::from_bytes(name.as_bytes()) {
            headers.append(header, value);
        }
    }
    let mut responses = HeaderMap::new();
    for (i, line) in lines.enumerate() {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            if i % 2 == 0 {
                headers.append(COOKIE, value);
            } else {
                responses.append(SET_COOKIE, value);
            }
        }
    }

    if let Some(value) = cookie_value(&headers, &name) {
        assert!(!value.contains(';'), "{value:?}");
    }
    if let Some(value) = set_cookie_value(&responses, &name) {
        assert!(!value.is_empty() && !value.contains(';'), "{value:?}");
    }
    let _ = basic_auth_user(&headers);
    let target = String::from_utf8_lossy(target);
    if let Some((_, query)) = target.split_once('?') {
        let _ = query_param(query, &name);
    }

    // Every session type against the request; the IP type ignores all but the client.
    let mut builder = http::Request::get("/");
    if let Ok(uri) = http::Uri::try_from(target.as_bytes()) {
        builder = builder.uri(uri);
    }
    let mut request = builder.body(()).expect("a request").into_parts().0;
    request.headers = headers;
    let client: SocketAddr = "198.18.0.10:40000".parse().expect("an address");
    for kind in [
        SessionKind::Cookie,
        SessionKind::Ip,
        SessionKind::Header,
        SessionKind::Url,
        SessionKind::Basic,
    ] {
        let session = Session {
            kind,
            id: Some(name.clone()),
            ttl: Duration::from_secs(300),
            max_entries: 100,
            mode: SessionMode::Learn,
        };
        if let Some(reader) = SessionKey::new(&session) {
            if let Some(key) = reader.extract(&request, client) {
                assert!(
                    !key.is_empty() && key.len() <= MAX_KEY_BYTES,
                    "{kind:?}: {key:?}"
                );
            }
        }
    }

    // Written by a client the way a browser would, read back as written.
    let value = String::from_utf8_lossy(data);
    let query = format!("a=1&{}={}&b", percent_encode(&name), percent_encode(&value));
    // (A parameter named "a" is the one before it.)
    if name != "a" {
        assert_eq!(query_param(&query, &name), Some(value.clone().into_owned()));
    }
    if !name.contains(':') {
        let credentials = base64_encode(format!("{name}:{value}").as_bytes());
        let mut headers = HeaderMap::new();
        let header = format!("Basic {credentials}");
        headers.insert(
            AUTHORIZATION,
            header.parse().expect("base64 is a header value"),
        );
        assert_eq!(basic_auth_user(&headers), Some(name.clone()));
    }

    // Insert ids: each backend's id names it; nothing else names one.
    let backends: Vec<SocketAddr> = data
        .chunks_exact(6)
        .take(4)
        .map(|b| SocketAddr::from(([b[0], b[1], b[2], b[3]], u16::from_be_bytes([b[4], b[5]]))))
        .collect();
    let ids = InsertIds::new(&name, &backends);
    for backend in &backends {
        let id = ids.of(*backend).expect("an id for each backend");
        assert_eq!(id.len(), 16, "{id:?}");
        assert_eq!(
            ids.backend(id).map(|b| InsertIds::id(&name, b)),
            Some(id.to_owned())
        );
    }
    if let Some(found) = ids.backend(&value) {
        assert_eq!(InsertIds::id(&name, found), value);
    }
});

/// Every byte but the unreserved ones as `%XX` (RFC 3986 2.3).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Standard base64 with padding (RFC 4648 4).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut bits = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            bits |= u32::from(b) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(bits >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

//! Session affinity with Pound's semantics: what identifies a client's session, and the table
//! that remembers which backend served it.
//!
//! - [`SessionKey`] reads the key from a request as the service's `session.type` says: a
//!   cookie, the client's IP address, a header, a query parameter, or the basic-auth user.
//! - [`SessionTable`] maps keys to backends. The TTL is idle time (every use refreshes it);
//!   expired entries are reclaimed lazily on use and in bounded sweeps; the table never holds
//!   more than `max_entries`, least recently used out first.
//! - [`set_cookie_value`] reads a backend's `Set-Cookie`, from which cookie sessions are learned.
//! - [`InsertIds`]: the cookie-insert mode's opaque backend ids (a keyed hash, never the address).
//!
//! Placement of new keys, health and replication are the caller's business (`upstream.rs`).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderName};

use crate::backends::maglev;
use crate::config::{Session, SessionKind};

/// Longest session key kept, in bytes. Longer keys are treated as absent: a client could
/// otherwise fill the table with megabyte keys.
pub const MAX_KEY_BYTES: usize = 512;
/// Expired entries reclaimed per insertion, so a sweep never stalls a request.
const SWEEP_PER_INSERT: usize = 8;

/// How to find a request's session key (from `[[service]] session`).
#[derive(Debug, Clone)]
pub enum SessionKey {
    Cookie(String),
    Ip,
    Header(HeaderName),
    Query(String),
    Basic,
}

impl SessionKey {
    /// The key reader for `session`; `None` when the configured header name is not a valid
    /// HTTP header name (then no request carries it).
    pub fn new(session: &Session) -> Option<SessionKey> {
        let id = session.id.clone().unwrap_or_default();
        Some(match session.kind {
            SessionKind::Cookie => SessionKey::Cookie(id),
            SessionKind::Ip => SessionKey::Ip,
            SessionKind::Header => SessionKey::Header(HeaderName::from_bytes(id.as_bytes()).ok()?),
            SessionKind::Url => SessionKey::Query(id),
            SessionKind::Basic => SessionKey::Basic,
        })
    }

    /// The request's session key, if it carries one (empty and over-long keys do not count).
    pub fn extract(&self, request: &http::request::Parts, client: SocketAddr) -> Option<String> {
        let key = match self {
            SessionKey::Cookie(name) => cookie_value(&request.headers, name),
            SessionKey::Ip => Some(client.ip().to_string()),
            SessionKey::Header(name) => request
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(|value| value.trim().to_owned()),
            SessionKey::Query(name) => query_param(request.uri.query()?, name),
            SessionKey::Basic => basic_auth_user(&request.headers),
        }?;
        (!key.is_empty() && key.len() <= MAX_KEY_BYTES).then_some(key)
    }
}

/// The value of cookie `name` in the request's `Cookie` header(s) (HTTP/2 may send one header
/// per cookie). Names compare exactly, as RFC 6265 says; the first match wins.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (cookie, value) = pair.split_once('=')?;
            (cookie.trim() == name).then(|| unquote(value.trim()).to_owned())
        })
}

/// The value a response sets for cookie `name` (the last `Set-Cookie` for it wins, as in a
/// browser); `None` when it sets none, or deletes it (empty value or `Max-Age=0`).
pub fn set_cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for header in headers.get_all(SET_COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        let mut parts = text.split(';');
        let Some((cookie, value)) = parts.next().and_then(|pair| pair.split_once('=')) else {
            continue;
        };
        if cookie.trim() != name {
            continue;
        }
        let deleted = parts.any(|attribute| {
            attribute.split_once('=').is_some_and(|(key, value)| {
                key.trim().eq_ignore_ascii_case("max-age") && value.trim() == "0"
            })
        });
        let value = unquote(value.trim());
        found = (!deleted && !value.is_empty()).then(|| value.to_owned());
    }
    found
}

/// RFC 6265 allows a cookie value in double quotes; the quotes are not part of it.
fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// The value of parameter `name` in a query string, percent-decoded (`+` is a space, as in
/// HTML forms). The first occurrence wins.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

/// Decodes `%XX` escapes and `+`; malformed escapes stay as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|pair| {
                    let text = std::str::from_utf8(pair).ok()?;
                    u8::from_str_radix(text, 16).ok()
                });
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The user name of `Authorization: Basic base64(user:password)`.
pub fn basic_auth_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(credentials.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, _password) = text.split_once(':')?;
    Some(user.to_owned())
}

/// Standard base64 (RFC 4648, `+/`), padding optional; `None` on anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    let data = text.trim_end_matches('=').as_bytes();
    if text.len() - data.len() > 2 || data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            bits |= sextet(c)? << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// What [`SessionTable::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// The key was not in the table.
    New,
    /// The key was on another backend.
    Moved,
    /// Same backend; only the idle time was reset.
    Refreshed,
}

/// Keys to backends, with idle expiry and a size bound.
#[derive(Debug)]
pub struct SessionTable {
    ttl: Duration,
    max_entries: usize,
    entries: HashMap<String, Entry>,
    /// Use order: stamp of the last use -> key; the first is the least recently used.
    order: BTreeMap<u64, String>,
    next_stamp: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    backend: SocketAddr,
    last_used: Instant,
    stamp: u64,
    /// When the entry was last sent to the peers (`None`: never).
    replicated: Option<Instant>,
}

impl SessionTable {
    /// An empty table forgetting keys idle for `ttl` and holding at most `max_entries` (at
    /// least 1).
    pub fn new(ttl: Duration, max_entries: usize) -> SessionTable {
        SessionTable {
            ttl,
            max_entries: max_entries.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_stamp: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The backend of `key`, refreshing its idle time; an expired entry is removed instead.
    pub fn get(&mut self, key: &str, now: Instant) -> Option<SocketAddr> {
        let entry = self.entries.get(key)?;
        if self.expired(entry, now) {
            self.remove(key);
            return None;
        }
        let backend = entry.backend;
        self.touch(key, now);
        Some(backend)
    }

    /// The backend of `key` without refreshing it (what `tandem status` and tests look at).
    pub fn peek(&self, key: &str, now: Instant) -> Option<SocketAddr> {
        self.entries
            .get(key)
            .filter(|entry| !self.expired(entry, now))
            .map(|entry| entry.backend)
    }

    /// Records that `backend` serves `key` as of `now`. When the table is full, the least
    /// recently used entry makes room.
    pub fn learn(&mut self, key: &str, backend: SocketAddr, now: Instant) -> Learned {
        self.sweep_some(now, SWEEP_PER_INSERT);
        if let Some(entry) = self.entries.get_mut(key) {
            let learned = if entry.backend == backend {
                Learned::Refreshed
            } else {
                entry.backend = backend;
                entry.replicated = None;
                Learned::Moved
            };
            self.touch(key, now);
            return learned;
        }
        while self.entries.len() >= self.max_entries {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        let stamp = self.stamp();
        self.entries.insert(
            key.to_owned(),
            Entry {
                backend,
                last_used: now,
                stamp,
                replicated: None,
            },
        );
        self.order.insert(stamp, key.to_owned());
        Learned::New
    }

    /// Whether `key` should be sent to the peers now: never sent, or last sent more than
    /// `every` ago (so the peer's copy does not expire while the session is in use). Marks it
    /// sent when the answer is yes.
    pub fn needs_replication(&mut self, key: &str, now: Instant, every: Duration) -> bool {
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        let due = entry
            .replicated
            .is_none_or(|at| now.saturating_duration_since(at) >= every);
        if due {
            entry.replicated = Some(now);
        }
        due
    }

    /// Marks `key` as already known to the peers (it came from one).
    pub fn mark_replicated(&mut self, key: &str, now: Instant) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.replicated = Some(now);
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<SocketAddr> {
        let entry = self.entries.remove(key)?;
        self.order.remove(&entry.stamp);
        Some(entry.backend)
    }

    /// Removes every entry idle for `ttl` or longer; returns how many.
    pub fn sweep(&mut self, now: Instant) -> usize {
        self.sweep_some(now, usize::MAX)
    }

    /// A reload replaced the table's service: the live entries of `previous` whose backend
    /// `keep` accepts move here with their idle time and use order, so sessions go on where
    /// they were (and expire when they would have).
    pub fn carry_over(
        &mut self,
        previous: &SessionTable,
        now: Instant,
        keep: impl Fn(SocketAddr) -> bool,
    ) {
        for key in previous.order.values() {
            let Some(entry) = previous.entries.get(key) else {
                continue;
            };
            if previous.expired(entry, now) || !keep(entry.backend) {
                continue;
            }
            self.learn(key, entry.backend, entry.last_used);
            if let Some(copied) = self.entries.get_mut(key) {
                copied.replicated = entry.replicated;
            }
        }
    }

    /// Every live entry (key, backend), least recently used first.
    pub fn entries(&self, now: Instant) -> Vec<(String, SocketAddr)> {
        self.order
            .values()
            .filter_map(|key| {
                let entry = self.entries.get(key)?;
                (!self.expired(entry, now)).then(|| (key.clone(), entry.backend))
            })
            .collect()
    }

    /// How many live entries point at each backend.
    pub fn count_by_backend(&self, now: Instant) -> HashMap<SocketAddr, usize> {
        let mut counts = HashMap::new();
        for entry in self.entries.values().filter(|e| !self.expired(e, now)) {
            *counts.entry(entry.backend).or_insert(0) += 1;
        }
        counts
    }

    /// Least recently used first, so the expired ones are at the front (with a clock that
    /// goes forward, which `Instant` does).
    fn sweep_some(&mut self, now: Instant, limit: usize) -> usize {
        let mut removed = 0;
        while removed < limit {
            let Some((_, key)) = self.order.first_key_value() else {
                break;
            };
            let expired = self.entries.get(key).is_none_or(|e| self.expired(e, now));
            if !expired {
                break;
            }
            if let Some((_, key)) = self.order.pop_first() {
                self.entries.remove(&key);
            }
            removed += 1;
        }
        removed
    }

    fn expired(&self, entry: &Entry, now: Instant) -> bool {
        now.saturating_duration_since(entry.last_used) >= self.ttl
    }

    fn touch(&mut self, key: &str, now: Instant) {
        let stamp = self.stamp();
        if let Some(entry) = self.entries.get_mut(key) {
            self.order.remove(&entry.stamp);
            entry.stamp = stamp;
            entry.last_used = entry.last_used.max(now);
            self.order.insert(stamp, key.to_owned());
        }
    }

    fn stamp(&mut self) -> u64 {
        self.next_stamp += 1;
        self.next_stamp
    }
}

/// The cookie-insert mode's backend ids: a keyed hash of the backend's address, so the cookie
/// says which backend without saying where it is. Both nodes derive the same ids from the same
/// service, so the cookie works after a failover too.
#[derive(Debug, Clone)]
pub struct InsertIds {
    ids: Vec<(String, SocketAddr)>,
}

impl InsertIds {
    pub fn new(service: &str, backends: &[SocketAddr]) -> InsertIds {
        let ids = backends
            .iter()
            .map(|&backend| (InsertIds::id(service, backend), backend))
            .collect();
        InsertIds { ids }
    }

    /// The id of `backend` in `service`: 16 hex digits.
    pub fn id(service: &str, backend: SocketAddr) -> String {
        let keyed = format!("tandem-insert\0{service}\0{backend}");
        format!("{:016x}", maglev::hash_key(keyed.as_bytes()))
    }

    /// The backend an id names, if any.
    pub fn backend(&self, id: &str) -> Option<SocketAddr> {
        self.ids
            .iter()
            .find(|(known, _)| known == id)
            .map(|(_, backend)| *backend)
    }

    /// The id for `backend` (`None` if it is not one of the service's).
    pub fn of(&self, backend: SocketAddr) -> Option<&str> {
        self.ids
            .iter()
            .find(|(_, b)| *b == backend)
            .map(|(id, _)| id.as_str())
    }
}

/// How many keys one client address may add to a session table in a minute. A key a
/// request brings is learned so that the session stays on its backend; made-up keys (a flood
/// of random cookies, header or URL values) would push the real sessions out of a full table.
/// Beyond this a client's new keys are not learned (its requests are still placed by Maglev,
/// which gives a key the same backend every time while the backends stay as they are); keys
/// already in the table, and keys the backend sets (Set-Cookie), are always learned. Many
/// users behind one NAT share the allowance, hence its size.
pub const NEW_KEYS_PER_CLIENT: u32 = 100;
const NEW_KEYS_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses tracked at once; when more come, the allowance starts over for everyone
/// rather than grow without bound.
const NEW_KEYS_CLIENTS: usize = 65_536;

/// Per client (an IPv4 address, an IPv6 /64: [`super::limited_client`]), the new session keys
/// it added in the current window.
#[derive(Debug, Default)]
pub struct NewKeyLimit {
    clients: HashMap<IpAddr, (Instant, u32)>,
}

impl NewKeyLimit {
    /// Whether `client` may add one more key now (and counts it if so).
    pub fn allow(&mut self, client: IpAddr, now: Instant) -> bool {
        let client = super::limited_client(client);
        if self.clients.len() >= NEW_KEYS_CLIENTS && !self.clients.contains_key(&client) {
            self.clients
                .retain(|_, (since, _)| now.saturating_duration_since(*since) < NEW_KEYS_WINDOW);
            if self.clients.len() >= NEW_KEYS_CLIENTS {
                self.clients.clear();
            }
        }
        let (since, count) = self.clients.entry(client).or_insert((now, 0));
        if now.saturating_duration_since(*since) >= NEW_KEYS_WINDOW {
            *since = now;
            *count = 0;
        }
        if *count >= NEW_KEYS_PER_CLIENT {
            return false;
        }
        *count += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test address")
    }

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = Request::get(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("test request").into_parts().0
    }

    fn session(kind: SessionKind, id: Option<&str>) -> Session {
        Session {
            kind,
            id: id.map(str::to_owned),
            ttl: Duration::from_secs(300),
            max_entries: 100,
            mode: crate::config::SessionMode::Learn,
        }
    }

    fn client() -> SocketAddr {
        "198.18.0.10:40000".parse().expect("test address")
    }

    fn key(kind: SessionKind, id: Option<&str>, request: &http::request::Parts) -> Option<String> {
        SessionKey::new(&session(kind, id))
            .expect("valid id")
            .extract(request, client())
    }

    #[test]
    fn cookie_key_is_found_among_several_cookies() {
        let request = parts("/", &[("cookie", "theme=dark; JSESSIONID=abc123;lang=en")]);
        assert_eq!(
            key(SessionKind::Cookie, Some("JSESSIONID"), &request),
            Some("abc123".into())
        );
        // Names are exact: a prefix or a different case is another cookie.
        let other = parts("/", &[("cookie", "XJSESSIONID=1; jsessionid=2")]);
        assert_eq!(key(SessionKind::Cookie, Some("JSESSIONID"), &other), None);
        // HTTP/2 clients may send one Cookie header per cookie; quotes are not the value.
        let split = parts("/", &[("cookie", "a=1"), ("cookie", "JSESSIONID=\"q\"")]);
        assert_eq!(
            key(SessionKind::Cookie, Some("JSESSIONID"), &split),
            Some("q".into())
        );
        let empty = parts("/", &[("cookie", "JSESSIONID=")]);
        assert_eq!(key(SessionKind::Cookie, Some("JSESSIONID"), &empty), None);
    }

    #[test]
    fn ip_key_is_the_client_address() {
        let request = parts("/", &[]);
        assert_eq!(
            key(SessionKind::Ip, None, &request),
            Some("198.18.0.10".into())
        );
    }

    #[test]
    fn header_key_is_the_trimmed_value() {
        let request = parts("/", &[("x-session-id", "  s-42 ")]);
        assert_eq!(
            key(SessionKind::Header, Some("X-Session-Id"), &request),
            Some("s-42".into())
        );
        assert_eq!(key(SessionKind::Header, Some("X-Other"), &request), None);
        assert!(SessionKey::new(&session(SessionKind::Header, Some("bad header"))).is_none());
    }

    #[test]
    fn query_key_is_percent_decoded() {
        let request = parts("/cart?x=1&sid=a%2Fb+c%3D&sid=second", &[]);
        assert_eq!(
            key(SessionKind::Url, Some("sid"), &request),
            Some("a/b c=".into())
        );
        let encoded_name = parts("/?s%69d=7", &[]);
        assert_eq!(
            key(SessionKind::Url, Some("sid"), &encoded_name),
            Some("7".into())
        );
        assert_eq!(
            key(SessionKind::Url, Some("sid"), &parts("/?sidx=1&sid", &[])),
            None
        );
        assert_eq!(key(SessionKind::Url, Some("sid"), &parts("/", &[])), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn basic_auth_key_is_the_user_name() {
        // "alice:secret" and "bob:pa:ss" (a colon in the password is allowed).
        let alice = parts("/", &[("authorization", "Basic YWxpY2U6c2VjcmV0")]);
        assert_eq!(key(SessionKind::Basic, None, &alice), Some("alice".into()));
        let bob = parts("/", &[("authorization", "basic Ym9iOnBhOnNz")]);
        assert_eq!(key(SessionKind::Basic, None, &bob), Some("bob".into()));
        let bearer = parts("/", &[("authorization", "Bearer YWxpY2U6c2VjcmV0")]);
        assert_eq!(key(SessionKind::Basic, None, &bearer), None);
        let garbage = parts("/", &[("authorization", "Basic !!!")]);
        assert_eq!(key(SessionKind::Basic, None, &garbage), None);
        assert_eq!(base64_decode("YQ"), Some(b"a".to_vec()));
        assert_eq!(base64_decode("YWI="), Some(b"ab".to_vec()));
        assert_eq!(base64_decode("YWJj"), Some(b"abc".to_vec()));
        assert_eq!(base64_decode("Y"), None);
    }

    #[test]
    fn over_long_keys_are_ignored() {
        let long = format!("JSESSIONID={}", "x".repeat(MAX_KEY_BYTES + 1));
        let request = parts("/", &[("cookie", long.as_str())]);
        assert_eq!(key(SessionKind::Cookie, Some("JSESSIONID"), &request), None);
    }

    #[test]
    fn set_cookie_is_read_by_name_and_deletions_are_not_sessions() {
        let mut headers = HeaderMap::new();
        headers.append(SET_COOKIE, "theme=dark; Path=/".parse().expect("value"));
        headers.append(
            SET_COOKIE,
            "JSESSIONID=s1; Path=/; HttpOnly".parse().expect("value"),
        );
        assert_eq!(set_cookie_value(&headers, "JSESSIONID"), Some("s1".into()));
        assert_eq!(set_cookie_value(&headers, "other"), None);
        headers.append(
            SET_COOKIE,
            "JSESSIONID=gone; Max-Age=0".parse().expect("value"),
        );
        assert_eq!(set_cookie_value(&headers, "JSESSIONID"), None);
    }

    #[test]
    fn ttl_is_idle_time() {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(300);
        let mut table = SessionTable::new(ttl, 10);
        let a = addr("198.18.0.102:80");
        assert_eq!(table.learn("k", a, t0), Learned::New);
        // Used at 200 s, so it lives until 500 s even though it was learned at 0.
        assert_eq!(table.get("k", t0 + Duration::from_secs(200)), Some(a));
        assert_eq!(table.get("k", t0 + Duration::from_secs(499)), Some(a));
        assert_eq!(table.get("k", t0 + Duration::from_secs(798)), Some(a));
        // Idle for exactly the TTL is expired.
        assert_eq!(table.get("k", t0 + Duration::from_secs(1098)), None);
        assert!(table.is_empty(), "an expired entry is removed when found");
    }

    #[test]
    fn expired_entries_are_reclaimed_by_sweeps_and_inserts() {
        let t0 = Instant::now();
        let mut table = SessionTable::new(Duration::from_secs(10), 1000);
        let a = addr("198.18.0.102:80");
        for i in 0..20 {
            table.learn(&format!("old{i}"), a, t0);
        }
        table.learn("fresh", a, t0 + Duration::from_secs(5));
        // Each insertion reclaims a bounded number of expired entries.
        table.learn("later", a, t0 + Duration::from_secs(11));
        assert_eq!(table.len(), 20 - SWEEP_PER_INSERT + 2);
        assert_eq!(
            table.sweep(t0 + Duration::from_secs(11)),
            20 - SWEEP_PER_INSERT
        );
        assert_eq!(table.len(), 2);
        assert_eq!(table.peek("fresh", t0 + Duration::from_secs(11)), Some(a));
        assert_eq!(table.sweep(t0 + Duration::from_secs(100)), 2);
        assert!(table.is_empty());
    }

    #[test]
    fn the_table_is_bounded_and_the_least_recently_used_go_first() {
        let t0 = Instant::now();
        let mut table = SessionTable::new(Duration::from_secs(300), 3);
        let a = addr("198.18.0.102:80");
        let s = Duration::from_secs(1);
        table.learn("a", a, t0);
        table.learn("b", a, t0 + s);
        table.learn("c", a, t0 + 2 * s);
        // Using "a" makes "b" the oldest.
        assert_eq!(table.get("a", t0 + 3 * s), Some(a));
        table.learn("d", a, t0 + 4 * s);
        assert_eq!(table.len(), 3);
        assert_eq!(table.peek("b", t0 + 4 * s), None);
        let keys: Vec<String> = table
            .entries(t0 + 4 * s)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["c", "a", "d"]);
    }

    #[test]
    fn learning_reports_new_moved_and_refreshed() {
        let t0 = Instant::now();
        let mut table = SessionTable::new(Duration::from_secs(300), 10);
        let (a, b) = (addr("198.18.0.102:80"), addr("198.18.0.103:80"));
        assert_eq!(table.learn("k", a, t0), Learned::New);
        assert_eq!(table.learn("k", a, t0), Learned::Refreshed);
        assert_eq!(table.learn("k", b, t0), Learned::Moved);
        assert_eq!(table.peek("k", t0), Some(b));
        assert_eq!(table.count_by_backend(t0).get(&b), Some(&1));
        assert_eq!(table.remove("k"), Some(b));
        assert!(table.is_empty());
    }

    #[test]
    fn replication_is_due_once_and_again_after_the_refresh_interval() {
        let t0 = Instant::now();
        let every = Duration::from_secs(150);
        let mut table = SessionTable::new(Duration::from_secs(300), 10);
        let (a, b) = (addr("198.18.0.102:80"), addr("198.18.0.103:80"));
        table.learn("k", a, t0);
        assert!(table.needs_replication("k", t0, every));
        assert!(!table.needs_replication("k", t0 + Duration::from_secs(10), every));
        assert!(table.needs_replication("k", t0 + Duration::from_secs(150), every));
        // A move must reach the peers at once.
        table.learn("k", b, t0 + Duration::from_secs(151));
        assert!(table.needs_replication("k", t0 + Duration::from_secs(151), every));
        table.learn("r", a, t0);
        table.mark_replicated("r", t0);
        assert!(!table.needs_replication("r", t0, every));
        assert!(!table.needs_replication("missing", t0, every));
    }

    #[test]
    fn insert_ids_are_opaque_stable_and_round_trip() {
        let backends = [addr("198.18.0.102:80"), addr("198.18.0.103:80")];
        let ids = InsertIds::new("web", &backends);
        for backend in backends {
            let id = ids.of(backend).expect("known backend").to_owned();
            assert_eq!(id.len(), 16);
            assert!(!id.contains("198.18"), "the id does not show the address");
            assert_eq!(ids.backend(&id), Some(backend));
            // Another node derives the same id from the same service.
            assert_eq!(InsertIds::id("web", backend), id);
        }
        assert_ne!(ids.of(backends[0]), ids.of(backends[1]));
        assert_ne!(
            InsertIds::id("api", backends[0]),
            InsertIds::id("web", backends[0])
        );
        assert_eq!(ids.backend("0123456789abcdef"), None);
    }

    #[test]
    fn a_client_adds_a_bounded_number_of_new_keys_a_minute() {
        let mut limit = NewKeyLimit::default();
        let (one, other): (IpAddr, IpAddr) =
            ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap());
        let now = Instant::now();
        for _ in 0..NEW_KEYS_PER_CLIENT {
            assert!(limit.allow(one, now));
        }
        assert!(
            !limit.allow(one, now + Duration::from_secs(59)),
            "over the allowance"
        );
        assert!(limit.allow(other, now), "another client has its own");
        assert!(limit.allow(one, now + NEW_KEYS_WINDOW), "a new minute");
    }
}

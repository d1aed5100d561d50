//! Header rewriting between client and backend: hop-by-hop headers removed in both directions
//! (RFC 9110 7.6.1), and the `X-Forwarded-*` headers Pound adds on the way to the backend.
//! Pure functions over `HeaderMap`, so every rule is unit-tested without a socket.

use std::net::{IpAddr, SocketAddr};

use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, TE, TRANSFER_ENCODING, UPGRADE,
};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether `name` describes one connection, not the message (`TE` aside, which may say
/// "trailers"): such a header cannot go over HTTP/2 (RFC 9113 8.2.2).
pub fn is_connection_specific(name: &HeaderName) -> bool {
    [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TRANSFER_ENCODING,
        &UPGRADE,
    ]
    .contains(&name)
}

/// Removes the headers that describe one connection, not the message: `Connection` and every
/// header it names, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`, and `TE`
/// unless it only says "trailers" (which a proxy may pass on). hyper frames the message again
/// on the other side.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(&CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(&CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
        headers.remove(&CONNECTION);
    }
    for name in [&KEEP_ALIVE, &PROXY_CONNECTION, &TRANSFER_ENCODING, &UPGRADE] {
        headers.remove(name);
    }
    let te_is_trailers = headers.get_all(&TE).iter().all(|value| {
        value
            .to_str()
            .map(|v| {
                v.split(',')
                    .all(|c| c.trim().eq_ignore_ascii_case("trailers"))
            })
            .unwrap_or(false)
    });
    if !te_is_trailers {
        headers.remove(&TE);
    }
}

/// The client's address as logged and forwarded (IPv4-mapped IPv6 shown as IPv4).
pub fn client_ip(client: SocketAddr) -> IpAddr {
    match client.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Which `X-Forwarded-*` headers to set (`[proxy]` switches).
#[derive(Debug, Clone, Copy)]
pub struct Forwarded {
    pub for_: bool,
    pub proto: bool,
    pub port: bool,
}

/// Adds the client address to `X-Forwarded-For` (after any value the request brought, joined
/// into one header as "incoming, client") and sets `X-Forwarded-Proto` and `X-Forwarded-Port`.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    switches: Forwarded,
    client: IpAddr,
    https: bool,
    port: &HeaderValue,
) {
    if switches.for_ {
        let client = client.to_string();
        let mut joined = String::new();
        for value in headers.get_all(&X_FORWARDED_FOR) {
            if let Ok(text) = value.to_str() {
                let text = text.trim();
                if !text.is_empty() {
                    joined.push_str(text);
                    joined.push_str(", ");
                }
            }
        }
        joined.push_str(&client);
        if let Ok(value) = HeaderValue::from_str(&joined) {
            headers.insert(X_FORWARDED_FOR.clone(), value);
        }
    }
    if switches.proto {
        let proto = if https { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if switches.port {
        headers.insert(X_FORWARDED_PORT.clone(), port.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        headers
    }

    fn names(headers: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, X-Private"),
            ("connection", "close"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("host", "a.example"),
            ("cookie", "a=1"),
        ]);
        remove_hop_by_hop(&mut headers);
        assert_eq!(names(&headers), ["cookie", "host"]);
    }

    #[test]
    fn te_trailers_is_passed_on() {
        let mut headers = map(&[("te", "trailers")]);
        remove_hop_by_hop(&mut headers);
        assert_eq!(names(&headers), ["te"]);
    }

    #[test]
    fn forwarded_for_keeps_the_incoming_chain() {
        let all = Forwarded {
            for_: true,
            proto: true,
            port: true,
        };
        let port = HeaderValue::from_static("443");
        let mut headers = map(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "198.51.100.1, 10.0.0.1"),
            ("x-forwarded-proto", "http"),
        ]);
        add_forwarded(
            &mut headers,
            all,
            "198.18.0.10".parse().unwrap(),
            true,
            &port,
        );
        assert_eq!(
            headers[&X_FORWARDED_FOR],
            "203.0.113.7, 198.51.100.1, 10.0.0.1, 198.18.0.10"
        );
        assert_eq!(headers.get_all(&X_FORWARDED_FOR).iter().count(), 1);
        assert_eq!(headers[&X_FORWARDED_PROTO], "https");
        assert_eq!(headers[&X_FORWARDED_PORT], "443");

        let mut fresh = HeaderMap::new();
        add_forwarded(
            &mut fresh,
            all,
            "198.18.0.10".parse().unwrap(),
            false,
            &port,
        );
        assert_eq!(fresh[&X_FORWARDED_FOR], "198.18.0.10");
        assert_eq!(fresh[&X_FORWARDED_PROTO], "http");
    }

    #[test]
    fn forwarded_headers_can_be_switched_off() {
        let none = Forwarded {
            for_: false,
            proto: false,
            port: false,
        };
        let mut headers = map(&[("x-forwarded-for", "203.0.113.7")]);
        add_forwarded(
            &mut headers,
            none,
            "198.18.0.10".parse().unwrap(),
            false,
            &HeaderValue::from_static("80"),
        );
        assert_eq!(names(&headers), ["x-forwarded-for"]);
        assert_eq!(headers[&X_FORWARDED_FOR], "203.0.113.7");
    }
}

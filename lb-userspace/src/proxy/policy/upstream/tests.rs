//! What the HTTP engine sees through [`Upstream`]: candidates in order, health, emergency
//! backends, sessions of every kind learned and moved, insert-mode cookies, and placement that
//! two independent nodes agree on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};

use super::*;
use crate::config::{Backend, Balance, HealthCheck, Service, ServiceMode, Session};

const A: &str = "198.18.0.102:80";
const B: &str = "198.18.0.103:80";
const E: &str = "198.18.0.104:80";

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

fn client() -> SocketAddr {
    "198.18.0.10:40000".parse().expect("test address")
}

fn backend(address: &str, weight: u32, emergency: bool) -> Backend {
    Backend {
        address: addr(address),
        weight,
        emergency,
    }
}

fn service(backends: Vec<Backend>, session: Option<Session>) -> Service {
    let mut service = crate::config::parse(
        "[node]\nname = \"lb1\"\ninterface = \"eth0\"\n\n[[service]]\nname = \"web\"\n\
         listen = \"198.18.0.99:80\"\nbackends = [\"198.18.0.102:80\"]\n",
        std::path::Path::new("t.toml"),
    )
    .expect("base config loads")
    .config
    .services
    .remove(0);
    service.backends = backends;
    service.session = session;
    service.health = HealthCheck {
        rise: 1,
        fall: 1,
        ..HealthCheck::default()
    };
    assert_eq!(service.mode, ServiceMode::Http);
    service
}

fn two_backends(session: Option<Session>) -> Service {
    service(vec![backend(A, 1, false), backend(B, 1, false)], session)
}

fn session(kind: SessionKind, id: Option<&str>) -> Session {
    Session {
        kind,
        id: id.map(str::to_owned),
        ttl: Duration::from_secs(300),
        max_entries: 1000,
        mode: SessionMode::Learn,
    }
}

fn cookie_session() -> Option<Session> {
    Some(session(SessionKind::Cookie, Some("JSESSIONID")))
}

fn request(headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = Request::get("/");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("request").into_parts().0
}

fn response(set_cookies: &[&str]) -> http::response::Parts {
    let mut builder = Response::builder().status(200);
    for cookie in set_cookies {
        builder = builder.header("set-cookie", *cookie);
    }
    builder.body(()).expect("response").into_parts().0
}

fn first(upstream: &Upstream, request: &http::request::Parts, now: Instant) -> SocketAddr {
    upstream.route(request, client(), now).candidates[0]
}

#[test]
fn round_robin_alternates_and_lists_every_backend() {
    let upstream = Upstream::new(&two_backends(None));
    let now = Instant::now();
    let routes: Vec<Route> = (0..4)
        .map(|_| upstream.route(&request(&[]), client(), now))
        .collect();
    assert_eq!(routes[0].candidates, [addr(A), addr(B)]);
    assert_eq!(routes[1].candidates, [addr(B), addr(A)]);
    assert_eq!(routes[2].candidates, [addr(A), addr(B)]);
    assert!(routes.iter().all(|r| r.session_key.is_none()));
}

#[test]
fn weights_shape_the_round_robin() {
    let upstream = Upstream::new(&service(
        vec![backend(A, 3, false), backend(B, 1, false)],
        None,
    ));
    let now = Instant::now();
    let firsts: Vec<SocketAddr> = (0..8)
        .map(|_| first(&upstream, &request(&[]), now))
        .collect();
    let (a, b) = (addr(A), addr(B));
    assert_eq!(firsts, [a, a, b, a, a, a, b, a]);
}

#[test]
fn random_balance_follows_weights() {
    let mut config = service(vec![backend(A, 1, false), backend(B, 3, false)], None);
    config.balance = Balance::Random;
    let upstream = Upstream::new(&config);
    let now = Instant::now();
    let n = 4000;
    let on_b = (0..n)
        .filter(|_| first(&upstream, &request(&[]), now) == addr(B))
        .count();
    let share = on_b as f64 / n as f64;
    assert!((0.70..0.80).contains(&share), "B got {share}");
}

#[test]
fn a_backend_that_refuses_is_no_candidate_until_it_passes_checks() {
    let upstream = Upstream::new(&two_backends(None));
    let now = Instant::now();
    upstream.connect_failed(addr(A), "connect refused");
    for _ in 0..3 {
        assert_eq!(
            upstream.route(&request(&[]), client(), now).candidates,
            [addr(B)]
        );
    }
    let status = upstream.status();
    assert!(!status.backends[0].up);
    assert_eq!(status.backends[0].reason, "connect refused");
    upstream.health().record_probe(addr(A), Ok(()));
    assert_eq!(
        upstream
            .route(&request(&[]), client(), now)
            .candidates
            .len(),
        2
    );
}

#[test]
fn emergency_backends_serve_only_while_every_regular_one_is_down() {
    let upstream = Upstream::new(&service(
        vec![
            backend(A, 1, false),
            backend(B, 1, false),
            backend(E, 1, true),
        ],
        None,
    ));
    let now = Instant::now();
    let route = || upstream.route(&request(&[]), client(), now).candidates;
    assert!(!route().contains(&addr(E)));
    upstream.connect_failed(addr(A), "connect refused");
    assert_eq!(route(), [addr(B)]);
    upstream.connect_failed(addr(B), "connect timed out");
    assert_eq!(route(), [addr(E)]);
    upstream.health().record_probe(addr(B), Ok(()));
    assert_eq!(route(), [addr(B)]);
    let status = upstream.status();
    assert!(status.backends[2].emergency);
}

#[test]
fn nothing_up_means_no_candidates() {
    let upstream = Upstream::new(&service(
        vec![backend(A, 1, false), backend(E, 1, true)],
        cookie_session(),
    ));
    upstream.connect_failed(addr(A), "connect refused");
    upstream.connect_failed(addr(E), "connect refused");
    let route = upstream.route(
        &request(&[("cookie", "JSESSIONID=x")]),
        client(),
        Instant::now(),
    );
    assert!(route.candidates.is_empty());
    assert_eq!(route.session_key.as_deref(), Some("x"));
}

#[test]
fn cookie_sessions_are_learned_from_set_cookie() {
    let upstream = Upstream::new(&two_backends(cookie_session()));
    let now = Instant::now();
    // The first request has no cookie: round robin sends it to A, whose answer sets one.
    let route = upstream.route(&request(&[]), client(), now);
    assert_eq!(route.session_key, None);
    let served_by = route.candidates[0];
    upstream.responded(
        &route,
        served_by,
        &mut response(&["lang=en", "JSESSIONID=learned-1; Path=/"]),
        now,
    );
    assert_eq!(upstream.session("learned-1", now), Some(served_by));
    // Round robin would now pick the other backend; the session wins.
    for _ in 0..5 {
        let with_cookie = request(&[("cookie", "a=1; JSESSIONID=learned-1")]);
        let route = upstream.route(&with_cookie, client(), now);
        assert_eq!(route.candidates[0], served_by);
        assert_eq!(
            route.candidates.len(),
            2,
            "the other backend is the fallback"
        );
        assert_eq!(route.session_key.as_deref(), Some("learned-1"));
    }
    assert_eq!(upstream.status().session.map(|s| s.entries), Some(1));
}

#[test]
fn session_requests_do_not_take_round_robin_turns() {
    let upstream = Upstream::new(&two_backends(cookie_session()));
    let now = Instant::now();
    let mut new_sessions_on = Vec::new();
    for session in 0..4 {
        // A new session: no cookie, the balancer chooses; the backend sets the cookie.
        let route = upstream.route(&request(&[]), client(), now);
        let backend = route.candidates[0];
        let set = format!("JSESSIONID=s{session}");
        upstream.responded(&route, backend, &mut response(&[set.as_str()]), now);
        new_sessions_on.push(backend);
        // Twenty requests of the session (an even number) change nothing for the next one.
        let cookie = format!("JSESSIONID=s{session}");
        for _ in 0..20 {
            let route = upstream.route(&request(&[("cookie", &cookie)]), client(), now);
            assert_eq!(route.candidates[0], backend);
            upstream.responded(&route, backend, &mut response(&[]), now);
        }
    }
    let (a, b) = (addr(A), addr(B));
    assert_eq!(new_sessions_on, [a, b, a, b]);
}

/// A session key whose Maglev placement over {A, B} is `want`.
fn key_placed_on(upstream: &Upstream, want: SocketAddr, prefix: &str) -> String {
    (0..1000)
        .map(|i| format!("{prefix}{i}"))
        .find(|key| {
            let cookie = format!("JSESSIONID={key}");
            let route = upstream.route(&request(&[("cookie", &cookie)]), client(), Instant::now());
            route.candidates[0] == want
        })
        .expect("some key hashes to each backend")
}

#[test]
fn new_keys_are_placed_by_maglev_identically_on_two_nodes() {
    let lb1 = Upstream::new(&two_backends(cookie_session()));
    // The second node lists the backends in the other order and has served other traffic.
    let lb2 = Upstream::new(&service(
        vec![backend(B, 1, false), backend(A, 1, false)],
        cookie_session(),
    ));
    let now = Instant::now();
    for _ in 0..3 {
        lb2.route(&request(&[]), client(), now);
    }
    let mut on_a = 0;
    for i in 0..200 {
        let cookie = format!("JSESSIONID=user-{i}");
        let one = first(&lb1, &request(&[("cookie", &cookie)]), now);
        let two = first(&lb2, &request(&[("cookie", &cookie)]), now);
        assert_eq!(one, two, "{cookie}");
        assert_eq!(lb1.placement(&format!("user-{i}")), Some(one));
        on_a += usize::from(one == addr(A));
    }
    assert!((70..=130).contains(&on_a), "{on_a} of 200 keys on A");
    // Placing is not learning: the table stays empty until a backend answers.
    assert_eq!(lb1.status().session.map(|s| s.entries), Some(0));
}

#[test]
fn a_session_whose_backend_is_down_moves_and_stays_moved() {
    let upstream = Upstream::new(&two_backends(cookie_session()));
    let now = Instant::now();
    let key = key_placed_on(&upstream, addr(A), "k");
    let cookie = format!("JSESSIONID={key}");
    let route = upstream.route(&request(&[("cookie", &cookie)]), client(), now);
    upstream.responded(&route, addr(A), &mut response(&[]), now);
    assert_eq!(upstream.session(&key, now), Some(addr(A)));

    upstream.connect_failed(addr(A), "connect refused");
    let route = upstream.route(&request(&[("cookie", &cookie)]), client(), now);
    assert_eq!(route.candidates, [addr(B)]);
    assert_eq!(
        upstream.session(&key, now),
        Some(addr(B)),
        "the table follows the move"
    );

    // A comes back; the session stays where it moved (Pound: a session keeps its backend).
    upstream.health().record_probe(addr(A), Ok(()));
    assert_eq!(
        first(&upstream, &request(&[("cookie", &cookie)]), now),
        addr(B)
    );
}

#[test]
fn a_drained_backend_keeps_its_sessions_but_gets_no_new_users() {
    let upstream = Upstream::new(&two_backends(cookie_session()));
    let now = Instant::now();
    let key = key_placed_on(&upstream, addr(A), "k");
    let cookie = format!("JSESSIONID={key}");
    let route = upstream.route(&request(&[("cookie", &cookie)]), client(), now);
    upstream.responded(&route, addr(A), &mut response(&[]), now);

    assert!(upstream.set_drained(addr(A), true));
    assert!(
        !upstream.set_drained(addr(E), true),
        "not a backend of the service"
    );
    // The session on A goes on there, with B as the fallback should A fail.
    let route = upstream.route(&request(&[("cookie", &cookie)]), client(), now);
    assert_eq!(route.candidates, [addr(A), addr(B)]);
    // Requests without a session, and new sessions, go to B only.
    for _ in 0..4 {
        assert_eq!(
            upstream.route(&request(&[]), client(), now).candidates,
            [addr(B)]
        );
    }
    assert_eq!(upstream.placement("a-new-session"), Some(addr(B)));
    let drained: Vec<bool> = upstream
        .status()
        .backends
        .iter()
        .map(|b| b.drained)
        .collect();
    assert_eq!(drained, [true, false]);

    // Draining every backend leaves them all in use rather than answering 503.
    assert!(upstream.set_drained(addr(B), true));
    assert_eq!(
        upstream
            .route(&request(&[]), client(), now)
            .candidates
            .len(),
        2
    );

    assert!(upstream.set_drained(addr(A), false));
    assert!(upstream.set_drained(addr(B), false));
    let firsts: Vec<SocketAddr> = (0..4)
        .map(|_| first(&upstream, &request(&[]), now))
        .collect();
    assert!(
        firsts.contains(&addr(A)) && firsts.contains(&addr(B)),
        "{firsts:?}"
    );
}

#[test]
fn sessions_expire_after_idle_ttl() {
    let mut config = session(SessionKind::Ip, None);
    config.ttl = Duration::from_secs(60);
    let upstream = Upstream::new(&two_backends(Some(config)));
    let t0 = Instant::now();
    let route = upstream.route(&request(&[]), client(), t0);
    assert_eq!(route.session_key.as_deref(), Some("198.18.0.10"));
    // Answered by the backend that is not the Maglev placement, so expiry is visible.
    let other = if route.candidates[0] == addr(A) {
        addr(B)
    } else {
        addr(A)
    };
    upstream.responded(&route, other, &mut response(&[]), t0);
    let at = |secs| t0 + Duration::from_secs(secs);
    assert_eq!(first(&upstream, &request(&[]), at(50)), other);
    assert_eq!(
        first(&upstream, &request(&[]), at(100)),
        other,
        "used at 50 s"
    );
    assert_eq!(upstream.sweep_sessions(at(159)), 0);
    assert_eq!(upstream.sweep_sessions(at(160)), 1);
    assert_eq!(upstream.session("198.18.0.10", at(160)), None);
}

#[test]
fn every_session_kind_routes_by_its_key() {
    let cases = [
        (
            session(SessionKind::Header, Some("X-Session")),
            request(&[("x-session", "h-1")]),
            "h-1",
        ),
        (
            session(SessionKind::Basic, None),
            // alice:secret
            request(&[("authorization", "Basic YWxpY2U6c2VjcmV0")]),
            "alice",
        ),
        (session(SessionKind::Ip, None), request(&[]), "198.18.0.10"),
    ];
    let now = Instant::now();
    for (session, request, key) in cases {
        let upstream = Upstream::new(&two_backends(Some(session)));
        let route = upstream.route(&request, client(), now);
        assert_eq!(route.session_key.as_deref(), Some(key));
        upstream.responded(&route, route.candidates[1], &mut response(&[]), now);
        assert_eq!(upstream.session(key, now), Some(route.candidates[1]));
        assert_eq!(first(&upstream, &request, now), route.candidates[1]);
    }
    let url = Upstream::new(&two_backends(Some(session(SessionKind::Url, Some("sid")))));
    let parts = Request::get("/page?sid=a%20b")
        .body(())
        .expect("request")
        .into_parts()
        .0;
    assert_eq!(
        url.route(&parts, client(), now).session_key.as_deref(),
        Some("a b")
    );
}

#[test]
fn insert_mode_sets_an_opaque_cookie_and_honours_it() {
    let mut config = session(SessionKind::Cookie, Some("TANDEM"));
    config.mode = SessionMode::Insert;
    let upstream = Upstream::new(&two_backends(Some(config.clone())));
    let now = Instant::now();
    let route = upstream.route(&request(&[]), client(), now);
    let backend = route.candidates[0];
    let mut answer = response(&["JSESSIONID=app"]);
    upstream.responded(&route, backend, &mut answer, now);
    let set: Vec<&str> = answer
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(
        set.len(),
        2,
        "the app's cookie stays, ours is added: {set:?}"
    );
    let ours = set[1];
    assert!(
        ours.starts_with("TANDEM=") && ours.contains("Path=/"),
        "{ours}"
    );
    assert!(
        !ours.contains("198.18"),
        "the cookie does not show the address: {ours}"
    );
    let value = ours
        .trim_start_matches("TANDEM=")
        .split(';')
        .next()
        .expect("value");

    // The client sends it back: same backend every time, and no new Set-Cookie.
    let cookie = format!("TANDEM={value}");
    for _ in 0..4 {
        let route = upstream.route(&request(&[("cookie", &cookie)]), client(), now);
        assert_eq!(route.candidates[0], backend);
        let mut answer = response(&[]);
        upstream.responded(&route, backend, &mut answer, now);
        assert!(answer.headers.get("set-cookie").is_none());
    }
    // Another node with the same service reads the same cookie the same way: no table.
    let peer = Upstream::new(&two_backends(Some(config)));
    assert_eq!(first(&peer, &request(&[("cookie", &cookie)]), now), backend);
    assert_eq!(peer.status().session.map(|s| s.entries), Some(0));

    // Its backend down: another serves, and the cookie is rewritten to name it.
    upstream.connect_failed(backend, "connect refused");
    let route = upstream.route(&request(&[("cookie", &cookie)]), client(), now);
    assert_ne!(route.candidates[0], backend);
    let mut answer = response(&[]);
    upstream.responded(&route, route.candidates[0], &mut answer, now);
    assert!(answer.headers.get("set-cookie").is_some());
}

#[test]
fn replicated_entries_route_like_learned_ones() {
    let lb1 = Upstream::new(&two_backends(cookie_session()));
    let lb2 = Upstream::new(&two_backends(cookie_session()));
    let now = Instant::now();
    // A key Maglev puts on A, learned on lb1 as served by B (the backend set it).
    let key = key_placed_on(&lb2, addr(A), "r");
    let route = lb1.route(&request(&[]), client(), now);
    let cookie = format!("JSESSIONID={key}");
    lb1.responded(&route, addr(B), &mut response(&[cookie.as_str()]), now);
    assert_eq!(first(&lb1, &request(&[("cookie", &cookie)]), now), addr(B));
    assert_eq!(
        first(&lb2, &request(&[("cookie", &cookie)]), now),
        addr(A),
        "by hash"
    );

    // What lb1 would send, lb2 applies.
    for (key, backend) in lb1.replication_snapshot(now) {
        assert!(lb2.apply_replicated(&key, backend, now));
    }
    assert_eq!(first(&lb2, &request(&[("cookie", &cookie)]), now), addr(B));
    assert!(
        !lb2.apply_replicated("x", addr(E), now),
        "not a backend of the service"
    );
}

#[test]
fn learned_entries_are_published_once_and_refreshed() {
    let replication = config::Replication {
        listen: addr("127.0.0.1:7946"),
        peers: vec![addr("127.0.0.2:7946")],
    };
    let replicator = Replicator::new(&replication);
    let upstream =
        Upstream::with_replicator(&two_backends(cookie_session()), Some(replicator.clone()));
    let t0 = Instant::now();
    let cookie = "JSESSIONID=pub";
    for secs in [0, 1, 2] {
        let now = t0 + Duration::from_secs(secs);
        let route = upstream.route(&request(&[("cookie", cookie)]), client(), now);
        upstream.responded(&route, route.candidates[0], &mut response(&[]), now);
    }
    assert_eq!(
        replicator.status().peers[0].queued,
        1,
        "new entries go out once"
    );
    // Half the TTL later the entry in use is sent again so the peer's copy stays alive.
    let later = t0 + Duration::from_secs(151);
    let route = upstream.route(&request(&[("cookie", cookie)]), client(), later);
    upstream.responded(&route, route.candidates[0], &mut response(&[]), later);
    assert_eq!(replicator.status().peers[0].queued, 2);
    // Sessions of a service without a table are not registered.
    let insert = Upstream::with_replicator(&two_backends(None), Some(replicator.clone()));
    let route = insert.route(&request(&[]), client(), t0);
    insert.responded(&route, route.candidates[0], &mut response(&[]), t0);
    assert_eq!(replicator.status().peers[0].queued, 2);
    // Received entries for this service land in its table.
    let entry = replicate::Entry {
        service: "web".into(),
        key: "from-peer".into(),
        backend: addr(B),
    };
    assert!(replicator.apply(&entry, t0));
    assert_eq!(upstream.session("from-peer", t0), Some(addr(B)));
    drop(Arc::clone(&upstream));
}

#[test]
fn status_counts_requests_and_sessions_per_backend() {
    let upstream = Upstream::new(&two_backends(cookie_session()));
    let now = Instant::now();
    for i in 0..4 {
        let cookie = format!("JSESSIONID=s{i}");
        let route = upstream.route(&request(&[("cookie", &cookie)]), client(), now);
        upstream.responded(&route, addr(A), &mut response(&[]), now);
    }
    let status = upstream.status();
    assert_eq!(status.service, "web");
    assert_eq!(status.backends[0].requests, 4);
    assert_eq!(status.backends[0].sessions, 4);
    assert_eq!(status.backends[1].sessions, 0);
    let json = serde_json::to_value(&status).expect("serializes");
    assert_eq!(json["balance"], "round-robin");
    assert_eq!(json["session"]["type"], "cookie");
    assert_eq!(json["backends"][0]["address"], A);
    assert_eq!(json["backends"][0]["up"], true);
}

#[test]
fn a_flood_of_made_up_cookies_from_one_client_cannot_push_real_sessions_out() {
    let upstream = Upstream::new(&two_backends(cookie_session()));
    let now = Instant::now();
    // A real user's session, set by the backend.
    let route = upstream.route(&request(&[]), client(), now);
    let served_by = route.candidates[0];
    upstream.responded(
        &route,
        served_by,
        &mut response(&["JSESSIONID=real; Path=/"]),
        now,
    );
    // Another client makes up 1,000 session cookies.
    let attacker: SocketAddr = "198.18.0.66:40000".parse().expect("addr");
    for i in 0..1000 {
        let cookie = format!("JSESSIONID=made-up-{i}");
        let route = upstream.route(&request(&[("cookie", &cookie)]), attacker, now);
        let backend = route.candidates[0];
        upstream.responded(&route, backend, &mut response(&[]), now);
    }
    let entries = upstream.status().session.map_or(0, |s| s.entries);
    assert_eq!(
        entries,
        1 + affinity::NEW_KEYS_PER_CLIENT as usize,
        "only the client's allowance of new keys is learned"
    );
    assert_eq!(
        upstream.session("real", now),
        Some(served_by),
        "the real session is kept"
    );
    // The made-up keys past the allowance are still routed, by Maglev, to one backend each.
    let cookie = [("cookie", "JSESSIONID=made-up-999")];
    let first = upstream.route(&request(&cookie), attacker, now).candidates[0];
    let again = upstream.route(&request(&cookie), attacker, now).candidates[0];
    assert_eq!(first, again);
}

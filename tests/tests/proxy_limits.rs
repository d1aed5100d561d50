//! `max_connections`: connections beyond the budget wait (in the kernel's accept queue)
//! rather than being served late or refused, while the connections already accepted keep being
//! served; a waiting client is served as soon as a connection closes. And an idle connection is
//! closed after `idle_timeout`.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use tandem_lab::pair::TandemNode;
use tandem_lab::{http_get, wait_for_tcp, EchoBackend, Host, Lab, CLIENT, HTTP1, LB1};

const PORT: u16 = 8080;

fn node_config(lab: &Lab, node: &Host) -> String {
    format!(
        r#"{node}
[proxy]
max_connections = 2
idle_timeout = "3s"
workers = 1

[[service]]
name = "web"
listen = "{ip}:{PORT}"
backends = ["{http1}:80"]
"#,
        node = TandemNode::node_section(lab, node),
        ip = node.ip,
        http1 = lab.host(HTTP1).ip,
    )
}

/// One keep-alive request on an open connection; returns the status line, or nothing when the
/// connection was closed (or reset) instead.
fn request_on(stream: &mut TcpStream) -> String {
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: lb1\r\n\r\n")
        .is_err()
    {
        return String::new();
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut buffer = [0u8; 4096];
    let n = stream.read(&mut buffer).unwrap_or(0);
    let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn connections_over_the_budget_wait_without_stalling_accepted_ones() {
    let lab = Lab::new().expect("lab");
    let _http1 = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let lb1 = lab.host(LB1);
    let node = TandemNode::start(&lab, lb1, &node_config(&lab, lb1)).expect("tandem run");
    let client = lab.host(CLIENT);
    let proxy = SocketAddr::V4(SocketAddrV4::new(lb1.ip, PORT));
    if let Err(error) = wait_for_tcp(client, proxy, Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }
    // wait_for_tcp's own connection closes at once; give the proxy a moment to see it.
    std::thread::sleep(Duration::from_millis(200));

    let connect = || {
        client
            .in_netns(|| TcpStream::connect(proxy))
            .expect("netns")
            .expect("connect")
    };
    let mut first = connect();
    let second = connect();
    assert_eq!(request_on(&mut first), "HTTP/1.1 200 OK");

    let (done, waiting) = mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let reply = http_get(client, proxy, "/third", &[]);
            let _ = done.send(reply.map(|r| r.status));
        });
        // The third connection waits for a slot; the accepted ones are served meanwhile.
        for _ in 0..5 {
            assert_eq!(request_on(&mut first), "HTTP/1.1 200 OK");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            waiting.try_recv().is_err(),
            "the third client is not served while two connections hold the budget"
        );
        drop(second);
        let status = waiting
            .recv_timeout(Duration::from_secs(5))
            .expect("the third client is served once a slot frees")
            .expect("its request succeeds");
        assert_eq!(status, 200);
    });

    // Left idle past idle_timeout (3 s), the first connection is closed by the proxy.
    first
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut buffer = [0u8; 16];
    let read = first.read(&mut buffer);
    assert!(
        matches!(read, Ok(0)) || read.is_err(),
        "the idle connection was closed: {read:?}"
    );
}

/// The files the process `pid` has open.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

#[test]
fn running_out_of_file_descriptors_marks_no_backend_down() {
    let lab = Lab::new().expect("lab");
    let _http1 = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let lb1 = lab.host(LB1);
    let config = format!(
        r#"{node}
[proxy]
workers = 1

[[service]]
name = "web"
listen = "{ip}:{PORT}"
backends = ["{http1}:80"]
health = {{ interval = "200ms", fall = 2, rise = 2 }}
"#,
        node = TandemNode::node_section(&lab, lb1),
        ip = lb1.ip,
        http1 = lab.host(HTTP1).ip,
    );
    let node = TandemNode::start(&lab, lb1, &config).expect("tandem run");
    let client = lab.host(CLIENT);
    let proxy = SocketAddr::V4(SocketAddrV4::new(lb1.ip, PORT));
    if let Err(error) = wait_for_tcp(client, proxy, Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }
    let up = || {
        let status = node.status().expect("status");
        status["services"][0]["backends"][0]["up"] == true
    };
    assert!(up(), "the backend is up to begin with");

    // The daemon may open only a few more files than it has open now (as `prlimit` or a
    // low LimitNOFILE= would have it); idle clients then take every one of them.
    let pid = node.process.pid();
    let limit = open_files(pid) + 4;
    let limited = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:{limit}"))
        .status()
        .expect("prlimit (util-linux) runs");
    assert!(limited.success(), "prlimit failed");
    let idle: Vec<TcpStream> = (0..20)
        .filter_map(|_| {
            client
                .in_netns(move || TcpStream::connect_timeout(&proxy, Duration::from_secs(2)))
                .ok()?
                .ok()
        })
        .collect();
    assert!(!idle.is_empty(), "no client connection at all");
    // Ten rounds of health checks, none of which can open a socket.
    std::thread::sleep(Duration::from_secs(2));
    let log = node.log_text();
    assert!(
        log.contains("health check not run"),
        "the checks never ran out of descriptors: the test proves nothing\n{log}"
    );
    assert!(
        up(),
        "the backend was marked down for the node's own limit\n{log}"
    );

    // Once the clients go, requests are served at once: no backend to wait for.
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    let response = http_get(client, proxy, "/", &[]).expect("a request after the clients left");
    assert_eq!(response.status, 200, "{response:?}");
}

/// lb1's proxy in front of an echo backend on http1, with `proxy_extra` in `[proxy]`.
fn limited_node(lab: &Lab, proxy_extra: &str) -> (TandemNode, SocketAddr) {
    let lb1 = lab.host(LB1);
    let config = format!(
        "{node}\n[proxy]\nworkers = 1\n{proxy_extra}\n\n[[service]]\nname = \"web\"\n\
         listen = \"{ip}:{PORT}\"\nbackends = [\"{http1}:80\"]\n",
        node = TandemNode::node_section(lab, lb1),
        ip = lb1.ip,
        http1 = lab.host(HTTP1).ip,
    );
    let node = TandemNode::start(lab, lb1, &config).expect("tandem run");
    let proxy = SocketAddr::V4(SocketAddrV4::new(lb1.ip, PORT));
    if let Err(error) = wait_for_tcp(lab.host(CLIENT), proxy, Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }
    (node, proxy)
}

#[test]
fn bodies_over_max_body_size_get_413_and_smaller_ones_pass() {
    let lab = Lab::new().expect("lab");
    let _http1 = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let (_node, proxy) = limited_node(&lab, "max_body_size = 1000");
    let client = lab.host(CLIENT);
    let send = |request: Vec<u8>| {
        tandem_lab::raw_http::exchange(client, proxy, &request, Duration::from_secs(5))
            .expect("exchange")
    };
    let post = |length: usize| {
        let mut request =
            format!("POST / HTTP/1.1\r\nHost: lb1\r\nContent-Length: {length}\r\n\r\n")
                .into_bytes();
        request.extend(std::iter::repeat_n(b'a', length));
        request
    };
    let small = send(post(1000));
    assert_eq!(small.statuses(), [200], "{}", small.text());
    // Declared too large: refused before anything reaches a backend.
    let declared = send(post(1001));
    assert_eq!(declared.statuses(), [413], "{}", declared.text());
    assert!(declared.closed, "the connection stays open after a 413");
    // Chunked, with no length to refuse up front: cut off when it runs over.
    let mut chunked =
        b"POST / HTTP/1.1\r\nHost: lb1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend(std::iter::repeat_n(b'a', 0x200));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let streamed = send(chunked);
    assert_eq!(streamed.statuses(), [413], "{}", streamed.text());

    // HTTP/2 (curl), declared length over the limit.
    let url = format!("http://{proxy}/");
    let body = "a".repeat(2000);
    let code = client
        .run(
            "curl",
            &[
                "--http2-prior-knowledge",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
                "--data-binary",
                &body,
                &url,
            ],
        )
        .expect("curl");
    assert_eq!(code, "413");
}

#[test]
fn a_client_over_max_connections_per_client_is_closed_and_served_again_once_one_goes() {
    let lab = Lab::new().expect("lab");
    let _http1 = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let (node, proxy) = limited_node(&lab, "max_connections_per_client = 3");
    let client = lab.host(CLIENT);
    let connect = || {
        client
            .in_netns(move || TcpStream::connect_timeout(&proxy, Duration::from_secs(5)))
            .expect("netns")
            .expect("connect")
    };
    // The client's readiness probe (wait_for_tcp) holds a place until the proxy has seen it
    // close; a served request on a fresh connection says it has.
    let mut probe_gone = false;
    for _ in 0..50 {
        let mut fresh = connect();
        if request_on(&mut fresh) == "HTTP/1.1 200 OK" {
            probe_gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(probe_gone, "no connection served\n{}", node.log_text());
    std::thread::sleep(Duration::from_millis(300));
    let mut open: Vec<TcpStream> = (0..3).map(|_| connect()).collect();
    for stream in &mut open {
        assert_eq!(request_on(stream), "HTTP/1.1 200 OK");
    }
    // The fourth is closed at once: its request gets no answer.
    let mut fourth = connect();
    let _ = fourth.write_all(b"GET / HTTP/1.1\r\nHost: lb1\r\n\r\n");
    fourth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut buffer = [0u8; 256];
    let read = fourth.read(&mut buffer);
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the fourth connection was served: {:?}\n{}",
        read.map(|n| String::from_utf8_lossy(&buffer[..n]).into_owned()),
        node.log_text()
    );
    // The three go on; one goes, and a new connection is served.
    assert_eq!(request_on(&mut open[0]), "HTTP/1.1 200 OK");
    drop(open.pop());
    // Served as soon as the proxy has seen the close.
    let served_again = (0..50).any(|_| {
        let mut again = connect();
        let served = request_on(&mut again) == "HTTP/1.1 200 OK";
        if !served {
            std::thread::sleep(Duration::from_millis(100));
        }
        served
    });
    assert!(served_again, "no new connection served after one closed");
}

#[test]
fn requests_over_backend_max_connections_wait_in_the_queue_and_get_503_after_its_timeout() {
    use tandem_lab::raw_http::{exchange, Script, ScriptedBackend};
    let lab = Lab::new().expect("lab");
    // Each answer takes 2 s; the backend may have one request at a time.
    let backend = ScriptedBackend::start(lab.host(HTTP1), 80, Script::Slow(Duration::from_secs(2)))
        .expect("backend");
    let lb1 = lab.host(LB1);
    let config = format!(
        "{node}\n[proxy]\nbackend_timeout = \"10s\"\n\n[[service]]\nname = \"web\"\n\
         listen = \"{ip}:{PORT}\"\nbackends = [\"{backend}\"]\nbackend_max_connections = 1\n\
         queue_timeout = \"3s\"\n",
        node = TandemNode::node_section(&lab, lb1),
        ip = lb1.ip,
        backend = backend.addr,
    );
    let node = TandemNode::start(&lab, lb1, &config).expect("tandem run");
    let client = lab.host(CLIENT);
    let proxy = SocketAddr::V4(SocketAddrV4::new(lb1.ip, PORT));
    if let Err(error) = wait_for_tcp(client, proxy, Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }
    // `count` requests at once; their statuses, in the order they were sent.
    let at_once = |count: usize| -> Vec<Vec<u16>> {
        std::thread::scope(|scope| {
            let sent: Vec<_> = (0..count)
                .map(|i| {
                    let handle = scope.spawn(move || {
                        let request = format!("GET /{i} HTTP/1.1\r\nHost: lb1\r\n\r\n");
                        exchange(client, proxy, request.as_bytes(), Duration::from_secs(15))
                            .expect("exchange")
                            .statuses()
                    });
                    std::thread::sleep(Duration::from_millis(100));
                    handle
                })
                .collect();
            sent.into_iter()
                .map(|h| h.join().expect("client"))
                .collect()
        })
    };
    // The second waits 2 s in the queue (under the 3 s timeout) and is served.
    assert_eq!(at_once(2), [vec![200], vec![200]], "{}", node.log_text());
    // Of three, one would wait 4 s: it gets 503 at 3 s. (Which one: the waiters race for a
    // freed place; see the queue module.)
    let mut statuses: Vec<u16> = at_once(3).into_iter().flatten().collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 503], "{}", node.log_text());
    assert_eq!(
        backend.max_concurrent(),
        1,
        "the backend never had two requests at once"
    );
    let status = node.status().expect("status");
    let queue = &status["services"][0]["queue"];
    assert_eq!(queue["max_connections"], 1, "{status:#}");
    assert_eq!(queue["timed_out"], 1, "{status:#}");
}

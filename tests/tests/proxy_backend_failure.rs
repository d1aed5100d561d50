//! A backend dies under load and comes back: no client request fails meanwhile (requests that
//! could not reach it go to the other backend; idempotent ones caught on a dying connection
//! are sent again), and once it is back it serves again.
//!
//! Load is wrk from the client host for 10 s (bounded) through `tandem run` on lb1, in front of
//! two Apache backends; http1's Apache is stopped after 3 s and started again after 6 s.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use tandem_lab::pair::TandemNode;
use tandem_lab::wrk::parse_wrk;
use tandem_lab::{http_get, wait_for_tcp, Apache, Host, Lab, CLIENT, HTTP1, HTTP2, LB1};

const PORT: u16 = 80;
const LOAD: Duration = Duration::from_secs(10);

fn node_config(lab: &Lab, node: &Host) -> String {
    format!(
        r#"{node}
[proxy]
access_log = {{ level = 2, path = "{log}" }}

[[service]]
name = "web"
listen = "{ip}:{PORT}"
backends = ["{http1}:80", "{http2}:80"]
health = {{ interval = "1s", rise = 1 }}
"#,
        node = TandemNode::node_section(lab, node),
        log = lab.work_dir().join("access.log").display(),
        ip = node.ip,
        http1 = lab.host(HTTP1).ip,
        http2 = lab.host(HTTP2).ip,
    )
}

/// The access log's lines for answers other than 200.
fn failed_requests(lab: &Lab) -> String {
    std::fs::read_to_string(lab.work_dir().join("access.log"))
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.contains(" 200 OK"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn killing_a_backend_under_load_fails_no_request_and_it_serves_again_after_restart() {
    let lab = Lab::new().expect("lab");
    let mut http1 = Apache::start(&lab, lab.host(HTTP1), 80, "http1").expect("apache on http1");
    let _http2 = Apache::start(&lab, lab.host(HTTP2), 80, "http2").expect("apache on http2");
    let lb1 = lab.host(LB1);
    let node = TandemNode::start(&lab, lb1, &node_config(&lab, lb1)).expect("tandem run");
    let client = lab.host(CLIENT);
    let proxy = SocketAddr::V4(SocketAddrV4::new(lb1.ip, PORT));
    if let Err(error) = wait_for_tcp(client, proxy, Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }

    let url = format!("http://{proxy}/");
    let duration = format!("{}s", LOAD.as_secs());
    let output = std::thread::scope(|scope| {
        let load =
            scope.spawn(|| client.run("wrk", &["-t", "2", "-c", "16", "-d", &duration, &url]));
        std::thread::sleep(Duration::from_secs(3));
        http1.stop().expect("stop http1's Apache");
        std::thread::sleep(Duration::from_secs(3));
        http1.restart().expect("start http1's Apache again");
        load.join().expect("wrk thread")
    })
    .expect("wrk ran");
    eprintln!("wrk through the proxy while http1 was stopped and restarted:\n{output}");
    let summary = parse_wrk(&output).unwrap_or_else(|error| panic!("{error:#}: {output}"));
    assert!(summary.requests > 100, "wrk made requests: {output}");
    assert_eq!(
        (summary.socket_errors, summary.non_2xx),
        (0, 0),
        "no request failed while http1 was down: {output}\n{}\nthe failed requests:\n{}",
        node.log_text(),
        failed_requests(&lab)
    );

    // Back in service: round robin (after the health check sees it) sends it requests again.
    let lines_before = http1.access_log().expect("http1's log").len();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut served_by_http1 = false;
    while !served_by_http1 && Instant::now() < deadline {
        let reply = http_get(client, proxy, "/", &[]).expect("GET after the restart");
        assert_eq!(reply.status, 200);
        served_by_http1 = reply.header("x-backend") == Some("http1");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        served_by_http1,
        "http1 serves again after its restart\n{}",
        node.log_text()
    );
    let lines_after = http1
        .wait_for_access_log(lines_before + 1, Duration::from_secs(5))
        .expect("http1 logs requests again");
    assert!(lines_after.len() > lines_before);
}

//! Reload of a running node (`tandem reload`, SIGHUP) under load, as an operator does it:
//! backends are added and removed while wrk keeps 16 keep-alive connections busy, and a bad
//! file and a restart-only change are refused with a clear error while the node keeps serving.
//!
//! What must hold: no request fails, an open keep-alive connection goes on across every reload
//! (its next request follows the new config), a removed backend gets no new requests, a bad
//! file changes nothing and `tandem reload` prints FILE:LINE:COL and exits 1.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use tandem_lab::pair::{wait_until, TandemNode};
use tandem_lab::raw_http::KeepAlive;
use tandem_lab::wrk::parse_wrk;
use tandem_lab::{wait_for_tcp, Apache, Host, Lab, CLIENT, HTTP1, HTTP2, LB1};

const PORT: u16 = 80;
/// wrk's run: bounded; the reloads happen inside it.
const LOAD: Duration = Duration::from_secs(9);

/// lb1's config with `backends` (TOML array items) behind the one HTTP service.
fn node_config(lab: &Lab, node: &Host, backends: &str) -> String {
    format!(
        r#"{node}
[proxy]
access_log = {{ level = 2, path = "{log}" }}

[[service]]
name = "web"
listen = "{ip}:{PORT}"
backends = [{backends}]
health = {{ interval = "1s", rise = 1 }}
"#,
        node = TandemNode::node_section(lab, node),
        log = lab.work_dir().join("access.log").display(),
        ip = node.ip,
    )
}

fn backend_addresses(status: &serde_json::Value) -> Vec<String> {
    status["services"][0]["backends"]
        .as_array()
        .map(|backends| {
            backends
                .iter()
                .filter_map(|b| b["address"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn text(output: &[u8]) -> String {
    String::from_utf8_lossy(output).into_owned()
}

#[test]
fn reloads_under_load_change_backends_without_failing_a_request_or_dropping_a_connection() {
    let lab = Lab::new().expect("lab");
    let http1 = Apache::start(&lab, lab.host(HTTP1), 80, "http1").expect("apache on http1");
    let http2 = Apache::start(&lab, lab.host(HTTP2), 80, "http2").expect("apache on http2");
    let (b1, b2) = (http1.addr(), http2.addr());
    let lb1 = lab.host(LB1);
    let only_http1 = node_config(&lab, lb1, &format!("\"{b1}\""));
    let both = node_config(&lab, lb1, &format!("\"{b1}\", \"{b2}\""));
    let only_http2 = node_config(&lab, lb1, &format!("\"{b2}\""));
    let mut node = TandemNode::start(&lab, lb1, &only_http1).expect("tandem run");
    let client = lab.host(CLIENT);
    let proxy = SocketAddr::V4(SocketAddrV4::new(lb1.ip, PORT));
    if let Err(error) = wait_for_tcp(client, proxy, Duration::from_secs(10)) {
        panic!("the proxy does not accept: {error:#}\n{}", node.log_text());
    }

    // One connection kept open across every reload below.
    let mut kept = KeepAlive::connect(client, proxy).expect("keep-alive connection");
    let first = kept.get("/").expect("first request on the kept connection");
    assert_eq!(
        (first.status, first.header("x-backend")),
        (200, Some("http1"))
    );

    let url = format!("http://{proxy}/");
    let duration = format!("{}s", LOAD.as_secs());
    let mut http1_lines_after_removal = 0;
    let output = std::thread::scope(|scope| {
        let load =
            scope.spawn(|| client.run("wrk", &["-t", "2", "-c", "16", "-d", &duration, &url]));
        std::thread::sleep(Duration::from_secs(2));

        let added = node.reload(&both).expect("tandem reload");
        assert!(
            added.status.success(),
            "reload adding http2: {}\n{}",
            text(&added.stderr),
            node.log_text()
        );
        assert!(
            text(&added.stdout).contains(&format!("service web: backend {b2} added")),
            "the reload says what it changed: {}",
            text(&added.stdout)
        );
        std::thread::sleep(Duration::from_secs(2));

        let removed = node.reload(&only_http2).expect("tandem reload");
        assert!(
            removed.status.success(),
            "reload removing http1: {}",
            text(&removed.stderr)
        );
        assert!(
            text(&removed.stdout).contains(&format!("service web: backend {b1} removed")),
            "{}",
            text(&removed.stdout)
        );
        // Requests already sent to http1 finish; none is sent there after.
        std::thread::sleep(Duration::from_secs(1));
        http1_lines_after_removal = http1.access_log().expect("http1's log").len();

        // A file with an error: refused with its place, nothing changes.
        let broken = only_http2.replace(&format!("\"{b2}\""), "\"198.18.0.103:http\"");
        let refused = node.reload(&broken).expect("tandem reload");
        let line = broken
            .lines()
            .position(|l| l.contains("198.18.0.103:http"))
            .expect("the broken line")
            + 1;
        let stderr = text(&refused.stderr);
        assert!(!refused.status.success(), "a broken file is refused");
        assert!(
            stderr.contains(&format!("{}:{line}:", node.config.display())),
            "the error names FILE:LINE:COL ({}:{line}:...): {stderr}",
            node.config.display()
        );
        assert!(
            stderr.contains("keeps running the previous one")
                && stderr.contains("and reload again"),
            "the error says the old config runs on and what to do: {stderr}"
        );

        // A setting only a restart can change: refused, saying which.
        let renamed = only_http2.replace("name = \"lb1\"", "name = \"lb1-renamed\"");
        let refused = node.reload(&renamed).expect("tandem reload");
        let stderr = text(&refused.stderr);
        assert!(
            !refused.status.success(),
            "a restart-only change is refused"
        );
        assert!(
            stderr.contains("[node] name") && stderr.contains("restart"),
            "{stderr}"
        );
        std::fs::write(&node.config, &only_http2).expect("restore the file");
        load.join().expect("wrk thread")
    })
    .expect("wrk ran");
    eprintln!("wrk through the proxy across four reloads:\n{output}");

    let summary = parse_wrk(&output).unwrap_or_else(|error| panic!("{error:#}: {output}"));
    assert!(summary.requests > 1000, "wrk made requests: {output}");
    assert_eq!(
        (summary.socket_errors, summary.non_2xx),
        (0, 0),
        "no request failed across the reloads: {output}\n{}",
        node.log_text()
    );
    assert!(
        !http2.access_log().expect("http2's log").is_empty(),
        "http2 served once it was added"
    );
    assert_eq!(
        http1.access_log().expect("http1's log").len(),
        http1_lines_after_removal,
        "http1 got no request after it was removed"
    );

    // The connection opened before the first reload still works, and follows the new config.
    let last = kept
        .get("/")
        .expect("the kept connection survived four reloads");
    assert_eq!(
        (last.status, last.header("x-backend")),
        (200, Some("http2"))
    );

    let status = node.status().expect("tandem status");
    assert_eq!(
        backend_addresses(&status),
        vec![b2.to_string()],
        "the refused reloads changed nothing: {status:#}"
    );

    // SIGHUP does the same as `tandem reload`.
    let weighted = node_config(
        &lab,
        lb1,
        &format!("{{ address = \"{b1}\", weight = 1 }}, {{ address = \"{b2}\", weight = 3 }}"),
    );
    std::fs::write(&node.config, &weighted).expect("write the new config");
    node.process.kill(libc::SIGHUP);
    let reloaded = wait_until(Duration::from_secs(5), "SIGHUP to reload the file", || {
        node.status()
            .map(|status| backend_addresses(&status) == vec![b1.to_string(), b2.to_string()])
            .unwrap_or(false)
    });
    if let Err(error) = reloaded {
        panic!("{error:#}\n{}", node.log_text());
    }
    let status = node.status().expect("tandem status");
    assert_eq!(status["services"][0]["backends"][1]["weight"], 3);
    let after_sighup = kept.get("/").expect("the kept connection after SIGHUP");
    assert_eq!(after_sighup.status, 200);
    assert!(
        node.log_text().contains("SIGHUP: reloading"),
        "the log says why it reloaded"
    );
}

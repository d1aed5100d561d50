//! The daemon as systemd's `Type=notify` sees it, without systemd: the test plays the service
//! manager, listening on a datagram socket named by NOTIFY_SOCKET (the machines the tests run
//! on have no systemd as PID 1). READY=1 must come once the node serves (its listener
//! accepts), RELOADING=1 with MONOTONIC_USEC then READY=1 around a reload, STATUS= with the
//! VRRP state, and WATCHDOG=1 at half of WATCHDOG_USEC.

use std::net::{SocketAddr, SocketAddrV4};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use tandem_lab::pair::{TandemNode, VrrpSettings};
use tandem_lab::{wait_for_tcp, EchoBackend, Lab, CLIENT, HTTP1, LB1, VIP};

/// Messages received until `until` holds for one of them or `timeout` passes.
fn receive_until(
    socket: &UnixDatagram,
    timeout: Duration,
    mut until: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut messages = Vec::new();
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        let Ok(len) = socket.recv(&mut buffer) else {
            break;
        };
        let message = String::from_utf8_lossy(&buffer[..len]).into_owned();
        let done = until(&message);
        messages.push(message);
        if done {
            break;
        }
    }
    messages
}

#[test]
fn the_daemon_tells_systemd_when_it_serves_reloads_and_lives() {
    let lab = Lab::new().expect("lab");
    let _http1 = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let socket_path = lab.work_dir().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("the notify socket");
    let lb1 = lab.host(LB1);
    let config = format!(
        "{}\n[[service]]\nname = \"web\"\nlisten = \"{VIP}:80\"\nbackends = [\"{}:80\"]\n",
        TandemNode::vrrp_config(&lab, lb1, &VrrpSettings::new(3, 101)),
        lab.host(HTTP1).ip
    );
    let watchdog_usec = "400000";
    let node = TandemNode::start_with_env(
        &lab,
        lb1,
        &config,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().expect("a UTF-8 path")),
            ("WATCHDOG_USEC", watchdog_usec),
        ],
    )
    .expect("tandem run");

    let started = receive_until(&socket, Duration::from_secs(20), |message| {
        message.lines().any(|line| line == "READY=1")
    });
    let ready = started
        .iter()
        .find(|message| message.lines().any(|line| line == "READY=1"))
        .unwrap_or_else(|| panic!("no READY=1 in {started:?}\n{}", node.log_text()));
    assert!(
        ready.contains("STATUS=VI_1 "),
        "READY=1 carries the VRRP state: {ready:?}"
    );
    // Ready means serving: the proxy accepts already (on lb1's own view of the VIP once it
    // is master; its listener is bound from the start, IP_FREEBIND).
    tandem_lab::pair::wait_for_sole_master(&lab, LB1, Duration::from_secs(10))
        .expect("lb1 becomes master");
    wait_for_tcp(
        lab.host(CLIENT),
        SocketAddr::V4(SocketAddrV4::new(VIP, 80)),
        Duration::from_secs(5),
    )
    .expect("the proxy accepts");

    // The state change to master shows in STATUS=.
    let statuses = receive_until(&socket, Duration::from_secs(5), |message| {
        message.contains("STATUS=VI_1 master")
    });
    assert!(
        statuses.iter().any(|m| m.contains("STATUS=VI_1 master")),
        "the status follows the VRRP state: {statuses:?}"
    );

    // WATCHDOG=1 at half of WATCHDOG_USEC (0.2 s): at least 5 in 2 s.
    let from = Instant::now();
    let mut keepalives = 0;
    receive_until(&socket, Duration::from_secs(2), |message| {
        if message.lines().any(|line| line == "WATCHDOG=1") {
            keepalives += 1;
        }
        false
    });
    assert!(
        keepalives >= 5,
        "{keepalives} WATCHDOG=1 in {:?} at a 0.2 s interval",
        from.elapsed()
    );

    // A reload: RELOADING=1 with the monotonic time, then READY=1.
    let output = node.reload(&config).expect("tandem reload");
    assert!(output.status.success(), "{output:?}");
    let reload = receive_until(&socket, Duration::from_secs(5), |message| {
        message.lines().any(|line| line == "READY=1")
    });
    let reloading = reload
        .iter()
        .position(|m| m.lines().any(|line| line == "RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1 in {reload:?}"));
    assert!(
        reload[reloading]
            .lines()
            .any(|line| line.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 carries MONOTONIC_USEC: {:?}",
        reload[reloading]
    );
    assert!(
        reload[reloading..]
            .iter()
            .any(|m| m.lines().any(|line| line == "READY=1")),
        "READY=1 follows RELOADING=1: {reload:?}"
    );
}

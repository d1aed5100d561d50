//! The lab itself: the topology is what DESIGN.md draws, backends answer over it, and a lab
//! leaves nothing behind — when dropped, when a test panics, and beside another lab. Needs root.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use tandem_lab::{
    http_get, wait_for_tcp, Apache, EchoBackend, Host, Lab, CLIENT, HTTP1, HTTP2, LB1, LB2, VIP,
};

const ECHO_BIN: &str = env!("CARGO_BIN_EXE_tandem-echo");
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn start_echo(host: &Host, port: u16, name: &str) -> anyhow::Result<EchoBackend> {
    EchoBackend::start_with_binary(Path::new(ECHO_BIN), host, port, name)
}

fn socket(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// The names `ip netns list` shows.
fn netns_list() -> anyhow::Result<Vec<String>> {
    let output = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .context("running `ip netns list`")?;
    anyhow::ensure!(output.status.success(), "`ip netns list` failed");
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// The addresses on a host's eth0 as `family address/prefix`, e.g. `inet 198.18.0.10/24`.
fn addresses(host: &Host) -> anyhow::Result<Vec<String>> {
    let json = host.run("ip", &["-json", "addr", "show", "dev", &host.iface])?;
    let links: serde_json::Value = serde_json::from_str(&json)?;
    let infos = links[0]["addr_info"]
        .as_array()
        .context("no addr_info in `ip -json addr`")?;
    Ok(infos
        .iter()
        .map(|info| format!("{} {}/{}", info["family"], info["local"], info["prefixlen"]))
        .map(|text| text.replace('"', ""))
        .collect())
}

fn process_running(pid: u32) -> bool {
    // A killed process may linger as a zombie until its parent reaps it: that is not running.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn client_reaches_every_host_over_the_bridge_at_its_address() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let expected = [
        (CLIENT, Ipv4Addr::new(198, 18, 0, 10)),
        (LB1, Ipv4Addr::new(198, 18, 0, 100)),
        (LB2, Ipv4Addr::new(198, 18, 0, 101)),
        (HTTP1, Ipv4Addr::new(198, 18, 0, 102)),
        (HTTP2, Ipv4Addr::new(198, 18, 0, 103)),
    ];
    assert_eq!(lab.hosts().count(), expected.len());
    for (name, ip) in expected {
        let host = lab.host(name);
        assert_eq!(host.ip, ip, "address of {name}");
        // Exactly the /24 on the segment: no IPv6 (it is disabled) and no VIP (Tandem adds it).
        assert_eq!(
            addresses(host)?,
            [format!("inet {ip}/24")],
            "eth0 of {name}"
        );
        assert_ne!(host.ip, VIP);
    }

    // Every host listens; the client connects to each one over the bridge.
    let listeners = lab
        .hosts()
        .map(|host| {
            let addr = socket(host.ip, 9000);
            host.in_netns(|| TcpListener::bind(addr))?
                .with_context(|| format!("listening on {addr} on {}", host.name))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let client = lab.host(CLIENT);
    for host in lab.hosts() {
        wait_for_tcp(client, socket(host.ip, 9000), CONNECT_TIMEOUT)?;
    }
    drop(listeners);

    // The client learnt each peer's real MAC: the frames went over the bridge, not a shortcut.
    let neighbours = client.run("ip", &["neigh", "show", "dev", "eth0"])?;
    for host in lab.hosts().filter(|host| host.name != CLIENT) {
        let mac = host
            .mac()?
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let entry = format!("{} lladdr {mac}", host.ip);
        assert!(
            neighbours.contains(&entry),
            "client has no neighbour entry {entry:?}: {neighbours}"
        );
    }

    // The bridge has one port per host, with the advertised names.
    let ports = Command::new("ip")
        .args(["-n", lab.bridge_netns(), "-brief", "link", "show", "master"])
        .arg(lab.bridge())
        .output()?;
    let ports = String::from_utf8_lossy(&ports.stdout);
    for host in lab.hosts() {
        let port = lab.bridge_port(&host.name);
        assert!(
            ports.contains(&port),
            "no port {port} on the bridge: {ports}"
        );
    }
    Ok(())
}

#[test]
fn echo_backend_answers_the_client_with_its_name_and_the_headers_it_sent() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let mut echo = start_echo(lab.host(HTTP1), 80, "http1")?;
    let client = lab.host(CLIENT);
    let addr = SocketAddr::V4(echo.addr());
    assert_eq!(addr, socket(lab.host(HTTP1).ip, 80));

    let response = http_get(
        client,
        addr,
        "/app?set-cookie=JSESSIONID=abc123",
        &[("X-Test", "hello from the client")],
    )?;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("X-Backend"), Some("http1"));
    assert_eq!(response.header("Content-Type"), Some("text/plain"));
    assert_eq!(
        response.header("Set-Cookie"),
        Some("JSESSIONID=abc123; Path=/")
    );
    let mut lines = response.body.lines();
    assert_eq!(lines.next(), Some("backend http1"));
    assert_eq!(
        lines.next(),
        Some("GET /app?set-cookie=JSESSIONID=abc123 HTTP/1.1")
    );
    assert!(
        response
            .body
            .lines()
            .any(|line| line == "x-test: hello from the client"),
        "header not echoed: {}",
        response.body
    );

    for size in [1024, 100 * 1024] {
        let response = http_get(client, addr, &format!("/size/{size}"), &[])?;
        assert_eq!(response.status, 200);
        assert_eq!(response.body.len(), size);
    }

    echo.stop();
    assert!(
        http_get(client, addr, "/", &[]).is_err(),
        "a stopped backend still answers"
    );
    Ok(())
}

#[test]
fn two_apaches_run_side_by_side_and_log_the_forwarded_client_address() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let client = lab.host(CLIENT);
    let mut apaches = [
        Apache::start(&lab, lab.host(HTTP1), 80, "http1")?,
        Apache::start(&lab, lab.host(HTTP2), 80, "http2")?,
    ];
    let forwarded_for = ["198.18.1.1", "198.18.1.2"];

    for (apache, (name, forwarded)) in apaches
        .iter()
        .zip([HTTP1, HTTP2].into_iter().zip(forwarded_for))
    {
        let response = http_get(
            client,
            SocketAddr::V4(apache.addr()),
            "/",
            &[("X-Forwarded-For", forwarded)],
        )?;
        assert_eq!(response.status, 200);
        assert_eq!(response.body, format!("backend {name}\n"));
        assert_eq!(response.header("X-Backend"), Some(name));

        let log = apache.wait_for_access_log(1, CONNECT_TIMEOUT)?;
        assert_eq!(log.len(), 1, "{name}: {log:?}");
        // The classic format: `XFF - - [time] "request" status bytes`.
        assert!(
            log[0].starts_with(&format!("{forwarded} - - ["))
                && log[0].ends_with("] \"GET / HTTP/1.1\" 200 14"),
            "{name} logged {:?}",
            log[0]
        );
    }

    // A restarted Apache serves again with the same configuration and keeps its log.
    apaches[0].restart()?;
    let response = http_get(client, SocketAddr::V4(apaches[0].addr()), "/size/1024", &[])?;
    assert_eq!(response.status, 200);
    assert_eq!(response.body.len(), 1024);
    assert_eq!(apaches[0].wait_for_access_log(2, CONNECT_TIMEOUT)?.len(), 2);

    for apache in &mut apaches {
        apache.stop()?;
        assert!(!apache.is_running());
    }
    Ok(())
}

#[test]
fn a_dropped_lab_leaves_no_namespace_process_or_directory_behind() -> anyhow::Result<()> {
    let lab = Lab::new()?;
    let namespaces = lab.netns_names();
    let pin_dir = lab.pin_dir(LB1);
    let work_dir = lab.work_dir().to_owned();
    assert!(netns_list()?.iter().any(|name| namespaces.contains(name)));
    fs::create_dir(&pin_dir).with_context(|| format!("creating {}", pin_dir.display()))?;
    fs::write(work_dir.join("some.conf"), "x")?;
    // A daemon nobody owns (it detached), as a crashed test would leave it.
    let orphan: u32 = lab
        .host(LB1)
        .run("sh", &["-c", "sleep 60 >/dev/null 2>&1 & echo $!"])?
        .trim()
        .parse()?;
    assert!(process_running(orphan));

    drop(lab);

    let remaining = netns_list()?;
    assert!(
        namespaces.iter().all(|name| !remaining.contains(name)),
        "namespaces left: {remaining:?}"
    );
    assert!(!pin_dir.exists(), "{} left", pin_dir.display());
    assert!(!work_dir.exists(), "{} left", work_dir.display());
    assert!(
        !process_running(orphan),
        "process {orphan} survived the lab"
    );
    Ok(())
}

#[test]
fn a_lab_is_torn_down_when_the_test_panics_inside() -> anyhow::Result<()> {
    let seen: Mutex<Option<(Vec<String>, PathBuf)>> = Mutex::new(None);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::new().expect("building the lab");
        if let Ok(mut seen) = seen.lock() {
            *seen = Some((lab.netns_names(), lab.work_dir().to_owned()));
        }
        panic!("a deliberate panic inside a test that holds a lab");
    }));
    assert!(outcome.is_err(), "the closure was meant to panic");

    let (namespaces, work_dir) = seen
        .into_inner()
        .ok()
        .flatten()
        .context("the lab was never built")?;
    let remaining = netns_list()?;
    assert!(
        namespaces.iter().all(|name| !remaining.contains(name)),
        "namespaces left after the panic: {remaining:?}"
    );
    assert!(!work_dir.exists(), "{} left", work_dir.display());
    Ok(())
}

#[test]
fn two_labs_exist_at_once_without_clashing() -> anyhow::Result<()> {
    let first = Lab::new()?;
    let second = Lab::new()?;
    assert_ne!(first.id(), second.id());
    // Same addresses and ports in both: each lab is its own segment.
    let _first_echo = start_echo(first.host(HTTP1), 80, "first")?;
    let _second_echo = start_echo(second.host(HTTP1), 80, "second")?;
    for (lab, name) in [(&first, "first"), (&second, "second")] {
        let response = http_get(lab.host(CLIENT), socket(lab.host(HTTP1).ip, 80), "/", &[])?;
        assert_eq!(response.header("X-Backend"), Some(name));
    }
    Ok(())
}

#[test]
fn leftovers_of_a_killed_run_are_removed_by_the_next_lab() -> anyhow::Result<()> {
    // A run whose process is gone: take the pid of a process that has just exited.
    let mut finished = Command::new("true").spawn()?;
    let dead_pid = finished.id();
    finished.wait()?;
    let stale_id = format!("tdm{dead_pid}x0");
    let stale_netns = format!("{stale_id}-lb1");
    let stale_work_dir = std::env::temp_dir().join(&stale_id);
    let stale_pin_dir = Path::new("/sys/fs/bpf").join(&stale_netns);

    let created = Command::new("ip")
        .args(["netns", "add", &stale_netns])
        .status()?;
    anyhow::ensure!(created.success(), "creating {stale_netns}");
    fs::create_dir_all(&stale_work_dir)?;
    fs::create_dir_all(&stale_pin_dir)?;
    let daemon = Command::new("nsenter")
        .arg(format!("--net=/var/run/netns/{stale_netns}"))
        .args(["--", "sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"])
        .output()?;
    let daemon: u32 = String::from_utf8_lossy(&daemon.stdout).trim().parse()?;

    let _lab = Lab::new()?;

    assert!(!netns_list()?.contains(&stale_netns), "{stale_netns} left");
    assert!(
        !stale_work_dir.exists(),
        "{} left",
        stale_work_dir.display()
    );
    assert!(!stale_pin_dir.exists(), "{} left", stale_pin_dir.display());
    assert!(!process_running(daemon), "a stale lab's process survived");
    Ok(())
}

#[test]
fn a_dual_stack_lab_gives_every_host_2001_2_n_and_the_client_reaches_each_over_ipv6(
) -> anyhow::Result<()> {
    let lab = Lab::dual_stack()?;
    let client = lab.host(CLIENT);
    for host in lab.hosts() {
        let ip6 = host
            .ip6
            .context("every host of a dual-stack lab has an IPv6 address")?;
        assert_eq!(ip6, tandem_lab::ipv6_of(host.ip));
        let shown = host.run("ip", &["-6", "-o", "addr", "show", "dev", &host.iface])?;
        assert!(
            shown.contains(&format!("inet6 {ip6}/64")) && !shown.contains("tentative"),
            "{} has {ip6}/64, usable at once (no duplicate address detection): {shown}",
            host.name
        );
        if host.name != CLIENT {
            client
                .run("ping", &["-6", "-c", "1", "-W", "2", &ip6.to_string()])
                .with_context(|| format!("the client pings {} at {ip6}", host.name))?;
        }
    }
    assert_eq!(
        lab.host(HTTP1).ip6.map(|ip| ip.to_string()),
        Some("2001:2::102".into())
    );
    Ok(())
}

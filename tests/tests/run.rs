//! `tandem run` on a lab node: it starts, logs what it loaded, attaches the XDP program to the
//! node's interface, and on SIGTERM or SIGINT exits 0. The program and its pinned maps stay, so
//! that a restarted daemon keeps established L4 flows; `tandem xdp detach` removes them all.

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tandem_lab::{tandem_binary, Host, Lab, LB1};

fn node_config(pin_dir: &Path, control_socket: &Path) -> String {
    format!(
        r#"[node]
name = "lb1"
interface = "eth0"
dataplane = "xdp-generic"
bpf_pin_dir = "{}"
control_socket = "{}"

[[vrrp]]
name = "VI_1"
virtual_router_id = 51
priority = 101
virtual_ipaddress = ["198.18.0.99"]

[[service]]
name = "web"
listen = "198.18.0.99:80"
backends = ["198.18.0.102:80", "198.18.0.103:80"]
"#,
        pin_dir.display(),
        control_socket.display()
    )
}

fn attached_interfaces(pin_dir: &Path) -> Option<Vec<String>> {
    let output = std::process::Command::new(tandem_binary().ok()?)
        .args(["maps", "--json", "--pin-dir"])
        .arg(pin_dir)
        .output()
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    Some(
        json["attached"]
            .as_array()?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
    )
}

fn xdp_attached(host: &Host) -> bool {
    host.run("ip", &["-json", "-details", "link", "show", "dev", "eth0"])
        .map(|json| json.contains("\"xdp\""))
        .unwrap_or(false)
}

fn runs_and_stops_cleanly_on(signal: i32, signal_name: &str) {
    let lab = Lab::new().expect("lab");
    let lb1 = lab.host(LB1);
    let pin_dir = lab.pin_dir(LB1);
    let config = lab.work_dir().join("lb1.toml");
    std::fs::write(
        &config,
        node_config(&pin_dir, &lab.work_dir().join("tandem.sock")),
    )
    .expect("write config");
    let log_path = lab.work_dir().join("tandem.log");
    let log = File::create(&log_path).expect("log file");

    let mut command = lb1.command(tandem_binary().expect("tandem binary"));
    command
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log);
    let mut node = lb1.spawn(command).expect("start tandem run");

    let deadline = Instant::now() + Duration::from_secs(10);
    while attached_interfaces(&pin_dir) != Some(vec!["eth0".to_owned()]) {
        assert!(
            node.is_running(),
            "tandem run exited early: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        assert!(
            Instant::now() < deadline,
            "the XDP program was not attached within 10s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        xdp_attached(lb1),
        "the kernel shows an XDP program on lb1's eth0"
    );

    node.kill(signal);
    let status = node
        .wait_exit(Duration::from_secs(10))
        .expect("tandem run exits after the signal");
    assert!(
        status.success(),
        "tandem run exits 0 on {signal_name}: {status}"
    );
    let log = std::fs::read_to_string(&log_path).expect("read log");
    for expected in [
        "loaded configuration",
        "service=web",
        "XDP data plane attached",
        signal_name,
        "leaving the XDP program attached",
        "stopped",
    ] {
        assert!(log.contains(expected), "the log says {expected:?}:\n{log}");
    }
    assert!(xdp_attached(lb1), "the program stays for the next start");
    let detached = lb1
        .command(tandem_binary().expect("tandem binary"))
        .args(["xdp", "detach", "--iface", "eth0", "--pin-dir"])
        .arg(&pin_dir)
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    assert!(detached, "tandem xdp detach succeeds");
    assert!(!xdp_attached(lb1), "no XDP program is left on lb1's eth0");
    assert!(!pin_dir.exists(), "no pins are left behind");
}

#[test]
fn run_attaches_the_data_plane_and_stops_cleanly_on_sigterm() {
    runs_and_stops_cleanly_on(libc::SIGTERM, "SIGTERM");
}

#[test]
fn run_attaches_the_data_plane_and_stops_cleanly_on_sigint() {
    runs_and_stops_cleanly_on(libc::SIGINT, "SIGINT");
}

#[test]
fn run_with_a_bad_config_changes_nothing_and_exits_1() {
    let lab = Lab::new().expect("lab");
    let lb1 = lab.host(LB1);
    let pin_dir = lab.pin_dir(LB1);
    let config = lab.work_dir().join("bad.toml");
    std::fs::write(
        &config,
        node_config(&pin_dir, &lab.work_dir().join("tandem.sock"))
            .replace("priority = 101", "priority = 0"),
    )
    .expect("write");
    let output = lb1
        .command(tandem_binary().expect("tandem binary"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run tandem");
    assert_eq!(output.status.code(), Some(1));
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains(&format!("{}:11:12: ", config.display())),
        "{message}"
    );
    assert!(
        !xdp_attached(lb1) && !pin_dir.exists(),
        "nothing was attached or pinned"
    );
}

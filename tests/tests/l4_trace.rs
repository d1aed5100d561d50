//! `tandem trace` against a running node: lb1 forwards an L4 TCP service by XDP (the data
//! plane runs in-process in lb1's namespace, as in l4_forwarding), and the real `tandem trace`
//! binary, started in lb1's namespace, prints the program's decision for each packet of the
//! traced service while `tandem maps` says tracing is on; it turns tracing off when its time
//! is up, on Ctrl-C, and a killed trace's flag is taken over by the next one.

mod l4_common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use l4_common::{eventually, L4Lab, Node, TCP_PORT, UDP_PORT};
use tandem_lab::l4::take_vip;
use tandem_lab::process::Process;
use tandem_lab::{Host, LB1, VIP};

/// `tandem trace ARGS` in `host`'s namespace, its stdout and stderr in files of the lab.
fn start_trace(l4: &L4Lab, node: &Node, name: &str, args: &[&str]) -> (Process, PathBuf, PathBuf) {
    let out = l4.lab.work_dir().join(format!("{name}.out"));
    let err = l4.lab.work_dir().join(format!("{name}.err"));
    let mut command = l4
        .host(LB1)
        .command(tandem_lab::tandem_binary().expect("tandem binary"));
    command
        .arg("trace")
        .args(args)
        .arg("--pin-dir")
        .arg(&node.pin_dir)
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err).unwrap()));
    let process = l4.host(LB1).spawn(command).expect("start tandem trace");
    (process, out, err)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn tracing(node: &Node, host: &Host) -> serde_json::Value {
    node.maps_json(host)["tracing"].clone()
}

fn maps_text(node: &Node, host: &Host) -> String {
    let output = host
        .command(tandem_lab::tandem_binary().expect("tandem binary"))
        .args(["maps", "--pin-dir"])
        .arg(&node.pin_dir)
        .output()
        .expect("tandem maps");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn tandem_trace_prints_each_decision_of_the_traced_service_then_turns_tracing_off() {
    let l4 = L4Lab::new();
    let node = Node::open(&l4, LB1, "xdp-generic");
    node.activate();
    take_vip(l4.host(LB1), VIP).expect("VIP on lb1");
    let lb1 = l4.host(LB1);
    // The backends' MACs are resolved once a connection goes through.
    assert!(
        eventually(Duration::from_secs(10), || l4.ask_once(None).is_ok()),
        "the L4 service answers through lb1"
    );
    assert_eq!(tracing(&node, lb1)["state"], "off");
    assert!(maps_text(&node, lb1).contains("\ntracing   off\n"));

    let vip = VIP.to_string();
    let tcp_port = TCP_PORT.to_string();
    let (mut trace, out, err) = start_trace(
        &l4,
        &node,
        "trace",
        &["--vip", &vip, "--port", &tcp_port, "--seconds", "6"],
    );
    assert!(
        eventually(Duration::from_secs(5), || tracing(&node, lb1)["state"]
            == "on"),
        "tandem maps shows the trace: {}",
        read(&err)
    );
    let on = tracing(&node, lb1);
    assert_eq!(on["vip"], VIP.to_string(), "{on}");
    assert_eq!(on["port"], TCP_PORT, "{on}");
    assert_eq!(on["pid"], trace.pid(), "{on}");
    let text = maps_text(&node, lb1);
    assert!(
        text.contains(&format!("tracing   on (vip {VIP}, port {TCP_PORT}, since ")),
        "{text}"
    );

    // A second trace is refused while the first runs, and leaves its flag alone.
    let second = lb1
        .command(tandem_lab::tandem_binary().expect("tandem binary"))
        .args(["trace", "--seconds", "1", "--pin-dir"])
        .arg(&node.pin_dir)
        .output()
        .expect("a second tandem trace");
    let second_err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{second_err}");
    assert!(
        second_err.contains("another `tandem trace` is running"),
        "{second_err}"
    );
    assert_eq!(tracing(&node, lb1)["pid"], trace.pid());

    // One connection of two questions (new, then hits), and a UDP question to the other
    // port, which is not traced.
    let client_port = 42100;
    let mut conversation = l4.converse(Some(client_port)).expect("connect");
    l4.ask(&mut conversation).expect("first question");
    l4.ask(&mut conversation).expect("second question");
    drop(conversation);
    l4.ask_udp(42101).expect("UDP question");
    let backend = l4
        .host(l4.expected(&node.config, "who", client_port, &[]))
        .ip;

    let status = trace
        .wait_exit(Duration::from_secs(15))
        .expect("tandem trace ends by itself after --seconds");
    let output = read(&out);
    println!("{output}");
    assert!(status.success(), "{}", read(&err));
    assert_eq!(
        tracing(&node, lb1)["state"],
        "off",
        "tracing is off once the trace ends"
    );

    let flow = format!(
        "{}:{client_port} -> {VIP}:{TCP_PORT}/tcp",
        l4.host(tandem_lab::CLIENT).ip
    );
    let lines: Vec<&str> = output.lines().collect();
    assert!(
        lines.len() >= 4,
        "SYN, the questions, FIN: one line per packet of the flow\n{output}"
    );
    assert!(lines.iter().all(|line| line.contains(&flow)), "{output}");
    let first_line = lines[0];
    assert!(
        first_line.contains("  tx    flow_new")
            && first_line.contains(&format!("backend {backend}:{TCP_PORT} (id "))
            && first_line.ends_with("  new"),
        "the first packet is a new flow sent to the backend Maglev chose: {first_line}"
    );
    for line in &lines[1..] {
        assert!(
            line.contains("  tx    flow_hit")
                && line.contains(&format!("backend {backend}:{TCP_PORT}"))
                && line.ends_with("  hit"),
            "the flow's later packets hit the connection table: {line}"
        );
    }
    assert!(
        !output.contains(&format!(":{UDP_PORT}")),
        "the other port is not traced: {output}"
    );
    assert!(
        read(&err).contains(&format!("{} decision(s) traced", lines.len())),
        "{}",
        read(&err)
    );

    // Ctrl-C ends a trace at once and turns tracing off.
    let (mut interrupted, _, err) = start_trace(&l4, &node, "interrupted", &["--seconds", "60"]);
    assert!(
        eventually(Duration::from_secs(5), || tracing(&node, lb1)["state"]
            == "on"),
        "{}",
        read(&err)
    );
    interrupted.kill(libc::SIGINT);
    let status = interrupted
        .wait_exit(Duration::from_secs(3))
        .expect("Ctrl-C ends tandem trace");
    assert!(status.success(), "{}", read(&err));
    assert_eq!(tracing(&node, lb1)["state"], "off");

    // A killed trace cannot clean up: maps says so, and the next trace takes over.
    let (mut killed, _, err) = start_trace(&l4, &node, "killed", &["--seconds", "60"]);
    assert!(
        eventually(Duration::from_secs(5), || tracing(&node, lb1)["state"]
            == "on"),
        "{}",
        read(&err)
    );
    killed.kill(libc::SIGKILL);
    killed.wait_exit(Duration::from_secs(3)).expect("killed");
    let stale = tracing(&node, lb1);
    assert_eq!(
        (stale["state"].as_str(), stale["running"].as_bool()),
        (Some("on"), Some(false)),
        "{stale}"
    );
    assert!(maps_text(&node, lb1).contains("that process is gone"));
    let (mut next, _, err) = start_trace(&l4, &node, "next", &["--seconds", "1"]);
    let status = next.wait_exit(Duration::from_secs(10)).expect("next trace");
    assert!(status.success(), "{}", read(&err));
    assert_eq!(tracing(&node, lb1)["state"], "off");
    node.shutdown();
}

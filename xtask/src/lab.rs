//! `cargo xtask lab`: the main job, the reference HA pair on this machine for a person to try.
//!
//! Builds the lab of the tests (tandem_lab): two Apache backends with the same content on http1
//! and http2 (plus a TCP "who" server on port 7000 each, as direct-server-return backends for
//! the VIP), and two Tandem nodes, lb1 (priority 101) and lb2 (100), serving an L7 service with
//! JSESSIONID affinity on 198.18.0.99:80 and an L4 TCP service on 198.18.0.99:7000. The lab is
//! dual-stack: every host also has 2001:2::N/64, a second VRRP instance (over IPv6) floats the
//! VIP 2001:2::99, and the same L7 service listens there too, to the backends' IPv6 addresses.
//! It prints a guided tour and then reads commands from the terminal (stop/start a backend or a
//! node, status) so the classic test can be replayed. `quit`, end of input, Ctrl-C or SIGTERM tear everything
//! down (the lab's Drop does it).

pub mod active_active;

use std::io::BufRead as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use anyhow::Context as _;
use tandem_lab::l4::{make_dsr_backend, WhoServer};
use tandem_lab::pair::{
    holders, wait_for_sole_holder, wait_for_sole_master, wait_until, TandemNode, VrrpSettings,
};
use tandem_lab::{Apache, Lab, CLIENT, HTTP1, HTTP2, LB1, LB2, VIP, VIP6};

const L4_PORT: u16 = 7000;
/// Where each lab node serves its Prometheus metrics (on its own address).
pub const METRICS_PORT: u16 = 9469;

fn node_config(lab: &Lab, host: &str, priority: u8) -> String {
    let vrrp = TandemNode::vrrp_config(lab, lab.host(host), &VrrpSettings::new(3, priority))
        .replace(
            "dataplane = \"none\"",
            &format!(
            "dataplane = \"xdp-generic\"\nbpf_pin_dir = \"{}\"\nmetrics = \"{}:{METRICS_PORT}\"",
            lab.pin_dir(host).display(),
            lab.host(host).ip
        ),
        );
    format!(
        r#"{vrrp}track = [{{ builtin = "proxy", weight = 2 }}]

[[service]]
name = "web"
listen = "{VIP}:80"
mode = "http"
backends = ["{http1}:80", "{http2}:80"]
health = {{ interval = "2s" }}
session = {{ type = "cookie", id = "JSESSIONID", ttl = "300s" }}

[[service]]
name = "tcp-who"
listen = "{VIP}:{L4_PORT}"
mode = "tcp"
backends = ["{http1}:{L4_PORT}", "{http2}:{L4_PORT}"]

# The IPv6 VIP floats with an instance of its own (one family per instance, as in keepalived;
# VRRP over IPv6 is version 3), and the same site is served there.
[[vrrp]]
name = "VI_6"
virtual_router_id = 51
priority = {priority}
virtual_ipaddress = ["{VIP6}"]
track = [{{ builtin = "proxy", weight = 2 }}]

[[service]]
name = "web6"
listen = "[{VIP6}]:80"
mode = "http"
backends = ["[{http1_6}]:80", "[{http2_6}]:80"]
health = {{ interval = "2s" }}
session = {{ type = "cookie", id = "JSESSIONID", ttl = "300s" }}
"#,
        http1 = lab.host(HTTP1).ip,
        http2 = lab.host(HTTP2).ip,
        http1_6 = ipv6(lab, HTTP1),
        http2_6 = ipv6(lab, HTTP2),
    )
}

/// A host's IPv6 address in the dual-stack lab.
fn ipv6(lab: &Lab, host: &str) -> std::net::Ipv6Addr {
    lab.host(host)
        .ip6
        .expect("the lab is dual-stack: every host has an IPv6 address")
}

struct Pair {
    nodes: [(String, Option<TandemNode>); 2],
    backends: [(String, Apache); 2],
}

pub fn run(root: &Path) -> anyhow::Result<()> {
    let stop = prepare(root)?;
    let lab = Lab::dual_stack()?;
    let mut who = Vec::new();
    let mut backends = Vec::new();
    for name in [HTTP1, HTTP2] {
        let host = lab.host(name);
        backends.push((name.to_owned(), Apache::start(&lab, host, 80, name)?));
        make_dsr_backend(host, VIP)?;
        who.push(WhoServer::start(host, L4_PORT, Some(VIP), name)?);
    }
    let [first, second] = <[(String, Apache); 2]>::try_from(backends)
        .map_err(|_| anyhow::anyhow!("two backends expected"))?;
    let mut pair = Pair {
        nodes: [
            (
                LB1.to_owned(),
                Some(TandemNode::start(
                    &lab,
                    lab.host(LB1),
                    &node_config(&lab, LB1, 101),
                )?),
            ),
            (
                LB2.to_owned(),
                Some(TandemNode::start(
                    &lab,
                    lab.host(LB2),
                    &node_config(&lab, LB2, 100),
                )?),
            ),
        ],
        backends: [first, second],
    };
    // The tour starts once the pair has elected lb1, so its first command sees a master.
    println!("waiting for the pair to elect lb1 (master down interval: about 3.6 s)...");
    let elected = wait_for_sole_master(&lab, LB1, Duration::from_secs(20)).and_then(|took| {
        let took6 = wait_for_sole_holder(&lab, LB1, VIP6, Duration::from_secs(20))?;
        Ok(took.max(took6))
    });
    match elected {
        Ok(took) => println!(
            "lb1 holds the VIPs {VIP} and {VIP6} after {:.1} s",
            took.as_secs_f64()
        ),
        Err(err) => println!("{err:#}; `status` shows each node's state and last log lines"),
    }
    tour(&lab, &pair);

    prompt_loop(&stop, |line| command(&lab, &mut pair, line));
    println!("\ntearing down the lab {}", lab.id());
    drop(pair);
    drop(who);
    drop(lab);
    Ok(())
}

/// The tandem binary the lab runs (the release build), as the tour's commands name it.
fn tandem_bin() -> String {
    std::env::var("TANDEM_BIN").unwrap_or_else(|_| "tandem".to_owned())
}

/// `stop|start http1|http2`, the same in both labs: stops or starts that Apache.
fn backend_command(
    backends: &mut [(String, Apache)],
    verb: &str,
    backend: &str,
) -> anyhow::Result<()> {
    let Some((_, apache)) = backends.iter_mut().find(|(name, _)| name == backend) else {
        return Ok(());
    };
    if verb == "stop" {
        apache.stop()?;
    } else {
        apache.restart()?;
    }
    println!("{verb} {backend}: done");
    Ok(())
}

/// What both labs set first: the binaries they run (the release build) and the Ctrl-C
/// handler; the flag it returns is set on Ctrl-C or SIGTERM.
fn prepare(root: &Path) -> anyhow::Result<Arc<AtomicBool>> {
    std::env::set_var("TANDEM_ECHO_BIN", root.join("target/release/tandem-echo"));
    std::env::set_var("TANDEM_BIN", root.join("target/release/tandem"));
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    Ok(stop)
}

/// Reads command lines from the terminal and hands each (trimmed) to `command`, whose false
/// means quit, until then, the end of input, or `stop` (Ctrl-C, SIGTERM).
fn prompt_loop(stop: &AtomicBool, mut command: impl FnMut(&str) -> bool) {
    let (lines_tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    prompt();
    while !stop.load(Ordering::SeqCst) {
        match lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if !command(line.trim()) {
                    break;
                }
                prompt();
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
}

fn prompt() {
    use std::io::Write as _;
    print!("lab> ");
    let _ = std::io::stdout().flush();
}

fn tour(lab: &Lab, pair: &Pair) {
    let client = lab.host(CLIENT).netns_path();
    let exec = |host: &str| format!("nsenter --net={}", lab.host(host).netns_path().display());
    println!(
        "\nThe lab {} is up: one L2 segment, 198.18.0.0/24 and 2001:2::/64, on a bridge.\n",
        lab.id()
    );
    for host in lab.hosts() {
        println!(
            "  {:<7} {:<14} {:<12} netns {}",
            host.name,
            host.ip.to_string(),
            host.ip6.map(|ip6| ip6.to_string()).unwrap_or_default(),
            host.netns
        );
    }
    println!(
        "\nTandem runs on lb1 (priority 101) and lb2 (100); the VIPs {VIP} and {VIP6} are on the \
         master.\n\
         A guided tour, from another terminal:\n"
    );
    println!("  # the L7 service; which backend answered is in Apache's access log, and the");
    println!("  # JSESSIONID cookie keeps a session on one backend:");
    println!(
        "  nsenter --net={} curl -si http://{VIP}/",
        client.display()
    );
    println!("  # the same site over IPv6 (Apache logs the client as 2001:2::10):");
    println!(
        "  nsenter --net={} curl -si 'http://[{VIP6}]/'",
        client.display()
    );
    println!("  # the L4 service, forwarded in XDP by direct server return:");
    println!(
        "  nsenter --net={} bash -c 'exec 3<>/dev/tcp/{VIP}/{L4_PORT}; echo hi >&3; head -1 <&3'",
        client.display()
    );
    for (name, node) in &pair.nodes {
        if let Some(node) = node {
            println!(
                "  {} {} status --socket {}   # {name}",
                exec(name),
                tandem_bin(),
                node.socket.display()
            );
        }
    }
    for (name, apache) in &pair.backends {
        println!(
            "  tail -f {}   # {name}",
            apache.access_log_path().display()
        );
    }
    println!(
        "  # Prometheus metrics of each node (dashboard for Grafana: dist/grafana-dashboard.json):"
    );
    for (name, _) in &pair.nodes {
        println!(
            "  nsenter --net={} curl -s http://{}:{METRICS_PORT}/metrics | grep ^tandem_vrrp_state",
            client.display(),
            lab.host(name).ip
        );
    }
    if let Some((name, Some(node))) = pair.nodes.first() {
        println!("  # change a service live: edit {name}'s config, then reload it (a file with an");
        println!("  # error is refused with FILE:LINE:COL and the node keeps running):");
        println!(
            "  $EDITOR {}; {} reload --socket {}",
            node.config.display(),
            tandem_bin(),
            node.socket.display()
        );
    }
    println!(
        "\nThen replay the classic test here: `stop http1` (the other backend serves every \
         request), `stop lb1` (lb2 takes the VIP), `start lb1` (it takes it back). Commands:\n\
         \x20 stop|start http1|http2   stop (SIGTERM) / kill (SIGKILL) / start lb1|lb2\n\
         \x20 status                   who holds the VIP, and each node's state\n\
         \x20 quit                     tear everything down (Ctrl-C too)\n"
    );
}

/// Carries out one command line; false means quit.
fn command(lab: &Lab, pair: &mut Pair, line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    let result = match words.as_slice() {
        [] => Ok(()),
        ["quit" | "exit"] => return false,
        ["status"] => {
            println!("VIP {VIP} held by {:?}", holders(lab, VIP));
            println!("VIP {VIP6} held by {:?}", holders(lab, VIP6));
            for (name, node) in &pair.nodes {
                match node {
                    Some(node) => match node.status() {
                        Ok(status) => {
                            let vrrp = &status["vrrp"][0];
                            println!(
                                "  {name}: {} (priority {}), master {}",
                                vrrp["state"].as_str().unwrap_or("?"),
                                vrrp["effective_priority"],
                                vrrp["master"].as_str().unwrap_or("unknown")
                            );
                            // What this node's proxy thinks of the backends.
                            for service in status["services"].as_array().into_iter().flatten() {
                                let backends: Vec<String> = service["backends"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .map(|b| {
                                        format!(
                                            "{} {}",
                                            b["address"].as_str().unwrap_or("?"),
                                            if b["up"] == true { "up" } else { "down" }
                                        )
                                    })
                                    .collect();
                                println!(
                                    "    {}: {}",
                                    service["name"].as_str().unwrap_or("?"),
                                    backends.join(", ")
                                );
                            }
                        }
                        Err(err) => {
                            let log = node.log_text();
                            let tail: Vec<&str> = log.lines().rev().take(6).collect();
                            println!("  {name}: {err:#}; last log lines:");
                            for line in tail.iter().rev() {
                                println!("    {line}");
                            }
                        }
                    },
                    None => println!("  {name}: stopped"),
                }
            }
            Ok(())
        }
        [verb @ ("stop" | "start"), backend @ ("http1" | "http2")] => {
            backend_command(&mut pair.backends, verb, backend)
        }
        [verb @ ("stop" | "kill" | "start"), node @ ("lb1" | "lb2")] => {
            node_command(lab, pair, verb, node)
        }
        _ => {
            println!("unknown command {line:?}");
            Ok(())
        }
    };
    if let Err(err) = result {
        println!("{line}: {err:#}");
    }
    true
}

fn node_command(lab: &Lab, pair: &mut Pair, verb: &str, name: &str) -> anyhow::Result<()> {
    let priority = if name == LB1 { 101 } else { 100 };
    let Some((_, slot)) = pair.nodes.iter_mut().find(|(n, _)| n == name) else {
        return Ok(());
    };
    match (verb, slot.take()) {
        ("start", Some(node)) => {
            println!("{name} is already running");
            *slot = Some(node);
        }
        ("start", None) => {
            *slot = Some(TandemNode::start(
                lab,
                lab.host(name),
                &node_config(lab, name, priority),
            )?);
            println!("started {name}; with preemption it takes the VIP back if it has the higher priority");
        }
        ("stop", Some(mut node)) => {
            node.process.terminate(Duration::from_secs(5))?;
            println!("stopped {name} (SIGTERM: it sent priority 0 and released the VIP)");
        }
        ("kill", Some(mut node)) => {
            node.crash_under_systemd(lab)?;
            println!(
                "killed {name} (SIGKILL: the backup takes over after 3 x advert + skew); as \
                 tandem.service's ExecStopPost, tandem-release-vips removed the VIP it left"
            );
        }
        (_, None) => {
            println!("{name} is not running");
            return Ok(());
        }
        _ => return Ok(()),
    }
    report_vip_holder(lab, pair);
    Ok(())
}

/// After a node stopped or started: waits (at most 10 s) until the running node with the
/// highest priority alone holds the VIP, which is where VRRP must put it, and says how long
/// that took, so that the person replaying the test sees the failover time, not a snapshot
/// taken before the backup's timer ran out.
fn report_vip_holder(lab: &Lab, pair: &Pair) {
    // `nodes` is in priority order (lb1 101, lb2 100).
    let Some(expected) = pair
        .nodes
        .iter()
        .find(|(_, node)| node.is_some())
        .map(|(name, _)| name.clone())
    else {
        println!("no node runs: nobody holds the VIP {VIP}");
        return;
    };
    let limit = Duration::from_secs(10);
    for vip in [std::net::IpAddr::from(VIP), VIP6.into()] {
        let mut now = Vec::new();
        match wait_until(limit, "the VIP to settle", || {
            now = holders(lab, vip);
            now == [expected.clone()]
        }) {
            Ok(took) => println!(
                "{expected} holds the VIP {vip} ({:.2} s after the command)",
                took.as_secs_f64()
            ),
            Err(_) => println!(
                "after {} s the VIP {vip} is held by {now:?}, not by {expected} alone; \
                 `status` shows each node's state",
                limit.as_secs()
            ),
        }
    }
}

//! `cargo xtask lab --active-active`: three Tandem nodes announce the anycast VIP 198.18.2.99
//! over BGP to a router that runs BIRD and spreads the client's connections over them by ECMP.
//!
//! The lab of the tests (`Lab::active_active`): the client outside (198.18.1.10) behind the
//! router, lb1, lb2 and lb3 on the segment with two Apache backends (plus a TCP "who" server on
//! port 7000 each, direct-server-return backends for the L4 service). Every node serves the
//! same site on 198.18.2.99:80 (JSESSIONID sessions replicated among the three) and forwards
//! 198.18.2.99:7000 in XDP, sharing its connection table, and announces the VIP while it can
//! serve it. A tour, then a prompt to kill, freeze, stop, drain and restart nodes and watch the
//! router's next hops follow.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tandem_lab::anycast::{
    bgp_section, bird_pid, next_hops, replication_section, wait_for_next_hops, Router, HOLD_TIME,
};
use tandem_lab::l4::{make_dsr_backend, WhoServer};
use tandem_lab::pair::TandemNode;
use tandem_lab::{
    Apache, Host, Lab, ANYCAST_VIP, CLIENT, HTTP1, HTTP2, LB1, LB2, LB3, NODES_AS, ROUTER,
    ROUTER_AS,
};

const NODES: [&str; 3] = [LB1, LB2, LB3];
const L4_PORT: u16 = 7000;
const REPLICATION_PORT: u16 = 7946;

fn node_config(lab: &Lab, name: &str) -> String {
    let host = lab.host(name);
    let nodes: Vec<&Host> = NODES.iter().map(|n| lab.host(n)).collect();
    format!(
        r#"{node}bpf_pin_dir = "{pin_dir}"

[[service]]
name = "web"
listen = "{ANYCAST_VIP}:80"
mode = "http"
backends = ["{http1}:80", "{http2}:80"]
health = {{ interval = "2s" }}
session = {{ type = "cookie", id = "JSESSIONID", ttl = "300s" }}

[[service]]
name = "tcp-who"
listen = "{ANYCAST_VIP}:{L4_PORT}"
mode = "tcp"
backends = ["{http1}:{L4_PORT}", "{http2}:{L4_PORT}"]

# Sessions and L4 connection entries go to the other two nodes, so a connection or session
# the router moves to another node keeps its backend.
{replication}
# Announced to the router while this node can serve it; withdrawn on failure, drain and stop.
{bgp}"#,
        node = TandemNode::node_section(lab, host).replace(
            "dataplane = \"none\"",
            &format!(
                "dataplane = \"xdp-generic\"\nmetrics = \"{}:{}\"",
                host.ip,
                super::METRICS_PORT
            )
        ),
        pin_dir = lab.pin_dir(name).display(),
        http1 = lab.host(HTTP1).ip,
        http2 = lab.host(HTTP2).ip,
        replication = replication_section(host, &nodes, REPLICATION_PORT),
        bgp = bgp_section(lab, host),
    )
}

struct Cluster {
    nodes: Vec<(String, Option<TandemNode>)>,
    backends: Vec<(String, Apache)>,
    router: Router,
    /// Nodes that should not be next hops although they run: frozen or drained.
    away: std::collections::BTreeSet<String>,
    /// BIRD's pid of each frozen node (a frozen daemon cannot say it).
    frozen_birds: std::collections::BTreeMap<String, i32>,
}

pub fn run(root: &Path) -> anyhow::Result<()> {
    let stop = super::prepare(root)?;
    let lab = Lab::active_active()?;
    let mut who = Vec::new();
    let mut backends = Vec::new();
    for name in [HTTP1, HTTP2] {
        let host = lab.host(name);
        backends.push((name.to_owned(), Apache::start(&lab, host, 80, name)?));
        make_dsr_backend(host, ANYCAST_VIP)?;
        who.push(WhoServer::start(host, L4_PORT, Some(ANYCAST_VIP), name)?);
    }
    let hosts: Vec<&Host> = NODES.iter().map(|name| lab.host(name)).collect();
    let router = Router::start(&lab, &hosts)?;
    let mut nodes = Vec::new();
    for name in NODES {
        let node = TandemNode::start(&lab, lab.host(name), &node_config(&lab, name))?;
        nodes.push((name.to_owned(), Some(node)));
    }
    let mut cluster = Cluster {
        nodes,
        backends,
        router,
        away: Default::default(),
        frozen_birds: Default::default(),
    };
    println!("waiting for the three nodes to announce {ANYCAST_VIP} to the router...");
    match wait_for_next_hops(&lab, &NODES, Duration::from_secs(30)) {
        Ok(took) => println!(
            "the router has three next hops for {ANYCAST_VIP} after {:.1} s",
            took.as_secs_f64()
        ),
        Err(err) => println!("{err:#}; `status` shows each node's sessions"),
    }
    tour(&lab, &cluster);

    super::prompt_loop(&stop, |line| command(&lab, &mut cluster, line));
    println!("\ntearing down the lab {}", lab.id());
    drop(cluster);
    drop(who);
    drop(lab);
    Ok(())
}

fn tour(lab: &Lab, cluster: &Cluster) {
    let exec = |host: &str| format!("nsenter --net={}", lab.host(host).netns_path().display());
    println!(
        "\nThe active-active lab {} is up: the client outside (198.18.1.0/24), a router, and \
         the segment 198.18.0.0/24.\n",
        lab.id()
    );
    for host in lab.hosts() {
        println!(
            "  {:<7} {:<14} netns {}",
            host.name,
            host.ip.to_string(),
            host.netns
        );
    }
    println!(
        "\nlb1, lb2 and lb3 (AS {NODES_AS}) each announce {ANYCAST_VIP}/32 to the router (AS \
         {ROUTER_AS}, BIRD), which installs one next hop per node and hashes each connection \
         onto one. From another terminal:\n"
    );
    println!("  # the route, one next hop per node that can serve:");
    println!("  {} ip route show {ANYCAST_VIP}", exec(ROUTER));
    println!(
        "  birdc -s {} show protocols   # the router's BGP sessions",
        cluster.router.socket.display()
    );
    println!("  # the site; each new connection may reach another node (the access logs tell):");
    println!(
        "  for i in 1 2 3 4 5 6; do {} curl -s -o /dev/null -w '%{{http_code}}\\n' http://{ANYCAST_VIP}/; done",
        exec(CLIENT)
    );
    println!("  # the L4 service, forwarded in XDP by direct server return:");
    println!(
        "  {} bash -c 'exec 3<>/dev/tcp/{ANYCAST_VIP}/{L4_PORT}; echo hi >&3; head -1 <&3'",
        exec(CLIENT)
    );
    for (name, node) in &cluster.nodes {
        if let Some(node) = node {
            println!(
                "  {} status --socket {}   # {name}: sessions, announced VIPs",
                super::tandem_bin(),
                node.socket.display()
            );
        }
    }
    println!(
        "  # Prometheus metrics (tandem_bgp_*; Grafana dashboard: dist/grafana-dashboard.json):"
    );
    for name in NODES {
        println!(
            "  {} curl -s http://{}:{}/metrics | grep ^tandem_bgp",
            exec(CLIENT),
            lab.host(name).ip,
            super::METRICS_PORT
        );
    }
    for (name, apache) in &cluster.backends {
        println!(
            "  tail -f {}   # {name}",
            apache.access_log_path().display()
        );
    }
    println!(
        "\nThen take nodes away and watch the router follow (hold time {}s):\n\
         \x20 kill lbN        SIGKILL: BIRD dies with the daemon, the route goes at once\n\
         \x20 freeze lbN      SIGSTOP daemon and BIRD: the route goes after the hold time\n\
         \x20 thaw lbN        SIGCONT\n\
         \x20 stop lbN        SIGTERM: withdraws first, then finishes its connections\n\
         \x20 start lbN       start it again: it is a next hop again once it can serve\n\
         \x20 drain lbN       `tandem drain` of the node (enable lbN undoes it)\n\
         \x20 stop|start http1|http2\n\
         \x20 status          the router's next hops and each node's BGP view\n\
         \x20 quit            tear everything down (Ctrl-C too)\n",
        HOLD_TIME.as_secs()
    );
}

/// Carries out one command line; false means quit.
fn command(lab: &Lab, cluster: &mut Cluster, line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    let result = match words.as_slice() {
        [] => Ok(()),
        ["quit" | "exit"] => return false,
        ["status"] => {
            status(lab, cluster);
            Ok(())
        }
        [verb @ ("stop" | "start"), backend @ ("http1" | "http2")] => {
            super::backend_command(&mut cluster.backends, verb, backend)
        }
        [verb, node @ ("lb1" | "lb2" | "lb3")] => node_command(lab, cluster, verb, node),
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

fn status(lab: &Lab, cluster: &Cluster) {
    let hops: Vec<String> = next_hops(lab, ANYCAST_VIP)
        .iter()
        .map(|hop| {
            let name = lab
                .hosts()
                .find(|host| host.ip == *hop)
                .map_or("?", |host| host.name.as_str());
            format!("{hop} ({name})")
        })
        .collect();
    println!("router: {ANYCAST_VIP} via {}", hops.join(", "));
    for (name, node) in &cluster.nodes {
        let Some(node) = node else {
            println!("  {name}: stopped");
            continue;
        };
        if cluster.away.contains(name) && !node_answers(node) {
            println!("  {name}: frozen");
            continue;
        }
        match node.status() {
            Ok(status) => {
                let bgp = &status["bgp"];
                let session = &bgp["sessions"][0];
                let vip = &bgp["vips"][0];
                let announced = if vip["announced"] == true {
                    "announced".to_owned()
                } else {
                    format!("withdrawn ({})", vip["reason"].as_str().unwrap_or("?"))
                };
                let info = session["info"].as_str().unwrap_or("");
                println!(
                    "  {name}: session {}{}, {ANYCAST_VIP} {announced}{}",
                    session["state"].as_str().unwrap_or("?"),
                    if info.is_empty() {
                        String::new()
                    } else {
                        format!(" ({info})")
                    },
                    if bgp["drained"] == true {
                        ", drained"
                    } else {
                        ""
                    }
                );
            }
            Err(err) => println!("  {name}: {err:#}"),
        }
    }
}

fn node_command(lab: &Lab, cluster: &mut Cluster, verb: &str, name: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let Some((_, slot)) = cluster.nodes.iter_mut().find(|(n, _)| n == name) else {
        return Ok(());
    };
    match (verb, slot.as_mut()) {
        ("start", Some(_)) => {
            println!("{name} is already running");
            return Ok(());
        }
        ("start", None) => {
            *slot = Some(TandemNode::start(
                lab,
                lab.host(name),
                &node_config(lab, name),
            )?);
            cluster.away.remove(name);
            println!("started {name}");
        }
        ("stop", Some(node)) => {
            if let Some(bird) = cluster.frozen_birds.remove(name) {
                // SAFETY: kill(2) on processes of this lab.
                unsafe {
                    libc::kill(bird, libc::SIGCONT);
                    libc::kill(node.process.pid() as i32, libc::SIGCONT);
                }
            }
            node.process.terminate(Duration::from_secs(10))?;
            *slot = None;
            cluster.away.remove(name);
            println!("stopped {name} (SIGTERM: it withdrew the VIP first)");
        }
        ("kill", Some(node)) => {
            node.process.kill(libc::SIGKILL);
            let _ = node.process.wait_exit(Duration::from_secs(5));
            if let Some(bird) = cluster.frozen_birds.remove(name) {
                // A stopped BIRD would not act on its death signal until continued.
                // SAFETY: kill(2) on a process of this lab.
                unsafe { libc::kill(bird, libc::SIGCONT) };
            }
            *slot = None;
            cluster.away.remove(name);
            println!("killed {name} (SIGKILL; its BIRD dies with it)");
        }
        (signal @ ("freeze" | "thaw"), Some(node)) => {
            let bird = match cluster.frozen_birds.remove(name) {
                Some(bird) => bird,
                None if signal == "thaw" => {
                    println!("{name} is not frozen");
                    return Ok(());
                }
                None => bird_pid(node)?,
            };
            let signal = if signal == "freeze" {
                cluster.frozen_birds.insert(name.to_owned(), bird);
                libc::SIGSTOP
            } else {
                libc::SIGCONT
            };
            // SAFETY: kill(2) on processes of this lab.
            unsafe {
                libc::kill(bird, signal);
                libc::kill(node.process.pid() as i32, signal);
            }
            if signal == libc::SIGSTOP {
                cluster.away.insert(name.to_owned());
            } else {
                cluster.away.remove(name);
            }
            println!("{verb} {name}: daemon and BIRD (pid {bird})");
        }
        (verb @ ("drain" | "enable"), Some(node)) => {
            let output = std::process::Command::new(tandem_lab::tandem_binary()?)
                .arg(verb)
                .arg("--socket")
                .arg(&node.socket)
                .output()
                .context("running tandem")?;
            print!("{}", String::from_utf8_lossy(&output.stdout));
            print!("{}", String::from_utf8_lossy(&output.stderr));
            if verb == "drain" {
                cluster.away.insert(name.to_owned());
            } else {
                cluster.away.remove(name);
            }
        }
        (_, None) => {
            println!("{name} is not running");
            return Ok(());
        }
        _ => {
            println!("unknown command {verb} {name}");
            return Ok(());
        }
    }
    report_next_hops(lab, cluster, started);
    Ok(())
}

/// Whether a node's daemon runs (not stopped by `freeze`): /proc's state letter.
fn node_answers(node: &TandemNode) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", node.process.pid()))
        .is_ok_and(|stat| !stat.contains(") T "))
}

/// Waits (at most the hold time and 10 s) until the router's next hops are the nodes that
/// should be there, and says when that happened.
fn report_next_hops(lab: &Lab, cluster: &Cluster, started: Instant) {
    let serving: Vec<&str> = cluster
        .nodes
        .iter()
        .filter(|(name, node)| node.is_some() && !cluster.away.contains(name))
        .map(|(name, _)| name.as_str())
        .collect();
    match wait_for_next_hops(lab, &serving, HOLD_TIME + Duration::from_secs(10)) {
        Ok(_) => println!(
            "the router's next hops are {serving:?} ({:.2} s after the command)",
            started.elapsed().as_secs_f64()
        ),
        Err(err) => println!("{err:#}"),
    }
}

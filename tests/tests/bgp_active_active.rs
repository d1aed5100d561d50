//! Active-active over BGP: three Tandem nodes announce the anycast VIP to a real BIRD router,
//! which installs one next hop per node and spreads connections over them by ECMP.
//!
//! What a user of the feature would check: every node that can serve is a next hop and takes
//! connections; a node that cannot serve (no healthy backend), that is drained or that stops
//! is withdrawn, and comes back; a killed node is withdrawn at once (BIRD dies with it) and a
//! frozen one within the hold time, with nothing else run; a cookie session keeps its backend
//! whichever node a request reaches; a long-lived L4 connection survives the SIGKILL of the
//! node that carried it, also while the other nodes' backend sets differ from its own (the
//! nodes share their connection tables over `[replication]`); and a node runs a VRRP pair and
//! BGP together.
//!
//! The tests of this file run one at a time: each runs four BIRDs and three daemons.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tandem_lab::anycast::{
    bgp_section, bird_pid, on_loopback, replication_section, wait_for_next_hops,
    wait_for_next_hops_of, Router, HOLD_TIME,
};
use tandem_lab::l4::{make_dsr_backend, Conversation, NetnsRuntime, WhoServer};
use tandem_lab::pair::{holders, wait_until, TandemNode, VrrpSettings};
use tandem_lab::{
    http_get, EchoBackend, Host, Lab, ANYCAST_VIP, ANYCAST_VIP6, CLIENT, HTTP1, HTTP2, LB1, LB2,
    LB3, VIP,
};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const NODES: [&str; 3] = [LB1, LB2, LB3];
const HTTP_PORT: u16 = 80;
const L4_PORT: u16 = 7000;
const REPLICATION_PORT: u16 = 7946;
/// Generous for announcing: BIRD's sessions come up within a few seconds.
const SESSIONS_UP: Duration = Duration::from_secs(30);

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `[node]` of an active-active node: its own control socket and pin directory.
fn node_section(lab: &Lab, host: &Host, dataplane: &str) -> String {
    format!(
        "{}bpf_pin_dir = \"{}\"\n",
        TandemNode::node_section(lab, host).replace(
            "dataplane = \"none\"",
            &format!("dataplane = \"{dataplane}\"")
        ),
        lab.pin_dir(&host.name).display()
    )
}

/// The active-active lab with echo servers on both web servers and three HTTP nodes
/// ([`http_node_config`]), once the router has all three as next hops. Bind the parts in this
/// order, so they drop nodes first, then the backends, then the lab.
fn http_cluster() -> (Lab, [EchoBackend; 2], Cluster) {
    let lab = Lab::active_active().expect("lab");
    let backends = [
        EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1"),
        EchoBackend::start(lab.host(HTTP2), 80, "http2").expect("echo on http2"),
    ];
    let cluster = Cluster::start(&lab, |host| http_node_config(&lab, host));
    cluster.wait_for_next_hops(&lab, &NODES, SESSIONS_UP);
    (lab, backends, cluster)
}

/// An HTTP node: `web` on the anycast VIP over both web servers, cookie sessions learned from
/// the backends and replicated to the other nodes, and the VIP announced to the router.
fn http_node_config(lab: &Lab, host: &Host) -> String {
    let nodes: Vec<&Host> = NODES.iter().map(|name| lab.host(name)).collect();
    format!(
        "{node}\n[[service]]\nname = \"web\"\nlisten = \"{ANYCAST_VIP}:{HTTP_PORT}\"\n\
         backends = [\"{http1}:80\", \"{http2}:80\"]\n\
         session = {{ type = \"cookie\", id = \"JSESSIONID\", ttl = \"300s\" }}\n\
         health = {{ interval = \"500ms\" }}\n\n{replication}\n{bgp}",
        node = node_section(lab, host, "none"),
        http1 = lab.host(HTTP1).ip,
        http2 = lab.host(HTTP2).ip,
        replication = replication_section(host, &nodes, REPLICATION_PORT),
        bgp = bgp_section(lab, host),
    )
}

struct Cluster {
    nodes: Vec<Option<TandemNode>>,
    router: Router,
}

impl Cluster {
    fn start(lab: &Lab, config: impl Fn(&Host) -> String) -> Cluster {
        let hosts: Vec<&Host> = NODES.iter().map(|name| lab.host(name)).collect();
        let router = Router::start(lab, &hosts).expect("BIRD on the router");
        let nodes = hosts
            .iter()
            .map(|host| Some(TandemNode::start(lab, host, &config(host)).expect("tandem run")))
            .collect();
        Cluster { nodes, router }
    }

    fn node(&self, name: &str) -> &TandemNode {
        self.nodes[index(name)]
            .as_ref()
            .expect("the node is running")
    }

    fn logs(&self) -> String {
        let mut text = format!("router:\n{}\n", self.router.log_text());
        for node in self.nodes.iter().flatten() {
            text.push_str(&format!("{}:\n{}\n", node.host, node.log_text()));
        }
        text
    }

    fn wait_for_next_hops(&self, lab: &Lab, nodes: &[&str], timeout: Duration) -> Duration {
        match wait_for_next_hops(lab, nodes, timeout) {
            Ok(took) => took,
            Err(error) => panic!("{error:#}\n{}", self.logs()),
        }
    }
}

fn index(name: &str) -> usize {
    NODES
        .iter()
        .position(|node| *node == name)
        .expect("a node of the lab")
}

fn vip_http() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ANYCAST_VIP, HTTP_PORT))
}

/// 45 requests on new connections from the client to `vip`, each answered 200; how many of
/// them each node's `service` answered, in the order of [`NODES`].
fn send_45_requests(lab: &Lab, cluster: &Cluster, vip: SocketAddr, service: &str) -> Vec<u64> {
    let client = lab.host(CLIENT);
    for request in 0..45 {
        let response = http_get(client, vip, "/", &[]).unwrap_or_else(|error| {
            panic!(
                "request {request} through the VIP {vip}: {error:#}\n{}",
                cluster.logs()
            )
        });
        assert_eq!(response.status, 200, "{response:?}");
    }
    NODES
        .iter()
        .map(|name| requests_for(cluster.node(name), service))
        .collect()
}

/// How many requests `node`'s proxy has answered for `web`.
fn requests_on(node: &TandemNode) -> u64 {
    requests_for(node, "web")
}

/// How many requests `node`'s proxy has answered for `service`.
fn requests_for(node: &TandemNode, service: &str) -> u64 {
    let status = node.status().expect("status");
    status["services"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["name"] == service)
        .flat_map(|entry| entry["backends"].as_array().into_iter().flatten())
        .map(|backend| backend["requests"].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn every_node_that_can_serve_is_a_next_hop_and_connections_spread_over_them() {
    let _serial = one_at_a_time();
    let (lab, _backends, cluster) = http_cluster();

    for name in NODES {
        let status = cluster.node(name).status().expect("status");
        let bgp = &status["bgp"];
        assert_eq!(
            bgp["sessions"][0]["state"], "Established",
            "{name}'s status shows its session: {bgp}"
        );
        assert_eq!(bgp["vips"][0]["announced"], true, "{name}: {bgp}");
        assert!(
            on_loopback(lab.host(name), ANYCAST_VIP.into()),
            "{name} holds the VIP on lo"
        );
    }

    let served = send_45_requests(&lab, &cluster, vip_http(), "web");
    assert_eq!(
        served.iter().sum::<u64>(),
        45,
        "every request was served once: {served:?}"
    );
    assert!(
        served.iter().all(|&count| count > 0),
        "the router spread 45 connections over the three nodes: {served:?}"
    );

    let status_text = std::process::Command::new(tandem_lab::tandem_binary().unwrap())
        .args(["status", "--socket"])
        .arg(&cluster.node(LB1).socket)
        .output()
        .expect("tandem status");
    let status_text = String::from_utf8_lossy(&status_text.stdout);
    assert!(
        status_text.contains("Established") && status_text.contains("announced"),
        "the status screen shows the session and the VIP:\n{status_text}"
    );
}

#[test]
fn a_node_is_withdrawn_when_it_cannot_serve_when_drained_and_when_stopping_and_comes_back() {
    let _serial = one_at_a_time();
    let (lab, _backends, mut cluster) = http_cluster();
    let tandem = tandem_lab::tandem_binary().expect("tandem");
    let run = |node: &str, args: &[&str]| {
        let output = std::process::Command::new(&tandem)
            .args(args)
            .arg("--socket")
            .arg(&cluster.node(node).socket)
            .output()
            .expect("tandem");
        assert!(
            output.status.success(),
            "tandem {args:?} on {node}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };

    // No backend to serve with: lb2 withdraws, the others stay.
    let (http1, http2) = (
        format!("{}:80", lab.host(HTTP1).ip),
        format!("{}:80", lab.host(HTTP2).ip),
    );
    run(LB2, &["drain", "web", &http1]);
    run(LB2, &["drain", "web", &http2]);
    cluster.wait_for_next_hops(&lab, &[LB1, LB3], Duration::from_secs(5));
    let reason = cluster.node(LB2).status().expect("status")["bgp"]["vips"][0]["reason"].clone();
    assert_eq!(reason, "no backend of web is up (and not drained)");
    run(LB2, &["enable", "web", &http1]);
    cluster.wait_for_next_hops(&lab, &NODES, Duration::from_secs(5));

    // `tandem drain` of the node, then `tandem enable`.
    run(LB3, &["drain"]);
    cluster.wait_for_next_hops(&lab, &[LB1, LB2], Duration::from_secs(5));
    assert_eq!(
        cluster.node(LB3).status().expect("status")["bgp"]["drained"],
        true
    );
    run(LB3, &["enable"]);
    cluster.wait_for_next_hops(&lab, &NODES, Duration::from_secs(5));

    // A graceful stop withdraws first; the VIP leaves lo and BIRD exits with the daemon.
    let bird = bird_pid(cluster.node(LB1)).expect("BIRD's pid on lb1");
    let mut node = cluster.nodes[index(LB1)].take().expect("lb1 runs");
    node.process.kill(libc::SIGTERM);
    cluster.wait_for_next_hops(&lab, &[LB2, LB3], Duration::from_secs(5));
    node.process
        .wait_exit(Duration::from_secs(10))
        .expect("lb1 stops");
    let log = node.log_text();
    let withdrawn = log
        .find("every VIP withdrawn")
        .expect("lb1 logged the withdrawal");
    let proxy_stopped = log.rfind("stopped").expect("lb1 logged its stop");
    assert!(
        withdrawn < proxy_stopped,
        "withdrawn before the rest stopped:\n{log}"
    );
    assert!(
        !on_loopback(lab.host(LB1), ANYCAST_VIP.into()),
        "the VIP left lo"
    );
    assert!(
        wait_until(Duration::from_secs(3), "BIRD to exit", || {
            !std::path::Path::new(&format!("/proc/{bird}")).exists()
        })
        .is_ok(),
        "BIRD (pid {bird}) exited with the daemon"
    );
    drop(node);

    // The node's return.
    let config = http_node_config(&lab, lab.host(LB1));
    cluster.nodes[index(LB1)] =
        Some(TandemNode::start(&lab, lab.host(LB1), &config).expect("lb1 again"));
    let took = cluster.wait_for_next_hops(&lab, &NODES, SESSIONS_UP);
    assert!(
        took < Duration::from_secs(15),
        "a returning node is a next hop again within seconds, took {took:?}"
    );
}

#[test]
fn a_killed_node_is_withdrawn_at_once_and_a_frozen_one_within_the_hold_time() {
    let _serial = one_at_a_time();
    let (lab, _backends, mut cluster) = http_cluster();

    // SIGKILL: the daemon cannot withdraw anything, but BIRD dies with it (PR_SET_PDEATHSIG)
    // and its sessions close, so the router withdraws at once, not after the hold time.
    let bird = bird_pid(cluster.node(LB1)).expect("BIRD's pid on lb1");
    let mut killed = cluster.nodes[index(LB1)].take().expect("lb1 runs");
    killed.process.kill(libc::SIGKILL);
    killed
        .process
        .wait_exit(Duration::from_secs(5))
        .expect("SIGKILL ends the daemon");
    let bird_alive = || std::path::Path::new(&format!("/proc/{bird}")).exists();
    let took = match wait_for_next_hops(&lab, &[LB2, LB3], HOLD_TIME * 2) {
        Ok(took) => took,
        Err(error) => panic!(
            "{error:#}; lb1's BIRD (pid {bird}) alive: {}\n{}\nlb1:\n{}",
            bird_alive(),
            cluster.logs(),
            killed.log_text()
        ),
    };
    assert!(
        took < HOLD_TIME,
        "a killed node's route goes before the hold time ({HOLD_TIME:?}): {took:?}"
    );
    assert!(
        wait_until(
            Duration::from_secs(2),
            "BIRD to die with its daemon",
            || { !std::path::Path::new(&format!("/proc/{bird}")).exists() }
        )
        .is_ok(),
        "BIRD (pid {bird}) did not outlive the killed daemon"
    );
    drop(killed);

    // Frozen (daemon and BIRD stopped, sessions open but silent): only the hold time can
    // tell, and it does, with nothing else run.
    let frozen = cluster.node(LB2);
    let bird = bird_pid(frozen).expect("BIRD's pid on lb2");
    let daemon = frozen.process.pid() as i32;
    // SAFETY: kill(2) on processes of this test's lab.
    unsafe {
        libc::kill(bird, libc::SIGSTOP);
        libc::kill(daemon, libc::SIGSTOP);
    }
    let started = Instant::now();
    let result = wait_for_next_hops(&lab, &[LB3], HOLD_TIME * 3);
    let took = started.elapsed();
    // SAFETY: as above.
    unsafe {
        libc::kill(daemon, libc::SIGCONT);
        libc::kill(bird, libc::SIGCONT);
    }
    if let Err(error) = result {
        panic!("{error:#}\n{}", cluster.logs());
    }
    assert!(
        took <= HOLD_TIME + Duration::from_secs(1),
        "a frozen node is withdrawn within the hold time ({HOLD_TIME:?}): {took:?}"
    );
    // Thawed, it announces again.
    cluster.wait_for_next_hops(&lab, &[LB2, LB3], SESSIONS_UP);
}

#[test]
fn a_cookie_session_keeps_its_backend_whichever_node_a_request_reaches() {
    let _serial = one_at_a_time();
    let (lab, _backends, cluster) = http_cluster();
    let client = lab.host(CLIENT);

    // Each session is learned where its login lands; then its requests go to every node.
    for session in 0..4 {
        let key = format!("aa-session-{session}");
        let login = format!("/login?set-cookie=JSESSIONID={key}");
        let response = http_get(client, vip_http(), &login, &[]).expect("login");
        let backend = response
            .header("x-backend")
            .expect("the echo backend names itself")
            .to_owned();
        let cookie = format!("JSESSIONID={key}");
        // The entry reaches the other nodes over replication.
        std::thread::sleep(Duration::from_millis(500));
        let before: Vec<u64> = NODES.iter().map(|n| requests_on(cluster.node(n))).collect();
        for request in 0..15 {
            let response = http_get(client, vip_http(), "/", &[("Cookie", cookie.as_str())])
                .expect("request with the session");
            assert_eq!(
                response.header("x-backend"),
                Some(backend.as_str()),
                "request {request} of session {key} (learned on {backend})\n{}",
                cluster.logs()
            );
        }
        let after: Vec<u64> = NODES.iter().map(|n| requests_on(cluster.node(n))).collect();
        let reached = before.iter().zip(&after).filter(|(b, a)| a > b).count();
        assert!(
            reached >= 2,
            "15 connections reached more than one node: {before:?} -> {after:?}"
        );
    }
}

/// An L4 node: TCP on the anycast VIP forwarded by XDP (generic, on the veth) to both web
/// servers by direct server return, its connection table shared with the other nodes.
fn l4_node_config(lab: &Lab, host: &Host) -> String {
    let nodes: Vec<&Host> = NODES.iter().map(|name| lab.host(name)).collect();
    format!(
        "{node}\n[[service]]\nname = \"who\"\nlisten = \"{ANYCAST_VIP}:{L4_PORT}\"\nmode = \"tcp\"\n\
         backends = [\"{http1}:{L4_PORT}\", \"{http2}:{L4_PORT}\"]\n\n{replication}\n{bgp}",
        node = node_section(lab, host, "xdp-generic"),
        http1 = lab.host(HTTP1).ip,
        http2 = lab.host(HTTP2).ip,
        replication = replication_section(host, &nodes, REPLICATION_PORT),
        bgp = bgp_section(lab, host),
    )
}

/// How many flows `node` received from its peers.
fn flows_received(node: &TandemNode) -> u64 {
    node.status().expect("status")["dataplane"]["flow_sharing"]["received"]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn long_lived_l4_connections_survive_the_sigkill_of_the_node_that_carried_them() {
    let _serial = one_at_a_time();
    let lab = Lab::active_active().expect("lab");
    for name in [HTTP1, HTTP2] {
        make_dsr_backend(lab.host(name), ANYCAST_VIP).expect("DSR backend");
    }
    let _who1 = WhoServer::start(lab.host(HTTP1), L4_PORT, Some(ANYCAST_VIP), "http1")
        .expect("who on http1");
    let _who2 = WhoServer::start(lab.host(HTTP2), L4_PORT, Some(ANYCAST_VIP), "http2")
        .expect("who on http2");
    let mut cluster = Cluster::start(&lab, |host| l4_node_config(&lab, host));
    cluster.wait_for_next_hops(&lab, &NODES, SESSIONS_UP);

    let client = NetnsRuntime::new(lab.host(CLIENT)).expect("client runtime");
    let server = SocketAddrV4::new(ANYCAST_VIP, L4_PORT);
    let mut conversations = Vec::new();
    for _ in 0..12 {
        let mut conversation = client
            .block_on(Conversation::open(server, None))
            .unwrap_or_else(|error| panic!("connect through the VIP: {error}\n{}", cluster.logs()));
        // The socket is the client's already: drive it on this thread.
        let answer = client
            .handle()
            .block_on(conversation.ask())
            .expect("first answer");
        conversations.push((conversation, answer.backend));
    }
    let flows_on_lb1 = cluster.node(LB1).status().expect("status")["dataplane"]["flows"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        flows_on_lb1 > 0,
        "some of the 12 connections go through lb1 (its connection table is not empty)"
    );

    // The backend sets differ for a moment: lb2 and lb3 take http1 out of rotation (a health
    // check or an operator seen there first). Maglev alone would now send lb1's flows on
    // http1 to http2, which would reset them; the entries lb1 shared keep them on http1.
    if let Err(error) = wait_until(
        Duration::from_secs(5),
        "lb1's flows to reach lb2 and lb3",
        || flows_received(cluster.node(LB2)) > 0 && flows_received(cluster.node(LB3)) > 0,
    ) {
        panic!("{error:#}\n{}", cluster.logs());
    }
    let on_http1 = conversations
        .iter()
        .filter(|(_, backend)| backend == "http1")
        .count();
    assert!(on_http1 > 0, "some of 12 connections went to http1");
    let http1 = format!("{}:{L4_PORT}", lab.host(HTTP1).ip);
    let tandem = tandem_lab::tandem_binary().expect("tandem");
    for node in [LB2, LB3] {
        let output = std::process::Command::new(&tandem)
            .args(["drain", "who", &http1, "--socket"])
            .arg(&cluster.node(node).socket)
            .output()
            .expect("tandem drain");
        assert!(output.status.success(), "drain on {node}: {output:?}");
    }

    let mut killed = cluster.nodes[index(LB1)].take().expect("lb1 runs");
    killed.process.kill(libc::SIGKILL);
    cluster.wait_for_next_hops(&lab, &[LB2, LB3], HOLD_TIME * 2);
    drop(killed);
    for (number, (conversation, backend)) in conversations.iter_mut().enumerate() {
        for _ in 0..3 {
            let answer = client
                .handle()
                .block_on(conversation.ask())
                .unwrap_or_else(|error| {
                    panic!(
                        "connection {number} after lb1's SIGKILL: {error}\n{}",
                        cluster.logs()
                    )
                });
            assert_eq!(
                &answer.backend, backend,
                "connection {number} keeps its backend on whichever node now carries it"
            );
        }
    }
}

/// A node of a VRRP pair on the segment (VIP 198.18.0.99, HTTP) that also announces the
/// anycast VIP (L4 in XDP) over BGP.
fn pair_and_anycast_config(lab: &Lab, host: &Host, priority: u8) -> String {
    let vrrp = TandemNode::vrrp_config(lab, host, &VrrpSettings::new(3, priority)).replace(
        "dataplane = \"none\"",
        &format!(
            "dataplane = \"xdp-generic\"\nbpf_pin_dir = \"{}\"",
            lab.pin_dir(&host.name).display()
        ),
    );
    format!(
        "{vrrp}\n[[service]]\nname = \"pair\"\nlisten = \"{VIP}:{HTTP_PORT}\"\n\
         backends = [\"{http1}:80\", \"{http2}:80\"]\n\n\
         [[service]]\nname = \"who\"\nlisten = \"{ANYCAST_VIP}:{L4_PORT}\"\nmode = \"tcp\"\n\
         backends = [\"{http1}:{L4_PORT}\", \"{http2}:{L4_PORT}\"]\n\n{bgp}",
        http1 = lab.host(HTTP1).ip,
        http2 = lab.host(HTTP2).ip,
        bgp = bgp_section(lab, host),
    )
}

#[test]
fn a_node_runs_a_vrrp_pair_and_announces_anycast_over_bgp_together() {
    let _serial = one_at_a_time();
    let lab = Lab::active_active().expect("lab");
    let _http1 = EchoBackend::start(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let _http2 = EchoBackend::start(lab.host(HTTP2), 80, "http2").expect("echo on http2");
    for name in [HTTP1, HTTP2] {
        make_dsr_backend(lab.host(name), ANYCAST_VIP).expect("DSR backend");
    }
    let _who1 = WhoServer::start(lab.host(HTTP1), L4_PORT, Some(ANYCAST_VIP), "http1")
        .expect("who on http1");
    let _who2 = WhoServer::start(lab.host(HTTP2), L4_PORT, Some(ANYCAST_VIP), "http2")
        .expect("who on http2");
    let hosts: Vec<&Host> = NODES.iter().map(|name| lab.host(name)).collect();
    let router = Router::start(&lab, &hosts).expect("BIRD on the router");
    let lb1 = TandemNode::start(
        &lab,
        lab.host(LB1),
        &pair_and_anycast_config(&lab, lab.host(LB1), 101),
    )
    .expect("lb1");
    let lb2 = TandemNode::start(
        &lab,
        lab.host(LB2),
        &pair_and_anycast_config(&lab, lab.host(LB2), 100),
    )
    .expect("lb2");
    let logs = || {
        format!(
            "router:\n{}\nlb1:\n{}\nlb2:\n{}",
            router.log_text(),
            lb1.log_text(),
            lb2.log_text()
        )
    };
    if let Err(error) = wait_for_next_hops(&lab, &[LB1, LB2], SESSIONS_UP) {
        panic!("{error:#}\n{}", logs());
    }
    if let Err(error) = wait_until(
        Duration::from_secs(10),
        "lb1 alone to hold the pair's VIP",
        || holders(&lab, VIP) == [LB1.to_owned()],
    ) {
        panic!("{error:#}\n{}", logs());
    }

    // The pair's VIP is served by its master only...
    let client = lab.host(CLIENT);
    let pair_vip = SocketAddr::V4(SocketAddrV4::new(VIP, HTTP_PORT));
    for _ in 0..3 {
        let response = http_get(client, pair_vip, "/", &[]).expect("request to the pair's VIP");
        assert_eq!(response.status, 200);
    }
    // ...while both nodes forward the anycast VIP's flows, lb2 although it is VRRP backup.
    let runtime = NetnsRuntime::new(client).expect("client runtime");
    let server = SocketAddrV4::new(ANYCAST_VIP, L4_PORT);
    for connection in 0..12 {
        let answer = runtime
            .block_on(async move {
                let mut conversation = Conversation::open(server, None).await?;
                conversation.ask().await
            })
            .unwrap_or_else(|error| panic!("anycast connection {connection}: {error}\n{}", logs()));
        assert!(answer.backend == "http1" || answer.backend == "http2");
    }
    let flows = |node: &TandemNode| {
        node.status().expect("status")["dataplane"]["flows"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        flows(&lb1) > 0 && flows(&lb2) > 0,
        "the router spread the anycast connections over both nodes, the VRRP backup included \
         (flows recorded: lb1 {}, lb2 {})",
        flows(&lb1),
        flows(&lb2)
    );
    assert_eq!(
        lb2.status().expect("status")["vrrp"][0]["state"],
        "backup",
        "lb2 stays the pair's backup"
    );
}

/// A dual-stack HTTP node: `web` on the IPv4 anycast VIP and `web6` on the IPv6 one, each to
/// the backends' addresses of its family, both VIPs announced (over the router's IPv4 and
/// IPv6 sessions).
fn dual_stack_node_config(lab: &Lab, host: &Host) -> String {
    let ip6 = |name: &str| lab.host(name).ip6.expect("a dual-stack lab");
    format!(
        "{node}\n[[service]]\nname = \"web\"\nlisten = \"{ANYCAST_VIP}:{HTTP_PORT}\"\n\
         backends = [\"{http1}:80\", \"{http2}:80\"]\n\n\
         [[service]]\nname = \"web6\"\nlisten = \"[{ANYCAST_VIP6}]:{HTTP_PORT}\"\n\
         backends = [\"[{http1_6}]:80\", \"[{http2_6}]:80\"]\n\n{bgp}",
        node = node_section(lab, host, "none"),
        http1 = lab.host(HTTP1).ip,
        http2 = lab.host(HTTP2).ip,
        http1_6 = ip6(HTTP1),
        http2_6 = ip6(HTTP2),
        bgp = bgp_section(lab, host),
    )
}

#[test]
fn ipv6_clients_reach_the_ipv6_anycast_vip_through_every_node_and_lose_a_killed_one_at_once() {
    let _serial = one_at_a_time();
    let lab = Lab::active_active_dual_stack().expect("lab");
    let _http1 =
        EchoBackend::start_on_all_addresses(lab.host(HTTP1), 80, "http1").expect("echo on http1");
    let _http2 =
        EchoBackend::start_on_all_addresses(lab.host(HTTP2), 80, "http2").expect("echo on http2");
    let mut cluster = Cluster::start(&lab, |host| dual_stack_node_config(&lab, host));
    for vip in [ANYCAST_VIP.into(), ANYCAST_VIP6.into()] {
        if let Err(error) = wait_for_next_hops_of(&lab, vip, &NODES, SESSIONS_UP) {
            panic!("{error:#}\n{}", cluster.logs());
        }
    }
    let client = lab.host(CLIENT);
    let vip6 = SocketAddr::new(ANYCAST_VIP6.into(), HTTP_PORT);
    let served = send_45_requests(&lab, &cluster, vip6, "web6");
    assert!(
        served.iter().all(|&count| count > 0),
        "the router spread 45 IPv6 connections over the three nodes: {served:?}"
    );

    let mut killed = cluster.nodes[index(LB1)].take().expect("lb1 runs");
    killed.process.kill(libc::SIGKILL);
    let started = Instant::now();
    if let Err(error) = wait_for_next_hops_of(&lab, ANYCAST_VIP6.into(), &[LB2, LB3], HOLD_TIME * 2)
    {
        panic!("{error:#}\n{}", cluster.logs());
    }
    assert!(
        started.elapsed() < HOLD_TIME,
        "the IPv6 route to a killed node goes at once: {:?}",
        started.elapsed()
    );
    drop(killed);
    for request in 0..10 {
        let response = http_get(client, vip6, "/", &[])
            .unwrap_or_else(|error| panic!("IPv6 request {request} after lb1's loss: {error:#}"));
        assert_eq!(response.status, 200);
    }
}

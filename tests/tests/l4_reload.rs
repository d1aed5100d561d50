//! Reloading the L4 services of a forwarding node (`Dataplane::reconfigure`, what SIGHUP and
//! `tandem reload` end in): what a user of the VIP notices, and what they must not.
//!
//! lb1 holds the VIP and runs the data plane in-process, as in l4_forwarding.rs. The reloads
//! insert a third backend (lb2, made a direct-server-return backend for the occasion) in front
//! of the list, change weights, remove backends and services, and add a service on a port of
//! its own; established connections on backends that remain must go on through every one.
//! The last test runs the product (`tandem run`, `tandem reload`) and restarts the daemon
//! after the reload: the restarted daemon must number the services as the reload left them.

mod l4_common;

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use l4_common::{eventually, node_config, parse, L4Lab, Node, TCP_PORT, UDP_PORT};
use tandem::config::Config;
use tandem::dataplane::{DataplaneKind, Plan};
use tandem_lab::l4::{make_dsr_backend, take_vip, Answer, Conversation, WhoServer};
use tandem_lab::{Process, CLIENT, HTTP1, HTTP2, LB1, LB2, VIP};

/// The port of the service a reload adds.
const ADDED_PORT: u16 = 7002;

/// A service of a test config: name, mode, port, backends (host, weight).
type ServiceSpec<'a> = (&'a str, &'a str, u16, &'a [(&'a str, u32)]);

/// The two services every node starts with (l4_common's config).
const WHO: ServiceSpec = ("who", "tcp", TCP_PORT, &[(HTTP1, 1), (HTTP2, 1)]);
const WHO_UDP: ServiceSpec = ("who-udp", "udp", UDP_PORT, &[(HTTP1, 1), (HTTP2, 1)]);

/// lb1's config with `services` instead of l4_common's: the same node, VRRP and pin
/// directory, so it is a valid reload of the config the node was opened with.
fn lb1_config(l4: &L4Lab, dataplane: &str, services: &[ServiceSpec]) -> Config {
    parse(&lb1_text(l4, dataplane, services))
}

/// The text of [`lb1_config`].
fn lb1_text(l4: &L4Lab, dataplane: &str, services: &[ServiceSpec]) -> String {
    let base = node_config(&l4.lab, LB1, dataplane);
    let mut text = base[..base.find("[[service]]").expect("services")].to_owned();
    for (name, mode, port, backends) in services {
        let backends: Vec<String> = backends
            .iter()
            .map(|(host, weight)| {
                format!(
                    "{{ address = \"{}:{port}\", weight = {weight} }}",
                    l4.host(host).ip
                )
            })
            .collect();
        text.push_str(&format!(
            "[[service]]\nname = \"{name}\"\nlisten = \"{VIP}:{port}\"\nmode = \"{mode}\"\nbackends = [{}]\n\n",
            backends.join(", ")
        ));
    }
    text
}

/// lb2 as a third backend of the TCP and UDP services (a reload puts it in), and http1/http2
/// serving the port of the service a reload adds.
fn more_backends(l4: &L4Lab) -> Vec<WhoServer> {
    let lb2 = l4.host(LB2);
    make_dsr_backend(lb2, VIP).expect("lb2 as a DSR backend");
    let mut servers = vec![
        WhoServer::start(lb2, TCP_PORT, Some(VIP), LB2).expect("who server on lb2"),
        WhoServer::start(lb2, UDP_PORT, Some(VIP), LB2).expect("who server on lb2"),
    ];
    for host in [HTTP1, HTTP2] {
        servers.push(
            WhoServer::start(l4.host(host), ADDED_PORT, Some(VIP), host).expect("who server"),
        );
    }
    servers
}

/// The host whose backend a new flow from the client's `port` to `service` gets under
/// `config`: l4_common's `expected`, for backends on any host of the lab (lb2 included).
fn expected(l4: &L4Lab, config: &Config, service: &str, port: u16) -> String {
    let plan = Plan::new(config).expect("plan");
    let service = plan.service(service).expect("service");
    let maglev = service.maglev(|_| true);
    let client = std::net::SocketAddr::from((l4.host(CLIENT).ip, port));
    let backend = service
        .choose(&maglev, client)
        .expect("a backend")
        .address
        .ip();
    l4.lab
        .hosts()
        .find(|h| std::net::IpAddr::V4(h.ip) == backend)
        .map(|h| h.name.clone())
        .expect("a lab host")
}

fn forwarding(l4: &L4Lab, dataplane: &str) -> Node {
    let node = Node::open(l4, LB1, dataplane);
    node.activate();
    take_vip(l4.host(LB1), VIP).expect("VIP on lb1");
    node
}

fn reconfigure(node: &Node, config: &Config) -> anyhow::Result<()> {
    let dp = node.dataplane.clone();
    let config = config.clone();
    node.runtime
        .block_on(async move { dp.reconfigure(&config).await })
}

/// One question to `port` on the VIP over a fresh connection from the client's `source`.
fn ask_port(l4: &L4Lab, port: u16, source: Option<u16>) -> std::io::Result<(u16, Answer)> {
    let server = SocketAddrV4::new(VIP, port);
    l4.client.block_on(async move {
        let mut c = Conversation::open(server, source).await?;
        let answer = c.ask().await?;
        Ok((c.local.port(), answer))
    })
}

/// At least `count` connections kept open, some on each backend, each with the backend it
/// first reached.
fn open_conversations(l4: &L4Lab, count: usize) -> Vec<(Conversation, String)> {
    let mut conversations: Vec<(Conversation, String)> = Vec::new();
    let mut on: BTreeMap<String, usize> = BTreeMap::new();
    while conversations.len() < count || on.len() < 2 {
        assert!(
            conversations.len() < 64,
            "connections on both backends: {on:?}"
        );
        let mut c = l4.converse(None).expect("connect through lb1");
        let backend = l4.ask(&mut c).expect("first answer").backend;
        *on.entry(backend.clone()).or_default() += 1;
        conversations.push((c, backend));
    }
    conversations
}

/// Every conversation still answers, from the backend it started on.
fn assert_conversations_go_on(
    l4: &L4Lab,
    conversations: &mut [(Conversation, String)],
    when: &str,
) {
    for (conversation, backend) in conversations.iter_mut() {
        let port = conversation.local.port();
        for _ in 0..2 {
            let answer = l4
                .ask(conversation)
                .unwrap_or_else(|e| panic!("{when}: the connection from port {port} broke: {e}"));
            assert_eq!(
                &answer.backend, backend,
                "{when}: the connection from port {port} stays on its backend"
            );
        }
    }
}

#[test]
fn established_connections_go_on_through_a_reload_that_inserts_a_backend_in_front_and_changes_a_weight(
) {
    let l4 = L4Lab::new();
    let _servers = more_backends(&l4);
    let node = forwarding(&l4, "xdp-generic");
    // Enough connections that some sit on each backend: with renumbered ids, those whose
    // backend's id now names another backend would be placed again, and most would break.
    let mut conversations = open_conversations(&l4, 16);
    let moved_before = node.counter(l4.host(LB1), "flow_moved");

    let reloaded = lb1_config(
        &l4,
        "xdp-generic",
        &[
            ("who", "tcp", TCP_PORT, &[(LB2, 1), (HTTP1, 1), (HTTP2, 2)]),
            WHO_UDP,
        ],
    );
    node.dataplane
        .check_reconfigure(&reloaded)
        .expect("the reload fits");
    reconfigure(&node, &reloaded).expect("reconfigure");

    assert_conversations_go_on(&l4, &mut conversations, "after the reload");
    assert_eq!(
        node.counter(l4.host(LB1), "flow_moved"),
        moved_before,
        "no recorded flow was placed again"
    );

    // New connections follow the new table, the inserted backend included.
    let mut seen = BTreeMap::new();
    for port in 48000..48060u16 {
        let (_, answer) = l4.ask_once(Some(port)).expect("the service answers");
        assert_eq!(
            answer.backend,
            expected(&l4, &reloaded, "who", port),
            "port {port}: the backend the new Maglev table says"
        );
        *seen.entry(answer.backend).or_insert(0) += 1;
    }
    assert_eq!(
        seen.len(),
        3,
        "every backend gets new connections: {seen:?}"
    );
    assert!(
        seen[HTTP2] > seen[HTTP1],
        "http2 has twice http1's weight: {seen:?}"
    );

    // What tandem status shows: the new backend with its MAC, the weight, every one up.
    let status = node.status();
    let who = status.services.iter().find(|s| s.name == "who").unwrap();
    let addresses: Vec<String> = who.backends.iter().map(|b| b.address.to_string()).collect();
    assert_eq!(
        addresses,
        [LB2, HTTP1, HTTP2].map(|h| format!("{}:{TCP_PORT}", l4.host(h).ip))
    );
    assert!(
        who.backends.iter().all(|b| b.up && b.mac.is_some()),
        "{who:?}"
    );
    assert_eq!(who.backends[2].weight, 2);
    assert_conversations_go_on(&l4, &mut conversations, "after the new connections");
    node.shutdown();
}

#[test]
fn a_reload_that_removes_a_backend_places_its_flows_on_the_others_and_the_service_answers_on() {
    let l4 = L4Lab::new();
    let node = forwarding(&l4, "xdp-generic");
    let mut on: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for port in 49000..49040u16 {
        let (_, answer) = l4.ask_once(Some(port)).expect("answer");
        on.entry(answer.backend).or_default().push(port);
    }
    assert_eq!(on.len(), 2, "{on:?}");
    // A long-lived connection on http1, which stays.
    let mut stays = (0..20)
        .map(|_| {
            let mut c = l4.converse(None).expect("connect");
            let backend = l4.ask(&mut c).expect("answer").backend;
            (c, backend)
        })
        .find(|(_, backend)| backend == HTTP1)
        .map(|(c, backend)| vec![(c, backend)])
        .expect("a connection on http1");
    let moved_before = node.counter(l4.host(LB1), "flow_moved");

    let reloaded = lb1_config(
        &l4,
        "xdp-generic",
        &[("who", "tcp", TCP_PORT, &[(HTTP1, 1)]), WHO_UDP],
    );
    reconfigure(&node, &reloaded).expect("reconfigure");

    for &port in &on[HTTP2] {
        let (_, answer) = l4
            .ask_once(Some(port))
            .unwrap_or_else(|e| panic!("port {port}: the service answers on ({e})"));
        assert_eq!(
            answer.backend, HTTP1,
            "port {port}: http2's flow placed on http1"
        );
    }
    for &port in &on[HTTP1] {
        assert_eq!(l4.ask_once(Some(port)).expect("answer").1.backend, HTTP1);
    }
    assert!(
        node.counter(l4.host(LB1), "flow_moved") >= moved_before + on[HTTP2].len() as u64,
        "the removed backend's recorded flows were placed again"
    );
    assert_conversations_go_on(&l4, &mut stays, "after removing http2");

    // tandem maps: http2 is gone from the service, which has all of its table on http1.
    let maps = node.maps_json(l4.host(LB1));
    let service = maps["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["port"] == TCP_PORT)
        .expect("the service");
    let backends = service["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 1, "{service}");
    assert_eq!(backends[0]["address"], l4.host(HTTP1).ip.to_string());
    assert_eq!(backends[0]["share"]["percent"], 100.0);
    node.shutdown();
}

#[test]
fn a_service_added_by_a_reload_answers_and_a_removed_one_is_dropped() {
    let l4 = L4Lab::new();
    let _servers = more_backends(&l4);
    let node = forwarding(&l4, "xdp-generic");
    assert!(l4.ask_udp(45000).is_ok(), "the UDP service answers before");
    let mut conversations = open_conversations(&l4, 8);

    let added = ("added", "tcp", ADDED_PORT, &[(HTTP1, 1), (HTTP2, 1)][..]);
    let reloaded = lb1_config(&l4, "xdp-generic", &[added, WHO]);
    reconfigure(&node, &reloaded).expect("reconfigure");

    let mut seen = BTreeMap::new();
    for port in 50000..50020u16 {
        let (_, answer) = ask_port(&l4, ADDED_PORT, Some(port)).expect("the added service answers");
        assert_eq!(answer.peer, l4.host(CLIENT).ip, "by direct server return");
        assert_eq!(answer.backend, expected(&l4, &reloaded, "added", port));
        *seen.entry(answer.backend).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    let dropped_before = node.counter(l4.host(LB1), "drop_no_service");
    assert!(
        l4.ask_udp(45001).is_err(),
        "the removed UDP service no longer answers"
    );
    assert!(
        node.counter(l4.host(LB1), "drop_no_service") > dropped_before,
        "its datagrams are dropped as for any VIP port without a service"
    );
    assert_conversations_go_on(
        &l4,
        &mut conversations,
        "after adding and removing services",
    );
    let maps = node.maps_json(l4.host(LB1));
    let mut ports: Vec<u64> = maps["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["port"].as_u64().unwrap())
        .collect();
    ports.sort();
    assert_eq!(ports, [u64::from(TCP_PORT), u64::from(ADDED_PORT)]);

    // A backup reloads too, without forwarding anything: its next activation serves the
    // reloaded services.
    node.deactivate();
    let again = lb1_config(&l4, "xdp-generic", &[WHO, WHO_UDP]);
    reconfigure(&node, &again).expect("reconfigure while inactive");
    assert!(
        node.maps_json(l4.host(LB1))["services"]
            .as_array()
            .unwrap()
            .is_empty(),
        "an inactive node's reload puts no service in the maps"
    );
    node.activate();
    assert!(
        eventually(Duration::from_secs(5), || l4.ask_udp(45002).is_ok()),
        "the UDP service is back after activation"
    );
    assert!(
        ask_port(&l4, ADDED_PORT, None).is_err(),
        "and the added one gone"
    );
    node.shutdown();
}

#[test]
fn a_reload_that_does_not_fit_the_xdp_maps_is_refused_and_changes_nothing() {
    let l4 = L4Lab::new();
    let node = forwarding(&l4, "xdp-generic");
    let mut conversations = open_conversations(&l4, 4);
    let before = node.maps_json(l4.host(LB1))["services"].clone();

    // One L4 service more than the program has Maglev tables for.
    let names: Vec<String> = (0..=lb_common::MAX_L4_SERVICES)
        .map(|i| format!("s{i}"))
        .collect();
    let backends = [(HTTP1, 1)];
    let specs: Vec<ServiceSpec> = names
        .iter()
        .enumerate()
        .map(|(i, name)| (name.as_str(), "tcp", 20000 + i as u16, &backends[..]))
        .collect();
    let too_big = lb1_config(&l4, "xdp-generic", &specs);
    let checked = node
        .dataplane
        .check_reconfigure(&too_big)
        .expect_err("check_reconfigure refuses it");
    assert!(
        checked.to_string().contains("Maglev tables"),
        "says why: {checked}"
    );
    let err = reconfigure(&node, &too_big).expect_err("reconfigure refuses it");
    assert_eq!(err.to_string(), checked.to_string());

    assert_eq!(node.maps_json(l4.host(LB1))["services"], before);
    assert_conversations_go_on(&l4, &mut conversations, "after a refused reload");
    assert!(l4.ask_udp(45003).is_ok());
    node.shutdown();
}

#[test]
fn the_relay_keeps_its_connections_and_follows_added_and_removed_services_on_reload() {
    let l4 = L4Lab::new();
    let _servers = more_backends(&l4);
    take_vip(l4.host(LB1), VIP).expect("VIP on lb1");
    let node = Node::open(&l4, LB1, "none");
    assert_eq!(node.status().kind, DataplaneKind::Relay);
    node.activate();
    let mut conversations = open_conversations(&l4, 8);
    assert!(l4.ask_udp(45004).is_ok());

    let added = ("added", "tcp", ADDED_PORT, &[(HTTP1, 1), (HTTP2, 1)][..]);
    let reloaded = lb1_config(
        &l4,
        "none",
        &[
            ("who", "tcp", TCP_PORT, &[(LB2, 1), (HTTP1, 1), (HTTP2, 2)]),
            added,
        ],
    );
    node.dataplane
        .check_reconfigure(&reloaded)
        .expect("the relay takes it");
    reconfigure(&node, &reloaded).expect("reconfigure");
    assert_conversations_go_on(&l4, &mut conversations, "after the relay's reload");

    let mut seen = BTreeMap::new();
    for port in 51000..51040u16 {
        let (_, answer) = l4.ask_once(Some(port)).expect("the relay answers");
        assert_eq!(
            answer.backend,
            expected(&l4, &reloaded, "who", port),
            "port {port}: the relay chooses as the new table says"
        );
        *seen.entry(answer.backend).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    let (_, answer) = ask_port(&l4, ADDED_PORT, None).expect("the added service answers");
    assert!([HTTP1, HTTP2].contains(&answer.backend.as_str()));
    assert!(
        l4.ask_udp(45005).is_err(),
        "the removed UDP service's socket is closed"
    );
    node.shutdown();
}

/// lb1's config for `tandem run` with XDP and no VRRP (a standalone node, always master, so
/// a daemon stop leaves SERVICES as it is), `services` behind the VIP.
fn standalone_text(l4: &L4Lab, services: &[ServiceSpec]) -> String {
    let text = lb1_text(l4, "xdp-generic", services);
    text[..text.find("[[vrrp]]").expect("vrrp section")].to_owned()
        + &text[text.find("[[service]]").expect("services")..]
}

/// The control socket of lb1's daemon (l4_common's config puts it there).
fn control_socket(l4: &L4Lab) -> std::path::PathBuf {
    l4.lab.work_dir().join(format!("{LB1}.sock"))
}

/// The log of lb1's `run`-th daemon.
fn run_log(l4: &L4Lab, run: usize) -> std::path::PathBuf {
    l4.lab.work_dir().join(format!("tandem-run-{run}.log"))
}

/// Starts `tandem run` on lb1 with the config at `path` and waits until its control socket
/// answers: with no VRRP the daemon activates the data plane before it serves the socket, so
/// the maps are its own by then.
fn tandem_run(l4: &L4Lab, path: &Path, run: usize) -> Process {
    let tandem = tandem_lab::tandem_binary().expect("tandem binary");
    let mut command = l4.host(LB1).command(&tandem);
    command
        .args(["run", "--config"])
        .arg(path)
        .env("TANDEM_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(run_log(l4, run)).expect("log"));
    let mut process = l4.host(LB1).spawn(command).expect("tandem run");
    let socket = control_socket(l4);
    let ready = eventually(Duration::from_secs(30), || {
        process.is_running()
            && std::process::Command::new(&tandem)
                .args(["status", "--json", "--socket"])
                .arg(&socket)
                .output()
                .is_ok_and(|o| o.status.success())
    });
    assert!(
        ready,
        "tandem run {run} did not get ready: {}",
        std::fs::read_to_string(run_log(l4, run)).unwrap_or_default()
    );
    process
}

/// `tandem maps --json` of lb1's pins (with or without a daemon).
fn lb1_maps(l4: &L4Lab) -> serde_json::Value {
    let output = l4
        .host(LB1)
        .command(tandem_lab::tandem_binary().expect("tandem binary"))
        .args(["maps", "--json", "--pin-dir"])
        .arg(l4.lab.pin_dir(LB1))
        .output()
        .expect("run tandem maps");
    assert!(
        output.status.success(),
        "tandem maps: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// The backends of the TCP service in lb1's maps: (id, address), by id.
fn pinned_backends(l4: &L4Lab) -> Vec<(u64, String)> {
    let maps = lb1_maps(l4);
    let service = maps["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| s["port"] == TCP_PORT)
        .cloned()
        .unwrap_or_else(|| panic!("the TCP service in the maps: {maps}"));
    service["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| {
            (
                b["id"].as_u64().expect("id"),
                b["address"].as_str().expect("address").to_owned(),
            )
        })
        .collect()
}

#[test]
fn an_established_connection_survives_a_reload_that_inserts_a_backend_and_then_a_daemon_restart() {
    reload_then_restart(false);
}

/// The same, when the first daemon was a version from before tracing (its pin directory has
/// no TRACE map): the upgraded daemon creates TRACE and still keeps the flows and the ids.
#[test]
fn a_restart_that_upgrades_a_pin_directory_from_before_tracing_keeps_connections_and_ids() {
    reload_then_restart(true);
}

fn reload_then_restart(from_before_tracing: bool) {
    let l4 = L4Lab::new();
    let _servers = more_backends(&l4);
    let path = l4.lab.work_dir().join("lb1-run.toml");
    let original_text = standalone_text(&l4, &[WHO, WHO_UDP]);
    std::fs::write(&path, &original_text).expect("config");
    let original = parse(&original_text);
    let inserted: ServiceSpec = ("who", "tcp", TCP_PORT, &[(LB2, 1), (HTTP1, 1), (HTTP2, 1)]);
    let reloaded_text = standalone_text(&l4, &[inserted, WHO_UDP]);
    let reloaded = parse(&reloaded_text);

    // Connections from client ports whose new flows the reloaded table gives to lb2, and from
    // ports it leaves where they were. Numbered in config order (lb2 0, http1 1, http2 2), the
    // restarted daemon would give lb2 the id the kernel recorded http1's flows with, and
    // http1 the id of http2's: every recorded flow would be placed again, the first kind onto
    // lb2, which knows no such connection.
    let mut to_lb2 = Vec::new();
    let mut staying = Vec::new();
    for port in 53000..54000u16 {
        let before = expected(&l4, &original, "who", port);
        let after = expected(&l4, &reloaded, "who", port);
        if after == LB2 && to_lb2.len() < 4 {
            to_lb2.push((port, before));
        } else if after == before && staying.len() < 4 {
            staying.push((port, before));
        }
    }
    assert_eq!(
        (to_lb2.len(), staying.len()),
        (4, 4),
        "client ports of each kind"
    );

    let mut daemon = tandem_run(&l4, &path, 0);
    take_vip(l4.host(LB1), VIP).expect("VIP on lb1");
    let mut conversations: Vec<(Conversation, String)> = to_lb2
        .iter()
        .chain(&staying)
        .map(|(port, backend)| {
            let mut c = l4.converse(Some(*port)).expect("connect through lb1");
            let answer = l4.ask(&mut c).expect("first answer");
            assert_eq!(&answer.backend, backend, "port {port}: Maglev's choice");
            (c, backend.clone())
        })
        .collect();

    // The reload, as an operator does it: new file, `tandem reload`.
    std::fs::write(&path, &reloaded_text).expect("reloaded config");
    let reload = std::process::Command::new(tandem_lab::tandem_binary().expect("tandem binary"))
        .args(["reload", "--socket"])
        .arg(control_socket(&l4))
        .output()
        .expect("tandem reload");
    assert!(
        reload.status.success(),
        "tandem reload: {}{}",
        String::from_utf8_lossy(&reload.stdout),
        String::from_utf8_lossy(&reload.stderr)
    );
    assert_conversations_go_on(&l4, &mut conversations, "after the reload");
    let new_on_lb2 = (54000..54100u16)
        .find(|p| expected(&l4, &reloaded, "who", *p) == LB2)
        .expect("a port lb2 gets");
    assert_eq!(
        l4.ask_once(Some(new_on_lb2))
            .expect("a new connection")
            .1
            .backend,
        LB2,
        "new connections reach the inserted backend"
    );
    let ids = pinned_backends(&l4);
    let moved_before = lb1_counter(&l4, "flow_moved");

    // A clean stop: the XDP program and its maps stay, and carry the connections meanwhile.
    daemon.kill(libc::SIGTERM);
    daemon
        .wait_exit(Duration::from_secs(10))
        .expect("tandem run stops on SIGTERM");
    assert_conversations_go_on(&l4, &mut conversations, "with no daemon");
    let trace_pin = l4.lab.pin_dir(LB1).join(lb_common::TRACE_MAP);
    if from_before_tracing {
        std::fs::remove_file(&trace_pin).expect("unpin TRACE, as an older version never had it");
    }

    // The same (reloaded) config again.
    let mut daemon = tandem_run(&l4, &path, 1);
    assert_conversations_go_on(&l4, &mut conversations, "after the restart");
    assert!(trace_pin.exists(), "the restarted daemon pins TRACE");
    assert_eq!(lb1_maps(&l4)["tracing"]["state"], "off");
    assert_eq!(
        pinned_backends(&l4),
        ids,
        "the restarted daemon kept every backend's id"
    );
    assert_eq!(
        lb1_counter(&l4, "flow_moved"),
        moved_before,
        "no recorded flow was placed again"
    );
    let log = std::fs::read_to_string(run_log(&l4, 1)).unwrap_or_default();
    assert!(
        log.contains("kept the numbering of 2 services and 5 backends from the pinned maps"),
        "the restarted daemon says it kept the numbering: {log}"
    );
    assert_eq!(
        l4.ask_once(Some(new_on_lb2 + 1))
            .map(|(_, a)| a.backend)
            .ok(),
        Some(expected(&l4, &reloaded, "who", new_on_lb2 + 1)),
        "new connections follow the reloaded table"
    );
    daemon.kill(libc::SIGTERM);
    let _ = daemon.wait_exit(Duration::from_secs(10));
}

/// A counter of lb1's maps.
fn lb1_counter(l4: &L4Lab, name: &str) -> u64 {
    let maps = lb1_maps(l4);
    maps["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("counter {name}: {maps}"))
}

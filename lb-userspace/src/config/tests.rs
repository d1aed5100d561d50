//! What a user of `tandem check` sees: configs that load (with their defaults) and mistakes
//! reported as `FILE:LINE:COL: message` at the offending value.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// Lines 1 to 3 of most test configs; what follows starts on line 4.
const NODE: &str = "[node]\nname = \"lb1\"\ninterface = \"eth0\"\n";
/// Lines 4 to 8 when it follows [`NODE`].
const VRRP: &str = "[[vrrp]]
name = \"VI_1\"
virtual_router_id = 51
priority = 101
virtual_ipaddress = [\"198.18.0.99\"]
";

fn parse_ok(text: &str) -> Loaded {
    match parse(text, Path::new("t.toml")) {
        Ok(loaded) => loaded,
        Err(errors) => panic!("expected the config to load, got:\n{errors}"),
    }
}

/// The rendered errors of a config that must not load.
fn errors(text: &str) -> Vec<String> {
    match parse(text, Path::new("t.toml")) {
        Ok(loaded) => panic!("expected errors, but it loaded: {:?}", loaded.config),
        Err(Diagnostics(errors)) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// The single rendered error of a config that must not load.
fn error(text: &str) -> String {
    let mut errors = errors(text);
    assert_eq!(errors.len(), 1, "expected exactly one error: {errors:#?}");
    errors.remove(0)
}

fn warnings(text: &str) -> Vec<String> {
    parse_ok(text)
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test addresses are valid")
}

#[test]
fn design_example_parses_with_defaults_filled() {
    let text = r#"[node]
name = "lb1"
interface = "eth0"
dataplane = "xdp"            # "xdp" | "xdp-generic" | "none"

[[vrrp]]
name = "VI_1"
virtual_router_id = 51
priority = 101               # 100 on the backup
advert_interval = "1s"
virtual_ipaddress = ["198.18.0.99"]
track = [{ builtin = "proxy", weight = 2 }]   # the classic "killall -0 pound" check, built in

[[service]]
name = "web"
listen = "198.18.0.99:80"
mode = "http"                # "http" (L7 proxy) | "tcp" | "udp" (L4 in XDP, userspace fallback)
backends = ["198.18.0.102:80", "198.18.0.103:80"]
health = { interval = "2s" }
session = { type = "cookie", id = "JSESSIONID", ttl = "300s" }
"#;
    let loaded = parse_ok(text);
    assert_eq!(loaded.warnings, Vec::new());
    let expected = Config {
        node: Node {
            name: "lb1".into(),
            interface: "eth0".into(),
            dataplane: DataplaneMode::Xdp,
            bpf_pin_dir: PathBuf::from("/sys/fs/bpf/tandem"),
            control_socket: PathBuf::from("/run/tandem/tandem.sock"),
            metrics: None,
        },
        vrrp: vec![VrrpInstance {
            name: "VI_1".into(),
            interface: "eth0".into(),
            virtual_router_id: 51,
            priority: 101,
            version: 3,
            advert_interval: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
            virtual_ipaddress: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 99))],
            unicast_peer: vec![],
            allowed_sources: vec![],
            track: vec![Track::Builtin {
                check: BuiltinCheck::Proxy,
                weight: 2,
            }],
            garp_master_repeat: VrrpInstance::DEFAULT_GARP_REPEAT,
            garp_master_delay: VrrpInstance::DEFAULT_GARP_DELAY,
            notify: None,
            checksum_pseudo_header: true,
            authentication: None,
        }],
        services: vec![Service {
            name: "web".into(),
            listen: addr("198.18.0.99:80"),
            mode: ServiceMode::Http,
            backends: vec![
                Backend {
                    address: addr("198.18.0.102:80"),
                    weight: 1,
                    emergency: false,
                },
                Backend {
                    address: addr("198.18.0.103:80"),
                    weight: 1,
                    emergency: false,
                },
            ],
            backend_names: Vec::new(),
            resolve_interval: Service::DEFAULT_RESOLVE_INTERVAL,
            backend_hosts: Default::default(),
            health: HealthCheck {
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                rise: 2,
                fall: 3,
                kind: HealthKind::Tcp,
            },
            session: Some(Session {
                kind: SessionKind::Cookie,
                id: Some("JSESSIONID".into()),
                ttl: Duration::from_secs(300),
                max_entries: 100_000,
                mode: SessionMode::Learn,
            }),
            http: ServiceHttp::default(),
            balance: Balance::RoundRobin,
        }],
        proxy: ProxySettings::default(),
        replication: None,
        bgp: None,
    };
    assert_eq!(loaded.config, expected);
}

#[test]
fn example_files_load_without_errors_or_warnings() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for (file, node, priority) in [("lb1.toml", "lb1", 101), ("lb2.toml", "lb2", 100)] {
        let loaded = match load(&examples.join(file)) {
            Ok(loaded) => loaded,
            Err(errors) => panic!("{file} does not load:\n{errors}"),
        };
        assert_eq!(loaded.warnings, Vec::new(), "{file}");
        let config = loaded.config;
        assert_eq!(config.node.name, node);
        assert_eq!(config.vrrp[0].virtual_router_id, 51);
        assert_eq!(config.vrrp[0].priority, priority);
        let services: Vec<(&str, ServiceMode)> = config
            .services
            .iter()
            .map(|service| (service.name.as_str(), service.mode))
            .collect();
        assert_eq!(
            services,
            [("web", ServiceMode::Http), ("tcp-echo", ServiceMode::Tcp)]
        );
        assert_eq!(
            config.services[1].backends[1].address,
            addr("198.18.0.103:7000")
        );
    }
}

#[test]
fn unreadable_file_is_reported_without_a_location() {
    let errors = load(Path::new("/nonexistent/tandem.toml")).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    let shown = errors.to_string();
    assert!(
        shown.starts_with("/nonexistent/tandem.toml: cannot read the config file:"),
        "{shown}"
    );
}

#[test]
fn syntax_error_has_line_and_col() {
    let text = format!("{NODE}[[vrrp]]\nname = \"VI_1\nvirtual_router_id = 51\n");
    assert_eq!(
        error(&text),
        "t.toml:5:13: TOML syntax: invalid basic string"
    );
    let duplicate = format!("{NODE}name = \"lb2\"\n");
    assert_eq!(
        error(&duplicate),
        "t.toml:4:1: TOML syntax: duplicate key `name` in table `node`"
    );
    // The TOML parser has no words for this one (found by fuzzing): the message names the
    // character instead of ending at "TOML syntax: ".
    let control = format!("{NODE}# a comment\u{1}\n");
    assert_eq!(
        error(&control),
        "t.toml:4:12: TOML syntax: unexpected '\\u{1}'"
    );
}

#[test]
fn unknown_key_points_at_the_key_and_lists_the_known_ones() {
    let text = format!("{NODE}{}priorty = 100\n", VRRP);
    assert_eq!(
        error(&text),
        "t.toml:9:1: unknown key `priorty` in [[vrrp]] (expected one of: name, interface, \
         virtual_router_id, priority, version, advert_interval, preempt, preempt_delay, \
         virtual_ipaddress, unicast_peer, allowed_sources, track, garp_master_repeat, \
         garp_master_delay, notify, checksum_pseudo_header, authentication)"
    );
    let nested = format!(
        "{NODE}{VRRP}[[service]]\nname = \"web\"\nlisten = \"198.18.0.99:80\"\n\
         backends = [\"198.18.0.102:80\"]\nhealth = {{ intervall = \"2s\" }}\n"
    );
    assert_eq!(
        error(&nested),
        "t.toml:13:12: unknown key `intervall` in health (expected one of: interval, timeout, \
         rise, fall, type, path, expect)"
    );
}

#[test]
fn duplicate_vrid_points_at_the_second_instances_value() {
    let text = format!(
        "{NODE}{VRRP}[[vrrp]]\nname = \"VI_2\"\nvirtual_router_id = 51\n\
         virtual_ipaddress = [\"198.18.0.98\"]\n"
    );
    assert_eq!(
        error(&text),
        "t.toml:11:21: virtual_router_id 51 is already used on interface \"eth0\" by [[vrrp]] \
         \"VI_1\" (line 6); each IPv4 instance on one interface needs its own id"
    );
    // The same id on another interface is another virtual router.
    let other_link = text.replace("name = \"VI_2\"", "name = \"VI_2\"\ninterface = \"eth1\"");
    parse_ok(&other_link);
}

#[test]
fn priority_out_of_range_points_at_the_value() {
    let text = format!("{NODE}{}", VRRP.replace("priority = 101", "priority = 300"));
    assert_eq!(
        error(&text),
        "t.toml:7:12: priority = 300 is out of range (allowed: 1 to 255)"
    );
    let zero_vrid = format!("{NODE}{}", VRRP.replace("id = 51", "id = 0"));
    assert_eq!(
        error(&zero_vrid),
        "t.toml:6:21: virtual_router_id = 0 is out of range (allowed: 1 to 255)"
    );
}

#[test]
fn every_error_is_reported_at_once_in_file_order() {
    let text = format!(
        "{NODE}{}[[service]]\nname = \"web\"\nlisten = \"198.18.0.99:80\"\n\
         backends = [{{ address = \"198.18.0.102:80\", weight = 0 }}]\n",
        VRRP.replace("priority = 101", "priority = 300")
    );
    assert_eq!(
        errors(&text),
        [
            "t.toml:7:12: priority = 300 is out of range (allowed: 1 to 255)",
            "t.toml:12:53: weight = 0 is out of range (allowed: 1 to 1000)",
        ]
    );
}

#[test]
fn missing_keys_point_at_their_table() {
    let text = "[node]\nname = \"lb1\"\n\n[[vrrp]]\nname = \"VI_1\"\n";
    assert_eq!(
        errors(text),
        [
            "t.toml:1:1: missing `interface` in [node]",
            "t.toml:4:1: missing `virtual_router_id` in [[vrrp]]",
            "t.toml:4:1: missing `virtual_ipaddress` in [[vrrp]]",
        ]
    );
    // Each diagnostic is one line, even the long ones.
    for error in errors("[[vrrp]]\nname = 1\n") {
        assert!(
            error.starts_with("t.toml:") && !error.contains('\n'),
            "{error}"
        );
    }
}

#[test]
fn bare_integer_durations_are_rejected_with_the_fix() {
    let text = format!("{NODE}{VRRP}advert_interval = 2\n");
    assert_eq!(
        error(&text),
        "t.toml:9:19: advert_interval = 2 has no unit: durations are strings with a unit, \
         e.g. \"2s\" or \"500ms\"; write advert_interval = \"2s\""
    );
    let nonsense = format!("{NODE}{VRRP}advert_interval = \"soon\"\n");
    assert!(
        error(&nonsense).starts_with("t.toml:9:19: advert_interval = \"soon\" is not a duration"),
        "{}",
        error(&nonsense)
    );
}

#[test]
fn advert_interval_must_fit_the_vrrp_version() {
    let fast = format!("{NODE}{VRRP}advert_interval = \"100ms\"\n");
    let loaded = parse_ok(&fast);
    assert_eq!(
        loaded.config.vrrp[0].advert_interval,
        Duration::from_millis(100)
    );

    let v2 = format!("{NODE}{VRRP}version = 2\nadvert_interval = \"100ms\"\n");
    assert_eq!(
        error(&v2),
        "t.toml:10:19: advert_interval = \"100ms\" does not fit VRRPv2, which counts whole \
         seconds: allowed 1s to 255s (or set version = 3 for sub-second adverts)"
    );
    let odd = format!("{NODE}{VRRP}advert_interval = \"15ms\"\n");
    assert_eq!(
        error(&odd),
        "t.toml:9:19: advert_interval = \"15ms\" is not a multiple of 10ms: VRRPv3 counts \
         centiseconds"
    );
    let long = format!("{NODE}{VRRP}advert_interval = \"41s\"\n");
    assert_eq!(
        error(&long),
        "t.toml:9:19: advert_interval = \"41s\" is out of range for VRRPv3 (allowed: 10ms to \
         40s 950ms)"
    );
    let version = format!("{NODE}{VRRP}version = 4\n");
    assert_eq!(
        error(&version),
        "t.toml:9:11: version = 4 is out of range (allowed: 2 to 3)"
    );
}

#[test]
fn virtual_addresses_are_hosts_and_float_with_one_instance() {
    let host_prefix = format!(
        "{NODE}{}",
        VRRP.replace("198.18.0.99\"", "198.18.0.99/32\"")
    );
    assert_eq!(
        parse_ok(&host_prefix).config.vrrp[0].virtual_ipaddress,
        [IpAddr::V4(Ipv4Addr::new(198, 18, 0, 99))]
    );
    let subnet = format!(
        "{NODE}{}",
        VRRP.replace("198.18.0.99\"", "198.18.0.99/24\"")
    );
    assert_eq!(
        error(&subnet),
        "t.toml:8:22: virtual_ipaddress \"198.18.0.99/24\" has prefix length /24: a virtual \
         address is a single host; write \"198.18.0.99\" (or \"198.18.0.99/32\")"
    );
    let empty = format!("{NODE}{}", VRRP.replace("[\"198.18.0.99\"]", "[]"));
    assert!(error(&empty).starts_with("t.toml:8:21: virtual_ipaddress is empty"));

    let shared = format!(
        "{NODE}{VRRP}[[vrrp]]\nname = \"VI_2\"\nvirtual_router_id = 52\n\
         virtual_ipaddress = [\"198.18.0.98\", \"198.18.0.99\"]\n"
    );
    assert_eq!(
        error(&shared),
        "t.toml:12:37: virtual address 198.18.0.99 is already listed in [[vrrp]] \"VI_1\" \
         (line 8); an address can float with only one instance"
    );
}

#[test]
fn duplicate_names_point_at_the_second_occurrence() {
    let vrrp = format!(
        "{NODE}{VRRP}[[vrrp]]\nname = \"VI_1\"\nvirtual_router_id = 52\n\
         virtual_ipaddress = [\"198.18.0.98\"]\n"
    );
    assert_eq!(
        error(&vrrp),
        "t.toml:10:8: duplicate [[vrrp]] name \"VI_1\" (first used at line 5); give each \
         instance its own name"
    );
    let service = "[[service]]\nname = \"web\"\nlisten = \"198.18.0.99:80\"\n\
                   backends = [\"198.18.0.102:80\"]\n";
    let services = format!(
        "{NODE}{VRRP}{service}{}",
        service.replace(":80\"\nb", ":8080\"\nb")
    );
    assert_eq!(
        error(&services),
        "t.toml:14:8: duplicate [[service]] name \"web\" (first used at line 10); give each \
         service its own name"
    );
}

#[test]
fn listen_sockets_are_unique_per_transport_protocol() {
    let web = "[[service]]\nname = \"web\"\nlisten = \"198.18.0.99:80\"\n\
               backends = [\"198.18.0.102:80\"]\n";
    // mode "tcp" listens on TCP like "http": same socket.
    let tcp = web.replace("\"web\"", "\"raw\"") + "mode = \"tcp\"\n";
    assert_eq!(
        error(&format!("{NODE}{VRRP}{web}{tcp}")),
        "t.toml:15:10: listen 198.18.0.99:80 (tcp) is already used by service \"web\" \
         (line 11); use another address or port"
    );
    // UDP on the same address and port is another socket.
    let udp = web.replace("\"web\"", "\"dns\"") + "mode = \"udp\"\n";
    parse_ok(&format!("{NODE}{VRRP}{web}{udp}"));
}

#[test]
fn backends_mix_strings_and_tables_and_are_checked() {
    let text = format!(
        "{NODE}{VRRP}[[service]]\nname = \"web\"\nlisten = \"198.18.0.99:80\"\n\
         backends = [\"198.18.0.102:80\", {{ address = \"198.18.0.103:80\", weight = 2 }}]\n"
    );
    let backends = parse_ok(&text).config.services[0].backends.clone();
    assert_eq!(
        backends,
        [
            Backend {
                address: addr("198.18.0.102:80"),
                weight: 1,
                emergency: false,
            },
            Backend {
                address: addr("198.18.0.103:80"),
                weight: 2,
                emergency: false,
            },
        ]
    );

    let twice = text.replace("198.18.0.103:80", "198.18.0.102:80");
    assert_eq!(
        error(&twice),
        "t.toml:12:44: backend 198.18.0.102:80 is listed twice (first at line 12); to give it \
         more traffic, raise its weight instead"
    );
    let heavy = text.replace("weight = 2", "weight = 5000");
    assert_eq!(
        error(&heavy),
        "t.toml:12:72: weight = 5000 is out of range (allowed: 1 to 1000)"
    );
    let no_port = text.replace("\"198.18.0.102:80\"", "\"198.18.0.102\"");
    assert_eq!(
        error(&no_port),
        "t.toml:12:13: backends \"198.18.0.102\" is not an IP address with a port: it has no \
         port; write e.g. \"198.18.0.102:80\""
    );
    let empty = format!(
        "{NODE}{VRRP}[[service]]\nname = \"web\"\nlisten = \"198.18.0.99:80\"\nbackends = []\n"
    );
    assert!(error(&empty).starts_with("t.toml:12:12: backends is empty"));
}

#[test]
fn l4_backends_keep_the_listen_port() {
    let text = format!(
        "{NODE}{VRRP}[[service]]\nname = \"echo\"\nlisten = \"198.18.0.99:7000\"\n\
         mode = \"tcp\"\nbackends = [\"198.18.0.102:7000\", \"198.18.0.103:7001\"]\n"
    );
    assert_eq!(
        error(&text),
        "t.toml:13:34: backend 198.18.0.103:7001 must use port 7000 like the listen address: \
         mode = \"tcp\" services forward by direct server return, which does not rewrite ports"
    );
}

#[test]
fn session_rules() {
    let service = |mode: &str, session: &str| {
        format!(
            "{NODE}{VRRP}[[service]]\nname = \"s\"\nlisten = \"198.18.0.99:80\"\n\
             mode = \"{mode}\"\nbackends = [\"198.18.0.102:80\"]\nsession = {session}\n"
        )
    };
    assert_eq!(
        error(&service("tcp", "{ type = \"ip\" }")),
        "t.toml:14:11: session affinity needs mode = \"http\"; L4 services keep flows by \
         connection tracking"
    );
    assert_eq!(
        error(&service("http", "{ type = \"cookie\" }")),
        "t.toml:14:11: session type \"cookie\" needs `id`, the cookie name: e.g. \
         id = \"JSESSIONID\""
    );
    assert_eq!(
        error(&service("http", "{ type = \"url\" }")),
        "t.toml:14:11: session type \"url\" needs `id`, the query parameter name: e.g. \
         id = \"sid\""
    );
    assert_eq!(
        error(&service("http", "{ type = \"ip\", id = \"x\" }")),
        "t.toml:14:26: session type \"ip\" takes no `id` (the key is the client's address); \
         remove it"
    );
    assert_eq!(
        error(&service(
            "http",
            "{ type = \"cookie\", id = \"sid\", ttl = \"0s\" }"
        )),
        "t.toml:14:48: ttl must be greater than 0, e.g. \"1s\""
    );
    assert_eq!(
        error(&service("http", "{ type = \"sticky\" }")),
        "t.toml:14:20: unknown type \"sticky\" (expected one of: \"cookie\", \"ip\", \
         \"header\", \"url\", \"basic\")"
    );
    let basic = parse_ok(&service("http", "{ type = \"basic\", ttl = \"10m\" }"));
    assert_eq!(
        basic.config.services[0].session,
        Some(Session {
            kind: SessionKind::Basic,
            id: None,
            ttl: Duration::from_secs(600),
            max_entries: Session::DEFAULT_MAX_ENTRIES,
            mode: SessionMode::Learn,
        })
    );
}

#[test]
fn health_check_rules() {
    let service = |health: &str| {
        format!(
            "{NODE}{VRRP}[[service]]\nname = \"web\"\nlisten = \"198.18.0.99:80\"\n\
             backends = [\"198.18.0.102:80\"]\nhealth = {health}\n"
        )
    };
    assert_eq!(
        error(&service("{ interval = \"2s\", timeout = \"3s\" }")),
        "t.toml:13:39: timeout = \"3s\" is longer than the interval (\"2s\"): a probe must \
         finish before the next one starts"
    );
    assert_eq!(
        error(&service("{ type = \"http\", path = \"health\" }")),
        "t.toml:13:34: path \"health\" must start with '/', e.g. \"/health\""
    );
    assert_eq!(
        error(&service("{ type = \"http\", expect = 700 }")),
        "t.toml:13:36: expect = 700 is out of range (allowed: 100 to 599)"
    );
    assert_eq!(
        error(&service("{ path = \"/up\" }")),
        "t.toml:13:12: `path` applies only to HTTP health checks; add type = \"http\" to this \
         health table"
    );
    assert_eq!(
        error(&service("{ rise = 0 }")),
        "t.toml:13:19: rise = 0 is out of range (allowed: 1 or more)"
    );

    let http = parse_ok(&service(
        "{ interval = \"500ms\", type = \"http\", path = \"/up\" }",
    ));
    assert_eq!(
        http.config.services[0].health,
        HealthCheck {
            interval: Duration::from_millis(500),
            // The default timeout (1s) shrinks to fit a shorter interval.
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
            kind: HealthKind::Http {
                path: "/up".into(),
                expect_status: 200
            },
        }
    );
    // A dotted key is a table too.
    let dotted = format!(
        "{NODE}{VRRP}[[service]]\nname = \"web\"\nlisten = \"198.18.0.99:80\"\n\
         backends = [\"198.18.0.102:80\"]\nhealth.interval = \"5s\"\n"
    );
    let health = &parse_ok(&dotted).config.services[0].health;
    assert_eq!(health.interval, Duration::from_secs(5));
}

#[test]
fn track_entries() {
    let with_track = |track: &str| format!("{NODE}{VRRP}track = [{track}]\n");
    let loaded = parse_ok(&with_track(
        "{ script = \"killall -0 pound\", interval = \"2s\", weight = 2 }, \
         { interface = \"eth1\", weight = 0 }",
    ));
    assert_eq!(
        loaded.config.vrrp[0].track,
        [
            Track::Script {
                script: "killall -0 pound".into(),
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(2),
                rise: 1,
                fall: 1,
                weight: 2,
            },
            Track::Interface {
                interface: "eth1".into(),
                weight: 0
            },
        ]
    );
    assert_eq!(
        error(&with_track("{ builtin = \"proxy\", weight = 300 }")),
        "t.toml:9:40: weight = 300 is out of range (allowed: -254 to 254)"
    );
    assert_eq!(
        error(&with_track("{ builtin = \"proxy\", script = \"true\" }")),
        "t.toml:9:31: a track entry watches one thing, but this one has both `builtin` and \
         `script`; split it into two entries"
    );
    assert_eq!(
        error(&with_track("{ builtin = \"nginx\" }")),
        "t.toml:9:22: unknown builtin \"nginx\" (expected one of: \"proxy\")"
    );
    assert_eq!(
        error(&with_track("{ builtin = \"proxy\", interval = \"1s\" }")),
        "t.toml:9:31: unknown key `interval` in track entry (expected one of: builtin, weight)"
    );
}

#[test]
fn node_rules() {
    let text = "[node]\nname = \"\"\ninterface = \"a-very-long-ifname\"\ndataplane = \"dpdk\"\n";
    assert_eq!(
        errors(text),
        [
            "t.toml:2:8: `name` must not be empty",
            "t.toml:3:13: interface \"a-very-long-ifname\" is 18 bytes long; Linux interface \
             names have at most 15",
            "t.toml:4:13: unknown dataplane \"dpdk\" (expected one of: \"xdp\", \
             \"xdp-generic\", \"none\")",
        ]
    );
    let slash = format!("{NODE}{VRRP}interface = \"eth0/1\"\n");
    assert_eq!(
        error(&slash),
        "t.toml:9:13: interface \"eth0/1\" contains '/'; interface names have no '/', ':' or \
         whitespace"
    );
    assert_eq!(
        error(&format!("{NODE}[vrrp]\nname = \"VI_1\"\n")),
        "t.toml:4:1: `vrrp` must be a list of tables: write [[vrrp]], one per entry"
    );
}

#[test]
fn metrics_address_is_optional_and_checked() {
    assert_eq!(parse_ok(&format!("{NODE}{VRRP}")).config.node.metrics, None);
    let on = format!(
        "[node]\nname = \"lb1\"\ninterface = \"eth0\"\nmetrics = \"127.0.0.1:9469\"\n{VRRP}"
    );
    assert_eq!(
        parse_ok(&on).config.node.metrics,
        Some(addr("127.0.0.1:9469"))
    );
    let no_port = format!("{NODE}metrics = \"127.0.0.1\"\n{VRRP}");
    assert_eq!(
        error(&no_port),
        "t.toml:4:11: metrics \"127.0.0.1\" is not an IP address with a port: it has no \
         port; write e.g. \"127.0.0.1:80\""
    );
    let number = format!("{NODE}metrics = 9469\n{VRRP}");
    assert!(
        error(&number).starts_with("t.toml:4:11: "),
        "{}",
        error(&number)
    );
}

#[test]
fn listen_address_that_is_not_a_vip_warns() {
    let text = format!(
        "{NODE}{VRRP}[[service]]\nname = \"admin\"\nlisten = \"198.18.0.100:8080\"\n\
         backends = [\"198.18.0.102:80\"]\n"
    );
    assert_eq!(
        warnings(&text),
        [
            "t.toml:11:10: warning: service \"admin\" listens on 198.18.0.100, which is not a \
          virtual_ipaddress of any [[vrrp]] instance: it does not fail over, and is reachable \
          only where that address exists"
        ]
    );
}

#[test]
fn config_without_vrrp_warns_about_failover() {
    let text = format!(
        "{NODE}[[service]]\nname = \"web\"\nlisten = \"198.18.0.100:80\"\n\
         backends = [\"198.18.0.102:80\"]\n"
    );
    assert_eq!(
        warnings(&text),
        [
            "t.toml:1:1: warning: no [[vrrp]] instance: this node has no failover, and services \
          are reachable only where their listen addresses already exist"
        ]
    );
}

#[test]
fn unknown_top_level_sections_and_missing_node() {
    let text = format!("{NODE}{VRRP}[[services]]\nname = \"web\"\n");
    assert_eq!(
        error(&text),
        "t.toml:9:3: unknown key `services` in the top level (expected one of: node, vrrp, \
         service, proxy, replication, bgp)"
    );
    assert_eq!(
        errors(VRRP),
        [
            "t.toml:1:1: missing [node] table: every config starts with [node] and the node's \
             `name` and `interface`",
        ],
        "the [[vrrp]] entry has no interface to default to, but only the cause is reported"
    );
}

#[test]
fn json_status_shows_the_config_as_written() {
    let text = format!(
        "{NODE}dataplane = \"xdp-generic\"\n{VRRP}[[service]]\nname = \"web\"\n\
         listen = \"198.18.0.99:80\"\nbackends = [\"198.18.0.102:80\"]\n\
         health = {{ type = \"http\" }}\nsession = {{ type = \"ip\", ttl = \"90s\" }}\n"
    );
    let json = serde_json::to_value(parse_ok(&text).config).expect("config serializes");
    assert_eq!(json["node"]["dataplane"], "xdp-generic");
    assert_eq!(json["vrrp"][0]["advert_interval"], "1s");
    assert_eq!(json["vrrp"][0]["virtual_ipaddress"][0], "198.18.0.99");
    let service = &json["services"][0];
    assert_eq!(service["listen"], "198.18.0.99:80");
    assert_eq!(service["health"]["type"], "http");
    assert_eq!(service["health"]["path"], "/");
    assert_eq!(service["health"]["expect"], 200);
    assert_eq!(service["session"]["type"], "ip");
    assert_eq!(service["session"]["ttl"], "1m 30s");
}

#[test]
fn vrrp_announcement_notify_and_checksum_settings_are_read() {
    let text = format!(
        "{NODE}{VRRP}garp_master_repeat = 2\ngarp_master_delay = \"1s\"\nnotify = \"/usr/local/bin/on-vrrp\"\nchecksum_pseudo_header = false\n"
    );
    let instance = parse_ok(&text).config.vrrp.remove(0);
    assert_eq!(instance.garp_master_repeat, 2);
    assert_eq!(instance.garp_master_delay, Duration::from_secs(1));
    assert_eq!(instance.notify.as_deref(), Some("/usr/local/bin/on-vrrp"));
    assert!(!instance.checksum_pseudo_header);
}

#[test]
fn garp_repeat_out_of_range_points_at_the_value() {
    let text = format!("{NODE}{VRRP}garp_master_repeat = 1000\n");
    let message = error(&text);
    assert!(message.starts_with("t.toml:9:22:"), "{message}");
}

#[test]
fn balance_defaults_to_round_robin_and_is_for_http_only() {
    let service = |mode: &str, balance: &str| {
        format!(
            "{NODE}{VRRP}[[service]]\nname = \"s\"\nlisten = \"198.18.0.99:80\"\n\
             mode = \"{mode}\"\nbackends = [\"198.18.0.102:80\"]\n{balance}"
        )
    };
    let default = parse_ok(&service("http", ""));
    assert_eq!(default.config.services[0].balance, Balance::RoundRobin);
    let random = parse_ok(&service("http", "balance = \"random\"\n"));
    assert_eq!(random.config.services[0].balance, Balance::Random);
    assert_eq!(
        error(&service("http", "balance = \"least-conn\"\n")),
        "t.toml:14:11: unknown balance \"least-conn\" (expected one of: \"round-robin\", \
         \"random\")"
    );
    assert_eq!(
        error(&service("tcp", "balance = \"random\"\n")),
        "t.toml:14:11: balance applies to mode = \"http\" services; mode = \"tcp\" services \
         are placed by Maglev consistent hashing; remove `balance`"
    );
}

#[test]
fn emergency_backends_need_a_regular_one_and_http() {
    let service = |mode: &str, backends: &str| {
        format!(
            "{NODE}{VRRP}[[service]]\nname = \"s\"\nlisten = \"198.18.0.99:80\"\n\
             mode = \"{mode}\"\nbackends = {backends}\n"
        )
    };
    let loaded = parse_ok(&service(
        "http",
        "[\"198.18.0.102:80\", { address = \"198.18.0.103:80\", emergency = true }]",
    ));
    assert_eq!(
        loaded.config.services[0].backends,
        [
            Backend {
                address: addr("198.18.0.102:80"),
                weight: 1,
                emergency: false,
            },
            Backend {
                address: addr("198.18.0.103:80"),
                weight: 1,
                emergency: true,
            },
        ]
    );
    assert_eq!(
        error(&service(
            "http",
            "[{ address = \"198.18.0.103:80\", emergency = true }]"
        )),
        "t.toml:13:12: every backend is an emergency backend: emergency backends serve only \
         while all regular ones are down; make at least one regular (drop `emergency = true`)"
    );
    assert_eq!(
        error(&service(
            "tcp",
            "[\"198.18.0.99:80\", { address = \"198.18.0.103:80\", emergency = true }]"
        )),
        "t.toml:13:43: backend 198.18.0.103:80 is an emergency backend, which needs mode = \
         \"http\"; mode = \"tcp\" services spread flows by Maglev over every healthy backend, \
         with no emergency tier"
    );
    assert_eq!(
        error(&service(
            "http",
            "[{ address = \"198.18.0.103:80\", emergency = \"yes\" }]"
        )),
        "t.toml:13:56: `emergency` must be true or false, found string"
    );
}

#[test]
fn session_insert_mode_is_for_cookies() {
    let service = |session: &str| {
        format!(
            "{NODE}{VRRP}[[service]]\nname = \"s\"\nlisten = \"198.18.0.99:80\"\n\
             backends = [\"198.18.0.102:80\"]\nsession = {session}\n"
        )
    };
    let insert = parse_ok(&service(
        "{ type = \"cookie\", id = \"TANDEM\", mode = \"insert\" }",
    ));
    let session = insert.config.services[0].session.clone().expect("session");
    assert_eq!(session.mode, SessionMode::Insert);
    assert_eq!(session.id.as_deref(), Some("TANDEM"));
    let learn = parse_ok(&service("{ type = \"header\", id = \"X-S\" }"));
    assert_eq!(
        learn.config.services[0].session.as_ref().map(|s| s.mode),
        Some(SessionMode::Learn)
    );
    assert_eq!(
        error(&service("{ type = \"ip\", mode = \"insert\" }")),
        "t.toml:13:33: mode = \"insert\" sets a cookie of the proxy's own, so it needs \
         type = \"cookie\" (this session has type = \"ip\"); remove `mode` to learn sessions \
         instead"
    );
    assert_eq!(
        error(&service(
            "{ type = \"cookie\", id = \"A\", mode = \"rewrite\" }"
        )),
        "t.toml:13:47: unknown mode \"rewrite\" (expected one of: \"learn\", \"insert\")"
    );
}

/// A config with one learning HTTP service, then `replication` (from line 14 on).
fn with_replication(replication: &str) -> String {
    format!(
        "{NODE}{VRRP}[[service]]\nname = \"web\"\nlisten = \"198.18.0.99:80\"\n\
         backends = [\"198.18.0.102:80\"]\nsession = {{ type = \"cookie\", id = \"JSESSIONID\" }}\n\
         {replication}"
    )
}

#[test]
fn replication_names_this_nodes_listen_address_and_its_peers() {
    let loaded = parse_ok(&with_replication(
        "[replication]\nlisten = \"198.18.0.100:7946\"\npeers = [\"198.18.0.101:7946\"]\n",
    ));
    assert_eq!(loaded.warnings, Vec::new());
    assert_eq!(
        loaded.config.replication,
        Some(Replication {
            listen: addr("198.18.0.100:7946"),
            peers: vec![addr("198.18.0.101:7946")],
        })
    );
    assert_eq!(parse_ok(&with_replication("")).config.replication, None);
}

#[test]
fn replication_mistakes_are_located() {
    assert_eq!(
        error(&with_replication(
            "[replication]\nlisten = \"198.18.0.100:7946\"\n"
        )),
        "t.toml:14:1: missing `peers` in [replication]"
    );
    assert_eq!(
        error(&with_replication(
            "[replication]\nlisten = \"198.18.0.100:7946\"\npeers = []\n"
        )),
        "t.toml:16:9: peers is empty: list the other node's replication address, e.g. \
         [\"198.18.0.101:7946\"] (or remove [replication])"
    );
    assert_eq!(
        error(&with_replication(
            "[replication]\nlisten = \"198.18.0.100:7946\"\n\
             peers = [\"198.18.0.101:7946\", \"198.18.0.100:7946\"]\n"
        )),
        "t.toml:16:31: peer 198.18.0.100:7946 is this node's own listen address: list the \
         other nodes here"
    );
    assert_eq!(
        error(&with_replication(
            "[replication]\nlisten = \"198.18.0.100:7946\"\npeers = [\"0.0.0.0:7946\"]\n"
        )),
        "t.toml:16:10: peer 0.0.0.0:7946 has no address: give the other node's own address, \
         e.g. \"198.18.0.101:7946\""
    );
    assert_eq!(
        error(&with_replication(
            "[replication]\nlisten = \"198.18.0.100\"\npeers = [\"198.18.0.101:7946\"]\n"
        )),
        "t.toml:15:10: listen \"198.18.0.100\" is not an IP address with a port: it has no \
         port; write e.g. \"198.18.0.100:80\""
    );
    assert_eq!(
        error(&with_replication(
            "[replication]\nlisten = \"198.18.0.100:7946\"\npeers = [\"198.18.0.101:7946\"]\n\
             queue = 5\n"
        )),
        "t.toml:17:1: unknown key `queue` in [replication] (expected one of: listen, peers)"
    );
    assert_eq!(
        error(&with_replication(
            "[replication]\nlisten = \"198.18.0.99:80\"\npeers = [\"198.18.0.101:7946\"]\n"
        )),
        "t.toml:15:10: replication listen 198.18.0.99:80 overlaps service \"web\"'s listen \
         198.18.0.99:80 (line 11); give replication a port of its own, e.g. 198.18.0.99:7946"
    );
}

#[test]
fn replication_without_learned_sessions_warns() {
    let text = format!(
        "{NODE}{VRRP}[[service]]\nname = \"web\"\nlisten = \"198.18.0.99:80\"\n\
         backends = [\"198.18.0.102:80\"]\n\
         [replication]\nlisten = \"198.18.0.100:7946\"\npeers = [\"198.18.0.101:7946\"]\n"
    );
    assert_eq!(
        warnings(&text),
        ["t.toml:14:10: warning: [replication] has nothing to replicate: no service has a session \
          with mode = \"learn\", and no L4 service (mode tcp or udp) has flows to share"]
    );
    let with_l4 = text.replace("backends = [", "mode = \"tcp\"\nbackends = [");
    assert_eq!(
        warnings(&with_l4),
        Vec::<String>::new(),
        "an L4 service shares its flows"
    );
}

#[test]
fn allowed_sources_are_read_for_multicast_and_refused_beside_unicast_peers() {
    let multicast = format!("{NODE}{VRRP}allowed_sources = [\"198.18.0.101\"]\n");
    assert_eq!(
        parse_ok(&multicast).config.vrrp[0].allowed_sources,
        vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 101))]
    );
    let both = format!(
        "{NODE}{VRRP}unicast_peer = [\"198.18.0.101\"]\nallowed_sources = [\"198.18.0.102\"]\n"
    );
    let message = error(&both);
    assert!(
        message.starts_with("t.toml:10:19: allowed_sources is for multicast adverts"),
        "{message}"
    );
}

#[test]
fn a_v2_instance_reads_its_pass_password_and_status_json_leaves_it_out() {
    let inline = format!(
        "{NODE}{VRRP}version = 2\nauthentication = {{ type = \"PASS\", password = \"secret\" }}\n"
    );
    let table = format!(
        "{NODE}{VRRP}version = 2\n[vrrp.authentication]\ntype = \"PASS\"\npassword = \"12345678\"\n"
    );
    let config = parse_ok(&inline).config;
    assert_eq!(
        config.vrrp[0].authentication,
        Some(VrrpAuthentication::Pass {
            password: "secret".to_owned()
        })
    );
    let json = serde_json::to_value(&config).expect("config serializes");
    assert_eq!(
        json["vrrp"][0]["authentication"],
        serde_json::json!({ "type": "PASS" })
    );
    assert!(!json.to_string().contains("secret"), "{json}");
    assert!(!format!("{config:?}").contains("secret"));
    assert_eq!(
        parse_ok(&table).config.vrrp[0].authentication,
        Some(VrrpAuthentication::Pass {
            password: "12345678".to_owned()
        })
    );
    // Without the key: no authentication, and none in the JSON either.
    let plain = serde_json::to_value(parse_ok(&format!("{NODE}{VRRP}")).config).unwrap();
    assert!(plain["vrrp"][0].get("authentication").is_none(), "{plain}");
}

#[test]
fn authentication_is_refused_with_version_3_and_says_to_set_version_2() {
    // Version 3 is the default, so forgetting `version = 2` is the likely mistake.
    for version in ["", "version = 3\n"] {
        let text = format!(
            "{NODE}{VRRP}{version}authentication = {{ type = \"PASS\", password = \"secret\" }}\n"
        );
        let line = if version.is_empty() { 9 } else { 10 };
        assert_eq!(
            error(&text),
            format!(
                "t.toml:{line}:18: authentication is for VRRP version 2 only (version 3 has \
                 none): set version = 2, as the keepalived peer that uses auth_type PASS speaks \
                 it, or remove authentication"
            )
        );
    }
}

#[test]
fn pass_passwords_are_one_to_eight_bytes_and_errors_point_at_the_password() {
    let with = |password: &str| {
        format!(
            "{NODE}{VRRP}version = 2\nauthentication = {{ type = \"PASS\", password = {password} }}\n"
        )
    };
    assert_eq!(
        error(&with("\"\"")),
        "t.toml:10:46: password is empty: write 1 to 8 bytes, the same as the peer's auth_pass, \
         e.g. password = \"secret\""
    );
    assert_eq!(
        error(&with("\"averylongpassword\"")),
        "t.toml:10:46: password is 17 bytes; a VRRPv2 advert carries at most 8: shorten it (a \
         keepalived peer given this auth_pass uses its first 8 bytes, \"averylon\" here)"
    );
    // Bytes, not characters: four 2-byte letters fit, five do not.
    parse_ok(&with("\"ääää\""));
    assert!(error(&with("\"äääää\"")).contains("password is 10 bytes"));
    assert!(error(&with("\"a\\u0000b\"")).contains("NUL byte"));
    assert_eq!(
        error(&with("1111")),
        "t.toml:10:46: `password` must be a string, found integer"
    );
}

#[test]
fn authentication_type_is_pass_and_the_table_is_checked() {
    let with = |body: &str| format!("{NODE}{VRRP}version = 2\nauthentication = {body}\n");
    assert_eq!(
        error(&with("{ type = \"AH\", password = \"secret\" }")),
        "t.toml:10:27: type = \"AH\" (IPsec authentication header) is not supported: use \
         type = \"PASS\" on both nodes, or remove authentication on both"
    );
    assert_eq!(
        error(&with("{ type = \"pass\", password = \"secret\" }")),
        "t.toml:10:27: unknown type \"pass\" (expected one of: \"PASS\")"
    );
    assert_eq!(
        error(&with("{ password = \"secret\" }")),
        "t.toml:10:18: missing `type` in authentication"
    );
    assert_eq!(
        error(&with(
            "{ type = \"PASS\", password = \"secret\", pass = \"x\" }"
        )),
        "t.toml:10:56: unknown key `pass` in authentication (expected one of: type, password)"
    );
    assert_eq!(
        error(&with("\"secret\"")),
        "t.toml:10:18: authentication is a table, e.g. { type = \"PASS\", password = \
         \"secret\" }; found string"
    );
}

#[test]
fn ipv6_addresses_are_read_wherever_an_address_is_written() {
    let text = format!(
        "{NODE}metrics = \"[::1]:9469\"\n{VRRP}\
         [[service]]\nname = \"web6\"\nlisten = \"[2001:2::99]:80\"\n\
         backends = [\"[2001:2::102]:80\", \"198.18.0.103:80\", \"http1.example.com:80\"]\n\
         session = {{ type = \"cookie\", id = \"JSESSIONID\", mode = \"learn\" }}\n\
         [replication]\nlisten = \"[2001:2::100]:7946\"\npeers = [\"[2001:2::101]:7946\"]\n"
    );
    let config = parse_ok(&text).config;
    assert_eq!(config.node.metrics, Some(addr("[::1]:9469")));
    let web = &config.services[0];
    assert_eq!(web.listen, addr("[2001:2::99]:80"));
    // An HTTP service's backends may be of either family: the proxy opens its own connections.
    assert_eq!(
        web.backends.iter().map(|b| b.address).collect::<Vec<_>>(),
        [addr("[2001:2::102]:80"), addr("198.18.0.103:80")]
    );
    assert_eq!(web.backend_names[0].label(), "http1.example.com:80");
    let replication = config.replication.expect("replication");
    assert_eq!(replication.listen, addr("[2001:2::100]:7946"));
    assert_eq!(replication.peers, [addr("[2001:2::101]:7946")]);
}

#[test]
fn an_ipv6_address_with_a_port_is_written_in_brackets() {
    let service = |listen: &str| {
        format!(
            "{NODE}{VRRP}[[service]]\nname = \"web\"\nlisten = \"{listen}\"\n\
             backends = [\"198.18.0.102:80\"]\n"
        )
    };
    assert_eq!(
        error(&service("2001:2::99")),
        "t.toml:11:10: listen \"2001:2::99\" is not an IP address with a port: it has no port \
         (an IPv6 address with a port is written in brackets); write e.g. \"[2001:2::99]:80\""
    );
    assert_eq!(
        error(&service("[2001:2::99]")),
        "t.toml:11:10: listen \"[2001:2::99]\" is not an IP address with a port: write an \
         address and port, e.g. \"198.18.0.99:80\" or \"[2001:2::99]:80\""
    );
    let backend = format!(
        "{NODE}{VRRP}[[service]]\nname = \"web\"\nlisten = \"198.18.0.99:80\"\n\
         backends = [\"[2001:2::102]\"]\n"
    );
    assert_eq!(
        error(&backend),
        "t.toml:12:13: backends \"[2001:2::102]\" is not an IP address with a port: write an \
         address and port, e.g. \"198.18.0.99:80\" or \"[2001:2::99]:80\""
    );
}

#[test]
fn a_vrrp_instance_carries_one_address_family() {
    let instance = |addresses: &str, version: u8| {
        format!(
            "{NODE}[[vrrp]]\nname = \"VI_6\"\nvirtual_router_id = 51\nversion = {version}\n\
             virtual_ipaddress = {addresses}\n"
        )
    };
    assert_eq!(
        error(&instance("[\"198.18.0.99\", \"2001:2::99\"]", 3)),
        "t.toml:8:37: virtual_ipaddress 2001:2::99 is IPv6 but 198.18.0.99 is IPv4: one \
         instance carries one family, as in keepalived; put the IPv6 addresses in a second \
         [[vrrp]] instance (it may use the same virtual_router_id)"
    );
    assert_eq!(
        error(&instance("[\"2001:2::99/64\"]", 3)),
        "t.toml:8:22: virtual_ipaddress \"2001:2::99/64\" has prefix length /64: a virtual \
         address is a single host; write \"2001:2::99\" (or \"2001:2::99/128\")"
    );
    assert_eq!(
        error(&instance("[\"2001:2::99\"]", 2)),
        "t.toml:8:22: virtual_ipaddress 2001:2::99 is IPv6, which VRRP version 2 cannot \
         carry: set version = 3 (RFC 5798), as keepalived needs for IPv6 too"
    );
    let peers = format!("{NODE}{VRRP}unicast_peer = [\"2001:2::101\"]\n");
    assert_eq!(
        error(&peers),
        "t.toml:9:16: unicast_peer 2001:2::101 is not IPv4 like the instance's \
         virtual_ipaddress: VRRP adverts go between addresses of one family; list the peers' \
         IPv4 addresses"
    );
    let global = format!(
        "{NODE}[[vrrp]]\nname = \"VI_6\"\nvirtual_router_id = 51\n\
         virtual_ipaddress = [\"2001:2::99\"]\nallowed_sources = [\"fe80::1\", \"2001:2::101\"]\n"
    );
    assert_eq!(
        error(&global),
        "t.toml:8:19: allowed_sources 2001:2::101 is not a link-local address: IPv6 adverts \
         come from the sender's link-local address (RFC 5798), so list the peers' fe80:: \
         addresses (`ip -6 addr show scope link` on each peer)"
    );
}

#[test]
fn l4_backends_are_of_the_listen_address_family() {
    let text = format!(
        "{NODE}{VRRP}[[service]]\nname = \"echo\"\nlisten = \"198.18.0.99:7000\"\n\
         mode = \"tcp\"\nbackends = [\"[2001:2::102]:7000\"]\n"
    );
    assert_eq!(
        error(&text),
        "t.toml:13:13: backend [2001:2::102]:7000 is IPv6 but listen 198.18.0.99:7000 is IPv4: \
         mode = \"tcp\" services forward by direct server return, which keeps the client's \
         packet as it is; give IPv4 backends (for IPv6 clients, add a service that listens on \
         an IPv6 address)"
    );
}

/// An IPv6 instance (VRRP version 3, the default) loads, its peers IPv6 too.
#[test]
fn an_ipv6_vrrp_instance_loads() {
    let text = format!(
        "{NODE}[[vrrp]]\nname = \"VI_6\"\nvirtual_router_id = 51\n\
         virtual_ipaddress = [\"2001:2::99\", \"2001:2::98/128\"]\n\
         unicast_peer = [\"fe80::2\"]\n"
    );
    let loaded = parse_ok(&text);
    let instance = &loaded.config.vrrp[0];
    assert_eq!(instance.version, 3);
    assert_eq!(
        instance.virtual_ipaddress,
        [
            "2001:2::99".parse::<IpAddr>().unwrap(),
            "2001:2::98".parse().unwrap()
        ]
    );
    assert_eq!(
        instance.unicast_peer,
        ["fe80::2".parse::<IpAddr>().unwrap()]
    );
}

/// The data plane (XDP and the relay) forwards IPv6 L4 services, beside IPv4 ones.
#[test]
fn ipv6_l4_services_with_ipv6_backends_are_accepted() {
    let text = format!(
        "{NODE}{VRRP}[[service]]\nname = \"echo6\"\nlisten = \"[2001:2::99]:7000\"\n\
         mode = \"tcp\"\nbackends = [\"[2001:2::102]:7000\", \"[2001:2::103]:7000\"]\n\n\
         [[service]]\nname = \"dns6\"\nlisten = \"[2001:2::99]:53\"\n\
         mode = \"udp\"\nbackends = [\"[2001:2::102]:53\"]\n"
    );
    let config = parse_ok(&text).config;
    let echo = &config.services[0];
    assert_eq!(echo.listen, addr("[2001:2::99]:7000"));
    assert_eq!(echo.backends[1].address, addr("[2001:2::103]:7000"));
    assert_eq!(config.services[1].mode, ServiceMode::Udp);
}

/// Lines 4 to 6: an HTTP service on the BGP VIP 198.18.2.99.
const BGP_SERVICE: &str =
    "[[service]]\nname = \"web\"\nlisten = \"198.18.2.99:80\"\nbackends = [\"198.18.0.102:80\"]\n";

#[test]
fn bgp_section_as_in_the_contract_loads_with_its_defaults() {
    let text = format!(
        r#"{NODE}{BGP_SERVICE}[bgp]
local_as = 65001
router_id = "198.18.0.100"
peers = [{{ address = "198.18.0.1", remote_as = 65000 }},
         {{ address = "198.18.0.2", remote_as = 65000, port = 1179, password = "s3cret", hold_time = "30s" }}]
vips = ["198.18.2.99"]
"#
    );
    let loaded = parse_ok(&text);
    assert!(
        loaded.warnings.is_empty(),
        "a BGP node needs no VRRP and its VIP is not an odd listen address: {:?}",
        loaded.warnings
    );
    let bgp = loaded.config.bgp.expect("[bgp] was read");
    assert_eq!(bgp.local_as, 65001);
    assert_eq!(bgp.router_id, Ipv4Addr::new(198, 18, 0, 100));
    assert_eq!(
        bgp.hold_time,
        Duration::from_secs(9),
        "the default hold time"
    );
    assert_eq!(bgp.vips, [IpAddr::from([198, 18, 2, 99])]);
    assert_eq!(bgp.peers.len(), 2);
    assert_eq!(
        (
            bgp.peers[0].port,
            bgp.peers[0].hold_time,
            &bgp.peers[0].password
        ),
        (179, Duration::from_secs(9), &None)
    );
    assert_eq!(
        (
            bgp.peers[1].port,
            bgp.peers[1].hold_time,
            bgp.peers[1].password.as_deref()
        ),
        (1179, Duration::from_secs(30), Some("s3cret"))
    );
    let json = serde_json::to_string(&bgp).expect("serializes");
    assert!(
        !json.contains("s3cret") && json.contains("\"password\":true"),
        "status shows that a password is set, never the password: {json}"
    );
}

#[test]
fn bgp_mistakes_point_at_the_value_and_say_what_to_write() {
    let bgp = |body: &str| format!("{NODE}{BGP_SERVICE}[bgp]\n{body}");
    let base = "local_as = 65001\nrouter_id = \"198.18.0.100\"\n";
    assert_eq!(
        error(&bgp(&format!(
            "{base}peers = [{{ address = \"198.18.0.1\", remote_as = 65000 }}]\nvips = [\"198.18.2.98\"]\n"
        ))),
        "t.toml:12:9: vip 198.18.2.98 is served by no [[service]]: a node announces a VIP only \
         while a service on it has a healthy backend; add a service with listen = \
         \"198.18.2.98:80\", or remove the VIP"
    );
    assert_eq!(
        error(&bgp(&format!(
            "{base}peers = [{{ address = \"198.18.0.1\", remote_as = 65000 }}]\nvips = [\"198.18.2.99\"]\nhold_time = \"1s\"\n"
        ))),
        "t.toml:13:13: hold_time = \"1s\" is not a BGP hold time: whole seconds from \"3s\" to \
         \"65535s\" (RFC 4271); the router withdraws a silent node's routes after it, e.g. \"9s\""
    );
    assert_eq!(
        error(&bgp(
            "local_as = 65001\nrouter_id = \"2001:2::100\"\npeers = [{ address = \"198.18.0.1\", remote_as = 65000 }]\nvips = [\"198.18.2.99\"]\n"
        )),
        "t.toml:10:13: router_id 2001:2::100 is not a usable BGP identifier: it is a non-zero IPv4 \
         address (RFC 6286), usually the node's own, e.g. \"198.18.0.100\", also on IPv6-only \
         nodes"
    );
    assert_eq!(
        error(&bgp(&format!(
            "{base}peers = [{{ address = \"198.18.0.1\", remote_as = 65000 }}, {{ address = \"198.18.0.1\", remote_as = 65002 }}]\nvips = [\"198.18.2.99\"]\n"
        ))),
        "t.toml:11:57: peer 198.18.0.1 is listed twice (first on line 11); BGP has one session \
         per neighbour address"
    );
    assert_eq!(
        error(&bgp(&format!(
            "{base}peers = [{{ address = \"198.18.0.1\", remote_as = 65000, hold = \"3s\" }}]\nvips = [\"198.18.2.99\"]\n"
        ))),
        "t.toml:11:55: unknown key `hold` in a [bgp] peer (expected one of: address, remote_as, \
         port, password, hold_time)"
    );
    assert_eq!(
        error(&bgp(&format!(
            "{base}peers = []\nvips = [\"198.18.2.99\"]\n"
        ))),
        "t.toml:11:9: peers is empty: list the routers to announce to, e.g. [{ address = \
         \"198.18.0.1\", remote_as = 65000 }] (or remove [bgp])"
    );
    assert_eq!(
        error(&bgp(
            "local_as = 23456\nrouter_id = \"198.18.0.100\"\npeers = [{ address = \"198.18.0.1\", remote_as = 65000 }]\nvips = [\"198.18.2.99\"]\n"
        )),
        "t.toml:9:12: local_as = 23456 is AS_TRANS (RFC 6793), which no router may use as its \
         own; a private AS is 64512..=65534 or 4200000000..=4294967294"
    );
}

#[test]
fn a_bgp_vip_is_not_also_floated_by_vrrp_and_needs_a_peer_of_its_family() {
    let text = format!(
        "{NODE}{VRRP}[[service]]\nname = \"web\"\nlisten = \"0.0.0.0:80\"\nbackends = [\"198.18.0.102:80\"]\n\
         [[service]]\nname = \"web6\"\nlisten = \"[2001:2::99]:80\"\nbackends = [\"[2001:2::102]:80\"]\n\
         [bgp]\nlocal_as = 65001\nrouter_id = \"198.18.0.100\"\n\
         peers = [{{ address = \"198.18.0.1\", remote_as = 65000 }}]\n\
         vips = [\"198.18.0.99\", \"2001:2::99\"]\n"
    );
    assert_eq!(
        errors(&text),
        [
            "t.toml:21:9: vip 198.18.0.99 is also in [[vrrp]] \"VI_1\" (line 5): an address is \
             either floated by VRRP or announced over BGP by every node; remove it from one of \
             them",
            "t.toml:21:24: vip 2001:2::99 is IPv6 but no [bgp] peer is: add the router's IPv6 \
             address to peers to announce it",
        ]
    );
}

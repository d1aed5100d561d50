//! The importers: tokenizers, each mapping, the listing of what is not translated, and the
//! golden files for the classic tutorial's configuration (`testdata/`, copied from
//! `shared/classic`). To rewrite the golden files after an intended change, run the tests with
//! `TANDEM_BLESS=1` and review the diff.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use super::*;
use crate::config::{self, BuiltinCheck, Loaded, SessionKind, Track, VrrpAuthentication};

const POUND_CFG: &str = include_str!("testdata/pound.cfg");
const KEEPALIVED_LB1: &str = include_str!("testdata/keepalived-lb1.conf");
const KEEPALIVED_LB2: &str = include_str!("testdata/keepalived-lb2.conf");

fn classic_options(node: &str) -> Options {
    Options {
        node: Some(node.to_owned()),
        hosts: HashMap::from([
            (
                "http1.example.com".to_owned(),
                Ipv4Addr::new(198, 18, 0, 102),
            ),
            (
                "http2.example.com".to_owned(),
                Ipv4Addr::new(198, 18, 0, 103),
            ),
        ]),
    }
}

fn pound(text: &str) -> Source<'_> {
    Source {
        label: "pound.cfg",
        text,
    }
}

fn keepalived(text: &str) -> Source<'_> {
    Source {
        label: "keepalived.conf",
        text,
    }
}

fn import_ok(pound: Option<Source>, keepalived: Option<Source>, options: &Options) -> Imported {
    match import(pound, keepalived, options) {
        Ok(imported) => imported,
        Err(err) => panic!("expected the files to import, got: {err}"),
    }
}

fn load(imported: &Imported) -> Loaded {
    match config::parse(&imported.toml, Path::new("imported.toml")) {
        Ok(loaded) => loaded,
        Err(errors) => panic!(
            "the imported config does not load:\n{errors}\n--- output:\n{}",
            imported.toml
        ),
    }
}

/// Each untranslated finding as `LINE: message start`, for compact assertions.
fn listed(imported: &Imported) -> Vec<String> {
    imported
        .untranslated
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/import/testdata")
        .join(name);
    if std::env::var_os("TANDEM_BLESS").is_some() {
        std::fs::write(&path, actual).expect("write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{}: {err} (run with TANDEM_BLESS=1)", path.display()));
    assert!(
        expected == actual,
        "{} differs from the output (run with TANDEM_BLESS=1 to accept it):\n{actual}",
        path.display()
    );
}

// ---- the classic tutorial's files ----

#[test]
fn classic_lb1_imports_exactly_as_the_golden_file() {
    let imported = import_ok(
        Some(Source {
            label: "pound.cfg",
            text: POUND_CFG,
        }),
        Some(Source {
            label: "keepalived-lb1.conf",
            text: KEEPALIVED_LB1,
        }),
        &classic_options("lb1"),
    );
    golden("lb1.toml", &imported.toml);
}

#[test]
fn classic_lb2_imports_exactly_as_the_golden_file() {
    let imported = import_ok(
        Some(Source {
            label: "pound.cfg",
            text: POUND_CFG,
        }),
        Some(Source {
            label: "keepalived-lb2.conf",
            text: KEEPALIVED_LB2,
        }),
        &classic_options("lb2"),
    );
    golden("lb2.toml", &imported.toml);
}

#[test]
fn classic_output_loads_without_errors_or_warnings_and_means_the_tutorial() {
    for (node, text, priority) in [("lb1", KEEPALIVED_LB1, 101), ("lb2", KEEPALIVED_LB2, 100)] {
        let imported = import_ok(
            Some(pound(POUND_CFG)),
            Some(keepalived(text)),
            &classic_options(node),
        );
        let loaded = load(&imported);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let config = loaded.config;
        assert_eq!(config.node.name, node);
        assert_eq!(config.node.interface, "eth0");
        let [vrrp] = config.vrrp.as_slice() else {
            panic!("one instance: {:?}", config.vrrp)
        };
        assert_eq!(vrrp.name, "VI_1");
        assert_eq!(vrrp.virtual_router_id, 51);
        assert_eq!(vrrp.priority, priority);
        assert_eq!(vrrp.version, 2, "keepalived's default version");
        assert_eq!(vrrp.advert_interval, Duration::from_secs(1));
        assert!(vrrp.preempt);
        assert_eq!(vrrp.virtual_ipaddress, [Ipv4Addr::new(192, 168, 0, 99)]);
        assert_eq!(
            vrrp.track,
            [Track::Builtin {
                check: BuiltinCheck::Proxy,
                weight: 2
            }]
        );
        let [web] = config.services.as_slice() else {
            panic!("one service: {:?}", config.services)
        };
        assert_eq!(web.listen.to_string(), "192.168.0.99:80");
        let backends: Vec<String> = web.backends.iter().map(|b| b.address.to_string()).collect();
        assert_eq!(backends, ["198.18.0.102:80", "198.18.0.103:80"]);
        assert!(web.backends.iter().all(|b| b.weight == 1 && !b.emergency));
        assert_eq!(web.balance, config::Balance::Random, "Pound's choice");
        assert_eq!(web.health.interval, Duration::from_secs(2));
        let session = web.session.as_ref().expect("a session");
        assert_eq!(session.kind, SessionKind::Cookie);
        assert_eq!(session.id.as_deref(), Some("JSESSIONID"));
        assert_eq!(session.ttl, Duration::from_secs(300));
        assert_eq!(u8::from(config.proxy.access_log.level), 1);
    }
}

#[test]
fn classic_files_translate_completely_and_note_user_group_and_the_rest() {
    let imported = import_ok(
        Some(pound(POUND_CFG)),
        Some(keepalived(KEEPALIVED_LB1)),
        &classic_options("lb1"),
    );
    assert!(imported.is_complete(), "{:?}", listed(&imported));
    let noted: Vec<String> = imported
        .notes
        .iter()
        .map(|n| format!("{}:{}", n.file, n.line.unwrap_or(0)))
        .collect();
    assert_eq!(
        noted,
        [
            "pound.cfg:0",
            "pound.cfg:6",
            "pound.cfg:7",
            "pound.cfg:28",
            "pound.cfg:32",
            "keepalived.conf:1",
            "keepalived.conf:7",
            "keepalived.conf:9"
        ]
    );
    assert!(imported.notes[0].message.contains("balance = \"random\""));
    assert!(imported.notes[1]
        .message
        .contains("not needed: Tandem runs under systemd's User="));
    assert!(imported.notes[7]
        .message
        .contains("priority becomes master"));
}

#[test]
fn the_classic_pound_cfg_imports_as_it_is_with_its_host_names_for_the_node_to_resolve() {
    let options = Options {
        node: Some("lb1".to_owned()),
        hosts: HashMap::new(),
    };
    let imported = import_ok(
        Some(pound(POUND_CFG)),
        Some(keepalived(KEEPALIVED_LB1)),
        &options,
    );
    assert!(imported.is_complete(), "{:?}", listed(&imported));
    let web = &load(&imported).config.services[0];
    let names: Vec<String> = web.backend_names.iter().map(|n| n.label()).collect();
    assert_eq!(names, ["http1.example.com:80", "http2.example.com:80"]);
    assert!(web.backends.is_empty(), "addresses come from the resolver");
}

#[test]
fn the_notes_head_the_output_and_the_file_still_loads() {
    let imported = import_ok(Some(pound(POUND_CFG)), None, &classic_options("lb1"));
    let header: Vec<&str> = imported
        .toml
        .lines()
        .take_while(|line| line.starts_with('#'))
        .collect();
    let header = header.join("\n");
    assert!(!header.contains("NOT TRANSLATED"), "{header}");
    assert!(
        header.contains("#  pound.cfg:6: User \"www-data\": not needed"),
        "{header}"
    );
    assert!(
        header.contains("#  pound.cfg:7: Group \"www-data\": not needed"),
        "{header}"
    );
    // Without keepalived the node has no failover, which `tandem check` warns about.
    let loaded = load(&imported);
    assert!(loaded.config.vrrp.is_empty());
    assert_eq!(loaded.config.node.name, "lb1");
}

#[test]
fn a_complete_translation_has_no_list_and_says_so() {
    let text = "Alive 5\nListenHTTP\n Address 198.18.0.99\n Port 80\nEnd\nService\n BackEnd\n  \
                Address 198.18.0.102\n  Port 80\n End\nEnd\n";
    let imported = import_ok(Some(pound(text)), None, &Options::default());
    assert!(imported.is_complete(), "{:?}", imported.untranslated);
    assert!(!imported.toml.contains("NOT TRANSLATED"));
    let service = &load(&imported).config.services[0];
    assert_eq!(service.health.interval, Duration::from_secs(5));
    assert!(service.session.is_none());
}

#[test]
fn control_characters_in_a_listed_directive_are_escaped_and_the_output_still_loads() {
    // Found by fuzzing: the directive went into its comment as it was, and a TOML comment may
    // not hold a control character, so the output was not TOML.
    let text = "Alive 5\nX\u{1}Y \"a\u{7f}\"\nListenHTTP\n Address 198.18.0.99\n Port 80\nEnd\n\
                Service\n BackEnd\n  Address 198.18.0.102\n  Port 80\n End\nEnd\n";
    let imported = import_ok(Some(pound(text)), None, &Options::default());
    assert_eq!(listed(&imported).len(), 1, "{:?}", listed(&imported));
    assert!(
        imported
            .toml
            .contains("#  pound.cfg:2: X\\u{1}Y \"a\\u{7f}\": "),
        "{}",
        imported.toml
    );
    load(&imported);
}

// ---- the Pound tokenizer ----

fn pound_error(text: &str) -> String {
    match import(Some(pound(text)), None, &Options::default()) {
        Ok(imported) => panic!("expected a syntax error, got:\n{}", imported.toml),
        Err(err) => err.to_string(),
    }
}

#[test]
fn pound_words_may_be_quoted_with_escapes_and_regex_backslashes_survive() {
    let directives =
        pound::tokenize("HeadRequire \"Host: a b\"\nX \"say \\\"hi\\\" \\\\\" \"^/a\\.b\"\n")
            .expect("tokenizes");
    assert_eq!(directives[0].args, ["Host: a b"]);
    assert_eq!(directives[1].args, ["say \"hi\" \\", "^/a\\.b"]);
    assert_eq!(directives[1].line, 2);
}

#[test]
fn pound_comments_end_a_line_but_not_inside_quotes() {
    let directives =
        pound::tokenize("# a comment\n\nPort 80 # http\nID \"a # b\"\n").expect("tokenizes");
    assert_eq!(directives.len(), 2);
    assert_eq!(directives[0].keyword, "Port");
    assert_eq!(directives[0].args, ["80"]);
    assert_eq!(directives[0].text, "Port 80");
    assert_eq!(directives[0].line, 3);
    assert_eq!(directives[1].args, ["a # b"]);
}

#[test]
fn pound_blocks_nest_and_keywords_ignore_case() {
    let directives = pound::tokenize(
        "listenhttp\n  ADDRESS 1.2.3.4\n  service\n    backend\n      port 80\n    END\n  \
         end\nEnd\n",
    )
    .expect("tokenizes");
    let [listener] = directives.as_slice() else {
        panic!("{directives:?}")
    };
    let service = &listener.children()[1];
    assert_eq!(service.keyword, "service");
    assert_eq!(service.children()[0].children()[0].args, ["80"]);
}

#[test]
fn pound_nesting_errors_name_the_line() {
    assert_eq!(
        pound_error("Alive 2\nEnd\n"),
        "pound.cfg:2: End without a block to close (ListenHTTP, Service, BackEnd, Session, ... \
         End)"
    );
    assert_eq!(
        pound_error("Service\n  BackEnd\n    Port 80\nEnd\n"),
        "pound.cfg:1: Service is never closed: add an End after its last line"
    );
    assert_eq!(
        pound_error("Service\n  BackEnd\n    Port 80\n  End\n  BackEnd\n    Port 81\n"),
        "pound.cfg:5: BackEnd is never closed: add an End after its last line (2 blocks are \
         open at the end of the file)"
    );
    assert_eq!(
        pound_error("ListenHTTP\n  Port 80\nService\nEnd\nListenHTTP\n"),
        "pound.cfg:5: ListenHTTP cannot be inside ListenHTTP (opened at line 1): is an End \
         missing before this line?"
    );
    assert_eq!(
        pound_error("Service\n  Session\n    BackEnd\n"),
        "pound.cfg:3: BackEnd cannot be inside Session (opened at line 2): is an End missing \
         before this line?"
    );
    assert_eq!(
        pound_error("LogLevel 1\nUser \"www-data\n"),
        "pound.cfg:2: unterminated quoted string: add the closing \""
    );
}

// ---- the keepalived tokenizer ----

fn keepalived_error(text: &str) -> String {
    match import(None, Some(keepalived(text)), &Options::default()) {
        Ok(imported) => panic!("expected a syntax error, got:\n{}", imported.toml),
        Err(err) => err.to_string(),
    }
}

#[test]
fn keepalived_braces_open_blocks_on_the_same_line_the_next_or_one_line() {
    let directives = keepalived::tokenize(
        "vrrp_instance VI_1\n{\n  virtual_ipaddress { 198.18.0.99 dev eth0 }\n  \
         track_script {\n    chk\n  }\n}\n",
    )
    .expect("tokenizes");
    let [instance] = directives.as_slice() else {
        panic!("{directives:?}")
    };
    assert_eq!(instance.args, ["VI_1"]);
    assert_eq!(instance.line, 1);
    let [vips, track] = instance.children() else {
        panic!("{instance:?}")
    };
    assert_eq!(vips.keyword, "virtual_ipaddress");
    assert_eq!(vips.children()[0].keyword, "198.18.0.99");
    assert_eq!(vips.children()[0].args, ["dev", "eth0"]);
    assert_eq!(vips.children()[0].text, "198.18.0.99 dev eth0");
    assert_eq!(track.children()[0].keyword, "chk");
}

#[test]
fn keepalived_comments_and_quotes() {
    let directives = keepalived::tokenize(
        "! Configuration File for keepalived\nvrrp_script chk {   # note\n  script \"killall \
         -0 pound\"   ! cheaper\n  weight 2\n}\n",
    )
    .expect("tokenizes");
    let script = &directives[0];
    assert_eq!(script.text, "vrrp_script chk");
    assert_eq!(script.children()[0].args, ["killall -0 pound"]);
    assert_eq!(script.children()[0].text, "script \"killall -0 pound\"");
    assert_eq!(script.children()[1].line, 4);
}

#[test]
fn keepalived_nesting_errors_name_the_line() {
    assert_eq!(
        keepalived_error("global_defs {\n  router_id lb1\n}\n}\n"),
        "keepalived.conf:4: `}` without a block to close"
    );
    assert_eq!(
        keepalived_error("vrrp_instance VI_1 {\n  track_script {\n    chk\n}\n"),
        "keepalived.conf:1: the block of `vrrp_instance VI_1` is never closed: a `}` is missing"
    );
    assert_eq!(
        keepalived_error("{\n}\n"),
        "keepalived.conf:1: `{` without a keyword before it"
    );
    assert_eq!(
        keepalived_error("vrrp_script chk {\n  script \"pidof pound\n}\n"),
        "keepalived.conf:2: unterminated quoted string: add the closing \""
    );
}

// ---- Pound mappings ----

/// pound.cfg text with one listener on 198.18.0.99:80 around `services`.
fn pound_with(globals: &str, services: &str) -> String {
    format!("{globals}ListenHTTP\n Address 198.18.0.99\n Port 80\nEnd\n{services}")
}

const BACKEND: &str = " BackEnd\n  Address 198.18.0.102\n  Port 80\n End\n";

#[test]
fn pound_globals_map_to_proxy_and_health() {
    let text = pound_with(
        "Alive 7\nLogLevel 2\nTimeOut 20\nConnTO 3\nClient 12\n",
        &format!("Service\n{BACKEND}End\n"),
    );
    let imported = import_ok(Some(pound(&text)), None, &Options::default());
    assert!(imported.is_complete(), "{:?}", listed(&imported));
    let config = load(&imported).config;
    assert_eq!(config.services[0].health.interval, Duration::from_secs(7));
    assert_eq!(config.proxy.backend_timeout, Duration::from_secs(20));
    assert_eq!(config.proxy.connect_timeout, Duration::from_secs(3));
    assert_eq!(config.proxy.header_timeout, Duration::from_secs(12));
    assert_eq!(u8::from(config.proxy.access_log.level), 2);
}

#[test]
fn pound_without_alive_keeps_its_default_of_30_seconds() {
    let text = pound_with("", &format!("Service\n{BACKEND}End\n"));
    let imported = import_ok(Some(pound(&text)), None, &Options::default());
    assert_eq!(
        load(&imported).config.services[0].health.interval,
        Duration::from_secs(30)
    );
    assert!(
        imported.notes[0].message.starts_with("no Alive"),
        "{:?}",
        imported.notes
    );
}

#[test]
fn pound_log_levels() {
    for (level, written, listed_count) in [(0, 0, 0), (1, 1, 0), (3, 3, 1), (4, 3, 0), (5, 3, 1)] {
        let text = pound_with(
            &format!("LogLevel {level}\n"),
            &format!("Service\n{BACKEND}End\n"),
        );
        let imported = import_ok(Some(pound(&text)), None, &Options::default());
        assert_eq!(
            imported.untranslated.len(),
            listed_count,
            "LogLevel {level}"
        );
        let config = load(&imported).config;
        assert_eq!(
            u8::from(config.proxy.access_log.level),
            written,
            "LogLevel {level}"
        );
    }
    let text = pound_with("LogLevel 9\n", &format!("Service\n{BACKEND}End\n"));
    let imported = import_ok(Some(pound(&text)), None, &Options::default());
    assert_eq!(imported.untranslated[0].line, Some(1));
}

#[test]
fn pound_differing_node_wide_values_are_listed_and_the_first_kept() {
    let text = pound_with(
        "TimeOut 15\n",
        "Service\n BackEnd\n  Address 198.18.0.102\n  Port 80\n  TimeOut 60\n End\nEnd\n",
    );
    let imported = import_ok(Some(pound(&text)), None, &Options::default());
    assert_eq!(
        listed(&imported),
        [
            "pound.cfg:10: TimeOut 60: Tandem has one [proxy] backend_timeout for the whole node; \
          \"15s\" from line 1 is written: decide which value the node needs"
        ]
    );
    assert_eq!(
        load(&imported).config.proxy.backend_timeout,
        Duration::from_secs(15)
    );
}

#[test]
fn pound_https_listener_gets_tls_with_the_cert_file_as_cert_and_key() {
    let text = format!(
        "ListenHTTPS\n Address 198.18.0.99\n Port 443\n Cert \"/etc/pound/site.pem\"\n \
         Ciphers \"ALL\"\nEnd\nService\n{BACKEND}End\n"
    );
    let imported = import_ok(Some(pound(&text)), None, &Options::default());
    assert_eq!(
        imported.untranslated.len(),
        1,
        "Ciphers: {:?}",
        listed(&imported)
    );
    assert_eq!(imported.untranslated[0].line, Some(5));
    let service = &load(&imported).config.services[0];
    assert_eq!(service.listen.to_string(), "198.18.0.99:443");
    let tls = service.http.tls.as_ref().expect("tls");
    assert_eq!(tls.certificates[0].cert, Path::new("/etc/pound/site.pem"));
    assert_eq!(tls.certificates[0].key, Path::new("/etc/pound/site.pem"));
}

#[test]
fn pound_host_and_url_become_host_and_path_prefix_when_plain() {
    let text = pound_with(
        "",
        &format!(
            "Service \"app\"\n HeadRequire \"Host: www\\.example\\.com\"\n URL \"^/app/.*\"\n\
             {BACKEND}End\nService \"other\"\n HeadRequire \"^Host:[ \\t]*Other.Example.org$\"\n\
             {BACKEND}End\nService \"rest\"\n URL \".*\"\n{BACKEND}End\n"
        ),
    );
    let imported = import_ok(Some(pound(&text)), None, &Options::default());
    assert!(imported.is_complete(), "{:?}", listed(&imported));
    let services = load(&imported).config.services;
    assert_eq!(services[0].name, "app");
    assert_eq!(services[0].http.hosts, ["www.example.com"]);
    assert_eq!(services[0].http.path_prefix.as_deref(), Some("/app"));
    assert_eq!(services[1].http.hosts, ["other.example.org"]);
    assert_eq!(services[1].http.path_prefix, None);
    assert!(services[2].http.hosts.is_empty());
    assert_eq!(services[2].http.path_prefix, None);
}

#[test]
fn pound_patterns_that_are_not_plain_are_listed() {
    let text = pound_with(
        "",
        &format!(
            "Service\n HeadRequire \"Host: .*example.com.*\"\n URL \"\\.(jpg|png)$\"\n \
             HeadRequire \"X-Forwarded-Proto: https\"\n HeadDeny \"User-Agent: bot\"\n\
             {BACKEND}End\n"
        ),
    );
    let imported = import_ok(Some(pound(&text)), None, &Options::default());
    let lines: Vec<Option<usize>> = imported.untranslated.iter().map(|f| f.line).collect();
    assert_eq!(lines, [Some(6), Some(7), Some(8), Some(9)]);
    assert!(imported.untranslated[0]
        .message
        .contains("not a plain host name"));
    assert!(imported.untranslated[1].message.contains("path_prefix"));
    assert!(imported.untranslated[2]
        .message
        .contains("Host and path prefix only"));
    load(&imported);
}

#[test]
fn pound_priorities_become_weights_and_emergency_an_emergency_backend() {
    let text = pound_with(
        "",
        "Service\n BackEnd\n  Address 198.18.0.102\n  Port 80\n  Priority 8\n End\n BackEnd\n  \
         Address 198.18.0.103\n  Port 80\n End\n Emergency\n  Address 198.18.0.104\n  Port \
         8080\n End\nEnd\n",
    );
    let imported = import_ok(Some(pound(&text)), None, &Options::default());
    assert!(imported.is_complete(), "{:?}", listed(&imported));
    let backends = &load(&imported).config.services[0].backends;
    let summary: Vec<(String, u32, bool)> = backends
        .iter()
        .map(|b| (b.address.to_string(), b.weight, b.emergency))
        .collect();
    assert_eq!(
        summary,
        [
            ("198.18.0.102:80".to_owned(), 8, false),
            ("198.18.0.103:80".to_owned(), 5, false),
            ("198.18.0.104:8080".to_owned(), 1, true),
        ]
    );
}

#[test]
fn pound_sessions() {
    let session = |body: &str| {
        let text = pound_with(
            "",
            &format!("Service\n{BACKEND} Session\n{body} End\nEnd\n"),
        );
        import_ok(Some(pound(&text)), None, &Options::default())
    };
    let cases = [
        ("  Type IP\n  TTL 120\n", SessionKind::Ip, None),
        (
            "  Type Header\n  ID \"X-Session\"\n  TTL 60\n",
            SessionKind::Header,
            Some("X-Session"),
        ),
        (
            "  Type URL\n  ID \"sid\"\n  TTL 60\n",
            SessionKind::Url,
            Some("sid"),
        ),
        ("  Type BASIC\n  TTL 60\n", SessionKind::Basic, None),
    ];
    for (body, kind, id) in cases {
        let imported = session(body);
        assert!(imported.is_complete(), "{body}: {:?}", listed(&imported));
        let config = load(&imported).config;
        let got = config.services[0].session.as_ref().expect("a session");
        assert_eq!((got.kind, got.id.as_deref()), (kind, id), "{body}");
    }
    // Pound ignores an ID for IP sessions; Tandem refuses one, so it is left out and noted.
    let imported = session("  Type IP\n  ID \"x\"\n  TTL 60\n");
    assert!(imported.is_complete());
    assert!(imported
        .notes
        .iter()
        .any(|n| n.message.contains("uses no ID")));
    load(&imported);

    let imported = session("  Type PARM\n  ID \"jsessionid\"\n  TTL 60\n");
    assert_eq!(imported.untranslated[0].line, Some(11));
    assert!(imported.untranslated[0].message.contains("path parameter"));
    assert!(load(&imported).config.services[0].session.is_none());

    let imported = session("  Type Cookie\n  TTL 60\n");
    assert_eq!(
        listed(&imported),
        [
            "pound.cfg:10: Session: Type cookie needs an ID (the cookie name); the session is not \
          written"
        ]
    );
}

#[test]
fn pound_host_names_take_the_mapped_address_or_stay_names_for_the_node_to_resolve() {
    let text = pound_with(
        "",
        "Service\n BackEnd\n  Address app1.example.com\n  Port 80\n End\n BackEnd\n  Address \
         APP2.example.com\n  Port 80\n End\nEnd\n",
    );
    let options = Options {
        node: None,
        hosts: parse_hosts("# hosts\n198.18.0.102 app1.example.com app1\n::1 localhost\n"),
    };
    let imported = import_ok(Some(pound(&text)), None, &options);
    assert!(listed(&imported).is_empty(), "{:?}", listed(&imported));
    assert!(
        imported.notes.iter().any(|note| note.line == Some(11)
            && note
                .message
                .contains("APP2.example.com is written as a host name")),
        "{:?}",
        imported.notes
    );
    assert!(imported
        .toml
        .contains("backends = [\"198.18.0.102:80\", \"APP2.example.com:80\"]"));
    let service = &load(&imported).config.services[0];
    assert_eq!(service.backend_names[0].label(), "app2.example.com:80");
}

#[test]
fn pound_unknown_and_unneeded_directives_are_listed_with_their_line() {
    let text = pound_with(
        "User \"www-data\"\nGroup \"www-data\"\nRootJail \"/chroot/pound\"\nDaemon 0\n\
         Frobnicate 3\nInclude \"/etc/pound/more.cfg\"\n",
        "Service\n Redirect \"https://example.com\"\n BackEnd\n  Address /run/app.sock\n End\n\
         End\n",
    );
    let imported = import_ok(Some(pound(&text)), None, &Options::default());
    let got: Vec<(Option<usize>, &str)> = imported
        .untranslated
        .iter()
        .map(|f| (f.line, f.message.split(':').next().unwrap_or_default()))
        .collect();
    assert_eq!(
        got,
        [
            (Some(3), "not needed"),
            (Some(4), "not needed"),
            (
                Some(5),
                "Tandem has no equivalent for this directive; check that the setup works \
                       without it"
            ),
            (Some(6), "not followed"),
            (
                Some(7),
                "no Service Tandem can write applies to this listener, so nothing listens here \
                 (Pound answers 503)"
            ),
            (Some(11), "no BackEnd Tandem can use"),
            (
                Some(12),
                "Tandem has no redirect services; let a back-end answer with the redirect"
            ),
            (Some(14), "a Unix socket back-end"),
        ]
    );
    assert_eq!(
        imported.untranslated[2].to_string(),
        format!(
            "pound.cfg:5: Frobnicate 3: {}",
            imported.untranslated[2].message
        )
    );
}

#[test]
fn pound_global_services_serve_every_listener_after_its_own() {
    let text = format!(
        "ListenHTTP\n Address 198.18.0.99\n Port 80\n Service \"local\"\n  URL \"^/api\"\n\
         {BACKEND} End\nEnd\nListenHTTPS\n Address 198.18.0.99\n Port 443\n Cert \"/c.pem\"\n\
         End\nService\n{BACKEND}End\n"
    );
    let imported = import_ok(Some(pound(&text)), None, &Options::default());
    assert!(imported.is_complete(), "{:?}", listed(&imported));
    let services = load(&imported).config.services;
    let summary: Vec<(String, String, bool)> = services
        .iter()
        .map(|s| (s.name.clone(), s.listen.to_string(), s.http.tls.is_some()))
        .collect();
    assert_eq!(
        summary,
        [
            ("local".to_owned(), "198.18.0.99:80".to_owned(), false),
            ("web".to_owned(), "198.18.0.99:80".to_owned(), false),
            ("web-443".to_owned(), "198.18.0.99:443".to_owned(), true),
        ]
    );
}

#[test]
fn pound_services_pound_could_never_reach_are_listed_not_written() {
    let text = pound_with(
        "",
        &format!("Service \"a\"\n{BACKEND}End\nService \"b\"\n{BACKEND}End\n"),
    );
    let imported = import_ok(Some(pound(&text)), None, &Options::default());
    assert_eq!(imported.untranslated.len(), 1);
    assert_eq!(imported.untranslated[0].line, Some(11));
    assert!(imported.untranslated[0]
        .message
        .contains("the Service at line 5"));
    assert_eq!(load(&imported).config.services.len(), 1);
}

// ---- keepalived mappings ----

const INSTANCE: &str = "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 51\n  \
                        virtual_ipaddress {\n    198.18.0.99\n  }\n";

fn keepalived_import(text: &str) -> Imported {
    import_ok(None, Some(keepalived(text)), &Options::default())
}

#[test]
fn keepalived_instance_keys_map_to_vrrp() {
    let text = "global_defs {\n  router_id lb7\n  vrrp_version 3\n  vrrp_garp_master_repeat \
                2\n}\nvrrp_instance VI_9 {\n  interface eth1\n  state BACKUP\n  \
                virtual_router_id 9\n  priority 150\n  advert_int 0.5\n  nopreempt\n  \
                preempt_delay 30\n  garp_master_delay 1\n  virtual_ipaddress {\n    \
                198.18.0.99/32 dev eth1\n    198.18.0.98\n  }\n  unicast_peer {\n    \
                198.18.0.101\n  }\n  notify \"/usr/local/bin/vrrp-notify\"\n}\n";
    let imported = keepalived_import(text);
    assert!(imported.is_complete(), "{:?}", listed(&imported));
    let config = load(&imported).config;
    assert_eq!(config.node.name, "lb7", "from router_id");
    assert_eq!(config.node.interface, "eth1");
    let vrrp = &config.vrrp[0];
    assert_eq!(vrrp.name, "VI_9");
    assert_eq!(vrrp.interface, "eth1");
    assert_eq!(
        (vrrp.virtual_router_id, vrrp.priority, vrrp.version),
        (9, 150, 3)
    );
    assert_eq!(vrrp.advert_interval, Duration::from_millis(500));
    assert!(!vrrp.preempt);
    assert_eq!(vrrp.preempt_delay, Duration::from_secs(30));
    assert_eq!(
        vrrp.virtual_ipaddress,
        [Ipv4Addr::new(198, 18, 0, 99), Ipv4Addr::new(198, 18, 0, 98)]
    );
    assert_eq!(vrrp.unicast_peer, [Ipv4Addr::new(198, 18, 0, 101)]);
    assert_eq!(vrrp.garp_master_repeat, 2);
    assert_eq!(vrrp.garp_master_delay, Duration::from_secs(1));
    assert_eq!(vrrp.notify.as_deref(), Some("/usr/local/bin/vrrp-notify"));
    // `state` is a note, not something left out.
    assert!(imported.notes.iter().any(|n| n.line == Some(8)));
}

#[test]
fn keepalived_node_name_comes_from_the_option_then_router_id_then_interface() {
    let text = format!("{INSTANCE}}}\n");
    let imported = keepalived_import(&text);
    assert_eq!(load(&imported).config.node.name, "eth0");
    assert!(imported
        .notes
        .iter()
        .any(|n| n.line.is_none() && n.message.contains("--node")));
    let options = Options {
        node: Some("lb9".to_owned()),
        ..Options::default()
    };
    let imported = import_ok(
        None,
        Some(keepalived(&format!(
            "global_defs {{\n router_id x\n}}\n{text}"
        ))),
        &options,
    );
    assert_eq!(load(&imported).config.node.name, "lb9");
}

#[test]
fn keepalived_track_scripts_become_the_builtin_check_or_script_trackers() {
    let text = format!(
        "vrrp_script chk_pound {{\n  script \"/usr/bin/killall -0 pound\"\n  interval 2\n  \
         weight 2\n}}\nvrrp_script chk_app {{\n  script \"/usr/local/bin/check-app --quick\"\n  \
         interval 3\n  timeout 2\n  rise 2\n  fall 3\n  weight -20\n}}\nvrrp_script unused {{\n  \
         script true\n}}\n{INSTANCE}  track_script {{\n    chk_pound\n    chk_app weight -30\n  \
         }}\n  track_interface {{\n    eth2 weight -5\n    eth3\n  }}\n}}\n"
    );
    let imported = keepalived_import(&text);
    assert!(imported.is_complete(), "{:?}", listed(&imported));
    let track = &load(&imported).config.vrrp[0].track;
    assert_eq!(
        track,
        &[
            Track::Builtin {
                check: BuiltinCheck::Proxy,
                weight: 2
            },
            Track::Script {
                script: "/usr/local/bin/check-app --quick".to_owned(),
                interval: Duration::from_secs(3),
                timeout: Duration::from_secs(2),
                rise: 2,
                fall: 3,
                weight: -30,
            },
            Track::Interface {
                interface: "eth2".to_owned(),
                weight: -5
            },
            Track::Interface {
                interface: "eth3".to_owned(),
                weight: 0
            },
        ]
    );
    let unused = imported.notes.iter().find(|n| n.line == Some(14));
    assert!(
        unused.is_some_and(|n| n.message.contains("never runs it")),
        "{:?}",
        imported.notes
    );
    for command in ["killall -0 pound", "pidof pound", "/usr/bin/pgrep -x pound"] {
        assert!(keepalived::is_pound_check(command), "{command}");
    }
    for command in ["killall -0 apache2", "pidof pound nginx", "killall pound"] {
        assert!(!keepalived::is_pound_check(command), "{command}");
    }
}

#[test]
fn keepalived_untranslatable_directives_are_listed_with_their_line() {
    let text = "include /etc/keepalived/conf.d/*.conf\nglobal_defs {\n  notification_email {\n    \
                root@localhost\n  }\n  vrrp_strict\n}\nvrrp_instance VI_1 {\n  interface eth0\n  \
                virtual_router_id 51\n  authentication {\n    auth_type AH\n    auth_pass \
                secret\n  }\n  virtual_ipaddress {\n    198.18.0.99/24 dev eth0 label eth0:1\n    \
                198.18.1.99 dev eth1\n  }\n  track_script {\n    missing\n  }\n  notify_master \
                /bin/true\n  include more.conf\n}\nvirtual_server 198.18.0.99 80 {\n  lb_algo rr\n}\n";
    let imported = keepalived_import(text);
    let got: Vec<(Option<usize>, String)> = imported
        .untranslated
        .iter()
        .map(|f| (f.line, f.message.chars().take(30).collect()))
        .collect();
    let expected: Vec<(Option<usize>, String)> = [
        (1, "not followed: `tandem import` "),
        (3, "Tandem sends no mail; a `notif"),
        (6, "not needed: Tandem checks adve"),
        (12, "Tandem has no IPsec AH authent"),
        (16, "Tandem adds virtual addresses "),
        (16, "label eth0:1: Tandem adds the "),
        (17, "Tandem adds an instance's addr"),
        (20, "no vrrp_script missing in this"),
        (22, "Tandem runs one `notify` scrip"),
        (23, "not followed: `tandem import` "),
        (25, "LVS virtual servers are not tr"),
    ]
    .iter()
    .map(|(line, start)| (Some(*line), (*start).to_owned()))
    .collect();
    assert_eq!(got, expected);
    let vrrp = &load(&imported).config.vrrp[0];
    assert_eq!(vrrp.virtual_ipaddress, [Ipv4Addr::new(198, 18, 0, 99)]);
}

/// An instance with `authentication { ... }` made of `auth` (one statement per line).
fn with_authentication(auth: &str) -> String {
    format!("{INSTANCE}  authentication {{\n{auth}  }}\n}}\n")
}

fn pass(password: &str) -> Option<VrrpAuthentication> {
    Some(VrrpAuthentication::Pass {
        password: password.to_owned(),
    })
}

#[test]
fn keepalived_pass_authentication_becomes_the_v2_instances_password() {
    let imported = keepalived_import(&with_authentication(
        "    auth_type PASS\n    auth_pass 1111\n",
    ));
    assert!(imported.is_complete(), "{:?}", listed(&imported));
    assert!(
        imported
            .toml
            .contains("\nauthentication = { type = \"PASS\", password = \"1111\" }\n"),
        "{}",
        imported.toml
    );
    let vrrp = &load(&imported).config.vrrp[0];
    assert_eq!((vrrp.version, &vrrp.authentication), (2, &pass("1111")));
}

#[test]
fn a_long_auth_pass_is_cut_to_the_8_bytes_keepalived_sends_and_noted() {
    let imported = keepalived_import(&with_authentication(
        "    auth_type PASS\n    auth_pass averylongpassword\n",
    ));
    assert!(imported.is_complete(), "{:?}", listed(&imported));
    assert_eq!(
        load(&imported).config.vrrp[0].authentication,
        pass("averylon")
    );
    let note = imported.notes.iter().find(|n| n.line == Some(9));
    assert!(
        note.is_some_and(|n| n.message.contains("first 8 bytes of auth_pass")
            && n.message.contains("\"averylon\"")),
        "{:?}",
        imported.notes
    );
    // Cut inside a character: nothing sensible to write.
    let imported = keepalived_import(&with_authentication(
        "    auth_type PASS\n    auth_pass abcdefgä\n",
    ));
    assert_eq!(listed(&imported).len(), 1, "{:?}", listed(&imported));
    assert_eq!(load(&imported).config.vrrp[0].authentication, None);
}

#[test]
fn authentication_keepalived_ignores_is_not_written_and_says_why() {
    let cases = [
        // Version 3 has no authentication: keepalived ignores it.
        (
            format!(
                "global_defs {{\n  vrrp_version 3\n}}\n{}",
                with_authentication("    auth_type PASS\n    auth_pass 1111\n")
            ),
            "VRRP version 3",
        ),
        // So does strict mode.
        (
            format!(
                "global_defs {{\n  vrrp_strict\n}}\n{}",
                with_authentication("    auth_type PASS\n    auth_pass 1111\n")
            ),
            "vrrp_strict",
        ),
        // A type without a password, a password without a type.
        (
            with_authentication("    auth_type PASS\n"),
            "without auth_pass",
        ),
        (
            with_authentication("    auth_pass 1111\n"),
            "without auth_type",
        ),
    ];
    for (text, why) in cases {
        let imported = keepalived_import(&text);
        assert!(
            imported.notes.iter().any(|n| n.message.contains(why)),
            "{why}: {:?}",
            imported.notes
        );
        assert!(
            !imported.toml.contains("\nauthentication"),
            "{}",
            imported.toml
        );
        assert_eq!(load(&imported).config.vrrp[0].authentication, None);
    }
}

#[test]
fn ah_and_unknown_authentication_types_are_listed_not_written() {
    let imported = keepalived_import(&with_authentication(
        "    auth_type AH\n    auth_pass 1111\n",
    ));
    assert_eq!(
        imported
            .untranslated
            .iter()
            .map(|f| (f.line, f.message.split(';').next().unwrap_or_default()))
            .collect::<Vec<_>>(),
        [(Some(8), "Tandem has no IPsec AH authentication")]
    );
    let imported = keepalived_import(&with_authentication(
        "    auth_type pass\n    auth_pass 1111\n",
    ));
    assert!(
        listed(&imported)[0].contains("expected PASS or AH"),
        "{:?}",
        listed(&imported)
    );
    assert_eq!(load(&imported).config.vrrp[0].authentication, None);
}

#[test]
fn keepalived_address_flags_and_options_are_listed_one_by_one() {
    let text = "vrrp_instance VI_1 {\n  interface eth0\n  virtual_router_id 51\n  \
                virtual_ipaddress {\n    198.18.0.99 no_track dev eth0 scope global\n  }\n}\n";
    let imported = keepalived_import(text);
    let got: Vec<&str> = imported
        .untranslated
        .iter()
        .map(|f| f.message.split(" is not").next().unwrap_or_default())
        .collect();
    assert_eq!(got, ["`no_track`", "`scope global`"]);
    assert_eq!(
        load(&imported).config.vrrp[0].virtual_ipaddress,
        [Ipv4Addr::new(198, 18, 0, 99)]
    );
}

#[test]
fn keepalived_default_version_is_2_and_sub_second_adverts_need_3() {
    let imported = keepalived_import(&format!("{INSTANCE}  advert_int 0.5\n}}\n"));
    assert_eq!(imported.untranslated.len(), 1);
    assert_eq!(imported.untranslated[0].line, Some(7));
    let vrrp = &load(&imported).config.vrrp[0];
    assert_eq!(vrrp.version, 2);
    assert_eq!(vrrp.advert_interval, Duration::from_secs(1));
}

#[test]
fn keepalived_missing_router_id_is_listed_and_check_asks_for_it() {
    let imported = keepalived_import(
        "vrrp_instance VI_1 {\n  interface eth0\n  virtual_ipaddress {\n    \
                           198.18.0.99\n  }\n}\n",
    );
    assert_eq!(imported.untranslated.len(), 1);
    assert!(imported.untranslated[0]
        .message
        .starts_with("no virtual_router_id"));
    let errors = config::parse(&imported.toml, Path::new("t.toml")).expect_err("incomplete");
    assert!(errors.to_string().contains("virtual_router_id"), "{errors}");
}

// ---- helpers ----

#[test]
fn map_arguments_and_hosts_files() {
    assert_eq!(
        parse_map("Http1.Example.com=198.18.0.102"),
        Ok((
            "http1.example.com".to_owned(),
            Ipv4Addr::new(198, 18, 0, 102)
        ))
    );
    assert!(parse_map("http1.example.com").is_err());
    assert!(parse_map("=198.18.0.102").is_err());
    assert!(parse_map("a=198.18.0").is_err_and(|e| e.contains("not an IPv4 address")));
    let hosts = parse_hosts(
        "127.0.0.1 localhost\n198.18.0.102 http1.example.com http1 # web\n198.18.0.9 \
         http1\nfe80::1 http3\n",
    );
    assert_eq!(
        hosts.get("http1"),
        Some(&Ipv4Addr::new(198, 18, 0, 102)),
        "first wins"
    );
    assert_eq!(hosts.get("http3"), None);
}

#[test]
fn seconds_and_durations() {
    assert_eq!(parse_seconds("2"), Some(Duration::from_secs(2)));
    assert_eq!(parse_seconds("0.25"), Some(Duration::from_millis(250)));
    assert_eq!(parse_seconds("x"), None);
    assert_eq!(parse_seconds("-1"), None);
    assert_eq!(parse_seconds(""), None);
    assert_eq!(duration_text(Duration::from_secs(300)), "300s");
    assert_eq!(duration_text(Duration::from_millis(1500)), "1500ms");
    assert_eq!(toml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
}

#[test]
fn pound_balancing_is_random_unless_pound_4_says_iwrr() {
    let services = format!(
        "Service \"a\"\n URL \"^/a\"\n{BACKEND}End\nService \"b\"\n URL \"^/b\"\n Balancer iwrr\n\
         {BACKEND}End\n"
    );
    let imported = import_ok(
        Some(pound(&pound_with("", &services))),
        None,
        &Options::default(),
    );
    assert!(imported.is_complete(), "{:?}", listed(&imported));
    let balance: Vec<config::Balance> = load(&imported)
        .config
        .services
        .iter()
        .map(|service| service.balance)
        .collect();
    assert_eq!(
        balance,
        [config::Balance::Random, config::Balance::RoundRobin]
    );
}

#[test]
fn pound_ipv6_addresses_become_bracketed_listen_and_backend_addresses() {
    let cfg = "ListenHTTP\n  Address 2001:2::99\n  Port 80\n  Service\n    BackEnd\n      \
               Address 2001:2::102\n      Port 8080\n    End\n    BackEnd\n      \
               Address 198.18.0.103\n      Port 80\n    End\n  End\nEnd\n";
    let imported = import_ok(Some(pound(cfg)), None, &classic_options("lb1"));
    assert!(imported.is_complete(), "{:?}", listed(&imported));
    assert!(
        imported.toml.contains("listen = \"[2001:2::99]:80\""),
        "{}",
        imported.toml
    );
    let web = &load(&imported).config.services[0];
    let backends: Vec<String> = web.backends.iter().map(|b| b.address.to_string()).collect();
    assert_eq!(backends, ["[2001:2::102]:8080", "198.18.0.103:80"]);
}

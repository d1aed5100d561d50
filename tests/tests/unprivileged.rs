//! `tandem run` with the rights dist/tandem.service gives it: an unprivileged user and only the
//! capabilities in the unit's `AmbientCapabilities=`. There is no systemd as PID 1 here to start
//! the unit itself (see systemd_unit.rs), so `setpriv` sets up the same user, ambient set and
//! bounding set, read from the unit file so that the test follows any change to it. The node
//! must do all its work with them: win the VRRP election and add the VIP, load and attach the
//! XDP program and forward an L4 service with it, listen on port 80 for an L7 service, and on
//! SIGTERM give the VIP back and exit 0. A capability missing from the unit shows here as a
//! failed step (and the node's log, printed with the failure, says which call was refused).

mod l4_common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use l4_common::{eventually, node_config, L4Lab};
use tandem::capabilities::{self, Capability};
use tandem_lab::client::http_get;
use tandem_lab::pair::TandemNode;
use tandem_lab::{tandem_binary, Apache, CLIENT, HTTP1, HTTP2, LB1, VIP};

/// The `nobody` user: unprivileged and present on every Debian machine (the unit's `tandem`
/// user exists only where the package's sysusers file was applied).
const UNPRIVILEGED: u32 = 65534;

/// The unit's capabilities (`AmbientCapabilities=`), after checking that the bounding set is
/// the same list (else the ambient set would not be what the daemon gets) and that Tandem
/// knows each of them.
fn unit_capabilities() -> Vec<Capability> {
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/tandem.service");
    let unit = std::fs::read_to_string(&unit_path).expect("the unit");
    let list = |key: &str| -> Vec<Capability> {
        let line = unit
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} in {}", unit_path.display()));
        let mut caps: Vec<Capability> = line
            .split_whitespace()
            .map(|name| {
                *Capability::ALL
                    .iter()
                    .find(|cap| cap.name() == name)
                    .unwrap_or_else(|| panic!("{name} in {key} is one Tandem uses"))
            })
            .collect();
        caps.sort_by_key(|cap| cap.name());
        caps
    };
    let ambient = list("AmbientCapabilities=");
    assert_eq!(
        ambient,
        list("CapabilityBoundingSet="),
        "the unit's bounding set is its ambient set"
    );
    ambient
}

/// `tandem run` on lb1 as [`UNPRIVILEGED`] with exactly `caps`, as a [`TandemNode`] (its
/// status, log and process).
fn start_unprivileged(lab: &UnprivilegedLab, caps: &[Capability]) -> TandemNode {
    // setpriv spells them `+net_admin`.
    let set = format!(
        "-all{}",
        caps.iter()
            .map(|cap| format!(",+{}", cap.name()["CAP_".len()..].to_ascii_lowercase()))
            .collect::<String>()
    );
    let host = lab.l4.lab.host(LB1);
    let mut command = host.command("setpriv");
    command
        .arg(format!("--reuid={UNPRIVILEGED}"))
        .arg(format!("--regid={UNPRIVILEGED}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        // The unit's NoNewPrivileges=yes.
        .arg("--no-new-privs")
        .arg("--")
        .arg(tandem_binary().expect("tandem binary"))
        .arg("run")
        .arg("--config")
        .arg(&lab.config)
        .env("TANDEM_LOG", "info,tandem=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&lab.log).expect("log file"));
    TandemNode {
        process: host.spawn(command).expect("setpriv ... tandem run"),
        host: LB1.to_owned(),
        log: lab.log.clone(),
        config: lab.config.clone(),
        socket: lab.socket.clone(),
    }
}

/// The user ids (`Uid:`: real, effective, saved, filesystem) and the effective capability
/// set of a process.
fn identity(pid: u32) -> (Vec<u32>, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let uids = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .unwrap_or_else(|| panic!("Uid: in /proc/{pid}/status"))
        .split_whitespace()
        .map(|id| id.parse().expect("uid"))
        .collect();
    let effective = capabilities::effective_set(&status).expect("CapEff: in /proc/PID/status");
    (uids, effective)
}

/// The L4 lab (who servers for direct server return) plus Apache on port 80 of both backends,
/// and lb1's config: the L4 services on the VIP through XDP, an L7 service on port 80, a VRRP
/// instance, the control socket in a directory the daemon owns.
struct UnprivilegedLab {
    l4: L4Lab,
    _apaches: [Apache; 2],
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl UnprivilegedLab {
    fn new() -> UnprivilegedLab {
        let l4 = L4Lab::new();
        let lab = &l4.lab;
        let apaches = [HTTP1, HTTP2].map(|name| {
            Apache::start(lab, lab.host(name), 80, name).expect("apache backend on port 80")
        });
        // The daemon makes its control socket in a directory it owns, as the unit's
        // RuntimeDirectory=tandem gives it /run/tandem.
        let run_dir = lab.work_dir().join("run");
        std::fs::create_dir(&run_dir).expect("run dir");
        std::os::unix::fs::chown(&run_dir, Some(UNPRIVILEGED), Some(UNPRIVILEGED)).expect("chown");
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let socket = run_dir.join("tandem.sock");
        let lab_socket = format!("\"{}\"", lab.work_dir().join("lb1.sock").display());
        let base = node_config(lab, LB1, "xdp-generic");
        assert!(base.contains(&lab_socket), "the L4 lab's socket path");
        // The notify script writes down the capabilities it runs with.
        let notify = run_dir.join("notify.sh");
        std::fs::write(
            &notify,
            format!(
                "#!/bin/sh\ngrep -E '^Cap(Amb|Eff)' /proc/self/status > {}\n",
                run_dir.join("notify-caps").display()
            ),
        )
        .expect("notify script");
        std::fs::set_permissions(&notify, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let vrrp = "virtual_router_id = 51\n";
        assert!(base.contains(vrrp), "the L4 lab's VRRP instance");
        let config_text = base
            .replace(&lab_socket, &format!("\"{}\"", socket.display()))
            .replace(vrrp, &format!("{vrrp}notify = \"{}\"\n", notify.display()))
            + &format!(
                r#"
[[service]]
name = "web"
listen = "{VIP}:80"
mode = "http"
backends = ["{}:80", "{}:80"]
"#,
                lab.host(HTTP1).ip,
                lab.host(HTTP2).ip
            );
        let config = lab.work_dir().join("lb1.toml");
        std::fs::write(&config, config_text).expect("config");
        let log = lab.work_dir().join("lb1-unprivileged.log");
        UnprivilegedLab {
            l4,
            _apaches: apaches,
            config,
            socket,
            log,
        }
    }

    fn start(&self, caps: &[Capability]) -> TandemNode {
        start_unprivileged(self, caps)
    }

    /// Asserts that `node` becomes master and alone holds the VIP (`why` says in which case).
    fn expect_master(&self, node: &TandemNode, why: &str) {
        let status = || node.status().unwrap_or(serde_json::Value::Null);
        assert!(
            eventually(Duration::from_secs(15), || {
                status()["vrrp"][0]["state"] == "master"
                    && tandem_lab::pair::holders(&self.l4.lab, VIP) == vec![LB1.to_owned()]
            }),
            "{why} the node becomes master and holds the VIP: {}\n{}",
            status(),
            node.log_text()
        );
    }
}

#[test]
fn tandem_as_an_unprivileged_user_with_only_the_units_capabilities_serves_the_vip_with_xdp() {
    let caps = unit_capabilities();
    let unprivileged = UnprivilegedLab::new();
    let (l4, lab) = (&unprivileged.l4, &unprivileged.l4.lab);
    let mut node = unprivileged.start(&caps);
    unprivileged.expect_master(&node, "with the unit's capabilities");

    let (uids, _) = identity(node.process.pid());
    assert!(
        uids.iter().all(|&uid| uid == UNPRIVILEGED),
        "the daemon runs as uid {UNPRIVILEGED}: {uids:?}"
    );
    // Once the XDP program is loaded the daemon gives up CAP_BPF and CAP_PERFMON, in every
    // thread (on kernels from 6.5, where using the maps it holds does not need them; this
    // machine's is newer), and what follows (filling the maps as master, status, forwarding)
    // works without them.
    let loading_only = Capability::Bpf.bit() | Capability::Perfmon.bit();
    let kept = caps.iter().fold(0, |set, cap| set | cap.bit()) & !loading_only;
    assert!(
        capabilities::kernel_checks_bpf_only_at_load(),
        "this test expects a kernel >= 6.5"
    );
    let tasks = std::fs::read_dir(format!("/proc/{}/task", node.process.pid())).expect("tasks");
    for task in tasks {
        let status = std::fs::read_to_string(task.expect("task").path().join("status"))
            .expect("thread status");
        let effective = capabilities::effective_set(&status).expect("CapEff");
        assert_eq!(
            effective, kept,
            "a thread of the daemon has other capabilities than the unit's without CAP_BPF and \
             CAP_PERFMON:\n{status}"
        );
    }
    assert!(
        node.log_text().contains("gave up CAP_BPF and CAP_PERFMON"),
        "{}",
        node.log_text()
    );

    // Scripts do not inherit the daemon's capabilities (its ambient set is cleared for them).
    let notified = unprivileged.socket.with_file_name("notify-caps");
    assert!(
        eventually(Duration::from_secs(5), || notified.exists()),
        "the notify script ran\n{}",
        node.log_text()
    );
    let caps_seen = std::fs::read_to_string(&notified).expect("notify-caps");
    for line in caps_seen.lines() {
        assert!(
            line.ends_with("\t0000000000000000"),
            "the notify script had {line}"
        );
    }

    let dataplane = &node.status().expect("tandem status")["dataplane"];
    assert_eq!(
        (dataplane["kind"].as_str(), dataplane["active"].as_bool()),
        (Some("xdp"), Some(true)),
        "the XDP data plane is loaded, attached and filled, not the relay fallback: {dataplane}\n{}",
        node.log_text()
    );
    let (_, answer) = l4.ask_once(None).unwrap_or_else(|err| {
        panic!(
            "the L4 service answers on the VIP: {err}\n{}",
            node.log_text()
        )
    });
    assert!(
        [HTTP1, HTTP2].contains(&answer.backend.as_str()),
        "{answer:?}"
    );
    assert_eq!(
        answer.peer,
        lab.host(CLIENT).ip,
        "the backend saw the client's own address (direct server return through XDP)"
    );

    let response = http_get(lab.host(CLIENT), SocketAddr::from((VIP, 80)), "/", &[])
        .unwrap_or_else(|err| {
            panic!(
                "the L7 service on port 80 answers: {err:#}\n{}",
                node.log_text()
            )
        });
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        matches!(response.header("X-Backend"), Some("http1" | "http2")),
        "an Apache backend answered: {response:?}"
    );

    node.process.kill(libc::SIGTERM);
    let exit = node
        .process
        .wait_exit(Duration::from_secs(10))
        .expect("the daemon stops on SIGTERM");
    let log = node.log_text();
    assert!(exit.success(), "exit status {exit}\n{log}");
    assert!(
        tandem_lab::pair::holders(lab, VIP).is_empty(),
        "the daemon gave the VIP back before it exited\n{log}"
    );
    for refused in ["Operation not permitted", "ermission denied"] {
        assert!(
            !log.contains(refused),
            "no call of the daemon was refused ({refused:?}):\n{log}"
        );
    }
}

#[test]
fn without_any_one_of_the_units_capabilities_the_node_names_the_one_it_lacks() {
    let caps = unit_capabilities();
    let unprivileged = UnprivilegedLab::new();
    for &missing in &caps {
        let fewer: Vec<Capability> = caps.iter().copied().filter(|c| *c != missing).collect();
        let mut node = unprivileged.start(&fewer);
        let named = missing.name();
        match missing {
            // The data plane falls back to the userspace relay: the node works, slower, and
            // its status says why.
            Capability::Bpf | Capability::Perfmon => {
                unprivileged.expect_master(&node, &format!("without {named}"));
                let dataplane = &node.status().expect("tandem status")["dataplane"];
                assert_eq!(dataplane["kind"], "relay", "without {named}: {dataplane}");
                let reason = dataplane["fallback_reason"].as_str().unwrap_or_default();
                eprintln!("without {named}: XDP not in use: {reason}");
                assert!(
                    reason.contains("permission denied") && reason.contains(named),
                    "without {named} the status says XDP was refused and names {named}: {reason}"
                );
                let answer = unprivileged.l4.ask_once(None);
                assert!(
                    answer.is_ok(),
                    "without {named} the L4 service answers through the relay: {answer:?}\n{}",
                    node.log_text()
                );
                node.process.kill(libc::SIGTERM);
                let exit = node
                    .process
                    .wait_exit(Duration::from_secs(10))
                    .expect("stops");
                assert!(exit.success(), "{exit}\n{}", node.log_text());
            }
            // The node cannot do its job (hold the VIP, speak VRRP, listen on port 80), so it
            // refuses to start and says which capability to grant.
            Capability::NetAdmin | Capability::NetRaw | Capability::NetBindService => {
                let exit = node
                    .process
                    .wait_exit(Duration::from_secs(10))
                    .unwrap_or_else(|err| panic!("without {named} tandem run exits: {err:#}"));
                let log = node.log_text();
                eprintln!(
                    "without {named}: {}",
                    log.lines().last().unwrap_or_default()
                );
                assert_eq!(exit.code(), Some(1), "without {named}:\n{log}");
                assert!(
                    log.contains(named),
                    "without {named} the error names it:\n{log}"
                );
                assert!(
                    tandem_lab::pair::holders(&unprivileged.l4.lab, VIP).is_empty(),
                    "without {named} no node holds the VIP"
                );
            }
        }
    }
}

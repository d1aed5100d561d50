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
use tandem_lab::client::http_get;
use tandem_lab::{tandem_binary, Apache, Host, Process, CLIENT, HTTP1, HTTP2, LB1, VIP};

/// The `nobody` user: unprivileged and present on every Debian machine (the unit's `tandem`
/// user exists only where the package's sysusers file was applied).
const UNPRIVILEGED: u32 = 65534;

/// The unit's capabilities, as `setpriv` spells them (`net_admin,net_raw,...`), after checking
/// that the bounding set is the same list (else the ambient set would not be what the daemon
/// gets).
fn unit_capabilities() -> Vec<String> {
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/tandem.service");
    let unit = std::fs::read_to_string(&unit_path).expect("the unit");
    let list = |key: &str| -> Vec<String> {
        let line = unit
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .unwrap_or_else(|| panic!("{key} in {}", unit_path.display()));
        let mut caps: Vec<String> = line
            .split_whitespace()
            .map(|cap| {
                cap.strip_prefix("CAP_")
                    .unwrap_or_else(|| panic!("{cap} in {key} is a CAP_ name"))
                    .to_ascii_lowercase()
            })
            .collect();
        caps.sort();
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

/// The kernel's bit for each capability name `setpriv` accepts, for comparing with
/// /proc/PID/status.
fn capability_mask(caps: &[String]) -> u64 {
    caps.iter()
        .map(|cap| match cap.as_str() {
            "net_bind_service" => 10,
            "net_admin" => 12,
            "net_raw" => 13,
            "perfmon" => 38,
            "bpf" => 39,
            other => panic!("capability {other} is not expected in the unit"),
        })
        .fold(0, |mask, bit| mask | 1u64 << bit)
}

/// `tandem run --config CONFIG` on `host` as [`UNPRIVILEGED`] with exactly `caps`.
fn start_unprivileged(host: &Host, config: &Path, caps: &[String], log: &Path) -> Process {
    let set = format!(
        "-all{}",
        caps.iter().map(|c| format!(",+{c}")).collect::<String>()
    );
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
        .arg(config)
        .env("TANDEM_LOG", "info,tandem=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    host.spawn(command).expect("setpriv ... tandem run")
}

/// The `Uid:` (real, effective) and `CapEff:` lines of a process, parsed.
fn identity(pid: u32) -> (Vec<u32>, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
            .trim()
            .to_owned()
    };
    let uids = field("Uid:")
        .split_whitespace()
        .map(|id| id.parse().expect("uid"))
        .collect();
    let effective = u64::from_str_radix(&field("CapEff:"), 16).expect("CapEff hex");
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
        let config_text = base.replace(&lab_socket, &format!("\"{}\"", socket.display()))
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

    fn start(&self, caps: &[String]) -> Process {
        start_unprivileged(self.l4.lab.host(LB1), &self.config, caps, &self.log)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `tandem status --json`, or null while the daemon does not answer.
    fn status(&self) -> serde_json::Value {
        std::process::Command::new(tandem_binary().expect("tandem binary"))
            .args(["status", "--json", "--socket"])
            .arg(&self.socket)
            .output()
            .ok()
            .and_then(|output| serde_json::from_slice(&output.stdout).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    fn is_master_holding_the_vip(&self) -> bool {
        self.status()["vrrp"][0]["state"] == "master"
            && tandem_lab::pair::holders(&self.l4.lab, VIP) == vec![LB1.to_owned()]
    }
}

#[test]
fn tandem_as_an_unprivileged_user_with_only_the_units_capabilities_serves_the_vip_with_xdp() {
    let caps = unit_capabilities();
    let unprivileged = UnprivilegedLab::new();
    let (l4, lab) = (&unprivileged.l4, &unprivileged.l4.lab);
    let mut node = unprivileged.start(&caps);
    let log_text = || unprivileged.log_text();

    assert!(
        eventually(Duration::from_secs(15), || unprivileged
            .is_master_holding_the_vip()),
        "the node became master and holds the VIP: {}\n{}",
        unprivileged.status(),
        log_text()
    );

    let (uids, effective) = identity(node.pid());
    assert!(
        uids.iter().all(|&uid| uid == UNPRIVILEGED),
        "the daemon runs as uid {UNPRIVILEGED}: {uids:?}"
    );
    assert_eq!(
        effective,
        capability_mask(&caps),
        "the daemon's effective capabilities are the unit's {caps:?}"
    );

    let dataplane = &unprivileged.status()["dataplane"];
    assert_eq!(
        (dataplane["kind"].as_str(), dataplane["active"].as_bool()),
        (Some("xdp"), Some(true)),
        "the XDP data plane is loaded, attached and filled, not the relay fallback: {dataplane}\n{}",
        log_text()
    );
    let (_, answer) = l4
        .ask_once(None)
        .unwrap_or_else(|err| panic!("the L4 service answers on the VIP: {err}\n{}", log_text()));
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
        .unwrap_or_else(|err| panic!("the L7 service on port 80 answers: {err:#}\n{}", log_text()));
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        matches!(response.header("X-Backend"), Some("http1" | "http2")),
        "an Apache backend answered: {response:?}"
    );

    node.kill(libc::SIGTERM);
    let exit = node
        .wait_exit(Duration::from_secs(10))
        .expect("the daemon stops on SIGTERM");
    assert!(exit.success(), "exit status {exit}\n{}", log_text());
    assert!(
        tandem_lab::pair::holders(lab, VIP).is_empty(),
        "the daemon gave the VIP back before it exited\n{}",
        log_text()
    );
    let log = log_text();
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
    let log_text = || unprivileged.log_text();
    for missing in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != missing).cloned().collect();
        let mut node = unprivileged.start(&fewer);
        let named = format!("CAP_{}", missing.to_ascii_uppercase());
        match missing.as_str() {
            // The data plane falls back to the userspace relay: the node works, slower, and
            // its status says why.
            "bpf" | "perfmon" => {
                assert!(
                    eventually(Duration::from_secs(15), || unprivileged
                        .is_master_holding_the_vip()),
                    "without {named} the node still becomes master: {}\n{}",
                    unprivileged.status(),
                    log_text()
                );
                let dataplane = &unprivileged.status()["dataplane"];
                assert_eq!(dataplane["kind"], "relay", "without {named}: {dataplane}");
                let reason = dataplane["fallback_reason"].as_str().unwrap_or_default();
                eprintln!("without {named}: XDP not in use: {reason}");
                assert!(
                    reason.contains("permission denied") && reason.contains(&named),
                    "without {named} the status says XDP was refused and names {named}: {reason}"
                );
                let answer = unprivileged.l4.ask_once(None);
                assert!(
                    answer.is_ok(),
                    "without {named} the L4 service answers through the relay: {answer:?}\n{}",
                    log_text()
                );
                node.kill(libc::SIGTERM);
                let exit = node.wait_exit(Duration::from_secs(10)).expect("stops");
                assert!(exit.success(), "{exit}\n{}", log_text());
            }
            // The node cannot do its job (hold the VIP, speak VRRP, listen on port 80), so it
            // refuses to start and says which capability to grant.
            _ => {
                let exit = node
                    .wait_exit(Duration::from_secs(10))
                    .unwrap_or_else(|err| panic!("without {named} tandem run exits: {err:#}"));
                let log = log_text();
                eprintln!(
                    "without {named}: {}",
                    log.lines().last().unwrap_or_default()
                );
                assert_eq!(exit.code(), Some(1), "without {named}:\n{log}");
                assert!(
                    log.contains(&named),
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

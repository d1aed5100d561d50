//! The HA pair's members in the lab: a Tandem node (`tandem run` with a config written for the
//! test) and real keepalived (Debian's package) as the classic peer, plus what a test checks
//! after an election: which hosts hold the VIP, and whose MAC the client's neighbour entry
//! (ARP for IPv4, neighbour discovery for IPv6) names.

use std::fs::File;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::{tandem_binary, Host, Lab, Process, VIP};

/// One VRRP instance's settings as both daemons are configured in a test.
#[derive(Debug, Clone)]
pub struct VrrpSettings {
    pub version: u8,
    pub priority: u8,
    pub advert_interval: Duration,
    pub vrid: u8,
    pub preempt: bool,
    /// VRRPv2 simple password (Tandem's `authentication = { type = "PASS", ... }`,
    /// keepalived's `auth_type PASS`); `None`: no authentication.
    pub password: Option<String>,
    /// The instance's one virtual address: [`VIP`], or an IPv6 one (version 3 only).
    pub vip: IpAddr,
}

impl VrrpSettings {
    pub fn new(version: u8, priority: u8) -> VrrpSettings {
        VrrpSettings {
            version,
            priority,
            advert_interval: Duration::from_secs(1),
            vrid: 51,
            preempt: true,
            password: None,
            vip: IpAddr::V4(VIP),
        }
    }

    /// The same settings for an instance whose virtual address is `vip`.
    pub fn with_vip(self, vip: impl Into<IpAddr>) -> VrrpSettings {
        VrrpSettings {
            vip: vip.into(),
            ..self
        }
    }

    /// The same settings with the PASS `password`.
    pub fn with_password(self, password: &str) -> VrrpSettings {
        VrrpSettings {
            password: Some(password.to_owned()),
            ..self
        }
    }
}

/// A `tandem run` on a lab host; stopped (SIGTERM) when dropped.
pub struct TandemNode {
    pub process: Process,
    pub host: String,
    pub log: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
}

impl TandemNode {
    /// The `[node]` and `[[vrrp]]` part of a node's config for `settings`, with its control
    /// socket in the lab's work directory. Append `[[service]]` sections to taste.
    pub fn vrrp_config(lab: &Lab, host: &Host, settings: &VrrpSettings) -> String {
        let interval_ms = settings.advert_interval.as_millis();
        format!(
            r#"{node}
[[vrrp]]
name = "VI_1"
virtual_router_id = {vrid}
priority = {priority}
version = {version}
advert_interval = "{interval_ms}ms"
preempt = {preempt}
virtual_ipaddress = ["{vip}"]
{authentication}"#,
            node = Self::node_section(lab, host),
            vip = settings.vip,
            vrid = settings.vrid,
            priority = settings.priority,
            version = settings.version,
            preempt = settings.preempt,
            authentication = match &settings.password {
                Some(password) => {
                    format!("authentication = {{ type = \"PASS\", password = \"{password}\" }}\n")
                }
                None => String::new(),
            },
        )
    }

    /// The `[node]` table of a lab node without XDP (`dataplane = "none"`), with its control
    /// socket where [`TandemNode::status`] looks for it.
    pub fn node_section(lab: &Lab, host: &Host) -> String {
        format!(
            "[node]\nname = \"{}\"\ninterface = \"{}\"\ndataplane = \"none\"\ncontrol_socket = \"{}\"\n",
            host.name,
            host.iface,
            Self::socket_path(lab, host).display()
        )
    }

    fn socket_path(lab: &Lab, host: &Host) -> PathBuf {
        lab.work_dir().join(format!("{}-tandem.sock", host.name))
    }

    /// Starts `tandem run` on `host` with `config` (TOML text); its log goes to a file in the
    /// lab's work directory (appended, so a restarted node keeps its history).
    pub fn start(lab: &Lab, host: &Host, config: &str) -> anyhow::Result<TandemNode> {
        Self::start_with(lab, host, config, host.command(tandem_binary()?))
    }

    /// As [`TandemNode::start`], with `env` added to the daemon's environment (e.g.
    /// `TANDEM_FAULT_INJECTION`).
    pub fn start_with_env(
        lab: &Lab,
        host: &Host,
        config: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<TandemNode> {
        let mut command = host.command(tandem_binary()?);
        command.envs(env.iter().copied());
        Self::start_with(lab, host, config, command)
    }

    /// As [`TandemNode::start`], but the daemon sees the host's own hosts file (see
    /// [`Host::set_hosts_file`]); it cannot use pinned maps, so `dataplane = "none"` only.
    pub fn start_with_hosts_file(
        lab: &Lab,
        host: &Host,
        config: &str,
    ) -> anyhow::Result<TandemNode> {
        Self::start_with(lab, host, config, host.command_with_etc(tandem_binary()?))
    }

    fn start_with(
        lab: &Lab,
        host: &Host,
        config: &str,
        mut command: std::process::Command,
    ) -> anyhow::Result<TandemNode> {
        let config_path = lab.work_dir().join(format!("{}.toml", host.name));
        std::fs::write(&config_path, config).context("writing the node's config")?;
        let log = lab.work_dir().join(format!("{}-tandem.log", host.name));
        let log_file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .context("opening the node's log")?;
        command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("TANDEM_LOG", "info,tandem=debug")
            .stdout(Stdio::null())
            .stderr(log_file);
        let process = host.spawn(command)?;
        Ok(TandemNode {
            process,
            host: host.name.clone(),
            log,
            config: config_path,
            socket: Self::socket_path(lab, host),
        })
    }

    /// Kills the daemon with SIGKILL (a crash: no priority-0 advert, VIPs left on the
    /// interface), waits for it to die, then runs the release step.
    pub fn crash_under_systemd(&mut self, lab: &Lab) -> anyhow::Result<()> {
        self.process.kill(libc::SIGKILL);
        self.process
            .wait_exit(Duration::from_secs(5))
            .context("the killed daemon exits")?;
        self.release_step(lab)
    }

    /// Runs dist/tandem-release-vips on the VIP file the daemon keeps beside its control
    /// socket, in its namespace, as dist/tandem.service's `ExecStopPost=` does after any exit.
    pub fn release_step(&self, lab: &Lab) -> anyhow::Result<()> {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/tandem-release-vips");
        let status = lab
            .host(&self.host)
            .command("sh")
            .arg(&script)
            .arg(self.socket.with_extension("vips"))
            .status()
            .context("running tandem-release-vips")?;
        if !status.success() {
            bail!("{} exited with {status}", script.display());
        }
        Ok(())
    }

    /// The node's log so far (for assertion messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Writes `config` over the node's config file and runs `tandem reload` against the
    /// daemon; returns the command's output (exit status, stdout, stderr) whatever it says.
    pub fn reload(&self, config: &str) -> anyhow::Result<std::process::Output> {
        std::fs::write(&self.config, config).context("writing the node's new config")?;
        std::process::Command::new(tandem_binary()?)
            .args(["reload", "--socket"])
            .arg(&self.socket)
            .output()
            .context("running tandem reload")
    }

    /// `tandem status --json` of this node.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        let output = std::process::Command::new(tandem_binary()?)
            .args(["status", "--json", "--socket"])
            .arg(&self.socket)
            .output()
            .context("running tandem status")?;
        if !output.status.success() {
            bail!(
                "tandem status failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        serde_json::from_slice(&output.stdout).context("parsing tandem status --json")
    }
}

/// keepalived on a lab host with the classic keepalived.conf, lab addresses filled in; stopped
/// when dropped.
pub struct Keepalived {
    pub process: Process,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The VRRP child's pid file (`--vrrp_pid`).
    vrrp_pid_file: PathBuf,
}

impl Keepalived {
    /// The classic tutorial's vrrp_instance (without its track script) for `settings`, with an
    /// `authentication` block when they have a password.
    pub fn config_text(host: &Host, settings: &VrrpSettings) -> String {
        let interval = settings.advert_interval.as_secs_f64();
        let state = if settings.priority > 100 {
            "MASTER"
        } else {
            "BACKUP"
        };
        let nopreempt = if settings.preempt {
            ""
        } else {
            "        nopreempt\n"
        };
        let authentication = match &settings.password {
            Some(password) => format!(
                "        authentication {{\n            auth_type PASS\n            auth_pass {password}\n        }}\n"
            ),
            None => String::new(),
        };
        format!(
            r#"global_defs {{
        router_id {name}
        vrrp_version {version}
        enable_script_security
}}

vrrp_instance VI_1 {{
        interface {iface}
        state {state}
        virtual_router_id {vrid}
        priority {priority}
        advert_int {interval}
{nopreempt}{authentication}        virtual_ipaddress {{
            {vip}
        }}
}}
"#,
            name = host.name,
            vip = settings.vip,
            version = settings.version,
            iface = host.iface,
            vrid = settings.vrid,
            priority = settings.priority,
        )
    }

    pub fn start(lab: &Lab, host: &Host, settings: &VrrpSettings) -> anyhow::Result<Keepalived> {
        let dir = lab.work_dir();
        let config = dir.join(format!("{}-keepalived.conf", host.name));
        std::fs::write(&config, Self::config_text(host, settings))?;
        let log = dir.join(format!("{}-keepalived.log", host.name));
        let log_file = File::options().create(true).append(true).open(&log)?;
        let pid_files = [
            dir.join(format!("{}-keepalived.pid", host.name)),
            dir.join(format!("{}-keepalived-vrrp.pid", host.name)),
        ];
        // After a crash (SIGKILL) the pid files stay, and keepalived refuses to start while a
        // process with that pid exists, even a zombie not yet reaped.
        for file in &pid_files {
            let _ = std::fs::remove_file(file);
        }
        let mut command = host.command("/usr/sbin/keepalived");
        command
            .args(["--dont-fork", "--log-console", "--log-detail", "--vrrp"])
            .arg("--use-file")
            .arg(&config)
            .arg("--pid")
            .arg(&pid_files[0])
            .arg("--vrrp_pid")
            .arg(&pid_files[1])
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let process = host.spawn(command)?;
        let [_, vrrp_pid_file] = pid_files;
        Ok(Keepalived {
            process,
            config,
            log,
            vrrp_pid_file,
        })
    }

    /// Kills keepalived as a crash would: SIGKILL to its VRRP child and to the parent. Killing
    /// only the parent is not a crash: the child stops gracefully (priority 0) when its parent
    /// dies.
    pub fn crash(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.vrrp_pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) on the VRRP child's pid, read from the pid file keepalived wrote.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        self.process.kill(libc::SIGKILL);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The names of the hosts that have `address` (IPv4 or IPv6) on their interface.
pub fn holders(lab: &Lab, address: impl Into<IpAddr>) -> Vec<String> {
    let address = address.into();
    let (family, needle) = match address {
        IpAddr::V4(_) => ("-4", format!("inet {address}/")),
        IpAddr::V6(_) => ("-6", format!("inet6 {address}/")),
    };
    lab.hosts()
        .filter(|host| {
            host.run("ip", &[family, "addr", "show", "dev", &host.iface])
                .map(|text| text.contains(&needle))
                .unwrap_or(false)
        })
        .map(|host| host.name.clone())
        .collect()
}

/// The MAC the client's neighbour table has for `address`, if it has a usable entry.
pub fn neighbour_mac(client: &Host, address: impl Into<IpAddr>) -> Option<[u8; 6]> {
    let address = address.into();
    let json = client
        .run("ip", &["-json", "neigh", "show", &address.to_string()])
        .ok()?;
    let entries: serde_json::Value = serde_json::from_str(&json).ok()?;
    let entry = entries.as_array()?.first()?;
    let states = entry["state"].as_array()?;
    if states
        .iter()
        .any(|state| matches!(state.as_str(), Some("FAILED" | "INCOMPLETE")))
    {
        return None;
    }
    parse_mac(entry["lladdr"].as_str()?)
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    Some(mac)
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes; returns how long it took.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        if condition() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until exactly `host` holds the VIP and the client's ARP entry for it names `host`'s
/// MAC (the client pings the VIP once first so that it has an entry to follow).
pub fn wait_for_sole_master(lab: &Lab, host: &str, timeout: Duration) -> anyhow::Result<Duration> {
    wait_for_sole_holder(lab, host, VIP, timeout)
}

/// [`wait_for_sole_master`] for the virtual address `vip`, IPv4 (the client's ARP entry) or
/// IPv6 (its neighbour discovery entry, moved by unsolicited neighbour advertisements).
pub fn wait_for_sole_holder(
    lab: &Lab,
    host: &str,
    vip: impl Into<IpAddr>,
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let vip = vip.into();
    let start = Instant::now();
    let mut last = Vec::new();
    wait_until(timeout, &format!("{host} alone to hold {vip}"), || {
        last = holders(lab, vip);
        last == vec![host.to_owned()]
    })
    .with_context(|| format!("held by {last:?}"))?;
    let client = lab.host(crate::CLIENT);
    if neighbour_mac(client, vip).is_none() {
        // No entry to follow yet: make one. An existing entry is left alone, so that what
        // moves it is the new master's gratuitous ARP (or neighbour advertisement), not a
        // fresh resolution.
        let _ = client.run("ping", &["-c", "1", "-W", "1", &vip.to_string()]);
    }
    let mac = lab.host(host).mac()?;
    let left = timeout
        .saturating_sub(start.elapsed())
        .max(Duration::from_secs(3));
    wait_until(
        left,
        &format!("the client's neighbour entry for {vip} to name {host}"),
        || neighbour_mac(client, vip) == Some(mac),
    )?;
    Ok(start.elapsed())
}

//! [`Lab`] builds the reference topology out of network namespaces and tears it down; [`Host`]
//! is one machine of it: running commands, processes and closures inside its namespace.
//!
//! Names are unique per run (`tdm{pid}x{counter}`), so several labs can exist at once (tests run
//! in parallel, `cargo xtask lab` beside a test run). No interface is ever created in the root
//! namespace: each veth pair is created directly between a host's namespace and the bridge's.
//! A lab left behind by a killed process is removed by the next [`Lab::new`]: its owner pid is
//! part of every name.

use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context as _};

use crate::netns;
use crate::process::Process;
use crate::{
    ipv6_of, ACTIVE_ACTIVE_HOSTS, CLIENT, CLIENT_OUTSIDE, CLIENT_OUTSIDE6, HOSTS,
    OUTSIDE_PREFIX_LEN, ROUTER, ROUTER_OUTSIDE, ROUTER_OUTSIDE6, SEGMENT6_PREFIX_LEN,
    SEGMENT_PREFIX_LEN,
};

/// Every name the lab creates starts with this (namespaces, bpffs dirs, temp dirs), followed by
/// the owner's pid: `tdm{pid}x{counter}`.
const ID_PREFIX: &str = "tdm";
/// Where `ip netns` binds named namespaces.
const NETNS_DIR: &str = "/var/run/netns";
/// Where `ip netns exec NAME` finds files it binds over /etc (NAME/hosts over /etc/hosts).
const NETNS_ETC_DIR: &str = "/etc/netns";
/// The bpffs mount under which each run gets its pin directories.
const BPFFS_DIR: &str = "/sys/fs/bpf";
/// statfs(2) f_type of a bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// The bridge in the bridge namespace.
const BRIDGE: &str = "br0";
/// Every host's interface on the segment.
const HOST_IFACE: &str = "eth0";
/// The router's interface towards the client in an active-active lab.
const OUTSIDE_IFACE: &str = "eth1";
/// How long processes left in a namespace get for SIGTERM at teardown before SIGKILL.
const TEARDOWN_GRACE: Duration = Duration::from_secs(1);

/// Distinguishes the labs of one process.
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);
/// Serialises the parts of [`Lab::new`] that touch shared state: mounting bpffs, `ip netns add`
/// (whose first call sets up the /var/run/netns mount) and removing stale labs.
static SHARED_SETUP: Mutex<()> = Mutex::new(());

/// The reference deployment in network namespaces. Dropping it (also while unwinding from a
/// panic) stops every process still running in its namespaces, deletes the namespaces, its pin
/// directories and its work directory.
///
/// Backends ([`crate::EchoBackend`], [`crate::Apache`]) own their processes and do not borrow
/// the lab: drop them before the lab (declare them after it), or the lab's teardown kills their
/// processes first and they only reap them.
#[derive(Debug)]
pub struct Lab {
    id: String,
    hosts: Vec<Host>,
    bridge_netns: String,
    work_dir: PathBuf,
    /// Namespaces this lab has asked for, in creation order; teardown deletes those that exist.
    created_netns: Vec<String>,
    /// [`Lab::active_active`]: the client sits outside, behind the router.
    routed_client: bool,
}

/// One machine of the lab: a network namespace with `eth0` on the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The role: [`crate::CLIENT`], [`crate::LB1`], ...
    pub name: String,
    /// The namespace's name (as in `ip netns list`).
    pub netns: String,
    /// The host's address on the segment (a /24).
    pub ip: Ipv4Addr,
    /// Its IPv6 address on the segment (a /64, [`crate::ipv6_of`] its IPv4 one), in a
    /// dual-stack lab ([`Lab::dual_stack`]) only.
    pub ip6: Option<Ipv6Addr>,
    /// The host's interface on the segment: always `eth0`.
    pub iface: String,
}

impl Lab {
    /// Builds a fresh IPv4 lab: removes leftovers of dead earlier runs, then creates the
    /// namespaces, the bridge and the veth pairs, and gives each host its address. IPv6 is off
    /// in every namespace, so the segment carries only what the test sends.
    pub fn new() -> anyhow::Result<Lab> {
        Lab::build_new(false, false)
    }

    /// The active-active topology: the client is outside, on 198.18.1.0/24, and reaches the
    /// segment through the router (198.18.0.1 on the segment, 198.18.1.1 outside), which
    /// learns the anycast VIP from the nodes over BGP and spreads flows over them by ECMP
    /// (hashing on ports, not only addresses). Three nodes (lb1, lb2, lb3) and the two web
    /// servers are on the segment; every host on it routes 198.18.1.0/24 through the router.
    /// IPv4 only.
    ///
    /// ```text
    ///   client 198.18.1.10 ── router .1 ──┬── lb1 .100, lb2 .101, lb3 .104
    ///                                     └── http1 .102, http2 .103   (198.18.0.0/24)
    /// ```
    pub fn active_active() -> anyhow::Result<Lab> {
        Lab::build_new(false, true)
    }

    /// [`Lab::active_active`] with IPv6 too: the client outside is also 2001:2:1::10/64
    /// behind the router's 2001:2:1::1, the segment's hosts have 2001:2::N/64 as in
    /// [`Lab::dual_stack`] (the router 2001:2::1), and the router forwards and hashes IPv6 the
    /// same way.
    pub fn active_active_dual_stack() -> anyhow::Result<Lab> {
        Lab::build_new(true, true)
    }

    /// A lab whose hosts also have IPv6: link-local addresses, and 2001:2::N/64 beside
    /// 198.18.0.N/24 (see [`crate::ipv6_of`]), both without duplicate address detection so
    /// they serve at once. The segment then carries neighbour discovery and MLD too.
    pub fn dual_stack() -> anyhow::Result<Lab> {
        Lab::build_new(true, false)
    }

    fn build_new(dual_stack: bool, active_active: bool) -> anyhow::Result<Lab> {
        // SAFETY: geteuid(2) cannot fail and has no side effects.
        if unsafe { libc::geteuid() } != 0 {
            bail!(
                "the lab needs root (network namespaces): run as root, e.g. sudo -E cargo xtask test"
            );
        }
        let id = format!(
            "{ID_PREFIX}{}x{}",
            std::process::id(),
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        {
            let _shared = SHARED_SETUP
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            ensure_bpffs_mounted();
            remove_stale_labs();
        }
        let roles: &[(&str, Ipv4Addr)] = if active_active {
            &ACTIVE_ACTIVE_HOSTS
        } else {
            &HOSTS
        };
        let hosts = roles
            .iter()
            .map(|&(name, ip)| Host {
                name: name.to_owned(),
                netns: format!("{id}-{name}"),
                ip,
                ip6: dual_stack.then(|| {
                    if active_active && name == CLIENT {
                        CLIENT_OUTSIDE6
                    } else {
                        ipv6_of(ip)
                    }
                }),
                iface: HOST_IFACE.to_owned(),
            })
            .collect();
        let mut lab = Lab {
            bridge_netns: format!("{id}-br"),
            work_dir: std::env::temp_dir().join(&id),
            hosts,
            id,
            created_netns: Vec::new(),
            routed_client: active_active,
        };
        // On failure `lab` is dropped here, which removes whatever part was already built.
        lab.build()
            .with_context(|| format!("building lab {}", lab.id))?;
        Ok(lab)
    }

    /// This run's unique prefix (`tdm{pid}x{counter}`), part of every name the lab creates.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host with this role name. Panics on an unknown name: that is a bug in the test.
    pub fn host(&self, name: &str) -> &Host {
        match self.hosts.iter().find(|host| host.name == name) {
            Some(host) => host,
            None => panic!(
                "the lab has no host {name:?}; it has {:?}",
                self.hosts.iter().map(|h| &h.name).collect::<Vec<_>>()
            ),
        }
    }

    /// Every host, in the order of [`crate::HOSTS`].
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter()
    }

    /// The namespace that holds the bridge `br0` and one port per host.
    pub fn bridge_netns(&self) -> &str {
        &self.bridge_netns
    }

    /// The bridge namespace's bound file, for `nsenter --net=`.
    pub fn bridge_netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.bridge_netns)
    }

    /// The name of `host`'s veth end in the bridge namespace (a port of `br0`), e.g. `p-lb1`:
    /// where a capture sees everything that host sends and receives.
    pub fn bridge_port(&self, host: &str) -> String {
        format!("p-{host}")
    }

    /// The name of the bridge in [`Lab::bridge_netns`].
    pub fn bridge(&self) -> &str {
        BRIDGE
    }

    /// A bpffs directory for this run and host, e.g. `/sys/fs/bpf/tdm123x0-lb1`. Not created
    /// here (the daemon does that); removed with everything in it when the lab is dropped.
    pub fn pin_dir(&self, host: &str) -> PathBuf {
        Path::new(BPFFS_DIR).join(format!("{}-{host}", self.id))
    }

    /// A temporary directory of this run for configs and logs; removed when the lab is dropped.
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// Every namespace of this lab (the hosts' and the bridge's), as `ip netns list` names them.
    pub fn netns_names(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|host| host.netns.clone())
            .chain(std::iter::once(self.bridge_netns.clone()))
            .collect()
    }

    fn build(&mut self) -> anyhow::Result<()> {
        create_dir_readable_by_all(&self.work_dir)?;

        let all_netns = self.netns_names();
        self.created_netns.clone_from(&all_netns);
        {
            let _shared = SHARED_SETUP
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let script: String = all_netns
                .iter()
                .map(|name| format!("netns add {name}\n"))
                .collect();
            run_ip_batch(None, &script).context("creating the lab's network namespaces")?;
        }

        // Before any link exists, so no interface ever gets an IPv6 link-local address and the
        // segment carries no router/neighbour solicitations or MLD reports: tests count packets.
        // A dual-stack lab keeps IPv6, and the bridge forwards it without addresses of its own.
        let dual_stack = self.hosts.iter().any(|host| host.ip6.is_some());
        for name in &all_netns {
            if !dual_stack || *name == self.bridge_netns {
                disable_ipv6(&Path::new(NETNS_DIR).join(name))?;
            }
        }

        // STP off and no forward delay: ports forward as soon as they are up. Multicast
        // snooping off: VRRP adverts to 224.0.0.18 must flood to every port.
        let mut bridge_script = format!(
            "link set lo up\n\
             link add {BRIDGE} type bridge stp_state 0 forward_delay 0 mcast_snooping 0\n\
             link set {BRIDGE} up\n"
        );
        for host in self.hosts.iter().filter(|host| !self.is_outside(host)) {
            let port = self.bridge_port(&host.name);
            bridge_script.push_str(&format!(
                "link add {port} type veth peer name {iface} netns {netns}\n\
                 link set {port} master {BRIDGE}\n\
                 link set {port} up\n",
                iface = host.iface,
                netns = host.netns,
            ));
        }
        run_ip_batch(Some(&self.bridge_netns), &bridge_script)
            .context("creating the bridge and the veth pairs")?;
        bridge_without_netfilter(&Path::new(NETNS_DIR).join(&self.bridge_netns))?;
        if self.routed_client {
            self.link_client_to_router()?;
        }

        for host in &self.hosts {
            if host.ip6.is_some() {
                // No duplicate address detection on the link-local address either (VRRP over
                // IPv6 sends from it at once), and no router advertisements taken.
                let mut ifaces = vec![host.iface.clone()];
                if self.routed_client && host.name == ROUTER {
                    ifaces.push(OUTSIDE_IFACE.to_owned());
                }
                netns::run_in(&host.netns_path(), move || -> anyhow::Result<()> {
                    for iface in &ifaces {
                        for (knob, value) in [("accept_dad", "0"), ("accept_ra", "0")] {
                            let path = format!("/proc/sys/net/ipv6/conf/{iface}/{knob}");
                            fs::write(&path, value)
                                .with_context(|| format!("writing {value} to {path}"))?;
                        }
                    }
                    Ok(())
                })?
                .with_context(|| format!("IPv6 settings of host {}", host.name))?;
            }
            let prefix_len = if self.is_outside(host) {
                OUTSIDE_PREFIX_LEN
            } else {
                SEGMENT_PREFIX_LEN
            };
            let mut script = format!(
                "link set lo up\n\
                 addr add {ip}/{prefix_len} dev {iface}\n",
                ip = host.ip,
                iface = host.iface,
            );
            if let Some(ip6) = host.ip6 {
                script.push_str(&format!(
                    "addr add {ip6}/{SEGMENT6_PREFIX_LEN} dev {iface} nodad\n",
                    iface = host.iface,
                ));
            }
            script.push_str(&format!("link set {iface} up\n", iface = host.iface));
            if self.routed_client {
                script.push_str(&match host.name.as_str() {
                    CLIENT => format!("route add default via {ROUTER_OUTSIDE}\n"),
                    ROUTER => format!(
                        "addr add {ROUTER_OUTSIDE}/{OUTSIDE_PREFIX_LEN} dev {OUTSIDE_IFACE}\n\
                         link set {OUTSIDE_IFACE} up\n"
                    ),
                    _ => format!(
                        "route add {}/{OUTSIDE_PREFIX_LEN} via {}\n",
                        outside_network(),
                        self.host(ROUTER).ip
                    ),
                });
                if host.ip6.is_some() {
                    let router6 = self.host(ROUTER).ip6.expect("a dual-stack lab");
                    script.push_str(&match host.name.as_str() {
                        CLIENT => format!("route add default via {ROUTER_OUTSIDE6}\n"),
                        ROUTER => format!(
                            "addr add {ROUTER_OUTSIDE6}/{SEGMENT6_PREFIX_LEN} dev {OUTSIDE_IFACE} nodad\n"
                        ),
                        _ => format!(
                            "route add {}/{SEGMENT6_PREFIX_LEN} via {router6}\n",
                            outside_network6()
                        ),
                    });
                }
            }
            run_ip_batch(Some(&host.netns), &script)
                .with_context(|| format!("configuring host {}", host.name))?;
        }
        if self.routed_client {
            // Forwarding, and ECMP that hashes on the ports too (policy 1), so connections
            // from one client spread over the nodes as they would from many clients.
            netns::run_in(&self.host(ROUTER).netns_path(), || -> anyhow::Result<()> {
                for (knob, value) in [
                    ("/proc/sys/net/ipv4/ip_forward", "1"),
                    ("/proc/sys/net/ipv4/fib_multipath_hash_policy", "1"),
                    ("/proc/sys/net/ipv6/conf/all/forwarding", "1"),
                    ("/proc/sys/net/ipv6/fib_multipath_hash_policy", "1"),
                ] {
                    if knob.contains("ipv6") && !Path::new(knob).exists() {
                        continue; // IPv6 is off in an IPv4 lab
                    }
                    fs::write(knob, value).with_context(|| format!("writing {value} to {knob}"))?;
                }
                Ok(())
            })?
            .context("the router's forwarding settings")?;
        }
        Ok(())
    }

    /// Whether `host` is off the segment (the client of an active-active lab).
    fn is_outside(&self, host: &Host) -> bool {
        self.routed_client && host.name == CLIENT
    }

    /// The client's `eth0` and the router's `eth1`: one veth pair, no bridge.
    fn link_client_to_router(&self) -> anyhow::Result<()> {
        let client = self.host(CLIENT);
        run_ip_batch(
            Some(&self.host(ROUTER).netns),
            &format!(
                "link add {OUTSIDE_IFACE} type veth peer name {iface} netns {netns}\n",
                iface = client.iface,
                netns = client.netns
            ),
        )
        .context("linking the client to the router")
    }

    fn teardown(&mut self) {
        for name in &self.created_netns {
            let path = Path::new(NETNS_DIR).join(name);
            if path.exists() {
                if let Err(error) = netns::stop_processes_in(&path, TEARDOWN_GRACE) {
                    eprintln!("tandem-lab: stopping processes in namespace {name}: {error:#}");
                }
            }
        }
        for name in &self.created_netns {
            if !Path::new(NETNS_DIR).join(name).exists() {
                continue;
            }
            if let Err(error) = delete_netns(name) {
                eprintln!("tandem-lab: {error:#}");
            }
        }
        for name in &self.created_netns {
            // What Host::set_hosts_file wrote for `ip netns exec`.
            if let Err(error) = remove_dir_if_exists(&Path::new(NETNS_ETC_DIR).join(name)) {
                eprintln!("tandem-lab: {error:#}");
            }
        }
        self.created_netns.clear();
        let pin_dirs: Vec<PathBuf> = self.hosts.iter().map(|h| self.pin_dir(&h.name)).collect();
        for dir in pin_dirs.iter().chain(std::iter::once(&self.work_dir)) {
            if let Err(error) = remove_dir_if_exists(dir) {
                eprintln!("tandem-lab: {error:#}");
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl Host {
    /// The file that binds this host's namespace (`/var/run/netns/NAME`), for `nsenter --net=`
    /// or setns(2).
    pub fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.netns)
    }

    /// A command that runs `program` inside this host's network namespace. It goes through
    /// `nsenter --net`, not `ip netns exec`: the latter remounts /sys, which hides /sys/fs/bpf
    /// (pinned maps). nsenter execs the program, so the child's pid is the program's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        let mut net = std::ffi::OsString::from("--net=");
        net.push(self.netns_path());
        command.arg(net).arg("--").arg(program);
        command
    }

    /// Gives this host its own /etc/hosts, which programs started with
    /// [`Host::command_with_etc`] see (`ip netns exec` binds /etc/netns/NAME/hosts over
    /// /etc/hosts). Removed with the lab.
    pub fn set_hosts_file(&self, text: &str) -> anyhow::Result<()> {
        let dir = Path::new(NETNS_ETC_DIR).join(&self.netns);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("hosts"), text)
            .with_context(|| format!("writing {}/hosts", dir.display()))
    }

    /// As [`Host::command`], but through `ip netns exec`, so that the program sees this host's
    /// files under /etc/netns/NAME (its hosts file) instead of /etc's. It also remounts /sys,
    /// so pinned BPF maps are out of its sight: for programs that need none.
    pub fn command_with_etc(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns]).arg(program);
        command
    }

    /// Runs `program args..` in this host's namespace to completion and returns its stdout.
    /// Fails with the command line, exit status and stderr if it did not succeed.
    pub fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut command = self.command(program);
        command.args(args);
        run_to_completion(&mut command, None).with_context(|| format!("on host {}", self.name))
    }

    /// Starts `command` (usually made with [`Host::command`]) and hands back the running
    /// [`Process`], which is stopped and reaped when dropped.
    pub fn spawn(&self, mut command: Command) -> anyhow::Result<Process> {
        let description = describe(&command);
        let child = command.spawn().with_context(|| {
            format!(
                "starting `{description}` on host {}: is the program installed?",
                self.name
            )
        })?;
        Ok(Process::new(child, description))
    }

    /// Runs `f` on a fresh thread inside this host's network namespace and returns its result:
    /// sockets `f` opens are this host's. A panic in `f` is resumed in the caller.
    pub fn in_netns<F, R>(&self, f: F) -> anyhow::Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        netns::run_in(&self.netns_path(), f)
            .with_context(|| format!("running code on host {}", self.name))
    }

    /// The MAC address of the host's `eth0`.
    pub fn mac(&self) -> anyhow::Result<[u8; 6]> {
        let json = self.run("ip", &["-json", "link", "show", "dev", &self.iface])?;
        let links: serde_json::Value = serde_json::from_str(&json)
            .with_context(|| format!("parsing `ip -json link show` of host {}", self.name))?;
        let address = links
            .get(0)
            .and_then(|link| link.get("address"))
            .and_then(|address| address.as_str())
            .with_context(|| {
                format!(
                    "`ip -json link show dev {}` on host {} has no address: {json}",
                    self.iface, self.name
                )
            })?;
        parse_mac(address).with_context(|| format!("MAC of host {}", self.name))
    }
}

/// Parses `aa:bb:cc:dd:ee:ff`.
fn parse_mac(text: &str) -> anyhow::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts
            .next()
            .with_context(|| format!("{text:?} is not a MAC address: too short"))?;
        *byte = u8::from_str_radix(part, 16)
            .with_context(|| format!("{text:?} is not a MAC address: bad byte {part:?}"))?;
    }
    if parts.next().is_some() {
        bail!("{text:?} is not a MAC address: too long");
    }
    Ok(mac)
}

/// The command line as a person would type it, for error messages.
pub(crate) fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `command` to completion (feeding it `stdin` if given) and returns its stdout; the error
/// names the command line, its exit status and its stderr.
pub(crate) fn run_to_completion(
    command: &mut Command,
    stdin: Option<&str>,
) -> anyhow::Result<String> {
    let description = describe(command);
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("starting `{description}`: is the program installed?"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .with_context(|| format!("writing the input of `{description}`"))?;
        // Dropping the pipe closes it, so the program sees the end of its input.
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("waiting for `{description}`"))?;
    if !output.status.success() {
        bail!(
            "`{description}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `ip -batch -` with `script` on stdin, inside `netns` if given: one process for many
/// commands keeps building a lab fast.
/// 198.18.1.0: the client's side of the router in an active-active lab.
fn outside_network() -> Ipv4Addr {
    let [a, b, c, _] = CLIENT_OUTSIDE.octets();
    Ipv4Addr::new(a, b, c, 0)
}

/// 2001:2:1::: the client's IPv6 side of the router in a dual-stack active-active lab.
fn outside_network6() -> Ipv6Addr {
    let [a, b, c, ..] = CLIENT_OUTSIDE6.segments();
    Ipv6Addr::new(a, b, c, 0, 0, 0, 0, 0)
}

fn run_ip_batch(netns: Option<&str>, script: &str) -> anyhow::Result<()> {
    let mut command = Command::new("ip");
    if let Some(netns) = netns {
        command.args(["-n", netns]);
    }
    command.args(["-batch", "-"]);
    run_to_completion(&mut command, Some(script))
        .with_context(|| format!("ip commands:\n{}", script.trim_end()))?;
    Ok(())
}

fn disable_ipv6(netns_path: &Path) -> anyhow::Result<()> {
    netns::run_in(netns_path, || -> anyhow::Result<()> {
        for scope in ["all", "default"] {
            let knob = format!("/proc/sys/net/ipv6/conf/{scope}/disable_ipv6");
            if !Path::new(&knob).exists() {
                // A kernel without IPv6 sends no IPv6 either.
                continue;
            }
            fs::write(&knob, "1").with_context(|| format!("writing 1 to {knob}"))?;
        }
        Ok(())
    })?
    .with_context(|| format!("disabling IPv6 in {}", netns_path.display()))
}

/// Keeps bridged frames out of iptables/nftables in the bridge's namespace (br_netfilter is
/// built into this kernel and on by default). Otherwise the bridge validates IPv4 headers and
/// silently drops malformed frames that tests send on purpose, and runs conntrack on every
/// frame, which is not what a switch between the hosts does.
fn bridge_without_netfilter(netns_path: &Path) -> anyhow::Result<()> {
    netns::run_in(netns_path, || -> anyhow::Result<()> {
        for family in ["iptables", "ip6tables", "arptables"] {
            let knob = format!("/proc/sys/net/bridge/bridge-nf-call-{family}");
            if !Path::new(&knob).exists() {
                // No br_netfilter: bridged frames never reach netfilter.
                continue;
            }
            fs::write(&knob, "0").with_context(|| format!("writing 0 to {knob}"))?;
        }
        Ok(())
    })?
    .with_context(|| format!("turning off bridge netfilter in {}", netns_path.display()))
}

fn delete_netns(name: &str) -> anyhow::Result<()> {
    run_to_completion(Command::new("ip").args(["netns", "del", name]), None)
        .with_context(|| format!("deleting network namespace {name}"))?;
    Ok(())
}

fn create_dir_readable_by_all(dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Web servers drop to www-data and must read their configs and documents under here.
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} readable", dir.display()))
}

fn remove_dir_if_exists(dir: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error).with_context(|| format!("removing {}", dir.display())),
    }
}

/// Mounts a bpffs on /sys/fs/bpf if there is none, so pin directories work. Failing that is
/// only a warning: labs that load no XDP program do not need it.
fn ensure_bpffs_mounted() {
    if is_bpffs(Path::new(BPFFS_DIR)) {
        return;
    }
    let result = run_to_completion(
        Command::new("mount").args(["-t", "bpf", "bpf", BPFFS_DIR]),
        None,
    );
    if let Err(error) = result {
        eprintln!(
            "tandem-lab: warning: {BPFFS_DIR} is no bpffs and mounting one failed ({error:#}); \
             tests that pin eBPF maps will fail"
        );
    }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs(2) writes into the zeroed struct we pass; the path is NUL-terminated.
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64 but not on every target
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == BPF_FS_MAGIC
    }
}

/// The pid in a lab name (`tdm{pid}x...`), if the name is one of ours.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(ID_PREFIX)?;
    let digits_end = rest.find(|c: char| !c.is_ascii_digit())?;
    if digits_end == 0 || !rest[digits_end..].starts_with('x') {
        return None;
    }
    rest[..digits_end].parse().ok()
}

/// The entries of `dir` named like a lab whose owner process is gone.
fn stale_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.to_owned();
            let pid = owner_pid(&name)?;
            (!netns::process_alive(pid)).then(|| (name, entry.path()))
        })
        .collect()
}

/// Removes what earlier runs left when they were killed before their labs were dropped:
/// processes and namespaces, bpffs pin directories, temporary directories. Errors are only
/// reported: a leftover cannot clash with a new lab (names carry the pid), it only wastes.
fn remove_stale_labs() {
    for (name, path) in stale_entries(Path::new(NETNS_DIR)) {
        if let Err(error) = netns::stop_processes_in(&path, TEARDOWN_GRACE) {
            eprintln!("tandem-lab: stopping processes in stale namespace {name}: {error:#}");
        }
        if let Err(error) = delete_netns(&name) {
            eprintln!("tandem-lab: removing a stale lab: {error:#}");
        }
    }
    for (_, path) in stale_entries(Path::new(BPFFS_DIR))
        .into_iter()
        .chain(stale_entries(&std::env::temp_dir()))
    {
        if let Err(error) = remove_dir_if_exists(&path) {
            eprintln!("tandem-lab: removing a stale lab: {error:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_carry_their_owner_pid() {
        assert_eq!(owner_pid("tdm1234x0-lb1"), Some(1234));
        assert_eq!(owner_pid("tdm1234x12"), Some(1234));
        assert_eq!(owner_pid("tdmx0-lb1"), None);
        assert_eq!(owner_pid("tdm1234-lb1"), None);
        assert_eq!(owner_pid("tandem"), None);
    }

    #[test]
    fn mac_addresses_parse() {
        assert_eq!(
            parse_mac("02:00:c6:12:00:0a").ok(),
            Some([0x02, 0x00, 0xc6, 0x12, 0x00, 0x0a])
        );
        assert!(parse_mac("02:00:c6:12:00").is_err());
        assert!(parse_mac("02:00:c6:12:00:0a:01").is_err());
        assert!(parse_mac("zz:00:c6:12:00:0a").is_err());
    }
}

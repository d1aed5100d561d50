//! The active-active lab's moving parts ([`crate::Lab::active_active`]): the router (a real
//! BIRD 2 speaking BGP with every node and installing the anycast VIP's route with one next hop
//! per node that announces it), and the `[bgp]` part of a node's config.
//!
//! Everything stays inside the lab: BGP runs between the router's namespace and the nodes'
//! on 198.18.0.0/24.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::pair::{wait_until, TandemNode};
use crate::process::Process;
use crate::{Host, Lab, ANYCAST_VIP, ANYCAST_VIP6, NODES_AS, ROUTER, ROUTER_AS};

/// The hold time the lab's sessions use: the router withdraws a silent node after it.
pub const HOLD_TIME: Duration = Duration::from_secs(3);

/// BIRD on the router; stopped when dropped.
pub struct Router {
    pub process: Process,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Router {
    /// Starts BIRD on the router with a session to each of `nodes`, importing what they
    /// announce and installing it in the kernel as one multipath route (BIRD's `merge paths`).
    pub fn start(lab: &Lab, nodes: &[&Host]) -> anyhow::Result<Router> {
        let router = lab.host(ROUTER);
        let config = lab.work_dir().join("router-bird.conf");
        let socket = lab.work_dir().join("router-bird.ctl");
        let log = lab.work_dir().join("router-bird.log");
        std::fs::write(&config, Self::config_text(router, nodes))
            .context("writing the router's BIRD config")?;
        let log_file = std::fs::File::create(&log).context("creating the router's BIRD log")?;
        let mut command = router.command("bird");
        command
            .arg("-f")
            .arg("-c")
            .arg(&config)
            .arg("-s")
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .stderr(log_file);
        let process = router.spawn(command)?;
        Ok(Router {
            process,
            socket,
            log,
        })
    }

    /// The router's BIRD config: eBGP with each node (AS [`ROUTER_AS`] to [`NODES_AS`]), the
    /// lab's hold time, and a kernel protocol that merges equal routes into ECMP.
    pub fn config_text(router: &Host, nodes: &[&Host]) -> String {
        let mut text = format!(
            "log stderr all;\n\
             debug protocols {{ states }};\n\
             router id {router_ip};\n\
             protocol device {{ scan time 1; }}\n\
             protocol kernel {{\n  ipv4 {{ import none; export all; }};\n  merge paths on;\n}}\n\
             template bgp node {{\n  local {router_ip} as {ROUTER_AS};\n  hold time {hold};\n  \
             keepalive time 1;\n  connect delay time 1;\n  connect retry time 1;\n  \
             error wait time 1, 5;\n  graceful restart off;\n  \
             ipv4 {{ import all; export none; }};\n}}\n",
            router_ip = router.ip,
            hold = HOLD_TIME.as_secs(),
        );
        for node in nodes {
            text.push_str(&format!(
                "protocol bgp {name} from node {{ neighbor {ip} as {NODES_AS}; }}\n",
                name = node.name,
                ip = node.ip
            ));
        }
        // A dual-stack lab: IPv6 sessions beside the IPv4 ones, and the IPv6 routes in the
        // kernel the same way. The nodes' global next hops, not their link-local ones, so
        // the routes name the nodes' addresses.
        if let Some(router6) = router.ip6 {
            text.push_str(&format!(
                "protocol kernel {{\n  ipv6 {{ import none; export all; }};\n  merge paths on;\n}}\n\
                 template bgp node6 {{\n  local {router6} as {ROUTER_AS};\n  hold time {hold};\n  \
                 keepalive time 1;\n  connect delay time 1;\n  connect retry time 1;\n  \
                 error wait time 1, 5;\n  graceful restart off;\n  \
                 ipv6 {{ import all; export none; next hop prefer global; }};\n}}\n",
                hold = HOLD_TIME.as_secs(),
            ));
            for node in nodes {
                if let Some(ip6) = node.ip6 {
                    text.push_str(&format!(
                        "protocol bgp {name}_6 from node6 {{ neighbor {ip6} as {NODES_AS}; }}\n",
                        name = node.name,
                    ));
                }
            }
        }
        text
    }

    /// The router's log and its sessions as `birdc show protocols` gives them.
    pub fn log_text(&self) -> String {
        let protocols = std::process::Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .arg("show protocols")
            .output()
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_else(|error| format!("(birdc: {error})"));
        format!(
            "{}\n{protocols}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
}

/// The next hops of the router's route to `vip` (empty when it has none), sorted.
pub fn next_hops(lab: &Lab, vip: Ipv4Addr) -> Vec<Ipv4Addr> {
    next_hops_of(lab, vip.into())
        .into_iter()
        .filter_map(|hop| match hop {
            IpAddr::V4(hop) => Some(hop),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// [`next_hops`] for an IPv4 or IPv6 `vip`.
pub fn next_hops_of(lab: &Lab, vip: IpAddr) -> Vec<IpAddr> {
    let (family, length) = if vip.is_ipv4() {
        ("-4", 32)
    } else {
        ("-6", 128)
    };
    let Ok(json) = lab.host(ROUTER).run(
        "ip",
        &[family, "-json", "route", "show", &format!("{vip}/{length}")],
    ) else {
        return Vec::new();
    };
    let routes: serde_json::Value = serde_json::from_str(&json).unwrap_or_default();
    let mut hops: Vec<IpAddr> = routes
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|route| {
            let single = route.get("gateway").into_iter();
            let multi = route
                .get("nexthops")
                .and_then(|hops| hops.as_array())
                .into_iter()
                .flatten()
                .filter_map(|hop| hop.get("gateway"));
            single.chain(multi)
        })
        .filter_map(|gateway| gateway.as_str()?.parse().ok())
        .collect();
    hops.sort();
    hops
}

/// Waits until the router's next hops for the anycast VIP are exactly `nodes`' addresses;
/// how long that took.
pub fn wait_for_next_hops(
    lab: &Lab,
    nodes: &[&str],
    timeout: Duration,
) -> anyhow::Result<Duration> {
    wait_for_next_hops_of(lab, ANYCAST_VIP.into(), nodes, timeout)
}

/// [`wait_for_next_hops`] for `vip`, IPv4 (next hops: the nodes' IPv4 addresses) or IPv6
/// (their IPv6 addresses).
pub fn wait_for_next_hops_of(
    lab: &Lab,
    vip: IpAddr,
    nodes: &[&str],
    timeout: Duration,
) -> anyhow::Result<Duration> {
    let mut expected: Vec<IpAddr> = nodes
        .iter()
        .map(|name| {
            let host = lab.host(name);
            match vip {
                IpAddr::V4(_) => IpAddr::V4(host.ip),
                IpAddr::V6(_) => IpAddr::V6(host.ip6.expect("a dual-stack lab for an IPv6 VIP")),
            }
        })
        .collect();
    expected.sort();
    let mut last = Vec::new();
    wait_until(
        timeout,
        &format!("the router's next hops for {vip} to be {nodes:?}"),
        || {
            last = next_hops_of(lab, vip);
            last == expected
        },
    )
    .with_context(|| format!("the next hops were {last:?}"))
}

/// The `[bgp]` section of a node of the active-active lab: the router as its peer, the lab's
/// hold time, the anycast VIP; in a dual-stack lab also the router's IPv6 address and the
/// IPv6 anycast VIP.
pub fn bgp_section(lab: &Lab, node: &Host) -> String {
    let router = lab.host(ROUTER);
    let mut peers = vec![format!(
        "{{ address = \"{}\", remote_as = {ROUTER_AS} }}",
        router.ip
    )];
    let mut vips = vec![format!("\"{ANYCAST_VIP}\"")];
    if let (Some(router6), Some(_)) = (router.ip6, node.ip6) {
        peers.push(format!(
            "{{ address = \"{router6}\", remote_as = {ROUTER_AS} }}"
        ));
        vips.push(format!("\"{ANYCAST_VIP6}\""));
    }
    format!(
        "[bgp]\nlocal_as = {NODES_AS}\nrouter_id = \"{id}\"\npeers = [{peers}]\n\
         vips = [{vips}]\nhold_time = \"{hold}s\"\n",
        id = node.ip,
        peers = peers.join(", "),
        vips = vips.join(", "),
        hold = HOLD_TIME.as_secs(),
    )
}

/// The `[replication]` section of `node`: every other node of `nodes` is a peer.
pub fn replication_section(node: &Host, nodes: &[&Host], port: u16) -> String {
    let peers: Vec<String> = nodes
        .iter()
        .filter(|peer| peer.name != node.name)
        .map(|peer| format!("\"{}:{port}\"", peer.ip))
        .collect();
    format!(
        "[replication]\nlisten = \"{}:{port}\"\npeers = [{}]\n",
        node.ip,
        peers.join(", ")
    )
}

/// BIRD's pid on a node, from its status ("running (pid N)").
pub fn bird_pid(node: &TandemNode) -> anyhow::Result<i32> {
    let status = node.status()?;
    let bird = status["bgp"]["bird"]
        .as_str()
        .with_context(|| format!("no bgp.bird in {status}"))?;
    bird.strip_prefix("running (pid ")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|pid| pid.parse().ok())
        .with_context(|| format!("BIRD is not running on {}: {bird}", node.host))
}

/// Whether `vip` is on `host`'s loopback interface.
pub fn on_loopback(host: &Host, vip: IpAddr) -> bool {
    host.run("ip", &["-o", "addr", "show", "dev", "lo"])
        .map(|text| text.contains(&format!(" {vip}/")))
        .unwrap_or(false)
}

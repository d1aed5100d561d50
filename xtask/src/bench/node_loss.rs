//! The active-active rows of `cargo xtask bench failover`: the loss of one of three Tandem
//! nodes that announce the anycast VIP 198.18.2.99 over BGP to a BIRD router with ECMP
//! ([`Lab::active_active`]), under load from the client outside the router.
//!
//! Each node serves the VIP twice: HTTP on port 80 through its proxy (to tandem-echo on http1
//! and http2) and TCP on port 7000 forwarded by XDP (generic, on the veth) to a who-server on
//! each backend by direct server return, its connection table shared with the other nodes over
//! `[replication]`. lb1 is the node lost, in one of three ways: SIGKILL of the daemon (its BIRD
//! dies with it, so the BGP sessions close at once), a graceful stop (SIGTERM: the daemon
//! withdraws first, then lets open connections finish), or frozen (SIGSTOP of the daemon and its
//! BIRD: the session stays open and silent until the router's hold time runs out).
//!
//! What one loss measures:
//! - the time from the signal to the router's route without lb1: when the change of the route
//!   arrived from `ip monitor route` in the router's namespace, once `ip route` (polled every
//!   few milliseconds) shows the next hops without lb1;
//! - the failed requests of a client that starts an HTTP request on a new connection every
//!   10 ms from 1 s before the loss until 1 s after the withdrawal, and when the last failure
//!   started;
//! - how many of 30 long-lived TCP connections, opened and asked once before the loss (and
//!   which of them went through lb1), are asked again after the withdrawal and answer from the
//!   same backend.
//!
//! After each loss lb1 comes back (started again, or thawed) and must be a next hop again
//! before the next one; the three ways are interleaved, their order rotated each repetition.

use std::io::{BufRead as _, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use tandem_lab::anycast::{
    bgp_section, bird_pid, next_hops, replication_section, wait_for_next_hops, Router, HOLD_TIME,
};
use tandem_lab::l4::{make_dsr_backend, Conversation, NetnsRuntime, WhoServer};
use tandem_lab::pair::TandemNode;
use tandem_lab::probe::{Failure, RateLoop, RateSettings, Sample};
use tandem_lab::{
    EchoBackend, Host, Lab, ANYCAST_VIP, CLIENT, HTTP1, HTTP2, LB1, LB2, LB3, ROUTER,
};

const NODES: [&str; 3] = [LB1, LB2, LB3];
const HTTP_PORT: u16 = 80;
const L4_PORT: u16 = 7000;
const REPLICATION_PORT: u16 = 7946;
/// The long-lived TCP connections of each loss.
pub const CONNECTIONS: usize = 30;
/// One HTTP request on a new connection this often.
pub const REQUEST_EVERY: Duration = Duration::from_millis(10);
/// A request without its whole answer in this time failed (an answer takes about a
/// millisecond in the lab; a connection to a node that is gone times out or is refused).
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(250);
/// How long the request loop runs before the loss, and after the withdrawal.
const BEFORE: Duration = Duration::from_secs(1);
const AFTER: Duration = Duration::from_secs(1);
/// BIRD's sessions come up within a few seconds; a node that starts again needs its health
/// checks first.
const SESSIONS_UP: Duration = Duration::from_secs(30);

/// How the node is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    Kill,
    Graceful,
    Freeze,
}

impl Loss {
    pub const ALL: [Loss; 3] = [Loss::Kill, Loss::Graceful, Loss::Freeze];

    pub fn name(self) -> &'static str {
        match self {
            Loss::Kill => "crash (SIGKILL)",
            Loss::Graceful => "graceful (SIGTERM)",
            Loss::Freeze => "frozen (SIGSTOP)",
        }
    }

    /// The word of `--stop` that selects it.
    pub fn word(self) -> &'static str {
        match self {
            Loss::Kill => "crash",
            Loss::Graceful => "graceful",
            Loss::Freeze => "frozen",
        }
    }
}

/// What one loss looked like.
#[derive(Debug, Clone)]
pub struct Measured {
    /// From the signal to the router's route without lb1.
    pub withdrawn: Duration,
    /// HTTP requests of the loop (from [`BEFORE`] the loss to [`AFTER`] the withdrawal).
    pub sent: usize,
    pub failed: usize,
    /// When the last failed request started, from the signal; `None` without failures.
    pub last_failure: Option<Duration>,
    /// How each failed request failed.
    pub failures: Vec<Failure>,
    /// Of the [`CONNECTIONS`]: those that went through lb1, and those that answered from
    /// their backend after the withdrawal (through lb1 or not).
    pub through_lost: usize,
    pub kept: usize,
    pub kept_through_lost: usize,
}

/// The repetitions of each wanted loss, in the order of `losses`.
pub fn measure(losses: &[Loss], repetitions: usize) -> anyhow::Result<Vec<(Loss, Vec<Measured>)>> {
    let lab = Lab::active_active()?;
    let hosts: Vec<&Host> = NODES.iter().map(|name| lab.host(name)).collect();
    let mut backends = Vec::new();
    let mut who = Vec::new();
    for name in [HTTP1, HTTP2] {
        let host = lab.host(name);
        make_dsr_backend(host, ANYCAST_VIP)?;
        backends.push(EchoBackend::start(host, HTTP_PORT, name)?);
        who.push(WhoServer::start(host, L4_PORT, Some(ANYCAST_VIP), name)?);
    }
    let router = Router::start(&lab, &hosts)?;
    let mut nodes: Vec<Option<TandemNode>> = Vec::new();
    for host in &hosts {
        nodes.push(Some(TandemNode::start(
            &lab,
            host,
            &node_config(&lab, host),
        )?));
    }
    let client = NetnsRuntime::new(lab.host(CLIENT))?;
    let logs = |nodes: &[Option<TandemNode>]| {
        let mut text = format!("router:\n{}\n", router.log_text());
        for node in nodes.iter().flatten() {
            text.push_str(&format!("{}:\n{}\n", node.host, node.log_text()));
        }
        text
    };
    if let Err(error) = wait_for_next_hops(&lab, &NODES, SESSIONS_UP) {
        bail!("{error:#}\n{}", logs(&nodes));
    }

    let mut results: Vec<(Loss, Vec<Measured>)> =
        losses.iter().map(|&loss| (loss, Vec::new())).collect();
    for repetition in 0..repetitions {
        for turn in 0..losses.len() {
            let index = (turn + repetition) % losses.len();
            let loss = losses[index];
            let measured = lose_lb1(&lab, &router, &client, &mut nodes, loss)
                .with_context(|| format!("repetition {}, {}", repetition + 1, loss.name()))
                .map_err(|error| anyhow::anyhow!("{error:#}\n{}", logs(&nodes)))?;
            eprintln!(
                "  active-active, {}, repetition {}: withdrawn after {} ms, {} of {} requests \
                 failed ({}; last {}), {} of {CONNECTIONS} connections kept ({} of {} through \
                 lb1)",
                loss.name(),
                repetition + 1,
                measured.withdrawn.as_millis(),
                measured.failed,
                measured.sent,
                failure_kinds(std::slice::from_ref(&measured)),
                measured
                    .last_failure
                    .map(|at| format!("{} ms after", at.as_millis()))
                    .unwrap_or_else(|| "none".to_owned()),
                measured.kept,
                measured.kept_through_lost,
                measured.through_lost,
            );
            results[index].1.push(measured);
            // lb1 back before the next loss.
            let took = wait_for_next_hops(&lab, &NODES, SESSIONS_UP)
                .map_err(|error| anyhow::anyhow!("lb1 back: {error:#}\n{}", logs(&nodes)))?;
            eprintln!("  lb1 is a next hop again after {} ms", took.as_millis());
        }
    }
    drop(client);
    drop(nodes);
    drop(router);
    Ok(results)
}

/// One loss of lb1 under load, and lb1 started again (or thawed) afterwards.
fn lose_lb1(
    lab: &Lab,
    router: &Router,
    client: &NetnsRuntime,
    nodes: &mut [Option<TandemNode>],
    loss: Loss,
) -> anyhow::Result<Measured> {
    let lb1 = nodes[0].as_ref().context("lb1 runs")?;
    let bird = bird_pid(lb1)?;
    let daemon = libc::pid_t::try_from(lb1.process.pid()).context("lb1's pid")?;

    // The long-lived connections, each asked once; a connection went through lb1 when lb1's
    // XDP counters moved while it asked (one at a time, the others idle, with time for the
    // client's delayed acknowledgement).
    let server = SocketAddrV4::new(ANYCAST_VIP, L4_PORT);
    let mut connections = Vec::new();
    let mut counted = l4_packets(lb1)?;
    for number in 0..CONNECTIONS {
        let mut conversation = client
            .block_on(Conversation::open(server, None))
            .with_context(|| format!("opening connection {number} through the VIP"))?;
        let answer = client
            .handle()
            .block_on(conversation.ask())
            .with_context(|| format!("first answer on connection {number}"))?;
        std::thread::sleep(Duration::from_millis(50));
        let now = l4_packets(lb1)?;
        connections.push((conversation, answer.backend, now > counted));
        counted = now;
    }
    let through_lost = connections.iter().filter(|(_, _, lost)| *lost).count();

    let watch = RouteWatch::start(lab)?;
    let requests = RateLoop::start(
        lab.host(CLIENT),
        SocketAddr::new(ANYCAST_VIP.into(), HTTP_PORT),
        RateSettings {
            every: REQUEST_EVERY,
            timeout: REQUEST_TIMEOUT,
            max_requests: 5_000,
            max_duration: BEFORE + HOLD_TIME * 3 + AFTER + Duration::from_secs(5),
        },
    )?;
    std::thread::sleep(BEFORE);
    let router_log = std::fs::read_to_string(&router.log)
        .unwrap_or_default()
        .len();
    let stopped = Instant::now();
    let mut gone = None;
    match loss {
        Loss::Kill => {
            let mut node = nodes[0].take().context("lb1 runs")?;
            node.process.kill(libc::SIGKILL);
            gone = Some(node);
        }
        Loss::Graceful => {
            let mut node = nodes[0].take().context("lb1 runs")?;
            node.process.kill(libc::SIGTERM);
            gone = Some(node);
        }
        Loss::Freeze => {
            // SAFETY: kill(2) on this lab's BIRD and daemon, both alive (read just above).
            unsafe {
                libc::kill(bird, libc::SIGSTOP);
                libc::kill(daemon, libc::SIGSTOP);
            }
        }
    }
    let survivors = [lab.host(LB2).ip, lab.host(LB3).ip];
    let withdrawn = watch.wait_for_withdrawal(lab, &survivors, stopped, HOLD_TIME * 3);
    if let Ok(withdrawn) = withdrawn {
        std::thread::sleep((stopped + withdrawn + AFTER).saturating_duration_since(Instant::now()));
    }
    let samples = requests.finish();
    drop(watch);
    // What the router saw of lb1, as evidence of how it went (session closed, or hold timer).
    let log = std::fs::read_to_string(&router.log).unwrap_or_default();
    for line in log.get(router_log..).unwrap_or_default().lines() {
        if line.contains(LB1) {
            eprintln!("    router: {line}");
        }
    }
    let asked_again = match withdrawn {
        Ok(_) => ask_again(client, &mut connections),
        Err(_) => Vec::new(),
    };
    if loss == Loss::Freeze {
        // SAFETY: as above; the processes are still ours (stopped, not reaped).
        unsafe {
            libc::kill(daemon, libc::SIGCONT);
            libc::kill(bird, libc::SIGCONT);
        }
    }
    if let Some(mut node) = gone {
        if loss == Loss::Graceful {
            node.process
                .wait_exit(Duration::from_secs(15))
                .context("lb1 to stop after SIGTERM")?;
        }
        drop(node);
        nodes[0] = Some(TandemNode::start(
            lab,
            lab.host(LB1),
            &node_config(lab, lab.host(LB1)),
        )?);
    }
    let withdrawn = withdrawn?;
    drop(connections);

    let failed: Vec<&Sample> = samples.iter().filter(|sample| !sample.ok()).collect();
    let kept = asked_again.iter().filter(|(kept, _)| *kept).count();
    let kept_through_lost = asked_again
        .iter()
        .filter(|(kept, through_lost)| *kept && *through_lost)
        .count();
    Ok(Measured {
        withdrawn,
        sent: samples.len(),
        failed: failed.len(),
        last_failure: failed
            .iter()
            .map(|sample| sample.started)
            .max()
            .map(|started| started.saturating_duration_since(stopped)),
        failures: failed
            .iter()
            .map(|sample| sample.failure.unwrap_or(Failure::Other))
            .collect(),
        through_lost,
        kept,
        kept_through_lost,
    })
}

/// `ip monitor route` in the router's namespace: when each change of the VIP's route arrived.
/// The time of the change is read from it; polling `ip route` (one look every few
/// milliseconds) only confirms what the route became.
struct RouteWatch {
    monitor: std::process::Child,
    events: std::sync::mpsc::Receiver<Instant>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl RouteWatch {
    fn start(lab: &Lab) -> anyhow::Result<RouteWatch> {
        let mut command = lab.host(ROUTER).command("ip");
        command
            .args(["monitor", "route"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        let mut monitor = command.spawn().context("ip monitor route on the router")?;
        let stdout = monitor.stdout.take().context("ip monitor's stdout")?;
        let (sender, events) = std::sync::mpsc::channel();
        // "198.18.2.99 proto bird ..." or "Deleted 198.18.2.99 ...": the first line of each
        // message about the VIP's route (its next hops follow on lines of their own).
        let vip = format!("{ANYCAST_VIP} ");
        let reader = std::thread::Builder::new()
            .name("route-watch".to_owned())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.contains(&vip) && sender.send(Instant::now()).is_err() {
                        break;
                    }
                }
            })?;
        // Time for the monitor to join its netlink groups before anything changes.
        std::thread::sleep(Duration::from_millis(200));
        Ok(RouteWatch {
            monitor,
            events,
            reader: Some(reader),
        })
    }

    /// Waits until the router's next hops for the VIP are exactly `survivors`; the time from
    /// `started` to the first change of the route that arrived after the last look that still
    /// showed lb1, or to the sighting if that was sooner (the monitor's line is read a little
    /// after the change too). Either is at or after the change itself.
    fn wait_for_withdrawal(
        &self,
        lab: &Lab,
        survivors: &[Ipv4Addr],
        started: Instant,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let mut expected = survivors.to_vec();
        expected.sort();
        let mut last = Vec::new();
        let mut looks = 0u32;
        let mut changes = Vec::new();
        // The start of the last look that still showed lb1: the change came after it.
        let mut before = started;
        while started.elapsed() < timeout {
            let look = Instant::now();
            last = next_hops(lab, ANYCAST_VIP);
            looks += 1;
            let seen = started.elapsed();
            changes.extend(self.events.try_iter());
            if last == expected {
                let change = changes
                    .iter()
                    .filter(|at| **at >= before)
                    .min()
                    .map(|at| at.saturating_duration_since(started));
                eprintln!(
                    "    route without lb1: seen at look {looks} after {} ms (one look every \
                     {:.1} ms), change arrived after {}",
                    seen.as_millis(),
                    seen.as_secs_f64() * 1e3 / f64::from(looks),
                    change
                        .map(|at| format!("{:.1} ms", at.as_secs_f64() * 1e3))
                        .unwrap_or_else(|| "(none seen by ip monitor)".to_owned()),
                );
                return Ok(change.map_or(seen, |change| change.min(seen)));
            }
            before = look;
            std::thread::sleep(Duration::from_millis(2));
        }
        bail!("the router still had the next hops {last:?} for {ANYCAST_VIP} after {timeout:?}")
    }
}

impl Drop for RouteWatch {
    fn drop(&mut self) {
        let _ = self.monitor.kill();
        let _ = self.monitor.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Asks every connection once more, all at the same time; for each, whether it answered from
/// the backend it had, and whether it went through lb1.
fn ask_again(
    client: &NetnsRuntime,
    connections: &mut Vec<(Conversation, String, bool)>,
) -> Vec<(bool, bool)> {
    let taken = std::mem::take(connections);
    let handles: Vec<_> = taken
        .into_iter()
        .map(|(mut conversation, backend, through_lost)| {
            client.handle().spawn(async move {
                let kept =
                    matches!(conversation.ask().await, Ok(answer) if answer.backend == backend);
                (conversation, backend, through_lost, kept)
            })
        })
        .collect();
    let mut asked = Vec::new();
    for handle in handles {
        if let Ok((conversation, backend, through_lost, kept)) = client.handle().block_on(handle) {
            asked.push((kept, through_lost));
            connections.push((conversation, backend, through_lost));
        }
    }
    asked
}

/// The packets lb1's XDP program forwarded for the TCP service, all backends.
fn l4_packets(node: &TandemNode) -> anyhow::Result<u64> {
    let status = node.status()?;
    Ok(status["dataplane"]["services"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|service| service["backends"].as_array().into_iter().flatten())
        .map(|backend| backend["packets"].as_u64().unwrap_or(0))
        .sum())
}

/// A node of the cluster: HTTP through the proxy and TCP through XDP on the anycast VIP, flows
/// shared with the other nodes, the VIP announced to the router.
fn node_config(lab: &Lab, host: &Host) -> String {
    let nodes: Vec<&Host> = NODES.iter().map(|name| lab.host(name)).collect();
    let node = format!(
        "{}bpf_pin_dir = \"{}\"\n",
        TandemNode::node_section(lab, host)
            .replace("dataplane = \"none\"", "dataplane = \"xdp-generic\""),
        lab.pin_dir(&host.name).display()
    );
    let (http1, http2) = (lab.host(HTTP1).ip, lab.host(HTTP2).ip);
    format!(
        "{node}\n[[service]]\nname = \"web\"\nlisten = \"{ANYCAST_VIP}:{HTTP_PORT}\"\n\
         backends = [\"{http1}:{HTTP_PORT}\", \"{http2}:{HTTP_PORT}\"]\n\
         health = {{ interval = \"500ms\" }}\n\n\
         [[service]]\nname = \"who\"\nlisten = \"{ANYCAST_VIP}:{L4_PORT}\"\nmode = \"tcp\"\n\
         backends = [\"{http1}:{L4_PORT}\", \"{http2}:{L4_PORT}\"]\n\n{replication}\n{bgp}",
        replication = replication_section(host, &nodes, REPLICATION_PORT),
        bgp = bgp_section(lab, host),
    )
}

/// How the failed requests of `runs` failed, all together: "refused 1, timed out 40", or
/// "none".
pub fn failure_kinds(runs: &[Measured]) -> String {
    let mut kinds = std::collections::BTreeMap::new();
    for failure in runs.iter().flat_map(|run| &run.failures) {
        *kinds.entry(*failure).or_insert(0usize) += 1;
    }
    if kinds.is_empty() {
        return "none".to_owned();
    }
    kinds
        .iter()
        .map(|(kind, count)| format!("{} {count}", kind.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

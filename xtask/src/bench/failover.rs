//! `cargo xtask bench failover`: how long the VIP is without service when the master stops,
//! for a Tandem pair and a keepalived pair run in the same command on the lab topology, with
//! an IPv4 VIP and with an IPv6 one (a dual-stack lab; VRRP over IPv6, and the client's
//! neighbour entry moved by unsolicited neighbour advertisements instead of gratuitous ARP).
//!
//! Each pair runs VRRP only (version 3, which both speak at 100 ms adverts) in front of a plain
//! web server on each node (`tandem-echo` on 0.0.0.0:80, answering with its node's name). The
//! client runs a bounded request loop against the VIP (one request at a time, 20 ms timeouts,
//! 5 ms apart). Stopping the master is either a crash (SIGKILL of the VRRP daemon and of the web
//! server on that node: the service is gone and nothing removes the VIP) or graceful (SIGTERM of
//! the daemon only). The outage is the time from the stop to the end of the first request
//! answered by the new master; failed requests are those that started in between. After each
//! repetition the old master is started again and must take the VIP back before the next one.
//!
//! Beside the pairs, active-active ([`super::node_loss`]): the loss of one of three nodes that
//! announce an anycast VIP over BGP, in a second table whose notes say how its figures compare
//! with the pairs'. Those rows run after the IPv4 pair rows (the anycast lab is IPv4 only).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use std::net::{IpAddr, SocketAddr};

use super::node_loss::{self, Loss, Measured};
use tandem_lab::pair::{wait_for_sole_holder, Keepalived, TandemNode, VrrpSettings};
use tandem_lab::probe::{outage, LoopSettings, Outage, RequestLoop};
use tandem_lab::{EchoBackend, Lab, CLIENT, LB1, LB2, VIP, VIP6};

/// Which daemon runs VRRP on both nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pair {
    Tandem,
    Keepalived,
}

impl Pair {
    fn name(self) -> &'static str {
        match self {
            Pair::Tandem => "Tandem",
            Pair::Keepalived => "keepalived",
        }
    }
}

/// The VIP's address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        }
    }

    fn vip(self) -> IpAddr {
        match self {
            Family::Ipv4 => VIP.into(),
            Family::Ipv6 => VIP6.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Crash,
    Graceful,
}

impl Stop {
    fn name(self) -> &'static str {
        match self {
            Stop::Crash => "crash (SIGKILL)",
            Stop::Graceful => "graceful (SIGTERM)",
        }
    }

    /// The word of `--stop` that selects it.
    fn word(self) -> &'static str {
        match self {
            Stop::Crash => "crash",
            Stop::Graceful => "graceful",
        }
    }
}

enum Daemon {
    Tandem(TandemNode),
    Keepalived(Keepalived),
}

struct Node {
    daemon: Option<Daemon>,
    web: Option<EchoBackend>,
}

/// One measured case: a pair, an advert interval and a way to stop, repeated.
struct Case {
    pair: Pair,
    family: Family,
    interval: Duration,
    stop: Stop,
    outages: Vec<Outage>,
}

/// A request that has no answer in this time counts as failed. The lab's round trip is well
/// under a millisecond, so this only bounds how late the loop notices that service is back.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(20);
const REQUEST_PAUSE: Duration = Duration::from_millis(5);

const BACKUP_PRIORITY: u8 = 100;
const MASTER_PRIORITY: u8 = 101;

/// Which cases to run; `None` means all.
pub struct Filter {
    /// "tandem", "keepalived" or "active-active".
    pub pair: Option<String>,
    /// The pairs' advert interval; the active-active rows have none and are then skipped.
    pub interval_ms: Option<u64>,
    /// "ipv4" or "ipv6".
    pub family: Option<String>,
    /// "crash", "graceful" or "frozen" (active-active only).
    pub stop: Option<String>,
}

impl Filter {
    fn everything(&self) -> bool {
        self.pair.is_none()
            && self.interval_ms.is_none()
            && self.family.is_none()
            && self.stop.is_none()
    }

    fn wants_stop(&self, word: &str) -> bool {
        self.stop
            .as_deref()
            .is_none_or(|wanted| wanted.eq_ignore_ascii_case(word))
    }

    /// The active-active losses to measure.
    fn losses(&self) -> Vec<Loss> {
        let wanted = self
            .pair
            .as_deref()
            .is_none_or(|name| name.eq_ignore_ascii_case(ACTIVE_ACTIVE))
            && self.interval_ms.is_none()
            && self
                .family
                .as_deref()
                .is_none_or(|name| name.eq_ignore_ascii_case(Family::Ipv4.name()));
        Loss::ALL
            .into_iter()
            .filter(|loss| wanted && self.wants_stop(loss.word()))
            .collect()
    }
}

/// `--pair` of the active-active rows.
const ACTIVE_ACTIVE: &str = "active-active";

pub fn run(root: &Path, repetitions: usize, filter: Filter) -> anyhow::Result<()> {
    // The lab's pairs start the release binaries, as the other benches' Setup does.
    super::use_release_binaries(root);
    let mut cases = Vec::new();
    let mut losses = Vec::new();
    for family in [Family::Ipv4, Family::Ipv6] {
        for interval in [Duration::from_secs(1), Duration::from_millis(100)] {
            for pair in [Pair::Tandem, Pair::Keepalived] {
                for stop in [Stop::Crash, Stop::Graceful] {
                    let wanted = filter.wants_stop(stop.word())
                        && filter
                            .pair
                            .as_deref()
                            .is_none_or(|name| name.eq_ignore_ascii_case(pair.name()))
                        && filter
                            .interval_ms
                            .is_none_or(|ms| u128::from(ms) == interval.as_millis())
                        && filter
                            .family
                            .as_deref()
                            .is_none_or(|name| name.eq_ignore_ascii_case(family.name()));
                    if !wanted {
                        continue;
                    }
                    eprintln!(
                        "bench failover: {} pair, {} VIP, adverts every {:?}, {}: \
                         {repetitions} repetitions",
                        pair.name(),
                        family.name(),
                        interval,
                        stop.name()
                    );
                    let outages =
                        measure(pair, family, interval, stop, repetitions).with_context(|| {
                            format!(
                                "{} pair, {}, {interval:?}, {}",
                                pair.name(),
                                family.name(),
                                stop.name()
                            )
                        })?;
                    cases.push(Case {
                        pair,
                        family,
                        interval,
                        stop,
                        outages,
                    });
                }
            }
        }
        let wanted = filter.losses();
        if family == Family::Ipv4 && !wanted.is_empty() {
            eprintln!(
                "bench failover: active-active, one of 3 nodes lost ({}): {repetitions} \
                 repetitions, interleaved",
                wanted
                    .iter()
                    .map(|loss| loss.word())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            losses = node_loss::measure(&wanted, repetitions).context("active-active")?;
        }
    }
    let mut table = String::from(
        "`cargo xtask bench failover`: the VRRP pairs (IPv4, then IPv6), and between them the \
         loss of one of three active-active nodes (IPv4); `--pair`, `--interval-ms`, `--family` \
         and `--stop` run some rows only, and then nothing is written here.\n\n",
    );
    if !cases.is_empty() {
        table.push_str(&render(&cases, repetitions));
    }
    if !losses.is_empty() {
        if !table.is_empty() {
            table.push('\n');
        }
        table.push_str(&render_active_active(&losses, &cases, repetitions));
    }
    println!("{table}");
    if filter.everything() {
        write_chart(&root.join("docs").join(CHART_FILE), &cases, &losses)?;
        table.push_str(&format!(
            "\n![Time without service (pairs) or to the withdrawal (active-active), median with min-max]({CHART_FILE})\n"
        ));
        crate::bench::report::replace_section(root, "Failover", &table)?;
    }
    Ok(())
}

/// The chart beside the table in docs/.
const CHART_FILE: &str = "bench-failover.svg";

/// A group of the chart: its label, and the pair case or the active-active loss it shows.
type ChartCell = (
    String,
    Option<(Family, Duration, Stop)>,
    Option<node_loss::Loss>,
);

/// Failover time per case and peer: the pairs' time without service, and for active-active
/// the time to the withdrawal (until then only the lost node's share of new connections
/// fails); median bars, min-max whiskers, in milliseconds.
fn write_chart(
    path: &std::path::Path,
    cases: &[Case],
    losses: &[(node_loss::Loss, Vec<node_loss::Measured>)],
) -> anyhow::Result<()> {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let stats = |values: Vec<f64>| -> Option<(f64, f64, f64)> {
        let mut values = values;
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        Some((
            values[values.len() / 2],
            values[0],
            values[values.len() - 1],
        ))
    };
    // The pairs' cells in table order, each once, then the active-active losses.
    let mut cells: Vec<ChartCell> = Vec::new();
    for case in cases {
        let label = format!(
            "{} {} {}",
            case.family.name(),
            humantime_ms(case.interval),
            case.stop.word()
        );
        if !cells.iter().any(|(l, _, _)| *l == label) {
            cells.push((label, Some((case.family, case.interval, case.stop)), None));
        }
    }
    for (loss, _) in losses {
        cells.push((format!("AA {}", loss.word()), None, Some(*loss)));
    }
    let pair_series = |pair: Pair| {
        let figures: Vec<Option<(f64, f64, f64)>> = cells
            .iter()
            .map(|(_, key, _)| {
                let (family, interval, stop) = (*key)?;
                let case = cases.iter().find(|c| {
                    c.pair == pair && c.family == family && c.interval == interval && c.stop == stop
                })?;
                stats(case.outages.iter().map(|o| ms(o.without_service)).collect())
            })
            .collect();
        crate::bench::chart::Series {
            name: format!("{} pair", pair.name()),
            medians: figures.iter().map(|f| f.map(|f| f.0)).collect(),
            ranges: figures.iter().map(|f| f.map(|f| (f.1, f.2))).collect(),
        }
    };
    let mut series = vec![pair_series(Pair::Tandem), pair_series(Pair::Keepalived)];
    let active: Vec<Option<(f64, f64, f64)>> = cells
        .iter()
        .map(|(_, _, loss)| {
            let loss = (*loss)?;
            let (_, measured) = losses.iter().find(|(l, _)| *l == loss)?;
            stats(measured.iter().map(|m| ms(m.withdrawn)).collect())
        })
        .collect();
    series.push(crate::bench::chart::Series {
        name: "Tandem active-active (1 of 3 nodes)".to_owned(),
        medians: active.iter().map(|f| f.map(|f| f.0)).collect(),
        ranges: active.iter().map(|f| f.map(|f| (f.1, f.2))).collect(),
    });
    let labels: Vec<String> = cells.into_iter().map(|(label, _, _)| label).collect();
    crate::bench::chart::grouped_bars(
        path,
        "cargo xtask bench failover: time without service / to withdrawal",
        "milliseconds",
        &labels,
        &series,
    )
}

fn measure(
    pair: Pair,
    family: Family,
    interval: Duration,
    stop: Stop,
    repetitions: usize,
) -> anyhow::Result<Vec<Outage>> {
    let lab = match family {
        Family::Ipv4 => Lab::new()?,
        Family::Ipv6 => Lab::dual_stack()?,
    };
    let vip = family.vip();
    let mut lb2 = Node {
        web: Some(EchoBackend::start_on_all_addresses(lab.host(LB2), 80, LB2)?),
        daemon: Some(start_daemon(
            &lab,
            pair,
            LB2,
            BACKUP_PRIORITY,
            interval,
            vip,
        )?),
    };
    let mut lb1 = Node {
        web: Some(EchoBackend::start_on_all_addresses(lab.host(LB1), 80, LB1)?),
        daemon: Some(start_daemon(
            &lab,
            pair,
            LB1,
            MASTER_PRIORITY,
            interval,
            vip,
        )?),
    };
    let converge = interval * 4 + Duration::from_secs(8);
    let mut outages = Vec::new();
    for repetition in 0..repetitions {
        wait_for_sole_holder(&lab, LB1, vip, converge)
            .context("lb1 to be master before the stop")?;
        let requests = RequestLoop::start(
            lab.host(CLIENT),
            SocketAddr::new(vip, 80),
            LoopSettings {
                timeout: REQUEST_TIMEOUT,
                pause: REQUEST_PAUSE,
                max_requests: 10_000,
                max_duration: Duration::from_secs(60),
            },
        )?;
        // Service must be normal before the stop: answered by lb1.
        if requests
            .wait_for_success_after(Instant::now(), Some(LB1), Duration::from_secs(5))
            .is_none()
        {
            bail!("the VIP does not answer from lb1 before the stop");
        }
        std::thread::sleep(Duration::from_millis(300));
        let stopped = Instant::now();
        stop_master(&mut lb1, stop);
        let back = requests.wait_for_success_after(stopped, Some(LB2), Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(200));
        let samples = requests.finish();
        if back.is_none() {
            bail!("repetition {repetition}: lb2 never answered on the VIP after lb1 stopped");
        }
        let measured = outage(&samples, stopped, Some(LB2)).context("reading the outage")?;
        eprintln!(
            "  repetition {}: {} ms without service, {} failed requests",
            repetition + 1,
            measured.without_service.as_millis(),
            measured.failed_requests
        );
        outages.push(measured);
        // Bring lb1 back; it preempts, and the next repetition starts from the same state.
        if lb1.web.is_none() {
            lb1.web = Some(EchoBackend::start_on_all_addresses(lab.host(LB1), 80, LB1)?);
        }
        lb1.daemon = Some(start_daemon(
            &lab,
            pair,
            LB1,
            MASTER_PRIORITY,
            interval,
            vip,
        )?);
    }
    drop(lb1);
    drop(lb2.daemon.take());
    Ok(outages)
}

fn start_daemon(
    lab: &Lab,
    pair: Pair,
    host: &str,
    priority: u8,
    interval: Duration,
    vip: IpAddr,
) -> anyhow::Result<Daemon> {
    let host = lab.host(host);
    let mut settings = VrrpSettings::new(3, priority).with_vip(vip);
    settings.advert_interval = interval;
    Ok(match pair {
        Pair::Tandem => {
            let config = TandemNode::vrrp_config(lab, host, &settings);
            Daemon::Tandem(TandemNode::start(lab, host, &config)?)
        }
        Pair::Keepalived => Daemon::Keepalived(Keepalived::start(lab, host, &settings)?),
    })
}

fn stop_master(node: &mut Node, stop: Stop) {
    let Some(daemon) = node.daemon.take() else {
        return;
    };
    match stop {
        Stop::Crash => {
            match daemon {
                Daemon::Tandem(mut tandem) => tandem.process.kill(libc::SIGKILL),
                Daemon::Keepalived(mut keepalived) => keepalived.crash(),
            }
            if let Some(mut web) = node.web.take() {
                web.kill();
            }
        }
        Stop::Graceful => match daemon {
            Daemon::Tandem(mut tandem) => tandem.process.kill(libc::SIGTERM),
            Daemon::Keepalived(mut keepalived) => keepalived.process.kill(libc::SIGTERM),
        },
    }
}

/// The targets of the issue: crash takeover by 3 x advert + skew + 50 ms, graceful by skew +
/// 50 ms (skew of the backup, priority 100, RFC 5798: (256 - 100) / 256 x advert).
fn target(interval: Duration, stop: Stop) -> Duration {
    let skew = interval.mul_f64(f64::from(256 - u32::from(BACKUP_PRIORITY)) / 256.0);
    let slack = Duration::from_millis(50);
    match stop {
        Stop::Crash => interval * 3 + skew + slack,
        Stop::Graceful => skew + slack,
    }
}

fn render(cases: &[Case], repetitions: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Failover: time without service after the master stops ({repetitions} repetitions each, \
         median and worst), and failed requests of a client loop (one request at a time, {} ms \
         timeout, {} ms pause); VRRP v3, priorities 101/100. Crash: SIGKILL of the VRRP daemon \
         and the web server on the master; graceful: SIGTERM of the daemon. IPv6: the VIP \
         2001:2::99 in a dual-stack lab.\n",
        REQUEST_TIMEOUT.as_millis(),
        REQUEST_PAUSE.as_millis()
    );
    let _ = writeln!(
        out,
        "| VIP | adverts | stop | target | Tandem median | Tandem worst | Tandem failed (median) | keepalived median | keepalived worst | keepalived failed (median) | Tandem / keepalived |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    let rows = [Family::Ipv4, Family::Ipv6].into_iter().flat_map(|family| {
        [Duration::from_secs(1), Duration::from_millis(100)]
            .into_iter()
            .flat_map(move |interval| {
                [Stop::Crash, Stop::Graceful]
                    .into_iter()
                    .map(move |stop| (family, interval, stop))
            })
    });
    for (family, interval, stop) in rows {
        {
            let find = |pair: Pair| {
                cases.iter().find(|case| {
                    case.pair == pair
                        && case.family == family
                        && case.interval == interval
                        && case.stop == stop
                })
            };
            let (Some(tandem), Some(keepalived)) = (find(Pair::Tandem), find(Pair::Keepalived))
            else {
                continue;
            };
            let (t_median, t_worst, t_failed) = summary(&tandem.outages);
            let (k_median, k_worst, k_failed) = summary(&keepalived.outages);
            let target = target(interval, stop);
            let verdict = if t_worst <= target { "met" } else { "MISSED" };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} ms | {} ms | {} ms ({verdict}) | {} | {} ms | {} ms | {} | {:.2} |",
                family.name(),
                humantime_ms(interval),
                stop.name(),
                target.as_millis(),
                t_median.as_millis(),
                t_worst.as_millis(),
                t_failed,
                k_median.as_millis(),
                k_worst.as_millis(),
                k_failed,
                t_median.as_secs_f64() / k_median.as_secs_f64().max(1e-9),
            );
        }
    }
    out
}

fn humantime_ms(interval: Duration) -> String {
    if interval.as_millis().is_multiple_of(1000) {
        format!("{} s", interval.as_secs())
    } else {
        format!("{} ms", interval.as_millis())
    }
}

/// Median and worst outage, and the median count of failed requests.
fn summary(outages: &[Outage]) -> (Duration, Duration, usize) {
    let mut times: Vec<Duration> = outages.iter().map(|o| o.without_service).collect();
    let mut failed: Vec<usize> = outages.iter().map(|o| o.failed_requests).collect();
    times.sort();
    failed.sort();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    let worst = times.last().copied().unwrap_or_default();
    (
        median,
        worst,
        failed.get(failed.len() / 2).copied().unwrap_or_default(),
    )
}

/// The active-active table: each loss of one of three nodes beside the pairs' figures for the
/// same stop (IPv4, from `cases` of the same command).
fn render_active_active(
    losses: &[(Loss, Vec<Measured>)],
    cases: &[Case],
    repetitions: usize,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Active-active: the loss of lb1, one of three Tandem nodes that announce the anycast VIP \
         198.18.2.99 over BGP (BIRD 2, hold time {hold} s) to a BIRD router that spreads flows \
         over them by ECMP (L4 hash); the client is outside the router. {repetitions} \
         repetitions of each loss, interleaved, order rotated; median (min-max). Each node \
         serves HTTP on port 80 with its proxy (tandem-echo on http1 and http2) and TCP on port \
         7000 with XDP (generic) by direct server return, its connection table shared with the \
         other nodes ([replication]). Crash: SIGKILL of lb1's daemon (its BIRD dies with it); \
         graceful: SIGTERM (withdraw first, then open connections finish); frozen: SIGSTOP of \
         the daemon and its BIRD.\n\n\
         **withdrawn**: from the signal to the change of the router's route that left lb1 out \
         (its arrival from `ip monitor route` in the router's namespace; `ip route`, polled \
         every few ms, confirms the next hops). **failed**: HTTP requests on new connections \
         started every {every} ms ({timeout} ms timeout for the whole answer) from 1 s before \
         the loss to 1 s after the withdrawal, that failed, of all sent; **last failure**: when \
         the last of them started, after the signal (over the runs with failures); **how they \
         failed**: the failed requests of all {repetitions} runs by kind (refused: a reset \
         answered the connection; reset after the whole answer: the body its Content-Length \
         announced arrived, then a reset instead of the connection's end, which this loop \
         counts as failed since it reads to the end). \
         **connections**: {connections} TCP connections opened and asked once before the loss, \
         asked again after the withdrawal: kept = answered by the same backend; through lb1 = \
         lb1's XDP counters moved while it was asked. **pair columns**: the IPv4 rows of the \
         table above for the same stop (1 s and 100 ms adverts): time without service (median) \
         and failed requests (median) of their sequential loop (one request at a time, {pair_timeout} ms \
         timeout, {pause} ms pause); there every request fails until the takeover, here only \
         those the router hashes to the lost node, until the withdrawal. **AA / keepalived**: \
         withdrawn (median) over keepalived's time without service at 1 s adverts (median), \
         each the time until every new connection is served again.\n",
        hold = tandem_lab::anycast::HOLD_TIME.as_secs(),
        every = node_loss::REQUEST_EVERY.as_millis(),
        timeout = node_loss::REQUEST_TIMEOUT.as_millis(),
        connections = node_loss::CONNECTIONS,
        pair_timeout = REQUEST_TIMEOUT.as_millis(),
        pause = REQUEST_PAUSE.as_millis(),
    );
    let _ = writeln!(
        out,
        "| loss of 1 of 3 nodes | withdrawn | failed (of sent) | last failure | how they failed | connections through lb1 | kept (of {}) | kept, of those through lb1 | Tandem pair: 1 s / 100 ms adverts | keepalived pair: 1 s / 100 ms adverts | AA / keepalived |",
        node_loss::CONNECTIONS
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
    for (loss, runs) in losses {
        let ms = |pick: fn(&Measured) -> Duration| {
            spread(
                runs.iter().map(|run| pick(run).as_millis()).collect(),
                " ms",
            )
        };
        let count = |pick: fn(&Measured) -> usize| {
            spread(runs.iter().map(|run| pick(run) as u128).collect(), "")
        };
        let failures: Vec<u128> = runs
            .iter()
            .filter_map(|run| run.last_failure.map(|at| at.as_millis()))
            .collect();
        let last_failure = match failures.len() {
            0 => "none".to_owned(),
            n if n == runs.len() => spread(failures, " ms"),
            n => format!("{} ({n} of {} runs)", spread(failures, " ms"), runs.len()),
        };
        let stop = match loss {
            Loss::Kill => Some(Stop::Crash),
            Loss::Graceful => Some(Stop::Graceful),
            Loss::Freeze => None,
        };
        let pair_cells = |pair: Pair| -> String {
            let Some(stop) = stop else {
                return "not measured".to_owned();
            };
            let cells: Vec<String> = [Duration::from_secs(1), Duration::from_millis(100)]
                .into_iter()
                .filter_map(|interval| {
                    let case = cases.iter().find(|case| {
                        case.pair == pair
                            && case.family == Family::Ipv4
                            && case.interval == interval
                            && case.stop == stop
                    })?;
                    let (median, _, failed) = summary(&case.outages);
                    Some(format!("{} ms, {failed} failed", median.as_millis()))
                })
                .collect();
            if cells.is_empty() {
                "not run".to_owned()
            } else {
                cells.join(" / ")
            }
        };
        let ratio = stop
            .and_then(|stop| {
                cases.iter().find(|case| {
                    case.pair == Pair::Keepalived
                        && case.family == Family::Ipv4
                        && case.interval == Duration::from_secs(1)
                        && case.stop == stop
                })
            })
            .map(|case| {
                let (keepalived, _, _) = summary(&case.outages);
                let mut withdrawn: Vec<Duration> = runs.iter().map(|run| run.withdrawn).collect();
                withdrawn.sort();
                let median = withdrawn
                    .get(withdrawn.len() / 2)
                    .copied()
                    .unwrap_or_default();
                format!(
                    "{:.3}",
                    median.as_secs_f64() / keepalived.as_secs_f64().max(1e-9)
                )
            })
            .unwrap_or_else(|| "-".to_owned());
        let sent = spread(runs.iter().map(|run| run.sent as u128).collect(), "");
        let _ = writeln!(
            out,
            "| {} | {} | {} of {sent} | {last_failure} | {} | {} | {} | {} | {} | {} | {ratio} |",
            loss.name(),
            ms(|run| run.withdrawn),
            count(|run| run.failed),
            node_loss::failure_kinds(runs),
            count(|run| run.through_lost),
            count(|run| run.kept),
            count(|run| run.kept_through_lost),
            pair_cells(Pair::Tandem),
            pair_cells(Pair::Keepalived),
        );
    }
    out
}

/// "median (min-max)" of `values` with `unit`; just the value when all are equal.
fn spread(mut values: Vec<u128>, unit: &str) -> String {
    values.sort_unstable();
    let (Some(min), Some(max)) = (values.first(), values.last()) else {
        return "-".to_owned();
    };
    let median = values[values.len() / 2];
    if min == max {
        format!("{median}{unit}")
    } else {
        format!("{median}{unit} ({min}-{max})")
    }
}

//! On-demand tracing of the XDP program's decisions: what `tandem trace` runs and what
//! `tandem maps` shows of it.
//!
//! The program logs nothing until entry 0 of the pinned TRACE map is enabled ([`TraceSwitch`]).
//! While it is, each TCP/UDP packet for a virtual IP that passes the map's VIP and port filter
//! produces one aya-log record (target `lb_common::TRACE_TARGET`, layout described at
//! `lb_common::TraceConfig`) in the program's ring buffer. [`Tracer`] reads that buffer with
//! aya-log's reader, attached to the pinned program by its id (no daemon involved), and turns
//! each record into a [`Decision`] printed as one line.
//!
//! One trace at a time: the map holds the tracer's pid, and a second `tandem trace` is refused
//! while that process lives (two readers would split the records between them). A tracer that
//! was killed leaves the flag on; the next one takes over. The flag is cleared when the trace
//! ends, on Ctrl-C and on error alike ([`TraceGuard`]).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aya::maps::{Array, Map, MapData};
use aya::programs::ProgramInfo;
use lb_common::{
    Counter, TraceConfig, COUNTER_COUNT, PROGRAM_PIN, SERVICES_MAP, TRACE_ANY_VIP, TRACE_MAP,
    TRACE_NONE, TRACE_TARGET, TRACE_VIP4, TRACE_VIP6,
};
use serde::Serialize;

use super::loader::XdpError;
use super::maps::KernelMaps;
use crate::dataplane::plan::proto_name;

/// The longest `tandem trace --seconds` accepts: a forgotten trace must end by itself.
pub const MAX_TRACE_SECONDS: u64 = 3600;

/// Which packets to trace: those for `vip` (every virtual IP when `None`) on `port` (every
/// port when `None`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceFilter {
    pub vip: Option<IpAddr>,
    pub port: Option<u16>,
}

impl TraceFilter {
    fn config(&self, owner_pid: u32, since: u64) -> TraceConfig {
        let (family, vip) = match self.vip {
            None => (TRACE_ANY_VIP, [0; 16]),
            Some(IpAddr::V4(v4)) => {
                let mut vip = [0; 16];
                vip[..4].copy_from_slice(&v4.octets());
                (TRACE_VIP4, vip)
            }
            Some(IpAddr::V6(v6)) => (TRACE_VIP6, v6.octets()),
        };
        TraceConfig {
            enabled: 1,
            family,
            vip,
            port: self.port.unwrap_or(0).to_be(),
            _pad: 0,
            owner_pid,
            since,
        }
    }

    /// "vip 198.18.0.99, port 7000", "every vip, every port".
    pub fn describe(&self) -> String {
        let vip = self
            .vip
            .map_or_else(|| "every vip".to_owned(), |v| format!("vip {v}"));
        let port = self
            .port
            .map_or_else(|| "every port".to_owned(), |p| format!("port {p}"));
        format!("{vip}, {port}")
    }
}

/// A trace that is on, as TRACE records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TraceStatus {
    /// The traced virtual IP, `None` for all.
    pub vip: Option<IpAddr>,
    /// The traced port, `None` for all.
    pub port: Option<u16>,
    /// When it started (RFC 3339, UTC).
    pub since: String,
    /// The `tandem trace` process.
    pub pid: u32,
    /// Whether that process still runs (a killed tracer leaves the flag on).
    pub running: bool,
}

impl TraceStatus {
    fn of(config: &TraceConfig) -> Option<TraceStatus> {
        if config.enabled == 0 {
            return None;
        }
        let vip = match config.family {
            TRACE_VIP4 => Some(IpAddr::from([
                config.vip[0],
                config.vip[1],
                config.vip[2],
                config.vip[3],
            ])),
            TRACE_VIP6 => Some(IpAddr::from(config.vip)),
            _ => None,
        };
        let port = u16::from_be(config.port);
        Some(TraceStatus {
            vip,
            port: (port != 0).then_some(port),
            since: humantime::format_rfc3339_seconds(
                UNIX_EPOCH + Duration::from_secs(config.since),
            )
            .to_string(),
            pid: config.owner_pid,
            running: process_lives(config.owner_pid),
        })
    }

    /// "on (vip 198.18.0.99, port 7000, since 2026-12-07T23:12:01Z, pid 4242)".
    pub fn describe(&self) -> String {
        let filter = TraceFilter {
            vip: self.vip,
            port: self.port,
        };
        let stale = if self.running {
            String::new()
        } else {
            "; that process is gone: the next `tandem trace` takes over and clears it when done"
                .to_owned()
        };
        format!(
            "on ({}, since {}, pid {}{stale})",
            filter.describe(),
            self.since,
            self.pid
        )
    }
}

/// Whether tracing is on, as `tandem maps` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Tracing {
    Off,
    On(TraceStatus),
    /// The pin directory has no TRACE map: its program predates tracing.
    Unavailable,
}

impl Tracing {
    /// Reads TRACE in `pin_dir`.
    pub fn read(pin_dir: &Path) -> Result<Tracing, XdpError> {
        match TraceSwitch::open(pin_dir) {
            Ok(switch) => Ok(switch.status()?.map_or(Tracing::Off, Tracing::On)),
            Err(XdpError::NoTraceMap(_)) => Ok(Tracing::Unavailable),
            Err(e) => Err(e),
        }
    }

    /// "off", "on (vip 198.18.0.99, port 7000, since ..., pid 4242)", "unavailable (...)".
    pub fn describe(&self) -> String {
        match self {
            Tracing::Off => "off".to_owned(),
            Tracing::On(status) => status.describe(),
            Tracing::Unavailable => {
                "unavailable (the loaded XDP program predates tracing)".to_owned()
            }
        }
    }
}

fn process_lives(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The pinned TRACE map of a pin directory.
pub struct TraceSwitch {
    map: Array<MapData, TraceConfig>,
}

impl TraceSwitch {
    /// Opens TRACE in `pin_dir`; a directory whose program predates tracing has none.
    pub fn open(pin_dir: &Path) -> Result<TraceSwitch, XdpError> {
        let path = pin_dir.join(TRACE_MAP);
        if !path.exists() {
            // Maps but no TRACE: an older version's program; nothing at all: no program.
            if pin_dir.join(SERVICES_MAP).exists() {
                return Err(XdpError::NoTraceMap(pin_dir.to_owned()));
            }
            return Err(XdpError::NoMaps(pin_dir.to_owned()));
        }
        let data = MapData::from_pin(&path)
            .map_err(|e| XdpError::from_kernel(format!("opening {}", path.display()), &e))?;
        let map = Map::from_map_data(data)
            .map_err(|e| XdpError::from_kernel(format!("opening {}", path.display()), &e))?;
        let map = Array::try_from(map).map_err(|e| {
            XdpError::from_kernel(
                format!(
                    "map {} has another layout than this tandem expects",
                    path.display()
                ),
                &e,
            )
        })?;
        Ok(TraceSwitch { map })
    }

    fn config(&self) -> Result<TraceConfig, XdpError> {
        self.map
            .get(&0, 0)
            .map_err(|e| XdpError::from_kernel("reading TRACE", &e))
    }

    fn set(&mut self, config: TraceConfig) -> Result<(), XdpError> {
        self.map
            .set(0, config, 0)
            .map_err(|e| XdpError::from_kernel("writing TRACE", &e))
    }

    /// The trace that is on, if any.
    pub fn status(&self) -> Result<Option<TraceStatus>, XdpError> {
        Ok(TraceStatus::of(&self.config()?))
    }

    /// Turns tracing on for this process with `filter`; refused while another live process
    /// traces. Tracing goes off when the guard is dropped.
    pub fn start(mut self, filter: &TraceFilter) -> Result<TraceGuard, XdpError> {
        if let Some(status) = self.status()? {
            if status.running && status.pid != std::process::id() {
                return Err(XdpError::TraceRunning(status.describe()));
            }
        }
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.set(filter.config(std::process::id(), since))?;
        let guard = TraceGuard { switch: self };
        // Two traces that started at the same moment both saw the flag off; the last writer
        // wins and the other steps back (without clearing the winner's flag).
        match guard.check_owner() {
            Ok(()) => Ok(guard),
            Err(XdpError::TraceLost(status)) => Err(XdpError::TraceRunning(status)),
            Err(e) => Err(e),
        }
    }
}

/// Tracing is on for this process while the guard lives; dropping it turns tracing off
/// (unless another trace has taken over since).
pub struct TraceGuard {
    switch: TraceSwitch,
}

impl TraceGuard {
    /// Fails when another process has taken the trace over.
    pub fn check_owner(&self) -> Result<(), XdpError> {
        let config = self.switch.config()?;
        match TraceStatus::of(&config) {
            Some(status) if status.pid == std::process::id() => Ok(()),
            Some(status) => Err(XdpError::TraceLost(status.describe())),
            None => Err(XdpError::TraceLost("off".to_owned())),
        }
    }
}

impl Drop for TraceGuard {
    fn drop(&mut self) {
        if self
            .switch
            .config()
            .is_ok_and(|c| c.owner_pid == std::process::id())
        {
            let _ = self.switch.set(TraceConfig::default());
        }
    }
}

/// One decision of the XDP program, as `tandem trace` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub client: SocketAddr,
    pub service: SocketAddr,
    pub proto: u8,
    /// The XDP action (XDP_DROP 1, XDP_PASS 2, XDP_TX 3).
    pub action: u32,
    /// Why: the counter the program counted the packet under.
    pub reason: Option<Counter>,
    /// The backend's id, when one was chosen.
    pub backend: Option<u32>,
    /// The connection-table outcome: `FlowHit`, `FlowNew` or `FlowMoved`.
    pub flow: Option<Counter>,
    /// When the program decided, CLOCK_MONOTONIC nanoseconds (see [`Decision::wall_time`]).
    pub monotonic_ns: u64,
}

fn counter(index: u32) -> Option<Counter> {
    (index < COUNTER_COUNT).then(|| Counter::ALL[index as usize])
}

impl Decision {
    /// Parses the program's record `FAMILY SRC SPORT DST DPORT PROTO ACTION REASON BACKEND
    /// FLOW TIME` (see `lb_common::TraceConfig`); `None` for anything else.
    pub fn parse(record: &str) -> Option<Decision> {
        let fields: Vec<&str> = record.split_ascii_whitespace().collect();
        let [family, src, sport, dst, dport, proto, action, reason, backend, flow, time] =
            fields[..]
        else {
            return None;
        };
        let address = |text: &str| -> Option<IpAddr> {
            let v6: Ipv6Addr = text.parse().ok()?;
            match family {
                "4" => v6.to_ipv4_mapped().map(IpAddr::V4),
                "6" => Some(IpAddr::V6(v6)),
                _ => None,
            }
        };
        let number = |text: &str| text.parse::<u32>().ok();
        let backend = number(backend)?;
        Some(Decision {
            client: SocketAddr::new(address(src)?, sport.parse().ok()?),
            service: SocketAddr::new(address(dst)?, dport.parse().ok()?),
            proto: proto.parse().ok()?,
            action: number(action)?,
            reason: counter(number(reason)?),
            backend: (backend != TRACE_NONE).then_some(backend),
            flow: counter(number(flow)?),
            monotonic_ns: time.parse().ok()?,
        })
    }

    /// The wall-clock time of the decision: the program stamps it on CLOCK_MONOTONIC, which
    /// is turned into real time by the two clocks' offset now.
    pub fn wall_time(&self) -> SystemTime {
        let now = SystemTime::now();
        let since = monotonic_now_ns().saturating_sub(self.monotonic_ns);
        now.checked_sub(Duration::from_nanos(since)).unwrap_or(now)
    }

    pub fn verdict(&self) -> &'static str {
        match self.action {
            0 => "aborted",
            1 => "drop",
            2 => "pass",
            3 => "tx",
            4 => "redirect",
            _ => "?",
        }
    }

    /// `hit`, `new`, `moved` (the flow's backend was gone), or `-` (no connection table).
    pub fn conntrack(&self) -> &'static str {
        match self.flow {
            Some(Counter::FlowHit) => "hit",
            Some(Counter::FlowNew) => "new",
            Some(Counter::FlowMoved) => "moved",
            _ => "-",
        }
    }

    /// One line: time `at` (UTC; [`Decision::wall_time`]), client -> service/proto, verdict,
    /// reason, backend (address and id), connection-table outcome:
    /// `23:12:01.123  198.18.0.10:40000 -> 198.18.0.99:7000/tcp  tx    flow_new         backend 198.18.0.102:7000 (id 0)  new`
    pub fn render(&self, at: SystemTime, backend: Option<SocketAddr>) -> String {
        let time = humantime::format_rfc3339_millis(at).to_string();
        let time = time.get(11..23).unwrap_or(&time);
        let backend = match (self.backend, backend) {
            (Some(id), Some(address)) => format!("{address} (id {id})"),
            (Some(id), None) => format!("id {id}"),
            (None, _) => "-".to_owned(),
        };
        format!(
            "{time}  {} -> {}/{}  {:<4}  {:<16} backend {backend}  {}",
            self.client,
            self.service,
            proto_name(self.proto),
            self.verdict(),
            self.reason.map_or("-", Counter::name),
            self.conntrack()
        )
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of bpf_ktime_get_ns.
fn monotonic_now_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// Collects the program's decision records from aya-log's reader.
#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<String>>>);

impl log::Log for Records {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.target() == TRACE_TARGET
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            if let Ok(mut records) = self.0.lock() {
                records.push(record.args().to_string());
            }
        }
    }

    fn flush(&self) {}
}

impl Records {
    fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut records| std::mem::take(&mut *records))
            .unwrap_or_default()
    }
}

/// The id of the program pinned in `pin_dir`.
pub fn pinned_program_id(pin_dir: &Path) -> Result<u32, XdpError> {
    let path = pin_dir.join(PROGRAM_PIN);
    if !path.exists() {
        return Err(XdpError::NoMaps(pin_dir.to_owned()));
    }
    ProgramInfo::from_pin(&path)
        .map(|info| info.id())
        .map_err(|e| XdpError::from_kernel(format!("opening {}", path.display()), &e))
}

/// aya-log's reader on one loaded program's log ring buffer, keeping its decision records.
pub struct DecisionReader {
    logger: aya_log::EbpfLogger<Records>,
    records: Records,
}

impl DecisionReader {
    /// Reads the records of the loaded program `program_id` (the pinned one, say).
    pub fn of_program(program_id: u32) -> Result<DecisionReader, XdpError> {
        let records = Records::default();
        let logger = aya_log::EbpfLogger::init_from_id_with_logger(program_id, records.clone())
            .map_err(|e| reader_error(format!("XDP program {program_id}"), e))?;
        Ok(DecisionReader { logger, records })
    }

    /// Reads the records of a program this process loaded (the packet fixtures' way); takes
    /// the log ring buffer out of `ebpf`.
    pub fn of_loaded(ebpf: &mut aya::Ebpf) -> Result<DecisionReader, XdpError> {
        let records = Records::default();
        let logger = aya_log::EbpfLogger::init_with_logger(ebpf, records.clone())
            .map_err(|e| reader_error("the loaded XDP program".to_owned(), e))?;
        Ok(DecisionReader { logger, records })
    }

    /// The decisions logged since the last call (without waiting).
    pub fn read(&mut self) -> Vec<Decision> {
        self.logger.flush();
        self.records
            .take()
            .iter()
            .filter_map(|record| Decision::parse(record))
            .collect()
    }
}

impl std::os::fd::AsRawFd for DecisionReader {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.logger.as_raw_fd()
    }
}

fn reader_error(program: String, error: aya_log::Error) -> XdpError {
    match error {
        aya_log::Error::MapNotFound => XdpError::Kernel {
            what: format!("reading the trace records of {program}"),
            detail: "it has no log ring buffer (AYA_LOGS): it predates tracing; restart the \
                     daemon with this tandem version"
                .into(),
        },
        other => XdpError::from_kernel(format!("attaching the trace reader to {program}"), &other),
    }
}

/// Waits for the decision records of the program pinned in a directory.
pub struct Tracer {
    pin_dir: PathBuf,
    program_id: u32,
    reader: tokio::io::unix::AsyncFd<DecisionReader>,
    maps: Option<KernelMaps>,
}

impl Tracer {
    /// Attaches aya-log's reader to the program pinned in `pin_dir`. Must run inside a tokio
    /// runtime.
    pub fn attach(pin_dir: &Path) -> Result<Tracer, XdpError> {
        let program_id = pinned_program_id(pin_dir)?;
        Ok(Tracer {
            pin_dir: pin_dir.to_owned(),
            program_id,
            reader: watch(DecisionReader::of_program(program_id)?)?,
            maps: KernelMaps::open(pin_dir).ok(),
        })
    }

    pub fn program_id(&self) -> u32 {
        self.program_id
    }

    /// Waits until records arrive or `timeout` passes; returns the decisions read.
    pub async fn next(&mut self, timeout: Duration) -> Result<Vec<Decision>, XdpError> {
        match tokio::time::timeout(timeout, self.reader.readable_mut()).await {
            Ok(ready) => {
                let mut guard = ready.map_err(|e| XdpError::Kernel {
                    what: "waiting for the XDP program's trace records".into(),
                    detail: e.to_string(),
                })?;
                let decisions = guard.get_inner_mut().read();
                guard.clear_ready();
                Ok(decisions)
            }
            Err(_elapsed) => Ok(self.read_now()),
        }
    }

    /// The decisions logged since the last read, without waiting.
    pub fn read_now(&mut self) -> Vec<Decision> {
        self.reader.get_mut().read()
    }

    /// When the daemon has loaded a new program since (a restart, an upgrade), reads that
    /// one's records from now on. Returns true when it switched.
    pub fn follow_reload(&mut self) -> Result<bool, XdpError> {
        let id = pinned_program_id(&self.pin_dir)?;
        if id == self.program_id {
            return Ok(false);
        }
        self.reader = watch(DecisionReader::of_program(id)?)?;
        self.program_id = id;
        self.maps = KernelMaps::open(&self.pin_dir).ok();
        Ok(true)
    }

    /// The address of the backend a decision names, from BACKENDS (IPv4) or BACKENDS6.
    pub fn backend_address(&self, decision: &Decision) -> Option<SocketAddr> {
        backend_address(self.maps.as_ref()?, decision)
    }
}

/// The address of the backend `decision` names, from BACKENDS (IPv4) or BACKENDS6.
pub fn backend_address(maps: &KernelMaps, decision: &Decision) -> Option<SocketAddr> {
    let id = decision.backend?;
    if decision.service.is_ipv4() {
        let b = maps.backend(id).ok()?;
        (b.addr != 0)
            .then(|| SocketAddr::new(IpAddr::from(b.addr.to_ne_bytes()), u16::from_be(b.port)))
    } else {
        let b = maps.backend6(id).ok()?;
        (b.addr != [0; 16]).then(|| SocketAddr::new(IpAddr::from(b.addr), u16::from_be(b.port)))
    }
}

fn watch(reader: DecisionReader) -> Result<tokio::io::unix::AsyncFd<DecisionReader>, XdpError> {
    let fd = reader.as_raw_fd();
    // SAFETY: the reader owns the ring buffer's descriptor and keeps it open, unchanged, for
    // as long as it lives, which is as long as the AsyncFd that owns it.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(reader, tokio::io::Interest::READABLE)
    }
    .map_err(|e| XdpError::Kernel {
        what: format!("watching the trace ring buffer (fd {fd})"),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_record_is_read_back_as_the_flow_and_decision_it_describes() {
        let d = Decision::parse(
            "4 ::ffff:198.18.0.10 40000 ::ffff:198.18.0.99 7000 6 3 18 2 18 123456789",
        )
        .expect("a valid record");
        assert_eq!(d.monotonic_ns, 123_456_789);
        assert_eq!(d.client, "198.18.0.10:40000".parse().unwrap());
        assert_eq!(d.service, "198.18.0.99:7000".parse().unwrap());
        assert_eq!(d.verdict(), "tx");
        assert_eq!(d.reason, Some(Counter::FlowNew));
        assert_eq!(d.backend, Some(2));
        assert_eq!(d.conntrack(), "new");
        let at = UNIX_EPOCH + Duration::from_millis(1_796_685_121_123);
        assert_eq!(
            d.render(at, Some("198.18.0.102:7000".parse().unwrap())),
            "23:12:01.123  198.18.0.10:40000 -> 198.18.0.99:7000/tcp  tx    flow_new         \
             backend 198.18.0.102:7000 (id 2)  new"
        );
    }

    #[test]
    fn an_ipv6_drop_record_has_no_backend_and_no_conntrack_outcome() {
        let record =
            format!("6 2001:2::10 40000 2001:2::99 22 17 1 14 {TRACE_NONE} {TRACE_NONE} 1");
        let d = Decision::parse(&record).expect("a valid record");
        assert_eq!(d.service, "[2001:2::99]:22".parse().unwrap());
        assert_eq!(d.reason, Some(Counter::DropNoService));
        assert_eq!(d.backend, None);
        let line = d.render(UNIX_EPOCH, None);
        assert!(
            line.ends_with(
                "[2001:2::10]:40000 -> [2001:2::99]:22/udp  drop  drop_no_service  backend -  -"
            ),
            "{line}"
        );
    }

    #[test]
    fn a_decision_just_made_is_dated_now_and_one_made_a_second_ago_a_second_earlier() {
        let mut d = Decision::parse(&format!(
            "4 ::ffff:198.18.0.10 1 ::ffff:198.18.0.99 2 6 3 18 2 18 {}",
            monotonic_now_ns()
        ))
        .unwrap();
        let age = |d: &Decision| SystemTime::now().duration_since(d.wall_time()).unwrap();
        assert!(age(&d) < Duration::from_millis(100), "{:?}", age(&d));
        d.monotonic_ns -= 1_000_000_000;
        let age = age(&d);
        assert!(
            age >= Duration::from_secs(1) && age < Duration::from_millis(1100),
            "{age:?}"
        );
    }

    #[test]
    fn records_of_another_shape_are_not_decisions() {
        assert_eq!(Decision::parse("hello from the program"), None);
        assert_eq!(
            Decision::parse("4 198.18.0.10 1 198.18.0.99 2 6 3 18 2 18 1"),
            None,
            "IPv4 addresses come mapped"
        );
        assert_eq!(
            Decision::parse("4 ::ffff:198.18.0.10 1 ::ffff:198.18.0.99 2 6 3 18 2 18"),
            None,
            "a record without its time"
        );
    }

    #[test]
    fn the_filter_is_written_in_the_programs_byte_order_and_read_back_as_given() {
        let filter = TraceFilter {
            vip: Some("198.18.0.99".parse().unwrap()),
            port: Some(7000),
        };
        let config = filter.config(4242, 0);
        assert_eq!(config.family, TRACE_VIP4);
        assert_eq!(&config.vip[..4], &[198, 18, 0, 99]);
        assert_eq!(config.port, 7000u16.to_be());
        let status = TraceStatus::of(&config).expect("enabled");
        assert_eq!(status.vip, filter.vip);
        assert_eq!(status.port, Some(7000));
        assert_eq!(status.since, "1970-01-01T00:00:00Z");
        assert_eq!(TraceStatus::of(&TraceConfig::default()), None);
    }
}

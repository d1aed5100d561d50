//! The access log: one line per request in Pound's `LogLevel` formats, to stdout or a file.
//!
//! It is its own stream, not `tracing`: users feed it to the tools they already have for
//! Pound's and Apache's logs. Lines are formatted on the request's task and written by one
//! thread, so a slow disk never stalls the proxy; if the writer falls behind by more than
//! [`QUEUE`] lines, lines are dropped and counted rather than buffered without bound.
//!
//! Levels (Pound's numbers): 1 `CLIENT REQUEST-LINE - STATUS-LINE`; 2 adds `(HOST/SERVICE ->
//! BACKEND) SECONDS sec`; 3 is Apache's combined format (Pound's level 4: Pound's 3 puts the
//! virtual host in front, its 5 adds service and backend at the end). Levels 1 and 2 start with
//! an RFC 3339 time in UTC, as syslog would have added for Pound.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use http::{Method, StatusCode, Version};

use crate::config::{AccessLog, AccessLogLevel, LogTarget};

/// Lines waiting for the writer thread at most.
const QUEUE: usize = 16 * 1024;

/// What the log says about one request.
#[derive(Debug, Clone)]
pub struct Record {
    pub client: IpAddr,
    pub method: Method,
    /// Path and query as the client sent them.
    pub target: String,
    pub version: Version,
    pub host: Option<String>,
    pub status: StatusCode,
    /// Body bytes sent to the client.
    pub bytes: u64,
    pub service: Arc<str>,
    pub backend: Option<SocketAddr>,
    pub took: Duration,
    pub at: SystemTime,
    pub referer: Option<String>,
    pub user_agent: Option<String>,
}

/// The sending side of the access log; cheap to clone.
#[derive(Debug, Clone)]
pub struct AccessLogger {
    level: AccessLogLevel,
    sender: Option<SyncSender<String>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLogger {
    /// A logger that logs nothing (level 0).
    pub fn disabled() -> Self {
        AccessLogger {
            level: AccessLogLevel::None,
            sender: None,
            dropped: Arc::default(),
        }
    }

    /// Opens the target and starts the writer thread; it ends when every clone is dropped.
    pub fn start(config: &AccessLog) -> anyhow::Result<Self> {
        if config.level == AccessLogLevel::None {
            return Ok(Self::disabled());
        }
        let mut out: Box<dyn std::io::Write + Send> = match &config.path {
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::File(path) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| {
                        format!(
                            "opening the access log {}: does its directory exist and is it \
                             writable?",
                            path.display()
                        )
                    })?,
            ),
        };
        let (sender, receiver) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut out = BufWriter::new(&mut out);
                while let Ok(line) = receiver.recv() {
                    let _ = out.write_all(line.as_bytes());
                    // Write what is queued in one go, flush when the queue is empty.
                    while let Ok(line) = receiver.try_recv() {
                        let _ = out.write_all(line.as_bytes());
                    }
                    let _ = out.flush();
                }
            })
            .context("starting the access log writer thread")?;
        Ok(AccessLogger {
            level: config.level,
            sender: Some(sender),
            dropped: Arc::default(),
        })
    }

    /// Whether records are wanted at all (so callers can skip building them).
    pub fn enabled(&self) -> bool {
        self.sender.is_some()
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn log(&self, record: &Record) {
        let Some(sender) = &self.sender else {
            return;
        };
        let line = format_record(self.level, record);
        match sender.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// One line (with its newline) for `record` at `level`.
pub fn format_record(level: AccessLogLevel, record: &Record) -> String {
    let mut line = String::with_capacity(160);
    let request_line = format!(
        "{} {} {}",
        record.method,
        record.target,
        version_text(record.version)
    );
    let status_line = format!(
        "{} {} {}",
        version_text(record.version),
        record.status.as_u16(),
        record.status.canonical_reason().unwrap_or("")
    );
    match level {
        AccessLogLevel::None => return String::new(),
        AccessLogLevel::Regular => {
            let _ = write!(
                line,
                "{} {} {request_line} - {status_line}",
                rfc3339(record.at),
                record.client
            );
        }
        AccessLogLevel::Extended => {
            let backend = record
                .backend
                .map_or_else(|| "-".to_owned(), |b| b.to_string());
            let _ = write!(
                line,
                "{} {} {request_line} - {status_line} ({}/{} -> {backend}) {:.3} sec",
                rfc3339(record.at),
                record.client,
                record.host.as_deref().unwrap_or("-"),
                record.service,
                record.took.as_secs_f64()
            );
        }
        AccessLogLevel::Combined => {
            let bytes = if record.bytes == 0 {
                "-".to_owned()
            } else {
                record.bytes.to_string()
            };
            let _ = write!(
                line,
                "{} - - [{}] \"{}\" {} {bytes} \"{}\" \"{}\"",
                record.client,
                apache_time(record.at),
                escape(&request_line),
                record.status.as_u16(),
                escape(record.referer.as_deref().unwrap_or("-")),
                escape(record.user_agent.as_deref().unwrap_or("-")),
            );
        }
    }
    line.push('\n');
    line
}

fn version_text(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Apache escapes quotes, backslashes and control characters in logged strings.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// (year, month 1..=12, day, hour, minute, second) in UTC.
fn civil(at: SystemTime) -> (i64, u32, u32, u32, u32, u32) {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

fn rfc3339(at: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = civil(at);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// Apache's `%t`: `[10/Oct/2000:13:55:36 +0000]` without the brackets.
fn apache_time(at: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s) = civil(at);
    let month = MONTHS[(mo as usize - 1) % 12];
    format!("{d:02}/{month}/{y:04}:{h:02}:{mi:02}:{s:02} +0000")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            client: "198.18.0.10".parse().unwrap(),
            method: Method::GET,
            target: "/index.html?a=1".into(),
            version: Version::HTTP_11,
            host: Some("www.example.com".into()),
            status: StatusCode::OK,
            bytes: 1234,
            service: Arc::from("web"),
            backend: Some("198.18.0.102:80".parse().unwrap()),
            took: Duration::from_millis(12),
            // 2000-10-10T13:55:36Z
            at: UNIX_EPOCH + Duration::from_secs(971_186_136),
            referer: None,
            user_agent: Some("curl/7.88 \"x\"".into()),
        }
    }

    #[test]
    fn each_level_has_pounds_fields() {
        let r = record();
        assert_eq!(
            format_record(AccessLogLevel::Regular, &r),
            "2000-10-10T13:55:36Z 198.18.0.10 GET /index.html?a=1 HTTP/1.1 - HTTP/1.1 200 OK\n"
        );
        assert_eq!(
            format_record(AccessLogLevel::Extended, &r),
            "2000-10-10T13:55:36Z 198.18.0.10 GET /index.html?a=1 HTTP/1.1 - HTTP/1.1 200 OK \
             (www.example.com/web -> 198.18.0.102:80) 0.012 sec\n"
        );
        assert_eq!(
            format_record(AccessLogLevel::Combined, &r),
            "198.18.0.10 - - [10/Oct/2000:13:55:36 +0000] \"GET /index.html?a=1 HTTP/1.1\" 200 \
             1234 \"-\" \"curl/7.88 \\\"x\\\"\"\n"
        );
    }

    #[test]
    fn dates_convert_across_leap_years() {
        // 2024-02-29T23:59:59Z
        let at = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(rfc3339(at), "2024-02-29T23:59:59Z");
        assert_eq!(apache_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
    }
}

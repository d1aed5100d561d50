//! What the daemon tells systemd (`Type=notify`): READY=1 once it serves, RELOADING=1 and
//! READY=1 around a reload, STATUS= lines with the VRRP and BGP state, and WATCHDOG=1 from the
//! supervisor's loop while the proxy's threads live, so that a hung daemon is restarted (and
//! its VIPs released by the unit's ExecStopPost). Logs go to the journal with their fields
//! (instance, service, backend) when systemd connected stderr to it.
//!
//! Without NOTIFY_SOCKET (not started by systemd) every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

/// The daemon serves: listeners bound, data plane attached, VRRP started.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts; systemd's `reload` waits for the READY=1 that [`reloaded`] sends.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(err) => debug!("reading CLOCK_MONOTONIC for systemd: {err}"),
    }
}

/// The reload is over (applied or refused: the daemon serves either way). The status line
/// stays the node's state, which a reload does not change.
pub fn reloaded() {
    send(&[NotifyState::Ready]);
}

/// One line of what `systemctl status tandem` shows.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// The interval to send WATCHDOG=1 at: half of `WatchdogSec=`, as sd_watchdog_enabled(3)
/// advises; `None` without a watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}

pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Whether systemd connected stderr to the journal (JOURNAL_STREAM names stderr's device and
/// inode, systemd.exec(5)); then the log goes to journald natively, with its fields.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((device, inode)) = stream.split_once(':') else {
        return false;
    };
    let Ok(metadata) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    device.parse() == Ok(metadata.dev()) && inode.parse() == Ok(metadata.ino())
}

/// The environment variables of the notify protocol, which the daemon's children (BIRD) must
/// not inherit: systemd would take their messages for the daemon's.
pub const CHILD_ENV_REMOVE: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

fn send(state: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(state) {
        debug!("notifying systemd: {err}");
    }
}

//! The trackers' I/O: each configured `track` entry becomes a task that keeps one slot of a
//! shared list of [`TrackerState`]s current. The instance shell watches the list and turns it
//! into an effective priority and Fault with [`super::priority::effective_priority`].
//!
//! - `builtin = "proxy"`: fed by the node, which probes its own proxy from inside the process.
//!   Its failure is a Fault whatever the weight (DESIGN.md, "Fast handover"): the master sends
//!   priority 0 and the backup takes over after its skew time, instead of waiting out the
//!   master-down timer as the classic weight-only setup did. While it is up, its weight counts
//!   as keepalived's would, so a mixed pair elects as the classic pair did.
//! - `script`: run through `sh -c` every `interval`, killed after `timeout`; `rise` successes or
//!   `fall` failures in a row flip it (keepalived's `vrrp_script`). The first result sets the
//!   state directly.
//! - `interface`: the link's carrier, polled.

use std::time::Duration;

use tokio::process::Command;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::priority::TrackerState;
use crate::config::{BuiltinCheck, Track};

/// How often a tracked interface's carrier is read.
const INTERFACE_POLL: Duration = Duration::from_millis(100);

/// Starts one task per tracker; the receiver always holds one state per `tracks` entry, in order.
/// `proxy_up` is the node's built-in proxy check (`None`: no proxy on this node, counted as up).
pub fn spawn(
    instance: &str,
    tracks: &[Track],
    proxy_up: Option<watch::Receiver<bool>>,
    shutdown: CancellationToken,
) -> watch::Receiver<Vec<TrackerState>> {
    let initial = tracks
        .iter()
        .map(|track| TrackerState {
            weight: track.weight(),
            up: true,
        })
        .collect();
    let (sender, receiver) = watch::channel(initial);
    for (slot, track) in tracks.iter().enumerate() {
        let sender = sender.clone();
        let shutdown = shutdown.clone();
        let instance = instance.to_owned();
        match track.clone() {
            Track::Builtin {
                check: BuiltinCheck::Proxy,
                weight,
            } => {
                let Some(mut proxy_up) = proxy_up.clone() else {
                    warn!(
                        instance,
                        "track builtin \"proxy\": this node runs no HTTP service, so the check \
                         always passes"
                    );
                    continue;
                };
                tokio::spawn(async move {
                    loop {
                        let up = *proxy_up.borrow_and_update();
                        set(&sender, slot, builtin_state(weight, up));
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            changed = proxy_up.changed() => if changed.is_err() { break },
                        }
                    }
                });
            }
            Track::Script {
                script,
                interval,
                timeout,
                rise,
                fall,
                weight,
            } => {
                tokio::spawn(async move {
                    let mut counter = RiseFall::new(rise, fall);
                    let mut ticker = tokio::time::interval(interval);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = ticker.tick() => {}
                        }
                        let (ok, why) = run_script(&script, timeout).await;
                        if let Some(up) = counter.record(ok) {
                            if up {
                                info!(instance, script, "track script succeeded: up");
                            } else {
                                warn!(instance, script, "track script failed ({why}): down");
                            }
                            set(&sender, slot, TrackerState { weight, up });
                        }
                    }
                });
            }
            Track::Interface { interface, weight } => {
                tokio::spawn(async move {
                    let mut last = None;
                    loop {
                        let up = carrier(&interface);
                        if last != Some(up) {
                            if last.is_some() || !up {
                                let state = if up { "up" } else { "down" };
                                warn!(instance, interface, "tracked interface is {state}");
                            }
                            set(&sender, slot, TrackerState { weight, up });
                            last = Some(up);
                        }
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(INTERFACE_POLL) => {}
                        }
                    }
                });
            }
        }
    }
    receiver
}

/// The built-in proxy check: weight while up, Fault (weight 0 and down) when down.
fn builtin_state(weight: i32, up: bool) -> TrackerState {
    if up {
        TrackerState { weight, up }
    } else {
        TrackerState { weight: 0, up }
    }
}

fn set(sender: &watch::Sender<Vec<TrackerState>>, slot: usize, state: TrackerState) {
    sender.send_if_modified(|states| {
        let changed = states[slot] != state;
        states[slot] = state;
        changed
    });
}

/// Whether `interface` is up with a carrier; a missing interface counts as down.
fn carrier(interface: &str) -> bool {
    let read = |file: &str| std::fs::read_to_string(format!("/sys/class/net/{interface}/{file}"));
    let operstate = read("operstate").unwrap_or_default();
    let carrier = read("carrier").unwrap_or_default();
    carrier.trim() == "1" && matches!(operstate.trim(), "up" | "unknown")
}

/// `/bin/sh -c script`, as track and notify scripts run: no input, killed if dropped (so a
/// timeout kills it), and without the daemon's ambient capabilities. Under the unit the daemon
/// is an unprivileged user with CAP_NET_ADMIN and friends raised as ambient capabilities, which
/// a child would otherwise inherit: a script that needs privileges must get them itself (sudo).
pub(super) fn script_command(script: &str) -> Command {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            let cleared = libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            );
            if cleared == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    command
}

/// Runs `script` through the shell; success is exit status 0 within `timeout`.
async fn run_script(script: &str, timeout: Duration) -> (bool, String) {
    let child = script_command(script)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) => return (false, format!("cannot start /bin/sh: {err}")),
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => (true, String::new()),
        Ok(Ok(status)) => (false, format!("{status}")),
        Ok(Err(err)) => (false, err.to_string()),
        Err(_) => (
            false,
            format!("timed out after {}", humantime::format_duration(timeout)),
        ),
    }
}

/// keepalived's rise/fall: the first result sets the state, then it takes `rise` successes or
/// `fall` failures in a row to flip it.
#[derive(Debug)]
struct RiseFall {
    rise: u32,
    fall: u32,
    up: Option<bool>,
    streak: u32,
}

impl RiseFall {
    fn new(rise: u32, fall: u32) -> RiseFall {
        RiseFall {
            rise: rise.max(1),
            fall: fall.max(1),
            up: None,
            streak: 0,
        }
    }

    /// Records one result; returns the new state when it changed.
    fn record(&mut self, ok: bool) -> Option<bool> {
        match self.up {
            None => {
                self.up = Some(ok);
                Some(ok)
            }
            Some(up) if up == ok => {
                self.streak = 0;
                None
            }
            Some(_) => {
                self.streak += 1;
                let needed = if ok { self.rise } else { self.fall };
                if self.streak >= needed {
                    self.streak = 0;
                    self.up = Some(ok);
                    Some(ok)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_script_result_sets_the_state_at_once() {
        let mut counter = RiseFall::new(3, 3);
        assert_eq!(counter.record(false), Some(false));
    }

    #[test]
    fn script_needs_fall_failures_in_a_row_to_go_down() {
        let mut counter = RiseFall::new(2, 3);
        counter.record(true);
        assert_eq!(counter.record(false), None);
        assert_eq!(counter.record(false), None);
        assert_eq!(counter.record(true), None, "a success resets the streak");
        assert_eq!(counter.record(false), None);
        assert_eq!(counter.record(false), None);
        assert_eq!(counter.record(false), Some(false));
    }

    #[test]
    fn script_needs_rise_successes_in_a_row_to_come_back() {
        let mut counter = RiseFall::new(2, 1);
        counter.record(false);
        assert_eq!(counter.record(true), None);
        assert_eq!(counter.record(true), Some(true));
    }

    #[test]
    fn failed_builtin_proxy_check_means_fault_whatever_its_weight() {
        let state = builtin_state(2, false);
        assert_eq!(state.weight, 0);
        assert!(!state.up);
        assert_eq!(
            builtin_state(2, true),
            TrackerState {
                weight: 2,
                up: true
            }
        );
    }

    #[tokio::test]
    async fn script_that_outlives_its_timeout_fails() {
        let (ok, why) = run_script("sleep 5", Duration::from_millis(50)).await;
        assert!(!ok);
        assert!(why.contains("timed out"), "{why}");
        assert!(run_script("true", Duration::from_secs(5)).await.0);
        assert!(!run_script("exit 3", Duration::from_secs(5)).await.0);
    }
}

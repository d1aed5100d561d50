//! Faults the lab's tests inject into a running daemon, named by the environment variable
//! `TANDEM_FAULT_INJECTION` (read once; unset in production, where nothing here acts):
//! - `panic-in-task=SECONDS`: a task panics that long after the node started (default 1), to
//!   prove that a panic anywhere ends the process (so systemd restarts it and its release step
//!   runs);
//! - `vip-add-fails=N`: the first N additions of a virtual address fail, as the kernel would
//!   refuse them, to prove that the instance goes to Fault and tries again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

const VARIABLE: &str = "TANDEM_FAULT_INJECTION";

#[derive(Debug, Default)]
struct Faults {
    panic_in_task: Option<u64>,
    vip_add_failures: AtomicU32,
}

fn faults() -> &'static Faults {
    static FAULTS: OnceLock<Faults> = OnceLock::new();
    FAULTS.get_or_init(|| {
        let mut faults = Faults::default();
        let Ok(spec) = std::env::var(VARIABLE) else {
            return faults;
        };
        for fault in spec.split(',').map(str::trim) {
            if fault == "panic-in-task" {
                faults.panic_in_task = Some(1);
            } else if let Some(seconds) = fault.strip_prefix("panic-in-task=") {
                faults.panic_in_task = Some(seconds.parse().unwrap_or(1));
            } else if let Some(n) = fault.strip_prefix("vip-add-fails=") {
                faults.vip_add_failures = AtomicU32::new(n.parse().unwrap_or(0));
            }
        }
        tracing::warn!("{VARIABLE}={spec}: faults will be injected (tests only)");
        faults
    })
}

/// Starts the panicking task if `panic-in-task` is asked for.
pub fn spawn_panicking_task() {
    if let Some(seconds) = faults().panic_in_task {
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
            panic!("{VARIABLE}=panic-in-task: a task panics");
        });
    }
}

/// Whether this addition of a virtual address is to fail.
pub fn vip_add_fails() -> bool {
    faults()
        .vip_add_failures
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            left.checked_sub(1)
        })
        .is_ok()
}

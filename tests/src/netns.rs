//! Low-level network-namespace helpers for the lab: running a closure on a thread that has
//! entered a namespace, and finding (and stopping) the processes that live in one. Building and
//! naming namespaces lives in [`crate::lab`].

use std::fs::{self, File};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Runs `f` on a fresh thread that has entered the network namespace bound at `netns_path`
/// (a file under /var/run/netns). Only that thread changes namespace (setns(2) with
/// CLONE_NEWNET is per thread), so the caller and the rest of the process stay where they are;
/// sockets created by `f` keep their namespace after the thread ends. A panic in `f` is resumed
/// in the caller, so assertions inside `f` fail the test as usual.
pub(crate) fn run_in<F, R>(netns_path: &Path, f: F) -> anyhow::Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    let netns = File::open(netns_path).with_context(|| {
        format!(
            "opening network namespace {}: does the lab still exist?",
            netns_path.display()
        )
    })?;
    thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name("lab-netns".to_owned())
            .spawn_scoped(scope, move || -> anyhow::Result<R> {
                // SAFETY: setns(2) on a valid, open namespace fd; it only changes this thread.
                let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    bail!(
                        "setns into {} failed: {} (needs root / CAP_SYS_ADMIN)",
                        netns_path.display(),
                        std::io::Error::last_os_error()
                    );
                }
                Ok(f())
            })
            .context("spawning a thread to enter a network namespace")?;
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Moves the calling thread into the network namespace bound at `netns_path`, for a thread
/// that lives in a host (a request loop). Only this thread moves; see [`run_in`].
pub(crate) fn enter(netns_path: &Path) -> anyhow::Result<()> {
    let netns = File::open(netns_path)
        .with_context(|| format!("opening network namespace {}", netns_path.display()))?;
    // SAFETY: setns(2) on a valid, open namespace fd; it only changes this thread.
    let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!(
            "setns into {} failed: {}",
            netns_path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The pids of the processes whose network namespace is the one bound at `netns_path` (what
/// `ip netns pids` prints), without our own process. Zombies have no namespace any more and
/// are not listed.
pub(crate) fn pids_in(netns_path: &Path) -> anyhow::Result<Vec<i32>> {
    let target = fs::metadata(netns_path)
        .with_context(|| format!("reading network namespace {}", netns_path.display()))?;
    let own_pid = std::process::id();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").context("listing /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own_pid {
            continue;
        }
        // Processes come and go while we look: a vanished one is simply not in the namespace.
        let Ok(netns) = fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        if netns.dev() == target.dev() && netns.ino() == target.ino() {
            if let Ok(pid) = i32::try_from(pid) {
                pids.push(pid);
            }
        }
    }
    Ok(pids)
}

/// Stops every process left in a namespace: SIGTERM, then SIGKILL for those still there after
/// `grace`. This is the safety net for daemons a test forgot (or could not) stop; processes
/// owned by a [`crate::Process`] are normally gone before.
pub(crate) fn stop_processes_in(netns_path: &Path, grace: Duration) -> anyhow::Result<()> {
    let pids = pids_in(netns_path)?;
    if pids.is_empty() {
        return Ok(());
    }
    signal_all(&pids, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    loop {
        let remaining = pids_in(netns_path)?;
        if remaining.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            signal_all(&remaining, libc::SIGKILL);
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn signal_all(pids: &[i32], signal: i32) {
    for &pid in pids {
        // SAFETY: kill(2) has no memory effects; a pid that has exited meanwhile gives ESRCH.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Whether a process with this pid exists (used to tell a live lab from a stale leftover).
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

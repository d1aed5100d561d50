//! Which Linux capabilities this process runs with, so that a refused call can be told apart
//! from a broken one and the message can name the capability to grant.

/// The capabilities Tandem uses (dist/tandem.service grants exactly these), with their bits
/// from linux/capability.h.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    NetBindService = 10,
    NetAdmin = 12,
    NetRaw = 13,
    Perfmon = 38,
    Bpf = 39,
}

impl Capability {
    pub const ALL: [Capability; 5] = [
        Capability::NetBindService,
        Capability::NetAdmin,
        Capability::NetRaw,
        Capability::Perfmon,
        Capability::Bpf,
    ];

    /// The name systemd units, `capsh` and Tandem's messages use, e.g. `CAP_NET_ADMIN`.
    pub fn name(self) -> &'static str {
        match self {
            Capability::NetBindService => "CAP_NET_BIND_SERVICE",
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::NetRaw => "CAP_NET_RAW",
            Capability::Perfmon => "CAP_PERFMON",
            Capability::Bpf => "CAP_BPF",
        }
    }

    /// Its bit in a capability set as /proc/PID/status shows it.
    pub fn bit(self) -> u64 {
        1 << self as u32
    }
}

/// Whether this process has `capability` in its effective set. Read from /proc/self/status
/// (the same answer `getpcaps` gives an operator); `true` if that cannot be read, so that the
/// call itself is tried and its own error reported.
pub fn has(capability: Capability) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_set(&status))
        .is_none_or(|set| set & capability.bit() != 0)
}

/// The effective set (`CapEff:`) of a process's /proc/PID/status text.
pub fn effective_set(proc_status: &str) -> Option<u64> {
    proc_status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// The capabilities in this thread's bounding set but not in its permitted set, as numbers:
/// what a program it executes as root would gain. Linux clears a child's parent-death signal
/// when exec gives it capabilities its parent did not have, so a child that must die with
/// the daemon has these removed from its bounding set before exec (see `crate::bgp`).
pub fn gained_by_exec() -> Vec<libc::c_int> {
    let Ok(status) = std::fs::read_to_string("/proc/thread-self/status") else {
        return Vec::new();
    };
    let (Some(bounding), Some(permitted)) =
        (named_set(&status, "CapBnd:"), named_set(&status, "CapPrm:"))
    else {
        return Vec::new();
    };
    (0..64)
        .filter(|bit| bounding & !permitted & (1u64 << bit) != 0)
        .collect()
}

/// The set named `field` (e.g. `CapPrm:`) of a process's or thread's /proc status text.
fn named_set(proc_status: &str, field: &str) -> Option<u64> {
    proc_status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

/// Gives up `capabilities` for good in every thread of the process: effective, permitted,
/// inheritable and ambient sets. Linux keeps capabilities per thread, and the daemon's runtime
/// threads exist already when it knows what it no longer needs, so each thread is asked, by a
/// signal whose handler makes the two system calls for itself (libcap's psx does the same for
/// Go). Returns once /proc shows none of them in any thread's permitted set.
pub fn drop_everywhere(capabilities: &[Capability]) -> std::io::Result<()> {
    let bits = capabilities.iter().fold(0u64, |bits, cap| bits | cap.bit());
    if bits == 0 {
        return Ok(());
    }
    DROP_BITS.store(bits, Ordering::SeqCst);
    install_drop_handler()?;
    // SAFETY: a plain call; the handler only makes async-signal-safe system calls.
    unsafe { drop_in_this_thread() };
    let pid = std::process::id();
    for _round in 0..20 {
        let mut left = Vec::new();
        for entry in std::fs::read_dir("/proc/self/task")? {
            let tid = entry?
                .file_name()
                .to_string_lossy()
                .parse::<i32>()
                .unwrap_or(0);
            let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"));
            // A thread that ended between the listing and the read is no longer a concern.
            if let Some(permitted) = status.ok().and_then(|s| named_set(&s, "CapPrm:")) {
                if permitted & bits != 0 {
                    left.push(tid);
                }
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        for tid in left {
            // SAFETY: tgkill to a thread of this process with the handler installed above.
            unsafe { libc::syscall(libc::SYS_tgkill, pid as i32, tid, drop_signal()) };
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(std::io::Error::other(
        "some threads still hold the capabilities after 20 rounds of asking",
    ))
}

use std::sync::atomic::{AtomicU64, Ordering};

/// The capability bits the handler clears.
static DROP_BITS: AtomicU64 = AtomicU64::new(0);

fn drop_signal() -> libc::c_int {
    // The first real-time signals are glibc's own; this one is for applications.
    libc::SIGRTMIN() + 2
}

fn install_drop_handler() -> std::io::Result<()> {
    extern "C" fn on_signal(_: libc::c_int) {
        // SAFETY: capget, capset and prctl are async-signal-safe system calls.
        unsafe { drop_in_this_thread() };
    }
    // SAFETY: a zeroed sigaction with a handler that only makes system calls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(drop_signal(), &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// capget/capset's header and data (linux/capability.h, version 3: two 32-bit words).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Clears [`DROP_BITS`] from the calling thread's sets. Async-signal-safe: system calls only.
unsafe fn drop_in_this_thread() {
    let bits = DROP_BITS.load(Ordering::SeqCst);
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
        return;
    }
    for (word, data) in data.iter_mut().enumerate() {
        let clear = !((bits >> (32 * word)) as u32);
        data.effective &= clear;
        data.permitted &= clear;
        data.inheritable &= clear;
    }
    libc::syscall(libc::SYS_capset, &mut header, data.as_ptr());
    for cap in 0..64u64 {
        if bits & (1 << cap) != 0 {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_LOWER as libc::c_ulong,
                cap as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            );
        }
    }
}

/// Whether this kernel lets a process use BPF maps and links it holds without CAP_BPF. Since
/// Linux 6.5 only creating maps and loading programs check it; before, with
/// `kernel.unprivileged_bpf_disabled` set (Debian's default), every bpf(2) call did, including
/// the map updates a mastership change makes.
pub fn kernel_checks_bpf_only_at_load() -> bool {
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the struct it is given.
    if unsafe { libc::uname(&mut name) } != 0 {
        return false;
    }
    // SAFETY: uname's release is a NUL-terminated string.
    let release = unsafe { std::ffi::CStr::from_ptr(name.release.as_ptr()) };
    kernel_at_least(&release.to_string_lossy(), (6, 5))
}

fn kernel_at_least(release: &str, wanted: (u32, u32)) -> bool {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|part| !part.is_empty())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let major = numbers.next().unwrap_or(0);
    let minor = numbers.next().unwrap_or(0);
    (major, minor) >= wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_set_is_read_from_proc_status() {
        // The unit's five capabilities, as /proc shows them for `setpriv ... tandem run`.
        let status = "Name:\ttandem\nCapInh:\t000000c000003400\nCapEff:\t000000c000003400\n";
        let set = effective_set(status).expect("CapEff");
        for capability in Capability::ALL {
            assert_ne!(set & capability.bit(), 0, "{capability:?}");
        }
        assert_eq!(effective_set("Name:\ttandem\n"), None);
    }

    #[test]
    fn kernel_releases_are_compared_by_major_and_minor() {
        assert!(kernel_at_least("6.18.44-fc-v1300", (6, 5)));
        assert!(kernel_at_least("6.5.0", (6, 5)));
        assert!(!kernel_at_least("6.1.0-28-amd64", (6, 5)));
        assert!(!kernel_at_least("5.15.0", (6, 5)));
    }
}

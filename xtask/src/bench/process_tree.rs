//! A benchmarked program's memory, read from /proc: the program may be a tree of processes
//! (HAProxy's and nginx's masters and workers, old workers while a reload drains them).

use std::collections::HashMap;
use std::fs;

/// Which memory figure of /proc/PID/status to add up.
#[derive(Clone, Copy)]
pub enum Memory {
    /// VmRSS: resident now.
    Resident,
    /// VmHWM: the most each process has had resident so far.
    PeakResident,
}

/// `memory` of `root` and every process below it, in KiB. Children are found by their parent
/// pid, so processes forked by any thread count.
pub fn kib(root: u32, memory: Memory) -> u64 {
    let field = match memory {
        Memory::Resident => "VmRSS:",
        Memory::PeakResident => "VmHWM:",
    };
    let children = children_by_parent();
    let mut total = 0;
    let mut pending = vec![root];
    while let Some(pid) = pending.pop() {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        total += status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|value| value.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        pending.extend(children.get(&pid).into_iter().flatten());
    }
    total
}

/// `root` and every process below it.
pub fn pids(root: u32) -> Vec<u32> {
    let children = children_by_parent();
    let mut all = Vec::new();
    let mut pending = vec![root];
    while let Some(pid) = pending.pop() {
        all.push(pid);
        pending.extend(children.get(&pid).into_iter().flatten());
    }
    all
}

/// CPU time (user and system, all threads) used so far by `root` and every process below it,
/// in clock ticks (`CLK_TCK`, usually 100 per second).
pub fn cpu_ticks(root: u32) -> u64 {
    pids(root)
        .into_iter()
        .map(|pid| {
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after "(comm)": state is the 1st, utime the 12th, stime the 13th.
            stat.rsplit_once(')')
                .map(|(_, rest)| {
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
                    field(11).unwrap_or(0) + field(12).unwrap_or(0)
                })
                .unwrap_or(0)
        })
        .sum()
}

/// Clock ticks per second, for [`cpu_ticks`].
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Starts the peak (VmHWM) of `root` and every process below it again from the current RSS,
/// so the next reading of [`Memory::PeakResident`] is the peak of what follows.
pub fn reset_peak(root: u32) {
    for pid in pids(root) {
        // "5" resets the peak resident set size (proc(5), /proc/pid/clear_refs).
        let _ = fs::write(format!("/proc/{pid}/clear_refs"), "5");
    }
}

fn children_by_parent() -> HashMap<u32, Vec<u32>> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return children;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    children
}

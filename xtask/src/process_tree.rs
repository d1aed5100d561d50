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

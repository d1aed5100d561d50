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
}

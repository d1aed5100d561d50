//! The virtual addresses this node may hold right now, kept in a file beside the control
//! socket (`/run/tandem/tandem.vips` for the default socket): a VIP is written there before it
//! is added and taken out after it is removed. After a crash, dist/tandem-release-vips (the
//! unit's `ExecStopPost=`) removes exactly what the file lists: what the dead daemon added, not
//! what the config on disk says now (a reload may have changed it since, and the file may not
//! even parse).
//!
//! The file is replaced whole (written beside, then renamed), so the script never reads half
//! of it. Format, one address per line: `INTERFACE ADDRESS`, the address IPv4 (`198.18.0.99`)
//! or IPv6 (`2001:2::99`, as Rust and `ip` print it).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::warn;

/// The registry every instance of the node writes through.
#[derive(Clone, Debug)]
pub struct HeldVips {
    inner: Arc<Mutex<Held>>,
}

#[derive(Debug)]
struct Held {
    path: Option<PathBuf>,
    vips: BTreeSet<(String, IpAddr)>,
}

impl HeldVips {
    /// The file for the node whose control socket is `socket`; written (empty) at once, so a
    /// file left by a run that crashed before its release step does not linger as if current.
    pub fn beside_socket(socket: &Path) -> HeldVips {
        let held = HeldVips {
            inner: Arc::new(Mutex::new(Held {
                path: Some(path_for_socket(socket)),
                vips: BTreeSet::new(),
            })),
        };
        held.lock().write();
        held
    }

    /// Kept in memory only (tests of the instance without a node).
    pub fn in_memory() -> HeldVips {
        HeldVips {
            inner: Arc::new(Mutex::new(Held {
                path: None,
                vips: BTreeSet::new(),
            })),
        }
    }

    /// `vip` is about to be added on `interface`.
    pub fn adding(&self, interface: &str, vip: IpAddr) {
        let mut held = self.lock();
        if held.vips.insert((interface.to_owned(), vip)) {
            held.write();
        }
    }

    /// `vip` is no longer on `interface`.
    pub fn removed(&self, interface: &str, vip: IpAddr) {
        let mut held = self.lock();
        if held.vips.remove(&(interface.to_owned(), vip)) {
            held.write();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `/run/tandem/tandem.sock` -> `/run/tandem/tandem.vips`.
pub fn path_for_socket(socket: &Path) -> PathBuf {
    socket.with_extension("vips")
}

impl Held {
    fn write(&self) {
        let Some(path) = &self.path else {
            return;
        };
        let mut text = String::from(
            "# The virtual addresses Tandem may hold (INTERFACE ADDRESS), for tandem-release-vips.\n",
        );
        for (interface, vip) in &self.vips {
            text.push_str(&format!("{interface} {vip}\n"));
        }
        let partial = path.with_extension("vips.new");
        let written = std::fs::write(&partial, text).and_then(|()| std::fs::rename(&partial, path));
        if let Err(err) = written {
            warn!(
                "cannot write {}: {err}; after a crash the release step will not know which \
                 virtual addresses to remove",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn the_file_lists_what_is_held_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("tandem-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let socket = dir.join("tandem.sock");
        let file = path_for_socket(&socket);
        std::fs::write(&file, "eth0 198.18.0.7\n").expect("a stale file");
        let held = HeldVips::beside_socket(&socket);
        let lines = |file: &Path| -> Vec<String> {
            std::fs::read_to_string(file)
                .expect("the file")
                .lines()
                .filter(|line| !line.starts_with('#'))
                .map(str::to_owned)
                .collect()
        };
        assert!(lines(&file).is_empty(), "a stale file is replaced at start");
        held.adding("eth0", Ipv4Addr::new(198, 18, 0, 99).into());
        held.adding("eth1", Ipv4Addr::new(198, 18, 1, 99).into());
        held.adding("eth1", Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0x99).into());
        assert_eq!(
            lines(&file),
            ["eth0 198.18.0.99", "eth1 198.18.1.99", "eth1 2001:2::99"]
        );
        held.removed("eth0", Ipv4Addr::new(198, 18, 0, 99).into());
        assert_eq!(lines(&file), ["eth1 198.18.1.99", "eth1 2001:2::99"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The data plane: how packets for the virtual IPs are handled below the proxy.
//!
//! `xdp` loads Tandem's XDP program (built by xtask, embedded in the binary), attaches it to an
//! interface and pins program, link and maps under a bpffs directory, so they outlive the
//! process and can be read by `tandem maps` with no daemon running. `pinned` reads those maps.
//! The policy (which services exist, when the node is master) stays in the rest of userspace;
//! this module only moves it into the kernel.

pub mod pinned;
pub mod xdp;

pub use xdp::{AttachMode, Attachment, XdpError};

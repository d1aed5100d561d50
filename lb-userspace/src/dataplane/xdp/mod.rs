//! The XDP side of the data plane, below [`super::kernel::XdpDataplane`] (which drives it):
//! - `loader`: loads the program embedded in the binary, attaches it (native, or generic as a
//!   fallback) and pins program, link and maps under a bpffs directory; checks pinned maps
//!   against the layouts declared in lb-common (`MAP_LAYOUTS`) before using them;
//! - `maps`: the only reader and writer of the kernel maps;
//! - `pinned`: what `tandem maps` shows, read from the pins with no daemon running;
//! - `trace`: `tandem trace`, the TRACE switch and the program's decision records;
//! - `link`: the interface's MAC and attached XDP mode, asked of the kernel synchronously;
//! - `neighbour`: the backends' MACs, from the kernel's neighbour table.
//!
//! Imports run one way: loader > maps, link; pinned, trace > loader, maps.

pub mod link;
pub mod loader;
pub mod maps;
pub mod neighbour;
pub mod pinned;
pub mod trace;

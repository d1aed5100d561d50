//! VRRP (RFC 5798 / RFC 9568 version 3, RFC 3768 version 2): the virtual IP that floats between
//! the nodes, interoperable with keepalived.
//!
//! The protocol lives in I/O-free parts, each tested on its own:
//! - `wire`: the advert codec (parse with full validation and a reason for every drop, emit).
//! - `arp`: the gratuitous ARP frame a new master broadcasts.
//! - `machine`: the per-instance state machine; time is injected, it never touches a socket.
//! - `priority`: effective priority and Fault from the trackers (keepalived's weight rules).
pub mod wire;
pub mod arp;
pub mod machine;
pub mod priority;

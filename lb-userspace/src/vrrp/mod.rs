//! VRRP (RFC 5798 / RFC 9568 version 3 over IPv4 and IPv6, RFC 3768 version 2 over IPv4): the
//! virtual IP that floats between the nodes, interoperable with keepalived. One instance is of
//! one family, as keepalived's are.
//!
//! The protocol lives in I/O-free parts, each tested on its own:
//! - `wire`: the advert codec (parse with full validation and a reason for every drop, emit),
//!   over the IPv4 codec of [`crate::wire`] or beside what an IPv6 raw socket gives (the
//!   gratuitous ARP frame and the neighbour advertisement live in [`crate::wire`] too).
//! - `accept`: whether a parsed advert is for this instance (own address, VRID, source,
//!   version, v2 password and interval), with the drop reason of each refusal.
//! - `machine`: the per-instance state machine; time is injected, it never touches a socket.
//! - `priority`: effective priority and Fault from the trackers (keepalived's weight rules).
//!
//! The I/O shell around them:
//! - `socket`: the raw protocol-112 socket (TTL / hop limit 255, 224.0.0.18 or ff02::12 or
//!   unicast peers; IPv6 from the link-local address).
//! - `link`: the interface, the VIPs (rtnetlink), `arp_announce`, announcing the VIPs
//!   (gratuitous ARP, unsolicited neighbour advertisements).
//! - `held`: the file of the VIPs the node may hold, for the release step after a crash.
//! - `track`: tracker tasks (built-in proxy check, scripts, interfaces).
//! - `instance`: one instance's task: drives the machine, carries out its actions, keeps the
//!   status `tandem status` shows.
pub mod accept;
pub mod held;
pub mod instance;
pub mod link;
pub mod machine;
pub mod priority;
pub mod socket;
pub mod track;
pub mod wire;

//! The proxy's policy: which backends a request may go to and in what order. [`upstream`]
//! (one per HTTP service) answers the engine; behind it [`balance`] orders backends,
//! [`affinity`] keeps sessions on theirs, and [`replicate`] shares learned sessions with the
//! peer nodes; [`queue`] holds each backend to `backend_max_connections`. Nothing here
//! touches a client connection or imports the engine.

use std::net::{IpAddr, Ipv6Addr};

pub mod affinity;
pub mod balance;
pub mod queue;
pub mod replicate;
pub mod upstream;

/// Who a per-client limit counts (`max_connections_per_client`, new session keys a minute):
/// an IPv4 address, or the /64 of an IPv6 one. An IPv6 host is given a whole /64 by its network
/// and can take a fresh address for every connection, so counting addresses would limit
/// nothing; a /64 is what one site gets (RFC 6177), and what one client's addresses share.
pub fn limited_client(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !(u128::from(u64::MAX));
            IpAddr::V6(Ipv6Addr::from(network))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_limited_by_their_64_and_ipv4_ones_by_address() {
        let client = |text: &str| limited_client(text.parse().expect("address"));
        assert_eq!(client("2001:2::10"), client("2001:2::ffff:1234:5678:9abc"));
        assert_eq!(client("2001:2::10").to_string(), "2001:2::");
        assert_ne!(client("2001:2::10"), client("2001:2:0:1::10"));
        assert_eq!(client("198.18.0.10").to_string(), "198.18.0.10");
        assert_ne!(client("198.18.0.10"), client("198.18.0.11"));
        // An IPv4 client seen through a dual-stack socket is the IPv4 client.
        assert_eq!(client("::ffff:198.18.0.10"), client("198.18.0.10"));
    }
}

//! Whether an advert that parsed (`wire::parse_ipv4`, `wire::parse_ipv6`) is for this instance: the rules of
//! RFC 5798 §7.1 and RFC 3768 §7.1 that need the instance's settings (with RFC 2338's simple
//! password for v2, as keepalived checks it), and the sources it takes adverts from (its
//! unicast peers, or `allowed_sources` for multicast), with the drop reason of each refusal. Pure, beside the state machine; the instance's task only carries out the
//! verdict (counting a drop, or passing the advert to the machine).

use std::net::IpAddr;
use std::time::Duration;

use super::wire::{DropReason, Password, Received, Version};

/// What this instance expects of the adverts it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected<'a> {
    /// This node's own address on the interface: its own adverts, looped back, are not a peer's.
    pub own_address: IpAddr,
    pub vrid: u8,
    pub version: Version,
    /// The advert interval; VRRPv2 drops an advert whose interval differs.
    pub advert_interval: Duration,
    /// VRRPv2: the password adverts must carry (Auth Type 1), or `None` for Auth Type 0.
    pub password: Option<Password>,
    /// The only sources adverts are taken from (the unicast peers, or `allowed_sources`);
    /// empty: any. A forged advert from elsewhere must not take the VIP.
    pub sources: &'a [IpAddr],
}

/// What to do with a received advert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A peer's advert for this virtual router: the machine takes it.
    Accept,
    /// Not for this instance and not an error: this node's own advert looped back, or another
    /// virtual router on the same segment.
    Ignore,
    /// For this virtual router but refused: counted under the reason.
    Drop(DropReason),
}

/// Judges `received` against what the instance expects.
pub fn judge(received: &Received, expected: &Expected<'_>) -> Verdict {
    if received.source == expected.own_address {
        return Verdict::Ignore;
    }
    let advert = &received.advert;
    if advert.vrid != expected.vrid {
        return Verdict::Ignore;
    }
    if !expected.sources.is_empty() && !expected.sources.contains(&received.source) {
        return Verdict::Drop(DropReason::UnknownSource);
    }
    if advert.version != expected.version {
        return Verdict::Drop(DropReason::VersionMismatch);
    }
    // RFC 2338 §7.1, as keepalived does it: an advert whose Auth Type differs from ours is
    // dropped, and so is one with Auth Type 1 whose 8 bytes of password differ. The password
    // is compared plainly: it travels in clear, so timing would tell nothing more.
    if expected.version == Version::V2 {
        match (&advert.password, &expected.password) {
            (None, None) => {}
            (Some(sent), Some(ours)) if sent == ours => {}
            (Some(_), Some(_)) => return Verdict::Drop(DropReason::PasswordMismatch),
            (Some(_), None) | (None, Some(_)) => {
                return Verdict::Drop(DropReason::AuthenticationMismatch)
            }
        }
    }
    // RFC 3768 §7.1: a v2 advert whose interval differs from ours MUST be discarded. v3's
    // backups learn the master's interval instead (RFC 5798 §6.4.2).
    if expected.version == Version::V2 && advert.interval != expected.advert_interval {
        return Verdict::Drop(DropReason::IntervalMismatch);
    }
    Verdict::Accept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vrrp::wire::Advert;
    use std::net::Ipv4Addr;

    const OWN: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100));
    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 101));

    fn expected(version: Version) -> Expected<'static> {
        Expected {
            own_address: OWN,
            vrid: 51,
            version,
            advert_interval: Duration::from_secs(1),
            password: None,
            sources: &[],
        }
    }

    fn received(source: IpAddr, vrid: u8, version: Version, interval: Duration) -> Received {
        Received {
            source,
            destination: IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
            ttl: 255,
            advert: Advert {
                version,
                vrid,
                priority: 100,
                interval,
                addresses: vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 99))],
                password: None,
            },
        }
    }

    /// A v2 advert from the peer carrying `password` (`None`: Auth Type 0).
    fn v2_with(password: Option<&[u8]>) -> Received {
        let mut advert = received(PEER, 51, Version::V2, Duration::from_secs(1));
        advert.advert.password = password.map(|text| Password::new(text).unwrap());
        advert
    }

    fn v2_expecting(password: Option<&[u8]>) -> Expected<'static> {
        Expected {
            password: password.map(|text| Password::new(text).unwrap()),
            ..expected(Version::V2)
        }
    }

    #[test]
    fn a_peers_advert_for_this_virtual_router_is_accepted() {
        for version in [Version::V2, Version::V3] {
            let advert = received(PEER, 51, version, Duration::from_secs(1));
            assert_eq!(judge(&advert, &expected(version)), Verdict::Accept);
        }
    }

    #[test]
    fn this_nodes_own_advert_looped_back_is_ignored_not_counted() {
        let advert = received(OWN, 51, Version::V3, Duration::from_secs(1));
        assert_eq!(judge(&advert, &expected(Version::V3)), Verdict::Ignore);
    }

    #[test]
    fn another_virtual_router_on_the_segment_is_ignored_not_counted() {
        let advert = received(PEER, 52, Version::V3, Duration::from_secs(1));
        assert_eq!(judge(&advert, &expected(Version::V3)), Verdict::Ignore);
    }

    #[test]
    fn an_advert_of_the_other_version_is_dropped_as_a_version_mismatch() {
        let advert = received(PEER, 51, Version::V2, Duration::from_secs(1));
        assert_eq!(
            judge(&advert, &expected(Version::V3)),
            Verdict::Drop(DropReason::VersionMismatch)
        );
    }

    #[test]
    fn a_v2_advert_with_another_interval_is_dropped_but_v3_learns_it() {
        let slow = Duration::from_secs(2);
        assert_eq!(
            judge(
                &received(PEER, 51, Version::V2, slow),
                &expected(Version::V2)
            ),
            Verdict::Drop(DropReason::IntervalMismatch)
        );
        assert_eq!(
            judge(
                &received(PEER, 51, Version::V3, slow),
                &expected(Version::V3)
            ),
            Verdict::Accept
        );
    }

    #[test]
    fn an_advert_from_a_source_that_is_not_a_peer_is_dropped_as_unknown() {
        let stranger = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10));
        let peers = [PEER];
        let expected = Expected {
            sources: &peers,
            ..expected(Version::V3)
        };
        let from_peer = received(PEER, 51, Version::V3, Duration::from_secs(1));
        let forged = received(stranger, 51, Version::V3, Duration::from_secs(1));
        let other_router = received(stranger, 52, Version::V3, Duration::from_secs(1));
        assert_eq!(judge(&from_peer, &expected), Verdict::Accept);
        assert_eq!(
            judge(&forged, &expected),
            Verdict::Drop(DropReason::UnknownSource)
        );
        assert_eq!(
            judge(&other_router, &expected),
            Verdict::Ignore,
            "another virtual router's adverts are not counted"
        );
    }

    #[test]
    fn a_v2_advert_with_this_instances_password_is_accepted() {
        assert_eq!(
            judge(&v2_with(Some(b"secret")), &v2_expecting(Some(b"secret"))),
            Verdict::Accept
        );
    }

    #[test]
    fn a_v2_advert_with_another_password_is_dropped_as_a_password_mismatch() {
        for other in [&b"Secret"[..], b"secret1", b"s"] {
            assert_eq!(
                judge(&v2_with(Some(other)), &v2_expecting(Some(b"secret"))),
                Verdict::Drop(DropReason::PasswordMismatch)
            );
        }
    }

    #[test]
    fn authentication_on_one_side_only_is_dropped_as_an_authentication_mismatch() {
        // A peer that sends no password to an instance that wants one...
        assert_eq!(
            judge(&v2_with(None), &v2_expecting(Some(b"secret"))),
            Verdict::Drop(DropReason::AuthenticationMismatch)
        );
        // ...and a PASS peer to an instance configured without authentication.
        assert_eq!(
            judge(&v2_with(Some(b"secret")), &v2_expecting(None)),
            Verdict::Drop(DropReason::AuthenticationMismatch)
        );
        // Without authentication on either side nothing changes.
        assert_eq!(judge(&v2_with(None), &v2_expecting(None)), Verdict::Accept);
    }

    #[test]
    fn authentication_is_judged_after_the_source_and_the_version() {
        let stranger = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 10));
        let peers = [PEER];
        let expected = Expected {
            sources: &peers,
            ..v2_expecting(Some(b"secret"))
        };
        let mut forged = v2_with(Some(b"wrong"));
        forged.source = stranger;
        assert_eq!(
            judge(&forged, &expected),
            Verdict::Drop(DropReason::UnknownSource)
        );
        let v3 = received(PEER, 51, Version::V3, Duration::from_secs(1));
        assert_eq!(
            judge(&v3, &expected),
            Verdict::Drop(DropReason::VersionMismatch)
        );
        // A wrong password is reported before a wrong interval, as keepalived checks them.
        let mut slow = v2_with(Some(b"wrong"));
        slow.advert.interval = Duration::from_secs(2);
        assert_eq!(
            judge(&slow, &expected),
            Verdict::Drop(DropReason::PasswordMismatch)
        );
    }
}

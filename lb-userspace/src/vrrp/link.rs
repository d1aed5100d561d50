//! The node's side of an interface for VRRP: find it and its own address in the instance's
//! family (IPv4, or the IPv6 link-local address adverts come from), add and remove the virtual
//! addresses (rtnetlink; IPv6 ones without duplicate address detection, so they serve at
//! once), keep the node from announcing a VIP it does not hold (`arp_announce`), and announce
//! the VIPs of a new master: gratuitous ARPs for IPv4, unsolicited neighbour advertisements for
//! IPv6 (an `AF_PACKET` socket).
//!
//! Nothing here decides anything: the instance shell calls it when the state machine says so.

use std::io;
use std::net::{IpAddr, Ipv6Addr};

use anyhow::{anyhow, Context as _};
use futures::TryStreamExt as _;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, CacheInfo,
};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::Handle;

use super::wire::Family;
use crate::wire::{arp, ndisc};

/// The prefix length a virtual address is added with, as keepalived does: the VIP is a host
/// address on the segment, the node's own address carries the route.
fn vip_prefix_len(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// fe80::/10, where RFC 5798 §5.1.2.1 has IPv6 adverts come from.
fn is_link_local(address: &Ipv6Addr) -> bool {
    address.segments()[0] & 0xffc0 == 0xfe80
}

/// What the shell needs to know about the VRRP interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// The node's own address on the interface in the instance's family (not a VIP; for IPv6
    /// its link-local address): the adverts' source and the tie-breaker between equal
    /// priorities.
    pub primary_address: IpAddr,
}

/// A route netlink connection; one per daemon is enough.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens the connection and drives it on the current tokio runtime.
    pub fn connect() -> anyhow::Result<Netlink> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening a route netlink socket")?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// Looks `name` up with its own address in `family`; `exclude` are addresses that do not
    /// count as the node's own (the VIPs a crashed predecessor may have left behind).
    pub async fn interface(
        &self,
        name: &str,
        family: Family,
        exclude: &[IpAddr],
    ) -> anyhow::Result<InterfaceInfo> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        let link = match links.try_next().await {
            Ok(Some(link)) => link,
            Ok(None) | Err(_) => {
                return Err(anyhow!(
                    "interface {name} does not exist; set [node] interface (or the instance's \
                     interface) to one listed by `ip link`"
                ))
            }
        };
        let index = link.header.index;
        let mac = link
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                    let mut mac = [0; 6];
                    mac.copy_from_slice(bytes);
                    Some(mac)
                }
                _ => None,
            })
            .ok_or_else(|| anyhow!("interface {name} has no Ethernet address; VRRP needs one"))?;
        let addresses = self.addresses(index).await?;
        let primary_address = match family {
            Family::Ipv4 => addresses
                .into_iter()
                .find(|(address, _)| address.is_ipv4() && !exclude.contains(address))
                .map(|(address, _)| address)
                .ok_or_else(|| {
                    anyhow!(
                        "interface {name} has no IPv4 address of its own; VRRP sends its adverts \
                         from it: add one with `ip addr add ADDRESS/PREFIX dev {name}`"
                    )
                })?,
            // A tentative address (duplicate address detection still running) cannot be sent
            // from yet; one that is ready is preferred.
            // A link-local VIP (keepalived suggests one) left by a crash is not the node's.
            Family::Ipv6 => addresses
                .iter()
                .filter(|(address, _)| !exclude.contains(address))
                .filter(|(address, _)| matches!(address, IpAddr::V6(a) if is_link_local(a)))
                .min_by_key(|(_, flags)| flags.contains(AddressFlags::Tentative))
                .map(|(address, _)| *address)
                .ok_or_else(|| {
                    anyhow!(
                        "interface {name} has no IPv6 link-local address; VRRP for IPv6 sends its \
                         adverts from it (RFC 5798): enable IPv6 on {name} \
                         (net.ipv6.conf.{name}.disable_ipv6=0) or add one with \
                         `ip -6 addr add fe80::N/64 dev {name}`"
                    )
                })?,
        };
        Ok(InterfaceInfo {
            name: name.to_owned(),
            index,
            mac,
            primary_address,
        })
    }

    /// The addresses on interface `index` with their flags, in the kernel's order (IPv4
    /// primary first).
    pub async fn addresses(&self, index: u32) -> anyhow::Result<Vec<(IpAddr, AddressFlags)>> {
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .context("listing the interface's addresses")?;
        Ok(messages.iter().filter_map(address_and_flags).collect())
    }

    /// Adds `address`/32 (IPv4) or `address`/128 (IPv6, without duplicate address detection:
    /// a master must answer for its VIP at once, and the backup has just given it up) to the
    /// interface; already present is fine.
    pub async fn add_vip(&self, index: u32, address: IpAddr) -> anyhow::Result<()> {
        if crate::fault_injection::vip_add_fails() {
            return Err(anyhow!(
                "adding virtual address {address}: refused (TANDEM_FAULT_INJECTION)"
            ));
        }
        let mut request = self
            .handle
            .address()
            .add(index, address, vip_prefix_len(address));
        if address.is_ipv6() {
            let message = request.message_mut();
            message.header.flags |= AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
            // Deprecated (preferred lifetime 0, valid forever): the VIP answers and is
            // announced, but source address selection (RFC 6724 rule 3) never picks it for the
            // node's own connections, so the proxy's and the relay's connections to backends
            // and the health checks leave from the node's address, not from an address that
            // moves to the other node on failover (and that a DSR backend holds itself).
            let mut lifetimes = CacheInfo::default();
            lifetimes.ifa_preferred = 0;
            lifetimes.ifa_valid = u32::MAX;
            message
                .attributes
                .push(AddressAttribute::CacheInfo(lifetimes));
        }
        match request.execute().await {
            Ok(()) => Ok(()),
            Err(err) if is_errno(&err, libc::EEXIST) => Ok(()),
            Err(err) if is_errno(&err, libc::EPERM) => Err(anyhow!(
                "adding virtual address {address}: {err} (it needs CAP_NET_ADMIN)"
            )),
            Err(err) => Err(anyhow!("adding virtual address {address}: {err}")),
        }
    }

    /// Removes `address` from the interface whatever its prefix length; absent is fine.
    /// Returns whether it was there.
    pub async fn remove_vip(&self, index: u32, address: IpAddr) -> anyhow::Result<bool> {
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(address)
            .execute()
            .try_collect()
            .await
            .context("listing the interface's addresses")?;
        let mut removed = false;
        for message in messages {
            let holds = address_and_flags(&message).is_some_and(|(held, _)| held == address);
            if !holds {
                continue;
            }
            match self.handle.address().del(message).execute().await {
                Ok(()) => removed = true,
                Err(err) if is_errno(&err, libc::EADDRNOTAVAIL) => {}
                Err(err) => return Err(anyhow!("removing virtual address {address}: {err}")),
            }
        }
        Ok(removed)
    }
}

/// The address a message is about, with its flags. IPv4 gives it in IFA_LOCAL (IFA_ADDRESS is
/// the peer on point-to-point links); IPv6 only in IFA_ADDRESS. The flags are in IFA_FLAGS
/// when the kernel sends it (all 32 bits), else in the header's 8.
fn address_and_flags(message: &AddressMessage) -> Option<(IpAddr, AddressFlags)> {
    let mut local = None;
    let mut address = None;
    let mut flags = AddressFlags::from_bits_retain(u32::from(message.header.flags.bits()));
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(a) => local = Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Flags(f) => flags = *f,
            _ => {}
        }
    }
    Some((local.or(address)?, flags))
}

fn is_errno(err: &rtnetlink::Error, errno: i32) -> bool {
    match err {
        rtnetlink::Error::NetlinkError(message) => {
            message.code.map(|code| code.get().abs()) == Some(errno)
        }
        _ => false,
    }
}

/// Sets `net.ipv4.conf.IF.arp_announce = 2`, so that while the node is not master it never uses
/// a VIP (left behind by a crash, or during a transition) as the source of its own ARP requests,
/// which would steal the clients back from the real master.
pub fn prefer_own_address_in_arp(interface: &str) -> io::Result<()> {
    std::fs::write(
        format!("/proc/sys/net/ipv4/conf/{interface}/arp_announce"),
        "2",
    )
}

/// A packet socket that announces the VIPs of a new master on one interface: a gratuitous
/// ARP for an IPv4 address, an unsolicited neighbour advertisement for an IPv6 one.
///
/// Both carry the interface's own MAC, as keepalived does without `use_vmac` and as the IPv4
/// side always has: Tandem does not put the virtual MAC (00:00:5e:00:01/02:VRID) on the
/// interface, so announcing it would send the clients' frames to a MAC nobody receives.
pub struct Announcer {
    fd: std::os::fd::OwnedFd,
    index: u32,
    mac: [u8; 6],
}

impl Announcer {
    pub fn open(interface: &InterfaceInfo) -> io::Result<Announcer> {
        // Protocol 0: the socket only sends, and receives nothing it would have to drain.
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Announcer {
            fd,
            index: interface.index,
            mac: interface.mac,
        })
    }

    /// Sends one announcement of `address` with the interface's MAC: a broadcast gratuitous
    /// ARP (IPv4), or an unsolicited neighbour advertisement to ff02::1 (IPv6).
    pub fn announce(&self, address: IpAddr) -> io::Result<()> {
        match address {
            IpAddr::V4(address) => self.send(
                &arp::gratuitous_arp(self.mac, address),
                libc::ETH_P_ARP as u16,
                [0xff; 6],
            ),
            IpAddr::V6(address) => self.send(
                &ndisc::unsolicited_na(self.mac, self.mac, address),
                libc::ETH_P_IPV6 as u16,
                ndisc::multicast_mac(ndisc::ALL_NODES),
            ),
        }
    }

    fn send(&self, frame: &[u8], protocol: u16, destination: [u8; 6]) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
        let mut target: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        target.sll_family = libc::AF_PACKET as u16;
        target.sll_protocol = protocol.to_be();
        target.sll_ifindex = self.index as i32;
        target.sll_halen = 6;
        target.sll_addr[..6].copy_from_slice(&destination);
        // SAFETY: frame and target outlive the call; lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&target as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_is_fe80_slash_10() {
        for (text, expected) in [
            ("fe80::1", true),
            ("fe80::ff:fe00:a", true),
            ("febf:ffff::1", true),
            ("fec0::1", false),
            ("2001:2::100", false),
            ("ff02::12", false),
            ("::1", false),
        ] {
            let address: Ipv6Addr = text.parse().unwrap();
            assert_eq!(is_link_local(&address), expected, "{text}");
        }
    }

    #[test]
    fn vips_are_host_addresses_of_their_family() {
        assert_eq!(vip_prefix_len("198.18.0.99".parse().unwrap()), 32);
        assert_eq!(vip_prefix_len("2001:2::99".parse().unwrap()), 128);
    }
}

//! The node's side of an interface for VRRP: find it, add and remove the virtual addresses
//! (rtnetlink), keep the node from announcing a VIP it does not hold (`arp_announce`), and
//! broadcast gratuitous ARPs (an `AF_PACKET` socket).
//!
//! Nothing here decides anything: the instance shell calls it when the state machine says so.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{anyhow, Context as _};
use futures::TryStreamExt as _;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::Handle;

use crate::wire::arp;

/// The prefix length a virtual address is added with, as keepalived does: the VIP is a host
/// address on the segment, the node's own address carries the route.
const VIP_PREFIX_LEN: u8 = 32;

/// What the shell needs to know about the VRRP interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// The node's own address on the interface (not a VIP): the adverts' source and the
    /// tie-breaker between equal priorities.
    pub primary_address: Ipv4Addr,
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

    /// Looks `name` up; `exclude` are addresses that do not count as the node's own (the VIPs
    /// a crashed predecessor may have left behind).
    pub async fn interface(
        &self,
        name: &str,
        exclude: &[Ipv4Addr],
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
        let primary_address = self
            .ipv4_addresses(index)
            .await?
            .into_iter()
            .find(|address| !exclude.contains(address))
            .ok_or_else(|| {
                anyhow!(
                    "interface {name} has no IPv4 address of its own; VRRP sends its adverts from \
                     it: add one with `ip addr add ADDRESS/PREFIX dev {name}`"
                )
            })?;
        Ok(InterfaceInfo {
            name: name.to_owned(),
            index,
            mac,
            primary_address,
        })
    }

    /// The IPv4 addresses on interface `index`, in the kernel's order (primary first).
    pub async fn ipv4_addresses(&self, index: u32) -> anyhow::Result<Vec<Ipv4Addr>> {
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .context("listing the interface's addresses")?;
        Ok(messages
            .iter()
            .flat_map(|message| message.attributes.iter())
            .filter_map(|attribute| match attribute {
                AddressAttribute::Local(IpAddr::V4(address)) => Some(*address),
                _ => None,
            })
            .collect())
    }

    /// Adds `address`/32 to the interface; already present is fine.
    pub async fn add_vip(&self, index: u32, address: Ipv4Addr) -> anyhow::Result<()> {
        if crate::fault_injection::vip_add_fails() {
            return Err(anyhow!(
                "adding virtual address {address}: refused (TANDEM_FAULT_INJECTION)"
            ));
        }
        match self
            .handle
            .address()
            .add(index, IpAddr::V4(address), VIP_PREFIX_LEN)
            .execute()
            .await
        {
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
    pub async fn remove_vip(&self, index: u32, address: Ipv4Addr) -> anyhow::Result<bool> {
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(IpAddr::V4(address))
            .execute()
            .try_collect()
            .await
            .context("listing the interface's addresses")?;
        let mut removed = false;
        for message in messages {
            let holds = message
                .attributes
                .iter()
                .any(|attribute| matches!(attribute, AddressAttribute::Local(IpAddr::V4(a)) if *a == address));
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

/// A socket that broadcasts gratuitous ARPs on one interface.
pub struct ArpSender {
    fd: std::os::fd::OwnedFd,
    index: u32,
    mac: [u8; 6],
}

impl ArpSender {
    pub fn open(interface: &InterfaceInfo) -> io::Result<ArpSender> {
        let protocol = (libc::ETH_P_ARP as u16).to_be() as i32;
        // SAFETY: socket(2) with constant arguments; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(ArpSender {
            fd,
            index: interface.index,
            mac: interface.mac,
        })
    }

    /// Broadcasts one gratuitous ARP for `address` with the interface's MAC.
    pub fn announce(&self, address: Ipv4Addr) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        let frame = arp::gratuitous_arp(self.mac, address);
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
        let mut target: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        target.sll_family = libc::AF_PACKET as u16;
        target.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
        target.sll_ifindex = self.index as i32;
        target.sll_halen = 6;
        target.sll_addr[..6].copy_from_slice(&[0xff; 6]);
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

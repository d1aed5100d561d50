//! The raw IP socket (protocol 112) an instance sends and receives its adverts on, one per
//! instance and so one family per socket.
//!
//! Bound to the VRRP interface and joined to the all-VRRP-routers group there (224.0.0.18, or
//! ff02::12 for IPv6); sends with TTL / hop limit 255 (RFC 5798 §5.1.1.3, §5.1.2.3: receivers
//! drop anything else, so an advert cannot come from off the segment) to the group, or to each
//! unicast peer when the config lists any (then the group is not joined). Our own multicast
//! adverts are not looped back.
//!
//! IPv4: the kernel builds the IP header; received datagrams include it, so the codec can
//! check the TTL. IPv6: the kernel never hands the IPv6 header to a raw socket, so the hop
//! limit and the destination come as ancillary data (`IPV6_RECVHOPLIMIT`, `IPV6_RECVPKTINFO`)
//! beside the source in the socket address: [`Arrival`]. Each advert is sent from the
//! interface's link-local address (RFC 5798 §5.1.2.1), named per message with `IPV6_PKTINFO`
//! so the kernel's source selection cannot pick another one, since the checksum covers it.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd as _;

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::link::InterfaceInfo;
use super::wire::{self, Family};

pub struct VrrpSocket {
    socket: AsyncFd<Socket>,
    destinations: Vec<IpAddr>,
    /// The address adverts are sent from (and their checksum computed with).
    source: IpAddr,
    index: u32,
}

/// What the kernel said about a received datagram besides its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// Bytes written into the buffer.
    pub len: usize,
    /// IPv6 only: the header fields the socket gives beside the payload. `None` for IPv4,
    /// whose datagrams carry their header.
    pub ipv6: Option<Ipv6Header>,
}

/// The fields of an IPv6 header an advert is judged by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Header {
    pub source: Ipv6Addr,
    /// The unspecified address when the kernel gave no `IPV6_PKTINFO` (the checksum then
    /// fails, and the drop is counted).
    pub destination: Ipv6Addr,
    /// 0 when the kernel gave no `IPV6_HOPLIMIT` (dropped as not 255, and counted).
    pub hop_limit: u8,
}

impl VrrpSocket {
    /// Opens the socket on `interface` in the family of its primary address; `unicast_peers`
    /// (of that family) empty means multicast.
    pub fn open(interface: &InterfaceInfo, unicast_peers: &[IpAddr]) -> io::Result<VrrpSocket> {
        let family = Family::of(interface.primary_address);
        let domain = match family {
            Family::Ipv4 => Domain::IPV4,
            Family::Ipv6 => Domain::IPV6,
        };
        let socket = Socket::new(
            domain,
            Type::RAW,
            Some(Protocol::from(i32::from(wire::PROTOCOL))),
        )?;
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        socket.bind_device(Some(interface.name.as_bytes()))?;
        let multicast = unicast_peers.is_empty();
        match interface.primary_address {
            IpAddr::V4(primary) => {
                socket.set_ttl_v4(u32::from(wire::TTL))?;
                socket.set_multicast_ttl_v4(u32::from(wire::TTL))?;
                // Our own adverts coming back would look like a peer with our priority.
                socket.set_multicast_loop_v4(false)?;
                // Precedence "internetwork control", as keepalived marks its adverts.
                socket.set_tos_v4(u32::from(wire::IPV4_TOS))?;
                socket.set_multicast_if_v4(&primary)?;
                // With unicast peers the group is not joined: adverts sent to it are not for us.
                if multicast {
                    socket.join_multicast_v4_n(
                        &wire::MULTICAST_GROUP,
                        &InterfaceIndexOrAddress::Index(interface.index),
                    )?;
                }
            }
            IpAddr::V6(_) => {
                socket.set_unicast_hops_v6(u32::from(wire::TTL))?;
                socket.set_multicast_hops_v6(u32::from(wire::TTL))?;
                socket.set_multicast_loop_v6(false)?;
                socket.set_tclass_v6(u32::from(wire::IPV4_TOS))?;
                socket.set_multicast_if_v6(interface.index)?;
                socket.set_recv_hoplimit_v6(true)?;
                set_recv_pktinfo_v6(&socket)?;
                // No IPV6_CHECKSUM: the kernel would then drop a bad checksum silently, and
                // every drop is to be counted by reason.
                if multicast {
                    socket.join_multicast_v6(&wire::MULTICAST_GROUP_V6, interface.index)?;
                }
            }
        }
        let destinations = if multicast {
            vec![match family {
                Family::Ipv4 => IpAddr::V4(wire::MULTICAST_GROUP),
                Family::Ipv6 => IpAddr::V6(wire::MULTICAST_GROUP_V6),
            }]
        } else {
            unicast_peers.to_vec()
        };
        // SAFETY: the AsyncFd owns the socket for as long as it is registered: nothing else
        // holds or closes its descriptor.
        let socket = unsafe { AsyncFd::register(socket) }.map_err(|err| err.into_parts().1)?;
        Ok(VrrpSocket {
            socket,
            destinations,
            source: interface.primary_address,
            index: interface.index,
        })
    }

    /// Where adverts go: the multicast group or the unicast peers.
    pub fn destinations(&self) -> &[IpAddr] {
        &self.destinations
    }

    /// The address adverts leave from: the interface's primary IPv4 address, or its IPv6
    /// link-local address.
    pub fn source(&self) -> IpAddr {
        self.source
    }

    /// Receives one datagram into `buf`: IPv4 with its header, IPv6 without (the header's
    /// fields in the [`Arrival`]).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Arrival> {
        loop {
            let mut guard = self.socket.readable().await?;
            let result = guard.try_io(|socket| match self.source {
                IpAddr::V4(_) => {
                    // SAFETY: recv only writes initialized bytes into the buffer and returns
                    // how many; u8 and MaybeUninit<u8> have the same layout.
                    let uninit = unsafe {
                        std::slice::from_raw_parts_mut(
                            buf.as_mut_ptr().cast::<MaybeUninit<u8>>(),
                            buf.len(),
                        )
                    };
                    let len = socket.get_ref().recv(uninit)?;
                    Ok(Arrival { len, ipv6: None })
                }
                IpAddr::V6(_) => recv_v6(socket.get_ref(), buf),
            });
            match result {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one VRRP payload to `destination` (of the socket's family).
    pub async fn send(&self, payload: &[u8], destination: IpAddr) -> io::Result<()> {
        loop {
            let mut guard = self.socket.writable().await?;
            let result = guard.try_io(|socket| match (self.source, destination) {
                (IpAddr::V4(_), IpAddr::V4(destination)) => {
                    let address = SockAddr::from(SocketAddr::new(destination.into(), 0));
                    socket.get_ref().send_to(payload, &address).map(|_| ())
                }
                (IpAddr::V6(source), IpAddr::V6(destination)) => {
                    send_v6(socket.get_ref(), payload, source, destination, self.index)
                }
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{destination} is not of the VRRP socket's family"),
                )),
            });
            match result {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

fn set_recv_pktinfo_v6(socket: &Socket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVPKTINFO,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Room for the ancillary data of one datagram: IPV6_PKTINFO and IPV6_HOPLIMIT, with space
/// to spare; u64 words keep it aligned as cmsghdr needs.
const CONTROL_WORDS: usize = 16;

/// recvmsg(2) on an IPv6 raw socket: the payload, the source from the socket address, the
/// destination and hop limit from the ancillary data.
fn recv_v6(socket: &Socket, buf: &mut [u8]) -> io::Result<Arrival> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; CONTROL_WORDS];
    // SAFETY: sockaddr_in6 and msghdr are plain data; zeroed is a valid start.
    let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in msg refers to a live local (or buf) of the length given.
    let len = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut header = Ipv6Header {
        source: Ipv6Addr::from(from.sin6_addr.s6_addr),
        destination: Ipv6Addr::UNSPECIFIED,
        hop_limit: 0,
    };
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, within
    // msg_controllen; each payload is read unaligned at its own length.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let data = libc::CMSG_DATA(cmsg);
            match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let info = std::ptr::read_unaligned(data.cast::<libc::in6_pktinfo>());
                    header.destination = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                }
                (libc::IPPROTO_IPV6, libc::IPV6_HOPLIMIT) => {
                    let hops = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                    header.hop_limit = u8::try_from(hops).unwrap_or(0);
                }
                _ => {}
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Arrival {
        // Checked non-negative above.
        len: len as usize,
        ipv6: Some(header),
    })
}

/// sendmsg(2) on an IPv6 raw socket from `source` (IPV6_PKTINFO) out of interface `index`.
fn send_v6(
    socket: &Socket,
    payload: &[u8],
    source: Ipv6Addr,
    destination: Ipv6Addr,
    index: u32,
) -> io::Result<()> {
    // SAFETY: sockaddr_in6 and msghdr are plain data; zeroed is a valid start.
    let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    to.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    to.sin6_addr.s6_addr = destination.octets();
    // A link-local destination (ff02::12, a fe80:: peer) means nothing without its link.
    to.sin6_scope_id = index;
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr().cast_mut().cast(),
        iov_len: payload.len(),
    };
    let mut control = [0u64; CONTROL_WORDS];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut to as *mut libc::sockaddr_in6).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    let info = libc::in6_pktinfo {
        ipi6_addr: libc::in6_addr {
            s6_addr: source.octets(),
        },
        ipi6_ifindex: index,
    };
    // SAFETY: the control buffer holds CMSG_SPACE(in6_pktinfo) bytes (checked), aligned for
    // cmsghdr; sendmsg reads only what the pointers and lengths in msg give.
    let sent = unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<libc::in6_pktinfo>() as u32) as usize;
        assert!(space <= std::mem::size_of_val(&control));
        msg.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::IPPROTO_IPV6;
        (*cmsg).cmsg_type = libc::IPV6_PKTINFO;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in6_pktinfo>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::in6_pktinfo>(), info);
        libc::sendmsg(socket.as_raw_fd(), &msg, 0)
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

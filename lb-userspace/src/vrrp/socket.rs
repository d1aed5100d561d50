//! The raw IP socket (protocol 112) an instance sends and receives its adverts on.
//!
//! Bound to the VRRP interface and joined to 224.0.0.18 there; sends with TTL 255 (RFC 5798
//! §5.1.1.3: receivers drop anything else, so an advert cannot come from off the segment) to the
//! multicast group, or to each unicast peer when the config lists any. The kernel builds the IP
//! header; received datagrams include it, so the codec can check the TTL.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::link::InterfaceInfo;
use super::wire;

pub struct VrrpSocket {
    socket: AsyncFd<Socket>,
    destinations: Vec<Ipv4Addr>,
}

impl VrrpSocket {
    /// Opens the socket on `interface`; `unicast_peers` empty means multicast.
    pub fn open(interface: &InterfaceInfo, unicast_peers: &[Ipv4Addr]) -> io::Result<VrrpSocket> {
        let socket = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(wire::PROTOCOL))),
        )?;
        socket.set_nonblocking(true)?;
        socket.set_cloexec(true)?;
        socket.bind_device(Some(interface.name.as_bytes()))?;
        socket.set_ttl_v4(u32::from(wire::TTL))?;
        socket.set_multicast_ttl_v4(u32::from(wire::TTL))?;
        // Our own adverts coming back would look like a peer with our priority.
        socket.set_multicast_loop_v4(false)?;
        // Precedence "internetwork control", as keepalived marks its adverts.
        socket.set_tos_v4(u32::from(wire::IPV4_TOS))?;
        socket.set_multicast_if_v4(&interface.primary_address)?;
        // With unicast peers the group is not joined: adverts sent to it are not for us.
        if unicast_peers.is_empty() {
            socket.join_multicast_v4_n(
                &wire::MULTICAST_GROUP,
                &InterfaceIndexOrAddress::Index(interface.index),
            )?;
        }
        let destinations = if unicast_peers.is_empty() {
            vec![wire::MULTICAST_GROUP]
        } else {
            unicast_peers.to_vec()
        };
        // SAFETY: the AsyncFd owns the socket for as long as it is registered: nothing else
        // holds or closes its descriptor.
        let socket = unsafe { AsyncFd::register(socket) }.map_err(|err| err.into_parts().1)?;
        Ok(VrrpSocket {
            socket,
            destinations,
        })
    }

    /// Where adverts go: the multicast group or the unicast peers.
    pub fn destinations(&self) -> &[Ipv4Addr] {
        &self.destinations
    }

    /// Receives one IPv4 datagram (header included) into `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.socket.readable().await?;
            let result = guard.try_io(|socket| {
                // SAFETY: recv only writes initialized bytes into the buffer and returns how
                // many; u8 and MaybeUninit<u8> have the same layout.
                let uninit = unsafe {
                    std::slice::from_raw_parts_mut(
                        buf.as_mut_ptr().cast::<MaybeUninit<u8>>(),
                        buf.len(),
                    )
                };
                socket.get_ref().recv(uninit)
            });
            match result {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one VRRP payload to `destination`.
    pub async fn send(&self, payload: &[u8], destination: Ipv4Addr) -> io::Result<()> {
        let address = SockAddr::from(SocketAddrV4::new(destination, 0));
        loop {
            let mut guard = self.socket.writable().await?;
            match guard.try_io(|socket| socket.get_ref().send_to(payload, &address)) {
                Ok(result) => return result.map(|_| ()),
                Err(_would_block) => continue,
            }
        }
    }
}

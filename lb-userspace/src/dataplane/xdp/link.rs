//! What the data plane asks the kernel about its interface, synchronously: the MAC address and
//! which XDP mode (if any) is attached. One RTM_GETLINK over a plain netlink socket, so the
//! loader (which also runs from the CLI, outside any async runtime) needs no runtime, and the
//! answer is the calling thread's network namespace (unlike /sys/class/net, which shows the
//! namespace sysfs was mounted in).

use std::io;

use bytes::BytesMut;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// An interface as the data plane needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub mac: [u8; 6],
    /// The XDP program attached to it, by mode; `None` when there is none.
    pub xdp: Option<AttachedMode>,
}

/// Asks the kernel about interface `if_index`.
pub fn link_state(if_index: u32) -> io::Result<LinkState> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;

    let mut message = LinkMessage::default();
    message.header.index = if_index;
    let mut request = NetlinkMessage::from(RouteNetlinkMessage::GetLink(message));
    request.header.flags = NLM_F_REQUEST;
    request.header.sequence_number = 1;
    request.finalize();
    let mut buffer = vec![0u8; request.buffer_len()];
    request.serialize(&mut buffer);
    socket.send(&buffer, 0)?;

    let mut reply = BytesMut::with_capacity(64 * 1024);
    socket.recv(&mut reply, 0)?;
    let parsed = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let link = match parsed.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => link,
        NetlinkPayload::Error(err) => {
            let err = err.to_io();
            return Err(io::Error::new(
                err.kind(),
                format!("RTM_GETLINK for interface index {if_index}: {err}"),
            ));
        }
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected answer to RTM_GETLINK: {other:?}"),
            ))
        }
    };
    let mut state = LinkState {
        mac: [0; 6],
        xdp: None,
    };
    for attribute in link.attributes {
        match attribute {
            LinkAttribute::Address(bytes) if bytes.len() == 6 => {
                state.mac.copy_from_slice(&bytes);
            }
            LinkAttribute::Xdp(xdp) => {
                for item in xdp {
                    if let LinkXdp::Attached(mode) = item {
                        state.xdp = match mode {
                            XdpAttached::Driver => Some(AttachedMode::Native),
                            XdpAttached::SocketBuffer => Some(AttachedMode::Generic),
                            _ => None,
                        };
                    }
                }
            }
            _ => {}
        }
    }
    Ok(state)
}

/// The mode an attachment ended up in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachedMode {
    Native,
    Generic,
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
        })
    }
}

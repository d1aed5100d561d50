//! What every way to a backend shares: the client's request body on its way there
//! ([`ForwardBody`]), how backend connections are made and kept ([`PoolSettings`]; the pool
//! itself is [`super::h1::pool`]), and why a connection could not be had ([`ConnectError`]),
//! with local limits (out of descriptors or ports) told apart from a failing backend.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::h1::client::BoxError;

/// A client's request body: from hyper's HTTP/1.1 server (requests handed off to it) or from
/// an HTTP/2 stream of the engine's server.
pub enum ClientBody {
    Empty,
    Hyper(Incoming),
    Stream(super::h2::RequestBody),
}

impl std::fmt::Debug for ClientBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClientBody::Empty => "ClientBody::Empty",
            ClientBody::Hyper(_) => "ClientBody::Hyper",
            ClientBody::Stream(_) => "ClientBody::Stream",
        })
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(BoxError::from))),
            ClientBody::Stream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Hyper(body) => body.is_end_stream(),
            ClientBody::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Hyper(body) => body.size_hint(),
            ClientBody::Stream(body) => body.size_hint(),
        }
    }
}

/// A request body as sent to a backend.
#[derive(Debug)]
pub enum ForwardBody {
    Empty,
    Shared(Arc<SharedBody>),
}

/// A client's body that several attempts can hold in turn.
#[derive(Debug)]
pub struct SharedBody {
    body: Mutex<Option<ClientBody>>,
    started: AtomicBool,
    hint: SizeHint,
    /// `max_body_size`, and the body bytes that went through so far.
    max: u64,
    seen: AtomicU64,
}

impl ForwardBody {
    /// Wraps a client's body, which may have `max` bytes; an empty one needs no sharing.
    pub fn new(body: ClientBody, max: Option<u64>) -> Self {
        if body.is_end_stream() {
            return ForwardBody::Empty;
        }
        let hint = body.size_hint();
        ForwardBody::Shared(Arc::new(SharedBody {
            body: Mutex::new(Some(body)),
            started: AtomicBool::new(false),
            hint,
            max: max.unwrap_or(u64::MAX),
            seen: AtomicU64::new(0),
        }))
    }

    /// The body ran over its limit (its sending failed for that, not for the backend).
    pub fn too_large(&self) -> bool {
        match self {
            ForwardBody::Empty => false,
            ForwardBody::Shared(shared) => shared.seen.load(Ordering::Relaxed) > shared.max,
        }
    }

    /// Another handle on the same body for the next attempt, if no attempt has read from it
    /// yet; `None` means the body cannot be sent again.
    pub fn again(&self) -> Option<ForwardBody> {
        match self {
            ForwardBody::Empty => Some(ForwardBody::Empty),
            ForwardBody::Shared(shared) if !shared.started.load(Ordering::Acquire) => {
                Some(ForwardBody::Shared(Arc::clone(shared)))
            }
            ForwardBody::Shared(_) => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, ForwardBody::Empty)
    }
}

impl Body for ForwardBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ForwardBody::Empty => Poll::Ready(None),
            ForwardBody::Shared(shared) => {
                shared.started.store(true, Ordering::Release);
                let mut body = shared
                    .body
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let polled = match body.as_mut() {
                    Some(body) => Pin::new(body).poll_frame(cx),
                    None => Poll::Ready(None),
                };
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    let len = frame.data_ref().map_or(0, |data| data.len() as u64);
                    if shared.seen.fetch_add(len, Ordering::Relaxed) + len > shared.max {
                        return Poll::Ready(Some(Err(format!(
                            "the request body is over max_body_size ({} bytes)",
                            shared.max
                        )
                        .into())));
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, ForwardBody::Empty)
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ForwardBody::Empty => SizeHint::with_exact(0),
            ForwardBody::Shared(shared) => shared.hint,
        }
    }
}

/// How backend connections are made and kept.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub connect_timeout: Duration,
    /// Idle connections kept per backend and worker.
    pub max_idle_per_backend: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

/// Why a backend connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The backend refused, reset or did not answer: it counts against the backend's health.
    #[error("connect to {backend}: {source}")]
    Backend {
        backend: SocketAddr,
        source: io::Error,
    },
    #[error("connect to {backend}: no answer within {after:?}")]
    Timeout {
        backend: SocketAddr,
        after: Duration,
    },
    /// This node could not open the connection (out of descriptors or local ports): not the
    /// backend's fault.
    #[error("connect to {backend}: {source} (a limit of this node, not the backend)")]
    Local {
        backend: SocketAddr,
        source: io::Error,
    },
}

impl ConnectError {
    /// A failed connect to `backend`: the backend's fault, or this node's (out of descriptors
    /// or local ports).
    pub fn classify(backend: SocketAddr, source: io::Error) -> Self {
        if crate::backends::health::is_local_limit(&source) {
            ConnectError::Local { backend, source }
        } else {
            ConnectError::Backend { backend, source }
        }
    }

    /// Whether the backend is to blame (and marked down).
    pub fn is_backend_fault(&self) -> bool {
        !matches!(self, ConnectError::Local { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_is_not_the_backends_fault() {
        let error = ConnectError::Local {
            backend: "198.18.0.102:80".parse().expect("addr"),
            source: io::Error::from_raw_os_error(libc::EMFILE),
        };
        assert!(!error.is_backend_fault());
        let local =
            |errno| crate::backends::health::is_local_limit(&io::Error::from_raw_os_error(errno));
        assert!(local(libc::EADDRNOTAVAIL));
        assert!(!local(libc::ECONNREFUSED));
    }
}

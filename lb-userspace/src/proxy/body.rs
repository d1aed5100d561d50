//! The two body types of the engine, both streaming (nothing is buffered whole):
//! - [`ForwardBody`], a client's request body on its way to a backend. It can be lent to an
//!   attempt and taken back if that attempt never started reading it (the connect failed), so
//!   the request can go to the next backend with its body intact.
//! - [`ResponseBody`], what the client gets: the backend's body or a short local answer, with a
//!   [`Finish`] hook that runs once the response is done (or abandoned): access log, counters.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::backend::BackendConn;

/// A request body as sent to a backend.
#[derive(Debug)]
pub enum ForwardBody {
    Empty,
    Shared(Arc<SharedBody>),
}

/// A client's body that several attempts can hold in turn.
#[derive(Debug)]
pub struct SharedBody {
    body: Mutex<Option<Incoming>>,
    started: AtomicBool,
    hint: SizeHint,
}

impl ForwardBody {
    /// Wraps a client's body; an empty one needs no sharing.
    pub fn new(body: Incoming) -> Self {
        if body.is_end_stream() {
            return ForwardBody::Empty;
        }
        let hint = body.size_hint();
        ForwardBody::Shared(Arc::new(SharedBody {
            body: Mutex::new(Some(body)),
            started: AtomicBool::new(false),
            hint,
        }))
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ForwardBody::Empty => Poll::Ready(None),
            ForwardBody::Shared(shared) => {
                shared.started.store(true, Ordering::Release);
                let mut body = shared
                    .body
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                match body.as_mut() {
                    Some(body) => Pin::new(body).poll_frame(cx),
                    None => Poll::Ready(None),
                }
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

/// Runs when a response is finished or dropped, with the body bytes sent.
pub trait Finish: Send + Sync + 'static {
    fn finish(&mut self, bytes: u64);
}

/// A response body as sent to the client.
pub struct ResponseBody {
    inner: Inner,
    bytes: u64,
    finish: Option<Box<dyn Finish>>,
}

enum Inner {
    /// The backend's body and the connection it comes on: polled here, in the client's task,
    /// and back to the worker's pool once the body has been read to its end.
    Backend {
        body: Incoming,
        conn: Option<BackendConn>,
    },
    Local(Option<Bytes>),
}

impl ResponseBody {
    pub fn backend(body: Incoming, conn: BackendConn, finish: Box<dyn Finish>) -> Self {
        ResponseBody {
            inner: Inner::Backend {
                body,
                conn: Some(conn),
            },
            bytes: 0,
            finish: Some(finish),
        }
    }

    pub fn local(text: impl Into<Bytes>, finish: Option<Box<dyn Finish>>) -> Self {
        let text = text.into();
        ResponseBody {
            inner: Inner::Local((!text.is_empty()).then_some(text)),
            bytes: 0,
            finish,
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(mut finish) = self.finish.take() {
            finish.finish(self.bytes);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Backend { body, conn } => poll_backend(body, conn, cx),
            Inner::Local(text) => Poll::Ready(text.take().map(|text| Ok(Frame::data(text)))),
        };
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Backend { body, .. } => body.is_end_stream(),
            Inner::Local(text) => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Backend { body, .. } => body.size_hint(),
            Inner::Local(text) => SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64)),
        }
    }
}

/// The next frame of a backend's body, driving its connection as needed: the body asks for
/// data, the connection reads it from the socket, the body hands it over. At the end of the
/// body the connection goes back to the pool; if the body is dropped before, so is the
/// connection (hyper cannot reuse a connection with a message half read).
fn poll_backend(
    body: &mut Incoming,
    conn: &mut Option<BackendConn>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
    let mut polled = Pin::new(&mut *body).poll_frame(cx);
    if polled.is_pending() {
        if let Some(connection) = conn.as_mut() {
            if let Some(Err(error)) = connection.drive(cx) {
                // The body sees the same error on its next poll; say it now.
                *conn = None;
                return Poll::Ready(Some(Err(error)));
            }
        }
        polled = Pin::new(&mut *body).poll_frame(cx);
    }
    // hyper stops polling a body once it says it has ended (a known length all read), so
    // the connection is released on the last frame, not on the `None` after it.
    let ended = match &polled {
        Poll::Ready(None) => true,
        Poll::Ready(Some(Ok(_))) => body.is_end_stream(),
        _ => false,
    };
    if ended {
        if let Some(connection) = conn.take() {
            connection.release(cx);
        }
    }
    polled
}

//! [`ResponseBody`], what an HTTP/2 client gets: the backend's body (streaming, nothing is
//! buffered whole) or a short local answer, with a [`Finish`] hook that runs once the
//! response is done (or abandoned): access log, counters. The request body on its way to the
//! backend is [`super::backend::ForwardBody`].

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::backend::BackendConn;

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

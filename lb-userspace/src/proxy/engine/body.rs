//! [`ResponseBody`], what an HTTP/2 client gets: the backend's body (streaming, nothing is
//! buffered whole) or a short local answer, with a [`Finish`] hook that runs once the
//! response is done (or abandoned): access log, counters. The request body on its way to the
//! backend is [`super::backend::ForwardBody`].

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::h1::client::{BoxError, RawBody};

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
    /// The backend's body, read from its connection in the client stream's task.
    Backend(RawBody),
    /// The body of a backend that hyper's client reaches (h2c, https, h2), trailers included.
    Hyper(Incoming),
    Local(Option<Bytes>),
}

impl ResponseBody {
    pub fn backend(body: RawBody, finish: Box<dyn Finish>) -> Self {
        ResponseBody {
            inner: Inner::Backend(body),
            bytes: 0,
            finish: Some(finish),
        }
    }

    pub fn hyper(body: Incoming, finish: Box<dyn Finish>) -> Self {
        ResponseBody {
            inner: Inner::Hyper(body),
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
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Backend(body) => Pin::new(body).poll_frame(cx),
            Inner::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(BoxError::from))),
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
            Inner::Backend(body) => body.is_end_stream(),
            Inner::Hyper(body) => body.is_end_stream(),
            Inner::Local(text) => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Backend(body) => body.size_hint(),
            Inner::Hyper(body) => body.size_hint(),
            Inner::Local(text) => SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64)),
        }
    }
}

//! [`ResponseBody`], what an HTTP/2 client gets: the backend's body (streaming, nothing is
//! buffered whole) or a short local answer, with a [`Finish`] hook that runs once the
//! response is done (or abandoned): access log, counters. The request body on its way to the
//! backend is [`super::backend::ForwardBody`].
//!
//! The body also keeps the two inactivity timeouts of a response in flight: a backend that
//! sends nothing for the server timeout ends the body with an error (hyper resets the stream;
//! the backend is counted as failed), and each frame handed to hyper and not asked for again
//! is reported to the connection's [`ConnActivity`], whose client I/O closes a connection whose
//! client takes nothing for the client timeout.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::guard::ConnActivity;
use super::h1::client::{BoxError, RawBody};

/// Runs when a response is finished or dropped, with the body bytes sent.
pub trait Finish: Send + Sync + 'static {
    fn finish(&mut self, bytes: u64);
    /// The backend sent nothing for the server timeout in the middle of the body.
    fn backend_stalled(&mut self) {}
    /// The client connection's activity, told of frames waiting for the client.
    fn activity(&self) -> Option<&ConnActivity> {
        None
    }
}

/// A response body as sent to the client.
pub struct ResponseBody {
    inner: Inner,
    bytes: u64,
    finish: Option<Box<dyn Finish>>,
    /// A frame was handed to hyper and the next one has not been asked for yet.
    handed: bool,
    /// Waiting on the backend since `server_timer` was last set.
    waiting_backend: bool,
    server_timeout: Duration,
    /// Made the first time the backend makes the body wait.
    server_timer: Option<Pin<Box<Sleep>>>,
    /// The body ended with an error of ours (not the client's doing).
    failed: bool,
}

enum Inner {
    /// The backend's body, read from its connection in the client stream's task.
    Backend(RawBody),
    /// The body of a backend that hyper's client reaches (h2c, https, h2), trailers included.
    Hyper(Incoming),
    Local(Option<Bytes>),
}

impl ResponseBody {
    fn new(inner: Inner, finish: Option<Box<dyn Finish>>, server_timeout: Duration) -> Self {
        ResponseBody {
            inner,
            bytes: 0,
            finish,
            handed: false,
            waiting_backend: false,
            server_timeout,
            server_timer: None,
            failed: false,
        }
    }

    /// A plain HTTP/1.1 backend's body; `server_timeout` bounds each wait for it.
    pub fn backend(body: RawBody, finish: Box<dyn Finish>, server_timeout: Duration) -> Self {
        Self::new(Inner::Backend(body), Some(finish), server_timeout)
    }

    /// The body of a backend reached through hyper's client.
    pub fn hyper(body: Incoming, finish: Box<dyn Finish>, server_timeout: Duration) -> Self {
        Self::new(Inner::Hyper(body), Some(finish), server_timeout)
    }

    pub fn local(text: impl Into<Bytes>, finish: Option<Box<dyn Finish>>) -> Self {
        let text = text.into();
        let inner = Inner::Local((!text.is_empty()).then_some(text));
        Self::new(inner, finish, Duration::MAX)
    }

    fn activity(&self) -> Option<&ConnActivity> {
        self.finish.as_deref().and_then(|finish| finish.activity())
    }

    /// The client asked for more (or the body is gone): what was handed has been taken.
    fn taken(&mut self) {
        if std::mem::take(&mut self.handed) {
            if let Some(activity) = self.activity() {
                activity.taken_by_client();
            }
        }
    }

    /// The backend has nothing yet: it has the server timeout from the first such wait.
    fn poll_server_timeout(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let limit = self.server_timeout;
        let Some(deadline) = Instant::now().checked_add(limit) else {
            return Poll::Pending;
        };
        let timer = self
            .server_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.waiting_backend {
            self.waiting_backend = true;
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        self.taken();
        if !self.failed && !self.is_end_stream() {
            // hyper drops an unfinished body when the client resets its stream.
            if let Some(activity) = self.activity() {
                activity.stream_cancelled();
            }
        }
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
        this.taken();
        let polled = match &mut this.inner {
            Inner::Backend(body) => Pin::new(body).poll_frame(cx),
            Inner::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(BoxError::from))),
            Inner::Local(text) => Poll::Ready(text.take().map(|text| Ok(Frame::data(text)))),
        };
        match &polled {
            Poll::Ready(Some(Err(_))) => this.failed = true,
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting_backend = false;
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                if !this.is_end_stream() {
                    this.handed = true;
                    if let Some(activity) = this.activity() {
                        activity.handed_to_client();
                    }
                }
            }
            Poll::Pending if this.poll_server_timeout(cx).is_ready() => {
                if let Some(finish) = this.finish.as_deref_mut() {
                    finish.backend_stalled();
                }
                this.inner = Inner::Local(None);
                this.failed = true;
                return Poll::Ready(Some(Err(
                    "the backend sent nothing of the body within the server timeout".into(),
                )));
            }
            _ => {}
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

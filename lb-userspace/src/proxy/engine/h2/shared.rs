//! What an HTTP/2 connection's task shares with the work it drives: which streams were woken
//! ([`StreamWaker`]: each stream's future and body is polled with a waker of its own, so a
//! wake-up polls that stream alone, in the connection's task), and the request body bytes the
//! backend side has taken ([`RequestBody`]), whose window goes back to the client.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use futures::task::AtomicWaker;
use hyper::body::{Body, Frame, SizeHint};

use crate::proxy::engine::h1::client::BoxError;

/// Shared between a connection's task and its streams' wakers and request bodies.
#[derive(Default)]
pub struct ConnShared {
    pending: Mutex<Pending>,
    /// The connection's task.
    task: AtomicWaker,
}

/// What the connection's task has to look at on its next turn.
#[derive(Default)]
pub struct Pending {
    /// Streams woken since the last turn.
    pub woken: Vec<u32>,
    /// Request body bytes taken per stream (their flow-control window goes back to the client).
    pub taken: Vec<(u32, u32)>,
}

impl ConnShared {
    pub fn register(&self, waker: &Waker) {
        self.task.register(waker);
    }

    /// What happened since the last call, swapped with `into` (emptied first), so neither side
    /// allocates in steady state.
    pub fn take(&self, into: &mut Pending) {
        into.woken.clear();
        into.taken.clear();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut *pending, into);
    }

    fn woken(&self, stream: u32) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .woken
            .push(stream);
        self.task.wake();
    }

    fn taken(&self, stream: u32, bytes: u32) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .taken
            .push((stream, bytes));
        self.task.wake();
    }
}

/// A stream's waker: wakes the connection's task and says which stream to poll.
pub struct StreamWaker {
    stream: u32,
    /// Already in the woken list (cleared as the stream is polled).
    queued: AtomicBool,
    shared: Arc<ConnShared>,
}

impl StreamWaker {
    pub fn new(stream: u32, shared: Arc<ConnShared>) -> Arc<StreamWaker> {
        Arc::new(StreamWaker {
            stream,
            queued: AtomicBool::new(false),
            shared,
        })
    }

    /// The stream is about to be polled: a wake-up from now on queues it again.
    pub fn polling(&self) {
        self.queued.store(false, Ordering::Release);
    }
}

impl Wake for StreamWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.shared.woken(self.stream);
        }
    }
}

/// A request body as the connection receives it, on its way to the backend.
pub struct RequestBody {
    shared: Arc<BodyShared>,
    hint: SizeHint,
}

/// The body between the connection (which adds DATA) and the side that sends it on.
pub struct BodyShared {
    stream: u32,
    conn: Arc<ConnShared>,
    state: Mutex<BodyState>,
}

#[derive(Default)]
struct BodyState {
    chunks: VecDeque<Bytes>,
    /// END_STREAM was received.
    ended: bool,
    trailers: Option<http::HeaderMap>,
    /// The stream was reset or the connection lost before the body ended.
    failed: Option<&'static str>,
    /// Nobody will read the rest (the request is over): DATA is given back at once.
    abandoned: bool,
    reader: Option<Waker>,
}

impl BodyShared {
    pub fn new(stream: u32, conn: Arc<ConnShared>) -> Arc<BodyShared> {
        Arc::new(BodyShared {
            stream,
            conn,
            state: Mutex::new(BodyState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BodyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// DATA from the client. Returns the data back if nobody will read it, for its window to
    /// be given back at once.
    pub fn push(&self, data: Bytes, end: bool) -> Option<Bytes> {
        let mut state = self.lock();
        if end {
            state.ended = true;
        }
        let unread = if state.abandoned {
            Some(data)
        } else {
            if !data.is_empty() {
                state.chunks.push_back(data);
            }
            None
        };
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
        unread
    }

    pub fn trailers(&self, trailers: http::HeaderMap) {
        let mut state = self.lock();
        state.ended = true;
        state.trailers = Some(trailers);
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
    }

    /// The stream ended before its body did. Returns the bytes received and never read, whose
    /// window goes back to the connection.
    pub fn fail(&self, why: &'static str) -> usize {
        let mut state = self.lock();
        if !state.ended && state.failed.is_none() {
            state.failed = Some(why);
        }
        let unread = state.chunks.drain(..).map(|c| c.len()).sum();
        state.abandoned = true;
        if let Some(reader) = state.reader.take() {
            reader.wake();
        }
        unread
    }
}

impl RequestBody {
    /// `length`: the request's Content-Length, if it has one.
    pub fn new(shared: Arc<BodyShared>, length: Option<u64>) -> Self {
        let hint = length.map_or_else(SizeHint::default, SizeHint::with_exact);
        RequestBody { shared, hint }
    }
}

impl Drop for RequestBody {
    /// Whatever comes now is not read: its window goes back to the client at once.
    fn drop(&mut self) {
        let unread: usize = {
            let mut state = self.shared.lock();
            state.abandoned = true;
            state.chunks.drain(..).map(|c| c.len()).sum()
        };
        if unread > 0 {
            self.shared.conn.taken(
                self.shared.stream,
                u32::try_from(unread).unwrap_or(u32::MAX),
            );
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let shared = &self.shared;
        let mut state = shared.lock();
        if let Some(data) = state.chunks.pop_front() {
            drop(state);
            shared
                .conn
                .taken(shared.stream, u32::try_from(data.len()).unwrap_or(u32::MAX));
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(why) = state.failed {
            return Poll::Ready(Some(Err(why.into())));
        }
        if let Some(trailers) = state.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if state.ended {
            return Poll::Ready(None);
        }
        state.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(body: &mut RequestBody) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let waker = Waker::noop();
        Pin::new(body).poll_frame(&mut Context::from_waker(waker))
    }

    #[test]
    fn a_body_gives_its_data_in_order_and_reports_what_was_taken() {
        let conn = Arc::new(ConnShared::default());
        let shared = BodyShared::new(3, Arc::clone(&conn));
        let mut body = RequestBody::new(Arc::clone(&shared), Some(5));
        assert!(poll(&mut body).is_pending());
        assert!(shared.push(Bytes::from_static(b"he"), false).is_none());
        assert!(shared.push(Bytes::from_static(b"llo"), true).is_none());
        let mut got = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = poll(&mut body) {
            got.extend_from_slice(&frame.into_data().expect("data"));
        }
        assert_eq!(got, b"hello");
        let mut pending = Pending::default();
        conn.take(&mut pending);
        assert_eq!(pending.taken, vec![(3, 2), (3, 3)]);
    }

    #[test]
    fn a_reset_stream_ends_its_body_in_an_error_and_gives_back_what_was_unread() {
        let conn = Arc::new(ConnShared::default());
        let shared = BodyShared::new(1, Arc::clone(&conn));
        let mut body = RequestBody::new(Arc::clone(&shared), None);
        shared.push(Bytes::from_static(b"abc"), false);
        assert_eq!(shared.fail("reset"), 3);
        assert!(matches!(poll(&mut body), Poll::Ready(Some(Err(_)))));
        // Data after the reader went is handed back for its window.
        drop(body);
        assert_eq!(
            shared.push(Bytes::from_static(b"de"), false).as_deref(),
            Some(&b"de"[..])
        );
    }

    #[test]
    fn a_stream_waker_queues_its_stream_once_until_polled() {
        let conn = Arc::new(ConnShared::default());
        let waker = StreamWaker::new(5, Arc::clone(&conn));
        let as_waker = Waker::from(Arc::clone(&waker));
        as_waker.wake_by_ref();
        as_waker.wake_by_ref();
        let mut pending = Pending::default();
        conn.take(&mut pending);
        assert_eq!(pending.woken, vec![5]);
        waker.polling();
        as_waker.wake_by_ref();
        conn.take(&mut pending);
        assert_eq!(pending.woken, vec![5]);
    }
}

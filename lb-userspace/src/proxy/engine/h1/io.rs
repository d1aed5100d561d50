//! The HTTP/1.1 engine's I/O helpers: the worker's spare buffers for backend responses, reads
//! from the client (onto the stack first) and of a backend's response head, and [`Prefixed`],
//! a client's I/O with the bytes already read put back in front for hyper.

use std::cell::RefCell;

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};

use super::head::ResponseHead;
use super::{BACKEND_READ, CLIENT_READ, HEAD_READ, SPARE_BUFFERS};

thread_local! {
    /// This worker's spare buffers for reading backends' responses.
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn take_buffer(capacity: usize) -> BytesMut {
    let mut buffer = SPARE
        .with(|spare| spare.borrow_mut().pop())
        .unwrap_or_default();
    buffer.clear();
    buffer.reserve(capacity);
    buffer
}

/// Halves this worker's spare buffers, called once a second: under load they come back as fast
/// as they are used, and once the load is gone they go within seconds (64 spares of up to
/// 128 KiB each had kept 5 to 10 MiB after a burst of large answers).
pub fn shrink_spare_buffers() {
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        let keep = spare.len() / 2;
        spare.truncate(keep);
        if keep == 0 {
            *spare = Vec::new();
        }
    });
}

pub(super) fn give_buffer(buffer: BytesMut) {
    // Only buffers that are not shared and not oversized are worth keeping.
    if buffer.capacity() > 4 * BACKEND_READ {
        return;
    }
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < SPARE_BUFFERS {
            spare.push(buffer);
        }
    });
}

/// Reads what the client has sent into `buf`. The bytes land on the stack first, so a
/// connection waiting for its next request holds no buffer.
pub(super) async fn read_some<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); CLIENT_READ];
        let mut chunk = tokio::io::ReadBuf::uninit(&mut chunk);
        std::task::ready!(std::pin::Pin::new(&mut *io).poll_read(cx, &mut chunk))?;
        buf.extend_from_slice(chunk.filled());
        std::task::Poll::Ready(Ok(chunk.filled().len()))
    })
    .await
}

/// Reads until a complete response head is in `buf`; returns it (and leaves the bytes after
/// it in `buf`), or `None` if the connection closed first or the head is malformed.
pub(in crate::proxy::engine) async fn read_response_head(
    stream: &mut tokio::net::TcpStream,
    buf: &mut BytesMut,
) -> Option<ResponseHead> {
    loop {
        if !buf.is_empty() {
            match ResponseHead::parse(buf) {
                Ok(Some((head, len))) => {
                    buf.advance(len);
                    return Some(head);
                }
                Ok(None) => {}
                Err(_) => return None,
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(HEAD_READ);
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// A client's I/O with bytes already read from it put back in front (for hyper, when the
/// connection turned out to be HTTP/2).
pub struct Prefixed<I> {
    prefix: bytes::Bytes,
    inner: I,
}

impl<I> Prefixed<I> {
    pub fn new(inner: I, prefix: bytes::Bytes) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

//! An HTTP/2 client connection's writes, gathered until its task runs again.
//!
//! The h2 crate flushes its socket after every DATA frame that it does not copy (any payload
//! of 256 bytes or more), so each answer of a loaded connection took one `writev` of its own
//! and one TCP segment: 1.0 writes per request for 1 KiB answers, where HAProxy's HTTP/2 mux
//! writes once per pass of its event loop (0.2 per request, measured with `perf stat` on
//! loopback). [`BatchedWrites`] copies writes into one buffer and puts a flush off until the
//! connection's task is next polled (it asks to be): by then the streams whose backends
//! answered in the same round have queued their frames too, and they leave in one write.
//! A write that does not fit goes out at once, with what was gathered, in one `writev`.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What is gathered before a write goes out at once (HAProxy's tune.bufsize).
const BATCH: usize = 16 * 1024;

/// The caller's slices sent beside the gathered bytes in one `writev` (h2 passes two).
const MAX_SLICES: usize = 8;

/// A connection's I/O whose writes wait for the end of its task's turn; see the module doc.
pub struct BatchedWrites<I> {
    inner: I,
    /// Bytes accepted and not yet written; no allocation while empty (an idle connection
    /// holds none).
    gathered: Vec<u8>,
    /// A flush was asked for and put off: the next read (the task's next turn) writes.
    flush_due: bool,
}

impl<I> BatchedWrites<I> {
    pub fn new(inner: I) -> Self {
        BatchedWrites {
            inner,
            gathered: Vec::new(),
            flush_due: false,
        }
    }
}

impl<I: AsyncWrite + Unpin> BatchedWrites<I> {
    /// Writes out what was gathered.
    fn poll_write_gathered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.gathered.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.gathered))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.gathered.drain(..n);
        }
        self.gathered = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Writes the gathered bytes and then `slices` in one system call where the socket takes
    /// it; returns how much of `slices` went.
    fn poll_write_through(
        &mut self,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            if self.gathered.is_empty() {
                return Pin::new(&mut self.inner).poll_write_vectored(cx, slices);
            }
            let mut all = [IoSlice::new(&[]); MAX_SLICES + 1];
            all[0] = IoSlice::new(&self.gathered);
            let count = slices.len().min(MAX_SLICES);
            all[1..=count].copy_from_slice(&slices[..count]);
            let n = ready!(Pin::new(&mut self.inner).poll_write_vectored(cx, &all[..=count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if n < self.gathered.len() {
                self.gathered.drain(..n);
                continue;
            }
            let theirs = n - self.gathered.len();
            self.gathered = Vec::new();
            if theirs > 0 {
                return Poll::Ready(Ok(theirs));
            }
        }
    }

    fn gather(&mut self, slices: &[IoSlice<'_>]) -> usize {
        if self.gathered.capacity() == 0 {
            self.gathered.reserve_exact(BATCH);
        }
        let mut total = 0;
        for slice in slices {
            self.gathered.extend_from_slice(slice);
            total += slice.len();
        }
        total
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for BatchedWrites<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // h2 reads first on each turn of the connection's task: the flush put off in the
        // last turn happens now. A full socket wakes the task when it drains.
        if this.flush_due {
            if let Poll::Ready(written) = this.poll_write_gathered(cx) {
                written?;
                this.flush_due = false;
                if let Poll::Ready(flushed) = Pin::new(&mut this.inner).poll_flush(cx) {
                    flushed?;
                }
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for BatchedWrites<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = slices.iter().map(|slice| slice.len()).sum();
        if this.gathered.len() + total <= BATCH {
            return Poll::Ready(Ok(this.gather(slices)));
        }
        this.poll_write_through(cx, slices)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.gathered.is_empty() {
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        if !this.flush_due {
            this.flush_due = true;
            // The task runs again after the tasks already woken (the other streams whose
            // answers came in this round), and writes then.
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_gathered(cx))?;
        this.flush_due = false;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the writes that reach the socket.
    struct CountingSocket {
        written: Vec<u8>,
        writes: usize,
        /// Bytes taken per write at most (a socket with little room).
        room: usize,
    }

    impl AsyncRead for CountingSocket {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for CountingSocket {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let n = buf.len().min(this.room);
            this.written.extend_from_slice(&buf[..n]);
            this.writes += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            slices: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let mut n = 0;
            for slice in slices {
                let take = slice.len().min(this.room - n);
                this.written.extend_from_slice(&slice[..take]);
                n += take;
            }
            this.writes += 1;
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn socket(room: usize) -> BatchedWrites<CountingSocket> {
        BatchedWrites::new(CountingSocket {
            written: Vec::new(),
            writes: 0,
            room,
        })
    }

    #[tokio::test]
    async fn answers_flushed_in_one_turn_leave_in_one_write_on_the_next() {
        let mut io = socket(usize::MAX);
        for answer in 0..8u8 {
            io.write_all(&[answer; 1033]).await.unwrap();
            io.flush().await.unwrap();
        }
        assert_eq!(
            io.inner.writes, 0,
            "nothing written before the task's next turn"
        );
        let mut none = [0u8; 16];
        let read = io.read(&mut none).await.unwrap();
        assert_eq!(read, 0);
        assert_eq!(io.inner.writes, 1);
        assert_eq!(io.inner.written.len(), 8 * 1033);
        assert!(io.inner.written[..1033].iter().all(|&b| b == 0));
        assert!(io.inner.written[7 * 1033..].iter().all(|&b| b == 7));
        assert_eq!(
            io.gathered.capacity(),
            0,
            "an idle connection keeps no buffer"
        );
    }

    #[tokio::test]
    async fn a_large_write_leaves_at_once_behind_what_was_gathered() {
        let mut io = socket(usize::MAX);
        io.write_all(b"head").await.unwrap();
        let body = vec![b'x'; BATCH];
        io.write_all(&body).await.unwrap();
        assert_eq!(
            io.inner.writes, 1,
            "gathered bytes and the large one in one writev"
        );
        assert_eq!(&io.inner.written[..4], b"head");
        assert_eq!(io.inner.written.len(), 4 + BATCH);
    }

    #[tokio::test]
    async fn a_socket_taking_part_of_the_batch_loses_nothing_and_keeps_the_order() {
        let mut io = socket(100);
        io.write_all(&[1u8; 1000]).await.unwrap();
        io.write_all(&vec![2u8; BATCH]).await.unwrap();
        io.write_all(&[3u8; 10]).await.unwrap();
        io.shutdown().await.unwrap();
        let written = &io.inner.written;
        assert_eq!(written.len(), 1000 + BATCH + 10);
        assert!(written[..1000].iter().all(|&b| b == 1));
        assert!(written[1000..1000 + BATCH].iter().all(|&b| b == 2));
        assert!(written[1000 + BATCH..].iter().all(|&b| b == 3));
    }
}

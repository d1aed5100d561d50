//! One HTTP/2 client connection, served from its own task: frames are read and answered here,
//! and each stream's request runs as a future polled in this same task with a waker of its
//! own ([`StreamWaker`]), as is its response body afterwards. A backend's answer therefore
//! reaches the client without a task hop, a channel or a lock, and the frames of every stream
//! that answered in one turn leave in one write.
//!
//! Flow control both ways (RFC 9113 5.2): a response's DATA goes out as the client's windows
//! allow, the rest is held per stream (one body frame at most: the body is not asked for more
//! until that is sent, which keeps the client timeout's account of a client that takes
//! nothing); a request body's window goes back to the client as the backend side takes it.
//! Protocol errors end a stream (RST_STREAM) or the connection (GOAWAY) as RFC 9113 section
//! 5.4 says.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::frame::{self, flag, kind, setting, Header, Reason};
use super::hpack;
use super::shared::{BodyShared, ConnShared, Pending, RequestBody, StreamWaker};
use crate::proxy::engine::backend::ClientBody;
use crate::proxy::engine::body::ResponseBody;
use crate::proxy::engine::connection::Connection;
use crate::proxy::engine::forward;
use crate::proxy::engine::headers;

/// Streams one client may have open at once (Envoy's advice for a proxy at the edge: 100).
const MAX_STREAMS: usize = 100;
/// The window a request body starts with, per stream and for the whole connection.
const STREAM_WINDOW: u32 = 256 * 1024;
const CONN_WINDOW: u32 = 1024 * 1024;
/// Window given back once this much of it was taken (fewer WINDOW_UPDATE frames).
const WINDOW_RETURN: u32 = 16 * 1024;
/// Output held before response bodies wait for the socket to take it.
const OUTPUT_HIGH: usize = 64 * 1024;
/// DATA up to this size is copied into the output; larger goes out as it came (writev).
const COPY_DATA: usize = 4 * 1024;
/// What a read takes at most.
const READ: usize = 16 * 1024;
/// Turns of the loop before the task lets others run.
const TURNS: usize = 32;
/// A header block (with its CONTINUATION frames) larger than this ends the connection.
const MAX_BLOCK: usize = 256 * 1024;
/// While streams are open, a client that sent nothing for this long is PINGed, and its
/// connection closed as dead if it then sends nothing for as long again (hyper's
/// keep-alive, which this server replaced, did the same).
const PING_INTERVAL: Duration = Duration::from_secs(20);
/// The opaque data of our PINGs.
const PING_DATA: [u8; 8] = *b"tandem\0\0";

type Handling = Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>;

/// Serves an HTTP/2 connection until it ends, or until shutdown (GOAWAY, then the streams in
/// flight finish) and the force-close after it. `read`: bytes already read from the client
/// (the preface first).
pub async fn serve<I>(io: I, read: Bytes, conn: Arc<Connection>, shutdown: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let engine = Arc::clone(&conn.engine);
    let max_header_size = engine.max_header_size;
    let mut server = Box::new(Server::new(io, read, conn, max_header_size));
    tokio::select! {
        () = std::future::poll_fn(|cx| server.poll_run(cx)) => return,
        () = shutdown.cancelled() => {}
    }
    server.go_away(Reason::NoError);
    tokio::select! {
        () = std::future::poll_fn(|cx| server.poll_run(cx)) => {}
        () = engine.force_close.cancelled() => {}
    }
}

struct Server<I> {
    io: I,
    conn: Arc<Connection>,
    shared: Arc<ConnShared>,
    /// Filled by `shared` each turn (kept to reuse its vectors).
    pending: Pending,
    input: BytesMut,
    preface_seen: bool,
    settings_seen: bool,
    out: Output,
    decoder: hpack::Decoder,
    /// Where decoded values are copied, to be shared by the requests' headers without an
    /// allocation each (one per few KiB of headers).
    arena: BytesMut,
    /// Where response heads are encoded (reused).
    block: Vec<u8>,
    max_header_size: usize,
    /// A header block waiting for its CONTINUATION frames.
    continuation: Option<Continuation>,
    streams: HashMap<u32, Stream>,
    /// The highest stream the client opened.
    last_stream: u32,
    /// The client's SETTINGS.
    peer_window: i64,
    peer_max_frame: usize,
    /// What the client lets us send on the connection, and what it may still send us.
    send_window: i64,
    recv_window: i64,
    /// Connection window taken and not yet given back.
    recv_returned: u32,
    /// Streams with data held for want of connection window, or of room in the output.
    blocked: Vec<u32>,
    /// GOAWAY sent: no new stream, the connection ends with its last stream.
    going_away: bool,
    /// A connection error was sent: the connection ends once it is written.
    closing: bool,
    /// The client sent GOAWAY.
    peer_going_away: bool,
    /// Made when the first stream opens (see [`PING_INTERVAL`]).
    keepalive: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes came from the client since the keep-alive timer last fired.
    heard: bool,
    /// A PING of ours waits for its answer.
    ping_out: bool,
}

struct Continuation {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

struct Stream {
    waker: Arc<StreamWaker>,
    task_waker: Waker,
    state: StreamState,
    /// The client may still send on this stream (no END_STREAM yet).
    receiving: bool,
    /// What the client may still send on this stream; taken and not yet given back.
    recv_window: i64,
    recv_returned: u32,
    /// The request body, while the client sends it.
    body: Option<Arc<BodyShared>>,
    /// Content-Length of the request, and the DATA received.
    declared: Option<u64>,
    received: u64,
    send_window: i64,
    /// Data the windows did not let out yet, and whether the body ends with it.
    held: Option<(Bytes, bool)>,
}

// The body is what a stream holds for most of its life: boxing it would cost an allocation
// per request to save a few hundred bytes per open stream.
#[allow(clippy::large_enum_variant)]
enum StreamState {
    Handling(Handling),
    Sending(ResponseBody),
    /// The response went out whole.
    Sent,
}

impl<I> Server<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    fn new(io: I, read: Bytes, conn: Arc<Connection>, max_header_size: usize) -> Self {
        let mut out = Output::default();
        let mut settings = BytesMut::new();
        frame::write_settings(
            &mut settings,
            &[
                (setting::MAX_CONCURRENT_STREAMS, MAX_STREAMS as u32),
                (setting::INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (
                    setting::MAX_HEADER_LIST_SIZE,
                    u32::try_from(max_header_size).unwrap_or(u32::MAX),
                ),
            ],
        );
        frame::write_window_update(&mut settings, 0, CONN_WINDOW - frame::DEFAULT_WINDOW);
        out.copy(&settings);
        Server {
            io,
            conn,
            shared: Arc::new(ConnShared::default()),
            pending: Pending::default(),
            input: BytesMut::from(&read[..]),
            preface_seen: false,
            settings_seen: false,
            out,
            decoder: hpack::Decoder::new(4096),
            arena: BytesMut::new(),
            block: Vec::new(),
            max_header_size,
            continuation: None,
            streams: HashMap::new(),
            last_stream: 0,
            peer_window: i64::from(frame::DEFAULT_WINDOW),
            peer_max_frame: frame::DEFAULT_MAX_FRAME as usize,
            send_window: i64::from(frame::DEFAULT_WINDOW),
            recv_window: i64::from(CONN_WINDOW),
            recv_returned: 0,
            blocked: Vec::new(),
            going_away: false,
            closing: false,
            peer_going_away: false,
            keepalive: None,
            heard: false,
            ping_out: false,
        }
    }

    /// Runs the connection until it ends.
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.shared.register(cx.waker());
        if !self.preface_seen && !self.input.is_empty() {
            // Bytes read before this server took the connection (the preface, and often the
            // first requests with it).
            self.heard = true;
            if let Err(reason) = self.on_input() {
                self.connection_error(reason);
            }
        }
        for turn in 0..TURNS {
            // The streams' I/O spends this task's budget (tokio's cooperative scheduling):
            // once it is gone their sockets say Pending, so the task yields instead of turning.
            if turn > 0 && !tokio::task::coop::has_budget_remaining() {
                break;
            }
            let mut progress = false;
            // What the client sent.
            if !self.closing {
                match self.poll_read(cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(_)) => {
                        progress = true;
                        self.heard = true;
                        if let Err(reason) = self.on_input() {
                            self.connection_error(reason);
                        }
                    }
                    Poll::Pending => {}
                }
            }
            // What the streams did.
            self.shared.take(&mut self.pending);
            let (woken, taken) = (
                std::mem::take(&mut self.pending.woken),
                std::mem::take(&mut self.pending.taken),
            );
            for &(stream, bytes) in &taken {
                self.give_back(stream, bytes);
            }
            for &stream in &woken {
                progress = true;
                self.poll_stream(stream);
            }
            (self.pending.woken, self.pending.taken) = (woken, taken);
            self.flush_window_returns();
            // What goes to the client.
            let had_output = !self.out.is_empty();
            match self.poll_write(cx) {
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {
                    if had_output {
                        progress = true;
                        self.unblock();
                    }
                }
                Poll::Pending => {}
            }
            if self.out.is_empty() {
                if self.closing {
                    return Poll::Ready(());
                }
                if (self.going_away || self.peer_going_away) && self.streams.is_empty() {
                    return Poll::Ready(());
                }
            }
            if !progress {
                match self.poll_keepalive(cx) {
                    Poll::Ready(Some(())) => return Poll::Ready(()),
                    // A PING to write.
                    Poll::Ready(None) => continue,
                    Poll::Pending => {
                        if self.streams.is_empty() && self.out.is_empty() {
                            // An idle connection holds no buffers.
                            self.out.release();
                            self.arena = BytesMut::new();
                            self.block = Vec::new();
                            if self.input.is_empty() {
                                self.input = BytesMut::new();
                            }
                        }
                        return Poll::Pending;
                    }
                }
            }
        }
        // Others get their turn; this task comes back at once.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The keep-alive timer, while streams are open: `Ready(Some)` when the client is to be
    /// taken for dead, `Ready(None)` when a PING was queued.
    fn poll_keepalive(&mut self, cx: &mut Context<'_>) -> Poll<Option<()>> {
        if self.streams.is_empty() || self.closing {
            return Poll::Pending;
        }
        let timer = self
            .keepalive
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(PING_INTERVAL)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        timer
            .as_mut()
            .reset(tokio::time::Instant::now() + PING_INTERVAL);
        let heard = std::mem::take(&mut self.heard);
        if heard {
            // Polled once more, so the timer's new deadline wakes this task.
            return self.poll_keepalive(cx);
        }
        if self.ping_out {
            debug!(client = %self.conn.client, "HTTP/2 client did not answer a PING; closing");
            return Poll::Ready(Some(()));
        }
        self.ping_out = true;
        self.out
            .write(|b| frame::write_frame(b, kind::PING, 0, 0, &PING_DATA));
        Poll::Ready(None)
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.input.capacity() - self.input.len() < 1024 {
            self.input.reserve(READ);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.input)
    }

    /// Writes the output; Ready once all of it went.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out.is_empty() {
            return Poll::Ready(Ok(()));
        }
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); 32];
            let count = self.out.slices(&mut slices);
            let n = std::task::ready!(
                Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        std::task::ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    /// The output has room again: streams held for it (or for the connection window) try
    /// again.
    fn unblock(&mut self) {
        if self.blocked.is_empty() || self.out.len() >= OUTPUT_HIGH {
            return;
        }
        let blocked = std::mem::take(&mut self.blocked);
        for stream in blocked {
            self.poll_stream(stream);
        }
    }

    /// Every complete frame in the input.
    fn on_input(&mut self) -> Result<(), Reason> {
        if !self.preface_seen {
            if self.input.len() < frame::PREFACE.len() {
                return if frame::PREFACE.starts_with(&self.input) {
                    Ok(())
                } else {
                    Err(Reason::ProtocolError)
                };
            }
            if !self.input.starts_with(frame::PREFACE) {
                return Err(Reason::ProtocolError);
            }
            self.input.advance(frame::PREFACE.len());
            self.preface_seen = true;
        }
        // Taken out while its frames are handled, so they can be read in place; DATA alone
        // is split off (its payload goes on to the backend as it is).
        let mut input = std::mem::take(&mut self.input);
        let handled = self.on_frames(&mut input);
        if self.closing {
            input.clear();
        }
        self.input = input;
        handled
    }

    fn on_frames(&mut self, input: &mut BytesMut) -> Result<(), Reason> {
        while let Some(header) = Header::parse(input) {
            if header.length > frame::DEFAULT_MAX_FRAME as usize {
                return Err(Reason::FrameSizeError);
            }
            if input.len() < frame::HEADER_LEN + header.length {
                input.reserve(frame::HEADER_LEN + header.length - input.len());
                break;
            }
            if !self.settings_seen && header.kind != kind::SETTINGS {
                return Err(Reason::ProtocolError);
            }
            input.advance(frame::HEADER_LEN);
            if header.kind == kind::DATA && self.continuation.is_none() {
                let payload = input.split_to(header.length).freeze();
                self.on_data(header, &payload)?;
            } else {
                self.on_frame(header, &input[..header.length])?;
                input.advance(header.length);
            }
            if self.closing {
                break;
            }
        }
        Ok(())
    }

    fn on_frame(&mut self, header: Header, payload: &[u8]) -> Result<(), Reason> {
        if let Some(mut continuation) = self.continuation.take() {
            if header.kind != kind::CONTINUATION || header.stream != continuation.stream {
                return Err(Reason::ProtocolError);
            }
            if continuation.block.len() + payload.len() > MAX_BLOCK {
                return Err(Reason::EnhanceYourCalm);
            }
            continuation.block.extend_from_slice(payload);
            if header.flags & flag::END_HEADERS != 0 {
                let Continuation {
                    stream,
                    end_stream,
                    block,
                } = continuation;
                return self.on_header_block(stream, end_stream, &block);
            }
            self.continuation = Some(continuation);
            return Ok(());
        }
        match header.kind {
            // DATA in the middle of a header block.
            kind::DATA => Err(Reason::ProtocolError),
            kind::HEADERS => self.on_headers(header, payload),
            kind::PRIORITY => {
                if header.stream == 0 {
                    return Err(Reason::ProtocolError);
                }
                if payload.len() != 5 {
                    self.reset(header.stream, Reason::FrameSizeError);
                } else if frame::u31(payload) == Some(header.stream) {
                    self.reset(header.stream, Reason::ProtocolError);
                }
                Ok(())
            }
            kind::RST_STREAM => {
                if payload.len() != 4 {
                    return Err(Reason::FrameSizeError);
                }
                self.check_not_idle(header.stream)?;
                if let Some(stream) = self.streams.remove(&header.stream) {
                    self.close_stream(stream, "the client reset the stream");
                }
                Ok(())
            }
            kind::SETTINGS => self.on_settings(header, payload),
            kind::PUSH_PROMISE => Err(Reason::ProtocolError),
            kind::PING => {
                if header.stream != 0 {
                    return Err(Reason::ProtocolError);
                }
                if payload.len() != 8 {
                    return Err(Reason::FrameSizeError);
                }
                if header.flags & flag::ACK == 0 {
                    self.out
                        .write(|b| frame::write_frame(b, kind::PING, flag::ACK, 0, payload));
                } else {
                    self.ping_out = false;
                }
                Ok(())
            }
            kind::GOAWAY => {
                if header.stream != 0 {
                    return Err(Reason::ProtocolError);
                }
                self.peer_going_away = true;
                Ok(())
            }
            kind::WINDOW_UPDATE => self.on_window_update(header, payload),
            kind::CONTINUATION => Err(Reason::ProtocolError),
            // Unknown frame types are ignored (RFC 9113 4.1).
            _ => Ok(()),
        }
    }

    /// Frames other than HEADERS and PRIORITY may not name a stream never opened.
    fn check_not_idle(&self, stream: u32) -> Result<(), Reason> {
        if stream == 0 || stream > self.last_stream {
            return Err(Reason::ProtocolError);
        }
        Ok(())
    }

    fn on_settings(&mut self, header: Header, payload: &[u8]) -> Result<(), Reason> {
        if header.stream != 0 {
            return Err(Reason::ProtocolError);
        }
        if header.flags & flag::ACK != 0 {
            return if payload.is_empty() {
                Ok(())
            } else {
                Err(Reason::FrameSizeError)
            };
        }
        let entries = frame::settings(payload).ok_or(Reason::FrameSizeError)?;
        for (id, value) in entries {
            match id {
                setting::ENABLE_PUSH if value > 1 => return Err(Reason::ProtocolError),
                setting::INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > frame::MAX_WINDOW {
                        return Err(Reason::FlowControlError);
                    }
                    let delta = value - self.peer_window;
                    self.peer_window = value;
                    for stream in self.streams.values_mut() {
                        stream.send_window += delta;
                        if stream.send_window > frame::MAX_WINDOW {
                            return Err(Reason::FlowControlError);
                        }
                    }
                    if delta > 0 {
                        self.blocked.extend(self.streams.keys());
                    }
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME..=(1 << 24) - 1).contains(&value) {
                        return Err(Reason::ProtocolError);
                    }
                    self.peer_max_frame = value as usize;
                }
                // HEADER_TABLE_SIZE does not matter: our encoder never indexes.
                _ => {}
            }
        }
        self.settings_seen = true;
        self.out
            .copy(&[0, 0, 0, kind::SETTINGS, flag::ACK, 0, 0, 0, 0]);
        Ok(())
    }

    fn on_window_update(&mut self, header: Header, payload: &[u8]) -> Result<(), Reason> {
        if payload.len() != 4 {
            return Err(Reason::FrameSizeError);
        }
        let increment = i64::from(frame::u31(payload).ok_or(Reason::FrameSizeError)?);
        if header.stream == 0 {
            if increment == 0 {
                return Err(Reason::ProtocolError);
            }
            self.send_window += increment;
            if self.send_window > frame::MAX_WINDOW {
                return Err(Reason::FlowControlError);
            }
            let blocked = std::mem::take(&mut self.blocked);
            for stream in blocked {
                self.poll_stream(stream);
            }
            return Ok(());
        }
        self.check_not_idle(header.stream)?;
        let Some(stream) = self.streams.get_mut(&header.stream) else {
            return Ok(());
        };
        if increment == 0 {
            self.reset(header.stream, Reason::ProtocolError);
            return Ok(());
        }
        stream.send_window += increment;
        if stream.send_window > frame::MAX_WINDOW {
            self.reset(header.stream, Reason::FlowControlError);
            return Ok(());
        }
        self.poll_stream(header.stream);
        Ok(())
    }

    fn on_data(&mut self, header: Header, payload: &Bytes) -> Result<(), Reason> {
        self.check_not_idle(header.stream)?;
        let length = payload.len();
        let counted = i64::try_from(length).unwrap_or(i64::MAX);
        if counted > self.recv_window {
            return Err(Reason::FlowControlError);
        }
        self.recv_window -= counted;
        let data = frame::unpad(header.flags, payload).ok_or(Reason::ProtocolError)?;
        let padding = length - data.len();
        let end = header.flags & flag::END_STREAM != 0;
        let Some(stream) = self.streams.get_mut(&header.stream) else {
            // A stream closed already: its DATA still counts against the connection window.
            self.return_connection_window(length);
            return Ok(());
        };
        if !stream.receiving {
            self.return_connection_window(length);
            self.reset(header.stream, Reason::StreamClosed);
            return Ok(());
        }
        if counted > stream.recv_window {
            self.return_connection_window(length);
            self.reset(header.stream, Reason::FlowControlError);
            return Ok(());
        }
        stream.recv_window -= counted;
        stream.received += data.len() as u64;
        let overran = stream.declared.is_some_and(|d| stream.received > d);
        let short = end && stream.declared.is_some_and(|d| stream.received != d);
        if overran || short {
            self.return_connection_window(length);
            self.reset(header.stream, Reason::ProtocolError);
            return Ok(());
        }
        // Padding is never read: its window goes back now.
        let mut unread = padding;
        if end {
            stream.receiving = false;
        }
        match &stream.body {
            Some(body) => {
                let data = payload.slice_ref(data);
                if let Some(back) = body.push(data, end) {
                    unread += back.len();
                }
            }
            None => unread += data.len(),
        }
        if end {
            stream.body = None;
        }
        if unread > 0 {
            let bytes = u32::try_from(unread).unwrap_or(u32::MAX);
            self.give_back(header.stream, bytes);
        }
        self.finish_if_over(header.stream);
        Ok(())
    }

    fn on_headers(&mut self, header: Header, payload: &[u8]) -> Result<(), Reason> {
        let id = header.stream;
        if id == 0 {
            return Err(Reason::ProtocolError);
        }
        let mut block = frame::unpad(header.flags, payload).ok_or(Reason::ProtocolError)?;
        if header.flags & flag::PRIORITY != 0 {
            let (dependency, rest) = block.split_at_checked(5).ok_or(Reason::FrameSizeError)?;
            if frame::u31(dependency) == Some(id) {
                // A stream cannot depend on itself (RFC 9113 5.3.1); the block is not decoded,
                // so the connection cannot go on.
                return Err(Reason::ProtocolError);
            }
            block = rest;
        }
        let end_stream = header.flags & flag::END_STREAM != 0;
        if header.flags & flag::END_HEADERS == 0 {
            self.continuation = Some(Continuation {
                stream: id,
                end_stream,
                block: block.to_vec(),
            });
            return Ok(());
        }
        self.on_header_block(id, end_stream, block)
    }

    /// A complete header block: a new request, trailers of a request body, or one to
    /// decode and drop (the HPACK table must see every block).
    fn on_header_block(&mut self, id: u32, end_stream: bool, block: &[u8]) -> Result<(), Reason> {
        if id > self.last_stream {
            if id.is_multiple_of(2) {
                return Err(Reason::ProtocolError);
            }
            self.last_stream = id;
            let mut fields = Fields::new(self.max_header_size);
            self.decode(block, &mut fields)?;
            if self.going_away || self.peer_going_away {
                // After GOAWAY, streams above its last are not processed.
                return Ok(());
            }
            if self.streams.len() >= MAX_STREAMS {
                self.refuse(id, Reason::RefusedStream);
                return Ok(());
            }
            self.open_stream(id, end_stream, fields);
            return Ok(());
        }
        let mut fields = Fields::trailers(self.max_header_size);
        self.decode(block, &mut fields)?;
        let Some(stream) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if !stream.receiving {
            self.reset(id, Reason::StreamClosed);
            return Ok(());
        }
        if !end_stream || fields.malformed.is_some() {
            // Trailers end the stream, and carry no pseudo-headers.
            self.reset(id, Reason::ProtocolError);
            return Ok(());
        }
        stream.receiving = false;
        if let Some(body) = stream.body.take() {
            body.trailers(fields.headers);
        }
        self.finish_if_over(id);
        Ok(())
    }

    fn decode(&mut self, block: &[u8], fields: &mut Fields) -> Result<(), Reason> {
        let arena = &mut self.arena;
        self.decoder
            .decode(block, |name, value| {
                fields.add(name, value, arena);
                Ok::<(), std::convert::Infallible>(())
            })
            .map_err(|_| Reason::CompressionError)
    }

    /// A new request: its future starts at once, in this task.
    fn open_stream(&mut self, id: u32, end_stream: bool, fields: Fields) {
        if fields.too_large {
            // As the h2 crate does: a 431 answer, and the stream is over.
            let mut block = Vec::new();
            hpack::encode_status(431, &mut block);
            self.out.header_block(id, &block, true, self.peer_max_frame);
            self.conn
                .listener
                .unrouted
                .count(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            if !end_stream {
                self.out
                    .write(|b| frame::write_rst_stream(b, id, Reason::NoError));
            }
            return;
        }
        let declared = fields
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let body_shared = (!end_stream).then(|| BodyShared::new(id, Arc::clone(&self.shared)));
        let request = match fields.into_request(self.conn.client) {
            Ok(request) => request,
            Err(reason) => {
                self.refuse(id, reason);
                return;
            }
        };
        if end_stream && declared.is_some_and(|d| d != 0) {
            self.refuse(id, Reason::ProtocolError);
            return;
        }
        let body = match &body_shared {
            Some(shared) => ClientBody::Stream(RequestBody::new(Arc::clone(shared), declared)),
            None => ClientBody::Empty,
        };
        let request = request.map(|()| body);
        let future: Handling = Box::pin(forward::handle(Arc::clone(&self.conn), request));
        let waker = StreamWaker::new(id, Arc::clone(&self.shared));
        let stream = Stream {
            task_waker: Waker::from(Arc::clone(&waker)),
            waker,
            state: StreamState::Handling(future),
            receiving: !end_stream,
            recv_window: i64::from(STREAM_WINDOW),
            recv_returned: 0,
            body: body_shared,
            declared,
            received: 0,
            send_window: self.peer_window,
            held: None,
        };
        self.streams.insert(id, stream);
        self.poll_stream(id);
    }

    /// Polls a stream's request, or its response body while the windows and the output let
    /// it send.
    fn poll_stream(&mut self, id: u32) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        stream.waker.polling();
        let mut cx = Context::from_waker(&stream.task_waker);
        loop {
            match &mut stream.state {
                StreamState::Handling(future) => {
                    let Poll::Ready(response) = future.as_mut().poll(&mut cx) else {
                        return;
                    };
                    let (head, body) = response.into_parts();
                    let end = body.is_end_stream();
                    encode_response_head(&head, &body, &mut self.block);
                    self.out
                        .header_block(id, &self.block, end, self.peer_max_frame);
                    if end {
                        stream.state = StreamState::Sent;
                        break;
                    }
                    stream.state = StreamState::Sending(body);
                }
                StreamState::Sending(body) => {
                    if let Some((data, end)) = stream.held.take() {
                        let sent = send_data(
                            &mut self.out,
                            id,
                            data,
                            end,
                            &mut stream.send_window,
                            &mut self.send_window,
                            self.peer_max_frame,
                        );
                        if let Some(rest) = sent {
                            stream.held = Some((rest, end));
                            if self.send_window <= 0 {
                                self.blocked.push(id);
                            }
                            return;
                        }
                        if end {
                            stream.state = StreamState::Sent;
                            break;
                        }
                    }
                    if self.out.len() >= OUTPUT_HIGH {
                        self.blocked.push(id);
                        return;
                    }
                    match Pin::new(&mut *body).poll_frame(&mut cx) {
                        Poll::Pending => return,
                        Poll::Ready(None) => {
                            self.out.write(|b| {
                                frame::write_header(b, 0, kind::DATA, flag::END_STREAM, id)
                            });
                            stream.state = StreamState::Sent;
                            break;
                        }
                        Poll::Ready(Some(Err(error))) => {
                            debug!(stream = id, %error, "the response body failed; resetting the stream");
                            self.out
                                .write(|b| frame::write_rst_stream(b, id, Reason::InternalError));
                            stream.state = StreamState::Sent;
                            stream.receiving = false;
                            break;
                        }
                        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                            Ok(data) => {
                                let end = body.is_end_stream();
                                stream.held = Some((data, end));
                            }
                            Err(frame) => {
                                let trailers = frame.into_trailers().unwrap_or_default();
                                self.block.clear();
                                encode_fields(&trailers, &mut self.block);
                                self.out
                                    .header_block(id, &self.block, true, self.peer_max_frame);
                                stream.state = StreamState::Sent;
                                break;
                            }
                        },
                    }
                }
                StreamState::Sent => break,
            }
        }
        self.finish_if_over(id);
    }

    /// A stream whose response went out whole is over once the client has sent its side too;
    /// if it still sends a body nobody will read, it is told to stop (RFC 9113 8.1).
    fn finish_if_over(&mut self, id: u32) {
        let Some(stream) = self.streams.get(&id) else {
            return;
        };
        if !matches!(stream.state, StreamState::Sent) {
            return;
        }
        if stream.receiving {
            self.out
                .write(|b| frame::write_rst_stream(b, id, Reason::NoError));
        }
        if let Some(stream) = self.streams.remove(&id) {
            self.close_stream(stream, "the response ended before the request body");
        }
    }

    /// A stream leaves the table: its request body (if still coming) fails, and what the
    /// client sent and nobody read goes back to the connection window.
    fn close_stream(&mut self, stream: Stream, why: &'static str) {
        if let Some(body) = &stream.body {
            let unread = body.fail(why);
            self.return_connection_window(unread);
        }
        // Dropping the stream drops its request's future or its body: an unfinished
        // response is counted and logged as the client's reset (forward's `Done`).
        drop(stream);
    }

    /// A stream error: RST_STREAM, and the stream is gone.
    fn reset(&mut self, id: u32, reason: Reason) {
        self.out.write(|b| frame::write_rst_stream(b, id, reason));
        if let Some(stream) = self.streams.remove(&id) {
            self.close_stream(stream, "the stream was reset");
        }
    }

    /// A stream refused before it started.
    fn refuse(&mut self, id: u32, reason: Reason) {
        self.out.write(|b| frame::write_rst_stream(b, id, reason));
    }

    /// A connection error: GOAWAY with `reason`, and the connection ends once it is written.
    fn connection_error(&mut self, reason: Reason) {
        debug!(client = %self.conn.client, ?reason, "HTTP/2 connection error");
        let last = self.last_stream;
        self.out.write(|b| frame::write_goaway(b, last, reason));
        self.closing = true;
        self.input.clear();
    }

    /// Graceful: no new streams, the connection ends with its last one.
    fn go_away(&mut self, reason: Reason) {
        if !self.going_away {
            self.going_away = true;
            let last = self.last_stream;
            self.out.write(|b| frame::write_goaway(b, last, reason));
        }
    }

    /// `bytes` of stream `id`'s request body were taken (or will never be): their window
    /// goes back, on the stream while the client still sends on it, and on the connection.
    fn give_back(&mut self, id: u32, bytes: u32) {
        self.return_connection_window(bytes as usize);
        if let Some(stream) = self.streams.get_mut(&id) {
            if stream.receiving {
                stream.recv_returned += bytes;
                if stream.recv_returned >= WINDOW_RETURN {
                    let n = std::mem::take(&mut stream.recv_returned);
                    stream.recv_window += i64::from(n);
                    self.out.write(|b| frame::write_window_update(b, id, n));
                }
            }
        }
    }

    fn return_connection_window(&mut self, bytes: usize) {
        self.recv_returned = self
            .recv_returned
            .saturating_add(u32::try_from(bytes).unwrap_or(u32::MAX));
    }

    fn flush_window_returns(&mut self) {
        if self.recv_returned >= WINDOW_RETURN
            || (self.recv_returned > 0 && self.streams.is_empty())
        {
            let n = std::mem::take(&mut self.recv_returned);
            self.recv_window += i64::from(n);
            self.out.write(|b| frame::write_window_update(b, 0, n));
        }
    }
}

/// Sends what the windows allow of `data` as DATA frames (END_STREAM on the last one if
/// `end`); returns what is left.
fn send_data(
    out: &mut Output,
    id: u32,
    mut data: Bytes,
    end: bool,
    stream_window: &mut i64,
    conn_window: &mut i64,
    max_frame: usize,
) -> Option<Bytes> {
    if data.is_empty() {
        if end {
            out.write(|b| frame::write_header(b, 0, kind::DATA, flag::END_STREAM, id));
        }
        return None;
    }
    while !data.is_empty() {
        let allowed = (*stream_window).min(*conn_window).max(0) as usize;
        let n = data.len().min(allowed).min(max_frame);
        if n == 0 {
            return Some(data);
        }
        let piece = data.split_to(n);
        let flags = if end && data.is_empty() {
            flag::END_STREAM
        } else {
            0
        };
        out.write(|b| frame::write_header(b, n, kind::DATA, flags, id));
        if n <= COPY_DATA {
            out.copy(&piece);
        } else {
            out.push(piece);
        }
        *stream_window -= n as i64;
        *conn_window -= n as i64;
    }
    None
}

/// The response head as an HPACK block: the status, the headers, and Content-Length when the
/// body's size is known and not said. Connection-specific headers cannot go over HTTP/2:
/// `forward` has removed them from every head it answers with (`remove_hop_by_hop`).
fn encode_response_head(head: &http::response::Parts, body: &ResponseBody, block: &mut Vec<u8>) {
    block.clear();
    hpack::encode_status(head.status.as_u16(), block);
    encode_fields(&head.headers, block);
    let bodiless = head.status == StatusCode::NO_CONTENT
        || head.status == StatusCode::NOT_MODIFIED
        || head.status.is_informational();
    // A body that has ended already (HEAD, or nothing to send) says nothing of its length.
    if !bodiless && !body.is_end_stream() && !head.headers.contains_key(header::CONTENT_LENGTH) {
        if let Some(length) = body.size_hint().exact() {
            hpack::encode_field(b"content-length", length.to_string().as_bytes(), block);
        }
    }
}

/// Every field of `headers`, appended to an HPACK block.
fn encode_fields(headers: &HeaderMap, block: &mut Vec<u8>) {
    for (name, value) in headers {
        hpack::encode_field(name.as_str().as_bytes(), value.as_bytes(), block);
    }
}

/// `value` copied into `arena` and split off it: its own `Bytes`, in a block shared with others.
fn share(arena: &mut BytesMut, value: &[u8]) -> Bytes {
    if arena.capacity() - arena.len() < value.len() {
        arena.reserve(value.len().max(4096));
    }
    arena.extend_from_slice(value);
    arena.split().freeze()
}

/// A request's header fields as they are decoded, checked against RFC 9113 8.2 and 8.3.
struct Fields {
    method: Option<Method>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    headers: HeaderMap,
    /// Cookie crumbs, joined into one header for HTTP/1.1 backends (RFC 9113 8.2.3).
    cookies: Option<Vec<u8>>,
    /// Pseudo-headers are not allowed (trailers).
    trailers: bool,
    seen_regular: bool,
    malformed: Option<&'static str>,
    size: usize,
    max_size: usize,
    too_large: bool,
}

impl Fields {
    fn new(max_size: usize) -> Self {
        Fields {
            method: None,
            scheme: None,
            authority: None,
            path: None,
            headers: HeaderMap::new(),
            cookies: None,
            trailers: false,
            seen_regular: false,
            malformed: None,
            size: 0,
            max_size,
            too_large: false,
        }
    }

    fn trailers(max_size: usize) -> Self {
        Fields {
            trailers: true,
            ..Fields::new(max_size)
        }
    }

    fn bad(&mut self, why: &'static str) {
        self.malformed.get_or_insert(why);
    }

    fn add(&mut self, name: &[u8], value: &[u8], arena: &mut BytesMut) {
        self.size += name.len() + value.len() + 32;
        if self.size > self.max_size {
            self.too_large = true;
            return;
        }
        if self.malformed.is_some() {
            return;
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            if self.seen_regular || self.trailers {
                return self.bad("a pseudo-header after the regular ones, or in trailers");
            }
            let value = share(arena, value);
            let slot = match pseudo {
                b"method" => {
                    if self.method.is_some() {
                        return self.bad("a repeated :method");
                    }
                    match Method::from_bytes(&value) {
                        Ok(method) => self.method = Some(method),
                        Err(_) => self.bad("an invalid :method"),
                    }
                    return;
                }
                b"scheme" => &mut self.scheme,
                b"authority" => &mut self.authority,
                b"path" => &mut self.path,
                _ => return self.bad("an unknown pseudo-header"),
            };
            if slot.is_some() {
                return self.bad("a repeated pseudo-header");
            }
            *slot = Some(value);
            return;
        }
        self.seen_regular = true;
        if name.iter().any(u8::is_ascii_uppercase) {
            return self.bad("an uppercase header name");
        }
        let Ok(name) = HeaderName::from_bytes(name) else {
            return self.bad("an invalid header name");
        };
        if headers::is_connection_specific(&name) {
            return self.bad("a connection-specific header");
        }
        if name == header::TE && value != b"trailers" {
            return self.bad("TE other than trailers");
        }
        if name == header::COOKIE {
            let cookies = self.cookies.get_or_insert_with(Vec::new);
            if !cookies.is_empty() {
                cookies.extend_from_slice(b"; ");
            }
            cookies.extend_from_slice(value);
            return;
        }
        match HeaderValue::from_maybe_shared(share(arena, value)) {
            Ok(value) => {
                self.headers.append(name, value);
            }
            Err(_) => self.bad("an invalid header value"),
        }
    }

    /// The request these fields make, or the stream error they are.
    fn into_request(mut self, client: SocketAddr) -> Result<Request<()>, Reason> {
        if let Some(why) = self.malformed {
            debug!(%client, why, "malformed HTTP/2 request");
            return Err(Reason::ProtocolError);
        }
        let method = self.method.take().ok_or(Reason::ProtocolError)?;
        let uri = if method == Method::CONNECT {
            if self.scheme.is_some() || self.path.is_some() {
                return Err(Reason::ProtocolError);
            }
            let authority = self.authority.take().ok_or(Reason::ProtocolError)?;
            Uri::from_maybe_shared(authority).map_err(|_| Reason::ProtocolError)?
        } else {
            let (Some(scheme), Some(path)) = (self.scheme.take(), self.path.take()) else {
                return Err(Reason::ProtocolError);
            };
            if path.is_empty() {
                return Err(Reason::ProtocolError);
            }
            if &path[..] == b"*" {
                Uri::from_static("*")
            } else {
                let mut parts = http::uri::Parts::default();
                parts.scheme =
                    Some(Scheme::try_from(&scheme[..]).map_err(|_| Reason::ProtocolError)?);
                parts.authority = match self.authority.take() {
                    Some(a) => {
                        Some(Authority::from_maybe_shared(a).map_err(|_| Reason::ProtocolError)?)
                    }
                    None => None,
                };
                parts.path_and_query =
                    Some(PathAndQuery::from_maybe_shared(path).map_err(|_| Reason::ProtocolError)?);
                if parts.authority.is_none() {
                    // An absolute URI needs an authority; the Host header names it then.
                    let host = self
                        .headers
                        .get(header::HOST)
                        .ok_or(Reason::ProtocolError)?
                        .as_bytes();
                    parts.authority =
                        Some(Authority::try_from(host).map_err(|_| Reason::ProtocolError)?);
                }
                Uri::from_parts(parts).map_err(|_| Reason::ProtocolError)?
            }
        };
        if let Some(cookies) = self.cookies.take() {
            let value = HeaderValue::from_bytes(&cookies).map_err(|_| Reason::ProtocolError)?;
            self.headers.insert(header::COOKIE, value);
        }
        let mut request = Request::new(());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_2;
        *request.headers_mut() = self.headers;
        Ok(request)
    }
}

/// What goes to the client, in order: small writes gathered into one buffer, large DATA
/// payloads as they came; written with one `writev`.
#[derive(Default)]
struct Output {
    segments: std::collections::VecDeque<Bytes>,
    tail: BytesMut,
    /// Bytes of `segments` and `tail`.
    len: usize,
}

impl Output {
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Gives the buffer back (the output is empty).
    fn release(&mut self) {
        if self.tail.capacity() > 0 {
            self.tail = BytesMut::new();
        }
    }

    fn copy(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Small frames, written by `write` into the tail.
    fn write(&mut self, write: impl FnOnce(&mut BytesMut)) {
        let before = self.tail.len();
        write(&mut self.tail);
        self.len += self.tail.len() - before;
    }

    fn push(&mut self, bytes: Bytes) {
        if !self.tail.is_empty() {
            self.segments.push_back(self.tail.split().freeze());
        }
        self.len += bytes.len();
        self.segments.push_back(bytes);
    }

    fn header_block(&mut self, stream: u32, block: &[u8], end_stream: bool, max_frame: usize) {
        let before = self.tail.len();
        frame::write_header_block(&mut self.tail, stream, block, end_stream, max_frame);
        self.len += self.tail.len() - before;
    }

    /// The output as slices, in order; returns how many were filled.
    fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut count = 0;
        for segment in &self.segments {
            if count == slices.len() {
                return count;
            }
            slices[count] = IoSlice::new(segment);
            count += 1;
        }
        if count < slices.len() && !self.tail.is_empty() {
            slices[count] = IoSlice::new(&self.tail);
            count += 1;
        }
        count
    }

    /// `n` bytes were written.
    fn advance(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.segments.front_mut() else {
                self.tail.advance(n);
                break;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.segments.pop_front();
        }
        if self.len == 0 {
            // Keep a modest buffer for the next turn; give back a large one.
            if self.tail.capacity() > 64 * 1024 {
                self.tail = BytesMut::new();
            } else {
                self.tail.clear();
            }
        }
    }
}

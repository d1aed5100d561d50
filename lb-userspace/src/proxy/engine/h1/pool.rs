//! The HTTP/1 engine's backend connections: plain TCP streams, pooled per worker thread (a
//! `thread_local`: no lock, no other thread) and keyed by backend address. Pingora and HAProxy
//! keep theirs the same way.
//!
//! An idle connection is not polled. Whether the backend closed it meanwhile is read from the
//! runtime's readiness when it is taken out (no system call unless the socket became readable);
//! a close that crosses the request on the wire is the caller's to retry. Idle connections
//! older than the limit are dropped by [`sweep`] and on checkout.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::proxy::engine::backend::{ConnectError, PoolSettings};

/// One connection to a backend, with what was read from it past the last response.
pub struct RawConn {
    pub backend: SocketAddr,
    pub stream: TcpStream,
    /// Came from the pool rather than a fresh connect.
    pub reused: bool,
}

struct Idle {
    since: Instant,
    conn: RawConn,
    limit: Duration,
}

thread_local! {
    static POOL: RefCell<HashMap<SocketAddr, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// An open idle connection to `backend` from this worker's pool, or a new one.
pub async fn checkout(
    backend: SocketAddr,
    settings: &PoolSettings,
) -> Result<RawConn, ConnectError> {
    let now = Instant::now();
    while let Some(idle) = take(backend) {
        if now.duration_since(idle.since) < idle.limit && still_open(&idle.conn.stream) {
            let mut conn = idle.conn;
            conn.reused = true;
            return Ok(conn);
        }
    }
    connect(backend, settings).await
}

fn take(backend: SocketAddr) -> Option<Idle> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.get_mut(&backend)?;
        // The most recently used first: the least likely to have been closed.
        let idle = list.pop();
        if list.is_empty() {
            pool.remove(&backend);
        }
        idle
    })
}

/// A new connection to `backend`.
pub async fn connect(
    backend: SocketAddr,
    settings: &PoolSettings,
) -> Result<RawConn, ConnectError> {
    let connecting = TcpStream::connect(backend);
    let stream = match tokio::time::timeout(settings.connect_timeout, connecting).await {
        Err(_elapsed) => {
            return Err(ConnectError::Timeout {
                backend,
                after: settings.connect_timeout,
            })
        }
        Ok(Err(source)) => return Err(ConnectError::classify(backend, source)),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    Ok(RawConn {
        backend,
        stream,
        reused: false,
    })
}

/// Whether an idle connection is still open: nothing readable (the runtime saw no event), or
/// readable but not at its end and with no stray bytes.
fn still_open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut byte = [0u8; 1];
            matches!(stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
    }
}

/// Puts a connection whose last response was read to its end back into this worker's pool.
pub fn release(conn: RawConn, settings: &PoolSettings) {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.entry(conn.backend).or_default();
        if list.len() < settings.max_idle_per_backend {
            list.push(Idle {
                since: Instant::now(),
                conn,
                limit: settings.idle_timeout,
            });
        }
    });
}

/// Drops this worker's connections idle for longer than their limit; returns how many stay.
pub fn sweep(now: Instant) -> usize {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        pool.retain(|_, list| {
            list.retain(|idle| {
                now.duration_since(idle.since) < idle.limit && still_open(&idle.conn.stream)
            });
            !list.is_empty()
        });
        pool.values().map(Vec::len).sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpListener;

    fn settings() -> PoolSettings {
        PoolSettings {
            connect_timeout: Duration::from_secs(1),
            max_idle_per_backend: 2,
            idle_timeout: Duration::from_secs(60),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_released_connection_is_reused_until_the_backend_closes_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let first = checkout(addr, &settings()).await.expect("connect");
        assert!(!first.reused);
        let (mut server_side, _) = listener.accept().await.expect("accept");
        release(first, &settings());
        let again = checkout(addr, &settings()).await.expect("checkout");
        assert!(again.reused);
        release(again, &settings());

        server_side.shutdown().await.expect("close");
        drop(server_side);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The runtime has seen the close: the pooled connection is not handed out.
        let fresh = checkout(addr, &settings()).await.expect("connect");
        assert!(!fresh.reused);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_connect_blames_the_backend() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let Err(error) = connect(addr, &settings()).await else {
            panic!("connected to a closed port");
        };
        assert!(error.is_backend_fault(), "{error}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_pool_keeps_at_most_its_limit_per_backend() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut conns = Vec::new();
        for _ in 0..3 {
            conns.push(connect(addr, &settings()).await.expect("connect"));
        }
        for conn in conns {
            release(conn, &settings());
        }
        assert_eq!(sweep(Instant::now()), 2);
        assert_eq!(sweep(Instant::now() + Duration::from_secs(61)), 0);
    }
}

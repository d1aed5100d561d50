//! Connections to backends that hyper's client drives (`backend_protocol` h2c, https or h2:
//! [`crate::backend_transport`]), pooled per worker thread like the HTTP/1 engine's plain ones
//! ([`super::h1::pool`]): keyed by the service's transport and the backend's address.
//!
//! An HTTP/2 connection stays in the pool while it is used: every stream of this worker to
//! that backend shares it (one connection, many streams, as HAProxy and Envoy do). An HTTP/1.1
//! connection over TLS carries one request at a time: it goes back in the pool once sent and
//! is handed out again when hyper says it is ready (its response read to the end).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::backend::{ConnectError, ForwardBody, PoolSettings};
use crate::backend_transport::{Sender, Transport};

struct Pooled {
    sender: Sender<ForwardBody>,
    since: Instant,
}

thread_local! {
    static SENDERS: RefCell<HashMap<(u64, SocketAddr), Vec<Pooled>>> =
        RefCell::new(HashMap::new());
}

/// A connection to `backend` ready to send: one of this worker's, or a new one.
/// `host` is the name the backend was configured by (for TLS's server name).
pub async fn checkout(
    transport: &Transport,
    backend: SocketAddr,
    host: Option<&str>,
    settings: &PoolSettings,
) -> Result<(Sender<ForwardBody>, bool), ConnectError> {
    if let Some(sender) = take(transport.id, backend, settings) {
        return Ok((sender, true));
    }
    let connecting = async {
        let stream = transport
            .connect(backend, host)
            .await
            .map_err(|source| ConnectError::classify(backend, source))?;
        transport
            .handshake(stream)
            .await
            .map_err(|error| ConnectError::Backend {
                backend,
                source: std::io::Error::other(error),
            })
    };
    let sender = match tokio::time::timeout(settings.connect_timeout, connecting).await {
        Err(_elapsed) => {
            return Err(ConnectError::Timeout {
                backend,
                after: settings.connect_timeout,
            })
        }
        Ok(result) => result?,
    };
    if let Some(shared) = sender.share() {
        keep(transport.id, backend, shared, settings);
    }
    Ok((sender, false))
}

fn take(
    transport: u64,
    backend: SocketAddr,
    settings: &PoolSettings,
) -> Option<Sender<ForwardBody>> {
    SENDERS.with(|senders| {
        let mut senders = senders.borrow_mut();
        let list = senders.get_mut(&(transport, backend))?;
        let now = Instant::now();
        list.retain(|pooled| {
            !pooled.sender.is_closed()
                && (now.duration_since(pooled.since) < settings.idle_timeout
                    || !pooled.sender.is_ready())
        });
        // An HTTP/2 connection is shared, ready or not: its streams queue behind its limit.
        let found = list
            .iter()
            .position(|pooled| pooled.sender.is_multiplexed());
        if let Some(index) = found {
            let pooled = &mut list[index];
            pooled.since = now;
            return pooled.sender.share();
        }
        let ready = list.iter().position(|pooled| pooled.sender.is_ready())?;
        Some(list.swap_remove(ready).sender)
    })
}

/// Puts an HTTP/1.1 connection back once its request is sent; HTTP/2 ones never left.
pub fn release(
    transport: &Transport,
    backend: SocketAddr,
    sender: Sender<ForwardBody>,
    settings: &PoolSettings,
) {
    if !sender.is_multiplexed() && !sender.is_closed() {
        keep(transport.id, backend, sender, settings);
    }
}

fn keep(transport: u64, backend: SocketAddr, sender: Sender<ForwardBody>, settings: &PoolSettings) {
    SENDERS.with(|senders| {
        let mut senders = senders.borrow_mut();
        let list = senders.entry((transport, backend)).or_default();
        if list.len() < settings.max_idle_per_backend {
            list.push(Pooled {
                sender,
                since: Instant::now(),
            });
        }
    });
}

/// Drops this worker's connections idle for longer than `settings.idle_timeout`, and closed
/// ones; returns how many stay.
pub fn sweep(now: Instant, settings: &PoolSettings) -> usize {
    SENDERS.with(|senders| {
        let mut senders = senders.borrow_mut();
        senders.retain(|_, list| {
            list.retain(|pooled| {
                !pooled.sender.is_closed()
                    && (now.duration_since(pooled.since) < settings.idle_timeout
                        || !pooled.sender.is_ready())
            });
            !list.is_empty()
        });
        senders.values().map(Vec::len).sum()
    })
}

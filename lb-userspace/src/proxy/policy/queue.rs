//! `backend_max_connections` and `queue_timeout` (HAProxy's `maxconn` and `timeout queue`):
//! each backend of a service takes at most so many requests at once, counted over every
//! worker; a request whose candidates are all full waits for a place at any of them and gets
//! 503 after the queue timeout. When a place comes free every waiter is woken and the first to
//! look takes it: not HAProxy's strict first-come order, which a waiter could starve under. A request with
//! a session waits for its own backend (its candidates start with it), so a busy backend does
//! not cost a user their session.
//!
//! [`Attempts`] is what the engine iterates: the request's candidates in order, each with its
//! [`Place`] (held until the response is over), full ones skipped, then the wait.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// The places of one service's backends.
#[derive(Debug)]
pub struct Places {
    max: usize,
    timeout: Duration,
    /// Requests in progress per backend, in config order.
    active: Vec<AtomicUsize>,
    /// Woken whenever a place comes free.
    freed: Notify,
    /// Requests waiting now, and those that gave up (503) since start.
    waiting: AtomicUsize,
    timed_out: AtomicU64,
}

/// A request's place at a backend; given back when dropped.
#[derive(Debug)]
pub struct Place {
    places: Arc<Places>,
    index: usize,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.places.active[self.index].fetch_sub(1, Ordering::AcqRel);
        self.places.freed.notify_waiters();
    }
}

/// Every candidate stayed full for the queue timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueTimedOut(pub Duration);

impl Places {
    pub fn new(backends: usize, max: usize, timeout: Duration) -> Arc<Places> {
        Arc::new(Places {
            max,
            timeout,
            active: (0..backends).map(|_| AtomicUsize::new(0)).collect(),
            freed: Notify::new(),
            waiting: AtomicUsize::new(0),
            timed_out: AtomicU64::new(0),
        })
    }

    /// A place at backend `index`, if it has one free.
    fn try_take(self: &Arc<Self>, index: usize) -> Option<Place> {
        let active = &self.active[index];
        let mut now = active.load(Ordering::Acquire);
        loop {
            if now >= self.max {
                return None;
            }
            match active.compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    return Some(Place {
                        places: Arc::clone(self),
                        index,
                    })
                }
                Err(seen) => now = seen,
            }
        }
    }

    /// Requests in progress at backend `index`.
    pub fn active(&self, index: usize) -> usize {
        self.active[index].load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Requests waiting for a place now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Requests that waited the whole queue timeout (503) since start.
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }
}

/// One request's way through its candidates (see the module docs).
pub struct Attempts<'a, F> {
    places: Option<&'a Arc<Places>>,
    /// Config index of a backend, if it is one of the service's.
    index_of: F,
    candidates: &'a [SocketAddr],
    /// The first candidate is the request's session backend: it waits for that one.
    pinned: bool,
    next: usize,
    skipped_full: bool,
    waited: bool,
}

impl<'a, F: Fn(SocketAddr) -> Option<usize>> Attempts<'a, F> {
    /// `places`: `None` when the service sets no limit (every candidate is tried in turn).
    /// `pinned`: the first candidate is the request's session backend.
    pub fn new(
        places: Option<&'a Arc<Places>>,
        index_of: F,
        candidates: &'a [SocketAddr],
        pinned: bool,
    ) -> Self {
        Attempts {
            places,
            index_of,
            candidates,
            pinned,
            next: 0,
            skipped_full: false,
            waited: false,
        }
    }

    /// The next backend to try with its place; `None` when the candidates are used up;
    /// `Err` when all were full and none came free within the queue timeout.
    pub async fn next(&mut self) -> Option<Result<(SocketAddr, Option<Place>), QueueTimedOut>> {
        let Some(places) = self.places else {
            let backend = *self.candidates.get(self.next)?;
            self.next += 1;
            return Some(Ok((backend, None)));
        };
        while let Some(&backend) = self.candidates.get(self.next) {
            self.next += 1;
            let Some(index) = (self.index_of)(backend) else {
                return Some(Ok((backend, None)));
            };
            match places.try_take(index) {
                Some(place) => return Some(Ok((backend, Some(place)))),
                // A session waits for its own backend rather than lose it to a busy moment.
                None if self.pinned && self.next == 1 => {
                    self.waited = true;
                    return Some(self.wait(places, &self.candidates[..1]).await);
                }
                None => self.skipped_full = true,
            }
        }
        // Every candidate left was full (none failed): wait for a place, once.
        if !self.skipped_full || self.waited {
            return None;
        }
        self.waited = true;
        Some(self.wait(places, self.candidates).await)
    }

    /// Waits for a place at any of `candidates`.
    async fn wait(
        &self,
        places: &Arc<Places>,
        candidates: &[SocketAddr],
    ) -> Result<(SocketAddr, Option<Place>), QueueTimedOut> {
        places.waiting.fetch_add(1, Ordering::Relaxed);
        let waited = tokio::time::timeout(places.timeout, async {
            loop {
                // Registered before looking, so a place freed in between is not missed.
                let freed = places.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                for &backend in candidates {
                    let Some(index) = (self.index_of)(backend) else {
                        continue;
                    };
                    if let Some(place) = places.try_take(index) {
                        return (backend, Some(place));
                    }
                }
                freed.await;
            }
        })
        .await;
        places.waiting.fetch_sub(1, Ordering::Relaxed);
        waited.map_err(|_| {
            places.timed_out.fetch_add(1, Ordering::Relaxed);
            QueueTimedOut(places.timeout)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, last], 80))
    }

    fn last_byte(backend: SocketAddr) -> u8 {
        match backend.ip() {
            std::net::IpAddr::V4(v4) => v4.octets()[3],
            std::net::IpAddr::V6(v6) => v6.octets()[15],
        }
    }

    fn index_of(backend: SocketAddr) -> Option<usize> {
        (1..=2)
            .contains(&last_byte(backend))
            .then(|| usize::from(last_byte(backend)) - 1)
    }

    #[tokio::test(start_paused = true)]
    async fn full_backends_are_skipped_then_waited_for_then_503() {
        let places = Places::new(2, 1, Duration::from_secs(5));
        let candidates = [addr(1), addr(2)];
        let mut first = Attempts::new(Some(&places), index_of, &candidates, false);
        let (backend, a) = first.next().await.expect("one").expect("a place");
        assert_eq!(backend, addr(1));
        // The second request finds 1 full and goes to 2.
        let mut second = Attempts::new(Some(&places), index_of, &candidates, false);
        let (backend, b) = second.next().await.expect("one").expect("a place");
        assert_eq!(backend, addr(2));
        // The third waits; when 2 frees its place it gets it.
        let waiting = Arc::clone(&places);
        let waiter = tokio::spawn(async move {
            let mut third = Attempts::new(Some(&waiting), index_of, &candidates, false);
            let started = tokio::time::Instant::now();
            let got = third
                .next()
                .await
                .expect("a wait")
                .map(|(backend, _)| backend);
            (got, started.elapsed())
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(places.waiting(), 1);
        drop(b);
        let (got, waited) = waiter.await.expect("task");
        assert_eq!(got, Ok(addr(2)));
        assert!(waited >= Duration::from_secs(1), "{waited:?}");
        // A fourth, with both full for longer than the queue timeout: 503.
        let _c = places.try_take(1).expect("2 is free again");
        let mut fourth = Attempts::new(Some(&places), index_of, &candidates, false);
        let gave_up = fourth
            .next()
            .await
            .expect("a wait")
            .map(|(backend, _)| backend);
        assert_eq!(gave_up, Err(QueueTimedOut(Duration::from_secs(5))));
        assert_eq!(places.timed_out(), 1);
        drop(a);
        assert_eq!(places.active(0), 0);
    }

    #[tokio::test]
    async fn without_limits_every_candidate_is_tried_in_turn() {
        let candidates = [addr(1), addr(2)];
        let mut attempts = Attempts::new(None, index_of, &candidates, false);
        let mut tried = Vec::new();
        while let Some(Ok((backend, place))) = attempts.next().await {
            assert!(place.is_none());
            tried.push(backend);
        }
        assert_eq!(tried, candidates);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_waits_for_its_own_backend_when_it_is_full() {
        let places = Places::new(2, 1, Duration::from_secs(5));
        let busy = places.try_take(0).expect("backend 1's place");
        let candidates = [addr(1), addr(2)];
        let waiting = Arc::clone(&places);
        let session = tokio::spawn(async move {
            let mut attempts = Attempts::new(Some(&waiting), index_of, &candidates, true);
            attempts
                .next()
                .await
                .expect("a wait")
                .map(|(backend, _)| backend)
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(places.active(1), 0, "backend 2 was free, and not taken");
        drop(busy);
        assert_eq!(session.await.expect("task"), Ok(addr(1)));
    }
}

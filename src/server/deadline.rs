//! How long a client connection may stay open without a request in progress.
//!
//! Every connection is bounded in time whenever no request is in flight on it:
//! - before its first byte, and from the first byte of a request head until the head is complete:
//!   `server.header_read_timeout`;
//! - between requests (after a response, until the first byte of the next head; over HTTP/2, while
//!   no stream is open): `server.keepalive_timeout`.
//!
//! hyper alone does not do this: hyper-util's protocol detection waits for the first bytes with no
//! timeout at all, and hyper's HTTP/1 header timer starts when the connection starts waiting, so it
//! cuts idle keep-alive connections at the header timeout. So the connection's I/O is wrapped
//! ([`Guarded`]) to note when bytes arrive, each request holds an [`InFlight`] guard until its
//! response body is done, and one lazy timer per connection ([`expired`]) wakes at the deadline those
//! give, re-reading them rather than being reset on every request: the cost per request is a few
//! atomic operations and two clock reads, and no timer.
//!
//! The wrapper also carries the connection's slot under `server.max_connections`, so the slot is
//! freed when the socket is, also after an upgrade hands the socket to a tunnel.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

/// The two timeouts a connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read: Duration,
    pub keepalive: Duration,
}

/// What the deadline of one connection depends on, shared by its I/O, its requests and its timer.
#[derive(Debug)]
pub struct ConnClock {
    start: Instant,
    /// Requests whose response has not been sent in full.
    in_flight: AtomicUsize,
    /// When the last response was done, in nanoseconds since `start` (at least 1); 0: none yet.
    idle_since: AtomicU64,
    /// When the first byte of the head being read arrived, as `idle_since`; 0: no head begun.
    head_started: AtomicU64,
    /// Requests come over HTTP/2, where bytes between requests are frames such as PING, not heads.
    http2: AtomicBool,
}

impl ConnClock {
    pub fn new() -> Arc<ConnClock> {
        Arc::new(ConnClock {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            http2: AtomicBool::new(false),
        })
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.start + Duration::from_nanos(nanos)
    }

    /// Bytes arrived: with no request in flight, they begin a head (HTTP/1; over HTTP/2 before its
    /// first request, the preface and the first request).
    fn note_bytes(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
            && !self.http2.load(Ordering::Relaxed)
        {
            self.head_started.store(self.nanos(), Ordering::SeqCst);
        }
    }

    /// Whether an HTTP/1 request head has begun and not been completed.
    pub fn head_in_progress(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
            && self.head_started.load(Ordering::SeqCst) != 0
            && !self.http2.load(Ordering::SeqCst)
    }

    /// When the connection must be closed if nothing changes; `None` while a request is in flight.
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let head = self.head_started.load(Ordering::SeqCst);
        if head != 0 && !self.http2.load(Ordering::SeqCst) {
            return Some(self.at(head) + limits.header_read);
        }
        match self.idle_since.load(Ordering::SeqCst) {
            // No request yet: the first must begin (over HTTP/2: arrive) within the header timeout.
            0 if head == 0 => Some(self.start + limits.header_read),
            0 => Some(self.at(head) + limits.header_read),
            idle => Some(self.at(idle) + limits.keepalive),
        }
    }
}

/// Completes once `clock`'s deadline has passed with no request in flight. The timer is armed for
/// the deadline known now and, when it fires, re-reads the clock: requests served meanwhile simply
/// move the deadline on.
pub async fn expired(clock: &ConnClock, limits: &Limits) {
    loop {
        match clock.deadline(limits) {
            Some(deadline) if deadline <= Instant::now() => return,
            Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
            // A request in flight is bounded by other means (upstream.timeout); look again later.
            None => tokio::time::sleep(limits.header_read.min(limits.keepalive)).await,
        }
    }
}

/// One request in flight on a connection: from the call of the service until its response body is
/// done (or dropped).
#[derive(Debug)]
pub struct InFlight {
    clock: Arc<ConnClock>,
}

impl InFlight {
    pub fn start(clock: &Arc<ConnClock>, http2: bool) -> InFlight {
        if http2 {
            clock.http2.store(true, Ordering::SeqCst);
        }
        clock.in_flight.fetch_add(1, Ordering::SeqCst);
        clock.head_started.store(0, Ordering::SeqCst);
        InFlight {
            clock: clock.clone(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // The idle time first, so whoever sees no request in flight also sees when that began.
        self.clock
            .idle_since
            .store(self.clock.nanos(), Ordering::SeqCst);
        self.clock.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request [`InFlight`] until the last frame has been taken.
pub struct Tracked<B> {
    inner: B,
    guard: Option<InFlight>,
}

impl<B: http_body::Body + Unpin> Tracked<B> {
    pub fn new(inner: B, guard: InFlight) -> Tracked<B> {
        let guard = (!inner.is_end_stream()).then_some(guard);
        Tracked { inner, guard }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(frame) = &polled {
            if frame.is_none() || this.inner.is_end_stream() {
                this.guard = None;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A client connection's I/O: notes arriving bytes on the clock and holds the connection's slot.
pub struct Guarded<S> {
    io: S,
    clock: Arc<ConnClock>,
    _slot: OwnedSemaphorePermit,
}

impl<S> Guarded<S> {
    pub fn new(io: S, clock: Arc<ConnClock>, slot: OwnedSemaphorePermit) -> Guarded<S> {
        Guarded {
            io,
            clock,
            _slot: slot,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.note_bytes();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header_read: Duration::from_secs(10),
        keepalive: Duration::from_secs(60),
    };

    #[test]
    fn a_new_connection_gets_the_header_timeout() {
        let clock = ConnClock::new();
        assert_eq!(
            clock.deadline(&LIMITS),
            Some(clock.start + LIMITS.header_read)
        );
    }

    #[test]
    fn a_head_begun_gets_the_header_timeout_from_its_first_byte() {
        let clock = ConnClock::new();
        clock.note_bytes();
        let head = clock.head_started.load(Ordering::SeqCst);
        assert_ne!(head, 0);
        assert_eq!(
            clock.deadline(&LIMITS),
            Some(clock.at(head) + LIMITS.header_read)
        );
        // More bytes of the same head do not move it.
        clock.note_bytes();
        assert_eq!(clock.head_started.load(Ordering::SeqCst), head);
        assert!(clock.head_in_progress());
        drop(InFlight::start(&clock, false));
        assert!(!clock.head_in_progress());
    }

    #[test]
    fn requests_in_flight_have_no_deadline_and_idle_time_gets_the_keepalive_timeout() {
        let clock = ConnClock::new();
        clock.note_bytes();
        let request = InFlight::start(&clock, false);
        assert_eq!(clock.deadline(&LIMITS), None);
        clock.note_bytes(); // the body: not a head
        assert_eq!(clock.head_started.load(Ordering::SeqCst), 0);
        drop(request);
        let idle = clock.idle_since.load(Ordering::SeqCst);
        assert_eq!(
            clock.deadline(&LIMITS),
            Some(clock.at(idle) + LIMITS.keepalive)
        );
        // The next head's first byte: the header timeout again, from that byte.
        clock.note_bytes();
        let head = clock.head_started.load(Ordering::SeqCst);
        assert_eq!(
            clock.deadline(&LIMITS),
            Some(clock.at(head) + LIMITS.header_read)
        );
    }

    #[test]
    fn over_http2_frames_between_requests_do_not_start_a_head() {
        let clock = ConnClock::new();
        clock.note_bytes(); // the preface
        drop(InFlight::start(&clock, true));
        let idle = clock.idle_since.load(Ordering::SeqCst);
        clock.note_bytes(); // a PING
        assert_eq!(
            clock.deadline(&LIMITS),
            Some(clock.at(idle) + LIMITS.keepalive)
        );
    }

    #[tokio::test]
    async fn the_timer_fires_at_the_deadline_and_follows_requests() {
        let limits = Limits {
            header_read: Duration::from_millis(50),
            keepalive: Duration::from_millis(100),
        };
        let clock = ConnClock::new();
        let start = Instant::now();
        expired(&clock, &limits).await;
        assert!(start.elapsed() >= limits.header_read);

        let clock = ConnClock::new();
        let request = InFlight::start(&clock, false);
        let timer = {
            let clock = clock.clone();
            tokio::spawn(async move { expired(&clock, &limits).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !timer.is_finished(),
            "no deadline while a request is in flight"
        );
        let idle = Instant::now();
        drop(request);
        tokio::time::timeout(Duration::from_secs(10), timer)
            .await
            .expect("the timer fires once the connection is idle")
            .unwrap();
        assert!(idle.elapsed() >= limits.keepalive);
    }
}

//! Keep-alive HTTP/1.1 connections to one upstream.
//!
//! Each `Upstream` owns one pool, built at start-up, so a request finds its pool without hashing anything.
//! Idle connections wait in shards, each a short `Vec` behind its own lock; a worker thread puts to and
//! takes from the shard its thread-local index picks, and only looks at the others when its own is empty.
//! No lock is shared by all requests. At most `MAX_IDLE` connections wait in all shards together (a count
//! kept beside them): under a thousand concurrent requests on one worker thread, every connection that
//! finishes finds room, so the next request reuses it instead of opening a new one.
//!
//! A connection goes back to the pool once its response body has been read exactly to its end
//! (`PooledBody`). A connection whose response was cut short (the client went away, a read failed), whose
//! upstream asked to close it, or that switched protocols (`101`) is never reused. Taking one out, a
//! connection that has closed meanwhile (or has been idle for `IDLE_TIMEOUT`) is dropped, which ends it;
//! while connections are idle, a background task closes the expired and closed ones as well.
//!
//! The exchange itself runs in the request's own task (`h1`). A request without a body and with an
//! idempotent method whose reused connection turns out to have been closed by the upstream, before any
//! byte of a response, is sent once more on a new connection; no other request is ever sent twice.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body as _;
use tokio::net::TcpStream;
use url::{Host, Url};

use super::h1::{self, Connection, ResponseBody, SendError};
use super::UpstreamBody;

/// How long a connection may sit idle in the pool before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const SHARDS: usize = 16;
/// Idle connections in all shards together; beyond this the longest idle one of the shard is closed.
const MAX_IDLE: usize = 1024;

struct Idle {
    conn: Connection<TcpStream>,
    since: Instant,
}

/// Where the upstream's connections go: an address, or a host name resolved on every connect.
enum Target {
    Addr(SocketAddr),
    Name(String, u16),
}

/// Why a request got no response from the upstream.
#[derive(Debug)]
pub enum Error {
    /// No connection could be made (refused, unresolvable, timed out).
    Connect(io::Error),
    /// The exchange failed.
    Http(h1::Error),
}

/// The connection pool of one upstream.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    shards: Box<[Mutex<VecDeque<Idle>>]>,
    /// How many connections wait in all shards.
    idle: AtomicUsize,
    /// Whether the task closing expired idle connections is running.
    reaping: AtomicBool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

/// The shard of the current thread: worker threads are numbered as they first use a pool.
fn home_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static HOME: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    HOME.with(|h| *h)
}

fn lock(shard: &Mutex<VecDeque<Idle>>) -> MutexGuard<'_, VecDeque<Idle>> {
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pool {
    /// A pool for the upstream at `url` (an `http` URL; without a port, 80).
    pub fn new(url: &Url) -> Pool {
        let port = url.port_or_known_default().unwrap_or(80);
        let target = match url.host() {
            Some(Host::Ipv4(ip)) => Target::Addr(SocketAddr::new(ip.into(), port)),
            Some(Host::Ipv6(ip)) => Target::Addr(SocketAddr::new(ip.into(), port)),
            Some(Host::Domain(name)) => Target::Name(name.to_string(), port),
            None => Target::Name(String::new(), port),
        };
        Pool {
            inner: Arc::new(Inner {
                target,
                shards: (0..SHARDS).map(|_| Mutex::new(VecDeque::new())).collect(),
                idle: AtomicUsize::new(0),
                reaping: AtomicBool::new(false),
            }),
        }
    }

    /// Send `req` on an idle connection, or on a new one made within `connect_timeout`. The response body
    /// gives the connection back when it has been read to the end.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
        connect_timeout: Duration,
    ) -> Result<Response<PooledBody>, Error> {
        let req = match self.inner.checkout() {
            Some(conn) => match conn.send(req).await {
                Ok(response) => return Ok(self.wrap(response)),
                Err(SendError::Retry(req, e)) => {
                    tracing::debug!("a kept-alive upstream connection was closed ({e}); sending again on a new one");
                    req
                }
                Err(SendError::Failed(e)) => return Err(Error::Http(e)),
            },
            None => req,
        };
        let conn = self.inner.connect(connect_timeout).await?;
        match conn.send(req).await {
            Ok(response) => Ok(self.wrap(response)),
            Err(SendError::Retry(_, e) | SendError::Failed(e)) => Err(Error::Http(e)),
        }
    }

    fn wrap(&self, response: Response<ResponseBody<TcpStream>>) -> Response<PooledBody> {
        response.map(|inner| PooledBody {
            inner,
            pool: Some(self.inner.clone()),
        })
    }
}

impl Inner {
    /// An idle connection ready for a request, if there is one.
    fn checkout(&self) -> Option<Connection<TcpStream>> {
        let home = home_shard();
        let mut now = None;
        for i in 0..SHARDS {
            let mut idle = lock(&self.shards[(home + i) % SHARDS]);
            while let Some(mut entry) = idle.pop_back() {
                self.idle.fetch_sub(1, Ordering::Relaxed);
                let now = *now.get_or_insert_with(Instant::now);
                if now.duration_since(entry.since) < IDLE_TIMEOUT && entry.conn.is_usable() {
                    return Some(entry.conn);
                }
                // Closed or expired: dropping the sender ends the connection.
            }
        }
        None
    }

    fn put(self: &Arc<Self>, conn: Connection<TcpStream>) {
        let entry = Idle {
            conn,
            since: Instant::now(),
        };
        {
            let mut idle = lock(&self.shards[home_shard()]);
            if self.idle.load(Ordering::Relaxed) >= MAX_IDLE {
                // Full: the longest idle connection here makes room, or, with none here, this one ends.
                if idle.pop_front().is_none() {
                    return;
                }
            } else {
                self.idle.fetch_add(1, Ordering::Relaxed);
            }
            idle.push_back(entry);
        }
        if !self.reaping.load(Ordering::SeqCst) {
            self.start_reaper();
        }
    }

    /// Close expired and closed idle connections; returns how many idle ones are left.
    fn reap(&self) -> usize {
        let now = Instant::now();
        self.shards
            .iter()
            .map(|shard| {
                let mut idle = lock(shard);
                let before = idle.len();
                idle.retain_mut(|e| {
                    now.duration_since(e.since) < IDLE_TIMEOUT && e.conn.is_usable()
                });
                self.idle.fetch_sub(before - idle.len(), Ordering::Relaxed);
                idle.len()
            })
            .sum()
    }

    /// Start the task that closes expired idle connections, unless it runs already. It runs while any
    /// connection is idle and ends with the pool.
    fn start_reaper(self: &Arc<Self>) {
        if self.reaping.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.reaping.store(false, Ordering::SeqCst);
            return;
        };
        let pool: Weak<Inner> = Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(IDLE_TIMEOUT / 2).await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                if pool.reap() == 0 {
                    pool.reaping.store(false, Ordering::SeqCst);
                    // A connection put back since the count saw this task running and started none.
                    if pool.reap() == 0 || pool.reaping.swap(true, Ordering::SeqCst) {
                        return;
                    }
                }
            }
        });
    }

    /// A new connection.
    async fn connect(&self, timeout: Duration) -> Result<Connection<TcpStream>, Error> {
        let stream = match tokio::time::timeout(timeout, self.tcp(timeout)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(Error::Connect(e)),
            Err(_) => {
                return Err(Error::Connect(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}"),
                )))
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set on an upstream connection: {e}");
        }
        Ok(Connection::new(stream))
    }

    /// A TCP connection to the target; a host name's addresses are tried in turn, each given an equal
    /// share of `timeout`.
    async fn tcp(&self, timeout: Duration) -> io::Result<TcpStream> {
        match &self.target {
            Target::Addr(addr) => TcpStream::connect(addr).await,
            Target::Name(host, port) => {
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
                    .await?
                    .collect();
                let share = timeout / u32::try_from(addrs.len()).unwrap_or(u32::MAX).max(1);
                let mut last = None;
                for addr in addrs {
                    match tokio::time::timeout(share, TcpStream::connect(addr)).await {
                        Ok(Ok(stream)) => return Ok(stream),
                        Ok(Err(e)) => last = Some(e),
                        Err(_) => {
                            last = Some(io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!("{addr} did not accept within {share:?}"),
                            ))
                        }
                    }
                }
                Err(last.unwrap_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{host} resolves to no address"),
                    )
                }))
            }
        }
    }
}

/// An upstream response body: passes the upstream's bytes through, and gives the connection back to the
/// pool once the message has been read exactly to its end (or had no content to begin with).
pub struct PooledBody {
    inner: ResponseBody<TcpStream>,
    pool: Option<Arc<Inner>>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(pool) = self.pool.take() {
            if let Some(conn) = self.inner.take_reusable() {
                pool.put(conn);
            }
        }
    }

    /// For a `101 Switching Protocols` response: the upstream's stream and the bytes already read from
    /// it. The body is empty afterwards.
    pub fn take_upgraded(&mut self) -> Option<(TcpStream, Bytes)> {
        self.pool = None;
        self.inner.take_upgraded()
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = h1::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None | Some(Ok(_))) = &polled {
            if this.inner.is_end_stream() {
                this.release();
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

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body with nothing left to read is complete even if never polled (`HEAD`, `204`, an exact
        // length read in full); otherwise the connection is dropped, which ends it.
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_comes_from_the_url() {
        let target = |url: &str| {
            let pool = Pool::new(&Url::parse(url).unwrap());
            match &pool.inner.target {
                Target::Addr(addr) => addr.to_string(),
                Target::Name(host, port) => format!("name {host} {port}"),
            }
        };
        assert_eq!(target("http://127.0.0.1:9000/app/"), "127.0.0.1:9000");
        assert_eq!(target("http://[::1]:9000"), "[::1]:9000");
        assert_eq!(target("http://app.internal"), "name app.internal 80");
        assert_eq!(target("http://LocalHost:8080"), "name localhost 8080");
    }
}

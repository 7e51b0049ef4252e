//! Keep-alive HTTP/1.1 connections to one upstream.
//!
//! Each `Upstream` owns one pool, built at start-up, so a request finds its pool without hashing anything.
//! Idle connections wait in shards, each a short `Vec` behind its own lock; a worker thread puts to and
//! takes from the shard its thread-local index picks, and only looks at the others when its own is empty.
//! No lock is shared by all requests, and each shard holds at most `SHARD_CAPACITY` connections.
//!
//! A connection goes back to the pool once its response body has been read to the end (`PooledBody`):
//! from then on hyper's `SendRequest` takes the next request. A connection whose response was cut short
//! (the client went away, a read failed) and one that switched protocols (`101`) are never reused.
//! Taking one out, a connection that has closed meanwhile or has been idle for `IDLE_TIMEOUT` is dropped,
//! which ends it; while connections are idle, a background task closes the expired ones as well.
//!
//! A connection the upstream closed just as it was taken out fails the request before a byte was written;
//! hyper then hands the request back, and it is sent once more on a new connection. A request that may
//! have reached the upstream is never sent again.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use url::{Host, Url};

use super::UpstreamBody;

/// How long a connection may sit idle in the pool before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const SHARDS: usize = 16;
/// Idle connections per shard; beyond this the longest idle one is closed.
const SHARD_CAPACITY: usize = 64;

type Sender = SendRequest<UpstreamBody>;

struct Idle {
    sender: Sender,
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
    /// The connection failed during the exchange.
    Http(hyper::Error),
}

/// The connection pool of one upstream.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    target: Target,
    shards: Box<[Mutex<Vec<Idle>>]>,
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

fn lock(shard: &Mutex<Vec<Idle>>) -> MutexGuard<'_, Vec<Idle>> {
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
                shards: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
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
            Some(mut sender) => match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.wrap(sender, response)),
                // The connection closed before the request was written: it never left, so it may go
                // again, once, on a new connection.
                Err(mut e) => match e.take_message() {
                    Some(req) => req,
                    None => return Err(Error::Http(e.into_error())),
                },
            },
            None => req,
        };
        // Boxed: the common case, an idle connection, keeps a small future.
        let mut sender = Box::pin(self.inner.connect(connect_timeout)).await?;
        let response = sender.send_request(req).await.map_err(Error::Http)?;
        Ok(self.wrap(sender, response))
    }

    fn wrap(&self, sender: Sender, response: Response<Incoming>) -> Response<PooledBody> {
        let conn = if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now belongs to the upgraded protocol.
            None
        } else {
            Some(Returning {
                pool: self.inner.clone(),
                sender,
            })
        };
        response.map(|inner| PooledBody { inner, conn })
    }
}

impl Inner {
    /// An idle connection ready for a request, if there is one.
    fn checkout(&self) -> Option<Sender> {
        let home = home_shard();
        let mut now = None;
        for i in 0..SHARDS {
            let mut idle = lock(&self.shards[(home + i) % SHARDS]);
            while let Some(entry) = idle.pop() {
                let now = *now.get_or_insert_with(Instant::now);
                if entry.sender.is_ready() && now.duration_since(entry.since) < IDLE_TIMEOUT {
                    return Some(entry.sender);
                }
                // Closed or expired: dropping the sender ends the connection.
            }
        }
        None
    }

    fn put(self: &Arc<Self>, sender: Sender) {
        let entry = Idle {
            sender,
            since: Instant::now(),
        };
        {
            let mut idle = lock(&self.shards[home_shard()]);
            if idle.len() >= SHARD_CAPACITY {
                idle.remove(0);
            }
            idle.push(entry);
        }
        if !self.reaping.load(Ordering::SeqCst) {
            self.start_reaper();
        }
    }

    /// Give a connection whose response was read to the end back to the pool. hyper readies it for the
    /// next request as soon as its task has seen the end of the response, which is nearly always already
    /// the case; otherwise a small task waits for that.
    fn give_back(self: Arc<Self>, mut sender: Sender) {
        if sender.is_ready() {
            self.put(sender);
        } else if !sender.is_closed() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Ok(Ok(())) = tokio::time::timeout(IDLE_TIMEOUT, sender.ready()).await {
                        self.put(sender);
                    }
                });
            }
        }
    }

    /// Close expired and closed idle connections; returns how many idle ones are left.
    fn reap(&self) -> usize {
        let now = Instant::now();
        self.shards
            .iter()
            .map(|shard| {
                let mut idle = lock(shard);
                idle.retain(|e| e.sender.is_ready() && now.duration_since(e.since) < IDLE_TIMEOUT);
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

    /// A new connection, its task spawned.
    async fn connect(&self, timeout: Duration) -> Result<Sender, Error> {
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
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(Error::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream connection ended: {e}");
            }
        });
        Ok(sender)
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

/// A connection lent to one exchange, on its way back to the pool.
struct Returning {
    pool: Arc<Inner>,
    sender: Sender,
}

/// An upstream response body: passes the upstream's stream through, and gives the connection back to the
/// pool once it has been read to the end (or had no content to begin with).
pub struct PooledBody {
    inner: Incoming,
    conn: Option<Returning>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(Returning { pool, sender }) = self.conn.take() {
            pool.give_back(sender);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(frame))) => {
                if frame.is_trailers() || this.inner.is_end_stream() {
                    this.release();
                }
            }
            // The rest of the message is lost: the connection cannot carry another.
            Poll::Ready(Some(Err(_))) => this.conn = None,
            Poll::Pending => {}
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

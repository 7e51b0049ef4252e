//! Keep-alive connections to one upstream: HTTP/1.1, or over TLS HTTP/2 when the upstream offers it.
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
//!
//! An `https://` upstream is reached through rustls (`tls`). When its ALPN answer is `h2`, the one
//! HTTP/2 connection carries every request at once (each a stream) and is shared rather than pooled;
//! it is replaced when it closes. A request that upgrades always goes on an HTTP/1.1 connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use http::{header, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use url::{Host, Url};

use super::tls::{self, Connectors};
use super::UpstreamBody;

/// How long a connection may sit idle in the pool before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const SHARDS: usize = 16;
/// Idle connections per shard; beyond this the longest idle one is closed.
const SHARD_CAPACITY: usize = 64;

type Sender = SendRequest<UpstreamBody>;
type H2Sender = http2::SendRequest<UpstreamBody>;

/// The TLS error that ended a connection, as rustls reported it: HTTP/2 passes on only its text.
type TlsFailure = Arc<OnceLock<rustls::Error>>;

/// The shared HTTP/2 connection and what ended it, if anything has.
#[derive(Clone)]
struct Shared {
    sender: H2Sender,
    failure: TlsFailure,
}

/// A new connection, by the protocol it speaks.
enum Fresh {
    Http1(Sender),
    Http2(Shared),
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// Where the upstream's connections go: an address, or a host name resolved on every connect.
enum Target {
    Addr(SocketAddr),
    Name(String, u16),
}

/// How an `https://` upstream is reached.
struct TlsTarget {
    connectors: Arc<Connectors>,
    /// The name its certificate must carry.
    name: ServerName<'static>,
    /// `:authority` of HTTP/2 requests that carry no `Host`.
    authority: Authority,
}

/// Why a request got no response from the upstream.
#[derive(Debug)]
pub enum Error {
    /// No connection could be made (refused, unresolvable, timed out).
    Connect(io::Error),
    /// TLS failed, in the handshake or later (an alert): why, in words (`tls::explain`).
    Tls(String),
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
    /// Whether the upstream is `https://`: then its connections are TLS or none.
    https: bool,
    /// How to reach an `https://` upstream.
    tls: Option<TlsTarget>,
    /// The shared HTTP/2 connection, once the upstream chose HTTP/2.
    h2: Mutex<Option<Shared>>,
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
    /// A pool for the upstream at `url` (without a port, 80 or 443). An `https` URL needs
    /// `connectors`; without them its connections fail with a TLS error.
    pub fn new(url: &Url, connectors: Option<Arc<Connectors>>) -> Pool {
        let port = url.port_or_known_default().unwrap_or(80);
        let target = match url.host() {
            Some(Host::Ipv4(ip)) => Target::Addr(SocketAddr::new(ip.into(), port)),
            Some(Host::Ipv6(ip)) => Target::Addr(SocketAddr::new(ip.into(), port)),
            Some(Host::Domain(name)) => Target::Name(name.to_string(), port),
            None => Target::Name(String::new(), port),
        };
        let https = url.scheme() == "https";
        let tls = match (https, connectors, tls::server_name(url)) {
            (true, Some(connectors), Some(name)) => {
                let authority = match url.port() {
                    Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
                    None => url.host_str().unwrap_or_default().to_string(),
                };
                authority
                    .parse::<Authority>()
                    .ok()
                    .map(|authority| TlsTarget {
                        connectors,
                        name,
                        authority,
                    })
            }
            _ => None,
        };
        Pool {
            inner: Arc::new(Inner {
                target,
                https,
                tls,
                h2: Mutex::new(None),
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
        let upgrade = req.headers().contains_key(header::UPGRADE);
        let mut req = req;
        if !upgrade {
            if let Some(mut h2) = self.inner.shared_h2() {
                match h2.sender.try_send_request(self.inner.for_h2(req)).await {
                    Ok(response) => return Ok(unpooled(response)),
                    // Closed before the request left: it may go again, on a new connection.
                    Err(mut e) => match e.take_message() {
                        Some(sent_back) => {
                            self.inner.forget_h2();
                            req = sent_back;
                        }
                        None => return Err(self.inner.h2_failure(e.into_error(), &h2)),
                    },
                }
            }
        }
        // A request the HTTP/2 connection sent back is in HTTP/2's form; HTTP/1.1 wants its own.
        let req = for_h1(req);
        let req = match self.inner.checkout() {
            Some(mut sender) => match sender.try_send_request(req).await {
                Ok(response) => return Ok(self.wrap(sender, response)),
                // The connection closed before the request was written: it never left, so it may go
                // again, once, on a new connection.
                Err(mut e) => match e.take_message() {
                    Some(req) => req,
                    None => return Err(self.inner.failure(e.into_error())),
                },
            },
            None => req,
        };
        // Boxed: the common case, an idle connection, keeps a small future.
        match Box::pin(self.inner.connect(connect_timeout, upgrade)).await? {
            Fresh::Http1(mut sender) => {
                let response = sender
                    .send_request(for_h1(req))
                    .await
                    .map_err(|e| self.inner.failure(e))?;
                Ok(self.wrap(sender, response))
            }
            Fresh::Http2(mut h2) => {
                *lock_h2(&self.inner.h2) = Some(h2.clone());
                let response = h2
                    .sender
                    .send_request(self.inner.for_h2(req))
                    .await
                    .map_err(|e| self.inner.h2_failure(e, &h2))?;
                Ok(unpooled(response))
            }
        }
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

/// The HTTP/1.1 form of a request made for HTTP/2 (see `Inner::for_h2`): `Host` again, and the
/// origin-form target. A request in HTTP/1.1 form is returned as it is.
fn for_h1(mut req: Request<UpstreamBody>) -> Request<UpstreamBody> {
    let Some(authority) = req.uri().authority().cloned() else {
        return req;
    };
    if !req.headers().contains_key(header::HOST) {
        if let Ok(host) = http::HeaderValue::from_str(authority.as_str()) {
            req.headers_mut().insert(header::HOST, host);
        }
    }
    let target = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(target);
    *req.version_mut() = Version::HTTP_11;
    req
}

/// A response on the shared HTTP/2 connection: nothing to give back.
fn unpooled(response: Response<Incoming>) -> Response<PooledBody> {
    response.map(|inner| PooledBody { inner, conn: None })
}

fn lock_h2(h2: &Mutex<Option<Shared>>) -> MutexGuard<'_, Option<Shared>> {
    h2.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// The shared HTTP/2 connection, while it is open.
    fn shared_h2(&self) -> Option<Shared> {
        let mut slot = lock_h2(&self.h2);
        match slot.as_ref() {
            Some(h2) if !h2.sender.is_closed() => Some(h2.clone()),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    /// Drop the shared HTTP/2 connection once it has closed (a newer one stays).
    fn forget_h2(&self) {
        let mut slot = lock_h2(&self.h2);
        if slot.as_ref().is_some_and(|h2| h2.sender.is_closed()) {
            *slot = None;
        }
    }

    /// An HTTP/2 request names its target in `:scheme` and `:authority` (RFC 9113 section 8.3.1):
    /// the URI becomes absolute, its authority the `Host` the proxy chose, and `Host` goes.
    fn for_h2(&self, mut req: Request<UpstreamBody>) -> Request<UpstreamBody> {
        let host = req
            .headers_mut()
            .remove(header::HOST)
            .and_then(|h| Authority::try_from(h.as_bytes()).ok());
        let authority = req
            .uri()
            .authority()
            .cloned()
            .or(host)
            .or_else(|| self.tls.as_ref().map(|t| t.authority.clone()));
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(Scheme::HTTPS);
        parts.authority = authority;
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        *req.version_mut() = Version::HTTP_2;
        req
    }

    /// A failed exchange; one that TLS ended says so.
    fn failure(&self, e: hyper::Error) -> Error {
        match (&self.tls, tls::rustls_error(&e)) {
            (Some(t), Some(tls_error)) => {
                Error::Tls(tls::explain(tls_error, t.connectors.client_certificate))
            }
            _ => Error::Http(e),
        }
    }

    /// A failed exchange on an HTTP/2 connection; one that TLS ended says so.
    fn h2_failure(&self, e: hyper::Error, h2: &Shared) -> Error {
        match (&self.tls, h2.failure.get()) {
            (Some(t), Some(tls_error)) => {
                Error::Tls(tls::explain(tls_error, t.connectors.client_certificate))
            }
            _ => self.failure(e),
        }
    }

    /// An idle HTTP/1.1 connection ready for a request, if there is one.
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

    /// A new connection, its task spawned: HTTP/1.1, or HTTP/2 when TLS negotiated it (never for a
    /// request that upgrades). The TCP connection and the TLS handshake share `timeout`.
    async fn connect(&self, timeout: Duration, upgrade: bool) -> Result<Fresh, Error> {
        let timed_out = || {
            Error::Connect(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {timeout:?}"),
            ))
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = match tokio::time::timeout_at(deadline, self.tcp(timeout)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(Error::Connect(e)),
            Err(_) => return Err(timed_out()),
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY not set on an upstream connection: {e}");
        }
        if !self.https {
            return http1_over(stream).await.map(Fresh::Http1);
        }
        let Some(tls) = &self.tls else {
            // Never the case for a validated configuration: fail closed rather than speak plain HTTP.
            return Err(Error::Tls(
                "no TLS settings for this https:// upstream".into(),
            ));
        };
        let connector = if upgrade {
            &tls.connectors.http1
        } else {
            &tls.connectors.negotiating
        };
        let stream =
            match tokio::time::timeout_at(deadline, connector.connect(tls.name.clone(), stream))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    return Err(Error::Tls(match tls::rustls_error(&e) {
                        Some(tls_error) => {
                            tls::explain(tls_error, tls.connectors.client_certificate)
                        }
                        None => format!("the TLS handshake failed: {e}"),
                    }))
                }
                Err(_) => return Err(timed_out()),
            };
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return http1_over(stream).await.map(Fresh::Http1);
        }
        let failure = TlsFailure::default();
        let watched = Watched {
            inner: stream,
            failure: failure.clone(),
        };
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .handshake(TokioIo::new(watched))
            .await
            .map_err(|e| self.failure(e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("upstream HTTP/2 connection ended: {e}");
            }
        });
        Ok(Fresh::Http2(Shared { sender, failure }))
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

/// A TLS stream that keeps the rustls error that ended it (see [`TlsFailure`]).
struct Watched<S> {
    inner: S,
    failure: TlsFailure,
}

impl<S> Watched<S> {
    fn note<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if let Poll::Ready(Err(e)) = &polled {
            if let Some(tls_error) = tls::rustls_error(e) {
                let _ = self.failure.set(tls_error.clone());
            }
        }
        polled
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.note(polled)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note(polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.note(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.note(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.note(polled)
    }
}

/// An HTTP/1.1 connection over `io`, its task spawned.
async fn http1_over<T>(io: T) -> Result<Sender, Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(Error::Http)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("upstream connection ended: {e}");
        }
    });
    Ok(sender)
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
            let pool = Pool::new(&Url::parse(url).unwrap(), None);
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

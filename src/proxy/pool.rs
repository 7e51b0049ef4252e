//! Keep-alive connections to one upstream: HTTP/1.1, or over TLS HTTP/2 when the upstream offers it.
//!
//! Each `Upstream` owns one pool, built at start-up, so a request finds its pool without hashing anything.
//! Idle connections wait in shards, each a short `Vec` behind its own lock; a worker thread puts to and
//! takes from the shard its thread-local index picks, and only looks at the others when its own is empty.
//! No lock is shared by all requests. At most `MAX_IDLE` connections wait in all shards together (a count
//! kept beside them): under a thousand concurrent requests on one worker thread, every connection that
//! finishes finds room, so the next request reuses it instead of opening a new one.
//!
//! An HTTP/1.1 exchange runs in the request's own task (`h1`): no task per connection, no channel
//! between the request and its connection, and an idle connection holds no buffer. A connection goes
//! back to the pool once its response body has been read exactly to its end (`PooledBody`). One whose
//! response was cut short (the client went away, a read failed), whose upstream asked to close it, or
//! that switched protocols (`101`) is never reused. Taking one out, a connection that has closed
//! meanwhile (or has been idle for `IDLE_TIMEOUT`) is dropped, which ends it; while connections are idle,
//! a background task closes the expired and closed ones as well.
//!
//! A request without a body and with an idempotent method whose reused connection turns out to have been
//! closed by the upstream, before any byte of a response, is sent once more on a new connection; no other
//! request is ever sent twice.
//!
//! An `https://` upstream is reached through rustls (`tls`). When its ALPN answer is `h2`, the one
//! HTTP/2 connection carries every request at once (each a stream) and is shared rather than pooled;
//! it is replaced when it closes. A request that upgrades always goes on an HTTP/1.1 connection.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{header, Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use url::{Host, Url};

use super::h1::{self, Connection, ResponseBody, SendError};
use super::tls::{self, Connectors};
use super::UpstreamBody;

/// How long a connection may sit idle in the pool before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const SHARDS: usize = 16;
/// Idle connections in all shards together; beyond this the longest idle one of the shard is closed.
const MAX_IDLE: usize = 1024;

type BoxError = Box<dyn StdError + Send + Sync>;
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
    Http1(Connection<Stream>),
    Http2(Shared),
}

struct Idle {
    conn: Connection<Stream>,
    since: Instant,
}

/// The byte stream under an HTTP/1.1 connection.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<Watched<TlsStream<TcpStream>>>),
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
    /// The exchange failed.
    Http(BoxError),
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
            Some(conn) => match conn.send(req).await {
                Ok(response) => return Ok(self.wrap(response)),
                Err(SendError::Retry(req, e)) => {
                    tracing::debug!(
                        "a kept-alive upstream connection was closed ({e}); sending again on a new one"
                    );
                    *req
                }
                Err(SendError::Failed(e)) => return Err(self.inner.failure(e.into())),
            },
            None => req,
        };
        // Boxed: the common case, an idle connection, keeps a small future.
        match Box::pin(self.inner.connect(connect_timeout, upgrade)).await? {
            Fresh::Http1(conn) => match conn.send(for_h1(req)).await {
                Ok(response) => Ok(self.wrap(response)),
                Err(SendError::Retry(_, e) | SendError::Failed(e)) => {
                    Err(self.inner.failure(e.into()))
                }
            },
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

    fn wrap(&self, response: Response<ResponseBody<Stream>>) -> Response<PooledBody> {
        response.map(|inner| {
            PooledBody(Kind::Http1 {
                inner,
                pool: Some(self.inner.clone()),
            })
        })
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
    response.map(|body| PooledBody(Kind::Http2(body)))
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
    fn failure(&self, e: BoxError) -> Error {
        match (&self.tls, tls::rustls_error(e.as_ref())) {
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
            _ => self.failure(e.into()),
        }
    }

    /// An idle HTTP/1.1 connection ready for a request, if there is one.
    fn checkout(&self) -> Option<Connection<Stream>> {
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
                // Closed or expired: dropping the connection ends it.
            }
        }
        None
    }

    fn put(self: &Arc<Self>, conn: Connection<Stream>) {
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
            return Ok(Fresh::Http1(Connection::new(Stream::Plain(stream))));
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
        let failure = TlsFailure::default();
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            let watched = Watched {
                inner: stream,
                failure,
            };
            return Ok(Fresh::Http1(Connection::new(Stream::Tls(Box::new(
                watched,
            )))));
        }
        let watched = Watched {
            inner: stream,
            failure: failure.clone(),
        };
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .handshake(TokioIo::new(watched))
            .await
            .map_err(|e| self.failure(e.into()))?;
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
pub struct Watched<S> {
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

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl h1::Io for Stream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Stream::Plain(s) => s.poll_read_ready(cx),
            // TLS may hold decrypted bytes already: no way to wait without reading.
            Stream::Tls(_) => Poll::Ready(Ok(())),
        }
    }
}

/// An upstream response body: passes the upstream's bytes through. Over HTTP/1.1 it gives the connection
/// back to the pool once the message has been read exactly to its end (or had no content to begin
/// with); over HTTP/2 the stream ends with it.
pub struct PooledBody(Kind);

enum Kind {
    Http1 {
        inner: ResponseBody<Stream>,
        pool: Option<Arc<Inner>>,
    },
    Http2(Incoming),
}

impl PooledBody {
    fn release(&mut self) {
        if let Kind::Http1 { inner, pool } = &mut self.0 {
            if let Some(pool) = pool.take() {
                if let Some(conn) = inner.take_reusable() {
                    pool.put(conn);
                }
            }
        }
    }

    /// For a `101 Switching Protocols` response: the upstream's stream and the bytes already read from
    /// it. The body is empty afterwards.
    pub fn take_upgraded(&mut self) -> Option<(Stream, Bytes)> {
        match &mut self.0 {
            Kind::Http1 { inner, pool } => {
                *pool = None;
                inner.take_upgraded()
            }
            Kind::Http2(_) => None,
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match &mut this.0 {
            Kind::Http1 { inner, .. } => {
                let polled = Pin::new(inner).poll_frame(cx);
                let ended =
                    matches!(polled, Poll::Ready(None | Some(Ok(_)))) && this.is_end_stream();
                if ended {
                    this.release();
                }
                polled.map_err(Into::into)
            }
            Kind::Http2(inner) => Pin::new(inner).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Http1 { inner, .. } => inner.is_end_stream(),
            Kind::Http2(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.0 {
            Kind::Http1 { inner, .. } => inner.size_hint(),
            Kind::Http2(inner) => inner.size_hint(),
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body with nothing left to read is complete even if never polled (`HEAD`, `204`, an exact
        // length read in full); otherwise the connection is dropped, which ends it.
        if self.is_end_stream() {
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

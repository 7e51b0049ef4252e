//! Accepting connections: HTTP/1.1 and HTTP/2 (prior knowledge, or ALPN under TLS) through hyper-util's
//! auto builder, with limits against slow or oversized request heads, idle and silent connections, too
//! many connections, and graceful shutdown.
//!
//! Every connection is bounded in time whenever no request is in flight on it (`deadline`): before
//! its first byte and while a head arrives by `server.header_read_timeout`, between requests by
//! `server.keepalive_timeout`. At most `server.max_connections` are open at once; one beyond that
//! is closed as soon as it is accepted, so it costs no descriptor and does not disturb the others.
//! When accepting fails for want of resources (EMFILE and the like), the loop pauses, doubling the
//! pause from 10 ms up to 1 s, and says so in the log at most once every 10 seconds.
//!
//! Shutdown: when the shutdown future completes, `/readyz` answers 503 at once and the listener keeps
//! accepting for `server.shutdown_delay`, so load balancers and Kubernetes endpoints stop sending before
//! connections are refused. Then the listener is closed (new connections are refused), idle keep-alive
//! connections are closed, in-flight requests run to completion, and after `server.grace_period`
//! whatever is left is dropped. Both durations, and the connection time limits, are read from the
//! configuration in force when they apply, so a reload changes them.
//!
//! The metrics listener (`server.metrics_listen`) is served by the same code ([`serve_metrics`]), its
//! requests marked as its own so the route phase answers only `/metrics`, `/healthz` and `/readyz`
//! there; it takes at most [`METRICS_MAX_CONNECTIONS`] connections, and its connections are not
//! counted among the open client connections. It closes once the main listener has drained.

mod deadline;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::either::Either;

use self::deadline::{ConnClock, Guarded, InFlight, Limits, Tracked};
use crate::proxy::ConnInfo;
use crate::router::Listener;
use crate::runtime::Runtime;

/// Largest request head accepted, in bytes; a larger one gets `431` (HTTP/1.1) or a stream reset (HTTP/2).
/// Room for a session chunked over several cookies.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How long a connection closed for idleness may take to say goodbye (an HTTP/2 GOAWAY) before it is
/// dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Open files kept back from the limit before it is shared out: the listener, the log, the
/// provider's connections, the runtime's own.
const FD_RESERVE: u64 = 32;

/// The default of `server.max_connections` for a soft open-file limit: half of what the reserve
/// leaves, since each client connection may hold an upstream connection as well.
pub fn max_connections_for(open_file_limit: u64) -> usize {
    let usable = open_file_limit.min(1 << 24).saturating_sub(FD_RESERVE) / 2;
    usize::try_from(usable).unwrap_or(usize::MAX).max(1)
}

/// `server.max_connections`, or its default from this process's soft open-file limit.
fn max_connections(configured: Option<usize>) -> usize {
    let limit = rlimit::Resource::NOFILE.get();
    if let Some(max) = configured {
        if let Ok((soft, _)) = limit {
            if max > max_connections_for(soft) {
                tracing::warn!(
                    "server.max_connections = {max}, but the open-file limit {soft} leaves room for about {} \
                     (each connection may need a second one upstream): expect failed accepts under load",
                    max_connections_for(soft)
                );
            }
        }
        return max;
    }
    match limit {
        Ok((soft, _)) => {
            let max = max_connections_for(soft);
            tracing::info!(
                max_connections = max,
                open_file_limit = soft,
                "at most {max} client connections at once (half the open-file limit {soft}, less a reserve; server.max_connections sets it)"
            );
            max
        }
        Err(e) => {
            let max = max_connections_for(1024);
            tracing::warn!(
                "cannot read the open-file limit ({e}); at most {max} client connections at once"
            );
            max
        }
    }
}

/// A log line allowed at most once per `every`, counting what it held back.
struct Throttle {
    every: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(lines held back since the last one)` when a line may be written now.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

const LOG_EVERY: Duration = Duration::from_secs(10);
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// Failed accepts: how long to pause before the next, and when to say so.
struct AcceptErrors {
    pause: Duration,
    log: Throttle,
}

impl AcceptErrors {
    fn new() -> AcceptErrors {
        AcceptErrors {
            pause: FIRST_PAUSE,
            log: Throttle::new(LOG_EVERY),
        }
    }

    fn succeeded(&mut self) {
        self.pause = FIRST_PAUSE;
    }

    /// The pause before accepting again; `None` for an error of one connection only (it was reset
    /// before it could be accepted), after which accepting goes on at once.
    fn failed(&mut self, e: &io::Error) -> Option<Duration> {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionRefused
                | io::ErrorKind::Interrupted
        ) {
            tracing::debug!("accept failed for one connection: {e}");
            return None;
        }
        let pause = self.pause;
        if let Some(held_back) = self.log.allow() {
            let more = match held_back {
                0 => String::new(),
                n => format!("; {n} more since the last report"),
            };
            tracing::warn!(
                "accept failed: {e}; pausing new connections for {pause:?}{more} \
                 (raise the open-file limit or lower server.max_connections)"
            );
        }
        self.pause = (self.pause * 2).min(LONGEST_PAUSE);
        Some(pause)
    }
}

/// Connections the metrics listener takes at once: a scraper or two, and the probes.
pub const METRICS_MAX_CONNECTIONS: usize = 16;

/// Serve `listener` until `shutdown` completes, then drain for at most the grace period.
pub async fn serve(
    rt: Arc<Runtime>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    serve_as(rt, listener, tls, Listener::Main, shutdown).await;
}

/// Serve the metrics listener (plain HTTP) until `shutdown` completes.
pub async fn serve_metrics(
    rt: Arc<Runtime>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    serve_as(rt, listener, None, Listener::Metrics, shutdown).await;
}

async fn serve_as(
    rt: Arc<Runtime>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    role: Listener,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The head timeout is `deadline`'s: hyper's would run from the end of the previous response,
        // cutting idle keep-alive connections at the header timeout.
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let builder = Arc::new(builder);
    // Read once: a reload does not resize the connection slots.
    let max = match role {
        Listener::Main => max_connections(rt.snapshot().config.server.max_connections),
        Listener::Metrics => METRICS_MAX_CONNECTIONS,
    };
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(());
    let mut accept_errors = AcceptErrors::new();
    let mut refusals = Throttle::new(LOG_EVERY);
    // Readiness goes at once; the listener stays open for the delay (SPEC: SIGTERM).
    let stop = async {
        shutdown.await;
        if role == Listener::Metrics {
            return;
        }
        rt.start_draining();
        let delay = rt.snapshot().config.server.shutdown_delay;
        if !delay.is_zero() {
            tracing::info!(
                "shutting down: /readyz answers 503; still accepting for {delay:?} (server.shutdown_delay)"
            );
            tokio::time::sleep(delay).await;
        }
    };
    tokio::pin!(stop);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => {
                    accept_errors.succeeded();
                    pair
                }
                Err(e) => {
                    if let Some(pause) = accept_errors.failed(&e) {
                        tokio::select! {
                            () = tokio::time::sleep(pause) => {}
                            () = &mut stop => break,
                        }
                    }
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(held_back) = refusals.allow() {
                tracing::warn!(
                    "{max} connections open (server.max_connections): refusing new ones; \
                     {held_back} refused since the last report"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let limits = {
            let snapshot = rt.snapshot();
            Limits {
                header_read: snapshot.config.server.header_read_timeout,
                keepalive: snapshot.config.server.keepalive_timeout,
            }
        };
        tokio::spawn(serve_connection(Connection {
            rt: rt.clone(),
            builder: builder.clone(),
            stream,
            peer,
            slot,
            tls: tls.clone(),
            limits,
            role,
            stop: stop_rx.clone(),
        }));
    }

    drop(listener);
    let grace_period = rt.snapshot().config.server.grace_period;
    if role == Listener::Metrics {
        // Stopped once the main listener has drained: its lines say all there is to say.
        let _ = stop_tx.send(());
        drop(stop_rx);
        let _ = tokio::time::timeout(grace_period, stop_tx.closed()).await;
        return;
    }
    tracing::info!(
        "shutting down: no new connections; waiting up to {grace_period:?} for in-flight requests"
    );
    let _ = stop_tx.send(());
    drop(stop_rx);
    tokio::select! {
        () = stop_tx.closed() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace_period) => {
            tracing::warn!("grace period over; dropping the remaining connections");
        }
    }
}

/// One accepted connection and what serving it takes.
struct Connection {
    rt: Arc<Runtime>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    slot: OwnedSemaphorePermit,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    role: Listener,
    /// Changes (or closes) when the server shuts down.
    stop: watch::Receiver<()>,
}

async fn serve_connection(c: Connection) {
    let Connection {
        rt,
        builder,
        stream,
        peer,
        slot,
        tls,
        limits,
        role,
        mut stop,
    } = c;
    let _open = (role == Listener::Main).then(|| rt.metrics.connection_opened());
    let tls_used = tls.is_some();
    // The client's byte stream, plain or TLS.
    let io = match tls {
        None => Either::Left(stream),
        Some(acceptor) => {
            // The handshake is part of the first head: it gets the header timeout.
            let handshake = tokio::select! {
                r = tokio::time::timeout(limits.header_read, acceptor.accept(stream)) => r,
                _ = stop.changed() => return,
            };
            match handshake {
                Ok(Ok(stream)) => Either::Right(Box::new(stream)),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let clock = ConnClock::new();
    let io = TokioIo::new(Guarded::new(io, clock.clone(), slot));
    let conn_info = ConnInfo::new(peer, tls_used);
    let service = {
        let clock = clock.clone();
        service_fn(move |req| {
            let request = InFlight::start(&clock, req.version() == http::Version::HTTP_2);
            let rt = rt.clone();
            let conn = conn_info.clone();
            async move {
                let response = crate::phases::handle(rt, conn, role, req).await;
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, request)))
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = stop.changed(), if !stopping => {
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
            () = deadline::expired(&clock, &limits), if !stopping => {
                tracing::debug!(%peer, "closing a connection without a request past its deadline");
                if clock.head_in_progress() {
                    // Half a head: nothing to finish and no one to say goodbye to.
                    break Ok(());
                }
                conn.as_mut().graceful_shutdown();
                break tokio::time::timeout(CLOSE_GRACE, conn.as_mut())
                    .await
                    .unwrap_or(Ok(()));
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "connection ended with an error: {e}");
    }
}

/// A rustls acceptor for the configured certificate chain and key, offering h2 and http/1.1 by ALPN;
/// the certificate is read once (see [`tls::Certificates`] for one that follows its files).
pub fn tls_acceptor(files: &crate::config::TlsFiles) -> Result<tokio_rustls::TlsAcceptor, String> {
    Ok(tls::Certificates::load(files)?.acceptor())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_cap_leaves_room_for_upstream_connections() {
        assert_eq!(max_connections_for(1024), 496);
        assert_eq!(max_connections_for(512), 240);
        assert_eq!(max_connections_for(65_536), 32_752);
        assert_eq!(max_connections_for(10), 1);
        assert_eq!(max_connections_for(u64::MAX), (1 << 23) - 16);
    }

    #[test]
    fn a_throttled_line_counts_what_it_held_back() {
        let mut log = Throttle::new(Duration::from_secs(3600));
        assert_eq!(log.allow(), Some(0));
        assert_eq!(log.allow(), None);
        assert_eq!(log.allow(), None);
        log.last = Some(Instant::now() - Duration::from_secs(3601));
        assert_eq!(log.allow(), Some(2));
    }

    #[test]
    fn accept_pauses_double_up_to_a_second_and_start_over() {
        let mut errors = AcceptErrors::new();
        let emfile = io::Error::from_raw_os_error(24);
        let pauses: Vec<_> = (0..9).map(|_| errors.failed(&emfile).unwrap()).collect();
        assert_eq!(pauses[0], Duration::from_millis(10));
        assert_eq!(pauses[1], Duration::from_millis(20));
        assert_eq!(pauses[7], Duration::from_secs(1));
        assert_eq!(pauses[8], Duration::from_secs(1));
        errors.succeeded();
        assert_eq!(errors.failed(&emfile), Some(Duration::from_millis(10)));
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(errors.failed(&aborted), None);
    }
}

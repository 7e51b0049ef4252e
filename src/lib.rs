//! portcullis: an authenticating reverse proxy.
//!
//! It stands in front of an application that has no login of its own, sends unauthenticated browsers to
//! an OpenID Connect provider, completes the authorization-code flow itself, keeps an encrypted session,
//! and forwards each authenticated request upstream with the user's identity in headers.
//!
//! One path for every request, as named phases (`phases`):
//!
//! ```text
//! server (accept, HTTP/1.1 + HTTP/2, TLS)
//!   -> canonicalize -> route -> authenticate -> refresh -> authorize -> act -> record
//!                       router   session store   oidc      policy      login | proxy   metrics,
//!                                                                                     access log
//! ```
//!
//! `runtime` holds what lives as long as the process (provider, session store and cache, upstream
//! pools) apart from the snapshot built from the configuration (routes, header rules, cookie codec),
//! which a reload swaps whole (`reload`, on `SIGHUP`). Errors: every failure is a `GatewayError`,
//! rendered in one place (`error`).

// The request's future nests every phase, the session store and the proxy: deeper than the compiler's
// default when it computes that future's layout.
#![recursion_limit = "256"]

pub mod assertion;
pub mod backchannel;
pub mod bearer;
pub mod config;
pub mod demo;
pub mod error;
pub mod forward_auth;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod identity;
pub mod login;
pub mod oidc;
pub mod phases;
pub mod policy;
pub mod proxy;
pub mod refresh;
pub mod reload;
pub mod router;
pub mod runtime;
pub mod server;
pub mod session;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Either, Full};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::oidc::Provider;
use crate::runtime::Runtime;

pub use crate::phases::is_api_request;
pub use crate::runtime::provider_config;

/// Response body: an upstream's stream, or a page of the gateway's own.
pub type Body = Either<proxy::PooledBody, Full<Bytes>>;

/// A gateway running in this process: its address and a way to stop it. Used by `demo` and by tests.
pub struct RunningGateway {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    runtime: Arc<Runtime>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningGateway {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The metrics listener's address, with `server.metrics_listen`.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The gateway's runtime: its session store, its provider, its configuration snapshot.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Stop accepting, drain in-flight requests (bounded by the grace period), and wait for the end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// The runtime and the listener's certificates for `config`, with the provider loader and the
/// certificate watcher started.
fn prepare(
    config: Config,
) -> Result<(Arc<Runtime>, Option<Arc<server::tls::Certificates>>), String> {
    let certs = config
        .server
        .tls
        .as_ref()
        .map(server::tls::Certificates::load)
        .transpose()?;
    let rt = Runtime::new(config)?;
    rt.provider.spawn_loader();
    if let Some(certs) = &certs {
        certs.watch();
    }
    Ok((rt, certs))
}

/// The listener of `server.metrics_listen`, when it is set.
pub fn bind_metrics(config: &Config) -> Result<Option<TcpListener>, String> {
    let Some(addr) = config.server.metrics_listen else {
        return Ok(None);
    };
    let cannot = |e: std::io::Error| format!("server.metrics_listen: cannot listen on {addr}: {e}");
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(cannot)?;
    socket.set_reuseaddr(true).map_err(cannot)?;
    socket.bind(addr).map_err(cannot)?;
    socket.listen(1024).map(Some).map_err(cannot)
}

/// Build the gateway from `config` and serve on `listener` (and on `server.metrics_listen`, bound
/// here) until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let metrics = bind_metrics(&config)?;
    run_with_metrics(config, listener, metrics, shutdown).await
}

/// [`run`] with the metrics listener bound by the caller ([`bind_metrics`]).
pub async fn run_with_metrics(
    config: Config,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let (rt, certs) = prepare(config)?;
    let tls = certs.as_ref().map(server::tls::Certificates::acceptor);
    serve_all(rt, listener, metrics, tls, shutdown).await;
    Ok(())
}

/// [`run_with_metrics`] for a configuration read from `path`: on `SIGHUP` the file is read again and
/// applied (`reload`). The handler is in place before anything is served.
pub async fn run_reloadable(
    config: Config,
    path: PathBuf,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let hangups = reload::Hangups::install()?;
    let (rt, certs) = prepare(config)?;
    let tls = certs.as_ref().map(server::tls::Certificates::acceptor);
    let reloader = tokio::spawn(hangups.serve(rt.clone(), path, certs));
    serve_all(rt, listener, metrics, tls, shutdown).await;
    reloader.abort();
    Ok(())
}

/// Serve the main listener until `shutdown` completes, and the metrics listener until the main one
/// has drained (so the metrics and the probes there see the shutdown through).
async fn serve_all(
    rt: Arc<Runtime>,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let (drained, metrics_stop) = tokio::sync::oneshot::channel::<()>();
    let metrics = metrics.map(|listener| {
        tokio::spawn(server::serve_metrics(rt.clone(), listener, async {
            let _ = metrics_stop.await;
        }))
    });
    server::serve(rt, listener, tls, shutdown).await;
    drop(drained);
    if let Some(task) = metrics {
        let _ = task.await;
    }
}

/// Start the gateway on `listener` (and on `server.metrics_listen`, bound here) in a background task.
pub fn spawn(config: Config, listener: TcpListener) -> Result<RunningGateway, String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let metrics = bind_metrics(&config)?;
    let metrics_addr = metrics
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .map_err(|e| e.to_string())?;
    let (rt, certs) = prepare(config)?;
    let tls = certs.as_ref().map(server::tls::Certificates::acceptor);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let runtime = rt.clone();
    let task = tokio::spawn(async move {
        serve_all(rt, listener, metrics, tls, async {
            let _ = rx.await;
        })
        .await;
    });
    Ok(RunningGateway {
        addr,
        metrics_addr,
        runtime,
        shutdown: Some(tx),
        task,
    })
}

/// What `portcullis check` verifies beyond parsing: returns a one-line summary.
pub async fn check(config: &Config, offline: bool) -> Result<String, String> {
    if let Some(files) = &config.server.tls {
        server::tls_acceptor(files)?;
    }
    let provider = Provider::new(provider_config(config)).map_err(|e| e.to_string())?;
    if offline {
        return Ok(format!(
            "{} route(s); provider not contacted (--offline)",
            config.routes.len()
        ));
    }
    provider
        .load_once()
        .await
        .map_err(|e| format!("oidc.issuer: cannot load the provider's metadata: {e}"))?;
    Ok(format!(
        "provider {} reachable; {} route(s); upstream {}",
        config.oidc.issuer,
        config.routes.len(),
        config.upstream.url
    ))
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

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
//!                       router   session store   oidc      policy      login | proxy   logs
//! ```
//!
//! `runtime` holds what lives as long as the process (provider, session store and cache, upstream
//! pools) apart from the snapshot built from the configuration (routes, header rules, cookie codec),
//! which a reload swaps whole. Errors: every failure is a `GatewayError`, rendered in one place
//! (`error`).

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
pub mod router;
pub mod runtime;
pub mod server;
pub mod session;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
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
    runtime: Arc<Runtime>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningGateway {
    pub fn addr(&self) -> SocketAddr {
        self.addr
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

/// The runtime and TLS acceptor for `config`, with the provider loader started.
fn prepare(config: Config) -> Result<(Arc<Runtime>, Option<tokio_rustls::TlsAcceptor>), String> {
    let tls = config
        .server
        .tls
        .as_ref()
        .map(server::tls_acceptor)
        .transpose()?;
    let rt = Runtime::new(config)?;
    rt.provider.spawn_loader();
    Ok((rt, tls))
}

/// Build the gateway from `config` and serve on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let (rt, tls) = prepare(config)?;
    server::serve(rt, listener, tls, shutdown).await;
    Ok(())
}

/// Start the gateway on `listener` in a background task.
pub fn spawn(config: Config, listener: TcpListener) -> Result<RunningGateway, String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (rt, tls) = prepare(config)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let runtime = rt.clone();
    let task = tokio::spawn(async move {
        server::serve(rt, listener, tls, async {
            let _ = rx.await;
        })
        .await;
    });
    Ok(RunningGateway {
        addr,
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

//! portcullis: an authenticating reverse proxy.
//!
//! It stands in front of an application that has no login of its own, sends unauthenticated browsers to
//! an OpenID Connect provider, completes the authorization-code flow itself, keeps an encrypted session,
//! and forwards each authenticated request upstream with the user's identity in headers.
//!
//! One path for every request:
//!
//! ```text
//! server (accept, HTTP/1.1 + HTTP/2, TLS)
//!   -> router (canonical path -> health | /oauth2/* endpoint | route policy)
//!     -> session (cookie -> Session or none)
//!       -> login (start, callback, sign_out, userinfo, auth)  |  proxy (strip, set, stream upstream)
//! errors: every failure is a GatewayError, rendered in one place (error.rs)
//! ```

pub mod config;
pub mod demo;
pub mod error;
pub mod proxy;
pub mod router;
pub mod server;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::config::{Config, Policy};
use crate::error::{text_response, ErrorKind, GatewayError};
use crate::proxy::{ConnInfo, Proxy, Upstream};
use crate::router::{Endpoint, Router, Target};

/// Response body: an upstream's stream, or a page of the gateway's own.
pub type Body = Either<Incoming, Full<Bytes>>;

/// State shared by every request; built once at start-up, never locked.
pub struct App {
    pub config: Config,
    router: Router,
    /// Slot 0 is `[upstream]`; route-specific upstreams follow.
    upstreams: Vec<Upstream>,
    proxy: Proxy,
}

impl App {
    pub fn new(config: Config) -> App {
        let mut upstreams = vec![Upstream::from_url(&config.upstream.url)];
        let mut route_slots = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            match &route.upstream {
                Some(url) => {
                    upstreams.push(Upstream::from_url(url));
                    route_slots.push(upstreams.len() - 1);
                }
                None => route_slots.push(0),
            }
        }
        let router = Router::new(&config.server.prefix, &config.routes, |i| route_slots[i]);
        let identity = config.headers.claims.iter().map(|(h, _)| h.clone());
        let proxy = Proxy::new(
            config.upstream.connect_timeout,
            config.upstream.timeout,
            config.upstream.preserve_host,
            config.server.trusted_proxies.clone(),
            identity,
        );
        App {
            config,
            router,
            upstreams,
            proxy,
        }
    }

    fn ready(&self) -> bool {
        true
    }
}

/// Whether the client is a program rather than a browser navigating (SPEC: API requests get `401` JSON,
/// never a redirect): a method other than GET/HEAD, `X-Requested-With: XMLHttpRequest`, or an `Accept`
/// that asks for JSON rather than HTML.
pub fn is_api_request<B>(req: &Request<B>) -> bool {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return true;
    }
    let headers = req.headers();
    if headers
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"XMLHttpRequest"))
    {
        return true;
    }
    match headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) {
        None => false,
        Some(accept) => {
            let html = accept.contains("text/html") || accept.contains("*/*");
            !html || (accept.contains("application/json") && !accept.contains("text/html"))
        }
    }
}

/// Handle one request; every failure becomes a rendered `GatewayError`, so this never fails.
pub(crate) async fn handle(
    app: Arc<App>,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Response<Body> {
    let api = is_api_request(&req);
    match dispatch(&app, conn, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(api),
    }
}

async fn dispatch(
    app: &App,
    conn: ConnInfo,
    req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    if req.method() == Method::CONNECT {
        return Err(GatewayError::new(
            ErrorKind::MethodNotAllowed,
            "CONNECT refused",
        ));
    }
    let path = router::canonical::canonicalize(req.uri().path()).map_err(|e| {
        GatewayError::new(
            ErrorKind::BadRequest,
            format!("refused path from {}: {e}", conn.peer),
        )
    })?;
    match app.router.route(req.method(), &path) {
        Target::Healthz => Ok(text_response(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok\n",
        )),
        Target::Readyz => Ok(if app.ready() {
            text_response(StatusCode::OK, "text/plain; charset=utf-8", "ready\n")
        } else {
            text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                "not ready\n",
            )
        }),
        Target::Endpoint(Endpoint::Unknown) => Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("no endpoint {path}"),
        )),
        Target::Endpoint(endpoint) => Err(GatewayError::new(
            ErrorKind::NotFound,
            format!("endpoint {endpoint:?} is not available"),
        )),
        Target::Proxy { policy, upstream } => match policy {
            Policy::Deny => Err(GatewayError::new(
                ErrorKind::Forbidden,
                format!("route policy denies {path}"),
            )),
            Policy::Public => {
                let path = path.into_owned();
                app.proxy
                    .forward(req, &conn, &path, &app.upstreams[upstream], Vec::new())
                    .await
            }
            Policy::Authenticated => Err(GatewayError::new(
                ErrorKind::Unauthenticated,
                format!("no session for {path}"),
            )),
        },
    }
}

/// A gateway running in this process: its address and a way to stop it. Used by `demo` and by tests.
pub struct RunningGateway {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningGateway {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, drain in-flight requests (bounded by the grace period), and wait for the end.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Build the gateway from `config` and serve on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let tls = config
        .server
        .tls
        .as_ref()
        .map(server::tls_acceptor)
        .transpose()?;
    let app = Arc::new(App::new(config));
    server::serve(app, listener, tls, shutdown).await;
    Ok(())
}

/// Start the gateway on `listener` in a background task.
pub fn spawn(config: Config, listener: TcpListener) -> Result<RunningGateway, String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let tls = config
        .server
        .tls
        .as_ref()
        .map(server::tls_acceptor)
        .transpose()?;
    let app = Arc::new(App::new(config));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server::serve(app, listener, tls, async {
            let _ = rx.await;
        })
        .await;
    });
    Ok(RunningGateway {
        addr,
        shutdown: Some(tx),
        task,
    })
}

/// What `portcullis check` verifies beyond parsing: returns a one-line summary.
pub async fn check(config: &Config) -> Result<String, String> {
    if let Some(files) = &config.server.tls {
        server::tls_acceptor(files)?;
    }
    Ok(format!(
        "{} route(s), upstream {}",
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, accept: Option<&str>, xhr: bool) -> Request<()> {
        let mut b = Request::builder().method(method).uri("/");
        if let Some(a) = accept {
            b = b.header(header::ACCEPT, a);
        }
        if xhr {
            b = b.header("x-requested-with", "XMLHttpRequest");
        }
        b.body(()).unwrap()
    }

    #[test]
    fn browsers_and_api_clients_are_told_apart() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(!is_api_request(&req(Method::GET, Some(browser), false)));
        assert!(!is_api_request(&req(Method::HEAD, None, false)));
        assert!(!is_api_request(&req(Method::GET, Some("*/*"), false)));
        assert!(is_api_request(&req(
            Method::GET,
            Some("application/json"),
            false
        )));
        assert!(is_api_request(&req(Method::GET, Some(browser), true)));
        assert!(is_api_request(&req(Method::POST, Some(browser), false)));
        assert!(is_api_request(&req(Method::GET, Some("image/png"), false)));
    }
}

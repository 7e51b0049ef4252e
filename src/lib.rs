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
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod login;
pub mod oidc;
pub mod proxy;
pub mod router;
pub mod server;
pub mod session;
pub mod telemetry;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::config::{ClientAuthMethod, Config, Policy};
use crate::error::{text_response, ErrorKind, GatewayError};
use crate::oidc::{ClientAuth, ClientSecret, EndpointOverrides, Provider, ProviderConfig};
use crate::proxy::{ConnInfo, Proxy, Upstream};
use crate::router::{Endpoint, Router, Target};
use crate::session::{CookieSettings, Session, SessionCache, SessionCookies};

/// Response body: an upstream's stream, or a page of the gateway's own.
pub type Body = Either<proxy::PooledBody, Full<Bytes>>;

/// A valid session with the identity headers it gives, computed once per session and cached.
pub struct Authenticated {
    pub session: Session,
    pub identity: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// State shared by every request; built once at start-up, never locked.
pub struct App {
    pub config: Config,
    router: Router,
    /// Slot 0 is `[upstream]`; route-specific upstreams follow.
    upstreams: Vec<Upstream>,
    proxy: Proxy,
    pub provider: Arc<Provider>,
    pub cookies: SessionCookies,
    sessions: SessionCache<Authenticated>,
}

/// The relying-party settings of `[oidc]`, as the `oidc` module takes them.
pub fn provider_config(config: &Config) -> ProviderConfig {
    use secrecy::ExposeSecret as _;
    let oidc = &config.oidc;
    let secret = || {
        ClientSecret::new(
            oidc.client_secret
                .as_ref()
                .map(|s| s.expose_secret().to_string())
                .unwrap_or_default(),
        )
    };
    let client_auth = match oidc.client_auth {
        ClientAuthMethod::SecretBasic => ClientAuth::SecretBasic(secret()),
        ClientAuthMethod::SecretPost => ClientAuth::SecretPost(secret()),
        ClientAuthMethod::PrivateKeyJwt => ClientAuth::PrivateKeyJwt {
            key_pem: oidc
                .private_key
                .as_ref()
                .map(|k| k.expose_secret().clone())
                .unwrap_or_default()
                .into(),
            key_id: oidc.private_key_id.clone(),
        },
        ClientAuthMethod::None => ClientAuth::None,
    };
    ProviderConfig {
        issuer: oidc.issuer.clone(),
        client_id: oidc.client_id.clone(),
        client_auth,
        scopes: oidc.scopes.clone(),
        pkce: oidc.pkce,
        redirect_uri: login::redirect_uri(&config.server.public_url, &config.server.prefix),
        endpoints: EndpointOverrides {
            authorization_endpoint: oidc.authorization_endpoint.clone(),
            token_endpoint: oidc.token_endpoint.clone(),
            jwks_uri: oidc.jwks_uri.clone(),
            userinfo_endpoint: oidc.userinfo_endpoint.clone(),
            end_session_endpoint: oidc.end_session_endpoint.clone(),
        },
        clock_skew: oidc.clock_skew,
        http_timeout: oidc.http_timeout,
        jwks_min_refetch_interval: oidc.jwks_refetch_interval,
        extra_auth_params: Vec::new(),
    }
}

impl App {
    /// Build the shared state. The provider's metadata is loaded in the background (with retries), so
    /// the gateway serves public routes while the provider is unreachable.
    pub fn new(config: Config) -> Result<App, String> {
        use secrecy::ExposeSecret as _;
        let provider = Provider::new(provider_config(&config)).map_err(|e| e.to_string())?;
        let previous: Vec<Vec<u8>> = config
            .session
            .previous_secrets
            .iter()
            .map(|s| s.expose_secret().clone())
            .collect();
        let cookies = SessionCookies::new(
            CookieSettings {
                name: config.session.cookie_name.clone(),
                secure: config.session.secure,
                max_age: config.session.lifetime,
                domain: None,
            },
            config.session.secret.expose_secret(),
            &previous,
        )
        .map_err(|e| format!("session: {e}"))?;
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
        let mut identity: Vec<http::HeaderName> = config
            .headers
            .claims
            .iter()
            .map(|(h, _)| h.clone())
            .collect();
        if config.headers.pass_id_token {
            identity.push(header::AUTHORIZATION);
        }
        let proxy = Proxy::new(
            config.upstream.connect_timeout,
            config.upstream.timeout,
            config.upstream.preserve_host,
            config.server.trusted_proxies.clone(),
            identity,
        );
        Ok(App {
            config,
            router,
            upstreams,
            proxy,
            provider,
            cookies,
            sessions: SessionCache::default(),
        })
    }

    fn ready(&self) -> bool {
        self.provider.is_ready()
    }

    /// The request's session, if its cookies hold a valid one: from the cache when these exact cookie
    /// bytes were opened before, else decrypted now.
    pub fn session(&self, headers: &http::HeaderMap) -> Option<Arc<Authenticated>> {
        self.cookies
            .read_cached(headers, login::unix_now(), &self.sessions, |session| {
                Authenticated {
                    identity: self.identity_headers(&session),
                    session,
                }
            })
    }

    /// The headers that carry `session`'s identity upstream.
    pub fn identity_headers(
        &self,
        session: &Session,
    ) -> Vec<(http::HeaderName, http::HeaderValue)> {
        let mut headers = proxy::identity_headers(&session.claims, &self.config.headers.claims);
        if self.config.headers.pass_access_token {
            if let Some(v) = session
                .access_token
                .as_deref()
                .and_then(|t| http::HeaderValue::from_str(t).ok())
            {
                headers.push((proxy::X_FORWARDED_ACCESS_TOKEN, v));
            }
        }
        if self.config.headers.pass_id_token {
            if let Some(v) = session
                .id_token
                .as_deref()
                .and_then(|t| http::HeaderValue::from_str(&format!("Bearer {t}")).ok())
            {
                headers.push((header::AUTHORIZATION, v));
            }
        }
        headers
    }
}

const X_REQUESTED_WITH: http::HeaderName = http::HeaderName::from_static("x-requested-with");

/// Whether the client is a program rather than a browser navigating (SPEC: API requests get `401` JSON,
/// never a redirect): a method other than GET/HEAD, `X-Requested-With: XMLHttpRequest`, or an `Accept`
/// that asks for JSON rather than HTML.
pub fn is_api_request<B>(req: &Request<B>) -> bool {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return true;
    }
    let headers = req.headers();
    if headers
        .get(X_REQUESTED_WITH)
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
    mut req: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    if req.method() == Method::CONNECT {
        return Err(GatewayError::new(
            ErrorKind::MethodNotAllowed,
            "CONNECT refused",
        ));
    }
    router::host::check(&mut req, conn.peer)?;
    // A clone of the URI shares its bytes, so the canonical path can borrow from it (no copy in the
    // common case of a path that is already canonical) while the request itself is modified and moved.
    let uri = req.uri().clone();
    let path = router::canonical::canonicalize(uri.path()).map_err(|e| {
        GatewayError::new(
            ErrorKind::BadRequest,
            format!("refused path from {}: {e}", conn.peer),
        )
    })?;
    let target = app.router.route(req.method(), &path);
    match target {
        Target::Healthz => {
            return Ok(text_response(
                StatusCode::OK,
                "text/plain; charset=utf-8",
                "ok\n",
            ))
        }
        Target::Readyz => {
            return Ok(if app.ready() {
                text_response(StatusCode::OK, "text/plain; charset=utf-8", "ready\n")
            } else {
                text_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "not ready\n",
                )
            })
        }
        Target::Proxy {
            policy: Policy::Deny,
            ..
        } => {
            return Err(GatewayError::new(
                ErrorKind::Forbidden,
                format!("route policy denies {path}"),
            ))
        }
        _ => {}
    }
    let session = app.session(req.headers());
    match target {
        Target::Endpoint(endpoint) => {
            let method = req.method();
            let get = method == Method::GET || method == Method::HEAD;
            match endpoint {
                Endpoint::Start if get => login::start(app, &req),
                Endpoint::Callback if get => login::callback(app, &req).await,
                Endpoint::SignOut if get || method == Method::POST => login::sign_out(app, &req),
                Endpoint::Userinfo if get => login::userinfo(session.as_deref()),
                Endpoint::Auth if get => login::auth(session.as_deref()),
                Endpoint::Unknown => Err(GatewayError::new(
                    ErrorKind::NotFound,
                    format!("no endpoint {path}"),
                )),
                _ => Err(GatewayError::new(
                    ErrorKind::MethodNotAllowed,
                    format!("{method} not allowed on {path}"),
                )),
            }
        }
        Target::Proxy { policy, upstream } => {
            if policy == Policy::Authenticated && session.is_none() {
                if is_api_request(&req) {
                    return Err(GatewayError::new(
                        ErrorKind::Unauthenticated,
                        format!("no session for {path}"),
                    ));
                }
                let return_to = match req.uri().query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path.into_owned(),
                };
                return login::begin(app, &return_to, req.headers());
            }
            let identity = session.as_deref().map_or(&[][..], |a| &a.identity[..]);
            app.cookies.strip_own_cookies(req.headers_mut());
            app.proxy
                .forward(req, &conn, &path, &app.upstreams[upstream], identity)
                .await
        }
        Target::Healthz | Target::Readyz => unreachable!("answered above"),
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

/// The shared state and TLS acceptor for `config`, with the provider loader started.
fn prepare(config: Config) -> Result<(Arc<App>, Option<tokio_rustls::TlsAcceptor>), String> {
    let tls = config
        .server
        .tls
        .as_ref()
        .map(server::tls_acceptor)
        .transpose()?;
    let app = Arc::new(App::new(config)?);
    app.provider.spawn_loader();
    Ok((app, tls))
}

/// Build the gateway from `config` and serve on `listener` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let (app, tls) = prepare(config)?;
    server::serve(app, listener, tls, shutdown).await;
    Ok(())
}

/// Start the gateway on `listener` in a background task.
pub fn spawn(config: Config, listener: TcpListener) -> Result<RunningGateway, String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (app, tls) = prepare(config)?;
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

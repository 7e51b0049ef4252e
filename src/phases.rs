//! The request path, phase by phase. Every request the server accepts goes through [`handle`], which
//! runs these phases in this order; each takes what the one before produced and either hands its
//! result on or ends the request early with an [`Answer`] (a value, never a scattered return):
//!
//! 1. [`canonicalize`]: refuse what cannot be routed unambiguously (`CONNECT`, ambiguous paths);
//!    produce the one canonical path that both routing and the upstream see.
//! 2. [`route`]: health, readiness and metrics are answered here; otherwise the target is one of the
//!    gateway's endpoints, or a proxied route with its policy and upstream.
//! 3. [`authenticate`]: who is asking: the session the request's cookies present, through the store
//!    and the cache of opened sessions; or, on a protected route with `[api]` set, the API client
//!    whose `Authorization: Bearer` token checks out (`bearer`).
//! 4. [`refresh`]: renew a session's tokens before they expire, once per session however many
//!    requests wait for it (`refresh`).
//! 5. [`authorize`]: whether they may: a deny route refuses, a protected route without a session sends
//!    browsers to log in and API clients a 401, and a signed-in caller must pass `[access]` and the
//!    route's own `allowed_groups` (`policy`), else 403.
//! 6. [`act`]: the answer: a gateway endpoint (login, sign-out, userinfo, forward-auth, JWKS) or the
//!    upstream's, with the identity headers and the signed assertion.
//! 7. [`record`]: what happened, for the metrics and the access log.
//!
//! A phase sees the long-lived [`Runtime`] and the configuration snapshot the request started
//! under, never a global; adding a phase is one more function here and one line in [`run`]. What the
//! last phase reports (the route's policy, who asked, the upstream's time) is noted on the way in a
//! [`Record`].
//!
//! Every request has an id (`X-Request-Id`, kept or made: `telemetry::access_log`), set on the
//! request before the first phase, so the upstream gets it, and on every response, the gateway's own
//! included.
//!
//! Forward-auth (`/oauth2/auth`, [`forward_auth`]) runs phases 3 to 5 on the request the proxy in
//! front asks about rather than on the check itself, and answers instead of acting: a request is
//! judged the same whether the gateway proxies it or another proxy asks about it.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use crate::config::Policy;
use crate::error::{text_response, ErrorKind, GatewayError};
use crate::forward_auth::Check;
use crate::login;
use crate::proxy::ConnInfo;
use crate::router::{canonical, Endpoint, Listener, Router, Target};
use crate::runtime::{Ctx, Runtime};
use crate::session::{Authenticated, Idle, StoreError};
use crate::telemetry::access_log::{self, X_REQUEST_ID};
use crate::telemetry::metrics::{PolicyLabel, UpstreamError};
use crate::Body;

/// How a request ends before its last phase.
pub enum Answer {
    /// A response of the gateway's own, complete (health, readiness, the redirect to log in).
    Respond(Box<Response<Body>>),
    /// A refusal or a failure, rendered by `error` for the client: a page, or JSON for API clients.
    Fail(GatewayError),
}

impl From<GatewayError> for Answer {
    fn from(e: GatewayError) -> Answer {
        Answer::Fail(e)
    }
}

/// Who a request comes from, as far as the gateway knows after [`authenticate`] and [`refresh`].
#[derive(Default)]
pub struct Caller {
    /// The opened session and its identity headers; `None`: nobody (yet).
    pub session: Option<Arc<Authenticated>>,
    /// An API client's checked bearer token, opened like a session (never refreshed, never stored,
    /// no cookie); set only when `session` is not.
    pub bearer: Option<Arc<Authenticated>>,
    /// `Set-Cookie` values the response must carry (a renewed session).
    pub set_cookies: Vec<HeaderValue>,
}

impl Caller {
    /// The identity the request carries: its session's, or its bearer token's.
    pub fn identity(&self) -> Option<&Authenticated> {
        self.session.as_deref().or(self.bearer.as_deref())
    }
}

/// The request the phases judge: the client's own, or for forward-auth the one the proxy in front
/// asks about. Its headers (cookies, `Accept`) are always the request's own.
#[derive(Debug, Clone, Copy)]
pub struct Judged<'a> {
    pub method: &'a Method,
    /// Its host, as a `Host` value (with the port), when known.
    pub host: Option<&'a str>,
    /// Its scheme, when a trusted proxy said; otherwise `public_url`'s is assumed.
    pub scheme: Option<&'a str>,
    /// The canonical path.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Whether a browser without a session is sent to log in (else 401, as for API clients).
    pub login_redirect: bool,
    /// Whether a login started here comes back to this request (else to `public_url` + `/`).
    pub returns: bool,
}

impl<'a> Judged<'a> {
    /// The request itself, with its canonical `path`.
    pub fn request<B>(req: &'a Request<B>, path: &'a str) -> Judged<'a> {
        Judged {
            method: req.method(),
            host: req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok()),
            scheme: None,
            path,
            query: req.uri().query(),
            login_redirect: true,
            returns: true,
        }
    }

    /// Where the browser goes back to after logging in: this request's path and query, absolute
    /// when its host is not `public_url`'s (the return target rules judge it when the login starts).
    fn return_to(&self, cx: Ctx<'_>) -> String {
        let rules = &cx.snap.return_targets;
        if !self.returns {
            return rules.fallback().to_string();
        }
        let path_and_query = match self.query {
            Some(q) => Cow::Owned(format!("{}?{q}", self.path)),
            None => Cow::Borrowed(self.path),
        };
        rules.on_host(self.scheme, self.host, &path_and_query)
    }
}

/// What the phases note for the last one: see [`record`].
#[derive(Default)]
pub struct Record {
    /// The policy of the route the request went to (`Unrouted` until it is routed).
    pub policy: PolicyLabel,
    /// Who the request came from, once known.
    pub identity: Option<Arc<Authenticated>>,
    /// From sending the request upstream to the upstream's response head (or its failure).
    pub upstream: Option<Duration>,
    /// Why the upstream gave no answer.
    pub upstream_error: Option<UpstreamError>,
}

/// Handle one request, which came in on `listener`, through every phase; every failure becomes a
/// rendered response, so this never fails.
pub(crate) async fn handle(
    rt: Arc<Runtime>,
    conn: ConnInfo,
    listener: Listener,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let snap = rt.snapshot();
    let cx = Ctx {
        rt: &rt,
        snap: &snap,
    };
    let request_id = access_log::request_id(req.headers());
    req.headers_mut().insert(X_REQUEST_ID, request_id.clone());
    // Shares the bytes of the request's URI: the canonical path can borrow from it while the request
    // itself is modified and moved.
    let uri = req.uri().clone();
    let method = req.method().clone();
    // A request with a bearer token is a program's, when bearer tokens are credentials at all.
    let api = is_api_request(&req)
        || (snap.config.api.is_some() && crate::bearer::token(req.headers()).is_some());
    let mut flight = InFlight {
        cx,
        request_id,
        method,
        uri,
        started,
        noted: Record::default(),
        answered: false,
    };
    let mut response = match run(cx, &conn, listener, &flight.uri, req, &mut flight.noted).await {
        Ok(response) => response,
        Err(Answer::Respond(response)) => *response,
        Err(Answer::Fail(e)) => {
            flight.noted.upstream_error = e.upstream;
            // The failure's log line names the request, as its access line does (a span only on
            // this path: a request that succeeds pays nothing for it).
            let _request = tracing::info_span!(
                "request",
                request_id = flight.request_id.to_str().unwrap_or("-")
            )
            .entered();
            e.into_response(api)
        }
    };
    response
        .headers_mut()
        .insert(X_REQUEST_ID, flight.request_id.clone());
    flight.record(response.status().as_u16());
    response
}

/// Status recorded for a request whose client went away before its response head was ready (the
/// connection closed, or an HTTP/2 stream was reset): nginx's "client closed request".
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// A request between its first phase and its answer. When the client goes away first, hyper drops
/// the request's future and with it this value, which then records the request as
/// [`CLIENT_CLOSED_REQUEST`]: every request gets its access line and its count, answered or not.
struct InFlight<'a> {
    cx: Ctx<'a>,
    request_id: HeaderValue,
    method: Method,
    uri: Uri,
    started: Instant,
    noted: Record,
    answered: bool,
}

impl InFlight<'_> {
    fn record(&mut self, status: u16) {
        self.answered = true;
        record(
            self.cx,
            &self.noted,
            &self.request_id,
            &self.method,
            &self.uri,
            status,
            self.started,
        );
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.record(CLIENT_CLOSED_REQUEST);
        }
    }
}

/// The phases in order.
async fn run(
    cx: Ctx<'_>,
    conn: &ConnInfo,
    listener: Listener,
    uri: &Uri,
    req: Request<Incoming>,
    noted: &mut Record,
) -> Result<Response<Body>, Answer> {
    let mut req = req;
    let path = canonicalize(&mut req, uri, conn, &cx.snap.router)?;
    let target = route(cx, listener, &req, &path, noted)?;
    if target == Target::Endpoint(Endpoint::Auth) {
        // Boxed: inline, its phases would nest the request's future deeper than the compiler's
        // default recursion limit allows for crates that instantiate `lib::run`.
        return Box::pin(forward_auth(cx, conn, &req, &path, noted)).await;
    }
    let judged = Judged::request(&req, &path);
    let caller = authenticate(cx, &req, target).await?;
    let caller = refresh(cx, &req, &judged, caller).await?;
    noted.identity = caller.session.clone().or_else(|| caller.bearer.clone());
    authorize(cx, &req, &judged, target, &caller)?;
    act(cx, conn, req, &path, target, caller, noted).await
}

/// Forward-auth: phases 3 to 5 for the request the proxy in front describes (`forward_auth`), routed
/// by the `[[routes]]` rules alone (it goes to the application, never to our endpoints), then the
/// answer: 202 with the identity, or the refusal those phases chose (401, the login redirect in
/// redirect mode, 403). Any method: nginx's `auth_request` asks with the original request's.
async fn forward_auth<B>(
    cx: Ctx<'_>,
    conn: &ConnInfo,
    req: &Request<B>,
    path: &str,
    noted: &mut Record,
) -> Result<Response<Body>, Answer> {
    let check = Check::read(cx, conn, req, path)?;
    let judged = check.judged();
    let host = route_host(cx, judged.host).map_err(|e| {
        GatewayError::new(
            ErrorKind::Forbidden,
            format!("forward-auth check from {} refused: {e}", conn.peer),
        )
    })?;
    let target = cx.snap.router.rule(judged.method, host, judged.path);
    let caller = authenticate(cx, req, target).await?;
    let caller = refresh(cx, req, &judged, caller).await?;
    noted.identity = caller.session.clone().or_else(|| caller.bearer.clone());
    authorize(cx, req, &judged, target, &caller)?;
    Ok(crate::forward_auth::answer(cx, &check, target, caller))
}

/// One forward-auth check request through every phase, whatever its body type (the body is never
/// read): what [`handle`] does for a request routed to `/oauth2/auth`, without the record phase. For
/// benchmarks and tests that drive the phases without a connection.
pub async fn check<B>(rt: &Arc<Runtime>, conn: &ConnInfo, req: Request<B>) -> Response<Body> {
    let snap = rt.snapshot();
    let cx = Ctx { rt, snap: &snap };
    let uri = req.uri().clone();
    let api = is_api_request(&req);
    let mut req = req;
    let mut noted = Record::default();
    let result = match canonicalize(&mut req, &uri, conn, &snap.router) {
        Ok(path) => forward_auth(cx, conn, &req, &path, &mut noted).await,
        Err(answer) => Err(answer),
    };
    match result {
        Ok(response) => response,
        Err(Answer::Respond(response)) => *response,
        Err(Answer::Fail(e)) => e.into_response(api),
    }
}

/// Phase 1: exactly one valid host for the request (RFC 9112 section 3.2; over HTTP/2 `:authority`
/// wins, RFC 9113 section 8.3.1: `router::host`), and its canonical path (`router::canonical`), or
/// 400.
fn canonicalize<'u, B>(
    req: &mut Request<B>,
    uri: &'u Uri,
    conn: &ConnInfo,
    router: &Router,
) -> Result<Cow<'u, str>, Answer> {
    if req.method() == Method::CONNECT {
        return Err(GatewayError::new(ErrorKind::MethodNotAllowed, "CONNECT refused").into());
    }
    crate::router::host::check(req, conn.peer)?;
    // Envoy's forward-auth check carries the original request's path after ours: routed as it is.
    if let Some(check) = router.check_path(uri.path()) {
        return Ok(Cow::Borrowed(check));
    }
    canonical::canonicalize(uri.path()).map_err(|e| {
        GatewayError::new(
            ErrorKind::BadRequest,
            format!("refused path from {}: {e}", conn.peer),
        )
        .into()
    })
}

/// Phase 2: the target of the request; health, readiness and metrics are answered at once.
fn route<B>(
    cx: Ctx<'_>,
    listener: Listener,
    req: &Request<B>,
    path: &str,
    noted: &mut Record,
) -> Result<Target, Answer> {
    let method = req.method();
    let target = match listener {
        Listener::Main => {
            let value = req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok());
            let host = route_host(cx, value).map_err(|e| {
                GatewayError::new(ErrorKind::BadRequest, format!("refused host: {e}"))
            })?;
            cx.snap.router.route(method, host, path)
        }
        Listener::Metrics => crate::router::metrics_listener_route(path),
    };
    noted.policy = match target {
        Target::Proxy {
            policy: Policy::Public,
            ..
        } => PolicyLabel::Public,
        Target::Proxy {
            policy: Policy::Authenticated,
            ..
        } => PolicyLabel::Authenticated,
        Target::Proxy {
            policy: Policy::Deny,
            ..
        } => PolicyLabel::Deny,
        Target::Healthz | Target::Readyz | Target::Metrics | Target::Endpoint(_) => {
            PolicyLabel::Internal
        }
    };
    match target {
        Target::Metrics => Err(metrics(cx, listener, method)),
        Target::Healthz => Err(Answer::Respond(Box::new(text_response(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok\n",
        )))),
        Target::Readyz => Err(Answer::Respond(Box::new(if cx.rt.is_draining() {
            // Shutting down: load balancers stop sending while the listener still accepts.
            text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                "shutting down\n",
            )
        } else if cx.rt.provider.is_ready() {
            text_response(StatusCode::OK, "text/plain; charset=utf-8", "ready\n")
        } else {
            text_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                "not ready\n",
            )
        }))),
        _ => Ok(target),
    }
}

/// `GET /metrics`, on the listener that serves it: on the main one unless `server.metrics_listen` gave
/// the metrics a listener of their own, and then the main one knows no such path (404).
fn metrics(cx: Ctx<'_>, listener: Listener, method: &Method) -> Answer {
    if listener == Listener::Main && !cx.rt.metrics_on_main {
        return GatewayError::new(
            ErrorKind::NotFound,
            "/metrics asked on the main listener; it is served on server.metrics_listen",
        )
        .into();
    }
    if method != Method::GET && method != Method::HEAD {
        return GatewayError::new(
            ErrorKind::MethodNotAllowed,
            format!("{method} not allowed on /metrics"),
        )
        .into();
    }
    Answer::Respond(Box::new(text_response(
        StatusCode::OK,
        crate::telemetry::metrics::CONTENT_TYPE,
        cx.rt.metrics.encode(),
    )))
}

/// The name routes are matched against, from a `Host` value: without port or trailing dot. When
/// routes name hosts, an escape in the host is refused: `%61dmin.corp.example` would otherwise pass a
/// route for `admin.corp.example` by and land where hosts are not told apart.
fn route_host<'h>(cx: Ctx<'_>, value: Option<&'h str>) -> Result<Option<&'h str>, &'static str> {
    if !cx.snap.router.names_hosts() {
        return Ok(None);
    }
    match value {
        Some(v) if v.contains('%') => Err("a percent-escape in the host is ambiguous"),
        Some(v) => Ok(crate::router::host::name(v.as_bytes())),
        None => Ok(None),
    }
}

/// Phase 3: the session the request presents, if any. Only targets that use an identity look: a deny
/// route and most endpoints never touch the store. When the store fails, a route that needs a session
/// answers 503; a public route goes on without one (it never needs one).
///
/// On a protected route with `[api]` set, a request with `Authorization: Bearer` is an API client's:
/// its token alone decides (401 when it does not check out), and its cookies are not looked at.
async fn authenticate<B>(cx: Ctx<'_>, req: &Request<B>, target: Target) -> Result<Caller, Answer> {
    if let (
        Target::Proxy {
            policy: Policy::Authenticated,
            ..
        },
        Some(_),
    ) = (target, &cx.snap.config.api)
    {
        if let Some(token) = crate::bearer::token(req.headers()) {
            let bearer = crate::bearer::authenticate(cx, token?).await?;
            return Ok(Caller {
                bearer: Some(bearer),
                ..Caller::default()
            });
        }
    }
    let needed = match target {
        Target::Proxy {
            policy: Policy::Deny,
            ..
        } => return Ok(Caller::default()),
        Target::Proxy {
            policy: Policy::Public,
            ..
        } => false,
        Target::Proxy { .. } | Target::Endpoint(Endpoint::Userinfo) => true,
        _ => return Ok(Caller::default()),
    };
    let snap = cx.snap;
    let idle = snap
        .config
        .session
        .idle_timeout
        .map(|timeout| Idle { timeout });
    let opened = cx
        .rt
        .sessions
        .authenticate(
            &snap.cookies,
            req.headers(),
            login::unix_now(),
            snap.generation,
            idle,
            |session, key| snap.open(session, key),
        )
        .await;
    match opened {
        Ok(Some(opened)) => Ok(Caller {
            session: Some(opened.auth),
            set_cookies: opened.set_cookies,
            ..Caller::default()
        }),
        Ok(None) => Ok(Caller::default()),
        Err(e) if !needed => {
            tracing::warn!("{e}; public route served without a session");
            Ok(Caller::default())
        }
        Err(e) => Err(store_failure(e).into()),
    }
}

/// Phase 4: renew the session's tokens when they are about to expire (`refresh`).
async fn refresh<B>(
    cx: Ctx<'_>,
    req: &Request<B>,
    judged: &Judged<'_>,
    caller: Caller,
) -> Result<Caller, Answer> {
    crate::refresh::refresh(cx, req, judged, caller).await
}

/// Phase 5: whether the caller may reach the target.
fn authorize<B>(
    cx: Ctx<'_>,
    req: &Request<B>,
    judged: &Judged<'_>,
    target: Target,
    caller: &Caller,
) -> Result<(), Answer> {
    let Target::Proxy { policy, route, .. } = target else {
        // The gateway's own endpoints decide for themselves (a callback needs no session).
        return Ok(());
    };
    let path = judged.path;
    match policy {
        Policy::Public => Ok(()),
        Policy::Deny => Err(GatewayError::new(
            ErrorKind::Forbidden,
            format!("route policy denies {path}"),
        )
        .into()),
        Policy::Authenticated => match caller.identity() {
            Some(auth) => check_access(cx, auth, route, path).map_err(Answer::from),
            None => Err(not_signed_in(
                cx,
                req.headers(),
                judged,
                Vec::new(),
                format_args!("no session for {path}"),
            )),
        },
    }
}

/// `[access]` (its verdict was made when the identity was opened under this configuration) and the
/// route's own `allowed_groups`, for a caller who is signed in.
fn check_access(
    cx: Ctx<'_>,
    auth: &Authenticated,
    route: Option<usize>,
    path: &str,
) -> Result<(), GatewayError> {
    let claims = &auth.session.claims;
    let verdict = auth.access.clone().and_then(|()| {
        match route.and_then(|i| cx.snap.route_groups.get(i)?.as_ref()) {
            Some(rule) => cx.snap.access.check_groups(rule, claims),
            None => Ok(()),
        }
    });
    let Err(denial) = verdict else {
        return Ok(());
    };
    let sub = auth.session.sub().unwrap_or("?");
    if denial.malformed {
        tracing::warn!(sub, rule = %denial.rule, "a claim the access policy reads is malformed: {}", denial.reason);
    }
    Err(GatewayError::access_denied(
        format!("access denied to sub {sub} for {path}: {denial}"),
        crate::policy::signed_in_as(claims),
        format!("{}/sign_out", cx.snap.config.server.prefix),
    ))
}

/// A protected route without an identity: browsers are sent to log in, API clients get a 401 (so
/// does a forward-auth check outside redirect mode); `cleared` (deletions of a session that ended)
/// go with either answer.
pub(crate) fn not_signed_in(
    cx: Ctx<'_>,
    headers: &http::HeaderMap,
    judged: &Judged<'_>,
    cleared: Vec<HeaderValue>,
    why: std::fmt::Arguments<'_>,
) -> Answer {
    if !judged.login_redirect || is_api(judged.method, headers) {
        return GatewayError::new(ErrorKind::Unauthenticated, why.to_string())
            .with_set_cookies(cleared)
            .into();
    }
    match login::begin(cx, &judged.return_to(cx), headers) {
        Ok(mut redirect) => {
            for cookie in cleared {
                redirect.headers_mut().append(header::SET_COOKIE, cookie);
            }
            Answer::Respond(Box::new(redirect))
        }
        Err(e) => e.with_set_cookies(cleared).into(),
    }
}

/// Phase 6: the gateway's endpoint, or the upstream's answer.
async fn act(
    cx: Ctx<'_>,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    path: &str,
    target: Target,
    caller: Caller,
    noted: &mut Record,
) -> Result<Response<Body>, Answer> {
    let mut response = match target {
        Target::Endpoint(endpoint) => {
            let method = req.method();
            let get = method == Method::GET || method == Method::HEAD;
            match endpoint {
                Endpoint::Start if get => login::start(cx, &req),
                Endpoint::Callback if get => login::callback(cx, &req).await,
                Endpoint::SignOut if get || method == Method::POST => {
                    login::sign_out(cx, &req).await
                }
                Endpoint::Userinfo if get => login::userinfo(caller.session.as_deref()),
                Endpoint::Jwks if get => jwks(cx),
                Endpoint::BackchannelLogout if method == Method::POST => {
                    Ok(crate::backchannel::logout(cx, req).await)
                }
                Endpoint::Unknown => Err(GatewayError::new(
                    ErrorKind::NotFound,
                    format!("no endpoint {path}"),
                )),
                _ => Err(GatewayError::new(
                    ErrorKind::MethodNotAllowed,
                    format!("{method} not allowed on {path}"),
                )),
            }?
        }
        Target::Proxy { upstream, .. } => {
            let snap = cx.snap;
            let auth = caller.identity();
            let identity = auth.map_or(&[][..], |a| &a.identity[..]);
            let assertion = match (&snap.assertion, auth) {
                (Some(settings), Some(auth)) => cx
                    .rt
                    .assertion(snap, auth, upstream)
                    .map(|value| (&settings.header, value)),
                _ => None,
            };
            snap.cookies.strip_own_cookies(req.headers_mut());
            let sent = Instant::now();
            let forwarded = snap
                .proxy
                .forward(
                    req,
                    conn,
                    path,
                    &snap.upstreams[upstream],
                    identity,
                    assertion,
                )
                .await;
            noted.upstream = Some(sent.elapsed());
            forwarded?
        }
        Target::Healthz | Target::Readyz | Target::Metrics => {
            unreachable!("answered by the route phase")
        }
    };
    for cookie in caller.set_cookies {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// `GET /oauth2/jwks`: the public keys of `[assertion]` (404 without it).
fn jwks(cx: Ctx<'_>) -> Result<Response<Body>, GatewayError> {
    if cx.snap.assertion.is_none() {
        return Err(GatewayError::new(
            ErrorKind::NotFound,
            "jwks requested, but [assertion] is not configured",
        ));
    }
    Ok(text_response(
        StatusCode::OK,
        "application/jwk-set+json",
        cx.rt.assertion_keys.jwks(login::unix_now()),
    ))
}

/// Phase 7: the request counted in the metrics (no lock, no allocation) and, with `log.access_log`,
/// its access log line: request id, method, path (never the query, which may hold a code or a state),
/// status, duration, upstream time, and the caller's `sub`.
fn record(
    cx: Ctx<'_>,
    noted: &Record,
    request_id: &HeaderValue,
    method: &Method,
    uri: &Uri,
    status: u16,
    started: Instant,
) {
    let duration = started.elapsed();
    let metrics = &cx.rt.metrics;
    metrics.request(noted.policy, method, status, duration);
    if let Some(kind) = noted.upstream_error {
        metrics.upstream_error(kind);
    }
    if cx.snap.config.log.access_log {
        access_log::write(&access_log::Line {
            request_id,
            method,
            path: uri.path(),
            status,
            duration,
            upstream: noted.upstream,
            sub: noted.identity.as_deref().and_then(|a| a.session.sub()),
        });
    }
}

/// A store failure as the client sees it: 503, with the cause in the log.
fn store_failure(e: StoreError) -> GatewayError {
    match e {
        StoreError::Encode(e) => GatewayError::new(
            ErrorKind::Internal,
            format!("session could not be encoded: {e}"),
        ),
        e => GatewayError::new(ErrorKind::StoreUnavailable, e.to_string()),
    }
}

const X_REQUESTED_WITH: http::HeaderName = http::HeaderName::from_static("x-requested-with");

/// Whether the client is a program rather than a browser navigating (SPEC: API requests get `401` JSON,
/// never a redirect): a method other than GET/HEAD, `X-Requested-With: XMLHttpRequest`, or an `Accept`
/// that asks for JSON rather than HTML.
pub fn is_api_request<B>(req: &Request<B>) -> bool {
    is_api(req.method(), req.headers())
}

/// [`is_api_request`] for a request of this method with these headers.
pub fn is_api(method: &Method, headers: &http::HeaderMap) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return true;
    }
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

//! Forward-auth (`/oauth2/auth`): the gateway as the `auth_request` of nginx, the ForwardAuth of
//! Traefik, the HTTP `ext_authz` of Envoy. The proxy in front asks, before each request it serves,
//! whether that request may pass, and copies the identity headers of a yes onto it.
//!
//! This module owns the two ends of a check; the phases in between are the proxy's own
//! (`phases::forward_auth`), so a request is judged the same whether the gateway proxies it or a proxy
//! in front asks about it:
//! - [`Check::read`]: the original request as the proxy describes it: `X-Original-URI` (nginx), or
//!   `X-Forwarded-Method` + `X-Forwarded-Uri` (Traefik, Envoy, Caddy), `X-Forwarded-Host` for routes
//!   that name a host, `X-Forwarded-Proto` for the way back after a login. Its path gets the same
//!   canonical form as a proxied request's. These headers are believed only from
//!   `server.trusted_proxies`: from anyone else a check that carries them is refused (403), never
//!   judged on something else (judging the check itself instead would let a deny route's request
//!   through when the proxy is not listed). A check that describes nothing is judged as itself.
//! - [`answer`]: `202` with the identity headers and `X-Auth-Request-User`, `-Email`, `-Groups`,
//!   `-Preferred-Username` (oauth2-proxy's names), the signed assertion, and any re-issued session
//!   cookie. Refusals (401, 403, the login redirect) are the phases' own answers.
//!
//! A re-issued session (refresh, `idle_timeout`) may take several cookies (chunks, and deletions of
//! chunks no longer used). Traefik and Envoy pass every `Set-Cookie` of the answer on; nginx's
//! `auth_request_set` sees only one (`$upstream_http_set_cookie`: the first, or from nginx 1.23 all of
//! them joined with `, `, which no browser splits). So each `Set-Cookie` of a `2xx` answer is also
//! sent alone under a numbered name, `X-Portcullis-Set-Cookie-0`, `-1`, ..., which nginx copies one by
//! one (`deploy/nginx/nginx.conf`). Those names carry a session: a proxy must never pass them to the
//! application.
//!
//! Every refusal of what the proxy sent is a 403 (logged with the reason): nginx's `auth_request`
//! turns any answer but 2xx, 401 and 403 into a 500 for the client.
//!
//! Envoy's ext_authz appends the original path to its `path_prefix`, so its checks arrive as
//! `/oauth2/auth/<original path>?<original query>`: that shape is answered `200` when allowed (Envoy's
//! HTTP client lets only a 200 through; any other status, 202 included, is a denial it passes to the
//! client), always sends browsers without a session to log in (Envoy passes a denial's status,
//! `Location` and allowed headers to the client), and never reads options from the query, which is
//! the original request's. `/oauth2/auth` itself always answers `202`. The original request must be
//! described (`X-Forwarded-Uri`, set by the proxy): an Envoy-shaped check that describes nothing is
//! refused rather than judged as itself.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::error::{ErrorKind, GatewayError};
use crate::identity::IdentityHeaders;
use crate::phases::{Caller, Judged};
use crate::proxy::{ConnInfo, X_FORWARDED_HOST, X_FORWARDED_PROTO};
use crate::router::{canonical, host, Target};
use crate::runtime::{Ctx, Snapshot};
use crate::session::Authenticated;
use crate::Body;

pub const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
pub const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
pub const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");

/// The identity under oauth2-proxy's names, besides whatever `[headers]` maps: header and claim.
/// The groups come from `access.groups_claim`.
const AUTH_REQUEST_USER: HeaderName = HeaderName::from_static("x-auth-request-user");
const AUTH_REQUEST_EMAIL: HeaderName = HeaderName::from_static("x-auth-request-email");
const AUTH_REQUEST_GROUPS: HeaderName = HeaderName::from_static("x-auth-request-groups");
const AUTH_REQUEST_PREFERRED_USERNAME: HeaderName =
    HeaderName::from_static("x-auth-request-preferred-username");

/// The `X-Auth-Request-*` mapping of a configuration: header and claim (a dotted path for the
/// groups), leaving out any name `[headers]` maps already, so no header is answered twice.
pub fn auth_request_mapping(
    snap_headers: &[(HeaderName, String)],
    groups_claim: &str,
) -> Vec<(HeaderName, String)> {
    [
        (AUTH_REQUEST_USER, "sub"),
        (AUTH_REQUEST_EMAIL, "email"),
        (AUTH_REQUEST_GROUPS, groups_claim),
        (AUTH_REQUEST_PREFERRED_USERNAME, "preferred_username"),
    ]
    .into_iter()
    .filter(|(name, _)| !snap_headers.iter().any(|(mapped, _)| mapped == name))
    .map(|(name, claim)| (name, claim.to_string()))
    .collect()
}

/// One forward-auth check: the request the proxy in front asks about.
#[derive(Debug)]
pub struct Check<'r> {
    method: Method,
    /// Its host as a `Host` value (port included), when known.
    host: Option<&'r str>,
    /// Its scheme, when a trusted proxy said (`X-Forwarded-Proto`).
    scheme: Option<&'static str>,
    /// Its canonical path.
    path: Cow<'r, str>,
    query: Option<&'r str>,
    /// Whether the proxy described it (else the check is judged as itself).
    described: bool,
    /// Whether a browser without a session gets the login redirect (else 401).
    redirect: bool,
    /// Envoy's shape (`/oauth2/auth/...`): allowed is `200`.
    envoy: bool,
}

impl<'r> Check<'r> {
    /// The original request of the check `req`, routed to `path` (`/oauth2/auth` or Envoy's
    /// `/oauth2/auth/...`) from `conn`. See the module header for what is believed and when.
    pub fn read<B>(
        cx: Ctx<'_>,
        conn: &ConnInfo,
        req: &'r Request<B>,
        path: &str,
    ) -> Result<Check<'r>, GatewayError> {
        let snap = cx.snap;
        let headers = req.headers();
        let envoy = path.len() > snap.router.prefix().len() + "/auth".len();
        let redirect = envoy
            || crate::login::query_param(req.uri().query(), "redirect")?.as_deref() == Some("true");
        let refuse = |why: String| {
            GatewayError::new(
                ErrorKind::Forbidden,
                format!("forward-auth check from {} refused: {why}", conn.peer),
            )
        };
        let original_uri = single(headers, &X_ORIGINAL_URI).map_err(&refuse)?;
        let forwarded_uri = single(headers, &X_FORWARDED_URI).map_err(&refuse)?;
        let forwarded_method = single(headers, &X_FORWARDED_METHOD).map_err(&refuse)?;
        let forwarded_host = single(headers, &X_FORWARDED_HOST).map_err(&refuse)?;
        let described = original_uri.is_some()
            || forwarded_uri.is_some()
            || forwarded_method.is_some()
            || forwarded_host.is_some();
        let trusted = snap.proxy.is_trusted(conn.peer.ip());
        if described && !trusted {
            return Err(refuse(
                "it describes the original request (X-Original-URI, X-Forwarded-Method, -Uri or -Host), \
                 but its peer is not in server.trusted_proxies"
                    .into(),
            ));
        }
        let uri = match (original_uri, forwarded_uri) {
            (Some(a), Some(b)) if a != b => {
                return Err(refuse(
                    "X-Original-URI and X-Forwarded-Uri name different requests".into(),
                ))
            }
            (Some(u), _) | (None, Some(u)) => Some(u),
            (None, None) => None,
        };
        if uri.is_none() && envoy {
            return Err(refuse(
                "a check of the form /oauth2/auth/<path> without X-Forwarded-Uri or X-Original-URI"
                    .into(),
            ));
        }
        if uri.is_none() && (forwarded_method.is_some() || forwarded_host.is_some()) {
            return Err(refuse(
                "X-Forwarded-Method or -Host without X-Forwarded-Uri or X-Original-URI".into(),
            ));
        }
        let method = match forwarded_method {
            Some(m) => Method::from_bytes(m.as_bytes())
                .map_err(|_| refuse("X-Forwarded-Method is not a method".into()))?,
            None => req.method().clone(),
        };
        let (path, query) = match uri {
            Some(uri) => {
                let (path, query) = match uri.split_once('?') {
                    Some((path, query)) => (path, Some(query)),
                    None => (uri, None),
                };
                let path = canonical::canonicalize(path)
                    .map_err(|e| refuse(format!("the original request's path: {e}")))?;
                (path, query)
            }
            None => (Cow::Owned(format!("{}/auth", snap.router.prefix())), None),
        };
        let host = match forwarded_host {
            Some(h) if host::valid_host(h.as_bytes()) => Some(h),
            Some(_) => return Err(refuse("X-Forwarded-Host is not a valid host".into())),
            None => headers.get(header::HOST).and_then(|h| h.to_str().ok()),
        };
        let scheme = match headers.get(X_FORWARDED_PROTO).map(HeaderValue::as_bytes) {
            Some(b"https") if trusted => Some("https"),
            Some(b"http") if trusted => Some("http"),
            _ => None,
        };
        Ok(Check {
            method,
            host,
            scheme,
            path,
            query,
            described,
            redirect,
            envoy,
        })
    }

    /// The request to judge, for the phases.
    pub fn judged(&self) -> Judged<'_> {
        Judged {
            method: &self.method,
            host: self.host,
            scheme: self.scheme,
            path: &self.path,
            // Undescribed, the check itself is judged; after a login the browser goes to the root.
            query: self.query,
            login_redirect: self.redirect,
            returns: self.described,
        }
    }
}

/// The one value of `name`, as text, if present; several values, or one that is not visible
/// ASCII, are refused.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, String> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(format!("{name} repeated"));
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| format!("{name} is not visible ASCII"))
}

/// The answer to a check the phases let through: `202` (`200` to Envoy) with the caller's identity
/// headers, `X-Auth-Request-*`, the signed assertion for the route's upstream, and any re-issued
/// session cookie. A public route without a session: the status alone.
pub fn answer(cx: Ctx<'_>, check: &Check<'_>, target: Target, caller: Caller) -> Response<Body> {
    let status = if check.envoy {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let snap = cx.snap;
    let identity = caller
        .identity()
        .map(|auth| (auth, auth_request_headers(snap, auth)));
    // An empty body read by a proxy, not a browser: `Cache-Control` alone. The map is sized once
    // for every field it gets, `X-Request-Id` (added by the caller) included.
    let mut response = Response::new(Body::Right(Full::new(Bytes::new())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.reserve(
        3 + identity.map_or(0, |(auth, named)| auth.identity.len() + named.len())
            + 2 * caller.set_cookies.len(),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some((auth, named)) = identity {
        for (name, value) in auth.identity.iter().chain(named) {
            headers.append(name, value.clone());
        }
        if let (Some(settings), Target::Proxy { upstream, .. }) = (&snap.assertion, target) {
            if let Some(value) = cx.rt.assertion(snap, auth, upstream) {
                headers.insert(&settings.header, value);
            }
        }
    }
    for (i, cookie) in caller.set_cookies.into_iter().enumerate() {
        if let Some(name) = numbered_set_cookie(i) {
            headers.insert(name, cookie.clone());
        }
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

/// How many `Set-Cookie` values of an answer are also sent under numbered names (see the module
/// header): a session of the largest size, its deletions, and to spare.
pub const NUMBERED_SET_COOKIES: usize = 2 * crate::session::MAX_CHUNKS + 2;

/// `X-Portcullis-Set-Cookie-<i>`, for the first [`NUMBERED_SET_COOKIES`] values.
fn numbered_set_cookie(i: usize) -> Option<HeaderName> {
    static NAMES: std::sync::OnceLock<Vec<HeaderName>> = std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| {
            (0..NUMBERED_SET_COOKIES)
                .map(|i| {
                    HeaderName::try_from(format!("x-portcullis-set-cookie-{i}"))
                        .expect("a valid header name")
                })
                .collect()
        })
        .get(i)
        .cloned()
}

/// `X-Auth-Request-*` for this identity, made once per identity and configuration.
fn auth_request_headers<'a>(snap: &Snapshot, auth: &'a Authenticated) -> &'a IdentityHeaders {
    auth.auth_request_headers(|claims| {
        crate::identity::identity_headers(claims, &snap.auth_request_mapping)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_request_names_follow_the_groups_claim_and_yield_to_headers() {
        let mapping = auth_request_mapping(&[], "realm_access.roles");
        let named: Vec<(&str, &str)> = mapping
            .iter()
            .map(|(h, c)| (h.as_str(), c.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                ("x-auth-request-user", "sub"),
                ("x-auth-request-email", "email"),
                ("x-auth-request-groups", "realm_access.roles"),
                ("x-auth-request-preferred-username", "preferred_username"),
            ]
        );
        // A name [headers] maps already is answered once, with the configured claim.
        let configured = [(AUTH_REQUEST_EMAIL, "upn".to_string())];
        let mapping = auth_request_mapping(&configured, "groups");
        assert_eq!(mapping.len(), 3);
        assert!(mapping.iter().all(|(h, _)| h != AUTH_REQUEST_EMAIL));
    }

    #[test]
    fn set_cookie_copies_are_numbered_up_to_their_limit() {
        assert_eq!(
            numbered_set_cookie(0).unwrap().as_str(),
            "x-portcullis-set-cookie-0"
        );
        assert_eq!(
            numbered_set_cookie(NUMBERED_SET_COOKIES - 1)
                .unwrap()
                .as_str(),
            format!("x-portcullis-set-cookie-{}", NUMBERED_SET_COOKIES - 1)
        );
        assert!(numbered_set_cookie(NUMBERED_SET_COOKIES).is_none());
    }
}

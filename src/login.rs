//! The browser side of the login: start, callback, sign-out and userinfo.
//!
//! This is the only module that joins HTTP and the OpenID logic in `oidc`: it reads query parameters and
//! cookies, asks the provider object for URLs, codes and token checks, and answers with redirects and
//! Set-Cookie headers. It decides nothing about the protocol (that is `oidc`) and renders no error
//! itself (that is `error`).
//!
//! The flow (SPEC "Behaviour on the wire"):
//! 1. an unauthenticated navigation gets a fresh state, nonce and PKCE verifier, sealed into one
//!    short-lived cookie per attempt (so parallel tabs each complete), and a 302 to the provider;
//! 2. the callback finds the attempt's cookie by its state, exchanges the code, validates the id_token
//!    (signature, issuer, audience, nonce, times, at_hash), and writes a brand-new session cookie, never
//!    reusing anything the browser presented before the login (session fixation);
//! 3. the browser goes back to where the login started: a relative path, or an absolute URL on one of
//!    the hosts this login serves (`return_target`); anything else sends it to `public_url` + `/`.

mod return_target;

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use url::Url;

use crate::config::RefreshMode;
use crate::error::{text_response, ErrorKind, GatewayError};
use crate::oidc::{AccessToken, AuthCode, ExchangeError, Nonce, PkceVerifier, UserinfoError};
use crate::runtime::Ctx;
use crate::session::{Authenticated, Claims, LoginState, Session, StoreError};
use crate::telemetry::metrics::LoginFailure;
use crate::Body;

pub use return_target::{ReturnTargets, MAX_RETURN_TARGET};

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch.
pub fn unix_now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn query_param(
    req_query: Option<&str>,
    name: &str,
) -> Result<Option<String>, GatewayError> {
    let mut found = None;
    for (k, v) in url::form_urlencoded::parse(req_query.unwrap_or("").as_bytes()) {
        if k == name {
            if found.is_some() {
                // RFC 6749 section 3.1: parameters must not be repeated.
                return Err(GatewayError::new(
                    ErrorKind::BadRequest,
                    format!("query parameter {name} repeated"),
                ));
            }
            found = Some(v.into_owned());
        }
    }
    Ok(found)
}

fn redirect(location: &str, set_cookies: Vec<HeaderValue>) -> Result<Response<Body>, GatewayError> {
    let location = HeaderValue::try_from(location).map_err(|_| {
        GatewayError::new(
            ErrorKind::Internal,
            "redirect target is not a valid header value",
        )
    })?;
    let mut response = text_response(StatusCode::FOUND, "text/plain; charset=utf-8", "");
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, location);
    for cookie in set_cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// Send the browser to the provider to log in, returning to `return_to` afterwards.
pub fn begin(
    cx: Ctx<'_>,
    return_to: &str,
    request: &HeaderMap,
) -> Result<Response<Body>, GatewayError> {
    let provider = &cx.rt.provider;
    if !provider.is_ready() || !provider.is_reachable() {
        return Err(GatewayError::new(
            ErrorKind::ProviderUnavailable,
            "login refused: the identity provider is not loaded or not reachable",
        ));
    }
    let (url, secrets) = provider.begin_login().map_err(|e| {
        GatewayError::new(
            ErrorKind::ProviderUnavailable,
            format!("login refused: {e}"),
        )
    })?;
    let state = LoginState {
        state: secrets.state.secret().to_string(),
        nonce: secrets.nonce.secret().to_string(),
        pkce_verifier: secrets
            .pkce_verifier
            .as_ref()
            .map(|v| v.secret().to_string()),
        return_to: cx.snap.return_targets.check(return_to).to_string(),
        created_at: unix_now_micros(),
    };
    let cookies = cx.snap.cookies.start_login(&state, request).map_err(|e| {
        GatewayError::new(ErrorKind::BadRequest, format!("cannot start a login: {e}"))
    })?;
    let response = redirect(url.as_str(), cookies)?;
    tracing::debug!("login started");
    cx.rt.metrics.login_started();
    Ok(response)
}

/// `GET /oauth2/start?rd=/path`.
pub fn start<B>(cx: Ctx<'_>, req: &Request<B>) -> Result<Response<Body>, GatewayError> {
    let rd = query_param(req.uri().query(), "rd")?.unwrap_or_else(|| "/".into());
    begin(cx, &on_request_host(cx, req, rd), req.headers())
}

/// A relative `rd` asked for on another host than `public_url`'s (a tool's, with `cookie_domain`)
/// means that host's path: the login ends on `public_url`'s host, so it is made absolute there.
/// Anything else is left for the return target rules to judge.
fn on_request_host<B>(cx: Ctx<'_>, req: &Request<B>, rd: String) -> String {
    let rules = &cx.snap.return_targets;
    if !rd.starts_with('/') || !rules.allowed(&rd) {
        return rd;
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    rules.on_host(None, host, &rd)
}

/// `GET /oauth2/callback?code=...&state=...` (or `error=...`): counted as a login completed, or
/// failed for one reason of a fixed set.
pub async fn callback<B>(cx: Ctx<'_>, req: &Request<B>) -> Result<Response<Body>, GatewayError> {
    let metrics = &cx.rt.metrics;
    match complete(cx, req).await {
        Ok(response) => {
            metrics.login_completed();
            Ok(response)
        }
        Err((reason, e)) => {
            metrics.login_failed(reason);
            Err(e)
        }
    }
}

/// A failure of the callback, and its reason for the metrics.
type Failed = (LoginFailure, GatewayError);

/// Tags a failure with its reason: `.map_err(because(LoginFailure::State))`.
fn because(reason: LoginFailure) -> impl FnOnce(GatewayError) -> Failed {
    move |e| (reason, e)
}

async fn complete<B>(cx: Ctx<'_>, req: &Request<B>) -> Result<Response<Body>, Failed> {
    let (provider, snap) = (&cx.rt.provider, cx.snap);
    let query = req.uri().query();
    let state_param = query_param(query, "state").map_err(because(LoginFailure::Malformed))?;
    if let Some(error) = query_param(query, "error").map_err(because(LoginFailure::Malformed))? {
        // RFC 6749 section 4.1.2.1: the provider refused; show what it said, escaped by the renderer.
        let description = query_param(query, "error_description")
            .map_err(because(LoginFailure::Malformed))?
            .unwrap_or_default();
        let shown = printable(&format!(
            "{error}{}{description}",
            if description.is_empty() { "" } else { ": " }
        ));
        return Err((
            LoginFailure::ProviderError,
            GatewayError::new(
                ErrorKind::LoginFailed,
                format!("the provider answered the login with error: {shown}"),
            )
            .with_public(format!("The identity provider reported: {shown}")),
        ));
    }
    let state_param = state_param.ok_or_else(|| {
        (
            LoginFailure::State,
            GatewayError::new(ErrorKind::LoginFailed, "callback without a state parameter"),
        )
    })?;
    let now = unix_now();
    let (login, clear_login) = snap.cookies.finish_login(&state_param, req.headers(), now).ok_or_else(|| {
        (LoginFailure::State, GatewayError::new(
            ErrorKind::LoginFailed,
            "callback state does not match a login started in this browser (missing, expired, tampered or already used)",
        )
        .with_public("This sign-in link is not valid any more. Please start again."))
    })?;
    let code = query_param(query, "code")
        .map_err(because(LoginFailure::Malformed))?
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            (
                LoginFailure::Malformed,
                GatewayError::new(ErrorKind::LoginFailed, "callback without a code"),
            )
        })?;

    let tokens = provider
        .exchange_code(
            AuthCode::new(code),
            login.pkce_verifier.clone().map(PkceVerifier::new),
        )
        .await
        .map_err(|e| (LoginFailure::Exchange, exchange_error(e)))?;
    let id_token = tokens.id_token.as_ref().ok_or_else(|| {
        (
            LoginFailure::IdToken,
            GatewayError::new(
                ErrorKind::ProviderError,
                "token response has no id_token (is the openid scope configured?)",
            ),
        )
    })?;
    let mut claims = provider
        .validate_id_token(
            id_token.secret(),
            &Nonce::new(login.nonce.clone()),
            Some(tokens.access_token.secret()),
            SystemTime::now(),
        )
        .await
        .map_err(|e| {
            (
                LoginFailure::IdToken,
                GatewayError::new(ErrorKind::ProviderError, format!("id_token rejected: {e}")),
            )
        })?;
    merge_userinfo(cx, &tokens.access_token, &mut claims)
        .await
        .map_err(because(LoginFailure::Userinfo))?;

    let lifetime = snap.config.session.lifetime.as_secs();
    let session = Session {
        claims: Claims::new(&session_claims(claims))
            .map_err(|e| (LoginFailure::Store, cannot_store(StoreError::Encode(e))))?,
        id_token: keep_id_token(cx, id_token.secret()).then(|| id_token.secret().to_string()),
        access_token: snap
            .identity
            .passes_access_token()
            .then(|| tokens.access_token.secret().to_string()),
        // Kept only to be redeemed: with `refresh = "off"` the session ends with its tokens.
        refresh_token: tokens
            .refresh_token
            .as_ref()
            .filter(|_| snap.config.session.refresh == RefreshMode::Auto)
            .map(|t| t.secret().to_string()),
        created_at: now,
        expires_at: now.saturating_add(lifetime),
        seen_at: now,
        access_expires_at: tokens.expires_in.map(|d| now.saturating_add(d.as_secs())),
    };
    let mut cookies = cx
        .rt
        .sessions
        .save(&snap.cookies, &session, req.headers(), now)
        .await
        .map_err(|e| (LoginFailure::Store, cannot_store(e)))?;
    cookies.push(clear_login);
    let response = redirect(snap.return_targets.check(&login.return_to), cookies)
        .map_err(because(LoginFailure::Other))?;
    tracing::info!(sub = session.sub().unwrap_or("?"), "login succeeded");
    Ok(response)
}

/// `oidc.userinfo_claims`: fill in `claims` (a validated id_token's) with what the userinfo endpoint
/// says and they lack, asked with `access_token`. Does nothing when the key is off. A userinfo answer
/// about another `sub` (OIDC Core 5.3.2), or none at all, fails the login: the claims may be what
/// `[access]` decides on. The refresh phase calls this too, with the refreshed access token and the
/// claims it is about to keep.
pub async fn merge_userinfo(
    cx: Ctx<'_>,
    access_token: &AccessToken,
    claims: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(), GatewayError> {
    if !cx.snap.config.oidc.userinfo_claims {
        return Ok(());
    }
    let fail = |e: UserinfoError| {
        let kind = match e {
            UserinfoError::Unreachable(_) | UserinfoError::NotReady => {
                ErrorKind::ProviderUnavailable
            }
            _ => ErrorKind::ProviderError,
        };
        GatewayError::new(kind, format!("userinfo claims: {e}"))
    };
    let info = cx
        .rt
        .provider
        .fetch_userinfo(access_token)
        .await
        .map_err(fail)?;
    crate::oidc::userinfo::merge_userinfo(claims, info).map_err(fail)
}

fn cannot_store(e: StoreError) -> GatewayError {
    if !matches!(e, StoreError::Encode(_)) {
        return GatewayError::new(
            ErrorKind::StoreUnavailable,
            format!("cannot store the session: {e}"),
        );
    }
    GatewayError::new(
        ErrorKind::ProviderError,
        format!("cannot store the session: {e}"),
    )
    .with_public("The identity returned by the provider cannot be kept in a session (too large or too deeply nested).")
}

/// Largest id_token kept only as a logout hint; a larger one would multiply the cookie's size.
const MAX_HINT_BYTES: usize = 4096;

/// The id_token is kept when it is sent upstream, or as the `id_token_hint` of RP-initiated logout while
/// it is small enough not to bloat the session cookie.
pub(crate) fn keep_id_token(cx: Ctx<'_>, id_token: &str) -> bool {
    cx.snap.identity.passes_id_token()
        || (cx.rt.provider.end_session_endpoint().is_some() && id_token.len() <= MAX_HINT_BYTES)
}

fn exchange_error(e: ExchangeError) -> GatewayError {
    match &e {
        ExchangeError::Unreachable(_) | ExchangeError::NotReady => GatewayError::new(
            ErrorKind::ProviderUnavailable,
            format!("code exchange failed: {e}"),
        ),
        ExchangeError::ErrorResponse { error, description } => {
            let shown = printable(&match description {
                Some(d) => format!("{error}: {d}"),
                None => error.clone(),
            });
            // invalid_grant: the code was used, expired or stolen; the user can simply start again.
            let kind = if error == "invalid_grant" {
                ErrorKind::LoginFailed
            } else {
                ErrorKind::ProviderError
            };
            GatewayError::new(kind, format!("code exchange refused: {e}")).with_public(format!(
                "The identity provider refused the sign-in: {shown}"
            ))
        }
        ExchangeError::BadResponse(_) | ExchangeError::Request(_) => GatewayError::new(
            ErrorKind::ProviderError,
            format!("code exchange failed: {e}"),
        ),
    }
}

/// Text from the network made safe for one log line: control characters dropped, length bounded.
pub(crate) fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// Claims that only served to validate the token are not kept in the session.
const PROTOCOL_CLAIMS: &[&str] = &[
    "aud", "azp", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "s_hash", "jti", "isk",
];

pub(crate) fn session_claims(
    mut claims: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    for name in PROTOCOL_CLAIMS {
        claims.remove(*name);
    }
    claims
}

/// `GET|POST /oauth2/sign_out?rd=/path`: clear the session; RP-initiated logout at the provider when it
/// publishes an `end_session_endpoint` (OpenID Connect RP-Initiated Logout 1.0).
pub async fn sign_out<B>(cx: Ctx<'_>, req: &Request<B>) -> Result<Response<Body>, GatewayError> {
    let rd = query_param(req.uri().query(), "rd")?.unwrap_or_else(|| "/".into());
    let rd = on_request_host(cx, req, rd);
    let rd = cx.snap.return_targets.check(&rd);
    let now = unix_now();
    let session = cx.snap.cookies.read(req.headers(), now);
    let cookies = cx
        .rt
        .sessions
        .delete(&cx.snap.cookies, req.headers(), now)
        .await
        .map_err(|e| {
            GatewayError::new(ErrorKind::StoreUnavailable, format!("sign-out failed: {e}"))
        })?;
    if let Some(sub) = session.as_ref().and_then(Session::sub) {
        tracing::info!(sub, "signed out");
    }
    let location = match cx.rt.provider.end_session_endpoint() {
        Some(mut end) => {
            let after = cx.snap.config.server.public_url.join(rd).map_err(|_| {
                GatewayError::new(ErrorKind::BadRequest, "bad sign-out return target")
            })?;
            {
                let mut q = end.query_pairs_mut();
                if let Some(id_token) = session.as_ref().and_then(|s| s.id_token.as_deref()) {
                    q.append_pair("id_token_hint", id_token);
                }
                q.append_pair("client_id", cx.rt.provider.client_id());
                q.append_pair("post_logout_redirect_uri", after.as_str());
            }
            end.to_string()
        }
        None => rd.to_string(),
    };
    redirect(&location, cookies)
}

/// `GET /oauth2/userinfo`: the session's identity as JSON.
pub fn userinfo(auth: Option<&Authenticated>) -> Result<Response<Body>, GatewayError> {
    let auth = auth.ok_or_else(|| {
        GatewayError::new(ErrorKind::Unauthenticated, "userinfo without a session")
    })?;
    let body = serde_json::Value::Object(auth.session.claims.to_map()).to_string();
    Ok(text_response(StatusCode::OK, "application/json", body))
}

/// The redirect URI registered at the provider: `public_url` + prefix + `/callback`.
pub fn redirect_uri(public_url: &Url, prefix: &str) -> Url {
    let mut url = public_url.clone();
    url.set_path(&format!("{prefix}/callback"));
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused() {
        assert!(query_param(Some("state=a&state=b"), "state").is_err());
        assert_eq!(
            query_param(Some("state=a%20b&x=1"), "state")
                .unwrap()
                .as_deref(),
            Some("a b")
        );
        assert_eq!(query_param(None, "state").unwrap(), None);
    }

    #[test]
    fn protocol_claims_are_not_kept() {
        let claims = serde_json::json!({"sub": "u", "email": "e", "nonce": "n", "exp": 1, "aud": "c", "groups": ["g"]});
        let kept = session_claims(claims.as_object().unwrap().clone());
        let mut keys: Vec<&str> = kept.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["email", "groups", "sub"]);
    }
}

//! The route table and the browser-facing endpoints: discovery, authorize, login, jwks,
//! userinfo, end_session. The token endpoint lives in `token`.
//!
//! Error handling follows RFC 6749 section 4.1.2.1: while the client or its redirect_uri is in
//! doubt, the user gets an HTML error page and is never redirected (an open redirector
//! otherwise); once both are known, errors go back to the client as `error=` and `state`.

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::keys::random_token;
use super::pages;
use super::state::{
    lock, ClientMethod, CodeGrant, PendingLogin, Shared, CODE_MEMORY, CODE_TTL, LOGIN_TTL,
};
use super::users::{self, DemoUser};
use super::{form, token, Profile};

pub(crate) type Resp = Response<Full<Bytes>>;

/// Every request body is read up to this size; larger ones get 413.
const BODY_LIMIT: usize = 64 * 1024;

/// Scopes the provider knows; others in a request are dropped from the grant (RFC 6749 3.3).
pub(crate) const SCOPES: &[&str] = &["openid", "profile", "email", "groups", "offline_access"];

const CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "azp",
    "exp",
    "iat",
    "nbf",
    "auth_time",
    "nonce",
    "at_hash",
    "name",
    "preferred_username",
    "email",
    "email_verified",
    "groups",
];

pub(crate) async fn handle<B>(shared: &Shared, request: Request<B>) -> Resp
where
    B: http_body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    #[cfg(feature = "misbehavior")]
    if let Some(delay) = super::misbehavior::delay(&shared.misbehavior()) {
        tokio::time::sleep(delay).await;
    }
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return oauth_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "request body too large",
            );
        }
        Err(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "unreadable request body",
            )
        }
    };
    route(
        shared,
        &parts.method,
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        &parts.headers,
        &body,
    )
}

fn route(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Resp {
    use std::sync::atomic::Ordering::Relaxed;
    let urls = &shared.urls;
    let get = method == Method::GET || method == Method::HEAD;
    if path == urls.discovery_path {
        if !get {
            return not_allowed("GET");
        }
        shared.counters.discovery.fetch_add(1, Relaxed);
        json_response(StatusCode::OK, &discovery(shared))
    } else if path == urls.jwks_path {
        if !get {
            return not_allowed("GET");
        }
        shared.counters.jwks.fetch_add(1, Relaxed);
        let jwks = shared
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .jwks(shared.profile);
        json_response(StatusCode::OK, &jwks)
    } else if path == urls.authorize_path {
        if !get {
            return not_allowed("GET");
        }
        authorize(shared, query)
    } else if path == urls.login_path {
        if method != Method::POST {
            return not_allowed("POST");
        }
        login(shared, headers, body)
    } else if path == urls.token_path {
        if method != Method::POST {
            return not_allowed("POST");
        }
        shared.counters.token.fetch_add(1, Relaxed);
        if !is_form(headers) {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Content-Type must be application/x-www-form-urlencoded",
            );
        }
        token::token(shared, headers, body)
    } else if path == urls.introspection_path {
        if method != Method::POST {
            return not_allowed("POST");
        }
        shared.counters.introspection.fetch_add(1, Relaxed);
        if !is_form(headers) {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Content-Type must be application/x-www-form-urlencoded",
            );
        }
        token::introspect(shared, headers, body)
    } else if path == urls.userinfo_path {
        if !(get || method == Method::POST) {
            return not_allowed("GET, POST");
        }
        shared.counters.userinfo.fetch_add(1, Relaxed);
        userinfo(shared, headers)
    } else if path == urls.end_session_path {
        if !get {
            return not_allowed("GET");
        }
        end_session(shared, query)
    } else {
        oauth_error(StatusCode::NOT_FOUND, "invalid_request", "no such endpoint")
    }
}

fn discovery(shared: &Shared) -> Value {
    let u = &shared.urls;
    let mut grants = vec!["authorization_code"];
    if shared.issue_refresh_token {
        grants.push("refresh_token");
    }
    let mut claims: Vec<&str> = CLAIMS.to_vec();
    claims.push("sid");
    if shared.profile == Profile::Asgardeo {
        claims.extend(["c_hash", "amr", "isk"]);
    }
    json!({
        "issuer": u.issuer,
        "authorization_endpoint": u.authorization_endpoint,
        "token_endpoint": u.token_endpoint,
        "jwks_uri": u.jwks_uri,
        "userinfo_endpoint": u.userinfo_endpoint,
        "end_session_endpoint": u.end_session_endpoint,
        "introspection_endpoint": u.introspection_endpoint,
        "introspection_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grants,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [shared.signing_algorithm.name()],
        "token_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": super::state::ASSERTION_ALGS,
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": SCOPES,
        "claims_supported": claims,
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
    })
}

fn authorize(shared: &Shared, query: &str) -> Resp {
    let params = match form::parse(query) {
        Ok(p) => p,
        Err(e) => return error_page(&format!("The authorization request is malformed: {e}.")),
    };
    let Some(client_id) = params.non_empty("client_id") else {
        return error_page("The authorization request has no client_id.");
    };
    let Some(client) = shared.client(client_id) else {
        return error_page("The client_id is not registered with this provider.");
    };
    let Some(redirect_uri) = params.non_empty("redirect_uri") else {
        return error_page("The authorization request has no redirect_uri.");
    };
    // RFC 6749 section 3.1.2.3 and OpenID Connect Core 3.1.2.1: exact string match.
    if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        return error_page("The redirect_uri is not registered for this client.");
    }
    let state = params.non_empty("state");
    let fail = |error: &str, description: &str| {
        redirect_with(
            redirect_uri,
            &[
                ("error", Some(error)),
                ("error_description", Some(description)),
                ("state", state),
            ],
        )
    };
    match params.non_empty("response_type") {
        None => return fail("invalid_request", "response_type is required"),
        Some("code") => {}
        Some(_) => {
            return fail(
                "unsupported_response_type",
                "only response_type=code is supported",
            )
        }
    }
    let scope = params.non_empty("scope").unwrap_or("");
    if !scope.split(' ').any(|s| s == "openid") {
        return fail("invalid_scope", "scope must contain openid");
    }
    let challenge = params.non_empty("code_challenge");
    match (challenge, params.non_empty("code_challenge_method")) {
        (None, Some(_)) => {
            return fail(
                "invalid_request",
                "code_challenge_method without code_challenge",
            )
        }
        // RFC 7636 section 4.3: an absent method means `plain`, which is not supported.
        (Some(_), method) if method != Some("S256") => {
            return fail(
                "invalid_request",
                "only code_challenge_method=S256 is supported",
            )
        }
        (Some(c), _) if !is_s256_challenge(c) => {
            return fail(
                "invalid_request",
                "code_challenge must be 43 base64url characters",
            )
        }
        (None, None) if matches!(client.method, ClientMethod::None) => {
            return fail(
                "invalid_request",
                "PKCE with S256 is required for public clients",
            )
        }
        _ => {}
    }
    // No SSO session is kept, so a silent request can never succeed (OIDC Core 3.1.2.6).
    if params
        .non_empty("prompt")
        .is_some_and(|p| p.split(' ').any(|v| v == "none"))
    {
        return fail(
            "login_required",
            "the development provider always shows its login form",
        );
    }
    let scope: Vec<&str> = scope.split(' ').filter(|s| SCOPES.contains(s)).collect();
    let Ok(request_id) = random_token(24) else {
        return internal_error();
    };
    let now = shared.clock.now();
    let pending = PendingLogin {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        state: state.map(str::to_owned),
        nonce: params.non_empty("nonce").map(str::to_owned),
        code_challenge: challenge.map(str::to_owned),
        scope: scope.join(" "),
    };
    lock(&shared.pending).insert(now, request_id.clone(), now + LOGIN_TTL, pending);
    html(
        StatusCode::OK,
        pages::login_form(shared.urls.login_path, &request_id, client_id, None),
    )
}

fn is_s256_challenge(c: &str) -> bool {
    c.len() == 43
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn login(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Resp {
    if !is_form(headers) {
        return error_page("The sign-in form must be posted as application/x-www-form-urlencoded.");
    }
    let params = match std::str::from_utf8(body)
        .map_err(|_| form::FormError::InvalidUtf8)
        .and_then(form::parse)
    {
        Ok(p) => p,
        Err(e) => return error_page(&format!("The sign-in form is malformed: {e}.")),
    };
    let expired =
        "This sign-in request is unknown or has expired. Start again from the application.";
    let Some(request_id) = params.non_empty("request_id") else {
        return error_page(expired);
    };
    let now = shared.clock.now();
    let Some(pending) = lock(&shared.pending).get_mut(now, request_id).cloned() else {
        return error_page(expired);
    };
    let Some(user) = check_password(
        params.get("username").unwrap_or(""),
        params.get("password").unwrap_or(""),
    ) else {
        let form = pages::login_form(
            shared.urls.login_path,
            request_id,
            &pending.client_id,
            Some("Wrong username or password."),
        );
        return html(StatusCode::OK, form);
    };
    // Single use: a second post of the same form (double click, replay) finds nothing.
    if lock(&shared.pending).remove(now, request_id).is_none() {
        return error_page(expired);
    }
    let (Ok(code), Ok(sid)) = (random_token(32), random_token(16)) else {
        return internal_error();
    };
    let (redirect_uri, state) = (pending.redirect_uri.clone(), pending.state.clone());
    let grant = CodeGrant {
        login: pending,
        user,
        auth_time: now,
        sid,
        expires_at: now + CODE_TTL,
        used: false,
    };
    shared.note_issued(&code);
    lock(&shared.codes).insert(now, code.clone(), now + CODE_MEMORY, grant);
    redirect_with(
        &redirect_uri,
        &[("code", Some(&code)), ("state", state.as_deref())],
    )
}

fn check_password(username: &str, password: &str) -> Option<&'static DemoUser> {
    let user = users::find(username)?;
    bool::from(user.password.as_bytes().ct_eq(password.as_bytes())).then_some(user)
}

/// The claims of a user, as userinfo returns them: the built-in ones with the configured extra
/// claims of that user merged over them.
pub(crate) fn user_claims(shared: &Shared, user: &DemoUser) -> serde_json::Map<String, Value> {
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), user.sub.into());
    claims.insert("name".into(), user.name.into());
    claims.insert("preferred_username".into(), user.username.into());
    claims.insert("email".into(), user.email.into());
    claims.insert("email_verified".into(), true.into());
    claims.insert("groups".into(), user.group_names().into());
    for (username, extra) in &shared.extra_claims {
        if username == user.username {
            claims.extend(extra.clone());
        }
    }
    // A profile changed at the provider while it runs.
    if let Some(overrides) = super::state::lock(&shared.claim_overrides).get(user.username) {
        claims.extend(overrides.clone());
    }
    claims
}

/// The user's claims as tokens carry them (the id_token, a JWT access token, an introspection
/// answer): without the ones configured for userinfo only.
pub(crate) fn token_user_claims(
    shared: &Shared,
    user: &DemoUser,
) -> serde_json::Map<String, Value> {
    let mut claims = user_claims(shared, user);
    for name in &shared.userinfo_only_claims {
        claims.remove(name);
    }
    claims
}

fn userinfo(shared: &Shared, headers: &HeaderMap) -> Resp {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    // RFC 6750 section 3: no error code when no token was sent, invalid_token otherwise.
    let Some(token) = token else {
        return with_challenge(
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_request",
                "a Bearer access token is required",
            ),
            "Bearer realm=\"dev-provider\"",
        );
    };
    let now = shared.clock.now();
    let Some(grant) = lock(&shared.access_tokens).get_mut(now, token).cloned() else {
        return with_challenge(
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "unknown or expired access token",
            ),
            "Bearer realm=\"dev-provider\", error=\"invalid_token\"",
        );
    };
    #[allow(unused_mut)]
    let mut claims = user_claims(shared, grant.user);
    #[cfg(feature = "misbehavior")]
    if shared.misbehavior() == super::Misbehavior::UserinfoWrongSub {
        claims.insert("sub".into(), "someone-else".into());
    }
    json_response(StatusCode::OK, &Value::Object(claims))
}

fn end_session(shared: &Shared, query: &str) -> Resp {
    let params = match form::parse(query) {
        Ok(p) => p,
        Err(e) => return error_page(&format!("The logout request is malformed: {e}.")),
    };
    let mut client_id = params.non_empty("client_id").map(str::to_owned);
    if let Some(hint) = params.non_empty("id_token_hint") {
        let payload = token::jwt_payload(hint)
            .filter(|p| p["iss"].as_str() == Some(shared.urls.issuer.as_str()));
        let Some(payload) = payload else {
            return error_page("The id_token_hint was not issued by this provider.");
        };
        let aud = match &payload["aud"] {
            Value::String(a) => Some(a.clone()),
            Value::Array(a) => a.first().and_then(Value::as_str).map(str::to_owned),
            _ => None,
        };
        client_id = client_id.or(aud);
    }
    let Some(target) = params.non_empty("post_logout_redirect_uri") else {
        return html(StatusCode::OK, pages::signed_out());
    };
    let candidates: Vec<_> = match &client_id {
        Some(id) => match shared.client(id) {
            Some(c) => vec![c],
            None => return error_page("The client_id is not registered with this provider."),
        },
        None => shared.clients.iter().collect(),
    };
    let Ok(target_url) = url::Url::parse(target) else {
        return error_page("The post_logout_redirect_uri is not a valid URL.");
    };
    let allowed = candidates
        .iter()
        .flat_map(|c| c.redirect_uris.iter())
        .any(|registered| {
            url::Url::parse(registered).is_ok_and(|r| r.origin() == target_url.origin())
        });
    if !allowed {
        return error_page(
            "The post_logout_redirect_uri is not on the origin of a registered redirect_uri.",
        );
    }
    redirect_with(target, &[("state", params.non_empty("state"))])
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Codes, tokens and per-request forms must not be cached (RFC 6749 section 5.1).
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Resp {
    respond(status, "application/json", value.to_string())
}

/// An OAuth error body (RFC 6749 section 5.2).
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Resp {
    json_response(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

pub(crate) fn with_challenge(mut response: Resp, challenge: &'static str) -> Resp {
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

fn html(status: StatusCode, body: String) -> Resp {
    respond(status, "text/html; charset=utf-8", body)
}

fn error_page(message: &str) -> Resp {
    html(
        StatusCode::BAD_REQUEST,
        pages::error_page("Sign-in error", message),
    )
}

fn internal_error() -> Resp {
    html(
        StatusCode::INTERNAL_SERVER_ERROR,
        pages::error_page("Internal error", "The provider failed."),
    )
}

fn not_allowed(allow: &'static str) -> Resp {
    let mut response = oauth_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "method not allowed",
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// 302 to `base` with the given query parameters appended, form-encoded by `url`.
fn redirect_with(base: &str, pairs: &[(&str, Option<&str>)]) -> Resp {
    let Ok(mut url) = url::Url::parse(base) else {
        return internal_error();
    };
    // Only touch the query when there is something to add: `query_pairs_mut` leaves a bare `?` otherwise.
    if pairs.iter().any(|(_, v)| v.is_some()) {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
    }
    let Ok(location) = HeaderValue::try_from(url.as_str()) else {
        return internal_error();
    };
    let mut response = respond(StatusCode::FOUND, "text/plain; charset=utf-8", Bytes::new());
    response.headers_mut().insert(LOCATION, location);
    response
}

//! `GatewayError`: the one place where a failure becomes a status code and a response.
//!
//! Every failure on the request path is a `GatewayError` whose [`ErrorKind`] says who failed: the client
//! (4xx), the user's authentication (401), the upstream or the provider (502/503/504), or the gateway itself
//! (500). The `detail` goes to the log only; the client sees a short fixed text for the kind plus, where
//! useful, a `public` message that is safe to show (escaped when rendered as HTML).

use std::borrow::Cow;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};

use crate::telemetry::metrics::UpstreamError;
use crate::Body;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed or ambiguous (an encoded slash in the path, a bad parameter).
    BadRequest,
    /// No valid session on a route that needs one (API clients; browsers are redirected to log in).
    Unauthenticated,
    /// A route's policy refuses the request.
    Forbidden,
    /// A bearer token was refused (RFC 6750 3.1 `invalid_token`): 401 with its `WWW-Authenticate`,
    /// always JSON.
    InvalidToken,
    /// `[access]` or a route's groups refuse the signed-in caller: 403 naming who is signed in.
    AccessDenied,
    NotFound,
    MethodNotAllowed,
    /// The login could not be completed for a reason the user can act on (denied consent, stale state).
    LoginFailed,
    /// The upstream refused the connection or broke it: 502.
    UpstreamUnavailable,
    /// The upstream did not answer in time: 504.
    UpstreamTimeout,
    /// The identity provider could not be reached or is not loaded yet: 503.
    ProviderUnavailable,
    /// The session store could not be reached or failed: 503.
    StoreUnavailable,
    /// The identity provider answered with something unusable (an invalid id_token, an error): 502.
    ProviderError,
    /// A bug or an unexpected local failure: 500.
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest | ErrorKind::LoginFailed => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthenticated | ErrorKind::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden | ErrorKind::AccessDenied => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::UpstreamUnavailable | ErrorKind::ProviderError => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::ProviderUnavailable | ErrorKind::StoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Machine-readable code for JSON bodies.
    fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::InvalidToken => "invalid_token",
            ErrorKind::AccessDenied => "access_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::LoginFailed => "login_failed",
            ErrorKind::UpstreamUnavailable => "upstream_unavailable",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::ProviderUnavailable => "provider_unavailable",
            ErrorKind::StoreUnavailable => "session_store_unavailable",
            ErrorKind::ProviderError => "provider_error",
            ErrorKind::Internal => "internal_error",
        }
    }

    fn title(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "Bad request",
            ErrorKind::Unauthenticated => "Authentication required",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::InvalidToken => "Invalid token",
            ErrorKind::AccessDenied => "Access denied",
            ErrorKind::NotFound => "Not found",
            ErrorKind::MethodNotAllowed => "Method not allowed",
            ErrorKind::LoginFailed => "Sign-in failed",
            ErrorKind::UpstreamUnavailable => "The application is unavailable",
            ErrorKind::UpstreamTimeout => "The application did not answer in time",
            ErrorKind::ProviderUnavailable => "The identity provider could not be reached",
            ErrorKind::StoreUnavailable => "Sessions are unavailable",
            ErrorKind::ProviderError => "The identity provider returned an unusable answer",
            ErrorKind::Internal => "Internal error",
        }
    }

    fn explanation(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "The request could not be understood.",
            ErrorKind::Unauthenticated => "Sign in to continue.",
            ErrorKind::Forbidden => "You are not allowed to access this page.",
            ErrorKind::InvalidToken => "The bearer token was not accepted.",
            ErrorKind::AccessDenied => "This account is not allowed to access this page.",
            ErrorKind::NotFound => "There is nothing here.",
            ErrorKind::MethodNotAllowed => "This method is not allowed here.",
            ErrorKind::LoginFailed => "The sign-in could not be completed. Please try again.",
            ErrorKind::UpstreamUnavailable => "The gateway could not connect to the application. Please try again shortly.",
            ErrorKind::UpstreamTimeout => "The application took too long to respond. Please try again shortly.",
            ErrorKind::ProviderUnavailable => "The identity provider could not be reached, so signing in is not possible right now. Please try again shortly.",
            ErrorKind::StoreUnavailable => "The gateway cannot check sessions right now. Please try again shortly.",
            ErrorKind::ProviderError => "The sign-in could not be completed because the identity provider's answer was rejected.",
            ErrorKind::Internal => "Something went wrong in the gateway.",
        }
    }
}

/// A failure on the request path.
#[derive(Debug)]
pub struct GatewayError {
    pub kind: ErrorKind,
    /// For the log only: may name internals, never secrets.
    pub detail: Cow<'static, str>,
    /// Safe to show to the user (escaped when rendered), e.g. a provider's `error_description`.
    pub public: Option<String>,
    /// `Set-Cookie` values the response carries anyway (clearing a session that just ended).
    pub set_cookies: Vec<HeaderValue>,
    /// Who is signed in, for an `AccessDenied` page, with where to sign out.
    pub signed_in: Option<Box<SignedIn>>,
    /// Why the upstream gave no answer, for the metrics (`upstream_errors` by kind).
    pub upstream: Option<UpstreamError>,
}

/// The account a denied request is signed in with, as the 403 page names it.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// Email, username or subject (escaped when rendered).
    pub name: String,
    /// The sign-out endpoint (a path of the gateway's own).
    pub sign_out: String,
}

impl GatewayError {
    pub fn new(kind: ErrorKind, detail: impl Into<Cow<'static, str>>) -> Self {
        GatewayError {
            kind,
            detail: detail.into(),
            public: None,
            set_cookies: Vec::new(),
            signed_in: None,
            upstream: None,
        }
    }

    /// The upstream gave no answer: 504 when it timed out, else 502.
    pub fn upstream(kind: UpstreamError, detail: impl Into<Cow<'static, str>>) -> Self {
        let status = match kind {
            UpstreamError::Timeout => ErrorKind::UpstreamTimeout,
            _ => ErrorKind::UpstreamUnavailable,
        };
        let mut e = GatewayError::new(status, detail);
        e.upstream = Some(kind);
        e
    }

    pub fn with_set_cookies(mut self, cookies: Vec<HeaderValue>) -> Self {
        self.set_cookies = cookies;
        self
    }

    /// A bearer token refused: `description` is a fixed text for the client (RFC 6750 3:
    /// `error_description`), `detail` the log's account.
    pub fn invalid_token(description: &'static str, detail: impl Into<Cow<'static, str>>) -> Self {
        GatewayError::new(ErrorKind::InvalidToken, detail).with_public(description)
    }

    /// `[access]` refused the caller signed in as `who`; `sign_out` is where they can change account.
    pub fn access_denied(
        detail: impl Into<Cow<'static, str>>,
        who: impl Into<String>,
        sign_out: impl Into<String>,
    ) -> Self {
        let mut e = GatewayError::new(ErrorKind::AccessDenied, detail);
        e.signed_in = Some(Box::new(SignedIn {
            name: who.into(),
            sign_out: sign_out.into(),
        }));
        e
    }

    pub fn with_public(mut self, message: impl Into<String>) -> Self {
        self.public = Some(message.into());
        self
    }

    /// Log the failure and render it for a browser (HTML) or an API client (JSON).
    pub fn into_response(self, api_client: bool) -> Response<Body> {
        let status = self.kind.status();
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                kind = self.kind.code(),
                "{}",
                self.detail
            );
        } else {
            tracing::info!(
                status = status.as_u16(),
                kind = self.kind.code(),
                "{}",
                self.detail
            );
        }
        if self.kind == ErrorKind::InvalidToken {
            return self.invalid_token_response();
        }
        let mut response = if api_client {
            let body = serde_json::json!({
                "error": self.kind.code(),
                "message": self.public.as_deref().unwrap_or(self.kind.explanation()),
            });
            text_response(status, "application/json", body.to_string())
        } else {
            let mut extra = self
                .public
                .as_deref()
                .map(|m| format!("<p class=\"detail\">{}</p>", html_escape(m)))
                .unwrap_or_default();
            if let Some(who) = &self.signed_in {
                extra = format!(
                    "<p>You are signed in as <strong>{}</strong>.</p>\
                     <p><a href=\"{}\">Sign out</a> to sign in with another account.</p>{extra}",
                    html_escape(&who.name),
                    html_escape(&who.sign_out),
                );
            }
            text_response(
                status,
                "text/html; charset=utf-8",
                page(
                    self.kind.title(),
                    &format!("<p>{}</p>{extra}", self.kind.explanation()),
                ),
            )
        };
        if self.kind == ErrorKind::Unauthenticated {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"portcullis\""),
            );
        }
        for cookie in self.set_cookies {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        response
    }
}

impl GatewayError {
    /// RFC 6750 3: 401, `WWW-Authenticate: Bearer error="invalid_token", error_description="..."`,
    /// and the same in a JSON body, whatever the client accepts (a program sent the token).
    fn invalid_token_response(self) -> Response<Body> {
        // The description is one of the fixed texts of `bearer`; quotes and backslashes (which
        // would end the quoted-string) and control characters are dropped all the same.
        let description: String = self
            .public
            .as_deref()
            .unwrap_or("the token is not valid")
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .collect();
        let body = serde_json::json!({
            "error": "invalid_token",
            "error_description": description,
        });
        let mut response = text_response(
            StatusCode::UNAUTHORIZED,
            "application/json",
            body.to_string(),
        );
        let challenge =
            format!("Bearer error=\"invalid_token\", error_description=\"{description}\"");
        if let Ok(value) = HeaderValue::try_from(challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for GatewayError {}

/// A complete response with a fixed body; `Cache-Control: no-store` because these answers depend on the
/// user's session and must never be shared by caches.
pub fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::new(body.into())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A minimal HTML page; `title` is a fixed string, `body_html` is already escaped.
pub fn page(title: &str, body_html: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}}\
         .detail{{color:#555;font-family:monospace}}</style></head>\
         <body><h1>{title}</h1>{body_html}</body></html>\n"
    )
}

/// Escape text for HTML element content and attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_text(r: Response<Body>) -> String {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn public_message_is_escaped_and_detail_hidden() {
        let e = GatewayError::new(ErrorKind::LoginFailed, "internal detail xyz")
            .with_public("<script>alert(1)</script>");
        let r = e.into_response(false);
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body = body_text(r).await;
        assert!(
            body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{body}"
        );
        assert!(!body.contains("<script>"));
        assert!(!body.contains("internal detail xyz"));
    }

    #[tokio::test]
    async fn api_clients_get_json_and_www_authenticate() {
        let r = GatewayError::new(ErrorKind::Unauthenticated, "no session").into_response(true);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let v: serde_json::Value = serde_json::from_str(&body_text(r).await).unwrap();
        assert_eq!(v["error"], "unauthenticated");
    }

    #[tokio::test]
    async fn invalid_tokens_get_the_rfc6750_challenge_and_json_always() {
        for api in [false, true] {
            let r = GatewayError::invalid_token("the token has \"expired\"", "exp 123 < now 456")
                .into_response(api);
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(
                r.headers()[header::WWW_AUTHENTICATE],
                "Bearer error=\"invalid_token\", error_description=\"the token has expired\""
            );
            assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
            let v: serde_json::Value = serde_json::from_str(&body_text(r).await).unwrap();
            assert_eq!(v["error"], "invalid_token");
            assert_eq!(v["error_description"], "the token has expired");
        }
    }

    #[tokio::test]
    async fn access_denied_names_who_is_signed_in_for_browsers() {
        let e =
            || GatewayError::access_denied("rule x", "<b>eve</b>@example.com", "/oauth2/sign_out");
        let r = e().into_response(false);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let page = body_text(r).await;
        assert!(
            page.contains("&lt;b&gt;eve&lt;/b&gt;@example.com"),
            "{page}"
        );
        assert!(page.contains("href=\"/oauth2/sign_out\""), "{page}");
        assert!(!page.contains("rule x"));
        let r = e().into_response(true);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let v: serde_json::Value = serde_json::from_str(&body_text(r).await).unwrap();
        assert_eq!(v["error"], "access_denied");
    }

    #[test]
    fn kinds_map_to_statuses() {
        assert_eq!(
            ErrorKind::UpstreamUnavailable.status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            ErrorKind::UpstreamTimeout.status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ErrorKind::ProviderUnavailable.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}

//! `POST /oauth2/backchannel_logout`: OpenID Connect Back-Channel Logout 1.0, the provider telling
//! the gateway that logins ended.
//!
//! The request is a form with one `logout_token` (section 2.5). The token is checked by `oidc` (the
//! signature with the provider's keys, then section 2.6 steps 3 to 6); its `jti` must never have been
//! seen before (step 7), which the session store remembers, across replicas when it is shared. A valid
//! token ends every session of its `sid` (or, without one, of its `sub`) through the session store, so
//! the cache of opened sessions forgets them too. The answers are section 2.8's: `200` with
//! `Cache-Control: no-store`, or `400` with a JSON error; nothing ends on a `400`. Each request is
//! counted by outcome (`backchannel_logouts`: accepted, refused, failed).

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::error::text_response;
use crate::login;
use crate::runtime::Ctx;
use crate::session::Revocation;
use crate::telemetry::metrics::BackchannelOutcome;
use crate::Body;

/// Largest request body read: a logout token is a few KiB.
const MAX_BODY: usize = 64 * 1024;

/// Handle one back-channel logout request.
pub async fn logout(cx: Ctx<'_>, req: Request<Incoming>) -> Response<Body> {
    let outcome = handle(cx, req).await;
    cx.rt.metrics.backchannel_logout(match outcome {
        Ok(()) => BackchannelOutcome::Accepted,
        Err(Refusal::Invalid(_)) => BackchannelOutcome::Refused,
        Err(Refusal::Unavailable(_)) => BackchannelOutcome::Failed,
    });
    match outcome {
        Ok(()) => answer(StatusCode::OK, Bytes::new()),
        Err(Refusal::Invalid(why)) => {
            tracing::info!(status = 400, "back-channel logout refused: {why}");
            let body = serde_json::json!({
                "error": "invalid_request",
                "error_description": why,
            });
            answer(StatusCode::BAD_REQUEST, Bytes::from(body.to_string()))
        }
        Err(Refusal::Unavailable(why)) => {
            tracing::warn!(status = 503, "back-channel logout failed: {why}");
            let body = serde_json::json!({
                "error": "temporarily_unavailable",
                "error_description": "the session store could not be reached; retry later",
            });
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from(body.to_string()),
            )
        }
    }
}

enum Refusal {
    /// The request or its token is wrong: 400, nothing ends.
    Invalid(String),
    /// The store could not record the logout: 503, so the provider may try again.
    Unavailable(String),
}

async fn handle(cx: Ctx<'_>, req: Request<Incoming>) -> Result<(), Refusal> {
    let form = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form {
        return Err(Refusal::Invalid(
            "expected an application/x-www-form-urlencoded body".into(),
        ));
    }
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| Refusal::Invalid(format!("unreadable body: {e}")))?
        .to_bytes();
    let mut tokens = url::form_urlencoded::parse(&body)
        .filter(|(name, _)| name == "logout_token")
        .map(|(_, value)| value);
    let (Some(token), None) = (tokens.next(), tokens.next()) else {
        return Err(Refusal::Invalid("expected exactly one logout_token".into()));
    };
    let claims = cx
        .rt
        .provider
        .validate_logout_token(&token, SystemTime::now())
        .await
        .map_err(|e| Refusal::Invalid(e.to_string()))?;
    let now = login::unix_now();
    let sessions = &cx.rt.sessions;
    let first = sessions
        .first_use(
            &cx.snap.cookies,
            &format!("logout-jti {}", claims.jti),
            claims.forget_after,
            now,
        )
        .await
        .map_err(|e| Refusal::Unavailable(e.to_string()))?;
    if !first {
        return Err(Refusal::Invalid(
            crate::oidc::logout_token::LogoutTokenError::Replayed.to_string(),
        ));
    }
    let revocation = match (claims.sid, claims.sub) {
        (Some(sid), _) => Revocation::Sid(sid),
        (None, Some(sub)) => Revocation::Sub(sub),
        (None, None) => unreachable!("the logout token checks require sid or sub"),
    };
    sessions
        .revoke(&cx.snap.cookies, &revocation, now)
        .await
        .map_err(|e| Refusal::Unavailable(e.to_string()))?;
    match &revocation {
        Revocation::Sid(_) => tracing::info!("back-channel logout: the sessions of one sid ended"),
        Revocation::Sub(sub) => {
            tracing::info!(sub = %sub, "back-channel logout: every session of the user ended")
        }
    }
    Ok(())
}

fn answer(status: StatusCode, body: Bytes) -> Response<Body> {
    let content_type = if body.is_empty() {
        "text/plain; charset=utf-8"
    } else {
        "application/json"
    };
    let mut response = text_response(status, content_type, body);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

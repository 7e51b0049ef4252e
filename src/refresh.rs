//! The refresh phase: renew a session's tokens before its access token expires.
//!
//! When the access token expires within `session.refresh_before` and the session holds a refresh
//! token, the request waits for one refresh (RFC 6749 section 6) before it goes on:
//! - single-flight: the refresh lock of the session's store (per process for the cookie store, in
//!   Redis across replicas) admits one refresher; the others wait at most `upstream.timeout` and then
//!   take its result, never redeeming the refresh token themselves, so a rotated refresh token is
//!   never sent twice;
//! - the new id_token, if any, passes the checks of the first one (OIDC Core 12.2, same `sub`), and
//!   its claims replace the old ones; a new id_token that fails counts as `invalid_grant`;
//! - `invalid_grant` ends the session: browsers are sent to log in, API clients get 401;
//! - a provider that cannot be reached (or fails) while the access token is still valid: the request
//!   goes on with the current session and the refresh is tried again at most once every
//!   [`RETRY_AFTER`]; once the access token has expired: 503.
//!
//! Each refresh is counted by outcome (`refreshes`): refreshed here, shared (another request's result
//! taken), refused (the session ended), failed (the provider: tried again later).
//!
//! The refreshed session replaces the old one in the store ([`Sessions::supersede`]): the cookie store
//! sends it back in `Set-Cookie` and retires the old cookie; a shared store updates it in place and
//! tells the other replicas.
//!
//! [`Sessions::supersede`]: crate::session::Sessions::supersede

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::Request;

use crate::config::RefreshMode;
use crate::error::{ErrorKind, GatewayError};
use crate::login;
use crate::oidc::{ExchangeError, RefreshToken};
use crate::phases::{Answer, Caller, Judged};
use crate::runtime::Ctx;
use crate::session::store::SessionKey;
use crate::session::{Authenticated, Claims, Session, StoreError};
use crate::telemetry::metrics::RefreshOutcome;

/// The least time between two refresh attempts of one session after the provider failed.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Sessions whose last refresh failed for want of the provider, and when to try again.
#[derive(Default)]
pub struct Backoff {
    retry_at: Mutex<HashMap<SessionKey, u64>>,
}

/// Most sessions remembered as waiting for the provider.
const MAX_BACKOFF: usize = 10_000;

impl Backoff {
    fn waiting(&self, key: &SessionKey, now: u64) -> bool {
        let map = self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
        !map.is_empty() && map.get(key).is_some_and(|&at| now < at)
    }

    fn note(&self, key: &SessionKey, now: u64) {
        let mut map = self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_BACKOFF {
            map.retain(|_, &mut at| now < at);
        }
        if map.len() < MAX_BACKOFF {
            map.insert(key.clone(), now + RETRY_AFTER.as_secs());
        }
    }

    fn clear(&self, key: &SessionKey) {
        let mut map = self.retry_at.lock().unwrap_or_else(|e| e.into_inner());
        if !map.is_empty() {
            map.remove(key);
        }
    }
}

/// Phase 4: the caller's session with fresh tokens when they were due (see the module header).
pub async fn refresh<B>(
    cx: Ctx<'_>,
    req: &Request<B>,
    judged: &Judged<'_>,
    mut caller: Caller,
) -> Result<Caller, Answer> {
    let Some(auth) = caller.session.clone() else {
        return Ok(caller);
    };
    let settings = &cx.snap.config.session;
    let (Some(access_expires_at), Some(_)) =
        (auth.session.access_expires_at, &auth.session.refresh_token)
    else {
        return Ok(caller);
    };
    let now = login::unix_now();
    if settings.refresh == RefreshMode::Off
        || now.saturating_add(settings.refresh_before.as_secs()) < access_expires_at
    {
        return Ok(caller);
    }
    let still_valid = now < access_expires_at;
    if cx.rt.refresh_backoff.waiting(&auth.key, now) {
        return if still_valid {
            Ok(caller)
        } else {
            Err(
                provider_gone("the access token expired and the provider failed the last refresh")
                    .into(),
            )
        };
    }

    let wait = cx.snap.config.upstream.timeout;
    let _lock = match cx.rt.sessions.lock_refresh(&auth.key, wait).await {
        Ok(lock) => lock,
        Err(e) if still_valid => {
            tracing::warn!("refresh skipped: {e}; the current access token is still valid");
            return Ok(caller);
        }
        Err(e) => return Err(store_failure(e).into()),
    };

    // Another request (here or on another replica) refreshed this session while we waited.
    let metrics = &cx.rt.metrics;
    if let Some(successor) = auth.successor() {
        metrics.refresh(RefreshOutcome::Shared);
        caller.session = Some(successor.auth.clone());
        caller
            .set_cookies
            .extend(successor.set_cookies.iter().cloned());
        return Ok(caller);
    }
    match cx
        .rt
        .sessions
        .reload(&cx.snap.cookies, &auth.key, now)
        .await
    {
        Ok(Some(stored))
            if stored.session.refresh_token != auth.session.refresh_token
                || stored.session.access_expires_at != auth.session.access_expires_at =>
        {
            metrics.refresh(RefreshOutcome::Shared);
            caller.session = Some(Arc::new(cx.snap.open(stored.session, auth.key.clone())));
            return Ok(caller);
        }
        // Gone from the shared store meanwhile (signed out, revoked, refused elsewhere).
        Ok(None) if cx.snap.config.session.store == crate::config::StoreKind::Redis => {
            return Err(session_ended(
                cx,
                req,
                judged,
                Vec::new(),
                "the session ended while its refresh waited",
            ));
        }
        Ok(_) => {}
        Err(e) if still_valid => {
            tracing::warn!("refresh skipped: {e}; the current access token is still valid");
            return Ok(caller);
        }
        Err(e) => return Err(store_failure(e).into()),
    }

    match redeem(cx, &auth, now).await {
        Ok(session) => {
            let new = cx.snap.open(session, auth.key.clone());
            let successor = cx
                .rt
                .sessions
                .supersede(&cx.snap.cookies, &auth, new, req.headers(), now)
                .await;
            let successor = match successor {
                Ok(successor) => successor,
                Err(StoreError::Gone) => {
                    let cleared = cx.snap.cookies.clear(req.headers());
                    return Err(session_ended(
                        cx,
                        req,
                        judged,
                        cleared,
                        "the session ended during its refresh",
                    ));
                }
                Err(e) => return Err(store_failure(e).into()),
            };
            cx.rt.refresh_backoff.clear(&auth.key);
            metrics.refresh(RefreshOutcome::Refreshed);
            tracing::info!(sub = auth.session.sub().unwrap_or("?"), "session refreshed");
            caller.session = Some(successor.auth.clone());
            caller.set_cookies = successor.set_cookies.clone();
            Ok(caller)
        }
        Err(Refused(why)) => {
            metrics.refresh(RefreshOutcome::Refused);
            tracing::info!(
                sub = auth.session.sub().unwrap_or("?"),
                "refresh refused ({why}): the session ends"
            );
            if let Err(e) = cx.rt.sessions.end(&auth, now).await {
                tracing::warn!("ending the refused session failed: {e}");
            }
            let cleared = cx.snap.cookies.clear(req.headers());
            Err(session_ended(cx, req, judged, cleared, why))
        }
        Err(Unavailable(why)) => {
            metrics.refresh(RefreshOutcome::Failed);
            cx.rt.refresh_backoff.note(&auth.key, now);
            if still_valid {
                tracing::warn!("refresh failed ({why}); the current access token is still valid, retrying later");
                Ok(caller)
            } else {
                Err(provider_gone(&format!(
                    "refresh failed after the access token expired: {why}"
                ))
                .into())
            }
        }
    }
}

/// Why a refresh did not give a new session.
enum Failure {
    /// The provider refused the grant (`invalid_grant`) or its answer failed the checks: the
    /// session cannot go on.
    Refused(String),
    /// The provider could not be reached or failed: try again later.
    Unavailable(String),
}
use Failure::{Refused, Unavailable};

/// Redeem the session's refresh token and build the session that replaces it.
async fn redeem(cx: Ctx<'_>, auth: &Authenticated, now: u64) -> Result<Session, Failure> {
    let old = &auth.session;
    let refresh_token = old
        .refresh_token
        .clone()
        .map(RefreshToken::new)
        .ok_or_else(|| Refused("no refresh token".into()))?;
    let provider = &cx.rt.provider;
    let tokens = provider
        .refresh(&refresh_token)
        .await
        .map_err(|e| match &e {
            ExchangeError::ErrorResponse { error, .. } if error == "invalid_grant" => {
                Refused(e.to_string())
            }
            _ => Unavailable(e.to_string()),
        })?;
    let mut claims = match &tokens.id_token {
        Some(id_token) => {
            let sub = old.sub().unwrap_or_default();
            let claims = provider
                .validate_refreshed_id_token(
                    id_token.secret(),
                    sub,
                    Some(tokens.access_token.secret()),
                    SystemTime::now(),
                )
                .await
                .map_err(|e| Refused(format!("refreshed id_token rejected: {e}")))?;
            login::session_claims(claims)
        }
        None => old.claims.to_map(),
    };
    // `oidc.userinfo_claims`: what the id_token lacks, from userinfo with the new access token.
    login::merge_userinfo(cx, &tokens.access_token, &mut claims)
        .await
        .map_err(|e| match e.kind {
            ErrorKind::ProviderUnavailable => Unavailable(e.detail.to_string()),
            _ => Refused(e.detail.to_string()),
        })?;
    let claims = Claims::new(&claims)
        .map_err(|e| Refused(format!("refreshed claims cannot be stored: {e}")))?;
    let snap = cx.snap;
    Ok(Session {
        claims,
        id_token: match &tokens.id_token {
            Some(t) if login::keep_id_token(cx, t.secret()) => Some(t.secret().to_string()),
            Some(_) => None,
            None => old.id_token.clone(),
        },
        access_token: snap
            .identity
            .passes_access_token()
            .then(|| tokens.access_token.secret().to_string()),
        // A provider that rotates refresh tokens sends a new one; one that does not keeps the old.
        refresh_token: tokens
            .refresh_token
            .as_ref()
            .map(|t| t.secret().to_string())
            .or_else(|| old.refresh_token.clone()),
        created_at: old.created_at,
        expires_at: old.expires_at,
        seen_at: now,
        access_expires_at: tokens.expires_in.map(|d| now.saturating_add(d.as_secs())),
    })
}

/// The session ended: browsers are sent to log in (their session cookies cleared), API clients 401.
fn session_ended<B>(
    cx: Ctx<'_>,
    req: &Request<B>,
    judged: &Judged<'_>,
    cleared: Vec<http::HeaderValue>,
    why: impl std::fmt::Display,
) -> Answer {
    crate::phases::not_signed_in(
        cx,
        req.headers(),
        judged,
        cleared,
        format_args!("session ended for {}: {why}", judged.path),
    )
}

fn provider_gone(detail: &str) -> GatewayError {
    GatewayError::new(ErrorKind::ProviderUnavailable, detail.to_string())
}

fn store_failure(e: StoreError) -> GatewayError {
    GatewayError::new(ErrorKind::StoreUnavailable, format!("refresh: {e}"))
}

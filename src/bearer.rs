//! API clients: `Authorization: Bearer <token>` on a protected route, when `[api]` is set.
//!
//! What it owns: finding the token in the request (RFC 6750 2.1), choosing how to check it, the cache
//! of checked tokens with its single flight, and what the client is told when a token is refused
//! (`invalid_token` with a fixed description, RFC 6750 3.1). What it does not own: the checks
//! themselves (`oidc::access_token` for JWTs against the provider's keys, `oidc::introspection` for
//! opaque tokens), the policy (`authorize` applies `[access]` to a token's claims as to a session's),
//! or the identity headers (`identity`, through `Snapshot::open`).
//!
//! How a token is checked: one of three dot-separated parts (a signed JWT) is validated locally when
//! `api.audiences` is set (its `aud` must name one); any other token, or any token when no audiences
//! are set, goes to the provider's introspection endpoint when `api.introspection` is on; otherwise it
//! is refused.
//!
//! Why it is shaped so: an API client sends the same token with every request until it expires, so
//! the outcome is cached by a SHA-256 of the token (the token itself is never kept as a key): a
//! validated JWT until its `exp` (at most [`JWT_REUSE`]), an introspection answer for at most
//! `api.introspection_cache` and never past its `exp`, and under one configuration only (a reload
//! checks every token again). Concurrent requests with a token not yet cached share one check (one
//! introspection call per token, not one per request). Refusals and failures are not cached: the
//! next request asks again.
//!
//! With `oidc.userinfo_claims`, an introspected token's claims are completed from userinfo, as a
//! session's are at login (a JWT carries its own claims, and a provider may refuse a token issued
//! for an API at its userinfo endpoint). A userinfo answer about another subject refuses the token;
//! one that refuses the token leaves the claims as introspection gave them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use http::header::{HeaderMap, AUTHORIZATION};
use serde_json::{Map, Value};
use tokio::sync::OnceCell;

use crate::error::{ErrorKind, GatewayError};
use crate::oidc::{
    AccessToken, AccessTokenError, IntrospectionError, JwsError, UnverifiedJws, UserinfoError,
};
use crate::runtime::Ctx;
use crate::session::store::SessionKey;
use crate::session::{Authenticated, Claims, Session};

/// The longest a validated JWT is reused without checking it again (its own `exp` may come first).
pub const JWT_REUSE: u64 = 300;
/// At most this many tokens are cached; beyond it, expired ones go first, then any.
const MAX_TOKENS: usize = 10_000;

/// The token of `Authorization: Bearer <token>` (the scheme in any case); `None` when the request
/// carries no bearer credential, `Some(Err)` when it carries a malformed one.
pub fn token(headers: &HeaderMap) -> Option<Result<&str, GatewayError>> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    if headers.get_all(AUTHORIZATION).iter().count() > 1 {
        return Some(Err(GatewayError::invalid_token(
            "more than one Authorization header",
            "bearer request with several Authorization headers",
        )));
    }
    let token = trim_spaces(rest);
    // RFC 6750 2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
    let body_len = token
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || b"-._~+/".contains(b)))
        .unwrap_or(token.len());
    let well_formed = body_len > 0 && token[body_len..].iter().all(|&b| b == b'=');
    if !well_formed || token.len() > crate::oidc::jws::MAX_TOKEN_LEN {
        return Some(Err(GatewayError::invalid_token(
            "the token is malformed",
            "bearer token is empty, too long or not a b64token",
        )));
    }
    // Only ASCII passed the check above.
    Some(std::str::from_utf8(token).map_err(|_| {
        GatewayError::invalid_token("the token is malformed", "bearer token is not ASCII")
    }))
}

fn trim_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A token that passed its checks: the claims it stands for and until when.
#[derive(Debug)]
pub struct Checked {
    pub claims: Claims,
    /// The token's `exp` (Unix seconds): the identity's end.
    pub exp: u64,
    /// Reused until here (Unix seconds): `exp`, or sooner.
    pub until: u64,
}

/// Why a token was not accepted, as the cache's waiters share it.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// 401 `invalid_token`: a fixed description for the client, the detail for the log.
    Invalid {
        description: &'static str,
        detail: String,
    },
    /// The provider could not answer (503) or answered with something unusable (502).
    Provider { kind: ErrorKind, detail: String },
}

impl From<Refusal> for GatewayError {
    fn from(r: Refusal) -> GatewayError {
        match r {
            Refusal::Invalid {
                description,
                detail,
            } => GatewayError::invalid_token(description, detail),
            Refusal::Provider { kind, detail } => GatewayError::new(kind, detail),
        }
    }
}

fn invalid(description: &'static str, detail: impl std::fmt::Display) -> Refusal {
    Refusal::Invalid {
        description,
        detail: format!("bearer token refused: {detail}"),
    }
}

fn provider(kind: ErrorKind, detail: impl std::fmt::Display) -> Refusal {
    Refusal::Provider {
        kind,
        detail: format!("bearer token not checked: {detail}"),
    }
}

type Outcome = Result<Arc<Checked>, Refusal>;

/// What the cache holds for one token.
enum Slot {
    /// Being checked; waiters share the outcome.
    Pending(Arc<OnceCell<Outcome>>),
    /// Checked and accepted, with the identity opened under configuration `generation`.
    Ready {
        checked: Arc<Checked>,
        generation: u64,
        auth: Arc<Authenticated>,
    },
}

/// Checked tokens by the SHA-256 of the token.
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<[u8; 32], Slot>>,
}

fn digest(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(d.as_ref());
    key
}

impl TokenCache {
    /// The identity `token` stands for under the snapshot of `cx`: from the cache while its entry
    /// lasts, else checked by `check` (once, however many requests wait for it).
    pub async fn identity<F, Fut>(
        &self,
        cx: Ctx<'_>,
        token: &str,
        now: u64,
        check: F,
    ) -> Result<Arc<Authenticated>, Refusal>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Outcome>,
    {
        let key = digest(token);
        let generation = cx.snap.generation;
        let cell = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            match slots.get(&key) {
                // Checked under this configuration and still within its time: the hot path.
                Some(Slot::Ready {
                    checked,
                    generation: built,
                    auth,
                }) if checked.until > now && *built == generation => {
                    return Ok(auth.clone());
                }
                Some(Slot::Pending(cell)) => cell.clone(),
                // Unknown, expired, or checked under another configuration (whose audiences or
                // introspection settings may differ): checked again.
                _ => {
                    let cell = Arc::new(OnceCell::new());
                    if slots.len() >= MAX_TOKENS {
                        evict(&mut slots, now);
                    }
                    slots.insert(key, Slot::Pending(cell.clone()));
                    cell
                }
            }
        };
        let outcome = cell.get_or_init(check).await.clone();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        // The first waiter to get here settles the slot; later ones find it settled.
        let ours = matches!(slots.get(&key), Some(Slot::Pending(c)) if Arc::ptr_eq(c, &cell));
        match outcome {
            Ok(checked) => {
                if ours && checked.until > now {
                    let auth = Arc::new(open(cx, &checked, &key));
                    slots.insert(
                        key,
                        Slot::Ready {
                            checked,
                            generation,
                            auth: auth.clone(),
                        },
                    );
                    return Ok(auth);
                }
                if ours {
                    slots.remove(&key);
                }
                match slots.get(&key) {
                    Some(Slot::Ready {
                        generation: built,
                        auth,
                        ..
                    }) if *built == generation => Ok(auth.clone()),
                    _ => Ok(Arc::new(open(cx, &checked, &key))),
                }
            }
            Err(refusal) => {
                if ours {
                    slots.remove(&key);
                }
                Err(refusal)
            }
        }
    }

    /// How many tokens are cached (accepted or being checked).
    pub fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Make room: drop expired entries, and when none has expired, some others (never one being
/// checked, whose waiters would otherwise check again).
fn evict(slots: &mut HashMap<[u8; 32], Slot>, now: u64) {
    slots.retain(|_, slot| match slot {
        Slot::Ready { checked, .. } => checked.until > now,
        Slot::Pending(_) => true,
    });
    if slots.len() >= MAX_TOKENS {
        let doomed: Vec<[u8; 32]> = slots
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Ready { .. }))
            .map(|(k, _)| *k)
            .take(MAX_TOKENS / 10)
            .collect();
        for k in doomed {
            slots.remove(&k);
        }
    }
}

/// The identity of a checked token under the snapshot of `cx`: a session of one token, with no
/// tokens kept (the client sends its own with every request).
fn open(cx: Ctx<'_>, checked: &Checked, key: &[u8; 32]) -> Authenticated {
    let now = crate::login::unix_now();
    cx.snap.open(
        Session {
            claims: checked.claims.clone(),
            id_token: None,
            access_token: None,
            refresh_token: None,
            created_at: now,
            expires_at: checked.exp,
            seen_at: now,
            access_expires_at: None,
        },
        SessionKey(*key),
    )
}

/// Claims that only served to check the token are not part of the identity.
const PROTOCOL_CLAIMS: &[&str] = &[
    "aud",
    "azp",
    "exp",
    "iat",
    "nbf",
    "nonce",
    "at_hash",
    "c_hash",
    "jti",
    "isk",
    "active",
    "token_type",
];

/// A checked token's claims as its identity keeps them: without the claims that only served the
/// check.
pub fn identity_claims(
    mut claims: Map<String, Value>,
) -> Result<Claims, crate::session::SessionError> {
    for name in PROTOCOL_CLAIMS {
        claims.remove(*name);
    }
    Claims::new(&claims)
}

/// The identity of the bearer token in a request to a protected route (`[api]` is set).
pub async fn authenticate(cx: Ctx<'_>, token: &str) -> Result<Arc<Authenticated>, GatewayError> {
    let Some(api) = cx.snap.config.api.as_ref() else {
        return Err(GatewayError::new(
            ErrorKind::Internal,
            "bearer authentication without [api]",
        ));
    };
    if !cx.rt.provider.is_ready() {
        return Err(GatewayError::new(
            ErrorKind::ProviderUnavailable,
            "bearer token not checked: the provider's metadata and keys are not loaded",
        ));
    }
    let now = crate::login::unix_now();
    let identity = cx
        .rt
        .tokens
        .identity(cx, token, now, || check(cx, api, token, now))
        .await?;
    Ok(identity)
}

/// Check `token` as the module header says.
async fn check(cx: Ctx<'_>, api: &crate::config::ApiConfig, token: &str, now: u64) -> Outcome {
    let provider = &cx.rt.provider;
    let wall = SystemTime::now();
    // Three parts are a signed JWT (anything wrong with it then is a refusal, never a reason to
    // ask the provider instead); anything else is opaque.
    let jwt = if api.audiences.is_empty() || token.bytes().filter(|&b| b == b'.').count() != 2 {
        None
    } else {
        Some(UnverifiedJws::parse(token).map_err(|e| jwt_refusal(e.into()))?)
    };
    let (claims, exp, reuse) = match jwt {
        Some(jwt) => {
            let (claims, exp) = provider
                .validate_access_token(&jwt, &api.audiences, wall)
                .await
                .map_err(jwt_refusal)?;
            (claims, exp, JWT_REUSE)
        }
        None if api.introspection => {
            let mut got = provider
                .introspect(&AccessToken::new(token), &api.audiences, wall)
                .await
                .map_err(introspection_refusal)?;
            let has_userinfo = provider
                .metadata()
                .is_some_and(|m| m.userinfo_endpoint.is_some());
            if cx.snap.config.oidc.userinfo_claims && has_userinfo {
                fill_from_userinfo(cx, token, &mut got.claims).await?;
            }
            (got.claims, got.exp, api.introspection_cache.as_secs())
        }
        None => {
            return Err(invalid(
                "the token is not a JWT this gateway accepts",
                if api.audiences.is_empty() {
                    "not a JWT, and introspection is off"
                } else {
                    "not a signed JWT, and introspection is off"
                },
            ))
        }
    };
    let claims =
        identity_claims(claims).map_err(|e| invalid("the token's claims cannot be used", e))?;
    let exp = u64::try_from(exp).unwrap_or(0);
    Ok(Arc::new(Checked {
        claims,
        exp,
        until: exp.min(now.saturating_add(reuse)),
    }))
}

/// `oidc.userinfo_claims`: what the token's claims lack, from the userinfo endpoint (same `sub`).
async fn fill_from_userinfo(
    cx: Ctx<'_>,
    token: &str,
    claims: &mut Map<String, Value>,
) -> Result<(), Refusal> {
    let info = match cx
        .rt
        .provider
        .fetch_userinfo(&AccessToken::new(token))
        .await
    {
        Ok(info) => info,
        Err(e @ UserinfoError::Rejected(_)) => {
            tracing::info!("{e}; the bearer token's claims are those of its introspection");
            return Ok(());
        }
        Err(e @ (UserinfoError::Unreachable(_) | UserinfoError::NotReady)) => {
            return Err(provider(ErrorKind::ProviderUnavailable, e))
        }
        Err(e) => return Err(provider(ErrorKind::ProviderError, e)),
    };
    crate::oidc::userinfo::merge_userinfo(claims, info)
        .map_err(|e| invalid("the token's userinfo is about another subject", e))
}

fn jwt_refusal(e: AccessTokenError) -> Refusal {
    use AccessTokenError as E;
    let description = match &e {
        E::Jws(JwsError::Malformed(_)) | E::Malformed(_) => "the token is malformed",
        E::Jws(JwsError::UnsupportedAlgorithm(_) | JwsError::KeyAlgorithmMismatch) => {
            "the token's signature algorithm is not accepted"
        }
        E::Jws(JwsError::UnknownKey) => "the token is signed with an unknown key",
        E::Jws(JwsError::BadSignature) => "the token's signature does not verify",
        E::MissingClaim(_) => "the token lacks a required claim",
        E::IssuerMismatch { .. } => "the token's issuer is not accepted",
        E::AudienceMismatch => "the token's audience is not accepted",
        E::Expired => "the token has expired",
        E::NotYetValid | E::IssuedInFuture => "the token is not valid yet",
    };
    invalid(description, e)
}

fn introspection_refusal(e: IntrospectionError) -> Refusal {
    use IntrospectionError as E;
    match &e {
        E::Inactive => invalid("the token is not active", e),
        E::IssuerMismatch { .. } => invalid("the token's issuer is not accepted", e),
        E::Claims(inner) => {
            let description = match jwt_refusal(inner.clone()) {
                Refusal::Invalid { description, .. } => description,
                Refusal::Provider { .. } => "the token is not valid",
            };
            invalid(description, e)
        }
        E::NotReady | E::Unreachable(_) => provider(ErrorKind::ProviderUnavailable, e),
        E::NoEndpoint | E::Rejected(_) | E::BadResponse(_) | E::Request(_) => {
            provider(ErrorKind::ProviderError, e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    fn ok(values: &[&str]) -> Option<String> {
        let h = headers(values);
        token(&h).map(|t| t.map(str::to_string).expect("well formed"))
    }

    fn refused(values: &[&str]) -> bool {
        matches!(token(&headers(values)), Some(Err(e)) if e.kind == ErrorKind::InvalidToken)
    }

    #[test]
    fn bearer_tokens_are_found_in_any_case_of_the_scheme() {
        assert_eq!(
            ok(&["Bearer abc.def-_~+/=="]).as_deref(),
            Some("abc.def-_~+/==")
        );
        assert_eq!(ok(&["bearer  tok "]).as_deref(), Some("tok"));
        assert_eq!(ok(&["BEARER tok"]).as_deref(), Some("tok"));
        assert_eq!(ok(&["Basic dXNlcjpwdw=="]), None);
        assert_eq!(ok(&[]), None);
        assert_eq!(ok(&["Bearerx tok"]), None);
    }

    #[test]
    fn malformed_bearer_credentials_are_refused() {
        assert!(refused(&["Bearer"]));
        assert!(refused(&["Bearer "]));
        assert!(refused(&["Bearer a b"]));
        assert!(refused(&["Bearer a=b"]));
        assert!(refused(&["Bearer a\"b"]));
        assert!(refused(&["Bearer a", "Bearer b"]));
        let long = format!("Bearer {}", "a".repeat(crate::oidc::jws::MAX_TOKEN_LEN + 1));
        assert!(refused(&[long.as_str()]));
    }

    #[test]
    fn descriptions_never_carry_token_material() {
        let r = jwt_refusal(AccessTokenError::IssuerMismatch {
            found: "https://evil".into(),
        });
        let Refusal::Invalid { description, .. } = r else {
            panic!("invalid");
        };
        assert!(!description.contains("evil"));
        assert!(matches!(
            introspection_refusal(IntrospectionError::Unreachable("x".into())),
            Refusal::Provider {
                kind: ErrorKind::ProviderUnavailable,
                ..
            }
        ));
        assert!(matches!(
            introspection_refusal(IntrospectionError::Inactive),
            Refusal::Invalid {
                description: "the token is not active",
                ..
            }
        ));
    }
}

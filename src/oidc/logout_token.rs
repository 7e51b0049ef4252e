//! The logout token of OpenID Connect Back-Channel Logout 1.0 (section 2.4), validated as section 2.6
//! says, in its order.
//!
//! What it owns: deciding whether a verified JWS is a logout token from our provider for us, and
//! which sessions it names. What it does not own: the signature (the JWS core, through the
//! provider's keys) and whether its `jti` was seen before (the session store remembers that, across
//! replicas when it is shared).

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use super::jws::{audiences, numeric_date, truncate, unix_seconds, JwsError, VerifiedJws};

/// The `events` member that makes a JWT a logout token (section 2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How old a logout token may be (its `iat`), before the clock skew is added.
pub const MAX_AGE: Duration = Duration::from_secs(300);

/// Why a logout token was refused; each variant names one check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogoutTokenError {
    #[error("logout token: {0}")]
    Jws(#[from] JwsError),
    #[error("logout token malformed: {0}")]
    Malformed(&'static str),
    #[error("logout token lacks the required claim {0:?}")]
    MissingClaim(&'static str),
    #[error("logout token iss {found:?} is not the configured issuer")]
    IssuerMismatch { found: String },
    #[error("logout token aud does not contain our client_id")]
    AudienceMismatch,
    #[error("logout token is too old (iat more than 5 minutes ago)")]
    Stale,
    #[error("logout token issued in the future (iat)")]
    IssuedInFuture,
    #[error("logout token has expired (exp)")]
    Expired,
    #[error("logout token has no backchannel-logout event in events")]
    NotALogoutToken,
    #[error("logout token names neither sid nor sub")]
    NoSubject,
    #[error("logout token carries a nonce, which a logout token must not")]
    HasNonce,
    #[error("logout token jti was seen before (replay)")]
    Replayed,
    #[error("provider metadata and keys are not loaded yet")]
    NotReady,
}

/// What a logout token must match.
#[derive(Debug, Clone)]
pub struct LogoutExpectations<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub clock_skew: Duration,
    pub now: SystemTime,
}

/// What a valid logout token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutClaims {
    pub sid: Option<String>,
    pub sub: Option<String>,
    /// Unique per token: remembered until `forget_after`, so a replay is refused.
    pub jti: String,
    /// Unix seconds after which the token would be refused anyway (too old or expired), so its
    /// `jti` need not be remembered longer.
    pub forget_after: u64,
}

/// Section 2.6, steps 3 to 6, on a token whose signature (step 2) verified. Step 7 (the `jti` never
/// seen before) is the caller's, with the store.
pub fn check_logout_token(
    verified: &VerifiedJws<'_, '_>,
    exp: &LogoutExpectations<'_>,
) -> Result<LogoutClaims, LogoutTokenError> {
    let claims = verified.claims();
    let now = unix_seconds(exp.now);
    let skew = i64::try_from(exp.clock_skew.as_secs()).unwrap_or(i64::MAX);
    let date = |name: &'static str| {
        numeric_date(claims, name)
            .map_err(|_| LogoutTokenError::Malformed("a time claim is not a number"))
    };

    // Step 3: iss, aud and iat as for an id_token (OIDC Core 3.1.3.7), exp when present.
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(LogoutTokenError::MissingClaim("iss"))?;
    if iss != exp.issuer {
        return Err(LogoutTokenError::IssuerMismatch {
            found: truncate(iss, 200),
        });
    }
    let audiences = audiences(claims)
        .map_err(LogoutTokenError::Malformed)?
        .ok_or(LogoutTokenError::MissingClaim("aud"))?;
    if !audiences.contains(&exp.client_id) {
        return Err(LogoutTokenError::AudienceMismatch);
    }
    let iat = date("iat")?.ok_or(LogoutTokenError::MissingClaim("iat"))?;
    let max_age = i64::try_from(MAX_AGE.as_secs()).unwrap_or(i64::MAX);
    if iat.saturating_add(max_age).saturating_add(skew) < now {
        return Err(LogoutTokenError::Stale);
    }
    if iat > now.saturating_add(skew) {
        return Err(LogoutTokenError::IssuedInFuture);
    }
    let expires = date("exp")?;
    if let Some(expires) = expires {
        if now >= expires.saturating_add(skew) {
            return Err(LogoutTokenError::Expired);
        }
    }

    // Step 4: sub, sid, or both.
    let sid = string_claim(claims, "sid")?;
    let sub = string_claim(claims, "sub")?;
    if sid.is_none() && sub.is_none() {
        return Err(LogoutTokenError::NoSubject);
    }

    // Step 5: events is an object with the back-channel logout member (itself an object).
    match claims.get("events") {
        Some(Value::Object(events)) => match events.get(BACKCHANNEL_LOGOUT_EVENT) {
            Some(Value::Object(_)) => {}
            _ => return Err(LogoutTokenError::NotALogoutToken),
        },
        _ => return Err(LogoutTokenError::NotALogoutToken),
    }

    // Step 6: no nonce (so an id_token can never pass as a logout token).
    if claims.contains_key("nonce") {
        return Err(LogoutTokenError::HasNonce);
    }

    // Section 2.4: jti is required; step 7 needs it.
    let jti = string_claim(claims, "jti")?.ok_or(LogoutTokenError::MissingClaim("jti"))?;
    let until = iat.saturating_add(max_age).saturating_add(skew);
    let until = expires.map_or(until, |e| e.saturating_add(skew).min(until));
    Ok(LogoutClaims {
        sid,
        sub,
        jti,
        forget_after: u64::try_from(until.max(0)).unwrap_or(0),
    })
}

fn string_claim(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, LogoutTokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 1024 => Ok(Some(s.clone())),
        Some(_) => Err(LogoutTokenError::Malformed(
            "sid, sub or jti is not a short string",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::jwks::parse_jwks;
    use crate::oidc::jws::UnverifiedJws;
    use crate::oidc::testutil::{jwks, rsa, sign};
    use serde_json::json;
    use std::time::UNIX_EPOCH;

    const ISS: &str = "https://idp.example.com";
    const CLIENT: &str = "portcullis";
    const NOW: u64 = 1_700_000_000;

    fn good() -> Value {
        json!({
            "iss": ISS, "aud": CLIENT, "iat": NOW - 10, "jti": "j-1", "sid": "s-1",
            "events": { BACKCHANNEL_LOGOUT_EVENT: {} }
        })
    }

    fn check(claims: &Value) -> Result<LogoutClaims, LogoutTokenError> {
        let key = rsa();
        let keys = parse_jwks(&http::Response::new(bytes::Bytes::from(jwks(&[key])))).unwrap();
        let token = sign(key, claims);
        let parsed = UnverifiedJws::parse(&token)?;
        let verified = parsed.verify_signature(&keys)?;
        check_logout_token(
            &verified,
            &LogoutExpectations {
                issuer: ISS,
                client_id: CLIENT,
                clock_skew: Duration::from_secs(60),
                now: UNIX_EPOCH + Duration::from_secs(NOW),
            },
        )
    }

    fn with(changes: Value) -> Value {
        let mut c = good();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    #[test]
    fn a_proper_token_names_its_sessions_and_how_long_to_remember_it() {
        let ok = check(&good()).unwrap();
        assert_eq!(ok.sid.as_deref(), Some("s-1"));
        assert_eq!(ok.sub, None);
        assert_eq!(ok.jti, "j-1");
        assert_eq!(ok.forget_after, NOW - 10 + 300 + 60);
        let sub_only = check(&with(json!({"sid": null, "sub": "alice"}))).unwrap();
        assert_eq!(
            (sub_only.sid, sub_only.sub.as_deref()),
            (None, Some("alice"))
        );
        // An exp sooner than the age limit shortens the memory.
        let short = check(&with(json!({"exp": NOW + 5}))).unwrap();
        assert_eq!(short.forget_after, NOW + 5 + 60);
    }

    #[test]
    fn each_defect_is_named() {
        let cases = [
            (json!({"iss": "https://evil.example"}), "iss"),
            (json!({"iss": null}), "missing iss"),
            (json!({"aud": "another"}), "aud"),
            (json!({"aud": ["a", CLIENT]}), "ok"),
            (json!({"iat": NOW - 400}), "stale"),
            (json!({"iat": NOW + 120}), "future"),
            (json!({"iat": null}), "missing iat"),
            (json!({"exp": NOW - 120}), "expired"),
            (json!({"events": null}), "events"),
            (json!({"events": {"http://other": {}}}), "events"),
            (json!({"events": [BACKCHANNEL_LOGOUT_EVENT]}), "events"),
            (
                json!({"events": {BACKCHANNEL_LOGOUT_EVENT: "yes"}}),
                "events",
            ),
            (json!({"sid": null}), "no subject"),
            (json!({"nonce": "n"}), "nonce"),
            (json!({"jti": null}), "missing jti"),
            (json!({"sid": 5}), "malformed"),
        ];
        for (change, what) in cases {
            let got = check(&with(change.clone()));
            let ok = match what {
                "iss" => matches!(got, Err(LogoutTokenError::IssuerMismatch { .. })),
                "missing iss" => got == Err(LogoutTokenError::MissingClaim("iss")),
                "aud" => got == Err(LogoutTokenError::AudienceMismatch),
                "ok" => got.is_ok(),
                "stale" => got == Err(LogoutTokenError::Stale),
                "future" => got == Err(LogoutTokenError::IssuedInFuture),
                "missing iat" => got == Err(LogoutTokenError::MissingClaim("iat")),
                "expired" => got == Err(LogoutTokenError::Expired),
                "events" => got == Err(LogoutTokenError::NotALogoutToken),
                "no subject" => got == Err(LogoutTokenError::NoSubject),
                "nonce" => got == Err(LogoutTokenError::HasNonce),
                "missing jti" => got == Err(LogoutTokenError::MissingClaim("jti")),
                "malformed" => matches!(got, Err(LogoutTokenError::Malformed(_))),
                _ => unreachable!(),
            };
            assert!(ok, "{change}: {got:?}");
        }
    }
}

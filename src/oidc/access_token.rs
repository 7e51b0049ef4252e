//! JWT access tokens presented by API clients (`Authorization: Bearer`, RFC 6750), checked like an
//! id_token where the two agree (RFC 9068 section 4).
//!
//! What it owns: the claims checks of a token whose signature the JWS core verified: `iss` exactly the
//! issuer, `exp` in the future and `nbf`/`iat` not (with the clock skew), `aud` naming one of the
//! configured audiences, a `sub`. What it does not own: the signature and the key refetch (`jws`,
//! `provider`), or what the client is told (`bearer`).
//!
//! Why it is shaped so: the audience is the check that tells an access token for this API from any
//! other token the provider signed (an id_token for some client, a token for another API), so it is
//! required: with no audiences configured, no JWT is accepted at all.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use super::jws::{audiences, numeric_date, truncate, unix_seconds, JwsError, VerifiedJws};

/// Why a JWT access token was refused; each variant names one check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessTokenError {
    #[error("access token: {0}")]
    Jws(#[from] JwsError),
    #[error("access token lacks the required claim {0:?}")]
    MissingClaim(&'static str),
    #[error("access token malformed: {0}")]
    Malformed(&'static str),
    #[error("access token iss {found:?} is not the configured issuer")]
    IssuerMismatch { found: String },
    #[error("access token aud names none of api.audiences")]
    AudienceMismatch,
    #[error("access token has expired (exp)")]
    Expired,
    #[error("access token not yet valid (nbf)")]
    NotYetValid,
    #[error("access token issued in the future (iat)")]
    IssuedInFuture,
}

/// What an access token must match; `now` is injected so tests use a fixed clock.
#[derive(Debug, Clone, Copy)]
pub struct AccessTokenExpectations<'a> {
    /// The issuer string exactly as `iss` must carry it.
    pub issuer: &'a str,
    /// `aud` must name one of these.
    pub audiences: &'a [String],
    pub clock_skew: Duration,
    pub now: SystemTime,
}

/// The time checks shared by JWT access tokens and introspection answers: `exp` required and in the
/// future, `nbf` and `iat` (when present) not in the future, each with the skew. Returns `exp`.
pub(crate) fn check_times(
    claims: &Map<String, Value>,
    skew: Duration,
    now: SystemTime,
) -> Result<i64, AccessTokenError> {
    let date = |name| {
        numeric_date(claims, name)
            .map_err(|_| AccessTokenError::Malformed("a time claim is not a number"))
    };
    let now = unix_seconds(now);
    let skew = i64::try_from(skew.as_secs()).unwrap_or(i64::MAX);
    let exp = date("exp")?.ok_or(AccessTokenError::MissingClaim("exp"))?;
    if now >= exp.saturating_add(skew) {
        return Err(AccessTokenError::Expired);
    }
    if date("nbf")?.is_some_and(|nbf| nbf > now.saturating_add(skew)) {
        return Err(AccessTokenError::NotYetValid);
    }
    if date("iat")?.is_some_and(|iat| iat > now.saturating_add(skew)) {
        return Err(AccessTokenError::IssuedInFuture);
    }
    Ok(exp)
}

/// The `sub` claim: a non-empty string (a token that names nobody identifies nobody).
pub(crate) fn subject(claims: &Map<String, Value>) -> Result<(), AccessTokenError> {
    match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        None | Some(Value::Null) => Err(AccessTokenError::MissingClaim("sub")),
        Some(_) => Err(AccessTokenError::Malformed("sub is not a string")),
    }
}

/// Whether an `aud` claim names one of `accepted`.
pub(crate) fn audience_accepted(
    claims: &Map<String, Value>,
    accepted: &[String],
) -> Result<bool, AccessTokenError> {
    let found = audiences(claims).map_err(AccessTokenError::Malformed)?;
    Ok(found.is_some_and(|aud| aud.iter().any(|a| accepted.iter().any(|x| x == a))))
}

/// The claims checks on a token whose signature verified; returns its claims and `exp`.
pub fn check_claims(
    verified: &VerifiedJws<'_, '_>,
    expect: &AccessTokenExpectations<'_>,
) -> Result<(Map<String, Value>, i64), AccessTokenError> {
    let claims = verified.claims();
    // RFC 9068 4 (and OIDC Core 3.1.3.7 step 2 for the id_token): iss exactly the issuer.
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or(AccessTokenError::MissingClaim("iss"))?;
    if iss != expect.issuer {
        return Err(AccessTokenError::IssuerMismatch {
            found: truncate(iss, 200),
        });
    }
    let exp = check_times(claims, expect.clock_skew, expect.now)?;
    // RFC 9068 4: the audience must name this resource server.
    if !audience_accepted(claims, expect.audiences)? {
        return Err(AccessTokenError::AudienceMismatch);
    }
    subject(claims)?;
    Ok((claims.clone(), exp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::jwks::parse_jwks;
    use crate::oidc::jws::UnverifiedJws;
    use crate::oidc::testutil::{jwks, response, rsa, sign};
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;
    const ISS: &str = "https://idp.example.com";

    fn check(claims: Value) -> Result<(Map<String, Value>, i64), AccessTokenError> {
        let token = sign(rsa(), &claims);
        let keys = parse_jwks(&response(200, &jwks(&[rsa()]))).unwrap();
        let parsed = UnverifiedJws::parse(&token).unwrap();
        let verified = parsed.verify_signature(&keys).unwrap();
        let audiences = vec!["api://orders".to_string(), "other-api".to_string()];
        check_claims(
            &verified,
            &AccessTokenExpectations {
                issuer: ISS,
                audiences: &audiences,
                clock_skew: Duration::from_secs(60),
                now: SystemTime::UNIX_EPOCH + Duration::from_secs(NOW),
            },
        )
    }

    fn good() -> Value {
        json!({"iss": ISS, "sub": "u1", "aud": ["x", "api://orders"], "exp": NOW + 300,
               "iat": NOW, "nbf": NOW, "scope": "read"})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = good();
        v[key] = value;
        v
    }

    fn without(key: &str) -> Value {
        let mut v = good();
        v.as_object_mut().unwrap().remove(key);
        v
    }

    #[test]
    fn a_good_token_passes_with_its_claims() {
        let (claims, exp) = check(good()).unwrap();
        assert_eq!(claims["scope"], "read");
        assert_eq!(exp, (NOW + 300) as i64);
        assert!(check(with("aud", json!("other-api"))).is_ok());
        assert!(check(without("iat")).is_ok());
        assert!(check(without("nbf")).is_ok());
        // Within the skew.
        assert!(check(with("exp", json!(NOW - 30))).is_ok());
        assert!(check(with("nbf", json!(NOW + 30))).is_ok());
    }

    #[test]
    fn each_check_has_its_error() {
        use AccessTokenError::*;
        let cases = [
            (with("iss", json!("https://evil.example.com")), "iss"),
            (without("iss"), "missing iss"),
            (with("aud", json!("another-api")), "aud"),
            (with("aud", json!(["a", "b"])), "aud"),
            (without("aud"), "aud"),
            (with("aud", json!(3)), "malformed"),
            (with("exp", json!(NOW - 61)), "exp"),
            (without("exp"), "missing exp"),
            (with("exp", json!("soon")), "malformed"),
            (with("nbf", json!(NOW + 61)), "nbf"),
            (with("iat", json!(NOW + 61)), "iat"),
            (without("sub"), "missing sub"),
            (with("sub", json!("")), "missing sub"),
            (with("sub", json!(7)), "malformed"),
        ];
        for (claims, what) in cases {
            let err = check(claims.clone()).unwrap_err();
            let ok = match what {
                "iss" => matches!(err, IssuerMismatch { .. }),
                "missing iss" => err == MissingClaim("iss"),
                "aud" => err == AudienceMismatch,
                "exp" => err == Expired,
                "missing exp" => err == MissingClaim("exp"),
                "nbf" => err == NotYetValid,
                "iat" => err == IssuedInFuture,
                "missing sub" => matches!(err, MissingClaim("sub") | Malformed(_)),
                "malformed" => matches!(err, Malformed(_)),
                _ => false,
            };
            assert!(ok, "{what}: {claims} gave {err:?}");
        }
    }
}

//! Token introspection (RFC 7662): asking the provider whether an opaque access token is active, and
//! for whom.
//!
//! What it owns: the request bytes (a form POST of the token with the client's own authentication,
//! RFC 7662 section 2.1) and the reading of the answer: `active: true` required, and the rules a JWT
//! access token meets where the answer carries the claim (`iss` the issuer, `aud` one of the
//! configured audiences when they are set, `exp` in the future, `nbf`/`iat` not), plus an `exp`
//! (without one an answer could be reused for ever) and a `sub`. What it does not own: sending
//! (`provider`), the cache and its single flight (`bearer`).

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::{Map, Value};
use url::form_urlencoded;
use url::Url;

use super::access_token::{audience_accepted, check_times, subject, AccessTokenError};
use super::jws::truncate;
use super::token::{client_request, ClientCredentials};
use super::{json_object, AccessToken};

/// Why an introspection failed or its answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntrospectionError {
    #[error("provider metadata not loaded yet")]
    NotReady,
    #[error("the provider has no introspection_endpoint (set oidc.introspection_endpoint)")]
    NoEndpoint,
    #[error("provider unreachable: {0}")]
    Unreachable(String),
    /// The endpoint refused our client authentication (or something else about the request).
    #[error("introspection endpoint refused the request (HTTP {0})")]
    Rejected(u16),
    #[error("introspection endpoint: {0}")]
    BadResponse(String),
    #[error("cannot build the introspection request: {0}")]
    Request(String),
    /// RFC 7662 2.2: the token is not active (expired, revoked, unknown, or not for us to know).
    #[error("the token is not active")]
    Inactive,
    #[error("introspected token iss {found:?} is not the configured issuer")]
    IssuerMismatch { found: String },
    /// A check the answer shares with JWT access tokens.
    #[error("introspected {0}")]
    Claims(AccessTokenError),
}

/// What a live token stands for: its claims (the answer without `active`) and its `exp`.
#[derive(Debug, Clone, PartialEq)]
pub struct Introspected {
    pub claims: Map<String, Value>,
    pub exp: i64,
}

/// What an answer must match; `now` is injected so tests use a fixed clock.
#[derive(Debug, Clone, Copy)]
pub struct IntrospectionExpectations<'a> {
    pub issuer: &'a str,
    /// When not empty, an answer's `aud` must name one of these.
    pub audiences: &'a [String],
    pub clock_skew: Duration,
    pub now: SystemTime,
}

/// The introspection request: `token` and `token_type_hint=access_token`, form-encoded, with the
/// client's authentication at `endpoint`.
pub fn introspection_request(
    endpoint: &Url,
    client_id: &str,
    creds: &ClientCredentials,
    token: &AccessToken,
    now: SystemTime,
) -> Result<http::Request<Bytes>, IntrospectionError> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("token", token.secret())
        .append_pair("token_type_hint", "access_token");
    client_request(endpoint, client_id, form, creds, now).map_err(IntrospectionError::Request)
}

/// Reads an introspection answer (RFC 7662 section 2.2) and checks it.
pub fn parse_introspection(
    resp: &http::Response<Bytes>,
    expect: &IntrospectionExpectations<'_>,
) -> Result<Introspected, IntrospectionError> {
    let status = resp.status();
    if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
        return Err(IntrospectionError::Rejected(status.as_u16()));
    }
    if !status.is_success() {
        return Err(IntrospectionError::BadResponse(format!(
            "HTTP {}",
            status.as_u16()
        )));
    }
    let mut claims =
        json_object(resp.body(), "introspection").map_err(IntrospectionError::BadResponse)?;
    // `active` is the one required member, a boolean; anything but `true` is an inactive token.
    match claims.remove("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Err(IntrospectionError::Inactive),
        _ => {
            return Err(IntrospectionError::BadResponse(
                "active is missing or not a boolean".into(),
            ))
        }
    }
    match claims.get("iss") {
        None | Some(Value::Null) => {}
        Some(Value::String(iss)) if iss == expect.issuer => {}
        Some(Value::String(iss)) => {
            return Err(IntrospectionError::IssuerMismatch {
                found: truncate(iss, 200),
            })
        }
        Some(_) => {
            return Err(IntrospectionError::Claims(AccessTokenError::Malformed(
                "iss is not a string",
            )))
        }
    }
    let exp =
        check_times(&claims, expect.clock_skew, expect.now).map_err(IntrospectionError::Claims)?;
    if !expect.audiences.is_empty()
        && claims.contains_key("aud")
        && !audience_accepted(&claims, expect.audiences).map_err(IntrospectionError::Claims)?
    {
        return Err(IntrospectionError::Claims(
            AccessTokenError::AudienceMismatch,
        ));
    }
    subject(&claims).map_err(IntrospectionError::Claims)?;
    Ok(Introspected { claims, exp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::testutil::response as resp;
    use crate::oidc::ClientSecret;
    use http::header::{AUTHORIZATION, CONTENT_TYPE};
    use serde_json::json;
    use std::collections::HashMap;

    const NOW: u64 = 1_700_000_000;
    const ISS: &str = "https://idp.example.com";

    fn parse(body: Value, audiences: &[&str]) -> Result<Introspected, IntrospectionError> {
        let audiences: Vec<String> = audiences.iter().map(|a| a.to_string()).collect();
        parse_introspection(
            &resp(200, &body.to_string()),
            &IntrospectionExpectations {
                issuer: ISS,
                audiences: &audiences,
                clock_skew: Duration::from_secs(60),
                now: SystemTime::UNIX_EPOCH + Duration::from_secs(NOW),
            },
        )
    }

    fn active() -> Value {
        json!({"active": true, "sub": "u1", "iss": ISS, "aud": "api", "exp": NOW + 60,
               "iat": NOW, "client_id": "c", "scope": "read", "email": "a@example.com"})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = active();
        v[key] = value;
        v
    }

    fn without(key: &str) -> Value {
        let mut v = active();
        v.as_object_mut().unwrap().remove(key);
        v
    }

    #[test]
    fn request_carries_the_token_and_the_client_authentication() {
        let url = Url::parse("https://idp.example.com/introspect").unwrap();
        let basic = ClientCredentials::Basic(ClientSecret::new("s:e"));
        let req = introspection_request(
            &url,
            "gw",
            &basic,
            &AccessToken::new("tok+/="),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri().to_string(), url.as_str());
        assert_eq!(
            req.headers()[CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        assert!(req.headers()[AUTHORIZATION].is_sensitive());
        let form: HashMap<String, String> =
            form_urlencoded::parse(req.body()).into_owned().collect();
        assert_eq!(form["token"], "tok+/=");
        assert_eq!(form["token_type_hint"], "access_token");
        assert!(!form.contains_key("client_secret"));

        let post = ClientCredentials::Post(ClientSecret::new("pw"));
        let req =
            introspection_request(&url, "gw", &post, &AccessToken::new("t"), SystemTime::now())
                .unwrap();
        let form: HashMap<String, String> =
            form_urlencoded::parse(req.body()).into_owned().collect();
        assert_eq!(
            (form["client_id"].as_str(), form["client_secret"].as_str()),
            ("gw", "pw")
        );
        assert!(req.headers().get(AUTHORIZATION).is_none());
    }

    #[test]
    fn an_active_answer_gives_claims_and_exp() {
        let got = parse(active(), &["api"]).unwrap();
        assert_eq!(got.exp, (NOW + 60) as i64);
        assert_eq!(got.claims["email"], "a@example.com");
        assert!(!got.claims.contains_key("active"));
        // Optional members may be absent; aud is only checked when audiences are configured.
        assert!(parse(without("iss"), &["api"]).is_ok());
        assert!(parse(without("aud"), &["api"]).is_ok());
        assert!(parse(with("aud", json!("elsewhere")), &[]).is_ok());
        assert!(parse(with("aud", json!(["x", "api"])), &["api"]).is_ok());
    }

    #[test]
    fn refusals() {
        use IntrospectionError::*;
        assert_eq!(parse(json!({"active": false}), &[]), Err(Inactive));
        assert!(matches!(
            parse(json!({"sub": "u"}), &[]),
            Err(BadResponse(_))
        ));
        assert!(matches!(
            parse(with("active", json!("true")), &[]),
            Err(BadResponse(_))
        ));
        assert!(matches!(
            parse(with("iss", json!("https://evil")), &[]),
            Err(IssuerMismatch { .. })
        ));
        assert_eq!(
            parse(without("exp"), &[]),
            Err(Claims(AccessTokenError::MissingClaim("exp")))
        );
        assert_eq!(
            parse(with("exp", json!(NOW - 61)), &[]),
            Err(Claims(AccessTokenError::Expired))
        );
        assert_eq!(
            parse(with("nbf", json!(NOW + 61)), &[]),
            Err(Claims(AccessTokenError::NotYetValid))
        );
        assert_eq!(
            parse(with("aud", json!("elsewhere")), &["api"]),
            Err(Claims(AccessTokenError::AudienceMismatch))
        );
        assert_eq!(
            parse(without("sub"), &[]),
            Err(Claims(AccessTokenError::MissingClaim("sub")))
        );
        let expect = IntrospectionExpectations {
            issuer: ISS,
            audiences: &[],
            clock_skew: Duration::from_secs(60),
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(NOW),
        };
        assert_eq!(
            parse_introspection(&resp(401, ""), &expect),
            Err(Rejected(401))
        );
        assert!(matches!(
            parse_introspection(&resp(500, "{}"), &expect),
            Err(BadResponse(_))
        ));
        assert!(matches!(
            parse_introspection(&resp(200, "<html>"), &expect),
            Err(BadResponse(_))
        ));
    }
}

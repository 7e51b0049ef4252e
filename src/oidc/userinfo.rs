//! The UserInfo request and response (OIDC Core 5.3).
//!
//! What it owns: the request bytes and the reading of the answer. What it does not own: the
//! merge into the session, nor the check that the answer's `sub` equals the id_token's `sub`
//! (OIDC Core 5.3.2), which the caller makes because only it holds the id_token's claims.

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use serde_json::{Map, Value};
use url::Url;

use super::{json_object, to_uri, AccessToken};

/// Why the userinfo call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserinfoError {
    #[error("provider metadata not loaded yet")]
    NotReady,
    #[error("the provider has no userinfo_endpoint")]
    NoEndpoint,
    #[error("provider unreachable: {0}")]
    Unreachable(String),
    /// The access token was refused (RFC 6750 3.1: 401 invalid_token, 403 insufficient_scope).
    #[error("userinfo endpoint refused the access token (HTTP {0})")]
    Rejected(u16),
    #[error("userinfo endpoint: {0}")]
    BadResponse(String),
    /// OIDC Core 5.3.2: the answer is about someone else than the id_token.
    #[error("userinfo sub is not the id_token's sub")]
    SubjectMismatch,
}

/// Fill in `claims` (an id_token's) with the userinfo claims it lacks; what the id_token says wins.
/// The userinfo `sub` must equal the id_token's (OIDC Core 5.3.2), else nothing is merged.
pub fn merge_userinfo(
    claims: &mut Map<String, Value>,
    userinfo: Map<String, Value>,
) -> Result<(), UserinfoError> {
    let same = match (claims.get("sub"), userinfo.get("sub")) {
        (Some(Value::String(a)), Some(Value::String(b))) => a == b,
        _ => false,
    };
    if !same {
        return Err(UserinfoError::SubjectMismatch);
    }
    for (name, value) in userinfo {
        claims.entry(name).or_insert(value);
    }
    Ok(())
}

/// GET with the access token as a Bearer credential (RFC 6750 2.1), marked sensitive so no
/// logging layer prints it.
pub fn userinfo_request(
    endpoint: &Url,
    access_token: &AccessToken,
) -> Result<http::Request<Bytes>, UserinfoError> {
    let mut auth =
        HeaderValue::try_from(format!("Bearer {}", access_token.secret())).map_err(|_| {
            UserinfoError::BadResponse("access token is not a valid header value".into())
        })?;
    auth.set_sensitive(true);
    http::Request::get(to_uri(endpoint).map_err(UserinfoError::BadResponse)?)
        .header(AUTHORIZATION, auth)
        .header(ACCEPT, "application/json")
        .body(Bytes::new())
        .map_err(|e| UserinfoError::BadResponse(e.to_string()))
}

/// Reads a userinfo answer: a JSON object with a `sub` (OIDC Core 5.3.2). A signed or encrypted
/// (`application/jwt`) answer is refused as not JSON.
pub fn parse_userinfo(resp: &http::Response<Bytes>) -> Result<Map<String, Value>, UserinfoError> {
    let status = resp.status();
    if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
        return Err(UserinfoError::Rejected(status.as_u16()));
    }
    if !status.is_success() {
        return Err(UserinfoError::BadResponse(format!(
            "HTTP {}",
            status.as_u16()
        )));
    }
    let map = json_object(resp.body(), "userinfo").map_err(UserinfoError::BadResponse)?;
    match map.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => Ok(map),
        _ => Err(UserinfoError::BadResponse("no sub claim".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::oidc::testutil::response as resp;

    #[test]
    fn request_carries_a_sensitive_bearer() {
        let url = Url::parse("https://idp.example.com/userinfo").unwrap();
        let req = userinfo_request(&url, &AccessToken::new("tok")).unwrap();
        assert_eq!(req.headers()[AUTHORIZATION], "Bearer tok");
        assert!(req.headers()[AUTHORIZATION].is_sensitive());
        assert!(userinfo_request(&url, &AccessToken::new("a\r\nb")).is_err());
    }

    #[test]
    fn userinfo_fills_in_what_the_id_token_lacks() {
        let mut claims = serde_json::json!({"sub": "u", "name": "From id_token"});
        let claims = claims.as_object_mut().unwrap();
        let info = serde_json::json!({"sub": "u", "name": "From userinfo", "email": "a@b", "groups": ["g"]});
        merge_userinfo(claims, info.as_object().unwrap().clone()).unwrap();
        assert_eq!(claims["name"], "From id_token");
        assert_eq!(claims["email"], "a@b");
        assert_eq!(claims["groups"][0], "g");

        let mut claims = serde_json::json!({"sub": "u"});
        let claims = claims.as_object_mut().unwrap();
        let other = serde_json::json!({"sub": "someone-else", "email": "x@y"});
        assert_eq!(
            merge_userinfo(claims, other.as_object().unwrap().clone()),
            Err(UserinfoError::SubjectMismatch)
        );
        assert!(!claims.contains_key("email"), "nothing merged");
    }

    #[test]
    fn responses() {
        let ok = parse_userinfo(&resp(200, r#"{"sub":"alice","email":"a@example.com"}"#)).unwrap();
        assert_eq!(ok["email"], "a@example.com");
        assert_eq!(
            parse_userinfo(&resp(401, "")),
            Err(UserinfoError::Rejected(401))
        );
        assert_eq!(
            parse_userinfo(&resp(403, "")),
            Err(UserinfoError::Rejected(403))
        );
        assert!(matches!(
            parse_userinfo(&resp(500, "")),
            Err(UserinfoError::BadResponse(_))
        ));
        assert!(matches!(
            parse_userinfo(&resp(200, "eyJ.a.b")),
            Err(UserinfoError::BadResponse(_))
        ));
        assert!(matches!(
            parse_userinfo(&resp(200, r#"{"email":"x"}"#)),
            Err(UserinfoError::BadResponse(_))
        ));
    }
}

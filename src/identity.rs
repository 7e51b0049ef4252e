//! Identity headers: what the upstream is told about who is signed in.
//!
//! One module turns claims into headers for every kind of caller: sessions today, and bearer tokens,
//! forward-auth answers and the signed assertion as they come. The mapping is `[headers]`: a header
//! per claim (a name, or a dotted path into nested claims), plus the access token and id_token when
//! configured. Values are checked as `HeaderValue`s, never spliced, so a claim cannot inject a header.

use http::header::{self, HeaderName, HeaderValue};

use crate::config::HeadersConfig;
use crate::proxy::X_FORWARDED_ACCESS_TOKEN;
use crate::session::{Claim, Claims};

/// The headers that carry one identity upstream, in mapping order.
pub type IdentityHeaders = Vec<(HeaderName, HeaderValue)>;

/// `[headers]`: which claim goes in which header, and which tokens are passed on.
#[derive(Debug, Clone)]
pub struct IdentityMapping {
    claims: Vec<(HeaderName, String)>,
    pass_access_token: bool,
    pass_id_token: bool,
}

impl IdentityMapping {
    pub fn new(config: &HeadersConfig) -> IdentityMapping {
        IdentityMapping {
            claims: config.claims.clone(),
            pass_access_token: config.pass_access_token,
            pass_id_token: config.pass_id_token,
        }
    }

    /// Every header name an identity may be carried in: a client must never send one of these.
    pub fn names(&self) -> impl Iterator<Item = HeaderName> + '_ {
        self.claims
            .iter()
            .map(|(h, _)| h.clone())
            .chain(self.pass_id_token.then_some(header::AUTHORIZATION))
    }

    /// Whether the access token is kept in the session (it is only needed to pass it on).
    pub fn passes_access_token(&self) -> bool {
        self.pass_access_token
    }

    /// Whether the id_token is sent upstream (as `Authorization: Bearer`).
    pub fn passes_id_token(&self) -> bool {
        self.pass_id_token
    }

    /// The headers for these claims and tokens.
    pub fn headers(
        &self,
        claims: &Claims,
        access_token: Option<&str>,
        id_token: Option<&str>,
    ) -> IdentityHeaders {
        let mut headers = identity_headers(claims, &self.claims);
        if self.pass_access_token {
            if let Some(v) = access_token.and_then(|t| HeaderValue::from_str(t).ok()) {
                headers.push((X_FORWARDED_ACCESS_TOKEN, sensitive(v)));
            }
        }
        if self.pass_id_token {
            if let Some(v) =
                id_token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
            {
                headers.push((header::AUTHORIZATION, sensitive(v)));
            }
        }
        headers
    }
}

fn sensitive(mut value: HeaderValue) -> HeaderValue {
    value.set_sensitive(true);
    value
}

/// The identity headers for a session's claims, per `[headers]`: strings as they are, numbers and booleans
/// printed, arrays joined with ","; a claim that is missing, an object, or not a valid header value (a
/// CR, LF or other control character) is left out, the last with a log line, never spliced.
pub fn identity_headers(
    claims: &Claims,
    mapping: &[(HeaderName, String)],
) -> Vec<(HeaderName, HeaderValue)> {
    fn scalar(v: &Claim<'_>, out: &mut String) -> bool {
        match v {
            Claim::String(s) => out.push_str(s),
            Claim::Number(n) => out.push_str(&n.to_string()),
            Claim::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            _ => return false,
        }
        true
    }
    let mut headers = Vec::with_capacity(mapping.len());
    for (name, claim) in mapping {
        let Some(value) = claims.lookup(claim) else {
            continue;
        };
        if let Claim::String(s) = value {
            // The common case, without an intermediate copy.
            match HeaderValue::from_bytes(s.as_bytes()) {
                Ok(v) => headers.push((name.clone(), v)),
                Err(_) => {
                    tracing::warn!(header = %name, claim = %claim, "claim value is not a valid header value; header not sent")
                }
            }
            continue;
        }
        let mut text = String::with_capacity(64);
        let ok = match value {
            Claim::Array(items) => items.enumerate().all(|(i, item)| {
                if i > 0 {
                    text.push(',');
                }
                scalar(&item, &mut text)
            }),
            other => scalar(&other, &mut text),
        };
        if !ok {
            tracing::warn!(header = %name, claim = %claim, "claim is not a string, number, boolean or array of them; header not sent");
            continue;
        }
        match HeaderValue::from_bytes(text.as_bytes()) {
            Ok(v) => headers.push((name.clone(), v)),
            Err(_) => {
                tracing::warn!(header = %name, claim = %claim, "claim value is not a valid header value; header not sent")
            }
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_headers_follow_the_mapping() {
        let claims = serde_json::json!({
            "sub": "u1",
            "groups": ["admins", "staff"],
            "level": 3,
            "evil": "x\r\nX-Injected: 1",
            "obj": {"roles": ["r1"]},
            "name": "Jos\u{e9}",
        });
        let claims = Claims::new(claims.as_object().unwrap()).unwrap();
        let map = |h: &'static str, c: &str| (HeaderName::from_static(h), c.to_string());
        let got = identity_headers(
            &claims,
            &[
                map("x-user", "sub"),
                map("x-groups", "groups"),
                map("x-level", "level"),
                map("x-evil", "evil"),
                map("x-roles", "obj.roles"),
                map("x-obj", "obj"),
                map("x-missing", "nope"),
                map("x-name", "name"),
            ],
        );
        let got: Vec<(String, Vec<u8>)> = got
            .into_iter()
            .map(|(h, v)| (h.to_string(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("x-user".into(), b"u1".to_vec()),
                ("x-groups".into(), b"admins,staff".to_vec()),
                ("x-level".into(), b"3".to_vec()),
                ("x-roles".into(), b"r1".to_vec()),
                ("x-name".into(), "Jos\u{e9}".as_bytes().to_vec()),
            ]
        );
    }
}

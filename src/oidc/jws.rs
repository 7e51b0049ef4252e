//! One JWS core for every token the provider signs: parse a compact JWS, check its header against the
//! algorithm allow-list, verify its signature with a key of the provider's JWKS, and read its claims.
//!
//! What it owns: the structure, the header and the signature. What it does not own: the meaning of
//! the claims, which each token kind checks in its own validator (`id_token` for id_tokens at login
//! and at refresh; the logout token and API access tokens alike), nor where keys come from (`jwks`)
//! and the refetch on an unknown `kid` (`provider`).
//!
//! Why it is shaped so: the header is parsed here, not by a library, so the algorithm allow-list is
//! enforced before any key is touched (no `none`, no HMAC keyed with a public key). jsonwebtoken only
//! checks the signature.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::jwks::KeySet;

/// Tokens longer than this are refused before decoding (generous: large group claims fit).
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Why a token's structure, header or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("malformed: {0}")]
    Malformed(&'static str),
    #[error("alg {0:?} is not allowed (asymmetric RS/PS/ES/EdDSA only)")]
    UnsupportedAlgorithm(String),
    #[error("signed with a key the provider's JWKS does not have")]
    UnknownKey,
    #[error("alg does not fit the type or the stated alg of the key it names")]
    KeyAlgorithmMismatch,
    #[error("signature does not verify")]
    BadSignature,
}

/// Maps a header `alg` to an allowed algorithm. Anything else, `none` and `HS*` included, is
/// refused: HMAC would let anyone holding the public key (everyone) forge tokens.
fn allowed_algorithm(alg: &str) -> Option<Algorithm> {
    Some(match alg {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// A token whose structure and header have been checked, but not yet its signature.
#[derive(Debug)]
pub struct UnverifiedJws<'a> {
    alg: Algorithm,
    alg_name: String,
    kid: Option<String>,
    typ: Option<String>,
    signing_input: &'a str,
    signature: &'a str,
    claims: Map<String, Value>,
}

/// A token whose signature verified with a provider key; only its claims remain to check.
#[derive(Debug)]
pub struct VerifiedJws<'t, 'a> {
    token: &'t UnverifiedJws<'a>,
}

fn b64_json(part: &str, what: &'static str) -> Result<Map<String, Value>, JwsError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwsError::Malformed(what))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwsError::Malformed(what)),
    }
}

impl<'a> UnverifiedJws<'a> {
    /// Splits the compact JWS and checks the header: three parts, JSON, an allowed `alg`.
    pub fn parse(token: &'a str) -> Result<Self, JwsError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwsError::Malformed("token too long"));
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [header, payload, signature] = parts.as_slice() else {
            // An encrypted token (five-part JWE) would need a client decryption key; portcullis
            // registers none, so it is refused here.
            return Err(JwsError::Malformed("not a three-part signed JWT"));
        };
        let header_map = b64_json(header, "header is not base64url JSON")?;
        let alg_name = header_map
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(JwsError::Malformed("header has no alg"))?;
        // The alg must be one we allow; checked before any key is looked at.
        let alg = allowed_algorithm(alg_name)
            .ok_or_else(|| JwsError::UnsupportedAlgorithm(truncate(alg_name, 32)))?;
        // RFC 7515 4.1.11: a `crit` header names extensions we would have to understand.
        if header_map.contains_key("crit") {
            return Err(JwsError::Malformed("header has crit extensions"));
        }
        // `jku`, `jwk`, `x5u`, `x5c` in the header are ignored on purpose: keys come only from the
        // provider's JWKS, never from the token itself.
        let kid = match header_map.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(JwsError::Malformed("kid is not a string")),
        };
        let typ = match header_map.get("typ") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(JwsError::Malformed("typ is not a string")),
        };
        let claims = b64_json(payload, "payload is not base64url JSON")?;
        let signing_input_len = header.len() + 1 + payload.len();
        Ok(Self {
            alg,
            alg_name: alg_name.to_owned(),
            kid,
            typ,
            signing_input: token.get(..signing_input_len).unwrap_or_default(),
            signature,
            claims,
        })
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The token as if its signature had verified: lets a fuzz target reach the claim checks.
    #[cfg(feature = "fuzzing")]
    pub fn assume_verified(&self) -> VerifiedJws<'_, 'a> {
        VerifiedJws { token: self }
    }

    /// The `typ` header, when present (RFC 7515 4.1.9).
    pub fn typ(&self) -> Option<&str> {
        self.typ.as_deref()
    }

    /// The signature, with the key named by `kid`, or for a token without `kid` with each key of the
    /// alg's family. `UnknownKey` means no candidate key exists, which the provider answers with one
    /// (rate-limited) JWKS refetch.
    pub fn verify_signature<'t>(&'t self, keys: &KeySet) -> Result<VerifiedJws<'t, 'a>, JwsError> {
        let named: Vec<_> = keys
            .keys()
            .iter()
            .filter(|k| match &self.kid {
                Some(kid) => k.kid.as_deref() == Some(kid.as_str()),
                None => true,
            })
            .collect();
        let fitting: Vec<_> = named
            .iter()
            .filter(|k| k.kind.supports(self.alg))
            // RFC 7517 4.4: a key that states its alg may only be used with that alg.
            .filter(|k| k.alg.as_deref().is_none_or(|a| a == self.alg_name))
            .collect();
        if fitting.is_empty() {
            return Err(if self.kid.is_some() && !named.is_empty() {
                JwsError::KeyAlgorithmMismatch
            } else {
                JwsError::UnknownKey
            });
        }
        let verified = fitting.iter().any(|k| {
            jsonwebtoken::crypto::verify(
                self.signature,
                self.signing_input.as_bytes(),
                &k.key,
                self.alg,
            )
            .unwrap_or(false)
        });
        if verified {
            Ok(VerifiedJws { token: self })
        } else {
            Err(JwsError::BadSignature)
        }
    }
}

impl VerifiedJws<'_, '_> {
    /// The claims of the verified token.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.token.claims
    }

    /// The algorithm it was signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.token.alg
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A NumericDate (RFC 7519 2): seconds since the epoch, possibly fractional. `Err` when present but
/// not a number.
pub fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, NotANumber> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if n.as_u64().is_some() {
                Ok(Some(i64::MAX))
            } else {
                match n.as_f64() {
                    // Saturating float-to-int conversion; fractions are dropped.
                    Some(f) if f.is_finite() => Ok(Some(f.floor() as i64)),
                    _ => Err(NotANumber),
                }
            }
        }
        Some(_) => Err(NotANumber),
    }
}

/// A time claim that is present but not a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotANumber;

/// The `aud` claim as a list: a string or an array of strings (RFC 7519 4.1.3). `Ok(None)` when
/// absent, `Err` when of another shape.
pub fn audiences(claims: &Map<String, Value>) -> Result<Option<Vec<&str>>, &'static str> {
    match claims.get("aud") {
        Some(Value::String(s)) => Ok(Some(vec![s.as_str()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or("aud holds a non-string"))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err("aud is not a string or an array"),
        None => Ok(None),
    }
}

pub fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

//! id_token validation, OpenID Connect Core 1.0 section 3.1.3.7, in the spec's order.
//!
//! What it owns: deciding whether an id_token from the token endpoint proves who the user is.
//! What it does not own: where the keys come from (`jwks`) or the refetch on an unknown `kid`
//! (`provider`), which is why validation is split in three steps: [`UnverifiedIdToken::parse`],
//! [`UnverifiedIdToken::verify_signature`] (retried by the provider after a refetch), and
//! [`VerifiedIdToken::check_claims`].
//!
//! Why it is shaped so: the header is parsed here, not by a library, so the algorithm allow-list
//! is enforced before any key is touched (no `none`, no HMAC keyed with a public key). jsonwebtoken
//! only checks the signature; every claim is checked below with an injectable clock, and each
//! failure has its own [`IdTokenError`] variant so the log line says which check failed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::jwks::KeySet;
use super::Nonce;

/// Tokens longer than this are refused before decoding (generous: large group claims fit).
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Why an id_token was refused; each variant names one check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("id_token malformed: {0}")]
    Malformed(&'static str),
    #[error("id_token alg {0:?} is not allowed (asymmetric RS/PS/ES/EdDSA only)")]
    UnsupportedAlgorithm(String),
    #[error("id_token signed with a key the provider's JWKS does not have")]
    UnknownKey,
    #[error("id_token alg does not fit the type or the stated alg of the key it names")]
    KeyAlgorithmMismatch,
    #[error("id_token signature does not verify")]
    BadSignature,
    #[error("id_token lacks the required claim {0:?}")]
    MissingClaim(&'static str),
    #[error("id_token iss {found:?} is not the configured issuer")]
    IssuerMismatch { found: String },
    #[error("id_token aud does not contain our client_id")]
    AudienceMismatch,
    #[error("id_token has several audiences but no azp")]
    MissingAzp,
    #[error("id_token azp is not our client_id")]
    AzpMismatch,
    #[error("id_token has expired (exp)")]
    Expired,
    #[error("id_token issued in the future (iat)")]
    IssuedInFuture,
    #[error("id_token not yet valid (nbf)")]
    NotYetValid,
    #[error("id_token lacks the nonce sent in the authorization request")]
    MissingNonce,
    #[error("id_token nonce does not match the one sent")]
    NonceMismatch,
    #[error("id_token at_hash does not match the access token")]
    AtHashMismatch,
    #[error("provider metadata and keys are not loaded yet")]
    NotReady,
}

/// What the token must match; `now` is injected so tests use a fixed clock.
#[derive(Debug, Clone)]
pub struct Expectations<'a> {
    /// The issuer string exactly as iss must carry it.
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a Nonce,
    /// The access token from the same response, for at_hash.
    pub access_token: Option<&'a str>,
    pub clock_skew: Duration,
    pub now: SystemTime,
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
pub struct UnverifiedIdToken<'a> {
    alg: Algorithm,
    alg_name: String,
    kid: Option<String>,
    signing_input: &'a str,
    signature: &'a str,
    claims: Map<String, Value>,
}

/// A token whose signature verified with a provider key; only its claims remain to check.
#[derive(Debug)]
pub struct VerifiedIdToken<'t, 'a> {
    token: &'t UnverifiedIdToken<'a>,
}

fn b64_json(part: &str, what: &'static str) -> Result<Map<String, Value>, IdTokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| IdTokenError::Malformed(what))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(IdTokenError::Malformed(what)),
    }
}

impl<'a> UnverifiedIdToken<'a> {
    /// Splits the compact JWS and checks the header: three parts, JSON, an allowed `alg`.
    pub fn parse(token: &'a str) -> Result<Self, IdTokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(IdTokenError::Malformed("token too long"));
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [header, payload, signature] = parts.as_slice() else {
            // Step 1: an encrypted id_token (five-part JWE) would need a client decryption key;
            // portcullis registers none, so it is refused here.
            return Err(IdTokenError::Malformed("not a three-part signed JWT"));
        };
        let header_map = b64_json(header, "header is not base64url JSON")?;
        let alg_name = header_map
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(IdTokenError::Malformed("header has no alg"))?;
        // Step 7: the alg must be one we allow; checked before any key is looked at.
        let alg = allowed_algorithm(alg_name)
            .ok_or_else(|| IdTokenError::UnsupportedAlgorithm(truncate(alg_name, 32)))?;
        // RFC 7515 4.1.11: a `crit` header names extensions we would have to understand.
        if header_map.contains_key("crit") {
            return Err(IdTokenError::Malformed("header has crit extensions"));
        }
        // `jku`, `jwk`, `x5u`, `x5c` in the header are ignored on purpose: keys come only from the
        // provider's JWKS, never from the token itself.
        let kid = match header_map.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(IdTokenError::Malformed("kid is not a string")),
        };
        let claims = b64_json(payload, "payload is not base64url JSON")?;
        let signing_input_len = header.len() + 1 + payload.len();
        Ok(Self {
            alg,
            alg_name: alg_name.to_owned(),
            kid,
            signing_input: token.get(..signing_input_len).unwrap_or_default(),
            signature,
            claims,
        })
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The token as if its signature had verified: lets a fuzz target reach the claim checks.
    #[cfg(feature = "fuzzing")]
    pub fn assume_verified(&self) -> VerifiedIdToken<'_, 'a> {
        VerifiedIdToken { token: self }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Steps 6 to 8: the signature, with the key named by `kid`, or for a token without `kid`
    /// with each key of the alg's family. `UnknownKey` means no candidate key exists, which the
    /// provider answers with one (rate-limited) JWKS refetch.
    pub fn verify_signature<'t>(
        &'t self,
        keys: &KeySet,
    ) -> Result<VerifiedIdToken<'t, 'a>, IdTokenError> {
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
                IdTokenError::KeyAlgorithmMismatch
            } else {
                IdTokenError::UnknownKey
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
            Ok(VerifiedIdToken { token: self })
        } else {
            Err(IdTokenError::BadSignature)
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// A NumericDate (RFC 7519 2): seconds since the epoch, possibly fractional.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, IdTokenError> {
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
                    _ => Err(IdTokenError::Malformed("a time claim is not a number")),
                }
            }
        }
        Some(_) => Err(IdTokenError::Malformed("a time claim is not a number")),
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The at_hash of an access token (OIDC Core 3.1.3.6): the left half of the hash named by the
/// id_token's alg, base64url. EdDSA over Ed25519 uses SHA-512.
pub fn at_hash(alg: Algorithm, access_token: &str) -> Option<String> {
    use aws_lc_rs::digest;
    let hash = match alg {
        Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 => &digest::SHA256,
        Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => &digest::SHA384,
        Algorithm::RS512 | Algorithm::PS512 | Algorithm::EdDSA => &digest::SHA512,
        // HMAC and any future algorithm never pass the allow-list.
        _ => return None,
    };
    let d = digest::digest(hash, access_token.as_bytes());
    let full = d.as_ref();
    Some(URL_SAFE_NO_PAD.encode(full.get(..full.len() / 2).unwrap_or_default()))
}

impl VerifiedIdToken<'_, '_> {
    /// Steps 2 to 11 on the claims of a token whose signature verified.
    pub fn check_claims(self, exp: &Expectations<'_>) -> Result<Map<String, Value>, IdTokenError> {
        let claims = &self.token.claims;

        // Step 2: iss exactly equal to the issuer (IdP mix-up defence).
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(IdTokenError::MissingClaim("iss"))?;
        if iss != exp.issuer {
            return Err(IdTokenError::IssuerMismatch {
                found: truncate(iss, 200),
            });
        }

        // OIDC Core 2: sub is required; the session is keyed on it.
        match claims.get("sub").and_then(Value::as_str) {
            Some(s) if !s.is_empty() => {}
            _ => return Err(IdTokenError::MissingClaim("sub")),
        }

        // Step 3: aud (a string or an array of strings) contains our client_id.
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or(IdTokenError::Malformed("aud holds a non-string"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(IdTokenError::Malformed("aud is not a string or an array")),
            None => return Err(IdTokenError::MissingClaim("aud")),
        };
        if !audiences.contains(&exp.client_id) {
            return Err(IdTokenError::AudienceMismatch);
        }

        // Step 4: with several audiences, azp must be present.
        let azp = match claims.get("azp") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Err(IdTokenError::Malformed("azp is not a string")),
        };
        if audiences.len() > 1 && azp.is_none() {
            return Err(IdTokenError::MissingAzp);
        }

        // Step 5: any azp must be our client_id.
        if azp.is_some_and(|a| a != exp.client_id) {
            return Err(IdTokenError::AzpMismatch);
        }

        // Steps 6-8 (signature, alg allow-list, no HMAC) were done by verify_signature.

        let now = unix_seconds(exp.now);
        let skew = i64::try_from(exp.clock_skew.as_secs()).unwrap_or(i64::MAX);

        // Step 9: the current time must be before exp (plus the allowed skew).
        let expires = numeric_date(claims, "exp")?.ok_or(IdTokenError::MissingClaim("exp"))?;
        if now >= expires.saturating_add(skew) {
            return Err(IdTokenError::Expired);
        }

        // Step 10: iat is required and must not lie in the future (beyond the skew).
        let issued = numeric_date(claims, "iat")?.ok_or(IdTokenError::MissingClaim("iat"))?;
        if issued > now.saturating_add(skew) {
            return Err(IdTokenError::IssuedInFuture);
        }

        // RFC 7519 4.1.5: nbf, when present, must not lie in the future.
        if let Some(nbf) = numeric_date(claims, "nbf")? {
            if nbf > now.saturating_add(skew) {
                return Err(IdTokenError::NotYetValid);
            }
        }

        // Step 11: nonce equal to the one sent in the authorization request, compared in
        // constant time (it is a secret bound to the browser).
        let nonce = match claims.get("nonce") {
            None | Some(Value::Null) => return Err(IdTokenError::MissingNonce),
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(IdTokenError::Malformed("nonce is not a string")),
        };
        if !exp.nonce.ct_eq(nonce) {
            return Err(IdTokenError::NonceMismatch);
        }

        // Steps 12-13 (acr, auth_time) apply only when requested; portcullis requests neither.

        // 3.1.3.8 / 3.2.2.9: at_hash, when present, must match the access token of the response.
        if let (Some(token_hash), Some(access_token)) = (claims.get("at_hash"), exp.access_token) {
            let token_hash = token_hash
                .as_str()
                .ok_or(IdTokenError::Malformed("at_hash is not a string"))?;
            let expected = at_hash(self.token.alg, access_token).unwrap_or_default();
            if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(token_hash.as_bytes()))
            {
                return Err(IdTokenError::AtHashMismatch);
            }
        }

        Ok(claims.clone())
    }
}

/// All checks against one key set: parse, signature, claims.
pub fn validate_id_token(
    token: &str,
    keys: &KeySet,
    exp: &Expectations<'_>,
) -> Result<Map<String, Value>, IdTokenError> {
    let parsed = UnverifiedIdToken::parse(token)?;
    parsed.verify_signature(keys)?.check_claims(exp)
}

#[cfg(test)]
mod tests;

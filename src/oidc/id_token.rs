//! id_token validation, OpenID Connect Core 1.0 section 3.1.3.7, in the spec's order.
//!
//! What it owns: deciding whether an id_token from the token endpoint proves who the user is.
//! What it does not own: where the keys come from (`jwks`) or the refetch on an unknown `kid`
//! (`provider`), which is why validation is split in three steps: [`UnverifiedIdToken::parse`],
//! [`UnverifiedIdToken::verify_signature`] (retried by the provider after a refetch), and
//! [`VerifiedIdToken::check_claims`].
//!
//! Why it is shaped so: structure, header and signature are the JWS core's (`jws`), shared by every
//! token kind; every claim is checked below with an injectable clock, and each failure has its own
//! [`IdTokenError`] variant so the log line says which check failed.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

use super::jwks::KeySet;
use super::jws::{
    audiences, numeric_date, truncate, unix_seconds, JwsError, UnverifiedJws, VerifiedJws,
};
use super::Nonce;

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
    #[error("refreshed id_token names another subject (OIDC Core 12.2)")]
    SubjectChanged,
    #[error("provider metadata and keys are not loaded yet")]
    NotReady,
}

/// What a refreshed id_token must match (OIDC Core 12.2).
#[derive(Debug, Clone)]
pub struct RefreshExpectations<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The session's `sub`.
    pub sub: &'a str,
    pub access_token: Option<&'a str>,
    pub clock_skew: Duration,
    pub now: SystemTime,
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

/// An id_token whose structure and header have been checked, but not yet its signature.
#[derive(Debug)]
pub struct UnverifiedIdToken<'a>(UnverifiedJws<'a>);

/// An id_token whose signature verified with a provider key; only its claims remain to check.
#[derive(Debug)]
pub struct VerifiedIdToken<'t, 'a>(VerifiedJws<'t, 'a>);

impl From<JwsError> for IdTokenError {
    fn from(e: JwsError) -> IdTokenError {
        match e {
            JwsError::Malformed(what) => IdTokenError::Malformed(what),
            JwsError::UnsupportedAlgorithm(alg) => IdTokenError::UnsupportedAlgorithm(alg),
            JwsError::UnknownKey => IdTokenError::UnknownKey,
            JwsError::KeyAlgorithmMismatch => IdTokenError::KeyAlgorithmMismatch,
            JwsError::BadSignature => IdTokenError::BadSignature,
        }
    }
}

impl<'a> UnverifiedIdToken<'a> {
    /// Splits the compact JWS and checks the header: three parts, JSON, an allowed `alg` (step 7,
    /// before any key is looked at). Step 1: an encrypted id_token (five-part JWE) is refused.
    pub fn parse(token: &'a str) -> Result<Self, IdTokenError> {
        Ok(UnverifiedIdToken(UnverifiedJws::parse(token)?))
    }

    pub fn kid(&self) -> Option<&str> {
        self.0.kid()
    }

    /// The token as the JWS core sees it, for signature checks elsewhere (the provider's refetch).
    pub fn as_jws(&self) -> &UnverifiedJws<'a> {
        &self.0
    }

    /// The token as if its signature had verified: lets a fuzz target reach the claim checks.
    #[cfg(feature = "fuzzing")]
    pub fn assume_verified(&self) -> VerifiedIdToken<'_, 'a> {
        VerifiedIdToken(self.0.assume_verified())
    }

    pub fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }

    /// Steps 6 to 8: the signature (see [`UnverifiedJws::verify_signature`]).
    pub fn verify_signature<'t>(
        &'t self,
        keys: &KeySet,
    ) -> Result<VerifiedIdToken<'t, 'a>, IdTokenError> {
        Ok(VerifiedIdToken(self.0.verify_signature(keys)?))
    }
}

fn date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, IdTokenError> {
    numeric_date(claims, name).map_err(|_| IdTokenError::Malformed("a time claim is not a number"))
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

impl<'t, 'a> VerifiedIdToken<'t, 'a> {
    /// An id_token whose signature the JWS core verified.
    pub fn from_jws(verified: VerifiedJws<'t, 'a>) -> Self {
        VerifiedIdToken(verified)
    }

    /// Steps 2 to 11 on the claims of a token whose signature verified.
    pub fn check_claims(self, exp: &Expectations<'_>) -> Result<Map<String, Value>, IdTokenError> {
        let claims = self.0.claims();
        self.check_common(
            exp.issuer,
            exp.client_id,
            exp.access_token,
            exp.clock_skew,
            exp.now,
        )?;

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
        Ok(claims.clone())
    }

    /// The checks of an id_token from a refresh (OIDC Core 12.2): those of the first one, except
    /// that no nonce was sent (one carried over from the login is ignored), and `sub` must be the
    /// session's own: a provider may not switch the user under a session.
    pub fn check_refreshed(
        self,
        exp: &RefreshExpectations<'_>,
    ) -> Result<Map<String, Value>, IdTokenError> {
        self.check_common(
            exp.issuer,
            exp.client_id,
            exp.access_token,
            exp.clock_skew,
            exp.now,
        )?;
        let claims = self.0.claims();
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !bool::from(sub.as_bytes().ct_eq(exp.sub.as_bytes())) {
            return Err(IdTokenError::SubjectChanged);
        }
        Ok(claims.clone())
    }

    /// Steps 2 to 10 and at_hash: everything but the nonce.
    fn check_common(
        &self,
        issuer: &str,
        client_id: &str,
        access_token: Option<&str>,
        clock_skew: Duration,
        now: SystemTime,
    ) -> Result<(), IdTokenError> {
        let claims = self.0.claims();

        // Step 2: iss exactly equal to the issuer (IdP mix-up defence).
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(IdTokenError::MissingClaim("iss"))?;
        if iss != issuer {
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
        let audiences = audiences(claims)
            .map_err(IdTokenError::Malformed)?
            .ok_or(IdTokenError::MissingClaim("aud"))?;
        if !audiences.contains(&client_id) {
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
        if azp.is_some_and(|a| a != client_id) {
            return Err(IdTokenError::AzpMismatch);
        }

        // Steps 6-8 (signature, alg allow-list, no HMAC) were done by verify_signature.

        let now = unix_seconds(now);
        let skew = i64::try_from(clock_skew.as_secs()).unwrap_or(i64::MAX);

        // Step 9: the current time must be before exp (plus the allowed skew).
        let expires = date(claims, "exp")?.ok_or(IdTokenError::MissingClaim("exp"))?;
        if now >= expires.saturating_add(skew) {
            return Err(IdTokenError::Expired);
        }

        // Step 10: iat is required and must not lie in the future (beyond the skew).
        let issued = date(claims, "iat")?.ok_or(IdTokenError::MissingClaim("iat"))?;
        if issued > now.saturating_add(skew) {
            return Err(IdTokenError::IssuedInFuture);
        }

        // RFC 7519 4.1.5: nbf, when present, must not lie in the future.
        if let Some(nbf) = date(claims, "nbf")? {
            if nbf > now.saturating_add(skew) {
                return Err(IdTokenError::NotYetValid);
            }
        }

        // 3.1.3.8 / 3.2.2.9: at_hash, when present, must match the access token of the response.
        if let (Some(token_hash), Some(access_token)) = (claims.get("at_hash"), access_token) {
            let token_hash = token_hash
                .as_str()
                .ok_or(IdTokenError::Malformed("at_hash is not a string"))?;
            let expected = at_hash(self.0.algorithm(), access_token).unwrap_or_default();
            if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(token_hash.as_bytes()))
            {
                return Err(IdTokenError::AtHashMismatch);
            }
        }
        Ok(())
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

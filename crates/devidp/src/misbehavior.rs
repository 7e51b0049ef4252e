//! Deliberate defects, one at a time, for the gateway's negative tests. Compiled only with the
//! `misbehavior` feature, which only tests turn on: the provider in the shipped binary has no code
//! path that mints a defective token.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

use super::handlers::{json_response, Resp};
use super::keys::{half_hash, random_token, KeySet};
use super::token::{server_error, Refusal};

/// How far the time defects move `exp`, `iat` and `nbf`: beyond any sane clock skew.
const SKEW_DEFECT: u64 = 600;

/// One deliberate defect. Applies to token responses issued after it is set (and `Slow` to every
/// endpoint); each alters exactly one thing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Misbehavior {
    /// Behave.
    #[default]
    None,
    /// Sign the id_token with a key that is not in the JWKS, under the current kid.
    WrongKey,
    /// `alg: none` and an empty signature.
    AlgNone,
    /// HS256 with the current public key's PEM as the HMAC secret (algorithm confusion).
    Hs256WithPublicKey,
    /// `iss` is the issuer with `/wrong` appended.
    WrongIssuer,
    /// `aud` is another client.
    WrongAudience,
    /// `aud` is the client and another audience, with no `azp`.
    MultipleAudiencesNoAzp,
    /// `azp` is another client.
    WrongAzp,
    /// `exp` ten minutes in the past.
    Expired,
    /// `iat` ten minutes in the future.
    FutureIat,
    /// `nbf` ten minutes in the future.
    NotYetValid,
    /// `nonce` differs from the one sent.
    BadNonce,
    /// No `nonce` claim.
    MissingNonce,
    /// `at_hash` does not match the access token.
    BadAtHash,
    /// The JWS header names a kid that is not in the JWKS (signature by the current key).
    UnknownKid,
    /// The token endpoint answers 400 with this OAuth error (RFC 6749 section 5.2).
    TokenError {
        /// `error` code.
        error: String,
        /// `error_description`.
        description: String,
    },
    /// Every endpoint waits this long before answering.
    Slow(Duration),
    /// The token endpoint answers 500.
    ServerError,
    /// The inner defect is in the JWT access token instead of the id_token (which is then sound):
    /// `alg: none`, a wrong `aud`, an expired token and so on, for the gateway's bearer tests.
    InAccessToken(Box<Misbehavior>),
    /// Userinfo answers about someone else (another `sub`).
    UserinfoWrongSub,
}

impl Misbehavior {
    /// The defect of the id_token.
    pub(crate) fn of_id_token(&self) -> Misbehavior {
        match self {
            Misbehavior::InAccessToken(_) => Misbehavior::None,
            other => other.clone(),
        }
    }

    /// The defect of a JWT access token.
    pub(crate) fn of_access_token(&self) -> Misbehavior {
        match self {
            Misbehavior::InAccessToken(inner) => (**inner).clone(),
            _ => Misbehavior::None,
        }
    }
}

/// The token endpoint's answer under a defect of the endpoint itself (not of the token).
pub(crate) fn token_endpoint(m: &Misbehavior) -> Option<Result<Resp, Refusal>> {
    match m {
        Misbehavior::ServerError => Some(Err(server_error())),
        Misbehavior::TokenError { error, description } => Some(Ok(json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "error": error, "error_description": description }),
        ))),
        _ => None,
    }
}

/// How long every endpoint waits before answering.
pub(crate) fn delay(m: &Misbehavior) -> Option<Duration> {
    match m {
        Misbehavior::Slow(delay) => Some(*delay),
        _ => None,
    }
}

/// Alter a token's claims as the defect says.
pub(crate) fn alter_claims(
    m: &Misbehavior,
    claims: &mut Map<String, Value>,
    issuer: &str,
    client_id: &str,
    now: u64,
) {
    match m {
        Misbehavior::WrongIssuer => {
            claims.insert("iss".into(), format!("{issuer}/wrong").into());
        }
        Misbehavior::WrongAudience => {
            claims.insert("aud".into(), "another-client".into());
        }
        Misbehavior::MultipleAudiencesNoAzp => {
            claims.insert("aud".into(), json!([client_id, "another-audience"]));
            claims.remove("azp");
        }
        Misbehavior::WrongAzp => {
            claims.insert("azp".into(), "another-client".into());
        }
        Misbehavior::Expired => {
            claims.insert("exp".into(), now.saturating_sub(SKEW_DEFECT).into());
        }
        Misbehavior::FutureIat => {
            claims.insert("iat".into(), (now + SKEW_DEFECT).into());
        }
        Misbehavior::NotYetValid => {
            claims.insert("nbf".into(), (now + SKEW_DEFECT).into());
        }
        Misbehavior::BadNonce => {
            claims.insert("nonce".into(), "not-the-nonce-you-sent".into());
        }
        Misbehavior::MissingNonce => {
            claims.remove("nonce");
        }
        Misbehavior::BadAtHash => {
            claims.insert("at_hash".into(), half_hash("not-the-access-token").into());
        }
        _ => {}
    }
}

/// The token signed the defective way, or `None` when the defect is not in the signature.
pub(crate) fn sign(
    m: &Misbehavior,
    header: &Header,
    claims: &Value,
    keys: &KeySet,
) -> Option<Result<String, Refusal>> {
    let mut header = header.clone();
    let signed = match m {
        Misbehavior::AlgNone => {
            let Ok(mut header) = serde_json::to_value(&header) else {
                return Some(Err(server_error()));
            };
            header["alg"] = "none".into();
            // An unsecured JWS (RFC 7515 appendix A.5): empty signature.
            return Some(Ok(format!(
                "{}.{}.",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                URL_SAFE_NO_PAD.encode(claims.to_string())
            )));
        }
        Misbehavior::Hs256WithPublicKey => {
            header.alg = Algorithm::HS256;
            jsonwebtoken::encode(
                &header,
                claims,
                &EncodingKey::from_secret(keys.current.public_pem.as_bytes()),
            )
        }
        Misbehavior::WrongKey => jsonwebtoken::encode(&header, claims, &keys.rogue.encoding),
        Misbehavior::UnknownKid => {
            let Ok(suffix) = random_token(9) else {
                return Some(Err(server_error()));
            };
            header.kid = Some(format!("unknown-{suffix}"));
            jsonwebtoken::encode(&header, claims, &keys.current.encoding)
        }
        _ => return None,
    };
    Some(signed.map_err(|e| {
        tracing::error!(error = %e, "development provider: signing the id_token failed");
        server_error()
    }))
}

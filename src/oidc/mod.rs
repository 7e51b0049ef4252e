//! OpenID Connect relying-party logic: provider metadata and JWKS cache, the authorization URL,
//! the code exchange, and the id_token checks of OpenID Connect Core 3.1.3.7.
//!
//! What it owns: every protocol decision between portcullis and the identity provider. What it
//! does not own: cookies, sessions, HTTP routes, or which status code a browser sees (that is
//! `login` and `error`).
//!
//! Why it is shaped so: the protocol code never touches sockets or hyper types. Builders return
//! `http::Request<Bytes>` and parsers take `http::Response<Bytes>`, so every rule is a unit test
//! on plain values; only [`provider`] holds the thin reqwest sender that does the I/O. Every
//! secret (client secret, state, nonce, PKCE verifier, code, tokens) lives in a newtype whose
//! `Debug` prints `[redacted]` and whose value is read through a visible `.secret()` call.

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use subtle::ConstantTimeEq;

pub mod access_token;
pub mod authorize;
pub mod id_token;
pub mod introspection;
pub mod jwks;
pub mod jws;
pub mod logout_token;
pub mod metadata;
pub mod provider;
pub mod sender;
#[cfg(test)]
pub(crate) mod testutil;
pub mod token;
pub mod userinfo;

pub use access_token::{AccessTokenError, AccessTokenExpectations};
pub use authorize::{authorization_url, AuthRequest, LoginSecrets};
pub use id_token::{validate_id_token, Expectations, IdTokenError, UnverifiedIdToken};
pub use introspection::{Introspected, IntrospectionError};
pub use jwks::{parse_jwks, JwksError, KeyCache, KeySet};
pub use jws::{JwsError, UnverifiedJws, VerifiedJws};
pub use metadata::{discovery_url, MetadataError, ProviderMetadata};
pub use provider::{LoadError, Provider, ProviderError};
pub use sender::{HttpSender, SendError};
pub use token::{ClientCredentials, ExchangeError, TokenResponse};
pub use userinfo::UserinfoError;

/// The largest response body accepted from the provider (discovery, JWKS, token, userinfo).
/// Real documents are a few KiB; the bound stops a hostile or broken endpoint from exhausting
/// memory.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How portcullis proves its identity at the token endpoint (RFC 6749 2.3, OIDC Core 9).
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with form-encoded id and secret (RFC 6749 2.3.1).
    SecretBasic(ClientSecret),
    /// `client_secret_post`: `client_id` and `client_secret` as form fields.
    SecretPost(ClientSecret),
    /// `private_key_jwt`: a JWT signed with this PEM key (RSA -> RS256, EC P-256 -> ES256,
    /// EC P-384 -> ES384, Ed25519 -> EdDSA), RFC 7523.
    PrivateKeyJwt {
        /// The PEM text of the private key (PKCS#1 or PKCS#8).
        key_pem: SecretSlice<u8>,
        /// The `kid` header of the assertion, when the provider needs one.
        key_id: Option<String>,
    },
    /// A public client: `client_id` only, protected by PKCE.
    None,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAuth::SecretBasic(_) => f.write_str("SecretBasic([redacted])"),
            ClientAuth::SecretPost(_) => f.write_str("SecretPost([redacted])"),
            ClientAuth::PrivateKeyJwt { key_id, .. } => f
                .debug_struct("PrivateKeyJwt")
                .field("key_pem", &"[redacted]")
                .field("key_id", key_id)
                .finish(),
            ClientAuth::None => f.write_str("None"),
        }
    }
}

/// Endpoints set by hand; each overrides the discovered one. When the authorization, token and
/// JWKS endpoints are all given, discovery is skipped (plain OAuth 2.0 providers).
#[derive(Debug, Clone, Default)]
pub struct EndpointOverrides {
    pub authorization_endpoint: Option<url::Url>,
    pub token_endpoint: Option<url::Url>,
    pub jwks_uri: Option<url::Url>,
    pub userinfo_endpoint: Option<url::Url>,
    pub end_session_endpoint: Option<url::Url>,
    pub introspection_endpoint: Option<url::Url>,
}

/// The typed provider configuration; the integrator maps the `[oidc]` TOML section onto it.
#[derive(Debug)]
pub struct ProviderConfig {
    /// The issuer identifier; may carry a path (`https://idp.example.com/realms/main`).
    pub issuer: url::Url,
    pub client_id: String,
    pub client_auth: ClientAuth,
    pub scopes: Vec<String>,
    /// Send a PKCE S256 challenge (RFC 7636).
    pub pkce: bool,
    pub redirect_uri: url::Url,
    pub endpoints: EndpointOverrides,
    /// Tolerance for clock differences in `exp`, `iat` and `nbf`.
    pub clock_skew: Duration,
    /// Connect and total timeout of every provider call.
    pub http_timeout: Duration,
    /// The least time between two JWKS refetches caused by an unknown `kid`.
    pub jwks_min_refetch_interval: Duration,
    /// Further authorization request parameters (`prompt`, `acr_values`, ...).
    pub extra_auth_params: Vec<(String, String)>,
}

/// Defines a newtype around a secret string: `Debug` prints `[redacted]`, the value is read with
/// `.secret()`, and equality is checked in constant time with `.ct_eq()`.
macro_rules! secret_string {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value received or restored from storage.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The secret value; call sites that read it are meant to stand out.
            pub fn secret(&self) -> &str {
                &self.0
            }

            /// Constant-time comparison with a candidate value (the length is not secret).
            pub fn ct_eq(&self, other: &str) -> bool {
                bool::from(self.0.as_bytes().ct_eq(other.as_bytes()))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret_string!(
    /// The `state` parameter: binds the callback to the browser that started the login.
    State
);
secret_string!(
    /// The `nonce` parameter: binds the id_token to this login (OIDC Core 3.1.2.1).
    Nonce
);
secret_string!(
    /// The PKCE `code_verifier` (RFC 7636 4.1).
    PkceVerifier
);
secret_string!(
    /// The authorization code returned to the callback.
    AuthCode
);
secret_string!(
    /// An access token (opaque or JWT; never parsed here).
    AccessToken
);
secret_string!(
    /// A compact-serialised id_token.
    IdToken
);
secret_string!(
    /// A refresh token.
    RefreshToken
);

/// The client secret, held in `secrecy` so it is zeroed on drop.
pub struct ClientSecret(SecretString);

impl ClientSecret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The secret value; call sites that read it are meant to stand out.
    pub fn secret(&self) -> &str {
        self.0.expose_secret()
    }
}

impl Clone for ClientSecret {
    fn clone(&self) -> Self {
        Self::new(self.secret())
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

/// `n` fresh random bytes from the operating system, base64url without padding.
/// With 32 bytes this gives 43 characters from the RFC 7636 4.1 unreserved set.
pub(crate) fn random_token(n: usize) -> Result<String, aws_lc_rs::error::Unspecified> {
    let mut buf = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut buf)?;
    Ok(URL_SAFE_NO_PAD.encode(&buf))
}

/// Parses a provider response body as a JSON object, bounded in size. The `what` names the
/// endpoint in the error so the log line says which call failed.
pub(crate) fn json_object(
    body: &Bytes,
    what: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    if body.len() > MAX_BODY_BYTES {
        return Err(format!("{what} response exceeds {MAX_BODY_BYTES} bytes"));
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(format!("{what} response is JSON but not an object")),
        Err(_) => Err(format!("{what} response is not JSON")),
    }
}

/// Converts a `url::Url` into an `http::Uri` for a request builder.
pub(crate) fn to_uri(url: &url::Url) -> Result<http::Uri, String> {
    http::Uri::try_from(url.as_str()).map_err(|e| format!("invalid URL {url}: {e}"))
}

/// A GET request asking for JSON; used for discovery and JWKS.
pub(crate) fn get_json_request(url: &url::Url) -> Result<http::Request<Bytes>, String> {
    http::Request::get(to_uri(url)?)
        .header(http::header::ACCEPT, "application/json")
        .body(Bytes::new())
        .map_err(|e| format!("cannot build request for {url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_is_redacted() {
        let all = format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            State::new("s3cr3t-state"),
            Nonce::new("s3cr3t-nonce"),
            PkceVerifier::new("s3cr3t-verifier"),
            AuthCode::new("s3cr3t-code"),
            AccessToken::new("s3cr3t-at"),
            IdToken::new("s3cr3t-idt"),
            RefreshToken::new("s3cr3t-rt"),
            ClientSecret::new("s3cr3t-client"),
        );
        assert!(!all.contains("s3cr3t"), "{all}");
        assert_eq!(all.matches("[redacted]").count(), 8);
        let auth = ClientAuth::PrivateKeyJwt {
            key_pem: SecretSlice::from(b"s3cr3t-pem".to_vec()),
            key_id: Some("k1".into()),
        };
        let basic = ClientAuth::SecretBasic(ClientSecret::new("s3cr3t-basic"));
        let shown = format!("{auth:?} {basic:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("k1"));
    }

    #[test]
    fn ct_eq_compares_values() {
        let n = Nonce::new("abc");
        assert!(n.ct_eq("abc"));
        assert!(!n.ct_eq("abd"));
        assert!(!n.ct_eq("ab"));
        assert!(!n.ct_eq(""));
    }

    #[test]
    fn random_tokens_are_unreserved_and_fresh() {
        let a = random_token(32).unwrap();
        let b = random_token(32).unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn json_object_rejects_non_objects_and_large_bodies() {
        assert!(json_object(&Bytes::from_static(b"{\"a\":1}"), "x").is_ok());
        assert!(json_object(&Bytes::from_static(b"[1]"), "x").is_err());
        assert!(json_object(&Bytes::from_static(b"<html>"), "x").is_err());
        let big = Bytes::from(vec![b' '; MAX_BODY_BYTES + 1]);
        assert!(json_object(&big, "x").unwrap_err().contains("exceeds"));
    }
}

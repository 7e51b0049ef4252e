//! Sessions: who is signed in, and the cookies that carry it.
//!
//! Owns the [`Session`] and [`LoginState`] types and their cookie codec, [`SessionCookies`]:
//! AEAD-sealed values (`seal`) holding a compact binary session layout (`payload`, with the claims
//! kept in their stored form by `claims`), split over
//! numbered cookies when large (`cookies`), found in the `Cookie` header by an allocation-free
//! parser (`header`). It does no I/O and never sees a socket, so the whole codec is tested as pure
//! functions over `http::HeaderMap`.
//!
//! A cookie that is missing, tampered with, sealed under an unknown key or expired simply means
//! "no session": reading never fails loudly, because every such case is something a browser or an
//! attacker can send and the answer is always the same (start a login).

pub mod cache;
mod claims;
mod cookies;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz;
mod header;
mod payload;
mod seal;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use cache::SessionCache;
pub use claims::{Claim, Claims, Entries, Items};
pub use cookies::{SessionCookies, CHUNK_LEN, LOGIN_TTL, MAX_CHUNKS, MAX_LOGIN_STATES};

/// The signed-in user's identity as kept in the session store.
#[derive(Clone, PartialEq)]
pub struct Session {
    /// Identity claims (`sub`, `email`, `groups`, ...).
    pub claims: Claims,
    pub id_token: Option<String>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; checked on every read, and sealed with the rest so a client cannot extend it.
    pub expires_at: u64,
}

impl Session {
    /// The `sub` claim, when it is a string.
    pub fn sub(&self) -> Option<&str> {
        self.claims.get("sub").and_then(|sub| sub.as_str())
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("claims", &self.claims)
            .field("id_token", &Redacted(&self.id_token))
            .field("access_token", &Redacted(&self.access_token))
            .field("refresh_token", &Redacted(&self.refresh_token))
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Cookie name and attributes, from the `[session]` configuration.
#[derive(Clone, Debug)]
pub struct CookieSettings {
    /// Base name, e.g. `_portcullis`; chunks are `NAME_0`, `NAME_1`, ..., login states
    /// `NAME_login_<id>`. Must be an RFC 6265 token of at most [`MAX_NAME_LEN`] bytes.
    pub name: String,
    pub secure: bool,
    pub max_age: std::time::Duration,
    pub domain: Option<String>,
}

/// Longest accepted base cookie name, leaving room for suffixes within the browser's 4096-byte
/// budget per cookie (RFC 6265 section 6.1).
pub const MAX_NAME_LEN: usize = 64;

/// One login attempt, bound to the browser by its own short-lived encrypted cookie.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct LoginState {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: Option<String>,
    pub return_to: String,
    /// Unix microseconds: fine enough to order logins started one right after another.
    pub created_at: u64,
}

impl fmt::Debug for LoginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginState")
            .field("state", &self.state)
            .field("nonce", &"[redacted]")
            .field("pkce_verifier", &Redacted(&self.pkce_verifier))
            .field("return_to", &self.return_to)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// Why a cookie codec could not be built or a cookie could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cookie name {0:?} must be 1 to 64 token characters (RFC 6265 section 4.1.1)")]
    CookieName(String),
    #[error("cookie domain {0:?} must be a host name of letters, digits, '-' and '.'")]
    CookieDomain(String),
    #[error("session secrets must be at least 32 bytes")]
    SecretTooShort,
    #[error("session keys could not be derived")]
    KeyDerivation,
    #[error("the session needs {needed} bytes of cookies, more than the {max} that are read back")]
    TooLarge { needed: usize, max: usize },
    #[error("the cookie value could not be encoded")]
    Encode(#[from] serde_json::Error),
    #[error("the session claims cannot be stored: {0}")]
    Claims(&'static str),
    #[error("the cookie value could not be sealed")]
    Seal,
}

/// Shows whether an optional secret is present, never its value.
struct Redacted<'a>(&'a Option<String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("Some([redacted])"),
            None => f.write_str("None"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_debug_redacts_tokens() {
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), "alice".into());
        let session = Session {
            claims: Claims::new(&claims).unwrap(),
            id_token: Some("ID-SECRET".into()),
            access_token: Some("ACCESS-SECRET".into()),
            refresh_token: Some("REFRESH-SECRET".into()),
            created_at: 1,
            expires_at: 2,
        };
        let debug = format!("{session:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(
            debug.contains("[redacted]") && debug.contains("alice"),
            "{debug}"
        );
        assert_eq!(session.sub(), Some("alice"));
    }

    #[test]
    fn login_state_debug_redacts_nonce_and_verifier() {
        let login = LoginState {
            state: "st".into(),
            nonce: "NONCE-SECRET".into(),
            pkce_verifier: Some("VERIFIER-SECRET".into()),
            return_to: "/path".into(),
            created_at: 1,
        };
        let debug = format!("{login:?}");
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(
            debug.contains("[redacted]") && debug.contains("/path"),
            "{debug}"
        );
    }

    #[test]
    fn sub_needs_a_string() {
        let mut claims = serde_json::Map::new();
        claims.insert("sub".into(), 42.into());
        let session = Session {
            claims: Claims::new(&claims).unwrap(),
            id_token: None,
            access_token: None,
            refresh_token: None,
            created_at: 0,
            expires_at: 0,
        };
        assert_eq!(session.sub(), None);
    }
}

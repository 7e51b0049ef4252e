//! Sessions: who is signed in, the cookies that carry it, and the stores that keep it.
//!
//! Owns the [`Session`] and [`LoginState`] types and their cookie codec, [`SessionCookies`]:
//! AEAD-sealed values (`seal`) holding a compact binary session layout (`payload`, with the claims
//! kept in their stored form by `claims`), the session cookie split over numbered cookies when large
//! and the per-attempt login-state cookies (`cookies`), found in the `Cookie` header by an
//! allocation-free parser (`header`). The codec does no I/O and never sees a socket, so it is tested
//! as pure functions over `http::HeaderMap`. Where sessions are kept, and the cache of opened ones
//! that hears every revocation, is `store`.
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
pub mod store;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use cache::SessionCache;
pub use claims::{Claim, Claims, Entries, Items};
pub use cookies::{Candidates, SessionCookies, CHUNK_LEN, LOGIN_TTL, MAX_CHUNKS, MAX_LOGIN_STATES};
pub use store::{Idle, Loaded, Opened, Revocation, SessionStore, Sessions, Store, StoreError};

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
    /// Unix seconds of the last recorded use, for `idle_timeout` (the cookie store records use at
    /// most once a minute; a shared store keeps it in the entry's time to live instead).
    pub seen_at: u64,
    /// Unix seconds when the access token expires, when the provider said (`expires_in`): when to
    /// refresh.
    pub access_expires_at: Option<u64>,
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
            .field("seen_at", &self.seen_at)
            .field("access_expires_at", &self.access_expires_at)
            .finish()
    }
}

/// An opened session with what follows from it under one configuration: the identity headers it
/// gives upstream, the `[access]` verdict and the assertions minted for it. Built once per session
/// (and configuration) by `Snapshot::open`, then served from the cache for every later request of
/// that session. An API client's bearer token is opened into the same shape (a session of one
/// token, with no tokens kept), cached by the token instead of a cookie.
#[derive(Debug)]
pub struct Authenticated {
    pub session: Session,
    pub identity: crate::identity::IdentityHeaders,
    /// Whether `[access]` lets this identity pass (a route's own groups are checked per request).
    pub access: crate::policy::Verdict,
    /// The signed assertions minted for this identity, reused while fresh.
    pub assertions: crate::assertion::AssertionCache,
    /// The session's key in its store (refresh locks, updates); for a bearer token, a hash of it.
    pub key: store::SessionKey,
    /// When this replica last recorded a use (Unix seconds), for `idle_timeout`.
    touched: std::sync::atomic::AtomicU64,
    /// Set once the session was refreshed: what replaces it.
    successor: std::sync::OnceLock<std::sync::Arc<Successor>>,
    /// The identity under forward-auth's `X-Auth-Request-*` names, made at the first check.
    auth_request: std::sync::OnceLock<crate::identity::IdentityHeaders>,
}

/// A refreshed session that replaces another, with the cookie that carries it.
#[derive(Debug)]
pub struct Successor {
    pub auth: std::sync::Arc<Authenticated>,
    pub set_cookies: Vec<http::HeaderValue>,
}

impl Authenticated {
    /// `session` with what the configuration in force makes of it (see `Snapshot::open`).
    pub fn new(
        session: Session,
        identity: crate::identity::IdentityHeaders,
        access: crate::policy::Verdict,
        key: store::SessionKey,
    ) -> Authenticated {
        Authenticated {
            touched: std::sync::atomic::AtomicU64::new(session.seen_at),
            session,
            identity,
            access,
            assertions: crate::assertion::AssertionCache::default(),
            key,
            successor: std::sync::OnceLock::new(),
            auth_request: std::sync::OnceLock::new(),
        }
    }

    /// The `X-Auth-Request-*` headers of this identity, made by `build` from its claims the first
    /// time (an identity is opened once per configuration, so they follow the configuration).
    pub fn auth_request_headers(
        &self,
        build: impl FnOnce(&Claims) -> crate::identity::IdentityHeaders,
    ) -> &crate::identity::IdentityHeaders {
        self.auth_request
            .get_or_init(|| build(&self.session.claims))
    }

    /// The newest session that replaced this one, if it was refreshed (following every refresh).
    pub fn successor(&self) -> Option<&Successor> {
        let mut current = self.successor.get()?;
        while let Some(next) = current.auth.successor.get() {
            current = next;
        }
        Some(current)
    }

    fn supersede(&self, successor: std::sync::Arc<Successor>) {
        let _ = self.successor.set(successor);
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
            seen_at: 1,
            access_expires_at: None,
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
            seen_at: 0,
            access_expires_at: None,
        };
        assert_eq!(session.sub(), None);
    }
}

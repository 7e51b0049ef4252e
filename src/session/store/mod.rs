//! Where sessions live: the store interface, its implementations, and the cache in front of them.
//!
//! A [`SessionStore`] keeps sessions and finds them again from what a browser presents (the session
//! cookie's values, found by [`SessionCookies::candidates`]): load, save (returning the `Set-Cookie`
//! values that point at the saved session), delete (sign-out), revoke by `sid` or `sub` (back-channel
//! logout), and a lock that makes a refresh single-flight. The cookie store ([`CookieStore`]) keeps the
//! whole session sealed in the cookie and its revocations in memory; a shared store (Redis) keeps it
//! server-side under the cookie's id.
//!
//! [`Sessions`] is the store as the request path uses it: in front of it a cache of opened sessions
//! (`cache`), keyed by the exact cookie bytes, so the hot path of a signed-in user's request does no
//! decryption and no I/O. Every way a session can end goes through `Sessions`, which tells the cache,
//! so a revoked session is never served from it.

mod cookie;
mod locks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use super::cache::SessionCache;
use super::{Authenticated, Session, SessionCookies, SessionError};

pub use cookie::CookieStore;
pub use locks::RefreshLock;

/// Why a store could not do what was asked. Never "no such session": that is `Ok(None)`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or failed (a shared store's connection): 503, retried later.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// A refresh lock was not acquired within the wait.
    #[error("timed out waiting for a concurrent refresh of this session")]
    LockTimeout,
    /// The session cannot be encoded for storage (too large, too deeply nested).
    #[error(transparent)]
    Encode(#[from] SessionError),
}

/// Which sessions a revocation ends (OpenID Connect Back-Channel Logout 1.0 section 2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// Every session whose claims carry this `sid`.
    Sid(String),
    /// Every session of this `sub` that exists at the time of the revocation.
    Sub(String),
}

impl Revocation {
    /// Whether `session` is one this revocation ends, given when it was made (Unix seconds).
    pub fn covers(&self, session: &Session, revoked_at: u64) -> bool {
        match self {
            Revocation::Sid(sid) => {
                session.claims.get("sid").and_then(|s| s.as_str()) == Some(sid.as_str())
            }
            // Fail closed within the second of the revocation: a session made in that same second
            // may predate it.
            Revocation::Sub(sub) => {
                session.sub() == Some(sub.as_str()) && session.created_at <= revoked_at
            }
        }
    }
}

/// Identifies one session for its refresh lock: what every replica derives from the same cookie.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey(pub [u8; 32]);

impl SessionKey {
    /// The key of the session presented as these cookie values: a SHA-256 of their bytes.
    pub fn of(parts: &[&[u8]]) -> SessionKey {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in parts {
            ctx.update(part);
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        SessionKey(key)
    }
}

/// A place that keeps sessions. `codec` is the cookie codec of the configuration in force (cookie
/// names and attributes, the keys that seal sessions); `now` is Unix seconds.
pub trait SessionStore: Send + Sync {
    /// The session these cookie values (one cookie, or the chunks in order) stand for: `None` when
    /// they stand for none (unknown, tampered, expired, revoked).
    fn load(
        &self,
        codec: &SessionCookies,
        parts: &[&[u8]],
        now: u64,
    ) -> impl Future<Output = Result<Option<Session>, StoreError>> + Send;

    /// Keep `session`; the `Set-Cookie` values that make the browser present it, replacing what
    /// `request` carries.
    fn save(
        &self,
        codec: &SessionCookies,
        session: &Session,
        request: &HeaderMap,
        now: u64,
    ) -> impl Future<Output = Result<Vec<HeaderValue>, StoreError>> + Send;

    /// End the session `request` presents, so that a copy of its cookie is worth nothing; the
    /// `Set-Cookie` values that clear it in the browser.
    fn delete(
        &self,
        codec: &SessionCookies,
        request: &HeaderMap,
        now: u64,
    ) -> impl Future<Output = Result<Vec<HeaderValue>, StoreError>> + Send;

    /// End every session `revocation` covers.
    fn revoke(
        &self,
        revocation: &Revocation,
        now: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Hold the refresh of session `key` for this caller alone, waiting at most `wait` for another
    /// holder to finish.
    fn lock_refresh(
        &self,
        key: &SessionKey,
        wait: Duration,
    ) -> impl Future<Output = Result<RefreshLock, StoreError>> + Send;
}

/// The configured store.
pub enum Store {
    Cookie(CookieStore),
}

impl Store {
    /// A configuration may allow sessions to live this long from now on.
    fn note_lifetime(&self, lifetime: Duration) {
        match self {
            Store::Cookie(s) => s.note_lifetime(lifetime),
        }
    }
}

impl SessionStore for Store {
    async fn load(
        &self,
        codec: &SessionCookies,
        parts: &[&[u8]],
        now: u64,
    ) -> Result<Option<Session>, StoreError> {
        match self {
            Store::Cookie(s) => s.load(codec, parts, now).await,
        }
    }

    async fn save(
        &self,
        codec: &SessionCookies,
        session: &Session,
        request: &HeaderMap,
        now: u64,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        match self {
            Store::Cookie(s) => s.save(codec, session, request, now).await,
        }
    }

    async fn delete(
        &self,
        codec: &SessionCookies,
        request: &HeaderMap,
        now: u64,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        match self {
            Store::Cookie(s) => s.delete(codec, request, now).await,
        }
    }

    async fn revoke(&self, revocation: &Revocation, now: u64) -> Result<(), StoreError> {
        match self {
            Store::Cookie(s) => s.revoke(revocation, now).await,
        }
    }

    async fn lock_refresh(
        &self,
        key: &SessionKey,
        wait: Duration,
    ) -> Result<RefreshLock, StoreError> {
        match self {
            Store::Cookie(s) => s.lock_refresh(key, wait).await,
        }
    }
}

/// The store as the request path uses it: behind a cache of opened sessions that hears every
/// revocation.
pub struct Sessions<S = Store> {
    store: S,
    cache: SessionCache<Authenticated>,
}

impl<S: SessionStore> Sessions<S> {
    pub fn new(store: S) -> Sessions<S> {
        Sessions {
            store,
            cache: SessionCache::default(),
        }
    }

    /// The session the request presents, with its identity: from the cache when these exact cookie
    /// bytes were opened before under configuration `generation`, else loaded from the store, and
    /// `make` builds what is cached (the identity headers, computed once per session).
    pub async fn authenticate(
        &self,
        codec: &SessionCookies,
        headers: &HeaderMap,
        now: u64,
        generation: u64,
        make: impl FnOnce(Session) -> Authenticated,
    ) -> Result<Option<Arc<Authenticated>>, StoreError> {
        let candidates = codec.candidates(headers);
        for parts in candidates.iter() {
            if let Some(hit) = self.cache.get(parts, now, generation) {
                return Ok(Some(hit));
            }
            let epoch = self.cache.epoch();
            if let Some(session) = self.store.load(codec, parts, now).await? {
                let expires_at = session.expires_at;
                let value = Arc::new(make(session));
                self.cache
                    .insert(parts, expires_at, generation, epoch, value.clone());
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// Keep a new or changed session; the `Set-Cookie` values for the response.
    pub async fn save(
        &self,
        codec: &SessionCookies,
        session: &Session,
        request: &HeaderMap,
        now: u64,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        self.store.save(codec, session, request, now).await
    }

    /// Sign-out: end the session the request presents in the store and in the cache; the
    /// `Set-Cookie` values that clear it.
    pub async fn delete(
        &self,
        codec: &SessionCookies,
        request: &HeaderMap,
        now: u64,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        let cleared = self.store.delete(codec, request, now).await?;
        let candidates = codec.candidates(request);
        let presented: Vec<Vec<u8>> = candidates.iter().map(|parts| parts.concat()).collect();
        self.cache
            .invalidate(|raw, _| presented.iter().any(|p| p.as_slice() == raw));
        Ok(cleared)
    }

    /// End every session `revocation` covers, in the store and in the cache.
    pub async fn revoke(&self, revocation: &Revocation, now: u64) -> Result<(), StoreError> {
        // The cache first: from here on nothing it held can be served, and what the store still
        // returns until its own revocation lands is refused below by the epoch.
        self.cache
            .invalidate(|_, auth| revocation.covers(&auth.session, now));
        self.store.revoke(revocation, now).await?;
        self.cache
            .invalidate(|_, auth| revocation.covers(&auth.session, now));
        Ok(())
    }

    /// See [`SessionStore::lock_refresh`].
    pub async fn lock_refresh(
        &self,
        key: &SessionKey,
        wait: Duration,
    ) -> Result<RefreshLock, StoreError> {
        self.store.lock_refresh(key, wait).await
    }
}

impl Sessions<Store> {
    /// A new configuration may allow sessions to live this long from now on.
    pub fn note_lifetime(&self, lifetime: Duration) {
        self.store.note_lifetime(lifetime);
    }
}

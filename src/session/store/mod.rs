//! Where sessions live: the store interface, its implementations, and the cache in front of them.
//!
//! A [`SessionStore`] keeps sessions and finds them again from what a browser presents (the session
//! cookie's values, found by [`SessionCookies::candidates`]): load, save a new session (returning the
//! `Set-Cookie` values that point at it), update the loaded one (a refresh, a recorded use), delete
//! (sign-out), revoke by `sid` or `sub` (back-channel logout), remember a one-time value (a logout
//! token's `jti`), and a lock that makes a refresh single-flight. The cookie store ([`CookieStore`])
//! keeps the whole session sealed in the cookie and its revocations in memory; a shared store (Redis)
//! keeps it server-side under the cookie's id.
//!
//! [`Sessions`] is the store as the request path uses it: in front of it a cache of opened sessions
//! (`cache`), keyed by the exact cookie bytes, so the hot path of a signed-in user's request does no
//! decryption and no I/O. Every way a session can end or change goes through `Sessions`, which tells
//! the cache, so a revoked or superseded session is never served from it as it was.

mod cookie;
mod locks;
pub mod redis;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use super::cache::SessionCache;
use super::{Authenticated, Session, SessionCookies, SessionError, Successor};
use crate::telemetry::metrics::{Metrics, StoreOp};

pub use self::redis::RedisStore;
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
    /// The session to update was ended meanwhile (signed out, revoked).
    #[error("the session ended meanwhile")]
    Gone,
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

/// Why a stored session changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A use recorded (`idle_timeout`): the old copy stays good until it idles out.
    Use,
    /// New tokens: the old copy must never be used again.
    Refresh,
}

/// A session as a store found it.
#[derive(Debug)]
pub struct Loaded {
    pub session: Session,
    /// The same for every replica and every copy of the cookie: refresh locks and updates use it.
    pub key: SessionKey,
    /// Unix seconds until which this copy may be served without asking the store again.
    pub valid_until: u64,
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
    ) -> impl Future<Output = Result<Option<Loaded>, StoreError>> + Send;

    /// The session stored under `key` now, when the store can look it up by key (a shared store);
    /// `Ok(None)` when it is gone or the store keeps nothing server-side.
    fn reload(
        &self,
        codec: &SessionCookies,
        key: &SessionKey,
        now: u64,
    ) -> impl Future<Output = Result<Option<Loaded>, StoreError>> + Send;

    /// Keep a new `session` (a login: never the one `request` presents, against fixation); the
    /// `Set-Cookie` values that make the browser present it, replacing what `request` carries.
    fn save(
        &self,
        codec: &SessionCookies,
        session: &Session,
        request: &HeaderMap,
        now: u64,
    ) -> impl Future<Output = Result<Vec<HeaderValue>, StoreError>> + Send;

    /// Replace the session stored under `key` with `session`; the `Set-Cookie` values the response
    /// must carry, if the cookie changes. After a [`Change::Refresh`] what the old cookie carried
    /// must never open again (its tokens are spent).
    fn update(
        &self,
        codec: &SessionCookies,
        key: &SessionKey,
        session: &Session,
        change: Change,
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

    /// End the session stored under `key` (its refresh was refused).
    fn end(
        &self,
        key: &SessionKey,
        expires_at: u64,
        now: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// End every session `revocation` covers.
    fn revoke(
        &self,
        codec: &SessionCookies,
        revocation: &Revocation,
        now: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Whether `value` is used here for the first time; it is remembered until `until` (Unix
    /// seconds), so a second use before then answers `false`.
    fn first_use(
        &self,
        codec: &SessionCookies,
        value: &str,
        until: u64,
        now: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

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
    Redis(RedisStore),
}

impl Store {
    /// A new configuration's lifetime and idle timeout.
    fn note_settings(&self, lifetime: Duration, idle: Option<Duration>) {
        match self {
            Store::Cookie(s) => s.note_lifetime(lifetime),
            Store::Redis(s) => s.note_idle(idle),
        }
    }
}

/// Calls the same method on whichever store this is.
macro_rules! each_store {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            Store::Cookie($s) => $call,
            Store::Redis($s) => $call,
        }
    };
}

impl SessionStore for Store {
    async fn load(
        &self,
        codec: &SessionCookies,
        parts: &[&[u8]],
        now: u64,
    ) -> Result<Option<Loaded>, StoreError> {
        each_store!(self, s => s.load(codec, parts, now).await)
    }

    async fn reload(
        &self,
        codec: &SessionCookies,
        key: &SessionKey,
        now: u64,
    ) -> Result<Option<Loaded>, StoreError> {
        each_store!(self, s => s.reload(codec, key, now).await)
    }

    async fn save(
        &self,
        codec: &SessionCookies,
        session: &Session,
        request: &HeaderMap,
        now: u64,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        each_store!(self, s => s.save(codec, session, request, now).await)
    }

    async fn update(
        &self,
        codec: &SessionCookies,
        key: &SessionKey,
        session: &Session,
        change: Change,
        request: &HeaderMap,
        now: u64,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        each_store!(self, s => s.update(codec, key, session, change, request, now).await)
    }

    async fn delete(
        &self,
        codec: &SessionCookies,
        request: &HeaderMap,
        now: u64,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        each_store!(self, s => s.delete(codec, request, now).await)
    }

    async fn end(&self, key: &SessionKey, expires_at: u64, now: u64) -> Result<(), StoreError> {
        each_store!(self, s => s.end(key, expires_at, now).await)
    }

    async fn revoke(
        &self,
        codec: &SessionCookies,
        revocation: &Revocation,
        now: u64,
    ) -> Result<(), StoreError> {
        each_store!(self, s => s.revoke(codec, revocation, now).await)
    }

    async fn first_use(
        &self,
        codec: &SessionCookies,
        value: &str,
        until: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        each_store!(self, s => s.first_use(codec, value, until, now).await)
    }

    async fn lock_refresh(
        &self,
        key: &SessionKey,
        wait: Duration,
    ) -> Result<RefreshLock, StoreError> {
        each_store!(self, s => s.lock_refresh(key, wait).await)
    }
}

/// What [`Sessions::authenticate`] found.
pub struct Opened {
    pub auth: Arc<Authenticated>,
    /// `Set-Cookie` values the response must carry: a recorded use, or the successor of a session
    /// refreshed meanwhile.
    pub set_cookies: Vec<HeaderValue>,
}

/// How long sessions may stay unused, and how often a use is recorded.
#[derive(Debug, Clone, Copy)]
pub struct Idle {
    pub timeout: Duration,
}

impl Idle {
    /// A use is recorded at most this often: min(60 s, idle_timeout / 4).
    pub fn interval(&self) -> u64 {
        (self.timeout.as_secs() / 4).clamp(1, 60)
    }
}

/// The store as the request path uses it: behind a cache of opened sessions that hears every
/// revocation. Each call that reaches the store is counted in the metrics (`store_operations`,
/// `store_errors` by operation); a session served from the cache costs none.
pub struct Sessions<S = Store> {
    store: S,
    cache: Arc<SessionCache<Authenticated>>,
    metrics: Option<Arc<Metrics>>,
}

impl<S: SessionStore> Sessions<S> {
    pub fn new(store: S) -> Sessions<S> {
        Sessions::with_cache(store, Arc::default())
    }

    /// A store whose cache is also told of changes elsewhere (a shared store hears them from the
    /// other replicas and passes them to `cache`).
    pub fn with_cache(store: S, cache: Arc<SessionCache<Authenticated>>) -> Sessions<S> {
        Sessions {
            store,
            cache,
            metrics: None,
        }
    }

    /// The same, counting its operations in `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Sessions<S> {
        Sessions {
            metrics: Some(metrics),
            ..self
        }
    }

    /// `result` of operation `op`, counted: a failure is one the store could not carry out (it
    /// failed, a lock was not had in time, the session could not be encoded); a session that ended
    /// meanwhile (`Gone`) is an answer, not a failure.
    fn counted<T>(&self, op: StoreOp, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Some(metrics) = &self.metrics {
            let ok = matches!(result, Ok(_) | Err(StoreError::Gone));
            metrics.store_operation(op, ok);
        }
        result
    }

    /// The session the request presents, with its identity: from the cache when these exact cookie
    /// bytes were opened before under configuration `generation`, else loaded from the store;
    /// `open` makes what is cached of it (identity headers, access verdict) once per session. A session unused for longer than
    /// `idle` is none; a use is recorded at most once per [`Idle::interval`]. A session refreshed
    /// meanwhile is answered with its successor (and the successor's cookie).
    pub async fn authenticate(
        &self,
        codec: &SessionCookies,
        headers: &HeaderMap,
        now: u64,
        generation: u64,
        idle: Option<Idle>,
        open: impl Fn(Session, SessionKey) -> Authenticated,
    ) -> Result<Option<Opened>, StoreError> {
        let candidates = codec.candidates(headers);
        for parts in candidates.iter() {
            let auth = match self.cache.get(parts, now, generation) {
                Some(hit) => hit,
                None => {
                    let epoch = self.cache.epoch();
                    let loaded = self.store.load(codec, parts, now).await;
                    let Some(loaded) = self.counted(StoreOp::Load, loaded)? else {
                        continue;
                    };
                    let valid_until = idle.map_or(loaded.valid_until, |idle| {
                        loaded.valid_until.min(
                            loaded
                                .session
                                .seen_at
                                .saturating_add(idle.timeout.as_secs()),
                        )
                    });
                    if now >= valid_until {
                        continue;
                    }
                    let auth = Arc::new(open(loaded.session, loaded.key));
                    self.cache
                        .insert(parts, valid_until, generation, epoch, auth.clone());
                    auth
                }
            };
            // A session refreshed meanwhile: its successor, and the cookie that carries it.
            let (auth, mut set_cookies) = match auth.successor() {
                Some(successor) => (successor.auth.clone(), successor.set_cookies.clone()),
                None => (auth, Vec::new()),
            };
            if let Some(idle) = idle {
                if now >= auth.session.seen_at.saturating_add(idle.timeout.as_secs()) {
                    continue;
                }
                // A use that cannot be recorded is not this request's failure: the session idles
                // out a little sooner at worst.
                match self.record_use(codec, &auth, headers, now, idle).await {
                    Ok(cookies) => set_cookies.extend(cookies),
                    Err(e) => tracing::warn!("recording a session's use failed: {e}"),
                }
            }
            return Ok(Some(Opened { auth, set_cookies }));
        }
        Ok(None)
    }

    /// Record a use of `auth` when the last one recorded is older than the interval, once per
    /// replica however many requests arrive together.
    async fn record_use(
        &self,
        codec: &SessionCookies,
        auth: &Authenticated,
        request: &HeaderMap,
        now: u64,
        idle: Idle,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        let last = auth.touched.load(Ordering::Relaxed);
        if now < last.saturating_add(idle.interval())
            || auth
                .touched
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return Ok(Vec::new());
        }
        let mut session = auth.session.clone();
        session.seen_at = now;
        let updated = self
            .store
            .update(codec, &auth.key, &session, Change::Use, request, now)
            .await;
        self.counted(StoreOp::Update, updated)
    }

    /// Keep a new session (a login); the `Set-Cookie` values for the response.
    pub async fn save(
        &self,
        codec: &SessionCookies,
        session: &Session,
        request: &HeaderMap,
        now: u64,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        let saved = self.store.save(codec, session, request, now).await;
        self.counted(StoreOp::Save, saved)
    }

    /// The session stored under `key` now (see [`SessionStore::reload`]).
    pub async fn reload(
        &self,
        codec: &SessionCookies,
        key: &SessionKey,
        now: u64,
    ) -> Result<Option<Loaded>, StoreError> {
        let loaded = self.store.reload(codec, key, now).await;
        self.counted(StoreOp::Reload, loaded)
    }

    /// Replace `old` with `new` (refreshed, opened under `old`'s key): stored, and `old` answered
    /// with its successor from now on by this replica, so whoever still presents the old cookie gets
    /// the new session and its cookie, and the old tokens are never used again. Returns the
    /// successor.
    pub async fn supersede(
        &self,
        codec: &SessionCookies,
        old: &Authenticated,
        new: Authenticated,
        request: &HeaderMap,
        now: u64,
    ) -> Result<Arc<Successor>, StoreError> {
        let updated = self
            .store
            .update(codec, &old.key, &new.session, Change::Refresh, request, now)
            .await;
        let set_cookies = self.counted(StoreOp::Update, updated)?;
        let successor = Arc::new(Successor {
            auth: Arc::new(new),
            set_cookies,
        });
        old.supersede(successor.clone());
        Ok(successor)
    }

    /// End the session under `key` (its refresh was refused) in the store and in the cache.
    pub async fn end(&self, old: &Authenticated, now: u64) -> Result<(), StoreError> {
        self.cache.invalidate(|_, auth| auth.key == old.key);
        let ended = self.store.end(&old.key, old.session.expires_at, now).await;
        self.counted(StoreOp::End, ended)?;
        self.cache.invalidate(|_, auth| auth.key == old.key);
        Ok(())
    }

    /// Sign-out: end the session the request presents in the store and in the cache; the
    /// `Set-Cookie` values that clear it.
    pub async fn delete(
        &self,
        codec: &SessionCookies,
        request: &HeaderMap,
        now: u64,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        let cleared = self.store.delete(codec, request, now).await;
        let cleared = self.counted(StoreOp::Delete, cleared)?;
        let candidates = codec.candidates(request);
        let presented: Vec<Vec<u8>> = candidates.iter().map(|parts| parts.concat()).collect();
        self.cache
            .invalidate(|raw, _| presented.iter().any(|p| p.as_slice() == raw));
        Ok(cleared)
    }

    /// End every session `revocation` covers, in the store and in the cache.
    pub async fn revoke(
        &self,
        codec: &SessionCookies,
        revocation: &Revocation,
        now: u64,
    ) -> Result<(), StoreError> {
        // The cache first: from here on nothing it held can be served, and what the store still
        // returns until its own revocation lands is refused below by the epoch.
        let covered = |auth: &Authenticated| {
            revocation.covers(&auth.session, now)
                || auth
                    .successor()
                    .is_some_and(|s| revocation.covers(&s.auth.session, now))
        };
        self.cache.invalidate(|_, auth| covered(auth));
        let revoked = self.store.revoke(codec, revocation, now).await;
        self.counted(StoreOp::Revoke, revoked)?;
        self.cache.invalidate(|_, auth| covered(auth));
        Ok(())
    }

    /// See [`SessionStore::first_use`].
    pub async fn first_use(
        &self,
        codec: &SessionCookies,
        value: &str,
        until: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let first = self.store.first_use(codec, value, until, now).await;
        self.counted(StoreOp::FirstUse, first)
    }

    /// See [`SessionStore::lock_refresh`].
    pub async fn lock_refresh(
        &self,
        key: &SessionKey,
        wait: Duration,
    ) -> Result<RefreshLock, StoreError> {
        let lock = self.store.lock_refresh(key, wait).await;
        self.counted(StoreOp::Lock, lock)
    }
}

impl Sessions<Store> {
    /// A new configuration's lifetime and idle timeout.
    pub fn note_settings(&self, lifetime: Duration, idle: Option<Duration>) {
        self.store.note_settings(lifetime, idle);
    }

    /// The configured store.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

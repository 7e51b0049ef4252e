//! The cookie store: the whole session travels sealed in the browser's cookie; nothing is kept
//! server-side but revocations.
//!
//! A cookie cannot be taken back from a browser, so ending a session before it expires (sign-out,
//! back-channel logout) is remembered in memory by this process: the exact session signed out, and
//! every session of a revoked `sid` or `sub`. Each revocation is forgotten once every session it could
//! cover has expired anyway (`lifetime` after it was made). Other replicas do not hear of them; the
//! shared store is the answer when that matters. Refreshes are single-flight within this process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use super::locks::LocalLocks;
use super::{Change, Loaded, RefreshLock, Revocation, SessionKey, SessionStore, StoreError};
use crate::session::{Session, SessionCookies};

pub struct CookieStore {
    /// The longest lifetime a session of this process may have (seconds), so how long a revocation
    /// must be remembered.
    lifetime: AtomicU64,
    /// Whether any revocation is held: the common case (none) costs one load per opened cookie.
    any: AtomicBool,
    revoked: Mutex<Revoked>,
    used: Mutex<Used>,
    locks: LocalLocks,
}

#[derive(Default)]
struct Revoked {
    /// Signed-out or superseded sessions by [`SessionKey`], with the time they expire.
    sessions: HashMap<SessionKey, u64>,
    /// Back-channel revocations, with the time they were made.
    by_claim: Vec<(Revocation, u64)>,
}

/// Values used once (logout token `jti`s), with the time they may be forgotten.
#[derive(Default)]
struct Used {
    until: HashMap<String, u64>,
}

/// Most one-time values remembered; beyond it the oldest-expiring are dropped, which only shortens
/// how long replays of old tokens (long refused by their own age limit) would be noticed.
const MAX_USED: usize = 100_000;

impl CookieStore {
    pub fn new(lifetime: Duration) -> CookieStore {
        CookieStore {
            lifetime: AtomicU64::new(lifetime.as_secs()),
            any: AtomicBool::new(false),
            revoked: Mutex::new(Revoked::default()),
            used: Mutex::new(Used::default()),
            locks: LocalLocks::default(),
        }
    }

    /// A configuration may allow sessions to live this long from now on.
    pub fn note_lifetime(&self, lifetime: Duration) {
        self.lifetime
            .fetch_max(lifetime.as_secs(), Ordering::Relaxed);
    }

    fn revoked(&self) -> std::sync::MutexGuard<'_, Revoked> {
        self.revoked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_revoked(&self, key: &SessionKey, session: &Session) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let revoked = self.revoked();
        revoked
            .by_claim
            .iter()
            .any(|(r, at)| r.covers(session, *at))
            || revoked.sessions.contains_key(key)
    }

    fn retire(&self, key: &SessionKey, expires_at: u64, now: u64) {
        let mut revoked = self.revoked();
        revoked.sessions.insert(key.clone(), expires_at);
        self.prune(&mut revoked, now);
    }

    /// Forget what has expired; note whether anything is left.
    fn prune(&self, revoked: &mut Revoked, now: u64) {
        let lifetime = self.lifetime.load(Ordering::Relaxed);
        revoked.sessions.retain(|_, expires_at| *expires_at > now);
        revoked
            .by_claim
            .retain(|(_, at)| at.saturating_add(lifetime) > now);
        self.any.store(
            !revoked.sessions.is_empty() || !revoked.by_claim.is_empty(),
            Ordering::Release,
        );
    }
}

impl SessionStore for CookieStore {
    async fn load(
        &self,
        codec: &SessionCookies,
        parts: &[&[u8]],
        now: u64,
    ) -> Result<Option<Loaded>, StoreError> {
        let Some(session) = codec.open(parts, now) else {
            return Ok(None);
        };
        let key = SessionKey::of(parts);
        if self.is_revoked(&key, &session) {
            return Ok(None);
        }
        Ok(Some(Loaded {
            valid_until: session.expires_at,
            session,
            key,
        }))
    }

    /// Nothing is kept server-side: only the cookie can be opened.
    async fn reload(
        &self,
        _codec: &SessionCookies,
        _key: &SessionKey,
        _now: u64,
    ) -> Result<Option<Loaded>, StoreError> {
        Ok(None)
    }

    async fn save(
        &self,
        codec: &SessionCookies,
        session: &Session,
        request: &HeaderMap,
        now: u64,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        Ok(codec.write(session, request, now)?)
    }

    /// A new cookie carries the new session; after a refresh the old cookie is retired.
    async fn update(
        &self,
        codec: &SessionCookies,
        key: &SessionKey,
        session: &Session,
        change: Change,
        request: &HeaderMap,
        now: u64,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        let cookies = codec.write(session, request, now)?;
        if change == Change::Refresh {
            self.retire(key, session.expires_at, now);
        }
        Ok(cookies)
    }

    async fn end(&self, key: &SessionKey, expires_at: u64, now: u64) -> Result<(), StoreError> {
        self.retire(key, expires_at, now);
        Ok(())
    }

    async fn first_use(
        &self,
        _codec: &SessionCookies,
        value: &str,
        until: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if used.until.get(value).is_some_and(|&u| u > now) {
            return Ok(false);
        }
        if used.until.len() >= MAX_USED {
            used.until.retain(|_, &mut u| u > now);
            while used.until.len() >= MAX_USED {
                let Some(oldest) = used
                    .until
                    .iter()
                    .min_by_key(|(_, &u)| u)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                used.until.remove(&oldest);
            }
        }
        used.until.insert(value.to_owned(), until);
        Ok(true)
    }

    async fn delete(
        &self,
        codec: &SessionCookies,
        request: &HeaderMap,
        now: u64,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        let candidates = codec.candidates(request);
        let signed_out: Vec<(SessionKey, u64)> = candidates
            .iter()
            .filter_map(|parts| {
                let session = codec.open(parts, now)?;
                Some((SessionKey::of(parts), session.expires_at))
            })
            .collect();
        if !signed_out.is_empty() {
            let mut revoked = self.revoked();
            revoked.sessions.extend(signed_out);
            self.prune(&mut revoked, now);
        }
        Ok(codec.clear(request))
    }

    async fn revoke(
        &self,
        _codec: &SessionCookies,
        revocation: &Revocation,
        now: u64,
    ) -> Result<(), StoreError> {
        let mut revoked = self.revoked();
        revoked.by_claim.push((revocation.clone(), now));
        self.prune(&mut revoked, now);
        Ok(())
    }

    async fn lock_refresh(
        &self,
        key: &SessionKey,
        wait: Duration,
    ) -> Result<RefreshLock, StoreError> {
        self.locks.lock(key, wait).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Claims, CookieSettings};

    const NOW: u64 = 1_700_000_000;

    fn codec() -> SessionCookies {
        SessionCookies::new(
            CookieSettings {
                name: "_portcullis".into(),
                secure: false,
                max_age: Duration::from_secs(3600),
                domain: None,
            },
            &[7; 32],
            &[],
        )
        .unwrap()
    }

    fn session(sub: &str, sid: &str, created_at: u64) -> Session {
        let claims = serde_json::json!({"sub": sub, "sid": sid});
        Session {
            claims: Claims::new(claims.as_object().unwrap()).unwrap(),
            id_token: None,
            access_token: None,
            refresh_token: None,
            created_at,
            expires_at: created_at + 3600,
            seen_at: created_at,
            access_expires_at: None,
        }
    }

    /// The request headers a browser sends after receiving `set_cookies`.
    fn presented(set_cookies: &[HeaderValue]) -> HeaderMap {
        let pairs: Vec<String> = set_cookies
            .iter()
            .map(|v| {
                let c = cookie::Cookie::parse(v.to_str().unwrap().to_string()).unwrap();
                format!("{}={}", c.name(), c.value())
            })
            .collect();
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            HeaderValue::try_from(pairs.join("; ")).unwrap(),
        );
        headers
    }

    async fn load(
        store: &CookieStore,
        codec: &SessionCookies,
        headers: &HeaderMap,
        now: u64,
    ) -> Option<Session> {
        let candidates = codec.candidates(headers);
        let parts = candidates.iter().next()?;
        store
            .load(codec, parts, now)
            .await
            .unwrap()
            .map(|l| l.session)
    }

    #[tokio::test]
    async fn revocations_by_sid_sub_and_sign_out_end_exactly_their_sessions() {
        let codec = codec();
        let store = CookieStore::new(Duration::from_secs(3600));
        let save = |s: Session| {
            let codec = &codec;
            let store = &store;
            async move { presented(&store.save(codec, &s, &HeaderMap::new(), NOW).await.unwrap()) }
        };
        let alice_1 = save(session("alice", "sid-1", NOW - 10)).await;
        let alice_2 = save(session("alice", "sid-2", NOW - 5)).await;
        let bob = save(session("bob", "sid-3", NOW - 5)).await;
        for h in [&alice_1, &alice_2, &bob] {
            assert!(load(&store, &codec, h, NOW).await.is_some());
        }
        store
            .revoke(&codec, &Revocation::Sid("sid-1".into()), NOW)
            .await
            .unwrap();
        assert!(load(&store, &codec, &alice_1, NOW).await.is_none());
        assert!(load(&store, &codec, &alice_2, NOW).await.is_some());
        store
            .revoke(&codec, &Revocation::Sub("alice".into()), NOW)
            .await
            .unwrap();
        assert!(load(&store, &codec, &alice_2, NOW).await.is_none());
        assert!(load(&store, &codec, &bob, NOW).await.is_some());
        // A session made after the revocation is not covered by it.
        let later = save(session("alice", "sid-4", NOW + 1)).await;
        assert!(load(&store, &codec, &later, NOW + 1).await.is_some());
        // Sign-out: that exact cookie is refused from now on, the same user's others are not.
        let cleared = store.delete(&codec, &bob, NOW).await.unwrap();
        assert!(!cleared.is_empty());
        assert!(load(&store, &codec, &bob, NOW).await.is_none());
        // Revocations are forgotten once what they cover has expired anyway.
        store
            .revoke(&codec, &Revocation::Sid("x".into()), NOW + 7200)
            .await
            .unwrap();
        assert_eq!(store.revoked().by_claim.len(), 1);
        assert!(store.revoked().sessions.is_empty());
    }
}

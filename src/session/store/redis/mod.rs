//! The Redis store: sessions shared by every replica that has the same secret and the same Redis.
//!
//! The browser's cookie carries only a random 256-bit id (base64url). Redis keeps the session sealed
//! (AEAD, the `stored` keys of the secret) under a name derived from the id by a keyed hash, so
//! neither a dump of Redis nor one of its key names is a usable cookie, and no claim or token can be
//! read there. Everything else Redis holds is named the same way: the sessions of a `sid` or a `sub`
//! (sets of session names, for back-channel logout), refresh locks, one-time values (`jti`s).
//!
//! | key | value |
//! | --- | --- |
//! | `portcullis:s:<name>` | the sealed session; TTL = what is left of its lifetime, at most `idle_timeout` |
//! | `portcullis:i:<tag of sid>`, `portcullis:u:<tag of sub>` | set of session names |
//! | `portcullis:l:<name>` | refresh lock: a random token, with a TTL |
//! | `portcullis:o:<tag of value>` | a one-time value seen (TTL: until it may be forgotten) |
//!
//! Each replica keeps opened sessions in its cache (no Redis call for a cached session) and hears of
//! every change through pub/sub on [`CHANNEL`]: a session ended, revoked or refreshed is dropped
//! from every replica's cache within the message's delivery. While the subscription is down the
//! cache is emptied and bypassed (every request asks Redis), so nothing changed elsewhere can be
//! served from it; it is used again once the subscription is back.
//!
//! With `previous_secrets`, an id is looked up under every secret's name in one pipelined round
//! trip, so sessions stored before a rotation still open.

mod conn;
mod subscriber;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue};

use super::locks::LocalLocks;
use super::{Change, Loaded, RefreshLock, Revocation, SessionKey, SessionStore, StoreError};
use crate::config::RedisConfig;
use crate::session::cache::SessionCache;
use crate::session::{Authenticated, Session, SessionCookies};

use conn::Redis;

/// Where replicas tell each other which session names changed (the payload: one 32-byte name).
pub const CHANNEL: &str = "portcullis:invalidate";

const SESSION: &str = "portcullis:s:";
const BY_SID: &str = "portcullis:i:";
const BY_SUB: &str = "portcullis:u:";
const LOCK: &str = "portcullis:l:";
const ONCE: &str = "portcullis:o:";

/// Releases a lock only if it is still ours (its token), atomically.
const RELEASE: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

pub struct RedisStore {
    redis: Arc<Redis>,
    cache: Arc<SessionCache<Authenticated>>,
    locks: LocalLocks,
    /// Seconds; 0: no idle timeout.
    idle: AtomicU64,
}

impl RedisStore {
    /// Connects lazily (the gateway starts while Redis is down) and starts the subscription that
    /// keeps `cache` in step with the other replicas. Needs a tokio runtime.
    pub fn new(
        config: &RedisConfig,
        cache: Arc<SessionCache<Authenticated>>,
        idle: Option<Duration>,
    ) -> Result<RedisStore, String> {
        let redis = Arc::new(Redis::new(config)?);
        // Until the subscription is up, nothing is served from the cache.
        cache.set_enabled(false);
        subscriber::spawn(redis.clone(), Arc::downgrade(&cache));
        Ok(RedisStore {
            redis,
            cache,
            locks: LocalLocks::default(),
            idle: AtomicU64::new(idle.map_or(0, |d| d.as_secs())),
        })
    }

    /// A new configuration's idle timeout.
    pub fn note_idle(&self, idle: Option<Duration>) {
        self.idle
            .store(idle.map_or(0, |d| d.as_secs()), Ordering::Relaxed);
    }

    /// How long Redis keeps `session` from `now`: what is left of its lifetime, at most the idle
    /// timeout; in milliseconds, at least one.
    fn ttl_ms(&self, session: &Session, now: u64) -> u64 {
        let left = session.expires_at.saturating_sub(now);
        let idle = self.idle.load(Ordering::Relaxed);
        let secs = if idle > 0 { left.min(idle) } else { left };
        secs.saturating_mul(1000).max(1)
    }

    /// The id the request's session cookie carries: one cookie of 43 base64url characters.
    fn presented_ids(codec: &SessionCookies, request: &HeaderMap) -> Vec<[u8; 32]> {
        let candidates = codec.candidates(request);
        candidates.iter().filter_map(id_of).collect()
    }
}

fn id_of(parts: &[&[u8]]) -> Option<[u8; 32]> {
    let [value] = parts else {
        return None;
    };
    if value.len() != 43 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
    bytes.try_into().ok()
}

fn text(name: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(name)
}

fn session_key(name: &[u8]) -> String {
    format!("{SESSION}{}", text(name))
}

/// The names `id` may be stored under, one per secret, current first.
fn names_of(codec: &SessionCookies, id: &[u8; 32]) -> Vec<[u8; 32]> {
    codec.store_names(&[b"id", id])
}

/// Index keys of a session's `sid` and `sub` under the current secret.
fn index_keys(codec: &SessionCookies, session: &Session) -> Vec<String> {
    let mut keys = Vec::with_capacity(2);
    if let Some(sid) = session.claims.get("sid").and_then(|s| s.as_str()) {
        if let Some(tag) = codec.store_names(&[b"sid", sid.as_bytes()]).first() {
            keys.push(format!("{BY_SID}{}", text(tag)));
        }
    }
    if let Some(sub) = session.sub() {
        if let Some(tag) = codec.store_names(&[b"sub", sub.as_bytes()]).first() {
            keys.push(format!("{BY_SUB}{}", text(tag)));
        }
    }
    keys
}

impl RedisStore {
    /// The first of `names` Redis holds a session under that opens.
    async fn fetch(
        &self,
        codec: &SessionCookies,
        names: &[[u8; 32]],
        now: u64,
    ) -> Result<Option<Loaded>, StoreError> {
        let mut cmds = Vec::with_capacity(names.len() * 2);
        for name in names {
            let key = session_key(name);
            cmds.push(redis::Cmd::get(&key));
            cmds.push(redis::Cmd::pttl(&key));
        }
        let found = self.redis.batch("reading a session", cmds).await?;
        for (name, pair) in names.iter().zip(found.chunks(2)) {
            let [value, ttl] = pair else { continue };
            let sealed: Option<Vec<u8>> = redis::from_redis_value_ref(value).unwrap_or(None);
            let Some(sealed) = sealed else { continue };
            let Some(session) = codec.open_stored(name, &sealed, now) else {
                continue;
            };
            let ttl_ms: i64 = redis::from_redis_value_ref(ttl).unwrap_or(-1);
            let valid_until = if ttl_ms >= 0 {
                now.saturating_add(u64::try_from(ttl_ms).unwrap_or(0) / 1000)
            } else {
                session.expires_at
            };
            return Ok(Some(Loaded {
                valid_until: valid_until.min(session.expires_at),
                session,
                key: SessionKey(*name),
            }));
        }
        Ok(None)
    }

    /// Delete the sessions named `names` and tell every replica.
    async fn remove(&self, names: &[[u8; 32]]) -> Result<(), StoreError> {
        if names.is_empty() {
            return Ok(());
        }
        let mut cmds = Vec::with_capacity(names.len() * 2);
        for name in names {
            cmds.push(redis::Cmd::del(session_key(name)));
            cmds.push(redis::Cmd::publish(CHANNEL, name.as_slice()));
        }
        self.redis.batch("ending a session", cmds).await.map(drop)
    }
}

impl SessionStore for RedisStore {
    async fn load(
        &self,
        codec: &SessionCookies,
        parts: &[&[u8]],
        now: u64,
    ) -> Result<Option<Loaded>, StoreError> {
        let Some(id) = id_of(parts) else {
            return Ok(None);
        };
        self.fetch(codec, &names_of(codec, &id), now).await
    }

    async fn reload(
        &self,
        codec: &SessionCookies,
        key: &SessionKey,
        now: u64,
    ) -> Result<Option<Loaded>, StoreError> {
        self.fetch(codec, std::slice::from_ref(&key.0), now).await
    }

    async fn save(
        &self,
        codec: &SessionCookies,
        session: &Session,
        request: &HeaderMap,
        now: u64,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        let mut id = [0u8; 32];
        aws_lc_rs::rand::fill(&mut id)
            .map_err(|_| StoreError::Unavailable("the random generator failed".into()))?;
        let name = names_of(codec, &id)[0];
        let key = session_key(&name);
        let sealed = codec.seal_stored(&name, session)?;
        let ttl = self.ttl_ms(session, now);
        let lifetime_ms = session
            .expires_at
            .saturating_sub(now)
            .saturating_mul(1000)
            .max(1);
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(sealed).arg("PX").arg(ttl);
        let mut cmds = vec![set];
        for index in index_keys(codec, session) {
            cmds.push(redis::Cmd::sadd(&index, text(&name)));
            cmds.push(redis::Cmd::pexpire(&index, lifetime_ms as i64));
        }
        self.redis.batch("storing a session", cmds).await?;
        Ok(codec.write_id(&text(&id), session.expires_at, request, now))
    }

    async fn update(
        &self,
        codec: &SessionCookies,
        key: &SessionKey,
        session: &Session,
        change: Change,
        _request: &HeaderMap,
        now: u64,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        let name = key.0;
        let sealed = codec.seal_stored(&name, session)?;
        let ttl = self.ttl_ms(session, now);
        let redis_key = session_key(&name);
        // XX: a session ended meanwhile (signed out, revoked) is not brought back.
        let mut set = redis::cmd("SET");
        set.arg(&redis_key).arg(sealed).arg("PX").arg(ttl).arg("XX");
        let mut cmds = vec![set];
        if change == Change::Refresh {
            cmds.push(redis::Cmd::publish(CHANNEL, name.as_slice()));
        }
        let replies = self.redis.batch("updating a session", cmds).await?;
        if matches!(replies.first(), None | Some(redis::Value::Nil)) {
            return Err(StoreError::Gone);
        }
        Ok(Vec::new())
    }

    async fn delete(
        &self,
        codec: &SessionCookies,
        request: &HeaderMap,
        _now: u64,
    ) -> Result<Vec<HeaderValue>, StoreError> {
        let names: Vec<[u8; 32]> = Self::presented_ids(codec, request)
            .iter()
            .flat_map(|id| names_of(codec, id))
            .collect();
        self.remove(&names).await?;
        Ok(codec.clear(request))
    }

    async fn end(&self, key: &SessionKey, _expires_at: u64, _now: u64) -> Result<(), StoreError> {
        self.remove(std::slice::from_ref(&key.0)).await
    }

    async fn revoke(
        &self,
        codec: &SessionCookies,
        revocation: &Revocation,
        _now: u64,
    ) -> Result<(), StoreError> {
        let (prefix, label, value) = match revocation {
            Revocation::Sid(sid) => (BY_SID, &b"sid"[..], sid.as_bytes()),
            Revocation::Sub(sub) => (BY_SUB, &b"sub"[..], sub.as_bytes()),
        };
        // The index under every secret: sessions stored before a rotation are listed under the
        // secret of their day.
        let indexes: Vec<String> = codec
            .store_names(&[label, value])
            .iter()
            .map(|tag| format!("{prefix}{}", text(tag)))
            .collect();
        let replies = self
            .redis
            .batch(
                "reading a logout index",
                indexes.iter().map(redis::Cmd::smembers).collect(),
            )
            .await?;
        let names: Vec<[u8; 32]> = replies
            .iter()
            .filter_map(|r| redis::from_redis_value_ref::<Vec<String>>(r).ok())
            .flatten()
            .filter_map(|m| URL_SAFE_NO_PAD.decode(m).ok()?.try_into().ok())
            .collect();
        self.remove(&names).await?;
        self.redis
            .batch(
                "clearing a logout index",
                indexes.iter().map(redis::Cmd::del).collect(),
            )
            .await
            .map(drop)
    }

    async fn first_use(
        &self,
        codec: &SessionCookies,
        value: &str,
        until: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let tag = codec.store_names(&[b"once", value.as_bytes()])[0];
        let key = format!("{ONCE}{}", text(&tag));
        let ttl_ms = until.saturating_sub(now).saturating_mul(1000).max(1000);
        let set: Option<String> = self
            .redis
            .run("recording a one-time value", |mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(set.is_some())
    }

    async fn lock_refresh(
        &self,
        key: &SessionKey,
        wait: Duration,
    ) -> Result<RefreshLock, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        // One waiter per replica asks Redis; the others wait here.
        let local = self.locks.lock(key, wait).await?;
        let lock_key = format!("{LOCK}{}", text(&key.0));
        let mut token = [0u8; 16];
        aws_lc_rs::rand::fill(&mut token)
            .map_err(|_| StoreError::Unavailable("the random generator failed".into()))?;
        let token = text(&token);
        // A holder that dies leaves a lock that expires on its own.
        let hold_ms = (wait + Duration::from_secs(5)).as_millis() as u64;
        loop {
            let lock_key2 = lock_key.clone();
            let token2 = token.clone();
            let got: Option<String> = self
                .redis
                .run("taking a refresh lock", |mut c| async move {
                    redis::cmd("SET")
                        .arg(&lock_key2)
                        .arg(&token2)
                        .arg("NX")
                        .arg("PX")
                        .arg(hold_ms)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            if got.is_some() {
                return Ok(RefreshLock::with_remote(
                    local,
                    RemoteLock {
                        redis: self.redis.clone(),
                        key: lock_key,
                        token,
                    },
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::LockTimeout);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl RedisStore {
    /// The cache this store keeps in step with the other replicas.
    pub fn cache(&self) -> &Arc<SessionCache<Authenticated>> {
        &self.cache
    }
}

/// A refresh lock held in Redis; released (if still ours) when dropped.
pub struct RemoteLock {
    redis: Arc<Redis>,
    key: String,
    token: String,
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        let redis = self.redis.clone();
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        // Dropped inside a request task: the release goes on without holding it up.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let released = redis
                    .run("releasing a refresh lock", |mut c| async move {
                        redis::Script::new(RELEASE)
                            .key(&key)
                            .arg(&token)
                            .invoke_async::<i64>(&mut c)
                            .await
                    })
                    .await;
                if let Err(e) = released {
                    // It expires on its own.
                    tracing::debug!("{e}");
                }
            });
        }
    }
}

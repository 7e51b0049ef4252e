//! A cache of opened sessions, so the hot path does not base64-decode, decrypt and parse the same cookie
//! on every request of a signed-in user.
//!
//! Keyed by the exact cookie bytes the browser sent (a session value is an AEAD ciphertext, so equal
//! bytes mean the same, already authenticated session). The lookup hashes only the value's length and
//! its last bytes, which hold the GCM tag and so differ between any two cookies; a hit then compares the
//! whole value in constant time. That hash is randomly keyed per process, so a client cannot aim
//! at another user's entry. Expiry is checked on every hit, exactly as on a fresh decode. The cache is
//! split into shards behind their own small locks, so no lock is shared by all requests, and each shard
//! is bounded.
//!
//! Revocation: [`SessionCache::invalidate`] drops every entry a predicate selects (a signed-out
//! session, every session of a `sid` or `sub`), so a revoked session is never served from here. A
//! request that opened its session before the revocation and inserts it after must not bring it
//! back: every invalidation advances an epoch first, and an insert made under an older epoch than the
//! current one is dropped (the check and the insert happen under the shard's lock, and invalidation
//! takes every shard's lock after advancing the epoch). Entries also carry the generation of the
//! configuration they were built under (their identity headers depend on it), and a hit needs the
//! caller's generation.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Entries per shard; the cache holds at most `SHARDS * SHARD_CAPACITY` sessions.
const SHARD_CAPACITY: usize = 512;
const SHARDS: usize = 16;
/// Sessions whose cookies are larger than this are not cached (they would crowd out the rest).
pub const MAX_CACHED_BYTES: usize = 16 * 1024;
/// How many trailing bytes of the value go into the hash: more than the 22 base64 characters of the tag.
const TAIL: usize = 32;

struct Entry<T> {
    raw: Box<[u8]>,
    expires_at: u64,
    generation: u64,
    value: Arc<T>,
}

type Shard<T> = Mutex<HashMap<u64, Entry<T>, BuildHasherDefault<KeyHasher>>>;

/// The maps' keys are already keyed hashes (see [`SessionCache::key`]), so they are used as they are
/// rather than hashed a second time.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed; this keeps any other use well defined.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub struct SessionCache<T> {
    hasher: std::collections::hash_map::RandomState,
    shards: Box<[Shard<T>]>,
    /// Advanced by every invalidation; see the module header.
    epoch: AtomicU64,
    /// Off while a shared store cannot tell this replica of changes: nothing is served or kept.
    enabled: std::sync::atomic::AtomicBool,
}

impl<T> Default for SessionCache<T> {
    fn default() -> Self {
        SessionCache {
            hasher: std::collections::hash_map::RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            epoch: AtomicU64::new(0),
            enabled: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

impl<T> SessionCache<T> {
    /// The hash of a cookie value given as consecutive parts (chunks).
    fn key(&self, parts: &[&[u8]]) -> u64 {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut h = self.hasher.build_hasher();
        h.write_usize(total);
        if let Some(last) = parts.last() {
            h.write(&last[last.len().saturating_sub(TAIL)..]);
        }
        h.finish()
    }

    fn shard(&self, key: u64) -> &Shard<T> {
        // The map takes its bucket from the low bits and its control byte from the top seven: the
        // shard comes from bits in between.
        &self.shards[(key >> 32) as usize % SHARDS]
    }

    /// The cached value for exactly these bytes, if it has not expired and was built under
    /// configuration `generation`.
    pub fn get(&self, parts: &[&[u8]], now: u64, generation: u64) -> Option<Arc<T>> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        let key = self.key(parts);
        let shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        let entry = shard.get(&key)?;
        if now >= entry.expires_at
            || entry.generation != generation
            || !same_bytes(&entry.raw, parts)
        {
            return None;
        }
        Some(entry.value.clone())
    }

    /// The current epoch: read it before opening a session, give it to [`SessionCache::insert`].
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Remember `value` for these bytes until `expires_at`, unless an invalidation happened since
    /// `epoch` was read (the value may be one it revoked).
    pub fn insert(
        &self,
        parts: &[&[u8]],
        expires_at: u64,
        generation: u64,
        epoch: u64,
        value: Arc<T>,
    ) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total > MAX_CACHED_BYTES {
            return;
        }
        let key = self.key(parts);
        let raw: Box<[u8]> = parts.concat().into_boxed_slice();
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        if self.epoch.load(Ordering::SeqCst) != epoch || !self.enabled.load(Ordering::Acquire) {
            return;
        }
        if shard.len() >= SHARD_CAPACITY && !shard.contains_key(&key) {
            // Bounded: drop an arbitrary entry (the map's order follows the keys, which are keyed
            // hashes, random per process).
            if let Some(victim) = shard.keys().next().copied() {
                shard.remove(&victim);
            }
        }
        shard.insert(
            key,
            Entry {
                raw,
                expires_at,
                generation,
                value,
            },
        );
    }

    /// Serve and keep entries (`true`), or neither (`false`: everything held is dropped too). Turned
    /// on only after dropping what it held, so nothing kept while off can come back.
    pub fn set_enabled(&self, enabled: bool) {
        if enabled {
            self.invalidate(|_, _| true);
            self.enabled.store(true, Ordering::Release);
        } else {
            self.enabled.store(false, Ordering::Release);
            self.invalidate(|_, _| true);
        }
    }

    /// Whether entries are served.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// Drop every entry `revoked` selects (given the cookie bytes and the value), and make inserts
    /// of values opened before this call fail.
    pub fn invalidate(&self, revoked: impl Fn(&[u8], &T) -> bool) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for shard in self.shards.iter() {
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, entry| !revoked(&entry.raw, &entry.value));
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// Whether `raw` equals the concatenation of `parts`, compared in constant time for equal lengths
/// (AWS-LC's word-wise `CRYPTO_memcmp`: as fast as a memcmp, and no early exit).
fn same_bytes(raw: &[u8], parts: &[&[u8]]) -> bool {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if total != raw.len() {
        return false;
    }
    let mut equal = true;
    let mut rest = raw;
    for part in parts {
        let (head, tail) = rest.split_at(part.len());
        // Every part is compared, whatever the earlier ones gave.
        equal &= aws_lc_rs::constant_time::verify_slices_are_equal(head, part).is_ok();
        rest = tail;
    }
    equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_need_the_exact_bytes_and_an_unexpired_session() {
        let cache = SessionCache::default();
        let value = b"AAAAvalue-with-a-unique-tag-0123456789abcdef".as_slice();
        cache.insert(&[value], 100, 7, cache.epoch(), Arc::new("alice"));
        assert_eq!(cache.get(&[value], 99, 7).as_deref(), Some(&"alice"));
        assert_eq!(cache.get(&[value], 100, 7), None, "expired");
        assert_eq!(cache.get(&[value], 99, 8), None, "another configuration");
        // Same tail and length, different body: the full comparison refuses it.
        let mut forged = value.to_vec();
        forged[0] = b'B';
        assert_eq!(cache.get(&[&forged], 50, 7), None);
        // Chunks are the concatenation.
        let (a, b) = value.split_at(10);
        assert_eq!(cache.get(&[a, b], 50, 7).as_deref(), Some(&"alice"));
        assert_eq!(cache.get(&[b, a], 50, 7), None);
    }

    #[test]
    fn invalidation_drops_selected_entries_and_refuses_inserts_opened_before_it() {
        let cache = SessionCache::default();
        let (alice, bob) = (
            b"alice-cookie-0123456789".as_slice(),
            b"bob-cookie-abcdefghijklm".as_slice(),
        );
        cache.insert(&[alice], 100, 0, cache.epoch(), Arc::new("alice"));
        cache.insert(&[bob], 100, 0, cache.epoch(), Arc::new("bob"));
        cache.invalidate(|_, v| *v == "alice");
        assert_eq!(cache.get(&[alice], 1, 0), None);
        assert_eq!(cache.get(&[bob], 1, 0).as_deref(), Some(&"bob"));
        // Opened before an invalidation, inserted after it: not cached.
        let before = cache.epoch();
        cache.invalidate(|raw, _| raw == alice);
        cache.insert(&[alice], 100, 0, before, Arc::new("alice"));
        assert_eq!(cache.get(&[alice], 1, 0), None);
        cache.insert(&[alice], 100, 0, cache.epoch(), Arc::new("alice"));
        assert_eq!(cache.get(&[alice], 1, 0).as_deref(), Some(&"alice"));
    }

    #[test]
    fn the_cache_is_bounded_and_skips_huge_values() {
        let cache = SessionCache::default();
        for i in 0..(SHARDS * SHARD_CAPACITY * 2) {
            let v = format!("value-{i:08}-tail-{i:032}");
            cache.insert(&[v.as_bytes()], u64::MAX, 0, 0, Arc::new(i));
        }
        assert!(cache.len() <= SHARDS * SHARD_CAPACITY);
        let huge = vec![b'x'; MAX_CACHED_BYTES + 1];
        cache.insert(&[&huge], u64::MAX, 0, 0, Arc::new(0));
        assert!(cache.get(&[&huge], 0, 0).is_none());
    }
}

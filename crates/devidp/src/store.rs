//! In-memory state with a bound: every map expires its entries and holds at most `cap` of them,
//! so a demo left running for days, or a test that loops, cannot grow memory without limit.
//! Also the provider's clock, which tests can move forward instead of sleeping.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A map from random string keys to values with an expiry time (Unix seconds) each.
///
/// Eviction is first-in first-out: when full, the oldest insert goes. Expired entries are never
/// returned, whatever their position.
pub(crate) struct Bounded<V> {
    map: HashMap<String, (u64, V)>,
    order: VecDeque<String>,
    cap: usize,
}

impl<V> Bounded<V> {
    pub(crate) fn new(cap: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Inserts (or replaces) `key`, valid until `expires_at`.
    pub(crate) fn insert(&mut self, now: u64, key: String, expires_at: u64, value: V) {
        self.purge(now);
        while self.map.len() >= self.cap || self.order.len() >= self.cap.saturating_mul(2) {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        self.order.push_back(key.clone());
        self.map.insert(key, (expires_at, value));
    }

    /// The live entry for `key`.
    pub(crate) fn get_mut(&mut self, now: u64, key: &str) -> Option<&mut V> {
        match self.map.get_mut(key) {
            Some((expires_at, value)) if *expires_at > now => Some(value),
            _ => None,
        }
    }

    /// The live entry for `key` with its expiry.
    pub(crate) fn get_with_expiry(&self, now: u64, key: &str) -> Option<(u64, &V)> {
        match self.map.get(key) {
            Some((expires_at, value)) if *expires_at > now => Some((*expires_at, value)),
            _ => None,
        }
    }

    /// Whether a live entry exists for `key`.
    pub(crate) fn contains(&mut self, now: u64, key: &str) -> bool {
        self.get_mut(now, key).is_some()
    }

    /// Removes and returns the live entry for `key`.
    pub(crate) fn remove(&mut self, now: u64, key: &str) -> Option<V> {
        match self.map.remove(key) {
            Some((expires_at, value)) if expires_at > now => Some(value),
            _ => None,
        }
    }

    /// Drops every entry `keep` refuses (the insertion order forgets them lazily).
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) {
        self.map.retain(|_, (_, value)| keep(value));
    }

    /// Drops expired entries at the front of the insertion order (entries of one map mostly
    /// share a lifetime, so the front is where they expire first).
    fn purge(&mut self, now: u64) {
        while let Some(front) = self.order.front() {
            match self.map.get(front) {
                Some((expires_at, _)) if *expires_at > now => break,
                _ => {
                    if let Some(key) = self.order.pop_front() {
                        self.map.remove(&key);
                    }
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Wall-clock seconds plus an offset that only tests move, to expire codes without sleeping.
#[derive(Default)]
pub(crate) struct Clock {
    offset: AtomicU64,
}

impl Clock {
    pub(crate) fn now(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        wall.saturating_add(self.offset.load(Ordering::Relaxed))
    }

    #[cfg(test)]
    pub(crate) fn advance(&self, secs: u64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_caps() {
        let mut m = Bounded::new(3);
        m.insert(100, "a".into(), 110, 1);
        assert_eq!(m.get_mut(109, "a").copied(), Some(1));
        assert_eq!(m.get_mut(110, "a"), None);
        for (i, k) in ["b", "c", "d", "e"].iter().enumerate() {
            m.insert(100, (*k).into(), 200, i);
        }
        assert_eq!(m.len(), 3);
        assert!(!m.contains(100, "a") && !m.contains(100, "b"));
        assert!(m.contains(100, "e"));
        assert_eq!(m.remove(100, "e"), Some(3));
        assert_eq!(m.remove(100, "e"), None);
        // Many inserts and removes keep both structures bounded.
        for i in 0..1000 {
            let k = format!("k{i}");
            m.insert(100, k.clone(), 200, i);
            m.remove(100, &k);
        }
        assert!(m.order.len() <= 6 && m.len() <= 3);
        // Expired entries are purged on insert.
        m.insert(300, "z".into(), 400, 0);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn clock_moves_forward() {
        let c = Clock::default();
        let before = c.now();
        c.advance(61);
        assert!(c.now() >= before + 61);
    }
}

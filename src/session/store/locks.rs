//! Refresh locks within one process: one async mutex per session key, created on demand and
//! forgotten when nobody holds or waits for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

use super::{SessionKey, StoreError};

/// Held while one caller refreshes a session; dropping it lets the next waiter in.
pub struct RefreshLock {
    /// The lock in a shared store, across replicas (declared first: dropped, so released, first).
    _remote: Option<super::redis::RemoteLock>,
    _guard: OwnedMutexGuard<()>,
}

impl RefreshLock {
    /// The local lock plus one held in a shared store.
    pub(super) fn with_remote(local: RefreshLock, remote: super::redis::RemoteLock) -> RefreshLock {
        RefreshLock {
            _guard: local._guard,
            _remote: Some(remote),
        }
    }
}

/// The per-key mutexes of one process.
#[derive(Default)]
pub(super) struct LocalLocks {
    locks: Mutex<HashMap<SessionKey, Weak<tokio::sync::Mutex<()>>>>,
}

impl LocalLocks {
    pub(super) async fn lock(
        &self,
        key: &SessionKey,
        wait: Duration,
    ) -> Result<RefreshLock, StoreError> {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            match locks.get(key).and_then(Weak::upgrade) {
                Some(mutex) => mutex,
                None => {
                    // Keys nobody holds any more go as new ones come: the map stays as large as
                    // the number of refreshes in progress.
                    locks.retain(|_, weak| weak.strong_count() > 0);
                    let mutex = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(key.clone(), Arc::downgrade(&mutex));
                    mutex
                }
            }
        };
        match tokio::time::timeout(wait, mutex.lock_owned()).await {
            Ok(guard) => Ok(RefreshLock {
                _guard: guard,
                _remote: None,
            }),
            Err(_) => Err(StoreError::LockTimeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_others_wait_bounded() {
        let locks = LocalLocks::default();
        let a = SessionKey([1; 32]);
        let b = SessionKey([2; 32]);
        let held = locks.lock(&a, Duration::from_secs(1)).await.unwrap();
        // Another key is free.
        let other = locks.lock(&b, Duration::from_millis(10)).await.unwrap();
        drop(other);
        // The same key waits, and gives up after the wait.
        assert!(matches!(
            locks.lock(&a, Duration::from_millis(20)).await,
            Err(StoreError::LockTimeout)
        ));
        drop(held);
        locks.lock(&a, Duration::from_millis(10)).await.unwrap();
    }
}

//! The subscription that keeps this replica's cache of opened sessions in step with the others.
//!
//! Every message on [`CHANNEL`] names a session that ended or changed; its cached copies are dropped.
//! The cache is used only while the subscription is known to be alive: it is pinged every
//! [`PING_EVERY`], and a lost connection, a failed ping or a subscription that cannot be made turns
//! the cache off (emptied, bypassed) until a new subscription is confirmed, when it is emptied again
//! and turned back on. So no message missed while disconnected can leave a stale session in it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;

use super::conn::Redis;
use super::CHANNEL;
use crate::session::cache::SessionCache;
use crate::session::Authenticated;

/// How often the subscription is checked.
const PING_EVERY: Duration = Duration::from_millis(500);
/// How long a ping may take before the subscription counts as lost.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Start the subscription task; it ends when the cache is dropped (the gateway stopped).
pub(super) fn spawn(redis: Arc<Redis>, cache: Weak<SessionCache<Authenticated>>) {
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(100);
        let mut was_up = true;
        loop {
            if cache.strong_count() == 0 {
                return;
            }
            match subscribe_and_listen(&redis, &cache).await {
                Listen::Stopped => return,
                Listen::Lost { why, subscribed } => {
                    if let Some(cache) = cache.upgrade() {
                        cache.set_enabled(false);
                    }
                    if subscribed {
                        delay = Duration::from_millis(100);
                    }
                    if was_up {
                        tracing::warn!(
                            "redis: the invalidation subscription is down ({why}); sessions are read from Redis on every request until it is back"
                        );
                        was_up = false;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
            if !was_up && cache.upgrade().is_some_and(|c| c.is_enabled()) {
                tracing::info!("redis: the invalidation subscription is back");
                was_up = true;
            }
        }
    });
}

enum Listen {
    /// The cache is gone: the gateway stopped.
    Stopped,
    /// The subscription could not be made, or was made (`subscribed`) and then lost.
    Lost { why: String, subscribed: bool },
}

fn lost(why: &str) -> Listen {
    Listen::Lost {
        why: why.to_string(),
        subscribed: false,
    }
}

async fn subscribe_and_listen(redis: &Redis, cache: &Weak<SessionCache<Authenticated>>) -> Listen {
    let mut pubsub = match redis.pubsub().await {
        Ok(p) => p,
        Err(e) => return lost(&e.to_string()),
    };
    match tokio::time::timeout(super::conn::TIMEOUT, pubsub.subscribe(CHANNEL)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return lost("SUBSCRIBE refused"),
        Err(_) => return lost("SUBSCRIBE timed out"),
    }
    let (mut sink, mut stream) = pubsub.split();
    match cache.upgrade() {
        // Anything cached before this subscription may have missed a message: start empty.
        Some(cache) => cache.set_enabled(true),
        None => return Listen::Stopped,
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let why = loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => {
                    let Some(cache) = cache.upgrade() else {
                        return Listen::Stopped;
                    };
                    let name = message.get_payload_bytes();
                    if name.len() == 32 {
                        cache.invalidate(|_, auth| auth.key.0.as_slice() == name);
                    } else {
                        tracing::debug!("redis: an invalidation message of another shape was ignored");
                    }
                }
                None => break "the subscription connection closed",
            },
            _ = ping.tick() => {
                if cache.strong_count() == 0 {
                    return Listen::Stopped;
                }
                match tokio::time::timeout(PING_TIMEOUT, sink.ping::<redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => break "a ping failed",
                    Err(_) => break "a ping went unanswered",
                }
            }
        }
    };
    if let Some(cache) = cache.upgrade() {
        cache.set_enabled(false);
    }
    Listen::Lost {
        why: why.to_string(),
        subscribed: true,
    }
}

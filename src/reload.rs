//! `SIGHUP`: read `gateway.toml` again and apply it without a restart.
//!
//! The file (with the environment's overrides and the secret files it names) goes through the same
//! parse-and-validate as at start-up. A configuration that does not validate, or whose snapshot cannot
//! be built, is refused with one log line naming the key, and the running one stays. One that does is
//! swapped in whole (`Runtime::reload`): requests already running finish under the old snapshot, every
//! later request, on any connection, follows the new one; connections, sessions and warm upstream
//! connections are kept. Keys that belong to what lives as long as the process (the listener, the
//! provider's client settings, the session store, logging) keep their running values, and the log
//! names them. The listener's certificate is re-read at the same time (it is also re-read on its own
//! when its files change: `server::tls`).
//!
//! The handler is installed before the gateway serves, so a `SIGHUP` can never stop the process the
//! way the default action would.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config::Config;
use crate::runtime::Runtime;
use crate::server::tls::Certificates;

/// `SIGHUP`s, caught from the moment this exists.
pub struct Hangups(Signal);

impl Hangups {
    /// Catch `SIGHUP` from now on.
    pub fn install() -> Result<Hangups, String> {
        signal(SignalKind::hangup())
            .map(Hangups)
            .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))
    }

    /// On every `SIGHUP`, reload `path` into `rt` (and re-read the listener's certificate); runs until
    /// the process ends.
    pub async fn serve(
        mut self,
        rt: Arc<Runtime>,
        path: PathBuf,
        certs: Option<Arc<Certificates>>,
    ) {
        while self.0.recv().await.is_some() {
            tracing::info!(config = %path.display(), "SIGHUP received: reloading the configuration");
            let (rt, path, certs) = (rt.clone(), path.clone(), certs.clone());
            // Reading files blocks: off the request threads.
            let _ = tokio::task::spawn_blocking(move || {
                reload(&rt, &path);
                if let Some(certs) = certs {
                    certs.refresh();
                }
            })
            .await;
        }
    }
}

/// Read, validate and apply the configuration at `path`; log what happened. Returns whether the new
/// configuration is in force.
pub fn reload(rt: &Runtime, path: &Path) -> bool {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("configuration reload refused, the running configuration stays: {e}");
            return false;
        }
    };
    match rt.reload(config) {
        Ok(restart) => {
            let generation = rt.snapshot().generation;
            tracing::info!(generation, "configuration reloaded");
            if !restart.is_empty() {
                tracing::warn!(
                    "changed keys that take effect only after a restart (their running values stay): {}",
                    restart.join(", ")
                );
            }
            true
        }
        Err(e) => {
            tracing::error!("configuration reload refused, the running configuration stays: {e}");
            false
        }
    }
}

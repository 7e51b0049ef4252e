//! Logging: one `tracing` subscriber for the process, text or JSON, filtered by `log.level`
//! (`RUST_LOG` wins when set, for debugging a live process without editing its configuration).
//!
//! Request logs carry the method, canonical path and status, never header values, query strings (which
//! hold authorization codes and state) or bodies.

pub mod metrics;

use crate::config::{LogConfig, LogFormat};

/// Install the global subscriber. Safe to call more than once: later calls are ignored.
pub fn init(log: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

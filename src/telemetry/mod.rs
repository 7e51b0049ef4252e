//! Logging and metrics: one `tracing` subscriber for the process, text or JSON on stderr, filtered by
//! `log.level` (`RUST_LOG` wins when set, for debugging a live process without editing its
//! configuration); the access log and request ids (`access_log`); the metrics registry (`metrics`).
//!
//! No secret reaches a log line, at any level, `trace` included:
//! - the gateway's own lines carry no header values, query strings (which hold authorization codes
//!   and state) or bodies, and the values that are secrets (tokens, codes, the client secret,
//!   session secrets, cookie contents) live in types whose `Debug` prints `[redacted]`;
//! - the crates below the gateway (hyper, h2, reqwest, rustls, redis...) may describe what they send
//!   and receive at `debug` and `trace`, headers and bodies included. Their events pass at `info` and
//!   above only, whatever `log.level` or `RUST_LOG` ask for ([`allowed`]); `debug` and `trace` are for
//!   the gateway's own targets (`portcullis::*`).

pub mod access_log;
pub mod metrics;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, FilterExt as _, FilterFn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

use crate::config::{LogConfig, LogFormat};

/// Whether an event or span may be logged at all, before the configured filter has its say: any
/// level for the gateway's own targets, `info` and above for everything else.
pub fn allowed(meta: &Metadata<'_>) -> bool {
    *meta.level() <= Level::INFO || is_own(meta.target())
}

fn is_own(target: &str) -> bool {
    target
        .strip_prefix("portcullis")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

/// Install the global subscriber. Safe to call more than once: later calls are ignored.
pub fn init(log: &LogConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&log.level));
    let filter = filter.and(FilterFn::new(allowed));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match log.format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(target: &'static str, level: Level) -> bool {
        // A callsite of its own for each (target, level): `Metadata` needs a 'static one.
        struct Cs;
        impl tracing::callsite::Callsite for Cs {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!()
            }
        }
        static CS: Cs = Cs;
        let fields = tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CS));
        let meta = Metadata::new(
            "event",
            target,
            level,
            None,
            None,
            None,
            fields,
            tracing::metadata::Kind::EVENT,
        );
        allowed(&meta)
    }

    #[test]
    fn dependencies_stop_at_info_and_the_gateway_does_not() {
        for target in [
            "h2::codec",
            "hyper_util::client",
            "reqwest::connect",
            "rustls::client",
            "redis",
            "portcullisx",
        ] {
            assert!(!allows(target, Level::TRACE), "{target}");
            assert!(!allows(target, Level::DEBUG), "{target}");
            assert!(allows(target, Level::INFO), "{target}");
            assert!(allows(target, Level::WARN), "{target}");
            assert!(allows(target, Level::ERROR), "{target}");
        }
        for target in [
            "portcullis",
            "portcullis::access",
            "portcullis::session::store",
        ] {
            assert!(allows(target, Level::TRACE), "{target}");
            assert!(allows(target, Level::DEBUG), "{target}");
        }
    }
}

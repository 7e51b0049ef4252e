//! `portcullis demo`: a self-contained demonstration on loopback, and the servers the tests use.
//!
//! - [`app`]: a small upstream application that shows the request headers it received;
//! - the gateway in front of it, configured from the committed `gateway.toml` (embedded in the binary,
//!   so the demo needs no file and the file stays the reference of what the demo runs).

pub mod app;

use std::collections::BTreeMap;

use anyhow::Context as _;

use crate::config::Config;

/// The committed `gateway.toml`: the demo's configuration.
pub const DEMO_CONFIG: &str = include_str!("../../gateway.toml");

/// Run the demo until SIGINT or SIGTERM.
pub async fn run() -> anyhow::Result<()> {
    let config = Config::from_toml_str(DEMO_CONFIG, &BTreeMap::new())
        .context("embedded demo configuration")?;
    crate::telemetry::init(&config.log);
    let app_addr = config
        .upstream
        .url
        .socket_addrs(|| None)?
        .into_iter()
        .next()
        .context("upstream.url")?;
    let app_listener = tokio::net::TcpListener::bind(app_addr)
        .await
        .with_context(|| format!("demo application: cannot listen on {app_addr}"))?;
    tokio::spawn(app::serve(app_listener));
    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("gateway: cannot listen on {listen}"))?;
    let url = config.server.public_url.clone();
    println!();
    println!("  portcullis demo is running.");
    println!("  Open {url} in a browser (public page: {url}public/).");
    println!("  Press Ctrl-C to stop.");
    println!();
    crate::run(config, listener, crate::shutdown_signal())
        .await
        .map_err(anyhow::Error::msg)
}

//! `portcullis demo`: a self-contained demonstration on loopback, and the servers the tests use.
//!
//! - the development OpenID provider (not for production), the `devidp` crate of this workspace, also
//!   used by the tests (which alone turn on its misbehaviour switches);
//! - [`app`]: a small upstream application that shows the request headers it received;
//! - the gateway in front of it, configured from the committed `gateway.toml` (embedded in the binary,
//!   so the demo needs no file and the file stays the reference of what the demo runs).

pub mod app;

use std::collections::BTreeMap;

use anyhow::Context as _;
use secrecy::ExposeSecret as _;

use crate::config::Config;
use devidp::{
    DevClient, DevClientAuth, DevProvider, DevProviderOptions, Profile, DEMO_PASSWORD, DEMO_USERS,
};

/// The committed `gateway.toml`: the demo's configuration.
pub const DEMO_CONFIG: &str = include_str!("../../gateway.toml");

/// The loopback ports of the demo's three servers; `gateway.toml` uses the defaults.
#[derive(Debug, Clone, Copy)]
pub struct DemoPorts {
    pub gateway: u16,
    pub provider: u16,
    pub app: u16,
}

impl Default for DemoPorts {
    fn default() -> Self {
        DemoPorts {
            gateway: 4180,
            provider: 4181,
            app: 4182,
        }
    }
}

/// The demo configuration with its ports moved to `ports`.
pub fn demo_config_text(ports: DemoPorts) -> String {
    let d = DemoPorts::default();
    DEMO_CONFIG
        .replace(
            &format!("127.0.0.1:{}", d.gateway),
            &format!("127.0.0.1:{}", ports.gateway),
        )
        .replace(
            &format!("localhost:{}", d.gateway),
            &format!("localhost:{}", ports.gateway),
        )
        .replace(
            &format!("127.0.0.1:{}", d.provider),
            &format!("127.0.0.1:{}", ports.provider),
        )
        .replace(
            &format!("127.0.0.1:{}", d.app),
            &format!("127.0.0.1:{}", ports.app),
        )
}

/// Run the demo until SIGINT or SIGTERM. A port of 0 lets the system choose; the printed URLs name
/// the ports actually bound.
pub async fn run(ports: DemoPorts) -> anyhow::Result<()> {
    let bind = |port: u16, what: &'static str| async move {
        tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| {
                format!("{what}: cannot listen on 127.0.0.1:{port} (is another demo running?)")
            })
    };
    let provider_listener = bind(ports.provider, "development provider").await?;
    let app_listener = bind(ports.app, "demo application").await?;
    let gateway_listener = bind(ports.gateway, "gateway").await?;
    let ports = DemoPorts {
        gateway: gateway_listener.local_addr()?.port(),
        provider: provider_listener.local_addr()?.port(),
        app: app_listener.local_addr()?.port(),
    };
    let config = Config::from_toml_str(&demo_config_text(ports), &BTreeMap::new())
        .context("embedded demo configuration")?;
    crate::telemetry::init(&config.log);

    let public_url = config.server.public_url.clone();
    let secret = config
        .oidc
        .client_secret
        .as_ref()
        .map(|s| s.expose_secret().to_string())
        .context("the demo configuration has a client secret")?;
    let provider = DevProvider::start(
        provider_listener,
        DevProviderOptions {
            clients: vec![DevClient {
                client_id: config.oidc.client_id.clone(),
                auth: DevClientAuth::SecretBasic(secret),
                redirect_uris: vec![
                    crate::login::redirect_uri(&public_url, &config.server.prefix).to_string(),
                ],
            }],
            profile: Profile::Standard,
            issue_refresh_token: false,
            ..Default::default()
        },
    )
    .await
    .context("development provider")?;
    tokio::spawn(app::serve(app_listener));

    let users: Vec<&str> = DEMO_USERS.iter().map(|u| u.username).collect();
    println!();
    println!("  portcullis demo is running (the development provider is NOT for production).");
    println!("  Open {public_url} in a browser.");
    println!(
        "  Sign in as {} with the password \"{DEMO_PASSWORD}\".",
        users.join(", ")
    );
    println!(
        "  Provider: {}   App: http://127.0.0.1:{}",
        provider.issuer(),
        ports.app
    );
    println!("  Press Ctrl-C to stop.");
    println!();
    let result = crate::run(config, gateway_listener, crate::shutdown_signal()).await;
    provider.shutdown().await;
    result.map_err(anyhow::Error::msg)
}

//! The whole login in a real browser: headless Chromium (Debian's `chromium`) driven by playwright-core
//! from tests/e2e/browser-login.mjs, through the gateway in front of the demo app, against the
//! development provider (both profiles) and oidc-provider. The script opens a protected page, signs in
//! on the provider's page, checks the identity the app shows, reloads, signs out, and runs two tabs'
//! logins at once. The same flow runs through nginx with `deploy/nginx/nginx.conf` in front, the
//! gateway as its forward-auth endpoint. Screenshots land in target/e2e-screenshots/.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use devidp::{DevClient, DevClientAuth, DevProvider, DevProviderOptions, Profile, DEMO_PASSWORD};
use tokio::net::TcpListener;

use crate::browser::{logs, test_provider, wait_ready, AWKWARD_SECRET, CLIENT_ID};
use crate::node::{NodeProcess, OidcProvider, OpClient};
use crate::support::*;

const CHROMIUM: &str = "/usr/bin/chromium";

pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e-screenshots")
}

/// The gateway in front of the demo app, with these `[oidc]` lines, on `listener`.
async fn gateway(listener: TcpListener, base: &str, oidc: &str) -> portcullis::RunningGateway {
    let app = portcullis::demo::app::spawn().await.unwrap();
    let toml = login_gateway_toml(base, &format!("http://{app}"), oidc, "");
    let gateway = portcullis::spawn(config(&toml), listener).unwrap();
    wait_ready(base).await;
    gateway
}

/// Run the browser script as `name` against the gateway at `base`; fail with its output (and `extra`,
/// the provider's) unless every step passed; check both screenshots were written.
async fn run_browser(name: &str, base: &str, extra: impl Fn() -> String) {
    run_browser_with(name, base, serde_json::json!({}), extra).await;
}

/// [`run_browser`] with more options for the script (`hosts`, `caCertificateErrors`).
async fn run_browser_with(
    name: &str,
    base: &str,
    more: serde_json::Value,
    extra: impl Fn() -> String,
) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the browser suite needs Debian's chromium package (scripts/test.sh installs it)"
    );
    let dir = screenshot_dir();
    let started = SystemTime::now() - Duration::from_secs(1);
    let mut options = serde_json::json!({
        "name": name,
        "base": base,
        "path": "/reports/q3?year=2026&x=%2Fy",
        "username": "alice",
        "password": DEMO_PASSWORD,
        "email": "alice@example.com",
        "groups": "admins,staff",
        "chromium": CHROMIUM,
        "screenshots": dir,
    });
    if let (Some(options), Some(more)) = (options.as_object_mut(), more.as_object()) {
        options.extend(more.clone());
    }
    let script = NodeProcess::spawn("browser-login.mjs", &[options.to_string()]);
    let (status, stdout, stderr) = script.finish(Duration::from_secs(180)).await;
    assert!(
        status.success() && stdout.contains("all steps passed"),
        "browser login {name}: {status}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n{}",
        extra()
    );
    for suffix in ["login", "signed-in"] {
        let path = dir.join(format!("{name}-{suffix}.png"));
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(meta.len() > 1000, "{} is empty", path.display());
        assert!(
            meta.modified().unwrap() >= started,
            "{} is from an earlier run",
            path.display()
        );
    }
}

async fn against_dev_provider(name: &str, profile: Profile, auth: DevClientAuth) {
    logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let client_auth = match &auth {
        DevClientAuth::SecretBasic(_) => "client_secret_basic",
        DevClientAuth::SecretPost(_) => "client_secret_post",
        other => panic!("not used here: {other:?}"),
    };
    let provider = DevProvider::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        DevProviderOptions {
            clients: vec![DevClient {
                client_id: CLIENT_ID.into(),
                auth,
                redirect_uris: vec![format!("{base}/oauth2/callback")],
            }],
            profile,
            issue_refresh_token: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let oidc = format!(
        "issuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_auth = \"{client_auth}\"\nclient_secret = {AWKWARD_SECRET:?}",
        provider.issuer()
    );
    let _gateway = gateway(listener, &base, &oidc).await;
    run_browser(name, &base, || {
        format!("gateway log:\n{}", crate::browser::log_text())
    })
    .await;
    // The main login and the two tabs each exchanged a code.
    assert_eq!(provider.token_requests(), 3);
}

#[tokio::test]
async fn browser_login_against_the_development_provider() {
    against_dev_provider(
        "dev-standard",
        Profile::Standard,
        DevClientAuth::SecretBasic(AWKWARD_SECRET.into()),
    )
    .await;
}

#[tokio::test]
async fn browser_login_against_the_asgardeo_profile_with_client_secret_basic() {
    against_dev_provider(
        "dev-asgardeo-basic",
        Profile::Asgardeo,
        DevClientAuth::SecretBasic(AWKWARD_SECRET.into()),
    )
    .await;
}

#[tokio::test]
async fn browser_login_against_the_asgardeo_profile_with_client_secret_post() {
    against_dev_provider(
        "dev-asgardeo-post",
        Profile::Asgardeo,
        DevClientAuth::SecretPost(AWKWARD_SECRET.into()),
    )
    .await;
}

#[tokio::test]
async fn browser_login_against_oidc_provider() {
    logs();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://localhost:{}", listener.local_addr().unwrap().port());
    let provider = OidcProvider::start(&base).await;
    let _gateway = gateway(listener, &base, &provider.gateway_oidc(OpClient::Basic)).await;
    run_browser("oidc-provider", &base, || {
        format!(
            "gateway log:\n{}\n{}",
            crate::browser::log_text(),
            provider.node.report()
        )
    })
    .await;
    // The main login and the two tabs each exchanged a code; one logout.
    assert_eq!(provider.events_at_least("grant.success", 3).await.len(), 3);
    assert_eq!(
        provider
            .events_at_least("end_session.success", 1)
            .await
            .len(),
        1
    );
    provider.node.assert_alive();
}

/// The login in Chromium through nginx running `deploy/nginx/nginx.conf` (ports and paths
/// substituted): nginx asks the gateway at `/oauth2/auth` before each request, its 401 becomes the
/// gateway's login redirect, and the demo app shows the identity nginx copied from the answer.
#[tokio::test]
async fn browser_login_through_nginx_forward_auth() {
    logs();
    let nginx = crate::deploy::required("nginx", "nginx");
    let app = portcullis::demo::app::spawn().await.unwrap();
    let gw_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw_addr = gw_listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_nginx, https) =
        crate::deploy::start_example_nginx(&nginx, dir.path(), gw_addr, app).await;
    let base = format!("https://app.example.com:{https}");
    let provider = test_provider(vec![format!("{base}/oauth2/callback")], Default::default()).await;
    let oidc = format!(
        "issuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_auth = \"client_secret_basic\"\nclient_secret = {AWKWARD_SECRET:?}",
        provider.issuer()
    );
    let toml = login_gateway_toml(&base, &format!("http://{app}"), &oidc, "").replace(
        "[server]\n",
        "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    );
    let _gateway = portcullis::spawn(config(&toml), gw_listener).unwrap();
    wait_ready(&format!("http://{gw_addr}")).await;
    run_browser_with(
        "nginx-forward-auth",
        &base,
        serde_json::json!({ "hosts": ["app.example.com"], "caCertificateErrors": true }),
        || {
            let logs =
                std::fs::read_to_string(dir.path().join("logs/error.log")).unwrap_or_default();
            format!(
                "gateway log:\n{}\nnginx error log:\n{logs}",
                crate::browser::log_text()
            )
        },
    )
    .await;
    assert_eq!(provider.token_requests(), 3);
}

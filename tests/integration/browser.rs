//! A scripted browser for the login tests: a cookie-jar HTTP client with redirects off, the development
//! provider as a real HTTP server, and helpers that walk the authorization-code flow step by step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use devidp::{
    generate_client_keypair, DevClient, DevClientAuth, DevProvider, DevProviderOptions, Profile,
};
use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::LOCATION;
use tokio::net::TcpListener;
use url::Url;

use crate::support::*;

/// A secret with every character RFC 6749 section 2.3.1 form-encoding must handle.
pub const AWKWARD_SECRET: &str = "s3cr+t/with:all%the&odd bits é€";
pub const CLIENT_ID: &str = "portcullis-test";

/// The development provider on a free port of 127.0.0.1 with the test client registered:
/// `CLIENT_ID`, `client_secret_basic` with `AWKWARD_SECRET`, for `redirect_uris`; `options` sets
/// the rest.
pub async fn test_provider(redirect_uris: Vec<String>, options: DevProviderOptions) -> DevProvider {
    DevProvider::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        DevProviderOptions {
            clients: vec![DevClient {
                client_id: CLIENT_ID.into(),
                auth: DevClientAuth::SecretBasic(AWKWARD_SECRET.into()),
                redirect_uris,
            }],
            ..options
        },
    )
    .await
    .unwrap()
}

/// How the gateway authenticates at the token endpoint in a test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Auth {
    Basic,
    Post,
    None,
    PrivateKeyJwt,
}

/// Captured log output of this test process (nextest runs each test in its own process).
pub fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("portcullis=debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buf
    })
    .clone()
}

pub fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).to_string()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The development provider, an upstream and the gateway, wired together.
pub struct Stack {
    pub provider: DevProvider,
    /// The provider's port, held while the provider is stopped (see `ClosedPort`).
    pub provider_port: ClosedPort,
    pub upstream: TestUpstream,
    pub gateway: portcullis::RunningGateway,
    pub base: String,
    pub toml: String,
}

pub struct StackOptions {
    pub auth: Auth,
    pub profile: Profile,
    pub extra: String,
    pub refresh_tokens: bool,
    /// More `[oidc]` lines for the gateway.
    pub oidc_extra: String,
    /// The provider's own options (its clients, profile and refresh tokens are set by `stack`).
    pub provider: DevProviderOptions,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            auth: Auth::Basic,
            profile: Profile::Standard,
            extra: String::new(),
            refresh_tokens: false,
            oidc_extra: String::new(),
            provider: DevProviderOptions::default(),
        }
    }
}

/// A second client registered at the provider for every stack: an API client that gets its own
/// tokens (the gateway never sees its login).
pub const API_CLIENT_ID: &str = "api-client";
pub const API_CLIENT_SECRET: &str = "api-client-secret";
pub const API_CLIENT_REDIRECT: &str = "http://127.0.0.1:9/api-client/callback";

pub const PUBLIC_ROUTE: &str = "[[routes]]\npath = \"^/public/\"\npolicy = \"public\"\n";

/// Start a provider registered for the gateway's callback, then the gateway; wait until it is ready.
pub async fn stack(opts: StackOptions) -> Stack {
    logs();
    let gw_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw_addr = gw_listener.local_addr().unwrap();
    let public_url = format!("http://localhost:{}", gw_addr.port());
    let redirect_uri = format!("{public_url}/oauth2/callback");
    let public_url_for_toml = public_url.clone();
    let dir = tempfile::tempdir().unwrap().keep();
    let (dev_auth, gateway_auth) = match opts.auth {
        Auth::Basic => (
            DevClientAuth::SecretBasic(AWKWARD_SECRET.into()),
            format!(
                "client_auth = \"client_secret_basic\"\nclient_secret = {:?}",
                AWKWARD_SECRET
            ),
        ),
        Auth::Post => (
            DevClientAuth::SecretPost(AWKWARD_SECRET.into()),
            format!(
                "client_auth = \"client_secret_post\"\nclient_secret = {:?}",
                AWKWARD_SECRET
            ),
        ),
        Auth::None => (DevClientAuth::None, "client_auth = \"none\"".to_string()),
        Auth::PrivateKeyJwt => {
            let (private_pem, public_pem) = generate_client_keypair();
            let key_path = dir.join("client.pem");
            std::fs::write(&key_path, private_pem).unwrap();
            (
                DevClientAuth::PrivateKeyJwt { public_key_pem: public_pem },
                format!(
                    "client_auth = \"private_key_jwt\"\nprivate_key_file = {:?}\nprivate_key_id = \"test-key\"",
                    key_path.display().to_string()
                ),
            )
        }
    };
    let provider_listener = reusable_listener();
    let provider_port = ClosedPort::at(provider_listener.local_addr().unwrap());
    let provider = DevProvider::start(
        provider_listener,
        DevProviderOptions {
            clients: vec![
                DevClient {
                    client_id: CLIENT_ID.into(),
                    auth: dev_auth,
                    redirect_uris: vec![redirect_uri],
                },
                DevClient {
                    client_id: API_CLIENT_ID.into(),
                    auth: DevClientAuth::SecretPost(API_CLIENT_SECRET.into()),
                    redirect_uris: vec![API_CLIENT_REDIRECT.into()],
                },
            ],
            profile: opts.profile,
            issue_refresh_token: opts.refresh_tokens,
            ..opts.provider
        },
    )
    .await
    .unwrap();
    let upstream = TestUpstream::start("app").await;
    let toml = login_gateway_toml(
        &public_url_for_toml,
        &upstream.url(),
        &format!(
            "issuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n{gateway_auth}\n{}",
            provider.issuer(),
            opts.oidc_extra
        ),
        &opts.extra,
    );
    let gateway = portcullis::spawn(config(&toml), gw_listener).unwrap();
    // The browser uses the public origin, so the cookies set by the gateway go back to it on the callback.
    let base = public_url;
    wait_ready(&base).await;
    Stack {
        provider,
        provider_port,
        upstream,
        gateway,
        base,
        toml,
    }
}

pub async fn wait_ready(base: &str) {
    let c = client();
    for _ in 0..1500 {
        if let Ok(r) = c.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the gateway at {base} never became ready");
}

/// A browser: a cookie jar, no automatic redirects, HTML accepted.
pub struct Browser {
    pub client: reqwest::Client,
    pub jar: Arc<Jar>,
}

impl Browser {
    pub fn new() -> Browser {
        let jar = Arc::new(Jar::default());
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "accept",
            "text/html,application/xhtml+xml,*/*;q=0.8".parse().unwrap(),
        );
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_provider(jar.clone())
            .default_headers(headers)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Browser { client, jar }
    }

    /// The Cookie header this browser would send to `url`.
    pub fn cookie_header(&self, url: &str) -> String {
        self.jar
            .cookies(&Url::parse(url).unwrap())
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.client.get(url).send().await.unwrap()
    }

    /// [`Browser::redirect_from`] with an owned URL, for running many at once.
    pub async fn redirect_from_owned(&self, url: String) -> String {
        self.redirect_from(&url).await
    }

    /// GET `url` and expect a redirect; return its absolute target.
    pub async fn redirect_from(&self, url: &str) -> String {
        let r = self.get(url).await;
        assert_eq!(
            r.status(),
            302,
            "GET {url}: expected a redirect, got {}",
            r.status()
        );
        location(&r, url)
    }

    /// At the provider's authorization URL: fill in the form as `user` and return the callback URL the
    /// provider redirects to.
    pub async fn provider_login(&self, authorize_url: &str, user: &str) -> String {
        let r = self.get(authorize_url).await;
        assert_eq!(r.status(), 200, "authorization page");
        let page = r.text().await.unwrap();
        let action = attr_after(&page, "<form", "action").expect("a login form");
        let action = Url::parse(authorize_url)
            .unwrap()
            .join(&html_unescape(&action))
            .unwrap();
        let request_id = input_value(&page, "request_id").expect("the hidden request id");
        let r = self
            .client
            .post(action.as_str())
            .form(&[
                ("request_id", request_id.as_str()),
                ("username", user),
                ("password", "demo"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "login form post");
        location(&r, action.as_str())
    }

    /// The whole flow from a protected URL: returns the gateway's final redirect target after the callback.
    pub async fn login(&self, protected_url: &str, user: &str) -> String {
        let authorize = self.redirect_from(protected_url).await;
        let callback = self.provider_login(&authorize, user).await;
        self.redirect_from(&callback).await
    }
}

/// An access token for `user`, as an API client gets one: its own login at the provider (the API
/// client's, not the gateway's) and code exchange.
pub async fn api_token(provider: &DevProvider, user: &str) -> String {
    let http = client();
    let discovery = get_json(&format!(
        "{}/.well-known/openid-configuration",
        provider.issuer()
    ))
    .await;
    let mut authorize = Url::parse(discovery["authorization_endpoint"].as_str().unwrap()).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", API_CLIENT_ID)
        .append_pair("redirect_uri", API_CLIENT_REDIRECT)
        .append_pair("scope", "openid profile email")
        .append_pair("state", "api-client-state");
    let callback = Browser::new()
        .provider_login(authorize.as_str(), user)
        .await;
    let code = query_map(&callback)["code"].clone();
    let response: serde_json::Value = http
        .post(discovery["token_endpoint"].as_str().unwrap())
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", API_CLIENT_REDIRECT),
            ("client_id", API_CLIENT_ID),
            ("client_secret", API_CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    response["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token: {response}"))
        .to_string()
}

pub fn location(r: &reqwest::Response, base: &str) -> String {
    let loc = r
        .headers()
        .get(LOCATION)
        .expect("a Location header")
        .to_str()
        .unwrap();
    Url::parse(base).unwrap().join(loc).unwrap().to_string()
}

pub fn query_map(url: &str) -> HashMap<String, String> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

fn attr_after(html: &str, tag: &str, attr: &str) -> Option<String> {
    let start = html.find(tag)?;
    let rest = &html[start..];
    let key = format!("{attr}=\"");
    let i = rest.find(&key)? + key.len();
    let end = rest[i..].find('"')?;
    Some(rest[i..i + end].to_string())
}

fn input_value(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\"");
    let i = html.find(&marker)?;
    let tag_start = html[..i].rfind('<')?;
    let tag_end = i + html[i..].find('>')?;
    attr_after(&html[tag_start..tag_end], "<", "value").map(|v| html_unescape(&v))
}

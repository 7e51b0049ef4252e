//! Configuration: `gateway.toml` plus `PORTCULLIS_<SECTION>__<KEY>` overrides, parsed, validated, trusted.
//!
//! Stages, so the rest of the code only ever sees checked values:
//! 1. reading: the TOML text becomes a `toml::Table` (this file);
//! 2. environment: `PORTCULLIS_<SECTION>__<KEY>` variables are merged into it (`env`);
//! 3. schema: serde turns the table into the `raw` structs, the one description of every key: unknown
//!    keys, wrong types and unknown choices are refused there, named by their key path (and by the
//!    variable, when the environment set them);
//! 4. validation: `validate` turns the raw structs into [`Config`]: URLs parsed, durations parsed, secret
//!    files read, regexes compiled, keys of features not built yet refused. Each failure is one
//!    [`ConfigError`] naming the key.
//!
//! The environment comes in as a map so tests never touch the process environment. Secrets are held in
//! `secrecy` types whose `Debug` prints `[REDACTED]`; the raw file is never logged.

mod env;
mod raw;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Method};
use ipnet::IpNet;
use regex::{Regex, RegexSet};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{SecretBox, SecretString};
use serde::Deserialize;
use url::Url;

pub use crate::router::host::HostPattern;

/// Whether `public_url`'s host is the cookie domain (lower-case) or lies under it, as it must: the
/// callback there sets the cookies every tool under the domain then shares.
pub fn cookie_domain_holds(domain: &str, public_url: &Url) -> Result<()> {
    let host = public_url
        .host_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if host != domain && !host.ends_with(&format!(".{domain}")) {
        return Err(ConfigError::new(
            "session.cookie_domain",
            format!(
                "server.public_url's host {host:?} is not {domain:?} or under it: the cookies its callback sets would not reach the other tools"
            ),
        ));
    }
    Ok(())
}

/// One bad configuration value: the key path and what is wrong with it, printed as one line.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

type Result<T> = std::result::Result<T, ConfigError>;

/// The validated configuration. Everything here has been checked; code that holds a `Config` trusts it.
#[derive(Debug)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub oidc: OidcConfig,
    pub session: SessionConfig,
    pub headers: HeadersConfig,
    pub routes: Vec<RouteConfig>,
    /// Every route's path pattern, in order, as one set (checked to fit the size limit).
    pub route_set: RegexSet,
    pub log: LogConfig,
    /// `[access]`; every rule empty when the section is absent.
    pub access: AccessConfig,
    /// `[api]`; `None`: bearer tokens are not credentials.
    pub api: Option<ApiConfig>,
    /// `[assertion]`; `None`: no signed assertion is sent upstream.
    pub assertion: Option<AssertionConfig>,
}

#[derive(Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub public_url: Url,
    pub tls: Option<TlsFiles>,
    pub trusted_proxies: Vec<IpNet>,
    pub grace_period: Duration,
    /// After SIGTERM: how long the listener keeps accepting (with `/readyz` at 503) before it closes.
    pub shutdown_delay: Duration,
    pub header_read_timeout: Duration,
    /// How long a connection may wait between requests.
    pub keepalive_timeout: Duration,
    /// Most client connections open at once; `None`: derived from the open-file limit at start-up.
    pub max_connections: Option<usize>,
    /// Prefix of the gateway's own endpoints, `/oauth2` unless configured; never ends with `/`.
    pub prefix: String,
    /// Where `GET /metrics` is served when not on `listen`: a listener of its own that answers
    /// `/metrics`, `/healthz` and `/readyz` only (and the main listener answers `/metrics` with 404).
    pub metrics_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug)]
pub struct UpstreamConfig {
    pub url: Url,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub preserve_host: bool,
    /// Trust and identity for every `https://` upstream (`[upstream]` and the routes' own).
    pub tls: UpstreamTls,
}

/// `upstream.ca_file`, `upstream.client_cert_file` and `upstream.client_key_file`, read and parsed.
#[derive(Debug, Default)]
pub struct UpstreamTls {
    /// Trusted besides the system roots.
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// Presented when an upstream asks for a client certificate.
    pub client_identity: Option<ClientIdentity>,
}

/// A client certificate chain and its private key, checked to belong together.
pub struct ClientIdentity {
    pub cert_chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.cert_chain.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

/// `oidc.client_auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ClientAuthMethod {
    #[serde(rename = "client_secret_basic")]
    SecretBasic,
    #[serde(rename = "client_secret_post")]
    SecretPost,
    #[serde(rename = "private_key_jwt")]
    PrivateKeyJwt,
    #[serde(rename = "none")]
    None,
}

/// `session.refresh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefreshMode {
    /// Refresh tokens before they expire, when the provider issued a refresh token.
    Auto,
    Off,
}

/// `session.redis_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedisMode {
    Standalone,
    Sentinel,
    Cluster,
}

/// Where the Redis store lives.
#[derive(Debug)]
pub struct RedisConfig {
    pub mode: RedisMode,
    /// `redis://` or `rediss://` (TLS), with credentials and database; in sentinel and cluster mode
    /// it carries only those (the nodes come from `nodes`). May hold a password: secret.
    pub url: SecretString,
    /// Sentinel addresses (sentinel mode) or seed nodes (cluster mode), `host:port`.
    pub nodes: Vec<String>,
    /// The master's name at the sentinels.
    pub sentinel_master: Option<String>,
    /// Extra trust anchor for `rediss://`, PEM.
    pub ca_pem: Option<Vec<u8>>,
}

/// `session.store`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Cookie,
    Redis,
}

#[derive(Debug)]
pub struct OidcConfig {
    pub issuer: Url,
    pub client_id: String,
    /// Present exactly when `client_auth` is a client-secret method.
    pub client_secret: Option<SecretString>,
    pub client_auth: ClientAuthMethod,
    /// PEM key for `private_key_jwt`.
    pub private_key: Option<SecretBox<Vec<u8>>>,
    pub private_key_id: Option<String>,
    pub scopes: Vec<String>,
    pub pkce: bool,
    pub authorization_endpoint: Option<Url>,
    pub token_endpoint: Option<Url>,
    pub jwks_uri: Option<Url>,
    pub userinfo_endpoint: Option<Url>,
    pub end_session_endpoint: Option<Url>,
    pub clock_skew: Duration,
    pub http_timeout: Duration,
    pub jwks_refetch_interval: Duration,
    /// Added to the authorization request; never one of the parameters portcullis sets itself.
    pub extra_auth_params: Vec<(String, String)>,
    /// Fill in claims the id_token lacks from the userinfo endpoint after the code exchange.
    pub userinfo_claims: bool,
    pub introspection_endpoint: Option<Url>,
}

#[derive(Debug)]
pub struct SessionConfig {
    pub secret: SecretBox<Vec<u8>>,
    pub previous_secrets: Vec<SecretBox<Vec<u8>>>,
    pub cookie_name: String,
    pub lifetime: Duration,
    pub secure: bool,
    pub store: StoreKind,
    /// Set exactly when `store = "redis"`.
    pub redis: Option<RedisConfig>,
    /// `None`: sessions end only at `lifetime`.
    pub idle_timeout: Option<Duration>,
    pub refresh: RefreshMode,
    /// Refresh when the access token expires within this.
    pub refresh_before: Duration,
    /// `Domain` of every cookie of ours (lower-case, no leading dot): one login for every host under
    /// it. `None`: host-only cookies.
    pub cookie_domain: Option<String>,
}

#[derive(Debug)]
pub struct HeadersConfig {
    /// Header sent upstream and the claim it carries, in configuration order.
    pub claims: Vec<(HeaderName, String)>,
    pub pass_access_token: bool,
    pub pass_id_token: bool,
}

/// `routes[].policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Public,
    Authenticated,
    Deny,
}

#[derive(Debug)]
pub struct RouteConfig {
    /// `None`: any host.
    pub host: Option<HostPattern>,
    pub path: Regex,
    /// `None`: every method.
    pub methods: Option<Vec<Method>>,
    pub policy: Policy,
    pub upstream: Option<Url>,
    /// Groups of which the caller must have one, on top of `[access]` (authenticated routes only).
    pub allowed_groups: Option<Vec<String>>,
}

/// `[access]`: who may pass once signed in. An empty list is no rule of that kind.
#[derive(Debug, Clone)]
pub struct AccessConfig {
    /// Lower-cased (ASCII) domains, matched exactly against the part of `email` after its last `@`.
    pub allowed_email_domains: Vec<String>,
    /// Lower-cased (ASCII) addresses.
    pub allowed_emails: Vec<String>,
    pub allowed_groups: Vec<String>,
    /// Where the groups are: a claim name or a dotted path (`realm_access.roles`).
    pub groups_claim: String,
    /// Whether an email rule also needs `email_verified: true` (default: true).
    pub require_email_verified: bool,
    /// Claim (name or dotted path) and the JSON values of which it must share one.
    pub claims: Vec<(String, Vec<serde_json::Value>)>,
}

impl Default for AccessConfig {
    fn default() -> AccessConfig {
        AccessConfig {
            allowed_email_domains: Vec::new(),
            allowed_emails: Vec::new(),
            allowed_groups: Vec::new(),
            groups_claim: "groups".into(),
            require_email_verified: true,
            claims: Vec::new(),
        }
    }
}

/// `[api]`: bearer tokens on protected routes.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// A JWT access token must name one of these in `aud`; an introspection answer that names an
    /// audience must name one of these, when set.
    pub audiences: Vec<String>,
    /// Opaque tokens go to the provider's introspection endpoint (RFC 7662).
    pub introspection: bool,
    /// How long an introspection answer is reused at most (never past the token's `exp`).
    pub introspection_cache: Duration,
}

/// `[assertion]`: the signed identity JWT sent upstream.
#[derive(Debug)]
pub struct AssertionConfig {
    pub header: HeaderName,
    pub lifetime: Duration,
    /// `aud`; `None`: the origin of the upstream the request goes to.
    pub audience: Option<String>,
    /// The P-256 key (PKCS#8 or SEC1 PEM) from `key_file`; `None`: one generated at start-up.
    pub key_pem: Option<SecretBox<Vec<u8>>>,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    /// One line per request (`telemetry::access_log`).
    pub access_log: bool,
}

/// The most a configuration file, a PEM file or a CA bundle it names may hold.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// The most a secret file (`*_secret_file`, `redis_url_file`) may hold.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 << 10;

/// Read at most `limit` bytes of `path`: a larger file (or a device that never ends) is an error,
/// never an allocation the size of whatever the path names.
pub(crate) fn read_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// [`read_limited`] for text.
pub(crate) fn read_limited_text(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_limited(path, limit)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Environment variables that override configuration keys start with this.
pub const ENV_PREFIX: &str = "PORTCULLIS_";

impl Config {
    /// Read, merge with the process environment, and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text = read_limited_text(path, MAX_FILE_BYTES).map_err(|e| {
            ConfigError::new("config", format!("cannot read {}: {e}", path.display()))
        })?;
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Config::from_toml_str(&text, &env)
    }

    /// Parse and validate configuration text with `env` (variables named `PORTCULLIS_<SECTION>__<KEY>`)
    /// applied on top.
    pub fn from_toml_str(text: &str, env: &BTreeMap<String, String>) -> Result<Config> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let where_ = e
                .span()
                .map(|s| format!(" at line {}", line_of(text, s.start)))
                .unwrap_or_default();
            ConfigError::new("config", format!("invalid TOML{where_}: {}", e.message()))
        })?;
        let origins = env::apply(&mut table, env)?;
        let raw: raw::RawConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| schema_error(e, &origins))?;
        validate::validate(raw)
    }
}

/// A schema error as one line naming the key (the path ends with an unknown key's own name); a key set by
/// the environment also names its variable.
fn schema_error(
    e: serde_path_to_error::Error<toml::de::Error>,
    origins: &env::Origins,
) -> ConfigError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let message = inner.message().to_string();
    let unknown = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_string());
    let key = dotted(&path);
    let message = match unknown {
        Some(name) if key == name => "unknown section".to_string(),
        Some(_) => "unknown key".to_string(),
        None => one_line(&message),
    };
    let message = match origins.get(&key) {
        Some(var) => format!("{message} (set by the environment variable {var})"),
        None => message,
    };
    ConfigError::new(key, message)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map(|t| t.lines().count().max(1))
        .unwrap_or(1)
}

/// serde_path_to_error prints `routes[0].path`; keep that, but map the root to `config`.
fn dotted(path: &str) -> String {
    if path.is_empty() || path == "." {
        "config".into()
    } else {
        path.to_string()
    }
}

/// Minimum session secret length in bytes: the HKDF input must carry at least 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

/// A session secret is the base64 text printed by `portcullis secret` (standard or URL-safe alphabet) or
/// any other string of at least 32 bytes.
pub fn decode_secret(key: &str, text: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let engines = [
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    for engine in engines {
        if let Ok(bytes) = engine.decode(text) {
            if bytes.len() >= MIN_SECRET_BYTES {
                return Ok(bytes);
            }
        }
    }
    if text.len() >= MIN_SECRET_BYTES {
        return Ok(text.as_bytes().to_vec());
    }
    Err(ConfigError::new(
        key,
        format!("must be at least {MIN_SECRET_BYTES} bytes; generate one with `portcullis secret`"),
    ))
}

/// A fresh random session secret: 32 bytes from the system CSPRNG, base64url without padding.
pub fn generate_secret() -> std::result::Result<String, String> {
    use base64::Engine as _;
    let mut bytes = [0u8; MIN_SECRET_BYTES];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| "the system random number generator failed".to_string())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn base() -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
public_url = "http://localhost:4180"
[upstream]
url = "http://127.0.0.1:8080"
[oidc]
issuer = "http://127.0.0.1:9000"
client_id = "portcullis"
client_secret = "s3cret"
[session]
secret = "{SECRET}"
"#
        )
    }

    fn parse(text: &str) -> Result<Config> {
        Config::from_toml_str(text, &BTreeMap::new())
    }

    fn err(text: &str) -> ConfigError {
        parse(text).expect_err("configuration should be refused")
    }

    #[test]
    fn minimal_configuration_gets_defaults() {
        let c = parse(&base()).unwrap();
        assert_eq!(c.server.prefix, "/oauth2");
        assert_eq!(c.upstream.timeout, Duration::from_secs(30));
        assert!(c.upstream.preserve_host);
        assert_eq!(c.oidc.client_auth, ClientAuthMethod::SecretBasic);
        assert_eq!(c.oidc.scopes, ["openid", "profile", "email"]);
        assert!(c.oidc.pkce);
        assert!(!c.session.secure, "http public_url: not secure by default");
        assert_eq!(c.session.lifetime, Duration::from_secs(12 * 3600));
        assert_eq!(c.headers.claims.len(), 4);
        assert_eq!(
            c.session.secret.expose_secret().as_slice(),
            SECRET.as_bytes()
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err(&base().replace("[upstream]", "[upstream]\nurll = \"x\""));
        assert_eq!(e.key, "upstream.urll");
        assert_eq!(e.message, "unknown key");
        let e = err(&format!("{}\n[serverr]\n", base()));
        assert_eq!(e.key, "serverr");
        let e = err(&format!(
            "{}\n[[routes]]\npath = \"^/\"\npolicyy = \"public\"\n",
            base()
        ));
        assert_eq!(e.key, "routes[0].policyy");
    }

    #[test]
    fn metrics_listener_and_access_log() {
        let c = parse(&base()).unwrap();
        assert_eq!(c.server.metrics_listen, None);
        assert!(c.log.access_log, "the access log is on by default");
        let c = parse(&format!(
            "{}\n[log]\naccess_log = false\n",
            base().replace(
                "[server]\n",
                "[server]\nmetrics_listen = \"127.0.0.1:9090\"\n"
            )
        ))
        .unwrap();
        assert_eq!(
            c.server.metrics_listen,
            Some("127.0.0.1:9090".parse().unwrap())
        );
        assert!(!c.log.access_log);
        let env = BTreeMap::from([(
            "PORTCULLIS_SERVER__METRICS_LISTEN".to_string(),
            "10.0.0.5:9090".to_string(),
        )]);
        let c = Config::from_toml_str(&base(), &env).unwrap();
        assert_eq!(
            c.server.metrics_listen,
            Some("10.0.0.5:9090".parse().unwrap())
        );
        for bad in ["localhost:9090", "9090", ""] {
            let e = err(&base().replace(
                "[server]\n",
                &format!("[server]\nmetrics_listen = {bad:?}\n"),
            ));
            assert_eq!(e.key, "server.metrics_listen", "{bad}");
        }
        // Not the main listener's own address.
        let same = base()
            .replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:4180\"")
            .replace(
                "[server]\n",
                "[server]\nmetrics_listen = \"127.0.0.1:4180\"\n",
            );
        assert_eq!(err(&same).key, "server.metrics_listen");
        let e = err(&format!("{}\n[log]\naccess_log = \"yes\"\n", base()));
        assert_eq!(e.key, "log.access_log");
    }

    #[test]
    fn routes_may_name_a_host_and_then_cover_every_path() {
        let c = parse(&format!(
            "{}\n[[routes]]\nhost = \"Grafana.Corp.Example\"\nupstream = \"http://127.0.0.1:3000\"\n\
             [[routes]]\nhost = \"*.corp.example\"\npath = \"^/admin\"\npolicy = \"deny\"\n",
            base()
        ))
        .unwrap();
        assert_eq!(
            c.routes[0].host,
            Some(HostPattern::Exact("grafana.corp.example".into()))
        );
        assert!(c.routes[0].path.is_match("/anything"));
        assert_eq!(
            c.routes[1].host.as_ref().unwrap().to_string(),
            "*.corp.example"
        );
        assert!(!c.routes[1].path.is_match("/other"));
        for bad in [
            "grafana.corp.example:3000",
            "*",
            "a.*.example",
            "",
            "gr\u{e4}fana.example",
        ] {
            let text = format!("{}\n[[routes]]\nhost = {bad:?}\n", base());
            assert_eq!(err(&text).key, "routes[0].host", "{bad:?}");
        }
        // Without a host, a route still needs its path.
        let text = format!("{}\n[[routes]]\npolicy = \"public\"\n", base());
        assert_eq!(err(&text).key, "routes[0].path");
    }

    #[test]
    fn cookie_domain_must_hold_public_url() {
        let with = |public_url: &str, domain: &str| {
            base().replace("http://localhost:4180", public_url).replace(
                "[session]",
                &format!("[session]\ncookie_domain = {domain:?}"),
            )
        };
        let c = parse(&with("https://login.corp.example", ".Corp.Example")).unwrap();
        assert_eq!(c.session.cookie_domain.as_deref(), Some("corp.example"));
        let c = parse(&with("https://corp.example", "corp.example")).unwrap();
        assert_eq!(c.session.cookie_domain.as_deref(), Some("corp.example"));
        assert_eq!(parse(&base()).unwrap().session.cookie_domain, None);
        for (public_url, domain) in [
            ("https://login.other.example", "corp.example"),
            ("https://evilcorp.example", "corp.example"),
            ("https://login.corp.example", "example"),
            ("https://login.corp.example", "login.corp.example:443"),
            ("https://login.corp.example", "*.corp.example"),
            ("https://login.corp.example", ""),
            ("http://127.0.0.1:4180", "127.0.0.1"),
            ("https://login.corp.example", "corp.example; Secure"),
        ] {
            let e = err(&with(public_url, domain));
            assert_eq!(e.key, "session.cookie_domain", "{public_url} {domain}: {e}");
        }
        let host_prefixed = with("https://login.corp.example", "corp.example")
            .replace("[session]", "[session]\ncookie_name = \"__Host-sid\"");
        assert_eq!(err(&host_prefixed).key, "session.cookie_domain");
    }

    #[test]
    fn shutdown_delay_defaults_to_none_and_may_be_set() {
        assert_eq!(
            parse(&base()).unwrap().server.shutdown_delay,
            Duration::ZERO
        );
        let c = parse(&base().replace("[server]", "[server]\nshutdown_delay = \"5s\"")).unwrap();
        assert_eq!(c.server.shutdown_delay, Duration::from_secs(5));
        let e = err(&base().replace("[server]", "[server]\nshutdown_delay = \"soon\""));
        assert_eq!(e.key, "server.shutdown_delay");
    }

    #[test]
    fn https_upstreams_are_accepted() {
        let c =
            parse(&base().replace("http://127.0.0.1:8080", "https://app.internal/base")).unwrap();
        assert_eq!(c.upstream.url.scheme(), "https");
        assert!(c.upstream.tls.ca_certs.is_empty());
        assert!(c.upstream.tls.client_identity.is_none());
        let e = err(&base().replace(
            "[upstream]",
            "[upstream]\nca_file = \"/nonexistent/ca.pem\"",
        ));
        assert_eq!(e.key, "upstream.ca_file");
    }

    #[test]
    fn access_rules_are_compiled_and_checked() {
        let c = parse(&format!(
            r#"{}
[access]
allowed_email_domains = ["Example.COM"]
allowed_emails = ["Ops@Example.org"]
allowed_groups = ["admins"]
groups_claim = "realm_access.roles"
claims = {{ level = [3, 4.5], mfa = [true], "org.unit" = ["ops"] }}
[[routes]]
path = "^/admin"
allowed_groups = ["root"]
"#,
            base()
        ))
        .unwrap();
        let a = &c.access;
        assert_eq!(a.allowed_email_domains, ["example.com"]);
        assert_eq!(a.allowed_emails, ["ops@example.org"]);
        assert_eq!(a.groups_claim, "realm_access.roles");
        assert!(a.require_email_verified, "default true");
        assert_eq!(
            a.claims,
            vec![
                (
                    "level".to_string(),
                    vec![serde_json::json!(3), serde_json::json!(4.5)]
                ),
                ("mfa".to_string(), vec![serde_json::json!(true)]),
                ("org.unit".to_string(), vec![serde_json::json!("ops")]),
            ]
        );
        assert_eq!(
            c.routes[0].allowed_groups.as_deref(),
            Some(&["root".to_string()][..])
        );
        assert!(parse(&base()).unwrap().access.allowed_groups.is_empty());

        for (extra, key) in [
            ("[access]\nallowed_groups = []\n", "access.allowed_groups"),
            (
                "[access]\nallowed_email_domains = [\"@example.com\"]\n",
                "access.allowed_email_domains",
            ),
            (
                "[access]\nallowed_emails = [\"nobody\"]\n",
                "access.allowed_emails",
            ),
            ("[access]\nclaims = { level = 3 }\n", "access.claims.level"),
            (
                "[access]\nclaims = { level = [{ a = 1 }] }\n",
                "access.claims.level",
            ),
            ("[access]\nclaims = { level = [] }\n", "access.claims.level"),
            (
                "[access]\nallowed_groupz = [\"a\"]\n",
                "access.allowed_groupz",
            ),
            (
                "[[routes]]\npath = \"^/\"\npolicy = \"public\"\nallowed_groups = [\"a\"]\n",
                "routes[0].allowed_groups",
            ),
            (
                "[[routes]]\npath = \"^/\"\nallowed_groups = []\n",
                "routes[0].allowed_groups",
            ),
        ] {
            assert_eq!(err(&format!("{}\n{extra}", base())).key, key, "{extra}");
        }
    }

    #[test]
    fn extra_auth_params_may_not_touch_what_portcullis_sets() {
        let c = parse(&base().replace(
            "[oidc]",
            "[oidc]\nextra_auth_params = { prompt = \"login\", acr_values = \"mfa\" }",
        ))
        .unwrap();
        assert_eq!(
            c.oidc.extra_auth_params,
            vec![
                ("acr_values".to_string(), "mfa".to_string()),
                ("prompt".to_string(), "login".to_string())
            ]
        );
        for name in [
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
            "redirect_uri",
            "client_id",
            "response_type",
            "scope",
            "State",
        ] {
            let e = err(&base().replace(
                "[oidc]",
                &format!("[oidc]\nextra_auth_params = {{ {name} = \"x\" }}"),
            ));
            assert_eq!(e.key, "oidc.extra_auth_params");
            assert!(e.message.contains(name), "{e}");
        }
        let e = err(&base().replace("[oidc]", "[oidc]\nextra_auth_params = { max_age = 5 }"));
        assert_eq!(e.key, "oidc.extra_auth_params.max_age");
    }

    #[test]
    fn api_needs_a_way_to_check_tokens() {
        let c = parse(&format!(
            "{}\n[api]\naudiences = [\"my-api\"]\nintrospection = true\nintrospection_cache = \"30s\"\n",
            base()
        ))
        .unwrap();
        let api = c.api.unwrap();
        assert_eq!(api.audiences, ["my-api"]);
        assert!(api.introspection);
        assert_eq!(api.introspection_cache, Duration::from_secs(30));
        let c = parse(&format!("{}\n[api]\nintrospection = true\n", base())).unwrap();
        assert_eq!(c.api.unwrap().introspection_cache, Duration::from_secs(60));
        assert!(parse(&base()).unwrap().api.is_none());
        assert_eq!(err(&format!("{}\n[api]\n", base())).key, "api");
        let public = base().replace("client_secret = \"s3cret\"", "client_auth = \"none\"")
            + "\n[api]\nintrospection = true\n";
        assert_eq!(err(&public).key, "api.introspection");
    }

    #[test]
    fn assertion_defaults_and_key_file() {
        let c = parse(&format!("{}\n[assertion]\n", base())).unwrap();
        let a = c.assertion.unwrap();
        assert_eq!(a.header, "x-portcullis-jwt-assertion");
        assert_eq!(a.lifetime, Duration::from_secs(300));
        assert!(a.audience.is_none() && a.key_pem.is_none());

        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(&key, &crate::oidc::testutil::p256().private_pem).unwrap();
        let with_key = format!(
            "{}\n[assertion]\nkey_file = {:?}\nheader = \"X-Identity\"\naudience = \"app\"\nlifetime = \"1m\"\n",
            base(),
            key.display().to_string()
        );
        let a = parse(&with_key).unwrap().assertion.unwrap();
        assert!(a.key_pem.is_some());
        assert_eq!(a.audience.as_deref(), Some("app"));
        assert_eq!(a.lifetime, Duration::from_secs(60));

        std::fs::write(&key, &crate::oidc::testutil::rsa().private_pem).unwrap();
        assert_eq!(err(&with_key).key, "assertion.key_file");
        for (extra, k) in [
            ("header = \"Cookie\"", "assertion.header"),
            ("header = \"X-Forwarded-User\"", "assertion.header"),
            ("header = \"bad header\"", "assertion.header"),
            ("key_file = \"/nonexistent.pem\"", "assertion.key_file"),
            ("lifetime = \"soon\"", "assertion.lifetime"),
        ] {
            assert_eq!(
                err(&format!("{}\n[assertion]\n{extra}\n", base())).key,
                k,
                "{extra}"
            );
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                base().replace("http://127.0.0.1:8080", "not a url"),
                "upstream.url",
            ),
            (
                base().replace("http://127.0.0.1:8080", "ftp://x"),
                "upstream.url",
            ),
            (
                base().replace("[upstream]", "[upstream]\ntimeout = \"soon\""),
                "upstream.timeout",
            ),
            (
                base().replace("[upstream]", "[upstream]\ntimeout = 30"),
                "upstream.timeout",
            ),
            (base().replace("127.0.0.1:0", "localhost"), "server.listen"),
            (
                base().replace("[oidc]", "[oidc]\nclient_auth = \"magic\""),
                "oidc.client_auth",
            ),
            (base().replace(SECRET, "short"), "session.secret"),
            (
                base().replace("[server]", "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]"),
                "server.trusted_proxies",
            ),
            (
                format!("{}\n[[routes]]\npath = \"(\"\n", base()),
                "routes[0].path",
            ),
            (
                format!(
                    "{}\n[[routes]]\npath = \"^/\"\npolicy = \"maybe\"\n",
                    base()
                ),
                "routes[0].policy",
            ),
            (
                format!("{}\n[headers]\n\"Bad Header\" = \"sub\"\n", base()),
                "headers.Bad Header",
            ),
            (
                base().replace("client_secret = \"s3cret\"", ""),
                "oidc.client_secret",
            ),
            (
                base().replace("[oidc]", "[oidc]\nscopes = [\"email\"]"),
                "oidc.scopes",
            ),
        ];
        for (text, key) in cases {
            assert_eq!(err(&text).key, key, "{text}");
        }
    }

    #[test]
    fn connection_limits_are_read_from_the_file_and_the_environment() {
        let c = parse(&base().replace(
            "[server]",
            "[server]\nmax_connections = 100\nkeepalive_timeout = \"5s\"",
        ))
        .unwrap();
        assert_eq!(c.server.max_connections, Some(100));
        assert_eq!(c.server.keepalive_timeout, Duration::from_secs(5));
        let mut env = BTreeMap::new();
        env.insert(
            "PORTCULLIS_SERVER__MAX_CONNECTIONS".to_string(),
            "250".to_string(),
        );
        let c = Config::from_toml_str(&base(), &env).unwrap();
        assert_eq!(c.server.max_connections, Some(250));
        for bad in ["0", "-1", "\"many\"", "1.5"] {
            let text = base().replace("[server]", &format!("[server]\nmax_connections = {bad}"));
            assert_eq!(err(&text).key, "server.max_connections", "{bad}");
        }
        let text = base().replace("[server]", "[server]\nkeepalive_timeout = \"0s\"");
        assert_eq!(err(&text).key, "server.keepalive_timeout");
        let c = parse(&base()).unwrap();
        assert_eq!(c.server.keepalive_timeout, Duration::from_secs(60));
        assert_eq!(
            c.server.max_connections, None,
            "derived from the open-file limit"
        );
    }

    /// Found by fuzzing: a type error's text carried the key path on a second line.
    #[test]
    fn type_errors_are_one_line() {
        let e = err(&base().replace("\"127.0.0.1:0\"", "1"));
        assert_eq!(e.key, "server.listen");
        assert_eq!(e.message, "invalid type: integer `1`, expected a string");
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    /// Found by fuzzing: an empty section or key named nothing at all.
    #[test]
    fn an_environment_variable_without_section_or_key_is_named() {
        for name in ["PORTCULLIS___KEY", "PORTCULLIS_SERVER__", "PORTCULLIS____"] {
            let mut env = BTreeMap::new();
            env.insert(name.to_string(), "1".to_string());
            assert_eq!(Config::from_toml_str(&base(), &env).unwrap_err().key, name);
        }
    }

    #[test]
    fn case_insensitive_routes_match_any_case() {
        let text = format!(
            "{}\n[[routes]]\npath = \"^/admin|^/ops$\"\ncase_insensitive = true\npolicy = \"deny\"\n",
            base()
        );
        let c = parse(&text).unwrap();
        let r = &c.routes[0];
        for p in ["/admin", "/ADMIN/x", "/aDmIn", "/OPS"] {
            assert!(r.path.is_match(p), "{p}");
        }
        assert!(!r.path.is_match("/opsx"));
        let text = format!(
            "{}\n[[routes]]\npath = \"^/\"\ncase_insensitive = \"yes\"\n",
            base()
        );
        assert_eq!(err(&text).key, "routes[0].case_insensitive");
        let c = parse(&format!("{}\n[[routes]]\npath = \"^/public/\"\n", base())).unwrap();
        assert!(
            !c.routes[0].path.is_match("/PUBLIC/x"),
            "case matters by default"
        );
    }

    #[test]
    fn secret_files_are_read_and_missing_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client_secret");
        std::fs::write(&path, "from-file\n").unwrap();
        let text = base().replace(
            "client_secret = \"s3cret\"",
            &format!("client_secret_file = {:?}", path.display().to_string()),
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.oidc.client_secret.unwrap().expose_secret(), "from-file");

        let missing = base().replace(
            "client_secret = \"s3cret\"",
            "client_secret_file = \"/nonexistent/secret\"",
        );
        let e = err(&missing);
        assert_eq!(e.key, "oidc.client_secret_file");
        assert!(e.message.contains("/nonexistent/secret"));

        let both = base().replace(
            "client_secret = \"s3cret\"",
            &format!(
                "client_secret = \"x\"\nclient_secret_file = {:?}",
                path.display().to_string()
            ),
        );
        assert_eq!(err(&both).key, "oidc.client_secret");
    }

    #[test]
    fn oversized_and_endless_files_are_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, "x".repeat(MAX_SECRET_FILE_BYTES as usize + 1)).unwrap();
        for path in [big.as_path(), Path::new("/dev/zero")] {
            let text = base().replace(
                "client_secret = \"s3cret\"",
                &format!("client_secret_file = {:?}", path.display().to_string()),
            );
            let e = err(&text);
            assert_eq!(e.key, "oidc.client_secret_file");
            assert!(e.message.contains("larger than 65536 bytes"), "{e}");
        }
        let fits = dir.path().join("fits");
        std::fs::write(&fits, "y".repeat(MAX_SECRET_FILE_BYTES as usize)).unwrap();
        let text = base().replace(
            "client_secret = \"s3cret\"",
            &format!("client_secret_file = {:?}", fits.display().to_string()),
        );
        assert_eq!(
            parse(&text)
                .unwrap()
                .oidc
                .client_secret
                .unwrap()
                .expose_secret()
                .len(),
            MAX_SECRET_FILE_BYTES as usize
        );
    }

    #[test]
    fn environment_overrides_keys() {
        let mut env = BTreeMap::new();
        env.insert(
            "PORTCULLIS_OIDC__CLIENT_SECRET".to_string(),
            "12345".to_string(),
        );
        env.insert(
            "PORTCULLIS_UPSTREAM__PRESERVE_HOST".to_string(),
            "false".to_string(),
        );
        env.insert(
            "PORTCULLIS_SERVER__TRUSTED_PROXIES".to_string(),
            "[\"10.0.0.0/8\"]".to_string(),
        );
        env.insert(
            "PORTCULLIS_HEADERS__X_AUTH_USER".to_string(),
            "sub".to_string(),
        );
        let c = Config::from_toml_str(&base(), &env).unwrap();
        assert_eq!(
            c.oidc.client_secret.unwrap().expose_secret(),
            "12345",
            "digits stay a string"
        );
        assert!(!c.upstream.preserve_host);
        assert_eq!(
            c.server.trusted_proxies,
            vec!["10.0.0.0/8".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            c.headers.claims,
            vec![(HeaderName::from_static("x-auth-user"), "sub".to_string())]
        );

        let mut env = BTreeMap::new();
        env.insert("PORTCULLIS_UPSTREAM__NOPE".to_string(), "1".to_string());
        assert_eq!(
            Config::from_toml_str(&base(), &env).unwrap_err().key,
            "upstream.nope"
        );
    }

    #[test]
    fn kubernetes_service_links_are_not_configuration_but_misspelt_keys_are_named() {
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("PORTCULLIS_PORT", "tcp://10.0.0.1:4180"),
            ("PORTCULLIS_PORT_4180_TCP", "tcp://10.0.0.1:4180"),
            ("PORTCULLIS_PORT_4180_TCP_ADDR", "10.0.0.1"),
            ("PORTCULLIS_PORT_4180_TCP_PORT", "4180"),
            ("PORTCULLIS_PORT_4180_TCP_PROTO", "tcp"),
            ("PORTCULLIS_SERVICE_HOST", "10.0.0.1"),
            ("PORTCULLIS_SERVICE_PORT", "4180"),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        Config::from_toml_str(&base(), &env).expect("service-link variables are ignored");
        env.insert(
            "PORTCULLIS_OIDC__CLIENT_SECRETT".to_string(),
            "x".to_string(),
        );
        let e = Config::from_toml_str(&base(), &env).unwrap_err();
        assert_eq!(e.key, "oidc.client_secrett");
        assert!(
            e.message.contains("unknown key")
                && e.message.contains("PORTCULLIS_OIDC__CLIENT_SECRETT"),
            "{e}"
        );
        let mut env = BTreeMap::new();
        env.insert("PORTCULLIS_OIDCC__ISSUER".to_string(), "x".to_string());
        let e = Config::from_toml_str(&base(), &env).unwrap_err();
        assert_eq!(e.key, "oidcc");
        assert!(
            e.message.contains("unknown section") && e.message.contains("PORTCULLIS_OIDCC__ISSUER"),
            "{e}"
        );
    }

    #[test]
    fn choice_keys_name_their_choices() {
        let e = err(&base().replace("[oidc]", "[oidc]\nclient_auth = \"magic\""));
        assert_eq!(e.key, "oidc.client_auth");
        assert!(e.message.contains("client_secret_post"), "{e}");
        let e = err(&base().replace("[session]", "[session]\nstore = \"disk\""));
        assert_eq!(e.key, "session.store");
        assert!(e.message.contains("redis"), "{e}");
        assert_eq!(
            err(&base().replace("[session]", "[session]\nstore = \"redis\"")).key,
            "session.redis_url"
        );
    }

    #[test]
    fn redis_settings_are_checked_and_never_echo_the_url() {
        let with = |lines: &str| base().replace("[session]", &format!("[session]\n{lines}"));
        let c = parse(&with(
            "store = \"redis\"\nredis_url = \"redis://:pw@127.0.0.1:6379/2\"",
        ))
        .unwrap();
        let redis = c.session.redis.as_ref().unwrap();
        assert_eq!(redis.mode, RedisMode::Standalone);
        assert!(
            !format!("{c:?}").contains("pw@"),
            "the URL's password is secret"
        );
        let c = parse(&with(
            "store = \"redis\"\nredis_mode = \"sentinel\"\nredis_nodes = [\"10.0.0.1:26379\"]\nredis_sentinel_master = \"main\"",
        ))
        .unwrap();
        assert_eq!(c.session.redis.unwrap().nodes, ["10.0.0.1:26379"]);
        let cases = [
            ("redis_url = \"redis://x\"", "session.store"),
            ("store = \"redis\"\nredis_url = \"http://x\"", "session.redis_url"),
            ("store = \"redis\"\nredis_url = \"not a url :pw@\"", "session.redis_url"),
            ("store = \"redis\"\nredis_mode = \"cluster\"", "session.redis_nodes"),
            (
                "store = \"redis\"\nredis_mode = \"cluster\"\nredis_nodes = [\"nohost\"]",
                "session.redis_nodes",
            ),
            (
                "store = \"redis\"\nredis_mode = \"sentinel\"\nredis_nodes = [\"h:1\"]",
                "session.redis_sentinel_master",
            ),
            (
                "store = \"redis\"\nredis_url = \"redis://h\"\nredis_ca_file = \"/nonexistent/ca.pem\"",
                "session.redis_ca_file",
            ),
            ("store = \"redis\"\nredis_mode = \"ring\"", "session.redis_mode"),
        ];
        for (lines, key) in cases {
            let e = err(&with(lines));
            assert_eq!(e.key, key, "{lines}: {e}");
            assert!(!e.message.contains("pw@"), "{e}");
        }
    }

    #[test]
    fn routes_too_large_together_are_an_error_naming_the_route() {
        // Each pattern compiles on its own; three of them exceed the set's size limit.
        let heavy = r"^/a{0,100}\w{100}";
        let mut text = base();
        for _ in 0..3 {
            text.push_str(&format!("\n[[routes]]\npath = '{heavy}'\n"));
        }
        let e = err(&text);
        assert!(
            e.key.starts_with("routes[") && e.key.ends_with("].path"),
            "{e}"
        );
        assert!(e.message.contains("too large"), "{e}");
        // Two fit.
        let text =
            base() + &format!("\n[[routes]]\npath = '^/a{{0,10}}'\n[[routes]]\npath = '{heavy}'\n");
        parse(&text).expect("within the limit");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let c = parse(&base()).unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(!debug.contains(SECRET), "{debug}");
    }

    #[test]
    fn secret_accepts_generated_base64() {
        let generated = "q2Vn0hxlqbrDLPcUVvTqXGl6cQU0ujZNmdlwc5nC87Y";
        assert_eq!(decode_secret("k", generated).unwrap().len(), 32);
        assert!(decode_secret("k", "too short").is_err());
    }

    #[test]
    fn routes_are_compiled() {
        let text = format!(
            "{}\n[[routes]]\npath = \"^/public/\"\nmethods = [\"get\", \"HEAD\"]\npolicy = \"public\"\nupstream = \"http://127.0.0.1:9999\"\n",
            base()
        );
        let c = parse(&text).unwrap();
        let r = &c.routes[0];
        assert!(r.path.is_match("/public/x"));
        assert_eq!(r.methods.as_deref(), Some(&[Method::GET, Method::HEAD][..]));
        assert_eq!(r.policy, Policy::Public);
        assert_eq!(r.upstream.as_ref().unwrap().port(), Some(9999));
    }
}

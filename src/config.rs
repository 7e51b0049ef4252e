//! Configuration: `gateway.toml` plus `PORTCULLIS_<SECTION>__<KEY>` overrides, parsed, validated, trusted.
//!
//! Three stages, so the rest of the code only ever sees checked values:
//! 1. the TOML text becomes a `toml::Table`, environment overrides are merged into it, and every key is
//!    checked against the schema below (unknown keys and keys of features not built yet are refused by
//!    name, before serde sees them, so the error names the full key path);
//! 2. serde turns the table into `Raw*` structs (type errors carry their key path);
//! 3. `validate` turns the raw structs into [`Config`]: URLs parsed, durations parsed, secret files read,
//!    regexes compiled. Each failure is one [`ConfigError`] naming the key.
//!
//! The environment comes in as a map so tests never touch the process environment. Secrets are held in
//! `secrecy` types whose `Debug` prints `[REDACTED]`; the raw file is never logged.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Method};
use ipnet::IpNet;
use regex::Regex;
use secrecy::{SecretBox, SecretString};
use serde::Deserialize;
use url::Url;

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
    pub log: LogConfig,
}

#[derive(Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub public_url: Url,
    pub tls: Option<TlsFiles>,
    pub trusted_proxies: Vec<IpNet>,
    pub grace_period: Duration,
    pub header_read_timeout: Duration,
    /// How long a connection may wait between requests.
    pub keepalive_timeout: Duration,
    /// Most client connections open at once; `None`: derived from the open-file limit at start-up.
    pub max_connections: Option<usize>,
    /// Prefix of the gateway's own endpoints, `/oauth2` unless configured; never ends with `/`.
    pub prefix: String,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    SecretBasic,
    SecretPost,
    PrivateKeyJwt,
    None,
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
}

#[derive(Debug)]
pub struct SessionConfig {
    pub secret: SecretBox<Vec<u8>>,
    pub previous_secrets: Vec<SecretBox<Vec<u8>>>,
    pub cookie_name: String,
    pub lifetime: Duration,
    pub secure: bool,
}

#[derive(Debug)]
pub struct HeadersConfig {
    /// Header sent upstream and the claim it carries, in configuration order.
    pub claims: Vec<(HeaderName, String)>,
    pub pass_access_token: bool,
    pub pass_id_token: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Public,
    Authenticated,
    Deny,
}

#[derive(Debug)]
pub struct RouteConfig {
    pub path: Regex,
    /// `None`: every method.
    pub methods: Option<Vec<Method>>,
    pub policy: Policy,
    pub upstream: Option<Url>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

/// Every key the configuration knows, per section. `Future` keys are part of the contract but belong to
/// features not built yet: setting one stops start-up instead of being silently ignored.
#[derive(Clone, Copy, PartialEq)]
enum Known {
    Yes,
    Future,
}

const SERVER_KEYS: &[(&str, Known)] = &[
    ("listen", Known::Yes),
    ("public_url", Known::Yes),
    ("tls_cert_file", Known::Yes),
    ("tls_key_file", Known::Yes),
    ("trusted_proxies", Known::Yes),
    ("grace_period", Known::Yes),
    ("header_read_timeout", Known::Yes),
    ("prefix", Known::Yes),
    ("keepalive_timeout", Known::Yes),
    ("max_connections", Known::Yes),
];
const UPSTREAM_KEYS: &[(&str, Known)] = &[
    ("url", Known::Yes),
    ("timeout", Known::Yes),
    ("connect_timeout", Known::Yes),
    ("preserve_host", Known::Yes),
];
const OIDC_KEYS: &[(&str, Known)] = &[
    ("issuer", Known::Yes),
    ("client_id", Known::Yes),
    ("client_secret", Known::Yes),
    ("client_secret_file", Known::Yes),
    ("client_auth", Known::Yes),
    ("private_key_file", Known::Yes),
    ("private_key_id", Known::Yes),
    ("scopes", Known::Yes),
    ("pkce", Known::Yes),
    ("authorization_endpoint", Known::Yes),
    ("token_endpoint", Known::Yes),
    ("jwks_uri", Known::Yes),
    ("userinfo_endpoint", Known::Yes),
    ("end_session_endpoint", Known::Yes),
    ("clock_skew", Known::Yes),
    ("http_timeout", Known::Yes),
    ("jwks_refetch_interval", Known::Yes),
    ("extra_auth_params", Known::Future),
    ("userinfo_claims", Known::Future),
];
const SESSION_KEYS: &[(&str, Known)] = &[
    ("secret", Known::Yes),
    ("secret_file", Known::Yes),
    ("previous_secrets", Known::Yes),
    ("cookie_name", Known::Yes),
    ("lifetime", Known::Yes),
    ("store", Known::Yes),
    ("secure", Known::Yes),
    ("redis_url", Known::Future),
    ("redis_mode", Known::Future),
    ("redis_nodes", Known::Future),
    ("redis_sentinel_master", Known::Future),
    ("idle_timeout", Known::Future),
    ("refresh", Known::Future),
    ("refresh_before", Known::Future),
];
const ROUTE_KEYS: &[(&str, Known)] = &[
    ("path", Known::Yes),
    ("methods", Known::Yes),
    ("policy", Known::Yes),
    ("upstream", Known::Yes),
    ("case_insensitive", Known::Yes),
    ("allowed_groups", Known::Future),
];
const LOG_KEYS: &[(&str, Known)] = &[("format", Known::Yes), ("level", Known::Yes)];
/// Sections whose every key belongs to a feature that is not built yet.
const FUTURE_SECTIONS: &[&str] = &["access", "api", "assertion"];

#[derive(Deserialize, Default)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    upstream: Option<RawUpstream>,
    oidc: Option<RawOidc>,
    session: Option<RawSession>,
    #[serde(default)]
    headers: Option<toml::Table>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    log: RawLog,
}

#[derive(Deserialize, Default)]
struct RawServer {
    listen: Option<String>,
    public_url: Option<String>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    grace_period: Option<String>,
    header_read_timeout: Option<String>,
    prefix: Option<String>,
    keepalive_timeout: Option<String>,
    max_connections: Option<Count>,
}

/// A count given as a TOML integer, or as a string of digits (which is what an environment variable
/// override gives).
#[derive(Deserialize)]
#[serde(untagged)]
enum Count {
    Number(i64),
    Text(String),
}

#[derive(Deserialize)]
struct RawUpstream {
    url: Option<String>,
    timeout: Option<String>,
    connect_timeout: Option<String>,
    preserve_host: Option<bool>,
}

#[derive(Deserialize)]
struct RawOidc {
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<PathBuf>,
    client_auth: Option<String>,
    private_key_file: Option<PathBuf>,
    private_key_id: Option<String>,
    scopes: Option<Vec<String>>,
    pkce: Option<bool>,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    jwks_uri: Option<String>,
    userinfo_endpoint: Option<String>,
    end_session_endpoint: Option<String>,
    clock_skew: Option<String>,
    http_timeout: Option<String>,
    jwks_refetch_interval: Option<String>,
}

#[derive(Deserialize)]
struct RawSession {
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    #[serde(default)]
    previous_secrets: Vec<String>,
    cookie_name: Option<String>,
    lifetime: Option<String>,
    store: Option<String>,
    secure: Option<bool>,
}

#[derive(Deserialize)]
struct RawRoute {
    path: Option<String>,
    methods: Option<Vec<String>>,
    policy: Option<String>,
    upstream: Option<String>,
    case_insensitive: Option<bool>,
}

#[derive(Deserialize, Default)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

/// Environment variables that override configuration keys start with this.
pub const ENV_PREFIX: &str = "PORTCULLIS_";

impl Config {
    /// Read, merge with the process environment, and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
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
        apply_env(&mut table, env)?;
        check_keys(&table)?;
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                // The message alone: the error's Display appends the key path on a line of its own.
                ConfigError::new(dotted(&path), one_line(e.into_inner().message()))
            })?;
        validate(raw)
    }
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

/// Merge `PORTCULLIS_<SECTION>__<KEY>=value` into the table. `true`/`false` become booleans, values
/// starting with `[` or `{` are read as TOML arrays or tables, anything else is a string, so a secret that
/// happens to look like a number stays a string.
fn apply_env(table: &mut toml::Table, env: &BTreeMap<String, String>) -> Result<()> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some((section, key)) = rest
            .split_once("__")
            .filter(|(section, key)| !section.is_empty() && !key.is_empty())
        else {
            return Err(ConfigError::new(
                name.as_str(),
                "expected PORTCULLIS_<SECTION>__<KEY>",
            ));
        };
        let section = section.to_ascii_lowercase();
        let key = if section == "headers"
            && !key.eq_ignore_ascii_case("pass_access_token")
            && !key.eq_ignore_ascii_case("pass_id_token")
        {
            key.replace('_', "-")
        } else {
            key.to_ascii_lowercase()
        };
        let parsed = match value.trim() {
            "true" => toml::Value::Boolean(true),
            "false" => toml::Value::Boolean(false),
            v if v.starts_with('[') || v.starts_with('{') => {
                let doc: toml::Table = format!("v = {v}").parse().map_err(|_| {
                    ConfigError::new(
                        format!("{section}.{key}"),
                        format!("{name} is not a valid TOML array or table"),
                    )
                })?;
                doc.get("v")
                    .cloned()
                    .unwrap_or(toml::Value::String(v.into()))
            }
            _ => toml::Value::String(value.clone()),
        };
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(sec) = entry else {
            return Err(ConfigError::new(section, "expected a table"));
        };
        sec.insert(key, parsed);
    }
    Ok(())
}

/// Refuse unknown keys and keys of features not built yet, naming the full key path.
fn check_keys(table: &toml::Table) -> Result<()> {
    for (section, value) in table {
        let keys: &[(&str, Known)] = match section.as_str() {
            "server" => SERVER_KEYS,
            "upstream" => UPSTREAM_KEYS,
            "oidc" => OIDC_KEYS,
            "session" => SESSION_KEYS,
            "log" => LOG_KEYS,
            "headers" => continue, // free-form header names, checked in validate
            "routes" => {
                let toml::Value::Array(routes) = value else {
                    return Err(ConfigError::new("routes", "expected [[routes]] tables"));
                };
                for (i, route) in routes.iter().enumerate() {
                    let toml::Value::Table(route) = route else {
                        return Err(ConfigError::new(format!("routes[{i}]"), "expected a table"));
                    };
                    check_section(&format!("routes[{i}]"), route, ROUTE_KEYS)?;
                }
                continue;
            }
            s if FUTURE_SECTIONS.contains(&s) => {
                return Err(ConfigError::new(
                    section.as_str(),
                    "this feature is not available yet in this version",
                ))
            }
            _ => return Err(ConfigError::new(section.as_str(), "unknown section")),
        };
        let toml::Value::Table(inner) = value else {
            return Err(ConfigError::new(section.as_str(), "expected a table"));
        };
        check_section(section, inner, keys)?;
    }
    Ok(())
}

fn check_section(section: &str, table: &toml::Table, keys: &[(&str, Known)]) -> Result<()> {
    for key in table.keys() {
        match keys.iter().find(|(k, _)| k == key) {
            Some((_, Known::Yes)) => {}
            Some((_, Known::Future)) => {
                return Err(ConfigError::new(
                    format!("{section}.{key}"),
                    "this feature is not available yet in this version",
                ))
            }
            None => return Err(ConfigError::new(format!("{section}.{key}"), "unknown key")),
        }
    }
    Ok(())
}

fn duration(key: &str, value: Option<&str>, default: &str) -> Result<Duration> {
    let text = value.unwrap_or(default);
    let d = humantime::parse_duration(text).map_err(|e| {
        ConfigError::new(
            key,
            format!(
                "invalid duration {text:?} ({e}); use a string such as \"30s\", \"15m\" or \"12h\""
            ),
        )
    })?;
    if d.is_zero() {
        return Err(ConfigError::new(key, "must be greater than zero"));
    }
    Ok(d)
}

fn http_url(key: &str, value: &str) -> Result<Url> {
    let url = Url::parse(value)
        .map_err(|e| ConfigError::new(key, format!("invalid URL {value:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(
            key,
            format!("expected an http or https URL, got {value:?}"),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(key, format!("URL {value:?} has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(
            key,
            "credentials in the URL are not allowed",
        ));
    }
    if url.fragment().is_some() {
        return Err(ConfigError::new(
            key,
            "a URL with a #fragment is not allowed",
        ));
    }
    Ok(url)
}

fn upstream_url(key: &str, value: &str) -> Result<Url> {
    let url = http_url(key, value)?;
    if url.scheme() != "http" {
        return Err(ConfigError::new(
            key,
            "https upstreams are not available yet in this version; use an http:// URL",
        ));
    }
    if url.query().is_some() {
        return Err(ConfigError::new(key, "an upstream URL cannot have a query"));
    }
    Ok(url)
}

fn optional_url(key: &str, value: Option<&String>) -> Result<Option<Url>> {
    value.map(|v| http_url(key, v)).transpose()
}

fn required<'a>(key: &str, value: Option<&'a String>) -> Result<&'a str> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(ConfigError::new(key, "must not be empty")),
        None => Err(ConfigError::new(key, "is required")),
    }
}

/// Read a secret file; trailing whitespace (the newline editors and `kubectl create secret` add) is dropped.
fn read_secret_file(key: &str, path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    let text = text.trim_end().to_string();
    if text.is_empty() {
        return Err(ConfigError::new(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(text)
}

/// Exactly one of `value` and `file` when `needed`; the file's contents win the pair.
fn secret_pair(
    key: &str,
    value: Option<String>,
    file_key: &str,
    file: Option<&PathBuf>,
) -> Result<Option<String>> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::new(
            key,
            format!("set either {key} or {file_key}, not both"),
        )),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(path)) => read_secret_file(file_key, path).map(Some),
        (None, None) => Ok(None),
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

fn validate(raw: RawConfig) -> Result<Config> {
    let server = validate_server(raw.server)?;
    let upstream = validate_upstream(raw.upstream)?;
    let oidc = validate_oidc(raw.oidc)?;
    let session = validate_session(raw.session, &server.public_url)?;
    let headers = validate_headers(raw.headers)?;
    let routes = raw
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| validate_route(i, r))
        .collect::<Result<Vec<_>>>()?;
    let log = validate_log(raw.log)?;
    Ok(Config {
        server,
        upstream,
        oidc,
        session,
        headers,
        routes,
        log,
    })
}

fn validate_server(raw: RawServer) -> Result<ServerConfig> {
    let listen_text = raw.listen.as_deref().unwrap_or("127.0.0.1:4180");
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        ConfigError::new(
            "server.listen",
            format!("expected an address such as \"127.0.0.1:4180\", got {listen_text:?}"),
        )
    })?;
    let public_url = http_url(
        "server.public_url",
        raw.public_url.as_deref().unwrap_or("http://localhost:4180"),
    )?;
    if public_url.path() != "/" || public_url.query().is_some() {
        return Err(ConfigError::new(
            "server.public_url",
            "must be an origin only (scheme, host, port), without a path or query",
        ));
    }
    let tls = match (raw.tls_cert_file, raw.tls_key_file) {
        (Some(cert_file), Some(key_file)) => {
            for (key, path) in [
                ("server.tls_cert_file", &cert_file),
                ("server.tls_key_file", &key_file),
            ] {
                std::fs::metadata(path).map_err(|e| {
                    ConfigError::new(key, format!("cannot read {}: {e}", path.display()))
                })?;
            }
            Some(TlsFiles {
                cert_file,
                key_file,
            })
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                "server.tls_key_file",
                "is required with server.tls_cert_file",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "server.tls_cert_file",
                "is required with server.tls_key_file",
            ))
        }
    };
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .map(|p| {
            p.parse::<IpNet>()
                .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    ConfigError::new(
                        "server.trusted_proxies",
                        format!("expected an IP address or CIDR such as \"10.0.0.0/8\", got {p:?}"),
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let prefix = raw.prefix.unwrap_or_else(|| "/oauth2".into());
    let prefix = prefix.trim_end_matches('/').to_string();
    if !prefix.starts_with('/')
        || prefix.len() < 2
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
        || prefix.contains("//")
        || prefix.split('/').any(|s| s == "." || s == "..")
    {
        return Err(ConfigError::new(
            "server.prefix",
            "expected a path such as \"/oauth2\" (letters, digits, '-', '_', '.', '/')",
        ));
    }
    Ok(ServerConfig {
        listen,
        public_url,
        tls,
        trusted_proxies,
        grace_period: duration("server.grace_period", raw.grace_period.as_deref(), "30s")?,
        header_read_timeout: duration(
            "server.header_read_timeout",
            raw.header_read_timeout.as_deref(),
            "10s",
        )?,
        keepalive_timeout: duration(
            "server.keepalive_timeout",
            raw.keepalive_timeout.as_deref(),
            "60s",
        )?,
        max_connections: raw
            .max_connections
            .map(|c| count("server.max_connections", c))
            .transpose()?,
        prefix,
    })
}

fn count(key: &str, value: Count) -> Result<usize> {
    let n = match value {
        Count::Number(n) => usize::try_from(n).ok(),
        Count::Text(t) => t.trim().parse().ok(),
    };
    match n {
        Some(n) if n > 0 => Ok(n),
        _ => Err(ConfigError::new(
            key,
            "expected a whole number greater than zero",
        )),
    }
}

fn validate_upstream(raw: Option<RawUpstream>) -> Result<UpstreamConfig> {
    let raw =
        raw.ok_or_else(|| ConfigError::new("upstream", "the [upstream] section is required"))?;
    let url = upstream_url("upstream.url", required("upstream.url", raw.url.as_ref())?)?;
    Ok(UpstreamConfig {
        url,
        timeout: duration("upstream.timeout", raw.timeout.as_deref(), "30s")?,
        connect_timeout: duration(
            "upstream.connect_timeout",
            raw.connect_timeout.as_deref(),
            "5s",
        )?,
        preserve_host: raw.preserve_host.unwrap_or(true),
    })
}

fn validate_oidc(raw: Option<RawOidc>) -> Result<OidcConfig> {
    let raw = raw.ok_or_else(|| ConfigError::new("oidc", "the [oidc] section is required"))?;
    let issuer = http_url("oidc.issuer", required("oidc.issuer", raw.issuer.as_ref())?)?;
    if issuer.query().is_some() {
        return Err(ConfigError::new(
            "oidc.issuer",
            "an issuer cannot have a query",
        ));
    }
    let client_id = required("oidc.client_id", raw.client_id.as_ref())?.to_string();
    let client_auth = match raw.client_auth.as_deref().unwrap_or("client_secret_basic") {
        "client_secret_basic" => ClientAuthMethod::SecretBasic,
        "client_secret_post" => ClientAuthMethod::SecretPost,
        "private_key_jwt" => ClientAuthMethod::PrivateKeyJwt,
        "none" => ClientAuthMethod::None,
        other => {
            return Err(ConfigError::new(
                "oidc.client_auth",
                format!(
                    "expected one of client_secret_basic, client_secret_post, private_key_jwt, none; got {other:?}"
                ),
            ))
        }
    };
    let secret = secret_pair(
        "oidc.client_secret",
        raw.client_secret,
        "oidc.client_secret_file",
        raw.client_secret_file.as_ref(),
    )?;
    let client_secret = match client_auth {
        ClientAuthMethod::SecretBasic | ClientAuthMethod::SecretPost => match secret {
            Some(s) if !s.is_empty() => Some(SecretString::from(s)),
            _ => {
                return Err(ConfigError::new(
                    "oidc.client_secret",
                    "is required for client_secret_basic and client_secret_post (or set oidc.client_secret_file)",
                ))
            }
        },
        _ if secret.is_some() => {
            return Err(ConfigError::new(
                "oidc.client_secret",
                "is only used with client_secret_basic or client_secret_post; remove it or change oidc.client_auth",
            ))
        }
        _ => None,
    };
    let private_key = match (client_auth, raw.private_key_file) {
        (ClientAuthMethod::PrivateKeyJwt, Some(path)) => {
            let pem = std::fs::read(&path).map_err(|e| {
                ConfigError::new(
                    "oidc.private_key_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if !pem.starts_with(b"-----BEGIN")
                && !String::from_utf8_lossy(&pem).contains("-----BEGIN")
            {
                return Err(ConfigError::new(
                    "oidc.private_key_file",
                    format!("{} is not a PEM file", path.display()),
                ));
            }
            Some(SecretBox::new(Box::new(pem)))
        }
        (ClientAuthMethod::PrivateKeyJwt, None) => {
            return Err(ConfigError::new(
                "oidc.private_key_file",
                "is required for private_key_jwt",
            ))
        }
        (_, Some(_)) => {
            return Err(ConfigError::new(
                "oidc.private_key_file",
                "is only used with client_auth = \"private_key_jwt\"",
            ))
        }
        (_, None) => None,
    };
    let pkce = raw.pkce.unwrap_or(true);
    if client_auth == ClientAuthMethod::None && !pkce {
        return Err(ConfigError::new(
            "oidc.pkce",
            "must be true for a public client (client_auth = \"none\")",
        ));
    }
    let scopes = raw
        .scopes
        .unwrap_or_else(|| vec!["openid".into(), "profile".into(), "email".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        return Err(ConfigError::new("oidc.scopes", "must include \"openid\""));
    }
    if let Some(bad) = scopes.iter().find(|s| {
        s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    }) {
        return Err(ConfigError::new(
            "oidc.scopes",
            format!("invalid scope {bad:?}"),
        ));
    }
    Ok(OidcConfig {
        issuer,
        client_id,
        client_secret,
        client_auth,
        private_key,
        private_key_id: raw.private_key_id,
        scopes,
        pkce,
        authorization_endpoint: optional_url(
            "oidc.authorization_endpoint",
            raw.authorization_endpoint.as_ref(),
        )?,
        token_endpoint: optional_url("oidc.token_endpoint", raw.token_endpoint.as_ref())?,
        jwks_uri: optional_url("oidc.jwks_uri", raw.jwks_uri.as_ref())?,
        userinfo_endpoint: optional_url("oidc.userinfo_endpoint", raw.userinfo_endpoint.as_ref())?,
        end_session_endpoint: optional_url(
            "oidc.end_session_endpoint",
            raw.end_session_endpoint.as_ref(),
        )?,
        clock_skew: duration("oidc.clock_skew", raw.clock_skew.as_deref(), "60s")?,
        http_timeout: duration("oidc.http_timeout", raw.http_timeout.as_deref(), "10s")?,
        jwks_refetch_interval: duration(
            "oidc.jwks_refetch_interval",
            raw.jwks_refetch_interval.as_deref(),
            "60s",
        )?,
    })
}

fn validate_session(raw: Option<RawSession>, public_url: &Url) -> Result<SessionConfig> {
    let raw =
        raw.ok_or_else(|| ConfigError::new("session", "the [session] section is required"))?;
    let secret_text = secret_pair(
        "session.secret",
        raw.secret,
        "session.secret_file",
        raw.secret_file.as_ref(),
    )?
    .ok_or_else(|| {
        ConfigError::new(
            "session.secret",
            "is required (or session.secret_file); generate one with `portcullis secret`",
        )
    })?;
    let secret = decode_secret("session.secret", &secret_text)?;
    let previous_secrets = raw
        .previous_secrets
        .iter()
        .map(|s| decode_secret("session.previous_secrets", s).map(|b| SecretBox::new(Box::new(b))))
        .collect::<Result<Vec<_>>>()?;
    let cookie_name = raw.cookie_name.unwrap_or_else(|| "_portcullis".into());
    // RFC 6265 4.1.1: a cookie-name is an RFC 2616 token; keep to a conservative subset.
    if cookie_name.is_empty()
        || cookie_name.len() > 64
        || !cookie_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ConfigError::new(
            "session.cookie_name",
            "expected 1 to 64 letters, digits, '_' or '-'",
        ));
    }
    match raw.store.as_deref().unwrap_or("cookie") {
        "cookie" => {}
        "redis" => {
            return Err(ConfigError::new(
                "session.store",
                "the redis store is not available yet in this version",
            ))
        }
        other => {
            return Err(ConfigError::new(
                "session.store",
                format!("expected \"cookie\" or \"redis\", got {other:?}"),
            ))
        }
    }
    let https = public_url.scheme() == "https";
    let secure = raw.secure.unwrap_or(https);
    Ok(SessionConfig {
        secret: SecretBox::new(Box::new(secret)),
        previous_secrets,
        cookie_name,
        lifetime: duration("session.lifetime", raw.lifetime.as_deref(), "12h")?,
        secure,
    })
}

fn validate_headers(raw: Option<toml::Table>) -> Result<HeadersConfig> {
    let Some(table) = raw else {
        return Ok(HeadersConfig {
            claims: vec![
                (HeaderName::from_static("x-forwarded-user"), "sub".into()),
                (HeaderName::from_static("x-forwarded-email"), "email".into()),
                (
                    HeaderName::from_static("x-forwarded-preferred-username"),
                    "preferred_username".into(),
                ),
                (
                    HeaderName::from_static("x-forwarded-groups"),
                    "groups".into(),
                ),
            ],
            pass_access_token: false,
            pass_id_token: false,
        });
    };
    let mut claims = Vec::new();
    let mut pass_access_token = false;
    let mut pass_id_token = false;
    for (name, value) in table {
        let key = format!("headers.{name}");
        match (name.as_str(), value) {
            ("pass_access_token", toml::Value::Boolean(b)) => pass_access_token = b,
            ("pass_id_token", toml::Value::Boolean(b)) => pass_id_token = b,
            ("pass_access_token" | "pass_id_token", _) => {
                return Err(ConfigError::new(key, "expected true or false"))
            }
            (_, toml::Value::String(claim)) => {
                let header = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| ConfigError::new(&key, "not a valid HTTP header name"))?;
                if crate::proxy::is_reserved_header(&header) {
                    return Err(ConfigError::new(
                        key,
                        "this header is managed by the gateway and cannot carry a claim",
                    ));
                }
                if claim.is_empty() {
                    return Err(ConfigError::new(key, "the claim name must not be empty"));
                }
                if claims
                    .iter()
                    .any(|(h, _): &(HeaderName, String)| h == header)
                {
                    return Err(ConfigError::new(key, "header configured twice"));
                }
                claims.push((header, claim.clone()));
            }
            _ => return Err(ConfigError::new(key, "expected a claim name (a string)")),
        }
    }
    Ok(HeadersConfig {
        claims,
        pass_access_token,
        pass_id_token,
    })
}

fn validate_route(i: usize, raw: RawRoute) -> Result<RouteConfig> {
    let key = |k: &str| format!("routes[{i}].{k}");
    let path_text = required(&key("path"), raw.path.as_ref())?;
    // The flag travels inside the pattern, so every matcher built from `path.as_str()` keeps it.
    let path_text = if raw.case_insensitive.unwrap_or(false) {
        format!("(?i){path_text}")
    } else {
        path_text.to_string()
    };
    let path = Regex::new(&path_text).map_err(|e| {
        ConfigError::new(
            key("path"),
            format!("invalid regular expression: {}", one_line(&e.to_string())),
        )
    })?;
    let methods = raw
        .methods
        .map(|ms| {
            if ms.is_empty() {
                return Err(ConfigError::new(
                    key("methods"),
                    "must not be empty (omit it for every method)",
                ));
            }
            ms.iter()
                .map(|m| {
                    let upper = m.to_ascii_uppercase();
                    Method::from_bytes(upper.as_bytes()).map_err(|_| {
                        ConfigError::new(key("methods"), format!("invalid method {m:?}"))
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .transpose()?;
    let policy = match raw.policy.as_deref().unwrap_or("authenticated") {
        "public" => Policy::Public,
        "authenticated" => Policy::Authenticated,
        "deny" => Policy::Deny,
        other => {
            return Err(ConfigError::new(
                key("policy"),
                format!("expected one of public, authenticated, deny; got {other:?}"),
            ))
        }
    };
    let upstream = raw
        .upstream
        .as_deref()
        .map(|u| upstream_url(&key("upstream"), u))
        .transpose()?;
    Ok(RouteConfig {
        path,
        methods,
        policy,
        upstream,
    })
}

fn validate_log(raw: RawLog) -> Result<LogConfig> {
    let format = match raw.format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(ConfigError::new(
                "log.format",
                format!("expected \"text\" or \"json\", got {other:?}"),
            ))
        }
    };
    let level = raw.level.unwrap_or_else(|| "info".into());
    tracing_subscriber::EnvFilter::try_new(&level).map_err(|e| {
        ConfigError::new(
            "log.level",
            format!("invalid level or filter {level:?}: {e}"),
        )
    })?;
    Ok(LogConfig { format, level })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
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
        assert_eq!(c.server.keepalive_timeout, Duration::from_secs(60));
        assert_eq!(
            c.server.max_connections, None,
            "derived from the open-file limit"
        );
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
    fn future_keys_are_refused_not_ignored() {
        let e = err(&base().replace("[session]", "[session]\nredis_url = \"redis://x\""));
        assert_eq!(e.key, "session.redis_url");
        assert!(e.message.contains("not available yet"), "{e}");
        let e = err(&format!("{}\n[access]\nallowed_groups = [\"a\"]\n", base()));
        assert_eq!(e.key, "access");
        assert!(e.message.contains("not available yet"));
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
    }

    /// Found by fuzzing: a type error's text carried the key path on a second line.
    #[test]
    fn type_errors_are_one_line() {
        let e = err(&base().replace("\"127.0.0.1:0\"", "1"));
        assert_eq!(e.key, "server.listen");
        assert_eq!(e.message, "invalid type: integer `1`, expected a string");
        assert!(!e.to_string().contains('\n'), "{e}");
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

        // Found by fuzzing: an empty section or key named nothing at all.
        for name in ["PORTCULLIS___KEY", "PORTCULLIS_SERVER__", "PORTCULLIS____"] {
            let mut env = BTreeMap::new();
            env.insert(name.to_string(), "1".to_string());
            assert_eq!(Config::from_toml_str(&base(), &env).unwrap_err().key, name);
        }

        let mut env = BTreeMap::new();
        env.insert("PORTCULLIS_UPSTREAM__NOPE".to_string(), "1".to_string());
        assert_eq!(
            Config::from_toml_str(&base(), &env).unwrap_err().key,
            "upstream.nope"
        );
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
        assert!(!r.path.is_match("/PUBLIC/x"), "case matters by default");
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
    }
}

//! From the raw schema to the typed [`Config`]: URLs parsed, durations parsed, secret files read,
//! regexes compiled, cross-key rules checked. Each failure is one [`ConfigError`] naming the key.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Method};
use ipnet::IpNet;
use regex::{Regex, RegexSet};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{SecretBox, SecretString};
use url::Url;

use super::raw::{
    Count, RawAccess, RawApi, RawAssertion, RawConfig, RawLog, RawOidc, RawRoute, RawServer,
    RawSession, RawUpstream,
};
use super::{
    decode_secret, AccessConfig, ApiConfig, AssertionConfig, ClientAuthMethod, ClientIdentity,
    Config, ConfigError, HeadersConfig, HostPattern, LogConfig, LogFormat, OidcConfig, Policy,
    RedisConfig, RedisMode, RefreshMode, Result, RouteConfig, ServerConfig, SessionConfig,
    StoreKind, TlsFiles, UpstreamConfig, UpstreamTls,
};

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

/// A duration that may be zero (`"0s"`): a delay that can be switched off.
fn duration_or_zero(key: &str, value: Option<&str>, default: &str) -> Result<Duration> {
    let text = value.unwrap_or(default);
    humantime::parse_duration(text).map_err(|e| {
        ConfigError::new(
            key,
            format!(
                "invalid duration {text:?} ({e}); use a string such as \"0s\", \"5s\" or \"1m\""
            ),
        )
    })
}

fn upstream_url(key: &str, value: &str) -> Result<Url> {
    let url = http_url(key, value)?;
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
    let text = super::read_limited_text(path, super::MAX_SECRET_FILE_BYTES)
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

pub(super) fn validate(raw: RawConfig) -> Result<Config> {
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
    let route_set = route_set(&routes)?;
    let tls_settings = upstream.tls.client_identity.is_some() || !upstream.tls.ca_certs.is_empty();
    let any_https = std::iter::once(&upstream.url)
        .chain(routes.iter().filter_map(|r| r.upstream.as_ref()))
        .any(|u| u.scheme() == "https");
    if tls_settings && !any_https {
        return Err(ConfigError::new(
            if upstream.tls.ca_certs.is_empty() {
                "upstream.client_cert_file"
            } else {
                "upstream.ca_file"
            },
            "is only used for https:// upstreams, and no upstream is https://",
        ));
    }
    let log = validate_log(raw.log)?;
    let access = raw
        .access
        .map(validate_access)
        .transpose()?
        .unwrap_or_default();
    let api = raw.api.map(|a| validate_api(a, &oidc)).transpose()?;
    let assertion = raw
        .assertion
        .map(|a| validate_assertion(a, &headers))
        .transpose()?;
    Ok(Config {
        server,
        upstream,
        oidc,
        session,
        headers,
        routes,
        route_set,
        log,
        access,
        api,
        assertion,
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
    let metrics_listen = raw
        .metrics_listen
        .as_deref()
        .map(|text| {
            let addr: SocketAddr = text.parse().map_err(|_| {
                ConfigError::new(
                    "server.metrics_listen",
                    format!("expected an address such as \"127.0.0.1:9090\", got {text:?}"),
                )
            })?;
            if addr.port() != 0 && addr.port() == listen.port() && (addr.ip() == listen.ip() || addr.ip().is_unspecified() || listen.ip().is_unspecified()) {
                return Err(ConfigError::new(
                    "server.metrics_listen",
                    format!("{addr} is server.listen's address; leave metrics_listen out to serve /metrics there"),
                ));
            }
            Ok(addr)
        })
        .transpose()?;
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
        shutdown_delay: duration_or_zero(
            "server.shutdown_delay",
            raw.shutdown_delay.as_deref(),
            "0s",
        )?,
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
        metrics_listen,
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
        tls: upstream_tls(
            raw.ca_file.as_deref(),
            raw.client_cert_file.as_deref(),
            raw.client_key_file.as_deref(),
        )?,
    })
}

/// PEM certificates from `path`, at least one.
fn pem_certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = super::read_limited(path, super::MAX_FILE_BYTES)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            ConfigError::new(
                key,
                format!("cannot read PEM certificates from {}: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            key,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// `upstream.ca_file` and the client certificate and key, read and checked: every CA certificate
/// usable as a trust anchor, the key the one the certificate names.
fn upstream_tls(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<UpstreamTls> {
    let ca_certs = match ca_file {
        None => Vec::new(),
        Some(path) => {
            let certs = pem_certificates("upstream.ca_file", path)?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in &certs {
                roots.add(cert.clone()).map_err(|e| {
                    ConfigError::new(
                        "upstream.ca_file",
                        format!(
                            "{}: a certificate is not usable as a trust anchor: {e}",
                            path.display()
                        ),
                    )
                })?;
            }
            certs
        }
    };
    let client_identity = match (cert_file, key_file) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(ConfigError::new(
                "upstream.client_key_file",
                "is required with upstream.client_cert_file",
            ))
        }
        (None, Some(_)) => {
            return Err(ConfigError::new(
                "upstream.client_cert_file",
                "is required with upstream.client_key_file",
            ))
        }
        (Some(cert_path), Some(key_path)) => {
            let cert_chain = pem_certificates("upstream.client_cert_file", cert_path)?;
            let pem = super::read_limited(key_path, super::MAX_FILE_BYTES).map_err(|e| {
                ConfigError::new(
                    "upstream.client_key_file",
                    format!("cannot read {}: {e}", key_path.display()),
                )
            })?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                ConfigError::new(
                    "upstream.client_key_file",
                    format!(
                        "cannot read a PEM private key from {}: {e}",
                        key_path.display()
                    ),
                )
            })?;
            rustls::sign::CertifiedKey::from_der(
                cert_chain.clone(),
                key.clone_key(),
                &rustls::crypto::aws_lc_rs::default_provider(),
            )
            .map_err(|e| {
                ConfigError::new(
                    "upstream.client_key_file",
                    format!(
                        "{} does not fit the certificate in {}: {e}",
                        key_path.display(),
                        cert_path.display()
                    ),
                )
            })?;
            Some(ClientIdentity { cert_chain, key })
        }
    };
    Ok(UpstreamTls {
        ca_certs,
        client_identity,
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
    let client_auth = raw.client_auth.unwrap_or(ClientAuthMethod::SecretBasic);
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
            let pem = super::read_limited(&path, super::MAX_FILE_BYTES).map_err(|e| {
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
        extra_auth_params: extra_auth_params(raw.extra_auth_params.unwrap_or_default())?,
        userinfo_claims: raw.userinfo_claims.unwrap_or(false),
        introspection_endpoint: optional_url(
            "oidc.introspection_endpoint",
            raw.introspection_endpoint.as_ref(),
        )?,
    })
}

/// `oidc.extra_auth_params`: any parameter but the ones portcullis sets itself, which would let
/// the configuration weaken the login (a fixed `state` or `nonce`, another `redirect_uri`). Names
/// are compared without regard to case, as some providers read them.
fn extra_auth_params(
    params: std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, String)>> {
    let key = "oidc.extra_auth_params";
    params
        .into_iter()
        .map(|(name, value)| {
            if let Some(reserved) = crate::oidc::authorize::RESERVED_PARAMS
                .iter()
                .find(|r| r.eq_ignore_ascii_case(&name))
            {
                return Err(ConfigError::new(
                    key,
                    format!("{name:?} cannot be set: portcullis sets {reserved} itself"),
                ));
            }
            if name.is_empty() || name.chars().any(char::is_control) {
                return Err(ConfigError::new(
                    key,
                    format!("invalid parameter name {name:?}"),
                ));
            }
            Ok((name, value))
        })
        .collect()
}

/// A list that, when given, must not be empty (an empty list would read as "nobody" to some and
/// "no rule" to others); entries must not be empty either.
fn rule_list(key: &str, list: Option<Vec<String>>) -> Result<Vec<String>> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    if list.is_empty() {
        return Err(ConfigError::new(
            key,
            "must not be empty (leave the key out for no rule)",
        ));
    }
    if list.iter().any(|v| v.trim().is_empty()) {
        return Err(ConfigError::new(key, "entries must not be empty"));
    }
    Ok(list)
}

fn validate_access(raw: RawAccess) -> Result<AccessConfig> {
    let domains = rule_list("access.allowed_email_domains", raw.allowed_email_domains)?
        .into_iter()
        .map(|d| {
            if d.contains('@') || d.starts_with('.') || d.contains(char::is_whitespace) {
                return Err(ConfigError::new(
                    "access.allowed_email_domains",
                    format!("expected a domain such as \"example.com\", got {d:?}"),
                ));
            }
            Ok(d.to_ascii_lowercase())
        })
        .collect::<Result<Vec<_>>>()?;
    let emails = rule_list("access.allowed_emails", raw.allowed_emails)?
        .into_iter()
        .map(|e| match e.rsplit_once('@') {
            Some((local, domain)) if !local.is_empty() && !domain.is_empty() => {
                Ok(e.to_ascii_lowercase())
            }
            _ => Err(ConfigError::new(
                "access.allowed_emails",
                format!("expected an address such as \"ops@example.org\", got {e:?}"),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    let groups = rule_list("access.allowed_groups", raw.allowed_groups)?;
    let groups_claim = raw.groups_claim.unwrap_or_else(|| "groups".into());
    if groups_claim.is_empty() {
        return Err(ConfigError::new("access.groups_claim", "must not be empty"));
    }
    let mut claims = Vec::new();
    for (name, value) in raw.claims.unwrap_or_default() {
        let key = format!("access.claims.{name}");
        if name.is_empty() {
            return Err(ConfigError::new(key, "the claim name must not be empty"));
        }
        let toml::Value::Array(items) = value else {
            return Err(ConfigError::new(
                key,
                "expected a list of accepted values, such as [\"eng\"] or [3]",
            ));
        };
        if items.is_empty() {
            return Err(ConfigError::new(
                key,
                "must not be empty (leave the claim out for no rule)",
            ));
        }
        let values = items
            .into_iter()
            .map(|item| match item {
                toml::Value::String(s) => Ok(serde_json::Value::String(s)),
                toml::Value::Integer(i) => Ok(serde_json::Value::from(i)),
                toml::Value::Float(f) => serde_json::Number::from_f64(f)
                    .map(serde_json::Value::Number)
                    .ok_or_else(|| ConfigError::new(&key, "a number must be finite")),
                toml::Value::Boolean(b) => Ok(serde_json::Value::Bool(b)),
                _ => Err(ConfigError::new(
                    &key,
                    "accepted values are strings, numbers or booleans",
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        claims.push((name, values));
    }
    Ok(AccessConfig {
        require_email_verified: raw.require_email_verified.unwrap_or(true),
        allowed_email_domains: domains,
        allowed_emails: emails,
        allowed_groups: groups,
        groups_claim,
        claims,
    })
}

fn validate_api(raw: RawApi, oidc: &OidcConfig) -> Result<ApiConfig> {
    let audiences = rule_list("api.audiences", raw.audiences)?;
    let introspection = raw.introspection.unwrap_or(false);
    if audiences.is_empty() && !introspection {
        return Err(ConfigError::new(
            "api",
            "set api.audiences (JWT access tokens) or api.introspection = true (opaque tokens), or both",
        ));
    }
    if introspection && oidc.client_auth == ClientAuthMethod::None {
        return Err(ConfigError::new(
            "api.introspection",
            "introspection needs client authentication (RFC 7662 section 2.1); oidc.client_auth is \"none\"",
        ));
    }
    Ok(ApiConfig {
        audiences,
        introspection,
        introspection_cache: duration(
            "api.introspection_cache",
            raw.introspection_cache.as_deref(),
            "60s",
        )?,
    })
}

fn validate_assertion(raw: RawAssertion, headers: &HeadersConfig) -> Result<AssertionConfig> {
    let key = "assertion.header";
    let text = raw
        .header
        .as_deref()
        .unwrap_or("X-Portcullis-Jwt-Assertion");
    let header = HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| ConfigError::new(key, format!("{text:?} is not a valid HTTP header name")))?;
    if crate::proxy::is_reserved_header(&header) {
        return Err(ConfigError::new(
            key,
            "this header is managed by the gateway and cannot carry the assertion",
        ));
    }
    if headers.claims.iter().any(|(h, _)| *h == header) {
        return Err(ConfigError::new(
            key,
            "this header already carries a claim ([headers])",
        ));
    }
    let audience = match raw.audience {
        Some(a) if a.trim().is_empty() => {
            return Err(ConfigError::new("assertion.audience", "must not be empty"))
        }
        a => a,
    };
    let key_pem = match raw.key_file {
        Some(path) => {
            let pem = super::read_limited(&path, super::MAX_FILE_BYTES).map_err(|e| {
                ConfigError::new(
                    "assertion.key_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            crate::assertion::SigningKey::from_pem(&pem).map_err(|e| {
                ConfigError::new("assertion.key_file", format!("{}: {e}", path.display()))
            })?;
            Some(SecretBox::new(Box::new(pem)))
        }
        None => None,
    };
    Ok(AssertionConfig {
        header,
        lifetime: duration("assertion.lifetime", raw.lifetime.as_deref(), "5m")?,
        audience,
        key_pem,
    })
}

fn validate_session(raw: Option<RawSession>, public_url: &Url) -> Result<SessionConfig> {
    let raw =
        raw.ok_or_else(|| ConfigError::new("session", "the [session] section is required"))?;
    let secret_text = secret_pair(
        "session.secret",
        raw.secret.clone(),
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
    let cookie_name = raw
        .cookie_name
        .clone()
        .unwrap_or_else(|| "_portcullis".into());
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
    let store = raw.store.unwrap_or(StoreKind::Cookie);
    let redis = validate_redis(&raw, store)?;
    let https = public_url.scheme() == "https";
    let secure = raw.secure.unwrap_or(https);
    let lifetime = duration("session.lifetime", raw.lifetime.as_deref(), "12h")?;
    let idle_timeout = raw
        .idle_timeout
        .as_deref()
        .map(|t| duration("session.idle_timeout", Some(t), ""))
        .transpose()?;
    let cookie_domain = raw
        .cookie_domain
        .as_deref()
        .map(|d| cookie_domain(d, public_url, &cookie_name))
        .transpose()?;
    Ok(SessionConfig {
        secret: SecretBox::new(Box::new(secret)),
        previous_secrets,
        cookie_name,
        lifetime,
        secure,
        store,
        redis,
        idle_timeout,
        refresh: raw.refresh.unwrap_or(RefreshMode::Auto),
        refresh_before: duration(
            "session.refresh_before",
            raw.refresh_before.as_deref(),
            "60s",
        )?,
        cookie_domain,
    })
}

/// `session.cookie_domain`: a domain of two labels or more (browsers refuse a public suffix), not
/// an address, that `public_url`'s host lies in: the callback there sets the cookies every tool
/// under the domain then shares. A leading dot (the old spelling) is dropped.
fn cookie_domain(text: &str, public_url: &Url, cookie_name: &str) -> Result<String> {
    let key = "session.cookie_domain";
    let domain = text.trim_start_matches('.').to_ascii_lowercase();
    crate::router::host::dns_name(&domain).map_err(|e| ConfigError::new(key, e))?;
    if domain.contains('_') {
        return Err(ConfigError::new(
            key,
            format!("{domain:?}: '_' cannot appear in a cookie domain"),
        ));
    }
    if !domain.contains('.') {
        return Err(ConfigError::new(
            key,
            format!(
                "{domain:?}: expected a domain of two labels or more, such as \"corp.example\""
            ),
        ));
    }
    if domain.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(ConfigError::new(
            key,
            "an IP address cannot be a cookie domain; leave the key out for host-only cookies",
        ));
    }
    super::cookie_domain_holds(&domain, public_url)?;
    if cookie_name.starts_with("__Host-") {
        return Err(ConfigError::new(
            key,
            "a __Host- cookie (session.cookie_name) cannot carry a Domain",
        ));
    }
    Ok(domain)
}

fn validate_redis(raw: &RawSession, store: StoreKind) -> Result<Option<RedisConfig>> {
    let any_set = raw.redis_url.is_some()
        || raw.redis_url_file.is_some()
        || raw.redis_mode.is_some()
        || raw.redis_nodes.is_some()
        || raw.redis_sentinel_master.is_some()
        || raw.redis_ca_file.is_some();
    if store != StoreKind::Redis {
        if any_set {
            return Err(ConfigError::new(
                "session.store",
                "the redis_* keys need store = \"redis\"",
            ));
        }
        return Ok(None);
    }
    let mode = raw.redis_mode.unwrap_or(RedisMode::Standalone);
    let url = secret_pair(
        "session.redis_url",
        raw.redis_url.clone(),
        "session.redis_url_file",
        raw.redis_url_file.as_ref(),
    )?;
    let nodes = raw.redis_nodes.clone().unwrap_or_default();
    let url = match (mode, url) {
        (RedisMode::Standalone, None) => {
            return Err(ConfigError::new(
                "session.redis_url",
                "is required with store = \"redis\" (or session.redis_url_file)",
            ))
        }
        (_, Some(url)) => url,
        // Sentinel and cluster take their nodes from redis_nodes; the URL only adds credentials.
        (_, None) => "redis://".to_string(),
    };
    let parsed = Url::parse(&url).map_err(|_| {
        // Never echo the value: it may hold a password.
        ConfigError::new(
            "session.redis_url",
            "is not a URL such as redis://host:6379/0 or rediss://:password@host:6380",
        )
    })?;
    if !matches!(parsed.scheme(), "redis" | "rediss") {
        return Err(ConfigError::new(
            "session.redis_url",
            "expected a redis:// or rediss:// URL",
        ));
    }
    if mode == RedisMode::Standalone && parsed.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new("session.redis_url", "has no host"));
    }
    if mode != RedisMode::Standalone && nodes.is_empty() {
        return Err(ConfigError::new(
            "session.redis_nodes",
            "is required in sentinel and cluster mode (host:port of each sentinel or seed node)",
        ));
    }
    if mode == RedisMode::Standalone && !nodes.is_empty() {
        return Err(ConfigError::new(
            "session.redis_nodes",
            "is only used in sentinel and cluster mode",
        ));
    }
    for node in &nodes {
        let ok = node.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            return Err(ConfigError::new(
                "session.redis_nodes",
                format!("expected host:port, got {node:?}"),
            ));
        }
    }
    let sentinel_master = raw.redis_sentinel_master.clone();
    match (mode, &sentinel_master) {
        (RedisMode::Sentinel, None) => {
            return Err(ConfigError::new(
                "session.redis_sentinel_master",
                "is required in sentinel mode",
            ))
        }
        (RedisMode::Standalone | RedisMode::Cluster, Some(_)) => {
            return Err(ConfigError::new(
                "session.redis_sentinel_master",
                "is only used in sentinel mode",
            ))
        }
        _ => {}
    }
    let ca_pem = raw
        .redis_ca_file
        .as_ref()
        .map(|path| {
            let pem = super::read_limited(path, super::MAX_FILE_BYTES).map_err(|e| {
                ConfigError::new(
                    "session.redis_ca_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(ConfigError::new(
                    "session.redis_ca_file",
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
            Ok(pem)
        })
        .transpose()?;
    if ca_pem.is_some() && parsed.scheme() != "rediss" {
        return Err(ConfigError::new(
            "session.redis_ca_file",
            "is only used with a rediss:// URL",
        ));
    }
    Ok(Some(RedisConfig {
        mode,
        url: SecretString::from(url),
        nodes,
        sentinel_master,
        ca_pem,
    }))
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
    let host = raw
        .host
        .as_deref()
        .map(|h| HostPattern::parse(h).map_err(|e| ConfigError::new(key("host"), e)))
        .transpose()?;
    // A route that names a host covers all of its paths unless it says otherwise.
    let path_text = match (&host, raw.path.as_ref()) {
        (Some(_), None) => "^/",
        (_, path) => required(&key("path"), path)?,
    };
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
    let policy = raw.policy.unwrap_or(Policy::Authenticated);
    let upstream = raw
        .upstream
        .as_deref()
        .map(|u| upstream_url(&key("upstream"), u))
        .transpose()?;
    let allowed_groups = match raw.allowed_groups {
        None => None,
        Some(_) if policy != Policy::Authenticated => {
            return Err(ConfigError::new(
                key("allowed_groups"),
                "only applies to routes with policy = \"authenticated\"",
            ))
        }
        groups => Some(rule_list(&key("allowed_groups"), groups)?),
    };
    Ok(RouteConfig {
        host,
        path,
        methods,
        policy,
        upstream,
        allowed_groups,
    })
}

fn validate_log(raw: RawLog) -> Result<LogConfig> {
    let format = raw.format.unwrap_or(LogFormat::Text);
    let level = raw.level.unwrap_or_else(|| "info".into());
    tracing_subscriber::EnvFilter::try_new(&level).map_err(|e| {
        ConfigError::new(
            "log.level",
            format!("invalid level or filter {level:?}: {e}"),
        )
    })?;
    Ok(LogConfig {
        format,
        level,
        access_log: raw.access_log.unwrap_or(true),
    })
}

/// All route patterns as one set, matched in one pass per request. Each pattern compiled alone within
/// the size limit, but together they may not: the error names the first route that does not fit.
fn route_set(routes: &[RouteConfig]) -> Result<RegexSet> {
    let patterns: Vec<&str> = routes.iter().map(|r| r.path.as_str()).collect();
    RegexSet::new(&patterns).map_err(|e| {
        let culprit = (1..=patterns.len())
            .find(|&n| RegexSet::new(&patterns[..n]).is_err())
            .map_or(patterns.len().saturating_sub(1), |n| n - 1);
        ConfigError::new(
            format!("routes[{culprit}].path"),
            format!(
                "the route patterns together are too large to match at once ({}); simplify or merge routes",
                one_line(&e.to_string())
            ),
        )
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

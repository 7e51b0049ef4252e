//! The schema of `gateway.toml`: what serde reads before anything is checked.
//!
//! One schema, here: every section is a struct that refuses unknown keys (`deny_unknown_fields`), so a
//! misspelt key stops start-up naming it; keys with a fixed set of values are enums, so serde names
//! the choices. Values that need more than a type check (URLs, durations, files, regexes) stay
//! strings and are turned into typed values by `validate`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::{ClientAuthMethod, LogFormat, Policy, RedisMode, RefreshMode, StoreKind};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub upstream: Option<RawUpstream>,
    pub oidc: Option<RawOidc>,
    pub session: Option<RawSession>,
    /// Free-form: header names map to claims, beside two switches; checked by `validate`.
    pub headers: Option<toml::Table>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub log: RawLog,
    pub access: Option<RawAccess>,
    pub api: Option<RawApi>,
    pub assertion: Option<RawAssertion>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub grace_period: Option<String>,
    pub header_read_timeout: Option<String>,
    pub prefix: Option<String>,
    pub max_connections: Option<Count>,
    pub shutdown_delay: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub metrics_listen: Option<String>,
}

/// A count given as a TOML integer, or as a string of digits (which is what an environment variable
/// override gives).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Count {
    Number(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub url: Option<String>,
    pub timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub preserve_host: Option<bool>,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub client_auth: Option<ClientAuthMethod>,
    pub private_key_file: Option<PathBuf>,
    pub private_key_id: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub pkce: Option<bool>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    pub clock_skew: Option<String>,
    pub http_timeout: Option<String>,
    pub jwks_refetch_interval: Option<String>,
    pub extra_auth_params: Option<BTreeMap<String, String>>,
    pub userinfo_claims: Option<bool>,
    pub introspection_endpoint: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSession {
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub previous_secrets: Vec<String>,
    pub cookie_name: Option<String>,
    pub lifetime: Option<String>,
    pub store: Option<StoreKind>,
    pub secure: Option<bool>,
    pub redis_url: Option<String>,
    pub redis_url_file: Option<PathBuf>,
    pub redis_mode: Option<RedisMode>,
    pub redis_nodes: Option<Vec<String>>,
    pub redis_sentinel_master: Option<String>,
    pub redis_ca_file: Option<PathBuf>,
    pub idle_timeout: Option<String>,
    pub refresh: Option<RefreshMode>,
    pub refresh_before: Option<String>,
    pub cookie_domain: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub path: Option<String>,
    pub methods: Option<Vec<String>>,
    pub policy: Option<Policy>,
    pub upstream: Option<String>,
    pub allowed_groups: Option<Vec<String>>,
    pub host: Option<String>,
    pub case_insensitive: Option<bool>,
}

/// `[access]`: who may pass after login.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccess {
    pub allowed_email_domains: Option<Vec<String>>,
    pub allowed_emails: Option<Vec<String>>,
    pub allowed_groups: Option<Vec<String>>,
    pub groups_claim: Option<String>,
    pub require_email_verified: Option<bool>,
    /// Claim (a name or a dotted path) to the values it may take; values are checked by `validate`.
    pub claims: Option<toml::Table>,
}

/// `[api]`: bearer tokens from API clients.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub audiences: Option<Vec<String>>,
    pub introspection: Option<bool>,
    pub introspection_cache: Option<String>,
}

/// `[assertion]`: a signed identity JWT for the upstream.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAssertion {
    pub header: Option<String>,
    pub lifetime: Option<String>,
    pub audience: Option<String>,
    pub key_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
    pub access_log: Option<bool>,
}

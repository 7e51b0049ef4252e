//! What the gateway holds while it runs, in two parts with different lives.
//!
//! - [`Runtime`]: built once per process and kept: the identity provider (its metadata and key cache),
//!   the session store with its cache of opened sessions, the upstream connection pools, the metrics
//!   registry (so counters run on across reloads). Nothing here
//!   depends on a configuration value that a reload may change without a restart.
//! - [`Snapshot`]: built from one validated [`Config`]: the route table, the header rules, the identity
//!   mapping, the cookie codec. The runtime holds the current one in an `ArcSwap`; each request takes
//!   the snapshot in force when it arrives and keeps it to its end, and [`Runtime::reload`] swaps in a
//!   new one, so a reload changes what later requests see without dropping a connection or a session.
//!
//! Handlers get both as a [`Ctx`] and never reach for a global.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use secrecy::ExposeSecret as _;
use url::Url;

use crate::assertion::{AssertionKeys, AssertionSettings, Subject};
use crate::bearer::TokenCache;
use crate::config::{ClientAuthMethod, Config};
use crate::identity::IdentityMapping;
use crate::login::ReturnTargets;
use crate::oidc::{ClientAuth, ClientSecret, EndpointOverrides, Provider, ProviderConfig};
use crate::policy::{AccessPolicy, GroupRule};
use crate::proxy::tls::Connectors;
use crate::proxy::{Pool, Proxy, Upstream};
use crate::router::Router;
use crate::session::store::{CookieStore, RedisStore, SessionKey};
use crate::session::{
    Authenticated, CookieSettings, Session, SessionCache, SessionCookies, Sessions, Store,
};
use crate::telemetry::metrics::Metrics;

/// The long-lived part: see the module header.
pub struct Runtime {
    pub provider: Arc<Provider>,
    pub sessions: Sessions,
    /// Sessions whose refresh waits for the provider to come back.
    pub refresh_backoff: crate::refresh::Backoff,
    /// API clients' tokens, validated or introspected, with their single flight.
    pub tokens: TokenCache,
    /// The keys that sign `[assertion]`s (kept across configurations, so a reload keeps the key).
    pub assertion_keys: AssertionKeys,
    /// Every series of `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// Whether the main listener serves `/metrics` (no `server.metrics_listen` at start-up).
    pub metrics_on_main: bool,
    pools: Pools,
    snapshot: ArcSwap<Snapshot>,
    generations: AtomicU64,
    /// Set once shutdown has begun: `/readyz` answers 503 from then on.
    draining: AtomicBool,
}

/// What a handler works with: the runtime, and the snapshot its request started under.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub rt: &'a Runtime,
    pub snap: &'a Snapshot,
}

impl Runtime {
    /// Build the runtime and the first snapshot. No network traffic: the provider's metadata is
    /// loaded by [`Provider::spawn_loader`] (the caller starts it), so public routes are served while
    /// the provider is unreachable.
    pub fn new(config: Config) -> Result<Arc<Runtime>, String> {
        let provider = Provider::new(provider_config(&config)).map_err(|e| e.to_string())?;
        let metrics = {
            let provider = provider.clone();
            Arc::new(Metrics::new(Arc::new(move || provider.jwks_fetches())))
        };
        let metrics_on_main = config.server.metrics_listen.is_none();
        let cache = Arc::new(SessionCache::default());
        let store = match &config.session.redis {
            None => Store::Cookie(CookieStore::new(config.session.lifetime)),
            Some(redis) => Store::Redis(RedisStore::new(
                redis,
                cache.clone(),
                config.session.idle_timeout,
            )?),
        };
        let assertion_keys = AssertionKeys::new(assertion_key(&config))
            .map_err(|e| format!("assertion.key_file: {e}"))?;
        let pools = Pools::default();
        let snapshot = Snapshot::build(config, 0, &pools)?;
        Ok(Arc::new(Runtime {
            provider,
            sessions: Sessions::with_cache(store, cache).with_metrics(metrics.clone()),
            refresh_backoff: Default::default(),
            tokens: TokenCache::default(),
            assertion_keys,
            metrics,
            metrics_on_main,
            pools,
            snapshot: ArcSwap::from_pointee(snapshot),
            generations: AtomicU64::new(0),
            draining: AtomicBool::new(false),
        }))
    }

    /// Shutdown has begun: readiness is withdrawn so that load balancers stop sending.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The snapshot in force: a request keeps the one it started with.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Replace the snapshot with one built from `config`. Requests already running finish under the
    /// old one; connections and sessions are untouched. Keys that belong to the runtime (the provider,
    /// the listener, the store) keep their running values; their names are returned so the caller
    /// can say that they need a restart.
    pub fn reload(&self, config: Config) -> Result<Vec<&'static str>, String> {
        let mut config = config;
        let current = self.snapshot();
        let restart = needs_restart(&current.config, &config);
        // The provider's redirect URI is built on the running prefix and public_url: the routes,
        // the return targets and the cookie domain keep them too.
        config
            .server
            .prefix
            .clone_from(&current.config.server.prefix);
        config
            .server
            .public_url
            .clone_from(&current.config.server.public_url);
        if let Some(domain) = &config.session.cookie_domain {
            crate::config::cookie_domain_holds(domain, &config.server.public_url)
                .map_err(|e| e.to_string())?;
        }
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot = Snapshot::build(config, generation, &self.pools)?;
        // A new assertion key signs from now on; the old one stays published for as long as what it
        // signed may live.
        let retain = current
            .config
            .assertion
            .as_ref()
            .map(|a| a.lifetime)
            .unwrap_or_default();
        self.assertion_keys
            .update(
                assertion_key(&snapshot.config),
                retain,
                crate::login::unix_now(),
            )
            .map_err(|e| format!("assertion.key_file: {e}"))?;
        self.sessions.note_settings(
            snapshot.config.session.lifetime,
            snapshot.config.session.idle_timeout,
        );
        self.snapshot.store(Arc::new(snapshot));
        Ok(restart)
    }

    /// The assertion header value for `auth` going to upstream `slot`: reused from its cache while
    /// fresh, else minted now. `None` without `[assertion]`.
    pub fn assertion(
        &self,
        snap: &Snapshot,
        auth: &Authenticated,
        slot: usize,
    ) -> Option<http::HeaderValue> {
        let settings = snap.assertion.as_ref()?;
        let key = self.assertion_keys.current();
        let now = crate::login::unix_now();
        if let Some(value) = auth.assertions.fresh(slot, &key, now) {
            return Some(value);
        }
        let claims = &auth.session.claims;
        auth.assertions.mint(
            settings,
            slot,
            &key,
            Subject {
                claims,
                groups: snap.access.groups(claims),
                expires_at: auth.session.expires_at,
            },
            now,
        )
    }
}

/// The PEM of `assertion.key_file`, when one is configured.
fn assertion_key(config: &Config) -> Option<&[u8]> {
    config
        .assertion
        .as_ref()
        .and_then(|a| a.key_pem.as_ref())
        .map(|k| k.expose_secret().as_slice())
}

/// The part built from one configuration: see the module header.
pub struct Snapshot {
    /// Tells snapshots apart: what is cached under one (identity headers) is not served under another.
    pub generation: u64,
    pub config: Config,
    pub router: Router,
    /// Slot 0 is `[upstream]`; route-specific upstreams follow.
    pub upstreams: Vec<Upstream>,
    pub proxy: Proxy,
    pub identity: IdentityMapping,
    pub cookies: SessionCookies,
    /// `[access]`, compiled.
    pub access: AccessPolicy,
    /// Each route's own `allowed_groups`, by route index.
    pub route_groups: Vec<Option<GroupRule>>,
    /// `[assertion]` as this configuration applies it.
    pub assertion: Option<AssertionSettings>,
    /// Where a browser may be sent after a login or a sign-out.
    pub return_targets: ReturnTargets,
    /// Forward-auth's `X-Auth-Request-*` headers and their claims.
    pub auth_request_mapping: Vec<(http::HeaderName, String)>,
}

impl Snapshot {
    fn build(config: Config, generation: u64, pools: &Pools) -> Result<Snapshot, String> {
        let previous: Vec<Vec<u8>> = config
            .session
            .previous_secrets
            .iter()
            .map(|s| s.expose_secret().clone())
            .collect();
        let cookies = SessionCookies::new(
            CookieSettings {
                name: config.session.cookie_name.clone(),
                secure: config.session.secure,
                max_age: config.session.lifetime,
                domain: config.session.cookie_domain.clone(),
            },
            config.session.secret.expose_secret(),
            &previous,
        )
        .map_err(|e| format!("session: {e}"))?;
        pools.use_tls(&config)?;
        let mut upstreams = vec![pools.upstream(&config.upstream.url)];
        let mut route_slots = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            match &route.upstream {
                Some(url) => {
                    upstreams.push(pools.upstream(url));
                    route_slots.push(upstreams.len() - 1);
                }
                None => route_slots.push(0),
            }
        }
        let router = Router::new(
            &config.server.prefix,
            &config.routes,
            &config.route_set,
            |i| route_slots[i],
        );
        let identity = IdentityMapping::new(&config.headers);
        let assertion = config.assertion.as_ref().map(|a| {
            let mut urls = vec![&config.upstream.url];
            urls.extend(config.routes.iter().filter_map(|r| r.upstream.as_ref()));
            AssertionSettings {
                header: a.header.clone(),
                lifetime: a.lifetime.as_secs().max(1),
                issuer: config.server.public_url.origin().ascii_serialization(),
                audiences: urls
                    .iter()
                    .map(|u| match &a.audience {
                        Some(aud) => aud.clone(),
                        None => u.origin().ascii_serialization(),
                    })
                    .collect(),
            }
        });
        let proxy = Proxy::new(
            config.upstream.connect_timeout,
            config.upstream.timeout,
            config.upstream.preserve_host,
            config.server.trusted_proxies.clone(),
            identity
                .names()
                .chain(assertion.as_ref().map(|a| a.header.clone())),
        );
        let access = AccessPolicy::new(&config.access);
        let auth_request_mapping = crate::forward_auth::auth_request_mapping(
            &config.headers.claims,
            &config.access.groups_claim,
        );
        let return_targets = ReturnTargets::new(
            &config.server.public_url,
            config.routes.iter().filter_map(|r| r.host.as_ref()),
            config.session.cookie_domain.as_deref(),
        );
        let route_groups = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.allowed_groups
                    .as_ref()
                    .map(|g| GroupRule::new(format!("routes[{i}].allowed_groups"), g.clone()))
            })
            .collect();
        Ok(Snapshot {
            generation,
            config,
            router,
            upstreams,
            proxy,
            identity,
            cookies,
            access,
            route_groups,
            assertion,
            return_targets,
            auth_request_mapping,
        })
    }

    /// A session opened under this configuration: its identity headers and `[access]` verdict, made
    /// once and kept with it (in the session cache, or the token cache for an API client).
    pub fn open(&self, session: Session, key: SessionKey) -> Authenticated {
        let identity = self.identity.headers(
            &session.claims,
            session.access_token.as_deref(),
            session.id_token.as_deref(),
        );
        let access = self.access.check(&session.claims);
        Authenticated::new(session, identity, access, key)
    }
}

/// Upstream connection pools by origin, kept across snapshots so a reload keeps warm connections. The
/// pools of `https://` upstreams are made with the TLS settings in force; new settings (another
/// `upstream.ca_file` or client certificate) start new pools.
#[derive(Default)]
struct Pools {
    by_origin: Mutex<HashMap<String, Pool>>,
    /// The TLS settings' fingerprint and their connectors, while any upstream is `https://`.
    tls: Mutex<Option<([u8; 32], Arc<Connectors>)>>,
}

impl Pools {
    /// Make the connectors of `config`'s TLS settings the ones new pools use.
    fn use_tls(&self, config: &Config) -> Result<(), String> {
        let https = std::iter::once(&config.upstream.url)
            .chain(config.routes.iter().filter_map(|r| r.upstream.as_ref()))
            .any(|u| u.scheme() == "https");
        let wanted = https.then(|| crate::proxy::tls::fingerprint(&config.upstream.tls));
        let mut current = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().map(|(f, _)| *f) == wanted {
            return Ok(());
        }
        *current = match wanted {
            None => None,
            Some(f) => Some((f, Arc::new(Connectors::new(&config.upstream.tls)?))),
        };
        self.by_origin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|origin, _| !origin.starts_with("https:"));
        Ok(())
    }

    fn upstream(&self, url: &Url) -> Upstream {
        let origin = url.origin().ascii_serialization();
        let connectors = self
            .tls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, c)| c.clone());
        let pool = self
            .by_origin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(origin)
            .or_insert_with(|| Pool::new(url, connectors))
            .clone();
        Upstream::with_pool(url, pool)
    }
}

/// Keys whose running value belongs to the runtime and that differ between `old` and `new`.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.oidc, &new.oidc);
    let endpoints = |c: &crate::config::OidcConfig| {
        [
            c.authorization_endpoint.clone(),
            c.token_endpoint.clone(),
            c.jwks_uri.clone(),
            c.userinfo_endpoint.clone(),
            c.end_session_endpoint.clone(),
            c.introspection_endpoint.clone(),
        ]
    };
    let secret = |c: &crate::config::OidcConfig| {
        c.client_secret
            .as_ref()
            .map(|s| s.expose_secret().to_string())
    };
    let private_key =
        |c: &crate::config::OidcConfig| c.private_key.as_ref().map(|k| k.expose_secret().clone());
    let redis = |c: &Config| {
        c.session.redis.as_ref().map(|r| {
            (
                r.mode,
                r.url.expose_secret().to_string(),
                r.nodes.clone(),
                r.sentinel_master.clone(),
                r.ca_pem.clone(),
            )
        })
    };
    let checks: [(&'static str, bool); 21] = [
        ("server.listen", old.server.listen != new.server.listen),
        (
            "server.metrics_listen",
            old.server.metrics_listen != new.server.metrics_listen,
        ),
        (
            "server.public_url",
            old.server.public_url != new.server.public_url,
        ),
        (
            "server.max_connections",
            old.server.max_connections != new.server.max_connections,
        ),
        (
            "server.tls_cert_file",
            old.server.tls.as_ref().map(|t| (&t.cert_file, &t.key_file))
                != new.server.tls.as_ref().map(|t| (&t.cert_file, &t.key_file)),
        ),
        ("server.prefix", old.server.prefix != new.server.prefix),
        ("oidc.issuer", o.issuer != n.issuer),
        ("oidc.client_id", o.client_id != n.client_id),
        ("oidc.client_auth", o.client_auth != n.client_auth),
        ("oidc.client_secret", secret(o) != secret(n)),
        (
            "oidc.private_key_file",
            private_key(o) != private_key(n) || o.private_key_id != n.private_key_id,
        ),
        ("oidc.scopes", o.scopes != n.scopes || o.pkce != n.pkce),
        ("oidc endpoints", endpoints(o) != endpoints(n)),
        ("session.store", old.session.store != new.session.store),
        ("session.redis_*", redis(old) != redis(new)),
        (
            "oidc.extra_auth_params",
            o.extra_auth_params != n.extra_auth_params,
        ),
        ("oidc.clock_skew", o.clock_skew != n.clock_skew),
        ("oidc.http_timeout", o.http_timeout != n.http_timeout),
        (
            "oidc.jwks_refetch_interval",
            o.jwks_refetch_interval != n.jwks_refetch_interval,
        ),
        ("log.format", old.log.format != new.log.format),
        ("log.level", old.log.level != new.log.level),
    ];
    checks
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
}

/// The relying-party settings of `[oidc]`, as the `oidc` module takes them.
pub fn provider_config(config: &Config) -> ProviderConfig {
    let oidc = &config.oidc;
    let secret = || {
        ClientSecret::new(
            oidc.client_secret
                .as_ref()
                .map(|s| s.expose_secret().to_string())
                .unwrap_or_default(),
        )
    };
    let client_auth = match oidc.client_auth {
        ClientAuthMethod::SecretBasic => ClientAuth::SecretBasic(secret()),
        ClientAuthMethod::SecretPost => ClientAuth::SecretPost(secret()),
        ClientAuthMethod::PrivateKeyJwt => ClientAuth::PrivateKeyJwt {
            key_pem: oidc
                .private_key
                .as_ref()
                .map(|k| k.expose_secret().clone())
                .unwrap_or_default()
                .into(),
            key_id: oidc.private_key_id.clone(),
        },
        ClientAuthMethod::None => ClientAuth::None,
    };
    ProviderConfig {
        issuer: oidc.issuer.clone(),
        client_id: oidc.client_id.clone(),
        client_auth,
        scopes: oidc.scopes.clone(),
        pkce: oidc.pkce,
        redirect_uri: crate::login::redirect_uri(&config.server.public_url, &config.server.prefix),
        endpoints: EndpointOverrides {
            authorization_endpoint: oidc.authorization_endpoint.clone(),
            token_endpoint: oidc.token_endpoint.clone(),
            jwks_uri: oidc.jwks_uri.clone(),
            userinfo_endpoint: oidc.userinfo_endpoint.clone(),
            end_session_endpoint: oidc.end_session_endpoint.clone(),
            introspection_endpoint: oidc.introspection_endpoint.clone(),
        },
        clock_skew: oidc.clock_skew,
        http_timeout: oidc.http_timeout,
        jwks_min_refetch_interval: oidc.jwks_refetch_interval,
        extra_auth_params: oidc.extra_auth_params.clone(),
    }
}

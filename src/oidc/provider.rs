//! The runtime object the gateway shares (`Arc<Provider>`): configuration, loaded metadata, the
//! key cache, the HTTP sender, and readiness and reachability flags.
//!
//! What it owns: the order of calls (discovery, JWKS, token, userinfo) and the background task
//! that loads metadata and keys at start-up and re-probes a provider found unreachable. What it
//! does not own: any protocol rule; those live in the pure modules beside it.
//!
//! Why it is shaped so: the gateway starts serving before the provider answers (existing
//! sessions keep working; `/readyz` says not ready), so loading is a retrying background task
//! with exponential backoff rather than a start-up step that could hang or fail the process.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::watch;
use url::Url;

use super::access_token::{check_claims, AccessTokenError, AccessTokenExpectations};
use super::authorize::{AuthRequest, RESERVED_PARAMS};
use super::id_token::{Expectations, RefreshExpectations, UnverifiedIdToken, VerifiedIdToken};
use super::introspection::{
    introspection_request, parse_introspection, Introspected, IntrospectionError,
    IntrospectionExpectations,
};
use super::jwks::{parse_jwks, JwksError, KeyCache, KeySet};
use super::jws::{JwsError, UnverifiedJws, VerifiedJws};
use super::logout_token::{check_logout_token, LogoutClaims, LogoutExpectations, LogoutTokenError};
use super::metadata::{
    check_endpoint, discovery_needed, discovery_request, discovery_url, parse_discovery, resolve,
    MetadataError,
};
use super::sender::{HttpSender, SendError};
pub use super::token::ExchangeError;
use super::token::{
    parse_token_response, refresh_request, token_request, ClientCredentials, CodeExchange,
};
pub use super::userinfo::UserinfoError;
use super::userinfo::{parse_userinfo, userinfo_request};
use super::{
    authorization_url, get_json_request, AccessToken, AuthCode, IdTokenError, LoginSecrets, Nonce,
    PkceVerifier, ProviderConfig, ProviderMetadata, RefreshToken, TokenResponse,
};

/// Errors of [`Provider::new`] and [`Provider::begin_login`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("provider metadata not loaded yet")]
    NotReady,
    /// A configuration value is unusable; the message names the key.
    #[error("{0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why one load attempt failed (logged by the loader, then retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("discovery: {0}")]
    Metadata(#[from] MetadataError),
    #[error("{0}")]
    Jwks(#[from] JwksError),
    #[error("{0}")]
    Send(#[from] SendError),
}

/// Retry delays of the background task: doubling from `initial` up to `cap`.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    initial: Duration,
    cap: Duration,
}

const DEFAULT_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(250),
    cap: Duration::from_secs(30),
};

/// The provider as the gateway sees it. Create with [`Provider::new`], then call
/// [`Provider::spawn_loader`].
#[derive(Debug)]
pub struct Provider {
    config: ProviderConfig,
    credentials: ClientCredentials,
    metadata: RwLock<Option<Arc<ProviderMetadata>>>,
    keys: KeyCache,
    http: HttpSender,
    ready: watch::Sender<bool>,
    reachable: watch::Sender<bool>,
    load_failures: watch::Sender<u64>,
    backoff: Backoff,
}

impl Provider {
    /// Checks the configuration (issuer, endpoints, extra parameters, client key) and builds the
    /// HTTP client. No network traffic; call [`Provider::spawn_loader`] next.
    pub fn new(config: ProviderConfig) -> Result<Arc<Self>, ProviderError> {
        Self::with_backoff(config, DEFAULT_BACKOFF)
    }

    fn with_backoff(config: ProviderConfig, backoff: Backoff) -> Result<Arc<Self>, ProviderError> {
        let cfg = |key: &str, e: &dyn std::fmt::Display| {
            ProviderError::Config(format!("oidc.{key}: {e}"))
        };
        check_endpoint("issuer", &config.issuer).map_err(|e| cfg("issuer", &e))?;
        // Discovery 2: the issuer has no query or fragment.
        if config.issuer.query().is_some() {
            return Err(cfg("issuer", &"must not have a query"));
        }
        check_endpoint("redirect_uri", &config.redirect_uri)
            .map_err(|e| cfg("redirect_uri", &e))?;
        if config.client_id.is_empty() {
            return Err(cfg("client_id", &"must not be empty"));
        }
        let e = &config.endpoints;
        for (name, url) in [
            ("authorization_endpoint", &e.authorization_endpoint),
            ("token_endpoint", &e.token_endpoint),
            ("jwks_uri", &e.jwks_uri),
            ("userinfo_endpoint", &e.userinfo_endpoint),
            ("end_session_endpoint", &e.end_session_endpoint),
            ("introspection_endpoint", &e.introspection_endpoint),
        ] {
            if let Some(url) = url {
                check_endpoint(name, url).map_err(|e| cfg(name, &e))?;
            }
        }
        if let Some((k, _)) = config
            .extra_auth_params
            .iter()
            .find(|(k, _)| RESERVED_PARAMS.contains(&k.as_str()))
        {
            return Err(cfg(
                "extra_auth_params",
                &format!("{k:?} is set by portcullis itself"),
            ));
        }
        let credentials = ClientCredentials::from_config(&config.client_auth)
            .map_err(|e| cfg("private_key_file", &e))?;
        let http = HttpSender::new(config.http_timeout).map_err(ProviderError::Internal)?;
        Ok(Arc::new(Self {
            keys: KeyCache::new(config.jwks_min_refetch_interval),
            config,
            credentials,
            metadata: RwLock::new(None),
            http,
            ready: watch::Sender::new(false),
            reachable: watch::Sender::new(true),
            load_failures: watch::Sender::new(0),
            backoff,
        }))
    }

    /// The loaded metadata, if any.
    pub fn metadata(&self) -> Option<Arc<ProviderMetadata>> {
        self.metadata
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Metadata and keys are loaded (what `/readyz` reports).
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Resolves once metadata and keys are loaded.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// False after a call found the provider unreachable, until the background task hears from
    /// it again. New logins should get a 503 page meanwhile.
    pub fn is_reachable(&self) -> bool {
        *self.reachable.borrow()
    }

    /// How many JWKS fetches have been made (start-up load and refetches).
    pub fn jwks_fetches(&self) -> u64 {
        self.keys.fetches()
    }

    /// How many background load attempts have failed.
    pub fn load_failures(&self) -> u64 {
        *self.load_failures.borrow()
    }

    /// Where RP-initiated logout sends the browser, if the provider has such an endpoint.
    pub fn end_session_endpoint(&self) -> Option<Url> {
        self.metadata()?.end_session_endpoint.clone()
    }

    /// The client_id, for RP-initiated logout parameters.
    pub fn client_id(&self) -> &str {
        &self.config.client_id
    }

    fn mark_reachable(&self, up: bool) {
        let changed = self
            .reachable
            .send_if_modified(|r| std::mem::replace(r, up) != up);
        if changed && up {
            tracing::info!(issuer = %self.config.issuer, "identity provider reachable again");
        } else if changed {
            tracing::warn!(issuer = %self.config.issuer, "identity provider unreachable");
        }
    }

    /// Sends through the thin sender and records reachability: any HTTP answer means the
    /// provider is up; a transport failure means it is not.
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, SendError> {
        let result = self.http.send(req).await;
        match &result {
            Ok(_) => self.mark_reachable(true),
            Err(SendError::Unreachable(_)) => self.mark_reachable(false),
            Err(_) => {}
        }
        result
    }

    async fn fetch_jwks(&self, uri: &Url) -> Result<KeySet, LoadError> {
        let req = get_json_request(uri).map_err(|e| LoadError::Jwks(JwksError::BadDocument(e)))?;
        let resp = self.send(req).await?;
        Ok(parse_jwks(&resp)?)
    }

    /// One attempt to load discovery (unless all three core endpoints are set by hand) and the
    /// JWKS. The background task calls this until it succeeds.
    pub async fn load_once(&self) -> Result<(), LoadError> {
        let discovered = if discovery_needed(&self.config.endpoints) {
            let resp = self.send(discovery_request(&self.config.issuer)?).await?;
            Some(parse_discovery(&resp, &self.config.issuer)?)
        } else {
            None
        };
        let meta = Arc::new(resolve(
            &self.config.issuer,
            &self.config.endpoints,
            discovered,
        )?);
        *self
            .metadata
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(meta.clone());
        self.keys.record_fetch();
        let set = self.fetch_jwks(&meta.jwks_uri).await?;
        self.keys.install(set);
        self.ready.send_replace(true);
        Ok(())
    }

    /// One request to see whether the provider answers (any status counts).
    async fn probe(&self) -> bool {
        let url = match self.metadata() {
            Some(meta) if !discovery_needed(&self.config.endpoints) => meta.jwks_uri.clone(),
            _ => discovery_url(&self.config.issuer),
        };
        match get_json_request(&url) {
            Ok(req) => self.send(req).await.is_ok(),
            Err(_) => false,
        }
    }

    /// Starts the background task: load metadata and keys with exponential backoff (250 ms
    /// doubling to 30 s) until it succeeds, then, whenever a call marks the provider
    /// unreachable, re-probe it with the same backoff until it answers. The task holds only a
    /// weak reference and ends when the provider is dropped.
    pub fn spawn_loader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        let mut reachable = self.reachable.subscribe();
        let backoff = self.backoff;
        tokio::spawn(async move {
            let mut delay = backoff.initial;
            loop {
                let Some(provider) = weak.upgrade() else {
                    return;
                };
                match provider.load_once().await {
                    Ok(()) => {
                        tracing::info!(issuer = %provider.config.issuer, "provider metadata and keys loaded");
                        break;
                    }
                    Err(error) => {
                        provider.load_failures.send_modify(|n| *n += 1);
                        tracing::warn!(issuer = %provider.config.issuer, %error, retry_in = ?delay,
                            "loading provider metadata failed");
                    }
                }
                drop(provider);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(backoff.cap);
            }
            loop {
                if reachable.wait_for(|up| !*up).await.is_err() {
                    return;
                }
                let mut delay = backoff.initial;
                loop {
                    let Some(provider) = weak.upgrade() else {
                        return;
                    };
                    if provider.probe().await {
                        break;
                    }
                    tracing::debug!(retry_in = ?delay, "provider still unreachable");
                    drop(provider);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(backoff.cap);
                }
            }
        })
    }

    /// Starts a login: fresh state, nonce and PKCE verifier, and the authorization URL.
    pub fn begin_login(&self) -> Result<(Url, LoginSecrets), ProviderError> {
        let meta = self.metadata().ok_or(ProviderError::NotReady)?;
        let secrets = LoginSecrets::generate(self.config.pkce)
            .map_err(|_| ProviderError::Internal("random generator failed".into()))?;
        let url = authorization_url(
            &AuthRequest {
                endpoint: &meta.authorization_endpoint,
                client_id: &self.config.client_id,
                redirect_uri: &self.config.redirect_uri,
                scopes: &self.config.scopes,
                extra_params: &self.config.extra_auth_params,
            },
            &secrets,
        );
        Ok((url, secrets))
    }

    /// Exchanges the authorization code at the token endpoint.
    pub async fn exchange_code(
        &self,
        code: AuthCode,
        verifier: Option<PkceVerifier>,
    ) -> Result<TokenResponse, ExchangeError> {
        let meta = self.metadata().ok_or(ExchangeError::NotReady)?;
        let exchange = CodeExchange {
            token_endpoint: &meta.token_endpoint,
            client_id: &self.config.client_id,
            redirect_uri: &self.config.redirect_uri,
            code: &code,
            verifier: verifier.as_ref(),
        };
        let req = token_request(&exchange, &self.credentials, SystemTime::now())?;
        let resp = self.send(req).await.map_err(|e| match e {
            SendError::Unreachable(m) => ExchangeError::Unreachable(m),
            other => ExchangeError::BadResponse(other.to_string()),
        })?;
        parse_token_response(&resp)
    }

    /// Verifies a token's signature with the cached keys. A token naming an unknown key causes one
    /// JWKS refetch, shared with concurrent callers and rate-limited; when no refetch is allowed or
    /// it fails, the answer is `UnknownKey`. Every token kind (id_token, logout token, access token)
    /// goes through here, then through its own claims checks.
    pub async fn verify_jws<'t, 'a>(
        &self,
        token: &'t UnverifiedJws<'a>,
    ) -> Result<VerifiedJws<'t, 'a>, JwsError> {
        let meta = self.metadata().ok_or(JwsError::UnknownKey)?;
        let keys = self.keys.current();
        match token.verify_signature(&keys) {
            Err(JwsError::UnknownKey) => {}
            other => return other,
        }
        tracing::debug!(kid = ?token.kid(), "token names an unknown key; JWKS refetch");
        let jwks_uri = &meta.jwks_uri;
        let fresh = self
            .keys
            .refetch_after_miss(&keys, || async move {
                match self.fetch_jwks(jwks_uri).await {
                    Ok(set) => Some(set),
                    Err(error) => {
                        tracing::warn!(%error, "JWKS refetch failed");
                        None
                    }
                }
            })
            .await
            .ok_or(JwsError::UnknownKey)?;
        token.verify_signature(&fresh)
    }

    /// Validates an id_token (OIDC Core 3.1.3.7): the signature through [`Provider::verify_jws`],
    /// then the claims.
    pub async fn validate_id_token(
        &self,
        id_token: &str,
        nonce: &Nonce,
        access_token: Option<&str>,
        now: SystemTime,
    ) -> Result<Map<String, Value>, IdTokenError> {
        let meta = self.metadata().ok_or(IdTokenError::NotReady)?;
        let parsed = UnverifiedIdToken::parse(id_token)?;
        let expect = Expectations {
            issuer: &meta.issuer,
            client_id: &self.config.client_id,
            nonce,
            access_token,
            clock_skew: self.config.clock_skew,
            now,
        };
        let verified = self.verify_jws(parsed.as_jws()).await?;
        VerifiedIdToken::from_jws(verified).check_claims(&expect)
    }

    /// Redeems a refresh token at the token endpoint (RFC 6749 section 6).
    pub async fn refresh(
        &self,
        refresh_token: &RefreshToken,
    ) -> Result<TokenResponse, ExchangeError> {
        let meta = self.metadata().ok_or(ExchangeError::NotReady)?;
        let req = refresh_request(
            &meta.token_endpoint,
            &self.config.client_id,
            refresh_token,
            &self.credentials,
            SystemTime::now(),
        )?;
        let resp = self.send(req).await.map_err(|e| match e {
            SendError::Unreachable(m) => ExchangeError::Unreachable(m),
            other => ExchangeError::BadResponse(other.to_string()),
        })?;
        parse_token_response(&resp)
    }

    /// Validates an id_token from a refresh (OIDC Core 12.2): the first one's checks without the
    /// nonce, and the same `sub` as the session's.
    pub async fn validate_refreshed_id_token(
        &self,
        id_token: &str,
        sub: &str,
        access_token: Option<&str>,
        now: SystemTime,
    ) -> Result<Map<String, Value>, IdTokenError> {
        let meta = self.metadata().ok_or(IdTokenError::NotReady)?;
        let parsed = UnverifiedIdToken::parse(id_token)?;
        let expect = RefreshExpectations {
            issuer: &meta.issuer,
            client_id: &self.config.client_id,
            sub,
            access_token,
            clock_skew: self.config.clock_skew,
            now,
        };
        let verified = self.verify_jws(parsed.as_jws()).await?;
        VerifiedIdToken::from_jws(verified).check_refreshed(&expect)
    }

    /// Validates a back-channel logout token (Back-Channel Logout 1.0 section 2.6, steps 2 to 6).
    pub async fn validate_logout_token(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<LogoutClaims, LogoutTokenError> {
        let meta = self.metadata().ok_or(LogoutTokenError::NotReady)?;
        let parsed = UnverifiedJws::parse(token)?;
        let verified = self.verify_jws(&parsed).await?;
        check_logout_token(
            &verified,
            &LogoutExpectations {
                issuer: &meta.issuer,
                client_id: &self.config.client_id,
                clock_skew: self.config.clock_skew,
                now,
            },
        )
    }

    /// Validates a JWT access token (RFC 9068): the signature through [`Provider::verify_jws`], then
    /// the claims, `aud` naming one of `audiences`. Returns the claims and `exp`.
    pub async fn validate_access_token(
        &self,
        token: &UnverifiedJws<'_>,
        audiences: &[String],
        now: SystemTime,
    ) -> Result<(Map<String, Value>, i64), AccessTokenError> {
        let meta = self.metadata().ok_or(JwsError::UnknownKey)?;
        let verified = self.verify_jws(token).await?;
        check_claims(
            &verified,
            &AccessTokenExpectations {
                issuer: &meta.issuer,
                audiences,
                clock_skew: self.config.clock_skew,
                now,
            },
        )
    }

    /// Asks the provider's introspection endpoint (RFC 7662) about an opaque token, authenticated
    /// as this client, and checks the answer.
    pub async fn introspect(
        &self,
        token: &AccessToken,
        audiences: &[String],
        now: SystemTime,
    ) -> Result<Introspected, IntrospectionError> {
        let meta = self.metadata().ok_or(IntrospectionError::NotReady)?;
        let endpoint = meta
            .introspection_endpoint
            .as_ref()
            .ok_or(IntrospectionError::NoEndpoint)?;
        let req = introspection_request(
            endpoint,
            &self.config.client_id,
            &self.credentials,
            token,
            now,
        )?;
        let resp = self.send(req).await.map_err(|e| match e {
            SendError::Unreachable(m) => IntrospectionError::Unreachable(m),
            other => IntrospectionError::BadResponse(other.to_string()),
        })?;
        parse_introspection(
            &resp,
            &IntrospectionExpectations {
                issuer: &meta.issuer,
                audiences,
                clock_skew: self.config.clock_skew,
                now,
            },
        )
    }

    /// Fetches the UserInfo claims with the access token (bounded body). The caller must check
    /// that the returned `sub` equals the id_token's (OIDC Core 5.3.2).
    pub async fn fetch_userinfo(
        &self,
        access_token: &AccessToken,
    ) -> Result<Map<String, Value>, UserinfoError> {
        let meta = self.metadata().ok_or(UserinfoError::NotReady)?;
        let endpoint = meta
            .userinfo_endpoint
            .as_ref()
            .ok_or(UserinfoError::NoEndpoint)?;
        let req = userinfo_request(endpoint, access_token)?;
        let resp = self.send(req).await.map_err(|e| match e {
            SendError::Unreachable(m) => UserinfoError::Unreachable(m),
            other => UserinfoError::BadResponse(other.to_string()),
        })?;
        parse_userinfo(&resp)
    }
}

#[cfg(test)]
mod tests;

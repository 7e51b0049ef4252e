//! The development OpenID provider: a real HTTP OpenID Connect provider on loopback, used by
//! `portcullis demo` and by the gateway's integration tests. NOT for production: demo users with
//! a public password, keys in memory, no persistence. Its pages carry a banner saying so and
//! start-up logs a warning.
//!
//! It is strict where real providers are strict (exact redirect_uri match, single-use codes,
//! PKCE S256, client authentication exactly by the registered method, RFC 6749 section 2.3.1
//! encoding of Basic credentials), so a gateway that passes against it has proven something.
//! With the `misbehavior` feature (tests only), `Misbehavior` switches make it fail in exactly one
//! way at a time, so the gateway's negative tests run its real code paths against real HTTP; without
//! it (the `portcullis demo` of the shipped binary) there is no code path that mints a bad token.
//!
//! Layout: this file owns the public API and the accept loop; `state` the configuration and
//! shared maps; `handlers` the browser-facing endpoints; `token` the token endpoint, client
//! authentication and id_token minting; `keys`, `form`, `pages`, `store`, `users` the pieces.
//!
//! Two URL profiles: [`Profile::Standard`] (issuer `http://127.0.0.1:PORT`, endpoints `/authorize`,
//! `/token`, `/jwks`, `/userinfo`, `/end_session`) and [`Profile::Asgardeo`], which reproduces the
//! shape of WSO2 Asgardeo: issuer `http://127.0.0.1:PORT/t/demo/oauth2/token` while every endpoint
//! is advertised on host `localhost` (`/t/demo/oauth2/{authorize,token,jwks,userinfo}`,
//! `/t/demo/oidc/logout`), kids ending in `_RS256`, `x5t` in the JWS header and the extra claims
//! `c_hash`, `amr`, `sid`, `isk`. Discovery is always at issuer + `/.well-known/openid-configuration`.
//! [`DevProviderOptions::public_origins`] replaces those origins with names a test maps to loopback
//! (`https://accounts.asgardeo.io` for `iss`, `https://api.asgardeo.io` for the endpoints, exactly as
//! Asgardeo's documentation shows its token response).
//!
//! Access tokens are opaque unless [`DevProviderOptions::access_token_audience`] is set, when they are
//! RS256 JWTs in the shape of RFC 9068 (`typ: at+jwt`, `iss`, `sub`, `aud`, `client_id`, `scope`,
//! `exp`, `iat`, `nbf`, `jti` and the user's claims). Either kind is answered at userinfo and at the
//! introspection endpoint (RFC 7662: `/introspect`, or `/t/demo/oauth2/introspect` in the Asgardeo
//! profile), where any registered client may ask, authenticated exactly as at the token endpoint.
//! Which claims the id_token carries is configurable: per-user extra claims
//! ([`DevProviderOptions::extra_claims`]) and claims served by userinfo only
//! ([`DevProviderOptions::userinfo_only_claims`], e.g. [`ASGARDEO_USERINFO_ONLY`]).
//!
//! `post_logout_redirect_uri` at end_session is accepted when its origin (scheme, host, port)
//! equals the origin of a redirect_uri registered for the client (named by `client_id` or by the
//! `aud` of `id_token_hint`; any client when neither is given). The provider keeps no SSO session:
//! every authorization request shows the login form.

mod backchannel;
mod form;
mod handlers;
mod keys;
#[cfg(feature = "misbehavior")]
mod misbehavior;
mod pages;
mod state;
mod store;
mod token;
mod users;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

pub use backchannel::{LogoutSubject, LOGOUT_EVENT};
pub use keys::generate_client_keypair;
#[cfg(feature = "misbehavior")]
pub use misbehavior::Misbehavior;
pub use users::{DemoGroups, DemoUser, DEMO_PASSWORD, DEMO_USERS, MANY_GROUPS_COUNT};

use state::Shared;

/// Which provider the development provider imitates (URLs, kid style, extra claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Generic OpenID Connect provider at the server root.
    #[default]
    Standard,
    /// WSO2 Asgardeo's tenant paths, host split and token shape.
    Asgardeo,
}

/// How the development provider is set up.
#[derive(Debug, Clone, Default)]
pub struct DevProviderOptions {
    /// Registered clients.
    pub clients: Vec<DevClient>,
    /// URL layout and token shape.
    pub profile: Profile,
    /// Whether token responses carry a refresh_token (and the refresh grant is enabled).
    pub issue_refresh_token: bool,
    /// When set, access tokens are signed JWTs with this `aud` (an API's identifier); otherwise they
    /// are opaque random strings.
    pub access_token_audience: Option<String>,
    /// How long access tokens live; default one hour.
    pub access_token_lifetime: Option<Duration>,
    /// Claims left out of the id_token and of the introspection answer, served by userinfo only.
    pub userinfo_only_claims: Vec<String>,
    /// Extra claims of demo users by username, merged over their built-in claims (so they can also
    /// replace `email` or `email_verified`) wherever those appear.
    pub extra_claims: Vec<(String, serde_json::Map<String, serde_json::Value>)>,
    /// Origins to advertise instead of the listener's address, for a test that maps host names to
    /// loopback and puts TLS in front: see [`PublicOrigins`].
    pub public_origins: Option<PublicOrigins>,
    /// How id_tokens, JWT access tokens and logout tokens are signed; RS256 unless set.
    pub signing_algorithm: SigningAlgorithm,
}

/// The JWS algorithm of the provider's signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 over a 2048-bit key: the algorithm every provider offers.
    #[default]
    Rs256,
    /// ECDSA over P-256 with SHA-256: about a tenth of RS256's signing cost.
    Es256,
}

impl SigningAlgorithm {
    /// The JWS `alg` (RFC 7518 section 3.1).
    pub fn name(self) -> &'static str {
        match self {
            SigningAlgorithm::Rs256 => "RS256",
            SigningAlgorithm::Es256 => "ES256",
        }
    }

    pub(crate) fn jws(self) -> jsonwebtoken::Algorithm {
        match self {
            SigningAlgorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
            SigningAlgorithm::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

/// What the provider calls itself when it is reached under other names than its address: the
/// issuer's origin (`iss` and discovery's `issuer`) and the endpoints' origin. The standard profile
/// serves every endpoint under the issuer's origin; the Asgardeo profile under the endpoints' origin,
/// like `https://accounts.asgardeo.io` (`iss`) and `https://api.asgardeo.io` (every endpoint). Paths
/// stay the profile's; the provider serves them whatever host a request names.
#[derive(Debug, Clone)]
pub struct PublicOrigins {
    /// Scheme, host and port of the issuer, e.g. `https://accounts.asgardeo.io`.
    pub issuer: String,
    /// Scheme, host and port of the endpoints, e.g. `https://api.asgardeo.io`.
    pub endpoints: String,
}

/// What WSO2 Asgardeo keeps out of the id_token of an application without requested user
/// attributes: the email and the groups come from userinfo only (its token response carries
/// neither).
pub const ASGARDEO_USERINFO_ONLY: &[&str] = &["email", "email_verified", "groups"];

/// A registered client.
#[derive(Debug, Clone)]
pub struct DevClient {
    /// The `client_id`.
    pub client_id: String,
    /// The one authentication method the token endpoint accepts for it.
    pub auth: DevClientAuth,
    /// Redirect URIs, matched exactly (RFC 6749 section 3.1.2.3).
    pub redirect_uris: Vec<String>,
}

/// Client authentication at the token endpoint (RFC 6749 section 2.3, RFC 7523).
#[derive(Clone)]
pub enum DevClientAuth {
    /// `client_secret_basic` with this secret.
    SecretBasic(String),
    /// `client_secret_post` with this secret.
    SecretPost(String),
    /// `private_key_jwt`: assertions verified with this public key (SPKI PEM, RSA or EC P-256/P-384).
    PrivateKeyJwt {
        /// The client's public key.
        public_key_pem: String,
    },
    /// Public client: no authentication, PKCE required.
    None,
}

impl std::fmt::Debug for DevClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DevClientAuth::SecretBasic(_) => f.write_str("SecretBasic([redacted])"),
            DevClientAuth::SecretPost(_) => f.write_str("SecretPost([redacted])"),
            DevClientAuth::PrivateKeyJwt { .. } => f.write_str("PrivateKeyJwt { .. }"),
            DevClientAuth::None => f.write_str("None"),
        }
    }
}

/// A running development provider. Dropping it stops the server too; [`DevProvider::shutdown`]
/// also waits until every connection is closed.
pub struct DevProvider {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for DevProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevProvider")
            .field("issuer", &self.shared.urls.issuer)
            .finish_non_exhaustive()
    }
}

impl DevProvider {
    /// Starts serving on `listener` (bind it to `127.0.0.1:0`). Fails when the options are
    /// invalid (unparsable key, bad redirect URI, duplicate client) or key generation fails.
    pub async fn start(
        listener: TcpListener,
        options: DevProviderOptions,
    ) -> std::io::Result<DevProvider> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(addr, options)?);
        tracing::warn!(
            issuer = %shared.urls.issuer,
            "development OpenID provider started: NOT for production (public demo passwords, in-memory keys)"
        );
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stopped));
        Ok(DevProvider {
            shared,
            addr,
            stop,
            task,
        })
    }

    /// The exact `iss` value of its id_tokens (discovery at this + `/.well-known/openid-configuration`).
    pub fn issuer(&self) -> String {
        self.shared.urls.issuer.clone()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the defect of subsequent responses ([`Misbehavior::None`] to behave again).
    #[cfg(feature = "misbehavior")]
    pub fn set_misbehavior(&self, m: Misbehavior) {
        *state::lock(&self.shared.misbehavior) = m;
    }

    /// Every authorization code, access token, id_token and refresh token issued so far, in order:
    /// what a test looks for where it must never appear (logs).
    #[cfg(feature = "misbehavior")]
    pub fn issued(&self) -> Vec<String> {
        state::lock(&self.shared.issued).clone()
    }

    /// Replaces the signing key with a new one under a new kid; the old key leaves the JWKS.
    /// On the (theoretical) failure of key generation the old keys stay and an error is logged.
    pub fn rotate_keys(&self) {
        match keys::KeySet::generate(self.shared.profile, self.shared.signing_algorithm) {
            Ok(new) => {
                let mut current = self.shared.keys.write().unwrap_or_else(|e| e.into_inner());
                *current = new;
            }
            Err(e) => tracing::error!(error = %e, "development provider: key rotation failed"),
        }
    }

    /// How many JWKS requests it has answered.
    pub fn jwks_requests(&self) -> u64 {
        self.shared
            .counters
            .jwks
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many token requests it has received.
    pub fn token_requests(&self) -> u64 {
        self.shared
            .counters
            .token
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many refresh_token grants it has granted.
    pub fn refresh_requests(&self) -> u64 {
        self.shared
            .counters
            .refresh
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Access tokens issued from now on live this long (a short life makes clients refresh).
    pub fn set_access_token_ttl(&self, ttl: Duration) {
        self.shared
            .access_token_ttl
            .store(ttl.as_secs(), std::sync::atomic::Ordering::Relaxed);
    }

    /// From now on, tokens and userinfo assert `value` as `claim` of the demo user `username` (a
    /// profile changed at the provider).
    pub fn set_user_claim(&self, username: &str, claim: &str, value: serde_json::Value) {
        state::lock(&self.shared.claim_overrides)
            .entry(username.to_owned())
            .or_default()
            .insert(claim.to_owned(), value);
    }

    /// Register the back-channel logout URI of `client_id`.
    pub fn set_backchannel_logout_uri(&self, client_id: &str, uri: &str) {
        state::lock(&self.shared.backchannel_logout_uris)
            .insert(client_id.to_owned(), uri.to_owned());
    }

    /// End logins at `client_id`: POST a proper logout token for `subject` to its back-channel
    /// logout URI. Returns the status the client answered.
    pub async fn backchannel_logout(
        &self,
        client_id: &str,
        subject: LogoutSubject,
    ) -> std::io::Result<u16> {
        let claims = backchannel::claims(&self.shared, client_id, &subject)?;
        let token = backchannel::sign(&self.shared, &claims)?;
        self.post_to_backchannel(client_id, &token).await
    }

    async fn post_to_backchannel(&self, client_id: &str, token: &str) -> std::io::Result<u16> {
        let uri = state::lock(&self.shared.backchannel_logout_uris)
            .get(client_id)
            .cloned()
            .ok_or_else(|| std::io::Error::other("no back-channel logout URI registered"))?;
        backchannel::post(&uri, token).await
    }

    /// The claims of a proper logout token for `subject`, to alter before [`DevProvider::sign_jwt`].
    #[cfg(feature = "misbehavior")]
    pub fn logout_token_claims(
        &self,
        client_id: &str,
        subject: LogoutSubject,
    ) -> std::io::Result<serde_json::Value> {
        backchannel::claims(&self.shared, client_id, &subject)
    }

    /// Any claims signed with the provider's published key (typ `logout+jwt`): tokens a test
    /// shapes itself.
    #[cfg(feature = "misbehavior")]
    pub fn sign_jwt(&self, claims: &serde_json::Value) -> std::io::Result<String> {
        backchannel::sign(&self.shared, claims)
    }

    /// POST a logout token exactly as given to the back-channel logout URI of `client_id`.
    #[cfg(feature = "misbehavior")]
    pub async fn post_logout_token(&self, client_id: &str, token: &str) -> std::io::Result<u16> {
        self.post_to_backchannel(client_id, token).await
    }

    /// How many introspection requests it has received.
    pub fn introspection_requests(&self) -> u64 {
        self.shared
            .counters
            .introspection
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many userinfo requests it has received.
    pub fn userinfo_requests(&self) -> u64 {
        self.shared
            .counters
            .userinfo
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many discovery requests it has answered.
    pub fn discovery_requests(&self) -> u64 {
        self.shared
            .counters
            .discovery
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops listening and closes every open connection (including ones in the middle of a
    /// request), then returns. Afterwards connections to [`DevProvider::addr`] are refused.
    pub async fn shutdown(self) {
        let DevProvider { stop, task, .. } = self;
        let _ = stop.send(());
        if let Err(e) = task.await {
            tracing::error!(error = %e, "development provider: accept loop failed");
        }
    }

    #[cfg(test)]
    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Resolves on `send` and also when the sender is dropped with the DevProvider.
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&shared)));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "development provider: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    // Aborting the tasks drops the connections, which closes their sockets.
    connections.shutdown().await;
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    // Answers go out at once: with Nagle's algorithm a response written in two parts waits for the
    // client's delayed acknowledgement, which would pace every login.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handlers::handle(&shared, request).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "development provider: connection ended with an error");
    }
}

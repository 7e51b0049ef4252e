//! Configuration as the endpoints use it (validated clients, URLs of the profile) and the
//! shared, bounded state: pending logins, codes, tokens, used assertion ids, counters.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, RwLock};

use serde_json::{Map, Value};

use jsonwebtoken::{Algorithm, DecodingKey};

use super::keys::KeySet;
use super::store::{Bounded, Clock};
use super::users::DemoUser;
#[cfg(feature = "misbehavior")]
use super::Misbehavior;
use super::{DevClientAuth, DevProviderOptions, Profile, PublicOrigins, SigningAlgorithm};

/// A pending login lives this long between the authorize request and the form post.
pub(crate) const LOGIN_TTL: u64 = 600;
/// Authorization codes are valid this long (the brief's 60 s; RFC 6749 4.1.2 says at most 10 min).
pub(crate) const CODE_TTL: u64 = 60;
/// Used and expired codes are remembered this long, so a replay is told apart from garbage.
pub(crate) const CODE_MEMORY: u64 = 600;
pub(crate) const ACCESS_TOKEN_TTL: u64 = 3600;
pub(crate) const REFRESH_TOKEN_TTL: u64 = 86_400;
pub(crate) const ID_TOKEN_TTL: u64 = 300;
/// Cap of every map.
const MAP_CAP: usize = 10_000;

/// Locks a mutex, ignoring poisoning (the maps stay consistent: no panics while held).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Paths served and absolute URLs advertised.
#[derive(Debug)]
pub(crate) struct Urls {
    pub(crate) issuer: String,
    pub(crate) authorization_endpoint: String,
    pub(crate) token_endpoint: String,
    pub(crate) jwks_uri: String,
    pub(crate) userinfo_endpoint: String,
    pub(crate) end_session_endpoint: String,
    pub(crate) introspection_endpoint: String,
    pub(crate) discovery_path: String,
    pub(crate) authorize_path: &'static str,
    pub(crate) login_path: &'static str,
    pub(crate) token_path: &'static str,
    pub(crate) jwks_path: &'static str,
    pub(crate) userinfo_path: &'static str,
    pub(crate) end_session_path: &'static str,
    pub(crate) introspection_path: &'static str,
}

impl Urls {
    fn new(addr: SocketAddr, profile: Profile, public: Option<&PublicOrigins>) -> Urls {
        // A listener on 0.0.0.0 is still reached through loopback.
        let ip = match addr.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let origin = match public {
            Some(p) => p.issuer.trim_end_matches('/').to_owned(),
            None => format!("http://{}", SocketAddr::new(ip, addr.port())),
        };
        match profile {
            Profile::Standard => Urls {
                issuer: origin.clone(),
                authorization_endpoint: format!("{origin}/authorize"),
                token_endpoint: format!("{origin}/token"),
                jwks_uri: format!("{origin}/jwks"),
                userinfo_endpoint: format!("{origin}/userinfo"),
                end_session_endpoint: format!("{origin}/end_session"),
                introspection_endpoint: format!("{origin}/introspect"),
                discovery_path: "/.well-known/openid-configuration".to_owned(),
                authorize_path: "/authorize",
                login_path: "/login",
                token_path: "/token",
                jwks_path: "/jwks",
                userinfo_path: "/userinfo",
                end_session_path: "/end_session",
                introspection_path: "/introspect",
            },
            Profile::Asgardeo => {
                // Like accounts.asgardeo.io (iss) versus api.asgardeo.io (endpoints): same
                // server, different host names.
                let api = match public {
                    Some(p) => p.endpoints.trim_end_matches('/').to_owned(),
                    None => format!("http://localhost:{}", addr.port()),
                };
                Urls {
                    issuer: format!("{origin}/t/demo/oauth2/token"),
                    authorization_endpoint: format!("{api}/t/demo/oauth2/authorize"),
                    token_endpoint: format!("{api}/t/demo/oauth2/token"),
                    jwks_uri: format!("{api}/t/demo/oauth2/jwks"),
                    userinfo_endpoint: format!("{api}/t/demo/oauth2/userinfo"),
                    end_session_endpoint: format!("{api}/t/demo/oidc/logout"),
                    introspection_endpoint: format!("{api}/t/demo/oauth2/introspect"),
                    discovery_path: "/t/demo/oauth2/token/.well-known/openid-configuration"
                        .to_owned(),
                    authorize_path: "/t/demo/oauth2/authorize",
                    login_path: "/t/demo/authenticationendpoint/login",
                    token_path: "/t/demo/oauth2/token",
                    jwks_path: "/t/demo/oauth2/jwks",
                    userinfo_path: "/t/demo/oauth2/userinfo",
                    end_session_path: "/t/demo/oidc/logout",
                    introspection_path: "/t/demo/oauth2/introspect",
                }
            }
        }
    }
}

/// The registered authentication method, with the parsed key for private_key_jwt.
pub(crate) enum ClientMethod {
    Basic(String),
    Post(String),
    Jwt {
        key: DecodingKey,
        algorithms: &'static [Algorithm],
    },
    None,
}

impl ClientMethod {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ClientMethod::Basic(_) => "client_secret_basic",
            ClientMethod::Post(_) => "client_secret_post",
            ClientMethod::Jwt { .. } => "private_key_jwt",
            ClientMethod::None => "none",
        }
    }
}

pub(crate) struct RegisteredClient {
    pub(crate) client_id: String,
    pub(crate) method: ClientMethod,
    pub(crate) redirect_uris: Vec<String>,
}

const RSA_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const EC_ALGS: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
/// Advertised as token_endpoint_auth_signing_alg_values_supported.
pub(crate) const ASSERTION_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
];

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, msg)
}

impl RegisteredClient {
    fn new(client: super::DevClient) -> std::io::Result<Self> {
        let method = match client.auth {
            DevClientAuth::SecretBasic(s) => ClientMethod::Basic(s),
            DevClientAuth::SecretPost(s) => ClientMethod::Post(s),
            DevClientAuth::None => ClientMethod::None,
            DevClientAuth::PrivateKeyJwt { public_key_pem } => {
                let pem = public_key_pem.as_bytes();
                if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
                    ClientMethod::Jwt {
                        key,
                        algorithms: RSA_ALGS,
                    }
                } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
                    ClientMethod::Jwt {
                        key,
                        algorithms: EC_ALGS,
                    }
                } else {
                    return Err(invalid(format!(
                        "client {}: public_key_pem is not an RSA or EC public key",
                        client.client_id
                    )));
                }
            }
        };
        for uri in &client.redirect_uris {
            // RFC 6749 section 3.1.2: absolute, no fragment.
            match url::Url::parse(uri) {
                Ok(u) if u.fragment().is_none() && u.has_host() => {}
                _ => {
                    return Err(invalid(format!(
                        "client {}: bad redirect_uri {uri:?}",
                        client.client_id
                    )))
                }
            }
        }
        Ok(RegisteredClient {
            client_id: client.client_id,
            method,
            redirect_uris: client.redirect_uris,
        })
    }
}

/// An authorization request waiting for the login form.
#[derive(Clone)]
pub(crate) struct PendingLogin {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) state: Option<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) code_challenge: Option<String>,
    pub(crate) scope: String,
}

/// What a code was issued for.
#[derive(Clone)]
pub(crate) struct CodeGrant {
    pub(crate) login: PendingLogin,
    pub(crate) user: &'static DemoUser,
    pub(crate) auth_time: u64,
    pub(crate) sid: String,
    pub(crate) expires_at: u64,
    pub(crate) used: bool,
}

/// What an access or refresh token stands for.
#[derive(Clone)]
pub(crate) struct TokenGrant {
    pub(crate) client_id: String,
    pub(crate) user: &'static DemoUser,
    pub(crate) scope: String,
    pub(crate) auth_time: u64,
    pub(crate) sid: String,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) jwks: AtomicU64,
    pub(crate) token: AtomicU64,
    pub(crate) discovery: AtomicU64,
    /// Successful refresh_token grants.
    pub(crate) refresh: AtomicU64,
    pub(crate) introspection: AtomicU64,
    pub(crate) userinfo: AtomicU64,
}

pub(crate) struct Shared {
    pub(crate) profile: Profile,
    pub(crate) signing_algorithm: SigningAlgorithm,
    pub(crate) urls: Urls,
    pub(crate) clients: Vec<RegisteredClient>,
    pub(crate) issue_refresh_token: bool,
    pub(crate) access_token_audience: Option<String>,
    pub(crate) userinfo_only_claims: Vec<String>,
    pub(crate) extra_claims: Vec<(String, serde_json::Map<String, serde_json::Value>)>,
    pub(crate) keys: RwLock<KeySet>,
    #[cfg(feature = "misbehavior")]
    pub(crate) misbehavior: Mutex<Misbehavior>,
    /// Every authorization code and token issued, in order (tests only).
    #[cfg(feature = "misbehavior")]
    pub(crate) issued: Mutex<Vec<String>>,
    pub(crate) pending: Mutex<Bounded<PendingLogin>>,
    pub(crate) codes: Mutex<Bounded<CodeGrant>>,
    pub(crate) access_tokens: Mutex<Bounded<TokenGrant>>,
    pub(crate) refresh_tokens: Mutex<Bounded<TokenGrant>>,
    /// Refresh tokens already rotated away, with the login (`sid`) they belong to: presenting one
    /// again revokes every refresh token of that login (reuse detection, RFC 9700 section 4.14.2).
    pub(crate) spent_refresh_tokens: Mutex<Bounded<String>>,
    /// Lifetime of new access tokens, seconds.
    pub(crate) access_token_ttl: AtomicU64,
    /// Claims that replace a demo user's own, by username (a profile changed at the provider).
    pub(crate) claim_overrides: Mutex<HashMap<String, Map<String, Value>>>,
    /// Back-channel logout URIs, by client_id.
    pub(crate) backchannel_logout_uris: Mutex<HashMap<String, String>>,
    /// `client_id` + " " + `jti` of accepted client assertions (RFC 7523 section 3, item 7).
    pub(crate) used_jtis: Mutex<Bounded<()>>,
    pub(crate) counters: Counters,
    pub(crate) clock: Clock,
}

impl Shared {
    pub(crate) fn new(addr: SocketAddr, options: DevProviderOptions) -> std::io::Result<Shared> {
        let mut clients: Vec<RegisteredClient> = Vec::new();
        for c in options.clients {
            if clients.iter().any(|r| r.client_id == c.client_id) {
                return Err(invalid(format!(
                    "client {} is registered twice",
                    c.client_id
                )));
            }
            clients.push(RegisteredClient::new(c)?);
        }
        Ok(Shared {
            profile: options.profile,
            signing_algorithm: options.signing_algorithm,
            urls: Urls::new(addr, options.profile, options.public_origins.as_ref()),
            clients,
            issue_refresh_token: options.issue_refresh_token,
            access_token_audience: options.access_token_audience,
            userinfo_only_claims: options.userinfo_only_claims,
            extra_claims: options.extra_claims,
            keys: RwLock::new(KeySet::generate(
                options.profile,
                options.signing_algorithm,
            )?),
            #[cfg(feature = "misbehavior")]
            misbehavior: Mutex::new(Misbehavior::None),
            #[cfg(feature = "misbehavior")]
            issued: Mutex::new(Vec::new()),
            pending: Mutex::new(Bounded::new(MAP_CAP)),
            codes: Mutex::new(Bounded::new(MAP_CAP)),
            access_tokens: Mutex::new(Bounded::new(MAP_CAP)),
            refresh_tokens: Mutex::new(Bounded::new(MAP_CAP)),
            spent_refresh_tokens: Mutex::new(Bounded::new(MAP_CAP)),
            access_token_ttl: AtomicU64::new(
                options
                    .access_token_lifetime
                    .map_or(ACCESS_TOKEN_TTL, |d| d.as_secs()),
            ),
            claim_overrides: Mutex::new(HashMap::new()),
            backchannel_logout_uris: Mutex::new(HashMap::new()),
            used_jtis: Mutex::new(Bounded::new(MAP_CAP)),
            counters: Counters::default(),
            clock: Clock::default(),
        })
    }

    /// Lifetime of new access tokens, seconds.
    pub(crate) fn access_token_ttl(&self) -> u64 {
        self.access_token_ttl
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn client(&self, client_id: &str) -> Option<&RegisteredClient> {
        self.clients.iter().find(|c| c.client_id == client_id)
    }

    #[cfg(feature = "misbehavior")]
    pub(crate) fn misbehavior(&self) -> Misbehavior {
        lock(&self.misbehavior).clone()
    }

    /// Note a code or token handed out (tests only; nothing without the feature).
    pub(crate) fn note_issued(&self, _value: &str) {
        #[cfg(feature = "misbehavior")]
        lock(&self.issued).push(_value.to_owned());
    }
}

//! The token request (RFC 6749 4.1.3) with client authentication (RFC 6749 2.3, RFC 7523,
//! OIDC Core 9), and the token response parser (RFC 6749 5.1, 5.2).
//!
//! What it owns: the exact bytes sent to the token endpoint and the reading of its answer.
//! What it does not own: sending (`provider`) or the id_token checks (`id_token`).
//! The client key is parsed once at start-up into [`ClientCredentials`], so a bad key stops
//! start-up instead of failing the first login.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING,
};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use jsonwebtoken::{Algorithm, EncodingKey};
use secrecy::ExposeSecret;
use serde_json::Value;
use url::form_urlencoded;
use url::Url;

use super::{
    json_object, random_token, to_uri, AccessToken, AuthCode, ClientAuth, ClientSecret, IdToken,
    PkceVerifier, RefreshToken, MAX_BODY_BYTES,
};

/// RFC 7523 2.2: the assertion type for `private_key_jwt`.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long a client assertion is valid; short, since it is used at once.
const ASSERTION_LIFETIME_SECS: u64 = 60;

/// Client authentication, prepared from the configuration at start-up.
pub enum ClientCredentials {
    Basic(ClientSecret),
    Post(ClientSecret),
    PrivateKeyJwt {
        key: EncodingKey,
        alg: Algorithm,
        key_id: Option<String>,
    },
    None,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic(_) => f.write_str("Basic([redacted])"),
            Self::Post(_) => f.write_str("Post([redacted])"),
            Self::PrivateKeyJwt { alg, key_id, .. } => f
                .debug_struct("PrivateKeyJwt")
                .field("key", &"[redacted]")
                .field("alg", alg)
                .field("key_id", key_id)
                .finish(),
            Self::None => f.write_str("None"),
        }
    }
}

impl ClientCredentials {
    /// Prepares the configured client authentication; a private key is parsed and its
    /// algorithm chosen from the key itself.
    pub fn from_config(auth: &ClientAuth) -> Result<Self, String> {
        Ok(match auth {
            ClientAuth::SecretBasic(s) => Self::Basic(s.clone()),
            ClientAuth::SecretPost(s) => Self::Post(s.clone()),
            ClientAuth::PrivateKeyJwt { key_pem, key_id } => {
                let (key, alg) = load_private_key(key_pem.expose_secret())?;
                Self::PrivateKeyJwt {
                    key,
                    alg,
                    key_id: key_id.clone(),
                }
            }
            ClientAuth::None => Self::None,
        })
    }
}

/// The first PEM block: its label and DER bytes.
fn pem_block(text: &str) -> Option<(String, Vec<u8>)> {
    let mut lines = text.lines().map(str::trim);
    let label = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))?
        .to_owned();
    let end = format!("-----END {label}-----");
    let body: String = lines.take_while(|l| *l != end).collect();
    Some((label, STANDARD.decode(body).ok()?))
}

/// Reads a private key and picks the algorithm it signs with: RSA -> RS256, EC P-256 -> ES256,
/// EC P-384 -> ES384, Ed25519 -> EdDSA. Accepts PKCS#1, SEC1 and PKCS#8 PEM.
pub fn load_private_key(pem: &[u8]) -> Result<(EncodingKey, Algorithm), String> {
    const WHAT: &str =
        "private key: expected an RSA, EC (P-256, P-384) or Ed25519 private key in PEM";
    let text = std::str::from_utf8(pem).map_err(|_| WHAT.to_string())?;
    let (label, der) = pem_block(text).ok_or_else(|| WHAT.to_string())?;
    let rsa_ok = match label.as_str() {
        "RSA PRIVATE KEY" => aws_lc_rs::rsa::KeyPair::from_der(&der).is_ok(),
        "PRIVATE KEY" => aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).is_ok(),
        _ => false,
    };
    if rsa_ok {
        // jsonwebtoken unwraps PKCS#8 to the PKCS#1 form its RSA signer expects.
        let key = EncodingKey::from_rsa_pem(pem).map_err(|e| format!("{WHAT}: {e}"))?;
        return Ok((key, Algorithm::RS256));
    }
    if matches!(label.as_str(), "EC PRIVATE KEY" | "PRIVATE KEY") {
        for (signing, alg) in [
            (&ECDSA_P256_SHA256_FIXED_SIGNING, Algorithm::ES256),
            (&ECDSA_P384_SHA384_FIXED_SIGNING, Algorithm::ES384),
        ] {
            if let Ok(kp) = EcdsaKeyPair::from_private_key_der(signing, &der) {
                let pkcs8 = kp.to_pkcs8v1().map_err(|_| WHAT.to_string())?;
                return Ok((EncodingKey::from_ec_der(pkcs8.as_ref()), alg));
            }
        }
    }
    if label == "PRIVATE KEY" && Ed25519KeyPair::from_pkcs8(&der).is_ok() {
        return Ok((EncodingKey::from_ed_der(&der), Algorithm::EdDSA));
    }
    Err(WHAT.to_string())
}

/// RFC 7523 3 / OIDC Core 9: the signed client assertion for `private_key_jwt`.
pub fn client_assertion(
    client_id: &str,
    token_endpoint: &Url,
    key: &EncodingKey,
    alg: Algorithm,
    key_id: Option<&str>,
    now: SystemTime,
) -> Result<String, String> {
    let iat = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "clock before 1970".to_string())?
        .as_secs();
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = key_id.map(str::to_owned);
    let claims = serde_json::json!({
        "iss": client_id,
        "sub": client_id,
        "aud": token_endpoint.as_str(),
        "jti": random_token(32).map_err(|_| "random generator failed".to_string())?,
        "iat": iat,
        "exp": iat + ASSERTION_LIFETIME_SECS,
    });
    jsonwebtoken::encode(&header, &claims, key).map_err(|e| format!("signing the assertion: {e}"))
}

/// RFC 6749 2.3.1: `Basic base64(urlenc(client_id) ":" urlenc(secret))`, where urlenc is the
/// application/x-www-form-urlencoded encoding. Providers decode both parts, so a secret with
/// `:`, `+`, `%` or non-ASCII only works when encoded first.
pub fn basic_authorization(client_id: &str, secret: &ClientSecret) -> String {
    let id: String = form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
    let pw: String = form_urlencoded::byte_serialize(secret.secret().as_bytes()).collect();
    format!("Basic {}", STANDARD.encode(format!("{id}:{pw}")))
}

/// Why the code exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeError {
    /// The provider could not be reached (connect error or timeout).
    #[error("provider unreachable: {0}")]
    Unreachable(String),
    /// RFC 6749 5.2: the provider refused the request. Both fields are safe to log and show.
    #[error("token endpoint answered error {error:?}{}", description.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    ErrorResponse {
        error: String,
        description: Option<String>,
    },
    #[error("token endpoint: {0}")]
    BadResponse(String),
    #[error("provider metadata not loaded yet")]
    NotReady,
    #[error("cannot build the token request: {0}")]
    Request(String),
}

/// A successful token response (RFC 6749 5.1). Tokens are in redacting newtypes.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    pub access_token: AccessToken,
    pub token_type: String,
    pub id_token: Option<IdToken>,
    pub refresh_token: Option<RefreshToken>,
    pub expires_in: Option<Duration>,
    pub scope: Option<String>,
}

/// The inputs of one code exchange.
#[derive(Debug, Clone, Copy)]
pub struct CodeExchange<'a> {
    pub token_endpoint: &'a Url,
    pub client_id: &'a str,
    pub redirect_uri: &'a Url,
    pub code: &'a AuthCode,
    pub verifier: Option<&'a PkceVerifier>,
}

/// Adds the client's authentication to a form POST to `endpoint` (the token endpoint, or another
/// endpoint that authenticates clients the same way, such as introspection): form fields, and the
/// `Authorization` value to send when the method uses the header (marked sensitive). A
/// `private_key_jwt` assertion names `endpoint` as its audience.
pub fn client_authentication(
    form: &mut form_urlencoded::Serializer<'_, String>,
    creds: &ClientCredentials,
    client_id: &str,
    endpoint: &Url,
    now: SystemTime,
) -> Result<Option<HeaderValue>, String> {
    match creds {
        ClientCredentials::Basic(secret) => {
            let mut value = HeaderValue::try_from(basic_authorization(client_id, secret))
                .map_err(|_| "client credentials form an invalid header".to_string())?;
            value.set_sensitive(true);
            return Ok(Some(value));
        }
        ClientCredentials::Post(secret) => {
            form.append_pair("client_id", client_id)
                .append_pair("client_secret", secret.secret());
        }
        ClientCredentials::PrivateKeyJwt { key, alg, key_id } => {
            let assertion =
                client_assertion(client_id, endpoint, key, *alg, key_id.as_deref(), now)?;
            form.append_pair("client_id", client_id)
                .append_pair("client_assertion_type", JWT_BEARER_ASSERTION)
                .append_pair("client_assertion", &assertion);
        }
        ClientCredentials::None => {
            form.append_pair("client_id", client_id);
        }
    }
    Ok(None)
}

/// Builds the token request of a code exchange: a form POST with the configured client
/// authentication.
pub fn token_request(
    ex: &CodeExchange<'_>,
    creds: &ClientCredentials,
    now: SystemTime,
) -> Result<http::Request<Bytes>, ExchangeError> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "authorization_code")
        .append_pair("code", ex.code.secret())
        .append_pair("redirect_uri", ex.redirect_uri.as_str());
    if let Some(v) = ex.verifier {
        form.append_pair("code_verifier", v.secret());
    }
    client_request(ex.token_endpoint, ex.client_id, form, creds, now)
        .map_err(ExchangeError::Request)
}

/// Builds the refresh request (RFC 6749 section 6): `grant_type=refresh_token` with the configured
/// client authentication. No scope is sent: the provider keeps the scope of the original grant.
pub fn refresh_request(
    token_endpoint: &Url,
    client_id: &str,
    refresh_token: &RefreshToken,
    creds: &ClientCredentials,
    now: SystemTime,
) -> Result<http::Request<Bytes>, ExchangeError> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "refresh_token")
        .append_pair("refresh_token", refresh_token.secret());
    client_request(token_endpoint, client_id, form, creds, now).map_err(ExchangeError::Request)
}

/// A form POST to `endpoint` carrying `form` plus the client authentication (token exchange,
/// refresh, introspection).
pub(super) fn client_request(
    endpoint: &Url,
    client_id: &str,
    mut form: form_urlencoded::Serializer<'_, String>,
    creds: &ClientCredentials,
    now: SystemTime,
) -> Result<http::Request<Bytes>, String> {
    let authorization = client_authentication(&mut form, creds, client_id, endpoint, now)?;
    let mut builder = http::Request::post(to_uri(endpoint)?)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(ACCEPT, "application/json");
    if let Some(value) = authorization {
        builder = builder.header(AUTHORIZATION, value);
    }
    builder
        .body(Bytes::from(form.finish()))
        .map_err(|e| e.to_string())
}

/// Keeps provider-supplied text fit for a log line and an error page: printable characters
/// only (RFC 6749 5.2 allows only printable ASCII in these fields), bounded length.
fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(300).collect()
}

fn optional_string(
    map: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<String>, ExchangeError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ExchangeError::BadResponse(format!(
            "{name} is not a string"
        ))),
    }
}

/// RFC 6749 5.1 leaves `expires_in` a number; some providers send a numeric string.
fn expires_in(map: &serde_json::Map<String, Value>) -> Result<Option<Duration>, ExchangeError> {
    let bad = || ExchangeError::BadResponse("expires_in is not a number of seconds".into());
    match map.get("expires_in") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(secs), _) => Ok(Some(Duration::from_secs(secs))),
            (None, Some(f)) if f.is_finite() && f >= 0.0 => Ok(Some(Duration::from_secs(f as u64))),
            _ => Err(bad()),
        },
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .map(|s| Some(Duration::from_secs(s)))
            .map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// Reads the token endpoint's answer.
pub fn parse_token_response(resp: &http::Response<Bytes>) -> Result<TokenResponse, ExchangeError> {
    let status = resp.status();
    if resp.body().len() > MAX_BODY_BYTES {
        return Err(ExchangeError::BadResponse(format!(
            "response exceeds {MAX_BODY_BYTES} bytes"
        )));
    }
    let parsed = json_object(resp.body(), "token endpoint");
    // RFC 6749 5.2: an error object (normally with 400 or 401). Some providers send it with 200.
    if let Ok(map) = &parsed {
        if let Some(Value::String(error)) = map.get("error") {
            let description = match map.get("error_description") {
                Some(Value::String(d)) => Some(sanitize(d)),
                _ => None,
            };
            return Err(ExchangeError::ErrorResponse {
                error: sanitize(error),
                description,
            });
        }
    }
    if !status.is_success() {
        let kind = if parsed.is_ok() {
            "an unexpected JSON body"
        } else {
            "a non-JSON body"
        };
        return Err(ExchangeError::BadResponse(format!(
            "HTTP {} with {kind}",
            status.as_u16()
        )));
    }
    let map = parsed.map_err(ExchangeError::BadResponse)?;
    let access_token = match map.get("access_token") {
        Some(Value::String(s)) if !s.is_empty() => AccessToken::new(s.clone()),
        _ => return Err(ExchangeError::BadResponse("no access_token".into())),
    };
    let token_type = optional_string(&map, "token_type")?
        .ok_or_else(|| ExchangeError::BadResponse("no token_type".into()))?;
    // RFC 6749 7.1: the type is case-insensitive; only Bearer (RFC 6750) is supported.
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(ExchangeError::BadResponse(format!(
            "token_type {:?} is not Bearer",
            sanitize(&token_type)
        )));
    }
    Ok(TokenResponse {
        access_token,
        token_type,
        id_token: optional_string(&map, "id_token")?.map(IdToken::new),
        refresh_token: optional_string(&map, "refresh_token")?.map(RefreshToken::new),
        expires_in: expires_in(&map)?,
        scope: optional_string(&map, "scope")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oidc::testutil::{ed25519, p256, rsa};
    use jsonwebtoken::{DecodingKey, Validation};
    use secrecy::SecretSlice;
    use std::collections::HashMap;

    fn endpoint() -> Url {
        Url::parse("https://api.asgardeo.io/t/org/oauth2/token").unwrap()
    }

    fn build(creds: &ClientCredentials, verifier: Option<&PkceVerifier>) -> http::Request<Bytes> {
        let ep = endpoint();
        let redirect = Url::parse("https://app.example.com/oauth2/callback").unwrap();
        let code = AuthCode::new("the-code");
        let ex = CodeExchange {
            token_endpoint: &ep,
            client_id: "my client",
            redirect_uri: &redirect,
            code: &code,
            verifier,
        };
        token_request(&ex, creds, SystemTime::now()).unwrap()
    }

    fn form(req: &http::Request<Bytes>) -> HashMap<String, String> {
        form_urlencoded::parse(req.body()).into_owned().collect()
    }

    #[test]
    fn basic_auth_form_encodes_id_and_secret_before_base64() {
        let secret = ClientSecret::new("p+a/s:s%w&rd é");
        assert_eq!(
            basic_authorization("my client", &secret),
            "Basic bXkrY2xpZW50OnAlMkJhJTJGcyUzQXMlMjV3JTI2cmQrJUMzJUE5"
        );
        let req = build(&ClientCredentials::Basic(secret), None);
        let auth = &req.headers()[AUTHORIZATION];
        assert_eq!(
            auth.as_bytes(),
            b"Basic bXkrY2xpZW50OnAlMkJhJTJGcyUzQXMlMjV3JTI2cmQrJUMzJUE5"
        );
        assert!(auth.is_sensitive());
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri().to_string(), endpoint().as_str());
        assert_eq!(
            req.headers()[CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(req.headers()[ACCEPT], "application/json");
        let f = form(&req);
        assert_eq!(f["grant_type"], "authorization_code");
        assert_eq!(f["code"], "the-code");
        assert_eq!(f["redirect_uri"], "https://app.example.com/oauth2/callback");
        assert!(!f.contains_key("client_secret") && !f.contains_key("client_id"));
        assert!(!f.contains_key("code_verifier"));
    }

    #[test]
    fn post_and_none_put_the_client_in_the_form() {
        let req = build(&ClientCredentials::Post(ClientSecret::new("s&e=c")), None);
        let f = form(&req);
        assert_eq!(f["client_id"], "my client");
        assert_eq!(f["client_secret"], "s&e=c");
        assert!(req.headers().get(AUTHORIZATION).is_none());

        let verifier = PkceVerifier::new("v".repeat(43));
        let req = build(&ClientCredentials::None, Some(&verifier));
        let f = form(&req);
        assert_eq!(f["client_id"], "my client");
        assert_eq!(f["code_verifier"], "v".repeat(43));
        assert!(!f.contains_key("client_secret"));
        assert!(req.headers().get(AUTHORIZATION).is_none());
    }

    fn check_assertion(key_pem: &str, expected: Algorithm, decoding: DecodingKey) {
        let auth = ClientAuth::PrivateKeyJwt {
            key_pem: SecretSlice::from(key_pem.as_bytes().to_vec()),
            key_id: Some("client-key-1".into()),
        };
        let creds = ClientCredentials::from_config(&auth).unwrap();
        assert!(matches!(&creds, ClientCredentials::PrivateKeyJwt { alg, .. } if *alg == expected));
        let req = build(&creds, None);
        let f = form(&req);
        assert_eq!(f["client_id"], "my client");
        assert_eq!(f["client_assertion_type"], JWT_BEARER_ASSERTION);
        let mut validation = Validation::new(expected);
        validation.set_audience(&[endpoint().as_str()]);
        validation.set_issuer(&["my client"]);
        let data = jsonwebtoken::decode::<Value>(&f["client_assertion"], &decoding, &validation)
            .expect("assertion verifies with the public key");
        assert_eq!(data.header.kid.as_deref(), Some("client-key-1"));
        let c = data.claims;
        assert_eq!(c["sub"], "my client");
        assert_eq!(c["aud"], endpoint().as_str());
        assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 60);
        assert_eq!(c["jti"].as_str().unwrap().len(), 43);
        assert!(req.headers().get(AUTHORIZATION).is_none());
    }

    #[test]
    fn private_key_jwt_assertions_verify_and_carry_the_right_claims() {
        let r = rsa();
        check_assertion(
            &r.private_pem,
            Algorithm::RS256,
            DecodingKey::from_rsa_pem(r.public_pem.as_bytes()).unwrap(),
        );
        let e = p256();
        let ec_key = DecodingKey::from_ec_components(
            e.jwk["x"].as_str().unwrap(),
            e.jwk["y"].as_str().unwrap(),
        )
        .unwrap();
        check_assertion(&e.private_pem, Algorithm::ES256, ec_key);
        let d = ed25519();
        let ed_key = DecodingKey::from_ed_components(d.jwk["x"].as_str().unwrap()).unwrap();
        check_assertion(&d.private_pem, Algorithm::EdDSA, ed_key);
    }

    #[test]
    fn key_loading_detects_formats_and_refuses_non_keys() {
        let kp = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
        use aws_lc_rs::encoding::AsDer;
        let sec1 = crate::oidc::testutil::pem(
            "EC PRIVATE KEY",
            kp.private_key().as_der().unwrap().as_ref(),
        );
        assert_eq!(
            load_private_key(sec1.as_bytes()).unwrap().1,
            Algorithm::ES384
        );
        for bad in [
            rsa().public_pem.as_str(),
            "not a pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let err = load_private_key(bad.as_bytes()).unwrap_err();
            assert!(err.contains("private key"), "{err}");
        }
        let shown = format!(
            "{:?}",
            ClientCredentials::from_config(&ClientAuth::PrivateKeyJwt {
                key_pem: SecretSlice::from(rsa().private_pem.as_bytes().to_vec()),
                key_id: None,
            })
            .unwrap()
        );
        assert!(
            shown.contains("[redacted]") && !shown.contains("MII"),
            "{shown}"
        );
    }

    use crate::oidc::testutil::response as resp;

    #[test]
    fn token_responses_in_their_variants() {
        let minimal = parse_token_response(&resp(
            200,
            r#"{"access_token":"opaque-1","token_type":"bearer"}"#,
        ))
        .unwrap();
        assert_eq!(minimal.access_token.secret(), "opaque-1");
        assert!(minimal.id_token.is_none() && minimal.refresh_token.is_none());
        assert_eq!(minimal.expires_in, None);

        let full = parse_token_response(&resp(
            200,
            r#"{"access_token":"at","token_type":"Bearer","id_token":"a.b.c","refresh_token":"rt",
                "expires_in":"3600","scope":"openid email","isk":"x","extra":{"n":1}}"#,
        ))
        .unwrap();
        assert_eq!(full.expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(full.id_token.as_ref().unwrap().secret(), "a.b.c");
        assert_eq!(full.scope.as_deref(), Some("openid email"));
        let shown = format!("{full:?}");
        assert!(
            !shown.contains("\"at\"") && !shown.contains("a.b.c") && !shown.contains("rt\""),
            "{shown}"
        );

        let numeric = parse_token_response(&resp(
            200,
            r#"{"access_token":"at","token_type":"BEARER","expires_in":300}"#,
        ))
        .unwrap();
        assert_eq!(numeric.expires_in, Some(Duration::from_secs(300)));

        for (body, needle) in [
            (r#"{"access_token":"at","token_type":"mac"}"#, "Bearer"),
            (r#"{"token_type":"Bearer"}"#, "access_token"),
            (r#"{"access_token":"at"}"#, "token_type"),
            (
                r#"{"access_token":"at","token_type":"Bearer","expires_in":"soon"}"#,
                "expires_in",
            ),
            ("<html>ok</html>", "not JSON"),
        ] {
            match parse_token_response(&resp(200, body)) {
                Err(ExchangeError::BadResponse(m)) => assert!(m.contains(needle), "{m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn error_bodies_and_server_errors() {
        let err = parse_token_response(&resp(
            400,
            r#"{"error":"invalid_grant","error_description":"Authorization code expired\n\u001b[31m"}"#,
        ))
        .unwrap_err();
        assert_eq!(
            err,
            ExchangeError::ErrorResponse {
                error: "invalid_grant".into(),
                description: Some("Authorization code expired[31m".into()),
            }
        );
        assert!(err.to_string().contains("invalid_grant"));
        assert_eq!(
            parse_token_response(&resp(401, r#"{"error":"invalid_client"}"#)).unwrap_err(),
            ExchangeError::ErrorResponse {
                error: "invalid_client".into(),
                description: None
            }
        );
        match parse_token_response(&resp(502, "<html>Bad Gateway</html>")) {
            Err(ExchangeError::BadResponse(m)) => {
                assert!(m.contains("502") && m.contains("non-JSON"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        match parse_token_response(&resp(500, r#"{"message":"oops"}"#)) {
            Err(ExchangeError::BadResponse(m)) => assert!(m.contains("500"), "{m}"),
            other => panic!("{other:?}"),
        }
        let big = format!(
            r#"{{"access_token":"{}","token_type":"Bearer"}}"#,
            "a".repeat(MAX_BODY_BYTES)
        );
        assert!(matches!(
            parse_token_response(&resp(200, &big)),
            Err(ExchangeError::BadResponse(_))
        ));
    }
}

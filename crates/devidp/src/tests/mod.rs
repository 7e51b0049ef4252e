//! End-to-end tests of the development provider over real loopback HTTP: a hand-driven client
//! walks authorize -> form -> login -> code -> token and checks what a gateway would check.
//! This file holds the client; `flow`, `refusals` and `misbehavior` hold the tests.

mod flow;
#[cfg(feature = "misbehavior")]
mod misbehavior;
mod refusals;

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::StatusCode;
use serde_json::{json, Value};

use super::keys::{half_hash, s256};
use super::*;

const CB: &str = "http://app.test:4180/oauth2/callback";
const SPECIAL_SECRET: &str = "s+e/c:r%e&t é x";

struct Fixture {
    provider: DevProvider,
    http: reqwest::Client,
    disc: Value,
    client_private_pem: String,
}

fn clients(public_key_pem: &str) -> Vec<DevClient> {
    let client = |id: &str, auth| DevClient {
        client_id: id.into(),
        auth,
        redirect_uris: vec![CB.into()],
    };
    vec![
        client("basic", DevClientAuth::SecretBasic(SPECIAL_SECRET.into())),
        client("post", DevClientAuth::SecretPost("post-secret".into())),
        client(
            "jwt",
            DevClientAuth::PrivateKeyJwt {
                public_key_pem: public_key_pem.into(),
            },
        ),
        client("public", DevClientAuth::None),
    ]
}

async fn fixture(profile: Profile, issue_refresh_token: bool) -> Fixture {
    fixture_with(DevProviderOptions {
        profile,
        issue_refresh_token,
        ..Default::default()
    })
    .await
}

/// A provider started with `options`, the test clients registered.
async fn fixture_with(mut options: DevProviderOptions) -> Fixture {
    let (client_private_pem, public) = generate_client_keypair();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await;
    let Ok(listener) = listener else {
        panic!("bind")
    };
    options.clients = clients(&public);
    let provider = DevProvider::start(listener, options).await;
    let Ok(provider) = provider else {
        panic!("start: {provider:?}")
    };
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build();
    let Ok(http) = http else { panic!("client") };
    let disc = get_json(
        &http,
        &format!("{}/.well-known/openid-configuration", provider.issuer()),
    )
    .await;
    Fixture {
        provider,
        http,
        disc,
        client_private_pem,
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let Ok(response) = http.get(url).send().await else {
        panic!("GET {url}")
    };
    assert_eq!(response.status(), StatusCode::OK, "GET {url}");
    response.json().await.unwrap_or(Value::Null)
}

fn endpoint(f: &Fixture, name: &str) -> String {
    f.disc[name].as_str().unwrap_or_default().to_owned()
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
    text.split_once(start)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(v, _)| v)
        .unwrap_or_default()
}

fn query_param(location: &str, name: &str) -> Option<String> {
    let url = url::Url::parse(location).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Authorization parameters of one login.
struct Auth<'a> {
    client_id: &'a str,
    verifier: Option<&'a str>,
    nonce: &'a str,
    user: &'a str,
}

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk-and-some-more";

impl Auth<'_> {
    fn of(client_id: &str) -> Auth<'_> {
        Auth {
            client_id,
            verifier: Some(VERIFIER),
            nonce: "n-0S6_WzA2Mj",
            user: "alice",
        }
    }
}

/// `base` with the query parameters appended (reqwest's `query` needs a feature not enabled).
fn with_query(base: &str, query: &[(&str, &str)]) -> String {
    url::Url::parse_with_params(base, query)
        .map(String::from)
        .unwrap_or_default()
}

/// GET authorize with `extra` query parameters, returning the raw response.
async fn authorize(f: &Fixture, query: &[(&str, &str)]) -> reqwest::Response {
    let response = f
        .http
        .get(with_query(&endpoint(f, "authorization_endpoint"), query))
        .send()
        .await;
    let Ok(response) = response else {
        panic!("authorize")
    };
    response
}

/// Drives authorize -> form -> login and returns the code.
async fn login(f: &Fixture, a: &Auth<'_>) -> String {
    let challenge = a.verifier.map(s256);
    let mut query = vec![
        ("response_type", "code"),
        ("client_id", a.client_id),
        ("redirect_uri", CB),
        ("scope", "openid profile email"),
        ("state", "st&te=1 2"),
        ("nonce", a.nonce),
    ];
    if let Some(c) = &challenge {
        query.extend([
            ("code_challenge", c.as_str()),
            ("code_challenge_method", "S256"),
        ]);
    }
    let response = authorize(f, &query).await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.unwrap_or_default();
    assert!(html.contains("NOT for production"));
    let code = post_login(f, &html, a.user, DEMO_PASSWORD).await;
    let Ok(code) = code else {
        panic!("login failed: {}", code.err().unwrap_or_default())
    };
    code
}

/// Posts the login form found in `html`; Ok(code) on a redirect, Err(page) otherwise.
async fn post_login(f: &Fixture, html: &str, user: &str, password: &str) -> Result<String, String> {
    let action = between(html, "action=\"", "\"");
    let request_id = between(html, "name=\"request_id\" value=\"", "\"");
    let base = url::Url::parse(&endpoint(f, "authorization_endpoint")).ok();
    let Some(target) = base.and_then(|b| b.join(action).ok()) else {
        panic!("action {action}")
    };
    let form = [
        ("request_id", request_id),
        ("username", user),
        ("password", password),
    ];
    let Ok(response) = f.http.post(target).form(&form).send().await else {
        panic!("login post")
    };
    if response.status() != StatusCode::FOUND {
        return Err(response.text().await.unwrap_or_default());
    }
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(location.starts_with(CB), "{location}");
    assert_eq!(
        query_param(&location, "state").as_deref(),
        Some("st&te=1 2")
    );
    query_param(&location, "code").ok_or(location)
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn basic_header(id: &str, secret: &str, encode: bool) -> String {
    let (id, secret) = if encode {
        (form_encode(id), form_encode(secret))
    } else {
        (id.into(), secret.into())
    };
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

fn assertion(f: &Fixture, aud: &str, jti: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims =
        json!({ "iss": "jwt", "sub": "jwt", "aud": aud, "exp": now + 60, "iat": now, "jti": jti });
    let Ok(key) = EncodingKey::from_rsa_pem(f.client_private_pem.as_bytes()) else {
        panic!("key")
    };
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap_or_default()
}

/// Token request fields and client authentication for `client_id` by its registered method.
fn auth_fields(f: &Fixture, client_id: &str) -> (Vec<(String, String)>, Option<String>) {
    let own = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    match client_id {
        "basic" => (vec![], Some(basic_header("basic", SPECIAL_SECRET, true))),
        "post" => (
            vec![
                own("client_id", "post"),
                own("client_secret", "post-secret"),
            ],
            None,
        ),
        "jwt" => {
            let jti = super::keys::random_token(12).unwrap_or_default();
            let jwt = assertion(f, &endpoint(f, "token_endpoint"), &jti);
            (
                vec![
                    own("client_assertion_type", super::token::JWT_BEARER),
                    own("client_assertion", &jwt),
                ],
                None,
            )
        }
        _ => (vec![own("client_id", client_id)], None),
    }
}

async fn post_token(
    f: &Fixture,
    fields: &[(String, String)],
    authorization: Option<&str>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut request = f.http.post(endpoint(f, "token_endpoint")).form(fields);
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let Ok(response) = request.send().await else {
        panic!("token request")
    };
    let (status, headers) = (response.status(), response.headers().clone());
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        headers,
    )
}

fn code_fields(code: &str, verifier: Option<&str>) -> Vec<(String, String)> {
    let mut fields = vec![
        ("grant_type".to_owned(), "authorization_code".to_owned()),
        ("code".to_owned(), code.to_owned()),
        ("redirect_uri".to_owned(), CB.to_owned()),
    ];
    if let Some(v) = verifier {
        fields.push(("code_verifier".to_owned(), v.to_owned()));
    }
    fields
}

/// Exchanges `code` for `client_id` with its registered authentication.
async fn exchange(
    f: &Fixture,
    client_id: &str,
    code: &str,
    verifier: Option<&str>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let (mut fields, authorization) = auth_fields(f, client_id);
    fields.extend(code_fields(code, verifier));
    post_token(f, &fields, authorization.as_deref()).await
}

/// A full successful login and token exchange for `client_id`; returns the token response.
async fn flow(f: &Fixture, client_id: &str) -> Value {
    let code = login(f, &Auth::of(client_id)).await;
    let (status, body, headers) = exchange(f, client_id, &code, Some(VERIFIER)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        headers.get("cache-control").and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    body
}

fn split_jwt(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = || {
        let bytes = parts
            .next()
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .unwrap_or_default();
        serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null)
    };
    (part(), part())
}

/// POST the introspection endpoint about `token`, authenticated as `client_id` (or not at all).
async fn introspect(f: &Fixture, client_id: Option<&str>, token: &str) -> (StatusCode, Value) {
    let (mut fields, authorization) = match client_id {
        Some(id) => auth_fields(f, id),
        None => (Vec::new(), None),
    };
    fields.push(("token".to_owned(), token.to_owned()));
    let mut request = f
        .http
        .post(endpoint(f, "introspection_endpoint"))
        .form(&fields);
    if let Some(a) = authorization {
        request = request.header("authorization", a);
    }
    let Ok(response) = request.send().await else {
        panic!("introspection request")
    };
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Verifies the RS256 signature with the JWKS key of the token's kid (no claim checks).
async fn verify_signature(f: &Fixture, token: &str) -> bool {
    let jwks = get_json(&f.http, &endpoint(f, "jwks_uri")).await;
    let Ok(set) = serde_json::from_value::<jsonwebtoken::jwk::JwkSet>(jwks) else {
        return false;
    };
    let Ok(header) = jsonwebtoken::decode_header(token) else {
        return false;
    };
    let Some(jwk) = header.kid.as_deref().and_then(|k| set.find(k)) else {
        return false;
    };
    let Ok(key) = DecodingKey::from_jwk(jwk) else {
        return false;
    };
    jsonwebtoken::decode::<Value>(token, &key, &signature_only()).is_ok()
}

/// RS256 signature check only: the claims are checked by hand where a test needs it.
fn signature_only() -> Validation {
    let mut v = Validation::new(Algorithm::RS256);
    v.validate_exp = false;
    v.validate_aud = false;
    v.validate_nbf = false;
    v.required_spec_claims.clear();
    v
}

/// Full verification as a gateway does it: signature by JWKS, iss, aud.
async fn verify_id_token(f: &Fixture, token: &str, client_id: &str) -> Value {
    assert!(verify_signature(f, token).await, "signature");
    let (header, claims) = split_jwt(token);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(claims["iss"], f.provider.issuer());
    assert_eq!(claims["aud"], client_id);
    assert_eq!(claims["azp"], client_id);
    let now = jsonwebtoken::get_current_timestamp();
    let exp = claims["exp"].as_u64().unwrap_or(0);
    assert!(exp > now && exp <= now + 310, "exp {exp}");
    claims
}

async fn expect_refusal(
    f: &Fixture,
    fields: &[(String, String)],
    authorization: Option<&str>,
    status: StatusCode,
    error: &str,
) -> reqwest::header::HeaderMap {
    let (got, body, headers) = post_token(f, fields, authorization).await;
    assert_eq!(
        (got, body["error"].as_str()),
        (status, Some(error)),
        "{body}"
    );
    assert!(body.get("access_token").is_none());
    headers
}

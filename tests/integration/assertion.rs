//! The signed identity assertion: the upstream verifies it with a real JOSE implementation
//! (jsonwebtoken) and the keys fetched from `/oauth2/jwks`; client-sent copies never arrive; replicas
//! sharing `key_file` publish the same key id; a replaced key stays published.
use devidp::DEMO_USERS;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::browser::*;
use crate::support::*;

const HEADER: &str = "x-portcullis-jwt-assertion";

/// What an application does with the header: fetch the gateway's JWKS, pick the key by `kid`, and
/// verify signature, `iss`, `aud` and the lifetime.
async fn verify(base: &str, token: &str, audience: &str) -> Value {
    let jwks: JwkSet = client()
        .get(format!("{base}/oauth2/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let kid = header.kid.expect("a kid");
    let jwk = jwks.find(&kid).expect("the kid is published");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[base]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = 0;
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
        .expect("the assertion verifies")
        .claims
}

fn assertion_of(seen: &Seen) -> String {
    let values: Vec<_> = seen.headers.get_all(HEADER).iter().collect();
    assert_eq!(values.len(), 1, "exactly one assertion: {values:?}");
    values[0].to_str().unwrap().to_string()
}

#[tokio::test]
async fn the_upstream_verifies_the_assertion_with_the_published_keys() {
    let s = stack(StackOptions {
        extra: "[assertion]\nlifetime = \"2m\"\n".into(),
        ..Default::default()
    })
    .await;
    let b = Browser::new();
    b.login(&format!("{}/x", s.base), "alice").await;
    assert_eq!(b.get(&format!("{}/x", s.base)).await.status(), 200);
    let token = assertion_of(&s.upstream.last());
    // The default audience: the upstream's origin.
    let claims = verify(&s.base, &token, &s.upstream.url()).await;
    let alice = DEMO_USERS.iter().find(|u| u.username == "alice").unwrap();
    assert_eq!(claims["sub"], alice.sub);
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["groups"], serde_json::json!(["admins", "staff"]));
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp - iat, 120, "exp = iat + lifetime");
    let now = portcullis::login::unix_now();
    assert!(iat <= now && exp > now);

    // Minted once for the session and its lifetime window, not per request.
    assert_eq!(b.get(&format!("{}/y", s.base)).await.status(), 200);
    assert_eq!(assertion_of(&s.upstream.last()), token);
}

#[tokio::test]
async fn a_client_sent_assertion_never_arrives() {
    let s = stack(StackOptions {
        extra: format!("[assertion]\naudience = \"my-app\"\n{PUBLIC_ROUTE}"),
        ..Default::default()
    })
    .await;
    let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";
    // A public route without a session: every spelling of the header is removed, none is added.
    let r = client()
        .get(format!("{}/public/page", s.base))
        .header(HEADER, forged)
        .header("X-PORTCULLIS-JWT-ASSERTION", forged)
        .header("x_portcullis_jwt_assertion", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.upstream.last();
    assert!(seen.headers.get(HEADER).is_none(), "{:?}", seen.headers);
    assert!(seen.headers.get("x_portcullis_jwt_assertion").is_none());

    // Signed in: the gateway's own assertion replaces the client's.
    let b = Browser::new();
    b.login(&format!("{}/x", s.base), "bob").await;
    let r = b
        .client
        .get(format!("{}/x", s.base))
        .header(HEADER, forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token = assertion_of(&s.upstream.last());
    assert_ne!(token, forged);
    let claims = verify(&s.base, &token, "my-app").await;
    assert_eq!(claims["email"], "bob@example.org");
    // On a public route with a session, the identity is forwarded with its assertion.
    let r = b
        .client
        .get(format!("{}/public/page", s.base))
        .header(HEADER, forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(assertion_of(&s.upstream.last()), token);
}

#[tokio::test]
async fn bearer_callers_get_an_assertion_too() {
    let s = stack(StackOptions {
        extra: "[api]\naudiences = [\"api\"]\n[assertion]\n".into(),
        provider: devidp::DevProviderOptions {
            access_token_audience: Some("api".into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let token = api_token(&s.provider, "carol").await;
    for _ in 0..2 {
        let r = client()
            .get(format!("{}/api", s.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let seen = s.upstream.seen();
    let (first, second) = (assertion_of(&seen[0]), assertion_of(&seen[1]));
    assert_eq!(
        first, second,
        "reused for the token, not minted per request"
    );
    let claims = verify(&s.base, &first, &s.upstream.url()).await;
    assert_eq!(claims["email"], "carol@example.net");
    assert_eq!(claims["groups"], serde_json::json!([]));
}

fn assertion_toml(key_file: Option<&std::path::Path>) -> String {
    let key = key_file
        .map(|p| format!("key_file = {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    gateway_toml("http://127.0.0.1:9", &format!("[assertion]\n{key}"))
}

async fn kids(addr: std::net::SocketAddr) -> Vec<String> {
    let r = client()
        .get(format!("http://{addr}/oauth2/jwks"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/jwk-set+json");
    let set: JwkSet = r.json().await.unwrap();
    set.keys
        .iter()
        .map(|k| k.common.key_id.clone().unwrap())
        .collect()
}

#[tokio::test]
async fn gateways_sharing_key_file_publish_the_same_kid_and_a_replaced_key_stays() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("assertion.pem");
    std::fs::write(&key, generate_p256_pem()).unwrap();
    let a = gateway(&assertion_toml(Some(&key))).await;
    let b = gateway(&assertion_toml(Some(&key))).await;
    let generated = gateway(&assertion_toml(None)).await;
    let shared = kids(a.addr()).await;
    assert_eq!(shared.len(), 1);
    assert_eq!(kids(b.addr()).await, shared);
    assert_ne!(kids(generated.addr()).await, shared);

    // A new key: it signs from now on; the old one stays published for the assertions' lifetime.
    std::fs::write(&key, generate_p256_pem()).unwrap();
    a.runtime()
        .reload(config(&assertion_toml(Some(&key))))
        .unwrap();
    let after = kids(a.addr()).await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert_ne!(after[0], shared[0]);
    assert_eq!(after[1], shared[0]);

    // Without [assertion] there is nothing to publish.
    let none = gateway(&gateway_toml("http://127.0.0.1:9", "")).await;
    let r = client()
        .get(format!("http://{}/oauth2/jwks", none.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// A fresh P-256 key as PKCS#8 PEM, as `openssl genpkey -algorithm EC -pkeyopt
/// ec_paramgen_curve:P-256` writes it.
fn generate_p256_pem() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    key.serialize_pem()
}

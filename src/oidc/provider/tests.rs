//! Unit tests of `oidc::provider`, kept beside it so that file stays readable.

use super::*;
use crate::oidc::testutil::{jwks, rsa, rsa2, sign, TestServer};
use crate::oidc::{ClientAuth, ClientSecret, EndpointOverrides};
use serde_json::json;
use std::net::SocketAddr;
use std::time::UNIX_EPOCH;

const FAST: Backoff = Backoff {
    initial: Duration::from_millis(5),
    cap: Duration::from_millis(50),
};

/// A guard so a broken feature fails the test instead of hanging it; not a timing assert.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("gave up waiting")
}

fn config(addr: SocketAddr) -> ProviderConfig {
    ProviderConfig {
        issuer: Url::parse(&format!("http://{addr}/t/org")).unwrap(),
        client_id: "portcullis".into(),
        client_auth: ClientAuth::SecretBasic(ClientSecret::new("s3cret")),
        scopes: vec!["openid".into(), "email".into()],
        pkce: true,
        redirect_uri: Url::parse("http://localhost:4180/oauth2/callback").unwrap(),
        endpoints: EndpointOverrides::default(),
        clock_skew: Duration::from_secs(60),
        http_timeout: Duration::from_secs(10),
        jwks_min_refetch_interval: Duration::from_secs(3600),
        extra_auth_params: vec![("prompt".into(), "login".into())],
    }
}

fn serve_provider(server: &TestServer, addr: SocketAddr, issuer: &str) {
    let base = format!("http://{addr}");
    server.set(
        "/t/org/.well-known/openid-configuration",
        200,
        json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{base}/authorize?tenant=org"),
            "token_endpoint": format!("{base}/token"),
            "jwks_uri": format!("{base}/jwks"),
            "userinfo_endpoint": format!("{base}/userinfo"),
            "end_session_endpoint": format!("{base}/logout"),
            "claims_supported": ["sub"]
        })
        .to_string(),
    );
    server.set("/jwks", 200, jwks(&[rsa()]));
}

async fn loaded() -> (TestServer, SocketAddr, Arc<Provider>) {
    let server = TestServer::default();
    let addr = server.start().await;
    serve_provider(&server, addr, &format!("http://{addr}/t/org"));
    let provider = Provider::with_backoff(config(addr), FAST).unwrap();
    provider.load_once().await.unwrap();
    (server, addr, provider)
}

fn claims(addr: SocketAddr) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!({"iss": format!("http://{addr}/t/org"), "sub": "alice", "aud": "portcullis",
           "exp": now + 300, "iat": now, "nonce": "n1"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_becomes_ready_once_a_refusing_provider_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let provider = Provider::with_backoff(config(addr), FAST).unwrap();
    assert!(matches!(
        provider.begin_login(),
        Err(ProviderError::NotReady)
    ));
    let mut failures = provider.load_failures.subscribe();
    let _task = provider.spawn_loader();
    within(failures.wait_for(|n| *n >= 2)).await.unwrap();
    assert!(!provider.is_ready());
    assert!(!provider.is_reachable());

    let server = TestServer::default();
    serve_provider(&server, addr, &format!("http://{addr}/t/org"));
    server.serve(tokio::net::TcpListener::bind(addr).await.unwrap());
    within(provider.wait_ready()).await;
    assert!(provider.is_ready());
    assert!(provider.is_reachable());
    assert_eq!(server.hits("/jwks"), 1);
    assert_eq!(provider.jwks_fetches(), 1);
    let (url, secrets) = provider.begin_login().unwrap();
    assert!(url
        .as_str()
        .starts_with(&format!("http://{addr}/authorize?tenant=org&")));
    assert!(url.as_str().contains("prompt=login"));
    assert!(secrets.pkce_verifier.is_some());
    assert_eq!(
        provider.end_session_endpoint().unwrap().as_str(),
        format!("http://{addr}/logout")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_floods_cause_one_fetch_then_none() {
    let (server, addr, provider) = loaded().await;
    assert_eq!(server.hits("/jwks"), 1);
    let bogus = sign(rsa2(), &claims(addr));
    let burst = |n: usize| {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (p, t) = (provider.clone(), bogus.clone());
                tokio::spawn(async move {
                    p.validate_id_token(&t, &Nonce::new("n1"), None, SystemTime::now())
                        .await
                })
            })
            .collect();
        async move {
            for t in tasks {
                assert_eq!(t.await.unwrap(), Err(IdTokenError::UnknownKey));
            }
        }
    };
    within(burst(100)).await;
    assert_eq!(
        server.hits("/jwks"),
        2,
        "100 concurrent misses share one fetch"
    );
    assert_eq!(provider.jwks_fetches(), 2);
    within(burst(100)).await;
    assert_eq!(
        server.hits("/jwks"),
        2,
        "a second burst within the interval fetches nothing"
    );
    // Known keys keep working without any fetch.
    let good = sign(rsa(), &claims(addr));
    let c = provider
        .validate_id_token(&good, &Nonce::new("n1"), None, SystemTime::now())
        .await
        .unwrap();
    assert_eq!(c["sub"], "alice");
    assert_eq!(server.hits("/jwks"), 2);
}

#[tokio::test]
async fn key_rotation_is_picked_up_by_one_refetch() {
    let (server, addr, provider) = loaded().await;
    server.set("/jwks", 200, jwks(&[rsa(), rsa2()]));
    let rotated = sign(rsa2(), &claims(addr));
    let c = provider
        .validate_id_token(&rotated, &Nonce::new("n1"), None, SystemTime::now())
        .await
        .unwrap();
    assert_eq!(c["sub"], "alice");
    assert_eq!(server.hits("/jwks"), 2);
    let wrong_nonce = provider
        .validate_id_token(&rotated, &Nonce::new("n2"), None, SystemTime::now())
        .await;
    assert_eq!(wrong_nonce, Err(IdTokenError::NonceMismatch));
}

#[tokio::test]
async fn code_exchange_sends_basic_auth_and_reads_the_answer() {
    let (server, _addr, provider) = loaded().await;
    server.set(
        "/token",
        200,
        r#"{"access_token":"at-1","token_type":"Bearer","expires_in":"60"}"#,
    );
    let tokens = provider
        .exchange_code(
            AuthCode::new("c-1"),
            Some(PkceVerifier::new("v".repeat(43))),
        )
        .await
        .unwrap();
    assert_eq!(tokens.access_token.secret(), "at-1");
    let seen = server.last_request("/token");
    assert!(seen.starts_with("POST /token "), "{seen}");
    // base64("portcullis:s3cret")
    assert!(seen.contains("cG9ydGN1bGxpczpzM2NyZXQ="), "{seen}");
    assert!(seen.contains("code=c-1") && seen.contains("code_verifier=vvv"));

    server.set(
        "/token",
        400,
        r#"{"error":"invalid_grant","error_description":"used"}"#,
    );
    let err = provider
        .exchange_code(AuthCode::new("c-1"), None)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ExchangeError::ErrorResponse {
            error: "invalid_grant".into(),
            description: Some("used".into())
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_token_endpoint_is_marked_and_recovered() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let server = TestServer::default();
    let addr = server.start().await;
    serve_provider(&server, addr, &format!("http://{addr}/t/org"));
    let mut cfg = config(addr);
    cfg.endpoints.token_endpoint = Some(Url::parse(&format!("http://{dead_addr}/token")).unwrap());
    let provider = Provider::with_backoff(cfg, FAST).unwrap();
    provider.load_once().await.unwrap();
    assert!(provider.is_reachable());
    let err = provider
        .exchange_code(AuthCode::new("c"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ExchangeError::Unreachable(_)), "{err:?}");
    assert!(!provider.is_reachable());
    let probes_before = server.hits("/t/org/.well-known/openid-configuration");
    let mut up = provider.reachable.subscribe();
    let _task = provider.spawn_loader();
    within(up.wait_for(|r| *r)).await.unwrap();
    assert!(server.hits("/t/org/.well-known/openid-configuration") > probes_before);
}

#[tokio::test]
async fn discovery_issuer_mismatch_fails_the_load() {
    let server = TestServer::default();
    let addr = server.start().await;
    serve_provider(&server, addr, "https://evil.example.com/t/org");
    let provider = Provider::with_backoff(config(addr), FAST).unwrap();
    let err = provider.load_once().await.unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::Metadata(MetadataError::IssuerMismatch { .. })
        ),
        "{err:?}"
    );
    assert!(!provider.is_ready());
}

#[tokio::test]
async fn hand_set_endpoints_skip_discovery_and_userinfo_works() {
    let server = TestServer::default();
    let addr = server.start().await;
    serve_provider(&server, addr, "unused");
    server.set("/userinfo", 200, r#"{"sub":"alice","groups":["a"]}"#);
    let mut cfg = config(addr);
    let u = |p: &str| Some(Url::parse(&format!("http://{addr}{p}")).unwrap());
    cfg.endpoints = EndpointOverrides {
        authorization_endpoint: u("/authorize"),
        token_endpoint: u("/token"),
        jwks_uri: u("/jwks"),
        userinfo_endpoint: u("/userinfo"),
        end_session_endpoint: None,
        introspection_endpoint: None,
    };
    let provider = Provider::with_backoff(cfg, FAST).unwrap();
    provider.load_once().await.unwrap();
    assert!(provider.is_ready());
    assert_eq!(server.hits("/t/org/.well-known/openid-configuration"), 0);
    assert_eq!(provider.end_session_endpoint(), None);
    let info = provider
        .fetch_userinfo(&AccessToken::new("at-9"))
        .await
        .unwrap();
    assert_eq!(info["groups"][0], "a");
    assert!(server.last_request("/userinfo").contains("Bearer at-9"));
    server.set("/userinfo", 401, "");
    assert_eq!(
        provider.fetch_userinfo(&AccessToken::new("at-9")).await,
        Err(UserinfoError::Rejected(401))
    );
}

#[test]
fn bad_configuration_is_refused_with_the_key_named() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut c = config(addr);
    c.extra_auth_params = vec![("state".into(), "x".into())];
    let err = Provider::new(c).unwrap_err().to_string();
    assert!(err.contains("oidc.extra_auth_params"), "{err}");
    let mut c = config(addr);
    c.issuer = Url::parse("https://idp.example.com/?tenant=x").unwrap();
    assert!(Provider::new(c)
        .unwrap_err()
        .to_string()
        .contains("oidc.issuer"));
    let mut c = config(addr);
    c.client_auth = ClientAuth::PrivateKeyJwt {
        key_pem: secrecy::SecretSlice::from(b"garbage".to_vec()),
        key_id: None,
    };
    assert!(Provider::new(c)
        .unwrap_err()
        .to_string()
        .contains("oidc.private_key_file"));
    let mut c = config(addr);
    c.endpoints.jwks_uri = Some(Url::parse("ftp://idp.example.com/jwks").unwrap());
    assert!(Provider::new(c)
        .unwrap_err()
        .to_string()
        .contains("oidc.jwks_uri"));
    let shown = format!("{:?}", Provider::new(config(addr)).unwrap());
    assert!(!shown.contains("s3cret"), "{shown}");
}

//! API clients with `Authorization: Bearer`: JWT access tokens checked against the provider's keys,
//! opaque ones through RFC 7662 introspection, refusals as RFC 6750 says, and no bearer credential at
//! all without `[api]`. The tokens are real: an API client's own login at the development provider.

use std::time::Duration;

use devidp::{DevProviderOptions, Misbehavior, DEMO_USERS};
use serde_json::Value;

use crate::browser::*;
use crate::support::*;

const AUDIENCE: &str = "api://orders";

fn user(name: &str) -> &'static devidp::DemoUser {
    DEMO_USERS.iter().find(|u| u.username == name).unwrap()
}

async fn jwt_stack(extra: &str) -> Stack {
    stack(StackOptions {
        extra: extra.to_string(),
        provider: DevProviderOptions {
            access_token_audience: Some(AUDIENCE.into()),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

async fn call(s: &Stack, token: &str, accept: &str) -> reqwest::Response {
    client()
        .get(format!("{}/api/orders?x=1", s.base))
        .header("authorization", format!("Bearer {token}"))
        .header("accept", accept)
        .send()
        .await
        .unwrap()
}

/// The request is refused as RFC 6750 says, whatever the client accepts, and nothing goes upstream.
async fn refused(s: &Stack, token: &str, description: &str) {
    let before = s.upstream.seen().len();
    for accept in ["application/json", "text/html,*/*;q=0.8"] {
        let r = call(s, token, accept).await;
        assert_eq!(r.status(), 401, "{description}");
        assert_eq!(
            r.headers()["www-authenticate"],
            format!("Bearer error=\"invalid_token\", error_description=\"{description}\"").as_str()
        );
        assert!(r.headers().get("location").is_none(), "never a redirect");
        assert!(r.headers().get("set-cookie").is_none());
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "invalid_token");
        assert_eq!(body["error_description"], description);
    }
    assert_eq!(
        s.upstream.seen().len(),
        before,
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn a_valid_jwt_reaches_the_upstream_with_identity_and_no_cookie() {
    let s = jwt_stack(&format!("[api]\naudiences = [\"{AUDIENCE}\"]\n")).await;
    let token = api_token(&s.provider, "alice").await;
    for accept in ["application/json", "text/html"] {
        let r = call(&s, &token, accept).await;
        assert_eq!(r.status(), 200, "{accept}");
        assert!(
            r.headers().get("set-cookie").is_none(),
            "no cookie for an API client"
        );
        let seen = s.upstream.last();
        assert_eq!(seen.uri, "/api/orders?x=1");
        assert_eq!(seen.headers["x-forwarded-user"], user("alice").sub);
        assert_eq!(seen.headers["x-forwarded-email"], "alice@example.com");
        assert_eq!(seen.headers["x-forwarded-groups"], "admins,staff");
    }
    // Without the token: the usual 401 for an API client.
    let r = client()
        .get(format!("{}/api/orders", s.base))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(s.upstream.seen().len(), 2);
}

#[tokio::test]
async fn defective_jwts_are_refused_each_for_its_reason() {
    let s = jwt_stack(&format!("[api]\naudiences = [\"{AUDIENCE}\"]\n")).await;
    let cases = [
        (
            Misbehavior::WrongAudience,
            "the token's audience is not accepted",
        ),
        (
            Misbehavior::WrongIssuer,
            "the token's issuer is not accepted",
        ),
        (Misbehavior::Expired, "the token has expired"),
        (Misbehavior::NotYetValid, "the token is not valid yet"),
        (
            Misbehavior::AlgNone,
            "the token's signature algorithm is not accepted",
        ),
        (
            Misbehavior::Hs256WithPublicKey,
            "the token's signature algorithm is not accepted",
        ),
        (
            Misbehavior::UnknownKid,
            "the token is signed with an unknown key",
        ),
        (
            Misbehavior::WrongKey,
            "the token's signature does not verify",
        ),
    ];
    for (defect, description) in cases {
        s.provider
            .set_misbehavior(Misbehavior::InAccessToken(Box::new(defect.clone())));
        let token = api_token(&s.provider, "alice").await;
        s.provider.set_misbehavior(Misbehavior::None);
        refused(&s, &token, description).await;
        assert!(
            log_text().contains("bearer token refused"),
            "{defect:?}: the log says why"
        );
    }
    refused(
        &s,
        "not-a-jwt",
        "the token is not a JWT this gateway accepts",
    )
    .await;
    let r = client()
        .get(format!("{}/api/orders", s.base))
        .header("authorization", "Bearer a b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(s.upstream.seen().is_empty());
}

#[tokio::test]
async fn bearer_callers_meet_the_same_policy() {
    let s = jwt_stack(&format!(
        "[api]\naudiences = [\"{AUDIENCE}\"]\n[access]\nallowed_groups = [\"admins\"]\n"
    ))
    .await;
    let alice = api_token(&s.provider, "alice").await;
    assert_eq!(call(&s, &alice, "application/json").await.status(), 200);
    let bob = api_token(&s.provider, "bob").await;
    for accept in ["application/json", "text/html"] {
        let r = call(&s, &bob, accept).await;
        assert_eq!(r.status(), 403);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "access_denied");
    }
    assert_eq!(s.upstream.seen().len(), 1);
}

#[tokio::test]
async fn without_api_a_bearer_token_is_not_a_credential() {
    let s = jwt_stack("").await;
    let token = api_token(&s.provider, "alice").await;
    let r = call(&s, &token, "application/json").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"portcullis\"",
        "the usual answer to no session"
    );
    let r = call(&s, &token, "text/html").await;
    assert_eq!(r.status(), 302, "a browser navigation is sent to log in");
    assert!(s.upstream.seen().is_empty());
}

async fn introspection_stack(lifetime: Option<Duration>) -> Stack {
    stack(StackOptions {
        extra: "[api]\nintrospection = true\nintrospection_cache = \"60s\"\n".into(),
        provider: DevProviderOptions {
            access_token_lifetime: lifetime,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn opaque_tokens_are_introspected_and_cached() {
    let s = introspection_stack(None).await;
    let token = api_token(&s.provider, "bob").await;
    assert_eq!(token.split('.').count(), 1, "an opaque token");
    let r = call(&s, &token, "application/json").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none());
    let seen = s.upstream.last();
    assert_eq!(seen.headers["x-forwarded-user"], user("bob").sub);
    assert_eq!(seen.headers["x-forwarded-email"], "bob@example.org");
    assert_eq!(s.provider.introspection_requests(), 1);

    // Within the window: served from the cache, no call.
    assert_eq!(call(&s, &token, "application/json").await.status(), 200);
    assert_eq!(s.provider.introspection_requests(), 1);

    // A new configuration checks every token again (its [api] may differ).
    s.gateway.runtime().reload(config(&s.toml)).unwrap();
    assert_eq!(call(&s, &token, "application/json").await.status(), 200);
    assert_eq!(s.provider.introspection_requests(), 2);

    // An inactive token: refused, and asked about each time (refusals are not cached).
    refused(&s, "made-up-token", "the token is not active").await;
    let asked = s.provider.introspection_requests();
    refused(&s, "made-up-token", "the token is not active").await;
    assert_eq!(s.provider.introspection_requests(), asked + 2);
    assert_eq!(s.upstream.seen().len(), 3);
}

#[tokio::test]
async fn concurrent_requests_with_a_new_token_share_one_introspection() {
    let s = introspection_stack(None).await;
    let token = api_token(&s.provider, "alice").await;
    let requests = (0..8).map(|_| call(&s, &token, "application/json"));
    for r in futures_util::future::join_all(requests).await {
        assert_eq!(r.status(), 200);
    }
    assert_eq!(s.provider.introspection_requests(), 1);
}

#[tokio::test]
async fn an_expired_token_is_never_served_from_the_cache() {
    let s = introspection_stack(Some(Duration::from_secs(2))).await;
    let token = api_token(&s.provider, "alice").await;
    let r = call(&s, &token, "application/json").await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.provider.introspection_requests(), 1);
    // The token's exp (two seconds from its issue) passes well inside the 60 s cache window.
    let issued = portcullis::login::unix_now();
    while portcullis::login::unix_now() <= issued + 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    refused(&s, &token, "the token is not active").await;
    assert!(s.provider.introspection_requests() >= 2, "asked again");
    assert_eq!(s.upstream.seen().len(), 1);
}

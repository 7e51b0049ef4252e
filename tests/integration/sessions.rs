//! Sessions over time with the cookie store: refresh before the access token expires, idle timeout,
//! back-channel logout. (The same behaviour across replicas sharing Redis is in `redis`.)

use std::time::Duration;

use devidp::{LogoutSubject, Misbehavior, DEMO_USERS, LOGOUT_EVENT};
use serde_json::json;

use crate::browser::*;
use crate::support::*;

fn sub_of(name: &str) -> &'static str {
    DEMO_USERS.iter().find(|u| u.username == name).unwrap().sub
}

/// A stack whose provider issues refresh tokens, with `extra` configuration.
async fn refreshing_stack(extra: &str) -> Stack {
    stack(StackOptions {
        refresh_tokens: true,
        extra: extra.into(),
        ..Default::default()
    })
    .await
}

/// The session cookie a browser holds, as a `Cookie` header value.
fn cookie_header(b: &Browser, base: &str) -> String {
    use reqwest::cookie::CookieStore as _;
    b.jar
        .cookies(&url::Url::parse(base).unwrap())
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn concurrent_requests_refresh_once_and_all_reach_the_upstream_with_new_claims() {
    let s = refreshing_stack("").await;
    // Tokens from the login expire within refresh_before (60 s): the next request refreshes.
    s.provider.set_access_token_ttl(Duration::from_secs(30));
    let b = Browser::new();
    b.login(&format!("{}/private", s.base), "alice").await;
    s.provider.set_access_token_ttl(Duration::from_secs(3600));
    s.provider
        .set_user_claim("alice", "email", json!("alice@renamed.example"));
    let before = s.upstream.seen().len();
    let cookie = cookie_header(&b, &s.base);

    // 50 requests at once, all with the session as it was before the refresh.
    let c = client();
    let requests = (0..50).map(|i| {
        let c = c.clone();
        let url = format!("{}/private/{i}", s.base);
        let cookie = cookie.clone();
        async move {
            let r = c
                .get(url)
                .header("cookie", cookie)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap();
            let cookies: Vec<String> = r
                .headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect();
            (r.status().as_u16(), cookies)
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    assert_eq!(s.provider.refresh_requests(), 1, "exactly one refresh");
    // Every answer carries the refreshed session's cookie, so each copy of the old one is replaced.
    assert!(answers
        .iter()
        .all(|(_, cookies)| cookies.iter().any(|c| c.starts_with("_portcullis="))));
    let seen = s.upstream.seen();
    assert_eq!(seen.len() - before, 50);
    assert!(seen[before..]
        .iter()
        .all(|r| r.headers["x-forwarded-email"] == "alice@renamed.example"));

    // The old cookie keeps answering with the new session (its refresh token is never sent again:
    // the provider would revoke the login on reuse).
    let r = c
        .get(format!("{}/private/again", s.base))
        .header("cookie", cookie.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.provider.refresh_requests(), 1);

    // The browser takes the new cookie (from the answer to its old one). When the new session's
    // tokens are due, its rotated refresh token works: a reused one would be refused.
    assert_eq!(b.get(&format!("{}/private", s.base)).await.status(), 200);
    s.provider
        .set_user_claim("alice", "email", json!("alice@third.example"));
    let due = s
        .toml
        .replace("[session]\n", "[session]\nrefresh_before = \"2h\"\n");
    s.gateway.runtime().reload(config(&due)).unwrap();
    assert_eq!(b.get(&format!("{}/private", s.base)).await.status(), 200);
    assert_eq!(s.provider.refresh_requests(), 2);
    assert_eq!(
        s.upstream.last().headers["x-forwarded-email"],
        "alice@third.example"
    );
}

#[tokio::test]
async fn invalid_grant_ends_the_session() {
    let s = refreshing_stack("").await;
    s.provider.set_access_token_ttl(Duration::from_secs(30));
    let (browser, api) = (Browser::new(), Browser::new());
    browser.login(&format!("{}/private", s.base), "alice").await;
    api.login(&format!("{}/private", s.base), "bob").await;
    s.provider.set_misbehavior(Misbehavior::TokenError {
        error: "invalid_grant".into(),
        description: "the grant was revoked".into(),
    });
    let before = s.upstream.seen().len();

    // A browser is sent to log in, its session cookie cleared.
    let r = browser.get(&format!("{}/private", s.base)).await;
    assert_eq!(r.status(), 302);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .contains("/authorize"));
    assert!(r
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("_portcullis=;")));
    // An API client gets 401.
    let r = api
        .client
        .get(format!("{}/private", s.base))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    s.provider.set_misbehavior(Misbehavior::None);
    // The ended session stays ended, even without the provider's help.
    let cookie = cookie_header(&api, &s.base);
    let r = client()
        .get(format!("{}/private", s.base))
        .header("cookie", cookie)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        s.upstream.seen().len(),
        before,
        "nothing reached the upstream"
    );
}

#[tokio::test]
async fn a_refreshed_id_token_for_another_subject_ends_the_session() {
    let s = refreshing_stack("").await;
    s.provider.set_access_token_ttl(Duration::from_secs(30));
    let b = Browser::new();
    b.login(&format!("{}/private", s.base), "alice").await;
    // The provider now asserts another sub for the same login: the refresh must not take it.
    s.provider
        .set_user_claim("alice", "sub", json!(sub_of("bob")));
    let before = s.upstream.seen().len();
    let r = b.get(&format!("{}/private", s.base)).await;
    assert_eq!(r.status(), 302, "a session switched to another user");
    assert_eq!(s.upstream.seen().len(), before);
    assert_eq!(s.provider.refresh_requests(), 1);
}

#[tokio::test]
async fn a_failing_provider_is_retried_later_while_the_token_is_valid() {
    let s = refreshing_stack("").await;
    s.provider.set_access_token_ttl(Duration::from_secs(30));
    let b = Browser::new();
    b.login(&format!("{}/private", s.base), "alice").await;
    let tokens_before = s.provider.token_requests();
    s.provider.set_misbehavior(Misbehavior::ServerError);
    // The access token is still valid for 30 s: the request goes on.
    for _ in 0..5 {
        assert_eq!(b.get(&format!("{}/private", s.base)).await.status(), 200);
    }
    // One attempt, not one per request (the next comes after 5 s at the earliest).
    assert_eq!(s.provider.token_requests(), tokens_before + 1);
    s.provider.set_misbehavior(Misbehavior::None);
}

#[tokio::test]
async fn an_expired_access_token_without_a_provider_is_503() {
    let s = refreshing_stack("").await;
    // Tokens that are already expired when the session starts.
    s.provider.set_access_token_ttl(Duration::from_secs(0));
    let b = Browser::new();
    b.login(&format!("{}/private", s.base), "alice").await;
    s.provider.set_misbehavior(Misbehavior::ServerError);
    let before = s.upstream.seen().len();
    let r = b.get(&format!("{}/private", s.base)).await;
    assert_eq!(r.status(), 503);
    assert_eq!(s.upstream.seen().len(), before);
    s.provider.set_misbehavior(Misbehavior::None);
    // The provider is back: the next attempt (after the retry interval) refreshes and serves.
    assert!(
        eventually_async(Duration::from_secs(15), || async {
            b.get(&format!("{}/private", s.base)).await.status() == 200
        })
        .await
    );
}

#[tokio::test]
async fn idle_timeout_ends_an_unused_session_and_spares_a_used_one() {
    let s = stack(StackOptions {
        extra: "".into(),
        ..Default::default()
    })
    .await;
    let text = s
        .toml
        .replace("[session]\n", "[session]\nidle_timeout = \"4s\"\n");
    s.gateway.runtime().reload(config(&text)).unwrap();
    let (used, unused) = (Browser::new(), Browser::new());
    used.login(&format!("{}/private", s.base), "alice").await;
    unused.login(&format!("{}/private", s.base), "bob").await;
    // Time passes: one session is used every second, the other not at all.
    for _ in 0..7 {
        assert_eq!(used.get(&format!("{}/private", s.base)).await.status(), 200);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(used.get(&format!("{}/private", s.base)).await.status(), 200);
    assert_eq!(
        unused.get(&format!("{}/private", s.base)).await.status(),
        302
    );
}

/// A stack that receives the provider's back-channel logouts.
async fn logout_stack() -> Stack {
    let s = stack(StackOptions {
        profile: devidp::Profile::Standard,
        ..Default::default()
    })
    .await;
    s.provider
        .set_backchannel_logout_uri(CLIENT_ID, &format!("{}/oauth2/backchannel_logout", s.base));
    s
}

async fn sid_of(b: &Browser, base: &str) -> String {
    let info: serde_json::Value = b
        .get(&format!("{base}/oauth2/userinfo"))
        .await
        .json()
        .await
        .unwrap();
    info["sid"].as_str().expect("a sid").to_string()
}

#[tokio::test]
async fn a_valid_logout_token_ends_its_session_and_a_replay_is_refused() {
    let s = logout_stack().await;
    let (first, second) = (Browser::new(), Browser::new());
    first.login(&format!("{}/private", s.base), "alice").await;
    second.login(&format!("{}/private", s.base), "alice").await;
    let sid = sid_of(&first, &s.base).await;

    let claims = s
        .provider
        .logout_token_claims(CLIENT_ID, LogoutSubject::Sid(sid.clone()))
        .unwrap();
    let token = s.provider.sign_jwt(&claims).unwrap();
    let status = s
        .provider
        .post_logout_token(CLIENT_ID, &token)
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        first.get(&format!("{}/private", s.base)).await.status(),
        302
    );
    assert_eq!(
        second.get(&format!("{}/private", s.base)).await.status(),
        200
    );
    // The same token again: its jti was seen.
    let status = s
        .provider
        .post_logout_token(CLIENT_ID, &token)
        .await
        .unwrap();
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_sub_only_logout_ends_every_session_of_that_user() {
    let s = logout_stack().await;
    let (a1, a2, bob) = (Browser::new(), Browser::new(), Browser::new());
    a1.login(&format!("{}/private", s.base), "alice").await;
    a2.login(&format!("{}/private", s.base), "alice").await;
    bob.login(&format!("{}/private", s.base), "bob").await;
    let status = s
        .provider
        .backchannel_logout(CLIENT_ID, LogoutSubject::Sub(sub_of("alice").into()))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(a1.get(&format!("{}/private", s.base)).await.status(), 302);
    assert_eq!(a2.get(&format!("{}/private", s.base)).await.status(), 302);
    assert_eq!(bob.get(&format!("{}/private", s.base)).await.status(), 200);
}

#[tokio::test]
async fn each_defective_logout_token_is_400_and_ends_nothing() {
    let s = logout_stack().await;
    let b = Browser::new();
    b.login(&format!("{}/private", s.base), "alice").await;
    let sid = sid_of(&b, &s.base).await;
    let proper = || {
        s.provider
            .logout_token_claims(CLIENT_ID, LogoutSubject::Sid(sid.clone()))
            .unwrap()
    };
    let now = portcullis::login::unix_now();
    let altered = |change: serde_json::Value| {
        let mut c = proper();
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        s.provider.sign_jwt(&c).unwrap()
    };
    // A proper token with one byte of its signature changed.
    let bad_signature = {
        let t = s.provider.sign_jwt(&proper()).unwrap();
        let (rest, sig) = t.rsplit_once('.').unwrap();
        let flipped = if sig.starts_with('A') { "B" } else { "A" };
        format!("{rest}.{flipped}{}", &sig[1..])
    };
    let cases = [
        ("bad signature", bad_signature),
        (
            "wrong iss",
            altered(json!({"iss": "http://127.0.0.1:1/evil"})),
        ),
        ("wrong aud", altered(json!({"aud": "another-client"}))),
        (
            "stale iat",
            altered(json!({"iat": now - 3600, "exp": null})),
        ),
        ("missing events", altered(json!({"events": null}))),
        (
            "wrong event",
            altered(json!({"events": {"http://schemas.openid.net/event/other": {}}})),
        ),
        ("a nonce", altered(json!({"nonce": "n-1"}))),
        ("neither sid nor sub", altered(json!({"sid": null}))),
        ("missing jti", altered(json!({"jti": null}))),
        ("not a JWT", "not-a-jwt".to_string()),
    ];
    assert!(proper()["events"].get(LOGOUT_EVENT).is_some());
    for (what, token) in &cases {
        let status = s
            .provider
            .post_logout_token(CLIENT_ID, token)
            .await
            .unwrap();
        assert_eq!(status, 400, "{what}");
        assert_eq!(
            b.get(&format!("{}/private", s.base)).await.status(),
            200,
            "{what} ended the session"
        );
    }
    // A request without a form body or with two tokens.
    let c = client();
    let r = c
        .post(format!("{}/oauth2/backchannel_logout", s.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("logout_token=a&logout_token=b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    let r = c
        .post(format!("{}/oauth2/backchannel_logout", s.base))
        .json(&json!({"logout_token": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // And the proper one still works afterwards.
    let token = s.provider.sign_jwt(&proper()).unwrap();
    assert_eq!(
        s.provider
            .post_logout_token(CLIENT_ID, &token)
            .await
            .unwrap(),
        200
    );
    assert_eq!(b.get(&format!("{}/private", s.base)).await.status(), 302);
}

#[tokio::test]
async fn sign_out_refuses_a_copy_of_the_cookie_taken_before() {
    let s = stack(StackOptions::default()).await;
    let b = Browser::new();
    b.login(&format!("{}/private", s.base), "alice").await;
    let copy = cookie_header(&b, &s.base);
    let r = b.get(&format!("{}/oauth2/sign_out", s.base)).await;
    assert_eq!(r.status(), 302);
    let r = client()
        .get(format!("{}/private", s.base))
        .header("cookie", copy)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

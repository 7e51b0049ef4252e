//! Who may pass: `[access]` and a route's `allowed_groups` against real logins at the development
//! provider, and claims delivered by userinfo only (the Asgardeo profile's mode). Every denial is a
//! 403 (a page naming who is signed in with a sign-out link, or JSON), nothing reaches the upstream,
//! the session is kept, and the log names the rule that failed.

use devidp::{DevProviderOptions, Misbehavior, Profile, ASGARDEO_USERINFO_ONLY, DEMO_USERS};
use serde_json::{json, Map, Value};

use crate::browser::*;

fn user(name: &str) -> &'static devidp::DemoUser {
    DEMO_USERS.iter().find(|u| u.username == name).unwrap()
}

/// Extra claims per user, from `(username, {claims})` pairs.
fn extra(pairs: &[(&str, Value)]) -> Vec<(String, Map<String, Value>)> {
    pairs
        .iter()
        .map(|(u, v)| (u.to_string(), v.as_object().unwrap().clone()))
        .collect()
}

async fn policy_stack(access: &str, claims: &[(&str, Value)]) -> Stack {
    stack(StackOptions {
        extra: access.to_string(),
        provider: DevProviderOptions {
            extra_claims: extra(claims),
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

/// A browser signed in as `name` (the login itself succeeds whatever the policy says).
async fn signed_in(s: &Stack, name: &str) -> Browser {
    let b = Browser::new();
    let back = b.login(&format!("{}/start-here", s.base), name).await;
    assert_eq!(back, format!("{}/start-here", s.base), "{name} logged in");
    b
}

/// `path` reaches the upstream for this browser, with the user's identity.
async fn allowed(s: &Stack, b: &Browser, path: &str, name: &str) {
    let before = s.upstream.seen().len();
    let r = b.get(&format!("{}{path}", s.base)).await;
    assert_eq!(r.status(), 200, "{name} on {path}");
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), before + 1);
    assert_eq!(
        seen.last().unwrap().headers["x-forwarded-user"],
        user(name).sub
    );
}

/// `path` is refused for this browser as SPEC says: 403, the page (who, sign-out) for a browser,
/// JSON for an API client, nothing upstream, the session kept, and a log line naming `rule`.
async fn denied(s: &Stack, b: &Browser, path: &str, who: &str, rule: &str) {
    let before = s.upstream.seen().len();
    let url = format!("{}{path}", s.base);
    let r = b.get(&url).await;
    assert_eq!(r.status(), 403, "{who} on {path}");
    assert!(
        r.headers().get("set-cookie").is_none(),
        "the session is kept"
    );
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = r.text().await.unwrap();
    assert!(
        page.contains(&format!("signed in as <strong>{who}</strong>")),
        "{page}"
    );
    assert!(page.contains("href=\"/oauth2/sign_out\""), "{page}");
    assert!(!page.contains(rule), "the rule is for the log only: {page}");

    let r = b
        .client
        .get(&url)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "access_denied", "{body}");

    // Still signed in, still denied: no new login.
    let r = b.get(&url).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        s.upstream.seen().len(),
        before,
        "nothing reached the upstream"
    );
    assert!(
        log_text().contains(&format!("for {path}: {rule}")),
        "the log names {rule}"
    );
}

#[tokio::test]
async fn email_domain_matches_exactly_in_any_case() {
    let s = policy_stack(
        "[access]\nallowed_email_domains = [\"Example.COM\"]\n",
        &[
            ("alice", json!({"email": "Alice@EXAMPLE.com"})),
            ("carol", json!({"email": "carol@sub.example.com"})),
        ],
    )
    .await;
    let alice = signed_in(&s, "alice").await;
    allowed(&s, &alice, "/reports", "alice").await;
    let bob = signed_in(&s, "bob").await;
    denied(
        &s,
        &bob,
        "/reports",
        "bob@example.org",
        "access.allowed_email_domains",
    )
    .await;
    let carol = signed_in(&s, "carol").await;
    denied(
        &s,
        &carol,
        "/reports",
        "carol@sub.example.com",
        "access.allowed_email_domains",
    )
    .await;
}

#[tokio::test]
async fn exact_email_and_unverified_email() {
    let s = policy_stack(
        "[access]\nallowed_emails = [\"BOB@example.org\", \"carol@example.net\"]\n",
        &[("carol", json!({"email_verified": false}))],
    )
    .await;
    let bob = signed_in(&s, "bob").await;
    allowed(&s, &bob, "/x", "bob").await;
    let alice = signed_in(&s, "alice").await;
    denied(
        &s,
        &alice,
        "/x",
        "alice@example.com",
        "access.allowed_emails",
    )
    .await;
    let carol = signed_in(&s, "carol").await;
    denied(
        &s,
        &carol,
        "/x",
        "carol@example.net",
        "access.require_email_verified",
    )
    .await;

    let lax = policy_stack(
        "[access]\nallowed_emails = [\"carol@example.net\"]\nrequire_email_verified = false\n",
        &[("carol", json!({"email_verified": false}))],
    )
    .await;
    let carol = signed_in(&lax, "carol").await;
    allowed(&lax, &carol, "/x", "carol").await;
}

#[tokio::test]
async fn group_in_a_nested_claim() {
    let s = policy_stack(
        "[access]\ngroups_claim = \"realm_access.roles\"\nallowed_groups = [\"admin\"]\n",
        &[
            (
                "alice",
                json!({"realm_access": {"roles": ["user", "admin"]}}),
            ),
            ("bob", json!({"realm_access": {"roles": ["user"]}})),
        ],
    )
    .await;
    let alice = signed_in(&s, "alice").await;
    allowed(&s, &alice, "/x", "alice").await;
    let bob = signed_in(&s, "bob").await;
    denied(&s, &bob, "/x", "bob@example.org", "access.allowed_groups").await;
    // carol has no such claim at all.
    let carol = signed_in(&s, "carol").await;
    denied(
        &s,
        &carol,
        "/x",
        "carol@example.net",
        "access.allowed_groups",
    )
    .await;
}

#[tokio::test]
async fn numeric_and_boolean_claims_match_their_own_type() {
    let s = policy_stack(
        "[access]\nclaims = { level = [3, 4], mfa = [true] }\n",
        &[
            ("alice", json!({"level": 3, "mfa": true})),
            ("bob", json!({"level": "3", "mfa": true})),
            ("carol", json!({"level": 4, "mfa": false})),
        ],
    )
    .await;
    let alice = signed_in(&s, "alice").await;
    allowed(&s, &alice, "/x", "alice").await;
    let bob = signed_in(&s, "bob").await;
    denied(&s, &bob, "/x", "bob@example.org", "access.claims.level").await;
    let carol = signed_in(&s, "carol").await;
    denied(&s, &carol, "/x", "carol@example.net", "access.claims.mfa").await;
}

#[tokio::test]
async fn a_routes_groups_narrow_access_for_that_route() {
    let s = policy_stack(
        "[access]\nallowed_groups = [\"staff\"]\n\
         [[routes]]\npath = \"^/admin\"\nallowed_groups = [\"admins\"]\n",
        &[],
    )
    .await;
    let alice = signed_in(&s, "alice").await;
    allowed(&s, &alice, "/admin/users", "alice").await;
    allowed(&s, &alice, "/reports", "alice").await;
    let bob = signed_in(&s, "bob").await;
    allowed(&s, &bob, "/reports", "bob").await;
    denied(
        &s,
        &bob,
        "/admin/users",
        "bob@example.org",
        "routes[0].allowed_groups",
    )
    .await;
    // [access] still applies on the route: carol (no groups) passes neither.
    let carol = signed_in(&s, "carol").await;
    denied(
        &s,
        &carol,
        "/admin/users",
        "carol@example.net",
        "access.allowed_groups",
    )
    .await;

    // Forward-auth applies [access] too.
    let r = carol
        .client
        .get(format!("{}/oauth2/auth", s.base))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = bob.get(&format!("{}/oauth2/auth", s.base)).await;
    assert_eq!(r.status(), 202);
}

/// The Asgardeo profile keeping email and groups out of the id_token: the gateway fills them in from
/// userinfo (`oidc.userinfo_claims`), for the identity headers and for `[access]`.
#[tokio::test]
async fn userinfo_claims_feed_headers_and_policy() {
    let options = |userinfo: bool| StackOptions {
        profile: Profile::Asgardeo,
        oidc_extra: format!("userinfo_claims = {userinfo}"),
        extra: "[access]\nallowed_groups = [\"admins\"]\n".into(),
        provider: DevProviderOptions {
            userinfo_only_claims: ASGARDEO_USERINFO_ONLY
                .iter()
                .map(|c| c.to_string())
                .collect(),
            ..Default::default()
        },
        ..Default::default()
    };
    let s = stack(options(true)).await;
    let alice = signed_in(&s, "alice").await;
    allowed(&s, &alice, "/x", "alice").await;
    let seen = s.upstream.last();
    assert_eq!(seen.headers["x-forwarded-email"], "alice@example.com");
    assert_eq!(seen.headers["x-forwarded-groups"], "admins,staff");
    assert_eq!(s.provider.userinfo_requests(), 1, "once, at login");
    let bob = signed_in(&s, "bob").await;
    denied(&s, &bob, "/x", "bob@example.org", "access.allowed_groups").await;

    // Without userinfo_claims the id_token alone lacks them: no email header, and the groups rule
    // has nothing to pass on.
    let s = stack(options(false)).await;
    let alice = signed_in(&s, "alice").await;
    denied(&s, &alice, "/x", "alice", "access.allowed_groups").await;
    assert_eq!(s.provider.userinfo_requests(), 0);
}

#[tokio::test]
async fn a_userinfo_answer_about_someone_else_fails_the_login() {
    let s = stack(StackOptions {
        oidc_extra: "userinfo_claims = true".into(),
        ..Default::default()
    })
    .await;
    s.provider.set_misbehavior(Misbehavior::UserinfoWrongSub);
    let b = Browser::new();
    let authorize = b.redirect_from(&format!("{}/x", s.base)).await;
    let callback = b.provider_login(&authorize, "alice").await;
    let r = b.get(&callback).await;
    assert_eq!(r.status(), 502);
    let session_cookies: Vec<_> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .filter(|c| c.starts_with("_portcullis=") || c.starts_with("_portcullis_0="))
        .collect();
    assert!(session_cookies.is_empty(), "{session_cookies:?}");
    assert!(log_text().contains("userinfo sub is not the id_token's sub"));
    // No session: the next request is sent to log in again, and nothing reached the upstream.
    let r = b.get(&format!("{}/x", s.base)).await;
    assert_eq!(r.status(), 302);
    assert!(s.upstream.seen().is_empty());
}

//! The runtime and its configuration snapshot: revocations reach the cache of opened sessions, a new
//! snapshot changes later requests without touching sessions, and the real binary starts in an
//! environment full of Kubernetes service links.

use devidp::{Profile, DEMO_USERS};
use portcullis::session::Revocation;

use crate::browser::*;
use crate::support::*;

fn sub_of(name: &str) -> &'static str {
    DEMO_USERS.iter().find(|u| u.username == name).unwrap().sub
}

#[tokio::test]
async fn a_revoked_session_is_refused_even_when_its_cookie_is_cached() {
    let s = stack(StackOptions::default()).await;
    let (alice, bob) = (Browser::new(), Browser::new());
    alice.login(&format!("{}/private", s.base), "alice").await;
    bob.login(&format!("{}/private", s.base), "bob").await;
    // These requests open each session once; the next ones are served from the cache.
    for _ in 0..2 {
        assert_eq!(
            alice.get(&format!("{}/private", s.base)).await.status(),
            200
        );
        assert_eq!(bob.get(&format!("{}/private", s.base)).await.status(), 200);
    }
    let seen_before = s.upstream.seen().len();

    let now = portcullis::login::unix_now();
    s.gateway
        .runtime()
        .sessions
        .revoke(
            &s.gateway.runtime().snapshot().cookies,
            &Revocation::Sub(sub_of("alice").into()),
            now,
        )
        .await
        .unwrap();

    // Alice's cached cookie now means no session: a browser is sent to log in, an API client 401.
    let r = alice.get(&format!("{}/private", s.base)).await;
    assert_eq!(r.status(), 302, "revoked session served");
    let r = alice
        .client
        .get(format!("{}/private", s.base))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Bob's session is untouched, and nothing of Alice's reached the upstream after the revocation.
    assert_eq!(bob.get(&format!("{}/private", s.base)).await.status(), 200);
    let after: Vec<_> = s.upstream.seen()[seen_before..].to_vec();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].headers["x-forwarded-user"], sub_of("bob"));

    // A new login of hers is a new session, which the earlier revocation does not cover.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    alice.login(&format!("{}/private", s.base), "alice").await;
    assert_eq!(
        alice.get(&format!("{}/private", s.base)).await.status(),
        200
    );
}

#[tokio::test]
async fn a_revoked_sid_ends_that_session_only() {
    // The Asgardeo profile puts a `sid` in its id_tokens, one per login.
    let s = stack(StackOptions {
        profile: Profile::Asgardeo,
        ..Default::default()
    })
    .await;
    let (first, second) = (Browser::new(), Browser::new());
    first.login(&format!("{}/private", s.base), "alice").await;
    second.login(&format!("{}/private", s.base), "alice").await;
    let r = first.get(&format!("{}/oauth2/userinfo", s.base)).await;
    let info: serde_json::Value = r.json().await.unwrap();
    let sid = info["sid"].as_str().expect("a sid claim").to_string();
    assert_eq!(
        first.get(&format!("{}/private", s.base)).await.status(),
        200
    );
    assert_eq!(
        second.get(&format!("{}/private", s.base)).await.status(),
        200
    );

    s.gateway
        .runtime()
        .sessions
        .revoke(
            &s.gateway.runtime().snapshot().cookies,
            &Revocation::Sid(sid),
            portcullis::login::unix_now(),
        )
        .await
        .unwrap();
    assert_eq!(
        first.get(&format!("{}/private", s.base)).await.status(),
        302
    );
    assert_eq!(
        second.get(&format!("{}/private", s.base)).await.status(),
        200
    );
}

#[tokio::test]
async fn a_new_snapshot_changes_later_requests_and_keeps_sessions() {
    let s = stack(StackOptions::default()).await;
    let b = Browser::new();
    b.login(&format!("{}/private", s.base), "alice").await;
    assert_eq!(b.get(&format!("{}/admin", s.base)).await.status(), 200);

    // The same configuration plus a deny route and another header mapping.
    let text = format!(
        "{}\n[[routes]]\npath = \"^/admin\"\npolicy = \"deny\"\n[headers]\n\"X-Who\" = \"email\"\n",
        s.toml
    );
    let restart = s.gateway.runtime().reload(config(&text)).unwrap();
    assert!(restart.is_empty(), "{restart:?}");

    assert_eq!(b.get(&format!("{}/admin", s.base)).await.status(), 403);
    // The session opened under the old snapshot carries the new mapping now.
    assert_eq!(b.get(&format!("{}/private", s.base)).await.status(), 200);
    let seen = s.upstream.last().headers;
    assert_eq!(seen["x-who"], "alice@example.com");
    assert!(!seen.contains_key("x-forwarded-email"));
}

#[tokio::test]
async fn kubernetes_service_links_let_the_binary_start_and_serve() {
    let up = TestUpstream::start("app").await;
    let text = gateway_toml(
        &up.url(),
        "[[routes]]\npath = \"^/\"\npolicy = \"public\"\n",
    );
    // What Kubernetes injects into every pod of a namespace with a Service named `portcullis`.
    let links = [
        ("PORTCULLIS_PORT", "tcp://10.0.0.1:4180"),
        ("PORTCULLIS_PORT_4180_TCP", "tcp://10.0.0.1:4180"),
        ("PORTCULLIS_PORT_4180_TCP_ADDR", "10.0.0.1"),
        ("PORTCULLIS_PORT_4180_TCP_PORT", "4180"),
        ("PORTCULLIS_PORT_4180_TCP_PROTO", "tcp"),
        ("PORTCULLIS_SERVICE_HOST", "10.0.0.1"),
        ("PORTCULLIS_SERVICE_PORT", "4180"),
        ("PORTCULLIS_SERVICE_PORT_HTTP", "4180"),
    ];
    let gw = GatewayProcess::start_with_env(&text, &links).await;
    let r = client()
        .get(format!("http://{}/hello", gw.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "app /hello");
}

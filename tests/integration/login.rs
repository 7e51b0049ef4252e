//! The login over real HTTP: the development provider as a real server, the gateway, a recording
//! upstream, and a cookie-jar client playing the browser.

use std::time::Duration;

use devidp::{DevProviderOptions, Misbehavior, Profile, SigningAlgorithm, DEMO_USERS};

use crate::browser::*;
use crate::support::*;

fn user(name: &str) -> &'static devidp::DemoUser {
    DEMO_USERS.iter().find(|u| u.username == name).unwrap()
}

/// Log in as alice through the whole flow and check every step.
async fn full_login(opts: StackOptions) -> Stack {
    let auth = opts.auth;
    let s = stack(opts).await;
    let b = Browser::new();
    let protected = format!("{}/reports/q3?year=2026&x=%2Fy", s.base);

    // 1. A protected navigation is sent to the provider with every parameter.
    let authorize = b.redirect_from(&protected).await;
    let provider_host = if s.provider.issuer().contains("/t/") {
        "localhost"
    } else {
        "127.0.0.1"
    };
    assert!(
        authorize.starts_with(&format!("http://{provider_host}:")),
        "{authorize}"
    );
    let q = query_map(&authorize);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["redirect_uri"], format!("{}/oauth2/callback", s.base));
    assert_eq!(q["scope"], "openid profile email");
    assert!(q["state"].len() >= 32 && q["nonce"].len() >= 32);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert!(
        s.upstream.seen().is_empty(),
        "an unauthenticated request reached the upstream"
    );

    // 2. The provider's login form, 3. the callback, 4. back to the original path and query.
    let callback = b.provider_login(&authorize, "alice").await;
    assert!(callback.contains("/oauth2/callback?"), "{callback}");
    let r = b.get(&callback).await;
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/reports/q3?year=2026&x=%2Fy");

    // 5. The upstream receives the identity.
    let r = b.get(&protected).await;
    assert_eq!(r.status(), 200, "{auth:?}: signed in");
    let seen = s.upstream.last();
    let alice = user("alice");
    assert_eq!(seen.uri, "/reports/q3?year=2026&x=%2Fy");
    assert_eq!(seen.headers["x-forwarded-user"], alice.sub);
    assert_eq!(seen.headers["x-forwarded-email"], alice.email);
    assert_eq!(seen.headers["x-forwarded-groups"], "admins,staff");
    assert_eq!(seen.headers["x-forwarded-preferred-username"], "alice");
    let cookie = seen
        .headers
        .get("cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        !cookie.contains("_portcullis"),
        "the gateway's cookies reached the upstream: {cookie}"
    );
    assert_eq!(s.provider.token_requests(), 1);
    s
}

#[tokio::test]
async fn full_login_with_client_secret_basic() {
    full_login(StackOptions {
        auth: Auth::Basic,
        ..Default::default()
    })
    .await;
}

#[tokio::test]
async fn full_login_with_client_secret_post() {
    full_login(StackOptions {
        auth: Auth::Post,
        ..Default::default()
    })
    .await;
}

#[tokio::test]
async fn full_login_as_public_client_with_pkce() {
    full_login(StackOptions {
        auth: Auth::None,
        ..Default::default()
    })
    .await;
}

#[tokio::test]
async fn full_login_with_private_key_jwt() {
    full_login(StackOptions {
        auth: Auth::PrivateKeyJwt,
        ..Default::default()
    })
    .await;
}

#[tokio::test]
async fn full_login_against_a_provider_signing_with_es256() {
    let s = full_login(StackOptions {
        provider: DevProviderOptions {
            signing_algorithm: SigningAlgorithm::Es256,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    // The provider really signed with ES256: its discovery and JWKS say so.
    let meta = get_json(&format!(
        "{}/.well-known/openid-configuration",
        s.provider.issuer()
    ))
    .await;
    assert_eq!(meta["id_token_signing_alg_values_supported"][0], "ES256");
    let jwks = get_json(meta["jwks_uri"].as_str().unwrap()).await;
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert_eq!(jwks["keys"][0]["crv"], "P-256");
}

#[tokio::test]
async fn full_login_against_an_asgardeo_shaped_provider() {
    for auth in [Auth::Basic, Auth::Post] {
        let s = full_login(StackOptions {
            auth,
            profile: Profile::Asgardeo,
            ..Default::default()
        })
        .await;
        // The issuer has a path and another host than the token endpoint.
        assert!(
            s.provider.issuer().starts_with("http://127.0.0.1:"),
            "{}",
            s.provider.issuer()
        );
        assert!(s.provider.issuer().ends_with("/t/demo/oauth2/token"));
    }
}

#[tokio::test]
async fn each_id_token_defect_gives_no_session_and_names_the_check() {
    let s = stack(StackOptions::default()).await;
    let cases = [
        (Misbehavior::WrongKey, "signature"),
        (Misbehavior::AlgNone, "alg"),
        (Misbehavior::Hs256WithPublicKey, "alg"),
        (Misbehavior::WrongIssuer, "iss"),
        (Misbehavior::WrongAudience, "aud"),
        (Misbehavior::MultipleAudiencesNoAzp, "azp"),
        (Misbehavior::WrongAzp, "azp"),
        (Misbehavior::Expired, "exp"),
        (Misbehavior::FutureIat, "iat"),
        (Misbehavior::NotYetValid, "nbf"),
        (Misbehavior::BadNonce, "nonce"),
        (Misbehavior::MissingNonce, "nonce"),
        (Misbehavior::BadAtHash, "at_hash"),
    ];
    for (defect, check) in cases {
        s.provider.set_misbehavior(defect.clone());
        let b = Browser::new();
        let protected = format!("{}/private", s.base);
        let authorize = b.redirect_from(&protected).await;
        let callback = b.provider_login(&authorize, "alice").await;
        let before = log_text().len();
        let r = b.get(&callback).await;
        let status = r.status().as_u16();
        assert!(
            (400..600).contains(&status) && status != 500,
            "{defect:?}: status {status}"
        );
        let page = r.text().await.unwrap();
        assert!(page.contains("<h1>"), "{defect:?}: a clear page");
        let logged = log_text()[before..].to_string();
        let line = logged
            .lines()
            .find(|l| l.contains("id_token rejected"))
            .unwrap_or_else(|| panic!("{defect:?}: no log line in {logged}"));
        assert!(
            line.to_lowercase().contains(check),
            "{defect:?}: {line:?} does not name {check}"
        );
        // No session: the protected page still sends the browser to log in.
        assert_eq!(
            b.get(&protected).await.status(),
            302,
            "{defect:?} left a session"
        );
    }
    assert!(s.upstream.seen().is_empty());
}

#[tokio::test]
async fn key_rotation_needs_exactly_one_refetch_and_unknown_kids_are_rate_limited() {
    let s = stack(StackOptions::default()).await;
    let b = Browser::new();
    b.login(&format!("{}/a", s.base), "alice").await;
    let after_first = s.provider.jwks_requests();

    s.provider.rotate_keys();
    let b = Browser::new();
    let back = b.login(&format!("{}/b", s.base), "bob").await;
    assert!(back.ends_with("/b"), "{back}");
    assert_eq!(b.get(&format!("{}/b", s.base)).await.status(), 200);
    assert_eq!(
        s.provider.jwks_requests(),
        after_first + 1,
        "one refetch after rotation"
    );

    // A flood of tokens naming unknown kids: at most one refetch per interval (60 s by default).
    s.provider.set_misbehavior(Misbehavior::UnknownKid);
    let before = s.provider.jwks_requests();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let base = s.base.clone();
        tasks.push(tokio::spawn(async move {
            let b = Browser::new();
            let authorize = b.redirect_from(&format!("{base}/x")).await;
            let callback = b.provider_login(&authorize, "carol").await;
            b.get(&callback).await.status().as_u16()
        }));
    }
    for t in tasks {
        let status = t.await.unwrap();
        assert!((400..600).contains(&status) && status != 500, "{status}");
    }
    assert!(
        s.provider.jwks_requests() - before <= 1,
        "{} refetches",
        s.provider.jwks_requests() - before
    );
}

#[tokio::test]
async fn tampered_state_replayed_callback_and_provider_errors_give_no_session() {
    let s = stack(StackOptions::default()).await;
    let protected = format!("{}/private", s.base);

    // Tampered state.
    let b = Browser::new();
    let authorize = b.redirect_from(&protected).await;
    let callback = b.provider_login(&authorize, "alice").await;
    let state = query_map(&callback)["state"].clone();
    let tampered = callback.replace(&state, &format!("{}x", &state[..state.len() - 1]));
    let r = b.get(&tampered).await;
    assert_eq!(r.status(), 400);
    assert_eq!(b.get(&protected).await.status(), 302, "no session");

    // Replayed callback: the first use logs in, the second is refused.
    let b = Browser::new();
    let authorize = b.redirect_from(&protected).await;
    let callback = b.provider_login(&authorize, "alice").await;
    assert_eq!(b.get(&callback).await.status(), 302);
    let r = b.get(&callback).await;
    assert_eq!(r.status(), 400, "a replayed callback is refused");
    // And in a fresh browser (an attacker holding the URL) it is refused as well.
    let attacker = Browser::new();
    assert_eq!(attacker.get(&callback).await.status(), 400);
    assert_eq!(attacker.get(&protected).await.status(), 302);

    // The provider says access_denied: shown, escaped.
    let b = Browser::new();
    let authorize = b.redirect_from(&protected).await;
    let state = query_map(&authorize)["state"].clone();
    let denied = format!(
        "{}/oauth2/callback?error=access_denied&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state={state}",
        s.base
    );
    let r = b.get(&denied).await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(page.contains("access_denied"), "{page}");
    assert!(
        page.contains("&lt;script&gt;") && !page.contains("<script>"),
        "{page}"
    );
    assert_eq!(b.get(&protected).await.status(), 302);

    // The token endpoint answers invalid_grant.
    s.provider.set_misbehavior(Misbehavior::TokenError {
        error: "invalid_grant".into(),
        description: "the code has expired".into(),
    });
    let b = Browser::new();
    let authorize = b.redirect_from(&protected).await;
    let callback = b.provider_login(&authorize, "alice").await;
    let r = b.get(&callback).await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("invalid_grant") && page.contains("the code has expired"),
        "{page}"
    );
    assert_eq!(b.get(&protected).await.status(), 302);
    assert!(s.upstream.seen().is_empty());
}

#[tokio::test]
async fn return_targets_off_this_origin_land_on_the_root() {
    let s = stack(StackOptions::default()).await;
    for rd in [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
        "%2F%2Fevil.example",
        "/%09/evil.example",
    ] {
        let b = Browser::new();
        let start = format!(
            "{}/oauth2/start?rd={}",
            s.base,
            percent_encoding::utf8_percent_encode(rd, percent_encoding::NON_ALPHANUMERIC)
        );
        let authorize = b.redirect_from(&start).await;
        let callback = b.provider_login(&authorize, "alice").await;
        let r = b.get(&callback).await;
        assert_eq!(r.status(), 302);
        // SPEC: a refused target is a redirect to public_url + "/".
        assert_eq!(
            r.headers()["location"],
            format!("{}/", s.base).as_str(),
            "rd={rd:?}"
        );
    }
    // A good one is honoured.
    let b = Browser::new();
    let authorize = b
        .redirect_from(&format!("{}/oauth2/start?rd=%2Fdocs%3Fpage%3D2", s.base))
        .await;
    let callback = b.provider_login(&authorize, "alice").await;
    let r = b.get(&callback).await;
    assert_eq!(r.headers()["location"], "/docs?page=2");
}

#[tokio::test]
async fn client_sent_identity_headers_never_reach_the_upstream() {
    let s = stack(StackOptions {
        extra: PUBLIC_ROUTE.into(),
        ..Default::default()
    })
    .await;
    let spoof = |rb: reqwest::RequestBuilder| {
        rb.header("X-Forwarded-User", "admin")
            .header("x-forwarded-user", "admin2")
            .header("X_Forwarded_User", "admin3")
            .header("x_forwarded_email", "root@example.com")
            .header("X-Forwarded-Groups", "admins")
            .header("X-Forwarded-Access-Token", "forged")
    };
    // Without a session, on a public route.
    let b = Browser::new();
    let r = spoof(b.client.get(format!("{}/public/page", s.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.upstream.last().headers;
    for name in [
        "x-forwarded-user",
        "x_forwarded_user",
        "x-forwarded-email",
        "x_forwarded_email",
        "x-forwarded-groups",
        "x-forwarded-access-token",
    ] {
        assert!(
            !seen.contains_key(name),
            "{name} reached the upstream without a session: {seen:?}"
        );
    }
    // With a session: only the real identity, once.
    b.login(&format!("{}/private", s.base), "bob").await;
    let r = spoof(b.client.get(format!("{}/private", s.base)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.upstream.last().headers;
    let users: Vec<_> = seen.get_all("x-forwarded-user").iter().collect();
    assert_eq!(users, vec![user("bob").sub], "{seen:?}");
    assert_eq!(
        seen.get_all("x-forwarded-groups")
            .iter()
            .collect::<Vec<_>>(),
        vec!["staff"]
    );
    assert!(!seen.contains_key("x_forwarded_user") && !seen.contains_key("x_forwarded_email"));
    assert!(!seen.contains_key("x-forwarded-access-token"));
}

#[tokio::test]
async fn twenty_parallel_logins_keep_the_cookie_header_small() {
    let s = stack(StackOptions::default()).await;
    let origin = s.base.clone();

    // Twenty tabs at once: every login request leaves the browser before any answer is back.
    let b = Browser::new();
    let starts = futures_util::future::join_all(
        (0..20).map(|i| b.redirect_from_owned(format!("{}/tab/{i}", s.base))),
    )
    .await;
    let header = b.cookie_header(&origin);
    assert!(
        header.len() < 8192,
        "Cookie header of {} bytes",
        header.len()
    );
    // The last tabs still finish.
    for (i, authorize) in starts.iter().enumerate().rev().take(5) {
        let callback = b.provider_login(authorize, "alice").await;
        let r = b.get(&callback).await;
        if r.status() != 302 {
            panic!(
                "tab {i}: {} {}\n{}",
                r.status(),
                b.cookie_header(&origin),
                r.text().await.unwrap()
            );
        }
        let back = location(&r, &callback);
        assert!(back.ends_with(&format!("/tab/{i}")), "{back}");
    }

    // Twenty tabs one after another: at most a handful of login cookies live at once.
    let b = Browser::new();
    let mut starts = Vec::new();
    for i in 0..20 {
        starts.push(b.redirect_from(&format!("{}/seq/{i}", s.base)).await);
        let header = b.cookie_header(&origin);
        assert!(
            header.len() < 8192,
            "Cookie header of {} bytes",
            header.len()
        );
    }
    assert!(b.cookie_header(&origin).matches("_login_").count() <= 5);
    for (i, authorize) in starts.iter().enumerate().rev().take(3) {
        let callback = b.provider_login(authorize, "alice").await;
        let back = b.redirect_from(&callback).await;
        assert!(back.ends_with(&format!("/seq/{i}")), "{back}");
    }
}

#[tokio::test]
async fn bad_session_cookies_mean_no_session_never_a_5xx() {
    let s = stack(StackOptions::default()).await;
    let b = Browser::new();
    b.login(&format!("{}/private", s.base), "alice").await;
    let header = b.cookie_header(&s.base);
    let value = header
        .split("; ")
        .find_map(|c| c.strip_prefix("_portcullis="))
        .expect("a session cookie")
        .to_string();
    let mut flipped = value.clone().into_bytes();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    let variants = [
        String::from_utf8(flipped).unwrap(),
        value[..value.len() / 2].to_string(),
        "AAAA".to_string(),
        "%%%not-base64%%%".to_string(),
        String::new(),
    ];
    let c = client();
    for v in variants {
        for accept in ["text/html", "application/json"] {
            let r = c
                .get(format!("{}/private", s.base))
                .header("cookie", format!("_portcullis={v}"))
                .header("accept", accept)
                .send()
                .await
                .unwrap();
            let expected = if accept == "text/html" { 302 } else { 401 };
            assert_eq!(r.status(), expected, "cookie {v:?}");
        }
    }
    assert!(s.upstream.seen().len() <= 1);
}

#[tokio::test]
async fn large_sessions_are_chunked_and_rotated_secrets_keep_sessions() {
    let s = stack(StackOptions::default()).await;
    let b = Browser::new();
    b.login(&format!("{}/private", s.base), "many").await;
    let header = b.cookie_header(&s.base);
    assert!(
        header.contains("_portcullis_0=") && header.contains("_portcullis_1="),
        "chunked: {}",
        header.len()
    );
    assert!(
        header.len() > 10_000,
        "a large session: {} bytes",
        header.len()
    );
    let r = b.get(&format!("{}/private", s.base)).await;
    assert_eq!(r.status(), 200);
    let groups = s.upstream.last().headers["x-forwarded-groups"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(groups.split(',').count(), 400);

    // Rotate: a new gateway whose current secret is new and whose previous secrets hold the old one.
    let new_secret = "ffffffffffffffffffffffffffffffff";
    let rotated = s.toml.replace(
        &format!("secret = \"{SECRET}\""),
        &format!("secret = \"{new_secret}\"\nprevious_secrets = [\"{SECRET}\"]"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw2 = portcullis::spawn(config(&rotated), listener).unwrap();
    let base2 = format!("http://{}", gw2.addr());
    wait_ready(&base2).await;
    let c = client();
    let r = c
        .get(format!("{base2}/oauth2/userinfo"))
        .header("cookie", header.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "an old session survives the rotation");
    let info: serde_json::Value = r.json().await.unwrap();
    assert_eq!(info["preferred_username"], "many");

    // Without the old secret in previous_secrets the session is foreign.
    let dropped = s.toml.replace(
        &format!("secret = \"{SECRET}\""),
        &format!("secret = \"{new_secret}\""),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gw3 = portcullis::spawn(config(&dropped), listener).unwrap();
    let r = c
        .get(format!("http://{}/oauth2/userinfo", gw3.addr()))
        .header("cookie", header)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn userinfo_auth_and_sign_out() {
    let s = stack(StackOptions::default()).await;
    let b = Browser::new();
    let c = client();
    let r = c
        .get(format!("{}/oauth2/auth", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(format!("{}/oauth2/userinfo", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    b.login(&format!("{}/private", s.base), "alice").await;
    let r = b.get(&format!("{}/oauth2/auth", s.base)).await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["x-forwarded-email"], "alice@example.com");
    let r = b.get(&format!("{}/oauth2/userinfo", s.base)).await;
    let info: serde_json::Value = r.json().await.unwrap();
    assert_eq!(info["email"], "alice@example.com");
    assert!(info.get("nonce").is_none());

    // Sign out: the session is cleared and the provider's end_session_endpoint gets the hint.
    let r = b
        .get(&format!("{}/oauth2/sign_out?rd=%2Fbye", s.base))
        .await;
    assert_eq!(r.status(), 302);
    let end = location(&r, &s.base);
    let q = query_map(&end);
    assert!(
        end.contains("end_session") || end.contains("logout"),
        "{end}"
    );
    assert!(q.contains_key("id_token_hint"));
    assert!(q["post_logout_redirect_uri"].ends_with("/bye"));
    let after = b.redirect_from(&end).await;
    assert!(after.ends_with("/bye"), "{after}");
    assert_eq!(
        b.get(&format!("{}/private", s.base)).await.status(),
        302,
        "signed out"
    );
}

#[tokio::test]
async fn provider_down_keeps_sessions_refuses_logins_and_recovers() {
    let s = stack(StackOptions::default()).await;
    let provider_addr = s.provider.addr();
    let b = Browser::new();
    b.login(&format!("{}/private", s.base), "alice").await;

    // A login in progress when the provider goes down.
    let late = Browser::new();
    let authorize = late.redirect_from(&format!("{}/late", s.base)).await;
    let callback = late.provider_login(&authorize, "bob").await;

    let Stack {
        provider,
        provider_port,
        upstream,
        gateway,
        base,
        ..
    } = s;
    provider.shutdown().await;

    // Existing sessions keep proxying.
    assert_eq!(b.get(&format!("{base}/private")).await.status(), 200);
    // The callback cannot exchange its code: 503, saying the provider could not be reached.
    let r = late.get(&callback).await;
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("could not be reached"));
    // New logins get 503 while it is down.
    let fresh = Browser::new();
    let r = fresh.get(&format!("{base}/private")).await;
    assert_eq!(r.status(), 503);

    // The provider comes back on the same address (held all along); logins work again.
    assert_eq!(provider_port.addr(), provider_addr);
    let listener = provider_port.listen();
    let dev = devidp::DevProvider::start(
        listener,
        devidp::DevProviderOptions {
            clients: vec![devidp::DevClient {
                client_id: CLIENT_ID.into(),
                auth: devidp::DevClientAuth::SecretBasic(AWKWARD_SECRET.into()),
                redirect_uris: vec![format!("{base}/oauth2/callback")],
            }],
            profile: Profile::Standard,
            issue_refresh_token: false,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut recovered = false;
    for _ in 0..400 {
        let r = fresh.get(&format!("{base}/private")).await;
        if r.status() == 302 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "logins never recovered");
    let back = fresh.login(&format!("{base}/private"), "carol").await;
    assert!(back.ends_with("/private"));
    assert_eq!(fresh.get(&format!("{base}/private")).await.status(), 200);
    drop((dev, upstream));
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_gateway_started_while_the_provider_is_down_serves_public_routes() {
    let up = TestUpstream::start("app").await;
    let down = ClosedPort::new();
    let text = gateway_toml(&up.url(), PUBLIC_ROUTE)
        .replace("http://127.0.0.1:9", &format!("http://{}", down.addr()));
    let gw = gateway(&text).await;
    let base = format!("http://{}", gw.addr());
    let c = client();
    assert_eq!(status_of(c.get(format!("{base}/public/x"))).await, 200);
    assert_eq!(status_of(c.get(format!("{base}/readyz"))).await, 503);
    let r = c
        .get(format!("{base}/private"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("could not be reached"));
    gw.shutdown().await;
}

#[tokio::test]
async fn tokens_are_passed_only_when_configured() {
    let s = stack(StackOptions {
        extra: "[headers]\n\"X-Auth-Email\" = \"email\"\npass_access_token = true\npass_id_token = true\n".into(),
        ..Default::default()
    })
    .await;
    let b = Browser::new();
    b.login(&format!("{}/private", s.base), "alice").await;
    b.jar
        .add_cookie_str("app_pref=dark", &url::Url::parse(&s.base).unwrap());
    let r = b
        .client
        .get(format!("{}/private", s.base))
        .header("authorization", "Bearer forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.upstream.last().headers;
    assert_eq!(seen["x-auth-email"], "alice@example.com");
    assert!(
        !seen.contains_key("x-forwarded-user"),
        "only the configured mapping is sent"
    );
    let access = seen["x-forwarded-access-token"].to_str().unwrap();
    assert!(access.len() >= 20 && access != "forged");
    let auth: Vec<_> = seen.get_all("authorization").iter().collect();
    assert_eq!(auth.len(), 1);
    let id_token = auth[0].to_str().unwrap().strip_prefix("Bearer ").unwrap();
    assert_eq!(
        id_token.split('.').count(),
        3,
        "a JWT, not the client's forged value"
    );
    let cookies: Vec<_> = seen
        .get_all("cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert!(
        cookies[0].contains("app_pref=dark") && !cookies[0].contains("_portcullis"),
        "{cookies:?}"
    );
}

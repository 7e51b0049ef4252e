//! Successful flows, discovery, keys, userinfo, end_session, shutdown.

use super::*;

#[tokio::test]
async fn discovery_standard() {
    let f = fixture(Profile::Standard, false).await;
    let issuer = f.provider.issuer();
    assert_eq!(issuer, format!("http://{}", f.provider.addr()));
    assert_eq!(f.disc["issuer"], issuer);
    for (name, path) in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("jwks_uri", "/jwks"),
        ("userinfo_endpoint", "/userinfo"),
        ("end_session_endpoint", "/end_session"),
        ("introspection_endpoint", "/introspect"),
    ] {
        assert_eq!(endpoint(&f, name), format!("{issuer}{path}"));
    }
    assert_eq!(f.disc["response_types_supported"], json!(["code"]));
    assert_eq!(
        f.disc["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
    assert_eq!(f.disc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        f.disc["token_endpoint_auth_methods_supported"],
        json!([
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none"
        ])
    );
    assert_eq!(
        f.disc["grant_types_supported"],
        json!(["authorization_code"])
    );
    for key in [
        "subject_types_supported",
        "scopes_supported",
        "claims_supported",
    ] {
        assert!(f.disc[key].is_array(), "{key}");
    }
    assert_eq!(f.provider.discovery_requests(), 1);
}

#[tokio::test]
async fn discovery_asgardeo() {
    let f = fixture(Profile::Asgardeo, true).await;
    let port = f.provider.addr().port();
    assert_eq!(
        f.provider.issuer(),
        format!("http://127.0.0.1:{port}/t/demo/oauth2/token")
    );
    assert_eq!(f.disc["issuer"], f.provider.issuer());
    let api = format!("http://localhost:{port}");
    for (name, path) in [
        ("authorization_endpoint", "/t/demo/oauth2/authorize"),
        ("token_endpoint", "/t/demo/oauth2/token"),
        ("jwks_uri", "/t/demo/oauth2/jwks"),
        ("userinfo_endpoint", "/t/demo/oauth2/userinfo"),
        ("end_session_endpoint", "/t/demo/oidc/logout"),
        ("introspection_endpoint", "/t/demo/oauth2/introspect"),
    ] {
        assert_eq!(endpoint(&f, name), format!("{api}{path}"));
    }
    assert_eq!(
        f.disc["grant_types_supported"],
        json!(["authorization_code", "refresh_token"])
    );
}

#[tokio::test]
async fn code_flow_with_every_client_auth_method() {
    let f = fixture(Profile::Standard, false).await;
    for client_id in ["basic", "post", "jwt", "public"] {
        let body = flow(&f, client_id).await;
        assert_eq!(body["token_type"], "Bearer", "{client_id}");
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(body["scope"], "openid profile email");
        assert!(body.get("refresh_token").is_none());
        let access_token = body["access_token"].as_str().unwrap_or_default();
        assert!(
            access_token.len() >= 40 && access_token.split('.').count() == 1,
            "opaque"
        );
        let id_token = body["id_token"].as_str().unwrap_or_default();
        let claims = verify_id_token(&f, id_token, client_id).await;
        let (header, _) = split_jwt(id_token);
        assert!(header["kid"].is_string() && header.get("x5t").is_none());
        assert_eq!(claims["sub"], DEMO_USERS[0].sub);
        assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
        assert_eq!(claims["at_hash"], half_hash(access_token));
        assert_eq!(claims["email"], "alice@example.com");
        assert_eq!(claims["email_verified"], true);
        assert_eq!(claims["preferred_username"], "alice");
        assert_eq!(claims["name"], "Alice Admin");
        assert_eq!(claims["groups"], json!(["admins", "staff"]));
        for key in ["iat", "nbf", "auth_time"] {
            assert!(claims[key].is_u64(), "{key}");
        }
        // The access token works at userinfo.
        let info = f
            .http
            .get(endpoint(&f, "userinfo_endpoint"))
            .bearer_auth(access_token)
            .send()
            .await;
        let Ok(info) = info else { panic!("userinfo") };
        assert_eq!(info.status(), StatusCode::OK);
        let info: Value = info.json().await.unwrap_or(Value::Null);
        assert_eq!(info["sub"], DEMO_USERS[0].sub);
        assert_eq!(info["email"], "alice@example.com");
    }
    assert_eq!(f.provider.token_requests(), 4);
}

#[tokio::test]
async fn asgardeo_flow_shape_and_refresh() {
    let f = fixture(Profile::Asgardeo, true).await;
    let code = login(&f, &Auth::of("post")).await;
    let (status, body, _) = exchange(&f, "post", &code, Some(VERIFIER)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut keys: Vec<&str> = body
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_token",
            "expires_in",
            "id_token",
            "refresh_token",
            "scope",
            "token_type"
        ]
    );
    let id_token = body["id_token"].as_str().unwrap_or_default();
    let claims = verify_id_token(&f, id_token, "post").await;
    let (header, _) = split_jwt(id_token);
    assert!(header["kid"]
        .as_str()
        .is_some_and(|k| k.ends_with("_RS256")));
    assert!(header["x5t"].is_string());
    assert_eq!(claims["c_hash"], half_hash(&code));
    assert_eq!(claims["amr"], json!(["BasicAuthenticator"]));
    assert!(claims["sid"].is_string() && claims["isk"].is_string());
    assert_ne!(
        url::Url::parse(&f.provider.issuer())
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned)),
        Some("localhost".into())
    );
    // Refresh: new tokens, the old refresh token is spent.
    let refresh = body["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let fields = |rt: &str| {
        vec![
            ("grant_type".to_owned(), "refresh_token".to_owned()),
            ("refresh_token".to_owned(), rt.to_owned()),
            ("client_id".to_owned(), "post".to_owned()),
            ("client_secret".to_owned(), "post-secret".to_owned()),
        ]
    };
    let (status, refreshed, _) = post_token(&f, &fields(&refresh), None).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let claims = verify_id_token(
        &f,
        refreshed["id_token"].as_str().unwrap_or_default(),
        "post",
    )
    .await;
    assert!(claims.get("nonce").is_none());
    assert_ne!(refreshed["refresh_token"], body["refresh_token"]);
    let (status, again, _) = post_token(&f, &fields(&refresh), None).await;
    assert_eq!(
        (status, again["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    // Reuse detection: presenting the rotated-away token revoked the whole login, so even the
    // token that replaced it is refused now.
    let current = refreshed["refresh_token"].as_str().unwrap_or_default();
    let (status, revoked, _) = post_token(&f, &fields(current), None).await;
    assert_eq!(
        (status, revoked["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(f.provider.refresh_requests(), 1);
}

#[tokio::test]
async fn refresh_rotates_and_carries_changed_claims_and_short_access_tokens() {
    let f = fixture(Profile::Standard, true).await;
    f.provider.set_access_token_ttl(Duration::from_secs(7));
    let code = login(&f, &Auth::of("post")).await;
    let (status, body, _) = exchange(&f, "post", &code, Some(VERIFIER)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 7);
    f.provider
        .set_user_claim("alice", "email", json!("alice@new.example"));
    let fields = vec![
        ("grant_type".to_owned(), "refresh_token".to_owned()),
        (
            "refresh_token".to_owned(),
            body["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ),
        ("client_id".to_owned(), "post".to_owned()),
        ("client_secret".to_owned(), "post-secret".to_owned()),
    ];
    let (status, refreshed, _) = post_token(&f, &fields, None).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let claims = verify_id_token(
        &f,
        refreshed["id_token"].as_str().unwrap_or_default(),
        "post",
    )
    .await;
    assert_eq!(claims["email"], "alice@new.example");
    assert!(claims["sid"].is_string());
}

#[tokio::test]
async fn rotate_keys_changes_the_jwks() {
    let f = fixture(Profile::Standard, false).await;
    let before = get_json(&f.http, &endpoint(&f, "jwks_uri")).await;
    assert_eq!(f.provider.jwks_requests(), 1);
    let key = &before["keys"][0];
    assert_eq!(
        (
            key["kty"].as_str(),
            key["use"].as_str(),
            key["alg"].as_str(),
            key["e"].as_str()
        ),
        (Some("RSA"), Some("sig"), Some("RS256"), Some("AQAB"))
    );
    let old_token = flow(&f, "post").await["id_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    f.provider.rotate_keys();
    let after = get_json(&f.http, &endpoint(&f, "jwks_uri")).await;
    assert_eq!(after["keys"].as_array().map(Vec::len), Some(1));
    assert_ne!(after["keys"][0]["kid"], key["kid"]);
    assert_ne!(after["keys"][0]["n"], key["n"]);
    assert!(!verify_signature(&f, &old_token).await, "old kid is gone");
    let new_token = flow(&f, "post").await["id_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(verify_signature(&f, &new_token).await);
    assert_eq!(split_jwt(&new_token).0["kid"], after["keys"][0]["kid"]);
}

#[tokio::test]
async fn userinfo_and_end_session() {
    let f = fixture(Profile::Standard, false).await;
    let userinfo = endpoint(&f, "userinfo_endpoint");
    let r = f.http.get(&userinfo).send().await;
    assert_eq!(r.map(|r| r.status()).ok(), Some(StatusCode::UNAUTHORIZED));
    let r = f.http.get(&userinfo).bearer_auth("made-up").send().await;
    let Ok(r) = r else { panic!("userinfo") };
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("invalid_token")));

    let id_token = flow(&f, "post").await["id_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let end = endpoint(&f, "end_session_endpoint");
    let send = |q: Vec<(&'static str, String)>| {
        let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let request = f.http.get(with_query(&end, &q));
        async move { request.send().await.ok() }
    };
    let r = send(vec![
        ("id_token_hint", id_token.clone()),
        ("post_logout_redirect_uri", "http://app.test:4180/".into()),
        ("state", "bye 1".into()),
    ])
    .await;
    let location = r
        .as_ref()
        .and_then(|r| r.headers().get("location"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(r.map(|r| r.status()), Some(StatusCode::FOUND));
    assert!(location.starts_with("http://app.test:4180/?"), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("bye 1"));
    for target in ["http://evil.example/", "http://app.test:9999/"] {
        let r = send(vec![
            ("id_token_hint", id_token.clone()),
            ("post_logout_redirect_uri", target.into()),
        ])
        .await;
        assert_eq!(
            r.as_ref().map(|r| r.status()),
            Some(StatusCode::BAD_REQUEST),
            "{target}"
        );
        assert!(r.is_some_and(|r| r.headers().get("location").is_none()));
    }
    let r = send(vec![]).await;
    assert_eq!(r.as_ref().map(|r| r.status()), Some(StatusCode::OK));
    let text = match r {
        Some(r) => r.text().await.unwrap_or_default(),
        None => String::new(),
    };
    assert!(text.contains("signed out"));
}

#[tokio::test]
async fn jwt_access_tokens_carry_the_audience_and_introspect() {
    let f = fixture_with(DevProviderOptions {
        access_token_audience: Some("api://orders".into()),
        ..Default::default()
    })
    .await;
    let body = flow(&f, "post").await;
    let at = body["access_token"].as_str().unwrap_or_default().to_owned();
    let (header, claims) = split_jwt(&at);
    assert_eq!(header["typ"], "at+jwt");
    assert!(verify_signature(&f, &at).await, "signed by a JWKS key");
    assert_eq!(claims["aud"], "api://orders");
    assert_eq!(claims["iss"], f.provider.issuer());
    assert_eq!(claims["sub"], "3f6c1b2a-0a11-4c3e-9d7a-a11ce0000001");
    assert_eq!(claims["client_id"], "post");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(
        claims["exp"].as_u64(),
        claims["iat"].as_u64().map(|i| i + 3600)
    );
    // The id_token's at_hash covers the JWT access token like any other.
    let (_, id) = split_jwt(body["id_token"].as_str().unwrap_or_default());
    assert_eq!(id["at_hash"], half_hash(&at));

    // Introspection: any registered client, authenticated; tokens it does not know are inactive.
    let (status, answer) = introspect(&f, Some("basic"), &at).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["active"], true);
    assert_eq!(answer["sub"], claims["sub"]);
    assert_eq!(answer["aud"], "api://orders");
    assert_eq!(answer["client_id"], "post");
    assert_eq!(answer["exp"], claims["exp"]);
    assert_eq!(answer["groups"], json!(["admins", "staff"]));
    let (status, answer) = introspect(&f, Some("jwt"), "made-up").await;
    assert_eq!(
        (status, answer["active"].clone()),
        (StatusCode::OK, json!(false))
    );
    assert_eq!(answer.as_object().map(|o| o.len()), Some(1));
    let (status, answer) = introspect(&f, None, &at).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}");
    assert_eq!(answer["error"], "invalid_client");
    assert_eq!(f.provider.introspection_requests(), 3);
}

#[tokio::test]
async fn opaque_tokens_introspect_and_expire() {
    let f = fixture_with(DevProviderOptions {
        access_token_lifetime: Some(Duration::from_secs(30)),
        ..Default::default()
    })
    .await;
    let body = flow(&f, "basic").await;
    let at = body["access_token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(at.split('.').count(), 1, "opaque");
    assert_eq!(body["expires_in"], 30);
    let (_, answer) = introspect(&f, Some("post"), &at).await;
    assert_eq!(answer["active"], true);
    assert_eq!(answer["aud"], "basic");
    f.provider.shared().clock.advance(31);
    let (_, answer) = introspect(&f, Some("post"), &at).await;
    assert_eq!(answer["active"], false);
}

#[tokio::test]
async fn claims_for_userinfo_only_and_extra_claims() {
    let mut extra = serde_json::Map::new();
    extra.insert("email".into(), json!("Alice@EXAMPLE.com"));
    extra.insert("level".into(), json!(3));
    let f = fixture_with(DevProviderOptions {
        profile: Profile::Asgardeo,
        userinfo_only_claims: ASGARDEO_USERINFO_ONLY
            .iter()
            .map(|c| c.to_string())
            .collect(),
        extra_claims: vec![("alice".into(), extra)],
        ..Default::default()
    })
    .await;
    let body = flow(&f, "post").await;
    let claims = verify_id_token(&f, body["id_token"].as_str().unwrap_or_default(), "post").await;
    for absent in ["email", "email_verified", "groups"] {
        assert!(
            claims.get(absent).is_none(),
            "{absent} in the id_token: {claims}"
        );
    }
    assert_eq!(claims["level"], 3);
    let at = body["access_token"].as_str().unwrap_or_default();
    let Ok(r) = f
        .http
        .get(endpoint(&f, "userinfo_endpoint"))
        .bearer_auth(at)
        .send()
        .await
    else {
        panic!("userinfo")
    };
    let info: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(info["email"], "Alice@EXAMPLE.com");
    assert_eq!(info["email_verified"], true);
    assert_eq!(info["groups"], json!(["admins", "staff"]));
    assert_eq!(info["level"], 3);
    assert_eq!(f.provider.userinfo_requests(), 1);
    // Asgardeo's introspection answer: who and what, not the user's attributes.
    let (_, answer) = introspect(&f, Some("basic"), at).await;
    assert_eq!(answer["active"], true);
    assert_eq!(answer["username"], "alice");
    assert!(
        answer.get("email").is_none() && answer.get("level").is_none(),
        "{answer}"
    );
}

#[tokio::test]
async fn many_user_gets_hundreds_of_groups() {
    let f = fixture(Profile::Standard, false).await;
    let code = login(
        &f,
        &Auth {
            user: "many",
            ..Auth::of("post")
        },
    )
    .await;
    let (_, body, _) = exchange(&f, "post", &code, Some(VERIFIER)).await;
    let claims = verify_id_token(&f, body["id_token"].as_str().unwrap_or_default(), "post").await;
    assert_eq!(
        claims["groups"].as_array().map(Vec::len),
        Some(MANY_GROUPS_COUNT)
    );
}

#[tokio::test]
async fn shutdown_stops_answering_and_closes_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture(Profile::Standard, false).await;
    let addr = f.provider.addr();
    // A kept-alive connection that has been served once.
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        panic!("connect")
    };
    let request = "GET /jwks HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(stream.write_all(request.as_bytes()).await.is_ok());
    let mut buf = vec![0u8; 16 * 1024];
    let n = stream.read(&mut buf).await.unwrap_or(0);
    assert!(String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).starts_with("HTTP/1.1 200"));
    f.provider.shutdown().await;
    // The open connection is closed (EOF or reset), and new ones are refused. The timeout only
    // turns a regression (connection left open) into a failure instead of a hung test.
    let after = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf)).await;
    assert!(matches!(after, Ok(Ok(0) | Err(_))), "{after:?}");
    let r = f
        .http
        .get(format!("http://{addr}/.well-known/openid-configuration"))
        .send()
        .await;
    assert!(r.is_err_and(|e| e.is_connect()));
}

#[tokio::test]
async fn start_refuses_bad_options() {
    let bad = [
        DevClient {
            client_id: "a".into(),
            auth: DevClientAuth::PrivateKeyJwt {
                public_key_pem: "nope".into(),
            },
            redirect_uris: vec![CB.into()],
        },
        DevClient {
            client_id: "b".into(),
            auth: DevClientAuth::None,
            redirect_uris: vec!["/relative".into()],
        },
        DevClient {
            client_id: "c".into(),
            auth: DevClientAuth::None,
            redirect_uris: vec!["http://x/cb#frag".into()],
        },
    ];
    for client in bad {
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            panic!("bind")
        };
        let options = DevProviderOptions {
            clients: vec![client],
            profile: Profile::Standard,
            issue_refresh_token: false,
            ..Default::default()
        };
        let started = DevProvider::start(listener, options).await;
        assert!(started.is_err_and(|e| e.kind() == std::io::ErrorKind::InvalidInput));
    }
}

#[test]
fn debug_output_hides_secrets() {
    let options = DevProviderOptions {
        clients: vec![
            DevClient {
                client_id: "a".into(),
                auth: DevClientAuth::SecretBasic("hunter2-basic".into()),
                redirect_uris: vec![],
            },
            DevClient {
                client_id: "b".into(),
                auth: DevClientAuth::SecretPost("hunter2-post".into()),
                redirect_uris: vec![],
            },
        ],
        profile: Profile::Standard,
        issue_refresh_token: false,
        ..Default::default()
    };
    let shown = format!("{options:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("[redacted]"));
}

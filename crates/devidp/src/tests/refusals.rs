//! What the provider refuses: client authentication, grants, authorization requests.

use super::*;

#[tokio::test]
async fn client_authentication_refusals() {
    let f = fixture(Profile::Standard, false).await;
    let code = login(&f, &Auth::of("basic")).await;
    let fields = code_fields(&code, Some(VERIFIER));
    let unauthorized = StatusCode::UNAUTHORIZED;
    // Wrong secret.
    let wrong = basic_header("basic", "nope", true);
    let h = expect_refusal(&f, &fields, Some(&wrong), unauthorized, "invalid_client").await;
    assert!(h
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Basic")));
    // The right secret, but not form-encoded before base64.
    let raw = basic_header("basic", SPECIAL_SECRET, false);
    expect_refusal(&f, &fields, Some(&raw), unauthorized, "invalid_client").await;
    // The right secret by another method (post instead of basic): refused, with the challenge.
    let mut as_post = fields.clone();
    as_post.extend([
        ("client_id".to_owned(), "basic".to_owned()),
        ("client_secret".to_owned(), SPECIAL_SECRET.to_owned()),
    ]);
    let h = expect_refusal(&f, &as_post, None, unauthorized, "invalid_client").await;
    assert!(h.get("www-authenticate").is_some());
    // No authentication at all from a confidential client: not downgraded to public.
    let mut as_public = fields.clone();
    as_public.push(("client_id".to_owned(), "basic".to_owned()));
    expect_refusal(&f, &as_public, None, unauthorized, "invalid_client").await;
    // The code survived all of that (authentication comes first) and works once.
    let (status, body, _) = post_token(
        &f,
        &fields,
        Some(&basic_header("basic", SPECIAL_SECRET, true)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A post client using Basic.
    let code = login(&f, &Auth::of("post")).await;
    let fields = code_fields(&code, Some(VERIFIER));
    let h = expect_refusal(
        &f,
        &fields,
        Some(&basic_header("post", "post-secret", true)),
        unauthorized,
        "invalid_client",
    )
    .await;
    assert!(h.get("www-authenticate").is_some());
    // Two methods at once.
    let mut both = fields.clone();
    both.extend([
        ("client_id".to_owned(), "post".to_owned()),
        ("client_secret".to_owned(), "post-secret".to_owned()),
    ]);
    expect_refusal(
        &f,
        &both,
        Some(&basic_header("post", "post-secret", true)),
        StatusCode::BAD_REQUEST,
        "invalid_request",
    )
    .await;
    // Unknown client.
    let mut unknown = fields.clone();
    unknown.extend([
        ("client_id".to_owned(), "nobody".to_owned()),
        ("client_secret".to_owned(), "x".to_owned()),
    ]);
    expect_refusal(&f, &unknown, None, unauthorized, "invalid_client").await;
}

#[tokio::test]
async fn private_key_jwt_refusals() {
    let f = fixture(Profile::Standard, false).await;
    let code = login(&f, &Auth::of("jwt")).await;
    let token_endpoint = endpoint(&f, "token_endpoint");
    let with = |jwt: &str| {
        let mut fields = code_fields(&code, Some(VERIFIER));
        fields.push((
            "client_assertion_type".to_owned(),
            super::token::JWT_BEARER.to_owned(),
        ));
        fields.push(("client_assertion".to_owned(), jwt.to_owned()));
        fields
    };
    let unauthorized = StatusCode::UNAUTHORIZED;
    // Wrong audience.
    expect_refusal(
        &f,
        &with(&assertion(&f, "https://elsewhere.example/token", "j1")),
        None,
        unauthorized,
        "invalid_client",
    )
    .await;
    // Signed by another key.
    let (other_private, _) = generate_client_keypair();
    let now = jsonwebtoken::get_current_timestamp();
    let claims =
        json!({ "iss": "jwt", "sub": "jwt", "aud": token_endpoint, "exp": now + 60, "jti": "j2" });
    let forged = EncodingKey::from_rsa_pem(other_private.as_bytes())
        .ok()
        .and_then(|k| jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &k).ok())
        .unwrap_or_default();
    expect_refusal(&f, &with(&forged), None, unauthorized, "invalid_client").await;
    // A good assertion works, then its jti cannot be replayed (with the issuer as aud this time).
    let good = assertion(&f, &f.provider.issuer(), "j3");
    let (status, body, _) = post_token(&f, &with(&good), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let code2 = login(&f, &Auth::of("jwt")).await;
    let mut replay = code_fields(&code2, Some(VERIFIER));
    replay.push((
        "client_assertion_type".to_owned(),
        super::token::JWT_BEARER.to_owned(),
    ));
    replay.push(("client_assertion".to_owned(), good));
    expect_refusal(&f, &replay, None, unauthorized, "invalid_client").await;
}

#[tokio::test]
async fn grant_refusals() {
    let f = fixture(Profile::Standard, false).await;
    let bad = StatusCode::BAD_REQUEST;
    let refuse = |client: &'static str,
                  code: String,
                  verifier: Option<&'static str>,
                  redirect: &'static str| {
        let f = &f;
        async move {
            let (mut fields, authorization) = auth_fields(f, client);
            let mut cf = code_fields(&code, verifier);
            if let Some(r) = cf.iter_mut().find(|(k, _)| k == "redirect_uri") {
                r.1 = redirect.to_owned();
            }
            fields.extend(cf);
            expect_refusal(f, &fields, authorization.as_deref(), bad, "invalid_grant").await;
        }
    };
    // Bad PKCE verifier.
    let code = login(&f, &Auth::of("post")).await;
    refuse(
        "post",
        code,
        Some("wrong-verifier-wrong-verifier-wrong-verifier-0"),
        CB,
    )
    .await;
    // Missing verifier, for a confidential client that sent a challenge and for a public client.
    for client in ["post", "public"] {
        let code = login(&f, &Auth::of(client)).await;
        refuse(client, code, None, CB).await;
    }
    // Wrong redirect_uri.
    let code = login(&f, &Auth::of("post")).await;
    refuse("post", code, Some(VERIFIER), "http://app.test:4180/other").await;
    // Reused code.
    let code = login(&f, &Auth::of("post")).await;
    let (status, _, _) = exchange(&f, "post", &code, Some(VERIFIER)).await;
    assert_eq!(status, StatusCode::OK);
    refuse("post", code, Some(VERIFIER), CB).await;
    // Code of another client.
    let code = login(&f, &Auth::of("basic")).await;
    refuse("post", code, Some(VERIFIER), CB).await;
    // Unknown code.
    refuse("post", "made-up".into(), Some(VERIFIER), CB).await;
    // A verifier without a challenge (downgrade), and an expired code.
    let no_pkce = Auth {
        verifier: None,
        ..Auth::of("post")
    };
    let code = login(&f, &no_pkce).await;
    refuse("post", code, Some(VERIFIER), CB).await;
    let code = login(&f, &no_pkce).await;
    f.provider.shared().clock.advance(61);
    refuse("post", code, None, CB).await;
    // Wrong content type and malformed bodies: 400 invalid_request, never a panic.
    let response = f
        .http
        .post(endpoint(&f, "token_endpoint"))
        .json(&json!({"grant_type": "authorization_code"}))
        .send()
        .await;
    assert_eq!(response.map(|r| r.status()).ok(), Some(bad));
    let (fields, _) = auth_fields(&f, "post");
    let mut dup = fields.clone();
    dup.push(("client_id".to_owned(), "post".to_owned()));
    expect_refusal(&f, &dup, None, bad, "invalid_request").await;
    let big = vec![("client_id".to_owned(), "x".repeat(70_000))];
    let (status, body, _) = post_token(&f, &big, None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("invalid_request"))
    );
    let raw = f
        .http
        .post(endpoint(&f, "token_endpoint"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("client_id=%zz")
        .send()
        .await;
    assert_eq!(raw.map(|r| r.status()).ok(), Some(bad));
}

#[tokio::test]
async fn authorize_refusals_and_login_form() {
    let f = fixture(Profile::Standard, false).await;
    // Unknown client and unregistered redirect_uri: an HTML page, never a redirect.
    for (client, redirect) in [
        ("nobody", CB),
        ("post", "http://evil.example/cb"),
        ("post", "http://app.test:4180/oauth2/callback/"),
    ] {
        let r = authorize(
            &f,
            &[
                ("response_type", "code"),
                ("client_id", client),
                ("redirect_uri", redirect),
                ("scope", "openid"),
            ],
        )
        .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(r.headers().get("location").is_none());
        assert!(r
            .text()
            .await
            .unwrap_or_default()
            .contains("NOT for production"));
    }
    // Other errors go back to the client with error and state.
    let challenge = s256(VERIFIER);
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 5] = [
        (
            &[
                ("response_type", "token"),
                ("client_id", "post"),
                ("scope", "openid"),
            ],
            "post",
            "unsupported_response_type",
        ),
        (
            &[
                ("response_type", "code"),
                ("client_id", "post"),
                ("scope", "profile"),
            ],
            "post",
            "invalid_scope",
        ),
        (
            &[
                ("response_type", "code"),
                ("client_id", "public"),
                ("scope", "openid"),
            ],
            "public",
            "invalid_request",
        ),
        (
            &[
                ("response_type", "code"),
                ("client_id", "post"),
                ("scope", "openid"),
                ("code_challenge", &challenge),
                ("code_challenge_method", "plain"),
            ],
            "post",
            "invalid_request",
        ),
        (
            &[
                ("response_type", "code"),
                ("client_id", "post"),
                ("scope", "openid"),
                ("prompt", "none"),
            ],
            "post",
            "login_required",
        ),
    ];
    for (query, _, error) in cases {
        let mut query = query.to_vec();
        query.extend([("redirect_uri", CB), ("state", "s 1&2")]);
        let r = authorize(&f, &query).await;
        assert_eq!(r.status(), StatusCode::FOUND, "{error}");
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(location.starts_with(CB));
        assert_eq!(query_param(&location, "error").as_deref(), Some(error));
        assert_eq!(query_param(&location, "state").as_deref(), Some("s 1&2"));
    }
    // Wrong password re-renders the form with an error; the right one then succeeds once.
    let query = [
        ("response_type", "code"),
        ("client_id", "post"),
        ("redirect_uri", CB),
        ("scope", "openid"),
        ("state", "st&te=1 2"),
    ];
    let html = authorize(&f, &query).await.text().await.unwrap_or_default();
    assert!(html.contains("<button type=\"submit\">"));
    let page = post_login(&f, &html, "alice", "wrong").await;
    assert!(page
        .as_ref()
        .err()
        .is_some_and(|p| p.contains("Wrong username or password") && p.contains("request_id")));
    assert!(post_login(&f, &html, "alice", DEMO_PASSWORD).await.is_ok());
    assert!(
        post_login(&f, &html, "alice", DEMO_PASSWORD).await.is_err(),
        "request id is single use"
    );
}

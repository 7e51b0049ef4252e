//! Each Misbehavior switch produces exactly its defect.

use super::*;

#[tokio::test]
async fn access_token_defects_leave_the_id_token_sound() {
    let f = fixture_with(DevProviderOptions {
        access_token_audience: Some("api".into()),
        ..Default::default()
    })
    .await;
    let now = jsonwebtoken::get_current_timestamp();
    for (inner, check) in [
        (Misbehavior::AlgNone, "alg"),
        (Misbehavior::WrongAudience, "aud"),
        (Misbehavior::Expired, "exp"),
        (Misbehavior::NotYetValid, "nbf"),
        (Misbehavior::WrongKey, "sig"),
    ] {
        let code = login(&f, &Auth::of("post")).await;
        f.provider
            .set_misbehavior(Misbehavior::InAccessToken(Box::new(inner.clone())));
        let (status, body, _) = exchange(&f, "post", &code, Some(VERIFIER)).await;
        f.provider.set_misbehavior(Misbehavior::None);
        assert_eq!(status, StatusCode::OK, "{inner:?}: {body}");
        verify_id_token(&f, body["id_token"].as_str().unwrap_or_default(), "post").await;
        let at = body["access_token"].as_str().unwrap_or_default();
        let (header, claims) = split_jwt(at);
        let ok = match check {
            "alg" => header["alg"] == "none" && !verify_signature(&f, at).await,
            "aud" => claims["aud"] == "another-client",
            "exp" => claims["exp"].as_u64().unwrap_or(u64::MAX) < now,
            "nbf" => claims["nbf"].as_u64().unwrap_or(0) > now + 60,
            _ => !verify_signature(&f, at).await,
        };
        assert!(ok, "{inner:?}: {header} {claims}");
    }
}

#[tokio::test]
async fn userinfo_about_someone_else() {
    let f = fixture(Profile::Standard, false).await;
    let body = flow(&f, "post").await;
    f.provider.set_misbehavior(Misbehavior::UserinfoWrongSub);
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
    assert_eq!(info["sub"], "someone-else");
    assert_eq!(info["email"], "alice@example.com");
}

#[tokio::test]
async fn each_misbehavior_produces_its_defect() {
    let f = fixture(Profile::Standard, false).await;
    let issuer = f.provider.issuer();
    let now = jsonwebtoken::get_current_timestamp();
    let cases = [
        Misbehavior::None,
        Misbehavior::WrongKey,
        Misbehavior::AlgNone,
        Misbehavior::Hs256WithPublicKey,
        Misbehavior::WrongIssuer,
        Misbehavior::WrongAudience,
        Misbehavior::MultipleAudiencesNoAzp,
        Misbehavior::WrongAzp,
        Misbehavior::Expired,
        Misbehavior::FutureIat,
        Misbehavior::NotYetValid,
        Misbehavior::BadNonce,
        Misbehavior::MissingNonce,
        Misbehavior::BadAtHash,
        Misbehavior::UnknownKid,
    ];
    for m in cases {
        let code = login(&f, &Auth::of("post")).await;
        f.provider.set_misbehavior(m.clone());
        let (status, body, _) = exchange(&f, "post", &code, Some(VERIFIER)).await;
        f.provider.set_misbehavior(Misbehavior::None);
        assert_eq!(status, StatusCode::OK, "{m:?}: {body}");
        let token = body["id_token"].as_str().unwrap_or_default();
        let at = body["access_token"].as_str().unwrap_or_default();
        let (header, claims) = split_jwt(token);
        let signed_ok = verify_signature(&f, token).await;
        let current_kid = f
            .provider
            .shared()
            .keys
            .read()
            .map(|k| k.current.kid.clone())
            .unwrap_or_default();
        let t = |k: &str| claims[k].as_u64().unwrap_or(0);
        let ok = match &m {
            Misbehavior::None => {
                signed_ok && claims["iss"] == issuer.as_str() && claims["nonce"] == "n-0S6_WzA2Mj"
            }
            Misbehavior::WrongKey => !signed_ok && header["kid"] == current_kid.as_str(),
            Misbehavior::AlgNone => header["alg"] == "none" && token.ends_with('.') && !signed_ok,
            Misbehavior::Hs256WithPublicKey => {
                let pem = f
                    .provider
                    .shared()
                    .keys
                    .read()
                    .map(|k| k.current.public_pem.clone())
                    .unwrap_or_default();
                let mut v = Validation::new(Algorithm::HS256);
                v.validate_aud = false;
                header["alg"] == "HS256"
                    && jsonwebtoken::decode::<Value>(
                        token,
                        &DecodingKey::from_secret(pem.as_bytes()),
                        &v,
                    )
                    .is_ok()
            }
            Misbehavior::WrongIssuer => {
                signed_ok && claims["iss"] != issuer.as_str() && claims["iss"].is_string()
            }
            Misbehavior::WrongAudience => {
                signed_ok && claims["aud"] != "post" && claims["aud"].is_string()
            }
            Misbehavior::MultipleAudiencesNoAzp => {
                signed_ok
                    && claims["aud"]
                        .as_array()
                        .is_some_and(|a| a.len() == 2 && a[0] == "post")
                    && claims.get("azp").is_none()
            }
            Misbehavior::WrongAzp => {
                signed_ok && claims["azp"] != "post" && claims["aud"] == "post"
            }
            Misbehavior::Expired => signed_ok && t("exp") + 300 < now,
            Misbehavior::FutureIat => signed_ok && t("iat") > now + 300 && t("nbf") <= now + 60,
            Misbehavior::NotYetValid => signed_ok && t("nbf") > now + 300 && t("iat") <= now + 60,
            Misbehavior::BadNonce => {
                signed_ok && claims["nonce"].is_string() && claims["nonce"] != "n-0S6_WzA2Mj"
            }
            Misbehavior::MissingNonce => signed_ok && claims.get("nonce").is_none(),
            Misbehavior::BadAtHash => {
                signed_ok
                    && claims["at_hash"].is_string()
                    && claims["at_hash"] != half_hash(at).as_str()
            }
            Misbehavior::UnknownKid => {
                // Not in the JWKS, but signed by the current key.
                let jwks = get_json(&f.http, &endpoint(&f, "jwks_uri")).await;
                let jwk = serde_json::from_value::<jsonwebtoken::jwk::JwkSet>(jwks)
                    .ok()
                    .and_then(|s| s.keys.into_iter().next());
                let key = jwk.and_then(|j| DecodingKey::from_jwk(&j).ok());
                let verified = key.is_some_and(|k| {
                    jsonwebtoken::decode::<Value>(token, &k, &signature_only()).is_ok()
                });
                !signed_ok && header["kid"] != current_kid.as_str() && verified
            }
            _ => false,
        };
        assert!(ok, "{m:?}: header {header} claims {claims}");
        // Everything but the defect is intact: the user's claims are there.
        assert_eq!(claims["sub"], DEMO_USERS[0].sub, "{m:?}");
    }
    // Response-level defects.
    let code = login(&f, &Auth::of("post")).await;
    f.provider.set_misbehavior(Misbehavior::TokenError {
        error: "access_denied".into(),
        description: "no <way>".into(),
    });
    let (status, body, _) = exchange(&f, "post", &code, Some(VERIFIER)).await;
    assert_eq!(
        (status, &body),
        (
            StatusCode::BAD_REQUEST,
            &json!({"error": "access_denied", "error_description": "no <way>"})
        )
    );
    let code = login(&f, &Auth::of("post")).await;
    f.provider.set_misbehavior(Misbehavior::ServerError);
    let (status, _, _) = exchange(&f, "post", &code, Some(VERIFIER)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    // Slow: no answer within a short client timeout (the delay is far longer), on any endpoint.
    f.provider
        .set_misbehavior(Misbehavior::Slow(Duration::from_secs(600)));
    let slow = f
        .http
        .get(endpoint(&f, "jwks_uri"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(slow.is_err_and(|e| e.is_timeout()));
    f.provider.set_misbehavior(Misbehavior::None);
    let jwks = f.http.get(endpoint(&f, "jwks_uri")).send().await;
    assert_eq!(jwks.map(|r| r.status()).ok(), Some(StatusCode::OK));
}

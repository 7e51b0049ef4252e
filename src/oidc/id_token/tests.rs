//! Unit tests of `oidc::id_token`, kept beside it so that file stays readable.

use super::*;
use crate::oidc::jwks::parse_jwks;
use crate::oidc::jws::MAX_TOKEN_LEN;
use crate::oidc::testutil::{ed25519, jwks, p256, p384, rsa, rsa2, sign, sign_raw};
use jsonwebtoken::EncodingKey;
use serde_json::json;
use std::time::UNIX_EPOCH;

const ISS: &str = "https://idp.example.com/realms/main";
const CLIENT: &str = "portcullis";
const NOW: u64 = 1_700_000_000;

fn claims() -> Value {
    json!({
        "iss": ISS, "sub": "alice", "aud": CLIENT, "exp": NOW + 300, "iat": NOW - 10,
        "nonce": "n-123", "email": "alice@example.com"
    })
}

fn with(changes: Value) -> Value {
    let mut c = claims();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn keys() -> KeySet {
    let body = jwks(&[rsa(), p256(), p384(), ed25519()]);
    parse_jwks(&http::Response::new(bytes::Bytes::from(body))).unwrap()
}

fn check(token: &str, access_token: Option<&str>) -> Result<Map<String, Value>, IdTokenError> {
    let nonce = Nonce::new("n-123");
    let exp = Expectations {
        issuer: ISS,
        client_id: CLIENT,
        nonce: &nonce,
        access_token,
        clock_skew: Duration::from_secs(60),
        now: UNIX_EPOCH + Duration::from_secs(NOW),
    };
    validate_id_token(token, &keys(), &exp)
}

#[test]
fn valid_tokens_of_each_key_type_pass() {
    for key in [rsa(), p256(), p384(), ed25519()] {
        let claims = check(&sign(key, &claims()), None).unwrap();
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["email"], "alice@example.com");
    }
    for alg in [
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS512,
    ] {
        let header = json!({"alg": alg, "kid": "rsa-1"});
        let token = sign_raw(&header, &claims(), &rsa().encoding, alg);
        assert!(check(&token, None).is_ok(), "{alg:?}");
    }
}

#[test]
fn alg_none_and_hmac_with_the_public_key_are_refused() {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"rsa-1"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims().to_string());
    assert_eq!(
        check(&format!("{h}.{p}."), None),
        Err(IdTokenError::UnsupportedAlgorithm("none".into()))
    );
    // Algorithm confusion: HS256 keyed with the RSA public key PEM that anyone can fetch.
    let hmac = EncodingKey::from_secret(rsa().public_pem.as_bytes());
    let token = sign_raw(
        &json!({"alg": "HS256", "kid": "rsa-1"}),
        &claims(),
        &hmac,
        Algorithm::HS256,
    );
    assert_eq!(
        check(&token, None),
        Err(IdTokenError::UnsupportedAlgorithm("HS256".into()))
    );
    let err = check(&token, None).unwrap_err().to_string();
    assert!(err.contains("alg") && err.contains("HS256"), "{err}");
}

#[test]
fn kidless_tokens_try_each_key_of_the_family() {
    for key in [rsa(), p256(), p384(), ed25519()] {
        let header = json!({"alg": key.alg});
        let token = sign_raw(&header, &claims(), &key.encoding, key.alg);
        assert!(check(&token, None).is_ok(), "{:?}", key.alg);
    }
    let foreign = sign_raw(
        &json!({"alg": "RS256"}),
        &claims(),
        &rsa2().encoding,
        Algorithm::RS256,
    );
    assert_eq!(check(&foreign, None), Err(IdTokenError::BadSignature));
    let no_es384 = KeySet::default();
    let token = sign_raw(
        &json!({"alg": "ES256"}),
        &claims(),
        &p256().encoding,
        Algorithm::ES256,
    );
    let parsed = UnverifiedIdToken::parse(&token).unwrap();
    assert_eq!(
        parsed.verify_signature(&no_es384).unwrap_err(),
        IdTokenError::UnknownKey
    );
}

#[test]
fn unknown_kid_and_mismatched_keys() {
    assert_eq!(
        check(&sign(rsa2(), &claims()), None),
        Err(IdTokenError::UnknownKey)
    );
    // An ES256 token naming the RSA key.
    let token = sign_raw(
        &json!({"alg": "ES256", "kid": "rsa-1"}),
        &claims(),
        &p256().encoding,
        Algorithm::ES256,
    );
    assert_eq!(check(&token, None), Err(IdTokenError::KeyAlgorithmMismatch));
    // The key states RS512; a token using it with RS256 is refused.
    let mut jwk = rsa().jwk.clone();
    jwk["alg"] = json!("RS512");
    let body = json!({"keys": [jwk]}).to_string();
    let set = parse_jwks(&http::Response::new(bytes::Bytes::from(body))).unwrap();
    let token = sign(rsa(), &claims());
    let parsed = UnverifiedIdToken::parse(&token).unwrap();
    assert_eq!(
        parsed.verify_signature(&set).unwrap_err(),
        IdTokenError::KeyAlgorithmMismatch
    );
}

#[test]
fn tampered_payload_fails_the_signature() {
    let good = sign(rsa(), &claims());
    let evil = URL_SAFE_NO_PAD.encode(with(json!({"sub": "admin"})).to_string());
    let mut parts: Vec<&str> = good.split('.').collect();
    parts[1] = &evil;
    assert_eq!(
        check(&parts.join("."), None),
        Err(IdTokenError::BadSignature)
    );
}

#[test]
fn issuer_audience_and_azp_checks() {
    let t = |c: Value| check(&sign(rsa(), &c), None);
    assert_eq!(
        t(with(json!({"iss": "https://evil.example.com"}))),
        Err(IdTokenError::IssuerMismatch {
            found: "https://evil.example.com".into()
        })
    );
    assert_eq!(
        t(with(json!({"iss": format!("{ISS}/")}))),
        Err(IdTokenError::IssuerMismatch {
            found: format!("{ISS}/")
        })
    );
    assert_eq!(
        t(with(json!({"iss": null}))),
        Err(IdTokenError::MissingClaim("iss"))
    );
    assert_eq!(
        t(with(json!({"sub": null}))),
        Err(IdTokenError::MissingClaim("sub"))
    );
    assert_eq!(
        t(with(json!({"aud": "other"}))),
        Err(IdTokenError::AudienceMismatch)
    );
    assert_eq!(
        t(with(json!({"aud": ["a", "b"]}))),
        Err(IdTokenError::AudienceMismatch)
    );
    assert!(t(with(json!({"aud": [CLIENT]}))).is_ok());
    assert_eq!(
        t(with(json!({"aud": [CLIENT, "api"]}))),
        Err(IdTokenError::MissingAzp)
    );
    assert!(t(with(json!({"aud": [CLIENT, "api"], "azp": CLIENT}))).is_ok());
    assert_eq!(
        t(with(json!({"aud": [CLIENT, "api"], "azp": "api"}))),
        Err(IdTokenError::AzpMismatch)
    );
    assert_eq!(
        t(with(json!({"azp": "other"}))),
        Err(IdTokenError::AzpMismatch)
    );
    assert!(matches!(
        t(with(json!({"aud": 5}))),
        Err(IdTokenError::Malformed(_))
    ));
}

#[test]
fn time_checks_use_the_injected_clock_and_skew() {
    let t = |c: Value| check(&sign(rsa(), &c), None);
    assert_eq!(
        t(with(json!({"exp": NOW - 61}))),
        Err(IdTokenError::Expired)
    );
    assert_eq!(
        t(with(json!({"exp": NOW - 60}))),
        Err(IdTokenError::Expired)
    );
    assert!(t(with(json!({"exp": NOW - 59}))).is_ok());
    assert_eq!(
        t(with(json!({"exp": null}))),
        Err(IdTokenError::MissingClaim("exp"))
    );
    assert!(matches!(
        t(with(json!({"exp": "soon"}))),
        Err(IdTokenError::Malformed(_))
    ));
    assert!(t(with(json!({"exp": (NOW + 300) as f64 + 0.5}))).is_ok());
    assert_eq!(
        t(with(json!({"iat": NOW + 61}))),
        Err(IdTokenError::IssuedInFuture)
    );
    assert!(t(with(json!({"iat": NOW + 59}))).is_ok());
    assert_eq!(
        t(with(json!({"iat": null}))),
        Err(IdTokenError::MissingClaim("iat"))
    );
    assert_eq!(
        t(with(json!({"nbf": NOW + 61}))),
        Err(IdTokenError::NotYetValid)
    );
    assert!(t(with(json!({"nbf": NOW + 30}))).is_ok());
}

#[test]
fn nonce_checks() {
    let t = |c: Value| check(&sign(rsa(), &c), None);
    assert_eq!(
        t(with(json!({"nonce": null}))),
        Err(IdTokenError::MissingNonce)
    );
    assert_eq!(
        t(with(json!({"nonce": "n-124"}))),
        Err(IdTokenError::NonceMismatch)
    );
    assert_eq!(
        t(with(json!({"nonce": "n-12"}))),
        Err(IdTokenError::NonceMismatch)
    );
}

#[test]
fn at_hash_checks() {
    // OpenID Connect Core, appendix A.3 example.
    assert_eq!(
        at_hash(
            Algorithm::RS256,
            "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
        )
        .unwrap(),
        "77QmUPtjPfzWtF2AnpK9RQ"
    );
    for key in [rsa(), p256(), p384(), ed25519()] {
        let c = with(json!({"at_hash": at_hash(key.alg, "opaque-access-token").unwrap()}));
        let token = sign(key, &c);
        assert!(check(&token, Some("opaque-access-token")).is_ok());
        assert!(check(&token, None).is_ok());
        assert_eq!(
            check(&token, Some("another-token")),
            Err(IdTokenError::AtHashMismatch)
        );
    }
    assert_eq!(at_hash(Algorithm::EdDSA, "x").unwrap().len(), 43);
    assert_eq!(at_hash(Algorithm::ES384, "x").unwrap().len(), 32);
    assert_eq!(at_hash(Algorithm::HS256, "x"), None);
}

#[test]
fn malformed_tokens_are_refused() {
    let good = sign(rsa(), &claims());
    for bad in ["", "a.b", "a.b.c.d.e", "!!!.e30.sig", &format!("{good}.x")] {
        assert!(
            matches!(check(bad, None), Err(IdTokenError::Malformed(_))),
            "{bad}"
        );
    }
    let crit = sign_raw(
        &json!({"alg": "RS256", "kid": "rsa-1", "crit": ["exp"]}),
        &claims(),
        &rsa().encoding,
        Algorithm::RS256,
    );
    assert!(matches!(
        check(&crit, None),
        Err(IdTokenError::Malformed(_))
    ));
    let kid_num = sign_raw(
        &json!({"alg": "RS256", "kid": 7}),
        &claims(),
        &rsa().encoding,
        Algorithm::RS256,
    );
    assert!(matches!(
        check(&kid_num, None),
        Err(IdTokenError::Malformed(_))
    ));
    let huge = "a".repeat(MAX_TOKEN_LEN + 1);
    assert!(matches!(
        check(&huge, None),
        Err(IdTokenError::Malformed(_))
    ));
}

#[test]
fn display_names_the_check() {
    assert!(IdTokenError::AudienceMismatch.to_string().contains("aud"));
    assert!(IdTokenError::MissingAzp.to_string().contains("azp"));
    assert!(IdTokenError::Expired.to_string().contains("exp"));
    assert!(IdTokenError::NonceMismatch.to_string().contains("nonce"));
    assert!(IdTokenError::AtHashMismatch.to_string().contains("at_hash"));
}

fn check_refreshed(token: &str, sub: &str) -> Result<Map<String, Value>, IdTokenError> {
    let exp = RefreshExpectations {
        issuer: ISS,
        client_id: CLIENT,
        sub,
        access_token: None,
        clock_skew: Duration::from_secs(60),
        now: UNIX_EPOCH + Duration::from_secs(NOW),
    };
    let parsed = UnverifiedIdToken::parse(token)?;
    parsed.verify_signature(&keys())?.check_refreshed(&exp)
}

#[test]
fn a_refreshed_id_token_keeps_its_subject_and_needs_no_nonce() {
    let without_nonce = with(json!({"nonce": null, "email": "new@example.com"}));
    let refreshed = check_refreshed(&sign(rsa(), &without_nonce), "alice").unwrap();
    assert_eq!(refreshed["email"], "new@example.com");
    // A nonce carried over from the login is no reason to refuse it.
    assert!(check_refreshed(&sign(rsa(), &claims()), "alice").is_ok());
    // OIDC Core 12.2: another sub under the same session is refused.
    assert_eq!(
        check_refreshed(&sign(rsa(), &with(json!({"sub": "mallory"}))), "alice"),
        Err(IdTokenError::SubjectChanged)
    );
    // The first token's other checks still apply.
    assert_eq!(
        check_refreshed(&sign(rsa(), &with(json!({"exp": NOW - 120}))), "alice"),
        Err(IdTokenError::Expired)
    );
    assert!(matches!(
        check_refreshed(&sign(rsa(), &with(json!({"iss": "https://evil"}))), "alice"),
        Err(IdTokenError::IssuerMismatch { .. })
    ));
    assert_eq!(
        check_refreshed(&sign(rsa(), &with(json!({"aud": "other"}))), "alice"),
        Err(IdTokenError::AudienceMismatch)
    );
}

//! Entry points for the fuzz targets in `fuzz/`, built only with the `fuzzing` feature.
//!
//! Each takes arbitrary bytes, drives one parser of untrusted input the way the gateway drives it,
//! and panics when a promise the rest of the code relies on breaks, not only when the parser
//! crashes: a canonical path is a fixed point, a return target keeps the origin, an opened session
//! survives its own round trip, an accepted id_token passed every check. Internals stay private; the
//! few the targets need are reached through `#[cfg(feature = "fuzzing")]` items beside them.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use url::Url;

pub use crate::session::fuzz::{claims, login_state_cookie, session_cookie};

/// `canonicalize` on any path: canonical output is a fixed point and carries nothing ambiguous.
pub fn canonical_path(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(once) = crate::router::canonical::canonicalize(path) else {
        return;
    };
    let twice = crate::router::canonical::canonicalize(&once).expect("canonical output is valid");
    assert_eq!(once, twice, "canonicalize is idempotent");
    assert!(once.starts_with('/') && !once.contains("//"), "{once}");
    assert!(once.bytes().all(|b| b.is_ascii_graphic()), "{once}");
    let upper = once.to_ascii_uppercase();
    assert!(!upper.contains("%2F") && !upper.contains("%5C") && !once.contains('\\'));
    for segment in once.split('/').skip(1) {
        assert!(segment != "." && segment != "..", "{once}");
        let name = segment
            .split(';')
            .next()
            .and_then(|s| s.split("%3B").next())
            .unwrap_or(segment);
        if name.len() < segment.len() {
            assert!(!matches!(name, "" | "." | ".."), "{once}");
        }
    }
}

/// The host check on any `Host` value, with and without an `:authority`.
pub fn host(data: &[u8]) {
    use crate::router::host::valid_host;
    let (authority, host) = match data.iter().position(|&b| b == 0) {
        Some(at) => (Some(&data[..at]), &data[at + 1..]),
        None => (None, data),
    };
    let valid = valid_host(host);
    if valid {
        assert!(!host.is_empty() && !host.contains(&b'@') && !host.contains(&b'/'));
        assert!(host.iter().all(u8::is_ascii_graphic), "{host:?}");
    }
    let Ok(value) = http::HeaderValue::from_bytes(host) else {
        return;
    };
    for version in [
        http::Version::HTTP_10,
        http::Version::HTTP_11,
        http::Version::HTTP_2,
    ] {
        let mut builder = http::Request::builder()
            .version(version)
            .header(http::header::HOST, value.clone());
        builder = match authority.and_then(|a| std::str::from_utf8(a).ok()) {
            Some(a) => match http::uri::Authority::try_from(a) {
                Ok(a) => builder.uri(format!("http://{a}/x")),
                Err(_) => return,
            },
            None => builder.uri("/x"),
        };
        let Ok(mut req) = builder.body(()) else {
            return;
        };
        let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        if crate::router::host::check(&mut req, peer).is_ok() {
            let hosts: Vec<_> = req.headers().get_all(http::header::HOST).iter().collect();
            assert_eq!(hosts.len(), 1);
            assert!(valid_host(hosts[0].as_bytes()), "{:?}", hosts[0]);
        }
    }
}

/// Return target rules with every kind of host of ours: public_url's, a route's exact host, a
/// route's wildcard, the cookie domain.
fn return_rules() -> &'static crate::login::ReturnTargets {
    static RULES: OnceLock<crate::login::ReturnTargets> = OnceLock::new();
    RULES.get_or_init(|| {
        let hosts = [
            crate::config::HostPattern::parse("grafana.tools.example").expect("a host"),
            crate::config::HostPattern::parse("*.apps.example").expect("a host"),
        ];
        crate::login::ReturnTargets::new(
            &Url::parse("https://login.corp.example:8443").expect("a valid URL"),
            &hosts,
            Some("corp.example"),
        )
    })
}

/// Whether a host a browser resolved a target to is one of those one login serves.
fn ours(host: &str) -> bool {
    host == "login.corp.example"
        || host == "corp.example"
        || host.ends_with(".corp.example")
        || host == "grafana.tools.example"
        || host.ends_with(".apps.example")
}

/// The return target rules on any target: what they let through, resolved as a browser resolves a
/// `Location` (raw, and percent-decoded once more) from a page on one of our hosts, lands on a host
/// one login serves, with public_url's scheme and without a user part.
pub fn return_target(data: &[u8]) {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let rules = return_rules();
    let safe = rules.check(target);
    assert!(safe == rules.fallback() || safe == target);
    let decoded = percent_encoding::percent_decode_str(safe).decode_utf8_lossy();
    let base = Url::parse("https://wiki.corp.example/app/page").expect("a valid URL");
    for candidate in [safe, decoded.as_ref()] {
        if let Ok(url) = base.join(candidate) {
            assert_eq!(url.scheme(), "https", "{target:?} -> {url}");
            assert!(
                ours(url.host_str().unwrap_or_default()),
                "{target:?} -> {url}"
            );
            assert!(
                url.username().is_empty() && url.password().is_none(),
                "{target:?} -> {url}"
            );
        }
    }
}

/// The callback's query: each parameter it reads, and the provider's error text as it is shown.
pub fn callback_query(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    for name in ["state", "code", "error", "error_description", "rd"] {
        if let Ok(Some(value)) = crate::login::query_param(Some(query), name) {
            let shown = crate::login::printable(&value);
            assert!(!shown.chars().any(char::is_control));
            assert!(shown.chars().count() <= 300);
            let html = crate::error::html_escape(&shown);
            assert!(!html.contains(['<', '>', '"', '\'']), "{html}");
        }
    }
}

/// The JWS/JWT header and claims parser, then the claim checks as if the signature had verified;
/// the token comes from [`compact_jws`].
pub fn jws(data: &[u8]) {
    use crate::oidc::id_token::{Expectations, UnverifiedIdToken};
    use crate::oidc::{KeySet, Nonce};
    use jsonwebtoken::Algorithm;

    let Some(token) = compact_jws(data) else {
        return;
    };
    let Ok(parsed) = UnverifiedIdToken::parse(&token) else {
        return;
    };
    assert!(
        matches!(
            parsed.algorithm(),
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ),
        "only asymmetric algorithms pass"
    );
    let _ = parsed.kid();
    assert!(parsed.verify_signature(&KeySet::new(Vec::new())).is_err());

    let now = 1_700_000_000;
    let nonce = Nonce::new("fuzz-nonce");
    let expect = Expectations {
        issuer: "https://idp.example",
        client_id: "portcullis",
        nonce: &nonce,
        access_token: Some("access-token"),
        clock_skew: Duration::from_secs(60),
        now: UNIX_EPOCH + Duration::from_secs(now),
    };
    let Ok(claims) = parsed.assume_verified().check_claims(&expect) else {
        return;
    };
    assert_eq!(claims["iss"], "https://idp.example");
    assert!(claims["sub"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(claims["nonce"], "fuzz-nonce");
    let audiences = match &claims["aud"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        other => panic!("aud {other:?} passed"),
    };
    assert!(audiences.contains(&"portcullis"));
    if audiences.len() > 1 {
        assert_eq!(claims["azp"], "portcullis");
    }
    let time = |name: &str| claims.get(name).and_then(Value::as_f64);
    assert!(time("exp").is_some_and(|exp| exp + 60.0 > now as f64));
    assert!(time("iat").is_some_and(|iat| iat <= (now + 60) as f64));
}

/// A compact JWS from fuzz input: the first byte chooses between the rest as the token's text and
/// a token built from up to three parts split at NULs (header, claims, signature), base64url-encoded,
/// which reaches the claim checks far more often.
fn compact_jws(data: &[u8]) -> Option<String> {
    let (&mode, rest) = data.split_first()?;
    if mode % 2 == 0 {
        return std::str::from_utf8(rest).ok().map(str::to_string);
    }
    let mut parts = rest.splitn(3, |&b| b == 0);
    let mut part = || URL_SAFE_NO_PAD.encode(parts.next().unwrap_or_default());
    let (header, claims, signature) = (part(), part(), part());
    Some(format!("{header}.{claims}.{signature}"))
}

/// The back-channel logout token (OpenID Connect Back-Channel Logout 1.0, section 2.6) on a token
/// from [`compact_jws`], its claims checked as if the signature had verified. An accepted token
/// must be from our issuer for us, recent, a logout event without a nonce, and name a session.
pub fn logout_token(data: &[u8]) {
    use crate::oidc::jws::UnverifiedJws;
    use crate::oidc::logout_token::{
        check_logout_token, LogoutExpectations, BACKCHANNEL_LOGOUT_EVENT,
    };
    use crate::oidc::KeySet;

    let Some(token) = compact_jws(data) else {
        return;
    };
    let Ok(parsed) = UnverifiedJws::parse(&token) else {
        return;
    };
    assert!(parsed.verify_signature(&KeySet::new(Vec::new())).is_err());

    let now = 1_700_000_000_u64;
    let expect = LogoutExpectations {
        issuer: "https://idp.example",
        client_id: "portcullis",
        clock_skew: Duration::from_secs(60),
        now: UNIX_EPOCH + Duration::from_secs(now),
    };
    let verified = parsed.assume_verified();
    let Ok(accepted) = check_logout_token(&verified, &expect) else {
        return;
    };
    let claims = verified.claims();
    assert_eq!(claims["iss"], "https://idp.example");
    let audiences = match &claims["aud"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        other => panic!("aud {other:?} passed"),
    };
    assert!(audiences.contains(&"portcullis"));
    assert!(claims["events"][BACKCHANNEL_LOGOUT_EVENT].is_object());
    assert!(!claims.contains_key("nonce"));
    assert!(accepted.sid.is_some() || accepted.sub.is_some());
    assert!(!accepted.jti.is_empty());
    let iat = claims["iat"].as_f64().expect("an accepted token has iat");
    assert!(iat < (now + 61) as f64 && iat + 360.0 >= now as f64);
    // The jti is remembered for as long as the token could be accepted, and no longer.
    assert!(accepted.forget_after >= now && accepted.forget_after <= now + 420);
}

/// The configuration reader on any text, with environment overrides after a NUL (one
/// `NAME=value` a line). Inputs that mention a file are skipped: the reader would open whatever
/// path they name. A configuration that validates must give a route table.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.to_ascii_lowercase().contains("file") {
        return;
    }
    let (toml, env) = text.split_once('\0').unwrap_or((text, ""));
    let env: BTreeMap<String, String> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match crate::config::Config::from_toml_str(toml, &env) {
        Ok(config) => {
            let router = crate::router::Router::new(
                &config.server.prefix,
                &config.routes,
                &config.route_set,
                |_| 0,
            );
            let _ = router.route(&http::Method::GET, Some("a.example"), "/admin");
            let _ = format!("{config:?}");
        }
        Err(e) => {
            assert!(!e.key.is_empty());
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }
}

//! Micro-benchmarks of the work the gateway does per request and per login.
//!
//! Run: `cargo bench --bench micro` (add a name filter, e.g. `-- session`, for one group).
//! Targets: session decode < 2 us (typical session), header rewrite < 1 us, RS256 id_token validation
//! < 50 us, access policy < 1 us, RS256 bearer JWT validation < 50 us, an assertion from its cache
//! < 1 us, the record phase's metrics < 0.1 us, a forward-auth check of a signed-in user < 5 us.
//! The load benchmark is `benches/load.sh`.

// `phases::check` is generic over the body, so this crate lays out the request's future: deeper than
// the compiler's default allows (the library raises its limit the same way).
#![recursion_limit = "256"]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair as _, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures_util::FutureExt as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri};
use jsonwebtoken::{Algorithm, EncodingKey};
use portcullis::config::{Policy, RouteConfig};
use portcullis::identity::identity_headers;
use portcullis::oidc::{
    authorization_url, parse_jwks, validate_id_token, AccessTokenExpectations, AuthRequest,
    Expectations, KeySet, LoginSecrets, Nonce, UnverifiedJws,
};
use portcullis::proxy::{ConnInfo, Proxy, Upstream};
use portcullis::router::{canonical::canonicalize, Router, Target};
use portcullis::session::store::CookieStore;
use portcullis::session::{
    Authenticated, Claims, CookieSettings, Session, SessionCookies, Sessions,
};
use serde_json::{json, Value};

const NOW: u64 = 1_700_000_000;

fn cookies() -> SessionCookies {
    SessionCookies::new(
        CookieSettings {
            name: "_portcullis".into(),
            secure: true,
            max_age: Duration::from_secs(12 * 3600),
            domain: None,
        },
        &[7; 32],
        &[],
    )
    .expect("valid cookie settings")
}

fn token_of(len: usize) -> String {
    "x".repeat(len)
}

/// A session as a typical provider leaves it: a handful of claims and an id_token.
fn session(id_token_len: usize, access_token_len: usize) -> Session {
    let claims = json!({
        "sub": "248289761001",
        "email": "jane.doe@example.com",
        "name": "Jane Doe",
        "preferred_username": "jane",
        "groups": ["engineering", "staff", "on-call"],
    });
    Session {
        claims: Claims::new(claims.as_object().expect("an object")).expect("storable claims"),
        id_token: Some(token_of(id_token_len)),
        access_token: (access_token_len > 0).then(|| token_of(access_token_len)),
        refresh_token: None,
        created_at: NOW,
        expires_at: NOW + 12 * 3600,
        seen_at: NOW,
        access_expires_at: Some(NOW + 3600),
    }
}

/// The `Cookie` header a browser would send back for `session`, after two foreign cookies.
fn cookie_header(codec: &SessionCookies, session: &Session) -> HeaderMap {
    let set = codec
        .write(session, &HeaderMap::new(), NOW)
        .expect("session fits");
    let mut value = String::from("theme=dark; _ga=GA1.2.123456789.1700000000");
    for v in &set {
        let pair = v
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default();
        value.push_str("; ");
        value.push_str(pair);
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::COOKIE,
        HeaderValue::from_str(&value).expect("ASCII"),
    );
    headers
}

fn session_decode(c: &mut Criterion) {
    let codec = cookies();
    let mut group = c.benchmark_group("session_read");
    for (label, id_len, access_len) in [("typical_1k", 640, 0), ("large_8k_chunked", 3000, 2900)] {
        let headers = cookie_header(&codec, &session(id_len, access_len));
        let bytes = headers[header::COOKIE].len();
        assert!(codec.read(&headers, NOW + 1).is_some(), "the cookie opens");
        // The opened session is dropped outside the measurement: the gateway keeps it (in the cache).
        group.bench_function(format!("{label}_{bytes}B"), |b| {
            b.iter_with_large_drop(|| codec.read(black_box(&headers), NOW + 1))
        });
        // What a request of a signed-in user costs: the same cookie bytes, opened once, then served
        // from the cache in front of the store (the cookie store answers at once, so one poll ends
        // the future).
        let sessions = Sessions::new(CookieStore::new(Duration::from_secs(3600)));
        let authenticate = |headers: &HeaderMap| {
            sessions
                .authenticate(&codec, headers, NOW + 1, 0, None, |session, key| {
                    Authenticated::new(session, Vec::new(), Ok(()), key)
                })
                .now_or_never()
                .expect("the cookie store answers at once")
                .expect("the cookie store does not fail")
        };
        assert!(authenticate(&headers).is_some());
        group.bench_function(format!("{label}_{bytes}B_cached"), |b| {
            b.iter(|| authenticate(black_box(&headers)))
        });
    }
    group.finish();
}

/// The request head of a browser navigating an application.
fn browser_request(codec: &SessionCookies, session: &Session) -> HeaderMap {
    let mut h = cookie_header(codec, session);
    for (name, value) in [
        ("host", "app.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("referer", "https://app.example.com/dashboard"),
        ("connection", "keep-alive"),
        ("upgrade-insecure-requests", "1"),
        ("sec-fetch-dest", "document"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "same-origin"),
        ("priority", "u=0, i"),
    ] {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    h
}

/// `headers` as hyper's HTTP/1.1 server hands them over: an empty map reserved for the number of
/// fields, then each field appended in order (hyper's `role.rs`). A `clone` would differ: its entry
/// list has no room left, so the first header the gateway adds would move the whole list.
fn as_parsed(headers: &HeaderMap) -> HeaderMap {
    let mut parsed = HeaderMap::new();
    parsed.reserve(headers.len());
    for (name, value) in headers {
        parsed.append(name.clone(), value.clone());
    }
    parsed
}

fn header_rewrite(c: &mut Criterion) {
    let codec = cookies();
    let session = session(640, 0);
    let request = browser_request(&codec, &session);
    let mapping: Vec<(HeaderName, String)> = [
        ("x-forwarded-user", "sub"),
        ("x-forwarded-email", "email"),
        ("x-forwarded-preferred-username", "preferred_username"),
        ("x-forwarded-groups", "groups"),
    ]
    .into_iter()
    .map(|(h, c)| (HeaderName::from_static(h), c.to_string()))
    .collect();
    let proxy = Proxy::new(
        Duration::from_secs(5),
        Duration::from_secs(30),
        true,
        Vec::new(),
        mapping.iter().map(|(h, _)| h.clone()),
    );
    let upstream = Upstream::from_url(&url::Url::parse("http://127.0.0.1:9000").expect("URL"));
    let conn = ConnInfo::new(SocketAddr::from(([192, 0, 2, 10], 53211)), true);
    let uri = Uri::from_static("/dashboard/settings");
    // The identity headers are built once per session and cached with it (see `Sessions::authenticate`).
    let identity = identity_headers(&session.claims, &mapping);
    // One fresh copy per iteration, as hot in cache as a head hyper has just parsed (batches of
    // thousands of copies would measure cache misses instead of the rewrite), and built the way
    // hyper builds it (see `as_parsed`).
    c.bench_function("header_rewrite/browser_request", |b| {
        b.iter_batched_ref(
            || as_parsed(&request),
            |headers| {
                codec.strip_own_cookies(headers);
                proxy.rewrite_headers(headers, &uri, &conn, &upstream, &identity, None)
            },
            BatchSize::PerIteration,
        )
    });
    c.bench_function("header_rewrite/identity_headers_uncached", |b| {
        b.iter(|| identity_headers(black_box(&session.claims), &mapping))
    });
}

fn route_matching(c: &mut Criterion) {
    let routes: Vec<RouteConfig> = (0..50)
        .map(|i| {
            let (path, policy, methods) = match i % 5 {
                0 => (
                    format!("^/static/v{i}/"),
                    Policy::Public,
                    Some(vec![Method::GET, Method::HEAD]),
                ),
                1 => (
                    format!("^/api/v{i}/items/[0-9]+$"),
                    Policy::Authenticated,
                    None,
                ),
                2 => (format!("^/admin{i}(/|$)"), Policy::Deny, None),
                3 => (
                    format!("^/public/{i}/[a-z-]+\\.html$"),
                    Policy::Public,
                    None,
                ),
                _ => (
                    format!("^/reports/{i}/(daily|weekly)/"),
                    Policy::Authenticated,
                    Some(vec![Method::GET]),
                ),
            };
            RouteConfig {
                host: None,
                path: regex::Regex::new(&path).expect("pattern"),
                methods,
                policy,
                upstream: None,
                allowed_groups: None,
            }
        })
        .collect();
    let set = regex::RegexSet::new(routes.iter().map(|r| r.path.as_str())).expect("patterns");
    let router = Router::new("/oauth2", &routes, &set, |_| 0);
    let mut group = c.benchmark_group("route_50");
    for (label, raw) in [
        ("no_match", "/dashboard/settings/profile"),
        ("match_late", "/reports/49/weekly/summary"),
        ("needs_canonicalizing", "/app//%7Ejane/./docs/../index.html"),
    ] {
        group.bench_function(label, |b| {
            b.iter(|| {
                let path = canonicalize(black_box(raw)).expect("a valid path");
                let target: Target = router.route(&Method::GET, None, &path);
                target
            })
        });
    }
    // The same rules, each on a host of its own (half of them wildcards), asked from the last
    // one's host: the host is compared without allocating, only for rules whose path matched.
    let on_hosts: Vec<RouteConfig> = routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| RouteConfig {
            host: Some(
                portcullis::config::HostPattern::parse(&if i % 2 == 0 {
                    format!("tool{i}.corp.example")
                } else {
                    format!("*.team{i}.corp.example")
                })
                .expect("a host"),
            ),
            path: regex::Regex::new("^/").expect("pattern"),
            ..r
        })
        .collect();
    let set = regex::RegexSet::new(on_hosts.iter().map(|r| r.path.as_str())).expect("patterns");
    let router = Router::new("/oauth2", &on_hosts, &set, |_| 0);
    let host = HeaderValue::from_static("grafana.team49.corp.example:443");
    group.bench_function("hosts_match_late", |b| {
        b.iter(|| {
            let path = canonicalize(black_box("/d/abc/overview")).expect("a valid path");
            let name = portcullis::router::host::name(black_box(&host).as_bytes());
            let target: Target = router.route(&Method::GET, name, &path);
            assert!(matches!(
                target,
                Target::Proxy {
                    route: Some(49),
                    ..
                }
            ));
            target
        })
    });
    group.finish();
}

/// A forward-auth check (`GET /oauth2/auth` as nginx's `auth_request` sends it) of a signed-in
/// user through every phase of the gateway: reading and canonicalising the original request, the
/// routes, the session (from its cache, as for every request after a session's first), the access
/// policy, and the 202 with the identity headers and `X-Auth-Request-*`. Target: < 5 us. The
/// request is built, and the answer dropped, outside the measurement.
fn forward_auth(c: &mut Criterion) {
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "https://app.example.com"
trusted_proxies = ["127.0.0.1/32"]
[upstream]
url = "http://127.0.0.1:8080"
[oidc]
issuer = "http://127.0.0.1:9"
client_id = "portcullis"
client_secret = "secret"
[session]
secret = "{}"
[access]
allowed_email_domains = ["example.com"]
require_email_verified = false
[[routes]]
path = "^/static/"
policy = "public"
[[routes]]
path = "^/admin(/|$)"
allowed_groups = ["admins"]
[[routes]]
host = "grafana.example.com"
upstream = "http://127.0.0.1:3000"
"#,
        "k".repeat(32)
    );
    let config = portcullis::config::Config::from_toml_str(&toml, &Default::default())
        .expect("a valid configuration");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let _guard = tokio.enter();
    let rt = portcullis::runtime::Runtime::new(config).expect("the runtime");
    let now = portcullis::login::unix_now();
    let mut user = session(640, 0);
    user.created_at = now;
    user.seen_at = now;
    user.expires_at = now + 12 * 3600;
    user.access_expires_at = None;
    let set = rt
        .snapshot()
        .cookies
        .write(&user, &HeaderMap::new(), now)
        .expect("the session fits");
    let cookie = set
        .iter()
        .map(|v| {
            v.to_str()
                .expect("ASCII")
                .split(';')
                .next()
                .expect("a pair")
        })
        .collect::<Vec<_>>()
        .join("; ");
    let conn = ConnInfo::new(SocketAddr::from(([127, 0, 0, 1], 40000)), false);
    let check = || {
        http::Request::builder()
            .uri("/oauth2/auth")
            .header(header::HOST, "app.example.com")
            .header(header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")
            .header(header::COOKIE, format!("_ga=GA1.2.3; {cookie}"))
            .header("x-original-uri", "/reports/2026/q3?year=2026&view=full")
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", "/reports/2026/q3?year=2026&view=full")
            .header("x-forwarded-host", "app.example.com")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-for", "203.0.113.7")
            .body(())
            .expect("a request")
    };
    let run = |req| {
        portcullis::phases::check(&rt, &conn, req)
            .now_or_never()
            .expect("the cookie store answers at once")
    };
    let first = run(check());
    assert_eq!(first.status(), 202);
    assert_eq!(
        first.headers()["x-auth-request-email"],
        "jane.doe@example.com"
    );
    assert_eq!(first.headers()["x-forwarded-user"], "248289761001");
    let mut group = c.benchmark_group("forward_auth");
    group.bench_function("session_cached_202", |b| {
        b.iter_batched(check, run, BatchSize::SmallInput)
    });
    group.finish();
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn signed(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).expect("signs");
    format!("{input}.{sig}")
}

fn id_token_validation(c: &mut Criterion) {
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA key");
    let rsa_pem = pem("PRIVATE KEY", rsa.as_der().expect("DER").as_ref());
    let rsa_key = EncodingKey::from_rsa_pem(rsa_pem.as_bytes()).expect("RSA PEM");
    let comps = RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
    let ec = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key");
    let ec_key = EncodingKey::from_ec_der(ec.to_pkcs8v1().expect("PKCS#8").as_ref());
    let point = ec.public_key().as_ref().to_vec();
    let (x, y) = point[1..].split_at(32);
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "use": "sig", "n": b64(&comps.n), "e": b64(&comps.e)},
        {"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b64(x), "y": b64(y)},
    ]});
    let keys: KeySet =
        parse_jwks(&http::Response::new(bytes::Bytes::from(jwks.to_string()))).expect("JWKS");

    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(NOW, |d| d.as_secs());
    let issuer = "https://idp.example.com/realms/main";
    let claims = json!({
        "iss": issuer, "sub": "248289761001", "aud": "portcullis", "exp": now + 300,
        "iat": now - 5, "nonce": "n-0S6_WzA2Mj", "email": "jane.doe@example.com",
        "name": "Jane Doe", "groups": ["engineering", "staff"], "auth_time": now - 5,
    });
    let nonce = Nonce::new("n-0S6_WzA2Mj");
    let exp = Expectations {
        issuer,
        client_id: "portcullis",
        nonce: &nonce,
        access_token: None,
        clock_skew: Duration::from_secs(60),
        now: SystemTime::now(),
    };
    let mut group = c.benchmark_group("id_token");
    for (label, token) in [
        (
            "rs256",
            signed(
                &json!({"alg": "RS256", "kid": "rsa-1", "typ": "JWT"}),
                &claims,
                &rsa_key,
                Algorithm::RS256,
            ),
        ),
        (
            "es256",
            signed(
                &json!({"alg": "ES256", "kid": "ec-1", "typ": "JWT"}),
                &claims,
                &ec_key,
                Algorithm::ES256,
            ),
        ),
    ] {
        assert!(
            validate_id_token(&token, &keys, &exp).is_ok(),
            "{label} validates"
        );
        group.bench_function(label, |b| {
            b.iter(|| validate_id_token(black_box(&token), &keys, &exp))
        });
    }
    group.finish();
}

/// A realistic `[access]`: two email domains and an address, four groups, two claims, against a
/// user with a dozen groups who passes them all (every rule is evaluated).
fn access_policy(c: &mut Criterion) {
    let config = portcullis::config::AccessConfig {
        allowed_email_domains: vec!["example.com".into(), "example.org".into()],
        allowed_emails: vec!["contractor@partner.example".into()],
        allowed_groups: vec![
            "platform".into(),
            "sre".into(),
            "security".into(),
            "engineering".into(),
        ],
        groups_claim: "groups".into(),
        require_email_verified: true,
        claims: vec![
            ("department".into(), vec![json!("eng"), json!("ops")]),
            ("org.level".into(), vec![json!(3), json!(4), json!(5)]),
        ],
    };
    let policy = portcullis::policy::AccessPolicy::new(&config);
    let claims = json!({
        "sub": "248289761001", "email": "Jane.Doe@Example.com", "email_verified": true,
        "name": "Jane Doe", "preferred_username": "jane",
        "groups": ["staff", "all-hands", "berlin", "oncall", "design-review", "guild-rust",
                   "guild-web", "book-club", "mentors", "interviewers", "engineering", "alumni"],
        "department": "eng", "org": {"level": 4, "unit": "platform"},
        "iss": "https://idp.example.com/realms/main", "sid": "0b5c1a7e-3d2f",
    });
    let claims = Claims::new(claims.as_object().expect("object")).expect("claims");
    assert_eq!(policy.check(&claims), Ok(()), "the user passes every rule");
    let route =
        portcullis::policy::GroupRule::new("routes[0].allowed_groups", vec!["engineering".into()]);
    let mut group = c.benchmark_group("policy");
    group.bench_function("access_realistic", |b| {
        b.iter(|| policy.check(black_box(&claims)))
    });
    group.bench_function("route_groups", |b| {
        b.iter(|| policy.check_groups(black_box(&route), &claims))
    });
    group.finish();
}

/// What an API client's request costs when its JWT is not in the token cache: parse, RS256
/// signature with the cached JWKS, the claims checks, the identity's claims.
fn bearer_validation(c: &mut Criterion) {
    let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA key");
    let rsa_pem = pem("PRIVATE KEY", rsa.as_der().expect("DER").as_ref());
    let rsa_key = EncodingKey::from_rsa_pem(rsa_pem.as_bytes()).expect("RSA PEM");
    let comps = RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public_key());
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "use": "sig", "n": b64(&comps.n), "e": b64(&comps.e)},
    ]});
    let keys: KeySet =
        parse_jwks(&http::Response::new(bytes::Bytes::from(jwks.to_string()))).expect("JWKS");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(NOW, |d| d.as_secs());
    let issuer = "https://idp.example.com/realms/main";
    let claims = json!({
        "iss": issuer, "sub": "248289761001", "aud": ["api://orders", "account"],
        "exp": now + 300, "iat": now - 5, "nbf": now - 5, "jti": "b0c4f3e2-7d1a",
        "client_id": "orders-cli", "scope": "openid orders:read orders:write",
        "email": "jane.doe@example.com", "email_verified": true,
        "groups": ["engineering", "staff"],
    });
    let token = signed(
        &json!({"alg": "RS256", "kid": "rsa-1", "typ": "at+jwt"}),
        &claims,
        &rsa_key,
        Algorithm::RS256,
    );
    let audiences = vec!["api://orders".to_string()];
    let expect = AccessTokenExpectations {
        issuer,
        audiences: &audiences,
        clock_skew: Duration::from_secs(60),
        now: SystemTime::now(),
    };
    let validate = |token: &str| {
        let parsed = UnverifiedJws::parse(token).expect("parses");
        let verified = parsed.verify_signature(&keys).expect("verifies");
        let (claims, _exp) =
            portcullis::oidc::access_token::check_claims(&verified, &expect).expect("valid");
        portcullis::bearer::identity_claims(claims).expect("claims")
    };
    assert!(validate(&token).get("sub").is_some());
    let mut group = c.benchmark_group("bearer");
    group.bench_function("jwt_rs256_cached_keys", |b| {
        b.iter_with_large_drop(|| validate(black_box(&token)))
    });
    group.finish();
}

/// The signed assertion of a request whose identity already has a fresh one: the key's lock-free
/// load, the clock, the lookup and a clone of the header value. Minting is measured for comparison
/// (once per identity and lifetime window).
fn assertion_header(c: &mut Criterion) {
    let toml = r#"
[server]
public_url = "https://gw.example.com"
[upstream]
url = "http://127.0.0.1:8080"
[oidc]
issuer = "https://idp.example.com"
client_id = "portcullis"
client_secret = "secret"
[session]
secret = "0123456789abcdef0123456789abcdef"
[assertion]
"#;
    let config = portcullis::config::Config::from_toml_str(toml, &Default::default())
        .expect("valid configuration");
    let rt = portcullis::runtime::Runtime::new(config).expect("runtime");
    let snap = rt.snapshot();
    let mut signed_in = session(1200, 0);
    signed_in.expires_at = u64::MAX;
    let auth = snap.open(signed_in, portcullis::session::store::SessionKey([7; 32]));
    assert!(rt.assertion(&snap, &auth, 0).is_some(), "minted");
    let mut group = c.benchmark_group("assertion");
    group.bench_function("cached", |b| {
        b.iter(|| rt.assertion(black_box(&snap), black_box(&auth), 0))
    });
    let settings = snap.assertion.as_ref().expect("[assertion]");
    let key = rt.assertion_keys.current();
    group.bench_function("mint", |b| {
        b.iter(|| {
            auth.assertions.mint(
                settings,
                0,
                &key,
                portcullis::assertion::Subject {
                    claims: &auth.session.claims,
                    groups: vec!["engineering".into(), "staff".into()],
                    expires_at: u64::MAX,
                },
                NOW,
            )
        })
    });
    group.finish();
}

fn authorization_redirect(c: &mut Criterion) {
    let endpoint =
        url::Url::parse("https://idp.example.com/realms/main/protocol/openid-connect/auth")
            .expect("URL");
    let redirect_uri = url::Url::parse("https://app.example.com/oauth2/callback").expect("URL");
    let scopes = ["openid".to_string(), "profile".into(), "email".into()];
    let req = AuthRequest {
        endpoint: &endpoint,
        client_id: "portcullis",
        redirect_uri: &redirect_uri,
        scopes: &scopes,
        extra_params: &[],
    };
    let secrets = LoginSecrets::generate(true).expect("random secrets");
    let mut group = c.benchmark_group("authorization_url");
    group.bench_function("build", |b| {
        b.iter(|| authorization_url(black_box(&req), &secrets))
    });
    group.bench_function("with_fresh_secrets", |b| {
        b.iter(|| {
            let secrets = LoginSecrets::generate(true).expect("random secrets");
            authorization_url(black_box(&req), &secrets)
        })
    });
    group.finish();
}

/// The record phase's share of every request: the request counted (a counter and the latency
/// histogram), the request id kept or made, and the access log line, formatted as JSON into a sink.
fn telemetry(c: &mut Criterion) {
    use portcullis::telemetry::access_log::{self, Line, X_REQUEST_ID};
    use portcullis::telemetry::metrics::{Metrics, PolicyLabel};
    use tracing_subscriber::layer::SubscriberExt as _;

    let mut group = c.benchmark_group("telemetry");
    let metrics = Metrics::new(std::sync::Arc::new(|| 0));
    group.bench_function("metrics_request", |b| {
        b.iter(|| {
            metrics.request(
                black_box(PolicyLabel::Authenticated),
                black_box(&Method::GET),
                black_box(200),
                black_box(Duration::from_micros(180)),
            )
        })
    });
    let mut sent = HeaderMap::new();
    sent.insert(
        X_REQUEST_ID,
        HeaderValue::from_static("0f8fad5b-d9cb-469f-a165-70867728950e"),
    );
    group.bench_function("request_id_kept", |b| {
        b.iter(|| access_log::request_id(black_box(&sent)))
    });
    let none = HeaderMap::new();
    group.bench_function("request_id_made", |b| {
        b.iter(|| access_log::request_id(black_box(&none)))
    });
    let id = access_log::request_id(&none);
    let line = Line {
        request_id: &id,
        method: &Method::GET,
        path: "/reports/q3",
        status: 200,
        duration: Duration::from_micros(412),
        upstream: Some(Duration::from_micros(230)),
        sub: Some("248289761001"),
    };
    let json = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::sink),
    );
    tracing::subscriber::with_default(json, || {
        group.bench_function("access_line_json", |b| {
            b.iter(|| access_log::write(black_box(&line)))
        });
    });
    group.finish();
}

criterion_group!(
    benches,
    session_decode,
    header_rewrite,
    route_matching,
    id_token_validation,
    authorization_redirect,
    access_policy,
    bearer_validation,
    assertion_header,
    telemetry,
    forward_auth
);
criterion_main!(benches);

use super::*;
use crate::session::Claims;
use crate::session::{payload, seal};
use http::header::{COOKIE, SET_COOKIE};
use proptest::prelude::*;
use std::time::Duration;

const NOW: u64 = 1_700_000_000;
const SECRET: [u8; 32] = [0x42; 32];

fn settings(name: &str) -> CookieSettings {
    CookieSettings {
        name: name.into(),
        secure: true,
        max_age: Duration::from_secs(12 * 3600),
        domain: None,
    }
}

fn codec() -> SessionCookies {
    SessionCookies::new(settings("_portcullis"), &SECRET, &[]).unwrap()
}

fn session(groups: usize) -> Session {
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), "user-1234".into());
    claims.insert("email".into(), "alice@example.com".into());
    let groups: Vec<serde_json::Value> = (0..groups)
        .map(|i| format!("group-number-{i:05}").into())
        .collect();
    claims.insert("groups".into(), groups.into());
    Session {
        claims: Claims::new(&claims).unwrap(),
        id_token: Some("eyJhbGciOiJSUzI1NiJ9.".repeat(20)),
        access_token: Some("opaque-access-token".into()),
        refresh_token: None,
        created_at: NOW,
        expires_at: NOW + 3600,
        seen_at: NOW,
        access_expires_at: Some(NOW + 300),
    }
}

/// A login started at `created_at` (Unix seconds), stored in microseconds.
fn login(state: &str, created_at: u64) -> LoginState {
    LoginState {
        state: state.into(),
        nonce: format!("nonce-{state}"),
        pkce_verifier: Some(format!("verifier-{state}")),
        return_to: "/dashboard?tab=1".into(),
        created_at: created_at * 1_000_000,
    }
}

/// A browser cookie jar: applies Set-Cookie values, sends the live cookies back in creation
/// order (RFC 6265 section 5.3: replacing a cookie keeps its creation time).
#[derive(Default)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn apply(&mut self, set_cookies: &[HeaderValue]) {
        for value in set_cookies {
            let cookie = parse(value);
            let (name, val) = (cookie.name().to_owned(), cookie.value().to_owned());
            let pos = self.0.iter().position(|(n, _)| *n == name);
            match (cookie.max_age() == Some(CookieDuration::ZERO), pos) {
                (true, Some(pos)) => {
                    self.0.remove(pos);
                }
                (true, None) => {}
                (false, Some(pos)) => self.0[pos].1 = val,
                (false, None) => self.0.push((name, val)),
            }
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let line: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        if !line.is_empty() {
            headers.insert(COOKIE, HeaderValue::try_from(line.join("; ")).unwrap());
        }
        headers
    }

    fn names(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn get_mut(&mut self, name: &str) -> &mut String {
        &mut self.0.iter_mut().find(|(n, _)| n == name).unwrap().1
    }
}

fn cookie_header(pairs: &[(&str, &str)]) -> HeaderMap {
    let jar = Jar(pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect());
    jar.headers()
}

fn parse(value: &HeaderValue) -> Cookie<'static> {
    Cookie::parse(value.to_str().unwrap().to_owned()).unwrap()
}

fn stored(codec: &SessionCookies, session: &Session) -> Jar {
    let mut jar = Jar::default();
    jar.apply(&codec.write(session, &HeaderMap::new(), NOW).unwrap());
    jar
}

/// The session plaintext `write` would seal for `session`.
fn plaintext(session: &Session) -> Vec<u8> {
    let mut buf = Vec::new();
    payload::encode(session, &mut buf).unwrap();
    buf
}

/// A request carrying `plain`, whatever it holds, sealed as the session cookie under the
/// right key and name.
fn sealed_session(codec: &SessionCookies, plain: &[u8]) -> HeaderMap {
    let mut buf = seal::plaintext_buffer(plain.len());
    buf.extend_from_slice(plain);
    let text = codec.session.keys().seal(b"_portcullis", buf).unwrap();
    cookie_header(&[("_portcullis", &text)])
}

#[test]
fn small_session_round_trips_in_one_cookie_with_all_attributes() {
    let codec = codec();
    let small = session(10);
    let set = codec.write(&small, &HeaderMap::new(), NOW).unwrap();
    assert_eq!(set.len(), 1);
    assert!(set[0].is_sensitive());
    let text = set[0].to_str().unwrap();
    assert!(text.len() > 1000, "about 1 KB: {}", text.len());
    let cookie = Cookie::parse(text).unwrap();
    assert_eq!(cookie.name(), "_portcullis");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(cookie.same_site(), Some(SameSite::Lax));
    assert_eq!(cookie.path(), Some("/"));
    assert_eq!(cookie.domain(), None);
    // Capped by the session's own expiry (1 h), below the configured 12 h.
    assert_eq!(cookie.max_age(), Some(CookieDuration::seconds(3600)));
    let mut jar = Jar::default();
    jar.apply(&set);
    assert_eq!(codec.read(&jar.headers(), NOW + 10), Some(small));
}

#[test]
fn domain_and_insecure_settings_show_in_attributes() {
    let mut s = settings("sid");
    s.secure = false;
    s.domain = Some("example.com".into());
    s.max_age = Duration::from_secs(60);
    let codec = SessionCookies::new(s, &SECRET, &[]).unwrap();
    let set = codec.write(&session(1), &HeaderMap::new(), NOW).unwrap();
    let cookie = parse(&set[0]);
    assert_eq!(cookie.secure(), None);
    assert_eq!(cookie.domain(), Some("example.com"));
    assert_eq!(cookie.max_age(), Some(CookieDuration::seconds(60)));
    let removal = parse(&codec.clear_login("s"));
    assert_eq!(removal.domain(), Some("example.com"));
}

/// Sign-out with a cookie domain deletes the domain cookie and any host-only copy the request
/// shows (one set before the domain was configured would outlive the sign-out on its host).
#[test]
fn clearing_with_a_domain_also_deletes_host_only_copies() {
    let mut s = settings("sid");
    s.domain = Some("corp.example".into());
    let codec = SessionCookies::new(s, &SECRET, &[]).unwrap();
    let mut request = HeaderMap::new();
    request.insert(COOKIE, HeaderValue::from_static("sid=a; sid_0=b; other=c"));
    let cleared: Vec<Cookie<'static>> = codec.clear(&request).iter().map(parse).collect();
    let described: Vec<(String, Option<String>)> = cleared
        .iter()
        .map(|c| (c.name().to_string(), c.domain().map(str::to_string)))
        .collect();
    let domain = Some("corp.example".to_string());
    assert_eq!(
        described,
        [
            ("sid".to_string(), domain.clone()),
            ("sid_0".to_string(), domain),
            ("sid".to_string(), None),
            ("sid_0".to_string(), None),
        ]
    );
    assert!(cleared
        .iter()
        .all(|c| c.max_age() == Some(CookieDuration::ZERO)));
    // Without a domain, no second round.
    let host_only = SessionCookies::new(settings("sid"), &SECRET, &[]).unwrap();
    assert_eq!(host_only.clear(&request).len(), 2);
}

#[test]
fn large_session_is_chunked_and_joined() {
    let codec = codec();
    let large = session(400);
    let jar = stored(&codec, &large);
    let names = jar.names();
    assert!(names.len() >= 3, "about 10 KB needs chunks: {names:?}");
    let expected: Vec<String> = (0..names.len())
        .map(|i| format!("_portcullis_{i}"))
        .collect();
    assert_eq!(names, expected);
    assert!(jar.0.iter().all(|(_, v)| v.len() <= CHUNK_LEN));
    assert_eq!(codec.read(&jar.headers(), NOW), Some(large));
}

#[test]
fn growing_and_shrinking_delete_stale_cookies() {
    let codec = codec();
    let mut jar = stored(&codec, &session(1));
    // Grow: the unchunked cookie must go.
    let big = session(400);
    jar.apply(&codec.write(&big, &jar.headers(), NOW).unwrap());
    assert!(!jar.names().contains(&"_portcullis"), "{:?}", jar.names());
    assert_eq!(codec.read(&jar.headers(), NOW), Some(big));
    let chunks = jar.names().len();
    // Shrink by one chunk: the last chunk must go.
    let mut smaller = session(400);
    while {
        let n = stored(&codec, &smaller).names().len();
        n >= chunks
    } {
        let mut claims = smaller.claims.to_map();
        let groups = claims["groups"].as_array_mut().unwrap();
        groups.truncate(groups.len() - 20);
        smaller.claims = Claims::new(&claims).unwrap();
    }
    jar.apply(&codec.write(&smaller, &jar.headers(), NOW).unwrap());
    assert_eq!(jar.names().len(), chunks - 1, "{:?}", jar.names());
    assert_eq!(codec.read(&jar.headers(), NOW), Some(smaller));
    // Shrink to one cookie: every chunk must go.
    let small = session(1);
    jar.apply(&codec.write(&small, &jar.headers(), NOW).unwrap());
    assert_eq!(jar.names(), ["_portcullis"]);
    assert_eq!(codec.read(&jar.headers(), NOW), Some(small));
}

#[test]
fn tampered_truncated_and_foreign_values_read_as_none() {
    let codec = codec();
    let jar = stored(&codec, &session(10));
    let value = &jar.0[0].1;
    for pos in [0, 1, 10, value.len() / 2, value.len() - 1] {
        let mut bytes = value.clone().into_bytes();
        bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        let headers = cookie_header(&[("_portcullis", &tampered)]);
        assert_eq!(codec.read(&headers, NOW), None, "byte {pos}");
    }
    for cut in [1, 16, value.len() / 2] {
        let headers = cookie_header(&[("_portcullis", &value[..value.len() - cut])]);
        assert_eq!(codec.read(&headers, NOW), None, "cut {cut}");
    }
    let other_key = SessionCookies::new(settings("_portcullis"), &[1; 32], &[]).unwrap();
    assert_eq!(other_key.read(&jar.headers(), NOW), None);
    // Same secret, other cookie name: the name is authenticated data.
    let other_name = SessionCookies::new(settings("_other"), &SECRET, &[]).unwrap();
    let moved = cookie_header(&[("_other", value)]);
    assert_eq!(other_name.read(&moved, NOW), None);
    assert_eq!(codec.read(&jar.headers(), NOW), Some(session(10)));
}

#[test]
fn missing_or_tampered_chunk_reads_as_none() {
    let codec = codec();
    let mut jar = stored(&codec, &session(400));
    assert!(jar.names().len() >= 3);
    let mut gap = Jar(jar.0.clone());
    gap.0.remove(1);
    assert_eq!(codec.read(&gap.headers(), NOW), None);
    let mut last_missing = Jar(jar.0.clone());
    last_missing.0.pop();
    assert_eq!(codec.read(&last_missing.headers(), NOW), None);
    let mut swapped = Jar(jar.0.clone());
    let (a, b) = (swapped.0[0].1.clone(), swapped.0[1].1.clone());
    swapped.0[0].1 = b;
    swapped.0[1].1 = a;
    assert_eq!(codec.read(&swapped.headers(), NOW), None);
    jar.get_mut("_portcullis_1").replace_range(5..6, "x");
    assert_eq!(codec.read(&jar.headers(), NOW), None);
}

#[test]
fn expired_session_reads_as_none_and_is_cleared_on_write() {
    let codec = codec();
    let s = session(1);
    let jar = stored(&codec, &s);
    assert!(codec.read(&jar.headers(), s.expires_at - 1).is_some());
    assert_eq!(codec.read(&jar.headers(), s.expires_at), None);
    let set = codec.write(&s, &jar.headers(), s.expires_at).unwrap();
    let removal = parse(&set[0]);
    assert_eq!(removal.max_age(), Some(CookieDuration::ZERO));
}

#[test]
fn every_truncation_of_a_session_plaintext_reads_as_none() {
    let codec = codec();
    let mut all_tokens = session(2);
    all_tokens.refresh_token = Some("refresh".into());
    let mut no_tokens = session(0);
    no_tokens.id_token = None;
    no_tokens.access_token = None;
    for s in [session(2), all_tokens, no_tokens] {
        let plain = plaintext(&s);
        for cut in 0..plain.len() {
            let headers = sealed_session(&codec, &plain[..cut]);
            assert_eq!(codec.read(&headers, NOW), None, "cut {cut}");
        }
        assert_eq!(codec.read(&sealed_session(&codec, &plain), NOW), Some(s));
    }
}

#[test]
fn json_session_payloads_are_refused() {
    let codec = codec();
    let s = session(3);
    // The shape earlier releases sealed.
    let json = serde_json::to_vec(&serde_json::json!({
        "claims": s.claims.to_map(),
        "id_token": s.id_token,
        "access_token": s.access_token,
        "refresh_token": s.refresh_token,
        "created_at": s.created_at,
        "expires_at": s.expires_at,
    }))
    .unwrap();
    assert_eq!(json.first(), Some(&b'{'));
    assert_eq!(codec.read(&sealed_session(&codec, &json), NOW), None);
    assert_eq!(
        codec.read(&sealed_session(&codec, &plaintext(&s)), NOW),
        Some(s)
    );
}

#[test]
fn non_canonical_base64_reads_as_none() {
    let codec = codec();
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut tails = Vec::new();
    // Three consecutive plaintext lengths give every remainder of the sealed length mod 3.
    for pad in 0..3 {
        let mut s = session(1);
        let mut claims = s.claims.to_map();
        claims.insert("pad".into(), "x".repeat(pad).into());
        s.claims = Claims::new(&claims).unwrap();
        let value = stored(&codec, &s).0.remove(0).1;
        let read = |value: &str| codec.read(&cookie_header(&[("_portcullis", value)]), NOW);
        assert_eq!(read(&value), Some(s.clone()));
        tails.push(value.len() % 4);
        if value.len() % 4 != 0 {
            // Same bytes under a lenient decoder: only the unused low bits of the last
            // character change.
            let mut bytes = value.clone().into_bytes();
            let last = bytes.last_mut().unwrap();
            let sextet = alphabet.iter().position(|c| c == last).unwrap();
            *last = alphabet[sextet ^ 1];
            assert_eq!(
                read(&String::from_utf8(bytes).unwrap()),
                None,
                "trailing bits"
            );
            let padding = "=".repeat(4 - value.len() % 4);
            assert_eq!(read(&format!("{value}{padding}")), None, "padded");
        }
        for junk in ["+", "/", "=", ".", "%2B"] {
            let mid = value.len() / 2;
            let bad = format!("{}{junk}{}", &value[..mid], &value[mid + 1..]);
            assert_eq!(read(&bad), None, "{junk}");
        }
    }
    tails.sort_unstable();
    assert_eq!(tails, [0, 2, 3]);
}

#[test]
fn rotation_reads_old_cookies_only_while_the_old_secret_is_listed() {
    let old = SessionCookies::new(settings("_portcullis"), &[1; 32], &[]).unwrap();
    let jar = stored(&old, &session(400));
    let rotated = SessionCookies::new(
        settings("_portcullis"),
        &[2; 32],
        &[vec![9; 32], vec![1; 32]],
    )
    .unwrap();
    assert_eq!(rotated.read(&jar.headers(), NOW), Some(session(400)));
    let dropped = SessionCookies::new(settings("_portcullis"), &[2; 32], &[]).unwrap();
    assert_eq!(dropped.read(&jar.headers(), NOW), None);
    // New cookies are sealed with the current secret only.
    let fresh = stored(&rotated, &session(1));
    assert_eq!(old.read(&fresh.headers(), NOW), None);
    assert!(dropped.read(&fresh.headers(), NOW).is_some());
}

#[test]
fn a_stale_duplicate_does_not_hide_the_valid_cookie() {
    let codec = codec();
    let jar = stored(&codec, &session(1));
    let headers = cookie_header(&[("_portcullis", "garbage"), ("_portcullis", &jar.0[0].1)]);
    assert_eq!(codec.read(&headers, NOW), Some(session(1)));
}

#[test]
fn clear_deletes_session_and_present_chunks() {
    let codec = codec();
    let mut jar = stored(&codec, &session(400));
    jar.0.push(("other".into(), "1".into()));
    let set = codec.clear(&jar.headers());
    for value in &set {
        let cookie = parse(value);
        assert_eq!(cookie.max_age(), Some(CookieDuration::ZERO));
        assert_eq!(cookie.expires_datetime(), Some(OffsetDateTime::UNIX_EPOCH));
        assert_eq!(cookie.path(), Some("/"));
    }
    jar.apply(&set);
    assert_eq!(jar.names(), ["other"]);
    assert_eq!(set.len(), 1 + stored(&codec, &session(400)).names().len());
}

#[test]
fn too_large_session_is_an_error() {
    let codec = codec();
    let huge = session(4000);
    assert!(matches!(
        codec.write(&huge, &HeaderMap::new(), NOW),
        Err(SessionError::TooLarge { .. })
    ));
}

#[test]
fn login_round_trip_is_single_use_and_bound_to_its_state() {
    let codec = codec();
    let mut jar = Jar::default();
    jar.apply(
        &codec
            .start_login(&login("abc", NOW), &jar.headers())
            .unwrap(),
    );
    let name = jar.names()[0].to_owned();
    assert!(
        name.starts_with("_portcullis_login_") && name.len() == 30,
        "{name}"
    );
    let cookie = parse(&codec.clear_login("abc"));
    assert_eq!(cookie.name(), name);
    assert_eq!(codec.finish_login("abd", &jar.headers(), NOW), None);
    assert_eq!(codec.finish_login("abc", &jar.headers(), NOW + 600), None);
    let (state, removal) = codec
        .finish_login("abc", &jar.headers(), NOW + 599)
        .unwrap();
    assert_eq!(state, login("abc", NOW));
    jar.apply(&[removal]);
    assert!(jar.names().is_empty());
}

#[test]
fn login_cookie_under_another_state_name_is_refused() {
    let codec = codec();
    let mut jar = Jar::default();
    jar.apply(
        &codec
            .start_login(&login("one", NOW), &jar.headers())
            .unwrap(),
    );
    // Moving the sealed value to the cookie name of another state fails the AEAD check.
    let moved = codec.login.cookie_name("two");
    jar.0[0].0 = moved;
    assert_eq!(codec.finish_login("two", &jar.headers(), NOW), None);
}

#[test]
fn login_state_inside_must_match_the_parameter() {
    // Sealed under the right name but holding another state: the constant-time check refuses.
    let codec = codec();
    let name = codec.login.cookie_name("wanted");
    let text =
        login::seal_json(codec.login.keys(), name.as_bytes(), &login("other", NOW), 0).unwrap();
    let headers = cookie_header(&[(&name, &text)]);
    assert_eq!(codec.finish_login("wanted", &headers, NOW), None);
}

#[test]
fn login_and_session_cookies_do_not_open_as_each_other() {
    let codec = codec();
    let mut jar = Jar::default();
    jar.apply(&codec.start_login(&login("s", NOW), &jar.headers()).unwrap());
    let login_value = jar.0[0].1.clone();
    let as_session = cookie_header(&[("_portcullis", &login_value)]);
    assert_eq!(codec.read(&as_session, NOW), None);
    let session_jar = stored(&codec, &session(1));
    let name = codec.login.cookie_name("s");
    let as_login = cookie_header(&[(&name, &session_jar.0[0].1)]);
    assert_eq!(codec.finish_login("s", &as_login, NOW), None);
}

#[test]
fn at_most_five_login_cookies_live_and_the_newest_finish() {
    let codec = codec();
    let mut jar = Jar::default();
    jar.0.push(("unrelated".into(), "1".into()));
    for i in 0..20u64 {
        let set = codec
            .start_login(&login(&format!("state-{i}"), NOW + i), &jar.headers())
            .unwrap();
        jar.apply(&set);
        let alive = jar.names().iter().filter(|n| n.contains("_login_")).count();
        assert!(alive <= MAX_LOGIN_STATES, "after {i}: {alive}");
    }
    assert!(jar.names().contains(&"unrelated"));
    for i in 15..20u64 {
        let state = format!("state-{i}");
        let (found, _) = codec
            .finish_login(&state, &jar.headers(), NOW + 20)
            .unwrap();
        assert_eq!(found.created_at, (NOW + i) * 1_000_000);
    }
    assert_eq!(
        codec.finish_login("state-14", &jar.headers(), NOW + 20),
        None
    );
}

#[test]
fn undecryptable_login_cookies_are_evicted_first() {
    let codec = codec();
    let mut jar = Jar::default();
    for i in 0..4u64 {
        let set = codec
            .start_login(&login(&format!("s{i}"), NOW + i), &jar.headers())
            .unwrap();
        jar.apply(&set);
    }
    // Added last, but it cannot be opened, so it is the one to go.
    let junk = codec.login.cookie_name("junk");
    jar.0.push((junk.clone(), "not-sealed".into()));
    jar.apply(
        &codec
            .start_login(&login("new", NOW + 9), &jar.headers())
            .unwrap(),
    );
    assert!(!jar.names().contains(&junk.as_str()), "{:?}", jar.names());
    assert_eq!(jar.names().len(), MAX_LOGIN_STATES);
}

#[test]
fn strip_own_cookies_keeps_foreign_cookies_intact() {
    let codec = codec();
    let mut jar = stored(&codec, &session(400));
    jar.apply(&codec.start_login(&login("x", NOW), &jar.headers()).unwrap());
    let mut headers = HeaderMap::new();
    headers.append(
        COOKIE,
        HeaderValue::from_static("theme=dark; _portcullis_0=zz"),
    );
    headers.append(COOKIE, jar.headers().remove(COOKIE).unwrap());
    headers.append(
        COOKIE,
        HeaderValue::from_static("a=\"q\"; _portcullis_x=keep; _portcullis=1;b=2"),
    );
    codec.strip_own_cookies(&mut headers);
    let left: Vec<_> = headers.get_all(COOKIE).iter().collect();
    assert_eq!(left, ["theme=dark", "a=\"q\"; _portcullis_x=keep; b=2"]);
    let mut only_ours = stored(&codec, &session(1)).headers();
    codec.strip_own_cookies(&mut only_ours);
    assert!(only_ours.is_empty());
}

#[test]
fn invalid_settings_and_short_secrets_are_refused() {
    for name in ["", "a b", "a;b", "a=b", "é", &"n".repeat(65)] {
        let result = SessionCookies::new(settings(name), &SECRET, &[]);
        assert!(
            matches!(result, Err(SessionError::CookieName(_))),
            "{name:?}"
        );
    }
    let mut host = settings("__Host-sid");
    host.domain = Some("example.com".into());
    assert!(SessionCookies::new(host, &SECRET, &[]).is_err());
    let mut bad_domain = settings("sid");
    bad_domain.domain = Some("example.com; HttpOnly".into());
    assert!(matches!(
        SessionCookies::new(bad_domain, &SECRET, &[]),
        Err(SessionError::CookieDomain(_))
    ));
    assert!(matches!(
        SessionCookies::new(settings("sid"), &[1; 31], &[]),
        Err(SessionError::SecretTooShort)
    ));
    assert!(SessionCookies::new(settings("sid"), &SECRET, &[vec![1; 8]]).is_err());
}

#[test]
fn debug_never_shows_keys_or_secrets() {
    let debug = format!("{:?}", codec());
    assert!(
        debug.contains("[redacted]") && debug.contains("_portcullis"),
        "{debug}"
    );
}

/// Claim values of every JSON kind, nested a few levels.
fn arb_claim() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Number, Value};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
        ".{0,40}".prop_map(Value::from),
    ];
    let nested = leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        4 => nested,
        1 => prop::collection::vec("[a-z0-9-]{1,30}", 0..600).prop_map(Value::from),
    ]
}

fn arb_session() -> impl Strategy<Value = Session> {
    let value = arb_claim();
    let token = prop::option::of(".{0,400}");
    (
        prop::collection::btree_map(".{1,12}", value, 0..6),
        (token.clone(), token.clone(), token),
        (any::<u64>(), any::<u64>(), prop::option::of(1..u64::MAX)),
        1..u64::MAX - NOW,
    )
        .prop_map(
            |(claims, (id, access, refresh), (created_at, seen_at, access_expires_at), ttl)| {
                Session {
                    claims: Claims::new(&claims.into_iter().collect()).unwrap(),
                    id_token: id,
                    access_token: access,
                    refresh_token: refresh,
                    created_at,
                    expires_at: NOW + ttl,
                    seen_at,
                    access_expires_at,
                }
            },
        )
}

/// Cookie headers mixing our names with junk, so the parser reaches every branch.
fn arb_cookie_header() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        Just("_portcullis".to_owned()),
        (0..20usize).prop_map(|i| format!("_portcullis_{i}")),
        Just("_portcullis_login_Kx2Kq1v1bK9S".to_owned()),
        "[ -~]{0,20}",
    ];
    let value = prop_oneof!["[A-Za-z0-9_-]{0,300}", "[ -~]{0,40}"];
    prop::collection::vec((name, value), 0..24).prop_map(|parts| {
        let parts: Vec<String> = parts.iter().map(|(n, v)| format!("{n}={v}")).collect();
        parts.join(";").into_bytes()
    })
}

fn request_with(bytes: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(bytes) {
        headers.append(COOKIE, value);
    }
    headers
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn write_then_read_round_trips(session in arb_session()) {
        let codec = codec();
        let jar = stored(&codec, &session);
        prop_assert_eq!(codec.read(&jar.headers(), NOW), Some(session));
    }

    #[test]
    fn opened_claims_read_back_as_the_json_they_came_from(
        claims in prop::collection::btree_map(".{1,12}", arb_claim(), 0..6),
    ) {
        let map: serde_json::Map<String, serde_json::Value> = claims.into_iter().collect();
        let mut session = session(0);
        session.claims = Claims::new(&map).unwrap();
        let codec = codec();
        let opened = codec.read(&stored(&codec, &session).headers(), NOW).unwrap();
        prop_assert_eq!(&opened.claims.to_map(), &map);
        for (name, value) in &map {
            prop_assert_eq!(opened.claims.get(name).map(|c| c.to_value()), Some(value.clone()));
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_cookie_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let codec = codec();
        let mut headers = request_with(&bytes);
        prop_assert_eq!(codec.read(&headers, NOW), None);
        prop_assert!(codec.finish_login("state", &headers, NOW).is_none());
        let _ = codec.start_login(&login("s", NOW), &headers).unwrap();
        let _ = codec.write(&session(1), &headers, NOW).unwrap();
        let _ = codec.clear(&headers);
        codec.strip_own_cookies(&mut headers);
    }

    #[test]
    fn structured_junk_never_panics(bytes in arb_cookie_header()) {
        let codec = codec();
        let mut headers = request_with(&bytes);
        prop_assert_eq!(codec.read(&headers, NOW), None);
        prop_assert!(codec.finish_login("state", &headers, NOW).is_none());
        let _ = codec.start_login(&login("s", NOW), &headers).unwrap();
        let _ = codec.clear(&headers);
        codec.strip_own_cookies(&mut headers);
        prop_assert!(pairs(&headers).all(|(name, _)| !codec.is_own(name)));
    }

    #[test]
    fn garbage_session_plaintexts_read_as_none(plain in prop::collection::vec(any::<u8>(), 0..300)) {
        let codec = codec();
        prop_assert_eq!(codec.read(&sealed_session(&codec, &plain), NOW), None);
    }

    /// Behind a well-formed, unexpired header with a UTF-8 text section, so that random bytes
    /// reach the token and claims structure. The rare structure that happens to be valid must
    /// describe a session that survives its own round trip.
    #[test]
    fn garbage_structure_never_panics(
        flags in 0..8u8,
        text in ".{0,40}",
        code in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let codec = codec();
        let mut plain = vec![payload::FORMAT];
        plain.extend_from_slice(&(NOW + 1).to_le_bytes());
        plain.extend_from_slice(&NOW.to_le_bytes());
        plain.push(flags);
        plain.extend_from_slice(&u32::try_from(text.len()).unwrap().to_le_bytes());
        plain.extend_from_slice(text.as_bytes());
        plain.extend_from_slice(&code);
        if let Some(session) = codec.read(&sealed_session(&codec, &plain), NOW) {
            let again = codec.read(&sealed_session(&codec, &plaintext(&session)), NOW);
            prop_assert_eq!(again, Some(session));
        }
    }

    #[test]
    fn flipped_bytes_in_real_chunks_read_as_none(pos in any::<prop::sample::Index>(), bit in 0..6u32) {
        let codec = codec();
        let mut jar = stored(&codec, &session(400));
        let all: usize = jar.0.iter().map(|(_, v)| v.len()).sum();
        let mut at = pos.index(all);
        for (_, value) in &mut jar.0 {
            if at < value.len() {
                let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
                let old = alphabet.iter().position(|&c| c == value.as_bytes()[at]).unwrap();
                let new = alphabet[old ^ (1 << bit)] as char;
                value.replace_range(at..=at, &new.to_string());
                break;
            }
            at -= value.len();
        }
        prop_assert_eq!(codec.read(&jar.headers(), NOW), None);
    }
}

#[test]
fn set_cookie_headers_are_named_set_cookie_ready() {
    // Every value we build is a valid header value (never the empty fallback).
    let codec = codec();
    let mut values = codec.write(&session(400), &HeaderMap::new(), NOW).unwrap();
    values.push(codec.clear_login("x"));
    values.extend(codec.clear(&HeaderMap::new()));
    let mut headers = HeaderMap::new();
    for value in values {
        assert!(!value.is_empty());
        headers.append(SET_COOKIE, value);
    }
    assert!(headers.len() > 3);
}

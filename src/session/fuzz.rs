//! Fuzz entry points that need the session codec's internals; built only with the `fuzzing` feature
//! (see `crate::fuzzing`).

use std::sync::OnceLock;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue};

use super::claims::{Claims, Reader};
use super::{payload, CookieSettings, LoginState, SessionCookies};

const NOW: u64 = 1_700_000_000;

fn codec() -> &'static SessionCookies {
    static CODEC: OnceLock<SessionCookies> = OnceLock::new();
    CODEC.get_or_init(|| {
        SessionCookies::new(
            CookieSettings {
                name: "_portcullis".into(),
                secure: true,
                max_age: Duration::from_secs(12 * 3600),
                domain: None,
            },
            &[7; 32],
            &[vec![8; 32]],
        )
        .expect("a valid codec")
    })
}

fn cookie_header(value: &[u8]) -> Option<HeaderMap> {
    let value = HeaderValue::from_bytes(value).ok()?;
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, value);
    Some(headers)
}

/// The chunked session cookie decoder. The first byte chooses what the rest is: a `Cookie` header as
/// a client sends it (which must never open), a plaintext sealed and chunked as the gateway writes it
/// (everything behind the AEAD), or the plaintext layout alone. A session that opens must survive its
/// own round trip.
pub fn session_cookie(data: &[u8]) {
    let codec = codec();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let Some(mut headers) = cookie_header(rest) else {
                return;
            };
            assert!(
                codec.read(&headers, NOW).is_none(),
                "a forged cookie opened"
            );
            let _ = codec.clear(&headers);
            codec.strip_own_cookies(&mut headers);
        }
        1 => {
            let Some(headers) = codec
                .fuzz_session_header(rest)
                .and_then(|h| cookie_header(h.as_bytes()))
            else {
                return;
            };
            if let Some(session) = codec.read(&headers, NOW) {
                assert!(session.expires_at > NOW);
                let Ok(written) = codec.write(&session, &HeaderMap::new(), NOW) else {
                    return;
                };
                let pairs: Vec<&str> = written
                    .iter()
                    .filter_map(|v| v.to_str().ok()?.split(';').next())
                    .collect();
                let again = cookie_header(pairs.join("; ").as_bytes()).expect("cookies we wrote");
                assert_eq!(codec.read(&again, NOW), Some(session));
            }
        }
        _ => {
            if let Some(session) = payload::decode(rest, NOW) {
                let mut buf = Vec::new();
                payload::encode(&session, &mut buf).expect("a decoded session encodes");
                assert_eq!(payload::decode(&buf, NOW), Some(session));
            }
        }
    }
}

/// The login-state cookie: `state` (up to the first NUL), then either a `Cookie` header as a client
/// sends it or a plaintext sealed under the login cookie of `state`. A login that opens is the one
/// asked for, and starting another login next to any cookies must work.
pub fn login_state_cookie(data: &[u8]) {
    let codec = codec();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (state, body) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (&b"state"[..], rest),
    };
    let Ok(state) = std::str::from_utf8(state) else {
        return;
    };
    let headers = if mode % 2 == 0 {
        cookie_header(body)
    } else {
        cookie_header(codec.fuzz_login_header(state, body).as_bytes())
    };
    let Some(headers) = headers else {
        return;
    };
    let now_micros = NOW * 1_000_000;
    if let Some((login, _clear)) = codec.finish_login(state, &headers, NOW) {
        assert!(mode % 2 == 1, "a forged login cookie opened");
        assert_eq!(login.state, state);
        assert!(login.created_at / 1_000_000 + super::LOGIN_TTL.as_secs() > NOW);
    }
    let next = LoginState {
        state: "next".into(),
        nonce: "n".into(),
        pkce_verifier: None,
        return_to: "/".into(),
        created_at: now_micros,
    };
    let set = codec
        .start_login(&next, &headers)
        .expect("a small login state is sealed");
    assert!(!set.is_empty());
}

/// The claims codec. The first byte chooses between its two sections as stored (a text length in two
/// bytes, the text, then the structure), which must be refused or read back as a whole, and JSON,
/// which must survive being stored and read back.
pub fn claims(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let Some((len, rest)) = rest.split_first_chunk::<2>() else {
            return;
        };
        let Some((text, code)) = rest.split_at_checked(usize::from(u16::from_le_bytes(*len)))
        else {
            return;
        };
        let Ok(text) = std::str::from_utf8(text) else {
            return;
        };
        let Some(claims) = Claims::read(Reader { text, code }) else {
            return;
        };
        let map = claims.to_map();
        for (name, claim) in claims.iter() {
            assert_eq!(
                claims.get(name).map(|c| c.to_value()),
                Some(claim.to_value())
            );
            let _ = claims.lookup(&format!("{name}.x"));
        }
        let again = Claims::new(&map).expect("claims read from storage can be stored");
        assert_eq!(again.to_map(), map);
    } else {
        let Ok(map) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(rest)
        else {
            return;
        };
        let Ok(claims) = Claims::new(&map) else {
            return;
        };
        let (text, code) = claims.sections();
        let read = Claims::read(Reader { text, code }).expect("stored claims read back");
        assert_eq!(read.to_map(), map);
        for name in map.keys() {
            assert_eq!(read.get(name).map(|c| c.to_value()).as_ref(), map.get(name));
        }
    }
}

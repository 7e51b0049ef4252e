//! The session plaintext: what the session cookie carries once opened.
//!
//! Owns the byte layout of a [`Session`] inside the seal; knows nothing about cookies or keys. The
//! layout is binary so that the read done on every request of a signed-in user stays cheap: the
//! expiry is checked before anything else is looked at, every string (tokens, claim names and
//! values) sits in one text section that is checked for UTF-8 once, and the rest is a short
//! structure that says how to cut the text into the tokens and the claims.
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | format, [`FORMAT`]; [`FORMAT_V1`] is still read; anything else is refused (earlier releases wrote JSON, `{...`) |
//! | 8 | `expires_at`, Unix seconds, little-endian |
//! | 8 | `created_at`, Unix seconds, little-endian |
//! | 8 | `seen_at`, Unix seconds, little-endian (not in format 1: there it is `created_at`) |
//! | 8 | `access_expires_at`, Unix seconds, little-endian, 0 when unknown (not in format 1) |
//! | 1 | tokens present: bit 0 `id_token`, 1 `access_token`, 2 `refresh_token`; others zero |
//! | 4 | length n of the text section, little-endian |
//! | n | text: all strings, one after another, in the order the structure names them |
//! | rest | structure: each present token's length, in bit order; then the claims' entries |
//!
//! Lengths are LEB128; the claims' part of both sections is laid out as `claims` says.
//!
//! Decoding never trusts a length or a count: every read is checked against what is left, and a
//! plaintext that is short, has bytes left over, unknown flag bits or malformed claims (see
//! `claims`) decodes to no session.

use super::claims::{too_large, Claims, Reader, Writer};
use super::{Session, SessionError};

/// First byte of every session plaintext written now; a later layout takes another value.
pub(super) const FORMAT: u8 = 2;
/// The first layout, without `seen_at` and `access_expires_at`: still read, never written.
pub(super) const FORMAT_V1: u8 = 1;
/// Bytes before the text: format, four times, token flags, text length.
const HEADER_LEN: usize = 1 + 8 + 8 + 8 + 8 + 1 + 4;
/// The flag bits of the three tokens.
const TOKEN_BITS: u8 = 0b111;

/// Bytes [`encode`] needs at most (the token lengths are counted at their longest).
pub(super) fn size_hint(session: &Session) -> usize {
    let tokens: usize = tokens(session).iter().flatten().map(|t| 5 + t.len()).sum();
    let (text, code) = session.claims.sections();
    HEADER_LEN + tokens + text.len() + code.len()
}

/// Append the plaintext of `session` to `buf`.
pub(super) fn encode(session: &Session, buf: &mut Vec<u8>) -> Result<(), SessionError> {
    let tokens = tokens(session);
    let present = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| t.is_some())
        .fold(0u8, |bits, (i, _)| bits | 1 << i);
    let mut out = Writer::default();
    for token in tokens.into_iter().flatten() {
        out.string(token)?;
    }
    let (claims_text, claims_code) = session.claims.sections();
    let text_len = out.text.len() + claims_text.len();
    let text_len = u32::try_from(text_len).map_err(|_| too_large(text_len))?;
    buf.push(FORMAT);
    buf.extend_from_slice(&session.expires_at.to_le_bytes());
    buf.extend_from_slice(&session.created_at.to_le_bytes());
    buf.extend_from_slice(&session.seen_at.to_le_bytes());
    buf.extend_from_slice(&session.access_expires_at.unwrap_or(0).to_le_bytes());
    buf.push(present);
    buf.extend_from_slice(&text_len.to_le_bytes());
    buf.extend_from_slice(out.text.as_bytes());
    buf.extend_from_slice(claims_text.as_bytes());
    buf.extend_from_slice(&out.code);
    buf.extend_from_slice(claims_code);
    Ok(())
}

/// The session in `plain`, or `None` when it is malformed or expired (`now >= expires_at`).
pub(super) fn decode(plain: &[u8], now: u64) -> Option<Session> {
    let (&format, rest) = plain.split_first()?;
    if format != FORMAT && format != FORMAT_V1 {
        return None;
    }
    let (expires_at, rest) = rest.split_first_chunk()?;
    let expires_at = u64::from_le_bytes(*expires_at);
    if now >= expires_at {
        return None;
    }
    let (created_at, rest) = rest.split_first_chunk()?;
    let created_at = u64::from_le_bytes(*created_at);
    let (seen_at, access_expires_at, rest) = if format == FORMAT {
        let (seen_at, rest) = rest.split_first_chunk()?;
        let (access_expires_at, rest) = rest.split_first_chunk()?;
        let access_expires_at = u64::from_le_bytes(*access_expires_at);
        (
            u64::from_le_bytes(*seen_at),
            (access_expires_at != 0).then_some(access_expires_at),
            rest,
        )
    } else {
        (created_at, None, rest)
    };
    let (&present, rest) = rest.split_first()?;
    if present & !TOKEN_BITS != 0 {
        return None;
    }
    let (text_len, rest) = rest.split_first_chunk()?;
    let text_len = usize::try_from(u32::from_le_bytes(*text_len)).ok()?;
    let (text, code) = rest.split_at_checked(text_len)?;
    let mut input = Reader {
        text: std::str::from_utf8(text).ok()?,
        code,
    };
    let mut token = |bit: u8| match present & bit {
        0 => Some(None),
        _ => input.string().map(|t| Some(t.to_owned())),
    };
    let id_token = token(1)?;
    let access_token = token(2)?;
    let refresh_token = token(4)?;
    let claims = Claims::read(input)?;
    Some(Session {
        claims,
        id_token,
        access_token,
        refresh_token,
        created_at,
        expires_at,
        seen_at,
        access_expires_at,
    })
}

fn tokens(session: &Session) -> [Option<&String>; 3] {
    [
        session.id_token.as_ref(),
        session.access_token.as_ref(),
        session.refresh_token.as_ref(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::claims::{
        ARRAY, FALSE, FLOAT, MAX_DEPTH, NEG_INT, NULL, OBJECT, STRING, TRUE, UINT,
    };
    use serde_json::Value;

    fn session(claims: Value) -> Session {
        Session {
            claims: Claims::new(claims.as_object().unwrap()).unwrap(),
            id_token: Some("id".into()),
            access_token: None,
            refresh_token: Some("r".into()),
            created_at: 0x0102,
            expires_at: 0x0A0B_0C0D,
            seen_at: 0x0304,
            access_expires_at: Some(0x0506),
        }
    }

    fn encoded(session: &Session) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(session, &mut buf).unwrap();
        buf
    }

    /// The layout is what cookies already in browsers hold, so it must not drift.
    #[test]
    fn layout_is_stable() {
        let claims = serde_json::json!({
            "a": [null, false, true, 1, -2, 0.5, "é"],
            "b": {},
        });
        let session = session(claims);
        let buf = encoded(&session);
        let mut expected = vec![FORMAT];
        expected.extend_from_slice(&[0x0D, 0x0C, 0x0B, 0x0A, 0, 0, 0, 0]); // expires_at
        expected.extend_from_slice(&[0x02, 0x01, 0, 0, 0, 0, 0, 0]); // created_at
        expected.extend_from_slice(&[0x04, 0x03, 0, 0, 0, 0, 0, 0]); // seen_at
        expected.extend_from_slice(&[0x06, 0x05, 0, 0, 0, 0, 0, 0]); // access_expires_at
        expected.push(0b101); // id_token and refresh_token
        expected.extend_from_slice(&[7, 0, 0, 0]); // text length
        expected.extend_from_slice("idraéb".as_bytes()); // tokens, then names and strings
        expected.extend_from_slice(&[2, 1]); // token lengths
        expected.extend_from_slice(&[2, 1, ARRAY, 7, NULL, FALSE, TRUE]); // 2 entries, "a": [ ...
        expected.push(UINT);
        expected.extend_from_slice(&1u64.to_le_bytes());
        expected.push(NEG_INT);
        expected.extend_from_slice(&(-2i64).to_le_bytes());
        expected.push(FLOAT);
        expected.extend_from_slice(&0.5f64.to_le_bytes());
        expected.extend_from_slice(&[STRING, 2, 1, OBJECT, 0]); // "é"], "b": {}
        assert_eq!(buf, expected);
        assert!(size_hint(&session) >= buf.len());
        assert_eq!(decode(&buf, 0x0A0B_0C0C), Some(session.clone()));
        assert_eq!(decode(&buf, 0x0A0B_0C0D), None);

        // Cookies of the first layout still open: no seen_at (taken as created_at) and no
        // access-token expiry.
        let mut v1 = vec![FORMAT_V1];
        v1.extend_from_slice(&buf[1..17]);
        v1.extend_from_slice(&buf[33..]);
        let old = Session {
            seen_at: session.created_at,
            access_expires_at: None,
            ..session
        };
        assert_eq!(decode(&v1, 0x0A0B_0C0C), Some(old));
    }

    #[test]
    fn long_strings_take_multi_byte_lengths() {
        for len in [127, 128, 300, 16_384, 70_000] {
            let s = session(serde_json::json!({ "k": "x".repeat(len) }));
            assert_eq!(decode(&encoded(&s), 0), Some(s), "{len}");
        }
        // Six length bytes are one too many.
        let mut reader = Reader {
            text: "",
            code: &[0x80, 0x80, 0x80, 0x80, 0x80, 0],
        };
        assert_eq!(reader.len(), None);
        let mut reader = Reader {
            text: "",
            code: &[0xff, 0xff, 0xff, 0xff, 0x0f],
        };
        assert_eq!(reader.len(), Some(u32::MAX as usize));
        let mut reader = Reader {
            text: "",
            code: &[0x80, 0x80, 0x80, 0x80, 0x10],
        };
        assert_eq!(reader.len(), None, "2^32");
    }

    /// A plaintext of the first layout without tokens, unexpired, from raw sections.
    fn raw(text: &str, code: &[u8]) -> Vec<u8> {
        let mut plain = vec![FORMAT_V1];
        plain.extend_from_slice(&u64::MAX.to_le_bytes());
        plain.extend_from_slice(&0u64.to_le_bytes());
        plain.push(0);
        plain.extend_from_slice(&u32::try_from(text.len()).unwrap().to_le_bytes());
        plain.extend_from_slice(text.as_bytes());
        plain.extend_from_slice(code);
        plain
    }

    #[test]
    fn nesting_is_limited_like_the_json_parser() {
        let nest = |depth: usize| {
            let mut value = Value::Null;
            for i in 0..depth {
                value = if i % 2 == 0 {
                    Value::Array(vec![value])
                } else {
                    serde_json::json!({ "n": value })
                };
            }
            serde_json::json!({ "v": value })
        };
        // The claims object is one level; serde_json parses exactly as deep.
        let deepest = nest(MAX_DEPTH - 1);
        assert!(serde_json::from_str::<Value>(&deepest.to_string()).is_ok());
        let deepest = session(deepest);
        assert_eq!(decode(&encoded(&deepest), 0), Some(deepest));
        let too_deep = nest(MAX_DEPTH);
        assert!(serde_json::from_str::<Value>(&too_deep.to_string()).is_err());
        assert!(matches!(
            Claims::new(too_deep.as_object().unwrap()),
            Err(SessionError::Claims(_))
        ));
        // One entry "v" holding nested arrays around a null.
        let arrays = |n: usize| {
            raw(
                "v",
                &[&[1u8, 1][..], &[ARRAY, 1].repeat(n), &[NULL]].concat(),
            )
        };
        assert!(decode(&arrays(MAX_DEPTH - 1), 0).is_some());
        assert_eq!(decode(&arrays(MAX_DEPTH), 0), None);
    }

    #[test]
    fn malformed_plaintexts_decode_to_none() {
        let good = raw("kv", &[1, 1, STRING, 1]);
        let expected = session(serde_json::json!({ "k": "v" }));
        let decoded = decode(&good, 0).unwrap();
        assert_eq!(decoded.claims, expected.claims);
        let mut unknown_flag = good.clone();
        unknown_flag[17] = 0b1000;
        let mut missing_token = good.clone();
        missing_token[17] = 0b001;
        let mut later_format = good.clone();
        later_format[0] = FORMAT + 1;
        let mut short_format_2 = good.clone();
        short_format_2[0] = FORMAT;
        short_format_2.truncate(20);
        let mut text_past_end = good.clone();
        text_past_end[18] = 200;
        let cases: [(&str, Vec<u8>); 18] = [
            ("a later format", later_format),
            ("a format 2 header cut short", short_format_2),
            ("an unknown token bit", unknown_flag),
            ("a token bit without its length", missing_token),
            ("a text length past the end", text_past_end),
            ("text left over", raw("kvx", &[1, 1, STRING, 1])),
            ("structure left over", raw("kv", &[1, 1, STRING, 1, NULL])),
            ("a string past the text", raw("kv", &[1, 1, STRING, 2])),
            (
                "a string ending inside a character",
                raw("ké", &[1, 1, STRING, 1]),
            ),
            ("text that is not UTF-8", {
                let mut p = raw("kv", &[1, 1, STRING, 1]);
                p[23] = 0xff;
                p
            }),
            ("an unknown tag", raw("k", &[1, 1, 9])),
            ("a duplicate name", raw("kk", &[2, 1, NULL, 1, NULL])),
            ("more entries than given", raw("k", &[2, 1, NULL])),
            ("more items than given", raw("k", &[1, 1, ARRAY, 2, NULL])),
            ("a short number", raw("k", &[1, 1, UINT, 1, 0, 0])),
            ("a non-negative NEG_INT", {
                let code = [&[1u8, 1, NEG_INT][..], &5i64.to_le_bytes()].concat();
                raw("k", &code)
            }),
            ("a non-finite float", {
                let code = [&[1u8, 1, FLOAT][..], &f64::NAN.to_le_bytes()].concat();
                raw("k", &code)
            }),
            ("a huge count", raw("k", &[0xff, 0xff, 0xff, 0xff, 0x0f])),
        ];
        for (what, plain) in cases {
            assert_eq!(decode(&plain, 0), None, "{what}");
        }
    }
}

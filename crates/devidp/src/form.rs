//! Parsing of `application/x-www-form-urlencoded` data and of `Authorization: Basic`.
//!
//! Hand-written instead of `url::form_urlencoded` because that parser is lenient: it passes an
//! invalid `%` escape through unchanged and replaces bad UTF-8, so a client that forgot to
//! encode a secret such as `50%off` would still be accepted. A development provider that is
//! more forgiving than real ones would let gateway bugs pass the tests, so this one refuses:
//! - invalid percent escapes and invalid UTF-8, everywhere;
//! - a parameter sent twice (RFC 6749 section 3.1 and 3.2: "MUST NOT be included more than once");
//! - in the Basic credentials only (RFC 6749 section 2.3.1), any byte the form encoder would
//!   have escaped (`/ : & =`, space, non-ASCII, ...): id and secret are form-encoded *before*
//!   base64, so such a byte means the client skipped that step.

use std::collections::HashMap;

use base64::Engine as _;

/// Why form data or Basic credentials were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum FormError {
    #[error("invalid percent escape")]
    InvalidEscape,
    #[error("not valid UTF-8 after decoding")]
    InvalidUtf8,
    #[error("parameter `{0}` is repeated")]
    Repeated(String),
    #[error("character that must be form-encoded appears raw")]
    Unencoded,
    #[error("malformed Basic credentials")]
    MalformedBasic,
}

/// Decoded parameters; each name at most once.
#[derive(Default)]
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    /// The value of `name`, if present.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The value of `name` when present and not empty (RFC 6749 section 3.1: a parameter sent
    /// without a value is treated as omitted).
    pub(crate) fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }
}

// Values are often secrets, so Debug shows the names only.
impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        f.debug_struct("Params")
            .field("names", &names)
            .field("values", &"[redacted]")
            .finish()
    }
}

/// Parses a query string or a form body.
pub(crate) fn parse(input: &str) -> Result<Params, FormError> {
    let mut map = HashMap::new();
    for pair in input.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name, false)?;
        let value = decode(value, false)?;
        if map.contains_key(&name) {
            return Err(FormError::Repeated(name));
        }
        map.insert(name, value);
    }
    Ok(Params(map))
}

/// Form-decodes one component: `+` is a space, `%XX` a byte. With `strict`, only bytes the form
/// encoder leaves alone (`A-Z a-z 0-9 * - . _`) may appear raw.
pub(crate) fn decode(input: &str, strict: bool) -> Result<String, FormError> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|c| hex(*c));
                let lo = bytes.get(i + 2).and_then(|c| hex(*c));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(FormError::InvalidEscape),
                }
                i += 2;
            }
            _ if strict
                && !(b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_')) =>
            {
                return Err(FormError::Unencoded)
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| FormError::InvalidUtf8)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Returns the credentials part of an `Authorization` value when its scheme is Basic
/// (case-insensitive, RFC 7235 section 2.1), `None` for another scheme.
pub(crate) fn basic_credentials(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
}

/// Decodes Basic credentials into (client_id, client_secret): base64, then split at the first
/// colon, then form-decode each side strictly (RFC 6749 section 2.3.1).
pub(crate) fn decode_basic(credentials: &str) -> Result<(String, String), FormError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .map_err(|_| FormError::MalformedBasic)?;
    let text = String::from_utf8(raw).map_err(|_| FormError::Unencoded)?;
    let (id, secret) = text.split_once(':').ok_or(FormError::MalformedBasic)?;
    Ok((decode(id, true)?, decode(secret, true)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(id: &str, secret: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    }

    fn form_encode(s: &str) -> String {
        url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }

    #[test]
    fn parses_and_refuses_repeats_and_bad_escapes() {
        let p = parse("a=1&b=x+y%2Bz&&c").unwrap_or_default();
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("b"), Some("x y+z"));
        assert_eq!(p.get("c"), Some(""));
        assert_eq!(p.non_empty("c"), None);
        assert_eq!(
            parse("a=1&a=2").err(),
            Some(FormError::Repeated("a".into()))
        );
        assert_eq!(parse("a=50%off").err(), Some(FormError::InvalidEscape));
        assert_eq!(parse("a=%").err(), Some(FormError::InvalidEscape));
        assert_eq!(parse("a=%ff").err(), Some(FormError::InvalidUtf8));
        // Lenient about raw reserved characters outside the Basic header.
        assert_eq!(
            parse("r=http://x/cb")
                .ok()
                .and_then(|p| p.get("r").map(str::to_owned)),
            Some("http://x/cb".into())
        );
    }

    #[test]
    fn basic_needs_form_encoding_before_base64() {
        let secret = "p+a/s:s%w&o rd é";
        let good = basic(&form_encode("my:client"), &form_encode(secret));
        assert_eq!(
            decode_basic(&good),
            Ok(("my:client".to_owned(), secret.to_owned()))
        );
        // The same secret sent raw never decodes to itself.
        let raw = basic("client", secret);
        assert!(decode_basic(&raw).map(|(_, s)| s != secret).unwrap_or(true));
        for bad in ["a/b", "a:b", "a&b", "a b", "é", "50%off"] {
            assert!(decode_basic(&basic("client", bad)).is_err(), "{bad}");
        }
        assert_eq!(decode_basic("!!!"), Err(FormError::MalformedBasic));
        assert_eq!(
            decode_basic(&base64::engine::general_purpose::STANDARD.encode("nocolon")),
            Err(FormError::MalformedBasic)
        );
        assert_eq!(basic_credentials("bAsIc abc "), Some("abc"));
        assert_eq!(basic_credentials("Bearer abc"), None);
    }

    #[test]
    fn debug_hides_values() {
        let p = parse("client_secret=hunter2").unwrap_or_default();
        let shown = format!("{p:?}");
        assert!(
            shown.contains("client_secret") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("[redacted]"));
    }
}
